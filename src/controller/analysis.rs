//! Measurements and webhooks for the release machine: the controller's door to
//! [`crate::metrics`] (Prometheus) and [`crate::hooks`] (Flagger-style webhooks).

use std::collections::BTreeMap;

use crate::crd::{AnalysisTemplateSpec, HookType};
use crate::hooks::{self, HookClient, HookPayload};
use crate::metrics::{self, PrometheusClient};
use crate::release::{EventType, HookKind, MetricCheck, NoData, Phase};
use crate::spec::CanarySpec;

use super::Context;

/// The HTTP clients every reconcile shares.
pub struct Clients {
    prometheus: PrometheusClient,
    hooks: HookClient,
}

impl Clients {
    pub fn new(prometheus_url: &str) -> anyhow::Result<Self> {
        let http = crate::http::client()?;
        Ok(Self {
            prometheus: PrometheusClient::new(http.clone(), prometheus_url),
            hooks: HookClient::new(http),
        })
    }
}

/// Flagger's webhook payload fields for this release.
#[derive(Debug, Clone)]
pub struct Payload {
    pub name: String,
    pub namespace: String,
    pub phase: Phase,
    pub checksum: String,
}

impl From<Payload> for HookPayload {
    fn from(p: Payload) -> Self {
        HookPayload {
            name: p.name,
            namespace: p.namespace,
            phase: p.phase,
            checksum: p.checksum,
            metadata: BTreeMap::new(),
        }
    }
}

/// What a gate's webhooks answered.
pub struct Outcome {
    pub passed: bool,
    /// For an Event: the failures; `None` when nothing is worth saying.
    pub message: Option<String>,
}

/// One interval's checks: the metrics (builtin or the template's), then the `rollout` webhooks
/// (load tests), whose failures count as failed checks as in Flagger. Also returns the reasons
/// of failed queries and webhooks, for Events.
pub async fn measure(
    ctx: &Context,
    namespace: &str,
    target: &str,
    spec: &CanarySpec,
    template: Option<&AnalysisTemplateSpec>,
    payload: Payload,
) -> (Vec<MetricCheck>, Vec<String>) {
    let planned = metrics::plan_checks(spec, template, namespace, target);
    let rollout_hooks = template.map(|t| t.webhooks.as_slice()).unwrap_or_default();
    let payload = HookPayload::from(payload);
    let (measurement, load) = tokio::join!(
        metrics::measure(&ctx.analysis.prometheus, &planned),
        hooks::run_hooks(
            &ctx.analysis.hooks,
            rollout_hooks,
            HookType::Rollout,
            &payload
        ),
    );
    let mut problems: Vec<String> = measurement.error_message().into_iter().collect();
    let mut checks = measurement.checks;
    if let Some(failure) = load.failure_message() {
        // 1 for "every rollout webhook passed", 0 otherwise; at least 1 to pass.
        checks.push(MetricCheck {
            name: "rollout webhooks".into(),
            unit: String::new(),
            value: Some(0.0),
            min: Some(1.0),
            max: None,
            no_data: NoData::Fail,
        });
        problems.push(format!("rollout webhook failed: {failure}"));
    }
    (checks, problems)
}

/// Runs the gate webhooks of `kind`; none configured is open.
pub async fn run_hooks(
    ctx: &Context,
    template: Option<&AnalysisTemplateSpec>,
    kind: HookKind,
    payload: Payload,
) -> Outcome {
    let hooks = template.map(|t| t.webhooks.as_slice()).unwrap_or_default();
    let outcome = hooks::run_hooks(
        &ctx.analysis.hooks,
        hooks,
        kind.into(),
        &HookPayload::from(payload),
    )
    .await;
    Outcome {
        passed: outcome.passed(),
        message: outcome
            .failure_message()
            .map(|m| format!("{} webhook closed: {m}", hook_name(kind.into()))),
    }
}

/// Polls the `rollback` webhooks: the names of those that answered with success, each asking
/// for a rollback. A failed call asks for nothing (logged, not an Event: it would be one
/// every interval).
pub async fn rollback_requested(
    ctx: &Context,
    template: Option<&AnalysisTemplateSpec>,
    payload: Payload,
) -> Vec<String> {
    let hooks = template.map(|t| t.webhooks.as_slice()).unwrap_or_default();
    let outcome = hooks::run_hooks(
        &ctx.analysis.hooks,
        hooks,
        HookType::Rollback,
        &HookPayload::from(payload),
    )
    .await;
    if let Some(message) = outcome.failure_message() {
        tracing::debug!("rollback webhook not asking for a rollback: {message}");
    }
    outcome.succeeded
}

/// Sends an Event Serin records to the `event` webhooks, without waiting for them, with
/// Flagger's metadata: `eventMessage`, `eventType` (`Normal` or `Warning`) and `timestamp`
/// (milliseconds since the epoch), plus `eventReason`.
pub fn notify_event(
    ctx: &Context,
    template: Option<&AnalysisTemplateSpec>,
    payload: Payload,
    type_: EventType,
    reason: &str,
    message: &str,
) {
    let Some(hooks) = template
        .map(|t| t.webhooks.as_slice())
        .filter(|hooks| hooks.iter().any(|h| h.type_ == HookType::Event))
    else {
        return;
    };
    let hooks = hooks.to_vec();
    let mut payload = HookPayload::from(payload);
    let type_ = match type_ {
        EventType::Normal => "Normal",
        EventType::Warning => "Warning",
    };
    let timestamp = k8s_openapi::jiff::Timestamp::now().as_millisecond();
    payload.metadata = BTreeMap::from([
        ("eventMessage".to_owned(), message.to_owned()),
        ("eventType".to_owned(), type_.to_owned()),
        ("eventReason".to_owned(), reason.to_owned()),
        ("timestamp".to_owned(), timestamp.to_string()),
    ]);
    let client = ctx.analysis.hooks.clone();
    tokio::spawn(async move {
        let outcome = hooks::run_hooks(&client, &hooks, HookType::Event, &payload).await;
        if let Some(message) = outcome.failure_message() {
            tracing::warn!(
                canary = payload.name,
                namespace = payload.namespace,
                "{message}"
            );
        }
    });
}

/// The webhook type as users write it (`confirm-promotion`).
fn hook_name(kind: HookType) -> String {
    serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Sends a notification (`post-rollout`) without waiting for it: its answer changes nothing.
pub fn notify(
    ctx: &Context,
    template: Option<AnalysisTemplateSpec>,
    kind: HookKind,
    payload: Payload,
) {
    let Some(template) = template.filter(|t| !t.webhooks.is_empty()) else {
        return;
    };
    let client = ctx.analysis.hooks.clone();
    let payload = HookPayload::from(payload);
    tokio::spawn(async move {
        let outcome = hooks::run_hooks(&client, &template.webhooks, kind.into(), &payload).await;
        if let Some(message) = outcome.failure_message() {
            tracing::warn!(
                canary = payload.name,
                namespace = payload.namespace,
                "{message}"
            );
        }
    });
}
