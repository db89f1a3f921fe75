//! The decisions about a Deployment write, as pure functions of the admission request.
//!
//! - [`validate`] refuses an opted-in Deployment whose `serin.dev/` annotations are wrong,
//!   listing every mistake, one per line, or whose release would take names that other
//!   objects hold ([`name_conflicts`]), and applies the `CanaryPolicy` objects that cover
//!   it ([`PolicyView`]): `deny` findings refuse, `warn` findings become warnings.
//! - [`mutate`] writes the effective configuration (policy defaults included) back as explicit
//!   annotations (only the
//!   missing ones: a value the user wrote is never rewritten, so GitOps tools see no drift),
//!   labels the Deployment for the controller's watch, and, when an update leaves the pod
//!   template alone, keeps `spec.replicas` as stored (an idle canary stays at zero) while
//!   recording the requested count in `serin.dev/desired-replicas` for the primary.

use std::collections::BTreeMap;

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation, ReplaceOperation};
use k8s_openapi::api::apps::v1::Deployment;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, Operation};
use serde_json::Value;

use super::review::DeploymentRequest;
use crate::crd::{AnalysisTemplateSpec, Enforcement, PolicyDefaults};
use crate::policy::{self, Finding, NamedPolicy, Names, Release};
use crate::release::{CANARY_SUFFIX, PRIMARY_SUFFIX, primary_name, requested_replicas};
use crate::spec::{self, OptIn, Workload, WorkloadKind};

/// What the cluster says about a Deployment write beyond the object itself, gathered by the
/// webhook (from its caches and the API server) before the pure decisions run.
#[derive(Clone, Debug, Default)]
pub struct PolicyView {
    /// The `CanaryPolicy` objects covering the Deployment.
    pub policies: Vec<NamedPolicy>,
    /// The `AnalysisTemplate` the Deployment names in `serin.dev/analysis`.
    pub template: Template,
    /// What holds the names the opt-in would take; `None` when not looked up (nothing new is
    /// claimed, Serin's own write, or no cluster access).
    pub names: Option<Names>,
}

/// Why Deployment `name` cannot take the names its opt-in derives, one line each: an object
/// under one of them that Serin does not manage for it (Serin's server-side apply would write
/// over it), or another opted-in Deployment with the same apex Service. The apex Service
/// itself may be the user's own, as before opting in (Serin points it at the primary and
/// gives it back on opt-out, as Flagger does), unless another controller owns it or Serin
/// manages it for another Deployment.
pub fn name_conflicts(
    workload: WorkloadKind,
    name: &str,
    canary: &spec::CanarySpec,
    names: &Names,
) -> Vec<String> {
    let service = &canary.service;
    let mut lines = Vec::new();
    let mut rivals: Vec<&str> = names
        .services
        .iter()
        .filter(|(other, svc)| other != name && svc == service)
        .map(|(other, _)| other.as_str())
        .collect();
    rivals.sort_unstable();
    rivals.dedup();
    for other in &rivals {
        lines.push(format!(
            "serin.dev/service: Service {service:?} is already the apex Service of opted-in \
             Deployment {other:?}; choose another serin.dev/service"
        ));
    }
    let derived = [
        (workload.as_str(), primary_name(name), false),
        ("Service", service.clone(), true),
        ("Service", format!("{service}{PRIMARY_SUFFIX}"), false),
        ("Service", format!("{service}{CANARY_SUFFIX}"), false),
    ];
    for (kind, derived, may_be_the_users) in derived {
        let Some(found) = names
            .objects
            .iter()
            .find(|o| o.kind == kind && o.name == derived)
        else {
            continue;
        };
        let line = match (&found.owner, &found.controller) {
            (Some(owner), _) if owner == name => continue,
            (Some(owner), _) if rivals.contains(&owner.as_str()) => continue,
            (Some(owner), controller) => {
                // The owner's kind is its owner reference's, when it has one to it.
                let owner_kind = match controller {
                    Some((owner_kind, name)) if name == owner => owner_kind.as_str(),
                    _ => "Deployment",
                };
                format!("{kind} {derived:?} is managed by Serin for {owner_kind} {owner:?}")
            }
            (None, Some((owner_kind, owner))) => format!(
                "{kind} {derived:?} exists, controlled by {owner_kind} {owner:?}, not by Serin"
            ),
            (None, None) if may_be_the_users => continue,
            (None, None) => format!("{kind} {derived:?} exists and is not managed by Serin"),
        };
        let instead = match kind == workload.as_str() {
            true => format!("name for this {workload}"),
            false => "serin.dev/service".to_owned(),
        };
        lines.push(format!(
            "{line}; Serin would write over it: rename or delete it, or choose another {instead}"
        ));
    }
    lines
}

/// The outcome of looking up the Deployment's `AnalysisTemplate`.
#[derive(Clone, Debug, Default)]
pub enum Template {
    /// Not looked up: the Deployment names none, or the webhook has no cluster access.
    #[default]
    NotLooked,
    Missing,
    Found(AnalysisTemplateSpec),
}

/// Reads a Deployment's configuration with the policies' defaults filled in where the user
/// wrote nothing: the same reading the mutating webhook writes back.
/// A DaemonSet is read the same way ([`spec::Workload`]).
pub fn read(workload: &dyn Workload, defaults: &PolicyDefaults) -> Result<OptIn, spec::Problems> {
    match workload.meta().annotations.as_ref() {
        Some(annotations) if opted_in(workload) && *defaults != PolicyDefaults::default() => {
            spec::read_workload_with(workload, &policy::fill_defaults(annotations, defaults))
        }
        _ => spec::read_workload(workload),
    }
}

/// What Serin says about a Deployment, policies applied: the same for the webhook and for
/// `serin check`.
#[derive(Clone, Debug, PartialEq)]
#[expect(
    clippy::large_enum_variant,
    reason = "made once per review and matched at once, like OptIn inside it"
)]
pub enum Judgement {
    /// Admitted, with what `warn` policies found (one line each).
    Admitted {
        opt_in: OptIn,
        warnings: Vec<String>,
    },
    /// Refused: a headline and one line per mistake or finding.
    Refused {
        headline: String,
        lines: Vec<String>,
    },
}

impl Judgement {
    fn refused(headline: String, lines: Vec<String>) -> Self {
        Judgement::Refused { headline, lines }
    }
}

/// Judges a Deployment in `namespace`: its configuration (policy defaults filled), the
/// `AnalysisTemplate` it names, and the findings of the policies covering it.
pub fn judge(workload: &dyn Workload, namespace: &str, view: &PolicyView) -> Judgement {
    let name = workload.meta().name.as_deref().unwrap_or_default();
    let kind = workload.kind();
    let count_of = |count: usize, one: &str, many: &str| match count {
        1 => format!("1 {one}"),
        n => format!("{n} {many}"),
    };
    let defaults = policy::combined_defaults(&view.policies);
    let opt_in = match read(workload, &defaults) {
        Ok(opt_in) => opt_in,
        Err(problems) => {
            let count = count_of(problems.len(), "mistake", "mistakes");
            return Judgement::refused(
                format!("{kind} {name:?}: {count} in its serin.dev annotations:"),
                problems.iter().map(ToString::to_string).collect(),
            );
        }
    };
    if let (OptIn::Enabled(canary), Template::Missing) = (&opt_in, &view.template) {
        let template = canary.analysis.as_deref().unwrap_or_default();
        return Judgement::refused(
            format!("{kind} {name:?}: 1 mistake in its serin.dev annotations:"),
            vec![format!(
                "serin.dev/analysis: AnalysisTemplate {template:?} does not exist in namespace \
                 {namespace:?}; create it first"
            )],
        );
    }
    if let (OptIn::Enabled(canary), Some(names)) = (&opt_in, &view.names) {
        let conflicts = name_conflicts(kind, name, canary, names);
        if !conflicts.is_empty() {
            let count = conflicts.len();
            return Judgement::refused(
                format!("{kind} {name:?}: names its release needs are taken ({count}):"),
                conflicts,
            );
        }
    }
    let template = match &view.template {
        Template::Found(spec) => Some(spec),
        Template::NotLooked | Template::Missing => None,
    };
    let policies: Vec<&NamedPolicy> = view.policies.iter().collect();
    let (denied, warned): (Vec<Finding>, Vec<Finding>) =
        policy::findings(&policies, Release::of(&opt_in, template))
            .into_iter()
            .partition(|f| f.enforcement == Enforcement::Deny);
    if !denied.is_empty() {
        let count = count_of(denied.len(), "finding", "findings");
        return Judgement::refused(
            format!("{kind} {name:?}: refused by CanaryPolicy ({count}):"),
            denied.iter().map(ToString::to_string).collect(),
        );
    }
    let warnings = warned
        .iter()
        .map(|f| format!("{kind} {name:?}: {f} [enforcement: warn]"))
        .collect();
    Judgement::Admitted { opt_in, warnings }
}

/// Refuses a Deployment whose configuration is wrong, names a missing `AnalysisTemplate`, or
/// breaks a `deny` CanaryPolicy; a `warn` policy's findings become warnings.
pub fn validate<W: Workload + kube::Resource>(
    req: &AdmissionRequest<W>,
    view: &PolicyView,
) -> AdmissionResponse {
    let mut response = AdmissionResponse::from(req);
    let Some(deploy) = req.object.as_ref() else {
        return response; // DELETE: nothing to validate
    };
    let namespace = req.namespace.as_deref().unwrap_or_default();
    match judge(deploy, namespace, view) {
        Judgement::Refused { headline, lines } => {
            response.deny(format!("{headline}\n{}", lines.join("\n")))
        }
        Judgement::Admitted { warnings, .. } => {
            if !warnings.is_empty() {
                response.warnings = Some(warnings);
            }
            response
        }
    }
}

/// Fills defaults and protects the idle canary's replica count; see the module docs.
pub fn mutate(
    req: &DeploymentRequest,
    serin_user: &str,
    defaults: &PolicyDefaults,
) -> AdmissionResponse {
    let response = AdmissionResponse::from(req);
    if !matches!(req.operation, Operation::Create | Operation::Update) {
        return response;
    }
    let Some(deploy) = req.object.as_ref() else {
        return response;
    };
    let from_serin = req.user_info.username.as_deref() == Some(serin_user);
    let old = match req.operation {
        Operation::Update => req.old_object.as_ref(),
        _ => None,
    };
    // Invalid configuration is the validating webhook's to refuse, with every mistake named.
    let Ok(OptIn::Enabled(canary)) = read(deploy, defaults) else {
        return keep_managed_label(response, deploy, old, from_serin);
    };

    let annotations = deploy.metadata.annotations.as_ref();
    let mut updates: BTreeMap<String, String> = spec::defaulted_annotations(&canary)
        .into_iter()
        .filter(|(key, _)| !annotations.is_some_and(|a| a.contains_key(key)))
        .collect();
    let mut ops = Vec::new();
    if !from_serin {
        let replicas = replica_decision(deploy, old);
        if let Some(keep) = replicas.keep {
            // `add` also sets a member that is there: one operation for CREATE and UPDATE.
            ops.push(PatchOperation::Add(AddOperation {
                path: PointerBuf::from_tokens(["spec", "replicas"]),
                value: keep.into(),
            }));
        }
        updates.insert(spec::DESIRED_REPLICAS.into(), replicas.desired.to_string());
    }
    ops.extend(set_entries(
        &["metadata", "annotations"],
        annotations,
        updates,
    ));
    let label = BTreeMap::from([(spec::MANAGED_LABEL.to_string(), "true".to_string())]);
    ops.extend(set_entries(
        &["metadata", "labels"],
        deploy.metadata.labels.as_ref(),
        label,
    ));
    if ops.is_empty() {
        return response;
    }
    match response.clone().with_patch(Patch(ops)) {
        Ok(patched) => patched,
        // Serializing a patch of strings and integers cannot fail; if it ever did, admit
        // unchanged rather than block the write.
        Err(_) => response,
    }
}

/// An opted-out Deployment stays in the controller's watch until the controller has restored
/// it and removed the machinery (then Serin removes the label itself): a user's write that
/// drops the label with the annotations gets it back.
pub(super) fn keep_managed_label<W: Workload>(
    response: AdmissionResponse,
    deploy: &W,
    old: Option<&W>,
    from_serin: bool,
) -> AdmissionResponse {
    let has_label = |d: &W| {
        d.meta()
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key(spec::MANAGED_LABEL))
    };
    if from_serin || has_label(deploy) || !old.is_some_and(has_label) {
        return response;
    }
    let label = BTreeMap::from([(spec::MANAGED_LABEL.to_string(), "true".to_string())]);
    let ops = set_entries(
        &["metadata", "labels"],
        deploy.meta().labels.as_ref(),
        label,
    );
    response.clone().with_patch(Patch(ops)).unwrap_or(response)
}

/// What to do with `spec.replicas` on a user's write.
struct ReplicaDecision {
    /// Put the stored count back (the update only changed the replica count).
    keep: Option<i32>,
    /// The count the user asked for, for the primary.
    desired: i32,
}

fn replica_decision(deploy: &Deployment, old: Option<&Deployment>) -> ReplicaDecision {
    let requested = replicas(deploy);
    let Some(old) = old else {
        // A new opted-in Deployment starts as the idle canary: its pods will run as
        // `<name>-primary`, which Serin creates at once with the requested count. Starting
        // them here only to scale them away would cost the cluster a ReplicaSet's worth of
        // Pods per Deployment, and before the primary exists no Service routes to them anyway.
        return ReplicaDecision {
            keep: (requested != 0).then_some(0),
            desired: requested,
        };
    };
    let resized = replicas(old) != requested;
    let desired = if resized || !opted_in(old) {
        requested
    } else {
        // The write left `spec.replicas` as stored: `kubectl set image`, `annotate`, `label`,
        // `patch`, `rollout restart`, `edit`, a manifest leaving replicas to an HPA. Between
        // releases the stored count is Serin's 0 (during one, the canary's size), never the
        // user's request: keep the recorded count, or the one the user wrote into the
        // annotation itself (an explicit request, `0` included).
        requested_replicas(deploy)
            .or_else(|| requested_replicas(old))
            .unwrap_or(requested)
    };
    let same_template = template(old) == template(deploy);
    ReplicaDecision {
        keep: (same_template && resized).then(|| replicas(old)),
        desired,
    }
}

/// `serin.dev/enabled: "true"`, whatever else the annotations say.
fn opted_in(workload: &dyn Workload) -> bool {
    workload
        .meta()
        .annotations
        .as_ref()
        .and_then(|a| a.get(spec::ENABLED))
        .is_some_and(|v| v == "true")
}

/// `spec.replicas` as the API server defaults it.
fn replicas(deploy: &Deployment) -> i32 {
    deploy.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

fn template(deploy: &Deployment) -> Option<Value> {
    deploy
        .spec
        .as_ref()
        .and_then(|s| serde_json::to_value(&s.template).ok())
}

/// JSON Patch operations that make the map at `path` hold `entries` (other keys untouched),
/// creating the map when the object has none: a patch cannot add a key to a missing map.
pub(super) fn set_entries(
    path: &[&str],
    existing: Option<&BTreeMap<String, String>>,
    entries: BTreeMap<String, String>,
) -> Vec<PatchOperation> {
    let Some(existing) = existing else {
        if entries.is_empty() {
            return Vec::new();
        }
        let value = Value::Object(entries.into_iter().map(|(k, v)| (k, v.into())).collect());
        return vec![PatchOperation::Add(AddOperation {
            path: PointerBuf::from_tokens(path.iter().copied()),
            value,
        })];
    };
    entries
        .into_iter()
        .filter(|(key, value)| existing.get(key) != Some(value))
        .map(|(key, value)| {
            let mut pointer = PointerBuf::from_tokens(path.iter().copied());
            pointer.push_back(key.as_str());
            if existing.contains_key(&key) {
                PatchOperation::Replace(ReplaceOperation {
                    path: pointer,
                    value: value.into(),
                })
            } else {
                PatchOperation::Add(AddOperation {
                    path: pointer,
                    value: value.into(),
                })
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::review::{decode_deployment, fixtures};
    use crate::policy::Occupant;
    use serde_json::{Value, json};

    const SERIN: &str = "system:serviceaccount:serin-system:serin";

    fn deployment(annotations: Value, replicas: i64, image: &str) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop", "annotations": annotations},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                             "spec": {"containers": [{"name": "app", "image": image,
                                                      "ports": [{"containerPort": 8080}]}]}}
            }
        })
    }

    fn request(
        operation: &str,
        user: &str,
        object: Value,
        old: Option<Value>,
    ) -> DeploymentRequest {
        let body = fixtures::review(operation, user, object, old);
        decode_deployment(body.to_string().as_bytes()).expect("test review decodes")
    }

    fn enabled() -> Value {
        json!({"serin.dev/enabled": "true"})
    }

    /// Applies the response's patch to the request's object.
    fn patched(req: &DeploymentRequest, response: &AdmissionResponse) -> Value {
        let mut object = serde_json::to_value(req.object.as_ref().expect("object")).expect("json");
        if let Some(bytes) = &response.patch {
            let patch: Patch = serde_json::from_slice(bytes).expect("patch is JSON Patch");
            json_patch::patch(&mut object, &patch).expect("patch applies");
        }
        object
    }

    fn labelled(mut object: Value) -> Value {
        object["metadata"]["labels"] = json!({"team": "a", spec::MANAGED_LABEL: "true"});
        object
    }

    #[test]
    fn opting_out_keeps_the_label_until_the_controller_removes_it() {
        let old = labelled(deployment(enabled(), 2, "app:1"));
        let new = deployment(json!({}), 2, "app:1");
        let req = request("UPDATE", "alice", new.clone(), Some(old.clone()));
        let object = patched(&req, &mutate(&req, SERIN, &PolicyDefaults::default()));
        assert_eq!(object["metadata"]["labels"][spec::MANAGED_LABEL], "true");
        // Serin's own write removes it, and a Deployment that never had it gets none.
        let req = request("UPDATE", SERIN, new.clone(), Some(old));
        assert!(
            mutate(&req, SERIN, &PolicyDefaults::default())
                .patch
                .is_none()
        );
        let req = request("UPDATE", "alice", new.clone(), Some(new));
        assert!(
            mutate(&req, SERIN, &PolicyDefaults::default())
                .patch
                .is_none()
        );
    }

    #[test]
    fn an_opted_in_deployment_with_mistakes_is_refused_listing_each_on_its_own_line() {
        let annotations = json!({"serin.dev/enabled": "true", "serin.dev/step-weight": "0",
                                 "serin.dev/interval": "soon"});
        let req = request("CREATE", "alice", deployment(annotations, 2, "app:1"), None);
        let response = validate(&req, &PolicyView::default());
        assert!(!response.allowed);
        assert_eq!(response.uid, fixtures::UID);
        let message = &response.result.message;
        assert!(
            message.starts_with("Deployment \"web\": 2 mistakes"),
            "{message}"
        );
        let lines: Vec<_> = message.lines().skip(1).collect();
        assert_eq!(lines.len(), 2, "{message}");
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("serin.dev/step-weight: \"0\"")),
            "{message}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("serin.dev/interval: \"soon\"")),
            "{message}"
        );
    }

    #[test]
    fn mirroring_or_affinity_off_gatewayapi_is_refused_naming_the_annotation_and_gatewayapi() {
        let annotations = json!({"serin.dev/enabled": "true", "serin.dev/provider": "nginx",
                                 "serin.dev/ingress": "web", "serin.dev/mirror-checks": "2",
                                 "serin.dev/affinity-cookie": "serin-canary"});
        let req = request("CREATE", "alice", deployment(annotations, 2, "app:1"), None);
        let response = validate(&req, &PolicyView::default());
        assert!(!response.allowed);
        let lines: Vec<_> = response.result.message.lines().skip(1).collect();
        assert_eq!(
            lines,
            [
                "serin.dev/affinity-cookie: needs serin.dev/provider gatewayapi (its router's \
                 RequestMirror and ResponseHeaderModifier filters), not nginx",
                "serin.dev/mirror-checks: needs serin.dev/provider gatewayapi (its router's \
                 RequestMirror and ResponseHeaderModifier filters), not nginx",
            ]
        );
        let annotations = json!({"serin.dev/enabled": "true", "serin.dev/provider": "gatewayapi",
                                 "serin.dev/mirror-checks": "2",
                                 "serin.dev/affinity-cookie": "serin-canary"});
        let req = request("CREATE", "alice", deployment(annotations, 2, "app:1"), None);
        assert!(validate(&req, &PolicyView::default()).allowed);
        // Mutation writes back what was written, and no default for what was not.
        let object = patched(&req, &mutate(&req, SERIN, &PolicyDefaults::default()));
        let annotations = &object["metadata"]["annotations"];
        assert_eq!(annotations["serin.dev/mirror-checks"], "2");
        assert_eq!(annotations["serin.dev/affinity-cookie"], "serin-canary");
        assert_eq!(annotations.get("serin.dev/mirror-percent"), None);
        assert_eq!(annotations.get("serin.dev/affinity-max-age"), None);
    }

    #[test]
    fn a_valid_or_unannotated_deployment_is_allowed() {
        let req = request("CREATE", "alice", deployment(enabled(), 2, "app:1"), None);
        assert!(validate(&req, &PolicyView::default()).allowed);
        let req = request("CREATE", "alice", deployment(json!({}), 2, "app:1"), None);
        assert!(validate(&req, &PolicyView::default()).allowed);
    }

    #[test]
    fn deletes_are_allowed_without_an_object() {
        let req = request(
            "DELETE",
            "alice",
            Value::Null,
            Some(deployment(enabled(), 2, "app:1")),
        );
        assert!(validate(&req, &PolicyView::default()).allowed);
        assert!(
            mutate(&req, SERIN, &PolicyDefaults::default())
                .patch
                .is_none()
        );
    }

    #[test]
    fn mutation_writes_every_default_as_an_explicit_annotation_and_labels_the_deployment() {
        let req = request("CREATE", "alice", deployment(enabled(), 2, "app:1"), None);
        let response = mutate(&req, SERIN, &PolicyDefaults::default());
        assert!(response.allowed);
        let object = patched(&req, &response);
        let annotations = &object["metadata"]["annotations"];
        assert_eq!(annotations["serin.dev/step-weight"], "10");
        assert_eq!(annotations["serin.dev/max-weight"], "50");
        assert_eq!(annotations["serin.dev/interval"], "1m");
        assert_eq!(annotations["serin.dev/threshold"], "5");
        assert_eq!(annotations["serin.dev/provider"], "linkerd");
        assert_eq!(annotations["serin.dev/port"], "8080");
        assert_eq!(annotations["serin.dev/desired-replicas"], "2");
        assert_eq!(object["metadata"]["labels"]["serin.dev/canary"], "true");
        assert_eq!(
            object["spec"]["replicas"], 0,
            "a new opted-in Deployment starts as the idle canary; the primary gets the 2"
        );
        // The patched object reads back as the same effective configuration.
        let deploy: Deployment = serde_json::from_value(object).expect("still a Deployment");
        assert!(matches!(
            spec::read_deployment(&deploy),
            Ok(OptIn::Enabled(_))
        ));
    }

    #[test]
    fn mutation_never_rewrites_a_value_the_user_wrote() {
        let annotations = json!({"serin.dev/enabled": "true", "serin.dev/interval": "60s"});
        let req = request("CREATE", "alice", deployment(annotations, 1, "app:1"), None);
        let object = patched(&req, &mutate(&req, SERIN, &PolicyDefaults::default()));
        assert_eq!(
            object["metadata"]["annotations"]["serin.dev/interval"],
            "60s"
        );
    }

    #[test]
    fn an_update_that_only_changes_replicas_keeps_the_stored_count_and_records_the_request() {
        let old = deployment(enabled(), 0, "app:1");
        let new = deployment(enabled(), 3, "app:1");
        let req = request("UPDATE", "argocd", new, Some(old));
        let object = patched(&req, &mutate(&req, SERIN, &PolicyDefaults::default()));
        assert_eq!(
            object["spec"]["replicas"], 0,
            "the idle canary stays at zero"
        );
        assert_eq!(
            object["metadata"]["annotations"]["serin.dev/desired-replicas"],
            "3"
        );
    }

    #[test]
    fn an_update_of_the_pod_template_takes_the_requested_replicas() {
        let old = deployment(enabled(), 0, "app:1");
        let new = deployment(enabled(), 3, "app:2");
        let req = request("UPDATE", "alice", new, Some(old));
        let object = patched(&req, &mutate(&req, SERIN, &PolicyDefaults::default()));
        assert_eq!(object["spec"]["replicas"], 3);
        assert_eq!(
            object["metadata"]["annotations"]["serin.dev/desired-replicas"],
            "3"
        );
    }

    #[test]
    fn an_existing_desired_replicas_annotation_is_replaced_not_duplicated() {
        let stored = json!({"serin.dev/enabled": "true", "serin.dev/desired-replicas": "2"});
        let old = deployment(stored.clone(), 0, "app:1");
        let new = deployment(stored, 4, "app:1");
        let req = request("UPDATE", "alice", new, Some(old));
        let object = patched(&req, &mutate(&req, SERIN, &PolicyDefaults::default()));
        assert_eq!(
            object["metadata"]["annotations"]["serin.dev/desired-replicas"],
            "4"
        );
        assert_eq!(object["spec"]["replicas"], 0);
    }

    /// The stored object of an opted-in, idle Deployment the user asked 3 replicas of.
    fn idle_with_three(image: &str) -> Value {
        deployment(
            json!({"serin.dev/enabled": "true", "serin.dev/desired-replicas": "3"}),
            0,
            image,
        )
    }

    /// The annotations after `mutate`, for a write by `alice` from `old` to `new`.
    fn desired_after(old: Value, new: Value) -> (Value, Value) {
        let req = request("UPDATE", "alice", new, Some(old));
        let object = patched(&req, &mutate(&req, SERIN, &PolicyDefaults::default()));
        (
            object["metadata"]["annotations"]["serin.dev/desired-replicas"].clone(),
            object["spec"]["replicas"].clone(),
        )
    }

    #[test]
    fn writes_that_leave_replicas_as_stored_keep_the_recorded_count() {
        // What `kubectl set image`, `annotate`, `label`, `rollout restart` and an HPA-managed
        // manifest send: the stored object (replicas 0, the idle canary's) with one change.
        let set_image = idle_with_three("app:2");
        let mut annotate = idle_with_three("app:1");
        annotate["metadata"]["annotations"]["team"] = json!("shop");
        let mut label = idle_with_three("app:1");
        label["metadata"]["labels"] = json!({"tier": "web"});
        let mut restart = idle_with_three("app:1");
        restart["spec"]["template"]["metadata"]["annotations"] =
            json!({"kubectl.kubernetes.io/restartedAt": "2026-12-05T23:00:00Z"});
        for (write, new) in [
            ("set image", set_image),
            ("annotate", annotate),
            ("label", label),
            ("rollout restart", restart),
        ] {
            let (desired, replicas) = desired_after(idle_with_three("app:1"), new);
            assert_eq!(desired, "3", "{write}: the primary keeps the user's 3");
            assert_eq!(replicas, 0, "{write}: the controller sizes the canary");
        }
    }

    #[test]
    fn a_write_without_the_annotation_keeps_the_stored_record() {
        // A server-side apply whose manifest does not carry the annotation drops it.
        let new = deployment(enabled(), 0, "app:2");
        assert_eq!(desired_after(idle_with_three("app:1"), new).0, "3");
    }

    #[test]
    fn the_desired_replicas_annotation_written_by_the_user_is_a_request() {
        // `kubectl annotate --overwrite serin.dev/desired-replicas=N`, 0 included.
        for count in ["5", "0"] {
            let new = deployment(
                json!({"serin.dev/enabled": "true", "serin.dev/desired-replicas": count}),
                0,
                "app:1",
            );
            assert_eq!(desired_after(idle_with_three("app:1"), new).0, count);
        }
    }

    #[test]
    fn opting_in_a_running_deployment_records_its_own_count() {
        let old = deployment(json!({}), 4, "app:1");
        let new = deployment(enabled(), 4, "app:1");
        assert_eq!(desired_after(old, new), (json!("4"), json!(4)));
        // A stale record from an earlier opt-in is not a request either.
        let old = deployment(json!({"serin.dev/desired-replicas": "9"}), 4, "app:1");
        let new = deployment(
            json!({"serin.dev/enabled": "true", "serin.dev/desired-replicas": "9"}),
            4,
            "app:1",
        );
        assert_eq!(desired_after(old, new).0, "4");
    }

    #[test]
    fn serins_own_writes_pass_with_their_replica_count() {
        let old = deployment(enabled(), 0, "app:1");
        let new = deployment(enabled(), 3, "app:1");
        let req = request("UPDATE", SERIN, new, Some(old));
        let object = patched(&req, &mutate(&req, SERIN, &PolicyDefaults::default()));
        assert_eq!(
            object["spec"]["replicas"], 3,
            "the controller scales the canary"
        );
        assert!(
            object["metadata"]["annotations"]
                .get("serin.dev/desired-replicas")
                .is_none()
        );
    }

    #[test]
    fn a_reapplied_manifest_that_already_carries_everything_only_keeps_the_idle_count() {
        let req = request("CREATE", "alice", deployment(enabled(), 2, "app:1"), None);
        let stored = patched(&req, &mutate(&req, SERIN, &PolicyDefaults::default()));
        assert_eq!(stored["spec"]["replicas"], 0);
        // The user's manifest, as a GitOps tool re-applies it: every annotation, 2 replicas.
        let mut manifest = stored.clone();
        manifest["spec"]["replicas"] = json!(2);
        let again = request("UPDATE", "alice", manifest, Some(stored.clone()));
        let response = mutate(&again, SERIN, &PolicyDefaults::default());
        let patch: Patch =
            serde_json::from_slice(response.patch.as_deref().unwrap_or(b"[]")).expect("patch");
        assert_eq!(
            serde_json::to_value(&patch).expect("json"),
            json!([{"op": "add", "path": "/spec/replicas", "value": 0}]),
            "nothing but the idle canary's count"
        );
        // And the stored object itself, re-applied, needs nothing at all.
        let same = request("UPDATE", "alice", stored.clone(), Some(stored));
        let response = mutate(&same, SERIN, &PolicyDefaults::default());
        assert!(
            response.patch.is_none() || {
                let patch: Patch =
                    serde_json::from_slice(response.patch.as_deref().unwrap_or(b"[]"))
                        .expect("patch");
                patch
                    .0
                    .iter()
                    .all(|op| !matches!(op, PatchOperation::Add(a) if a.path == "/spec/replicas"))
            }
        );
    }

    #[test]
    fn deployments_that_did_not_opt_in_or_are_invalid_are_not_mutated() {
        for annotations in [
            json!({}),
            json!({"serin.dev/enabled": "false"}),
            json!({"serin.dev/enabled": "true", "serin.dev/threshold": "0"}),
        ] {
            let req = request(
                "CREATE",
                "alice",
                deployment(annotations.clone(), 2, "app:1"),
                None,
            );
            assert!(
                mutate(&req, SERIN, &PolicyDefaults::default())
                    .patch
                    .is_none(),
                "{annotations}"
            );
        }
    }

    #[test]
    fn annotation_keys_with_slashes_are_escaped_in_patch_paths() {
        let req = request("CREATE", "alice", deployment(enabled(), 1, "app:1"), None);
        let response = mutate(&req, SERIN, &PolicyDefaults::default());
        let patch: Value =
            serde_json::from_slice(response.patch.as_deref().expect("patch")).expect("json");
        let paths: Vec<_> = patch
            .as_array()
            .expect("ops")
            .iter()
            .filter_map(|op| op["path"].as_str())
            .collect();
        assert!(
            paths.contains(&"/metadata/annotations/serin.dev~1step-weight"),
            "{paths:?}"
        );
    }

    fn policies(enforcement: Enforcement) -> PolicyView {
        use crate::crd::{CanaryPolicySpec, PolicyLimits};
        PolicyView {
            policies: vec![NamedPolicy {
                name: "prod-rules".into(),
                spec: CanaryPolicySpec {
                    require_canary: Some(true),
                    defaults: Some(PolicyDefaults {
                        step_weight: Some(5),
                        ..Default::default()
                    }),
                    limits: Some(PolicyLimits {
                        max_step_weight: Some(10),
                        ..Default::default()
                    }),
                    enforcement: Some(enforcement),
                    ..Default::default()
                },
            }],
            template: Template::NotLooked,
            names: None,
        }
    }

    #[test]
    fn a_deny_policy_refuses_a_deployment_that_breaks_it_naming_the_policy() {
        let annotations = json!({"serin.dev/enabled": "true", "serin.dev/step-weight": "20"});
        let req = request("CREATE", "alice", deployment(annotations, 2, "app:1"), None);
        let response = validate(&req, &policies(Enforcement::Deny));
        assert!(!response.allowed);
        assert!(
            response.result.message.contains(
                "serin.dev/step-weight: a step of 20 exceeds the limit maxStepWeight 10 \
                 (CanaryPolicy prod-rules)"
            ),
            "{}",
            response.result.message
        );
        let plain = request("CREATE", "alice", deployment(json!({}), 2, "app:1"), None);
        let response = validate(&plain, &policies(Enforcement::Deny));
        assert!(!response.allowed);
        assert!(response.result.message.contains("must release as canaries"));
    }

    #[test]
    fn a_warn_policy_admits_with_the_same_findings_as_warnings() {
        let annotations = json!({"serin.dev/enabled": "true", "serin.dev/step-weight": "20"});
        let req = request("CREATE", "alice", deployment(annotations, 2, "app:1"), None);
        let response = validate(&req, &policies(Enforcement::Warn));
        assert!(response.allowed);
        let warnings = response.warnings.unwrap_or_default();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("maxStepWeight 10 (CanaryPolicy prod-rules) [enforcement: warn]")
        );
    }

    #[test]
    fn policy_defaults_are_written_where_the_user_wrote_nothing() {
        let req = request("CREATE", "alice", deployment(enabled(), 2, "app:1"), None);
        let defaults = policy::combined_defaults(&policies(Enforcement::Deny).policies);
        let object = patched(&req, &mutate(&req, SERIN, &defaults));
        assert_eq!(
            object["metadata"]["annotations"]["serin.dev/step-weight"],
            "5"
        );
        // The filled default keeps the Deployment within the policy's limits.
        let filled = request("CREATE", "alice", object, None);
        assert!(validate(&filled, &policies(Enforcement::Deny)).allowed);
    }

    #[test]
    fn the_metrics_provider_follows_the_provider_and_a_written_one_is_kept() {
        let req = request("CREATE", "alice", deployment(enabled(), 2, "app:1"), None);
        let defaults = PolicyDefaults {
            provider: Some(spec::Provider::Gloo),
            ..Default::default()
        };
        let object = patched(&req, &mutate(&req, SERIN, &defaults));
        let annotations = &object["metadata"]["annotations"];
        assert_eq!(annotations["serin.dev/provider"], "gloo");
        // Not written: it follows the provider (envoy for gloo) when that changes.
        assert_eq!(annotations.get("serin.dev/metrics-provider"), None);
        // The users' road: opting out by applying the manifest without Serin's annotations
        // (kubectl removes the ones it applied; what the webhook wrote stays) is admitted.
        let mut left = annotations.clone();
        for key in ["serin.dev/enabled", "serin.dev/provider"] {
            left.as_object_mut().map(|a| a.remove(key));
        }
        let opted_out = request(
            "UPDATE",
            "alice",
            deployment(left, 2, "app:1"),
            Some(object),
        );
        assert!(validate(&opted_out, &PolicyView::default()).allowed);
        // A written one is kept and validated against the provider.
        let traefik = json!({
            "serin.dev/enabled": "true",
            "serin.dev/provider": "gatewayapi",
            "serin.dev/metrics-provider": "traefik",
        });
        let req = request("CREATE", "alice", deployment(traefik, 2, "app:1"), None);
        let object = patched(&req, &mutate(&req, SERIN, &PolicyDefaults::default()));
        assert_eq!(
            object["metadata"]["annotations"]["serin.dev/metrics-provider"],
            "traefik"
        );
        let nginx_metrics = json!({
            "serin.dev/enabled": "true",
            "serin.dev/provider": "gatewayapi",
            "serin.dev/metrics-provider": "nginx",
        });
        let req = request(
            "CREATE",
            "alice",
            deployment(nginx_metrics, 2, "app:1"),
            None,
        );
        let response = validate(&req, &PolicyView::default());
        assert!(!response.allowed);
        assert!(
            response.result.message.contains(
                "serin.dev/metrics-provider: \"nginx\" does not see the canary's requests with \
                 serin.dev/provider gatewayapi; allowed with gatewayapi: linkerd, traefik"
            ),
            "{}",
            response.result.message
        );
    }

    #[test]
    fn hosts_as_written_are_admitted_with_gatewayapi_and_refused_with_another_provider() {
        let hosts = json!({
            "serin.dev/enabled": "true",
            "serin.dev/provider": "gatewayapi",
            "serin.dev/gateway": "infra/public",
            "serin.dev/hosts": "web.example.com, *.web.example.com",
        });
        let req = request("CREATE", "alice", deployment(hosts, 2, "app:1"), None);
        assert!(validate(&req, &PolicyView::default()).allowed);
        // What the user wrote is kept as written, like every key they wrote.
        let object = patched(&req, &mutate(&req, SERIN, &PolicyDefaults::default()));
        assert_eq!(
            object["metadata"]["annotations"]["serin.dev/hosts"],
            "web.example.com, *.web.example.com"
        );
        let nginx = json!({
            "serin.dev/enabled": "true",
            "serin.dev/provider": "nginx",
            "serin.dev/ingress": "web",
            "serin.dev/hosts": "web.example.com",
        });
        let req = request("CREATE", "alice", deployment(nginx, 2, "app:1"), None);
        let response = validate(&req, &PolicyView::default());
        assert!(!response.allowed);
        assert!(
            response.result.message.contains(
                "serin.dev/hosts: only applies with serin.dev/provider gatewayapi, not nginx; \
                 nginx routes the hosts of the Ingress serin.dev/ingress names"
            ),
            "{}",
            response.result.message
        );
    }

    fn occupant(kind: &str, name: &str, owner: Option<&str>) -> Occupant {
        Occupant {
            kind: kind.into(),
            name: name.into(),
            owner: owner.map(Into::into),
            controller: None,
        }
    }

    fn with_names(names: Names) -> PolicyView {
        PolicyView {
            names: Some(names),
            ..Default::default()
        }
    }

    fn web_spec() -> spec::CanarySpec {
        spec::CanarySpec::defaults("web".into(), Some(8080))
    }

    #[test]
    fn the_users_own_primary_deployment_or_services_refuse_the_opt_in_naming_them() {
        let names = Names {
            objects: vec![
                occupant("Deployment", "web-primary", None),
                occupant("Service", "web-canary", None),
                occupant("Service", "web-primary", Some("shop")),
            ],
            services: Vec::new(),
        };
        assert_eq!(
            name_conflicts(WorkloadKind::Deployment, "web", &web_spec(), &names),
            [
                "Deployment \"web-primary\" exists and is not managed by Serin; Serin would \
                 write over it: rename or delete it, or choose another name for this Deployment",
                "Service \"web-primary\" is managed by Serin for Deployment \"shop\"; Serin \
                 would write over it: rename or delete it, or choose another serin.dev/service",
                "Service \"web-canary\" exists and is not managed by Serin; Serin would write \
                 over it: rename or delete it, or choose another serin.dev/service",
            ]
        );
        let req = request("CREATE", "alice", deployment(enabled(), 2, "app:1"), None);
        let response = validate(&req, &with_names(names));
        assert!(!response.allowed);
        assert!(
            response
                .result
                .message
                .starts_with("Deployment \"web\": names its release needs are taken (3):\n"),
            "{}",
            response.result.message
        );
    }

    #[test]
    fn a_daemonsets_primary_name_taken_by_another_daemonset_refuses_the_opt_in() {
        let spec = spec::CanarySpec::defaults("agent".into(), Some(9898));
        let mut theirs = occupant("Service", "agent-canary", Some("agent-v0"));
        theirs.controller = Some(("DaemonSet".into(), "agent-v0".into()));
        let names = Names {
            objects: vec![
                occupant("DaemonSet", "agent-primary", None),
                // A Deployment of that name is another object: no conflict.
                occupant("Deployment", "agent-primary", None),
                theirs,
            ],
            services: Vec::new(),
        };
        assert_eq!(
            name_conflicts(WorkloadKind::DaemonSet, "agent", &spec, &names),
            [
                "DaemonSet \"agent-primary\" exists and is not managed by Serin; Serin would \
                 write over it: rename or delete it, or choose another name for this DaemonSet",
                "Service \"agent-canary\" is managed by Serin for DaemonSet \"agent-v0\"; \
                 Serin would write over it: rename or delete it, or choose another \
                 serin.dev/service",
            ]
        );
    }

    #[test]
    fn names_serin_manages_for_this_deployment_and_the_users_own_apex_service_are_fine() {
        let names = Names {
            objects: vec![
                occupant("Deployment", "web-primary", Some("web")),
                occupant("Service", "web-primary", Some("web")),
                occupant("Service", "web-canary", Some("web")),
                // The user's own Service before opting in: Serin points it at the primary.
                occupant("Service", "web", None),
                // Not a derived name.
                occupant("Service", "shop", None),
            ],
            services: vec![("web".into(), "web".into()), ("shop".into(), "shop".into())],
        };
        assert!(name_conflicts(WorkloadKind::Deployment, "web", &web_spec(), &names).is_empty());
        let req = request("CREATE", "alice", deployment(enabled(), 2, "app:1"), None);
        assert!(validate(&req, &with_names(names)).allowed);
    }

    #[test]
    fn an_apex_service_another_controller_or_deployment_holds_is_refused() {
        let mut helm = occupant("Service", "web", None);
        helm.controller = Some(("Gateway".into(), "edge".into()));
        let names = Names {
            objects: vec![helm],
            services: Vec::new(),
        };
        assert_eq!(
            name_conflicts(WorkloadKind::Deployment, "web", &web_spec(), &names),
            [
                "Service \"web\" exists, controlled by Gateway \"edge\", not by Serin; Serin would \
              write over it: rename or delete it, or choose another serin.dev/service"
            ]
        );
        let names = Names {
            objects: vec![occupant("Service", "web", Some("shop"))],
            services: Vec::new(),
        };
        assert_eq!(
            name_conflicts(WorkloadKind::Deployment, "web", &web_spec(), &names).len(),
            1
        );
    }

    #[test]
    fn a_second_deployment_naming_the_same_service_is_refused_naming_the_first() {
        let names = Names {
            objects: vec![
                occupant("Service", "web", Some("web-v1")),
                occupant("Service", "web-primary", Some("web-v1")),
            ],
            services: vec![
                ("web-v1".into(), "web".into()),
                ("web".into(), "web".into()),
            ],
        };
        assert_eq!(
            name_conflicts(WorkloadKind::Deployment, "web", &web_spec(), &names),
            [
                "serin.dev/service: Service \"web\" is already the apex Service of opted-in \
              Deployment \"web-v1\"; choose another serin.dev/service"
            ]
        );
    }

    #[test]
    fn naming_a_template_that_does_not_exist_is_refused() {
        let annotations = json!({"serin.dev/enabled": "true", "serin.dev/analysis": "checks"});
        let req = request("CREATE", "alice", deployment(annotations, 2, "app:1"), None);
        let view = PolicyView {
            template: Template::Missing,
            ..Default::default()
        };
        let response = validate(&req, &view);
        assert!(!response.allowed);
        assert!(
            response
                .result
                .message
                .contains("serin.dev/analysis: AnalysisTemplate \"checks\" does not exist")
        );
    }
}
