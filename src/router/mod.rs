//! Routers: the object that splits traffic between the primary and the canary, one file per
//! provider behind the small [`Router`] trait (as Flagger's `pkg/router/`). Adding a provider
//! is one file and one line in [`router_for`].
//!
//! Builders are pure: they return the desired object as a [`DynamicObject`] for server-side
//! apply, and read the weights back from one the API server returned. A router may also need
//! objects that do not change with the weights ([`Router::companions`]: Gloo's Upstreams).

pub mod gatewayapi;
pub mod gloo;
pub mod nginx;
pub mod smi;

use k8s_openapi::api::apps::v1::Deployment;
use kube::core::{ApiResource, DynamicObject};
use serde_json::Value;

use crate::release::{OWNER_LABEL, owner_references};
use crate::spec::{CanarySpec, Provider};

/// How traffic is split: percentages that always sum to 100 (the constructors guarantee it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Weights {
    primary: u32,
    canary: u32,
}

impl Weights {
    /// Everything to the primary: the idle state, and after a promotion or a rollback.
    pub const ALL_PRIMARY: Weights = Weights {
        primary: 100,
        canary: 0,
    };

    /// Everything to the canary (Blue/Green just before promotion).
    pub const ALL_CANARY: Weights = Weights {
        primary: 0,
        canary: 100,
    };

    /// `canary` percent to the canary (capped at 100), the rest to the primary.
    pub fn to_canary(canary: u32) -> Self {
        let canary = canary.min(100);
        Self {
            primary: 100 - canary,
            canary,
        }
    }

    pub fn primary(self) -> u32 {
        self.primary
    }

    pub fn canary(self) -> u32 {
        self.canary
    }
}

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
        deploy: &Deployment,
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
        deploy: &Deployment,
        spec: &CanarySpec,
        weights: Weights,
        _source: Option<&DynamicObject>,
    ) -> Result<DynamicObject, RouterError> {
        self.build(deploy, spec, weights)
    }

    /// The objects the router object refers to, which do not change with the weights (Gloo's
    /// Upstreams), with the same owner label and reference: the controller applies them before
    /// the router object, and removes them with it on opt-out. None by default.
    fn companions(
        &self,
        _deploy: &Deployment,
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

/// The router of a provider with the default [`RouterSettings`], or `None` for a provider not
/// built yet (every provider has one today): callers report those as unsupported rather than
/// guessing.
pub fn router_for(provider: Provider) -> Option<Box<dyn Router>> {
    configured_router(provider, &RouterSettings::default())
}

/// The router of a provider as the operator configured it (see [`router_for`]).
pub fn configured_router(provider: Provider, settings: &RouterSettings) -> Option<Box<dyn Router>> {
    match provider {
        Provider::Linkerd => Some(Box::new(smi::TrafficSplit::V1Alpha1)),
        Provider::SmiV1alpha2 => Some(Box::new(smi::TrafficSplit::V1Alpha2)),
        Provider::GatewayApi => Some(Box::new(gatewayapi::HttpRoute)),
        Provider::Nginx => Some(Box::new(nginx::CanaryIngress::new(
            &settings.nginx_annotation_prefix,
        ))),
        Provider::Gloo => Some(Box::new(gloo::RouteTable)),
    }
}

/// The providers this version of Serin has a router for, in [`Provider::ALL`]'s order.
pub fn supported_providers() -> Vec<Provider> {
    Provider::ALL
        .into_iter()
        .filter(|p| router_for(*p).is_some())
        .collect()
}

/// A router object named `name` in the Deployment's namespace with `data` (its `spec`), the
/// `serin.dev/owner` label and the Deployment as controlling owner, like every object Serin
/// makes for a Deployment.
fn owned_object(
    deploy: &Deployment,
    name: &str,
    resource: &ApiResource,
    data: Value,
) -> DynamicObject {
    let mut object = DynamicObject::new(name, resource).data(data);
    let meta = &mut object.metadata;
    meta.namespace = deploy.metadata.namespace.clone();
    meta.labels = deploy
        .metadata
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
    use proptest::prelude::*;

    #[test]
    fn every_provider_has_a_router() {
        let api_version = |p| router_for(p).map(|r| r.api_resource().api_version);
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
        assert_eq!(supported_providers(), Provider::ALL);
        // Only Gloo's router has companions (its Upstreams).
        for provider in Provider::ALL {
            let companions = router_for(provider).map(|r| r.companion_resources());
            let kinds: Vec<String> = companions.into_iter().flatten().map(|r| r.kind).collect();
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

    proptest! {
        #[test]
        fn weights_always_sum_to_100(canary in any::<u32>()) {
            let w = Weights::to_canary(canary);
            prop_assert_eq!(w.primary() + w.canary(), 100);
            prop_assert!(w.canary() <= 100);
        }
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
