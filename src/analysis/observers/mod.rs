//! Who sees the canary's requests and exports them to Prometheus ([`Observer`]), and so which
//! series the builtin checks ([`Builtin`]) query: Flagger's metrics observers, one file per
//! data plane. `serin.dev/metrics-provider` chooses it ([`MetricsProvider`]; by default the
//! provider's own data plane):
//!
//! - `linkerd.rs`: Linkerd's proxies (`linkerd`; the default of `linkerd`, `smi:v1alpha2`,
//!   `gatewayapi`), SPEC "Metrics";
//! - `traefik.rs`: Traefik as the Gateway API implementation (`traefik`, with `gatewayapi`);
//! - `nginx.rs`: ingress-nginx (`nginx`);
//! - `gloo.rs`: Gloo's Envoy proxies (`envoy`, with `gloo`).
//!
//! A new data plane is a file here with its `query`, a [`MetricsProvider`] value, a variant of
//! [`Observer`], and its line in [`Observer::of`] and [`Builtin::query_for`].

mod gloo;
mod linkerd;
mod nginx;
mod traefik;

pub use traefik::traefik_service;

use crate::spec::{Builtin, CanarySpec, Duration, MetricsProvider};

/// Who sees the canary's requests and exports them to Prometheus, which decides the series
/// the builtin checks query (Flagger's metrics observers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Observer<'a> {
    /// Linkerd's proxies (`linkerd`, `smi:v1alpha2`, `gatewayapi`): the inbound
    /// `response_total` and `response_latency_ms` of the canary Deployment's pods.
    Linkerd {
        namespace: &'a str,
        /// The canary Deployment.
        deployment: &'a str,
    },
    /// ingress-nginx (`nginx`): `nginx_ingress_controller_requests` and
    /// `nginx_ingress_controller_request_duration_seconds` of the user's Ingress, for the
    /// requests it sent to the canary (a non-empty `canary` label: the canary upstream).
    Nginx {
        namespace: &'a str,
        /// The user's Ingress (`serin.dev/ingress`): ingress-nginx labels the canary's
        /// requests with it, not with the canary Ingress.
        ingress: &'a str,
    },
    /// Gloo's Envoy proxies (`gloo`): `envoy_cluster_upstream_rq` and
    /// `envoy_cluster_upstream_rq_time` of the Envoy cluster of the canary's Upstream
    /// (`<namespace>-<service>-canaryupstream-<port>_<namespace>`, see [`crate::router::gloo`]).
    Gloo {
        namespace: &'a str,
        /// The apex Service, which names the Upstreams.
        service: &'a str,
        /// The port the Upstreams route to; any port when unknown.
        port: Option<i32>,
    },
    /// Traefik as the Gateway API implementation (`gatewayapi`):
    /// `traefik_service_requests_total` and `traefik_service_request_duration_seconds` of
    /// the Traefik service of the HTTPRoute's canary backend
    /// (`<namespace>-<service>-canary-http-<port>@kubernetesgateway`).
    Traefik {
        namespace: &'a str,
        /// The apex Service, which names the backends.
        service: &'a str,
        /// The Service port of the backendRefs; any port when unknown.
        port: Option<i32>,
    },
}

impl<'a> Observer<'a> {
    /// The observer of a release of the canary Deployment `target` in `namespace`: the
    /// spec's metrics provider (validation has checked that it sees the provider's requests).
    pub fn of(spec: &'a CanarySpec, namespace: &'a str, target: &'a str) -> Self {
        match spec.effective_metrics_provider() {
            MetricsProvider::Nginx => Observer::Nginx {
                namespace,
                // Validation requires the Ingress with `nginx`.
                ingress: spec.ingress.as_deref().unwrap_or(&spec.service),
            },
            MetricsProvider::Envoy => Observer::Gloo {
                namespace,
                service: &spec.service,
                port: spec.port,
            },
            MetricsProvider::Traefik => Observer::Traefik {
                namespace,
                service: &spec.service,
                port: spec.port,
            },
            MetricsProvider::Linkerd => Observer::Linkerd {
                namespace,
                deployment: target,
            },
        }
    }
}

/// Whose requests a count is of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Canary,
    Primary,
}

impl Observer<'_> {
    /// The requests `side` served in the last `seconds` (only the failed ones when `failed`),
    /// as one number: `sum(increase(…[<seconds>s]))`. No series (no request yet) answers
    /// nothing, which counts as zero.
    pub fn request_count(&self, side: Side, failed: bool, seconds: u64) -> String {
        let range = format!("{}s", seconds.max(1));
        match *self {
            Observer::Linkerd {
                namespace,
                deployment,
            } => linkerd::count(namespace, deployment, side, failed, &range),
            Observer::Nginx { namespace, ingress } => {
                nginx::count(namespace, ingress, side, failed, &range)
            }
            Observer::Gloo {
                namespace,
                service,
                port,
            } => gloo::count(namespace, service, port, side, failed, &range),
            Observer::Traefik {
                namespace,
                service,
                port,
            } => traefik::count(namespace, service, port, side, failed, &range),
        }
    }
}

/// A histogram of the canary's request latencies, by bucket: the query and the unit of its
/// `le` boundaries.
#[derive(Clone, Debug, PartialEq)]
pub struct LatencyBuckets {
    /// `sum by (le) (increase(<histogram>_bucket{…}[<seconds>s]))`: one cumulative count per
    /// boundary, `+Inf` the total.
    pub query: String,
    /// Milliseconds per unit of `le`: 1 for a histogram in milliseconds, 1000 in seconds.
    pub unit_ms: f64,
}

impl Observer<'_> {
    /// The canary's requests of the last `seconds` by latency bucket, for the sequential
    /// latency check (the requests above a boundary are the total minus its bucket).
    pub fn latency_buckets(&self, seconds: u64) -> LatencyBuckets {
        let range = format!("{}s", seconds.max(1));
        let (query, unit_ms) = match *self {
            Observer::Linkerd {
                namespace,
                deployment,
            } => (linkerd::latency_buckets(namespace, deployment, &range), 1.0),
            Observer::Nginx { namespace, ingress } => {
                (nginx::latency_buckets(namespace, ingress, &range), 1000.0)
            }
            Observer::Gloo {
                namespace,
                service,
                port,
            } => (gloo::latency_buckets(namespace, service, port, &range), 1.0),
            Observer::Traefik {
                namespace,
                service,
                port,
            } => (
                traefik::latency_buckets(namespace, service, port, &range),
                1000.0,
            ),
        };
        LatencyBuckets { query, unit_ms }
    }
}

/// The builtin queries, as the observers write them. (`Builtin` itself, its names and units,
/// is spec vocabulary: `crate::spec::Builtin`.)
impl Builtin {
    /// The Linkerd query (SPEC "Metrics") for the canary Deployment `target` in `namespace`.
    pub fn query(self, namespace: &str, target: &str, window: Duration) -> String {
        let observer = Observer::Linkerd {
            namespace,
            deployment: target,
        };
        self.query_for(&observer, window)
    }

    /// The query of what `observer` saw of the canary, rating over `window`. The window
    /// prints as Serin's canonical duration (`1m30s`), which Prometheus accepts.
    pub fn query_for(self, observer: &Observer<'_>, window: Duration) -> String {
        match *observer {
            Observer::Linkerd {
                namespace,
                deployment,
            } => linkerd::query(self, namespace, deployment, window),
            Observer::Nginx { namespace, ingress } => {
                nginx::query(self, namespace, ingress, window)
            }
            Observer::Gloo {
                namespace,
                service,
                port,
            } => gloo::query(self, namespace, service, port, window),
            Observer::Traefik {
                namespace,
                service,
                port,
            } => traefik::query(self, namespace, service, port, window),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
