//! How the simulator counts requests: a steady rate split by weight between versions, and
//! per version the requests answered and those that failed, each with a latency histogram,
//! written out in the Prometheus text format. The proxies it stands in for (Linkerd,
//! ingress-nginx, Envoy) differ in metric names, labels, unit and bucket bounds, not in how
//! requests are counted.
//!
//! Without noise the counters are fractional shares of the rate, the same in every run. With
//! a noise seed (the version's `simulate.serin.dev/noise-seed`, or `serin simulate
//! --noise-seed` for every version) each tick draws whole requests instead: the version's
//! requests from a binomial of the router's whole requests at its weight, and its failures
//! from a binomial of those at its error rate, from a generator seeded per series.

use std::collections::HashMap;
use std::fmt::Write;
use std::hash::{DefaultHasher, Hash, Hasher};
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
    /// The seed of versions whose behaviour names none; `None`: no noise for them.
    noise_seed: Option<u64>,
    /// Per noisy series, its generator and the part of a request carried to the next tick.
    draws: HashMap<K, Draws>,
}

/// What one tick added to a version's series.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct Served {
    pub requests: f64,
    pub failed: f64,
}

impl<K: Eq + Hash + Ord + Clone> Traffic<K> {
    pub(super) fn new(requests_per_second: f64, bounds: &'static [f64], unit_ms: f64) -> Self {
        Self {
            requests_per_second,
            bounds,
            unit_ms,
            series: HashMap::new(),
            noise_seed: None,
            draws: HashMap::new(),
        }
    }

    /// Draws every version's requests with noise, from `seed`, unless its behaviour names a
    /// seed of its own.
    pub(super) fn set_noise_seed(&mut self, seed: Option<u64>) {
        self.noise_seed = seed;
    }

    /// Accounts for `elapsed` time of `weight` percent of the requests going to the version
    /// `key`, which behaves as `behaviour` says; returns what it added.
    pub(super) fn add(
        &mut self,
        elapsed: Duration,
        key: &K,
        weight: u32,
        behaviour: Behaviour,
    ) -> Served {
        let total = self.requests_per_second * elapsed.as_secs_f64();
        let share = f64::from(weight.min(100)) / 100.0;
        let served = match behaviour.noise_seed.or(self.noise_seed) {
            None => {
                let requests = total * share;
                Served {
                    requests,
                    failed: requests * behaviour.error_rate,
                }
            }
            Some(seed) => self
                .draws
                .entry(key.clone())
                .or_insert_with(|| Draws::new(seed, key))
                .draw(total, share, behaviour.error_rate),
        };
        let bounds = self.bounds;
        self.series
            .entry(key.clone())
            .or_insert_with(|| Outcomes::new(bounds))
            .record(served, behaviour.latency_ms / self.unit_ms);
        served
    }

    /// Forgets the versions `keep` refuses.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&K) -> bool) {
        self.series.retain(|key, _| keep(key));
        self.draws.retain(|key, _| keep(key));
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

    /// `served` requests, each taking `latency`.
    pub(super) fn record(&mut self, served: Served, latency: f64) {
        self.ok.add(served.requests - served.failed, latency);
        self.failed.add(served.failed, latency);
    }

    /// Every request's latency, answered or failed.
    pub(super) fn all(&self) -> Histogram {
        self.ok.merged(&self.failed)
    }
}

/// One noisy series' random draws: whole requests, carrying the fraction of a request the
/// rate gives a tick over to the next, so that the mean stays the rate.
#[derive(Debug, Clone)]
struct Draws {
    random: SplitMix64,
    carried: f64,
}

impl Draws {
    /// Seeded by `seed` and the series' key, so that two versions never draw alike.
    fn new<K: Hash>(seed: u64, key: &K) -> Self {
        let mut hasher = DefaultHasher::new();
        key.hash(&mut hasher);
        Draws {
            random: SplitMix64(seed ^ hasher.finish()),
            carried: 0.0,
        }
    }

    /// The router sent `total` requests (a rate times a duration); this version gets each
    /// with probability `share`, and each of those fails with probability `error_rate`.
    fn draw(&mut self, total: f64, share: f64, error_rate: f64) -> Served {
        self.carried += total;
        let whole = self.carried.floor();
        self.carried -= whole;
        let requests = self.random.binomial(whole, share);
        Served {
            requests,
            failed: self.random.binomial(requests, error_rate),
        }
    }
}

/// Sebastiano Vigna's SplitMix64: small, seedable, and good enough for simulated traffic.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A binomial draw: successes among `n` (a whole number) trials of probability `p`. Up
    /// to [`EXACT_TRIALS`] trials are drawn one by one; beyond (a tick delayed by seconds at
    /// a high rate), the normal approximation bounds the work per tick.
    fn binomial(&mut self, n: f64, p: f64) -> f64 {
        let p = p.clamp(0.0, 1.0);
        if n <= 0.0 || p == 0.0 {
            return 0.0;
        }
        if p == 1.0 {
            return n;
        }
        if n <= EXACT_TRIALS {
            return (0..n as u64).filter(|_| self.unit() < p).count() as f64;
        }
        // Box-Muller.
        let (u, v) = (1.0 - self.unit(), self.unit());
        let normal = (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos();
        (n * p + normal * (n * p * (1.0 - p)).sqrt())
            .round()
            .clamp(0.0, n)
    }
}

/// Trials a binomial draw makes one by one (see [`SplitMix64::binomial`]).
const EXACT_TRIALS: f64 = 10_000.0;

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
            noise_seed: None,
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
        o.record(
            Served {
                requests: 10.0,
                failed: 3.0,
            },
            5.0,
        );
        assert!((o.failed.count() - 3.0).abs() < 1e-9);
        assert!((o.ok.count() - 7.0).abs() < 1e-9);
        let all = o.all();
        assert!((all.count() - 10.0).abs() < 1e-9);
        assert!(
            all.buckets.iter().all(|b| (b - 10.0).abs() < 1e-9),
            "{all:?}"
        );
    }

    fn noisy(error_rate: f64, seed: u64) -> Behaviour {
        Behaviour {
            error_rate,
            latency_ms: 5.0,
            noise_seed: Some(seed),
        }
    }

    /// Adds `ticks` ticks of 250 ms at 50 requests/s, `weight` percent to the series `key`.
    fn run(
        traffic: &mut Traffic<&'static str>,
        key: &'static str,
        weight: u32,
        b: Behaviour,
        ticks: u32,
    ) -> Vec<Served> {
        (0..ticks)
            .map(|_| traffic.add(Duration::from_millis(250), &key, weight, b))
            .collect()
    }

    #[test]
    fn noise_draws_whole_requests_that_vary_around_the_rate_and_error_rate() {
        let mut traffic = Traffic::new(50.0, &BOUNDS, 1.0);
        // 10 % of 50 requests/s for 2,000 s: 10,000 requests, 5 % of them failing.
        let ticks = run(&mut traffic, "canary", 10, noisy(0.05, 7), 8_000);
        assert!(
            ticks
                .iter()
                .all(|t| t.requests.fract() == 0.0 && t.failed.fract() == 0.0)
        );
        assert!(ticks.iter().all(|t| t.failed <= t.requests));
        let requests: f64 = ticks.iter().map(|t| t.requests).sum();
        let failed: f64 = ticks.iter().map(|t| t.failed).sum();
        // Binomial spread: sd 95 requests, 22 failures; four of them either side.
        assert!((requests - 10_000.0).abs() < 400.0, "{requests}");
        assert!((failed - 500.0).abs() < 90.0, "{failed}");
        // Not the same every tick: 1.25 requests a tick on average, drawn.
        let distinct: std::collections::BTreeSet<u64> =
            ticks.iter().map(|t| t.requests as u64).collect();
        assert!(distinct.len() >= 3, "{distinct:?}");
        // What the series hold is what the ticks drew.
        let series = traffic.sorted()[0].1;
        assert_eq!(series.all().count(), requests);
        assert_eq!(series.failed.count(), failed);
    }

    #[test]
    fn the_same_seed_draws_the_same_traffic_and_another_seed_other_traffic() {
        let draw = |seed| {
            let mut traffic = Traffic::new(50.0, &BOUNDS, 1.0);
            run(&mut traffic, "canary", 50, noisy(0.3, seed), 400)
        };
        assert_eq!(draw(1), draw(1));
        assert_ne!(draw(1), draw(2));
    }

    #[test]
    fn without_a_seed_there_is_no_noise_and_the_simulator_flag_seeds_every_version() {
        let quiet = Behaviour {
            error_rate: 0.3,
            ..Behaviour::default()
        };
        let mut traffic = Traffic::new(50.0, &BOUNDS, 1.0);
        let exact = run(&mut traffic, "canary", 10, quiet, 3);
        assert!(
            exact
                .iter()
                .all(|t| (t.requests - 1.25).abs() < 1e-9 && (t.failed - 0.375).abs() < 1e-9),
            "{exact:?}"
        );
        traffic.set_noise_seed(Some(3));
        let drawn = run(&mut traffic, "canary", 10, quiet, 40);
        assert!(drawn.iter().all(|t| t.requests.fract() == 0.0), "{drawn:?}");
        assert!(
            drawn.iter().any(|t| t.requests != drawn[0].requests),
            "{drawn:?}"
        );
    }

    #[test]
    fn binomial_draws_stay_within_their_trials_and_follow_the_normal_law_for_many() {
        let mut random = SplitMix64(11);
        assert_eq!(random.binomial(0.0, 0.5), 0.0);
        assert_eq!(random.binomial(12.0, 0.0), 0.0);
        assert_eq!(random.binomial(12.0, 1.0), 12.0);
        for _ in 0..100 {
            let few = random.binomial(12.0, 0.5);
            assert!((0.0..=12.0).contains(&few) && few.fract() == 0.0);
            // Past EXACT_TRIALS: one approximate draw, mean 50,000, sd 158.
            let many = random.binomial(100_000.0, 0.5);
            assert!((many - 50_000.0).abs() < 1_000.0, "{many}");
        }
    }
}
