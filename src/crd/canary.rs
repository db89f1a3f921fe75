//! `Canary`: one per opted-in Deployment, same name, created and owned by Serin. Its spec is
//! the effective configuration; its status is the release state the controller resumes from.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::release::ReleaseStatus;
use crate::spec::CanarySpec;

/// The `Canary` spec: the Deployment's effective configuration (annotations with defaults).
#[derive(CustomResource, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[kube(
    group = "serin.dev",
    version = "v1beta1",
    kind = "Canary",
    plural = "canaries",
    shortname = "cnry",
    namespaced,
    status = "CanaryStatus",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Weight","type":"integer","jsonPath":".status.canaryWeight"}"#,
    printcolumn = r#"{"name":"Failed","type":"integer","jsonPath":".status.failedChecks"}"#,
    printcolumn = r#"{"name":"Revision","type":"string","jsonPath":".status.revision"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
pub struct CanaryResourceSpec {
    #[serde(flatten)]
    pub config: CanarySpec,
}

/// `Canary.status`: the release state, plus conditions for tools that read them.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CanaryStatus {
    #[serde(flatten)]
    pub release: ReleaseStatus,
    /// `Promoted` (the last revision reached the primary) and `Ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The Deployment generation this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}
