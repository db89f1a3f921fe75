//! Leader election with a `coordination.k8s.io` Lease: only the holder runs the controller;
//! any number of replicas serve the webhooks. A holder that stops renewing loses the Lease
//! once `lease_duration` has passed; one that shuts down cleanly hands it over at once.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Api;
use kube::api::{ObjectMeta, PostParams};

#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// Who we are, written as `holderIdentity` (host and process).
    pub identity: String,
    /// How long a Lease stays ours without renewal.
    pub lease_duration: Duration,
    /// How often the holder renews, and a candidate retries.
    pub retry_period: Duration,
}

impl LeaseConfig {
    pub fn new(namespace: impl Into<String>) -> Self {
        let host = std::env::var("HOSTNAME")
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "serin".into());
        Self {
            namespace: namespace.into(),
            name: "serin-controller".into(),
            identity: format!("{host}-{}", std::process::id()),
            lease_duration: Duration::from_secs(15),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// Whether a Lease as stored can be taken by `identity` at `now`: it is ours, released, or
/// expired.
fn available(spec: &LeaseSpec, identity: &str, now: Timestamp) -> bool {
    let holder = spec.holder_identity.as_deref().unwrap_or("");
    if holder.is_empty() || holder == identity {
        return true;
    }
    let Some(renewed) = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) else {
        return true;
    };
    let duration = SignedDuration::from_secs(spec.lease_duration_seconds.unwrap_or(15).into());
    renewed.0 + duration < now
}

fn micro_now() -> MicroTime {
    MicroTime(Timestamp::now())
}

/// Renews the Lease as last written by us, without reading it first (one request per
/// renewal); `None` when it changed meanwhile (then read it again).
async fn renew(api: &Api<Lease>, config: &LeaseConfig, mut lease: Lease) -> Option<Lease> {
    lease.spec.get_or_insert_default().renew_time = Some(micro_now());
    api.replace(&config.name, &PostParams::default(), &lease)
        .await
        .ok()
}

/// One attempt to take or renew the Lease, returning it as written; `Ok(None)` while
/// someone else holds it.
async fn try_hold(api: &Api<Lease>, config: &LeaseConfig) -> kube::Result<Option<Lease>> {
    let duration = i32::try_from(config.lease_duration.as_secs()).unwrap_or(15);
    let Some(mut lease) = api.get_opt(&config.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(config.name.clone()),
                namespace: Some(config.namespace.clone()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(config.identity.clone()),
                lease_duration_seconds: Some(duration),
                acquire_time: Some(micro_now()),
                renew_time: Some(micro_now()),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(lease) => Ok(Some(lease)),
            // Someone created it first.
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(None),
            Err(e) => Err(e),
        };
    };
    let spec = lease.spec.get_or_insert_default();
    if !available(spec, &config.identity, Timestamp::now()) {
        return Ok(None);
    }
    if spec.holder_identity.as_deref() != Some(config.identity.as_str()) {
        spec.holder_identity = Some(config.identity.clone());
        spec.acquire_time = Some(micro_now());
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    spec.renew_time = Some(micro_now());
    spec.lease_duration_seconds = Some(duration);
    // `replace` carries the resourceVersion read above: a concurrent writer makes it fail
    // with 409 instead of both believing they lead.
    match api
        .replace(&config.name, &PostParams::default(), &lease)
        .await
    {
        Ok(lease) => Ok(Some(lease)),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(None),
        Err(e) => Err(e),
    }
}

/// Waits until the Lease is ours; returns it as written.
pub async fn acquire(api: &Api<Lease>, config: &LeaseConfig) -> Lease {
    let mut said_waiting = false;
    loop {
        match try_hold(api, config).await {
            Ok(Some(lease)) => {
                tracing::info!(lease = %config.name, identity = %config.identity, "leading: running the controller");
                return lease;
            }
            Ok(None) if !said_waiting => {
                tracing::info!(lease = %config.name, "another replica leads; waiting for the lease");
                said_waiting = true;
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(lease = %config.name, error = %e, "cannot read or take the lease; retrying")
            }
        }
        tokio::time::sleep(config.retry_period).await;
    }
}

/// Renews the Lease until a renewal is impossible for a whole `lease_duration`; returns then
/// (the caller must stop acting: another replica may take over).
pub async fn keep(api: &Api<Lease>, config: &LeaseConfig, lease: Lease) {
    let mut last_renewed = tokio::time::Instant::now();
    let mut held = Some(lease);
    loop {
        tokio::time::sleep(config.retry_period).await;
        if let Some(lease) = held.take() {
            held = renew(api, config, lease).await;
            if held.is_some() {
                last_renewed = tokio::time::Instant::now();
                continue;
            }
        }
        match try_hold(api, config).await {
            Ok(Some(lease)) => {
                held = Some(lease);
                last_renewed = tokio::time::Instant::now();
            }
            Ok(None) => {
                tracing::error!(lease = %config.name, "the lease was taken by another replica");
                return;
            }
            Err(e) => tracing::warn!(lease = %config.name, error = %e, "cannot renew the lease"),
        }
        // Give up a little before the Lease expires, so two leaders never overlap.
        if last_renewed.elapsed() + config.retry_period >= config.lease_duration {
            tracing::error!(lease = %config.name, "could not renew the lease in time");
            return;
        }
    }
}

/// Hands the Lease over on shutdown, so a successor need not wait for it to expire.
pub async fn release(api: &Api<Lease>, config: &LeaseConfig) {
    let Ok(Some(mut lease)) = api.get_opt(&config.name).await else {
        return;
    };
    let spec = lease.spec.get_or_insert_default();
    if spec.holder_identity.as_deref() != Some(config.identity.as_str()) {
        return;
    }
    spec.holder_identity = None;
    spec.renew_time = None;
    if let Err(e) = api
        .replace(&config.name, &PostParams::default(), &lease)
        .await
    {
        tracing::warn!(lease = %config.name, error = %e, "could not release the lease");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held_by(holder: &str, renewed: Timestamp) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            renew_time: Some(MicroTime(renewed)),
            lease_duration_seconds: Some(15),
            ..Default::default()
        }
    }

    #[test]
    fn a_lease_held_and_renewed_by_another_is_not_available() {
        let now = Timestamp::now();
        assert!(!available(&held_by("other", now), "me", now));
    }

    #[test]
    fn an_expired_released_or_own_lease_is_available() {
        let now = Timestamp::now();
        let long_ago = now - SignedDuration::from_secs(16);
        assert!(available(&held_by("other", long_ago), "me", now));
        assert!(available(&held_by("", now), "me", now));
        assert!(available(&held_by("me", now), "me", now));
        assert!(available(&LeaseSpec::default(), "me", now));
    }
}
