//! [`Duration`]: the Go/Kubernetes-style durations of the annotations (`500ms`, `30s`, `1m30s`,
//! `2h`), kept in milliseconds and written back in one canonical form.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// A span of time as users write it in annotations and in the `Canary` spec.
///
/// Canonical form: the non-zero parts from hours down to milliseconds, e.g. `1h`, `1m30s`,
/// `1s500ms`, and `0s` for zero. `parse(print(d)) == d` for every value.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(into = "String", try_from = "String")]
pub struct Duration {
    millis: u64,
}

/// The text is not a duration in the accepted syntax.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} {EXPECTATION}")]
pub struct InvalidDuration(pub String);

/// Completes `"<value>" …` in messages.
pub(super) const EXPECTATION: &str = "must be a duration such as 30s, 1m or 1m30s";

/// Units in the order the canonical form prints them.
const UNITS: [(&str, u64); 4] = [("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1)];

/// What the schema says a duration looks like; the parser below accepts exactly this language.
const PATTERN: &str = "^(0|([0-9]+(h|m|s|ms))+)$";

impl Duration {
    pub const fn from_millis(millis: u64) -> Self {
        Self { millis }
    }

    pub const fn from_secs(secs: u64) -> Self {
        Self::from_millis(secs.saturating_mul(1_000))
    }

    pub const fn as_millis(self) -> u64 {
        self.millis
    }
}

/// The range a duration setting accepts. One definition per setting, used wherever the
/// setting is written (annotations, `CanaryPolicy` defaults through them, `AnalysisTemplate`):
/// admission, `serin check` and the controller's reading all call [`Limits::check`].
///
/// The maxima keep every timer of a release far from overflow and a release humanly short: a
/// check at least once an hour, a rate window no wider, a latency objective of at most a
/// minute, and a hook answering within a minute (it is awaited while the release waits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub min: Duration,
    pub max: Duration,
}

impl Limits {
    /// `serin.dev/interval`: time between checks.
    pub const INTERVAL: Limits = Limits::new(Duration::from_secs(1), Duration::from_secs(3_600));
    /// `serin.dev/metrics-window`: the PromQL rate window.
    pub const METRICS_WINDOW: Limits =
        Limits::new(Duration::from_secs(1), Duration::from_secs(3_600));
    /// `serin.dev/latency`: the p99 objective.
    pub const LATENCY: Limits = Limits::new(Duration::from_millis(1), Duration::from_secs(60));
    /// `serin.dev/affinity-max-age`: the affinity cookie's `Max-Age`, in whole seconds (a
    /// browser keeps it at most a year and a month, RFC 6265bis's cap of 400 days).
    pub const AFFINITY_MAX_AGE: Limits =
        Limits::new(Duration::from_secs(1), Duration::from_secs(400 * 86_400));
    /// `AnalysisTemplate` `spec.webhooks[].timeout`: one attempt of a hook.
    pub const HOOK_TIMEOUT: Limits = Limits::new(Duration::from_millis(1), Duration::from_secs(60));

    const fn new(min: Duration, max: Duration) -> Self {
        Self { min, max }
    }

    /// `Err` completes `"<value>" …` in a message: `must be at least 1s` or `must be at most
    /// 1h`.
    pub fn check(self, value: Duration) -> Result<(), String> {
        if value < self.min {
            Err(format!("must be at least {}", self.min))
        } else if value > self.max {
            Err(format!("must be at most {}", self.max))
        } else {
            Ok(())
        }
    }
}

impl From<Duration> for std::time::Duration {
    fn from(d: Duration) -> Self {
        std::time::Duration::from_millis(d.millis)
    }
}

impl FromStr for Duration {
    type Err = InvalidDuration;

    /// Go's `time.ParseDuration` restricted to whole numbers of `h`, `m`, `s` and `ms`; parts
    /// add up as in Go (`1m90s` is 2m30s). A bare `0` is accepted, as in Go.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidDuration(text.to_owned());
        match text {
            "" => return Err(invalid()),
            "0" => return Ok(Self::default()),
            _ => {}
        }
        let mut rest = text;
        let mut millis: u64 = 0;
        while !rest.is_empty() {
            let digits = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            let unit_len = rest[digits..]
                .find(|c: char| !c.is_ascii_alphabetic())
                .unwrap_or(rest.len() - digits);
            let (number, unit) = (&rest[..digits], &rest[digits..digits + unit_len]);
            let amount: u64 = number.parse().map_err(|_| invalid())?;
            let scale = UNITS
                .iter()
                .find(|(name, _)| *name == unit)
                .map(|(_, scale)| *scale)
                .ok_or_else(invalid)?;
            millis = amount
                .checked_mul(scale)
                .and_then(|part| millis.checked_add(part))
                .ok_or_else(invalid)?;
            rest = &rest[digits + unit_len..];
        }
        Ok(Self { millis })
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.millis == 0 {
            return f.write_str("0s");
        }
        let mut rest = self.millis;
        for (name, scale) in UNITS {
            if rest >= scale {
                write!(f, "{}{name}", rest / scale)?;
                rest %= scale;
            }
        }
        Ok(())
    }
}

impl From<Duration> for String {
    fn from(d: Duration) -> Self {
        d.to_string()
    }
}

impl TryFrom<String> for Duration {
    type Error = InvalidDuration;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": PATTERN,
            "description": "A duration such as 500ms, 30s, 1m or 1m30s.",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(text: &str) -> Result<Duration, InvalidDuration> {
        text.parse()
    }

    #[test]
    fn go_style_durations_parse_to_milliseconds() {
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("2h"), Ok(Duration::from_secs(7_200)));
        assert_eq!(parse("1h0m1s5ms"), Ok(Duration::from_millis(3_601_005)));
        assert_eq!(parse("0"), Ok(Duration::from_millis(0)));
    }

    #[test]
    fn malformed_durations_are_refused() {
        for text in [
            "",
            "5x",
            "10",
            "1.5s",
            "-1s",
            "s",
            "1 m",
            "1m 30s",
            "1M",
            "ms",
            "99999999999999999999h",
        ] {
            assert_eq!(
                parse(text),
                Err(InvalidDuration(text.to_owned())),
                "{text:?}"
            );
        }
    }

    #[test]
    fn durations_print_canonically() {
        assert_eq!(Duration::from_secs(60).to_string(), "1m");
        assert_eq!(Duration::from_secs(90).to_string(), "1m30s");
        assert_eq!(Duration::from_millis(1_500).to_string(), "1s500ms");
        assert_eq!(Duration::from_millis(0).to_string(), "0s");
        assert_eq!(parse("90s").map(|d| d.to_string()), Ok("1m30s".to_owned()));
    }

    #[test]
    fn duration_is_a_string_in_json() {
        let json = serde_json::to_value(Duration::from_secs(90)).ok();
        assert_eq!(json, Some(serde_json::json!("1m30s")));
        let back: Result<Duration, _> = serde_json::from_value(serde_json::json!("2h"));
        assert_eq!(back.ok(), Some(Duration::from_secs(7_200)));
        assert!(serde_json::from_value::<Duration>(serde_json::json!("2 hours")).is_err());
    }

    #[test]
    fn limits_name_the_bound_that_is_crossed() {
        let limits = Limits::INTERVAL;
        assert_eq!(
            limits.check(Duration::from_millis(500)),
            Err("must be at least 1s".into())
        );
        assert_eq!(limits.check(Duration::from_secs(1)), Ok(()));
        assert_eq!(limits.check(Duration::from_secs(3_600)), Ok(()));
        assert_eq!(
            limits.check(Duration::from_secs(3_601)),
            Err("must be at most 1h".into())
        );
        let huge = parse("999999h").unwrap_or_default();
        assert_eq!(limits.check(huge), Err("must be at most 1h".into()));
        assert_eq!(
            Limits::HOOK_TIMEOUT.check(Duration::from_secs(61)),
            Err("must be at most 1m".into())
        );
    }

    proptest! {
        #[test]
        fn printing_then_parsing_gives_the_same_duration(millis in 0u64..=u64::MAX / 2) {
            let d = Duration::from_millis(millis);
            prop_assert_eq!(parse(&d.to_string()), Ok(d));
        }

        #[test]
        fn parsing_arbitrary_text_never_panics(text in ".{0,20}") {
            let _ = parse(&text);
        }
    }
}
