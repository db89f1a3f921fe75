//! The release cycle on the real local cluster: Serin (webhooks and controller, under its own
//! service account), the traffic simulator and Prometheus, as `make up` runs them. Each test
//! opts a Deployment in with kubectl, applies a new version and watches what Serin does,
//! including the `Promoted` condition it keeps on the Canary.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use axum::http::StatusCode;
use kube::Client;
use serin::release::Phase;
use serin::router::Weights;
use support::release::{
    Version, apply, canary, events, image, manifest, replicas, wait_phase, weights,
};
use support::scenarios::{self, Route};
use support::{TestNamespace, wait_until};

const SETTLE: Duration = Duration::from_secs(60);
/// Long enough for a release of 2 s intervals with a few failed checks.
const RELEASE: Duration = Duration::from_secs(120);

/// Opts `web` in through the TrafficSplit; the primary runs the Deployment's 2 replicas.
async fn opt_in(client: &Client, ns: &str, extra: &[(&str, &str)]) {
    scenarios::opt_in(client, ns, "web", &Route::SMI, extra).await;
    assert_eq!(replicas(client, ns, "web-primary").await, Some(2));
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn a_good_revision_is_promoted_and_the_primary_runs_it() {
    let (client, ns) = support::release_namespace("promote").await;
    let ns = &ns.name;
    opt_in(&client, ns, &[]).await;

    assert_eq!(
        promoted_condition(&client, ns).await.0,
        "True",
        "the primary runs v1"
    );

    apply(&manifest(ns, "web", &Version::good("v2"), &[]));
    // While the analysis runs, whether v2 will be promoted is not known yet.
    wait_until("the Promoted condition of an analysis", RELEASE, || async {
        match promoted_condition(&client, ns).await {
            (state, reason, _) if state == "Unknown" && reason == "Progressing" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let done = wait_phase(&client, ns, "web", Phase::Succeeded, RELEASE).await;
    let status = done.status.expect("status").release;
    assert_eq!(status.last_promoted_revision, status.revision);
    let (state, reason, message) = promoted_condition(&client, ns).await;
    assert_eq!((state.as_str(), reason.as_str()), ("True", "Succeeded"));
    assert_eq!(
        message,
        format!(
            "Revision {} was promoted: the primary runs it and serves all traffic",
            status.revision.clone().unwrap_or_default()
        )
    );
    scenarios::assert_primary_serves(&client, ns, &Route::SMI, "v2").await;
    let events = events(&client, ns, "web").await.join("\n");
    for step in [
        "NewRevision",
        "Advancing the canary weight to 25%",
        "Advancing the canary weight to 50%",
        "Promoting",
        "Succeeded",
    ] {
        assert!(
            events.contains(step),
            "no {step:?} among the events:\n{events}"
        );
    }
}

/// `(status, reason, message)` of the Canary's `Promoted` condition, checking that it is the
/// only condition and was written by Serin's status apply.
async fn promoted_condition(client: &Client, ns: &str) -> (String, String, String) {
    let canary = canary(client, ns, "web").await.expect("Canary");
    let managers: Vec<_> = canary
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|m| m.subresource.as_deref() == Some("status"))
        .filter_map(|m| m.manager.as_deref())
        .collect();
    assert_eq!(managers, ["serin"], "status writers");
    let conditions = canary.status.map(|s| s.conditions).unwrap_or_default();
    match conditions.as_slice() {
        [c] if c.type_ == "Promoted" => (c.status.clone(), c.reason.clone(), c.message.clone()),
        other => panic!("expected one Promoted condition, got {other:?}"),
    }
}

/// Waits for a rollback and checks that nothing of the bad version reached the primary.
async fn assert_rolled_back(client: &Client, ns: &str, expected_in_events: &[&str]) {
    let failed = wait_phase(client, ns, "web", Phase::Failed, RELEASE).await;
    let status = failed.status.expect("status").release;
    assert_ne!(status.last_promoted_revision, status.revision);
    assert_eq!(
        image(client, ns, "web-primary").await,
        "example.invalid/web:v1"
    );
    assert_eq!(weights(client, ns, "web").await, Some(Weights::ALL_PRIMARY));
    assert_eq!(replicas(client, ns, "web").await, Some(0));
    let (state, reason, message) = promoted_condition(client, ns).await;
    assert_eq!((state.as_str(), reason.as_str()), ("False", "Failed"));
    let revision = status.revision.unwrap_or_default();
    assert!(
        message.starts_with(&format!("Revision {revision} was rolled back after")),
        "{message}"
    );
    let events = events(client, ns, "web").await.join("\n");
    for text in expected_in_events {
        assert!(
            events.contains(text),
            "no {text:?} among the events:\n{events}"
        );
    }
}

/// Opts `web` in (rolled back after 2 failed checks) in a namespace named after `prefix`,
/// applies `bad` and waits for the rollback ([`assert_rolled_back`]).
async fn roll_back(
    prefix: &str,
    bad: &Version,
    expected_in_events: &[&str],
) -> (Client, TestNamespace) {
    let (client, ns) = support::release_namespace(prefix).await;
    let threshold = [("serin.dev/threshold", "2")];
    opt_in(&client, &ns.name, &threshold).await;
    apply(&manifest(&ns.name, "web", bad, &threshold));
    assert_rolled_back(&client, &ns.name, expected_in_events).await;
    (client, ns)
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn an_error_rate_of_30_percent_is_rolled_back_with_the_measured_success_rate() {
    let expected = ["RolledBack", "request-success-rate", "% < 99%"];
    let (client, ns) = roll_back("errors", &scenarios::FAILING, &expected).await;
    let ns = &ns.name;
    // The measured value is stated, and it is the simulated ~70 %.
    let events = events(&client, ns, "web").await;
    let measured: Vec<f64> = events
        .iter()
        .filter_map(|e| e.split("request-success-rate ").nth(1))
        .filter_map(|rest| rest.split('%').next()?.parse().ok())
        .collect();
    assert!(
        measured.iter().any(|v| (55.0..85.0).contains(v)),
        "no success rate near 70% in the events: {events:#?}"
    );
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn a_latency_breach_is_rolled_back() {
    let slow = Version {
        tag: "v2",
        error_rate: 0.0,
        latency_ms: 1500,
    };
    roll_back(
        "latency",
        &slow,
        &["RolledBack", "request-duration", "ms > 500ms"],
    )
    .await;
}

/// A webhook receiver on a loopback port: answers 200 while `open`, else 500; counts calls.
struct Receiver {
    url: String,
    open: Arc<AtomicBool>,
    calls: Arc<AtomicU32>,
}

async fn receiver(open: bool) -> Receiver {
    let open = Arc::new(AtomicBool::new(open));
    let calls = Arc::new(AtomicU32::new(0));
    let (o, c) = (open.clone(), calls.clone());
    let app = axum::Router::new().route(
        "/",
        axum::routing::post(move |body: String| {
            let (o, c) = (o.clone(), c.clone());
            async move {
                // Flagger's payload: the loadtester reads these fields.
                let payload: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                assert!(
                    payload["name"].is_string() && payload["checksum"].is_string(),
                    "{body}"
                );
                c.fetch_add(1, Ordering::SeqCst);
                match o.load(Ordering::SeqCst) {
                    true => StatusCode::OK,
                    false => StatusCode::INTERNAL_SERVER_ERROR,
                }
            }
        }),
    );
    let url = support::serve_on_loopback(app).await;
    Receiver { url, open, calls }
}

fn analysis_template(ns: &str, hook_type: &str, url: &str) -> String {
    format!(
        r#"apiVersion: serin.dev/v1beta1
kind: AnalysisTemplate
metadata: {{name: gates, namespace: {ns}}}
spec:
  webhooks:
  - {{name: gate, type: {hook_type}, url: "{url}", timeout: 2s}}
"#
    )
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn a_failing_pre_rollout_webhook_rolls_back_after_threshold_tries() {
    let (client, ns) = support::release_namespace("prerollout").await;
    let ns = &ns.name;
    let hook = receiver(false).await;
    apply(&analysis_template(ns, "pre-rollout", &hook.url));
    let extra = [
        ("serin.dev/threshold", "2"),
        ("serin.dev/analysis", "gates"),
    ];
    opt_in(&client, ns, &extra).await;
    apply(&manifest(ns, "web", &Version::good("v2"), &extra));
    assert_rolled_back(&client, ns, &["pre-rollout", "RolledBack"]).await;
    assert!(
        hook.calls.load(Ordering::SeqCst) >= 2,
        "the webhook was called {} times",
        hook.calls.load(Ordering::SeqCst)
    );
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn a_closed_confirm_promotion_gate_holds_the_release_until_it_opens() {
    let (client, ns) = support::release_namespace("gate").await;
    let ns = &ns.name;
    let gate = receiver(false).await;
    apply(&analysis_template(ns, "confirm-promotion", &gate.url));
    let extra = [("serin.dev/analysis", "gates")];
    opt_in(&client, ns, &extra).await;
    apply(&manifest(ns, "web", &Version::good("v2"), &extra));
    wait_phase(&client, ns, "web", Phase::WaitingPromotion, RELEASE).await;
    // Held: several intervals later it still waits, at max weight, the primary untouched.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let held = canary(&client, ns, "web")
        .await
        .and_then(|c| c.status)
        .expect("status");
    assert_eq!(held.release.phase, Phase::WaitingPromotion);
    assert_eq!(held.release.canary_weight, 50);
    assert_eq!(
        image(&client, ns, "web-primary").await,
        "example.invalid/web:v1"
    );
    gate.open.store(true, Ordering::SeqCst);
    wait_phase(&client, ns, "web", Phase::Succeeded, RELEASE).await;
    assert_eq!(
        image(&client, ns, "web-primary").await,
        "example.invalid/web:v2"
    );
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn a_new_revision_mid_analysis_restarts_the_analysis() {
    let (client, ns) = support::release_namespace("restart").await;
    let ns = &ns.name;
    let extra = [
        ("serin.dev/step-weight", "10"),
        ("serin.dev/max-weight", "50"),
    ];
    opt_in(&client, ns, &extra).await;
    apply(&manifest(ns, "web", &Version::good("v2"), &extra));
    wait_until("the canary weight to reach 20%", RELEASE, || async {
        let status = canary(&client, ns, "web").await.and_then(|c| c.status);
        match status {
            Some(s) if s.release.canary_weight >= 20 => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    apply(&manifest(ns, "web", &Version::good("v3"), &extra));
    wait_phase(&client, ns, "web", Phase::Succeeded, RELEASE).await;
    assert_eq!(
        image(&client, ns, "web-primary").await,
        "example.invalid/web:v3"
    );
    let events = events(&client, ns, "web").await.join("\n");
    assert!(events.contains("restarting the analysis"), "{events}");
    assert!(
        !events.contains("revision of v2"),
        "v2 must never be promoted:\n{events}"
    );
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn opting_out_restores_the_deployment_with_no_gap_in_ready_endpoints() {
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    let (client, ns) = support::release_namespace("optout").await;
    let ns = &ns.name;
    opt_in(&client, ns, &[]).await;

    // Count the apex Service's ready endpoints every 100 ms while opting out.
    let slices: kube::Api<EndpointSlice> = kube::Api::namespaced(client.clone(), ns);
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut fewest = u32::MAX;
            let params = kube::api::ListParams::default().labels("kubernetes.io/service-name=web");
            while !stop.load(Ordering::SeqCst) {
                let ready: u32 = slices
                    .list(&params)
                    .await
                    .expect("list EndpointSlices")
                    .items
                    .iter()
                    .flat_map(|s| s.endpoints.iter().flatten())
                    .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false))
                    .count() as u32;
                fewest = fewest.min(ready);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            fewest
        })
    };
    // The user removes every serin.dev annotation.
    apply(&plain_manifest(ns));
    wait_until("the machinery to be removed", SETTLE, || async {
        let left = (
            support::release::deployment(&client, ns, "web-primary")
                .await
                .is_some(),
            canary(&client, ns, "web").await.is_some(),
        );
        match left {
            (false, false) => Ok(()),
            left => Err(format!("primary, Canary still there: {left:?}")),
        }
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    let fewest = watcher.await.expect("watcher");
    assert!(
        fewest >= 1,
        "the Service had {fewest} ready endpoints at some moment"
    );
    assert_eq!(replicas(&client, ns, "web").await, Some(2));
    let labels = support::release::deployment(&client, ns, "web")
        .await
        .expect("web")
        .metadata
        .labels
        .unwrap_or_default();
    assert!(
        !labels.contains_key(serin::spec::MANAGED_LABEL),
        "{labels:?}"
    );
}

/// The Deployment as it ran before opting in: the same manifest without Serin's annotations.
fn plain_manifest(ns: &str) -> String {
    manifest(ns, "web", &Version::good("v1"), &[])
        .lines()
        .filter(|l| !l.starts_with("    serin.dev/") && !l.starts_with("  annotations:"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn opting_an_existing_deployment_in_creates_the_machinery_at_apply_and_says_so() {
    let (client, ns) = support::release_namespace("inject").await;
    let ns = &ns.name;
    apply(&plain_manifest(ns));
    let (ok, stdout, stderr) = support::kubectl(
        &["apply", "-f", "-"],
        Some(&manifest(ns, "web", &Version::good("v1"), &[])),
    );
    assert!(ok, "{stdout}\n{stderr}");
    assert!(
        stderr.contains("serin created Canary web, Deployment web-primary, Service web-primary, Service web-canary"),
        "kubectl shows what was created as a warning; stderr:\n{stderr}"
    );
    // Already there when kubectl returns, owned by the Deployment.
    let primary = support::release::deployment(&client, ns, "web-primary")
        .await
        .expect("web-primary");
    let owner = primary.metadata.owner_references.unwrap_or_default();
    assert_eq!(owner.first().map(|o| o.name.as_str()), Some("web"));
    assert!(canary(&client, ns, "web").await.is_some());
    wait_phase(&client, ns, "web", Phase::Initialized, SETTLE).await;
    assert_eq!(
        weights(&client, ns, "web").await,
        Some(Weights::ALL_PRIMARY)
    );
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn what_was_injected_for_an_opt_in_refused_later_is_removed() {
    use k8s_openapi::api::admissionregistration::v1::{
        ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    };
    let (client, ns) = support::release_namespace("refused").await;
    let ns = &ns.name;
    apply(&plain_manifest(ns));
    // A policy evaluated after Serin's mutating webhook refuses the opt-in.
    let policy: ValidatingAdmissionPolicy = serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("refuse-{ns}")},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{"apiGroups": ["apps"], "apiVersions": ["v1"],
                "operations": ["UPDATE"], "resources": ["deployments"]}]},
            "validations": [{"expression": "!has(object.metadata.annotations) || !('serin.dev/enabled' in object.metadata.annotations)",
                             "message": "opting in is refused here"}]
        }
    }))
    .expect("policy");
    let binding: ValidatingAdmissionPolicyBinding = serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("refuse-{ns}")},
        "spec": {"policyName": format!("refuse-{ns}"), "validationActions": ["Deny"],
                 "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}}}
    }))
    .expect("binding");
    let policies: kube::Api<ValidatingAdmissionPolicy> = kube::Api::all(client.clone());
    let bindings: kube::Api<ValidatingAdmissionPolicyBinding> = kube::Api::all(client.clone());
    let pp = kube::api::PostParams::default();
    policies.create(&pp, &policy).await.expect("create policy");
    bindings
        .create(&pp, &binding)
        .await
        .expect("create binding");
    let opt_in = manifest(ns, "web", &Version::good("v1"), &[]);
    // The policy takes effect once the API server has loaded it; a server-side dry run (no
    // injection on dry runs) shows when.
    wait_until("the policy to refuse opting in", SETTLE, || async {
        match support::kubectl(&["apply", "--dry-run=server", "-f", "-"], Some(&opt_in)) {
            (false, _, stderr) if stderr.contains("opting in is refused here") => Ok(()),
            (ok, out, err) => Err(format!("applied: {ok}; {out} {err}")),
        }
    })
    .await;
    let (ok, _, stderr) = support::kubectl(&["apply", "-f", "-"], Some(&opt_in));
    assert!(
        !ok && stderr.contains("opting in is refused here"),
        "{stderr}"
    );
    assert!(
        canary(&client, ns, "web").await.is_some(),
        "Serin's webhook ran before the policy and created the Canary"
    );
    let dp = kube::api::DeleteParams::default();
    let _ = bindings.delete(&format!("refuse-{ns}"), &dp).await;
    let _ = policies.delete(&format!("refuse-{ns}"), &dp).await;
    // The refused update left the Deployment as it was; what the webhook made goes away.
    wait_until(
        "the injected objects to be removed",
        Duration::from_secs(150),
        || async {
            let left = (
                support::release::deployment(&client, ns, "web-primary")
                    .await
                    .is_some(),
                canary(&client, ns, "web").await.is_some(),
            );
            match left {
                (false, false) => Ok(()),
                left => Err(format!("web-primary, Canary still there: {left:?}")),
            }
        },
    )
    .await;
    assert_eq!(
        replicas(&client, ns, "web").await,
        Some(2),
        "the Deployment is untouched"
    );
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn an_hpa_on_the_deployment_gets_a_primary_copy_that_sizes_the_primary() {
    use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
    let (client, ns) = support::release_namespace("hpa").await;
    let ns = &ns.name;
    apply(&format!(
        r#"apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {{name: web, namespace: {ns}}}
spec:
  scaleTargetRef: {{apiVersion: apps/v1, kind: Deployment, name: web}}
  minReplicas: 2
  maxReplicas: 5
  metrics:
  - type: Resource
    resource: {{name: cpu, target: {{type: Utilization, averageUtilization: 80}}}}
"#
    ));
    opt_in(&client, ns, &[]).await;
    let hpas: kube::Api<HorizontalPodAutoscaler> = kube::Api::namespaced(client.clone(), ns);
    let copy = hpas.get("web-primary").await.expect("the -primary HPA");
    assert_eq!(
        Some(copy.spec.scale_target_ref.name.as_str()),
        Some("web-primary")
    );
    assert_eq!(Some(copy.spec.max_replicas), Some(5));
    let owner = copy.metadata.owner_references.unwrap_or_default();
    assert_eq!(owner.first().map(|o| o.name.as_str()), Some("web"));
    // The user's HPA is left as written.
    let original = hpas.get("web").await.expect("the user's HPA");
    assert_eq!(
        Some(original.spec.scale_target_ref.name),
        Some("web".to_string())
    );

    // A change to the user's HPA alone (no new revision) reaches the copy.
    hpas.patch(
        "web",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(serde_json::json!({"spec": {"maxReplicas": 7}})),
    )
    .await
    .expect("raise the user's maxReplicas");
    wait_until("the -primary HPA follows maxReplicas 7", SETTLE, || {
        let hpas = hpas.clone();
        async move {
            let copy = hpas.get("web-primary").await.map_err(|e| e.to_string())?;
            match copy.spec.max_replicas {
                7 => Ok(()),
                other => Err(format!("maxReplicas {other}")),
            }
        }
    })
    .await;
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn a_change_to_a_tracked_config_map_alone_is_released_as_a_new_revision() {
    use k8s_openapi::api::core::v1::ConfigMap;
    let (client, ns) = support::release_namespace("config").await;
    let ns = &ns.name;
    let config =
        |greeting: &str| support::release::config_map(ns, "web-config", "greeting", greeting);
    apply(&config("hello"));
    let with_config = |version: &Version| {
        support::release::reading_config(&manifest(ns, "web", version, &[]), "web-config")
    };
    apply(&with_config(&Version::good("v1")));
    let first = wait_phase(&client, ns, "web", Phase::Initialized, SETTLE).await;
    let maps: kube::Api<ConfigMap> = kube::Api::namespaced(client.clone(), ns);
    let copy = maps
        .get("web-config-primary")
        .await
        .expect("the primary's copy");
    assert_eq!(
        copy.data
            .unwrap_or_default()
            .get("greeting")
            .map(String::as_str),
        Some("hello")
    );

    // Only the ConfigMap changes; the Deployment is not touched.
    apply(&config("bonjour"));
    let done = wait_phase(&client, ns, "web", Phase::Succeeded, RELEASE).await;
    let before = first.status.expect("status").release.revision;
    assert_ne!(done.status.expect("status").release.revision, before);
    let copy = maps
        .get("web-config-primary")
        .await
        .expect("the primary's copy");
    assert_eq!(
        copy.data
            .unwrap_or_default()
            .get("greeting")
            .map(String::as_str),
        Some("bonjour")
    );
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn a_primary_deleted_behind_serins_back_is_created_again_and_said_so() {
    let (client, ns) = support::release_namespace("recreate").await;
    let ns = &ns.name;
    opt_in(&client, ns, &[]).await;
    let first = support::release::deployment(&client, ns, "web-primary")
        .await
        .and_then(|d| d.metadata.uid)
        .expect("the primary's uid");
    let before = events(&client, ns, "web").await.join("\n");
    assert!(
        before.contains("Initialized: The primary runs revision"),
        "the Initialized Event names the revision:\n{before}"
    );
    // The protection webhook refuses this to people; under Serin's own identity (which the
    // webhook lets through) it stands for anything that removes the primary unasked.
    let (ok, _, stderr) = support::kubectl(
        &[
            "-n",
            ns,
            "delete",
            "deployment/web-primary",
            "--as=system:serviceaccount:serin-system:serin",
        ],
        None,
    );
    assert!(ok, "delete the primary: {stderr}");
    wait_until("a new web-primary", SETTLE, || async {
        match support::release::deployment(&client, ns, "web-primary").await {
            Some(d) if d.metadata.uid.as_deref() != Some(first.as_str()) => Ok(()),
            other => Err(format!("{:?}", other.and_then(|d| d.metadata.uid))),
        }
    })
    .await;
    assert_eq!(replicas(&client, ns, "web-primary").await, Some(2));
    wait_until("the PrimaryRecreated Event", SETTLE, || async {
        let events = events(&client, ns, "web").await.join("\n");
        match events.contains("PrimaryRecreated: web-primary was missing: created it again") {
            true => Ok(()),
            false => Err(events),
        }
    })
    .await;
}
