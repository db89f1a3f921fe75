//! Chat alerts end to end: a CanaryPolicy's `alerts` (one per chat service, addresses in
//! Secrets in serin-system) tell a local receiver about a real release, each in its service's
//! format. Every body is checked against the fields its service documents as required (and
//! its documented limits), the severity filter is checked on a good release and on a rolled
//! back one, and a failing alert holds up nothing: the release ends all the same, with an
//! `AlertFailed` Event that quotes no address.
//!
//! CanaryPolicy is cluster-scoped: each policy here selects only its test's namespace, and
//! the Secrets are named after it; both are deleted when the test ends.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::Path;
use axum::http::StatusCode;
use kube::Client;
use serde_json::Value;
use serin::release::Phase;
use support::release::{Version, apply, events, manifest, wait_phase};
use support::scenarios::{self, Route};
use support::{kubectl, wait_until};

const RELEASE: Duration = Duration::from_secs(120);

/// What the receiver got: the path's service and token, and the body.
type Received = Arc<Mutex<Vec<(String, String, Value)>>>;

/// A receiver for every service under `/{service}/{token}`; `/broken/...` answers 500.
async fn receiver() -> (String, Received) {
    let got: Received = Arc::default();
    let seen = got.clone();
    let app = axum::Router::new().route(
        "/{service}/{token}",
        axum::routing::post(
            move |Path((service, token)): Path<(String, String)>, body: String| {
                let seen = seen.clone();
                async move {
                    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                    let status = match service.as_str() {
                        "broken" => StatusCode::INTERNAL_SERVER_ERROR,
                        "discord" => StatusCode::NO_CONTENT, // as Discord answers
                        "msteams" => StatusCode::ACCEPTED,   // as a Workflows webhook answers
                        _ => StatusCode::OK,
                    };
                    seen.lock().expect("received").push((service, token, body));
                    status
                }
            },
        ),
    );
    (support::serve_on_loopback(app).await, got)
}

/// The Secrets and the CanaryPolicy of one test, deleted on drop.
struct Alerting {
    policy: String,
    secrets: Vec<String>,
}

impl Alerting {
    /// A policy covering only `ns` with `alerts` (YAML list items, each naming its Secret
    /// `{ns}-{service}`), and one Secret per `(service, address)`.
    fn create(ns: &str, secrets: &[(&str, String)], alerts: &str) -> Self {
        let mut names = Vec::new();
        for (service, address) in secrets {
            let name = format!("{ns}-{service}");
            let yaml = format!(
                "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: serin-system}}\n\
                 stringData: {{address: \"{address}\"}}\n"
            );
            apply(&yaml);
            names.push(name);
        }
        let policy = format!("{ns}-alerts");
        apply(&format!(
            "apiVersion: serin.dev/v1beta1\nkind: CanaryPolicy\nmetadata: {{name: {policy}}}\n\
             spec:\n  namespaceSelector: {{matchLabels: {{kubernetes.io/metadata.name: {ns}}}}}\n\
             \x20 alerts:\n{alerts}"
        ));
        Alerting {
            policy,
            secrets: names,
        }
    }
}

impl Drop for Alerting {
    fn drop(&mut self) {
        let _ = kubectl(
            &[
                "delete",
                "canarypolicy",
                &self.policy,
                "--ignore-not-found",
                "--wait=false",
            ],
            None,
        );
        for secret in &self.secrets {
            let _ = kubectl(
                &[
                    "delete",
                    "secret",
                    "-n",
                    "serin-system",
                    secret,
                    "--ignore-not-found",
                ],
                None,
            );
        }
    }
}

/// The bodies `service` got, in order.
fn bodies(got: &Received, service: &str) -> Vec<Value> {
    got.lock()
        .expect("received")
        .iter()
        .filter(|(s, _, _)| s == service)
        .map(|(_, _, body)| body.clone())
        .collect()
}

/// The title line of a body of any format (`web.NS: Reason`): Discord's `content`, the
/// first TextBlock of a Teams card, the others' `text`.
fn title(body: &Value) -> String {
    [
        &body["content"],
        &body["attachments"][0]["content"]["body"][0]["text"],
        &body["text"],
    ]
    .into_iter()
    .find_map(Value::as_str)
    .unwrap_or_default()
    .to_owned()
}

fn string(value: &Value, what: &str) -> String {
    value
        .as_str()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| panic!("{what} must be a non-empty string: {value}"))
        .to_owned()
}

fn array<'a>(value: &'a Value, what: &str) -> &'a Vec<Value> {
    value
        .as_array()
        .filter(|a| !a.is_empty())
        .unwrap_or_else(|| panic!("{what} must be a non-empty array: {value}"))
}

/// Slack incoming webhooks: `text` is required (it is what notifications show, and the
/// message itself without blocks); attachments carry `fallback` text; `channel` and
/// `username` are the overrides the alert set.
fn check_slack(body: &Value) {
    string(&body["text"], "slack text");
    for attachment in array(&body["attachments"], "slack attachments") {
        string(&attachment["fallback"], "slack attachment fallback");
        string(&attachment["color"], "slack attachment color");
        for field in array(&attachment["fields"], "slack fields") {
            string(&field["title"], "slack field title");
            assert!(
                field["value"].is_string() && field["short"].is_boolean(),
                "{field}"
            );
        }
    }
    assert_eq!(body["channel"], "#deploys");
    assert_eq!(body["username"], "serin");
}

/// Teams Workflows webhooks: a `message` whose attachments are Adaptive Cards: `contentType`
/// `application/vnd.microsoft.card.adaptive`, `content.type` `AdaptiveCard`, a `version`, and
/// a `body` of elements that each have a `type`.
fn check_msteams(body: &Value) {
    assert_eq!(body["type"], "message", "{body}");
    for attachment in array(&body["attachments"], "teams attachments") {
        assert_eq!(
            attachment["contentType"],
            "application/vnd.microsoft.card.adaptive"
        );
        let card = &attachment["content"];
        assert_eq!(card["type"], "AdaptiveCard");
        string(&card["version"], "adaptive card version");
        for element in array(&card["body"], "adaptive card body") {
            let kind = string(&element["type"], "card element type");
            match kind.as_str() {
                "TextBlock" => drop(string(&element["text"], "TextBlock text")),
                "FactSet" => {
                    for fact in array(&element["facts"], "FactSet facts") {
                        string(&fact["title"], "fact title");
                        assert!(fact["value"].is_string(), "{fact}");
                    }
                }
                other => panic!("unexpected card element {other}"),
            }
        }
    }
}

/// Discord webhooks: one of `content` and `embeds` is required; `content` at most 2000
/// characters, at most 10 embeds, an embed's title 256, description 4096, at most 25 fields,
/// a field's name 256 and value 1024 (neither empty); `color` an integer.
fn check_discord(body: &Value) {
    let content = string(&body["content"], "discord content");
    assert!(content.chars().count() <= 2000);
    let embeds = array(&body["embeds"], "discord embeds");
    assert!(embeds.len() <= 10);
    for embed in embeds {
        assert!(string(&embed["title"], "embed title").chars().count() <= 256);
        assert!(
            string(&embed["description"], "embed description")
                .chars()
                .count()
                <= 4096
        );
        assert!(embed["color"].is_u64(), "{embed}");
        let fields = array(&embed["fields"], "embed fields");
        assert!(fields.len() <= 25);
        for field in fields {
            assert!(string(&field["name"], "field name").chars().count() <= 256);
            assert!(string(&field["value"], "field value").chars().count() <= 1024);
        }
    }
    assert_eq!(body["allowed_mentions"]["parse"], serde_json::json!([]));
}

/// Rocket.Chat incoming webhooks: `text`, attachments with `text`/`fields`, the overrides
/// `channel` and `alias` (the name shown).
fn check_rocket(body: &Value) {
    string(&body["text"], "rocket text");
    for attachment in array(&body["attachments"], "rocket attachments") {
        string(&attachment["text"], "rocket attachment text");
        for field in array(&attachment["fields"], "rocket fields") {
            string(&field["title"], "rocket field title");
            assert!(field["value"].is_string() && field["short"].is_boolean());
        }
    }
    assert_eq!(body["channel"], "#deploys");
    assert_eq!(body["alias"], "serin");
}

/// Google Chat incoming webhooks: `text` or `cardsV2`; each card has a `cardId` and a `card`
/// of sections whose widgets are each exactly one widget.
fn check_gchat(body: &Value) {
    string(&body["text"], "google chat text");
    for card in array(&body["cardsV2"], "cardsV2") {
        string(&card["cardId"], "cardId");
        string(&card["card"]["header"]["title"], "card header title");
        for section in array(&card["card"]["sections"], "card sections") {
            for widget in array(&section["widgets"], "section widgets") {
                let kinds = widget.as_object().map_or(0, |w| w.len());
                assert_eq!(kinds, 1, "a widget is one kind of widget: {widget}");
            }
        }
    }
}

/// A check of one service's documented fields.
type Check = fn(&Value);

const CHECKS: [(&str, Check); 5] = [
    ("slack", check_slack),
    ("msteams", check_msteams),
    ("discord", check_discord),
    ("rocket", check_rocket),
    ("gchat", check_gchat),
];

async fn opt_in(client: &Client, ns: &str, extra: &[(&str, &str)]) {
    scenarios::opt_in(client, ns, "web", &Route::SMI, extra).await;
}

/// Waits until `service` got an alert titled `web.NS: Reason` for each of `reasons`.
async fn wait_for(got: &Received, ns: &str, service: &str, reasons: &[&str]) {
    wait_until(
        &format!("{service} to get {reasons:?}"),
        Duration::from_secs(30),
        || async {
            let titles: Vec<String> = bodies(got, service).iter().map(title).collect();
            let missing: Vec<&&str> = reasons
                .iter()
                .filter(|r| !titles.contains(&format!("web.{ns}: {r}")))
                .collect();
            match missing.is_empty() {
                true => Ok(()),
                false => Err(format!("missing {missing:?}; got {titles:?}")),
            }
        },
    )
    .await;
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn a_release_is_told_to_each_chat_in_its_documented_format() {
    let (client, ns) = support::release_namespace("alerts").await;
    let ns = &ns.name;
    let (base, got) = receiver().await;
    let services = ["slack", "msteams", "discord", "rocket", "gchat", "broken"];
    let secrets: Vec<(&str, String)> = services
        .iter()
        .map(|s| (*s, format!("{base}{s}/tok3n-{s}")))
        .collect();
    let alerts = format!(
        "  - {{name: slack, type: slack, secretRef: {{name: {ns}-slack}}, channel: '#deploys', username: serin}}\n\
         \x20 - {{name: teams, type: msteams, secretRef: {{name: {ns}-msteams}}}}\n\
         \x20 - {{name: discord, type: discord, secretRef: {{name: {ns}-discord}}, username: serin}}\n\
         \x20 - {{name: rocket, type: rocket, secretRef: {{name: {ns}-rocket}}, channel: '#deploys', username: serin}}\n\
         \x20 - {{name: gchat, type: gchat, severity: info, secretRef: {{name: {ns}-gchat}}}}\n\
         \x20 - {{name: broken, type: slack, secretRef: {{name: {ns}-broken}}}}\n\
         \x20 - {{name: missing, type: slack, secretRef: {{name: {ns}-no-such-secret}}}}\n\
         \x20 - {{name: on-call, type: slack, severity: error, secretRef: {{name: {ns}-slack}}}}\n"
    );
    let _alerting = Alerting::create(ns, &secrets, &alerts);
    opt_in(&client, ns, &[]).await;
    apply(&manifest(ns, "web", &Version::good("v2"), &[]));
    wait_phase(&client, ns, "web", Phase::Succeeded, RELEASE).await;

    for (service, check) in CHECKS {
        wait_for(
            &got,
            ns,
            service,
            &["NewRevision", "Progressing", "Succeeded"],
        )
        .await;
        let bodies = bodies(&got, service);
        for body in &bodies {
            check(body);
        }
        // In the order the Events were recorded: NewRevision first, Succeeded last.
        let titles: Vec<String> = bodies.iter().map(title).collect();
        let at = |reason: &str| titles.iter().position(|t| t.ends_with(reason));
        assert!(at("NewRevision") < at("Succeeded"), "{service}: {titles:?}");
    }
    let discord = bodies(&got, "discord");
    assert!(
        discord.iter().all(|b| b["username"] == "serin"),
        "{discord:?}"
    );
    // `on-call` (severity error) shares the Slack address: a good release sends it nothing,
    // so every Slack body is the `slack` alert's (with its channel), checked above.
    let slack = bodies(&got, "slack");
    assert!(
        slack.iter().all(|b| b["channel"] == "#deploys"),
        "{slack:?}"
    );

    // The failing alerts: the release went on; each failure is an Event without the address.
    wait_until(
        "the AlertFailed Events",
        Duration::from_secs(30),
        || async {
            let failed: Vec<String> = events(&client, ns, "web")
                .await
                .into_iter()
                .filter(|e| e.starts_with("AlertFailed"))
                .collect();
            let broken = failed
                .iter()
                .any(|e| e.contains("alert \"broken\" (slack)") && e.contains("answered HTTP 500"));
            let missing = failed.iter().any(|e| {
                e.contains("alert \"missing\"")
                    && e.contains(&format!(
                        "Secret serin-system/{ns}-no-such-secret does not exist"
                    ))
            });
            match broken && missing {
                true => Ok(failed),
                false => Err(format!("{failed:#?}")),
            }
        },
    )
    .await;
    let all = events(&client, ns, "web").await.join("\n");
    assert!(
        !all.contains("tok3n"),
        "an address leaked into an Event:\n{all}"
    );
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn a_rollback_reaches_every_severity_and_only_rollbacks_reach_error() {
    let (client, ns) = support::release_namespace("alerts-rb").await;
    let ns = &ns.name;
    let (base, got) = receiver().await;
    let secrets: Vec<(&str, String)> = ["info", "warn", "error"]
        .iter()
        .map(|s| (*s, format!("{base}{s}/tok3n")))
        .collect();
    let alerts = format!(
        "  - {{name: info, type: discord, severity: info, secretRef: {{name: {ns}-info}}}}\n\
         \x20 - {{name: warn, type: discord, severity: warn, secretRef: {{name: {ns}-warn}}}}\n\
         \x20 - {{name: error, type: discord, severity: error, secretRef: {{name: {ns}-error}}}}\n"
    );
    let _alerting = Alerting::create(ns, &secrets, &alerts);
    let threshold = [("serin.dev/threshold", "2")];
    opt_in(&client, ns, &threshold).await;
    apply(&manifest(ns, "web", &scenarios::FAILING, &threshold));
    wait_phase(&client, ns, "web", Phase::Failed, RELEASE).await;
    wait_for(&got, ns, "error", &["RolledBack"]).await;
    wait_for(&got, ns, "warn", &["CheckFailed", "RolledBack"]).await;
    wait_for(
        &got,
        ns,
        "info",
        &["NewRevision", "CheckFailed", "RolledBack"],
    )
    .await;
    let reasons = |service: &str| -> Vec<String> {
        bodies(&got, service)
            .iter()
            .map(|b| {
                check_discord(b);
                b["embeds"][0]["title"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect()
    };
    assert_eq!(reasons("error"), ["RolledBack"]);
    let warn = reasons("warn");
    assert!(
        warn.iter()
            .all(|r| r == "CheckFailed" || r == "RolledBack" || r == "MetricError"),
        "warn got a step that is no failure: {warn:?}"
    );
    let info = reasons("info");
    assert!(info.len() > warn.len(), "info: {info:?}, warn: {warn:?}");
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn a_policy_whose_alert_takes_a_field_its_service_does_not_is_refused_at_apply() {
    let (_, ns) = support::serin_namespace("alerts-adm").await;
    let name = format!("{}-bad-alerts", ns.name);
    let yaml = format!(
        "apiVersion: serin.dev/v1beta1\nkind: CanaryPolicy\nmetadata: {{name: {name}}}\nspec:\n\
         \x20 namespaceSelector: {{matchLabels: {{kubernetes.io/metadata.name: {ns}}}}}\n\
         \x20 alerts:\n\
         \x20 - {{name: teams, type: msteams, secretRef: {{name: teams}}, channel: '#x'}}\n\
         \x20 - {{name: teams, type: gchat, secretRef: {{name: Bad_Name}}}}\n",
        ns = ns.name
    );
    let (ok, stdout, stderr) = kubectl(&["apply", "-f", "-"], Some(&yaml));
    let _ = kubectl(
        &["delete", "canarypolicy", &name, "--ignore-not-found"],
        None,
    );
    assert!(!ok, "admitted:\n{stdout}");
    for expected in [
        "spec.alerts[0].channel: type msteams does not take a channel",
        "spec.alerts[1].name: \"teams\" is used by an earlier alert",
        "spec.alerts[1].secretRef.name: \"Bad_Name\" is not a Secret name",
    ] {
        assert!(stderr.contains(expected), "{expected:?} not in:\n{stderr}");
    }
    // An unknown type is the schema's to refuse, with the allowed values.
    let unknown = yaml
        .replace("type: msteams", "type: teams")
        .replace(", channel: '#x'", "");
    let (ok, _, stderr) = kubectl(&["apply", "-f", "-"], Some(&unknown));
    let _ = kubectl(
        &["delete", "canarypolicy", &name, "--ignore-not-found"],
        None,
    );
    assert!(!ok, "an unknown alert type was admitted");
    assert!(
        stderr.contains("spec.alerts[0].type") && stderr.contains("\"slack\""),
        "{stderr}"
    );
}
