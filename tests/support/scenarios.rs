//! One body per release behaviour, run for each provider from a [`Route`]: opting in, a good
//! release promoted step by step, a failing canary rolled back after one step, and A/B
//! testing. A provider's test file calls these and keeps its own checks (what its router
//! object looks like, which series its observer queries) beside them.
//!
//! The traffic simulator is told nothing: it reads the same router objects Serin writes (and,
//! for nginx, the user's Ingress the route names), so the metrics Serin checks follow them.

use std::time::Duration;

use k8s_openapi::api::networking::v1::Ingress;
use kube::Client;
use kube::api::PostParams;
use kube::core::DynamicObject;
use serde_json::json;
use serin::devtools::simulate::backends::MATCHING_PERCENT;
use serin::release::Phase;
use serin::router::Weights;
use serin::spec::Provider;

use super::release::{
    Version, apply, events, image, last_checks, manifest, release_status, replicas, wait_phase,
    weights_until,
};
use super::{TestNamespace, routes, wait_until};

/// Long enough for Serin to make the primary of a Deployment that opts in.
pub(crate) const SETTLE: Duration = Duration::from_secs(60);
/// Long enough for a release of 2 s intervals with a few failed checks.
pub(crate) const RELEASE: Duration = Duration::from_secs(150);

/// A provider as the scenarios drive it: the annotations that select it, and the router
/// object whose weights say where the traffic goes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Route {
    pub provider: Provider,
    /// The `serin.dev/` annotations that select the provider (none for the default).
    pub annotations: &'static [(&'static str, &'static str)],
    /// The name of the router object Serin writes, when it is not the Deployment's (which
    /// is the apex Service's).
    pub object_name: Option<&'static str>,
    /// The router object in the words of the assertion messages.
    pub object: &'static str,
    /// The user's Ingress the route goes through, created before opting in (nginx).
    pub ingress: Option<&'static str>,
    /// The `serin.dev/match` of the A/B scenarios: what the provider can express.
    pub ab_match: &'static str,
}

impl Route {
    /// A provider whose router object is named after the apex Service.
    const fn named_after_the_service(
        provider: Provider,
        annotations: &'static [(&'static str, &'static str)],
        object: &'static str,
    ) -> Route {
        Route {
            provider,
            annotations,
            object_name: None,
            object,
            ingress: None,
            ab_match: "header:x-canary=insider,cookie:canary",
        }
    }

    /// The default provider: Linkerd's SMI TrafficSplit.
    pub(crate) const SMI: Route =
        Route::named_after_the_service(Provider::Linkerd, &[], "the TrafficSplit");
    pub(crate) const GATEWAY_API: Route = Route::named_after_the_service(
        Provider::GatewayApi,
        &[("serin.dev/provider", "gatewayapi")],
        "the HTTPRoute",
    );
    /// The HTTPRoute as Traefik serves it: the builtin checks read Traefik's series.
    pub(crate) const GATEWAY_API_TRAEFIK: Route = Route::named_after_the_service(
        Provider::GatewayApi,
        &[
            ("serin.dev/provider", "gatewayapi"),
            ("serin.dev/metrics-provider", "traefik"),
        ],
        "the HTTPRoute",
    );
    pub(crate) const GLOO: Route = Route::named_after_the_service(
        Provider::Gloo,
        &[("serin.dev/provider", "gloo")],
        "the RouteTable",
    );
    /// Through the user's Ingress `public`, beside which Serin writes `public-canary`; one
    /// header rule for A/B, which ingress-nginx can express.
    pub(crate) const NGINX: Route = Route {
        provider: Provider::Nginx,
        annotations: &[
            ("serin.dev/provider", "nginx"),
            ("serin.dev/ingress", "public"),
        ],
        object_name: Some("public-canary"),
        object: "the canary Ingress",
        ingress: Some("public"),
        ab_match: "header:x-canary=insider",
    };

    /// The route's annotations followed by `extra` (which override them).
    pub(crate) fn annotations(
        &self,
        extra: &[(&'static str, &'static str)],
    ) -> Vec<(&'static str, &'static str)> {
        let mut all = self.annotations.to_vec();
        all.extend_from_slice(extra);
        all
    }

    /// The name of the router object of the Deployment `name`.
    pub(crate) fn object_name<'a>(&self, name: &'a str) -> &'a str {
        self.object_name.unwrap_or(name)
    }

    /// The weights the router object of the Deployment `name` routes by, read with Serin's
    /// own reader; `None` when it is missing or unreadable.
    pub(crate) async fn weights(&self, client: &Client, ns: &str, name: &str) -> Option<Weights> {
        routes::weights(client, ns, self.provider, self.object_name(name)).await
    }

    /// The canary's share in the router object of the Deployment `name`.
    pub(crate) async fn canary_weight(&self, client: &Client, ns: &str, name: &str) -> Option<u32> {
        self.weights(client, ns, name).await.map(Weights::canary)
    }
}

/// The user's Ingress `name`: `web.example.com/` to the apex Service `web`, and `/search` to
/// a Service that is not the application's.
pub(crate) fn user_ingress(ns: &str, name: &str) -> Ingress {
    serde_json::from_value(json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "ingressClassName": "nginx",
            "rules": [{"host": "web.example.com", "http": {"paths": [
                {"path": "/", "pathType": "Prefix",
                 "backend": {"service": {"name": "web", "port": {"number": 8080}}}},
                {"path": "/search", "pathType": "Prefix",
                 "backend": {"service": {"name": "search", "port": {"number": 80}}}},
            ]}}]
        }
    }))
    .expect("Ingress")
}

pub(crate) async fn create_user_ingress(client: &Client, ns: &str, name: &str) -> Ingress {
    kube::Api::<Ingress>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &user_ingress(ns, name))
        .await
        .expect("create the user's Ingress")
}

/// Applies `v1` of `name` with `annotations` (which must select `route`'s provider) and waits
/// until Serin has made the primary and routes everything to it; the idle canary runs no pod.
/// Creates the user's Ingress first where the route goes through one.
pub(crate) async fn opt_in(
    client: &Client,
    ns: &str,
    name: &str,
    route: &Route,
    annotations: &[(&str, &str)],
) {
    if let Some(ingress) = route.ingress {
        create_user_ingress(client, ns, ingress).await;
    }
    apply(&manifest(ns, name, &Version::good("v1"), annotations));
    wait_phase(client, ns, name, Phase::Initialized, SETTLE).await;
    assert_eq!(
        route.weights(client, ns, name).await,
        Some(Weights::ALL_PRIMARY),
        "{} {ns}/{} after opting in",
        route.object,
        route.object_name(name)
    );
    assert_eq!(
        replicas(client, ns, name).await,
        Some(0),
        "the idle canary runs no pod"
    );
}

/// Asserts that the primary runs `tag`, that the router object of `web` sends it all the
/// traffic and that the idle canary runs no pod.
pub(crate) async fn assert_primary_serves(client: &Client, ns: &str, route: &Route, tag: &str) {
    assert_eq!(
        image(client, ns, "web-primary").await,
        format!("example.invalid/web:{tag}")
    );
    assert_eq!(
        route.weights(client, ns, "web").await,
        Some(Weights::ALL_PRIMARY),
        "{} with the primary at {tag}",
        route.object
    );
    assert_eq!(replicas(client, ns, "web").await, Some(0));
}

/// A version that fails 30 % of its requests.
pub(crate) const FAILING: Version = Version {
    tag: "v2",
    error_rate: 0.3,
    latency_ms: 40,
};

/// A release of the Deployment `web` through `route` in a namespace of its own.
pub(crate) struct Release {
    pub client: Client,
    pub route: Route,
    /// The route's annotations and the scenario's.
    pub annotations: Vec<(&'static str, &'static str)>,
    namespace: TestNamespace,
}

impl Release {
    /// Opts `web` in at `v1` with the route's annotations and `extra`, in a new namespace
    /// named after `prefix`, in the environment a release needs.
    pub(crate) async fn opt_in(
        route: Route,
        prefix: &str,
        extra: &[(&'static str, &'static str)],
    ) -> Self {
        let (client, namespace) = super::release_namespace(prefix).await;
        let annotations = route.annotations(extra);
        opt_in(&client, &namespace.name, "web", &route, &annotations).await;
        Release {
            client,
            route,
            annotations,
            namespace,
        }
    }

    /// Opts in for a good release of steps of 20 % up to 60 %.
    pub(crate) async fn for_promotion(route: Route, prefix: &str) -> Self {
        let steps = [
            ("serin.dev/step-weight", "20"),
            ("serin.dev/max-weight", "60"),
        ];
        Self::opt_in(route, prefix, &steps).await
    }

    /// Opts in for a release rolled back after 2 failed checks.
    pub(crate) async fn for_rollback(route: Route, prefix: &str) -> Self {
        Self::opt_in(route, prefix, &[("serin.dev/threshold", "2")]).await
    }

    /// Opts in for an A/B release of 6 iterations on the route's match rules.
    pub(crate) async fn for_ab(route: Route, prefix: &str) -> Self {
        let ab = [
            ("serin.dev/iterations", "6"),
            ("serin.dev/match", route.ab_match),
        ];
        Self::opt_in(route, prefix, &ab).await
    }

    pub(crate) fn ns(&self) -> &str {
        &self.namespace.name
    }

    /// Applies `version` with the release's annotations.
    pub(crate) fn apply(&self, version: &Version) {
        apply(&manifest(self.ns(), "web", version, &self.annotations));
    }

    /// The canary weights of the router object, each change once, until the release ends in
    /// `phase`.
    async fn weights_until(&self, phase: Phase) -> Vec<u32> {
        let (client, ns, route) = (&self.client, self.ns(), &self.route);
        weights_until(client, ns, phase, RELEASE, || {
            route.canary_weight(client, ns, "web")
        })
        .await
    }

    /// The router object of `web`, as stored.
    pub(crate) async fn router_object(&self) -> DynamicObject {
        let name = self.route.object_name("web");
        routes::object(&self.client, self.ns(), self.route.provider, name)
            .await
            .unwrap_or_else(|| panic!("{} {name}", self.route.object))
    }

    /// Asserts that the Events about `web` contain each of `texts`.
    pub(crate) async fn assert_events_contain(&self, texts: &[&str]) {
        let events = events(&self.client, self.ns(), "web").await.join("\n");
        for text in texts {
            assert!(
                events.contains(text),
                "no {text:?} among the events:\n{events}"
            );
        }
    }

    async fn assert_primary_runs(&self, tag: &str) {
        assert_eq!(
            image(&self.client, self.ns(), "web-primary").await,
            format!("example.invalid/web:{tag}")
        );
    }

    /// A good `v2` (after [`Release::for_promotion`]): the router object's canary weight goes
    /// 0, 20, 40, 60 and back to 0, and the primary runs v2.
    pub(crate) async fn is_promoted_step_by_step(&self) {
        self.apply(&Version::good("v2"));
        let seen = self.weights_until(Phase::Succeeded).await;
        assert_eq!(
            seen,
            [0, 20, 40, 60, 0],
            "the canary weights of {} during the release",
            self.route.object
        );
        assert_primary_serves(&self.client, self.ns(), &self.route, "v2").await;
    }

    /// A `v2` failing 30 % of its requests (after [`Release::for_rollback`]): one step of
    /// 25 %, then the router object back to the primary, which still runs v1, and Events
    /// that say why.
    pub(crate) async fn is_rolled_back_after_one_step(&self) {
        self.is_rolled_back(&[0, 25, 0], "one step, then back to the primary")
            .await;
        assert_primary_serves(&self.client, self.ns(), &self.route, "v1").await;
    }

    /// The failing `v2` is applied and the release ends rolled back, the canary weights of
    /// the router object having been `expected`.
    async fn is_rolled_back(&self, expected: &[u32], what: &str) {
        self.apply(&FAILING);
        let seen = self.weights_until(Phase::Failed).await;
        assert_eq!(
            seen, expected,
            "the canary weights of {}: {what}",
            self.route.object
        );
        self.assert_events_contain(&["RolledBack", "request-success-rate"])
            .await;
    }

    /// The success rate Serin measured last is about the 70 % the failing version answers.
    pub(crate) async fn assert_measured_success_rate_near_70_percent(&self) {
        let checks = last_checks(&self.client, self.ns(), "web").await;
        let rate = checks
            .iter()
            .find(|(n, _)| n == "request-success-rate")
            .and_then(|(_, v)| *v);
        assert!(
            rate.is_some_and(|r| (60.0..80.0).contains(&r)),
            "success rate {rate:?}: {checks:?}"
        );
    }

    /// The last checks of a good release: all 2xx, and a p99 of the 40 ms requests
    /// interpolated in the 25-50 ms bucket of the histogram of an Envoy-like proxy (Linkerd's
    /// 30-40 ms bucket would give 39.9 ms); `whose` names the proxy in the message.
    pub(crate) async fn assert_checks_read_a_25_50_ms_bucket(&self, whose: &str) {
        let checks = last_checks(&self.client, self.ns(), "web").await;
        let value = |name: &str| checks.iter().find(|(n, _)| n == name).and_then(|(_, v)| *v);
        assert_eq!(value("request-success-rate"), Some(100.0), "{checks:?}");
        let p99 = value("request-duration");
        assert!(
            p99.is_some_and(|ms| ms > 45.0 && ms <= 50.0),
            "p99 {p99:?} ms is not from {whose}'s buckets: {checks:?}"
        );
    }

    /// A good `v2` (after [`Release::for_ab`]): waits until the router object sends the
    /// matching requests to the canary; the router object then.
    pub(crate) async fn starts_ab_analysis(&self) -> DynamicObject {
        self.apply(&Version::good("v2"));
        let (client, ns, route) = (&self.client, self.ns(), &self.route);
        wait_until(
            "the A/B analysis to route matching requests to the canary",
            RELEASE,
            || async {
                match route.weights(client, ns, "web").await {
                    Some(w) if w.canary() == 100 => Ok(()),
                    other => Err(format!("{} weights {other:?}", route.object)),
                }
            },
        )
        .await;
        self.router_object().await
    }

    /// The canary's share of the requests over a window inside the A/B analysis is the share
    /// the simulator takes to match. `measure` reads the share from Prometheus, with whatever
    /// else the caller wants of the same window, which is returned.
    pub(crate) async fn assert_canary_serves_the_matching_share<T, F, Fut>(&self, measure: F) -> T
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = (f64, T)>,
    {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let (measured, more) = measure().await;
        let status = release_status(&self.client, self.ns(), "web").await;
        assert!(
            status.phase == Phase::Progressing && status.canary_weight == 100,
            "the window must lie inside the A/B analysis: {status:?}"
        );
        let expected = f64::from(MATCHING_PERCENT) / 100.0;
        assert!(
            (measured - expected).abs() < 0.05,
            "the canary's share of requests: {measured:.3}, expected the matching share {expected}"
        );
        more
    }

    /// The A/B release ends promoted after its 6 iterations, everything to the primary.
    pub(crate) async fn is_promoted_after_6_iterations(&self) {
        let done = wait_phase(&self.client, self.ns(), "web", Phase::Succeeded, RELEASE).await;
        assert_eq!(done.status.map(|s| s.release.iterations), Some(6));
        assert_primary_serves(&self.client, self.ns(), &self.route, "v2").await;
    }

    /// A `v2` failing 30 % of its requests (after [`Release::for_ab`]): every matching
    /// request to the canary, then none; the primary still runs v1.
    pub(crate) async fn ab_is_rolled_back(&self) {
        self.is_rolled_back(
            &[0, 100, 0],
            "every matching request to the canary, then none",
        )
        .await;
    }
}
