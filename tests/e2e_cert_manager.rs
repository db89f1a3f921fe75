//! `manifests/overlays/cert-manager` against a real cert-manager (issue 17, item 3): the
//! local build of cert-manager's library (`hack/cert-manager.sh`: its controller and
//! cainjector on the host, its CRDs from the module) issues the overlay's Certificates, the
//! cainjector copies the CA into the webhook configurations and the CRDs' conversion
//! settings, and a renewal (an `Issuing` condition, as `cmctl renew` sets) brings a new pair
//! under the same CA, so no `caBundle` changes.
//!
//! Isolation: the other e2e tests share the host Serin, whose `serin` webhook configurations
//! and `serin.dev` CRDs must keep their own `caBundle`s. So the overlay is rendered as a user
//! renders it (base + Component) and its objects are then moved out of the way before they
//! are applied: the Issuers and Certificates go into the test's namespace; the two webhook
//! configurations and the three CRDs get names of their own (the namespace's name; the CRDs
//! the API group `<namespace>.e2e.serin.dev`) and an `inject-ca-from` that names the test's
//! Certificate. Their webhooks keep everything the overlay rendered but an `objectSelector`
//! no object matches (and `failurePolicy: Ignore`), so the API server never calls them. The
//! Certificates keep the overlay's DNS names (`serin.serin-system.svc`), which the test
//! checks; nothing resolves them.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{Value, json};

use support::kustomize::{NAMESPACE, manifests_dir, parse_documents, render_with_components};
use support::{TestNamespace, hack, kubectl, wait_until};

const ANNOTATION: &str = "cert-manager.io/inject-ca-from";
const SERVING_CERTIFICATE: &str = "serin-serving";
const CA_CERTIFICATE: &str = "serin-ca";
const SERVING_SECRET: &str = "serin-tls";
const DNS_NAMES: [&str; 2] = [
    "serin.serin-system.svc",
    "serin.serin-system.svc.cluster.local",
];
/// A label no object carries: the copies' webhooks are never called.
const NEVER_MATCHES: &str = "serin.dev/e2e-cert-manager-never-matches";

/// Cluster-scoped copies this test created, deleted when it ends (pass or fail).
struct ClusterScoped(Vec<(String, String)>);

impl Drop for ClusterScoped {
    fn drop(&mut self) {
        if std::env::var_os("SERIN_E2E_KEEP").is_some() {
            return;
        }
        for (kind, name) in &self.0 {
            let (ok, _, stderr) = kubectl(
                &["delete", kind, name, "--ignore-not-found", "--wait=false"],
                None,
            );
            if !ok {
                eprintln!("warning: could not delete {kind} {name}: {stderr}");
            }
        }
    }
}

fn get_json(args: &[&str]) -> Result<Value, String> {
    let mut full = vec!["get"];
    full.extend_from_slice(args);
    full.extend_from_slice(&["-o", "json"]);
    match kubectl(&full, None) {
        (true, stdout, _) => serde_json::from_str(&stdout).map_err(|e| e.to_string()),
        (false, _, stderr) => Err(stderr),
    }
}

fn apply(objects: &[Value]) {
    let list = json!({"apiVersion": "v1", "kind": "List", "items": objects}).to_string();
    let (ok, _, stderr) = kubectl(
        &[
            "apply",
            "--server-side",
            "--field-manager=e2e-cert-manager",
            "-f",
            "-",
        ],
        Some(&list),
    );
    assert!(ok, "the API server refused the overlay's objects: {stderr}");
}

/// The overlay's objects, moved out of the shared Serin's way (module doc): the Issuers and
/// Certificates, the two webhook configurations and the CRDs.
struct Copies {
    issuance: Vec<Value>,
    injectables: Vec<Value>,
    /// (kind, name) of each injectable
    names: Vec<(String, String)>,
}

fn isolated_copies(rendered: &[Value], ns: &str) -> Copies {
    let group = format!("{ns}.e2e.serin.dev");
    let mut copies = Copies {
        issuance: Vec::new(),
        injectables: Vec::new(),
        names: Vec::new(),
    };
    for object in rendered {
        let kind = object["kind"].as_str().unwrap_or_default();
        let mut copy = object.clone();
        match kind {
            "Issuer" | "Certificate" => {
                assert_eq!(object["metadata"]["namespace"], NAMESPACE, "{object}");
                copy["metadata"]["namespace"] = json!(ns);
                copies.issuance.push(copy);
                continue;
            }
            "ValidatingWebhookConfiguration" | "MutatingWebhookConfiguration" => {
                copy["metadata"]["name"] = json!(ns);
                let webhooks = copy["webhooks"].as_array_mut().expect("webhooks");
                assert!(!webhooks.is_empty(), "{kind} has no webhook");
                for webhook in webhooks {
                    webhook["objectSelector"] = json!({"matchLabels": {NEVER_MATCHES: "true"}});
                    webhook["failurePolicy"] = json!("Ignore");
                }
            }
            "CustomResourceDefinition" => {
                let plural = object["spec"]["names"]["plural"].as_str().expect("plural");
                copy["metadata"]["name"] = json!(format!("{plural}.{group}"));
                copy["spec"]["group"] = json!(group);
                // Copies must not answer to the real kinds' short names or categories.
                let names = copy["spec"]["names"].as_object_mut().expect("names");
                names.remove("shortNames");
                names.remove("categories");
            }
            _ => continue,
        }
        // Every injectable the overlay renders names the serving Certificate of the base's
        // namespace; the copy names the test's.
        assert_eq!(
            object["metadata"]["annotations"][ANNOTATION],
            format!("{NAMESPACE}/{SERVING_CERTIFICATE}"),
            "{kind} {} lacks the overlay's {ANNOTATION}",
            object["metadata"]["name"]
        );
        copy["metadata"]["annotations"][ANNOTATION] = json!(format!("{ns}/{SERVING_CERTIFICATE}"));
        copies.names.push((
            kind.to_lowercase(),
            copy["metadata"]["name"].as_str().expect("name").to_owned(),
        ));
        copies.injectables.push(copy);
    }
    copies
}

/// The caBundles now published on the copies: one per webhook and one per CRD, with where
/// each came from.
fn published_bundles(names: &[(String, String)]) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut bundles = Vec::new();
    for (kind, name) in names {
        let object = get_json(&[kind, name])?;
        let encoded: Vec<(String, &Value)> = if kind == "customresourcedefinition" {
            vec![(
                format!("{kind} {name} conversion"),
                &object["spec"]["conversion"]["webhook"]["clientConfig"]["caBundle"],
            )]
        } else {
            object["webhooks"]
                .as_array()
                .ok_or_else(|| format!("{kind} {name}: no webhooks"))?
                .iter()
                .map(|w| {
                    (
                        format!("{kind} {name} webhook {}", w["name"]),
                        &w["clientConfig"]["caBundle"],
                    )
                })
                .collect()
        };
        for (place, value) in encoded {
            let bytes = match value.as_str() {
                Some(b64) => base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .map_err(|e| format!("{place}: caBundle is not base64: {e}"))?,
                None => Vec::new(),
            };
            bundles.push((place, bytes));
        }
    }
    Ok(bundles)
}

fn all_equal(bundles: &[(String, Vec<u8>)], ca: &[u8]) -> Result<(), String> {
    match bundles.iter().find(|(_, b)| b != ca) {
        None => Ok(()),
        Some((place, b)) if b.is_empty() => Err(format!("{place}: no caBundle yet")),
        Some((place, _)) => Err(format!("{place}: caBundle differs from the CA")),
    }
}

/// The Secret's `tls.crt`, `tls.key` and `ca.crt`.
fn serving_pair(ns: &str) -> Result<[Vec<u8>; 3], String> {
    let secret = get_json(&["secret", "-n", ns, SERVING_SECRET])?;
    let field = |key: &str| -> Result<Vec<u8>, String> {
        let b64 = secret["data"][key]
            .as_str()
            .ok_or_else(|| format!("Secret {SERVING_SECRET} has no {key}"))?;
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| e.to_string())
    };
    Ok([field("tls.crt")?, field("tls.key")?, field("ca.crt")?])
}

fn certificate_status(ns: &str, name: &str) -> Result<(bool, u64), String> {
    let cert = get_json(&["certificate", "-n", ns, name])?;
    let ready = cert["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True");
    Ok((ready, cert["status"]["revision"].as_u64().unwrap_or(0)))
}

/// A TLS handshake on loopback: a server with the Secret's pair, a client that trusts only
/// `bundle` and asks for `name` (SNI and name check), as the API server does when it calls
/// the webhook through the Service. Proves the key matches the certificate, the certificate
/// chains to the bundle and carries the name.
async fn handshake(pair: &[Vec<u8>; 3], bundle: &[u8], name: &str) -> Result<(), String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pair[0])
        .collect::<Result<_, _>>()
        .map_err(|e| format!("tls.crt is not PEM: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(&pair[1]).map_err(|e| format!("tls.key: {e}"))?;
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("the Secret's pair does not load: {e}"))?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(bundle) {
        roots
            .add(ca.map_err(|e| format!("caBundle is not PEM: {e}"))?)
            .map_err(|e| format!("caBundle: {e}"))?;
    }
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let served = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
        acceptor
            .accept(tcp)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let server_name = ServerName::try_from(name.to_owned()).map_err(|e| e.to_string())?;
    let connected = tokio_rustls::TlsConnector::from(Arc::new(client))
        .connect(server_name, tcp)
        .await;
    let accepted = tokio::time::timeout(Duration::from_secs(5), served).await;
    connected.map_err(|e| format!("handshake for {name} with the caBundle: {e}"))?;
    match accepted {
        Ok(Ok(Ok(()))) => Ok(()),
        other => Err(format!("server side of the handshake: {other:?}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn cert_manager_issues_the_overlays_certificates_injects_the_ca_and_renews_under_the_same_ca()
{
    serin::server::install_crypto_provider();
    hack("cert-manager.sh", &["up"]);
    let client = support::client().await;
    let ns = TestNamespace::create(&client, "cm").await;

    let rendered = render_with_components(&[&manifests_dir().join("overlays/cert-manager")])
        .unwrap_or_else(|e| panic!("{e}"));
    let copies = isolated_copies(&parse_documents(&rendered), &ns.name);
    let kinds = |objects: &[Value]| -> Vec<String> {
        let mut k: Vec<String> = objects
            .iter()
            .map(|o| o["kind"].as_str().unwrap_or_default().to_owned())
            .collect();
        k.sort();
        k
    };
    assert_eq!(
        kinds(&copies.issuance),
        ["Certificate", "Certificate", "Issuer", "Issuer"],
        "the overlay's two Issuers and two Certificates"
    );
    assert_eq!(
        kinds(&copies.injectables),
        [
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "MutatingWebhookConfiguration",
            "ValidatingWebhookConfiguration"
        ],
        "the overlay annotates both webhook configurations and Serin's three CRDs"
    );
    let _cleanup = ClusterScoped(copies.names.clone());

    // The injectables first: they wait, unannotated by any CA, until the Certificate exists.
    apply(&copies.injectables);
    let applied = Instant::now();
    apply(&copies.issuance);

    let serving_revision = wait_until(
        "both Certificates Ready",
        Duration::from_secs(60),
        || async {
            let (ca_ready, _) = certificate_status(&ns.name, CA_CERTIFICATE)?;
            let (ready, revision) = certificate_status(&ns.name, SERVING_CERTIFICATE)?;
            if ca_ready && ready {
                Ok(revision)
            } else {
                Err(format!(
                    "Ready: {CA_CERTIFICATE} {ca_ready}, {SERVING_CERTIFICATE} {ready}"
                ))
            }
        },
    )
    .await;
    let to_ready = applied.elapsed();

    let pair = serving_pair(&ns.name).unwrap_or_else(|e| panic!("{e}"));
    let ca = pair[2].clone();
    // ca.crt is the CA Certificate's own certificate, not the self-signed root Issuer's
    // leaf nor the serving certificate.
    let ca_secret = get_json(&["secret", "-n", &ns.name, CA_CERTIFICATE]).expect("CA Secret");
    let ca_cert = base64::engine::general_purpose::STANDARD
        .decode(ca_secret["data"]["tls.crt"].as_str().expect("CA tls.crt"))
        .expect("base64");
    assert_eq!(
        ca, ca_cert,
        "ca.crt of {SERVING_SECRET} is the CA {CA_CERTIFICATE}"
    );
    assert_ne!(pair[0], ca, "the serving certificate is not the CA");

    wait_until(
        "the CA in every caBundle of the copies",
        Duration::from_secs(60),
        || async { all_equal(&published_bundles(&copies.names)?, &ca) },
    )
    .await;
    let to_injected = applied.elapsed();
    println!(
        "measured: Certificates Ready {:.2}s and every caBundle injected {:.2}s after applying them",
        to_ready.as_secs_f64(),
        to_injected.as_secs_f64()
    );

    // What the API server would do: trust the caBundle it was given, check the name.
    let bundle = published_bundles(&copies.names).expect("bundles")[0]
        .1
        .clone();
    for name in DNS_NAMES {
        handshake(&pair, &bundle, name)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    assert!(
        handshake(&pair, &bundle, "serin.other-namespace.svc")
            .await
            .is_err(),
        "the certificate must not be valid for a name the overlay does not ask for"
    );

    // Renewal the way `cmctl renew` asks for one: an Issuing condition on the status.
    let issuing = json!([{"op": "add", "path": "/status/conditions/-", "value": {
        "type": "Issuing", "status": "True", "reason": "ManuallyTriggered",
        "message": "renewal requested by e2e_cert_manager",
        "lastTransitionTime": k8s_openapi::jiff::Timestamp::now().round(k8s_openapi::jiff::Unit::Second).expect("rounds").to_string(),
    }}])
    .to_string();
    let renew_asked = Instant::now();
    let (ok, _, stderr) = kubectl(
        &[
            "patch",
            "certificate",
            SERVING_CERTIFICATE,
            "-n",
            &ns.name,
            "--subresource=status",
            "--type=json",
            "-p",
            &issuing,
        ],
        None,
    );
    assert!(ok, "setting the Issuing condition: {stderr}");
    let renewed = wait_until(
        "a new serving pair after the Issuing condition",
        Duration::from_secs(60),
        || async {
            let (ready, revision) = certificate_status(&ns.name, SERVING_CERTIFICATE)?;
            let now = serving_pair(&ns.name)?;
            if ready && revision > serving_revision && now[0] != pair[0] {
                Ok(now)
            } else {
                Err(format!("Ready {ready}, revision {revision}"))
            }
        },
    )
    .await;
    println!(
        "measured: renewal served {:.2}s after the Issuing condition",
        renew_asked.elapsed().as_secs_f64()
    );
    assert_ne!(
        renewed[1], pair[1],
        "rotationPolicy Always: a new private key"
    );
    assert_eq!(renewed[2], ca, "the renewed pair is issued by the same CA");
    for name in DNS_NAMES {
        handshake(&renewed, &bundle, name)
            .await
            .unwrap_or_else(|e| panic!("the renewed pair with the old caBundle: {e}"));
    }
    // The cainjector saw the Secret change; the bundles it publishes must stay as they were.
    let settle = Instant::now();
    while settle.elapsed() < Duration::from_secs(3) {
        let bundles = published_bundles(&copies.names).expect("bundles");
        all_equal(&bundles, &ca).unwrap_or_else(|e| panic!("after the renewal: {e}"));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
