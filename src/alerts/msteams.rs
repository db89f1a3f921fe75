//! Microsoft Teams, through a Workflows ("Post to a channel when a webhook request is
//! received") webhook, which takes Adaptive Cards only: a `message` whose one attachment is
//! an Adaptive Card (`application/vnd.microsoft.card.adaptive`, version 1.4): the title in
//! the severity's color, the Event's message, and the facts as a `FactSet`. The retired
//! Office 365 connector `MessageCard` format is not sent.

use serde_json::{Value, json};

use super::Message;
use crate::crd::{Alert, AlertSeverity};

/// The Adaptive Card version sent: one every Teams client renders.
pub const CARD_VERSION: &str = "1.4";

pub fn payload(message: &Message, _alert: &Alert) -> Value {
    let color = match message.severity {
        AlertSeverity::Info => "Good",
        AlertSeverity::Warn => "Warning",
        AlertSeverity::Error => "Attention",
    };
    let facts: Vec<Value> = message
        .facts()
        .into_iter()
        .map(|(label, value)| json!({"title": label, "value": value}))
        .collect();
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": {
                "type": "AdaptiveCard",
                "version": CARD_VERSION,
                "body": [
                    {
                        "type": "TextBlock",
                        "text": message.title(),
                        "weight": "Bolder",
                        "size": "Medium",
                        "color": color,
                        "wrap": true,
                    },
                    {"type": "TextBlock", "text": message.text, "wrap": true},
                    {"type": "FactSet", "facts": facts},
                ],
            },
        }],
    })
}
