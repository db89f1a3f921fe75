//! The writes users make to an opted-in Deployment mid-life, one scenario body for all:
//! `kubectl set image`, `patch` (strategic, merge, JSON), an `edit`-style PUT, `rollout
//! restart`, `annotate`, `label`, `scale`, `apply` of a manifest without `replicas` under an
//! HPA, server-side apply by a GitOps field manager, and the three-way patch a Helm upgrade
//! sends. For each: the primary never has fewer ready pods than the user asked for, a
//! release starts when the pod template changed and not otherwise, and the end state is the
//! one a full `kubectl apply` would give.
//!
//! The pods are kwok's and the traffic is the simulator's: this proves what Serin does with
//! the Deployments, not a data plane.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::{Api, Client};
use serin::release::Phase;
use support::release::{Version, apply, canary, events, image, manifest, replicas, wait_phase};
use support::{kubectl, wait_until};

const SETTLE: Duration = Duration::from_secs(60);
const RELEASE: Duration = Duration::from_secs(120);
/// How long a write that is no release is watched for one (three intervals of 2 s).
const NO_RELEASE: Duration = Duration::from_secs(7);
/// The replicas the user asked for in every scenario.
const DESIRED: i32 = 3;

/// A user's write to the opted-in Deployment `web` (runs `example.invalid/web:v1`).
#[derive(Clone, Copy, Debug)]
enum Write {
    SetImage,
    PatchStrategic,
    PatchMerge,
    PatchJson,
    EditPut,
    RolloutRestart,
    Annotate,
    Label,
    Scale,
    GitOpsServerSideApply,
    HelmThreeWayPatch,
}

/// What the write should lead to.
struct Expected {
    release: bool,
    /// The primary's image at the end.
    image: &'static str,
    /// `serin.dev/desired-replicas` and the primary's size at the end.
    replicas: i32,
}

impl Write {
    fn expected(self) -> Expected {
        let released = |image| Expected {
            release: true,
            image,
            replicas: DESIRED,
        };
        let untouched = Expected {
            release: false,
            image: "example.invalid/web:v1",
            replicas: DESIRED,
        };
        match self {
            Write::SetImage
            | Write::PatchStrategic
            | Write::PatchJson
            | Write::EditPut
            | Write::GitOpsServerSideApply
            | Write::HelmThreeWayPatch => released("example.invalid/web:v2"),
            Write::RolloutRestart => released("example.invalid/web:v1"),
            Write::PatchMerge | Write::Annotate | Write::Label => untouched,
            Write::Scale => Expected {
                replicas: 5,
                ..untouched
            },
        }
    }

    /// Makes the write as the user would, with kubectl.
    fn make(self, ns: &str) {
        let v2 = "example.invalid/web:v2";
        let run = |args: &[&str], stdin: Option<&str>| {
            let mut all = vec!["-n", ns];
            all.extend_from_slice(args);
            let (ok, out, err) = kubectl(&all, stdin);
            assert!(ok, "{self:?}: kubectl {args:?} failed:\n{out}\n{err}");
        };
        match self {
            Write::SetImage => run(&["set", "image", "deploy/web", &format!("app={v2}")], None),
            Write::PatchStrategic => run(
                &[
                    "patch",
                    "deploy/web",
                    "-p",
                    &format!(
                        r#"{{"spec":{{"template":{{"spec":{{"containers":[{{"name":"app","image":"{v2}"}}]}}}}}}}}"#
                    ),
                ],
                None,
            ),
            Write::PatchMerge => run(
                &[
                    "patch",
                    "deploy/web",
                    "--type",
                    "merge",
                    "-p",
                    r#"{"metadata":{"labels":{"tier":"web"}}}"#,
                ],
                None,
            ),
            Write::PatchJson => run(
                &[
                    "patch",
                    "deploy/web",
                    "--type",
                    "json",
                    "-p",
                    &format!(
                        r#"[{{"op":"replace","path":"/spec/template/spec/containers/0/image","value":"{v2}"}}]"#
                    ),
                ],
                None,
            ),
            Write::EditPut => {
                // What `kubectl edit` does: read the object, change it, PUT it back whole.
                let (ok, json, err) = kubectl(&["-n", ns, "get", "deploy/web", "-o", "json"], None);
                assert!(ok, "read web: {err}");
                let mut object: serde_json::Value = serde_json::from_str(&json).expect("JSON");
                object["spec"]["template"]["spec"]["containers"][0]["image"] = v2.into();
                run(&["replace", "-f", "-"], Some(&object.to_string()));
            }
            Write::RolloutRestart => run(&["rollout", "restart", "deploy/web"], None),
            Write::Annotate => run(&["annotate", "deploy/web", "team=shop"], None),
            Write::Label => run(&["label", "deploy/web", "tier=web"], None),
            Write::Scale => run(&["scale", "deploy/web", "--replicas=5"], None),
            Write::GitOpsServerSideApply => run(
                &[
                    "apply",
                    "--server-side",
                    "--field-manager=kustomize-controller",
                    "-f",
                    "-",
                ],
                Some(&web(ns, "v2")),
            ),
            Write::HelmThreeWayPatch => {
                // Helm 3 upgrades with a three-way strategic merge patch of (last release,
                // new chart, live object): the live idle canary's `replicas: 0` differs from
                // the chart's 3, so the patch carries the chart's count with the new image.
                run(
                    &[
                        "patch",
                        "deploy/web",
                        "--type",
                        "strategic",
                        "-p",
                        &format!(
                            r#"{{"spec":{{"replicas":{DESIRED},"template":{{"spec":{{"containers":[{{"name":"app","image":"{v2}"}}]}}}}}}}}"#
                        ),
                    ],
                    None,
                )
            }
        }
    }
}

/// The sample Deployment at `tag`, asking for [`DESIRED`] replicas.
fn web(ns: &str, tag: &'static str) -> String {
    manifest(ns, "web", &Version::good(tag), &[]).replace("replicas: 2", "replicas: 3")
}

/// Samples the primary every 100 ms until stopped: the fewest replicas it was asked for and
/// the fewest Ready pods it had.
struct PrimaryWatch {
    stop: Arc<AtomicBool>,
    fewest_spec: Arc<AtomicI32>,
    fewest_ready: Arc<AtomicI32>,
    task: tokio::task::JoinHandle<()>,
}

impl PrimaryWatch {
    fn start(client: &Client, ns: &str) -> Self {
        let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
        let stop = Arc::new(AtomicBool::new(false));
        let fewest_spec = Arc::new(AtomicI32::new(i32::MAX));
        let fewest_ready = Arc::new(AtomicI32::new(i32::MAX));
        let task = tokio::spawn({
            let (stop, fewest_spec, fewest_ready) =
                (stop.clone(), fewest_spec.clone(), fewest_ready.clone());
            async move {
                while !stop.load(Ordering::SeqCst) {
                    if let Ok(primary) = api.get("web-primary").await {
                        let spec = primary.spec.and_then(|s| s.replicas).unwrap_or(1);
                        let ready = primary.status.and_then(|s| s.ready_replicas).unwrap_or(0);
                        fewest_spec.fetch_min(spec, Ordering::SeqCst);
                        fewest_ready.fetch_min(ready, Ordering::SeqCst);
                    } else {
                        fewest_spec.fetch_min(0, Ordering::SeqCst);
                        fewest_ready.fetch_min(0, Ordering::SeqCst);
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        });
        Self {
            stop,
            fewest_spec,
            fewest_ready,
            task,
        }
    }

    /// `(fewest asked for, fewest Ready)` over the watch.
    async fn finish(self) -> (i32, i32) {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("the watch ends");
        (
            self.fewest_spec.load(Ordering::SeqCst),
            self.fewest_ready.load(Ordering::SeqCst),
        )
    }
}

async fn desired_annotation(client: &Client, ns: &str) -> Option<String> {
    support::release::deployment(client, ns, "web")
        .await
        .and_then(|d| d.metadata.annotations)
        .and_then(|a| a.get("serin.dev/desired-replicas").cloned())
}

/// The scenario every write goes through.
async fn scenario(write: Write, prefix: &str) {
    let (client, ns) = support::release_namespace(prefix).await;
    let ns = &ns.name;
    let expected = write.expected();
    match write {
        // A GitOps tool owns the manifest with its own field manager from the start.
        Write::GitOpsServerSideApply => {
            let (ok, out, err) = kubectl(
                &[
                    "apply",
                    "--server-side",
                    "--field-manager=kustomize-controller",
                    "-f",
                    "-",
                ],
                Some(&web(ns, "v1")),
            );
            assert!(ok, "server-side apply of v1:\n{out}\n{err}");
        }
        _ => apply(&web(ns, "v1")),
    }
    wait_phase(&client, ns, "web", Phase::Initialized, SETTLE).await;
    wait_until("the primary to have 3 Ready pods", SETTLE, || async {
        let primary = support::release::deployment(&client, ns, "web-primary").await;
        let ready = primary
            .and_then(|d| d.status)
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0);
        if ready >= DESIRED {
            Ok(())
        } else {
            Err(format!("{ready} Ready"))
        }
    })
    .await;
    let before = canary(&client, ns, "web")
        .await
        .and_then(|c| c.status)
        .and_then(|s| s.release.revision);

    let watch = PrimaryWatch::start(&client, ns);
    write.make(ns);
    if expected.release {
        wait_until("a new revision", SETTLE, || async {
            let now = canary(&client, ns, "web")
                .await
                .and_then(|c| c.status)
                .and_then(|s| s.release.revision);
            if now != before {
                Ok(())
            } else {
                Err(format!("revision {now:?}"))
            }
        })
        .await;
        wait_phase(&client, ns, "web", Phase::Succeeded, RELEASE).await;
    } else {
        tokio::time::sleep(NO_RELEASE).await;
        let status = canary(&client, ns, "web")
            .await
            .and_then(|c| c.status)
            .expect("Canary status");
        assert_eq!(
            (status.release.phase, status.release.revision.clone()),
            (Phase::Initialized, before.clone()),
            "{write:?}: no change of the pod template, so no release"
        );
        let events = events(&client, ns, "web").await.join("\n");
        assert!(!events.contains("NewRevision"), "{write:?}:\n{events}");
    }
    // The end state a full `kubectl apply` gives.
    wait_until(
        &format!("{write:?}: the primary at {} replicas", expected.replicas),
        SETTLE,
        || async {
            let primary = replicas(&client, ns, "web-primary").await;
            let canary = replicas(&client, ns, "web").await;
            let desired = desired_annotation(&client, ns).await;
            let want = expected.replicas.to_string();
            match (primary, canary, desired.as_deref()) {
                (Some(p), Some(0), Some(d)) if p == expected.replicas && d == want => Ok(()),
                other => Err(format!("(primary, canary, desired-replicas) = {other:?}")),
            }
        },
    )
    .await;
    let (fewest_spec, fewest_ready) = watch.finish().await;
    assert_eq!(image(&client, ns, "web-primary").await, expected.image);
    assert!(
        fewest_spec >= DESIRED && fewest_ready >= DESIRED,
        "{write:?}: the primary went down to {fewest_spec} replicas asked, {fewest_ready} Ready; \
         the user asked for {DESIRED}"
    );
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn set_image_releases_the_new_image_without_scaling_the_primary_down() {
    scenario(Write::SetImage, "wf-setimage").await;
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn a_strategic_patch_of_the_image_releases_it() {
    scenario(Write::PatchStrategic, "wf-strategic").await;
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn a_merge_patch_of_a_label_is_no_release_and_keeps_the_primary() {
    scenario(Write::PatchMerge, "wf-merge").await;
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn a_json_patch_of_the_image_releases_it() {
    scenario(Write::PatchJson, "wf-json").await;
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn an_edit_style_put_releases_the_new_image() {
    scenario(Write::EditPut, "wf-edit").await;
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn rollout_restart_releases_the_same_image_as_a_new_revision() {
    scenario(Write::RolloutRestart, "wf-restart").await;
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn annotate_is_no_release_and_keeps_the_primary() {
    scenario(Write::Annotate, "wf-annotate").await;
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn label_is_no_release_and_keeps_the_primary() {
    scenario(Write::Label, "wf-label").await;
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn scale_between_releases_resizes_the_primary_and_keeps_the_canary_idle() {
    scenario(Write::Scale, "wf-scale").await;
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn a_gitops_server_side_apply_releases_the_new_image() {
    scenario(Write::GitOpsServerSideApply, "wf-gitops").await;
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn a_helm_style_three_way_patch_releases_the_new_image() {
    scenario(Write::HelmThreeWayPatch, "wf-helm").await;
}

/// A manifest that leaves `replicas` to an HPA: re-applied with a new image, the primary
/// stays at the HPA's count and the release runs.
#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn an_hpa_managed_manifest_without_replicas_releases_without_scaling_the_primary_down() {
    let (client, ns) = support::release_namespace("wf-hpa").await;
    let ns = &ns.name;
    let hpa = format!(
        r#"apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {{name: web, namespace: {ns}}}
spec:
  scaleTargetRef: {{apiVersion: apps/v1, kind: Deployment, name: web}}
  minReplicas: {DESIRED}
  maxReplicas: 5
  metrics:
  - type: Resource
    resource: {{name: cpu, target: {{type: Utilization, averageUtilization: 80}}}}
"#
    );
    apply(&hpa);
    let without_replicas =
        |tag| manifest(ns, "web", &Version::good(tag), &[]).replace("  replicas: 2\n", "");
    assert!(!without_replicas("v1").contains("replicas:"));
    apply(&without_replicas("v1"));
    wait_phase(&client, ns, "web", Phase::Initialized, SETTLE).await;
    // The HPA's copy sizes the primary to its minimum.
    wait_until("the -primary HPA to size the primary", SETTLE, || async {
        match replicas(&client, ns, "web-primary").await {
            Some(n) if n >= DESIRED => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let watch = PrimaryWatch::start(&client, ns);
    apply(&without_replicas("v2"));
    wait_until("a new revision", SETTLE, || async {
        let events = events(&client, ns, "web").await.join("\n");
        if events.contains("NewRevision") {
            Ok(())
        } else {
            Err(events)
        }
    })
    .await;
    wait_phase(&client, ns, "web", Phase::Succeeded, RELEASE).await;
    let (fewest_spec, _) = watch.finish().await;
    assert_eq!(
        image(&client, ns, "web-primary").await,
        "example.invalid/web:v2"
    );
    assert!(
        fewest_spec >= DESIRED,
        "the primary was asked for {fewest_spec} replicas under an HPA of minimum {DESIRED}"
    );
    let desired = desired_annotation(&client, ns).await;
    assert_ne!(
        desired.as_deref(),
        Some("0"),
        "the idle canary's 0 recorded as the request"
    );
}

/// A Deployment, selector value and Service of 55 characters, the longest whose derived
/// names (`-primary`, `-canary`) fit: admitted, set up and released by `kubectl set image`
/// like any other.
#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn a_name_at_the_length_limit_opts_in_and_releases_with_set_image() {
    let (client, ns) = support::release_namespace("wf-longname").await;
    let ns = &ns.name;
    let name = format!("w{}", "e".repeat(54));
    assert_eq!(name.len(), 55);
    apply(&manifest(ns, &name, &Version::good("v1"), &[]));
    wait_phase(&client, ns, &name, Phase::Initialized, SETTLE).await;
    let primary = format!("{name}-primary");
    assert_eq!(replicas(&client, ns, &primary).await, Some(2));
    let (ok, out, err) = kubectl(
        &[
            "-n",
            ns,
            "set",
            "image",
            &format!("deploy/{name}"),
            &format!("app=example.invalid/{name}:v2"),
        ],
        None,
    );
    assert!(ok, "{out}\n{err}");
    wait_phase(&client, ns, &name, Phase::Succeeded, RELEASE).await;
    assert_eq!(
        image(&client, ns, &primary).await,
        format!("example.invalid/{name}:v2")
    );
    assert_eq!(replicas(&client, ns, &primary).await, Some(2));
}
