//! The traffic simulator, end to end on the real local environment.
//!
//! First its core: the series, scraped by the real local Prometheus, answer SPEC's builtin
//! Linkerd queries with the success rate and latency each version was told to have. Then the
//! whole path as `make up` runs it (`hack/simulator.sh`, `serin simulate`): a TrafficSplit
//! built by `serin::router` and two Deployments in the API server become traffic whose success
//! rate and request rate follow the weights, each version's pod template annotations and its
//! readiness.

mod support;

const WINDOW: serin::spec::Duration = serin::spec::Duration::from_secs(5);

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Patch, PatchParams, PostParams};
use kube::core::DynamicObject;
use kube::{Api, Client};
use serin::devtools::simulate::{Backend, Behaviour, ERROR_RATE, Simulator};
use serin::router::{Weights, router_for};
use serin::spec::Builtin;
use serin::spec::{CanarySpec, Provider};
use support::{TestNamespace, wait_until};

/// Serin's builtin success rate (percent) for `target` in `ns`, over 5 s.
fn success_rate(ns: &str, target: &str) -> String {
    Builtin::SuccessRate.query(ns, target, WINDOW)
}

/// Serin's builtin p99 latency (ms) for `target` in `ns`, over 5 s.
fn latency(ns: &str, target: &str) -> String {
    Builtin::Duration.query(ns, target, WINDOW)
}

/// Inbound requests per second of `target` in `ns`, over 5 s.
fn request_rate(ns: &str, target: &str) -> String {
    format!(
        "sum(rate(response_total{{namespace=\"{ns}\",deployment=~\"{target}\",direction=\"inbound\"}}[5s]))"
    )
}

/// The value of an instant query; panics when it has no sample.
async fn read(query: String) -> f64 {
    support::prometheus_query(&query)
        .await
        .expect("query runs")
        .unwrap_or_else(|| panic!("no sample for {query}"))
}

fn backends(ns: &str) -> Vec<Backend> {
    vec![
        Backend {
            namespace: ns.into(),
            deployment: "web-primary".into(),
            weight: 90,
            behaviour: Behaviour {
                error_rate: 0.0,
                latency_ms: 40.0,
                noise_seed: None,
            },
        },
        Backend {
            namespace: ns.into(),
            deployment: "web".into(),
            weight: 10,
            behaviour: Behaviour {
                error_rate: 0.2,
                latency_ms: 700.0,
                noise_seed: None,
            },
        },
    ]
}

/// The simulator behind `/metrics`, advanced by the real time elapsed since the previous
/// scrape. `ns` is the namespace label, unique per run.
fn exporter(ns: &str) -> axum::Router {
    let state = Arc::new(Mutex::new((Simulator::new(50.0), Instant::now())));
    let ns = ns.to_string();
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let state = state.clone();
            let backends = backends(&ns);
            async move {
                let mut guard = state.lock().expect("simulator lock");
                let (sim, last) = &mut *guard;
                sim.advance(last.elapsed(), &backends);
                *last = Instant::now();
                sim.render()
            }
        }),
    )
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn builtin_linkerd_queries_read_back_the_simulated_success_rate_and_latency() {
    // The namespace label is the run's own, keeping these series apart from other runs.
    let (ns, _target) = support::serve_scraped("sim", exporter).await;
    support::wait_for_scrapes(&format!(
        "response_total{{namespace=\"{ns}\",deployment=\"web\",classification=\"success\"}}"
    ))
    .await;

    // The queries exactly as SPEC "Metrics" writes them, with a 5 s window.
    let canary_rate = read(success_rate(&ns, "web")).await;
    let primary_rate = read(success_rate(&ns, "web-primary")).await;
    assert!(
        (canary_rate - 80.0).abs() < 0.01,
        "canary success rate {canary_rate}"
    );
    assert!(
        (primary_rate - 100.0).abs() < 0.01,
        "primary success rate {primary_rate}"
    );
    let canary_p99 = read(latency(&ns, "web")).await;
    let primary_p99 = read(latency(&ns, "web-primary")).await;
    // histogram_quantile interpolates inside the bucket holding the latency.
    assert!(
        (500.0..=1000.0).contains(&canary_p99),
        "canary p99 {canary_p99}"
    );
    assert!(
        (30.0..=40.0).contains(&primary_p99),
        "primary p99 {primary_p99}"
    );
}

/// Waits until Deployment `name` reports `ready` ready replicas.
async fn wait_ready(deployments: &Api<Deployment>, name: &str, ready: i32) {
    wait_until(
        &format!("Deployment {name} with {ready} ready replicas"),
        Duration::from_secs(60),
        || async {
            let d = deployments.get(name).await.map_err(|e| e.to_string())?;
            let seen = d.status.and_then(|s| s.ready_replicas).unwrap_or(0);
            if seen == ready {
                Ok(())
            } else {
                Err(format!("readyReplicas {seen}"))
            }
        },
    )
    .await;
}

/// The Linkerd router (TrafficSplit `split.smi-spec.io/v1alpha1`) and its objects in `ns`.
/// The CRD must be installed (`make up` does it); the test says so rather than install it.
async fn traffic_splits(client: &Client, ns: &str) -> Api<DynamicObject> {
    let router = router_for(Provider::Linkerd);
    let resource = router.api_resource();
    let splits = Api::namespaced_with(client.clone(), ns, &resource);
    if let Err(e) = splits.list(&Default::default()).await {
        panic!(
            "cannot list TrafficSplits ({}): is the CRD trafficsplits.split.smi-spec.io \
             installed? `make up` installs it. {e}",
            resource.api_version
        );
    }
    splits
}

/// Routes `canary` percent of Deployment `owner`'s traffic to it, the rest to its primary:
/// the TrafficSplit Serin builds (apex Service `web`), applied as Serin would.
async fn route(splits: &Api<DynamicObject>, owner: &Deployment, canary: u32) {
    let router = router_for(Provider::Linkerd);
    let spec = CanarySpec::defaults("web".into(), None);
    let split = router
        .build(owner, &spec, Weights::to_canary(canary))
        .expect("TrafficSplit builds");
    splits
        .patch(
            "web",
            &PatchParams::apply("serin-e2e").force(),
            &Patch::Apply(&split),
        )
        .await
        .expect("apply TrafficSplit web");
}

/// Waits until `query` reads within `range`.
async fn wait_for_value(query: String, range: std::ops::RangeInclusive<f64>) -> f64 {
    wait_until(
        &format!("{query} in {range:?}"),
        Duration::from_secs(45),
        || async {
            match support::prometheus_query(&query).await? {
                Some(v) if range.contains(&v) => Ok(v),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await
}

/// `web` (30% errors) and `web-primary` (healthy), each of `replicas` pods, ready.
async fn two_versions(
    client: &Client,
    ns: &str,
    replicas: (i32, i32),
) -> (Api<Deployment>, Deployment) {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let canary = deployments
        .create(
            &PostParams::default(),
            &support::typed_deployment("web", replicas.0, &[(ERROR_RATE, "0.3")]),
        )
        .await
        .expect("create Deployment web");
    deployments
        .create(
            &PostParams::default(),
            &support::typed_deployment("web-primary", replicas.1, &[]),
        )
        .await
        .expect("create Deployment web-primary");
    wait_ready(&deployments, "web", replicas.0).await;
    wait_ready(&deployments, "web-primary", replicas.1).await;
    (deployments, canary)
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn simulated_traffic_follows_the_traffic_split_and_each_versions_error_rate() {
    support::simulator();
    let client = support::client().await;
    let ns = TestNamespace::create(&client, "simulate").await;
    let splits = traffic_splits(&client, &ns.name).await;
    let (_, canary) = two_versions(&client, &ns.name, (1, 1)).await;

    route(&splits, &canary, 50).await;
    support::wait_for_scrapes(&format!(
        "response_total{{namespace=\"{}\",deployment=\"web\",classification=\"success\"}}",
        ns.name
    ))
    .await;
    // 50 requests per second (the simulator's default), half to each version.
    let canary_success = read(success_rate(&ns.name, "web")).await;
    let primary_success = read(success_rate(&ns.name, "web-primary")).await;
    assert!(
        (canary_success - 70.0).abs() < 1.0,
        "canary (error rate 0.3) success rate {canary_success}"
    );
    assert!(
        (primary_success - 100.0).abs() < 0.01,
        "primary success rate {primary_success}"
    );
    for target in ["web", "web-primary"] {
        let rate = read(request_rate(&ns.name, target)).await;
        assert!((22.5..=27.5).contains(&rate), "{target}: {rate} requests/s");
    }

    // Everything back to the primary: the canary's requests stop, the primary gets them all.
    route(&splits, &canary, 0).await;
    wait_for_value(request_rate(&ns.name, "web"), 0.0..=0.0).await;
    wait_for_value(request_rate(&ns.name, "web-primary"), 45.0..=55.0).await;
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn a_version_without_ready_pods_gets_no_traffic_until_it_has_some() {
    support::simulator();
    let client = support::client().await;
    let ns = TestNamespace::create(&client, "simulate-ready").await;
    let splits = traffic_splits(&client, &ns.name).await;
    let (deployments, canary) = two_versions(&client, &ns.name, (0, 1)).await;

    route(&splits, &canary, 50).await;
    support::wait_for_scrapes(&format!(
        "response_total{{namespace=\"{}\",deployment=\"web-primary\",classification=\"success\"}}",
        ns.name
    ))
    .await;
    // The canary's half is dropped, as a mesh fails requests to a Service without endpoints;
    // the primary keeps its own half only.
    assert_eq!(read(request_rate(&ns.name, "web")).await, 0.0);
    let primary = read(request_rate(&ns.name, "web-primary")).await;
    assert!(
        (22.5..=27.5).contains(&primary),
        "primary: {primary} requests/s"
    );

    deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"replicas": 1}})),
        )
        .await
        .expect("scale web to 1");
    wait_for_value(request_rate(&ns.name, "web"), 22.5..=27.5).await;
}
