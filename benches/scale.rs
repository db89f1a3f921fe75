//! Serin at scale on the local cluster (`make bench`): N opted-in Deployments (N = 200, then
//! 1,000) created at once, and
//! - the time until every one has a `Canary` in phase Initialized (primary Ready, all traffic
//!   on it, the original scaled to zero), beside the time the cluster alone takes to make the
//!   same number of plain Deployments Available (the baseline, same run);
//! - the peak resident memory (VmHWM) of a freshly started, optimized (`--release`) Serin;
//! - while idle afterwards (30 s, nothing changing): Serin's CPU time and the requests its
//!   Kubernetes client sent (`serin_kube_api_requests_total`, watches included).
//!
//! Targets (issue 4): 1,000 initialized within 60 s, RSS under 64 MB, near-zero API requests
//! while idle. Every wait has a timeout; the namespaces are deleted at the end.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use futures::{StreamExt, stream};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{ListParams, PostParams};
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

/// Polls `done` (count of finished objects) every 500 ms, printing progress every 5 s.
async fn wait_count<F, Fut>(what: &str, count: usize, mut done: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = usize>,
{
    let start = Instant::now();
    let mut next_note = Duration::from_secs(5);
    loop {
        let n = done().await;
        if n >= count {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < TIMEOUT,
            "{what}: only {n}/{count} after {TIMEOUT:?}"
        );
        if start.elapsed() >= next_note {
            eprintln!("    {what}: {n}/{count} after {:.0?}", start.elapsed());
            next_note += Duration::from_secs(5);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
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

async fn api_requests() -> f64 {
    let body = reqwest::get(format!("{}/metrics", support::serin_admin_url()))
        .await
        .expect("serin metrics")
        .text()
        .await
        .expect("metrics body");
    body.lines()
        .filter(|l| l.starts_with("serin_kube_api_requests_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn available(client: &Client, ns: &str) -> usize {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    api.list(&ListParams::default())
        .await
        .map(|l| {
            l.items
                .iter()
                .filter(|d| d.status.as_ref().and_then(|s| s.available_replicas) == Some(1))
                .count()
        })
        .unwrap_or(0)
}

async fn initialized(client: &Client, ns: &str) -> usize {
    let api: Api<Canary> = Api::namespaced(client.clone(), ns);
    api.list(&ListParams::default())
        .await
        .map(|l| {
            l.items
                .iter()
                .filter(|c| c.status.as_ref().map(|s| s.release.phase) == Some(Phase::Initialized))
                .count()
        })
        .unwrap_or(0)
}

async fn run(client: &Client, count: usize) {
    eprintln!("\n== {count} Deployments");
    // Baseline: the cluster alone.
    let plain = TestNamespace::create(client, &format!("scale-plain-{count}")).await;
    let start = Instant::now();
    create_all(client, &plain.name, count, false).await;
    wait_count("plain Deployments Available", count, || {
        available(client, &plain.name)
    })
    .await;
    let baseline = start.elapsed();
    drop(plain);

    // A fresh, optimized Serin, so its peak memory is this run's and its speed a release's.
    serin_sh("restart", "release");
    let pid = serin_pid();
    let ns = TestNamespace::create(client, &format!("scale-serin-{count}")).await;
    let start = Instant::now();
    create_all(client, &ns.name, count, true).await;
    let created = start.elapsed();
    wait_count("Canaries Initialized", count, || {
        initialized(client, &ns.name)
    })
    .await;
    let serin = start.elapsed();
    let peak_rss = proc_status_kib(pid, "VmHWM:");

    tokio::time::sleep(Duration::from_secs(5)).await;
    let (ticks, requests) = (cpu_ticks(pid), api_requests().await);
    let rss_before = proc_status_kib(pid, "VmRSS:");
    tokio::time::sleep(IDLE).await;
    let idle_ticks = cpu_ticks(pid) - ticks;
    let idle_requests = api_requests().await - requests;
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
    println!(
        "scale {count:>5}: Serin peak RSS {:.1} MiB (target 64 MB), RSS when idle {:.1} MiB",
        peak_rss as f64 / 1024.0,
        rss_before as f64 / 1024.0
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
