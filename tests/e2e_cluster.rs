//! The local environment itself: a real control plane where Deployments roll out, the
//! built kubectl, and a Prometheus that scrapes every second.

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::Api;
use kube::api::{ListParams, PostParams};
use support::{TestNamespace, wait_until};

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn deployment_becomes_available_with_three_ready_pods() {
    let client = support::client().await;
    let ns = TestNamespace::create(&client, "rollout").await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    deployments
        .create(
            &PostParams::default(),
            &support::typed_deployment("web", 3, &[]),
        )
        .await
        .expect("create Deployment");

    wait_until(
        "Deployment web Available with 3 ready replicas",
        Duration::from_secs(60),
        || async {
            let d = deployments.get("web").await.map_err(|e| e.to_string())?;
            let status = d.status.unwrap_or_default();
            let available = status
                .conditions
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Available" && c.status == "True");
            match (available, status.ready_replicas) {
                (true, Some(3)) => Ok(()),
                other => Err(format!("(available, readyReplicas) = {other:?}")),
            }
        },
    )
    .await;

    let pods: Api<Pod> = Api::namespaced(client, &ns.name);
    let list = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .expect("list pods");
    let ready = list
        .items
        .iter()
        .filter(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .count();
    assert_eq!(list.items.len(), 3, "pods: {:?}", list.items.len());
    assert_eq!(ready, 3, "every pod is Ready");
    for pod in &list.items {
        let node = pod.spec.as_ref().and_then(|s| s.node_name.as_deref());
        assert_eq!(
            node,
            Some("kwok-node-0"),
            "pods are scheduled onto the fake node"
        );
    }
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn built_kubectl_reads_readyz_and_applies_manifests() {
    let client = support::client().await;
    let ns = TestNamespace::create(&client, "kubectl").await;

    let (ok, out, err) = support::kubectl(&["get", "--raw", "/readyz"], None);
    assert!(ok, "kubectl get --raw /readyz failed: {err}");
    assert_eq!(out.trim(), "ok");

    let (ok, out, err) = support::kubectl(&["version", "-o", "json"], None);
    assert!(ok, "kubectl version failed: {err}");
    let version: serde_json::Value = serde_json::from_str(&out).expect("version JSON");
    let client_minor = version["clientVersion"]["minor"]
        .as_str()
        .unwrap_or_default();
    let server_minor = version["serverVersion"]["minor"]
        .as_str()
        .unwrap_or_default();
    assert!(
        !client_minor.is_empty(),
        "kubectl reports a stamped version: {out}"
    );
    assert_eq!(
        client_minor, server_minor,
        "kubectl and the API server are the same minor"
    );

    let manifest = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  namespace: {}\ndata:\n  color: blue\n",
        ns.name
    );
    let (ok, out, err) = support::kubectl(&["apply", "-f", "-"], Some(&manifest));
    assert!(ok, "kubectl apply failed: {err}");
    assert!(
        out.contains("configmap/settings created"),
        "apply output: {out}"
    );

    let configmaps: Api<ConfigMap> = Api::namespaced(client, &ns.name);
    let cm = configmaps.get("settings").await.expect("ConfigMap exists");
    let color = cm.data.unwrap_or_default().get("color").cloned();
    assert_eq!(color.as_deref(), Some("blue"));
}

/// A counter that grows at exactly 10 per second of wall-clock time, so any `rate()` over it
/// must read 10 regardless of when Prometheus scrapes.
fn counter_exporter(test_id: &str) -> axum::Router {
    let started = Instant::now();
    let test_id = test_id.to_string();
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let value = started.elapsed().as_secs_f64() * 10.0;
            let body = format!(
                "# TYPE serin_e2e_requests counter\nserin_e2e_requests_total{{test=\"{test_id}\"}} {value}\n"
            );
            async move { body }
        }),
    )
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn prometheus_scrapes_an_exporter_and_computes_its_rate() {
    let (test_id, _target) = support::serve_scraped("rate", counter_exporter).await;
    let series = format!("serin_e2e_requests_total{{test=\"{test_id}\"}}");
    support::wait_for_scrapes(&series).await;
    let query = format!("rate({series}[5s])");
    let rate = support::prometheus_query(&query)
        .await
        .expect("query succeeds")
        .unwrap_or_else(|| panic!("{query} returned no sample"));
    assert!(
        (9.0..=11.0).contains(&rate),
        "rate() over a counter growing 10/s read back as {rate}"
    );
}
