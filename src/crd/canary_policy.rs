//! `CanaryPolicy` (cluster-scoped): rules for every covered Deployment, and the `v1beta1`
//! shape of its spec ([`CanaryPolicySpec`], with [`PolicyDefaults`], [`PolicyLimits`] and
//! [`Enforcement`]). What the rules mean (which Deployments a policy covers, the defaults it
//! fills, what it finds, what is wrong with a policy itself) is `src/policy/`'s.

use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::analysis_template::SecretRef;
use crate::spec::{Compare, Duration, Provider};

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

/// The `CanaryPolicy` spec (`serin.dev/v1beta1`). Every field is optional and kept exactly as
/// written, so what a user applied reads back unchanged in either API version.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CanaryPolicySpec {
    /// Namespaces the policy covers, by their labels; all namespaces when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// Deployments the policy covers, by their labels; all Deployments when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    /// Covered Deployments must opt in (`serin.dev/enabled: "true"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_canary: Option<bool>,
    /// Filled into covered Deployments that opt in without saying otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defaults: Option<PolicyDefaults>,
    /// Bounds the effective configuration of covered Deployments must stay within.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<PolicyLimits>,
    /// Hosts webhooks may call (`*.example.com` covers every subdomain); any host when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_webhook_hosts: Option<Vec<String>>,
    /// Hosts an AnalysisTemplate metric's `address` may name (`*.example.com` covers every
    /// subdomain); any host when absent. A metric without `address` asks Serin's own
    /// Prometheus (`--prometheus-url`) and is always allowed. Whatever this says, the builtin
    /// checks that `limits.minSuccessRate` and `limits.maxLatency` bound must be measured by
    /// Serin's Prometheus or a host listed here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_metrics_hosts: Option<Vec<String>>,
    /// `deny` (the default) refuses; `warn` admits and reports the same findings as warnings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enforcement: Option<Enforcement>,
    /// Chat alerts about the releases of covered Deployments (Slack, Microsoft Teams,
    /// Discord, Rocket.Chat, Google Chat). Each address is read from a Secret in Serin's own
    /// namespace; the hosts are held to `allowedWebhookHosts` like webhooks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 10))]
    pub alerts: Option<Vec<Alert>>,
}

/// One chat alert: where (a Secret's `address`), in which format, and from which severity.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    /// Names the alert in Events and logs.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// The chat service, which decides the payload's format.
    #[serde(rename = "type")]
    pub type_: AlertType,
    /// The least severity sent: `info` (every step, the default), `warn` (failures and
    /// rollbacks) or `error` (rollbacks only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<AlertSeverity>,
    /// The Secret, in Serin's own namespace, whose key `address` holds the incoming-webhook
    /// URL (a URL is a credential: it is never written in a spec).
    pub secret_ref: SecretRef,
    /// Overrides the webhook's channel (Slack, Rocket.Chat), e.g. `#deploys`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 80))]
    pub channel: Option<String>,
    /// The name the message is posted as (Slack, Discord, Rocket.Chat).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 80))]
    pub username: Option<String>,
}

/// The chat services an alert can post to (Flagger's `AlertProvider` type names).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum AlertType {
    Slack,
    /// Microsoft Teams, through a Workflows webhook (an Adaptive Card).
    Msteams,
    Discord,
    /// Rocket.Chat.
    Rocket,
    /// Google Chat.
    Gchat,
}

impl AlertType {
    pub const ALL: [AlertType; 5] = [
        AlertType::Slack,
        AlertType::Msteams,
        AlertType::Discord,
        AlertType::Rocket,
        AlertType::Gchat,
    ];

    /// The type as users write it.
    pub const fn as_str(self) -> &'static str {
        match self {
            AlertType::Slack => "slack",
            AlertType::Msteams => "msteams",
            AlertType::Discord => "discord",
            AlertType::Rocket => "rocket",
            AlertType::Gchat => "gchat",
        }
    }
}

/// How serious an Event must be to be sent, least to most.
#[derive(
    Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
#[serde(rename_all = "lowercase")]
pub enum AlertSeverity {
    /// Every step of a release.
    Info,
    /// Failures and rollbacks.
    Warn,
    /// Rollbacks only.
    Error,
}

impl AlertSeverity {
    pub const fn as_str(self) -> &'static str {
        match self {
            AlertSeverity::Info => "info",
            AlertSeverity::Warn => "warn",
            AlertSeverity::Error => "error",
        }
    }
}

impl Alert {
    /// The least severity sent: `info` when absent.
    pub fn severity(&self) -> AlertSeverity {
        self.severity.unwrap_or(AlertSeverity::Info)
    }
}

/// Defaults a policy fills, named like the `Canary` spec fields.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PolicyDefaults {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<Provider>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub threshold: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub step_weight: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub max_weight: Option<u32>,
    /// Percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub success_rate: Option<f64>,
    /// p99 latency bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<Duration>,
    /// `serin.dev/sequential-checks`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequential_checks: Option<bool>,
    /// `serin.dev/compare`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compare: Option<Compare>,
    /// `serin.dev/compare-margin`, percentage points.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub compare_margin: Option<f64>,
}

/// Bounds on the effective configuration.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PolicyLimits {
    /// Largest weight increase of one step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub max_step_weight: Option<u32>,
    /// Largest canary weight before promotion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub max_weight: Option<u32>,
    /// Shortest time between checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_interval: Option<Duration>,
    /// Fewest failed checks before a rollback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub min_threshold: Option<u32>,
    /// Lowest success rate a release may accept, percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub min_success_rate: Option<f64>,
    /// Highest p99 latency a release may accept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_latency: Option<Duration>,
    /// Largest share of requests a release may mirror to its canary, percent
    /// (`serin.dev/mirror-percent`, 100 when mirroring without it); 0 allows no mirroring.
    /// Mirrored requests run twice against what the application calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub max_mirror_percent: Option<u32>,
    /// `true`: a release may not turn the sequential checks off
    /// (`serin.dev/sequential-checks: "false"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_sequential_checks: Option<bool>,
    /// Largest `serin.dev/compare-margin` a release comparing with its primary may use,
    /// percentage points.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub max_compare_margin: Option<f64>,
    /// Lowest `serin.dev/confidence` a release may use, percent: a release may not trade
    /// more wrong rollbacks for faster ones below it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 90, max = 99.9))]
    pub min_confidence: Option<f64>,
}

/// What a policy does with what it finds.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Enforcement {
    /// Refuse the write.
    #[default]
    Deny,
    /// Admit it with admission warnings (audit mode).
    Warn,
}

impl CanaryPolicySpec {
    pub fn enforcement(&self) -> Enforcement {
        self.enforcement.unwrap_or_default()
    }
}

impl fmt::Display for Enforcement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Enforcement::Deny => "deny",
            Enforcement::Warn => "warn",
        })
    }
}
