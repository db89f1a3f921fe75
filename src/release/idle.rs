//! How an idle canary DaemonSet is kept off every node. A Deployment's canary idles at zero
//! replicas; a DaemonSet has no replica count, so Serin adds the node-selector entry
//! [`IDLE_NODE_LABEL`]`: "true"` to its pod template, which no node matches (Flagger does the
//! same with a label of its own), and removes it to run the canary for an analysis. Only that
//! one key is touched: the user's own node-selector entries stay, and the primary, copied
//! from [`super::release_template`], never has the key.

use k8s_openapi::api::apps::v1::DaemonSet;
use serde_json::{Value, json};

use crate::spec::IDLE_NODE_LABEL;

/// The value of [`IDLE_NODE_LABEL`] while idle.
pub const IDLE_VALUE: &str = "true";

/// The canary DaemonSet's pod template carries the idle switch.
pub fn is_idle(daemonset: &DaemonSet) -> bool {
    daemonset
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|p| p.node_selector.as_ref())
        .is_some_and(|n| n.contains_key(IDLE_NODE_LABEL))
}

/// The JSON merge patch that idles (`true`) or wakes (`false`) a canary DaemonSet: it sets or
/// removes [`IDLE_NODE_LABEL`] alone (a merge patch's `null` deletes that key and leaves the
/// map's other entries as they are).
pub fn idle_patch(idle: bool) -> Value {
    let value = match idle {
        true => json!(IDLE_VALUE),
        false => Value::Null,
    };
    json!({"spec": {"template": {"spec": {"nodeSelector": {IDLE_NODE_LABEL: value}}}}})
}

/// The canary DaemonSet's size as the release machine counts it: 0 while idle, 1 (running
/// wherever its node selector allows) otherwise. The machine only compares it with 0 and
/// with the desired size, which for a DaemonSet is always 1.
pub fn replicas(daemonset: &DaemonSet) -> i32 {
    match is_idle(daemonset) {
        true => 0,
        false => 1,
    }
}

/// The replica count the machine asks for becomes the idle switch: 0 idles, more wakes.
pub fn idle_for(replicas: i32) -> bool {
    replicas <= 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::DaemonSetSpec;
    use k8s_openapi::api::core::v1::{PodSpec, PodTemplateSpec};
    use std::collections::BTreeMap;

    fn with_node_selector(entries: &[(&str, &str)]) -> DaemonSet {
        let selector: BTreeMap<String, String> = entries
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        DaemonSet {
            spec: Some(DaemonSetSpec {
                template: PodTemplateSpec {
                    spec: Some(PodSpec {
                        node_selector: Some(selector),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Applies a JSON merge patch (RFC 7386), as the API server does.
    fn merge(target: &mut Value, patch: &Value) {
        match (target, patch) {
            (Value::Object(target), Value::Object(patch)) => {
                for (key, value) in patch {
                    if value.is_null() {
                        target.remove(key);
                    } else {
                        merge(target.entry(key.clone()).or_insert(Value::Null), value);
                    }
                }
            }
            (target, patch) => *target = patch.clone(),
        }
    }

    fn patched(daemonset: &DaemonSet, idle: bool) -> DaemonSet {
        let mut value = serde_json::to_value(daemonset).unwrap_or_default();
        merge(&mut value, &idle_patch(idle));
        serde_json::from_value(value).unwrap_or_default()
    }

    fn node_selector(daemonset: &DaemonSet) -> Option<BTreeMap<String, String>> {
        daemonset
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .and_then(|p| p.node_selector.clone())
    }

    #[test]
    fn idling_adds_the_switch_beside_the_users_node_selector_and_waking_removes_only_it() {
        let user = with_node_selector(&[("kubernetes.io/os", "linux")]);
        let idle = patched(&user, true);
        assert!(is_idle(&idle));
        assert_eq!(replicas(&idle), 0);
        assert_eq!(
            node_selector(&idle),
            Some(BTreeMap::from([
                ("kubernetes.io/os".to_owned(), "linux".to_owned()),
                (IDLE_NODE_LABEL.to_owned(), IDLE_VALUE.to_owned()),
            ]))
        );
        let awake = patched(&idle, false);
        assert!(!is_idle(&awake));
        assert_eq!(replicas(&awake), 1);
        assert_eq!(node_selector(&awake), node_selector(&user));
    }

    #[test]
    fn a_daemonset_without_node_selector_is_awake() {
        assert!(!is_idle(&DaemonSet::default()));
        assert_eq!(replicas(&DaemonSet::default()), 1);
        assert!(is_idle(&patched(&DaemonSet::default(), true)));
    }

    #[test]
    fn the_machines_replica_counts_map_to_the_switch() {
        assert!(idle_for(0));
        assert!(!idle_for(1));
        assert!(!idle_for(3));
    }
}
