//! The cluster's `CanaryPolicy` objects and namespace labels, as the Deployment webhooks see
//! them: two watch-fed caches (no request to the API server per review), and a read of the
//! `AnalysisTemplate` a Deployment names when a decision needs it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};

use crate::crd::{AnalysisTemplate, AnalysisTemplateSpec, CanaryPolicy};
use crate::policy::{NamedPolicy, Subject};

/// How long a review waits for the caches after Serin starts before it refuses (fail closed:
/// a policy must not be bypassed because Serin had not read it yet).
const READY_WAIT: Duration = Duration::from_secs(3);

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
