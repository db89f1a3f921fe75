//! The `serin.dev/` annotation keys: the key table, parsing each value into the typed model,
//! the defaults that depend on other keys, the canonical annotations written back, and the
//! "did you mean" hint for unknown keys.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;

use super::duration;
use super::model::{
    CanarySpec, Compare, DEFAULT_STEP_WEIGHT, GatewayRef, MAX_COOKIE_NAME, MAX_HOSTS, MatchRule,
    MetricsProvider, Provider,
};
use super::{DESIRED_REPLICAS, ENABLED, PREFIX, Problem, REVISION, schema};

/// Every annotation Serin knows. Users write all of them except [`Key::DesiredReplicas`],
/// which the mutating webhook writes (and which is still accepted as input), and
/// [`Key::Revision`], which the controller writes on the `-primary` Deployment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Key {
    Enabled,
    Provider,
    Port,
    Service,
    Ingress,
    Gateway,
    Hosts,
    Interval,
    Threshold,
    StepWeight,
    StepWeights,
    MaxWeight,
    Iterations,
    Match,
    SuccessRate,
    Latency,
    MirrorChecks,
    MirrorPercent,
    AffinityCookie,
    AffinityMaxAge,
    MetricsProvider,
    MetricsWindow,
    Analysis,
    SkipAnalysis,
    SequentialChecks,
    Compare,
    CompareMargin,
    Confidence,
    DesiredReplicas,
    Revision,
}

impl Key {
    pub(super) const ALL: [Key; 30] = [
        Key::Enabled,
        Key::Provider,
        Key::Port,
        Key::Service,
        Key::Ingress,
        Key::Gateway,
        Key::Hosts,
        Key::Interval,
        Key::Threshold,
        Key::StepWeight,
        Key::StepWeights,
        Key::MaxWeight,
        Key::Iterations,
        Key::Match,
        Key::SuccessRate,
        Key::Latency,
        Key::MirrorChecks,
        Key::MirrorPercent,
        Key::AffinityCookie,
        Key::AffinityMaxAge,
        Key::MetricsProvider,
        Key::MetricsWindow,
        Key::Analysis,
        Key::SkipAnalysis,
        Key::SequentialChecks,
        Key::Compare,
        Key::CompareMargin,
        Key::Confidence,
        Key::DesiredReplicas,
        Key::Revision,
    ];

    pub(super) fn annotation(self) -> &'static str {
        match self {
            Key::Enabled => ENABLED,
            Key::Provider => "serin.dev/provider",
            Key::Port => "serin.dev/port",
            Key::Service => "serin.dev/service",
            Key::Ingress => "serin.dev/ingress",
            Key::Gateway => "serin.dev/gateway",
            Key::Hosts => "serin.dev/hosts",
            Key::Interval => "serin.dev/interval",
            Key::Threshold => "serin.dev/threshold",
            Key::StepWeight => "serin.dev/step-weight",
            Key::StepWeights => "serin.dev/step-weights",
            Key::MaxWeight => "serin.dev/max-weight",
            Key::Iterations => "serin.dev/iterations",
            Key::Match => "serin.dev/match",
            Key::SuccessRate => "serin.dev/success-rate",
            Key::Latency => "serin.dev/latency",
            Key::MirrorChecks => "serin.dev/mirror-checks",
            Key::MirrorPercent => "serin.dev/mirror-percent",
            Key::AffinityCookie => "serin.dev/affinity-cookie",
            Key::AffinityMaxAge => "serin.dev/affinity-max-age",
            Key::MetricsProvider => "serin.dev/metrics-provider",
            Key::MetricsWindow => "serin.dev/metrics-window",
            Key::Analysis => "serin.dev/analysis",
            Key::SkipAnalysis => "serin.dev/skip-analysis",
            Key::SequentialChecks => "serin.dev/sequential-checks",
            Key::Compare => "serin.dev/compare",
            Key::CompareMargin => "serin.dev/compare-margin",
            Key::Confidence => "serin.dev/confidence",
            Key::DesiredReplicas => DESIRED_REPLICAS,
            Key::Revision => REVISION,
        }
    }

    /// The [`CanarySpec`] field (its JSON name) this key configures, if any.
    pub(super) fn field(self) -> Option<&'static str> {
        Some(match self {
            Key::Enabled | Key::DesiredReplicas | Key::Revision => return None,
            Key::Provider => "provider",
            Key::Port => "port",
            Key::Service => "service",
            Key::Ingress => "ingress",
            Key::Gateway => "gateway",
            Key::Hosts => "hosts",
            Key::Interval => "interval",
            Key::Threshold => "threshold",
            Key::StepWeight => "stepWeight",
            Key::StepWeights => "stepWeights",
            Key::MaxWeight => "maxWeight",
            Key::Iterations => "iterations",
            Key::Match => "matches",
            Key::SuccessRate => "successRate",
            Key::Latency => "latency",
            Key::MirrorChecks => "mirrorChecks",
            Key::MirrorPercent => "mirrorPercent",
            Key::AffinityCookie => "affinityCookie",
            Key::AffinityMaxAge => "affinityMaxAge",
            Key::MetricsProvider => "metricsProvider",
            Key::MetricsWindow => "metricsWindow",
            Key::Analysis => "analysis",
            Key::SkipAnalysis => "skipAnalysis",
            Key::SequentialChecks => "sequentialChecks",
            Key::Compare => "compare",
            Key::CompareMargin => "compareMargin",
            Key::Confidence => "confidence",
        })
    }

    fn find(annotation: &str) -> Option<Key> {
        Key::ALL.into_iter().find(|k| k.annotation() == annotation)
    }

    pub(super) fn for_field(field: &str) -> Option<Key> {
        Key::ALL.into_iter().find(|k| k.field() == Some(field))
    }

    /// What a value of this key must look like, completing `"<value>" …` in a problem.
    /// Numeric ranges are read from the schema, where the model declares them.
    pub(super) fn expectation(self) -> String {
        let range = |kind: &str| match schema::range(self.field().unwrap_or_default()) {
            Some((min, max)) => format!("must be {kind} from {min} to {max}"),
            None => format!("must be {kind}"),
        };
        match self {
            Key::Enabled | Key::SkipAnalysis | Key::SequentialChecks => {
                r#"must be "true" or "false""#.to_owned()
            }
            Key::Compare => Compare::expectation(),
            Key::CompareMargin => range("a number of percentage points"),
            Key::Confidence => range("a percentage"),
            Key::Provider => Provider::expectation(),
            Key::MetricsProvider => MetricsProvider::expectation(),
            Key::Port
            | Key::Threshold
            | Key::StepWeight
            | Key::MaxWeight
            | Key::Iterations
            | Key::MirrorChecks
            | Key::MirrorPercent => range("an integer"),
            Key::SuccessRate => range("a number"),
            Key::StepWeights => format!(
                "{}, strictly increasing, such as 5,10,25,50",
                range("a comma-separated list of integers")
            ),
            Key::Interval | Key::Latency | Key::MetricsWindow | Key::AffinityMaxAge => {
                duration::EXPECTATION.to_owned()
            }
            Key::AffinityCookie => format!(
                "must be a cookie name: 1 to {MAX_COOKIE_NAME} letters, digits or \
                 !#$%&'*+-.^_`|~"
            ),
            Key::Service => "must be a Service name: at most 63 lowercase letters, digits or '-', \
                             starting with a letter"
                .to_owned(),
            Key::Ingress | Key::Analysis => "must be an object name: at most 253 lowercase \
                                             letters, digits, '-' or '.'"
                .to_owned(),
            Key::Gateway => "must be NAMESPACE/NAME of a Gateway".to_owned(),
            Key::Hosts => format!(
                "must be a comma-separated list of at most {MAX_HOSTS} distinct hostnames, each \
                 a lowercase DNS name such as app.example.com, or one with a wildcard first \
                 label such as *.example.com, of at most 253 characters; no IP address, no port"
            ),
            Key::Match => "must be header:NAME=VALUE, header:NAME~REGEX or cookie:NAME, where \
                           NAME is an HTTP token, VALUE is not empty and REGEX is a valid regular \
                           expression"
                .to_owned(),
            Key::DesiredReplicas => format!("must be an integer from 0 to {}", i32::MAX),
            Key::Revision => "is written by Serin on -primary Deployments".to_owned(),
        }
    }

    /// The problem for a value of this key that is not what [`Key::expectation`] says.
    pub(super) fn refuse(self, shown: &str) -> Problem {
        Problem::new(
            self.annotation(),
            format!("{} {}", quoted(shown), self.expectation()),
        )
    }
}

/// What the `serin.dev/` annotations of one Deployment say, as far as reading goes.
pub(super) struct Reading<'a> {
    /// `serin.dev/enabled` is `"true"`.
    pub enabled: bool,
    /// Defaults overwritten by every value that parsed.
    pub spec: CanarySpec,
    /// Every known key the user wrote, with its raw value.
    pub written: BTreeMap<Key, &'a str>,
    /// Keys whose value was refused: later rules skip them, so one mistake is one line.
    pub refused: BTreeSet<Key>,
    pub problems: Vec<Problem>,
    /// Unknown `serin.dev/` keys found beyond the first [`LISTED_UNKNOWN`], counted only.
    pub unlisted_unknown: usize,
}

impl Reading<'_> {
    pub(super) fn usable(&self, key: Key) -> bool {
        !self.refused.contains(&key)
    }

    pub(super) fn is_written(&self, key: Key) -> bool {
        self.written.contains_key(&key)
    }

    pub(super) fn refuse(&mut self, key: Key, problem: Problem) {
        self.refused.insert(key);
        self.problems.push(problem);
    }

    /// The value of `key` for a message: as written, or the default it took.
    pub(super) fn shown(&self, key: Key) -> String {
        match self.written.get(&key) {
            Some(raw) => quoted(raw),
            None => format!(
                "{:?} (default)",
                value_of(key, &self.spec).unwrap_or_default()
            ),
        }
    }
}

/// How many unknown `serin.dev/` keys are named one per line; the others are counted in one
/// more line. The mutating webhook sees an object before the API server checks its size, so
/// the work and the message per review must not grow with what a client sends.
pub(super) const LISTED_UNKNOWN: usize = 10;

/// How many characters of a value or key a message quotes; longer ones are cut with `…`.
const QUOTED_CHARS: usize = 100;

/// `text` in double quotes with escapes (one line whatever it holds); beyond
/// [`QUOTED_CHARS`] characters its middle is left out (`"abc…xyz"`), so that a message stays
/// small whatever a client sends and still shows how the text ends (a derived name's suffix).
pub(super) fn quoted(text: &str) -> String {
    let count = text.chars().take(QUOTED_CHARS + 1).count();
    if count <= QUOTED_CHARS {
        return format!("{text:?}");
    }
    let head: String = text.chars().take(QUOTED_CHARS * 2 / 3).collect();
    let tail: Vec<char> = text.chars().rev().take(QUOTED_CHARS / 3).collect();
    let tail: String = tail.into_iter().rev().collect();
    format!("{:?}", format!("{head}…{tail}"))
}

/// Parses every `serin.dev/` annotation over `defaults`; unknown keys and malformed values
/// become problems. Ranges, names and cross-field rules are checked later.
pub(super) fn read<'a>(
    ours: impl IntoIterator<Item = (&'a str, &'a str)>,
    defaults: CanarySpec,
) -> Reading<'a> {
    let mut reading = Reading {
        enabled: false,
        spec: defaults,
        written: BTreeMap::new(),
        refused: BTreeSet::new(),
        problems: Vec::new(),
        unlisted_unknown: 0,
    };
    let mut unknown_keys = 0usize;
    for (annotation, raw) in ours {
        let Some(key) = Key::find(annotation) else {
            unknown_keys += 1;
            match unknown_keys > LISTED_UNKNOWN {
                true => reading.unlisted_unknown += 1,
                false => reading.problems.push(unknown(annotation)),
            }
            continue;
        };
        reading.written.insert(key, raw);
        if let Err(problems) = apply(key, raw, &mut reading) {
            reading.refused.insert(key);
            reading.problems.extend(problems);
        }
    }
    reading
}

/// Stores one annotation value in `reading`, or says why it has the wrong form.
fn apply(key: Key, raw: &str, reading: &mut Reading<'_>) -> Result<(), Vec<Problem>> {
    let refused = || vec![key.refuse(raw)];
    let spec = &mut reading.spec;
    match key {
        Key::Enabled => reading.enabled = boolean(raw).ok_or_else(refused)?,
        Key::DesiredReplicas => {
            integer::<i32>(raw).ok_or_else(refused)?;
        }
        // Bookkeeping on the primary; any value is Serin's own.
        Key::Revision => {}
        Key::Provider => spec.provider = parsed(raw).ok_or_else(refused)?,
        Key::Port => spec.port = Some(integer(raw).ok_or_else(refused)?),
        Key::Service => spec.service = raw.to_owned(),
        Key::Ingress => spec.ingress = Some(raw.to_owned()),
        Key::Gateway => spec.gateway = Some(gateway(raw).ok_or_else(refused)?),
        Key::Hosts => spec.hosts = hosts(raw)?,
        Key::Interval => spec.interval = parsed(raw).ok_or_else(refused)?,
        Key::Threshold => spec.threshold = integer(raw).ok_or_else(refused)?,
        Key::StepWeight => spec.step_weight = Some(integer(raw).ok_or_else(refused)?),
        Key::StepWeights => spec.step_weights = Some(list(raw).ok_or_else(refused)?),
        Key::MaxWeight => spec.max_weight = integer(raw).ok_or_else(refused)?,
        Key::Iterations => spec.iterations = Some(integer(raw).ok_or_else(refused)?),
        Key::Match => spec.matches = match_rules(raw)?,
        Key::SuccessRate => spec.success_rate = decimal(raw).ok_or_else(refused)?,
        Key::Latency => spec.latency = parsed(raw).ok_or_else(refused)?,
        Key::MirrorChecks => spec.mirror_checks = Some(integer(raw).ok_or_else(refused)?),
        Key::MirrorPercent => spec.mirror_percent = Some(integer(raw).ok_or_else(refused)?),
        Key::AffinityCookie => spec.affinity_cookie = Some(raw.to_owned()),
        Key::AffinityMaxAge => spec.affinity_max_age = Some(parsed(raw).ok_or_else(refused)?),
        Key::MetricsProvider => spec.metrics_provider = Some(parsed(raw).ok_or_else(refused)?),
        Key::MetricsWindow => spec.metrics_window = parsed(raw).ok_or_else(refused)?,
        Key::Analysis => spec.analysis = Some(raw.to_owned()),
        Key::SkipAnalysis => spec.skip_analysis = boolean(raw).ok_or_else(refused)?,
        Key::SequentialChecks => spec.sequential_checks = boolean(raw).ok_or_else(refused)?,
        Key::Compare => spec.compare = parsed(raw).ok_or_else(refused)?,
        Key::CompareMargin => spec.compare_margin = decimal(raw).ok_or_else(refused)?,
        Key::Confidence => spec.confidence = decimal(raw).ok_or_else(refused)?,
    }
    Ok(())
}

fn boolean(raw: &str) -> Option<bool> {
    match raw {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

/// [`Provider`], [`Duration`]: values with a grammar of their own in `FromStr`.
fn parsed<T: FromStr>(raw: &str) -> Option<T> {
    raw.parse().ok()
}

/// The one grammar of counts, weights and ports: decimal digits, without sign or leading
/// zero (`0` itself is fine), that fit `T`. Rust's own `parse` also takes `+10`, and `010`
/// would read as ten here but as eight in YAML 1.1 tools: both are refused.
pub(super) fn integer<T: FromStr>(raw: &str) -> Option<T> {
    plain_digits(raw).then(|| raw.parse().ok()).flatten()
}

/// The one grammar of percentages: an [`integer`] optionally followed by `.` and digits
/// (`99`, `99.5`, `0.1`); no sign, exponent, `inf` or `NaN`.
pub(super) fn decimal(raw: &str) -> Option<f64> {
    let (whole, fraction) = raw.split_once('.').unwrap_or((raw, "0"));
    let plain =
        plain_digits(whole) && !fraction.is_empty() && fraction.bytes().all(|b| b.is_ascii_digit());
    plain.then(|| raw.parse().ok()).flatten()
}

fn plain_digits(text: &str) -> bool {
    !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'))
}

/// `5,10,25,50`; spaces around items are allowed.
fn list(raw: &str) -> Option<Vec<u32>> {
    raw.split(',').map(|item| integer(item.trim())).collect()
}

/// `namespace/name`.
fn gateway(raw: &str) -> Option<GatewayRef> {
    let (namespace, name) = raw.split_once('/')?;
    (!namespace.is_empty() && !name.is_empty()).then(|| GatewayRef {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    })
}

/// `a.example.com,*.b.example.com`; spaces around items are allowed. Only the count is
/// checked here, before anything else looks at the items, so the work per value is bounded:
/// each host's form is the schema's, IP addresses and duplicates are `validate`'s.
fn hosts(raw: &str) -> Result<Vec<String>, Vec<Problem>> {
    let items: Vec<&str> = raw.split(',').map(str::trim).take(MAX_HOSTS + 1).collect();
    if items.len() > MAX_HOSTS {
        let count = raw.split(',').count();
        return Err(vec![Problem::new(
            Key::Hosts.annotation(),
            format!(
                "{} names {count} hosts; at most {MAX_HOSTS} are allowed (Gateway API's limit \
                 on an HTTPRoute's hostnames)",
                quoted(raw)
            ),
        )]);
    }
    Ok(items.into_iter().map(str::to_owned).collect())
}

/// Comma-separated rules; each malformed rule is its own problem. A comma only starts a new
/// rule when `header:` or `cookie:` follows, so a regex may contain `{1,3}`.
fn match_rules(raw: &str) -> Result<Vec<MatchRule>, Vec<Problem>> {
    let mut texts: Vec<String> = Vec::new();
    for piece in raw.split(',') {
        let starts_rule = ["header:", "cookie:"]
            .iter()
            .any(|p| piece.trim_start().starts_with(p));
        match texts.last_mut() {
            Some(last) if !starts_rule => {
                last.push(',');
                last.push_str(piece);
            }
            _ => texts.push(piece.to_owned()),
        }
    }
    let mut rules = Vec::new();
    let mut problems = Vec::new();
    let mut malformed = 0usize;
    for text in &texts {
        let text = text.trim();
        match match_rule(text) {
            Some(rule) => rules.push(rule),
            None => {
                malformed += 1;
                if malformed <= LISTED_UNKNOWN {
                    problems.push(Key::Match.refuse(text));
                }
            }
        }
    }
    if malformed > LISTED_UNKNOWN {
        let more = malformed - LISTED_UNKNOWN;
        problems.push(Problem::new(
            Key::Match.annotation(),
            format!("{more} more malformed rules, not listed"),
        ));
    }
    if problems.is_empty() {
        Ok(rules)
    } else {
        Err(problems)
    }
}

/// One rule; the name is split at the first `=` or `~`. Token and regex checks are the
/// schema's, so the annotation and the CRD refuse the same rules.
fn match_rule(text: &str) -> Option<MatchRule> {
    if let Some(name) = text.strip_prefix("cookie:") {
        return Some(MatchRule::Cookie {
            name: name.to_owned(),
        });
    }
    let header = text.strip_prefix("header:")?;
    let at = header.find(['=', '~'])?;
    let (name, value) = (header[..at].to_owned(), header[at + 1..].to_owned());
    Some(match header.as_bytes().get(at) {
        Some(b'=') => MatchRule::HeaderExact { name, value },
        _ => MatchRule::HeaderRegex { name, regex: value },
    })
}

/// Defaults that depend on what else was written, filled once values are known to be valid.
///
/// Flagger users expect an explicit weight list to end where the canary is promoted, so
/// without `max-weight` the last listed weight is the max weight; and a default step never
/// exceeds a lower `max-weight` (`max-weight: 5` alone walks `[5]`), so that the canonical
/// annotations of any valid spec read back to the same spec.
pub(super) fn fill_derived_defaults(reading: &mut Reading<'_>) {
    let written = |key| reading.written.contains_key(&key);
    let spec = &mut reading.spec;
    if !written(Key::StepWeights) {
        if !written(Key::StepWeight) {
            spec.step_weight = Some(DEFAULT_STEP_WEIGHT.min(spec.max_weight));
        }
        return;
    }
    if !written(Key::StepWeight) {
        spec.step_weight = None;
    }
    let last = spec.step_weights.as_ref().and_then(|list| list.last());
    if let Some(&last) = last
        && !written(Key::MaxWeight)
        && !reading.refused.contains(&Key::StepWeights)
    {
        spec.max_weight = last;
    }
}

/// The canonical annotation value of `key` in `spec`; `None` when the key is not set.
pub(super) fn value_of(key: Key, spec: &CanarySpec) -> Option<String> {
    let join = |items: Vec<String>| items.join(",");
    match key {
        Key::Enabled => Some("true".to_owned()),
        Key::DesiredReplicas | Key::Revision => None,
        Key::Provider => Some(spec.provider.to_string()),
        Key::Port => spec.port.map(|p| p.to_string()),
        Key::Service => Some(spec.service.clone()),
        Key::Ingress => spec.ingress.clone(),
        Key::Gateway => spec.gateway.as_ref().map(ToString::to_string),
        Key::Hosts => (!spec.hosts.is_empty()).then(|| spec.hosts.join(",")),
        Key::Interval => Some(spec.interval.to_string()),
        Key::Threshold => Some(spec.threshold.to_string()),
        Key::StepWeight => spec.step_weight.map(|w| w.to_string()),
        Key::StepWeights => spec
            .step_weights
            .as_ref()
            .map(|list| join(list.iter().map(u32::to_string).collect())),
        Key::MaxWeight => Some(spec.max_weight.to_string()),
        Key::Iterations => spec.iterations.map(|n| n.to_string()),
        Key::Match => (!spec.matches.is_empty())
            .then(|| join(spec.matches.iter().map(ToString::to_string).collect())),
        Key::SuccessRate => Some(spec.success_rate.to_string()),
        Key::Latency => Some(spec.latency.to_string()),
        Key::MirrorChecks => spec.mirror_checks.map(|n| n.to_string()),
        Key::MirrorPercent => spec.mirror_percent.map(|p| p.to_string()),
        Key::AffinityCookie => spec.affinity_cookie.clone(),
        Key::AffinityMaxAge => spec.affinity_max_age.map(|d| d.to_string()),
        // Its default follows the provider, so it is not written back: a written default would
        // stay behind when the provider changes or the Deployment opts out, and then refuse
        // the change (envoy with linkerd). Only a value the user wrote is kept.
        Key::MetricsProvider => spec.metrics_provider.map(|m| m.to_string()),
        Key::MetricsWindow => Some(spec.metrics_window.to_string()),
        Key::Analysis => spec.analysis.clone(),
        Key::SkipAnalysis => Some(spec.skip_analysis.to_string()),
        Key::SequentialChecks => Some(spec.sequential_checks.to_string()),
        Key::Compare => Some(spec.compare.to_string()),
        Key::CompareMargin => Some(spec.compare_margin.to_string()),
        Key::Confidence => Some(spec.confidence.to_string()),
    }
}

/// `serin.dev/stepweight: unknown annotation; did you mean serin.dev/step-weight?`
fn unknown(annotation: &str) -> Problem {
    let typed = annotation
        .strip_prefix(PREFIX)
        .unwrap_or(annotation)
        .to_lowercase();
    let close_enough = |known: &str| (known.len() / 3).max(2);
    let closest = Key::ALL
        .into_iter()
        .filter_map(|key| {
            let known = key.annotation().strip_prefix(PREFIX).unwrap_or_default();
            // The distance is at least the difference in length: a key much longer (or
            // shorter) than every known one is compared with none.
            (typed.len().abs_diff(known.len()) <= close_enough(known))
                .then(|| (edit_distance(&typed, known), known, key))
        })
        .min_by_key(|(distance, _, _)| *distance)
        .filter(|(distance, known, _)| *distance <= close_enough(known));
    let message = match closest {
        Some((_, _, key)) => format!("unknown annotation; did you mean {}?", key.annotation()),
        None => "unknown annotation".to_owned(),
    };
    // The API server refuses such keys, but the mutating webhook sees them first.
    let plain = annotation.len() <= QUOTED_CHARS && !annotation.chars().any(char::is_control);
    let field = match plain {
        true => annotation.to_owned(),
        false => quoted(annotation),
    };
    Problem::new(field, message)
}

/// The line that stands for the unknown keys beyond the first [`LISTED_UNKNOWN`].
pub(super) fn unlisted_unknown(count: usize) -> Problem {
    let noun = match count {
        1 => "annotation",
        _ => "annotations",
    };
    Problem::new(
        format!("{PREFIX}..."),
        format!("{count} more unknown {noun}, not listed"),
    )
}

/// Optimal string alignment distance: Levenshtein plus adjacent transpositions (`prot`→`port`).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut rows = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    rows[0] = (0..=b.len()).collect();
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (rows[i - 1][j] + 1)
                .min(rows[i][j - 1] + 1)
                .min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = best;
        }
    }
    rows[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::super::testing::{enabled, read, refused};
    use super::super::{OptIn, defaulted_annotations, read_annotations};
    use super::*;
    use crate::spec::duration::Duration;
    use proptest::prelude::{
        Just, ProptestConfig, Strategy as _, any, prop_assert_eq, prop_oneof, proptest,
    };

    #[test]
    fn every_configuration_annotation_is_read_into_the_spec() {
        let spec = enabled(&[
            ("serin.dev/provider", "gatewayapi"),
            ("serin.dev/port", "8080"),
            ("serin.dev/service", "web"),
            ("serin.dev/gateway", "infra/public"),
            ("serin.dev/hosts", "web.example.com, *.web.example.com"),
            ("serin.dev/interval", "30s"),
            ("serin.dev/threshold", "3"),
            ("serin.dev/step-weight", "20"),
            ("serin.dev/max-weight", "80"),
            ("serin.dev/iterations", "10"),
            ("serin.dev/match", "header:x-canary=insider"),
            ("serin.dev/success-rate", "99.5"),
            ("serin.dev/latency", "250ms"),
            ("serin.dev/metrics-provider", "traefik"),
            ("serin.dev/metrics-window", "2m"),
            ("serin.dev/analysis", "podinfo-checks"),
            ("serin.dev/skip-analysis", "true"),
            ("serin.dev/sequential-checks", "false"),
            ("serin.dev/compare", "primary"),
            ("serin.dev/compare-margin", "0.5"),
            ("serin.dev/confidence", "99.9"),
        ]);
        let expected = CanarySpec {
            provider: Provider::GatewayApi,
            port: Some(8080),
            service: "web".into(),
            ingress: None,
            gateway: Some(GatewayRef {
                namespace: "infra".into(),
                name: "public".into(),
            }),
            hosts: vec!["web.example.com".into(), "*.web.example.com".into()],
            interval: Duration::from_secs(30),
            threshold: 3,
            step_weight: Some(20),
            step_weights: None,
            max_weight: 80,
            iterations: Some(10),
            matches: vec![MatchRule::HeaderExact {
                name: "x-canary".into(),
                value: "insider".into(),
            }],
            success_rate: 99.5,
            latency: Duration::from_millis(250),
            mirror_checks: None,
            mirror_percent: None,
            affinity_cookie: None,
            affinity_max_age: None,
            metrics_provider: Some(MetricsProvider::Traefik),
            metrics_window: Duration::from_secs(120),
            analysis: Some("podinfo-checks".into()),
            skip_analysis: true,
            sequential_checks: false,
            compare: Compare::Primary,
            compare_margin: 0.5,
            confidence: 99.9,
        };
        assert_eq!(spec, expected);
    }

    #[test]
    fn default_port_is_the_first_container_port_of_the_first_container_with_one() {
        assert_eq!(enabled(&[]).port, Some(9898));
    }

    #[test]
    fn pod_template_without_ports_leaves_the_port_unset() {
        let annotations = [(ENABLED.to_owned(), "true".to_owned())].into();
        let result = read_annotations("podinfo", &annotations, Some(&Default::default()));
        assert!(matches!(result, Ok(OptIn::Enabled(spec)) if spec.port.is_none()));
    }

    #[test]
    fn default_service_is_the_deployment_name() {
        assert_eq!(enabled(&[]).service, "podinfo");
    }

    #[test]
    fn deployment_name_that_is_no_service_name_needs_serin_service() {
        let annotations = [(ENABLED.to_owned(), "true".to_owned())].into();
        let problems = read_annotations("web.v2", &annotations, None)
            .err()
            .map(|p| p.to_string());
        assert_eq!(
            problems.as_deref(),
            Some(
                r#"serin.dev/service: "web.v2" (default) must be a Service name: at most 63 lowercase letters, digits or '-', starting with a letter"#
            )
        );
    }

    #[test]
    fn step_weight_zero_is_refused_with_its_range() {
        assert_eq!(
            refused(&[("serin.dev/step-weight", "0")]),
            [r#"serin.dev/step-weight: "0" must be an integer from 1 to 100"#]
        );
    }

    #[test]
    fn step_weight_that_is_not_a_number_gets_the_same_message_as_out_of_range() {
        assert_eq!(
            refused(&[("serin.dev/step-weight", "ten")]),
            [r#"serin.dev/step-weight: "ten" must be an integer from 1 to 100"#]
        );
    }

    #[test]
    fn numbers_out_of_their_range_are_refused() {
        for (key, value) in [
            ("serin.dev/port", "70000"),
            ("serin.dev/port", "-1"),
            ("serin.dev/threshold", "0"),
            ("serin.dev/threshold", "1001"),
            ("serin.dev/max-weight", "101"),
            ("serin.dev/iterations", "0"),
            ("serin.dev/success-rate", "100.5"),
            ("serin.dev/success-rate", "-1"),
            ("serin.dev/success-rate", "NaN"),
            ("serin.dev/success-rate", "inf"),
        ] {
            let lines = refused(&[(key, value)]);
            assert_eq!(lines.len(), 1, "{key}={value}: {lines:?}");
            assert!(
                lines[0].starts_with(&format!("{key}: {value:?} must be")),
                "{}",
                lines[0]
            );
        }
    }

    #[test]
    fn integers_have_one_grammar_plain_digits_without_sign_or_leading_zero() {
        for (key, value) in [
            ("serin.dev/step-weight", "+10"),
            ("serin.dev/step-weight", "010"),
            ("serin.dev/step-weight", "1e1"),
            ("serin.dev/step-weight", " 10"),
            ("serin.dev/threshold", "+3"),
            ("serin.dev/threshold", "03"),
            ("serin.dev/port", "+8080"),
            ("serin.dev/port", "08080"),
            ("serin.dev/max-weight", "050"),
            ("serin.dev/iterations", "+5"),
            ("serin.dev/step-weights", "5,+10"),
            ("serin.dev/step-weights", "05,10"),
            (DESIRED_REPLICAS, "+2"),
            (DESIRED_REPLICAS, "02"),
        ] {
            let lines = refused(&[(key, value)]);
            assert_eq!(lines.len(), 1, "{key}={value}: {lines:?}");
            assert!(
                lines[0].starts_with(&format!("{key}: {value:?} must be")),
                "{}",
                lines[0]
            );
        }
        assert_eq!(
            enabled(&[("serin.dev/step-weight", "10")]).step_weight,
            Some(10)
        );
        assert_eq!(enabled(&[(DESIRED_REPLICAS, "0")]), enabled(&[]));
    }

    #[test]
    fn percentages_are_plain_decimals_without_sign_or_exponent() {
        for value in [
            "1e2", "9.9e1", "+99", "099", "99.", ".5", "0x10", "99.5.1", " 99",
        ] {
            assert_eq!(
                refused(&[("serin.dev/success-rate", value)]),
                [format!(
                    "serin.dev/success-rate: {value:?} must be a number from 0 to 100"
                )],
                "{value}"
            );
        }
        for (value, rate) in [
            ("99", 99.0),
            ("99.5", 99.5),
            ("0", 0.0),
            ("0.25", 0.25),
            ("100", 100.0),
        ] {
            assert_eq!(
                enabled(&[("serin.dev/success-rate", value)]).success_rate,
                rate
            );
        }
    }

    #[test]
    fn fifty_thousand_unknown_annotations_give_a_bounded_answer() {
        let mut pairs: Vec<(String, String)> = (0..50_000)
            .map(|i| (format!("serin.dev/unknown-key-{i:05}"), "x".to_owned()))
            .collect();
        pairs.push((ENABLED.to_owned(), "true".to_owned()));
        let annotations: BTreeMap<String, String> = pairs.into_iter().collect();
        let problems = read_annotations("podinfo", &annotations, None)
            .err()
            .map(|p| p.to_string())
            .unwrap_or_default();
        let lines: Vec<&str> = problems.lines().collect();
        assert_eq!(lines.len(), LISTED_UNKNOWN + 1, "{problems}");
        assert_eq!(lines[0], "serin.dev/unknown-key-00000: unknown annotation");
        assert_eq!(
            lines.last().copied(),
            Some("serin.dev/...: 49990 more unknown annotations, not listed")
        );
        assert!(problems.len() < 2_000, "{} bytes", problems.len());
    }

    #[test]
    fn long_keys_values_and_many_bad_rules_are_cut_in_messages() {
        let long_value = "9".repeat(100_000);
        let lines = refused(&[
            ("serin.dev/interval", &long_value),
            (&format!("serin.dev/{}", "k".repeat(100_000)), "x"),
        ]);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines.iter().all(|l| l.len() < 400), "{lines:?}");
        assert!(lines.iter().any(|l| l.contains("…")), "{lines:?}");
        let rules = vec!["header:x"; 1_000].join(",");
        let lines = refused(&[
            ("serin.dev/provider", "gloo"),
            ("serin.dev/iterations", "3"),
            ("serin.dev/match", &rules),
        ]);
        assert_eq!(lines.len(), LISTED_UNKNOWN + 1, "{lines:?}");
        assert_eq!(
            lines.last().map(String::as_str),
            Some("serin.dev/match: 990 more malformed rules, not listed")
        );
    }

    #[test]
    fn success_rate_message_names_its_range() {
        assert_eq!(
            refused(&[("serin.dev/success-rate", "high")]),
            [r#"serin.dev/success-rate: "high" must be a number from 0 to 100"#]
        );
    }

    #[test]
    fn interval_that_is_not_a_duration_is_refused() {
        assert_eq!(
            refused(&[("serin.dev/interval", "5x")]),
            [r#"serin.dev/interval: "5x" must be a duration such as 30s, 1m or 1m30s"#]
        );
    }

    #[test]
    fn unsupported_provider_is_refused_with_the_allowed_ones() {
        assert_eq!(
            refused(&[("serin.dev/provider", "istio")]),
            [
                r#"serin.dev/provider: "istio" is not supported; allowed: linkerd, smi:v1alpha2, gatewayapi, nginx, gloo"#
            ]
        );
    }

    #[test]
    fn unsupported_metrics_provider_is_refused_with_the_allowed_ones() {
        assert_eq!(
            refused(&[("serin.dev/metrics-provider", "istio")]),
            [
                r#"serin.dev/metrics-provider: "istio" is not supported; allowed: linkerd, traefik, nginx, envoy"#
            ]
        );
    }

    #[test]
    fn metrics_provider_defaults_from_the_provider_and_is_not_written_back() {
        for (provider, ingress, metrics) in [
            ("linkerd", None, "linkerd"),
            ("smi:v1alpha2", None, "linkerd"),
            ("gatewayapi", None, "linkerd"),
            ("nginx", Some("public"), "nginx"),
            ("gloo", None, "envoy"),
        ] {
            let mut pairs = vec![("serin.dev/provider", provider)];
            pairs.extend(ingress.map(|i| ("serin.dev/ingress", i)));
            let spec = enabled(&pairs);
            assert_eq!(
                spec.effective_metrics_provider().to_string(),
                metrics,
                "{provider}"
            );
            let written = defaulted_annotations(&spec);
            assert_eq!(
                written.get("serin.dev/metrics-provider"),
                None,
                "{provider}: the default follows the provider, it is not written"
            );
        }
        // A written value is kept, not replaced by the provider's default.
        let spec = enabled(&[
            ("serin.dev/provider", "gatewayapi"),
            ("serin.dev/metrics-provider", "traefik"),
        ]);
        assert_eq!(spec.metrics_provider, Some(MetricsProvider::Traefik));
    }

    #[test]
    fn enabled_must_be_true_or_false() {
        let problems = read(&[(ENABLED, "yes")]).err().map(|p| p.to_string());
        assert_eq!(
            problems.as_deref(),
            Some(r#"serin.dev/enabled: "yes" must be "true" or "false""#)
        );
        assert_eq!(
            refused(&[("serin.dev/skip-analysis", "True")]),
            [r#"serin.dev/skip-analysis: "True" must be "true" or "false""#]
        );
    }

    #[test]
    fn the_sequential_settings_name_their_allowed_values() {
        assert_eq!(
            refused(&[
                ("serin.dev/sequential-checks", "yes"),
                ("serin.dev/compare", "baseline"),
                ("serin.dev/compare-margin", "150"),
                ("serin.dev/confidence", "80"),
            ]),
            [
                r#"serin.dev/compare: "baseline" is not supported; allowed: none, primary"#,
                r#"serin.dev/compare-margin: "150" must be a number of percentage points from 0 to 100"#,
                r#"serin.dev/confidence: "80" must be a percentage from 90 to 99.9"#,
                r#"serin.dev/sequential-checks: "yes" must be "true" or "false""#,
            ]
        );
        for (raw, why) in [("99.95", "above the range"), ("99%", "not a number")] {
            assert_eq!(
                refused(&[("serin.dev/confidence", raw)]),
                [format!(
                    r#"serin.dev/confidence: "{raw}" must be a percentage from 90 to 99.9"#
                )],
                "{why}"
            );
        }
        let spec = enabled(&[]);
        assert!(spec.sequential_checks, "sequential by default");
        assert_eq!((spec.compare, spec.compare_margin), (Compare::None, 1.0));
        assert_eq!(spec.confidence, 99.0, "99 % by default");
        assert_eq!(enabled(&[("serin.dev/confidence", "95")]).confidence, 95.0);
    }

    #[test]
    fn misspelled_annotation_gets_did_you_mean() {
        assert_eq!(
            refused(&[("serin.dev/stepweight", "10")]),
            ["serin.dev/stepweight: unknown annotation; did you mean serin.dev/step-weight?"]
        );
        assert_eq!(
            refused(&[("serin.dev/prot", "8080")]),
            ["serin.dev/prot: unknown annotation; did you mean serin.dev/port?"]
        );
        assert_eq!(
            refused(&[("serin.dev/Max-Weight", "10")]),
            ["serin.dev/Max-Weight: unknown annotation; did you mean serin.dev/max-weight?"]
        );
    }

    #[test]
    fn unknown_annotation_far_from_any_key_gets_no_hint() {
        assert_eq!(
            refused(&[("serin.dev/owner", "team-a")]),
            ["serin.dev/owner: unknown annotation"]
        );
    }

    #[test]
    fn desired_replicas_is_accepted_as_input() {
        assert_eq!(enabled(&[(DESIRED_REPLICAS, "3")]), enabled(&[]));
        assert_eq!(
            refused(&[(DESIRED_REPLICAS, "-1")]),
            [r#"serin.dev/desired-replicas: "-1" must be an integer from 0 to 2147483647"#]
        );
    }

    #[test]
    fn step_weights_are_read_as_a_list_and_max_weight_defaults_to_the_last() {
        let spec = enabled(&[("serin.dev/step-weights", "5, 10,25,50")]);
        assert_eq!(spec.step_weights, Some(vec![5, 10, 25, 50]));
        assert_eq!(spec.step_weight, None);
        assert_eq!(spec.max_weight, 50);
        assert_eq!(
            enabled(&[("serin.dev/step-weights", "5,10,25,80")]).max_weight,
            80
        );
        assert_eq!(spec.weights(), vec![5, 10, 25, 50]);
    }

    #[test]
    fn step_weights_item_out_of_range_is_refused() {
        assert_eq!(
            refused(&[("serin.dev/step-weights", "5,0,10")]),
            [
                r#"serin.dev/step-weights: "5,0,10" must be a comma-separated list of integers from 1 to 100, strictly increasing, such as 5,10,25,50"#
            ]
        );
        assert_eq!(refused(&[("serin.dev/step-weights", "5,,10")]).len(), 1);
    }

    #[test]
    fn max_weight_below_the_default_step_lowers_the_step() {
        let spec = enabled(&[("serin.dev/max-weight", "5")]);
        assert_eq!((spec.step_weight, spec.weights()), (Some(5), vec![5]));
    }

    #[test]
    fn match_rules_are_read_in_order() {
        let spec = enabled(&[
            ("serin.dev/provider", "gloo"),
            ("serin.dev/iterations", "10"),
            (
                "serin.dev/match",
                "header:x-canary=insider, header:user-agent~.*(Firefox|Chrome){1,2}.*,cookie:canary",
            ),
        ]);
        assert_eq!(
            spec.matches,
            vec![
                MatchRule::HeaderExact {
                    name: "x-canary".into(),
                    value: "insider".into()
                },
                MatchRule::HeaderRegex {
                    name: "user-agent".into(),
                    regex: ".*(Firefox|Chrome){1,2}.*".into()
                },
                MatchRule::Cookie {
                    name: "canary".into()
                },
            ]
        );
    }

    #[test]
    fn each_malformed_match_rule_is_its_own_line() {
        let ab = [
            ("serin.dev/provider", "gloo"),
            ("serin.dev/iterations", "10"),
        ];
        let expectation = "must be header:NAME=VALUE, header:NAME~REGEX or cookie:NAME, where NAME is an HTTP token, VALUE is not empty and REGEX is a valid regular expression";
        for (rules, bad) in [
            ("query:x=1", vec!["query:x=1"]),
            ("header:x-canary", vec!["header:x-canary"]),
            ("header:x canary=1,cookie:a", vec!["header:x canary=1"]),
            ("header:x-canary=", vec!["header:x-canary="]),
            ("header:x-canary~([a-z]", vec!["header:x-canary~([a-z]"]),
            ("cookie:,header:=v", vec!["cookie:", "header:=v"]),
        ] {
            let mut pairs = ab.to_vec();
            pairs.push(("serin.dev/match", rules));
            let expected: Vec<String> = bad
                .iter()
                .map(|rule| format!("serin.dev/match: {rule:?} {expectation}"))
                .collect();
            assert_eq!(refused(&pairs), expected, "{rules}");
        }
    }

    #[test]
    fn hosts_are_gateway_api_hostnames_each_bad_one_named() {
        let gatewayapi = ("serin.dev/provider", "gatewayapi");
        let gateway = ("serin.dev/gateway", "infra/public");
        let spec = enabled(&[
            gatewayapi,
            gateway,
            ("serin.dev/hosts", "a.example.com,*.b.example.com, c"),
        ]);
        assert_eq!(spec.hosts, ["a.example.com", "*.b.example.com", "c"]);
        let expectation = Key::Hosts.expectation();
        let long = format!("{}.com", "a".repeat(250));
        for (value, bad) in [
            ("A.example.com", vec!["A.example.com"]),
            ("a.example.com:8080", vec!["a.example.com:8080"]),
            ("a.example.com,", vec![""]),
            ("", vec![""]),
            (
                "*.example.com,x.*.example.com,*",
                vec!["x.*.example.com", "*"],
            ),
            (
                "-a.example.com,a_b.example.com",
                vec!["-a.example.com", "a_b.example.com"],
            ),
            ("[::1],fe80::1", vec!["[::1]", "fe80::1"]),
            ("a.example.com.", vec!["a.example.com."]),
            (long.as_str(), vec![long.as_str()]),
        ] {
            let expected: Vec<String> = bad
                .iter()
                .map(|host| format!("serin.dev/hosts: {} {expectation}", quoted(host)))
                .collect();
            assert_eq!(
                refused(&[gatewayapi, gateway, ("serin.dev/hosts", value)]),
                expected,
                "{value}"
            );
        }
        // 253 characters is still a hostname.
        let longest = format!("{}.com", "a".repeat(249));
        assert_eq!(
            enabled(&[gatewayapi, gateway, ("serin.dev/hosts", &longest)]).hosts,
            [longest]
        );
    }

    #[test]
    fn at_most_sixteen_hosts_and_the_count_is_said() {
        let gatewayapi = ("serin.dev/provider", "gatewayapi");
        let gateway = ("serin.dev/gateway", "infra/public");
        let hosts = |n: usize| {
            (0..n)
                .map(|i| format!("h{i}.example.com"))
                .collect::<Vec<_>>()
                .join(",")
        };
        let sixteen = hosts(16);
        assert_eq!(
            enabled(&[gatewayapi, gateway, ("serin.dev/hosts", &sixteen)])
                .hosts
                .len(),
            16
        );
        let seventeen = hosts(17);
        assert_eq!(
            refused(&[gatewayapi, gateway, ("serin.dev/hosts", &seventeen)]),
            [format!(
                "serin.dev/hosts: {} names 17 hosts; at most 16 are allowed (Gateway API's limit \
                 on an HTTPRoute's hostnames)",
                quoted(&seventeen)
            )]
        );
        // A huge value is one short line: the count, and a cut quote.
        let many = hosts(10_000);
        let lines = refused(&[gatewayapi, gateway, ("serin.dev/hosts", &many)]);
        assert_eq!(lines.len(), 1);
        assert!(lines[0].contains("names 10000 hosts"), "{}", lines[0]);
        assert!(lines[0].len() < 400, "{}", lines[0]);
    }

    #[test]
    fn gateway_must_be_namespace_slash_name() {
        let gatewayapi = ("serin.dev/provider", "gatewayapi");
        for value in [
            "public",
            "/public",
            "infra/",
            "Infra/public",
            "infra/pub lic",
        ] {
            assert_eq!(
                refused(&[gatewayapi, ("serin.dev/gateway", value)]),
                [format!(
                    "serin.dev/gateway: {value:?} must be NAMESPACE/NAME of a Gateway"
                )],
            );
        }
    }

    #[test]
    fn analysis_and_ingress_must_be_object_names() {
        assert_eq!(
            refused(&[("serin.dev/analysis", "Checks_1")]),
            [
                r#"serin.dev/analysis: "Checks_1" must be an object name: at most 253 lowercase letters, digits, '-' or '.'"#
            ]
        );
        let nginx = ("serin.dev/provider", "nginx");
        assert_eq!(refused(&[nginx, ("serin.dev/ingress", "-web")]).len(), 1);
    }

    /// Valid specs, written the way the webhook would read them back without a pod template.
    fn valid_spec() -> impl proptest::strategy::Strategy<Value = CanarySpec> {
        let name = "[a-z]([-a-z0-9]{0,8}[a-z0-9])?";
        let steps = prop_oneof![
            (1u32..=100).prop_flat_map(|max| (1..=max, Just(max)).prop_map(|(s, m)| (
                Some(s),
                None,
                m
            ))),
            proptest::collection::btree_set(1u32..=100, 1..6).prop_flat_map(|set| {
                let list: Vec<u32> = set.into_iter().collect();
                let last = list.last().copied().unwrap_or(1);
                (Just(list), last..=100).prop_map(|(l, m)| (None, Some(l), m))
            }),
        ];
        let rule = prop_oneof![
            ("[A-Za-z0-9-]{1,8}", "[A-Za-z0-9._=~-]{1,8}")
                .prop_map(|(name, value)| MatchRule::HeaderExact { name, value }),
            (
                "[A-Za-z0-9-]{1,8}",
                prop_oneof![Just("^insider.*$"), Just("a{1,3}"), Just("(x|y)")]
            )
                .prop_map(|(name, regex)| MatchRule::HeaderRegex {
                    name,
                    regex: regex.to_owned()
                }),
            "[A-Za-z0-9_-]{1,8}".prop_map(|name| MatchRule::Cookie { name }),
        ];
        let config = (
            proptest::sample::select(Provider::ALL.to_vec()),
            proptest::option::of(1i32..=65535),
            name,
            proptest::option::of(("[a-z0-9]{1,8}", name)),
            (1_000u64..=3_600_000, 1u64..=60_000, 1_000u64..=3_600_000),
            (1u32..=1000, steps, proptest::option::of(1u32..=1000)),
            proptest::collection::vec(rule, 1..4),
        );
        (
            config,
            0.0f64..=100.0,
            proptest::option::of(name),
            (
                any::<bool>(),
                any::<bool>(),
                proptest::sample::select(Compare::ALL.to_vec()),
                prop_oneof![Just(0.0), Just(1.0), Just(2.5), Just(100.0)],
                prop_oneof![Just(90.0), Just(95.0), Just(99.0), Just(99.9)],
            ),
            proptest::sample::select(MetricsProvider::ALL.to_vec()),
            proptest::collection::btree_set(
                "(\\*\\.)?[a-z0-9]([a-z0-9-]{0,5}[a-z0-9])?\\.test",
                0..4,
            ),
        )
            .prop_map(
                |(
                    (provider, port, service, gateway, durations, counts, rules),
                    success_rate,
                    analysis,
                    (skip_analysis, sequential_checks, compare, compare_margin, confidence),
                    metrics,
                    hosts,
                )| {
                    let (interval, latency, metrics_window) = durations;
                    let (threshold, (step_weight, step_weights, max_weight), iterations) = counts;
                    let ab = provider.can_match() && iterations.is_some();
                    // A latency judged on the histogram is at least its first bucket.
                    let smallest = metrics_provider_of(provider, metrics).latency_buckets_ms()[0];
                    let latency = match sequential_checks && iterations.is_none() {
                        true => latency.max(smallest.ceil() as u64),
                        false => latency,
                    };
                    let mut rules = rules;
                    if provider == Provider::Nginx {
                        // ingress-nginx matches one header and one cookie at most.
                        let mut seen = (false, false);
                        rules.retain(|rule| {
                            let kind = match rule {
                                MatchRule::Cookie { .. } => &mut seen.1,
                                _ => &mut seen.0,
                            };
                            !std::mem::replace(kind, true)
                        });
                    }
                    // Hosts only go with a Gateway.
                    let hosts: Vec<String> = match (provider, &gateway) {
                        (Provider::GatewayApi, Some(_)) => hosts.into_iter().collect(),
                        _ => Vec::new(),
                    };
                    let metrics = match metrics.observes(provider) {
                        true => metrics,
                        false => provider.default_metrics_provider(),
                    };
                    // Mirroring and affinity: Gateway API releases that move weights; no
                    // mirroring where Traefik reads the series (it cannot mirror).
                    let weighted = provider == Provider::GatewayApi && iterations.is_none();
                    let mirrors = weighted && metrics != MetricsProvider::Traefik;
                    CanarySpec {
                        mirror_checks: mirrors.then(|| threshold.clamp(1, 100)),
                        mirror_percent: mirrors.then(|| max_weight.clamp(1, 100)),
                        affinity_cookie: weighted.then(|| "serin-canary".to_owned()),
                        affinity_max_age: weighted.then(|| Duration::from_secs(3_600)),
                        provider,
                        port,
                        service: service.clone(),
                        ingress: (provider == Provider::Nginx)
                            .then(|| format!("{service}.ingress")),
                        gateway: gateway.filter(|_| provider == Provider::GatewayApi).map(
                            |(namespace, name)| GatewayRef {
                                namespace,
                                name: name.to_owned(),
                            },
                        ),
                        hosts,
                        interval: Duration::from_millis(interval),
                        threshold,
                        step_weight,
                        step_weights,
                        max_weight,
                        iterations,
                        matches: if ab { rules } else { Vec::new() },
                        success_rate,
                        latency: Duration::from_millis(latency),
                        metrics_provider: Some(metrics),
                        metrics_window: Duration::from_millis(metrics_window),
                        analysis,
                        skip_analysis,
                        sequential_checks,
                        compare,
                        compare_margin,
                        confidence,
                    }
                },
            )
    }

    /// The metrics provider the generated spec ends up with (see `valid_spec`).
    fn metrics_provider_of(provider: Provider, metrics: MetricsProvider) -> MetricsProvider {
        match metrics.observes(provider) {
            true => metrics,
            false => provider.default_metrics_provider(),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn defaulted_annotations_read_back_to_the_same_spec(spec in valid_spec()) {
            let annotations = defaulted_annotations(&spec);
            let read = read_annotations("ignored", &annotations, None);
            prop_assert_eq!(read, Ok(OptIn::Enabled(spec)));
        }
    }

    #[test]
    fn defaulted_annotations_make_every_default_explicit_but_the_metrics_provider() {
        let spec = enabled(&[]);
        let annotations = defaulted_annotations(&spec);
        let keys: Vec<&str> = annotations.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "serin.dev/compare",
                "serin.dev/compare-margin",
                "serin.dev/confidence",
                "serin.dev/enabled",
                "serin.dev/interval",
                "serin.dev/latency",
                "serin.dev/max-weight",
                "serin.dev/metrics-window",
                "serin.dev/port",
                "serin.dev/provider",
                "serin.dev/sequential-checks",
                "serin.dev/service",
                "serin.dev/skip-analysis",
                "serin.dev/step-weight",
                "serin.dev/success-rate",
                "serin.dev/threshold",
            ]
        );
        assert_eq!(
            annotations.get("serin.dev/interval").map(String::as_str),
            Some("1m")
        );
        assert_eq!(
            annotations.get("serin.dev/latency").map(String::as_str),
            Some("500ms")
        );
        assert_eq!(
            annotations
                .get("serin.dev/success-rate")
                .map(String::as_str),
            Some("99")
        );
    }
}
