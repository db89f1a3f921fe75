//! What every reconcile shares ([`Context`]), what one reconcile holds of its Deployment
//! ([`Release`], [`Read`]), how the controller runs ([`Options`]), and why a
//! reconcile fails ([`Error`]).

use std::sync::Arc;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::Client;
use kube::api::PatchParams;
use kube::runtime::events::Reporter;
use kube::runtime::reflector;

use super::events::EventHooks;
use super::machinery::Config;
use super::workload::{Primary, Target};
use super::{cache, lease};
use crate::crd::Canary;
use crate::release::{ObjectsError, Tracking};
use crate::router::{Router, RouterError, RouterSettings};
use crate::spec::CanarySpec;

/// Field manager of every write Serin makes.
pub const FIELD_MANAGER: &str = "serin";

/// Server-side apply with Serin's field manager, taking the fields over.
pub(super) fn apply_params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

/// How the controller runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Prometheus HTTP API for the builtin checks.
    pub prometheus_url: String,
    /// The credentials for it (`--prometheus-*` files, read at every query).
    pub prometheus_credentials: crate::analysis::CredentialFiles,
    pub lease: lease::LeaseConfig,
    /// Serin's own username: its writes are not subject to CanaryPolicies.
    pub serin_user: String,
    /// Which configs are tracked (`--track-secrets`); without Secrets, Serin never reads,
    /// watches or lists one.
    pub tracking: Tracking,
    /// How the routers write their objects (`--nginx-annotation-prefix`).
    pub routers: RouterSettings,
    /// The ports Serin listens on (`--listen`, `--admin-listen`): webhooks and metric
    /// queries never call them on this machine.
    pub own_ports: Vec<u16>,
    /// The webhook's index of CanaryPolicies and namespace labels when both run in one
    /// process (`serin run`), shared so that its watches are not opened twice; the
    /// controller starts its own otherwise.
    pub policies: Option<Arc<crate::policy::PolicyIndex>>,
    /// Where reconciles are counted (`serin_reconciles_total` on the admin port).
    pub metrics: Option<crate::server::Reconciles>,
    /// The release metrics of every canary (`serin_canary_*` on the admin port).
    pub release_metrics: Option<super::ReleaseMetrics>,
    /// Where chat alerts are counted (`serin_alerts_total`).
    pub alert_counts: Option<crate::server::AlertCounts>,
}

/// What every reconcile (and the webhook's injection) shares.
pub struct Context {
    pub client: Client,
    /// Who records Events.
    pub reporter: Reporter,
    pub analysis: crate::analysis::Measuring,
    /// The controller's watch-fed caches of `-primary` Deployments and of Canaries (`None`
    /// in the webhook, which reads from the API server).
    pub primaries: Option<cache::Cache<Deployment>>,
    pub canaries: Option<cache::Cache<Canary>>,
    /// Every HorizontalPodAutoscaler, watch-fed (`None` in the webhook): few objects, read
    /// on each reconcile to keep the `-primary` copy of the user's.
    pub hpas: Option<reflector::Store<HorizontalPodAutoscaler>>,
    pub tracking: Tracking,
    pub routers: RouterSettings,
    /// Set from each status a reconcile writes or finds unchanged (`None` in the webhook).
    pub release_metrics: Option<super::ReleaseMetrics>,
    /// Sends the chat alerts of CanaryPolicies (their Secrets are in Serin's namespace, the
    /// Lease's).
    pub alerts: crate::alerts::Sender,
    pub alert_counts: Option<crate::server::AlertCounts>,
}

/// Why a reconcile failed; it is retried after [`RETRY_AFTER`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("the Deployment has no namespace")]
    NoNamespace,
    #[error("{0}")]
    Objects(#[from] ObjectsError),
    #[error("{0}")]
    Router(#[from] RouterError),
    #[error(
        "{kind} ({api_version}) is not installed in the cluster: install its CRD, or choose \
         another serin.dev/provider"
    )]
    RouterNotInstalled { api_version: String, kind: String },
    #[error(
        "serin.dev/analysis names AnalysisTemplate {0:?}, which does not exist in the namespace"
    )]
    MissingAnalysisTemplate(String),
    #[error("encoding an object: {0}")]
    Serialize(serde_json::Error),
    #[error("{0}")]
    Policies(String),
}

impl Error {
    /// The kind of error, as the `error` label of `serin_reconciles_total`: one fixed value
    /// per variant, so the label's values stay few.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::NoNamespace => "no_namespace",
            Error::Objects(_) => "objects",
            Error::Router(_) => "router",
            Error::RouterNotInstalled { .. } => "router_not_installed",
            Error::MissingAnalysisTemplate(_) => "missing_analysis_template",
            Error::Serialize(_) => "serialize",
            Error::Policies(_) => "policies",
        }
    }
}

impl Context {
    /// The context of the Lease holder: reads Serin's own objects from the watch-fed
    /// `stores`, and judges templates with `options.policies` (or an index of its own).
    pub(super) fn for_controller(
        client: Client,
        options: &Options,
        stores: &super::watches::Stores,
    ) -> anyhow::Result<Self> {
        let mut ctx = Context {
            hpas: Some(stores.hpas.clone()),
            primaries: Some(cache::Cache::new(stores.primaries.clone())),
            canaries: Some(cache::Cache::new(stores.canaries.clone())),
            release_metrics: options.release_metrics.clone(),
            ..Context::new(client.clone(), options)?
        };
        let policies = options.policies.clone();
        ctx.analysis.policies =
            Some(policies.unwrap_or_else(|| crate::policy::PolicyIndex::start(client)));
        Ok(ctx)
    }

    pub fn new(client: Client, options: &Options) -> anyhow::Result<Self> {
        let egress = crate::policy::egress::Egress::new(options.own_ports.iter().copied());
        let alerts = crate::alerts::Sender {
            client: client.clone(),
            namespace: options.lease.namespace.clone(),
            http: crate::analysis::http::Outbound::new(egress.clone())?,
        };
        let analysis = crate::analysis::Measuring::new(&options.prometheus_url, egress)?
            .with_prometheus_credentials(options.prometheus_credentials.clone())
            // Only the Secrets metrics name in `secretRef`, in their template's namespace.
            .reading_secrets(Arc::new(client.clone()));
        Ok(Self {
            client,
            reporter: Reporter {
                controller: FIELD_MANAGER.into(),
                instance: Some(options.lease.identity.clone()),
            },
            analysis,
            primaries: None,
            canaries: None,
            hpas: None,
            tracking: options.tracking,
            routers: options.routers.clone(),
            release_metrics: None,
            alerts,
            alert_counts: options.alert_counts.clone(),
        })
    }
}

/// The objects of one Deployment, read once per reconcile.
pub(super) struct Release<'a> {
    pub ctx: &'a Context,
    /// The user's Deployment or DaemonSet.
    pub deploy: Target<'a>,
    pub namespace: String,
    pub name: String,
    pub spec: CanarySpec,
    pub router: Box<dyn Router>,
    pub canary: Option<Canary>,
    /// An HPA targets the Deployment, so its `-primary` copy sizes the primary; looked up
    /// (one LIST) only when a reconcile needs to know.
    pub autoscaled: Option<bool>,
    /// What `event` webhooks are told with each Event: the template once read, and the
    /// phase and revision of the release at that point of the reconcile.
    pub hooks: EventHooks,
}

impl<'a> Release<'a> {
    pub(super) fn new(
        ctx: &'a Context,
        deploy: Target<'a>,
        namespace: String,
        name: String,
        spec: CanarySpec,
        router: Box<dyn Router>,
        canary: Option<Canary>,
    ) -> Self {
        let hooks = EventHooks::default();
        let autoscaled = None;
        Release {
            ctx,
            deploy,
            namespace,
            name,
            spec,
            router,
            canary,
            autoscaled,
            hooks,
        }
    }
}

/// What a reconcile reads of the release before deciding: the primary, the tracked configs
/// as stored, the revision they make with the pod template, and the replicas the user wants.
pub(super) struct Read {
    pub primary: Option<Primary>,
    pub configs: Vec<Config>,
    pub revision: String,
    pub desired: i32,
}
