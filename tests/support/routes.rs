//! Readers for the router object of any provider, as stored: the object itself and the
//! weights it routes by, read with the same [`Router`] code Serin writes it with.

use k8s_openapi::api::apps::v1::Deployment;
use kube::core::DynamicObject;
use kube::{Api, Client, ResourceExt};
use serin::router::{Router, Weights, router_for};
use serin::spec::{CanarySpec, MatchRule, Provider};

fn router(provider: Provider) -> Box<dyn Router> {
    router_for(provider)
}

/// The router object of `provider` named after the apex Service `service`, as stored.
pub(crate) async fn object(
    client: &Client,
    ns: &str,
    provider: Provider,
    service: &str,
) -> Option<DynamicObject> {
    let resource = router(provider).api_resource();
    Api::<DynamicObject>::namespaced_with(client.clone(), ns, &resource)
        .get_opt(service)
        .await
        .unwrap_or_else(|e| panic!("read {} {ns}/{service}: {e}", resource.kind))
}

/// The weights the router object of `provider` for `service` routes by; `None` when it is
/// missing or unreadable.
pub(crate) async fn weights(
    client: &Client,
    ns: &str,
    provider: Provider,
    service: &str,
) -> Option<Weights> {
    let object = object(client, ns, provider, service).await?;
    let spec = CanarySpec::defaults(service.to_owned(), None);
    router(provider).weights(&object, &spec).ok()
}

/// Asserts that `router` reads back from `stored` the weights of `expected`: those of every
/// request, and those of the requests that match no A/B rule; `what` names the case.
pub(crate) fn assert_reads_back(
    router: &dyn Router,
    stored: &DynamicObject,
    spec: &CanarySpec,
    expected: (Weights, Option<Weights>),
    what: &str,
) {
    let (weights, unmatched) = expected;
    assert_eq!(router.weights(stored, spec), Ok(weights), "{what}: weights");
    assert_eq!(
        router.unmatched_weights(stored, spec),
        Ok(unmatched),
        "{what}: weights of unmatched requests"
    );
}

/// Asserts that `stored` is labelled as the router object of `web` and owned by `deploy`.
pub(crate) fn assert_owned_by(stored: &DynamicObject, deploy: &Deployment) {
    let name = stored.name_any();
    assert_eq!(
        stored.labels().get("serin.dev/owner").map(String::as_str),
        Some("web"),
        "the owner label of {name}"
    );
    assert_eq!(
        stored.owner_references().first().map(|o| o.uid.as_str()),
        deploy.metadata.uid.as_deref(),
        "the owner of {name}"
    );
}

/// Asserts that what Serin wrote for the Deployment `web` is owned by it alone and was
/// applied by the field manager `serin` alone.
pub(crate) fn assert_written_by_serin_for_web(object: &DynamicObject) {
    let name = object.name_any();
    let owners: Vec<_> = object
        .owner_references()
        .iter()
        .map(|o| (o.kind.as_str(), o.name.as_str()))
        .collect();
    assert_eq!(owners, [("Deployment", "web")], "{name}");
    let managers: Vec<_> = object
        .managed_fields()
        .iter()
        .filter_map(|m| m.manager.as_deref())
        .collect();
    assert_eq!(managers, ["serin"], "{name}");
}

/// A plain Deployment `web` at zero replicas, to own router objects a test applies directly
/// (the garbage collector deletes objects whose owner does not exist).
pub(crate) async fn owner(client: &Client, ns: &str) -> k8s_openapi::api::apps::v1::Deployment {
    let deploy: k8s_openapi::api::apps::v1::Deployment =
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": ns},
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{
                        "name": "app", "image": "example.invalid/web:v1",
                        "ports": [{"containerPort": 8080}]
                    }]}
                }
            }
        }))
        .expect("Deployment");
    Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(client.clone(), ns)
        .create(&kube::api::PostParams::default(), &deploy)
        .await
        .expect("create the owner Deployment")
}

/// One A/B rule of each kind: an exact header, a header regex, a cookie.
pub(crate) fn ab_rules() -> Vec<MatchRule> {
    vec![
        MatchRule::HeaderExact {
            name: "x-canary".into(),
            value: "insider".into(),
        },
        MatchRule::HeaderRegex {
            name: "user-agent".into(),
            regex: ".*Firefox.*".into(),
        },
        MatchRule::Cookie {
            name: "canary.v2".into(),
        },
    ]
}
