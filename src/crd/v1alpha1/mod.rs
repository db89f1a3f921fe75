//! The `v1alpha1` shapes of Serin's resources. They are still served; the API server stores
//! `v1beta1` and the conversion webhook ([`crate::conversion`]) translates both ways. What
//! changed in `v1beta1`:
//! - `Canary`: the analysis settings (`interval`, `threshold`, weights, thresholds, `match`,
//!   template) moved out of `spec.analysis` to the top of `spec`, where the template reference
//!   took the name `analysis`;
//! - `AnalysisTemplate`: a metric's flat `min`/`max` became `thresholdRange {min, max}`, and
//!   `noData` is new;
//! - `CanaryPolicy`: `match {namespaceSelector, selector}` became two top-level fields,
//!   `auditOnly: true` became `enforcement: warn`, and `allowedWebhookHosts` is new.
//!
//! What `v1alpha1` cannot hold travels in the annotation [`BETA_FIELDS`], so a round trip
//! through it loses nothing.

pub mod analysis_template;
pub mod canary;
pub mod canary_policy;

pub use analysis_template::{AnalysisTemplate, AnalysisTemplateSpec, Metric};
pub use canary::{Analysis, Canary, CanaryResourceSpec};
pub use canary_policy::{CanaryPolicy, CanaryPolicyResourceSpec, PolicyMatch};

/// On a `v1alpha1` object: the `v1beta1` fields it cannot hold, as JSON. Written and removed
/// only by the conversion webhook.
pub const BETA_FIELDS: &str = "serin.dev/v1beta1-fields";
