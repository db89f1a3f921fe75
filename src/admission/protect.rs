//! Protection of the objects Serin manages (SPEC, "What admission does"): the `-primary`
//! Deployment, the Services, the TrafficSplit, the `-primary` ConfigMap, Secret and HPA
//! copies — everything labelled [`OWNER_LABEL`] with the name of the opted-in Deployment.
//! Updates and deletes of them are refused, naming the Deployment to change instead and how
//! to opt out, unless
//! - the write is Serin's own, or one of Kubernetes' own controllers'
//!   ([`KUBERNETES_CONTROLLERS`]: the garbage collector, namespace deletion, the HPA scaling a
//!   primary, the deployment controller's revision bookkeeping);
//! - it is a status update (anyone's);
//! - the owner Deployment is gone (or replaced by a new one of the same name), is being
//!   deleted, or is no longer managed by Serin (its `serin.dev/canary` label is gone), so the
//!   objects are left-overs the garbage collector or Serin is removing.
//!
//! Groups are never consulted: a cluster admin (`system:masters`) is refused like anyone, and
//! told to opt out instead. The protection is a guard against mistakes, not an authorization
//! layer: RBAC stays the authority, and whoever can impersonate Serin can bypass it.
//!
//! [`decide`] is the pure decision. [`review`] is the thin I/O around it: it reads the owner
//! Deployment (and, for the scale subresource, whose labels the API server does not send, the
//! scaled Deployment) through Serin's client.
//!
//! Without a client (`serin webhook` without cluster access) the owner cannot be read: writes
//! of labelled objects by people are refused with that reason (fail closed; Serin, Kubernetes'
//! controllers and status updates are decided without a lookup and still pass), while scale
//! requests are allowed, as nothing says the scaled Deployment is managed at all.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::core::admission::{AdmissionResponse, Operation};
use kube::core::{DynamicObject, ObjectMeta};
use kube::{Api, Client};

use super::review::ObjectRequest;
use crate::release::OWNER_LABEL;
use crate::spec::{ENABLED, MANAGED_LABEL};

/// Usernames of Kubernetes' own controllers that write managed objects. They keep the cluster
/// consistent with what Serin and the user asked for, so they are never refused.
pub const KUBERNETES_CONTROLLERS: &[&str] = &[
    // Deletes dependents of a deleted owner (first, for foreground deletion) and removes
    // owner references and finalizers.
    "system:serviceaccount:kube-system:generic-garbage-collector",
    // Deletes everything in a namespace being deleted.
    "system:serviceaccount:kube-system:namespace-controller",
    // Scales the `-primary` Deployment that the `-primary` HPA targets.
    "system:serviceaccount:kube-system:horizontal-pod-autoscaler",
    // Records rollout revisions and undoes rollbacks on Deployments.
    "system:serviceaccount:kube-system:deployment-controller",
    // The controller manager itself, as whom all of the above write when it runs without
    // per-controller credentials (`--use-service-account-credentials=false`).
    "system:kube-controller-manager",
];

/// The owner lookup must fit well inside the API server's webhook timeout (5 s in the
/// manifests), so that a slow lookup is refused with a reason rather than timed out.
const LOOKUP_BUDGET: Duration = Duration::from_secs(2);

/// One write to decide about.
#[derive(Debug, Clone, Copy)]
pub struct Write<'a> {
    /// Who: the request's username.
    pub user: &'a str,
    pub operation: &'a Operation,
    /// `status`, `scale` or none.
    pub subresource: Option<&'a str>,
    /// What: the kind as users call it (`Deployment`, `TrafficSplit`) and the name.
    pub kind: &'a str,
    pub name: &'a str,
}

/// The state of the opted-in Deployment that the `serin.dev/owner` label names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnerState {
    /// Exists, is not being deleted, and Serin manages it: its objects are protected.
    Managed,
    /// Has a deletion timestamp: the garbage collector removes its objects.
    Deleting,
    /// Does not exist, or exists with another uid than the objects' owner reference.
    Gone,
    /// Exists without Serin's `serin.dev/canary` label: never opted in (what was injected for
    /// a refused opt-in) or fully opted out.
    NotManaged,
    /// Could not be read; the reason.
    Unknown(String),
}

/// Why a write passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allowed {
    /// CREATE or CONNECT: protection is about changing and removing.
    NotAnUpdateOrDelete,
    StatusUpdate,
    Serin,
    KubernetesController,
    /// The object carries no `serin.dev/owner` label.
    NotManaged,
    /// See [`OwnerState`].
    OwnerGone,
    OwnerDeleting,
    OwnerNotManaged,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow(Allowed),
    /// The message for the person whose write is refused.
    Deny(String),
}

/// The writes that pass whatever the object: decided without reading anything.
pub fn exempt(write: &Write, serin_user: &str) -> Option<Allowed> {
    if !matches!(write.operation, Operation::Update | Operation::Delete) {
        Some(Allowed::NotAnUpdateOrDelete)
    } else if write.subresource == Some("status") {
        Some(Allowed::StatusUpdate)
    } else if write.user == serin_user {
        Some(Allowed::Serin)
    } else if KUBERNETES_CONTROLLERS.contains(&write.user) {
        Some(Allowed::KubernetesController)
    } else {
        None
    }
}

/// A Canary's status is Serin's record of the release, what a restarted Serin resumes from:
/// an edit by anyone else (a phase `Succeeded` and weight 100 on a failed release) would be
/// shown and acted on as if Serin had decided it. Refused for everyone but Serin, naming what
/// to do instead. `group` is the API group of the object written.
pub fn canary_status_refusal(write: &Write, group: &str, serin_user: &str) -> Option<String> {
    let canary_status = group == crate::crd::GROUP
        && write.kind == "Canary"
        && write.subresource == Some("status")
        && matches!(write.operation, Operation::Update);
    (canary_status && write.user != serin_user).then(|| {
        let name = write.name;
        format!(
            "The status of Canary {name:?} is Serin's record of the release and is written by \
             Serin only. To act on the release, use kubectl serin promote|abort|pause|resume \
             {name} (requests on the Canary), or change Deployment {name:?} itself."
        )
    })
}

/// The decision: `owner` is the Deployment the object's `serin.dev/owner` label names and its
/// state, `None` for an object without the label.
pub fn decide(write: &Write, serin_user: &str, owner: Option<(&str, &OwnerState)>) -> Verdict {
    if let Some(allowed) = exempt(write, serin_user) {
        return Verdict::Allow(allowed);
    }
    let Some((owner, state)) = owner else {
        return Verdict::Allow(Allowed::NotManaged);
    };
    match state {
        OwnerState::Gone => Verdict::Allow(Allowed::OwnerGone),
        OwnerState::Deleting => Verdict::Allow(Allowed::OwnerDeleting),
        OwnerState::NotManaged => Verdict::Allow(Allowed::OwnerNotManaged),
        OwnerState::Managed | OwnerState::Unknown(_) => Verdict::Deny(refusal(write, owner, state)),
    }
}

fn refusal(write: &Write, owner: &str, state: &OwnerState) -> String {
    let Write { kind, name, .. } = *write;
    let (action, instead) = match (write.operation, write.subresource) {
        (Operation::Delete, _) => (
            "deleting it",
            format!("Deleting Deployment {owner:?} itself removes everything Serin made for it"),
        ),
        (_, Some("scale")) => (
            "scaling it",
            format!(
                "To resize it, change spec.replicas of Deployment {owner:?} (or its \
                 HorizontalPodAutoscaler): Serin sizes the primary from it"
            ),
        ),
        _ => (
            "changing it",
            format!(
                "Change Deployment {owner:?} instead: Serin carries its pod template, replicas \
                 and configuration over to the objects it manages"
            ),
        ),
    };
    let unchecked = match state {
        OwnerState::Unknown(reason) => {
            format!(" (Serin could not check that Deployment {owner:?} still exists: {reason})")
        }
        _ => String::new(),
    };
    format!(
        "{kind} {name:?} is managed by Serin for Deployment {owner:?}{unchecked}, so {action} \
         is refused. {instead}. To stop Serin managing it, remove the annotation \
         {ENABLED} from Deployment {owner:?} (kubectl annotate deployment {owner} {ENABLED}-): \
         Serin then restores {owner:?} and removes what it created."
    )
}

/// The state of the owner as found in the cluster; `owner_uid` is the uid of the objects'
/// owner reference to it, when they have one.
pub fn owner_state(found: Option<&Deployment>, owner_uid: Option<&str>) -> OwnerState {
    let Some(deploy) = found else {
        return OwnerState::Gone;
    };
    let meta = &deploy.metadata;
    if owner_uid.is_some_and(|uid| meta.uid.as_deref() != Some(uid)) {
        // A new Deployment of the same name: the objects belong to the old one, whose
        // dependents the garbage collector removes.
        OwnerState::Gone
    } else if meta.deletion_timestamp.is_some() {
        OwnerState::Deleting
    } else if !meta
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key(MANAGED_LABEL))
    {
        OwnerState::NotManaged
    } else {
        OwnerState::Managed
    }
}

/// The owner an object names: its `serin.dev/owner` label, and the uid of its owner reference
/// to that Deployment.
fn owner_of(meta: &ObjectMeta) -> Option<(String, Option<String>)> {
    let owner = meta.labels.as_ref()?.get(OWNER_LABEL)?.clone();
    let uid = meta
        .owner_references
        .iter()
        .flatten()
        .find_map(|r| (r.kind == "Deployment" && r.name == owner).then(|| r.uid.clone()));
    Some((owner, uid))
}

/// Answers one review of a managed object; see the module docs.
pub async fn review(
    req: &ObjectRequest,
    serin_user: &str,
    client: Option<&Client>,
) -> AdmissionResponse {
    let response = AdmissionResponse::from(req);
    let scale = req.sub_resource.as_deref() == Some("scale");
    let write = Write {
        user: req.user_info.username.as_deref().unwrap_or_default(),
        operation: &req.operation,
        subresource: req.sub_resource.as_deref(),
        // A scale review carries an autoscaling/v1 Scale; the user scaled a Deployment.
        kind: if scale { "Deployment" } else { &req.kind.kind },
        name: &req.name,
    };
    if let Some(refusal) = canary_status_refusal(&write, &req.kind.group, serin_user) {
        return response.deny(refusal);
    }
    if exempt(&write, serin_user).is_some() {
        return response;
    }
    let namespace = req.namespace.as_deref().unwrap_or_default();
    let deployments = client.map(|c| Api::<Deployment>::namespaced(c.clone(), namespace));

    let owner = if scale {
        // The Scale object has no labels: read them from the Deployment being scaled.
        let Some(api) = &deployments else {
            return response;
        };
        match lookup(api, &req.name).await {
            Ok(target) => target.and_then(|d| owner_of(&d.metadata)),
            Err(reason) => {
                return response.deny(format!(
                    "Serin could not read Deployment {:?} to check whether it manages it \
                     ({reason}); try again",
                    req.name
                ));
            }
        }
    } else {
        // An update that drops the label is judged by the object as stored.
        [&req.old_object, &req.object]
            .into_iter()
            .flatten()
            .find_map(|o: &DynamicObject| owner_of(&o.metadata))
    };
    let Some((owner, owner_uid)) = owner else {
        return response;
    };
    let state = match &deployments {
        None => OwnerState::Unknown("Serin runs without cluster access".into()),
        Some(api) => match lookup(api, &owner).await {
            Ok(found) => owner_state(found.as_ref(), owner_uid.as_deref()),
            Err(reason) => OwnerState::Unknown(reason),
        },
    };
    match decide(&write, serin_user, Some((&owner, &state))) {
        Verdict::Allow(_) => response,
        Verdict::Deny(message) => {
            tracing::info!(
                user = write.user, kind = write.kind, name = write.name, namespace, owner,
                operation = ?write.operation, "refused a write to a managed object"
            );
            response.deny(message)
        }
    }
}

async fn lookup(api: &Api<Deployment>, name: &str) -> Result<Option<Deployment>, String> {
    match tokio::time::timeout(LOOKUP_BUDGET, api.get_opt(name)).await {
        Ok(Ok(found)) => Ok(found),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "no answer from the API server within {LOOKUP_BUDGET:?}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    const SERIN: &str = crate::admission::DEFAULT_SERVICE_ACCOUNT;

    fn write<'a>(
        user: &'a str,
        operation: &'a Operation,
        subresource: Option<&'a str>,
    ) -> Write<'a> {
        Write {
            user,
            operation,
            subresource,
            kind: "Deployment",
            name: "web-primary",
        }
    }

    fn denial(verdict: Verdict) -> String {
        match verdict {
            Verdict::Deny(message) => message,
            Verdict::Allow(why) => panic!("expected a refusal, allowed as {why:?}"),
        }
    }

    #[test]
    fn a_users_update_of_a_managed_object_is_refused_naming_the_owner_and_the_opt_out() {
        let op = Operation::Update;
        let message = denial(decide(
            &write("alice", &op, None),
            SERIN,
            Some(("web", &OwnerState::Managed)),
        ));
        for expected in [
            "Deployment \"web-primary\" is managed by Serin for Deployment \"web\"",
            "changing it is refused",
            "Change Deployment \"web\" instead",
            "remove the annotation serin.dev/enabled from Deployment \"web\"",
            "kubectl annotate deployment web serin.dev/enabled-",
        ] {
            assert!(message.contains(expected), "no {expected:?} in: {message}");
        }
    }

    #[test]
    fn deletes_and_scales_are_refused_with_what_to_do_instead() {
        let delete = Operation::Delete;
        let message = denial(decide(
            &write("alice", &delete, None),
            SERIN,
            Some(("web", &OwnerState::Managed)),
        ));
        assert!(message.contains("deleting it is refused"), "{message}");
        assert!(
            message.contains("Deleting Deployment \"web\" itself"),
            "{message}"
        );

        let update = Operation::Update;
        let message = denial(decide(
            &write("alice", &update, Some("scale")),
            SERIN,
            Some(("web", &OwnerState::Managed)),
        ));
        assert!(message.contains("scaling it is refused"), "{message}");
        assert!(
            message.contains("spec.replicas of Deployment \"web\""),
            "{message}"
        );
    }

    #[test]
    fn a_cluster_admin_is_refused_like_anyone() {
        // Groups are not an input at all: the username decides, and an admin's is nobody's
        // exemption.
        let op = Operation::Delete;
        for admin in ["kubernetes-admin", "system:admin", "serin-local-admin"] {
            let mut w = write(admin, &op, None);
            w.kind = "TrafficSplit";
            w.name = "web";
            let message = denial(decide(&w, SERIN, Some(("web", &OwnerState::Managed))));
            assert!(
                message.starts_with("TrafficSplit \"web\" is managed"),
                "{message}"
            );
        }
    }

    #[test]
    fn serin_kubernetes_controllers_and_status_updates_pass_whatever_the_owner() {
        let owner = Some(("web", &OwnerState::Managed));
        for op in [Operation::Update, Operation::Delete] {
            assert_eq!(
                decide(&write(SERIN, &op, None), SERIN, owner),
                Verdict::Allow(Allowed::Serin)
            );
            for controller in KUBERNETES_CONTROLLERS {
                for sub in [None, Some("scale")] {
                    assert_eq!(
                        decide(&write(controller, &op, sub), SERIN, owner),
                        Verdict::Allow(Allowed::KubernetesController),
                        "{controller} {op:?} {sub:?}"
                    );
                }
            }
        }
        assert_eq!(
            decide(
                &write("alice", &Operation::Update, Some("status")),
                SERIN,
                owner
            ),
            Verdict::Allow(Allowed::StatusUpdate)
        );
    }

    #[test]
    fn a_service_account_named_like_a_controller_elsewhere_is_refused() {
        let op = Operation::Delete;
        let impostor = "system:serviceaccount:default:generic-garbage-collector";
        denial(decide(
            &write(impostor, &op, None),
            SERIN,
            Some(("web", &OwnerState::Managed)),
        ));
        // And Serin's identity is the configured one, not any "serin".
        denial(decide(
            &write("system:serviceaccount:other:serin", &op, None),
            SERIN,
            Some(("web", &OwnerState::Managed)),
        ));
    }

    #[test]
    fn a_canarys_status_is_written_by_serin_only() {
        let update = Operation::Update;
        let status = |user| Write {
            user,
            operation: &update,
            subresource: Some("status"),
            kind: "Canary",
            name: "web",
        };
        let message = canary_status_refusal(&status("alice"), "serin.dev", SERIN)
            .expect("a user's status edit is refused");
        assert!(
            message.contains("kubectl serin promote|abort|pause|resume web"),
            "{message}"
        );
        for admin in ["system:admin", "kubernetes-admin"] {
            assert!(canary_status_refusal(&status(admin), "serin.dev", SERIN).is_some());
        }
        assert_eq!(
            canary_status_refusal(&status(SERIN), "serin.dev", SERIN),
            None
        );
        // Another tool's Canary, and the Canary itself (requests are annotations), pass.
        assert_eq!(
            canary_status_refusal(&status("alice"), "flagger.app", SERIN),
            None
        );
        let spec = Write {
            subresource: None,
            ..status("alice")
        };
        assert_eq!(canary_status_refusal(&spec, "serin.dev", SERIN), None);
    }

    #[test]
    fn creates_and_unlabelled_objects_pass() {
        let owner = Some(("web", &OwnerState::Managed));
        for op in [Operation::Create, Operation::Connect] {
            assert_eq!(
                decide(&write("alice", &op, None), SERIN, owner),
                Verdict::Allow(Allowed::NotAnUpdateOrDelete)
            );
        }
        assert_eq!(
            decide(&write("alice", &Operation::Delete, None), SERIN, None),
            Verdict::Allow(Allowed::NotManaged)
        );
    }

    #[test]
    fn left_overs_of_a_gone_deleting_or_unmanaged_owner_pass() {
        let op = Operation::Delete;
        for (state, why) in [
            (OwnerState::Gone, Allowed::OwnerGone),
            (OwnerState::Deleting, Allowed::OwnerDeleting),
            (OwnerState::NotManaged, Allowed::OwnerNotManaged),
        ] {
            assert_eq!(
                decide(&write("alice", &op, None), SERIN, Some(("web", &state))),
                Verdict::Allow(why)
            );
        }
    }

    #[test]
    fn an_owner_that_cannot_be_read_is_protected_and_the_reason_given() {
        let op = Operation::Update;
        let state = OwnerState::Unknown("connection refused".into());
        let message = denial(decide(
            &write("alice", &op, None),
            SERIN,
            Some(("web", &state)),
        ));
        assert!(
            message.contains(
                "could not check that Deployment \"web\" still exists: connection refused"
            ),
            "{message}"
        );
    }

    fn owner(uid: &str, labelled: bool, deleting: bool) -> Deployment {
        let mut d = Deployment::default();
        d.metadata.name = Some("web".into());
        d.metadata.uid = Some(uid.into());
        if labelled {
            d.metadata.labels = Some([(MANAGED_LABEL.to_string(), "true".to_string())].into());
        }
        if deleting {
            d.metadata.deletion_timestamp = Some(Time(Default::default()));
        }
        d
    }

    #[test]
    fn the_owner_state_follows_existence_uid_deletion_and_the_managed_label() {
        let managed = owner("u1", true, false);
        assert_eq!(owner_state(None, Some("u1")), OwnerState::Gone);
        assert_eq!(owner_state(Some(&managed), Some("u1")), OwnerState::Managed);
        assert_eq!(owner_state(Some(&managed), None), OwnerState::Managed);
        assert_eq!(owner_state(Some(&managed), Some("u0")), OwnerState::Gone);
        assert_eq!(
            owner_state(Some(&owner("u1", true, true)), Some("u1")),
            OwnerState::Deleting
        );
        assert_eq!(
            owner_state(Some(&owner("u1", false, false)), Some("u1")),
            OwnerState::NotManaged
        );
    }

    #[test]
    fn the_owner_is_read_from_the_label_and_the_matching_owner_reference() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
        let reference = |kind: &str, name: &str, uid: &str| OwnerReference {
            api_version: "apps/v1".into(),
            kind: kind.into(),
            name: name.into(),
            uid: uid.into(),
            ..Default::default()
        };
        let meta = ObjectMeta {
            labels: Some([(OWNER_LABEL.to_string(), "web".to_string())].into()),
            owner_references: Some(vec![
                reference("ReplicaSet", "web", "rs"),
                reference("Deployment", "other", "o"),
                reference("Deployment", "web", "u1"),
            ]),
            ..Default::default()
        };
        assert_eq!(owner_of(&meta), Some(("web".into(), Some("u1".into()))));
        assert_eq!(owner_of(&ObjectMeta::default()), None);
    }
}
