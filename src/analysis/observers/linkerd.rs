//! Linkerd's proxies (`linkerd`, `smi:v1alpha2`, `gatewayapi`): the inbound `response_total`
//! and `response_latency_ms` of the canary Deployment's pods (SPEC "Metrics").

use super::Side;
use crate::analysis::promql::{label_value, regex_literal};
use crate::spec::{Builtin, Duration, PRIMARY_SUFFIX};

/// The query of `builtin` for the canary Deployment `deployment` in `namespace`.
pub(super) fn query(
    builtin: Builtin,
    namespace: &str,
    deployment: &str,
    window: Duration,
) -> String {
    let selector = selector(namespace, deployment);
    match builtin {
        Builtin::SuccessRate => format!(
            "sum(rate(response_total{{{selector},classification!=\"failure\",direction=\"inbound\"}}[{window}])) / \
             sum(rate(response_total{{{selector},direction=\"inbound\"}}[{window}])) * 100"
        ),
        Builtin::Duration => format!(
            "histogram_quantile(0.99, sum(rate(response_latency_ms_bucket{{{selector},direction=\"inbound\"}}[{window}])) by (le))"
        ),
    }
}

fn selector(namespace: &str, deployment: &str) -> String {
    // SPEC's regex match, with the name escaped: `.` is legal in a Deployment
    // name, and the bare regex `good.primary` also matches `good-primary`'s
    // series. (Names without a `.` read exactly as SPEC spells the query.)
    format!(
        "namespace=\"{}\",deployment=~\"{}\"",
        label_value(namespace),
        label_value(&regex_literal(deployment))
    )
}

/// The inbound requests of the canary Deployment `deployment` (or of its primary) over
/// `range`; only those Linkerd classified `failure` when `failed`.
pub(super) fn count(
    namespace: &str,
    deployment: &str,
    side: Side,
    failed: bool,
    range: &str,
) -> String {
    let deployment = match side {
        Side::Canary => deployment.to_owned(),
        Side::Primary => format!("{deployment}{PRIMARY_SUFFIX}"),
    };
    let selector = selector(namespace, &deployment);
    let failure = if failed {
        ",classification=\"failure\""
    } else {
        ""
    };
    format!("sum(increase(response_total{{{selector}{failure},direction=\"inbound\"}}[{range}]))")
}

/// The canary Deployment's inbound requests over `range` by latency bucket (`le`, in
/// milliseconds), for the sequential latency check.
pub(super) fn latency_buckets(namespace: &str, deployment: &str, range: &str) -> String {
    let selector = selector(namespace, deployment);
    format!(
        "sum by (le) (increase(response_latency_ms_bucket{{{selector},direction=\"inbound\"}}[{range}]))"
    )
}
