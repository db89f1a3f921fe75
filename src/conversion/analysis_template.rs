//! `AnalysisTemplate`: flat `min`/`max` (v1alpha1) and `thresholdRange` (v1beta1); `noData`
//! and `secretRef` exist only in v1beta1 and travel by metric name. Flagger's metric fields
//! (`interval`, `templateRef`, `templateVariables`, `threshold`) are in both.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Versions;
use crate::crd::v1alpha1;
use crate::crd::{AnalysisTemplateSpec, MetricTemplate, NoDataPolicy, SecretRef, ThresholdRange};

pub(crate) struct TemplateVersions;

/// `noData` of the metrics that do not use the default (`fail`), and the `secretRef` of those
/// that have one, by metric name.
#[derive(Serialize, Deserialize, Default, PartialEq, Debug)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Carried {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    no_data: BTreeMap<String, NoDataPolicy>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    secret_ref: BTreeMap<String, SecretRef>,
}

impl Versions for TemplateVersions {
    type Alpha = v1alpha1::AnalysisTemplateSpec;
    type Beta = AnalysisTemplateSpec;
    type Carried = Carried;

    fn up(alpha: Self::Alpha, carried: Carried) -> Self::Beta {
        let metrics = alpha
            .metrics
            .into_iter()
            .map(|m| MetricTemplate {
                no_data: carried.no_data.get(&m.name).copied().unwrap_or_default(),
                secret_ref: carried.secret_ref.get(&m.name).cloned(),
                name: m.name,
                query: m.query,
                threshold_range: ThresholdRange {
                    min: m.min,
                    max: m.max,
                },
                address: m.address,
                interval: m.interval,
                template_ref: m.template_ref,
                template_variables: m.template_variables,
                threshold: m.threshold,
            })
            .collect();
        AnalysisTemplateSpec {
            metrics,
            webhooks: alpha.webhooks,
        }
    }

    fn down(beta: Self::Beta) -> (Self::Alpha, Carried) {
        let mut carried = Carried::default();
        let metrics = beta
            .metrics
            .into_iter()
            .map(|m| {
                if m.no_data != NoDataPolicy::default() {
                    carried.no_data.insert(m.name.clone(), m.no_data);
                }
                if let Some(secret_ref) = m.secret_ref {
                    carried.secret_ref.insert(m.name.clone(), secret_ref);
                }
                v1alpha1::Metric {
                    name: m.name,
                    query: m.query,
                    min: m.threshold_range.min,
                    max: m.threshold_range.max,
                    address: m.address,
                    interval: m.interval,
                    template_ref: m.template_ref,
                    template_variables: m.template_variables,
                    threshold: m.threshold,
                }
            })
            .collect();
        let alpha = v1alpha1::AnalysisTemplateSpec {
            metrics,
            webhooks: beta.webhooks,
        };
        (alpha, carried)
    }
}
