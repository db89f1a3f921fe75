//! What an admission review costs Serin, printed as numbers beside a baseline measured in the
//! same run (the machine is shared and noisy, so only same-run ratios mean anything):
//!
//! 1. in process, per review: the unavoidable JSON parse (baseline), `decode_deployment`,
//!    decode + `validate`, decode + `mutate`, for an opted-in and for a refused Deployment, and
//!    for one with 8,000 unknown `serin.dev/` keys (the work per review must not grow with
//!    them beyond reading them: only the first few are named);
//! 2. end to end over HTTPS on 127.0.0.1: the real router and `serve_https` with a generated
//!    certificate, against a route in the same server that returns a fixed small JSON body,
//!    so the cost of Serin's logic over bare TLS + HTTP/1.1 is visible;
//! 3. the peak resident memory of the process.
//!
//! Every loop has a fixed count and every network wait a timeout; traffic stays on loopback.
//! Run with `cargo bench --bench admission` (or `make bench`).

use std::future::{Future, poll_fn};
use std::hint::black_box;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::http::header;
use axum::routing::post;
use futures::future::join_all;
use prometheus_client::registry::Registry;
use rustls::ClientConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use serin::admission::deployments::{PolicyView, mutate, validate};
use serin::admission::review::decode_deployment;
use serin::admission::{AdmissionState, DEFAULT_SERVICE_ACCOUNT, router};
use serin::certs::{self, CertOptions};
use serin::crd::PolicyDefaults;
use serin::server::{
    Metrics, ReadyFlag, ServeOptions, ServingCert, install_crypto_provider, serve_https,
    server_config,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

// ---- sizes of the run ------------------------------------------------------------------------

/// In process: rounds per case (cases interleaved within each round), and the wall time one
/// round of one case aims for.
const MICRO_ROUNDS: usize = 25;
const MICRO_ROUND_TARGET: Duration = Duration::from_millis(20);
const MICRO_WARMUP: Duration = Duration::from_millis(200);

/// End to end: client connections (kept alive throughout), warm-up requests per route, and
/// rounds × requests per round per route (routes interleaved within each round), first on one
/// connection one request at a time, then on all connections at once.
const CONNECTIONS: usize = 4;
const HTTP_WARMUP: usize = 200;
const HTTP_ROUNDS: usize = 10;
const SEQUENTIAL_PER_ROUND: usize = 300;
const CONCURRENT_PER_ROUND: usize = 1000;
/// No single exchange may take longer than this; the bench fails instead of hanging.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);

fn main() {
    install_crypto_provider();
    let opted_in = review_body(opted_in_annotations());
    let refused = review_body(refused_annotations());
    check_decisions(&opted_in, &refused);

    println!("serin admission bench (one process; numbers only compare within this run)");
    println!(
        "review bodies: opted-in {} B, refused {} B (CREATE of an apps/v1 Deployment, 3 containers + 1 init)",
        opted_in.len(),
        refused.len()
    );
    println!();
    let unknown = review_body(unknown_annotations());
    in_process(&opted_in, &refused, &unknown);
    println!();
    end_to_end(&opted_in, &refused);
    println!();
    match peak_rss_kib() {
        Some(kib) => println!(
            "peak resident memory (VmHWM, whole bench process): {kib} KiB ({:.1} MiB)",
            kib as f64 / 1024.0
        ),
        None => println!("peak resident memory (VmHWM): unavailable (no /proc/self/status)"),
    }
    match idle_rss_of_serin_binary() {
        Some(kib) => println!(
            "idle resident memory of `serin webhook` (VmRSS, 2 s after start): {kib} KiB ({:.1} MiB)",
            kib as f64 / 1024.0
        ),
        None => println!("idle resident memory of `serin webhook`: could not be measured"),
    }
}

// ---- the reviews -----------------------------------------------------------------------------

/// A correct, opted-in configuration; a few keys are left out so that `mutate` has defaults
/// to write back.
fn opted_in_annotations() -> Value {
    json!({
        "serin.dev/enabled": "true",
        "serin.dev/provider": "gatewayapi",
        "serin.dev/gateway": "infra/public",
        "serin.dev/port": "8080",
        "serin.dev/interval": "30s",
        "serin.dev/step-weight": "10",
        "serin.dev/max-weight": "50",
        "serin.dev/success-rate": "99.5",
        "serin.dev/latency": "250ms",
        "deployment.kubernetes.io/revision": "7",
        "app.kubernetes.io/managed-by": "argocd",
        "team.example.com/owner": "payments"
    })
}

/// The same Deployment with several mistakes, each of which `validate` must name.
fn refused_annotations() -> Value {
    json!({
        "serin.dev/enabled": "true",
        "serin.dev/provider": "istio",
        "serin.dev/port": "70000",
        "serin.dev/interval": "5x",
        "serin.dev/step-weight": "0",
        "serin.dev/stepweight": "10",
        "serin.dev/success-rate": "high",
        "deployment.kubernetes.io/revision": "7",
        "app.kubernetes.io/managed-by": "argocd",
        "team.example.com/owner": "payments"
    })
}

/// An opted-in Deployment with 8,000 unknown `serin.dev/` keys (what a hostile or broken client
/// may send: the mutating webhook sees the object before the API server checks its size).
fn unknown_annotations() -> Value {
    let mut annotations = opted_in_annotations();
    if let Some(map) = annotations.as_object_mut() {
        for i in 0..8_000 {
            map.insert(format!("serin.dev/unknown-{i:04}"), json!("x"));
        }
    }
    annotations
}

fn env(pairs: &[(&str, &str)]) -> Vec<Value> {
    pairs
        .iter()
        .map(|(name, value)| json!({"name": name, "value": value}))
        .collect()
}

/// A Deployment as a CI pipeline would write it: an app with probes, resources and a dozen
/// env vars, a log shipper and a config reloader as sidecars, a migration init container.
fn deployment(annotations: Value) -> Value {
    let labels = json!({
        "app.kubernetes.io/name": "checkout",
        "app.kubernetes.io/part-of": "shop",
        "app.kubernetes.io/version": "2.14.1"
    });
    let mut app_env = env(&[
        ("LOG_LEVEL", "info"),
        ("LOG_FORMAT", "json"),
        ("HTTP_PORT", "8080"),
        ("METRICS_PORT", "9090"),
        ("DB_HOST", "postgres.shop.svc.cluster.local"),
        ("DB_NAME", "checkout"),
        ("DB_POOL_SIZE", "20"),
        ("CACHE_URL", "redis://redis.shop.svc.cluster.local:6379/0"),
        (
            "PAYMENTS_URL",
            "http://payments.shop.svc.cluster.local:8080",
        ),
        ("FEATURE_FLAGS", "new-cart,express-checkout"),
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "http://otel-collector.observability:4317",
        ),
        ("OTEL_SERVICE_NAME", "checkout"),
    ]);
    app_env.push(json!({"name": "DB_PASSWORD",
        "valueFrom": {"secretKeyRef": {"name": "checkout-db", "key": "password"}}}));
    app_env.push(json!({"name": "POD_NAME",
        "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}}));
    let resources = |cpu: &str, memory: &str| json!({"requests": {"cpu": cpu, "memory": memory}, "limits": {"memory": memory}});
    let probe = |path: &str, delay: i32| {
        json!({"httpGet": {"path": path, "port": "http", "scheme": "HTTP"},
               "initialDelaySeconds": delay, "periodSeconds": 10, "timeoutSeconds": 2,
               "successThreshold": 1, "failureThreshold": 3})
    };
    let hardened = json!({"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                          "runAsNonRoot": true, "capabilities": {"drop": ["ALL"]}});
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "checkout", "namespace": "shop",
                     "labels": labels, "annotations": annotations},
        "spec": {
            "replicas": 3,
            "revisionHistoryLimit": 5,
            "progressDeadlineSeconds": 600,
            "selector": {"matchLabels": {"app.kubernetes.io/name": "checkout"}},
            "strategy": {"type": "RollingUpdate",
                         "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": labels,
                             "annotations": {"prometheus.io/scrape": "true",
                                             "prometheus.io/port": "9090"}},
                "spec": {
                    "serviceAccountName": "checkout",
                    "terminationGracePeriodSeconds": 30,
                    "securityContext": {"fsGroup": 2000, "seccompProfile": {"type": "RuntimeDefault"}},
                    "initContainers": [{
                        "name": "migrate",
                        "image": "registry.example.com/shop/checkout:2.14.1",
                        "command": ["/app/checkout", "migrate", "--wait"],
                        "env": app_env[4..7],
                        "resources": resources("100m", "128Mi"),
                        "securityContext": hardened
                    }],
                    "containers": [
                        {
                            "name": "app",
                            "image": "registry.example.com/shop/checkout:2.14.1",
                            "imagePullPolicy": "IfNotPresent",
                            "args": ["serve", "--config", "/etc/checkout/config.yaml"],
                            "ports": [
                                {"name": "http", "containerPort": 8080, "protocol": "TCP"},
                                {"name": "metrics", "containerPort": 9090, "protocol": "TCP"}
                            ],
                            "env": app_env,
                            "resources": resources("500m", "512Mi"),
                            "livenessProbe": probe("/healthz", 10),
                            "readinessProbe": probe("/readyz", 2),
                            "volumeMounts": [
                                {"name": "config", "mountPath": "/etc/checkout", "readOnly": true},
                                {"name": "tmp", "mountPath": "/tmp"}
                            ],
                            "securityContext": hardened
                        },
                        {
                            "name": "log-shipper",
                            "image": "fluent/fluent-bit:3.2.4",
                            "args": ["--config=/fluent-bit/etc/fluent-bit.yaml"],
                            "env": env(&[("FLUENT_HOST", "logs.observability"),
                                         ("FLUENT_PORT", "24224"),
                                         ("CLUSTER", "eu-west-1-prod")]),
                            "resources": resources("50m", "64Mi"),
                            "volumeMounts": [{"name": "fluent-bit", "mountPath": "/fluent-bit/etc"}],
                            "securityContext": hardened
                        },
                        {
                            "name": "config-reloader",
                            "image": "ghcr.io/example/config-reloader:0.9.0",
                            "args": ["--watch=/etc/checkout", "--signal=HUP"],
                            "resources": resources("10m", "16Mi"),
                            "volumeMounts": [{"name": "config", "mountPath": "/etc/checkout", "readOnly": true}],
                            "securityContext": hardened
                        }
                    ],
                    "volumes": [
                        {"name": "config", "configMap": {"name": "checkout-config"}},
                        {"name": "fluent-bit", "configMap": {"name": "checkout-fluent-bit"}},
                        {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}
                    ],
                    "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
                        "weight": 100,
                        "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname",
                            "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "checkout"}}}
                    }]}},
                    "topologySpreadConstraints": [{
                        "maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                        "whenUnsatisfiable": "ScheduleAnyway",
                        "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "checkout"}}
                    }],
                    "tolerations": [{"key": "workload", "operator": "Equal", "value": "shop",
                                     "effect": "NoSchedule"}]
                }
            }
        }
    })
}

/// The AdmissionReview the API server sends for a CREATE by a GitOps controller.
fn review_body(annotations: Value) -> Vec<u8> {
    let review = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "3b8f1c52-9e0d-4a7b-8f61-2d54c0a9e7f3",
            "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
            "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
            "requestKind": {"group": "apps", "version": "v1", "kind": "Deployment"},
            "requestResource": {"group": "apps", "version": "v1", "resource": "deployments"},
            "name": "checkout",
            "namespace": "shop",
            "operation": "CREATE",
            "userInfo": {
                "username": "system:serviceaccount:argocd:argocd-application-controller",
                "uid": "5d1e7a0c-3f7e-4c52-b0a4-1f0c2a6e9b11",
                "groups": ["system:serviceaccounts", "system:serviceaccounts:argocd",
                           "system:authenticated"]
            },
            "object": deployment(annotations),
            "oldObject": null,
            "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions",
                        "fieldManager": "argocd-controller"}
        }
    });
    serde_json::to_vec(&review).expect("a json! value serializes")
}

/// The bench measures the decisions it claims to: the opted-in review is allowed and gets a
/// patch, the refused one is denied with several mistakes named.
fn check_decisions(opted_in: &[u8], refused: &[u8]) {
    let good = decode_deployment(opted_in).expect("the opted-in review decodes");
    let verdict = validate(&good, &PolicyView::default());
    assert!(
        verdict.allowed,
        "opted-in review refused: {}",
        verdict.result.message
    );
    assert!(
        mutate(&good, DEFAULT_SERVICE_ACCOUNT, &PolicyDefaults::default())
            .patch
            .is_some(),
        "mutate wrote no defaults for the opted-in review"
    );
    let bad = decode_deployment(refused).expect("the refused review decodes");
    let verdict = validate(&bad, &PolicyView::default());
    assert!(!verdict.allowed, "the refused review was allowed");
    let mistakes = verdict.result.message.lines().count().saturating_sub(1);
    assert!(
        mistakes >= 5,
        "expected several mistakes: {}",
        verdict.result.message
    );
}

// ---- 1. in process ---------------------------------------------------------------------------

struct MicroCase<'a> {
    label: String,
    run: Box<dyn Fn() + 'a>,
    iters: u64,
    ns_per_op: Vec<f64>,
}

fn micro_cases<'a>(what: &str, body: &'a [u8]) -> Vec<MicroCase<'a>> {
    let case = |step: &str, run: Box<dyn Fn() + 'a>| MicroCase {
        label: format!("{what:<9} {step}"),
        run,
        iters: 1,
        ns_per_op: Vec::with_capacity(MICRO_ROUNDS),
    };
    vec![
        case(
            "serde_json::Value parse (baseline)",
            Box::new(move || {
                let value: Value = serde_json::from_slice(black_box(body)).expect("JSON");
                black_box(value);
            }),
        ),
        case(
            "decode_deployment",
            Box::new(move || {
                black_box(decode_deployment(black_box(body)).expect("decodes"));
            }),
        ),
        case(
            "decode + validate",
            Box::new(move || {
                let req = decode_deployment(black_box(body)).expect("decodes");
                black_box(validate(&req, &PolicyView::default()));
            }),
        ),
        case(
            "decode + mutate",
            Box::new(move || {
                let req = decode_deployment(black_box(body)).expect("decodes");
                black_box(mutate(
                    &req,
                    DEFAULT_SERVICE_ACCOUNT,
                    &PolicyDefaults::default(),
                ));
            }),
        ),
    ]
}

fn in_process(opted_in: &[u8], refused: &[u8], unknown: &[u8]) {
    let mut groups = [
        micro_cases("opted-in", opted_in),
        micro_cases("refused", refused),
        micro_cases("8,000 unknown keys", unknown),
    ];
    // Warm up and size each case so that one round of it takes about MICRO_ROUND_TARGET.
    for case in groups.iter_mut().flatten() {
        let started = Instant::now();
        let mut ran = 0u64;
        while started.elapsed() < MICRO_WARMUP {
            (case.run)();
            ran += 1;
        }
        let per_op = MICRO_WARMUP.as_nanos() as f64 / ran as f64;
        case.iters = ((MICRO_ROUND_TARGET.as_nanos() as f64 / per_op) as u64).max(1);
    }
    // Rounds interleave the cases, so a noisy moment hits all of them alike.
    for _ in 0..MICRO_ROUNDS {
        for case in groups.iter_mut().flatten() {
            let started = Instant::now();
            for _ in 0..case.iters {
                (case.run)();
            }
            let elapsed = started.elapsed().as_nanos() as f64;
            case.ns_per_op.push(elapsed / case.iters as f64);
        }
    }

    println!(
        "1. in-process decision cost per review ({MICRO_ROUNDS} interleaved rounds of ~{} ms per case)",
        MICRO_ROUND_TARGET.as_millis()
    );
    println!(
        "{:<46} {:>12} {:>12} {:>12} {:>11}",
        "case", "median ns/op", "min ns/op", "max ns/op", "x baseline"
    );
    for group in &mut groups {
        let baseline = median(&mut group[0].ns_per_op);
        for case in group.iter_mut() {
            let med = median(&mut case.ns_per_op);
            let (min, max) = (case.ns_per_op[0], case.ns_per_op[case.ns_per_op.len() - 1]);
            println!(
                "{:<46} {:>12.0} {:>12.0} {:>12.0} {:>10.2}x",
                case.label,
                med,
                min,
                max,
                med / baseline
            );
        }
    }
}

/// Sorts in place and returns the median.
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

// ---- 2. end to end over HTTPS ----------------------------------------------------------------

const BASELINE_PATH: &str = "/bench/baseline";

/// Serin's webhook routes plus a baseline route that reads the request body (as the
/// webhooks do) and answers a fixed small JSON body: the cost of TLS + HTTP and nothing else.
fn app(metrics: Metrics) -> Router {
    let baseline = Router::new().route(
        BASELINE_PATH,
        post(|body: Bytes| async move {
            black_box(body);
            (
                [(header::CONTENT_TYPE, "application/json")],
                r#"{"allowed":true}"#,
            )
        }),
    );
    baseline.merge(router(AdmissionState {
        metrics,
        serin_user: Arc::from(DEFAULT_SERVICE_ACCOUNT),
        injector: None,
        policies: None,
    }))
}

struct Route {
    label: &'static str,
    /// The whole request, head and body, written in one go.
    wire: Vec<u8>,
    /// A response body that does not contain this is a wrong answer.
    expect: &'static str,
}

impl Route {
    fn new(label: &'static str, path: &str, body: &[u8], expect: &'static str) -> Self {
        let mut wire = format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        wire.extend_from_slice(body);
        Route {
            label,
            wire,
            expect,
        }
    }
}

/// What one route did under one load shape.
#[derive(Default)]
struct Load {
    latencies_ns: Vec<u64>,
    /// Wall time of the batches, for the request rate.
    busy: Duration,
}

fn end_to_end(opted_in: &[u8], refused: &[u8]) {
    let certs = certs::generate(&CertOptions::default()).expect("generate certificates");
    let dir = tempfile::tempdir().expect("temp dir");
    certs::write(dir.path(), &certs).expect("write certificates");
    let cert = ServingCert::load(
        dir.path().join(certs::SERVING_CERT_FILE),
        dir.path().join(certs::SERVING_KEY_FILE),
    )
    .expect("load the serving certificate");
    let tls = server_config(cert).expect("server TLS config");

    // The server gets its own runtime and worker thread, the client the main thread: one
    // core each, so neither steals the other's scheduler.
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("bench-server")
        .enable_all()
        .build()
        .expect("server runtime");
    let listener = server_rt
        .block_on(TcpListener::bind("127.0.0.1:0"))
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local address");
    let metrics = Metrics::register(&mut Registry::default());
    let (stop, stopped) = oneshot::channel::<()>();
    let server = server_rt.spawn(serve_https(
        listener,
        tls,
        app(metrics),
        ServeOptions::default(),
        ReadyFlag::default(),
        async move {
            let _ = stopped.await;
        },
    ));

    let routes = [
        Route::new(
            "POST /bench/baseline (fixed JSON)",
            BASELINE_PATH,
            opted_in,
            r#""allowed":true"#,
        ),
        Route::new(
            "POST /validate/deployments opted-in",
            "/validate/deployments",
            opted_in,
            r#""allowed":true"#,
        ),
        Route::new(
            "POST /validate/deployments refused",
            "/validate/deployments",
            refused,
            r#""allowed":false"#,
        ),
        Route::new(
            "POST /mutate/deployments opted-in",
            "/mutate/deployments",
            opted_in,
            r#""patch":"#,
        ),
    ];

    let client_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime");
    let wall = Instant::now();
    let (protocol, sequential, concurrent, paced_loads) = client_rt.block_on(async {
        let connector = TlsConnector::from(client_config(&certs.ca_pem));
        let mut conns = Vec::with_capacity(CONNECTIONS);
        for _ in 0..CONNECTIONS {
            conns.push(Conn::open(addr, &connector).await.expect("TLS connect"));
        }
        for route in &routes {
            send_batch(&mut conns, route, HTTP_WARMUP.div_ceil(CONNECTIONS), true).await;
        }
        // One connection, one request at a time: the latency of a request on its own.
        let sequential = load(&mut conns[..1], &routes, SEQUENTIAL_PER_ROUND).await;
        // Every connection busy: the server's throughput, latency now includes queueing.
        let concurrent = load(&mut conns, &routes, CONCURRENT_PER_ROUND / CONNECTIONS).await;
        // An open-loop load at a fixed rate, as an API server under steady traffic sends it.
        let paced: Vec<Load> = {
            let mut loads = Vec::new();
            for route in &routes[..2] {
                loads.push(paced(&mut conns[0], route).await);
            }
            loads
        };
        let protocol = conns[0].tls.get_ref().1.protocol_version();
        (protocol, sequential, concurrent, paced)
    });
    let wall = wall.elapsed();

    let _ = stop.send(());
    let drained =
        server_rt.block_on(async { tokio::time::timeout(Duration::from_secs(30), server).await });
    assert!(drained.is_ok(), "the server did not drain within 30 s");
    server_rt.shutdown_timeout(Duration::from_secs(5));

    println!(
        "2. end to end over HTTPS on 127.0.0.1 ({}, HTTP/1.1 keep-alive; server: serve_https on \
         1 worker thread, client: 1 thread; routes interleaved in {HTTP_ROUNDS} rounds after \
         {HTTP_WARMUP} warm-up requests each; {:.1} s)",
        protocol.map_or_else(|| "TLS version unknown".to_owned(), |v| format!("{v:?}")),
        wall.as_secs_f64()
    );
    print_loads(
        &format!(
            "1 connection, sequential, {} requests per route",
            HTTP_ROUNDS * SEQUENTIAL_PER_ROUND
        ),
        &routes,
        sequential,
    );
    print_loads(
        &format!(
            "{CONNECTIONS} connections at once, {} requests per route",
            HTTP_ROUNDS * (CONCURRENT_PER_ROUND / CONNECTIONS) * CONNECTIONS
        ),
        &routes,
        concurrent,
    );
    print_loads(
        &format!(
            "paced at {PACED_RATE} reviews/s on 1 connection for {} s ({} requests per route; \
             req/s is the rate achieved)",
            PACED_REQUESTS / PACED_RATE,
            PACED_REQUESTS
        ),
        &routes[..2],
        paced_loads,
    );
}

/// Requests per second of the paced scenario, and how many to send.
const PACED_RATE: usize = 1000;
const PACED_REQUESTS: usize = 3000;

/// Sends one request every 1/PACED_RATE s (catching up, not skipping, when one is slow)
/// and measures each from when it is written. Not from its scheduled time: tokio's timer
/// has a 1 ms resolution, which would add up to a millisecond of the client's own lateness.
async fn paced(conn: &mut Conn, route: &Route) -> Load {
    let period = Duration::from_secs(1) / PACED_RATE as u32;
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut latencies_ns = Vec::with_capacity(PACED_REQUESTS);
    for _ in 0..PACED_REQUESTS {
        ticker.tick().await;
        let sent = Instant::now();
        let reply = bounded(conn.exchange(&route.wire))
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", route.label));
        latencies_ns.push(sent.elapsed().as_nanos() as u64);
        check_reply(route, &reply, false);
    }
    Load {
        latencies_ns,
        busy: started.elapsed(),
    }
}

/// Resident memory of the real `serin webhook` process once it is up and idle.
fn idle_rss_of_serin_binary() -> Option<u64> {
    let dir = tempfile::tempdir().ok()?;
    let made = certs::generate(&CertOptions::default()).ok()?;
    certs::write(dir.path(), &made).ok()?;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_serin"))
        .arg("webhook")
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .arg("--tls-cert")
        .arg(dir.path().join(certs::SERVING_CERT_FILE))
        .arg("--tls-key")
        .arg(dir.path().join(certs::SERVING_KEY_FILE))
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    std::thread::sleep(Duration::from_secs(2));
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).ok();
    let _ = child.kill();
    let _ = child.wait();
    status?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Sends `per_conn` requests on each of `conns` per route per round, the routes interleaved
/// within each round so that a noisy moment hits all of them alike.
async fn load(conns: &mut [Conn], routes: &[Route], per_conn: usize) -> Vec<Load> {
    let mut loads: Vec<Load> = routes.iter().map(|_| Load::default()).collect();
    for _ in 0..HTTP_ROUNDS {
        for (route, load) in routes.iter().zip(loads.iter_mut()) {
            let started = Instant::now();
            let latencies = send_batch(conns, route, per_conn, false).await;
            load.busy += started.elapsed();
            load.latencies_ns.extend(latencies);
        }
    }
    loads
}

fn print_loads(shape: &str, routes: &[Route], loads: Vec<Load>) {
    println!("  {shape}:");
    println!(
        "  {:<38} {:>9} {:>9} {:>9} {:>13} {:>14}",
        "route", "req/s", "p50 us", "p99 us", "req/s vs base", "p50 - base us"
    );
    let mut base: Option<(f64, f64)> = None;
    for (route, mut load) in routes.iter().zip(loads) {
        load.latencies_ns.sort_unstable();
        let rate = load.latencies_ns.len() as f64 / load.busy.as_secs_f64();
        let p50 = percentile(&load.latencies_ns, 0.50) as f64 / 1000.0;
        let p99 = percentile(&load.latencies_ns, 0.99) as f64 / 1000.0;
        let (base_rate, base_p50) = *base.get_or_insert((rate, p50));
        println!(
            "  {:<38} {:>9.0} {:>9.1} {:>9.1} {:>12.3}x {:>+14.1}",
            route.label,
            rate,
            p50,
            p99,
            rate / base_rate,
            p50 - base_p50
        );
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[u64], p: f64) -> u64 {
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Sends `per_conn` requests on every connection at once (each connection one after the
/// other), checks every answer, and returns the latency of each exchange in nanoseconds.
async fn send_batch(conns: &mut [Conn], route: &Route, per_conn: usize, warmup: bool) -> Vec<u64> {
    let batches = join_all(conns.iter_mut().map(|conn| async move {
        let mut latencies = Vec::with_capacity(per_conn);
        for _ in 0..per_conn {
            let started = Instant::now();
            let reply = bounded(conn.exchange(&route.wire))
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", route.label));
            latencies.push(started.elapsed().as_nanos() as u64);
            check_reply(route, &reply, warmup);
        }
        latencies
    }))
    .await;
    batches.into_iter().flatten().collect()
}

async fn bounded<T>(exchange: impl Future<Output = io::Result<T>>) -> io::Result<T> {
    tokio::time::timeout(EXCHANGE_TIMEOUT, exchange)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no response in time"))?
}

/// Every answer must be a 200; during warm-up the body is also searched for the expected
/// decision (outside the timed rounds, so the search costs the measurement nothing).
fn check_reply(route: &Route, reply: &Reply, warmup: bool) {
    assert_eq!(
        reply.status,
        200,
        "{}: {}",
        route.label,
        String::from_utf8_lossy(&reply.body)
    );
    if warmup {
        let body = String::from_utf8_lossy(&reply.body);
        assert!(
            body.contains(route.expect),
            "{}: expected {} in {body}",
            route.label,
            route.expect
        );
    }
}

fn client_config(ca_pem: &str) -> Arc<ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).expect("CA certificate PEM"))
        .expect("CA as trust anchor");
    let mut config = ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

struct Reply {
    status: u16,
    body: Vec<u8>,
}

/// One kept-alive HTTP/1.1 connection over TLS. tokio's `io-util` is not among the crate's
/// features, so reading and writing go through the poll traits.
struct Conn {
    tls: TlsStream<TcpStream>,
    /// Bytes read but not yet consumed.
    pending: Vec<u8>,
}

impl Conn {
    async fn open(addr: SocketAddr, connector: &TlsConnector) -> io::Result<Self> {
        let tcp = TcpStream::connect(addr).await?;
        // Requests go out in one write; do not let Nagle hold back the tail of one.
        tcp.set_nodelay(true)?;
        let name = ServerName::try_from("127.0.0.1").map_err(io::Error::other)?;
        let tls = bounded(connector.connect(name, tcp)).await?;
        Ok(Conn {
            tls,
            pending: Vec::with_capacity(16 * 1024),
        })
    }

    async fn exchange(&mut self, wire: &[u8]) -> io::Result<Reply> {
        self.write_all(wire).await?;
        self.read_reply().await
    }

    async fn write_all(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            let n = poll_fn(|cx| Pin::new(&mut self.tls).poll_write(cx, bytes)).await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            bytes = &bytes[n..];
        }
        poll_fn(|cx| Pin::new(&mut self.tls).poll_flush(cx)).await
    }

    /// Appends what the stream has to `pending`; errors at EOF, since a response is due.
    async fn read_more(&mut self) -> io::Result<()> {
        let mut chunk = [0u8; 16 * 1024];
        let mut buf = ReadBuf::new(&mut chunk);
        poll_fn(|cx| Pin::new(&mut self.tls).poll_read(cx, &mut buf)).await?;
        if buf.filled().is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "server closed the connection mid-response",
            ));
        }
        self.pending.extend_from_slice(buf.filled());
        Ok(())
    }

    async fn read_reply(&mut self) -> io::Result<Reply> {
        let malformed = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
        let head_len = loop {
            if let Some(end) = self.pending.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            self.read_more().await?;
        };
        let head = std::str::from_utf8(&self.pending[..head_len])
            .map_err(|_| malformed("response head is not UTF-8"))?;
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|line| line.split(' ').nth(1))
            .and_then(|code| code.parse::<u16>().ok())
            .ok_or_else(|| malformed("status line"))?;
        let body_len = lines
            .filter_map(|line| line.split_once(':'))
            .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, value)| value.trim().parse::<usize>().ok())
            .ok_or_else(|| malformed("no content-length (these routes always send one)"))?;
        while self.pending.len() < head_len + body_len {
            self.read_more().await?;
        }
        let body = self.pending[head_len..head_len + body_len].to_vec();
        self.pending.drain(..head_len + body_len);
        Ok(Reply { status, body })
    }
}

// ---- 3. memory -------------------------------------------------------------------------------

/// Peak resident set size of this process, from `VmHWM` in /proc/self/status.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}
