use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use kube::core::conversion::ConversionRequest;
use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::crd::{
    Alert, AlertSeverity, AlertType, CanaryPolicySpec, Enforcement, PolicyDefaults, PolicyLimits,
    SecretRef,
};
use crate::crd::{
    AnalysisTemplateSpec, CanaryPolicyResourceSpec, CanaryResourceSpec, HookType, MetricTemplate,
    NoDataPolicy, TemplateRef, ThresholdRange, WebhookTemplate,
};
use crate::spec::{
    CanarySpec, Compare, Duration, GatewayRef, MatchRule, MetricsProvider, Provider,
};

fn duration() -> impl Strategy<Value = Duration> {
    (0u64..100_000_000).prop_map(Duration::from_millis)
}

fn name() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9-]{0,8}"
}

fn bound() -> impl Strategy<Value = Option<f64>> {
    prop::option::of(-1.0e6..1.0e6f64)
}

fn webhook() -> impl Strategy<Value = WebhookTemplate> {
    let types = prop::sample::select(vec![
        HookType::ConfirmRollout,
        HookType::PreRollout,
        HookType::Rollout,
        HookType::ConfirmTrafficIncrease,
        HookType::ConfirmPromotion,
        HookType::PostRollout,
        HookType::Rollback,
        HookType::Event,
    ]);
    (
        name(),
        types,
        "https?://[a-z]{1,8}(\\.[a-z]{1,5})?(:[0-9]{2,4})?/[a-z]{0,6}",
        prop::option::of(duration()),
        prop::option::of(0u32..=10),
        prop::collection::btree_map("[a-z]{1,5}", ".{0,8}", 0..3),
        prop::option::of(any::<bool>()),
    )
        .prop_map(
            |(name, type_, url, timeout, retries, metadata, mute_alert)| WebhookTemplate {
                name,
                type_,
                url,
                timeout,
                retries,
                mute_alert,
                metadata,
            },
        )
}

/// Valid templates have unique metric names (the validating webhook refuses duplicates).
fn template() -> impl Strategy<Value = AnalysisTemplateSpec> {
    let metric = (
        prop::option::of("sum\\(rate\\([a-z_]{1,10}\\[\\{\\{ interval \\}\\}\\]\\)\\)"),
        bound(),
        bound(),
        prop::option::of("http://[a-z]{1,8}:9090"),
        prop::sample::select(vec![NoDataPolicy::Fail, NoDataPolicy::Skip]),
        prop::option::of("[a-z][a-z0-9-]{0,20}"),
        // Flagger's fields: interval, templateRef (name, namespace), templateVariables,
        // threshold.
        prop::option::of(duration()),
        prop::option::of(("[a-z][a-z0-9-]{0,20}", prop::option::of("[a-z]{1,8}"))),
        prop::collection::btree_map("[a-z]{1,5}", "[a-z0-9]{0,8}", 0..2),
        prop::option::of(0.0f64..100.0),
    );
    (
        prop::collection::vec(metric, 0..5),
        prop::collection::vec(webhook(), 0..4),
    )
        .prop_map(|(metrics, webhooks)| AnalysisTemplateSpec {
            metrics: metrics
                .into_iter()
                .enumerate()
                .map(
                    |(
                        i,
                        (
                            query,
                            min,
                            max,
                            address,
                            no_data,
                            secret,
                            interval,
                            template_ref,
                            template_variables,
                            threshold,
                        ),
                    )| MetricTemplate {
                        name: format!("metric-{i}"),
                        query,
                        threshold_range: ThresholdRange { min, max },
                        address,
                        secret_ref: secret.map(|name| SecretRef { name }),
                        no_data,
                        interval,
                        template_ref: template_ref
                            .map(|(name, namespace)| TemplateRef { name, namespace }),
                        template_variables,
                        threshold,
                    },
                )
                .collect(),
            webhooks,
        })
}

fn selector() -> impl Strategy<Value = Option<LabelSelector>> {
    let requirement = (
        "[a-z]{1,6}",
        prop::sample::select(vec!["In", "NotIn", "Exists", "DoesNotExist"]),
        prop::option::of(prop::collection::vec("[a-z0-9]{1,5}", 1..3)),
    )
        .prop_map(|(key, operator, values)| LabelSelectorRequirement {
            key,
            operator: operator.to_owned(),
            values,
        });
    prop::option::of(
        (
            prop::option::of(prop::collection::btree_map(
                "[a-z]{1,6}",
                "[a-z0-9]{0,5}",
                0..3,
            )),
            prop::option::of(prop::collection::vec(requirement, 0..3)),
        )
            .prop_map(|(match_labels, match_expressions)| LabelSelector {
                match_labels,
                match_expressions,
            }),
    )
}

fn policy() -> impl Strategy<Value = CanaryPolicySpec> {
    let defaults = (
        prop::option::of(prop::sample::select(Provider::ALL.to_vec())),
        prop::option::of(duration()),
        prop::option::of(1u32..1000),
        prop::option::of(1u32..=100),
        prop::option::of(1u32..=100),
        prop::option::of(0.0..=100.0f64),
        prop::option::of(duration()),
    )
        .prop_map(
            |(provider, interval, threshold, step_weight, max_weight, success_rate, latency)| {
                PolicyDefaults {
                    provider,
                    interval,
                    threshold,
                    step_weight,
                    max_weight,
                    success_rate,
                    latency,
                    ..Default::default()
                }
            },
        );
    let limits = (
        prop::option::of(1u32..=100),
        prop::option::of(1u32..=100),
        prop::option::of(duration()),
        prop::option::of(1u32..1000),
        prop::option::of(0.0..=100.0f64),
        prop::option::of(duration()),
        prop::option::of(0u32..=100),
    )
        .prop_map(
            |(
                max_step_weight,
                max_weight,
                min_interval,
                min_threshold,
                min_success_rate,
                max_latency,
                max_mirror_percent,
            )| {
                PolicyLimits {
                    max_step_weight,
                    max_weight,
                    min_interval,
                    min_threshold,
                    min_success_rate,
                    max_latency,
                    max_mirror_percent,
                    ..Default::default()
                }
            },
        );
    (
        selector(),
        selector(),
        prop::option::of(any::<bool>()),
        prop::option::of(defaults),
        prop::option::of(limits),
        prop::option::of(prop::collection::vec("(\\*\\.)?[a-z]{1,6}\\.example", 0..3)),
        prop::option::of(prop::collection::vec("(\\*\\.)?[a-z]{1,6}\\.example", 0..3)),
        prop::option::of(prop::sample::select(vec![
            Enforcement::Deny,
            Enforcement::Warn,
        ])),
        prop::option::of(prop::collection::vec(alert(), 0..3)),
    )
        .prop_map(
            |(
                namespace_selector,
                selector,
                require_canary,
                defaults,
                limits,
                hosts,
                metrics_hosts,
                enforcement,
                alerts,
            )| {
                CanaryPolicySpec {
                    namespace_selector,
                    selector,
                    require_canary,
                    defaults,
                    limits,
                    allowed_webhook_hosts: hosts,
                    allowed_metrics_hosts: metrics_hosts,
                    enforcement,
                    alerts,
                }
            },
        )
}

fn alert() -> impl Strategy<Value = Alert> {
    (
        name(),
        prop::sample::select(AlertType::ALL.to_vec()),
        prop::option::of(prop::sample::select(vec![
            AlertSeverity::Info,
            AlertSeverity::Warn,
            AlertSeverity::Error,
        ])),
        name(),
        prop::option::of("#[a-z]{1,8}"),
        prop::option::of(name()),
    )
        .prop_map(|(name, type_, severity, secret, channel, username)| Alert {
            name,
            type_,
            severity,
            secret_ref: SecretRef { name: secret },
            channel,
            username,
        })
}

fn canary() -> impl Strategy<Value = CanarySpec> {
    let rule = prop_oneof![
        ("[a-z-]{1,8}", "[a-z0-9]{1,6}")
            .prop_map(|(name, value)| MatchRule::HeaderExact { name, value }),
        ("[a-z-]{1,8}", "\\^[a-z]{1,6}")
            .prop_map(|(name, regex)| MatchRule::HeaderRegex { name, regex }),
        "[a-z-]{1,8}".prop_map(|name| MatchRule::Cookie { name }),
    ];
    let routing = (
        prop::sample::select(Provider::ALL.to_vec()),
        prop::option::of(1i32..65536),
        name(),
        prop::option::of(name()),
        prop::option::of(
            (name(), name()).prop_map(|(namespace, name)| GatewayRef { namespace, name }),
        ),
        prop::option::of(prop::sample::select(MetricsProvider::ALL.to_vec())),
        prop::collection::vec("(\\*\\.)?[a-z]{1,6}\\.test", 0..3),
    );
    let analysis = (
        duration(),
        1u32..1000,
        prop::option::of(1u32..=100),
        prop::option::of(prop::collection::vec(1u32..=100, 1..5)),
        1u32..=100,
        prop::option::of(1u32..1000),
        prop::collection::vec(rule, 0..3),
        0.0..=100.0f64,
        duration(),
        duration(),
        prop::option::of(name()),
        any::<bool>(),
    );
    let extras = (
        prop::option::of(1u32..=100),
        prop::option::of(1u32..=100),
        prop::option::of("[a-z_-]{1,12}"),
        prop::option::of(duration()),
    );
    let sequential = (
        any::<bool>(),
        prop::sample::select(Compare::ALL.to_vec()),
        0.0..=100.0f64,
        90.0..=99.9f64,
    );
    (routing, analysis, (extras, sequential)).prop_map(
        |(
            (provider, port, service, ingress, gateway, metrics_provider, hosts),
            (
                interval,
                threshold,
                step_weight,
                step_weights,
                max_weight,
                iterations,
                matches,
                success_rate,
                latency,
                metrics_window,
                analysis,
                skip_analysis,
            ),
            (
                (mirror_checks, mirror_percent, affinity_cookie, affinity_max_age),
                (sequential_checks, compare, compare_margin, confidence),
            ),
        )| CanarySpec {
            provider,
            port,
            service,
            ingress,
            gateway,
            hosts,
            interval,
            threshold,
            step_weight,
            step_weights,
            max_weight,
            iterations,
            matches,
            success_rate,
            latency,
            mirror_checks,
            mirror_percent,
            affinity_cookie,
            affinity_max_age,
            metrics_provider,
            metrics_window,
            analysis,
            skip_analysis,
            sequential_checks,
            compare,
            compare_margin,
            confidence,
        },
    )
}

/// Metadata as the API server sends it, with annotations of the user's own.
fn metadata() -> impl Strategy<Value = Value> {
    prop::collection::btree_map("[a-z./-]{1,12}", ".{0,10}", 0..3).prop_map(|annotations| {
        let mut meta = json!({
            "name": "web",
            "namespace": "shop",
            "uid": "6b3a0c0e-1f1d-4c8e-9d7a-1c2b3d4e5f60",
            "resourceVersion": "4242",
            "generation": 3,
            "labels": {"team": "payments"},
        });
        if !annotations.is_empty() {
            meta["annotations"] = json!(annotations);
        }
        meta
    })
}

fn object(kind: &str, version: &str, metadata: Value, spec: Value) -> Value {
    json!({"apiVersion": format!("serin.dev/{version}"), "kind": kind, "metadata": metadata, "spec": spec})
}

fn round_trip(object: &Value, via: Version, back: Version) -> Value {
    let there = convert_object(object.clone(), via).expect("converts");
    convert_object(there, back).expect("converts back")
}

fn beta_object(kind: &str, spec: impl serde::Serialize, metadata: Value) -> Value {
    object(
        kind,
        "v1beta1",
        metadata,
        serde_json::to_value(spec).expect("spec"),
    )
}

/// A `v1alpha1` object as a user would write it: the `v1beta1` value taken down without
/// anything to carry.
fn alpha_object<K: Versions>(kind: &str, beta: K::Beta, metadata: Value) -> Option<Value> {
    let (alpha, carried) = K::down(beta);
    (carried == K::Carried::default()).then(|| {
        object(
            kind,
            "v1alpha1",
            metadata,
            serde_json::to_value(alpha).expect("spec"),
        )
    })
}

proptest! {
    #[test]
    fn analysis_templates_survive_v1beta1_to_v1alpha1_and_back(spec in template(), meta in metadata()) {
        let original = beta_object("AnalysisTemplate", &spec, meta);
        prop_assert_eq!(round_trip(&original, Version::V1alpha1, Version::V1beta1), original);
    }

    #[test]
    fn analysis_templates_survive_v1alpha1_to_v1beta1_and_back(spec in template(), meta in metadata()) {
        if let Some(original) = alpha_object::<analysis_template::TemplateVersions>("AnalysisTemplate", spec, meta) {
            prop_assert_eq!(round_trip(&original, Version::V1beta1, Version::V1alpha1), original);
        }
    }

    #[test]
    fn canary_policies_survive_v1beta1_to_v1alpha1_and_back(spec in policy(), meta in metadata()) {
        let original = beta_object("CanaryPolicy", CanaryPolicyResourceSpec { policy: spec }, meta);
        prop_assert_eq!(round_trip(&original, Version::V1alpha1, Version::V1beta1), original);
    }

    #[test]
    fn canary_policies_survive_v1alpha1_to_v1beta1_and_back(spec in policy(), meta in metadata()) {
        let beta = CanaryPolicyResourceSpec { policy: spec };
        if let Some(original) = alpha_object::<canary_policy::PolicyVersions>("CanaryPolicy", beta, meta) {
            prop_assert_eq!(round_trip(&original, Version::V1beta1, Version::V1alpha1), original);
        }
    }

    #[test]
    fn canaries_survive_both_round_trips_with_their_status(spec in canary(), meta in metadata()) {
        let mut original = beta_object("Canary", CanaryResourceSpec { config: spec.clone() }, meta.clone());
        original["status"] = json!({
            "phase": "Progressing", "canaryWeight": 20, "failedChecks": 1, "paused": true,
            "conditions": [{"type": "Promoted", "status": "Unknown", "reason": "Progressing",
                "message": "Analysing revision abc at canary weight 20% (1 failed check so far)",
                "lastTransitionTime": "2025-01-02T03:04:05Z"}],
        });
        prop_assert_eq!(round_trip(&original, Version::V1alpha1, Version::V1beta1), original.clone());
        let alpha = convert_object(original, Version::V1alpha1).expect("converts");
        prop_assert_eq!(round_trip(&alpha, Version::V1beta1, Version::V1alpha1), alpha);
    }
}

#[test]
fn a_v1alpha1_template_gets_a_threshold_range_in_v1beta1() {
    let alpha = json!({
        "apiVersion": "serin.dev/v1alpha1", "kind": "AnalysisTemplate",
        "metadata": {"name": "checks", "namespace": "shop"},
        "spec": {"metrics": [{"name": "errors", "query": "sum(x)", "min": 0, "max": 5.5}]}
    });
    let beta = convert_object(alpha, Version::V1beta1).expect("converts");
    assert_eq!(beta["apiVersion"], "serin.dev/v1beta1");
    assert_eq!(
        beta["spec"]["metrics"][0]["thresholdRange"],
        json!({"min": 0.0, "max": 5.5})
    );
    assert_eq!(beta["spec"]["metrics"][0]["noData"], "fail");
    assert!(beta["spec"]["metrics"][0].get("min").is_none());
}

#[test]
fn a_metric_secret_ref_travels_through_v1alpha1_by_metric_name() {
    let beta = json!({
        "apiVersion": "serin.dev/v1beta1", "kind": "AnalysisTemplate",
        "metadata": {"name": "checks", "namespace": "shop"},
        "spec": {"metrics": [
            {"name": "errors", "query": "sum(x)", "thresholdRange": {"max": 1.0},
             "address": "https://thanos.shop:10902", "secretRef": {"name": "thanos-auth"},
             "noData": "fail"},
            {"name": "latency", "query": "sum(y)", "thresholdRange": {}, "noData": "fail"}
        ]}
    });
    let alpha = convert_object(beta.clone(), Version::V1alpha1).expect("converts");
    assert!(alpha["spec"]["metrics"][0].get("secretRef").is_none());
    assert_eq!(
        alpha["metadata"]["annotations"][BETA_FIELDS],
        r#"{"secretRef":{"errors":{"name":"thanos-auth"}}}"#
    );
    assert_eq!(
        convert_object(alpha, Version::V1beta1).expect("converts"),
        beta
    );
}

#[test]
fn the_sequential_settings_are_spec_fields_of_both_versions() {
    let alpha = json!({
        "apiVersion": "serin.dev/v1alpha1", "kind": "Canary",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"provider": "linkerd", "port": 9898, "service": "web",
            "analysis": {"interval": "1m", "threshold": 5, "stepWeight": 10, "maxWeight": 50,
                "successRate": 99.0, "latency": "500ms", "metricsWindow": "1m", "skip": false,
                "sequentialChecks": false, "compare": "primary", "compareMargin": 0.5,
                "confidence": 99.9}}
    });
    let beta = convert_object(alpha.clone(), Version::V1beta1).expect("converts");
    assert_eq!(beta["spec"]["sequentialChecks"], json!(false));
    assert_eq!(beta["spec"]["compare"], json!("primary"));
    assert_eq!(beta["spec"]["compareMargin"], json!(0.5));
    assert_eq!(beta["spec"]["confidence"], json!(99.9));
    assert_eq!(
        convert_object(beta, Version::V1alpha1).expect("converts back"),
        alpha
    );
}

#[test]
fn a_canarys_hosts_are_a_spec_field_of_both_versions() {
    let alpha = json!({
        "apiVersion": "serin.dev/v1alpha1", "kind": "Canary",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"provider": "gatewayapi", "port": 9898, "service": "web",
            "hosts": ["web.example.com", "*.web.example.com"],
            "analysis": {"interval": "1m", "threshold": 5, "stepWeight": 10, "maxWeight": 50,
                "successRate": 99.0, "latency": "500ms", "metricsWindow": "1m", "skip": false}}
    });
    let beta = convert_object(alpha.clone(), Version::V1beta1).expect("converts");
    assert_eq!(
        beta["spec"]["hosts"],
        json!(["web.example.com", "*.web.example.com"])
    );
    // Nothing to carry in an annotation: v1alpha1 holds the hosts itself.
    assert_eq!(beta["metadata"].get("annotations"), None);
    // A Canary stored before the sequential settings comes back with their defaults.
    let mut defaulted = alpha;
    defaulted["spec"]["analysis"]["sequentialChecks"] = json!(true);
    defaulted["spec"]["analysis"]["compare"] = json!("none");
    defaulted["spec"]["analysis"]["compareMargin"] = json!(1.0);
    defaulted["spec"]["analysis"]["confidence"] = json!(99.0);
    assert_eq!(
        convert_object(beta, Version::V1alpha1).expect("converts back"),
        defaulted
    );
}

#[test]
fn a_canarys_mirroring_and_session_affinity_sit_in_v1alpha1s_analysis() {
    let alpha = json!({
        "apiVersion": "serin.dev/v1alpha1", "kind": "Canary",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"provider": "gatewayapi", "port": 9898, "service": "web",
            "analysis": {"interval": "1m", "threshold": 5, "stepWeight": 10, "maxWeight": 50,
                "successRate": 99.0, "latency": "500ms", "metricsWindow": "1m", "skip": false,
                "mirrorChecks": 2, "mirrorPercent": 50, "affinityCookie": "serin-canary",
                "affinityMaxAge": "1h",
                "sequentialChecks": true, "compare": "none", "compareMargin": 1.0,
                "confidence": 99.0}}
    });
    let beta = convert_object(alpha.clone(), Version::V1beta1).expect("converts");
    assert_eq!(beta["spec"]["mirrorChecks"], json!(2));
    assert_eq!(beta["spec"]["mirrorPercent"], json!(50));
    assert_eq!(beta["spec"]["affinityCookie"], json!("serin-canary"));
    assert_eq!(beta["spec"]["affinityMaxAge"], json!("1h"));
    assert_eq!(beta["metadata"].get("annotations"), None);
    assert_eq!(
        convert_object(beta, Version::V1alpha1).expect("converts back"),
        alpha
    );
}

#[test]
fn what_v1alpha1_cannot_hold_travels_in_an_annotation_and_comes_back() {
    let beta = json!({
        "apiVersion": "serin.dev/v1beta1", "kind": "CanaryPolicy",
        "metadata": {"name": "prod"},
        "spec": {"selector": {"matchLabels": {"tier": "prod"}}, "enforcement": "warn",
                 "allowedWebhookHosts": ["*.hooks.internal"]}
    });
    let alpha = convert_object(beta.clone(), Version::V1alpha1).expect("converts");
    assert_eq!(
        alpha["spec"],
        json!({"match": {"selector": {"matchLabels": {"tier": "prod"}}}, "auditOnly": true})
    );
    assert_eq!(
        alpha["metadata"]["annotations"][BETA_FIELDS],
        r#"{"allowedWebhookHosts":["*.hooks.internal"]}"#
    );
    assert_eq!(
        convert_object(alpha, Version::V1beta1).expect("converts"),
        beta
    );
}

#[test]
fn a_review_converts_every_object_in_order_and_echoes_the_uid() {
    let objects: Vec<Value> = ["a", "b", "c"]
        .iter()
        .map(|name| {
            json!({"apiVersion": "serin.dev/v1alpha1", "kind": "AnalysisTemplate",
                            "metadata": {"name": name, "namespace": "shop"}, "spec": {}})
        })
        .collect();
    let request = ConversionRequest {
        types: None,
        uid: "0f1e2d3c".into(),
        desired_api_version: "serin.dev/v1beta1".into(),
        objects,
    };
    let response = convert(request);
    assert_eq!(response.uid, "0f1e2d3c");
    assert_eq!(
        response.result.status,
        Some(kube::core::response::StatusSummary::Success)
    );
    let names: Vec<_> = response
        .converted_objects
        .iter()
        .map(|o| (o["apiVersion"].as_str(), o["metadata"]["name"].as_str()))
        .collect();
    assert_eq!(
        names,
        [
            ("serin.dev/v1beta1", Some("a")),
            ("serin.dev/v1beta1", Some("b")),
            ("serin.dev/v1beta1", Some("c"))
        ]
        .map(|(v, n)| (Some(v), n))
    );
}

#[test]
fn objects_that_cannot_be_converted_fail_the_review_with_a_reason() {
    let good = json!({"apiVersion": "serin.dev/v1alpha1", "kind": "AnalysisTemplate",
                      "metadata": {"name": "ok", "namespace": "shop"}, "spec": {}});
    let cases = [
        (
            json!({"apiVersion": "serin.dev/v1alpha1", "kind": "AnalysisTemplate",
                "metadata": {"name": "bad", "namespace": "shop"},
                "spec": {"metrics": [{"name": "m", "min": "low"}]}}),
            "serin.dev/v1beta1",
            "AnalysisTemplate shop/bad",
        ),
        (
            json!({"apiVersion": "serin.dev/v1alpha1", "kind": "Rollout", "metadata": {"name": "r"}}),
            "serin.dev/v1beta1",
            "not a Serin resource",
        ),
        (
            json!({"apiVersion": "serin.dev/v2", "kind": "Canary", "metadata": {"name": "x"}}),
            "serin.dev/v1beta1",
            "allowed: serin.dev/v1alpha1, serin.dev/v1beta1",
        ),
        (
            good.clone(),
            "serin.dev/v9",
            "\"serin.dev/v9\" is not served",
        ),
        (
            json!({"apiVersion": "serin.dev/v1alpha1", "kind": "CanaryPolicy",
                "metadata": {"name": "p", "annotations": {BETA_FIELDS: "{not json"}}, "spec": {}}),
            "serin.dev/v1beta1",
            BETA_FIELDS,
        ),
        (json!("a string"), "serin.dev/v1beta1", "not an object"),
    ];
    for (object, desired, expected) in cases {
        let request = ConversionRequest {
            types: None,
            uid: "u".into(),
            desired_api_version: desired.into(),
            objects: vec![good.clone(), object],
        };
        let response = convert(request);
        assert_eq!(response.uid, "u");
        assert_eq!(
            response.result.status,
            Some(kube::core::response::StatusSummary::Failure),
            "{expected}"
        );
        assert!(response.converted_objects.is_empty());
        assert!(
            response.result.message.contains(expected),
            "{expected}: {}",
            response.result.message
        );
    }
}

#[test]
fn the_carrier_annotation_is_removed_with_an_annotation_map_it_leaves_empty() {
    let mut object: serde_json::Map<String, Value> = serde_json::from_value(json!({
        "metadata": {"name": "p", "annotations": {BETA_FIELDS: "{}"}}
    }))
    .expect("object");
    assert_eq!(take_annotation(&mut object).as_deref(), Some("{}"));
    assert_eq!(Value::Object(object), json!({"metadata": {"name": "p"}}));
}

#[tokio::test]
async fn the_route_answers_garbage_with_a_failed_review_not_an_error_status() {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    let mut registry = prometheus_client::registry::Registry::default();
    let app = router(Metrics::register(&mut registry));
    let request = Request::post("/convert")
        .body(Body::from("{oops"))
        .expect("request");
    let response = app.oneshot(request).await.expect("answers");
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body");
    let review: Value = serde_json::from_slice(&bytes).expect("json");
    assert_eq!(review["kind"], "ConversionReview");
    assert_eq!(review["response"]["result"]["status"], "Failure");
}

#[test]
fn every_crd_serves_both_versions_and_stores_v1beta1_through_the_webhook() {
    // The generated CRDs serve both versions with webhook conversion.
    let crds = crate::crd::all();
    for crd in &crds {
        let versions: BTreeMap<_, _> = crd
            .spec
            .versions
            .iter()
            .map(|v| (v.name.as_str(), (v.served, v.storage)))
            .collect();
        assert_eq!(
            versions.get("v1alpha1"),
            Some(&(true, false)),
            "{}",
            crd.spec.names.kind
        );
        assert_eq!(
            versions.get("v1beta1"),
            Some(&(true, true)),
            "{}",
            crd.spec.names.kind
        );
        let conversion = crd.spec.conversion.as_ref().expect("conversion");
        assert_eq!(conversion.strategy, "Webhook");
    }
    assert_eq!(crds.len(), 3);
}

fn request(uid: &str, desired: &str, objects: Vec<Value>) -> ConversionRequest {
    ConversionRequest {
        types: None,
        uid: uid.into(),
        desired_api_version: desired.into(),
        objects,
    }
}

fn assert_failed(response: &ConversionResponse, expected: &[&str]) {
    assert_eq!(
        response.result.status,
        Some(kube::core::response::StatusSummary::Failure),
        "{expected:?}"
    );
    assert!(response.converted_objects.is_empty());
    for text in expected {
        assert!(
            response.result.message.contains(text),
            "{text:?} not in {:?}",
            response.result.message
        );
    }
}

#[test]
fn an_object_without_metadata_fails_the_review_naming_its_index_and_the_field() {
    let good = json!({"apiVersion": "serin.dev/v1alpha1", "kind": "AnalysisTemplate",
                      "metadata": {"name": "ok", "namespace": "shop"}, "spec": {}});
    let bare = json!({"apiVersion": "serin.dev/v1alpha1", "kind": "AnalysisTemplate", "spec": {}});
    let mut not_a_map = bare.clone();
    not_a_map["metadata"] = json!("web");
    // Also when the object is already in the desired version and would pass through.
    for desired in ["serin.dev/v1beta1", "serin.dev/v1alpha1"] {
        for object in [bare.clone(), not_a_map.clone()] {
            let response = convert(request("u", desired, vec![good.clone(), object]));
            assert_eq!(response.uid, "u");
            assert_failed(&response, &["object 1", "metadata"]);
        }
    }
}

#[test]
fn an_object_without_api_version_or_kind_fails_naming_the_field() {
    for field in ["apiVersion", "kind"] {
        let mut object = json!({"apiVersion": "serin.dev/v1alpha1", "kind": "Canary",
                                "metadata": {"name": "c"}, "spec": {}});
        object.as_object_mut().expect("object").remove(field);
        let response = convert(request("u", "serin.dev/v1beta1", vec![object]));
        assert_failed(&response, &["object 0", field]);
    }
}

#[test]
fn a_request_without_uid_or_desired_version_fails() {
    let object = json!({"apiVersion": "serin.dev/v1alpha1", "kind": "AnalysisTemplate",
                        "metadata": {"name": "ok"}, "spec": {}});
    let response = convert(request("", "serin.dev/v1beta1", vec![object.clone()]));
    assert_failed(&response, &["request.uid"]);
    let response = convert(request("u", "", vec![object]));
    assert_eq!(response.uid, "u");
    assert_failed(&response, &["desiredAPIVersion"]);
}

async fn post_review(body: Value) -> Value {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    let mut registry = prometheus_client::registry::Registry::default();
    let app = router(Metrics::register(&mut registry));
    let request = Request::post("/convert")
        .body(Body::from(body.to_string()))
        .expect("request");
    let response = app.oneshot(request).await.expect("answers");
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body");
    serde_json::from_slice(&bytes).expect("json")
}

#[tokio::test]
async fn the_route_refuses_reviews_the_api_server_would_not_send() {
    let object = json!({"apiVersion": "serin.dev/v1alpha1", "kind": "AnalysisTemplate",
                        "metadata": {"name": "ok"}, "spec": {}});
    let good = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "ConversionReview",
                      "request": {"uid": "u1", "desiredAPIVersion": "serin.dev/v1beta1",
                                  "objects": [object]}});
    let answer = post_review(good.clone()).await;
    assert_eq!(
        answer["response"]["result"]["status"], "Success",
        "{answer}"
    );

    let mut no_uid = good.clone();
    no_uid["request"]["uid"] = json!("");
    let mut old_version = good.clone();
    old_version["apiVersion"] = json!("apiextensions.k8s.io/v1beta1");
    let mut wrong_kind = good.clone();
    wrong_kind["kind"] = json!("AdmissionReview");
    let mut no_desired = good.clone();
    no_desired["request"]
        .as_object_mut()
        .expect("request")
        .remove("desiredAPIVersion");
    let mut no_objects = good.clone();
    no_objects["request"]
        .as_object_mut()
        .expect("request")
        .remove("objects");
    for (case, body, expected) in [
        ("uid", no_uid, "request.uid"),
        ("version", old_version, "apiextensions.k8s.io/v1"),
        ("kind", wrong_kind, "ConversionReview"),
        ("desired", no_desired, "desiredAPIVersion"),
        ("objects", no_objects, "objects"),
    ] {
        let answer = post_review(body).await;
        assert_eq!(answer["kind"], "ConversionReview", "{case}");
        assert_eq!(answer["apiVersion"], "apiextensions.k8s.io/v1", "{case}");
        assert_eq!(
            answer["response"]["result"]["status"], "Failure",
            "{case}: {answer}"
        );
        let message = answer["response"]["result"]["message"]
            .as_str()
            .unwrap_or_default();
        assert!(message.contains(expected), "{case}: {message}");
    }
}
