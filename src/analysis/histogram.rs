//! The sequential latency check's counts from a latency histogram (pure): the requests since
//! the weight moved, and of those the slow ones, the total minus the bucket at the limit.
//!
//! A limit that is not a bucket boundary is read conservatively for users: every request
//! above the largest boundary at or below the limit counts as slow, so some requests faster
//! than the limit may count as slow and none slower than it is missed. A limit below the
//! first boundary has no bucket to count from (admission refuses it for the buckets each
//! data plane ships, `MetricsProvider::latency_buckets_ms`).

use crate::release::Counts;

/// Boundaries read back from seconds (`0.3 × 1000`) may miss a limit by a rounding error.
const TOLERANCE: f64 = 1e-9;

/// The counts of `buckets` (each `le` boundary in milliseconds with its cumulative count,
/// `+Inf` the total) against `limit_ms`, and the boundary the slow requests were counted
/// above. No bucket at all (no request yet) is no request. `Err` says why the histogram
/// cannot be read against the limit.
pub fn slow_requests(buckets: &[(f64, f64)], limit_ms: f64) -> Result<(Counts, f64), String> {
    if buckets.is_empty() {
        return Ok((Counts::default(), limit_ms));
    }
    let total = buckets
        .iter()
        .find(|(le, _)| le.is_infinite() && *le > 0.0)
        .map(|(_, count)| *count)
        .ok_or("the histogram has no +Inf bucket, so its total is unknown")?;
    let at_limit = buckets
        .iter()
        .filter(|(le, _)| le.is_finite() && *le <= limit_ms * (1.0 + TOLERANCE))
        .max_by(|a, b| a.0.total_cmp(&b.0));
    let Some(&(boundary, fast)) = at_limit else {
        let mut finite: Vec<f64> = buckets
            .iter()
            .map(|(le, _)| *le)
            .filter(|le| le.is_finite())
            .collect();
        finite.sort_by(f64::total_cmp);
        let shown: Vec<String> = finite.iter().map(|b| format!("{b}ms")).collect();
        return Err(format!(
            "the latency limit {limit_ms}ms is below the histogram's smallest bucket (buckets: \
             {}): no bucket to count slow requests from",
            shown.join(", ")
        ));
    };
    let requests = total.max(0.0);
    Ok((
        Counts {
            requests,
            // Counters reset or extrapolated apart may make a bucket exceed the total.
            failed: (requests - fast).clamp(0.0, requests),
        },
        boundary,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Linkerd-style buckets (ms): 2,031 requests, 412 of them above 500 ms.
    fn linkerd() -> Vec<(f64, f64)> {
        vec![
            (100.0, 1200.0),
            (200.0, 1400.0),
            (300.0, 1500.0),
            (400.0, 1560.0),
            (500.0, 1619.0),
            (1000.0, 2000.0),
            (f64::INFINITY, 2031.0),
        ]
    }

    #[test]
    fn the_slow_requests_are_the_total_minus_the_bucket_at_the_limit() {
        let (counts, boundary) = slow_requests(&linkerd(), 500.0).expect("readable");
        assert_eq!(
            counts,
            Counts {
                requests: 2031.0,
                failed: 412.0
            }
        );
        assert_eq!(boundary, 500.0);
    }

    #[test]
    fn a_limit_between_boundaries_counts_from_the_boundary_below_it() {
        // 450 ms: the 400 ms bucket, so the requests between 400 and 500 ms count as slow too.
        let (counts, boundary) = slow_requests(&linkerd(), 450.0).expect("readable");
        assert_eq!((counts.failed, boundary), (2031.0 - 1560.0, 400.0));
        // Traefik's boundaries in seconds, read as milliseconds: 500 ms counts from 300 ms.
        let traefik = [
            (0.1 * 1000.0, 10.0),
            (0.3 * 1000.0, 40.0),
            (1.2 * 1000.0, 95.0),
            (5.0 * 1000.0, 100.0),
            (f64::INFINITY, 100.0),
        ];
        let (counts, boundary) = slow_requests(&traefik, 500.0).expect("readable");
        assert_eq!(
            (counts.requests, counts.failed, boundary),
            (100.0, 60.0, 300.0)
        );
        // A boundary that is the limit but for a rounding error is the limit.
        let (_, boundary) = slow_requests(&traefik, 1200.0).expect("readable");
        assert_eq!(boundary, 1.2 * 1000.0);
    }

    #[test]
    fn a_limit_below_the_first_bucket_is_an_error_naming_the_buckets() {
        assert_eq!(
            slow_requests(&linkerd()[5..], 50.0),
            Err(
                "the latency limit 50ms is below the histogram's smallest bucket (buckets: \
                 1000ms): no bucket to count slow requests from"
                    .into()
            )
        );
    }

    #[test]
    fn no_series_is_no_request_and_a_histogram_without_its_total_is_an_error() {
        assert_eq!(slow_requests(&[], 500.0), Ok((Counts::default(), 500.0)));
        assert!(slow_requests(&linkerd()[..6], 500.0).is_err());
        // A bucket above the total (counters read apart) never makes a negative count.
        let odd = [(500.0, 30.0), (f64::INFINITY, 20.0)];
        assert_eq!(slow_requests(&odd, 500.0).map(|(c, _)| c.failed), Ok(0.0));
    }
}
