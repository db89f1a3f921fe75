//! Blast radius (issue 18, `make bench`): how many failed requests a bad canary serves before
//! Serin rolls it back, how fast the rollback reaches the router, and whether healthy and
//! marginal canaries are still promoted on time, measured on the local environment.
//!
//! Scenario (issue 18's, the one Flagger 1.44 was measured on): the simulator at 50 requests/s
//! per router, `interval` 10s, `step-weight` 10, `max-weight` 50, `threshold` 2, success rate
//! ≥ 99 %, p99 ≤ 500 ms, window 1m, the SMI (Linkerd) provider. Releases whose canary fails
//! 30 %, 5 %, 100 %, 0 % (healthy) and 0.5 % (marginal) of requests, each run twice in the
//! same run: the baseline (`serin.dev/sequential-checks: "false"`, Flagger's semantics: one
//! check per interval, `threshold` failures) and the default (nothing new set). Then
//! `BLAST_MARGINAL` (default 20) marginal releases under each mode with the simulator's
//! noise on (a seed each, the same seeds for both), counting wrong rollbacks: the target is
//! the default's; the baseline's shows what its smaller counts in the failing cases cost.
//!
//! Per release, each in a namespace of its own and all at once:
//! - failed requests the canary served: the growth of the simulator's ground truth
//!   `serin_simulator_canary_requests_total{outcome="failure"}` from the new revision's apply
//!   to the end of the release;
//! - seconds from the apply to the rollback decision (the `RolledBack` Event's time) and to
//!   the router object observed at 100/0 (a watch on the TrafficSplit);
//! - promoted or not, and the seconds to the promotion decision (the `Promoting` Event).
//!
//! The table prints issue 18's target beside each figure with PASS or FAIL. Nothing is
//! asserted about the figures: the bench measures, so `make bench` goes on when a target is
//! missed; `BLAST_ENFORCE=1` makes a missed target exit non-zero. A Serin that does not know
//! `serin.dev/sequential-checks` (before issue 18) behaves as the baseline whatever the value:
//! the bench then runs the baseline without it, says so, and both columns measure the same
//! behaviour.
//!
//! Run alone after `make up`: `cargo bench --features dev-tools --bench blast`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use k8s_openapi::api::events::v1::Event;
use kube::api::ListParams;
use kube::core::DynamicObject;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use serin::release::Phase;
use serin::router::router_for;
use serin::spec::{CanarySpec, Provider};
use support::release::canary;

/// The annotation issue 18 adds; `"false"` is Flagger's semantics.
const SEQUENTIAL: &str = "serin.dev/sequential-checks";
/// Longest wait for a release to end.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(600);
/// Issue 18's figure for Flagger 1.44 in the 30 % case, and the target derived from it.
const FLAGGER_30_FAILED: f64 = 45.0;
const TARGET_30_FAILED: f64 = 15.0;
/// Issue 18, item 5: the router shows 100/0 within one second of the decision.
const TARGET_ROUTER_SECONDS: f64 = 1.0;
/// "No later than the baseline": the two releases start together but their checks fall on
/// their own reconciles; later by more than this counts as later.
const PROMOTION_SLACK_SECONDS: f64 = 1.0;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    /// `sequential-checks: "false"`: Flagger's semantics.
    Baseline,
    /// Nothing new set.
    Default,
}

#[derive(Debug, Clone)]
struct Case {
    /// What the canary does: `30 %`, `healthy`...
    label: &'static str,
    error_rate: f64,
    mode: Mode,
    noise_seed: Option<u64>,
}

/// What one release did, times in seconds from the new revision's apply.
#[derive(Debug, Clone)]
struct Outcome {
    case: Case,
    requests_served: f64,
    failed_served: f64,
    rollback_s: Option<f64>,
    router_zero_s: Option<f64>,
    promoted_s: Option<f64>,
    phase: Option<Phase>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// The Deployment `web` of a case at `tag`: the scenario's annotations, and the simulator's
/// behaviour on its pod template (v1 is always healthy).
fn manifest(ns: &str, case: &Case, tag: &str, baseline_annotation: bool) -> String {
    let error_rate = if tag == "v1" { 0.0 } else { case.error_rate };
    let sequential = match (case.mode, baseline_annotation) {
        (Mode::Baseline, true) => format!("    {SEQUENTIAL}: \"false\"\n"),
        _ => String::new(),
    };
    let noise = match case.noise_seed {
        Some(seed) => format!("        simulate.serin.dev/noise-seed: \"{seed}\"\n"),
        None => String::new(),
    };
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: {ns}
  annotations:
    serin.dev/enabled: "true"
    serin.dev/interval: "10s"
    serin.dev/step-weight: "10"
    serin.dev/max-weight: "50"
    serin.dev/threshold: "2"
    serin.dev/success-rate: "99"
    serin.dev/latency: "500ms"
    serin.dev/metrics-window: "1m"
{sequential}spec:
  replicas: 1
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata:
      labels: {{app: web}}
      annotations:
        simulate.serin.dev/error-rate: "{error_rate}"
        simulate.serin.dev/latency-ms: "40"
{noise}    spec:
      containers:
      - name: app
        image: example.invalid/web:{tag}
        ports: [{{containerPort: 8080}}]
"#
    )
}

/// `kubectl apply` off the async runtime's threads.
async fn apply(manifest: String) {
    tokio::task::spawn_blocking(move || support::release::apply(&manifest))
        .await
        .expect("kubectl apply");
}

/// Whether Serin knows `serin.dev/sequential-checks` (a server-side dry run of the baseline's
/// Deployment is admitted); before issue 18 it is refused as an unknown annotation.
async fn knows_sequential_checks(client: &Client) -> bool {
    let ns = support::TestNamespace::create(client, "blast-probe").await;
    let case = Case {
        label: "probe",
        error_rate: 0.0,
        mode: Mode::Baseline,
        noise_seed: None,
    };
    let text = manifest(&ns.name, &case, "v1", true);
    let (ok, _, stderr) = tokio::task::spawn_blocking(move || {
        support::kubectl(&["apply", "--dry-run=server", "-f", "-"], Some(&text))
    })
    .await
    .expect("kubectl");
    if !ok && !stderr.contains(SEQUENTIAL) {
        panic!("the baseline's Deployment is refused for another reason: {stderr}");
    }
    ok
}

/// The simulator's ground truth for the canary `ns/web`: (requests, failed).
async fn ground_truth(ns: &str) -> (f64, f64) {
    let port = std::fs::read_to_string(support::repo_root().join(".serin/simulator/port"))
        .expect("the simulator's port (is `make up` done?)");
    let text = reqwest::get(format!("http://127.0.0.1:{}/metrics", port.trim()))
        .await
        .expect("simulator /metrics")
        .text()
        .await
        .expect("metrics text");
    let value = |outcome: &str| {
        let series = format!(
            "serin_simulator_canary_requests_total{{namespace=\"{ns}\",name=\"web\",outcome=\"{outcome}\"}} "
        );
        text.lines()
            .find_map(|l| l.strip_prefix(series.as_str()))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let (ok, failed) = (value("success"), value("failure"));
    (ok + failed, failed)
}

/// The time (ms since the epoch) of the first Event `reason` about the Deployment `web`.
async fn event_ms(client: &Client, ns: &str, reason: &str) -> Option<i64> {
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    api.list(&ListParams::default())
        .await
        .ok()?
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .filter(|e| {
            e.regarding.as_ref().is_some_and(|r| {
                r.name.as_deref() == Some("web") && r.kind.as_deref() == Some("Deployment")
            })
        })
        .filter_map(|e| e.event_time.map(|t| t.0.as_millisecond()))
        .min()
}

/// Canary weights seen, each with the time (ms since the epoch) the watch delivered it.
type WeightsSeen = Arc<Mutex<Vec<(i64, u32)>>>;

/// Watches the TrafficSplit `web`; every canary weight it is seen at, with the time (ms since
/// the epoch) the watch delivered it.
fn watch_canary_weight(client: &Client, ns: &str) -> (WeightsSeen, tokio::task::JoinHandle<()>) {
    let router = router_for(Provider::Linkerd);
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &router.api_resource());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let spec = CanarySpec::defaults("web".to_owned(), None);
    let task = tokio::spawn(async move {
        let config = watcher::Config::default().fields("metadata.name=web");
        let mut events = std::pin::pin!(watcher(api, config).default_backoff().applied_objects());
        while let Some(event) = events.next().await {
            if let Ok(object) = event
                && let Ok(weights) = router.weights(&object, &spec)
            {
                let mut seen = record.lock().unwrap_or_else(|e| e.into_inner());
                if seen.last().map(|(_, w)| *w) != Some(weights.canary()) {
                    seen.push((now_ms(), weights.canary()));
                }
            }
        }
    });
    (seen, task)
}

async fn run(
    client: Client,
    case: Case,
    baseline_annotation: bool,
    done: Arc<Mutex<Vec<String>>>,
) -> Outcome {
    let ns = support::TestNamespace::create(&client, "blast").await;
    let ns_name = ns.name.clone();
    apply(manifest(&ns_name, &case, "v1", baseline_annotation)).await;
    support::release::wait_phase(
        &client,
        &ns_name,
        "web",
        Phase::Initialized,
        Duration::from_secs(120),
    )
    .await;
    let (weights, watch) = watch_canary_weight(&client, &ns_name);
    // The watch's first list, before the release starts.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = ground_truth(&ns_name).await;
    let start_ms = now_ms();
    let start = Instant::now();
    apply(manifest(&ns_name, &case, "v2", baseline_annotation)).await;
    let phase = loop {
        let phase = canary(&client, &ns_name, "web")
            .await
            .and_then(|c| c.status)
            .map(|s| s.release.phase);
        if matches!(phase, Some(Phase::Succeeded | Phase::Failed))
            || start.elapsed() > RELEASE_TIMEOUT
        {
            break phase;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    // The simulator follows the router within a tick; its last requests to the canary counted.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = ground_truth(&ns_name).await;
    watch.abort();
    let seconds = |ms: i64| (ms - start_ms) as f64 / 1000.0;
    let rollback_ms = event_ms(&client, &ns_name, "RolledBack").await;
    let promoted_ms = event_ms(&client, &ns_name, "Promoting").await;
    // The first time the router is seen at 100/0 after the canary had a share.
    let router_zero_ms = {
        let seen = weights.lock().unwrap_or_else(|e| e.into_inner());
        let first_share = seen.iter().position(|(_, w)| *w > 0);
        first_share.and_then(|i| seen[i..].iter().find(|(_, w)| *w == 0).map(|(t, _)| *t))
    };
    let outcome = Outcome {
        requests_served: after.0 - before.0,
        failed_served: after.1 - before.1,
        rollback_s: rollback_ms.map(seconds),
        router_zero_s: match phase {
            Some(Phase::Failed) => router_zero_ms.map(seconds),
            _ => None,
        },
        promoted_s: promoted_ms.map(seconds),
        phase,
        case,
    };
    let mut done = done.lock().unwrap_or_else(|e| e.into_inner());
    done.push(format!(
        "{} {:?}{}: {:?} after {:.0?}, {:.0} failed of {:.0} requests served by the canary",
        outcome.case.label,
        outcome.case.mode,
        outcome
            .case
            .noise_seed
            .map(|s| format!(" (noise seed {s})"))
            .unwrap_or_default(),
        outcome.phase,
        start.elapsed(),
        outcome.failed_served,
        outcome.requests_served
    ));
    eprintln!(
        "    [{:>3}] {}",
        done.len(),
        done.last().map(String::as_str).unwrap_or_default()
    );
    drop(ns);
    outcome
}

fn secs(value: Option<f64>) -> String {
    value
        .map(|s| format!("{s:.1}"))
        .unwrap_or_else(|| "—".into())
}

fn verdict(ok: bool) -> &'static str {
    if ok { "PASS" } else { "FAIL" }
}

#[tokio::main]
async fn main() {
    support::release_environment();
    serin::server::install_crypto_provider();
    let client = support::client().await;
    let marginal: u64 = std::env::var("BLAST_MARGINAL")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20);
    let first_seed: u64 = std::env::var("BLAST_SEED")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(18);

    let baseline_annotation = knows_sequential_checks(&client).await;
    if !baseline_annotation {
        println!(
            "blast: Serin refuses {SEQUENTIAL} (it predates issue 18): the baseline runs without it, \
             so baseline and default measure the same behaviour (Flagger's semantics)"
        );
    }

    let kinds: [(&str, f64); 5] = [
        ("30 %", 0.30),
        ("5 %", 0.05),
        ("100 %", 1.0),
        ("healthy", 0.0),
        ("marginal", 0.005),
    ];
    let mut cases = Vec::new();
    for (label, error_rate) in kinds {
        for mode in [Mode::Baseline, Mode::Default] {
            cases.push(Case {
                label,
                error_rate,
                mode,
                noise_seed: None,
            });
        }
    }
    // The same noisy marginal releases under both modes: the baseline's wrong rollbacks are
    // the price of its small counts in the failing cases.
    for mode in [Mode::Baseline, Mode::Default] {
        for i in 0..marginal {
            cases.push(Case {
                label: "marginal+noise",
                error_rate: 0.005,
                mode,
                noise_seed: Some(first_seed + i),
            });
        }
    }
    let total = cases.len();
    eprintln!(
        "blast: {total} releases in parallel, each in a namespace of its own (a few minutes)"
    );
    let started = Instant::now();
    let done = Arc::new(Mutex::new(Vec::new()));
    let progress = {
        let done = done.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(15)).await;
                let n = done.lock().map(|d| d.len()).unwrap_or_default();
                eprintln!(
                    "    {n}/{total} releases ended after {:.0?}",
                    started.elapsed()
                );
            }
        })
    };
    let tasks: Vec<_> = cases
        .into_iter()
        .map(|case| tokio::spawn(run(client.clone(), case, baseline_annotation, done.clone())))
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.expect("release task"));
    }
    progress.abort();

    let find = |label: &str, mode: Mode| {
        outcomes
            .iter()
            .find(|o| o.case.label == label && o.case.mode == mode && o.case.noise_seed.is_none())
            .expect("each case ran")
    };
    let mut failures = 0;
    let mut check = |ok: bool| {
        failures += usize::from(!ok);
        verdict(ok)
    };
    println!(
        "\nblast radius: 50 requests/s, interval 10s, step 10, max 50, threshold 2, success rate ≥ 99 %, p99 ≤ 500 ms, window 1m ({:.0?} in all)",
        started.elapsed()
    );
    println!(
        "{:<10} {:<9} {:>8} {:>10} {:>11} {:>9} {:>11}   target (issue 18)",
        "canary", "mode", "result", "failed/req", "rollback s", "100/0 s", "promoted s"
    );
    for (label, _) in kinds {
        let baseline = find(label, Mode::Baseline);
        for o in [baseline, find(label, Mode::Default)] {
            let result = match o.phase {
                Some(Phase::Succeeded) => "promoted",
                Some(Phase::Failed) => "rolled back",
                _ => "timed out",
            };
            let failing = o.case.error_rate > 0.01;
            let target = match (o.case.mode, failing) {
                (Mode::Baseline, _) => "baseline".to_owned(),
                (Mode::Default, true) => {
                    let third = baseline.failed_served / 3.0;
                    let limit = match label {
                        "30 %" => third.min(TARGET_30_FAILED),
                        _ => third,
                    };
                    let failed_ok = o.phase == Some(Phase::Failed) && o.failed_served <= limit;
                    let router = match (o.rollback_s, o.router_zero_s) {
                        (Some(decided), Some(zero)) => zero - decided,
                        _ => f64::INFINITY,
                    };
                    format!(
                        "failed ≤ {limit:.1} (⅓ of baseline{}) {}; 100/0 ≤ {TARGET_ROUTER_SECONDS:.0} s after the decision ({}) {}",
                        if label == "30 %" {
                            format!(
                                ", ≤ {TARGET_30_FAILED:.0}; Flagger 1.44: {FLAGGER_30_FAILED:.0}"
                            )
                        } else {
                            String::new()
                        },
                        check(failed_ok),
                        if router.is_finite() {
                            format!("{router:.2} s")
                        } else {
                            "not seen".into()
                        },
                        check(router <= TARGET_ROUTER_SECONDS)
                    )
                }
                (Mode::Default, false) => {
                    let on_time = match (o.promoted_s, baseline.promoted_s) {
                        (Some(at), Some(base)) => at <= base + PROMOTION_SLACK_SECONDS,
                        (Some(_), None) => true,
                        _ => false,
                    };
                    format!(
                        "promoted, no later than the baseline (+{PROMOTION_SLACK_SECONDS:.0} s) {}",
                        check(o.phase == Some(Phase::Succeeded) && on_time)
                    )
                }
            };
            println!(
                "{:<10} {:<9} {:>8} {:>10} {:>11} {:>9} {:>11}   {target}",
                label,
                format!("{:?}", o.case.mode).to_lowercase(),
                result,
                format!("{:.0}/{:.0}", o.failed_served, o.requests_served),
                secs(o.rollback_s),
                secs(o.router_zero_s),
                secs(o.promoted_s),
            );
        }
    }
    for mode in [Mode::Baseline, Mode::Default] {
        let noisy: Vec<&Outcome> = outcomes
            .iter()
            .filter(|o| o.case.noise_seed.is_some() && o.case.mode == mode)
            .collect();
        if noisy.is_empty() {
            continue;
        }
        let wrong = noisy
            .iter()
            .filter(|o| o.phase == Some(Phase::Failed))
            .count();
        let unfinished = noisy
            .iter()
            .filter(|o| o.phase != Some(Phase::Succeeded) && o.phase != Some(Phase::Failed))
            .count();
        let mut promoted: Vec<f64> = noisy.iter().filter_map(|o| o.promoted_s).collect();
        promoted.sort_by(f64::total_cmp);
        let median = promoted.get(promoted.len() / 2).copied();
        let enough = noisy.len() >= 20;
        let target = match mode {
            Mode::Baseline => "baseline".to_owned(),
            Mode::Default => format!(
                "target: 0 of ≥ 20 {}",
                check(wrong == 0 && unfinished == 0 && enough)
            ),
        };
        println!(
            "marginal (0.5 %) with noise, {}: {wrong} wrong rollbacks of {} releases ({unfinished} unfinished; promotion median {} s, latest {} s)   {target}",
            format!("{mode:?}").to_lowercase(),
            noisy.len(),
            secs(median),
            secs(promoted.last().copied()),
        );
    }
    // A target below two failed requests asks for a rollback on the first failure, which no
    // test with a false-rollback bound can do: say what that rule would cost.
    for (label, error_rate) in kinds {
        let target = find(label, Mode::Baseline).failed_served / 3.0;
        if error_rate > 0.01 && target < 2.0 {
            println!(
                "note: {label}: ⅓ of the baseline is {target:.1} failed requests, a rollback on the \
                 first failure. A canary at the 1 % limit fails within its first 100 requests \
                 {:.0} % of the time, a marginal one (0.5 %) {:.0} %: that rule would roll back \
                 good canaries as a matter of course. At 99 % confidence the sequential test needs \
                 4 failures at least, and about 6 on average for a 5 % canary (docs/analysis.md).",
                100.0 * (1.0 - 0.99f64.powi(100)),
                100.0 * (1.0 - 0.995f64.powi(100)),
            );
        }
    }
    if !baseline_annotation {
        println!("(baseline = default here: this Serin predates serin.dev/sequential-checks)");
    }
    println!("blast: {failures} target(s) missed");
    if failures > 0 && std::env::var_os("BLAST_ENFORCE").is_some_and(|v| v == "1") {
        std::process::exit(1);
    }
}
