//! The machinery Serin keeps beside an opted-in Deployment, ensured, applied and removed:
//! the `Canary`, `<name>-primary`, the three Services, the `-primary` copies of tracked
//! configs and of the HPA, and the Deployment's own scale and label. [`inject`] is the one
//! door the admission webhook has into the controller.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use super::cache::{read_through, saw};
use super::context::{Context, Error, apply_params};
use super::context::{Read, Release};
use super::workload::{Primary, Target};
use crate::crd::{Canary, CanaryResourceSpec};
use crate::release::observe::spec_replicas;
use crate::release::{
    self, ConfigKind, EventType, OWNER_LABEL, Phase, Reason, ReleaseStatus, TrackedConfig,
};
use crate::router::configured_router;
use crate::spec::{self, MANAGED_LABEL, OptIn, Workload};

/// What [`inject`] writes with: the webhook's cluster access and the operator's choices of
/// configs and routers (no caches: the webhook reads from the API server).
pub struct Injector(Context);

impl Injector {
    pub fn new(client: kube::Client, options: &super::Options) -> anyhow::Result<Self> {
        Ok(Self(Context::new(client, options)?))
    }

    /// The cluster access it writes with.
    pub fn client(&self) -> &kube::Client {
        &self.0.client
    }
}

/// The fast path of admission (SPEC "What admission does"): when an update opts an existing
/// Deployment in, the mutating webhook creates at once what needs no Ready primary — the
/// `Canary`, the `-primary` copies of tracked configs, `<name>-primary`, and the `-primary`
/// and `-canary` Services — all owned by the Deployment. The apex Service and the router wait
/// for the controller and a Ready primary: pointing traffic at a primary with no Ready pod
/// would leave the Service without endpoints. Returns what was created, for admission
/// warnings. Objects that exist are left alone.
pub async fn inject(injector: &Injector, deploy: &Deployment) -> Result<Vec<String>, Error> {
    let ctx = &injector.0;
    let Ok(OptIn::Enabled(spec)) = spec::read_deployment(deploy) else {
        return Ok(Vec::new());
    };
    let router = configured_router(spec.provider, &ctx.routers);
    let namespace = deploy.namespace().ok_or(Error::NoNamespace)?;
    let name = deploy.name_any();
    let canaries: Api<Canary> = Api::namespaced(ctx.client.clone(), &namespace);
    let canary = canaries.get_opt(&name).await?;
    let target = Target::Deployment(deploy);
    let mut release = Release::new(ctx, target, namespace, name, spec, router, canary);
    let mut created = Vec::new();
    if release.canary.is_none() {
        release.ensure_canary_object().await?;
        created.push(format!("Canary {}", release.name));
    }
    let primary_name = release::primary_name(&release.name);
    if release.primary(&primary_name).await?.is_none() {
        let template = release::release_template(deploy);
        let configs = release.tracked_configs(&template).await?;
        let tracked: Vec<TrackedConfig> = configs.iter().map(Config::tracked).collect();
        release.copy_configs(&configs).await?;
        release
            .apply_primary(&release::revision(&template, &tracked), Creating::Yes)
            .await?;
        created.push(format!("Deployment {primary_name}"));
    }
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), &release.namespace);
    let [_apex, primary_svc, canary_svc] = release::services(deploy, &release.spec)?;
    for service in [primary_svc, canary_svc] {
        let svc_name = service.name_any();
        if services.get_opt(&svc_name).await?.is_none() {
            services
                .patch(&svc_name, &apply_params(), &Patch::Apply(&service))
                .await?;
            created.push(format!("Service {svc_name}"));
        }
    }
    Ok(created)
}

impl Release<'_> {
    /// The primary (from the cache when current), the tracked configs as stored, the revision
    /// and the replicas the user wants.
    pub(super) async fn read(&self) -> Result<Read, Error> {
        let primary = self.primary(&release::primary_name(&self.name)).await?;
        let template = release::release_template(&self.deploy);
        let configs = self.tracked_configs(&template).await?;
        let tracked: Vec<TrackedConfig> = configs.iter().map(Config::tracked).collect();
        let revision = release::revision(&template, &tracked);
        let desired = self.deploy.desired_replicas(primary.as_ref());
        Ok(Read {
            primary,
            configs,
            revision,
            desired,
        })
    }

    /// Makes sure the machinery of an opted-in Deployment exists and is as configured: the
    /// Canary, the primary (and its config copies), the HPA copy, the Services, the primary's
    /// size. True when the router object must be applied again (see [`release::repairs`]).
    pub(super) async fn ensure(
        &mut self,
        status: &ReleaseStatus,
        read: &mut Read,
    ) -> Result<bool, Error> {
        let spec_changed = self.ensure_canary_object().await?;
        let created = read.primary.is_none();
        if created {
            self.copy_configs(&read.configs).await?;
            read.primary = Some(self.apply_primary(&read.revision, Creating::Yes).await?);
            // The first creation is told by the `Initialized` Event once the primary is
            // Ready (two Event writes fewer per opted-in Deployment); a primary that had
            // to be made again is news of its own.
            if status.phase != Phase::Initializing {
                let primary_name = release::primary_name(&self.name);
                let revision = &read.revision;
                self.event(
                    EventType::Warning,
                    Reason::PrimaryRecreated,
                    format!(
                        "{primary_name} was missing: created it again from revision \
                         {revision}; waiting for it to be Ready"
                    ),
                )
                .await;
            }
        }
        let changes = release::Changes {
            spec: spec_changed,
            generation: self.observed_generation_changed(),
            primary_created: created,
            primary_ready: Primary::observe(read.primary.as_ref()).ready,
        };
        let due = release::repairs(status, &read.revision, changes);
        if due.services {
            self.apply_services().await?;
        }
        let Target::Deployment(_) = self.deploy else {
            // No HPA can scale a DaemonSet, nor is a primary DaemonSet sized.
            self.autoscaled = Some(false);
            return Ok(due.router);
        };
        let hpa = self.primary_hpa().await?;
        self.autoscaled = Some(hpa.is_some());
        if let Some(hpa) = &hpa
            && (due.hpa || self.hpa_copy_differs(hpa))
        {
            self.apply_primary_hpa(hpa).await?;
        }
        if let Some(Primary::Deployment(p)) = read.primary.as_ref() {
            self.scale_primary(p, read.desired).await?;
        }
        Ok(due.router)
    }
}

impl Release<'_> {
    pub(super) fn deployments(&self) -> Api<Deployment> {
        Api::namespaced(self.ctx.client.clone(), &self.namespace)
    }

    pub(super) fn daemonsets(&self) -> Api<DaemonSet> {
        Api::namespaced(self.ctx.client.clone(), &self.namespace)
    }

    /// The primary, from the controller's cache when it is current (see [`cache`]); a
    /// primary DaemonSet is read from the API server (the cache holds Deployments).
    pub(super) async fn primary(&self, name: &str) -> Result<Option<Primary>, Error> {
        Ok(match self.deploy {
            Target::Deployment(_) => read_through(
                self.ctx.primaries.as_ref(),
                &self.deployments(),
                &self.namespace,
                name,
            )
            .await?
            .map(Primary::Deployment),
            Target::DaemonSet(_) => read_through(None, &self.daemonsets(), &self.namespace, name)
                .await?
                .map(Primary::DaemonSet),
        })
    }

    /// The `Canary` object: created when missing, its spec kept equal to the effective
    /// configuration. True when it was written.
    pub(super) async fn ensure_canary_object(&mut self) -> Result<bool, Error> {
        let wanted = CanaryResourceSpec {
            config: self.spec.clone(),
        };
        if self.canary.as_ref().is_some_and(|c| c.spec == wanted) {
            return Ok(false);
        }
        let mut object = Canary::new(&self.name, wanted);
        object.metadata.namespace = Some(self.namespace.clone());
        object.metadata.owner_references = release::owner_references(&self.deploy);
        object.metadata.labels = Some([(OWNER_LABEL.to_owned(), self.name.clone())].into());
        let api: Api<Canary> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        let applied = api
            .patch(&self.name, &apply_params(), &Patch::Apply(&object))
            .await?;
        saw(&self.ctx.canaries, &applied.metadata);
        self.canary = Some(applied);
        Ok(true)
    }

    pub(super) async fn apply_primary(
        &mut self,
        revision: &str,
        creating: Creating,
    ) -> Result<Primary, Error> {
        let name = release::primary_name(&self.name);
        let deploy = match self.deploy {
            Target::Deployment(deploy) => deploy,
            Target::DaemonSet(daemonset) => {
                let primary = release::primary_daemonset(daemonset, revision, self.ctx.tracking)?;
                let applied = self
                    .daemonsets()
                    .patch(&name, &apply_params(), &Patch::Apply(&primary))
                    .await?;
                return Ok(Primary::DaemonSet(applied));
            }
        };
        let mut primary = release::primary_deployment(deploy, revision, self.ctx.tracking)?;
        if creating == Creating::No && self.is_autoscaled().await? {
            // The HPA's: a replica count in Serin's apply would take it back at every copy.
            if let Some(spec) = primary.spec.as_mut() {
                spec.replicas = None;
            }
        }
        let applied = self
            .deployments()
            .patch(&name, &apply_params(), &Patch::Apply(&primary))
            .await?;
        saw(&self.ctx.primaries, &applied.metadata);
        Ok(Primary::Deployment(applied))
    }

    /// Keeps the primary at the user's replica count (an HPA on the primary owns it instead).
    pub(super) async fn scale_primary(
        &mut self,
        primary: &Deployment,
        desired: i32,
    ) -> Result<(), Error> {
        if spec_replicas(primary) == Some(desired) || self.is_autoscaled().await? {
            return Ok(());
        }
        let name = primary.name_any();
        let scale = self
            .deployments()
            .patch_scale(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"replicas": desired}})),
            )
            .await?;
        // The Scale carries the Deployment's resourceVersion.
        saw(&self.ctx.primaries, &scale.metadata);
        Ok(())
    }

    pub(super) async fn is_autoscaled(&mut self) -> Result<bool, Error> {
        if let Some(known) = self.autoscaled {
            return Ok(known);
        }
        let autoscaled = self.primary_hpa().await?.is_some();
        self.autoscaled = Some(autoscaled);
        Ok(autoscaled)
    }

    /// The user's HPA that targets the Deployment, as the `-primary` copy that targets the
    /// primary; `None` when no HPA targets it. From the controller's cache of HPAs (a
    /// request saved on each reconcile), or a LIST in the webhook.
    pub(super) async fn primary_hpa(&self) -> Result<Option<HorizontalPodAutoscaler>, Error> {
        let Target::Deployment(deploy) = self.deploy else {
            return Ok(None); // no HPA can scale a DaemonSet
        };
        let hpas: Vec<Arc<HorizontalPodAutoscaler>> = match &self.ctx.hpas {
            Some(store) => store.state(),
            None => {
                let api: Api<HorizontalPodAutoscaler> =
                    Api::namespaced(self.ctx.client.clone(), &self.namespace);
                let listed = api.list(&ListParams::default()).await?.items;
                listed.into_iter().map(Arc::new).collect()
            }
        };
        for hpa in hpas {
            if hpa.namespace().as_deref() != Some(self.namespace.as_str())
                || hpa.labels().contains_key(OWNER_LABEL)
            {
                continue; // another namespace's, or a copy of Serin's own
            }
            if let Some(copy) = release::primary_hpa(&hpa, deploy)? {
                return Ok(Some(copy));
            }
        }
        Ok(None)
    }

    /// The `-primary` copy in the controller's cache is missing or has another spec than
    /// `wanted` (the user changed their HPA). Without a cache: false (the copy is applied
    /// when due).
    pub(super) fn hpa_copy_differs(&self, wanted: &HorizontalPodAutoscaler) -> bool {
        let Some(store) = &self.ctx.hpas else {
            return false;
        };
        let key =
            kube::runtime::reflector::ObjectRef::new(&wanted.name_any()).within(&self.namespace);
        store.get(&key).is_none_or(|copy| copy.spec != wanted.spec)
    }

    pub(super) async fn apply_primary_hpa(
        &self,
        hpa: &HorizontalPodAutoscaler,
    ) -> Result<(), Error> {
        let api: Api<HorizontalPodAutoscaler> =
            Api::namespaced(self.ctx.client.clone(), &self.namespace);
        api.patch(&hpa.name_any(), &apply_params(), &Patch::Apply(hpa))
            .await?;
        Ok(())
    }

    /// A DaemonSet is idled or woken instead ([`release::idle`]).
    pub(super) async fn scale_canary(&self, replicas: i32) -> Result<(), Error> {
        let deploy = match self.deploy {
            Target::Deployment(deploy) => deploy,
            Target::DaemonSet(daemonset) => {
                let idle = release::idle::idle_for(replicas);
                if release::idle::is_idle(daemonset) == idle {
                    return Ok(());
                }
                let patch = release::idle::idle_patch(idle);
                self.daemonsets()
                    .patch(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
                return Ok(());
            }
        };
        if spec_replicas(deploy) == Some(replicas) {
            return Ok(());
        }
        self.deployments()
            .patch_scale(
                &self.name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"replicas": replicas}})),
            )
            .await?;
        Ok(())
    }

    /// Records a count the user gave the Deployment between releases as their request for
    /// the primary; the change of Serin's annotation brings the reconcile that sizes it.
    pub(super) async fn record_desired_replicas(&self, replicas: i32) -> Result<(), Error> {
        if let Target::DaemonSet(_) = self.deploy {
            return Ok(()); // nothing sizes a DaemonSet; its canary's size is its idle switch
        }
        let annotations = json!({ crate::spec::DESIRED_REPLICAS: replicas.to_string() });
        self.deployments()
            .patch(
                &self.name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": annotations}})),
            )
            .await?;
        Ok(())
    }

    pub(super) async fn apply_services(&self) -> Result<(), Error> {
        let api: Api<Service> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        for service in release::services(&self.deploy, &self.spec)? {
            let name = service.name_any();
            api.patch(&name, &apply_params(), &Patch::Apply(&service))
                .await?;
        }
        Ok(())
    }

    /// The tracked ConfigMaps and Secrets the pod template uses, as stored (missing optional
    /// ones are left out; Kubernetes starts the pods without them too). Untracked Secrets
    /// are never read.
    pub(super) async fn tracked_configs(
        &self,
        template: &k8s_openapi::api::core::v1::PodTemplateSpec,
    ) -> Result<Vec<Config>, Error> {
        let mut configs = Vec::new();
        for reference in self.ctx.tracking.refs(template) {
            match reference.kind {
                ConfigKind::ConfigMap => {
                    let api: Api<ConfigMap> =
                        Api::namespaced(self.ctx.client.clone(), &self.namespace);
                    if let Some(cm) = api.get_opt(&reference.name).await? {
                        configs.push(Config::Map(cm));
                    }
                }
                ConfigKind::Secret => {
                    let api: Api<Secret> =
                        Api::namespaced(self.ctx.client.clone(), &self.namespace);
                    if let Some(secret) = api.get_opt(&reference.name).await? {
                        configs.push(Config::Secret(secret));
                    }
                }
            }
        }
        Ok(configs)
    }

    pub(super) async fn copy_configs(&self, configs: &[Config]) -> Result<(), Error> {
        for config in configs {
            match config {
                Config::Map(cm) => {
                    let copy = release::primary_config_map(cm, &self.deploy)?;
                    let api: Api<ConfigMap> =
                        Api::namespaced(self.ctx.client.clone(), &self.namespace);
                    api.patch(&copy.name_any(), &apply_params(), &Patch::Apply(&copy))
                        .await?;
                }
                Config::Secret(secret) => {
                    let copy = release::primary_secret(secret, &self.deploy)?;
                    let api: Api<Secret> =
                        Api::namespaced(self.ctx.client.clone(), &self.namespace);
                    api.patch(&copy.name_any(), &apply_params(), &Patch::Apply(&copy))
                        .await?;
                }
            }
        }
        Ok(())
    }

    /// Opting out, once the original is Ready again: the apex Service goes back to the
    /// original's pods first, then everything else Serin made is deleted, then the Canary,
    /// and last the label that put the Deployment in Serin's watch.
    pub(super) async fn remove_machinery(&self) -> Result<(), Error> {
        let services: Api<Service> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        let [apex, primary_svc, canary_svc] = release::services(&self.deploy, &self.spec)?;
        let canary_spec = canary_svc.spec.clone().unwrap_or_default();
        let (original_selector, ports) = (
            canary_spec.selector.unwrap_or_default(),
            canary_spec.ports.unwrap_or_default(),
        );
        // Applying the apex without Serin's label and owner drops them: the Service stays,
        // as users had it before opting in, selecting the original's pods.
        let apex_name = apex.name_any();
        let restored = json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": apex_name, "namespace": self.namespace},
            "spec": {"selector": original_selector, "ports": ports},
        });
        services
            .patch(&apex_name, &apply_params(), &Patch::Apply(&restored))
            .await?;
        let delete = DeleteParams::background();
        ignore_missing(self.router_api().delete(&self.router_name(), &delete).await)?;
        self.delete_companions(|_| true).await?;
        let owned = ListParams::default().labels(&format!("{OWNER_LABEL}={}", self.name));
        for svc in [primary_svc, canary_svc] {
            ignore_missing(services.delete(&svc.name_any(), &delete).await)?;
        }
        let primary = release::primary_name(&self.name);
        match self.deploy {
            Target::Deployment(_) => {
                ignore_missing(self.deployments().delete(&primary, &delete).await)?;
                if let Some(cache) = &self.ctx.primaries {
                    cache.gone(&self.namespace, &primary);
                }
            }
            Target::DaemonSet(_) => {
                ignore_missing(self.daemonsets().delete(&primary, &delete).await)?;
            }
        }
        let maps: Api<ConfigMap> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        for cm in maps.list_metadata(&owned).await? {
            ignore_missing(maps.delete(&cm.name_any(), &delete).await)?;
        }
        // Without Secret tracking there are no copies to delete, nor RBAC to list them;
        // copies from when it was on go with the Deployment (owner references).
        if self.ctx.tracking.secrets {
            let secrets: Api<Secret> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
            for secret in secrets.list_metadata(&owned).await? {
                ignore_missing(secrets.delete(&secret.name_any(), &delete).await)?;
            }
        }
        let hpas: Api<HorizontalPodAutoscaler> =
            Api::namespaced(self.ctx.client.clone(), &self.namespace);
        for hpa in hpas.list_metadata(&owned).await? {
            ignore_missing(hpas.delete(&hpa.name_any(), &delete).await)?;
        }
        self.event(
            EventType::Normal,
            Reason::OptedOut,
            format!("The Deployment serves again through Service {apex_name}; removed {primary} and the router"),
        )
        .await;
        let canaries: Api<Canary> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        ignore_missing(canaries.delete(&self.name, &delete).await)?;
        if let Some(cache) = &self.ctx.canaries {
            cache.gone(&self.namespace, &self.name);
        }
        remove_label(self.ctx, self.deploy).await
    }
}

/// Whether the primary is being created (it starts at the user's replica count even under an
/// HPA, which then takes over) or updated (an HPA's count is left alone).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Creating {
    Yes,
    No,
}

/// A tracked ConfigMap or Secret as stored.
pub(super) enum Config {
    Map(ConfigMap),
    Secret(Secret),
}

impl Config {
    pub(super) fn tracked(&self) -> TrackedConfig {
        match self {
            Config::Map(cm) => TrackedConfig::from_config_map(cm),
            Config::Secret(secret) => TrackedConfig::from_secret(secret),
        }
    }
}

pub(super) fn ignore_missing<T>(result: kube::Result<T>) -> Result<(), Error> {
    match result {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(Error::Kube(e)),
    }
}

/// Takes the workload out of Serin's watch once nothing of Serin's is left.
pub(super) async fn remove_label(ctx: &Context, deploy: Target<'_>) -> Result<(), Error> {
    let has_label = deploy
        .meta()
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key(MANAGED_LABEL));
    if !has_label {
        return Ok(());
    }
    let (Some(namespace), Some(name)) = (&deploy.meta().namespace, &deploy.meta().name) else {
        return Ok(());
    };
    let patch = json!({"metadata": {"labels": {MANAGED_LABEL: null}}});
    let (params, patch) = (PatchParams::default(), Patch::Merge(&patch));
    match deploy {
        Target::Deployment(_) => {
            let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), namespace);
            api.patch(name, &params, &patch).await?;
        }
        Target::DaemonSet(_) => {
            let api: Api<DaemonSet> = Api::namespaced(ctx.client.clone(), namespace);
            api.patch(name, &params, &patch).await?;
        }
    }
    Ok(())
}
