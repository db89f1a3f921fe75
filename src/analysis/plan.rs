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
use crate::release::{MetricCheck, NoData, builtin_checks};
use crate::spec::{Builtin, CanarySpec};

use super::credentials::{Credentials, CredentialsError};
use super::observers::Observer;
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
        secret: metric.secret_ref.as_ref().map(|s| s.name.clone()),
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
        let Some(secret) = &p.secret else {
            return prometheus
                .query(p.address.as_deref(), query)
                .await
                .map_err(|e| e.to_string());
        };
        // Admission refuses a secretRef without an address; one stored before that rule is
        // never sent to the default Prometheus.
        let address = p.address.as_deref().ok_or_else(|| {
            format!(
                "secretRef {secret:?} needs the metric's own address: the default Prometheus \
                 is asked with Serin's own credentials"
            )
        })?;
        let credentials = match secrets.get(secret) {
            Some(Ok(credentials)) => credentials,
            Some(Err(e)) => return Err(e.to_string()),
            None => return Err(format!("Secret {secret:?} was not read")),
        };
        prometheus
            .query_with(address, credentials, query)
            .await
            .map_err(|e| format!("{e} (with the credentials of Secret {secret:?})"))
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
