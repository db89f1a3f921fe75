//! `CanaryPolicy`: rules a platform team sets once for the whole cluster ("Deployments in
//! `tier: prod` namespaces release as canaries, never more than 20% per step").
//!
//! Pure code, shared by the admission webhooks and `serin check --policy`, over the
//! [`CanaryPolicySpec`] that `crate::crd` defines (the `v1beta1` shape):
//! - which policies apply to a Deployment ([`CanaryPolicySpec::applies_to`]);
//! - the defaults they fill, as annotations, so a filled default reads exactly like one the
//!   user wrote ([`fill_defaults`]);
//! - what they find wrong with a Deployment's effective configuration ([`findings`]);
//! - what is wrong with a policy itself ([`CanaryPolicySpec::problems`]);
//! - the watch-fed [`PolicyIndex`] of the cluster's policies and namespace labels that the
//!   admission webhooks and the controller ask which policies cover a Deployment (the one
//!   part that reads the cluster).
//!
//! Several matching policies combine to the strictest: each is checked on its own, so any
//! `deny` policy that is broken refuses, and defaults take the strictest value on offer.

pub mod egress;
mod hosts;
mod index;
mod selector;

use std::collections::BTreeMap;
use std::fmt;

use crate::crd::{
    AnalysisTemplateSpec, CanaryPolicySpec, Enforcement, HookType, PolicyDefaults, PolicyLimits,
};
use crate::spec::{self, Builtin, CanarySpec, OptIn, Problem};

pub use hosts::host_allowed;
pub use index::{Names, NotReady, Occupant, PolicyIndex};

/// What a CanaryPolicy that requires canaries says about a Deployment that did not opt in.
pub const REQUIRE_CANARY_MESSAGE: &str =
    "Deployments here must release as canaries: add the annotation serin.dev/enabled: \"true\"";

/// A policy with the name its findings carry.
#[derive(Clone, Debug, PartialEq)]
pub struct NamedPolicy {
    pub name: String,
    pub spec: CanaryPolicySpec,
}

/// The labels a policy's selectors are matched against.
#[derive(Clone, Copy, Debug)]
pub struct Subject<'a> {
    pub namespace_labels: &'a BTreeMap<String, String>,
    pub labels: &'a BTreeMap<String, String>,
}

impl CanaryPolicySpec {
    /// Whether the policy covers a Deployment with these labels in a namespace with those.
    /// A selector that does not parse covers nothing (admission refuses such policies, so
    /// only one created while Serin was away can have one).
    pub fn applies_to(&self, subject: Subject<'_>) -> bool {
        selector::matches(self.namespace_selector.as_ref(), subject.namespace_labels)
            && selector::matches(self.selector.as_ref(), subject.labels)
    }

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
        problems
    }
}

/// The policies of `all` that cover `subject`, in name order.
pub fn applicable<'a>(all: &'a [NamedPolicy], subject: Subject<'_>) -> Vec<&'a NamedPolicy> {
    let mut found: Vec<_> = all.iter().filter(|p| p.spec.applies_to(subject)).collect();
    found.sort_by(|a, b| a.name.cmp(&b.name));
    found
}

/// The annotation each default fills, with its value in annotation syntax.
fn default_annotations(defaults: &PolicyDefaults) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let mut put = |key: &'static str, value: Option<String>| {
        if let Some(value) = value {
            out.push((key, value));
        }
    };
    put(
        "serin.dev/provider",
        defaults.provider.map(|p| p.to_string()),
    );
    put(
        "serin.dev/interval",
        defaults.interval.map(|d| d.to_string()),
    );
    put(
        "serin.dev/threshold",
        defaults.threshold.map(|n| n.to_string()),
    );
    put(
        "serin.dev/step-weight",
        defaults.step_weight.map(|n| n.to_string()),
    );
    put(
        "serin.dev/max-weight",
        defaults.max_weight.map(|n| n.to_string()),
    );
    put(
        "serin.dev/success-rate",
        defaults.success_rate.map(|r| r.to_string()),
    );
    put("serin.dev/latency", defaults.latency.map(|d| d.to_string()));
    out
}

/// The strictest defaults on offer: the longest interval, the smallest threshold, step and
/// maximum weight, the highest success rate, the lowest latency; for the provider, that of
/// the first policy by name.
pub fn combined_defaults<'a>(
    policies: impl IntoIterator<Item = &'a NamedPolicy>,
) -> PolicyDefaults {
    fn pick<T: Copy>(current: Option<T>, offered: Option<T>, stricter: fn(T, T) -> T) -> Option<T> {
        match (current, offered) {
            (Some(a), Some(b)) => Some(stricter(a, b)),
            (a, b) => a.or(b),
        }
    }
    let mut out = PolicyDefaults::default();
    for policy in policies {
        let Some(d) = &policy.spec.defaults else {
            continue;
        };
        out.provider = out.provider.or(d.provider);
        out.interval = pick(out.interval, d.interval, Ord::max);
        out.threshold = pick(out.threshold, d.threshold, Ord::min);
        out.step_weight = pick(out.step_weight, d.step_weight, Ord::min);
        out.max_weight = pick(out.max_weight, d.max_weight, Ord::min);
        out.success_rate = pick(out.success_rate, d.success_rate, f64::max);
        out.latency = pick(out.latency, d.latency, Ord::min);
    }
    out
}

/// The annotations of an opted-in Deployment with the policies' defaults added where the user
/// wrote nothing. A default never overrides what was written, nor what follows from it: no
/// `step-weight` or `max-weight` next to a written `step-weights` list.
pub fn fill_defaults(
    annotations: &BTreeMap<String, String>,
    defaults: &PolicyDefaults,
) -> BTreeMap<String, String> {
    let mut out = annotations.clone();
    let listed = annotations.contains_key("serin.dev/step-weights");
    for (key, value) in default_annotations(defaults) {
        let derived = listed && matches!(key, "serin.dev/step-weight" | "serin.dev/max-weight");
        if !derived && !out.contains_key(key) {
            out.insert(key.to_owned(), value);
        }
    }
    out
}

/// One thing a policy found wrong with a Deployment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub policy: String,
    pub enforcement: Enforcement,
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (CanaryPolicy {})", self.message, self.policy)
    }
}

/// What the checks see of a Deployment: its configuration and the template it names.
#[derive(Clone, Copy, Debug)]
pub struct Release<'a> {
    /// `None` when the Deployment has not opted in.
    pub canary: Option<&'a CanarySpec>,
    /// The `AnalysisTemplate` named in `serin.dev/analysis`, when it was found.
    pub template: Option<&'a AnalysisTemplateSpec>,
}

impl<'a> Release<'a> {
    pub fn of(opt_in: &'a OptIn, template: Option<&'a AnalysisTemplateSpec>) -> Self {
        let canary = match opt_in {
            OptIn::Enabled(spec) => Some(spec),
            OptIn::Absent | OptIn::Disabled => None,
        };
        Self { canary, template }
    }
}

/// Every finding of every applicable policy, policy by policy.
pub fn findings(policies: &[&NamedPolicy], release: Release<'_>) -> Vec<Finding> {
    let mut out = Vec::new();
    for policy in policies {
        let spec = &policy.spec;
        let mut found = Vec::new();
        match release.canary {
            None if spec.require_canary == Some(true) => {
                found.push(REQUIRE_CANARY_MESSAGE.to_owned());
            }
            None => {}
            Some(canary) => {
                if let Some(limits) = &spec.limits {
                    found.extend(limit_findings(limits, canary, release.template));
                }
                if let Some(template) = release.template {
                    let name = canary.analysis.as_deref().unwrap_or("?");
                    found.extend(template_findings_of(spec, name, template));
                }
            }
        }
        out.extend(found.into_iter().map(|message| Finding {
            policy: policy.name.clone(),
            enforcement: spec.enforcement(),
            message,
        }));
    }
    out
}

/// What the policies find wrong with the AnalysisTemplate `name` on its own, whichever
/// Deployment names it: the hosts its webhooks and metrics call, and, when it lists metrics
/// (which then replace the annotation thresholds), its builtin checks against the quality
/// limits. The template admission webhook judges a template write with the policies covering
/// the Deployments that name it, and the controller judges a template again before each call
/// it makes for a release: a template edited after its Deployment was admitted cannot get
/// around a policy.
pub fn template_findings(
    policies: &[&NamedPolicy],
    name: &str,
    template: &AnalysisTemplateSpec,
) -> Vec<Finding> {
    policies
        .iter()
        .flat_map(|policy| {
            template_findings_of(&policy.spec, name, template)
                .into_iter()
                .map(|message| Finding {
                    policy: policy.name.clone(),
                    enforcement: policy.spec.enforcement(),
                    message,
                })
        })
        .collect()
}

fn template_findings_of(
    spec: &CanaryPolicySpec,
    name: &str,
    template: &AnalysisTemplateSpec,
) -> Vec<String> {
    let mut found = Vec::new();
    if let Some(limits) = &spec.limits
        && !template.metrics.is_empty()
    {
        found.extend(template_limit_findings(limits, spec, name, template));
    }
    if let Some(hosts) = &spec.allowed_webhook_hosts {
        found.extend(webhook_host_findings(hosts, name, template));
    }
    if let Some(hosts) = &spec.allowed_metrics_hosts {
        found.extend(metrics_host_findings(hosts, name, template));
    }
    found
}

fn limit_findings(
    limits: &PolicyLimits,
    canary: &CanarySpec,
    template: Option<&AnalysisTemplateSpec>,
) -> Vec<String> {
    let mut found = Vec::new();
    if let Some(max) = limits.max_step_weight {
        let weights = canary.weights();
        let largest = std::iter::once(0)
            .chain(weights.iter().copied())
            .zip(weights.iter().copied())
            .map(|(from, to)| to.saturating_sub(from))
            .max()
            .unwrap_or(0);
        if largest > max {
            let field = match canary.step_weights {
                Some(_) => "serin.dev/step-weights",
                None => "serin.dev/step-weight",
            };
            found.push(format!(
                "{field}: a step of {largest} exceeds the limit maxStepWeight {max}"
            ));
        }
    }
    if let Some(max) = limits.max_weight
        && canary.max_weight > max
    {
        found.push(format!(
            "serin.dev/max-weight: {} exceeds the limit maxWeight {max}",
            canary.max_weight
        ));
    }
    if let Some(min) = limits.min_interval
        && canary.interval < min
    {
        found.push(format!(
            "serin.dev/interval: {} is shorter than the limit minInterval {min}",
            canary.interval
        ));
    }
    if let Some(min) = limits.min_threshold
        && canary.threshold < min
    {
        found.push(format!(
            "serin.dev/threshold: {} is below the limit minThreshold {min}",
            canary.threshold
        ));
    }
    let checks_quality = limits.min_success_rate.is_some() || limits.max_latency.is_some();
    if checks_quality && canary.skip_analysis {
        found.push(
            "serin.dev/skip-analysis: \"true\" would promote without the success-rate and \
             latency checks the policy's limits require"
                .to_owned(),
        );
    }
    match template.filter(|t| !t.metrics.is_empty()) {
        // The template's metrics replace the annotation thresholds: its builtins are checked
        // with the template ([`template_findings`]).
        Some(_) => {}
        None => {
            if let Some(min) = limits.min_success_rate
                && canary.success_rate < min
            {
                found.push(format!(
                    "serin.dev/success-rate: {} is below the limit minSuccessRate {min}",
                    canary.success_rate
                ));
            }
            if let Some(max) = limits.max_latency
                && canary.latency > max
            {
                found.push(format!(
                    "serin.dev/latency: {} exceeds the limit maxLatency {max}",
                    canary.latency
                ));
            }
        }
    }
    found
}

fn template_limit_findings(
    limits: &PolicyLimits,
    policy: &CanaryPolicySpec,
    name: &str,
    template: &AnalysisTemplateSpec,
) -> Vec<String> {
    let builtin = |b: Builtin| {
        template
            .metrics
            .iter()
            .find(|m| m.query.is_none() && m.name == b.name())
    };
    let mut found = Vec::new();
    // A bound is only worth what the number it bounds is: measured by Serin's Prometheus or
    // a host the policy trusts, not by any server the template names.
    let mut trusted = |b: Builtin, limit: &str| {
        let Some(address) = builtin(b).and_then(|m| m.address.as_deref()) else {
            return;
        };
        let allowed = policy.allowed_metrics_hosts.as_deref().unwrap_or_default();
        let host = hosts::url_host(address);
        if host.as_deref().is_some_and(|h| host_allowed(allowed, h)) {
            return;
        }
        found.push(format!(
            "AnalysisTemplate {name} metric {} is measured at {address}, not by Serin's \
             Prometheus: the limit {limit} holds only for a measurement Serin trusts (leave out \
             address, or list its host in allowedMetricsHosts)",
            b.name()
        ));
    };
    if limits.min_success_rate.is_some() {
        trusted(Builtin::SuccessRate, "minSuccessRate");
    }
    if limits.max_latency.is_some() {
        trusted(Builtin::Duration, "maxLatency");
    }
    if let Some(min) = limits.min_success_rate {
        let bound = builtin(Builtin::SuccessRate).and_then(|m| m.threshold_range.min);
        match bound {
            Some(bound) if bound >= min => {}
            Some(bound) => found.push(format!(
                "AnalysisTemplate metric request-success-rate: min {bound} is below the limit \
                 minSuccessRate {min}"
            )),
            None => found.push(format!(
                "the AnalysisTemplate must check request-success-rate with a min of at least \
                 {min} (limit minSuccessRate)"
            )),
        }
    }
    if let Some(max) = limits.max_latency {
        let max_ms = max.as_millis() as f64;
        let bound = builtin(Builtin::Duration).and_then(|m| m.threshold_range.max);
        match bound {
            Some(bound) if bound <= max_ms => {}
            Some(bound) => found.push(format!(
                "AnalysisTemplate metric request-duration: max {bound}ms exceeds the limit \
                 maxLatency {max}"
            )),
            None => found.push(format!(
                "the AnalysisTemplate must check request-duration with a max of at most \
                 {max_ms}ms (limit maxLatency {max})"
            )),
        }
    }
    found
}

fn webhook_host_findings(
    hosts: &[String],
    name: &str,
    template: &AnalysisTemplateSpec,
) -> Vec<String> {
    template
        .webhooks
        .iter()
        .filter_map(|hook| match hosts::url_host(&hook.url) {
            Some(host) if host_allowed(hosts, &host) => None,
            Some(host) => Some(format!(
                "AnalysisTemplate {name} webhook {:?} ({}) calls {host}, which is not in \
                 allowedWebhookHosts [{}]",
                hook.name,
                hook_type(hook.type_),
                hosts.join(", ")
            )),
            None => Some(format!(
                "AnalysisTemplate {name} webhook {:?}: url {:?} has no host",
                hook.name, hook.url
            )),
        })
        .collect()
}

fn metrics_host_findings(
    hosts: &[String],
    name: &str,
    template: &AnalysisTemplateSpec,
) -> Vec<String> {
    template
        .metrics
        .iter()
        .filter_map(|metric| {
            let address = metric.address.as_deref()?;
            match hosts::url_host(address) {
                Some(host) if host_allowed(hosts, &host) => None,
                Some(host) => Some(format!(
                    "AnalysisTemplate {name} metric {:?} asks Prometheus at {host}, which is not \
                     in allowedMetricsHosts [{}]",
                    metric.name,
                    hosts.join(", ")
                )),
                None => Some(format!(
                    "AnalysisTemplate {name} metric {:?}: address {address:?} has no host",
                    metric.name
                )),
            }
        })
        .collect()
}

fn hook_type(t: HookType) -> String {
    serde_json::to_value(t)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
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
    problems
}

#[cfg(test)]
mod tests;
