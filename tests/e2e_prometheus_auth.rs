//! An AnalysisTemplate whose metric asks a Prometheus that wants credentials, on the real
//! local environment: a second Debian Prometheus, started by the test with its own
//! `--web.config.file` (TLS with a serving certificate made here, basic auth, and client
//! certificates signed by a CA made here), scraping the same simulator targets as the local
//! one. The metric names a Secret (`secretRef`) with `username`, `password`, `ca.crt`,
//! `tls.crt` and `tls.key`; the local Serin (which may read Secrets: the local environment
//! tracks them) reads it when the checks run. The flags of the builtin checks are taken to
//! the same Prometheus.

mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kube::Client;
use serin::analysis::credentials::Origin;
use serin::analysis::{Credentials, PrometheusClient};
use serin::release::Phase;
use support::release::{Version, apply, canary, events, image, last_checks, manifest, wait_phase};
use support::scenarios::{self, Route};
use support::wait_until;

const RELEASE: Duration = Duration::from_secs(120);
const USERNAME: &str = "serin";
const PASSWORD: &str = "e2e-correct-horse";
/// bcrypt (cost 4) of [`PASSWORD`], as Prometheus' web config wants it; made with Python's
/// `crypt.crypt(PASSWORD, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))`.
const PASSWORD_BCRYPT: &str = "$2b$04$/s7iAgjQD1RMw1uWcM.VmuLi2MFijVAgdL2LruQBviuqloPTZSzgm";

/// A Prometheus behind TLS, basic auth and client certificates, killed on drop.
struct SecurePrometheus {
    child: Child,
    base: String,
    ca_pem: String,
    client_cert_pem: String,
    client_key_pem: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl SecurePrometheus {
    fn start() -> Self {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa,
            KeyPair,
        };
        let dir = tempfile::Builder::new()
            .prefix("secure-prometheus")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .expect("temp dir");
        let path = |name: &str| dir.path().join(name);
        let serving = serin::certs::generate(&serin::certs::CertOptions::default())
            .expect("serving certificate");
        let mut ca_params = CertificateParams::default();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        let client_ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key"))
            .expect("client CA");
        let mut client_params = CertificateParams::new(vec!["serin".to_owned()]).expect("params");
        client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_key = KeyPair::generate().expect("key");
        let client_cert = client_params
            .signed_by(&client_key, &client_ca)
            .expect("client certificate");
        std::fs::write(path("tls.crt"), &serving.cert_pem).expect("write");
        std::fs::write(path("tls.key"), &serving.key_pem).expect("write");
        std::fs::write(path("client-ca.crt"), client_ca.as_ref().pem()).expect("write");
        std::fs::write(
            path("web.yml"),
            format!(
                "tls_server_config:\n  cert_file: {}\n  key_file: {}\n  client_auth_type: \
                 RequireAndVerifyClientCert\n  client_ca_file: {}\nbasic_auth_users:\n  \
                 {USERNAME}: '{PASSWORD_BCRYPT}'\n",
                path("tls.crt").display(),
                path("tls.key").display(),
                path("client-ca.crt").display(),
            ),
        )
        .expect("write");
        // The simulator's exporters, as the local Prometheus finds them.
        support::prometheus_url();
        let targets = support::repo_root().join(".serin/prometheus/targets");
        std::fs::write(
            path("prometheus.yml"),
            format!(
                "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nscrape_configs:\n- \
                 job_name: serin-local\n  honor_labels: true\n  file_sd_configs:\n  - files: \
                 ['{}/*.json']\n    refresh_interval: 1s\n",
                targets.display()
            ),
        )
        .expect("write");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let binary = support::hack("prometheus.sh", &["bin"]).trim().to_owned();
        let log = path("prometheus.log");
        let child = Command::new(binary)
            .arg(format!(
                "--config.file={}",
                path("prometheus.yml").display()
            ))
            .arg(format!("--web.config.file={}", path("web.yml").display()))
            .arg(format!("--storage.tsdb.path={}", path("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("start prometheus");
        SecurePrometheus {
            child,
            base: format!("https://127.0.0.1:{port}"),
            ca_pem: serving.ca_pem,
            client_cert_pem: client_cert.pem(),
            client_key_pem: client_key.serialize_pem(),
            log,
            _dir: dir,
        }
    }

    /// The Secret's keys, with `password`.
    fn secret_keys(&self, password: &str) -> Vec<(&'static str, String)> {
        vec![
            ("username", USERNAME.to_owned()),
            ("password", password.to_owned()),
            ("ca.crt", self.ca_pem.clone()),
            ("tls.crt", self.client_cert_pem.clone()),
            ("tls.key", self.client_key_pem.clone()),
        ]
    }

    /// Waits until it answers the right credentials with 8 scrapes of the simulator (1 s
    /// apart), so that a rate over a 5 s window is sound.
    async fn wait_ready(&self) {
        let keys = self
            .secret_keys(PASSWORD)
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.into_bytes()))
            .collect();
        let origin = Origin::Secret {
            namespace: "test".into(),
            name: "test".into(),
        };
        let credentials = Credentials::from_keys(&origin, &keys).expect("credentials");
        let client = PrometheusClient::new(
            serin::analysis::http::client().expect("client"),
            "https://unused.invalid",
        );
        let query = "max(count_over_time(up[10s]))";
        wait_until(
            "the secure Prometheus to scrape the simulator 8 times",
            Duration::from_secs(90),
            || async {
                match client.query_with(&self.base, &credentials, query).await {
                    Ok(Some(n)) if n >= 8.0 => Ok(()),
                    other => Err(format!("{other:?}; log: {}", tail(&self.log))),
                }
            },
        )
        .await;
    }
}

impl Drop for SecurePrometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tail(log: &std::path::Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join("\n")
}

/// The Secret `name` holding `keys`, as YAML (`stringData`).
fn secret(ns: &str, name: &str, keys: &[(&str, String)]) -> String {
    let data: String = keys
        .iter()
        .map(|(k, v)| {
            format!(
                "  {k}: {}\n",
                serde_json::to_string(v).expect("JSON string")
            )
        })
        .collect();
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {ns}}}\nstringData:\n{data}"
    )
}

/// The template `checks`: the builtin success rate asked at `address` with the credentials
/// of Secret `prom-auth`.
fn template(ns: &str, address: &str) -> String {
    format!(
        r#"apiVersion: serin.dev/v1beta1
kind: AnalysisTemplate
metadata: {{name: checks, namespace: {ns}}}
spec:
  metrics:
  - name: request-success-rate
    thresholdRange: {{min: 99}}
    address: "{address}"
    secretRef: {{name: prom-auth}}
"#
    )
}

const EXTRA: [(&str, &str); 2] = [
    ("serin.dev/analysis", "checks"),
    ("serin.dev/threshold", "2"),
];

/// Opts `web` in with the template, then applies v2.
async fn release_v2(client: &Client, ns: &str) {
    scenarios::opt_in(client, ns, "web", &Route::SMI, &EXTRA).await;
    apply(&manifest(ns, "web", &Version::good("v2"), &EXTRA));
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn a_release_measured_on_a_prometheus_behind_tls_basic_auth_and_client_certificates_is_promoted()
 {
    let (client, ns) = support::release_namespace("promauth-good").await;
    let ns = &ns.name;
    let prometheus = SecurePrometheus::start();
    prometheus.wait_ready().await;
    apply(&secret(ns, "prom-auth", &prometheus.secret_keys(PASSWORD)));
    apply(&template(ns, &prometheus.base));
    release_v2(&client, ns).await;
    // The values the check measured on the way, read from the Canary's status.
    let mut measured = Vec::new();
    let start = std::time::Instant::now();
    loop {
        let checks = last_checks(&client, ns, "web").await;
        if let Some((_, Some(value))) = checks.iter().find(|(n, _)| n == "request-success-rate") {
            measured.push(*value);
        }
        let status = canary(&client, ns, "web").await.and_then(|c| c.status);
        if matches!(
            status.map(|s| s.release.phase),
            Some(Phase::Succeeded | Phase::Failed)
        ) {
            break;
        }
        assert!(
            start.elapsed() < RELEASE,
            "timed out; measured {measured:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let events = events(&client, ns, "web").await.join("\n");
    let phase = canary(&client, ns, "web")
        .await
        .and_then(|c| c.status)
        .map(|s| s.release.phase);
    assert_eq!(phase, Some(Phase::Succeeded), "events:\n{events}");
    assert_eq!(
        image(&client, ns, "web-primary").await,
        "example.invalid/web:v2"
    );
    assert!(
        measured.iter().any(|v| *v >= 99.0),
        "the success rate was measured on the secure Prometheus: {measured:?}"
    );
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn a_wrong_password_fails_the_checks_naming_the_secret_and_never_its_value() {
    let (client, ns) = support::release_namespace("promauth-wrong").await;
    let ns = &ns.name;
    let prometheus = SecurePrometheus::start();
    prometheus.wait_ready().await;
    const WRONG: &str = "e2e-wrong-horse";
    apply(&secret(ns, "prom-auth", &prometheus.secret_keys(WRONG)));
    apply(&template(ns, &prometheus.base));
    release_v2(&client, ns).await;
    let failed = wait_phase(&client, ns, "web", Phase::Failed, RELEASE).await;
    assert_eq!(
        image(&client, ns, "web-primary").await,
        "example.invalid/web:v1"
    );
    let events = events(&client, ns, "web").await.join("\n");
    assert!(
        events.contains("HTTP 401")
            && events.contains("with the credentials of Secret \"prom-auth\""),
        "the refusal and the Secret are named:\n{events}"
    );
    let status = serde_json::to_string(&failed.status).expect("JSON");
    // The local Serin's log too (absent when the tests run against another cluster).
    let log = std::fs::read_to_string(support::repo_root().join(".serin/serin/serin.log"))
        .unwrap_or_default();
    for (what, text) in [
        ("Events", &events),
        ("status", &status),
        ("Serin's log", &log),
    ] {
        assert!(!text.contains(WRONG), "the password leaked into the {what}");
    }
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn a_missing_secret_fails_the_checks_with_an_event_that_names_it() {
    let (client, ns) = support::release_namespace("promauth-missing").await;
    let ns = &ns.name;
    // Admission first: credentials are never for a plain http:// address.
    let (ok, _, stderr) = support::kubectl(
        &["apply", "-f", "-"],
        Some(&template(ns, "http://127.0.0.1:9")),
    );
    assert!(
        !ok && stderr.contains(
            "spec.metrics[0].address: \"http://127.0.0.1:9\" would carry the credentials of \
             spec.metrics[0].secretRef in clear; credentials are sent only over https://"
        ),
        "{stderr}"
    );
    // Nothing listens there: the check fails before any query, on the Secret.
    apply(&template(ns, "https://127.0.0.1:9"));
    release_v2(&client, ns).await;
    wait_phase(&client, ns, "web", Phase::Failed, RELEASE).await;
    let events = events(&client, ns, "web").await.join("\n");
    assert!(
        events.contains(&format!(
            "Secret {ns}/prom-auth does not exist (it is named in the metric's secretRef)"
        )),
        "{events}"
    );
}

/// The builtin checks' door: `serin controller`'s `--prometheus-*` flags, parsed as the
/// binary parses them, give the client the controller builds its checks with. (A second
/// running controller would race the local Serin for every release, so the flags are taken
/// through the same functions, not through a second process.)
#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn the_flags_of_the_builtin_checks_reach_the_secure_prometheus_and_a_rotated_password_file_is_used_at_once()
 {
    use clap::Parser;
    let prometheus = SecurePrometheus::start();
    prometheus.wait_ready().await;
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");
    let file = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path.display().to_string()
    };
    let password = file("password", "e2e-wrong-horse\n");
    let args = [
        "serin".to_owned(),
        "controller".to_owned(),
        format!("--prometheus-url={}", prometheus.base),
        format!("--prometheus-username={USERNAME}"),
        format!("--prometheus-password-file={password}"),
        format!(
            "--prometheus-ca-file={}",
            file("ca.crt", &prometheus.ca_pem)
        ),
        format!(
            "--prometheus-client-cert={}",
            file("tls.crt", &prometheus.client_cert_pem)
        ),
        format!(
            "--prometheus-client-key={}",
            file("tls.key", &prometheus.client_key_pem)
        ),
    ];
    let serving = match serin::cli::Cli::try_parse_from(&args)
        .expect("flags")
        .command
    {
        serin::cli::Command::Controller(serving) => serving,
        other => panic!("parsed as {other:?}"),
    };
    let files = serving.prometheus_credentials().expect("usable at start");
    let client = PrometheusClient::new(
        serin::analysis::http::client().expect("client"),
        &serving.prometheus_url,
    )
    .with_credentials(files);
    let refused = client.query(None, "vector(1)").await.expect_err("refused");
    let message = refused.to_string();
    assert!(message.contains("HTTP 401"), "{message}");
    assert!(!message.contains("e2e-wrong-horse"), "{message}");
    // The Secret behind the file is corrected: the next query uses it, without a restart.
    std::fs::write(&password, format!("{PASSWORD}\n")).expect("rotate");
    assert_eq!(client.query(None, "vector(1)").await, Ok(Some(1.0)));
    // A metric's own address never gets the flags' credentials.
    let elsewhere = client.query(Some(&prometheus.base), "vector(1)").await;
    assert!(elsewhere.is_err(), "{elsewhere:?}");
}
