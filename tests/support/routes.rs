//! Readers for the router object of any provider, as stored: the object itself and the
//! weights it routes by, read with the same [`Router`] code Serin writes it with.

use kube::core::DynamicObject;
use kube::{Api, Client};
use serin::router::{Router, Weights, router_for};
use serin::spec::{CanarySpec, Provider};

fn router(provider: Provider) -> Box<dyn Router> {
    router_for(provider).unwrap_or_else(|| panic!("no router for {provider}"))
}

/// The router object of `provider` named after the apex Service `service`, as stored.
pub async fn object(
    client: &Client,
    ns: &str,
    provider: Provider,
    service: &str,
) -> Option<DynamicObject> {
    let resource = router(provider).api_resource();
    Api::<DynamicObject>::namespaced_with(client.clone(), ns, &resource)
        .get_opt(service)
        .await
        .unwrap_or_else(|e| panic!("read {} {ns}/{service}: {e}", resource.kind))
}

/// The weights the router object of `provider` for `service` routes by; `None` when it is
/// missing or unreadable.
pub async fn weights(
    client: &Client,
    ns: &str,
    provider: Provider,
    service: &str,
) -> Option<Weights> {
    let object = object(client, ns, provider, service).await?;
    let spec = CanarySpec::defaults(service.to_owned(), None);
    router(provider).weights(&object, &spec).ok()
}
