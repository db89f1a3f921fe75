//! The admission webhooks for Deployments: `POST /validate/deployments` refuses bad canary
//! configuration with every mistake named; `POST /mutate/deployments` makes the defaults
//! explicit and keeps an idle canary idle. Both call [`crate::spec`], the same functions
//! `serin check` and the controller use, so admission and runtime cannot disagree.
//!
//! The decisions are pure functions of the request ([`deployments`]); this module decodes,
//! times and encodes, and after an allowed update that opts a Deployment in, creates the
//! release machinery that can exist before the primary is Ready
//! ([`crate::controller::machinery::inject`]), listing it in the response's warnings.
//!
//! `POST /validate/managed` protects the objects Serin manages from everyone else's updates
//! and deletes ([`protect`]).

pub mod daemonsets;
pub mod deployments;
pub mod protect;
pub mod resources;
pub mod review;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, State};
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};

use crate::crd::AnalysisTemplateSpec;
use crate::crd::CanaryPolicySpec;
use crate::policy::PolicyIndex;
use crate::server::{Metrics, Outcome};
use crate::spec::Workload;
use resources::Checked as _;

/// The username Serin's own writes carry; they pass the mutating webhook untouched.
pub const DEFAULT_SERVICE_ACCOUNT: &str = "system:serviceaccount:serin-system:serin";

/// What the handlers share.
#[derive(Clone)]
pub struct AdmissionState {
    pub metrics: Metrics,
    /// Username of Serin's own service account (`system:serviceaccount:NS:NAME`).
    pub serin_user: Arc<str>,
    /// The cluster access injection uses; `None` serves the decisions only.
    pub injector: Option<Arc<crate::controller::machinery::Injector>>,
    /// The cluster's CanaryPolicies; `None` (no cluster access) applies none.
    pub policies: Option<Arc<PolicyIndex>>,
}

/// Injection must fit well inside the API server's webhook timeout (5 s in the manifests);
/// past it the controller does the same work a moment later.
const INJECTION_BUDGET: std::time::Duration = std::time::Duration::from_secs(2);

/// The webhook routes, to be served over TLS.
pub fn router(state: AdmissionState) -> Router {
    Router::new()
        .route("/validate/deployments", post(validate_deployments))
        .route("/mutate/deployments", post(mutate_deployments))
        .route("/validate/daemonsets", post(validate_daemonsets))
        .route("/mutate/daemonsets", post(mutate_daemonsets))
        .route(
            "/validate/analysistemplates",
            post(validate_analysis_templates),
        )
        .route(
            "/validate/canarypolicies",
            post(validate_resource::<CanaryPolicySpec>),
        )
        .route("/validate/managed", post(validate_managed))
        // The API server sends at most 3 MiB; axum's own default (2 MB) would refuse less.
        .layer(DefaultBodyLimit::max(crate::server::MAX_BODY_BYTES))
        .with_state(state)
}

async fn validate_deployments(
    State(state): State<AdmissionState>,
    body: Bytes,
) -> Json<AdmissionReview<DynamicObject>> {
    validate_workload(
        "validate-deployments",
        &state,
        &body,
        review::decode_deployment,
    )
    .await
}

/// DaemonSets: the same validation as Deployments ([`deployments::validate`] over
/// [`crate::spec::Workload`]).
async fn validate_daemonsets(
    State(state): State<AdmissionState>,
    body: Bytes,
) -> Json<AdmissionReview<DynamicObject>> {
    validate_workload(
        "validate-daemonsets",
        &state,
        &body,
        review::decode_daemonset,
    )
    .await
}

/// [`deployments::validate`] of a workload under the policies covering it.
async fn validate_workload<W: Workload + kube::Resource>(
    webhook: &str,
    state: &AdmissionState,
    body: &[u8],
    decode: fn(&[u8]) -> Result<AdmissionRequest<W>, review::Invalid>,
) -> Json<AdmissionReview<DynamicObject>> {
    review(
        webhook,
        state,
        body,
        decode,
        async |req| match policy_view(state, req).await {
            Ok(view) => deployments::validate(req, &view),
            Err(refusal) => AdmissionResponse::from(req).deny(refusal),
        },
    )
    .await
}

/// DaemonSets: [`daemonsets::mutate`]. Nothing is injected at admission: the controller
/// creates a DaemonSet's primary, Services and Canary on its first reconcile.
async fn mutate_daemonsets(
    State(state): State<AdmissionState>,
    body: Bytes,
) -> Json<AdmissionReview<DynamicObject>> {
    let serin_user = state.serin_user.clone();
    let decode = review::decode_daemonset;
    review("mutate-daemonsets", &state, &body, decode, async |req| {
        let policies = covering_policies(&state, req).await.unwrap_or_default();
        let defaults = crate::policy::combined_defaults(&policies);
        daemonsets::mutate(req, &serin_user, &defaults)
    })
    .await
}

async fn validate_managed(
    State(state): State<AdmissionState>,
    body: Bytes,
) -> Json<AdmissionReview<DynamicObject>> {
    let serin_user = state.serin_user.clone();
    let client = state.injector.as_ref().map(|ctx| ctx.client().clone());
    let decode = review::decode_object;
    review("validate-managed", &state, &body, decode, async |req| {
        protect::review(req, &serin_user, client.as_ref()).await
    })
    .await
}

async fn mutate_deployments(
    State(state): State<AdmissionState>,
    body: Bytes,
) -> Json<AdmissionReview<DynamicObject>> {
    let serin_user = state.serin_user.clone();
    let injector = state.injector.clone();
    let decode = review::decode_deployment;
    review("mutate-deployments", &state, &body, decode, async |req| {
        // Without the policies (not read yet) no policy default is filled; the validating
        // webhook refuses such a write anyway.
        let policies = covering_policies(&state, req).await.unwrap_or_default();
        let defaults = crate::policy::combined_defaults(&policies);
        let mut response = deployments::mutate(req, &serin_user, &defaults);
        if let Some(ctx) = injector.filter(|_| response.allowed && opts_in(req, &serin_user)) {
            response.warnings = Some(inject(&ctx, req).await);
        }
        response
    })
    .await
}

/// The policies covering the Deployment and, for an opted-in one naming a template, that
/// template. Serin's own writes are not subject to policies. `Err` is a refusal: a policy
/// that could not be read must not be bypassed.
async fn policy_view<W: Workload + kube::Resource>(
    state: &AdmissionState,
    req: &AdmissionRequest<W>,
) -> Result<deployments::PolicyView, String> {
    let (Some(index), Some(deploy)) = (&state.policies, &req.object) else {
        return Ok(Default::default());
    };
    if req.user_info.username.as_deref() == Some(&*state.serin_user) {
        return Ok(Default::default());
    }
    let namespace = req.namespace.as_deref().unwrap_or_default();
    let policies = covering_policies(state, req).await?;
    let defaults = crate::policy::combined_defaults(&policies);
    let canary = match deployments::read(deploy, &defaults) {
        Ok(crate::spec::OptIn::Enabled(canary)) => Some(canary),
        _ => None,
    };
    let names = match canary.as_ref().filter(|c| claims_names(req, c)) {
        Some(canary) => {
            let name = Workload::meta(deploy).name.as_deref().unwrap_or(&req.name);
            let kind = Workload::kind(deploy);
            Some(index.names(namespace, kind, name, &canary.service).await?)
        }
        None => None,
    };
    let named = canary.and_then(|c| c.analysis);
    let template = match named {
        None => deployments::Template::NotLooked,
        Some(name) => match index.template(namespace, &name).await {
            Ok(Some(spec)) => deployments::Template::Found(spec),
            Ok(None) => deployments::Template::Missing,
            Err(e) => {
                return Err(format!(
                    "serin could not read AnalysisTemplate {name:?} ({e}); retry"
                ));
            }
        },
    };
    Ok(deployments::PolicyView {
        policies,
        template,
        names,
    })
}

/// Whether the write makes the Deployment take names it did not hold: it opts in, or changes
/// its apex Service. An update that keeps them (a new image, a scale) is not looked up again:
/// the names are Serin's own by then, and a Deployment already released is not refused for a
/// rival that came later.
fn claims_names<W: Workload + kube::Resource>(
    req: &AdmissionRequest<W>,
    canary: &crate::spec::CanarySpec,
) -> bool {
    let before = req
        .old_object
        .as_ref()
        .map(|old| crate::spec::read_workload(old));
    !matches!(
        before,
        Some(Ok(crate::spec::OptIn::Enabled(old))) if old.service == canary.service
    )
}

/// The policies covering the Deployment (none for Serin's own writes, or without cluster
/// access). The mutating webhook needs only these, not the template [`policy_view`] reads.
async fn covering_policies<W: Workload + kube::Resource>(
    state: &AdmissionState,
    req: &AdmissionRequest<W>,
) -> Result<Vec<crate::policy::NamedPolicy>, String> {
    let (Some(index), Some(deploy)) = (&state.policies, &req.object) else {
        return Ok(Vec::new());
    };
    if req.user_info.username.as_deref() == Some(&*state.serin_user) {
        return Ok(Vec::new());
    }
    let namespace = req.namespace.as_deref().unwrap_or_default();
    let no_labels = Default::default();
    let labels = Workload::meta(deploy).labels.as_ref().unwrap_or(&no_labels);
    index
        .covering(namespace, labels)
        .await
        .map_err(|e| e.to_string())
}

async fn validate_resource<K: resources::Checked>(
    State(state): State<AdmissionState>,
    body: Bytes,
) -> Json<AdmissionReview<DynamicObject>> {
    review(
        K::WEBHOOK,
        &state,
        &body,
        resources::decode::<K>,
        async |req| resources::validate::<K>(req),
    )
    .await
}

/// AnalysisTemplates: [`resources::validate`], and the CanaryPolicies of the Deployments
/// that name the template.
async fn validate_analysis_templates(
    State(state): State<AdmissionState>,
    body: Bytes,
) -> Json<AdmissionReview<DynamicObject>> {
    review(
        AnalysisTemplateSpec::WEBHOOK,
        &state,
        &body,
        resources::decode::<AnalysisTemplateSpec>,
        async |req| resources::validate_template(req, state.policies.as_deref()).await,
    )
    .await
}

/// A user's (not a dry-run) update that turns an existing Deployment into an opted-in one.
/// On CREATE the Deployment has no uid yet to own anything: the controller does it all.
fn opts_in(req: &review::DeploymentRequest, serin_user: &str) -> bool {
    let labelled = |d: &k8s_openapi::api::apps::v1::Deployment| {
        d.metadata
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key(crate::spec::MANAGED_LABEL))
    };
    req.operation == kube::core::admission::Operation::Update
        && !req.dry_run
        && req.user_info.username.as_deref() != Some(serin_user)
        && req.old_object.as_ref().is_some_and(|old| !labelled(old))
        && req.object.as_ref().is_some_and(|d| {
            matches!(
                crate::spec::read_deployment(d),
                Ok(crate::spec::OptIn::Enabled(_))
            )
        })
}

/// Creates what can be created now; a failure only delays it to the controller.
async fn inject(
    injector: &crate::controller::machinery::Injector,
    req: &review::DeploymentRequest,
) -> Vec<String> {
    let Some(deploy) = req.object.as_ref() else {
        return Vec::new();
    };
    match tokio::time::timeout(
        INJECTION_BUDGET,
        crate::controller::machinery::inject(injector, deploy),
    )
    .await
    {
        Ok(Ok(created)) if created.is_empty() => Vec::new(),
        Ok(Ok(created)) => vec![format!("serin created {}", created.join(", "))],
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "injection failed; the controller will create the objects");
            vec![format!(
                "serin could not create the release objects yet ({e}); its controller will"
            )]
        }
        Err(_) => vec![
            "serin: creating the release objects took too long; its controller will finish".into(),
        ],
    }
}

/// Decodes a review, decides, records the outcome. Always answers with an AdmissionReview
/// (HTTP 200) that echoes the request's uid when it could be read.
async fn review<K: kube::Resource>(
    webhook: &str,
    state: &AdmissionState,
    body: &[u8],
    decode: fn(&[u8]) -> Result<AdmissionRequest<K>, review::Invalid>,
    decide: impl AsyncFnOnce(&AdmissionRequest<K>) -> AdmissionResponse,
) -> Json<AdmissionReview<DynamicObject>> {
    let started = Instant::now();
    let (response, outcome) = match decode(body) {
        Ok(req) => {
            let response = decide(&req).await;
            let outcome = if response.allowed {
                Outcome::Allowed
            } else {
                Outcome::Denied
            };
            (response, outcome)
        }
        Err(invalid) => {
            tracing::warn!(webhook, reason = %invalid.reason, "invalid admission review");
            (invalid.into_response(), Outcome::Error)
        }
    };
    state.metrics.observe(webhook, outcome, started.elapsed());
    Json(response.into_review())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use prometheus_client::registry::Registry;
    use serde_json::{Value, json};
    use tower::ServiceExt;

    use super::review::fixtures;

    fn app() -> (Router, Arc<Registry>) {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        let state = AdmissionState {
            metrics,
            serin_user: DEFAULT_SERVICE_ACCOUNT.into(),
            injector: None,
            policies: None,
        };
        (router(state), Arc::new(registry))
    }

    async fn post(app: Router, path: &str, body: impl Into<Body>) -> (StatusCode, Value) {
        let request = Request::post(path)
            .header("content-type", "application/json")
            .body(body.into())
            .expect("request");
        let response = app.oneshot(request).await.expect("router answers");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, value)
    }

    fn review(annotations: Value) -> String {
        fixtures::review("CREATE", "alice", fixtures::deployment(annotations), None).to_string()
    }

    fn metrics_text(registry: &Registry) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).expect("encode");
        text
    }

    #[tokio::test]
    async fn validate_answers_an_admission_review_echoing_the_uid() {
        let (app, registry) = app();
        let (status, body) = post(
            app,
            "/validate/deployments",
            review(json!({"serin.dev/enabled": "true"})),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["kind"], "AdmissionReview");
        assert_eq!(body["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(body["response"]["uid"], fixtures::UID);
        assert_eq!(body["response"]["allowed"], true);
        let text = metrics_text(&registry);
        assert!(text.contains("outcome=\"allowed\""), "{text}");
    }

    #[tokio::test]
    async fn validate_refuses_bad_configuration_with_http_200() {
        let (app, registry) = app();
        let (status, body) = post(
            app,
            "/validate/deployments",
            review(json!({"serin.dev/enabled": "maybe"})),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["response"]["allowed"], false);
        let message = body["response"]["status"]["message"]
            .as_str()
            .unwrap_or_default();
        assert!(message.contains("serin.dev/enabled: \"maybe\""), "{body}");
        assert!(metrics_text(&registry).contains("outcome=\"denied\""));
    }

    #[tokio::test]
    async fn mutate_answers_with_a_json_patch() {
        let (app, _) = app();
        let (status, body) = post(
            app,
            "/mutate/deployments",
            review(json!({"serin.dev/enabled": "true"})),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["response"]["allowed"], true);
        assert_eq!(body["response"]["patchType"], "JSONPatch");
        // kube-core sends the patch bytes as a JSON array of numbers, which the API server's
        // decoder accepts for a []byte field just like base64.
        let bytes: Vec<u8> =
            serde_json::from_value(body["response"]["patch"].clone()).expect("patch bytes");
        let patch: json_patch::Patch = serde_json::from_slice(&bytes).expect("a JSON Patch");
        assert!(!patch.0.is_empty());
    }

    /// A review of a DaemonSet `web` (the Deployment fixture's pod template) by `alice`.
    fn daemonset_review(annotations: Value) -> String {
        let mut object = fixtures::deployment(annotations);
        object["kind"] = json!("DaemonSet");
        if let Some(spec) = object["spec"].as_object_mut() {
            spec.remove("replicas");
        }
        let mut review = fixtures::review("CREATE", "alice", object, None);
        review["request"]["kind"]["kind"] = json!("DaemonSet");
        review["request"]["resource"]["resource"] = json!("daemonsets");
        review.to_string()
    }

    #[tokio::test]
    async fn daemonsets_are_validated_and_mutated_on_their_own_routes() {
        let (app, _) = app();
        let enabled = json!({"serin.dev/enabled": "true"});
        let (status, body) =
            post(app.clone(), "/mutate/daemonsets", daemonset_review(enabled)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["response"]["allowed"], true, "{body}");
        let bytes: Vec<u8> =
            serde_json::from_value(body["response"]["patch"].clone()).expect("patch bytes");
        let patch = String::from_utf8(bytes).expect("utf-8");
        assert!(
            patch.contains("/spec/template/spec/nodeSelector"),
            "{patch}"
        );
        assert!(!patch.contains("desired-replicas"), "{patch}");

        let replicas = json!({"serin.dev/enabled": "true", "serin.dev/desired-replicas": "2"});
        let (_, body) = post(
            app.clone(),
            "/validate/daemonsets",
            daemonset_review(replicas),
        )
        .await;
        assert_eq!(body["response"]["allowed"], false, "{body}");
        let message = body["response"]["status"]["message"].as_str().unwrap_or("");
        assert!(message.contains("serin.dev/desired-replicas"), "{message}");

        // A Deployment's review sent to the DaemonSet route is refused naming both kinds.
        let deployment = review(json!({"serin.dev/enabled": "true"}));
        let (status, body) = post(app, "/validate/daemonsets", deployment).await;
        assert_eq!(status, StatusCode::OK);
        let message = body["response"]["status"]["message"].as_str().unwrap_or("");
        assert!(
            message.contains("apps/v1 DaemonSets, not apps/v1 Deployment"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn malformed_bodies_get_a_refusing_review_not_an_error_status() {
        for body in [
            "",
            "null",
            "[]",
            "{\"kind\":\"AdmissionReview\"}",
            "\u{0}\u{1}garbage",
        ] {
            let (app, registry) = app();
            let (status, review) = post(app, "/validate/deployments", body).await;
            assert_eq!(status, StatusCode::OK, "body {body:?}");
            assert_eq!(
                review["response"]["allowed"], false,
                "body {body:?}: {review}"
            );
            assert!(
                review["response"]["status"]["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty())
            );
            assert!(metrics_text(&registry).contains("outcome=\"error\""));
        }
    }

    #[tokio::test]
    async fn reviews_of_another_kind_or_version_or_with_malformed_fields_are_refused_with_the_uid()
    {
        let good: Value = serde_json::from_str(&review(json!({}))).expect("json");
        let mut wrong_version = good.clone();
        wrong_version["apiVersion"] = json!("admission.k8s.io/v1beta1");
        let mut wrong_kind = good.clone();
        wrong_kind["request"]["kind"] = json!({"group": "", "version": "v1", "kind": "Pod"});
        let mut malformed_field = good.clone();
        malformed_field["request"]["object"]["spec"]["replicas"] = json!("three");
        for (case, body, expected) in [
            ("version", wrong_version, "admission.k8s.io/v1"),
            ("kind", wrong_kind, "apps/v1 Deployments"),
            ("fields", malformed_field, "request.object"),
        ] {
            let (app, _) = app();
            let (status, review) = post(app, "/validate/deployments", body.to_string()).await;
            assert_eq!(status, StatusCode::OK, "{case}");
            assert_eq!(review["response"]["allowed"], false, "{case}");
            assert_eq!(review["response"]["uid"], fixtures::UID, "{case}");
            let message = review["response"]["status"]["message"]
                .as_str()
                .unwrap_or_default();
            assert!(message.contains(expected), "{case}: {message}");
        }
    }

    #[tokio::test]
    async fn mutate_refuses_an_update_without_old_object_instead_of_treating_it_as_a_create() {
        let deploy = fixtures::deployment(json!({"serin.dev/enabled": "true"}));
        let body = fixtures::review("UPDATE", "alice", deploy, None);
        let (app, registry) = app();
        let (status, review) = post(app, "/mutate/deployments", body.to_string()).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(review["response"]["uid"], fixtures::UID);
        assert_eq!(review["response"]["allowed"], false, "{review}");
        assert!(review["response"]["patch"].is_null(), "{review}");
        assert!(message(&review).contains("oldObject"), "{review}");
        assert!(metrics_text(&registry).contains("outcome=\"error\""));
    }

    #[tokio::test]
    async fn bodies_over_the_api_servers_limit_are_refused_with_413() {
        let (app, _) = app();
        let padded = " ".repeat(crate::server::MAX_BODY_BYTES + 1);
        let (status, _) = post(app.clone(), "/validate/deployments", padded).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        // Up to the limit is read (2.5 MB of valid JSON: axum's 2 MB default would refuse it).
        let body =
            review(json!({"serin.dev/enabled": "true", "x.example/pad": "p".repeat(2_500_000)}));
        let (status, review) = post(app, "/validate/deployments", body).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(review["response"]["allowed"], true);
    }

    fn message(review: &Value) -> &str {
        review["response"]["status"]["message"]
            .as_str()
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn managed_objects_are_protected_from_people_with_the_owner_named() {
        for operation in ["UPDATE", "DELETE"] {
            let (app, registry) = app();
            let body = fixtures::traffic_split_review(operation, "alice", Some("web"));
            let (status, review) = post(app, "/validate/managed", body.to_string()).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(review["response"]["uid"], fixtures::UID);
            assert_eq!(
                review["response"]["allowed"], false,
                "{operation}: {review}"
            );
            // Without cluster access the owner cannot be read: refused, and the reason said.
            for expected in [
                "TrafficSplit \"web\" is managed by Serin for Deployment \"web\"",
                "serin.dev/enabled",
                "without cluster access",
            ] {
                assert!(message(&review).contains(expected), "{operation}: {review}");
            }
            assert!(metrics_text(&registry).contains("webhook=\"validate-managed\""));
        }
    }

    #[tokio::test]
    async fn serin_kubernetes_controllers_status_updates_and_unlabelled_objects_pass() {
        let mut status_update = fixtures::traffic_split_review("UPDATE", "alice", Some("web"));
        status_update["request"]["subResource"] = json!("status");
        let gc = "system:serviceaccount:kube-system:generic-garbage-collector";
        for (case, body) in [
            (
                "serin",
                fixtures::traffic_split_review("DELETE", DEFAULT_SERVICE_ACCOUNT, Some("web")),
            ),
            (
                "garbage collector",
                fixtures::traffic_split_review("DELETE", gc, Some("web")),
            ),
            ("status", status_update),
            (
                "unlabelled",
                fixtures::traffic_split_review("DELETE", "alice", None),
            ),
        ] {
            let (app, _) = app();
            let (status, review) = post(app, "/validate/managed", body.to_string()).await;
            assert_eq!(status, StatusCode::OK, "{case}");
            assert_eq!(review["response"]["allowed"], true, "{case}: {review}");
            assert_eq!(review["response"]["uid"], fixtures::UID, "{case}");
        }
    }

    #[tokio::test]
    async fn malformed_reviews_of_managed_objects_are_refused_with_the_uid() {
        let good = fixtures::traffic_split_review("DELETE", "alice", Some("web"));
        let mut wrong_version = good.clone();
        wrong_version["apiVersion"] = json!("admission.k8s.io/v1beta1");
        let mut bad_metadata = good.clone();
        bad_metadata["request"]["oldObject"]["metadata"]["labels"] = json!(["not", "a", "map"]);
        let mut no_operation = good.clone();
        no_operation["request"]["operation"] = json!("PATCH");
        for (case, body) in [
            ("version", wrong_version),
            ("metadata", bad_metadata),
            ("operation", no_operation),
        ] {
            let (app, registry) = app();
            let (status, review) = post(app, "/validate/managed", body.to_string()).await;
            assert_eq!(status, StatusCode::OK, "{case}");
            assert_eq!(review["response"]["allowed"], false, "{case}");
            assert_eq!(review["response"]["uid"], fixtures::UID, "{case}");
            assert!(!message(&review).is_empty(), "{case}");
            assert!(
                metrics_text(&registry).contains("outcome=\"error\""),
                "{case}"
            );
        }
        let (app, _) = app();
        let (status, review) = post(app, "/validate/managed", "\u{0}garbage").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(review["response"]["allowed"], false);
    }

    #[tokio::test]
    async fn without_cluster_access_scaling_is_allowed_as_nothing_says_the_target_is_managed() {
        let mut body = fixtures::traffic_split_review("UPDATE", "alice", None);
        let scale = json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
                           "metadata": {"name": "web-primary", "namespace": "shop"},
                           "spec": {"replicas": 5}});
        let request = &mut body["request"];
        request["kind"] = json!({"group": "autoscaling", "version": "v1", "kind": "Scale"});
        request["resource"] = json!({"group": "apps", "version": "v1", "resource": "deployments"});
        request["subResource"] = json!("scale");
        request["name"] = json!("web-primary");
        request["object"] = scale.clone();
        request["oldObject"] = scale;
        let (app, _) = app();
        let (status, review) = post(app, "/validate/managed", body.to_string()).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(review["response"]["allowed"], true, "{review}");
    }

    #[test]
    fn names_are_looked_up_when_an_update_opts_in_or_changes_the_service_only() {
        let deployment = |annotations: Value| fixtures::deployment(annotations);
        let opted_in = json!({"serin.dev/enabled": "true", "serin.dev/service": "web"});
        let elsewhere = json!({"serin.dev/enabled": "true", "serin.dev/service": "web-two"});
        let claims = |operation: &str, new: &Value, old: Option<Value>| {
            let body = fixtures::review(operation, "alice", deployment(new.clone()), old);
            let req = review::decode_deployment(body.to_string().as_bytes()).expect("decodes");
            let canary = match crate::spec::read_deployment(req.object.as_ref().expect("object")) {
                Ok(crate::spec::OptIn::Enabled(canary)) => canary,
                other => panic!("opted in: {other:?}"),
            };
            claims_names(&req, &canary)
        };
        assert!(claims("CREATE", &opted_in, None));
        assert!(claims("UPDATE", &opted_in, Some(deployment(json!({})))));
        assert!(claims(
            "UPDATE",
            &elsewhere,
            Some(deployment(opted_in.clone()))
        ));
        assert!(!claims(
            "UPDATE",
            &opted_in,
            Some(deployment(opted_in.clone()))
        ));
    }

    #[tokio::test]
    async fn unknown_paths_and_methods_are_client_errors() {
        let (app, _) = app();
        let (status, _) = post(app.clone(), "/validate/pods", "{}").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let request = Request::get("/validate/deployments")
            .body(Body::empty())
            .expect("request");
        let status = app.oneshot(request).await.expect("answers").status();
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    }
}
