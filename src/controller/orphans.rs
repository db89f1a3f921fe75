//! Clean-up after injection that did not land: the mutating webhook creates objects owned by
//! an existing Deployment before the update that opts it in is stored, and a later webhook or
//! validation may still refuse that update. Then the Deployment never gets the label the
//! controller watches, and nothing else would remove the objects while it lives (the garbage
//! collector removes them only with it). Once a minute, a `Canary` whose Deployment is not in
//! the controller's cache and, read afresh, is not opted in, is removed with what was
//! injected beside it. The Canaries come from the controller's watch cache: no request at
//! all while there is nothing to remove (a LIST of every Canary, managed fields and status
//! included, was a few MB held at once for a thousand of them).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, ResourceExt};

use crate::crd::Canary;
use crate::release::{CANARY_SUFFIX, OWNER_LABEL, PRIMARY_SUFFIX, primary_name};
use crate::spec::MANAGED_LABEL;

/// How often to look.
const PERIOD: Duration = Duration::from_secs(60);
/// An injection younger than this may still be waiting for its Deployment update to land.
const GRACE: Duration = Duration::from_secs(30);

pub(super) async fn sweep_forever(
    client: Client,
    deployments: Store<Deployment>,
    canaries: Store<Canary>,
) {
    // The first look is a PERIOD after start, when both caches have long been filled: before,
    // every Canary would look like a leftover and cost a GET of its Deployment. (Not
    // `Store::wait_until_ready`: its readiness wakes one waiter only, and the controller is
    // already waiting on the Deployment cache.)
    let start = tokio::time::Instant::now() + PERIOD;
    let mut tick = tokio::time::interval_at(start, PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = sweep(&client, &deployments, &canaries).await {
            tracing::warn!(error = %e, "looking for leftovers of refused opt-ins failed");
        }
    }
}

/// The Canaries (namespace, name, Service) that may be leftovers: older than [`GRACE`], and
/// their Deployment not among the opted-in ones the controller knows.
fn suspects(
    canaries: &[Arc<Canary>],
    opted_in: impl Fn(&ObjectRef<Deployment>) -> bool,
    now: Timestamp,
) -> Vec<(String, String, String)> {
    canaries
        .iter()
        .filter_map(|canary| {
            let namespace = canary.namespace()?;
            let name = canary.name_any();
            if opted_in(&ObjectRef::new(&name).within(&namespace)) {
                return None;
            }
            let created = canary.creation_timestamp().map(|t| t.0).unwrap_or(now);
            if now.duration_since(created).as_secs() < GRACE.as_secs() as i64 {
                return None;
            }
            Some((namespace, name, canary.spec.config.service.clone()))
        })
        .collect()
}

async fn sweep(
    client: &Client,
    deployments: &Store<Deployment>,
    canaries: &Store<Canary>,
) -> kube::Result<()> {
    let found = suspects(
        &canaries.state(),
        |key| deployments.get(key).is_some(),
        Timestamp::now(),
    );
    for (namespace, name, service) in found {
        let api: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
        let Some(deploy) = api.get_opt(&name).await? else {
            continue; // gone: the garbage collector removes what it owned
        };
        if deploy.labels().contains_key(MANAGED_LABEL) {
            continue; // opted in; the cache had not caught up
        }
        tracing::info!(
            namespace,
            deployment = name,
            "removing objects injected for an opt-in that was refused"
        );
        remove(client, &namespace, &name, &service).await?;
    }
    Ok(())
}

/// Deletes what injection creates for `name`, only objects labelled as Serin's for it.
async fn remove(client: &Client, ns: &str, name: &str, service: &str) -> kube::Result<()> {
    let delete = DeleteParams::background();
    let owned = |labels: &std::collections::BTreeMap<String, String>| {
        labels.get(OWNER_LABEL).map(String::as_str) == Some(name)
    };
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    if let Some(primary) = deployments.get_opt(&primary_name(name)).await?
        && owned(primary.labels())
    {
        deployments.delete(&primary.name_any(), &delete).await?;
    }
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    for svc in [
        format!("{service}{PRIMARY_SUFFIX}"),
        format!("{service}{CANARY_SUFFIX}"),
    ] {
        if let Some(found) = services.get_opt(&svc).await?
            && owned(found.labels())
        {
            services.delete(&svc, &delete).await?;
        }
    }
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let selector = ListParams::default().labels(&format!("{OWNER_LABEL}={name}"));
    for cm in maps.list_metadata(&selector).await? {
        maps.delete(&cm.name_any(), &delete).await?;
    }
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), ns);
    for secret in secrets.list_metadata(&selector).await? {
        secrets.delete(&secret.name_any(), &delete).await?;
    }
    Api::<Canary>::namespaced(client.clone(), ns)
        .delete(name, &delete)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn canary(name: &str, created: Timestamp) -> Arc<Canary> {
        let config = crate::spec::CanarySpec::defaults(format!("{name}-svc"), Some(8080));
        let mut canary = Canary::new(name, crate::crd::CanaryResourceSpec { config });
        canary.metadata.namespace = Some("prod".into());
        canary.metadata.creation_timestamp = Some(Time(created));
        Arc::new(canary)
    }

    #[test]
    fn only_canaries_past_the_grace_whose_deployment_is_not_opted_in_are_suspects() {
        let now = Timestamp::now();
        let old = now - std::time::Duration::from_secs(120);
        let young = now - std::time::Duration::from_secs(5);
        let canaries = [
            canary("kept", old),
            canary("refused", old),
            canary("just-injected", young),
        ];
        let opted_in = |key: &ObjectRef<Deployment>| key.name == "kept";
        assert_eq!(
            suspects(&canaries, opted_in, now),
            vec![("prod".into(), "refused".into(), "refused-svc".into())]
        );
    }
}
