//! The connection loop shared by the webhook (HTTPS) and admin (plain HTTP) ports.
//!
//! hyper's HTTP/1.1 server per connection, with the limits a webhook facing the API server
//! needs: a deadline on every request from its first byte (or the accept, TLS handshake
//! included) to its response, and a keep-alive bound between requests, so slow clients
//! cannot pin connections ([`super::clock`]); a cap on open connections, and a lower one per
//! client address; a request body limit answered with 413; and a graceful shutdown that
//! stops accepting, lets requests in flight finish, and gives up after a bound.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use http_body_util::Limited;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use super::ReadyFlag;
use super::clock::{Bounds, Clock, Phase, Watched};
use super::peers::PerAddress;

/// The API server refuses admission requests over 3 MiB itself; anything bigger did not come
/// from it.
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// Time from a request's first byte (for a connection's first request, from the accept, so
/// the TLS handshake counts) until its response has been handed over; past it the connection
/// is closed and a handler still running is cancelled. The webhooks are configured with
/// `timeoutSeconds: 5`, after which the API server has given up on the call: time past 5 s
/// only serves a client that is not the API server. The API server sends its whole body at
/// once (milliseconds even at the 3 MiB limit), and the handlers' own budgets for cluster
/// lookups are 2 to 3 s, so 4 s leaves them room while a dripping client gives its slot back
/// within 4 s, before the API server's own timeout.
pub const DEFAULT_REQUEST_DEADLINE: Duration = Duration::from_secs(4);

/// Time a connection may sit idle between requests. The API server keeps idle connections for
/// 90 s and does not retry a POST that meets a connection we have just closed, so each close of
/// an idle connection risks one failed call (rarely: only when the two cross on the wire);
/// 15 s lets steady traffic reuse connections while an idle one gives its slot back soon.
pub const DEFAULT_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(15);

/// Open connections from one client address at most. The API server is one address (one per
/// replica) and opens one connection per concurrent webhook call: it admits at most
/// `--max-mutating-requests-inflight` (200 by default) writes at a time, each calling one
/// webhook at a time, so 256 leaves it headroom; conversion calls for reads come on top but
/// are brief. Four addresses are needed to fill [`ServeOptions::max_connections`], so one
/// misbehaving client leaves three quarters of the slots to the API server. A mesh sidecar in
/// front of Serin makes every connection come from 127.0.0.1: raise it to `max_connections`
/// there.
pub const DEFAULT_MAX_CONNECTIONS_PER_ADDRESS: usize = 256;

/// Limits of the serving loop. The defaults suit the API server as the only client.
#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    /// See [`DEFAULT_REQUEST_DEADLINE`]. Bounds the TLS handshake too, which is part of a
    /// connection's first request.
    pub request_deadline: Duration,
    /// See [`DEFAULT_KEEP_ALIVE_TIMEOUT`].
    pub keep_alive_timeout: Duration,
    /// Open connections at most; further clients wait in the listen backlog.
    pub max_connections: usize,
    /// Open connections from one client address at most; further connections from it are
    /// closed at once (waiting would hold the accept loop up for everyone else). See
    /// [`DEFAULT_MAX_CONNECTIONS_PER_ADDRESS`].
    pub max_connections_per_address: usize,
    /// Largest request body; bigger ones are answered 413.
    pub max_body_bytes: usize,
    /// Time requests in flight get to finish after shutdown is requested. Below the
    /// Kubernetes default grace period of 30 s, so we finish before the SIGKILL.
    pub drain_timeout: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            request_deadline: DEFAULT_REQUEST_DEADLINE,
            keep_alive_timeout: DEFAULT_KEEP_ALIVE_TIMEOUT,
            max_connections: 1024,
            max_connections_per_address: DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
            max_body_bytes: MAX_BODY_BYTES,
            drain_timeout: Duration::from_secs(25),
        }
    }
}

/// Serves `app` over TLS on `listener` until `shutdown` completes, then drains.
///
/// `ready` is set once connections are being accepted (the listener is bound and `tls`
/// holds a loaded certificate, see [`ServingCert::load`](super::ServingCert::load)), and
/// cleared as soon as shutdown begins so that readiness probes stop sending traffic.
pub async fn serve_https(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    app: Router,
    options: ServeOptions,
    ready: ReadyFlag,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = TlsAcceptor::from(tls);
    let app = limit_request_bodies(app, options.max_body_bytes);
    serve_connections(
        listener,
        move |tcp| acceptor.accept(tcp),
        app,
        options,
        Some(ready),
        shutdown,
    )
    .await;
}

/// Serves `app` over plain HTTP (the admin port).
pub(super) async fn serve_plain(
    listener: TcpListener,
    app: Router,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) {
    let app = limit_request_bodies(app, options.max_body_bytes);
    serve_connections(
        listener,
        |tcp| std::future::ready(Ok(tcp)),
        app,
        options,
        None,
        shutdown,
    )
    .await;
}

async fn serve_connections<H, F, S>(
    listener: TcpListener,
    handshake: H,
    app: Router,
    options: ServeOptions,
    ready: Option<ReadyFlag>,
    shutdown: impl Future<Output = ()>,
) where
    H: Fn(TcpStream) -> F,
    F: Future<Output = io::Result<S>> + Send + 'static,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let addr = listener.local_addr().ok();
    let slots = Arc::new(Semaphore::new(options.max_connections.max(1)));
    let per_address = PerAddress::new(options.max_connections_per_address);
    let mut refusals = Refusals::default();
    let bounds = Bounds {
        request: options.request_deadline,
        idle: options.keep_alive_timeout,
    };
    let (drain_tx, drain_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);

    if let Some(ready) = &ready {
        ready.set(true);
    }
    tracing::info!(?addr, "serving");

    loop {
        // Take a slot before accepting: when all are in use, new clients wait in the
        // kernel's backlog instead of costing us memory.
        let permit = tokio::select! {
            biased;
            () = &mut shutdown => break,
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_closed) => break,
            },
        };
        let (tcp, peer) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    accept_error_pause(&error).await;
                    continue;
                }
            },
        };
        let accepted = Instant::now();
        let Some(address_slot) = per_address.admit(peer.ip()) else {
            refusals.count(peer);
            continue; // drops the connection and the slot
        };
        let handshake = handshake(tcp);
        let app = app.clone();
        let drain = drain_rx.clone();
        connections.spawn(async move {
            let _slots = (permit, address_slot);
            serve_connection(handshake, app, accepted, bounds, drain, peer).await;
        });
        // Reap finished connections so the set does not grow with every client ever seen.
        while connections.try_join_next().is_some() {}
    }

    // Stop accepting first: new clients get "connection refused" and try another replica.
    drop(listener);
    if let Some(ready) = &ready {
        ready.set(false);
    }
    let _ = drain_tx.send(true);
    tracing::info!(
        ?addr,
        in_flight = connections.len(),
        "shutting down, draining connections"
    );
    let drained = tokio::time::timeout(options.drain_timeout, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            ?addr,
            remaining = connections.len(),
            "connections still open after the drain timeout; closing them"
        );
        connections.shutdown().await;
    }
}

/// One connection from accept to close, always under its [`Clock`].
async fn serve_connection<F, S>(
    handshake: F,
    app: Router,
    accepted: Instant,
    bounds: Bounds,
    mut drain: watch::Receiver<bool>,
    peer: std::net::SocketAddr,
) where
    F: Future<Output = io::Result<S>>,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let clock = Clock::new(accepted);
    let expired = clock.expired(bounds);
    tokio::pin!(expired);
    let stream = tokio::select! {
        handshake = handshake => match handshake {
            Ok(stream) => stream,
            Err(error) => {
                tracing::debug!(%peer, %error, "handshake failed");
                return;
            }
        },
        _ = &mut expired => {
            tracing::debug!(%peer, "handshake not done within the request deadline; closing");
            return;
        }
        () = draining(&mut drain) => return,
    };
    let conn = http1::Builder::new()
        .keep_alive(true)
        // The clock bounds the headers (and all the rest); hyper's own timer would only
        // restart with each request.
        .header_read_timeout(None)
        .serve_connection(
            TokioIo::new(Watched::new(stream, clock.clone())),
            clock.tracked(app),
        );
    tokio::pin!(conn);
    let mut shutting_down = false;
    let result = loop {
        tokio::select! {
            result = conn.as_mut() => break result,
            phase = &mut expired => {
                // Dropping the connection closes it, and cancels a handler still running.
                let why = match phase {
                    Phase::Idle(_) => "idle past the keep-alive timeout",
                    Phase::Request { .. } => "request not done within the deadline",
                };
                tracing::debug!(%peer, why, "closing the connection");
                return;
            }
            () = draining(&mut drain), if !shutting_down => {
                // Finishes the request in flight, if any, then closes; the clock still runs.
                shutting_down = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    };
    if let Err(error) = result {
        tracing::debug!(%peer, %error, "connection ended with an error");
    }
}

/// Connections refused for their address's cap: each one at debug level, and a warning at
/// most every [`Refusals::EVERY`] with the count, so that an operator sees the cap being hit
/// (by the API server, it would need raising) without one client flooding the log.
#[derive(Debug, Default)]
struct Refusals {
    since_warning: u64,
    last_warning: Option<Instant>,
}

impl Refusals {
    const EVERY: Duration = Duration::from_secs(10);

    fn count(&mut self, peer: std::net::SocketAddr) {
        tracing::debug!(%peer, "too many connections from this address; closed");
        self.since_warning += 1;
        let now = Instant::now();
        if self
            .last_warning
            .is_none_or(|last| now.duration_since(last) >= Self::EVERY)
        {
            tracing::warn!(
                %peer,
                refused = self.since_warning,
                "connections refused: their client address has max_connections_per_address open"
            );
            self.since_warning = 0;
            self.last_warning = Some(now);
        }
    }
}

/// Completes once shutdown has begun (or the server is gone).
async fn draining(drain: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`; drop it here, not across an await.
    let _ = drain.wait_for(|draining| *draining).await;
}

/// Errors from `accept` are about one connection (reset before we got to it) or about
/// resources (out of file descriptors). Neither should stop the server; the second needs a
/// pause, or we would spin on it.
async fn accept_error_pause(error: &io::Error) {
    match error.kind() {
        io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset => {
            tracing::debug!(%error, "accept failed");
        }
        _ => {
            tracing::warn!(%error, "accept failed; pausing");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Enforces `max` on every request body, whichever way the handler reads it.
fn limit_request_bodies(app: Router, max: usize) -> Router {
    app.layer(middleware::from_fn_with_state(max, limit_body))
        // axum's extractors have their own default (2 MB); make them agree with ours.
        .layer(DefaultBodyLimit::max(max))
}

async fn limit_body(State(max): State<usize>, request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    // Refuse without reading a byte when the client says up front that it is too big.
    if declared.is_some_and(|length| length > max as u64) {
        return too_large(max);
    }
    // Chunked or lying clients: the body errors once it passes `max`, which axum's
    // extractors turn into 413 too.
    let request = request.map(|body| Body::new(Limited::new(body, max)));
    next.run(request).await
}

fn too_large(max: usize) -> Response {
    (
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("request body is larger than {max} bytes"),
    )
        .into_response()
}
