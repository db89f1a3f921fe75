//! From what the cluster says to what the simulator sends, as pure functions: a router object
//! (the SMI `TrafficSplit` that Linkerd serves, or a Gateway API `HTTPRoute`) names the
//! opted-in Deployment it belongs to in its `serin.dev/owner` label; its weights go to that
//! Deployment (the canary) and to `<name>-primary`, each version behaving as its pod
//! template's `simulate.serin.dev/*` annotations say.
//!
//! A/B rules: an `HTTPRoute` with match rules splits the requests that match by its first
//! rule and sends the rest by its catch-all rule. The simulator sends no real requests, so it
//! takes [`MATCHING_PERCENT`] of its traffic to be requests that carry the header or cookie
//! of some rule, and the rest to carry none.
//!
//! Mirroring: while an `HTTPRoute` copies requests to the canary (a `RequestMirror` filter,
//! `serin.dev/mirror-checks`), the primary still answers every request and the canary's pods
//! also receive the mirrored share, so the canary's backend weighs that share on top of what
//! is routed to it (the two backends then sum to more than 100).
//!
//! Blue/Green: the canary is checked while the router gives it no traffic. In a cluster the
//! checks then measure what a load tester sends to `<svc>-canary` (Flagger's setups call
//! flagger-loadtester from a `rollout` webhook). The simulator stands in for that load tester
//! too ([`load_test_of`]): a Ready canary of a Blue/Green release (`serin.dev/iterations`
//! without `serin.dev/match`) that its router gives no share gets [`LOAD_TEST_PERCENT`] of the
//! simulated rate, in series of their own labelled `authority="<svc>-canary.<ns>.svc.cluster.local"`,
//! so routed (user) traffic and the load test can be told apart, as Linkerd's `authority`
//! label does.
//!
//! Real pods: a Deployment whose pods run on the local environment's real node (its pod
//! template selects `serin.dev/node: real`, see `docs/real-node.md`) answers real requests
//! through a real data plane, which exports its own series. The simulator leaves such
//! releases alone ([`on_real_node`]): its made-up series would be summed with the real ones.
//!
//! The weights are read by the same [`Router`] code the controller writes them with, so the
//! simulator and Serin cannot disagree about a spelling. Following another kind of router
//! object is one entry in [`router_kinds`].

use std::borrow::Borrow;

use k8s_openapi::api::apps::v1::Deployment;
use kube::core::{ApiResource, DynamicObject};

use super::{Backend, Behaviour};
use crate::release::{CANARY_SUFFIX, OWNER_LABEL, PRIMARY_SUFFIX};
use crate::router::{Router, RouterError, router_for};
use crate::spec::{CanarySpec, Provider};

/// Finds the apex Service an object routes: the [`CanarySpec::service`] from which the
/// router derives the names of its `-primary` and `-canary` backends.
pub(super) type ApexService = fn(&DynamicObject) -> Option<String>;

/// The share of simulated requests, in percent, that match a router's A/B rules (carry the
/// header or cookie they ask for).
pub const MATCHING_PERCENT: u32 = 20;

/// The share of the simulated request rate, in percent, that the stand-in load tester sends
/// to a Blue/Green canary under analysis.
pub const LOAD_TEST_PERCENT: u32 = 10;

/// Annotations of a Deployment that make its release Blue/Green: `iterations` without
/// `match` (SPEC "Opting in"). The simulator keeps these two of its Deployments' annotations.
pub const ITERATIONS_ANNOTATION: &str = "serin.dev/iterations";
pub const MATCH_ANNOTATION: &str = "serin.dev/match";

/// Requests the stand-in load tester sends to a canary, past the router.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadTest {
    /// The canary, with the load test's share of the simulated rate as its weight.
    pub backend: Backend,
    /// The Service the load tester calls: `<svc>-canary.<ns>.svc.cluster.local`.
    pub authority: String,
}

/// A kind of router object the simulator follows.
pub struct RouterKind {
    /// Reads the weights of an object of this kind.
    router: Box<dyn Router>,
    apex_service: ApexService,
}

impl RouterKind {
    pub(super) fn new(router: Box<dyn Router>, apex_service: ApexService) -> Self {
        Self {
            router,
            apex_service,
        }
    }

    /// The API resource to watch.
    pub fn api_resource(&self) -> ApiResource {
        self.router.api_resource()
    }

    /// What to call objects of this kind in logs: `TrafficSplits (split.smi-spec.io/v1alpha1)`,
    /// `Ingresses (networking.k8s.io/v1)`.
    pub fn describe(&self) -> String {
        let resource = self.api_resource();
        let plural = if resource.kind.ends_with('s') {
            "es"
        } else {
            "s"
        };
        format!("{}{plural} ({})", resource.kind, resource.api_version)
    }
}

impl std::fmt::Debug for RouterKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("RouterKind")
            .field(&self.api_resource().api_version)
            .finish()
    }
}

/// The router kinds the simulator follows: SMI `TrafficSplit` v1alpha1, what Linkerd serves,
/// and the Gateway API `HTTPRoute`.
pub fn router_kinds() -> Vec<RouterKind> {
    let kinds: [(Provider, ApexService); 2] = [
        (Provider::Linkerd, spec_service),
        (Provider::GatewayApi, object_name),
    ];
    kinds
        .into_iter()
        .map(|(provider, apex_service)| RouterKind {
            router: router_for(provider),
            apex_service,
        })
        .collect()
}

/// `spec.service` of an SMI `TrafficSplit`.
fn spec_service(object: &DynamicObject) -> Option<String> {
    object
        .data
        .pointer("/spec/service")?
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// The name of the object: an `HTTPRoute` is named after the apex Service (its parent may be
/// a Gateway instead of the Service).
fn object_name(object: &DynamicObject) -> Option<String> {
    object.metadata.name.clone().filter(|s| !s.is_empty())
}

/// Why a router object sends no traffic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    #[error("{kind} {namespace}/{name}: no {OWNER_LABEL} label naming the Deployment it routes")]
    NoOwner {
        kind: String,
        namespace: String,
        name: String,
    },
    #[error("{kind} {namespace}/{name}: no apex Service")]
    NoService {
        kind: String,
        namespace: String,
        name: String,
    },
    #[error("in namespace {namespace}: {source}")]
    Weights {
        namespace: String,
        #[source]
        source: RouterError,
    },
}

/// How one version of an application answers, as its Deployment says.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Version {
    pub behaviour: Behaviour,
    /// Whether at least one pod is ready to answer.
    pub ready: bool,
}

impl Version {
    /// The behaviour from the pod template's annotations; ready when `status.readyReplicas`
    /// is above zero.
    pub fn of(deployment: &Deployment) -> Self {
        let annotations = deployment
            .spec
            .as_ref()
            .and_then(|spec| spec.template.metadata.as_ref())
            .and_then(|meta| meta.annotations.as_ref());
        let ready_replicas = deployment
            .status
            .as_ref()
            .and_then(|status| status.ready_replicas)
            .unwrap_or(0);
        Version {
            behaviour: annotations
                .map(Behaviour::from_annotations)
                .unwrap_or_default(),
            ready: ready_replicas > 0,
        }
    }
}

/// The backends one router object sends traffic to: `<owner>-primary` and `<owner>` (the
/// canary), each with its share of the router's traffic (percent) and the behaviour of its
/// pod template. `deployment(namespace, name)` looks a Deployment up.
///
/// A version whose Deployment does not exist gets no backend. A version without ready
/// replicas gets a backend of weight 0: its share is dropped, not given to the other version,
/// as in a mesh, where requests routed to a Service without endpoints fail in the caller's
/// proxy and never reach (nor count as inbound on) any pod.
pub fn backends_of<D: Borrow<Deployment>>(
    kind: &RouterKind,
    object: &DynamicObject,
    deployment: impl Fn(&str, &str) -> Option<D>,
) -> Result<Vec<Backend>, MappingError> {
    let namespace = object.metadata.namespace.clone().unwrap_or_default();
    let described = || {
        (
            kind.api_resource().kind,
            namespace.clone(),
            object.metadata.name.clone().unwrap_or_default(),
        )
    };
    let Some(owner) = object
        .metadata
        .labels
        .as_ref()
        .and_then(|labels| labels.get(OWNER_LABEL))
        .filter(|owner| !owner.is_empty())
    else {
        let (kind, namespace, name) = described();
        return Err(MappingError::NoOwner {
            kind,
            namespace,
            name,
        });
    };
    if deployment(&namespace, owner).is_some_and(|d| on_real_node(d.borrow())) {
        return Ok(Vec::new());
    }
    let Some(service) = (kind.apex_service)(object) else {
        let (kind, namespace, name) = described();
        return Err(MappingError::NoService {
            kind,
            namespace,
            name,
        });
    };
    let spec = CanarySpec::defaults(service, None);
    let in_namespace = |source| MappingError::Weights {
        namespace: namespace.clone(),
        source,
    };
    let route = kind.router.route(object, &spec).map_err(in_namespace)?;
    let weights = route.weights;
    let (primary, canary) = match kind
        .router
        .unmatched_weights(object, &spec)
        .map_err(in_namespace)?
    {
        None => (weights.primary(), weights.canary()),
        Some(unmatched) => {
            // Mixed in proportion, rounded to the nearest percent; the two still sum to 100.
            let canary = (MATCHING_PERCENT * weights.canary()
                + (100 - MATCHING_PERCENT) * unmatched.canary()
                + 50)
                / 100;
            (100 - canary, canary)
        }
    };
    // Mirrored copies reach the canary's pods besides what is routed to it: its proxies
    // count them as inbound requests like any other.
    let canary = (canary + route.mirror.unwrap_or(0)).min(100);
    let versions = [
        (format!("{owner}{PRIMARY_SUFFIX}"), primary),
        (owner.clone(), canary),
    ];
    Ok(versions
        .into_iter()
        .filter_map(|(name, weight)| {
            let version = Version::of(deployment(&namespace, &name)?.borrow());
            Some(Backend {
                namespace: namespace.clone(),
                deployment: name,
                weight: if version.ready { weight } else { 0 },
                behaviour: version.behaviour,
            })
        })
        .collect())
}

/// The percent of the requests a router object copies to the canary (0 when it mirrors
/// none, or cannot be read).
pub fn mirrored_percent(kind: &RouterKind, object: &DynamicObject) -> u32 {
    let Some(service) = (kind.apex_service)(object) else {
        return 0;
    };
    let spec = CanarySpec::defaults(service, None);
    kind.router
        .route(object, &spec)
        .ok()
        .and_then(|route| route.mirror)
        .unwrap_or(0)
}

/// The node selector of the real node's pods (`hack/node.sh` labels the node with it).
const REAL_NODE_SELECTOR: (&str, &str) = ("serin.dev/node", "real");

/// Whether the Deployment's pods run on the real node: then real traffic, not the
/// simulator, makes their series.
pub fn on_real_node(deployment: &Deployment) -> bool {
    deployment
        .spec
        .as_ref()
        .and_then(|spec| spec.template.spec.as_ref())
        .and_then(|pod| pod.node_selector.as_ref())
        .and_then(|selector| selector.get(REAL_NODE_SELECTOR.0))
        .is_some_and(|value| value == REAL_NODE_SELECTOR.1)
}

/// The load test a Blue/Green analysis gets: `Some` when the router object belongs to a
/// Blue/Green release whose canary is Ready but routed no share of the traffic, which is
/// what the analysis looks like (Serin scales the canary to zero outside it, and switches
/// traffic to it only with the promotion).
pub fn load_test_of<D: Borrow<Deployment>>(
    kind: &RouterKind,
    object: &DynamicObject,
    deployment: impl Fn(&str, &str) -> Option<D>,
) -> Option<LoadTest> {
    let backends = backends_of(kind, object, &deployment).ok()?;
    let owner = object.metadata.labels.as_ref()?.get(OWNER_LABEL)?;
    let namespace = object.metadata.namespace.clone().unwrap_or_default();
    let canary = backends.iter().find(|b| &b.deployment == owner)?;
    let found = deployment(&namespace, owner)?;
    let found = found.borrow();
    let annotations = found.metadata.annotations.as_ref()?;
    let blue_green = annotations.contains_key(ITERATIONS_ANNOTATION)
        && !annotations.contains_key(MATCH_ANNOTATION);
    if !blue_green || canary.weight > 0 || !Version::of(found).ready {
        return None;
    }
    let service = (kind.apex_service)(object)?;
    Some(LoadTest {
        backend: Backend {
            weight: LOAD_TEST_PERCENT,
            ..canary.clone()
        },
        authority: format!("{service}{CANARY_SUFFIX}.{namespace}.svc.cluster.local"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devtools::simulate::testing::deployment;
    use crate::devtools::simulate::{ERROR_RATE, LATENCY_MS};
    use crate::router::Weights;
    use crate::spec::MatchRule;
    use serde_json::json;

    fn linkerd() -> RouterKind {
        router_kinds()
            .into_iter()
            .find(|k| k.api_resource().api_version == "split.smi-spec.io/v1alpha1")
            .unwrap_or_else(|| panic!("no TrafficSplit v1alpha1 among {:?}", router_kinds()))
    }

    /// The TrafficSplit Serin builds for Deployment `web` in `shop` (apex Service `web-svc`).
    fn split(canary: u32) -> DynamicObject {
        let owner: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "shop", "uid": "uid-1"}
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let spec = CanarySpec::defaults("web-svc".into(), None);
        linkerd()
            .router
            .build(&owner, &spec, Weights::to_canary(canary))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn map(object: &DynamicObject, cluster: &[Deployment]) -> Result<Vec<Backend>, MappingError> {
        backends_of(&linkerd(), object, |namespace, name| {
            cluster.iter().find(|d| {
                d.metadata.namespace.as_deref() == Some(namespace)
                    && d.metadata.name.as_deref() == Some(name)
            })
        })
    }

    fn weights(backends: &[Backend]) -> Vec<(&str, u32)> {
        backends
            .iter()
            .map(|b| (b.deployment.as_str(), b.weight))
            .collect()
    }

    #[test]
    fn split_weights_go_to_the_owner_as_canary_and_its_primary() {
        let cluster = [
            deployment("web", 1, &[(ERROR_RATE, "0.3"), (LATENCY_MS, "250")]),
            deployment("web-primary", 3, &[]),
        ];
        let backends = map(&split(20), &cluster).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            backends,
            vec![
                Backend {
                    namespace: "shop".into(),
                    deployment: "web-primary".into(),
                    weight: 80,
                    behaviour: Behaviour::default(),
                },
                Backend {
                    namespace: "shop".into(),
                    deployment: "web".into(),
                    weight: 20,
                    behaviour: Behaviour {
                        error_rate: 0.3,
                        latency_ms: 250.0,
                        noise_seed: None,
                    },
                },
            ]
        );
    }

    #[test]
    fn a_version_without_ready_replicas_gets_no_traffic_and_its_share_is_dropped() {
        let cluster = [deployment("web", 0, &[]), deployment("web-primary", 2, &[])];
        let backends = map(&split(50), &cluster).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(weights(&backends), [("web-primary", 50), ("web", 0)]);
    }

    #[test]
    fn a_release_whose_pods_run_on_the_real_node_gets_no_simulated_traffic() {
        let mut owner = deployment("web", 2, &[]);
        let pod = serde_json::from_value(json!({"nodeSelector": {"serin.dev/node": "real"}}))
            .unwrap_or_else(|e| panic!("{e}"));
        if let Some(spec) = owner.spec.as_mut() {
            spec.template.spec = Some(pod);
        }
        assert!(on_real_node(&owner));
        let cluster = [deployment("web-primary", 2, &[]), owner];
        assert_eq!(map(&split(30), &cluster), Ok(Vec::new()));
        // The same release on kwok's fake node is simulated.
        let cluster = [deployment("web-primary", 2, &[]), deployment("web", 2, &[])];
        assert_eq!(
            weights(&map(&split(30), &cluster).unwrap_or_default()),
            vec![("web-primary", 70), ("web", 30)]
        );
    }

    #[test]
    fn a_version_whose_deployment_is_missing_gets_no_backend() {
        let cluster = [deployment("web-primary", 1, &[])];
        let backends = map(&split(10), &cluster).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(weights(&backends), [("web-primary", 90)]);
        assert_eq!(map(&split(10), &[]), Ok(vec![]));
    }

    #[test]
    fn deployments_in_other_namespaces_are_not_confused_with_the_owner() {
        let mut elsewhere = deployment("web", 1, &[]);
        elsewhere.metadata.namespace = Some("other".into());
        let backends = map(&split(30), &[elsewhere]).unwrap_or_else(|e| panic!("{e}"));
        assert!(backends.is_empty(), "{backends:?}");
    }

    #[test]
    fn unreadable_router_objects_say_why() {
        let cluster = [deployment("web", 1, &[]), deployment("web-primary", 1, &[])];

        let mut unowned = split(10);
        unowned.metadata.labels = None;
        assert_eq!(
            map(&unowned, &cluster).map_err(|e| e.to_string()),
            Err("TrafficSplit shop/web-svc: no serin.dev/owner label naming the Deployment it routes".into())
        );

        let mut no_service = split(10);
        no_service.data["spec"]["service"] = json!(null);
        assert!(
            matches!(
                map(&no_service, &cluster),
                Err(MappingError::NoService { .. })
            ),
            "{no_service:?}"
        );

        let mut bad_weight = split(10);
        bad_weight.data["spec"]["backends"][1]["weight"] = json!("lots");
        let error = map(&bad_weight, &cluster).map_err(|e| e.to_string());
        assert_eq!(
            error,
            Err("in namespace shop: TrafficSplit web-svc: backend \"web-svc-canary\" has weight \"lots\", which is not a number".into())
        );
    }

    #[test]
    fn the_simulator_follows_linkerd_traffic_splits_and_http_routes() {
        let described: Vec<_> = router_kinds().iter().map(RouterKind::describe).collect();
        assert_eq!(
            described,
            [
                "TrafficSplits (split.smi-spec.io/v1alpha1)",
                "HTTPRoutes (gateway.networking.k8s.io/v1)"
            ]
        );
    }

    fn gateway_api() -> RouterKind {
        router_kinds()
            .into_iter()
            .find(|k| k.api_resource().api_version == "gateway.networking.k8s.io/v1")
            .unwrap_or_else(|| panic!("no HTTPRoute among {:?}", router_kinds()))
    }

    /// The HTTPRoute Serin builds for Deployment `web` in `shop` (apex Service `web-svc`),
    /// with `matches` as its A/B rules.
    fn route(canary: u32, matches: Vec<MatchRule>) -> DynamicObject {
        let owner: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "shop", "uid": "uid-1"}
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let spec = CanarySpec {
            matches,
            ..CanarySpec::defaults("web-svc".into(), Some(8080))
        };
        gateway_api()
            .router
            .build(&owner, &spec, Weights::to_canary(canary))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn map_route(object: &DynamicObject, cluster: &[Deployment]) -> Vec<Backend> {
        backends_of(&gateway_api(), object, |namespace, name| {
            cluster.iter().find(|d| {
                d.metadata.namespace.as_deref() == Some(namespace)
                    && d.metadata.name.as_deref() == Some(name)
            })
        })
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn http_route_weights_go_to_the_owner_as_canary_and_its_primary() {
        let cluster = [
            deployment("web", 1, &[(ERROR_RATE, "0.5")]),
            deployment("web-primary", 2, &[]),
        ];
        let backends = map_route(&route(30, vec![]), &cluster);
        assert_eq!(weights(&backends), [("web-primary", 70), ("web", 30)]);
        assert_eq!(backends[1].behaviour.error_rate, 0.5);
        let idle = [deployment("web", 0, &[]), deployment("web-primary", 2, &[])];
        let backends = map_route(&route(30, vec![]), &idle);
        assert_eq!(weights(&backends), [("web-primary", 70), ("web", 0)]);
    }

    #[test]
    fn a_mirroring_route_sends_every_request_to_the_primary_and_the_copies_to_the_canary() {
        let cluster = [
            deployment("web", 1, &[(ERROR_RATE, "0.5")]),
            deployment("web-primary", 2, &[]),
        ];
        let owner = deployment("web", 1, &[]);
        let spec = CanarySpec::defaults("web-svc".into(), Some(8080));
        let mirroring = crate::router::Route {
            mirror: Some(40),
            ..Weights::ALL_PRIMARY.into()
        };
        let object = gateway_api()
            .router
            .build_route(&owner, &spec, &mirroring, None)
            .unwrap_or_else(|e| panic!("{e}"));
        let backends = map_route(&object, &cluster);
        assert_eq!(weights(&backends), [("web-primary", 100), ("web", 40)]);
        assert_eq!(mirrored_percent(&gateway_api(), &object), 40);
        // Once the mirror is gone, the canary gets only what is routed to it.
        assert_eq!(mirrored_percent(&gateway_api(), &route(10, vec![])), 0);
        // An unready canary gets no copies either.
        let idle = [deployment("web", 0, &[]), deployment("web-primary", 2, &[])];
        assert_eq!(
            weights(&map_route(&object, &idle)),
            [("web-primary", 100), ("web", 0)]
        );
    }

    fn blue_green(ready: i32) -> Deployment {
        let mut canary = deployment("web", ready, &[(ERROR_RATE, "0.1")]);
        canary.metadata.annotations = Some([(ITERATIONS_ANNOTATION.into(), "3".into())].into());
        canary
    }

    fn load_test(object: &DynamicObject, cluster: &[Deployment]) -> Option<LoadTest> {
        load_test_of(&linkerd(), object, |namespace, name| {
            cluster.iter().find(|d| {
                d.metadata.namespace.as_deref() == Some(namespace)
                    && d.metadata.name.as_deref() == Some(name)
            })
        })
    }

    #[test]
    fn a_ready_blue_green_canary_without_routed_traffic_gets_the_load_test() {
        let primary = deployment("web-primary", 2, &[]);
        let found = load_test(&split(0), &[blue_green(1), primary.clone()]);
        assert_eq!(
            found,
            Some(LoadTest {
                backend: Backend {
                    namespace: "shop".into(),
                    deployment: "web".into(),
                    weight: LOAD_TEST_PERCENT,
                    behaviour: Behaviour {
                        error_rate: 0.1,
                        latency_ms: 10.0,
                        noise_seed: None,
                    },
                },
                authority: "web-svc-canary.shop.svc.cluster.local".into(),
            })
        );
        // After the switch the router's traffic is what it gets; at zero replicas, nothing.
        assert_eq!(
            load_test(&split(100), &[blue_green(1), primary.clone()]),
            None
        );
        assert_eq!(
            load_test(&split(0), &[blue_green(0), primary.clone()]),
            None
        );
        // Canary and A/B releases get no load test.
        let canary = deployment("web", 1, &[]);
        assert_eq!(load_test(&split(0), &[canary, primary.clone()]), None);
        let mut ab = blue_green(1);
        if let Some(a) = ab.metadata.annotations.as_mut() {
            a.insert(MATCH_ANNOTATION.into(), "cookie:canary".into());
        }
        assert_eq!(load_test(&split(0), &[ab, primary]), None);
    }

    #[test]
    fn with_ab_rules_only_the_matching_share_of_requests_reaches_the_canary() {
        let cluster = [deployment("web", 1, &[]), deployment("web-primary", 2, &[])];
        let cookie = || {
            vec![MatchRule::Cookie {
                name: "canary".into(),
            }]
        };
        // Matching requests all go to the canary: the canary gets the matching share.
        let backends = map_route(&route(100, cookie()), &cluster);
        assert_eq!(
            weights(&backends),
            [
                ("web-primary", 100 - MATCHING_PERCENT),
                ("web", MATCHING_PERCENT)
            ]
        );
        // Half of the matching ones.
        let backends = map_route(&route(50, cookie()), &cluster);
        assert_eq!(
            weights(&backends),
            [
                ("web-primary", 100 - MATCHING_PERCENT / 2),
                ("web", MATCHING_PERCENT / 2)
            ]
        );
        // Between releases nothing reaches the canary, match or not.
        let backends = map_route(&route(0, cookie()), &cluster);
        assert_eq!(weights(&backends), [("web-primary", 100), ("web", 0)]);
    }
}
