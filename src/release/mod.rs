//! The release machinery, as pure functions of data (no cluster I/O here):
//! - [`objects`]: the desired objects Serin adds beside an opted-in Deployment (the
//!   `<name>-primary` Deployment, the three Services, `-primary` copies of tracked ConfigMaps
//!   and Secrets, and of the HPA);
//!   The same builders serve a DaemonSet (`primary_daemonset`), through [`crate::spec::Workload`];
//! - [`idle`]: the node-selector switch that keeps an idle canary DaemonSet off every node;
//! - [`observe`]: what the canary and primary Deployments and DaemonSets say, for
//!   [`Observations`];
//! - [`revision`]: the stable hash that says "this is a new revision";
//! - [`machine`]: the release state machine of SPEC "The release cycle",
//!   `(status, observations, now) -> (actions, new status)`, over [`status`] (what
//!   `Canary.status` remembers), [`observations`] (what it knows of the world; where a check
//!   is judged) and [`actions`] (what it asks for, and every Event [`Reason`]);
//! - [`drive`]: the ask/answer loop around `step` (measurements, gates, the `rollback`
//!   poll), which the controller and the machine's tests both use;
//! - [`sequential`]: the sequential test that judges a canary on its request counts (the
//!   builtin success-rate and latency checks with `serin.dev/sequential-checks`);
//! - [`repairs`]: what a reconcile reapplies besides what the machine asks for;
//! - [`weights`]: how traffic is split ([`Weights`]) and routed ([`Route`]: mirroring and
//!   session affinity besides);
//! - [`conditions`]: `Canary.status.conditions` (`Promoted`) derived from that status.
//!
//! The router objects (TrafficSplit, HTTPRoute, ...) live in `router/`, one file per
//! provider.

pub mod actions;
pub mod conditions;
pub mod drive;
pub mod idle;
pub mod machine;
pub mod objects;
pub mod observations;
pub mod observe;
pub mod repairs;
pub mod revision;
pub mod sequential;
pub mod status;
pub mod weights;

pub use actions::{Action, EventType, HookKind, Reason};
pub use drive::{Answers, Driven, GateAnswer, MAX_CALLBACKS, Told, drive};
pub use machine::step;
pub use objects::{
    ObjectsError, Tracking, owner_references, primary_config_map, primary_daemonset,
    primary_deployment, primary_hpa, primary_name, primary_secret, primary_selector,
    release_template, requested_replicas, rewrite_config_refs, services,
};
pub use observations::{
    CanaryObservation, Evidence, Gates, MetricCheck, NoData, Observations, PrimaryObservation,
    Requests, SlowerThan, builtin_checks,
};
pub use repairs::{Changes, Repairs, repairs};
pub use revision::{TrackedConfig, revision};
pub use sequential::Counts;
pub use status::{CheckValue, Phase, ReleaseStatus};
pub use weights::{Route, Weights};
// The names and configs of the model, which the release builds from.
pub use crate::spec::{CANARY_SUFFIX, ConfigKind, ConfigRef, PRIMARY_SUFFIX, config_refs};

/// Label on every object Serin builds for an opted-in Deployment (the primary, the Services,
/// the router object, the `-primary` copies): the name of that Deployment. Admission uses it
/// to protect managed objects and to name the Deployment to change instead; the controller
/// uses it to find what to repair. Distinct from [`crate::spec::MANAGED_LABEL`], which marks
/// the opted-in Deployment itself: the primary must never look opted in.
pub const OWNER_LABEL: &str = "serin.dev/owner";

/// Annotation on the primary Deployment: the [`revision`] its pod template was copied from,
/// so the controller can tell that a promotion has reached the primary.
pub const PRIMARY_REVISION_ANNOTATION: &str = crate::spec::REVISION;
