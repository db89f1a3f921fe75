//! Gloo (Gloo Edge), the router of the `gloo` provider: a `RouteTable`
//! (`gateway.solo.io/v1`) named after the apex Service whose route splits requests between
//! two `Upstream`s (`gloo.solo.io/v1`), one per version, as Flagger drives Gloo.
//!
//! ```yaml
//! # Upstream prod-web-primaryupstream-8080 (and prod-web-canaryupstream-8080 for web-canary)
//! spec:
//!   kube: {serviceName: web-primary, serviceNamespace: prod, servicePort: 8080}
//! ---
//! # RouteTable web
//! spec:
//!   routes:
//!   - inheritablePathMatchers: true   # the path comes from the delegating VirtualService
//!     matchers:                       # A/B only: requests matching any serin.dev/match rule
//!     - headers: [{name: x-canary, value: insider}]
//!     - headers: [{name: Cookie, value: '^(.*;\s*)?canary=.*$', regex: true}]
//!     routeAction:                    # ... are split by the release's weights
//!       multi:
//!         destinations:
//!         - {destination: {upstream: {name: prod-web-primaryupstream-8080, namespace: prod}}, weight: 0}
//!         - {destination: {upstream: {name: prod-web-canaryupstream-8080, namespace: prod}}, weight: 100}
//!   - inheritablePathMatchers: true   # A/B only: every other request to the primary
//!     routeAction: {multi: {destinations: [... primary 100, canary 0]}}
//! ```
//!
//! The Upstreams do not change with the weights: they are the router's companions
//! ([`Router::companions`]), applied before the route table and owned like it.
//!
//! Upstream names: `<namespace>-<service>-primaryupstream-<port>` and
//! `<namespace>-<service>-canaryupstream-<port>`, Flagger's spelling, so Flagger's dashboards
//! and the Envoy cluster names (`<upstream>_<namespace>`) carry over. They cannot collide:
//! they live in the Deployment's namespace, which starts the name, and read from the right
//! the port follows the last `-` and one of two distinct kind words precedes it, so a name
//! belongs to one (Service, version, port). The Upstreams Gloo's discovery writes
//! (`<namespace>-<service>-<port>`) live in Gloo's own namespace, and Envoy's cluster names
//! carry the Upstream's namespace, so those do not clash either.
//!
//! A/B: Gloo matches headers exactly or by regular expression (Envoy's, which must match
//! the whole value); a cookie rule is a regular expression on the `Cookie` header, as with
//! the Gateway API router. The matchers of a route are alternatives, like `serin.dev/match`.

use crate::spec::Workload;
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::{Value, json};

pub use super::Side;
use super::gatewayapi::{COOKIE_HEADER, cookie_regex};
use super::{
    Companion, Router, RouterError, Weights, array_at, backend_weights, matches_only_headers,
    owned_object,
};
use crate::spec::{CanarySpec, MatchRule};

const GATEWAY_GROUP: &str = "gateway.solo.io";
const GLOO_GROUP: &str = "gloo.solo.io";
const VERSION: &str = "v1";
const KIND: &str = "RouteTable";
const UPSTREAM_KIND: &str = "Upstream";

impl Side {
    /// The word of the Upstream name (Flagger's).
    fn word(self) -> &'static str {
        match self {
            Side::Primary => "primaryupstream",
            Side::Canary => "canaryupstream",
        }
    }
}

/// The name of the Upstream of one version of the apex Service `service` on `port`.
pub fn upstream_name(namespace: &str, service: &str, side: Side, port: i32) -> String {
    format!("{}{port}", upstream_prefix(namespace, service, side))
}

/// What the names of a version's Upstreams start with, whatever the port.
pub fn upstream_prefix(namespace: &str, service: &str, side: Side) -> String {
    format!("{namespace}-{service}-{}-", side.word())
}

/// The name Gloo gives the Envoy cluster of an Upstream (`<name>_<namespace>`), which labels
/// its series (`envoy_cluster_name`).
pub fn envoy_cluster_name(upstream: &str, namespace: &str) -> String {
    format!("{upstream}_{namespace}")
}

/// Which version an Upstream named `name` is for the apex Service `service` in `namespace`,
/// whatever its port; `None` when it is not one of that Service's Upstreams.
pub fn side_of(name: &str, namespace: &str, service: &str) -> Option<Side> {
    let (rest, port) = name.rsplit_once('-')?;
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let word = rest
        .strip_prefix(namespace)?
        .strip_prefix('-')?
        .strip_prefix(service)?
        .strip_prefix('-')?;
    [Side::Primary, Side::Canary]
        .into_iter()
        .find(|side| side.word() == word)
}

/// The API resource of Gloo's `Upstream`.
pub fn upstream_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(GLOO_GROUP, VERSION, UPSTREAM_KIND))
}

/// The `RouteTable` router.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteTable;

impl RouteTable {
    fn port(spec: &CanarySpec) -> Result<i32, RouterError> {
        spec.port.ok_or_else(|| RouterError::NoPort {
            kind: KIND,
            name: spec.service.clone(),
        })
    }
}

impl Router for RouteTable {
    fn api_resource(&self) -> ApiResource {
        ApiResource::from_gvk(&GroupVersionKind::gvk(GATEWAY_GROUP, VERSION, KIND))
    }

    fn build(
        &self,
        deploy: &dyn Workload,
        spec: &CanarySpec,
        weights: Weights,
    ) -> Result<DynamicObject, RouterError> {
        let port = Self::port(spec)?;
        let namespace = deploy.meta().namespace.clone().unwrap_or_default();
        let destination = |side: Side, weight: u32| {
            json!({
                "destination": {"upstream": {
                    "name": upstream_name(&namespace, &spec.service, side, port),
                    "namespace": namespace,
                }},
                "weight": weight,
            })
        };
        let action = |weights: Weights| {
            json!({"multi": {"destinations": [
                destination(Side::Primary, weights.primary()),
                destination(Side::Canary, weights.canary()),
            ]}})
        };
        let routes = match spec.matches.as_slice() {
            [] => json!([{"inheritablePathMatchers": true, "routeAction": action(weights)}]),
            rules => json!([
                {
                    "inheritablePathMatchers": true,
                    "matchers": rules.iter().map(matcher).collect::<Vec<_>>(),
                    "routeAction": action(weights),
                },
                {"inheritablePathMatchers": true, "routeAction": action(Weights::ALL_PRIMARY)},
            ]),
        };
        let data = json!({"spec": {"routes": routes}});
        Ok(owned_object(
            deploy,
            &spec.service,
            &self.api_resource(),
            data,
        ))
    }

    fn weights(&self, object: &DynamicObject, spec: &CanarySpec) -> Result<Weights, RouterError> {
        let first = routes(object).first().unwrap_or(&Value::Null);
        route_weights(first, object, spec)
    }

    fn unmatched_weights(
        &self,
        object: &DynamicObject,
        spec: &CanarySpec,
    ) -> Result<Option<Weights>, RouterError> {
        let routes = routes(object);
        if !routes.first().is_some_and(is_ab_route) {
            return Ok(None);
        }
        // The catch-all route Serin writes last; without one, unmatched requests are not
        // routed by this table at all.
        match routes.iter().rev().find(|r| !is_ab_route(r)) {
            Some(route) => route_weights(route, object, spec).map(Some),
            None => Err(RouterError::MissingBackend {
                kind: KIND,
                name: object.metadata.name.clone().unwrap_or_default(),
                service: Side::Primary.service(&spec.service),
            }),
        }
    }

    fn companions(
        &self,
        deploy: &dyn Workload,
        spec: &CanarySpec,
    ) -> Result<Vec<Companion>, RouterError> {
        let port = Self::port(spec)?;
        let namespace = deploy.meta().namespace.clone().unwrap_or_default();
        let resource = upstream_resource();
        Ok([Side::Primary, Side::Canary]
            .into_iter()
            .map(|side| {
                let name = upstream_name(&namespace, &spec.service, side, port);
                let data = json!({"spec": {"kube": {
                    "serviceName": side.service(&spec.service),
                    "serviceNamespace": namespace,
                    "servicePort": port,
                }}});
                Companion {
                    object: owned_object(deploy, &name, &resource, data),
                    resource: resource.clone(),
                }
            })
            .collect())
    }

    fn companion_resources(&self) -> Vec<ApiResource> {
        vec![upstream_resource()]
    }
}

/// One A/B rule as a Gloo matcher; the matchers of a route are alternatives.
fn matcher(rule: &MatchRule) -> Value {
    let header = match rule {
        MatchRule::HeaderExact { name, value } => json!({"name": name, "value": value}),
        MatchRule::HeaderRegex { name, regex } => {
            json!({"name": name, "value": regex, "regex": true})
        }
        MatchRule::Cookie { name } => {
            json!({"name": COOKIE_HEADER, "value": cookie_regex(name), "regex": true})
        }
    };
    json!({"headers": [header]})
}

/// Whether a route serves only requests with some header: an A/B route.
fn is_ab_route(route: &Value) -> bool {
    matches_only_headers(route, "matchers")
}

fn routes(object: &DynamicObject) -> &[Value] {
    array_at(object, "/spec/routes")
}

/// The destinations of one route: (upstream name, weight as stored).
fn destinations(route: &Value) -> impl Iterator<Item = (&str, Option<&Value>)> {
    route
        .pointer("/routeAction/multi/destinations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|d| {
            let name = d.pointer("/destination/upstream/name")?.as_str()?;
            Some((name, d.get("weight")))
        })
}

/// The weights of one route's primary and canary Upstreams, recognised by name whatever
/// their port. A destination without a weight weighs 0, as Gloo reads it.
fn route_weights(
    route: &Value,
    object: &DynamicObject,
    spec: &CanarySpec,
) -> Result<Weights, RouterError> {
    let name = object.metadata.name.clone().unwrap_or_default();
    let namespace = object.metadata.namespace.as_deref().unwrap_or_default();
    let backend = |side: Side| {
        destinations(route)
            .find(|(upstream, _)| side_of(upstream, namespace, &spec.service) == Some(side))
    };
    let weight = |stored: Option<&Value>| match stored {
        None => Some(0),
        Some(weight) => weight.as_u64().map(u128::from),
    };
    backend_weights(KIND, &name, &spec.service, backend, weight)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::Deployment;

    use crate::router::testing::{ab_rules, web};

    fn spec() -> CanarySpec {
        CanarySpec {
            provider: crate::spec::Provider::Gloo,
            ..CanarySpec::defaults("web-svc".into(), Some(9898))
        }
    }

    fn ab_spec() -> CanarySpec {
        CanarySpec {
            iterations: Some(5),
            matches: ab_rules(),
            ..spec()
        }
    }

    fn build(spec: &CanarySpec, weights: Weights) -> DynamicObject {
        RouteTable
            .build(&web(), spec, weights)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn action(primary: u32, canary: u32) -> Value {
        json!({"multi": {"destinations": [
            {"destination": {"upstream": {"name": "prod-web-svc-primaryupstream-9898", "namespace": "prod"}},
             "weight": primary},
            {"destination": {"upstream": {"name": "prod-web-svc-canaryupstream-9898", "namespace": "prod"}},
             "weight": canary},
        ]}})
    }

    fn owned_meta(name: &str) -> Value {
        json!({
            "name": name,
            "namespace": "prod",
            "labels": {"serin.dev/owner": "web"},
            "ownerReferences": [{
                "apiVersion": "apps/v1", "kind": "Deployment", "name": "web",
                "uid": "uid-1", "controller": true, "blockOwnerDeletion": true
            }]
        })
    }

    #[test]
    fn the_route_table_is_named_after_the_apex_service_and_weights_two_upstreams() {
        let object = build(&spec(), Weights::to_canary(25));
        assert_eq!(
            serde_json::to_value(&object).unwrap_or_default(),
            json!({
                "apiVersion": "gateway.solo.io/v1",
                "kind": "RouteTable",
                "metadata": owned_meta("web-svc"),
                "spec": {"routes": [
                    {"inheritablePathMatchers": true, "routeAction": action(75, 25)}
                ]}
            })
        );
        assert_eq!(RouteTable.api_resource().plural, "routetables");
        assert_eq!(RouteTable.object_name(&spec()), "web-svc");
    }

    #[test]
    fn the_companions_are_one_kube_upstream_per_version_owned_like_the_route_table() {
        let companions = RouteTable
            .companions(&web(), &spec())
            .unwrap_or_else(|e| panic!("{e}"));
        let objects: Vec<Value> = companions
            .iter()
            .map(|c| serde_json::to_value(&c.object).unwrap_or_default())
            .collect();
        let upstream = |name: &str, service: &str| {
            json!({
                "apiVersion": "gloo.solo.io/v1",
                "kind": "Upstream",
                "metadata": owned_meta(name),
                "spec": {"kube": {
                    "serviceName": service, "serviceNamespace": "prod", "servicePort": 9898
                }}
            })
        };
        assert_eq!(
            objects,
            [
                upstream("prod-web-svc-primaryupstream-9898", "web-svc-primary"),
                upstream("prod-web-svc-canaryupstream-9898", "web-svc-canary"),
            ]
        );
        for companion in &companions {
            assert_eq!(companion.resource.plural, "upstreams");
            assert_eq!(companion.resource.api_version, "gloo.solo.io/v1");
        }
        assert_eq!(RouteTable.companion_resources(), [upstream_resource()]);
    }

    #[test]
    fn upstream_names_are_told_apart_by_service_version_and_namespace() {
        let name = upstream_name("prod", "web", Side::Canary, 8080);
        assert_eq!(name, "prod-web-canaryupstream-8080");
        assert_eq!(side_of(&name, "prod", "web"), Some(Side::Canary));
        assert_eq!(
            side_of("prod-web-primaryupstream-80", "prod", "web"),
            Some(Side::Primary)
        );
        // Another Service's, another namespace's, Gloo discovery's, a name without a port.
        assert_eq!(side_of(&name, "prod", "web-canaryupstream"), None);
        assert_eq!(side_of(&name, "prod-web", "canaryupstream"), None);
        assert_eq!(side_of("prod-web-canary-8080", "prod", "web"), None);
        assert_eq!(side_of("prod-web-canaryupstream-", "prod", "web"), None);
        assert_eq!(side_of("prod-web-canaryupstream-http", "prod", "web"), None);
        // A Service whose name ends like an Upstream's kind word is still its own.
        let tricky = upstream_name("prod", "web-primaryupstream-1", Side::Primary, 80);
        assert_eq!(side_of(&tricky, "prod", "web"), None);
        assert_eq!(
            side_of(&tricky, "prod", "web-primaryupstream-1"),
            Some(Side::Primary)
        );
    }

    #[test]
    fn ab_rules_send_matching_requests_by_the_weights_and_the_rest_to_the_primary() {
        let object = build(&ab_spec(), Weights::ALL_CANARY);
        assert_eq!(
            object.data.pointer("/spec/routes"),
            Some(&json!([
                {
                    "inheritablePathMatchers": true,
                    "matchers": [
                        {"headers": [{"name": "x-canary", "value": "insider"}]},
                        {"headers": [{"name": "user-agent", "value": ".*Firefox.*", "regex": true}]},
                        {"headers": [{
                            "name": "Cookie", "value": r"^(.*;\s*)?canary=.*$", "regex": true
                        }]},
                    ],
                    "routeAction": action(0, 100),
                },
                {"inheritablePathMatchers": true, "routeAction": action(100, 0)},
            ]))
        );
        assert_eq!(
            RouteTable.weights(&object, &ab_spec()),
            Ok(Weights::ALL_CANARY)
        );
        assert_eq!(
            RouteTable.unmatched_weights(&object, &ab_spec()),
            Ok(Some(Weights::ALL_PRIMARY))
        );
    }

    #[test]
    fn weights_read_back_equal_the_weights_written_without_knowing_the_port_or_rules() {
        for spec in [spec(), ab_spec()] {
            for canary in [0, 1, 10, 50, 99, 100] {
                let written = Weights::to_canary(canary);
                let object = build(&spec, written);
                // The simulator reads with the defaults: no match rules, no port.
                let reader = CanarySpec::defaults("web-svc".into(), None);
                assert_eq!(RouteTable.weights(&object, &reader), Ok(written));
            }
        }
        let plain = build(&spec(), Weights::to_canary(40));
        assert_eq!(RouteTable.unmatched_weights(&plain, &spec()), Ok(None));
    }

    #[test]
    fn weights_as_gloo_reads_them_are_normalised() {
        let mut object = build(&spec(), Weights::ALL_PRIMARY);
        let destinations = "/spec/routes/0/routeAction/multi/destinations";
        if let Some(d) = object.data.pointer_mut(destinations) {
            d[0]["weight"] = json!(1);
            d[1]["weight"] = json!(3);
        }
        assert_eq!(
            RouteTable.weights(&object, &spec()),
            Ok(Weights::to_canary(75))
        );
        // No weight is weight 0 (Flagger leaves 0 out).
        if let Some(d) = object.data.pointer_mut(destinations) {
            d[1].as_object_mut().map(|d| d.remove("weight"));
        }
        assert_eq!(
            RouteTable.weights(&object, &spec()),
            Ok(Weights::ALL_PRIMARY)
        );
    }

    #[test]
    fn unreadable_route_tables_say_what_is_wrong() {
        let mut object = build(&spec(), Weights::ALL_PRIMARY);
        let destinations = "/spec/routes/0/routeAction/multi/destinations";
        if let Some(d) = object.data.pointer_mut(destinations) {
            d[1]["weight"] = json!("ten");
        }
        assert_eq!(
            RouteTable.weights(&object, &spec()),
            Err(RouterError::BadWeight {
                kind: "RouteTable",
                name: "web-svc".into(),
                service: "prod-web-svc-canaryupstream-9898".into(),
                weight: "\"ten\"".into(),
            })
        );
        if let Some(d) = object.data.pointer_mut(destinations) {
            d[0]["weight"] = json!(0);
            d[1]["weight"] = json!(0);
        }
        assert!(matches!(
            RouteTable.weights(&object, &spec()),
            Err(RouterError::NoWeight { .. })
        ));
        // Another Service's route table has none of this Service's Upstreams.
        let other = CanarySpec::defaults("api".into(), None);
        assert_eq!(
            RouteTable.weights(&object, &other),
            Err(RouterError::MissingBackend {
                kind: "RouteTable",
                name: "web-svc".into(),
                service: "api-primary".into(),
            })
        );
        object.data["spec"]["routes"] = json!([]);
        assert!(matches!(
            RouteTable.weights(&object, &spec()),
            Err(RouterError::MissingBackend { .. })
        ));
        let mut ab = build(&ab_spec(), Weights::ALL_PRIMARY);
        if let Some(routes) = ab.data["spec"]["routes"].as_array_mut() {
            routes.truncate(1);
        }
        assert!(matches!(
            RouteTable.unmatched_weights(&ab, &ab_spec()),
            Err(RouterError::MissingBackend { .. })
        ));
    }

    #[test]
    fn without_a_port_there_is_no_upstream_to_route_to() {
        let spec = CanarySpec::defaults("web-svc".into(), None);
        let no_port = Some(RouterError::NoPort {
            kind: "RouteTable",
            name: "web-svc".into(),
        });
        assert_eq!(
            RouteTable.build(&web(), &spec, Weights::ALL_PRIMARY).err(),
            no_port
        );
        assert_eq!(RouteTable.companions(&web(), &spec).err(), no_port);
    }

    /// The same validation admission runs: a `gloo` release may match headers and cookies.
    #[test]
    fn a_gloo_release_may_match_headers_and_cookies() {
        let deployment: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "prod", "annotations": {
                "serin.dev/enabled": "true",
                "serin.dev/provider": "gloo",
                "serin.dev/iterations": "5",
                "serin.dev/match": "header:x-canary=insider,cookie:canary",
            }},
            "spec": {
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"spec": {"containers": [
                    {"name": "app", "ports": [{"containerPort": 8080}]}
                ]}}
            }
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        match crate::spec::read_deployment(&deployment) {
            Ok(crate::spec::OptIn::Enabled(spec)) => {
                let object = build(&spec, Weights::ALL_CANARY);
                assert_eq!(
                    object.data.pointer("/spec/routes/0/matchers/1/headers/0"),
                    Some(&json!({
                        "name": "Cookie", "value": r"^(.*;\s*)?canary=.*$", "regex": true
                    }))
                );
                assert_eq!(
                    object.data.pointer(
                        "/spec/routes/0/routeAction/multi/destinations/1/destination/upstream/name"
                    ),
                    Some(&json!("prod-web-canaryupstream-8080"))
                );
            }
            other => panic!("gloo with serin.dev/match: {other:?}"),
        }
    }
}
