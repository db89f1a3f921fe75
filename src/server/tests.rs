//! Socket-level tests of the serving layer: real TLS handshakes and raw HTTP/1.1 on
//! 127.0.0.1, against generated certificates. Every wait is bounded.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::routing::{get, post};
use prometheus_client::registry::Registry;
use rustls::ClientConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::future::poll_fn;
use std::pin::Pin;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::*;
use crate::certs::{self, CertOptions, LocalCerts};

const WAIT: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(50);

// ---- fixtures -------------------------------------------------------------------------------

fn pair() -> LocalCerts {
    certs::generate(&CertOptions::default()).expect("generate certificates")
}

fn write_pair(dir: &Path, certs: &LocalCerts) -> (PathBuf, PathBuf) {
    certs::write(dir, certs).expect("write certificates");
    (dir.join("tls.crt"), dir.join("tls.key"))
}

fn der(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .expect("certificate PEM")
        .to_vec()
}

/// The handlers under test: an echo of the body length, a hello, and a slow endpoint that
/// says when it has started.
fn app(started: Arc<Notify>, slow_for: Duration) -> Router {
    Router::new()
        .route("/hello", get(|| async { "hello" }))
        .route(
            "/echo",
            post(|body: Bytes| async move { body.len().to_string() }),
        )
        .route(
            "/slow",
            get(move || async move {
                started.notify_one();
                tokio::time::sleep(slow_for).await;
                "done"
            }),
        )
}

/// Short enough for the slow-client tests to be quick, long enough that a debug build on a
/// busy machine still completes honest handshakes and requests.
fn test_options() -> ServeOptions {
    ServeOptions {
        request_deadline: Duration::from_secs(1),
        keep_alive_timeout: Duration::from_secs(1),
        drain_timeout: Duration::from_secs(3),
        ..ServeOptions::default()
    }
}

struct Running {
    addr: SocketAddr,
    ready: ReadyFlag,
    metrics: Metrics,
    started: Arc<Notify>,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<()>,
    watcher: JoinHandle<()>,
}

impl Running {
    async fn start(cert: Arc<ServingCert>, options: ServeOptions, slow_for: Duration) -> Self {
        install_crypto_provider();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let ready = ReadyFlag::default();
        let metrics = Metrics::register(&mut Registry::default());
        let watcher = tokio::spawn(cert.clone().watch(POLL, metrics.clone()));
        let tls = server_config(cert).expect("server config");
        let started = Arc::new(Notify::new());
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(serve_https(
            listener,
            tls,
            app(started.clone(), slow_for),
            options,
            ready.clone(),
            async move {
                let _ = stopped.await;
            },
        ));
        Running {
            addr,
            ready,
            metrics,
            started,
            stop: Some(stop),
            server,
            watcher,
        }
    }

    fn shut_down(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.server.abort();
        self.watcher.abort();
    }
}

// ---- a minimal HTTP/1.1 client over any stream ---------------------------------------------

fn client_config(trusted_cas: &[&str]) -> Arc<ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in trusted_cas {
        roots
            .add(CertificateDer::from_pem_slice(ca.as_bytes()).expect("CA PEM"))
            .expect("trust anchor");
    }
    let mut config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

async fn connect_tls(
    addr: SocketAddr,
    name: &str,
    trusted_cas: &[&str],
) -> std::io::Result<TlsStream<TcpStream>> {
    let connector = TlsConnector::from(client_config(trusted_cas));
    let name = ServerName::try_from(name.to_owned()).expect("server name");
    tokio::time::timeout(WAIT, async {
        let tcp = TcpStream::connect(addr).await?;
        connector.connect(name, tcp).await
    })
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS connect timed out"))?
}

/// The end-entity certificate a fresh handshake is presented with.
async fn presented_cert(addr: SocketAddr, trusted_cas: &[&str]) -> Vec<u8> {
    let stream = connect_tls(addr, "localhost", trusted_cas)
        .await
        .expect("handshake");
    stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .expect("server presented a certificate")
        .to_vec()
}

#[derive(Debug)]
struct HttpResponse {
    version: String,
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

/// Raw HTTP/1.1 over any stream. tokio's `io-util` is not among the crate's features, so the
/// few byte-level helpers needed are written against the poll traits directly.
struct HttpClient<S> {
    stream: S,
    buffered: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> HttpClient<S> {
    fn new(stream: S) -> Self {
        HttpClient {
            stream,
            buffered: Vec::new(),
        }
    }

    async fn get(&mut self, path: &str) -> std::io::Result<HttpResponse> {
        let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
        self.send_raw(request.as_bytes()).await?;
        self.read_response().await
    }

    async fn post(&mut self, path: &str, body: &[u8]) -> std::io::Result<HttpResponse> {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        self.send_raw(head.as_bytes()).await?;
        self.send_raw(body).await?;
        self.read_response().await
    }

    async fn send_raw(&mut self, mut bytes: &[u8]) -> std::io::Result<()> {
        while !bytes.is_empty() {
            let written = poll_fn(|cx| Pin::new(&mut self.stream).poll_write(cx, bytes)).await?;
            if written == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            bytes = &bytes[written..];
        }
        poll_fn(|cx| Pin::new(&mut self.stream).poll_flush(cx)).await
    }

    /// Reads more bytes into the buffer; `Ok(0)` at EOF.
    async fn fill(&mut self) -> std::io::Result<usize> {
        let mut chunk = [0u8; 16 * 1024];
        let mut buf = ReadBuf::new(&mut chunk);
        poll_fn(|cx| Pin::new(&mut self.stream).poll_read(cx, &mut buf)).await?;
        let filled = buf.filled();
        self.buffered.extend_from_slice(filled);
        Ok(filled.len())
    }

    async fn read_response(&mut self) -> std::io::Result<HttpResponse> {
        tokio::time::timeout(WAIT, self.read_response_unbounded())
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no response"))?
    }

    async fn read_response_unbounded(&mut self) -> std::io::Result<HttpResponse> {
        let bad =
            |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
        let head_end = loop {
            if let Some(at) = self.buffered.windows(4).position(|w| w == b"\r\n\r\n") {
                break at;
            }
            if self.fill().await? == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "connection closed before a response",
                ));
            }
        };
        let head = String::from_utf8_lossy(&self.buffered[..head_end]).into_owned();
        self.buffered.drain(..head_end + 4);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let mut status_words = status_line.split_whitespace();
        let version = status_words.next().unwrap_or_default().to_owned();
        let status = status_words
            .next()
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| bad("status line"))?;
        let headers = lines
            .map(|line| {
                let (name, value) = line.split_once(':').ok_or_else(|| bad("header"))?;
                Ok((name.trim().to_ascii_lowercase(), value.trim().to_owned()))
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        let length: usize = headers
            .iter()
            .find(|(name, _)| name == "content-length")
            .and_then(|(_, value)| value.parse().ok())
            .ok_or_else(|| bad("responses here always have a content-length"))?;
        while self.buffered.len() < length {
            if self.fill().await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
        let body: Vec<u8> = self.buffered.drain(..length).collect();
        Ok(HttpResponse {
            version,
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }

    /// True once the server has closed the connection (EOF or reset).
    async fn closed_by_server(&mut self) -> bool {
        matches!(
            tokio::time::timeout(WAIT, self.fill()).await,
            Ok(Ok(0) | Err(_))
        )
    }
}

async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// A server on a new certificate pair, written to a temporary directory that lives as long
/// as the returned guard.
async fn serve(options: ServeOptions) -> (LocalCerts, tempfile::TempDir, Running) {
    let certs = pair();
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start_with_pair(&certs, dir.path(), options).await;
    (certs, dir, server)
}

async fn start_with_pair(certs: &LocalCerts, dir: &Path, options: ServeOptions) -> Running {
    let (cert, key) = write_pair(dir, certs);
    let cert = ServingCert::load(cert, key).expect("load pair");
    Running::start(cert, options, Duration::from_millis(500)).await
}

// ---- TLS and HTTP ---------------------------------------------------------------------------

#[tokio::test]
async fn https_request_succeeds_for_a_client_trusting_the_generated_ca() {
    let (a, _dir, server) = serve(test_options()).await;
    for name in ["127.0.0.1", "localhost"] {
        let stream = connect_tls(server.addr, name, &[&a.ca_pem])
            .await
            .unwrap_or_else(|e| panic!("handshake as {name}: {e}"));
        assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
        let response = HttpClient::new(stream)
            .get("/hello")
            .await
            .expect("response");
        assert_eq!((response.status, response.body.as_str()), (200, "hello"));
    }
    assert!(server.ready.is_ready());
}

#[tokio::test]
async fn client_trusting_another_ca_is_refused() {
    let (a, other) = (pair(), pair());
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start_with_pair(&a, dir.path(), test_options()).await;
    assert!(
        connect_tls(server.addr, "localhost", &[&other.ca_pem])
            .await
            .is_err()
    );
}

#[tokio::test]
async fn keep_alive_serves_two_requests_on_one_connection() {
    let (a, _dir, server) = serve(test_options()).await;
    let stream = connect_tls(server.addr, "localhost", &[&a.ca_pem])
        .await
        .expect("handshake");
    let mut client = HttpClient::new(stream);
    let first = client.get("/hello").await.expect("first response");
    let second = client.post("/echo", b"abc").await.expect("second response");
    assert_eq!((first.status, second.status), (200, 200));
    assert_eq!(second.body, "3");
    assert!(
        !first
            .headers
            .iter()
            .any(|(name, value)| name == "connection" && value == "close")
    );
}

#[tokio::test]
async fn body_of_exactly_3_mib_is_accepted() {
    let (a, _dir, server) = serve(test_options()).await;
    let stream = connect_tls(server.addr, "localhost", &[&a.ca_pem])
        .await
        .expect("handshake");
    let body = vec![b'x'; MAX_BODY_BYTES];
    let response = HttpClient::new(stream)
        .post("/echo", &body)
        .await
        .expect("response");
    assert_eq!(response.status, 200);
    assert_eq!(response.body, MAX_BODY_BYTES.to_string());
}

#[tokio::test]
async fn declared_body_over_3_mib_is_refused_with_413_before_it_is_sent() {
    let (a, _dir, server) = serve(test_options()).await;
    let stream = connect_tls(server.addr, "localhost", &[&a.ca_pem])
        .await
        .expect("handshake");
    let mut client = HttpClient::new(stream);
    let head = format!(
        "POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n",
        MAX_BODY_BYTES + 1
    );
    client.send_raw(head.as_bytes()).await.expect("send head");
    let response = client.read_response().await.expect("response");
    assert_eq!(response.status, 413);
}

#[tokio::test]
async fn chunked_body_over_3_mib_is_refused_with_413() {
    let (a, _dir, server) = serve(test_options()).await;
    let stream = connect_tls(server.addr, "localhost", &[&a.ca_pem])
        .await
        .expect("handshake");
    let mut client = HttpClient::new(stream);
    client
        .send_raw(b"POST /echo HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await
        .expect("send head");
    // 64 KiB chunks until just past the limit; no terminating chunk, so the server can only
    // answer by judging the size.
    let chunk = vec![b'x'; 64 * 1024];
    let mut chunk_frame = format!("{:x}\r\n", chunk.len()).into_bytes();
    chunk_frame.extend_from_slice(&chunk);
    chunk_frame.extend_from_slice(b"\r\n");
    for _ in 0..=(MAX_BODY_BYTES / chunk.len()) {
        client.send_raw(&chunk_frame).await.expect("send chunk");
    }
    let response = client.read_response().await.expect("response");
    assert_eq!(response.status, 413);
}

// ---- slow and many clients ------------------------------------------------------------------

#[tokio::test]
async fn client_that_never_finishes_the_tls_handshake_is_dropped() {
    let (_certs, _dir, server) = serve(test_options()).await;
    let tcp = TcpStream::connect(server.addr).await.expect("connect");
    assert!(HttpClient::new(tcp).closed_by_server().await);
}

#[tokio::test]
async fn client_that_drips_its_headers_is_dropped() {
    let (a, _dir, server) = serve(test_options()).await;
    let stream = connect_tls(server.addr, "localhost", &[&a.ca_pem])
        .await
        .expect("handshake");
    let mut client = HttpClient::new(stream);
    client
        .send_raw(b"GET /hello HTTP/1.1\r\nHost: local")
        .await
        .expect("send partial head");
    assert!(client.closed_by_server().await);
}

#[tokio::test]
async fn connections_over_the_cap_wait_until_a_slot_frees() {
    let options = ServeOptions {
        max_connections: 1,
        // Long enough that the first connection stays open while we look at the second.
        request_deadline: Duration::from_secs(30),
        keep_alive_timeout: Duration::from_secs(30),
        ..test_options()
    };
    let (a, _dir, server) = serve(options).await;
    let first = connect_tls(server.addr, "localhost", &[&a.ca_pem])
        .await
        .expect("first handshake");
    let second = tokio::spawn({
        let (addr, ca) = (server.addr, a.ca_pem.clone());
        async move { connect_tls(addr, "localhost", &[&ca]).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !second.is_finished(),
        "second handshake completed over the cap"
    );
    drop(first);
    let second = tokio::time::timeout(WAIT, second)
        .await
        .expect("second handshake within the wait")
        .expect("join")
        .expect("second handshake");
    let response = HttpClient::new(second)
        .get("/hello")
        .await
        .expect("response");
    assert_eq!(response.status, 200);
}

// ---- certificate rotation -------------------------------------------------------------------

#[tokio::test]
async fn rotated_pair_from_another_ca_is_served_after_the_poll_interval() {
    let (a, b) = (pair(), pair());
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start_with_pair(&a, dir.path(), test_options()).await;
    let both = [a.ca_pem.as_str(), b.ca_pem.as_str()];
    assert_eq!(presented_cert(server.addr, &both).await, der(&a.cert_pem));

    write_pair(dir.path(), &b);
    eventually("the new certificate", async || {
        presented_cert(server.addr, &both).await == der(&b.cert_pem)
    })
    .await;
    // A client that only knows the new CA connects and gets answers.
    let stream = connect_tls(server.addr, "localhost", &[&b.ca_pem])
        .await
        .expect("handshake with the new CA");
    assert_eq!(
        HttpClient::new(stream)
            .get("/hello")
            .await
            .expect("response")
            .status,
        200
    );
    assert!(server.metrics.tls_reload_count(ReloadResult::Success) >= 1);
}

#[tokio::test]
async fn broken_key_keeps_the_old_pair_and_counts_a_reload_error() {
    let a = pair();
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start_with_pair(&a, dir.path(), test_options()).await;
    std::fs::write(
        dir.path().join("tls.key"),
        "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n",
    )
    .expect("break the key");
    eventually("a reload error", async || {
        server.metrics.tls_reload_count(ReloadResult::Error) >= 1
    })
    .await;
    assert_eq!(
        presented_cert(server.addr, &[&a.ca_pem]).await,
        der(&a.cert_pem)
    );
    assert_eq!(server.metrics.tls_reload_count(ReloadResult::Success), 0);
}

/// Lays out `dir` like a kubelet-mounted Secret: `tls.crt -> ..data/tls.crt`,
/// `..data -> ..<version>/`, and swaps `..data` atomically on every call.
#[cfg(unix)]
fn project_secret(dir: &Path, version: &str, certs: &LocalCerts) {
    let versioned = dir.join(format!("..{version}"));
    certs::write(&versioned, certs).expect("write versioned dir");
    let tmp_link = dir.join("..data_tmp");
    std::os::unix::fs::symlink(format!("..{version}"), &tmp_link).expect("symlink ..data_tmp");
    std::fs::rename(&tmp_link, dir.join("..data")).expect("swap ..data");
    for file in ["tls.crt", "tls.key", "ca.crt"] {
        let link = dir.join(file);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{file}"), &link).expect("file symlink");
        }
    }
}

#[cfg(unix)]
#[tokio::test]
async fn kubelet_style_symlink_swap_of_a_mounted_secret_is_picked_up() {
    let (a, b) = (pair(), pair());
    let dir = tempfile::tempdir().expect("tempdir");
    project_secret(dir.path(), "2026_01_01_a", &a);
    let cert = ServingCert::load(dir.path().join("tls.crt"), dir.path().join("tls.key"))
        .expect("load through symlinks");
    let server = Running::start(cert, test_options(), Duration::ZERO).await;
    let both = [a.ca_pem.as_str(), b.ca_pem.as_str()];
    assert_eq!(presented_cert(server.addr, &both).await, der(&a.cert_pem));

    project_secret(dir.path(), "2026_02_01_b", &b);
    std::fs::remove_dir_all(dir.path().join("..2026_01_01_a")).expect("kubelet removes old dir");
    eventually("the swapped certificate", async || {
        presented_cert(server.addr, &both).await == der(&b.cert_pem)
    })
    .await;
}

// ---- readiness and shutdown -----------------------------------------------------------------

#[tokio::test]
async fn readyz_is_503_until_the_https_port_serves_and_after_it_stops() {
    install_crypto_provider();
    let a = pair();
    let dir = tempfile::tempdir().expect("tempdir");
    let ready = ReadyFlag::default();
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let admin_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind admin");
    let admin_addr = admin_listener.local_addr().expect("admin addr");
    let (stop_admin, admin_stopped) = oneshot::channel::<()>();
    let admin = tokio::spawn(serve_admin(
        admin_listener,
        admin_router(ready.clone(), Arc::new(registry)),
        async move {
            let _ = admin_stopped.await;
        },
    ));
    let admin_get = async |path: &str| {
        let tcp = TcpStream::connect(admin_addr).await.expect("connect admin");
        HttpClient::new(tcp)
            .get(path)
            .await
            .expect("admin response")
    };

    assert_eq!(admin_get("/healthz").await.status, 200);
    assert_eq!(admin_get("/readyz").await.status, 503);

    let (cert, key) = write_pair(dir.path(), &a);
    let tls = server_config(ServingCert::load(cert, key).expect("load")).expect("config");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind https");
    let (stop_https, https_stopped) = oneshot::channel::<()>();
    let https = tokio::spawn(serve_https(
        listener,
        tls,
        app(Arc::new(Notify::new()), Duration::ZERO),
        test_options(),
        ready.clone(),
        async move {
            let _ = https_stopped.await;
        },
    ));
    eventually("readiness", async || {
        admin_get("/readyz").await.status == 200
    })
    .await;

    metrics.observe(
        "validate-deployments",
        Outcome::Allowed,
        Duration::from_millis(1),
    );
    let scrape = admin_get("/metrics").await;
    assert!(
        scrape.body.contains(
            r#"serin_admission_requests_total{webhook="validate-deployments",outcome="allowed"} 1"#
        ),
        "{}",
        scrape.body
    );

    let _ = stop_https.send(());
    tokio::time::timeout(WAIT, https)
        .await
        .expect("https stops")
        .expect("join");
    assert_eq!(admin_get("/readyz").await.status, 503);

    let _ = stop_admin.send(());
    tokio::time::timeout(WAIT, admin)
        .await
        .expect("admin stops")
        .expect("join");
}

#[tokio::test]
async fn graceful_shutdown_lets_an_in_flight_request_finish_and_refuses_new_connections() {
    let a = pair();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = start_with_pair(&a, dir.path(), test_options()).await;
    let stream = connect_tls(server.addr, "localhost", &[&a.ca_pem])
        .await
        .expect("handshake");
    let mut client = HttpClient::new(stream);
    client
        .send_raw(b"GET /slow HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .expect("send request");
    tokio::time::timeout(WAIT, server.started.notified())
        .await
        .expect("the slow handler starts");

    server.shut_down();
    let response = client.read_response().await.expect("in-flight response");
    assert_eq!((response.status, response.body.as_str()), (200, "done"));
    // The connection is not kept alive past shutdown.
    assert!(client.closed_by_server().await);

    tokio::time::timeout(WAIT, &mut server.server)
        .await
        .expect("serve_https returns after draining")
        .expect("join");
    assert!(!server.ready.is_ready());
    assert!(TcpStream::connect(server.addr).await.is_err());
}

#[tokio::test]
async fn shutdown_gives_up_on_requests_that_outlast_the_drain_timeout() {
    let a = pair();
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = write_pair(dir.path(), &a);
    let options = ServeOptions {
        drain_timeout: Duration::from_millis(200),
        ..test_options()
    };
    let mut server = Running::start(
        ServingCert::load(cert, key).expect("load"),
        options,
        Duration::from_secs(3600),
    )
    .await;
    let stream = connect_tls(server.addr, "localhost", &[&a.ca_pem])
        .await
        .expect("handshake");
    let mut client = HttpClient::new(stream);
    client
        .send_raw(b"GET /slow HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .expect("send request");
    tokio::time::timeout(WAIT, server.started.notified())
        .await
        .expect("the slow handler starts");

    server.shut_down();
    tokio::time::timeout(WAIT, &mut server.server)
        .await
        .expect("serve_https returns after the drain timeout")
        .expect("join");
    assert!(client.closed_by_server().await);
}

// ---- hostile clients: slow bodies, one address taking every slot, odd ALPN -------------------

/// Sends the head of a POST announcing `length` body bytes.
async fn send_post_head<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut HttpClient<S>,
    length: usize,
) -> std::io::Result<()> {
    let head =
        format!("POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: {length}\r\n\r\n");
    client.send_raw(head.as_bytes()).await
}

/// Drips one body byte every `every` until the server closes the connection or `limit`
/// passes; the time it took the server to close, `None` if it never did.
async fn drip_until_closed<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut HttpClient<S>,
    every: Duration,
    limit: Duration,
) -> Option<Duration> {
    let started = tokio::time::Instant::now();
    while started.elapsed() < limit {
        if client.send_raw(b"x").await.is_err() {
            return Some(started.elapsed());
        }
        // Anything read before the close is fine; keep dripping.
        if let Ok(Ok(0) | Err(_)) = tokio::time::timeout(every, client.fill()).await {
            return Some(started.elapsed());
        }
    }
    None
}

#[tokio::test]
async fn client_that_drips_its_body_is_cut_off_by_the_request_deadline() {
    let (a, _dir, server) = serve(test_options()).await;
    let stream = connect_tls(server.addr, "localhost", &[&a.ca_pem])
        .await
        .expect("handshake");
    let mut client = HttpClient::new(stream);
    send_post_head(&mut client, 1_000).await.expect("send head");
    // Every byte arrives well inside any per-read timeout; only a deadline on the whole
    // request ends this.
    let closed_after = drip_until_closed(&mut client, Duration::from_millis(100), WAIT).await;
    let closed_after = closed_after.expect("the server kept a dripping body open for 5 s");
    assert!(
        closed_after < Duration::from_secs(3),
        "closed only after {closed_after:?}"
    );
}

/// A TCP connection to `addr` from the local address `from` (any loopback address works on
/// Linux, which routes all of 127.0.0.0/8 to the loopback interface).
#[cfg(target_os = "linux")]
async fn connect_tls_from(
    from: std::net::IpAddr,
    addr: SocketAddr,
    trusted_cas: &[&str],
) -> std::io::Result<TlsStream<TcpStream>> {
    let connector = TlsConnector::from(client_config(trusted_cas));
    let name = ServerName::try_from("localhost").expect("server name");
    tokio::time::timeout(WAIT, async {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(from, 0))?;
        let tcp = socket.connect(addr).await?;
        connector.connect(name, tcp).await
    })
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS connect timed out"))?
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn slow_clients_from_one_address_do_not_keep_a_review_from_another_waiting() {
    let options = ServeOptions {
        max_connections: 8,
        max_connections_per_address: 4,
        ..test_options()
    };
    let (a, _dir, server) = serve(options).await;
    // Twice as many drippers as there are slots, each reconnecting as soon as it is cut off.
    let attacker: std::net::IpAddr = [127, 0, 0, 1].into();
    let drippers: Vec<JoinHandle<()>> = (0..16)
        .map(|_| {
            let (addr, ca) = (server.addr, a.ca_pem.clone());
            tokio::spawn(async move {
                loop {
                    let Ok(stream) = connect_tls_from(attacker, addr, &[&ca]).await else {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    };
                    let mut client = HttpClient::new(stream);
                    if send_post_head(&mut client, 1_000).await.is_ok() {
                        drip_until_closed(&mut client, Duration::from_millis(100), WAIT).await;
                    }
                }
            })
        })
        .collect();
    // Let them take what they can.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let started = tokio::time::Instant::now();
    let stream = connect_tls_from([127, 0, 0, 2].into(), server.addr, &[&a.ca_pem])
        .await
        .expect("a client from another address gets a connection");
    let response = HttpClient::new(stream)
        .post("/echo", b"{}")
        .await
        .expect("a client from another address gets an answer");
    let took = started.elapsed();
    for dripper in &drippers {
        dripper.abort();
    }
    assert_eq!((response.status, response.body.as_str()), (200, "2"));
    // Promptly: without waiting for a dripping connection to be cut off and its slot freed.
    assert!(
        took < Duration::from_millis(900),
        "answered only after {took:?}"
    );
}

async fn connect_offering(
    alpn: &[&[u8]],
    addr: SocketAddr,
    ca: &str,
) -> std::io::Result<TlsStream<TcpStream>> {
    let mut config = (*client_config(&[ca])).clone();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").expect("name");
    tokio::time::timeout(WAIT, connector.connect(name, tcp))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS connect timed out"))?
}

#[tokio::test]
async fn client_offering_only_http_1_0_in_alpn_is_served() {
    let (a, _dir, server) = serve(test_options()).await;

    // It may well speak HTTP/1.1 all the same: answered in HTTP/1.1, and kept alive.
    let stream = connect_offering(&[b"http/1.0"], server.addr, &a.ca_pem)
        .await
        .expect("the handshake succeeds for an http/1.0-only client");
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.0"[..]));
    let mut client = HttpClient::new(stream);
    for _ in 0..2 {
        let response = client.get("/hello").await.expect("response");
        assert_eq!(response.version, "HTTP/1.1");
        assert_eq!((response.status, response.body.as_str()), (200, "hello"));
    }

    // An HTTP/1.0 request is answered too (hyper answers it in HTTP/1.0 framing, which is
    // all such a client can read), and the connection closed after it.
    let stream = connect_offering(&[b"http/1.0"], server.addr, &a.ca_pem)
        .await
        .expect("handshake");
    let mut client = HttpClient::new(stream);
    client
        .send_raw(b"GET /hello HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await
        .expect("send request");
    let response = client.read_response().await.expect("response");
    assert_eq!((response.status, response.body.as_str()), (200, "hello"));
    assert!(client.closed_by_server().await);

    // Clients offering both still get http/1.1; one offering only h2 is still refused.
    let stream = connect_offering(&[b"http/1.0", b"http/1.1"], server.addr, &a.ca_pem)
        .await
        .expect("handshake");
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert!(
        connect_offering(&[b"h2"], server.addr, &a.ca_pem)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn each_request_on_a_kept_alive_connection_gets_its_own_deadline() {
    let (a, _dir, server) = serve(test_options()).await;
    let stream = connect_tls(server.addr, "localhost", &[&a.ca_pem])
        .await
        .expect("handshake");
    let mut client = HttpClient::new(stream);
    // Three requests spread over more than one request deadline, each within the idle bound.
    for round in 0..3 {
        let response = client.get("/hello").await.expect("response");
        assert_eq!(response.status, 200, "request {round}");
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
}

#[tokio::test]
async fn a_connection_idle_past_the_keep_alive_timeout_is_closed() {
    let (a, _dir, server) = serve(test_options()).await;
    let stream = connect_tls(server.addr, "localhost", &[&a.ca_pem])
        .await
        .expect("handshake");
    let mut client = HttpClient::new(stream);
    let response = client.get("/hello").await.expect("response");
    assert_eq!(response.status, 200);
    let idle_from = tokio::time::Instant::now();
    assert!(client.closed_by_server().await);
    let idle_for = idle_from.elapsed();
    assert!(
        idle_for >= Duration::from_millis(900) && idle_for < Duration::from_secs(3),
        "closed after {idle_for:?}"
    );
}

#[tokio::test]
async fn a_handler_still_running_at_the_deadline_has_its_connection_closed() {
    let a = pair();
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = write_pair(dir.path(), &a);
    let cert = ServingCert::load(cert, key).expect("load");
    let server = Running::start(cert, test_options(), Duration::from_secs(3600)).await;
    let stream = connect_tls(server.addr, "localhost", &[&a.ca_pem])
        .await
        .expect("handshake");
    let mut client = HttpClient::new(stream);
    client
        .send_raw(b"GET /slow HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .expect("send request");
    assert!(client.closed_by_server().await);
}

#[tokio::test]
async fn connections_over_the_per_address_cap_are_closed_at_once() {
    let options = ServeOptions {
        max_connections_per_address: 1,
        request_deadline: Duration::from_secs(30),
        keep_alive_timeout: Duration::from_secs(30),
        ..test_options()
    };
    let (a, _dir, server) = serve(options).await;
    let first = connect_tls(server.addr, "localhost", &[&a.ca_pem])
        .await
        .expect("first handshake");
    let started = tokio::time::Instant::now();
    assert!(
        connect_tls(server.addr, "localhost", &[&a.ca_pem])
            .await
            .is_err(),
        "a second connection from the same address was served"
    );
    assert!(started.elapsed() < Duration::from_secs(1));
    // The first is unaffected, and once it is gone the address may connect again.
    let response = HttpClient::new(first)
        .get("/hello")
        .await
        .expect("response");
    assert_eq!(response.status, 200);
    eventually("a slot for the address again", async || {
        connect_tls(server.addr, "localhost", &[&a.ca_pem])
            .await
            .is_ok()
    })
    .await;
}
