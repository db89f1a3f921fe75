//! What is wrong with a CanaryPolicy itself, each problem naming its field: selectors that do
//! not parse, defaults the annotation parser refuses, limits out of range, defaults beyond
//! the limits, host patterns that are not patterns, alerts that name a Secret badly or set a
//! field their chat service does not take.

use std::collections::BTreeMap;

use super::defaults::default_annotations;
use super::{hosts, selector};
use crate::crd::{Alert, AlertType, CanaryPolicySpec, PolicyDefaults, PolicyLimits};
use crate::spec::{self, Problem};

impl CanaryPolicySpec {
    /// Everything wrong with the policy itself, each naming its field.
    pub fn problems(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        for (field, selector) in [
            ("spec.namespaceSelector", &self.namespace_selector),
            ("spec.selector", &self.selector),
        ] {
            if let Some(selector) = selector {
                problems.extend(selector::problems(field, selector));
            }
        }
        if let Some(defaults) = &self.defaults {
            problems.extend(defaults_problems(defaults));
        }
        if let Some(limits) = &self.limits {
            problems.extend(limits_problems(limits));
            if let Some(defaults) = &self.defaults {
                problems.extend(defaults_beyond_limits(defaults, limits));
            }
        }
        for (field, list) in [
            ("allowedWebhookHosts", &self.allowed_webhook_hosts),
            ("allowedMetricsHosts", &self.allowed_metrics_hosts),
        ] {
            for (i, host) in list.iter().flatten().enumerate() {
                if let Err(message) = hosts::check_pattern(host) {
                    problems.push(Problem::new(format!("spec.{field}[{i}]"), message));
                }
            }
        }
        if let Some(alerts) = &self.alerts {
            problems.extend(alerts_problems(alerts));
        }
        problems
    }
}

/// The most alerts one policy may list (the schema says so too): each Event of a covered
/// release is one call per alert.
const MAX_ALERTS: usize = 10;

/// Alerts: unique names, a Secret name Kubernetes accepts, and `channel`/`username` only
/// where the chat service takes them.
fn alerts_problems(alerts: &[Alert]) -> Vec<Problem> {
    let mut problems = Vec::new();
    if alerts.len() > MAX_ALERTS {
        problems.push(Problem::new(
            "spec.alerts",
            format!("{} alerts; at most {MAX_ALERTS} per policy", alerts.len()),
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, alert) in alerts.iter().enumerate() {
        let field = |name: &str| format!("spec.alerts[{i}].{name}");
        if !seen.insert(alert.name.as_str()) {
            problems.push(Problem::new(
                field("name"),
                format!(
                    "{:?} is used by an earlier alert; names must be unique",
                    alert.name
                ),
            ));
        }
        if !is_dns_subdomain(&alert.secret_ref.name) {
            problems.push(Problem::new(
                field("secretRef.name"),
                format!(
                    "{:?} is not a Secret name: lower-case letters, digits, '-' and '.', at \
                     most 253 characters, starting and ending with a letter or digit",
                    alert.secret_ref.name
                ),
            ));
        }
        let takes_channel = matches!(alert.type_, AlertType::Slack | AlertType::Rocket);
        let takes_username = !matches!(alert.type_, AlertType::Msteams | AlertType::Gchat);
        for (name, set, takes, services) in [
            (
                "channel",
                alert.channel.is_some(),
                takes_channel,
                "slack, rocket",
            ),
            (
                "username",
                alert.username.is_some(),
                takes_username,
                "slack, discord, rocket",
            ),
        ] {
            if set && !takes {
                problems.push(Problem::new(
                    field(name),
                    format!(
                        "type {} does not take a {name} (its webhook posts where it was made); \
                         {name} is for types: {services}",
                        alert.type_.as_str()
                    ),
                ));
            }
        }
    }
    problems
}

/// A DNS-1123 subdomain, as Kubernetes names Secrets.
fn is_dns_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

/// The policy field a default annotation comes from, for messages about the defaults.
fn default_field(annotation: &str) -> String {
    let field = match annotation {
        "serin.dev/provider" => "provider",
        "serin.dev/interval" => "interval",
        "serin.dev/threshold" => "threshold",
        "serin.dev/step-weight" => "stepWeight",
        "serin.dev/max-weight" => "maxWeight",
        "serin.dev/success-rate" => "successRate",
        "serin.dev/latency" => "latency",
        "serin.dev/sequential-checks" => "sequentialChecks",
        "serin.dev/compare" => "compare",
        "serin.dev/compare-margin" => "compareMargin",
        other => other,
    };
    format!("spec.defaults.{field}")
}

/// The defaults, read by the same parser as annotations: the values a policy may fill are
/// exactly those a user may write.
fn defaults_problems(defaults: &PolicyDefaults) -> Vec<Problem> {
    let mut annotations: BTreeMap<String, String> = default_annotations(defaults)
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    annotations.insert(spec::ENABLED.to_owned(), "true".to_owned());
    match spec::read_annotations("policy-defaults", &annotations, None) {
        Ok(_) => Vec::new(),
        Err(problems) => problems
            .iter()
            .map(|p| {
                let message = p.message.clone();
                Problem::new(default_field(&p.field), message)
            })
            .collect(),
    }
}

fn limits_problems(limits: &PolicyLimits) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut range = |field: &str, value: Option<f64>, min: f64, max: f64| {
        if let Some(v) = value
            && !(min..=max).contains(&v)
        {
            problems.push(Problem::new(
                format!("spec.limits.{field}"),
                format!("{v} must be from {min} to {max}"),
            ));
        }
    };
    range(
        "maxStepWeight",
        limits.max_step_weight.map(f64::from),
        1.0,
        100.0,
    );
    range("maxWeight", limits.max_weight.map(f64::from), 1.0, 100.0);
    range(
        "minThreshold",
        limits.min_threshold.map(f64::from),
        1.0,
        1000.0,
    );
    range("minSuccessRate", limits.min_success_rate, 0.0, 100.0);
    range(
        "maxMirrorPercent",
        limits.max_mirror_percent.map(f64::from),
        0.0,
        100.0,
    );
    range("maxCompareMargin", limits.max_compare_margin, 0.0, 100.0);
    range("minConfidence", limits.min_confidence, 90.0, 99.9);
    if let (Some(step), Some(max)) = (limits.max_step_weight, limits.max_weight)
        && step > max
    {
        problems.push(Problem::new(
            "spec.limits.maxStepWeight",
            format!("{step} is larger than spec.limits.maxWeight {max}"),
        ));
    }
    problems
}

/// A policy whose own defaults break its own limits would refuse every Deployment that relies
/// on them.
fn defaults_beyond_limits(defaults: &PolicyDefaults, limits: &PolicyLimits) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut beyond = |field: &str, value: String, limit: &str, bound: String| {
        problems.push(Problem::new(
            format!("spec.defaults.{field}"),
            format!("{value} is outside spec.limits.{limit} {bound}"),
        ));
    };
    if let (Some(v), Some(l)) = (defaults.step_weight, limits.max_step_weight)
        && v > l
    {
        beyond("stepWeight", v.to_string(), "maxStepWeight", l.to_string());
    }
    if let (Some(v), Some(l)) = (defaults.max_weight, limits.max_weight)
        && v > l
    {
        beyond("maxWeight", v.to_string(), "maxWeight", l.to_string());
    }
    if let (Some(v), Some(l)) = (defaults.interval, limits.min_interval)
        && v < l
    {
        beyond("interval", v.to_string(), "minInterval", l.to_string());
    }
    if let (Some(v), Some(l)) = (defaults.threshold, limits.min_threshold)
        && v < l
    {
        beyond("threshold", v.to_string(), "minThreshold", l.to_string());
    }
    if let (Some(v), Some(l)) = (defaults.success_rate, limits.min_success_rate)
        && v < l
    {
        beyond(
            "successRate",
            v.to_string(),
            "minSuccessRate",
            l.to_string(),
        );
    }
    if let (Some(v), Some(l)) = (defaults.latency, limits.max_latency)
        && v > l
    {
        beyond("latency", v.to_string(), "maxLatency", l.to_string());
    }
    if let (Some(false), Some(true)) =
        (defaults.sequential_checks, limits.require_sequential_checks)
    {
        beyond(
            "sequentialChecks",
            "false".into(),
            "requireSequentialChecks",
            "true".into(),
        );
    }
    if let (Some(v), Some(l)) = (defaults.compare_margin, limits.max_compare_margin)
        && v > l
    {
        beyond(
            "compareMargin",
            v.to_string(),
            "maxCompareMargin",
            l.to_string(),
        );
    }
    problems
}
