//! What is wrong with an `AnalysisTemplate` that its schema cannot say
//! ([`AnalysisTemplateSpec::problems`]), for the template admission webhook. A query is
//! checked by the code that renders it for a release ([`check_metric`]), so admission and
//! the controller cannot disagree.

use crate::crd::{AnalysisTemplateSpec, MetricTemplate, ThresholdRange};
use crate::spec::{Limits, Problem};

use super::queries::check_metric;

impl AnalysisTemplateSpec {
    /// Everything wrong with the template that its schema cannot say, each naming its field:
    /// unique names, queries that only use known `{{ variables }}` (or builtin names),
    /// `min ≤ max`, `http(s)` URLs with a host, a `secretRef` only beside an `https://`
    /// `address`, hook timeouts within
    /// [`Limits::HOOK_TIMEOUT`] (above zero, at most a minute).
    pub fn problems(&self) -> Vec<Problem> {
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
            if let Err(e) = check_metric(metric) {
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
                && let Err(message) = check_url(address).and_then(|()| no_userinfo(address))
            {
                problems.push(Problem::new(format!("{at}.address"), message));
            }
            if let Some(secret) = &metric.secret_ref {
                problems.extend(secret_ref_problems(&at, metric, &secret.name));
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

/// What is wrong with the `secretRef` (named `name`) of the metric at `at`: the credentials
/// are for the metric's own `address`, never for `--prometheus-url` (which has Serin's own,
/// from its flags), and never sent in clear.
fn secret_ref_problems(at: &str, metric: &MetricTemplate, name: &str) -> Vec<Problem> {
    let mut problems = Vec::new();
    if !crate::policy::is_dns_subdomain(name) {
        problems.push(Problem::new(
            format!("{at}.secretRef.name"),
            format!(
                "{name:?} is not a Secret name (lowercase letters, digits, '-' and '.', at \
                 most 253 characters)"
            ),
        ));
    }
    match metric.address.as_deref() {
        None => problems.push(Problem::new(
            format!("{at}.secretRef"),
            "needs the metric's own address (https://...): the default Prometheus \
             (--prometheus-url) is queried with the credentials of Serin's --prometheus-* flags"
                .to_owned(),
        )),
        Some(address)
            if !address
                .trim_start()
                .to_ascii_lowercase()
                .starts_with("https://") =>
        {
            problems.push(Problem::new(
                format!("{at}.address"),
                format!(
                    "{address:?} would carry the credentials of {at}.secretRef in clear; \
                     credentials are sent only over https://"
                ),
            ));
        }
        Some(_) => {}
    }
    problems
}

/// A metric address without a user or password in it: every message about the metric quotes
/// its address, so credentials there would be in every Event. The value is not quoted back.
fn no_userinfo(text: &str) -> Result<(), String> {
    match reqwest::Url::parse(text) {
        Ok(url) if !url.username().is_empty() || url.password().is_some() => Err(
            "carries a user or password in the URL, which every Event about the metric would \
             show; put the credentials in a Secret and name it in secretRef"
                .to_owned(),
        ),
        _ => Ok(()),
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
    use std::collections::BTreeMap;

    use super::*;
    use crate::crd::{HookType, NoDataPolicy, SecretRef, WebhookTemplate};
    use crate::spec::Duration;

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
            secret_ref: None,
            no_data: NoDataPolicy::Fail,
        }
    }

    fn with_secret(address: Option<&str>, secret: &str) -> MetricTemplate {
        let mut metric = metric("errors", Some("sum(x)"), None, Some(1.0));
        metric.address = address.map(Into::into);
        metric.secret_ref = Some(SecretRef {
            name: secret.into(),
        });
        metric
    }

    fn lines(metric: MetricTemplate) -> Vec<String> {
        let spec = AnalysisTemplateSpec {
            metrics: vec![metric],
            webhooks: Vec::new(),
        };
        spec.problems().iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_secret_ref_beside_an_https_address_is_sound() {
        let metric = with_secret(Some("https://thanos.monitoring:10902"), "thanos-auth");
        assert_eq!(lines(metric), Vec::<String>::new());
    }

    #[test]
    fn a_secret_ref_without_an_address_is_refused_naming_the_flags() {
        assert_eq!(
            lines(with_secret(None, "thanos-auth")),
            [
                "spec.metrics[0].secretRef: needs the metric's own address (https://...): the \
              default Prometheus (--prometheus-url) is queried with the credentials of Serin's \
              --prometheus-* flags"
            ]
        );
    }

    #[test]
    fn credentials_over_plain_http_are_refused() {
        assert_eq!(
            lines(with_secret(Some("http://thanos:10902"), "thanos-auth")),
            [
                r#"spec.metrics[0].address: "http://thanos:10902" would carry the credentials of spec.metrics[0].secretRef in clear; credentials are sent only over https://"#
            ]
        );
        assert_eq!(
            lines(with_secret(Some("HTTP://thanos:10902"), "thanos-auth")).len(),
            1,
            "the scheme is case-insensitive"
        );
    }

    #[test]
    fn credentials_in_the_address_are_refused_without_quoting_them() {
        let mut metric = metric("errors", Some("sum(x)"), None, Some(1.0));
        metric.address = Some("https://serin:hunter2@thanos:10902".into());
        assert_eq!(
            lines(metric),
            [
                "spec.metrics[0].address: carries a user or password in the URL, which every \
              Event about the metric would show; put the credentials in a Secret and name it in \
              secretRef"
            ]
        );
    }

    #[test]
    fn a_secret_ref_must_name_a_secret() {
        assert_eq!(
            lines(with_secret(Some("https://thanos:10902"), "Thanos_Auth")),
            [
                r#"spec.metrics[0].secretRef.name: "Thanos_Auth" is not a Secret name (lowercase letters, digits, '-' and '.', at most 253 characters)"#
            ]
        );
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
