//! The questions of a release are answered outside its reconcile: a hook that never answers
//! holds no reconcile, keeps no other release waiting, and is cancelled once its release no
//! longer asks it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::io::AsyncReadExt;

use super::*;
use crate::crd::WebhookTemplate;
use crate::spec::Duration as SpecDuration;

fn measuring() -> Measuring {
    Measuring::new("http://127.0.0.1:9", Egress::new([])).expect("the clients")
}

/// A webhook that accepts connections and never answers; counts the connections that the
/// caller closed.
async fn hung_hook() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let closed = Arc::new(AtomicUsize::new(0));
    let counter = closed.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut buffer = [0u8; 4096];
                // Read the request and say nothing, until the caller hangs up.
                while matches!(socket.read(&mut buffer).await, Ok(n) if n > 0) {}
                counter.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    (format!("http://{address}/gate"), closed)
}

async fn answering_hook() -> String {
    let app = axum::Router::new().route("/gate", axum::routing::post(|| async { "open" }));
    crate::analysis::http::serve_on_loopback(app).await + "/gate"
}

fn template(url: &str) -> AnalysisTemplateSpec {
    AnalysisTemplateSpec {
        metrics: Vec::new(),
        webhooks: vec![WebhookTemplate {
            name: "gate".into(),
            type_: HookType::ConfirmRollout,
            url: url.into(),
            // The longest a template may say (and more than any test waits).
            timeout: Some(SpecDuration::from_secs(60)),
            retries: None,
            metadata: BTreeMap::new(),
            mute_alert: None,
        }],
    }
}

fn spec() -> CanarySpec {
    CanarySpec {
        analysis: Some("checks".into()),
        ..CanarySpec::defaults("web".into(), Some(8080))
    }
}

fn waiting() -> ReleaseStatus {
    ReleaseStatus {
        phase: Phase::Waiting,
        revision: Some("rev2".into()),
        ..Default::default()
    }
}

fn payload(name: &str) -> Payload {
    Payload {
        name: name.into(),
        namespace: "shop".into(),
        phase: Phase::Waiting,
        checksum: "rev2".into(),
    }
}

/// One reconcile's question: the `confirm-rollout` gate of release `name`, asked and ended.
async fn ask_gate(
    measuring: &Measuring,
    name: &str,
    template: &AnalysisTemplateSpec,
    status: &ReleaseStatus,
) -> Option<Outcome> {
    let spec = spec();
    let deploy = Deployment::default();
    let mut asker = Asker::new(measuring, &deploy, "shop", name, &spec, Some(template))
        .await
        .expect("no policies to read");
    let outcome = asker.gate(HookKind::ConfirmRollout, status, payload(name));
    assert_eq!(asker.awaiting(), outcome.is_none());
    asker.settle();
    outcome
}

fn release(name: &str) -> ObjectRef<Deployment> {
    ObjectRef::new(name).within("shop")
}

#[tokio::test]
async fn hooks_that_never_answer_hold_no_reconcile_and_keep_no_other_release_waiting() {
    let measuring = measuring();
    let mut answered = measuring.answered().expect("the answers, once");
    let (hung, _) = hung_hook().await;
    let stuck = template(&hung);
    // More stuck releases than the controller has reconcile slots: each reconcile ends at
    // once all the same.
    let started = Instant::now();
    for i in 0..40 {
        let name = format!("stuck-{i}");
        assert!(
            ask_gate(&measuring, &name, &stuck, &waiting())
                .await
                .is_none()
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "asking took {:?}",
        started.elapsed()
    );
    // Another release's gate answers, and its answer asks for its next reconcile at once.
    let open = template(&answering_hook().await);
    assert!(
        ask_gate(&measuring, "web", &open, &waiting())
            .await
            .is_none()
    );
    let woken = tokio::time::timeout(Duration::from_secs(5), answered.next())
        .await
        .expect("an answer within seconds, not after the stuck hooks' 60 s");
    assert_eq!(woken, Some(release("web")));
    let outcome = ask_gate(&measuring, "web", &open, &waiting())
        .await
        .expect("the next reconcile finds the answer");
    assert!(outcome.passed, "{outcome:?}");
    // The stuck ones are still asked once each, not once per reconcile.
    assert!(
        ask_gate(&measuring, "stuck-0", &stuck, &waiting())
            .await
            .is_none()
    );
    assert_eq!(measuring.calls.count(&release("stuck-0")), 1);
}

#[tokio::test]
async fn a_call_no_longer_asked_is_cancelled_and_an_answer_serves_only_its_question() {
    let measuring = measuring();
    let (hung, closed) = hung_hook().await;
    let stuck = template(&hung);
    assert!(
        ask_gate(&measuring, "web", &stuck, &waiting())
            .await
            .is_none()
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    // An abort or opt-out: the next reconcile asks nothing; the call is dropped at once.
    let spec = spec();
    let deploy = Deployment::default();
    let asker = Asker::new(&measuring, &deploy, "shop", "web", &spec, Some(&stuck))
        .await
        .expect("asker");
    asker.settle();
    assert_eq!(measuring.calls.count(&release("web")), 0);
    tokio::time::timeout(Duration::from_secs(5), async {
        while closed.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the hung connection is closed");

    // An answer to the gate of one moment of the release is not the answer of another.
    let mut answered = measuring.answered().expect("the answers, once");
    let open = template(&answering_hook().await);
    assert!(
        ask_gate(&measuring, "web", &open, &waiting())
            .await
            .is_none()
    );
    answered.next().await;
    let later = ReleaseStatus {
        revision: Some("rev3".into()),
        ..waiting()
    };
    let mut asker = Asker::new(&measuring, &deploy, "shop", "web", &spec, Some(&open))
        .await
        .expect("asker");
    let mut newer = payload("web");
    newer.checksum = "rev3".into();
    assert!(
        asker
            .gate(HookKind::ConfirmRollout, &later, newer)
            .is_none()
    );
    asker.settle();
}

#[tokio::test]
async fn a_gate_without_hooks_of_its_kind_is_open_at_once_without_a_call() {
    let measuring = measuring();
    let spec = spec();
    let deploy = Deployment::default();
    let only_rollout_gate = template("http://hooks.test/gate");
    let mut asker = Asker::new(
        &measuring,
        &deploy,
        "shop",
        "web",
        &spec,
        Some(&only_rollout_gate),
    )
    .await
    .expect("asker");
    let outcome = asker
        .gate(HookKind::ConfirmPromotion, &waiting(), payload("web"))
        .expect("answered at once");
    assert!(outcome.passed);
    assert_eq!(asker.rollback(&waiting(), payload("web")), Some(Vec::new()));
    assert!(!asker.awaiting());
    asker.settle();
    assert_eq!(measuring.calls.count(&release("web")), 0);
}
