//! Serin's identity: the `serin` ServiceAccount in `serin-system` with the RBAC of
//! `manifests/rbac.yaml` may do what the webhooks and the controller need and nothing it
//! could abuse, and the local Serin really runs under it (not the admin credentials).
//!
//! The local Serin tracks Secrets, so `hack/serin.sh` also applies the grant of the Component
//! `manifests/overlays/secret-tracking`. What the base alone allows is asked of a fresh
//! ServiceAccount in a test namespace, bound exactly as `manifests/rbac.yaml` binds Serin's
//! (copies of its bindings, owned by that namespace and so deleted with it): it may do what
//! Serin needs without Secret tracking, and reads no Secret anywhere.
//!
//! The tables ask the API server's authorizer directly (a SubjectAccessReview with the exact
//! group, resource and subresource), which also answers for Serin's own CRDs before they are
//! installed; `kubectl auth can-i --as` gives the same answers for the ones it can resolve.

mod support;

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{ListParams, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use serde::Deserialize;

const SA_USER: &str = "system:serviceaccount:serin-system:serin";

/// A ServiceAccount as the authorizer sees it: its user name and groups.
struct Identity {
    namespace: String,
    name: String,
}

impl Identity {
    fn serin() -> Self {
        Identity {
            namespace: "serin-system".into(),
            name: "serin".into(),
        }
    }

    fn user(&self) -> String {
        format!("system:serviceaccount:{}:{}", self.namespace, self.name)
    }

    fn groups(&self) -> Vec<String> {
        vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{}", self.namespace),
            "system:authenticated".into(),
        ]
    }
}

/// One request: verb, API group, resource (`resource/subresource`), namespace (`None`:
/// cluster scope).
type Access<'a> = (&'a str, &'a str, &'a str, Option<&'a str>);

const NS: Option<&str> = Some("default");
const CLUSTER: Option<&str> = None;

/// What the webhooks and the controller do (see the comments in manifests/rbac.yaml).
const NEEDED: &[Access<'static>] = &[
    ("get", "apps", "deployments", NS),
    ("watch", "apps", "deployments", CLUSTER),
    ("create", "apps", "deployments", NS),
    ("patch", "apps", "deployments", NS),
    ("delete", "apps", "deployments", NS),
    ("patch", "apps", "deployments/scale", NS),
    ("create", "", "services", NS),
    ("update", "", "services", NS),
    ("watch", "", "configmaps", CLUSTER),
    ("create", "", "configmaps", NS),
    ("create", "autoscaling", "horizontalpodautoscalers", NS),
    ("patch", "autoscaling", "horizontalpodautoscalers", NS),
    ("create", "split.smi-spec.io", "trafficsplits", NS),
    ("patch", "split.smi-spec.io", "trafficsplits", NS),
    ("watch", "split.smi-spec.io", "trafficsplits", CLUSTER),
    ("create", "gateway.networking.k8s.io", "httproutes", NS),
    ("patch", "gateway.networking.k8s.io", "httproutes", NS),
    ("get", "gateway.networking.k8s.io", "httproutes", NS),
    ("delete", "gateway.networking.k8s.io", "httproutes", NS),
    ("watch", "gateway.networking.k8s.io", "httproutes", CLUSTER),
    ("get", "networking.k8s.io", "ingresses", NS),
    ("create", "networking.k8s.io", "ingresses", NS),
    ("patch", "networking.k8s.io", "ingresses", NS),
    ("delete", "networking.k8s.io", "ingresses", NS),
    ("watch", "networking.k8s.io", "ingresses", CLUSTER),
    ("create", "gateway.solo.io", "routetables", NS),
    ("patch", "gateway.solo.io", "routetables", NS),
    ("get", "gateway.solo.io", "routetables", NS),
    ("delete", "gateway.solo.io", "routetables", NS),
    ("watch", "gateway.solo.io", "routetables", CLUSTER),
    ("create", "gloo.solo.io", "upstreams", NS),
    ("patch", "gloo.solo.io", "upstreams", NS),
    ("list", "gloo.solo.io", "upstreams", NS),
    ("delete", "gloo.solo.io", "upstreams", NS),
    ("watch", "gloo.solo.io", "upstreams", CLUSTER),
    ("create", "serin.dev", "canaries", NS),
    ("watch", "serin.dev", "canaries", CLUSTER),
    ("delete", "serin.dev", "canaries", NS),
    ("update", "serin.dev", "canaries/status", NS),
    ("patch", "serin.dev", "canaries/status", NS),
    ("list", "serin.dev", "analysistemplates", CLUSTER),
    ("watch", "serin.dev", "canarypolicies", CLUSTER),
    ("create", "", "events", NS),
    ("patch", "events.k8s.io", "events", NS),
    ("get", "coordination.k8s.io", "leases", Some("serin-system")),
    (
        "create",
        "coordination.k8s.io",
        "leases",
        Some("serin-system"),
    ),
    (
        "update",
        "coordination.k8s.io",
        "leases",
        Some("serin-system"),
    ),
    ("watch", "", "namespaces", CLUSTER),
];

/// What Secret tracking adds (manifests/overlays/secret-tracking/rbac.yaml): reading the
/// Secrets pod templates name, watching them cluster-wide, and the `-primary` copies.
const SECRET_TRACKING: &[Access<'static>] = &[
    ("get", "", "secrets", NS),
    ("list", "", "secrets", CLUSTER),
    ("watch", "", "secrets", CLUSTER),
    ("create", "", "secrets", NS),
    ("patch", "", "secrets", NS),
    ("delete", "", "secrets", NS),
];

/// Reading Secrets, in any namespace (Serin's own included) and cluster-wide: the base must
/// allow none of it.
const SECRETS_READ: &[Access<'static>] = &[
    ("get", "", "secrets", NS),
    ("list", "", "secrets", NS),
    ("watch", "", "secrets", NS),
    ("get", "", "secrets", Some("serin-system")),
    ("list", "", "secrets", Some("serin-system")),
    ("watch", "", "secrets", Some("serin-system")),
    ("get", "", "secrets", Some("kube-system")),
    ("list", "", "secrets", Some("kube-system")),
    ("watch", "", "secrets", Some("kube-system")),
    ("get", "", "secrets", CLUSTER),
    ("list", "", "secrets", CLUSTER),
    ("watch", "", "secrets", CLUSTER),
];

/// What Serin never needs: escalation, workloads it does not manage, other people's config.
const FORBIDDEN: &[Access<'static>] = &[
    (
        "create",
        "rbac.authorization.k8s.io",
        "clusterroles",
        CLUSTER,
    ),
    ("bind", "rbac.authorization.k8s.io", "clusterroles", CLUSTER),
    (
        "escalate",
        "rbac.authorization.k8s.io",
        "clusterroles",
        CLUSTER,
    ),
    (
        "create",
        "rbac.authorization.k8s.io",
        "clusterrolebindings",
        CLUSTER,
    ),
    ("create", "rbac.authorization.k8s.io", "rolebindings", NS),
    // Nor may it change the RBAC that exists, its own in serin-system included.
    (
        "update",
        "rbac.authorization.k8s.io",
        "clusterroles",
        CLUSTER,
    ),
    (
        "delete",
        "rbac.authorization.k8s.io",
        "clusterrolebindings",
        CLUSTER,
    ),
    (
        "patch",
        "rbac.authorization.k8s.io",
        "roles",
        Some("serin-system"),
    ),
    (
        "update",
        "rbac.authorization.k8s.io",
        "rolebindings",
        Some("serin-system"),
    ),
    ("impersonate", "", "users", CLUSTER),
    ("impersonate", "", "serviceaccounts", NS),
    ("create", "", "serviceaccounts/token", NS),
    ("create", "", "namespaces", CLUSTER),
    ("delete", "", "namespaces", CLUSTER),
    ("create", "", "pods", NS),
    ("delete", "", "pods", NS),
    ("create", "", "pods/exec", NS),
    ("update", "", "nodes", CLUSTER),
    ("create", "apps", "daemonsets", NS),
    (
        "create",
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        CLUSTER,
    ),
    (
        "update",
        "admissionregistration.k8s.io",
        "mutatingwebhookconfigurations",
        CLUSTER,
    ),
    ("create", "serin.dev", "canarypolicies", CLUSTER),
    ("update", "serin.dev", "analysistemplates", NS),
    // Secret copies are written by server-side apply (patch), never replaced whole.
    ("update", "", "secrets", NS),
    ("create", "coordination.k8s.io", "leases", NS),
    ("create", "gateway.networking.k8s.io", "gateways", NS),
    (
        "update",
        "gateway.networking.k8s.io",
        "gatewayclasses",
        CLUSTER,
    ),
    ("create", "gateway.networking.k8s.io", "referencegrants", NS),
    // Ingress classes decide which controller serves Ingresses: not Serin's to change.
    ("create", "networking.k8s.io", "ingressclasses", CLUSTER),
    ("create", "networking.k8s.io", "networkpolicies", NS),
    (
        "update",
        "coordination.k8s.io",
        "leases",
        Some("kube-system"),
    ),
];

/// Whether the API server's authorizer allows `access` to `who`.
async fn allowed(
    client: &Client,
    who: &Identity,
    (verb, group, resource, namespace): Access<'_>,
) -> bool {
    let (resource, subresource) = resource.split_once('/').unwrap_or((resource, ""));
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(who.user()),
            groups: Some(who.groups()),
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.into()),
                group: Some(group.into()),
                resource: Some(resource.into()),
                subresource: Some(subresource.into()),
                namespace: namespace.map(Into::into),
                ..ResourceAttributes::default()
            }),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    };
    let reviewed = Api::<SubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .expect("create SubjectAccessReview");
    reviewed.status.is_some_and(|s| s.allowed)
}

fn describe((verb, group, resource, namespace): Access<'_>) -> String {
    let group = if group.is_empty() { "core" } else { group };
    match namespace {
        Some(ns) => format!("{verb} {resource} ({group}) in {ns}"),
        None => format!("{verb} {resource} ({group}) cluster-wide"),
    }
}

/// The accesses in `table` whose answer for `who` is not `expected`.
async fn mismatches(
    client: &Client,
    who: &Identity,
    table: &[Access<'_>],
    expected: bool,
) -> Vec<String> {
    let mut wrong = Vec::new();
    for &access in table {
        if allowed(client, who, access).await != expected {
            wrong.push(describe(access));
        }
    }
    wrong
}

/// The local Serin's ServiceAccount, with manifests/rbac.yaml and the Secret tracking grant
/// applied (hack/serin.sh up).
async fn local_serin() -> (Client, Identity) {
    support::serin();
    (support::client().await, Identity::serin())
}

#[tokio::test]
async fn service_account_may_do_what_the_controller_needs() {
    let (client, serin) = local_serin().await;
    let tables = [NEEDED, SECRET_TRACKING].concat();
    let denied = mismatches(&client, &serin, &tables, true).await;
    assert!(
        denied.is_empty(),
        "{SA_USER} is denied what Serin needs:\n  {}",
        denied.join("\n  ")
    );
}

#[tokio::test]
async fn service_account_may_not_escalate_touch_pods_or_manage_namespaces() {
    let (client, serin) = local_serin().await;
    let granted = mismatches(&client, &serin, FORBIDDEN, false).await;
    assert!(
        granted.is_empty(),
        "{SA_USER} is granted what Serin must not have:\n  {}",
        granted.join("\n  ")
    );
}

/// A ServiceAccount `serin` in a fresh test namespace, bound by copies of every binding in
/// manifests/rbac.yaml (same roles, same namespaces, this subject), so it has exactly the
/// base's grants and none of an overlay's. The copies are owned by the test namespace, so
/// the garbage collector deletes them with it. Returns once the authorizer applies them.
async fn base_only_service_account(client: &Client) -> (support::TestNamespace, Identity) {
    support::serin(); // the base's roles, as manifests/rbac.yaml has them now
    let ns = support::TestNamespace::create(client, "rbac-base").await;
    let who = Identity {
        namespace: ns.name.clone(),
        name: "serin".into(),
    };
    let account = ServiceAccount {
        metadata: ObjectMeta {
            name: Some(who.name.clone()),
            ..ObjectMeta::default()
        },
        ..ServiceAccount::default()
    };
    Api::<ServiceAccount>::namespaced(client.clone(), &ns.name)
        .create(&PostParams::default(), &account)
        .await
        .expect("create the ServiceAccount");
    let namespace = Api::<Namespace>::all(client.clone())
        .get(&ns.name)
        .await
        .expect("the test namespace");
    let owner = OwnerReference {
        api_version: "v1".into(),
        kind: "Namespace".into(),
        name: ns.name.clone(),
        uid: namespace.metadata.uid.clone().expect("namespace uid"),
        ..OwnerReference::default()
    };
    let subject = Subject {
        kind: "ServiceAccount".into(),
        name: who.name.clone(),
        namespace: Some(ns.name.clone()),
        ..Subject::default()
    };
    // Each copy is named after the binding and the test namespace.
    let copy_meta = |meta: &ObjectMeta| ObjectMeta {
        name: Some(format!(
            "{}-{}",
            meta.name.as_deref().unwrap_or_default(),
            ns.name
        )),
        namespace: meta.namespace.clone(),
        owner_references: Some(vec![owner.clone()]),
        ..ObjectMeta::default()
    };
    let path = support::repo_root().join("manifests/rbac.yaml");
    let text = std::fs::read_to_string(&path).expect("manifests/rbac.yaml");
    let mut copies = 0;
    for document in serde_yaml::Deserializer::from_str(&text) {
        let object = serde_json::Value::deserialize(document).expect("rbac.yaml is YAML");
        match object["kind"].as_str() {
            Some("ClusterRoleBinding") => {
                let binding: ClusterRoleBinding =
                    serde_json::from_value(object).expect("a ClusterRoleBinding");
                let copy = ClusterRoleBinding {
                    metadata: copy_meta(&binding.metadata),
                    role_ref: binding.role_ref,
                    subjects: Some(vec![subject.clone()]),
                };
                Api::<ClusterRoleBinding>::all(client.clone())
                    .create(&PostParams::default(), &copy)
                    .await
                    .expect("create a copy of a ClusterRoleBinding");
                copies += 1;
            }
            Some("RoleBinding") => {
                let binding: RoleBinding = serde_json::from_value(object).expect("a RoleBinding");
                let namespace = binding.metadata.namespace.clone().expect("its namespace");
                let copy = RoleBinding {
                    metadata: copy_meta(&binding.metadata),
                    role_ref: binding.role_ref,
                    subjects: Some(vec![subject.clone()]),
                };
                Api::<RoleBinding>::namespaced(client.clone(), &namespace)
                    .create(&PostParams::default(), &copy)
                    .await
                    .expect("create a copy of a RoleBinding");
                copies += 1;
            }
            _ => {}
        }
    }
    assert!(copies > 0, "manifests/rbac.yaml binds nothing");
    // The authorizer learns of new bindings from a watch: wait until a grant of the base
    // works, or every denial below would pass for the wrong reason.
    support::wait_until(
        "the copies of the base's bindings to take effect",
        Duration::from_secs(30),
        || async {
            let both = allowed(client, &who, NEEDED[0]).await
                && allowed(
                    client,
                    &who,
                    (
                        "update",
                        "coordination.k8s.io",
                        "leases",
                        Some("serin-system"),
                    ),
                )
                .await;
            both.then_some(())
                .ok_or_else(|| "not yet allowed".to_owned())
        },
    )
    .await;
    (ns, who)
}

#[tokio::test]
async fn base_rbac_alone_grants_what_serin_needs_without_secret_tracking() {
    let client = support::client().await;
    let (_ns, base) = base_only_service_account(&client).await;
    let denied = mismatches(&client, &base, NEEDED, true).await;
    assert!(
        denied.is_empty(),
        "with only manifests/rbac.yaml, {} is denied what Serin needs:\n  {}",
        base.user(),
        denied.join("\n  ")
    );
}

#[tokio::test]
async fn base_rbac_alone_reads_no_secret_anywhere_and_cannot_modify_rbac() {
    let client = support::client().await;
    let (ns, base) = base_only_service_account(&client).await;
    let own_namespace: Vec<Access<'_>> = ["get", "list", "watch"]
        .iter()
        .map(|&verb| (verb, "", "secrets", Some(ns.name.as_str())))
        .collect();
    let table = [SECRETS_READ, SECRET_TRACKING, FORBIDDEN, &own_namespace].concat();
    let granted = mismatches(&client, &base, &table, false).await;
    assert!(
        granted.is_empty(),
        "with only manifests/rbac.yaml, {} is granted:\n  {}",
        base.user(),
        granted.join("\n  ")
    );

    // The same answers from `kubectl auth can-i`, impersonating that ServiceAccount.
    let user = base.user();
    let cases: &[&[&str]] = &[
        &["get", "secrets", "-n", "default"],
        &["list", "secrets", "-n", "default"],
        &["watch", "secrets", "-n", "default"],
        &["get", "secrets", "-n", "serin-system"],
        &["list", "secrets", "--all-namespaces"],
        &["watch", "secrets", "--all-namespaces"],
        &["create", "clusterroles"],
        &["update", "clusterrolebindings"],
        &["patch", "roles", "-n", "serin-system"],
        &["create", "rolebindings", "-n", "default"],
    ];
    let wrong = can_i_mismatches(&user, cases, "no");
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // And it is the base's grants that are asked, not an unbound account.
    let wrong = can_i_mismatches(
        &user,
        &[&["patch", "deployments.apps", "-n", "default"]],
        "yes",
    );
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// The `kubectl auth can-i --as USER ARGS` answers that are not `expected`.
fn can_i_mismatches(user: &str, cases: &[&[&str]], expected: &str) -> Vec<String> {
    let mut wrong = Vec::new();
    for args in cases {
        let mut full = vec!["auth", "can-i", "--as", user];
        full.extend_from_slice(args);
        let (_, stdout, stderr) = support::kubectl(&full, None);
        let answer = stdout.trim();
        if answer != expected {
            wrong.push(format!(
                "kubectl {}: {answer:?}, expected {expected:?} ({})",
                full.join(" "),
                stderr.trim()
            ));
        }
    }
    wrong
}

#[test]
fn kubectl_auth_can_i_as_the_service_account_agrees() {
    support::serin();
    let cases: &[(&[&str], &str)] = &[
        (&["patch", "deployments.apps", "-n", "default"], "yes"),
        // The local Serin tracks Secrets (overlays/secret-tracking).
        (&["get", "secrets", "-n", "default"], "yes"),
        (&["watch", "secrets", "--all-namespaces"], "yes"),
        (&["create", "secrets", "-n", "default"], "yes"),
        (&["update", "secrets", "-n", "default"], "no"),
        (
            &["create", "trafficsplits.split.smi-spec.io", "-n", "default"],
            "yes",
        ),
        (
            &[
                "patch",
                "httproutes.gateway.networking.k8s.io",
                "-n",
                "default",
            ],
            "yes",
        ),
        (
            &["patch", "ingresses.networking.k8s.io", "-n", "default"],
            "yes",
        ),
        (
            &["patch", "routetables.gateway.solo.io", "-n", "default"],
            "yes",
        ),
        (
            &["delete", "upstreams.gloo.solo.io", "-n", "default"],
            "yes",
        ),
        (
            &["create", "virtualservices.gateway.solo.io", "-n", "default"],
            "no",
        ),
        (&["create", "ingressclasses.networking.k8s.io"], "no"),
        (
            &[
                "create",
                "gateways.gateway.networking.k8s.io",
                "-n",
                "default",
            ],
            "no",
        ),
        (&["create", "events.events.k8s.io", "-n", "default"], "yes"),
        (&["update", "leases", "-n", "serin-system"], "yes"),
        (&["update", "leases", "-n", "default"], "no"),
        (&["create", "clusterroles"], "no"),
        (&["delete", "namespaces"], "no"),
        (&["create", "pods", "-n", "default"], "no"),
    ];
    let wrong: Vec<String> = cases
        .iter()
        .flat_map(|(args, expected)| can_i_mismatches(SA_USER, &[args], expected))
        .collect();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// The local Serin's kubeconfig, as `hack/serin.sh up` made it, read by the same client
/// library Serin uses.
async fn serin_kubeconfig_client() -> Client {
    let path = support::repo_root().join(".serin/serin/kubeconfig");
    let kubeconfig =
        Kubeconfig::read_from(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap_or_else(|e| panic!("using {}: {e}", path.display()));
    Client::try_from(config).expect("client from Serin's kubeconfig")
}

#[tokio::test]
async fn local_serin_runs_as_the_service_account_not_as_admin() {
    if std::env::var_os("KUBECONFIG").is_some() {
        eprintln!("skipped: KUBECONFIG is set, Serin is not run by hack/serin.sh");
        return;
    }
    support::serin();
    let client = serin_kubeconfig_client().await;

    let me = Api::<SelfSubjectReview>::all(client.clone())
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .expect("SelfSubjectReview with Serin's kubeconfig");
    let username = me.status.and_then(|s| s.user_info).and_then(|u| u.username);
    assert_eq!(username.as_deref(), Some(SA_USER));

    // What the role grants works with this kubeconfig; what it does not is refused.
    Api::<Deployment>::all(client.clone())
        .list(&ListParams::default().limit(1))
        .await
        .expect("list Deployments as Serin");
    match Api::<Pod>::all(client).list(&ListParams::default()).await {
        Err(kube::Error::Api(e)) if e.code == 403 => {}
        other => panic!("listing Pods as Serin should be forbidden, got {other:?}"),
    }

    // And the running process was given that kubeconfig (`serin run --kubeconfig ...`).
    let root = support::repo_root().join(".serin/serin");
    let pid = std::fs::read_to_string(root.join("serin.pid")).expect("serin.pid");
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", pid.trim()))
        .expect("the running Serin's command line");
    let args: Vec<String> = cmdline
        .split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let kubeconfig = root.join("kubeconfig").display().to_string();
    assert_eq!(args.get(1).map(String::as_str), Some("run"), "{args:?}");
    assert!(
        args.windows(2)
            .any(|w| w[0] == "--kubeconfig" && w[1] == kubeconfig),
        "serin runs without --kubeconfig {kubeconfig}: {args:?}"
    );
}
