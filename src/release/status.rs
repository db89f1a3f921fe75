//! What `Canary.status` remembers of a release between steps: its [`Phase`], weight, check
//! counts and the last measured values. The machine's only state.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The phase of a release, as `Canary.status.phase` spells it.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Opted in; waiting for the primary to be Ready before taking traffic off the original.
    #[default]
    Initializing,
    /// The primary serves all traffic; the canary is at zero.
    Initialized,
    /// A new revision waits for `confirm-rollout`.
    Waiting,
    /// The canary analysis is running.
    Progressing,
    /// At max weight (or after the last iteration), waiting for `confirm-promotion`.
    WaitingPromotion,
    /// The canary's template is being rolled out to the primary.
    Promoting,
    /// Traffic is back on the primary; the canary is being scaled to zero.
    Finalising,
    /// The last revision was promoted.
    Succeeded,
    /// The last revision was rolled back.
    Failed,
    /// Opted out: the original Deployment is restored before the machinery is removed.
    Terminating,
}

impl Phase {
    /// Every phase, in the order of a release.
    pub const ALL: [Phase; 10] = [
        Phase::Initializing,
        Phase::Initialized,
        Phase::Waiting,
        Phase::Progressing,
        Phase::WaitingPromotion,
        Phase::Promoting,
        Phase::Finalising,
        Phase::Succeeded,
        Phase::Failed,
        Phase::Terminating,
    ];

    /// The phase as `Canary.status.phase` spells it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Phase::Initializing => "Initializing",
            Phase::Initialized => "Initialized",
            Phase::Waiting => "Waiting",
            Phase::Progressing => "Progressing",
            Phase::WaitingPromotion => "WaitingPromotion",
            Phase::Promoting => "Promoting",
            Phase::Finalising => "Finalising",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
            Phase::Terminating => "Terminating",
        }
    }

    /// Phases of an ongoing analysis, which a new revision restarts, an abort ends and a
    /// pause holds.
    pub fn is_analysing(self) -> bool {
        matches!(
            self,
            Phase::Waiting | Phase::Progressing | Phase::WaitingPromotion
        )
    }

    /// Phases with nothing to do until a new revision arrives.
    pub(super) fn is_idle(self) -> bool {
        matches!(self, Phase::Initialized | Phase::Succeeded | Phase::Failed)
    }
}

/// The last measured value of one check, for `kubectl get canaries` and `serin status`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CheckValue {
    pub name: String,
    /// `None`: the query returned no data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
}

/// What `Canary.status` remembers between steps.
///
/// `canary_weight` is the canary's share of every request, except in A/B testing, where the
/// router applies the weights to the requests that match the A/B rules only (see
/// `Router::build` in `router/`): 100 there means "every matching request", from the
/// start of the analysis until the primary runs the new revision.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseStatus {
    pub phase: Phase,
    /// Percent of traffic the canary should get (when Ready).
    pub canary_weight: u32,
    /// Failed checks in the current analysis.
    pub failed_checks: u32,
    /// Passed checks in the current analysis (Blue/Green and A/B, as in Flagger).
    pub iterations: u32,
    /// The revision being released, or the last one released.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_promoted_revision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
    /// When the last interval's work (hook, checks) was evaluated; the next is due one
    /// `interval` later. In microseconds: a `Time` keeps whole seconds, which would make the
    /// next interval up to a second short once the status is read back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_check_time: Option<MicroTime>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub last_checks: Vec<CheckValue>,
    /// While requests are mirrored to the canary before the first weight step
    /// (`serin.dev/mirror-checks`): the checks passed on mirrored requests so far. Absent
    /// otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirrored_checks: Option<u32>,
    /// When the canary's weight last moved: the counted checks judge the requests since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_change_time: Option<MicroTime>,
    /// When the counted checks were last looked at between intervals
    /// (`serin.dev/sequential-checks`); the next look is due [`LOOK_EVERY`] later.
    ///
    /// [`LOOK_EVERY`]: super::machine::LOOK_EVERY
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_look_time: Option<MicroTime>,
    /// Requests the canary served during the current (or last) release, as the counted
    /// success-rate check measured them: the release's blast radius as Serin saw it.
    #[serde(default)]
    pub canary_requests: u64,
    /// Of those, requests that failed.
    #[serde(default)]
    pub canary_failed_requests: u64,
    /// The requests counted since the weight last moved, already included in
    /// `canaryRequests` (so that the next count adds only what is new).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub step_requests: u64,
    /// Of those, requests that failed.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub step_failed_requests: u64,
    /// Why the release was rolled back, naming the check that decided it (with its counts
    /// when a sequential check did), or the abort, webhook or deadline that did; absent
    /// until a rollback, and after one on `threshold` failed checks (`failedChecks` says it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_reason: Option<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_phase_is_spelled_as_the_status_spells_it_once() {
        let spelled: std::collections::BTreeSet<&str> =
            Phase::ALL.iter().map(|p| p.as_str()).collect();
        assert_eq!(spelled.len(), Phase::ALL.len());
        for phase in Phase::ALL {
            assert_eq!(
                serde_json::to_value(phase).expect("serialize"),
                serde_json::json!(phase.as_str())
            );
        }
    }
}
