//! The cluster's `CanaryPolicy` objects and namespace labels, as the Deployment webhooks see
//! them: two watch-fed caches (no request to the API server per review), and a read of the
//! `AnalysisTemplate` a Deployment names when a decision needs it. The AnalysisTemplate
//! webhook asks the other way round: the policies of the Deployments that name a template
//! (one list of the namespace's Deployments' metadata per template write). The controller
//! keeps an index of its own, to judge a template again before it calls anything for it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::ListParams;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};

use crate::crd::{AnalysisTemplate, AnalysisTemplateSpec, CanaryPolicy};
use crate::policy::{NamedPolicy, Subject};

/// How long a review waits for the caches after Serin starts before it refuses (fail closed:
/// a policy must not be bypassed because Serin had not read it yet).
const READY_WAIT: Duration = Duration::from_secs(3);

/// The annotation naming a Deployment's AnalysisTemplate.
const ANALYSIS: &str = "serin.dev/analysis";

/// Watch-fed caches of policies and namespace labels.
pub struct PolicyIndex {
    client: Client,
    policies: Store<CanaryPolicy>,
    namespaces: Store<PartialObjectMeta<Namespace>>,
}

/// The caches were not filled in time.
#[derive(Debug, thiserror::Error)]
#[error("serin has not finished reading the cluster's CanaryPolicies; retry in a few seconds")]
pub struct NotReady;

impl PolicyIndex {
    /// Starts the two watches on the current runtime.
    pub fn start(client: Client) -> Arc<Self> {
        let (policies, policy_writer) = reflector::store();
        let policy_events = watcher(Api::<CanaryPolicy>::all(client.clone()), Default::default())
            .default_backoff()
            .reflect(policy_writer)
            .applied_objects();
        tokio::spawn(policy_events.for_each(|_| async {}));
        let (namespaces, namespace_writer) = reflector::store();
        let namespace_events = watcher(
            Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
            Default::default(),
        )
        .default_backoff()
        .reflect(namespace_writer)
        .applied_objects();
        tokio::spawn(namespace_events.for_each(|_| async {}));
        Arc::new(Self {
            client,
            policies,
            namespaces,
        })
    }

    async fn ready(&self) -> Result<(), NotReady> {
        // `Store::wait_until_ready` wakes only the last of several waiters, and reviews
        // arrive concurrently: each asks again every 50 ms (once filled, it answers at once).
        let deadline = tokio::time::Instant::now() + READY_WAIT;
        loop {
            let both = async {
                self.policies.wait_until_ready().await.ok();
                self.namespaces.wait_until_ready().await.ok();
            };
            if tokio::time::timeout(Duration::from_millis(50), both)
                .await
                .is_ok()
            {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(NotReady);
            }
        }
    }

    /// The policies covering a Deployment with `labels` in `namespace`.
    pub async fn covering(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<Vec<NamedPolicy>, NotReady> {
        self.ready().await?;
        let policies = self.policies.state();
        if policies.is_empty() {
            return Ok(Vec::new());
        }
        let namespace_labels = self.namespace_labels(namespace).await;
        let subject = Subject {
            namespace_labels: &namespace_labels,
            labels,
        };
        // Only the covering ones are copied: this runs on every review.
        let mut covering: Vec<NamedPolicy> = policies
            .iter()
            .filter(|p| p.spec.policy.applies_to(subject))
            .map(|p| NamedPolicy {
                name: p.metadata.name.clone().unwrap_or_default(),
                spec: p.spec.policy.clone(),
            })
            .collect();
        covering.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(covering)
    }

    /// A namespace created a moment ago may not be in the cache yet: then it is read.
    async fn namespace_labels(&self, namespace: &str) -> BTreeMap<String, String> {
        if let Some(meta) = self.namespaces.get(&ObjectRef::new(namespace)) {
            return meta.metadata.labels.clone().unwrap_or_default();
        }
        let api = Api::<PartialObjectMeta<Namespace>>::all(self.client.clone());
        match api.get_opt(namespace).await {
            Ok(Some(meta)) => meta.metadata.labels.unwrap_or_default(),
            // Kubernetes labels every namespace with its name; keep that much.
            _ => BTreeMap::from([(
                "kubernetes.io/metadata.name".to_owned(),
                namespace.to_owned(),
            )]),
        }
    }

    /// The policies covering the opted-in Deployments of `namespace` that name the
    /// AnalysisTemplate `template` in `serin.dev/analysis`, each once, in name order: a
    /// template is held to what the policies of the releases it runs in say. `Err` says why
    /// they could not be read (a refusal: a policy must not be bypassed).
    pub async fn covering_users_of(
        &self,
        namespace: &str,
        template: &str,
    ) -> Result<Vec<NamedPolicy>, String> {
        self.ready().await.map_err(|e| e.to_string())?;
        if self.policies.state().is_empty() {
            return Ok(Vec::new());
        }
        let deployments = Api::<Deployment>::namespaced(self.client.clone(), namespace)
            .list_metadata(&ListParams::default())
            .await
            .map_err(|e| {
                format!("serin could not list the Deployments that name AnalysisTemplate {template:?} ({e}); retry")
            })?;
        let mut found: Vec<NamedPolicy> = Vec::new();
        for deployment in &deployments.items {
            let annotations = deployment.metadata.annotations.as_ref();
            let named = |key: &str| annotations.and_then(|a| a.get(key)).map(String::as_str);
            if named(crate::spec::ENABLED) != Some("true") || named(ANALYSIS) != Some(template) {
                continue;
            }
            let no_labels = BTreeMap::new();
            let labels = deployment.metadata.labels.as_ref().unwrap_or(&no_labels);
            for policy in self
                .covering(namespace, labels)
                .await
                .map_err(|e| e.to_string())?
            {
                if !found.iter().any(|p| p.name == policy.name) {
                    found.push(policy);
                }
            }
        }
        found.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(found)
    }

    /// The `AnalysisTemplate` `name` in `namespace`; `None` when there is none.
    pub async fn template(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<AnalysisTemplateSpec>, kube::Error> {
        let api = Api::<AnalysisTemplate>::namespaced(self.client.clone(), namespace);
        Ok(api.get_opt(name).await?.map(|t| t.spec))
    }
}
