//! The simulator's series, scraped by the real local Prometheus, answer Serin's builtin
//! Linkerd queries (SPEC "Metrics"), asked by Serin's Prometheus client, with the success rate
//! and latency each version was told to have.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use serin::metrics::{Builtin, PrometheusClient};
use serin::simulate::{Backend, Behaviour, Simulator};
use serin::spec::Duration;

fn backends(ns: &str) -> Vec<Backend> {
    vec![
        Backend {
            namespace: ns.into(),
            deployment: "web-primary".into(),
            weight: 90,
            behaviour: Behaviour {
                error_rate: 0.0,
                latency_ms: 40.0,
            },
        },
        Backend {
            namespace: ns.into(),
            deployment: "web".into(),
            weight: 10,
            behaviour: Behaviour {
                error_rate: 0.2,
                latency_ms: 700.0,
            },
        },
    ]
}

/// The simulator behind `/metrics`, advanced by the real time elapsed since the previous
/// scrape. `ns` is the namespace label, unique per run.
fn simulator(ns: &str) -> axum::Router {
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
async fn builtin_linkerd_queries_read_back_the_simulated_success_rate_and_latency() {
    // The namespace label is the run's own, keeping these series apart from other runs.
    let (ns, _target) = support::serve_scraped("sim", simulator).await;
    support::wait_for_scrapes(&format!(
        "response_total{{namespace=\"{ns}\",deployment=\"web\",classification=\"success\"}}"
    ))
    .await;

    // Serin's own builtin queries (unit-tested to be SPEC "Metrics" text) through Serin's own
    // Prometheus client, with a 5 s window.
    let prometheus = PrometheusClient::new(
        serin::http::client().expect("http client"),
        support::prometheus_url(),
    );
    let window = Duration::from_secs(5);
    let success_rate = |target: &str| Builtin::SuccessRate.query(&ns, target, window);
    let latency = |target: &str| Builtin::Duration.query(&ns, target, window);
    let read = |query: String| {
        let prometheus = &prometheus;
        async move {
            prometheus
                .query(None, &query)
                .await
                .expect("query runs")
                .unwrap_or_else(|| panic!("no sample for {query}"))
        }
    };
    let canary_rate = read(success_rate("web")).await;
    let primary_rate = read(success_rate("web-primary")).await;
    assert!(
        (canary_rate - 80.0).abs() < 0.01,
        "canary success rate {canary_rate}"
    );
    assert!(
        (primary_rate - 100.0).abs() < 0.01,
        "primary success rate {primary_rate}"
    );
    let canary_p99 = read(latency("web")).await;
    let primary_p99 = read(latency("web-primary")).await;
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
