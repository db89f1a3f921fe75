//! The defaults CanaryPolicies fill: written as annotations, so a filled default reads
//! exactly like one the user wrote, the strictest value on offer when several policies match.

use std::collections::BTreeMap;

use super::NamedPolicy;
use crate::crd::PolicyDefaults;

/// The annotation each default fills, with its value in annotation syntax.
pub(super) fn default_annotations(defaults: &PolicyDefaults) -> Vec<(&'static str, String)> {
    fn text<T: ToString>(value: Option<T>) -> Option<String> {
        value.map(|v| v.to_string())
    }
    let d = defaults;
    let entries = [
        ("serin.dev/provider", text(d.provider)),
        ("serin.dev/interval", text(d.interval)),
        ("serin.dev/threshold", text(d.threshold)),
        ("serin.dev/step-weight", text(d.step_weight)),
        ("serin.dev/max-weight", text(d.max_weight)),
        ("serin.dev/success-rate", text(d.success_rate)),
        ("serin.dev/latency", text(d.latency)),
        ("serin.dev/sequential-checks", text(d.sequential_checks)),
        ("serin.dev/compare", text(d.compare)),
        ("serin.dev/compare-margin", text(d.compare_margin)),
    ];
    entries
        .into_iter()
        .filter_map(|(key, value)| value.map(|value| (key, value)))
        .collect()
}

/// The strictest defaults on offer: the longest interval, the smallest threshold, step and
/// maximum weight, the highest success rate, the lowest latency, sequential checks if any
/// policy offers them, the smallest compare margin; for the provider and the comparison,
/// those of the first policy by name.
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
        out.sequential_checks = pick(out.sequential_checks, d.sequential_checks, |a, b| a || b);
        out.compare = out.compare.or(d.compare);
        out.compare_margin = pick(out.compare_margin, d.compare_margin, f64::min);
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
