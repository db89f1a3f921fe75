//! Webhooks called without waiting for them: notifications (`post-rollout` and the like),
//! whose answer changes nothing, and the `event` webhooks told of every Event Serin records.
//! A failure is logged; nothing else waits on them.

use std::collections::BTreeMap;

use super::measure::{Measuring, Payload};
use super::webhooks::{self as hooks, HookPayload};
use crate::crd::{AnalysisTemplateSpec, HookType, WebhookTemplate};
use crate::release::{EventType, HookKind};

/// Sends an Event Serin records to the `event` webhooks, without waiting for them, with
/// Flagger's metadata: `eventMessage`, `eventType` (`Normal` or `Warning`) and `timestamp`
/// (milliseconds since the epoch), plus `eventReason`.
pub fn notify_event(
    measuring: &Measuring,
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
    spawn_hooks(measuring, hooks, HookType::Event, payload);
}

/// Sends a notification (`post-rollout`) without waiting for it: its answer changes nothing.
pub fn notify(
    measuring: &Measuring,
    template: Option<AnalysisTemplateSpec>,
    kind: HookKind,
    payload: Payload,
) {
    let Some(template) = template.filter(|t| !t.webhooks.is_empty()) else {
        return;
    };
    spawn_hooks(measuring, template.webhooks, kind.into(), payload.into());
}

/// Calls the webhooks of `type_` among `webhooks` in the background; logs a failure.
fn spawn_hooks(
    measuring: &Measuring,
    webhooks: Vec<WebhookTemplate>,
    type_: HookType,
    payload: HookPayload,
) {
    let client = measuring.hooks.clone();
    tokio::spawn(async move {
        let outcome = hooks::run_hooks(&client, &webhooks, type_, &payload).await;
        if let Some(message) = outcome.failure_message() {
            tracing::warn!(
                canary = payload.name,
                namespace = payload.namespace,
                "{message}"
            );
        }
    });
}
