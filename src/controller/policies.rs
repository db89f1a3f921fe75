//! Keeps one `ValidatingAdmissionPolicy` and its binding per CanaryPolicy that requires
//! canaries ([`crate::policy::require`]): applied when the CanaryPolicy asks for it, deleted
//! when it stops asking, and owned by it, so deleting the CanaryPolicy removes them too.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};

use super::FIELD_MANAGER;
use crate::crd::CanaryPolicy;
use crate::policy::require::{admission_policy, admission_policy_name};

/// Label on the admission policies Serin keeps: the CanaryPolicy they enforce.
const POLICY_LABEL: &str = "serin.dev/canary-policy";

struct Context {
    client: Client,
    serin_user: String,
}

#[derive(Debug, thiserror::Error)]
#[error("keeping the admission policy of CanaryPolicy {policy}: {source}")]
struct Error {
    policy: String,
    source: kube::Error,
}

/// Runs until `shutdown` completes.
pub async fn run(
    client: Client,
    serin_user: String,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let labelled = watcher::Config::default().labels(POLICY_LABEL);
    let ctx = Arc::new(Context {
        client: client.clone(),
        serin_user,
    });
    Controller::new(Api::<CanaryPolicy>::all(client.clone()), Default::default())
        .owns(
            Api::<ValidatingAdmissionPolicy>::all(client.clone()),
            labelled.clone(),
        )
        .owns(
            Api::<ValidatingAdmissionPolicyBinding>::all(client),
            labelled,
        )
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "canary policies");
            }
        })
        .await;
}

async fn reconcile(policy: Arc<CanaryPolicy>, ctx: Arc<Context>) -> Result<Action, Error> {
    let name = policy.name_any();
    let error = |source| Error {
        policy: name.clone(),
        source,
    };
    let policies: Api<ValidatingAdmissionPolicy> = Api::all(ctx.client.clone());
    let bindings: Api<ValidatingAdmissionPolicyBinding> = Api::all(ctx.client.clone());
    let object_name = admission_policy_name(&name);
    let Some((mut vap, mut binding)) =
        admission_policy(&name, &policy.spec.policy, &ctx.serin_user)
    else {
        for result in [
            bindings
                .delete(&object_name, &DeleteParams::default())
                .await
                .map(|_| ()),
            policies
                .delete(&object_name, &DeleteParams::default())
                .await
                .map(|_| ()),
        ] {
            match result {
                Ok(()) => {}
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(e) => return Err(error(e)),
            }
        }
        return Ok(Action::await_change());
    };
    let owner = policy.controller_owner_ref(&()).map(|o| vec![o]);
    for meta in [&mut vap.metadata, &mut binding.metadata] {
        meta.owner_references = owner.clone();
        meta.labels = Some([(POLICY_LABEL.to_owned(), name.clone())].into());
    }
    let params = PatchParams::apply(FIELD_MANAGER).force();
    policies
        .patch(&object_name, &params, &Patch::Apply(&vap))
        .await
        .map_err(error)?;
    bindings
        .patch(&object_name, &params, &Patch::Apply(&binding))
        .await
        .map_err(error)?;
    Ok(Action::await_change())
}

fn error_policy(policy: Arc<CanaryPolicy>, error: &Error, _: Arc<Context>) -> Action {
    tracing::warn!(policy = %policy.name_any(), %error, "retrying");
    Action::requeue(super::RETRY_AFTER)
}
