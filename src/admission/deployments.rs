//! The decisions about a Deployment write, as pure functions of the admission request.
//!
//! - [`validate`] refuses an opted-in Deployment whose `serin.dev/` annotations are wrong,
//!   listing every mistake, one per line.
//! - [`mutate`] writes the effective configuration back as explicit annotations (only the
//!   missing ones: a value the user wrote is never rewritten, so GitOps tools see no drift),
//!   labels the Deployment for the controller's watch, and, when an update leaves the pod
//!   template alone, keeps `spec.replicas` as stored (an idle canary stays at zero) while
//!   recording the requested count in `serin.dev/desired-replicas` for the primary.

use std::collections::BTreeMap;

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation, ReplaceOperation};
use k8s_openapi::api::apps::v1::Deployment;
use kube::core::admission::{AdmissionResponse, Operation};
use serde_json::Value;

use super::review::DeploymentRequest;
use crate::spec::{self, OptIn};

/// Refuses an opted-in Deployment whose configuration is wrong; allows everything else.
pub fn validate(req: &DeploymentRequest) -> AdmissionResponse {
    let response = AdmissionResponse::from(req);
    let Some(deploy) = req.object.as_ref() else {
        return response; // DELETE: nothing to validate
    };
    match spec::read_deployment(deploy) {
        Ok(_) => response,
        Err(problems) => {
            let name = deploy.metadata.name.as_deref().unwrap_or(&req.name);
            let count = problems.len();
            let noun = if count == 1 { "mistake" } else { "mistakes" };
            response.deny(format!(
                "Deployment {name:?}: {count} {noun} in its serin.dev annotations:\n{problems}"
            ))
        }
    }
}

/// Fills defaults and protects the idle canary's replica count; see the module docs.
pub fn mutate(req: &DeploymentRequest, serin_user: &str) -> AdmissionResponse {
    let response = AdmissionResponse::from(req);
    if !matches!(req.operation, Operation::Create | Operation::Update) {
        return response;
    }
    let Some(deploy) = req.object.as_ref() else {
        return response;
    };
    // Invalid configuration is the validating webhook's to refuse, with every mistake named.
    let Ok(OptIn::Enabled(canary)) = spec::read_deployment(deploy) else {
        return response;
    };
    let from_serin = req.user_info.username.as_deref() == Some(serin_user);
    let old = match req.operation {
        Operation::Update => req.old_object.as_ref(),
        _ => None,
    };

    let annotations = deploy.metadata.annotations.as_ref();
    let mut updates: BTreeMap<String, String> = spec::defaulted_annotations(&canary)
        .into_iter()
        .filter(|(key, _)| !annotations.is_some_and(|a| a.contains_key(key)))
        .collect();
    let mut ops = Vec::new();
    if !from_serin {
        let replicas = replica_decision(deploy, old);
        if let Some(keep) = replicas.keep {
            ops.push(PatchOperation::Replace(ReplaceOperation {
                path: PointerBuf::from_tokens(["spec", "replicas"]),
                value: keep.into(),
            }));
        }
        updates.insert(spec::DESIRED_REPLICAS.into(), replicas.desired.to_string());
    }
    ops.extend(set_entries(
        &["metadata", "annotations"],
        annotations,
        updates,
    ));
    let label = BTreeMap::from([(spec::MANAGED_LABEL.to_string(), "true".to_string())]);
    ops.extend(set_entries(
        &["metadata", "labels"],
        deploy.metadata.labels.as_ref(),
        label,
    ));
    if ops.is_empty() {
        return response;
    }
    match response.clone().with_patch(Patch(ops)) {
        Ok(patched) => patched,
        // Serializing a patch of strings and integers cannot fail; if it ever did, admit
        // unchanged rather than block the write.
        Err(_) => response,
    }
}

/// What to do with `spec.replicas` on a user's write.
struct ReplicaDecision {
    /// Put the stored count back (the update only changed the replica count).
    keep: Option<i32>,
    /// The count the user asked for, for the primary.
    desired: i32,
}

fn replica_decision(deploy: &Deployment, old: Option<&Deployment>) -> ReplicaDecision {
    let requested = replicas(deploy);
    let keep = old.and_then(|old| {
        let same_template = template(old) == template(deploy);
        (same_template && replicas(old) != requested).then(|| replicas(old))
    });
    ReplicaDecision {
        keep,
        desired: requested,
    }
}

/// `spec.replicas` as the API server defaults it.
fn replicas(deploy: &Deployment) -> i32 {
    deploy.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

fn template(deploy: &Deployment) -> Option<Value> {
    deploy
        .spec
        .as_ref()
        .and_then(|s| serde_json::to_value(&s.template).ok())
}

/// JSON Patch operations that make the map at `path` hold `entries` (other keys untouched),
/// creating the map when the object has none: a patch cannot add a key to a missing map.
fn set_entries(
    path: &[&str],
    existing: Option<&BTreeMap<String, String>>,
    entries: BTreeMap<String, String>,
) -> Vec<PatchOperation> {
    let Some(existing) = existing else {
        if entries.is_empty() {
            return Vec::new();
        }
        let value = Value::Object(entries.into_iter().map(|(k, v)| (k, v.into())).collect());
        return vec![PatchOperation::Add(AddOperation {
            path: PointerBuf::from_tokens(path.iter().copied()),
            value,
        })];
    };
    entries
        .into_iter()
        .filter(|(key, value)| existing.get(key) != Some(value))
        .map(|(key, value)| {
            let mut pointer = PointerBuf::from_tokens(path.iter().copied());
            pointer.push_back(key.as_str());
            if existing.contains_key(&key) {
                PatchOperation::Replace(ReplaceOperation {
                    path: pointer,
                    value: value.into(),
                })
            } else {
                PatchOperation::Add(AddOperation {
                    path: pointer,
                    value: value.into(),
                })
            }
        })
        .collect()
}
