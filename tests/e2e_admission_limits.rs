//! Admission through the real API server, for opt-ins that could never run: derived names
//! over Kubernetes' limits, derived names another object holds, and values the routers or the
//! controller cannot take. Each is refused at `kubectl apply`, naming what is in the way.

mod support;

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use support::{kubectl, plain_deployment, wait_until};

fn service(ns: &str, name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {{selector: {{app: mine}}, ports: [{{port: 80}}]}}\n"
    )
}

/// Applies `manifest`, expects the webhook's refusal and returns kubectl's error output.
fn refused(manifest: &str) -> String {
    let (ok, _, stderr) = kubectl(&["apply", "-f", "-"], Some(manifest));
    assert!(!ok, "the apply must be refused:\n{manifest}");
    assert!(stderr.contains("denied the request"), "{stderr}");
    stderr
}

fn assert_mentions(stderr: &str, expected: &[&str]) {
    for line in expected {
        assert!(stderr.contains(line), "missing {line:?} in:\n{stderr}");
    }
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn an_opt_in_whose_derived_names_are_too_long_is_refused_naming_them() {
    let (client, ns) = support::serin_namespace("limits-names").await;
    let name = "w".repeat(63);
    let long_name = plain_deployment(&ns.name, &name, "web", &[("serin.dev/enabled", "true")]);
    let stderr = refused(&long_name);
    assert_mentions(
        &stderr,
        &[
            &format!("Service \"{name}-primary\" 71 characters long, above the limit of 63"),
            &format!("Deployment \"{name}-primary\" 71 characters long"),
        ],
    );
    let app = "a".repeat(56);
    let long_label = plain_deployment(
        &ns.name,
        "web",
        &app,
        &[
            ("serin.dev/enabled", "true"),
            ("serin.dev/service", &"s".repeat(56)),
        ],
    );
    let stderr = refused(&long_label);
    assert_mentions(
        &stderr,
        &[
            &format!(
                "spec.selector.matchLabels.app: \"{app}\" makes the primary pods' label value \"{app}-primary\" 64 characters long"
            ),
            "64 characters long, above the limit of 63 for Service names",
        ],
    );
    let deployments: Api<Deployment> = Api::namespaced(client, &ns.name);
    assert!(deployments.get_opt("web").await.expect("get").is_none());
    assert!(deployments.get_opt(&name).await.expect("get").is_none());
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn values_the_routers_or_the_controller_cannot_take_are_refused() {
    let (_client, ns) = support::serin_namespace("limits-values").await;
    let manifest = plain_deployment(
        &ns.name,
        "web",
        "web",
        &[
            ("serin.dev/enabled", "true"),
            ("serin.dev/provider", "nginx"),
            ("serin.dev/ingress", "public"),
            ("serin.dev/iterations", "+5"),
            ("serin.dev/match", "header:x-a=1,header:x-b~^(?=in).*$"),
            ("serin.dev/interval", "999999h"),
            ("serin.dev/success-rate", "1e2"),
        ],
    );
    assert_mentions(
        &refused(&manifest),
        &[
            "serin.dev/iterations: \"+5\" must be an integer from 1 to 1000",
            "ingress-nginx matches at most one of each per canary Ingress",
            "look-around",
            "serin.dev/interval: \"999999h\" must be at most 1h",
            "serin.dev/success-rate: \"1e2\" must be a number from 0 to 100",
        ],
    );
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn an_opt_in_onto_the_users_own_primary_deployment_or_canary_service_is_refused() {
    let (client, ns) = support::serin_namespace("limits-taken").await;
    // The user's own objects, under the names Serin would derive for `api`.
    let theirs = format!(
        "{}---\n{}",
        plain_deployment(&ns.name, "api-primary", "mine", &[]),
        service(&ns.name, "api-canary")
    );
    let (ok, _, stderr) = kubectl(&["apply", "-f", "-"], Some(&theirs));
    assert!(ok, "{stderr}");
    // The user's own apex Service is no obstacle: Serin takes it over, as before opting in.
    let apex = service(&ns.name, "api");
    let (ok, _, stderr) = kubectl(&["apply", "-f", "-"], Some(&apex));
    assert!(ok, "{stderr}");

    let opt_in = plain_deployment(&ns.name, "api", "api", &[("serin.dev/enabled", "true")]);
    let stderr = refused(&opt_in);
    assert_mentions(
        &stderr,
        &[
            "Deployment \"api\": names its release needs are taken (2)",
            "Deployment \"api-primary\" exists and is not managed by Serin",
            "Service \"api-canary\" exists and is not managed by Serin",
        ],
    );
    assert!(!stderr.contains("Service \"api\" "), "{stderr}");
    let deployments: Api<Deployment> = Api::namespaced(client, &ns.name);
    assert!(deployments.get_opt("api").await.expect("get").is_none());
    let (ok, labels, _) = kubectl(
        &[
            "-n",
            &ns.name,
            "get",
            "deployment",
            "api-primary",
            "-o",
            "jsonpath={.metadata.labels}",
        ],
        None,
    );
    assert!(
        ok && !labels.contains("serin.dev/owner"),
        "untouched: {labels}"
    );
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn a_second_deployment_naming_the_same_service_is_refused_naming_the_first() {
    let (client, ns) = support::serin_namespace("limits-clash").await;
    let first = plain_deployment(&ns.name, "web", "web", &[("serin.dev/enabled", "true")]);
    let (ok, _, stderr) = kubectl(&["apply", "-f", "-"], Some(&first));
    assert!(ok, "{stderr}");
    // Once Serin has reacted to the first (its primary exists), its webhook has seen it too.
    let deployments: Api<Deployment> = Api::namespaced(client, &ns.name);
    wait_until("web-primary", Duration::from_secs(60), || async {
        match deployments.get_opt("web-primary").await {
            Ok(Some(_)) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    let second = plain_deployment(
        &ns.name,
        "web-v2",
        "web-v2",
        &[("serin.dev/enabled", "true"), ("serin.dev/service", "web")],
    );
    assert_mentions(
        &refused(&second),
        &[
            "serin.dev/service: Service \"web\" is already the apex Service of opted-in Deployment \"web\"",
        ],
    );
    assert!(deployments.get_opt("web-v2").await.expect("get").is_none());
    // Another Service name is fine.
    let elsewhere = second.replace(
        "serin.dev/service: \"web\"",
        "serin.dev/service: \"web-two\"",
    );
    let (ok, _, stderr) = kubectl(&["apply", "-f", "-"], Some(&elsewhere));
    assert!(ok, "{stderr}");
}
