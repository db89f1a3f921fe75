//! The test's decisions on chosen counts, and its error rates and detection times measured
//! by simulating releases with a seeded random generator (every run the same).

use super::*;

const ONE_PERCENT: Test = Test { limit: 0.01 };

fn counts(requests: f64, failed: f64) -> Counts {
    Counts { requests, failed }
}

#[test]
fn the_rates_are_the_limit_and_four_limits_and_stay_below_one() {
    assert_eq!(ONE_PERCENT.rates(), (0.01, 0.04));
    let loose = Test { limit: 0.8 };
    let (p0, p1) = loose.rates();
    assert!(p0 <= 0.8 && 0.8 < p1 && p1 < 1.0, "{p0} {p1}");
    assert!((Test::for_success_rate(99.0).limit - 0.01).abs() < 1e-12);
}

#[test]
fn few_requests_without_failures_are_thin_never_a_pass() {
    assert_eq!(min_requests(0.01), 34.0);
    assert_eq!(ONE_PERCENT.judge(counts(0.0, 0.0)), Verdict::Thin);
    assert_eq!(ONE_PERCENT.judge(counts(33.0, 0.0)), Verdict::Thin);
    assert_eq!(ONE_PERCENT.judge(counts(34.0, 0.0)), Verdict::Good);
    // A few failures among few requests are not decisive either.
    assert_eq!(ONE_PERCENT.judge(counts(3.0, 3.0)), Verdict::Thin);
}

#[test]
fn four_failures_in_a_row_are_decisive_against_a_one_percent_limit() {
    // 4 × ln 4 = 5.5 is past Wald's boundary ln(99) = 4.6: thin traffic, clear failure;
    // 3 × ln 4 = 4.2 is not.
    assert_eq!(ONE_PERCENT.judge(counts(4.0, 4.0)), Verdict::Bad);
    assert_eq!(ONE_PERCENT.judge(counts(30.0, 9.0)), Verdict::Bad);
}

#[test]
fn one_failure_in_fifty_passes_two_hold_and_two_in_a_hundred_pass() {
    assert_eq!(ONE_PERCENT.judge(counts(50.0, 1.0)), Verdict::Good);
    assert_eq!(ONE_PERCENT.judge(counts(50.0, 2.0)), Verdict::Hold);
    assert_eq!(ONE_PERCENT.judge(counts(100.0, 2.0)), Verdict::Good);
}

#[test]
fn a_canary_failing_at_half_the_limit_passes_on_the_expected_counts() {
    // 50 requests at 0.5 %: 0.25 failures, as the simulator without noise counts them.
    assert_eq!(ONE_PERCENT.judge(counts(50.0, 0.25)), Verdict::Good);
    assert_eq!(ONE_PERCENT.judge(counts(500.0, 2.5)), Verdict::Good);
    // Twice the limit is still on the good side of the test's indifference point (2.2 %);
    // three times the limit is decisive in 500 requests.
    assert_eq!(ONE_PERCENT.judge(counts(500.0, 10.0)), Verdict::Good);
    assert_eq!(ONE_PERCENT.judge(counts(500.0, 15.0)), Verdict::Bad);
}

#[test]
fn a_limit_of_zero_fails_on_any_failure_and_a_limit_of_one_never_fails() {
    let none_allowed = Test::for_success_rate(100.0);
    assert_eq!(none_allowed.judge(counts(1.0, 1.0)), Verdict::Bad);
    assert_eq!(none_allowed.judge(counts(500.0, 0.0)), Verdict::Good);
    let anything = Test::for_success_rate(0.0);
    assert_eq!(anything.judge(counts(50.0, 50.0)), Verdict::Good);
}

#[test]
fn nonsense_counts_are_read_within_bounds() {
    // More failures than requests, negative counts: clamped, never a panic or NaN.
    assert_eq!(ONE_PERCENT.judge(counts(10.0, 50.0)), Verdict::Bad);
    assert_eq!(ONE_PERCENT.judge(counts(-5.0, -1.0)), Verdict::Thin);
    assert!(
        !ONE_PERCENT
            .log_likelihood_ratio(counts(10.0, 50.0))
            .is_nan()
    );
}

#[test]
fn against_the_primary_a_shared_failure_holds_and_a_worse_canary_rolls_back() {
    let failing = counts(1000.0, 300.0);
    // Both at 30 %: the primary's fault as much as the canary's.
    assert_eq!(
        decide(ONE_PERCENT, counts(100.0, 30.0), Some(failing), 1.0),
        Decision::SharedFailure
    );
    // The primary at 30 %, the canary at 60 %: worse by far more than one point.
    assert_eq!(
        decide(ONE_PERCENT, counts(100.0, 60.0), Some(failing), 1.0),
        Decision::WorseThanPrimary
    );
    // Both under a loose limit (95 %), the canary 3 points worse than a clean primary.
    let loose = Test::for_success_rate(95.0);
    assert_eq!(loose.judge(counts(2000.0, 60.0)), Verdict::Good);
    assert_eq!(
        decide(loose, counts(2000.0, 60.0), Some(counts(10000.0, 0.0)), 1.0),
        Decision::WorseThanPrimary
    );
    // Without the comparison the same canary moves on.
    assert_eq!(
        decide(loose, counts(2000.0, 60.0), None, 1.0),
        Decision::Advance
    );
    // A healthy canary next to a healthy primary moves on; a quiet primary compares nothing.
    assert_eq!(
        decide(
            ONE_PERCENT,
            counts(100.0, 0.0),
            Some(counts(900.0, 1.0)),
            1.0
        ),
        Decision::Advance
    );
    assert_eq!(
        decide(ONE_PERCENT, counts(100.0, 0.0), Some(counts(0.0, 0.0)), 1.0),
        Decision::Advance
    );
    assert_eq!(
        decide(
            ONE_PERCENT,
            counts(100.0, 30.0),
            Some(counts(0.0, 0.0)),
            1.0
        ),
        Decision::RollBack
    );
}

/// SplitMix64: a small seeded generator, so the simulations are the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Failures among `n` requests each failing with probability `p`.
    fn binomial(&mut self, n: u32, p: f64) -> u32 {
        (0..n).filter(|_| self.next() < p).count() as u32
    }
}

/// How one simulated release ended.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// Rolled back after this many seconds, having served this many failed requests.
    RolledBack { seconds: u32, failed: u32 },
    /// Promoted after this many seconds.
    Promoted { seconds: u32 },
}

/// One release as the controller runs it with the settings: 50 requests/s split by
/// weight, a look every 5 s, the weight moving by 10 up to 50 at 10 s intervals when the
/// evidence is good, counts since the weight last moved; promotion one interval after 50 %.
fn release(rng: &mut Rng, failure_rate: f64) -> Outcome {
    let (interval, look, rate) = (10, 5, 50.0);
    let (mut weight, mut since, mut step) = (10u32, 0u32, Counts::default());
    let mut failed_total = 0;
    for second in 1..=600 {
        let requests = (rate * f64::from(weight) / 100.0) as u32;
        let failed = rng.binomial(requests, failure_rate);
        failed_total += failed;
        step.requests += f64::from(requests);
        step.failed += f64::from(failed);
        if second % look != 0 {
            continue;
        }
        match ONE_PERCENT.judge(step) {
            Verdict::Bad => {
                return Outcome::RolledBack {
                    seconds: second,
                    failed: failed_total,
                };
            }
            Verdict::Good if second - since >= interval => {
                if weight == 50 {
                    return Outcome::Promoted { seconds: second };
                }
                weight += 10;
                since = second;
                step = Counts::default();
            }
            _ => {}
        }
    }
    Outcome::Promoted { seconds: u32::MAX }
}

#[test]
fn a_canary_at_half_the_limit_is_never_rolled_back_and_promoted_on_time_in_1000_releases() {
    let mut rng = Rng(18);
    let mut late = 0;
    for _ in 0..1000 {
        match release(&mut rng, 0.005) {
            Outcome::RolledBack { .. } => panic!("a 0.5 % canary was rolled back"),
            // Five steps of 10 s: 50 s when no interval holds.
            Outcome::Promoted { seconds } => late += usize::from(seconds > 50),
        }
    }
    // An interval holds when two failures come among few requests: 52 releases in 1000
    // lose one interval with this seed.
    assert!(late <= 60, "{late} of 1000 promoted late");
}

#[test]
fn a_healthy_canary_is_promoted_in_five_intervals() {
    let mut rng = Rng(7);
    for _ in 0..100 {
        assert_eq!(release(&mut rng, 0.0), Outcome::Promoted { seconds: 50 });
    }
}

/// The worst (rollback seconds, failed requests) over 200 releases at `failure_rate`.
fn worst_detection(seed: u64, failure_rate: f64) -> (u32, u32) {
    let mut rng = Rng(seed);
    let mut worst = (0, 0);
    for _ in 0..200 {
        match release(&mut rng, failure_rate) {
            Outcome::RolledBack { seconds, failed } => {
                worst = (worst.0.max(seconds), worst.1.max(failed));
            }
            other => panic!("a canary failing {failure_rate} was not rolled back: {other:?}"),
        }
    }
    worst
}

#[test]
fn a_canary_failing_every_request_is_rolled_back_at_the_first_look() {
    // 5 requests/s at 10 %: 25 failures by the first look at 5 s; the boundary needs 4.
    assert_eq!(worst_detection(1, 1.0), (5, 25));
}

#[test]
fn a_canary_failing_30_percent_is_rolled_back_within_two_looks() {
    let (seconds, failed) = worst_detection(2, 0.3);
    assert!(
        seconds <= 10 && failed <= 15,
        "{seconds} s, {failed} failed"
    );
}

#[test]
fn a_canary_failing_5_percent_is_rolled_back_before_it_is_promoted() {
    let (seconds, failed) = worst_detection(3, 0.05);
    assert!(
        seconds <= 60 && failed <= 30,
        "{seconds} s, {failed} failed"
    );
}

#[test]
fn the_confidence_moves_the_rollback_boundary_and_nothing_else() {
    assert_eq!(Test::rollback_boundary_at(99.0), Test::rollback_boundary());
    assert!(Test::rollback_boundary_at(90.0) < Test::rollback_boundary_at(99.0));
    assert!(Test::rollback_boundary_at(99.0) < Test::rollback_boundary_at(99.9));
    // At 99 % the verdicts are the default test's.
    for requests in [0.0f64, 10.0, 34.0, 50.0, 100.0, 500.0] {
        for failed in [0.0, 1.0, 2.0, 4.0, 9.0, 15.0] {
            let c = counts(requests.max(failed), failed);
            assert_eq!(ONE_PERCENT.judge_at(c, 99.0), ONE_PERCENT.judge(c), "{c:?}");
        }
    }
    // Four failures in a row: decisive at 99 %, thin at 99.9 % (ln 990 = 6.9 > 4 ln 4);
    // five are decisive there. At 90 % two are enough (2 ln 4 = 2.8 > ln 9.9 = 2.3).
    assert_eq!(ONE_PERCENT.judge_at(counts(4.0, 4.0), 99.9), Verdict::Thin);
    assert_eq!(ONE_PERCENT.judge_at(counts(5.0, 5.0), 99.9), Verdict::Bad);
    assert_eq!(ONE_PERCENT.judge_at(counts(2.0, 2.0), 99.0), Verdict::Thin);
    assert_eq!(ONE_PERCENT.judge_at(counts(2.0, 2.0), 90.0), Verdict::Bad);
    // With enough requests, evidence short of the higher boundary holds.
    assert_eq!(
        ONE_PERCENT.judge_at(counts(500.0, 15.0), 99.0),
        Verdict::Bad
    );
    assert_eq!(
        ONE_PERCENT.judge_at(counts(500.0, 15.0), 99.9),
        Verdict::Hold
    );
    // The pass and the minimum do not depend on the confidence.
    assert_eq!(ONE_PERCENT.judge_at(counts(50.0, 1.0), 90.0), Verdict::Good);
    assert_eq!(ONE_PERCENT.judge_at(counts(33.0, 0.0), 90.0), Verdict::Thin);
}

#[test]
fn a_p99_limit_allows_one_percent_of_slow_requests() {
    assert!((Test::for_quantile(0.99).limit - 0.01).abs() < 1e-12);
    assert!((Test::for_quantile(0.95).limit - 0.05).abs() < 1e-12);
}

#[test]
fn combined_the_worse_decision_wins_and_the_weight_moves_only_when_both_advance() {
    use Decision::*;
    assert_eq!(combine(Advance, Advance), Advance);
    assert_eq!(combine(Advance, Hold), Hold);
    assert_eq!(combine(Hold, Advance), Hold);
    assert_eq!(combine(Advance, RollBack), RollBack);
    assert_eq!(combine(RollBack, Advance), RollBack);
    assert_eq!(combine(SharedFailure, RollBack), RollBack);
    assert_eq!(combine(Hold, SharedFailure), SharedFailure);
    // Both rolling back: the success rate's reason is kept.
    assert_eq!(combine(WorseThanPrimary, RollBack), WorseThanPrimary);
}

#[test]
fn the_confidence_reaches_the_comparison_with_the_primary() {
    let primary = counts(1000.0, 0.0);
    // 5 of 25 against a primary at 0 % plus 1 point: rolled back at 99 %, held at 99.9 %.
    let canary = counts(25.0, 5.0);
    assert_eq!(
        decide_at(ONE_PERCENT, canary, Some(primary), 1.0, 99.0),
        Decision::WorseThanPrimary
    );
    assert_eq!(
        decide_at(ONE_PERCENT, canary, Some(primary), 1.0, 99.9),
        Decision::Hold
    );
    assert_eq!(
        decide(ONE_PERCENT, canary, Some(primary), 1.0),
        decide_at(ONE_PERCENT, canary, Some(primary), 1.0, 99.0)
    );
}
