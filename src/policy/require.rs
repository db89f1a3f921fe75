//! `requireCanary` as a `ValidatingAdmissionPolicy`: a CEL check the API server runs itself,
//! bound to the namespaces and Deployments the CanaryPolicy selects. Deployments that did not
//! opt in are thus refused (or warned about) without ever being sent to Serin's webhook, and
//! the rule holds while Serin is down.

use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;
use serde_json::json;

use super::{CanaryPolicySpec, Enforcement, REQUIRE_CANARY_MESSAGE};

/// Namespaces Serin never reviews (as in its webhook configurations).
const EXEMPT_NAMESPACES: [&str; 2] = ["kube-system", "serin-system"];

/// The name of the policy and of its binding for CanaryPolicy `policy`.
pub fn admission_policy_name(policy: &str) -> String {
    format!("serin-require-canary.{policy}")
}

/// The admission policy and binding that enforce `requireCanary` of CanaryPolicy `name`;
/// `None` when it does not require canaries. Writes by Kubernetes' controllers and by
/// `serin_user` are not checked: policies govern people and their tools.
pub fn admission_policy(
    name: &str,
    spec: &CanaryPolicySpec,
    serin_user: &str,
) -> Option<(ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding)> {
    if spec.require_canary != Some(true) {
        return None;
    }
    let object_name = admission_policy_name(name);
    let message = format!("{REQUIRE_CANARY_MESSAGE} (CanaryPolicy {name})");
    let policy = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": object_name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{
                "apiGroups": ["apps"], "apiVersions": ["v1"],
                "operations": ["CREATE", "UPDATE"], "resources": ["deployments"],
            }]},
            "matchConditions": [{
                "name": "people-and-their-tools",
                "expression": format!(
                    "!request.userInfo.username.startsWith('system:serviceaccount:kube-system:') \
                     && request.userInfo.username != 'system:kube-controller-manager' \
                     && request.userInfo.username != '{}'",
                    serin_user.replace('\'', "")
                ),
            }],
            "validations": [{
                "expression": "has(object.metadata.annotations) && \
                    object.metadata.annotations.exists(k, k == 'serin.dev/enabled' && \
                    object.metadata.annotations[k] == 'true')",
                "message": message,
                "reason": "Forbidden",
            }],
        },
    });
    let mut namespaces = spec.namespace_selector.clone().unwrap_or_default();
    namespaces
        .match_expressions
        .get_or_insert_with(Vec::new)
        .push(LabelSelectorRequirement {
            key: "kubernetes.io/metadata.name".into(),
            operator: "NotIn".into(),
            values: Some(EXEMPT_NAMESPACES.map(String::from).to_vec()),
        });
    let action = match spec.enforcement() {
        Enforcement::Deny => "Deny",
        Enforcement::Warn => "Warn",
    };
    let binding = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": object_name},
        "spec": {
            "policyName": object_name,
            "validationActions": [action],
            "matchResources": {
                "namespaceSelector": namespaces,
                "objectSelector": spec.selector.clone().unwrap_or_default(),
            },
        },
    });
    // Built from known-good JSON: a failure here is a bug in this function, not bad input.
    let policy = serde_json::from_value(policy).expect("a ValidatingAdmissionPolicy");
    let binding = serde_json::from_value(binding).expect("a ValidatingAdmissionPolicyBinding");
    Some((policy, binding))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

    use super::*;

    const SERIN: &str = "system:serviceaccount:serin-system:serin";

    #[test]
    fn only_a_policy_that_requires_canaries_gets_an_admission_policy() {
        assert!(admission_policy("p", &CanaryPolicySpec::default(), SERIN).is_none());
        let spec = CanaryPolicySpec {
            require_canary: Some(false),
            ..Default::default()
        };
        assert!(admission_policy("p", &spec, SERIN).is_none());
    }

    #[test]
    fn the_binding_selects_what_the_canary_policy_selects_and_never_the_exempt_namespaces() {
        let spec = CanaryPolicySpec {
            require_canary: Some(true),
            namespace_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([("tier".into(), "prod".into())])),
                match_expressions: None,
            }),
            selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([("app".into(), "web".into())])),
                match_expressions: None,
            }),
            enforcement: Some(Enforcement::Warn),
            ..Default::default()
        };
        let (policy, binding) = admission_policy("prod", &spec, SERIN).expect("required");
        assert_eq!(
            policy.metadata.name.as_deref(),
            Some("serin-require-canary.prod")
        );
        let spec_of = binding.spec;
        assert_eq!(spec_of.policy_name, "serin-require-canary.prod");
        assert_eq!(spec_of.validation_actions, vec!["Warn".to_owned()]);
        let resources = spec_of.match_resources.expect("match resources");
        let namespaces = resources.namespace_selector.expect("namespaces");
        assert_eq!(
            namespaces.match_labels,
            Some(BTreeMap::from([("tier".into(), "prod".into())]))
        );
        let exempt = &namespaces.match_expressions.expect("expressions")[0];
        assert_eq!(exempt.operator, "NotIn");
        assert_eq!(
            exempt.values.as_deref(),
            Some(&["kube-system".to_owned(), "serin-system".to_owned()][..])
        );
        assert_eq!(
            resources.object_selector.and_then(|s| s.match_labels),
            Some(BTreeMap::from([("app".into(), "web".into())]))
        );
        let validation = &policy.spec.expect("spec").validations.expect("validations")[0];
        assert!(
            validation
                .message
                .as_deref()
                .is_some_and(|m| m.ends_with("(CanaryPolicy prod)")),
            "{validation:?}"
        );
    }

    #[test]
    fn serins_own_writes_and_kubernetes_controllers_are_not_checked() {
        let spec = CanaryPolicySpec {
            require_canary: Some(true),
            ..Default::default()
        };
        let (policy, binding) = admission_policy("p", &spec, SERIN).expect("required");
        let conditions = policy
            .spec
            .expect("spec")
            .match_conditions
            .expect("conditions");
        assert!(conditions[0].expression.contains(SERIN));
        assert!(
            conditions[0]
                .expression
                .contains("system:serviceaccount:kube-system:")
        );
        assert_eq!(binding.spec.validation_actions, vec!["Deny".to_owned()]);
    }
}
