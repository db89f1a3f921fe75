//! Traefik as the Gateway API implementation (`gatewayapi` with `metrics-provider: traefik`):
//! `traefik_service_requests_total` and `traefik_service_request_duration_seconds` of the
//! Traefik service its Gateway provider makes for the HTTPRoute's canary backend.
//!
//! Traefik (v3) names the service of a `backendRef` to a core Service
//! `normalize("<namespace>-<name>-http") + "-" + port` and qualifies it with its provider,
//! `kubernetesgateway`, in the `service` label of its metrics: the canary backend that
//! [`crate::router::gatewayapi`] writes (`<service>-canary` on the Service port, in the
//! Deployment's namespace) is `service="<namespace>-<service>-canary-http-<port>@kubernetesgateway"`.

use super::Side;
use crate::analysis::promql::{label_value, regex_literal};
use crate::spec::{Builtin, CANARY_SUFFIX, Duration, PRIMARY_SUFFIX};

/// The provider Traefik's Gateway API support registers as; it qualifies every name it makes.
const PROVIDER: &str = "kubernetesgateway";

/// The query of `builtin` for the canary backend of the apex Service `service` in
/// `namespace`, on `port` (any port when unknown).
pub(super) fn query(
    builtin: Builtin,
    namespace: &str,
    service: &str,
    port: Option<i32>,
    window: Duration,
) -> String {
    let selector = selector(namespace, service, port, Side::Canary);
    match builtin {
        // 5xx answers are the failures, as Flagger counts them.
        Builtin::SuccessRate => format!(
            "sum(rate(traefik_service_requests_total{{{selector},code!~\"5.*\"}}[{window}])) / \
             sum(rate(traefik_service_requests_total{{{selector}}}[{window}])) * 100"
        ),
        // Seconds, in milliseconds like the Linkerd query.
        Builtin::Duration => format!(
            "histogram_quantile(0.99, sum(rate(traefik_service_request_duration_seconds_bucket{{{selector}}}[{window}])) by (le)) * 1000"
        ),
    }
}

/// The Traefik service of the canary's (or the primary's) backend, on `port` (any port when
/// unknown).
fn selector(namespace: &str, service: &str, port: Option<i32>, side: Side) -> String {
    let suffix = match side {
        Side::Canary => CANARY_SUFFIX,
        Side::Primary => PRIMARY_SUFFIX,
    };
    let backend = format!("{service}{suffix}");
    match port {
        Some(port) => format!(
            "service=\"{}\"",
            label_value(&traefik_service(namespace, &backend, port))
        ),
        None => {
            let prefix = normalize(&format!("{namespace}-{backend}-http"));
            let regex = format!(
                "{}-[0-9]+{}",
                regex_literal(&prefix),
                regex_literal(&format!("@{PROVIDER}"))
            );
            format!("service=~\"{}\"", label_value(&regex))
        }
    }
}

/// The requests Traefik sent to the canary's (or the primary's) backend over `range`; only
/// the 5xx answers when `failed`.
pub(super) fn count(
    namespace: &str,
    service: &str,
    port: Option<i32>,
    side: Side,
    failed: bool,
    range: &str,
) -> String {
    let selector = selector(namespace, service, port, side);
    let failure = if failed { ",code=~\"5.*\"" } else { "" };
    format!("sum(increase(traefik_service_requests_total{{{selector}{failure}}}[{range}]))")
}

/// The `service` label of Traefik's metrics for the requests its Gateway API provider sends to
/// the `backendRef` `backend` (a core Service in `namespace`) on `port`.
pub fn traefik_service(namespace: &str, backend: &str, port: i32) -> String {
    let name = normalize(&format!("{namespace}-{backend}-http"));
    format!("{name}-{port}@{PROVIDER}")
}

/// Traefik's name normalization: every run of characters that are neither letters nor digits
/// becomes one `-`, and none is left at either end (`a--b.c-` is `a-b-c`). Kubernetes names are
/// ASCII, where Rust's and Go's ideas of a letter or digit agree.
fn normalize(name: &str) -> String {
    name.split(|c: char| !c.is_alphanumeric())
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join("-")
}

/// The requests Traefik sent to the canary's backend over `range` by latency bucket (`le`, in
/// seconds), for the sequential latency check.
pub(super) fn latency_buckets(
    namespace: &str,
    service: &str,
    port: Option<i32>,
    range: &str,
) -> String {
    let selector = selector(namespace, service, port, Side::Canary);
    format!(
        "sum by (le) (increase(traefik_service_request_duration_seconds_bucket{{{selector}}}[{range}]))"
    )
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn normalize_joins_the_runs_of_letters_and_digits_with_single_dashes() {
        assert_eq!(normalize("shop-web-canary-http"), "shop-web-canary-http");
        assert_eq!(normalize("a--b.c-"), "a-b-c");
        assert_eq!(normalize("-x__y"), "x-y");
    }
}
