//! Planning and measuring the checks of one interval: [`plan_checks`] (pure) says what to
//! measure for a canary; as in Flagger, a template that lists metrics replaces the builtin
//! checks, otherwise the builtin checks run with the annotation thresholds
//! (`serin.dev/success-rate`, `serin.dev/latency`). [`measure`] runs the planned queries
//! against Prometheus concurrently.
//!
//! Only an empty answer is "no data" (which `noData: skip` may leave out). A query that fails
//! (Prometheus down, slow, refusing the query, a broken template) is a failed check, always:
//! an unobservable canary is never promoted.

use std::collections::{BTreeMap, BTreeSet};

use futures::future::join_all;

use crate::crd::{AnalysisTemplateSpec, MetricTemplate, NoDataPolicy};
use crate::release::{Counts, Evidence, MetricCheck, NoData, SlowerThan, builtin_checks};
use crate::spec::{Builtin, CanarySpec, Compare, LATENCY_QUANTILE, Strategy};

use super::credentials::{Credentials, CredentialsError};
use super::histogram::slow_requests;
use super::observers::{LatencyBuckets, Observer, Side};
use super::prometheus::PrometheusClient;
use super::queries::{QueryError, QueryVars, metric_query};

/// One check to measure: the [`MetricCheck`] it becomes (name, unit, range, no-data policy;
/// `value` still `None`), and where and what to ask.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedCheck {
    pub check: MetricCheck,
    /// Prometheus address; the client's default when `None`.
    pub address: Option<String>,
    /// The Secret (in the release's namespace) whose credentials go with `address`.
    pub secret: Option<String>,
    /// The PromQL to run, or why there is none (a failed check when measured).
    pub query: Result<String, QueryError>,
    /// The request counts to measure besides the value, when the check is judged on them
    /// ([`with_counts`]).
    pub counts: Option<CountQueries>,
    /// The latency histogram to read besides the value, when the latency check is judged on
    /// its slow requests ([`with_counts`]).
    pub latency_counts: Option<LatencyCounts>,
}

impl PlannedCheck {
    /// Judged on counts, so measured at the looks between intervals too.
    pub fn counted(&self) -> bool {
        self.counts.is_some() || self.latency_counts.is_some()
    }
}

/// The histogram query of the counted latency check, and its limit.
#[derive(Clone, Debug, PartialEq)]
pub struct LatencyCounts {
    /// The canary's requests since the weight moved, by latency bucket.
    pub buckets: LatencyBuckets,
    /// The check's limit (`serin.dev/latency`, or the template metric's `max`), milliseconds.
    pub limit_ms: f64,
}

/// The queries of a counted check: requests and failed requests since the weight moved.
#[derive(Clone, Debug, PartialEq)]
pub struct CountQueries {
    /// The canary's `[requests, failed]`.
    pub canary: [String; 2],
    /// The primary's, with `serin.dev/compare: primary`.
    pub primary: Option<[String; 2]>,
}

/// The longest window the counts are read over: a step held longer is judged on the
/// requests of its last [`CanarySpec::metrics_window`] (the window users already size for
/// their scrape interval and traffic), never on an unbounded range.
pub fn count_window(spec: &CanarySpec, seconds_since_weight_moved: u64) -> u64 {
    seconds_since_weight_moved.clamp(1, (spec.metrics_window.as_millis() / 1000).max(1))
}

/// `planned` with the request counts of the builtin success-rate check, and the latency
/// histogram of the builtin latency check (the builtin queries, whether planned from the
/// annotations or named in a template without a query), over the last `seconds` (see
/// [`count_window`]), when `serin.dev/sequential-checks` is on and the strategy shifts
/// traffic step by step: the sequential test judges them then.
pub fn with_counts(
    mut planned: Vec<PlannedCheck>,
    spec: &CanarySpec,
    namespace: &str,
    target: &str,
    seconds: u64,
) -> Vec<PlannedCheck> {
    if !spec.sequential_checks || spec.strategy() != Strategy::Canary {
        return planned;
    }
    let observer = Observer::of(spec, namespace, target);
    let builtin = Builtin::SuccessRate.query_for(&observer, spec.metrics_window);
    let latency = Builtin::Duration.query_for(&observer, spec.metrics_window);
    let side = |side| {
        [
            observer.request_count(side, false, seconds),
            observer.request_count(side, true, seconds),
        ]
    };
    for p in &mut planned {
        if p.check.name == Builtin::SuccessRate.name() && p.query.as_ref() == Ok(&builtin) {
            p.counts = Some(CountQueries {
                canary: side(Side::Canary),
                primary: (spec.compare == Compare::Primary).then(|| side(Side::Primary)),
            });
        }
        if p.check.name == Builtin::Duration.name()
            && p.query.as_ref() == Ok(&latency)
            && let Some(limit_ms) = p.check.max
        {
            p.latency_counts = Some(LatencyCounts {
                buckets: observer.latency_buckets(seconds),
                limit_ms,
            });
        }
    }
    planned
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
                secret: None,
                counts: None,
                latency_counts: None,
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
            evidence: None,
        },
        address: metric.address.clone(),
        secret: metric.secret_ref.as_ref().map(|s| s.name.clone()),
        query: metric_query(metric, vars),
        counts: None,
        latency_counts: None,
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

/// The credentials of the Secrets the planned checks name, by Secret name, as read for one
/// measurement ([`super::credentials::read_secret`]).
pub type SecretCredentials = BTreeMap<String, Result<Credentials, CredentialsError>>;

/// The Secrets `planned` names, each once.
pub fn secrets_named(planned: &[PlannedCheck]) -> BTreeSet<String> {
    planned.iter().filter_map(|p| p.secret.clone()).collect()
}

/// Runs every planned query at once, a check with a Secret with the credentials read from it
/// (`secrets`). A query that fails is a failed check whatever its no-data policy; an empty
/// answer (or NaN, 0/0 without traffic) is "no data". A check whose Secret is missing or
/// unusable fails without a query, saying why.
pub async fn measure(
    prometheus: &PrometheusClient,
    planned: &[PlannedCheck],
    secrets: &SecretCredentials,
) -> Measurement {
    let answers = join_all(planned.iter().map(|p| async move {
        let query = p.query.as_ref().map_err(ToString::to_string)?;
        let value = ask(prometheus, p, secrets, query).await?;
        if let Some(latency) = &p.latency_counts {
            return Ok((value, Some(slow(prometheus, p, secrets, latency).await?)));
        }
        let Some(counts) = &p.counts else {
            return Ok::<_, String>((value, None));
        };
        let canary = count(prometheus, p, secrets, &counts.canary).await?;
        let primary = match &counts.primary {
            Some(queries) => Some(count(prometheus, p, secrets, queries).await?),
            None => None,
        };
        Ok((
            value,
            Some(Evidence {
                canary,
                primary,
                slower_than: None,
            }),
        ))
    }))
    .await;
    let mut measurement = Measurement::default();
    for (planned, answer) in planned.iter().zip(answers) {
        let mut check = planned.check.clone();
        match answer {
            Ok((value, evidence)) => {
                check.value = value;
                check.evidence = evidence;
            }
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

/// The `[requests, failed]` counts of `planned`, asked at once.
async fn count(
    prometheus: &PrometheusClient,
    planned: &PlannedCheck,
    secrets: &SecretCredentials,
    [requests, failed]: &[String; 2],
) -> Result<Counts, String> {
    let (requests, failed) = tokio::join!(
        ask(prometheus, planned, secrets, requests),
        ask(prometheus, planned, secrets, failed)
    );
    // No series yet: no request (or no failure) yet.
    Ok(Counts {
        requests: requests?.unwrap_or(0.0),
        failed: failed?.unwrap_or(0.0),
    })
}

/// The canary's requests and slow requests since the weight moved, from its latency
/// histogram ([`slow_requests`]).
async fn slow(
    prometheus: &PrometheusClient,
    planned: &PlannedCheck,
    secrets: &SecretCredentials,
    latency: &LatencyCounts,
) -> Result<Evidence, String> {
    let query = &latency.buckets.query;
    let buckets = match credentials_of(planned, secrets)? {
        None => {
            prometheus
                .query_buckets(planned.address.as_deref(), query)
                .await
        }
        Some((address, credentials)) => {
            prometheus
                .query_buckets_with(address, credentials, query)
                .await
        }
    }
    .map_err(|e| e.to_string())?;
    let unit = latency.buckets.unit_ms;
    let in_ms: Vec<(f64, f64)> = buckets.iter().map(|(le, n)| (le * unit, *n)).collect();
    let (canary, boundary_ms) = slow_requests(&in_ms, latency.limit_ms)?;
    Ok(Evidence {
        canary,
        primary: None,
        slower_than: Some(SlowerThan {
            limit_ms: latency.limit_ms,
            boundary_ms,
            quantile: LATENCY_QUANTILE,
        }),
    })
}

/// Where a query of `planned` with a Secret goes, and with which credentials; `None`
/// without a Secret (the default client's address and credentials, or the metric's address).
fn credentials_of<'a>(
    planned: &'a PlannedCheck,
    secrets: &'a SecretCredentials,
) -> Result<Option<(&'a str, &'a Credentials)>, String> {
    let Some(secret) = &planned.secret else {
        return Ok(None);
    };
    // Admission refuses a secretRef without an address; one stored before that rule is
    // never sent to the default Prometheus.
    let address = planned.address.as_deref().ok_or_else(|| {
        format!(
            "secretRef {secret:?} needs the metric's own address: the default Prometheus \
             is asked with Serin's own credentials"
        )
    })?;
    match secrets.get(secret) {
        Some(Ok(credentials)) => Ok(Some((address, credentials))),
        Some(Err(e)) => Err(e.to_string()),
        None => Err(format!("Secret {secret:?} was not read")),
    }
}

/// One query of `planned`, at its Prometheus, with the credentials of its Secret.
async fn ask(
    prometheus: &PrometheusClient,
    planned: &PlannedCheck,
    secrets: &SecretCredentials,
    query: &str,
) -> Result<Option<f64>, String> {
    match credentials_of(planned, secrets)? {
        None => prometheus
            .query(planned.address.as_deref(), query)
            .await
            .map_err(|e| e.to_string()),
        Some((address, credentials)) => prometheus
            .query_with(address, credentials, query)
            .await
            .map_err(|e| {
                let secret = planned.secret.as_deref().unwrap_or_default();
                format!("{e} (with the credentials of Secret {secret:?})")
            }),
    }
}
