//! Label selectors of a policy: checked with messages for the person who wrote them, and
//! matched with kube's [`Selector`].

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::core::{Selector, SelectorExt};

use crate::spec::Problem;

const OPERATORS: [&str; 4] = ["In", "NotIn", "Exists", "DoesNotExist"];

/// Whether `labels` are selected; an absent selector selects everything, one that does not
/// parse selects nothing.
pub(super) fn matches(selector: Option<&LabelSelector>, labels: &BTreeMap<String, String>) -> bool {
    match selector {
        None => true,
        Some(selector) => {
            Selector::try_from(selector.clone()).is_ok_and(|parsed| parsed.matches(labels))
        }
    }
}

/// Every mistake in a selector, naming its field under `field`.
pub(super) fn problems(field: &str, selector: &LabelSelector) -> Vec<Problem> {
    let mut problems = Vec::new();
    for (key, value) in selector.match_labels.iter().flatten() {
        let at = format!("{field}.matchLabels[{key:?}]");
        if let Err(message) = check_key(key) {
            problems.push(Problem::new(at.clone(), message));
        }
        if let Err(message) = check_value(value) {
            problems.push(Problem::new(at, message));
        }
    }
    for (i, requirement) in selector.match_expressions.iter().flatten().enumerate() {
        let at = format!("{field}.matchExpressions[{i}]");
        if let Err(message) = check_key(&requirement.key) {
            problems.push(Problem::new(format!("{at}.key"), message));
        }
        let values = requirement.values.as_deref().unwrap_or_default();
        match requirement.operator.as_str() {
            "In" | "NotIn" if values.is_empty() => problems.push(Problem::new(
                format!("{at}.values"),
                format!("operator {} needs at least one value", requirement.operator),
            )),
            "Exists" | "DoesNotExist" if !values.is_empty() => problems.push(Problem::new(
                format!("{at}.values"),
                format!("operator {} takes no values", requirement.operator),
            )),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => problems.push(Problem::new(
                format!("{at}.operator"),
                format!(
                    "{other:?} is not an operator; allowed: {}",
                    OPERATORS.join(", ")
                ),
            )),
        }
        for value in values {
            if let Err(message) = check_value(value) {
                problems.push(Problem::new(format!("{at}.values"), message));
            }
        }
    }
    problems
}

fn is_name(text: &str) -> bool {
    let bytes = text.as_bytes();
    let edge = |b: &u8| b.is_ascii_alphanumeric();
    !text.is_empty()
        && text.len() <= 63
        && bytes.first().is_some_and(edge)
        && bytes.last().is_some_and(edge)
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A DNS subdomain (RFC 1123) as Kubernetes object names and label prefixes are: lowercase
/// labels of at most 63 characters, at most 253 in all.
pub(crate) fn is_dns_subdomain(text: &str) -> bool {
    text.len() <= 253
        && text.split('.').all(|label| {
            let bytes = label.as_bytes();
            !label.is_empty()
                && label.len() <= 63
                && bytes
                    .first()
                    .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                && bytes
                    .last()
                    .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        })
}

/// Label keys: `[prefix/]name`, a DNS subdomain prefix and a name of at most 63 characters.
fn check_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if prefix.is_some_and(|p| !is_dns_subdomain(p)) || !is_name(name) {
        return Err(format!(
            "{key:?} is not a label key: [prefix/]name, the name at most 63 letters, digits, \
             '-', '_' or '.' starting and ending alphanumeric, the prefix a DNS subdomain"
        ));
    }
    Ok(())
}

fn check_value(value: &str) -> Result<(), String> {
    if value.is_empty() || is_name(value) {
        return Ok(());
    }
    Err(format!(
        "{value:?} is not a label value: at most 63 letters, digits, '-', '_' or '.', \
         starting and ending alphanumeric"
    ))
}
