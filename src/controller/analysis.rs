//! Measurements and webhooks for the release machine (temporary shell; wired to
//! `crate::metrics` and `crate::hooks` next).

use crate::crd::AnalysisTemplateSpec;
use crate::release::{HookKind, MetricCheck, Phase, builtin_checks};
use crate::spec::CanarySpec;

use super::Context;

pub struct Clients {}

impl Clients {
    pub fn new(_prometheus_url: &str) -> anyhow::Result<Self> {
        Ok(Self {})
    }
}

/// Flagger's webhook payload fields.
#[derive(Debug, Clone)]
pub struct Payload {
    pub name: String,
    pub namespace: String,
    pub phase: Phase,
    pub checksum: String,
}

pub struct Outcome {
    pub passed: bool,
    pub message: Option<String>,
}

pub async fn measure(
    _ctx: &Context,
    _namespace: &str,
    _target: &str,
    spec: &CanarySpec,
    _template: Option<&AnalysisTemplateSpec>,
    _payload: Payload,
) -> (Vec<MetricCheck>, Vec<String>) {
    (builtin_checks(spec, None, None), vec![])
}

pub async fn run_hooks(
    _ctx: &Context,
    _template: Option<&AnalysisTemplateSpec>,
    _kind: HookKind,
    _payload: Payload,
) -> Outcome {
    Outcome {
        passed: true,
        message: None,
    }
}

pub fn notify(
    _ctx: &Context,
    _template: Option<AnalysisTemplateSpec>,
    _kind: HookKind,
    _payload: Payload,
) {
}
