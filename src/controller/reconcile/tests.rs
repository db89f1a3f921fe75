//! The reconcile pipeline against a fake API server (a `tower` service behind
//! `kube::Client`): it answers GETs from the objects it holds, takes applies, patches and
//! Events, and records every call, so a test can state the writes one reconcile makes and
//! their order.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use http_body_util::BodyExt;
use hyper::{Method, Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{Value, json};

use super::*;
use crate::controller::Options;
use crate::controller::lease::LeaseConfig;
use crate::crd::{Canary, CanaryResourceSpec, CanaryStatus};
use crate::release::{Phase, ReleaseStatus, Tracking, Weights};
use crate::router::RouterSettings;
use k8s_openapi::api::apps::v1::DaemonSet;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The objects the fake API server holds, by path, and the calls it answered.
#[derive(Default)]
struct Cluster {
    objects: BTreeMap<String, Value>,
    /// Method, path and body of every call.
    calls: Vec<(Method, String, Value)>,
}

const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/prod/deployments";
const CANARY: &str = "/apis/serin.dev/v1beta1/namespaces/prod/canaries/web";
const SPLIT: &str = "/apis/split.smi-spec.io/v1alpha1/namespaces/prod/trafficsplits/web";
const ROUTE: &str = "/apis/gateway.networking.k8s.io/v1/namespaces/prod/httproutes/web";

fn not_found() -> (StatusCode, Value) {
    let status = json!({"apiVersion": "v1", "kind": "Status", "metadata": {},
        "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"});
    (StatusCode::NOT_FOUND, status)
}

impl Cluster {
    fn answer(&mut self, method: &Method, path: &str, body: Value) -> (StatusCode, Value) {
        self.calls
            .push((method.clone(), path.to_owned(), body.clone()));
        let lists = ["horizontalpodautoscalers", "configmaps", "secrets"];
        match *method {
            Method::GET if lists.iter().any(|l| path.ends_with(l)) => {
                let list = json!({"apiVersion": "v1", "kind": "List",
                    "metadata": {"resourceVersion": "1"}, "items": []});
                (StatusCode::OK, list)
            }
            Method::GET => match self.objects.get(path) {
                Some(object) => (StatusCode::OK, object.clone()),
                None => not_found(),
            },
            Method::POST => (StatusCode::CREATED, body),
            Method::PATCH if path.ends_with("/scale") => {
                let name = path.trim_end_matches("/scale").rsplit('/').next();
                let scale = json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
                    "metadata": {"name": name, "namespace": "prod", "resourceVersion": "2"},
                    "spec": body["spec"]});
                (StatusCode::OK, scale)
            }
            Method::PATCH if path.ends_with("/status") => {
                let parent = path.trim_end_matches("/status");
                let Some(object) = self.objects.get_mut(parent) else {
                    return not_found();
                };
                object["status"] = body["status"].clone();
                (StatusCode::OK, object.clone())
            }
            Method::PATCH => {
                // A JSON merge (RFC 7386), as the API server applies a merge patch; an apply
                // body merges the same way for what these tests look at.
                let mut object = self.objects.get(path).cloned().unwrap_or(Value::Null);
                merge(&mut object, &body);
                object["metadata"]["resourceVersion"] = json!("2");
                self.objects.insert(path.to_owned(), object.clone());
                (StatusCode::OK, object)
            }
            _ => not_found(),
        }
    }

    /// The writes, each as a short label (Events by reason, scales with their count, status
    /// writes with their phase), consecutive repeats (an Event on the Deployment and on the
    /// Canary) once.
    fn writes(&self) -> Vec<String> {
        let mut writes: Vec<String> = Vec::new();
        for (method, path, body) in &self.calls {
            let label = match *method {
                Method::GET => continue,
                Method::POST if path.ends_with("/events") => {
                    format!("event {}", body["reason"].as_str().unwrap_or("?"))
                }
                Method::PATCH if path.ends_with("/scale") => {
                    let name = path.trim_end_matches("/scale").rsplit('/').next();
                    format!("scale {} {}", name.unwrap_or("?"), body["spec"]["replicas"])
                }
                Method::PATCH if path.ends_with("/status") => {
                    let phase = &body["status"]["phase"];
                    format!("status {}", phase.as_str().unwrap_or("?"))
                }
                _ => {
                    let mut parts = path.rsplit('/');
                    let (name, kind) = (parts.next(), parts.next());
                    let (name, kind) = (name.unwrap_or("?"), kind.unwrap_or("?"));
                    format!("{method} {kind}/{name}")
                }
            };
            if writes.last() != Some(&label) {
                writes.push(label);
            }
        }
        writes
    }
}

/// `patch` merged into `target` (RFC 7386): objects key by key, `null` removes a key.
fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                match value {
                    Value::Null => {
                        target.remove(key);
                    }
                    value => merge(target.entry(key.clone()).or_insert(Value::Null), value),
                }
            }
        }
        (target, patch) => *target = patch.clone(),
    }
}

/// A client whose API server is `cluster`.
fn client(cluster: Arc<Mutex<Cluster>>) -> kube::Client {
    let service = tower::service_fn(move |request: Request<Body>| {
        let cluster = cluster.clone();
        async move {
            let (parts, body) = request.into_parts();
            let bytes = body.collect().await?.to_bytes();
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let path = parts.uri.path().to_owned();
            let (status, answer) =
                cluster
                    .lock()
                    .map_err(|_| "poisoned")?
                    .answer(&parts.method, &path, body);
            let response = Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&answer)?))?;
            Ok::<_, BoxError>(response)
        }
    });
    kube::Client::new(service, "prod")
}

fn context(client: kube::Client) -> Arc<Context> {
    context_with(client, None)
}

/// [`context`] asking the Prometheus at `prometheus_url`.
fn context_asking(client: kube::Client, prometheus_url: &str) -> Arc<Context> {
    let options = Options {
        prometheus_url: prometheus_url.into(),
        prometheus_credentials: Default::default(),
        lease: LeaseConfig::new("serin-system"),
        serin_user: "system:serviceaccount:serin-system:serin".into(),
        tracking: Tracking::CONFIG_MAPS,
        routers: RouterSettings::default(),
        own_ports: Vec::new(),
        metrics: None,
        release_metrics: None,
        alert_counts: None,
        policies: None,
    };
    Arc::new(Context::new(client, &options).expect("context"))
}

/// [`context`], exporting the release metrics to `release_metrics`.
fn context_with(
    client: kube::Client,
    release_metrics: Option<crate::controller::ReleaseMetrics>,
) -> Arc<Context> {
    let options = Options {
        prometheus_url: "http://prometheus.invalid:9090".into(),
        prometheus_credentials: Default::default(),
        lease: LeaseConfig::new("serin-system"),
        serin_user: "system:serviceaccount:serin-system:serin".into(),
        tracking: Tracking::CONFIG_MAPS,
        routers: RouterSettings::default(),
        own_ports: Vec::new(),
        metrics: None,
        release_metrics: release_metrics.clone(),
        alert_counts: None,
        policies: None,
    };
    let mut ctx = Context::new(client, &options).expect("context");
    ctx.release_metrics = release_metrics;
    Arc::new(ctx)
}

/// `prod/web`, opted in, at image `web:2` with `replicas` and `status`.
fn web(replicas: i32, status: Value) -> Deployment {
    web_annotated(replicas, status, json!({"serin.dev/enabled": "true"}))
}

/// [`web`] with these annotations.
fn web_annotated(replicas: i32, status: Value, annotations: Value) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "prod", "uid": "uid-1", "generation": 1,
            "resourceVersion": "1", "annotations": annotations},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
                {"name": "app", "image": "web:2", "ports": [{"containerPort": 9898}]}]}}},
        "status": status,
    }))
    .expect("a Deployment")
}

fn revision_of(deploy: &Deployment) -> String {
    let template = deploy.spec.as_ref().map(|s| s.template.clone());
    release::revision(&template.unwrap_or_default(), &[])
}

/// The cluster around `deploy`: its Canary with `status`, a Ready primary running
/// `primary_revision`, and the router object (the SMI TrafficSplit by default) at `weights`.
fn cluster(
    deploy: &Deployment,
    status: ReleaseStatus,
    primary_revision: &str,
    weights: Weights,
) -> Arc<Mutex<Cluster>> {
    let Ok(OptIn::Enabled(spec)) = spec::read_deployment(deploy) else {
        panic!("web is opted in");
    };
    let mut canary = Canary::new(
        "web",
        CanaryResourceSpec {
            config: spec.clone(),
        },
    );
    canary.metadata.namespace = Some("prod".into());
    canary.metadata.resource_version = Some("1".into());
    canary.status = Some(CanaryStatus {
        release: status,
        observed_generation: Some(1),
        ..Default::default()
    });
    let mut primary = serde_json::to_value(web(2, Value::Null)).expect("json");
    primary["metadata"]["name"] = json!("web-primary");
    primary["metadata"]["annotations"] = json!({"serin.dev/revision": primary_revision});
    primary["status"] = json!({"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2,
        "readyReplicas": 2, "availableReplicas": 2});
    let router = configured_router(spec.provider, &RouterSettings::default());
    let split = router
        .build(deploy, &spec, weights)
        .expect("a router object");
    let resource = router.api_resource();
    let router_path = format!(
        "/apis/{}/namespaces/prod/{}/{}",
        resource.api_version,
        resource.plural,
        router.object_name(&spec)
    );
    let mut cluster = Cluster::default();
    cluster.objects.extend([
        (
            format!("{DEPLOYMENTS}/web"),
            serde_json::to_value(deploy).expect("json"),
        ),
        (format!("{DEPLOYMENTS}/web-primary"), primary),
        (
            CANARY.to_owned(),
            serde_json::to_value(&canary).expect("json"),
        ),
        (router_path, serde_json::to_value(&split).expect("json")),
    ]);
    Arc::new(Mutex::new(cluster))
}

fn writes(cluster: &Arc<Mutex<Cluster>>) -> Vec<String> {
    cluster.lock().expect("cluster").writes()
}

#[tokio::test]
async fn a_new_revision_repairs_the_services_opens_the_gates_scales_the_canary_and_says_so() {
    let deploy = web(0, json!({"observedGeneration": 1}));
    let succeeded = ReleaseStatus {
        phase: Phase::Succeeded,
        revision: Some("old".into()),
        last_promoted_revision: Some("old".into()),
        ..Default::default()
    };
    let cluster = cluster(&deploy, succeeded, "old", Weights::ALL_PRIMARY);
    let ctx = context(client(cluster.clone()));
    reconcile(Arc::new(deploy), ctx).await.expect("reconciled");
    assert_eq!(
        writes(&cluster),
        [
            "PATCH services/web",
            "PATCH services/web-primary",
            "PATCH services/web-canary",
            "event NewRevision",
            "scale web 2",
            "event Progressing",
            "status Progressing",
        ]
    );
}

#[tokio::test]
async fn a_canary_past_its_progress_deadline_is_rolled_back_traffic_first() {
    let stalled = json!({"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2,
        "conditions": [{"type": "Progressing", "status": "False",
            "reason": "ProgressDeadlineExceeded"}]});
    let deploy = web(2, stalled);
    let progressing = ReleaseStatus {
        phase: Phase::Progressing,
        revision: Some(revision_of(&deploy)),
        last_promoted_revision: Some("old".into()),
        canary_weight: 10,
        ..Default::default()
    };
    let cluster = cluster(&deploy, progressing, "old", Weights::to_canary(10));
    let ctx = context(client(cluster.clone()));
    reconcile(Arc::new(deploy), ctx).await.expect("reconciled");
    assert_eq!(
        writes(&cluster),
        [
            "PATCH trafficsplits/web",
            "scale web 0",
            "event RolledBack",
            "status Failed",
        ]
    );
    let split = cluster.lock().expect("cluster").objects[SPLIT].clone();
    assert_eq!(split["spec"]["backends"][0]["weight"], json!(100));
}

#[tokio::test]
async fn a_rollback_is_counted_timed_and_its_weight_exported_from_the_status_written() {
    let stalled = json!({"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2,
        "conditions": [{"type": "Progressing", "status": "False",
            "reason": "ProgressDeadlineExceeded"}]});
    let deploy = web(2, stalled);
    let progressing = ReleaseStatus {
        phase: Phase::Progressing,
        revision: Some(revision_of(&deploy)),
        last_promoted_revision: Some("old".into()),
        canary_weight: 10,
        failed_checks: 1,
        ..Default::default()
    };
    let cluster = cluster(&deploy, progressing, "old", Weights::to_canary(10));
    // The release began a minute ago: the Promoted condition turned Unknown then.
    let started = k8s_openapi::jiff::Timestamp::now() - std::time::Duration::from_secs(60);
    cluster
        .lock()
        .expect("cluster")
        .objects
        .get_mut(CANARY)
        .expect("canary")["status"]["conditions"] = json!([{"type": "Promoted", "status": "Unknown",
            "reason": "Progressing", "message": "", "lastTransitionTime": started.to_string()}]);
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = crate::controller::ReleaseMetrics::register(&mut registry);
    let ctx = context_with(client(cluster.clone()), Some(metrics));
    reconcile(Arc::new(deploy), ctx).await.expect("reconciled");
    assert_eq!(
        writes(&cluster).last().map(String::as_str),
        Some("status Failed")
    );

    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
    for series in [
        r#"serin_canary_rollbacks_total{namespace="prod",name="web"} 1"#,
        r#"serin_canary_promotions_total{namespace="prod",name="web"} 0"#,
        r#"serin_canary_weight{namespace="prod",name="web"} 0"#,
        r#"serin_canary_phase{namespace="prod",name="web",phase="Failed"} 1"#,
        r#"serin_canary_phase{namespace="prod",name="web",phase="Progressing"} 0"#,
    ] {
        assert!(text.lines().any(|l| l == series), "{series} not in\n{text}");
    }
    let duration: f64 = text
        .lines()
        .find_map(|l| {
            l.strip_prefix(
                r#"serin_canary_last_release_duration_seconds{namespace="prod",name="web"} "#,
            )
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no release duration in\n{text}"));
    assert!((60.0..120.0).contains(&duration), "{duration}");
}

/// A change of `serin.dev/hosts` changes the Canary's spec, and a changed spec re-applies the
/// router object at the weights it has (`release::repairs`): the HTTPRoute gets the new
/// hostnames in the same reconcile, mid-release, without moving traffic.
#[tokio::test]
async fn a_change_of_hosts_is_applied_to_the_httproute_at_the_weights_it_has() {
    let annotations = |hosts: &str| {
        json!({"serin.dev/enabled": "true", "serin.dev/provider": "gatewayapi",
            "serin.dev/gateway": "infra/public", "serin.dev/hosts": hosts})
    };
    let ready = json!({"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2,
        "readyReplicas": 2, "availableReplicas": 2});
    let before = web_annotated(2, ready.clone(), annotations("old.example.com"));
    let progressing = ReleaseStatus {
        phase: Phase::Progressing,
        revision: Some(revision_of(&before)),
        last_promoted_revision: Some("old".into()),
        canary_weight: 20,
        ..Default::default()
    };
    let cluster = cluster(&before, progressing, "old", Weights::to_canary(20));
    let stored =
        |cluster: &Arc<Mutex<Cluster>>| cluster.lock().expect("cluster").objects[ROUTE].clone();
    assert_eq!(
        stored(&cluster)["spec"]["hostnames"],
        json!(["old.example.com"])
    );
    let after = web_annotated(2, ready, annotations("new.example.com,*.new.example.com"));
    let ctx = context(client(cluster.clone()));
    reconcile(Arc::new(after), ctx).await.expect("reconciled");
    let writes = writes(&cluster);
    assert!(
        writes.contains(&"PATCH canaries/web".to_owned())
            && writes.contains(&"PATCH httproutes/web".to_owned()),
        "{writes:?}"
    );
    let route = stored(&cluster);
    assert_eq!(
        route["spec"]["hostnames"],
        json!(["new.example.com", "*.new.example.com"])
    );
    let weights: Vec<&Value> = (0..2)
        .map(|i| &route["spec"]["rules"][0]["backendRefs"][i]["weight"])
        .collect();
    assert_eq!(weights, [&json!(80), &json!(20)]);
}

/// Session affinity through the controller: a release at a weight gets the cookie rule (the
/// value the release's revision) on its HTTPRoute, and the rollback's one write to the route
/// takes the rule and the canary's Set-Cookie away, so the cookie no longer routes.
#[tokio::test]
async fn the_affinity_cookie_rule_is_applied_while_the_canary_has_weight_and_removed_on_rollback() {
    let annotations = json!({"serin.dev/enabled": "true", "serin.dev/provider": "gatewayapi",
        "serin.dev/affinity-cookie": "serin-canary"});
    let ready = json!({"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2,
        "readyReplicas": 2, "availableReplicas": 2});
    let deploy = web_annotated(2, ready, annotations.clone());
    let revision = revision_of(&deploy);
    let progressing = ReleaseStatus {
        phase: Phase::Progressing,
        revision: Some(revision.clone()),
        last_promoted_revision: Some("old".into()),
        canary_weight: 10,
        // Checked a moment ago: nothing is due but the route.
        last_check_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
            k8s_openapi::jiff::Timestamp::now(),
        )),
        ..Default::default()
    };
    let cluster = cluster(&deploy, progressing, "old", Weights::to_canary(10));
    let stored =
        |cluster: &Arc<Mutex<Cluster>>| cluster.lock().expect("cluster").objects[ROUTE].clone();
    assert_eq!(
        stored(&cluster)["spec"]["rules"].as_array().map(Vec::len),
        Some(1)
    );
    let ctx = context(client(cluster.clone()));
    reconcile(Arc::new(deploy), ctx).await.expect("reconciled");
    assert_eq!(
        writes(&cluster),
        ["PATCH httproutes/web", "status Progressing"]
    );
    let route = stored(&cluster);
    assert_eq!(
        route["spec"]["rules"][1]["matches"][0]["headers"][0]["value"],
        json!(format!(r"^(.*;\s*)?serin-canary={revision}(;.*)?$"))
    );
    assert_eq!(
        route["spec"]["rules"][0]["backendRefs"][1]["filters"][0]["responseHeaderModifier"]["add"]
            [0]["value"],
        json!(format!("serin-canary={revision}; Max-Age=86400; Path=/"))
    );

    let stalled = json!({"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2,
        "conditions": [{"type": "Progressing", "status": "False",
            "reason": "ProgressDeadlineExceeded"}]});
    let deploy = web_annotated(2, stalled, annotations);
    let ctx = context(client(cluster.clone()));
    reconcile(Arc::new(deploy), ctx).await.expect("reconciled");
    let route = stored(&cluster);
    assert_eq!(
        route["spec"]["rules"],
        json!([{"backendRefs": [
            {"name": "web-primary", "port": 9898, "weight": 100},
            {"name": "web-canary", "port": 9898, "weight": 0},
        ]}])
    );
}

const DAEMONSETS: &str = "/apis/apps/v1/namespaces/prod/daemonsets";

/// `prod/web` as an opted-in DaemonSet at image `web:2` on a node selector of the user's,
/// idle (Serin's switch beside it) or running, with `status`.
fn web_daemonset(idle: bool, status: Value) -> DaemonSet {
    let mut node_selector = json!({"kubernetes.io/os": "linux"});
    if idle {
        node_selector[crate::spec::IDLE_NODE_LABEL] = json!("true");
    }
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "web", "namespace": "prod", "uid": "uid-1", "generation": 1,
            "resourceVersion": "1", "annotations": {"serin.dev/enabled": "true"}},
        "spec": {"selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                "nodeSelector": node_selector,
                "containers": [{"name": "app", "image": "web:2",
                    "ports": [{"containerPort": 9898}]}]}}},
        "status": status,
    }))
    .expect("a DaemonSet")
}

/// The DaemonSet on every one of its 2 nodes, rolled out and available.
fn on_two_nodes() -> Value {
    json!({"observedGeneration": 1, "desiredNumberScheduled": 2, "currentNumberScheduled": 2,
        "numberMisscheduled": 0, "updatedNumberScheduled": 2, "numberReady": 2,
        "numberAvailable": 2})
}

/// The cluster around a DaemonSet release: its Canary with `status`, a primary DaemonSet on
/// two nodes running `primary_revision`, and the TrafficSplit at `weights`.
fn daemonset_cluster(
    daemonset: &DaemonSet,
    status: ReleaseStatus,
    primary_revision: &str,
    weights: Weights,
) -> Arc<Mutex<Cluster>> {
    let Ok(OptIn::Enabled(spec)) = spec::read_workload(daemonset) else {
        panic!("web is opted in");
    };
    let mut canary = Canary::new(
        "web",
        CanaryResourceSpec {
            config: spec.clone(),
        },
    );
    canary.metadata.namespace = Some("prod".into());
    canary.metadata.resource_version = Some("1".into());
    canary.status = Some(CanaryStatus {
        release: status,
        observed_generation: Some(1),
        ..Default::default()
    });
    let mut primary = serde_json::to_value(
        release::primary_daemonset(daemonset, primary_revision, Tracking::CONFIG_MAPS)
            .expect("a primary"),
    )
    .expect("json");
    primary["metadata"]["resourceVersion"] = json!("1");
    primary["metadata"]["generation"] = json!(1);
    primary["status"] = on_two_nodes();
    let router = configured_router(spec.provider, &RouterSettings::default());
    let split = router.build(daemonset, &spec, weights).expect("a router");
    let mut cluster = Cluster::default();
    cluster.objects.extend([
        (
            format!("{DAEMONSETS}/web"),
            serde_json::to_value(daemonset).expect("json"),
        ),
        (format!("{DAEMONSETS}/web-primary"), primary),
        (
            CANARY.to_owned(),
            serde_json::to_value(&canary).expect("json"),
        ),
        (
            SPLIT.to_owned(),
            serde_json::to_value(&split).expect("json"),
        ),
    ]);
    Arc::new(Mutex::new(cluster))
}

/// The bodies of the PATCHes to `path`, in order.
fn patches_of(cluster: &Arc<Mutex<Cluster>>, path: &str) -> Vec<Value> {
    let cluster = cluster.lock().expect("cluster");
    let calls = cluster.calls.iter();
    calls
        .filter(|(method, p, _)| *method == Method::PATCH && p == path)
        .map(|(_, _, body)| body.clone())
        .collect()
}

#[tokio::test]
async fn a_new_revision_of_an_idle_daemonset_wakes_its_canary_by_the_node_selector_switch() {
    let daemonset = web_daemonset(
        true,
        json!({"observedGeneration": 1,
        "desiredNumberScheduled": 0, "currentNumberScheduled": 0, "numberMisscheduled": 0,
        "numberReady": 0}),
    );
    let succeeded = ReleaseStatus {
        phase: Phase::Succeeded,
        revision: Some("old".into()),
        last_promoted_revision: Some("old".into()),
        ..Default::default()
    };
    let cluster = daemonset_cluster(&daemonset, succeeded, "old", Weights::ALL_PRIMARY);
    let ctx = context(client(cluster.clone()));
    reconcile_daemonset(Arc::new(daemonset), ctx)
        .await
        .expect("reconciled");
    assert_eq!(
        writes(&cluster),
        [
            "PATCH services/web",
            "PATCH services/web-primary",
            "PATCH services/web-canary",
            "event NewRevision",
            "PATCH daemonsets/web",
            "event Progressing",
            "status Progressing",
        ]
    );
    // Only Serin's switch goes: a merge patch's null, the user's node selector untouched.
    let wake = patches_of(&cluster, &format!("{DAEMONSETS}/web"));
    assert_eq!(wake, [release::idle::idle_patch(false)]);
    // Nothing is scaled, and the primary is left alone.
    assert!(patches_of(&cluster, &format!("{DAEMONSETS}/web-primary")).is_empty());
}

#[tokio::test]
async fn promoting_a_daemonset_copies_its_template_to_the_primary_without_the_switch() {
    let daemonset = web_daemonset(false, on_two_nodes());
    let revision = release::revision(&release::release_template(&daemonset), &[]);
    let promoting = ReleaseStatus {
        phase: Phase::Promoting,
        revision: Some(revision.clone()),
        last_promoted_revision: Some("old".into()),
        canary_weight: 50,
        ..Default::default()
    };
    let cluster = daemonset_cluster(&daemonset, promoting, "old", Weights::to_canary(50));
    let ctx = context(client(cluster.clone()));
    reconcile_daemonset(Arc::new(daemonset), ctx)
        .await
        .expect("reconciled");
    let copies = patches_of(&cluster, &format!("{DAEMONSETS}/web-primary"));
    assert_eq!(copies.len(), 1, "{:?}", writes(&cluster));
    let copy = &copies[0];
    assert_eq!(copy["kind"], "DaemonSet");
    assert_eq!(
        copy["metadata"]["annotations"]["serin.dev/revision"],
        json!(revision)
    );
    let pod = &copy["spec"]["template"]["spec"];
    assert_eq!(pod["containers"][0]["image"], "web:2");
    assert_eq!(pod["nodeSelector"], json!({"kubernetes.io/os": "linux"}));
    assert_eq!(
        copy["spec"]["selector"]["matchLabels"],
        json!({"app": "web-primary"})
    );
    assert!(
        !writes(&cluster).iter().any(|w| w.starts_with("scale")),
        "a DaemonSet has no scale: {:?}",
        writes(&cluster)
    );
}

#[tokio::test]
async fn a_promoted_daemonset_canary_is_idled_again_then_the_release_succeeds() {
    let daemonset = web_daemonset(false, on_two_nodes());
    let revision = release::revision(&release::release_template(&daemonset), &[]);
    let promoting = ReleaseStatus {
        phase: Phase::Promoting,
        revision: Some(revision.clone()),
        last_promoted_revision: Some("old".into()),
        canary_weight: 50,
        ..Default::default()
    };
    // The primary already runs the revision and is Ready on its nodes.
    let cluster = daemonset_cluster(&daemonset, promoting, &revision, Weights::to_canary(50));
    let ctx = context(client(cluster.clone()));
    reconcile_daemonset(Arc::new(daemonset), ctx.clone())
        .await
        .expect("reconciled");
    let writes_now = writes(&cluster);
    assert!(
        writes_now.contains(&"PATCH daemonsets/web".to_owned())
            && writes_now.last().map(String::as_str) == Some("status Finalising"),
        "{writes_now:?}"
    );
    let idle = patches_of(&cluster, &format!("{DAEMONSETS}/web"));
    assert_eq!(idle, [release::idle::idle_patch(true)]);

    // The next reconcile sees the canary idle (off every node): the release succeeds.
    let idled = web_daemonset(
        true,
        json!({"observedGeneration": 1,
        "desiredNumberScheduled": 0, "currentNumberScheduled": 0, "numberMisscheduled": 0,
        "numberReady": 0}),
    );
    reconcile_daemonset(Arc::new(idled), ctx)
        .await
        .expect("reconciled");
    assert_eq!(
        writes(&cluster).last().map(String::as_str),
        Some("status Succeeded")
    );
}

/// A Prometheus on loopback that counts 25 requests of the canary since the weight moved,
/// 8 of them failed (and a success rate of 68 % over the window), all faster than 5 ms.
async fn prometheus_of_a_failing_canary() -> String {
    prometheus_counting(25, 8, 25).await
}

/// A Prometheus on loopback that counts `requests` of the canary since the weight moved,
/// `failed` of them failed, `fast` of them within 500 ms (Linkerd's buckets).
async fn prometheus_counting(requests: u32, failed: u32, fast: u32) -> String {
    use axum::extract::Query;
    let answer = move |Query(params): Query<BTreeMap<String, String>>| async move {
        let query = params.get("query").cloned().unwrap_or_default();
        let sample =
            |le: &str, value: String| json!({"metric": {"le": le}, "value": [1700000000.0, value]});
        if query.contains("by (le)") {
            return axum::Json(json!({"status": "success", "data": {"resultType": "vector",
                "result": [sample("5", fast.min(requests).to_string()),
                    sample("500", fast.to_string()),
                    sample("+Inf", requests.to_string())]}}));
        }
        let rate = 100.0 * f64::from(requests - failed) / f64::from(requests.max(1));
        let value = match (query.contains("increase("), query.contains("failure")) {
            (true, true) => failed.to_string(),
            (true, false) => requests.to_string(),
            (false, _) if query.contains("histogram_quantile") => "5".to_owned(),
            (false, _) => rate.to_string(),
        };
        axum::Json(json!({"status": "success", "data": {"resultType": "vector",
            "result": [{"metric": {}, "value": [1700000000.0, value]}]}}))
    };
    crate::analysis::http::serve_on_loopback(
        axum::Router::new().route("/api/v1/query", axum::routing::get(answer)),
    )
    .await
}

/// Between two intervals, a look at the counts decides the rollback, and the reconcile that
/// picks up the answer moves the traffic first: the router object is at 100/0 before the
/// Event says so, in the same reconcile, without waiting for the interval or `threshold`.
#[tokio::test]
async fn a_look_that_decides_a_rollback_sets_the_router_to_the_primary_first_in_the_same_reconcile()
{
    let ready = json!({"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2,
        "readyReplicas": 2, "availableReplicas": 2});
    let deploy = web(2, ready);
    let six_seconds_ago = k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
        k8s_openapi::jiff::Timestamp::now() - std::time::Duration::from_secs(6),
    );
    let progressing = ReleaseStatus {
        phase: Phase::Progressing,
        revision: Some(revision_of(&deploy)),
        last_promoted_revision: Some("old".into()),
        canary_weight: 10,
        // The weight moved six seconds ago; the interval (1m) is far, a look is due.
        last_check_time: Some(six_seconds_ago.clone()),
        weight_change_time: Some(six_seconds_ago),
        ..Default::default()
    };
    let cluster = cluster(&deploy, progressing, "old", Weights::to_canary(10));
    let prometheus = prometheus_of_a_failing_canary().await;
    let ctx = context_asking(client(cluster.clone()), &prometheus);
    let deploy = Arc::new(deploy);
    // The first reconcile asks and ends; the answer comes in a task of its own, and the
    // writes stated are those of the reconcile that picked it up.
    for _ in 0..50 {
        cluster.lock().expect("cluster").calls.clear();
        reconcile(deploy.clone(), ctx.clone())
            .await
            .expect("reconciled");
        if writes(&cluster).contains(&"status Failed".to_owned()) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        writes(&cluster),
        [
            "PATCH trafficsplits/web",
            "scale web 0",
            "event RolledBack",
            "status Failed",
        ]
    );
    let stored = cluster.lock().expect("cluster").objects.clone();
    assert_eq!(stored[SPLIT]["spec"]["backends"][0]["weight"], json!(100));
    let status = &stored[CANARY]["status"];
    assert_eq!(
        (&status["canaryRequests"], &status["canaryFailedRequests"]),
        (&json!(25), &json!(8))
    );
}

/// A look rolls back on the latency histogram alone (no request failed): the status says
/// the latency check decided, with the number of slow requests.
#[tokio::test]
async fn a_look_at_the_latency_histogram_rolls_back_a_slow_canary_and_the_status_says_why() {
    let ready = json!({"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2,
        "readyReplicas": 2, "availableReplicas": 2});
    let deploy = web(2, ready);
    let six_seconds_ago = k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
        k8s_openapi::jiff::Timestamp::now() - std::time::Duration::from_secs(6),
    );
    let progressing = ReleaseStatus {
        phase: Phase::Progressing,
        revision: Some(revision_of(&deploy)),
        last_promoted_revision: Some("old".into()),
        canary_weight: 10,
        // The weight moved six seconds ago; the interval (1m) is far, a look is due.
        last_check_time: Some(six_seconds_ago.clone()),
        weight_change_time: Some(six_seconds_ago),
        ..Default::default()
    };
    let cluster = cluster(&deploy, progressing, "old", Weights::to_canary(10));
    let prometheus = prometheus_counting(200, 0, 20).await;
    let ctx = context_asking(client(cluster.clone()), &prometheus);
    let deploy = Arc::new(deploy);
    // The first reconcile asks and ends; the answer comes in a task of its own, and the
    // writes stated are those of the reconcile that picked it up.
    for _ in 0..50 {
        cluster.lock().expect("cluster").calls.clear();
        reconcile(deploy.clone(), ctx.clone())
            .await
            .expect("reconciled");
        if writes(&cluster).contains(&"status Failed".to_owned()) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        writes(&cluster),
        [
            "PATCH trafficsplits/web",
            "scale web 0",
            "event RolledBack",
            "status Failed",
        ]
    );
    let stored = cluster.lock().expect("cluster").objects.clone();
    assert_eq!(stored[SPLIT]["spec"]["backends"][0]["weight"], json!(100));
    let status = &stored[CANARY]["status"];
    assert_eq!(
        (&status["canaryRequests"], &status["canaryFailedRequests"]),
        (&json!(200), &json!(0))
    );
    let reason = status["rollbackReason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with(
            "request-duration: 180 of 200 requests slower than 500ms since the weight moved \
             to 10%: worse than 1% with 99% confidence"
        ),
        "{status}"
    );
    let promoted = &status["conditions"][0];
    assert!(
        promoted["message"]
            .as_str()
            .unwrap_or_default()
            .contains("request-duration: 180 of 200 requests slower than 500ms"),
        "{promoted}"
    );
}
