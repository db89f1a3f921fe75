//! Helpers for the release e2e tests: an annotated Deployment applied with kubectl as a user
//! would, and readers for what Serin made of it (Canary status, TrafficSplit weights, Events).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::events::v1::Event;
use kube::api::ListParams;
use kube::core::DynamicObject;
use kube::{Api, Client};
use serin::crd::Canary;
use serin::release::{Phase, ReleaseStatus};
use serin::router::{Weights, router_for};
use serin::spec::{CanarySpec, Provider};

use super::{kubectl, wait_until};

/// One version of the sample app: its image tag and how the simulator makes it behave.
#[derive(Clone, Debug)]
pub(crate) struct Version {
    pub tag: &'static str,
    pub error_rate: f64,
    pub latency_ms: u32,
}

impl Version {
    pub(crate) const fn good(tag: &'static str) -> Self {
        Self {
            tag,
            error_rate: 0.0,
            latency_ms: 40,
        }
    }
}

/// The sample Deployment `name` in `namespace`, opted in with short intervals and the
/// `extra` annotations (which override the defaults here).
pub(crate) fn manifest(
    namespace: &str,
    name: &str,
    version: &Version,
    extra: &[(&str, &str)],
) -> String {
    let mut annotations: BTreeMap<&str, &str> = [
        ("serin.dev/enabled", "true"),
        ("serin.dev/interval", "2s"),
        ("serin.dev/threshold", "3"),
        ("serin.dev/step-weight", "25"),
        ("serin.dev/max-weight", "50"),
        ("serin.dev/metrics-window", "5s"),
        // These tests state Flagger's semantics (one check per interval, `threshold`
        // failures, CheckFailed Events); `tests/e2e_sequential.rs` sets "true".
        ("serin.dev/sequential-checks", "false"),
    ]
    .into();
    annotations.extend(extra.iter().copied());
    let annotations: String = annotations
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("    {k}: {v:?}\n"))
        .collect();
    let annotations = match annotations.is_empty() {
        true => String::new(),
        false => format!("  annotations:\n{annotations}"),
    };
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  namespace: {namespace}
{annotations}spec:
  replicas: 2
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata:
      labels: {{app: {name}}}
      annotations:
        simulate.serin.dev/error-rate: "{error}"
        simulate.serin.dev/latency-ms: "{latency}"
    spec:
      containers:
      - name: app
        image: example.invalid/{name}:{tag}
        ports: [{{containerPort: 8080}}]
"#,
        error = version.error_rate,
        latency = version.latency_ms,
        tag = version.tag,
    )
}

/// ConfigMap `name` in `namespace` holding `key: value`.
pub(crate) fn config_map(namespace: &str, name: &str, key: &str, value: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: {namespace}}}\ndata: {{{key}: {value}}}\n"
    )
}

/// A [`manifest`] (of either kind) whose container reads its environment from ConfigMap
/// `config`: a tracked config.
pub(crate) fn reading_config(manifest: &str, config: &str) -> String {
    manifest.replace(
        "        ports: [{containerPort: 8080}]\n",
        &format!(
            "        ports: [{{containerPort: 8080}}]\n        envFrom: [{{configMapRef: {{name: {config}}}}}]\n"
        ),
    )
}

/// `kubectl apply` of a manifest; panics with kubectl's output on failure.
pub(crate) fn apply(manifest: &str) {
    let (ok, stdout, stderr) = kubectl(&["apply", "-f", "-"], Some(manifest));
    assert!(ok, "kubectl apply failed:\n{stdout}\n{stderr}");
}

pub(crate) async fn canary(client: &Client, ns: &str, name: &str) -> Option<Canary> {
    Api::<Canary>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .expect("read Canary")
}

/// The release part of the Canary `name`'s status; the default when there is none yet.
pub(crate) async fn release_status(client: &Client, ns: &str, name: &str) -> ReleaseStatus {
    canary(client, ns, name)
        .await
        .and_then(|c| c.status)
        .map(|s| s.release)
        .unwrap_or_default()
}

fn describe(canary: &Option<Canary>) -> String {
    match canary.as_ref().and_then(|c| c.status.as_ref()) {
        Some(s) => format!(
            "phase {:?}, weight {}, failed checks {}, revision {:?}",
            s.release.phase, s.release.canary_weight, s.release.failed_checks, s.release.revision
        ),
        None => "no Canary status".into(),
    }
}

/// Waits until the Canary is in `phase`; panics after `timeout` with the last status seen.
pub(crate) async fn wait_phase(
    client: &Client,
    ns: &str,
    name: &str,
    phase: Phase,
    timeout: Duration,
) -> Canary {
    wait_until(
        &format!("Canary {ns}/{name} to be {phase:?}"),
        timeout,
        || async {
            let canary = canary(client, ns, name).await;
            match canary.as_ref().and_then(|c| c.status.as_ref()) {
                Some(s) if s.release.phase == phase => Ok(canary.clone().expect("read above")),
                _ => Err(describe(&canary)),
            }
        },
    )
    .await
}

/// The weights of the TrafficSplit `service` as stored.
pub(crate) async fn weights(client: &Client, ns: &str, service: &str) -> Option<Weights> {
    let router = router_for(Provider::Linkerd);
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &router.api_resource());
    let object = api.get_opt(service).await.expect("read TrafficSplit")?;
    let spec = CanarySpec::defaults(service.to_owned(), None);
    router.weights(&object, &spec).ok()
}

pub(crate) async fn deployment(client: &Client, ns: &str, name: &str) -> Option<Deployment> {
    Api::<Deployment>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .expect("read Deployment")
}

/// The image of a Deployment's first container.
pub(crate) async fn image(client: &Client, ns: &str, name: &str) -> String {
    deployment(client, ns, name)
        .await
        .and_then(|d| d.spec)
        .and_then(|s| s.template.spec)
        .and_then(|p| p.containers.into_iter().next())
        .and_then(|c| c.image)
        .unwrap_or_default()
}

pub(crate) async fn replicas(client: &Client, ns: &str, name: &str) -> Option<i32> {
    deployment(client, ns, name)
        .await
        .and_then(|d| d.spec)
        .and_then(|s| s.replicas)
}

/// `reason: note` of every Event about the Deployment `name`, oldest first (Serin records
/// each on the Canary of the same name too).
pub(crate) async fn events(client: &Client, ns: &str, name: &str) -> Vec<String> {
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    let mut events: Vec<Event> = api
        .list(&ListParams::default())
        .await
        .expect("list Events")
        .items
        .into_iter()
        .filter(|e| {
            e.regarding.as_ref().is_some_and(|r| {
                r.name.as_deref() == Some(name) && r.kind.as_deref() == Some("Deployment")
            })
        })
        .collect();
    events.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0));
    events
        .into_iter()
        .map(|e| {
            format!(
                "{}: {}",
                e.reason.unwrap_or_default(),
                e.note.unwrap_or_default()
            )
        })
        .collect()
}

/// Polls the canary weight `read` returns every 250 ms until the Canary `web` reaches
/// `phase`; returns the weights seen, each change once, in order. Panics after `timeout`, or
/// when the release ends in the other phase, with what it saw.
pub(crate) async fn weights_until<F, Fut>(
    client: &Client,
    ns: &str,
    phase: Phase,
    timeout: Duration,
    mut read: F,
) -> Vec<u32>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<u32>>,
{
    let start = std::time::Instant::now();
    let mut seen: Vec<u32> = Vec::new();
    loop {
        if let Some(w) = read().await
            && seen.last() != Some(&w)
        {
            seen.push(w);
        }
        let status = canary(client, ns, "web").await.and_then(|c| c.status);
        let current = status.as_ref().map(|s| s.release.phase);
        let ended = matches!(current, Some(Phase::Succeeded | Phase::Failed));
        assert!(
            !ended || current == Some(phase),
            "the release ended {current:?}, not {phase:?}; weights seen {seen:?}"
        );
        if current == Some(phase) {
            // The last write of the release (weights back to the primary) precedes the phase.
            if let Some(w) = read().await
                && seen.last() != Some(&w)
            {
                seen.push(w);
            }
            return seen;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {phase:?}; phase {current:?}, weights seen {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The names and values of the last checks in the Canary's status.
pub(crate) async fn last_checks(
    client: &Client,
    ns: &str,
    name: &str,
) -> Vec<(String, Option<f64>)> {
    canary(client, ns, name)
        .await
        .and_then(|c| c.status)
        .map(|s| {
            s.release
                .last_checks
                .into_iter()
                .map(|c| (c.name, c.value))
                .collect()
        })
        .unwrap_or_default()
}
