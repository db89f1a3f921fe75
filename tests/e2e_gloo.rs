//! The `gloo` provider on the real local cluster, with the Upstream and RouteTable CRDs
//! `make up` generates with controller-gen from the Gloo API types of Flagger's Go module
//! (Gloo's own module is not served, so the schema checked is that typed subset of Gloo's
//! API): the RouteTables and Upstreams Serin builds are accepted as built (and a malformed one
//! is refused, so the schema is really checked); a release driven through a RouteTable moves
//! its weights step by step, is promoted when good and rolled back to 100/0 when the canary
//! fails; A/B sends only the matching requests to the canary; opting out removes the
//! RouteTable and the Upstreams. The traffic simulator reads the same RouteTables and exports
//! Envoy's series, which the builtin checks of a gloo release query.

mod support;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ListParams, Patch, PatchParams};
use kube::core::{ApiResource, DynamicObject};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};
use serin::release::Phase;
use serin::router::gloo::{RouteTable, upstream_resource};
use serin::router::{Router, Weights};
use serin::spec::{CanarySpec, Provider};
use support::release::{Version, apply, canary, manifest, replicas, wait_phase};
use support::scenarios::{Release, Route, SETTLE, opt_in};
use support::{prometheus_value, routes, wait_until};

const CRDS: [&str; 2] = ["routetables.gateway.solo.io", "upstreams.gloo.solo.io"];
/// The Envoy clusters of the Upstreams of the apex Service `web` on port 8080 in `ns`.
fn cluster(ns: &str, version: &str) -> String {
    format!("{ns}-web-{version}upstream-8080_{ns}")
}

fn api(client: &Client, ns: &str, resource: &ApiResource) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, resource)
}

/// The names of the Upstreams in `ns` that `params` select.
async fn upstream_names(client: &Client, ns: &str, params: &ListParams) -> Vec<String> {
    api(client, ns, &upstream_resource())
        .list(params)
        .await
        .expect("list Upstreams")
        .items
        .iter()
        .map(ResourceExt::name_any)
        .collect()
}

/// Server-side apply as Serin does it (field manager `serin`), with the admin credentials:
/// what is under test is the CRD, not Serin's RBAC.
async fn apply_object(
    client: &Client,
    ns: &str,
    resource: &ApiResource,
    object: &DynamicObject,
) -> kube::Result<DynamicObject> {
    let mut value = serde_json::to_value(object).expect("json");
    value["apiVersion"] = json!(resource.api_version);
    value["kind"] = json!(resource.kind);
    api(client, ns, resource)
        .patch(
            &object.name_any(),
            &PatchParams::apply("serin").force(),
            &Patch::Apply(&value),
        )
        .await
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn the_route_tables_and_upstreams_serin_builds_are_stored_as_built_by_the_generated_crds() {
    let (client, ns) = support::release_namespace("gloo-crd").await;
    let ns = &ns.name;

    // The CRDs are generated from Flagger's module, not written by hand.
    for name in CRDS {
        let crd = Api::<CustomResourceDefinition>::all(client.clone())
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("the {name} CRD is installed (hack/crds.sh up): {e}"));
        let source = crd
            .annotations()
            .get("serin.dev/derived-from")
            .cloned()
            .unwrap_or_default();
        assert!(
            source.starts_with("github.com/fluxcd/flagger@") && source.contains("controller-gen"),
            "{name} was not generated from Flagger's Gloo types: {source:?}"
        );
    }

    let deploy = routes::owner(&client, ns).await;
    let base = CanarySpec {
        provider: Provider::Gloo,
        ..CanarySpec::defaults("web".into(), Some(8080))
    };
    let ab = CanarySpec {
        iterations: Some(3),
        matches: support::routes::ab_rules(),
        ..base.clone()
    };

    // The Upstreams: stored as built, owned by the Deployment.
    for companion in RouteTable
        .companions(&deploy, &base)
        .expect("build the Upstreams")
    {
        let stored = apply_object(&client, ns, &companion.resource, &companion.object)
            .await
            .unwrap_or_else(|e| panic!("the API server refused the Upstream: {e}"));
        assert_eq!(stored.data["spec"], companion.object.data["spec"]);
        routes::assert_owned_by(&stored, &deploy);
    }
    assert_eq!(
        upstream_names(&client, ns, &ListParams::default()).await,
        [
            format!("{ns}-web-canaryupstream-8080"),
            format!("{ns}-web-primaryupstream-8080")
        ]
    );

    let cases = [
        ("canary 70/30", base.clone(), Weights::to_canary(30), None),
        ("idle", base.clone(), Weights::ALL_PRIMARY, None),
        (
            "A/B, matching requests to the canary",
            ab.clone(),
            Weights::ALL_CANARY,
            Some(Weights::ALL_PRIMARY),
        ),
    ];
    for (what, spec, weights, unmatched) in cases {
        let built = RouteTable
            .build(&deploy, &spec, weights)
            .expect("build the route table");
        let stored = apply_object(&client, ns, &RouteTable.api_resource(), &built)
            .await
            .unwrap_or_else(|e| panic!("{what}: the API server refused the route table: {e}"));
        assert_eq!(
            stored.data["spec"], built.data["spec"],
            "{what}: stored differently"
        );
        routes::assert_reads_back(&RouteTable, &stored, &spec, (weights, unmatched), what);
    }

    // The schema is enforced: a weight that is not a number is refused (by server-side
    // apply's typed patch, which answers 500 rather than validation's 422).
    let mut wrong = RouteTable
        .build(&deploy, &base, Weights::ALL_PRIMARY)
        .expect("build the route table");
    wrong.metadata.name = Some("wrong".into());
    wrong.data["spec"]["routes"][0]["routeAction"]["multi"]["destinations"][0]["weight"] =
        json!("heavy");
    match apply_object(&client, ns, &RouteTable.api_resource(), &wrong).await {
        Err(kube::Error::Api(status)) => assert!(
            status
                .message
                .contains("destinations[0].weight: expected numeric"),
            "refused for another reason: {status:?}"
        ),
        other => panic!("a weight that is not a number was accepted: {other:?}"),
    }
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn a_good_release_moves_the_route_table_weights_step_by_step_and_is_promoted() {
    let release = Release::for_promotion(Route::GLOO, "gloo-promote").await;
    let (client, ns) = (release.client.clone(), release.ns());

    // What Serin wrote: the route table and its two Upstreams, owned by the Deployment and
    // applied by `serin` only.
    let table = release.router_object().await;
    let upstreams = api(&client, ns, &upstream_resource())
        .list(&ListParams::default().labels("serin.dev/owner=web"))
        .await
        .expect("list Upstreams")
        .items;
    let services: Vec<Value> = upstreams
        .iter()
        .map(|u| u.data["spec"]["kube"].clone())
        .collect();
    assert_eq!(
        services,
        [
            json!({"serviceName": "web-canary", "serviceNamespace": ns, "servicePort": 8080}),
            json!({"serviceName": "web-primary", "serviceNamespace": ns, "servicePort": 8080}),
        ]
    );
    for object in upstreams.iter().chain([&table]) {
        routes::assert_written_by_serin_for_web(object);
    }
    // They are protected like Serin's other objects: even the cluster admin is sent to the
    // Deployment.
    let upstream = format!("{ns}-web-canaryupstream-8080");
    for (resource, name) in [
        (upstream_resource(), upstream.as_str()),
        (RouteTable.api_resource(), "web"),
    ] {
        match api(&client, ns, &resource)
            .delete(name, &Default::default())
            .await
        {
            Err(kube::Error::Api(status)) => assert!(
                status.message.contains("protect-managed.serin.dev")
                    && status.message.contains("Deployment \"web\""),
                "refused for another reason: {status:?}"
            ),
            other => panic!("{} {name} could be deleted: {other:?}", resource.kind),
        }
    }

    release.is_promoted_step_by_step().await;

    // The checks that promoted it read Envoy's series of the canary's Upstream.
    let to_canary = prometheus_value(&format!(
        "sum(envoy_cluster_upstream_rq{{envoy_cluster_name=\"{}\"}})",
        cluster(ns, "canary")
    ))
    .await;
    assert!(
        to_canary > 0.0,
        "no simulated request reached the canary's Upstream"
    );
    // The last checks' values are Envoy's.
    release.assert_checks_read_a_25_50_ms_bucket("Envoy").await;
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn a_failing_canary_is_rolled_back_and_the_route_table_returns_to_100_0() {
    let release = Release::for_rollback(Route::GLOO, "gloo-rollback").await;
    let ns = release.ns();
    release.is_rolled_back_after_one_step().await;
    // The failures Serin measured are Envoy's 5xx answers of the canary's Upstream: about
    // 70 % success.
    release.assert_measured_success_rate_near_70_percent().await;
    let failed = prometheus_value(&format!(
        "sum(envoy_cluster_upstream_rq{{envoy_cluster_name=\"{}\",envoy_response_code=~\"5..\"}})",
        cluster(ns, "canary")
    ))
    .await;
    assert!(failed > 0.0, "no 5xx answer of the canary's Upstream");
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn ab_testing_through_gloo_rolls_a_failing_canary_back_and_stops_matching() {
    let release = Release::for_ab(Route::GLOO, "gloo-ab-fail").await;
    release.ab_is_rolled_back().await;
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn ab_testing_through_gloo_sends_only_the_matching_requests_to_the_canary() {
    let release = Release::for_ab(Route::GLOO, "gloo-ab").await;
    let ns = release.ns();
    let table = release.starts_ab_analysis().await;
    let routes_json = table.data["spec"]["routes"].clone();
    assert_eq!(
        routes_json[0]["matchers"],
        json!([
            {"headers": [{"name": "x-canary", "value": "insider"}]},
            {"headers": [{"name": "Cookie", "value": r"^(.*;\s*)?canary=.*$", "regex": true}]},
        ]),
        "the A/B route: {routes_json:#}"
    );
    // (upstream, weight) of a route's destinations.
    let destinations = |route: &Value| -> Vec<(String, u64)> {
        route["routeAction"]["multi"]["destinations"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|d| {
                let name = d["destination"]["upstream"]["name"].as_str();
                (
                    name.unwrap_or_default().to_owned(),
                    d["weight"].as_u64().unwrap_or(0),
                )
            })
            .collect()
    };
    let expected = |primary: u64, canary: u64| {
        vec![
            (format!("{ns}-web-primaryupstream-8080"), primary),
            (format!("{ns}-web-canaryupstream-8080"), canary),
        ]
    };
    assert_eq!(destinations(&routes_json[0]), expected(0, 100));
    assert_eq!(destinations(&routes_json[1]), expected(100, 0));
    assert_eq!(routes_json[1].get("matchers"), None, "{routes_json:#}");

    // Envoy's series: over a window inside the analysis, the canary's Upstream served the
    // share of requests the simulator takes to match, not all of them.
    let share = format!(
        "sum(rate(envoy_cluster_upstream_rq{{envoy_cluster_name=\"{}\"}}[4s])) \
         / (sum(rate(envoy_cluster_upstream_rq{{envoy_cluster_name=\"{}\"}}[4s])) \
            + sum(rate(envoy_cluster_upstream_rq{{envoy_cluster_name=\"{}\"}}[4s])))",
        cluster(ns, "canary"),
        cluster(ns, "canary"),
        cluster(ns, "primary"),
    );
    release
        .assert_canary_serves_the_matching_share(|| async { (prometheus_value(&share).await, ()) })
        .await;
    release.is_promoted_after_6_iterations().await;
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn opting_out_removes_the_route_table_and_the_upstreams() {
    let (client, ns) = support::release_namespace("gloo-optout").await;
    let ns = &ns.name;
    opt_in(&client, ns, "web", &Route::GLOO, Route::GLOO.annotations).await;
    let upstreams = api(&client, ns, &upstream_resource());
    let owned = ListParams::default().labels("serin.dev/owner=web");
    assert_eq!(
        upstreams.list(&owned).await.expect("list").items.len(),
        2,
        "the Upstreams of an opted-in Deployment"
    );

    // The user removes every serin.dev annotation.
    let plain: String = manifest(ns, "web", &Version::good("v1"), &[])
        .lines()
        .filter(|l| !l.starts_with("    serin.dev/") && !l.starts_with("  annotations:"))
        .collect::<Vec<_>>()
        .join("\n");
    apply(&plain);
    wait_until("the router objects to be removed", SETTLE, || async {
        let table = routes::object(&client, ns, Provider::Gloo, "web").await;
        let left = upstream_names(&client, ns, &ListParams::default()).await;
        match (table.is_some(), left.is_empty()) {
            (false, true) => Ok(()),
            _ => Err(format!(
                "RouteTable there: {}; Upstreams left: {left:?}",
                table.is_some()
            )),
        }
    })
    .await;
    assert_eq!(replicas(&client, ns, "web").await, Some(2));
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn a_port_change_alone_moves_the_route_table_to_new_upstreams_and_removes_the_old() {
    let (client, ns) = support::release_namespace("gloo-port").await;
    let ns = &ns.name;
    // Two ports in the pod template, the same in both applies: no new revision.
    let two_ports = |port: &'static str| {
        manifest(
            ns,
            "web",
            &Version::good("v1"),
            &Route::GLOO.annotations(&[("serin.dev/port", port)]),
        )
        .replace(
            "ports: [{containerPort: 8080}]",
            "ports: [{containerPort: 8080}, {containerPort: 9090}]",
        )
    };
    apply(&two_ports("8080"));
    wait_phase(&client, ns, "web", Phase::Initialized, SETTLE).await;
    let revision = canary(&client, ns, "web")
        .await
        .and_then(|c| c.status)
        .and_then(|s| s.release.revision);

    apply(&two_ports("9090"));
    let owned = ListParams::default().labels("serin.dev/owner=web");
    wait_until(
        "the RouteTable on the 9090 Upstreams alone",
        SETTLE,
        || async {
            let table = routes::object(&client, ns, Provider::Gloo, "web")
                .await
                .ok_or("no RouteTable")?;
            let destinations =
                table.data["spec"]["routes"][0]["routeAction"]["multi"]["destinations"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
            let targets: Vec<&str> = destinations
                .iter()
                .filter_map(|d| d["destination"]["upstream"]["name"].as_str())
                .collect();
            let mut left = upstream_names(&client, ns, &owned).await;
            left.sort();
            let wanted = [
                format!("{ns}-web-canaryupstream-9090"),
                format!("{ns}-web-primaryupstream-9090"),
            ];
            match targets.iter().all(|t| t.ends_with("-9090")) && left == wanted {
                true => Ok(()),
                false => Err(format!("RouteTable to {targets:?}; Upstreams {left:?}")),
            }
        },
    )
    .await;
    assert_eq!(
        routes::weights(&client, ns, Provider::Gloo, "web").await,
        Some(Weights::ALL_PRIMARY)
    );
    let status = canary(&client, ns, "web").await.and_then(|c| c.status);
    assert_eq!(
        status.as_ref().map(|s| s.release.phase),
        Some(Phase::Initialized),
        "a port change is no release"
    );
    assert_eq!(status.and_then(|s| s.release.revision), revision);
}
