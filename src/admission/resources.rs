//! The validating webhooks for Serin's own resources: `POST /validate/analysistemplates` and
//! `POST /validate/canarypolicies` refuse what the OpenAPI schema cannot: durations and
//! bounds that make no sense together, URLs, unknown `{{ variables }}`, selectors that do not
//! parse. Objects arrive as `v1beta1` whatever version they were written in (the
//! configuration's rules name `v1beta1`, and `matchPolicy: Equivalent` converts).
//!
//! An AnalysisTemplate write is also held to the CanaryPolicies of the Deployments that name
//! it ([`judge_template`]), exactly as those Deployments were at their admission: editing the
//! template afterwards is no way around a policy (the controller judges it again before each
//! call it makes for a release, for what admission could not see).

use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, Operation};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::review::{self, Invalid};
use crate::crd::{AnalysisTemplateSpec, CanaryPolicySpec, Enforcement, GROUP};
use crate::policy::{self, NamedPolicy, PolicyIndex};
use crate::spec::Problem;

/// A kind Serin validates: how to read its spec and what is wrong with it.
pub trait Checked: DeserializeOwned {
    const KIND: &'static str;
    /// The webhook's name in Serin's metrics.
    const WEBHOOK: &'static str;
    fn problems(&self) -> Vec<Problem>;
}

impl Checked for AnalysisTemplateSpec {
    const KIND: &'static str = "AnalysisTemplate";
    const WEBHOOK: &'static str = "validate-analysistemplates";
    fn problems(&self) -> Vec<Problem> {
        AnalysisTemplateSpec::problems(self)
    }
}

impl Checked for CanaryPolicySpec {
    const KIND: &'static str = "CanaryPolicy";
    const WEBHOOK: &'static str = "validate-canarypolicies";
    fn problems(&self) -> Vec<Problem> {
        CanaryPolicySpec::problems(self)
    }
}

/// Decodes a review of a `serin.dev` object of kind `K` (the envelope by
/// [`review::decode_object`]), or says why it cannot be read.
pub fn decode<K: Checked>(body: &[u8]) -> Result<AdmissionRequest<DynamicObject>, Invalid> {
    let request = review::decode_object(body)?;
    if request.kind.group != GROUP || request.kind.kind != K::KIND {
        return Err(Invalid {
            uid: Some(request.uid.clone()),
            reason: format!(
                "this webhook reviews {GROUP} {}, not {}/{} {}",
                K::KIND,
                request.kind.group,
                request.kind.version,
                request.kind.kind
            ),
        });
    }
    Ok(request)
}

/// Refuses a create or update of `K` whose spec has problems, listing every one.
pub fn validate<K: Checked>(req: &AdmissionRequest<DynamicObject>) -> AdmissionResponse {
    let response = AdmissionResponse::from(req);
    if !matches!(req.operation, Operation::Create | Operation::Update) {
        return response;
    }
    let Some(object) = &req.object else {
        return response;
    };
    let name = object.metadata.name.as_deref().unwrap_or(&req.name);
    let spec = object
        .data
        .get("spec")
        .cloned()
        .unwrap_or(Value::Object(Default::default()));
    let problems = match serde_json::from_value::<K>(spec) {
        Ok(spec) => spec.problems(),
        Err(e) => vec![Problem::new("spec", e.to_string())],
    };
    if problems.is_empty() {
        return response;
    }
    let count = problems.len();
    let noun = if count == 1 { "mistake" } else { "mistakes" };
    let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
    response.deny(format!(
        "{} {name:?}: {count} {noun}:\n{}",
        K::KIND,
        lines.join("\n")
    ))
}

/// [`validate`], then, for a sound template, the findings of the policies covering the
/// Deployments that name it: `deny` refuses, `warn` admits with warnings. Without the
/// policies (no cluster access) only [`validate`] applies.
pub async fn validate_template(
    req: &AdmissionRequest<DynamicObject>,
    policies: Option<&PolicyIndex>,
) -> AdmissionResponse {
    let mut response = validate::<AnalysisTemplateSpec>(req);
    let (Some(index), true) = (policies, response.allowed) else {
        return response;
    };
    if !matches!(req.operation, Operation::Create | Operation::Update) {
        return response;
    }
    let Some(object) = &req.object else {
        return response;
    };
    let Some(spec) = object
        .data
        .get("spec")
        .and_then(|s| serde_json::from_value::<AnalysisTemplateSpec>(s.clone()).ok())
    else {
        return response;
    };
    let name = object.metadata.name.as_deref().unwrap_or(&req.name);
    let namespace = req.namespace.as_deref().unwrap_or_default();
    let covering = match index.covering_users_of(namespace, name).await {
        Ok(covering) => covering,
        Err(refusal) => return response.deny(refusal),
    };
    match judge_template(name, &spec, &covering) {
        Ok(warnings) if warnings.is_empty() => response,
        Ok(warnings) => {
            response.warnings = Some(warnings);
            response
        }
        Err(refusal) => response.deny(refusal),
    }
}

/// The template `name` judged by `policies` (those of the Deployments that name it): the
/// warnings of `warn` policies, or the refusal of `deny` ones.
pub fn judge_template(
    name: &str,
    template: &AnalysisTemplateSpec,
    policies: &[NamedPolicy],
) -> Result<Vec<String>, String> {
    let policies: Vec<&NamedPolicy> = policies.iter().collect();
    let (denied, warned): (Vec<_>, Vec<_>) = policy::template_findings(&policies, name, template)
        .into_iter()
        .partition(|f| f.enforcement == Enforcement::Deny);
    if !denied.is_empty() {
        let count = match denied.len() {
            1 => "1 finding".to_owned(),
            n => format!("{n} findings"),
        };
        let lines: Vec<String> = denied.iter().map(ToString::to_string).collect();
        return Err(format!(
            "AnalysisTemplate {name:?}: refused by CanaryPolicy ({count}) for the Deployments \
             that name it:\n{}",
            lines.join("\n")
        ));
    }
    Ok(warned
        .iter()
        .map(|f| format!("AnalysisTemplate {name:?}: {f} [enforcement: warn]"))
        .collect())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn review(kind: &str, spec: Value) -> Vec<u8> {
        json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "u-1",
                "kind": {"group": "serin.dev", "version": "v1beta1", "kind": kind},
                "resource": {"group": "serin.dev", "version": "v1beta1", "resource": "x"},
                "name": "checks",
                "operation": "CREATE",
                "userInfo": {"username": "alice"},
                "object": {"apiVersion": "serin.dev/v1beta1", "kind": kind,
                           "metadata": {"name": "checks"}, "spec": spec},
            }
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn a_template_with_mistakes_is_refused_with_each_field_named() {
        let body = review(
            "AnalysisTemplate",
            json!({"metrics": [{"name": "e", "query": "{{ pod }}", "thresholdRange": {"min": 2, "max": 1}}]}),
        );
        let req = decode::<AnalysisTemplateSpec>(&body).expect("decodes");
        let response = validate::<AnalysisTemplateSpec>(&req);
        assert!(!response.allowed);
        let message = &response.result.message;
        assert!(
            message.starts_with("AnalysisTemplate \"checks\": 2 mistakes:"),
            "{message}"
        );
        assert!(message.contains("spec.metrics[0].query"), "{message}");
        assert!(message.contains("spec.metrics[0].thresholdRange: min 2 is larger than max 1"));
    }

    #[test]
    fn a_sound_policy_is_admitted_and_a_broken_one_refused() {
        let good = review("CanaryPolicy", json!({"limits": {"maxStepWeight": 20}}));
        let req = decode::<CanaryPolicySpec>(&good).expect("decodes");
        assert!(validate::<CanaryPolicySpec>(&req).allowed);
        let bad = review(
            "CanaryPolicy",
            json!({"selector": {"matchExpressions": [{"key": "app", "operator": "Has"}]}}),
        );
        let req = decode::<CanaryPolicySpec>(&bad).expect("decodes");
        let response = validate::<CanaryPolicySpec>(&req);
        assert!(!response.allowed);
        assert!(
            response
                .result
                .message
                .contains("spec.selector.matchExpressions[0].operator")
        );
    }

    #[test]
    fn a_template_is_judged_by_the_policies_of_the_deployments_naming_it() {
        let spec: AnalysisTemplateSpec = serde_json::from_value(json!({
            "metrics": [{"name": "request-success-rate", "thresholdRange": {"min": 99},
                         "address": "http://fake-prometheus.test:9090"}],
            "webhooks": [{"name": "load", "type": "rollout",
                          "url": "http://127.0.0.1:8081/metrics"}],
        }))
        .expect("a template");
        let deny = NamedPolicy {
            name: "prod".into(),
            spec: serde_json::from_value(json!({
                "limits": {"minSuccessRate": 99},
                "allowedWebhookHosts": ["*.hooks.internal"],
            }))
            .expect("a policy"),
        };
        let refusal =
            judge_template("checks", &spec, std::slice::from_ref(&deny)).expect_err("refused");
        assert!(
            refusal.starts_with(
                "AnalysisTemplate \"checks\": refused by CanaryPolicy (2 findings) for the \
                 Deployments that name it:\n"
            ),
            "{refusal}"
        );
        assert!(refusal.contains("measured at http://fake-prometheus.test:9090"));
        assert!(refusal.contains("calls 127.0.0.1, which is not in allowedWebhookHosts"));
        let warn = NamedPolicy {
            spec: CanaryPolicySpec {
                enforcement: Some(Enforcement::Warn),
                ..deny.spec.clone()
            },
            ..deny
        };
        let warnings = judge_template("checks", &spec, &[warn]).expect("admitted");
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].ends_with("[enforcement: warn]"));
        assert_eq!(judge_template("checks", &spec, &[]), Ok(Vec::new()));
    }

    #[test]
    fn a_review_of_another_kind_is_refused_with_the_uid() {
        let body = review("Canary", json!({}));
        let invalid = decode::<CanaryPolicySpec>(&body).expect_err("wrong kind");
        assert_eq!(invalid.uid.as_deref(), Some("u-1"));
        assert!(
            invalid.reason.contains("reviews serin.dev CanaryPolicy"),
            "{}",
            invalid.reason
        );
        let invalid = decode::<CanaryPolicySpec>(b"{]").expect_err("not json");
        assert_eq!(invalid.uid, None);
    }
}
