//! Discord webhooks: `content` (the title), the optional `username`, and one embed with the
//! Event's message, the severity's color (an integer) and the facts as inline fields.
//! `allowed_mentions` is empty: an Event's message never pings anyone (`@everyone` in a
//! message written by a webhook's answer stays text).

use serde_json::{Value, json};

use super::Message;
use crate::crd::Alert;

pub fn payload(message: &Message, alert: &Alert) -> Value {
    let fields: Vec<Value> = message
        .facts()
        .into_iter()
        .map(|(label, value)| json!({"name": label, "value": value, "inline": true}))
        .collect();
    let color = u32::from_str_radix(message.color().trim_start_matches('#'), 16).unwrap_or(0);
    let mut body = json!({
        "content": message.title(),
        "embeds": [{
            "title": message.reason.as_str(),
            "description": message.text,
            "color": color,
            "fields": fields,
        }],
        "allowed_mentions": {"parse": []},
    });
    if let Some(username) = &alert.username {
        body["username"] = json!(username);
    }
    body
}
