//! `Canary`: one per opted-in Deployment, same name, created and owned by Serin. Its spec is
//! the effective configuration; its status is the release state the controller resumes from,
//! including whether the release is paused and what became of the last runtime request
//! (`kubectl serin promote|abort|pause|resume`, see [`crate::controller::requests`]).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
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
    shortname = "scanary",
    namespaced,
    status = "CanaryStatus",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Weight","type":"integer","jsonPath":".status.canaryWeight"}"#,
    printcolumn = r#"{"name":"Failed","type":"integer","jsonPath":".status.failedChecks"}"#,
    printcolumn = r#"{"name":"Paused","type":"boolean","jsonPath":".status.paused"}"#,
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
    /// `Promoted`: True when the primary runs the release's revision, False when it was
    /// rolled back, Unknown while it is on its way; the reason is the phase.
    // Computed by `crate::release::conditions`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The Deployment generation this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Set by a `pause` request, cleared by `resume` (or `promote`): while true, an analysis
    /// holds its weight and runs no checks.
    // Written even when false, so the `Paused` column of `kubectl get canaries` says so.
    #[serde(default)]
    pub paused: bool,
    /// The last runtime request written on the Canary and what Serin did with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_request: Option<RequestStatus>,
}

/// What Serin did with a runtime request (`serin.dev/action` and `serin.dev/action-id`).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RequestStatus {
    /// The action as written: `promote`, `abort`, `pause` or `resume`.
    pub action: String,
    /// The request id as written (empty when none was given).
    #[serde(default)]
    pub id: String,
    pub outcome: RequestOutcome,
    /// Why, in words.
    pub message: String,
    /// When the outcome was decided.
    pub time: Time,
}

/// The fate of a runtime request.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestOutcome {
    /// Accepted, waiting for the release to allow it (a `promote` waits for a Ready canary).
    Pending,
    /// Carried out.
    Applied,
    /// Nothing to do: e.g. `promote` with no release in progress.
    Ignored,
    /// Not a request Serin understands.
    Invalid,
}
