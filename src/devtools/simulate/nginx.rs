//! NGINX in the simulator: the canary Ingresses Serin owns (`<ingress>-canary`, label
//! `serin.dev/owner`), and the series ingress-nginx exports for the requests of the user's
//! Ingress, so the builtin checks of an `nginx` release ([`crate::analysis::Observer::Nginx`])
//! run against the local Prometheus as they would against a real ingress-nginx.
//!
//! Every simulated request enters through the user's Ingress; `canary-weight` percent of
//! them go to the canary upstream, as ingress-nginx splits them:
//!
//! - `nginx_ingress_controller_requests{namespace, ingress, service, canary, status, method,
//!   path}`: a counter per answer status (`200`, or `500` for the version's error rate);
//! - `nginx_ingress_controller_request_duration_seconds{…}`: a histogram with the Prometheus
//!   client's default buckets, which ingress-nginx uses.
//!
//! `ingress` is the user's Ingress and `service` the apex Service for both versions (the
//! canary's requests go through the user's Ingress's locations); `canary` is the canary
//! upstream, `<namespace>-<service>-canary-<port>`, on the canary's requests and empty
//! (no label) on the primary's. The simulator reads the annotations under ingress-nginx's own
//! prefix.

use std::borrow::Borrow;
use std::fmt::Write;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::core::DynamicObject;
use serde_json::Value;

use super::backends::{MappingError, RouterKind, backends_of};
use super::traffic::{Histogram, Outcomes, Traffic};
use super::{Backend, Behaviour};
use crate::release::{CANARY_SUFFIX, OWNER_LABEL, PRIMARY_SUFFIX};
use crate::router::nginx::CanaryIngress;

/// The bucket bounds (seconds) of `nginx_ingress_controller_request_duration_seconds`: the
/// Prometheus client's defaults.
pub const BUCKETS_SECONDS: [f64; 12] = [
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    f64::INFINITY,
];

/// The canary Ingresses, as a router kind the simulator follows.
pub fn ingress_kind() -> RouterKind {
    RouterKind::new(Box::new(CanaryIngress::default()), apex_service)
}

/// The `service.port` of a backend as ingress-nginx writes it in upstream names.
fn port_of(backend: &Value) -> Option<String> {
    let port = backend.pointer("/service/port")?;
    port.get("number")
        .and_then(Value::as_u64)
        .map(|n| n.to_string())
        .or_else(|| port.get("name").and_then(Value::as_str).map(str::to_owned))
}

/// Every backend of a canary Ingress: the default backend and each path's.
fn ingress_backends(object: &DynamicObject) -> impl Iterator<Item = &Value> {
    let default = object.data.pointer("/spec/defaultBackend");
    let paths = object
        .data
        .pointer("/spec/rules")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|rule| rule.pointer("/http/paths")?.as_array())
        .flatten()
        .filter_map(|path| path.get("backend"));
    default.into_iter().chain(paths)
}

/// The first backend Service `<svc>-canary`, with `<svc>` the apex Service.
fn canary_backend(object: &DynamicObject) -> Option<(String, &Value)> {
    ingress_backends(object).find_map(|backend| {
        let name = backend.pointer("/service/name")?.as_str()?;
        let apex = name.strip_suffix(CANARY_SUFFIX).filter(|s| !s.is_empty())?;
        Some((apex.to_owned(), backend))
    })
}

/// The apex Service of a canary Ingress: its backends are `<svc>-canary`.
fn apex_service(object: &DynamicObject) -> Option<String> {
    canary_backend(object).map(|(apex, _)| apex)
}

/// The labels ingress-nginx puts on one version's requests.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IngressLabels {
    pub namespace: String,
    /// The user's Ingress.
    pub ingress: String,
    /// The apex Service.
    pub service: String,
    /// The canary upstream for the canary's requests; empty for the primary's.
    pub canary: String,
}

/// One version behind an Ingress: its labels, its share and its behaviour.
#[derive(Debug, Clone, PartialEq)]
pub struct IngressBackend {
    pub labels: IngressLabels,
    /// Percentage of the Ingress's requests this version receives, 0..=100.
    pub weight: u32,
    pub behaviour: Behaviour,
}

/// The versions a canary Ingress splits the user's Ingress between, read with the router's
/// own code ([`backends_of`]): `<owner>-primary` and `<owner>`, each with the labels
/// ingress-nginx would give their requests.
pub fn ingress_backends_of<D: Borrow<Deployment>>(
    kind: &RouterKind,
    object: &DynamicObject,
    deployment: impl Fn(&str, &str) -> Option<D>,
) -> Result<Vec<IngressBackend>, MappingError> {
    let backends = backends_of(kind, object, deployment)?;
    let namespace = object.metadata.namespace.clone().unwrap_or_default();
    let name = object.metadata.name.clone().unwrap_or_default();
    // `backends_of` found both (or it would have said why), so these are present.
    let owner = object
        .metadata
        .labels
        .as_ref()
        .and_then(|labels| labels.get(OWNER_LABEL))
        .cloned()
        .unwrap_or_default();
    let (service, port) = canary_backend(object)
        .map(|(service, backend)| (service, port_of(backend).unwrap_or_default()))
        .unwrap_or_default();
    let ingress = name.strip_suffix(CANARY_SUFFIX).unwrap_or(&name).to_owned();
    let primary = format!("{owner}{PRIMARY_SUFFIX}");
    Ok(backends
        .into_iter()
        .map(
            |Backend {
                 deployment,
                 weight,
                 behaviour,
                 ..
             }| IngressBackend {
                labels: IngressLabels {
                    namespace: namespace.clone(),
                    ingress: ingress.clone(),
                    service: service.clone(),
                    canary: match deployment == primary {
                        true => String::new(),
                        false => format!("{namespace}-{service}{CANARY_SUFFIX}-{port}"),
                    },
                },
                weight,
                behaviour,
            },
        )
        .collect())
}

/// Accumulated requests through Ingresses, in ingress-nginx's series.
#[derive(Debug, Clone)]
pub struct IngressSimulator {
    traffic: Traffic<IngressLabels>,
}

impl IngressSimulator {
    /// `requests_per_second` through each Ingress, split by weight.
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

    pub fn advance(&mut self, elapsed: Duration, backends: &[IngressBackend]) {
        for b in backends {
            self.traffic.add(elapsed, &b.labels, b.weight, b.behaviour);
        }
    }

    /// Forgets the series of versions no longer behind any canary Ingress.
    pub fn retain(&mut self, backends: &[IngressBackend]) {
        self.traffic
            .retain(|labels| backends.iter().any(|b| &b.labels == labels));
    }

    /// The series in the Prometheus text format, sorted for stable output; empty when no
    /// Ingress is followed.
    pub fn render(&self) -> String {
        let versions = self.traffic.sorted();
        let mut out = String::new();
        if versions.is_empty() {
            return out;
        }
        fn answers(series: &Outcomes) -> [(&str, &Histogram); 2] {
            [("200", &series.ok), ("500", &series.failed)]
        }
        out.push_str("# TYPE nginx_ingress_controller_requests counter\n");
        for (labels, series) in &versions {
            for (status, answers) in answers(series) {
                let labels = render_labels(labels, status);
                let _ = writeln!(
                    out,
                    "nginx_ingress_controller_requests{{{labels}}} {}",
                    answers.count()
                );
            }
        }
        let metric = "nginx_ingress_controller_request_duration_seconds";
        out.push_str(&format!("# TYPE {metric} histogram\n"));
        for (labels, series) in &versions {
            for (status, answers) in answers(series) {
                answers.render(&mut out, metric, &render_labels(labels, status));
            }
        }
        out
    }
}

fn render_labels(labels: &IngressLabels, status: &str) -> String {
    let IngressLabels {
        namespace,
        ingress,
        service,
        canary,
    } = labels;
    format!(
        "namespace=\"{namespace}\",ingress=\"{ingress}\",service=\"{service}\",canary=\"{canary}\",\
         method=\"GET\",path=\"/\",status=\"{status}\""
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devtools::simulate::ERROR_RATE;
    use crate::devtools::simulate::testing::deployment;
    use crate::router::{Router, Weights};
    use crate::spec::{CanarySpec, Provider};
    use serde_json::json;

    /// The canary Ingress Serin builds for Deployment `web` in `shop` (apex Service
    /// `web-svc`, the user's Ingress `public`).
    fn canary_ingress(canary: u32) -> DynamicObject {
        let owner = deployment("web", 1, &[]);
        let mut owner = owner;
        owner.metadata.uid = Some("uid-1".into());
        let spec = CanarySpec {
            provider: Provider::Nginx,
            ingress: Some("public".into()),
            ..CanarySpec::defaults("web-svc".into(), Some(8080))
        };
        let router = CanaryIngress::default();
        let user = DynamicObject::new("public", &router.api_resource()).data(json!({"spec": {
            "rules": [{"host": "web.example.com", "http": {"paths": [{
                "path": "/", "pathType": "Prefix",
                "backend": {"service": {"name": "web-svc", "port": {"number": 8080}}}
            }]}}]
        }}));
        router
            .build_from(&owner, &spec, Weights::to_canary(canary), Some(&user))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn map(object: &DynamicObject, cluster: &[Deployment]) -> Vec<IngressBackend> {
        ingress_backends_of(&ingress_kind(), object, |namespace, name| {
            cluster.iter().find(|d| {
                d.metadata.namespace.as_deref() == Some(namespace)
                    && d.metadata.name.as_deref() == Some(name)
            })
        })
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn labels(canary: &str) -> IngressLabels {
        IngressLabels {
            namespace: "shop".into(),
            ingress: "public".into(),
            service: "web-svc".into(),
            canary: canary.into(),
        }
    }

    #[test]
    fn the_canary_weight_goes_to_the_canary_upstream_of_the_users_ingress() {
        let cluster = [
            deployment("web", 1, &[(ERROR_RATE, "0.3")]),
            deployment("web-primary", 2, &[]),
        ];
        let backends = map(&canary_ingress(20), &cluster);
        assert_eq!(
            backends,
            [
                IngressBackend {
                    labels: labels(""),
                    weight: 80,
                    behaviour: Behaviour::default(),
                },
                IngressBackend {
                    labels: labels("shop-web-svc-canary-8080"),
                    weight: 20,
                    behaviour: Behaviour {
                        error_rate: 0.3,
                        ..Behaviour::default()
                    },
                },
            ]
        );
        // An idle canary gets nothing, as in the mesh.
        let idle = [deployment("web", 0, &[]), deployment("web-primary", 2, &[])];
        let weights: Vec<u32> = map(&canary_ingress(20), &idle)
            .iter()
            .map(|b| b.weight)
            .collect();
        assert_eq!(weights, [80, 0]);
    }

    #[test]
    fn canary_ingresses_are_described_in_plain_english() {
        assert_eq!(
            ingress_kind().describe(),
            "Ingresses (networking.k8s.io/v1)"
        );
    }

    #[test]
    fn the_series_are_ingress_nginxs_by_status_with_the_canary_label_on_the_canarys() {
        let mut sim = IngressSimulator::new(100.0);
        let canary = IngressBackend {
            labels: labels("shop-web-svc-canary-8080"),
            weight: 20,
            behaviour: Behaviour {
                error_rate: 0.25,
                latency_ms: 30.0,
                noise_seed: None,
            },
        };
        let primary = IngressBackend {
            labels: labels(""),
            weight: 80,
            behaviour: Behaviour::default(),
        };
        sim.advance(Duration::from_secs(10), &[primary.clone(), canary.clone()]);
        let text = sim.render();
        let line = |prefix: &str| {
            text.lines()
                .find(|l| l.starts_with(prefix))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
        };
        let canary_labels = "namespace=\"shop\",ingress=\"public\",service=\"web-svc\",\
                             canary=\"shop-web-svc-canary-8080\",method=\"GET\",path=\"/\"";
        let requests = |labels: &str, status: &str| {
            line(&format!(
                "nginx_ingress_controller_requests{{{labels},status=\"{status}\"}}"
            ))
        };
        assert_eq!(requests(canary_labels, "200"), 150.0);
        assert_eq!(requests(canary_labels, "500"), 50.0);
        let primary_labels = canary_labels.replace("shop-web-svc-canary-8080", "");
        assert_eq!(requests(&primary_labels, "200"), 800.0);
        // 30 ms lies in the 0.05 s bucket, not the 0.025 s one.
        let bucket = |le: &str| {
            line(&format!(
                "nginx_ingress_controller_request_duration_seconds_bucket{{{canary_labels},status=\"200\",le=\"{le}\"}}"
            ))
        };
        assert_eq!(bucket("0.025"), 0.0);
        assert_eq!(bucket("0.05"), 150.0);
        assert_eq!(bucket("+Inf"), 150.0);
        assert_eq!(text, sim.render());

        sim.retain(&[primary]);
        assert!(!sim.render().contains("canary-8080"));
        sim.retain(&[]);
        assert_eq!(sim.render(), "");
    }
}
