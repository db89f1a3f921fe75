//! Sequential checks on the real local cluster (`serin.dev/sequential-checks`, the default):
//! a bad canary rolled back on the evidence of a few failed requests, the router at 100/0 as
//! soon as that is decided; a failure shared with the primary held under `compare: primary`;
//! a canary too quiet to judge neither promoted nor rolled back; a slow canary rolled back on
//! the latency histogram's slow requests, and one with a healthy latency promoted. Settings
//! are the issue's
//! benchmark's (interval 10s, step 10, max 50, threshold 2, success rate 99 %, window 1m),
//! the simulator at its 50 requests/s per router object.

mod support;

use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::events::v1::Event;
use kube::api::ListParams;
use kube::{Api, Client};
use serin::release::Phase;
use serin::router::Weights;
use support::release::{Version, apply, events, manifest, release_status, wait_phase, weights};
use support::scenarios::{self, Route};

/// The settings, which users already write, and the default of
/// `serin.dev/sequential-checks` written out (the shared manifest turns it off for the
/// tests written for Flagger's semantics).
const SETTINGS: [(&str, &str); 7] = [
    ("serin.dev/sequential-checks", "true"),
    ("serin.dev/interval", "10s"),
    ("serin.dev/threshold", "2"),
    ("serin.dev/step-weight", "10"),
    ("serin.dev/max-weight", "50"),
    ("serin.dev/success-rate", "99"),
    ("serin.dev/metrics-window", "1m"),
];

fn failing(tag: &'static str, error_rate: f64) -> Version {
    Version {
        tag,
        error_rate,
        latency_ms: 40,
    }
}

fn settings(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    let mut all = SETTINGS.to_vec();
    all.extend_from_slice(extra);
    all
}

/// When the RolledBack Event of `web` was recorded.
async fn rollback_event_time(client: &Client, ns: &str) -> SystemTime {
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    let listed = api.list(&ListParams::default()).await.expect("list Events");
    let time = listed
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("RolledBack"))
        .filter_map(|e| e.event_time.map(|t| t.0))
        .min()
        .expect("a RolledBack Event with its time");
    SystemTime::UNIX_EPOCH + Duration::from_micros(time.as_microsecond().unsigned_abs())
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn a_canary_failing_30_percent_is_rolled_back_after_few_failed_requests_and_at_once() {
    let (client, ns) = support::release_namespace("seq-fast").await;
    let ns = &ns.name;
    let annotations = settings(&[]);
    scenarios::opt_in(&client, ns, "web", &Route::SMI, &annotations).await;
    apply(&manifest(ns, "web", &failing("v2", 0.3), &annotations));

    // Watch the TrafficSplit closely: when the canary first gets traffic, and when it is
    // observed back at 100/0.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut first_traffic: Option<Instant> = None;
    let observed_back = loop {
        assert!(Instant::now() < deadline, "no rollback within 120 s");
        let now = weights(&client, ns, "web").await;
        match (now, first_traffic) {
            (Some(w), None) if w.canary() > 0 => first_traffic = Some(Instant::now()),
            (Some(w), Some(_)) if w == Weights::ALL_PRIMARY => {
                break (Instant::now(), SystemTime::now());
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let exposed = observed_back.0 - first_traffic.expect("the canary had traffic");
    let failed = wait_phase(&client, ns, "web", Phase::Failed, Duration::from_secs(30)).await;
    let status = failed.status.expect("status").release;
    println!(
        "30 % failing canary: {} of {} requests failed, {:.1} s with traffic",
        status.canary_failed_requests,
        status.canary_requests,
        exposed.as_secs_f64()
    );
    // Flagger's semantics need threshold × interval = 20 s at 5 requests/s (30 failed
    // requests); the evidence is decisive within a look or two.
    assert!(
        status.canary_failed_requests > 0 && status.canary_failed_requests <= 15,
        "{} failed requests",
        status.canary_failed_requests
    );
    assert!(
        exposed < Duration::from_secs(15),
        "{exposed:?} with traffic"
    );
    assert_eq!(
        status.failed_checks, 0,
        "decided on evidence, not on threshold"
    );
    // The router is written before the Event is recorded: observed at 100/0 less than a
    // second after the decision's Event (the poll itself adds up to 50 ms).
    let decided = rollback_event_time(&client, ns).await;
    let lag = observed_back
        .1
        .duration_since(decided)
        .unwrap_or(Duration::ZERO);
    println!("router observed at 100/0 {lag:?} after the RolledBack Event");
    assert!(lag < Duration::from_secs(1), "{lag:?}");
    let events = events(&client, ns, "web").await.join("\n");
    assert!(events.contains("sequential test"), "{events}");
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn a_failure_shared_with_the_primary_holds_the_release_under_compare_primary() {
    let (client, ns) = support::release_namespace("seq-shared").await;
    let ns = &ns.name;
    let annotations = settings(&[("serin.dev/compare", "primary")]);
    // A dependency of both versions fails a third of the requests: the primary fails too.
    apply(&manifest(ns, "web", &failing("v1", 0.3), &annotations));
    wait_phase(
        &client,
        ns,
        "web",
        Phase::Initialized,
        Duration::from_secs(60),
    )
    .await;
    apply(&manifest(ns, "web", &failing("v2", 0.3), &annotations));
    support::wait_until(
        "a hold that names the primary",
        Duration::from_secs(90),
        || async {
            let events = events(&client, ns, "web").await.join("\n");
            match events.contains("no rollback") && events.contains("primary fails as much") {
                true => Ok(()),
                false => Err(events),
            }
        },
    )
    .await;
    // Held at its first weight for several intervals more, never rolled back.
    tokio::time::sleep(Duration::from_secs(25)).await;
    let status = release_status(&client, ns, "web").await;
    assert_eq!(status.phase, Phase::Progressing, "{status:?}");
    assert_eq!(status.canary_weight, 10);
    assert_eq!(status.failed_checks, 0);
    assert!(status.canary_failed_requests > 0, "{status:?}");
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn a_canary_too_quiet_to_judge_is_neither_promoted_nor_rolled_back() {
    let (client, ns) = support::release_namespace("seq-quiet").await;
    let ns = &ns.name;
    // 1 % of 50 requests/s: half a request a second, fewer than the 34 a 1 % limit needs
    // for a pass during the 40 s watched here.
    let annotations = settings(&[
        ("serin.dev/step-weight", "1"),
        ("serin.dev/max-weight", "2"),
    ]);
    scenarios::opt_in(&client, ns, "web", &Route::SMI, &annotations).await;
    apply(&manifest(ns, "web", &Version::good("v2"), &annotations));
    support::wait_until("the first weight", Duration::from_secs(60), || async {
        match release_status(&client, ns, "web").await.canary_weight {
            1 => Ok(()),
            other => Err(format!("weight {other}")),
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(40)).await;
    let status = release_status(&client, ns, "web").await;
    assert_eq!(status.phase, Phase::Progressing, "{status:?}");
    assert_eq!(status.canary_weight, 1, "thin evidence is no pass");
    assert_eq!(status.failed_checks, 0, "thin evidence is no failure");
    assert!(
        (1..34).contains(&status.canary_requests),
        "{} requests counted",
        status.canary_requests
    );
    let events = events(&client, ns, "web").await.join("\n");
    assert!(events.contains("too few requests"), "{events}");
    assert!(!events.contains("CheckFailed"), "{events}");
}

/// The p99 limit of the latency tests, written out (it is the default).
const LATENCY: (&str, &str) = ("serin.dev/latency", "500ms");

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn a_slow_canary_is_rolled_back_on_its_slow_requests_before_the_p99_check_could() {
    let (client, ns) = support::release_namespace("seq-slow").await;
    let ns = &ns.name;
    let annotations = settings(&[LATENCY]);
    scenarios::opt_in(&client, ns, "web", &Route::SMI, &annotations).await;
    // No request fails; every one takes 700 ms, above the 500 ms limit.
    let slow = Version {
        tag: "v2",
        error_rate: 0.0,
        latency_ms: 700,
    };
    apply(&manifest(ns, "web", &slow, &annotations));
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut first_traffic: Option<Instant> = None;
    let back = loop {
        assert!(Instant::now() < deadline, "no rollback within 120 s");
        match (weights(&client, ns, "web").await, first_traffic) {
            (Some(w), None) if w.canary() > 0 => first_traffic = Some(Instant::now()),
            (Some(w), Some(_)) if w == Weights::ALL_PRIMARY => break Instant::now(),
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let exposed = back - first_traffic.expect("the canary had traffic");
    let failed = wait_phase(&client, ns, "web", Phase::Failed, Duration::from_secs(30)).await;
    let status = failed.status.expect("status").release;
    let reason = status.rollback_reason.clone().unwrap_or_default();
    println!(
        "700 ms canary: {:.1} s with traffic, {} requests; {reason}",
        exposed.as_secs_f64(),
        status.canary_requests
    );
    // The per-interval p99 check needs threshold × interval = 20 s of failed checks; the
    // slow requests are decisive at the first look or two.
    assert_eq!(
        status.failed_checks, 0,
        "decided on evidence, not on threshold"
    );
    assert!(
        exposed < Duration::from_secs(15),
        "{exposed:?} with traffic"
    );
    // The reason names the latency check and how many requests were slow.
    let slow_requests: u64 = reason
        .strip_prefix("request-duration: ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count of slow requests in {reason:?}"));
    assert!(slow_requests >= 4, "{reason}");
    assert!(
        reason.contains("requests slower than 500ms since the weight moved")
            && reason.contains("worse than 1% with 99% confidence"),
        "{reason}"
    );
    // No request failed: the blast radius of failures stays empty.
    assert_eq!(status.canary_failed_requests, 0, "{status:?}");
    let events = events(&client, ns, "web").await.join("\n");
    assert!(events.contains("request-duration"), "{events}");
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn a_canary_with_a_healthy_latency_is_promoted_on_its_counts() {
    let (client, ns) = support::release_namespace("seq-fast-ok").await;
    let ns = &ns.name;
    let annotations = settings(&[LATENCY]);
    scenarios::opt_in(&client, ns, "web", &Route::SMI, &annotations).await;
    // 40 ms: far below the limit, in Linkerd's 50 ms bucket.
    apply(&manifest(ns, "web", &Version::good("v2"), &annotations));
    let started = Instant::now();
    let done = wait_phase(
        &client,
        ns,
        "web",
        Phase::Succeeded,
        Duration::from_secs(150),
    )
    .await;
    let status = done.status.expect("status").release;
    println!(
        "40 ms canary promoted after {:.0} s, {} requests",
        started.elapsed().as_secs_f64(),
        status.canary_requests
    );
    assert_eq!(status.failed_checks, 0, "{status:?}");
    assert_eq!(status.rollback_reason, None);
    let events = events(&client, ns, "web").await.join("\n");
    assert!(!events.contains("RolledBack"), "{events}");
}

/// Traefik's default buckets (0.1, 0.3, 1.2, 5 s) have no 500 ms boundary: every request
/// above 300 ms counts as slow, so a canary at 400 ms (within the limit as written) is rolled
/// back, and the reason says which boundary counted. Traefik's `le` labels are in seconds, as
/// the real Prometheus stores them.
#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn a_limit_between_traefiks_buckets_counts_every_request_above_the_boundary_below_it() {
    let (client, ns) = support::release_namespace("seq-traefik-le").await;
    let ns = &ns.name;
    let route = Route::GATEWAY_API_TRAEFIK;
    let annotations = route.annotations(&settings(&[LATENCY]));
    scenarios::opt_in(&client, ns, "web", &route, &annotations).await;
    let between = Version {
        tag: "v2",
        error_rate: 0.0,
        latency_ms: 400,
    };
    apply(&manifest(ns, "web", &between, &annotations));
    let failed = wait_phase(&client, ns, "web", Phase::Failed, Duration::from_secs(90)).await;
    let status = failed.status.expect("status").release;
    let reason = status.rollback_reason.clone().unwrap_or_default();
    println!("400 ms canary through Traefik: {reason}");
    assert!(
        reason.starts_with("request-duration: ")
            && reason.contains(
                "requests slower than 300ms (the histogram's largest bucket at or below the \
                 500ms limit: requests between the two count as slow)"
            ),
        "{reason}"
    );
    assert_eq!(
        status.failed_checks, 0,
        "decided on evidence, not on threshold"
    );
}
