//! The connection loop shared by the webhook (HTTPS) and admin (plain HTTP) ports.
//!
//! hyper's HTTP/1.1 server per connection, with the limits a webhook facing the API server
//! needs: a bounded TLS handshake and header read (slow clients cannot pin connections), a cap
//! on open connections, a request body limit answered with 413, and a graceful shutdown that
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
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use super::ReadyFlag;

/// The API server refuses admission requests over 3 MiB itself; anything bigger did not come
/// from it.
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// Limits of the serving loop. The defaults suit the API server as the only client.
#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    /// Time a client gets to complete the TLS handshake.
    pub tls_handshake_timeout: Duration,
    /// Time a client gets to send a request's headers. hyper also starts this clock while a
    /// kept-alive connection waits for its next request, so it bounds idle connections too.
    pub header_read_timeout: Duration,
    /// Open connections at most; further clients wait in the listen backlog.
    pub max_connections: usize,
    /// Largest request body; bigger ones are answered 413.
    pub max_body_bytes: usize,
    /// Time requests in flight get to finish after shutdown is requested. Below the
    /// Kubernetes default grace period of 30 s, so we finish before the SIGKILL.
    pub drain_timeout: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            tls_handshake_timeout: Duration::from_secs(10),
            // The API server reuses connections; closing idle ones much sooner than its own
            // idle timeout (90 s) only makes it reconnect more often.
            header_read_timeout: Duration::from_secs(30),
            max_connections: 1024,
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
        let handshake = handshake(tcp);
        let app = app.clone();
        let mut drain = drain_rx.clone();
        connections.spawn(async move {
            let _permit = permit;
            let stream = tokio::select! {
                handshake = tokio::time::timeout(options.tls_handshake_timeout, handshake) => {
                    match handshake {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(error)) => {
                            tracing::debug!(%peer, %error, "handshake failed");
                            return;
                        }
                        Err(_elapsed) => {
                            tracing::debug!(%peer, "handshake timed out");
                            return;
                        }
                    }
                }
                () = draining(&mut drain) => return,
            };
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .keep_alive(true)
                .header_read_timeout(options.header_read_timeout)
                .serve_connection(TokioIo::new(stream), TowerToHyperService::new(app));
            tokio::pin!(conn);
            let result = tokio::select! {
                result = conn.as_mut() => result,
                () = draining(&mut drain) => {
                    // Finishes the request in flight, if any, then closes.
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(error) = result {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
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
