//! Protection of managed objects on the real local cluster: with the built kubectl, a user
//! with edit rights in the namespace and the cluster admin cannot edit, scale or delete what
//! Serin made for an opted-in Deployment or DaemonSet, and are told which one to change
//! instead; while deleting the Deployment or its namespace, opting a DaemonSet out, and the
//! HPA controller scaling a primary, still work.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::{Api, Client};
use serin::release::Phase;
use serin::router::Weights;
use support::release::{apply, image, replicas, weights};
use support::scenarios::{Route, opt_in};
use support::{kubectl, wait_until};

/// Long enough for the garbage collector or the namespace controller to remove everything.
const CLEANUP: Duration = Duration::from_secs(120);

/// The normal user the tests impersonate: edit rights in the test namespace, nothing more.
const EDITOR: &str = "e2e-editor";

/// Gives [`EDITOR`] Kubernetes' `edit` role in `ns`, plus TrafficSplits (a CRD that role does
/// not cover), so that only Serin's webhook stands between them and the managed objects.
fn grant_edit(ns: &str) {
    apply(&format!(
        r#"apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: editor, namespace: {ns}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: edit}}
subjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: {EDITOR}}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: trafficsplit-editor, namespace: {ns}}}
rules:
- apiGroups: [split.smi-spec.io]
  resources: [trafficsplits]
  verbs: [get, list, watch, create, update, patch, delete]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: trafficsplit-editor, namespace: {ns}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: trafficsplit-editor}}
subjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: {EDITOR}}}]
"#
    ));
}

/// A test namespace with Serin running where [`EDITOR`] may edit ([`grant_edit`]).
async fn editable_namespace(prefix: &str) -> (Client, support::TestNamespace) {
    let (client, ns) = support::serin_namespace(prefix).await;
    grant_edit(&ns.name);
    (client, ns)
}

/// Who runs kubectl: the admin of the test kubeconfig, or [`EDITOR`] by impersonation.
#[derive(Clone, Copy, Debug)]
enum Who {
    Admin,
    Editor,
}

impl Who {
    fn args<'a>(self, ns: &'a str, args: &[&'a str]) -> Vec<String> {
        let mut all = vec!["-n".to_string(), ns.to_string()];
        if let Who::Editor = self {
            all.push(format!("--as={EDITOR}"));
        }
        all.extend(args.iter().map(|a| a.to_string()));
        all
    }
}

fn kubectl_as(who: Who, ns: &str, args: &[&str]) -> (bool, String, String) {
    let args = who.args(ns, args);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    kubectl(&args, None)
}

/// `kubectl edit` with an editor that adds a label to the object's metadata.
fn kubectl_edit(who: Who, ns: &str, resource: &str) -> (bool, String, String) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("temp dir");
    let editor = dir.path().join("add-label.sh");
    std::fs::write(
        &editor,
        "#!/bin/sh\nsed -i -e 's/^  labels:$/  labels:\\n    edited-by-hand: \"true\"/' \"$1\"\n",
    )
    .expect("write editor");
    std::fs::set_permissions(&editor, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let out = std::process::Command::new(support::kubectl_path())
        .arg("--kubeconfig")
        .arg(support::kubeconfig())
        .args(who.args(ns, &["edit", resource]))
        .env("KUBE_EDITOR", &editor)
        .output()
        .expect("kubectl edit runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Asserts that kubectl's write was refused by Serin's `webhook`, naming `owner` as the
/// Deployment to change and saying how to opt out.
fn assert_refused(
    what: &str,
    webhook: &str,
    owner: &str,
    (ok, stdout, stderr): (bool, String, String),
) {
    assert_refused_for("Deployment", what, webhook, owner, (ok, stdout, stderr));
}

/// [`assert_refused`] for an owner of `kind` (`Deployment` or `DaemonSet`).
fn assert_refused_for(
    kind: &str,
    what: &str,
    webhook: &str,
    owner: &str,
    (ok, stdout, stderr): (bool, String, String),
) {
    assert!(
        !ok,
        "{what} must be refused by Serin, but kubectl succeeded:\n{stdout}{stderr}"
    );
    let resource = kind.to_lowercase();
    for expected in [
        format!("admission webhook \"{webhook}\" denied the request"),
        format!("is managed by Serin for {kind} \"{owner}\""),
        format!("remove the annotation serin.dev/enabled from {kind} \"{owner}\""),
        format!("kubectl annotate {resource} {owner} serin.dev/enabled-"),
    ] {
        assert!(
            stderr.contains(&expected),
            "{what}: no {expected:?} in kubectl's error:\n{stderr}"
        );
    }
}

/// Tries every way to change the primary and the TrafficSplit of `web` as `who`, and checks
/// that each is refused and nothing changed.
async fn assert_managed_objects_are_protected(client: &Client, ns: &str, who: Who) {
    const MANAGED: &str = "protect-managed.serin.dev";
    const SCALE: &str = "protect-primary-scale.serin.dev";
    let label = r#"{"metadata":{"labels":{"edited-by-hand":"true"}}}"#;
    let weights_patch = r#"{"spec":{"backends":[{"service":"web-primary","weight":50},{"service":"web-canary","weight":50}]}}"#;
    let attempts: [(&str, &str, (bool, String, String)); 8] = [
        (
            "kubectl edit deployment/web-primary",
            MANAGED,
            kubectl_edit(who, ns, "deployment/web-primary"),
        ),
        (
            "kubectl patch deployment/web-primary",
            MANAGED,
            kubectl_as(
                who,
                ns,
                &[
                    "patch",
                    "deployment/web-primary",
                    "--type=merge",
                    "-p",
                    label,
                ],
            ),
        ),
        (
            "kubectl set image deployment/web-primary",
            MANAGED,
            kubectl_as(
                who,
                ns,
                &[
                    "set",
                    "image",
                    "deployment/web-primary",
                    "app=example.invalid/web:hand",
                ],
            ),
        ),
        (
            "kubectl scale deployment/web-primary",
            SCALE,
            kubectl_as(
                who,
                ns,
                &["scale", "deployment/web-primary", "--replicas=5"],
            ),
        ),
        (
            "kubectl delete deployment/web-primary",
            MANAGED,
            kubectl_as(
                who,
                ns,
                &["delete", "deployment/web-primary", "--wait=false"],
            ),
        ),
        (
            "kubectl edit trafficsplit/web",
            MANAGED,
            kubectl_edit(who, ns, "trafficsplits.split.smi-spec.io/web"),
        ),
        (
            "kubectl patch trafficsplit/web",
            MANAGED,
            kubectl_as(
                who,
                ns,
                &[
                    "patch",
                    "trafficsplits.split.smi-spec.io/web",
                    "--type=merge",
                    "-p",
                    weights_patch,
                ],
            ),
        ),
        (
            "kubectl delete trafficsplit/web",
            MANAGED,
            kubectl_as(
                who,
                ns,
                &[
                    "delete",
                    "trafficsplits.split.smi-spec.io/web",
                    "--wait=false",
                ],
            ),
        ),
    ];
    for (what, webhook, result) in attempts {
        assert_refused(&format!("{what} as {who:?}"), webhook, "web", result);
    }
    // Nothing got through.
    assert_eq!(replicas(client, ns, "web-primary").await, Some(2));
    assert_eq!(
        image(client, ns, "web-primary").await,
        "example.invalid/web:v1"
    );
    assert_eq!(weights(client, ns, "web").await, Some(Weights::ALL_PRIMARY));
    let (_, labels, _) = kubectl_as(
        Who::Admin,
        ns,
        &[
            "get",
            "deployment/web-primary",
            "-o",
            "jsonpath={.metadata.labels}",
        ],
    );
    assert!(
        !labels.contains("edited-by-hand"),
        "web-primary labels: {labels}"
    );
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn a_user_with_edit_rights_cannot_edit_scale_or_delete_the_primary_or_the_traffic_split() {
    let (client, ns) = editable_namespace("protect-user").await;
    let ns = &ns.name;
    opt_in(&client, ns, "web", &Route::SMI, &[]).await;
    // RBAC allows it all: any refusal below is Serin's.
    for (verb, resource) in [
        ("delete", "deployments.apps/web-primary"),
        ("patch", "deployments.apps/scale"),
        ("delete", "trafficsplits.split.smi-spec.io/web"),
    ] {
        let (_, answer, _) = kubectl_as(Who::Editor, ns, &["auth", "can-i", verb, resource]);
        assert_eq!(
            answer.trim(),
            "yes",
            "{EDITOR} may {verb} {resource} per RBAC"
        );
    }
    assert_managed_objects_are_protected(&client, ns, Who::Editor).await;
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn the_cluster_admin_is_refused_too_and_told_to_opt_out_instead() {
    let (client, ns) = support::serin_namespace("protect-admin").await;
    let ns = &ns.name;
    opt_in(&client, ns, "web", &Route::SMI, &[]).await;
    assert_managed_objects_are_protected(&client, ns, Who::Admin).await;
}

/// What is left of everything Serin made for `owner` (they all carry `serin.dev/owner`).
fn managed_objects(ns: &str, owner: &str) -> Result<(), String> {
    let selector = format!("serin.dev/owner={owner}");
    let (ok, names, stderr) = kubectl_as(
        Who::Admin,
        ns,
        &[
            "get",
            "deployments,daemonsets,services,configmaps,secrets,horizontalpodautoscalers,trafficsplits.split.smi-spec.io,canaries.serin.dev",
            "-l",
            &selector,
            "-o",
            "name",
        ],
    );
    match (ok, names.trim()) {
        (true, "") => Ok(()),
        (true, left) => Err(format!("still there: {}", left.replace('\n', ", "))),
        (false, _) => Err(format!("kubectl get failed: {stderr}")),
    }
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn deleting_the_opted_in_deployment_removes_everything_serin_made_for_it() {
    let (client, ns) = editable_namespace("protect-owner").await;
    let ns = &ns.name;
    opt_in(&client, ns, "web", &Route::SMI, &[]).await;
    opt_in(&client, ns, "api", &Route::SMI, &[]).await;
    assert!(
        managed_objects(ns, "web").is_err(),
        "Serin made objects for web"
    );

    // The user deletes their own Deployment (background cascade, kubectl's default); the
    // admin deletes the other in the foreground, where the garbage collector removes the
    // dependents while the owner still exists, being deleted.
    let (ok, _, stderr) = kubectl_as(
        Who::Editor,
        ns,
        &["delete", "deployment/web", "--wait=false"],
    );
    assert!(ok, "{EDITOR} deletes deployment/web: {stderr}");
    let (ok, _, stderr) = kubectl_as(
        Who::Admin,
        ns,
        &[
            "delete",
            "deployment/api",
            "--cascade=foreground",
            "--wait=false",
        ],
    );
    assert!(ok, "the admin deletes deployment/api: {stderr}");
    for owner in ["web", "api"] {
        wait_until(
            &format!("the garbage collector to remove what Serin made for {ns}/{owner}"),
            CLEANUP,
            || async { managed_objects(ns, owner) },
        )
        .await;
        assert!(
            support::release::deployment(&client, ns, owner)
                .await
                .is_none(),
            "deployment {ns}/{owner} is gone"
        );
    }
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn deleting_the_namespace_of_an_opted_in_deployment_completes() {
    let (client, ns) = support::serin_namespace("protect-namespace").await;
    let name = ns.name.clone();
    opt_in(&client, &name, "web", &Route::SMI, &[]).await;
    let (ok, _, stderr) = kubectl(&["delete", "namespace", &name, "--wait=false"], None);
    assert!(ok, "delete namespace {name}: {stderr}");
    // A namespace disappears only once everything in it is deleted: a refused delete would
    // leave it Terminating with the refusal in its conditions.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    wait_until(
        &format!("namespace {name} to be deleted with everything in it"),
        CLEANUP,
        || async {
            match namespaces.get_opt(&name).await {
                Ok(None) => Ok(()),
                Ok(Some(left)) => Err(format!(
                    "still there: {}",
                    serde_json::to_string(&left.status).unwrap_or_default()
                )),
                Err(e) => Err(e.to_string()),
            }
        },
    )
    .await;
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn the_hpa_controller_still_scales_the_primary_through_the_scale_subresource() {
    let (client, ns) = support::serin_namespace("protect-hpa").await;
    let ns = &ns.name;
    // Above the 2 replicas the Deployment asks for: the HPA controller scales the primary to
    // its minimum without needing any metrics.
    apply(&format!(
        r#"apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {{name: web, namespace: {ns}}}
spec:
  scaleTargetRef: {{apiVersion: apps/v1, kind: Deployment, name: web}}
  minReplicas: 3
  maxReplicas: 5
  metrics:
  - type: Resource
    resource: {{name: cpu, target: {{type: Utilization, averageUtilization: 80}}}}
"#
    ));
    opt_in(&client, ns, "web", &Route::SMI, &[]).await;
    wait_until(
        "the HPA controller to scale web-primary to its minimum of 3",
        Duration::from_secs(90),
        || async {
            match replicas(&client, ns, "web-primary").await {
                Some(3) => Ok(()),
                other => {
                    let (_, hpa, _) = kubectl_as(
                        Who::Admin,
                        ns,
                        &["get", "hpa/web-primary", "-o", "jsonpath={.status}"],
                    );
                    Err(format!(
                        "web-primary replicas {other:?}; HPA web-primary status {hpa}"
                    ))
                }
            }
        },
    )
    .await;
    // The scale webhook is in the path: a person's scale of the same primary is refused.
    let (ok, stdout, stderr) = kubectl_as(
        Who::Admin,
        ns,
        &["scale", "deployment/web-primary", "--replicas=4"],
    );
    assert_refused(
        "kubectl scale deployment/web-primary",
        "protect-primary-scale.serin.dev",
        "web",
        (ok, stdout, stderr),
    );
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn left_overs_whose_owner_is_gone_can_be_deleted_by_their_user() {
    let (_client, ns) = editable_namespace("protect-leftover").await;
    let ns = &ns.name;
    apply(&format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: gone-config-primary\n  namespace: {ns}\n  labels: {{serin.dev/owner: gone}}\ndata: {{greeting: hello}}\n"
    ));
    let (ok, _, stderr) = kubectl_as(
        Who::Editor,
        ns,
        &["delete", "configmap/gone-config-primary", "--wait=false"],
    );
    assert!(
        ok,
        "configmap/gone-config-primary names Deployment \"gone\", which does not exist: {stderr}"
    );
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn a_hand_edited_canary_status_is_refused_even_for_the_cluster_admin() {
    let (client, ns) = support::serin_namespace("status").await;
    let ns = &ns.name;
    opt_in(&client, ns, "web", &Route::SMI, &[]).await;
    // A Failed release shown as Succeeded at weight 100: what the refusal prevents.
    let (ok, _, stderr) = support::kubectl(
        &[
            "-n",
            ns,
            "patch",
            "canaries.serin.dev",
            "web",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"phase":"Succeeded","canaryWeight":100}}"#,
        ],
        None,
    );
    assert!(!ok, "the status edit was accepted");
    assert!(
        stderr.contains("is Serin's record of the release"),
        "{stderr}"
    );
    let status = support::release::canary(&client, ns, "web")
        .await
        .and_then(|c| c.status)
        .expect("status");
    assert_eq!(status.release.phase, Phase::Initialized);
    assert_eq!(status.release.canary_weight, 0);
}

/// What Serin makes for an opted-in DaemonSet (its `-primary` DaemonSet, the Services, the
/// TrafficSplit) is protected like a Deployment's, the refusal naming the DaemonSet and how to
/// opt it out; once it is opted out, Serin removes them all and the DaemonSet runs on its own.
#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn a_daemonsets_primary_and_services_are_refused_naming_it_until_it_opts_out() {
    use support::daemonset::{node_selector, opt_in as opt_in_daemonset, ready_on_nodes};
    let (client, ns) = editable_namespace("protect-ds").await;
    let ns = &ns.name;
    opt_in_daemonset(&client, ns, &[]).await;
    const MANAGED: &str = "protect-managed.serin.dev";
    let label = r#"{"metadata":{"labels":{"edited-by-hand":"true"}}}"#;
    let selector = r#"{"spec":{"selector":{"app":"somewhere-else"}}}"#;
    for who in [Who::Editor, Who::Admin] {
        let attempts = [
            (
                "kubectl edit daemonset/agent-primary",
                kubectl_edit(who, ns, "daemonset/agent-primary"),
            ),
            (
                "kubectl patch daemonset/agent-primary",
                kubectl_as(
                    who,
                    ns,
                    &[
                        "patch",
                        "daemonset/agent-primary",
                        "--type=merge",
                        "-p",
                        label,
                    ],
                ),
            ),
            (
                "kubectl set image daemonset/agent-primary",
                kubectl_as(
                    who,
                    ns,
                    &[
                        "set",
                        "image",
                        "daemonset/agent-primary",
                        "app=example.invalid/agent:hand",
                    ],
                ),
            ),
            (
                "kubectl delete daemonset/agent-primary",
                kubectl_as(
                    who,
                    ns,
                    &["delete", "daemonset/agent-primary", "--wait=false"],
                ),
            ),
            (
                "kubectl edit service/agent",
                kubectl_edit(who, ns, "service/agent"),
            ),
            (
                "kubectl patch service/agent-primary",
                kubectl_as(
                    who,
                    ns,
                    &[
                        "patch",
                        "service/agent-primary",
                        "--type=merge",
                        "-p",
                        selector,
                    ],
                ),
            ),
            (
                "kubectl delete service/agent-canary",
                kubectl_as(who, ns, &["delete", "service/agent-canary", "--wait=false"]),
            ),
            (
                "kubectl delete trafficsplit/agent",
                kubectl_as(
                    who,
                    ns,
                    &[
                        "delete",
                        "trafficsplits.split.smi-spec.io/agent",
                        "--wait=false",
                    ],
                ),
            ),
        ];
        for (what, result) in attempts {
            let what = format!("{what} as {who:?}");
            assert_refused_for("DaemonSet", &what, MANAGED, "agent", result);
        }
    }
    // Nothing got through.
    assert_eq!(
        support::daemonset::image(ns, "agent-primary"),
        "example.invalid/agent:1"
    );
    let labels = support::daemonset::field(ns, "agent-primary", "{.metadata.labels}");
    assert!(
        !labels.contains("edited-by-hand"),
        "agent-primary: {labels}"
    );
    assert!(ready_on_nodes(ns, "agent-primary") >= 1);

    // The way out the refusal names, by the user with edit rights.
    let (ok, _, stderr) = kubectl_as(
        Who::Editor,
        ns,
        &["annotate", "daemonset", "agent", "serin.dev/enabled-"],
    );
    assert!(ok, "{EDITOR} opts agent out: {stderr}");
    wait_until(
        "Serin to remove what it made for the DaemonSet",
        CLEANUP,
        || async { managed_objects(ns, "agent") },
    )
    .await;
    assert_eq!(
        node_selector(ns, "agent"),
        serde_json::json!({"kubernetes.io/os": "linux"}),
        "the opted-out DaemonSet runs on its nodes again"
    );
    assert!(
        support::release::canary(&client, ns, "agent")
            .await
            .is_none(),
        "the Canary is gone"
    );
}
