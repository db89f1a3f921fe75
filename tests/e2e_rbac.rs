//! Serin's identity: the `serin` ServiceAccount in `serin-system` with the RBAC of
//! `manifests/rbac.yaml` may do what the webhooks and the controller need and nothing it
//! could abuse, and the local Serin really runs under it (not the admin credentials).
//!
//! The local Serin tracks Secrets, so `hack/serin.sh` also applies the grant of the Component
//! `manifests/overlays/secret-tracking`. What the base alone allows is asked of a fresh
//! ServiceAccount in a test namespace, bound exactly as `manifests/rbac.yaml` binds Serin's
//! (copies of its bindings, owned by that namespace and so deleted with it): it may do what
//! Serin needs without Secret tracking, and reads no Secret anywhere; with the Component
//! `manifests/overlays/alerts` it reads (`get`) the Secrets of serin-system and no other.
//!
//! The tables ask the API server's authorizer directly (a SubjectAccessReview with the exact
//! group, resource and subresource), which also answers for Serin's own CRDs before they are
//! installed; `kubectl auth can-i --as` gives the same answers for the ones it can resolve.
//!
//! RBAC grants by kind, so the writes it allows cluster-wide are narrowed by the boundary,
//! the ValidatingAdmissionPolicy of `manifests/boundary.yaml`, to the objects Serin manages.
//! The authorizer cannot see it: its rows are real requests as Serin with a server-side dry
//! run (`kubectl --as ... --dry-run=server`), each refusal checked to come from the policy.
//! Last, people: `manifests/user-roles.yaml` lets users bound to the built-in `view` and
//! `edit` roles read Canaries and steer them with the kubectl plugin. docs/security.md is the
//! user-facing account of all of it.

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
    // Opted-in DaemonSets and their `-primary` copies (no scale subresource).
    ("get", "apps", "daemonsets", NS),
    ("watch", "apps", "daemonsets", CLUSTER),
    ("create", "apps", "daemonsets", NS),
    ("patch", "apps", "daemonsets", NS),
    ("delete", "apps", "daemonsets", NS),
    ("create", "", "services", NS),
    ("patch", "", "services", NS),
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
    // Admission policies, which no admission check covers: requireCanary is a fixed pair of
    // policies shipped in manifests/require-canary.yaml, so Serin writes none.
    (
        "create",
        "admissionregistration.k8s.io",
        "validatingadmissionpolicies",
        CLUSTER,
    ),
    (
        "patch",
        "admissionregistration.k8s.io",
        "validatingadmissionpolicybindings",
        CLUSTER,
    ),
    (
        "delete",
        "admissionregistration.k8s.io",
        "validatingadmissionpolicies",
        CLUSTER,
    ),
    (
        "delete",
        "admissionregistration.k8s.io",
        "validatingadmissionpolicybindings",
        CLUSTER,
    ),
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
    // Serin's writes are server-side applies and merge patches: it never replaces an object
    // whole (the Lease and, with --self-signed, its Secret aside), so `update` is not granted.
    ("update", "apps", "deployments", NS),
    ("update", "apps", "deployments/scale", NS),
    ("update", "apps", "daemonsets", NS),
    ("update", "", "services", NS),
    ("update", "", "configmaps", NS),
    ("update", "serin.dev", "canaries", NS),
    ("update", "serin.dev", "canaries/status", NS),
    (
        "update",
        "admissionregistration.k8s.io",
        "validatingadmissionpolicies",
        CLUSTER,
    ),
    // Nor does it delete in bulk.
    ("deletecollection", "apps", "deployments", NS),
    ("deletecollection", "", "configmaps", NS),
    // Nor write the webhook configurations (only overlays/self-signed patches its own).
    (
        "patch",
        "admissionregistration.k8s.io",
        "validatingwebhookconfigurations",
        CLUSTER,
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
#[ignore = "e2e: needs the local environment (make test-e2e)"]
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
#[ignore = "e2e: needs the local environment (make test-e2e)"]
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
    bound_service_account(client, "rbac-base", &["manifests/rbac.yaml"]).await
}

/// A ServiceAccount `serin` in a fresh test namespace (named from `prefix`), bound by copies
/// of every binding in `files` (paths from the repository's root), as
/// [`base_only_service_account`] describes.
async fn bound_service_account(
    client: &Client,
    prefix: &str,
    files: &[&str],
) -> (support::TestNamespace, Identity) {
    support::serin(); // the roles, as the manifests have them now
    let ns = support::TestNamespace::create(client, prefix).await;
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
    let text: String = files
        .iter()
        .map(|file| {
            let path = support::repo_root().join(file);
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
            format!("{text}\n---\n")
        })
        .collect();
    let mut copies = 0;
    for document in serde_yaml_ng::Deserializer::from_str(&text) {
        let object = serde_json::Value::deserialize(document).expect("RBAC files are YAML");
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
#[ignore = "e2e: needs the local environment (make test-e2e)"]
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
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn alerts_component_adds_only_get_on_the_secrets_of_serin_system() {
    let client = support::client().await;
    let files = ["manifests/rbac.yaml", "manifests/overlays/alerts/rbac.yaml"];
    let (_ns, serin) = bound_service_account(&client, "rbac-alerts", &files).await;
    let alerts: &[Access<'_>] = &[("get", "", "secrets", Some("serin-system"))];
    support::wait_until(
        "the Role of the alerts to take effect",
        Duration::from_secs(30),
        || {
            let (client, serin) = (&client, &serin);
            async move {
                allowed(client, serin, alerts[0])
                    .await
                    .then_some(())
                    .ok_or_else(|| "not yet allowed".to_owned())
            }
        },
    )
    .await;
    let denied = mismatches(&client, &serin, &[NEEDED, alerts].concat(), true).await;
    assert!(denied.is_empty(), "denied:\n  {}", denied.join("\n  "));
    // Nothing else of Secrets: not listed or watched, not read in any other namespace.
    let others: Vec<Access<'_>> = SECRETS_READ
        .iter()
        .chain(SECRET_TRACKING)
        .copied()
        .filter(|access| !alerts.contains(access))
        .collect();
    let granted = mismatches(&client, &serin, &others, false).await;
    assert!(granted.is_empty(), "granted:\n  {}", granted.join("\n  "));
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
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
#[ignore = "e2e: needs the local environment (make test-e2e)"]
fn kubectl_auth_can_i_as_the_service_account_agrees() {
    support::serin();
    let cases: &[(&[&str], &str)] = &[
        (&["patch", "deployments.apps", "-n", "default"], "yes"),
        // Server-side apply and merge patches: no `update` (manifests/rbac.yaml).
        (&["update", "deployments.apps", "-n", "default"], "no"),
        (&["update", "configmaps", "-n", "default"], "no"),
        // RBAC allows this cluster-wide; the boundary (tests below) narrows it to
        // Serin's objects, which `can-i` cannot see.
        (&["patch", "configmaps", "-n", "kube-system"], "yes"),
        // No admission policy at all: requireCanary's two are shipped, not written by Serin.
        (
            &[
                "create",
                "validatingadmissionpolicies.admissionregistration.k8s.io",
            ],
            "no",
        ),
        (
            &[
                "delete",
                "validatingadmissionpolicybindings.admissionregistration.k8s.io",
            ],
            "no",
        ),
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
#[ignore = "e2e: needs the local environment (make test-e2e)"]
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

// ---------------------------------------------------------------------------------------
// The boundary: manifests/boundary.yaml, the ValidatingAdmissionPolicy that keeps Serin's
// writes to what it manages. RBAC alone (the tables above, `kubectl auth can-i`) cannot see
// it, so every row here is a real request as Serin (`kubectl --as`) with a server-side dry
// run: the API server authorizes it and runs admission, the policy included, and stores
// nothing.

/// One write as Serin and whether the API server must accept it.
struct Write {
    what: String,
    args: Vec<String>,
    stdin: Option<String>,
    allowed: bool,
}

impl Write {
    fn new(allowed: bool, what: &str, args: &[&str], stdin: Option<String>) -> Self {
        Write {
            what: what.to_owned(),
            args: args.iter().map(|a| a.to_string()).collect(),
            stdin,
            allowed,
        }
    }

    fn allowed(what: &str, args: &[&str]) -> Self {
        Self::new(true, what, args, None)
    }

    fn refused(what: &str, args: &[&str]) -> Self {
        Self::new(false, what, args, None)
    }

    /// `kubectl create -f -` of `manifest` (YAML).
    fn create(allowed: bool, what: &str, namespace: &str, manifest: &str) -> Self {
        Self::new(
            allowed,
            what,
            &["create", "-n", namespace, "-f", "-"],
            Some(manifest.to_owned()),
        )
    }
}

/// The rows of `table` whose answer as `user` is not the expected one. A refusal counts only
/// when `policy` gave it (a 403 from RBAC or a missing object would pass for the wrong
/// reason).
fn boundary_mismatches(user: &str, policy: &str, table: &[Write]) -> Vec<String> {
    let mut wrong = Vec::new();
    for row in table {
        let mut args: Vec<&str> = row.args.iter().map(String::as_str).collect();
        args.extend(["--as", user, "--dry-run=server"]);
        let (ok, stdout, stderr) = support::kubectl(&args, row.stdin.as_deref());
        let refused_by_policy =
            !ok && stderr.contains(&format!("ValidatingAdmissionPolicy '{policy}'"));
        let answer = match (row.allowed, ok, refused_by_policy) {
            (true, true, _) | (false, _, true) => continue,
            (true, false, _) => format!("refused: {}", stderr.trim()),
            (false, true, _) => format!("allowed: {}", stdout.trim()),
            (false, false, false) => format!("refused, but not by {policy}: {}", stderr.trim()),
        };
        let expected = if row.allowed { "allowed" } else { "refused" };
        wrong.push(format!("{} (expected {expected}): {answer}", row.what));
    }
    wrong
}

/// `kubectl create` as admin, panicking on failure.
fn admin_create(namespace: &str, manifest: &str) {
    let (ok, _, stderr) = support::kubectl(&["create", "-n", namespace, "-f", "-"], Some(manifest));
    assert!(ok, "creating in {namespace}: {stderr}\n{manifest}");
}

/// A Deployment manifest: `name`, its labels (`{}` for none), one container.
fn deployment_yaml(name: &str, labels: &str, spec_extra: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}, labels: {labels}}}\n\
         spec:\n  selector: {{matchLabels: {{app: {name}}}}}\n{spec_extra}  template:\n    \
         metadata: {{labels: {{app: {name}}}}}\n    spec: {{containers: [{{name: app, image: \
         example.invalid/{name}:1}}]}}\n"
    )
}

fn config_map_yaml(name: &str, labels: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, labels: {labels}}}\ndata: {{a: b}}\n"
    )
}

fn service_yaml(name: &str, labels: &str, kind: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, labels: {labels}}}\n\
         spec: {{type: {kind}, selector: {{app: {name}}}, ports: [{{port: 8080}}]}}\n"
    )
}

/// The user's objects in `ns` the table refers to: a ConfigMap, a Service and a Deployment
/// of the user's (no Serin label), a ConfigMap and a Service labelled as Serin's (as Serin's
/// `-primary` copies are), and the opted-in Deployment `web`, labelled serin.dev/canary by
/// Serin's webhook. Returns once Serin made `web-primary`, so that its writes in `ns` pass
/// the boundary too.
async fn boundary_fixture(client: &Client, ns: &str) {
    admin_create(ns, &config_map_yaml("plain", "{}"));
    admin_create(ns, &service_yaml("plain", "{}", "ClusterIP"));
    admin_create(ns, &deployment_yaml("plain", "{}", ""));
    admin_create(
        ns,
        &config_map_yaml("settings-primary", "{serin.dev/owner: web}"),
    );
    admin_create(
        ns,
        &service_yaml("owned", "{serin.dev/owner: web}", "ClusterIP"),
    );
    let web = support::release::manifest(ns, "web", &support::release::Version::good("1.0.0"), &[]);
    let (ok, _, stderr) = support::kubectl(&["apply", "-f", "-"], Some(&web));
    assert!(ok, "opting web in: {stderr}");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    support::wait_until(
        "Serin to make web-primary (its writes pass the boundary)",
        Duration::from_secs(60),
        || async {
            let web = deployments.get("web").await.map_err(|e| e.to_string())?;
            let labelled = web
                .metadata
                .labels
                .unwrap_or_default()
                .contains_key("serin.dev/canary");
            match deployments
                .get_opt("web-primary")
                .await
                .map_err(|e| e.to_string())?
            {
                Some(_) if labelled => Ok(()),
                found => Err(format!("labelled {labelled}, primary {}", found.is_some())),
            }
        },
    )
    .await;
}

/// The Lease Serin holds, as JSON for a `kubectl replace` (an update, the verb Serin renews
/// it with), without its resourceVersion: Serin renews it meanwhile.
fn serin_lease_json() -> String {
    let (ok, stdout, stderr) = support::kubectl(
        &[
            "get",
            "lease",
            "serin-controller",
            "-n",
            "serin-system",
            "-o",
            "json",
        ],
        None,
    );
    assert!(ok, "Serin's Lease: {stderr}");
    let mut lease: serde_json::Value = serde_json::from_str(&stdout).expect("a Lease");
    if let Some(meta) = lease["metadata"].as_object_mut() {
        meta.remove("resourceVersion");
    }
    lease.to_string()
}

/// The writes of manifests/boundary.yaml, as Serin: what it does is allowed, what it must
/// not do is refused by the policy (not merely by RBAC).
fn boundary_table(ns: &str, protected_ns: &str) -> Vec<Write> {
    let primary = deployment_yaml("api-primary", "{serin.dev/owner: api}", "");
    let event = format!(
        "apiVersion: events.k8s.io/v1\nkind: Event\nmetadata: {{name: web.e2e}}\n\
         eventTime: \"2025-01-01T00:00:00.000000Z\"\nreportingController: serin.dev/serin\n\
         reportingInstance: e2e\naction: Promote\nreason: Promoted\ntype: Normal\n\
         regarding: {{apiVersion: apps/v1, kind: Deployment, name: web, namespace: {ns}}}\n"
    );
    let label_owner = r#"{"metadata":{"labels":{"serin.dev/owner":"plain"}}}"#;
    vec![
        // What Serin does.
        Write::create(
            true,
            "create the -primary Deployment of an opted-in Deployment",
            ns,
            &primary,
        ),
        Write::allowed(
            "remove serin.dev/canary from the opted-in Deployment (opting out)",
            &[
                "patch",
                "deployment",
                "web",
                "-n",
                ns,
                "--type",
                "merge",
                "-p",
                r#"{"metadata":{"labels":{"serin.dev/canary":null}}}"#,
            ],
        ),
        Write::allowed(
            "record a kubectl scale as serin.dev/desired-replicas on the opted-in Deployment",
            &[
                "patch",
                "deployment",
                "web",
                "-n",
                ns,
                "--type",
                "merge",
                "-p",
                r#"{"metadata":{"annotations":{"serin.dev/desired-replicas":"5"}}}"#,
            ],
        ),
        Write::allowed(
            "scale the opted-in Deployment (the canary)",
            &["scale", "deployment", "web", "-n", ns, "--replicas", "3"],
        ),
        Write::allowed(
            "patch a ConfigMap labelled serin.dev/owner (a -primary copy)",
            &[
                "patch",
                "configmap",
                "settings-primary",
                "-n",
                ns,
                "--type",
                "merge",
                "-p",
                r#"{"data":{"a":"c"}}"#,
            ],
        ),
        Write::allowed(
            "delete a ConfigMap labelled serin.dev/owner",
            &["delete", "configmap", "settings-primary", "-n", ns],
        ),
        Write::allowed(
            "drop serin.dev/owner from its Service (opting out hands the apex back)",
            &[
                "patch",
                "service",
                "owned",
                "-n",
                ns,
                "--type",
                "merge",
                "-p",
                r#"{"metadata":{"labels":{"serin.dev/owner":null}}}"#,
            ],
        ),
        Write::create(
            true,
            "create a labelled ConfigMap",
            ns,
            &config_map_yaml("other-primary", "{serin.dev/owner: web}"),
        ),
        Write::create(
            true,
            "create a labelled ClusterIP Service",
            ns,
            &service_yaml("web-extra", "{serin.dev/owner: web}", "ClusterIP"),
        ),
        Write::allowed(
            "take over an existing Service as the apex (adding serin.dev/owner)",
            &[
                "patch",
                "service",
                "plain",
                "-n",
                ns,
                "--type",
                "merge",
                "-p",
                label_owner,
            ],
        ),
        Write::create(true, "create an Event", ns, &event),
        Write::new(
            true,
            "update the Lease serin-system/serin-controller",
            &["replace", "-f", "-"],
            Some(serin_lease_json()),
        ),
        Write::create(
            true,
            "create a Secret serin-system/serin-webhook-tls (--self-signed)",
            "serin-system",
            "apiVersion: v1\nkind: Secret\nmetadata: {name: serin-webhook-tls}\n",
        ),
        // What Serin must not do.
        Write::create(
            false,
            "create a Deployment in kube-system",
            "kube-system",
            &primary,
        ),
        Write::refused(
            "patch the ConfigMap kube-system/extension-apiserver-authentication",
            &[
                "patch",
                "configmap",
                "extension-apiserver-authentication",
                "-n",
                "kube-system",
                "--type",
                "merge",
                "-p",
                r#"{"data":{"x":"y"}}"#,
            ],
        ),
        Write::refused(
            "patch the Service default/kubernetes",
            &[
                "patch",
                "service",
                "kubernetes",
                "-n",
                "default",
                "--type",
                "merge",
                "-p",
                r#"{"metadata":{"annotations":{"x":"y"}}}"#,
            ],
        ),
        Write::refused(
            "take over the Service default/kubernetes",
            &[
                "patch",
                "service",
                "kubernetes",
                "-n",
                "default",
                "--type",
                "merge",
                "-p",
                r#"{"metadata":{"labels":{"serin.dev/owner":"kubernetes"}},"spec":{"selector":{"app":"x"}}}"#,
            ],
        ),
        Write::refused(
            "patch a user's unlabelled ConfigMap",
            &[
                "patch",
                "configmap",
                "plain",
                "-n",
                ns,
                "--type",
                "merge",
                "-p",
                r#"{"data":{"a":"c"}}"#,
            ],
        ),
        Write::refused(
            "delete a user's unlabelled ConfigMap",
            &["delete", "configmap", "plain", "-n", ns],
        ),
        Write::refused(
            "patch a user's unlabelled Service (not taking it over)",
            &[
                "patch",
                "service",
                "plain",
                "-n",
                ns,
                "--type",
                "merge",
                "-p",
                r#"{"spec":{"selector":{"app":"elsewhere"}}}"#,
            ],
        ),
        Write::refused(
            "patch a user's Deployment that did not opt in",
            &[
                "patch",
                "deployment",
                "plain",
                "-n",
                ns,
                "--type",
                "merge",
                "-p",
                r#"{"metadata":{"labels":{"x":"y"}}}"#,
            ],
        ),
        Write::refused(
            "delete a user's Deployment",
            &["delete", "deployment", "plain", "-n", ns],
        ),
        Write::refused(
            "change the opted-in Deployment's pod template",
            &[
                "set",
                "image",
                "deployment/web",
                "-n",
                ns,
                "app=example.invalid/evil:1",
            ],
        ),
        Write::refused(
            "change another annotation of the opted-in Deployment",
            &[
                "patch",
                "deployment",
                "web",
                "-n",
                ns,
                "--type",
                "merge",
                "-p",
                r#"{"metadata":{"annotations":{"serin.dev/step-weight":"100"}}}"#,
            ],
        ),
        Write::refused(
            "add a label to the opted-in Deployment",
            &[
                "patch",
                "deployment",
                "web",
                "-n",
                ns,
                "--type",
                "merge",
                "-p",
                r#"{"metadata":{"labels":{"x":"y"}}}"#,
            ],
        ),
        Write::create(
            false,
            "create a labelled Deployment not named <owner>-primary",
            ns,
            &deployment_yaml("api", "{serin.dev/owner: api}", ""),
        ),
        Write::create(
            false,
            "create a labelled NodePort Service",
            ns,
            &service_yaml("web-nodeport", "{serin.dev/owner: web}", "NodePort"),
        ),
        Write::create(
            false,
            "create a labelled ConfigMap in serin-system",
            "serin-system",
            &config_map_yaml("web-primary", "{serin.dev/owner: web}"),
        ),
        Write::create(
            false,
            "create another Secret in serin-system",
            "serin-system",
            "apiVersion: v1\nkind: Secret\nmetadata: {name: e2e-other, labels: {serin.dev/owner: web}}\n",
        ),
        Write::create(
            false,
            "create a labelled ConfigMap in a namespace labelled serin.dev/protected",
            protected_ns,
            &config_map_yaml("web-primary", "{serin.dev/owner: web}"),
        ),
    ]
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn boundary_lets_serin_write_only_what_it_manages() {
    support::serin();
    let client = support::client().await;
    let ns = support::TestNamespace::create(&client, "boundary").await;
    let protected = support::TestNamespace::create(&client, "boundary-protected").await;
    let (ok, _, stderr) = support::kubectl(
        &[
            "label",
            "namespace",
            &protected.name,
            "serin.dev/protected=true",
        ],
        None,
    );
    assert!(ok, "{stderr}");
    boundary_fixture(&client, &ns.name).await;
    let wrong = boundary_mismatches(
        SA_USER,
        "serin-boundary",
        &boundary_table(&ns.name, &protected.name),
    );
    assert!(
        wrong.is_empty(),
        "as {SA_USER} (manifests/boundary.yaml):\n  {}",
        wrong.join("\n  ")
    );
}

/// Admission policies are beyond any admission check (the API server runs none on them), so
/// the boundary could not hold them: Serin's identity may not write any, the boundary's own
/// included. requireCanary is a fixed pair of policies in manifests/require-canary.yaml.
#[test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
fn serin_cannot_touch_admission_policies_the_boundary_included() {
    support::serin();
    for (kind, name) in [
        ("validatingadmissionpolicy", "serin-boundary"),
        ("validatingadmissionpolicybinding", "serin-boundary"),
        ("validatingadmissionpolicy", "serin-require-canary"),
        (
            "validatingadmissionpolicybinding",
            "serin-require-canary-warn",
        ),
    ] {
        let (ok, _, stderr) = support::kubectl(
            &["delete", kind, name, "--as", SA_USER, "--dry-run=server"],
            None,
        );
        assert!(!ok, "Serin may delete {kind} {name}");
        assert!(stderr.contains("forbidden"), "{kind} {name}: {stderr}");
    }
}

/// The documents of a manifest file, as JSON.
fn manifest_documents(file: &str) -> Vec<serde_json::Value> {
    let path = support::repo_root().join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| serde_json::Value::deserialize(doc).expect("YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

/// Applies `object` (JSON) as admin, owned by the test namespace `owner` (so that the garbage
/// collector deletes a cluster-scoped copy with it).
fn apply_owned(mut object: serde_json::Value, owner: &Namespace) {
    object["metadata"]["ownerReferences"] = serde_json::json!([{
        "apiVersion": "v1", "kind": "Namespace",
        "name": owner.metadata.name, "uid": owner.metadata.uid,
    }]);
    let (ok, _, stderr) = support::kubectl(&["apply", "-f", "-"], Some(&object.to_string()));
    assert!(ok, "applying {}: {stderr}", object["metadata"]["name"]);
}

/// A caBundle: base64 of a throwaway self-signed certificate (CN serin-e2e-not-a-ca; its key
/// was not kept). The API server parses a CRD's caBundle as PEM.
const BUNDLE: &str = concat!(
    "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUJqekNDQVRXZ0F3SUJBZ0lVVlc1Tm5SeUJHVjU4",
    "YUNLTUtlcHNmUjRNL2NFd0NnWUlLb1pJemowRUF3SXcKSFRFYk1Ca0dBMVVFQXd3U2MyVnlhVzR0WlRK",
    "bExXNXZkQzFoTFdOaE1CNFhEVEkyTVRJd05USXpNelF3T1ZvWApEVE0yTVRJd01qSXpNelF3T1Zvd0hU",
    "RWJNQmtHQTFVRUF3d1NjMlZ5YVc0dFpUSmxMVzV2ZEMxaExXTmhNRmt3CkV3WUhLb1pJemowQ0FRWUlL",
    "b1pJemowREFRY0RRZ0FFdWlHTWIrcGJCRU1QQkZ2b2Fxb01DK0xxYkFOblZYY1EKY0FBeVc2YlFjazRk",
    "WlpITHZlQnRwbWs2MHowdlB1akZaTTJwUVhRNllCdm81T1Rvak5oeDZxTlRNRkV3SFFZRApWUjBPQkJZ",
    "RUZNcTZObTJoQ3pkWm43eFY5R0xTZjc3KzgwcU1NQjhHQTFVZEl3UVlNQmFBRk1xNk5tMmhDemRaCm43",
    "eFY5R0xTZjc3KzgwcU1NQThHQTFVZEV3RUIvd1FGTUFNQkFmOHdDZ1lJS29aSXpqMEVBd0lEU0FBd1JR",
    "SWcKUzgzamRqUE5GR0V4RkttL054NUNoVzlob1FheEdCdExRSWhWdzRJV0cvb0NJUUNEUFBMWGFTQ3px",
    "R3VzOTdBcQpacjgvRXJmaThWSnlyalBwYkNFUGlQMjZGUT09Ci0tLS0tRU5EIENFUlRJRklDQVRFLS0t",
    "LS0K",
);

/// With `--self-signed` (manifests/overlays/self-signed) Serin patches the caBundle of its
/// webhook configurations and of its CRDs' conversion webhook: the boundary lets it change
/// that and nothing else of them. The local Serin runs without that overlay's RBAC, so these
/// rows are asked of a ServiceAccount in a test namespace with a copy of the overlay's
/// ClusterRole and a copy of the boundary naming that ServiceAccount instead of Serin's (both
/// owned by the namespace).
#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn boundary_lets_self_signed_serin_change_only_ca_bundles() {
    support::serin();
    let client = support::client().await;
    let ns = support::TestNamespace::create(&client, "boundary-copy").await;
    let user = format!("system:serviceaccount:{}:serin", ns.name);
    let (ok, _, stderr) =
        support::kubectl(&["create", "serviceaccount", "serin", "-n", &ns.name], None);
    assert!(ok, "{stderr}");
    let namespace = Api::<Namespace>::all(client.clone())
        .get(&ns.name)
        .await
        .expect("the test namespace");
    let copy = format!("serin-boundary-{}", ns.name);
    for mut object in manifest_documents("manifests/boundary.yaml") {
        object["metadata"]["name"] = copy.clone().into();
        match object["kind"].as_str() {
            Some("ValidatingAdmissionPolicy") => {
                let conditions = object["spec"]["matchConditions"]
                    .as_array_mut()
                    .expect("matchConditions");
                assert_eq!(conditions.len(), 1, "one matchCondition, on the user name");
                conditions[0]["expression"] =
                    format!("request.userInfo.username == '{user}'").into();
            }
            _ => object["spec"]["policyName"] = copy.clone().into(),
        }
        apply_owned(object, &namespace);
    }
    for mut object in manifest_documents("manifests/overlays/self-signed/rbac.yaml") {
        let name = format!("e2e-self-signed-{}", ns.name);
        match object["kind"].as_str() {
            Some("ClusterRole") => object["metadata"] = serde_json::json!({"name": name}),
            Some("ClusterRoleBinding") => {
                object["metadata"] = serde_json::json!({"name": name});
                object["roleRef"]["name"] = name.into();
                object["subjects"] = serde_json::json!([
                    {"kind": "ServiceAccount", "name": "serin", "namespace": ns.name}
                ]);
            }
            _ => continue, // the Role in serin-system: not about the boundary
        }
        apply_owned(object, &namespace);
    }

    let hooks = |kind: &str| -> Vec<String> {
        let (ok, stdout, stderr) = support::kubectl(
            &["get", kind, "serin", "-o", "jsonpath={.webhooks[*].name}"],
            None,
        );
        assert!(ok, "{kind} serin: {stderr}");
        stdout.split_whitespace().map(String::from).collect()
    };
    // A CRD's caBundle must parse as PEM.
    let bundle = BUNDLE;
    let mut table = Vec::new();
    for kind in [
        "mutatingwebhookconfiguration",
        "validatingwebhookconfiguration",
    ] {
        let names = hooks(kind);
        assert!(!names.is_empty(), "{kind} serin has webhooks");
        let patch = |field: serde_json::Value| {
            let hooks: Vec<serde_json::Value> = names
                .iter()
                .map(|n| {
                    let mut hook = field.clone();
                    hook["name"] = n.clone().into();
                    hook
                })
                .collect();
            serde_json::json!({"webhooks": hooks}).to_string()
        };
        let ca = patch(serde_json::json!({"clientConfig": {"caBundle": bundle}}));
        let fail_open = patch(serde_json::json!({"failurePolicy": "Ignore"}));
        let url = patch(serde_json::json!({"clientConfig": {"url": "https://203.0.113.1/x"}}));
        let owned: &[(&str, bool, &str)] = &[
            ("its caBundle", true, &ca),
            ("failurePolicy", false, &fail_open),
            ("where it calls", false, &url),
        ];
        for (what, allowed, body) in owned {
            table.push(Write::new(
                *allowed,
                &format!("{kind} serin: {what}"),
                &["patch", kind, "serin", "--type", "strategic", "-p", body],
                None,
            ));
        }
        table.push(Write::refused(
            &format!("{kind} serin: a label"),
            &[
                "patch",
                kind,
                "serin",
                "--type",
                "merge",
                "-p",
                r#"{"metadata":{"labels":{"e2e":"x"}}}"#,
            ],
        ));
    }
    let crd_ca = format!(
        r#"{{"spec":{{"conversion":{{"webhook":{{"clientConfig":{{"caBundle":"{bundle}"}}}}}}}}}}"#
    );
    table.push(Write::allowed(
        "CRD canaries.serin.dev: the conversion webhook's caBundle",
        &[
            "patch",
            "crd",
            "canaries.serin.dev",
            "--type",
            "merge",
            "-p",
            &crd_ca,
        ],
    ));
    table.push(Write::refused(
        "CRD canaries.serin.dev: its names",
        &[
            "patch",
            "crd",
            "canaries.serin.dev",
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"names":{"shortNames":["canary"]}}}"#,
        ],
    ));
    table.push(Write::refused(
        "CRD analysistemplates.serin.dev: where conversion calls",
        &["patch", "crd", "analysistemplates.serin.dev", "--type", "merge", "-p",
          r#"{"spec":{"conversion":{"webhook":{"clientConfig":{"url":"https://203.0.113.1/convert"}}}}}"#],
    ));

    // The authorizer and the policy plugin learn of the copies from watches.
    let mut wrong = Vec::new();
    for _ in 0..40 {
        wrong = boundary_mismatches(&user, &copy, &table);
        if wrong.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        wrong.is_empty(),
        "as {user} (a copy of the boundary):\n  {}",
        wrong.join("\n  ")
    );
}

// ---------------------------------------------------------------------------------------
// People: manifests/user-roles.yaml adds Serin's objects to the built-in view, edit and admin
// roles, so a RoleBinding to `edit` is enough to read Canaries and steer releases with the
// kubectl plugin.

/// A kubeconfig that is the test cluster's, acting as `user` (impersonation, as
/// `kubectl --as` does), for the kubectl plugin.
fn impersonating_kubeconfig(user: &str) -> tempfile::NamedTempFile {
    let text = std::fs::read_to_string(support::kubeconfig()).expect("kubeconfig");
    let mut config: serde_json::Value = serde_yaml_ng::from_str(&text).expect("kubeconfig is YAML");
    for entry in config["users"].as_array_mut().expect("users") {
        entry["user"]["as"] = user.into();
    }
    let file = tempfile::Builder::new()
        .suffix(".kubeconfig")
        .tempfile_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("temp file");
    std::fs::write(
        file.path(),
        serde_yaml_ng::to_string(&config).expect("YAML"),
    )
    .expect("write");
    file
}

/// `serin kubectl --kubeconfig KUBECONFIG ARGS`: the plugin, as the user of that kubeconfig.
fn plugin_as(kubeconfig: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_serin"))
        .arg("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .expect("serin runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn edit_and_view_users_read_canaries_and_editors_steer_them() {
    support::release_environment();
    let client = support::client().await;
    let ns = support::TestNamespace::create(&client, "rbac-users").await;
    let web = support::release::manifest(
        &ns.name,
        "web",
        &support::release::Version::good("1.0.0"),
        &[],
    );
    let (ok, _, stderr) = support::kubectl(&["apply", "-f", "-"], Some(&web));
    assert!(ok, "opting web in: {stderr}");
    let editor = format!("e2e-editor@{}", ns.name);
    let viewer = format!("e2e-viewer@{}", ns.name);
    for (user, role) in [(&editor, "edit"), (&viewer, "view")] {
        let (ok, _, stderr) = support::kubectl(
            &[
                "create",
                "rolebinding",
                &format!("e2e-{role}"),
                "-n",
                &ns.name,
                &format!("--clusterrole={role}"),
                &format!("--user={user}"),
            ],
            None,
        );
        assert!(ok, "{stderr}");
    }
    let canaries: Api<serin::crd::Canary> = Api::namespaced(client.clone(), &ns.name);
    support::wait_until(
        "Serin to make the Canary web",
        Duration::from_secs(60),
        || async {
            canaries
                .get_opt("web")
                .await
                .map_err(|e| e.to_string())?
                .map(|_| ())
                .ok_or_else(|| "none yet".to_owned())
        },
    )
    .await;

    // The answers of the authorizer, once it has the bindings (and kube-controller-manager
    // has aggregated the roles).
    let n = ns.name.as_str();
    let cases: Vec<(&str, Vec<&str>, &str)> = vec![
        (&editor, vec!["get", "canaries.serin.dev", "-n", n], "yes"),
        (&editor, vec!["list", "canaries.serin.dev", "-n", n], "yes"),
        (&editor, vec!["watch", "canaries.serin.dev", "-n", n], "yes"),
        (&editor, vec!["patch", "canaries.serin.dev", "-n", n], "yes"),
        (&editor, vec!["get", "scanary", "-n", n], "yes"),
        (
            &editor,
            vec!["create", "analysistemplates.serin.dev", "-n", n],
            "yes",
        ),
        (
            &editor,
            vec!["update", "analysistemplates.serin.dev", "-n", n],
            "yes",
        ),
        (
            &editor,
            vec!["delete", "analysistemplates.serin.dev", "-n", n],
            "yes",
        ),
        // Canaries are Serin's: deleting one would lose the release state.
        (&editor, vec!["delete", "canaries.serin.dev", "-n", n], "no"),
        (&editor, vec!["create", "canaries.serin.dev", "-n", n], "no"),
        (
            &editor,
            vec![
                "patch",
                "canaries.serin.dev",
                "--subresource",
                "status",
                "-n",
                n,
            ],
            "no",
        ),
        (
            &editor,
            vec!["get", "canaries.serin.dev", "-n", "default"],
            "no",
        ),
        (&editor, vec!["list", "canarypolicies.serin.dev"], "no"),
        (&viewer, vec!["get", "canaries.serin.dev", "-n", n], "yes"),
        (
            &viewer,
            vec!["list", "analysistemplates.serin.dev", "-n", n],
            "yes",
        ),
        (&viewer, vec!["patch", "canaries.serin.dev", "-n", n], "no"),
        (
            &viewer,
            vec!["create", "analysistemplates.serin.dev", "-n", n],
            "no",
        ),
    ];
    let mut wrong = Vec::new();
    for _ in 0..60 {
        wrong = cases
            .iter()
            .flat_map(|(user, args, expected)| can_i_mismatches(user, &[args], expected))
            .collect();
        if wrong.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    // The plugin itself, as each of them.
    let as_editor = impersonating_kubeconfig(&editor);
    let (ok, stdout, stderr) = plugin_as(as_editor.path(), &["status", "-n", n]);
    assert!(
        ok && stdout.contains("web"),
        "kubectl serin status as {editor}: {stdout}{stderr}"
    );
    let (ok, stdout, stderr) = plugin_as(
        as_editor.path(),
        &["pause", "web", "-n", n, "--timeout", "0s"],
    );
    assert!(ok, "kubectl serin pause as {editor}: {stdout}{stderr}");
    let canary = canaries.get("web").await.expect("the Canary");
    assert_eq!(
        canary
            .metadata
            .annotations
            .unwrap_or_default()
            .get("serin.dev/action")
            .map(String::as_str),
        Some("pause"),
        "the editor's request is on the Canary"
    );
    let as_viewer = impersonating_kubeconfig(&viewer);
    let (ok, stdout, stderr) = plugin_as(as_viewer.path(), &["status", "web", "-n", n]);
    assert!(
        ok && stdout.contains("web"),
        "kubectl serin status web as {viewer}: {stdout}{stderr}"
    );
    let (ok, _, stderr) = plugin_as(
        as_viewer.path(),
        &["resume", "web", "-n", n, "--timeout", "0s"],
    );
    assert!(
        !ok && stderr.contains("forbidden"),
        "a viewer cannot steer: {stderr}"
    );
}

/// The Role and RoleBinding docs/security.md gives for Prometheus credentials
/// ("Credentials for Prometheus"), as written there: the YAML block of that section.
fn documented_credentials_grant() -> Vec<serde_json::Value> {
    let page = std::fs::read_to_string(support::repo_root().join("docs/security.md"))
        .expect("docs/security.md");
    let section = page
        .split("## Credentials for Prometheus")
        .nth(1)
        .expect("the section");
    let block = section
        .split("```yaml")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a YAML block");
    // The block is indented as part of a list item.
    let text: String = block
        .lines()
        .map(|line| line.strip_prefix("  ").unwrap_or(line))
        .collect::<Vec<_>>()
        .join("\n");
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| serde_json::Value::deserialize(doc).expect("YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

/// Whether `who` may `verb` the Secret `name` (all Secrets when `None`) in `namespace`.
async fn may_secret(
    client: &Client,
    who: &Identity,
    verb: &str,
    namespace: &str,
    name: Option<&str>,
) -> bool {
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(who.user()),
            groups: Some(who.groups()),
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.into()),
                group: Some(String::new()),
                resource: Some("secrets".into()),
                namespace: Some(namespace.into()),
                name: name.map(Into::into),
                ..ResourceAttributes::default()
            }),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    };
    Api::<SubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .expect("create SubjectAccessReview")
        .status
        .is_some_and(|s| s.allowed)
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn the_documented_prometheus_credentials_grant_lets_serin_get_only_the_named_secret() {
    let client = support::client().await;
    let (ns, base) = base_only_service_account(&client).await;
    assert!(!may_secret(&client, &base, "get", &ns.name, Some("thanos-auth")).await);
    for mut object in documented_credentials_grant() {
        object["metadata"]["namespace"] = ns.name.clone().into();
        if let Some(subjects) = object["subjects"].as_array_mut() {
            for subject in subjects {
                subject["namespace"] = base.namespace.clone().into();
                subject["name"] = base.name.clone().into();
            }
        }
        let (ok, _, stderr) = support::kubectl(&["apply", "-f", "-"], Some(&object.to_string()));
        assert!(ok, "applying {}: {stderr}", object["metadata"]["name"]);
    }
    let allowed = [
        ("get", Some("thanos-auth"), true),
        ("get", Some("another-secret"), false),
        ("list", None, false),
        ("watch", None, false),
        ("update", Some("thanos-auth"), false),
    ];
    let mut wrong = Vec::new();
    for (verb, name, expected) in allowed {
        // RBAC takes a moment to see a new binding.
        let answer = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let answer = may_secret(&client, &base, verb, &ns.name, name).await;
                if answer == expected {
                    return answer;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
        .await
        .unwrap_or(!expected);
        if answer != expected {
            wrong.push(format!("{verb} {name:?}: {answer}"));
        }
    }
    assert!(wrong.is_empty(), "{wrong:?}");
    assert!(
        !may_secret(&client, &base, "get", "default", Some("thanos-auth")).await,
        "only in the namespace that granted it"
    );
}
