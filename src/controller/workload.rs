//! The workload of one release, by kind ([`Target`]: the user's Deployment or DaemonSet) and
//! its `-primary` ([`Primary`]): what the controller writes differently for each kind. The
//! rest of a reconcile reads either through [`crate::spec::Workload`].

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

use crate::release::{self, PrimaryObservation, observe};
use crate::spec::{Workload, WorkloadKind};

/// The user's workload a release is about.
#[derive(Clone, Copy)]
pub(super) enum Target<'a> {
    Deployment(&'a Deployment),
    DaemonSet(&'a DaemonSet),
}

impl Workload for Target<'_> {
    fn kind(&self) -> WorkloadKind {
        self.inner().kind()
    }
    fn meta(&self) -> &ObjectMeta {
        self.inner().meta()
    }
    fn selector(&self) -> Option<&LabelSelector> {
        self.inner().selector()
    }
    fn template(&self) -> Option<&PodTemplateSpec> {
        self.inner().template()
    }
}

impl<'a> Target<'a> {
    fn inner(&self) -> &'a dyn Workload {
        match *self {
            Target::Deployment(d) => d,
            Target::DaemonSet(d) => d,
        }
    }

    /// The canary for the release machine: a Deployment's replicas, or a DaemonSet's idle
    /// switch ([`release::idle`]).
    pub(super) fn observe_canary(&self, desired: i32) -> release::CanaryObservation {
        match self {
            Target::Deployment(d) => observe::canary(d, desired),
            Target::DaemonSet(d) => observe::daemonset_canary(d),
        }
    }

    /// The replicas the user wants: the Deployment's record or its primary's size; always 1
    /// for a DaemonSet (it runs wherever its node selector allows).
    pub(super) fn desired_replicas(&self, primary: Option<&Primary>) -> i32 {
        match self {
            Target::Deployment(d) => {
                observe::desired_replicas(d, primary.and_then(Primary::replicas))
            }
            Target::DaemonSet(_) => 1,
        }
    }
}

/// A `-primary` as stored.
#[derive(Clone, Debug)]
pub(super) enum Primary {
    Deployment(Deployment),
    DaemonSet(DaemonSet),
}

impl Primary {
    /// `spec.replicas` of a primary Deployment; `None` for a DaemonSet.
    pub(super) fn replicas(&self) -> Option<i32> {
        match self {
            Primary::Deployment(d) => observe::spec_replicas(d),
            Primary::DaemonSet(_) => None,
        }
    }

    pub(super) fn observe(primary: Option<&Primary>) -> PrimaryObservation {
        match primary {
            None => PrimaryObservation::default(),
            Some(Primary::Deployment(d)) => observe::primary(Some(d)),
            Some(Primary::DaemonSet(d)) => observe::daemonset_primary(Some(d)),
        }
    }
}
