//! The `nginx` provider on the real local cluster: the canary Ingresses Serin builds are
//! accepted by the API server as built (and a malformed one is refused, so validation really
//! runs), and a release driven through `<ingress>-canary` moves its `canary-weight` step by
//! step, is promoted when good and rolled back to weight 0 when the canary fails. An A/B
//! release (`serin.dev/match` on a header) routes by `canary-by-header` while it is analysed,
//! so only the requests with the header reach the canary, and is promoted or rolled back the
//! same way. Ingress is built into Kubernetes, so no CRD is involved; the traffic simulator
//! reads the same canary Ingresses and exports ingress-nginx's series, which the builtin
//! checks of an nginx release query.

mod support;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Patch, PatchParams};
use kube::core::DynamicObject;
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use serin::devtools::simulate::backends::MATCHING_PERCENT;
use serin::router::nginx::CanaryIngress;
use serin::router::{Router, Weights};
use serin::spec::{CanarySpec, MatchRule, Provider};
use support::scenarios::{RELEASE, Release, Route, create_user_ingress};
use support::{prometheus_value, routes, wait_until};

/// The user's Ingress; Serin writes `public-canary` beside it.
const INGRESS: &str = "public";
const CANARY_INGRESS: &str = "public-canary";

/// Server-side apply of an Ingress as Serin does it (field manager `serin`), with the admin
/// credentials: what is under test is the API server's validation, not Serin's RBAC.
async fn apply_ingress(
    client: &Client,
    ns: &str,
    ingress: &DynamicObject,
) -> kube::Result<DynamicObject> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), ns, &CanaryIngress::default().api_resource());
    api.patch(
        &ingress.name_any(),
        &PatchParams::apply("serin").force(),
        &Patch::Apply(ingress),
    )
    .await
}

/// The annotations under `prefix`, which Serin decides.
fn annotations_under(object: &DynamicObject, prefix: &str) -> Vec<(String, String)> {
    object
        .annotations()
        .iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn the_canary_ingresses_serin_builds_are_stored_as_built_by_the_api_server() {
    let (client, ns) = support::release_namespace("nginx-api").await;
    let ns = &ns.name;
    let deploy = support::routes::owner(&client, ns).await;
    create_user_ingress(&client, ns, INGRESS).await;
    let user = routes::object(&client, ns, Provider::Nginx, INGRESS)
        .await
        .expect("the user's Ingress");

    let base = CanarySpec {
        provider: Provider::Nginx,
        ingress: Some(INGRESS.into()),
        ..CanarySpec::defaults("web".into(), Some(8080))
    };
    let ab = |matches| CanarySpec {
        iterations: Some(3),
        matches,
        ..base.clone()
    };
    let default = CanaryIngress::default();
    let custom = CanaryIngress::new("ingress.example.com");
    let cases = [
        (
            "canary 70/30",
            &default,
            base.clone(),
            Weights::to_canary(30),
        ),
        (
            "A/B on an exact header and a cookie",
            &default,
            ab(vec![
                MatchRule::HeaderExact {
                    name: "x-canary".into(),
                    value: "insider".into(),
                },
                MatchRule::Cookie {
                    name: "canary".into(),
                },
            ]),
            Weights::ALL_CANARY,
        ),
        (
            "A/B on a header pattern",
            &default,
            ab(vec![MatchRule::HeaderRegex {
                name: "user-agent".into(),
                regex: ".*Firefox.*".into(),
            }]),
            Weights::ALL_CANARY,
        ),
        (
            "another annotation prefix",
            &custom,
            base.clone(),
            Weights::to_canary(10),
        ),
    ];
    for (what, router, spec, weights) in cases {
        let built = router
            .build_from(&deploy, &spec, weights, Some(&user))
            .expect("build the canary Ingress");
        let stored = apply_ingress(&client, ns, &built)
            .await
            .unwrap_or_else(|e| panic!("{what}: the API server refused the canary Ingress: {e}"));
        assert_eq!(stored.name_any(), CANARY_INGRESS, "{what}");
        assert_eq!(stored.data["spec"], built.data["spec"], "{what}: spec");
        let prefix = router.annotation("");
        assert_eq!(
            annotations_under(&stored, &prefix),
            annotations_under(&built, &prefix),
            "{what}: annotations"
        );
        assert_eq!(
            router.weights(&stored, &spec),
            Ok(weights),
            "{what}: weights"
        );
        routes::assert_owned_by(&stored, &deploy);
    }
    // Only the application's path was copied, pointed at the canary Service.
    let stored = apply_ingress(
        &client,
        ns,
        &default
            .build_from(&deploy, &base, Weights::ALL_PRIMARY, Some(&user))
            .expect("build"),
    )
    .await
    .expect("apply");
    assert_eq!(
        stored.data.pointer("/spec/rules/0/http/paths"),
        Some(&json!([{"path": "/", "pathType": "Prefix",
            "backend": {"service": {"name": "web-canary", "port": {"number": 8080}}}}]))
    );

    // Validation runs: a Prefix path must be absolute.
    let mut relative = default
        .build_from(&deploy, &base, Weights::ALL_PRIMARY, Some(&user))
        .expect("build");
    relative.metadata.name = Some("relative".into());
    relative.data["spec"]["rules"][0]["http"]["paths"][0]["path"] = json!("no-slash");
    match apply_ingress(&client, ns, &relative).await {
        Err(kube::Error::Api(status)) => assert!(
            status.code == 422 && status.message.contains("path"),
            "refused for another reason: {status:?}"
        ),
        other => panic!("a relative Prefix path was accepted: {other:?}"),
    }
}

/// `sum(<metric>{namespace, ingress="public", <extra>})` in the local Prometheus.
async fn nginx_requests(ns: &str, extra: &str) -> Option<f64> {
    let query = format!(
        "sum(nginx_ingress_controller_requests{{namespace=\"{ns}\",ingress=\"{INGRESS}\"{extra}}})"
    );
    support::prometheus_query(&query)
        .await
        .unwrap_or_else(|e| panic!("{query}: {e}"))
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn a_good_release_moves_canary_weight_step_by_step_and_is_promoted() {
    let release = Release::for_promotion(Route::NGINX, "nginx-promote").await;
    let (client, ns) = (release.client.clone(), release.ns());

    // What Serin wrote: the canary Ingress, owned by the Deployment, applied by `serin` only.
    let object = release.router_object().await;
    assert_eq!(
        object
            .annotations()
            .get("nginx.ingress.kubernetes.io/canary")
            .map(String::as_str),
        Some("true")
    );
    assert_eq!(
        object
            .data
            .pointer("/spec/rules/0/http/paths/0/backend/service/name"),
        Some(&json!("web-canary"))
    );
    routes::assert_written_by_serin_for_web(&object);
    // It is protected like Serin's other objects: even the cluster admin is sent to the
    // Deployment.
    let deleted = Api::<Ingress>::namespaced(client.clone(), ns)
        .delete(CANARY_INGRESS, &Default::default())
        .await;
    match deleted {
        Err(kube::Error::Api(status)) => assert!(
            status.message.contains("protect-managed.serin.dev")
                && status.message.contains("Deployment \"web\""),
            "refused for another reason: {status:?}"
        ),
        other => panic!("the canary Ingress could be deleted: {other:?}"),
    }
    // The primary route: the user's Ingress is untouched and still points at the apex
    // Service, which Serin points at the primary's pods.
    let user = Api::<Ingress>::namespaced(client.clone(), ns)
        .get(INGRESS)
        .await
        .expect("the user's Ingress");
    let user_json = serde_json::to_value(&user).expect("json");
    assert_eq!(
        user_json.pointer("/spec/rules/0/http/paths/0/backend/service/name"),
        Some(&json!("web"))
    );
    assert!(
        user.annotations().is_empty() && user.labels().is_empty(),
        "Serin changed the user's Ingress: {:?}",
        user.metadata
    );
    let apex = Api::<Service>::namespaced(client.clone(), ns)
        .get("web")
        .await
        .expect("the apex Service");
    let selector = apex.spec.and_then(|s| s.selector).unwrap_or_default();
    assert_eq!(
        selector.get("app").map(String::as_str),
        Some("web-primary"),
        "the apex Service selects {selector:?}"
    );

    release.is_promoted_step_by_step().await;

    // The checks that promoted it read ingress-nginx's series of the canary upstream.
    let to_canary = nginx_requests(ns, ",canary!=\"\"").await;
    assert!(
        to_canary.is_some_and(|n| n > 0.0),
        "no simulated request of the Ingress reached the canary upstream: {to_canary:?}"
    );
    // The last checks' values are ingress-nginx's.
    release
        .assert_checks_read_a_25_50_ms_bucket("ingress-nginx")
        .await;
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn a_failing_canary_is_rolled_back_with_canary_weight_back_at_0() {
    let release = Release::for_rollback(Route::NGINX, "nginx-rollback").await;
    let ns = release.ns();
    release.is_rolled_back_after_one_step().await;
    // The failures Serin measured are ingress-nginx's 5xx answers of the canary upstream:
    // about 70 % success.
    release.assert_measured_success_rate_near_70_percent().await;
    let failed = nginx_requests(ns, ",canary!=\"\",status=~\"5..\"").await;
    assert!(
        failed.is_some_and(|n| n > 0.0),
        "no 5xx answer of the canary upstream: {failed:?}"
    );
}

/// The ingress-nginx annotations of the canary Ingress, without the prefix.
async fn nginx_annotations_of(client: &Client, ns: &str) -> Vec<(String, String)> {
    let prefix = CanaryIngress::default().annotation("");
    routes::object(client, ns, Provider::Nginx, CANARY_INGRESS)
        .await
        .map(|object| {
            annotations_under(&object, &prefix)
                .into_iter()
                .map(|(k, v)| (k[prefix.len()..].to_owned(), v))
                .collect()
        })
        .unwrap_or_default()
}

/// The canary Ingress routes by weight only, at 0: every request to the primary.
fn by_weight_zero() -> Vec<(String, String)> {
    vec![
        ("canary".into(), "true".into()),
        ("canary-weight".into(), "0".into()),
    ]
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn ab_testing_through_nginx_sends_only_requests_with_the_header_to_the_canary_then_promotes()
{
    let release = Release::for_ab(Route::NGINX, "nginx-ab").await;
    let (client, ns) = (release.client.clone(), release.ns());
    assert_eq!(nginx_annotations_of(&client, ns).await, by_weight_zero());
    release.starts_ab_analysis().await;

    // While the analysis runs, the canary Ingress routes by the header, and nothing by weight.
    let by_header = vec![
        ("canary".to_owned(), "true".to_owned()),
        ("canary-by-header".to_owned(), "x-canary".to_owned()),
        ("canary-by-header-value".to_owned(), "insider".to_owned()),
        ("canary-weight".to_owned(), "0".to_owned()),
    ];
    wait_until(
        "the canary Ingress to route the requests with the header to the canary",
        RELEASE,
        || async {
            match nginx_annotations_of(&client, ns).await {
                seen if seen == by_header => Ok(()),
                seen => Err(format!("{seen:?}")),
            }
        },
    )
    .await;

    // Prometheus: over a window inside the analysis, the canary upstream served the share of
    // requests the simulator takes to carry the header; the rest went to the primary.
    let rate = |extra: &str| {
        format!(
            "sum(rate(nginx_ingress_controller_requests{{namespace=\"{ns}\",ingress=\"{INGRESS}\"{extra}}}[4s]))"
        )
    };
    let canary_share = format!("{} / {}", rate(",canary!=\"\""), rate(""));
    let primary_share = format!("{} / {}", rate(",canary=\"\""), rate(""));
    let to_primary = release
        .assert_canary_serves_the_matching_share(|| async {
            (
                prometheus_value(&canary_share).await,
                prometheus_value(&primary_share).await,
            )
        })
        .await;
    assert_eq!(nginx_annotations_of(&client, ns).await, by_header);
    let matching = f64::from(MATCHING_PERCENT) / 100.0;
    assert!(
        (to_primary - (1.0 - matching)).abs() < 0.05,
        "the primary's share of the Ingress's requests: {to_primary:.3}, expected {}",
        1.0 - matching
    );

    release.is_promoted_after_6_iterations().await;
    assert_eq!(nginx_annotations_of(&client, ns).await, by_weight_zero());
    release
        .assert_events_contain(&[
            "Routing the requests that match serin.dev/match to the canary",
            "Iteration 5/6 passed",
            "Succeeded",
        ])
        .await;
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn ab_testing_through_nginx_rolls_a_failing_canary_back_and_stops_matching() {
    let release = Release::for_ab(Route::NGINX, "nginx-ab-fail").await;
    let (client, ns) = (release.client.clone(), release.ns());
    release.ab_is_rolled_back().await;
    assert_eq!(nginx_annotations_of(&client, ns).await, by_weight_zero());
    // The failures were measured on the canary upstream's share of requests.
    let failed = nginx_requests(ns, ",canary!=\"\",status=~\"5..\"").await;
    assert!(
        failed.is_some_and(|n| n > 0.0),
        "no 5xx answer of the canary upstream: {failed:?}"
    );
}
