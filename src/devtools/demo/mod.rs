//! What `make demo` records about a release and draws from it (pure, but for [`command`]).
//!
//! While a release runs, `hack/demo.sh` reads the `Canary` status about once a second and
//! appends a [`Sample`] to a timeline file, one JSON object per line (`.serin/demo/*.jsonl`).
//! [`parse_timeline`] reads such a file back and [`chart::render`] draws it as an SVG;
//! [`command`] is the hidden `serin demo-chart` subcommand that does both for a file (the
//! only I/O).

pub mod chart;
pub mod command;
mod scale;

use serde::{Deserialize, Serialize};

use crate::release::Phase;

/// The state of one release at one moment, as the `Canary` status showed it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Sample {
    /// Seconds since the new version was applied.
    pub elapsed: f64,
    /// Wall-clock time of the sample (RFC 3339), for a person reading the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    pub phase: Phase,
    /// Percent of traffic routed to the canary.
    pub canary_weight: u32,
    /// The success rate (percent) Serin's last check measured; `None` when the query had
    /// no data (no traffic reached the canary yet).
    #[serde(default)]
    pub success_rate: Option<f64>,
    /// The p99 latency (milliseconds) Serin's last check measured; `None` without data.
    #[serde(default)]
    pub p99_ms: Option<f64>,
    /// Failed checks in the current analysis.
    pub failed_checks: u32,
    /// The lowest success rate the release accepts (`serin.dev/success-rate`), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_success_rate: Option<f64>,
    /// The highest p99 latency the release accepts (`serin.dev/latency`), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_p99_ms: Option<f64>,
    /// Requests the canary's pods answered since the release began, as the real data plane
    /// counted them (Traefik's `traefik_service_requests_total` of the canary backend);
    /// absent with simulated traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_requests: Option<u64>,
    /// Of those, the ones answered with a 5xx status (what the success-rate check counts as
    /// failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_failures: Option<u64>,
}

/// A timeline file that cannot be read as samples.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TimelineError {
    #[error("line {line}: not a timeline sample: {reason}")]
    Malformed { line: usize, reason: String },
}

/// Reads a timeline (JSON lines; blank lines are skipped), ordered by `elapsed`. JSON has no
/// NaN or infinity, so every number read is finite.
pub fn parse_timeline(text: &str) -> Result<Vec<Sample>, TimelineError> {
    let mut samples = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let sample: Sample = serde_json::from_str(raw).map_err(|e| TimelineError::Malformed {
            line,
            reason: without_position(&e),
        })?;
        samples.push(sample);
    }
    samples.sort_by(|a, b| a.elapsed.total_cmp(&b.elapsed));
    Ok(samples)
}

/// serde's message without its "at line 1 column N": each sample is one line of the file,
/// whose own number the error names.
fn without_position(error: &serde_json::Error) -> String {
    let message = error.to_string();
    let position = format!(" at line {} column {}", error.line(), error.column());
    match message.strip_suffix(&position) {
        Some(reason) => format!("{reason} (column {})", error.column()),
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = r#"{"elapsed":3.5,"time":"2026-01-01T00:00:03Z","phase":"Progressing","canaryWeight":20,"successRate":92.9,"p99Ms":29.9,"failedChecks":1,"minSuccessRate":99,"maxP99Ms":500}"#;

    #[test]
    fn a_recorded_line_is_read_with_every_field() {
        let samples = parse_timeline(LINE).expect("valid");
        assert_eq!(
            samples,
            vec![Sample {
                elapsed: 3.5,
                time: Some("2026-01-01T00:00:03Z".into()),
                phase: Phase::Progressing,
                canary_weight: 20,
                success_rate: Some(92.9),
                p99_ms: Some(29.9),
                failed_checks: 1,
                min_success_rate: Some(99.0),
                max_p99_ms: Some(500.0),
                canary_requests: None,
                canary_failures: None,
            }]
        );
    }

    #[test]
    fn missing_or_null_measurements_mean_no_data() {
        let text = r#"{"elapsed":0,"phase":"Progressing","canaryWeight":0,"successRate":null,"failedChecks":0}"#;
        let sample = &parse_timeline(text).expect("valid")[0];
        assert_eq!(sample.success_rate, None);
        assert_eq!(sample.p99_ms, None);
    }

    #[test]
    fn samples_are_ordered_by_time_and_blank_lines_skipped() {
        let text = "\n{\"elapsed\":2,\"phase\":\"Failed\",\"canaryWeight\":0,\"failedChecks\":3}\n\n\
                    {\"elapsed\":1,\"phase\":\"Progressing\",\"canaryWeight\":20,\"failedChecks\":2}\n";
        let phases: Vec<Phase> = parse_timeline(text)
            .expect("valid")
            .iter()
            .map(|s| s.phase)
            .collect();
        assert_eq!(phases, [Phase::Progressing, Phase::Failed]);
    }

    #[test]
    fn a_bad_line_is_named_by_its_number() {
        let text = format!("{LINE}\n{{\"elapsed\":1,\"phase\":\"Sleeping\"}}\n");
        let err = parse_timeline(&text).expect_err("unknown phase");
        let message = err.to_string();
        assert!(
            message.starts_with("line 2: not a timeline sample: unknown variant `Sleeping`"),
            "{message}"
        );
        assert!(!message.contains("line 1"), "{message}");
        let err = parse_timeline("not json").expect_err("not json");
        assert!(err.to_string().starts_with("line 1:"), "{err}");
    }
}
