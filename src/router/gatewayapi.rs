//! Gateway API `HTTPRoute` (`gateway.networking.k8s.io/v1`), the router of the `gatewayapi`
//! provider: how Linkerd 2.14 and later (and other Gateway API implementations) split traffic.
//!
//! ```yaml
//! metadata: {name: web}            # named after the apex Service
//! spec:
//!   parentRefs:                     # the apex Service, as Linkerd expects for mesh traffic
//!   - {group: core, kind: Service, name: web, port: 8080}
//!   rules:
//!   - matches:                      # A/B only: requests matching any serin.dev/match rule
//!     - headers: [{type: Exact, name: x-canary, value: "yes"}]
//!     - headers: [{type: RegularExpression, name: Cookie, value: "^(.*;\s*)?canary=.*$"}]
//!     backendRefs:                  # ... are split by the release's weights
//!     - {name: web-primary, port: 8080, weight: 0}
//!     - {name: web-canary, port: 8080, weight: 100}
//!   - backendRefs:                  # every other request: to the primary
//!     - {name: web-primary, port: 8080, weight: 100}
//!     - {name: web-canary, port: 8080, weight: 0}
//! ```
//!
//! Without A/B rules there is one rule, carrying the weights. With `serin.dev/gateway:
//! NS/NAME` the parent is that Gateway instead (traffic that enters through it). With
//! `serin.dev/hosts` the route carries `hostnames: [...]`, so it only takes the requests for
//! those hosts and leaves the rest of a shared Gateway listener to other routes; without, it
//! has no `hostnames` and answers for every host its parent does.
//!
//! The first rule always carries the weights [`Router::build`] was given, so reading them back
//! does not depend on the configuration: the simulator reads routes without knowing it.

use crate::spec::Workload;
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::{Value, json};

use super::{
    Router, RouterError, Side, Weights, array_at, backend_named, backend_weights,
    matches_only_headers, owned_object,
};
use crate::release::{CANARY_SUFFIX, PRIMARY_SUFFIX};
use crate::spec::{CanarySpec, MatchRule};

const GROUP: &str = "gateway.networking.k8s.io";
const VERSION: &str = "v1";
const KIND: &str = "HTTPRoute";
/// The header cookies travel in: a cookie match is a regular expression on it.
pub(super) const COOKIE_HEADER: &str = "Cookie";

/// The `HTTPRoute` router.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpRoute;

impl Router for HttpRoute {
    fn api_resource(&self) -> ApiResource {
        ApiResource::from_gvk(&GroupVersionKind::gvk(GROUP, VERSION, KIND))
    }

    fn build(
        &self,
        deploy: &dyn Workload,
        spec: &CanarySpec,
        weights: Weights,
    ) -> Result<DynamicObject, RouterError> {
        let svc = &spec.service;
        let Some(port) = spec.port else {
            return Err(RouterError::NoPort {
                kind: KIND,
                name: svc.clone(),
            });
        };
        let parent = match &spec.gateway {
            Some(gateway) => json!({
                "group": GROUP,
                "kind": "Gateway",
                "namespace": gateway.namespace,
                "name": gateway.name,
            }),
            None => json!({"group": "core", "kind": "Service", "name": svc, "port": port}),
        };
        let backends = |weights: Weights| {
            json!([
                {"name": format!("{svc}{PRIMARY_SUFFIX}"), "port": port, "weight": weights.primary()},
                {"name": format!("{svc}{CANARY_SUFFIX}"), "port": port, "weight": weights.canary()},
            ])
        };
        let rules = match spec.matches.as_slice() {
            [] => json!([{"backendRefs": backends(weights)}]),
            rules => json!([
                {
                    "matches": rules.iter().map(route_match).collect::<Vec<_>>(),
                    "backendRefs": backends(weights),
                },
                {"backendRefs": backends(Weights::ALL_PRIMARY)},
            ]),
        };
        let mut route = json!({"parentRefs": [parent], "rules": rules});
        if !spec.hosts.is_empty() {
            route["hostnames"] = json!(spec.hosts);
        }
        let data = json!({"spec": route});
        Ok(owned_object(deploy, svc, &self.api_resource(), data))
    }

    fn weights(&self, object: &DynamicObject, spec: &CanarySpec) -> Result<Weights, RouterError> {
        let name = object.metadata.name.clone().unwrap_or_default();
        let first = rules(object).first().unwrap_or(&Value::Null);
        rule_weights(first, spec, &name)
    }

    fn unmatched_weights(
        &self,
        object: &DynamicObject,
        spec: &CanarySpec,
    ) -> Result<Option<Weights>, RouterError> {
        let name = object.metadata.name.clone().unwrap_or_default();
        let rules = rules(object);
        if !rules.first().is_some_and(is_ab_rule) {
            return Ok(None);
        }
        // The catch-all rule Serin writes last; a route without one sends unmatched requests
        // nowhere, which is what reading no weights for them means.
        match rules.iter().rev().find(|r| !is_ab_rule(r)) {
            Some(rule) => rule_weights(rule, spec, &name).map(Some),
            None => Err(RouterError::MissingBackend {
                kind: KIND,
                name,
                service: format!("{}{PRIMARY_SUFFIX}", spec.service),
            }),
        }
    }
}

/// One A/B rule as an `HTTPRouteMatch`; the matches of a rule are alternatives.
fn route_match(rule: &MatchRule) -> Value {
    let header = match rule {
        MatchRule::HeaderExact { name, value } => {
            json!({"type": "Exact", "name": name, "value": value})
        }
        MatchRule::HeaderRegex { name, regex } => {
            json!({"type": "RegularExpression", "name": name, "value": regex})
        }
        MatchRule::Cookie { name } => json!({
            "type": "RegularExpression",
            "name": COOKIE_HEADER,
            "value": cookie_regex(name),
        }),
    };
    json!({"headers": [header]})
}

/// A `Cookie` header that carries the cookie `name` (any value): it is the first pair or
/// follows a `;`. Anchored at both ends, so it means the same to implementations that match
/// the whole value (Envoy) and to those that search in it.
pub(super) fn cookie_regex(name: &str) -> String {
    let mut escaped = String::with_capacity(name.len());
    for c in name.chars() {
        // Cookie names are HTTP tokens; these are the token characters that are regex syntax.
        if matches!(c, '.' | '+' | '*' | '^' | '$' | '|') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    format!(r"^(.*;\s*)?{escaped}=.*$")
}

/// Whether a rule routes only requests with some header: an A/B rule. The API server gives a
/// rule without matches a path match on `/` (every request), so having matches is not enough.
fn is_ab_rule(rule: &Value) -> bool {
    matches_only_headers(rule, "matches")
}

fn rules(object: &DynamicObject) -> &[Value] {
    array_at(object, "/spec/rules")
}

/// The weights of one rule's `-primary` and `-canary` backendRefs. A backendRef without a
/// weight weighs 1, as the Gateway API defines.
fn rule_weights(rule: &Value, spec: &CanarySpec, name: &str) -> Result<Weights, RouterError> {
    let backends = rule
        .get("backendRefs")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let backend = |side: Side| backend_named(backends, "name", &side.service(&spec.service));
    let weight = |stored: Option<&Value>| match stored {
        None => Some(1),
        Some(weight) => weight.as_u64().map(u128::from),
    };
    backend_weights(KIND, name, &spec.service, backend, weight)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::GatewayRef;
    use k8s_openapi::api::apps::v1::Deployment;

    use crate::router::testing::{ab_rules, web};

    fn spec() -> CanarySpec {
        CanarySpec::defaults("web-svc".into(), Some(9898))
    }

    fn ab_spec() -> CanarySpec {
        CanarySpec {
            iterations: Some(5),
            matches: ab_rules(),
            ..spec()
        }
    }

    fn build(spec: &CanarySpec, weights: Weights) -> DynamicObject {
        HttpRoute
            .build(&web(), spec, weights)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn backends(primary: u32, canary: u32) -> Value {
        json!([
            {"name": "web-svc-primary", "port": 9898, "weight": primary},
            {"name": "web-svc-canary", "port": 9898, "weight": canary},
        ])
    }

    #[test]
    fn canary_route_is_named_after_the_apex_service_and_weights_its_two_backends() {
        let object = build(&spec(), Weights::to_canary(25));
        let value = serde_json::to_value(&object).unwrap_or_default();
        assert_eq!(
            value,
            json!({
                "apiVersion": "gateway.networking.k8s.io/v1",
                "kind": "HTTPRoute",
                "metadata": {
                    "name": "web-svc",
                    "namespace": "prod",
                    "labels": {"serin.dev/owner": "web"},
                    "ownerReferences": [{
                        "apiVersion": "apps/v1", "kind": "Deployment", "name": "web",
                        "uid": "uid-1", "controller": true, "blockOwnerDeletion": true
                    }]
                },
                "spec": {
                    "parentRefs": [
                        {"group": "core", "kind": "Service", "name": "web-svc", "port": 9898}
                    ],
                    "rules": [{"backendRefs": backends(75, 25)}]
                }
            })
        );
        assert_eq!(HttpRoute.api_resource().plural, "httproutes");
    }

    #[test]
    fn with_a_gateway_the_gateway_is_the_parent() {
        let spec = CanarySpec {
            gateway: Some(GatewayRef {
                namespace: "infra".into(),
                name: "public".into(),
            }),
            ..spec()
        };
        let object = build(&spec, Weights::ALL_PRIMARY);
        assert_eq!(
            object.data.pointer("/spec/parentRefs"),
            Some(&json!([{
                "group": "gateway.networking.k8s.io",
                "kind": "Gateway",
                "namespace": "infra",
                "name": "public",
            }]))
        );
    }

    fn hosts_spec() -> CanarySpec {
        CanarySpec {
            gateway: Some(GatewayRef {
                namespace: "infra".into(),
                name: "public".into(),
            }),
            hosts: vec!["web.example.com".into(), "*.web.example.com".into()],
            ..spec()
        }
    }

    #[test]
    fn with_hosts_the_route_answers_only_for_those_hostnames() {
        let object = build(&hosts_spec(), Weights::to_canary(30));
        assert_eq!(
            object.data,
            json!({"spec": {
                "parentRefs": [{
                    "group": "gateway.networking.k8s.io",
                    "kind": "Gateway",
                    "namespace": "infra",
                    "name": "public",
                }],
                "hostnames": ["web.example.com", "*.web.example.com"],
                "rules": [{"backendRefs": backends(70, 30)}],
            }})
        );
        let ab = CanarySpec {
            iterations: Some(5),
            matches: ab_rules(),
            ..hosts_spec()
        };
        let object = build(&ab, Weights::ALL_CANARY);
        assert_eq!(
            object.data.pointer("/spec/hostnames"),
            Some(&json!(["web.example.com", "*.web.example.com"]))
        );
        assert_eq!(HttpRoute.weights(&object, &ab), Ok(Weights::ALL_CANARY));
        assert_eq!(
            HttpRoute.unmatched_weights(&object, &ab),
            Ok(Some(Weights::ALL_PRIMARY))
        );
    }

    #[test]
    fn without_hosts_the_route_has_no_hostnames() {
        for spec in [spec(), ab_spec()] {
            let object = build(&spec, Weights::to_canary(10));
            assert_eq!(object.data.pointer("/spec/hostnames"), None);
        }
    }

    #[test]
    fn ab_rules_send_matching_requests_by_the_weights_and_the_rest_to_the_primary() {
        let object = build(&ab_spec(), Weights::ALL_CANARY);
        assert_eq!(
            object.data.pointer("/spec/rules"),
            Some(&json!([
                {
                    "matches": [
                        {"headers": [{"type": "Exact", "name": "x-canary", "value": "insider"}]},
                        {"headers": [{
                            "type": "RegularExpression", "name": "user-agent", "value": ".*Firefox.*"
                        }]},
                        {"headers": [{
                            "type": "RegularExpression", "name": "Cookie",
                            "value": r"^(.*;\s*)?canary=.*$"
                        }]},
                    ],
                    "backendRefs": backends(0, 100),
                },
                {"backendRefs": backends(100, 0)},
            ]))
        );
        assert_eq!(
            HttpRoute.weights(&object, &ab_spec()),
            Ok(Weights::ALL_CANARY)
        );
        assert_eq!(
            HttpRoute.unmatched_weights(&object, &ab_spec()),
            Ok(Some(Weights::ALL_PRIMARY))
        );
    }

    #[test]
    fn cookie_names_are_escaped_in_the_regex() {
        assert_eq!(cookie_regex("a.b+c"), r"^(.*;\s*)?a\.b\+c=.*$");
        assert_eq!(cookie_regex("x|y^$*"), r"^(.*;\s*)?x\|y\^\$\*=.*$");
        assert_eq!(cookie_regex("plain_-~!#"), r"^(.*;\s*)?plain_-~!#=.*$");
    }

    #[test]
    fn weights_read_back_equal_the_weights_written_without_knowing_the_rules() {
        for spec in [spec(), ab_spec(), hosts_spec()] {
            for canary in [0, 1, 10, 50, 99, 100] {
                let written = Weights::to_canary(canary);
                let object = build(&spec, written);
                // The simulator reads with the defaults: no match rules, no port, no hosts.
                let reader = CanarySpec::defaults("web-svc".into(), None);
                assert_eq!(HttpRoute.weights(&object, &reader), Ok(written));
            }
        }
        let plain = build(&spec(), Weights::to_canary(40));
        assert_eq!(HttpRoute.unmatched_weights(&plain, &spec()), Ok(None));
    }

    #[test]
    fn the_path_match_the_api_server_adds_to_every_rule_is_not_an_ab_rule() {
        let every_request = json!([{"path": {"type": "PathPrefix", "value": "/"}}]);
        let mut plain = build(&spec(), Weights::to_canary(20));
        plain.data["spec"]["rules"][0]["matches"] = every_request.clone();
        assert_eq!(
            HttpRoute.weights(&plain, &spec()),
            Ok(Weights::to_canary(20))
        );
        assert_eq!(HttpRoute.unmatched_weights(&plain, &spec()), Ok(None));

        let mut ab = build(&ab_spec(), Weights::ALL_CANARY);
        ab.data["spec"]["rules"][1]["matches"] = every_request;
        if let Some(matches) = ab.data["spec"]["rules"][0]["matches"].as_array_mut() {
            for m in matches {
                m["path"] = json!({"type": "PathPrefix", "value": "/"});
            }
        }
        assert_eq!(HttpRoute.weights(&ab, &ab_spec()), Ok(Weights::ALL_CANARY));
        assert_eq!(
            HttpRoute.unmatched_weights(&ab, &ab_spec()),
            Ok(Some(Weights::ALL_PRIMARY))
        );
    }

    #[test]
    fn weights_as_the_api_server_may_store_them_are_normalised() {
        let mut object = build(&spec(), Weights::ALL_PRIMARY);
        // Other weights than percentages, and fields the API server defaults.
        object.data["spec"]["rules"] = json!([{
            "matches": [],
            "backendRefs": [
                {"group": "", "kind": "Service", "name": "web-svc-canary", "port": 9898, "weight": 3},
                {"group": "", "kind": "Service", "name": "web-svc-primary", "port": 9898, "weight": 1},
            ]
        }]);
        assert_eq!(
            HttpRoute.weights(&object, &spec()),
            Ok(Weights::to_canary(75))
        );
        assert_eq!(HttpRoute.unmatched_weights(&object, &spec()), Ok(None));
        // No weight is weight 1.
        if let Some(backend) = object.data["spec"]["rules"][0]["backendRefs"][0].as_object_mut() {
            backend.remove("weight");
        }
        assert_eq!(
            HttpRoute.weights(&object, &spec()),
            Ok(Weights::to_canary(50))
        );
    }

    #[test]
    fn unreadable_routes_say_what_is_wrong() {
        let mut object = build(&spec(), Weights::ALL_PRIMARY);
        object.data["spec"]["rules"][0]["backendRefs"][1]["weight"] = json!("ten");
        assert_eq!(
            HttpRoute.weights(&object, &spec()),
            Err(RouterError::BadWeight {
                kind: "HTTPRoute",
                name: "web-svc".into(),
                service: "web-svc-canary".into(),
                weight: "\"ten\"".into(),
            })
        );
        object.data["spec"]["rules"][0]["backendRefs"] = backends(0, 0);
        assert!(matches!(
            HttpRoute.weights(&object, &spec()),
            Err(RouterError::NoWeight { .. })
        ));
        object.data["spec"]["rules"] = json!([]);
        assert!(matches!(
            HttpRoute.weights(&object, &spec()),
            Err(RouterError::MissingBackend { .. })
        ));
        let mut ab = build(&ab_spec(), Weights::ALL_PRIMARY);
        if let Some(rules) = ab.data["spec"]["rules"].as_array_mut() {
            rules.truncate(1);
        }
        assert!(matches!(
            HttpRoute.unmatched_weights(&ab, &ab_spec()),
            Err(RouterError::MissingBackend { .. })
        ));
    }

    /// The same validation admission runs: A/B rules pass with `gatewayapi` and are refused
    /// with every provider whose router cannot match.
    #[test]
    fn a_gatewayapi_release_may_match_and_the_smi_ones_may_not() {
        let deployment = |provider: &str| -> Deployment {
            serde_json::from_value(json!({
                "metadata": {"name": "web", "namespace": "prod", "annotations": {
                    "serin.dev/enabled": "true",
                    "serin.dev/provider": provider,
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
            .unwrap_or_else(|e| panic!("{e}"))
        };
        match crate::spec::read_deployment(&deployment("gatewayapi")) {
            Ok(crate::spec::OptIn::Enabled(spec)) => {
                let object = build(&spec, Weights::ALL_PRIMARY);
                assert_eq!(
                    object
                        .data
                        .pointer("/spec/rules/0/matches/1/headers/0/name"),
                    Some(&json!("Cookie"))
                );
            }
            other => panic!("gatewayapi with serin.dev/match: {other:?}"),
        }
        for provider in ["linkerd", "smi:v1alpha2"] {
            let refused = crate::spec::read_deployment(&deployment(provider))
                .err()
                .map(|problems| problems.to_string())
                .unwrap_or_default();
            assert!(
                refused.contains(&format!(
                    "serin.dev/match: needs serin.dev/provider gatewayapi, nginx, gloo, not {provider}"
                )),
                "{provider}: {refused:?}"
            );
        }
    }

    #[test]
    fn without_a_port_there_is_nothing_to_route_to() {
        let spec = CanarySpec::defaults("web-svc".into(), None);
        assert_eq!(
            HttpRoute.build(&web(), &spec, Weights::ALL_PRIMARY).err(),
            Some(RouterError::NoPort {
                kind: "HTTPRoute",
                name: "web-svc".into()
            })
        );
    }
}
