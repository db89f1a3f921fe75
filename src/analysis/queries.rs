//! Custom queries: the `{{ variables }}` of an `AnalysisTemplate` metric's PromQL
//! ([`QueryVars`], [`render_query`]) and the query of a template metric (its own, or the
//! builtin of its name). Admission refuses a template with [`check_metric`], which goes through
//! the same code as a release, so the two cannot disagree.

use crate::crd::MetricTemplate;
use crate::spec::{Builtin, Duration};

use super::observers::Observer;
use super::promql::label_value;

/// What a custom query may refer to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueryVars<'a> {
    pub namespace: &'a str,
    /// The canary Deployment (the user's Deployment).
    pub target: &'a str,
    /// The apex Service.
    pub service: &'a str,
    /// The rate window: `serin.dev/metrics-window`, unless the metric has its own `interval`
    /// (Flagger's metric `interval`).
    pub interval: Duration,
    /// Who sees the canary's requests, for builtin metrics without a query; Linkerd when
    /// `None`.
    pub observer: Option<Observer<'a>>,
}

impl<'a> QueryVars<'a> {
    pub(super) fn observer(&self) -> Observer<'a> {
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

/// The query of a template metric: its own, rendered, or the builtin one of that name; over
/// the metric's own `interval` when it has one.
pub(super) fn metric_query(
    metric: &MetricTemplate,
    vars: &QueryVars<'_>,
) -> Result<String, QueryError> {
    let vars = &QueryVars {
        interval: metric.interval.unwrap_or(vars.interval),
        ..*vars
    };
    match (&metric.query, Builtin::named(&metric.name)) {
        (Some(query), _) => render_query(query, vars),
        (None, Some(builtin)) => Ok(builtin.query_for(&vars.observer(), vars.interval)),
        (None, None) => Err(QueryError::NotBuiltin {
            name: metric.name.clone(),
        }),
    }
}
