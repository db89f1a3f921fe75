//! The admin port: plain HTTP for the kubelet's probes and Prometheus.
//!
//! - `GET /healthz`: 200 while the process serves at all (liveness);
//! - `GET /readyz`: 200 once the webhook port accepts TLS connections, 503 before and while
//!   shutting down (readiness), so the Service only routes to replicas that can answer;
//! - `GET /metrics`: the registry in OpenMetrics text format.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use super::ReadyFlag;
use super::serve::{ServeOptions, serve_plain};

const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone)]
struct AdminState {
    ready: ReadyFlag,
    registry: Arc<Registry>,
}

/// The admin routes, answering readiness from `ready` and metrics from `registry`.
pub fn admin_router(ready: ReadyFlag, registry: Arc<Registry>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(AdminState { ready, registry })
}

/// Serves `router` (usually [`admin_router`]) over plain HTTP until `shutdown` completes.
///
/// Give it a shutdown that completes after the webhook port has drained, so `/readyz`
/// answers 503 (rather than nothing) while requests finish.
pub async fn serve_admin(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()>,
) {
    serve_plain(listener, router, ServeOptions::default(), shutdown).await;
}

async fn readyz(State(state): State<AdminState>) -> Response {
    if state.ready.is_ready() {
        (StatusCode::OK, "ok").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
    }
}

async fn metrics(State(state): State<AdminState>) -> Response {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &state.registry) {
        Ok(()) => ([(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)], body).into_response(),
        Err(error) => {
            tracing::error!(%error, "could not encode metrics");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::Metrics;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn get_path(router: Router, path: &str) -> (StatusCode, Option<String>, String) {
        let response = router
            .oneshot(Request::get(path).body(Body::empty()).expect("request"))
            .await
            .expect("infallible");
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        (
            status,
            content_type,
            String::from_utf8_lossy(&body).into_owned(),
        )
    }

    fn router(ready: &ReadyFlag) -> Router {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        // prometheus-client prints a labelled family only once it has a series.
        metrics.observe(
            "validate-deployments",
            crate::server::Outcome::Allowed,
            std::time::Duration::from_millis(1),
        );
        admin_router(ready.clone(), Arc::new(registry))
    }

    #[tokio::test]
    async fn healthz_answers_ok_even_before_ready() {
        let ready = ReadyFlag::default();
        let (status, _, body) = get_path(router(&ready), "/healthz").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
    }

    #[tokio::test]
    async fn readyz_follows_the_listener_and_waits_for_the_caches() {
        let (listening, synced) = (ReadyFlag::default(), ReadyFlag::default());
        let app = router(&listening.clone().and(synced.clone()));
        let before = get_path(app.clone(), "/readyz").await.0;
        assert_eq!(before, StatusCode::SERVICE_UNAVAILABLE, "nothing ready yet");
        listening.set(true);
        assert_eq!(
            get_path(app.clone(), "/readyz").await.0,
            StatusCode::SERVICE_UNAVAILABLE,
            "listening, caches not filled yet"
        );
        synced.set(true);
        assert_eq!(get_path(app.clone(), "/readyz").await.0, StatusCode::OK);
        // Draining at shutdown: the listener's flag goes down, and readiness with it.
        listening.set(false);
        assert_eq!(
            get_path(app, "/readyz").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[tokio::test]
    async fn metrics_are_openmetrics_text_with_serin_names() {
        let ready = ReadyFlag::default();
        let (status, content_type, body) = get_path(router(&ready), "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type.as_deref(), Some(OPENMETRICS_CONTENT_TYPE));
        for name in [
            "serin_admission_requests_total",
            "serin_admission_duration_seconds",
            "serin_tls_reloads_total",
        ] {
            assert!(body.contains(name), "{name} missing from:\n{body}");
        }
        assert!(body.ends_with("# EOF\n"));
    }
}
