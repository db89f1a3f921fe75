//! The simulator's I/O edge: reflector stores of the router objects Serin owns (label
//! `serin.dev/owner`; canary Ingresses and Gloo route tables among them; HTTPRoutes read
//! twice, for Linkerd's and Traefik's series) and of Deployments, in all namespaces; a ticker that advances the
//! [`Simulator`] by the time elapsed, with the backends [`backends_of`] maps from the stores;
//! and a plain-HTTP listener serving `GET /metrics` (Prometheus text) and `/healthz`.
//!
//! A router kind whose CRD is not installed is not fatal: its watcher logs a warning and
//! retries with backoff, and the simulator serves the rest meanwhile.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, DeploymentSpec, DeploymentStatus};
use k8s_openapi::api::core::v1::PodSpec;
use kube::core::DynamicObject;
use kube::runtime::reflector::{self, ObjectRef, Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;

use super::backends::{
    ITERATIONS_ANNOTATION, LoadTest, MATCH_ANNOTATION, MappingError, RouterKind, backends_of,
    load_test_of, router_kinds,
};
use super::gloo::{EnvoyBackend, envoy_backends_of, route_table_kind};
use super::nginx::{ingress_backends_of, ingress_kind};
use super::traefik::{TraefikBackend, http_route_kind, traefik_backends_of};
use super::{Backend, Simulator};
use crate::release::OWNER_LABEL;

/// How often the simulator accounts for the traffic of the time elapsed.
pub const DEFAULT_TICK: Duration = Duration::from_millis(250);

/// The wait before watching again after a first error, doubled at each further one.
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(500);
/// The longest wait before watching again: short, because in the local environment a CRD may
/// well be installed after the simulator starts.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(10);

/// How the simulator runs.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Requests per second each router object receives, split by its weights.
    pub requests_per_second: f64,
    /// How often traffic is accounted for; weight changes take effect within one tick.
    pub tick: Duration,
    /// Draw every version's traffic at random from this seed (see [`Simulator::with_noise_seed`]).
    pub noise_seed: Option<u64>,
}

type SharedSimulator = Arc<Mutex<Simulator>>;

/// Watches the cluster through `client` and serves the simulated series on `listener` until
/// `shutdown` completes.
pub async fn serve(
    client: Client,
    listener: TcpListener,
    options: Options,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut tasks = JoinSet::new();

    let mut routers = Vec::new();
    let mut ingresses = None;
    let mut route_tables = None;
    let mut http_routes = None;
    for kind in router_kinds()
        .into_iter()
        .chain([ingress_kind(), route_table_kind()])
    {
        let resource = kind.api_resource();
        let writer = Writer::new(resource.clone());
        let store = writer.as_reader();
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
        let owned = watcher::Config::default().labels(OWNER_LABEL);
        tasks.spawn(keep_watching(
            kind.describe(),
            reflector::reflector(writer, watcher(api, owned)),
        ));
        // Canary Ingresses and route tables are followed apart: their requests are
        // ingress-nginx's and Envoy's.
        match kind.api_resource().kind.as_str() {
            "Ingress" => ingresses = Some((kind, store)),
            "RouteTable" => route_tables = Some((kind, store)),
            // HTTPRoutes carry Linkerd's traffic and, read again, Traefik's.
            "HTTPRoute" => {
                http_routes = Some((http_route_kind(), store.clone()));
                routers.push((kind, store));
            }
            _ => routers.push((kind, store)),
        }
    }

    let (deployments, writer) = reflector::store();
    let api: Api<Deployment> = Api::all(client.clone());
    tasks.spawn(keep_watching(
        "Deployments".to_owned(),
        reflector::reflector(
            writer,
            watcher(api, watcher::Config::default()).modify(keep_what_the_simulator_reads),
        ),
    ));
    // DaemonSet releases get the same traffic: their versions are looked up beside the
    // Deployments' (`Workloads`).
    let (daemonsets, writer) = reflector::store();
    let api: Api<DaemonSet> = Api::all(client);
    tasks.spawn(keep_watching(
        "DaemonSets".to_owned(),
        reflector::reflector(
            writer,
            watcher(api, watcher::Config::default()).modify(keep_what_the_simulator_reads),
        ),
    ));
    let deployments = Workloads {
        deployments,
        daemonsets,
    };

    let simulator = Arc::new(Mutex::new(
        Simulator::new(options.requests_per_second).with_noise_seed(options.noise_seed),
    ));
    tasks.spawn(tick(
        routers,
        Edges {
            ingresses,
            route_tables,
            http_routes,
        },
        deployments,
        simulator.clone(),
        options.tick,
    ));

    tracing::info!(
        listen = %listener.local_addr()?,
        requests_per_second = options.requests_per_second,
        noise_seed = ?options.noise_seed,
        "simulating traffic"
    );
    let served = axum::serve(listener, router(simulator))
        .with_graceful_shutdown(shutdown)
        .await;
    tasks.shutdown().await;
    served
}

/// `/metrics` and `/healthz`.
fn router(simulator: SharedSimulator) -> axum::Router {
    axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(simulator)
}

async fn metrics(State(simulator): State<SharedSimulator>) -> impl IntoResponse {
    let text = simulator
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .render();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
}

/// Drives a reflector: its store is current as long as this runs. Watch errors are logged and
/// retried after a delay that doubles from [`FIRST_RETRY_DELAY`] to [`MAX_RETRY_DELAY`],
/// reset once a list succeeds.
///
/// The backoff is here rather than the watcher's own `default_backoff()`: that one restarts
/// from its shortest delay whenever the watcher reports `Init`, which it does before every
/// list attempt, so a missing CRD would be listed (and logged) every second forever.
async fn keep_watching<K>(
    what: String,
    stream: impl Stream<Item = watcher::Result<watcher::Event<K>>>,
) {
    let mut stream = std::pin::pin!(stream);
    let mut delay = FIRST_RETRY_DELAY;
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::InitDone) => {
                tracing::info!("watching {what}");
                delay = FIRST_RETRY_DELAY;
            }
            Ok(_) => {}
            Err(e) => {
                if is_not_found(&e) {
                    tracing::warn!(
                        "cannot list {what}: the API server does not serve them (is the CRD \
                         installed?); retrying in {delay:.1?}"
                    );
                } else {
                    tracing::warn!("watching {what} failed, retrying in {delay:.1?}: {e}");
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_RETRY_DELAY);
            }
        }
    }
}

fn is_not_found(error: &watcher::Error) -> bool {
    match error {
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        // The API server answers an unknown group or version with a bare 404 page, which
        // has no `reason` to go by.
        | watcher::Error::WatchStartFailed(kube::Error::Api(status)) => status.code == 404,
        _ => false,
    }
}

/// Drops what the simulator never reads (managed fields, annotations of the Deployment
/// itself, the pod spec but its node selector), keeping the store small in a big cluster.
fn keep_what_the_simulator_reads<W: Trimmed>(workload: &mut W) {
    workload.meta_mut().managed_fields = None;
    if let Some(annotations) = workload.meta_mut().annotations.as_mut() {
        // Whether the release is Blue/Green, for the load test.
        annotations.retain(|key, _| key == ITERATIONS_ANNOTATION || key == MATCH_ANNOTATION);
    }
    if let Some(template) = workload.template_mut() {
        // Where the pods run: a release on the real node is not simulated (`on_real_node`).
        template.spec = template.spec.take().map(|pod| PodSpec {
            node_selector: pod.node_selector,
            ..PodSpec::default()
        });
    }
}

/// The workloads [`keep_what_the_simulator_reads`] trims.
trait Trimmed: kube::Resource {
    fn template_mut(&mut self) -> Option<&mut k8s_openapi::api::core::v1::PodTemplateSpec>;
}

impl Trimmed for Deployment {
    fn template_mut(&mut self) -> Option<&mut k8s_openapi::api::core::v1::PodTemplateSpec> {
        self.spec.as_mut().map(|s| &mut s.template)
    }
}

impl Trimmed for DaemonSet {
    fn template_mut(&mut self) -> Option<&mut k8s_openapi::api::core::v1::PodTemplateSpec> {
        self.spec.as_mut().map(|s| &mut s.template)
    }
}

/// Looks a Deployment up in the store by namespace and name.
type Lookup<'a> = dyn Fn(&str, &str) -> Option<Arc<Deployment>> + 'a;

/// The workloads whose versions the simulator serves: Deployments, and DaemonSets seen as
/// what the mapping reads of a Deployment (pod template and Ready pods).
struct Workloads {
    deployments: Store<Deployment>,
    daemonsets: Store<DaemonSet>,
}

impl Workloads {
    fn get(&self, namespace: &str, name: &str) -> Option<Arc<Deployment>> {
        if let Some(found) = self
            .deployments
            .get(&ObjectRef::new(name).within(namespace))
        {
            return Some(found);
        }
        let daemonset = self
            .daemonsets
            .get(&ObjectRef::new(name).within(namespace))?;
        Some(Arc::new(as_version(&daemonset)))
    }
}

/// A DaemonSet as the simulator reads a version: its pod template (behaviour annotations,
/// node selector) and its Ready pods as `readyReplicas`.
fn as_version(daemonset: &DaemonSet) -> Deployment {
    let spec = daemonset.spec.clone().unwrap_or_default();
    Deployment {
        metadata: daemonset.metadata.clone(),
        spec: Some(DeploymentSpec {
            selector: spec.selector,
            template: spec.template,
            ..Default::default()
        }),
        status: daemonset.status.as_ref().map(|status| DeploymentStatus {
            ready_replicas: Some(status.number_ready),
            ..Default::default()
        }),
    }
}

/// The router kinds whose traffic enters from outside the mesh, each with its store.
struct Edges {
    ingresses: Option<(RouterKind, Store<DynamicObject>)>,
    route_tables: Option<(RouterKind, Store<DynamicObject>)>,
    /// The HTTPRoutes again, for Traefik's series of the same requests.
    http_routes: Option<(RouterKind, Store<DynamicObject>)>,
}

/// Every `tick`, advances the simulator by the time elapsed with the backends the stores
/// describe now (forgetting versions whose router object or Deployment is gone), and logs
/// what changed in the routing and in the problems.
async fn tick(
    routers: Vec<(RouterKind, Store<DynamicObject>)>,
    edges: Edges,
    deployments: Workloads,
    simulator: SharedSimulator,
    period: Duration,
) {
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last = Instant::now();
    let mut routed = BTreeMap::new();
    let mut reported = BTreeSet::new();
    loop {
        interval.tick().await;
        let (backends, load_tests, mut problems) = current_backends(&routers, &deployments);
        let (through_ingresses, ingress_problems) =
            current_edge_backends(edges.ingresses.as_ref(), &deployments, |k, o, l| {
                ingress_backends_of(k, o, l)
            });
        problems.extend(ingress_problems);
        let (through_envoy, envoy_problems) =
            current_edge_backends(edges.route_tables.as_ref(), &deployments, |k, o, l| {
                envoy_backends_of(k, o, l)
            });
        problems.extend(envoy_problems);
        // An HTTPRoute that routes nothing is reported once, by the Linkerd reading above.
        let (through_traefik, _) =
            current_edge_backends(edges.http_routes.as_ref(), &deployments, |k, o, l| {
                traefik_backends_of(k, o, l)
            });
        let now = Instant::now();
        {
            let mut simulator = simulator.lock().unwrap_or_else(PoisonError::into_inner);
            simulator.advance(now - last, &backends);
            simulator.advance_load_tests(now - last, &load_tests);
            simulator.retain(&backends);
            let ingress_traffic = simulator.ingresses();
            ingress_traffic.advance(now - last, &through_ingresses);
            ingress_traffic.retain(&through_ingresses);
            let envoy_traffic = simulator.envoy();
            envoy_traffic.advance(now - last, &through_envoy);
            envoy_traffic.retain(&through_envoy);
            let traefik_traffic = simulator.traefik();
            traefik_traffic.advance(now - last, &through_traefik);
            traefik_traffic.retain(&through_traefik);
        }
        last = now;

        let routing: BTreeMap<_, _> = backends
            .iter()
            .map(|b| (format!("{}/{}", b.namespace, b.deployment), b.weight))
            .chain(through_ingresses.iter().map(|b| {
                let l = &b.labels;
                let upstream = match l.canary.is_empty() {
                    true => format!("{}-primary", l.service),
                    false => l.canary.clone(),
                };
                (
                    format!("{}/ingress {} to {upstream}", l.namespace, l.ingress),
                    b.weight,
                )
            }))
            .chain(through_envoy.iter().map(|b: &EnvoyBackend| {
                (
                    format!(
                        "{}/route table {} to {}",
                        b.namespace, b.route_table, b.cluster
                    ),
                    b.weight,
                )
            }))
            .chain(through_traefik.iter().map(|b: &TraefikBackend| {
                (
                    format!("{}/traefik route {} to {}", b.namespace, b.route, b.service),
                    b.weight,
                )
            }))
            .collect();
        for (version, weight) in &routing {
            if routed.get(version) != Some(weight) {
                tracing::info!(
                    "simulated traffic: {version} now gets {weight}% of its router's requests \
                     (mirrored copies included)"
                );
            }
        }
        for version in routed.keys().filter(|v| !routing.contains_key(*v)) {
            tracing::info!("simulated traffic: {version} is no longer routed to");
        }
        routed = routing;
        let problems: BTreeSet<_> = problems.iter().map(ToString::to_string).collect();
        for problem in problems.difference(&reported) {
            tracing::warn!("no traffic: {problem}");
        }
        reported = problems;
    }
}

/// The versions behind every object in the store of an edge router kind (canary Ingresses,
/// route tables), as `backends_of` maps them, and why some route nothing.
fn current_edge_backends<B>(
    edge: Option<&(RouterKind, Store<DynamicObject>)>,
    deployments: &Workloads,
    backends_of: impl Fn(&RouterKind, &DynamicObject, &Lookup<'_>) -> Result<Vec<B>, MappingError>,
) -> (Vec<B>, Vec<MappingError>) {
    let mut backends = Vec::new();
    let mut problems = Vec::new();
    let lookup = |namespace: &str, name: &str| deployments.get(namespace, name);
    if let Some((kind, store)) = edge {
        for object in store.state() {
            match backends_of(kind, &object, &lookup) {
                Ok(found) => backends.extend(found),
                Err(e) => problems.push(e),
            }
        }
    }
    (backends, problems)
}

/// The backends of every router object in the stores, the load tests of Blue/Green analyses,
/// and why some route nothing.
fn current_backends(
    routers: &[(RouterKind, Store<DynamicObject>)],
    deployments: &Workloads,
) -> (Vec<Backend>, Vec<LoadTest>, Vec<MappingError>) {
    let mut backends = Vec::new();
    let mut load_tests = Vec::new();
    let mut problems = Vec::new();
    let lookup = |namespace: &str, name: &str| deployments.get(namespace, name);
    for (kind, store) in routers {
        for object in store.state() {
            match backends_of(kind, &object, lookup) {
                Ok(found) => backends.extend(found),
                Err(e) => problems.push(e),
            }
            load_tests.extend(load_test_of(kind, &object, lookup));
        }
    }
    (backends, load_tests, problems)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devtools::simulate::Behaviour;
    use crate::devtools::simulate::backends::on_real_node;

    /// What the store keeps of a Deployment still says whether its pods run on the real node:
    /// the simulator must leave those releases to the real data plane.
    #[test]
    fn the_trimmed_deployment_still_says_it_runs_on_the_real_node() {
        let mut deployment: Deployment = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "podinfo", "namespace": "demo",
                "annotations": {"serin.dev/enabled": "true"}},
            "spec": {"selector": {"matchLabels": {"app": "podinfo"}},
                "template": {"metadata": {"labels": {"app": "podinfo"}}, "spec": {
                    "nodeSelector": {"serin.dev/node": "real"},
                    "containers": [{"name": "podinfo", "image": "podinfo:1",
                        "env": [{"name": "BIG", "value": "x"}]}]}}}
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        keep_what_the_simulator_reads(&mut deployment);
        assert!(on_real_node(&deployment));
        let pod = deployment
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .unwrap_or_else(|| panic!("the pod spec's node selector is kept"));
        assert!(
            pod.containers.is_empty(),
            "the rest of the pod spec is dropped"
        );
        assert_eq!(deployment.metadata.annotations.map(|a| a.len()), Some(0));
    }
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn get(app: axum::Router, path: &str) -> (StatusCode, String, String) {
        let request = Request::get(path)
            .body(Body::empty())
            .unwrap_or_else(|e| panic!("{e}"));
        let response = app.oneshot(request).await.unwrap_or_else(|e| match e {});
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = response
            .into_body()
            .collect()
            .await
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
            .unwrap_or_else(|e| panic!("{e}"));
        (status, content_type, body)
    }

    #[tokio::test]
    async fn metrics_serves_the_simulated_series_as_prometheus_text() {
        let simulator = Arc::new(Mutex::new(Simulator::new(10.0)));
        simulator
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .advance(
                Duration::from_secs(1),
                &[Backend {
                    namespace: "shop".into(),
                    deployment: "web".into(),
                    weight: 100,
                    behaviour: Behaviour::default(),
                }],
            );
        let (status, content_type, body) = get(router(simulator.clone()), "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            content_type.starts_with("text/plain; version=0.0.4"),
            "{content_type}"
        );
        assert!(
            body.contains(
                "response_total{direction=\"inbound\",namespace=\"shop\",deployment=\"web\",classification=\"success\"} 10"
            ),
            "{body}"
        );
        let (status, _, body) = get(router(simulator), "/healthz").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "ok\n"));
    }
}
