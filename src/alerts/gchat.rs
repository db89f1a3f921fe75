//! Google Chat incoming webhooks: `text` (what notifications show) and one card (`cardsV2`)
//! whose header is the title and severity, with the Event's message and the facts as
//! labelled lines. A space's webhook posts in that space: no channel or name overrides.

use serde_json::{Value, json};

use super::Message;
use crate::crd::Alert;

pub fn payload(message: &Message, _alert: &Alert) -> Value {
    let mut widgets = vec![json!({"textParagraph": {"text": message.text}})];
    widgets.extend(
        message
            .facts()
            .into_iter()
            .map(|(label, value)| json!({"decoratedText": {"topLabel": label, "text": value}})),
    );
    json!({
        "text": message.title(),
        "cardsV2": [{
            "cardId": "serin-alert",
            "card": {
                "header": {
                    "title": message.title(),
                    "subtitle": format!("severity {}", message.severity.as_str()),
                },
                "sections": [{"widgets": widgets}],
            },
        }],
    })
}
