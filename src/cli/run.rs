//! `serin run`, `serin webhook` and `serin controller`: the admission webhooks over HTTPS
//! (serving certificate reloaded when its files change, or made, kept in a Secret and rotated
//! with `--self-signed`), the release controller, and the
//! admin port, with a graceful shutdown on SIGTERM/ctrl-c.

use std::sync::Arc;

use anyhow::Context;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::Common;
use crate::admission::{self, AdmissionState};
use crate::certs::CertOptions;
use crate::certs::rotation::Policy;
use crate::certs::self_signed::{self, SelfSigned};
use crate::controller;
use crate::conversion;
use crate::server::{self, KubeApiRequests, Metrics, ReadyFlag, ServeOptions, ServingCert};

/// Which parts of Serin a process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parts {
    pub webhook: bool,
    pub controller: bool,
}

impl Parts {
    pub const ALL: Parts = Parts {
        webhook: true,
        controller: true,
    };
    pub const WEBHOOK: Parts = Parts {
        webhook: true,
        controller: false,
    };
    pub const CONTROLLER: Parts = Parts {
        webhook: false,
        controller: true,
    };
}

pub fn run(common: &Common, parts: Parts) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(serve(common, parts))
}

async fn serve(common: &Common, parts: Parts) -> anyhow::Result<()> {
    server::install_crypto_provider();
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let api_requests = KubeApiRequests::register(&mut registry);

    let admin_listener = TcpListener::bind(common.admin_listen)
        .await
        .with_context(|| format!("binding the admin listener {}", common.admin_listen))?;
    let ready = ReadyFlag::default();
    let (stop_admin, admin_stopped) = watch::channel(());
    let admin = tokio::spawn(server::serve_admin(
        admin_listener,
        server::admin_router(ready.clone(), Arc::new(registry)),
        wait_changed(admin_stopped),
    ));

    let client = match super::kube_client(common, api_requests).await {
        Ok(client) => Some(client),
        Err(e) if !parts.controller => {
            tracing::warn!(error = %format!("{e:#}"), "no cluster access: the webhooks decide but create nothing");
            None
        }
        Err(e) => return Err(e),
    };
    let options = controller::Options {
        prometheus_url: common.prometheus_url.clone(),
        lease: controller::lease::LeaseConfig::new(common.lease_namespace.clone()),
        serin_user: common.service_account.clone(),
        tracking: crate::release::Tracking {
            secrets: common.track_secrets,
        },
        routers: crate::router::RouterSettings {
            nginx_annotation_prefix: common.nginx_annotation_prefix.clone(),
        },
        own_ports: vec![common.listen.port(), common.admin_listen.port()],
        // One index for the webhooks and the controller: the same three watches either way.
        policies: client.clone().map(admission::PolicyIndex::start),
    };
    let policies = options.policies.clone();
    let injector = match &client {
        Some(client) => Some(Arc::new(controller::machinery::Injector::new(
            client.clone(),
            &options,
        )?)),
        None => None,
    };
    let certs_client = client.clone().filter(|_| parts.webhook);
    let controller = client.filter(|_| parts.controller).map(|client| {
        tokio::spawn(async move {
            let result = controller::run(client, options, shutdown_signal()).await;
            if let Err(e) = &result {
                // Webhooks could go on serving, but a replica without its controller
                // must not look healthy: exit and let it be restarted.
                tracing::error!(error = %format!("{e:#}"), "the controller stopped");
                std::process::exit(1);
            }
            result
        })
    });
    if !parts.webhook {
        ready.set(true);
        let result = match controller {
            Some(task) => task.await.context("the controller task")?,
            None => Ok(()),
        };
        let _ = stop_admin.send(());
        let _ = admin.await;
        return result;
    }

    let (cert, watcher, temp_dir) = if common.self_signed.self_signed {
        let client =
            certs_client.context("--self-signed needs access to the cluster to keep its Secret")?;
        let (config, temp_dir) = self_signed_config(common)?;
        let self_signed = SelfSigned::new(client, config);
        let (stored, cert) = self_signed
            .start()
            .await
            .context("setting up the self-signed certificates")?;
        let task = tokio::spawn(self_signed.run(stored, cert.clone(), metrics.clone()));
        (cert, task, temp_dir)
    } else {
        let cert = ServingCert::load(&common.tls_cert, &common.tls_key).with_context(|| {
            format!(
                "loading the serving certificate {} and key {} (make them with `serin certs`)",
                common.tls_cert.display(),
                common.tls_key.display()
            )
        })?;
        let task = tokio::spawn(
            cert.clone()
                .watch(server::DEFAULT_POLL_INTERVAL, metrics.clone()),
        );
        (cert, task, None)
    };
    let tls = server::server_config(cert)?;

    let listener = TcpListener::bind(common.listen)
        .await
        .with_context(|| format!("binding the webhook listener {}", common.listen))?;
    tracing::info!(listen = %common.listen, admin = %common.admin_listen, "serving admission webhooks");

    let policies = policies.filter(|_| injector.is_some());
    let app = admission::router(AdmissionState {
        metrics: metrics.clone(),
        serin_user: common.service_account.as_str().into(),
        injector,
        policies,
    })
    .merge(conversion::router(metrics));
    server::serve_https(
        listener,
        tls,
        app,
        ServeOptions::default(),
        ready,
        shutdown_signal(),
    )
    .await;
    // Only now stop the admin port: /readyz said 503 while requests drained.
    let _ = stop_admin.send(());
    let _ = admin.await;
    watcher.abort();
    if let Some(dir) = temp_dir {
        let _ = std::fs::remove_dir_all(dir);
    }
    if let Some(task) = controller {
        task.await.context("the controller task")??;
    }
    tracing::info!("stopped");
    Ok(())
}

/// The `--self-signed` settings, and the directory made for the pair if none was given
/// (removed on exit).
fn self_signed_config(
    common: &Common,
) -> anyhow::Result<(self_signed::Config, Option<std::path::PathBuf>)> {
    let args = &common.self_signed;
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
        namespace: common.lease_namespace.clone(),
        secret_name: args.self_signed_secret.clone(),
        webhook_config_name: common.webhook_config_name.clone(),
        crds,
        policy,
        check_interval,
        dir,
        cert_options: CertOptions {
            namespace: common.lease_namespace.clone(),
            ..CertOptions::default()
        },
    };
    Ok((config, temp_dir))
}

async fn wait_changed(mut rx: watch::Receiver<()>) {
    let _ = rx.changed().await;
}

/// Completes on SIGTERM (what the kubelet sends) or ctrl-c.
pub(super) async fn shutdown_signal() {
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
