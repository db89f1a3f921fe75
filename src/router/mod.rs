//! Routers: the object that splits traffic between the primary and the canary, one file per
//! provider behind the small [`Router`] trait (as Flagger's `pkg/router/`). In `router/`, a
//! provider is one file, its `pub mod` line and one arm in [`configured_router`]; what else a
//! new provider touches (its `Provider` variant, its observer in `analysis/observers/`, the
//! simulator, manifests, tests and docs) is listed in `docs/architecture.md`, "Adding a
//! provider".
//!
//! Builders are pure: they return the desired object as a [`DynamicObject`] for server-side
//! apply, and read the weights back from one the API server returned. A router may also need
//! objects that do not change with the weights ([`Router::companions`]: Gloo's Upstreams).

pub mod gatewayapi;
pub mod gloo;
pub mod nginx;
pub mod smi;

use crate::spec::Workload;
use kube::core::{ApiResource, DynamicObject};
use serde_json::Value;

use crate::release::{CANARY_SUFFIX, OWNER_LABEL, PRIMARY_SUFFIX, owner_references};
pub use crate::release::{Route, Weights};
use crate::spec::{CanarySpec, Provider};

/// Why a router object could not be built or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouterError {
    #[error("{kind} {name}: no backend for Service {service:?}")]
    MissingBackend {
        kind: &'static str,
        name: String,
        service: String,
    },
    #[error("{kind} {name}: backend {service:?} has weight {weight}, which is not a number")]
    BadWeight {
        kind: &'static str,
        name: String,
        service: String,
        weight: String,
    },
    #[error("{kind} {name}: every backend has weight 0")]
    NoWeight { kind: &'static str, name: String },
    #[error(
        "{kind} {name}: cannot route by serin.dev/match rules; A/B testing needs a provider \
         that can match"
    )]
    CannotMatch { kind: &'static str, name: String },
    #[error(
        "{kind} {name}: no port to route to: set serin.dev/port, or give the pod template a \
         containerPort"
    )]
    NoPort { kind: &'static str, name: String },
    #[error("{kind} {name}: it is made from {source_kind} {source_name}, which does not exist")]
    MissingSource {
        kind: &'static str,
        name: String,
        source_kind: &'static str,
        source_name: String,
    },
    #[error(
        "{name}: this provider's router cannot mirror requests or keep users on the canary by \
         a cookie; serin.dev/mirror-checks and serin.dev/affinity-cookie need \
         serin.dev/provider gatewayapi"
    )]
    CannotMirrorOrStick { name: String },
    #[error("{kind} {name}: {why}")]
    CannotExpress {
        kind: &'static str,
        name: String,
        why: String,
    },
}

/// A user's object a router object is made from (NGINX: the Ingress it copies), which the
/// controller reads and hands to [`Router::build_from`].
#[derive(Debug, Clone)]
pub struct Source {
    pub resource: ApiResource,
    pub name: String,
}

/// An object the router object refers to, of its own kind (Gloo's `Upstream`s), with the
/// resource to apply it through.
#[derive(Debug, Clone)]
pub struct Companion {
    pub resource: ApiResource,
    pub object: DynamicObject,
}

/// One traffic provider.
pub trait Router: Send + Sync {
    /// The API resource of the router object, for a `kube::Api<DynamicObject>`.
    fn api_resource(&self) -> ApiResource;

    /// The router object of `deploy` splitting traffic by `weights`, with Serin's owner label
    /// and owner reference (see [`crate::release::objects`]).
    ///
    /// With A/B rules (`spec.matches`, the `serin.dev/match` annotation) the weights split
    /// only the requests that match, and every other request goes to the primary: an A/B
    /// analysis routes by [`Weights::ALL_CANARY`], "matching requests to the canary". A router
    /// that cannot match refuses A/B rules ([`RouterError::CannotMatch`]) rather than apply
    /// the weights to every request.
    fn build(
        &self,
        deploy: &dyn Workload,
        spec: &CanarySpec,
        weights: Weights,
    ) -> Result<DynamicObject, RouterError>;

    /// The weights a router object (as stored) routes by, normalised to percentages: those
    /// [`Router::build`] was given. With A/B rules, they split the requests that match.
    fn weights(&self, object: &DynamicObject, spec: &CanarySpec) -> Result<Weights, RouterError>;

    /// Where the requests that match no A/B rule go, when the router object routes them
    /// apart from the matching ones; `None` when every request follows [`Router::weights`]
    /// (no A/B rules, or a router that cannot match).
    fn unmatched_weights(
        &self,
        _object: &DynamicObject,
        _spec: &CanarySpec,
    ) -> Result<Option<Weights>, RouterError> {
        Ok(None)
    }

    /// The name of the router object; by default the apex Service's.
    fn object_name(&self, spec: &CanarySpec) -> String {
        spec.service.clone()
    }

    /// The user's object the router object is made from; `None` (the default) when the spec
    /// is enough and [`Router::build`] needs nothing else.
    fn source(&self, _spec: &CanarySpec) -> Option<Source> {
        None
    }

    /// [`Router::build`] from the [`Router::source`] object as stored (`None` when it is
    /// missing). Routers without a source ignore it.
    fn build_from(
        &self,
        deploy: &dyn Workload,
        spec: &CanarySpec,
        weights: Weights,
        _source: Option<&DynamicObject>,
    ) -> Result<DynamicObject, RouterError> {
        self.build(deploy, spec, weights)
    }

    /// [`Router::build_from`] for a whole [`Route`]. A router that can mirror and keep users
    /// on the canary by a cookie (Gateway API) overrides it; the others build the weights,
    /// and refuse a route with either ([`RouterError::CannotExpress`]), which admission
    /// never lets through.
    fn build_route(
        &self,
        deploy: &dyn Workload,
        spec: &CanarySpec,
        route: &Route,
        source: Option<&DynamicObject>,
    ) -> Result<DynamicObject, RouterError> {
        if route.has_extras() {
            return Err(RouterError::CannotMirrorOrStick {
                name: self.object_name(spec),
            });
        }
        self.build_from(deploy, spec, route.weights, source)
    }

    /// The [`Route`] a router object (as stored) routes by: [`Router::weights`], and nothing
    /// more unless the router can express more.
    fn route(&self, object: &DynamicObject, spec: &CanarySpec) -> Result<Route, RouterError> {
        self.weights(object, spec).map(Route::from)
    }

    /// The objects the router object refers to, which do not change with the weights (Gloo's
    /// Upstreams), with the same owner label and reference: the controller applies them before
    /// the router object, and removes them with it on opt-out. None by default.
    fn companions(
        &self,
        _deploy: &dyn Workload,
        _spec: &CanarySpec,
    ) -> Result<Vec<Companion>, RouterError> {
        Ok(Vec::new())
    }

    /// The resources of [`Router::companions`], whose objects labelled with a Deployment's
    /// owner label opt-out deletes (those of an earlier configuration too).
    fn companion_resources(&self) -> Vec<ApiResource> {
        Vec::new()
    }
}

/// What the operator chose about routers (flags of `serin run` and `serin controller`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterSettings {
    /// Prefix of the ingress-nginx annotations on canary Ingresses.
    pub nginx_annotation_prefix: String,
}

impl Default for RouterSettings {
    fn default() -> Self {
        Self {
            nginx_annotation_prefix: nginx::DEFAULT_ANNOTATION_PREFIX.into(),
        }
    }
}

/// The router of a provider with the default [`RouterSettings`]. Every provider has one.
pub fn router_for(provider: Provider) -> Box<dyn Router> {
    configured_router(provider, &RouterSettings::default())
}

/// The router of a provider as the operator configured it.
pub fn configured_router(provider: Provider, settings: &RouterSettings) -> Box<dyn Router> {
    match provider {
        Provider::Linkerd => Box::new(smi::TrafficSplit::V1Alpha1),
        Provider::SmiV1alpha2 => Box::new(smi::TrafficSplit::V1Alpha2),
        Provider::GatewayApi => Box::new(gatewayapi::HttpRoute),
        Provider::Nginx => Box::new(nginx::CanaryIngress::new(&settings.nginx_annotation_prefix)),
        Provider::Gloo => Box::new(gloo::RouteTable),
    }
}

/// A router object named `name` in the Deployment's namespace with `data` (its `spec`), the
/// `serin.dev/owner` label and the Deployment as controlling owner, like every object Serin
/// makes for a Deployment.
fn owned_object(
    deploy: &dyn Workload,
    name: &str,
    resource: &ApiResource,
    data: Value,
) -> DynamicObject {
    let mut object = DynamicObject::new(name, resource).data(data);
    let meta = &mut object.metadata;
    meta.namespace = deploy.meta().namespace.clone();
    meta.labels = deploy
        .meta()
        .name
        .clone()
        .map(|owner| [(OWNER_LABEL.to_owned(), owner)].into());
    meta.owner_references = owner_references(deploy);
    object
}

/// The array at `pointer` in a router object as stored (empty when it has none).
fn array_at<'a>(object: &'a DynamicObject, pointer: &str) -> &'a [Value] {
    object
        .data
        .pointer(pointer)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// Whether a rule's list of matches (under `key`) admits only requests with some header: an
/// A/B rule. An empty list matches every request.
fn matches_only_headers(rule: &Value, key: &str) -> bool {
    let matches = rule.get(key).and_then(Value::as_array);
    matches.is_some_and(|matches| {
        !matches.is_empty()
            && matches.iter().all(|m| {
                m.get("headers")
                    .and_then(Value::as_array)
                    .is_some_and(|h| !h.is_empty())
            })
    })
}

/// One of the two versions a router object splits requests between.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Primary,
    Canary,
}

impl Side {
    /// The Service that selects the version's pods.
    pub fn service(self, apex: &str) -> String {
        match self {
            Side::Primary => format!("{apex}{PRIMARY_SUFFIX}"),
            Side::Canary => format!("{apex}{CANARY_SUFFIX}"),
        }
    }
}

/// The weights of router object `name` (of `kind`) read from its primary and canary backends:
/// `backend` finds a side's (its name and its weight as stored, `None` when not written) and
/// `weight` reads that weight, in any unit; a missing backend or an unreadable weight is an
/// error naming the object. The one reader behind each provider's [`Router::weights`].
fn backend_weights<'a>(
    kind: &'static str,
    name: &str,
    apex: &str,
    backend: impl Fn(Side) -> Option<(&'a str, Option<&'a Value>)>,
    weight: impl Fn(Option<&Value>) -> Option<u128>,
) -> Result<Weights, RouterError> {
    let weight_of = |side: Side| -> Result<u128, RouterError> {
        let Some((backend, stored)) = backend(side) else {
            return Err(RouterError::MissingBackend {
                kind,
                name: name.to_owned(),
                service: side.service(apex),
            });
        };
        weight(stored).ok_or_else(|| RouterError::BadWeight {
            kind,
            name: name.to_owned(),
            service: backend.to_owned(),
            weight: stored.unwrap_or(&Value::Null).to_string(),
        })
    };
    let primary = weight_of(Side::Primary)?;
    let canary = weight_of(Side::Canary)?;
    percentages(primary, canary, kind, name)
}

/// The backend among `backends` whose `key` names `service`: that name and its weight as
/// stored (SMI's `service`, the Gateway API's `name`).
fn backend_named<'a>(
    backends: &'a [Value],
    key: &str,
    service: &str,
) -> Option<(&'a str, Option<&'a Value>)> {
    let found = backends
        .iter()
        .find(|b| b.get(key).and_then(Value::as_str) == Some(service))?;
    Some((found.get(key)?.as_str()?, found.get("weight")))
}

/// Weights of the same unit (any scale) as percentages, rounded to the nearest percent.
fn percentages(
    primary: u128,
    canary: u128,
    kind: &'static str,
    name: &str,
) -> Result<Weights, RouterError> {
    let total = primary.saturating_add(canary);
    if total == 0 {
        return Err(RouterError::NoWeight {
            kind,
            name: name.to_owned(),
        });
    }
    // The quotient is at most 100, so it fits; the product cannot overflow for weights the
    // parsers accept (at most 31 digits).
    let percent = (canary.saturating_mul(100) + total / 2) / total;
    Ok(Weights::to_canary(u32::try_from(percent).unwrap_or(100)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_provider_has_a_router() {
        let settings = RouterSettings::default();
        let api_version = |p| Some(configured_router(p, &settings).api_resource().api_version);
        assert_eq!(
            api_version(Provider::Linkerd).as_deref(),
            Some("split.smi-spec.io/v1alpha1")
        );
        assert_eq!(
            api_version(Provider::SmiV1alpha2).as_deref(),
            Some("split.smi-spec.io/v1alpha2")
        );
        assert_eq!(
            api_version(Provider::GatewayApi).as_deref(),
            Some("gateway.networking.k8s.io/v1")
        );
        assert_eq!(
            api_version(Provider::Nginx).as_deref(),
            Some("networking.k8s.io/v1")
        );
        assert_eq!(
            api_version(Provider::Gloo).as_deref(),
            Some("gateway.solo.io/v1")
        );
        // Only Gloo's router has companions (its Upstreams).
        for provider in Provider::ALL {
            let companions = configured_router(provider, &settings).companion_resources();
            let kinds: Vec<String> = companions.into_iter().map(|r| r.kind).collect();
            match provider {
                Provider::Gloo => assert_eq!(kinds, ["Upstream"]),
                _ => assert!(kinds.is_empty(), "{provider}: {kinds:?}"),
            }
        }
    }

    #[test]
    fn percentages_round_to_the_nearest_percent_and_refuse_all_zero() {
        let p = |primary, canary| percentages(primary, canary, "X", "x");
        assert_eq!(p(90, 10), Ok(Weights::to_canary(10)));
        assert_eq!(p(2, 1), Ok(Weights::to_canary(33)));
        assert_eq!(p(1, 2), Ok(Weights::to_canary(67)));
        assert_eq!(p(0, 5), Ok(Weights::ALL_CANARY));
        assert!(matches!(p(0, 0), Err(RouterError::NoWeight { .. })));
    }
}

/// What the router tests share: the Deployment `prod/web` that owns the objects they build.
#[cfg(test)]
pub(crate) mod testing {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use crate::spec::MatchRule;

    /// One A/B rule of each kind: an exact header, a header regex, a cookie.
    pub(crate) fn ab_rules() -> Vec<MatchRule> {
        vec![
            MatchRule::HeaderExact {
                name: "x-canary".into(),
                value: "insider".into(),
            },
            MatchRule::HeaderRegex {
                name: "user-agent".into(),
                regex: ".*Firefox.*".into(),
            },
            MatchRule::Cookie {
                name: "canary".into(),
            },
        ]
    }

    pub(crate) fn web() -> Deployment {
        Deployment {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("prod".into()),
                uid: Some("uid-1".into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }
}
