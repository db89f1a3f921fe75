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
            problems.extend(flagger_metric_problems(&at, metric));
            let refers_only = metric.template_ref.is_some() && metric.query.is_none();
            if let Err(e) = check_metric(metric)
                && !refers_only
            {
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
            if hook.mute_alert == Some(true) {
                problems.push(Problem::new(
                    format!("{at}.muteAlert"),
                    "true is not supported: Serin's alerts are not muted per webhook; choose \
                     which alerts are sent by their severity in the CanaryPolicy's alerts, and \
                     remove muteAlert (or set it to false)"
                        .to_owned(),
                ));
            }
        }
        problems
    }
}

/// What is wrong with the fields a metric pasted from a Flagger Canary's `analysis.metrics[]`
/// has beyond Serin's own: `interval` is the metric's query window (bounded as
/// `serin.dev/metrics-window`); `templateRef` is accepted beside a `query` that carries the
/// MetricTemplate's query; `templateVariables` and the deprecated `threshold` are refused,
/// each saying what to write instead.
fn flagger_metric_problems(at: &str, metric: &MetricTemplate) -> Vec<Problem> {
    let mut problems = Vec::new();
    if let Some(interval) = metric.interval
        && let Err(bound) = Limits::METRICS_WINDOW.check(interval)
    {
        problems.push(Problem::new(
            format!("{at}.interval"),
            format!("{:?} {bound}", interval.to_string()),
        ));
    }
    if let Some(reference) = &metric.template_ref
        && metric.query.is_none()
    {
        problems.push(Problem::new(
            format!("{at}.templateRef"),
            format!(
                "Serin reads no Flagger MetricTemplate (here {:?}): copy its spec.query into \
                 query (and its provider.address and provider.secretRef into address and \
                 secretRef); templateRef may stay beside them",
                reference.name
            ),
        ));
    }
    if !metric.template_variables.is_empty() {
        problems.push(Problem::new(
            format!("{at}.templateVariables"),
            "not supported: Serin's queries have no {{ variables.* }}; write the values into \
             query (its variables are namespace, target, service and interval)"
                .to_owned(),
        ));
    }
    if metric.threshold.is_some() {
        problems.push(Problem::new(
            format!("{at}.threshold"),
            "Flagger's deprecated threshold is not read: write thresholdRange.min (a floor, as \
             for request-success-rate) or thresholdRange.max (a ceiling, as for \
             request-duration)"
                .to_owned(),
        ));
    }
    problems
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
            interval: None,
            template_ref: None,
            template_variables: BTreeMap::new(),
            threshold: None,
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
            mute_alert: None,
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

    /// A team migrating from Flagger pastes its Canary's `analysis.metrics` and `webhooks`
    /// (written here after Flagger's documented examples, not copied): what maps is accepted,
    /// a `templateRef` needs the MetricTemplate's query beside it, and what Serin does not
    /// do is refused naming the field and why.
    const FLAGGER_PASTE: &str = r#"
apiVersion: serin.dev/v1beta1
kind: AnalysisTemplate
metadata: {name: from-flagger, namespace: shop}
spec:
  metrics:
  - name: request-success-rate
    interval: 1m
    thresholdRange:
      min: 99
  - name: request-duration
    interval: 30s
    thresholdRange:
      max: 500
  - name: failure-share
    templateRef:
      name: failure-share
      namespace: monitoring
    thresholdRange:
      max: 2
    interval: 2m
    query: |
      100 * sum(rate(response_total{namespace="{{ namespace }}",deployment="{{ target }}",classification="failure"}[{{ interval }}]))
      / sum(rate(response_total{namespace="{{ namespace }}",deployment="{{ target }}"}[{{ interval }}]))
  webhooks:
  - name: smoke
    type: pre-rollout
    url: http://loadtester.test/
    timeout: 15s
    metadata:
      type: bash
      cmd: "curl -s http://web-canary.shop/healthz | grep ok"
  - name: load
    type: rollout
    url: http://loadtester.test/
    timeout: 5s
    metadata:
      cmd: "hey -z 1m -q 10 -c 2 http://web-canary.shop/"
  - name: on-call
    type: confirm-promotion
    url: http://gate.test/approve
    muteAlert: false
"#;

    fn pasted(yaml: &str) -> AnalysisTemplateSpec {
        let value: serde_json::Value =
            serde_yaml_ng::from_str(yaml).unwrap_or_else(|e| panic!("{e}"));
        serde_json::from_value(value["spec"].clone()).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_pasted_flagger_analysis_is_accepted_with_its_intervals() {
        let spec = pasted(FLAGGER_PASTE);
        assert_eq!(spec.problems(), Vec::<Problem>::new());
        assert_eq!(spec.metrics[1].interval, Some(Duration::from_secs(30)));
        assert_eq!(
            spec.metrics[2]
                .template_ref
                .as_ref()
                .map(|r| r.name.as_str()),
            Some("failure-share")
        );
        assert_eq!(spec.webhooks[2].mute_alert, Some(false));
    }

    #[test]
    fn flagger_fields_serin_does_not_follow_are_refused_naming_the_field_and_why() {
        let without_query = FLAGGER_PASTE
            .split_once("    query: |")
            .map(|(head, tail)| {
                // Drop the query's two lines, as a MetricTemplate reference comes pasted.
                let rest = tail.splitn(4, '\n').nth(3).unwrap_or_default();
                format!("{head}{rest}")
            })
            .unwrap_or_default();
        let broken = without_query
            .replace("    muteAlert: false", "    muteAlert: true")
            .replace(
                "    interval: 30s\n",
                "    interval: 2h\n    threshold: 500\n    templateVariables: {app: web}\n",
            );
        let problems: Vec<String> = pasted(&broken)
            .problems()
            .iter()
            .map(ToString::to_string)
            .collect();
        let has = |field: &str, words: &str| {
            assert!(
                problems
                    .iter()
                    .any(|p| p.starts_with(field) && p.contains(words)),
                "{field} ({words}) in {problems:#?}"
            )
        };
        has("spec.metrics[1].interval", "\"2h\"");
        has("spec.metrics[1].threshold", "thresholdRange.max");
        has(
            "spec.metrics[1].templateVariables",
            "write the values into query",
        );
        has(
            "spec.metrics[2].templateRef",
            "copy its spec.query into query",
        );
        has("spec.webhooks[2].muteAlert", "severity");
        // The reference alone is not also reported as an unknown builtin.
        assert!(
            !problems
                .iter()
                .any(|p| p.starts_with("spec.metrics[2].name")),
            "{problems:#?}"
        );
        assert_eq!(problems.len(), 5, "{problems:#?}");
    }
}
