//! Linkerd's proxies (`linkerd`, `smi:v1alpha2`, `gatewayapi`): the inbound `response_total`
//! and `response_latency_ms` of the canary Deployment's pods (SPEC "Metrics").

use crate::analysis::promql::{label_value, regex_literal};
use crate::spec::{Builtin, Duration};

/// The query of `builtin` for the canary Deployment `deployment` in `namespace`.
pub(super) fn query(
    builtin: Builtin,
    namespace: &str,
    deployment: &str,
    window: Duration,
) -> String {
    // SPEC's regex match, with the name escaped: `.` is legal in a Deployment
    // name, and the bare regex `good.primary` also matches `good-primary`'s
    // series. (Names without a `.` read exactly as SPEC spells the query.)
    let selector = format!(
        "namespace=\"{}\",deployment=~\"{}\"",
        label_value(namespace),
        label_value(&regex_literal(deployment))
    );
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
