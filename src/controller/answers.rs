//! The controller's answers to the release machine's questions ([`release::Answers`]): the
//! analysis of this reconcile, told the release's payload.

use super::reconcile::Release;
use super::{Error, analysis};
use crate::crd::AnalysisTemplate;
use crate::release::{self, HookKind, ReleaseStatus};
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
