//! Support for the end-to-end tests: they run against a real control plane.
//!
//! Without `KUBECONFIG`, the local environment (`hack/cluster.sh up`, idempotent and safe to
//! call from parallel test binaries) is started on first use and `.serin/cluster/kubeconfig`
//! is used. With `KUBECONFIG` set, the tests run against that cluster instead. Every test
//! gets a fresh namespace that is deleted when the test ends, pass or fail.
#![allow(dead_code)] // each test binary uses a different part of this module

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

pub(crate) mod chart;
pub(crate) mod daemonset;
pub(crate) mod kustomize;
pub(crate) mod plugin;
pub(crate) mod release;
pub(crate) mod routes;
// The shared release scenarios read the simulator's constants: only dev-tools builds
// (the Makefile's and hack/'s) have it.
#[cfg(feature = "dev-tools")]
pub(crate) mod scenarios;
pub(crate) mod svg;

pub(crate) fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs a script from `hack/` and panics with its output when it fails.
pub(crate) fn hack(script: &str, args: &[&str]) -> String {
    let path = repo_root().join("hack").join(script);
    let out = Command::new(&path)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", path.display()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{} {} failed ({}):\n{stderr}",
        path.display(),
        args.join(" "),
        out.status
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The kubeconfig the tests use: `KUBECONFIG` if set, else the local cluster (started once).
pub(crate) fn kubeconfig() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| match std::env::var_os("KUBECONFIG") {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => {
            hack("cluster.sh", &["up"]);
            repo_root().join(".serin/cluster/kubeconfig")
        }
    })
}

/// The kubectl built with the local cluster (same version as the API server), else `kubectl`.
pub(crate) fn kubectl_path() -> PathBuf {
    let built = repo_root().join(".serin/bin/kubectl");
    if built.exists() {
        built
    } else {
        PathBuf::from("kubectl")
    }
}

/// Runs kubectl against the test cluster, feeding `stdin`; returns (success, stdout, stderr).
pub(crate) fn kubectl(args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = Command::new(kubectl_path())
        .arg("--kubeconfig")
        .arg(kubeconfig())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl starts");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin is piped")
            .write_all(input.as_bytes())
            .expect("write kubectl stdin");
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().expect("kubectl finishes");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub(crate) async fn kube_config() -> Config {
    let kubeconfig = Kubeconfig::read_from(kubeconfig()).expect("kubeconfig is readable");
    Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig is valid")
}

pub(crate) async fn client() -> Client {
    Client::try_from(kube_config().await).expect("client from kubeconfig")
}

/// A namespace that lives as long as the test: deleted on drop (also when the test panics).
/// Set `SERIN_E2E_KEEP=1` to keep it for debugging.
pub(crate) struct TestNamespace {
    pub name: String,
    config: Config,
}

impl TestNamespace {
    pub(crate) async fn create(client: &Client, prefix: &str) -> Self {
        let suffix: u32 = rand_suffix();
        let name = format!("e2e-{prefix}-{suffix:08x}");
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([("serin.dev/e2e".to_string(), "true".to_string())].into()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        namespaces
            .create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("create namespace {name}: {e}"));
        TestNamespace {
            name,
            config: kube_config().await,
        }
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if std::env::var_os("SERIN_E2E_KEEP").is_some() {
            eprintln!("keeping namespace {}", self.name);
            return;
        }
        // The test's runtime is blocked inside this drop, so delete from a runtime of our own.
        let (name, config) = (self.name.clone(), self.config.clone());
        let deleted = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async move {
                let client = Client::try_from(config).map_err(|e| e.to_string())?;
                let namespaces: Api<Namespace> = Api::all(client);
                match namespaces.delete(&name, &DeleteParams::background()).await {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
                    Err(e) => Err(e.to_string()),
                }
            })
        })
        .join();
        if let Ok(Err(e)) = deleted {
            eprintln!("warning: could not delete namespace {}: {e}", self.name);
        }
    }
}

fn rand_suffix() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.finish() as u32
}

/// Polls `probe` every 250 ms until it returns `Ok`, or panics after `timeout` with `what`
/// and the probe's last description of the state it saw.
pub(crate) async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    loop {
        match probe().await {
            Ok(value) => return value,
            Err(state) if start.elapsed() >= timeout => {
                panic!("timed out after {timeout:?} waiting for {what}; last seen: {state}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// The Prometheus the tests query: `SERIN_PROMETHEUS_URL`, else the local one (started once).
pub(crate) fn prometheus_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| match std::env::var("SERIN_PROMETHEUS_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => {
            hack("prometheus.sh", &["up"]);
            hack("prometheus.sh", &["url"]).trim().to_string()
        }
    })
}

/// A scrape target registered with the local Prometheus (file-based discovery) for as long
/// as the value lives.
pub(crate) struct ScrapeTarget {
    file: PathBuf,
}

impl ScrapeTarget {
    pub(crate) fn register(name: &str, address: &str) -> Self {
        prometheus_url();
        let dir = repo_root().join(".serin/prometheus/targets");
        std::fs::create_dir_all(&dir).expect("targets dir");
        let file = dir.join(format!("{name}.json"));
        let tmp = dir.join(format!(".{name}.tmp"));
        let body = serde_json::json!([{ "targets": [address] }]).to_string();
        std::fs::write(&tmp, body).expect("write target");
        std::fs::rename(&tmp, &file).expect("publish target");
        ScrapeTarget { file }
    }
}

impl Drop for ScrapeTarget {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
    }
}

/// One instant query against the Prometheus HTTP API; the first sample's value, if any.
/// The value of an instant query in the local Prometheus, 0 when it has no sample; panics
/// when Prometheus fails.
pub(crate) async fn prometheus_value(promql: &str) -> f64 {
    prometheus_query(promql)
        .await
        .unwrap_or_else(|e| panic!("{promql}: {e}"))
        .unwrap_or(0.0)
}

pub(crate) async fn prometheus_query(query: &str) -> Result<Option<f64>, String> {
    let url = format!("{}/api/v1/query", prometheus_url());
    // reqwest is built without a crypto provider of its own: Serin installs ring explicitly.
    serin::server::install_crypto_provider();
    let body: serde_json::Value = reqwest::Client::new()
        .get(url)
        .query(&[("query", query)])
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    if body["status"] != "success" {
        return Err(format!("query failed: {body}"));
    }
    Ok(body["data"]["result"][0]["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok()))
}

/// Makes sure Serin's webhook runs and is registered (`hack/serin.sh up`, once per test
/// binary) unless `KUBECONFIG` points at a cluster where Serin is installed already.
pub(crate) fn serin() {
    static UP: OnceLock<()> = OnceLock::new();
    UP.get_or_init(|| {
        kubeconfig();
        if std::env::var_os("KUBECONFIG").is_none() {
            hack("serin.sh", &["up"]);
        }
    });
}

/// Makes sure the traffic simulator runs and Prometheus scrapes it (`hack/simulator.sh up`,
/// once per test binary) unless `KUBECONFIG` points at a cluster whose mesh makes the traffic.
pub(crate) fn simulator() {
    static UP: OnceLock<()> = OnceLock::new();
    UP.get_or_init(|| {
        kubeconfig();
        prometheus_url();
        if std::env::var_os("KUBECONFIG").is_none() {
            hack("simulator.sh", &["up"]);
        }
    });
}

/// Everything a release needs, as `make up` starts it: the cluster, Prometheus, Serin
/// (webhooks and controller, with the SMI and Serin CRDs installed) and the traffic
/// simulator. With `KUBECONFIG` set, all of it must be there already.
pub(crate) fn release_environment() {
    serin();
    simulator();
}

/// A test namespace with Serin running (webhooks and controller) and a client.
pub(crate) async fn serin_namespace(prefix: &str) -> (Client, TestNamespace) {
    serin();
    let client = client().await;
    let ns = TestNamespace::create(&client, prefix).await;
    (client, ns)
}

/// A test namespace in the environment a release needs ([`release_environment`]) and a
/// client.
pub(crate) async fn release_namespace(prefix: &str) -> (Client, TestNamespace) {
    release_environment();
    let client = client().await;
    let ns = TestNamespace::create(&client, prefix).await;
    (client, ns)
}

/// A one-replica Deployment `name` selecting `app: <app>`, with `annotations`, as plain YAML.
pub(crate) fn plain_deployment(
    ns: &str,
    name: &str,
    app: &str,
    annotations: &[(&str, &str)],
) -> String {
    deployment_yaml(ns, name, app, 1, annotations)
}

/// A Deployment `name` of `replicas` selecting `app: <app>`, with `annotations`, as plain YAML.
pub(crate) fn deployment_yaml(
    ns: &str,
    name: &str,
    app: &str,
    replicas: u32,
    annotations: &[(&str, &str)],
) -> String {
    let mut text = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\n  namespace: {ns}\n"
    );
    if !annotations.is_empty() {
        text.push_str("  annotations:\n");
        for (key, value) in annotations {
            text.push_str(&format!("    {key}: {value:?}\n"));
        }
    }
    text.push_str(&format!(
        "spec:\n  replicas: {replicas}\n  selector: {{matchLabels: {{app: {app}}}}}\n  template:\n    metadata: {{labels: {{app: {app}}}}}\n    spec:\n      containers: [{{name: app, image: \"example.invalid/app:1\", ports: [{{containerPort: 8080}}]}}]\n"
    ));
    text
}

/// A Deployment `name` of `replicas` pods selecting `app: <name>`, whose template carries
/// `annotations`, as a typed object.
pub(crate) fn typed_deployment(
    name: &str,
    replicas: i32,
    annotations: &[(&str, &str)],
) -> Deployment {
    let annotations: serde_json::Map<_, _> = annotations
        .iter()
        .map(|(k, v)| ((*k).to_owned(), serde_json::json!(v)))
        .collect();
    serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": name },
        "spec": {
            "replicas": replicas,
            "selector": { "matchLabels": { "app": name } },
            "template": {
                "metadata": { "labels": { "app": name }, "annotations": annotations },
                "spec": { "containers": [{
                    "name": "app",
                    "image": "example.invalid/app:1",
                    "ports": [{ "containerPort": 8080, "name": "http" }]
                }] }
            }
        }
    }))
    .expect("valid Deployment")
}

/// Serin's admin address (local environment only).
pub(crate) fn serin_admin_url() -> String {
    let port = std::fs::read_to_string(repo_root().join(".serin/serin/admin-port"))
        .expect("serin admin port (is the local environment up?)");
    format!("http://127.0.0.1:{}", port.trim())
}

/// The `serin_canary_*` series of the canary `ns/name` on Serin's admin port (local
/// environment only), keyed by the series without its `namespace` and `name` labels: `serin_canary_weight`,
/// `serin_canary_phase{phase="Succeeded"}`, ...
pub(crate) async fn canary_series(ns: &str, name: &str) -> std::collections::BTreeMap<String, f64> {
    serin::server::install_crypto_provider();
    let text = reqwest::get(format!("{}/metrics", serin_admin_url()))
        .await
        .expect("serin /metrics")
        .text()
        .await
        .expect("metrics text");
    let labels = format!(r#"namespace="{ns}",name="{name}""#);
    text.lines()
        .filter(|l| l.starts_with("serin_canary_"))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (family, rest) = series.split_once('{')?;
            let rest = rest.strip_prefix(labels.as_str())?;
            let rest = rest.trim_start_matches(',').trim_end_matches('}');
            let key = match rest.is_empty() {
                true => family.to_owned(),
                false => format!("{family}{{{rest}}}"),
            };
            Some((key, value.parse().ok()?))
        })
        .collect()
}

/// Serves the app `make_app` builds on a free loopback port and registers it with the local
/// Prometheus under a name made of `prefix` and the port. The name, unique per run, is given
/// to `make_app` (to use as a label value) and returned with the registration, which ends
/// when dropped.
pub(crate) async fn serve_scraped(
    prefix: &str,
    make_app: impl FnOnce(&str) -> axum::Router,
) -> (String, ScrapeTarget) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind exporter");
    let address = listener.local_addr().expect("local addr");
    let name = format!("{prefix}-{}", address.port());
    let app = make_app(&name);
    tokio::spawn(async move { axum::serve(listener, app).await.expect("exporter serves") });
    let target = ScrapeTarget::register(&name, &address.to_string());
    (name, target)
}

/// Serves `app` on a free loopback port; returns its base URL (`http://127.0.0.1:PORT/`).
pub(crate) async fn serve_on_loopback(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    url
}

/// Waits until Prometheus holds 8 scrapes (1 s apart) of `series` within 10 s, so that a
/// `rate()` over a 5 s window is not skewed by the series having just started.
pub(crate) async fn wait_for_scrapes(series: &str) {
    let samples = format!("count_over_time({series}[10s])");
    wait_until(
        &format!("Prometheus to scrape {series} 8 times"),
        Duration::from_secs(60),
        || async {
            match prometheus_query(&samples).await? {
                Some(n) if n >= 8.0 => Ok(()),
                other => Err(format!("{samples} = {other:?}")),
            }
        },
    )
    .await;
}
