//! Release metrics on the admin port, one set per canary (labels `namespace` and `name`, the
//! Deployment's), set from the `Canary.status` a reconcile has just written or found
//! unchanged ([`ReleaseMetrics::observe`]):
//!
//! - `serin_canary_phase{namespace, name, phase}`: 1 for the current phase, 0 for the nine
//!   others (the kube-state-metrics shape of `kube_pod_status_phase`: `== 1` selects, `sum by
//!   (phase)` counts canaries per phase, and no number has to be looked up in a table);
//! - `serin_canary_weight`, `serin_canary_failed_checks`: the status's `canaryWeight` and
//!   `failedChecks`;
//! - `serin_canary_check_value{namespace, name, check}`: the last value of each check of the
//!   status's `lastChecks` (no series while a check returned no data);
//! - `serin_canary_last_release_duration_seconds`: from the start of the last finished
//!   release to its Succeeded or Failed;
//! - `serin_canary_promotions_total`, `serin_canary_rollbacks_total`: releases that reached
//!   Succeeded or Failed while this process held the Lease.
//!
//! Counted once per transition Serin writes, so a failed status write and its retry count
//! once. Gauges come back from `Canary.status` on the first reconcile after a restart; the
//! counters start at 0 as any Prometheus counter does; the duration comes back with the next
//! finished release. A Canary's series go when its deletion is seen (its watch) and, as a
//! safety net for a watch that missed it, once a minute for every Canary the watch cache has
//! not had for a minute ([`prune_forever`]).
//!
//! Label values stay bounded: `namespace` and `name` are those of existing Canaries, `phase`
//! is the fixed set of [`Phase::ALL`], and `check` one of the release's own checks (the two
//! builtin names or the unique names of its AnalysisTemplate's metrics, at most 63
//! characters each), at most [`MAX_CHECKS`] per canary, replaced when the checks change.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::ResourceExt;
use kube::runtime::reflector::Store;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use crate::crd::{Canary, CanaryStatus};
use crate::release::conditions::PROMOTED;
use crate::release::{Phase, ReleaseStatus};

/// Checks exported per canary: the first ones of `lastChecks`; more stay in the status only.
pub const MAX_CHECKS: usize = 32;

/// How often [`prune_forever`] looks for the series of Canaries that are gone.
const PRUNE_PERIOD: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, EncodeLabelSet)]
struct CanaryLabels {
    namespace: String,
    name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PhaseLabels {
    namespace: String,
    name: String,
    phase: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CheckLabels {
    namespace: String,
    name: String,
    check: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// The release metrics of every canary; register once, clone freely (every family is an
/// `Arc` inside).
#[derive(Debug, Clone)]
pub struct ReleaseMetrics {
    phase: Family<PhaseLabels, Gauge>,
    weight: Family<CanaryLabels, Gauge>,
    failed_checks: Family<CanaryLabels, Gauge>,
    check_value: Family<CheckLabels, FloatGauge>,
    last_duration: Family<CanaryLabels, FloatGauge>,
    promotions: Family<CanaryLabels, Counter>,
    rollbacks: Family<CanaryLabels, Counter>,
    /// The canaries with series, and the checks each has a series for: what to remove.
    known: Arc<Mutex<BTreeMap<CanaryLabels, BTreeSet<String>>>>,
}

impl ReleaseMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            phase: Family::default(),
            weight: Family::default(),
            failed_checks: Family::default(),
            check_value: Family::default(),
            last_duration: Family::default(),
            promotions: Family::default(),
            rollbacks: Family::default(),
            known: Arc::default(),
        };
        registry.register(
            "serin_canary_phase",
            "The phase of the canary's release: 1 for the current phase, 0 for the others",
            metrics.phase.clone(),
        );
        registry.register(
            "serin_canary_weight",
            "Percent of traffic the canary gets (Canary.status.canaryWeight)",
            metrics.weight.clone(),
        );
        registry.register(
            "serin_canary_failed_checks",
            "Failed checks in the current analysis, toward serin.dev/threshold",
            metrics.failed_checks.clone(),
        );
        registry.register(
            "serin_canary_check_value",
            "The last measured value of each check of the release",
            metrics.check_value.clone(),
        );
        registry.register_with_unit(
            "serin_canary_last_release_duration",
            "Time from the start of the last finished release to Succeeded or Failed",
            Unit::Seconds,
            metrics.last_duration.clone(),
        );
        // prometheus-client appends `_total` to counters.
        registry.register(
            "serin_canary_promotions",
            "Releases promoted (Succeeded) since this process took the controller Lease",
            metrics.promotions.clone(),
        );
        registry.register(
            "serin_canary_rollbacks",
            "Releases rolled back (Failed) since this process took the controller Lease",
            metrics.rollbacks.clone(),
        );
        metrics
    }

    /// Sets the canary's series from `status`, the release status just written (or found
    /// unchanged) over `stored`, the `Canary.status` read before it; a transition to
    /// Succeeded or Failed counts a promotion or a rollback and times the release. `now` is
    /// the reconcile's time.
    pub fn observe(
        &self,
        namespace: &str,
        name: &str,
        stored: &CanaryStatus,
        status: &ReleaseStatus,
        now: &Time,
    ) {
        let canary = CanaryLabels {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        };
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        let previous_checks = known.entry(canary.clone()).or_default();
        for phase in Phase::ALL {
            let labels = PhaseLabels {
                namespace: canary.namespace.clone(),
                name: canary.name.clone(),
                phase: phase.as_str(),
            };
            self.phase
                .get_or_create(&labels)
                .set(i64::from(phase == status.phase));
        }
        self.weight
            .get_or_create(&canary)
            .set(i64::from(status.canary_weight));
        self.failed_checks
            .get_or_create(&canary)
            .set(i64::from(status.failed_checks));
        // Present from the start, so `increase()` sees the first one.
        let promotions = self.promotions.get_or_create_owned(&canary);
        let rollbacks = self.rollbacks.get_or_create_owned(&canary);

        let mut checks = BTreeSet::new();
        for check in status.last_checks.iter().take(MAX_CHECKS) {
            let labels = self.check_labels(&canary, &check.name);
            match check.value {
                Some(value) => {
                    self.check_value.get_or_create(&labels).set(value);
                    checks.insert(check.name.clone());
                }
                None => {
                    self.check_value.remove(&labels);
                }
            }
        }
        for gone in previous_checks.difference(&checks) {
            self.check_value.remove(&self.check_labels(&canary, gone));
        }
        *previous_checks = checks;

        let finished = matches!(status.phase, Phase::Succeeded | Phase::Failed);
        if !finished || stored.release.phase == status.phase {
            return;
        }
        match status.phase {
            Phase::Succeeded => promotions.inc(),
            _ => rollbacks.inc(),
        };
        if let Some(seconds) = release_duration(&stored.conditions, now) {
            self.last_duration.get_or_create(&canary).set(seconds);
        }
    }

    /// Removes every series of the canary `namespace/name`.
    pub fn forget(&self, namespace: &str, name: &str) {
        let canary = CanaryLabels {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        };
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(checks) = known.remove(&canary) {
            self.remove(&canary, &checks);
        }
    }

    /// Removes the series of every canary `keep` says no to.
    pub fn retain(&self, mut keep: impl FnMut(&str, &str) -> bool) {
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        known.retain(|canary, checks| {
            let kept = keep(&canary.namespace, &canary.name);
            if !kept {
                self.remove(canary, checks);
            }
            kept
        });
    }

    fn remove(&self, canary: &CanaryLabels, checks: &BTreeSet<String>) {
        for phase in Phase::ALL {
            self.phase.remove(&PhaseLabels {
                namespace: canary.namespace.clone(),
                name: canary.name.clone(),
                phase: phase.as_str(),
            });
        }
        for family in [&self.weight, &self.failed_checks] {
            family.remove(canary);
        }
        self.last_duration.remove(canary);
        self.promotions.remove(canary);
        self.rollbacks.remove(canary);
        for check in checks {
            self.check_value.remove(&self.check_labels(canary, check));
        }
    }

    fn check_labels(&self, canary: &CanaryLabels, check: &str) -> CheckLabels {
        CheckLabels {
            namespace: canary.namespace.clone(),
            name: canary.name.clone(),
            check: check.to_owned(),
        }
    }
}

/// Seconds from the start of the release that has just finished to `now`: the start is when
/// the `Promoted` condition last became Unknown (a new revision; it stays Unknown through the
/// analysis and a restarted one), as stored before the finishing write. `None` without it.
fn release_duration(stored: &[Condition], now: &Time) -> Option<f64> {
    let started = stored
        .iter()
        .find(|c| c.type_ == PROMOTED && c.status == "Unknown")?;
    let elapsed = now.0.duration_since(started.last_transition_time.0);
    // A clock that went backwards counts as no time.
    Some(elapsed.as_secs_f64().max(0.0))
}

/// Once a minute, removes the series of every canary the controller's Canary cache has not
/// had for a minute ([`Sweep`]): for deletions the watch did not report (a watch that
/// restarted lists what exists, and a Canary deleted meanwhile is simply absent).
pub(super) async fn prune_forever(metrics: ReleaseMetrics, canaries: Store<Canary>) {
    let start = tokio::time::Instant::now() + PRUNE_PERIOD;
    let mut tick = tokio::time::interval_at(start, PRUNE_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sweep = Sweep::default();
    loop {
        tick.tick().await;
        let existing = canaries
            .state()
            .iter()
            .filter_map(|c| Some((c.namespace()?, c.name_any())))
            .collect();
        sweep.prune(&metrics, &existing);
    }
}

/// The canaries with series that were not in the Canary cache at the last look. A canary is
/// removed only when it is missing at two looks in a row: a reconcile may set the series of
/// a Canary just created a moment before the watch brings it into the cache.
#[derive(Default)]
struct Sweep {
    missing: BTreeSet<(String, String)>,
}

impl Sweep {
    fn prune(&mut self, metrics: &ReleaseMetrics, existing: &BTreeSet<(String, String)>) {
        let mut missing = BTreeSet::new();
        metrics.retain(|namespace, name| {
            let key = (namespace.to_owned(), name.to_owned());
            if existing.contains(&key) {
                return true;
            }
            let missed_before = self.missing.contains(&key);
            missing.insert(key);
            !missed_before
        });
        self.missing = missing;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::release::CheckValue;
    use k8s_openapi::jiff::Timestamp;
    use prometheus_client::encoding::text::encode;

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(1_800_000_000 + seconds).expect("time"))
    }

    fn status(
        phase: Phase,
        weight: u32,
        failed: u32,
        checks: &[(&str, Option<f64>)],
    ) -> ReleaseStatus {
        ReleaseStatus {
            phase,
            canary_weight: weight,
            failed_checks: failed,
            last_checks: checks
                .iter()
                .map(|(name, value)| CheckValue {
                    name: (*name).to_owned(),
                    value: *value,
                })
                .collect(),
            ..Default::default()
        }
    }

    /// What was stored before a write: `release`, and the `Promoted` condition it had.
    fn stored(release: ReleaseStatus, promoted: &str, since: Time) -> CanaryStatus {
        CanaryStatus {
            release,
            conditions: vec![Condition {
                type_: PROMOTED.into(),
                status: promoted.into(),
                reason: String::new(),
                message: String::new(),
                last_transition_time: since,
                observed_generation: None,
            }],
            ..Default::default()
        }
    }

    fn text(registry: &Registry) -> String {
        let mut text = String::new();
        encode(&mut text, registry).expect("encode");
        text
    }

    fn assert_has(text: &str, series: &[&str]) {
        for line in series {
            assert!(text.lines().any(|l| l == *line), "{line} not in\n{text}");
        }
    }

    #[test]
    fn a_canary_under_analysis_exports_its_phase_weight_failures_and_check_values() {
        let mut registry = Registry::default();
        let metrics = ReleaseMetrics::register(&mut registry);
        let before = stored(status(Phase::Progressing, 25, 0, &[]), "Unknown", at(0));
        let now = status(
            Phase::Progressing,
            50,
            1,
            &[
                ("request-success-rate", Some(99.5)),
                ("request-duration", Some(12.0)),
                ("error-budget", None),
            ],
        );
        metrics.observe("prod", "web", &before, &now, &at(30));
        let text = text(&registry);
        assert_has(
            &text,
            &[
                r#"serin_canary_phase{namespace="prod",name="web",phase="Progressing"} 1"#,
                r#"serin_canary_phase{namespace="prod",name="web",phase="Succeeded"} 0"#,
                r#"serin_canary_phase{namespace="prod",name="web",phase="Initializing"} 0"#,
                r#"serin_canary_weight{namespace="prod",name="web"} 50"#,
                r#"serin_canary_failed_checks{namespace="prod",name="web"} 1"#,
                r#"serin_canary_check_value{namespace="prod",name="web",check="request-success-rate"} 99.5"#,
                r#"serin_canary_check_value{namespace="prod",name="web",check="request-duration"} 12.0"#,
                r#"serin_canary_promotions_total{namespace="prod",name="web"} 0"#,
                r#"serin_canary_rollbacks_total{namespace="prod",name="web"} 0"#,
            ],
        );
        assert_eq!(
            text.lines()
                .filter(|l| l.starts_with("serin_canary_phase{"))
                .count(),
            Phase::ALL.len(),
            "one series per phase:\n{text}"
        );
        assert!(
            !text.contains("error-budget"),
            "a check without data has no series:\n{text}"
        );
        assert!(
            !text.contains("serin_canary_last_release_duration_seconds{"),
            "no release has finished yet:\n{text}"
        );
    }

    #[test]
    fn a_promotion_and_a_rollback_are_counted_once_and_timed_from_the_release_start() {
        let mut registry = Registry::default();
        let metrics = ReleaseMetrics::register(&mut registry);
        let finalising = stored(status(Phase::Finalising, 0, 0, &[]), "Unknown", at(100));
        let succeeded = status(Phase::Succeeded, 0, 0, &[]);
        metrics.observe("prod", "web", &finalising, &succeeded, &at(190));
        // The next reconcile finds Succeeded stored: not a second promotion.
        let stored_succeeded = stored(succeeded.clone(), "True", at(190));
        metrics.observe("prod", "web", &stored_succeeded, &succeeded, &at(200));
        assert_has(
            &text(&registry),
            &[
                r#"serin_canary_promotions_total{namespace="prod",name="web"} 1"#,
                r#"serin_canary_rollbacks_total{namespace="prod",name="web"} 0"#,
                r#"serin_canary_last_release_duration_seconds{namespace="prod",name="web"} 90.0"#,
                "# TYPE serin_canary_last_release_duration_seconds gauge",
                "# UNIT serin_canary_last_release_duration_seconds seconds",
                "# TYPE serin_canary_promotions counter",
                r#"serin_canary_phase{namespace="prod",name="web",phase="Succeeded"} 1"#,
            ],
        );

        let progressing = stored(status(Phase::Progressing, 30, 2, &[]), "Unknown", at(300));
        let failed = status(Phase::Failed, 0, 3, &[]);
        metrics.observe("prod", "web", &progressing, &failed, &at(345));
        assert_has(
            &text(&registry),
            &[
                r#"serin_canary_promotions_total{namespace="prod",name="web"} 1"#,
                r#"serin_canary_rollbacks_total{namespace="prod",name="web"} 1"#,
                r#"serin_canary_last_release_duration_seconds{namespace="prod",name="web"} 45.0"#,
                r#"serin_canary_failed_checks{namespace="prod",name="web"} 3"#,
                r#"serin_canary_weight{namespace="prod",name="web"} 0"#,
            ],
        );
    }

    #[test]
    fn the_first_opt_in_is_not_a_promotion() {
        let mut registry = Registry::default();
        let metrics = ReleaseMetrics::register(&mut registry);
        let initializing = stored(status(Phase::Initializing, 0, 0, &[]), "Unknown", at(0));
        metrics.observe(
            "prod",
            "web",
            &initializing,
            &status(Phase::Initialized, 0, 0, &[]),
            &at(5),
        );
        assert_has(
            &text(&registry),
            &[r#"serin_canary_promotions_total{namespace="prod",name="web"} 0"#],
        );
    }

    #[test]
    fn after_a_restart_the_gauges_come_back_from_the_stored_status_and_nothing_is_counted() {
        let mut registry = Registry::default();
        let metrics = ReleaseMetrics::register(&mut registry);
        // A fresh process: the first reconcile finds the release Failed, as stored.
        let failed = status(Phase::Failed, 0, 5, &[("request-success-rate", Some(61.0))]);
        let stored_failed = stored(failed.clone(), "False", at(0));
        metrics.observe("prod", "web", &stored_failed, &failed, &at(600));
        let text = text(&registry);
        assert_has(
            &text,
            &[
                r#"serin_canary_phase{namespace="prod",name="web",phase="Failed"} 1"#,
                r#"serin_canary_failed_checks{namespace="prod",name="web"} 5"#,
                r#"serin_canary_check_value{namespace="prod",name="web",check="request-success-rate"} 61.0"#,
                r#"serin_canary_rollbacks_total{namespace="prod",name="web"} 0"#,
            ],
        );
    }

    #[test]
    fn the_sweep_removes_a_canary_missing_from_the_cache_at_two_looks_in_a_row() {
        let mut registry = Registry::default();
        let metrics = ReleaseMetrics::register(&mut registry);
        let progressing = status(Phase::Progressing, 10, 0, &[]);
        for name in ["kept", "gone", "late"] {
            metrics.observe("prod", name, &CanaryStatus::default(), &progressing, &at(0));
        }
        let key = |name: &str| ("prod".to_owned(), name.to_owned());
        let weight =
            |name: &str| format!(r#"serin_canary_weight{{namespace="prod",name="{name}"}} 10"#);
        let mut sweep = Sweep::default();

        // "late" is not in the cache yet, "gone" no longer is: both kept at the first look.
        sweep.prune(&metrics, &BTreeSet::from([key("kept")]));
        assert_has(
            &text(&registry),
            &[&weight("kept"), &weight("gone"), &weight("late")],
        );

        sweep.prune(&metrics, &BTreeSet::from([key("kept"), key("late")]));
        let text = text(&registry);
        assert_has(&text, &[&weight("kept"), &weight("late")]);
        assert!(!text.contains(r#"name="gone""#), "{text}");
    }

    #[test]
    fn checks_that_are_no_longer_measured_lose_their_series() {
        let mut registry = Registry::default();
        let metrics = ReleaseMetrics::register(&mut registry);
        let before = CanaryStatus::default();
        let two = status(
            Phase::Progressing,
            10,
            0,
            &[("latency-p95", Some(80.0)), ("error-rate", Some(0.5))],
        );
        metrics.observe("prod", "web", &before, &two, &at(0));
        let one = status(Phase::Progressing, 20, 0, &[("error-rate", Some(0.25))]);
        metrics.observe("prod", "web", &before, &one, &at(10));
        let text = text(&registry);
        assert_has(
            &text,
            &[r#"serin_canary_check_value{namespace="prod",name="web",check="error-rate"} 0.25"#],
        );
        assert!(!text.contains("latency-p95"), "{text}");
    }

    #[test]
    fn no_more_than_max_checks_series_per_canary() {
        let mut registry = Registry::default();
        let metrics = ReleaseMetrics::register(&mut registry);
        let names: Vec<String> = (0..MAX_CHECKS + 5).map(|i| format!("check-{i}")).collect();
        let checks: Vec<(&str, Option<f64>)> =
            names.iter().map(|n| (n.as_str(), Some(1.0))).collect();
        let many = status(Phase::Progressing, 10, 0, &checks);
        metrics.observe("prod", "web", &CanaryStatus::default(), &many, &at(0));
        let exported = text(&registry)
            .lines()
            .filter(|l| l.starts_with("serin_canary_check_value{"))
            .count();
        assert_eq!(exported, MAX_CHECKS);
    }

    #[test]
    fn a_deleted_canary_loses_every_series_and_others_keep_theirs() {
        let mut registry = Registry::default();
        let metrics = ReleaseMetrics::register(&mut registry);
        let finalising = stored(status(Phase::Finalising, 0, 0, &[]), "Unknown", at(0));
        let succeeded = status(
            Phase::Succeeded,
            0,
            0,
            &[("request-success-rate", Some(100.0))],
        );
        for (ns, name) in [("prod", "web"), ("prod", "api"), ("dev", "web")] {
            metrics.observe(ns, name, &finalising, &succeeded, &at(60));
        }
        metrics.forget("prod", "web");
        let text = text(&registry);
        assert!(
            !text.contains(r#"namespace="prod",name="web""#),
            "series of the deleted canary left:\n{text}"
        );
        assert_has(
            &text,
            &[
                r#"serin_canary_weight{namespace="prod",name="api"} 0"#,
                r#"serin_canary_promotions_total{namespace="dev",name="web"} 1"#,
            ],
        );

        // The safety net: only canaries still in the cache keep their series.
        metrics.retain(|ns, name| (ns, name) == ("dev", "web"));
        let text = self::text(&registry);
        assert!(!text.contains(r#"name="api""#), "{text}");
        for family in [
            "serin_canary_phase{",
            "serin_canary_weight{",
            "serin_canary_failed_checks{",
            "serin_canary_check_value{",
            "serin_canary_last_release_duration_seconds{",
            "serin_canary_promotions_total{",
            "serin_canary_rollbacks_total{",
        ] {
            assert!(
                text.lines()
                    .filter(|l| l.starts_with(family))
                    .all(|l| l.contains(r#"namespace="dev",name="web""#)),
                "{family}: \n{text}"
            );
        }
    }
}
