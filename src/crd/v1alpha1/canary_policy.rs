//! `CanaryPolicy` `v1alpha1`: selectors under `match`, `auditOnly` instead of `enforcement`,
//! no `allowedWebhookHosts`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::crd::{PolicyDefaults, PolicyLimits};

#[derive(CustomResource, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "serin.dev",
    version = "v1alpha1",
    kind = "CanaryPolicy",
    plural = "canarypolicies",
    shortname = "scpol",
    printcolumn = r#"{"name":"Audit-Only","type":"boolean","jsonPath":".spec.auditOnly"}"#,
    printcolumn = r#"{"name":"Require","type":"boolean","jsonPath":".spec.requireCanary"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct CanaryPolicyResourceSpec {
    /// Which Deployments the policy covers; all when empty.
    #[serde(
        default,
        rename = "match",
        skip_serializing_if = "PolicyMatch::is_empty"
    )]
    pub matches: PolicyMatch,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_canary: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defaults: Option<PolicyDefaults>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<PolicyLimits>,
    /// Report findings as warnings instead of refusing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_only: Option<bool>,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PolicyMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

impl PolicyMatch {
    pub fn is_empty(&self) -> bool {
        self.namespace_selector.is_none() && self.selector.is_none()
    }
}
