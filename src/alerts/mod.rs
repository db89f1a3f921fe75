//! Chat alerts: the Events of a release, told to Slack, Microsoft Teams, Discord, Rocket.Chat
//! or Google Chat, as the `alerts` of the CanaryPolicies covering the Deployment say.
//!
//! - this file: which alerts a release has ([`Alerts::of`]), how serious each Event is
//!   ([`severity_of`], the one table) and which alerts it goes to ([`Alerts::for_reason`]);
//! - one file per chat service, each a pure `payload(&Message, &Alert) -> Value`:
//!   [`slack`], [`msteams`], [`discord`], [`rocket`], [`gchat`]; [`payload`] picks one;
//! - [`secrets`]: the one place that reads an alert's Secret (its key `address`);
//! - [`send`]: one POST, bounded in time and in what is read back, through
//!   [`crate::analysis::http::Outbound`] (the egress rule of every outbound call) after the
//!   host was checked against the covering policies' `allowedWebhookHosts`.
//!
//! A failed alert never holds up or fails a release: the controller sends alerts in a task
//! of its own, and a failure is logged, counted and recorded as an `AlertFailed` Event. No
//! address ever appears in a message: an incoming-webhook URL is a credential.

pub mod discord;
pub mod gchat;
pub mod msteams;
pub mod rocket;
pub mod secrets;
pub mod send;
pub mod slack;

use serde_json::Value;

use crate::crd::{Alert, AlertSeverity, AlertType};
use crate::policy::NamedPolicy;
use crate::release::{Phase, Reason};

pub use send::{AlertFailure, Sender};

/// How serious an Event is, by its reason; `None` for the reasons never sent (an alert about
/// a failed alert would go where the first one failed to go).
///
/// `info`: the steps of a release; `warn`: what went wrong without (yet) undoing it;
/// `error`: the release was rolled back.
pub const fn severity_of(reason: Reason) -> Option<AlertSeverity> {
    use AlertSeverity::{Error, Info, Warn};
    Some(match reason {
        Reason::Initialized
        | Reason::NewRevision
        | Reason::Scaled
        | Reason::Progressing
        | Reason::Analysis
        | Reason::WaitingPromotion
        | Reason::Promoting
        | Reason::Finalising
        | Reason::Succeeded
        | Reason::Terminating
        | Reason::OptedOut
        | Reason::Paused
        | Reason::Resumed
        | Reason::PromotionPending
        | Reason::RequestIgnored => Info,
        Reason::CheckFailed
        | Reason::MetricError
        | Reason::Webhook
        | Reason::PolicyViolation
        | Reason::InvalidRequest
        | Reason::InvalidConfiguration
        | Reason::PrimaryRecreated
        | Reason::ReconcileFailed => Warn,
        Reason::RolledBack => Error,
        Reason::AlertFailed => return None,
    })
}

/// An alert of one CanaryPolicy.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    pub policy: String,
    pub alert: Alert,
}

/// The alerts of one release: those of every covering policy, and the host lists every
/// address must satisfy (each covering policy's `allowedWebhookHosts`, as for webhooks).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Alerts {
    pub targets: Vec<Target>,
    pub allowed_hosts: Vec<(String, Vec<String>)>,
}

impl Alerts {
    /// The alerts of `policies` (those covering a Deployment).
    pub fn of(policies: &[NamedPolicy]) -> Self {
        let targets = policies
            .iter()
            .flat_map(|p| {
                p.spec.alerts.iter().flatten().map(|alert| Target {
                    policy: p.name.clone(),
                    alert: alert.clone(),
                })
            })
            .collect();
        let allowed_hosts = policies
            .iter()
            .filter_map(|p| Some((p.name.clone(), p.spec.allowed_webhook_hosts.clone()?)))
            .collect();
        Self {
            targets,
            allowed_hosts,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// The alerts an Event of `reason` goes to: those whose `severity` it reaches.
    pub fn for_reason(&self, reason: Reason) -> Vec<&Target> {
        let Some(severity) = severity_of(reason) else {
            return Vec::new();
        };
        self.targets
            .iter()
            .filter(|t| severity >= t.alert.severity())
            .collect()
    }
}

/// What an alert tells: one Event of one release.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    /// The Deployment.
    pub name: String,
    pub namespace: String,
    pub phase: Phase,
    pub reason: Reason,
    pub severity: AlertSeverity,
    /// The Event's message.
    pub text: String,
    /// The revision being released.
    pub revision: String,
}

/// The longest Event message an alert quotes (Events themselves keep 1 kB).
pub const MAX_TEXT: usize = 1000;

impl Message {
    /// The message of an Event of `reason`, or `None` for a reason never sent.
    pub fn new(
        name: &str,
        namespace: &str,
        phase: Phase,
        reason: Reason,
        text: &str,
        revision: &str,
    ) -> Option<Self> {
        Some(Self {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            phase,
            reason,
            severity: severity_of(reason)?,
            text: cut(text, MAX_TEXT),
            revision: revision.to_owned(),
        })
    }

    /// One line that says it all: `web.shop: RolledBack`.
    pub fn title(&self) -> String {
        format!("{}.{}: {}", self.name, self.namespace, self.reason)
    }

    /// The phase as `Canary.status.phase` spells it.
    pub fn phase(&self) -> String {
        serde_json::to_value(self.phase)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    }

    /// The facts every format lists under the message, label and value.
    pub fn facts(&self) -> [(&'static str, String); 4] {
        [
            ("Namespace", self.namespace.clone()),
            ("Phase", self.phase()),
            ("Severity", self.severity.as_str().to_owned()),
            ("Revision", self.revision.clone()),
        ]
    }

    /// The color of the severity, `#rrggbb`: green, amber, red.
    pub fn color(&self) -> &'static str {
        match self.severity {
            AlertSeverity::Info => "#2eb886",
            AlertSeverity::Warn => "#daa038",
            AlertSeverity::Error => "#d40e0d",
        }
    }
}

/// The body of `alert` for `message`, in its chat service's format.
pub fn payload(message: &Message, alert: &Alert) -> Value {
    match alert.type_ {
        AlertType::Slack => slack::payload(message, alert),
        AlertType::Msteams => msteams::payload(message, alert),
        AlertType::Discord => discord::payload(message, alert),
        AlertType::Rocket => rocket::payload(message, alert),
        AlertType::Gchat => gchat::payload(message, alert),
    }
}

/// `text` cut at `max` bytes on a character boundary, `…` when cut.
fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests;
