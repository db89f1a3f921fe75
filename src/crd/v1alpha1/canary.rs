//! `Canary` `v1alpha1`: the analysis settings nested under `spec.analysis`.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::crd::CanaryStatus;
use crate::spec::{Compare, Duration, GatewayRef, MatchRule, MetricsProvider, Provider};

#[derive(CustomResource, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[kube(
    group = "serin.dev",
    version = "v1alpha1",
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
#[serde(rename_all = "camelCase")]
pub struct CanaryResourceSpec {
    pub provider: Provider,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    pub service: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<GatewayRef>,
    /// The hostnames the HTTPRoute answers for (`gatewayapi`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    pub analysis: Analysis,
}

/// How each release is analysed.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Analysis {
    pub interval: Duration,
    pub threshold: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_weight: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_weights: Option<Vec<u32>>,
    pub max_weight: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iterations: Option<u32>,
    #[serde(default, rename = "match", skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<MatchRule>,
    pub success_rate: f64,
    pub latency: Duration,
    /// Checks on mirrored requests before the first weight step (`gatewayapi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror_checks: Option<u32>,
    /// Percent of the requests mirrored; all when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror_percent: Option<u32>,
    /// The session affinity cookie set on the canary's responses (`gatewayapi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity_cookie: Option<String>,
    /// The affinity cookie's `Max-Age`; a day when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity_max_age: Option<Duration>,
    /// Whose series the builtin checks read; the provider's own data plane when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_provider: Option<MetricsProvider>,
    pub metrics_window: Duration,
    /// Name of an `AnalysisTemplate` in the namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_ref: Option<String>,
    #[serde(default)]
    pub skip: bool,
    #[serde(default = "crate::spec::sequential_by_default")]
    pub sequential_checks: bool,
    #[serde(default)]
    pub compare: Compare,
    #[serde(default = "crate::spec::default_compare_margin")]
    pub compare_margin: f64,
    /// The sequential checks' confidence to roll back, percent.
    #[serde(default = "crate::spec::default_confidence")]
    pub confidence: f64,
}
