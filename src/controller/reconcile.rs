//! One reconcile of an opted-in Deployment, as a pipeline: read the Deployment and what Serin
//! keeps beside it → ensure the machinery ([`super::machinery`]) → observe → drive
//! [`release::step`] through its questions ([`release::drive`]) → settle runtime requests →
//! perform the actions → write `Canary.status` ([`super::status`]).

use std::sync::Arc;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::controller::Action as Requeue;

use super::context::{Read, Release};
use super::machinery::{Creating, remove_label};
use super::requests::{self, StepContext};
use super::workload::{Primary, Target};
use super::{Context, Error};
use crate::analysis;
use crate::release::{self, Action, EventType, Observations, Reason};
use crate::router::configured_router;
use crate::spec::{self, OptIn, Workload};

pub(super) async fn reconcile(
    deploy: Arc<Deployment>,
    ctx: Arc<Context>,
) -> Result<Requeue, Error> {
    reconcile_workload(Target::Deployment(&deploy), ctx).await
}

/// The same pipeline for an opted-in DaemonSet.
pub(super) async fn reconcile_daemonset(
    daemonset: Arc<DaemonSet>,
    ctx: Arc<Context>,
) -> Result<Requeue, Error> {
    reconcile_workload(Target::DaemonSet(&daemonset), ctx).await
}

async fn reconcile_workload(deploy: Target<'_>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    let namespace = deploy.meta().namespace.clone().ok_or(Error::NoNamespace)?;
    let name = deploy.meta().name.clone().unwrap_or_default();
    // A workload on its way out takes what Serin made with it (owner references): making
    // any of it again would only hold up a foreground deletion.
    if deploy.meta().deletion_timestamp.is_some() {
        ctx.forget_metrics(&namespace, &name);
        return Ok(Requeue::await_change());
    }
    let canary = ctx.canary(&namespace, &name).await?;
    let opted_in = match spec::read_workload(&deploy) {
        Ok(OptIn::Enabled(spec)) => Some(spec),
        Ok(OptIn::Absent | OptIn::Disabled) => None,
        Err(problems) => {
            // Admission refuses this; it can only come from before Serin was installed or
            // while its webhook was down. Keep what runs, say why nothing happens.
            let message = format!(
                "Invalid serin.dev annotations; nothing changes until they are fixed:\n{problems}"
            );
            let reason = Reason::InvalidConfiguration;
            let warning = EventType::Warning;
            ctx.publish(&deploy, canary.as_ref(), warning, reason, message)
                .await;
            return Ok(Requeue::await_change());
        }
    };
    let is_opted_in = opted_in.is_some();
    let Some(spec) = opted_in.or_else(|| canary.as_ref().map(|c| c.spec.config.clone())) else {
        // Not opted in and nothing of Serin's left: only the label may linger.
        ctx.forget_metrics(&namespace, &name);
        remove_label(&ctx, deploy).await?;
        return Ok(Requeue::await_change());
    };
    let router = configured_router(spec.provider, &ctx.routers);
    let mut release = Release::new(&ctx, deploy, namespace, name, spec, router, canary);
    let result = release.run(is_opted_in).await;
    // What the reconcile told before it ended, even when it failed part way.
    release.send_alerts();
    result
}

impl Release<'_> {
    async fn run(&mut self, opted_in: bool) -> Result<Requeue, Error> {
        let stored = self
            .canary
            .as_ref()
            .and_then(|c| c.status.clone())
            .unwrap_or_default();
        let status = stored.release.clone();
        // Read before the Canary is re-applied below; Serin's apply never touches annotations.
        let request = self
            .canary
            .as_ref()
            .and_then(|c| requests::pending(c.annotations(), stored.last_request.as_ref()));
        // The chat alerts of the covering policies, before any Event of this reconcile.
        self.hooks.alerts = self.ctx.alerts_of(&self.deploy).await;
        let mut read = self.read().await?;
        let reapply_router = match opted_in {
            true => self.ensure(&status, &mut read).await?,
            false => false,
        };
        let obs = Observations {
            revision: read.revision.clone(),
            opted_in,
            canary: self.deploy.observe_canary(read.desired),
            primary: Primary::observe(read.primary.as_ref()),
            router: self.observe_router(&status, reapply_router).await?,
            requests: requests::machine_requests(request.as_ref(), stored.paused),
            ..Default::default()
        };
        let now = Time(Timestamp::now());
        let (driven, requeue) = self.decide(&status, obs, &read.revision, &now).await?;
        let (was_paused, last) = (stored.paused, stored.last_request.as_ref());
        let step = StepContext {
            before: &status,
            after: &driven.status,
            was_paused,
            last,
            now: &now,
        };
        let settled = requests::settle(request.as_ref(), &step);
        // The Events from here on are the new status's.
        self.hooks.phase = driven.status.phase;
        // The request's Event first: it says why what follows happens.
        if let Some(note) = settled.note.clone() {
            self.event(note.type_, note.reason, note.message).await;
        }
        let Some(requeue) = self
            .perform(driven.actions, &read, &driven.status, requeue)
            .await?
        else {
            // Opted out: the Canary is gone, and its series with it.
            self.ctx.forget_metrics(&self.namespace, &self.name);
            return Ok(Requeue::await_change());
        };
        self.settle_status(&stored, driven.status, settled, &now)
            .await?;
        Ok(requeue)
    }

    /// Carries out the machine's actions in order; `None` once the machinery is removed.
    async fn perform(
        &mut self,
        actions: Vec<Action>,
        read: &Read,
        status: &release::ReleaseStatus,
        mut requeue: Requeue,
    ) -> Result<Option<Requeue>, Error> {
        let mut removed = false;
        for action in actions {
            match action {
                Action::SetRoute(route) => self.set_route(&route).await?,
                Action::ScaleCanary(n) => self.scale_canary(n).await?,
                Action::ScaleCanaryToZero => self.scale_canary(0).await?,
                Action::RecordDesiredReplicas(n) => self.record_desired_replicas(n).await?,
                Action::RunChecks | Action::Look => {}
                Action::CallHook(kind) if kind.is_gate() => {}
                Action::CallHook(kind) => {
                    let payload = self.payload(status, &read.revision);
                    let template = self.hooks.template.clone();
                    analysis::notify(&self.ctx.analysis, template, kind, payload);
                }
                Action::CopyToPrimary { revision: wanted } => {
                    if wanted == read.revision {
                        self.copy_configs(&read.configs).await?;
                        self.apply_primary(&read.revision, Creating::No).await?;
                    }
                }
                Action::RemoveMachinery => {
                    self.remove_machinery().await?;
                    removed = true;
                }
                Action::RequeueAfter(after) => requeue = Requeue::requeue(after),
                Action::Event {
                    type_,
                    reason,
                    message,
                } => self.event(type_, reason, message).await,
            }
        }
        Ok((!removed).then_some(requeue))
    }
}

#[cfg(test)]
mod tests;
