//! The cluster's `CanaryPolicy` objects and namespace labels, as the Deployment webhooks and
//! the controller see them (the one part of `policy` that reads the cluster): two watch-fed
//! caches (no request to the API server per review), and a read of the
//! `AnalysisTemplate` a Deployment names when a decision needs it. Beside them, what holds the
//! names an opt-in would take ([`PolicyIndex::names`]): a third cache, of the opted-in
//! Deployments' apex Services, and reads of the derived objects. The AnalysisTemplate
//! webhook asks the other way round: the policies of the Deployments that name a template
//! (one list of the namespace's Deployments' metadata per template write). The controller
//! keeps an index of its own, to judge a template again before it calls anything for it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::ListParams;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};

use super::{NamedPolicy, Subject};
use crate::crd::{AnalysisTemplate, AnalysisTemplateSpec, CanaryPolicy};
use crate::release::{CANARY_SUFFIX, OWNER_LABEL, PRIMARY_SUFFIX, primary_name};
use crate::spec::{ENABLED, MANAGED_LABEL, WorkloadKind};

/// The annotation that names a Deployment's apex Service (written explicitly by the mutating
/// webhook); the Deployment's name when absent.
const SERVICE: &str = "serin.dev/service";

/// How long a review waits for the caches after Serin starts before it refuses (fail closed:
/// a policy must not be bypassed because Serin had not read it yet).
const READY_WAIT: Duration = Duration::from_secs(3);

/// The annotation naming a Deployment's AnalysisTemplate.
const ANALYSIS: &str = "serin.dev/analysis";

/// The objects found under the names an opted-in Deployment derives (`<name>-primary`, the
/// Services `<svc>`, `<svc>-primary`, `<svc>-canary`), and the apex Service of every opted-in
/// Deployment of the namespace.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Names {
    /// Objects that exist (others may be listed too: only the derived names are looked at).
    pub objects: Vec<Occupant>,
    /// `(Deployment, its serin.dev/service)` of the namespace's opted-in Deployments.
    pub services: Vec<(String, String)>,
}

/// An existing object and who manages it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Occupant {
    /// `Deployment` or `Service`.
    pub kind: String,
    pub name: String,
    /// Its `serin.dev/owner` label: the Deployment Serin manages it for.
    pub owner: Option<String>,
    /// Its controlling owner reference, `(kind, name)`.
    pub controller: Option<(String, String)>,
}

impl Occupant {
    /// From an object's metadata.
    pub fn of(kind: &str, meta: &ObjectMeta) -> Self {
        let controller = meta
            .owner_references
            .iter()
            .flatten()
            .find(|r| r.controller == Some(true))
            .map(|r| (r.kind.clone(), r.name.clone()));
        Occupant {
            kind: kind.to_owned(),
            name: meta.name.clone().unwrap_or_default(),
            owner: meta
                .labels
                .as_ref()
                .and_then(|l| l.get(OWNER_LABEL))
                .cloned(),
            controller,
        }
    }
}

/// Watch-fed caches of policies, namespace labels and opted-in Deployments.
pub struct PolicyIndex {
    client: Client,
    policies: Store<CanaryPolicy>,
    namespaces: Store<PartialObjectMeta<Namespace>>,
    /// Deployments labelled [`MANAGED_LABEL`], reduced to name, namespace and the two
    /// annotations that say which apex Service they take.
    opted_in: Store<PartialObjectMeta<Deployment>>,
}

/// The caches were not filled in time.
#[derive(Debug, thiserror::Error)]
#[error(
    "serin has not finished reading the cluster's CanaryPolicies and opted-in Deployments; \
     retry in a few seconds"
)]
pub struct NotReady;

impl std::fmt::Debug for PolicyIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyIndex")
            .field("policies", &self.policies.state().len())
            .finish_non_exhaustive()
    }
}

impl PolicyIndex {
    /// Starts the three watches on the current runtime.
    pub fn start(client: Client) -> Arc<Self> {
        let (policies, policy_writer) = reflector::store();
        // Decoded one by one: a policy Serin cannot read must not hold up every review.
        let policy_events =
            crate::tolerant::watch::<CanaryPolicy>(client.clone(), Default::default())
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
        let (opted_in, opted_in_writer) = reflector::store();
        let opted_in_events = watcher(
            Api::<PartialObjectMeta<Deployment>>::all(client.clone()),
            watcher::Config::default().labels(MANAGED_LABEL),
        )
        .default_backoff()
        .modify(|deploy: &mut PartialObjectMeta<Deployment>| {
            let meta = &mut deploy.metadata;
            if let Some(annotations) = meta.annotations.as_mut() {
                annotations.retain(|key, _| key == SERVICE || key == ENABLED);
            }
            meta.managed_fields = None;
            meta.labels = None;
            meta.owner_references = None;
        })
        .reflect(opted_in_writer)
        .applied_objects();
        tokio::spawn(opted_in_events.for_each(|_| async {}));
        Arc::new(Self {
            client,
            policies,
            namespaces,
            opted_in,
        })
    }

    /// Whether the three caches are filled, waiting up to `wait`. `Store::wait_until_ready`
    /// wakes only the last of several waiters, and reviews arrive concurrently: so callers
    /// ask again every so often rather than wait once (once filled, it answers at once).
    async fn filled_within(&self, wait: Duration) -> bool {
        let all = async {
            self.policies.wait_until_ready().await.ok();
            self.namespaces.wait_until_ready().await.ok();
            self.opted_in.wait_until_ready().await.ok();
        };
        tokio::time::timeout(wait, all).await.is_ok()
    }

    /// Completes once the three caches have been filled from their first list (however long
    /// that takes): what readiness waits for.
    pub async fn synced(&self) {
        while !self.filled_within(Duration::from_millis(200)).await {}
    }

    /// Ok once the caches are filled; [`NotReady`] after [`READY_WAIT`].
    async fn ready(&self) -> Result<(), NotReady> {
        let deadline = tokio::time::Instant::now() + READY_WAIT;
        while !self.filled_within(Duration::from_millis(50)).await {
            if tokio::time::Instant::now() >= deadline {
                return Err(NotReady);
            }
        }
        Ok(())
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

    /// What holds the names the opt-in of workload `name` (of `kind`) with apex Service
    /// `service` would take in `namespace`: the objects under the derived names (four reads of
    /// metadata, at once; the `-primary` of the workload's own kind) and the apex Services of
    /// the namespace's other opted-in Deployments (from the cache, so that the cost does not
    /// grow with their number).
    pub async fn names(
        &self,
        namespace: &str,
        kind: WorkloadKind,
        name: &str,
        service: &str,
    ) -> Result<Names, String> {
        self.ready().await.map_err(|e| e.to_string())?;
        let services = Api::<Service>::namespaced(self.client.clone(), namespace);
        let primary = primary_name(name);
        let primary_found = async {
            match kind {
                WorkloadKind::Deployment => {
                    Api::<Deployment>::namespaced(self.client.clone(), namespace)
                        .get_metadata_opt(&primary)
                        .await
                        .map(|found| found.map(|m| m.metadata))
                }
                WorkloadKind::DaemonSet => {
                    Api::<DaemonSet>::namespaced(self.client.clone(), namespace)
                        .get_metadata_opt(&primary)
                        .await
                        .map(|found| found.map(|m| m.metadata))
                }
            }
        };
        let service_names = [
            service.to_owned(),
            format!("{service}{PRIMARY_SUFFIX}"),
            format!("{service}{CANARY_SUFFIX}"),
        ];
        let (found_primary, found) = futures::join!(
            primary_found,
            futures::future::join_all(service_names.iter().map(|s| services.get_metadata_opt(s)))
        );
        let read = |kind: &str, what: &str, e: kube::Error| {
            format!("serin could not read {kind} {what:?} ({e}); retry")
        };
        let mut objects = Vec::new();
        if let Some(meta) = found_primary.map_err(|e| read(kind.as_str(), &primary, e))? {
            objects.push(Occupant::of(kind.as_str(), &meta));
        }
        for (result, svc) in found.into_iter().zip(&service_names) {
            if let Some(meta) = result.map_err(|e| read("Service", svc, e))? {
                objects.push(Occupant::of("Service", &meta.metadata));
            }
        }
        let services = self
            .opted_in
            .state()
            .iter()
            .filter(|d| d.metadata.namespace.as_deref() == Some(namespace))
            .filter_map(|d| {
                let annotations = d.metadata.annotations.as_ref();
                let enabled = annotations.and_then(|a| a.get(ENABLED));
                let deploy = d.metadata.name.clone()?;
                let service = annotations
                    .and_then(|a| a.get(SERVICE))
                    .cloned()
                    .unwrap_or_else(|| deploy.clone());
                (enabled.map(String::as_str) == Some("true")).then_some((deploy, service))
            })
            .collect();
        Ok(Names { objects, services })
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
