//! Slack incoming webhooks: `text` (what notifications show), the optional `username` and
//! `channel` overrides, and one attachment whose color bar is the severity, with the Event's
//! message and the facts as short fields. Slack reads `&`, `<` and `>` as markup in every
//! text field, so they are escaped.

use serde_json::{Value, json};

use super::Message;
use crate::crd::Alert;

pub fn payload(message: &Message, alert: &Alert) -> Value {
    let title = escape(&message.title());
    let fields: Vec<Value> = message
        .facts()
        .into_iter()
        .map(|(label, value)| json!({"title": label, "value": escape(&value), "short": true}))
        .collect();
    let mut body = json!({
        "text": title,
        "attachments": [{
            "color": message.color(),
            "fallback": format!("{title}: {}", escape(&message.text)),
            "text": escape(&message.text),
            "fields": fields,
        }],
    });
    if let Some(username) = &alert.username {
        body["username"] = json!(username);
    }
    if let Some(channel) = &alert.channel {
        body["channel"] = json!(channel);
    }
    body
}

/// Slack's three control characters, as its message formatting asks.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
