//! Serin's identity: the `serin` ServiceAccount in `serin-system` with the RBAC of
//! `manifests/rbac.yaml` may do what the webhooks and the controller need and nothing it
//! could abuse, and the local Serin really runs under it (not the admin credentials).
//!
//! The tables ask the API server's authorizer directly (a SubjectAccessReview with the exact
//! group, resource and subresource), which also answers for Serin's own CRDs before they are
//! installed; `kubectl auth can-i --as` gives the same answers for the ones it can resolve.

mod support;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

const SA_USER: &str = "system:serviceaccount:serin-system:serin";
const SA_GROUPS: [&str; 3] = [
    "system:serviceaccounts",
    "system:serviceaccounts:serin-system",
    "system:authenticated",
];

/// One request: verb, API group, resource (`resource/subresource`), namespace (`None`:
/// cluster scope).
type Access = (
    &'static str,
    &'static str,
    &'static str,
    Option<&'static str>,
);

const NS: Option<&str> = Some("default");
const CLUSTER: Option<&str> = None;

/// What the webhooks and the controller do (see the comments in manifests/rbac.yaml).
const NEEDED: &[Access] = &[
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
    ("get", "", "secrets", NS),
    ("create", "", "secrets", NS),
    ("update", "", "secrets", NS),
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

/// What Serin never needs: escalation, workloads it does not manage, other people's config.
const FORBIDDEN: &[Access] = &[
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

/// Whether the API server's authorizer allows `access` to Serin's ServiceAccount.
async fn allowed(client: &Client, (verb, group, resource, namespace): Access) -> bool {
    let (resource, subresource) = resource.split_once('/').unwrap_or((resource, ""));
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(SA_USER.into()),
            groups: Some(SA_GROUPS.iter().map(|g| g.to_string()).collect()),
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

fn describe((verb, group, resource, namespace): Access) -> String {
    let group = if group.is_empty() { "core" } else { group };
    match namespace {
        Some(ns) => format!("{verb} {resource} ({group}) in {ns}"),
        None => format!("{verb} {resource} ({group}) cluster-wide"),
    }
}

/// The accesses in `table` whose answer is not `expected`.
async fn mismatches(table: &[Access], expected: bool) -> Vec<String> {
    support::serin(); // applies manifests/rbac.yaml (hack/serin.sh up)
    let client = support::client().await;
    let mut wrong = Vec::new();
    for &access in table {
        if allowed(&client, access).await != expected {
            wrong.push(describe(access));
        }
    }
    wrong
}

#[tokio::test]
async fn service_account_may_do_what_the_controller_needs() {
    let denied = mismatches(NEEDED, true).await;
    assert!(
        denied.is_empty(),
        "{SA_USER} is denied what Serin needs:\n  {}",
        denied.join("\n  ")
    );
}

#[tokio::test]
async fn service_account_may_not_escalate_touch_pods_or_manage_namespaces() {
    let granted = mismatches(FORBIDDEN, false).await;
    assert!(
        granted.is_empty(),
        "{SA_USER} is granted what Serin must not have:\n  {}",
        granted.join("\n  ")
    );
}

#[test]
fn kubectl_auth_can_i_as_the_service_account_agrees() {
    support::serin();
    let cases: &[(&[&str], &str)] = &[
        (&["patch", "deployments.apps", "-n", "default"], "yes"),
        (&["create", "secrets", "-n", "default"], "yes"),
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
    let mut wrong = Vec::new();
    for (args, expected) in cases {
        let mut full = vec!["auth", "can-i", "--as", SA_USER];
        full.extend_from_slice(args);
        let (_, stdout, stderr) = support::kubectl(&full, None);
        let answer = stdout.trim();
        if answer != *expected {
            wrong.push(format!(
                "kubectl {}: {answer:?}, expected {expected:?} ({})",
                full.join(" "),
                stderr.trim()
            ));
        }
    }
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
