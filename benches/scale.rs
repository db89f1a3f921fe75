//! Serin at scale on the local cluster (`make bench`): N opted-in Deployments (N = 200, then
//! 1,000) created at once, and
//! - the time until every one has a `Canary` in phase Initialized (primary Ready, all traffic
//!   on it, the original scaled to zero), beside the time the cluster alone takes to make the
//!   same number of plain Deployments Available (the baseline, same run);
//! - the peak resident memory (VmHWM) of a freshly started, optimized (`--release`) Serin;
//! - the API requests per Deployment until then: Serin's, and every client's
//!   (`apiserver_request_total`), which shows how much of the work is the cluster's own;
//! - while idle afterwards (30 s, nothing changing): Serin's CPU time and the requests its
//!   Kubernetes client sent (`serin_kube_api_requests_total`, watches included).
//!
//! Targets (issue 4): 1,000 initialized within 60 s, RSS under 64 MB, near-zero API requests
//! while idle. Every wait has a timeout; the namespaces are deleted at the end. Progress is
//! counted from watches (not by listing every object twice a second, which would load the API
//! server being measured), and the baseline's namespace is gone before Serin's run starts.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::{StreamExt, stream};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::PostParams;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client};
use serin::crd::Canary;
use serin::release::Phase;
use support::TestNamespace;

const IDLE: Duration = Duration::from_secs(30);
const TIMEOUT: Duration = Duration::from_secs(600);

fn deployment(name: &str, opted_in: bool) -> Deployment {
    let annotations = match opted_in {
        true => r#""serin.dev/enabled": "true", "serin.dev/interval": "10s""#,
        false => "",
    };
    serde_json::from_str(&format!(
        r#"{{"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {{"name": "{name}", "annotations": {{{annotations}}}}},
            "spec": {{"replicas": 1, "selector": {{"matchLabels": {{"app": "{name}"}}}},
              "template": {{"metadata": {{"labels": {{"app": "{name}"}}}},
                "spec": {{"containers": [{{"name": "app", "image": "example.invalid/app:1",
                  "ports": [{{"containerPort": 8080}}]}}]}}}}}}}}"#
    ))
    .expect("bench Deployment")
}

async fn create_all(client: &Client, ns: &str, count: usize, opted_in: bool) {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    stream::iter(0..count)
        .map(|i| {
            let api = api.clone();
            async move {
                let d = deployment(&format!("app-{i:04}"), opted_in);
                api.create(&PostParams::default(), &d)
                    .await
                    .expect("create Deployment");
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
}

/// A watch-fed cache of `api`'s objects (one LIST, then events: polling a thousand objects
/// twice a second would load the API server the run measures). Start it before creating
/// the objects.
fn count_watched<K>(api: Api<K>) -> (reflector::Store<K>, tokio::task::JoinHandle<()>)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let events = watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .applied_objects();
    let task = tokio::spawn(events.for_each(|_| async {}));
    (reader, task)
}

/// Waits until `count` objects of `store` are `done`, printing progress every 5 s (with
/// `also`: what else to say of the moment).
async fn wait_count<K>(
    what: &str,
    count: usize,
    store: &reflector::Store<K>,
    done: fn(&K) -> bool,
    also: impl Fn() -> String,
) -> Duration
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    let start = Instant::now();
    let mut next_note = Duration::from_secs(5);
    loop {
        let n = store.state().iter().filter(|o| done(o)).count();
        if n >= count {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < TIMEOUT,
            "{what}: only {n}/{count} after {TIMEOUT:?}"
        );
        if start.elapsed() >= next_note {
            eprintln!(
                "    {what}: {n}/{count} after {:.0?}{}",
                start.elapsed(),
                also()
            );
            next_note += Duration::from_secs(5);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Deletes the namespace and waits until it is gone, so that its clean-up (a thousand
/// Deployments, ReplicaSets and Pods) does not run during the next measurement.
async fn delete_and_wait(client: &Client, namespace: TestNamespace) {
    let name = namespace.name.clone();
    drop(namespace);
    let api: Api<Namespace> = Api::all(client.clone());
    let start = Instant::now();
    let mut next_note = Duration::from_secs(5);
    while api.get_opt(&name).await.ok().flatten().is_some() {
        assert!(
            start.elapsed() < TIMEOUT,
            "namespace {name} still there after {TIMEOUT:?}"
        );
        if start.elapsed() >= next_note {
            eprintln!("    deleting namespace {name}: {:.0?}", start.elapsed());
            next_note += Duration::from_secs(5);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// `hack/serin.sh ACTION` with `SERIN_PROFILE=profile`.
fn serin_sh(action: &str, profile: &str) {
    let status = std::process::Command::new(support::repo_root().join("hack/serin.sh"))
        .arg(action)
        .env("SERIN_PROFILE", profile)
        .status()
        .expect("run hack/serin.sh");
    assert!(status.success(), "hack/serin.sh {action} failed");
}

fn serin_pid() -> u32 {
    std::fs::read_to_string(support::repo_root().join(".serin/serin/serin.pid"))
        .expect("serin pid (is `make up` done?)")
        .trim()
        .parse()
        .expect("pid")
}

fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// utime + stime in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("proc stat");
    let after_name = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap_or(0) + fields[12].parse::<u64>().unwrap_or(0)
}

/// Serin's API requests so far (`serin_kube_api_requests_total`), by "METHOD resource".
async fn api_requests() -> BTreeMap<String, f64> {
    let body = reqwest::get(format!("{}/metrics", support::serin_admin_url()))
        .await
        .expect("serin metrics")
        .text()
        .await
        .expect("metrics body");
    counter_totals(
        &body,
        "serin_kube_api_requests_total",
        ["method", "resource"],
    )
}

/// The requests the API server has answered so far, from every client (the cluster's
/// controllers, Serin, this bench), by "VERB resource" (`apiserver_request_total`).
async fn cluster_requests(client: &Client) -> BTreeMap<String, f64> {
    let request = axum::http::Request::get("/metrics")
        .body(Vec::new())
        .expect("metrics request");
    let body = client
        .request_text(request)
        .await
        .expect("API server metrics");
    counter_totals(&body, "apiserver_request_total", ["verb", "resource"])
}

/// The counter `metric` of a Prometheus text exposition, summed by the values of `labels`
/// (joined by a space).
fn counter_totals(body: &str, metric: &str, labels: [&str; 2]) -> BTreeMap<String, f64> {
    let mut counts = BTreeMap::new();
    for line in body.lines() {
        let Some(rest) = line.strip_prefix(metric).and_then(|l| l.strip_prefix('{')) else {
            continue;
        };
        let (pairs, value) = rest.rsplit_once("} ").unwrap_or((rest, "0"));
        let label = |name: &str| {
            pairs
                .split(',')
                .find_map(|pair| pair.strip_prefix(&format!("{name}=")))
                .map(|v| v.trim_matches('"').to_owned())
                .unwrap_or_default()
        };
        let key = format!("{} {}", label(labels[0]), label(labels[1]));
        *counts.entry(key).or_default() += value.parse::<f64>().unwrap_or(0.0);
    }
    counts
}

/// Requests per Deployment: the total, and each kind (largest first, at most `most`).
fn per_deployment(requests: &[(String, f64)], count: usize, most: usize) -> (f64, String) {
    let mut kinds: Vec<&(String, f64)> = requests.iter().collect();
    kinds.sort_by(|a, b| b.1.total_cmp(&a.1));
    let listed: Vec<String> = kinds
        .iter()
        .take(most)
        .map(|(key, n)| format!("{key} {:.2}", n / count as f64))
        .collect();
    let total = requests.iter().map(|(_, n)| n).sum::<f64>() / count as f64;
    (total, listed.join(", "))
}

/// `after - before`, per key, leaving out what did not change.
fn difference(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> Vec<(String, f64)> {
    after
        .iter()
        .map(|(key, n)| (key.clone(), n - before.get(key).copied().unwrap_or(0.0)))
        .filter(|(_, n)| *n > 0.0)
        .collect()
}

fn is_available(d: &Deployment) -> bool {
    d.status.as_ref().and_then(|s| s.available_replicas) == Some(1)
}

fn is_initialized(c: &Canary) -> bool {
    c.status.as_ref().map(|s| s.release.phase) == Some(Phase::Initialized)
}

async fn run(client: &Client, count: usize) {
    eprintln!("\n== {count} Deployments");
    // Baseline: the cluster alone.
    let plain = TestNamespace::create(client, &format!("scale-plain-{count}")).await;
    let (store, watch) = count_watched(Api::<Deployment>::namespaced(client.clone(), &plain.name));
    let start = Instant::now();
    create_all(client, &plain.name, count, false).await;
    wait_count(
        "plain Deployments Available",
        count,
        &store,
        is_available,
        String::new,
    )
    .await;
    let baseline = start.elapsed();
    watch.abort();
    delete_and_wait(client, plain).await;

    // A fresh, optimized Serin, so its peak memory is this run's and its speed a release's.
    serin_sh("restart", "release");
    let pid = serin_pid();
    let ns = TestNamespace::create(client, &format!("scale-serin-{count}")).await;
    let (store, watch) = count_watched(Api::<Canary>::namespaced(client.clone(), &ns.name));
    // Where the time goes: how many primaries the cluster has made Available by then.
    let (deployments, deployments_watch) =
        count_watched(Api::<Deployment>::namespaced(client.clone(), &ns.name));
    let primaries_available = move || {
        let deployments = deployments.state();
        let primaries = deployments.iter().filter(|d| {
            d.metadata
                .name
                .as_deref()
                .is_some_and(|n| n.ends_with("-primary"))
        });
        let available = primaries.clone().filter(|d| is_available(d)).count();
        format!(
            " ({} primaries created, {available} Available)",
            primaries.count()
        )
    };
    let (before_run, cluster_before) = (api_requests().await, cluster_requests(client).await);
    let start = Instant::now();
    create_all(client, &ns.name, count, true).await;
    let created = start.elapsed();
    wait_count(
        "Canaries Initialized",
        count,
        &store,
        is_initialized,
        primaries_available,
    )
    .await;
    watch.abort();
    deployments_watch.abort();
    let serin = start.elapsed();
    let peak_rss = proc_status_kib(pid, "VmHWM:");
    let run_requests = difference(&before_run, &api_requests().await);
    let cluster_run = difference(&cluster_before, &cluster_requests(client).await);

    tokio::time::sleep(Duration::from_secs(5)).await;
    let (ticks, requests) = (cpu_ticks(pid), api_requests().await);
    let rss_before = proc_status_kib(pid, "VmRSS:");
    // What of it is the heap and stacks, and what pages of the binary itself.
    let (rss_anon, rss_file) = (
        proc_status_kib(pid, "RssAnon:"),
        proc_status_kib(pid, "RssFile:"),
    );
    tokio::time::sleep(IDLE).await;
    let idle_ticks = cpu_ticks(pid) - ticks;
    let idle_requests: f64 = difference(&requests, &api_requests().await)
        .iter()
        .map(|(_, n)| n)
        .sum();
    // VmHWM again at the end: the process may still grow after the last Initialized (the
    // caches settle, late events), and the peak is the whole run's.
    let peak_rss = peak_rss.max(proc_status_kib(pid, "VmHWM:"));
    let ticks_per_second = 100.0; // USER_HZ on Linux
    println!(
        "scale {count:>5}: plain Deployments Available (baseline) {:>6.1} s",
        baseline.as_secs_f64()
    );
    println!(
        "scale {count:>5}: created opted-in in {:.1} s; all Initialized after {:>6.1} s (target for 1000: 60 s)",
        created.as_secs_f64(),
        serin.as_secs_f64()
    );
    let (serin_total, serin_kinds) = per_deployment(&run_requests, count, usize::MAX);
    println!(
        "scale {count:>5}: Serin's API requests per Deployment until all Initialized: {serin_total:.1} ({serin_kinds})"
    );
    let (cluster_total, cluster_kinds) = per_deployment(&cluster_run, count, 12);
    println!(
        "scale {count:>5}: all clients' API requests per Deployment meanwhile (the cluster's controllers, Serin, this bench): {cluster_total:.1} ({cluster_kinds}, ...)"
    );
    println!(
        "scale {count:>5}: Serin peak RSS {:.1} MiB over the run (target 64 MB), RSS when idle {:.1} MiB ({:.1} anonymous, {:.1} file-backed)",
        peak_rss as f64 / 1024.0,
        rss_before as f64 / 1024.0,
        rss_anon as f64 / 1024.0,
        rss_file as f64 / 1024.0
    );
    println!(
        "scale {count:>5}: idle {}s: CPU {:.2}% of one core, {} API requests ({:.2}/s)",
        IDLE.as_secs(),
        idle_ticks as f64 / ticks_per_second / IDLE.as_secs_f64() * 100.0,
        idle_requests,
        idle_requests / IDLE.as_secs_f64()
    );
}

#[tokio::main]
async fn main() {
    support::serin();
    // The simulator would follow every TrafficSplit (and Prometheus scrape its thousands of
    // series): load on the same two cores that is not Serin's.
    support::hack("simulator.sh", &["down"]);
    let client = support::client().await;
    let sizes: Vec<usize> = std::env::var("SERIN_SCALE")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![200, 1000]);
    for count in sizes {
        run(&client, count).await;
    }
    // Back to the build the tests and `make up` use.
    serin_sh("restart", "debug");
    support::hack("simulator.sh", &["up"]);
}
