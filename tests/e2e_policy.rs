//! Serin's CRDs and CanaryPolicy through the real API server with the built kubectl:
//! conversion between `v1alpha1` and `v1beta1`, the validating webhooks of AnalysisTemplate
//! and CanaryPolicy, and each policy rule accepting and refusing Deployments.
//!
//! CanaryPolicy is cluster-scoped: every policy here selects only its test's namespace, so
//! tests running beside it are not affected, and is deleted when the test ends.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{TestNamespace, kubectl, wait_until};

fn apply(yaml: &str) -> (bool, String) {
    let (ok, stdout, stderr) = kubectl(&["apply", "-f", "-"], Some(yaml));
    (ok, format!("{stdout}{stderr}"))
}

fn get_json(resource: &str, ns: Option<&str>, name: &str) -> Value {
    let mut args = vec!["get", resource, name, "-o", "json"];
    if let Some(ns) = ns {
        args.extend(["-n", ns]);
    }
    let (ok, stdout, stderr) = kubectl(&args, None);
    assert!(ok, "kubectl get {resource} {name}: {stderr}");
    serde_json::from_str(&stdout).expect("kubectl prints JSON")
}

/// A CanaryPolicy covering only namespace `ns`, deleted on drop.
struct Policy {
    name: String,
}

impl Policy {
    fn create(ns: &str, spec: &str) -> Self {
        let name = format!("{ns}-policy");
        let yaml = format!(
            "apiVersion: serin.dev/v1beta1\nkind: CanaryPolicy\nmetadata: {{name: {name}}}\n\
             spec:\n  namespaceSelector: {{matchLabels: {{kubernetes.io/metadata.name: {ns}}}}}\n{spec}"
        );
        let (ok, out) = apply(&yaml);
        assert!(ok, "creating {name}: {out}");
        Policy { name }
    }
}

impl Drop for Policy {
    fn drop(&mut self) {
        let _ = kubectl(
            &[
                "delete",
                "canarypolicy",
                &self.name,
                "--ignore-not-found",
                "--wait=false",
            ],
            None,
        );
    }
}

fn deployment(ns: &str, name: &str, annotations: &[(&str, &str)]) -> String {
    support::plain_deployment(ns, name, name, annotations)
}

/// Waits until the webhook's policy cache refuses `yaml` (a server-side dry run), then
/// returns the refusal of the real apply.
async fn refused_once_the_policy_is_seen(yaml: &str) -> String {
    wait_until(
        "the webhook to apply the new CanaryPolicy",
        Duration::from_secs(15),
        || async {
            let (ok, _, _) = kubectl(&["apply", "--dry-run=server", "-f", "-"], Some(yaml));
            (!ok)
                .then_some(())
                .ok_or_else(|| "still admitted".to_owned())
        },
    )
    .await;
    let (ok, out) = apply(yaml);
    assert!(!ok, "the apply must be refused:\n{out}");
    out
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn an_analysis_template_written_as_v1alpha1_reads_back_as_v1beta1_and_again_unchanged() {
    let (_, ns) = support::serin_namespace("conv-template").await;
    let spec = json!({
        "metrics": [
            {"name": "errors", "query": "sum(rate(errors{namespace=\"{{ namespace }}\"}[{{ interval }}]))", "max": 1.5},
            {"name": "request-success-rate", "min": 99}
        ],
        "webhooks": [{"name": "load", "type": "rollout", "url": "http://loadtester.test/", "timeout": "30s", "retries": 2}]
    });
    let object = json!({"apiVersion": "serin.dev/v1alpha1", "kind": "AnalysisTemplate",
                        "metadata": {"name": "checks", "namespace": ns.name}, "spec": spec});
    let (ok, out) = apply(&object.to_string());
    assert!(ok, "{out}");

    let beta = get_json(
        "analysistemplates.v1beta1.serin.dev",
        Some(&ns.name),
        "checks",
    );
    assert_eq!(beta["apiVersion"], "serin.dev/v1beta1");
    assert_eq!(
        beta["spec"]["metrics"][0]["thresholdRange"],
        json!({"max": 1.5})
    );
    assert_eq!(
        beta["spec"]["metrics"][1]["thresholdRange"],
        json!({"min": 99})
    );
    assert_eq!(beta["spec"]["metrics"][0]["noData"], "fail");

    let alpha = get_json(
        "analysistemplates.v1alpha1.serin.dev",
        Some(&ns.name),
        "checks",
    );
    assert_eq!(alpha["apiVersion"], "serin.dev/v1alpha1");
    assert_eq!(
        alpha["spec"], spec,
        "the v1alpha1 spec reads back as written"
    );

    // A v1beta1-only field survives a write through v1alpha1.
    let (ok, _, stderr) = kubectl(
        &[
            "patch",
            "analysistemplates.v1beta1.serin.dev",
            "checks",
            "-n",
            &ns.name,
            "--type",
            "json",
            "-p",
            r#"[{"op":"replace","path":"/spec/metrics/0/noData","value":"skip"},
                {"op":"add","path":"/spec/metrics/0/address","value":"https://thanos.test:10902"},
                {"op":"add","path":"/spec/metrics/0/secretRef","value":{"name":"thanos-auth"}}]"#,
        ],
        None,
    );
    assert!(ok, "{stderr}");
    let mut alpha = get_json(
        "analysistemplates.v1alpha1.serin.dev",
        Some(&ns.name),
        "checks",
    );
    alpha["spec"]["webhooks"][0]["retries"] = json!(3);
    for key in ["resourceVersion", "managedFields"] {
        alpha["metadata"]
            .as_object_mut()
            .expect("metadata")
            .remove(key);
    }
    let (ok, _, stderr) = kubectl(&["replace", "-f", "-"], Some(&alpha.to_string()));
    assert!(ok, "{stderr}");
    let beta = get_json(
        "analysistemplates.v1beta1.serin.dev",
        Some(&ns.name),
        "checks",
    );
    assert_eq!(beta["spec"]["metrics"][0]["noData"], "skip", "{beta}");
    assert_eq!(
        beta["spec"]["metrics"][0]["secretRef"],
        json!({"name": "thanos-auth"}),
        "{beta}"
    );
    assert_eq!(beta["spec"]["webhooks"][0]["retries"], 3);
    assert!(
        beta["metadata"]["annotations"]
            .get("serin.dev/v1beta1-fields")
            .is_none(),
        "the carrier annotation is not stored: {beta}"
    );
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn a_canary_policy_written_as_v1alpha1_reads_back_as_v1beta1_and_again_unchanged() {
    let (_, ns) = support::serin_namespace("conv-policy").await;
    let name = format!("{}-alpha", ns.name);
    let spec = json!({
        "match": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns.name}}},
        "auditOnly": true,
        "limits": {"maxStepWeight": 20, "minSuccessRate": 99.5, "minInterval": "30s"},
        "defaults": {"stepWeight": 10, "provider": "linkerd"}
    });
    let object = json!({"apiVersion": "serin.dev/v1alpha1", "kind": "CanaryPolicy",
                        "metadata": {"name": name}, "spec": spec});
    let (ok, out) = apply(&object.to_string());
    let _cleanup = Policy { name: name.clone() };
    assert!(ok, "{out}");

    let beta = get_json("canarypolicies.v1beta1.serin.dev", None, &name);
    assert_eq!(beta["spec"]["enforcement"], "warn");
    assert_eq!(
        beta["spec"]["namespaceSelector"],
        spec["match"]["namespaceSelector"]
    );
    assert!(beta["spec"].get("match").is_none());
    let alpha = get_json("canarypolicies.v1alpha1.serin.dev", None, &name);
    assert_eq!(alpha["spec"], spec);
    let (ok, wide, _) = kubectl(&["get", "canarypolicies", &name, "-o", "wide"], None);
    assert!(
        ok && wide.contains("ENFORCEMENT") && wide.contains("warn"),
        "{wide}"
    );
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn analysis_template_mistakes_are_refused_in_either_version_with_each_field_named() {
    let (_, ns) = support::serin_namespace("template-refused").await;
    let beta = format!(
        "apiVersion: serin.dev/v1beta1\nkind: AnalysisTemplate\nmetadata: {{name: bad, namespace: {}}}\nspec:\n  metrics:\n  - {{name: errors, query: 'sum({{{{ pod }}}})', thresholdRange: {{min: 5, max: 1}}}}\n  webhooks:\n  - {{name: load, type: rollout, url: 'ftp://files.test/'}}\n",
        ns.name
    );
    let (ok, out) = apply(&beta);
    assert!(!ok, "{out}");
    for expected in [
        "AnalysisTemplate \"bad\": 3 mistakes",
        "spec.metrics[0].query: the query uses {{ pod }}",
        "spec.metrics[0].thresholdRange: min 5 is larger than max 1",
        "spec.webhooks[0].url",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
    let alpha = format!(
        "apiVersion: serin.dev/v1alpha1\nkind: AnalysisTemplate\nmetadata: {{name: bad, namespace: {}}}\nspec:\n  metrics:\n  - {{name: errors, query: 'sum(x)', min: 5, max: 1}}\n",
        ns.name
    );
    let (ok, out) = apply(&alpha);
    assert!(!ok, "{out}");
    assert!(
        out.contains("spec.metrics[0].thresholdRange: min 5 is larger than max 1"),
        "{out}"
    );
    let good = alpha.replace("min: 5, max: 1", "min: 0, max: 1");
    let (ok, out) = apply(&good);
    assert!(ok, "{out}");
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn a_canary_policy_with_mistakes_is_refused_with_each_field_named() {
    let (_, ns) = support::serin_namespace("policy-refused").await;
    let name = format!("{}-bad", ns.name);
    let yaml = format!(
        "apiVersion: serin.dev/v1beta1\nkind: CanaryPolicy\nmetadata: {{name: {name}}}\nspec:\n  selector:\n    matchExpressions: [{{key: app, operator: Has}}]\n  defaults: {{stepWeight: 30}}\n  limits: {{maxStepWeight: 10}}\n  allowedWebhookHosts: ['https://hooks.test']\n"
    );
    let (ok, out) = apply(&yaml);
    let _cleanup = Policy { name };
    assert!(!ok, "{out}");
    for expected in [
        "spec.selector.matchExpressions[0].operator: \"Has\" is not an operator; allowed: In, NotIn, Exists, DoesNotExist",
        "spec.defaults.stepWeight: 30 is outside spec.limits.maxStepWeight 10",
        "spec.allowedWebhookHosts[0]",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn require_canary_refuses_a_deployment_that_does_not_opt_in_and_admits_one_that_does() {
    let (_, ns) = support::serin_namespace("require").await;
    let policy = Policy::create(&ns.name, "  requireCanary: true\n");
    let plain = deployment(&ns.name, "plain", &[]);
    let out = refused_once_the_policy_is_seen(&plain).await;
    assert!(out.contains("must release as canaries"), "{out}");
    assert!(
        out.contains(&format!("(CanaryPolicy {})", policy.name)),
        "{out}"
    );
    let (ok, out) = apply(&deployment(
        &ns.name,
        "web",
        &[("serin.dev/enabled", "true")],
    ));
    assert!(ok, "{out}");
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn limits_refuse_a_configuration_beyond_them_and_admit_one_within() {
    let (_, ns) = support::serin_namespace("limits").await;
    let policy = Policy::create(
        &ns.name,
        "  limits: {maxStepWeight: 20, minSuccessRate: 99, maxLatency: 300ms}\n",
    );
    let beyond = deployment(
        &ns.name,
        "web",
        &[
            ("serin.dev/enabled", "true"),
            ("serin.dev/step-weight", "30"),
            ("serin.dev/latency", "1s"),
        ],
    );
    let out = refused_once_the_policy_is_seen(&beyond).await;
    for expected in [
        format!(
            "serin.dev/step-weight: a step of 30 exceeds the limit maxStepWeight 20 (CanaryPolicy {})",
            policy.name
        ),
        format!(
            "serin.dev/latency: 1s exceeds the limit maxLatency 300ms (CanaryPolicy {})",
            policy.name
        ),
    ] {
        assert!(out.contains(&expected), "missing {expected:?} in:\n{out}");
    }
    let within = deployment(
        &ns.name,
        "web",
        &[
            ("serin.dev/enabled", "true"),
            ("serin.dev/step-weight", "20"),
            ("serin.dev/latency", "300ms"),
        ],
    );
    let (ok, out) = apply(&within);
    assert!(ok, "{out}");
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn policy_defaults_are_filled_where_the_deployment_says_nothing() {
    let (_, ns) = support::serin_namespace("defaults").await;
    let _policy = Policy::create(
        &ns.name,
        "  defaults: {stepWeight: 5, successRate: 99.9}\n  limits: {maxStepWeight: 5}\n",
    );
    // Within the limits only thanks to the default: without it the step would be 10.
    let yaml = deployment(
        &ns.name,
        "web",
        &[
            ("serin.dev/enabled", "true"),
            ("serin.dev/success-rate", "98"),
        ],
    );
    let annotations = wait_until(
        "the policy's defaults to be filled",
        Duration::from_secs(15),
        || async {
            let (ok, stdout, _) = kubectl(
                &["apply", "--dry-run=server", "-o", "json", "-f", "-"],
                Some(&yaml),
            );
            let object: Value = serde_json::from_str(&stdout).unwrap_or(Value::Null);
            let annotations = object["metadata"]["annotations"].clone();
            (ok && annotations["serin.dev/step-weight"] == "5")
                .then_some(annotations.clone())
                .ok_or_else(|| format!("annotations {annotations}"))
        },
    )
    .await;
    assert_eq!(
        annotations["serin.dev/success-rate"], "98",
        "what the user wrote stays"
    );
    let (ok, out) = apply(&yaml);
    assert!(ok, "{out}");
    let stored = get_json("deployment", Some(&ns.name), "web");
    assert_eq!(
        stored["metadata"]["annotations"]["serin.dev/step-weight"],
        "5"
    );
}

fn template(ns: &str, url: &str) -> String {
    format!(
        "apiVersion: serin.dev/v1beta1\nkind: AnalysisTemplate\nmetadata: {{name: checks, namespace: {ns}}}\nspec:\n  webhooks:\n  - {{name: load, type: rollout, url: '{url}'}}\n"
    )
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn webhook_hosts_outside_the_allowed_list_are_refused_and_those_inside_admitted() {
    let (_, ns) = support::serin_namespace("hosts").await;
    let _policy = Policy::create(&ns.name, "  allowedWebhookHosts: ['*.hooks.test']\n");
    let (ok, out) = apply(&template(&ns.name, "http://evil.example.test/run"));
    assert!(ok, "{out}");
    let yaml = deployment(
        &ns.name,
        "web",
        &[
            ("serin.dev/enabled", "true"),
            ("serin.dev/analysis", "checks"),
        ],
    );
    let out = refused_once_the_policy_is_seen(&yaml).await;
    assert!(
        out.contains("calls evil.example.test, which is not in allowedWebhookHosts [*.hooks.test]"),
        "{out}"
    );
    let (ok, out) = apply(&template(&ns.name, "http://load.hooks.test/run"));
    assert!(ok, "{out}");
    let (ok, out) = apply(&yaml);
    assert!(ok, "{out}");
}

fn template_with(ns: &str, name: &str, hook_url: &str, metric_address: Option<&str>) -> String {
    let metric = match metric_address {
        Some(address) => format!(
            "  metrics:\n  - {{name: request-success-rate, thresholdRange: {{min: 99}}, address: '{address}'}}\n"
        ),
        None => String::new(),
    };
    format!(
        "apiVersion: serin.dev/v1beta1\nkind: AnalysisTemplate\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{metric}  webhooks:\n  - {{name: load, type: rollout, url: '{hook_url}'}}\n"
    )
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn an_analysis_template_edited_after_its_deployment_was_admitted_is_held_to_its_policies() {
    let (_, ns) = support::serin_namespace("template-bypass").await;
    let _policy = Policy::create(
        &ns.name,
        "  limits: {minSuccessRate: 99}\n  allowedWebhookHosts: ['*.hooks.test']\n  allowedMetricsHosts: ['prometheus.monitoring.test']\n",
    );
    let allowed = template_with(
        &ns.name,
        "checks",
        "http://load.hooks.test/run",
        Some("http://prometheus.monitoring.test:9090"),
    );
    let (ok, out) = apply(&allowed);
    assert!(ok, "{out}");
    let yaml = deployment(
        &ns.name,
        "web",
        &[
            ("serin.dev/enabled", "true"),
            ("serin.dev/analysis", "checks"),
        ],
    );
    let (ok, out) = apply(&yaml);
    assert!(
        ok,
        "the Deployment and its template keep to the policy: {out}"
    );

    // A webhook aimed at Serin's own admin port, through the template alone.
    let out = refused_once_the_policy_is_seen(&template_with(
        &ns.name,
        "checks",
        "http://127.0.0.1:8081/metrics",
        Some("http://prometheus.monitoring.test:9090"),
    ))
    .await;
    assert!(
        out.contains("AnalysisTemplate \"checks\": refused by CanaryPolicy"),
        "{out}"
    );
    assert!(
        out.contains("calls 127.0.0.1, which is not in allowedWebhookHosts [*.hooks.test]"),
        "{out}"
    );
    // A stand-in Prometheus that would report 100 % for a failing canary.
    let (ok, out) = apply(&template_with(
        &ns.name,
        "checks",
        "http://load.hooks.test/run",
        Some("http://fake-prometheus.test:9090"),
    ));
    assert!(!ok, "a metric address outside allowedMetricsHosts: {out}");
    assert!(
        out.contains(
            "asks Prometheus at fake-prometheus.test, which is not in allowedMetricsHosts \
             [prometheus.monitoring.test]"
        ),
        "{out}"
    );
    assert!(out.contains("the limit minSuccessRate holds only"), "{out}");
    // The template as it was is still there, and still allowed.
    let stored = get_json("analysistemplate", Some(&ns.name), "checks");
    assert_eq!(
        stored["spec"]["webhooks"][0]["url"],
        "http://load.hooks.test/run"
    );
    let (ok, out) = apply(&allowed);
    assert!(ok, "{out}");
    // A template no covered Deployment names is not theirs to judge.
    let (ok, out) = apply(&template_with(
        &ns.name,
        "unused",
        "http://127.0.0.1:8081/metrics",
        None,
    ));
    assert!(ok, "{out}");
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn a_warn_policy_admits_and_shows_its_findings_as_warnings() {
    let (_, ns) = support::serin_namespace("warn").await;
    let policy = Policy::create(
        &ns.name,
        "  enforcement: warn\n  requireCanary: true\n  limits: {maxStepWeight: 10}\n",
    );
    let yaml = deployment(
        &ns.name,
        "web",
        &[
            ("serin.dev/enabled", "true"),
            ("serin.dev/step-weight", "25"),
        ],
    );
    let out = wait_until(
        "the warn policy to be seen",
        Duration::from_secs(15),
        || async {
            let (ok, out) = apply(&yaml);
            assert!(ok, "a warn policy never refuses: {out}");
            out.contains("Warning:")
                .then_some(out.clone())
                .ok_or_else(|| format!("no warning yet: {out}"))
        },
    )
    .await;
    assert!(
        out.contains(&format!(
            "a step of 25 exceeds the limit maxStepWeight 10 (CanaryPolicy {}) [enforcement: warn]",
            policy.name
        )),
        "{out}"
    );
    // requireCanary in warn mode: the API server's own admission policy
    // (manifests/require-canary.yaml) warns; it is in force a moment after the policy is. A server-side
    // dry-run create goes through admission every time (an apply of an unchanged object
    // sends nothing).
    let plain = deployment(&ns.name, "plain", &[]);
    let out = wait_until(
        "the requireCanary warning",
        Duration::from_secs(15),
        || async {
            let (ok, stdout, stderr) =
                kubectl(&["create", "--dry-run=server", "-f", "-"], Some(&plain));
            let out = format!("{stdout}{stderr}");
            assert!(ok, "a warn policy never refuses: {out}");
            out.contains("must release as canaries")
                .then_some(out.clone())
                .ok_or_else(|| format!("no warning yet: {out}"))
        },
    )
    .await;
    assert!(
        out.contains(&format!("(CanaryPolicy {})", policy.name)),
        "{out}"
    );
}

/// requireCanary is enforced by the API server through the fixed policies of
/// manifests/require-canary.yaml, which take every CanaryPolicy as a parameter and match its
/// selectors in CEL: Serin writes no admission policy.
#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn require_canary_is_enforced_by_the_api_server_following_the_policys_selectors() {
    let (_, ns) = support::serin_namespace("require-vap").await;
    let policy = Policy::create(
        &ns.name,
        "  requireCanary: true\n  selector: {matchExpressions: [{key: tier, operator: In, values: [prod, edge]}]}\n",
    );
    let labelled = |name: &str, tier: &str| {
        deployment(&ns.name, name, &[]).replacen(
            &format!("  namespace: {}\n", ns.name),
            &format!("  namespace: {}\n  labels: {{tier: {tier}}}\n", ns.name),
            1,
        )
    };
    // A covered Deployment without serin.dev/ annotations is refused by the API server
    // itself (Serin's webhooks never see it), naming the CanaryPolicy.
    let out = refused_once_the_policy_is_seen(&labelled("prod", "prod")).await;
    assert!(
        out.contains("ValidatingAdmissionPolicy 'serin-require-canary'"),
        "{out}"
    );
    assert!(
        out.contains(&format!("(CanaryPolicy {})", policy.name)),
        "{out}"
    );
    // One the selector leaves out is admitted.
    let (ok, out) = apply(&labelled("dev", "dev"));
    assert!(ok, "a Deployment the policy does not select: {out}");
    // No longer requiring canaries admits it.
    let (ok, out) = apply(&format!(
        "apiVersion: serin.dev/v1beta1\nkind: CanaryPolicy\nmetadata: {{name: {}}}\nspec:\n  requireCanary: false\n",
        policy.name
    ));
    assert!(ok, "{out}");
    wait_until(
        "the admission policy to follow the CanaryPolicy",
        Duration::from_secs(15),
        || async {
            let (ok, _, err) = kubectl(
                &["apply", "--dry-run=server", "-f", "-"],
                Some(&labelled("prod", "prod")),
            );
            ok.then_some(()).ok_or(err)
        },
    )
    .await;
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn naming_an_analysis_template_that_does_not_exist_is_refused() {
    let (_, ns) = support::serin_namespace("no-template").await;
    let yaml = deployment(
        &ns.name,
        "web",
        &[
            ("serin.dev/enabled", "true"),
            ("serin.dev/analysis", "missing"),
        ],
    );
    let (ok, out) = apply(&yaml);
    assert!(!ok, "{out}");
    assert!(
        out.contains("serin.dev/analysis: AnalysisTemplate \"missing\" does not exist"),
        "{out}"
    );
}

/// A `confirm-rollout` gate that would open at once, counting its calls.
async fn open_gate() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let calls = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let app = axum::Router::new().route(
        "/gate",
        axum::routing::post(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async { "open" }
        }),
    );
    let url = format!("{}gate", support::serve_on_loopback(app).await);
    (url, calls)
}

fn gate_template(ns: &str, hook: &str, url: &str) -> String {
    format!(
        "apiVersion: serin.dev/v1beta1\nkind: AnalysisTemplate\nmetadata: {{name: gates, namespace: {ns}}}\nspec:\n  webhooks:\n  - {{name: {hook}, type: confirm-rollout, url: '{url}', timeout: 2s}}\n"
    )
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn a_release_whose_template_a_newer_policy_forbids_calls_nothing_and_holds() {
    use serin::release::Phase;
    use support::release::{Version, canary, events, manifest, wait_phase};
    support::release_environment();
    let client = support::client().await;
    let ns = TestNamespace::create(&client, "template-recheck").await;
    let ns = &ns.name;
    let (url, calls) = open_gate().await;
    let (ok, out) = apply(&gate_template(ns, "gate", &url));
    assert!(ok, "{out}");
    let config = |value: &str| support::release::config_map(ns, "web-config", "greeting", value);
    support::release::apply(&config("hello"));
    // The Deployment reads a tracked ConfigMap: a change of it is a new revision that no
    // Deployment write (and so no Deployment admission) comes with.
    let extra = [("serin.dev/analysis", "gates")];
    let deployment = manifest(ns, "web", &Version::good("v1"), &extra);
    let deployment = support::release::reading_config(&deployment, "web-config");
    support::release::apply(&deployment);
    let settle = Duration::from_secs(60);
    wait_phase(&client, ns, "web", Phase::Initialized, settle).await;

    // The policy comes after the template and the Deployment were admitted.
    let _policy = Policy::create(ns, "  allowedWebhookHosts: ['*.hooks.test']\n");
    let out = refused_once_the_policy_is_seen(&gate_template(ns, "gate-2", &url)).await;
    assert!(out.contains("calls 127.0.0.1"), "{out}");
    support::release::apply(&config("bonjour"));
    wait_phase(&client, ns, "web", Phase::Waiting, Duration::from_secs(60)).await;
    let said = wait_until(
        "a PolicyViolation Event",
        Duration::from_secs(30),
        || async {
            let all = events(&client, ns, "web").await;
            all.into_iter()
                .find(|e| e.starts_with("PolicyViolation: "))
                .ok_or_else(|| "none yet".to_owned())
        },
    )
    .await;
    assert!(
        said.contains("calls 127.0.0.1, which is not in allowedWebhookHosts [*.hooks.test]"),
        "{said}"
    );
    // Held at the gate, whose webhook (open, had it been asked) was never called.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let status = canary(&client, ns, "web")
        .await
        .and_then(|c| c.status)
        .expect("status");
    assert_eq!(status.release.phase, Phase::Waiting);
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 0);
}
