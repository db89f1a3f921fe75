//! The CRD conversion webhook (`POST /convert`): the API server stores `v1beta1` and asks
//! Serin to translate objects read or written as `v1alpha1` (see [`crate::crd::v1alpha1`]
//! for how the versions differ).
//!
//! Conversion is typed: each kind has a pair of pure functions between its two spec types
//! (one file per kind). Objects keep their order and identity: only `apiVersion`, `spec` and
//! the carrier annotation [`BETA_FIELDS`] change; metadata and status are passed through.
//! What `v1alpha1` cannot hold is carried in that annotation, so both round trips are
//! lossless. An object that cannot be converted fails the whole review with a message naming
//! it; nothing panics. So does a review the API server would not send: another
//! ConversionReview version, no uid, an object without `metadata`.

mod analysis_template;
mod canary;
mod canary_policy;
#[cfg(test)]
mod tests;

use std::time::Instant;

use axum::extract::{DefaultBodyLimit, State};
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use kube::core::Status;
use kube::core::conversion::{ConversionRequest, ConversionResponse, ConversionReview};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::crd::GROUP;
use crate::crd::v1alpha1::BETA_FIELDS;
use crate::server::{Metrics, Outcome};

/// The two served versions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    V1alpha1,
    V1beta1,
}

impl Version {
    fn parse(api_version: &str) -> Result<Self, ConversionError> {
        match api_version
            .strip_prefix(GROUP)
            .and_then(|v| v.strip_prefix('/'))
        {
            Some("v1alpha1") => Ok(Version::V1alpha1),
            Some("v1beta1") => Ok(Version::V1beta1),
            _ => Err(ConversionError::Version(api_version.to_owned())),
        }
    }

    fn api_version(self) -> String {
        match self {
            Version::V1alpha1 => format!("{GROUP}/v1alpha1"),
            Version::V1beta1 => format!("{GROUP}/v1beta1"),
        }
    }
}

/// Why an object could not be converted.
#[derive(Debug, thiserror::Error)]
pub enum ConversionError {
    #[error("apiVersion {0:?} is not served; allowed: serin.dev/v1alpha1, serin.dev/v1beta1")]
    Version(String),
    #[error("kind {0:?} is not a Serin resource; allowed: Canary, AnalysisTemplate, CanaryPolicy")]
    Kind(String),
    #[error("not an object with apiVersion, kind and metadata")]
    NotAnObject,
    #[error("{field} {problem}")]
    Field {
        field: &'static str,
        problem: &'static str,
    },
    #[error("spec does not match {version}: {source}")]
    Spec {
        version: String,
        source: serde_json::Error,
    },
    #[error("annotation {BETA_FIELDS} does not hold what conversion wrote there: {0}")]
    Carried(serde_json::Error),
}

/// One kind's two spec shapes and the pure functions between them. `down(up(a, c)) == (a, c)`
/// and `up(down(b)) == b` for every valid value: the property tests check both.
pub(crate) trait Versions {
    type Alpha: Serialize + DeserializeOwned;
    type Beta: Serialize + DeserializeOwned;
    /// The `v1beta1` fields `v1alpha1` cannot hold.
    type Carried: Serialize + DeserializeOwned + Default + PartialEq;

    fn up(alpha: Self::Alpha, carried: Self::Carried) -> Self::Beta;
    fn down(beta: Self::Beta) -> (Self::Alpha, Self::Carried);
}

/// Answers a ConversionReview: every object converted, in order, or a Failure naming the first
/// one that could not be.
pub fn convert(mut request: ConversionRequest) -> ConversionResponse {
    let desired = std::mem::take(&mut request.desired_api_version);
    let objects = std::mem::take(&mut request.objects);
    let response = ConversionResponse::for_request(request);
    // The API server always sends a uid and checks the response echoes it: without one,
    // nothing we answer could be matched to a request.
    if response.uid.is_empty() {
        return response.failure(failure(NO_UID.into()));
    }
    let to = match Version::parse(&desired) {
        Ok(to) => to,
        Err(_) => {
            return response.failure(failure(format!(
                "desiredAPIVersion {desired:?} is not served; \
                 allowed: serin.dev/v1alpha1, serin.dev/v1beta1"
            )));
        }
    };
    let mut converted = Vec::with_capacity(objects.len());
    for (index, object) in objects.into_iter().enumerate() {
        let name = describe(&object);
        match has_metadata(&object).and_then(|()| convert_object(object, to)) {
            Ok(object) => converted.push(object),
            Err(e) => {
                return response.failure(failure(format!(
                    "cannot convert object {index} ({name}) to {desired}: {e}"
                )));
            }
        }
    }
    response.success(converted)
}

fn failure(message: String) -> Status {
    Status::failure(&message, "Invalid")
}

/// `Kind namespace/name` for messages.
fn describe(object: &Value) -> String {
    let text = |pointer: &str| object.pointer(pointer).and_then(Value::as_str);
    let kind = text("/kind").unwrap_or("object");
    match (text("/metadata/namespace"), text("/metadata/name")) {
        (Some(ns), Some(name)) => format!("{kind} {ns}/{name}"),
        (None, Some(name)) => format!("{kind} {name}"),
        _ => kind.to_owned(),
    }
}

/// The API server sends whole objects: one without `metadata` (name, uid, ...) did not come
/// from it, and passing it back would hand the API server an object it cannot store or serve.
/// Checked for the webhook only: `serin check` converts manifests that may leave it out.
fn has_metadata(object: &Value) -> Result<(), ConversionError> {
    let Value::Object(object) = object else {
        return Err(ConversionError::NotAnObject);
    };
    match object.get("metadata") {
        Some(Value::Object(_)) => Ok(()),
        None | Some(Value::Null) => Err(ConversionError::Field {
            field: "metadata",
            problem: "is missing",
        }),
        Some(_) => Err(ConversionError::Field {
            field: "metadata",
            problem: "is not an object",
        }),
    }
}

/// Converts one object to version `to`.
pub fn convert_object(object: Value, to: Version) -> Result<Value, ConversionError> {
    let Value::Object(object) = object else {
        return Err(ConversionError::NotAnObject);
    };
    let text = |field: &'static str| match object.get(field) {
        Some(Value::String(text)) => Ok(text.clone()),
        None | Some(Value::Null) => Err(ConversionError::Field {
            field,
            problem: "is missing",
        }),
        Some(_) => Err(ConversionError::Field {
            field,
            problem: "is not a string",
        }),
    };
    let api_version = text("apiVersion")?;
    let kind = text("kind")?;
    let from = Version::parse(&api_version)?;
    match kind.as_str() {
        "Canary" => between::<canary::CanaryVersions>(object, from, to),
        "AnalysisTemplate" => between::<analysis_template::TemplateVersions>(object, from, to),
        "CanaryPolicy" => between::<canary_policy::PolicyVersions>(object, from, to),
        _ => Err(ConversionError::Kind(kind)),
    }
}

fn between<K: Versions>(
    mut object: Map<String, Value>,
    from: Version,
    to: Version,
) -> Result<Value, ConversionError> {
    if from == to {
        return Ok(Value::Object(object));
    }
    let spec = object
        .remove("spec")
        .unwrap_or_else(|| Value::Object(Map::new()));
    let spec_error = |version: Version| {
        move |source| ConversionError::Spec {
            version: version.api_version(),
            source,
        }
    };
    let spec = match to {
        Version::V1beta1 => {
            let alpha: K::Alpha = serde_json::from_value(spec).map_err(spec_error(from))?;
            let carried: K::Carried = match take_annotation(&mut object) {
                Some(text) => serde_json::from_str(&text).map_err(ConversionError::Carried)?,
                None => K::Carried::default(),
            };
            serde_json::to_value(K::up(alpha, carried)).map_err(spec_error(to))?
        }
        Version::V1alpha1 => {
            let beta: K::Beta = serde_json::from_value(spec).map_err(spec_error(from))?;
            let (alpha, carried) = K::down(beta);
            take_annotation(&mut object);
            if carried != K::Carried::default() {
                let text = serde_json::to_string(&carried).map_err(ConversionError::Carried)?;
                put_annotation(&mut object, text);
            }
            serde_json::to_value(alpha).map_err(spec_error(to))?
        }
    };
    object.insert("apiVersion".into(), Value::String(to.api_version()));
    object.insert("spec".into(), spec);
    Ok(Value::Object(object))
}

/// Removes the carrier annotation (and an annotation map it leaves empty).
fn take_annotation(object: &mut Map<String, Value>) -> Option<String> {
    let metadata = object.get_mut("metadata")?.as_object_mut()?;
    let annotations = metadata.get_mut("annotations")?.as_object_mut()?;
    let taken = annotations.remove(BETA_FIELDS)?;
    if annotations.is_empty() {
        metadata.remove("annotations");
    }
    taken.as_str().map(str::to_owned)
}

fn put_annotation(object: &mut Map<String, Value>, text: String) {
    let metadata = object
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Some(metadata) = metadata.as_object_mut() {
        let annotations = metadata
            .entry("annotations")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(annotations) = annotations.as_object_mut() {
            annotations.insert(BETA_FIELDS.to_owned(), Value::String(text));
        }
    }
}

/// The `/convert` route, to be served over TLS beside the admission webhooks.
pub fn router(metrics: Metrics) -> Router {
    Router::new()
        .route("/convert", post(handle))
        .layer(DefaultBodyLimit::max(crate::server::MAX_BODY_BYTES))
        .with_state(metrics)
}

const NO_UID: &str = "the ConversionReview has no request.uid";

/// The one ConversionReview version the CRDs ask for (`conversionReviewVersions: ["v1"]`).
const REVIEW_API_VERSION: &str = "apiextensions.k8s.io/v1";
const REVIEW_KIND: &str = "ConversionReview";

/// Reads a ConversionReview; an `Err` is the Failure to answer with (the uid echoed when
/// one was read).
fn decode(body: &[u8]) -> Result<ConversionRequest, Box<ConversionResponse>> {
    let invalid = |reason: String| {
        Box::new(ConversionResponse::invalid(failure(format!(
            "not a {REVIEW_KIND} {REVIEW_API_VERSION} with a request: {reason}"
        ))))
    };
    let review =
        serde_json::from_slice::<ConversionReview>(body).map_err(|e| invalid(e.to_string()))?;
    let types = review.types.clone();
    let request = ConversionRequest::from_review(review).map_err(|e| invalid(e.to_string()))?;
    if types.kind != REVIEW_KIND || types.api_version != REVIEW_API_VERSION {
        let mut response = ConversionResponse::for_request(request).failure(failure(format!(
            "expected a {REVIEW_KIND} {REVIEW_API_VERSION}, got kind {:?} apiVersion {:?}",
            types.kind, types.api_version
        )));
        // Answer in the one version we speak, not the one we refused.
        response.types = None;
        return Err(Box::new(response));
    }
    if request.uid.is_empty() {
        let response = ConversionResponse::for_request(request).failure(failure(NO_UID.into()));
        return Err(Box::new(response));
    }
    Ok(request)
}

async fn handle(State(metrics): State<Metrics>, body: Bytes) -> Json<ConversionReview> {
    let started = Instant::now();
    let (response, outcome) = match decode(&body) {
        Ok(request) => {
            let response = convert(request);
            let outcome = match response.result.status {
                Some(kube::core::response::StatusSummary::Success) => Outcome::Allowed,
                _ => Outcome::Denied,
            };
            (response, outcome)
        }
        Err(refusal) => {
            tracing::warn!(error = %refusal.result.message, "invalid conversion review");
            (*refusal, Outcome::Error)
        }
    };
    metrics.observe("convert", outcome, started.elapsed());
    Json(response.into_review())
}
