//! Everything [`super::step`] knows about the world, as the executor observed it: the canary,
//! the primary, the router's weights, runtime requests, gate answers, and the measured
//! [`MetricCheck`]s — where a check is judged against its accepted range.

use super::actions::HookKind;
use super::sequential::Counts;
use super::weights::Route;
use crate::spec::CanarySpec;

/// What "no data" from a metric means.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NoData {
    /// A failed check (the default: a silent canary must not be promoted).
    #[default]
    Fail,
    /// The check is left out of this interval.
    Skip,
}

/// One measured metric with its accepted range.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricCheck {
    pub name: String,
    /// Printed after values in messages: `%`, `ms`, or empty.
    pub unit: String,
    /// `None` (or NaN, what PromQL gives for 0/0) is "no data".
    pub value: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub no_data: NoData,
    /// The request counts behind the value since the weight last moved, when the check has
    /// them (the builtin success rate with `serin.dev/sequential-checks`): then the
    /// sequential test judges it, not `min`/`max` on the value.
    pub evidence: Option<Evidence>,
}

/// The requests a counted check saw since the canary's weight last moved.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Evidence {
    /// The canary's requests, and of those the failed ones (or, for a latency check, the
    /// slow ones: see `slower_than`).
    pub canary: Counts,
    /// The primary's over the same window (`serin.dev/compare: primary`).
    pub primary: Option<Counts>,
    /// For a latency check: `canary.failed` counts the requests slower than this, read from
    /// the latency histogram. `None` for the success rate.
    pub slower_than: Option<SlowerThan>,
}

/// What a latency check's counts count as slow.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SlowerThan {
    /// The user's limit (`serin.dev/latency`, or the template metric's `max`), milliseconds.
    pub limit_ms: f64,
    /// The histogram's largest bucket boundary at or below the limit, milliseconds: every
    /// request above it counts as slow (all of them above the limit, some below it: never
    /// fewer slow requests than there are).
    pub boundary_ms: f64,
    /// The quantile the limit is of (0.99 for a p99): at most `1 − quantile` of the requests
    /// may be slower.
    pub quantile: f64,
}

impl MetricCheck {
    /// `None` when the check passes (or is skipped), else what failed, with the value.
    pub(super) fn failure(&self) -> Option<String> {
        let unit = &self.unit;
        match self.value.filter(|v| !v.is_nan()) {
            None => (self.no_data == NoData::Fail).then(|| format!("{}: no data", self.name)),
            Some(v) => match (self.min, self.max) {
                (Some(min), _) if v < min => {
                    Some(format!("{} {v:.2}{unit} < {min}{unit}", self.name))
                }
                (_, Some(max)) if v > max => {
                    Some(format!("{} {v:.2}{unit} > {max}{unit}", self.name))
                }
                _ => None,
            },
        }
    }

    /// The query answered with a number.
    pub(super) fn measured(&self) -> bool {
        self.value.is_some_and(|v| !v.is_nan())
    }

    pub(super) fn describe(&self) -> String {
        let value = match self.value.filter(|v| !v.is_nan()) {
            Some(v) => format!("{} {v:.2}{}", self.name, self.unit),
            None => format!("{} no data", self.name),
        };
        match self.evidence {
            Some(Evidence {
                canary,
                slower_than: Some(slow),
                ..
            }) => format!(
                "{value} ({:.0} of {:.0} requests slower than {}ms since the weight moved)",
                canary.failed, canary.requests, slow.boundary_ms
            ),
            Some(e) => format!(
                "{value} ({:.0} of {:.0} requests failed since the weight moved)",
                e.canary.failed, e.canary.requests
            ),
            None => value,
        }
    }
}

/// The builtin Linkerd checks of a spec (SPEC "Metrics"): success rate at least
/// `success-rate` percent, p99 latency at most `latency`; no data fails.
pub fn builtin_checks(
    spec: &CanarySpec,
    success_rate: Option<f64>,
    latency_ms: Option<f64>,
) -> Vec<MetricCheck> {
    // Millisecond counts of a Duration are far below f64's exact integer range.
    let max_latency = spec.latency.as_millis() as f64;
    vec![
        MetricCheck {
            name: "request-success-rate".into(),
            unit: "%".into(),
            value: success_rate,
            min: Some(spec.success_rate),
            max: None,
            no_data: NoData::Fail,
            evidence: None,
        },
        MetricCheck {
            name: "request-duration".into(),
            unit: "ms".into(),
            value: latency_ms,
            min: None,
            max: Some(max_latency),
            no_data: NoData::Fail,
            evidence: None,
        },
    ]
}

/// The canary (the user's Deployment) as observed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CanaryObservation {
    /// Rolled out to the current template with at least one Ready pod (false at 0 replicas).
    pub ready: bool,
    /// The Deployment reports `ProgressDeadlineExceeded`: it will not become Ready.
    pub stalled: bool,
    /// `spec.replicas` as stored.
    pub replicas: i32,
    /// What the user asked for (`serin.dev/desired-replicas`): the canary's size during
    /// analysis and the original's after opting out.
    pub desired_replicas: i32,
}

/// The `<name>-primary` Deployment as observed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PrimaryObservation {
    /// Rolled out with all its pods Ready.
    pub ready: bool,
    /// The revision its template was copied from (`serin.dev/revision`).
    pub revision: Option<String>,
}

/// Results of gate webhooks for this step: `None` not asked yet, `Some(true)` open (or no
/// hook of that kind), `Some(false)` closed or failed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Gates {
    pub confirm_rollout: Option<bool>,
    pub pre_rollout: Option<bool>,
    pub confirm_traffic_increase: Option<bool>,
    pub confirm_promotion: Option<bool>,
    /// Not a gate to open but a question: `Some(true)` when a `rollback` webhook answered
    /// with success, asking for a rollback; `Some(false)` when none did (or none exists).
    pub rollback: Option<bool>,
}

impl Gates {
    /// The answer recorded for a gate; `Some(true)` for [`HookKind::PostRollout`], which
    /// is a notification, not a gate.
    pub fn get(&self, kind: HookKind) -> Option<bool> {
        match kind {
            HookKind::ConfirmRollout => self.confirm_rollout,
            HookKind::PreRollout => self.pre_rollout,
            HookKind::ConfirmTrafficIncrease => self.confirm_traffic_increase,
            HookKind::ConfirmPromotion => self.confirm_promotion,
            HookKind::Rollback => self.rollback,
            HookKind::PostRollout => Some(true),
        }
    }

    /// Records a gate's answer; a notification has none to record.
    pub fn set(&mut self, kind: HookKind, open: bool) {
        let slot = match kind {
            HookKind::ConfirmRollout => &mut self.confirm_rollout,
            HookKind::PreRollout => &mut self.pre_rollout,
            HookKind::ConfirmTrafficIncrease => &mut self.confirm_traffic_increase,
            HookKind::ConfirmPromotion => &mut self.confirm_promotion,
            HookKind::Rollback => &mut self.rollback,
            HookKind::PostRollout => return,
        };
        *slot = Some(open);
    }
}

/// Runtime requests written on the Canary by `kubectl serin promote|abort|pause|resume`.
/// The executor clears `promote` and `abort` once a status shows them applied.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Requests {
    /// Promote now, skipping the rest of the analysis.
    pub promote: bool,
    /// Roll back now.
    pub abort: bool,
    /// Hold the analysis where it is (`resume` clears it).
    pub paused: bool,
}

/// Everything `step` knows about the world.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observations {
    /// The revision of the Deployment's pod template and tracked configs now.
    pub revision: String,
    /// `serin.dev/enabled` is still `"true"`.
    pub opted_in: bool,
    pub canary: CanaryObservation,
    pub primary: PrimaryObservation,
    /// The route the router object has now; `None` when it is missing or unreadable.
    pub router: Option<Route>,
    /// Measured this step, in answer to [`Action::RunChecks`].
    pub checks: Option<Vec<MetricCheck>>,
    pub gates: Gates,
    pub requests: Requests,
}
