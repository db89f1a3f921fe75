use super::*;
use crate::release::drive::{Answers, GateAnswer, drive};
use crate::release::{
    CanaryObservation, Counts, Evidence, Gates, NoData, PrimaryObservation, Requests, SlowerThan,
    builtin_checks,
};
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
    router: Option<Route>,
    success_rate: Option<f64>,
    latency_ms: Option<f64>,
    /// The checks' no-data policy (the builtin checks' is `Fail`).
    no_data: NoData,
    /// The request counts behind the success rate since the weight moved, when the world
    /// counts them (as the builtin check does with `serin.dev/sequential-checks`).
    counts: Option<Evidence>,
    /// The requests and slow requests behind the latency since the weight moved, when the
    /// world counts them (the builtin latency check with `serin.dev/sequential-checks`).
    latency_counts: Option<Evidence>,
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
            counts: None,
            latency_counts: None,
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
            router: self.router.clone(),
            checks,
            gates,
            requests: self.requests,
        }
    }

    /// One reconcile, as the executor runs it: [`drive`] answers what the steps ask from
    /// this world, and the last step's actions are carried out; then one interval passes.
    fn tick(&mut self) {
        let seconds = i64::try_from(self.spec.interval.as_millis() / 1000).unwrap_or(60);
        self.tick_after(seconds);
    }

    /// `seconds` pass, then one reconcile (which lets no more time pass).
    fn tick_in(&mut self, seconds: i64) {
        self.seconds += seconds;
        self.tick_after(0);
    }

    /// One reconcile as [`World::tick`], then `seconds` pass.
    fn tick_after(&mut self, seconds: i64) {
        let obs = self.observe(None, Gates::default());
        let now = Time(Timestamp::from_second(self.seconds).unwrap_or_default());
        let spec = self.spec.clone();
        let mut answering = Answering {
            world: self,
            asked: Vec::new(),
        };
        let driven = drive(&self.status, obs, &now, &spec, &mut answering);
        // What was asked is logged as the action that asked it.
        let asked = answering.asked;
        self.log.extend(asked);
        self.status = driven.status;
        for action in &driven.actions {
            match action {
                Action::SetRoute(r) => self.router = Some(r.clone()),
                Action::ScaleCanary(n) => self.canary_replicas = *n,
                Action::ScaleCanaryToZero => self.canary_replicas = 0,
                Action::CopyToPrimary { revision } => {
                    self.primary_revision = Some(revision.clone())
                }
                Action::RecordDesiredReplicas(n) => self.desired_replicas = *n,
                Action::RunChecks
                | Action::Look
                | Action::CallHook(_)
                | Action::RemoveMachinery
                | Action::RequeueAfter(_)
                | Action::Event { .. } => {}
            }
        }
        self.log.extend(driven.actions);
        self.seconds += seconds;
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
                Action::SetRoute(r) => Some(r.weights.canary()),
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
                } if r.as_str() == reason => Some(message.clone()),
                _ => None,
            })
            .collect()
    }
}

/// The world's answers to the machine's questions: the builtin checks at its success rate
/// and latency, its gates (open when not set), its rollback webhook.
struct Answering<'w> {
    world: &'w World,
    asked: Vec<Action>,
}

impl Answers for Answering<'_> {
    fn checks(&mut self, _: &ReleaseStatus) -> Option<(Vec<MetricCheck>, Vec<String>)> {
        self.asked.push(Action::RunChecks);
        let world = self.world;
        let mut measured = builtin_checks(&world.spec, world.success_rate, world.latency_ms);
        for check in &mut measured {
            check.no_data = world.no_data;
            if check.name == "request-success-rate" {
                check.evidence = world.counts;
            }
            if check.name == "request-duration" {
                check.evidence = world.latency_counts;
            }
        }
        Some((measured, Vec::new()))
    }

    fn look(&mut self, status: &ReleaseStatus) -> Option<(Vec<MetricCheck>, Vec<String>)> {
        let (mut checks, problems) = self.checks(status)?;
        self.asked.pop();
        self.asked.push(Action::Look);
        checks.retain(|c| c.evidence.is_some());
        Some((checks, problems))
    }

    fn rollback(&mut self, _: &ReleaseStatus) -> Option<Vec<String>> {
        self.asked.push(Action::CallHook(HookKind::Rollback));
        // No rollback hook, or none asking: no rollback.
        Some(match self.world.gates.rollback {
            Some(true) => vec!["rollback".into()],
            _ => Vec::new(),
        })
    }

    fn gate(&mut self, kind: HookKind, _: &ReleaseStatus) -> Option<GateAnswer> {
        self.asked.push(Action::CallHook(kind));
        let passed = self.world.gates.get(kind).unwrap_or(true);
        Some(GateAnswer {
            passed,
            message: None,
        })
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
    assert_eq!((world.canary_replicas, world.router.clone()), (3, None));
    world.primary_ready = true;
    world.tick();
    assert_eq!(world.status.phase, Phase::Initialized);
    assert_eq!(world.router, Some(Weights::ALL_PRIMARY.into()));
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
    assert_eq!(world.router, Some(Weights::ALL_PRIMARY.into()));
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
    assert_eq!(world.router, Some(Weights::ALL_PRIMARY.into()));
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
        evidence: None,
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
    assert_eq!(world.router, Some(Weights::to_canary(50).into()));
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
    assert_eq!(world.router, Some(Weights::ALL_PRIMARY.into()));
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
    assert_eq!(world.router, Some(Weights::ALL_PRIMARY.into()));
    assert_eq!(world.status.canary_weight, weight, "position kept");
    world.canary_healthy = true;
    world.tick();
    assert!(
        world
            .router
            .as_ref()
            .is_some_and(|r| r.weights.canary() >= weight)
    );
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

fn mirroring(checks: u32) -> CanarySpec {
    CanarySpec {
        provider: crate::spec::Provider::GatewayApi,
        mirror_checks: Some(checks),
        mirror_percent: Some(50),
        ..spec()
    }
}

/// Every route the machine asked for, in order.
fn routes_set(world: &World) -> Vec<Route> {
    world
        .log
        .iter()
        .filter_map(|a| match a {
            Action::SetRoute(r) => Some(r.clone()),
            _ => None,
        })
        .collect()
}

fn plain(canary: u32) -> Route {
    Weights::to_canary(canary).into()
}

#[test]
fn mirroring_judges_the_canary_on_copies_for_n_checks_before_the_first_weight() {
    let mut world = releasing(mirroring(2));
    let phases = world.run_until(Phase::Succeeded, 40);
    assert_eq!(
        phases,
        [
            Phase::Initialized,
            Phase::Progressing,
            Phase::Promoting,
            Phase::Finalising,
            Phase::Succeeded
        ]
    );
    let mirror = Route {
        mirror: Some(50),
        ..plain(0)
    };
    assert_eq!(
        routes_set(&world),
        [
            mirror,
            plain(10),
            plain(20),
            plain(30),
            plain(40),
            plain(50),
            plain(0)
        ]
    );
    let judged = world.events("Analysis");
    assert!(
        judged[0].starts_with("Check 1/2 on mirrored requests passed: request-success-rate"),
        "{judged:?}"
    );
    let advances = world.events("Progressing");
    assert!(
        advances
            .iter()
            .any(|m| m.starts_with("Mirroring requests to the canary for 2 checks")),
        "{advances:?}"
    );
    assert!(
        advances.iter().any(|m| m.starts_with(
            "Advancing the canary weight to 10% (2 checks on mirrored requests passed"
        )),
        "{advances:?}"
    );
    assert_eq!(world.status.mirrored_checks, None);
}

#[test]
fn mirroring_waits_for_pre_rollout_and_a_failing_canary_is_rolled_back_without_a_weight() {
    let mut world = releasing(CanarySpec {
        threshold: 3,
        ..mirroring(3)
    });
    world.gates.pre_rollout = Some(false);
    world.run_until(Phase::Progressing, 5);
    world.tick();
    assert_eq!(world.status.failed_checks, 1);
    assert!(routes_set(&world).iter().all(|r| r.mirror.is_none()));
    world.gates.pre_rollout = Some(true);
    world.tick();
    assert_eq!(world.status.mirrored_checks, Some(0));
    world.success_rate = Some(50.0);
    world.run_until(Phase::Failed, 20);
    assert_eq!(world.status.phase, Phase::Failed);
    let routes = routes_set(&world);
    assert!(routes.iter().any(|r| r.mirror == Some(50)), "{routes:?}");
    assert!(routes.iter().all(|r| r.weights.canary() == 0), "{routes:?}");
    assert_eq!(world.router, Some(plain(0)));
    assert_eq!(world.status.mirrored_checks, None);
}

#[test]
fn a_canary_that_is_not_ready_gets_no_mirrored_copies() {
    let mut world = releasing(mirroring(3));
    world.run_until(Phase::Progressing, 5);
    world.tick();
    assert_eq!(world.status.mirrored_checks, Some(0));
    assert_eq!(world.router.as_ref().and_then(|r| r.mirror), Some(50));
    world.canary_healthy = false;
    world.tick();
    assert_eq!(world.router, Some(plain(0)));
}

fn sticky() -> CanarySpec {
    CanarySpec {
        provider: crate::spec::Provider::GatewayApi,
        affinity_cookie: Some("serin-canary".into()),
        ..spec()
    }
}

#[test]
fn the_affinity_cookie_routes_from_the_first_weight_until_traffic_returns_to_the_primary() {
    let mut world = releasing(sticky());
    world.run_until(Phase::Succeeded, 30);
    let stuck = |canary: u32| Route {
        sticky: Some("rev2".into()),
        ..plain(canary)
    };
    assert_eq!(
        routes_set(&world),
        [
            stuck(10),
            stuck(20),
            stuck(30),
            stuck(40),
            stuck(50),
            plain(0)
        ]
    );
    assert_eq!(world.router, Some(plain(0)));
}

#[test]
fn a_rollback_takes_the_affinity_cookie_rule_away() {
    let mut world = releasing(sticky());
    world.run_until(Phase::Progressing, 5);
    world.tick();
    world.tick();
    assert_eq!(
        world
            .router
            .as_ref()
            .and_then(|r| r.sticky.clone())
            .as_deref(),
        Some("rev2")
    );
    world.success_rate = Some(10.0);
    world.run_until(Phase::Failed, 20);
    assert_eq!(world.router, Some(plain(0)));
}

#[test]
fn a_new_revision_gets_a_cookie_value_of_its_own() {
    let mut world = releasing(sticky());
    world.run_until(Phase::Progressing, 5);
    world.tick();
    world.tick();
    world.revision = "rev3".into();
    world.run_until(Phase::Succeeded, 40);
    let values: Vec<String> = routes_set(&world)
        .into_iter()
        .filter_map(|r| r.sticky)
        .collect();
    assert_eq!(values.first().map(String::as_str), Some("rev2"));
    assert_eq!(values.last().map(String::as_str), Some("rev3"));
    assert_eq!(world.router, Some(plain(0)));
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
                Some(Weights::ALL_PRIMARY.into()),
                "traffic before the switch"
            );
        }
        assert!(world.log.len() < 500, "no promotion: {:?}", world.status);
    }
    assert_eq!(checks, 3, "one check per iteration");
    assert_eq!(
        world.router,
        Some(Weights::ALL_CANARY.into()),
        "switched at once"
    );
    assert_eq!(world.status.iterations, 3);
    world.run_until(Phase::Succeeded, 10);
    assert_eq!(world.router, Some(Weights::ALL_PRIMARY.into()));
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
        routing_tick.contains(&Action::SetRoute(Weights::ALL_CANARY.into())),
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
    assert_eq!(world.router, Some(Weights::ALL_PRIMARY.into()));
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
        assert_eq!(world.router, Some(Weights::ALL_PRIMARY.into()));
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
        assert_eq!(world.router, Some(Weights::ALL_PRIMARY.into()));
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
        assert_eq!(world.router, Some(Weights::ALL_PRIMARY.into()));
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
        Some(Weights::ALL_PRIMARY.into()),
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
            router: router.map(|w| Weights::to_canary(w).into()),
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
            .any(|a| matches!(a, Action::Event { reason, .. } if *reason == Reason::Scaled))
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
                if let Action::SetRoute(Route { weights: w, .. }) = action {
                    prop_assert_eq!(w.primary() + w.canary(), 100);
                    prop_assert!(w.canary() <= 100);
                    prop_assert!(w.canary() == 0 || obs.canary.ready, "traffic to an unready canary");
                    prop_assert_eq!(i, 0, "weights first");
                }
                // No action touches the primary's replicas; the canary is only scaled
                // down once the primary is known Ready or traffic is off the canary.
                if matches!(action, Action::ScaleCanaryToZero) {
                    let weights_after = actions.iter().find_map(|a| match a {
                        Action::SetRoute(r) => Some(r.weights),
                        _ => None,
                    }).or(obs.router.as_ref().map(|r| r.weights));
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

// ---- counted checks (serin.dev/sequential-checks) ------------------------------------------

fn counted(requests: f64, failed: f64) -> Option<Evidence> {
    Some(Evidence {
        canary: Counts { requests, failed },
        primary: None,
        slower_than: None,
    })
}

/// A release at its first weight (10 %) with the world counting requests, the weight
/// having moved at the last tick.
fn at_first_weight(spec: CanarySpec) -> World {
    let mut world = releasing(spec);
    world.counts = counted(0.0, 0.0);
    for _ in 0..10 {
        if world.status.canary_weight == 10 {
            break;
        }
        world.tick();
    }
    assert_eq!(world.status.canary_weight, 10, "{:?}", world.log);
    world.log.clear();
    // The tick that moved the weight let a whole interval pass: back to just after the move.
    world.seconds -= 10;
    world
}

#[test]
fn a_look_between_intervals_rolls_back_with_traffic_back_on_the_primary_first() {
    let mut world = at_first_weight(spec());
    // The look five seconds after the move, half-way to the interval.
    world.counts = counted(25.0, 8.0);
    world.success_rate = Some(68.0);
    world.tick_in(5);
    assert_eq!(world.status.phase, Phase::Failed);
    // Traffic leaves the canary in the very step that decided, before anything else.
    assert_eq!(world.log[0], Action::Look);
    assert_eq!(
        world.log[1],
        Action::SetRoute(Route::from(Weights::ALL_PRIMARY))
    );
    let rolled_back = world.events("RolledBack");
    assert_eq!(rolled_back.len(), 1);
    assert!(
        rolled_back[0].contains("8 of 25 requests failed") && rolled_back[0].contains("99%"),
        "{rolled_back:?}"
    );
    // The value seen at the look is stated and kept, as an interval's would be.
    assert!(
        rolled_back[0].contains("last values: request-success-rate 68.00"),
        "{rolled_back:?}"
    );
    assert_eq!(
        world
            .status
            .last_checks
            .first()
            .map(|c| (c.name.as_str(), c.value)),
        Some(("request-success-rate", Some(68.0)))
    );
    // No failed check was needed: the evidence decided, not `threshold`.
    assert!(world.events("CheckFailed").is_empty());
    assert_eq!(world.status.failed_checks, 0);
    assert_eq!(
        (
            world.status.canary_requests,
            world.status.canary_failed_requests
        ),
        (25, 8)
    );
}

#[test]
fn good_evidence_moves_the_weight_at_the_interval_and_never_at_a_look() {
    let mut world = at_first_weight(spec());
    world.counts = counted(30.0, 0.0);
    world.tick_in(5);
    assert_eq!(world.status.canary_weight, 10);
    world.counts = counted(50.0, 0.0);
    world.tick_in(5);
    assert_eq!(world.status.canary_weight, 20, "{:?}", world.log);
    // The counts start again from the move; the totals keep what was seen.
    assert_eq!(
        (world.status.step_requests, world.status.canary_requests),
        (0, 50)
    );
    world.counts = counted(40.0, 0.0);
    world.tick_in(5);
    assert_eq!(world.status.canary_requests, 90);
}

#[test]
fn thin_evidence_holds_the_weight_without_counting_a_failed_check() {
    let mut world = at_first_weight(spec());
    // One request every few seconds: neither a pass nor a failure, for many intervals.
    for requests in [1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0] {
        world.counts = counted(requests, 0.0);
        world.tick_in(5);
    }
    assert_eq!(world.status.phase, Phase::Progressing);
    assert_eq!(world.status.canary_weight, 10);
    assert_eq!(world.status.failed_checks, 0);
    let holds = world.events("Analysis");
    assert!(
        !holds.is_empty() && holds.iter().all(|m| m.contains("too few requests")),
        "{holds:?}"
    );
    // Enough requests without a failure: the weight moves at the next interval.
    world.counts = counted(40.0, 0.0);
    world.tick_in(5);
    world.tick_in(5);
    assert_eq!(world.status.canary_weight, 20);
}

#[test]
fn a_canary_failing_with_its_primary_holds_under_compare_primary_and_says_why() {
    let mut world = at_first_weight(CanarySpec {
        compare: crate::spec::Compare::Primary,
        ..spec()
    });
    let failing_together = Evidence {
        canary: Counts {
            requests: 50.0,
            failed: 15.0,
        },
        primary: Some(Counts {
            requests: 450.0,
            failed: 135.0,
        }),
        slower_than: None,
    };
    world.counts = Some(failing_together);
    for _ in 0..6 {
        world.tick_in(5);
    }
    assert_eq!(world.status.phase, Phase::Progressing);
    assert_eq!(world.status.canary_weight, 10);
    let holds = world.events("Analysis");
    assert!(
        holds
            .iter()
            .any(|m| m.contains("no rollback") && m.contains("primary fails")),
        "{holds:?}"
    );
    // The same canary next to a healthy primary is rolled back at the next look.
    world.counts = Some(Evidence {
        primary: Some(Counts {
            requests: 450.0,
            failed: 0.0,
        }),
        ..failing_together
    });
    world.tick_in(5);
    assert_eq!(world.status.phase, Phase::Failed);
}

#[test]
fn with_sequential_checks_off_nothing_is_looked_at_between_intervals() {
    let mut world = at_first_weight(CanarySpec {
        sequential_checks: false,
        ..spec()
    });
    world.tick_in(5);
    assert!(!world.log.contains(&Action::Look), "{:?}", world.log);
    assert!(
        world
            .log
            .contains(&Action::RequeueAfter(Duration::from_secs(5))),
        "{:?}",
        world.log
    );
}

#[test]
fn a_look_is_asked_again_five_seconds_later_and_a_restart_resumes_from_the_status() {
    let mut world = at_first_weight(spec());
    world.counts = counted(20.0, 0.0);
    world.tick_in(5);
    assert!(world.log.contains(&Action::Look));
    assert!(
        world
            .log
            .contains(&Action::RequeueAfter(Duration::from_secs(5))),
        "{:?}",
        world.log
    );
    // A new process reads the same status: two seconds after the look, none is due.
    world.log.clear();
    world.tick_in(2);
    assert!(!world.log.contains(&Action::Look), "{:?}", world.log);
    assert!(
        world
            .log
            .contains(&Action::RequeueAfter(Duration::from_secs(3))),
        "{:?}",
        world.log
    );
}

// ---- the counted latency check --------------------------------------------------------------

/// `slow` of `requests` slower than `boundary_ms`, against the default 500ms p99 limit.
fn slow(requests: f64, slow: f64, boundary_ms: f64) -> Option<Evidence> {
    Some(Evidence {
        canary: Counts {
            requests,
            failed: slow,
        },
        primary: None,
        slower_than: Some(SlowerThan {
            limit_ms: 500.0,
            boundary_ms,
            quantile: 0.99,
        }),
    })
}

#[test]
fn slow_requests_roll_back_at_a_look_naming_the_latency_check_and_its_counts() {
    let mut world = at_first_weight(spec());
    world.counts = counted(2031.0, 0.0);
    world.latency_counts = slow(2031.0, 412.0, 500.0);
    world.tick_in(5);
    assert_eq!(world.status.phase, Phase::Failed);
    let rolled_back = world.events("RolledBack");
    assert_eq!(rolled_back.len(), 1);
    assert!(
        rolled_back[0].contains(
            "request-duration: 412 of 2031 requests slower than 500ms since the weight moved \
             to 10%: worse than 1% with 99% confidence"
        ),
        "{rolled_back:?}"
    );
    // The status says which check decided; the blast radius counts failures, not slow ones.
    let reason = world.status.rollback_reason.clone().unwrap_or_default();
    assert!(
        reason.starts_with("request-duration: 412 of 2031"),
        "{reason}"
    );
    assert_eq!(
        (
            world.status.canary_requests,
            world.status.canary_failed_requests
        ),
        (2031, 0)
    );
}

#[test]
fn a_limit_between_buckets_says_which_boundary_counted() {
    let mut world = at_first_weight(spec());
    world.counts = counted(100.0, 0.0);
    world.latency_counts = slow(100.0, 60.0, 300.0);
    world.tick_in(5);
    assert_eq!(world.status.phase, Phase::Failed);
    let rolled_back = world.events("RolledBack");
    assert!(
        rolled_back[0].contains(
            "60 of 100 requests slower than 300ms (the histogram's largest \
             bucket at or below the 500ms limit"
        ),
        "{rolled_back:?}"
    );
}

#[test]
fn the_weight_moves_only_when_both_the_failures_and_the_latency_say_so() {
    let mut world = at_first_weight(spec());
    // Failures fine, latency undecided (2 slow in 50: above the limit, not decisively).
    world.counts = counted(50.0, 0.0);
    world.latency_counts = slow(50.0, 2.0, 500.0);
    world.tick_in(5);
    world.tick_in(5);
    assert_eq!(world.status.phase, Phase::Progressing);
    assert_eq!(world.status.canary_weight, 10, "{:?}", world.log);
    let holds = world.events("Analysis");
    assert!(
        holds
            .iter()
            .any(|m| m.contains("request-duration") && m.contains("too few requests")),
        "{holds:?}"
    );
    // Both good: the weight moves at the next interval.
    world.latency_counts = slow(100.0, 1.0, 500.0);
    world.counts = counted(100.0, 0.0);
    world.tick_in(5);
    world.tick_in(5);
    assert_eq!(world.status.canary_weight, 20, "{:?}", world.log);
    // A good latency never hides failures: those roll back on their own.
    world.latency_counts = slow(40.0, 0.0, 500.0);
    world.counts = counted(25.0, 8.0);
    world.tick_in(5);
    assert_eq!(world.status.phase, Phase::Failed);
    let reason = world.status.rollback_reason.clone().unwrap_or_default();
    assert!(reason.starts_with("request-success-rate"), "{reason}");
}

#[test]
fn a_higher_confidence_holds_on_evidence_that_rolls_back_at_99() {
    // 5 failures in 25 requests: past ln(99) = 4.6 but not past ln(990) = 6.9.
    let mut careful = at_first_weight(CanarySpec {
        confidence: 99.9,
        ..spec()
    });
    careful.counts = counted(25.0, 5.0);
    careful.tick_in(5);
    assert_eq!(careful.status.phase, Phase::Progressing);
    let mut default = at_first_weight(spec());
    default.counts = counted(25.0, 5.0);
    default.tick_in(5);
    assert_eq!(default.status.phase, Phase::Failed);
    assert!(
        default.events("RolledBack")[0].contains("with 99% confidence"),
        "{:?}",
        default.log
    );
    // A lower confidence rolls back on less: 2 failures in 10 requests at 90 %.
    let mut quick = at_first_weight(CanarySpec {
        confidence: 90.0,
        ..spec()
    });
    quick.counts = counted(10.0, 2.0);
    quick.tick_in(5);
    assert_eq!(quick.status.phase, Phase::Failed);
    assert!(
        quick.events("RolledBack")[0].contains("with 90% confidence"),
        "{:?}",
        quick.log
    );
}

#[test]
fn with_sequential_checks_off_a_slow_canary_is_rolled_back_on_threshold_p99_checks() {
    let mut world = at_first_weight(CanarySpec {
        sequential_checks: false,
        threshold: 2,
        ..spec()
    });
    world.latency_ms = Some(700.0);
    for _ in 0..10 {
        if world.status.phase == Phase::Failed {
            break;
        }
        world.tick_in(5);
    }
    assert_eq!(world.status.phase, Phase::Failed);
    assert_eq!(world.status.failed_checks, 2);
    let failed = world.events("CheckFailed");
    assert!(
        failed[0].contains("request-duration 700.00ms > 500ms"),
        "{failed:?}"
    );
    // `failedChecks` says why; no reason of a sequential test.
    assert_eq!(world.status.rollback_reason, None);
}
