//! A release the controller cannot carry out is told where users look: a Warning Event
//! `ReconcileFailed` and a `Reconciled` condition False on the Canary, both naming the
//! error; the condition goes once the cause is gone. Here the cause is a ResourceQuota that
//! leaves no room for the `-primary` Deployment.
//!
//! One object Serin cannot decode holds up nothing else: a Canary the CRD's schema accepts
//! but Serin's types do not is skipped, and the other releases' requests are still acted on.

mod support;

use std::time::Duration;

use kube::Client;
use serin::release::Phase;
use support::release::{Version, apply, canary, events, manifest, wait_phase};
use support::{kubectl, wait_until};

const SETTLE: Duration = Duration::from_secs(60);

/// `(status, message)` of the Canary's `Reconciled` condition, if it has one.
async fn reconciled(client: &Client, ns: &str) -> Option<(String, String)> {
    canary(client, ns, "web")
        .await?
        .status?
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Reconciled")
        .map(|c| (c.status, c.message))
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn a_primary_that_cannot_be_created_is_an_event_and_a_condition_until_it_can() {
    let (client, ns) = support::release_namespace("failure").await;
    let ns = &ns.name;
    apply(&format!(
        "apiVersion: v1\nkind: ResourceQuota\nmetadata: {{name: one-deployment, namespace: {ns}}}\nspec: {{hard: {{count/deployments.apps: \"1\"}}}}\n"
    ));
    // The quota is enforced once its controller has filled in what is used.
    wait_until("the quota to be counted", SETTLE, || async {
        let (ok, used, _) = kubectl(
            &[
                "-n",
                ns,
                "get",
                "resourcequota",
                "one-deployment",
                "-o",
                "jsonpath={.status.used.count/deployments\\.apps}",
            ],
            None,
        );
        if ok && used.trim() == "0" {
            Ok(())
        } else {
            Err(format!("used {used:?}"))
        }
    })
    .await;
    apply(&manifest(ns, "web", &Version::good("v1"), &[]));

    let message = wait_until("a Reconciled=False condition", SETTLE, || async {
        match reconciled(&client, ns).await {
            Some((status, message)) if status == "False" => Ok(message),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert!(message.contains("exceeded quota"), "{message}");
    let events = events(&client, ns, "web").await.join("\n");
    assert!(
        events.contains("ReconcileFailed: Serin cannot reconcile Deployment \"web\""),
        "{events}"
    );

    // Room for the primary: the release goes on and the condition goes.
    let (ok, _, err) = kubectl(
        &["-n", ns, "delete", "resourcequota", "one-deployment"],
        None,
    );
    assert!(ok, "{err}");
    wait_phase(&client, ns, "web", Phase::Initialized, SETTLE).await;
    wait_until("the Reconciled condition to go", SETTLE, || async {
        match reconciled(&client, ns).await {
            None => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn a_canary_serin_cannot_decode_does_not_stop_the_others_requests() {
    let (client, ns) = support::release_namespace("undecodable").await;
    let ns = &ns.name;
    apply(&manifest(ns, "web", &Version::good("v1"), &[]));
    wait_phase(&client, ns, "web", Phase::Initialized, SETTLE).await;

    // The CRD's pattern accepts this interval; Serin's durations cannot hold it. Before the
    // watch decoded objects one by one, it failed the whole list of Canaries from here on.
    apply(&format!(
        "apiVersion: serin.dev/v1beta1\nkind: Canary\nmetadata: {{name: broken, namespace: {ns}}}\nspec: {{service: broken, provider: linkerd, interval: 99999999999999999999h, latency: 500ms, maxWeight: 50, metricsWindow: 1m, successRate: 99, threshold: 2}}\n"
    ));

    // A runtime request is an annotation on web's Canary: only the Canary watch brings it
    // to the controller (nothing else about web changes). The plugin waits for the outcome.
    let (ok, stdout, stderr) =
        support::plugin::kubectl_serin(env!("CARGO_BIN_EXE_serin"), &["promote", "web", "-n", ns]);
    assert!(
        stdout.contains("promote ignored: no analysis in progress (phase Initialized)"),
        "ok={ok}\n{stdout}\n{stderr}"
    );
}
