//! The sequential test that judges a canary on the requests it served since its weight last
//! moved (SPEC "Metrics", `serin.dev/sequential-checks`; the why is in `docs/analysis.md`).
//!
//! Wald's sequential probability ratio test (SPRT) on the failure rate `p`, between the limit
//! itself, `p0 = L = 1 − success-rate/100` (a canary at the limit is what the user accepted),
//! and `p1 = 4 L` ([`SPREAD`]; a rate that matters). Each request adds `ln(p1/p0)` to the
//! log-likelihood ratio when it failed and `ln((1−p1)/(1−p0))` (negative) when it did not.
//! After every look the sum is compared with Wald's boundary `ln((1−β)/α)` and with 0:
//!
//! - at or above the boundary, the counts are 99 times likelier (by default) under a rate of
//!   four limits than under the limit: [`Verdict::Bad`], a rollback now;
//! - at or below 0 (the counts favour the limit over four limits) with at least
//!   [`min_requests`] requests: [`Verdict::Good`], the weight may move at the interval;
//! - below [`min_requests`] requests and not bad: [`Verdict::Thin`], never a pass;
//! - in between: [`Verdict::Hold`], the counts go on accumulating.
//!
//! Why these two rates: the weight must move on time for a canary at half the limit, which at
//! the first step (5 requests/s) shows one failure in 50 requests one step in five. With
//! `p1 = 4 L` one failure is worth 45 successes, so it still passes; with `p1 = 2 L` it would
//! take 69 and hold the step. A rate of `p0 = L` (not lower) keeps such a canary far from the
//! rollback boundary: the false rollback bound α holds for a canary *at* the limit, and one at
//! half of it drifts away from the boundary. The price: the sum only drifts up above about
//! 2.2 L (`ln((1−p0)/(1−p1)) / ln(p1(1−p0)/(p0(1−p1)))`), so a canary failing between L and
//! twice L may well be promoted; the simulations in the tests measure all of this.
//! Counts accumulate over looks (they are totals since the weight moved), so looking every
//! few seconds does not spend the error budget as repeated fixed-size tests would: the SPRT's
//! error bounds hold for any number of looks.
//!
//! The latency check uses the same test on the share of requests slower than its limit
//! ([`Test::for_quantile`]: 1 % for a p99). `serin.dev/confidence` moves only the rollback
//! boundary ([`Test::judge_at`], [`decide_at`]); [`combine`] joins the two checks' decisions.

/// Requests counted since the weight last moved.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Counts {
    /// Requests served (fractional: Prometheus' `increase` extrapolates).
    pub requests: f64,
    /// Of those, requests that failed.
    pub failed: f64,
}

impl Counts {
    /// The share of requests that failed; `None` without requests.
    pub fn failure_rate(&self) -> Option<f64> {
        (self.requests > 0.0).then(|| (self.failed / self.requests).clamp(0.0, 1.0))
    }
}

/// What the counts say about the canary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Too few requests to say anything good: hold.
    Thin,
    /// Not enough evidence either way: hold.
    Hold,
    /// The failure rate does not matter: the weight may move.
    Good,
    /// The failure rate is above the limit with the test's confidence: roll back.
    Bad,
}

/// The false-rollback bound α of the test: a canary failing at the limit is rolled back with
/// at most this probability (confidence 99 %); one failing less, with far less.
pub const ALPHA: f64 = 0.01;
/// The miss bound β: a canary failing at four times the limit is accepted with at most this
/// probability (had the test no minimum and no interval to cut it short).
pub const BETA: f64 = 0.01;
/// The rate that matters, as a factor of the limit.
pub const SPREAD: f64 = 4.0;

/// The test for one limit of failed requests (a share, 0..=1).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Test {
    /// The limit: `1 − success-rate/100`.
    pub limit: f64,
}

impl Test {
    /// The test of a success-rate threshold in percent (`serin.dev/success-rate`).
    pub fn for_success_rate(percent: f64) -> Self {
        Test {
            limit: (1.0 - percent / 100.0).clamp(0.0, 1.0),
        }
    }

    /// The rates of the two hypotheses: `(p0, p1)`, with `0 < p0 < p1 < 1` whenever the
    /// limit is strictly between 0 and 1.
    pub fn rates(&self) -> (f64, f64) {
        let l = self.limit;
        let p0 = l;
        // Four limits would reach 1 beyond a 25 % limit: halfway to 1 instead.
        let p1 = (l * SPREAD).min((1.0 + l) / 2.0);
        (p0, p1)
    }

    /// Wald's rollback boundary on the log-likelihood ratio.
    pub fn rollback_boundary() -> f64 {
        ((1.0 - BETA) / ALPHA).ln()
    }

    /// The log-likelihood ratio of "a rate that matters" over "a rate that does not", for
    /// these counts (`+∞` for a failure under a limit of 0).
    pub fn log_likelihood_ratio(&self, counts: Counts) -> f64 {
        let failed = counts.failed.clamp(0.0, counts.requests.max(0.0));
        let passed = (counts.requests - failed).max(0.0);
        let (p0, p1) = self.rates();
        match self.limit {
            // No failure allowed: one is decisive, none is the best there is.
            l if l <= 0.0 => match failed > 0.0 {
                true => f64::INFINITY,
                false => -passed,
            },
            // Every request may fail: nothing is ever decisive against the canary.
            l if l >= 1.0 => -passed,
            _ => failed * (p1 / p0).ln() + passed * ((1.0 - p1) / (1.0 - p0)).ln(),
        }
    }

    /// What `counts` say.
    pub fn judge(&self, counts: Counts) -> Verdict {
        let ratio = self.log_likelihood_ratio(counts);
        if ratio >= Self::rollback_boundary() {
            return Verdict::Bad;
        }
        if counts.requests < min_requests(self.limit) {
            return Verdict::Thin;
        }
        match ratio <= 0.0 {
            true => Verdict::Good,
            false => Verdict::Hold,
        }
    }
}

/// The false-rollback bound α of a confidence in percent (`serin.dev/confidence`): 99 is
/// [`ALPHA`]. Out-of-range values (admission refuses them) are held to 50–99.99 %.
pub fn alpha_of(confidence_percent: f64) -> f64 {
    // `(100 − c) / 100`, not `1 − c/100`: 99 gives exactly 0.01, the default's α.
    ((100.0 - confidence_percent) / 100.0).clamp(0.0001, 0.5)
}

impl Test {
    /// The test of the share of requests slower than a latency limit, for a limit on the
    /// `quantile` (0.99 for `serin.dev/latency`, a p99): at most `1 − quantile` of the
    /// requests may be slower (1 %).
    pub fn for_quantile(quantile: f64) -> Self {
        Test {
            limit: (1.0 - quantile).clamp(0.0, 1.0),
        }
    }

    /// Wald's rollback boundary at a confidence in percent (`ln((1−β)/α)`, α from
    /// [`alpha_of`]): a higher confidence needs more evidence to roll back.
    pub fn rollback_boundary_at(confidence_percent: f64) -> f64 {
        ((1.0 - BETA) / alpha_of(confidence_percent)).ln()
    }

    /// [`Test::judge`] with the rollback boundary of `confidence_percent` in place of the
    /// default's: the same minimum and the same pass, only "bad" moves.
    pub fn judge_at(&self, counts: Counts, confidence_percent: f64) -> Verdict {
        let bad =
            self.log_likelihood_ratio(counts) >= Self::rollback_boundary_at(confidence_percent);
        match (bad, self.judge(counts)) {
            (true, _) => Verdict::Bad,
            // Bad at the default boundary but not at this one: not enough evidence yet.
            (false, Verdict::Bad) if counts.requests < min_requests(self.limit) => Verdict::Thin,
            (false, Verdict::Bad) => Verdict::Hold,
            (false, verdict) => verdict,
        }
    }
}

/// The fewest requests that may count as a pass: a third of the requests in which a canary
/// failing exactly at the limit would fail once on average (34 for a 1 % limit), at least
/// 10. Below that, silence says nothing: a canary at the limit shows no failure in so few
/// requests more often than not (72 % of the time at 34 requests).
pub fn min_requests(limit: f64) -> f64 {
    match limit > 0.0 {
        true => (1.0 / (3.0 * limit)).ceil().max(10.0),
        false => 100.0,
    }
}

/// With `serin.dev/compare: primary`: the limit the canary is held to against the primary,
/// the primary's failure rate plus `margin_points` percentage points.
pub fn relative_test(primary: Counts, margin_points: f64) -> Option<Test> {
    let rate = primary.failure_rate()?;
    Some(Test {
        limit: (rate + margin_points / 100.0).clamp(0.0, 1.0),
    })
}

/// What the success-rate and latency checks decide together: the worse of the two (a
/// rollback on either rolls back, a hold on either holds, the weight moves only when both
/// say so), the success rate's when they tie.
pub fn combine(success_rate: Decision, latency: Decision) -> Decision {
    let rank = |d: Decision| match d {
        Decision::Advance => 0,
        Decision::Hold => 1,
        Decision::SharedFailure => 2,
        Decision::RollBack | Decision::WorseThanPrimary => 3,
    };
    match rank(latency) > rank(success_rate) {
        true => latency,
        false => success_rate,
    }
}

/// What the canary's and (with `compare: primary`) the primary's counts decide together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The weight may move at the interval.
    Advance,
    /// Not yet: wait for more requests.
    Hold,
    /// Canary and primary both fail above the limit: not the canary's fault, hold.
    SharedFailure,
    /// The canary fails above the limit.
    RollBack,
    /// The canary fails more than the primary by more than the margin.
    WorseThanPrimary,
}

/// Judges the canary's `canary` counts against the absolute `test`, and, when `primary`
/// counts are given (`compare: primary`), against the primary's rate plus `margin_points`.
pub fn decide(test: Test, canary: Counts, primary: Option<Counts>, margin_points: f64) -> Decision {
    decide_at(test, canary, primary, margin_points, (1.0 - ALPHA) * 100.0)
}

/// [`decide`] with the rollback boundary of `confidence_percent` (`serin.dev/confidence`).
pub fn decide_at(
    test: Test,
    canary: Counts,
    primary: Option<Counts>,
    margin_points: f64,
    confidence_percent: f64,
) -> Decision {
    let absolute = test.judge_at(canary, confidence_percent);
    let Some(primary) = primary else {
        return match absolute {
            Verdict::Bad => Decision::RollBack,
            Verdict::Good => Decision::Advance,
            Verdict::Hold | Verdict::Thin => Decision::Hold,
        };
    };
    // The primary's own verdict needs evidence as well: a quiet primary is not "failing".
    let primary_fails = test.judge_at(primary, confidence_percent) == Verdict::Bad;
    let relative =
        relative_test(primary, margin_points).map(|t| t.judge_at(canary, confidence_percent));
    match (absolute, relative) {
        (_, Some(Verdict::Bad)) => Decision::WorseThanPrimary,
        (Verdict::Bad, _) if primary_fails => Decision::SharedFailure,
        (Verdict::Bad, _) => Decision::RollBack,
        (Verdict::Good, Some(Verdict::Good) | None) => Decision::Advance,
        _ if primary_fails => Decision::SharedFailure,
        _ => Decision::Hold,
    }
}

#[cfg(test)]
mod tests;
