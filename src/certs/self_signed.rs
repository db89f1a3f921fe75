//! `serin run --self-signed`: the Kubernetes side of self-managed certificates.
//!
//! Every replica, once per check interval: reads the shared Secret, takes the step
//! [`rotation::plan`] names (creating the Secret if absent, writing it only with the
//! `resourceVersion` it read, and re-reading on a conflict, so racing replicas agree), makes
//! sure the `caBundle` is in the webhook configurations and in the conversion settings of
//! Serin's CRDs, and writes the serving pair to files that the TLS server's existing
//! reloader ([`ServingCert`]) loads.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use tokio::time::MissedTickBehavior;

use super::rotation::{self, Current, Policy, Step, Stored};
use super::secret::{self, Unusable};
use super::{CertError, CertOptions, LocalCerts};
use crate::server::{Metrics, ReloadOutcome, ReloadResult, ServingCert};

/// What `--self-signed` was given.
#[derive(Debug, Clone)]
pub struct Config {
    /// Serin's namespace, where the Secret lives.
    pub namespace: String,
    pub secret_name: String,
    /// Name of the MutatingWebhookConfiguration and the ValidatingWebhookConfiguration.
    pub webhook_config_name: String,
    /// CRDs whose webhook conversion gets the bundle (those without one are left alone).
    pub crds: Vec<String>,
    pub policy: Policy,
    pub check_interval: Duration,
    /// Where the serving pair is written for the TLS server.
    pub dir: PathBuf,
    /// Names in the serving certificate.
    pub cert_options: CertOptions,
}

#[derive(Debug, thiserror::Error)]
pub enum SelfSignedError {
    #[error("{what}: {source}")]
    Kube {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error(transparent)]
    Generate(#[from] CertError),
    #[error("a certificate just generated cannot be read back: {0}")]
    Generated(#[source] Unusable),
    #[error(
        "the Secret {0} kept changing under us; another writer is fighting over it \
         (will try again)"
    )]
    Contention(String),
    #[error("could not load the pair written to {dir}: {source}")]
    Load {
        dir: PathBuf,
        #[source]
        source: crate::server::TlsError,
    },
}

/// Conflicts re-read and retried within one check before giving up until the next.
const ATTEMPTS: usize = 8;

pub struct SelfSigned {
    config: Config,
    secrets: Api<Secret>,
    mutating: Api<MutatingWebhookConfiguration>,
    validating: Api<ValidatingWebhookConfiguration>,
    crds: Api<CustomResourceDefinition>,
}

impl SelfSigned {
    pub fn new(client: Client, config: Config) -> Self {
        SelfSigned {
            secrets: Api::namespaced(client.clone(), &config.namespace),
            mutating: Api::all(client.clone()),
            validating: Api::all(client.clone()),
            crds: Api::all(client),
            config,
        }
    }

    fn secret_ref(&self) -> String {
        format!("{}/{}", self.config.namespace, self.config.secret_name)
    }

    fn kube_error(&self, what: &str) -> impl FnOnce(kube::Error) -> SelfSignedError {
        let what = format!("{what} (Secret {})", self.secret_ref());
        move |source| SelfSignedError::Kube { what, source }
    }

    /// Brings the Secret and the published bundle one check forward and returns the pair to
    /// serve.
    pub async fn sync(&self) -> Result<Stored, SelfSignedError> {
        let name = &self.config.secret_name;
        for _ in 0..ATTEMPTS {
            let found = self
                .secrets
                .get_opt(name)
                .await
                .map_err(self.kube_error("reading the certificate Secret"))?;
            let current = match &found {
                None => Current::Missing,
                Some(secret) => match secret::decode(secret) {
                    Ok(stored) => Current::Stored(stored),
                    Err(unusable) => Current::Unusable(unusable.to_string()),
                },
            };
            let now = SystemTime::now();
            let step = rotation::plan(&current, now, &self.config.policy);
            let (Some(found), Current::Stored(stored)) = (found.clone(), current) else {
                // Nothing usable stored: make a pair, and create or overwrite the Secret.
                let fresh = Stored::new(self.fresh_pair(now)?);
                let written = match found {
                    None => self.create(&fresh).await?,
                    Some(found) => {
                        if let Step::Replace { reason } = &step {
                            tracing::warn!(secret = %self.secret_ref(), %reason,
                                "replacing the self-signed certificates; reviews fail until \
                                 the new caBundle is published");
                        }
                        self.replace(found, &fresh).await?
                    }
                };
                if written {
                    tracing::info!(secret = %self.secret_ref(), "made a new CA and serving pair");
                }
                continue;
            };
            let next = match step {
                Step::Wait { .. } => {
                    // Nothing to change; put the bundle back where someone removed it. A
                    // replica that read an older Secret may have just published an older
                    // bundle: check the Secret did not move meanwhile, else go round again.
                    self.publish(&stored.bundle()).await?;
                    let again = self
                        .secrets
                        .get_opt(name)
                        .await
                        .map_err(self.kube_error("re-reading the certificate Secret"))?;
                    if again.and_then(|s| s.metadata.resource_version)
                        == found.metadata.resource_version
                    {
                        return Ok(stored);
                    }
                    continue;
                }
                Step::Publish => {
                    self.publish(&stored.bundle()).await?;
                    stored.published(SystemTime::now())
                }
                Step::Stage => stored.staged(self.fresh_pair(now)?),
                Step::Switch => stored.switched(now),
                Step::DropOld => stored.retired(),
                Step::Create | Step::Replace { .. } => {
                    let reason = match &step {
                        Step::Replace { reason } => reason.as_str(),
                        _ => "no usable pair",
                    };
                    tracing::warn!(secret = %self.secret_ref(), %reason,
                        "replacing the self-signed certificates; reviews fail until the new \
                         caBundle is published");
                    Stored::new(self.fresh_pair(now)?)
                }
            };
            if self.replace(found, &next).await? {
                tracing::info!(secret = %self.secret_ref(), step = ?step_name(&step),
                    phase = ?next.phase(), "certificate rotation step");
            }
        }
        Err(SelfSignedError::Contention(self.secret_ref()))
    }

    fn fresh_pair(&self, now: SystemTime) -> Result<rotation::Pair, SelfSignedError> {
        let options = CertOptions {
            validity: self.config.policy.validity,
            ..self.config.cert_options.clone()
        };
        let made = super::generate_at(&options, now)?;
        secret::pair(made).map_err(SelfSignedError::Generated)
    }

    /// Creates the Secret unless another replica was first; `false` if it was.
    async fn create(&self, stored: &Stored) -> Result<bool, SelfSignedError> {
        let mut fresh = Secret {
            metadata: ObjectMeta {
                name: Some(self.config.secret_name.clone()),
                namespace: Some(self.config.namespace.clone()),
                labels: Some(
                    [
                        ("app.kubernetes.io/name", "serin"),
                        ("app.kubernetes.io/component", "webhook-certificates"),
                    ]
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect(),
                ),
                ..ObjectMeta::default()
            },
            ..Secret::default()
        };
        secret::encode(stored, &mut fresh);
        match self.secrets.create(&PostParams::default(), &fresh).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(self.kube_error("creating the certificate Secret")(e)),
        }
    }

    /// Writes `stored` over `found`, only if nobody wrote since it was read (its
    /// `resourceVersion` goes with it); `false` if somebody did.
    async fn replace(&self, mut found: Secret, stored: &Stored) -> Result<bool, SelfSignedError> {
        secret::encode(stored, &mut found);
        found.metadata.managed_fields = None;
        match self
            .secrets
            .replace(&self.config.secret_name, &PostParams::default(), &found)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(self.kube_error("updating the certificate Secret")(e)),
        }
    }

    /// Makes `bundle` the `caBundle` of every webhook in both configurations and of the
    /// conversion webhook of the CRDs that have one. Only what differs is patched; absent
    /// objects are skipped (they get it once they exist).
    pub async fn publish(&self, bundle: &str) -> Result<(), SelfSignedError> {
        let name = &self.config.webhook_config_name;
        let err = |what: String| move |source| SelfSignedError::Kube { what, source };
        let mutating = self
            .mutating
            .get_opt(name)
            .await
            .map_err(err(format!("reading MutatingWebhookConfiguration {name}")))?;
        if let Some(config) = mutating {
            let hooks = config.webhooks.unwrap_or_default();
            let stale = stale_webhooks(hooks.iter().map(|h| (&h.name, &h.client_config)), bundle);
            self.patch_webhooks(
                &self.mutating,
                "MutatingWebhookConfiguration",
                stale,
                bundle,
            )
            .await?;
        }
        let validating = self.validating.get_opt(name).await.map_err(err(format!(
            "reading ValidatingWebhookConfiguration {name}"
        )))?;
        if let Some(config) = validating {
            let hooks = config.webhooks.unwrap_or_default();
            let stale = stale_webhooks(hooks.iter().map(|h| (&h.name, &h.client_config)), bundle);
            self.patch_webhooks(
                &self.validating,
                "ValidatingWebhookConfiguration",
                stale,
                bundle,
            )
            .await?;
        }
        for crd_name in &self.config.crds {
            let crd = self
                .crds
                .get_opt(crd_name)
                .await
                .map_err(err(format!("reading CustomResourceDefinition {crd_name}")))?;
            let Some(conversion) = crd.and_then(|crd| crd.spec.conversion) else {
                continue;
            };
            let current = conversion
                .webhook
                .as_ref()
                .and_then(|w| w.client_config.as_ref());
            if conversion.strategy != "Webhook"
                || current.and_then(|c| c.ca_bundle.as_ref()).map(|b| &b.0[..])
                    == Some(bundle.as_bytes())
            {
                continue;
            }
            let patch = json!({"spec": {"conversion": {"webhook": {"clientConfig": {
                "caBundle": base64_of(bundle)
            }}}}});
            self.crds
                .patch(crd_name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(err(format!(
                    "patching the caBundle of CustomResourceDefinition {crd_name}"
                )))?;
            tracing::info!(crd = %crd_name, "published the caBundle to the conversion webhook");
        }
        Ok(())
    }

    async fn patch_webhooks<K>(
        &self,
        api: &Api<K>,
        kind: &str,
        stale: Vec<String>,
        bundle: &str,
    ) -> Result<(), SelfSignedError>
    where
        K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        if stale.is_empty() {
            return Ok(());
        }
        let name = &self.config.webhook_config_name;
        // A strategic merge patch addresses webhooks by name (their merge key), so a webhook
        // added or reordered meanwhile is neither lost nor given the wrong entry.
        let ca_bundle = base64_of(bundle);
        let webhooks: Vec<_> = stale
            .iter()
            .map(|hook| json!({"name": hook, "clientConfig": {"caBundle": ca_bundle}}))
            .collect();
        let patch = json!({ "webhooks": webhooks });
        api.patch(name, &PatchParams::default(), &Patch::Strategic(&patch))
            .await
            .map_err(|source| SelfSignedError::Kube {
                what: format!("patching the caBundle of {kind} {name}"),
                source,
            })?;
        tracing::info!(kind, name = %name, webhooks = ?stale, "published the caBundle");
        Ok(())
    }

    /// The first check, retried for a while (the API server may still be starting), then
    /// the pair written and loaded for the TLS server.
    pub async fn start(&self) -> Result<(Stored, Arc<ServingCert>), SelfSignedError> {
        let mut delay = Duration::from_millis(250);
        let mut tries = 0;
        let stored = loop {
            match self.sync().await {
                Ok(stored) => break stored,
                Err(e) if tries < 6 => {
                    tracing::warn!(error = %e, "self-signed certificates not ready; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                    tries += 1;
                }
                Err(e) => return Err(e),
            }
        };
        self.write_files(&stored)?;
        let (cert, key) = self.files();
        let serving = ServingCert::load(cert, key).map_err(|source| SelfSignedError::Load {
            dir: self.config.dir.clone(),
            source,
        })?;
        Ok((stored, serving))
    }

    /// Checks every interval until the task is dropped, serving whatever pair the Secret
    /// says through `serving`'s reload.
    pub async fn run(self, mut served: Stored, serving: Arc<ServingCert>, metrics: Metrics) {
        let mut ticker = tokio::time::interval(self.config.check_interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            let stored = match self.sync().await {
                Ok(stored) => stored,
                Err(error) => {
                    tracing::warn!(%error, "self-signed certificates: check failed; still \
                        serving the current pair");
                    continue;
                }
            };
            if stored.serving == served.serving && stored.bundle() == served.bundle() {
                continue;
            }
            if let Err(error) = self.write_files(&stored) {
                tracing::warn!(%error, "self-signed certificates: cannot write the new pair");
                continue;
            }
            // The reloader the file-based mode polls; called at once here so the switch
            // takes effect within this check, which is what the grace periods assume.
            match serving.reload_if_changed() {
                ReloadOutcome::Reloaded => {
                    metrics.tls_reload(ReloadResult::Success);
                    tracing::info!(secret = %self.secret_ref(),
                        "serving the certificate from the Secret");
                }
                ReloadOutcome::Unchanged => {}
                ReloadOutcome::Failed(error) => {
                    metrics.tls_reload(ReloadResult::Error);
                    tracing::warn!(%error, "the pair from the Secret cannot be used; still \
                        serving the previous one");
                }
            }
            served = stored;
        }
    }

    fn files(&self) -> (PathBuf, PathBuf) {
        let dir = &self.config.dir;
        (
            dir.join(super::SERVING_CERT_FILE),
            dir.join(super::SERVING_KEY_FILE),
        )
    }

    fn write_files(&self, stored: &Stored) -> Result<(), SelfSignedError> {
        let files = LocalCerts {
            ca_pem: stored.bundle(),
            cert_pem: stored.serving.cert_pem.clone(),
            key_pem: stored.serving.key_pem.clone(),
        };
        super::write(&self.config.dir, &files)?;
        restrict(&self.config.dir);
        Ok(())
    }
}

/// The serving key lives in this directory: only Serin's user may list it.
fn restrict(dir: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    }
    #[cfg(not(unix))]
    let _ = dir;
}

/// Names of the webhooks whose `caBundle` is not `bundle`.
fn stale_webhooks<'a>(
    hooks: impl Iterator<Item = (&'a String, &'a WebhookClientConfig)>,
    bundle: &str,
) -> Vec<String> {
    hooks
        .filter(|(_, config)| {
            config.ca_bundle.as_ref().map(|b| &b.0[..]) != Some(bundle.as_bytes())
        })
        .map(|(name, _)| name.clone())
        .collect()
}

fn base64_of(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text.as_bytes())
}

fn step_name(step: &Step) -> &'static str {
    match step {
        Step::Create => "create",
        Step::Replace { .. } => "replace",
        Step::Publish => "publish the caBundle",
        Step::Stage => "stage a new CA",
        Step::Switch => "serve the new pair",
        Step::DropOld => "drop the old CA",
        Step::Wait { .. } => "wait",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    #[test]
    fn only_webhooks_without_the_bundle_are_patched() {
        let with = WebhookClientConfig {
            ca_bundle: Some(ByteString(b"CA\n".to_vec())),
            ..WebhookClientConfig::default()
        };
        let without = WebhookClientConfig::default();
        let other = WebhookClientConfig {
            ca_bundle: Some(ByteString(b"OLD\n".to_vec())),
            ..WebhookClientConfig::default()
        };
        let names = ["a".to_owned(), "b".to_owned(), "c".to_owned()];
        let hooks = [
            (&names[0], &with),
            (&names[1], &without),
            (&names[2], &other),
        ];
        assert_eq!(stale_webhooks(hooks.into_iter(), "CA\n"), ["b", "c"]);
    }
}
