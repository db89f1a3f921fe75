//! Decoding AdmissionReview bodies without trusting them: anything malformed becomes an
//! `AdmissionResponse` that refuses with a reason (and the request's uid when it could be
//! read), never a panic or a 5xx. Malformed includes a review missing what the API server
//! always sends: a uid, `object` on CREATE and UPDATE, `oldObject` on UPDATE.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube::core::{DynamicObject, TypeMeta};
use serde_json::Value;

/// A decoded review of an `apps/v1` Deployment.
pub type DeploymentRequest = AdmissionRequest<Deployment>;

/// A decoded review of an object of any kind (the objects Serin manages: Deployments, their
/// scale, Services, ConfigMaps, Secrets, HPAs, TrafficSplits).
pub type ObjectRequest = AdmissionRequest<DynamicObject>;

const REVIEW_API_VERSION: &str = "admission.k8s.io/v1";

/// Why a review could not be read, and the uid to echo when it was found.
#[derive(Debug, Clone, PartialEq)]
pub struct Invalid {
    pub uid: Option<String>,
    pub reason: String,
}

impl Invalid {
    /// The refusal to send back (HTTP 200, `allowed: false`, the reason as message).
    pub fn into_response(self) -> AdmissionResponse {
        let mut response = AdmissionResponse::invalid(self.reason);
        response.types = TypeMeta {
            api_version: REVIEW_API_VERSION.into(),
            kind: "AdmissionReview".into(),
        };
        response.uid = self.uid.unwrap_or_default();
        response
    }
}

/// The fast path of the typed decoders: a well-formed review of an `apps/v1` `kind`, parsed
/// straight into the typed request in one pass; `None` when anything is off (the slow paths
/// then say what).
fn well_formed<K>(body: &[u8], kind: &str) -> Option<AdmissionRequest<K>>
where
    K: kube::Resource + serde::de::DeserializeOwned,
{
    let review = serde_json::from_slice::<AdmissionReview<K>>(body).ok()?;
    let api_version_ok =
        review.types.kind == "AdmissionReview" && review.types.api_version == REVIEW_API_VERSION;
    let request: AdmissionRequest<K> = review.try_into().ok()?;
    let gvk = &request.kind;
    let is_kind = gvk.group == "apps" && gvk.version == "v1" && gvk.kind == kind;
    (api_version_ok && is_kind && missing_part(&request).is_none()).then_some(request)
}

/// Decodes a review of an `apps/v1` Deployment, or says why it cannot be read.
pub fn decode_deployment(body: &[u8]) -> Result<DeploymentRequest, Invalid> {
    // Fast path: a well-formed review parses straight into the typed request, in one pass.
    // Only when that fails do we take the slow path, which explains why.
    if let Some(request) = well_formed::<Deployment>(body, "Deployment") {
        return Ok(request);
    }
    explain(body)
}

/// Decodes a review of an `apps/v1` DaemonSet, or says why it cannot be read: the envelope
/// as for any object, then the kind, then the object itself.
pub fn decode_daemonset(body: &[u8]) -> Result<AdmissionRequest<DaemonSet>, Invalid> {
    if let Some(request) = well_formed::<DaemonSet>(body, "DaemonSet") {
        return Ok(request);
    }
    let request = decode_object(body)?;
    let refuse = |reason: String| invalid(Some(request.uid.clone()), reason);
    let gvk = &request.kind;
    if gvk.group != "apps" || gvk.version != "v1" || gvk.kind != "DaemonSet" {
        return Err(refuse(format!(
            "this webhook reviews apps/v1 DaemonSets, not {}/{} {}",
            gvk.group, gvk.version, gvk.kind
        )));
    }
    Err(refuse(
        "malformed AdmissionReview: request.object or request.oldObject is not an apps/v1 \
         DaemonSet"
            .into(),
    ))
}

/// Decodes a review of an object of any kind, or says why it cannot be read. Only the
/// envelope is checked: the objects keep whatever fields they have.
pub fn decode_object(body: &[u8]) -> Result<ObjectRequest, Invalid> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| invalid(None, format!("the request body is not JSON: {e}")))?;
    let uid = value
        .pointer("/request/uid")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let refuse = |reason: String| invalid(uid.clone(), reason);

    let api_version = value.get("apiVersion").and_then(Value::as_str);
    let kind = value.get("kind").and_then(Value::as_str);
    if kind != Some("AdmissionReview") || api_version != Some(REVIEW_API_VERSION) {
        return Err(refuse(format!(
            "expected an AdmissionReview of {REVIEW_API_VERSION}, got kind {} apiVersion {}",
            kind.unwrap_or("(none)"),
            api_version.unwrap_or("(none)")
        )));
    }
    if uid.as_deref().is_none_or(str::is_empty) {
        return Err(refuse(no_uid()));
    }
    let review: AdmissionReview<DynamicObject> = serde_json::from_value(value)
        .map_err(|e| refuse(format!("malformed AdmissionReview: {e}")))?;
    let request: ObjectRequest = review
        .try_into()
        .map_err(|_| refuse("the AdmissionReview has no request".into()))?;
    match missing_part(&request) {
        Some(reason) => Err(refuse(reason)),
        None => Ok(request),
    }
}

/// What the API server always sends and this request lacks: a uid, the object on CREATE and
/// UPDATE, the previous object on UPDATE (DELETE has no `object`, CONNECT its options at
/// most). Deciding without them would be guessing: an UPDATE without `oldObject` looks like a
/// CREATE to the mutating webhook, which would then set an opted-in Deployment's replicas to 0.
fn missing_part<K: kube::Resource>(request: &AdmissionRequest<K>) -> Option<String> {
    if request.uid.is_empty() {
        return Some(no_uid());
    }
    let (operation, needs_old_object) = match request.operation {
        Operation::Create => ("CREATE", false),
        Operation::Update => ("UPDATE", true),
        Operation::Delete | Operation::Connect => return None,
    };
    if request.object.is_none() {
        Some(format!(
            "malformed AdmissionReview: {operation} without request.object"
        ))
    } else if needs_old_object && request.old_object.is_none() {
        Some(format!(
            "malformed AdmissionReview: {operation} without request.oldObject"
        ))
    } else {
        None
    }
}

fn no_uid() -> String {
    "the AdmissionReview has no request.uid".into()
}

/// The slow path: reads the review step by step to name what is wrong with it.
fn explain(body: &[u8]) -> Result<DeploymentRequest, Invalid> {
    let request = decode_object(body)?;
    let uid = request.uid.clone();
    let refuse = |reason: String| invalid(Some(uid.clone()), reason);
    let gvk = &request.kind;
    if gvk.group != "apps" || gvk.version != "v1" || gvk.kind != "Deployment" {
        return Err(refuse(format!(
            "this webhook reviews apps/v1 Deployments, not {}/{} {}",
            gvk.group, gvk.version, gvk.kind
        )));
    }
    let object = request
        .object
        .map(|o| to_deployment(o, "object"))
        .transpose()
        .map_err(&refuse)?;
    let old_object = request
        .old_object
        .map(|o| to_deployment(o, "oldObject"))
        .transpose()
        .map_err(&refuse)?;
    Ok(AdmissionRequest {
        types: request.types,
        uid: request.uid,
        kind: request.kind,
        resource: request.resource,
        sub_resource: request.sub_resource,
        request_kind: request.request_kind,
        request_resource: request.request_resource,
        request_sub_resource: request.request_sub_resource,
        name: request.name,
        namespace: request.namespace,
        operation: request.operation,
        user_info: request.user_info,
        object,
        old_object,
        dry_run: request.dry_run,
        options: request.options,
    })
}

fn to_deployment(object: DynamicObject, field: &str) -> Result<Deployment, String> {
    let value = serde_json::to_value(object).map_err(|e| format!("request.{field}: {e}"))?;
    serde_json::from_value(value)
        .map_err(|e| format!("request.{field} is not a valid apps/v1 Deployment: {e}"))
}

fn invalid(uid: Option<String>, reason: String) -> Invalid {
    Invalid { uid, reason }
}

/// AdmissionReview bodies shaped as the API server sends them, shared by the admission tests.
#[cfg(test)]
pub(crate) mod fixtures {
    use serde_json::{Value, json};

    /// The uid every fixture review carries.
    pub(crate) const UID: &str = "705ab4f5-6393-11e8-b7cc-42010a800002";

    /// A review of a Deployment write by `user`.
    pub(crate) fn review(operation: &str, user: &str, object: Value, old: Option<Value>) -> Value {
        json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": UID,
                "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
                "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
                "name": "web", "namespace": "shop", "operation": operation,
                "userInfo": {"username": user},
                "object": object, "oldObject": old,
                "dryRun": false
            }
        })
    }

    /// A review of an UPDATE or DELETE of the TrafficSplit `web` by `user`, labelled as
    /// Serin labels what it manages for the Deployment `owner` (no label when `None`).
    pub(crate) fn traffic_split_review(operation: &str, user: &str, owner: Option<&str>) -> Value {
        let split = json!({
            "apiVersion": "split.smi-spec.io/v1alpha1", "kind": "TrafficSplit",
            "metadata": {"name": "web", "namespace": "shop",
                         "labels": owner.map(|o| json!({"serin.dev/owner": o}))},
            "spec": {"service": "web", "backends": []}
        });
        let object = (operation != "DELETE").then(|| split.clone());
        json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": UID,
                "kind": {"group": "split.smi-spec.io", "version": "v1alpha1", "kind": "TrafficSplit"},
                "resource": {"group": "split.smi-spec.io", "version": "v1alpha1", "resource": "trafficsplits"},
                "name": "web", "namespace": "shop", "operation": operation,
                "userInfo": {"username": user, "groups": ["system:masters", "system:authenticated"]},
                "object": object, "oldObject": split,
                "dryRun": false
            }
        })
    }

    /// A minimal Deployment `web` with the given annotations.
    pub(crate) fn deployment(annotations: Value) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop", "annotations": annotations},
            "spec": {
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                             "spec": {"containers": [{"name": "app", "image": "app:1"}]}}
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn review_of(object: Value) -> Value {
        fixtures::review("CREATE", "alice", object, None)
    }

    fn deployment() -> Value {
        fixtures::deployment(json!({}))
    }

    fn refusal(body: &[u8]) -> AdmissionResponse {
        match decode_deployment(body) {
            Ok(req) => panic!("expected a refusal, decoded {}", req.name),
            Err(invalid) => invalid.into_response(),
        }
    }

    #[test]
    fn a_valid_review_decodes_into_a_typed_deployment() {
        let body = review_of(deployment()).to_string();
        let req = decode_deployment(body.as_bytes()).expect("decodes");
        assert_eq!(req.uid, fixtures::UID);
        let name = req.object.and_then(|d| d.metadata.name);
        assert_eq!(name.as_deref(), Some("web"));
    }

    #[test]
    fn non_json_is_refused_with_a_reason() {
        let response = refusal(b"{not json");
        assert!(!response.allowed);
        assert!(
            response.result.message.contains("not JSON"),
            "{}",
            response.result.message
        );
    }

    #[test]
    fn a_review_of_another_version_is_refused_and_echoes_the_uid() {
        let mut body = review_of(deployment());
        body["apiVersion"] = json!("admission.k8s.io/v1beta1");
        let response = refusal(body.to_string().as_bytes());
        assert_eq!(response.uid, fixtures::UID);
        assert!(response.result.message.contains("admission.k8s.io/v1"));
    }

    #[test]
    fn a_review_of_another_kind_is_refused() {
        let mut body =
            review_of(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}}));
        body["request"]["kind"] = json!({"group": "", "version": "v1", "kind": "Pod"});
        let response = refusal(body.to_string().as_bytes());
        assert!(!response.allowed);
        assert!(
            response.result.message.contains("not /v1 Pod"),
            "{}",
            response.result.message
        );
    }

    #[test]
    fn a_deployment_missing_required_fields_is_refused_naming_the_field() {
        let body = review_of(json!({"apiVersion": "apps/v1", "kind": "Deployment",
                                    "metadata": {"name": "web"}, "spec": {"replicas": "three"}}));
        let response = refusal(body.to_string().as_bytes());
        assert!(
            response.result.message.contains("request.object"),
            "{}",
            response.result.message
        );
    }

    #[test]
    fn a_review_without_request_is_refused() {
        let body = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"});
        let response = refusal(body.to_string().as_bytes());
        assert!(response.result.message.contains("request.uid"));
    }

    /// The reason `decode` refuses `body` with, checking the uid is echoed.
    fn refused_by(decode: fn(&[u8]) -> Result<(), Invalid>, body: &Value) -> String {
        let invalid = decode(body.to_string().as_bytes()).expect_err("refused");
        let uid = body.pointer("/request/uid").and_then(Value::as_str);
        assert_eq!(
            invalid.uid.as_deref().unwrap_or_default(),
            uid.unwrap_or_default()
        );
        invalid.reason
    }

    fn deployment_decoder(body: &[u8]) -> Result<(), Invalid> {
        decode_deployment(body).map(drop)
    }

    fn object_decoder(body: &[u8]) -> Result<(), Invalid> {
        decode_object(body).map(drop)
    }

    #[test]
    fn an_empty_uid_is_refused() {
        let mut body = review_of(deployment());
        body["request"]["uid"] = json!("");
        for decode in [deployment_decoder, object_decoder] {
            let reason = refused_by(decode, &body);
            assert!(reason.contains("request.uid"), "{reason}");
        }
    }

    #[test]
    fn a_create_or_update_without_object_is_refused() {
        for operation in ["CREATE", "UPDATE"] {
            let body = fixtures::review(operation, "alice", Value::Null, Some(deployment()));
            for decode in [deployment_decoder, object_decoder] {
                let reason = refused_by(decode, &body);
                assert!(
                    reason.contains(&format!("{operation} without request.object")),
                    "{reason}"
                );
            }
        }
    }

    #[test]
    fn an_update_without_old_object_is_refused() {
        let body = fixtures::review("UPDATE", "alice", deployment(), None);
        for decode in [deployment_decoder, object_decoder] {
            let reason = refused_by(decode, &body);
            assert!(
                reason.contains("UPDATE without request.oldObject"),
                "{reason}"
            );
        }
        // A missing member, not only an explicit null.
        let mut body = body;
        body["request"]
            .as_object_mut()
            .expect("request")
            .remove("oldObject");
        assert!(refused_by(deployment_decoder, &body).contains("request.oldObject"));
    }

    #[test]
    fn a_delete_has_no_object_and_is_read() {
        let body = fixtures::review("DELETE", "alice", Value::Null, Some(deployment()));
        let req = decode_deployment(body.to_string().as_bytes()).expect("decodes");
        assert!(req.object.is_none() && req.old_object.is_some());
        let split = fixtures::traffic_split_review("DELETE", "alice", Some("web"));
        let req = decode_object(split.to_string().as_bytes()).expect("decodes");
        assert!(req.object.is_none());
    }

    #[test]
    fn a_create_and_an_update_with_both_objects_are_read() {
        let create = fixtures::review("CREATE", "alice", deployment(), None);
        let update = fixtures::review("UPDATE", "alice", deployment(), Some(deployment()));
        for body in [create, update] {
            decode_deployment(body.to_string().as_bytes()).expect("decodes");
            decode_object(body.to_string().as_bytes()).expect("decodes");
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(body in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = decode_deployment(&body);
        }

        #[test]
        fn arbitrary_json_in_the_object_never_panics(
            key in "[a-zA-Z]{1,8}",
            text in ".{0,40}",
            number in proptest::num::i64::ANY,
        ) {
            let object = json!({"metadata": {"name": text, "annotations": {key.clone(): number}},
                                "spec": {key: text}});
            let body = review_of(object).to_string();
            let _ = decode_deployment(body.as_bytes());
        }
    }
}
