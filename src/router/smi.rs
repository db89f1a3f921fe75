//! SMI `TrafficSplit`, the router of Linkerd (`split.smi-spec.io/v1alpha1`, the default
//! provider `linkerd`) and of `smi:v1alpha2`:
//!
//! ```yaml
//! spec:
//!   service: web              # the apex Service clients call
//!   backends:
//!   - {service: web-primary, weight: 90}
//!   - {service: web-canary, weight: 10}
//! ```
//!
//! v1alpha1 declares weights as quantities: Linkerd accepts integers and strings such as
//! `"90"` or `"900m"`, and only their ratio matters. Serin writes integer percentages in both
//! versions, and reads back any of these spellings, normalised to percentages.

use crate::spec::Workload;
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::{Value, json};

use super::{Router, RouterError, Side, Weights, backend_named, backend_weights, owned_object};
use crate::release::{CANARY_SUFFIX, PRIMARY_SUFFIX};
use crate::spec::CanarySpec;

const GROUP: &str = "split.smi-spec.io";
const KIND: &str = "TrafficSplit";

/// A `TrafficSplit` of one SMI version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrafficSplit {
    /// `split.smi-spec.io/v1alpha1`, what Linkerd serves.
    V1Alpha1,
    /// `split.smi-spec.io/v1alpha2`.
    V1Alpha2,
}

impl TrafficSplit {
    fn version(self) -> &'static str {
        match self {
            TrafficSplit::V1Alpha1 => "v1alpha1",
            TrafficSplit::V1Alpha2 => "v1alpha2",
        }
    }
}

impl Router for TrafficSplit {
    fn api_resource(&self) -> ApiResource {
        ApiResource::from_gvk(&GroupVersionKind::gvk(GROUP, self.version(), KIND))
    }

    fn build(
        &self,
        deploy: &dyn Workload,
        spec: &CanarySpec,
        weights: Weights,
    ) -> Result<DynamicObject, RouterError> {
        let svc = &spec.service;
        if !spec.matches.is_empty() {
            // A TrafficSplit splits every request; admission refuses serin.dev/match with it.
            return Err(RouterError::CannotMatch {
                kind: KIND,
                name: svc.clone(),
            });
        }
        let data = json!({
            "spec": {
                "service": svc,
                "backends": [
                    {"service": format!("{svc}{PRIMARY_SUFFIX}"), "weight": weights.primary()},
                    {"service": format!("{svc}{CANARY_SUFFIX}"), "weight": weights.canary()},
                ],
            }
        });
        Ok(owned_object(deploy, svc, &self.api_resource(), data))
    }

    fn weights(&self, object: &DynamicObject, spec: &CanarySpec) -> Result<Weights, RouterError> {
        let name = object.metadata.name.clone().unwrap_or_default();
        let backends = object
            .data
            .pointer("/spec/backends")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let backend = |side: Side| backend_named(backends, "service", &side.service(&spec.service));
        let weight = |stored: Option<&Value>| parse_milli(stored.unwrap_or(&Value::Null));
        backend_weights(KIND, &name, &spec.service, backend, weight)
    }
}

/// A weight in thousandths: a non-negative JSON integer, or a quantity string of the forms
/// `90`, `0.5` or `900m`. Anything else (negative, exponent, other suffixes) is `None`.
fn parse_milli(weight: &Value) -> Option<u128> {
    if let Some(n) = weight.as_u64() {
        return Some(u128::from(n) * 1000);
    }
    let text = weight.as_str()?.trim();
    let (number, scale) = match text.strip_suffix('m') {
        Some(milli) => (milli, 1),
        None => (text, 1000),
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(fraction) || whole.len() > 30 {
        return None;
    }
    let whole: u128 = whole.parse().ok()?;
    // Thousandths of the fraction, truncated; quantities finer than the unit are rounded by
    // Kubernetes anyway.
    let fraction: u128 = format!("{fraction:0<3}").get(..3)?.parse().ok()?;
    match scale {
        1000 => Some(whole * 1000 + fraction),
        // `900.5m` would be finer than a thousandth: keep the whole thousandths.
        _ => Some(whole),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::router::testing::web;

    fn spec() -> CanarySpec {
        CanarySpec::defaults("web-svc".into(), Some(9898))
    }

    #[test]
    fn a_traffic_split_refuses_ab_rules_rather_than_send_every_request_by_their_weights() {
        let ab = CanarySpec {
            iterations: Some(3),
            matches: vec![crate::spec::MatchRule::Cookie {
                name: "canary".into(),
            }],
            ..spec()
        };
        for router in [TrafficSplit::V1Alpha1, TrafficSplit::V1Alpha2] {
            assert_eq!(
                router.build(&web(), &ab, Weights::ALL_CANARY).err(),
                Some(RouterError::CannotMatch {
                    kind: "TrafficSplit",
                    name: "web-svc".into()
                })
            );
        }
    }

    fn build(router: TrafficSplit, weights: Weights) -> DynamicObject {
        match router.build(&web(), &spec(), weights) {
            Ok(object) => object,
            Err(e) => panic!("{e}"),
        }
    }

    fn with_weights(primary: Value, canary: Value) -> DynamicObject {
        let mut object = build(TrafficSplit::V1Alpha1, Weights::ALL_PRIMARY);
        object.data = json!({"spec": {"service": "web-svc", "backends": [
            {"service": "web-svc-canary", "weight": canary},
            {"service": "web-svc-primary", "weight": primary},
        ]}});
        object
    }

    #[test]
    fn linkerd_traffic_split_routes_the_apex_service_to_primary_and_canary() {
        let object = build(TrafficSplit::V1Alpha1, Weights::to_canary(10));
        let value = serde_json::to_value(&object).unwrap_or_default();
        assert_eq!(
            value,
            json!({
                "apiVersion": "split.smi-spec.io/v1alpha1",
                "kind": "TrafficSplit",
                "metadata": {
                    "name": "web-svc",
                    "namespace": "prod",
                    "labels": {"serin.dev/owner": "web"},
                    "ownerReferences": [{
                        "apiVersion": "apps/v1", "kind": "Deployment", "name": "web",
                        "uid": "uid-1", "controller": true, "blockOwnerDeletion": true
                    }]
                },
                "spec": {
                    "service": "web-svc",
                    "backends": [
                        {"service": "web-svc-primary", "weight": 90},
                        {"service": "web-svc-canary", "weight": 10}
                    ]
                }
            })
        );
    }

    #[test]
    fn smi_v1alpha2_uses_its_api_version_and_integer_weights() {
        let object = build(TrafficSplit::V1Alpha2, Weights::to_canary(30));
        let types = object.types.clone().unwrap_or_default();
        assert_eq!(types.api_version, "split.smi-spec.io/v1alpha2");
        assert_eq!(
            object.data.pointer("/spec/backends/1/weight"),
            Some(&json!(30))
        );
        assert_eq!(
            TrafficSplit::V1Alpha2.api_resource().plural,
            "trafficsplits"
        );
    }

    #[test]
    fn weights_read_back_equal_the_weights_written() {
        for router in [TrafficSplit::V1Alpha1, TrafficSplit::V1Alpha2] {
            for canary in [0, 1, 10, 50, 99, 100] {
                let written = Weights::to_canary(canary);
                let read = router.weights(&build(router, written), &spec());
                assert_eq!(read, Ok(written));
            }
        }
    }

    #[test]
    fn quantity_weights_are_read_as_percentages() {
        let read =
            |p: Value, c: Value| TrafficSplit::V1Alpha1.weights(&with_weights(p, c), &spec());
        assert_eq!(read(json!("90"), json!("10")), Ok(Weights::to_canary(10)));
        assert_eq!(
            read(json!("900m"), json!("100m")),
            Ok(Weights::to_canary(10))
        );
        assert_eq!(
            read(json!("0.75"), json!("0.25")),
            Ok(Weights::to_canary(25))
        );
        assert_eq!(read(json!(3), json!(1)), Ok(Weights::to_canary(25)));
    }

    #[test]
    fn unreadable_weights_name_the_backend() {
        let read = TrafficSplit::V1Alpha1.weights(&with_weights(json!(90), json!("1e1")), &spec());
        assert_eq!(
            read,
            Err(RouterError::BadWeight {
                kind: "TrafficSplit",
                name: "web-svc".into(),
                service: "web-svc-canary".into(),
                weight: "\"1e1\"".into(),
            })
        );
        let read = TrafficSplit::V1Alpha1.weights(&with_weights(json!(-1), json!(1)), &spec());
        assert!(
            matches!(read, Err(RouterError::BadWeight { .. })),
            "{read:?}"
        );
    }

    #[test]
    fn all_zero_weights_and_missing_backends_are_errors() {
        let zero = TrafficSplit::V1Alpha1.weights(&with_weights(json!(0), json!("0m")), &spec());
        assert!(
            matches!(zero, Err(RouterError::NoWeight { .. })),
            "{zero:?}"
        );
        let mut object = with_weights(json!(100), json!(0));
        object.data = json!({"spec": {"backends": []}});
        let missing = TrafficSplit::V1Alpha1.weights(&object, &spec());
        assert!(
            matches!(missing, Err(RouterError::MissingBackend { .. })),
            "{missing:?}"
        );
    }
}
