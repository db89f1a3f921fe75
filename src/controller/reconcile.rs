//! One reconcile of an opted-in Deployment, as a pipeline: read the Deployment and what Serin
//! keeps beside it → make sure the machinery exists → observe → [`release::step`] (measuring
//! and calling gates when it asks) → perform the actions → write `Canary.status`.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::core::DynamicObject;
use kube::runtime::controller::Action as Requeue;
use kube::runtime::events::{Event, EventType as KubeEventType, Recorder};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use super::cache::{Cache, Lookup};
use super::requests::{self, Settled, StepContext};
use super::{Context, Error, FIELD_MANAGER, analysis, observe};
use crate::crd::{AnalysisTemplate, Canary, CanaryResourceSpec, CanaryStatus};
use crate::release::{
    self, Action, ConfigKind, EventType, HookKind, OWNER_LABEL, Observations, Phase, Reason,
    ReleaseStatus, TrackedConfig,
};
use crate::router::{Router, Weights, configured_router};
use crate::spec::{self, CanarySpec, MANAGED_LABEL, OptIn};

pub(super) fn apply_params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

/// The objects of one Deployment, read once per reconcile.
struct Release<'a> {
    ctx: &'a Context,
    deploy: &'a Deployment,
    namespace: String,
    name: String,
    spec: CanarySpec,
    router: Box<dyn Router>,
    canary: Option<Canary>,
    /// An HPA targets the Deployment, so its `-primary` copy sizes the primary; looked up
    /// (one LIST) only when a reconcile needs to know.
    autoscaled: Option<bool>,
    /// What `event` webhooks are told with each Event: the template once read, and the
    /// phase and revision of the release at that point of the reconcile.
    hooks: EventHooks,
}

/// The `event` webhooks of a release and the payload fields they get.
#[derive(Default)]
struct EventHooks {
    template: Option<crate::crd::AnalysisTemplateSpec>,
    phase: Phase,
    checksum: String,
}

pub async fn reconcile(deploy: Arc<Deployment>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    // A Deployment on its way out takes what Serin made with it (owner references): making
    // any of it again would only hold up a foreground deletion.
    if deploy.metadata.deletion_timestamp.is_some() {
        return Ok(Requeue::await_change());
    }
    let namespace = deploy.namespace().ok_or(Error::NoNamespace)?;
    let name = deploy.name_any();
    let canary = ctx.canary(&namespace, &name).await?;

    let opted_in = match spec::read_deployment(&deploy) {
        Ok(OptIn::Enabled(spec)) => Some(spec),
        Ok(OptIn::Absent | OptIn::Disabled) => None,
        Err(problems) => {
            // Admission refuses this; it can only come from before Serin was installed or
            // while its webhook was down. Keep what runs, say why nothing happens.
            let message = format!(
                "Invalid serin.dev annotations; nothing changes until they are fixed:\n{problems}"
            );
            ctx.publish(
                &deploy,
                canary.as_ref(),
                EventType::Warning,
                Reason::InvalidConfiguration,
                message,
            )
            .await;
            return Ok(Requeue::await_change());
        }
    };
    let is_opted_in = opted_in.is_some();
    let Some(spec) = opted_in.or_else(|| canary.as_ref().map(|c| c.spec.config.clone())) else {
        // Not opted in and nothing of Serin's left: only the label may linger.
        remove_label(&ctx, &deploy).await?;
        return Ok(Requeue::await_change());
    };
    let router = configured_router(spec.provider, &ctx.routers);
    let mut release = Release {
        ctx: &ctx,
        deploy: &deploy,
        namespace,
        name,
        spec,
        router,
        canary,
        autoscaled: None,
        hooks: EventHooks::default(),
    };
    release.run(is_opted_in).await
}

/// The fast path of admission (SPEC "What admission does"): when an update opts an existing
/// Deployment in, the mutating webhook creates at once what needs no Ready primary — the
/// `Canary`, the `-primary` copies of tracked configs, `<name>-primary`, and the `-primary`
/// and `-canary` Services — all owned by the Deployment. The apex Service and the router wait
/// for the controller and a Ready primary: pointing traffic at a primary with no Ready pod
/// would leave the Service without endpoints. Returns what was created, for admission
/// warnings. Objects that exist are left alone.
pub async fn inject(ctx: &Context, deploy: &Deployment) -> Result<Vec<String>, Error> {
    let Ok(OptIn::Enabled(spec)) = spec::read_deployment(deploy) else {
        return Ok(Vec::new());
    };
    let router = configured_router(spec.provider, &ctx.routers);
    let namespace = deploy.namespace().ok_or(Error::NoNamespace)?;
    let name = deploy.name_any();
    let canaries: Api<Canary> = Api::namespaced(ctx.client.clone(), &namespace);
    let canary = canaries.get_opt(&name).await?;
    let mut release = Release {
        ctx,
        deploy,
        namespace,
        name,
        spec,
        router,
        canary,
        autoscaled: None,
        hooks: EventHooks::default(),
    };
    let mut created = Vec::new();
    if release.canary.is_none() {
        release.ensure_canary_object().await?;
        created.push(format!("Canary {}", release.name));
    }
    let primary_name = release::primary_name(&release.name);
    if release
        .deployments()
        .get_opt(&primary_name)
        .await?
        .is_none()
    {
        let template = deploy
            .spec
            .as_ref()
            .map(|s| s.template.clone())
            .unwrap_or_default();
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
    fn deployments(&self) -> Api<Deployment> {
        Api::namespaced(self.ctx.client.clone(), &self.namespace)
    }

    /// The primary, from the controller's cache when it is current (see [`cache`]).
    async fn primary(&self, name: &str) -> Result<Option<Deployment>, Error> {
        read_through(
            self.ctx.primaries.as_ref(),
            &self.deployments(),
            &self.namespace,
            name,
        )
        .await
    }

    fn router_api(&self) -> Api<DynamicObject> {
        Api::namespaced_with(
            self.ctx.client.clone(),
            &self.namespace,
            &self.router.api_resource(),
        )
    }

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
        let primary_name = release::primary_name(&self.name);
        let mut primary = self.primary(&primary_name).await?;
        let template = self
            .deploy
            .spec
            .as_ref()
            .map(|s| s.template.clone())
            .unwrap_or_default();
        let configs = self.tracked_configs(&template).await?;
        let tracked: Vec<TrackedConfig> = configs.iter().map(Config::tracked).collect();
        let revision = release::revision(&template, &tracked);
        let desired =
            observe::desired_replicas(self.deploy, primary.as_ref().and_then(spec_replicas));

        let mut reapply_router = false;
        if opted_in {
            let spec_changed = self.ensure_canary_object().await?;
            // The router object is built from the configuration too (port, Service, A/B
            // rules, Gateway, Ingress): a change while nothing else moves must reach it, or it
            // would send traffic to a port the Services no longer have.
            reapply_router = spec_changed && status.phase != Phase::Initializing;
            let created = primary.is_none();
            if created {
                self.copy_configs(&configs).await?;
                primary = Some(self.apply_primary(&revision, Creating::Yes).await?);
                // The first creation is told by the `Initialized` Event once the primary is
                // Ready (two Event writes fewer per opted-in Deployment); a primary that had
                // to be made again is news of its own.
                if status.phase != Phase::Initializing {
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
            // The Services and the HPA copy are applied (and so repaired) when traffic first
            // moves to the primary, and whenever the configuration, the Deployment's spec or
            // the revision changes; not on every status event, which would cost a write each.
            let primary_ready = observe::primary(primary.as_ref()).ready;
            let due = match status.phase {
                Phase::Initializing => primary_ready,
                _ => {
                    spec_changed
                        || self.observed_generation_changed()
                        || status.revision.as_deref() != Some(revision.as_str())
                }
            };
            let hpa = self.primary_hpa().await?;
            self.autoscaled = Some(hpa.is_some());
            if let Some(hpa) = &hpa
                && (due || created || self.hpa_copy_differs(hpa))
            {
                self.apply_primary_hpa(hpa).await?;
            }
            if due {
                self.apply_services().await?;
            }
            if let Some(p) = primary.as_ref() {
                self.scale_primary(p, desired).await?;
            }
        }

        // While initializing, the machine leaves the router alone until the primary is Ready
        // and then sets 100/0 whatever it reads: the router is not read in that phase (a GET
        // saved on each of the reconciles the primary's rollout causes).
        let weights = match status.phase {
            Phase::Initializing => None,
            _ => match self.router_api().get_opt(&self.router_name()).await {
                Ok(object) => object.and_then(|o| self.router.weights(&o, &self.spec).ok()),
                // The router's CRD is missing: SetWeights will say so.
                Err(_) => None,
            },
        };
        if reapply_router && let Some(weights) = weights {
            self.set_weights(weights).await?;
            // Companions of the earlier configuration (Gloo Upstreams of another port) are
            // no longer named by the router object: only a configuration change leaves any.
            let current: Vec<String> = self
                .router
                .companions(self.deploy, &self.spec)?
                .iter()
                .map(|c| c.object.name_any())
                .collect();
            self.delete_companions(|name| !current.iter().any(|c| c == name))
                .await?;
        }
        let obs = Observations {
            revision: revision.clone(),
            opted_in,
            canary: observe::canary(self.deploy, desired),
            primary: observe::primary(primary.as_ref()),
            router: weights,
            requests: requests::machine_requests(request.as_ref(), stored.paused),
            ..Default::default()
        };

        let now = Time(Timestamp::now());
        let template_spec = self.analysis_template().await?;
        // Judged by the CanaryPolicies now, before anything of it is called.
        let mut asker = analysis::Asker::new(
            self.ctx,
            self.deploy,
            &self.namespace,
            &self.name,
            &self.spec,
            template_spec.as_ref(),
        )
        .await?;
        let callable = asker.callable_template().cloned();
        self.hooks = EventHooks {
            template: callable.clone(),
            phase: status.phase,
            checksum: revision.clone(),
        };
        // Hooks asked for by a step get the phase that step is in (a new revision's first
        // `confirm-rollout` and `rollback` calls say Waiting, not the phase before it).
        let driven = release::drive(
            &status,
            obs,
            &now,
            &self.spec,
            &mut Asking {
                asker: &mut asker,
                release: self,
                revision: &revision,
            },
        );
        let (actions, new_status) = (driven.actions, driven.status);
        for told in driven.told {
            self.event(told.type_, told.reason, told.message).await;
        }
        if let Some(refusal) = asker.refusal() {
            let message = refusal.to_owned();
            self.event(EventType::Warning, Reason::PolicyViolation, message)
                .await;
        }
        let awaiting = asker.awaiting();
        asker.settle();
        let settled = requests::settle(
            request.as_ref(),
            &StepContext {
                before: &status,
                after: &new_status,
                was_paused: stored.paused,
                last: stored.last_request.as_ref(),
                now: &now,
            },
        );

        // The Events from here on are the new status's.
        self.hooks.phase = new_status.phase;
        // The request's Event first: it says why what follows happens.
        if let Some(note) = settled.note.clone() {
            self.event(note.type_, note.reason, note.message).await;
        }
        let mut requeue = match awaiting {
            // The answer asks for the next reconcile; this one only in case it is lost.
            true => Requeue::requeue(analysis::AWAITING_RECHECK),
            false => Requeue::await_change(),
        };
        let mut removed = false;
        for action in actions {
            match action {
                Action::SetWeights(weights) => self.set_weights(weights).await?,
                Action::ScaleCanary(n) => self.scale_canary(n).await?,
                Action::ScaleCanaryToZero => self.scale_canary(0).await?,
                Action::RecordDesiredReplicas(n) => self.record_desired_replicas(n).await?,
                Action::RunChecks => {}
                Action::CallHook(kind) if kind.is_gate() => {}
                Action::CallHook(kind) => {
                    let payload = self.payload(&new_status, &revision);
                    analysis::notify(self.ctx, callable.clone(), kind, payload);
                }
                Action::CopyToPrimary { revision: wanted } => {
                    if wanted == revision {
                        self.copy_configs(&configs).await?;
                        self.apply_primary(&revision, Creating::No).await?;
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
        if removed {
            return Ok(Requeue::await_change());
        }
        let request_changed =
            settled.paused != stored.paused || settled.last_request != stored.last_request;
        let conditions =
            release::conditions::conditions(&stored.conditions, &new_status, settled.paused, &now);
        if new_status != status
            || request_changed
            || conditions != stored.conditions
            || self.observed_generation_changed()
        {
            self.write_status(new_status, conditions, settled).await?;
        }
        Ok(requeue)
    }

    fn observed_generation_changed(&self) -> bool {
        let stored = self
            .canary
            .as_ref()
            .and_then(|c| c.status.as_ref())
            .and_then(|s| s.observed_generation);
        stored != self.deploy.metadata.generation
    }

    fn payload(&self, status: &ReleaseStatus, revision: &str) -> analysis::Payload {
        analysis::Payload {
            name: self.name.clone(),
            namespace: self.namespace.clone(),
            phase: status.phase,
            checksum: revision.to_owned(),
        }
    }

    async fn analysis_template(&self) -> Result<Option<crate::crd::AnalysisTemplateSpec>, Error> {
        let Some(name) = self.spec.analysis.as_deref() else {
            return Ok(None);
        };
        let api: Api<AnalysisTemplate> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        match api.get_opt(name).await? {
            Some(t) => Ok(Some(t.spec)),
            None => Err(Error::MissingAnalysisTemplate(name.to_owned())),
        }
    }

    /// The `Canary` object: created when missing, its spec kept equal to the effective
    /// configuration. True when it was written.
    async fn ensure_canary_object(&mut self) -> Result<bool, Error> {
        let wanted = CanaryResourceSpec {
            config: self.spec.clone(),
        };
        if self.canary.as_ref().is_some_and(|c| c.spec == wanted) {
            return Ok(false);
        }
        let mut object = Canary::new(&self.name, wanted);
        object.metadata.namespace = Some(self.namespace.clone());
        object.metadata.owner_references = release::owner_references(self.deploy);
        object.metadata.labels = Some([(OWNER_LABEL.to_owned(), self.name.clone())].into());
        let api: Api<Canary> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        let applied = api
            .patch(&self.name, &apply_params(), &Patch::Apply(&object))
            .await?;
        saw(&self.ctx.canaries, &applied.metadata);
        self.canary = Some(applied);
        Ok(true)
    }

    /// Writes `Canary.status` by server-side apply (field manager `serin`), conditions
    /// included.
    async fn write_status(
        &self,
        release: ReleaseStatus,
        conditions: Vec<Condition>,
        requests: Settled,
    ) -> Result<(), Error> {
        let status = CanaryStatus {
            release,
            conditions,
            observed_generation: self.deploy.metadata.generation,
            paused: requests.paused,
            last_request: requests.last_request,
        };
        let patch = json!({
            "apiVersion": Canary::api_version(&()),
            "kind": Canary::kind(&()),
            "status": status,
        });
        let api: Api<Canary> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        let written = api
            .patch_status(&self.name, &apply_params(), &Patch::Apply(&patch))
            .await?;
        saw(&self.ctx.canaries, &written.metadata);
        Ok(())
    }

    async fn apply_primary(
        &mut self,
        revision: &str,
        creating: Creating,
    ) -> Result<Deployment, Error> {
        let mut primary = release::primary_deployment(self.deploy, revision, self.ctx.tracking)?;
        if creating == Creating::No && self.is_autoscaled().await? {
            // The HPA's: a replica count in Serin's apply would take it back at every copy.
            if let Some(spec) = primary.spec.as_mut() {
                spec.replicas = None;
            }
        }
        let name = release::primary_name(&self.name);
        let applied = self
            .deployments()
            .patch(&name, &apply_params(), &Patch::Apply(&primary))
            .await?;
        saw(&self.ctx.primaries, &applied.metadata);
        Ok(applied)
    }

    /// Keeps the primary at the user's replica count (an HPA on the primary owns it instead).
    async fn scale_primary(&mut self, primary: &Deployment, desired: i32) -> Result<(), Error> {
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

    async fn is_autoscaled(&mut self) -> Result<bool, Error> {
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
    async fn primary_hpa(&self) -> Result<Option<HorizontalPodAutoscaler>, Error> {
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
            if let Some(copy) = release::primary_hpa(&hpa, self.deploy)? {
                return Ok(Some(copy));
            }
        }
        Ok(None)
    }

    /// The `-primary` copy in the controller's cache is missing or has another spec than
    /// `wanted` (the user changed their HPA). Without a cache: false (the copy is applied
    /// when due).
    fn hpa_copy_differs(&self, wanted: &HorizontalPodAutoscaler) -> bool {
        let Some(store) = &self.ctx.hpas else {
            return false;
        };
        let key =
            kube::runtime::reflector::ObjectRef::new(&wanted.name_any()).within(&self.namespace);
        store.get(&key).is_none_or(|copy| copy.spec != wanted.spec)
    }

    async fn apply_primary_hpa(&self, hpa: &HorizontalPodAutoscaler) -> Result<(), Error> {
        let api: Api<HorizontalPodAutoscaler> =
            Api::namespaced(self.ctx.client.clone(), &self.namespace);
        api.patch(&hpa.name_any(), &apply_params(), &Patch::Apply(hpa))
            .await?;
        Ok(())
    }

    async fn scale_canary(&self, replicas: i32) -> Result<(), Error> {
        if spec_replicas(self.deploy) == Some(replicas) {
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
    async fn record_desired_replicas(&self, replicas: i32) -> Result<(), Error> {
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

    async fn apply_services(&self) -> Result<(), Error> {
        let api: Api<Service> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        for service in release::services(self.deploy, &self.spec)? {
            let name = service.name_any();
            api.patch(&name, &apply_params(), &Patch::Apply(&service))
                .await?;
        }
        Ok(())
    }

    fn router_name(&self) -> String {
        self.router.object_name(&self.spec)
    }

    async fn set_weights(&self, weights: Weights) -> Result<(), Error> {
        // A router made from a user's object (NGINX's Ingress) is built from it as stored.
        let source = match self.router.source(&self.spec) {
            Some(source) => {
                let api: Api<DynamicObject> = Api::namespaced_with(
                    self.ctx.client.clone(),
                    &self.namespace,
                    &source.resource,
                );
                api.get_opt(&source.name).await?
            }
            None => None,
        };
        let object = self
            .router
            .build_from(self.deploy, &self.spec, weights, source.as_ref())?;
        // What the router object refers to (Gloo's Upstreams) exists before it does.
        for companion in self.router.companions(self.deploy, &self.spec)? {
            self.apply_routing(&companion.resource, &companion.object)
                .await?;
        }
        self.apply_routing(&self.router.api_resource(), &object)
            .await
    }

    /// Deletes the router's companions of this Deployment (by owner label) whose name
    /// `stale` picks; a kind the API server does not serve has none.
    async fn delete_companions(&self, stale: impl Fn(&str) -> bool) -> Result<(), Error> {
        let owned = ListParams::default().labels(&format!("{OWNER_LABEL}={}", self.name));
        let delete = DeleteParams::background();
        for resource in self.router.companion_resources() {
            let api: Api<DynamicObject> =
                Api::namespaced_with(self.ctx.client.clone(), &self.namespace, &resource);
            let companions = match api.list_metadata(&owned).await {
                Ok(list) => list.items,
                Err(kube::Error::Api(e)) if e.code == 404 => Vec::new(),
                Err(e) => return Err(Error::Kube(e)),
            };
            for companion in companions.iter().filter(|c| stale(&c.name_any())) {
                ignore_missing(api.delete(&companion.name_any(), &delete).await)?;
            }
        }
        Ok(())
    }

    /// Server-side apply of a router object or one of its companions; a kind the API server
    /// does not serve is reported as a router that is not installed.
    async fn apply_routing(
        &self,
        resource: &kube::core::ApiResource,
        object: &DynamicObject,
    ) -> Result<(), Error> {
        let mut value = serde_json::to_value(object).map_err(Error::Serialize)?;
        // DynamicObject serializes its type; make sure the apply carries it.
        value["apiVersion"] = json!(resource.api_version);
        value["kind"] = json!(resource.kind);
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.ctx.client.clone(), &self.namespace, resource);
        api.patch(&object.name_any(), &apply_params(), &Patch::Apply(&value))
            .await
            .map_err(|e| match e {
                kube::Error::Api(ref status) if status.code == 404 => Error::RouterNotInstalled {
                    api_version: resource.api_version.clone(),
                    kind: resource.kind.clone(),
                },
                e => Error::Kube(e),
            })?;
        Ok(())
    }

    /// The tracked ConfigMaps and Secrets the pod template uses, as stored (missing optional
    /// ones are left out; Kubernetes starts the pods without them too). Untracked Secrets
    /// are never read.
    async fn tracked_configs(
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

    async fn copy_configs(&self, configs: &[Config]) -> Result<(), Error> {
        for config in configs {
            match config {
                Config::Map(cm) => {
                    let copy = release::primary_config_map(cm, self.deploy)?;
                    let api: Api<ConfigMap> =
                        Api::namespaced(self.ctx.client.clone(), &self.namespace);
                    api.patch(&copy.name_any(), &apply_params(), &Patch::Apply(&copy))
                        .await?;
                }
                Config::Secret(secret) => {
                    let copy = release::primary_secret(secret, self.deploy)?;
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
    async fn remove_machinery(&self) -> Result<(), Error> {
        let services: Api<Service> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        let [apex, primary_svc, canary_svc] = release::services(self.deploy, &self.spec)?;
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
        ignore_missing(self.deployments().delete(&primary, &delete).await)?;
        if let Some(cache) = &self.ctx.primaries {
            cache.gone(&self.namespace, &primary);
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

    /// Records an Event and sends it to the `event` webhooks (once the AnalysisTemplate has
    /// been read in this reconcile).
    async fn event(&self, type_: EventType, reason: Reason, message: String) {
        let payload = analysis::Payload {
            name: self.name.clone(),
            namespace: self.namespace.clone(),
            phase: self.hooks.phase,
            checksum: self.hooks.checksum.clone(),
        };
        analysis::notify_event(
            self.ctx,
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

/// The controller's answers to the machine's questions: the analysis [`analysis::Asker`] of
/// this reconcile, told the release's payload.
struct Asking<'r, 'a> {
    asker: &'r mut analysis::Asker<'a>,
    release: &'r Release<'r>,
    revision: &'r str,
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

/// Whether the primary is being created (it starts at the user's replica count even under an
/// HPA, which then takes over) or updated (an HPA's count is left alone).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Creating {
    Yes,
    No,
}

/// A tracked ConfigMap or Secret as stored.
enum Config {
    Map(ConfigMap),
    Secret(Secret),
}

impl Config {
    fn tracked(&self) -> TrackedConfig {
        match self {
            Config::Map(cm) => TrackedConfig::from_config_map(cm),
            Config::Secret(secret) => TrackedConfig::from_secret(secret),
        }
    }
}

fn spec_replicas(deploy: &Deployment) -> Option<i32> {
    deploy.spec.as_ref().and_then(|s| s.replicas)
}

fn ignore_missing<T>(result: kube::Result<T>) -> Result<(), Error> {
    match result {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(Error::Kube(e)),
    }
}

/// Takes the Deployment out of Serin's watch once nothing of Serin's is left.
async fn remove_label(ctx: &Context, deploy: &Deployment) -> Result<(), Error> {
    let has_label = deploy
        .metadata
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key(MANAGED_LABEL));
    if !has_label {
        return Ok(());
    }
    let Some(namespace) = deploy.namespace() else {
        return Ok(());
    };
    let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &namespace);
    let patch = json!({"metadata": {"labels": {MANAGED_LABEL: null}}});
    api.patch(
        &deploy.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}

/// An object from `cache` when it has caught up with Serin's writes, else from the API server
/// (which then becomes the mark the cache must reach).
async fn read_through<K>(
    cache: Option<&Cache<K>>,
    api: &Api<K>,
    namespace: &str,
    name: &str,
) -> Result<Option<K>, Error>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug + 'static,
{
    if let Some(Lookup::Fresh(found)) = cache.map(|c| c.lookup(namespace, name)) {
        return Ok(found.map(|o| K::clone(&o)));
    }
    let found = api.get_opt(name).await?;
    if let (Some(cache), Some(object)) = (cache, &found) {
        cache.saw(object.meta());
    }
    Ok(found)
}

/// Serin wrote (or read) the object of `meta`: its cache, if any, is read again once it shows
/// that version.
pub(super) fn saw<K>(cache: &Option<Cache<K>>, meta: &kube::api::ObjectMeta)
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    if let Some(cache) = cache {
        cache.saw(meta);
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
