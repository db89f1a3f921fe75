//! `AnalysisTemplate`: custom metrics (PromQL with `{{ namespace }}`, `{{ target }}`,
//! `{{ service }}`, `{{ interval }}`) and webhooks (acceptance tests, load tests, gates) that a
//! Deployment names in `serin.dev/analysis`.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::spec::{Duration, Limits};

#[derive(CustomResource, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "serin.dev",
    version = "v1beta1",
    kind = "AnalysisTemplate",
    plural = "analysistemplates",
    shortname = "sat",
    namespaced,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisTemplateSpec {
    /// Checks run at every interval, beside (or instead of) the builtin ones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<MetricTemplate>,
    /// Webhooks called during the release.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub webhooks: Vec<WebhookTemplate>,
}

/// One metric check. Without `query`, `name` must be a builtin: `request-success-rate`
/// (percent) or `request-duration` (p99, milliseconds).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MetricTemplate {
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// PromQL returning one number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// Accepted range of the value; either bound may be absent.
    #[serde(default)]
    pub threshold_range: ThresholdRange,
    /// Prometheus HTTP API address; `--prometheus-url` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// What an empty result means.
    #[serde(default)]
    pub no_data: NoDataPolicy,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Default)]
pub struct ThresholdRange {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
}

/// What "no data" from a metric means.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum NoDataPolicy {
    /// A failed check: a silent canary is never promoted.
    #[default]
    Fail,
    /// The check is left out of that interval.
    Skip,
}

/// When a webhook is called (Flagger's webhook types).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum HookType {
    /// Gate before the canary is scaled up.
    ConfirmRollout,
    /// Before traffic shifts; failures count toward the threshold.
    PreRollout,
    /// At every interval (load tests); failures count as failed checks.
    Rollout,
    /// Gate before each weight increase.
    ConfirmTrafficIncrease,
    /// Gate before promotion.
    ConfirmPromotion,
    /// After Succeeded or Failed.
    PostRollout,
    /// Polled once per interval while a release waits at a closed gate or is analysed: a
    /// success rolls back.
    Rollback,
    /// Every Event Serin records.
    Event,
}

/// One webhook. The payload is Flagger's: `name`, `namespace`, `phase`, `checksum`, `metadata`;
/// a reply status above 202 is a failure.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WebhookTemplate {
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    #[serde(rename = "type")]
    pub type_: HookType,
    #[schemars(length(min = 1))]
    pub url: String,
    /// Per attempt; 10s when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Extra attempts after a failure; 0 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 10))]
    pub retries: Option<u32>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

impl AnalysisTemplateSpec {
    /// Everything wrong with the template that its schema cannot say, each naming its field:
    /// unique names, queries that only use known `{{ variables }}` (or builtin names),
    /// `min ≤ max`, `http(s)` URLs with a host, hook timeouts within
    /// [`Limits::HOOK_TIMEOUT`] (above zero, at most a minute).
    pub fn problems(&self) -> Vec<crate::spec::Problem> {
        use crate::spec::Problem;
        let mut problems = Vec::new();
        for (i, metric) in self.metrics.iter().enumerate() {
            let at = format!("spec.metrics[{i}]");
            if let Some(first) = self.metrics[..i].iter().position(|m| m.name == metric.name) {
                problems.push(Problem::new(
                    format!("{at}.name"),
                    format!(
                        "{:?} is also the name of spec.metrics[{first}]; names must be unique",
                        metric.name
                    ),
                ));
            }
            if let Err(e) = crate::analysis::check_metric(metric) {
                let field = match metric.query {
                    Some(_) => "query",
                    None => "name",
                };
                problems.push(Problem::new(format!("{at}.{field}"), e.to_string()));
            }
            if let ThresholdRange {
                min: Some(min),
                max: Some(max),
            } = metric.threshold_range
                && min > max
            {
                problems.push(Problem::new(
                    format!("{at}.thresholdRange"),
                    format!("min {min} is larger than max {max}"),
                ));
            }
            if let Some(address) = &metric.address
                && let Err(message) = check_url(address)
            {
                problems.push(Problem::new(format!("{at}.address"), message));
            }
        }
        for (i, hook) in self.webhooks.iter().enumerate() {
            let at = format!("spec.webhooks[{i}]");
            if let Some(first) = self.webhooks[..i].iter().position(|h| h.name == hook.name) {
                problems.push(Problem::new(
                    format!("{at}.name"),
                    format!(
                        "{:?} is also the name of spec.webhooks[{first}]; names must be unique",
                        hook.name
                    ),
                ));
            }
            if let Err(message) = check_url(&hook.url) {
                problems.push(Problem::new(format!("{at}.url"), message));
            }
            if let Some(timeout) = hook.timeout
                && let Err(bound) = Limits::HOOK_TIMEOUT.check(timeout)
            {
                problems.push(Problem::new(
                    format!("{at}.timeout"),
                    format!("{:?} {bound}", timeout.to_string()),
                ));
            }
        }
        problems
    }
}

/// An absolute `http` or `https` URL with a host.
fn check_url(text: &str) -> Result<(), String> {
    match reqwest::Url::parse(text) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host_str().is_some() => Ok(()),
        Ok(url) => Err(format!(
            "{text:?} must be an http or https URL with a host, not {}:",
            url.scheme()
        )),
        Err(e) => Err(format!(
            "{text:?} is not a URL ({e}); e.g. http://loadtester.test/"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metric(
        name: &str,
        query: Option<&str>,
        min: Option<f64>,
        max: Option<f64>,
    ) -> MetricTemplate {
        MetricTemplate {
            name: name.into(),
            query: query.map(Into::into),
            threshold_range: ThresholdRange { min, max },
            address: None,
            no_data: NoDataPolicy::Fail,
        }
    }

    fn hook(name: &str, url: &str, timeout: Option<Duration>) -> WebhookTemplate {
        WebhookTemplate {
            name: name.into(),
            type_: HookType::Rollout,
            url: url.into(),
            timeout,
            retries: None,
            metadata: BTreeMap::new(),
        }
    }

    #[test]
    fn a_sound_template_has_no_problems() {
        let spec = AnalysisTemplateSpec {
            metrics: vec![
                metric("request-success-rate", None, Some(99.0), None),
                metric(
                    "errors",
                    Some("sum(rate(x{namespace=\"{{ namespace }}\"}[{{interval}}]))"),
                    None,
                    Some(1.0),
                ),
            ],
            webhooks: vec![hook(
                "load",
                "http://loadtester.test/",
                Some(Duration::from_secs(5)),
            )],
        };
        assert_eq!(spec.problems(), Vec::new());
    }

    #[test]
    fn a_hook_timeout_is_bounded_to_a_minute() {
        let with_timeout = |timeout: &str| AnalysisTemplateSpec {
            metrics: Vec::new(),
            webhooks: vec![hook(
                "gate",
                "http://gate.test/",
                timeout.parse::<Duration>().ok(),
            )],
        };
        let lines = |timeout| -> Vec<String> {
            with_timeout(timeout)
                .problems()
                .iter()
                .map(ToString::to_string)
                .collect()
        };
        assert_eq!(
            lines("999999h"),
            [r#"spec.webhooks[0].timeout: "999999h" must be at most 1m"#]
        );
        assert_eq!(
            lines("61s"),
            [r#"spec.webhooks[0].timeout: "1m1s" must be at most 1m"#]
        );
        assert!(lines("60s").is_empty());
        assert!(lines("500ms").is_empty());
    }

    #[test]
    fn every_mistake_of_a_template_is_named_by_field() {
        let mut with_address = metric("latency", Some("x"), None, None);
        with_address.address = Some("prometheus:9090".into());
        let spec = AnalysisTemplateSpec {
            metrics: vec![
                metric("errors", Some("sum({{ pod }})"), Some(5.0), Some(1.0)),
                metric("errors", None, None, None),
                with_address,
            ],
            webhooks: vec![
                hook("load", "ftp://files.test/", None),
                hook("load", "not a url", Some(Duration::from_millis(0))),
            ],
        };
        let problems: Vec<String> = spec.problems().iter().map(ToString::to_string).collect();
        let fields: Vec<&str> = problems
            .iter()
            .map(|p| p.split(':').next().unwrap_or(""))
            .collect();
        assert_eq!(
            fields,
            [
                "spec.metrics[0].query",
                "spec.metrics[0].thresholdRange",
                "spec.metrics[1].name",
                "spec.metrics[1].name",
                "spec.metrics[2].address",
                "spec.webhooks[0].url",
                "spec.webhooks[1].name",
                "spec.webhooks[1].url",
                "spec.webhooks[1].timeout",
            ],
            "{problems:#?}"
        );
        assert!(problems[0].contains("{{ pod }}"), "{}", problems[0]);
        assert_eq!(
            problems[8],
            r#"spec.webhooks[1].timeout: "0s" must be at least 1ms"#
        );
        assert!(problems[1].contains("min 5 is larger than max 1"));
        assert!(problems[3].contains("not a builtin metric"));
    }
}
