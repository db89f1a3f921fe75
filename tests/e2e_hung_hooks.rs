//! Webhooks that never answer, on the real local cluster: Serin calls them outside its
//! reconciles, so a release held at such a gate is aborted or opted out at once, and another
//! release is rolled back on time meanwhile.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use kube::Client;
use serin::release::Phase;
use support::release::{Version, apply, canary, manifest, wait_phase};
use support::{TestNamespace, kubectl, wait_until};
use tokio::io::AsyncReadExt;

const SETTLE: Duration = Duration::from_secs(60);
const RELEASE: Duration = Duration::from_secs(120);
/// Far less than the hung hook's timeout (60 s): what "at once" means here.
const PROMPTLY: Duration = Duration::from_secs(20);

/// A webhook that reads each request and never answers; counts the calls.
async fn hung_hook() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/gate", listener.local_addr().expect("address"));
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buffer = [0u8; 4096];
                while matches!(socket.read(&mut buffer).await, Ok(n) if n > 0) {}
            });
        }
    });
    (url, calls)
}

fn gate_template(ns: &str, url: &str) -> String {
    format!(
        "apiVersion: serin.dev/v1beta1\nkind: AnalysisTemplate\nmetadata: {{name: gates, namespace: {ns}}}\nspec:\n  webhooks:\n  - {{name: gate, type: confirm-rollout, url: \"{url}\", timeout: 60s}}\n"
    )
}

async fn namespace(client: &Client, prefix: &str) -> TestNamespace {
    TestNamespace::create(client, prefix).await
}

/// Opts `web` in, then releases v2, which waits at the gate that never answers.
async fn held_at_the_gate(client: &Client, ns: &str, url: &str) {
    apply(&gate_template(ns, url));
    let extra = [("serin.dev/analysis", "gates")];
    apply(&manifest(ns, "web", &Version::good("v1"), &extra));
    wait_phase(client, ns, "web", Phase::Initialized, SETTLE).await;
    apply(&manifest(ns, "web", &Version::good("v2"), &extra));
    wait_phase(client, ns, "web", Phase::Waiting, SETTLE).await;
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn a_hook_that_never_answers_delays_no_abort_no_opt_out_and_no_other_rollback() {
    support::release_environment();
    let client = support::client().await;
    let (url, calls) = hung_hook().await;
    let aborted = namespace(&client, "hung-abort").await;
    let opted_out = namespace(&client, "hung-optout").await;
    let broken = namespace(&client, "hung-broken").await;

    // A release that nothing holds up, opted in beside the held ones.
    apply(&manifest(&broken.name, "web", &Version::good("v1"), &[]));
    held_at_the_gate(&client, &aborted.name, &url).await;
    held_at_the_gate(&client, &opted_out.name, &url).await;
    wait_phase(&client, &broken.name, "web", Phase::Initialized, SETTLE).await;
    wait_until("the gate to be called", SETTLE, || async {
        (calls.load(Ordering::SeqCst) >= 2)
            .then_some(())
            .ok_or_else(|| "not yet".to_owned())
    })
    .await;

    // A broken canary is rolled back while both gates hang.
    let failing = Version {
        error_rate: 0.5,
        ..Version::good("v2")
    };
    apply(&manifest(&broken.name, "web", &failing, &[]));
    wait_phase(&client, &broken.name, "web", Phase::Failed, RELEASE).await;

    // An abort of a release held at the hanging gate is applied at once.
    let started = Instant::now();
    let (ok, _, err) = kubectl(
        &[
            "annotate",
            "canary",
            "web",
            "-n",
            &aborted.name,
            "--overwrite",
            "serin.dev/action=abort",
            "serin.dev/action-id=hung-1",
        ],
        None,
    );
    assert!(ok, "{err}");
    wait_phase(&client, &aborted.name, "web", Phase::Failed, PROMPTLY).await;
    assert!(started.elapsed() < PROMPTLY);

    // So is an opt-out: the Canary and the primary are gone long before the hook's timeout.
    let started = Instant::now();
    apply(&manifest(
        &opted_out.name,
        "web",
        &Version::good("v2"),
        &[
            ("serin.dev/enabled", "false"),
            ("serin.dev/analysis", "gates"),
        ],
    ));
    wait_until("the opt-out to complete", PROMPTLY, || async {
        match canary(&client, &opted_out.name, "web").await {
            None => Ok(()),
            Some(c) => Err(format!("{:?}", c.status.map(|s| s.release.phase))),
        }
    })
    .await;
    assert!(started.elapsed() < PROMPTLY);
}
