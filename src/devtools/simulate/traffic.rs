//! How the simulator counts requests: a steady rate split by weight between versions, and
//! per version the requests answered and those that failed, each with a latency histogram,
//! written out in the Prometheus text format. The proxies it stands in for (Linkerd,
//! ingress-nginx, Envoy) differ in metric names, labels, unit and bucket bounds, not in how
//! requests are counted.

use std::collections::HashMap;
use std::fmt::Write;
use std::hash::Hash;
use std::time::Duration;

use super::Behaviour;

/// The requests a steady rate sends to each version (`K` names a version's series), over
/// time.
#[derive(Debug, Clone)]
pub(super) struct Traffic<K> {
    requests_per_second: f64,
    bounds: &'static [f64],
    /// The histograms' unit in milliseconds (1 for ms, 1000 for seconds).
    unit_ms: f64,
    series: HashMap<K, Outcomes>,
}

impl<K: Eq + Hash + Ord + Clone> Traffic<K> {
    pub(super) fn new(requests_per_second: f64, bounds: &'static [f64], unit_ms: f64) -> Self {
        Self {
            requests_per_second,
            bounds,
            unit_ms,
            series: HashMap::new(),
        }
    }

    /// Accounts for `elapsed` time of `weight` percent of the requests going to the version
    /// `key`, which behaves as `behaviour` says.
    pub(super) fn add(&mut self, elapsed: Duration, key: &K, weight: u32, behaviour: Behaviour) {
        let total = self.requests_per_second * elapsed.as_secs_f64();
        let requests = total * f64::from(weight.min(100)) / 100.0;
        let bounds = self.bounds;
        self.series
            .entry(key.clone())
            .or_insert_with(|| Outcomes::new(bounds))
            .record(
                requests,
                behaviour.error_rate,
                behaviour.latency_ms / self.unit_ms,
            );
    }

    /// Forgets the versions `keep` refuses.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&K) -> bool) {
        self.series.retain(|key, _| keep(key));
    }

    /// Every version's requests, sorted by key for stable output.
    pub(super) fn sorted(&self) -> Vec<(&K, &Outcomes)> {
        let mut series: Vec<_> = self.series.iter().collect();
        series.sort_by(|a, b| a.0.cmp(b.0));
        series
    }
}

/// Requests counted into cumulative buckets of latency, with their count and sum.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Histogram {
    bounds: &'static [f64],
    /// Cumulative counts, one per bound.
    buckets: Vec<f64>,
    sum: f64,
    count: f64,
}

impl Histogram {
    pub(super) fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            buckets: vec![0.0; bounds.len()],
            sum: 0.0,
            count: 0.0,
        }
    }

    /// `requests` requests (a rate times a duration: not a whole number) that each took
    /// `latency`, in the histogram's unit.
    pub(super) fn add(&mut self, requests: f64, latency: f64) {
        self.count += requests;
        self.sum += requests * latency;
        for (count, bound) in self.buckets.iter_mut().zip(self.bounds) {
            if latency <= *bound {
                *count += requests;
            }
        }
    }

    pub(super) fn count(&self) -> f64 {
        self.count
    }

    /// Both histograms' requests in one (their bounds are the same: the simulator's).
    pub(super) fn merged(&self, other: &Histogram) -> Histogram {
        let mut merged = self.clone();
        for (count, more) in merged.buckets.iter_mut().zip(&other.buckets) {
            *count += more;
        }
        merged.sum += other.sum;
        merged.count += other.count;
        merged
    }

    /// The `<metric>_bucket`, `_sum` and `_count` lines of the series with `labels`
    /// (`name="value",...`, no braces).
    pub(super) fn render(&self, out: &mut String, metric: &str, labels: &str) {
        for (count, bound) in self.buckets.iter().zip(self.bounds) {
            let le = match bound.is_infinite() {
                true => "+Inf".to_owned(),
                false => bound.to_string(),
            };
            let _ = writeln!(out, "{metric}_bucket{{{labels},le=\"{le}\"}} {count}");
        }
        let _ = writeln!(out, "{metric}_sum{{{labels}}} {}", self.sum);
        let _ = writeln!(out, "{metric}_count{{{labels}}} {}", self.count);
    }
}

/// One version's requests: those answered well and those that failed.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Outcomes {
    pub ok: Histogram,
    pub failed: Histogram,
}

impl Outcomes {
    pub(super) fn new(bounds: &'static [f64]) -> Self {
        Self {
            ok: Histogram::new(bounds),
            failed: Histogram::new(bounds),
        }
    }

    /// `requests` requests of which the share `error_rate` fails, each taking `latency`.
    pub(super) fn record(&mut self, requests: f64, error_rate: f64, latency: f64) {
        self.ok.add(requests * (1.0 - error_rate), latency);
        self.failed.add(requests * error_rate, latency);
    }

    /// Every request's latency, answered or failed.
    pub(super) fn all(&self) -> Histogram {
        self.ok.merged(&self.failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: [f64; 3] = [10.0, 100.0, f64::INFINITY];

    #[test]
    fn a_steady_rate_is_split_by_weight_in_the_histograms_unit() {
        let mut traffic = Traffic::new(10.0, &BOUNDS, 1000.0);
        let slow = Behaviour {
            error_rate: 0.5,
            latency_ms: 50_000.0,
        };
        traffic.add(Duration::from_secs(2), &"canary", 25, slow);
        traffic.add(Duration::from_secs(2), &"primary", 75, Behaviour::default());
        let sorted = traffic.sorted();
        assert_eq!(
            sorted.iter().map(|(k, _)| **k).collect::<Vec<_>>(),
            ["canary", "primary"]
        );
        let canary = sorted[0].1;
        assert!((canary.failed.count() - 2.5).abs() < 1e-9);
        // 50 s is past the 10 (s) bound and within 100.
        assert_eq!(canary.all().buckets[0], 0.0);
        assert!((canary.all().buckets[1] - 5.0).abs() < 1e-9);
        traffic.retain(|k| *k == "primary");
        assert_eq!(traffic.sorted().len(), 1);
    }

    #[test]
    fn requests_fall_in_every_bucket_at_or_above_their_latency() {
        let mut h = Histogram::new(&BOUNDS);
        h.add(4.0, 50.0);
        h.add(1.0, 500.0);
        let mut out = String::new();
        h.render(&mut out, "lat", "app=\"web\"");
        assert_eq!(
            out,
            "lat_bucket{app=\"web\",le=\"10\"} 0\n\
             lat_bucket{app=\"web\",le=\"100\"} 4\n\
             lat_bucket{app=\"web\",le=\"+Inf\"} 5\n\
             lat_sum{app=\"web\"} 700\n\
             lat_count{app=\"web\"} 5\n"
        );
    }

    #[test]
    fn outcomes_split_requests_by_error_rate_and_merge_back_to_all() {
        let mut o = Outcomes::new(&BOUNDS);
        o.record(10.0, 0.3, 5.0);
        assert!((o.failed.count() - 3.0).abs() < 1e-9);
        assert!((o.ok.count() - 7.0).abs() < 1e-9);
        let all = o.all();
        assert!((all.count() - 10.0).abs() < 1e-9);
        assert!(
            all.buckets.iter().all(|b| (b - 10.0).abs() < 1e-9),
            "{all:?}"
        );
    }
}
