//! The controller's answers to the release machine's questions ([`release::Answers`]): the
//! analysis of this reconcile, told the release's payload.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::controller::Action as Requeue;

use super::Error;
use super::context::Release;
use super::events::EventHooks;
use crate::analysis;
use crate::crd::AnalysisTemplate;
use crate::release::{self, Driven, EventType, HookKind, Observations, Reason, ReleaseStatus};
use kube::Api;

/// The controller's answers to the machine's questions: the analysis [`analysis::Asker`] of
/// this reconcile, told the release's payload.
pub(super) struct Asking<'r, 'a> {
    pub asker: &'r mut analysis::Asker<'a>,
    pub release: &'r Release<'r>,
    pub revision: &'r str,
}

impl release::Answers for Asking<'_, '_> {
    fn checks(
        &mut self,
        status: &ReleaseStatus,
    ) -> Option<(Vec<release::MetricCheck>, Vec<String>)> {
        let payload = self.release.payload(status, self.revision);
        self.asker.checks(status, payload)
    }

    fn look(&mut self, status: &ReleaseStatus) -> Option<(Vec<release::MetricCheck>, Vec<String>)> {
        let payload = self.release.payload(status, self.revision);
        self.asker.look(status, payload)
    }

    fn rollback(&mut self, status: &ReleaseStatus) -> Option<Vec<String>> {
        let payload = self.release.payload(status, self.revision);
        self.asker.rollback(status, payload)
    }

    fn gate(&mut self, kind: HookKind, status: &ReleaseStatus) -> Option<release::GateAnswer> {
        let payload = self.release.payload(status, self.revision);
        let outcome = self.asker.gate(kind, status, payload)?;
        Some(release::GateAnswer {
            passed: outcome.passed,
            message: outcome.message,
        })
    }
}

impl Release<'_> {
    /// Drives the release machine from `status` with `obs`, asking the analysis what it asks
    /// (judged by the CanaryPolicies first), and records the Events the answers call for.
    /// With when to look again: soon while a question is unanswered.
    pub(super) async fn decide(
        &mut self,
        status: &ReleaseStatus,
        obs: Observations,
        revision: &str,
        now: &Time,
    ) -> Result<(Driven, Requeue), Error> {
        let template = self.analysis_template().await?;
        // Judged by the CanaryPolicies now, before anything of it is called.
        let (ctx, deploy, spec) = (self.ctx, &self.deploy, &self.spec);
        let mut asker = analysis::Asker::new(
            &ctx.analysis,
            deploy,
            &self.namespace,
            &self.name,
            spec,
            template.as_ref(),
        )
        .await
        .map_err(|e| Error::Policies(e.to_string()))?;
        let callable = asker.callable_template().cloned();
        let checksum = revision.to_owned();
        // Read at the start of the reconcile (`run`), for the Events before this one.
        let alerts = std::mem::take(&mut self.hooks.alerts);
        let outbox = std::mem::take(&mut self.hooks.outbox);
        self.hooks = EventHooks {
            template: callable.clone(),
            phase: status.phase,
            checksum,
            alerts,
            outbox,
        };
        // Hooks asked for by a step get the phase that step is in (a new revision's first
        // `confirm-rollout` and `rollback` calls say Waiting, not the phase before it).
        let mut asking = Asking {
            asker: &mut asker,
            release: self,
            revision,
        };
        let mut driven = release::drive(status, obs, now, &self.spec, &mut asking);
        for told in std::mem::take(&mut driven.told) {
            self.event(told.type_, told.reason, told.message).await;
        }
        if let Some(refusal) = asker.refusal() {
            let message = refusal.to_owned();
            self.event(EventType::Warning, Reason::PolicyViolation, message)
                .await;
        }
        let awaiting = asker.awaiting();
        asker.settle();
        let requeue = match awaiting {
            // The answer asks for the next reconcile; this one only in case it is lost.
            true => Requeue::requeue(analysis::AWAITING_RECHECK),
            false => Requeue::await_change(),
        };
        Ok((driven, requeue))
    }

    pub(super) fn payload(&self, status: &ReleaseStatus, revision: &str) -> analysis::Payload {
        analysis::Payload {
            name: self.name.clone(),
            namespace: self.namespace.clone(),
            phase: status.phase,
            checksum: revision.to_owned(),
        }
    }

    /// The AnalysisTemplate the configuration names, as stored.
    pub(super) async fn analysis_template(
        &self,
    ) -> Result<Option<crate::crd::AnalysisTemplateSpec>, Error> {
        let Some(name) = self.spec.analysis.as_deref() else {
            return Ok(None);
        };
        let api: Api<AnalysisTemplate> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        match api.get_opt(name).await? {
            Some(t) => Ok(Some(t.spec)),
            None => Err(Error::MissingAnalysisTemplate(name.to_owned())),
        }
    }
}
