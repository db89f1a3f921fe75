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
    Route, Router, RouterError, Side, Weights, array_at, backend_named, backend_weights,
    matches_only_headers, owned_object,
};
use crate::release::{CANARY_SUFFIX, PRIMARY_SUFFIX};
use crate::spec::{CanarySpec, DEFAULT_AFFINITY_MAX_AGE, Duration, MatchRule};

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
        self.build_route(deploy, spec, &Route::from(weights), None)
    }

    fn build_route(
        &self,
        deploy: &dyn Workload,
        spec: &CanarySpec,
        route: &Route,
        _source: Option<&DynamicObject>,
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
        let (primary, canary) = (
            format!("{svc}{PRIMARY_SUFFIX}"),
            format!("{svc}{CANARY_SUFFIX}"),
        );
        // Session affinity: the canary's responses set the cookie, the primary's expire one
        // left by an earlier release (its value names that release, so it routes nowhere).
        let cookie = spec.affinity_cookie.as_deref();
        // The value goes into a header and a regular expression as it is: the revision is
        // hex digits, and anything else is refused rather than escaped.
        if let Some(value) = &route.sticky
            && (value.is_empty() || !value.chars().all(|c| c.is_ascii_alphanumeric()))
        {
            return Err(RouterError::CannotExpress {
                kind: KIND,
                name: svc.clone(),
                why: format!("affinity cookie value {value:?} is not letters and digits"),
            });
        }
        let set_cookies = match (cookie, &route.sticky) {
            (Some(name), Some(value)) => Some((
                expire_cookie(name),
                set_cookie(name, value, spec.affinity_max_age),
            )),
            _ => None,
        };
        let backends = |weights: Weights, cookies: Option<&(String, String)>| {
            let mut refs = json!([
                {"name": primary, "port": port, "weight": weights.primary()},
                {"name": canary, "port": port, "weight": weights.canary()},
            ]);
            if let Some((on_primary, on_canary)) = cookies {
                refs[0]["filters"] = add_set_cookie(on_primary);
                refs[1]["filters"] = add_set_cookie(on_canary);
            }
            refs
        };
        let mut first = json!({"backendRefs": backends(route.weights, set_cookies.as_ref())});
        if let Some(percent) = route.mirror {
            first["filters"] = json!([mirror_filter(&canary, port, percent)]);
        }
        let mut rules = match spec.matches.as_slice() {
            [] => vec![first],
            rules => {
                first["matches"] = json!(rules.iter().map(route_match).collect::<Vec<_>>());
                vec![
                    first,
                    json!({"backendRefs": backends(Weights::ALL_PRIMARY, None)}),
                ]
            }
        };
        if let (Some(name), Some(value)) = (cookie, &route.sticky) {
            // More header matches than the weighted rule: Gateway API gives it precedence
            // whatever its place, so the weights stay on the first rule.
            rules.push(json!({
                "matches": [{"headers": [{
                    "type": "RegularExpression",
                    "name": COOKIE_HEADER,
                    "value": sticky_regex(name, value),
                }]}],
                "backendRefs": [{"name": canary, "port": port, "weight": 100}],
            }));
        }
        let mut route = json!({"parentRefs": [parent], "rules": rules});
        if !spec.hosts.is_empty() {
            route["hostnames"] = json!(spec.hosts);
        }
        let data = json!({"spec": route});
        Ok(owned_object(deploy, svc, &self.api_resource(), data))
    }

    /// The weights of the first rule, the mirror of that rule, and the affinity cookie's value
    /// when the canary's backend sets the cookie of `spec` and a rule routes it.
    fn route(&self, object: &DynamicObject, spec: &CanarySpec) -> Result<Route, RouterError> {
        let weights = self.weights(object, spec)?;
        let rules = rules(object);
        let first = rules.first().unwrap_or(&Value::Null);
        let mirror = filters(first)
            .iter()
            .find(|f| f.get("type").and_then(Value::as_str) == Some("RequestMirror"))
            .map(|f| {
                let percent = f.pointer("/requestMirror/percent").and_then(Value::as_u64);
                percent.map_or(100, |p| u32::try_from(p.min(100)).unwrap_or(100))
            });
        let canary = Side::Canary.service(&spec.service);
        let sticky = spec.affinity_cookie.as_deref().and_then(|name| {
            let backends = first.get("backendRefs").and_then(Value::as_array)?;
            let backend = backends
                .iter()
                .find(|b| b.get("name").and_then(Value::as_str) == Some(canary.as_str()))?;
            let value = filters(backend).iter().find_map(|f| {
                let added = f.pointer("/responseHeaderModifier/add")?.as_array()?;
                added.iter().find_map(|h| {
                    let is_cookie = h.get("name")?.as_str()?.eq_ignore_ascii_case("set-cookie");
                    let text = h.get("value")?.as_str()?;
                    let value = text.strip_prefix(name)?.strip_prefix('=')?;
                    let value = value.split(';').next().unwrap_or_default();
                    (is_cookie && !value.is_empty()).then(|| value.to_owned())
                })
            })?;
            let routed = rules.iter().any(|rule| {
                let regex = sticky_regex(name, &value);
                rule.pointer("/matches/0/headers/0/value")
                    .and_then(Value::as_str)
                    == Some(regex.as_str())
            });
            routed.then_some(value)
        });
        Ok(Route {
            weights,
            mirror,
            sticky,
        })
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

/// A `RequestMirror` filter copying `percent` of a rule's requests to the canary's Service
/// (Gateway API's `percent`, standard since v1.2; left out at 100, the default, for
/// implementations that predate it).
fn mirror_filter(canary: &str, port: i32, percent: u32) -> Value {
    let mut mirror = json!({"backendRef": {"name": canary, "port": port}});
    if percent < 100 {
        mirror["percent"] = json!(percent);
    }
    json!({"type": "RequestMirror", "requestMirror": mirror})
}

/// A backendRef's filters adding one `Set-Cookie` header to its responses (added, not set:
/// the application's own cookies stay).
fn add_set_cookie(value: &str) -> Value {
    json!([{
        "type": "ResponseHeaderModifier",
        "responseHeaderModifier": {"add": [{"name": "Set-Cookie", "value": value}]},
    }])
}

/// The affinity cookie as the canary sets it: the release's value, for `max_age` (whole
/// seconds, at least one), on every path.
fn set_cookie(name: &str, value: &str, max_age: Option<Duration>) -> String {
    let max_age = max_age.unwrap_or(DEFAULT_AFFINITY_MAX_AGE).as_millis() / 1000;
    format!("{name}={value}; Max-Age={}; Path=/", max_age.max(1))
}

/// The header that makes a browser drop the affinity cookie.
fn expire_cookie(name: &str) -> String {
    format!("{name}=; Max-Age=0; Path=/")
}

/// A `Cookie` header carrying the affinity cookie with this release's `value` (the revision,
/// hex digits): the pair is first or follows a `;`, and ends the header or a `;` follows.
fn sticky_regex(name: &str, value: &str) -> String {
    let any_value = cookie_regex(name);
    let prefix = any_value.strip_suffix(".*$").unwrap_or(&any_value);
    format!(r"{prefix}{value}(;.*)?$")
}

fn filters(at: &Value) -> &[Value] {
    at.get("filters")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
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
    use crate::spec::{GatewayRef, Provider};
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

    fn extras_spec() -> CanarySpec {
        CanarySpec {
            mirror_checks: Some(2),
            mirror_percent: Some(40),
            affinity_cookie: Some("serin-canary".into()),
            affinity_max_age: Some(Duration::from_secs(3_600)),
            ..spec()
        }
    }

    fn route(weights: Weights, mirror: Option<u32>, sticky: Option<&str>) -> Route {
        Route {
            weights,
            mirror,
            sticky: sticky.map(str::to_owned),
        }
    }

    #[test]
    fn while_mirroring_every_request_goes_to_the_primary_and_a_copy_to_the_canary() {
        let mirroring = route(Weights::ALL_PRIMARY, Some(40), None);
        let object = HttpRoute
            .build_route(&web(), &extras_spec(), &mirroring, None)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            object.data.pointer("/spec/rules"),
            Some(&json!([{
                "filters": [{
                    "type": "RequestMirror",
                    "requestMirror": {
                        "backendRef": {"name": "web-svc-canary", "port": 9898},
                        "percent": 40,
                    },
                }],
                "backendRefs": backends(100, 0),
            }]))
        );
        assert_eq!(HttpRoute.route(&object, &extras_spec()), Ok(mirroring));
        // All of them: no percent, Gateway API's default, for implementations before v1.2.
        let all = route(Weights::ALL_PRIMARY, Some(100), None);
        let object = HttpRoute
            .build_route(&web(), &extras_spec(), &all, None)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            object.data.pointer("/spec/rules/0/filters/0/requestMirror"),
            Some(&json!({"backendRef": {"name": "web-svc-canary", "port": 9898}}))
        );
        assert_eq!(HttpRoute.route(&object, &extras_spec()), Ok(all));
    }

    #[test]
    fn with_a_weight_the_canary_sets_the_affinity_cookie_and_a_rule_routes_it_to_the_canary() {
        let sticky = route(Weights::to_canary(20), None, Some("5f1c0ffee"));
        let object = HttpRoute
            .build_route(&web(), &extras_spec(), &sticky, None)
            .unwrap_or_else(|e| panic!("{e}"));
        let set_cookie = |value: &str| {
            json!([{
                "type": "ResponseHeaderModifier",
                "responseHeaderModifier": {"add": [{"name": "Set-Cookie", "value": value}]},
            }])
        };
        assert_eq!(
            object.data.pointer("/spec/rules"),
            Some(&json!([
                {"backendRefs": [
                    {"name": "web-svc-primary", "port": 9898, "weight": 80,
                     "filters": set_cookie("serin-canary=; Max-Age=0; Path=/")},
                    {"name": "web-svc-canary", "port": 9898, "weight": 20,
                     "filters": set_cookie("serin-canary=5f1c0ffee; Max-Age=3600; Path=/")},
                ]},
                {
                    "matches": [{"headers": [{
                        "type": "RegularExpression", "name": "Cookie",
                        "value": r"^(.*;\s*)?serin-canary=5f1c0ffee(;.*)?$",
                    }]}],
                    "backendRefs": [{"name": "web-svc-canary", "port": 9898, "weight": 100}],
                },
            ]))
        );
        assert_eq!(HttpRoute.route(&object, &extras_spec()), Ok(sticky));
        // The weights are still the first rule's, for readers that know nothing of cookies.
        let reader = CanarySpec::defaults("web-svc".into(), None);
        assert_eq!(
            HttpRoute.route(&object, &reader),
            Ok(route(Weights::to_canary(20), None, None))
        );
        assert_eq!(
            HttpRoute.unmatched_weights(&object, &extras_spec()),
            Ok(None)
        );
    }

    #[test]
    fn an_affinity_value_that_is_not_letters_and_digits_is_refused() {
        for value in ["", "a;b", "x.*", "é"] {
            let odd = route(Weights::to_canary(10), None, Some(value));
            assert!(
                matches!(
                    HttpRoute.build_route(&web(), &extras_spec(), &odd, None),
                    Err(RouterError::CannotExpress { .. })
                ),
                "{value:?}"
            );
        }
    }

    #[test]
    fn the_affinity_regex_matches_this_releases_cookie_only() {
        let regex = regex::Regex::new(&sticky_regex("serin-canary", "abc123"))
            .unwrap_or_else(|e| panic!("{e}"));
        for header in [
            "serin-canary=abc123",
            "a=1; serin-canary=abc123",
            "serin-canary=abc123; b=2",
            "a=1;serin-canary=abc123;b=2",
        ] {
            assert!(regex.is_match(header), "{header}");
        }
        for header in [
            "serin-canary=abc1234",
            "serin-canary=old999",
            "xserin-canary=abc123",
            "serin-canary=",
            "other=abc123",
        ] {
            assert!(!regex.is_match(header), "{header}");
        }
    }

    #[test]
    fn after_promotion_or_rollback_the_route_has_no_cookie_rule_nor_filter() {
        // What the machine asks for once traffic is back on the primary: weights only.
        let object = build(&extras_spec(), Weights::ALL_PRIMARY);
        assert_eq!(
            object.data.pointer("/spec/rules"),
            Some(&json!([{"backendRefs": backends(100, 0)}]))
        );
        assert_eq!(
            HttpRoute.route(&object, &extras_spec()),
            Ok(Route::from(Weights::ALL_PRIMARY))
        );
        // A route whose cookie rule was removed by hand does not count as sticky.
        let sticky = route(Weights::to_canary(30), None, Some("abc"));
        let mut object = HttpRoute
            .build_route(&web(), &extras_spec(), &sticky, None)
            .unwrap_or_else(|e| panic!("{e}"));
        if let Some(rules) = object.data["spec"]["rules"].as_array_mut() {
            rules.truncate(1);
        }
        assert_eq!(
            HttpRoute.route(&object, &extras_spec()),
            Ok(route(Weights::to_canary(30), None, None))
        );
    }

    #[test]
    fn the_other_routers_refuse_a_route_with_a_mirror_or_a_cookie() {
        for provider in [Provider::Linkerd, Provider::SmiV1alpha2, Provider::Gloo] {
            let router = crate::router::router_for(provider);
            for extra in [
                route(Weights::ALL_PRIMARY, Some(100), None),
                route(Weights::to_canary(10), None, Some("abc")),
            ] {
                assert_eq!(
                    router.build_route(&web(), &spec(), &extra, None).err(),
                    Some(RouterError::CannotMirrorOrStick {
                        name: "web-svc".into()
                    }),
                    "{provider}"
                );
            }
            assert!(
                router
                    .build_route(&web(), &spec(), &Weights::to_canary(10).into(), None)
                    .is_ok(),
                "{provider}"
            );
        }
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
