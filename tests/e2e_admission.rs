//! Admission through the real API server: kube-apiserver calls Serin's webhooks over TLS
//! when a Deployment is applied with the built kubectl.

mod support;

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use support::{kubectl, wait_until};
use tokio::sync::RwLock;

/// Tests that read Serin's request counter take this exclusively; the others share it.
static COUNTER: RwLock<()> = RwLock::const_new(());

fn manifest(ns: &str, name: &str, replicas: u32, annotations: &[(&str, &str)]) -> String {
    support::deployment_yaml(ns, name, name, replicas, annotations)
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn a_bad_configuration_is_refused_at_apply_with_every_mistake_named() {
    let _shared = COUNTER.read().await;
    let (client, ns) = support::serin_namespace("refuse").await;
    let bad = manifest(
        &ns.name,
        "web",
        2,
        &[
            ("serin.dev/enabled", "true"),
            ("serin.dev/step-weight", "0"),
            ("serin.dev/provider", "istio"),
            ("serin.dev/intervall", "1m"),
            ("serin.dev/port", "9090"),
            ("serin.dev/metrics-provider", "istio"),
        ],
    );
    for args in [
        &["apply", "-f", "-"][..],
        &["apply", "--dry-run=server", "-f", "-"][..],
    ] {
        let (ok, _, stderr) = kubectl(args, Some(&bad));
        assert!(!ok, "kubectl {args:?} must fail");
        assert!(stderr.contains("denied the request"), "{stderr}");
        for expected in [
            "serin.dev/step-weight: \"0\" must be an integer from 1 to 100",
            "serin.dev/provider: \"istio\" is not supported; allowed: linkerd, smi:v1alpha2, gatewayapi, nginx, gloo",
            "serin.dev/intervall: unknown annotation; did you mean serin.dev/interval?",
            "serin.dev/port: \"9090\"",
            "serin.dev/metrics-provider: \"istio\" is not supported; allowed: linkerd, traefik, nginx, envoy",
        ] {
            assert!(
                stderr.contains(expected),
                "missing {expected:?} in:\n{stderr}"
            );
        }
    }
    let deployments: Api<Deployment> = Api::namespaced(client, &ns.name);
    assert!(
        deployments.get_opt("web").await.expect("get").is_none(),
        "nothing was stored"
    );
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn mirroring_and_affinity_off_gatewayapi_are_refused_at_apply_naming_gatewayapi() {
    let _shared = COUNTER.read().await;
    let (client, ns) = support::serin_namespace("mirror").await;
    let with = |provider: &str| {
        manifest(
            &ns.name,
            "web",
            2,
            &[
                ("serin.dev/enabled", "true"),
                ("serin.dev/provider", provider),
                ("serin.dev/mirror-checks", "2"),
                ("serin.dev/affinity-cookie", "serin-canary"),
            ],
        )
    };
    let (ok, _, stderr) = kubectl(&["apply", "-f", "-"], Some(&with("linkerd")));
    assert!(!ok, "kubectl apply must fail");
    for key in ["mirror-checks", "affinity-cookie"] {
        let expected = format!(
            "serin.dev/{key}: needs serin.dev/provider gatewayapi (its router's RequestMirror \
             and ResponseHeaderModifier filters), not linkerd"
        );
        assert!(
            stderr.contains(&expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
    let deployments: Api<Deployment> = Api::namespaced(client, &ns.name);
    assert!(deployments.get_opt("web").await.expect("get").is_none());
    let (ok, _, stderr) = kubectl(
        &["apply", "--dry-run=server", "-f", "-"],
        Some(&with("gatewayapi")),
    );
    assert!(ok, "{stderr}");
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn an_opted_in_deployment_gets_explicit_defaults_and_the_watch_label_and_its_pods_run() {
    let _shared = COUNTER.read().await;
    let (client, ns) = support::serin_namespace("defaults").await;
    let good = manifest(
        &ns.name,
        "web",
        2,
        &[
            ("serin.dev/enabled", "true"),
            ("serin.dev/step-weight", "20"),
        ],
    );
    let (ok, _, stderr) = kubectl(&["apply", "-f", "-"], Some(&good));
    assert!(ok, "apply failed: {stderr}");

    let get_yaml = [
        "-n",
        ns.name.as_str(),
        "get",
        "deployment",
        "web",
        "-o",
        "yaml",
    ];
    let (ok, yaml, stderr) = kubectl(&get_yaml, None);
    assert!(ok, "{stderr}");
    assert!(
        yaml.contains("serin.dev/max-weight: \"50\""),
        "kubectl shows the defaults:\n{yaml}"
    );
    let deployments: Api<Deployment> = Api::namespaced(client, &ns.name);
    let stored = deployments.get("web").await.expect("stored");
    let annotations = stored.metadata.annotations.clone().unwrap_or_default();
    let get = |key: &str| annotations.get(key).map(String::as_str);
    assert_eq!(
        get("serin.dev/step-weight"),
        Some("20"),
        "the user's value is kept"
    );
    assert_eq!(get("serin.dev/max-weight"), Some("50"));
    assert_eq!(get("serin.dev/interval"), Some("1m"));
    assert_eq!(get("serin.dev/threshold"), Some("5"));
    assert_eq!(get("serin.dev/success-rate"), Some("99"));
    assert_eq!(get("serin.dev/latency"), Some("500ms"));
    assert_eq!(get("serin.dev/provider"), Some("linkerd"));
    // Its default follows the provider, so it is not written (a written default would stay
    // behind, and refuse the change, when the provider changes or the Deployment opts out).
    assert_eq!(get("serin.dev/metrics-provider"), None);
    assert_eq!(get("serin.dev/port"), Some("8080"));
    assert_eq!(get("serin.dev/desired-replicas"), Some("2"));
    let label = stored
        .metadata
        .labels
        .unwrap_or_default()
        .get("serin.dev/canary")
        .cloned();
    assert_eq!(label.as_deref(), Some("true"));

    // Its pods run: Serin's controller copies them to web-primary and then scales the
    // opted-in Deployment to zero, so the replicas asked for are ready there.
    wait_until(
        "web-primary to have the 2 ready replicas asked for",
        Duration::from_secs(60),
        || async {
            let d = deployments
                .get_opt("web-primary")
                .await
                .map_err(|e| e.to_string())?;
            match d.and_then(|d| d.status).and_then(|s| s.ready_replicas) {
                Some(2) => Ok(()),
                other => Err(format!("web-primary readyReplicas {other:?}")),
            }
        },
    )
    .await;
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn a_server_side_dry_run_validates_and_mutates_without_storing_anything() {
    let _shared = COUNTER.read().await;
    let (client, ns) = support::serin_namespace("dryrun").await;
    let good = manifest(&ns.name, "web", 2, &[("serin.dev/enabled", "true")]);
    let args = ["apply", "--dry-run=server", "-o", "yaml", "-f", "-"];
    let (ok, out, stderr) = kubectl(&args, Some(&good));
    assert!(ok, "{stderr}");
    assert!(
        out.contains("serin.dev/threshold: \"5\""),
        "the dry run shows the defaults:\n{out}"
    );
    let deployments: Api<Deployment> = Api::namespaced(client, &ns.name);
    let stored = deployments.get_opt("web").await.expect("get");
    assert!(stored.is_none(), "nothing was stored");
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn reapplying_with_another_replica_count_keeps_the_stored_count_and_records_the_request() {
    let _shared = COUNTER.read().await;
    let (client, ns) = support::serin_namespace("replicas").await;
    let annotations = [("serin.dev/enabled", "true")];
    let (ok, _, stderr) = kubectl(
        &["apply", "-f", "-"],
        Some(&manifest(&ns.name, "web", 0, &annotations)),
    );
    assert!(ok, "{stderr}");
    // The canary is idle (zero replicas); a GitOps tool re-applies the same template with
    // `replicas: 3`.
    let (ok, _, stderr) = kubectl(
        &["apply", "-f", "-"],
        Some(&manifest(&ns.name, "web", 3, &annotations)),
    );
    assert!(ok, "{stderr}");
    let deployments: Api<Deployment> = Api::namespaced(client, &ns.name);
    let stored = deployments.get("web").await.expect("stored");
    assert_eq!(
        stored.spec.and_then(|s| s.replicas),
        Some(0),
        "the idle canary stays at 0"
    );
    let desired = stored
        .metadata
        .annotations
        .unwrap_or_default()
        .get("serin.dev/desired-replicas")
        .cloned();
    assert_eq!(
        desired.as_deref(),
        Some("3"),
        "requested count recorded for the primary"
    );
}

async fn reviews_served() -> f64 {
    serin::server::install_crypto_provider();
    let text = reqwest::get(format!("{}/metrics", support::serin_admin_url()))
        .await
        .expect("serin /metrics")
        .text()
        .await
        .expect("metrics text");
    // The Deployment webhooks only: reviews of other objects (managed objects removed with
    // another test's namespace, say) may arrive meanwhile and say nothing about this one.
    text.lines()
        .filter(|l| l.starts_with("serin_admission_requests_total"))
        .filter(|l| {
            l.contains(r#"webhook="validate-deployments""#)
                || l.contains(r#"webhook="mutate-deployments""#)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn deployments_without_serin_annotations_never_reach_the_webhook() {
    if std::env::var_os("KUBECONFIG").is_some() {
        eprintln!("KUBECONFIG is set: Serin's metrics are only readable in the local environment");
        return;
    }
    let _exclusive = COUNTER.write().await;
    let (_client, ns) = support::serin_namespace("bypass").await;
    let before = reviews_served().await;
    let plain = manifest(&ns.name, "plain", 1, &[("example.com/owner", "team-a")]);
    let (ok, _, stderr) = kubectl(&["apply", "-f", "-"], Some(&plain));
    assert!(ok, "{stderr}");
    assert_eq!(
        reviews_served().await,
        before,
        "a plain Deployment was sent to Serin"
    );

    // The counter does move for an annotated one, so the check above can fail.
    let annotated = manifest(&ns.name, "annotated", 1, &[("serin.dev/enabled", "true")]);
    let (ok, _, stderr) = kubectl(&["apply", "-f", "-"], Some(&annotated));
    assert!(ok, "{stderr}");
    assert!(
        reviews_served().await >= before + 2.0,
        "mutate and validate both reviewed it"
    );
}

/// A Flagger Canary's `analysis.metrics` and `webhooks`, pasted into an AnalysisTemplate
/// (written after Flagger's documented examples), pass kubectl's strict field validation and
/// the template webhook; a metric's `interval` survives reading through `v1alpha1`; a
/// `muteAlert: true` is refused naming the field.
#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn a_pasted_flagger_analysis_is_admitted_and_what_does_not_map_is_refused() {
    let _shared = COUNTER.read().await;
    let (_client, ns) = support::serin_namespace("flagger-paste").await;
    let template = format!(
        r#"apiVersion: serin.dev/v1beta1
kind: AnalysisTemplate
metadata: {{name: from-flagger, namespace: {ns}}}
spec:
  metrics:
  - name: request-success-rate
    interval: 1m
    thresholdRange: {{min: 99}}
  - name: request-duration
    interval: 30s
    thresholdRange: {{max: 500}}
  - name: failure-share
    templateRef: {{name: failure-share, namespace: monitoring}}
    thresholdRange: {{max: 2}}
    interval: 2m
    query: 100 * sum(rate(errors{{app="{{{{ target }}}}"}}[{{{{ interval }}}}])) / sum(rate(requests{{app="{{{{ target }}}}"}}[{{{{ interval }}}}]))
  webhooks:
  - name: smoke
    type: pre-rollout
    url: http://loadtester.test/
    timeout: 15s
    metadata: {{type: bash, cmd: "curl -s http://web-canary.test/healthz"}}
  - name: on-call
    type: confirm-promotion
    url: http://gate.test/approve
    muteAlert: false
"#,
        ns = ns.name
    );
    let (ok, stdout, stderr) = kubectl(&["apply", "-f", "-"], Some(&template));
    assert!(ok, "{stdout}\n{stderr}");
    let (ok, alpha, stderr) = kubectl(
        &[
            "-n",
            &ns.name,
            "get",
            "analysistemplates.v1alpha1.serin.dev",
            "from-flagger",
            "-o",
            "jsonpath={.spec.metrics[2].interval} {.spec.metrics[2].templateRef.name}",
        ],
        None,
    );
    assert!(ok, "{stderr}");
    assert_eq!(alpha, "2m failure-share");
    let muted = template.replace("muteAlert: false", "muteAlert: true");
    let (ok, _, stderr) = kubectl(&["apply", "-f", "-"], Some(&muted));
    assert!(!ok, "muteAlert: true must be refused");
    assert!(
        stderr.contains("spec.webhooks[1].muteAlert: true is not supported"),
        "{stderr}"
    );
}
