//! The webhooks of an `AnalysisTemplate`: acceptance tests, load tests, manual gates and
//! notifications, called with Flagger's payload so that flagger-loadtester (and anything
//! written for Flagger) works unchanged.
//!
//! A call is an HTTP POST of [`HookPayload`] as JSON to the hook's `url`; a reply status above
//! 202 is a failure, as are transport errors and replies slower than `timeout` (10 s by
//! default, never more than [`MAX_TIMEOUT`] whatever the template says). Redirects are not
//! followed: a 3xx answer is a failed call. Calls go through [`Outbound`], which never
//! reaches Serin's own listeners or link-local addresses. A failed call is tried again
//! `retries` times, a short pause apart. [`run_hooks`] calls every hook of one kind in the
//! order the template lists them.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::http::{Outbound, error_chain, read_at_most, snippet};
use crate::crd::{HookType, WebhookTemplate};
use crate::release::{HookKind, Phase};

/// Per-attempt timeout of a hook without `timeout` (Flagger's).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest one attempt may take, whatever the hook's `timeout` says (admission bounds
/// it too; this holds for templates stored before that, or written while Serin was away).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(60);

/// Pause between attempts of a hook with `retries`.
pub const DEFAULT_RETRY_PAUSE: Duration = Duration::from_secs(1);

/// How much of a failed reply's body a message quotes.
const QUOTED_BYTES: usize = 200;

/// What a webhook receives (Flagger's `CanaryWebhookPayload`).
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct HookPayload {
    /// The canary: the Deployment's name.
    pub name: String,
    pub namespace: String,
    /// `Canary.status.phase`, e.g. `Progressing`.
    pub phase: Phase,
    /// The revision being released.
    pub checksum: String,
    /// Sent on top of each hook's own `metadata` (for `event` hooks: the Event's
    /// `eventMessage`, `eventType`, `timestamp`, as Flagger sends them).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

impl HookPayload {
    /// The body sent to `hook`: its metadata, with the payload's own on top.
    fn for_hook(&self, hook: &WebhookTemplate) -> HookPayload {
        let mut metadata = hook.metadata.clone();
        metadata.extend(self.metadata.clone());
        HookPayload {
            metadata,
            ..self.clone()
        }
    }
}

/// Calls webhooks: an HTTP client and the pause between attempts.
#[derive(Clone, Debug)]
pub struct HookClient {
    http: Outbound,
    retry_pause: Duration,
}

impl HookClient {
    /// `http` from [`super::http::client`] or [`Outbound::new`].
    pub fn new(http: Outbound) -> Self {
        Self {
            http,
            retry_pause: DEFAULT_RETRY_PAUSE,
        }
    }

    pub fn with_retry_pause(self, retry_pause: Duration) -> Self {
        Self {
            retry_pause,
            ..self
        }
    }
}

/// Why one attempt at a webhook failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HookError {
    #[error("answered HTTP {status}{}", quoted(body))]
    Status { status: u16, body: String },
    #[error(
        "answered HTTP {status}, a redirect{}; Serin does not follow redirects: give the \
         final URL",
        location.as_deref().map(|l| format!(" to {l}")).unwrap_or_default()
    )]
    Redirect {
        status: u16,
        location: Option<String>,
    },
    #[error("may not be called: {reason}")]
    Refused { reason: String },
    #[error("did not answer within {timeout:?}")]
    Timeout { timeout: Duration },
    #[error("could not be called: {reason}")]
    Transport { reason: String },
}

fn quoted(body: &str) -> String {
    match body {
        "" => String::new(),
        body => format!(": {body}"),
    }
}

/// A webhook that failed on every attempt; the error is the last attempt's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("webhook {name:?} at {url} {error}{}", attempts_note(*attempts))]
pub struct HookFailure {
    pub name: String,
    pub url: String,
    pub attempts: u32,
    pub error: HookError,
}

fn attempts_note(attempts: u32) -> String {
    match attempts {
        1 => String::new(),
        n => format!(" (after {n} attempts)"),
    }
}

/// The hooks of one kind, called.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HookOutcome {
    /// Names of the hooks that answered with success.
    pub succeeded: Vec<String>,
    pub failed: Vec<HookFailure>,
}

impl HookOutcome {
    /// Every hook called succeeded; true when none is configured. For gates (`confirm-*`),
    /// `pre-rollout` and `rollout` this is "go on". (A `rollback` hook's success asks for a
    /// rollback instead: look at [`HookOutcome::succeeded`].)
    pub fn passed(&self) -> bool {
        self.failed.is_empty()
    }

    /// The failures on one line, for an Event; `None` when every hook passed.
    pub fn failure_message(&self) -> Option<String> {
        (!self.failed.is_empty()).then(|| {
            self.failed
                .iter()
                .map(HookFailure::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        })
    }
}

/// Calls the hooks of `kind`, in template order. Gates and checks stop at the first failure,
/// as in Flagger (a failed acceptance test does not go on to start the load test after it);
/// notifications (`post-rollout`, `event`) and `rollback` polls go to every hook.
pub async fn run_hooks(
    client: &HookClient,
    hooks: &[WebhookTemplate],
    kind: HookType,
    payload: &HookPayload,
) -> HookOutcome {
    let notify_all = matches!(
        kind,
        HookType::PostRollout | HookType::Event | HookType::Rollback
    );
    let mut outcome = HookOutcome::default();
    for hook in hooks.iter().filter(|h| h.type_ == kind) {
        match call_hook(client, hook, payload).await {
            Ok(()) => outcome.succeeded.push(hook.name.clone()),
            Err(failure) => {
                outcome.failed.push(failure);
                if !notify_all {
                    break;
                }
            }
        }
    }
    outcome
}

/// Calls one hook, with its retries.
pub async fn call_hook(
    client: &HookClient,
    hook: &WebhookTemplate,
    payload: &HookPayload,
) -> Result<(), HookFailure> {
    let timeout = attempt_timeout(hook);
    let attempts = 1 + hook.retries.unwrap_or(0);
    let body = payload.for_hook(hook);
    let mut attempt = 1;
    loop {
        let error = match attempt_once(&client.http, &hook.url, &body, timeout).await {
            Ok(()) => return Ok(()),
            Err(error) => error,
        };
        if attempt >= attempts {
            return Err(HookFailure {
                name: hook.name.clone(),
                url: hook.url.clone(),
                attempts,
                error,
            });
        }
        attempt += 1;
        tokio::time::sleep(client.retry_pause).await;
    }
}

/// How long one attempt at `hook` may take: its `timeout`, capped at [`MAX_TIMEOUT`].
pub fn attempt_timeout(hook: &WebhookTemplate) -> Duration {
    match hook.timeout.map(Duration::from) {
        // Flagger also reads a zero timeout as "not set"; a literal 0 would fail every call.
        Some(timeout) if !timeout.is_zero() => timeout.min(MAX_TIMEOUT),
        _ => DEFAULT_TIMEOUT,
    }
}

async fn attempt_once(
    http: &Outbound,
    url: &str,
    body: &HookPayload,
    timeout: Duration,
) -> Result<(), HookError> {
    let transport = |error: reqwest::Error| match error.is_timeout() {
        true => HookError::Timeout { timeout },
        false => HookError::Transport {
            reason: error_chain(&error.without_url()),
        },
    };
    let client = http
        .client_for(url)
        .map_err(|refused| HookError::Refused { reason: refused.0 })?;
    let response = client
        .post(url)
        .json(body)
        .timeout(timeout)
        .send()
        .await
        .map_err(transport)?;
    let status = response.status().as_u16();
    if status <= 202 {
        return Ok(());
    }
    if response.status().is_redirection() {
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .map(|l| snippet(l.as_bytes(), QUOTED_BYTES, false));
        return Err(HookError::Redirect { status, location });
    }
    // The body of a failure usually says why (flagger-loadtester: the command's output); a
    // body that cannot be read is not worth more than the status.
    let body = read_at_most(response, QUOTED_BYTES)
        .await
        .map(|(body, more)| snippet(&body, QUOTED_BYTES, more))
        .unwrap_or_default();
    Err(HookError::Status { status, body })
}

impl From<HookKind> for HookType {
    fn from(kind: HookKind) -> Self {
        match kind {
            HookKind::ConfirmRollout => HookType::ConfirmRollout,
            HookKind::PreRollout => HookType::PreRollout,
            HookKind::ConfirmTrafficIncrease => HookType::ConfirmTrafficIncrease,
            HookKind::ConfirmPromotion => HookType::ConfirmPromotion,
            HookKind::Rollback => HookType::Rollback,
            HookKind::PostRollout => HookType::PostRollout,
        }
    }
}

#[cfg(test)]
mod tests;
