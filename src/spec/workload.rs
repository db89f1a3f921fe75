//! The kinds of workload Serin releases: a Deployment or a DaemonSet. [`Workload`] is what the
//! canary model and the release builders read of one (its metadata, selector and pod
//! template), so the same parsing, names check and object builders serve both kinds. What
//! differs by kind (how a DaemonSet is kept idle, what "Ready" means) is in
//! `release::daemonset` and `release::observe`.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{ObjectReference, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

/// The node-selector label that keeps an idle canary DaemonSet off every node (no node
/// carries it), as Flagger does with its own label. Serin sets it on the canary's pod
/// template between releases and removes it for the analysis; it is never part of the
/// revision nor copied to the primary, and the user's own node selector entries stay.
pub const IDLE_NODE_LABEL: &str = "serin.dev/idle";

/// The kinds Serin releases, by their Kubernetes `kind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WorkloadKind {
    Deployment,
    DaemonSet,
}

impl WorkloadKind {
    /// `Deployment` or `DaemonSet`, as in `kind:`.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "Deployment",
            WorkloadKind::DaemonSet => "DaemonSet",
        }
    }

    /// Both kinds are `apps/v1`.
    pub fn api_version(self) -> &'static str {
        "apps/v1"
    }

    /// Whether the kind has `spec.replicas` (and a scale subresource an HPA can target).
    pub fn has_replicas(self) -> bool {
        matches!(self, WorkloadKind::Deployment)
    }
}

impl std::fmt::Display for WorkloadKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the release reads of a workload, whatever its kind.
pub trait Workload: Send + Sync {
    fn kind(&self) -> WorkloadKind;
    fn meta(&self) -> &ObjectMeta;
    fn selector(&self) -> Option<&LabelSelector>;
    fn template(&self) -> Option<&PodTemplateSpec>;
}

impl Workload for Deployment {
    fn kind(&self) -> WorkloadKind {
        WorkloadKind::Deployment
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn selector(&self) -> Option<&LabelSelector> {
        self.spec.as_ref().map(|s| &s.selector)
    }
    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref().map(|s| &s.template)
    }
}

impl Workload for DaemonSet {
    fn kind(&self) -> WorkloadKind {
        WorkloadKind::DaemonSet
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn selector(&self) -> Option<&LabelSelector> {
        self.spec.as_ref().map(|s| &s.selector)
    }
    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref().map(|s| &s.template)
    }
}

/// The reference Events use for `workload` (kind, apiVersion, namespace, name, uid), as
/// kube's `Resource::object_ref` makes it for a typed object.
pub fn object_reference(workload: &dyn Workload) -> ObjectReference {
    let meta = workload.meta();
    let kind = workload.kind();
    ObjectReference {
        api_version: Some(kind.api_version().to_owned()),
        kind: Some(kind.as_str().to_owned()),
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        uid: meta.uid.clone(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::Resource;

    #[test]
    fn a_workloads_reference_is_the_one_kube_makes_for_it() {
        let meta = ObjectMeta {
            name: Some("agent".into()),
            namespace: Some("prod".into()),
            uid: Some("u-1".into()),
            resource_version: Some("7".into()),
            ..Default::default()
        };
        let daemonset = DaemonSet {
            metadata: meta.clone(),
            ..Default::default()
        };
        assert_eq!(object_reference(&daemonset), daemonset.object_ref(&()));
        let deployment = Deployment {
            metadata: meta,
            ..Default::default()
        };
        assert_eq!(object_reference(&deployment), deployment.object_ref(&()));
    }
}
