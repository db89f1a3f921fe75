//! The release controller: a kube-rs `Controller` over opted-in Deployments (label
//! `serin.dev/canary`), their `Canary` objects and their `-primary` Deployments, running
//! [`reconcile`] only while this replica holds the Lease.
//!
//! - [`context`]: what reconciles share, the options, the errors;
//! - [`watches`]: what the watches keep and which events need a reconcile;
//! - [`reconcile`]: the per-Deployment pipeline around [`crate::release::drive`];
//! - [`machinery`], [`routing`], [`status`], [`events`]: its writes, by what they touch;
//! - measurements and webhooks for the release machine are [`crate::analysis`]'s
//!   ([`crate::analysis::Measuring`], which the [`Context`] holds);
//! - [`requests`]: runtime requests on the Canary (promote, abort, pause, resume) (pure);
//! - [`metrics`]: the release metrics (`serin_canary_*`), set from each status written;
//! - [`lease`]: leader election.

mod answers;
mod cache;
mod context;
mod events;
mod failures;
pub mod lease;
pub mod machinery;
mod metrics;
mod orphans;
mod reconcile;
pub mod requests;
mod routing;
mod status;
mod watches;
mod workload;

pub use context::{Context, Error, FIELD_MANAGER, Options};
pub use failures::RETRY_AFTER;
pub use metrics::{MAX_CHECKS, ReleaseMetrics};

use std::future::Future;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};

/// Reconciles running at once.
const CONCURRENCY: u16 = 32;

/// Runs the controller until `shutdown` completes or the Lease is lost (an error: the
/// process should exit and be restarted, never act without the Lease).
pub async fn run(
    client: Client,
    options: Options,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> anyhow::Result<()> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), &options.lease.namespace);
    let shutdown = futures::future::FutureExt::shared(Box::pin(shutdown));
    let lease = tokio::select! {
        lease = lease::acquire(&leases, &options.lease) => lease,
        () = shutdown.clone() => return Ok(()),
    };
    let stores = watches::Stores::new();
    let ctx = Arc::new(Context::for_controller(client.clone(), &options, &stores)?);
    // Hooks and queries run outside the reconciles; an answer asks for its release's next one.
    let answered = ctx.analysis.answered();
    let sweeper = tokio::spawn(orphans::sweep_forever(
        client.clone(),
        stores.opted_in.clone(),
        stores.canaries.clone(),
    ));
    let pruner = options
        .release_metrics
        .clone()
        .map(|metrics| tokio::spawn(metrics::prune_forever(metrics, stores.canaries)));
    let metrics = options.metrics.clone();
    let (answered, answered_daemonsets) = watches::fan_out(answered);
    let configs = watches::watch_configs(
        &client,
        options.tracking,
        stores.opted_in.clone(),
        stores.daemonsets.clone(),
    );
    let daemonset_cache = (stores.daemonsets, stores.daemonsets_writer);
    let controller = watches::controller(
        &client,
        stores.writers,
        stores.opted_in,
        configs.deployments,
        answered,
        options.release_metrics.clone(),
    );
    let daemonsets = {
        let metrics = metrics.clone();
        let configs = configs.daemonsets;
        watches::daemonset_controller(&client, daemonset_cache, configs, answered_daemonsets)
            .with_config(kube::runtime::controller::Config::default().concurrency(CONCURRENCY))
            .graceful_shutdown_on(shutdown.clone())
            .run(
                move |daemonset, ctx| failures::counted_daemonset(metrics.clone(), daemonset, ctx),
                failures::error_policy,
                ctx.clone(),
            )
            .for_each(|result| async move {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "daemonset controller");
                }
            })
    };
    let controller = controller
        // Bounded: a thousand reconciles at once would each open a TLS connection to the
        // API server (memory) and only queue there.
        .with_config(kube::runtime::controller::Config::default().concurrency(CONCURRENCY))
        .graceful_shutdown_on(shutdown.clone())
        .run(
            move |deploy, ctx| failures::counted(metrics.clone(), deploy, ctx),
            failures::error_policy,
            ctx,
        )
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "controller");
            }
        });
    let controllers = futures::future::join(controller, daemonsets);
    let lost = tokio::select! {
        _ = controllers => false,
        () = lease::keep(&leases, &options.lease, lease) => true,
    };
    sweeper.abort();
    configs.task.abort();
    if let Some(pruner) = pruner {
        pruner.abort();
    }
    if lost {
        anyhow::bail!("lost the controller lease; stopping so that only one replica acts");
    }
    lease::release(&leases, &options.lease).await;
    tracing::info!("controller stopped");
    Ok(())
}
