//! Metric checks: which PromQL queries a release runs at each interval, and how the answers
//! become the [`MetricCheck`]s the release state machine judges.
//!
//! - The builtin queries ([`Builtin`]: Linkerd's of SPEC "Metrics", ingress-nginx's for the
//!   `nginx` provider, or Envoy's for `gloo`, as [`Observer`] says) and the custom queries of an
//!   `AnalysisTemplate`, whose `{{ namespace }}`, `{{ target }}`, `{{ service }}` and
//!   `{{ interval }}` are filled by [`render_query`]. Admission refuses a template with
//!   [`check_metric`], which goes through the same code, so the two cannot disagree.
//! - [`plan_checks`] (pure): what to measure for a canary. As in Flagger, a template that
//!   lists metrics replaces the builtin checks; otherwise the builtin checks run with the
//!   annotation thresholds (`serin.dev/success-rate`, `serin.dev/latency`).
//! - [`measure`]: runs the planned queries against Prometheus ([`prometheus`]) concurrently.
//!
//! Only an empty answer is "no data" (which `noData: skip` may leave out). A query that fails
//! (Prometheus down, slow, refusing the query, a broken template) is a failed check, always:
//! an unobservable canary is never promoted.

pub mod prometheus;

use futures::future::join_all;

use crate::crd::{AnalysisTemplateSpec, MetricTemplate, NoDataPolicy};
use crate::release::{MetricCheck, NoData, builtin_checks};
use crate::spec::{Builtin, CanarySpec, Duration, Provider};

pub use prometheus::{DEFAULT_QUERY_TIMEOUT, MetricsError, PrometheusClient};

/// Who sees the canary's requests and exports them to Prometheus, which decides the series
/// the builtin checks query (Flagger's metrics observers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Observer<'a> {
    /// Linkerd's proxies (`linkerd`, `smi:v1alpha2`, `gatewayapi`): the inbound
    /// `response_total` and `response_latency_ms` of the canary Deployment's pods.
    Linkerd {
        namespace: &'a str,
        /// The canary Deployment.
        deployment: &'a str,
    },
    /// ingress-nginx (`nginx`): `nginx_ingress_controller_requests` and
    /// `nginx_ingress_controller_request_duration_seconds` of the user's Ingress, for the
    /// requests it sent to the canary (a non-empty `canary` label: the canary upstream).
    Nginx {
        namespace: &'a str,
        /// The user's Ingress (`serin.dev/ingress`): ingress-nginx labels the canary's
        /// requests with it, not with the canary Ingress.
        ingress: &'a str,
    },
    /// Gloo's Envoy proxies (`gloo`): `envoy_cluster_upstream_rq` and
    /// `envoy_cluster_upstream_rq_time` of the Envoy cluster of the canary's Upstream
    /// (`<namespace>-<service>-canaryupstream-<port>_<namespace>`, see [`crate::router::gloo`]).
    Gloo {
        namespace: &'a str,
        /// The apex Service, which names the Upstreams.
        service: &'a str,
        /// The port the Upstreams route to; any port when unknown.
        port: Option<i32>,
    },
}

impl<'a> Observer<'a> {
    /// The observer of a release of the canary Deployment `target` in `namespace`.
    pub fn of(spec: &'a CanarySpec, namespace: &'a str, target: &'a str) -> Self {
        match spec.provider {
            Provider::Nginx => Observer::Nginx {
                namespace,
                // Validation requires the Ingress with `nginx`.
                ingress: spec.ingress.as_deref().unwrap_or(&spec.service),
            },
            Provider::Gloo => Observer::Gloo {
                namespace,
                service: &spec.service,
                port: spec.port,
            },
            Provider::Linkerd | Provider::SmiV1alpha2 | Provider::GatewayApi => Observer::Linkerd {
                namespace,
                deployment: target,
            },
        }
    }
}

impl Builtin {
    /// The Linkerd query (SPEC "Metrics") for the canary Deployment `target` in `namespace`.
    pub fn query(self, namespace: &str, target: &str, window: Duration) -> String {
        let observer = Observer::Linkerd {
            namespace,
            deployment: target,
        };
        self.query_for(&observer, window)
    }

    /// The query of what `observer` saw of the canary, rating over `window`. The window
    /// prints as Serin's canonical duration (`1m30s`), which Prometheus accepts.
    pub fn query_for(self, observer: &Observer<'_>, window: Duration) -> String {
        match *observer {
            Observer::Linkerd {
                namespace,
                deployment,
            } => {
                // SPEC's regex match, with the name escaped: `.` is legal in a Deployment
                // name, and the bare regex `good.primary` also matches `good-primary`'s
                // series. (Names without a `.` read exactly as SPEC spells the query.)
                let selector = format!(
                    "namespace=\"{}\",deployment=~\"{}\"",
                    label_value(namespace),
                    label_value(&regex_literal(deployment))
                );
                match self {
                    Builtin::SuccessRate => format!(
                        "sum(rate(response_total{{{selector},classification!=\"failure\",direction=\"inbound\"}}[{window}])) / \
                         sum(rate(response_total{{{selector},direction=\"inbound\"}}[{window}])) * 100"
                    ),
                    Builtin::Duration => format!(
                        "histogram_quantile(0.99, sum(rate(response_latency_ms_bucket{{{selector},direction=\"inbound\"}}[{window}])) by (le))"
                    ),
                }
            }
            Observer::Nginx { namespace, ingress } => {
                let selector = format!(
                    "namespace=\"{}\",ingress=\"{}\",canary!=\"\"",
                    label_value(namespace),
                    label_value(ingress)
                );
                match self {
                    // 5xx answers are the failures, as Flagger counts them.
                    Builtin::SuccessRate => format!(
                        "sum(rate(nginx_ingress_controller_requests{{{selector},status!~\"5.*\"}}[{window}])) / \
                         sum(rate(nginx_ingress_controller_requests{{{selector}}}[{window}])) * 100"
                    ),
                    // Seconds, in milliseconds like the Linkerd query.
                    Builtin::Duration => format!(
                        "histogram_quantile(0.99, sum(rate(nginx_ingress_controller_request_duration_seconds_bucket{{{selector}}}[{window}])) by (le)) * 1000"
                    ),
                }
            }
            Observer::Gloo {
                namespace,
                service,
                port,
            } => {
                use crate::router::gloo::{
                    Side, envoy_cluster_name, upstream_name, upstream_prefix,
                };
                let selector = match port {
                    Some(port) => {
                        let upstream = upstream_name(namespace, service, Side::Canary, port);
                        format!(
                            "envoy_cluster_name=\"{}\"",
                            label_value(&envoy_cluster_name(&upstream, namespace))
                        )
                    }
                    None => {
                        // Any port: the names around it are matched literally, escaped.
                        let prefix = upstream_prefix(namespace, service, Side::Canary);
                        let suffix = envoy_cluster_name("", namespace);
                        let regex =
                            format!("{}[0-9]+{}", regex_literal(&prefix), regex_literal(&suffix));
                        format!("envoy_cluster_name=~\"{}\"", label_value(&regex))
                    }
                };
                match self {
                    // 5xx answers are the failures, as Flagger counts them.
                    Builtin::SuccessRate => format!(
                        "sum(rate(envoy_cluster_upstream_rq{{{selector},envoy_response_code!~\"5.*\"}}[{window}])) / \
                         sum(rate(envoy_cluster_upstream_rq{{{selector}}}[{window}])) * 100"
                    ),
                    // Envoy's upstream request time is in milliseconds already.
                    Builtin::Duration => format!(
                        "histogram_quantile(0.99, sum(rate(envoy_cluster_upstream_rq_time_bucket{{{selector}}}[{window}])) by (le))"
                    ),
                }
            }
        }
    }
}

/// `value` as the inside of a PromQL double-quoted string: backslashes, quotes and line
/// breaks escaped, so a label value can never end the string or change the selector.
pub fn label_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out
}

/// `text` as a regular expression (RE2, as Prometheus reads them) that matches exactly it.
pub fn regex_literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// What a custom query may refer to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueryVars<'a> {
    pub namespace: &'a str,
    /// The canary Deployment (the user's Deployment).
    pub target: &'a str,
    /// The apex Service.
    pub service: &'a str,
    /// The rate window, `serin.dev/metrics-window` (Flagger's metric `interval`).
    pub interval: Duration,
    /// Who sees the canary's requests, for builtin metrics without a query; Linkerd when
    /// `None`.
    pub observer: Option<Observer<'a>>,
}

impl<'a> QueryVars<'a> {
    fn observer(&self) -> Observer<'a> {
        self.observer.unwrap_or(Observer::Linkerd {
            namespace: self.namespace,
            deployment: self.target,
        })
    }
}

/// The variables a query may use, in messages.
const VARIABLES: &str = "namespace, target, service, interval";

/// Why a metric of an `AnalysisTemplate` cannot become a query.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("the query uses {{{{ {name} }}}}, which is not a variable (use {VARIABLES})")]
    UnknownVariable { name: String },
    #[error("the query opens \"{{{{\" at character {at} and never closes it with \"}}}}\"")]
    Unclosed { at: usize },
    #[error(
        "{name:?} has no query and is not a builtin metric ({})",
        builtin_names()
    )]
    NotBuiltin { name: String },
}

fn builtin_names() -> String {
    Builtin::ALL.map(Builtin::name).join(", ")
}

/// Fills the `{{ variable }}`s of a custom query (spaces inside the braces optional).
pub fn render_query(template: &str, vars: &QueryVars<'_>) -> Result<String, QueryError> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        let at = template.len() - rest.len() + open;
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let close = after.find("}}").ok_or(QueryError::Unclosed {
            at: template[..at].chars().count() + 1,
        })?;
        let name = after[..close].trim();
        match name {
            // Names go between a query's quotes: escaped like the builtin queries' values
            // (Kubernetes names hold none of those characters, so this changes nothing
            // today). Inside a regex match (`=~`) a `.` of a name still matches any
            // character: write `=` for exact names.
            "namespace" => out.push_str(&label_value(vars.namespace)),
            "target" => out.push_str(&label_value(vars.target)),
            "service" => out.push_str(&label_value(vars.service)),
            "interval" => out.push_str(&vars.interval.to_string()),
            _ => {
                return Err(QueryError::UnknownVariable {
                    name: name.to_owned(),
                });
            }
        }
        rest = &after[close + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Whether a template metric can be measured: its query only uses known variables, or it is
/// a builtin. For admission, which refuses the template otherwise.
pub fn check_metric(metric: &MetricTemplate) -> Result<(), QueryError> {
    let vars = QueryVars {
        namespace: "namespace",
        target: "target",
        service: "service",
        interval: Duration::from_secs(60),
        observer: None,
    };
    metric_query(metric, &vars).map(|_| ())
}

/// The query of a template metric: its own, rendered, or the builtin one of that name.
fn metric_query(metric: &MetricTemplate, vars: &QueryVars<'_>) -> Result<String, QueryError> {
    match (&metric.query, Builtin::named(&metric.name)) {
        (Some(query), _) => render_query(query, vars),
        (None, Some(builtin)) => Ok(builtin.query_for(&vars.observer(), vars.interval)),
        (None, None) => Err(QueryError::NotBuiltin {
            name: metric.name.clone(),
        }),
    }
}

/// One check to measure: the [`MetricCheck`] it becomes (name, unit, range, no-data policy;
/// `value` still `None`), and where and what to ask.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedCheck {
    pub check: MetricCheck,
    /// Prometheus address; the client's default when `None`.
    pub address: Option<String>,
    /// The PromQL to run, or why there is none (a failed check when measured).
    pub query: Result<String, QueryError>,
}

/// The checks of one interval for the canary Deployment `target` in `namespace`: the
/// template's metrics when it lists any (builtin names without a query use the builtin query
/// with the template's range), else the two builtin checks with the annotation thresholds.
pub fn plan_checks(
    spec: &CanarySpec,
    template: Option<&AnalysisTemplateSpec>,
    namespace: &str,
    target: &str,
) -> Vec<PlannedCheck> {
    let vars = QueryVars {
        namespace,
        target,
        service: &spec.service,
        interval: spec.metrics_window,
        observer: Some(Observer::of(spec, namespace, target)),
    };
    match template.map(|t| t.metrics.as_slice()).unwrap_or_default() {
        [] => builtin_checks(spec, None, None)
            .into_iter()
            .map(|check| PlannedCheck {
                query: Builtin::named(&check.name)
                    .map(|b| b.query_for(&vars.observer(), spec.metrics_window))
                    .ok_or_else(|| QueryError::NotBuiltin {
                        name: check.name.clone(),
                    }),
                check,
                address: None,
            })
            .collect(),
        metrics => metrics
            .iter()
            .map(|metric| template_check(metric, &vars))
            .collect(),
    }
}

fn template_check(metric: &MetricTemplate, vars: &QueryVars<'_>) -> PlannedCheck {
    let unit = match (&metric.query, Builtin::named(&metric.name)) {
        (None, Some(builtin)) => builtin.unit(),
        _ => "",
    };
    PlannedCheck {
        check: MetricCheck {
            name: metric.name.clone(),
            unit: unit.into(),
            value: None,
            min: metric.threshold_range.min,
            max: metric.threshold_range.max,
            no_data: match metric.no_data {
                NoDataPolicy::Fail => NoData::Fail,
                NoDataPolicy::Skip => NoData::Skip,
            },
        },
        address: metric.address.clone(),
        query: metric_query(metric, vars),
    }
}

/// The checks of one interval, measured, for `Observations::checks`; and why any query
/// failed, for the Event (the check itself only says "no data").
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Measurement {
    pub checks: Vec<MetricCheck>,
    /// One line per failed query: `<check>: <why>`.
    pub errors: Vec<String>,
}

impl Measurement {
    /// The errors on one line, for an Event; `None` when every query answered.
    pub fn error_message(&self) -> Option<String> {
        (!self.errors.is_empty()).then(|| self.errors.join("; "))
    }
}

/// Runs every planned query at once. A query that fails is a failed check whatever its
/// no-data policy; an empty answer (or NaN, 0/0 without traffic) is "no data".
pub async fn measure(prometheus: &PrometheusClient, planned: &[PlannedCheck]) -> Measurement {
    let answers = join_all(planned.iter().map(|p| async move {
        match &p.query {
            Ok(query) => prometheus
                .query(p.address.as_deref(), query)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        }
    }))
    .await;
    let mut measurement = Measurement::default();
    for (planned, answer) in planned.iter().zip(answers) {
        let mut check = planned.check.clone();
        match answer {
            Ok(value) => check.value = value,
            Err(why) => {
                check.value = None;
                check.no_data = NoData::Fail;
                measurement.errors.push(format!("{}: {why}", check.name));
            }
        }
        measurement.checks.push(check);
    }
    measurement
}

#[cfg(test)]
mod tests;
