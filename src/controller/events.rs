//! Events: recorded on the Deployment and its Canary, sent to the release's `event`
//! webhooks, and to the chat alerts of the CanaryPolicies covering the Deployment (those
//! sent once the reconcile ends, in order, in a task of their own: see [`crate::alerts`]).

use kube::runtime::events::{Event, EventType as KubeEventType, Recorder};
use kube::{Api, Resource};

use super::cache::read_through;
use super::context::Release;
use super::context::{Context, Error};
use crate::alerts;
use crate::analysis;
use crate::crd::Canary;
use crate::release::{EventType, Phase, Reason};
use crate::spec::{Workload, object_reference};

/// The `event` webhooks and chat alerts of a release and the payload fields they get.
#[derive(Default)]
pub(super) struct EventHooks {
    pub template: Option<crate::crd::AnalysisTemplateSpec>,
    pub phase: Phase,
    pub checksum: String,
    /// The alerts of the covering CanaryPolicies, once read in this reconcile.
    pub alerts: alerts::Alerts,
    /// The alerts of this reconcile's Events, sent when it ends ([`Release::send_alerts`]);
    /// a lock only because Events are recorded through a shared reference.
    pub outbox: std::sync::Mutex<Vec<(alerts::Target, alerts::Message)>>,
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
        self.queue_alerts(reason, &message);
        self.ctx
            .publish(&self.deploy, self.canary.as_ref(), type_, reason, message)
            .await;
    }

    /// Queues the alerts an Event of `reason` goes to.
    fn queue_alerts(&self, reason: Reason, text: &str) {
        let targets = self.hooks.alerts.for_reason(reason);
        if targets.is_empty() {
            return;
        }
        let hooks = &self.hooks;
        let Some(message) = alerts::Message::new(
            &self.name,
            &self.namespace,
            hooks.phase,
            reason,
            text,
            &hooks.checksum,
        ) else {
            return;
        };
        let queued: Vec<_> = targets
            .into_iter()
            .map(|t| (t.clone(), message.clone()))
            .collect();
        let mut outbox = self.hooks.outbox.lock().unwrap_or_else(|p| p.into_inner());
        outbox.extend(queued);
    }

    /// Sends the alerts this reconcile queued (see [`Context::send_alerts`]).
    pub(super) fn send_alerts(&mut self) {
        let outbox = std::mem::take(
            self.hooks
                .outbox
                .get_mut()
                .unwrap_or_else(|p| p.into_inner()),
        );
        self.ctx
            .send_alerts(&self.deploy, self.hooks.alerts.clone(), outbox);
    }
}

impl Context {
    /// Sends `outbox`, alerts of `deploy`'s release among `alerts`, without waiting: each
    /// alert's messages in order, the alerts at once. A failure is logged, counted and
    /// recorded as an `AlertFailed` Event on the Deployment (one per failing alert and
    /// call); it changes nothing else.
    pub(super) fn send_alerts(
        &self,
        deploy: &dyn Workload,
        alerts: alerts::Alerts,
        outbox: Vec<(alerts::Target, alerts::Message)>,
    ) {
        if outbox.is_empty() {
            return;
        }
        let (sender, counts) = (self.alerts.clone(), self.alert_counts.clone());
        let (client, reporter) = (self.client.clone(), self.reporter.clone());
        let deployment = object_reference(deploy);
        let (namespace, name) = (namespace_of(deploy), name_of(deploy));
        let mut by_alert: Vec<(alerts::Target, Vec<alerts::Message>)> = Vec::new();
        for (target, message) in outbox {
            match by_alert.iter_mut().find(|(t, _)| *t == target) {
                Some((_, messages)) => messages.push(message),
                None => by_alert.push((target, vec![message])),
            }
        }
        tokio::spawn(async move {
            let sends = by_alert.iter().map(|(target, messages)| {
                let (sender, alerts, counts) = (&sender, &alerts, &counts);
                async move {
                    let mut failures = Vec::new();
                    for message in messages {
                        let result = sender.send(alerts, target, message).await;
                        if let Some(counts) = counts {
                            counts.observe(target.alert.type_.as_str(), result.is_ok());
                        }
                        failures.extend(result.err());
                    }
                    (messages.len(), failures)
                }
            });
            // One Event per failing alert: its last failure, and how many.
            for (sent, failures) in futures::future::join_all(sends).await {
                let Some(last) = failures.last() else {
                    continue;
                };
                let note = match (failures.len(), sent) {
                    (1, 1) => last.to_string(),
                    (failed, sent) => format!("{last} ({failed} of {sent} alerts failed)"),
                };
                let reason = Reason::AlertFailed.as_str();
                tracing::warn!(namespace, deployment = name, reason, "{note}");
                let event = Event {
                    type_: KubeEventType::Warning,
                    reason: reason.to_owned(),
                    note: Some(truncate(&note, 1000)),
                    action: reason.to_owned(),
                    secondary: None,
                };
                // A Recorder per Event, as in `publish`: one Recorder folds Events of the
                // same reason into one series that keeps the first note.
                let recorder = Recorder::new(client.clone(), reporter.clone());
                if let Err(e) = recorder.publish(&event, &deployment).await {
                    tracing::warn!(error = %e, "could not record an event");
                }
            }
        });
    }

    /// The chat alerts of the CanaryPolicies covering `deploy` now (none in the webhook,
    /// which has no policy index of the controller's). None, with a warning, while the
    /// policies cannot be read: alerts never hold up a release.
    pub(super) async fn alerts_of(&self, deploy: &dyn Workload) -> alerts::Alerts {
        let Some(index) = self.analysis.policies.as_deref() else {
            return alerts::Alerts::default();
        };
        let namespace = namespace_of(deploy);
        let no_labels = Default::default();
        let labels = deploy.meta().labels.as_ref().unwrap_or(&no_labels);
        match index.covering(&namespace, labels).await {
            Ok(covering) => alerts::Alerts::of(&covering),
            Err(e) => {
                let deployment = name_of(deploy);
                tracing::warn!(
                    namespace,
                    deployment,
                    "no chat alerts in this reconcile: {e}"
                );
                alerts::Alerts::default()
            }
        }
    }

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
        deploy: &dyn Workload,
        canary: Option<&Canary>,
        type_: EventType,
        reason: Reason,
        message: String,
    ) {
        let reason = reason.as_str();
        let (namespace, deployment) = (namespace_of(deploy), name_of(deploy));
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
        let mut references = vec![object_reference(deploy)];
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

fn namespace_of(workload: &dyn Workload) -> String {
    workload.meta().namespace.clone().unwrap_or_default()
}

fn name_of(workload: &dyn Workload) -> String {
    workload.meta().name.clone().unwrap_or_default()
}
