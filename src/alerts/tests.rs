use serde_json::json;

use super::*;
use crate::crd::{CanaryPolicySpec, SecretRef};

fn alert(type_: AlertType) -> Alert {
    Alert {
        name: "team".into(),
        type_,
        severity: None,
        secret_ref: SecretRef {
            name: "chat".into(),
        },
        channel: None,
        username: None,
    }
}

fn rolled_back() -> Message {
    Message::new(
        "web",
        "shop",
        Phase::Failed,
        Reason::RolledBack,
        "Rolled back: request-success-rate 71.2% < 99% <b> & co",
        "5d8f6c",
    )
    .expect("RolledBack is alerted")
}

#[test]
fn every_reason_but_alert_failed_has_a_severity_and_rollbacks_alone_are_errors() {
    for reason in Reason::ALL {
        let severity = severity_of(reason);
        match reason {
            Reason::AlertFailed => assert_eq!(severity, None),
            Reason::RolledBack => assert_eq!(severity, Some(AlertSeverity::Error)),
            _ => assert!(
                matches!(severity, Some(AlertSeverity::Info | AlertSeverity::Warn)),
                "{reason}: {severity:?}"
            ),
        }
    }
    assert_eq!(severity_of(Reason::CheckFailed), Some(AlertSeverity::Warn));
    assert_eq!(severity_of(Reason::Progressing), Some(AlertSeverity::Info));
    assert_eq!(severity_of(Reason::Succeeded), Some(AlertSeverity::Info));
}

#[test]
fn severity_filters_info_every_step_warn_failures_and_rollbacks_error_rollbacks_only() {
    let with = |severity| Alert {
        name: format!("{severity:?}"),
        severity: Some(severity),
        ..alert(AlertType::Slack)
    };
    let policy = NamedPolicy {
        name: "chat".into(),
        spec: CanaryPolicySpec {
            alerts: Some(vec![
                alert(AlertType::Slack), // no severity: info
                with(AlertSeverity::Warn),
                with(AlertSeverity::Error),
            ]),
            ..Default::default()
        },
    };
    let alerts = Alerts::of(&[policy]);
    let names = |reason| -> Vec<String> {
        alerts
            .for_reason(reason)
            .into_iter()
            .map(|t| t.alert.name.clone())
            .collect()
    };
    assert_eq!(names(Reason::Progressing), ["team"]);
    assert_eq!(names(Reason::Succeeded), ["team"]);
    assert_eq!(names(Reason::CheckFailed), ["team", "Warn"]);
    assert_eq!(names(Reason::RolledBack), ["team", "Warn", "Error"]);
    assert!(names(Reason::AlertFailed).is_empty());
}

#[test]
fn alerts_of_several_policies_keep_their_policy_and_every_host_list() {
    let policy = |name: &str, hosts: Option<Vec<String>>| NamedPolicy {
        name: name.into(),
        spec: CanaryPolicySpec {
            alerts: Some(vec![alert(AlertType::Discord)]),
            allowed_webhook_hosts: hosts,
            ..Default::default()
        },
    };
    let alerts = Alerts::of(&[
        policy("a", Some(vec!["*.example".into()])),
        policy("b", None),
    ]);
    let policies: Vec<&str> = alerts.targets.iter().map(|t| t.policy.as_str()).collect();
    assert_eq!(policies, ["a", "b"]);
    assert_eq!(
        alerts.allowed_hosts,
        [("a".to_owned(), vec!["*.example".to_owned()])]
    );
}

#[test]
fn a_long_event_message_is_cut_at_a_character_boundary() {
    let text = "é".repeat(600); // 1200 bytes
    let message = Message::new(
        "web",
        "shop",
        Phase::Progressing,
        Reason::Analysis,
        &text,
        "r",
    )
    .expect("alerted");
    assert_eq!(message.text, format!("{}…", "é".repeat(500)));
}

#[test]
fn slack_payload_is_text_and_one_colored_attachment_with_escaped_markup() {
    let alert = Alert {
        channel: Some("#deploys".into()),
        username: Some("serin".into()),
        ..alert(AlertType::Slack)
    };
    assert_eq!(
        payload(&rolled_back(), &alert),
        json!({
            "text": "web.shop: RolledBack",
            "username": "serin",
            "channel": "#deploys",
            "attachments": [{
                "color": "#d40e0d",
                "fallback": "web.shop: RolledBack: Rolled back: request-success-rate 71.2% &lt; 99% &lt;b&gt; &amp; co",
                "text": "Rolled back: request-success-rate 71.2% &lt; 99% &lt;b&gt; &amp; co",
                "fields": [
                    {"title": "Namespace", "value": "shop", "short": true},
                    {"title": "Phase", "value": "Failed", "short": true},
                    {"title": "Severity", "value": "error", "short": true},
                    {"title": "Revision", "value": "5d8f6c", "short": true},
                ],
            }],
        })
    );
}

#[test]
fn slack_payload_leaves_out_the_overrides_it_was_not_given() {
    let body = payload(&rolled_back(), &alert(AlertType::Slack));
    assert!(
        body.get("username").is_none() && body.get("channel").is_none(),
        "{body}"
    );
}

#[test]
fn msteams_payload_is_a_message_with_one_adaptive_card() {
    assert_eq!(
        payload(&rolled_back(), &alert(AlertType::Msteams)),
        json!({
            "type": "message",
            "attachments": [{
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": null,
                "content": {
                    "type": "AdaptiveCard",
                    "version": "1.4",
                    "body": [
                        {
                            "type": "TextBlock",
                            "text": "web.shop: RolledBack",
                            "weight": "Bolder",
                            "size": "Medium",
                            "color": "Attention",
                            "wrap": true,
                        },
                        {
                            "type": "TextBlock",
                            "text": "Rolled back: request-success-rate 71.2% < 99% <b> & co",
                            "wrap": true,
                        },
                        {"type": "FactSet", "facts": [
                            {"title": "Namespace", "value": "shop"},
                            {"title": "Phase", "value": "Failed"},
                            {"title": "Severity", "value": "error"},
                            {"title": "Revision", "value": "5d8f6c"},
                        ]},
                    ],
                },
            }],
        })
    );
}

#[test]
fn discord_payload_is_content_and_one_embed_that_mentions_nobody() {
    let alert = Alert {
        username: Some("serin".into()),
        ..alert(AlertType::Discord)
    };
    assert_eq!(
        payload(&rolled_back(), &alert),
        json!({
            "content": "web.shop: RolledBack",
            "username": "serin",
            "embeds": [{
                "title": "RolledBack",
                "description": "Rolled back: request-success-rate 71.2% < 99% <b> & co",
                "color": 0xd40e0d,
                "fields": [
                    {"name": "Namespace", "value": "shop", "inline": true},
                    {"name": "Phase", "value": "Failed", "inline": true},
                    {"name": "Severity", "value": "error", "inline": true},
                    {"name": "Revision", "value": "5d8f6c", "inline": true},
                ],
            }],
            "allowed_mentions": {"parse": []},
        })
    );
}

#[test]
fn rocket_payload_is_text_and_one_attachment_posted_under_an_alias() {
    let alert = Alert {
        channel: Some("#deploys".into()),
        username: Some("serin".into()),
        ..alert(AlertType::Rocket)
    };
    assert_eq!(
        payload(&rolled_back(), &alert),
        json!({
            "text": "web.shop: RolledBack",
            "alias": "serin",
            "channel": "#deploys",
            "attachments": [{
                "color": "#d40e0d",
                "text": "Rolled back: request-success-rate 71.2% < 99% <b> & co",
                "fields": [
                    {"title": "Namespace", "value": "shop", "short": true},
                    {"title": "Phase", "value": "Failed", "short": true},
                    {"title": "Severity", "value": "error", "short": true},
                    {"title": "Revision", "value": "5d8f6c", "short": true},
                ],
            }],
        })
    );
}

#[test]
fn gchat_payload_is_text_and_one_card_v2() {
    assert_eq!(
        payload(&rolled_back(), &alert(AlertType::Gchat)),
        json!({
            "text": "web.shop: RolledBack",
            "cardsV2": [{
                "cardId": "serin-alert",
                "card": {
                    "header": {"title": "web.shop: RolledBack", "subtitle": "severity error"},
                    "sections": [{"widgets": [
                        {"textParagraph": {"text": "Rolled back: request-success-rate 71.2% < 99% <b> & co"}},
                        {"decoratedText": {"topLabel": "Namespace", "text": "shop"}},
                        {"decoratedText": {"topLabel": "Phase", "text": "Failed"}},
                        {"decoratedText": {"topLabel": "Severity", "text": "error"}},
                        {"decoratedText": {"topLabel": "Revision", "text": "5d8f6c"}},
                    ]}],
                },
            }],
        })
    );
}

#[test]
fn colors_follow_the_severity() {
    let message = |reason| {
        Message::new("web", "shop", Phase::Progressing, reason, "m", "r").expect("alerted")
    };
    let slack = |reason| payload(&message(reason), &alert(AlertType::Slack));
    assert_eq!(
        slack(Reason::Progressing)["attachments"][0]["color"],
        "#2eb886"
    );
    assert_eq!(
        slack(Reason::CheckFailed)["attachments"][0]["color"],
        "#daa038"
    );
    let teams = payload(&message(Reason::CheckFailed), &alert(AlertType::Msteams));
    assert_eq!(
        teams["attachments"][0]["content"]["body"][0]["color"],
        "Warning"
    );
}
