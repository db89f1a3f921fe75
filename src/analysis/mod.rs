//! The analysis of a release: what it measures, how, and the webhooks it calls. Everything
//! a release asks outside the cluster's API goes through here.
//!
//! - [`measure`]: the controller's door: [`Measuring`] (the clients, the calls in
//!   flight, the policy index) and [`Asker`], which asks the questions of one reconcile
//!   without waiting for their answers, and the notifications it sends;
//! - [`plan`] (pure): which checks a release runs at each interval; [`plan::measure`] runs
//!   them against Prometheus;
//! - [`queries`] (pure): the `{{ variables }}` of a custom query;
//! - [`observers`] (pure): the builtin queries, one file per data plane (Flagger's metrics
//!   observers);
//! - [`histogram`] (pure): the sequential latency check's counts from a latency histogram
//!   (the requests above the bucket at the limit);
//! - [`promql`] (pure): the escaping every query uses;
//! - [`validate`] (pure): what is wrong with an `AnalysisTemplate` beyond its schema, for
//!   admission;
//! - [`prometheus`]: the Prometheus HTTP API client;
//! - [`credentials`]: what it sends to a Prometheus that asks for credentials, from a
//!   metric's `secretRef` or Serin's `--prometheus-*` flags;
//! - [`webhooks`]: an `AnalysisTemplate`'s Flagger-style webhooks;
//! - [`http`]: outbound HTTP for both, held to [`crate::policy::egress`].
//!
//! An unobservable canary is never promoted: see [`plan`] for what counts as "no data".

pub mod credentials;
pub mod histogram;
pub mod http;
pub mod measure;
pub mod notify;
pub mod observers;
pub mod plan;
pub mod prometheus;
pub mod promql;
pub mod queries;
pub mod validate;
pub mod webhooks;

pub use credentials::{CredentialFiles, Credentials, CredentialsError};
pub use measure::{AWAITING_RECHECK, Asker, Measuring, Payload};
pub use notify::{notify, notify_event};
pub use observers::Observer;
pub use plan::{Measurement, PlannedCheck, plan_checks};
pub use prometheus::{DEFAULT_QUERY_TIMEOUT, MetricsError, PrometheusClient};
pub use promql::{label_value, regex_literal};
pub use queries::{QueryError, QueryVars, check_metric, render_query};

#[cfg(test)]
mod tests;
