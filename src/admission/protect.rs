//! Protection of the objects Serin manages (SPEC, "What admission does"): the `-primary`
//! Deployment or DaemonSet, the Services, the router object, the `-primary` ConfigMap, Secret
//! and HPA copies — everything labelled [`OWNER_LABEL`] with the name of the opted-in
//! workload. Updates and deletes of them are refused, naming the workload to change instead
//! and how to opt out, unless
//! - the write is Serin's own, or one of Kubernetes' own controllers'
//!   ([`KUBERNETES_CONTROLLERS`]: the garbage collector, namespace deletion, the HPA scaling a
//!   primary, the deployment and daemon set controllers' bookkeeping);
//! - it is a status update (anyone's);
//! - the owner is gone (or replaced by a new one of the same name), is being deleted, or is
//!   no longer managed by Serin (its `serin.dev/canary` label is gone), so the objects are
//!   left-overs the garbage collector or Serin is removing.
//!
//! The owner's kind comes from the object's owner reference to the workload the label names
//! (every object Serin makes carries one, but what admission injects on a Deployment's
//! CREATE, which has no uid yet: the controller adds it on its next pass). Without one, the
//! owner is looked up as a Deployment and, when there is none of that name, as a DaemonSet
//! (one name is one kind: both cannot opt in under the same name).
//!
//! Groups are never consulted: a cluster admin (`system:masters`) is refused like anyone, and
//! told to opt out instead. The protection is a guard against mistakes, not an authorization
//! layer: RBAC stays the authority, and whoever can impersonate Serin can bypass it.
//!
//! [`decide`] is the pure decision. [`review`] is the thin I/O around it: it reads the owner
//! (and, for the scale subresource, whose labels the API server does not send, the scaled
//! Deployment: DaemonSets have no scale subresource) through Serin's client.
//!
//! Without a client (`serin webhook` without cluster access) the owner cannot be read: writes
//! of labelled objects by people are refused with that reason (fail closed; Serin, Kubernetes'
//! controllers and status updates are decided without a lookup and still pass), while scale
//! requests are allowed, as nothing says the scaled Deployment is managed at all.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use kube::core::admission::{AdmissionResponse, Operation};
use kube::core::{DynamicObject, ObjectMeta};
use kube::{Api, Client};

use super::review::ObjectRequest;
use crate::release::OWNER_LABEL;
use crate::spec::{ENABLED, MANAGED_LABEL, Workload, WorkloadKind};

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
    // Its counterpart for DaemonSets (the `-primary` DaemonSet's revision history).
    "system:serviceaccount:kube-system:daemon-set-controller",
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
    /// What: the kind as users call it (`Deployment`, `DaemonSet`, `TrafficSplit`) and the
    /// name.
    pub kind: &'a str,
    pub name: &'a str,
}

/// The opted-in workload an object's `serin.dev/owner` label names, as read for a decision.
#[derive(Debug, Clone, Copy)]
pub struct Owner<'a> {
    pub kind: WorkloadKind,
    pub name: &'a str,
    pub state: &'a OwnerState,
}

/// The state of the opted-in workload that the `serin.dev/owner` label names.
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
             {name} (requests on the Canary), or change the Deployment or DaemonSet {name:?} \
             itself."
        )
    })
}

/// The decision: `owner` is the workload the object's `serin.dev/owner` label names, its kind
/// and its state, `None` for an object without the label.
pub fn decide(write: &Write, serin_user: &str, owner: Option<Owner>) -> Verdict {
    if let Some(allowed) = exempt(write, serin_user) {
        return Verdict::Allow(allowed);
    }
    let Some(owner) = owner else {
        return Verdict::Allow(Allowed::NotManaged);
    };
    match owner.state {
        OwnerState::Gone => Verdict::Allow(Allowed::OwnerGone),
        OwnerState::Deleting => Verdict::Allow(Allowed::OwnerDeleting),
        OwnerState::NotManaged => Verdict::Allow(Allowed::OwnerNotManaged),
        OwnerState::Managed | OwnerState::Unknown(_) => Verdict::Deny(refusal(write, owner)),
    }
}

fn refusal(write: &Write, owner: Owner) -> String {
    let Write { kind, name, .. } = *write;
    let Owner {
        kind: owner_kind,
        name: owner,
        state,
    } = owner;
    // `kubectl annotate deployment|daemonset ...`
    let resource = owner_kind.as_str().to_lowercase();
    let carried = match owner_kind.has_replicas() {
        true => "pod template, replicas and configuration",
        false => "pod template and configuration",
    };
    let (action, instead) = match (write.operation, write.subresource) {
        (Operation::Delete, _) => (
            "deleting it",
            format!("Deleting {owner_kind} {owner:?} itself removes everything Serin made for it"),
        ),
        (_, Some("scale")) => (
            "scaling it",
            format!(
                "To resize it, change spec.replicas of {owner_kind} {owner:?} (or its \
                 HorizontalPodAutoscaler): Serin sizes the primary from it"
            ),
        ),
        _ => (
            "changing it",
            format!(
                "Change {owner_kind} {owner:?} instead: Serin carries its {carried} over to the \
                 objects it manages"
            ),
        ),
    };
    let unchecked = match state {
        OwnerState::Unknown(reason) => {
            format!(" (Serin could not check that {owner_kind} {owner:?} still exists: {reason})")
        }
        _ => String::new(),
    };
    format!(
        "{kind} {name:?} is managed by Serin for {owner_kind} {owner:?}{unchecked}, so {action} \
         is refused. {instead}. To stop Serin managing it, remove the annotation \
         {ENABLED} from {owner_kind} {owner:?} (kubectl annotate {resource} {owner} \
         {ENABLED}-): Serin then restores {owner:?} and removes what it created."
    )
}

/// The state of the owner as found in the cluster, whatever its kind; `owner_uid` is the uid
/// of the objects' owner reference to it, when they have one.
pub fn owner_state(found: Option<&dyn Workload>, owner_uid: Option<&str>) -> OwnerState {
    let Some(workload) = found else {
        return OwnerState::Gone;
    };
    let meta = workload.meta();
    if owner_uid.is_some_and(|uid| meta.uid.as_deref() != Some(uid)) {
        // A new workload of the same name: the objects belong to the old one, whose
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

/// The owner an object names: its `serin.dev/owner` label, and the kind and uid of its owner
/// reference to a workload of that name (`None` without one: see the module docs).
fn owner_of(meta: &ObjectMeta) -> Option<(String, Option<(WorkloadKind, String)>)> {
    let owner = meta.labels.as_ref()?.get(OWNER_LABEL)?.clone();
    let reference = meta.owner_references.iter().flatten().find_map(|r| {
        let kind = match r.kind.as_str() {
            "Deployment" => WorkloadKind::Deployment,
            "DaemonSet" => WorkloadKind::DaemonSet,
            _ => return None,
        };
        (r.api_version == kind.api_version() && r.name == owner).then(|| (kind, r.uid.clone()))
    });
    Some((owner, reference))
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

    let owner = if scale {
        // The Scale object has no labels: read them from the Deployment being scaled.
        let Some(client) = client else {
            return response;
        };
        let api = Api::<Deployment>::namespaced(client.clone(), namespace);
        match lookup(&api, &req.name).await {
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
    let Some((owner, reference)) = owner else {
        return response;
    };
    let (kind, owner_uid) = match reference {
        Some((kind, uid)) => (Some(kind), Some(uid)),
        None => (None, None),
    };
    let (kind, state) = match client {
        None => (
            kind.unwrap_or(WorkloadKind::Deployment),
            OwnerState::Unknown("Serin runs without cluster access".into()),
        ),
        Some(client) => owner_found(client, namespace, &owner, kind, owner_uid.as_deref()).await,
    };
    let decided = Owner {
        kind,
        name: &owner,
        state: &state,
    };
    match decide(&write, serin_user, Some(decided)) {
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

/// Reads the owner `name` of the kind its owner reference says, or, without one, as a
/// Deployment and else as a DaemonSet: its kind (the one found, else the first tried) and
/// its state.
async fn owner_found(
    client: &Client,
    namespace: &str,
    name: &str,
    kind: Option<WorkloadKind>,
    owner_uid: Option<&str>,
) -> (WorkloadKind, OwnerState) {
    let read = async |kind: WorkloadKind| -> Result<Option<Box<dyn Workload>>, String> {
        Ok(match kind {
            WorkloadKind::Deployment => {
                let api = Api::<Deployment>::namespaced(client.clone(), namespace);
                lookup(&api, name)
                    .await?
                    .map(|d| Box::new(d) as Box<dyn Workload>)
            }
            WorkloadKind::DaemonSet => {
                let api = Api::<DaemonSet>::namespaced(client.clone(), namespace);
                lookup(&api, name)
                    .await?
                    .map(|d| Box::new(d) as Box<dyn Workload>)
            }
        })
    };
    let kinds: &[WorkloadKind] = match kind {
        Some(WorkloadKind::Deployment) => &[WorkloadKind::Deployment],
        Some(WorkloadKind::DaemonSet) => &[WorkloadKind::DaemonSet],
        None => &[WorkloadKind::Deployment, WorkloadKind::DaemonSet],
    };
    for &kind in kinds {
        match read(kind).await {
            Ok(Some(found)) => return (kind, owner_state(Some(found.as_ref()), owner_uid)),
            Ok(None) => continue,
            Err(reason) => return (kind, OwnerState::Unknown(reason)),
        }
    }
    (kinds[0], OwnerState::Gone)
}

async fn lookup<K>(api: &Api<K>, name: &str) -> Result<Option<K>, String>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
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

    fn deployment<'a>(name: &'a str, state: &'a OwnerState) -> Option<Owner<'a>> {
        Some(Owner {
            kind: WorkloadKind::Deployment,
            name,
            state,
        })
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
            deployment("web", &OwnerState::Managed),
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
            deployment("web", &OwnerState::Managed),
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
            deployment("web", &OwnerState::Managed),
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
            let message = denial(decide(&w, SERIN, deployment("web", &OwnerState::Managed)));
            assert!(
                message.starts_with("TrafficSplit \"web\" is managed"),
                "{message}"
            );
        }
    }

    #[test]
    fn serin_kubernetes_controllers_and_status_updates_pass_whatever_the_owner() {
        let owner = deployment("web", &OwnerState::Managed);
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
            deployment("web", &OwnerState::Managed),
        ));
        // And Serin's identity is the configured one, not any "serin".
        denial(decide(
            &write("system:serviceaccount:other:serin", &op, None),
            SERIN,
            deployment("web", &OwnerState::Managed),
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
        let owner = deployment("web", &OwnerState::Managed);
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
                decide(&write("alice", &op, None), SERIN, deployment("web", &state)),
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
            deployment("web", &state),
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
        // A DaemonSet owner is judged by the same metadata.
        let daemonset = |d: Deployment| DaemonSet {
            metadata: d.metadata,
            ..Default::default()
        };
        let managed = daemonset(owner("u1", true, false));
        assert_eq!(owner_state(Some(&managed), Some("u1")), OwnerState::Managed);
        assert_eq!(owner_state(Some(&managed), Some("u0")), OwnerState::Gone);
        let opted_out = daemonset(owner("u1", false, false));
        assert_eq!(
            owner_state(Some(&opted_out), Some("u1")),
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
        assert_eq!(
            owner_of(&meta),
            Some(("web".into(), Some((WorkloadKind::Deployment, "u1".into()))))
        );
        assert_eq!(owner_of(&ObjectMeta::default()), None);
        // What Serin makes for a DaemonSet is owned by it.
        let of_daemonset = ObjectMeta {
            owner_references: Some(vec![reference("DaemonSet", "web", "d1")]),
            ..meta.clone()
        };
        assert_eq!(
            owner_of(&of_daemonset),
            Some(("web".into(), Some((WorkloadKind::DaemonSet, "d1".into()))))
        );
        // Without a reference to a workload of that name the kind is not known.
        let unreferenced = ObjectMeta {
            owner_references: Some(vec![reference("ReplicaSet", "web", "rs")]),
            ..meta
        };
        assert_eq!(owner_of(&unreferenced), Some(("web".into(), None)));
    }

    #[test]
    fn a_daemonsets_objects_are_refused_naming_the_daemonset_and_its_opt_out() {
        let agent = |state| {
            Some(Owner {
                kind: WorkloadKind::DaemonSet,
                name: "agent",
                state,
            })
        };
        let update = Operation::Update;
        let mut w = write("alice", &update, None);
        w.kind = "DaemonSet";
        w.name = "agent-primary";
        let message = denial(decide(&w, SERIN, agent(&OwnerState::Managed)));
        for expected in [
            "DaemonSet \"agent-primary\" is managed by Serin for DaemonSet \"agent\"",
            "changing it is refused",
            "Change DaemonSet \"agent\" instead: Serin carries its pod template and \
             configuration over",
            "remove the annotation serin.dev/enabled from DaemonSet \"agent\"",
            "kubectl annotate daemonset agent serin.dev/enabled-",
        ] {
            assert!(message.contains(expected), "no {expected:?} in: {message}");
        }
        assert!(!message.contains("Deployment"), "{message}");
        assert!(!message.contains("replicas"), "{message}");

        let delete = Operation::Delete;
        let mut w = write("kubernetes-admin", &delete, None);
        w.kind = "Service";
        w.name = "agent-canary";
        let message = denial(decide(&w, SERIN, agent(&OwnerState::Managed)));
        assert!(
            message.contains("Deleting DaemonSet \"agent\" itself removes everything"),
            "{message}"
        );
        let unknown = OwnerState::Unknown("timed out".into());
        let message = denial(decide(&w, SERIN, agent(&unknown)));
        assert!(
            message.contains("could not check that DaemonSet \"agent\" still exists"),
            "{message}"
        );
        // After opt-out (the label gone) or with the DaemonSet gone, they pass.
        assert_eq!(
            decide(&w, SERIN, agent(&OwnerState::NotManaged)),
            Verdict::Allow(Allowed::OwnerNotManaged)
        );
        assert_eq!(
            decide(&w, SERIN, agent(&OwnerState::Gone)),
            Verdict::Allow(Allowed::OwnerGone)
        );
        // The daemon set controller keeps the primary's revision history.
        let controller = write(
            "system:serviceaccount:kube-system:daemon-set-controller",
            &update,
            None,
        );
        assert_eq!(
            decide(&controller, SERIN, agent(&OwnerState::Managed)),
            Verdict::Allow(Allowed::KubernetesController)
        );
    }

    /// A client whose API server holds `objects` by path (404 for anything else) and
    /// records the paths it was asked for.
    fn fake_api(
        objects: Vec<(String, serde_json::Value)>,
    ) -> (Client, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
        use http_body_util::BodyExt as _;
        let asked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = asked.clone();
        let service = tower::service_fn(move |request: hyper::Request<kube::client::Body>| {
            let path = request.uri().path().to_owned();
            if let Ok(mut asked) = seen.lock() {
                asked.push(path.clone());
            }
            let found = objects.iter().find(|(p, _)| *p == path).map(|(_, o)| o);
            let (status, body) = match found {
                Some(object) => (200, object.clone()),
                None => (
                    404,
                    serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                       "reason": "NotFound", "code": 404, "message": "not found"}),
                ),
            };
            async move {
                let _ = request.into_body().collect().await;
                hyper::Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .body(kube::client::Body::from(
                        serde_json::to_vec(&body).unwrap_or_default(),
                    ))
            }
        });
        (Client::new(service, "prod"), asked)
    }

    /// A user's DELETE of Service `agent-canary`, labelled for `agent`, with the owner
    /// reference `reference` (kind, uid) when given.
    fn service_delete(reference: Option<(&str, &str)>) -> ObjectRequest {
        let references = reference.map(|(kind, uid)| {
            serde_json::json!([{"apiVersion": "apps/v1", "kind": kind, "name": "agent",
                                "uid": uid, "controller": true}])
        });
        let service = serde_json::json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "agent-canary", "namespace": "prod",
                         "labels": {"serin.dev/owner": "agent"},
                         "ownerReferences": references},
            "spec": {"selector": {"app": "agent"}}
        });
        let review = serde_json::json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "u1",
                "kind": {"group": "", "version": "v1", "kind": "Service"},
                "resource": {"group": "", "version": "v1", "resource": "services"},
                "name": "agent-canary", "namespace": "prod", "operation": "DELETE",
                "userInfo": {"username": "alice"}, "oldObject": service,
            }
        });
        crate::admission::review::decode_object(review.to_string().as_bytes())
            .unwrap_or_else(|e| panic!("review: {e:?}"))
    }

    fn stored_daemonset(labelled: bool) -> (String, serde_json::Value) {
        let labels = labelled.then(|| serde_json::json!({MANAGED_LABEL: "true"}));
        (
            "/apis/apps/v1/namespaces/prod/daemonsets/agent".into(),
            serde_json::json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
                               "metadata": {"name": "agent", "namespace": "prod",
                                            "uid": "d1", "labels": labels}}),
        )
    }

    const DEPLOYMENT_AGENT: &str = "/apis/apps/v1/namespaces/prod/deployments/agent";
    const DAEMONSET_AGENT: &str = "/apis/apps/v1/namespaces/prod/daemonsets/agent";

    /// [`service_delete`] with `reference`, reviewed against an API server holding DaemonSet
    /// `agent` (labelled as opted in or not) or nothing: the response and the paths read.
    async fn review_against(
        stored: Option<bool>,
        reference: Option<(&str, &str)>,
    ) -> (AdmissionResponse, Vec<String>) {
        let (client, asked) = fake_api(stored.map(stored_daemonset).into_iter().collect());
        let response = review(&service_delete(reference), SERIN, Some(&client)).await;
        let asked = asked.lock().map(|a| a.clone()).unwrap_or_default();
        (response, asked)
    }

    #[tokio::test]
    async fn the_review_reads_the_owner_of_the_kind_its_owner_reference_names() {
        let (response, asked) = review_against(Some(true), Some(("DaemonSet", "d1"))).await;
        assert!(!response.allowed);
        let message = &response.result.message;
        for expected in [
            "Service \"agent-canary\" is managed by Serin for DaemonSet \"agent\"",
            "kubectl annotate daemonset agent serin.dev/enabled-",
        ] {
            assert!(message.contains(expected), "no {expected:?} in: {message}");
        }
        assert_eq!(asked, [DAEMONSET_AGENT], "no Deployment is read");
    }

    #[tokio::test]
    async fn without_an_owner_reference_the_owner_is_looked_up_as_a_deployment_then_a_daemonset() {
        let (response, asked) = review_against(Some(true), None).await;
        let message = &response.result.message;
        assert!(!response.allowed);
        assert!(message.contains("for DaemonSet \"agent\""), "{message}");
        assert_eq!(asked, [DEPLOYMENT_AGENT, DAEMONSET_AGENT]);
        // Neither kind exists: a left-over, which passes.
        assert!(review_against(None, None).await.0.allowed);
    }

    #[tokio::test]
    async fn a_daemonset_opted_out_or_replaced_lets_its_objects_go() {
        let (opted_out, _) = review_against(Some(false), Some(("DaemonSet", "d1"))).await;
        assert!(opted_out.allowed, "{}", opted_out.result.message);
        // A new DaemonSet of the same name (another uid) does not own the old objects.
        let (replaced, _) = review_against(Some(true), Some(("DaemonSet", "d0"))).await;
        assert!(replaced.allowed, "{}", replaced.result.message);
    }
}
