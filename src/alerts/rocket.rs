//! Rocket.Chat incoming webhooks: `text`, the optional `channel`, the name shown as `alias`
//! (Rocket.Chat's field for it; the alert's `username`), and one attachment with the
//! severity's color, the Event's message and the facts as short fields.

use serde_json::{Value, json};

use super::Message;
use crate::crd::Alert;

pub fn payload(message: &Message, alert: &Alert) -> Value {
    let fields: Vec<Value> = message
        .facts()
        .into_iter()
        .map(|(label, value)| json!({"title": label, "value": value, "short": true}))
        .collect();
    let mut body = json!({
        "text": message.title(),
        "attachments": [{
            "color": message.color(),
            "text": message.text,
            "fields": fields,
        }],
    });
    if let Some(username) = &alert.username {
        body["alias"] = json!(username);
    }
    if let Some(channel) = &alert.channel {
        body["channel"] = json!(channel);
    }
    body
}
