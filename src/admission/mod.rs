//! The admission webhooks for Deployments: `POST /validate/deployments` refuses bad canary
//! configuration with every mistake named; `POST /mutate/deployments` makes the defaults
//! explicit and keeps an idle canary idle. Both call [`crate::spec`], the same functions
//! `serin check` and the controller use, so admission and runtime cannot disagree.
//!
//! The decisions are pure functions of the request ([`deployments`]); this module only
//! decodes, times and encodes.

pub mod deployments;
pub mod review;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionResponse, AdmissionReview};

use crate::server::{Metrics, Outcome};

/// The username Serin's own writes carry; they pass the mutating webhook untouched.
pub const DEFAULT_SERVICE_ACCOUNT: &str = "system:serviceaccount:serin-system:serin";

/// What the handlers share.
#[derive(Clone)]
pub struct AdmissionState {
    pub metrics: Metrics,
    /// Username of Serin's own service account (`system:serviceaccount:NS:NAME`).
    pub serin_user: Arc<str>,
}

/// The webhook routes, to be served over TLS.
pub fn router(state: AdmissionState) -> Router {
    Router::new()
        .route("/validate/deployments", post(validate_deployments))
        .route("/mutate/deployments", post(mutate_deployments))
        .with_state(state)
}

async fn validate_deployments(
    State(state): State<AdmissionState>,
    body: Bytes,
) -> Json<AdmissionReview<DynamicObject>> {
    review("validate-deployments", &state, &body, |req| {
        deployments::validate(req)
    })
}

async fn mutate_deployments(
    State(state): State<AdmissionState>,
    body: Bytes,
) -> Json<AdmissionReview<DynamicObject>> {
    let serin_user = state.serin_user.clone();
    review("mutate-deployments", &state, &body, |req| {
        deployments::mutate(req, &serin_user)
    })
}

/// Decodes a review, decides, records the outcome. Always answers with an AdmissionReview
/// (HTTP 200) that echoes the request's uid when it could be read.
fn review(
    webhook: &str,
    state: &AdmissionState,
    body: &[u8],
    decide: impl FnOnce(&review::DeploymentRequest) -> AdmissionResponse,
) -> Json<AdmissionReview<DynamicObject>> {
    let started = Instant::now();
    let (response, outcome) = match review::decode_deployment(body) {
        Ok(req) => {
            let response = decide(&req);
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
