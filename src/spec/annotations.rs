//! The `serin.dev/` annotation keys: the key table, parsing each value into the typed model,
//! the defaults that depend on other keys, the canonical annotations written back, and the
//! "did you mean" hint for unknown keys.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;

use super::duration;
use super::model::{CanarySpec, DEFAULT_STEP_WEIGHT, GatewayRef, MatchRule, Provider};
use super::{DESIRED_REPLICAS, ENABLED, PREFIX, Problem, schema};

/// Every annotation Serin knows. Users write all of them except [`Key::DesiredReplicas`],
/// which the mutating webhook writes (and which is still accepted as input).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Key {
    Enabled,
    Provider,
    Port,
    Service,
    Ingress,
    Gateway,
    Interval,
    Threshold,
    StepWeight,
    StepWeights,
    MaxWeight,
    Iterations,
    Match,
    SuccessRate,
    Latency,
    MetricsWindow,
    Analysis,
    SkipAnalysis,
    DesiredReplicas,
}

impl Key {
    pub(super) const ALL: [Key; 19] = [
        Key::Enabled,
        Key::Provider,
        Key::Port,
        Key::Service,
        Key::Ingress,
        Key::Gateway,
        Key::Interval,
        Key::Threshold,
        Key::StepWeight,
        Key::StepWeights,
        Key::MaxWeight,
        Key::Iterations,
        Key::Match,
        Key::SuccessRate,
        Key::Latency,
        Key::MetricsWindow,
        Key::Analysis,
        Key::SkipAnalysis,
        Key::DesiredReplicas,
    ];

    pub(super) fn annotation(self) -> &'static str {
        match self {
            Key::Enabled => ENABLED,
            Key::Provider => "serin.dev/provider",
            Key::Port => "serin.dev/port",
            Key::Service => "serin.dev/service",
            Key::Ingress => "serin.dev/ingress",
            Key::Gateway => "serin.dev/gateway",
            Key::Interval => "serin.dev/interval",
            Key::Threshold => "serin.dev/threshold",
            Key::StepWeight => "serin.dev/step-weight",
            Key::StepWeights => "serin.dev/step-weights",
            Key::MaxWeight => "serin.dev/max-weight",
            Key::Iterations => "serin.dev/iterations",
            Key::Match => "serin.dev/match",
            Key::SuccessRate => "serin.dev/success-rate",
            Key::Latency => "serin.dev/latency",
            Key::MetricsWindow => "serin.dev/metrics-window",
            Key::Analysis => "serin.dev/analysis",
            Key::SkipAnalysis => "serin.dev/skip-analysis",
            Key::DesiredReplicas => DESIRED_REPLICAS,
        }
    }

    /// The [`CanarySpec`] field (its JSON name) this key configures, if any.
    pub(super) fn field(self) -> Option<&'static str> {
        Some(match self {
            Key::Enabled | Key::DesiredReplicas => return None,
            Key::Provider => "provider",
            Key::Port => "port",
            Key::Service => "service",
            Key::Ingress => "ingress",
            Key::Gateway => "gateway",
            Key::Interval => "interval",
            Key::Threshold => "threshold",
            Key::StepWeight => "stepWeight",
            Key::StepWeights => "stepWeights",
            Key::MaxWeight => "maxWeight",
            Key::Iterations => "iterations",
            Key::Match => "matches",
            Key::SuccessRate => "successRate",
            Key::Latency => "latency",
            Key::MetricsWindow => "metricsWindow",
            Key::Analysis => "analysis",
            Key::SkipAnalysis => "skipAnalysis",
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
            Key::Enabled | Key::SkipAnalysis => r#"must be "true" or "false""#.to_owned(),
            Key::Provider => Provider::expectation(),
            Key::Port | Key::Threshold | Key::StepWeight | Key::MaxWeight | Key::Iterations => {
                range("an integer")
            }
            Key::SuccessRate => range("a number"),
            Key::StepWeights => format!(
                "{}, strictly increasing, such as 5,10,25,50",
                range("a comma-separated list of integers")
            ),
            Key::Interval | Key::Latency | Key::MetricsWindow => duration::EXPECTATION.to_owned(),
            Key::Service => "must be a Service name: at most 63 lowercase letters, digits or '-', \
                             starting with a letter"
                .to_owned(),
            Key::Ingress | Key::Analysis => "must be an object name: at most 253 lowercase \
                                             letters, digits, '-' or '.'"
                .to_owned(),
            Key::Gateway => "must be NAMESPACE/NAME of a Gateway".to_owned(),
            Key::Match => "must be header:NAME=VALUE, header:NAME~REGEX or cookie:NAME, where \
                           NAME is an HTTP token, VALUE is not empty and REGEX is a valid regular \
                           expression"
                .to_owned(),
            Key::DesiredReplicas => format!("must be an integer from 0 to {}", i32::MAX),
        }
    }

    /// The problem for a value of this key that is not what [`Key::expectation`] says.
    pub(super) fn refuse(self, shown: &str) -> Problem {
        Problem::new(
            self.annotation(),
            format!("{shown:?} {}", self.expectation()),
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
            Some(raw) => format!("{raw:?}"),
            None => format!(
                "{:?} (default)",
                value_of(key, &self.spec).unwrap_or_default()
            ),
        }
    }
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
    };
    for (annotation, raw) in ours {
        let Some(key) = Key::find(annotation) else {
            reading.problems.push(unknown(annotation));
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
            parsed::<i32>(raw).filter(|n| *n >= 0).ok_or_else(refused)?;
        }
        Key::Provider => spec.provider = parsed(raw).ok_or_else(refused)?,
        Key::Port => spec.port = Some(parsed(raw).ok_or_else(refused)?),
        Key::Service => spec.service = raw.to_owned(),
        Key::Ingress => spec.ingress = Some(raw.to_owned()),
        Key::Gateway => spec.gateway = Some(gateway(raw).ok_or_else(refused)?),
        Key::Interval => spec.interval = parsed(raw).ok_or_else(refused)?,
        Key::Threshold => spec.threshold = parsed(raw).ok_or_else(refused)?,
        Key::StepWeight => spec.step_weight = Some(parsed(raw).ok_or_else(refused)?),
        Key::StepWeights => spec.step_weights = Some(list(raw).ok_or_else(refused)?),
        Key::MaxWeight => spec.max_weight = parsed(raw).ok_or_else(refused)?,
        Key::Iterations => spec.iterations = Some(parsed(raw).ok_or_else(refused)?),
        Key::Match => spec.matches = match_rules(raw)?,
        Key::SuccessRate => {
            spec.success_rate = parsed::<f64>(raw)
                .filter(|n| n.is_finite())
                .ok_or_else(refused)?
        }
        Key::Latency => spec.latency = parsed(raw).ok_or_else(refused)?,
        Key::MetricsWindow => spec.metrics_window = parsed(raw).ok_or_else(refused)?,
        Key::Analysis => spec.analysis = Some(raw.to_owned()),
        Key::SkipAnalysis => spec.skip_analysis = boolean(raw).ok_or_else(refused)?,
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

/// Integers, [`Provider`], [`Duration`]: anything with a `FromStr`.
fn parsed<T: FromStr>(raw: &str) -> Option<T> {
    raw.parse().ok()
}

/// `5,10,25,50`; spaces around items are allowed.
fn list(raw: &str) -> Option<Vec<u32>> {
    raw.split(',')
        .map(|item| item.trim().parse().ok())
        .collect()
}

/// `namespace/name`.
fn gateway(raw: &str) -> Option<GatewayRef> {
    let (namespace, name) = raw.split_once('/')?;
    (!namespace.is_empty() && !name.is_empty()).then(|| GatewayRef {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    })
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
    for text in &texts {
        let text = text.trim();
        match match_rule(text) {
            Some(rule) => rules.push(rule),
            None => problems.push(Key::Match.refuse(text)),
        }
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
    let spec = &mut reading.spec;
    if reading.written.contains_key(&Key::StepWeights) {
        if !reading.written.contains_key(&Key::StepWeight) {
            spec.step_weight = None;
        }
        let last = spec
            .step_weights
            .as_ref()
            .and_then(|list| list.last().copied());
        if let Some(last) = last.filter(|_| {
            !reading.written.contains_key(&Key::MaxWeight)
                && !reading.refused.contains(&Key::StepWeights)
        }) {
            spec.max_weight = last;
        }
    } else if !reading.written.contains_key(&Key::StepWeight) {
        spec.step_weight = Some(DEFAULT_STEP_WEIGHT.min(spec.max_weight));
    }
}

/// The canonical annotation value of `key` in `spec`; `None` when the key is not set.
pub(super) fn value_of(key: Key, spec: &CanarySpec) -> Option<String> {
    let join = |items: Vec<String>| items.join(",");
    match key {
        Key::Enabled => Some("true".to_owned()),
        Key::DesiredReplicas => None,
        Key::Provider => Some(spec.provider.to_string()),
        Key::Port => spec.port.map(|p| p.to_string()),
        Key::Service => Some(spec.service.clone()),
        Key::Ingress => spec.ingress.clone(),
        Key::Gateway => spec.gateway.as_ref().map(ToString::to_string),
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
        Key::MetricsWindow => Some(spec.metrics_window.to_string()),
        Key::Analysis => spec.analysis.clone(),
        Key::SkipAnalysis => Some(spec.skip_analysis.to_string()),
    }
}

/// `serin.dev/stepweight: unknown annotation; did you mean serin.dev/step-weight?`
fn unknown(annotation: &str) -> Problem {
    let typed = annotation
        .strip_prefix(PREFIX)
        .unwrap_or(annotation)
        .to_lowercase();
    let closest = Key::ALL
        .into_iter()
        .map(|key| {
            let known = key.annotation().strip_prefix(PREFIX).unwrap_or_default();
            (edit_distance(&typed, known), known.len(), key)
        })
        .min_by_key(|(distance, _, _)| *distance)
        .filter(|(distance, len, _)| *distance <= (len / 3).max(2));
    let message = match closest {
        Some((_, _, key)) => format!("unknown annotation; did you mean {}?", key.annotation()),
        None => "unknown annotation".to_owned(),
    };
    Problem::new(annotation, message)
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
