//! Outbound HTTP for the edges that call out of the cluster's API: [`super::prometheus`],
//! [`super::webhooks`] (AnalysisTemplate webhooks) and [`crate::alerts`] (chat alerts). One
//! [`Outbound`] for all,
//! and answers read only up to a bound, so a misbehaving server cannot make Serin buffer
//! gigabytes.
//!
//! What an AnalysisTemplate may make Serin call is held to [`Egress`]: redirects are never
//! followed (a 3xx is the answer), no proxy is used, and every connection goes to an address
//! that was checked: an IP literal before sending, a name through a resolver that refuses it
//! when any address it resolves to is forbidden (the connection is made to the addresses the
//! resolver returned, so a name cannot be checked as one address and reached as another).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use super::credentials::TlsMaterial;
use crate::policy::egress::Egress;

/// How many clients with TLS material of their own (a CA, a client certificate) are kept;
/// past that they are all dropped and built again as needed. A handful of distinct
/// Prometheus credentials is the rule; the bound keeps a template churning its Secret from
/// growing the cache.
const MAX_TLS_CLIENTS: usize = 32;

/// Calls out of the cluster's API: two HTTP clients that differ only in how strict their
/// resolver is. A URL on one of Serin's own ports goes through the strict one, whose resolver
/// also refuses this machine's addresses; any other URL through the one that refuses the
/// forbidden ranges only (the resolver sees a name, not the port it is for). A Prometheus
/// whose credentials bring a CA or a client certificate gets a client of its own, built the
/// same way and kept ([`Outbound::client_with_tls`]).
#[derive(Clone, Debug)]
pub struct Outbound {
    egress: Egress,
    any_port: reqwest::Client,
    own_port: reqwest::Client,
    with_tls: Arc<Mutex<HashMap<(bool, TlsMaterial), reqwest::Client>>>,
}

/// A URL Serin will not call, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

impl Outbound {
    pub fn new(egress: Egress) -> Result<Self, reqwest::Error> {
        crate::server::install_crypto_provider();
        Ok(Self {
            any_port: builder(&egress, false).build()?,
            own_port: builder(&egress, true).build()?,
            egress,
            with_tls: Arc::default(),
        })
    }

    /// [`Outbound::client_for`] with `tls` (a CA trusted instead of the system's, a client
    /// certificate): a client of its own, kept for the next call with the same material.
    /// The error says which part could not be used, never what it holds.
    pub fn client_with_tls(
        &self,
        url: &str,
        tls: &TlsMaterial,
    ) -> Result<reqwest::Client, Refused> {
        let shared = self.client_for(url)?;
        if tls.is_empty() {
            return Ok(shared.clone());
        }
        let strict = std::ptr::eq(shared, &self.own_port);
        let key = (strict, tls.clone());
        let mut kept = self
            .with_tls
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(client) = kept.get(&key) {
            return Ok(client.clone());
        }
        let mut builder = builder(&self.egress, strict);
        if let Some(ca) = &tls.ca {
            let roots = reqwest::Certificate::from_pem_bundle(ca)
                .map_err(|_| Refused("the CA (ca.crt) is not a PEM certificate".into()))?;
            builder = builder.tls_certs_only(roots);
        }
        if let Some(identity) = &tls.identity {
            let identity = reqwest::Identity::from_pem(identity).map_err(|_| {
                Refused("the client certificate and key (tls.crt, tls.key) are not usable".into())
            })?;
            builder = builder.identity(identity);
        }
        let client = builder
            .build()
            .map_err(|e| Refused(format!("no TLS client: {}", error_chain(&e))))?;
        if kept.len() >= MAX_TLS_CLIENTS {
            kept.clear();
        }
        kept.insert(key, client.clone());
        Ok(client)
    }

    /// The client to call `url` with, or why it may not be called: not an `http(s)` URL
    /// with a host, or an IP literal [`Egress`] refuses. Names are checked when resolved.
    pub fn client_for(&self, url: &str) -> Result<&reqwest::Client, Refused> {
        let parsed =
            reqwest::Url::parse(url).map_err(|e| Refused(format!("{url:?} is not a URL: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(Refused(format!(
                "{url:?} is not an http or https URL; Serin calls nothing else"
            )));
        }
        let port = parsed
            .port_or_known_default()
            .ok_or_else(|| Refused(format!("{url:?} has no port")))?;
        let host = parsed
            .host_str()
            .ok_or_else(|| Refused(format!("{url:?} has no host")))?;
        // The URL parser writes every IPv4 form (`0x7f.1`, `2130706433`) dotted, and IPv6 in
        // brackets: what parses here is what the connector will connect to.
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = literal.parse::<IpAddr>() {
            self.egress.check(ip, port).map_err(Refused)?;
        }
        Ok(match self.egress.is_own_port(port) {
            true => &self.own_port,
            false => &self.any_port,
        })
    }
}

/// Every outbound client: no redirects followed, no proxy, names resolved through
/// [`CheckedResolver`] (`strict`: as a call to one of Serin's own ports).
fn builder(egress: &Egress, strict: bool) -> reqwest::ClientBuilder {
    let resolver = CheckedResolver {
        egress: egress.clone(),
        as_own_port: strict
            .then(|| egress.own_ports().first().copied())
            .flatten(),
    };
    reqwest::Client::builder()
        .user_agent(concat!("serin/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .dns_resolver(resolver)
}

/// Resolves names with the system's resolver and lets through only what [`Egress`] allows.
struct CheckedResolver {
    egress: Egress,
    /// For the strict client: judge every address as a call to this (own) port.
    as_own_port: Option<u16>,
}

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let egress = self.egress.clone();
        let port = self.as_own_port;
        let name = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            let checked = egress.check_resolved(&name, port, found).map_err(|why| {
                Box::new(Refused(why)) as Box<dyn std::error::Error + Send + Sync>
            })?;
            Ok(Box::new(checked.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The outbound clients with no listener of Serin's to protect (link-local ranges are
/// refused all the same).
pub fn client() -> Result<Outbound, reqwest::Error> {
    Outbound::new(Egress::default())
}

/// The body of `response`, cut at `limit` bytes; `true` when there was more.
pub(crate) async fn read_at_most(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = limit - body.len();
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            return Ok((body, true));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, false))
}

/// The start of a body for a message: at most `max` bytes of text on one line, `…` when cut
/// here or when `more` says the body went on.
pub(crate) fn snippet(body: &[u8], max: usize, more: bool) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.len() <= max {
        return match more {
            true => format!("{text}…"),
            false => text,
        };
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// An error with its causes, `outer: inner: innermost`, for messages (reqwest's own Display
/// stops at "error sending request").
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // hyper and reqwest sometimes repeat their source in their own message.
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Serves `app` on a free loopback port for tests; its base URL, `http://127.0.0.1:PORT`.
#[cfg(test)]
pub(crate) async fn serve_on_loopback(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let address = listener.local_addr().expect("local address");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    format!("http://{address}")
}

/// For tests: outbound calls that treat the port of `base` (a server from
/// [`serve_on_loopback`]) as one of Serin's own listeners, and that port.
#[cfg(test)]
pub(crate) fn outbound_guarding(base: &str) -> (Outbound, u16) {
    let port: u16 = base
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a base URL ending in a port");
    (Outbound::new(Egress::new([port])).expect("outbound"), port)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snippet_keeps_short_bodies_whole_on_one_line() {
        assert_eq!(
            snippet(b"  no\n  such   canary \n", 200, false),
            "no such canary"
        );
    }

    #[test]
    fn snippet_cuts_long_bodies_at_a_character_boundary() {
        let body = "é".repeat(150); // 300 bytes
        let cut = snippet(body.as_bytes(), 201, false);
        assert_eq!(cut, format!("{}…", "é".repeat(100)));
    }

    #[test]
    fn snippet_marks_a_body_that_went_on() {
        assert_eq!(snippet(b"first part", 200, true), "first part…");
    }

    #[test]
    fn snippet_survives_invalid_utf8() {
        assert_eq!(snippet(&[b'o', b'k', 0xff], 200, false), "ok\u{fffd}");
    }
}
