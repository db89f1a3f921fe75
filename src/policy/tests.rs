use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

use super::*;
use crate::crd::{
    HookType, MetricTemplate, NoDataPolicy, PolicyDefaults, PolicyLimits, ThresholdRange,
    WebhookTemplate,
};
use crate::spec::{Duration, Provider};

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).into(), (*v).into()))
        .collect()
}

fn policy(name: &str, spec: CanaryPolicySpec) -> NamedPolicy {
    NamedPolicy {
        name: name.into(),
        spec,
    }
}

fn prod_namespaces() -> Option<LabelSelector> {
    Some(LabelSelector {
        match_labels: Some(labels(&[("tier", "prod")])),
        match_expressions: None,
    })
}

fn canary() -> CanarySpec {
    CanarySpec::defaults("web".into(), Some(8080))
}

fn limits(limits: PolicyLimits) -> CanaryPolicySpec {
    CanaryPolicySpec {
        limits: Some(limits),
        ..Default::default()
    }
}

fn messages(found: &[Finding]) -> Vec<String> {
    found.iter().map(ToString::to_string).collect()
}

#[test]
fn a_policy_covers_deployments_its_selectors_select() {
    let spec = CanaryPolicySpec {
        namespace_selector: prod_namespaces(),
        selector: Some(LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "app".into(),
                operator: "NotIn".into(),
                values: Some(vec!["batch".into()]),
            }]),
        }),
        ..Default::default()
    };
    let prod = labels(&[("tier", "prod")]);
    let dev = labels(&[("tier", "dev")]);
    let web = labels(&[("app", "web")]);
    let batch = labels(&[("app", "batch")]);
    let subject = |namespace_labels, labels| Subject {
        namespace_labels,
        labels,
    };
    assert!(spec.applies_to(subject(&prod, &web)));
    assert!(!spec.applies_to(subject(&dev, &web)));
    assert!(!spec.applies_to(subject(&prod, &batch)));
    assert!(CanaryPolicySpec::default().applies_to(subject(&dev, &batch)));
}

#[test]
fn a_selector_that_does_not_parse_covers_nothing() {
    let spec = CanaryPolicySpec {
        selector: Some(LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "app".into(),
                operator: "Matches".into(),
                values: None,
            }]),
        }),
        ..Default::default()
    };
    let none = BTreeMap::new();
    assert!(!spec.applies_to(Subject {
        namespace_labels: &none,
        labels: &none
    }));
}

#[test]
fn require_canary_refuses_a_deployment_that_did_not_opt_in_naming_the_policy() {
    let p = policy(
        "prod-canaries",
        CanaryPolicySpec {
            require_canary: Some(true),
            ..Default::default()
        },
    );
    let found = findings(
        &[&p],
        Release {
            canary: None,
            template: None,
        },
    );
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].enforcement, Enforcement::Deny);
    assert!(found[0].to_string().contains("CanaryPolicy prod-canaries"));
    assert!(found[0].to_string().contains("serin.dev/enabled"));
    let spec = canary();
    let opted_in = findings(
        &[&p],
        Release {
            canary: Some(&spec),
            template: None,
        },
    );
    assert!(opted_in.is_empty());
}

#[test]
fn each_limit_names_the_annotation_the_value_and_the_limit() {
    let p = policy(
        "strict",
        limits(PolicyLimits {
            max_step_weight: Some(5),
            max_weight: Some(40),
            min_interval: Some(Duration::from_secs(120)),
            min_threshold: Some(10),
            min_success_rate: Some(99.5),
            max_latency: Some(Duration::from_millis(300)),
            max_mirror_percent: None,
            ..Default::default()
        }),
    );
    let spec = canary();
    let found = messages(&findings(
        &[&p],
        Release {
            canary: Some(&spec),
            template: None,
        },
    ));
    assert_eq!(
        found,
        [
            "serin.dev/step-weight: a step of 10 exceeds the limit maxStepWeight 5 (CanaryPolicy strict)",
            "serin.dev/max-weight: 50 exceeds the limit maxWeight 40 (CanaryPolicy strict)",
            "serin.dev/interval: 1m is shorter than the limit minInterval 2m (CanaryPolicy strict)",
            "serin.dev/threshold: 5 is below the limit minThreshold 10 (CanaryPolicy strict)",
            "serin.dev/success-rate: 99 is below the limit minSuccessRate 99.5 (CanaryPolicy strict)",
            "serin.dev/latency: 500ms exceeds the limit maxLatency 300ms (CanaryPolicy strict)",
        ]
    );
}

#[test]
fn mirroring_is_held_to_max_mirror_percent_and_forbidden_at_zero() {
    let found = |max: u32, checks: Option<u32>, percent: Option<u32>| {
        let p = policy(
            "mirror",
            limits(PolicyLimits {
                max_mirror_percent: Some(max),
                ..PolicyLimits::default()
            }),
        );
        let spec = CanarySpec {
            provider: Provider::GatewayApi,
            mirror_checks: checks,
            mirror_percent: percent,
            ..canary()
        };
        messages(&findings(
            &[&p],
            Release {
                canary: Some(&spec),
                template: None,
            },
        ))
    };
    assert_eq!(
        found(20, Some(2), Some(50)),
        [
            "serin.dev/mirror-percent: 50 exceeds the limit maxMirrorPercent 20 (CanaryPolicy mirror)"
        ]
    );
    assert_eq!(
        found(20, Some(2), None),
        [
            "serin.dev/mirror-checks: mirrors every request (no serin.dev/mirror-percent), more \
             than the limit maxMirrorPercent 20 (CanaryPolicy mirror)"
        ]
    );
    assert_eq!(
        found(0, Some(2), Some(1)),
        [
            "serin.dev/mirror-checks: mirroring is not allowed (limit maxMirrorPercent 0) (CanaryPolicy mirror)"
        ]
    );
    assert!(found(20, Some(2), Some(20)).is_empty());
    assert!(found(0, None, None).is_empty());
}

#[test]
fn a_configuration_within_the_limits_has_no_findings() {
    let p = policy(
        "loose",
        limits(PolicyLimits {
            max_step_weight: Some(10),
            max_weight: Some(50),
            min_interval: Some(Duration::from_secs(60)),
            min_threshold: Some(5),
            min_success_rate: Some(99.0),
            max_latency: Some(Duration::from_millis(500)),
            max_mirror_percent: Some(100),
            ..Default::default()
        }),
    );
    let spec = canary();
    assert!(
        findings(
            &[&p],
            Release {
                canary: Some(&spec),
                template: None
            }
        )
        .is_empty()
    );
}

#[test]
fn the_largest_step_of_a_weight_list_is_checked() {
    let p = policy(
        "steps",
        limits(PolicyLimits {
            max_step_weight: Some(20),
            ..Default::default()
        }),
    );
    let spec = CanarySpec {
        step_weight: None,
        step_weights: Some(vec![5, 10, 40]),
        max_weight: 40,
        ..canary()
    };
    let found = messages(&findings(
        &[&p],
        Release {
            canary: Some(&spec),
            template: None,
        },
    ));
    assert_eq!(
        found,
        [
            "serin.dev/step-weights: a step of 30 exceeds the limit maxStepWeight 20 (CanaryPolicy steps)"
        ]
    );
}

#[test]
fn skipping_the_analysis_breaks_a_policy_that_bounds_success_rate_or_latency() {
    let p = policy(
        "quality",
        limits(PolicyLimits {
            min_success_rate: Some(95.0),
            ..Default::default()
        }),
    );
    let spec = CanarySpec {
        skip_analysis: true,
        ..canary()
    };
    let found = messages(&findings(
        &[&p],
        Release {
            canary: Some(&spec),
            template: None,
        },
    ));
    assert_eq!(found.len(), 1);
    assert!(found[0].starts_with("serin.dev/skip-analysis"), "{found:?}");
}

fn template(metrics: Vec<MetricTemplate>, urls: &[&str]) -> AnalysisTemplateSpec {
    AnalysisTemplateSpec {
        metrics,
        webhooks: urls
            .iter()
            .enumerate()
            .map(|(i, url)| WebhookTemplate {
                name: format!("hook-{i}"),
                type_: HookType::Rollout,
                url: (*url).into(),
                timeout: None,
                retries: None,
                metadata: BTreeMap::new(),
                mute_alert: None,
            })
            .collect(),
    }
}

fn builtin(name: &str, min: Option<f64>, max: Option<f64>) -> MetricTemplate {
    MetricTemplate {
        name: name.into(),
        query: None,
        threshold_range: ThresholdRange { min, max },
        address: None,
        secret_ref: None,
        no_data: NoDataPolicy::Fail,
        interval: None,
        template_ref: None,
        template_variables: Default::default(),
        threshold: None,
    }
}

#[test]
fn a_templates_builtin_metrics_are_held_to_the_quality_limits() {
    let p = policy(
        "quality",
        limits(PolicyLimits {
            min_success_rate: Some(99.0),
            max_latency: Some(Duration::from_millis(300)),
            ..Default::default()
        }),
    );
    let spec = CanarySpec {
        analysis: Some("checks".into()),
        success_rate: 50.0, // not used: the template's metrics replace the annotations
        ..canary()
    };
    let good = template(
        vec![
            builtin("request-success-rate", Some(99.5), None),
            builtin("request-duration", None, Some(250.0)),
        ],
        &[],
    );
    let weak = template(vec![builtin("request-success-rate", Some(90.0), None)], &[]);
    let check = |t: &AnalysisTemplateSpec| {
        messages(&findings(
            &[&p],
            Release {
                canary: Some(&spec),
                template: Some(t),
            },
        ))
    };
    assert!(check(&good).is_empty(), "{:?}", check(&good));
    let found = check(&weak);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found[0].contains("min 90 is below the limit minSuccessRate 99"));
    assert!(found[1].contains("must check request-duration"));
}

#[test]
fn webhook_hosts_must_be_allowed() {
    let p = policy(
        "hosts",
        CanaryPolicySpec {
            allowed_webhook_hosts: Some(vec!["*.hooks.internal".into(), "tester".into()]),
            enforcement: Some(Enforcement::Warn),
            ..Default::default()
        },
    );
    let spec = CanarySpec {
        analysis: Some("checks".into()),
        ..canary()
    };
    let t = template(
        vec![],
        &[
            "http://load.hooks.internal/run",
            "http://tester:8080/",
            "https://evil.example.com/",
            "http://hooks.internal/",
        ],
    );
    let found = findings(
        &[&p],
        Release {
            canary: Some(&spec),
            template: Some(&t),
        },
    );
    let text = messages(&found);
    assert_eq!(found.len(), 2, "{text:?}");
    assert!(found.iter().all(|f| f.enforcement == Enforcement::Warn));
    assert!(text[0].contains("calls evil.example.com"), "{text:?}");
    assert!(text[1].contains("calls hooks.internal"), "{text:?}");
}

fn at(mut metric: MetricTemplate, address: &str) -> MetricTemplate {
    metric.address = Some(address.into());
    metric
}

#[test]
fn metric_addresses_must_name_an_allowed_host() {
    let p = policy(
        "metrics",
        CanaryPolicySpec {
            allowed_metrics_hosts: Some(vec!["*.monitoring.svc".into()]),
            ..Default::default()
        },
    );
    let t = template(
        vec![
            builtin("request-success-rate", Some(99.0), None),
            at(
                builtin("request-duration", None, Some(500.0)),
                "http://prometheus.monitoring.svc:9090",
            ),
            at(
                builtin("errors", None, Some(1.0)),
                "http://fake-prometheus.evil.test:9090/",
            ),
        ],
        &[],
    );
    let text = messages(&template_findings(&[&p], "checks", &t));
    assert_eq!(
        text,
        [
            "AnalysisTemplate checks metric \"errors\" asks Prometheus at \
             fake-prometheus.evil.test, which is not in allowedMetricsHosts [*.monitoring.svc] \
             (CanaryPolicy metrics)"
        ]
    );
}

#[test]
fn quality_limits_hold_only_for_checks_measured_by_serins_prometheus_or_an_allowed_host() {
    let quality = limits(PolicyLimits {
        min_success_rate: Some(99.0),
        ..Default::default()
    });
    // Bounds that satisfy the limit, measured by a stand-in that can say anything.
    let t = template(
        vec![at(
            builtin("request-success-rate", Some(99.5), None),
            "http://fake-prometheus.test:9090",
        )],
        &[],
    );
    let p = policy("quality", quality.clone());
    let text = messages(&template_findings(&[&p], "checks", &t));
    assert_eq!(text.len(), 1, "{text:?}");
    assert!(
        text[0].contains(
            "metric request-success-rate is measured at http://fake-prometheus.test:9090, not \
             by Serin's Prometheus: the limit minSuccessRate"
        ),
        "{text:?}"
    );
    let trusting = policy(
        "quality",
        CanaryPolicySpec {
            allowed_metrics_hosts: Some(vec!["fake-prometheus.test".into()]),
            ..quality
        },
    );
    assert_eq!(template_findings(&[&trusting], "checks", &t), Vec::new());
}

#[test]
fn a_template_is_judged_by_each_policy_on_its_own_whichever_deployment_names_it() {
    let hosts = policy(
        "hosts",
        CanaryPolicySpec {
            allowed_webhook_hosts: Some(vec!["*.hooks.internal".into()]),
            ..Default::default()
        },
    );
    let audit = policy(
        "audit",
        CanaryPolicySpec {
            allowed_metrics_hosts: Some(vec![]),
            enforcement: Some(Enforcement::Warn),
            ..Default::default()
        },
    );
    let t = template(
        vec![at(
            builtin("errors", None, Some(1.0)),
            "http://10.0.0.9:9090",
        )],
        &[
            "http://127.0.0.1:8081/metrics",
            "http://load.hooks.internal/",
        ],
    );
    let found = template_findings(&[&hosts, &audit], "checks", &t);
    let text = messages(&found);
    assert_eq!(found.len(), 2, "{text:?}");
    assert_eq!(
        (found[0].enforcement, found[1].enforcement),
        (Enforcement::Deny, Enforcement::Warn)
    );
    assert!(text[0].contains("calls 127.0.0.1, which is not in allowedWebhookHosts"));
    assert!(text[1].contains("asks Prometheus at 10.0.0.9"));
    // The same findings when a Deployment's admission judges the template it names.
    let spec = CanarySpec {
        analysis: Some("checks".into()),
        ..canary()
    };
    let release = Release {
        canary: Some(&spec),
        template: Some(&t),
    };
    assert_eq!(findings(&[&hosts, &audit], release), found);
}

#[test]
fn host_patterns_cover_subdomains_but_not_the_domain_itself() {
    let patterns = vec!["*.example.com".to_owned(), "exact.test".to_owned()];
    assert!(host_allowed(&patterns, "a.example.com"));
    assert!(host_allowed(&patterns, "A.B.Example.com"));
    assert!(!host_allowed(&patterns, "example.com"));
    assert!(!host_allowed(&patterns, "badexample.com"));
    assert!(host_allowed(&patterns, "exact.test"));
    assert!(!host_allowed(&patterns, "sub.exact.test"));
}

#[test]
fn several_policies_offer_their_strictest_defaults() {
    let a = policy(
        "a",
        CanaryPolicySpec {
            defaults: Some(PolicyDefaults {
                provider: Some(Provider::SmiV1alpha2),
                interval: Some(Duration::from_secs(30)),
                step_weight: Some(20),
                success_rate: Some(98.0),
                sequential_checks: Some(false),
                compare: Some(crate::spec::Compare::Primary),
                compare_margin: Some(2.0),
                ..Default::default()
            }),
            ..Default::default()
        },
    );
    let b = policy(
        "b",
        CanaryPolicySpec {
            defaults: Some(PolicyDefaults {
                provider: Some(Provider::Linkerd),
                interval: Some(Duration::from_secs(90)),
                step_weight: Some(5),
                success_rate: Some(99.9),
                latency: Some(Duration::from_millis(200)),
                sequential_checks: Some(true),
                compare_margin: Some(0.5),
                ..Default::default()
            }),
            ..Default::default()
        },
    );
    let combined = combined_defaults([&a, &b]);
    assert_eq!(
        combined,
        PolicyDefaults {
            provider: Some(Provider::SmiV1alpha2),
            interval: Some(Duration::from_secs(90)),
            threshold: None,
            step_weight: Some(5),
            max_weight: None,
            success_rate: Some(99.9),
            latency: Some(Duration::from_millis(200)),
            sequential_checks: Some(true),
            compare: Some(crate::spec::Compare::Primary),
            compare_margin: Some(0.5),
        }
    );
}

#[test]
fn a_policy_may_require_the_sequential_checks_and_bound_the_compare_margin() {
    let p = policy(
        "evidence",
        limits(PolicyLimits {
            require_sequential_checks: Some(true),
            max_compare_margin: Some(0.5),
            ..Default::default()
        }),
    );
    let spec = CanarySpec {
        sequential_checks: false,
        compare: crate::spec::Compare::Primary,
        compare_margin: 2.0,
        ..canary()
    };
    let found = messages(&findings(
        &[&p],
        Release {
            canary: Some(&spec),
            template: None,
        },
    ));
    assert_eq!(
        found,
        [
            "serin.dev/sequential-checks: \"false\" is refused by the limit requireSequentialChecks: releases here are judged on their request counts (allowed: \"true\") (CanaryPolicy evidence)",
            "serin.dev/compare-margin: 2 exceeds the limit maxCompareMargin 0.5 (CanaryPolicy evidence)",
        ]
    );
    // The defaults (sequential, no comparison) are within both limits.
    let defaults = canary();
    assert!(
        findings(
            &[&p],
            Release {
                canary: Some(&defaults),
                template: None,
            },
        )
        .is_empty()
    );
}

#[test]
fn a_policy_may_require_a_minimum_confidence() {
    let p = policy(
        "careful",
        limits(PolicyLimits {
            min_confidence: Some(99.0),
            ..Default::default()
        }),
    );
    let judged = |confidence: f64| {
        let spec = CanarySpec {
            confidence,
            ..canary()
        };
        messages(&findings(
            &[&p],
            Release {
                canary: Some(&spec),
                template: None,
            },
        ))
    };
    assert_eq!(
        judged(95.0),
        [
            "serin.dev/confidence: 95 is below the limit minConfidence 99 (allowed: 99 to 99.9) (CanaryPolicy careful)"
        ]
    );
    // The default (99) and above are within the limit.
    assert!(judged(99.0).is_empty());
    assert!(judged(99.9).is_empty());
}

#[test]
fn defaults_fill_only_what_the_user_left_out() {
    let defaults = PolicyDefaults {
        step_weight: Some(5),
        max_weight: Some(30),
        success_rate: Some(99.5),
        ..Default::default()
    };
    let written = labels(&[
        ("serin.dev/enabled", "true"),
        ("serin.dev/success-rate", "97"),
    ]);
    let filled = fill_defaults(&written, &defaults);
    assert_eq!(
        filled,
        labels(&[
            ("serin.dev/enabled", "true"),
            ("serin.dev/success-rate", "97"),
            ("serin.dev/step-weight", "5"),
            ("serin.dev/max-weight", "30"),
        ])
    );
    let listed = labels(&[
        ("serin.dev/enabled", "true"),
        ("serin.dev/step-weights", "5,10"),
    ]);
    let filled = fill_defaults(&listed, &defaults);
    assert!(!filled.contains_key("serin.dev/step-weight"));
    assert!(!filled.contains_key("serin.dev/max-weight"));
    assert_eq!(
        filled.get("serin.dev/success-rate").map(String::as_str),
        Some("99.5")
    );
}

#[test]
fn a_policy_with_mistakes_gets_every_one_named() {
    let spec = CanaryPolicySpec {
        namespace_selector: Some(LabelSelector {
            match_labels: Some(labels(&[("bad key!", "x")])),
            match_expressions: Some(vec![
                LabelSelectorRequirement {
                    key: "tier".into(),
                    operator: "In".into(),
                    values: None,
                },
                LabelSelectorRequirement {
                    key: "tier".into(),
                    operator: "Like".into(),
                    values: None,
                },
            ]),
        }),
        defaults: Some(PolicyDefaults {
            step_weight: Some(30),
            max_weight: Some(20),
            ..Default::default()
        }),
        limits: Some(PolicyLimits {
            max_step_weight: Some(10),
            min_success_rate: Some(120.0),
            ..Default::default()
        }),
        allowed_webhook_hosts: Some(vec!["https://hooks.test".into()]),
        allowed_metrics_hosts: Some(vec!["prometheus:9090".into()]),
        ..Default::default()
    };
    let fields: Vec<String> = spec.problems().into_iter().map(|p| p.field).collect();
    assert_eq!(
        fields,
        [
            "spec.namespaceSelector.matchLabels[\"bad key!\"]",
            "spec.namespaceSelector.matchExpressions[0].values",
            "spec.namespaceSelector.matchExpressions[1].operator",
            "spec.defaults.stepWeight",
            "spec.limits.minSuccessRate",
            "spec.defaults.stepWeight",
            "spec.allowedWebhookHosts[0]",
            "spec.allowedMetricsHosts[0]",
        ]
    );
    let text: Vec<String> = spec.problems().iter().map(ToString::to_string).collect();
    assert!(
        text[2].contains("allowed: In, NotIn, Exists, DoesNotExist"),
        "{text:?}"
    );
}

#[test]
fn a_sound_policy_has_no_problems() {
    let spec = CanaryPolicySpec {
        namespace_selector: prod_namespaces(),
        require_canary: Some(true),
        defaults: Some(PolicyDefaults {
            step_weight: Some(10),
            success_rate: Some(99.0),
            ..Default::default()
        }),
        limits: Some(PolicyLimits {
            max_step_weight: Some(20),
            min_success_rate: Some(98.0),
            ..Default::default()
        }),
        allowed_webhook_hosts: Some(vec!["*.svc.cluster.local".into()]),
        enforcement: Some(Enforcement::Deny),
        ..Default::default()
    };
    assert_eq!(spec.problems(), Vec::new());
}

/// The API server's policies for requireCanary (manifests/require-canary.yaml) refuse with
/// the words `serin check` and the webhook use, and there is one for each enforcement.
#[test]
fn the_shipped_require_canary_policies_say_what_serin_check_says() {
    use serde::Deserialize as _;
    let text = include_str!("../../manifests/require-canary.yaml");
    let documents: Vec<serde_json::Value> = serde_yaml_ng::Deserializer::from_str(text)
        .map(|doc| serde_json::Value::deserialize(doc).expect("YAML"))
        .filter(|v| !v.is_null())
        .collect();
    let policies: Vec<&serde_json::Value> = documents
        .iter()
        .filter(|d| d["kind"] == "ValidatingAdmissionPolicy")
        .collect();
    assert_eq!(policies.len(), 2);
    let mut enforcements = Vec::new();
    for policy in policies {
        assert_eq!(policy["spec"]["paramKind"]["kind"], "CanaryPolicy");
        let message = policy["spec"]["validations"][0]["messageExpression"]
            .as_str()
            .expect("a messageExpression");
        // The CEL string literal holds the message with `"` as written in YAML.
        assert!(message.contains(REQUIRE_CANARY_MESSAGE), "{message}");
        let requires = policy["spec"]["variables"][0]["expression"]
            .as_str()
            .expect("the requires variable");
        enforcements.extend(
            ["deny", "warn"]
                .into_iter()
                .filter(|e| requires.contains(&format!("== '{e}'"))),
        );
    }
    enforcements.sort_unstable();
    assert_eq!(enforcements, ["deny", "warn"]);
}

#[test]
fn alerts_name_a_secret_and_take_only_the_fields_their_service_does() {
    use crate::crd::{Alert, AlertType, SecretRef};
    let alert = |name: &str, type_, secret: &str| Alert {
        name: name.into(),
        type_,
        severity: None,
        secret_ref: SecretRef {
            name: secret.into(),
        },
        channel: None,
        username: None,
    };
    let spec = CanaryPolicySpec {
        alerts: Some(vec![
            Alert {
                channel: Some("#deploys".into()),
                username: Some("serin".into()),
                ..alert("ok", AlertType::Slack, "slack-hook")
            },
            alert("ok", AlertType::Discord, "Not_A_Name"),
            Alert {
                channel: Some("#deploys".into()),
                username: Some("serin".into()),
                ..alert("teams", AlertType::Msteams, "teams")
            },
        ]),
        ..Default::default()
    };
    let problems: Vec<String> = spec.problems().iter().map(|p| p.to_string()).collect();
    assert_eq!(
        problems,
        [
            "spec.alerts[1].name: \"ok\" is used by an earlier alert; names must be unique",
            "spec.alerts[1].secretRef.name: \"Not_A_Name\" is not a Secret name: lower-case \
             letters, digits, '-' and '.', at most 253 characters, starting and ending with a \
             letter or digit",
            "spec.alerts[2].channel: type msteams does not take a channel (its webhook posts \
             where it was made); channel is for types: slack, rocket",
            "spec.alerts[2].username: type msteams does not take a username (its webhook posts \
             where it was made); username is for types: slack, discord, rocket",
        ]
    );
}
