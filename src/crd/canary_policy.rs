//! `CanaryPolicy` (cluster-scoped): rules for every covered Deployment; see [`crate::policy`]
//! for what they mean.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::policy::CanaryPolicySpec;

#[derive(CustomResource, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "serin.dev",
    version = "v1beta1",
    kind = "CanaryPolicy",
    plural = "canarypolicies",
    shortname = "scpol",
    printcolumn = r#"{"name":"Enforcement","type":"string","jsonPath":".spec.enforcement"}"#,
    printcolumn = r#"{"name":"Require","type":"boolean","jsonPath":".spec.requireCanary"}"#,
    printcolumn = r#"{"name":"Max-Step","type":"integer","jsonPath":".spec.limits.maxStepWeight"}"#,
    printcolumn = r#"{"name":"Min-Success","type":"number","jsonPath":".spec.limits.minSuccessRate"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
pub struct CanaryPolicyResourceSpec {
    #[serde(flatten)]
    pub policy: CanaryPolicySpec,
}
