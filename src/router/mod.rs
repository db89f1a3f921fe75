//! Routers: the object that splits traffic between the primary and the canary, one file per
//! provider behind the small [`Router`] trait (as Flagger's `pkg/router/`). Adding a provider
//! is one file and one line in [`router_for`].
//!
//! Builders are pure: they return the desired object as a [`DynamicObject`] for server-side
//! apply, and read the weights back from one the API server returned.

pub mod smi;

use k8s_openapi::api::apps::v1::Deployment;
use kube::core::{ApiResource, DynamicObject};

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
}

/// One traffic provider.
pub trait Router: Send + Sync {
    /// The API resource of the router object, for a `kube::Api<DynamicObject>`.
    fn api_resource(&self) -> ApiResource;

    /// The router object of `deploy` splitting traffic by `weights`, with Serin's owner label
    /// and owner reference (see [`crate::release::objects`]).
    fn build(
        &self,
        deploy: &Deployment,
        spec: &CanarySpec,
        weights: Weights,
    ) -> Result<DynamicObject, RouterError>;

    /// The weights a router object (as stored) routes by, normalised to percentages.
    fn weights(&self, object: &DynamicObject, spec: &CanarySpec) -> Result<Weights, RouterError>;
}

/// The router of a provider, or `None` for providers not built yet (`gatewayapi`, `nginx`,
/// `gloo`): callers report those as unsupported rather than guessing.
pub fn router_for(provider: Provider) -> Option<Box<dyn Router>> {
    match provider {
        Provider::Linkerd => Some(Box::new(smi::TrafficSplit::V1Alpha1)),
        Provider::SmiV1alpha2 => Some(Box::new(smi::TrafficSplit::V1Alpha2)),
        Provider::GatewayApi | Provider::Nginx | Provider::Gloo => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn linkerd_and_smi_have_routers_and_the_others_not_yet() {
        let api_version = |p| router_for(p).map(|r| r.api_resource().api_version);
        assert_eq!(
            api_version(Provider::Linkerd).as_deref(),
            Some("split.smi-spec.io/v1alpha1")
        );
        assert_eq!(
            api_version(Provider::SmiV1alpha2).as_deref(),
            Some("split.smi-spec.io/v1alpha2")
        );
        for provider in [Provider::GatewayApi, Provider::Nginx, Provider::Gloo] {
            assert!(router_for(provider).is_none(), "{provider}");
        }
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
