//! Gloo's Envoy proxies (`gloo`): `envoy_cluster_upstream_rq` and
//! `envoy_cluster_upstream_rq_time` of the Envoy cluster of the canary's Upstream
//! (`<namespace>-<service>-canaryupstream-<port>_<namespace>`, see [`crate::router::gloo`]).

use super::Side;
use crate::analysis::promql::{label_value, regex_literal};
use crate::router::gloo::{
    Side as UpstreamSide, envoy_cluster_name, upstream_name, upstream_prefix,
};
use crate::spec::{Builtin, Duration};

/// The query of `builtin` for the canary Upstream of the apex Service `service` in
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
            "sum(rate(envoy_cluster_upstream_rq{{{selector},envoy_response_code!~\"5.*\"}}[{window}])) / \
             sum(rate(envoy_cluster_upstream_rq{{{selector}}}[{window}])) * 100"
        ),
        // Envoy's upstream request time is in milliseconds already.
        Builtin::Duration => format!(
            "histogram_quantile(0.99, sum(rate(envoy_cluster_upstream_rq_time_bucket{{{selector}}}[{window}])) by (le))"
        ),
    }
}

/// The Envoy cluster of the canary's (or the primary's) Upstream, on `port` (any port when
/// unknown).
fn selector(namespace: &str, service: &str, port: Option<i32>, side: Side) -> String {
    let side = match side {
        Side::Canary => UpstreamSide::Canary,
        Side::Primary => UpstreamSide::Primary,
    };
    match port {
        Some(port) => {
            let upstream = upstream_name(namespace, service, side, port);
            format!(
                "envoy_cluster_name=\"{}\"",
                label_value(&envoy_cluster_name(&upstream, namespace))
            )
        }
        None => {
            let prefix = upstream_prefix(namespace, service, side);
            let suffix = envoy_cluster_name("", namespace);
            let regex = format!("{}[0-9]+{}", regex_literal(&prefix), regex_literal(&suffix));
            format!("envoy_cluster_name=~\"{}\"", label_value(&regex))
        }
    }
}

/// The requests Envoy sent to the canary's (or the primary's) Upstream over `range`; only
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
    let failure = if failed {
        ",envoy_response_code=~\"5.*\""
    } else {
        ""
    };
    format!("sum(increase(envoy_cluster_upstream_rq{{{selector}{failure}}}[{range}]))")
}

/// The requests Envoy sent to the canary's Upstream over `range` by latency bucket (`le`, in
/// milliseconds), for the sequential latency check.
pub(super) fn latency_buckets(
    namespace: &str,
    service: &str,
    port: Option<i32>,
    range: &str,
) -> String {
    let selector = selector(namespace, service, port, Side::Canary);
    format!("sum by (le) (increase(envoy_cluster_upstream_rq_time_bucket{{{selector}}}[{range}]))")
}
