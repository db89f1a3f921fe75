//! Watches that survive an object Serin cannot read.
//!
//! A typed watch decodes every object of a list at once: one Canary or CanaryPolicy that
//! passes the CRD's schema but not Serin's stricter types (a duration too large to
//! represent, a value an older or newer Serin wrote) fails the whole list, again and again,
//! and the cache behind it never fills — the controller would stall for every release, and
//! the webhooks would refuse every review for want of policies. [`watch`] decodes each object
//! on its own instead: one that does not decode is skipped with a warning naming it, and
//! every other object is served as usual.

use std::fmt::Debug;

use futures::{Stream, StreamExt};
use kube::api::{ApiResource, DynamicObject};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

/// A watch of every `K` in the cluster, as `kube::runtime::watcher` gives it, but decoding
/// objects one by one and skipping those that do not decode.
pub fn watch<K>(
    client: Client,
    config: watcher::Config,
) -> impl Stream<Item = Result<Event<K>, watcher::Error>> + Send + 'static
where
    K: Resource<DynamicType = ()> + DeserializeOwned + Clone + Debug + Send + 'static,
{
    let resource = ApiResource::erase::<K>(&());
    let api: Api<DynamicObject> = Api::all_with(client, &resource);
    watcher::watcher(api, config).filter_map(|event| async move {
        match event {
            Ok(event) => typed(event).map(Ok),
            Err(e) => Some(Err(e)),
        }
    })
}

/// The event with its object decoded as `K`; `None` when the object does not decode (said in
/// the log once per event).
fn typed<K>(event: Event<DynamicObject>) -> Option<Event<K>>
where
    K: Resource<DynamicType = ()> + DeserializeOwned,
{
    match event {
        Event::Apply(object) => decode(object).map(Event::Apply),
        Event::InitApply(object) => decode(object).map(Event::InitApply),
        // A deletion of an object that never decoded has nothing to remove from a cache.
        Event::Delete(object) => decode(object).map(Event::Delete),
        Event::Init => Some(Event::Init),
        Event::InitDone => Some(Event::InitDone),
    }
}

fn decode<K>(object: DynamicObject) -> Option<K>
where
    K: Resource<DynamicType = ()> + DeserializeOwned,
{
    let (namespace, name) = (object.namespace().unwrap_or_default(), object.name_any());
    match object.try_parse::<K>() {
        Ok(typed) => Some(typed),
        Err(e) => {
            tracing::warn!(
                kind = %K::kind(&()),
                %namespace,
                %name,
                error = %e,
                "skipping an object Serin cannot read; fix or delete it"
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::Canary;
    use serde_json::json;

    fn canary(name: &str, interval: &str) -> DynamicObject {
        let config = crate::spec::CanarySpec::defaults("web".into(), Some(8080));
        let typed = Canary::new(name, crate::crd::CanaryResourceSpec { config });
        let mut value = serde_json::to_value(typed).expect("a Canary encodes");
        value["metadata"]["namespace"] = json!("prod");
        value["spec"]["interval"] = json!(interval);
        serde_json::from_value(value).expect("a dynamic object")
    }

    #[test]
    fn an_object_that_does_not_decode_is_skipped_and_the_others_pass() {
        // The CRD's pattern accepts this interval; Serin's duration cannot hold it.
        let bad = canary("bad", "99999999999999999999h");
        let good = canary("good", "30s");
        assert!(typed::<Canary>(Event::InitApply(bad.clone())).is_none());
        assert!(typed::<Canary>(Event::Apply(bad)).is_none());
        let Some(Event::InitApply(decoded)) = typed::<Canary>(Event::InitApply(good)) else {
            panic!("a good Canary decodes");
        };
        assert_eq!(decoded.name_any(), "good");
        assert!(matches!(
            typed::<Canary>(Event::InitDone),
            Some(Event::InitDone)
        ));
    }
}
