//! What the controller reads off Deployments and DaemonSets, as pure functions of their
//! stored state: is a rollout finished and Ready, has it stalled, how many replicas the user
//! asked for.
//!
//! A DaemonSet is rolled out as `kubectl rollout status` says: its controller has seen the
//! current spec (`status.observedGeneration`), and every node that should run a pod
//! (`desiredNumberScheduled`) runs one of the current template (`updatedNumberScheduled`)
//! that is available (`numberAvailable`). It has no progress deadline, so it never stalls.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};

use super::{
    CanaryObservation, PRIMARY_REVISION_ANNOTATION, PrimaryObservation, requested_replicas,
};

/// `spec.replicas` as written (`None` when absent).
pub fn spec_replicas(deploy: &Deployment) -> Option<i32> {
    deploy.spec.as_ref().and_then(|s| s.replicas)
}

/// `spec.replicas` as the API server reads it: an absent count is 1.
fn replicas(deploy: &Deployment) -> i32 {
    spec_replicas(deploy).unwrap_or(1)
}

/// The Deployment controller has seen the current spec and finished rolling it out: every
/// replica runs the current template and no old pod is left.
fn rolled_out(deploy: &Deployment) -> bool {
    let Some(status) = deploy.status.as_ref() else {
        return false;
    };
    let generation = deploy.metadata.generation.unwrap_or(0);
    let want = replicas(deploy);
    status.observed_generation.unwrap_or(0) >= generation
        && status.updated_replicas.unwrap_or(0) >= want
        && status.replicas.unwrap_or(0) <= status.updated_replicas.unwrap_or(0)
}

fn ready_replicas(deploy: &Deployment) -> i32 {
    deploy
        .status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0)
}

/// The rollout reports `ProgressDeadlineExceeded`.
fn stalled(deploy: &Deployment) -> bool {
    deploy
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| {
            c.type_ == "Progressing"
                && c.status == "False"
                && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
        })
}

/// The replicas the user asked for: `serin.dev/desired-replicas` (recorded by admission), else
/// `fallback` (the primary's size), else `spec.replicas` while the canary was never scaled.
pub fn desired_replicas(deploy: &Deployment, fallback: Option<i32>) -> i32 {
    requested_replicas(deploy)
        .or(fallback)
        .unwrap_or_else(|| replicas(deploy))
}

/// The canary (the user's Deployment) for the release machine.
pub fn canary(deploy: &Deployment, desired_replicas: i32) -> CanaryObservation {
    let replicas = replicas(deploy);
    CanaryObservation {
        ready: replicas > 0 && rolled_out(deploy) && ready_replicas(deploy) > 0,
        stalled: stalled(deploy),
        replicas,
        desired_replicas,
    }
}

/// The `<name>-primary` Deployment for the release machine; a missing one is not Ready.
pub fn primary(primary: Option<&Deployment>) -> PrimaryObservation {
    let Some(deploy) = primary else {
        return PrimaryObservation::default();
    };
    let want = replicas(deploy);
    PrimaryObservation {
        ready: rolled_out(deploy) && ready_replicas(deploy) >= want,
        revision: deploy
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(PRIMARY_REVISION_ANNOTATION))
            .cloned(),
    }
}

/// The DaemonSet controller has seen the current spec, and every node that should run a pod
/// runs an available one of the current template.
fn daemonset_rolled_out(daemonset: &DaemonSet) -> bool {
    let Some(status) = daemonset.status.as_ref() else {
        return false;
    };
    let generation = daemonset.metadata.generation.unwrap_or(0);
    let want = status.desired_number_scheduled;
    status.observed_generation.unwrap_or(0) >= generation
        && status.updated_number_scheduled.unwrap_or(0) >= want
        && status.number_available.unwrap_or(0) >= want
}

/// The canary DaemonSet (the user's) for the release machine: Ready once rolled out with at
/// least one node scheduled and one Ready pod; its size is 0 while idle and 1 otherwise
/// ([`super::idle::replicas`]), and the size wanted is always 1.
pub fn daemonset_canary(daemonset: &DaemonSet) -> CanaryObservation {
    let replicas = super::idle::replicas(daemonset);
    let status = daemonset.status.as_ref();
    let scheduled = status.map(|s| s.desired_number_scheduled).unwrap_or(0);
    let ready = status.map(|s| s.number_ready).unwrap_or(0);
    CanaryObservation {
        ready: replicas > 0 && daemonset_rolled_out(daemonset) && scheduled > 0 && ready > 0,
        stalled: false,
        replicas,
        desired_replicas: 1,
    }
}

/// The `<name>-primary` DaemonSet for the release machine: Ready once rolled out on every
/// node it should run on; a missing one is not Ready.
pub fn daemonset_primary(primary: Option<&DaemonSet>) -> PrimaryObservation {
    let Some(daemonset) = primary else {
        return PrimaryObservation::default();
    };
    PrimaryObservation {
        ready: daemonset_rolled_out(daemonset),
        revision: daemonset
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(PRIMARY_REVISION_ANNOTATION))
            .cloned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::DESIRED_REPLICAS;
    use k8s_openapi::api::apps::v1::{
        DaemonSetStatus, DeploymentCondition, DeploymentSpec, DeploymentStatus,
    };
    use kube::api::ObjectMeta;

    fn deployment(replicas: i32, generation: i64, status: DeploymentStatus) -> Deployment {
        Deployment {
            metadata: ObjectMeta {
                generation: Some(generation),
                ..Default::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                ..Default::default()
            }),
            status: Some(status),
        }
    }

    fn rolled(replicas: i32, ready: i32) -> DeploymentStatus {
        DeploymentStatus {
            observed_generation: Some(2),
            replicas: Some(replicas),
            updated_replicas: Some(replicas),
            ready_replicas: Some(ready),
            available_replicas: Some(ready),
            ..Default::default()
        }
    }

    #[test]
    fn a_rolled_out_canary_with_a_ready_pod_is_ready() {
        assert!(canary(&deployment(3, 2, rolled(3, 1)), 3).ready);
    }

    #[test]
    fn a_canary_at_zero_replicas_is_not_ready() {
        assert!(!canary(&deployment(0, 2, rolled(0, 0)), 3).ready);
    }

    #[test]
    fn a_spec_the_deployment_controller_has_not_seen_is_not_ready() {
        // Generation 3 written, status still about generation 2: the old pods are what is Ready.
        assert!(!canary(&deployment(3, 3, rolled(3, 3)), 3).ready);
        assert!(!primary(Some(&deployment(3, 3, rolled(3, 3)))).ready);
    }

    #[test]
    fn old_pods_still_running_mean_the_rollout_is_not_finished() {
        let status = DeploymentStatus {
            replicas: Some(4),
            updated_replicas: Some(3),
            ..rolled(3, 3)
        };
        assert!(!primary(Some(&deployment(3, 2, status))).ready);
    }

    #[test]
    fn the_primary_is_ready_only_with_every_replica_ready() {
        assert!(!primary(Some(&deployment(3, 2, rolled(3, 2)))).ready);
        assert!(primary(Some(&deployment(3, 2, rolled(3, 3)))).ready);
        assert!(!primary(None).ready);
    }

    #[test]
    fn progress_deadline_exceeded_is_stalled() {
        let status = DeploymentStatus {
            conditions: Some(vec![DeploymentCondition {
                type_: "Progressing".into(),
                status: "False".into(),
                reason: Some("ProgressDeadlineExceeded".into()),
                ..Default::default()
            }]),
            ..rolled(3, 0)
        };
        assert!(canary(&deployment(3, 2, status), 3).stalled);
        assert!(!canary(&deployment(3, 2, rolled(3, 0)), 3).stalled);
    }

    #[test]
    fn desired_replicas_prefers_the_annotation_then_the_primary() {
        let mut deploy = deployment(0, 1, rolled(0, 0));
        assert_eq!(desired_replicas(&deploy, Some(4)), 4);
        assert_eq!(desired_replicas(&deploy, None), 0);
        deploy.metadata.annotations = Some([(DESIRED_REPLICAS.to_owned(), "3".into())].into());
        assert_eq!(desired_replicas(&deploy, Some(4)), 3);
        deploy.metadata.annotations = Some([(DESIRED_REPLICAS.to_owned(), "-1".into())].into());
        assert_eq!(desired_replicas(&deploy, Some(4)), 4);
    }

    fn daemonset(generation: i64, idle: bool, status: DaemonSetStatus) -> DaemonSet {
        let mut daemonset = DaemonSet {
            metadata: ObjectMeta {
                generation: Some(generation),
                ..Default::default()
            },
            status: Some(status),
            ..Default::default()
        };
        if idle {
            let selector = [(crate::spec::IDLE_NODE_LABEL.to_owned(), "true".to_owned())];
            let spec = daemonset.spec.get_or_insert_default();
            spec.template.spec.get_or_insert_default().node_selector = Some(selector.into());
        }
        daemonset
    }

    fn on_nodes(desired: i32, updated: i32, ready: i32) -> DaemonSetStatus {
        DaemonSetStatus {
            observed_generation: Some(2),
            desired_number_scheduled: desired,
            current_number_scheduled: desired,
            updated_number_scheduled: Some(updated),
            number_ready: ready,
            number_available: Some(ready),
            ..Default::default()
        }
    }

    #[test]
    fn a_daemonset_canary_is_ready_once_every_node_runs_an_available_current_pod() {
        assert!(daemonset_canary(&daemonset(2, false, on_nodes(2, 2, 2))).ready);
        // One node still runs the old template, or a new pod is not available yet.
        assert!(!daemonset_canary(&daemonset(2, false, on_nodes(2, 1, 2))).ready);
        assert!(!daemonset_canary(&daemonset(2, false, on_nodes(2, 2, 1))).ready);
        // The controller has not seen generation 3 yet.
        assert!(!daemonset_canary(&daemonset(3, false, on_nodes(2, 2, 2))).ready);
        // Scheduled on no node: nothing to analyse.
        assert!(!daemonset_canary(&daemonset(2, false, on_nodes(0, 0, 0))).ready);
        assert!(!daemonset_canary(&DaemonSet::default()).ready);
    }

    #[test]
    fn an_idle_daemonset_canary_counts_as_zero_replicas_and_never_stalls() {
        let idle = daemonset_canary(&daemonset(2, true, on_nodes(0, 0, 0)));
        assert_eq!((idle.ready, idle.stalled), (false, false));
        assert_eq!((idle.replicas, idle.desired_replicas), (0, 1));
        let awake = daemonset_canary(&daemonset(2, false, on_nodes(1, 1, 1)));
        assert_eq!((awake.replicas, awake.desired_replicas), (1, 1));
    }

    #[test]
    fn a_daemonset_primary_is_ready_on_every_node_and_reports_its_revision() {
        let mut primary = daemonset(2, false, on_nodes(3, 3, 3));
        primary.metadata.annotations =
            Some([(PRIMARY_REVISION_ANNOTATION.to_owned(), "abc".into())].into());
        let observed = daemonset_primary(Some(&primary));
        assert!(observed.ready);
        assert_eq!(observed.revision.as_deref(), Some("abc"));
        assert!(!daemonset_primary(Some(&daemonset(2, false, on_nodes(3, 3, 2)))).ready);
        assert!(!daemonset_primary(None).ready);
    }

    #[test]
    fn the_primary_reports_the_revision_it_was_copied_from() {
        let mut deploy = deployment(1, 1, rolled(1, 1));
        deploy.metadata.annotations =
            Some([(PRIMARY_REVISION_ANNOTATION.to_owned(), "abc".into())].into());
        assert_eq!(primary(Some(&deploy)).revision.as_deref(), Some("abc"));
    }
}
