//! `Canary`: analysis settings nested under `spec.analysis` (v1alpha1) or at the top of
//! `spec` (v1beta1). Both shapes hold the same information; the status is the same type.

use serde::{Deserialize, Serialize};

use super::Versions;
use crate::crd::CanaryResourceSpec;
use crate::crd::v1alpha1::{self, Analysis};
use crate::spec::CanarySpec;

pub(crate) struct CanaryVersions;

/// Nothing: the versions of `Canary` are a rearrangement of the same fields.
#[derive(Serialize, Deserialize, Default, PartialEq, Debug)]
pub(crate) struct Carried {}

impl Versions for CanaryVersions {
    type Alpha = v1alpha1::CanaryResourceSpec;
    type Beta = CanaryResourceSpec;
    type Carried = Carried;

    fn up(alpha: Self::Alpha, _: Carried) -> Self::Beta {
        let a = alpha.analysis;
        CanaryResourceSpec {
            config: CanarySpec {
                provider: alpha.provider,
                port: alpha.port,
                service: alpha.service,
                ingress: alpha.ingress,
                gateway: alpha.gateway,
                hosts: alpha.hosts,
                interval: a.interval,
                threshold: a.threshold,
                step_weight: a.step_weight,
                step_weights: a.step_weights,
                max_weight: a.max_weight,
                iterations: a.iterations,
                matches: a.matches,
                success_rate: a.success_rate,
                latency: a.latency,
                mirror_checks: a.mirror_checks,
                mirror_percent: a.mirror_percent,
                affinity_cookie: a.affinity_cookie,
                affinity_max_age: a.affinity_max_age,
                metrics_provider: a.metrics_provider,
                metrics_window: a.metrics_window,
                analysis: a.template_ref,
                skip_analysis: a.skip,
                sequential_checks: a.sequential_checks,
                compare: a.compare,
                compare_margin: a.compare_margin,
                confidence: a.confidence,
            },
        }
    }

    fn down(beta: Self::Beta) -> (Self::Alpha, Carried) {
        let c = beta.config;
        let alpha = v1alpha1::CanaryResourceSpec {
            provider: c.provider,
            port: c.port,
            service: c.service,
            ingress: c.ingress,
            gateway: c.gateway,
            hosts: c.hosts,
            analysis: Analysis {
                interval: c.interval,
                threshold: c.threshold,
                step_weight: c.step_weight,
                step_weights: c.step_weights,
                max_weight: c.max_weight,
                iterations: c.iterations,
                matches: c.matches,
                success_rate: c.success_rate,
                latency: c.latency,
                mirror_checks: c.mirror_checks,
                mirror_percent: c.mirror_percent,
                affinity_cookie: c.affinity_cookie,
                affinity_max_age: c.affinity_max_age,
                metrics_provider: c.metrics_provider,
                metrics_window: c.metrics_window,
                template_ref: c.analysis,
                skip: c.skip_analysis,
                sequential_checks: c.sequential_checks,
                compare: c.compare,
                compare_margin: c.compare_margin,
                confidence: c.confidence,
            },
        };
        (alpha, Carried {})
    }
}
