//! ingress-nginx (`nginx`): `nginx_ingress_controller_requests` and
//! `nginx_ingress_controller_request_duration_seconds` of the user's Ingress, for the requests
//! it sent to the canary (a non-empty `canary` label: the canary upstream).

use super::Side;
use crate::analysis::promql::label_value;
use crate::spec::{Builtin, Duration};

/// The query of `builtin` for the canary's requests through the user's Ingress `ingress` in
/// `namespace` (ingress-nginx labels them with it, not with the canary Ingress).
pub(super) fn query(builtin: Builtin, namespace: &str, ingress: &str, window: Duration) -> String {
    let selector = format!(
        "namespace=\"{}\",ingress=\"{}\",canary!=\"\"",
        label_value(namespace),
        label_value(ingress)
    );
    match builtin {
        // 5xx answers are the failures, as Flagger counts them.
        Builtin::SuccessRate => format!(
            "sum(rate(nginx_ingress_controller_requests{{{selector},status!~\"5.*\"}}[{window}])) / \
             sum(rate(nginx_ingress_controller_requests{{{selector}}}[{window}])) * 100"
        ),
        // Seconds, in milliseconds like the Linkerd query.
        Builtin::Duration => format!(
            "histogram_quantile(0.99, sum(rate(nginx_ingress_controller_request_duration_seconds_bucket{{{selector}}}[{window}])) by (le)) * 1000"
        ),
    }
}

/// The requests ingress-nginx sent to the canary upstream (a non-empty `canary` label) or to
/// the primary (an empty one) over `range`; only the 5xx answers when `failed`.
pub(super) fn count(
    namespace: &str,
    ingress: &str,
    side: Side,
    failed: bool,
    range: &str,
) -> String {
    let canary = match side {
        Side::Canary => "canary!=\"\"",
        Side::Primary => "canary=\"\"",
    };
    let failure = if failed { ",status=~\"5.*\"" } else { "" };
    format!(
        "sum(increase(nginx_ingress_controller_requests{{namespace=\"{}\",ingress=\"{}\",{canary}{failure}}}[{range}]))",
        label_value(namespace),
        label_value(ingress)
    )
}

/// The requests ingress-nginx sent to the canary upstream over `range` by latency bucket
/// (`le`, in seconds), for the sequential latency check.
pub(super) fn latency_buckets(namespace: &str, ingress: &str, range: &str) -> String {
    format!(
        "sum by (le) (increase(nginx_ingress_controller_request_duration_seconds_bucket{{namespace=\"{}\",ingress=\"{}\",canary!=\"\"}}[{range}]))",
        label_value(namespace),
        label_value(ingress)
    )
}
