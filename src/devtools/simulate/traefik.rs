//! Traefik in the simulator: the `HTTPRoute`s Serin owns, seen as Traefik's Gateway API
//! provider serves them, and the series Traefik exports for the requests it sends to each
//! backend, so the builtin checks of a `gatewayapi` release with `metrics-provider: traefik`
//! ([`crate::analysis::Observer::Traefik`]) run against the local Prometheus as they would
//! against a real Traefik.
//!
//! The requests are those the route's weights send to each version (A/B rules as for every
//! router: [`super::backends::MATCHING_PERCENT`] of the requests match), the same ones the
//! Linkerd series of the route count: the simulator does not know which data plane serves a
//! route, and a route served by Traefik to meshed pods has both. Each version's requests count
//! under the Traefik service of its `backendRef`
//! ([`crate::analysis::observers::traefik_service`]), read from the route itself:
//!
//! - `traefik_service_requests_total{code, method, protocol, service}`: a counter per answer
//!   code (`200`, or `500` for the version's error rate);
//! - `traefik_service_request_duration_seconds{code, method, protocol, service}`: a histogram
//!   in seconds with Traefik's default buckets.
//!
//! Blue/Green's stand-in load test ([`super::backends::load_test_of`]) is not simulated for
//! Traefik: a load tester calling `<svc>-canary` directly does not pass through Traefik.

use std::borrow::Borrow;
use std::fmt::Write;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::core::DynamicObject;
use serde_json::Value;

use super::backends::{MappingError, RouterKind, backends_of, mirrored_percent};
use super::traffic::Traffic;
use super::{Backend, Behaviour};
use crate::analysis::observers::traefik_service;
use crate::release::{CANARY_SUFFIX, OWNER_LABEL, PRIMARY_SUFFIX};
use crate::router::router_for;
use crate::spec::Provider;

/// The bucket bounds (seconds) of Traefik's request duration histograms (its default).
pub const BUCKETS_SECONDS: [f64; 5] = [0.1, 0.3, 1.2, 5.0, f64::INFINITY];

/// The labels of a request Traefik counts that the simulator does not vary.
const REQUEST_LABELS: &str = "method=\"GET\",protocol=\"http\"";

/// The HTTPRoutes, as a router kind the Traefik simulation follows.
pub fn http_route_kind() -> RouterKind {
    RouterKind::new(router_for(Provider::GatewayApi), route_name)
}

/// An HTTPRoute is named after its apex Service.
fn route_name(object: &DynamicObject) -> Option<String> {
    object.metadata.name.clone().filter(|s| !s.is_empty())
}

/// One version behind an HTTPRoute: its Traefik service, its share and its behaviour.
#[derive(Debug, Clone, PartialEq)]
pub struct TraefikBackend {
    pub namespace: String,
    /// The HTTPRoute that sends it requests.
    pub route: String,
    /// The `service` label of its requests.
    pub service: String,
    /// Percentage of the route's requests this version receives, 0..=100.
    pub weight: u32,
    pub behaviour: Behaviour,
}

/// The Traefik service of the route's first rule's `backendRef` named `backend`.
fn service_of(object: &DynamicObject, backend: &str) -> Option<String> {
    let namespace = object.metadata.namespace.clone().unwrap_or_default();
    let refs = object
        .data
        .pointer("/spec/rules/0/backendRefs")?
        .as_array()?;
    refs.iter().find_map(|r| {
        (r.get("name")?.as_str()? == backend).then_some(())?;
        let port = r.get("port").and_then(Value::as_i64)?;
        let namespace = r
            .get("namespace")
            .and_then(Value::as_str)
            .unwrap_or(&namespace);
        Some(traefik_service(
            namespace,
            backend,
            i32::try_from(port).ok()?,
        ))
    })
}

/// The versions an HTTPRoute splits its requests between, read with the router's own code
/// ([`backends_of`]): `<owner>-primary` and `<owner>`, each with the Traefik service of its
/// `backendRef` (`<service>-primary`, `<service>-canary`).
pub fn traefik_backends_of<D: Borrow<Deployment>>(
    kind: &RouterKind,
    object: &DynamicObject,
    deployment: impl Fn(&str, &str) -> Option<D>,
) -> Result<Vec<TraefikBackend>, MappingError> {
    let backends = backends_of(kind, object, deployment)?;
    let namespace = object.metadata.namespace.clone().unwrap_or_default();
    // Traefik does not implement RequestMirror (admission refuses mirroring where Traefik
    // reads the series): no copy shows in its series.
    let mirrored = mirrored_percent(kind, object);
    let route = route_name(object).unwrap_or_default();
    let owner = object
        .metadata
        .labels
        .as_ref()
        .and_then(|labels| labels.get(OWNER_LABEL))
        .cloned()
        .unwrap_or_default();
    let primary = format!("{owner}{PRIMARY_SUFFIX}");
    Ok(backends
        .into_iter()
        .filter_map(
            |Backend {
                 deployment,
                 weight,
                 behaviour,
                 ..
             }| {
                let suffix = match deployment == primary {
                    true => PRIMARY_SUFFIX,
                    false => CANARY_SUFFIX,
                };
                let weight = match suffix {
                    CANARY_SUFFIX => weight.saturating_sub(mirrored),
                    _ => weight,
                };
                Some(TraefikBackend {
                    namespace: namespace.clone(),
                    route: route.clone(),
                    service: service_of(object, &format!("{route}{suffix}"))?,
                    weight,
                    behaviour,
                })
            },
        )
        .collect())
}

/// Accumulated requests through HTTPRoutes, in Traefik's series.
#[derive(Debug, Clone)]
pub struct TraefikSimulator {
    /// Per Traefik service.
    traffic: Traffic<String>,
}

impl TraefikSimulator {
    /// `requests_per_second` through each HTTPRoute, split by weight.
    pub fn new(requests_per_second: f64) -> Self {
        Self {
            traffic: Traffic::new(requests_per_second, &BUCKETS_SECONDS, 1000.0),
        }
    }

    /// Accounts for `elapsed` time of traffic split as `backends` say.
    /// Draws with noise from `seed` the versions that name no seed of their own.
    pub(super) fn set_noise_seed(&mut self, seed: Option<u64>) {
        self.traffic.set_noise_seed(seed);
    }

    pub fn advance(&mut self, elapsed: Duration, backends: &[TraefikBackend]) {
        for b in backends {
            self.traffic.add(elapsed, &b.service, b.weight, b.behaviour);
        }
    }

    /// Forgets the services no longer behind any HTTPRoute.
    pub fn retain(&mut self, backends: &[TraefikBackend]) {
        self.traffic
            .retain(|service| backends.iter().any(|b| &b.service == service));
    }

    /// The series in the Prometheus text format, sorted for stable output; empty when no
    /// HTTPRoute is followed.
    pub fn render(&self) -> String {
        let services = self.traffic.sorted();
        let mut out = String::new();
        if services.is_empty() {
            return out;
        }
        out.push_str("# TYPE traefik_service_requests_total counter\n");
        for (service, series) in &services {
            for (code, answers) in [("200", &series.ok), ("500", &series.failed)] {
                let _ = writeln!(
                    out,
                    "traefik_service_requests_total{{code=\"{code}\",{REQUEST_LABELS},service=\"{service}\"}} {}",
                    answers.count()
                );
            }
        }
        let metric = "traefik_service_request_duration_seconds";
        out.push_str(&format!("# TYPE {metric} histogram\n"));
        for (service, series) in &services {
            for (code, answers) in [("200", &series.ok), ("500", &series.failed)] {
                let labels = format!("code=\"{code}\",{REQUEST_LABELS},service=\"{service}\"");
                answers.render(&mut out, metric, &labels);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devtools::simulate::ERROR_RATE;
    use crate::devtools::simulate::backends::MATCHING_PERCENT;
    use crate::devtools::simulate::testing::deployment;
    use crate::router::Weights;
    use crate::spec::{CanarySpec, MatchRule};

    /// The HTTPRoute Serin builds for Deployment `web` in `shop` (apex Service `web-svc`).
    fn route(weights: Weights, matches: Vec<MatchRule>) -> DynamicObject {
        let mut owner = deployment("web", 1, &[]);
        owner.metadata.uid = Some("uid-1".into());
        let spec = CanarySpec {
            provider: Provider::GatewayApi,
            iterations: (!matches.is_empty()).then_some(5),
            matches,
            ..CanarySpec::defaults("web-svc".into(), Some(8080))
        };
        router_for(Provider::GatewayApi)
            .build(&owner, &spec, weights)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn map(object: &DynamicObject, cluster: &[Deployment]) -> Vec<TraefikBackend> {
        traefik_backends_of(&http_route_kind(), object, |namespace, name| {
            cluster.iter().find(|d| {
                d.metadata.namespace.as_deref() == Some(namespace)
                    && d.metadata.name.as_deref() == Some(name)
            })
        })
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Spelled out, not derived: what Traefik's Gateway API provider names the backends.
    const PRIMARY: &str = "shop-web-svc-primary-http-8080@kubernetesgateway";
    const CANARY: &str = "shop-web-svc-canary-http-8080@kubernetesgateway";

    fn backend(service: &str, weight: u32, behaviour: Behaviour) -> TraefikBackend {
        TraefikBackend {
            namespace: "shop".into(),
            route: "web-svc".into(),
            service: service.into(),
            weight,
            behaviour,
        }
    }

    #[test]
    fn the_routes_weights_go_to_the_traefik_services_of_its_backend_refs() {
        let cluster = [
            deployment("web", 1, &[(ERROR_RATE, "0.3")]),
            deployment("web-primary", 2, &[]),
        ];
        let bad = Behaviour {
            error_rate: 0.3,
            ..Behaviour::default()
        };
        assert_eq!(
            map(&route(Weights::to_canary(20), vec![]), &cluster),
            [
                backend(PRIMARY, 80, Behaviour::default()),
                backend(CANARY, 20, bad),
            ]
        );
        // A/B: only the matching share reaches the canary.
        let header = MatchRule::HeaderExact {
            name: "x-canary".into(),
            value: "insider".into(),
        };
        let ab = map(&route(Weights::ALL_CANARY, vec![header]), &cluster);
        let weights: Vec<u32> = ab.iter().map(|b| b.weight).collect();
        assert_eq!(weights, [100 - MATCHING_PERCENT, MATCHING_PERCENT]);
    }

    #[test]
    fn traefik_counts_no_mirrored_copy_as_it_does_not_mirror() {
        let cluster = [deployment("web", 1, &[]), deployment("web-primary", 2, &[])];
        let owner = deployment("web", 1, &[]);
        let spec = CanarySpec::defaults("web-svc".into(), Some(8080));
        let mirroring = crate::router::Route {
            mirror: Some(100),
            ..Weights::ALL_PRIMARY.into()
        };
        let object = router_for(Provider::GatewayApi)
            .build_route(&owner, &spec, &mirroring, None)
            .unwrap_or_else(|e| panic!("{e}"));
        let weights: Vec<u32> = map(&object, &cluster).iter().map(|b| b.weight).collect();
        assert_eq!(weights, [100, 0]);
    }

    #[test]
    fn the_series_are_traefiks_by_code_per_service_in_seconds() {
        let mut sim = TraefikSimulator::new(100.0);
        let canary = backend(
            CANARY,
            20,
            Behaviour {
                error_rate: 0.25,
                latency_ms: 200.0,
                noise_seed: None,
            },
        );
        let primary = backend(PRIMARY, 80, Behaviour::default());
        sim.advance(Duration::from_secs(10), &[primary.clone(), canary]);
        let text = sim.render();
        let line = |prefix: &str| {
            text.lines()
                .find(|l| l.starts_with(prefix))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
        };
        let requests = |service: &str, code: &str| {
            line(&format!(
                "traefik_service_requests_total{{code=\"{code}\",method=\"GET\",protocol=\"http\",service=\"{service}\"}}"
            ))
        };
        assert_eq!(requests(CANARY, "200"), 150.0);
        assert_eq!(requests(CANARY, "500"), 50.0);
        assert_eq!(requests(PRIMARY, "200"), 800.0);
        // 200 ms is 0.2 s: in the 0.3 s bucket, not the 0.1 s one.
        let bucket = |code: &str, le: &str| {
            line(&format!(
                "traefik_service_request_duration_seconds_bucket{{code=\"{code}\",method=\"GET\",protocol=\"http\",service=\"{CANARY}\",le=\"{le}\"}}"
            ))
        };
        assert_eq!(bucket("200", "0.1"), 0.0);
        assert_eq!(bucket("200", "0.3"), 150.0);
        assert_eq!(bucket("500", "+Inf"), 50.0);
        assert_eq!(text, sim.render());

        sim.retain(&[primary]);
        assert!(!sim.render().contains(CANARY));
        sim.retain(&[]);
        assert_eq!(sim.render(), "");
    }
}
