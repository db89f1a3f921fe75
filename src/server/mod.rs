//! Serving: the webhook over HTTPS with a reloadable certificate, and the admin port.
//!
//! The admission handlers arrive as an axum [`Router`](axum::Router); this module puts it on
//! the network. Wiring, in order:
//! 1. [`install_crypto_provider`];
//! 2. [`ServingCert::load`] the pair, [`server_config`] from it, and spawn
//!    [`ServingCert::watch`] to pick up rotations;
//! 3. [`Metrics::register`] into a `prometheus_client` registry, and a [`ReadyFlag`];
//! 4. [`serve_https`] the handlers and [`serve_admin`] an [`admin_router`].

mod admin;
mod clock;
mod metrics;
mod peers;
mod serve;
mod tls;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

pub use admin::{admin_router, serve_admin};
pub use metrics::{AlertCounts, KubeApiRequests, Metrics, Outcome, Reconciles, ReloadResult};
pub use serve::{
    DEFAULT_KEEP_ALIVE_TIMEOUT, DEFAULT_MAX_CONNECTIONS_PER_ADDRESS, DEFAULT_REQUEST_DEADLINE,
    MAX_BODY_BYTES, ServeOptions, serve_https,
};
pub use tls::{
    DEFAULT_POLL_INTERVAL, ReloadOutcome, ServingCert, TlsError, install_crypto_provider,
    server_config,
};

/// Whether something is ready (the webhook port accepting connections, the policy caches
/// filled); `/readyz` reads one, which may wait for others ([`ReadyFlag::and`]).
#[derive(Debug, Clone, Default)]
pub struct ReadyFlag {
    own: Arc<AtomicBool>,
    /// Flags that must be ready too.
    after: Vec<ReadyFlag>,
}

impl ReadyFlag {
    pub fn set(&self, ready: bool) {
        self.own.store(ready, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.own.load(Ordering::Acquire) && self.after.iter().all(ReadyFlag::is_ready)
    }

    /// This flag, ready only while `other` is ready too (setting the result sets this one).
    pub fn and(mut self, other: ReadyFlag) -> Self {
        self.after.push(other);
        self
    }
}
