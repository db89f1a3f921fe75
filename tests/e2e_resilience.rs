//! Serin and Prometheus failing mid-release, on the real local cluster. These tests stop the
//! shared Serin and Prometheus processes, so they take turns (cargo runs test binaries one
//! after another, and [`ALONE`] serializes the tests of this one) and always start what they
//! stopped again, pass or fail.

mod support;

use std::time::Duration;

use kube::Client;
use serin::release::Phase;
use serin::router::Weights;
use support::release::{
    Version, apply, events, image, manifest, release_status, wait_phase, weights,
};
use support::{TestNamespace, hack, wait_until};

const RELEASE: Duration = Duration::from_secs(180);
const SETTLE: Duration = Duration::from_secs(30);

static ALONE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Starts Serin or Prometheus again when dropped, whatever the test did.
struct Restart(&'static str);

impl Drop for Restart {
    fn drop(&mut self) {
        hack(self.0, &["up"]);
    }
}

/// A release namespace, with whatever an earlier test stopped running again.
async fn setup(prefix: &str) -> (Client, TestNamespace) {
    support::release_environment();
    hack("prometheus.sh", &["up"]);
    hack("serin.sh", &["up"]);
    support::release_namespace(prefix).await
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn killing_serin_mid_analysis_resumes_at_the_same_weight_and_check_count_and_the_metrics_time_the_whole_release()
 {
    let _alone = ALONE.lock().await;
    let (client, ns) = setup("kill").await;
    let ns = &ns.name;
    let extra = [
        ("serin.dev/step-weight", "10"),
        ("serin.dev/interval", "3s"),
    ];
    apply(&manifest(ns, "web", &Version::good("v1"), &extra));
    wait_phase(&client, ns, "web", Phase::Initialized, RELEASE).await;
    apply(&manifest(ns, "web", &Version::good("v2"), &extra));
    let applied = std::time::Instant::now();
    wait_until("the canary weight to reach 20%", RELEASE, || async {
        match release_status(&client, ns, "web").await {
            s if s.canary_weight >= 20 => Ok(()),
            s => Err(format!("{s:?}")),
        }
    })
    .await;

    let restart = Restart("serin.sh");
    let pid = std::fs::read_to_string(support::repo_root().join(".serin/serin/serin.pid"))
        .expect("serin pid");
    let killed = std::process::Command::new("kill")
        .args(["-KILL", pid.trim()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let before = release_status(&client, ns, "web").await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        release_status(&client, ns, "web").await,
        before,
        "nothing moves while Serin is down"
    );
    drop(restart);

    // From here the weight only grows from where it was, and the release completes.
    let lowest = std::sync::atomic::AtomicU32::new(u32::MAX);
    wait_until(
        "the release to succeed after the restart",
        RELEASE,
        || async {
            let now = release_status(&client, ns, "web").await;
            if now.phase == Phase::Progressing {
                lowest.fetch_min(now.canary_weight, std::sync::atomic::Ordering::SeqCst);
            }
            match now.phase {
                Phase::Succeeded => Ok(()),
                _ => Err(format!("{now:?}")),
            }
        },
    )
    .await;
    let release_took = applied.elapsed().as_secs_f64();
    let lowest = lowest.into_inner();
    assert!(
        lowest == u32::MAX || lowest >= before.canary_weight,
        "the weight fell back to {lowest}% after resuming at {}%",
        before.canary_weight
    );
    let events = events(&client, ns, "web").await;
    let new_revisions = events
        .iter()
        .filter(|e| e.starts_with("NewRevision"))
        .count();
    assert_eq!(new_revisions, 1, "the analysis restarted: {events:#?}");
    assert!(
        !events.iter().any(|e| e.starts_with("CheckFailed")),
        "{events:#?}"
    );
    assert_eq!(
        image(&client, ns, "web-primary").await,
        "example.invalid/web:v2"
    );

    // The restarted Serin counted the promotion it made, and timed the release from its start
    // before the kill (the stored Promoted condition), not from the restart.
    if std::env::var_os("KUBECONFIG").is_none() {
        let series = wait_until("the promotion in the metrics", SETTLE, || async {
            let series = support::canary_series(ns, "web").await;
            match series.get("serin_canary_promotions_total") {
                Some(n) if *n == 1.0 => Ok(series),
                _ => Err(format!("{series:?}")),
            }
        })
        .await;
        let duration = series
            .get("serin_canary_last_release_duration_seconds")
            .copied()
            .unwrap_or_else(|| panic!("no release duration: {series:?}"));
        assert!(
            (release_took - 3.0..=release_took + 1.0).contains(&duration),
            "the release took {release_took} s as the test saw it; the metric says {duration} s"
        );
    }
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn without_prometheus_every_check_fails_and_the_canary_is_never_promoted() {
    let _alone = ALONE.lock().await;
    let (client, ns) = setup("noprom").await;
    let ns = &ns.name;
    let extra = [("serin.dev/threshold", "3")];
    apply(&manifest(ns, "web", &Version::good("v1"), &extra));
    wait_phase(&client, ns, "web", Phase::Initialized, RELEASE).await;

    let restart = Restart("prometheus.sh");
    hack("prometheus.sh", &["down"]);
    apply(&manifest(ns, "web", &Version::good("v2"), &extra));
    let failed = wait_phase(&client, ns, "web", Phase::Failed, RELEASE).await;
    drop(restart);

    let status = failed.status.expect("status").release;
    assert_eq!(status.failed_checks, 3);
    assert_eq!(
        image(&client, ns, "web-primary").await,
        "example.invalid/web:v1"
    );
    assert_eq!(
        weights(&client, ns, "web").await,
        Some(Weights::ALL_PRIMARY)
    );
    let events = events(&client, ns, "web").await.join("\n");
    assert!(
        events.contains("MetricError"),
        "the query errors are reported:\n{events}"
    );
    assert!(!events.contains("Promoting"), "{events}");
}
