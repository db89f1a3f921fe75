//! The simulator's series, scraped by the real local Prometheus, answer SPEC's builtin
//! Linkerd queries with the success rate and latency each version was told to have.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use serin::simulate::{Backend, Behaviour, Simulator};

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
    let selector = |target: &str| format!("namespace=\"{ns}\",deployment=~\"{target}\"");
    support::wait_for_scrapes(&format!(
        "response_total{{{},classification=\"success\"}}",
        selector("web")
    ))
    .await;

    // The queries exactly as SPEC "Metrics" writes them, with a 5 s window.
    let success_rate = |target: &str| {
        format!(
            "sum(rate(response_total{{{s},classification!=\"failure\",direction=\"inbound\"}}[5s])) / \
             sum(rate(response_total{{{s},direction=\"inbound\"}}[5s])) * 100",
            s = selector(target)
        )
    };
    let latency = |target: &str| {
        format!(
            "histogram_quantile(0.99, sum(rate(response_latency_ms_bucket{{{},direction=\"inbound\"}}[5s])) by (le))",
            selector(target)
        )
    };
    let read = |query: String| async move {
        support::prometheus_query(&query)
            .await
            .expect("query runs")
            .unwrap_or_else(|| panic!("no sample for {query}"))
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
