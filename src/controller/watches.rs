//! What the controller's watches keep and which of their events need a reconcile: the
//! predicates over Deployments, `-primary` Deployments, Canaries and HPAs, the slimming of
//! cached objects, and which opted-in workloads (Deployments or DaemonSets) use a changed
//! ConfigMap or Secret.

use futures::channel::mpsc::UnboundedReceiver;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::Controller;
use kube::runtime::reflector::store::Writer;
use kube::runtime::{WatchStreamExt, predicates, reflector, watcher};
use kube::{Api, Client};

use super::metrics::ReleaseMetrics;
use super::requests;
use crate::crd::Canary;
use crate::release::observe;
use crate::release::{ConfigKind, OWNER_LABEL, Tracking, config_refs};
use crate::spec::{MANAGED_LABEL, Workload};

/// What a Deployment event must change to need a reconcile: the spec, Serin's annotations
/// and label, or how far the rollout has come. The Deployment controller's other status
/// writes (condition timestamps and the like) do not.
pub(super) fn rollout_state(deploy: &Deployment) -> Option<u64> {
    use kube::ResourceExt;
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut hash = DefaultHasher::new();
    deploy.metadata.generation.hash(&mut hash);
    deploy
        .annotations()
        .iter()
        .filter(|(key, _)| key.starts_with(crate::spec::PREFIX))
        .for_each(|entry| entry.hash(&mut hash));
    deploy.labels().contains_key(MANAGED_LABEL).hash(&mut hash);
    let observed = observe::canary(deploy, 0);
    (
        observed.ready,
        observed.stalled,
        observe::primary(Some(deploy)).ready,
    )
        .hash(&mut hash);
    if let Some(status) = &deploy.status {
        (
            status.observed_generation,
            status.replicas,
            status.updated_replicas,
            status.ready_replicas,
            status.available_replicas,
        )
            .hash(&mut hash);
    }
    Some(hash.finish())
}

/// Marks the object of a Delete event as deleted (a `deletionTimestamp`), for [`or_deleted`].
/// Applied after the cache, which drops the object.
pub(super) fn mark_deleted<K: kube::Resource>(event: watcher::Event<K>) -> watcher::Event<K> {
    match event {
        watcher::Event::Delete(mut object) => {
            let meta = object.meta_mut();
            if meta.deletion_timestamp.is_none() {
                meta.deletion_timestamp =
                    Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                        k8s_openapi::jiff::Timestamp::now(),
                    ));
            }
            watcher::Event::Delete(object)
        }
        other => other,
    }
}

/// `predicate`, with a deletion as a change of its own. The last state a watch reports for
/// an object deleted without finalizers is often a state already seen, which `predicate`
/// alone would drop; a `-primary` or `Canary` removed behind Serin's back must reach a
/// reconcile, which makes it again. Objects of Delete events go through [`mark_deleted`].
pub(super) fn or_deleted<K: kube::Resource>(
    predicate: impl Fn(&K) -> Option<u64>,
) -> impl Fn(&K) -> Option<u64> {
    move |object| {
        use std::hash::{DefaultHasher, Hash, Hasher};
        let mut hash = DefaultHasher::new();
        predicate(object).hash(&mut hash);
        object.meta().deletion_timestamp.is_some().hash(&mut hash);
        Some(hash.finish())
    }
}

/// What a `-primary` Deployment event must change to need a reconcile: what the release
/// machine observes of it (Ready, the revision it runs) and its size. The steps of its
/// rollout in between (observed, updated, ready, available counts one by one) do not: a
/// thousand primaries starting at once would otherwise cost a few thousand reconciles.
pub(super) fn primary_state(primary: &Deployment) -> Option<u64> {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut hash = DefaultHasher::new();
    primary.metadata.generation.hash(&mut hash);
    primary.spec.as_ref().map(|s| s.replicas).hash(&mut hash);
    let observed = observe::primary(Some(primary));
    (observed.ready, observed.revision).hash(&mut hash);
    Some(hash.finish())
}

/// What a Canary event must change to need a reconcile: its spec (the generation) or the
/// runtime request written on it.
pub(super) fn spec_or_request(canary: &Canary) -> Option<u64> {
    use kube::ResourceExt;
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut hash = DefaultHasher::new();
    predicates::generation(canary).hash(&mut hash);
    for key in [requests::ACTION, requests::ACTION_ID] {
        canary.annotations().get(key).hash(&mut hash);
    }
    Some(hash.finish())
}

/// The opted-in workloads (Deployments or DaemonSets, by the store) whose pod template uses
/// the config `meta` names.
pub(super) fn users_of<K>(
    workloads: &reflector::Store<K>,
    kind: ConfigKind,
    meta: &kube::api::ObjectMeta,
) -> Vec<reflector::ObjectRef<K>>
where
    K: Workload + kube::Resource + Clone + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (Some(namespace), Some(name)) = (meta.namespace.as_deref(), meta.name.as_deref()) else {
        return Vec::new();
    };
    workloads
        .state()
        .iter()
        .filter(|w| Workload::meta(w.as_ref()).namespace.as_deref() == Some(namespace))
        .filter(|w| {
            w.template().is_some_and(|template| {
                config_refs(template)
                    .iter()
                    .any(|r| r.kind == kind && r.name == name)
            })
        })
        .map(|w| reflector::ObjectRef::from_obj(w.as_ref()))
        .collect()
}

/// What an HPA event must change to need a reconcile: its spec (not its status, which the
/// HPA controller rewrites every few seconds).
pub(super) fn hpa_spec(hpa: &HorizontalPodAutoscaler) -> Option<u64> {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut hash = DefaultHasher::new();
    serde_json::to_string(&hpa.spec).ok()?.hash(&mut hash);
    Some(hash.finish())
}

/// The Deployment a user's HPA scales (none for Serin's `-primary` copies, which follow it).
pub(super) fn hpa_target(
    hpa: &HorizontalPodAutoscaler,
) -> Option<reflector::ObjectRef<Deployment>> {
    use kube::ResourceExt;
    let target = &hpa.spec.scale_target_ref;
    if hpa.labels().contains_key(OWNER_LABEL) || target.kind != "Deployment" {
        return None;
    }
    Some(reflector::ObjectRef::new(&target.name).within(&hpa.namespace()?))
}

/// Drops what the controller never reads from a cached object.
pub(super) fn slim<K: kube::ResourceExt>(object: &mut K) {
    object.managed_fields_mut().clear();
    object
        .annotations_mut()
        .remove("kubectl.kubernetes.io/last-applied-configuration");
}

/// [`slim`], and drops what the controller never reads of a `-primary` Deployment: it
/// reads how far a primary has rolled out, its size and its revision annotation, never its
/// template (a copy of the user's, which a reconcile has at hand and is most of a
/// Deployment's size), its selector or its status conditions.
pub(super) fn slim_primary(primary: &mut Deployment) {
    slim(primary);
    if let Some(spec) = primary.spec.as_mut() {
        spec.template = Default::default();
        spec.selector = Default::default();
    }
    if let Some(status) = primary.status.as_mut() {
        status.conditions = None;
    }
}

/// The writers of the caches the watches fill.
pub(super) struct Writers {
    pub opted_in: Writer<Deployment>,
    pub primaries: Writer<Deployment>,
    pub canaries: Writer<Canary>,
    pub hpas: Writer<HorizontalPodAutoscaler>,
}

/// The Lease holder's watch-fed caches: what reconciles and the sweeper read, and the
/// writers the watches fill them through. The caches hold every opted-in Deployment, its
/// primary and its Canary: without the managed fields and kubectl's copy of the manifest they
/// are a fraction of the size.
pub(super) struct Stores {
    pub opted_in: reflector::Store<Deployment>,
    /// The opted-in DaemonSets, and the writer their controller's watch fills them through.
    pub daemonsets: reflector::Store<DaemonSet>,
    pub daemonsets_writer: Writer<DaemonSet>,
    pub primaries: reflector::Store<Deployment>,
    pub canaries: reflector::Store<Canary>,
    pub hpas: reflector::Store<HorizontalPodAutoscaler>,
    pub writers: Writers,
}

impl Stores {
    pub(super) fn new() -> Self {
        let (opted_in, opted_in_writer) = reflector::store();
        let (daemonsets, daemonsets_writer) = reflector::store();
        let (primaries, primaries_writer) = reflector::store();
        let (canaries, canaries_writer) = reflector::store();
        let (hpas, hpas_writer) = reflector::store();
        Self {
            opted_in,
            daemonsets,
            daemonsets_writer,
            primaries,
            canaries,
            hpas,
            writers: Writers {
                opted_in: opted_in_writer,
                primaries: primaries_writer,
                canaries: canaries_writer,
                hpas: hpas_writer,
            },
        }
    }
}

/// The controller over the opted-in Deployments of `reader`, with every watch whose events
/// need a reconcile: their Canaries and primaries, the HPAs that target them, the tracked
/// ConfigMaps and Secrets they use (`configs`, from [`watch_configs`]), and the analysis
/// answers (`answered`). A Canary's deletion takes its series out of `release_metrics`.
pub(super) fn controller(
    client: &Client,
    writers: Writers,
    reader: reflector::Store<Deployment>,
    configs: UnboundedReceiver<reflector::ObjectRef<Deployment>>,
    answered: UnboundedReceiver<reflector::ObjectRef<Deployment>>,
    release_metrics: Option<ReleaseMetrics>,
) -> Controller<Deployment> {
    let deployments: Api<Deployment> = Api::all(client.clone());
    let opted_in = watcher(
        deployments.clone(),
        watcher::Config::default().labels(MANAGED_LABEL),
    )
    .default_backoff()
    .modify(slim::<Deployment>)
    .reflect(writers.opted_in)
    .applied_objects()
    .predicate_filter(rollout_state, Default::default());
    let primaries = watcher(deployments, watcher::Config::default().labels(OWNER_LABEL))
        .default_backoff()
        .modify(slim_primary)
        .reflect(writers.primaries)
        .map_ok(mark_deleted)
        .touched_objects()
        .predicate_filter(or_deleted(primary_state), Default::default());
    // Serin's own status writes do not change a Canary's generation: only spec changes (and
    // its creation) and runtime requests need a reconcile. The cache saves a GET of the
    // Canary on every reconcile.
    // Decoded one by one: a Canary Serin cannot read must not empty the cache of all.
    let canaries = crate::tolerant::watch::<Canary>(client.clone(), watcher::Config::default())
        .default_backoff()
        .modify(slim::<Canary>)
        .reflect(writers.canaries)
        .inspect_ok(move |event| {
            if let (watcher::Event::Delete(canary), Some(metrics)) = (event, &release_metrics) {
                use kube::ResourceExt;
                metrics.forget(&canary.namespace().unwrap_or_default(), &canary.name_any());
            }
        })
        .map_ok(mark_deleted)
        .touched_objects()
        .predicate_filter(or_deleted(spec_or_request), Default::default());
    // A user's HPA that is created or changed (its spec: not the status the HPA controller
    // writes every few seconds) is copied to the primary by a reconcile of its target.
    let hpas = watcher(
        Api::<HorizontalPodAutoscaler>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .modify(slim::<HorizontalPodAutoscaler>)
    .reflect(writers.hpas)
    .applied_objects()
    .predicate_filter(hpa_spec, Default::default());
    Controller::for_stream(opted_in, reader)
        .reconcile_on(answered)
        .reconcile_on(configs)
        .owns_stream(canaries)
        .owns_stream(primaries)
        .watches_stream(hpas, |hpa| hpa_target(&hpa))
}

/// The controller of opted-in DaemonSets (label `serin.dev/canary`): the same reconcile
/// pipeline, queued by the DaemonSet's own changes (spec, Serin's annotations and label, how
/// far its rollout has come), by its `-primary` DaemonSet and its Canary (both owned by it),
/// by the tracked ConfigMaps and Secrets its pod template uses (`configs`, as for a
/// Deployment), and by the analysis answers (`answered`). `writer` fills the cache of opted-in
/// DaemonSets that `reader` reads; primaries are read from the API server at each reconcile.
pub(super) fn daemonset_controller(
    client: &Client,
    (reader, writer): (reflector::Store<DaemonSet>, Writer<DaemonSet>),
    configs: UnboundedReceiver<reflector::ObjectRef<DaemonSet>>,
    answered: UnboundedReceiver<reflector::ObjectRef<DaemonSet>>,
) -> Controller<DaemonSet> {
    let daemonsets: Api<DaemonSet> = Api::all(client.clone());
    let opted_in = watcher(
        daemonsets.clone(),
        watcher::Config::default().labels(MANAGED_LABEL),
    )
    .default_backoff()
    .modify(slim::<DaemonSet>)
    .reflect(writer)
    .applied_objects()
    .predicate_filter(daemonset_state, Default::default());
    let primaries = watcher(daemonsets, watcher::Config::default().labels(OWNER_LABEL))
        .default_backoff()
        .modify(slim::<DaemonSet>)
        .map_ok(mark_deleted)
        .touched_objects()
        .predicate_filter(or_deleted(daemonset_state), Default::default());
    let canaries = crate::tolerant::watch::<Canary>(client.clone(), watcher::Config::default())
        .default_backoff()
        .modify(slim::<Canary>)
        .map_ok(mark_deleted)
        .touched_objects()
        .predicate_filter(or_deleted(spec_or_request), Default::default());
    Controller::for_stream(opted_in, reader)
        .reconcile_on(answered)
        .reconcile_on(configs)
        .owns_stream(canaries)
        .owns_stream(primaries)
}

/// What a DaemonSet event (the user's or a `-primary`) must change to need a reconcile: the
/// spec, Serin's annotations and label, or the rollout counts the release reads.
pub(super) fn daemonset_state(daemonset: &DaemonSet) -> Option<u64> {
    use kube::ResourceExt;
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut hash = DefaultHasher::new();
    daemonset.metadata.generation.hash(&mut hash);
    daemonset
        .annotations()
        .iter()
        .filter(|(key, _)| key.starts_with(crate::spec::PREFIX))
        .for_each(|entry| entry.hash(&mut hash));
    daemonset
        .labels()
        .contains_key(MANAGED_LABEL)
        .hash(&mut hash);
    if let Some(status) = &daemonset.status {
        (
            status.observed_generation,
            status.desired_number_scheduled,
            status.updated_number_scheduled,
            status.number_ready,
            status.number_available,
        )
            .hash(&mut hash);
    }
    Some(hash.finish())
}

/// Sends each analysis answer to both controllers: a release's key is its namespace and
/// name, and the controller that holds no workload of that name skips it.
pub(super) fn fan_out(
    answered: Option<UnboundedReceiver<reflector::ObjectRef<Deployment>>>,
) -> (
    UnboundedReceiver<reflector::ObjectRef<Deployment>>,
    UnboundedReceiver<reflector::ObjectRef<DaemonSet>>,
) {
    let (to_deployments, deployments) = futures::channel::mpsc::unbounded();
    let (to_daemonsets, daemonsets) = futures::channel::mpsc::unbounded();
    if let Some(mut answered) = answered {
        tokio::spawn(async move {
            while let Some(release) = answered.next().await {
                let mut daemonset = reflector::ObjectRef::<DaemonSet>::new(&release.name);
                daemonset.namespace = release.namespace.clone();
                let sent = to_deployments.unbounded_send(release).is_ok();
                if !(to_daemonsets.unbounded_send(daemonset).is_ok() || sent) {
                    return; // both controllers have stopped
                }
            }
        });
    }
    (deployments, daemonsets)
}

/// The metadata of every `K` (a ConfigMap or a Secret) created or changed, as `kind`.
fn changes_of<K>(
    client: &Client,
    kind: ConfigKind,
) -> futures::stream::BoxStream<'static, Result<(ConfigKind, kube::api::ObjectMeta), watcher::Error>>
where
    K: kube::Resource<DynamicType = ()> + Clone + std::fmt::Debug + Send + Sync + 'static,
    K: serde::de::DeserializeOwned,
{
    watcher(
        Api::<PartialObjectMeta<K>>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .applied_objects()
    .map_ok(move |object| (kind, object.metadata))
    .boxed()
}

/// The opted-in workloads a tracked config's change queues, for each controller.
pub(super) struct ConfigUsers {
    pub deployments: UnboundedReceiver<reflector::ObjectRef<Deployment>>,
    pub daemonsets: UnboundedReceiver<reflector::ObjectRef<DaemonSet>>,
    /// The task that watches the configs; aborted when the controllers stop.
    pub task: tokio::task::JoinHandle<()>,
}

/// A tracked ConfigMap or Secret that changes is a new revision of every opted-in Deployment
/// and DaemonSet whose pod template uses it ([`users_of`] in each cache). One watch of
/// ConfigMaps (and, with Secret tracking, one of Secrets) serves both controllers: watching
/// every ConfigMap of the cluster once per kind of workload would double what the API server
/// sends. Metadata is enough to notice the change.
pub(super) fn watch_configs(
    client: &Client,
    tracking: Tracking,
    deployments: reflector::Store<Deployment>,
    daemonsets: reflector::Store<DaemonSet>,
) -> ConfigUsers {
    let (to_deployments, deployments_queued) = futures::channel::mpsc::unbounded();
    let (to_daemonsets, daemonsets_queued) = futures::channel::mpsc::unbounded();
    let config_maps = changes_of::<ConfigMap>(client, ConfigKind::ConfigMap);
    // Without Secret tracking there is no watch of Secrets at all: the base RBAC grants none.
    let changes = match tracking.secrets {
        false => config_maps,
        true => {
            let secrets = changes_of::<Secret>(client, ConfigKind::Secret);
            futures::stream::select(config_maps, secrets).boxed()
        }
    };
    let task = tokio::spawn(async move {
        let mut changes = changes;
        while let Some(change) = changes.next().await {
            let (kind, meta) = match change {
                Ok(change) => change,
                // The watch backs off and retries by itself.
                Err(e) => {
                    tracing::debug!(error = %e, "config watch");
                    continue;
                }
            };
            for user in users_of(&deployments, kind, &meta) {
                let _ = to_deployments.unbounded_send(user);
            }
            for user in users_of(&daemonsets, kind, &meta) {
                let _ = to_daemonsets.unbounded_send(user);
            }
        }
    });
    ConfigUsers {
        deployments: deployments_queued,
        daemonsets: daemonsets_queued,
        task,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStatus};

    fn primary(replicas: i32, status: DeploymentStatus) -> Deployment {
        let mut d = Deployment {
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                ..Default::default()
            }),
            status: Some(status),
            ..Default::default()
        };
        d.metadata.generation = Some(1);
        d
    }

    fn counts(observed: i64, updated: i32, ready: i32) -> DeploymentStatus {
        DeploymentStatus {
            observed_generation: Some(observed),
            replicas: Some(updated),
            updated_replicas: Some(updated),
            ready_replicas: Some(ready),
            available_replicas: Some(ready),
            ..Default::default()
        }
    }

    #[test]
    fn a_primary_rollout_reconciles_when_it_becomes_ready_not_at_each_count() {
        let created = primary_state(&primary(2, DeploymentStatus::default()));
        let observed = primary_state(&primary(2, counts(1, 2, 0)));
        let one_ready = primary_state(&primary(2, counts(1, 2, 1)));
        let ready = primary_state(&primary(2, counts(1, 2, 2)));
        assert_eq!(created, observed);
        assert_eq!(observed, one_ready);
        assert_ne!(one_ready, ready);
        // Resizing it is a change too (the machine keeps it at the user's count).
        assert_ne!(ready, primary_state(&primary(3, counts(1, 2, 2))));
    }

    #[test]
    fn a_deleted_primary_or_canary_is_a_change_to_the_predicates_and_applies_are_untouched() {
        let seen = primary(2, counts(1, 2, 2));
        let watcher::Event::Delete(deleted) = mark_deleted(watcher::Event::Delete(seen.clone()))
        else {
            panic!("a Delete stays a Delete");
        };
        let primaries = or_deleted(primary_state);
        assert_ne!(primaries(&deleted), primaries(&seen));
        let watcher::Event::Apply(applied) = mark_deleted(watcher::Event::Apply(seen.clone()))
        else {
            panic!("an Apply stays an Apply");
        };
        assert_eq!(applied, seen);

        let config = crate::spec::CanarySpec::defaults("web".into(), Some(8080));
        let canary = Canary::new("web", crate::crd::CanaryResourceSpec { config });
        let watcher::Event::Delete(gone) = mark_deleted(watcher::Event::Delete(canary.clone()))
        else {
            panic!("a Delete stays a Delete");
        };
        let canaries = or_deleted(spec_or_request);
        assert_ne!(canaries(&gone), canaries(&canary));
    }

    #[test]
    fn a_cached_primary_keeps_what_the_controller_observes() {
        let mut cached = primary(2, counts(1, 2, 2));
        cached.metadata.annotations = Some(
            [(
                crate::release::PRIMARY_REVISION_ANNOTATION.to_owned(),
                "abc".to_owned(),
            )]
            .into(),
        );
        if let Some(spec) = cached.spec.as_mut() {
            spec.template.metadata = Some(Default::default());
            spec.template.spec = Some(Default::default());
            spec.selector.match_labels = Some([("app".to_owned(), "web".to_owned())].into());
        }
        if let Some(status) = cached.status.as_mut() {
            status.conditions = Some(vec![Default::default()]);
        }
        let before = (observe::primary(Some(&cached)), primary_state(&cached));
        slim_primary(&mut cached);
        assert_eq!(
            (observe::primary(Some(&cached)), primary_state(&cached)),
            before
        );
        let spec = cached.spec.as_ref().expect("spec");
        assert_eq!(spec.template, Default::default());
        assert_eq!(spec.selector, Default::default());
        assert_eq!(spec.replicas, Some(2));
        assert_eq!(
            cached.status.as_ref().and_then(|s| s.conditions.as_ref()),
            None
        );
    }

    #[test]
    fn an_hpa_reconciles_its_target_on_spec_changes_only_and_serins_copies_none() {
        use k8s_openapi::api::autoscaling::v2::{
            HorizontalPodAutoscalerSpec, HorizontalPodAutoscalerStatus,
        };
        let mut hpa = HorizontalPodAutoscaler {
            spec: HorizontalPodAutoscalerSpec {
                max_replicas: 4,
                ..Default::default()
            },
            ..Default::default()
        };
        hpa.metadata.namespace = Some("prod".into());
        hpa.spec.scale_target_ref.kind = "Deployment".into();
        hpa.spec.scale_target_ref.name = "web".into();
        assert_eq!(
            hpa_target(&hpa),
            Some(reflector::ObjectRef::new("web").within("prod"))
        );
        let before = hpa_spec(&hpa);
        hpa.status = Some(HorizontalPodAutoscalerStatus {
            current_replicas: Some(3),
            ..Default::default()
        });
        assert_eq!(hpa_spec(&hpa), before);
        hpa.spec.max_replicas = 5;
        assert_ne!(hpa_spec(&hpa), before);

        hpa.metadata.labels = Some([(OWNER_LABEL.to_owned(), "web".to_owned())].into());
        assert_eq!(hpa_target(&hpa), None);
    }

    #[test]
    fn a_changed_config_map_queues_the_daemonsets_that_use_it_and_no_other() {
        let daemonset = |name: &str, namespace: &str, config: &str| -> DaemonSet {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "namespace": namespace},
                "spec": {
                    "selector": {"matchLabels": {"app": name}},
                    "template": {
                        "metadata": {"labels": {"app": name}},
                        "spec": {"containers": [{"name": "agent",
                                                 "envFrom": [{"configMapRef": {"name": config}}]}]}
                    }
                }
            }))
            .unwrap_or_else(|e| panic!("test DaemonSet: {e}"))
        };
        let (store, mut writer) = reflector::store::<DaemonSet>();
        for ds in [
            daemonset("agent", "prod", "agent-config"),
            daemonset("other", "prod", "other-config"),
            daemonset("agent", "staging", "agent-config"),
        ] {
            writer.apply_watcher_event(&watcher::Event::Apply(ds));
        }
        let users = |kind, namespace: &str, name: &str| {
            let meta = kube::api::ObjectMeta {
                name: Some(name.into()),
                namespace: Some(namespace.into()),
                ..Default::default()
            };
            users_of(&store, kind, &meta)
        };
        let agent = |namespace| vec![reflector::ObjectRef::new("agent").within(namespace)];
        let map = ConfigKind::ConfigMap;
        assert_eq!(users(map, "prod", "agent-config"), agent("prod"));
        // A Secret of the same name is another config; another namespace, another user.
        assert!(users(ConfigKind::Secret, "prod", "agent-config").is_empty());
        assert_eq!(users(map, "staging", "agent-config"), agent("staging"));
        assert!(users(map, "prod", "unused").is_empty());
    }
}
