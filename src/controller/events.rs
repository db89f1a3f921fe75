//! Events: recorded on the Deployment and its Canary, and sent to the release's `event`
//! webhooks.

use k8s_openapi::api::apps::v1::Deployment;
use kube::runtime::events::{Event, EventType as KubeEventType, Recorder};
use kube::{Api, Resource, ResourceExt};

use super::cache::read_through;
use super::context::Release;
use super::context::{Context, Error};
use crate::analysis;
use crate::crd::Canary;
use crate::release::{EventType, Phase, Reason};

/// The `event` webhooks of a release and the payload fields they get.
#[derive(Default)]
pub(super) struct EventHooks {
    pub template: Option<crate::crd::AnalysisTemplateSpec>,
    pub phase: Phase,
    pub checksum: String,
}

impl Release<'_> {
    /// Records an Event and sends it to the `event` webhooks (once the AnalysisTemplate has
    /// been read in this reconcile).
    pub(super) async fn event(&self, type_: EventType, reason: Reason, message: String) {
        let payload = analysis::Payload {
            name: self.name.clone(),
            namespace: self.namespace.clone(),
            phase: self.hooks.phase,
            checksum: self.hooks.checksum.clone(),
        };
        analysis::notify_event(
            &self.ctx.analysis,
            self.hooks.template.as_ref(),
            payload,
            type_,
            reason.as_str(),
            &message,
        );
        self.ctx
            .publish(self.deploy, self.canary.as_ref(), type_, reason, message)
            .await;
    }
}

impl Context {
    /// The Canary of a Deployment (see [`read_through`]).
    pub(super) async fn canary(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Canary>, Error> {
        let api: Api<Canary> = Api::namespaced(self.client.clone(), namespace);
        read_through(self.canaries.as_ref(), &api, namespace, name).await
    }

    /// Records an Event on the Deployment and, when it exists, on its Canary.
    pub async fn publish(
        &self,
        deploy: &Deployment,
        canary: Option<&Canary>,
        type_: EventType,
        reason: Reason,
        message: String,
    ) {
        let reason = reason.as_str();
        let (namespace, deployment) = (deploy.namespace().unwrap_or_default(), deploy.name_any());
        match type_ {
            EventType::Normal => tracing::info!(namespace, deployment, reason, "{message}"),
            EventType::Warning => tracing::warn!(namespace, deployment, reason, "{message}"),
        }
        let event = Event {
            type_: match type_ {
                EventType::Normal => KubeEventType::Normal,
                EventType::Warning => KubeEventType::Warning,
            },
            reason: reason.to_owned(),
            // The Events API caps notes at 1 kB.
            note: Some(truncate(&message, 1000)),
            action: reason.to_owned(),
            secondary: None,
        };
        let mut references = vec![deploy.object_ref(&())];
        references.extend(canary.map(|c| c.object_ref(&())));
        // Both at once: a reconcile waits for its Events, and they are independent.
        let sent = references.iter().map(|reference| {
            // A Recorder per Event: one Recorder folds Events of the same reason into a
            // series that keeps the first note, and each step's note carries its values.
            let recorder = Recorder::new(self.client.clone(), self.reporter.clone());
            let event = &event;
            async move { recorder.publish(event, reference).await }
        });
        for result in futures::future::join_all(sent).await {
            if let Err(e) = result {
                tracing::warn!(error = %e, reason, "could not record an event");
            }
        }
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}
