//! `Canary.status`, written by server-side apply with Serin's field manager, and the release
//! metrics set from it ([`super::metrics`]).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::Patch;
use kube::{Api, Resource};
use serde_json::json;

use super::cache::saw;
use super::context::Release;
use super::context::{Error, apply_params};
use super::requests::Settled;
use crate::crd::{Canary, CanaryStatus};
use crate::release::{self, ReleaseStatus};

impl Release<'_> {
    /// Writes the new status, with its conditions and what became of the runtime request,
    /// when any of it differs from what is stored (or the Deployment's generation moved);
    /// then the release metrics say what the status says.
    pub(super) async fn settle_status(
        &self,
        stored: &CanaryStatus,
        new_status: ReleaseStatus,
        settled: Settled,
        now: &Time,
    ) -> Result<(), Error> {
        let request_changed =
            settled.paused != stored.paused || settled.last_request != stored.last_request;
        let conditions =
            release::conditions::conditions(&stored.conditions, &new_status, settled.paused, now);
        if new_status != stored.release
            || request_changed
            || conditions != stored.conditions
            || self.observed_generation_changed()
        {
            self.write_status(new_status.clone(), conditions, settled)
                .await?;
        }
        if let Some(metrics) = &self.ctx.release_metrics {
            metrics.observe(&self.namespace, &self.name, stored, &new_status, now);
        }
        Ok(())
    }

    /// Writes `Canary.status` by server-side apply (field manager `serin`), conditions
    /// included.
    pub(super) async fn write_status(
        &self,
        release: ReleaseStatus,
        conditions: Vec<Condition>,
        requests: Settled,
    ) -> Result<(), Error> {
        let status = CanaryStatus {
            release,
            conditions,
            observed_generation: crate::spec::Workload::meta(&self.deploy).generation,
            paused: requests.paused,
            last_request: requests.last_request,
        };
        let patch = json!({
            "apiVersion": Canary::api_version(&()),
            "kind": Canary::kind(&()),
            "status": status,
        });
        let api: Api<Canary> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        let written = api
            .patch_status(&self.name, &apply_params(), &Patch::Apply(&patch))
            .await?;
        saw(&self.ctx.canaries, &written.metadata);
        Ok(())
    }

    pub(super) fn observed_generation_changed(&self) -> bool {
        let stored = self
            .canary
            .as_ref()
            .and_then(|c| c.status.as_ref())
            .and_then(|s| s.observed_generation);
        stored != crate::spec::Workload::meta(&self.deploy).generation
    }
}

impl super::Context {
    /// Removes the release metrics of `namespace/name`, whose Canary is gone or going.
    pub(super) fn forget_metrics(&self, namespace: &str, name: &str) {
        if let Some(metrics) = &self.release_metrics {
            metrics.forget(namespace, name);
        }
    }
}
