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
//! **Traffic** is declared, not commanded: every step compares the route (weights, and the
//! mirror and affinity cookie of a Gateway API release) the router should have for the new
//! status with the one observed and emits one [`Action::SetRoute`] first
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

use super::actions::{Action, EventType, HookKind, Reason};
use super::observations::SlowerThan;
use super::observations::{MetricCheck, Observations};
use super::sequential::{Counts, Decision, Test, combine, decide_at};
use super::status::{CheckValue, Phase, ReleaseStatus};
use super::weights::{Route, Weights};
use crate::spec::{CanarySpec, Strategy};

/// How often the counted checks are looked at between intervals
/// (`serin.dev/sequential-checks`). Each look costs two instant queries per release (four
/// with `compare: primary`), so five seconds bounds that load; a Prometheus that scrapes
/// less often answers some looks with the counts of the last, which the test reads again
/// without harm (they are totals since the weight moved, not new evidence).
pub const LOOK_EVERY: Duration = Duration::from_secs(5);

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
                Reason::Terminating,
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
            Reason::Initialized,
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
        self.event(EventType::Normal, Reason::NewRevision, message);
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
                Reason::Scaled,
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
                    Reason::Progressing,
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
            if self.looks() && self.until_look().is_zero() {
                self.look();
            }
            return;
        }
        match self.spec.strategy() {
            Strategy::Canary => self.analyse_canary(),
            Strategy::BlueGreen | Strategy::ABTesting => self.analyse_iterations(),
        }
    }

    /// Canary strategy: `pre-rollout` at weight 0, then checks and a weight step per interval.
    ///
    /// With `mirror-checks`, the first weight waits for that many checks judged on requests
    /// mirrored to the canary, the primary still answering every user.
    fn analyse_canary(&mut self) {
        let weights = self.spec.weights();
        let first = weights.first().copied().unwrap_or(self.spec.max_weight);
        if let Some(passed) = self.status.mirrored_checks {
            let Some(summary) = self.run_checks() else {
                return;
            };
            let wanted = self.spec.mirror_checks.unwrap_or(0);
            let passed = passed + 1;
            if passed < wanted {
                self.status.mirrored_checks = Some(passed);
                self.hold();
                return self.event(
                    EventType::Normal,
                    Reason::Analysis,
                    format!("Check {passed}/{wanted} on mirrored requests passed: {summary}"),
                );
            }
            self.status.mirrored_checks = None;
            return self.set_canary_weight(
                first,
                format!("{passed} checks on mirrored requests passed: {summary}"),
            );
        }
        if self.status.canary_weight == 0 {
            match self.obs.gates.pre_rollout {
                None => return self.call_gate(HookKind::PreRollout),
                Some(false) => return self.fail_check("The pre-rollout webhook failed".into()),
                Some(true) => {}
            }
            if let Some(checks) = self.spec.mirror_checks.filter(|n| *n > 0) {
                self.status.mirrored_checks = Some(0);
                self.hold();
                return self.event(
                    EventType::Normal,
                    Reason::Progressing,
                    format!(
                        "Mirroring requests to the canary for {checks} checks before any \
                         weight moves (pre-rollout webhooks passed); its answers are discarded"
                    ),
                );
            }
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
                        Reason::Progressing,
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
                Reason::Analysis,
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
                        Reason::WaitingPromotion,
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
        self.status.mirrored_checks = None;
        let revision = self.status.revision.clone().unwrap_or_default();
        self.transition(Phase::Promoting);
        self.actions.push(Action::CopyToPrimary {
            revision: revision.clone(),
        });
        self.event(
            EventType::Normal,
            Reason::Promoting,
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
            Reason::Finalising,
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
            Reason::Succeeded,
            format!("Promotion of revision {revision} completed"),
        );
    }

    /// Evaluates the checks of this interval; `None` when they are still to be measured,
    /// failed (already counted), rolled back or hold on the counted checks' evidence, else
    /// a summary of the measured values.
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
        let counted = self.judge_counts(checks);
        if let Some((Decision::RollBack | Decision::WorseThanPrimary, why)) = &counted {
            self.roll_back(why);
            return None;
        }
        // The counted checks are judged by the sequential test above, the others by their
        // range, each failure counting toward `threshold`.
        let plain: Vec<&MetricCheck> = checks.iter().filter(|c| c.evidence.is_none()).collect();
        let failures: Vec<String> = plain.iter().filter_map(|c| c.failure()).collect();
        if !failures.is_empty() {
            self.fail_check(format!("Check failed: {}", failures.join(", ")));
            return None;
        }
        // Every check skipped for want of data (`noData: skip` everywhere): nothing shows
        // the canary is healthy, and an unobserved canary is never advanced or promoted.
        // (Counted checks are never "no data": few requests are thin evidence, and hold.)
        if counted.is_none() && !plain.iter().any(|c| c.measured()) {
            self.fail_check(format!(
                "No check measured a value ({summary}; noData: skip leaves each out, but an \
                 interval needs at least one measured value to pass)"
            ));
            return None;
        }
        match counted {
            Some((Decision::Hold, why)) => {
                self.hold();
                self.event(
                    EventType::Normal,
                    Reason::Analysis,
                    format!(
                        "Holding the canary weight at {}%: {why}",
                        self.status.canary_weight
                    ),
                );
                None
            }
            Some((Decision::SharedFailure, why)) => {
                self.hold();
                self.event(
                    EventType::Warning,
                    Reason::Analysis,
                    format!(
                        "Holding the canary weight at {}%, no rollback: {why}",
                        self.status.canary_weight
                    ),
                );
                None
            }
            _ => Some(summary),
        }
    }

    /// Counted checks are looked at between intervals (`serin.dev/sequential-checks`, for
    /// the Canary strategy once the canary has traffic).
    fn looks(&self) -> bool {
        self.spec.sequential_checks
            && self.spec.strategy() == Strategy::Canary
            && self.status.canary_weight > 0
    }

    /// A look between intervals: only a rollback is decided here (the weight moves at the
    /// interval), and the counts are recorded.
    fn look(&mut self) {
        let Some(checks) = self.obs.checks.as_ref() else {
            self.actions.push(Action::Look);
            self.waiting_on_executor = true;
            return;
        };
        self.status.last_look_time = Some(MicroTime(self.now.0));
        // The values seen at the look replace those of the same checks, so that a rollback
        // decided here states them.
        for check in checks {
            let value = check.value.filter(|v| !v.is_nan());
            match self
                .status
                .last_checks
                .iter_mut()
                .find(|c| c.name == check.name)
            {
                Some(last) => last.value = value,
                None => self.status.last_checks.push(CheckValue {
                    name: check.name.clone(),
                    value,
                }),
            }
        }
        if let Some((Decision::RollBack | Decision::WorseThanPrimary, why)) =
            self.judge_counts(checks)
        {
            self.roll_back(&why);
        }
    }

    /// The sequential test on every counted check (the worst decision, with why: see
    /// [`combine`]), and the canary's counts recorded in the status; `None` when no check was
    /// counted. The success rate is judged on failed requests (and, with `compare: primary`,
    /// against the primary), the latency on slow requests, both at `serin.dev/confidence`.
    fn judge_counts(&mut self, checks: &[MetricCheck]) -> Option<(Decision, String)> {
        let mut worst: Option<(Decision, String)> = None;
        for check in checks {
            let Some(evidence) = check.evidence else {
                continue;
            };
            let (decision, why) = match evidence.slower_than {
                Some(slow) => {
                    let test = Test::for_quantile(slow.quantile);
                    let decision = decide_at(
                        test,
                        evidence.canary,
                        None,
                        self.spec.compare_margin,
                        self.spec.confidence,
                    );
                    let why = self.explain_latency(check, slow, test, decision, evidence.canary);
                    (decision, why)
                }
                None => {
                    // The blast radius counts failed requests, not slow ones.
                    self.record_counts(evidence.canary);
                    let percent = check.min.unwrap_or(self.spec.success_rate);
                    let decision = decide_at(
                        Test::for_success_rate(percent),
                        evidence.canary,
                        evidence.primary,
                        self.spec.compare_margin,
                        self.spec.confidence,
                    );
                    let why =
                        self.explain(check, percent, decision, evidence.canary, evidence.primary);
                    (decision, why)
                }
            };
            match &worst {
                Some((w, _)) if combine(*w, decision) == *w => {}
                _ => worst = Some((decision, why)),
            }
        }
        worst
    }

    fn explain(
        &self,
        check: &MetricCheck,
        percent: f64,
        decision: Decision,
        canary: Counts,
        primary: Option<Counts>,
    ) -> String {
        let share = |c: Counts| c.failure_rate().unwrap_or(0.0) * 100.0;
        let seen = format!(
            "{}: {:.0} of {:.0} requests failed ({:.2}%) since the weight moved to {}%",
            check.name,
            canary.failed,
            canary.requests,
            share(canary),
            self.status.canary_weight
        );
        let limit = 100.0 - percent;
        let confidence = self.spec.confidence;
        match (decision, primary) {
            (Decision::WorseThanPrimary, Some(p)) => format!(
                "{seen}, more than {} points above the primary's {:.2}% ({:.0} of {:.0}) \
                 with {confidence:.0}% confidence (serin.dev/compare: primary)",
                self.spec.compare_margin,
                share(p),
                p.failed,
                p.requests
            ),
            (Decision::SharedFailure, Some(p)) => format!(
                "{seen}, and the primary fails as much ({:.2}%, {:.0} of {:.0}): a cause both \
                 share, not the canary (serin.dev/compare: primary)",
                share(p),
                p.failed,
                p.requests
            ),
            (Decision::RollBack | Decision::WorseThanPrimary | Decision::SharedFailure, _) => {
                format!(
                    "{seen}: above the limit of {limit:.2}% with {confidence:.0}% confidence \
                     (sequential test)"
                )
            }
            (Decision::Hold, _) => format!(
                "{seen}: too few requests yet to tell the failure rate from the limit of \
                 {limit:.2}%"
            ),
            (Decision::Advance, _) => seen,
        }
    }

    /// Why the latency's counts decided as they did: `request-duration: 412 of 2031 requests
    /// slower than 500ms since the weight moved to 10%: worse than 1% with 99% confidence`.
    fn explain_latency(
        &self,
        check: &MetricCheck,
        slow: SlowerThan,
        test: Test,
        decision: Decision,
        canary: Counts,
    ) -> String {
        // The limit is a bucket boundary, or the conservative rule counted from a lower one.
        let slower = match slow.boundary_ms < slow.limit_ms {
            false => format!("slower than {}ms", slow.limit_ms),
            true => format!(
                "slower than {}ms (the histogram's largest bucket at or below the {}ms limit: \
                 requests between the two count as slow)",
                slow.boundary_ms, slow.limit_ms
            ),
        };
        let seen = format!(
            "{}: {:.0} of {:.0} requests {slower} since the weight moved to {}%",
            check.name, canary.failed, canary.requests, self.status.canary_weight
        );
        // `1 − 0.99` is 0.010000000000000009: rounded to what a user writes.
        let share = (test.limit * 100.0 * 1e6).round() / 1e6;
        match decision {
            Decision::RollBack | Decision::WorseThanPrimary | Decision::SharedFailure => format!(
                "{seen}: worse than {share}% with {}% confidence (sequential test)",
                self.spec.confidence
            ),
            Decision::Hold => format!(
                "{seen}: too few requests yet to tell the share of slow requests from the \
                 limit of {share}%"
            ),
            Decision::Advance => seen,
        }
    }

    /// Adds what is new in `counts` (since the weight moved) to the release's totals.
    fn record_counts(&mut self, counts: Counts) {
        // Whole requests; `as` saturates (and reads NaN as 0) on counts from outside.
        let requests = counts.requests.max(0.0).round() as u64;
        let failed = counts.failed.max(0.0).round() as u64;
        let status = &mut self.status;
        // A step held longer than the metrics window is counted over a sliding window, which
        // may shrink: only growth is new (the totals are then a lower bound).
        status.canary_requests += requests.saturating_sub(status.step_requests);
        status.canary_failed_requests += failed.saturating_sub(status.step_failed_requests);
        status.step_requests = status.step_requests.max(requests);
        status.step_failed_requests = status.step_failed_requests.max(failed);
    }

    fn set_canary_weight(&mut self, weight: u32, why: String) {
        self.status.canary_weight = weight.min(100);
        self.hold();
        // The counted checks judge the requests from here on.
        self.status.weight_change_time = Some(MicroTime(self.now.0));
        self.status.step_requests = 0;
        self.status.step_failed_requests = 0;
        self.event(
            EventType::Normal,
            Reason::Progressing,
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
            Reason::CheckFailed,
            format!("{message} ({failed}/{threshold} failed checks)"),
        );
        if failed >= threshold {
            self.roll_back(&format!(
                "{failed} failed checks reached the threshold of {threshold}"
            ));
            // The status already says so ("after N failed checks"); the reason is kept for
            // what failed checks do not tell (a sequential test, an abort, a webhook).
            self.status.rollback_reason = None;
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
        self.status.mirrored_checks = None;
        self.status.rollback_reason = Some(why.to_owned());
        self.transition(Phase::Failed);
        self.actions.push(Action::ScaleCanaryToZero);
        self.actions.push(Action::CallHook(HookKind::PostRollout));
        self.event(
            EventType::Warning,
            Reason::RolledBack,
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

    /// Time left before the next look between intervals; zero when due.
    fn until_look(&self) -> Duration {
        let last = [&self.status.last_look_time, &self.status.last_check_time]
            .into_iter()
            .flatten()
            .map(|t| t.0.as_millisecond())
            .max();
        let Some(last) = last else {
            return Duration::ZERO;
        };
        let elapsed = self.now.0.as_millisecond().saturating_sub(last);
        let elapsed = u64::try_from(elapsed).unwrap_or(0);
        LOOK_EVERY.saturating_sub(Duration::from_millis(elapsed))
    }

    fn transition(&mut self, phase: Phase) {
        if self.status.phase != phase {
            self.status.phase = phase;
            self.status.last_transition_time = Some(self.now.clone());
        }
    }

    fn event(&mut self, type_: EventType, reason: Reason, message: String) {
        self.actions.push(Action::Event {
            type_,
            reason,
            message,
        });
    }

    /// The route the router should have in the new status, or `None` to leave it alone
    /// (before the primary is Ready, and while opting out).
    ///
    /// Mirroring and session affinity only while the canary is Ready and analysed: the
    /// mirror while `mirrored_checks` counts (weights 100/0), the affinity cookie once the
    /// canary has a weight, until traffic returns to the primary (Finalising) or a rollback
    /// (Failed), when the route has neither and a cookie no longer routes.
    fn desired_route(&self) -> Option<Route> {
        let ready = self.obs.canary.ready;
        let weights = match self.status.phase {
            Phase::Initializing | Phase::Terminating => return None,
            Phase::Progressing | Phase::WaitingPromotion | Phase::Promoting if ready => {
                Weights::to_canary(self.status.canary_weight)
            }
            _ => return Some(Route::from(Weights::ALL_PRIMARY)),
        };
        let mirror = self
            .status
            .mirrored_checks
            .filter(|_| self.status.phase == Phase::Progressing && weights.canary() == 0)
            .map(|_| self.spec.mirror_percent.unwrap_or(100));
        let sticky = self
            .spec
            .affinity_cookie
            .as_ref()
            .filter(|_| weights.canary() > 0 && self.spec.strategy() == Strategy::Canary)
            .and(self.status.revision.clone());
        Some(Route {
            weights,
            mirror,
            sticky,
        })
    }

    fn finish(mut self) -> (Vec<Action>, ReleaseStatus) {
        let desired = self.desired_route();
        if let Some(route) = desired.filter(|r| self.obs.router.as_ref() != Some(r)) {
            // First, so traffic leaves the canary before it is scaled down.
            self.actions.insert(0, Action::SetRoute(route));
        }
        let phase = self.status.phase;
        if !self.waiting_on_executor && !phase.is_idle() {
            let analysing = phase.is_analysing() && self.status.last_check_time.is_some();
            let after = match analysing {
                true if self.looks() && !self.until_look().is_zero() => {
                    self.until_due().min(self.until_look())
                }
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
mod tests;
