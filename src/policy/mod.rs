//! `CanaryPolicy`: rules a platform team sets once for the whole cluster ("Deployments in
//! `tier: prod` namespaces release as canaries, never more than 20% per step").
//!
//! Pure code, shared by the admission webhooks and `serin check --policy`, over the
//! [`CanaryPolicySpec`] that `crate::crd` defines (the `v1beta1` shape):
//! - which policies apply to a Deployment ([`CanaryPolicySpec::applies_to`]);
//! - the defaults they fill, as annotations, so a filled default reads exactly like one the
//!   user wrote ([`fill_defaults`], in `defaults.rs`);
//! - what they find wrong with a Deployment's effective configuration ([`findings`]);
//! - what is wrong with a policy itself ([`CanaryPolicySpec::problems`], in `validate.rs`);
//! - the watch-fed [`PolicyIndex`] of the cluster's policies and namespace labels that the
//!   admission webhooks and the controller ask which policies cover a Deployment (the one
//!   part that reads the cluster).
//!
//! Several matching policies combine to the strictest: each is checked on its own, so any
//! `deny` policy that is broken refuses, and defaults take the strictest value on offer.

mod defaults;
pub mod egress;
mod hosts;
mod index;
mod selector;
mod validate;

use std::collections::BTreeMap;
use std::fmt;

use crate::crd::{AnalysisTemplateSpec, CanaryPolicySpec, Enforcement, PolicyLimits};
use crate::spec::{Builtin, CanarySpec, OptIn};

pub use defaults::{combined_defaults, fill_defaults};
pub use hosts::host_allowed;
pub use index::{Names, NotReady, Occupant, PolicyIndex};
pub(crate) use selector::is_dns_subdomain;

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
}

/// The policies of `all` that cover `subject`, in name order.
pub fn applicable<'a>(all: &'a [NamedPolicy], subject: Subject<'_>) -> Vec<&'a NamedPolicy> {
    let mut found: Vec<_> = all.iter().filter(|p| p.spec.applies_to(subject)).collect();
    found.sort_by(|a, b| a.name.cmp(&b.name));
    found
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
    if let Some(max) = limits.max_mirror_percent
        && canary.mirror_checks.is_some()
    {
        let percent = canary.mirror_percent.unwrap_or(100);
        match (max, canary.mirror_percent) {
            (0, _) => found.push(
                "serin.dev/mirror-checks: mirroring is not allowed (limit maxMirrorPercent 0)"
                    .to_owned(),
            ),
            (max, Some(_)) if percent > max => found.push(format!(
                "serin.dev/mirror-percent: {percent} exceeds the limit maxMirrorPercent {max}"
            )),
            (max, None) if percent > max => found.push(format!(
                "serin.dev/mirror-checks: mirrors every request (no serin.dev/mirror-percent), \
                 more than the limit maxMirrorPercent {max}"
            )),
            _ => {}
        }
    }
    if limits.require_sequential_checks == Some(true) && !canary.sequential_checks {
        found.push(
            "serin.dev/sequential-checks: \"false\" is refused by the limit \
             requireSequentialChecks: releases here are judged on their request counts \
             (allowed: \"true\")"
                .to_owned(),
        );
    }
    if let Some(max) = limits.max_compare_margin
        && canary.compare == crate::spec::Compare::Primary
        && canary.compare_margin > max
    {
        found.push(format!(
            "serin.dev/compare-margin: {} exceeds the limit maxCompareMargin {max}",
            canary.compare_margin
        ));
    }
    if let Some(min) = limits.min_confidence
        && canary.confidence < min
    {
        found.push(format!(
            "serin.dev/confidence: {} is below the limit minConfidence {min} (allowed: {min} \
             to 99.9)",
            canary.confidence
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
                hook.type_.name(),
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

#[cfg(test)]
mod tests;
