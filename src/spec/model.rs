//! The canary model: [`CanarySpec`], the effective configuration of one opted-in Deployment,
//! and the value types it is made of. These same types are the `spec` of the `Canary` CRD and
//! the source of the annotation JSON Schema, so ranges and patterns are declared here, once.

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::duration::Duration;

pub(super) const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
pub(super) const DEFAULT_THRESHOLD: u32 = 5;
pub(super) const DEFAULT_STEP_WEIGHT: u32 = 10;
pub(super) const DEFAULT_MAX_WEIGHT: u32 = 50;
pub(super) const DEFAULT_SUCCESS_RATE: f64 = 99.0;
pub(super) const DEFAULT_LATENCY: Duration = Duration::from_millis(500);
pub(super) const DEFAULT_METRICS_WINDOW: Duration = Duration::from_secs(60);
/// The affinity cookie's `Max-Age` when `affinity-max-age` is not written: a day, as Flagger.
pub const DEFAULT_AFFINITY_MAX_AGE: Duration = Duration::from_secs(86_400);
/// How far (percentage points of failed requests) a canary may fail more than the primary
/// under `serin.dev/compare: primary`: one point, the same size as the default limit
/// (`success-rate` 99 allows 1 % of failures), so the comparison is no stricter than the
/// absolute limit users already chose, and a primary at 0.2 % still lets a canary reach 1.2 %.
pub(super) const DEFAULT_COMPARE_MARGIN: f64 = 1.0;
/// The confidence (percent) of the sequential checks' rollback when `serin.dev/confidence`
/// does not say: a canary at the limit is rolled back with at most 1 % probability.
pub(super) const DEFAULT_CONFIDENCE: f64 = 99.0;

/// Service names are DNS-1035 labels.
const DNS_1035_LABEL: &str = "^[a-z]([-a-z0-9]*[a-z0-9])?$";
/// Namespace names are DNS-1123 labels.
const DNS_1123_LABEL: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
/// Most object names (Ingress, Gateway, AnalysisTemplate) are DNS-1123 subdomains.
const DNS_1123_SUBDOMAIN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// A Gateway API `Hostname`: a DNS-1123 subdomain, optionally behind one wildcard label `*.`
/// (Gateway API's own pattern; IP addresses, which it also forbids, are refused in
/// `validate`).
const HOSTNAME: &str = r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// Gateway API's `maxItems` for an HTTPRoute's `hostnames`.
pub(super) const MAX_HOSTS: usize = 16;
/// HTTP header and cookie names are RFC 9110 tokens.
const HTTP_TOKEN: &str = "^[-!#$%&'*+.^_`|~0-9A-Za-z]+$";
/// The longest session affinity cookie name: a bound on what every response of the canary
/// carries, far above any name in use.
pub(super) const MAX_COOKIE_NAME: usize = 64;

/// The effective canary configuration: what the user wrote, with every default filled.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CanarySpec {
    /// How traffic is split between primary and canary.
    pub provider: Provider,
    /// The service port; a containerPort of the pod template. Absent when the template has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,
    /// Name of the apex Service (`<service>-primary` and `<service>-canary` are derived from it).
    #[schemars(pattern(DNS_1035_LABEL), length(min = 1, max = 63))]
    pub service: String,
    /// The Ingress to drive (`nginx`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(DNS_1123_SUBDOMAIN), length(min = 1, max = 253))]
    pub ingress: Option<String>,
    /// The Gateway to attach the HTTPRoute to (`gatewayapi`); the apex Service when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<GatewayRef>,
    /// The hostnames the HTTPRoute answers for (`gatewayapi`); every hostname of its parent
    /// when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(pattern(HOSTNAME), length(min = 1, max = 253)), length(max = MAX_HOSTS))]
    pub hosts: Vec<String>,
    /// Time between checks.
    pub interval: Duration,
    /// Failed checks before rollback.
    #[schemars(range(min = 1, max = 1000))]
    pub threshold: u32,
    /// Weight added to the canary at each step (exclusive with `stepWeights`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub step_weight: Option<u32>,
    /// Explicit canary weights, strictly increasing (exclusive with `stepWeight`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(inner(range(min = 1, max = 100)), length(min = 1))]
    pub step_weights: Option<Vec<u32>>,
    /// Canary weight at which the canary is promoted.
    #[schemars(range(min = 1, max = 100))]
    pub max_weight: u32,
    /// Checks to run for Blue/Green and A/B testing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub iterations: Option<u32>,
    /// A/B routing: requests matching any rule go to the canary.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<MatchRule>,
    /// Minimum request success rate, percent.
    #[schemars(range(min = 0, max = 100))]
    pub success_rate: f64,
    /// Maximum p99 latency.
    pub latency: Duration,
    /// Checks the canary is judged on mirrored requests before the first weight step
    /// (`gatewayapi`): the route sends every request to the primary and a copy to the canary,
    /// whose answers are discarded. No mirroring when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub mirror_checks: Option<u32>,
    /// Percent of the requests copied to the canary while mirroring; all of them when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub mirror_percent: Option<u32>,
    /// Session affinity (`gatewayapi`): the cookie set on the canary's responses, which keeps
    /// that user on the canary for the rest of the analysis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(HTTP_TOKEN), length(min = 1, max = MAX_COOKIE_NAME))]
    pub affinity_cookie: Option<String>,
    /// How long the browser keeps the affinity cookie; [`DEFAULT_AFFINITY_MAX_AGE`] when
    /// absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity_max_age: Option<Duration>,
    /// Whose series the builtin checks read, as written; the provider's own data plane when
    /// absent ([`CanarySpec::effective_metrics_provider`]). The mutating webhook writes the
    /// effective value back, so an opted-in Deployment's annotations always name it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_provider: Option<MetricsProvider>,
    /// PromQL rate window.
    pub metrics_window: Duration,
    /// Name of an `AnalysisTemplate` in the namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(DNS_1123_SUBDOMAIN), length(min = 1, max = 253))]
    pub analysis: Option<String>,
    /// Promote without running checks.
    #[serde(default)]
    pub skip_analysis: bool,
    /// Judge the builtin success-rate check on request counts with a sequential test every
    /// few seconds (`docs/analysis.md`); `false` keeps Flagger's semantics: one check per
    /// `interval`, `threshold` failures to roll back.
    #[serde(default = "sequential_by_default")]
    pub sequential_checks: bool,
    /// What the canary's failures are judged against besides the absolute limit.
    #[serde(default)]
    pub compare: Compare,
    /// With `compare: primary`: how many percentage points of failed requests the canary may
    /// have above the primary's.
    #[serde(default = "default_compare_margin")]
    #[schemars(range(min = 0, max = 100))]
    pub compare_margin: f64,
    /// The confidence (percent) the sequential checks need to roll back: a canary exactly at
    /// the limit is rolled back with at most `100 − confidence` percent probability. Higher
    /// is fewer wrong rollbacks and more failed (or slow) requests before a bad canary's.
    #[serde(default = "default_confidence")]
    #[schemars(range(min = 90, max = 99.9))]
    pub confidence: f64,
}

/// `sequentialChecks` when a stored Canary does not say (one written before the field).
pub fn sequential_by_default() -> bool {
    true
}

/// `compareMargin` when a stored Canary does not say.
pub fn default_compare_margin() -> f64 {
    DEFAULT_COMPARE_MARGIN
}

/// `confidence` when a stored Canary does not say.
pub fn default_confidence() -> f64 {
    DEFAULT_CONFIDENCE
}

/// What the canary is compared with (`serin.dev/compare`).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Compare {
    /// The absolute limits only.
    #[default]
    #[serde(rename = "none")]
    None,
    /// Also the primary, measured over the same window: failing together holds the release,
    /// a canary worse by more than `compareMargin` is rolled back.
    #[serde(rename = "primary")]
    Primary,
}

/// The value is not one of [`Compare::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} {expected}", expected = Compare::expectation())]
pub struct UnknownCompare(pub String);

impl Compare {
    pub const ALL: [Compare; 2] = [Compare::None, Compare::Primary];

    pub fn as_str(self) -> &'static str {
        match self {
            Compare::None => "none",
            Compare::Primary => "primary",
        }
    }

    /// Completes `"<value>" …` in messages: the spellings users may write.
    pub(super) fn expectation() -> String {
        format!(
            "is not supported; allowed: {}",
            Self::ALL.map(Self::as_str).join(", ")
        )
    }
}

impl FromStr for Compare {
    type Err = UnknownCompare;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|c| c.as_str() == text)
            .ok_or_else(|| UnknownCompare(text.to_owned()))
    }
}

impl fmt::Display for Compare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a release is rolled out; follows from the configuration as in Flagger.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// Traffic shifts to the canary step by step.
    Canary,
    /// All traffic switches after `iterations` checks on the idle canary.
    BlueGreen,
    /// Requests matching `matches` go to the canary for `iterations` checks.
    ABTesting,
}

impl CanarySpec {
    /// The configuration a Deployment gets when it only says `serin.dev/enabled: "true"`.
    pub fn defaults(service: String, port: Option<i32>) -> Self {
        Self {
            provider: Provider::default(),
            port,
            service,
            ingress: None,
            gateway: None,
            hosts: Vec::new(),
            interval: DEFAULT_INTERVAL,
            threshold: DEFAULT_THRESHOLD,
            step_weight: Some(DEFAULT_STEP_WEIGHT),
            step_weights: None,
            max_weight: DEFAULT_MAX_WEIGHT,
            iterations: None,
            matches: Vec::new(),
            success_rate: DEFAULT_SUCCESS_RATE,
            latency: DEFAULT_LATENCY,
            mirror_checks: None,
            mirror_percent: None,
            affinity_cookie: None,
            affinity_max_age: None,
            metrics_provider: None,
            metrics_window: DEFAULT_METRICS_WINDOW,
            analysis: None,
            skip_analysis: false,
            sequential_checks: true,
            compare: Compare::None,
            compare_margin: DEFAULT_COMPARE_MARGIN,
            confidence: DEFAULT_CONFIDENCE,
        }
    }

    /// The data plane whose series the builtin checks read: `metrics_provider`, or the
    /// provider's own when it is absent.
    pub fn effective_metrics_provider(&self) -> MetricsProvider {
        self.metrics_provider
            .unwrap_or_else(|| self.provider.default_metrics_provider())
    }

    /// `match` + `iterations` is A/B, `iterations` alone is Blue/Green, otherwise Canary.
    pub fn strategy(&self) -> Strategy {
        match (self.iterations, self.matches.is_empty()) {
            (Some(_), false) => Strategy::ABTesting,
            (Some(_), true) => Strategy::BlueGreen,
            (None, _) => Strategy::Canary,
        }
    }

    /// The canary weights the controller walks through, ending at `max_weight` (where the
    /// canary is promoted): `step 10, max 50` gives `[10, 20, 30, 40, 50]`, a last step that
    /// would overshoot is cut to `max_weight` as Flagger does (`step 15` gives `[15, 30, 45,
    /// 50]`), and an explicit list is walked as written, then `max_weight` if the list ends
    /// below it. Never panics or loops, even on a spec that failed validation.
    pub fn weights(&self) -> Vec<u32> {
        let max = self.max_weight;
        let mut weights: Vec<u32> = match &self.step_weights {
            Some(list) => list.iter().copied().filter(|w| *w < max).collect(),
            None => {
                let step = self.step_weight.unwrap_or(DEFAULT_STEP_WEIGHT).max(1);
                (1..).map(|i| i * step).take_while(|w| *w < max).collect()
            }
        };
        weights.push(max);
        weights
    }
}

/// The traffic provider. The annotation spellings are the serialized names.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Provider {
    // Linkerd through an SMI `TrafficSplit` `split.smi-spec.io/v1alpha1`.
    #[default]
    #[serde(rename = "linkerd")]
    Linkerd,
    // An SMI `TrafficSplit` `split.smi-spec.io/v1alpha2`.
    #[serde(rename = "smi:v1alpha2")]
    SmiV1alpha2,
    // An `HTTPRoute` `gateway.networking.k8s.io/v1` (Linkerd >= 2.14 or any Gateway API mesh).
    #[serde(rename = "gatewayapi")]
    GatewayApi,
    // A canary Ingress for ingress-nginx.
    #[serde(rename = "nginx")]
    Nginx,
    // A Gloo Edge `RouteTable`.
    #[serde(rename = "gloo")]
    Gloo,
}

/// The value is not one of [`Provider::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} {expected}", expected = Provider::expectation())]
pub struct UnknownProvider(pub String);

impl Provider {
    pub const ALL: [Provider; 5] = [
        Provider::Linkerd,
        Provider::SmiV1alpha2,
        Provider::GatewayApi,
        Provider::Nginx,
        Provider::Gloo,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Linkerd => "linkerd",
            Provider::SmiV1alpha2 => "smi:v1alpha2",
            Provider::GatewayApi => "gatewayapi",
            Provider::Nginx => "nginx",
            Provider::Gloo => "gloo",
        }
    }

    /// Whether the router can copy requests to the canary (`serin.dev/mirror-checks`) and
    /// keep a user on it by a cookie it sets (`serin.dev/affinity-cookie`): Gateway API's
    /// `RequestMirror` and `ResponseHeaderModifier` filters.
    pub fn can_mirror_and_stick(self) -> bool {
        self == Provider::GatewayApi
    }

    /// Whether the router can send requests to the canary by header or cookie (A/B testing).
    pub fn can_match(self) -> bool {
        matches!(
            self,
            Provider::GatewayApi | Provider::Nginx | Provider::Gloo
        )
    }

    /// The data plane the builtin checks read when `serin.dev/metrics-provider` is not
    /// written: the one this provider drives (Linkerd's proxies for the SMI and Gateway API
    /// providers, as Flagger does for Linkerd).
    pub fn default_metrics_provider(self) -> MetricsProvider {
        match self {
            Provider::Linkerd | Provider::SmiV1alpha2 | Provider::GatewayApi => {
                MetricsProvider::Linkerd
            }
            Provider::Nginx => MetricsProvider::Nginx,
            Provider::Gloo => MetricsProvider::Envoy,
        }
    }

    /// Completes `"<value>" …` in messages: the spellings users may write.
    pub(super) fn expectation() -> String {
        format!(
            "is not supported; allowed: {}",
            Self::ALL.map(Self::as_str).join(", ")
        )
    }
}

impl FromStr for Provider {
    type Err = UnknownProvider;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == text)
            .ok_or_else(|| UnknownProvider(text.to_owned()))
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whose Prometheus series the builtin checks read (`serin.dev/metrics-provider`): the data
/// plane that sees the canary's requests. The annotation spellings are the serialized names.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricsProvider {
    /// The canary pods' own Linkerd proxies.
    #[serde(rename = "linkerd")]
    Linkerd,
    /// Traefik as the Gateway API implementation: its service backends.
    #[serde(rename = "traefik")]
    Traefik,
    /// ingress-nginx.
    #[serde(rename = "nginx")]
    Nginx,
    /// Gloo's Envoy proxies: the Envoy clusters of Gloo's Upstreams.
    #[serde(rename = "envoy")]
    Envoy,
}

/// The value is not one of [`MetricsProvider::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} {expected}", expected = MetricsProvider::expectation())]
pub struct UnknownMetricsProvider(pub String);

impl MetricsProvider {
    pub const ALL: [MetricsProvider; 4] = [
        MetricsProvider::Linkerd,
        MetricsProvider::Traefik,
        MetricsProvider::Nginx,
        MetricsProvider::Envoy,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MetricsProvider::Linkerd => "linkerd",
            MetricsProvider::Traefik => "traefik",
            MetricsProvider::Nginx => "nginx",
            MetricsProvider::Envoy => "envoy",
        }
    }

    /// Whether this data plane sees the canary's requests when `provider` routes them.
    /// Linkerd's proxies sit in the canary pods, so they see every request whichever router
    /// sent it (as long as the pods are meshed); the others are routers themselves and see
    /// only what they route: Traefik as the Gateway API implementation (`gatewayapi`),
    /// ingress-nginx (`nginx`), Gloo's Envoy (`gloo`).
    pub fn observes(self, provider: Provider) -> bool {
        match self {
            MetricsProvider::Linkerd => true,
            MetricsProvider::Traefik => provider == Provider::GatewayApi,
            MetricsProvider::Nginx => provider == Provider::Nginx,
            MetricsProvider::Envoy => provider == Provider::Gloo,
        }
    }

    /// The finite bucket boundaries (milliseconds) of this data plane's request latency
    /// histogram as it ships (Linkerd's `response_latency_ms`, Traefik's and ingress-nginx's
    /// defaults, Envoy's `upstream_rq_time`): the sequential latency check counts the
    /// requests above the largest boundary at or below the limit, so a limit below the
    /// first is refused.
    pub fn latency_buckets_ms(self) -> &'static [f64] {
        match self {
            MetricsProvider::Linkerd => &[
                1.0, 2.0, 3.0, 4.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 100.0, 200.0, 300.0, 400.0,
                500.0, 1000.0, 2000.0, 3000.0, 4000.0, 5000.0, 10000.0, 20000.0, 30000.0, 40000.0,
                50000.0,
            ],
            MetricsProvider::Traefik => &[100.0, 300.0, 1200.0, 5000.0],
            MetricsProvider::Nginx => &[
                5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
            ],
            MetricsProvider::Envoy => &[
                0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0,
                10000.0, 30000.0, 60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
            ],
        }
    }

    /// The metrics providers that can observe `provider`'s releases, in [`Self::ALL`] order.
    pub fn observing(provider: Provider) -> Vec<MetricsProvider> {
        Self::ALL
            .into_iter()
            .filter(|m| m.observes(provider))
            .collect()
    }

    /// Completes `"<value>" …` in messages: the spellings users may write.
    pub(super) fn expectation() -> String {
        format!(
            "is not supported; allowed: {}",
            Self::ALL.map(Self::as_str).join(", ")
        )
    }
}

impl FromStr for MetricsProvider {
    type Err = UnknownMetricsProvider;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|m| m.as_str() == text)
            .ok_or_else(|| UnknownMetricsProvider(text.to_owned()))
    }
}

impl fmt::Display for MetricsProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A Gateway API `Gateway`, written `namespace/name` in the annotation.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct GatewayRef {
    #[schemars(pattern(DNS_1123_LABEL), length(min = 1, max = 63))]
    pub namespace: String,
    #[schemars(pattern(DNS_1123_SUBDOMAIN), length(min = 1, max = 253))]
    pub name: String,
}

impl fmt::Display for GatewayRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// One A/B routing rule; requests matching any rule of a spec are sent to the canary.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum MatchRule {
    /// `header:NAME=VALUE`: the header has exactly this value.
    HeaderExact { name: String, value: String },
    /// `header:NAME~REGEX`: the header matches this regular expression.
    HeaderRegex { name: String, regex: String },
    /// `cookie:NAME`: the request carries this cookie.
    Cookie { name: String },
}

/// Written by hand: the derived schema of an internally tagged enum is a `oneOf` whose
/// branches give `type` different constants, which a CRD's structural schema cannot hold.
/// One object with every field is what the API server accepts; which fields each `type`
/// needs is checked by the annotation parser.
impl JsonSchema for MatchRule {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "MatchRule".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "One A/B routing rule: headerExact (name, value), headerRegex (name, regex) or cookie (name).",
            "type": "object",
            "required": ["type", "name"],
            "properties": {
                "type": {"type": "string", "enum": ["headerExact", "headerRegex", "cookie"]},
                "name": {"type": "string", "pattern": HTTP_TOKEN},
                "value": {"type": "string", "minLength": 1},
                "regex": {"type": "string", "minLength": 1, "format": "regex"}
            }
        })
    }
}

/// The annotation syntax, as `serin.dev/match` is parsed.
impl fmt::Display for MatchRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MatchRule::HeaderExact { name, value } => write!(f, "header:{name}={value}"),
            MatchRule::HeaderRegex { name, regex } => write!(f, "header:{name}~{regex}"),
            MatchRule::Cookie { name } => write!(f, "cookie:{name}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> CanarySpec {
        CanarySpec::defaults("podinfo".into(), Some(9898))
    }

    #[test]
    fn default_spec_is_a_canary_release() {
        assert_eq!(spec().strategy(), Strategy::Canary);
    }

    #[test]
    fn iterations_alone_is_blue_green() {
        let spec = CanarySpec {
            iterations: Some(10),
            ..spec()
        };
        assert_eq!(spec.strategy(), Strategy::BlueGreen);
    }

    #[test]
    fn match_with_iterations_is_ab_testing() {
        let spec = CanarySpec {
            iterations: Some(10),
            matches: vec![MatchRule::Cookie {
                name: "canary".into(),
            }],
            ..spec()
        };
        assert_eq!(spec.strategy(), Strategy::ABTesting);
    }

    #[test]
    fn step_weight_walks_up_to_max_weight() {
        assert_eq!(spec().weights(), vec![10, 20, 30, 40, 50]);
    }

    #[test]
    fn step_weight_that_overshoots_is_cut_to_max_weight() {
        let spec = CanarySpec {
            step_weight: Some(15),
            ..spec()
        };
        assert_eq!(spec.weights(), vec![15, 30, 45, 50]);
    }

    #[test]
    fn step_weights_list_is_walked_as_written() {
        let spec = CanarySpec {
            step_weight: None,
            step_weights: Some(vec![5, 10, 25, 50]),
            ..spec()
        };
        assert_eq!(spec.weights(), vec![5, 10, 25, 50]);
    }

    #[test]
    fn step_weights_list_ending_below_max_weight_ends_at_max_weight() {
        let spec = CanarySpec {
            step_weight: None,
            step_weights: Some(vec![5, 10, 25]),
            max_weight: 60,
            ..spec()
        };
        assert_eq!(spec.weights(), vec![5, 10, 25, 60]);
    }

    #[test]
    fn weights_of_a_zero_step_do_not_loop() {
        let spec = CanarySpec {
            step_weight: Some(0),
            ..spec()
        };
        assert_eq!(spec.weights().last(), Some(&50));
    }

    #[test]
    fn provider_spellings_are_the_serialized_names() {
        for provider in Provider::ALL {
            let json = serde_json::to_value(provider).ok();
            assert_eq!(json, Some(serde_json::json!(provider.as_str())));
            assert_eq!(provider.as_str().parse(), Ok(provider));
        }
    }

    #[test]
    fn metrics_provider_spellings_are_the_serialized_names() {
        for metrics in MetricsProvider::ALL {
            let json = serde_json::to_value(metrics).ok();
            assert_eq!(json, Some(serde_json::json!(metrics.as_str())));
            assert_eq!(metrics.as_str().parse(), Ok(metrics));
        }
        let err = "istio"
            .parse::<MetricsProvider>()
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some(r#""istio" is not supported; allowed: linkerd, traefik, nginx, envoy"#)
        );
    }

    #[test]
    fn each_provider_defaults_to_its_own_data_plane_which_observes_it() {
        let defaults = Provider::ALL.map(|p| (p, p.default_metrics_provider()));
        assert_eq!(
            defaults,
            [
                (Provider::Linkerd, MetricsProvider::Linkerd),
                (Provider::SmiV1alpha2, MetricsProvider::Linkerd),
                (Provider::GatewayApi, MetricsProvider::Linkerd),
                (Provider::Nginx, MetricsProvider::Nginx),
                (Provider::Gloo, MetricsProvider::Envoy),
            ]
        );
        for (provider, metrics) in defaults {
            assert!(metrics.observes(provider), "{provider} {metrics}");
        }
    }

    #[test]
    fn linkerd_observes_every_provider_and_each_router_only_its_own() {
        let observing = Provider::ALL.map(|p| (p, MetricsProvider::observing(p)));
        use MetricsProvider::{Envoy, Linkerd, Nginx, Traefik};
        assert_eq!(
            observing,
            [
                (Provider::Linkerd, vec![Linkerd]),
                (Provider::SmiV1alpha2, vec![Linkerd]),
                (Provider::GatewayApi, vec![Linkerd, Traefik]),
                (Provider::Nginx, vec![Linkerd, Nginx]),
                (Provider::Gloo, vec![Linkerd, Envoy]),
            ]
        );
    }

    #[test]
    fn a_spec_without_metrics_provider_reads_its_providers_data_plane() {
        let spec = CanarySpec {
            provider: Provider::Gloo,
            metrics_provider: None,
            ..spec()
        };
        assert_eq!(spec.effective_metrics_provider(), MetricsProvider::Envoy);
        let spec = CanarySpec {
            metrics_provider: Some(MetricsProvider::Linkerd),
            ..spec
        };
        assert_eq!(spec.effective_metrics_provider(), MetricsProvider::Linkerd);
    }

    #[test]
    fn unknown_provider_names_the_allowed_ones() {
        let err = "istio".parse::<Provider>().err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some(
                r#""istio" is not supported; allowed: linkerd, smi:v1alpha2, gatewayapi, nginx, gloo"#
            )
        );
    }
}
