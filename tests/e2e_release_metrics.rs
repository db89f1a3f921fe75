//! The release metrics (`serin_canary_*`) on Serin's admin port, scraped while releases run on
//! the real local cluster: the canary weight rises step by step during a good release and
//! the promotion is counted; a failing release's failed checks and rollback are counted; and
//! a deleted Deployment's series go with its Canary. Serin's admin port is the local
//! environment's (`.serin/serin/admin-port`), so these tests do nothing against a cluster
//! named by `KUBECONFIG`.

mod support;

use std::collections::BTreeMap;

use kube::Api;
use kube::api::DeleteParams;
use serin::release::Phase;
use support::release::{Version, weights_until};
use support::scenarios::{FAILING, RELEASE, Release, Route, SETTLE};
use support::{canary_series, wait_until};

/// How soon a deleted canary's series must go: the Canary's deletion reaches Serin's watch
/// in about a second; the sweep behind it runs once a minute.
const GONE: std::time::Duration = std::time::Duration::from_secs(20);

/// Waits until every `(series, value)` of `expected` is scraped for `ns/web`; returns the
/// scrape.
async fn wait_for_series(ns: &str, what: &str, expected: &[(&str, f64)]) -> BTreeMap<String, f64> {
    wait_until(what, SETTLE, || async {
        let scraped = canary_series(ns, "web").await;
        match expected
            .iter()
            .all(|(series, value)| scraped.get(*series) == Some(value))
        {
            true => Ok(scraped),
            false => Err(format!("{scraped:?}")),
        }
    })
    .await
}

fn local_environment() -> bool {
    if std::env::var_os("KUBECONFIG").is_some() {
        eprintln!("KUBECONFIG is set: Serin's metrics are only readable in the local environment");
        return false;
    }
    true
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn the_weight_metric_rises_step_by_step_the_promotion_is_counted_and_deletion_removes_the_series()
 {
    if !local_environment() {
        return;
    }
    let release = Release::for_promotion(Route::SMI, "metrics-promote").await;
    let (client, ns) = (&release.client, release.ns());
    wait_for_series(
        ns,
        "the metrics of the opted-in canary",
        &[
            (r#"serin_canary_phase{phase="Initialized"}"#, 1.0),
            ("serin_canary_weight", 0.0),
            ("serin_canary_promotions_total", 0.0),
            ("serin_canary_rollbacks_total", 0.0),
        ],
    )
    .await;

    release.apply(&Version::good("v2"));
    let seen = weights_until(client, ns, Phase::Succeeded, RELEASE, || async {
        canary_series(ns, "web")
            .await
            .get("serin_canary_weight")
            .map(|w| *w as u32)
    })
    .await;
    assert!(
        seen.starts_with(&[0, 20, 40, 60]),
        "serin_canary_weight scraped during the release: {seen:?}"
    );
    let done = wait_for_series(
        ns,
        "the metrics of the promoted canary",
        &[
            (r#"serin_canary_phase{phase="Succeeded"}"#, 1.0),
            (r#"serin_canary_phase{phase="Progressing"}"#, 0.0),
            ("serin_canary_weight", 0.0),
            ("serin_canary_failed_checks", 0.0),
            ("serin_canary_promotions_total", 1.0),
            ("serin_canary_rollbacks_total", 0.0),
        ],
    )
    .await;
    // Three steps of a 2 s interval at least, and less than the test waited.
    let duration = done
        .get("serin_canary_last_release_duration_seconds")
        .copied()
        .unwrap_or_else(|| panic!("no release duration: {done:?}"));
    assert!(
        (4.0..RELEASE.as_secs_f64()).contains(&duration),
        "release duration {duration}"
    );
    // v2 fails no request.
    let success = done
        .get(r#"serin_canary_check_value{check="request-success-rate"}"#)
        .copied();
    assert_eq!(success, Some(100.0), "{done:?}");

    // The Deployment goes, its Canary with it (owner reference), and so do its series.
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(client.clone(), ns);
    deployments
        .delete("web", &DeleteParams::background())
        .await
        .expect("delete web");
    // Well within the minute after which the sweep would remove them: the Canary watch's
    // deletion did.
    let deleted = std::time::Instant::now();
    wait_until("the series of the deleted canary to go", GONE, || async {
        let left = canary_series(ns, "web").await;
        match left.is_empty() {
            true => Ok(()),
            false => Err(format!("{left:?}")),
        }
    })
    .await;
    eprintln!(
        "weights scraped {seen:?}; release took {duration} s; series gone {:?} after the delete",
        deleted.elapsed()
    );
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn a_failing_release_shows_its_failed_checks_and_its_rollback_is_counted() {
    if !local_environment() {
        return;
    }
    let release = Release::for_rollback(Route::SMI, "metrics-rollback").await;
    let (client, ns) = (&release.client, release.ns());
    release.apply(&FAILING);
    let failures = weights_until(client, ns, Phase::Failed, RELEASE, || async {
        canary_series(ns, "web")
            .await
            .get("serin_canary_failed_checks")
            .map(|n| *n as u32)
    })
    .await;
    assert!(
        failures.starts_with(&[0, 1]),
        "serin_canary_failed_checks scraped during the release: {failures:?}"
    );
    let done = wait_for_series(
        ns,
        "the metrics of the rolled back canary",
        &[
            (r#"serin_canary_phase{phase="Failed"}"#, 1.0),
            ("serin_canary_weight", 0.0),
            // serin.dev/threshold is 2.
            ("serin_canary_failed_checks", 2.0),
            ("serin_canary_rollbacks_total", 1.0),
            ("serin_canary_promotions_total", 0.0),
        ],
    )
    .await;
    // FAILING fails 30 % of its requests.
    let success = done
        .get(r#"serin_canary_check_value{check="request-success-rate"}"#)
        .copied()
        .unwrap_or_else(|| panic!("no success rate: {done:?}"));
    assert!((50.0..90.0).contains(&success), "success rate {success}");
    assert!(
        done.contains_key("serin_canary_last_release_duration_seconds"),
        "{done:?}"
    );
}
