//! The `gatewayapi` provider on the real local cluster, with the Gateway API CRDs `make up`
//! installs from the `sigs.k8s.io/gateway-api` Go module: the HTTPRoutes Serin builds are
//! accepted as they are (and a malformed one is refused, so the schema is really checked),
//! and a release driven through an HTTPRoute moves its weights step by step, is promoted when
//! good and rolled back to 100/0 when the canary fails. The traffic simulator reads the same
//! HTTPRoutes, so the metrics Serin checks follow the route's weights: Linkerd's series by
//! default, Traefik's with `serin.dev/metrics-provider: traefik`.

mod support;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams};
use kube::core::DynamicObject;
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};
use serin::router::gatewayapi::HttpRoute;
use serin::router::{Router, Weights};
use serin::spec::{CanarySpec, GatewayRef, Provider};
use support::release::{Version, apply, manifest};
use support::scenarios::{Release, Route};
use support::{prometheus_value, routes, wait_until};

const CRD: &str = "httproutes.gateway.networking.k8s.io";

/// Server-side apply of a route as Serin does it (field manager `serin`), with the admin
/// credentials: what is under test is the CRD, not Serin's RBAC.
async fn apply_route(
    client: &Client,
    ns: &str,
    route: &DynamicObject,
) -> kube::Result<DynamicObject> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), ns, &HttpRoute.api_resource());
    api.patch(
        &route.name_any(),
        &PatchParams::apply("serin").force(),
        &Patch::Apply(route),
    )
    .await
}

/// The fields of a route Serin decides (not what the API server defaults around them).
fn decided(route: &Value) -> Value {
    let rules: Vec<Value> = route["spec"]["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|rule| {
            let backends: Vec<Value> = rule["backendRefs"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|b| json!([b["name"], b["port"], b["weight"]]))
                .collect();
            let headers: Vec<Value> = rule["matches"]
                .as_array()
                .into_iter()
                .flatten()
                // The API server adds a path match on `/` to rules without one.
                .filter_map(|m| m.get("headers").cloned())
                .collect();
            json!({"headers": headers, "backends": backends})
        })
        .collect();
    json!({
        "parentRefs": route["spec"]["parentRefs"],
        "hostnames": route["spec"]["hostnames"],
        "rules": rules,
    })
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn the_http_routes_serin_builds_are_stored_as_built_by_the_real_crd() {
    let (client, ns) = support::release_namespace("gw-crd").await;
    let ns = &ns.name;

    // The CRD is the published one, not a stand-in.
    let crd = Api::<CustomResourceDefinition>::all(client.clone())
        .get(CRD)
        .await
        .expect("the HTTPRoute CRD is installed (hack/crds.sh up)");
    let source = crd
        .annotations()
        .get("serin.dev/derived-from")
        .cloned()
        .unwrap_or_default();
    assert!(
        source.starts_with("sigs.k8s.io/gateway-api@"),
        "{CRD} was not taken from the gateway-api module: {source:?}"
    );

    let deploy = support::routes::owner(&client, ns).await;
    let base = CanarySpec {
        provider: Provider::GatewayApi,
        ..CanarySpec::defaults("web".into(), Some(8080))
    };
    let ab = CanarySpec {
        iterations: Some(3),
        matches: support::routes::ab_rules(),
        ..base.clone()
    };
    let through_gateway = CanarySpec {
        gateway: Some(GatewayRef {
            namespace: "infra".into(),
            name: "public".into(),
        }),
        ..base.clone()
    };
    let for_hosts = CanarySpec {
        hosts: vec!["web.example.com".into(), "*.web.example.com".into()],
        ..through_gateway.clone()
    };
    let cases = [
        ("canary 70/30", base.clone(), Weights::to_canary(30), None),
        (
            "A/B, matching requests to the canary",
            ab.clone(),
            Weights::ALL_CANARY,
            Some(Weights::ALL_PRIMARY),
        ),
        (
            "attached to a Gateway",
            through_gateway.clone(),
            Weights::to_canary(10),
            None,
        ),
        (
            "attached to a Gateway, for two hosts",
            for_hosts,
            Weights::to_canary(40),
            None,
        ),
    ];
    for (what, spec, weights, unmatched) in cases {
        let built = HttpRoute
            .build(&deploy, &spec, weights)
            .expect("build the route");
        let stored = apply_route(&client, ns, &built)
            .await
            .unwrap_or_else(|e| panic!("{what}: the API server refused the route: {e}"));
        let (built_json, stored_json) = (
            serde_json::to_value(&built).expect("json"),
            serde_json::to_value(&stored).expect("json"),
        );
        assert_eq!(
            decided(&stored_json),
            decided(&built_json),
            "{what}: stored differently"
        );
        routes::assert_reads_back(&HttpRoute, &stored, &spec, (weights, unmatched), what);
        routes::assert_owned_by(&stored, &deploy);
    }

    // Mirroring and session affinity: the filters and the cookie rule pass the CRD's schema
    // and CEL rules, and read back as the route they were built from.
    let extras = CanarySpec {
        mirror_checks: Some(2),
        mirror_percent: Some(50),
        affinity_cookie: Some("serin-canary".into()),
        ..base.clone()
    };
    let mirroring = serin::router::Route {
        mirror: Some(50),
        ..Weights::ALL_PRIMARY.into()
    };
    let sticky = serin::router::Route {
        sticky: Some("0123456789abcdef".into()),
        ..Weights::to_canary(20).into()
    };
    for (what, route) in [("mirroring", mirroring), ("session affinity", sticky)] {
        let built = HttpRoute
            .build_route(&deploy, &extras, &route, None)
            .expect("build the route");
        let stored = apply_route(&client, ns, &built)
            .await
            .unwrap_or_else(|e| panic!("{what}: the API server refused the route: {e}"));
        assert_eq!(
            HttpRoute.route(&stored, &extras).ok(),
            Some(route),
            "{what}: read back differently"
        );
    }

    // Without hosts again (the annotation removed), Serin's apply takes the hostnames away:
    // the route answers for every host of its Gateway once more.
    let without = HttpRoute
        .build(&deploy, &through_gateway, Weights::to_canary(40))
        .expect("build the route");
    let stored = apply_route(&client, ns, &without)
        .await
        .expect("the route without hosts");
    assert_eq!(stored.data.pointer("/spec/hostnames"), None);

    // The schema is enforced: a Service backend without a port is refused.
    let mut portless = HttpRoute
        .build(&deploy, &base, Weights::ALL_PRIMARY)
        .expect("build the route");
    portless.metadata.name = Some("portless".into());
    if let Some(backend) = portless.data["spec"]["rules"][0]["backendRefs"][0].as_object_mut() {
        backend.remove("port");
    }
    match apply_route(&client, ns, &portless).await {
        Err(kube::Error::Api(status)) => assert!(
            status.code == 422 && status.message.contains("port"),
            "refused for another reason: {status:?}"
        ),
        other => panic!("a backendRef without a port was accepted: {other:?}"),
    }
}

/// The hostnames of `web`'s HTTPRoute as stored (`null` when it has none), once they are
/// `expected`.
async fn wait_hostnames(release: &Release, expected: Value) {
    wait_until(
        "the HTTPRoute's hostnames",
        std::time::Duration::from_secs(30),
        || async {
            let route = release.router_object().await;
            let hostnames = route.data["spec"]["hostnames"].clone();
            match hostnames == expected {
                true => Ok(()),
                false => Err(format!("hostnames {hostnames}, waiting for {expected}")),
            }
        },
    )
    .await;
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn the_route_answers_for_serin_dev_hosts_and_follows_a_change_of_them() {
    // The Gateway need not exist for the route to be stored and read back.
    let gateway = ("serin.dev/gateway", "infra/public");
    let release = Release::opt_in(
        Route::GATEWAY_API,
        "gw-hosts",
        &[gateway, ("serin.dev/hosts", "web.example.com")],
    )
    .await;
    wait_hostnames(&release, json!(["web.example.com"])).await;

    // Changed on the Deployment: the next reconcile applies the route again, at its weights.
    let changed = Route::GATEWAY_API.annotations(&[
        gateway,
        ("serin.dev/hosts", "shop.example.com,*.shop.example.com"),
    ]);
    apply(&manifest(
        release.ns(),
        "web",
        &Version::good("v1"),
        &changed,
    ));
    wait_hostnames(&release, json!(["shop.example.com", "*.shop.example.com"])).await;
    assert_eq!(
        HttpRoute.weights(
            &release.router_object().await,
            &CanarySpec::defaults("web".into(), None)
        ),
        Ok(Weights::ALL_PRIMARY)
    );

    // Removed: the route answers for every host of its parent again.
    apply(&manifest(
        release.ns(),
        "web",
        &Version::good("v1"),
        &Route::GATEWAY_API.annotations(&[gateway]),
    ));
    wait_hostnames(&release, Value::Null).await;
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn a_good_release_moves_the_route_weights_step_by_step_and_is_promoted() {
    let release = Release::for_promotion(Route::GATEWAY_API, "gw-promote").await;
    let ns = release.ns();

    // What Serin wrote: the apex Service as parent (Linkerd's mesh routing), its owner.
    let route = release.router_object().await;
    assert_eq!(
        route.data.pointer("/spec/parentRefs"),
        Some(&json!([{"group": "core", "kind": "Service", "name": "web", "port": 8080}]))
    );
    assert_eq!(
        route.labels().get("serin.dev/owner").map(String::as_str),
        Some("web")
    );
    routes::assert_written_by_serin_for_web(&route);

    release.is_promoted_step_by_step().await;

    // The simulator sent the canary its share through the route: Linkerd-style series exist
    // for it (the checks that promoted it read them).
    let canary_requests = format!("sum(response_total{{namespace=\"{ns}\",deployment=\"web\"}})");
    let requests = support::prometheus_query(&canary_requests)
        .await
        .expect("query Prometheus");
    assert!(
        requests.is_some_and(|n| n > 0.0),
        "no simulated requests reached the canary: {canary_requests} = {requests:?}"
    );
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn a_failing_canary_is_rolled_back_and_the_route_returns_to_100_0() {
    let release = Release::for_rollback(Route::GATEWAY_API, "gw-rollback").await;
    release.is_rolled_back_after_one_step().await;
}

/// The `service` label Traefik's Gateway API provider gives the backend `<svc>-<side>` on port
/// 8080, spelled out here as Traefik v3 builds it rather than taken from Serin.
fn traefik_service(ns: &str, side: &str) -> String {
    format!("{ns}-web-{side}-http-8080@kubernetesgateway")
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn a_good_release_checked_on_traefiks_series_is_promoted() {
    let release = Release::for_promotion(Route::GATEWAY_API_TRAEFIK, "gw-traefik").await;
    let ns = release.ns().to_owned();
    release.is_promoted_step_by_step().await;

    // The checks that promoted it read Traefik's series of the canary backend.
    let to_canary = prometheus_value(&format!(
        "sum(traefik_service_requests_total{{service=\"{}\"}})",
        traefik_service(&ns, "canary")
    ))
    .await;
    assert!(
        to_canary > 0.0,
        "no simulated request reached Traefik's canary backend"
    );
    let success_rate = assert_p99_read_traefiks_first_bucket(&release).await;
    assert_eq!(success_rate, Some(100.0));
}

/// The last p99 Serin measured is Traefik's: its first bucket is 0-100 ms, so the 40 ms
/// requests read as 99 ms (Linkerd's 30-40 ms bucket would give 39.9 ms). The last success
/// rate, for more checks.
async fn assert_p99_read_traefiks_first_bucket(release: &Release) -> Option<f64> {
    let checks = support::release::last_checks(&release.client, release.ns(), "web").await;
    let value = |name: &str| checks.iter().find(|(n, _)| n == name).and_then(|(_, v)| *v);
    let p99 = value("request-duration");
    assert!(
        p99.is_some_and(|ms| ms > 95.0 && ms <= 100.0),
        "p99 {p99:?} ms is not from Traefik's buckets: {checks:?}"
    );
    value("request-success-rate")
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn a_failing_canary_checked_on_traefiks_series_is_rolled_back() {
    let release = Release::for_rollback(Route::GATEWAY_API_TRAEFIK, "gw-traefik-rb").await;
    let ns = release.ns().to_owned();
    release.is_rolled_back_after_one_step().await;
    // The failures Serin measured are Traefik's 5xx answers of the canary backend.
    release.assert_measured_success_rate_near_70_percent().await;
    assert_p99_read_traefiks_first_bucket(&release).await;
    let failed = prometheus_value(&format!(
        "sum(traefik_service_requests_total{{service=\"{}\",code=~\"5..\"}})",
        traefik_service(&ns, "canary")
    ))
    .await;
    assert!(failed > 0.0, "no 5xx answer of Traefik's canary backend");
}

/// What the HTTPRoute of `web` does now: the canary weight, and `mirrored` while it copies
/// requests to the canary.
async fn route_state(release: &Release) -> Option<String> {
    let route = routes::object(&release.client, release.ns(), Provider::GatewayApi, "web").await?;
    let reader = CanarySpec::defaults("web".into(), None);
    let read = HttpRoute.route(&route, &reader).ok()?;
    Some(match read.mirror {
        Some(percent) => format!("{} mirrored {percent}%", read.weights.canary()),
        None => read.weights.canary().to_string(),
    })
}

/// Mirroring on the simulator (`serin.dev/mirror-checks: 2`): the HTTPRoute copies requests
/// to the canary at 100/0 for two checks, the simulator counts the copies in the canary's
/// series (as the canary pods' Linkerd proxies would), the checks judge it on them, and only
/// then does the weight move. Simulated traffic: no request is really mirrored here.
#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn a_mirrored_release_is_judged_on_copies_before_any_weight_moves_and_promoted() {
    let extra = [
        ("serin.dev/step-weight", "20"),
        ("serin.dev/max-weight", "40"),
        ("serin.dev/mirror-checks", "2"),
    ];
    let release = Release::opt_in(Route::GATEWAY_API, "gw-mirror", &extra).await;
    let ns = release.ns().to_owned();
    release.apply(&Version::good("v2"));
    let canary_requests = format!("sum(response_total{{namespace=\"{ns}\",deployment=\"web\"}})");
    let start = std::time::Instant::now();
    let (mut seen, mut while_mirrored) = (Vec::<String>::new(), None);
    loop {
        let state = route_state(&release).await;
        if let Some(state) = state.clone()
            && seen.last() != Some(&state)
        {
            seen.push(state);
        }
        let status = support::release::release_status(&release.client, &ns, "web").await;
        // Once a check has passed on copies alone, the canary's series hold them.
        if status.mirrored_checks == Some(1) && while_mirrored.is_none() {
            while_mirrored = support::prometheus_query(&canary_requests)
                .await
                .ok()
                .flatten();
        }
        if status.phase == serin::release::Phase::Succeeded {
            break;
        }
        assert!(
            status.phase != serin::release::Phase::Failed,
            "rolled back; the route did {seen:?}"
        );
        assert!(
            start.elapsed() < std::time::Duration::from_secs(240),
            "not promoted in time; the route did {seen:?}, status {status:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    if let Some(last) = route_state(&release).await
        && seen.last() != Some(&last)
    {
        seen.push(last);
    }
    assert_eq!(seen, ["0", "0 mirrored 100%", "20", "40", "0"]);
    assert!(
        while_mirrored.is_some_and(|n| n > 0.0),
        "no simulated copy reached the canary's series while mirroring: {canary_requests} = \
         {while_mirrored:?}"
    );
    release
        .assert_events_contain(&[
            "Mirroring requests to the canary for 2 checks",
            "Check 1/2 on mirrored requests passed",
            "Advancing the canary weight to 20% (2 checks on mirrored requests passed",
        ])
        .await;
}

/// Session affinity on the simulator (`serin.dev/affinity-cookie`): from the first weight
/// until the promotion the stored HTTPRoute carries the cookie rule for this release's
/// revision (and the canary's Set-Cookie); once promoted it is the weighted rule alone, so
/// the cookie routes nothing. The simulator sends no real request with a cookie: what a
/// proxy does with the rule is `tests/e2e_real_traffic.rs`'s to show.
#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn the_affinity_cookie_rule_is_on_the_route_while_the_canary_has_weight_and_gone_after() {
    let extra = [
        ("serin.dev/step-weight", "20"),
        ("serin.dev/max-weight", "40"),
        ("serin.dev/affinity-cookie", "serin-canary"),
    ];
    let release = Release::opt_in(Route::GATEWAY_API, "gw-sticky", &extra).await;
    let ns = release.ns().to_owned();
    release.apply(&Version::good("v2"));
    let spec = CanarySpec {
        affinity_cookie: Some("serin-canary".into()),
        ..CanarySpec::defaults("web".into(), None)
    };
    let start = std::time::Instant::now();
    let mut seen = Vec::<(u32, Option<String>)>::new();
    let mut revision = None;
    loop {
        if let Some(route) = routes::object(&release.client, &ns, Provider::GatewayApi, "web").await
            && let Ok(read) = HttpRoute.route(&route, &spec)
        {
            let state = (read.weights.canary(), read.sticky);
            if seen.last() != Some(&state) {
                seen.push(state);
            }
        }
        let status = support::release::release_status(&release.client, &ns, "web").await;
        if status.phase == serin::release::Phase::Progressing {
            revision = status.revision.clone();
        }
        if status.phase == serin::release::Phase::Succeeded {
            break;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(240),
            "not promoted in time; the route did {seen:?}, status {status:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    let revision = revision.expect("the release's revision");
    let route = release.router_object().await;
    let read = HttpRoute.route(&route, &spec).expect("read the route");
    if seen.last() != Some(&(read.weights.canary(), read.sticky.clone())) {
        seen.push((read.weights.canary(), read.sticky));
    }
    assert_eq!(
        seen,
        [
            (0, None),
            (20, Some(revision.clone())),
            (40, Some(revision)),
            (0, None)
        ]
    );
    assert_eq!(
        route
            .data
            .pointer("/spec/rules")
            .and_then(|r| r.as_array().map(Vec::len)),
        Some(1),
        "{:?}",
        route.data
    );
}
