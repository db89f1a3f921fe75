//! Sending one alert: its address read from its Secret, its host checked against the
//! covering policies' `allowedWebhookHosts`, then one POST through [`Outbound`] (never a
//! redirect, never Serin's own ports or link-local addresses), at most [`TIMEOUT`], the
//! answer read up to 200 bytes. No retry: the next Event brings the next alert.
//! Failures ([`AlertFailure`]) name the alert, its policy, its Secret and the host, never
//! the address (its path or query is the credential).

use std::time::Duration;

use kube::Client;
use serde_json::Value;

use super::secrets::{self, SecretError};
use super::{Alerts, Message, Target, payload};
use crate::analysis::http::{Outbound, error_chain, read_at_most, snippet};
use crate::policy::host_allowed;

/// How long one alert may take, connection and answer.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// How much of a refusal's body a failure quotes.
const QUOTED_BYTES: usize = 200;

/// What sends alerts: the API client for the Secrets, Serin's namespace where they are, and
/// the outbound HTTP client.
#[derive(Clone)]
pub struct Sender {
    pub client: Client,
    /// Serin's own namespace, where alerts' Secrets are.
    pub namespace: String,
    pub http: Outbound,
}

/// Why one alert was not delivered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("{0}")]
    Secret(#[from] SecretError),
    #[error("host {host} is not in allowedWebhookHosts [{}] of CanaryPolicy {policy}", hosts.join(", "))]
    HostNotAllowed {
        host: String,
        policy: String,
        hosts: Vec<String>,
    },
    #[error("host {host} may not be called: {reason}")]
    Refused { host: String, reason: String },
    #[error("host {host} answered HTTP {status}{body}")]
    Status {
        host: String,
        status: u16,
        body: String,
    },
    #[error("host {host} did not answer within {TIMEOUT:?}")]
    Timeout { host: String },
    #[error("host {host} could not be called: {reason}")]
    Transport { host: String, reason: String },
}

/// An alert that was not delivered, for the log and the `AlertFailed` Event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("alert {name:?} ({type_}) of CanaryPolicy {policy}, Secret {secret}: {error}")]
pub struct AlertFailure {
    pub name: String,
    pub type_: &'static str,
    pub policy: String,
    pub secret: String,
    pub error: SendError,
}

impl Sender {
    /// Sends `message` to `target`, one of `alerts`.
    pub async fn send(
        &self,
        alerts: &Alerts,
        target: &Target,
        message: &Message,
    ) -> Result<(), AlertFailure> {
        let alert = &target.alert;
        let failure = |error| AlertFailure {
            name: alert.name.clone(),
            type_: alert.type_.as_str(),
            policy: target.policy.clone(),
            secret: format!("{}/{}", self.namespace, alert.secret_ref.name),
            error,
        };
        let address = secrets::address(&self.client, &self.namespace, &alert.secret_ref.name)
            .await
            .map_err(|e| failure(e.into()))?;
        let body = payload(message, alert);
        post(&self.http, alerts, &address, &body)
            .await
            .map_err(failure)
    }
}

/// POSTs `body` to `address` if every covering policy allows its host.
pub async fn post(
    http: &Outbound,
    alerts: &Alerts,
    address: &str,
    body: &Value,
) -> Result<(), SendError> {
    let host = reqwest::Url::parse(address)
        .ok()
        .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
        .unwrap_or_default();
    for (policy, hosts) in &alerts.allowed_hosts {
        if !host_allowed(hosts, &host) {
            return Err(SendError::HostNotAllowed {
                host,
                policy: policy.clone(),
                hosts: hosts.clone(),
            });
        }
    }
    // `client_for` may quote the URL when it refuses one: never the address in a message.
    let client = http
        .client_for(address)
        .map_err(|refused| SendError::Refused {
            host: host.clone(),
            reason: refused.0.replace(address, "(the address)"),
        })?;
    let response = client
        .post(address)
        .json(body)
        .timeout(TIMEOUT)
        .send()
        .await
        .map_err(|error| match error.is_timeout() {
            true => SendError::Timeout { host: host.clone() },
            false => SendError::Transport {
                host: host.clone(),
                reason: error_chain(&error.without_url()),
            },
        })?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    // A redirect's Location may hold a credential too: only its status is told.
    let body = match status.is_redirection() {
        true => ", a redirect; Serin does not follow redirects: give the final URL".to_owned(),
        false => read_at_most(response, QUOTED_BYTES)
            .await
            .map(|(body, more)| snippet(&body, QUOTED_BYTES, more))
            .ok()
            .filter(|s| !s.is_empty())
            .map(|s| format!(": {s}"))
            .unwrap_or_default(),
    };
    Err(SendError::Status {
        host,
        status: status.as_u16(),
        body,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use axum::http::StatusCode;
    use serde_json::json;

    use super::*;
    use crate::analysis::http::{client, outbound_guarding, serve_on_loopback};

    /// A receiver that records the bodies it gets and answers `status`.
    async fn receiver(status: StatusCode) -> (String, Arc<Mutex<Vec<Value>>>) {
        let got = Arc::new(Mutex::new(Vec::new()));
        let seen = got.clone();
        let app = axum::Router::new().route(
            "/hook/{token}",
            axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
                let seen = seen.clone();
                async move {
                    seen.lock().unwrap().push(body);
                    (status, "channel_not_found")
                }
            }),
        );
        (serve_on_loopback(app).await, got)
    }

    fn allowing(hosts: &[&str]) -> Alerts {
        Alerts {
            targets: Vec::new(),
            allowed_hosts: vec![(
                "chat".to_owned(),
                hosts.iter().map(|h| (*h).to_owned()).collect(),
            )],
        }
    }

    #[tokio::test]
    async fn an_alert_is_posted_as_json() {
        let (base, got) = receiver(StatusCode::OK).await;
        let body = json!({"text": "web.shop: Succeeded"});
        let address = format!("{base}/hook/s3cr3t");
        post(&client().unwrap(), &Alerts::default(), &address, &body)
            .await
            .expect("delivered");
        assert_eq!(*got.lock().unwrap(), [body]);
    }

    #[tokio::test]
    async fn a_refusal_names_the_host_and_status_but_never_the_address() {
        let (base, _) = receiver(StatusCode::NOT_FOUND).await;
        let address = format!("{base}/hook/s3cr3t");
        let error = post(&client().unwrap(), &Alerts::default(), &address, &json!({}))
            .await
            .expect_err("404");
        let text = error.to_string();
        assert_eq!(text, "host 127.0.0.1 answered HTTP 404: channel_not_found");
    }

    #[tokio::test]
    async fn a_host_outside_allowed_webhook_hosts_is_never_called() {
        let (base, got) = receiver(StatusCode::OK).await;
        let address = format!("{base}/hook/s3cr3t");
        let alerts = allowing(&["*.chat.example"]);
        let error = post(&client().unwrap(), &alerts, &address, &json!({}))
            .await
            .expect_err("refused");
        assert_eq!(
            error.to_string(),
            "host 127.0.0.1 is not in allowedWebhookHosts [*.chat.example] of CanaryPolicy chat"
        );
        assert!(got.lock().unwrap().is_empty());
        let allowed = allowing(&["127.0.0.1"]);
        post(&client().unwrap(), &allowed, &address, &json!({}))
            .await
            .expect("an allowed host is called");
    }

    #[tokio::test]
    async fn serins_own_ports_are_never_called_and_the_address_is_not_quoted() {
        let (base, got) = receiver(StatusCode::OK).await;
        let (guarded, _) = outbound_guarding(&base);
        let address = format!("{base}/hook/s3cr3t");
        let error = post(&guarded, &Alerts::default(), &address, &json!({}))
            .await
            .expect_err("own port");
        assert!(matches!(error, SendError::Refused { .. }), "{error:?}");
        assert!(!error.to_string().contains("s3cr3t"), "{error}");
        assert!(got.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_transport_error_does_not_quote_the_address() {
        // A port nothing listens on (bound, then dropped).
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let address = format!("http://127.0.0.1:{port}/hook/s3cr3t?token=t0k3n");
        let error = post(&client().unwrap(), &Alerts::default(), &address, &json!({}))
            .await
            .expect_err("nothing listens");
        let text = error.to_string();
        assert!(
            text.starts_with("host 127.0.0.1 could not be called"),
            "{text}"
        );
        assert!(
            !text.contains("s3cr3t") && !text.contains("t0k3n"),
            "{text}"
        );
    }
}
