//! Pure builders of the objects Serin adds beside an opted-in Deployment `<name>`: the
//! `<name>-primary` Deployment, the Services `<svc>`, `<svc>-primary` and `<svc>-canary`, the
//! `-primary` copies of the ConfigMaps and Secrets the pod template uses, and the `-primary`
//! HPA. Admission (injection) and the controller (repair) both call these, so they cannot
//! disagree about what "the primary" is.
//!
//! Rules, as in Flagger:
//! - **Selector labels.** Every `spec.selector.matchLabels` value `v` becomes `v-primary` in
//!   the primary's selector and pod template (`app: web` -> `app: web-primary`). Primary pods
//!   therefore never match the canary's selector and vice versa, and each Service selects
//!   exactly one side. `matchExpressions` are copied, but may not name a rewritten key (they
//!   would no longer match the primary's own pods). Without any `matchLabels` there is nothing
//!   to tell the two sides apart, which is an [`ObjectsError`].
//! - **Owner references.** Every object is owned by the Deployment (controller,
//!   blockOwnerDeletion), so deleting it deletes them. The reference needs the Deployment's
//!   `uid`, which a CREATE admission request does not carry yet: then the objects are built
//!   without owner references and the controller, which sees the stored object, adds them on
//!   its next pass (server-side apply by field manager `serin` makes that an ordinary update).
//! - **Namespace.** Copied from the Deployment's metadata; an admission request may carry it
//!   only in the request, in which case the caller sets it.
//! - **Tracked configs.** ConfigMaps and Secrets referenced by the pod template (volumes,
//!   projected volumes, `envFrom`, `env[].valueFrom`) are copied to `<config>-primary`, and the
//!   primary's template refers to the copies, so editing a ConfigMap is released as a canary
//!   instead of reaching the primary pods directly. Secrets are tracked only when
//!   [`Tracking::secrets`] says so (`--track-secrets`); otherwise the primary refers to the
//!   original Secrets, which it then shares with the canary.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetSpec, Deployment, DeploymentSpec};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, PodSpec, PodTemplateSpec, Secret, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{OWNER_LABEL, PRIMARY_REVISION_ANNOTATION};
use crate::spec::{
    CANARY_SUFFIX, CanarySpec, ConfigKind, ConfigRef, DESIRED_REPLICAS, IDLE_NODE_LABEL, PREFIX,
    PRIMARY_SUFFIX, Workload, config_refs, visit_config_refs,
};

/// Kubernetes' limit for label values and Service names (DNS-1035 labels).
const MAX_LABEL: usize = 63;

/// Annotations of the Deployment that must not reach the primary: `kubectl apply`'s memory of
/// the user's manifest (it would make `kubectl apply` on the primary look like an edit of the
/// original) and the Deployment controller's own bookkeeping.
const NOT_COPIED_ANNOTATIONS: [&str; 2] = [
    "kubectl.kubernetes.io/last-applied-configuration",
    "deployment.kubernetes.io/revision",
];

/// Why the objects of a Deployment cannot be built; written for the person who owns it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ObjectsError {
    #[error("the Deployment has no name")]
    MissingName,
    #[error(
        "spec.selector.matchLabels is empty: Serin needs at least one selector label to tell \
         primary pods from canary pods"
    )]
    NoSelectorLabels,
    #[error(
        "spec.selector.matchExpressions uses {key:?}, which is also in matchLabels; Serin \
         rewrites that label for the primary pods, so the expression would not match them"
    )]
    ExpressionOnRewrittenKey { key: String },
    #[error(
        "selector label {key}={value:?}: {value:?} plus \"-primary\" is longer than 63 characters"
    )]
    LabelTooLong { key: String, value: String },
    #[error("{name:?} would be longer than 63 characters; choose a shorter serin.dev/service")]
    ServiceNameTooLong { name: String },
    #[error("the pod template has no container port; set serin.dev/port")]
    NoPort,
    #[error("a {kind} without a name has no -primary copy")]
    UnnamedConfig { kind: ConfigKind },
}

/// `<name>-primary`.
pub fn primary_name(name: &str) -> String {
    format!("{name}{PRIMARY_SUFFIX}")
}

/// The owner reference that makes `deploy` the controller of an object, or `None` when the
/// Deployment has no `uid` yet (CREATE admission; see the module documentation).
pub fn owner_references(workload: &dyn Workload) -> Option<Vec<OwnerReference>> {
    let meta = workload.meta();
    let kind = workload.kind();
    Some(vec![OwnerReference {
        api_version: kind.api_version().into(),
        kind: kind.as_str().into(),
        name: meta.name.clone()?,
        uid: meta.uid.clone()?,
        controller: Some(true),
        block_owner_deletion: Some(true),
    }])
}

/// The primary pods' selector labels: each `matchLabels` value with `-primary` appended.
pub fn primary_selector(workload: &dyn Workload) -> Result<BTreeMap<String, String>, ObjectsError> {
    canary_selector(workload)?
        .into_iter()
        .map(|(key, value)| {
            let primary = format!("{value}{PRIMARY_SUFFIX}");
            match primary.len() > MAX_LABEL {
                true => Err(ObjectsError::LabelTooLong { key, value }),
                false => Ok((key, primary)),
            }
        })
        .collect()
}

/// The canary pods' selector labels: the Deployment's own `matchLabels`.
fn canary_selector(workload: &dyn Workload) -> Result<BTreeMap<String, String>, ObjectsError> {
    let selector = workload.selector();
    let labels = selector
        .and_then(|s| s.match_labels.clone())
        .filter(|labels| !labels.is_empty())
        .ok_or(ObjectsError::NoSelectorLabels)?;
    let expressions = selector.and_then(|s| s.match_expressions.as_ref());
    if let Some(expr) = expressions
        .into_iter()
        .flatten()
        .find(|e| labels.contains_key(&e.key))
    {
        return Err(ObjectsError::ExpressionOnRewrittenKey {
            key: expr.key.clone(),
        });
    }
    Ok(labels)
}

/// Metadata of an object Serin builds for `deploy`: name, namespace, [`OWNER_LABEL`] and the
/// owner reference.
fn managed_meta(workload: &dyn Workload, name: String) -> Result<ObjectMeta, ObjectsError> {
    let owner = workload
        .meta()
        .name
        .clone()
        .ok_or(ObjectsError::MissingName)?;
    Ok(ObjectMeta {
        name: Some(name),
        namespace: workload.meta().namespace.clone(),
        labels: Some(BTreeMap::from([(OWNER_LABEL.to_owned(), owner)])),
        owner_references: owner_references(workload),
        ..Default::default()
    })
}

/// The count the user asked for, as admission recorded it in `serin.dev/desired-replicas`;
/// `None` when absent or unreadable (the validating webhook reports that).
pub fn requested_replicas(deploy: &Deployment) -> Option<i32> {
    deploy
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(DESIRED_REPLICAS))
        .and_then(|v| v.trim().parse::<i32>().ok())
        .filter(|n| *n >= 0)
}

/// The replicas a new primary is made with: [`requested_replicas`], else the Deployment's
/// own `spec.replicas`. An unreadable annotation falls back too: the primary must not be
/// scaled to zero because of it.
fn primary_replicas(deploy: &Deployment) -> Option<i32> {
    requested_replicas(deploy).or_else(|| super::observe::spec_replicas(deploy))
}

/// What every `<name>-primary` is made of, whatever the kind: its metadata (the workload's
/// labels and annotations without `serin.dev/` ones and kubectl's and the controllers'
/// bookkeeping, [`OWNER_LABEL`], `revision` in [`PRIMARY_REVISION_ANNOTATION`]), its
/// selector (labels rewritten) and its pod template (selector labels rewritten, tracked
/// configs pointing at their `-primary` copies, [`IDLE_NODE_LABEL`] left out).
struct PrimaryParts {
    meta: ObjectMeta,
    selector: LabelSelector,
    template: PodTemplateSpec,
}

fn primary_parts(
    workload: &dyn Workload,
    revision: &str,
    tracking: Tracking,
) -> Result<PrimaryParts, ObjectsError> {
    let name = workload
        .meta()
        .name
        .as_deref()
        .ok_or(ObjectsError::MissingName)?;
    let selector = primary_selector(workload)?;

    let mut meta = managed_meta(workload, primary_name(name))?;
    let mut labels: BTreeMap<String, String> = workload
        .meta()
        .labels
        .iter()
        .flatten()
        .filter(|(key, _)| !key.starts_with(PREFIX))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    labels.extend(meta.labels.take().unwrap_or_default());
    meta.labels = Some(labels);
    let mut annotations: BTreeMap<String, String> = workload
        .meta()
        .annotations
        .iter()
        .flatten()
        .filter(|(key, _)| {
            !key.starts_with(PREFIX) && !NOT_COPIED_ANNOTATIONS.contains(&key.as_str())
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    annotations.insert(PRIMARY_REVISION_ANNOTATION.to_owned(), revision.to_owned());
    meta.annotations = Some(annotations);

    let mut template = release_template(workload);
    let pod_labels = template
        .metadata
        .get_or_insert_default()
        .labels
        .get_or_insert_default();
    pod_labels.extend(selector.clone());
    if let Some(spec) = template.spec.as_mut() {
        rewrite_config_refs(spec, tracking);
    }
    let match_expressions = workload
        .selector()
        .and_then(|s| s.match_expressions.clone());
    Ok(PrimaryParts {
        meta,
        selector: LabelSelector {
            match_labels: Some(selector),
            match_expressions,
        },
        template,
    })
}

/// The pod template a release is about: the workload's, without [`IDLE_NODE_LABEL`] in its
/// node selector (Serin's own switch for an idle canary DaemonSet, not the user's change).
/// The revision is hashed from it and the primary copies it, so idling or waking the canary
/// is never a new revision and the primary never inherits the switch; the user's own node
/// selector entries are kept.
pub fn release_template(workload: &dyn Workload) -> PodTemplateSpec {
    let mut template = workload.template().cloned().unwrap_or_default();
    if let Some(pod) = template.spec.as_mut()
        && let Some(selector) = pod.node_selector.as_mut()
    {
        selector.remove(IDLE_NODE_LABEL);
        if selector.is_empty() {
            pod.node_selector = None;
        }
    }
    template
}

/// The `<name>-primary` Deployment: [`PrimaryParts`] with the rest of the Deployment's spec,
/// replicas from `serin.dev/desired-replicas`; the primary is not opted in itself.
pub fn primary_deployment(
    deploy: &Deployment,
    revision: &str,
    tracking: Tracking,
) -> Result<Deployment, ObjectsError> {
    let parts = primary_parts(deploy, revision, tracking)?;
    let original = deploy.spec.clone().unwrap_or_default();
    Ok(Deployment {
        metadata: parts.meta,
        spec: Some(DeploymentSpec {
            replicas: primary_replicas(deploy),
            selector: parts.selector,
            template: parts.template,
            // A paused original must not freeze the primary's promotions.
            paused: None,
            ..original
        }),
        status: None,
    })
}

/// The `<name>-primary` DaemonSet: [`PrimaryParts`] with the rest of the DaemonSet's spec
/// (update strategy, `minReadySeconds`, history limit). It runs on every node the user's own
/// node selector and tolerations allow; the canary's idle switch is never copied.
pub fn primary_daemonset(
    daemonset: &DaemonSet,
    revision: &str,
    tracking: Tracking,
) -> Result<DaemonSet, ObjectsError> {
    let parts = primary_parts(daemonset, revision, tracking)?;
    let original = daemonset.spec.clone().unwrap_or_default();
    Ok(DaemonSet {
        metadata: parts.meta,
        spec: Some(DaemonSetSpec {
            selector: parts.selector,
            template: parts.template,
            ..original
        }),
        status: None,
    })
}

/// The three Services of a release: `<svc>` (the apex, what clients call; selects the primary
/// pods as in Flagger, the router shifts traffic from there), `<svc>-primary` and
/// `<svc>-canary`. Port `spec.port`, targeting the container port of that number.
pub fn services(workload: &dyn Workload, spec: &CanarySpec) -> Result<[Service; 3], ObjectsError> {
    let port = spec.port.ok_or(ObjectsError::NoPort)?;
    let primary = primary_selector(workload)?;
    let canary = canary_selector(workload)?;
    let container_port = workload
        .template()
        .and_then(|t| t.spec.as_ref())
        .into_iter()
        .flat_map(|pod| &pod.containers)
        .flat_map(|c: &Container| c.ports.iter().flatten())
        .find(|p| p.container_port == port);
    let service_port = ServicePort {
        // The container's port name keeps `appProtocol`-by-name conventions (`http`, `grpc`)
        // that meshes read; unnamed ports get `http`, what Linkerd and Flagger assume.
        name: Some(
            container_port
                .and_then(|p| p.name.clone())
                .unwrap_or_else(|| "http".into()),
        ),
        port,
        target_port: Some(IntOrString::Int(port)),
        protocol: Some(
            container_port
                .and_then(|p| p.protocol.clone())
                .unwrap_or_else(|| "TCP".into()),
        ),
        ..Default::default()
    };
    let service = |name: String, selector: BTreeMap<String, String>| {
        if name.len() > MAX_LABEL {
            return Err(ObjectsError::ServiceNameTooLong { name });
        }
        Ok(Service {
            metadata: managed_meta(workload, name)?,
            spec: Some(ServiceSpec {
                type_: Some("ClusterIP".into()),
                selector: Some(selector),
                ports: Some(vec![service_port.clone()]),
                ..Default::default()
            }),
            status: None,
        })
    };
    let svc = &spec.service;
    Ok([
        service(svc.clone(), primary.clone())?,
        service(format!("{svc}{PRIMARY_SUFFIX}"), primary)?,
        service(format!("{svc}{CANARY_SUFFIX}"), canary)?,
    ])
}

/// Which kinds of config Serin tracks: ConfigMaps always, Secrets only when enabled
/// (`--track-secrets`), since reading them takes RBAC on every Secret of the cluster. A tracked
/// config is read, hashed into the revision, watched, and copied to `<config>-primary` for the
/// primary; an untracked one is left alone and used by both sides under its own name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tracking {
    pub secrets: bool,
}

impl Tracking {
    /// ConfigMaps and Secrets (SPEC's behaviour).
    pub const ALL: Tracking = Tracking { secrets: true };
    /// ConfigMaps only.
    pub const CONFIG_MAPS: Tracking = Tracking { secrets: false };

    pub fn tracks(self, kind: ConfigKind) -> bool {
        match kind {
            ConfigKind::ConfigMap => true,
            ConfigKind::Secret => self.secrets,
        }
    }

    /// The tracked configs among those the pod template uses ([`config_refs`]).
    pub fn refs(self, template: &PodTemplateSpec) -> Vec<ConfigRef> {
        let mut refs = config_refs(template);
        refs.retain(|r| self.tracks(r.kind));
        refs
    }
}

/// Points every reference to a tracked config of `pod` at its `-primary` copy.
pub fn rewrite_config_refs(pod: &mut PodSpec, tracking: Tracking) {
    visit_config_refs(pod, &mut |kind, name, _| {
        if tracking.tracks(kind) {
            name.push_str(PRIMARY_SUFFIX);
        }
    });
}

/// Metadata of a `-primary` copy: the original's labels plus [`OWNER_LABEL`], owned by the
/// Deployment. Annotations are not copied (they often hold tool state such as
/// `last-applied-configuration`).
fn copy_meta(
    kind: ConfigKind,
    original: &ObjectMeta,
    workload: &dyn Workload,
) -> Result<ObjectMeta, ObjectsError> {
    let name = original
        .name
        .as_deref()
        .ok_or(ObjectsError::UnnamedConfig { kind })?;
    let mut meta = managed_meta(workload, primary_name(name))?;
    let mut labels = original.labels.clone().unwrap_or_default();
    labels.extend(meta.labels.take().unwrap_or_default());
    meta.labels = Some(labels);
    meta.namespace = original.namespace.clone().or(meta.namespace);
    Ok(meta)
}

/// The `<config>-primary` copy of a ConfigMap the pod template uses.
pub fn primary_config_map(
    cm: &ConfigMap,
    workload: &dyn Workload,
) -> Result<ConfigMap, ObjectsError> {
    Ok(ConfigMap {
        metadata: copy_meta(ConfigKind::ConfigMap, &cm.metadata, workload)?,
        data: cm.data.clone(),
        binary_data: cm.binary_data.clone(),
        immutable: cm.immutable,
    })
}

/// The `<secret>-primary` copy of a Secret the pod template uses.
pub fn primary_secret(secret: &Secret, workload: &dyn Workload) -> Result<Secret, ObjectsError> {
    Ok(Secret {
        metadata: copy_meta(ConfigKind::Secret, &secret.metadata, workload)?,
        data: secret.data.clone(),
        // Written by the API server into `data`; copying both would be redundant.
        string_data: None,
        type_: secret.type_.clone(),
        immutable: secret.immutable,
    })
}

/// The `-primary` copy of an HPA that targets the Deployment, targeting `<name>-primary`
/// instead; `None` when the HPA targets something else.
pub fn primary_hpa(
    hpa: &HorizontalPodAutoscaler,
    deploy: &Deployment,
) -> Result<Option<HorizontalPodAutoscaler>, ObjectsError> {
    let name = deploy
        .metadata
        .name
        .as_deref()
        .ok_or(ObjectsError::MissingName)?;
    let spec = &hpa.spec;
    let target = &spec.scale_target_ref;
    if target.kind != "Deployment" || target.name != name {
        return Ok(None);
    }
    let hpa_name = hpa.metadata.name.as_deref().unwrap_or(name);
    let mut spec = spec.clone();
    spec.scale_target_ref.name = primary_name(name);
    Ok(Some(HorizontalPodAutoscaler {
        metadata: managed_meta(deploy, primary_name(hpa_name))?,
        spec,
        status: None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::autoscaling::v2::{
        CrossVersionObjectReference, HorizontalPodAutoscalerSpec,
    };
    use k8s_openapi::api::core::v1::{
        ConfigMapEnvSource, ConfigMapKeySelector, ConfigMapVolumeSource, ContainerPort,
        EnvFromSource, EnvVar, EnvVarSource, ProjectedVolumeSource, SecretKeySelector,
        SecretProjection, SecretVolumeSource, Volume, VolumeProjection,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// `web` in `prod`: selector `app: web`, an app container on 9898 named `http`, a config
    /// volume, a secret env var, and Serin's annotations.
    fn web() -> Deployment {
        Deployment {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("prod".into()),
                uid: Some("1234-abcd".into()),
                labels: Some(labels(&[("app", "web"), ("serin.dev/canary", "true")])),
                annotations: Some(labels(&[
                    ("serin.dev/enabled", "true"),
                    (DESIRED_REPLICAS, "3"),
                    ("team", "payments"),
                    ("kubectl.kubernetes.io/last-applied-configuration", "{}"),
                ])),
                ..Default::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(0),
                selector: LabelSelector {
                    match_labels: Some(labels(&[("app", "web")])),
                    match_expressions: None,
                },
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(labels(&[("app", "web"), ("tier", "front")])),
                        ..Default::default()
                    }),
                    spec: Some(PodSpec {
                        containers: vec![Container {
                            name: "app".into(),
                            ports: Some(vec![ContainerPort {
                                container_port: 9898,
                                name: Some("http-api".into()),
                                ..Default::default()
                            }]),
                            env: Some(vec![EnvVar {
                                name: "TOKEN".into(),
                                value_from: Some(EnvVarSource {
                                    secret_key_ref: Some(SecretKeySelector {
                                        name: "web-token".into(),
                                        key: "token".into(),
                                        optional: None,
                                    }),
                                    ..Default::default()
                                }),
                                ..Default::default()
                            }]),
                            ..Default::default()
                        }],
                        volumes: Some(vec![Volume {
                            name: "config".into(),
                            config_map: Some(ConfigMapVolumeSource {
                                name: "web-config".into(),
                                ..Default::default()
                            }),
                            ..Default::default()
                        }]),
                        ..Default::default()
                    }),
                },
                ..Default::default()
            }),
            status: None,
        }
    }

    fn spec() -> CanarySpec {
        CanarySpec::defaults("web".into(), Some(9898))
    }

    fn primary() -> Deployment {
        match primary_deployment(&web(), "rev1", Tracking::ALL) {
            Ok(primary) => primary,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn primary_is_named_after_the_deployment_in_its_namespace() {
        let primary = primary();
        assert_eq!(primary.metadata.name.as_deref(), Some("web-primary"));
        assert_eq!(primary.metadata.namespace.as_deref(), Some("prod"));
    }

    #[test]
    fn primary_selector_and_pod_labels_get_the_primary_suffix() {
        let primary = primary();
        let spec = primary.spec.unwrap_or_default();
        assert_eq!(
            spec.selector.match_labels,
            Some(labels(&[("app", "web-primary")]))
        );
        let pod_labels = spec.template.metadata.and_then(|m| m.labels);
        assert_eq!(
            pod_labels,
            Some(labels(&[("app", "web-primary"), ("tier", "front")]))
        );
    }

    #[test]
    fn primary_replicas_come_from_desired_replicas() {
        assert_eq!(primary().spec.and_then(|s| s.replicas), Some(3));
    }

    #[test]
    fn primary_replicas_fall_back_to_the_deployment_when_the_annotation_is_unreadable() {
        let mut deploy = web();
        if let Some(a) = deploy.metadata.annotations.as_mut() {
            a.insert(DESIRED_REPLICAS.into(), "three".into());
        }
        let primary = primary_deployment(&deploy, "rev1", Tracking::ALL).ok();
        assert_eq!(
            primary.and_then(|p| p.spec).and_then(|s| s.replicas),
            Some(0)
        );
    }

    #[test]
    fn primary_is_owned_by_the_deployment_as_its_controller() {
        let owners = primary().metadata.owner_references.unwrap_or_default();
        assert_eq!(owners.len(), 1);
        assert_eq!(owners[0].kind, "Deployment");
        assert_eq!(owners[0].name, "web");
        assert_eq!(owners[0].uid, "1234-abcd");
        assert_eq!(owners[0].controller, Some(true));
        assert_eq!(owners[0].block_owner_deletion, Some(true));
    }

    #[test]
    fn without_a_uid_objects_are_built_without_owner_references() {
        let mut deploy = web();
        deploy.metadata.uid = None;
        let primary = primary_deployment(&deploy, "rev1", Tracking::ALL).ok();
        assert_eq!(primary.map(|p| p.metadata.owner_references), Some(None));
    }

    #[test]
    fn primary_is_not_opted_in_and_carries_the_owner_label_and_revision() {
        let meta = primary().metadata;
        assert_eq!(
            meta.labels,
            Some(labels(&[("app", "web"), (OWNER_LABEL, "web")]))
        );
        assert_eq!(
            meta.annotations,
            Some(labels(&[
                (PRIMARY_REVISION_ANNOTATION, "rev1"),
                ("team", "payments")
            ]))
        );
    }

    #[test]
    fn primary_template_refers_to_the_primary_copies_of_configs() {
        let template = primary().spec.unwrap_or_default().template;
        let names: Vec<String> = config_refs(&template).into_iter().map(|r| r.name).collect();
        assert_eq!(names, vec!["web-config-primary", "web-token-primary"]);
    }

    #[test]
    fn without_secret_tracking_the_primary_shares_the_original_secrets() {
        let primary = primary_deployment(&web(), "rev1", Tracking::CONFIG_MAPS).ok();
        let template = primary.and_then(|p| p.spec).unwrap_or_default().template;
        let refs: Vec<(ConfigKind, String)> = config_refs(&template)
            .into_iter()
            .map(|r| (r.kind, r.name))
            .collect();
        assert_eq!(
            refs,
            vec![
                (ConfigKind::ConfigMap, "web-config-primary".into()),
                (ConfigKind::Secret, "web-token".into()),
            ]
        );
    }

    #[test]
    fn tracked_refs_leave_out_secrets_unless_secrets_are_tracked() {
        let template = web().spec.unwrap_or_default().template;
        let names = |tracking: Tracking| -> Vec<String> {
            tracking
                .refs(&template)
                .into_iter()
                .map(|r| r.name)
                .collect()
        };
        assert_eq!(names(Tracking::ALL), vec!["web-config", "web-token"]);
        assert_eq!(names(Tracking::CONFIG_MAPS), vec!["web-config"]);
    }

    #[test]
    fn a_selector_without_match_labels_is_refused() {
        let mut deploy = web();
        if let Some(s) = deploy.spec.as_mut() {
            s.selector.match_labels = None;
        }
        assert_eq!(
            primary_deployment(&deploy, "r", Tracking::ALL).err(),
            Some(ObjectsError::NoSelectorLabels)
        );
    }

    #[test]
    fn an_expression_on_a_rewritten_label_is_refused() {
        let mut deploy = web();
        if let Some(s) = deploy.spec.as_mut() {
            s.selector.match_expressions = Some(vec![LabelSelectorRequirement {
                key: "app".into(),
                operator: "In".into(),
                values: Some(vec!["web".into()]),
            }]);
        }
        assert_eq!(
            primary_deployment(&deploy, "r", Tracking::ALL).err(),
            Some(ObjectsError::ExpressionOnRewrittenKey { key: "app".into() })
        );
    }

    #[test]
    fn a_selector_value_too_long_for_the_suffix_is_refused() {
        let long = "a".repeat(60);
        let mut deploy = web();
        if let Some(s) = deploy.spec.as_mut() {
            s.selector.match_labels = Some(labels(&[("app", &long)]));
        }
        assert!(matches!(
            primary_deployment(&deploy, "r", Tracking::ALL),
            Err(ObjectsError::LabelTooLong { .. })
        ));
    }

    #[test]
    fn apex_and_primary_services_select_primary_pods_and_canary_service_the_canary() {
        let Ok([apex, primary, canary]) = services(&web(), &spec()) else {
            panic!("services should build");
        };
        let name_and_selector = |s: &Service| {
            (
                s.metadata.name.clone().unwrap_or_default(),
                s.spec.as_ref().and_then(|s| s.selector.clone()),
            )
        };
        assert_eq!(
            name_and_selector(&apex),
            ("web".into(), Some(labels(&[("app", "web-primary")])))
        );
        assert_eq!(
            name_and_selector(&primary),
            (
                "web-primary".into(),
                Some(labels(&[("app", "web-primary")]))
            )
        );
        assert_eq!(
            name_and_selector(&canary),
            ("web-canary".into(), Some(labels(&[("app", "web")])))
        );
    }

    #[test]
    fn services_expose_the_spec_port_named_after_the_container_port() {
        let Ok(all) = services(&web(), &spec()) else {
            panic!("services should build");
        };
        for service in all {
            let ports = service.spec.and_then(|s| s.ports).unwrap_or_default();
            assert_eq!(ports.len(), 1);
            assert_eq!(ports[0].port, 9898);
            assert_eq!(ports[0].target_port, Some(IntOrString::Int(9898)));
            assert_eq!(ports[0].name.as_deref(), Some("http-api"));
            let meta = service.metadata;
            assert_eq!(meta.labels, Some(labels(&[(OWNER_LABEL, "web")])));
            assert!(meta.owner_references.is_some());
        }
    }

    #[test]
    fn services_need_a_port() {
        let spec = CanarySpec {
            port: None,
            ..spec()
        };
        assert_eq!(services(&web(), &spec).err(), Some(ObjectsError::NoPort));
    }

    #[test]
    fn config_refs_finds_volumes_projections_env_from_and_env_value_from_once_each() {
        let mut deploy = web();
        let pod = deploy.spec.as_mut().and_then(|s| s.template.spec.as_mut());
        let Some(pod) = pod else {
            panic!("fixture has a pod spec")
        };
        pod.volumes.get_or_insert_default().extend([
            Volume {
                name: "creds".into(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some("web-token".into()),
                    optional: Some(true),
                    ..Default::default()
                }),
                ..Default::default()
            },
            Volume {
                name: "bundle".into(),
                projected: Some(ProjectedVolumeSource {
                    sources: Some(vec![VolumeProjection {
                        secret: Some(SecretProjection {
                            name: "tls".into(),
                            optional: Some(true),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ]);
        pod.init_containers = Some(vec![Container {
            name: "init".into(),
            env_from: Some(vec![EnvFromSource {
                config_map_ref: Some(ConfigMapEnvSource {
                    name: "env".into(),
                    optional: None,
                }),
                ..Default::default()
            }]),
            env: Some(vec![EnvVar {
                name: "X".into(),
                value_from: Some(EnvVarSource {
                    config_map_key_ref: Some(ConfigMapKeySelector {
                        name: "web-config".into(),
                        key: "x".into(),
                        optional: None,
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }]);
        let refs = deploy
            .spec
            .map(|s| config_refs(&s.template))
            .unwrap_or_default();
        let cm = |name: &str, optional| ConfigRef {
            kind: ConfigKind::ConfigMap,
            name: name.into(),
            optional,
        };
        let secret = |name: &str, optional| ConfigRef {
            kind: ConfigKind::Secret,
            name: name.into(),
            optional,
        };
        assert_eq!(
            refs,
            vec![
                cm("env", false),
                cm("web-config", false),
                secret("tls", true),
                // Optional in the volume but required by the env var: required.
                secret("web-token", false),
            ]
        );
    }

    #[test]
    fn primary_config_map_copy_keeps_data_and_is_owned_by_the_deployment() {
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some("web-config".into()),
                namespace: Some("prod".into()),
                labels: Some(labels(&[("app", "web")])),
                ..Default::default()
            },
            data: Some(labels(&[("key", "value")])),
            ..Default::default()
        };
        let Ok(copy) = primary_config_map(&cm, &web()) else {
            panic!("copy should build");
        };
        assert_eq!(copy.metadata.name.as_deref(), Some("web-config-primary"));
        assert_eq!(
            copy.metadata.labels,
            Some(labels(&[("app", "web"), (OWNER_LABEL, "web")]))
        );
        assert_eq!(copy.data, cm.data);
        assert!(copy.metadata.owner_references.is_some());
    }

    #[test]
    fn primary_secret_copy_keeps_data_and_type() {
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some("web-token".into()),
                ..Default::default()
            },
            type_: Some("Opaque".into()),
            data: Some(BTreeMap::from([(
                "token".to_owned(),
                k8s_openapi::ByteString(b"s3cr3t".to_vec()),
            )])),
            ..Default::default()
        };
        let Ok(copy) = primary_secret(&secret, &web()) else {
            panic!("copy should build");
        };
        assert_eq!(copy.metadata.name.as_deref(), Some("web-token-primary"));
        assert_eq!(copy.metadata.namespace.as_deref(), Some("prod"));
        assert_eq!(copy.data, secret.data);
        assert_eq!(copy.type_.as_deref(), Some("Opaque"));
    }

    fn hpa(target: &str) -> HorizontalPodAutoscaler {
        HorizontalPodAutoscaler {
            metadata: ObjectMeta {
                name: Some("web".into()),
                ..Default::default()
            },
            spec: HorizontalPodAutoscalerSpec {
                max_replicas: 10,
                min_replicas: Some(2),
                scale_target_ref: CrossVersionObjectReference {
                    api_version: Some("apps/v1".into()),
                    kind: "Deployment".into(),
                    name: target.into(),
                },
                ..Default::default()
            },
            status: None,
        }
    }

    #[test]
    fn primary_hpa_targets_the_primary_deployment() {
        let copy = primary_hpa(&hpa("web"), &web()).ok().flatten();
        let Some(copy) = copy else {
            panic!("the HPA targets web")
        };
        assert_eq!(copy.metadata.name.as_deref(), Some("web-primary"));
        let spec = copy.spec;
        assert_eq!(spec.scale_target_ref.name, "web-primary");
        assert_eq!((spec.min_replicas, spec.max_replicas), (Some(2), 10));
    }

    #[test]
    fn an_hpa_of_another_deployment_gets_no_primary_copy() {
        assert_eq!(primary_hpa(&hpa("api"), &web()), Ok(None));
    }

    /// `web` as a DaemonSet: the same metadata and pod template, idle (the switch beside the
    /// user's own node selector), with a rolling update strategy of its own.
    fn web_daemonset() -> DaemonSet {
        let deploy = web();
        let mut spec = deploy.spec.unwrap_or_default();
        spec.template.spec.get_or_insert_default().node_selector = Some(labels(&[
            ("kubernetes.io/os", "linux"),
            (IDLE_NODE_LABEL, "true"),
        ]));
        let mut metadata = deploy.metadata;
        metadata
            .annotations
            .get_or_insert_default()
            .remove(DESIRED_REPLICAS);
        DaemonSet {
            metadata,
            spec: Some(DaemonSetSpec {
                selector: spec.selector,
                template: spec.template,
                min_ready_seconds: Some(5),
                ..Default::default()
            }),
            status: None,
        }
    }

    #[test]
    fn a_daemonset_primary_is_a_daemonset_copy_without_the_idle_switch() {
        let daemonset = web_daemonset();
        let primary = match primary_daemonset(&daemonset, "rev1", Tracking::ALL) {
            Ok(primary) => primary,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(primary.metadata.name.as_deref(), Some("web-primary"));
        let owner = primary
            .metadata
            .owner_references
            .clone()
            .unwrap_or_default();
        assert_eq!(owner.len(), 1);
        assert_eq!(
            (owner[0].kind.as_str(), owner[0].name.as_str()),
            ("DaemonSet", "web")
        );
        let annotations = primary.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(
            annotations
                .get(PRIMARY_REVISION_ANNOTATION)
                .map(String::as_str),
            Some("rev1")
        );
        assert!(
            !annotations
                .keys()
                .any(|k| k.starts_with(PREFIX) && k != PRIMARY_REVISION_ANNOTATION)
        );
        let spec = primary.spec.unwrap_or_default();
        assert_eq!(spec.min_ready_seconds, Some(5));
        assert_eq!(
            spec.selector.match_labels,
            Some(labels(&[("app", "web-primary")]))
        );
        let pod = spec.template.spec.unwrap_or_default();
        // The user's own node selector is kept; Serin's idle switch is not copied.
        assert_eq!(
            pod.node_selector,
            Some(labels(&[("kubernetes.io/os", "linux")]))
        );
        let volume = pod.volumes.unwrap_or_default();
        assert_eq!(
            volume[0].config_map.as_ref().map(|c| c.name.as_str()),
            Some("web-config-primary")
        );
    }

    #[test]
    fn the_idle_switch_is_not_part_of_the_release_template() {
        let idle = web_daemonset();
        let mut awake = idle.clone();
        if let Some(pod) = awake.spec.as_mut().and_then(|s| s.template.spec.as_mut()) {
            pod.node_selector = Some(labels(&[("kubernetes.io/os", "linux")]));
        }
        assert_eq!(release_template(&idle), release_template(&awake));
        assert_eq!(
            crate::release::revision(&release_template(&idle), &[]),
            crate::release::revision(&release_template(&awake), &[])
        );
        // A node selector of Serin's switch alone disappears with it.
        let mut only = idle.clone();
        if let Some(pod) = only.spec.as_mut().and_then(|s| s.template.spec.as_mut()) {
            pod.node_selector = Some(labels(&[(IDLE_NODE_LABEL, "true")]));
        }
        let template = release_template(&only);
        assert_eq!(template.spec.and_then(|p| p.node_selector), None);
    }

    #[test]
    fn a_daemonsets_services_select_the_same_two_sides_as_a_deployments() {
        let from_daemonset = services(&web_daemonset(), &spec()).map_err(|e| e.to_string());
        let from_deployment = services(&web(), &spec()).map_err(|e| e.to_string());
        let selectors = |svcs: Result<[Service; 3], String>| -> Vec<_> {
            svcs.unwrap_or_else(|e| panic!("{e}"))
                .into_iter()
                .map(|s| s.spec.and_then(|s| s.selector))
                .collect()
        };
        assert_eq!(selectors(from_daemonset), selectors(from_deployment));
    }
}
