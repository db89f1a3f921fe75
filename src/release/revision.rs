//! The revision of a release: a hash of the canonical JSON of the pod template and of the
//! tracked ConfigMaps/Secrets it uses (Secrets only with `--track-secrets`:
//! [`super::Tracking`]). A new revision (and nothing else: never replicas) starts a
//! canary release, so the hash must change on every user edit and on nothing else.
//!
//! **Stable across Serin and Kubernetes upgrades.** An upgrade that changed the hash of an
//! unchanged Deployment would start a release of every opted-in Deployment at once. So:
//! - the input is our own canonical JSON: object keys sorted, no whitespace, `null`, `{}` and
//!   `[]` removed (Kubernetes and client tools differ on writing absent vs empty), never
//!   `Debug` output or a `Hash` impl whose layout the compiler or a crate may change;
//! - the hash is FNV-1a 64 written here, not `std`'s randomized `DefaultHasher`; it is not
//!   cryptographic, which is fine to tell revisions apart (Flagger uses FNV too), but it does
//!   mean a low-entropy Secret value could be guessed from the revision by someone who can
//!   read the Canary and the pod template and not the Secret;
//! - fields Kubernetes writes without a user edit are dropped: object metadata the API server
//!   owns (`creationTimestamp`, `uid`, ...), the `pod-template-hash` label, and values equal
//!   to the API server's defaults (`restartPolicy: Always`, `terminationMessagePath`,
//!   `imagePullPolicy` as derived from the image tag, `protocol: TCP`, probe timings,
//!   `defaultMode: 420`, ...). A newer Kubernetes that starts defaulting one of these, or a
//!   user who writes a default out, therefore leaves the revision unchanged. Defaults added by
//!   future Kubernetes versions must be appended to [`POD_DEFAULTS`] / [`CONTAINER_DEFAULTS`].
//!
//! The expected value of a fixed input is pinned by a test: if it changes, every release in
//! every cluster restarts, so that test must never be "updated" casually.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, PodTemplateSpec, Secret};
use serde_json::Value;

use crate::spec::ConfigKind;

/// Object metadata written by the API server, never by the user.
const SERVER_METADATA: [&str; 8] = [
    "creationTimestamp",
    "deletionTimestamp",
    "generation",
    "managedFields",
    "name",
    "namespace",
    "resourceVersion",
    "uid",
];

/// Labels written by controllers.
const CONTROLLER_LABELS: [&str; 1] = ["pod-template-hash"];

/// Pod spec fields and the value the API server defaults them to.
const POD_DEFAULTS: [(&str, Defaulted); 4] = [
    ("restartPolicy", Defaulted::Str("Always")),
    ("dnsPolicy", Defaulted::Str("ClusterFirst")),
    ("schedulerName", Defaulted::Str("default-scheduler")),
    ("terminationGracePeriodSeconds", Defaulted::Int(30)),
];

/// Container fields and the value the API server defaults them to (`imagePullPolicy` is
/// handled apart: its default depends on the image tag).
const CONTAINER_DEFAULTS: [(&str, Defaulted); 2] = [
    (
        "terminationMessagePath",
        Defaulted::Str("/dev/termination-log"),
    ),
    ("terminationMessagePolicy", Defaulted::Str("File")),
];

/// Probe fields and their defaults.
const PROBE_DEFAULTS: [(&str, Defaulted); 4] = [
    ("timeoutSeconds", Defaulted::Int(1)),
    ("periodSeconds", Defaulted::Int(10)),
    ("successThreshold", Defaulted::Int(1)),
    ("failureThreshold", Defaulted::Int(3)),
];

/// Default file mode of configMap, secret, projected and downwardAPI volumes (0644).
const DEFAULT_MODE: i64 = 420;

#[derive(Clone, Copy)]
enum Defaulted {
    Str(&'static str),
    Int(i64),
}

impl Defaulted {
    fn is(self, value: &Value) -> bool {
        match self {
            Defaulted::Str(s) => value.as_str() == Some(s),
            Defaulted::Int(n) => value.as_i64() == Some(n),
        }
    }
}

/// The content of a ConfigMap or Secret the pod template uses, as it enters the revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackedConfig {
    pub kind: ConfigKind,
    pub name: String,
    /// `data` (and a ConfigMap's `binaryData`: Kubernetes forbids a key in both).
    pub data: BTreeMap<String, Vec<u8>>,
}

impl TrackedConfig {
    pub fn from_config_map(cm: &ConfigMap) -> Self {
        let text = cm
            .data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone().into_bytes()));
        let binary = cm
            .binary_data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.0.clone()));
        Self {
            kind: ConfigKind::ConfigMap,
            name: cm.metadata.name.clone().unwrap_or_default(),
            data: text.chain(binary).collect(),
        }
    }

    /// `stringData` is ignored: the API server merges it into `data` on write.
    pub fn from_secret(secret: &Secret) -> Self {
        Self {
            kind: ConfigKind::Secret,
            name: secret.metadata.name.clone().unwrap_or_default(),
            data: secret
                .data
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.0.clone()))
                .collect(),
        }
    }

    fn to_json(&self) -> Value {
        let data = self
            .data
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(hex(v))));
        serde_json::json!({
            "kind": self.kind.to_string(),
            "name": self.name,
            "data": data.collect::<serde_json::Map<_, _>>(),
        })
    }
}

/// The revision of a pod template and the configs it uses: 16 lowercase hex digits. The order
/// of `configs` does not matter.
pub fn revision(template: &PodTemplateSpec, configs: &[TrackedConfig]) -> String {
    format!(
        "{:016x}",
        fnv1a64(canonical_input(template, configs).as_bytes())
    )
}

/// The text that is hashed: canonical JSON of the normalised template and the configs.
fn canonical_input(template: &PodTemplateSpec, configs: &[TrackedConfig]) -> String {
    let mut configs: Vec<Value> = configs.iter().map(TrackedConfig::to_json).collect();
    configs.sort_by_cached_key(canonical_json);
    // k8s-openapi types serialize without fallible parts; `Null` would only hash the configs.
    let template = serde_json::to_value(template).unwrap_or(Value::Null);
    let input = serde_json::json!({
        "template": normalize_template(template),
        "configs": configs,
    });
    canonical_json(&input)
}

/// FNV-1a, 64 bits (http://www.isthe.com/chongo/tech/comp/fnv/): fixed constants, no seed.
fn fnv1a64(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes
        .iter()
        .fold(OFFSET, |hash, b| (hash ^ u64::from(*b)).wrapping_mul(PRIME))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// JSON with object keys sorted and no whitespace; `null`, `{}` and `[]` are dropped from
/// objects (arrays keep their elements: position matters there).
fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> =
                map.iter().filter(|(_, v)| !is_empty(v)).collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(v, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// `null`, and objects or arrays that hold nothing once emptiness is removed recursively.
fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Object(map) => map.values().all(is_empty),
        Value::Array(items) => items.is_empty(),
        _ => false,
    }
}

/// Drops from a serialized pod template what Kubernetes writes without a user edit.
fn normalize_template(mut template: Value) -> Value {
    if let Some(meta) = template.get_mut("metadata").and_then(Value::as_object_mut) {
        for key in SERVER_METADATA {
            meta.remove(key);
        }
        if let Some(labels) = meta.get_mut("labels").and_then(Value::as_object_mut) {
            for key in CONTROLLER_LABELS {
                labels.remove(key);
            }
        }
    }
    if let Some(pod) = template.get_mut("spec").and_then(Value::as_object_mut) {
        remove_defaults(pod, &POD_DEFAULTS);
        for volume in each_mut(pod, "volumes") {
            for source in ["configMap", "secret", "projected", "downwardAPI"] {
                if let Some(source) = volume.get_mut(source).and_then(Value::as_object_mut) {
                    remove_defaults(source, &[("defaultMode", Defaulted::Int(DEFAULT_MODE))]);
                }
            }
        }
        for list in ["containers", "initContainers"] {
            for container in each_mut(pod, list) {
                normalize_container(container);
            }
        }
    }
    template
}

fn normalize_container(container: &mut serde_json::Map<String, Value>) {
    remove_defaults(container, &CONTAINER_DEFAULTS);
    let image = container
        .get("image")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let pull = Defaulted::Str(default_pull_policy(image));
    remove_defaults(container, &[("imagePullPolicy", pull)]);
    for port in each_mut(container, "ports") {
        remove_defaults(port, &[("protocol", Defaulted::Str("TCP"))]);
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(probe) = container.get_mut(probe).and_then(Value::as_object_mut) {
            remove_defaults(probe, &PROBE_DEFAULTS);
            if let Some(get) = probe.get_mut("httpGet").and_then(Value::as_object_mut) {
                remove_defaults(get, &[("scheme", Defaulted::Str("HTTP"))]);
            }
        }
    }
    for env in each_mut(container, "env") {
        let field_ref = env
            .get_mut("valueFrom")
            .and_then(|v| v.get_mut("fieldRef"))
            .and_then(Value::as_object_mut);
        if let Some(field_ref) = field_ref {
            remove_defaults(field_ref, &[("apiVersion", Defaulted::Str("v1"))]);
        }
    }
}

/// Kubernetes' rule: `Always` for `:latest` or no tag (and no digest), else `IfNotPresent`.
fn default_pull_policy(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    // The tag follows the last `:` after the last `/` (a registry may have a `:port`).
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.rsplit_once(':') {
        Some((_, tag)) if tag != "latest" => "IfNotPresent",
        _ => "Always",
    }
}

fn remove_defaults(object: &mut serde_json::Map<String, Value>, defaults: &[(&str, Defaulted)]) {
    for (key, default) in defaults {
        if object.get(*key).is_some_and(|v| default.is(v)) {
            object.remove(*key);
        }
    }
}

/// The objects in the array `object[key]`, if any.
fn each_mut<'a>(
    object: &'a mut serde_json::Map<String, Value>,
    key: &str,
) -> impl Iterator<Item = &'a mut serde_json::Map<String, Value>> {
    object
        .get_mut(key)
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object_mut)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::{Container, ContainerPort, PodSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn template(image: &str) -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(BTreeMap::from([("app".to_owned(), "web".to_owned())])),
                ..Default::default()
            }),
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "app".into(),
                    image: Some(image.into()),
                    ports: Some(vec![ContainerPort {
                        container_port: 9898,
                        ..Default::default()
                    }]),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        }
    }

    fn config(value: &str) -> TrackedConfig {
        TrackedConfig {
            kind: ConfigKind::ConfigMap,
            name: "web-config".into(),
            data: BTreeMap::from([("key".to_owned(), value.as_bytes().to_vec())]),
        }
    }

    #[test]
    fn revision_of_a_fixed_template_never_changes() {
        // Pinned: a different value here restarts every release in every cluster on upgrade.
        let (t, c) = (template("podinfo:6.0.0"), [config("a")]);
        assert_eq!(
            canonical_input(&t, &c),
            concat!(
                r#"{"configs":[{"data":{"key":"61"},"kind":"ConfigMap","name":"web-config"}],"#,
                r#""template":{"metadata":{"labels":{"app":"web"}},"spec":{"containers":"#,
                r#"[{"image":"podinfo:6.0.0","name":"app","ports":[{"containerPort":9898}]}]}}}"#
            )
        );
        assert_eq!(revision(&t, &c), "1e60ba094d979cee");
    }

    #[test]
    fn same_input_gives_the_same_revision() {
        let t = template("podinfo:6.0.0");
        assert_eq!(revision(&t, &[]), revision(&t.clone(), &[]));
    }

    #[test]
    fn an_image_change_is_a_new_revision() {
        assert_ne!(
            revision(&template("podinfo:6.0.0"), &[]),
            revision(&template("podinfo:6.0.1"), &[])
        );
    }

    #[test]
    fn a_config_data_change_is_a_new_revision() {
        let t = template("podinfo:6.0.0");
        assert_ne!(revision(&t, &[config("a")]), revision(&t, &[config("b")]));
    }

    #[test]
    fn config_order_does_not_matter() {
        let t = template("podinfo:6.0.0");
        let other = TrackedConfig {
            kind: ConfigKind::Secret,
            name: "token".into(),
            data: BTreeMap::from([("t".to_owned(), vec![0, 255])]),
        };
        assert_eq!(
            revision(&t, &[config("a"), other.clone()]),
            revision(&t, &[other, config("a")])
        );
    }

    #[test]
    fn map_key_order_does_not_matter() {
        let a: PodTemplateSpec = serde_json::from_str(
            r#"{"metadata":{"labels":{"a":"1","b":"2"}},"spec":{"containers":[{"name":"x"}]}}"#,
        )
        .unwrap_or_default();
        let b: PodTemplateSpec = serde_json::from_str(
            r#"{"spec":{"containers":[{"name":"x"}]},"metadata":{"labels":{"b":"2","a":"1"}}}"#,
        )
        .unwrap_or_default();
        assert_eq!(revision(&a, &[]), revision(&b, &[]));
    }

    #[test]
    fn server_written_fields_and_defaults_do_not_change_the_revision() {
        let plain = template("podinfo:6.0.0");
        let defaulted: PodTemplateSpec = serde_json::from_value(serde_json::json!({
            "metadata": {
                "creationTimestamp": null,
                "labels": {"app": "web", "pod-template-hash": "5d4f8c"},
                "annotations": {}
            },
            "spec": {
                "restartPolicy": "Always",
                "dnsPolicy": "ClusterFirst",
                "schedulerName": "default-scheduler",
                "terminationGracePeriodSeconds": 30,
                "securityContext": {},
                "containers": [{
                    "name": "app",
                    "image": "podinfo:6.0.0",
                    "imagePullPolicy": "IfNotPresent",
                    "terminationMessagePath": "/dev/termination-log",
                    "terminationMessagePolicy": "File",
                    "resources": {},
                    "ports": [{"containerPort": 9898, "protocol": "TCP"}]
                }]
            }
        }))
        .unwrap_or_default();
        assert_eq!(revision(&plain, &[]), revision(&defaulted, &[]));
    }

    #[test]
    fn a_non_default_value_changes_the_revision() {
        let mut changed = template("podinfo:6.0.0");
        if let Some(spec) = changed.spec.as_mut() {
            spec.restart_policy = Some("Never".into());
        }
        assert_ne!(
            revision(&template("podinfo:6.0.0"), &[]),
            revision(&changed, &[])
        );
    }

    #[test]
    fn pull_policy_default_follows_the_image_tag() {
        assert_eq!(default_pull_policy("podinfo"), "Always");
        assert_eq!(default_pull_policy("podinfo:latest"), "Always");
        assert_eq!(default_pull_policy("registry:5000/podinfo"), "Always");
        assert_eq!(
            default_pull_policy("registry:5000/podinfo:6.0"),
            "IfNotPresent"
        );
        assert_eq!(default_pull_policy("podinfo@sha256:abcd"), "IfNotPresent");
    }

    #[test]
    fn config_map_binary_data_and_secret_data_are_tracked() {
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some("c".into()),
                ..Default::default()
            },
            binary_data: Some(BTreeMap::from([("bin".to_owned(), ByteString(vec![1, 2]))])),
            ..Default::default()
        };
        assert_eq!(
            TrackedConfig::from_config_map(&cm).data.get("bin"),
            Some(&vec![1, 2])
        );
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some("s".into()),
                ..Default::default()
            },
            data: Some(BTreeMap::from([(
                "k".to_owned(),
                ByteString(b"v".to_vec()),
            )])),
            ..Default::default()
        };
        let tracked = TrackedConfig::from_secret(&secret);
        assert_eq!(
            (tracked.kind, tracked.data.get("k")),
            (ConfigKind::Secret, Some(&b"v".to_vec()))
        );
    }

    /// The revision as the controller computes it: the stored contents of the configs that
    /// `tracking` selects among the template's references, looked up in `stored`.
    fn revision_with(
        template: &PodTemplateSpec,
        tracking: crate::release::Tracking,
        stored: &[TrackedConfig],
    ) -> String {
        let configs: Vec<TrackedConfig> = tracking
            .refs(template)
            .iter()
            .filter_map(|r| {
                stored
                    .iter()
                    .find(|c| c.kind == r.kind && c.name == r.name)
                    .cloned()
            })
            .collect();
        revision(template, &configs)
    }

    #[test]
    fn untracked_secrets_are_left_out_of_the_revision() {
        use crate::release::Tracking;
        use k8s_openapi::api::core::v1::{EnvFromSource, SecretEnvSource};
        let mut t = template("podinfo:6.0.0");
        if let Some(container) = t.spec.as_mut().map(|s| &mut s.containers[0]) {
            container.env_from = Some(vec![EnvFromSource {
                secret_ref: Some(SecretEnvSource {
                    name: "token".into(),
                    optional: None,
                }),
                ..Default::default()
            }]);
        }
        let secret = |value: &str| TrackedConfig {
            kind: ConfigKind::Secret,
            name: "token".into(),
            data: BTreeMap::from([("t".to_owned(), value.as_bytes().to_vec())]),
        };
        let (old, new) = ([secret("old")], [secret("new")]);
        assert_ne!(
            revision_with(&t, Tracking::ALL, &old),
            revision_with(&t, Tracking::ALL, &new),
            "a tracked Secret's change is a new revision"
        );
        assert_eq!(
            revision_with(&t, Tracking::CONFIG_MAPS, &old),
            revision_with(&t, Tracking::CONFIG_MAPS, &new),
            "an untracked Secret's change is no new revision"
        );
        assert_eq!(
            revision_with(&t, Tracking::CONFIG_MAPS, &old),
            revision(&t, &[]),
            "without Secret tracking only the template (and ConfigMaps) count"
        );
    }

    #[test]
    fn canonical_json_sorts_keys_and_drops_empty_values() {
        let value = serde_json::json!({"b": 1, "a": {"z": null, "y": {}}, "c": [], "d": [{}]});
        assert_eq!(canonical_json(&value), r#"{"b":1,"d":[{}]}"#);
    }

    #[test]
    fn fnv1a64_matches_the_published_test_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }
}
