//! The SMI TrafficSplit CRD of the local environment (hack/crds.sh: smi-sdk-go's published
//! CRD converted to apiextensions.k8s.io/v1) takes what Serin's router writes, in Linkerd's
//! v1alpha1 and in v1alpha2, and Linkerd's quantity weights, and gives them back unchanged.

mod support;

use std::sync::OnceLock;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DynamicObject, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use serin::router::smi::TrafficSplit;
use serin::router::{Router, Weights};
use serin::spec::CanarySpec;
use support::TestNamespace;

const CRD: &str = "trafficsplits.split.smi-spec.io";

/// The CRDs are installed (`hack/crds.sh up`, once per test binary) unless `KUBECONFIG`
/// points at a cluster that has them already.
fn crds() {
    static UP: OnceLock<()> = OnceLock::new();
    UP.get_or_init(|| {
        support::kubeconfig();
        if std::env::var_os("KUBECONFIG").is_none() {
            support::hack("crds.sh", &["up"]);
        }
    });
}

/// A real Deployment `web` in `ns`, so that the owner reference Serin's router puts on the
/// TrafficSplit names an object that exists (else the garbage collector deletes it).
async fn web(client: &Client, ns: &str) -> Deployment {
    let deployment: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": "web" },
        "spec": {
            "replicas": 1,
            "selector": { "matchLabels": { "app": "web" } },
            "template": {
                "metadata": { "labels": { "app": "web" } },
                "spec": { "containers": [{
                    "name": "app",
                    "image": "example.invalid/app:1",
                    "ports": [{ "containerPort": 8080 }]
                }] }
            }
        }
    }))
    .expect("valid Deployment");
    Api::<Deployment>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &deployment)
        .await
        .expect("create Deployment web")
}

fn spec() -> CanarySpec {
    CanarySpec::defaults("web".into(), Some(8080))
}

fn splits(client: &Client, ns: &str, router: TrafficSplit) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, &router.api_resource())
}

fn backends(object: &DynamicObject) -> Value {
    object.data["spec"]["backends"].clone()
}

/// Creates what Serin's router builds for `weights`, reads it back, and checks that the
/// stored weights are Serin's integers and that the router reads the same split back.
async fn round_trip(router: TrafficSplit, weights: Weights, prefix: &str) {
    crds();
    let client = support::client().await;
    let ns = TestNamespace::create(&client, prefix).await;
    let deploy = web(&client, &ns.name).await;
    let object = router
        .build(&deploy, &spec(), weights)
        .expect("router builds the TrafficSplit");
    let api = splits(&client, &ns.name, router);
    api.create(&PostParams::default(), &object)
        .await
        .unwrap_or_else(|e| panic!("the API server refuses Serin's {router:?} TrafficSplit: {e}"));

    let read = api.get("web").await.expect("read the TrafficSplit back");
    assert_eq!(
        backends(&read),
        json!([
            { "service": "web-primary", "weight": weights.primary() },
            { "service": "web-canary", "weight": weights.canary() },
        ])
    );
    assert_eq!(read.data["spec"]["service"], "web");
    assert_eq!(router.weights(&read, &spec()), Ok(weights));
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn v1alpha1_split_with_integer_weights_90_10_round_trips() {
    round_trip(TrafficSplit::V1Alpha1, Weights::to_canary(10), "ts-v1a1").await;
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn v1alpha2_split_with_integer_weights_70_30_round_trips() {
    round_trip(TrafficSplit::V1Alpha2, Weights::to_canary(30), "ts-v1a2").await;
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn v1alpha1_split_with_linkerd_quantity_weights_is_kept_as_written() {
    crds();
    let client = support::client().await;
    let ns = TestNamespace::create(&client, "ts-quantity").await;
    let api = splits(&client, &ns.name, TrafficSplit::V1Alpha1);
    let written = json!([
        { "service": "web-primary", "weight": "900m" },
        { "service": "web-canary", "weight": "100m" },
    ]);
    let object = DynamicObject::new("web", &TrafficSplit::V1Alpha1.api_resource())
        .data(json!({ "spec": { "service": "web", "backends": written } }));
    api.create(&PostParams::default(), &object)
        .await
        .expect("v1alpha1 takes quantity strings as weights");

    let read = api.get("web").await.expect("read the TrafficSplit back");
    assert_eq!(backends(&read), written);
    assert_eq!(
        TrafficSplit::V1Alpha1.weights(&read, &spec()),
        Ok(Weights::to_canary(10))
    );
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn v1alpha2_refuses_string_weights_and_missing_backends() {
    crds();
    let client = support::client().await;
    let ns = TestNamespace::create(&client, "ts-schema").await;
    let api = splits(&client, &ns.name, TrafficSplit::V1Alpha2);
    let resource = TrafficSplit::V1Alpha2.api_resource();
    for (name, spec, why) in [
        (
            "string-weight",
            json!({ "service": "web", "backends": [{ "service": "web-primary", "weight": "900m" }] }),
            "spec.backends[0].weight",
        ),
        ("no-backends", json!({ "service": "web" }), "spec.backends"),
    ] {
        let object = DynamicObject::new(name, &resource).data(json!({ "spec": spec }));
        match api.create(&PostParams::default(), &object).await {
            Err(kube::Error::Api(e)) if e.code == 422 => {
                assert!(e.message.contains(why), "{name}: {}", e.message)
            }
            other => panic!("{name}: expected 422 Invalid naming {why}, got {other:?}"),
        }
    }
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn crd_serves_linkerds_versions_with_one_storage_version() {
    crds();
    let client = support::client().await;
    let crd = Api::<CustomResourceDefinition>::all(client)
        .get(CRD)
        .await
        .expect("the TrafficSplit CRD is installed");
    let versions = &crd.spec.versions;
    for wanted in ["v1alpha1", "v1alpha2"] {
        assert!(
            versions.iter().any(|v| v.name == wanted && v.served),
            "{wanted} is not served: {:?}",
            versions
                .iter()
                .map(|v| (&v.name, v.served))
                .collect::<Vec<_>>()
        );
    }
    let storage: Vec<_> = versions.iter().filter(|v| v.storage).collect();
    assert_eq!(storage.len(), 1, "exactly one storage version");
    let established = crd
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .iter()
        .any(|c| c.type_ == "Established" && c.status == "True");
    assert!(established, "the CRD is Established");

    if std::env::var_os("KUBECONFIG").is_none() {
        // The local one is derived from the pinned smi-sdk-go, never written by hand.
        let pinned = std::fs::read_to_string(support::repo_root().join("hack/versions.env"))
            .expect("hack/versions.env");
        let version = pinned
            .lines()
            .find_map(|l| l.strip_prefix("SMI_SDK_VERSION="))
            .expect("SMI_SDK_VERSION in hack/versions.env");
        let source = crd
            .metadata
            .annotations
            .unwrap_or_default()
            .remove("serin.dev/derived-from")
            .unwrap_or_default();
        assert_eq!(
            source,
            format!("github.com/servicemeshinterface/smi-sdk-go@{version} crds/split.yaml")
        );
        assert_eq!(
            crd.spec.conversion.map(|c| c.strategy).as_deref(),
            Some("None")
        );
    }
}
