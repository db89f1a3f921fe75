//! Serin in the cluster from its own image (issue 17): the image `hack/image.sh` assembles
//! from what the Dockerfile ships, installed by `kubectl apply -k` of the local overlay
//! `hack/in-cluster.sh` writes over `manifests/` (`make in-cluster`): two replicas on the
//! real node under Pod Security `restricted`, the webhooks and the CRD conversion called by
//! the API server through the `serin` Service, the Lease held by one of the pods, and the
//! shipped RBAC only (the base's: no Secrets).
//!
//! The releases' traffic is the simulator's (their Deployments run on kwok's node); Serin
//! itself, its certificates, its Lease and its RBAC are real. `make test-in-cluster` runs
//! these tests one at a time (they share the installation) after the other e2e tests, and
//! returns to the host's Serin afterwards.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use serin::release::Phase;
use support::release::{Version, apply, events, manifest, release_status, wait_phase};
use support::{TestNamespace, hack, kubectl, repo_root, wait_until};

const NS: &str = "serin-system";
const SELECTOR: &str = "app.kubernetes.io/name=serin";
const RELEASE: Duration = Duration::from_secs(120);

/// `make in-cluster` (idempotent), with extra `SERIN_*` settings for the pods when given.
fn in_cluster(extra_env: &str) {
    install("self-signed", extra_env);
}

/// `hack/in-cluster.sh up` with the certificates from `certs` (`self-signed` or
/// `cert-manager`), by `kubectl apply -k`.
fn install(certs: &str, extra_env: &str) {
    install_with("kustomize", certs, extra_env);
}

/// `hack/in-cluster.sh up` by `installer` (`kustomize` or `helm`).
fn install_with(installer: &str, certs: &str, extra_env: &str) {
    support::kubeconfig();
    support::simulator();
    let status = Command::new(repo_root().join("hack/in-cluster.sh"))
        .arg("up")
        .env("INSTALL", installer)
        .env("CERTS", certs)
        .env("IN_CLUSTER_ENV", extra_env)
        .status()
        .expect("run hack/in-cluster.sh");
    assert!(
        status.success(),
        "hack/in-cluster.sh up ({installer}) failed"
    );
}

async fn serin_pods(client: &Client) -> Vec<Pod> {
    Api::<Pod>::namespaced(client.clone(), NS)
        .list(&ListParams::default().labels(SELECTOR))
        .await
        .expect("list Serin's pods")
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

fn ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn name(pod: &Pod) -> String {
    pod.metadata.name.clone().unwrap_or_default()
}

/// The pod whose process holds the Lease (its identity is `<host name>-<pid>`, and a pod's
/// host name is its name).
fn holder_pod(holder: &str) -> &str {
    holder.rsplit_once('-').map_or(holder, |(pod, _)| pod)
}

/// Waits until both of Serin's replicas are Ready (the Deployment replaced what went).
async fn two_ready_replicas(client: &Client, what: &str) {
    wait_until(what, Duration::from_secs(120), || async {
        match serin_pods(client).await.iter().filter(|p| ready(p)).count() {
            2 => Ok(()),
            n => Err(format!("{n} ready")),
        }
    })
    .await;
}

async fn lease_holder(client: &Client) -> Option<String> {
    Api::<Lease>::namespaced(client.clone(), NS)
        .get_opt("serin-controller")
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
        .filter(|h| !h.is_empty())
}

/// Serin's logs from every pod it runs in.
fn logs() -> String {
    let (_, out, _) = kubectl(
        &["-n", NS, "logs", "-l", SELECTOR, "--tail=-1", "--prefix"],
        None,
    );
    out
}

/// The API server reaches Serin's validating webhook through the Service: an opted-in
/// Deployment with a mistake is refused, naming it.
fn refused_through_the_service(ns: &str) -> Result<(), String> {
    let bad = format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: mistaken
  namespace: {ns}
  annotations: {{serin.dev/enabled: "true", serin.dev/step-weight: "0"}}
spec:
  selector: {{matchLabels: {{app: mistaken}}}}
  template:
    metadata: {{labels: {{app: mistaken}}}}
    spec: {{containers: [{{name: app, image: example.invalid/x:1}}]}}
"#
    );
    let (ok, _, err) = kubectl(&["create", "--dry-run=server", "-f", "-"], Some(&bad));
    match (ok, err.contains("serin.dev/step-weight")) {
        (false, true) => Ok(()),
        _ => Err(format!("not refused by Serin: {err}")),
    }
}

/// The working set of each of Serin's containers, from the kubelet's summary.
fn pod_memory() -> BTreeMap<String, u64> {
    let env = std::fs::read_to_string(repo_root().join(".serin/node/node.env")).expect("node.env");
    let node = env
        .lines()
        .find_map(|l| l.strip_prefix("NODE_NAME="))
        .expect("NODE_NAME");
    let (ok, out, err) = kubectl(
        &[
            "get",
            "--raw",
            &format!("/api/v1/nodes/{node}/proxy/stats/summary"),
        ],
        None,
    );
    assert!(ok, "the kubelet's summary: {err}");
    let summary: Value = serde_json::from_str(&out).expect("summary JSON");
    summary["pods"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["podRef"]["namespace"] == NS)
        .filter_map(|p| {
            Some((
                p["podRef"]["name"].as_str()?.to_owned(),
                p["memory"]["workingSetBytes"].as_u64()?,
            ))
        })
        .collect()
}

fn no_forbidden_answer(logs: &str) {
    let forbidden: Vec<&str> = logs
        .lines()
        // The authorizer's refusal; other 403s (a write into a namespace being deleted) are
        // not about RBAC.
        .filter(|l| l.contains("forbidden: User"))
        .collect();
    assert!(
        forbidden.is_empty(),
        "Serin met a Forbidden answer with the shipped RBAC:\n{}",
        forbidden.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// The image

/// The Dockerfile's final stage, as the image must reproduce it.
#[derive(Debug, Default)]
struct FinalStage {
    user: String,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    exposed: BTreeSet<String>,
    files: BTreeSet<String>,
}

fn final_stage(dockerfile: &str) -> FinalStage {
    let last = dockerfile
        .rsplit_once("\nFROM ")
        .map(|(_, l)| l)
        .expect("a multi-stage Dockerfile");
    assert!(
        last.starts_with("scratch"),
        "the final stage is FROM {last:.20}"
    );
    let mut stage = FinalStage::default();
    let json =
        |rest: &str| -> Vec<String> { serde_json::from_str(rest.trim()).expect("exec form") };
    for line in last.lines() {
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        match word {
            "USER" => stage.user = rest.trim().to_owned(),
            "ENTRYPOINT" => stage.entrypoint = json(rest),
            "CMD" => stage.cmd = json(rest),
            "EXPOSE" => stage
                .exposed
                .extend(rest.split_whitespace().map(|p| format!("{p}/tcp"))),
            "COPY" => {
                let dest = rest.split_whitespace().last().expect("COPY destination");
                stage.files.insert(dest.trim_start_matches('/').to_owned());
            }
            _ => {}
        }
    }
    stage
}

/// A 64-bit ELF without a PT_INTERP header asks for no dynamic loader.
fn is_static_elf(bytes: &[u8]) -> bool {
    assert_eq!(&bytes[..4], b"\x7fELF", "not an ELF file");
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(bytes[0x20..0x28].try_into().expect("8 bytes")) as usize;
    let (size, count) = (u16_at(0x36), u16_at(0x38));
    (0..count).all(|i| {
        let at = phoff + i * size;
        u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) != 3
    })
}

fn untar(archive: &Path, into: &Path) {
    let status = Command::new("tar")
        .arg("-xf")
        .arg(archive)
        .arg("-C")
        .arg(into)
        .status()
        .expect("run tar");
    assert!(status.success(), "tar -xf {}", archive.display());
}

fn blob(layout: &Path, digest: &str) -> std::path::PathBuf {
    layout
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

#[test]
#[ignore = "e2e: needs the local environment (make test-in-cluster)"]
fn the_image_holds_what_the_dockerfile_ships_and_nothing_else() {
    hack("image.sh", &["build"]);
    let root = repo_root();
    let stage = final_stage(&std::fs::read_to_string(root.join("Dockerfile")).expect("Dockerfile"));
    let work = tempfile::tempdir().expect("tempdir");
    let layout = work.path().join("layout");
    std::fs::create_dir(&layout).expect("mkdir");
    untar(&root.join(".serin/image/image.tar"), &layout);

    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).expect("index.json"))
            .expect("index JSON");
    let reference = std::fs::read_to_string(root.join(".serin/image/ref")).expect("ref");
    assert_eq!(
        index["manifests"][0]["annotations"]["io.containerd.image.name"],
        reference.trim()
    );
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(blob(
            &layout,
            index["manifests"][0]["digest"].as_str().expect("digest"),
        ))
        .expect("manifest blob"),
    )
    .expect("manifest JSON");
    let config: Value = serde_json::from_slice(
        &std::fs::read(blob(
            &layout,
            manifest["config"]["digest"].as_str().expect("digest"),
        ))
        .expect("config blob"),
    )
    .expect("config JSON");
    let c = &config["config"];
    assert_eq!(c["User"], stage.user, "USER");
    assert_eq!(c["Entrypoint"], json!(stage.entrypoint), "ENTRYPOINT");
    assert_eq!(c["Cmd"], json!(stage.cmd), "CMD");
    let exposed: BTreeSet<String> = c["ExposedPorts"]
        .as_object()
        .expect("ExposedPorts")
        .keys()
        .cloned()
        .collect();
    assert_eq!(exposed, stage.exposed, "EXPOSE");
    assert_eq!(
        (config["os"].as_str(), config["architecture"].as_str()),
        (Some("linux"), Some("amd64"))
    );

    // One layer, holding the COPY destinations and their directories, nothing else.
    let layers = manifest["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 1, "{layers:?}");
    let rootfs = work.path().join("rootfs");
    std::fs::create_dir(&rootfs).expect("mkdir");
    untar(
        &blob(&layout, layers[0]["digest"].as_str().expect("digest")),
        &rootfs,
    );
    let mut found = BTreeSet::new();
    for entry in walkdir(&rootfs) {
        let relative = entry.strip_prefix(&rootfs).expect("under rootfs");
        if entry.is_file() {
            found.insert(relative.to_string_lossy().into_owned());
        }
    }
    assert_eq!(found, stage.files, "the files of the image");

    let serin = std::fs::read(rootfs.join("usr/local/bin/serin")).expect("serin");
    let plugin = std::fs::read(rootfs.join("usr/local/bin/kubectl-serin")).expect("kubectl-serin");
    assert!(serin == plugin, "kubectl-serin is the same binary as serin");
    assert!(
        is_static_elf(&serin),
        "the binary must be static: the image has no loader"
    );
    let ca = std::fs::read_to_string(rootfs.join("etc/ssl/certs/ca-certificates.crt")).expect("CA");
    assert!(ca.matches("BEGIN CERTIFICATE").count() > 10, "a CA bundle");

    // The product build: no dev tools in it.
    let out = Command::new(rootfs.join("usr/local/bin/serin"))
        .arg("--help")
        .output()
        .expect("run the image's binary");
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && help.contains("run"), "{help}");
    assert!(
        !help.contains("simulate"),
        "the image's binary has the dev tools:\n{help}"
    );
    let size = std::fs::metadata(root.join(".serin/image/image.tar"))
        .expect("image.tar")
        .len();
    println!(
        "image {}: {:.1} MiB uncompressed, binary {:.1} MiB",
        reference.trim(),
        size as f64 / 1048576.0,
        serin.len() as f64 / 1048576.0
    );
}

fn walkdir(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            out.extend(walkdir(&path));
        }
        out.push(path);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The installation

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "e2e: needs the local environment (make test-in-cluster)"]
async fn installed_with_kubectl_apply_k_two_replicas_serve_and_release() {
    in_cluster("");
    let client = support::client().await;

    // Two replicas, Ready, on the real node, in a namespace that enforces `restricted`.
    let pods = serin_pods(&client).await;
    assert_eq!(
        pods.len(),
        2,
        "{:?}",
        pods.iter().map(name).collect::<Vec<_>>()
    );
    for pod in &pods {
        assert!(ready(pod), "{} is not Ready", name(pod));
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        assert!(
            node.as_deref().is_some_and(|n| n.starts_with("real-node")),
            "{} runs on {node:?}",
            name(pod)
        );
    }
    let namespace = Api::<Namespace>::all(client.clone())
        .get(NS)
        .await
        .expect("namespace");
    let labels = namespace.metadata.labels.unwrap_or_default();
    assert_eq!(
        labels
            .get("pod-security.kubernetes.io/enforce")
            .map(String::as_str),
        Some("restricted")
    );
    let holder = lease_holder(&client).await.expect("a Lease holder");
    assert!(
        pods.iter().any(|p| name(p) == holder_pod(&holder)),
        "the Lease is held by {holder}"
    );

    let ns = TestNamespace::create(&client, "incluster").await;
    let ns = &ns.name;
    refused_through_the_service(ns).expect("the validating webhook through the Service");
    good_and_bad_release(&client, ns).await;

    let memory = pod_memory();
    println!("Serin's pods' working set after two releases: {memory:?}");
    assert_eq!(memory.len(), 2, "{memory:?}");
    no_forbidden_answer(&logs());
}

/// A good release is promoted and a bad one rolled back by the pods, and a Canary reads in
/// v1alpha1, converted through the Service.
async fn good_and_bad_release(client: &Client, ns: &str) {
    apply(&manifest(ns, "good", &Version::good("v1"), &[]));
    apply(&manifest(ns, "bad", &Version::good("v1"), &[]));
    wait_phase(client, ns, "good", Phase::Initialized, RELEASE).await;
    wait_phase(client, ns, "bad", Phase::Initialized, RELEASE).await;
    apply(&manifest(ns, "good", &Version::good("v2"), &[]));
    let failing = Version {
        tag: "v2",
        error_rate: 0.5,
        latency_ms: 40,
    };
    apply(&manifest(ns, "bad", &failing, &[]));
    wait_phase(client, ns, "good", Phase::Succeeded, RELEASE).await;
    wait_phase(client, ns, "bad", Phase::Failed, RELEASE).await;
    assert_eq!(
        support::release::image(client, ns, "good-primary").await,
        "example.invalid/good:v2"
    );
    assert_eq!(
        support::release::image(client, ns, "bad-primary").await,
        "example.invalid/bad:v1"
    );

    // Converted through the Service: the Canary read in v1alpha1.
    let (ok, out, err) = kubectl(
        &[
            "-n",
            ns,
            "get",
            "canaries.v1alpha1.serin.dev",
            "good",
            "-o",
            "jsonpath={.apiVersion}",
        ],
        None,
    );
    assert!(ok && out == "serin.dev/v1alpha1", "conversion: {out} {err}");
}

/// The Helm release records of Serin (Secrets Helm labels `owner=helm`), with their status.
fn helm_records() -> Vec<String> {
    let (ok, out, err) = kubectl(
        &[
            "-n",
            NS,
            "get",
            "secrets",
            "-l",
            "owner=helm,name=serin",
            "-o",
            "jsonpath={range .items[*]}{.metadata.labels.status}{\"\\n\"}{end}",
        ],
        None,
    );
    assert!(ok, "{err}");
    out.lines().map(str::to_owned).collect()
}

/// Issue 19 item 7: the chart installs for real, on the real node, taking over what the
/// kustomize install left (as users moving to the chart do), serves reviews and releases
/// with the shipped RBAC; `helm uninstall` removes Serin but keeps its CRDs and every
/// Canary; the kustomize install then takes over again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "e2e: needs the local environment (make test-in-cluster)"]
async fn installed_with_helm_serves_releases_and_uninstalls_keeping_the_canaries() {
    in_cluster("");
    install_with("helm", "self-signed", "");
    let client = support::client().await;
    assert_eq!(helm_records(), ["deployed"], "one deployed Helm release");
    let deployments = Api::<Deployment>::namespaced(client.clone(), NS);
    let serin = deployments.get("serin").await.expect("Deployment serin");
    let labels = serin.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels
            .get("app.kubernetes.io/managed-by")
            .map(String::as_str),
        Some("Helm"),
        "{labels:?}"
    );
    two_ready_replicas(&client, "the chart's pods").await;
    let pods = serin_pods(&client).await;
    for pod in &pods {
        let image = pod.spec.as_ref().map(|s| s.containers[0].image.clone());
        assert!(
            image
                .flatten()
                .is_some_and(|i| i.starts_with("serin.local/serin:")),
            "{} runs another image",
            name(pod)
        );
    }
    let holder = lease_holder(&client).await.expect("a Lease holder");
    assert!(
        pods.iter().any(|p| name(p) == holder_pod(&holder)),
        "the Lease is held by {holder}, not by the chart's pods"
    );

    let ns = TestNamespace::create(&client, "inhelm").await;
    let ns = &ns.name;
    refused_through_the_service(ns).expect("the validating webhook through the Service");
    good_and_bad_release(&client, ns).await;
    no_forbidden_answer(&logs());

    // helm uninstall (hack/in-cluster.sh down): Serin's Deployment and webhooks go, the
    // CRDs and the Canaries stay.
    let status = Command::new(repo_root().join("hack/in-cluster.sh"))
        .arg("down")
        .status()
        .expect("run hack/in-cluster.sh down");
    assert!(status.success(), "hack/in-cluster.sh down failed");
    assert!(helm_records().is_empty(), "the Helm release is gone");
    assert!(
        deployments.get_opt("serin").await.expect("read").is_none(),
        "Deployment serin is still there after helm uninstall"
    );
    let (ok, _, err) = kubectl(&["get", "validatingwebhookconfiguration", "serin"], None);
    assert!(!ok && err.contains("NotFound"), "{err}");
    let (ok, out, err) = kubectl(
        &[
            "-n",
            ns,
            "get",
            "canaries",
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ],
        None,
    );
    assert!(
        ok && out == "bad good",
        "Canaries after helm uninstall: {out} {err}"
    );

    // Back to the kustomize install the other tests use; it carries the kept Canaries on:
    // the next revision is released.
    in_cluster("");
    apply(&manifest(ns, "good", &Version::good("v3"), &[]));
    wait_until(
        "good's v3 released after the reinstall",
        RELEASE,
        || async {
            match support::release::image(&client, ns, "good-primary").await {
                image if image == "example.invalid/good:v3" => Ok(()),
                image => Err(format!("good-primary runs {image}")),
            }
        },
    )
    .await;
    // The primary carries v3 from the promotion on; the release then finishes.
    wait_phase(&client, ns, "good", Phase::Succeeded, RELEASE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "e2e: needs the local environment (make test-in-cluster)"]
async fn deleting_the_leader_mid_release_hands_the_release_over_where_it_was() {
    in_cluster("");
    let client = support::client().await;
    let ns = TestNamespace::create(&client, "failover").await;
    let ns = &ns.name;
    let extra = [
        ("serin.dev/step-weight", "10"),
        ("serin.dev/interval", "3s"),
    ];
    apply(&manifest(ns, "web", &Version::good("v1"), &extra));
    wait_phase(&client, ns, "web", Phase::Initialized, RELEASE).await;
    apply(&manifest(ns, "web", &Version::good("v2"), &extra));
    wait_until("the canary weight to reach 20%", RELEASE, || async {
        match release_status(&client, ns, "web").await {
            s if s.canary_weight >= 20 => Ok(()),
            s => Err(format!("{s:?}")),
        }
    })
    .await;

    let leader = lease_holder(&client).await.expect("a Lease holder");
    let before = release_status(&client, ns, "web").await;
    let deleted = Instant::now();
    Api::<Pod>::namespaced(client.clone(), NS)
        .delete(holder_pod(&leader), &DeleteParams::default())
        .await
        .expect("delete the leader pod");
    let next = wait_until(
        "another pod to hold the Lease",
        Duration::from_secs(60),
        || async {
            match lease_holder(&client).await {
                Some(h) if h != leader => Ok(h),
                h => Err(format!("{h:?}")),
            }
        },
    )
    .await;
    let handed_over = deleted.elapsed();
    let moved = wait_until(
        "the release to move again",
        Duration::from_secs(60),
        || async {
            let now = release_status(&client, ns, "web").await;
            match now.last_check_time != before.last_check_time || now.phase != before.phase {
                true => Ok(now),
                false => Err(format!("{now:?}")),
            }
        },
    )
    .await;
    let gap = deleted.elapsed();
    println!(
        "failover: the Lease went from {leader} to {next} {:.2}s after the delete; the release \
         moved again after {:.2}s (status before: weight {}%, {} iterations; after: weight {}%, \
         {} iterations)",
        handed_over.as_secs_f64(),
        gap.as_secs_f64(),
        before.canary_weight,
        before.iterations,
        moved.canary_weight,
        moved.iterations
    );
    assert!(
        moved.canary_weight >= before.canary_weight,
        "the weight fell back: {moved:?}"
    );

    // The release ends once, promoted once, with one analysis (a restarted analysis would
    // record a second NewRevision; `iterations` stay 0 in a canary release, so they prove
    // nothing here).
    let lowest = AtomicU64::new(u64::MAX);
    wait_until(
        "the release to succeed after the failover",
        RELEASE,
        || async {
            let now = release_status(&client, ns, "web").await;
            if now.phase == Phase::Progressing {
                lowest.fetch_min(now.canary_weight.into(), Ordering::SeqCst);
            }
            match now.phase {
                Phase::Succeeded => Ok(()),
                Phase::Failed => panic!("rolled back after the failover: {now:?}"),
                _ => Err(format!("{now:?}")),
            }
        },
    )
    .await;
    let lowest = lowest.into_inner();
    assert!(
        lowest == u64::MAX || lowest >= before.canary_weight.into(),
        "weight went to {lowest}%"
    );
    let events = events(&client, ns, "web").await;
    let count = |reason: &str| events.iter().filter(|e| e.starts_with(reason)).count();
    assert_eq!(
        count("NewRevision"),
        1,
        "the analysis restarted: {events:#?}"
    );
    assert_eq!(count("Promoting"), 1, "a second promotion: {events:#?}");
    assert_eq!(count("Succeeded"), 1, "{events:#?}");
    assert_eq!(count("CheckFailed"), 0, "{events:#?}");
    assert_eq!(
        support::release::image(&client, ns, "web-primary").await,
        "example.invalid/web:v2"
    );

    // The Deployment brings the second replica back.
    two_ready_replicas(&client, "two Ready replicas again").await;
    no_forbidden_answer(&logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "e2e: needs the local environment (make test-in-cluster)"]
async fn draining_the_node_keeps_one_replica_serving() {
    in_cluster("");
    let client = support::client().await;
    let ns = TestNamespace::create(&client, "drain").await;
    let pods = serin_pods(&client).await;
    let node = pods[0]
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .expect("scheduled");
    // Only Serin's pods: the other tests' pods on the node are not this test's to evict.
    let (drained, out, err) = kubectl(
        &[
            "drain",
            &node,
            "--pod-selector",
            SELECTOR,
            "--timeout=20s",
            "--delete-emptydir-data",
        ],
        None,
    );
    let _uncordon = Uncordon(node.clone());
    assert!(
        !drained,
        "the drain evicted both replicas despite the PodDisruptionBudget:\n{out}\n{err}"
    );
    assert!(
        err.contains("disruption budget") || out.contains("disruption budget"),
        "the drain stopped for another reason:\n{out}\n{err}"
    );
    let left = serin_pods(&client).await;
    let running: Vec<String> = left
        .iter()
        .filter(|p| ready(p) && p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(&node))
        .map(name)
        .collect();
    assert_eq!(running.len(), 1, "ready replicas on the node: {running:?}");
    refused_through_the_service(&ns.name).expect("the remaining replica serves");

    drop(_uncordon);
    two_ready_replicas(&client, "two Ready replicas after uncordon").await;
}

struct Uncordon(String);

impl Drop for Uncordon {
    fn drop(&mut self) {
        kubectl(&["uncordon", &self.0], None);
    }
}

// ---------------------------------------------------------------------------------------------
// Self-signed certificates rotating in the cluster

/// Certificates live 20 s and are renewed 12 s before they expire, checked every second: a
/// rotation every 8 s or so, served by both replicas.
const SHORT_LIVED: &str = "SERIN_SELF_SIGNED_VALIDITY=20s,SERIN_SELF_SIGNED_RENEW_BEFORE=12s,SERIN_SELF_SIGNED_CHECK_INTERVAL=1s";
const REVIEWS_FOR: Duration = Duration::from_secs(45);
const MIN_ROTATIONS: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "e2e: needs the local environment (make test-in-cluster)"]
async fn self_signed_certificates_rotate_in_the_cluster_without_a_failed_review() {
    in_cluster(SHORT_LIVED);
    let client = support::client().await;
    // The Secret the replicas share still holds the long-lived pair of the default settings;
    // without it they make a short-lived one at once.
    fresh_self_signed_pair(&client).await;
    let ns = TestNamespace::create(&client, "rotation").await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);

    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(std::sync::Mutex::new(BTreeSet::new()));
    let watcher = {
        let (stop, seen, secrets) = (stop.clone(), seen.clone(), secrets.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                if let Ok(Some(s)) = secrets.get_opt("serin-webhook-tls").await
                    && let Some(cert) = s.data.as_ref().and_then(|d| d.get("tls.crt"))
                {
                    seen.lock().expect("lock").insert(cert.0.clone());
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };
    let reviews = Reviews::start(&deployments);
    tokio::time::sleep(REVIEWS_FOR).await;
    stop.store(true, Ordering::SeqCst);
    let (ok, failed) = reviews.finish().await;
    watcher.await.expect("watcher");
    let rotations = seen.lock().expect("lock").len().saturating_sub(1);
    println!(
        "self-signed in the cluster: {ok} reviews through the API server in {}s, {} failed, {rotations} rotations seen",
        REVIEWS_FOR.as_secs(),
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "reviews failed during rotations: {failed:#?}"
    );
    assert!(ok > 100, "too few reviews to prove anything: {ok}");
    assert!(
        rotations >= MIN_ROTATIONS,
        "only {rotations} rotations in {REVIEWS_FOR:?}"
    );
    no_forbidden_answer(&logs());
    // Back to the default lifetimes (and a pair made with them) for the other tests.
    in_cluster("");
    fresh_self_signed_pair(&client).await;
}

/// Deletes the self-signed Secret and waits until the replicas made a new pair, published it
/// and both serve it.
async fn fresh_self_signed_pair(client: &Client) {
    let old = secret_serial("serin-webhook-tls").ok();
    let (ok, _, err) = kubectl(&["-n", NS, "delete", "secret", "serin-webhook-tls"], None);
    assert!(ok, "deleting the self-signed Secret: {err}");
    let fresh = wait_until(
        "a new self-signed pair",
        Duration::from_secs(60),
        || async {
            match secret_serial("serin-webhook-tls") {
                Ok(s) if Some(&s) != old.as_ref() => Ok(s),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    wait_until(
        "both replicas to serve the new pair",
        Duration::from_secs(60),
        || async {
            let ips = pod_ips(client).await;
            let serials: Vec<_> = ips.iter().map(|ip| served_serial(ip)).collect();
            match ips.len() == 2 && serials.iter().all(|s| s.as_deref() == Ok(fresh.as_str())) {
                true => Ok(()),
                false => Err(format!("{serials:?}")),
            }
        },
    )
    .await;
}

/// Dry-run creates of opted-in Deployments through the API server, four at a time, which it
/// sends to Serin's webhooks through the Service until `finish`.
struct Reviews {
    stop: Arc<AtomicBool>,
    workers: tokio::task::JoinSet<(u64, Vec<String>)>,
}

impl Reviews {
    fn start(deployments: &Api<Deployment>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let mut workers = tokio::task::JoinSet::new();
        for worker in 0..4 {
            let (stop, deployments) = (stop.clone(), deployments.clone());
            workers.spawn(async move {
                let (mut ok, mut failed) = (0u64, Vec::new());
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) {
                    i += 1;
                    let d: Deployment = serde_json::from_value(opted_in(&format!("w{worker}-{i}")))
                        .expect("deployment");
                    let dry = PostParams {
                        dry_run: true,
                        ..PostParams::default()
                    };
                    match deployments.create(&dry, &d).await {
                        Ok(_) => ok += 1,
                        Err(e) => failed.push(e.to_string()),
                    }
                }
                (ok, failed)
            });
        }
        Self { stop, workers }
    }

    /// Stops the reviews; how many passed, and the errors of those that failed.
    async fn finish(mut self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        let (mut ok, mut failed) = (0, Vec::new());
        while let Some(r) = self.workers.join_next().await {
            let (o, f) = r.expect("review worker");
            ok += o;
            failed.extend(f);
        }
        (ok, failed)
    }
}

/// A valid opted-in Deployment: the mutating and validating webhooks both review it.
fn opted_in(name: &str) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "annotations": {"serin.dev/enabled": "true"}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "example.invalid/x:1"}]}
            }
        }
    })
}

// ---------------------------------------------------------------------------------------------
// cert-manager

/// The serial of the certificate a replica serves, read by a TLS handshake from the host
/// (which reaches the pods' addresses on the node's bridge).
fn served_serial(pod_ip: &str) -> Result<String, String> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect {pod_ip}:8443 -servername serin.serin-system.svc </dev/null 2>/dev/null | openssl x509 -noout -serial"
        ))
        .output()
        .map_err(|e| e.to_string())?;
    let serial = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    match serial.strip_prefix("serial=") {
        Some(s) if !s.is_empty() => Ok(s.to_owned()),
        _ => Err(format!(
            "no certificate from {pod_ip}: {}",
            String::from_utf8_lossy(&out.stderr)
        )),
    }
}

/// The serial of the certificate in the Secret `serin-system/<secret>`.
fn secret_serial(secret: &str) -> Result<String, String> {
    let (ok, out, err) = kubectl(
        &[
            "-n",
            NS,
            "get",
            "secret",
            secret,
            "-o",
            "jsonpath={.data.tls\\.crt}",
        ],
        None,
    );
    if !ok {
        return Err(err);
    }
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "printf %s '{out}' | base64 -d | openssl x509 -noout -serial"
        ))
        .output()
        .map_err(|e| e.to_string())?;
    let serial = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    serial
        .strip_prefix("serial=")
        .map(str::to_owned)
        .ok_or_else(|| format!("no certificate in {secret}: {serial}"))
}

async fn pod_ips(client: &Client) -> Vec<String> {
    serin_pods(client)
        .await
        .iter()
        .filter(|p| ready(p))
        .filter_map(|p| p.status.as_ref().and_then(|s| s.pod_ip.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "e2e: needs the local environment (make test-in-cluster)"]
async fn cert_manager_certificates_are_served_and_a_renewal_fails_no_review() {
    install("cert-manager", "");
    let client = support::client().await;
    let ns = TestNamespace::create(&client, "cm-renewal").await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);

    // Both replicas serve the pair cert-manager issued, and the API server trusts it with the
    // caBundle the cainjector wrote.
    let issued = secret_serial("serin-tls").expect("the Secret serin-tls");
    for ip in pod_ips(&client).await {
        assert_eq!(
            served_serial(&ip).as_deref(),
            Ok(issued.as_str()),
            "served by {ip}"
        );
    }
    refused_through_the_service(&ns.name).expect("the webhook with cert-manager's CA");

    // A renewal the way `cmctl renew` asks for one, while reviews stream.
    let reviews = Reviews::start(&deployments);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let condition = json!({"status": {"conditions": [{
        "type": "Issuing", "status": "True", "reason": "ManuallyTriggered",
        "message": "renewal asked by tests/e2e_in_cluster.rs",
        "lastTransitionTime": k8s_openapi::jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
    }]}});
    let (ok, _, err) = kubectl(
        &[
            "-n",
            NS,
            "patch",
            "certificate",
            "serin-serving",
            "--subresource",
            "status",
            "--type",
            "merge",
            "-p",
            &condition.to_string(),
        ],
        None,
    );
    assert!(ok, "asking for a renewal: {err}");
    let asked = Instant::now();
    let renewed = wait_until(
        "a new pair in serin-tls",
        Duration::from_secs(60),
        || async {
            match secret_serial("serin-tls") {
                Ok(s) if s != issued => Ok(s),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    let in_secret = asked.elapsed();
    // The kubelet updates the mounted Secret on its own schedule (up to about a minute), then
    // each replica reloads the pair.
    wait_until(
        "both replicas to serve the renewed pair",
        Duration::from_secs(150),
        || async {
            let ips = pod_ips(&client).await;
            let serials: Vec<_> = ips.iter().map(|ip| served_serial(ip)).collect();
            match ips.len() == 2 && serials.iter().all(|s| s.as_deref() == Ok(renewed.as_str())) {
                true => Ok(()),
                false => Err(format!("{serials:?}")),
            }
        },
    )
    .await;
    let served = asked.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (ok, failed) = reviews.finish().await;
    println!(
        "cert-manager renewal: new pair in the Secret {:.1}s after the request, served by both \
         replicas after {:.1}s; {ok} reviews meanwhile, {} failed",
        in_secret.as_secs_f64(),
        served.as_secs_f64(),
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "reviews failed during the renewal: {failed:#?}"
    );
    assert!(ok > 50, "too few reviews to prove anything: {ok}");
    no_forbidden_answer(&logs());
    // Back to the self-signed installation the other tests use.
    in_cluster("");
}

/// A setting for the pods that is not `SERIN_NAME=value` stops the install, naming it (it was
/// once dropped silently: the check ran in a pipeline's subshell).
#[test]
#[ignore = "e2e: needs the local environment (make test-in-cluster)"]
fn a_malformed_setting_for_the_pods_stops_the_install_naming_it() {
    support::kubeconfig();
    let out = Command::new(repo_root().join("hack/in-cluster.sh"))
        .arg("up")
        .env("IN_CLUSTER_ENV", "SERIN_LOG_FORMAT=json,NOT-SERIN=1")
        .output()
        .expect("run hack/in-cluster.sh");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "installed with a malformed setting:\n{stderr}"
    );
    assert!(
        stderr.contains("IN_CLUSTER_ENV: NOT-SERIN=1 is not SERIN_NAME=value"),
        "{stderr}"
    );
}
