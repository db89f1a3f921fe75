//! Watch-fed caches of objects Serin itself writes (the `Canary` and the `-primary`
//! Deployment), read instead of a GET on every reconcile.
//!
//! A watch runs behind the writes that cause it: a reconcile that starts right after Serin
//! wrote a Canary's status could read the status from before, and replay a step (a second
//! check counted, a weight set twice). So the cache remembers what Serin last wrote (or
//! deleted) of each object, and answers only once it has caught up with that: until then
//! the caller reads from the API server, and what it reads becomes the new mark.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kube::api::ObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Resource};

use super::Error;

/// What the cache must show before it is read again.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Mark {
    /// The object at this resourceVersion (or a later one: which is later cannot be told
    /// from the opaque versions, so any other version asks the API server again).
    Version(String),
    /// No object.
    Gone,
}

/// What a lookup found.
#[derive(Debug)]
pub enum Lookup<K> {
    /// The cache has caught up: this is the object (`None`: there is none).
    Fresh(Option<Arc<K>>),
    /// The cache may be behind Serin's own last write, or does not have the object: read
    /// it from the API server (and [`Cache::saw`] what was read).
    AskServer,
}

/// The pure decision: may a cached object (its resourceVersion, `None` when the cache has
/// none) be used, given the mark Serin left? `Some(clear)` to use it, clearing the mark when
/// `clear`; `None` to ask the API server.
fn decide(cached: Option<Option<&str>>, mark: Option<&Mark>) -> Option<bool> {
    match (cached, mark) {
        // Nothing written since the watch delivered it: current as far as Serin knows.
        (Some(_), None) => Some(false),
        (Some(Some(seen)), Some(Mark::Version(wanted))) if seen == wanted => Some(true),
        (None, Some(Mark::Gone)) => Some(true),
        // A miss may be an object created a moment ago (by admission, or Serin itself), and
        // anything else is a cache behind (or past) the mark.
        _ => None,
    }
}

/// A reflector [`Store`] and the marks of Serin's own writes.
pub struct Cache<K: Resource<DynamicType = ()> + Clone + 'static> {
    store: Store<K>,
    marks: Mutex<HashMap<ObjectRef<K>, Mark>>,
}

impl<K> Cache<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    pub fn new(store: Store<K>) -> Self {
        Self {
            store,
            marks: Mutex::default(),
        }
    }

    fn key(namespace: &str, name: &str) -> ObjectRef<K> {
        ObjectRef::new(name).within(namespace)
    }

    fn marks(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectRef<K>, Mark>> {
        // A panic while holding the lock leaves only marks behind: still usable.
        self.marks.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn lookup(&self, namespace: &str, name: &str) -> Lookup<K> {
        let key = Self::key(namespace, name);
        let cached = self.store.get(&key);
        let mut marks = self.marks();
        let version = cached
            .as_ref()
            .map(|o| o.meta().resource_version.as_deref());
        match decide(version, marks.get(&key)) {
            Some(clear) => {
                if clear {
                    marks.remove(&key);
                }
                Lookup::Fresh(cached)
            }
            None => Lookup::AskServer,
        }
    }

    /// Serin wrote the object of `meta`, or read it from the API server: this version, or a
    /// later one, is current. (A Scale's metadata names its Deployment's version.)
    pub fn saw(&self, meta: &ObjectMeta) {
        let (Some(namespace), Some(name)) = (&meta.namespace, &meta.name) else {
            return;
        };
        // Objects from the API server always have a version; without one, never trust the
        // cache.
        let version = meta.resource_version.clone().unwrap_or_default();
        self.marks()
            .insert(Self::key(namespace, name), Mark::Version(version));
    }

    /// Serin deleted the object, or the API server does not have it.
    pub fn gone(&self, namespace: &str, name: &str) {
        self.marks().insert(Self::key(namespace, name), Mark::Gone);
    }

    /// Marks kept: what the cache still has to catch up with.
    #[cfg(test)]
    fn pending(&self) -> usize {
        self.marks().len()
    }
}

/// An object from `cache` when it has caught up with Serin's writes, else from the API server
/// (which then becomes the mark the cache must reach).
pub(super) async fn read_through<K>(
    cache: Option<&Cache<K>>,
    api: &Api<K>,
    namespace: &str,
    name: &str,
) -> Result<Option<K>, Error>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug + 'static,
{
    if let Some(Lookup::Fresh(found)) = cache.map(|c| c.lookup(namespace, name)) {
        return Ok(found.map(|o| K::clone(&o)));
    }
    let found = api.get_opt(name).await?;
    if let (Some(cache), Some(object)) = (cache, &found) {
        cache.saw(object.meta());
    }
    Ok(found)
}

/// Serin wrote (or read) the object of `meta`: its cache, if any, is read again once it shows
/// that version.
pub(super) fn saw<K>(cache: &Option<Cache<K>>, meta: &kube::api::ObjectMeta)
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    if let Some(cache) = cache {
        cache.saw(meta);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::Deployment;
    use kube::runtime::watcher;

    fn deployment(version: &str) -> Deployment {
        let mut d = Deployment::default();
        d.metadata.name = Some("web-primary".into());
        d.metadata.namespace = Some("prod".into());
        d.metadata.resource_version = Some(version.into());
        d
    }

    fn cache_with(
        objects: &[Deployment],
    ) -> (
        Cache<Deployment>,
        kube::runtime::reflector::store::Writer<Deployment>,
    ) {
        let (store, mut writer) = kube::runtime::reflector::store();
        writer.apply_watcher_event(&watcher::Event::Init);
        for o in objects {
            writer.apply_watcher_event(&watcher::Event::InitApply(o.clone()));
        }
        writer.apply_watcher_event(&watcher::Event::InitDone);
        (Cache::new(store), writer)
    }

    fn fresh_version(lookup: Lookup<Deployment>) -> Option<Option<String>> {
        match lookup {
            Lookup::Fresh(o) => Some(o.and_then(|o| o.metadata.resource_version.clone())),
            Lookup::AskServer => None,
        }
    }

    #[test]
    fn an_object_serin_has_not_written_is_read_from_the_cache() {
        let (cache, _w) = cache_with(&[deployment("5")]);
        assert_eq!(
            fresh_version(cache.lookup("prod", "web-primary")),
            Some(Some("5".into()))
        );
    }

    #[test]
    fn a_miss_asks_the_api_server() {
        let (cache, _w) = cache_with(&[]);
        assert_eq!(fresh_version(cache.lookup("prod", "web-primary")), None);
    }

    #[test]
    fn after_a_write_the_cache_is_read_only_once_it_shows_that_write() {
        let (cache, mut writer) = cache_with(&[deployment("5")]);
        cache.saw(&deployment("7").metadata);
        // The watch has not delivered Serin's write yet: the cache would show version 5.
        assert_eq!(fresh_version(cache.lookup("prod", "web-primary")), None);
        writer.apply_watcher_event(&watcher::Event::Apply(deployment("7")));
        assert_eq!(
            fresh_version(cache.lookup("prod", "web-primary")),
            Some(Some("7".into()))
        );
        assert_eq!(cache.pending(), 0, "the mark is cleared once caught up");
        // Later versions (someone else's writes) are then read from the cache as before.
        writer.apply_watcher_event(&watcher::Event::Apply(deployment("9")));
        assert_eq!(
            fresh_version(cache.lookup("prod", "web-primary")),
            Some(Some("9".into()))
        );
    }

    #[test]
    fn a_version_past_the_mark_asks_the_api_server_whose_answer_becomes_the_mark() {
        let (cache, mut writer) = cache_with(&[deployment("5")]);
        cache.saw(&deployment("7").metadata);
        writer.apply_watcher_event(&watcher::Event::Apply(deployment("8")));
        assert_eq!(fresh_version(cache.lookup("prod", "web-primary")), None);
        cache.saw(&deployment("8").metadata);
        assert_eq!(
            fresh_version(cache.lookup("prod", "web-primary")),
            Some(Some("8".into()))
        );
    }

    #[test]
    fn after_a_delete_the_cache_is_read_only_once_the_object_has_left_it() {
        let (cache, mut writer) = cache_with(&[deployment("5")]);
        cache.gone("prod", "web-primary");
        assert_eq!(fresh_version(cache.lookup("prod", "web-primary")), None);
        writer.apply_watcher_event(&watcher::Event::Delete(deployment("5")));
        assert_eq!(
            fresh_version(cache.lookup("prod", "web-primary")),
            Some(None)
        );
        assert_eq!(cache.pending(), 0);
    }

    #[test]
    fn decide_covers_every_case() {
        let v = |s: &str| Mark::Version(s.into());
        assert_eq!(decide(Some(Some("1")), None), Some(false));
        assert_eq!(decide(Some(None), None), Some(false));
        assert_eq!(decide(None, None), None);
        assert_eq!(decide(Some(Some("1")), Some(&v("1"))), Some(true));
        assert_eq!(decide(Some(Some("2")), Some(&v("1"))), None);
        assert_eq!(decide(None, Some(&v("1"))), None);
        assert_eq!(decide(None, Some(&Mark::Gone)), Some(true));
        assert_eq!(decide(Some(Some("1")), Some(&Mark::Gone)), None);
    }
}
