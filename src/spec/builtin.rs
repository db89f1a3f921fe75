//! The builtin checks (SPEC "Metrics"), by the names users write in an `AnalysisTemplate`, in
//! `Canary.status` and in a `CanaryPolicy`'s limits. Which query measures one is the
//! observer's (`crate::analysis::observers`).

/// The quantile `request-duration` (and so `serin.dev/latency`) limits: the p99. The
/// sequential latency check allows `1 − LATENCY_QUANTILE` of the requests (1 %) above the limit.
pub const LATENCY_QUANTILE: f64 = 0.99;

/// The builtin checks, asked of whoever sees the canary's requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Builtin {
    /// `request-success-rate`: percent of the canary's requests that did not fail.
    SuccessRate,
    /// `request-duration`: p99 latency of the canary's requests, milliseconds.
    Duration,
}

impl Builtin {
    pub const ALL: [Builtin; 2] = [Builtin::SuccessRate, Builtin::Duration];

    /// The metric name, in an `AnalysisTemplate` and in `Canary.status`.
    pub fn name(self) -> &'static str {
        match self {
            Builtin::SuccessRate => "request-success-rate",
            Builtin::Duration => "request-duration",
        }
    }

    pub fn named(name: &str) -> Option<Builtin> {
        Builtin::ALL.into_iter().find(|b| b.name() == name)
    }

    /// Printed after values in messages.
    pub fn unit(self) -> &'static str {
        match self {
            Builtin::SuccessRate => "%",
            Builtin::Duration => "ms",
        }
    }
}
