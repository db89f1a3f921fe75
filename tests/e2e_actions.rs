//! Runtime actions and the kubectl plugin on the real local cluster: releases as in
//! `e2e_release.rs` (Serin, the simulator and Prometheus as `make up` runs them, 2 s
//! intervals), steered with `kubectl serin promote|abort|pause|resume` through the built
//! kubectl, and `kubectl serin status` and the `Paused` column of `kubectl get canaries`
//! read back.

mod support;

use std::time::Duration;

use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use serin::controller::requests::{ACTION, ACTION_ID};
use serin::crd::RequestOutcome;
use serin::release::{Phase, ReleaseStatus};
use serin::router::Weights;
use support::plugin::kubectl_serin;
use support::release::{
    Version, apply, canary, events, image, manifest, replicas, wait_phase, weights,
};
use support::scenarios::{self, Route};
use support::wait_until;

const SETTLE: Duration = Duration::from_secs(60);
const RELEASE: Duration = Duration::from_secs(120);
const SERIN: &str = env!("CARGO_BIN_EXE_serin");

/// Ten steps of 5 %: a release that would take 20 s of checks on its own, so a request made
/// at its start lands long before it ends.
const SMALL_STEPS: [(&str, &str); 2] = [
    ("serin.dev/step-weight", "5"),
    ("serin.dev/max-weight", "50"),
];

/// Opts `name` in at v1, then applies v2 and waits until the canary takes traffic.
async fn releasing(client: &Client, ns: &str, name: &str, extra: &[(&str, &str)]) {
    apply(&manifest(ns, name, &Version::good("v1"), extra));
    wait_phase(client, ns, name, Phase::Initialized, SETTLE).await;
    apply(&manifest(ns, name, &Version::good("v2"), extra));
    wait_until(
        &format!("{ns}/{name} to route traffic to the canary"),
        RELEASE,
        || async {
            let status = release_status(client, ns, name).await;
            let routed = weights(client, ns, name).await;
            match (&status, routed) {
                (Some(s), Some(w)) if s.phase == Phase::Progressing && w.canary() > 0 => Ok(()),
                _ => Err(format!("{status:?}, weights {routed:?}")),
            }
        },
    )
    .await;
}

async fn release_status(client: &Client, ns: &str, name: &str) -> Option<ReleaseStatus> {
    canary(client, ns, name)
        .await
        .and_then(|c| c.status)
        .map(|s| s.release)
}

/// `kubectl serin ARGS -n NS`, which must succeed; its stdout.
fn plugin_ok(ns: &str, args: &[&str]) -> String {
    let args: Vec<&str> = args.iter().copied().chain(["-n", ns]).collect();
    let (ok, stdout, stderr) = kubectl_serin(SERIN, &args);
    assert!(ok, "kubectl serin {args:?} failed:\n{stdout}\n{stderr}");
    stdout
}

/// The `Paused` cell of the Canary's row in the Table the API server renders for
/// `kubectl get canaries` (the CRD's printer columns), asked for as kubectl asks.
async fn paused_column(client: &Client, ns: &str, name: &str) -> Value {
    let request = axum::http::Request::get(format!(
        "/apis/serin.dev/v1beta1/namespaces/{ns}/canaries/{name}"
    ))
    .header("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
    .body(Vec::new())
    .expect("a Table request");
    let table: Value = client
        .request(request)
        .await
        .expect("the Canary as a Table");
    let columns: Vec<&str> = table["columnDefinitions"]
        .as_array()
        .map(|c| c.iter().filter_map(|c| c["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        columns,
        [
            "Name", "Phase", "Weight", "Failed", "Paused", "Revision", "Age"
        ],
        "{table:#}"
    );
    table["rows"][0]["cells"][4].clone()
}

/// The weights Serin moved the canary to, from its Events, in order.
fn advanced_weights(events: &[String]) -> Vec<u32> {
    events
        .iter()
        .filter_map(|e| e.split("Advancing the canary weight to ").nth(1))
        .filter_map(|rest| rest.split('%').next()?.parse().ok())
        .collect()
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn promote_skips_the_remaining_steps_and_the_release_succeeds() {
    let (client, ns) = support::release_namespace("act-promote").await;
    let ns = &ns.name;
    releasing(&client, ns, "web", &SMALL_STEPS).await;

    let out = plugin_ok(ns, &["promote", "web"]);
    assert!(out.contains("canary web: promote applied"), "{out}");

    let done = wait_phase(&client, ns, "web", Phase::Succeeded, RELEASE).await;
    let status = done.status.clone().expect("status");
    assert_eq!(
        status.release.last_promoted_revision,
        status.release.revision
    );
    let request = status.last_request.expect("the request is recorded");
    assert_eq!(
        (request.action.as_str(), request.outcome),
        ("promote", RequestOutcome::Applied)
    );
    // The request stays written (Serin's apply of the Canary never removes it) and is not
    // acted on again.
    assert_eq!(
        done.annotations().get(ACTION).map(String::as_str),
        Some("promote")
    );
    assert_eq!(done.annotations().get(ACTION_ID), Some(&request.id));

    // Promoted the normal way: the primary runs v2, traffic is back on it, canary at zero.
    scenarios::assert_primary_serves(&client, ns, &Route::SMI, "v2").await;
    let events = events(&client, ns, "web").await;
    let walked = advanced_weights(&events);
    assert!(
        walked.iter().all(|w| *w < 50),
        "the weight reached max-weight; promote skipped nothing: {walked:?}"
    );
    let events = events.join("\n");
    for text in [
        "Promoting: Promotion requested: skipping the rest of the analysis",
        "Finalising",
        "Succeeded",
    ] {
        assert!(
            events.contains(text),
            "no {text:?} among the events:\n{events}"
        );
    }
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn abort_rolls_back_to_the_primary() {
    let (client, ns) = support::release_namespace("act-abort").await;
    let ns = &ns.name;
    releasing(&client, ns, "web", &SMALL_STEPS).await;

    let out = plugin_ok(ns, &["abort", "web"]);
    assert!(out.contains("canary web: abort applied"), "{out}");

    let failed = wait_phase(&client, ns, "web", Phase::Failed, SETTLE).await;
    let status = failed.status.expect("status").release;
    assert_ne!(status.last_promoted_revision, status.revision);
    assert_eq!(
        weights(&client, ns, "web").await,
        Some(Weights::ALL_PRIMARY),
        "weights 100/0"
    );
    assert_eq!(replicas(&client, ns, "web").await, Some(0));
    assert_eq!(
        image(&client, ns, "web-primary").await,
        "example.invalid/web:v1"
    );
    let events = events(&client, ns, "web").await.join("\n");
    assert!(
        events.contains("RolledBack: Rolling back revision")
            && events.contains("Aborted by request"),
        "{events}"
    );

    // Nothing left to abort: said, with a failing exit status.
    let (ok, stdout, _) = kubectl_serin(SERIN, &["abort", "web", "-n", ns]);
    assert!(!ok, "{stdout}");
    assert!(
        stdout.contains("abort ignored: no analysis in progress (phase Failed)"),
        "{stdout}"
    );
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn pause_holds_the_weight_over_several_intervals_and_resume_continues() {
    let (client, ns) = support::release_namespace("act-pause").await;
    let ns = &ns.name;
    releasing(&client, ns, "web", &SMALL_STEPS).await;

    let out = plugin_ok(ns, &["pause", "web"]);
    assert!(
        out.contains("canary web: pause applied: paused at weight"),
        "{out}"
    );
    let held = canary(&client, ns, "web")
        .await
        .and_then(|c| c.status)
        .expect("status");
    assert!(held.paused);
    let weight = held.release.canary_weight;
    assert!(weight > 0 && weight < 50, "paused at {weight}%");
    assert_eq!(paused_column(&client, ns, "web").await, json!(true));
    let (ok, table, stderr) = support::kubectl(&["get", "canaries", "-n", ns], None);
    assert!(ok, "{stderr}");
    let lines: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines[0].get(4), Some(&"PAUSED"), "{table}");
    assert_eq!(lines[1].get(4), Some(&"true"), "{table}");

    // A spec change makes Serin re-apply the Canary while paused: the request stays.
    let mut extra = SMALL_STEPS.to_vec();
    extra.push(("serin.dev/threshold", "4"));
    apply(&manifest(ns, "web", &Version::good("v2"), &extra));
    wait_until(
        "the Canary's spec to follow the Deployment",
        SETTLE,
        || async {
            let c = canary(&client, ns, "web").await;
            match c.as_ref().map(|c| c.spec.config.threshold) {
                Some(4) => Ok(()),
                other => Err(format!("threshold {other:?}")),
            }
        },
    )
    .await;
    let reapplied = canary(&client, ns, "web").await.expect("Canary");
    assert_eq!(
        reapplied.annotations().get(ACTION).map(String::as_str),
        Some("pause")
    );

    // Held for four intervals: same weight in the status and the TrafficSplit, no check ran.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now = canary(&client, ns, "web")
            .await
            .and_then(|c| c.status)
            .expect("status");
        assert!(now.paused);
        assert_eq!(now.release.phase, Phase::Progressing);
        assert_eq!(
            now.release.canary_weight, weight,
            "the weight moved while paused"
        );
        assert_eq!(
            now.release.last_check_time, held.release.last_check_time,
            "a check ran while paused"
        );
        assert_eq!(
            weights(&client, ns, "web").await,
            Some(Weights::to_canary(weight))
        );
    }

    let out = plugin_ok(ns, &["resume", "web"]);
    assert!(
        out.contains(&format!(
            "canary web: resume applied: resumed at weight {weight}%"
        )),
        "{out}"
    );
    wait_until("the weight to move on after resume", SETTLE, || async {
        match release_status(&client, ns, "web").await {
            Some(s) if s.canary_weight > weight || s.phase != Phase::Progressing => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let done = wait_phase(&client, ns, "web", Phase::Succeeded, RELEASE).await;
    assert!(!done.status.expect("status").paused);
    assert_eq!(paused_column(&client, ns, "web").await, json!(false));
    let events = events(&client, ns, "web").await;
    let walked = advanced_weights(&events);
    assert_eq!(
        walked.last(),
        Some(&50),
        "resumed through every step: {walked:?}"
    );
    let events = events.join("\n");
    assert!(
        events.contains("Paused: pause: paused at weight"),
        "{events}"
    );
    assert!(
        events.contains("Resumed: resume: resumed at weight"),
        "{events}"
    );
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn status_shows_every_canary_as_a_table_and_one_canarys_history() {
    let (client, ns) = support::release_namespace("act-status").await;
    let ns = &ns.name;
    apply(&manifest(ns, "api", &Version::good("v1"), &[]));
    apply(&manifest(ns, "web", &Version::good("v1"), &[]));
    wait_phase(&client, ns, "api", Phase::Initialized, SETTLE).await;
    wait_phase(&client, ns, "web", Phase::Initialized, SETTLE).await;
    apply(&manifest(ns, "web", &Version::good("v2"), &[]));
    let web = wait_phase(&client, ns, "web", Phase::Succeeded, RELEASE).await;
    let web_revision = web
        .status
        .expect("status")
        .release
        .revision
        .expect("revision");
    let api_revision = release_status(&client, ns, "api")
        .await
        .and_then(|s| s.revision)
        .expect("api revision");

    // The table: a header and one row per Canary, by name. `--kubeconfig` after the plugin's
    // name reaches it (kubectl keeps flags before the name for itself).
    let kubeconfig = support::kubeconfig().to_string_lossy().into_owned();
    let table = plugin_ok(ns, &["status", "--kubeconfig", &kubeconfig]);
    let lines: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert_eq!(
        lines[0],
        [
            "NAME",
            "PHASE",
            "WEIGHT",
            "FAILED",
            "CHECKS",
            "REVISION",
            "LAST",
            "TRANSITION"
        ],
        "{table}"
    );
    assert_eq!(
        lines[1][..5],
        ["api", "Initialized", "0%", "0/3", api_revision.as_str()],
        "{table}"
    );
    assert_eq!(
        lines[2][..5],
        ["web", "Succeeded", "0%", "0/3", web_revision.as_str()],
        "{table}"
    );
    assert!(
        lines[2][5].ends_with('s') && lines[2][6] == "ago",
        "{table}"
    );

    // One canary: its state, its last checks and its history from the Events, in order.
    let details = plugin_ok(ns, &["status", "web"]);
    assert!(
        details.contains("Phase:            Succeeded\n"),
        "{details}"
    );
    assert!(
        details.contains("Steps:            canary, weights 25%, 50%; every 2s\n"),
        "{details}"
    );
    assert!(
        details.contains(&format!("Revision:         {web_revision}\n")),
        "{details}"
    );
    let checks = details
        .split("Last checks:\n")
        .nth(1)
        .and_then(|rest| rest.split("History:").next())
        .unwrap_or_default();
    let success_rate: Option<f64> = checks
        .lines()
        .find_map(|l| l.trim().strip_prefix("request-success-rate"))
        .and_then(|v| v.trim().parse().ok());
    assert_eq!(success_rate, Some(100.0), "{details}");
    let history = details.split("History:\n").nth(1).unwrap_or_default();
    let reasons: Vec<&str> = history
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect();
    let order = [
        "Initialized",
        "NewRevision",
        "Progressing",
        "Promoting",
        "Succeeded",
    ];
    let mut at = 0;
    for reason in order {
        let found = reasons[at..].iter().position(|r| *r == reason);
        assert!(
            found.is_some(),
            "no {reason} after {at} in {reasons:?}:\n{details}"
        );
        at += found.unwrap_or_default();
    }
    assert!(
        history.contains("Advancing the canary weight to 25% (pre-rollout webhooks passed)"),
        "{details}"
    );

    // Asking for what does not exist, or what cannot be done, fails and says why.
    let (ok, _, stderr) = kubectl_serin(SERIN, &["status", "nope", "-n", ns]);
    assert!(
        !ok && stderr.contains("no Canary nope in namespace"),
        "{stderr}"
    );
    let (ok, stdout, _) = kubectl_serin(SERIN, &["promote", "api", "-n", ns]);
    assert!(!ok, "{stdout}");
    assert!(
        stdout.contains("promote ignored: no analysis in progress (phase Initialized)"),
        "{stdout}"
    );
    let history = plugin_ok(ns, &["status", "api"]);
    assert!(
        history.contains("RequestIgnored   promote: no analysis in progress"),
        "{history}"
    );
}

#[test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
fn check_is_serin_check() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("web.yaml");
    let bad = manifest(
        "default",
        "web",
        &Version::good("v1"),
        &[("serin.dev/step-weight", "0")],
    );
    std::fs::write(&file, bad).expect("write manifest");
    let file = file.to_string_lossy().into_owned();
    let (ok, stdout, stderr) = kubectl_serin(SERIN, &["check", "-f", &file]);
    assert!(!ok, "{stdout}{stderr}");
    assert!(
        stdout.contains(r#"serin.dev/step-weight: "0" must be an integer from 1 to 100"#),
        "{stdout}"
    );
    assert!(
        stderr.contains("serin check: 1 of 1 objects have mistakes"),
        "{stderr}"
    );
}
