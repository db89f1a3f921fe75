//! The strategies besides the canary, and the webhooks every strategy has, on the real local
//! cluster (Serin, the traffic simulator and Prometheus as `make up` runs them; 2 s
//! intervals):
//! - A/B testing through a Gateway API HTTPRoute: only the requests that match reach the
//!   canary, which Prometheus shows as the simulator's matching share, not a weight share;
//! - Blue/Green: no user traffic to the canary until the switch, then all of it;
//! - a `rollback` webhook answering 200 rolls the release back, during the analysis or while
//!   it waits at a closed `confirm-rollout` gate (asked once per interval there too);
//! - `event` webhooks receive the Events Serin records, with Flagger's payload.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use serde_json::{Value, json};
use serin::release::Phase;
use serin::router::Weights;
use serin::spec::Provider;
use support::release::{
    Version, apply, events, image, manifest, release_status, replicas, wait_phase,
};
use support::scenarios::{Release, Route, opt_in};
use support::{prometheus_value, routes, wait_until};

const SETTLE: Duration = Duration::from_secs(60);
/// Long enough for a release of 2 s intervals with a few failed checks.
const RELEASE: Duration = Duration::from_secs(150);

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn ab_testing_through_the_gateway_api_rolls_a_failing_canary_back_and_stops_matching() {
    let release = Release::for_ab(Route::GATEWAY_API, "ab-fail").await;
    release.ab_is_rolled_back().await;
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn ab_testing_sends_only_the_matching_requests_to_the_canary_then_promotes_it() {
    let release = Release::for_ab(Route::GATEWAY_API, "ab").await;
    let ns = release.ns();
    let route = release.starts_ab_analysis().await;
    let rules = route
        .data
        .pointer("/spec/rules")
        .cloned()
        .unwrap_or_default();
    // (name, weight) of a rule's backendRefs.
    let backends = |rule: &Value| -> Vec<(String, u64)> {
        rule["backendRefs"]
            .as_array()
            .map(|refs| {
                refs.iter()
                    .map(|r| {
                        let name = r["name"].as_str().unwrap_or_default().to_owned();
                        (name, r["weight"].as_u64().unwrap_or(1))
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let expected = |primary: u64, canary: u64| {
        vec![
            ("web-primary".to_owned(), primary),
            ("web-canary".to_owned(), canary),
        ]
    };
    let headers: Vec<Value> = rules[0]["matches"]
        .as_array()
        .map(|m| m.iter().map(|m| m["headers"][0].clone()).collect())
        .unwrap_or_default();
    assert_eq!(
        headers,
        [
            json!({"type": "Exact", "name": "x-canary", "value": "insider"}),
            json!({"type": "RegularExpression", "name": "Cookie", "value": r"^(.*;\s*)?canary=.*$"}),
        ],
        "the A/B rule: {rules:#}"
    );
    assert_eq!(backends(&rules[0]), expected(0, 100), "matching: {rules:#}");
    assert_eq!(backends(&rules[1]), expected(100, 0), "the rest: {rules:#}");
    assert_eq!(rules.as_array().map(Vec::len), Some(2), "{rules:#}");

    // Prometheus: over a window where the route was as above, the canary served the share of
    // requests the simulator takes to match, not what a weight of 100 would give (all).
    let share = format!(
        "sum(rate(response_total{{namespace=\"{ns}\",deployment=\"web\",direction=\"inbound\"}}[4s])) \
         / sum(rate(response_total{{namespace=\"{ns}\",direction=\"inbound\"}}[4s]))"
    );
    release
        .assert_canary_serves_the_matching_share(|| async { (prometheus_value(&share).await, ()) })
        .await;
    release.is_promoted_after_6_iterations().await;
    release
        .assert_events_contain(&["Iteration 5/6 passed"])
        .await;
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn blue_green_gives_the_canary_no_user_traffic_until_the_switch_then_all_of_it() {
    let (client, ns) = support::release_namespace("bluegreen").await;
    let ns = &ns.name;
    let annotations = [("serin.dev/iterations", "3")];
    // kwok makes pods Ready at once, so the primary's rollout, which the switch lasts, would
    // take a tenth of a second; new pods that count as available only after 3 s make it
    // last long enough for the test and Prometheus to see the switch.
    let slow = |manifest: String| {
        manifest.replacen(
            "spec:\n  replicas: 2",
            "spec:\n  minReadySeconds: 3\n  replicas: 2",
            1,
        )
    };
    apply(&slow(manifest(
        ns,
        "web",
        &Version::good("v1"),
        &annotations,
    )));
    wait_phase(&client, ns, "web", Phase::Initialized, SETTLE).await;
    assert_eq!(
        routes::weights(&client, ns, Provider::Linkerd, "web").await,
        Some(Weights::ALL_PRIMARY)
    );
    apply(&slow(manifest(
        ns,
        "web",
        &Version::good("v2"),
        &annotations,
    )));

    // Routed (user) requests carry no `authority` label; the simulator's stand-in load tester
    // labels its own with the `-canary` Service it calls.
    let user =
        format!("sum(response_total{{namespace=\"{ns}\",deployment=\"web\",authority=\"\"}})");
    let load_test = format!(
        "sum(response_total{{namespace=\"{ns}\",deployment=\"web\",authority=\"web-canary.{ns}.svc.cluster.local\"}})"
    );
    let start = Instant::now();
    let mut seen: Vec<u32> = Vec::new();
    let mut checked_before_switch = false;
    loop {
        let weight = routes::weights(&client, ns, Provider::Linkerd, "web")
            .await
            .map(Weights::canary);
        if let Some(w) = weight
            && seen.last() != Some(&w)
        {
            seen.push(w);
        }
        let status = release_status(&client, ns, "web").await;
        if status.phase == Phase::Progressing && status.iterations >= 1 && seen == [0] {
            // A check has passed on the canary: on load-test requests only.
            assert_eq!(
                prometheus_value(&user).await,
                0.0,
                "user requests reached the canary"
            );
            assert!(
                prometheus_value(&load_test).await > 0.0,
                "no load test: {load_test}"
            );
            checked_before_switch = true;
        }
        if status.phase == Phase::Succeeded {
            break;
        }
        assert_ne!(status.phase, Phase::Failed, "rolled back; weights {seen:?}");
        assert!(
            start.elapsed() < RELEASE,
            "no promotion: {status:?}, weights seen {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    if let Some(w) = routes::weights(&client, ns, Provider::Linkerd, "web").await
        && seen.last() != Some(&w.canary())
    {
        seen.push(w.canary());
    }
    assert!(
        checked_before_switch,
        "never saw a passed iteration before the switch"
    );
    assert_eq!(
        seen,
        [0, 100, 0],
        "the canary weights: none, then everything at once, then back to the promoted primary"
    );
    assert_eq!(
        image(&client, ns, "web-primary").await,
        "example.invalid/web:v2"
    );
    assert_eq!(replicas(&client, ns, "web").await, Some(0));
    wait_until(
        "Prometheus to show user requests served by the canary after the switch",
        Duration::from_secs(20),
        || async {
            match prometheus_value(&user).await {
                n if n > 0.0 => Ok(()),
                n => Err(format!("{user} = {n}")),
            }
        },
    )
    .await;
}

/// A webhook receiver on loopback: records every payload (and when it came), answers 200
/// while `open`, else 500.
#[derive(Clone)]
struct Receiver {
    url: String,
    open: Arc<Mutex<bool>>,
    payloads: Arc<Mutex<Vec<Value>>>,
    times: Arc<Mutex<Vec<Instant>>>,
}

impl Receiver {
    async fn start(open: bool) -> Self {
        let receiver = Receiver {
            url: String::new(),
            open: Arc::new(Mutex::new(open)),
            payloads: Arc::default(),
            times: Arc::default(),
        };
        let state = receiver.clone();
        let app = axum::Router::new().route(
            "/",
            axum::routing::post(move |body: String| {
                let state = state.clone();
                async move {
                    let payload = serde_json::from_str(&body).unwrap_or(Value::String(body));
                    state.payloads.lock().expect("payloads").push(payload);
                    state.times.lock().expect("times").push(Instant::now());
                    match *state.open.lock().expect("open") {
                        true => StatusCode::OK,
                        false => StatusCode::INTERNAL_SERVER_ERROR,
                    }
                }
            }),
        );
        let url = support::serve_on_loopback(app).await;
        Receiver { url, ..receiver }
    }

    fn payloads(&self) -> Vec<Value> {
        self.payloads.lock().expect("payloads").clone()
    }

    /// When each call came.
    fn times(&self) -> Vec<Instant> {
        self.times.lock().expect("times").clone()
    }

    fn set_open(&self, open: bool) {
        *self.open.lock().expect("open") = open;
    }
}

fn analysis_template(ns: &str, hook_type: &str, url: &str) -> String {
    format!(
        r#"apiVersion: serin.dev/v1beta1
kind: AnalysisTemplate
metadata: {{name: hooks, namespace: {ns}}}
spec:
  webhooks:
  - {{name: {hook_type}-hook, type: {hook_type}, url: "{url}", timeout: 2s}}
"#
    )
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn a_rollback_webhook_that_answers_200_rolls_the_release_back() {
    let (client, ns) = support::release_namespace("rollbackhook").await;
    let ns = &ns.name;
    let hook = Receiver::start(false).await;
    apply(&analysis_template(ns, "rollback", &hook.url));
    let annotations = [
        ("serin.dev/analysis", "hooks"),
        ("serin.dev/step-weight", "10"),
        ("serin.dev/max-weight", "50"),
    ];
    opt_in(&client, ns, "web", &Route::SMI, &annotations).await;
    apply(&manifest(ns, "web", &Version::good("v2"), &annotations));

    // Answering 500, the hook asks for nothing: the canary advances.
    wait_until("the canary to reach 20%", RELEASE, || async {
        let status = release_status(&client, ns, "web").await;
        match status.canary_weight {
            w if w >= 20 && status.phase == Phase::Progressing => Ok(()),
            _ => Err(format!("{status:?}")),
        }
    })
    .await;
    let polls = hook.payloads();
    assert!(!polls.is_empty(), "the rollback webhook was never polled");
    assert_eq!(polls[0]["name"], "web");
    assert_eq!(polls[0]["namespace"], ns.as_str());
    // Asked as the release starts (Waiting), then once per interval of the analysis.
    assert_eq!(polls[0]["phase"], "Waiting");
    assert!(
        polls.iter().skip(1).all(|p| p["phase"] == "Progressing"),
        "{polls:#?}"
    );

    hook.set_open(true);
    let failed = wait_phase(&client, ns, "web", Phase::Failed, Duration::from_secs(30)).await;
    assert_eq!(failed.status.map(|s| s.release.canary_weight), Some(0));
    assert_eq!(
        routes::weights(&client, ns, Provider::Linkerd, "web").await,
        Some(Weights::ALL_PRIMARY)
    );
    assert_eq!(
        image(&client, ns, "web-primary").await,
        "example.invalid/web:v1"
    );
    wait_until("the canary to be scaled to zero", SETTLE, || async {
        match replicas(&client, ns, "web").await {
            Some(0) => Ok(()),
            other => Err(format!("replicas {other:?}")),
        }
    })
    .await;
    let events = events(&client, ns, "web").await.join("\n");
    for text in [
        "rollback webhook rollback-hook answered with success",
        "A rollback webhook asked for a rollback",
    ] {
        assert!(events.contains(text), "no {text:?} among:\n{events}");
    }
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn a_rollback_webhook_rolls_back_a_release_waiting_for_confirm_rollout_polled_once_per_interval()
 {
    let (client, ns) = support::release_namespace("rollbackwait").await;
    let ns = &ns.name;
    let gate = Receiver::start(false).await;
    let hook = Receiver::start(false).await;
    apply(&format!(
        r#"apiVersion: serin.dev/v1beta1
kind: AnalysisTemplate
metadata: {{name: hooks, namespace: {ns}}}
spec:
  webhooks:
  - {{name: gate, type: confirm-rollout, url: "{}", timeout: 2s}}
  - {{name: rollback-hook, type: rollback, url: "{}", timeout: 2s}}
"#,
        gate.url, hook.url
    ));
    let annotations = [("serin.dev/analysis", "hooks")];
    opt_in(&client, ns, "web", &Route::SMI, &annotations).await;
    apply(&manifest(ns, "web", &Version::good("v2"), &annotations));

    // The closed gate holds v2 in Waiting; the rollback webhook, answering 500, is asked
    // while it waits, once per 2 s interval.
    wait_until(
        "the rollback webhook to be polled while Waiting",
        RELEASE,
        || async {
            let status = release_status(&client, ns, "web").await;
            match hook.payloads().len() {
                n if n >= 4 && status.phase == Phase::Waiting => Ok(()),
                n => Err(format!("{n} polls; {status:?}")),
            }
        },
    )
    .await;
    assert!(!gate.payloads().is_empty(), "confirm-rollout never asked");
    let polls = hook.payloads();
    assert!(
        polls
            .iter()
            .all(|p| p["phase"] == "Waiting" && p["name"] == "web"),
        "{polls:#?}"
    );
    // Serin decides once per 2 s interval to poll, by the time its reconcile started; the
    // calls arrive a little later than that, so a gap may be a little short of 2 s.
    let times = hook.times();
    let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps.iter().all(|g| *g >= Duration::from_millis(1800)),
        "polled faster than the 2 s interval: {gaps:?}"
    );
    assert_eq!(
        routes::weights(&client, ns, Provider::Linkerd, "web").await,
        Some(Weights::ALL_PRIMARY),
        "no traffic to a release held at the gate"
    );

    hook.set_open(true);
    let failed = wait_phase(&client, ns, "web", Phase::Failed, Duration::from_secs(30)).await;
    assert_eq!(failed.status.map(|s| s.release.canary_weight), Some(0));
    assert_eq!(
        routes::weights(&client, ns, Provider::Linkerd, "web").await,
        Some(Weights::ALL_PRIMARY)
    );
    assert_eq!(
        image(&client, ns, "web-primary").await,
        "example.invalid/web:v1"
    );
    assert_eq!(replicas(&client, ns, "web").await, Some(0));
    let events = events(&client, ns, "web").await.join("\n");
    for text in [
        "rollback webhook rollback-hook answered with success",
        "A rollback webhook asked for a rollback",
    ] {
        assert!(events.contains(text), "no {text:?} among:\n{events}");
    }
    // A rolled-back revision is not retried: the gate opening changes nothing.
    gate.set_open(true);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        release_status(&client, ns, "web").await.phase,
        Phase::Failed
    );
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn event_webhooks_receive_the_events_with_flaggers_payload() {
    let (client, ns) = support::release_namespace("eventhook").await;
    let ns = &ns.name;
    let hook = Receiver::start(true).await;
    apply(&analysis_template(ns, "event", &hook.url));
    let annotations = [("serin.dev/analysis", "hooks")];
    opt_in(&client, ns, "web", &Route::SMI, &annotations).await;
    apply(&manifest(ns, "web", &Version::good("v2"), &annotations));
    wait_phase(&client, ns, "web", Phase::Succeeded, RELEASE).await;

    // Every Event of the release, from the new revision on, reaches the hook.
    let recorded: Vec<String> = events(&client, ns, "web")
        .await
        .into_iter()
        .skip_while(|e| !e.starts_with("NewRevision"))
        .collect();
    assert!(
        recorded.iter().any(|e| e.starts_with("Succeeded")),
        "{recorded:#?}"
    );
    let sent = || {
        hook.payloads()
            .into_iter()
            .map(|p| {
                let m = &p["metadata"];
                format!(
                    "{}: {}",
                    m["eventReason"].as_str().unwrap_or_default(),
                    m["eventMessage"].as_str().unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
    };
    wait_until("the event webhook to get every Event", SETTLE, || async {
        let sent = sent();
        let missing: Vec<&String> = recorded.iter().filter(|e| !sent.contains(e)).collect();
        match missing.is_empty() {
            true => Ok(()),
            false => Err(format!("not sent: {missing:#?}\nsent: {sent:#?}")),
        }
    })
    .await;
    let payloads = hook.payloads();
    let succeeded = payloads
        .iter()
        .find(|p| p["metadata"]["eventReason"] == "Succeeded")
        .expect("the Succeeded event");
    assert_eq!(succeeded["name"], "web");
    assert_eq!(succeeded["namespace"], ns.as_str());
    assert_eq!(succeeded["phase"], "Succeeded");
    assert!(
        succeeded["checksum"]
            .as_str()
            .is_some_and(|c| !c.is_empty())
    );
    assert_eq!(succeeded["metadata"]["eventType"], "Normal");
    let timestamp: i64 = succeeded["metadata"]["timestamp"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .expect("a timestamp in milliseconds");
    assert!(timestamp > 1_600_000_000_000, "{timestamp}");
}
