//! DaemonSet releases on the local cluster (kwok's fake node runs the pods; the traffic
//! simulator gives DaemonSet versions traffic as it does Deployments): a DaemonSet opts in by
//! the same annotations, gets a `-primary` DaemonSet, keeps its canary off every node between
//! releases with the node-selector entry `serin.dev/idle`, and is promoted or rolled back on
//! the same checks.

mod support;

use std::time::Duration;

use kube::Client;
use serin::release::Phase;
use support::release::{Version, apply, manifest, wait_phase};
use support::{kubectl, wait_until};

const SETTLE: Duration = Duration::from_secs(60);
const RELEASE: Duration = Duration::from_secs(150);

/// The sample manifest as a DaemonSet `agent` with a node selector of the user's.
fn daemonset(ns: &str, version: &Version) -> String {
    let deployment = manifest(ns, "agent", version, &[]);
    deployment
        .replace("kind: Deployment", "kind: DaemonSet")
        .replace("  replicas: 2\n", "")
        .replace(
            "    spec:\n      containers:",
            "    spec:\n      nodeSelector: {kubernetes.io/os: linux}\n      containers:",
        )
}

/// A field of a DaemonSet by kubectl's JSONPath (empty when it has none).
fn field(ns: &str, name: &str, path: &str) -> String {
    let path = format!("jsonpath={path}");
    let (ok, stdout, stderr) = kubectl(&["-n", ns, "get", "daemonset", name, "-o", &path], None);
    assert!(ok, "kubectl get daemonset {name}: {stderr}");
    stdout
}

fn image(ns: &str, name: &str) -> String {
    field(ns, name, "{.spec.template.spec.containers[0].image}")
}

fn node_selector(ns: &str, name: &str) -> serde_json::Value {
    let text = field(ns, name, "{.spec.template.spec.nodeSelector}");
    serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)
}

fn ready_on_nodes(ns: &str, name: &str) -> i64 {
    field(ns, name, "{.status.numberReady}")
        .parse()
        .unwrap_or(0)
}

/// Opts `agent` in at version 1 and waits until its primary serves on the node.
async fn opt_in(client: &Client, ns: &str) {
    apply(&daemonset(ns, &Version::good("1")));
    wait_phase(client, ns, "agent", Phase::Initialized, SETTLE).await;
    wait_until("agent-primary Ready on its node", SETTLE, || async {
        match ready_on_nodes(ns, "agent-primary") {
            n if n >= 1 => Ok(()),
            n => Err(format!("{n} Ready")),
        }
    })
    .await;
    assert_idle(ns);
}

/// The canary is off every node by Serin's switch alone; the user's entry stays.
fn assert_idle(ns: &str) {
    assert_eq!(
        node_selector(ns, "agent"),
        serde_json::json!({"kubernetes.io/os": "linux", "serin.dev/idle": "true"})
    );
    assert_eq!(
        node_selector(ns, "agent-primary"),
        serde_json::json!({"kubernetes.io/os": "linux"}),
        "the primary never carries the switch"
    );
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn a_good_daemonset_release_is_promoted_and_its_canary_idles_again() {
    let (client, ns) = support::release_namespace("ds-good").await;
    let ns = &ns.name;
    opt_in(&client, ns).await;
    assert!(image(ns, "agent-primary").ends_with(":1"));

    apply(&daemonset(ns, &Version::good("2")));
    wait_phase(&client, ns, "agent", Phase::Progressing, SETTLE).await;
    wait_phase(&client, ns, "agent", Phase::Succeeded, RELEASE).await;
    assert!(image(ns, "agent-primary").ends_with(":2"));
    wait_until("the canary idle again", SETTLE, || async {
        match ready_on_nodes(ns, "agent") {
            0 => Ok(()),
            n => Err(format!("{n} canary pods Ready")),
        }
    })
    .await;
    assert_idle(ns);
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn a_bad_daemonset_release_is_rolled_back_and_its_primary_left_alone() {
    let (client, ns) = support::release_namespace("ds-bad").await;
    let ns = &ns.name;
    opt_in(&client, ns).await;

    let broken = Version {
        error_rate: 0.5,
        ..Version::good("2")
    };
    apply(&daemonset(ns, &broken));
    wait_phase(&client, ns, "agent", Phase::Failed, RELEASE).await;
    assert!(
        image(ns, "agent-primary").ends_with(":1"),
        "primary untouched"
    );
    assert!(ready_on_nodes(ns, "agent-primary") >= 1);
    wait_until("the canary idle after the rollback", SETTLE, || async {
        match ready_on_nodes(ns, "agent") {
            0 => Ok(()),
            n => Err(format!("{n} canary pods Ready")),
        }
    })
    .await;
    assert_idle(ns);
}

/// The users' road: `kubectl set image` on the opted-in DaemonSet starts a release, and the
/// primary keeps its pod on the node throughout.
#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn kubectl_set_image_starts_a_release_and_never_takes_the_primary_off_its_nodes() {
    let (client, ns) = support::release_namespace("ds-set-image").await;
    let ns = &ns.name;
    opt_in(&client, ns).await;

    let (ok, _, stderr) = kubectl(
        &[
            "-n",
            ns,
            "set",
            "image",
            "daemonset/agent",
            "app=example.invalid/agent:3",
        ],
        None,
    );
    assert!(ok, "kubectl set image: {stderr}");
    let deadline = tokio::time::Instant::now() + RELEASE;
    let mut seen_progressing = false;
    loop {
        let status = support::release::release_status(&client, ns, "agent").await;
        assert!(
            ready_on_nodes(ns, "agent-primary") >= 1,
            "the primary left its node during the release (phase {:?})",
            status.phase
        );
        seen_progressing |= status.phase == Phase::Progressing;
        if status.phase == Phase::Succeeded && seen_progressing {
            break;
        }
        assert!(
            status.phase != Phase::Failed,
            "the release failed: {status:?}"
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "no promotion in {RELEASE:?}: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(image(ns, "agent-primary"), "example.invalid/agent:3");
    assert_idle(ns);
}
