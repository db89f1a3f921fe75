//! Serin's own Prometheus metrics, served on the admin port at `/metrics`.
//!
//! - `serin_admission_requests_total{webhook, outcome}`: admission reviews answered;
//! - `serin_admission_duration_seconds{webhook}`: time to answer them;
//! - `serin_tls_reloads_total{result}`: attempts to load a rotated serving certificate;
//! - `serin_reconciles_total{result, error}` and `serin_reconcile_duration_seconds`: the
//!   controller's reconciles, failed ones by the kind of error ([`Reconciles`]);
//! - `serin_kube_api_requests_total{method, resource}`: requests to the API server;
//! - `serin_alerts_total{type, result}`: chat alerts sent or failed, by chat service
//!   ([`AlertCounts`]).
//!
//! The release metrics of each canary (`serin_canary_*`) are the controller's
//! (`crate::controller::ReleaseMetrics`), registered in the same registry.
//!
//! [`Metrics`] is cheap to clone (every metric is an `Arc` inside), so handlers and the
//! certificate watcher each keep a copy.

use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// How an admission review was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Allowed,
    Denied,
    /// The request could not be judged (malformed input, an API error): answered with a
    /// refusal that says so.
    Error,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Denied => "denied",
            Outcome::Error => "error",
        }
    }
}

impl EncodeLabelValue for Outcome {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

/// Result of an attempt to load a changed certificate pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReloadResult {
    Success,
    Error,
}

impl EncodeLabelValue for ReloadResult {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        let value = match self {
            ReloadResult::Success => "success",
            ReloadResult::Error => "error",
        };
        std::fmt::Write::write_str(encoder, value)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    webhook: String,
    outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct WebhookLabels {
    webhook: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReloadLabels {
    result: ReloadResult,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ApiRequestLabels {
    method: String,
    resource: String,
}

/// Requests Serin's Kubernetes client sends, by HTTP method and resource: what "near-zero
/// API requests while idle" is measured with, and what the scale bench breaks down per
/// Deployment. A watch is one long GET, counted as method `WATCH`.
#[derive(Debug, Clone, Default)]
pub struct KubeApiRequests(Family<ApiRequestLabels, Counter>);

impl KubeApiRequests {
    pub fn register(registry: &mut Registry) -> Self {
        let requests = Self::default();
        registry.register(
            "serin_kube_api_requests",
            "Requests sent to the Kubernetes API server, by HTTP method (WATCH for a watch) \
             and resource (`deployments/scale`, `canaries/status`, ...)",
            requests.0.clone(),
        );
        requests
    }

    /// Counts one request to `path_and_query` (`/apis/apps/v1/namespaces/a/deployments?...`).
    pub fn count(&self, method: &str, path_and_query: &str) {
        let (path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        let watch = query.split('&').any(|pair| pair == "watch=true");
        self.0
            .get_or_create(&ApiRequestLabels {
                method: if watch { "WATCH" } else { method }.to_owned(),
                resource: resource_of(path),
            })
            .inc();
    }
}

/// The resource (with its subresource) a Kubernetes API path names: `deployments/scale` for
/// `/apis/apps/v1/namespaces/a/deployments/web/scale`; the path's first segment for anything
/// else (`/version`, discovery), so the label's values stay few.
fn resource_of(path: &str) -> String {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    // /api/VERSION/... or /apis/GROUP/VERSION/...
    let rest = match segments.as_slice() {
        ["api", _version, rest @ ..] => rest,
        ["apis", _group, _version, rest @ ..] => rest,
        [first, ..] => return (*first).to_owned(),
        [] => return String::new(),
    };
    let rest = match rest {
        // A namespace's own path (`namespaces/NAME`) is the namespaces resource.
        ["namespaces", _name, inner @ ..] if !inner.is_empty() => inner,
        other => other,
    };
    match rest {
        [] => "discovery".to_owned(),
        [resource] | [resource, _] => (*resource).to_owned(),
        [resource, _name, sub, ..] => format!("{resource}/{sub}"),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReconcileLabels {
    /// `ok` or `error`.
    result: &'static str,
    /// The kind of error (`kube`, `router_not_installed`, ...); empty for `ok`. A fixed set,
    /// one value per variant of the controller's error.
    error: &'static str,
}

/// Reconcile buckets: a reconcile reads from caches and writes a few objects (milliseconds
/// to a second); the API server's own timeouts bound the tail.
const RECONCILE_BUCKETS: [f64; 11] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// The controller's reconciles: how many, how they ended (failed ones by the kind of error),
/// and how long they took. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Reconciles {
    count: Family<ReconcileLabels, Counter>,
    duration: Histogram,
}

impl Reconciles {
    pub fn register(registry: &mut Registry) -> Self {
        let reconciles = Self {
            count: Family::default(),
            duration: Histogram::new(RECONCILE_BUCKETS),
        };
        registry.register(
            "serin_reconciles",
            "Reconciles of opted-in Deployments, by result (ok, error) and kind of error",
            reconciles.count.clone(),
        );
        registry.register_with_unit(
            "serin_reconcile_duration",
            "Time one reconcile took",
            Unit::Seconds,
            reconciles.duration.clone(),
        );
        // The success series exists from the start, so a rate of errors has a denominator.
        let _ = reconciles.count.get_or_create(&ReconcileLabels {
            result: "ok",
            error: "",
        });
        reconciles
    }

    /// Records one reconcile: `error` is `None` when it succeeded, else the kind of error.
    pub fn observe(&self, error: Option<&'static str>, elapsed: Duration) {
        let labels = match error {
            None => ReconcileLabels {
                result: "ok",
                error: "",
            },
            Some(kind) => ReconcileLabels {
                result: "error",
                error: kind,
            },
        };
        self.count.get_or_create(&labels).inc();
        self.duration.observe(elapsed.as_secs_f64());
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct AlertLabels {
    /// The chat service (`slack`, `msteams`, `discord`, `rocket`, `gchat`): a fixed set.
    r#type: &'static str,
    /// `sent` or `failed`.
    result: &'static str,
}

/// Chat alerts, by chat service and result. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct AlertCounts {
    count: Family<AlertLabels, Counter>,
}

impl AlertCounts {
    pub fn register(registry: &mut Registry) -> Self {
        let counts = Self::default();
        registry.register(
            "serin_alerts",
            "Chat alerts of CanaryPolicies, by type (chat service) and result (sent, failed)",
            counts.count.clone(),
        );
        counts
    }

    /// Records one alert to a `type_` chat; `sent` when delivered.
    pub fn observe(&self, type_: &'static str, sent: bool) {
        let result = match sent {
            true => "sent",
            false => "failed",
        };
        self.count
            .get_or_create(&AlertLabels {
                r#type: type_,
                result,
            })
            .inc();
    }
}

/// Latency buckets: admission should answer in well under a millisecond for plain
/// validation and tens of milliseconds when it reads from the API server; the API server's
/// own timeout is 10 s at most, so anything past a second is already a problem.
const DURATION_BUCKETS: [f64; 13] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

/// Handles to Serin's metrics; register once, clone freely.
#[derive(Debug, Clone)]
pub struct Metrics {
    admission_requests: Family<RequestLabels, Counter>,
    admission_duration: Family<WebhookLabels, Histogram>,
    tls_reloads: Family<ReloadLabels, Counter>,
}

impl Metrics {
    /// Creates the metrics and registers them in `registry` (serve it with
    /// [`admin_router`](super::admin_router)).
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Metrics {
            admission_requests: Family::default(),
            admission_duration: Family::new_with_constructor(|| Histogram::new(DURATION_BUCKETS)),
            tls_reloads: Family::default(),
        };
        // prometheus-client appends `_total` to counters and the unit to the histogram.
        registry.register(
            "serin_admission_requests",
            "Admission reviews answered, by webhook and outcome",
            metrics.admission_requests.clone(),
        );
        registry.register_with_unit(
            "serin_admission_duration",
            "Time to answer an admission review, by webhook",
            Unit::Seconds,
            metrics.admission_duration.clone(),
        );
        registry.register(
            "serin_tls_reloads",
            "Attempts to load a changed serving certificate and key, by result",
            metrics.tls_reloads.clone(),
        );
        // Both series exist from the start, so `increase()` over a first failure works.
        for result in [ReloadResult::Success, ReloadResult::Error] {
            let _ = metrics.tls_reloads.get_or_create(&ReloadLabels { result });
        }
        metrics
    }

    /// Records one answered admission review. `webhook` names the endpoint (e.g.
    /// `validate-deployments`); keep the set of names small and fixed.
    pub fn observe(&self, webhook: &str, outcome: Outcome, elapsed: Duration) {
        self.admission_requests
            .get_or_create(&RequestLabels {
                webhook: webhook.to_owned(),
                outcome,
            })
            .inc();
        self.admission_duration
            .get_or_create(&WebhookLabels {
                webhook: webhook.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Records one attempt to load a changed certificate pair.
    pub fn tls_reload(&self, result: ReloadResult) {
        self.tls_reloads
            .get_or_create(&ReloadLabels { result })
            .inc();
    }

    /// How many reload attempts ended with `result` (for tests and diagnostics).
    pub fn tls_reload_count(&self, result: ReloadResult) -> u64 {
        self.tls_reloads
            .get_or_create(&ReloadLabels { result })
            .get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;

    #[test]
    fn api_requests_are_labelled_with_their_resource_and_subresource() {
        let cases = [
            (
                "/apis/apps/v1/namespaces/a/deployments/web/scale",
                "deployments/scale",
            ),
            ("/apis/apps/v1/namespaces/a/deployments/web", "deployments"),
            ("/apis/apps/v1/namespaces/a/deployments", "deployments"),
            ("/apis/apps/v1/deployments", "deployments"),
            (
                "/apis/serin.dev/v1beta1/namespaces/a/canaries/web/status",
                "canaries/status",
            ),
            ("/api/v1/namespaces/a/services/web", "services"),
            ("/api/v1/namespaces/a", "namespaces"),
            ("/api/v1/namespaces", "namespaces"),
            ("/apis/events.k8s.io/v1/namespaces/a/events", "events"),
            ("/apis/apps/v1", "discovery"),
            ("/version", "version"),
        ];
        for (path, resource) in cases {
            assert_eq!(resource_of(path), resource, "{path}");
        }
    }

    #[test]
    fn a_watch_is_counted_apart_from_other_gets() {
        let mut registry = Registry::default();
        let requests = KubeApiRequests::register(&mut registry);
        requests.count(
            "GET",
            "/apis/apps/v1/deployments?labelSelector=x&watch=true",
        );
        requests.count("GET", "/apis/apps/v1/deployments?labelSelector=x");
        requests.count("PATCH", "/apis/apps/v1/namespaces/a/deployments/web/scale");
        let mut text = String::new();
        encode(&mut text, &registry).expect("encode");
        for series in [
            r#"serin_kube_api_requests_total{method="WATCH",resource="deployments"} 1"#,
            r#"serin_kube_api_requests_total{method="GET",resource="deployments"} 1"#,
            r#"serin_kube_api_requests_total{method="PATCH",resource="deployments/scale"} 1"#,
        ] {
            assert!(text.contains(series), "{series} not in\n{text}");
        }
    }

    #[test]
    fn alerts_are_counted_by_type_and_result() {
        let mut registry = Registry::default();
        let alerts = AlertCounts::register(&mut registry);
        alerts.observe("slack", true);
        alerts.observe("slack", true);
        alerts.observe("gchat", false);
        let mut text = String::new();
        encode(&mut text, &registry).expect("encode");
        for series in [
            r#"serin_alerts_total{type="slack",result="sent"} 2"#,
            r#"serin_alerts_total{type="gchat",result="failed"} 1"#,
        ] {
            assert!(text.contains(series), "{series} not in\n{text}");
        }
    }

    #[test]
    fn reconciles_are_counted_by_result_and_failed_ones_by_the_kind_of_error() {
        let mut registry = Registry::default();
        let reconciles = Reconciles::register(&mut registry);
        reconciles.observe(None, Duration::from_millis(3));
        reconciles.observe(None, Duration::from_millis(4));
        reconciles.observe(Some("router_not_installed"), Duration::from_millis(20));
        let mut text = String::new();
        encode(&mut text, &registry).expect("encode");
        for series in [
            r#"serin_reconciles_total{result="ok",error=""} 2"#,
            r#"serin_reconciles_total{result="error",error="router_not_installed"} 1"#,
            r#"serin_reconcile_duration_seconds_count 3"#,
            r#"serin_reconcile_duration_seconds_bucket{le="0.005"} 2"#,
        ] {
            assert!(text.contains(series), "{series} not in\n{text}");
        }
    }

    #[test]
    fn exposition_uses_the_documented_names_and_label_values() {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        metrics.observe(
            "validate-deployments",
            Outcome::Denied,
            Duration::from_millis(3),
        );
        metrics.tls_reload(ReloadResult::Error);
        let mut text = String::new();
        encode(&mut text, &registry).expect("encode");

        assert!(text.contains(
            r#"serin_admission_requests_total{webhook="validate-deployments",outcome="denied"} 1"#
        ));
        assert!(text.contains(
            r#"serin_admission_duration_seconds_bucket{le="0.005",webhook="validate-deployments"} 1"#
        ), "{text}");
        assert!(text.contains(r#"serin_tls_reloads_total{result="error"} 1"#));
        assert_eq!(metrics.tls_reload_count(ReloadResult::Error), 1);
        assert_eq!(metrics.tls_reload_count(ReloadResult::Success), 0);
    }
}
