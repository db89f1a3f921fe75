//! `CanaryPolicy`: `match {…}` and `auditOnly` (v1alpha1), top-level selectors and
//! `enforcement` (v1beta1); `allowedWebhookHosts`, `allowedMetricsHosts` and `alerts` exist
//! only in v1beta1.

use serde::{Deserialize, Serialize};

use super::Versions;
use crate::crd::v1alpha1::{self, PolicyMatch};
use crate::crd::{Alert, CanaryPolicyResourceSpec, CanaryPolicySpec, Enforcement};

pub(crate) struct PolicyVersions;

#[derive(Serialize, Deserialize, Default, PartialEq, Debug)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Carried {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    allowed_webhook_hosts: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    allowed_metrics_hosts: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    alerts: Option<Vec<Alert>>,
}

impl Versions for PolicyVersions {
    type Alpha = v1alpha1::CanaryPolicyResourceSpec;
    type Beta = CanaryPolicyResourceSpec;
    type Carried = Carried;

    fn up(alpha: Self::Alpha, carried: Carried) -> Self::Beta {
        let enforcement = alpha.audit_only.map(|audit| match audit {
            true => Enforcement::Warn,
            false => Enforcement::Deny,
        });
        CanaryPolicyResourceSpec {
            policy: CanaryPolicySpec {
                namespace_selector: alpha.matches.namespace_selector,
                selector: alpha.matches.selector,
                require_canary: alpha.require_canary,
                defaults: alpha.defaults,
                limits: alpha.limits,
                allowed_webhook_hosts: carried.allowed_webhook_hosts,
                allowed_metrics_hosts: carried.allowed_metrics_hosts,
                enforcement,
                alerts: carried.alerts,
            },
        }
    }

    fn down(beta: Self::Beta) -> (Self::Alpha, Carried) {
        let policy = beta.policy;
        let alpha = v1alpha1::CanaryPolicyResourceSpec {
            matches: PolicyMatch {
                namespace_selector: policy.namespace_selector,
                selector: policy.selector,
            },
            require_canary: policy.require_canary,
            defaults: policy.defaults,
            limits: policy.limits,
            audit_only: policy.enforcement.map(|e| e == Enforcement::Warn),
        };
        let carried = Carried {
            allowed_webhook_hosts: policy.allowed_webhook_hosts,
            allowed_metrics_hosts: policy.allowed_metrics_hosts,
            alerts: policy.alerts,
        };
        (alpha, carried)
    }
}
