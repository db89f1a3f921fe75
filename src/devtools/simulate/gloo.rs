//! Gloo in the simulator: the `RouteTable`s Serin owns (label `serin.dev/owner`), and the
//! series Gloo's Envoy proxies export for the requests they send to each Upstream, so the
//! builtin checks of a `gloo` release ([`crate::analysis::Observer::Gloo`]) run against the
//! local Prometheus as they would against a real Gloo gateway.
//!
//! Every simulated request enters through the route table and is split by its weights (A/B
//! rules as for every router: [`super::backends::MATCHING_PERCENT`] of the requests match).
//! Each version's requests count in the series of its Upstream's Envoy cluster,
//! `<upstream>_<namespace>` (label `envoy_cluster_name`):
//!
//! - `envoy_cluster_upstream_rq{envoy_cluster_name, envoy_response_code}`: a counter per
//!   answer code (`200`, or `500` for the version's error rate);
//! - `envoy_cluster_upstream_rq_time{envoy_cluster_name}`: a histogram in milliseconds with
//!   Envoy's default buckets.
//!
//! Blue/Green's stand-in load test ([`super::backends::load_test_of`]) is not simulated for
//! Gloo: a load tester calling `<svc>-canary` directly would not pass through Envoy.

use std::borrow::Borrow;
use std::fmt::Write;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::core::DynamicObject;
use serde_json::Value;

use super::backends::{MappingError, RouterKind, backends_of};
use super::traffic::Traffic;
use super::{Backend, Behaviour};
use crate::release::{OWNER_LABEL, PRIMARY_SUFFIX};
use crate::router::gloo::{RouteTable, Side, envoy_cluster_name, side_of};

/// The bucket bounds (ms) of Envoy's histograms (its default buckets).
pub const BUCKETS_MS: [f64; 20] = [
    0.5,
    1.0,
    5.0,
    10.0,
    25.0,
    50.0,
    100.0,
    250.0,
    500.0,
    1000.0,
    2500.0,
    5000.0,
    10000.0,
    30000.0,
    60000.0,
    300000.0,
    600000.0,
    1800000.0,
    3600000.0,
    f64::INFINITY,
];

/// The route tables, as a router kind the simulator follows.
pub fn route_table_kind() -> RouterKind {
    RouterKind::new(Box::new(RouteTable), apex_service)
}

/// A route table is named after its apex Service.
fn apex_service(object: &DynamicObject) -> Option<String> {
    object.metadata.name.clone().filter(|s| !s.is_empty())
}

/// One version behind a route table: its Envoy cluster, its share and its behaviour.
#[derive(Debug, Clone, PartialEq)]
pub struct EnvoyBackend {
    pub namespace: String,
    /// The route table that sends it requests.
    pub route_table: String,
    /// `<upstream>_<namespace>`: the `envoy_cluster_name` of its requests.
    pub cluster: String,
    /// Percentage of the route table's requests this version receives, 0..=100.
    pub weight: u32,
    pub behaviour: Behaviour,
}

/// The Envoy cluster of one version's Upstream, as the route table's first route names it.
fn cluster_of(object: &DynamicObject, service: &str, side: Side) -> Option<String> {
    let namespace = object.metadata.namespace.clone().unwrap_or_default();
    let destinations = object
        .data
        .pointer("/spec/routes/0/routeAction/multi/destinations")?
        .as_array()?;
    destinations.iter().find_map(|d| {
        let upstream = d.pointer("/destination/upstream")?;
        let name = upstream.get("name")?.as_str()?;
        (side_of(name, &namespace, service) == Some(side)).then(|| {
            let upstream_namespace = upstream
                .get("namespace")
                .and_then(Value::as_str)
                .unwrap_or(&namespace);
            envoy_cluster_name(name, upstream_namespace)
        })
    })
}

/// The versions a route table splits its requests between, read with the router's own code
/// ([`backends_of`]): `<owner>-primary` and `<owner>`, each with its Envoy cluster.
pub fn envoy_backends_of<D: Borrow<Deployment>>(
    kind: &RouterKind,
    object: &DynamicObject,
    deployment: impl Fn(&str, &str) -> Option<D>,
) -> Result<Vec<EnvoyBackend>, MappingError> {
    let backends = backends_of(kind, object, deployment)?;
    let namespace = object.metadata.namespace.clone().unwrap_or_default();
    let route_table = apex_service(object).unwrap_or_default();
    // `backends_of` found the owner label and both Upstreams (or it would have said why).
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
                let side = match deployment == primary {
                    true => Side::Primary,
                    false => Side::Canary,
                };
                Some(EnvoyBackend {
                    namespace: namespace.clone(),
                    route_table: route_table.clone(),
                    cluster: cluster_of(object, &route_table, side)?,
                    weight,
                    behaviour,
                })
            },
        )
        .collect())
}

/// Accumulated requests through route tables, in Envoy's series.
#[derive(Debug, Clone)]
pub struct EnvoySimulator {
    /// Per Envoy cluster.
    traffic: Traffic<String>,
}

impl EnvoySimulator {
    /// `requests_per_second` through each route table, split by weight.
    pub fn new(requests_per_second: f64) -> Self {
        Self {
            traffic: Traffic::new(requests_per_second, &BUCKETS_MS, 1.0),
        }
    }

    /// Accounts for `elapsed` time of traffic split as `backends` say.
    /// Draws with noise from `seed` the versions that name no seed of their own.
    pub(super) fn set_noise_seed(&mut self, seed: Option<u64>) {
        self.traffic.set_noise_seed(seed);
    }

    pub fn advance(&mut self, elapsed: Duration, backends: &[EnvoyBackend]) {
        for b in backends {
            self.traffic.add(elapsed, &b.cluster, b.weight, b.behaviour);
        }
    }

    /// Forgets the clusters no longer behind any route table.
    pub fn retain(&mut self, backends: &[EnvoyBackend]) {
        self.traffic
            .retain(|cluster| backends.iter().any(|b| &b.cluster == cluster));
    }

    /// The series in the Prometheus text format, sorted for stable output; empty when no
    /// route table is followed.
    pub fn render(&self) -> String {
        let clusters = self.traffic.sorted();
        let mut out = String::new();
        if clusters.is_empty() {
            return out;
        }
        out.push_str("# TYPE envoy_cluster_upstream_rq counter\n");
        for (cluster, series) in &clusters {
            for (code, answers) in [("200", &series.ok), ("500", &series.failed)] {
                let _ = writeln!(
                    out,
                    "envoy_cluster_upstream_rq{{envoy_cluster_name=\"{cluster}\",envoy_response_code=\"{code}\"}} {}",
                    answers.count()
                );
            }
        }
        let metric = "envoy_cluster_upstream_rq_time";
        out.push_str(&format!("# TYPE {metric} histogram\n"));
        for (cluster, series) in &clusters {
            let labels = format!("envoy_cluster_name=\"{cluster}\"");
            series.all().render(&mut out, metric, &labels);
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
    use crate::router::{Router, Weights};
    use crate::spec::{CanarySpec, MatchRule, Provider};

    /// The route table Serin builds for Deployment `web` in `shop` (apex Service `web-svc`).
    fn route_table(weights: Weights, matches: Vec<MatchRule>) -> DynamicObject {
        let mut owner = deployment("web", 1, &[]);
        owner.metadata.uid = Some("uid-1".into());
        let spec = CanarySpec {
            provider: Provider::Gloo,
            iterations: (!matches.is_empty()).then_some(5),
            matches,
            ..CanarySpec::defaults("web-svc".into(), Some(8080))
        };
        RouteTable
            .build(&owner, &spec, weights)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn map(object: &DynamicObject, cluster: &[Deployment]) -> Vec<EnvoyBackend> {
        envoy_backends_of(&route_table_kind(), object, |namespace, name| {
            cluster.iter().find(|d| {
                d.metadata.namespace.as_deref() == Some(namespace)
                    && d.metadata.name.as_deref() == Some(name)
            })
        })
        .unwrap_or_else(|e| panic!("{e}"))
    }

    const PRIMARY_CLUSTER: &str = "shop-web-svc-primaryupstream-8080_shop";
    const CANARY_CLUSTER: &str = "shop-web-svc-canaryupstream-8080_shop";

    fn backend(cluster: &str, weight: u32, behaviour: Behaviour) -> EnvoyBackend {
        EnvoyBackend {
            namespace: "shop".into(),
            route_table: "web-svc".into(),
            cluster: cluster.into(),
            weight,
            behaviour,
        }
    }

    #[test]
    fn the_route_tables_weights_go_to_the_envoy_clusters_of_its_upstreams() {
        let cluster = [
            deployment("web", 1, &[(ERROR_RATE, "0.3")]),
            deployment("web-primary", 2, &[]),
        ];
        let bad = Behaviour {
            error_rate: 0.3,
            ..Behaviour::default()
        };
        assert_eq!(
            map(&route_table(Weights::to_canary(20), vec![]), &cluster),
            [
                backend(PRIMARY_CLUSTER, 80, Behaviour::default()),
                backend(CANARY_CLUSTER, 20, bad),
            ]
        );
        // A/B: only the matching share reaches the canary.
        let header = MatchRule::HeaderExact {
            name: "x-canary".into(),
            value: "insider".into(),
        };
        let ab = map(&route_table(Weights::ALL_CANARY, vec![header]), &cluster);
        let weights: Vec<u32> = ab.iter().map(|b| b.weight).collect();
        assert_eq!(weights, [100 - MATCHING_PERCENT, MATCHING_PERCENT]);
        // An idle canary gets nothing.
        let idle = [deployment("web", 0, &[]), deployment("web-primary", 2, &[])];
        let weights: Vec<u32> = map(&route_table(Weights::to_canary(20), vec![]), &idle)
            .iter()
            .map(|b| b.weight)
            .collect();
        assert_eq!(weights, [80, 0]);
        assert_eq!(
            route_table_kind().describe(),
            "RouteTables (gateway.solo.io/v1)"
        );
    }

    #[test]
    fn the_series_are_envoys_by_response_code_per_upstream_cluster() {
        let mut sim = EnvoySimulator::new(100.0);
        let canary = backend(
            CANARY_CLUSTER,
            20,
            Behaviour {
                error_rate: 0.25,
                latency_ms: 30.0,
                noise_seed: None,
            },
        );
        let primary = backend(PRIMARY_CLUSTER, 80, Behaviour::default());
        sim.advance(Duration::from_secs(10), &[primary.clone(), canary]);
        let text = sim.render();
        let line = |prefix: &str| {
            text.lines()
                .find(|l| l.starts_with(prefix))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
        };
        let requests = |cluster: &str, code: &str| {
            line(&format!(
                "envoy_cluster_upstream_rq{{envoy_cluster_name=\"{cluster}\",envoy_response_code=\"{code}\"}}"
            ))
        };
        assert_eq!(requests(CANARY_CLUSTER, "200"), 150.0);
        assert_eq!(requests(CANARY_CLUSTER, "500"), 50.0);
        assert_eq!(requests(PRIMARY_CLUSTER, "200"), 800.0);
        // 30 ms lies in the 50 ms bucket, not the 25 ms one.
        let bucket = |le: &str| {
            line(&format!(
                "envoy_cluster_upstream_rq_time_bucket{{envoy_cluster_name=\"{CANARY_CLUSTER}\",le=\"{le}\"}}"
            ))
        };
        assert_eq!(bucket("25"), 0.0);
        assert_eq!(bucket("50"), 200.0);
        assert_eq!(bucket("+Inf"), 200.0);
        assert_eq!(
            line(&format!(
                "envoy_cluster_upstream_rq_time_count{{envoy_cluster_name=\"{CANARY_CLUSTER}\"}}"
            )),
            200.0
        );
        assert_eq!(text, sim.render());

        sim.retain(&[primary]);
        assert!(!sim.render().contains(CANARY_CLUSTER));
        sim.retain(&[]);
        assert_eq!(sim.render(), "");
    }
}
