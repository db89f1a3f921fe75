use std::collections::{BTreeMap, HashMap};
use std::time::Duration as StdDuration;

use axum::Router;
use axum::extract::{Path, Query};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::*;
use crate::crd::{
    AnalysisTemplateSpec, HookType, MetricTemplate, NoDataPolicy, ThresholdRange, WebhookTemplate,
};
use crate::release::{MetricCheck, NoData, builtin_checks};
use crate::spec::{Builtin, CanarySpec, Duration};
use http::serve_on_loopback;
use observers::tests::{GLOO, LINKERD, NGINX, TRAEFIK};
use plan::{LatencyCounts, measure, with_counts};
use prometheus::MAX_BUCKETS;

fn spec() -> CanarySpec {
    CanarySpec::defaults("web-svc".into(), Some(8080))
}

fn vars() -> QueryVars<'static> {
    QueryVars {
        namespace: "shop",
        target: "web",
        service: "web-svc",
        interval: Duration::from_secs(90),
        observer: None,
    }
}

fn nginx_spec() -> CanarySpec {
    CanarySpec {
        provider: crate::spec::Provider::Nginx,
        ingress: Some("public".into()),
        ..spec()
    }
}

fn metric(name: &str, query: Option<&str>) -> MetricTemplate {
    MetricTemplate {
        name: name.into(),
        query: query.map(Into::into),
        threshold_range: ThresholdRange::default(),
        address: None,
        secret_ref: None,
        no_data: NoDataPolicy::Fail,
        interval: None,
        template_ref: None,
        template_variables: Default::default(),
        threshold: None,
    }
}

fn template(metrics: Vec<MetricTemplate>) -> AnalysisTemplateSpec {
    AnalysisTemplateSpec {
        metrics,
        webhooks: Vec::new(),
    }
}

// ---- queries -------------------------------------------------------------------------------

#[test]
fn label_values_cannot_end_their_string_or_change_the_selector() {
    assert_eq!(label_value(r#"a"b\c"#), r#"a\"b\\c"#);
    assert_eq!(label_value("a\nb"), "a\\nb");
    assert_eq!(regex_literal("a.b+c"), r"a\.b\+c");
    let hostile = Observer::Nginx {
        namespace: "shop",
        ingress: "x\",namespace=~\".*",
    };
    let query = Builtin::SuccessRate.query_for(&hostile, Duration::from_secs(60));
    assert!(
        query.contains(r#"ingress="x\",namespace=~\".*""#),
        "{query}"
    );
}

#[test]
fn the_builtin_checks_of_a_gloo_release_ask_envoy() {
    let gloo = CanarySpec {
        provider: crate::spec::Provider::Gloo,
        ..spec()
    };
    assert_eq!(Observer::of(&gloo, "shop", "web"), GLOO);
    let planned = plan_checks(&gloo, None, "shop", "web");
    assert_eq!(planned.len(), 2);
    for p in &planned {
        let query = p.query.clone().unwrap_or_default();
        assert!(
            query.contains("envoy_cluster_upstream_rq")
                && query.contains("shop-web-svc-canaryupstream-8080_shop"),
            "{}: {query}",
            p.check.name
        );
    }
}

#[test]
fn metrics_provider_chooses_the_observer_over_the_providers_default() {
    use crate::spec::{MetricsProvider, Provider};
    let traefik = CanarySpec {
        provider: Provider::GatewayApi,
        metrics_provider: Some(MetricsProvider::Traefik),
        ..spec()
    };
    assert_eq!(Observer::of(&traefik, "shop", "web"), TRAEFIK);
    let planned = plan_checks(&traefik, None, "shop", "web");
    assert_eq!(planned.len(), 2);
    for p in &planned {
        let query = p.query.clone().unwrap_or_default();
        assert!(
            query.contains("traefik_service_request")
                && query.contains("service=\"shop-web-svc-canary-http-8080@kubernetesgateway\""),
            "{}: {query}",
            p.check.name
        );
    }
    // Linkerd's proxies in the canary pods see the requests whichever router sent them.
    for (provider, ingress) in [(Provider::Gloo, None), (Provider::Nginx, Some("public"))] {
        let spec = CanarySpec {
            provider,
            ingress: ingress.map(Into::into),
            metrics_provider: Some(MetricsProvider::Linkerd),
            ..spec()
        };
        assert_eq!(Observer::of(&spec, "shop", "web"), LINKERD, "{provider}");
    }
}

#[test]
fn the_provider_chooses_the_observer_of_the_builtin_checks() {
    assert_eq!(Observer::of(&nginx_spec(), "shop", "web"), NGINX);
    assert_eq!(
        Builtin::SuccessRate.query_for(&LINKERD, Duration::from_secs(60)),
        Builtin::SuccessRate.query("shop", "web", Duration::from_secs(60))
    );
    for provider in [
        crate::spec::Provider::Linkerd,
        crate::spec::Provider::SmiV1alpha2,
        crate::spec::Provider::GatewayApi,
    ] {
        let spec = CanarySpec { provider, ..spec() };
        assert_eq!(Observer::of(&spec, "shop", "web"), LINKERD, "{provider}");
    }
    // The builtin checks of an nginx release, and a template's builtin metrics, ask NGINX.
    let planned = plan_checks(&nginx_spec(), None, "shop", "web");
    assert_eq!(planned.len(), 2);
    for p in &planned {
        let query = p.query.clone().unwrap_or_default();
        assert!(
            query.contains("nginx_ingress_controller_") && query.contains("ingress=\"public\""),
            "{}: {query}",
            p.check.name
        );
    }
    let only_latency = template(vec![metric("request-duration", None)]);
    let planned = plan_checks(&nginx_spec(), Some(&only_latency), "shop", "web");
    assert_eq!(
        planned[0].query,
        Ok(Builtin::Duration.query_for(&NGINX, nginx_spec().metrics_window))
    );
}

#[test]
fn builtin_names_and_thresholds_are_the_release_machines() {
    let checks = builtin_checks(&spec(), None, None);
    let names: Vec<&str> = checks.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, Builtin::ALL.map(Builtin::name));
    for (check, builtin) in checks.iter().zip(Builtin::ALL) {
        assert_eq!(check.unit, builtin.unit());
    }
}

#[test]
fn template_variables_are_filled_with_or_without_spaces_in_the_braces() {
    let query = "rate(http_requests_total{namespace=\"{{ namespace }}\",pod=~\"{{target}}-.*\",\
                 service=\"{{  service}}\"}[{{interval }}])";
    assert_eq!(
        render_query(query, &vars()),
        Ok(
            "rate(http_requests_total{namespace=\"shop\",pod=~\"web-.*\",\
            service=\"web-svc\"}[1m30s])"
                .to_owned()
        )
    );
}

#[test]
fn a_query_without_variables_is_kept_as_written() {
    let query = "sum(up{job=\"x\"})";
    assert_eq!(render_query(query, &vars()), Ok(query.to_owned()));
}

#[test]
fn an_unknown_template_variable_is_an_error_naming_it() {
    let error = render_query("sum(x{ns=\"{{ namespace }}\",app=\"{{ app }}\"})", &vars());
    assert_eq!(
        error,
        Err(QueryError::UnknownVariable { name: "app".into() })
    );
    let message = error.err().map(|e| e.to_string()).unwrap_or_default();
    assert_eq!(
        message,
        "the query uses {{ app }}, which is not a variable (use namespace, target, service, interval)"
    );
}

#[test]
fn unclosed_braces_are_an_error_giving_where_they_open() {
    let error = render_query("sum(x{ns=\"{{ namespace\"})", &vars());
    assert_eq!(error, Err(QueryError::Unclosed { at: 11 }));
}

#[test]
fn admission_accepts_builtins_and_known_variables_and_refuses_the_rest() {
    assert_eq!(check_metric(&metric("request-duration", None)), Ok(()));
    assert_eq!(
        check_metric(&metric("errors", Some("sum(x{ns=\"{{ namespace }}\"})"))),
        Ok(())
    );
    assert_eq!(
        check_metric(&metric("errors", Some("sum(x{a=\"{{ .Values.app }}\"})"))),
        Err(QueryError::UnknownVariable {
            name: ".Values.app".into()
        })
    );
    let not_builtin = check_metric(&metric("request-latency", None));
    assert_eq!(
        not_builtin
            .as_ref()
            .err()
            .map(ToString::to_string)
            .as_deref(),
        Some(
            "\"request-latency\" has no query and is not a builtin metric \
             (request-success-rate, request-duration)"
        )
    );
}

// ---- planning ------------------------------------------------------------------------------

#[test]
fn without_a_template_the_builtin_checks_run_with_the_annotation_thresholds() {
    let mut spec = spec();
    spec.success_rate = 95.0;
    spec.latency = Duration::from_millis(300);
    spec.metrics_window = Duration::from_secs(30);
    let planned = plan_checks(&spec, None, "shop", "web");
    assert_eq!(planned.len(), 2);
    let (rate, latency) = (&planned[0], &planned[1]);
    assert_eq!(rate.check.name, "request-success-rate");
    assert_eq!((rate.check.min, rate.check.max), (Some(95.0), None));
    assert_eq!(
        rate.query,
        Ok(Builtin::SuccessRate.query("shop", "web", Duration::from_secs(30)))
    );
    assert_eq!(latency.check.name, "request-duration");
    assert_eq!((latency.check.min, latency.check.max), (None, Some(300.0)));
    assert_eq!(
        latency.query,
        Ok(Builtin::Duration.query("shop", "web", Duration::from_secs(30)))
    );
    for p in &planned {
        assert_eq!((p.check.value, p.check.no_data), (None, NoData::Fail));
        assert_eq!(p.address, None);
    }
}

#[test]
fn a_template_with_only_webhooks_keeps_the_builtin_checks() {
    let with_hooks = AnalysisTemplateSpec {
        metrics: Vec::new(),
        webhooks: vec![WebhookTemplate {
            name: "load-test".into(),
            type_: HookType::Rollout,
            url: "http://loadtester/".into(),
            timeout: None,
            retries: None,
            metadata: BTreeMap::new(),
            mute_alert: None,
        }],
    };
    assert_eq!(
        plan_checks(&spec(), Some(&with_hooks), "shop", "web"),
        plan_checks(&spec(), None, "shop", "web")
    );
}

#[test]
fn template_metrics_replace_the_builtin_checks() {
    let mut rate = metric("request-success-rate", None);
    rate.threshold_range.min = Some(90.0);
    let mut custom = metric(
        "error-budget",
        Some(
            "sum(errors{namespace=\"{{ namespace }}\",service=\"{{ service }}\"}[{{ interval }}])",
        ),
    );
    custom.threshold_range.max = Some(5.0);
    custom.address = Some("http://thanos:9090".into());
    custom.no_data = NoDataPolicy::Skip;
    let planned = plan_checks(&spec(), Some(&template(vec![rate, custom])), "shop", "web");

    let names: Vec<&str> = planned.iter().map(|p| p.check.name.as_str()).collect();
    assert_eq!(names, ["request-success-rate", "error-budget"]);
    // A builtin name without a query: the builtin query, the template's range.
    assert_eq!(
        planned[0].query,
        Ok(Builtin::SuccessRate.query("shop", "web", spec().metrics_window))
    );
    assert_eq!(
        (planned[0].check.min, planned[0].check.max),
        (Some(90.0), None)
    );
    assert_eq!(planned[0].check.unit, "%");
    assert_eq!(planned[0].address, None);
    // A custom query: rendered, with its own address and no-data policy.
    assert_eq!(
        planned[1].query,
        Ok("sum(errors{namespace=\"shop\",service=\"web-svc\"}[1m])".to_owned())
    );
    assert_eq!(
        (planned[1].check.min, planned[1].check.max),
        (None, Some(5.0))
    );
    assert_eq!(planned[1].check.unit, "");
    assert_eq!(planned[1].address.as_deref(), Some("http://thanos:9090"));
    assert_eq!(planned[1].check.no_data, NoData::Skip);
}

#[test]
fn a_template_metric_that_cannot_be_rendered_is_planned_with_its_reason() {
    let planned = plan_checks(
        &spec(),
        Some(&template(vec![
            metric("latency", None),
            metric("x", Some("{{ pod }}")),
        ])),
        "shop",
        "web",
    );
    assert_eq!(
        planned[0].query,
        Err(QueryError::NotBuiltin {
            name: "latency".into()
        })
    );
    assert_eq!(
        planned[1].query,
        Err(QueryError::UnknownVariable { name: "pod".into() })
    );
}

// ---- a Prometheus stand-in on loopback -----------------------------------------------------

/// The builtin success-rate query of `web` in `shop`; the `echo` case checks it arrives intact.
fn echoed_query() -> String {
    Builtin::SuccessRate.query("shop", "web", Duration::from_secs(60))
}

fn json(status: StatusCode, body: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_owned(),
    )
        .into_response()
}

fn vector(values: &[&str]) -> Response {
    let result: Vec<String> = values
        .iter()
        .map(|v| format!(r#"{{"metric":{{"deployment":"web"}},"value":[1700000000.123,"{v}"]}}"#))
        .collect();
    json(
        StatusCode::OK,
        &format!(
            r#"{{"status":"success","data":{{"resultType":"vector","result":[{}]}}}}"#,
            result.join(",")
        ),
    )
}

/// Prometheus at `http://127.0.0.1:PORT/<case>`, answering as the case says.
async fn prometheus_case(
    Path(case): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    match case.as_str() {
        "vector" => vector(&["99.5", "12"]),
        "other" => vector(&["7"]),
        "scalar" => json(
            StatusCode::OK,
            r#"{"status":"success","data":{"resultType":"scalar","result":[1700000000.123,"42"]}}"#,
        ),
        "empty" => vector(&[]),
        // Traefik's buckets (seconds): 100 requests, 60 above 0.3 s, 5 above 1.2 s.
        "buckets" => {
            let samples: Vec<String> = [
                ("0.1", 10),
                ("0.3", 40),
                ("1.2", 95),
                ("5", 100),
                ("+Inf", 100),
            ]
            .iter()
            .map(|(le, n)| format!(r#"{{"metric":{{"le":"{le}"}},"value":[1700000000.1,"{n}"]}}"#))
            .collect();
            json(
                StatusCode::OK,
                &format!(
                    r#"{{"status":"success","data":{{"resultType":"vector","result":[{}]}}}}"#,
                    samples.join(",")
                ),
            )
        }
        "too-many-buckets" => {
            let samples: Vec<String> = (0..=MAX_BUCKETS)
                .map(|le| format!(r#"{{"metric":{{"le":"{le}"}},"value":[1700000000.1,"1"]}}"#))
                .collect();
            json(
                StatusCode::OK,
                &format!(
                    r#"{{"status":"success","data":{{"resultType":"vector","result":[{}]}}}}"#,
                    samples.join(",")
                ),
            )
        }
        "nan" => vector(&["NaN"]),
        "inf" => vector(&["+Inf"]),
        "matrix" => json(
            StatusCode::OK,
            r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1700000000,"1"]]}]}}"#,
        ),
        "error500" => (StatusCode::INTERNAL_SERVER_ERROR, "upstream exploded").into_response(),
        "bad-query" => json(
            StatusCode::BAD_REQUEST,
            r#"{"status":"error","errorType":"bad_data","error":"invalid parameter \"query\": 1:3: parse error: unexpected end of input"}"#,
        ),
        "garbage" => (StatusCode::OK, "<html>hello</html>").into_response(),
        "not-a-number" => vector(&["lots"]),
        "slow" => {
            tokio::time::sleep(StdDuration::from_secs(5)).await;
            vector(&["1"])
        }
        // A Prometheus that sends Serin elsewhere (to a stand-in that would say 100 %).
        "redirect" => (
            StatusCode::FOUND,
            [(
                header::LOCATION,
                "http://fake-prometheus.test/api/v1/query?query=up",
            )],
        )
            .into_response(),
        "echo" if params.get("query") == Some(&echoed_query()) => vector(&["1"]),
        _ => (StatusCode::NOT_FOUND, "no such case").into_response(),
    }
}

/// The stand-in's base URL; a case's address is `<base>/<case>`.
async fn prometheus() -> String {
    serve_on_loopback(Router::new().route("/{case}/api/v1/query", get(prometheus_case))).await
}

fn client(default_address: &str) -> PrometheusClient {
    let http = http::client().expect("http client");
    PrometheusClient::new(http, default_address).with_timeout(StdDuration::from_millis(500))
}

async fn ask(case: &str) -> Result<Option<f64>, MetricsError> {
    let base = prometheus().await;
    client(&format!("{base}/{case}")).query(None, "up").await
}

fn message(result: Result<Option<f64>, MetricsError>) -> String {
    match result {
        Err(e) => e.to_string(),
        Ok(v) => panic!("expected an error, got {v:?}"),
    }
}

#[tokio::test]
async fn a_vector_answer_gives_its_first_sample() {
    assert_eq!(ask("vector").await, Ok(Some(99.5)));
}

#[tokio::test]
async fn a_scalar_answer_gives_its_value() {
    assert_eq!(ask("scalar").await, Ok(Some(42.0)));
}

#[tokio::test]
async fn an_empty_vector_is_no_data() {
    assert_eq!(ask("empty").await, Ok(None));
}

#[tokio::test]
async fn nan_is_no_data() {
    assert_eq!(ask("nan").await, Ok(None));
}

#[tokio::test]
async fn infinity_is_a_value() {
    assert_eq!(ask("inf").await, Ok(Some(f64::INFINITY)));
}

#[tokio::test]
async fn the_query_arrives_url_encoded_and_intact() {
    let base = prometheus().await;
    let answer = client(&format!("{base}/echo"))
        .query(None, &echoed_query())
        .await;
    assert_eq!(answer, Ok(Some(1.0)));
}

#[tokio::test]
async fn a_metric_address_overrides_the_default_one_and_may_end_in_a_slash() {
    let base = prometheus().await;
    let client = client(&format!("{base}/vector"));
    assert_eq!(client.query(None, "up").await, Ok(Some(99.5)));
    let other = format!("{base}/other/");
    assert_eq!(client.query(Some(&other), "up").await, Ok(Some(7.0)));
}

#[tokio::test]
async fn an_http_error_names_the_address_the_query_and_the_status() {
    let base = prometheus().await;
    let error = message(client(&format!("{base}/error500")).query(None, "up").await);
    assert_eq!(
        error,
        format!("Prometheus at {base}/error500 refused \"up\": HTTP 500: upstream exploded")
    );
}

#[tokio::test]
async fn a_refused_query_quotes_prometheus_explanation() {
    let base = prometheus().await;
    let error = message(client(&format!("{base}/bad-query")).query(None, "1+").await);
    assert_eq!(
        error,
        format!(
            "Prometheus at {base}/bad-query refused \"1+\": HTTP 400 (bad_data): invalid \
             parameter \"query\": 1:3: parse error: unexpected end of input"
        )
    );
}

#[tokio::test]
async fn a_garbage_answer_is_an_error_quoting_it() {
    let base = prometheus().await;
    let error = message(client(&format!("{base}/garbage")).query(None, "up").await);
    assert_eq!(
        error,
        format!(
            "Prometheus at {base}/garbage gave an unreadable answer to \"up\": not a \
             Prometheus API answer: \"<html>hello</html>\""
        )
    );
}

#[tokio::test]
async fn a_sample_that_is_not_a_number_is_an_error() {
    let error = message(ask("not-a-number").await);
    assert!(error.ends_with("\"lots\" is not a number"), "{error}");
}

#[tokio::test]
async fn a_range_vector_is_not_a_number() {
    let error = message(ask("matrix").await);
    assert!(
        error.starts_with("\"up\" gives a matrix on Prometheus at "),
        "{error}"
    );
}

#[tokio::test]
async fn a_slow_prometheus_times_out() {
    let base = prometheus().await;
    let started = std::time::Instant::now();
    let answer = client(&format!("{base}/slow")).query(None, "up").await;
    assert_eq!(
        answer,
        Err(MetricsError::Timeout {
            address: format!("{base}/slow"),
            query: "up".into(),
            timeout: StdDuration::from_millis(500),
        })
    );
    assert!(started.elapsed() < StdDuration::from_secs(4));
    assert_eq!(
        answer.err().map(|e| e.to_string()),
        Some(format!(
            "Prometheus at {base}/slow did not answer within 500ms to \"up\""
        ))
    );
}

/// An address where nothing listens: a port just bound and released.
async fn closed_address() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("local address");
    drop(listener);
    format!("http://{address}")
}

#[tokio::test]
async fn an_unreachable_prometheus_is_an_error_naming_it() {
    let address = closed_address().await;
    let error = message(client(&address).query(None, "up").await);
    assert!(
        error.starts_with(&format!(
            "Prometheus at {address} could not be asked \"up\": "
        )),
        "{error}"
    );
}

#[tokio::test]
async fn a_redirect_is_an_error_and_is_not_followed() {
    let error = message(ask("redirect").await);
    assert!(
        error.contains(
            "answered \"up\" with HTTP 302, a redirect to \
             http://fake-prometheus.test/api/v1/query?query=up; Serin does not follow redirects"
        ),
        "{error}"
    );
}

#[tokio::test]
async fn link_local_and_serins_own_ports_are_never_asked_whatever_the_address() {
    // The cloud metadata address, as a literal, in IPv6 clothing and in decimal; `localhost`
    // on Serin's admin port (resolved, then refused).
    let base = prometheus().await;
    let (outbound, port) = http::outbound_guarding(&base);
    let guarded = PrometheusClient::new(outbound, "http://unused.test")
        .with_timeout(StdDuration::from_secs(2));
    for (address, expected) in [
        ("http://169.254.169.254", "may not be asked"),
        ("http://[::ffff:169.254.169.254]:9090", "metadata"),
        ("http://2852039166/", "metadata"),
        ("http://[fe80::1]:9090", "link-local"),
        (
            &format!("http://127.0.0.1:{port}/vector"),
            "Serin's own listener",
        ),
        (
            &format!("http://localhost:{port}/vector"),
            "Serin's own listener",
        ),
    ] {
        let error = message(guarded.query(Some(address), "up").await);
        assert!(error.contains(expected), "{address}: {error}");
    }
    // The same stand-in through the unguarded port check answers: only Serin's ports are
    // refused on loopback, not a Prometheus beside it.
    let beside = http::Outbound::new(crate::policy::egress::Egress::new([1])).expect("outbound");
    let answer = PrometheusClient::new(beside, "http://unused.test")
        .query(Some(&format!("{base}/vector")), "up")
        .await;
    assert_eq!(answer, Ok(Some(99.5)));
}

// ---- measuring -----------------------------------------------------------------------------

fn planned(name: &str, address: &str, no_data: NoData) -> PlannedCheck {
    PlannedCheck {
        check: MetricCheck {
            name: name.into(),
            unit: String::new(),
            value: None,
            min: Some(1.0),
            max: None,
            no_data,
            evidence: None,
        },
        address: Some(address.into()),
        secret: None,
        query: Ok("up".into()),
        counts: None,
        latency_counts: None,
    }
}

#[tokio::test]
async fn measuring_fills_each_check_with_its_answer() {
    let base = prometheus().await;
    let plan = [
        planned("a", &format!("{base}/vector"), NoData::Fail),
        planned("b", &format!("{base}/empty"), NoData::Skip),
        planned("c", &format!("{base}/nan"), NoData::Fail),
    ];
    let measured = measure(&client(&base), &plan, &Default::default()).await;
    assert_eq!(measured.errors, Vec::<String>::new());
    assert_eq!(measured.error_message(), None);
    let values: Vec<_> = measured
        .checks
        .iter()
        .map(|c| (c.name.as_str(), c.value, c.no_data))
        .collect();
    assert_eq!(
        values,
        [
            ("a", Some(99.5), NoData::Fail),
            // Empty is "no data", which this check may skip.
            ("b", None, NoData::Skip),
            ("c", None, NoData::Fail),
        ]
    );
}

#[tokio::test]
async fn a_failed_query_is_a_failed_check_even_when_no_data_may_be_skipped() {
    let base = prometheus().await;
    let down = closed_address().await;
    let plan = [
        planned("rate", &down, NoData::Skip),
        planned("p99", &format!("{base}/error500"), NoData::Skip),
    ];
    let measured = measure(&client(&base), &plan, &Default::default()).await;
    for check in &measured.checks {
        assert_eq!((check.value, check.no_data), (None, NoData::Fail));
    }
    assert_eq!(measured.errors.len(), 2);
    assert!(
        measured.errors[0].starts_with(&format!("rate: Prometheus at {down} could not be asked")),
        "{:?}",
        measured.errors
    );
    assert_eq!(
        measured.errors[1],
        format!("p99: Prometheus at {base}/error500 refused \"up\": HTTP 500: upstream exploded")
    );
    assert_eq!(measured.error_message(), Some(measured.errors.join("; ")));
}

#[tokio::test]
async fn a_metric_that_cannot_be_rendered_is_a_failed_check_without_asking_prometheus() {
    let down = closed_address().await;
    let mut broken = planned("x", &down, NoData::Skip);
    broken.query = Err(QueryError::UnknownVariable { name: "pod".into() });
    let measured = measure(&client(&down), &[broken], &Default::default()).await;
    assert_eq!(measured.checks[0].no_data, NoData::Fail);
    assert_eq!(
        measured.errors,
        [
            "x: the query uses {{ pod }}, which is not a variable (use namespace, target, service, interval)"
        ]
    );
}

#[tokio::test]
async fn checks_are_measured_concurrently() {
    // This Prometheus answers only once all three queries are waiting: asked one after the
    // other, the first query would time out.
    let all_asked = std::sync::Arc::new(tokio::sync::Barrier::new(3));
    let base = serve_on_loopback(Router::new().route(
        "/api/v1/query",
        get(move || {
            let all_asked = all_asked.clone();
            async move {
                all_asked.wait().await;
                vector(&["1"])
            }
        }),
    ))
    .await;
    let plan: Vec<_> = (0..3)
        .map(|i| planned(&format!("check-{i}"), &base, NoData::Fail))
        .collect();
    let measured = measure(&client(&base), &plan, &Default::default()).await;
    assert_eq!(measured.errors, Vec::<String>::new());
    assert!(measured.checks.iter().all(|c| c.value == Some(1.0)));
}

// ---- credentials over TLS ------------------------------------------------------------------

/// A Prometheus stand-in behind TLS that wants a client certificate (signed by its own
/// client CA) and answers 42 only to requests carrying `authorization`, else 401.
struct TlsPrometheus {
    base: String,
    /// The CA of its serving certificate.
    ca_pem: String,
    client_cert_pem: String,
    client_key_pem: String,
}

const BASIC_SERIN: &str = "Basic c2VyaW46Y29ycmVjdC1ob3JzZQ=="; // serin:correct-horse

async fn tls_prometheus(authorization: &'static str) -> TlsPrometheus {
    use hyper_util::rt::TokioIo;
    use hyper_util::service::TowerToHyperService;
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa,
        KeyPair,
    };
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    crate::server::install_crypto_provider();
    let serving = crate::certs::generate(&crate::certs::CertOptions::default()).expect("serving");
    let mut ca_params = CertificateParams::default();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    let client_ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key"))
        .expect("client CA");
    let mut client_params = CertificateParams::new(vec!["serin".to_owned()]).expect("params");
    client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client_key = KeyPair::generate().expect("key");
    let client_cert = client_params
        .signed_by(&client_key, &client_ca)
        .expect("client certificate");

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(client_ca.as_ref().der().to_vec()))
        .expect("client CA root");
    let verifier = rustls::server::WebPkiClientVerifier::builder(std::sync::Arc::new(roots))
        .build()
        .expect("client verifier");
    let chain = CertificateDer::pem_slice_iter(serving.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("chain");
    let key = PrivateKeyDer::from_pem_slice(serving.key_pem.as_bytes()).expect("key");
    let config = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));

    let app = Router::new().route(
        "/api/v1/query",
        get(move |headers: axum::http::HeaderMap| async move {
            match headers.get(header::AUTHORIZATION) {
                Some(given) if given == authorization => (
                    StatusCode::OK,
                    r#"{"status":"success","data":{"resultType":"scalar","result":[1,"42"]}}"#,
                ),
                _ => (StatusCode::UNAUTHORIZED, "Unauthorized"),
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), TowerToHyperService::new(app))
                    .await;
            });
        }
    });
    TlsPrometheus {
        base: format!("https://{address}"),
        ca_pem: serving.ca_pem,
        client_cert_pem: client_cert.pem(),
        client_key_pem: client_key.serialize_pem(),
    }
}

fn secret_keys(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
        .collect()
}

fn from_secret(pairs: &[(&str, &str)]) -> Credentials {
    let origin = credentials::Origin::Secret {
        namespace: "shop".into(),
        name: "prom-auth".into(),
    };
    Credentials::from_keys(&origin, &secret_keys(pairs)).expect("usable credentials")
}

#[tokio::test]
async fn a_secret_with_basic_auth_a_ca_and_a_client_certificate_reaches_a_tls_prometheus() {
    let prometheus = tls_prometheus(BASIC_SERIN).await;
    let credentials = from_secret(&[
        ("username", "serin"),
        ("password", "correct-horse\n"),
        ("ca.crt", &prometheus.ca_pem),
        ("tls.crt", &prometheus.client_cert_pem),
        ("tls.key", &prometheus.client_key_pem),
    ]);
    let answer = client("http://unused.test")
        .query_with(&prometheus.base, &credentials, "up")
        .await;
    assert_eq!(answer, Ok(Some(42.0)));
}

#[tokio::test]
async fn a_wrong_password_is_refused_by_prometheus_and_the_message_never_shows_it() {
    let prometheus = tls_prometheus(BASIC_SERIN).await;
    let credentials = from_secret(&[
        ("username", "serin"),
        ("password", "wrong-horse"),
        ("ca.crt", &prometheus.ca_pem),
        ("tls.crt", &prometheus.client_cert_pem),
        ("tls.key", &prometheus.client_key_pem),
    ]);
    let error = message(
        client("http://unused.test")
            .query_with(&prometheus.base, &credentials, "up")
            .await,
    );
    assert!(error.contains("HTTP 401"), "{error}");
    assert!(!error.contains("wrong-horse"), "{error}");
}

#[tokio::test]
async fn without_the_ca_or_the_client_certificate_there_is_no_tls_session() {
    let prometheus = tls_prometheus(BASIC_SERIN).await;
    let no_ca = from_secret(&[
        ("username", "serin"),
        ("password", "correct-horse"),
        ("tls.crt", &prometheus.client_cert_pem),
        ("tls.key", &prometheus.client_key_pem),
    ]);
    let no_client_cert = from_secret(&[
        ("username", "serin"),
        ("password", "correct-horse"),
        ("ca.crt", &prometheus.ca_pem),
    ]);
    for credentials in [no_ca, no_client_cert] {
        let error = message(
            client("http://unused.test")
                .query_with(&prometheus.base, &credentials, "up")
                .await,
        );
        assert!(error.contains("could not be asked"), "{error}");
    }
}

#[tokio::test]
async fn the_flags_credentials_go_to_the_default_address_and_nowhere_else() {
    let prometheus = tls_prometheus("Bearer flag-token").await;
    let elsewhere = tls_prometheus("Bearer flag-token").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        Some(path)
    };
    let files = CredentialFiles {
        bearer_token_file: write("token", "flag-token\n"),
        ca_file: write("ca.crt", &prometheus.ca_pem),
        client_cert: write("tls.crt", &prometheus.client_cert_pem),
        client_key: write("tls.key", &prometheus.client_key_pem),
        ..CredentialFiles::default()
    };
    let client = client(&prometheus.base).with_credentials(files);
    assert_eq!(client.query(None, "up").await, Ok(Some(42.0)));
    // A metric's own address gets none of them: no CA to trust it by, no client
    // certificate, no token.
    let error = message(client.query(Some(&elsewhere.base), "up").await);
    assert!(error.contains("could not be asked"), "{error}");
}

#[tokio::test]
async fn a_check_with_a_secret_fails_naming_it_when_it_cannot_be_used() {
    let base = prometheus().await;
    let mut named = planned("errors", &format!("{base}/vector"), NoData::Fail);
    named.secret = Some("prom-auth".into());
    let mut without_address = named.clone();
    without_address.check.name = "latency".into();
    without_address.address = None;
    let secrets = BTreeMap::from([(
        "prom-auth".to_owned(),
        Err(CredentialsError::NotFound {
            origin: "Secret shop/prom-auth".into(),
        }),
    )]);
    let measured = measure(&client(&base), &[named, without_address], &secrets).await;
    assert_eq!(
        measured.errors,
        [
            "errors: Secret shop/prom-auth does not exist (it is named in the metric's \
             secretRef)",
            "latency: secretRef \"prom-auth\" needs the metric's own address: the default \
             Prometheus is asked with Serin's own credentials",
        ]
    );
    assert!(measured.checks.iter().all(|c| c.value.is_none()));
}

/// Flagger's metric `interval` is that metric's query window: it fills `{{ interval }}` of
/// its query and the rate window of a builtin, while metrics without one keep
/// `serin.dev/metrics-window`.
#[test]
fn a_metrics_own_interval_overrides_the_metrics_window_for_that_metric_only() {
    let mut custom = metric(
        "errors",
        Some("sum(rate(errors{app=\"{{ target }}\"}[{{ interval }}]))"),
    );
    custom.interval = Some(Duration::from_secs(120));
    let mut latency = metric("request-duration", None);
    latency.interval = Some(Duration::from_secs(30));
    let plain = metric("other", Some("sum(rate(x[{{ interval }}]))"));
    let spec = CanarySpec {
        metrics_window: Duration::from_secs(60),
        ..spec()
    };
    let planned = plan_checks(
        &spec,
        Some(&template(vec![custom, latency, plain])),
        "shop",
        "web",
    );
    let query = |i: usize| planned[i].query.clone().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(query(0), "sum(rate(errors{app=\"web\"}[2m]))");
    assert!(query(1).contains("[30s]"), "{}", query(1));
    assert!(!query(1).contains("[1m]"), "{}", query(1));
    assert_eq!(query(2), "sum(rate(x[1m]))");
}

// ---- the counted latency check -----------------------------------------------------------------

/// The builtin latency check of `spec`, planned with its counts over 30 seconds.
fn latency_plan(spec: &CanarySpec, template: Option<&AnalysisTemplateSpec>) -> Vec<PlannedCheck> {
    let planned = plan_checks(spec, template, "shop", "web");
    with_counts(planned, spec, "shop", "web", 30)
}

#[test]
fn with_sequential_checks_the_builtin_latency_is_planned_with_its_histogram_and_limit() {
    let planned = latency_plan(&spec(), None);
    let latency = planned
        .iter()
        .find(|p| p.check.name == "request-duration")
        .and_then(|p| p.latency_counts.clone())
        .expect("the latency is counted");
    assert_eq!(latency.limit_ms, 500.0);
    assert!(
        latency.buckets.query.contains("response_latency_ms_bucket"),
        "{latency:?}"
    );
    // The success rate keeps its counts and gets no histogram.
    assert!(planned.iter().all(|p| p.counted()));
    assert!(planned[0].latency_counts.is_none());
    // Sequential checks off: the per-interval p99 alone, as before.
    let off = CanarySpec {
        sequential_checks: false,
        ..spec()
    };
    assert!(latency_plan(&off, None).iter().all(|p| !p.counted()));
}

#[test]
fn a_template_latency_is_counted_against_its_max_unless_it_has_its_own_query() {
    let mut builtin = metric("request-duration", None);
    builtin.threshold_range.max = Some(300.0);
    let planned = latency_plan(&spec(), Some(&template(vec![builtin])));
    assert_eq!(
        planned[0].latency_counts.as_ref().map(|l| l.limit_ms),
        Some(300.0)
    );
    let mut own = metric("request-duration", Some("my_p99{app=\"web\"}"));
    own.threshold_range.max = Some(300.0);
    let planned = latency_plan(&spec(), Some(&template(vec![own])));
    assert!(planned[0].latency_counts.is_none());
}

#[tokio::test]
async fn the_latency_histogram_is_measured_into_slow_requests_above_the_boundary_at_the_limit() {
    let base = prometheus().await;
    let mut check = planned("request-duration", &format!("{base}/buckets"), NoData::Fail);
    check.latency_counts = Some(LatencyCounts {
        buckets: crate::analysis::observers::LatencyBuckets {
            query: "buckets".into(),
            unit_ms: 1000.0,
        },
        limit_ms: 500.0,
    });
    let measured = measure(&client(&base), &[check.clone()], &Default::default()).await;
    assert_eq!(measured.errors, Vec::<String>::new());
    let evidence = measured.checks[0].evidence.expect("counted");
    // 500 ms is no Traefik boundary: counted from 300 ms, so 60 of 100 are slow.
    assert_eq!(
        (evidence.canary.requests, evidence.canary.failed),
        (100.0, 60.0)
    );
    let slow = evidence.slower_than.expect("a latency count");
    assert_eq!(
        (slow.limit_ms, slow.boundary_ms, slow.quantile),
        (500.0, 300.0, 0.99)
    );
    // A limit below the first bucket, or an answer that is no histogram, is a failed check.
    let mut below = check.clone();
    if let Some(l) = below.latency_counts.as_mut() {
        l.limit_ms = 50.0;
    }
    let mut not_buckets = check.clone();
    not_buckets.address = Some(format!("{base}/vector"));
    let mut too_many = check;
    too_many.address = Some(format!("{base}/too-many-buckets"));
    let measured = measure(
        &client(&base),
        &[below, not_buckets, too_many],
        &Default::default(),
    )
    .await;
    assert!(
        measured
            .checks
            .iter()
            .all(|c| c.evidence.is_none() && c.no_data == NoData::Fail)
    );
    assert!(
        measured.errors[0].contains(
            "below the histogram's smallest bucket (buckets: 100ms, 300ms, 1200ms, 5000ms)"
        ),
        "{:?}",
        measured.errors
    );
    assert!(
        measured.errors[1].contains("without the label \"le\""),
        "{:?}",
        measured.errors
    );
    assert!(
        measured.errors[2].contains("more than the 200 buckets"),
        "{:?}",
        measured.errors
    );
}
