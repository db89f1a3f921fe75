//! `serin run`, `serin webhook` and `serin controller`: the admission webhooks over HTTPS
//! (serving certificate reloaded when its files change, or made, kept in a Secret and rotated
//! with `--self-signed`), the release controller, and the
//! admin port, with a graceful shutdown on SIGTERM/ctrl-c. A failed controller ends the
//! process with exit code 1 at once (returned through [`run`], not exited from its task).

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

use super::ServingArgs;
use crate::admission::{self, AdmissionState};
use crate::certs::CertOptions;
use crate::certs::rotation::Policy;
use crate::certs::self_signed::{self, SelfSigned};
use crate::controller;
use crate::conversion;
use crate::server::{
    self, AlertCounts, KubeApiRequests, Metrics, ReadyFlag, Reconciles, ServeOptions, ServingCert,
};

/// Which parts of Serin a process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Parts {
    pub webhook: bool,
    pub controller: bool,
}

impl Parts {
    pub(super) const ALL: Parts = Parts {
        webhook: true,
        controller: true,
    };
    pub(super) const WEBHOOK: Parts = Parts {
        webhook: true,
        controller: false,
    };
    pub(super) const CONTROLLER: Parts = Parts {
        webhook: false,
        controller: true,
    };
}

/// How serving ended, when it got as far as serving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// On SIGTERM/ctrl-c, after draining.
    Stopped,
    /// The controller failed (its task logged why). Webhooks could go on serving, but a
    /// replica without its controller must not look healthy: it exits 1 and is restarted.
    ControllerFailed,
}

/// Runs the parts until SIGTERM/ctrl-c; the exit code.
pub(super) fn run(serving: &ServingArgs, parts: Parts) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match runtime.block_on(serve(serving, parts))? {
        Ended::Stopped => Ok(ExitCode::SUCCESS),
        Ended::ControllerFailed => {
            // At once, as the process exit this replaces: the other tasks (admin port,
            // certificate watch, open connections) are not waited for.
            runtime.shutdown_background();
            Ok(ExitCode::FAILURE)
        }
    }
}

async fn serve(serving: &ServingArgs, parts: Parts) -> anyhow::Result<Ended> {
    server::install_crypto_provider();
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let api_requests = KubeApiRequests::register(&mut registry);
    let reconciles = Reconciles::register(&mut registry);
    let release_metrics = controller::ReleaseMetrics::register(&mut registry);
    let alert_counts = AlertCounts::register(&mut registry);

    let admin_listener = TcpListener::bind(serving.admin_listen)
        .await
        .with_context(|| format!("binding the admin listener {}", serving.admin_listen))?;
    let ready = ReadyFlag::default();
    // Ready only once the CanaryPolicy caches the webhooks and the controller judge with are
    // filled too (set below, when there is no cluster access to wait for).
    let synced = ReadyFlag::default();
    let (stop_admin, admin_stopped) = watch::channel(());
    let admin = tokio::spawn(server::serve_admin(
        admin_listener,
        server::admin_router(ready.clone().and(synced.clone()), Arc::new(registry)),
        wait_changed(admin_stopped),
    ));

    let client = match super::kube_client(serving.kubeconfig.as_deref(), api_requests).await {
        Ok(client) => Some(client),
        Err(e) if !parts.controller => {
            tracing::warn!(error = %format!("{e:#}"), "no cluster access: the webhooks decide but create nothing");
            None
        }
        Err(e) => return Err(e),
    };
    let options = controller::Options {
        prometheus_url: serving.prometheus_url.clone(),
        prometheus_credentials: serving.prometheus_credentials()?,
        lease: controller::lease::LeaseConfig::new(serving.lease_namespace.clone()),
        serin_user: serving.service_account.clone(),
        tracking: crate::release::Tracking {
            secrets: serving.track_secrets,
        },
        routers: crate::router::RouterSettings {
            nginx_annotation_prefix: serving.nginx_annotation_prefix.clone(),
        },
        own_ports: vec![serving.listen.port(), serving.admin_listen.port()],
        // One index for the webhooks and the controller: the same three watches either way.
        policies: client.clone().map(crate::policy::PolicyIndex::start),
        metrics: Some(reconciles),
        release_metrics: Some(release_metrics),
        alert_counts: Some(alert_counts),
    };
    let policies = options.policies.clone();
    match policies.clone() {
        Some(index) => {
            tokio::spawn(async move {
                index.synced().await;
                synced.set(true);
            });
        }
        None => synced.set(true),
    }
    let injector = match &client {
        Some(client) => Some(Arc::new(controller::machinery::Injector::new(
            client.clone(),
            &options,
        )?)),
        None => None,
    };
    let certs_client = client.clone().filter(|_| parts.webhook);
    // Said by the controller's task when it fails, so that the webhooks stop serving too.
    let (controller_failed, failed) = oneshot::channel::<()>();
    let controller = client.filter(|_| parts.controller).map(|client| {
        tokio::spawn(async move {
            match controller::run(client, options, shutdown_signal()).await {
                Ok(()) => Ended::Stopped,
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "the controller stopped");
                    let _ = controller_failed.send(());
                    Ended::ControllerFailed
                }
            }
        })
    });
    if !parts.webhook {
        ready.set(true);
        let ended = match controller {
            Some(task) => task.await.context("the controller task")?,
            None => Ended::Stopped,
        };
        if ended == Ended::Stopped {
            let _ = stop_admin.send(());
            let _ = admin.await;
        }
        return Ok(ended);
    }

    let (cert, watcher, temp_dir) = if serving.self_signed.self_signed {
        let client =
            certs_client.context("--self-signed needs access to the cluster to keep its Secret")?;
        let (config, temp_dir) = self_signed_config(serving)?;
        let self_signed = SelfSigned::new(client, config);
        let (stored, cert) = self_signed
            .start()
            .await
            .context("setting up the self-signed certificates")?;
        let task = tokio::spawn(self_signed.run(stored, cert.clone(), metrics.clone()));
        (cert, task, temp_dir)
    } else {
        let cert = ServingCert::load(&serving.tls_cert, &serving.tls_key).with_context(|| {
            format!(
                "loading the serving certificate {} and key {} (make them with `serin certs`)",
                serving.tls_cert.display(),
                serving.tls_key.display()
            )
        })?;
        let task = tokio::spawn(
            cert.clone()
                .watch(server::DEFAULT_POLL_INTERVAL, metrics.clone()),
        );
        (cert, task, None)
    };
    let tls = server::server_config(cert)?;

    let listener = TcpListener::bind(serving.listen)
        .await
        .with_context(|| format!("binding the webhook listener {}", serving.listen))?;
    tracing::info!(listen = %serving.listen, admin = %serving.admin_listen, "serving admission webhooks");

    let policies = policies.filter(|_| injector.is_some());
    let app = admission::router(AdmissionState {
        metrics: metrics.clone(),
        serin_user: serving.service_account.as_str().into(),
        injector,
        policies,
    })
    .merge(conversion::router(metrics));
    let serving_https = server::serve_https(
        listener,
        tls,
        app,
        ServeOptions::default(),
        ready,
        shutdown_signal(),
    );
    let mut ended = tokio::select! {
        () = serving_https => Ended::Stopped,
        () = failure(failed) => Ended::ControllerFailed,
    };
    if ended == Ended::Stopped {
        // Only now stop the admin port: /readyz said 503 while requests drained.
        let _ = stop_admin.send(());
        let _ = admin.await;
    }
    watcher.abort();
    if let Some(dir) = temp_dir {
        let _ = std::fs::remove_dir_all(dir);
    }
    if let (Ended::Stopped, Some(task)) = (ended, controller) {
        ended = task.await.context("the controller task")?;
    }
    if ended == Ended::Stopped {
        tracing::info!("stopped");
    }
    Ok(ended)
}

/// Completes when the controller's task says it failed; never when it stopped without
/// failing or there is no controller (the sender is dropped unsent).
async fn failure(failed: oneshot::Receiver<()>) {
    if failed.await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// The `--self-signed` settings, and the directory made for the pair if none was given
/// (removed on exit).
fn self_signed_config(
    serving: &ServingArgs,
) -> anyhow::Result<(self_signed::Config, Option<std::path::PathBuf>)> {
    let args = &serving.self_signed;
    let check_interval = std::time::Duration::from(args.self_signed_check_interval);
    let policy = Policy::new(
        args.self_signed_validity.into(),
        args.self_signed_renew_before.into(),
        check_interval,
    )
    .context("--self-signed-validity, --self-signed-renew-before and the check interval")?;
    let (dir, temp_dir) = match &args.self_signed_dir {
        Some(dir) => (dir.clone(), None),
        None => {
            let dir =
                std::env::temp_dir().join(format!("serin-self-signed-{}", std::process::id()));
            (dir.clone(), Some(dir))
        }
    };
    let crds = if args.self_signed_crds.is_empty() {
        crate::crd::all()
            .into_iter()
            .filter_map(|crd| crd.metadata.name)
            .collect()
    } else {
        args.self_signed_crds.clone()
    };
    let config = self_signed::Config {
        namespace: serving.lease_namespace.clone(),
        secret_name: args.self_signed_secret.clone(),
        webhook_config_name: serving.webhook_config_name.clone(),
        crds,
        policy,
        check_interval,
        dir,
        cert_options: CertOptions {
            namespace: serving.lease_namespace.clone(),
            ..CertOptions::default()
        },
    };
    Ok((config, temp_dir))
}

async fn wait_changed(mut rx: watch::Receiver<()>) {
    let _ = rx.changed().await;
}

/// Completes on SIGTERM (what the kubelet sends) or ctrl-c.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down: finishing in-flight reviews");
}
