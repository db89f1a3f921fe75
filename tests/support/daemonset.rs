//! The sample DaemonSet `agent` of the DaemonSet e2e tests, and readers of what kubectl shows
//! of a DaemonSet: one opt-in shared by `tests/e2e_daemonset.rs` and `tests/e2e_protection.rs`.

use std::time::Duration;

use kube::Client;
use serin::release::Phase;

use super::release::{Version, apply, manifest as deployment_manifest, wait_phase};
use super::{kubectl, wait_until};

pub(crate) const SETTLE: Duration = Duration::from_secs(60);

/// The sample manifest as a DaemonSet `name` with a node selector of the user's and the
/// `extra` annotations (which override the defaults of [`deployment_manifest`]).
pub(crate) fn manifest_named(
    ns: &str,
    name: &str,
    version: &Version,
    extra: &[(&str, &str)],
) -> String {
    deployment_manifest(ns, name, version, extra)
        .replace("kind: Deployment", "kind: DaemonSet")
        .replace("  replicas: 2\n", "")
        .replace(
            "    spec:\n      containers:",
            "    spec:\n      nodeSelector: {kubernetes.io/os: linux}\n      containers:",
        )
}

/// [`manifest_named`] for `agent`.
pub(crate) fn manifest(ns: &str, version: &Version, extra: &[(&str, &str)]) -> String {
    manifest_named(ns, "agent", version, extra)
}

/// A field of a DaemonSet by kubectl's JSONPath (empty when it has none).
pub(crate) fn field(ns: &str, name: &str, path: &str) -> String {
    let path = format!("jsonpath={path}");
    let (ok, stdout, stderr) = kubectl(&["-n", ns, "get", "daemonset", name, "-o", &path], None);
    assert!(ok, "kubectl get daemonset {name}: {stderr}");
    stdout
}

pub(crate) fn image(ns: &str, name: &str) -> String {
    field(ns, name, "{.spec.template.spec.containers[0].image}")
}

pub(crate) fn node_selector(ns: &str, name: &str) -> serde_json::Value {
    let text = field(ns, name, "{.spec.template.spec.nodeSelector}");
    serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)
}

fn count(ns: &str, name: &str, status: &str) -> i64 {
    field(ns, name, &format!("{{.status.{status}}}"))
        .parse()
        .unwrap_or(0)
}

pub(crate) fn ready_on_nodes(ns: &str, name: &str) -> i64 {
    count(ns, name, "numberReady")
}

pub(crate) fn scheduled_on_nodes(ns: &str, name: &str) -> i64 {
    count(ns, name, "desiredNumberScheduled")
}

/// Opts `agent` in at version 1 with the `extra` annotations and waits until its primary
/// serves on the node and its canary idles.
pub(crate) async fn opt_in(client: &Client, ns: &str, extra: &[(&str, &str)]) {
    apply(&manifest(ns, &Version::good("1"), extra));
    wait_opted_in(client, ns).await;
}

/// Waits until `agent` is Initialized, its primary Ready on its node and its canary idle.
pub(crate) async fn wait_opted_in(client: &Client, ns: &str) {
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
pub(crate) fn assert_idle(ns: &str) {
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
