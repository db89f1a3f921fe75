//! `serin webhook --self-signed`, end to end: two replicas share one Secret, publish the
//! caBundle into webhook configurations and a CRD's conversion settings, and rotate their
//! certificates every few seconds while reviews keep arriving, two ways at once:
//! - directly: a new TLS connection per review, trusting only the caBundle read from the
//!   webhook configuration just before;
//! - through the API server: dry-run creates of Deployments, which it sends to every webhook
//!   of both configurations (one per replica), verifying with the caBundle it has.
//!
//! Everything is the test's own: the Secret lives in a temp namespace, the webhook
//! configurations and the CRD are named after it, and the webhooks only see that namespace.
//! Serin's shared `serin` configurations are never touched.

mod support;

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::PostParams;
use kube::{Api, Client};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;

use support::{TestNamespace, wait_until};

/// Certificates live 9 s and are renewed 5 s before expiry, each replica checking every
/// 300 ms (grace periods 0.9 s): a rotation starts about every 4 s.
const VALIDITY: &str = "9s";
const RENEW_BEFORE: &str = "5s";
const CHECK_INTERVAL: &str = "300ms";
/// How long reviews are sent while the certificates rotate.
const RUN_FOR: Duration = Duration::from_secs(30);
/// Rotations each replica must have served for the run to prove anything.
const MIN_ROTATIONS: usize = 4;

const SECRET: &str = "serin-webhook-tls";
const REPLICAS: [&str; 2] = ["a", "b"];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn reviews_never_fail_while_self_signed_certificates_rotate() {
    serin::server::install_crypto_provider();
    let client = support::client().await;
    let ns = TestNamespace::create(&client, "self-signed").await;
    let work = tempfile::tempdir().expect("tempdir");

    let ports: Vec<(u16, u16)> = REPLICAS
        .iter()
        .map(|_| (free_port(), free_port()))
        .collect();
    let objects = TestObjects::register(&client, &ns.name, &ports).await;

    // Both replicas start at once, so both find no Secret and race to create it.
    let replicas: Vec<Replica> = REPLICAS
        .iter()
        .zip(&ports)
        .map(|(name, &(port, admin))| {
            Replica::start(name, port, admin, &ns.name, &objects, work.path())
        })
        .collect();
    let on_failure = Logs(replicas.iter().map(|r| r.log.clone()).collect());
    for replica in &replicas {
        replica.wait_ready().await;
    }

    // The first bundle is published and the API server reaches both replicas with it.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    wait_until(
        "a dry-run create to pass all four webhooks",
        Duration::from_secs(30),
        || async {
            create_dry_run(&deployments)
                .await
                .map_err(|e| format!("{e}"))
        },
    )
    .await;

    let stop = Arc::new(AtomicBool::new(false));
    let mut load = JoinSet::new();
    for (replica, &(port, _)) in REPLICAS.iter().zip(&ports) {
        load.spawn(direct_reviews(
            client.clone(),
            objects.config_name.clone(),
            replica.to_string(),
            port,
            ns.name.clone(),
            stop.clone(),
        ));
    }
    load.spawn(api_server_reviews(deployments.clone(), stop.clone()));
    tokio::time::sleep(RUN_FOR).await;
    stop.store(true, Ordering::Release);
    let mut results = Vec::new();
    while let Some(result) = load.join_next().await {
        results.push(result.expect("a load task panicked"));
    }

    let total: usize = results.iter().map(|r| r.ok + r.failures.len()).sum();
    let failures: Vec<&String> = results.iter().flat_map(|r| &r.failures).collect();
    for result in &results {
        eprintln!(
            "{}: {} reviews passed, {} failed, {} distinct serving certificates seen",
            result.source,
            result.ok,
            result.failures.len(),
            result.served.len()
        );
    }
    let reloads: Vec<u64> = {
        let mut counts = Vec::new();
        for replica in &replicas {
            counts.push(replica.reloads().await);
        }
        counts
    };
    eprintln!("serving pairs loaded from the Secret after start, per replica: {reloads:?}");
    assert!(
        failures.is_empty(),
        "{} of {total} reviews failed during rotation; first ones:\n{}",
        failures.len(),
        failures
            .iter()
            .take(10)
            .map(|f| f.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );

    // The serving certificate really changed, on every replica, and both served the pairs
    // of the one Secret.
    let direct: Vec<&LoadResult> = results.iter().filter(|r| !r.served.is_empty()).collect();
    assert_eq!(direct.len(), REPLICAS.len());
    for result in &direct {
        assert!(
            result.served.len() > MIN_ROTATIONS,
            "{} served only {} distinct certificates in {RUN_FOR:?}",
            result.source,
            result.served.len()
        );
        assert!(
            result.ok >= 100,
            "{}: only {} reviews",
            result.source,
            result.ok
        );
    }
    assert!(
        !direct[0].served.is_disjoint(&direct[1].served),
        "the replicas never served the same certificate: they do not share the Secret"
    );
    for (replica, count) in REPLICAS.iter().zip(&reloads) {
        assert!(
            *count >= MIN_ROTATIONS as u64,
            "replica {replica} loaded only {count} pairs from the Secret"
        );
    }
    let api_server = results
        .iter()
        .find(|r| r.source == "API server")
        .expect("API server load");
    assert!(
        api_server.ok >= 50,
        "only {} creates went through",
        api_server.ok
    );

    // Everything that needs the bundle has the one in the Secret.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    wait_until(
        "the webhook configurations and the CRD to carry the Secret's ca.crt",
        Duration::from_secs(10),
        || async {
            let secret = secrets.get(SECRET).await.map_err(|e| e.to_string())?;
            let bundle = secret
                .data
                .and_then(|d| d.get("ca.crt").map(|b| b.0.clone()))
                .ok_or("no ca.crt in the Secret")?;
            let crd = crds
                .get(&objects.crd_name)
                .await
                .map_err(|e| e.to_string())?;
            let crd_bundle = crd
                .spec
                .conversion
                .and_then(|c| c.webhook)
                .and_then(|w| w.client_config)
                .and_then(|c| c.ca_bundle)
                .map(|b| b.0);
            let mut published = webhook_bundles(&client, &objects.config_name).await?;
            published.push(crd_bundle.unwrap_or_default());
            if published.iter().all(|b| *b == bundle) {
                Ok(())
            } else {
                Err(format!(
                    "{} bundles, not all equal to ca.crt",
                    published.len()
                ))
            }
        },
    )
    .await;
    on_failure.disarm();
}

/// What one source of reviews saw.
struct LoadResult {
    source: String,
    ok: usize,
    failures: Vec<String>,
    /// Serving certificates (DER) presented to this source.
    served: BTreeSet<Vec<u8>>,
}

/// Reviews sent straight to one replica, alternately to its validating and mutating path,
/// each on a new connection that trusts only the caBundle the matching configuration
/// holds at that moment.
async fn direct_reviews(
    client: Client,
    config_name: String,
    replica: String,
    port: u16,
    namespace: String,
    stop: Arc<AtomicBool>,
) -> LoadResult {
    let mut result = LoadResult {
        source: format!("replica {replica}, direct"),
        ok: 0,
        failures: Vec::new(),
        served: BTreeSet::new(),
    };
    let start = Instant::now();
    let mut n = 0u64;
    while !stop.load(Ordering::Acquire) {
        n += 1;
        let (kind, path) = if n.is_multiple_of(2) {
            ("validating", "/validate/deployments")
        } else {
            ("mutating", "/mutate/deployments")
        };
        let outcome = async {
            let bundle = published_bundle(&client, &config_name, kind, &replica).await?;
            review_over_tls(port, &bundle, path, &namespace, n).await
        }
        .await;
        match outcome {
            Ok(served) => {
                result.ok += 1;
                result.served.insert(served);
            }
            Err(e) => result.failures.push(format!(
                "[{:.1}s] replica {replica} {path}: {e}",
                start.elapsed().as_secs_f64()
            )),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    result
}

/// Dry-run creates of a plain Deployment: the API server calls all four webhooks.
async fn api_server_reviews(deployments: Api<Deployment>, stop: Arc<AtomicBool>) -> LoadResult {
    let mut result = LoadResult {
        source: "API server".to_owned(),
        ok: 0,
        failures: Vec::new(),
        served: BTreeSet::new(),
    };
    let start = Instant::now();
    while !stop.load(Ordering::Acquire) {
        match create_dry_run(&deployments).await {
            Ok(()) => result.ok += 1,
            Err(e) => result.failures.push(format!(
                "[{:.1}s] API server: {e}",
                start.elapsed().as_secs_f64()
            )),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    result
}

async fn create_dry_run(deployments: &Api<Deployment>) -> Result<(), kube::Error> {
    let deployment: Deployment =
        serde_json::from_value(plain_deployment()).expect("a valid Deployment");
    let params = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    deployments.create(&params, &deployment).await.map(|_| ())
}

fn plain_deployment() -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"generateName": "rotation-"},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "rotation"}},
            "template": {
                "metadata": {"labels": {"app": "rotation"}},
                "spec": {"containers": [{"name": "app", "image": "registry.invalid/app:1",
                                         "ports": [{"containerPort": 8080}]}]}
            }
        }
    })
}

/// The webhook configuration `name` of kind `K`, as JSON.
async fn configuration<K>(client: &Client, name: &str) -> Result<Value, String>
where
    K: kube::Resource<DynamicType = (), Scope = kube::core::ClusterResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let config = Api::<K>::all(client.clone())
        .get(name)
        .await
        .map_err(|e| e.to_string())?;
    serde_json::to_value(config).map_err(|e| e.to_string())
}

/// The caBundle (PEM) of this replica's webhook in the configuration of `kind`.
async fn published_bundle(
    client: &Client,
    config_name: &str,
    kind: &str,
    replica: &str,
) -> Result<Vec<u8>, String> {
    let hook = webhook_name(replica);
    // Both configurations read as JSON: their webhooks differ in type, not in these fields.
    let config = match kind {
        "validating" => configuration::<ValidatingWebhookConfiguration>(client, config_name).await,
        _ => configuration::<MutatingWebhookConfiguration>(client, config_name).await,
    }?;
    let bundle = config["webhooks"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|w| w["name"] == hook.as_str())
        .and_then(|w| w["clientConfig"]["caBundle"].as_str())
        .map(|b64| {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|e| format!("caBundle of {hook} is not base64: {e}"))
        })
        .transpose()?;
    bundle.ok_or_else(|| format!("no caBundle on webhook {hook} of the {kind} configuration"))
}

/// Every caBundle in both configurations.
async fn webhook_bundles(client: &Client, config_name: &str) -> Result<Vec<Vec<u8>>, String> {
    let mut bundles = Vec::new();
    for kind in ["validating", "mutating"] {
        for replica in REPLICAS {
            bundles.push(published_bundle(client, config_name, kind, replica).await?);
        }
    }
    Ok(bundles)
}

/// One AdmissionReview on a new TLS connection that trusts only `bundle`; the serving
/// certificate presented, if the review was answered and allowed.
async fn review_over_tls(
    port: u16,
    bundle: &[u8],
    path: &str,
    namespace: &str,
    n: u64,
) -> Result<Vec<u8>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(bundle) {
        let ca = ca.map_err(|e| format!("caBundle is not PEM: {e}"))?;
        roots.add(ca).map_err(|e| format!("caBundle: {e}"))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let name = ServerName::IpAddress(Ipv4Addr::LOCALHOST.into());
    let mut tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake with the published caBundle: {e}"))?;
    let served = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|cert| cert.to_vec())
        .ok_or("no certificate presented")?;

    let uid = format!("e2e-rotation-{n}");
    let body = serde_json::to_vec(&review(&uid, namespace)).expect("review serializes");
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes())
        .await
        .map_err(|e| format!("send: {e}"))?;
    tls.write_all(&body)
        .await
        .map_err(|e| format!("send: {e}"))?;
    let mut response = Vec::new();
    tls.read_to_end(&mut response)
        .await
        .map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&response);
    let (status, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("not an HTTP response: {text:?}"))?;
    if !status.starts_with("HTTP/1.1 200") {
        return Err(format!("answered {}", status.lines().next().unwrap_or("")));
    }
    let answer: Value =
        serde_json::from_str(body).map_err(|e| format!("answer is not JSON: {e}: {body}"))?;
    if answer["response"]["uid"] != uid.as_str() || answer["response"]["allowed"] != true {
        return Err(format!("unexpected answer: {answer}"));
    }
    Ok(served)
}

fn review(uid: &str, namespace: &str) -> Value {
    let mut object = plain_deployment();
    object["metadata"] = json!({
        "name": "web",
        "namespace": namespace,
        "annotations": {"serin.dev/enabled": "true", "serin.dev/step-weight": "20"}
    });
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
            "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
            "name": "web",
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {"username": "e2e"},
            "object": object,
            "oldObject": null,
            "dryRun": true
        }
    })
}

fn webhook_name(replica: &str) -> String {
    format!("replica-{replica}.e2e.serin.dev")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The test's cluster-scoped objects, named after its namespace, deleted on drop: webhook
/// configurations with one webhook per replica for Deployments in the namespace only, and a
/// CRD with webhook conversion.
struct TestObjects {
    config_name: String,
    crd_name: String,
}

impl TestObjects {
    async fn register(client: &Client, namespace: &str, ports: &[(u16, u16)]) -> Self {
        let config_name = namespace.to_owned();
        let group = format!("{namespace}.serin.dev");
        let crd_name = format!("widgets.{group}");
        let objects = TestObjects {
            config_name,
            crd_name,
        };
        let hooks = |path: &str| -> Vec<Value> {
            REPLICAS
                .iter()
                .zip(ports)
                .map(|(replica, (port, _))| {
                    // No caBundle: Serin publishes it.
                    json!({
                        "name": webhook_name(replica),
                        "admissionReviewVersions": ["v1"],
                        "sideEffects": "None",
                        "failurePolicy": "Fail",
                        "timeoutSeconds": 5,
                        "clientConfig": {"url": format!("https://127.0.0.1:{port}{path}")},
                        "namespaceSelector": {"matchLabels": {
                            "kubernetes.io/metadata.name": namespace
                        }},
                        "rules": [{"apiGroups": ["apps"], "apiVersions": ["v1"],
                                   "operations": ["CREATE"], "resources": ["deployments"]}]
                    })
                })
                .collect()
        };
        let validating: ValidatingWebhookConfiguration = serde_json::from_value(json!({
            "metadata": {"name": objects.config_name, "labels": {"serin.dev/e2e": "true"}},
            "webhooks": hooks("/validate/deployments")
        }))
        .expect("a valid ValidatingWebhookConfiguration");
        let mutating: MutatingWebhookConfiguration = serde_json::from_value(json!({
            "metadata": {"name": objects.config_name, "labels": {"serin.dev/e2e": "true"}},
            "webhooks": hooks("/mutate/deployments")
        }))
        .expect("a valid MutatingWebhookConfiguration");
        let crd: CustomResourceDefinition = serde_json::from_value(json!({
            "metadata": {"name": objects.crd_name, "labels": {"serin.dev/e2e": "true"}},
            "spec": {
                "group": group,
                "names": {"kind": "Widget", "plural": "widgets", "singular": "widget",
                          "listKind": "WidgetList"},
                "scope": "Namespaced",
                "versions": [{"name": "v1", "served": true, "storage": true,
                              "schema": {"openAPIV3Schema": {"type": "object",
                                  "x-kubernetes-preserve-unknown-fields": true}}}],
                "conversion": {"strategy": "Webhook", "webhook": {
                    "conversionReviewVersions": ["v1"],
                    "clientConfig": {"url": format!("https://127.0.0.1:{}/convert", ports[0].0)}
                }}
            }
        }))
        .expect("a valid CustomResourceDefinition");
        Api::<ValidatingWebhookConfiguration>::all(client.clone())
            .create(&PostParams::default(), &validating)
            .await
            .expect("create the test ValidatingWebhookConfiguration");
        Api::<MutatingWebhookConfiguration>::all(client.clone())
            .create(&PostParams::default(), &mutating)
            .await
            .expect("create the test MutatingWebhookConfiguration");
        Api::<CustomResourceDefinition>::all(client.clone())
            .create(&PostParams::default(), &crd)
            .await
            .expect("create the test CRD");
        objects
    }
}

impl Drop for TestObjects {
    fn drop(&mut self) {
        let (ok, _, err) = support::kubectl(
            &[
                "delete",
                "--ignore-not-found",
                "--wait=false",
                &format!("validatingwebhookconfiguration/{}", self.config_name),
                &format!("mutatingwebhookconfiguration/{}", self.config_name),
                &format!("customresourcedefinition/{}", self.crd_name),
            ],
            None,
        );
        if !ok {
            eprintln!("warning: could not delete the test's cluster objects: {err}");
        }
    }
}

/// One `serin webhook --self-signed` process, killed on drop.
struct Replica {
    child: Child,
    admin: u16,
    log: PathBuf,
}

impl Replica {
    fn start(
        name: &str,
        port: u16,
        admin: u16,
        namespace: &str,
        objects: &TestObjects,
        work: &Path,
    ) -> Self {
        let log = work.join(format!("replica-{name}.log"));
        let log_file = std::fs::File::create(&log).expect("replica log");
        let child = Command::new(env!("CARGO_BIN_EXE_serin"))
            .arg("webhook")
            .arg("--kubeconfig")
            .arg(support::kubeconfig())
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
            .args(["--lease-namespace", namespace])
            .args(["--webhook-config-name", &objects.config_name])
            .arg("--self-signed")
            .args(["--self-signed-secret", SECRET])
            .args(["--self-signed-validity", VALIDITY])
            .args(["--self-signed-renew-before", RENEW_BEFORE])
            .args(["--self-signed-check-interval", CHECK_INTERVAL])
            .args(["--self-signed-crds", &objects.crd_name])
            .arg("--self-signed-dir")
            .arg(work.join(format!("certs-{name}")))
            .env("RUST_LOG", "info")
            .env_remove("SERIN_TLS_CERT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("start serin webhook --self-signed");
        Replica { child, admin, log }
    }

    async fn wait_ready(&self) {
        let url = format!("http://127.0.0.1:{}/readyz", self.admin);
        let log = self.log.clone();
        wait_until(
            &format!("serin to be ready (log {})", log.display()),
            Duration::from_secs(30),
            || async {
                let status = reqwest::get(&url)
                    .await
                    .map_err(|e| e.to_string())?
                    .status();
                if status.is_success() {
                    Ok(())
                } else {
                    Err(format!("{status}; {}", tail(&log)))
                }
            },
        )
        .await;
    }

    /// How many times the replica loaded a new pair from the Secret after it started.
    async fn reloads(&self) -> u64 {
        let url = format!("http://127.0.0.1:{}/metrics", self.admin);
        let text = reqwest::get(&url)
            .await
            .and_then(|r| r.error_for_status())
            .expect("metrics")
            .text()
            .await
            .expect("metrics text");
        text.lines()
            .find(|l| l.starts_with("serin_tls_reloads_total{") && l.contains("success"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// Prints the replicas' logs if the test fails.
struct Logs(Vec<PathBuf>);

impl Logs {
    fn disarm(mut self) {
        self.0.clear();
    }
}

impl Drop for Logs {
    fn drop(&mut self) {
        for log in &self.0 {
            eprintln!("--- {} ---\n{}", log.display(), tail(log));
        }
    }
}
