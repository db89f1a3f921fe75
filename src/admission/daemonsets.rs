//! The decisions about a DaemonSet write, as pure functions of the admission request: the
//! same reading, judging and validation as a Deployment's ([`super::deployments::judge`],
//! [`super::deployments::validate`], generic over [`Workload`]), and [`mutate`], the
//! DaemonSet's own mutation. A DaemonSet has no replica count: where a Deployment's idle
//! canary is kept at zero replicas, a DaemonSet's is kept off every node by the node-selector
//! entry [`IDLE_NODE_LABEL`] (see `release::idle`).
//!
//! [`mutate`] writes the missing defaults as explicit annotations and the watch label, as for
//! a Deployment, and:
//! - on CREATE, starts the canary idle (its pods run as `<name>-primary`, which Serin
//!   creates from the same template without the switch);
//! - on a user's UPDATE of an idle canary, keeps the switch: a re-applied manifest (which
//!   never carries it) must not start the canary on every node. A new pod template is a new
//!   revision, and the controller wakes the canary for its analysis.
//!
//! Served at `POST /mutate/daemonsets` (and `/validate/daemonsets` with the Deployments'
//! validation). Nothing is injected at admission: the controller creates a DaemonSet's
//! primary, Services and Canary on its first reconcile.

use std::collections::BTreeMap;

use json_patch::Patch;
use k8s_openapi::api::apps::v1::DaemonSet;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, Operation};

use super::deployments::{keep_managed_label, read, set_entries};
use crate::crd::PolicyDefaults;
use crate::release::idle::{IDLE_VALUE, is_idle};
use crate::spec::{self, IDLE_NODE_LABEL, OptIn};

/// A decoded review of an `apps/v1` DaemonSet.
pub type DaemonSetRequest = AdmissionRequest<DaemonSet>;

/// Fills defaults, labels the DaemonSet and keeps an idle canary idle; see the module docs.
pub fn mutate(
    req: &DaemonSetRequest,
    serin_user: &str,
    defaults: &PolicyDefaults,
) -> AdmissionResponse {
    let response = AdmissionResponse::from(req);
    if !matches!(req.operation, Operation::Create | Operation::Update) {
        return response;
    }
    let Some(daemonset) = req.object.as_ref() else {
        return response;
    };
    let from_serin = req.user_info.username.as_deref() == Some(serin_user);
    let old = match req.operation {
        Operation::Update => req.old_object.as_ref(),
        _ => None,
    };
    let Ok(OptIn::Enabled(canary)) = read(daemonset, defaults) else {
        return keep_managed_label(response, daemonset, old, from_serin);
    };
    let annotations = daemonset.metadata.annotations.as_ref();
    let updates: BTreeMap<String, String> = spec::defaulted_annotations(&canary)
        .into_iter()
        .filter(|(key, _)| !annotations.is_some_and(|a| a.contains_key(key)))
        // Nothing sizes a DaemonSet (and the annotation is refused on one).
        .filter(|(key, _)| key != spec::DESIRED_REPLICAS)
        .collect();
    let mut ops = set_entries(&["metadata", "annotations"], annotations, updates);
    let label = BTreeMap::from([(spec::MANAGED_LABEL.to_string(), "true".to_string())]);
    ops.extend(set_entries(
        &["metadata", "labels"],
        daemonset.metadata.labels.as_ref(),
        label,
    ));
    let pod = daemonset
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref());
    let starts_idle = match old {
        None => true,
        Some(old) => is_idle(old),
    };
    if !from_serin
        && starts_idle
        && !is_idle(daemonset)
        && let Some(pod) = pod
    {
        let switch = BTreeMap::from([(IDLE_NODE_LABEL.to_owned(), IDLE_VALUE.to_owned())]);
        ops.extend(set_entries(
            &["spec", "template", "spec", "nodeSelector"],
            pod.node_selector.as_ref(),
            switch,
        ));
    }
    if ops.is_empty() {
        return response;
    }
    response.clone().with_patch(Patch(ops)).unwrap_or(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::deployments::{Judgement, PolicyView, judge};
    use serde_json::{Value, json};

    fn daemonset(annotations: Value, node_selector: Value, image: &str) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": "agent", "namespace": "prod", "annotations": annotations},
            "spec": {
                "selector": {"matchLabels": {"app": "agent"}},
                "template": {
                    "metadata": {"labels": {"app": "agent"}},
                    "spec": {
                        "nodeSelector": node_selector,
                        "containers": [{"name": "agent", "image": image,
                                        "ports": [{"containerPort": 9898}]}]
                    }
                }
            }
        })
    }

    fn request(operation: &str, object: Value, old: Option<Value>, user: &str) -> DaemonSetRequest {
        let review = json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "u1",
                "kind": {"group": "apps", "version": "v1", "kind": "DaemonSet"},
                "resource": {"group": "apps", "version": "v1", "resource": "daemonsets"},
                "operation": operation, "namespace": "prod", "name": "agent",
                "userInfo": {"username": user},
                "object": object, "oldObject": old,
            }
        });
        let review: kube::core::admission::AdmissionReview<DaemonSet> =
            serde_json::from_value(review).unwrap_or_else(|e| panic!("review: {e}"));
        review
            .try_into()
            .unwrap_or_else(|e| panic!("request: {e:?}"))
    }

    fn patched(req: &DaemonSetRequest, response: &AdmissionResponse) -> Value {
        let mut object = serde_json::to_value(req.object.as_ref()).unwrap_or_default();
        let patch: Patch = serde_json::from_slice(&response.patch.clone().unwrap_or_default())
            .unwrap_or_else(|e| panic!("patch: {e}"));
        json_patch::patch(&mut object, &patch).unwrap_or_else(|e| panic!("apply: {e}"));
        object
    }

    fn node_selector(object: &Value) -> Value {
        object["spec"]["template"]["spec"]["nodeSelector"].clone()
    }

    const USER: &str = "alice";
    const SERIN: &str = "system:serviceaccount:serin-system:serin";

    fn enabled() -> Value {
        json!({"serin.dev/enabled": "true"})
    }

    #[test]
    fn a_new_opted_in_daemonset_starts_idle_beside_the_users_node_selector() {
        let linux = json!({"kubernetes.io/os": "linux"});
        let req = request("CREATE", daemonset(enabled(), linux, "agent:1"), None, USER);
        let object = patched(&req, &mutate(&req, SERIN, &PolicyDefaults::default()));
        assert_eq!(
            node_selector(&object),
            json!({"kubernetes.io/os": "linux", IDLE_NODE_LABEL: "true"})
        );
        assert_eq!(object["metadata"]["labels"][spec::MANAGED_LABEL], "true");
        assert_eq!(
            object["metadata"]["annotations"]["serin.dev/step-weight"],
            "10"
        );
        assert!(
            object["metadata"]["annotations"]
                .get(spec::DESIRED_REPLICAS)
                .is_none(),
            "a DaemonSet has no replicas to record"
        );
    }

    #[test]
    fn a_reapplied_manifest_keeps_an_idle_canary_idle_and_a_running_one_running() {
        let idle = json!({IDLE_NODE_LABEL: "true"});
        let old = daemonset(enabled(), idle, "agent:1");
        // `kubectl apply` of the user's manifest: no switch, a new image.
        let new = daemonset(enabled(), Value::Null, "agent:2");
        let req = request("UPDATE", new.clone(), Some(old), USER);
        let object = patched(&req, &mutate(&req, SERIN, &PolicyDefaults::default()));
        assert_eq!(node_selector(&object), json!({IDLE_NODE_LABEL: "true"}));
        // During a release the canary runs: the user's write leaves it running.
        let running = daemonset(enabled(), Value::Null, "agent:1");
        let req = request("UPDATE", new, Some(running), USER);
        let object = patched(&req, &mutate(&req, SERIN, &PolicyDefaults::default()));
        assert_eq!(node_selector(&object), Value::Null);
    }

    #[test]
    fn serins_own_write_that_wakes_the_canary_passes_unchanged() {
        let old = daemonset(enabled(), json!({IDLE_NODE_LABEL: "true"}), "agent:2");
        let new = daemonset(enabled(), Value::Null, "agent:2");
        let req = request("UPDATE", new, Some(old), SERIN);
        let object = patched(&req, &mutate(&req, SERIN, &PolicyDefaults::default()));
        assert_eq!(node_selector(&object), Value::Null);
    }

    #[test]
    fn a_daemonset_asking_for_replicas_is_refused_naming_the_annotation() {
        let annotations = json!({"serin.dev/enabled": "true", "serin.dev/desired-replicas": "3"});
        let object: DaemonSet =
            serde_json::from_value(daemonset(annotations, Value::Null, "agent:1"))
                .unwrap_or_else(|e| panic!("{e}"));
        match judge(&object, "prod", &PolicyView::default()) {
            Judgement::Refused { headline, lines } => {
                assert!(headline.starts_with("DaemonSet \"agent\""), "{headline}");
                assert_eq!(lines.len(), 1, "{lines:?}");
                assert!(lines[0].starts_with(spec::DESIRED_REPLICAS), "{lines:?}");
                assert!(lines[0].contains("no replicas"), "{lines:?}");
            }
            admitted => panic!("admitted: {admitted:?}"),
        }
        let valid: DaemonSet = serde_json::from_value(daemonset(enabled(), Value::Null, "a:1"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            judge(&valid, "prod", &PolicyView::default()),
            Judgement::Admitted {
                opt_in: OptIn::Enabled(_),
                ..
            }
        ));
    }
}
