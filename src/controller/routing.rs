//! The router object of a release and its companions: applied with the route the machine
//! asks for, and deleted on opt-out or when a configuration change leaves them behind.

use kube::api::{DeleteParams, ListParams, Patch};
use kube::core::DynamicObject;
use kube::{Api, ResourceExt};
use serde_json::json;

use super::context::Release;
use super::context::{Error, apply_params};
use super::machinery::ignore_missing;
use crate::release::{OWNER_LABEL, Phase, ReleaseStatus, Route};

impl Release<'_> {
    /// The route the router object has (`None` while initializing: the machine leaves the
    /// router alone until the primary is Ready and then sets 100/0 whatever it reads, so a GET
    /// is saved on each reconcile the primary's rollout causes). With `reapply`, the object is
    /// applied again at that route, and companions of the earlier configuration deleted.
    pub(super) async fn observe_router(
        &self,
        status: &ReleaseStatus,
        reapply: bool,
    ) -> Result<Option<Route>, Error> {
        let route = match status.phase {
            Phase::Initializing => None,
            _ => match self.router_api().get_opt(&self.router_name()).await {
                Ok(object) => object.and_then(|o| self.router.route(&o, &self.spec).ok()),
                // The router's CRD is missing: SetRoute will say so.
                Err(_) => None,
            },
        };
        if reapply && let Some(route) = &route {
            self.set_route(route).await?;
            // Companions of the earlier configuration (Gloo Upstreams of another port) are
            // no longer named by the router object: only a configuration change leaves any.
            let current: Vec<String> = self
                .router
                .companions(&self.deploy, &self.spec)?
                .iter()
                .map(|c| c.object.name_any())
                .collect();
            self.delete_companions(|name| !current.iter().any(|c| c == name))
                .await?;
        }
        Ok(route)
    }

    pub(super) fn router_api(&self) -> Api<DynamicObject> {
        Api::namespaced_with(
            self.ctx.client.clone(),
            &self.namespace,
            &self.router.api_resource(),
        )
    }

    pub(super) fn router_name(&self) -> String {
        self.router.object_name(&self.spec)
    }

    pub(super) async fn set_route(&self, route: &Route) -> Result<(), Error> {
        // A router made from a user's object (NGINX's Ingress) is built from it as stored.
        let source = match self.router.source(&self.spec) {
            Some(source) => {
                let api: Api<DynamicObject> = Api::namespaced_with(
                    self.ctx.client.clone(),
                    &self.namespace,
                    &source.resource,
                );
                api.get_opt(&source.name).await?
            }
            None => None,
        };
        let object = self
            .router
            .build_route(&self.deploy, &self.spec, route, source.as_ref())?;
        // What the router object refers to (Gloo's Upstreams) exists before it does.
        for companion in self.router.companions(&self.deploy, &self.spec)? {
            self.apply_routing(&companion.resource, &companion.object)
                .await?;
        }
        self.apply_routing(&self.router.api_resource(), &object)
            .await
    }

    /// Deletes the router's companions of this Deployment (by owner label) whose name
    /// `stale` picks; a kind the API server does not serve has none.
    pub(super) async fn delete_companions(
        &self,
        stale: impl Fn(&str) -> bool,
    ) -> Result<(), Error> {
        let owned = ListParams::default().labels(&format!("{OWNER_LABEL}={}", self.name));
        let delete = DeleteParams::background();
        for resource in self.router.companion_resources() {
            let api: Api<DynamicObject> =
                Api::namespaced_with(self.ctx.client.clone(), &self.namespace, &resource);
            let companions = match api.list_metadata(&owned).await {
                Ok(list) => list.items,
                Err(kube::Error::Api(e)) if e.code == 404 => Vec::new(),
                Err(e) => return Err(Error::Kube(e)),
            };
            for companion in companions.iter().filter(|c| stale(&c.name_any())) {
                ignore_missing(api.delete(&companion.name_any(), &delete).await)?;
            }
        }
        Ok(())
    }

    /// Server-side apply of a router object or one of its companions; a kind the API server
    /// does not serve is reported as a router that is not installed.
    pub(super) async fn apply_routing(
        &self,
        resource: &kube::core::ApiResource,
        object: &DynamicObject,
    ) -> Result<(), Error> {
        let mut value = serde_json::to_value(object).map_err(Error::Serialize)?;
        // DynamicObject serializes its type; make sure the apply carries it.
        value["apiVersion"] = json!(resource.api_version);
        value["kind"] = json!(resource.kind);
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.ctx.client.clone(), &self.namespace, resource);
        api.patch(&object.name_any(), &apply_params(), &Patch::Apply(&value))
            .await
            .map_err(|e| match e {
                kube::Error::Api(ref status) if status.code == 404 => Error::RouterNotInstalled {
                    api_version: resource.api_version.clone(),
                    kind: resource.kind.clone(),
                },
                e => Error::Kube(e),
            })?;
        Ok(())
    }
}
