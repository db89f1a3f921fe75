//! `AnalysisTemplate`: custom metrics (PromQL with `{{ namespace }}`, `{{ target }}`,
//! `{{ service }}`, `{{ interval }}`) and webhooks (acceptance tests, load tests, gates) that a
//! Deployment names in `serin.dev/analysis`. What is wrong with a template beyond its schema
//! is judged in `src/analysis/validate.rs` (`AnalysisTemplateSpec::problems`), beside the
//! query code it must agree with.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::spec::Duration;

#[derive(CustomResource, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "serin.dev",
    version = "v1beta1",
    kind = "AnalysisTemplate",
    plural = "analysistemplates",
    shortname = "sat",
    namespaced,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisTemplateSpec {
    /// Checks run at every interval, beside (or instead of) the builtin ones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<MetricTemplate>,
    /// Webhooks called during the release.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub webhooks: Vec<WebhookTemplate>,
}

/// One metric check. Without `query`, `name` must be a builtin: `request-success-rate`
/// (percent) or `request-duration` (p99, milliseconds).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MetricTemplate {
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// PromQL returning one number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// Accepted range of the value; either bound may be absent.
    #[serde(default)]
    pub threshold_range: ThresholdRange,
    /// Prometheus HTTP API address; `--prometheus-url` (with the credentials of Serin's
    /// `--prometheus-*` flags) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// A Secret in the template's namespace with the credentials for `address` (which must
    /// then be `https://`): `token` (bearer) or `username` and `password` (basic auth), and
    /// optionally `ca.crt` (the CA to trust instead of the system's) and `tls.crt` with
    /// `tls.key` (a client certificate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretRef>,
    /// What an empty result means.
    #[serde(default)]
    pub no_data: NoDataPolicy,
    /// This metric's query window (Flagger's metric `interval`): `{{ interval }}` in `query`
    /// and the rate window of a builtin; `serin.dev/metrics-window` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
    /// Flagger's reference to its `MetricTemplate`, accepted as pasted beside `query`, which
    /// must carry that MetricTemplate's query: Serin reads no MetricTemplate objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_ref: Option<TemplateRef>,
    /// Flagger's `templateVariables`: in the schema only to be refused by name (Serin's
    /// queries have no `{{ variables.* }}`; write the values into `query`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub template_variables: BTreeMap<String, String>,
    /// Flagger's deprecated `threshold`: in the schema only to be refused by name (write
    /// `thresholdRange`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
}

/// Flagger's `templateRef` of a metric: the `MetricTemplate` its query came from.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct TemplateRef {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// A Secret, by name. Which namespace it is read from is said where it is named: an
/// AnalysisTemplate metric's in the template's, a CanaryPolicy alert's in Serin's own.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq, Hash)]
pub struct SecretRef {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Default)]
pub struct ThresholdRange {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
}

/// What "no data" from a metric means.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum NoDataPolicy {
    /// A failed check: a silent canary is never promoted.
    #[default]
    Fail,
    /// The check is left out of that interval.
    Skip,
}

/// When a webhook is called (Flagger's webhook types).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum HookType {
    /// Gate before the canary is scaled up.
    ConfirmRollout,
    /// Before traffic shifts; failures count toward the threshold.
    PreRollout,
    /// At every interval (load tests); failures count as failed checks.
    Rollout,
    /// Gate before each weight increase.
    ConfirmTrafficIncrease,
    /// Gate before promotion.
    ConfirmPromotion,
    /// After Succeeded or Failed.
    PostRollout,
    /// Polled once per interval while a release waits at a closed gate or is analysed: a
    /// success rolls back.
    Rollback,
    /// Every Event Serin records.
    Event,
}

impl HookType {
    /// The type as users write it (`confirm-promotion`).
    pub fn name(self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    }
}

/// One webhook. The payload is Flagger's: `name`, `namespace`, `phase`, `checksum`, `metadata`;
/// a reply status above 202 is a failure.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WebhookTemplate {
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    #[serde(rename = "type")]
    pub type_: HookType,
    #[schemars(length(min = 1))]
    pub url: String,
    /// Per attempt; 10s when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Extra attempts after a failure; 0 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 10))]
    pub retries: Option<u32>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// Flagger's `muteAlert`: `false` (what Serin does) is accepted; `true` is refused, as
    /// Serin's alerts are filtered by severity, not per webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mute_alert: Option<bool>,
}
