//! The Prometheus HTTP API: one instant query (`GET /api/v1/query`) answered by one number.
//!
//! Queries go through [`Outbound`]: never to Serin's own listeners or link-local addresses,
//! and a redirect is an error, never followed (a metric's `address` must name Prometheus
//! itself, so that a CanaryPolicy's `allowedMetricsHosts` judges the host really asked).
//!
//! Credentials ([`super::credentials`]) go only where they belong: Serin's own (the
//! `--prometheus-*` flags, read again at every query) only to `--prometheus-url`, a metric's
//! `secretRef` only to that metric's `address`, and either only over `https://`.

use std::time::Duration;

use serde::Deserialize;

use super::credentials::{Authorization, CredentialFiles, Credentials};
use super::http::{Outbound, error_chain, read_at_most, snippet};

/// How long one query may take unless told otherwise: well under any check interval, so a
/// hanging Prometheus costs a failed check, not a stalled release.
pub const DEFAULT_QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// Answers larger than this are refused; one number never needs that much.
const MAX_ANSWER_BYTES: usize = 4 << 20;

/// The most samples a latency histogram's answer may have (a bucket each; Envoy's has 20).
pub const MAX_BUCKETS: usize = 200;

/// How much of an unexpected answer a message quotes.
const QUOTED_BYTES: usize = 200;

/// Why a query gave no number. Each names the Prometheus address and the query.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetricsError {
    #[error("Prometheus at {address} did not answer within {timeout:?} to {query:?}")]
    Timeout {
        address: String,
        query: String,
        timeout: Duration,
    },
    #[error("Prometheus at {address} could not be asked {query:?}: {reason}")]
    Unreachable {
        address: String,
        query: String,
        reason: String,
    },
    #[error("Prometheus at {address} was not asked {query:?}: {reason}")]
    Credentials {
        address: String,
        query: String,
        reason: String,
    },
    #[error("Prometheus at {address} may not be asked {query:?}: {reason}")]
    Forbidden {
        address: String,
        query: String,
        reason: String,
    },
    #[error(
        "Prometheus at {address} answered {query:?} with HTTP {status}, a redirect{}; Serin \
         does not follow redirects: give the final address",
        location.as_deref().map(|l| format!(" to {l}")).unwrap_or_default()
    )]
    Redirect {
        address: String,
        query: String,
        status: u16,
        location: Option<String>,
    },
    #[error("Prometheus at {address} refused {query:?}: {reason}")]
    Refused {
        address: String,
        query: String,
        reason: String,
    },
    #[error("Prometheus at {address} gave an unreadable answer to {query:?}: {reason}")]
    Unreadable {
        address: String,
        query: String,
        reason: String,
    },
    #[error(
        "{query:?} gives a {result_type} on Prometheus at {address}; a check needs one number \
         (an instant vector or a scalar)"
    )]
    NotANumber {
        address: String,
        query: String,
        result_type: String,
    },
}

/// A Prometheus HTTP API client with a default address (`--prometheus-url`, asked with the
/// credentials of the `--prometheus-*` flags) that a metric's own `address` overrides.
#[derive(Clone, Debug)]
pub struct PrometheusClient {
    http: Outbound,
    default_address: String,
    default_credentials: CredentialFiles,
    timeout: Duration,
}

impl PrometheusClient {
    /// `http` from [`super::http::client`] or [`Outbound::new`].
    pub fn new(http: Outbound, default_address: impl Into<String>) -> Self {
        Self {
            http,
            default_address: default_address.into(),
            default_credentials: CredentialFiles::default(),
            timeout: DEFAULT_QUERY_TIMEOUT,
        }
    }

    /// The credentials of the default address, read from `files` at every query to it.
    pub fn with_credentials(self, files: CredentialFiles) -> Self {
        Self {
            default_credentials: files,
            ..self
        }
    }

    /// Per-query timeout, connecting to reading the whole answer.
    pub fn with_timeout(self, timeout: Duration) -> Self {
        Self { timeout, ..self }
    }

    pub fn default_address(&self) -> &str {
        &self.default_address
    }

    /// Runs `promql` as an instant query at `address` (the default when `None`) and returns
    /// the first sample's value, or a scalar result's. `None` when there is no data: an empty
    /// vector, or NaN (what a ratio gives with no traffic, 0/0).
    /// A metric's own `address` is asked without credentials ([`PrometheusClient::query_with`]
    /// gives it those of its `secretRef`); the default with those of the flags.
    pub async fn query(
        &self,
        address: Option<&str>,
        promql: &str,
    ) -> Result<Option<f64>, MetricsError> {
        let (address, data) = self.answer(address, promql).await?;
        Ask::new(&address, promql).number(data)
    }

    /// [`PrometheusClient::query`] at `address` with `credentials` (a metric's `secretRef`).
    pub async fn query_with(
        &self,
        address: &str,
        credentials: &Credentials,
        promql: &str,
    ) -> Result<Option<f64>, MetricsError> {
        let data = self.ask(address, Some(credentials), promql).await?;
        Ask::new(address, promql).number(data)
    }

    /// Runs `promql`, a histogram's counts `by (le)`, and returns each sample's `le` boundary
    /// with its value (`+Inf` as infinity), at most [`MAX_BUCKETS`]; empty without data.
    /// Asked as [`PrometheusClient::query`] asks.
    pub async fn query_buckets(
        &self,
        address: Option<&str>,
        promql: &str,
    ) -> Result<Vec<(f64, f64)>, MetricsError> {
        let (address, data) = self.answer(address, promql).await?;
        Ask::new(&address, promql).buckets(data)
    }

    /// [`PrometheusClient::query_buckets`] at `address` with `credentials`.
    pub async fn query_buckets_with(
        &self,
        address: &str,
        credentials: &Credentials,
        promql: &str,
    ) -> Result<Vec<(f64, f64)>, MetricsError> {
        let data = self.ask(address, Some(credentials), promql).await?;
        Ask::new(address, promql).buckets(data)
    }

    /// The answer to `promql` at `address` (the default, with the flags' credentials, when
    /// `None`), and the address asked.
    async fn answer(
        &self,
        address: Option<&str>,
        promql: &str,
    ) -> Result<(String, Data), MetricsError> {
        match address {
            Some(address) => Ok((address.to_owned(), self.ask(address, None, promql).await?)),
            None => {
                let address = &self.default_address;
                let credentials =
                    self.default_credentials
                        .read()
                        .map_err(|e| MetricsError::Credentials {
                            address: address.clone(),
                            query: promql.to_owned(),
                            reason: e.to_string(),
                        })?;
                let data = self.ask(address, credentials.as_ref(), promql).await?;
                Ok((address.clone(), data))
            }
        }
    }

    async fn ask(
        &self,
        address: &str,
        credentials: Option<&Credentials>,
        promql: &str,
    ) -> Result<Data, MetricsError> {
        let ask = Ask {
            address,
            query: promql,
        };
        let url = format!("{}/api/v1/query", address.trim_end_matches('/'));
        let forbidden = |reason: String| MetricsError::Forbidden {
            address: address.to_owned(),
            query: promql.to_owned(),
            reason,
        };
        let mut request = match credentials {
            None => self
                .http
                .client_for(&url)
                .map_err(|r| forbidden(r.0))?
                .get(url),
            Some(credentials) => {
                credentials
                    .check_address(address)
                    .map_err(|e| MetricsError::Credentials {
                        address: address.to_owned(),
                        query: promql.to_owned(),
                        reason: e.to_string(),
                    })?;
                let client = self
                    .http
                    .client_with_tls(&url, &credentials.tls)
                    .map_err(|r| forbidden(r.0))?;
                let request = client.get(url);
                match &credentials.authorization {
                    None => request,
                    Some(Authorization::Bearer(token)) => request.bearer_auth(token),
                    Some(Authorization::Basic { username, password }) => {
                        request.basic_auth(username, Some(password))
                    }
                }
            }
        };
        request = request.query(&[("query", promql)]).timeout(self.timeout);
        let response = request
            .send()
            .await
            .map_err(|e| ask.transport(e, self.timeout))?;
        let status = response.status();
        if status.is_redirection() {
            return Err(MetricsError::Redirect {
                address: address.to_owned(),
                query: promql.to_owned(),
                status: status.as_u16(),
                location: response
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .map(|l| snippet(l.as_bytes(), QUOTED_BYTES, false)),
            });
        }
        let (body, cut) = read_at_most(response, MAX_ANSWER_BYTES)
            .await
            .map_err(|e| ask.transport(e, self.timeout))?;
        if cut {
            return Err(ask.unreadable(format!(
                "the answer is larger than {} MiB",
                MAX_ANSWER_BYTES >> 20
            )));
        }
        let answer: Option<Answer> = serde_json::from_slice(&body).ok();
        let answer = match answer {
            Some(answer) if answer.status == "success" && status.is_success() => answer,
            // Prometheus explains refusals (bad query: 400, timeout: 503, ...) in the body.
            Some(Answer {
                error: Some(error),
                error_type,
                ..
            }) => {
                let kind = error_type.map(|t| format!(" ({t})")).unwrap_or_default();
                return Err(ask.refused(format!("HTTP {}{kind}: {error}", status.as_u16())));
            }
            _ if !status.is_success() => {
                return Err(ask.refused(format!(
                    "HTTP {}: {}",
                    status.as_u16(),
                    snippet(&body, QUOTED_BYTES, false)
                )));
            }
            Some(answer) => {
                return Err(ask.refused(format!("status {:?}", answer.status)));
            }
            None => {
                return Err(ask.unreadable(format!(
                    "not a Prometheus API answer: {:?}",
                    snippet(&body, QUOTED_BYTES, false)
                )));
            }
        };
        answer
            .data
            .ok_or_else(|| ask.unreadable("\"data\" is missing".into()))
    }
}

impl Ask<'_> {
    fn new<'a>(address: &'a str, query: &'a str) -> Ask<'a> {
        Ask { address, query }
    }

    /// The first sample's value, or a scalar result's; `None` for no data (nothing, NaN).
    fn number(&self, data: Data) -> Result<Option<f64>, MetricsError> {
        let sample = match data.result_type.as_str() {
            "vector" => {
                let samples: Vec<VectorSample> = serde_json::from_value(data.result)
                    .map_err(|e| self.unreadable(format!("bad vector: {e}")))?;
                match samples.into_iter().next() {
                    Some(first) => first.value,
                    None => return Ok(None),
                }
            }
            "scalar" => serde_json::from_value(data.result)
                .map_err(|e| self.unreadable(format!("bad scalar: {e}")))?,
            other => return Err(self.not_a_number(other)),
        };
        let value = self.value(&sample)?;
        Ok((!value.is_nan()).then_some(value))
    }

    /// Each sample's `le` label and value, from a vector by `le`.
    fn buckets(&self, data: Data) -> Result<Vec<(f64, f64)>, MetricsError> {
        if data.result_type != "vector" {
            return Err(self.not_a_number(&data.result_type));
        }
        let samples: Vec<VectorSample> = serde_json::from_value(data.result)
            .map_err(|e| self.unreadable(format!("bad vector: {e}")))?;
        if samples.len() > MAX_BUCKETS {
            return Err(self.unreadable(format!(
                "{} series, more than the {MAX_BUCKETS} buckets a latency histogram may have",
                samples.len()
            )));
        }
        samples
            .iter()
            .map(|sample| {
                let le = sample.metric.get("le").ok_or_else(|| {
                    self.unreadable(
                        "a series without the label \"le\" of a histogram bucket".into(),
                    )
                })?;
                let boundary = match le.as_str() {
                    "+Inf" => f64::INFINITY,
                    other => other
                        .parse()
                        .ok()
                        .filter(|b: &f64| !b.is_nan())
                        .ok_or_else(|| self.unreadable(format!("le {other:?} is not a number")))?,
                };
                Ok((boundary, self.value(&sample.value)?))
            })
            .collect()
    }

    /// Prometheus writes values as strings: "12.5", "NaN", "+Inf", "-Inf".
    fn value(&self, (_time, value): &Sample) -> Result<f64, MetricsError> {
        value
            .parse()
            .map_err(|_| self.unreadable(format!("{value:?} is not a number")))
    }

    fn not_a_number(&self, result_type: &str) -> MetricsError {
        MetricsError::NotANumber {
            address: self.address.to_owned(),
            query: self.query.to_owned(),
            result_type: result_type.to_owned(),
        }
    }
}

/// `{"status": ..., "data": {"resultType": ..., "result": ...}, "errorType", "error"}`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Answer {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default)]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Data {
    result_type: String,
    result: serde_json::Value,
}

/// `[<unix time>, "<value>"]`.
type Sample = (serde_json::Value, String);

#[derive(Deserialize)]
struct VectorSample {
    #[serde(default)]
    metric: std::collections::BTreeMap<String, String>,
    value: Sample,
}

/// One query at one address, for building errors that name both.
struct Ask<'a> {
    address: &'a str,
    query: &'a str,
}

impl Ask<'_> {
    fn transport(&self, error: reqwest::Error, timeout: Duration) -> MetricsError {
        let (address, query) = (self.address.to_owned(), self.query.to_owned());
        if error.is_timeout() {
            return MetricsError::Timeout {
                address,
                query,
                timeout,
            };
        }
        MetricsError::Unreachable {
            address,
            query,
            // The URL repeats address and query, which the message names already.
            reason: error_chain(&error.without_url()),
        }
    }

    fn refused(&self, reason: String) -> MetricsError {
        MetricsError::Refused {
            address: self.address.to_owned(),
            query: self.query.to_owned(),
            reason,
        }
    }

    fn unreadable(&self, reason: String) -> MetricsError {
        MetricsError::Unreadable {
            address: self.address.to_owned(),
            query: self.query.to_owned(),
            reason,
        }
    }
}
