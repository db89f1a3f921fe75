use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use serde_json::{Value, json};

use super::*;
use crate::analysis::http::serve_on_loopback;
use crate::spec::Duration as SpecDuration;

/// What the webhook stand-in saw: `(case, payload)` per call, and how often `flaky` was hit.
#[derive(Clone, Default)]
struct Seen {
    calls: Arc<Mutex<Vec<(String, Value)>>>,
    flaky: Arc<AtomicUsize>,
}

impl Seen {
    fn calls(&self) -> Vec<(String, Value)> {
        self.calls.lock().expect("calls lock").clone()
    }

    fn cases(&self) -> Vec<String> {
        self.calls().into_iter().map(|(case, _)| case).collect()
    }
}

/// A webhook at `http://127.0.0.1:PORT/<case>`, answering as the case says.
async fn webhook_case(
    State(seen): State<Seen>,
    Path(case): Path<String>,
    axum::Json(payload): axum::Json<Value>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let answer = answer_case(&seen, &case, payload).await;
    match case.as_str() {
        "redirect" => (
            answer.0,
            [("location", "http://evil.example.test/collect")],
            answer.1,
        )
            .into_response(),
        _ => answer.into_response(),
    }
}

async fn answer_case(seen: &Seen, case: &str, payload: Value) -> (StatusCode, String) {
    seen.calls
        .lock()
        .expect("calls lock")
        .push((case.to_owned(), payload));
    match case {
        "ok" | "ok-too" => (StatusCode::OK, "done".into()),
        "accepted" => (StatusCode::ACCEPTED, String::new()),
        "non-authoritative" => (StatusCode::NON_AUTHORITATIVE_INFORMATION, "hm".into()),
        "no-content" => (StatusCode::NO_CONTENT, String::new()),
        "flaky" => match seen.flaky.fetch_add(1, Ordering::SeqCst) {
            0 => (StatusCode::INTERNAL_SERVER_ERROR, "warming up".into()),
            _ => (StatusCode::OK, "ok now".into()),
        },
        "verbose-failure" => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("helm test failed:\n{}", "x".repeat(500)),
        ),
        "closed" => (StatusCode::FORBIDDEN, "gate closed".into()),
        "slow" => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            (StatusCode::OK, String::new())
        }
        // An allowed host that sends the call on to a forbidden one.
        "redirect" => (StatusCode::TEMPORARY_REDIRECT, String::new()),
        _ => (StatusCode::NOT_FOUND, "no such case".into()),
    }
}

async fn webhooks() -> (String, Seen) {
    let seen = Seen::default();
    let app = Router::new()
        .route("/{case}", post(webhook_case))
        .with_state(seen.clone());
    (serve_on_loopback(app).await, seen)
}

fn client() -> HookClient {
    HookClient::new(crate::analysis::http::client().expect("http client"))
        .with_retry_pause(Duration::from_millis(10))
}

fn hook(name: &str, kind: HookType, url: String) -> WebhookTemplate {
    WebhookTemplate {
        name: name.into(),
        type_: kind,
        url,
        timeout: None,
        retries: None,
        metadata: BTreeMap::new(),
        mute_alert: None,
    }
}

fn payload() -> HookPayload {
    HookPayload {
        name: "web".into(),
        namespace: "shop".into(),
        phase: Phase::Progressing,
        checksum: "5f7c9d".into(),
        metadata: BTreeMap::new(),
    }
}

/// Runs one pre-rollout hook at `<base>/<case>`, shaped by `tweak`.
async fn run_one(case: &str, tweak: impl FnOnce(&mut WebhookTemplate)) -> (HookOutcome, Seen) {
    let (base, seen) = webhooks().await;
    let mut one = hook("acceptance", HookType::PreRollout, format!("{base}/{case}"));
    tweak(&mut one);
    let outcome = run_hooks(&client(), &[one], HookType::PreRollout, &payload()).await;
    (outcome, seen)
}

fn only_failure(outcome: &HookOutcome) -> &HookFailure {
    assert!(outcome.succeeded.is_empty(), "{outcome:?}");
    match outcome.failed.as_slice() {
        [failure] => failure,
        other => panic!("expected one failure, got {other:?}"),
    }
}

#[tokio::test]
async fn a_hook_answering_200_passes_and_receives_flaggers_payload() {
    let (outcome, seen) = run_one("ok", |h| {
        h.metadata = BTreeMap::from([
            ("type".to_owned(), "bash".to_owned()),
            ("cmd".to_owned(), "curl -s http://web-canary/".to_owned()),
        ]);
    })
    .await;
    assert!(outcome.passed());
    assert_eq!(outcome.succeeded, ["acceptance"]);
    assert_eq!(outcome.failure_message(), None);
    assert_eq!(
        seen.calls(),
        [(
            "ok".to_owned(),
            json!({
                "name": "web",
                "namespace": "shop",
                "phase": "Progressing",
                "checksum": "5f7c9d",
                "metadata": {"type": "bash", "cmd": "curl -s http://web-canary/"},
            })
        )]
    );
}

#[tokio::test]
async fn a_payload_without_metadata_leaves_the_field_out() {
    let (_, seen) = run_one("ok", |_| {}).await;
    let payload = &seen.calls()[0].1;
    assert_eq!(payload.get("metadata"), None);
    assert_eq!(payload["phase"], "Progressing");
}

#[tokio::test]
async fn the_payloads_metadata_goes_on_top_of_the_hooks_own() {
    let (base, seen) = webhooks().await;
    let mut notify = hook("notify", HookType::Event, format!("{base}/ok"));
    notify.metadata = BTreeMap::from([
        ("channel".to_owned(), "#releases".to_owned()),
        ("eventType".to_owned(), "from-the-template".to_owned()),
    ]);
    let mut event = payload();
    event.metadata = BTreeMap::from([
        ("eventType".to_owned(), "Warning".to_owned()),
        ("eventMessage".to_owned(), "Check failed".to_owned()),
    ]);
    run_hooks(&client(), &[notify], HookType::Event, &event).await;
    assert_eq!(
        seen.calls()[0].1["metadata"],
        json!({"channel": "#releases", "eventType": "Warning", "eventMessage": "Check failed"})
    );
}

#[tokio::test]
async fn a_hook_answering_202_passes() {
    let (outcome, _) = run_one("accepted", |_| {}).await;
    assert!(outcome.passed(), "{outcome:?}");
}

#[tokio::test]
async fn a_hook_answering_203_fails_with_the_status_and_body() {
    let (outcome, _) = run_one("non-authoritative", |_| {}).await;
    let failure = only_failure(&outcome);
    assert_eq!(
        failure.error,
        HookError::Status {
            status: 203,
            body: "hm".into()
        }
    );
    assert!(!outcome.passed());
    assert_eq!(
        outcome.failure_message(),
        Some(format!(
            "webhook \"acceptance\" at {} answered HTTP 203: hm",
            failure.url
        ))
    );
}

#[tokio::test]
async fn a_hook_answering_204_fails_as_in_flagger() {
    let (outcome, _) = run_one("no-content", |_| {}).await;
    assert_eq!(
        only_failure(&outcome).error,
        HookError::Status {
            status: 204,
            body: String::new()
        }
    );
}

#[tokio::test]
async fn a_hook_failing_once_passes_with_one_retry() {
    let (outcome, seen) = run_one("flaky", |h| h.retries = Some(1)).await;
    assert!(outcome.passed(), "{outcome:?}");
    assert_eq!(seen.cases(), ["flaky", "flaky"]);
}

#[tokio::test]
async fn without_retries_a_failing_hook_is_called_once() {
    let (outcome, seen) = run_one("flaky", |_| {}).await;
    assert_eq!(only_failure(&outcome).attempts, 1);
    assert_eq!(seen.cases(), ["flaky"]);
}

#[tokio::test]
async fn a_hook_failing_every_attempt_says_how_often_and_quotes_the_start_of_the_body() {
    let (outcome, seen) = run_one("verbose-failure", |h| h.retries = Some(2)).await;
    assert_eq!(seen.cases().len(), 3);
    let failure = only_failure(&outcome);
    assert_eq!(failure.attempts, 3);
    let HookError::Status { status, body } = &failure.error else {
        panic!("expected a status failure, got {failure:?}");
    };
    assert_eq!(*status, 500);
    assert_eq!(
        body,
        &format!("helm test failed: {}…", "x".repeat(200 - 18))
    );
    assert!(
        failure.to_string().ends_with("… (after 3 attempts)"),
        "{failure}"
    );
}

#[tokio::test]
async fn a_hook_slower_than_its_timeout_fails() {
    let (outcome, _) = run_one("slow", |h| {
        h.timeout = Some(SpecDuration::from_millis(200));
    })
    .await;
    assert_eq!(
        only_failure(&outcome).error,
        HookError::Timeout {
            timeout: Duration::from_millis(200)
        }
    );
    assert!(
        outcome
            .failure_message()
            .is_some_and(|m| m.ends_with("did not answer within 200ms")),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn an_unreachable_hook_fails_with_the_transport_error() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("local address");
    drop(listener);
    let hooks = [hook(
        "gate",
        HookType::ConfirmRollout,
        format!("http://{address}/gate"),
    )];
    let outcome = run_hooks(&client(), &hooks, HookType::ConfirmRollout, &payload()).await;
    let failure = only_failure(&outcome);
    assert!(
        matches!(&failure.error, HookError::Transport { reason } if !reason.is_empty()),
        "{failure:?}"
    );
    assert!(
        failure.to_string().starts_with(&format!(
            "webhook \"gate\" at http://{address}/gate could not be called: "
        )),
        "{failure}"
    );
}

#[tokio::test]
async fn with_no_hook_of_the_kind_the_outcome_passes_and_nothing_is_called() {
    let (base, seen) = webhooks().await;
    let hooks = [hook("load", HookType::Rollout, format!("{base}/closed"))];
    let outcome = run_hooks(&client(), &hooks, HookType::ConfirmRollout, &payload()).await;
    assert!(outcome.passed());
    assert_eq!(outcome, HookOutcome::default());
    assert!(seen.calls().is_empty());
    let none = run_hooks(&client(), &[], HookType::PreRollout, &payload()).await;
    assert!(none.passed());
}

#[tokio::test]
async fn gates_stop_at_the_first_failing_hook() {
    let (base, seen) = webhooks().await;
    let hooks = [
        hook("first", HookType::PreRollout, format!("{base}/ok")),
        hook("second", HookType::PreRollout, format!("{base}/closed")),
        hook("third", HookType::PreRollout, format!("{base}/ok-too")),
    ];
    let outcome = run_hooks(&client(), &hooks, HookType::PreRollout, &payload()).await;
    assert_eq!(outcome.succeeded, ["first"]);
    assert_eq!(only_failed_name(&outcome), "second");
    assert_eq!(seen.cases(), ["ok", "closed"]);
}

fn only_failed_name(outcome: &HookOutcome) -> &str {
    match outcome.failed.as_slice() {
        [failure] => &failure.name,
        other => panic!("expected one failure, got {other:?}"),
    }
}

#[tokio::test]
async fn notifications_go_to_every_hook_even_after_a_failure() {
    let (base, seen) = webhooks().await;
    let hooks = [
        hook("first", HookType::PostRollout, format!("{base}/closed")),
        hook("second", HookType::PostRollout, format!("{base}/ok")),
    ];
    let outcome = run_hooks(&client(), &hooks, HookType::PostRollout, &payload()).await;
    assert_eq!(outcome.succeeded, ["second"]);
    assert_eq!(only_failed_name(&outcome), "first");
    assert_eq!(seen.cases(), ["closed", "ok"]);
}

#[test]
fn the_machines_hook_kinds_are_the_template_hook_types() {
    for (kind, type_) in [
        (HookKind::ConfirmRollout, HookType::ConfirmRollout),
        (HookKind::PreRollout, HookType::PreRollout),
        (
            HookKind::ConfirmTrafficIncrease,
            HookType::ConfirmTrafficIncrease,
        ),
        (HookKind::ConfirmPromotion, HookType::ConfirmPromotion),
        (HookKind::PostRollout, HookType::PostRollout),
    ] {
        assert_eq!(HookType::from(kind), type_);
    }
}

#[tokio::test]
async fn a_redirect_fails_the_call_and_is_not_followed() {
    let (outcome, seen) = run_one("redirect", |_| {}).await;
    let failure = only_failure(&outcome);
    assert_eq!(
        failure.error,
        HookError::Redirect {
            status: 307,
            location: Some("http://evil.example.test/collect".into())
        }
    );
    assert!(
        failure
            .to_string()
            .contains("a redirect to http://evil.example.test/collect; Serin does not follow"),
        "{failure}"
    );
    assert_eq!(seen.cases(), ["redirect"]);
}

#[tokio::test]
async fn serins_own_ports_and_link_local_addresses_are_never_called() {
    // The stand-in plays Serin's admin port: a hook there is refused before any byte is sent.
    let (base, seen) = webhooks().await;
    let (outbound, port) = crate::analysis::http::outbound_guarding(&base);
    let guarded = HookClient::new(outbound).with_retry_pause(Duration::from_millis(10));
    for (url, expected) in [
        (format!("{base}/ok"), "Serin's own listener"),
        (
            format!("http://localhost:{port}/ok"),
            "Serin's own listener",
        ),
        (
            "http://169.254.169.254/latest/meta-data/".into(),
            "metadata",
        ),
        ("http://[fe80::1]/".into(), "link-local"),
    ] {
        let one = hook("acceptance", HookType::PreRollout, url.clone());
        let outcome = run_hooks(&guarded, &[one], HookType::PreRollout, &payload()).await;
        let failure = only_failure(&outcome);
        assert!(
            matches!(
                failure.error,
                HookError::Refused { .. } | HookError::Transport { .. }
            ),
            "{url}: {failure}"
        );
        assert!(failure.to_string().contains(expected), "{url}: {failure}");
    }
    assert_eq!(seen.cases(), Vec::<String>::new());
}

#[test]
fn a_hook_timeout_is_capped_at_run_time_whatever_the_template_says() {
    let mut slow = hook(
        "gate",
        HookType::ConfirmRollout,
        "http://hooks.test/".into(),
    );
    slow.timeout = Some(SpecDuration::from_secs(999_999 * 3600));
    assert_eq!(attempt_timeout(&slow), MAX_TIMEOUT);
    slow.timeout = Some(SpecDuration::from_secs(3));
    assert_eq!(attempt_timeout(&slow), Duration::from_secs(3));
    slow.timeout = None;
    assert_eq!(attempt_timeout(&slow), DEFAULT_TIMEOUT);
}
