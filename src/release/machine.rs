//! The release state machine of SPEC "The release cycle", as one pure function:
//! [`step`]`(status, observations, now, spec) -> (actions, new status)`.
//!
//! The controller's executor reads the cluster into [`Observations`], calls [`step`], performs
//! the [`Action`]s in order and writes the new [`ReleaseStatus`] to `Canary.status`. All state
//! lives in that status, so a restarted controller resumes at the same weight and check count.
//!
//! **Protocol for measurements and gates.** `step` never does I/O. When a check is due and
//! `observations.checks` is `None`, it answers [`Action::RunChecks`] and leaves the status
//! unchanged; the executor measures and calls `step` again with the results (same `now`).
//! Gate webhooks work the same way: a `None` gate is answered by [`Action::CallHook`]; the
//! executor runs the hooks of that kind (answering `Some(true)` when none is configured) and
//! calls again. `rollout` webhooks (load tests) are run by the executor as part of
//! `RunChecks`, their failures reported as checks, as Flagger counts them. `rollback`
//! webhooks are polled the same way, once per interval while a release is under way and not
//! paused (Waiting at a closed `confirm-rollout` gate, Progressing, WaitingPromotion): one
//! that answers with success asks for a rollback. `event` webhooks are the executor's alone:
//! it sends every Event it records to them.
//!
//! **Traffic** is declared, not commanded: every step compares the weights the router should
//! have for the new status with the ones observed and emits one [`Action::SetWeights`] first
//! when they differ. So weights always sum to 100 (by [`Weights`]' construction), the canary
//! gets traffic only while it is Ready, and a crash between applying weights and writing
//! the status is repaired by the next step.
//!
//! Semantics follow Flagger: a new revision waits on `confirm-rollout` (Waiting), scales the
//! canary up (Progressing); once it is Ready, each interval runs `pre-rollout` (at weight 0)
//! or the checks, advancing along [`CanarySpec::weights`] while they pass; each failure counts
//! toward `threshold`, which rolls back (Failed). At `max-weight` (or after `iterations` for
//! Blue/Green and A/B) `confirm-promotion` opens the promotion (Promoting): the template is
//! copied to the primary, and once the primary has rolled out, traffic returns to it and the
//! canary is scaled to zero (Finalising, then Succeeded). No action ever scales the primary:
//! its replicas are the user's (`serin.dev/desired-replicas`).

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::weights::Weights;
use crate::spec::{CanarySpec, Strategy};

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
    /// Phases of an ongoing analysis, which a new revision restarts, an abort ends and a
    /// pause holds.
    pub fn is_analysing(self) -> bool {
        matches!(
            self,
            Phase::Waiting | Phase::Progressing | Phase::WaitingPromotion
        )
    }

    /// Phases with nothing to do until a new revision arrives.
    fn is_idle(self) -> bool {
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
}

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
}

impl MetricCheck {
    /// `None` when the check passes (or is skipped), else what failed, with the value.
    fn failure(&self) -> Option<String> {
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
    fn measured(&self) -> bool {
        self.value.is_some_and(|v| !v.is_nan())
    }

    fn describe(&self) -> String {
        match self.value.filter(|v| !v.is_nan()) {
            Some(v) => format!("{} {v:.2}{}", self.name, self.unit),
            None => format!("{} no data", self.name),
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
        },
        MetricCheck {
            name: "request-duration".into(),
            unit: "ms".into(),
            value: latency_ms,
            min: None,
            max: Some(max_latency),
            no_data: NoData::Fail,
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
    /// The weights the router object has now; `None` when it is missing or unreadable.
    pub router: Option<Weights>,
    /// Measured this step, in answer to [`Action::RunChecks`].
    pub checks: Option<Vec<MetricCheck>>,
    pub gates: Gates,
    pub requests: Requests,
}

/// Webhook kinds the machine calls (SPEC, `AnalysisTemplate.webhooks[]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HookKind {
    ConfirmRollout,
    PreRollout,
    ConfirmTrafficIncrease,
    ConfirmPromotion,
    /// Polled once per interval while a release waits at a gate or is analysed; a success
    /// asks for a rollback.
    Rollback,
    /// A notification after Succeeded or Failed; its result is not awaited.
    PostRollout,
}

impl HookKind {
    /// Gates (and the `rollback` poll) answer `step` through [`Gates`]; the others are
    /// notifications.
    pub fn is_gate(self) -> bool {
        !matches!(self, HookKind::PostRollout)
    }
}

/// Whether an Event reports normal progress or a problem.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

/// What the executor must do, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Route traffic; always first in the list when present.
    SetWeights(Weights),
    /// Scale the canary (the user's Deployment) to this many replicas.
    ScaleCanary(i32),
    ScaleCanaryToZero,
    /// Record this count as the user's request (`serin.dev/desired-replicas` on the
    /// Deployment), which sizes the primary: a `kubectl scale` between releases.
    RecordDesiredReplicas(i32),
    /// Measure the checks and call `step` again with `Observations::checks`.
    RunChecks,
    /// Run the webhooks of this kind; for gates, call `step` again with the result.
    CallHook(HookKind),
    /// Copy the canary's template (and tracked configs) to the primary, if the canary still
    /// runs this revision.
    CopyToPrimary {
        revision: String,
    },
    /// Opting out is complete on the original's side: point the apex Service back at the
    /// original's pods, then delete the primary, the router and the other Services.
    RemoveMachinery,
    /// Call `step` again after this long even without a watch event.
    RequeueAfter(Duration),
    /// Record an Event on the Deployment and the Canary.
    Event {
        type_: EventType,
        reason: String,
        message: String,
    },
}

/// One step of the release: what to do and the status to write.
pub fn step(
    status: &ReleaseStatus,
    obs: &Observations,
    now: Time,
    spec: &CanarySpec,
) -> (Vec<Action>, ReleaseStatus) {
    let mut run = Step {
        status: status.clone(),
        obs,
        now,
        spec,
        actions: Vec::new(),
        waiting_on_executor: false,
    };
    run.advance();
    run.finish()
}

struct Step<'a> {
    status: ReleaseStatus,
    obs: &'a Observations,
    now: Time,
    spec: &'a CanarySpec,
    actions: Vec<Action>,
    /// A RunChecks or gate CallHook is pending: the executor calls back at once.
    waiting_on_executor: bool,
}

impl Step<'_> {
    fn advance(&mut self) {
        let obs = self.obs;
        if !obs.opted_in {
            return self.terminate();
        }
        if self.status.phase == Phase::Terminating {
            // Opted in again before the machinery was removed: start over.
            self.transition(Phase::Initializing);
        }
        if self.status.phase == Phase::Initializing {
            return self.initialize();
        }
        if self.status.revision.as_deref() != Some(obs.revision.as_str()) {
            self.start_release();
        }
        if self.status.phase.is_analysing() {
            if obs.requests.abort {
                return self.roll_back("Aborted by request");
            }
            if obs.requests.paused {
                return;
            }
        }
        match self.status.phase {
            Phase::Initializing | Phase::Terminating => {}
            Phase::Initialized | Phase::Succeeded | Phase::Failed => self.idle(),
            Phase::Waiting => self.wait_for_confirm_rollout(),
            Phase::Progressing | Phase::WaitingPromotion => self.analyse(),
            Phase::Promoting => self.promote(),
            Phase::Finalising => self.finalise(),
        }
    }

    /// Opted out: restore the original to its desired replicas, and only once it is Ready
    /// let the executor remove the machinery, so the Service never lacks ready pods.
    fn terminate(&mut self) {
        let canary = &self.obs.canary;
        if self.status.phase != Phase::Terminating {
            self.transition(Phase::Terminating);
            self.event(
                EventType::Normal,
                "Terminating",
                format!(
                    "Opted out: restoring the Deployment to {} replicas before removing the primary",
                    canary.desired_replicas
                ),
            );
        }
        if canary.replicas != canary.desired_replicas {
            self.actions
                .push(Action::ScaleCanary(canary.desired_replicas));
        }
        if canary.ready || canary.desired_replicas == 0 {
            self.actions.push(Action::RemoveMachinery);
        }
    }

    /// The primary must be Ready before the original is scaled to zero.
    fn initialize(&mut self) {
        let obs = self.obs;
        if !obs.primary.ready {
            return;
        }
        // The primary runs what it was created from; if the template changed since, the next
        // step sees a new revision and releases it.
        let promoted = obs
            .primary
            .revision
            .clone()
            .unwrap_or_else(|| obs.revision.clone());
        self.status.revision = Some(promoted.clone());
        self.status.last_promoted_revision = Some(promoted.clone());
        self.status.canary_weight = 0;
        self.transition(Phase::Initialized);
        self.actions.push(Action::ScaleCanaryToZero);
        self.event(
            EventType::Normal,
            "Initialized",
            format!(
                "The primary runs revision {promoted}, is Ready and serves all traffic; the \
                 canary is scaled to zero"
            ),
        );
    }

    /// A revision different from the one in the status starts (or restarts) a release.
    fn start_release(&mut self) {
        let new = self.obs.revision.clone();
        let message = match (self.status.phase, self.status.revision.as_deref()) {
            (phase, Some(old)) if !phase.is_idle() => {
                format!("New revision {new} during the release of {old}: restarting the analysis")
            }
            _ => format!("New revision {new} detected"),
        };
        self.status = ReleaseStatus {
            revision: Some(new),
            last_promoted_revision: self.status.last_promoted_revision.take(),
            ..ReleaseStatus::default()
        };
        self.transition(Phase::Waiting);
        self.event(EventType::Normal, "NewRevision", message);
    }

    fn idle(&mut self) {
        let canary = &self.obs.canary;
        if canary.replicas == 0 || !self.obs.primary.ready {
            return;
        }
        // Between releases the Deployment runs no pods. A count on it is either the release's
        // own size left by a crash between Finalising and scaling down, or the user's
        // `kubectl scale` (the scale subresource, which the mutating webhook does not see):
        // a request for the primary, as the same count in a manifest would be.
        if canary.replicas != canary.desired_replicas {
            self.actions
                .push(Action::RecordDesiredReplicas(canary.replicas));
            self.event(
                EventType::Normal,
                "Scaled",
                format!(
                    "The Deployment was scaled to {} replicas between releases: the primary \
                     runs {} from now on (was {}); the canary goes back to zero",
                    canary.replicas, canary.replicas, canary.desired_replicas
                ),
            );
        }
        self.actions.push(Action::ScaleCanaryToZero);
    }

    fn wait_for_confirm_rollout(&mut self) {
        // A rollback webhook may end a release held at the gate, as in Flagger: asked once per
        // interval, before the gate, as during the analysis.
        let polled = self.due();
        if polled && !self.poll_rollback_webhooks() {
            return;
        }
        match self.obs.gates.confirm_rollout {
            None => self.call_gate(HookKind::ConfirmRollout),
            Some(false) => {
                if polled {
                    self.hold();
                }
            }
            Some(true) => {
                self.transition(Phase::Progressing);
                // The first interval gives the canary time to become Ready.
                self.status.last_check_time = Some(MicroTime(self.now.0));
                self.actions
                    .push(Action::ScaleCanary(self.obs.canary.desired_replicas));
                self.event(
                    EventType::Normal,
                    "Progressing",
                    "Starting the canary analysis: scaling the canary up".into(),
                );
            }
        }
    }

    fn analyse(&mut self) {
        let obs = self.obs;
        if obs.canary.stalled {
            return self.roll_back("The canary did not become Ready before its progress deadline");
        }
        // Asked once per interval, before anything else of that interval.
        if self.due() && !self.poll_rollback_webhooks() {
            return;
        }
        if obs.canary.replicas == 0 && obs.canary.desired_replicas > 0 {
            // Resumes a start interrupted between the status write and the scale-up.
            self.actions
                .push(Action::ScaleCanary(obs.canary.desired_replicas));
        }
        if !obs.canary.ready {
            // Traffic is withdrawn by `finish`; an unready canary fails once per interval,
            // so one that never becomes Ready is rolled back after `threshold` intervals.
            if self.due() {
                self.fail_check("The canary is not Ready".into());
            }
            return;
        }
        if self.spec.skip_analysis {
            return self.start_promotion("Skipping the analysis (serin.dev/skip-analysis)");
        }
        if obs.requests.promote {
            return self.start_promotion("Promotion requested: skipping the rest of the analysis");
        }
        if !self.due() {
            return;
        }
        match self.spec.strategy() {
            Strategy::Canary => self.analyse_canary(),
            Strategy::BlueGreen | Strategy::ABTesting => self.analyse_iterations(),
        }
    }

    /// Canary strategy: `pre-rollout` at weight 0, then checks and a weight step per interval.
    fn analyse_canary(&mut self) {
        let weights = self.spec.weights();
        if self.status.canary_weight == 0 {
            match self.obs.gates.pre_rollout {
                None => return self.call_gate(HookKind::PreRollout),
                Some(false) => return self.fail_check("The pre-rollout webhook failed".into()),
                Some(true) => {}
            }
            let first = weights.first().copied().unwrap_or(self.spec.max_weight);
            return self.set_canary_weight(first, "pre-rollout webhooks passed".into());
        }
        let Some(summary) = self.run_checks() else {
            return;
        };
        let current = self.status.canary_weight;
        match weights.iter().copied().find(|w| *w > current) {
            Some(next) => match self.obs.gates.confirm_traffic_increase {
                None => self.call_gate(HookKind::ConfirmTrafficIncrease),
                Some(false) => self.hold(),
                Some(true) => self.set_canary_weight(next, summary),
            },
            None => self.confirm_promotion(summary),
        }
    }

    /// Blue/Green and A/B: `iterations` passing checks on the canary, no weight steps.
    ///
    /// Blue/Green checks the canary while it gets no user traffic (the switch comes with the
    /// promotion). A/B first routes the requests that match its rules to the canary, once
    /// `pre-rollout` has passed and `confirm-traffic-increase` opens, and checks from the
    /// next interval on, when the canary has served some of them.
    fn analyse_iterations(&mut self) {
        let ab = self.spec.strategy() == Strategy::ABTesting;
        let routing = self.status.canary_weight > 0;
        if self.status.iterations == 0 && !routing {
            match self.obs.gates.pre_rollout {
                None => return self.call_gate(HookKind::PreRollout),
                Some(false) => return self.fail_check("The pre-rollout webhook failed".into()),
                Some(true) => {}
            }
        }
        if ab && !routing {
            return match self.obs.gates.confirm_traffic_increase {
                None => self.call_gate(HookKind::ConfirmTrafficIncrease),
                Some(false) => self.hold(),
                Some(true) => {
                    self.status.canary_weight = 100;
                    self.hold();
                    self.event(
                        EventType::Normal,
                        "Progressing",
                        "Routing the requests that match serin.dev/match to the canary".into(),
                    );
                }
            };
        }
        let Some(summary) = self.run_checks() else {
            return;
        };
        let wanted = self.spec.iterations.unwrap_or(0);
        if self.status.iterations < wanted {
            self.status.iterations += 1;
        }
        if self.status.iterations < wanted {
            self.hold();
            return self.event(
                EventType::Normal,
                "Analysis",
                format!(
                    "Iteration {}/{wanted} passed: {summary}",
                    self.status.iterations
                ),
            );
        }
        self.confirm_promotion(summary);
    }

    /// Asks the `rollback` webhooks (the caller decides that this interval's poll is due):
    /// true when the release goes on because none asked for a rollback; false while their
    /// answer is awaited or once a rollback has begun.
    fn poll_rollback_webhooks(&mut self) -> bool {
        match self.obs.gates.rollback {
            None => {
                self.call_gate(HookKind::Rollback);
                false
            }
            Some(true) => {
                self.roll_back("A rollback webhook asked for a rollback");
                false
            }
            Some(false) => true,
        }
    }

    /// The analysis is complete: promote once `confirm-promotion` opens.
    fn confirm_promotion(&mut self, summary: String) {
        match self.obs.gates.confirm_promotion {
            None => self.call_gate(HookKind::ConfirmPromotion),
            Some(false) => {
                self.hold();
                if self.status.phase != Phase::WaitingPromotion {
                    self.transition(Phase::WaitingPromotion);
                    self.event(
                        EventType::Normal,
                        "WaitingPromotion",
                        format!("Analysis passed ({summary}); waiting for confirm-promotion"),
                    );
                }
            }
            Some(true) => {
                self.hold();
                if self.spec.strategy() == Strategy::BlueGreen {
                    // Blue/Green switches all traffic to the new version while the primary
                    // rolls out, as Flagger does.
                    self.status.canary_weight = 100;
                }
                self.start_promotion(&format!("Analysis passed: {summary}"));
            }
        }
    }

    fn start_promotion(&mut self, why: &str) {
        let revision = self.status.revision.clone().unwrap_or_default();
        self.transition(Phase::Promoting);
        self.actions.push(Action::CopyToPrimary {
            revision: revision.clone(),
        });
        self.event(
            EventType::Normal,
            "Promoting",
            format!("{why}. Copying revision {revision} to the primary"),
        );
    }

    /// Waits for the primary to run the promoted revision, Ready.
    fn promote(&mut self) {
        let revision = self.status.revision.clone().unwrap_or_default();
        let primary = &self.obs.primary;
        if primary.revision.as_deref() != Some(revision.as_str()) {
            // Repeated until it shows: the copy is idempotent (server-side apply).
            self.actions.push(Action::CopyToPrimary { revision });
            return;
        }
        if !primary.ready {
            return;
        }
        self.status.canary_weight = 0;
        self.transition(Phase::Finalising);
        self.actions.push(Action::ScaleCanaryToZero);
        self.event(
            EventType::Normal,
            "Finalising",
            format!("The primary runs revision {revision}: routing all traffic to it"),
        );
    }

    fn finalise(&mut self) {
        if self.obs.canary.replicas > 0 {
            self.actions.push(Action::ScaleCanaryToZero);
            return;
        }
        let revision = self.status.revision.clone().unwrap_or_default();
        self.status.last_promoted_revision = Some(revision.clone());
        self.transition(Phase::Succeeded);
        self.actions.push(Action::CallHook(HookKind::PostRollout));
        self.event(
            EventType::Normal,
            "Succeeded",
            format!("Promotion of revision {revision} completed"),
        );
    }

    /// Evaluates the checks of this interval; `None` when they are still to be measured or
    /// failed (already counted), else a summary of the measured values.
    fn run_checks(&mut self) -> Option<String> {
        let Some(checks) = self.obs.checks.as_ref() else {
            self.actions.push(Action::RunChecks);
            self.waiting_on_executor = true;
            return None;
        };
        self.status.last_checks = checks
            .iter()
            .map(|c| CheckValue {
                name: c.name.clone(),
                value: c.value.filter(|v| !v.is_nan()),
            })
            .collect();
        let summary = checks
            .iter()
            .map(MetricCheck::describe)
            .collect::<Vec<_>>()
            .join(", ");
        let failures: Vec<String> = checks.iter().filter_map(MetricCheck::failure).collect();
        if !failures.is_empty() {
            self.fail_check(format!("Check failed: {}", failures.join(", ")));
            return None;
        }
        // Every check skipped for want of data (`noData: skip` everywhere): nothing shows
        // the canary is healthy, and an unobserved canary is never advanced or promoted.
        if !checks.iter().any(MetricCheck::measured) {
            self.fail_check(format!(
                "No check measured a value ({summary}; noData: skip leaves each out, but an \
                 interval needs at least one measured value to pass)"
            ));
            return None;
        }
        Some(summary)
    }

    fn set_canary_weight(&mut self, weight: u32, why: String) {
        self.status.canary_weight = weight.min(100);
        self.hold();
        self.event(
            EventType::Normal,
            "Progressing",
            format!("Advancing the canary weight to {weight}% ({why})"),
        );
    }

    /// This interval's work is done; the next is due one interval from now.
    fn hold(&mut self) {
        self.status.last_check_time = Some(MicroTime(self.now.0));
    }

    fn fail_check(&mut self, message: String) {
        self.status.failed_checks += 1;
        self.hold();
        let (failed, threshold) = (self.status.failed_checks, self.spec.threshold);
        self.event(
            EventType::Warning,
            "CheckFailed",
            format!("{message} ({failed}/{threshold} failed checks)"),
        );
        if failed >= threshold {
            self.roll_back(&format!(
                "{failed} failed checks reached the threshold of {threshold}"
            ));
        }
    }

    fn roll_back(&mut self, why: &str) {
        let values = self
            .status
            .last_checks
            .iter()
            .map(|c| match c.value {
                Some(v) => format!("{} {v:.2}", c.name),
                None => format!("{} no data", c.name),
            })
            .collect::<Vec<_>>();
        let measured = match values.is_empty() {
            true => String::new(),
            false => format!(" (last values: {})", values.join(", ")),
        };
        self.status.canary_weight = 0;
        self.transition(Phase::Failed);
        self.actions.push(Action::ScaleCanaryToZero);
        self.actions.push(Action::CallHook(HookKind::PostRollout));
        self.event(
            EventType::Warning,
            "RolledBack",
            format!(
                "Rolling back revision {}: {why}{measured}",
                self.status.revision.as_deref().unwrap_or("?")
            ),
        );
    }

    fn call_gate(&mut self, kind: HookKind) {
        self.actions.push(Action::CallHook(kind));
        self.waiting_on_executor = true;
    }

    fn due(&self) -> bool {
        self.until_due().is_zero()
    }

    /// Time left before the next interval's work; zero when due.
    fn until_due(&self) -> Duration {
        let interval = self.spec.interval.as_millis();
        let Some(last) = self.status.last_check_time.as_ref() else {
            return Duration::ZERO;
        };
        let elapsed = self
            .now
            .0
            .as_millisecond()
            .saturating_sub(last.0.as_millisecond());
        // A clock that went backwards counts as no time elapsed.
        let elapsed = u64::try_from(elapsed).unwrap_or(0);
        Duration::from_millis(interval.saturating_sub(elapsed))
    }

    fn transition(&mut self, phase: Phase) {
        if self.status.phase != phase {
            self.status.phase = phase;
            self.status.last_transition_time = Some(self.now.clone());
        }
    }

    fn event(&mut self, type_: EventType, reason: &str, message: String) {
        self.actions.push(Action::Event {
            type_,
            reason: reason.into(),
            message,
        });
    }

    /// The weights the router should have in the new status, or `None` to leave it alone
    /// (before the primary is Ready, and while opting out).
    fn desired_weights(&self) -> Option<Weights> {
        match self.status.phase {
            Phase::Initializing | Phase::Terminating => None,
            Phase::Progressing | Phase::WaitingPromotion | Phase::Promoting
                if self.obs.canary.ready =>
            {
                Some(Weights::to_canary(self.status.canary_weight))
            }
            _ => Some(Weights::ALL_PRIMARY),
        }
    }

    fn finish(mut self) -> (Vec<Action>, ReleaseStatus) {
        let desired = self.desired_weights();
        if let Some(weights) = desired.filter(|w| self.obs.router != Some(*w)) {
            // First, so traffic leaves the canary before it is scaled down.
            self.actions.insert(0, Action::SetWeights(weights));
        }
        let phase = self.status.phase;
        if !self.waiting_on_executor && !phase.is_idle() {
            let analysing = phase.is_analysing() && self.status.last_check_time.is_some();
            let after = match analysing {
                true => self.until_due(),
                false => Duration::ZERO,
            };
            // At least a second, so a zero interval cannot make a busy loop.
            let interval = Duration::from(self.spec.interval).max(Duration::from_secs(1));
            let after = match after.is_zero() {
                true => interval,
                false => after,
            };
            self.actions.push(Action::RequeueAfter(after));
        }
        (self.actions, self.status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;
    use proptest::prelude::{any, prop, prop_assert, prop_assert_eq, proptest};
    use proptest::strategy::Strategy as _;

    /// A fake cluster that carries out actions the way the executor will.
    #[derive(Clone, Debug)]
    struct World {
        revision: String,
        opted_in: bool,
        canary_replicas: i32,
        /// `serin.dev/desired-replicas` on the Deployment.
        desired_replicas: i32,
        /// Whether the canary's pods become Ready once it has replicas.
        canary_healthy: bool,
        canary_stalled: bool,
        primary_revision: Option<String>,
        primary_ready: bool,
        router: Option<Weights>,
        success_rate: Option<f64>,
        latency_ms: Option<f64>,
        /// The checks' no-data policy (the builtin checks' is `Fail`).
        no_data: NoData,
        gates: Gates,
        requests: Requests,
        status: ReleaseStatus,
        seconds: i64,
        spec: CanarySpec,
        /// Every action ever emitted, in order.
        log: Vec<Action>,
    }

    impl World {
        /// An opted-in Deployment whose primary runs `rev1`, already Initialized.
        fn initialized(spec: CanarySpec) -> Self {
            let mut world = World {
                revision: "rev1".into(),
                opted_in: true,
                canary_replicas: 3,
                desired_replicas: 3,
                canary_healthy: true,
                canary_stalled: false,
                primary_revision: Some("rev1".into()),
                primary_ready: true,
                router: None,
                success_rate: Some(100.0),
                latency_ms: Some(100.0),
                no_data: NoData::Fail,
                gates: open_gates(),
                requests: Requests::default(),
                status: ReleaseStatus::default(),
                seconds: 1_700_000_000,
                spec,
                log: Vec::new(),
            };
            world.tick();
            assert_eq!(world.status.phase, Phase::Initialized);
            world
        }

        fn observe(&self, checks: Option<Vec<MetricCheck>>, gates: Gates) -> Observations {
            Observations {
                revision: self.revision.clone(),
                opted_in: self.opted_in,
                canary: CanaryObservation {
                    ready: self.canary_replicas > 0 && self.canary_healthy,
                    stalled: self.canary_stalled,
                    replicas: self.canary_replicas,
                    desired_replicas: self.desired_replicas,
                },
                primary: PrimaryObservation {
                    ready: self.primary_ready,
                    revision: self.primary_revision.clone(),
                },
                router: self.router,
                checks,
                gates,
                requests: self.requests,
            }
        }

        /// One reconcile: steps until no measurement or gate is pending, then lets one
        /// interval pass.
        fn tick(&mut self) {
            let mut checks = None;
            let mut gates = Gates::default();
            for _ in 0..10 {
                let obs = self.observe(checks.clone(), gates);
                let now = Time(Timestamp::from_second(self.seconds).unwrap_or_default());
                let (actions, status) = step(&self.status, &obs, now, &self.spec);
                self.status = status;
                let mut again = false;
                for action in &actions {
                    match action {
                        Action::SetWeights(w) => self.router = Some(*w),
                        Action::ScaleCanary(n) => self.canary_replicas = *n,
                        Action::ScaleCanaryToZero => self.canary_replicas = 0,
                        Action::CopyToPrimary { revision } => {
                            self.primary_revision = Some(revision.clone())
                        }
                        Action::RunChecks => {
                            let mut measured =
                                builtin_checks(&self.spec, self.success_rate, self.latency_ms);
                            for check in &mut measured {
                                check.no_data = self.no_data;
                            }
                            checks = Some(measured);
                            again = true;
                        }
                        Action::CallHook(kind) => {
                            let answer = |gate: Option<bool>| gate.or(Some(true));
                            match kind {
                                HookKind::ConfirmRollout => {
                                    gates.confirm_rollout = answer(self.gates.confirm_rollout)
                                }
                                HookKind::PreRollout => {
                                    gates.pre_rollout = answer(self.gates.pre_rollout)
                                }
                                HookKind::ConfirmTrafficIncrease => {
                                    gates.confirm_traffic_increase =
                                        answer(self.gates.confirm_traffic_increase)
                                }
                                HookKind::ConfirmPromotion => {
                                    gates.confirm_promotion = answer(self.gates.confirm_promotion)
                                }
                                // No rollback hook, or none asking: no rollback.
                                HookKind::Rollback => {
                                    gates.rollback = self.gates.rollback.or(Some(false))
                                }
                                HookKind::PostRollout => continue,
                            }
                            again = true;
                        }
                        Action::RecordDesiredReplicas(n) => self.desired_replicas = *n,
                        Action::RemoveMachinery
                        | Action::RequeueAfter(_)
                        | Action::Event { .. } => {}
                    }
                }
                self.log.extend(actions);
                if !again {
                    break;
                }
            }
            self.seconds += i64::try_from(self.spec.interval.as_millis() / 1000).unwrap_or(60);
        }

        /// Ticks until `phase` (at most `limit` ticks); the phases passed through.
        fn run_until(&mut self, phase: Phase, limit: usize) -> Vec<Phase> {
            let mut seen = vec![self.status.phase];
            for _ in 0..limit {
                if self.status.phase == phase {
                    break;
                }
                self.tick();
                if seen.last() != Some(&self.status.phase) {
                    seen.push(self.status.phase);
                }
            }
            seen
        }

        fn weights_set(&self) -> Vec<u32> {
            self.log
                .iter()
                .filter_map(|a| match a {
                    Action::SetWeights(w) => Some(w.canary()),
                    _ => None,
                })
                .collect()
        }

        fn events(&self, reason: &str) -> Vec<String> {
            self.log
                .iter()
                .filter_map(|a| match a {
                    Action::Event {
                        reason: r, message, ..
                    } if r == reason => Some(message.clone()),
                    _ => None,
                })
                .collect()
        }
    }

    fn open_gates() -> Gates {
        Gates {
            confirm_rollout: Some(true),
            pre_rollout: Some(true),
            confirm_traffic_increase: Some(true),
            confirm_promotion: Some(true),
            rollback: Some(false),
        }
    }

    fn blue_green() -> CanarySpec {
        CanarySpec {
            iterations: Some(3),
            ..spec()
        }
    }

    fn ab() -> CanarySpec {
        CanarySpec {
            provider: crate::spec::Provider::GatewayApi,
            iterations: Some(3),
            matches: vec![crate::spec::MatchRule::Cookie {
                name: "canary".into(),
            }],
            ..spec()
        }
    }

    /// The actions of one tick.
    fn tick_actions(world: &mut World) -> Vec<Action> {
        let before = world.log.len();
        world.tick();
        world.log[before..].to_vec()
    }

    fn spec() -> CanarySpec {
        CanarySpec {
            interval: crate::spec::Duration::from_secs(10),
            ..CanarySpec::defaults("web".into(), Some(9898))
        }
    }

    /// Initialized on rev1, then rev2 applied.
    fn releasing(spec: CanarySpec) -> World {
        let mut world = World::initialized(spec);
        world.revision = "rev2".into();
        world.log.clear();
        world
    }

    #[test]
    fn initialization_waits_for_a_ready_primary_before_scaling_the_original_down() {
        let mut world = World::initialized(spec());
        world.status = ReleaseStatus::default();
        (world.primary_ready, world.canary_replicas, world.router) = (false, 3, None);
        world.tick();
        assert_eq!(world.status.phase, Phase::Initializing);
        assert_eq!((world.canary_replicas, world.router), (3, None));
        world.primary_ready = true;
        world.tick();
        assert_eq!(world.status.phase, Phase::Initialized);
        assert_eq!(world.router, Some(Weights::ALL_PRIMARY));
        assert_eq!(world.canary_replicas, 0);
        assert_eq!(world.status.last_promoted_revision.as_deref(), Some("rev1"));
    }

    #[test]
    fn a_good_release_walks_every_weight_step_and_succeeds() {
        let mut world = releasing(spec());
        let phases = world.run_until(Phase::Succeeded, 30);
        assert_eq!(
            phases,
            vec![
                Phase::Initialized,
                Phase::Progressing,
                Phase::Promoting,
                Phase::Finalising,
                Phase::Succeeded
            ]
        );
        assert_eq!(world.weights_set(), vec![10, 20, 30, 40, 50, 0]);
        assert_eq!(world.primary_revision.as_deref(), Some("rev2"));
        assert_eq!(world.status.last_promoted_revision.as_deref(), Some("rev2"));
        assert_eq!(world.router, Some(Weights::ALL_PRIMARY));
        assert_eq!(world.canary_replicas, 0);
        assert_eq!(world.status.failed_checks, 0);
    }

    #[test]
    fn weight_advances_carry_the_measured_values() {
        let mut world = releasing(spec());
        world.run_until(Phase::Succeeded, 30);
        let advances = world.events("Progressing");
        assert!(
            advances
                .iter()
                .any(|m| m.contains("Advancing the canary weight to 20%")
                    && m.contains("request-success-rate 100.00%")
                    && m.contains("request-duration 100.00ms")),
            "{advances:?}"
        );
    }

    #[test]
    fn a_failing_success_rate_rolls_back_after_threshold_checks() {
        let mut world = releasing(spec());
        world.success_rate = Some(70.0);
        world.run_until(Phase::Failed, 30);
        assert_eq!(world.status.phase, Phase::Failed);
        assert_eq!(world.status.failed_checks, 5);
        assert_eq!(world.router, Some(Weights::ALL_PRIMARY));
        assert_eq!(world.canary_replicas, 0);
        assert_eq!(
            world.primary_revision.as_deref(),
            Some("rev1"),
            "primary untouched"
        );
        assert_eq!(world.weights_set(), vec![10, 0]);
        let rollback = world.events("RolledBack");
        assert_eq!(rollback.len(), 1);
        assert!(
            rollback[0].contains("request-success-rate 70.00"),
            "{rollback:?}"
        );
        let failures = world.events("CheckFailed");
        assert!(
            failures[0].contains("request-success-rate 70.00% < 99%"),
            "{failures:?}"
        );
    }

    #[test]
    fn a_latency_breach_rolls_back() {
        let mut world = releasing(spec());
        world.latency_ms = Some(812.0);
        world.run_until(Phase::Failed, 30);
        assert_eq!(world.status.phase, Phase::Failed);
        assert!(world.events("CheckFailed")[0].contains("request-duration 812.00ms > 500ms"));
    }

    #[test]
    fn no_data_counts_as_a_failed_check() {
        let mut world = releasing(spec());
        world.success_rate = None;
        world.run_until(Phase::Failed, 30);
        assert_eq!(world.status.phase, Phase::Failed);
        assert!(world.events("CheckFailed")[0].contains("request-success-rate: no data"));
    }

    #[test]
    fn nan_from_prometheus_is_no_data() {
        let mut world = releasing(spec());
        world.success_rate = Some(f64::NAN);
        world.run_until(Phase::Failed, 30);
        assert_eq!(world.status.phase, Phase::Failed);
    }

    #[test]
    fn an_interval_where_every_check_was_skipped_for_no_data_fails_and_never_promotes() {
        let mut world = releasing(spec());
        world.no_data = NoData::Skip;
        world.success_rate = None;
        world.latency_ms = None;
        world.run_until(Phase::Failed, 30);
        assert_eq!(world.status.phase, Phase::Failed);
        // The first step comes with pre-rollout, before any check; no step after it.
        assert_eq!(world.weights_set(), [10, 0]);
        let failed = world.events("CheckFailed");
        assert_eq!(failed.len(), 5);
        assert!(
            failed[0].contains("No check measured a value"),
            "{}",
            failed[0]
        );
        assert!(world.events("Promoting").is_empty());
    }

    #[test]
    fn one_measured_value_is_enough_when_the_other_checks_are_skipped() {
        let mut world = releasing(spec());
        world.no_data = NoData::Skip;
        world.latency_ms = None;
        world.run_until(Phase::Succeeded, 30);
        assert_eq!(world.status.phase, Phase::Succeeded);
        assert!(world.events("CheckFailed").is_empty());
    }

    #[test]
    fn a_skipped_metric_without_data_does_not_fail() {
        let check = MetricCheck {
            name: "errors".into(),
            unit: String::new(),
            value: None,
            min: None,
            max: Some(1.0),
            no_data: NoData::Skip,
        };
        assert_eq!(check.failure(), None);
    }

    #[test]
    fn a_failing_pre_rollout_webhook_rolls_back_after_threshold_tries() {
        let mut world = releasing(spec());
        world.gates.pre_rollout = Some(false);
        world.run_until(Phase::Failed, 30);
        assert_eq!(world.status.phase, Phase::Failed);
        assert_eq!(world.weights_set(), Vec::<u32>::new(), "never got traffic");
        assert_eq!(world.events("CheckFailed").len(), 5);
    }

    #[test]
    fn a_closed_confirm_rollout_gate_holds_the_release_in_waiting() {
        let mut world = releasing(spec());
        world.gates.confirm_rollout = Some(false);
        world.run_until(Phase::Progressing, 10);
        assert_eq!(world.status.phase, Phase::Waiting);
        assert_eq!(world.canary_replicas, 0);
        world.gates.confirm_rollout = Some(true);
        world.run_until(Phase::Succeeded, 30);
        assert_eq!(world.status.phase, Phase::Succeeded);
    }

    #[test]
    fn a_closed_confirm_promotion_gate_holds_at_max_weight_until_it_opens() {
        let mut world = releasing(spec());
        world.gates.confirm_promotion = Some(false);
        world.run_until(Phase::WaitingPromotion, 30);
        for _ in 0..5 {
            world.tick();
        }
        assert_eq!(world.status.phase, Phase::WaitingPromotion);
        assert_eq!(world.router, Some(Weights::to_canary(50)));
        assert_eq!(world.primary_revision.as_deref(), Some("rev1"));
        world.gates.confirm_promotion = Some(true);
        world.run_until(Phase::Succeeded, 10);
        assert_eq!(world.status.phase, Phase::Succeeded);
    }

    #[test]
    fn a_closed_traffic_increase_gate_holds_the_weight() {
        let mut world = releasing(spec());
        world.gates.confirm_traffic_increase = Some(false);
        for _ in 0..10 {
            world.tick();
        }
        assert_eq!(world.status.canary_weight, 10);
        assert_eq!(world.status.phase, Phase::Progressing);
    }

    #[test]
    fn a_new_revision_mid_analysis_restarts_from_weight_zero() {
        let mut world = releasing(spec());
        for _ in 0..5 {
            world.tick();
        }
        assert!(world.status.canary_weight >= 20);
        world.success_rate = Some(98.0);
        world.tick();
        assert_eq!(world.status.failed_checks, 1);
        world.revision = "rev3".into();
        world.success_rate = Some(100.0);
        world.tick();
        assert_eq!(world.status.revision.as_deref(), Some("rev3"));
        assert_eq!(
            (world.status.canary_weight, world.status.failed_checks),
            (0, 0)
        );
        assert_eq!(world.router, Some(Weights::ALL_PRIMARY));
        assert!(
            world
                .events("NewRevision")
                .iter()
                .any(|m| m.contains("restarting"))
        );
        world.run_until(Phase::Succeeded, 30);
        assert_eq!(world.primary_revision.as_deref(), Some("rev3"));
    }

    #[test]
    fn a_canary_that_is_not_ready_gets_no_traffic() {
        let mut world = releasing(spec());
        world.canary_healthy = false;
        for _ in 0..3 {
            world.tick();
        }
        assert_eq!(world.status.canary_weight, 0);
        assert!(world.weights_set().iter().all(|w| *w == 0));
    }

    #[test]
    fn a_canary_that_stops_being_ready_loses_its_traffic_and_gets_it_back() {
        let mut world = releasing(spec());
        for _ in 0..4 {
            world.tick();
        }
        let weight = world.status.canary_weight;
        assert!(weight > 0);
        world.canary_healthy = false;
        world.tick();
        assert_eq!(world.router, Some(Weights::ALL_PRIMARY));
        assert_eq!(world.status.canary_weight, weight, "position kept");
        world.canary_healthy = true;
        world.tick();
        assert!(world.router.is_some_and(|w| w.canary() >= weight));
    }

    #[test]
    fn a_canary_that_never_becomes_ready_is_rolled_back() {
        let mut world = releasing(spec());
        world.canary_healthy = false;
        world.run_until(Phase::Failed, 30);
        assert_eq!(world.status.phase, Phase::Failed);
    }

    #[test]
    fn a_stalled_canary_is_rolled_back_at_once() {
        let mut world = releasing(spec());
        world.tick();
        world.canary_stalled = true;
        world.tick();
        assert_eq!(world.status.phase, Phase::Failed);
    }

    #[test]
    fn skip_analysis_promotes_without_checks() {
        let mut world = releasing(CanarySpec {
            skip_analysis: true,
            ..spec()
        });
        world.run_until(Phase::Succeeded, 10);
        assert_eq!(world.status.phase, Phase::Succeeded);
        assert!(!world.log.contains(&Action::RunChecks));
        assert!(world.weights_set().iter().all(|w| *w == 0));
    }

    #[test]
    fn abort_rolls_back_and_promote_skips_the_rest() {
        let mut world = releasing(spec());
        world.tick();
        world.tick();
        world.requests.abort = true;
        world.tick();
        assert_eq!(world.status.phase, Phase::Failed);
        assert!(world.events("RolledBack")[0].contains("Aborted by request"));

        let mut world = releasing(spec());
        world.tick();
        world.tick();
        world.requests.promote = true;
        world.run_until(Phase::Succeeded, 10);
        assert_eq!(world.primary_revision.as_deref(), Some("rev2"));
    }

    #[test]
    fn pause_holds_the_weight_and_resume_continues() {
        let mut world = releasing(spec());
        for _ in 0..3 {
            world.tick();
        }
        let weight = world.status.canary_weight;
        world.requests.paused = true;
        for _ in 0..5 {
            world.tick();
        }
        assert_eq!(world.status.canary_weight, weight);
        world.requests.paused = false;
        world.run_until(Phase::Succeeded, 30);
        assert_eq!(world.status.phase, Phase::Succeeded);
    }

    #[test]
    fn a_failed_revision_is_not_retried_until_a_new_one_arrives() {
        let mut world = releasing(spec());
        world.success_rate = Some(0.0);
        world.run_until(Phase::Failed, 30);
        for _ in 0..3 {
            world.tick();
        }
        assert_eq!(world.status.phase, Phase::Failed);
        world.revision = "rev3".into();
        world.success_rate = Some(100.0);
        world.run_until(Phase::Succeeded, 30);
        assert_eq!(world.status.phase, Phase::Succeeded);
    }

    #[test]
    fn checks_wait_for_the_interval() {
        let mut world = releasing(spec());
        world.tick();
        world.tick();
        let weight = world.status.canary_weight;
        // Called again at the same instant (a watch event): nothing advances.
        world.seconds -= 10;
        world.tick();
        assert_eq!(world.status.canary_weight, weight);
    }

    #[test]
    fn a_restart_resumes_at_the_same_weight_and_check_count() {
        let mut world = releasing(spec());
        for _ in 0..3 {
            world.tick();
        }
        world.success_rate = Some(50.0);
        world.tick();
        let saved = serde_json::to_value(&world.status).unwrap_or_default();
        let restored: ReleaseStatus = serde_json::from_value(saved).unwrap_or_default();
        assert_eq!(restored, world.status);
        assert_eq!(restored.failed_checks, 1);
        assert!(restored.canary_weight > 0);
    }

    #[test]
    fn an_interval_is_never_shortened_by_storing_the_status() {
        let mut world = releasing(spec());
        world.gates.confirm_rollout = Some(false);
        world.tick();
        // Held at 0.7 s past a second; read back from the Canary, still 0.7 s past it.
        let held = Timestamp::from_millisecond(1_700_000_100_700).unwrap_or_default();
        world.status.last_check_time = Some(MicroTime(held));
        let stored = serde_json::to_value(&world.status).unwrap_or_default();
        let read: ReleaseStatus = serde_json::from_value(stored).unwrap_or_default();
        assert_eq!(read.last_check_time, world.status.last_check_time);
        // 9.5 s later the 10 s interval is not over: no rollback poll yet, and a requeue for
        // the half second left.
        let now = Time(Timestamp::from_millisecond(1_700_000_110_200).unwrap_or_default());
        let obs = world.observe(None, Gates::default());
        let (actions, _) = step(&read, &obs, now, &world.spec);
        assert!(!actions.contains(&Action::CallHook(HookKind::Rollback)));
        let (actions, _) = step(
            &read,
            &Observations {
                gates: Gates {
                    confirm_rollout: Some(false),
                    ..Gates::default()
                },
                ..obs
            },
            Time(Timestamp::from_millisecond(1_700_000_110_200).unwrap_or_default()),
            &world.spec,
        );
        assert!(
            actions.contains(&Action::RequeueAfter(Duration::from_millis(500))),
            "{actions:?}"
        );
    }

    #[test]
    fn status_phases_are_spelled_as_in_the_spec() {
        let names: Vec<String> = [
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
        ]
        .iter()
        .filter_map(|p| serde_json::to_value(p).ok())
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
        assert_eq!(
            names.join(","),
            "Initializing,Initialized,Waiting,Progressing,WaitingPromotion,Promoting,Finalising,Succeeded,Failed,Terminating"
        );
    }

    #[test]
    fn blue_green_runs_iterations_then_switches_all_traffic_and_promotes() {
        let mut world = releasing(CanarySpec {
            iterations: Some(3),
            ..spec()
        });
        world.run_until(Phase::Succeeded, 20);
        assert_eq!(world.status.phase, Phase::Succeeded);
        assert_eq!(world.weights_set(), vec![100, 0]);
        assert_eq!(world.events("Analysis").len(), 2);
    }

    #[test]
    fn blue_green_checks_the_canary_without_traffic_until_the_switch() {
        let mut world = releasing(blue_green());
        let mut checks = 0;
        while world.status.phase != Phase::Promoting {
            let actions = tick_actions(&mut world);
            checks += actions.iter().filter(|a| **a == Action::RunChecks).count();
            if world.status.phase == Phase::Progressing {
                assert_eq!(
                    world.router,
                    Some(Weights::ALL_PRIMARY),
                    "traffic before the switch"
                );
            }
            assert!(world.log.len() < 500, "no promotion: {:?}", world.status);
        }
        assert_eq!(checks, 3, "one check per iteration");
        assert_eq!(world.router, Some(Weights::ALL_CANARY), "switched at once");
        assert_eq!(world.status.iterations, 3);
        world.run_until(Phase::Succeeded, 10);
        assert_eq!(world.router, Some(Weights::ALL_PRIMARY));
        assert_eq!(world.primary_revision.as_deref(), Some("rev2"));
    }

    #[test]
    fn blue_green_failing_checks_roll_back_without_ever_switching() {
        let mut world = releasing(blue_green());
        world.success_rate = Some(90.0);
        world.run_until(Phase::Failed, 30);
        assert_eq!(world.status.phase, Phase::Failed);
        assert_eq!(world.weights_set(), Vec::<u32>::new(), "never got traffic");
        assert_eq!(world.primary_revision.as_deref(), Some("rev1"));
    }

    #[test]
    fn ab_routes_matching_requests_to_the_canary_then_checks_iterations_and_promotes() {
        let mut world = releasing(ab());
        // The interval that routes the matching requests runs no check: the canary has
        // served none of them yet.
        let mut routing_tick = Vec::new();
        while world.status.canary_weight == 0 {
            routing_tick = tick_actions(&mut world);
            assert!(world.log.len() < 200, "never routed: {:?}", world.status);
        }
        assert!(
            routing_tick.contains(&Action::SetWeights(Weights::ALL_CANARY)),
            "{routing_tick:?}"
        );
        assert!(
            !routing_tick.contains(&Action::RunChecks),
            "{routing_tick:?}"
        );
        assert!(
            world
                .events("Progressing")
                .iter()
                .any(|m| m.contains("match serin.dev/match")),
            "{:?}",
            world.events("Progressing")
        );
        assert_eq!(world.status.iterations, 0);
        let phases = world.run_until(Phase::Succeeded, 20);
        assert_eq!(
            phases,
            [
                Phase::Progressing,
                Phase::Promoting,
                Phase::Finalising,
                Phase::Succeeded
            ]
        );
        // Matching requests stay on the canary until the primary runs the new revision.
        assert_eq!(world.weights_set(), [100, 0]);
        assert_eq!(world.events("Analysis").len(), 2);
        assert_eq!(
            world
                .log
                .iter()
                .filter(|a| **a == Action::RunChecks)
                .count(),
            3
        );
        assert_eq!(world.primary_revision.as_deref(), Some("rev2"));
    }

    #[test]
    fn ab_waits_for_confirm_traffic_increase_before_routing_matching_requests() {
        let mut world = releasing(ab());
        world.gates.confirm_traffic_increase = Some(false);
        for _ in 0..6 {
            world.tick();
        }
        assert_eq!(world.status.phase, Phase::Progressing);
        assert_eq!(world.status.canary_weight, 0);
        assert_eq!(world.weights_set(), Vec::<u32>::new());
        assert!(!world.log.contains(&Action::RunChecks));
        world.gates.confirm_traffic_increase = Some(true);
        world.run_until(Phase::Succeeded, 20);
        assert_eq!(world.status.phase, Phase::Succeeded);
    }

    #[test]
    fn ab_failing_checks_take_matching_requests_off_the_canary_and_roll_back() {
        let mut world = releasing(ab());
        world.success_rate = Some(50.0);
        world.run_until(Phase::Failed, 30);
        assert_eq!(world.status.phase, Phase::Failed);
        assert_eq!(world.status.failed_checks, 5);
        assert_eq!(world.weights_set(), [100, 0]);
        assert_eq!(world.router, Some(Weights::ALL_PRIMARY));
        assert_eq!(world.primary_revision.as_deref(), Some("rev1"));
    }

    #[test]
    fn a_pre_rollout_failure_keeps_ab_requests_off_the_canary() {
        let mut world = releasing(ab());
        world.gates.pre_rollout = Some(false);
        world.run_until(Phase::Failed, 30);
        assert_eq!(world.status.phase, Phase::Failed);
        assert_eq!(world.weights_set(), Vec::<u32>::new());
    }

    #[test]
    fn a_rollback_webhook_that_answers_success_rolls_back_in_every_strategy() {
        for spec in [spec(), blue_green(), ab()] {
            let mut world = releasing(spec.clone());
            for _ in 0..3 {
                world.tick();
            }
            assert_eq!(world.status.phase, Phase::Progressing, "{spec:?}");
            world.gates.rollback = Some(true);
            world.tick();
            assert_eq!(world.status.phase, Phase::Failed, "{spec:?}");
            assert_eq!(world.router, Some(Weights::ALL_PRIMARY));
            assert_eq!(world.canary_replicas, 0);
            assert_eq!(world.primary_revision.as_deref(), Some("rev1"));
            assert!(
                world.events("RolledBack")[0].contains("A rollback webhook asked for a rollback"),
                "{:?}",
                world.events("RolledBack")
            );
        }
    }

    #[test]
    fn rollback_webhooks_are_polled_once_per_interval_and_only_while_a_release_is_under_way() {
        let mut world = releasing(spec());
        let polls = |actions: &[Action]| {
            actions
                .iter()
                .filter(|a| **a == Action::CallHook(HookKind::Rollback))
                .count()
        };
        // Waiting → Progressing: asked as the release starts; the first interval of the
        // analysis then gives the canary time to become Ready.
        assert_eq!(polls(&tick_actions(&mut world)), 1);
        for _ in 0..3 {
            assert_eq!(polls(&tick_actions(&mut world)), 1);
        }
        // A watch event at the same instant: not due, not polled.
        world.seconds -= 10;
        assert_eq!(polls(&tick_actions(&mut world)), 0);
        world.run_until(Phase::Succeeded, 30);
        world.gates.rollback = Some(true);
        let idle = tick_actions(&mut world);
        assert_eq!(polls(&idle), 0);
        assert_eq!(world.status.phase, Phase::Succeeded);
    }

    #[test]
    fn a_rollback_webhook_rolls_back_a_release_waiting_at_a_closed_confirm_rollout_gate() {
        for spec in [spec(), blue_green(), ab()] {
            let mut world = releasing(spec.clone());
            world.gates.confirm_rollout = Some(false);
            for _ in 0..3 {
                world.tick();
            }
            assert_eq!(world.status.phase, Phase::Waiting, "{spec:?}");
            world.gates.rollback = Some(true);
            world.tick();
            assert_eq!(world.status.phase, Phase::Failed, "{spec:?}");
            assert_eq!(world.router, Some(Weights::ALL_PRIMARY));
            assert_eq!(world.canary_replicas, 0, "never scaled up");
            assert_eq!(world.weights_set(), Vec::<u32>::new(), "never got traffic");
            assert_eq!(world.primary_revision.as_deref(), Some("rev1"));
            assert!(
                world.events("RolledBack")[0].contains("A rollback webhook asked for a rollback"),
                "{:?}",
                world.events("RolledBack")
            );
            // Failed stays Failed until a new revision, even with the gate open again.
            world.gates.confirm_rollout = Some(true);
            world.tick();
            assert_eq!(world.status.phase, Phase::Failed);
        }
    }

    #[test]
    fn rollback_webhooks_are_polled_once_per_interval_while_waiting_at_a_closed_gate() {
        let mut world = releasing(spec());
        world.gates.confirm_rollout = Some(false);
        let polls = |actions: &[Action]| {
            actions
                .iter()
                .filter(|a| **a == Action::CallHook(HookKind::Rollback))
                .count()
        };
        for _ in 0..3 {
            let actions = tick_actions(&mut world);
            assert_eq!(polls(&actions), 1, "{actions:?}");
            // The next poll is one interval away, not sooner.
            assert!(
                actions.contains(&Action::RequeueAfter(Duration::from_secs(10))),
                "{actions:?}"
            );
        }
        assert_eq!(world.status.phase, Phase::Waiting);
        // Watch events within the interval ask confirm-rollout again, not the rollback hooks.
        world.seconds -= 10;
        for _ in 0..3 {
            let actions = tick_actions(&mut world);
            assert_eq!(polls(&actions), 0, "{actions:?}");
            assert!(actions.contains(&Action::CallHook(HookKind::ConfirmRollout)));
            world.seconds -= 10;
        }
        // The gate opens within an interval: the analysis starts without another poll.
        world.gates.confirm_rollout = Some(true);
        let opened = tick_actions(&mut world);
        assert_eq!(world.status.phase, Phase::Progressing);
        assert_eq!(polls(&opened), 0, "{opened:?}");
    }

    #[test]
    fn a_rollback_webhook_ends_a_release_held_at_a_closed_traffic_increase_gate() {
        for spec in [spec(), ab()] {
            let mut world = releasing(spec.clone());
            world.gates.confirm_traffic_increase = Some(false);
            for _ in 0..6 {
                world.tick();
            }
            assert_eq!(world.status.phase, Phase::Progressing, "{spec:?}");
            world.gates.rollback = Some(true);
            world.tick();
            assert_eq!(world.status.phase, Phase::Failed, "{spec:?}");
            assert_eq!(world.router, Some(Weights::ALL_PRIMARY));
        }
    }

    #[test]
    fn a_paused_release_polls_no_rollback_webhook() {
        let mut world = releasing(spec());
        world.gates.confirm_rollout = Some(false);
        world.tick();
        world.requests.paused = true;
        world.gates.rollback = Some(true);
        for _ in 0..3 {
            let actions = tick_actions(&mut world);
            assert!(
                !actions.contains(&Action::CallHook(HookKind::Rollback)),
                "{actions:?}"
            );
        }
        assert_eq!(world.status.phase, Phase::Waiting);
    }

    #[test]
    fn a_rollback_webhook_holds_a_waiting_promotion_no_longer() {
        let mut world = releasing(spec());
        world.gates.confirm_promotion = Some(false);
        world.run_until(Phase::WaitingPromotion, 30);
        world.gates.rollback = Some(true);
        world.tick();
        assert_eq!(world.status.phase, Phase::Failed);
    }

    #[test]
    fn opting_out_restores_the_original_before_removing_the_machinery() {
        let mut world = World::initialized(spec());
        world.opted_in = false;
        world.canary_healthy = false;
        world.log.clear();
        world.tick();
        assert_eq!(world.status.phase, Phase::Terminating);
        assert_eq!(world.canary_replicas, 3);
        assert!(!world.log.contains(&Action::RemoveMachinery));
        world.canary_healthy = true;
        world.tick();
        assert!(world.log.contains(&Action::RemoveMachinery));
        assert_eq!(
            world.router,
            Some(Weights::ALL_PRIMARY),
            "traffic untouched"
        );
    }

    /// Random observations, one per step.
    fn any_observations() -> impl proptest::strategy::Strategy<Value = Observations> {
        let gate = || proptest::option::of(any::<bool>());
        let metric = || proptest::option::of(0.0f64..1000.0);
        (
            (
                prop::sample::select(vec!["rev1", "rev2", "rev3"]),
                any::<bool>(),
                any::<bool>(),
                any::<bool>(),
                0i32..4,
            ),
            (
                any::<bool>(),
                proptest::option::of(prop::sample::select(vec!["rev1", "rev2", "rev3"])),
            ),
            proptest::option::of(0u32..=100),
            proptest::option::of((metric(), metric())),
            (gate(), gate(), gate(), gate(), gate()),
            (
                any::<bool>(),
                prop::bool::weighted(0.05),
                prop::bool::weighted(0.05),
            ),
        )
            .prop_map(|(c, p, router, checks, g, r)| Observations {
                revision: c.0.into(),
                opted_in: c.1 || c.2,
                canary: CanaryObservation {
                    ready: c.3,
                    stalled: false,
                    replicas: c.4,
                    desired_replicas: 3,
                },
                primary: PrimaryObservation {
                    ready: p.0,
                    revision: p.1.map(Into::into),
                },
                router: router.map(Weights::to_canary),
                checks: checks.map(|(sr, lat)| builtin_checks(&spec(), sr, lat)),
                gates: Gates {
                    confirm_rollout: g.0,
                    pre_rollout: g.1,
                    confirm_traffic_increase: g.2,
                    confirm_promotion: g.3,
                    rollback: g.4,
                },
                requests: Requests {
                    paused: r.0 && r.1,
                    abort: r.1,
                    promote: r.2,
                },
            })
    }

    #[test]
    fn a_scale_between_releases_becomes_the_primarys_count_and_the_canary_goes_back_to_zero() {
        let mut world = World::initialized(spec());
        world.canary_replicas = 5; // kubectl scale deploy/web --replicas=5
        world.log.clear();
        world.tick();
        assert_eq!(world.desired_replicas, 5, "{:?}", world.log);
        assert_eq!(world.canary_replicas, 0);
        assert_eq!(world.status.phase, Phase::Initialized);
        assert!(
            world
                .log
                .iter()
                .any(|a| matches!(a, Action::Event { reason, .. } if reason == "Scaled"))
        );
    }

    #[test]
    fn a_canary_left_at_its_release_size_is_scaled_down_without_a_new_request() {
        let mut world = World::initialized(spec());
        world.canary_replicas = 3; // a crash between Finalising and scaling down
        world.log.clear();
        world.tick();
        assert_eq!(world.canary_replicas, 0);
        assert!(
            !world
                .log
                .iter()
                .any(|a| matches!(a, Action::RecordDesiredReplicas(_))),
            "{:?}",
            world.log
        );
    }

    proptest! {
        #[test]
        fn random_observations_keep_weights_valid_and_traffic_off_unready_canaries(
            steps in proptest::collection::vec((any_observations(), 0i64..30), 1..60),
            iterations in proptest::option::of(1u32..4),
            a_b in any::<bool>(),
        ) {
            let spec = match a_b {
                true => CanarySpec { iterations: Some(iterations.unwrap_or(2)), ..ab() },
                false => CanarySpec { iterations, ..spec() },
            };
            let mut status = ReleaseStatus::default();
            let mut seconds = 1_700_000_000;
            for (obs, elapsed) in steps {
                seconds += elapsed;
                let now = Time(Timestamp::from_second(seconds).unwrap_or_default());
                let (actions, next) = step(&status, &obs, now, &spec);
                for (i, action) in actions.iter().enumerate() {
                    if let Action::SetWeights(w) = action {
                        prop_assert_eq!(w.primary() + w.canary(), 100);
                        prop_assert!(w.canary() <= 100);
                        prop_assert!(w.canary() == 0 || obs.canary.ready, "traffic to an unready canary");
                        prop_assert_eq!(i, 0, "weights first");
                    }
                    // No action touches the primary's replicas; the canary is only scaled
                    // down once the primary is known Ready or traffic is off the canary.
                    if matches!(action, Action::ScaleCanaryToZero) {
                        let weights_after = actions.iter().find_map(|a| match a {
                            Action::SetWeights(w) => Some(*w),
                            _ => None,
                        }).or(obs.router);
                        prop_assert!(weights_after.is_none_or(|w| w.canary() == 0) || !obs.canary.ready);
                    }
                }
                prop_assert!(next.canary_weight <= 100);
                prop_assert!(next.failed_checks <= spec.threshold);
                if next.phase == Phase::Succeeded && status.phase != Phase::Succeeded {
                    prop_assert_eq!(&next.last_promoted_revision, &next.revision);
                }
                status = next;
            }
        }
    }
}
