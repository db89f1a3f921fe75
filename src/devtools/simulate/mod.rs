//! The traffic simulator of the local environment. Its core, here, is pure code: given the
//! share of traffic each version gets and how each version behaves, it accumulates the series
//! a Linkerd proxy would export (`response_total` by classification,
//! `response_latency_ms_bucket`) and renders them in
//! the Prometheus text format, so the builtin Linkerd queries of SPEC "Metrics" can run
//! against the local Prometheus exactly as they would in a meshed cluster.
//!
//! A version's behaviour comes from its pod template's annotations
//! `simulate.serin.dev/error-rate` (0–1) and `simulate.serin.dev/latency-ms`. Counters are
//! fractional and derived from elapsed time only, so ratios are exact and every run is the
//! same, unless the version asks for noise (`simulate.serin.dev/noise-seed`, or the
//! simulator's `--noise-seed` for every version): then each tick draws whole requests and
//! failures from binomials, seeded (see `traffic`).
//!
//! Ground truth: besides the proxies' series, the simulator counts the requests each canary
//! actually served through its router (TrafficSplit or HTTPRoute), and how many failed,
//! since it first saw that canary: `serin_simulator_canary_requests_total{namespace,name,outcome}`.
//! A release's blast radius is the growth of the `failure` series between its start and its
//! end. The stand-in load tester's requests are not counted (no user sent them), nor the
//! requests through canary Ingresses and Gloo route tables.
//!
//! - [`backends`]: which versions a router object sends traffic to, and how each behaves
//!   (pure: router objects and Deployments in, [`Backend`]s out);
//! - [`nginx`]: canary Ingresses, and the series ingress-nginx exports for them;
//! - [`gloo`]: Gloo route tables, and the series Gloo's Envoy proxies export for them;
//! - [`traefik`]: HTTPRoutes as Traefik serves them, and the series Traefik exports for them;
//! - [`serve`]: the I/O edge that `serin simulate` runs: watches the API server, advances the
//!   simulator on a tick and serves `/metrics`;
//! - [`command`]: the hidden `serin simulate` subcommand (its flags, and the runtime it
//!   starts).

pub mod backends;
pub mod command;
pub mod gloo;
pub mod nginx;
pub mod serve;
pub mod traefik;
mod traffic;

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

use traffic::Traffic;

use crate::release::PRIMARY_SUFFIX;

/// Annotation on a pod template: the share of requests that fail, from 0 to 1.
pub const ERROR_RATE: &str = "simulate.serin.dev/error-rate";
/// Annotation on a pod template: the latency of every request, in milliseconds.
pub const LATENCY_MS: &str = "simulate.serin.dev/latency-ms";
/// Annotation on a pod template: draw this version's requests and failures at random, from
/// this seed (an unsigned 64-bit integer). Without it (and without `--noise-seed`) the
/// counters are exact shares of the rate.
pub const NOISE_SEED: &str = "simulate.serin.dev/noise-seed";

/// The ground-truth counter: requests each canary served, by outcome.
pub const CANARY_REQUESTS: &str = "serin_simulator_canary_requests_total";

/// Latency a version has when its template does not say.
const DEFAULT_LATENCY_MS: f64 = 10.0;

/// The bucket bounds (ms) of Linkerd's `response_latency_ms` histogram.
pub const BUCKETS_MS: [f64; 26] = [
    1.0,
    2.0,
    3.0,
    4.0,
    5.0,
    10.0,
    20.0,
    30.0,
    40.0,
    50.0,
    100.0,
    200.0,
    300.0,
    400.0,
    500.0,
    1000.0,
    2000.0,
    3000.0,
    4000.0,
    5000.0,
    10000.0,
    20000.0,
    30000.0,
    40000.0,
    50000.0,
    f64::INFINITY,
];

/// How one version answers requests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Behaviour {
    /// Share of requests classified `failure`, in 0..=1.
    pub error_rate: f64,
    /// Latency of every request, in milliseconds.
    pub latency_ms: f64,
    /// `Some`: requests and failures are drawn at random from this seed.
    pub noise_seed: Option<u64>,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            error_rate: 0.0,
            latency_ms: DEFAULT_LATENCY_MS,
            noise_seed: None,
        }
    }
}

impl Behaviour {
    /// Reads the behaviour from a pod template's annotations. Values that do not parse, or
    /// lie outside their range, fall back to the healthy default: the simulator stands in for
    /// an application and never refuses to run.
    pub fn from_annotations(annotations: &BTreeMap<String, String>) -> Self {
        let number = |key: &str| {
            annotations
                .get(key)
                .and_then(|v| v.trim().parse::<f64>().ok())
        };
        let default = Behaviour::default();
        Behaviour {
            error_rate: number(ERROR_RATE)
                .filter(|r| (0.0..=1.0).contains(r))
                .unwrap_or(default.error_rate),
            latency_ms: number(LATENCY_MS)
                .filter(|l| l.is_finite() && *l >= 0.0)
                .unwrap_or(default.latency_ms),
            noise_seed: annotations
                .get(NOISE_SEED)
                .and_then(|v| v.trim().parse::<u64>().ok()),
        }
    }
}

/// One version behind the router, as the simulator sees it at an instant.
#[derive(Debug, Clone, PartialEq)]
pub struct Backend {
    pub namespace: String,
    /// The Deployment serving this version (`web` or `web-primary`): the `deployment` label.
    pub deployment: String,
    /// Percentage of the requests this version receives, 0..=100.
    pub weight: u32,
    pub behaviour: Behaviour,
}

/// Which series requests count in: (namespace, deployment, authority). Routed requests have
/// no `authority` label; the load test's carry the Service it calls.
type SeriesKey = (String, String, Option<String>);

/// What a canary served: its requests and the failed ones among them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Served {
    pub requests: f64,
    pub failed: f64,
}

/// Accumulated inbound traffic per (namespace, deployment), routed or from the load test.
#[derive(Debug, Clone)]
pub struct Simulator {
    series: Traffic<SeriesKey>,
    /// The ground truth: what each canary (namespace, name) served through its router.
    canaries: BTreeMap<(String, String), Served>,
    /// Requests that enter through Ingresses, in ingress-nginx's series.
    ingresses: nginx::IngressSimulator,
    /// Requests that enter through Gloo route tables, in Envoy's series.
    envoy: gloo::EnvoySimulator,
    /// Requests that enter through HTTPRoutes, in Traefik's series.
    traefik: traefik::TraefikSimulator,
}

impl Simulator {
    /// A simulator sending `requests_per_second` to each router, split by weight.
    pub fn new(requests_per_second: f64) -> Self {
        Simulator {
            series: Traffic::new(requests_per_second, &BUCKETS_MS, 1.0),
            canaries: BTreeMap::new(),
            ingresses: nginx::IngressSimulator::new(requests_per_second),
            envoy: gloo::EnvoySimulator::new(requests_per_second),
            traefik: traefik::TraefikSimulator::new(requests_per_second),
        }
    }

    /// Draws every version's traffic with noise from `seed` (each series seeded apart),
    /// unless its template names a seed of its own.
    pub fn with_noise_seed(mut self, seed: Option<u64>) -> Self {
        self.series.set_noise_seed(seed);
        self.ingresses.set_noise_seed(seed);
        self.envoy.set_noise_seed(seed);
        self.traefik.set_noise_seed(seed);
        self
    }

    /// The traffic through canary Ingresses, advanced on its own.
    pub fn ingresses(&mut self) -> &mut nginx::IngressSimulator {
        &mut self.ingresses
    }

    /// The traffic through Gloo route tables, advanced on its own.
    pub fn envoy(&mut self) -> &mut gloo::EnvoySimulator {
        &mut self.envoy
    }

    /// The traffic through HTTPRoutes as Traefik counts it, advanced on its own.
    pub fn traefik(&mut self) -> &mut traefik::TraefikSimulator {
        &mut self.traefik
    }

    /// Accounts for `elapsed` time of traffic split as `backends` say. Weights are used as
    /// given; a router's backends are expected to sum to 100.
    pub fn advance(&mut self, elapsed: Duration, backends: &[Backend]) {
        for backend in backends {
            let served = self.count(elapsed, backend, None);
            // `backends_of` names the primary `<owner>-primary` and the canary `<owner>`.
            if !backend.deployment.ends_with(PRIMARY_SUFFIX) {
                let truth = self
                    .canaries
                    .entry((backend.namespace.clone(), backend.deployment.clone()))
                    .or_default();
                truth.requests += served.requests;
                truth.failed += served.failed;
            }
        }
    }

    /// What the canary `namespace/name` has served through its router since the simulator
    /// first saw it (while it stays routed: see [`Simulator::retain`]).
    pub fn canary_served(&self, namespace: &str, name: &str) -> Option<Served> {
        self.canaries
            .get(&(namespace.to_owned(), name.to_owned()))
            .copied()
    }

    /// Accounts for `elapsed` time of the stand-in load tester's requests (see
    /// [`backends::load_test_of`]), in series labelled with the Service it calls.
    pub fn advance_load_tests(&mut self, elapsed: Duration, load_tests: &[backends::LoadTest]) {
        for test in load_tests {
            // Not users' requests: left out of the ground truth.
            self.count(elapsed, &test.backend, Some(test.authority.clone()));
        }
    }

    fn count(
        &mut self,
        elapsed: Duration,
        backend: &Backend,
        authority: Option<String>,
    ) -> traffic::Served {
        let key = (
            backend.namespace.clone(),
            backend.deployment.clone(),
            authority,
        );
        self.series
            .add(elapsed, &key, backend.weight, backend.behaviour)
    }

    /// Forgets the series of every version not among `backends`: its router object or its
    /// Deployment is gone, and so would its proxies be. Versions at weight 0 are kept.
    pub fn retain(&mut self, backends: &[Backend]) {
        let routed = |namespace: &String, deployment: &String| {
            backends
                .iter()
                .any(|b| &b.namespace == namespace && &b.deployment == deployment)
        };
        self.series
            .retain(|(namespace, deployment, _)| routed(namespace, deployment));
        self.canaries
            .retain(|(namespace, name), _| routed(namespace, name));
    }

    /// The series in the Prometheus text exposition format, sorted for stable output.
    pub fn render(&self) -> String {
        let versions = self.series.sorted();
        let mut out = String::new();
        out.push_str("# TYPE response_total counter\n");
        for (key, series) in &versions {
            let labels = labels(key);
            for (classification, answers) in [("success", &series.ok), ("failure", &series.failed)]
            {
                let _ = writeln!(
                    out,
                    "response_total{{{labels},classification=\"{classification}\"}} {}",
                    answers.count()
                );
            }
        }
        out.push_str("# TYPE response_latency_ms histogram\n");
        for (key, series) in &versions {
            series
                .all()
                .render(&mut out, "response_latency_ms", &labels(key));
        }
        let _ = writeln!(
            out,
            "# HELP {CANARY_REQUESTS} Requests each canary served through its router (ground truth).\n\
             # TYPE {CANARY_REQUESTS} counter"
        );
        for ((namespace, name), served) in &self.canaries {
            for (outcome, count) in [
                ("success", served.requests - served.failed),
                ("failure", served.failed),
            ] {
                let _ = writeln!(
                    out,
                    "{CANARY_REQUESTS}{{namespace=\"{namespace}\",name=\"{name}\",outcome=\"{outcome}\"}} {count}"
                );
            }
        }
        out.push_str(&self.ingresses.render());
        out.push_str(&self.envoy.render());
        out.push_str(&self.traefik.render());
        out
    }
}

fn labels((namespace, deployment, authority): &SeriesKey) -> String {
    let labels =
        format!("direction=\"inbound\",namespace=\"{namespace}\",deployment=\"{deployment}\"");
    match authority {
        Some(authority) => format!("{labels},authority=\"{authority}\""),
        None => labels,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The simulator writes each data plane's histogram with the buckets Serin's admission
    /// knows it ships (`MetricsProvider::latency_buckets_ms`), so a limit refused there is
    /// one the simulated histogram could not judge either.
    #[test]
    fn simulated_buckets_are_the_ones_admission_knows_each_data_plane_ships() {
        use crate::spec::MetricsProvider;
        let finite_ms = |bounds: &[f64], unit_ms: f64| -> Vec<f64> {
            bounds
                .iter()
                .filter(|b| b.is_finite())
                .map(|b| (b * unit_ms * 1000.0).round() / 1000.0)
                .collect()
        };
        for (provider, bounds, unit_ms) in [
            (MetricsProvider::Linkerd, &BUCKETS_MS[..], 1.0),
            (
                MetricsProvider::Traefik,
                &traefik::BUCKETS_SECONDS[..],
                1000.0,
            ),
            (MetricsProvider::Nginx, &nginx::BUCKETS_SECONDS[..], 1000.0),
            (MetricsProvider::Envoy, &gloo::BUCKETS_MS[..], 1.0),
        ] {
            assert_eq!(
                finite_ms(bounds, unit_ms),
                provider.latency_buckets_ms(),
                "{provider}"
            );
            assert_eq!(bounds.last(), Some(&f64::INFINITY), "{provider}");
        }
    }

    fn backend(deployment: &str, weight: u32, error_rate: f64, latency_ms: f64) -> Backend {
        Backend {
            namespace: "shop".into(),
            deployment: deployment.into(),
            weight,
            behaviour: Behaviour {
                error_rate,
                latency_ms,
                noise_seed: None,
            },
        }
    }

    /// The value of the first rendered sample whose line starts with `prefix`.
    fn sample(text: &str, prefix: &str) -> f64 {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no sample {prefix} in\n{text}"))
    }

    #[test]
    fn behaviour_is_read_from_template_annotations_with_healthy_fallbacks() {
        let annotations = BTreeMap::from([
            (ERROR_RATE.to_string(), "0.25".to_string()),
            (LATENCY_MS.to_string(), "700".to_string()),
        ]);
        let read = Behaviour::from_annotations(&annotations);
        assert_eq!(
            read,
            Behaviour {
                error_rate: 0.25,
                latency_ms: 700.0,
                noise_seed: None,
            }
        );
        let nonsense = BTreeMap::from([
            (ERROR_RATE.to_string(), "1.5".to_string()),
            (LATENCY_MS.to_string(), "fast".to_string()),
            (NOISE_SEED.to_string(), "-1".to_string()),
        ]);
        assert_eq!(Behaviour::from_annotations(&nonsense), Behaviour::default());
        let noisy = BTreeMap::from([(NOISE_SEED.to_string(), " 42 ".to_string())]);
        assert_eq!(
            Behaviour::from_annotations(&noisy).noise_seed,
            Some(42),
            "a seed turns noise on for this version"
        );
    }

    #[test]
    fn the_ground_truth_counts_what_each_canary_served_through_its_router_only() {
        let mut sim = Simulator::new(50.0);
        // 10 s at 10 %, then 10 s at 20 %, 30 % failing: 150 requests, 45 failed.
        for weight in [10, 20] {
            sim.advance(
                Duration::from_secs(10),
                &[
                    backend("web-primary", 100 - weight, 0.0, 5.0),
                    backend("web", weight, 0.3, 5.0),
                ],
            );
        }
        // The load tester's requests are not users' requests.
        sim.advance_load_tests(
            Duration::from_secs(10),
            &[backends::LoadTest {
                backend: backend("web", 10, 1.0, 5.0),
                authority: "web-canary.shop.svc.cluster.local".into(),
            }],
        );
        let served = sim.canary_served("shop", "web").expect("counted");
        assert!((served.requests - 150.0).abs() < 1e-9, "{served:?}");
        assert!((served.failed - 45.0).abs() < 1e-9, "{served:?}");
        assert_eq!(sim.canary_served("shop", "web-primary"), None);
        let text = sim.render();
        let series = |outcome: &str| {
            sample(
                &text,
                &format!(
                    "{CANARY_REQUESTS}{{namespace=\"shop\",name=\"web\",outcome=\"{outcome}\"}}"
                ),
            )
        };
        assert!((series("failure") - 45.0).abs() < 1e-9, "{text}");
        assert!((series("success") - 105.0).abs() < 1e-9, "{text}");
        // Kept at weight 0 (after the release), forgotten with the router or Deployment.
        sim.retain(&[backend("web", 0, 0.0, 5.0)]);
        assert!(sim.canary_served("shop", "web").is_some());
        sim.retain(&[]);
        assert_eq!(sim.canary_served("shop", "web"), None);
    }

    #[test]
    fn with_noise_the_ground_truth_is_what_was_drawn_and_the_series_say_the_same() {
        let mut noisy = backend("web", 50, 0.3, 5.0);
        noisy.behaviour.noise_seed = Some(9);
        let mut sim = Simulator::new(50.0);
        for _ in 0..40 {
            sim.advance(Duration::from_millis(250), &[noisy.clone()]);
        }
        let served = sim.canary_served("shop", "web").expect("counted");
        assert_eq!(served.requests.fract(), 0.0);
        assert_eq!(served.failed.fract(), 0.0);
        // 250 requests expected, 75 failing: drawn, so near and (almost surely) not equal.
        assert!((served.requests - 250.0).abs() < 60.0, "{served:?}");
        assert!(served.failed > 30.0 && served.failed < 120.0, "{served:?}");
        let text = sim.render();
        let canary = "response_total{direction=\"inbound\",namespace=\"shop\",deployment=\"web\"";
        assert_eq!(
            sample(&text, &format!("{canary},classification=\"failure\"}}")),
            served.failed
        );
        // The simulator-wide seed draws versions that name none.
        let mut everyone = Simulator::new(50.0).with_noise_seed(Some(5));
        everyone.advance(Duration::from_millis(250), &[backend("web", 30, 0.0, 5.0)]);
        let first = everyone.canary_served("shop", "web").expect("counted");
        assert_eq!(first.requests.fract(), 0.0, "{first:?}");
    }

    #[test]
    fn requests_are_split_by_weight_and_classified_by_error_rate() {
        let mut sim = Simulator::new(100.0);
        sim.advance(
            Duration::from_secs(10),
            &[
                backend("web-primary", 80, 0.0, 20.0),
                backend("web", 20, 0.1, 20.0),
            ],
        );
        let text = sim.render();
        let canary = "response_total{direction=\"inbound\",namespace=\"shop\",deployment=\"web\"";
        let primary =
            "response_total{direction=\"inbound\",namespace=\"shop\",deployment=\"web-primary\"";
        assert_eq!(
            sample(&text, &format!("{canary},classification=\"success\"}}")),
            180.0
        );
        assert_eq!(
            sample(&text, &format!("{canary},classification=\"failure\"}}")),
            20.0
        );
        assert_eq!(
            sample(&text, &format!("{primary},classification=\"success\"}}")),
            800.0
        );
        assert_eq!(
            sample(&text, &format!("{primary},classification=\"failure\"}}")),
            0.0
        );
    }

    #[test]
    fn counters_only_grow_and_follow_weight_changes() {
        let mut sim = Simulator::new(10.0);
        sim.advance(Duration::from_secs(1), &[backend("web", 0, 0.0, 5.0)]);
        sim.advance(Duration::from_secs(1), &[backend("web", 50, 0.0, 5.0)]);
        sim.advance(Duration::from_secs(1), &[backend("web", 100, 0.0, 5.0)]);
        let text = sim.render();
        let count = "response_latency_ms_count{direction=\"inbound\",namespace=\"shop\",deployment=\"web\"}";
        assert_eq!(sample(&text, count), 15.0);
    }

    #[test]
    fn versions_no_longer_routed_are_forgotten_and_idle_ones_kept() {
        let mut sim = Simulator::new(10.0);
        sim.advance(
            Duration::from_secs(1),
            &[backend("web", 50, 0.0, 5.0), backend("api", 50, 0.0, 5.0)],
        );
        sim.retain(&[backend("web", 0, 0.0, 5.0)]);
        let text = sim.render();
        assert!(text.contains("deployment=\"web\""), "{text}");
        assert!(!text.contains("deployment=\"api\""), "{text}");
    }

    #[test]
    fn load_test_requests_count_in_series_of_their_own_labelled_with_the_service_called() {
        let mut sim = Simulator::new(100.0);
        let canary = backend("web", 10, 0.5, 5.0);
        sim.advance(Duration::from_secs(1), &[backend("web", 0, 0.5, 5.0)]);
        sim.advance_load_tests(
            Duration::from_secs(1),
            &[backends::LoadTest {
                backend: canary,
                authority: "web-canary.shop.svc.cluster.local".into(),
            }],
        );
        let text = sim.render();
        let routed = "response_total{direction=\"inbound\",namespace=\"shop\",deployment=\"web\"";
        let tested = format!("{routed},authority=\"web-canary.shop.svc.cluster.local\"");
        assert_eq!(
            sample(&text, &format!("{routed},classification=\"failure\"}}")),
            0.0
        );
        assert_eq!(
            sample(&text, &format!("{tested},classification=\"failure\"}}")),
            5.0
        );
        assert_eq!(
            sample(&text, &format!("{tested},classification=\"success\"}}")),
            5.0
        );
        // Forgotten with the version.
        sim.retain(&[]);
        assert!(!sim.render().contains("authority"));
    }

    #[test]
    fn latency_lands_in_the_first_bucket_that_holds_it() {
        let mut sim = Simulator::new(10.0);
        sim.advance(Duration::from_secs(1), &[backend("web", 100, 0.0, 120.0)]);
        let text = sim.render();
        let bucket = |le: &str| {
            sample(
                &text,
                &format!(
                    "response_latency_ms_bucket{{direction=\"inbound\",namespace=\"shop\",deployment=\"web\",le=\"{le}\"}}"
                ),
            )
        };
        assert_eq!(bucket("100"), 0.0);
        assert_eq!(bucket("200"), 10.0);
        assert_eq!(bucket("+Inf"), 10.0);
    }

    #[test]
    fn rendering_is_sorted_and_stable() {
        let mut sim = Simulator::new(1.0);
        sim.advance(
            Duration::from_secs(1),
            &[backend("web", 50, 0.0, 1.0), backend("api", 50, 0.0, 1.0)],
        );
        let text = sim.render();
        assert_eq!(text, sim.render());
        let api = text.find("deployment=\"api\"").expect("api series");
        let web = text.find("deployment=\"web\"").expect("web series");
        assert!(api < web);
    }
}

/// What the simulator's tests share.
#[cfg(test)]
pub(crate) mod testing {
    use k8s_openapi::api::apps::v1::Deployment;
    use serde_json::json;

    /// A Deployment `name` in `shop` with `ready` Ready replicas and pod annotations.
    pub(crate) fn deployment(name: &str, ready: i32, annotations: &[(&str, &str)]) -> Deployment {
        let annotations: serde_json::Map<_, _> = annotations
            .iter()
            .map(|(k, v)| ((*k).to_owned(), json!(v)))
            .collect();
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {
                "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}, "annotations": annotations}}
            },
            "status": {"readyReplicas": ready}
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }
}
