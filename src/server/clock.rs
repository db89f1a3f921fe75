//! One clock per connection, so that no client can hold a connection by being slow.
//!
//! A connection is always in one of two phases, and each has a bound:
//! - **a request**, from the moment the connection is accepted (its first request includes
//!   the TLS handshake) or the first byte after an idle spell arrives, until its response has
//!   been handed to the connection: [`ServeOptions::request_deadline`];
//! - **idle**, from the end of a response until the next byte:
//!   [`ServeOptions::keep_alive_timeout`].
//!
//! Nothing a client does extends a phase: trickling bytes does not restart the request clock,
//! and a request does not start until its first byte. hyper's own per-read timeouts cannot do
//! this (its header timeout ends when the headers do; nothing bounds the body or a client that
//! never reads the response), so the connection task races [`Clock::expired`] against hyper.
//!
//! The phase is moved by the connection's byte stream ([`Watched`], first byte of a request)
//! and by the service ([`Clock::tracked`]: a request is open from the moment hyper hands it
//! over until its response body is dropped, which hyper does once it has taken all of it).
//! Writing out the last of a response, or a client that does not read it, falls under the
//! idle bound.
//!
//! [`ServeOptions::request_deadline`]: super::ServeOptions::request_deadline
//! [`ServeOptions::keep_alive_timeout`]: super::ServeOptions::keep_alive_timeout

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tokio::time::Instant;
use tower::ServiceExt;

/// Where a connection is; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Between requests, since the instant given.
    Idle(Instant),
    /// In a request since `since`; `open` requests have been handed to the service and their
    /// responses not yet taken (0 while the first bytes of one are being read).
    Request { since: Instant, open: usize },
}

/// The two bounds, from [`super::ServeOptions`].
#[derive(Debug, Clone, Copy)]
pub(super) struct Bounds {
    pub request: Duration,
    pub idle: Duration,
}

impl Phase {
    fn deadline(self, bounds: Bounds) -> Instant {
        match self {
            Phase::Idle(since) => since + bounds.idle,
            Phase::Request { since, .. } => since + bounds.request,
        }
    }
}

/// One connection's clock. Shared by the connection task, its byte stream and its service.
#[derive(Debug)]
pub(super) struct Clock {
    phase: watch::Sender<Phase>,
}

impl Clock {
    /// The clock of a connection accepted at `accepted`: its first request starts then.
    pub(super) fn new(accepted: Instant) -> Arc<Self> {
        let (phase, _) = watch::channel(Phase::Request {
            since: accepted,
            open: 0,
        });
        Arc::new(Clock { phase })
    }

    #[cfg(test)]
    fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    /// Completes when the current phase has run past its bound (never, while it keeps moving
    /// on in time). Create it once per connection and poll it alongside the connection.
    pub(super) async fn expired(&self, bounds: Bounds) -> Phase {
        let mut phases = self.phase.subscribe();
        loop {
            let phase = *phases.borrow_and_update();
            tokio::select! {
                () = tokio::time::sleep_until(phase.deadline(bounds)) => return phase,
                // `self` holds the sender, so this cannot fail while we are here.
                _ = phases.changed() => {}
            }
        }
    }

    /// Bytes arrived: an idle connection is in a request from now on.
    fn bytes_arrived(&self) {
        if matches!(*self.phase.borrow(), Phase::Request { .. }) {
            return; // the common case, without taking the write lock
        }
        self.phase.send_if_modified(|phase| match *phase {
            Phase::Idle(_) => {
                *phase = Phase::Request {
                    since: Instant::now(),
                    open: 0,
                };
                true
            }
            Phase::Request { .. } => false,
        });
    }

    /// hyper hands over a request; the returned guard closes it when dropped.
    fn open(self: &Arc<Self>) -> Open {
        self.phase.send_if_modified(|phase| {
            *phase = match *phase {
                // Pipelined: its bytes were read while the previous one was open.
                Phase::Idle(_) => Phase::Request {
                    since: Instant::now(),
                    open: 1,
                },
                Phase::Request { since, open } => Phase::Request {
                    since,
                    open: open + 1,
                },
            };
            true
        });
        Open(self.clone())
    }

    /// `app` as a hyper service whose requests move this clock.
    pub(super) fn tracked(
        self: &Arc<Self>,
        app: Router,
    ) -> impl hyper::service::Service<
        Request<Incoming>,
        Response = Response,
        Error = Infallible,
        Future = impl Future<Output = Result<Response, Infallible>> + Send,
    > + Clone {
        let clock = self.clone();
        hyper::service::service_fn(move |request: Request<Incoming>| {
            let open = clock.open();
            let app = app.clone();
            async move {
                let response = app.oneshot(request).await?;
                // The request stays open for as long as hyper holds the response body.
                Ok(response.map(|body| {
                    Body::new(body.map_frame(move |frame| {
                        let _open = &open;
                        frame
                    }))
                }))
            }
        })
    }
}

/// An open request; dropping it (with the response body) closes it.
#[derive(Debug)]
struct Open(Arc<Clock>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.phase.send_if_modified(|phase| match *phase {
            Phase::Request { open, .. } if open <= 1 => {
                *phase = Phase::Idle(Instant::now());
                true
            }
            Phase::Request { since, open } => {
                *phase = Phase::Request {
                    since,
                    open: open - 1,
                };
                true
            }
            Phase::Idle(_) => false,
        });
    }
}

/// A connection's byte stream, telling its clock when bytes arrive.
#[derive(Debug)]
pub(super) struct Watched<S> {
    inner: S,
    clock: Arc<Clock>,
}

impl<S> Watched<S> {
    pub(super) fn new(inner: S, clock: Arc<Clock>) -> Self {
        Watched { inner, clock }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.clock.bytes_arrived();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Real time (the crate's tokio has no test clock): short bounds, generous margins.
    const BOUNDS: Bounds = Bounds {
        request: Duration::from_millis(300),
        idle: Duration::from_secs(3),
    };

    fn open_count(clock: &Clock) -> Option<usize> {
        match clock.phase() {
            Phase::Request { open, .. } => Some(open),
            Phase::Idle(_) => None,
        }
    }

    #[tokio::test]
    async fn a_new_connection_is_in_its_first_request_from_the_accept() {
        let accepted = Instant::now();
        let clock = Clock::new(accepted);
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Bytes do not restart the clock.
        clock.bytes_arrived();
        let expired = clock.expired(BOUNDS).await;
        assert_eq!(
            expired,
            Phase::Request {
                since: accepted,
                open: 0
            }
        );
        let took = accepted.elapsed();
        assert!(took >= BOUNDS.request && took < BOUNDS.idle, "{took:?}");
    }

    #[tokio::test]
    async fn a_closed_request_makes_the_connection_idle_and_bytes_start_the_next() {
        let clock = Clock::new(Instant::now());
        let first = clock.open();
        let second = clock.open();
        assert_eq!(open_count(&clock), Some(2));
        drop(first);
        assert_eq!(open_count(&clock), Some(1));
        drop(second);
        let Phase::Idle(idle_since) = clock.phase() else {
            panic!("idle once every response is taken");
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        clock.bytes_arrived();
        let Phase::Request { since, open: 0 } = clock.phase() else {
            panic!("bytes after an idle spell start a request");
        };
        assert!(since >= idle_since + Duration::from_millis(20));
    }

    #[tokio::test]
    async fn the_expiry_follows_the_phase_even_to_an_earlier_deadline() {
        let clock = Clock::new(Instant::now());
        drop(clock.open());
        let expiry = {
            let clock = clock.clone();
            tokio::spawn(async move { clock.expired(BOUNDS).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        // A request starting now ends 300 ms on, long before the idle bound (3 s).
        let started = Instant::now();
        clock.bytes_arrived();
        let expired = tokio::time::timeout(BOUNDS.idle, expiry)
            .await
            .expect("expired before the idle bound")
            .expect("join");
        assert!(matches!(expired, Phase::Request { .. }), "{expired:?}");
        assert!(started.elapsed() >= BOUNDS.request);
    }
}
