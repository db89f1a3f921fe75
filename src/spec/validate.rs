//! Semantic rules that a JSON Schema cannot say: between annotations (steps and max weight,
//! provider and `match`, `ingress`, `gateway`, `hosts`, `metrics-provider`, mirroring and
//! session affinity; hosts that are IP
//! addresses or repeated), against the pod template (the port exists), and minimums on
//! durations. Each rule skips keys already refused, so one mistake is one line.

use k8s_openapi::api::core::v1::PodSpec;

use super::Problem;
use super::annotations::{Key, Reading, quoted};
use super::duration::Limits;
use super::model::{MatchRule, MetricsProvider, Provider, Strategy};

/// A bucket boundary as users write latencies: `100ms`, `0.5ms`.
fn milliseconds(ms: f64) -> String {
    format!("{ms}ms")
}

/// Every containerPort of the pod template, in order; the first is the default port.
pub(super) fn container_ports(pod: &PodSpec) -> Vec<i32> {
    pod.containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .map(|p| p.container_port)
        .collect()
}

/// Applies the cross-field rules; `ports` is `None` when the pod template is not known.
pub(super) fn check(reading: &mut Reading<'_>, ports: Option<&[i32]>) {
    let spec = &reading.spec;
    let mut found: Vec<(Key, String)> = Vec::new();
    let mut refuse = |key: Key, message: String| found.push((key, message));
    let usable = |keys: &[Key]| keys.iter().all(|k| reading.usable(*k));
    let provider = spec.provider;

    if reading.is_written(Key::StepWeight) && reading.is_written(Key::StepWeights) {
        refuse(
            Key::StepWeights,
            format!(
                "cannot be combined with {}; use one of them",
                Key::StepWeight.annotation()
            ),
        );
    }
    // "<key> must <relation> serin.dev/max-weight (<value>)".
    let against_max = |key: Key, relation: &str| {
        format!(
            "{} must {relation} {} ({})",
            reading.shown(key),
            Key::MaxWeight.annotation(),
            spec.max_weight
        )
    };
    if let Some(step) = spec
        .step_weight
        .filter(|_| usable(&[Key::StepWeight, Key::MaxWeight]))
        && step > spec.max_weight
    {
        refuse(
            Key::StepWeight,
            against_max(Key::StepWeight, "not be above"),
        );
    }
    if let Some(list) = spec
        .step_weights
        .as_ref()
        .filter(|_| usable(&[Key::StepWeights]))
    {
        if list.windows(2).any(|pair| pair[0] >= pair[1]) {
            refuse(
                Key::StepWeights,
                format!(
                    "{} must be strictly increasing",
                    reading.shown(Key::StepWeights)
                ),
            );
        } else if usable(&[Key::MaxWeight])
            && list.last().is_some_and(|last| *last > spec.max_weight)
        {
            refuse(
                Key::StepWeights,
                against_max(Key::StepWeights, "end at or below"),
            );
        }
    }

    if !spec.matches.is_empty() && usable(&[Key::Match]) {
        if usable(&[Key::Provider]) && !provider.can_match() {
            let able: Vec<&str> = Provider::ALL
                .into_iter()
                .filter(|p| p.can_match())
                .map(Provider::as_str)
                .collect();
            refuse(
                Key::Match,
                format!(
                    "needs {} {}, not {provider}",
                    Key::Provider.annotation(),
                    able.join(", ")
                ),
            );
        }
        if spec.iterations.is_none() && usable(&[Key::Iterations]) {
            refuse(
                Key::Match,
                format!(
                    "A/B testing needs {} (how many checks to run)",
                    Key::Iterations.annotation()
                ),
            );
        }
        if provider == Provider::Nginx && usable(&[Key::Provider]) {
            let cookies = spec
                .matches
                .iter()
                .filter(|r| matches!(r, MatchRule::Cookie { .. }))
                .count();
            let headers = spec.matches.len() - cookies;
            if headers > 1 || cookies > 1 {
                refuse(
                    Key::Match,
                    format!(
                        "{} has {headers} header and {cookies} cookie rules; ingress-nginx \
                         matches at most one of each per canary Ingress",
                        reading.shown(Key::Match)
                    ),
                );
            }
        }
        let mut unrunnable = spec.matches.iter().filter_map(|rule| match rule {
            MatchRule::HeaderExact { value: text, .. }
            | MatchRule::HeaderRegex { regex: text, .. }
                if text.chars().any(char::is_control) =>
            {
                Some((
                    rule,
                    "a header value cannot hold control characters such as a newline".to_owned(),
                ))
            }
            MatchRule::HeaderRegex { regex, .. } => re2(regex).err().map(|why| {
                let why = format!(
                    "{why}; the routers' engines take RE2 syntax, without look-around or \
                     back-references"
                );
                (rule, why)
            }),
            _ => None,
        });
        if let Some((rule, why)) = unrunnable.next() {
            let more = match unrunnable.count() {
                0 => String::new(),
                n => format!(" (and {n} more rules)"),
            };
            refuse(
                Key::Match,
                format!("{}{more}: {why}", quoted(&rule.to_string())),
            );
        }
    }

    if usable(&[Key::Provider, Key::Ingress]) {
        match (provider, reading.is_written(Key::Ingress)) {
            (Provider::Nginx, false) => refuse(
                Key::Ingress,
                format!(
                    "is required with {} {provider} (the Ingress to drive)",
                    Key::Provider.annotation()
                ),
            ),
            (Provider::Nginx, true) | (_, false) => {}
            (_, true) => refuse(Key::Ingress, only_with(Provider::Nginx, provider)),
        }
    }
    if reading.is_written(Key::Gateway)
        && usable(&[Key::Provider])
        && provider != Provider::GatewayApi
    {
        refuse(Key::Gateway, only_with(Provider::GatewayApi, provider));
    }
    if reading.is_written(Key::Hosts)
        && usable(&[Key::Provider])
        && provider != Provider::GatewayApi
    {
        // Where the hosts of the other providers' traffic come from instead.
        let elsewhere = match provider {
            Provider::Nginx => format!(
                "; {provider} routes the hosts of the Ingress {} names",
                Key::Ingress.annotation()
            ),
            Provider::Gloo => format!("; {provider} routes the domains of your VirtualService"),
            _ => format!("; {provider} routes mesh traffic by Service, not by host"),
        };
        refuse(
            Key::Hosts,
            format!("{}{elsewhere}", only_with(Provider::GatewayApi, provider)),
        );
    }
    // Gateway API leaves hostnames on a mesh route (the apex Service as parent) undefined,
    // and Linkerd does not filter by them: without a Gateway they would select nothing.
    if reading.is_written(Key::Hosts)
        && provider == Provider::GatewayApi
        && spec.gateway.is_none()
        && usable(&[Key::Provider, Key::Gateway])
    {
        refuse(
            Key::Hosts,
            format!(
                "needs {}: hostnames select the requests that enter through a Gateway; a mesh \
                 route (the apex Service as parent) does not filter by them",
                Key::Gateway.annotation()
            ),
        );
    }
    // Also when the schema refused some hosts: a host of the wrong form is never an IP
    // address, and every mistake is listed at once. (Too many hosts leaves `hosts` empty.)
    for problem in host_problems(&spec.hosts) {
        refuse(Key::Hosts, problem);
    }

    // Mirroring and session affinity: Gateway API filters, during a release that moves
    // weights (Blue/Green and A/B route no share of the users to the canary to copy from or
    // to keep there).
    let extras = [
        Key::MirrorChecks,
        Key::MirrorPercent,
        Key::AffinityCookie,
        Key::AffinityMaxAge,
    ];
    for key in extras.into_iter().filter(|k| reading.is_written(*k)) {
        if usable(&[Key::Provider]) && !provider.can_mirror_and_stick() {
            let able: Vec<&str> = Provider::ALL
                .into_iter()
                .filter(|p| p.can_mirror_and_stick())
                .map(Provider::as_str)
                .collect();
            refuse(
                key,
                format!(
                    "needs {} {} (its router's RequestMirror and ResponseHeaderModifier \
                     filters), not {provider}",
                    Key::Provider.annotation(),
                    able.join(", ")
                ),
            );
        } else if spec.iterations.is_some() && usable(&[Key::Iterations]) {
            refuse(
                key,
                format!(
                    "applies to canary releases that move weights, not with {} (Blue/Green \
                     and A/B testing)",
                    Key::Iterations.annotation()
                ),
            );
        }
    }
    for (key, needed, alone) in [
        (
            Key::MirrorPercent,
            Key::MirrorChecks,
            "alone it mirrors nothing",
        ),
        (
            Key::AffinityMaxAge,
            Key::AffinityCookie,
            "alone it sets no cookie",
        ),
    ] {
        if reading.is_written(key) && !reading.is_written(needed) {
            refuse(key, format!("needs {}: {alone}", needed.annotation()));
        }
    }
    // Traefik answers every request of a rule with a filter it does not implement with a
    // 500, and it does not implement RequestMirror.
    if reading.is_written(Key::MirrorChecks)
        && usable(&[Key::Provider, Key::MetricsProvider, Key::MirrorChecks])
        && provider.can_mirror_and_stick()
        && spec.metrics_provider == Some(MetricsProvider::Traefik)
    {
        refuse(
            Key::MirrorChecks,
            format!(
                "cannot be used with {} traefik: Traefik's Gateway API provider does not \
                 implement the RequestMirror filter and answers every request of the route \
                 with 500 while it is there",
                Key::MetricsProvider.annotation()
            ),
        );
    }

    if let Some(metrics) = spec.metrics_provider
        && reading.is_written(Key::MetricsProvider)
        && usable(&[Key::Provider, Key::MetricsProvider])
        && !metrics.observes(provider)
    {
        let allowed: Vec<&str> = MetricsProvider::observing(provider)
            .into_iter()
            .map(MetricsProvider::as_str)
            .collect();
        refuse(
            Key::MetricsProvider,
            format!(
                "{} does not see the canary's requests with {} {provider}; allowed with \
                 {provider}: {}",
                reading.shown(Key::MetricsProvider),
                Key::Provider.annotation(),
                allowed.join(", ")
            ),
        );
    }

    if let (Some(port), Some(ports)) = (spec.port, ports)
        && reading.is_written(Key::Port)
        && usable(&[Key::Port])
        && !ports.contains(&port)
    {
        let existing = match ports {
            [] => "it declares none".to_owned(),
            _ => format!(
                "it has {}",
                ports
                    .iter()
                    .map(i32::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        refuse(
            Key::Port,
            format!(
                "{} is not a containerPort of the pod template; {existing}",
                reading.shown(Key::Port)
            ),
        );
    }

    for (key, value, limits) in [
        (Key::Interval, spec.interval, Limits::INTERVAL),
        (
            Key::MetricsWindow,
            spec.metrics_window,
            Limits::METRICS_WINDOW,
        ),
        (Key::Latency, spec.latency, Limits::LATENCY),
        (
            Key::AffinityMaxAge,
            spec.affinity_max_age
                .unwrap_or(Limits::AFFINITY_MAX_AGE.min),
            Limits::AFFINITY_MAX_AGE,
        ),
    ] {
        if let Err(bound) = limits.check(value)
            && usable(&[key])
        {
            refuse(key, format!("{} {bound}", reading.shown(key)));
        }
    }

    // With sequential checks the latency is judged on the histogram's buckets: the requests
    // above the largest boundary at or below the limit are the slow ones, so a limit below
    // the first boundary has no bucket to count from.
    let metrics = spec.effective_metrics_provider();
    let buckets = metrics.latency_buckets_ms();
    if spec.sequential_checks
        && spec.strategy() == Strategy::Canary
        && usable(&[
            Key::Latency,
            Key::SequentialChecks,
            Key::Provider,
            Key::MetricsProvider,
        ])
        && let Some(&first) = buckets.first()
        && (spec.latency.as_millis() as f64) < first
        && found.iter().all(|(key, _)| *key != Key::Latency)
    {
        let shown: Vec<String> = buckets.iter().map(|b| milliseconds(*b)).collect();
        found.push((
            Key::Latency,
            format!(
                "{} is below the smallest bucket of {metrics}'s latency histogram ({}), which \
                 {} judges; allowed: at least {} (its buckets: {}), or {}: \"false\"",
                reading.shown(Key::Latency),
                milliseconds(first),
                Key::SequentialChecks.annotation(),
                milliseconds(first),
                shown.join(", "),
                Key::SequentialChecks.annotation(),
            ),
        ));
    }

    for (key, message) in found {
        reading.refuse(key, Problem::new(key.annotation(), message));
    }
}

/// Whether every router can run `regex`: RE2 syntax, the common ground of Envoy (Gateway API
/// implementations, Gloo) and ingress-nginx's PCRE. The `regex` crate's parser takes the same
/// language and refuses look-around and back-references as RE2 does. `Err` says why, in one
/// line.
fn re2(regex: &str) -> Result<(), String> {
    match regex_syntax::Parser::new().parse(regex) {
        Ok(_) => Ok(()),
        Err(regex_syntax::Error::Parse(e)) => Err(e.kind().to_string()),
        Err(regex_syntax::Error::Translate(e)) => Err(e.kind().to_string()),
        Err(e) => Err(e.to_string().lines().next().unwrap_or_default().to_owned()),
    }
}

/// What Gateway API forbids in `hostnames` that its pattern lets through: IP addresses (the
/// pattern takes `10.0.0.1`), and the same host twice (Gateway API's CRD cannot say it).
fn host_problems(hosts: &[String]) -> Vec<String> {
    let mut problems = Vec::new();
    for host in hosts {
        if host.parse::<std::net::Ipv4Addr>().is_ok() {
            problems.push(format!(
                "{} is an IP address; Gateway API routes by hostname only",
                quoted(host)
            ));
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    let repeated: std::collections::BTreeSet<&str> = hosts
        .iter()
        .filter(|host| !seen.insert(host.as_str()))
        .map(String::as_str)
        .collect();
    if !repeated.is_empty() {
        let listed: Vec<String> = repeated.into_iter().map(quoted).collect();
        problems.push(format!(
            "{} listed more than once; each host must appear once",
            listed.join(", ")
        ));
    }
    problems
}

fn only_with(needed: Provider, provider: Provider) -> String {
    format!(
        "only applies with {} {needed}, not {provider}",
        Key::Provider.annotation()
    )
}

#[cfg(test)]
mod tests {
    use super::super::OptIn;
    use super::super::duration::Duration;
    use super::super::testing::{annotations, enabled, refused};
    use super::super::{ENABLED, read_annotations};
    use super::*;

    #[test]
    fn step_weight_and_step_weights_together_are_refused() {
        assert_eq!(
            refused(&[
                ("serin.dev/step-weight", "10"),
                ("serin.dev/step-weights", "5,10")
            ]),
            [
                "serin.dev/step-weights: cannot be combined with serin.dev/step-weight; use one of them"
            ]
        );
    }

    #[test]
    fn step_weight_above_max_weight_is_refused() {
        assert_eq!(
            refused(&[("serin.dev/step-weight", "60")]),
            [r#"serin.dev/step-weight: "60" must not be above serin.dev/max-weight (50)"#]
        );
        assert_eq!(enabled(&[("serin.dev/step-weight", "50")]).weights(), [50]);
    }

    #[test]
    fn step_weights_must_be_strictly_increasing() {
        assert_eq!(
            refused(&[("serin.dev/step-weights", "5,5,10")]),
            [r#"serin.dev/step-weights: "5,5,10" must be strictly increasing"#]
        );
    }

    #[test]
    fn step_weights_ending_above_max_weight_are_refused() {
        assert_eq!(
            refused(&[
                ("serin.dev/step-weights", "5,60"),
                ("serin.dev/max-weight", "50")
            ]),
            [r#"serin.dev/step-weights: "5,60" must end at or below serin.dev/max-weight (50)"#]
        );
        let spec = enabled(&[
            ("serin.dev/step-weights", "5,25"),
            ("serin.dev/max-weight", "50"),
        ]);
        assert_eq!(spec.weights(), [5, 25, 50]);
    }

    #[test]
    fn match_needs_a_provider_that_can_match() {
        let ab = [
            ("serin.dev/iterations", "10"),
            ("serin.dev/match", "cookie:canary"),
        ];
        assert_eq!(
            refused(&ab),
            ["serin.dev/match: needs serin.dev/provider gatewayapi, nginx, gloo, not linkerd"]
        );
        let spec = enabled(&[ab[0], ab[1], ("serin.dev/provider", "gatewayapi")]);
        assert_eq!(spec.strategy(), super::super::Strategy::ABTesting);
    }

    #[test]
    fn match_without_iterations_is_refused() {
        assert_eq!(
            refused(&[
                ("serin.dev/provider", "gloo"),
                ("serin.dev/match", "cookie:canary")
            ]),
            ["serin.dev/match: A/B testing needs serin.dev/iterations (how many checks to run)"]
        );
    }

    #[test]
    fn nginx_needs_an_ingress() {
        assert_eq!(
            refused(&[("serin.dev/provider", "nginx")]),
            ["serin.dev/ingress: is required with serin.dev/provider nginx (the Ingress to drive)"]
        );
        let spec = enabled(&[
            ("serin.dev/provider", "nginx"),
            ("serin.dev/ingress", "podinfo"),
        ]);
        assert_eq!(spec.ingress.as_deref(), Some("podinfo"));
    }

    #[test]
    fn ingress_without_nginx_is_refused() {
        assert_eq!(
            refused(&[("serin.dev/ingress", "podinfo")]),
            ["serin.dev/ingress: only applies with serin.dev/provider nginx, not linkerd"]
        );
    }

    #[test]
    fn hosts_without_gatewayapi_are_refused_saying_where_that_provider_takes_hosts_from() {
        for (provider, extra, elsewhere) in [
            (
                "nginx",
                Some(("serin.dev/ingress", "web")),
                "nginx routes the hosts of the Ingress serin.dev/ingress names",
            ),
            (
                "gloo",
                None,
                "gloo routes the domains of your VirtualService",
            ),
            (
                "linkerd",
                None,
                "linkerd routes mesh traffic by Service, not by host",
            ),
            (
                "smi:v1alpha2",
                None,
                "smi:v1alpha2 routes mesh traffic by Service, not by host",
            ),
        ] {
            let mut pairs = vec![
                ("serin.dev/provider", provider),
                ("serin.dev/hosts", "web.example.com"),
            ];
            pairs.extend(extra);
            assert_eq!(
                refused(&pairs),
                [format!(
                    "serin.dev/hosts: only applies with serin.dev/provider gatewayapi, not \
                     {provider}; {elsewhere}"
                )]
            );
        }
    }

    #[test]
    fn mirroring_and_affinity_are_read_on_a_gatewayapi_canary_release() {
        let spec = enabled(&[
            ("serin.dev/provider", "gatewayapi"),
            ("serin.dev/mirror-checks", "3"),
            ("serin.dev/mirror-percent", "25"),
            ("serin.dev/affinity-cookie", "serin-canary"),
            ("serin.dev/affinity-max-age", "2h"),
        ]);
        assert_eq!(spec.mirror_checks, Some(3));
        assert_eq!(spec.mirror_percent, Some(25));
        assert_eq!(spec.affinity_cookie.as_deref(), Some("serin-canary"));
        assert_eq!(spec.affinity_max_age, Some(Duration::from_secs(7_200)));
    }

    #[test]
    fn mirroring_and_affinity_off_gatewayapi_name_the_provider_that_has_them() {
        for provider in ["linkerd", "smi:v1alpha2", "gloo"] {
            for (key, value) in [
                ("serin.dev/mirror-checks", "2"),
                ("serin.dev/affinity-cookie", "serin-canary"),
            ] {
                assert_eq!(
                    refused(&[("serin.dev/provider", provider), (key, value)]),
                    [format!(
                        "{key}: needs serin.dev/provider gatewayapi (its router's RequestMirror \
                         and ResponseHeaderModifier filters), not {provider}"
                    )]
                );
            }
        }
    }

    #[test]
    fn mirroring_and_affinity_need_a_release_that_moves_weights() {
        let refusal = |key: &str| {
            format!(
                "{key}: applies to canary releases that move weights, not with \
                 serin.dev/iterations (Blue/Green and A/B testing)"
            )
        };
        assert_eq!(
            refused(&[
                ("serin.dev/provider", "gatewayapi"),
                ("serin.dev/iterations", "5"),
                ("serin.dev/mirror-checks", "2"),
                ("serin.dev/affinity-cookie", "serin-canary"),
            ]),
            [
                refusal("serin.dev/affinity-cookie"),
                refusal("serin.dev/mirror-checks")
            ]
        );
    }

    #[test]
    fn mirror_percent_and_affinity_max_age_alone_name_the_key_they_need() {
        assert_eq!(
            refused(&[
                ("serin.dev/provider", "gatewayapi"),
                ("serin.dev/mirror-percent", "50"),
                ("serin.dev/affinity-max-age", "1h"),
            ]),
            [
                "serin.dev/affinity-max-age: needs serin.dev/affinity-cookie: alone it sets no \
                 cookie",
                "serin.dev/mirror-percent: needs serin.dev/mirror-checks: alone it mirrors \
                 nothing",
            ]
        );
    }

    #[test]
    fn mirror_and_affinity_values_out_of_range_are_refused_with_the_allowed_range() {
        assert_eq!(
            refused(&[
                ("serin.dev/provider", "gatewayapi"),
                ("serin.dev/mirror-checks", "0"),
                ("serin.dev/mirror-percent", "101"),
                ("serin.dev/affinity-cookie", "a;b"),
                ("serin.dev/affinity-max-age", "500d"),
            ]),
            [
                r#"serin.dev/affinity-cookie: "a;b" must be a cookie name: 1 to 64 letters, digits or !#$%&'*+-.^_`|~"#,
                r#"serin.dev/affinity-max-age: "500d" must be a duration such as 30s, 1m or 1m30s"#,
                r#"serin.dev/mirror-checks: "0" must be an integer from 1 to 100"#,
                r#"serin.dev/mirror-percent: "101" must be an integer from 1 to 100"#,
            ]
        );
        assert_eq!(
            refused(&[
                ("serin.dev/provider", "gatewayapi"),
                ("serin.dev/affinity-cookie", "c"),
                ("serin.dev/affinity-max-age", "10000h"),
            ]),
            [r#"serin.dev/affinity-max-age: "10000h" must be at most 9600h"#]
        );
    }

    #[test]
    fn mirroring_where_traefik_reads_the_series_is_refused_as_traefik_cannot_mirror() {
        let message = refused(&[
            ("serin.dev/provider", "gatewayapi"),
            ("serin.dev/metrics-provider", "traefik"),
            ("serin.dev/mirror-checks", "2"),
        ]);
        assert_eq!(
            message,
            [
                "serin.dev/mirror-checks: cannot be used with serin.dev/metrics-provider \
                 traefik: Traefik's Gateway API provider does not implement the RequestMirror \
                 filter and answers every request of the route with 500 while it is there"
            ]
        );
        // Session affinity uses what Traefik implements.
        let spec = enabled(&[
            ("serin.dev/provider", "gatewayapi"),
            ("serin.dev/metrics-provider", "traefik"),
            ("serin.dev/affinity-cookie", "serin-canary"),
        ]);
        assert_eq!(spec.affinity_cookie.as_deref(), Some("serin-canary"));
    }

    #[test]
    fn hosts_need_a_gateway() {
        assert_eq!(
            refused(&[
                ("serin.dev/provider", "gatewayapi"),
                ("serin.dev/hosts", "web.example.com")
            ]),
            [
                "serin.dev/hosts: needs serin.dev/gateway: hostnames select the requests that \
                 enter through a Gateway; a mesh route (the apex Service as parent) does not \
                 filter by them"
            ]
        );
    }

    #[test]
    fn hosts_that_are_ip_addresses_or_repeated_are_refused_all_at_once() {
        let gatewayapi = ("serin.dev/provider", "gatewayapi");
        let gateway = ("serin.dev/gateway", "infra/public");
        assert_eq!(
            refused(&[
                gatewayapi,
                gateway,
                (
                    "serin.dev/hosts",
                    "10.0.0.1,a.example.com,b.example.com,192.168.1.2,a.example.com,b.example.com"
                ),
                ("serin.dev/step-weight", "0"),
            ]),
            [
                r#"serin.dev/hosts: "10.0.0.1" is an IP address; Gateway API routes by hostname only"#,
                r#"serin.dev/hosts: "192.168.1.2" is an IP address; Gateway API routes by hostname only"#,
                r#"serin.dev/hosts: "a.example.com", "b.example.com" listed more than once; each host must appear once"#,
                r#"serin.dev/step-weight: "0" must be an integer from 1 to 100"#,
            ]
        );
        // Digits alone are a hostname when they are not an address.
        let spec = enabled(&[
            gatewayapi,
            gateway,
            ("serin.dev/hosts", "1.2.3,1.2.3.4.5,*.10.0.0.1"),
        ]);
        assert_eq!(spec.hosts, ["1.2.3", "1.2.3.4.5", "*.10.0.0.1"]);
    }

    #[test]
    fn gateway_without_gatewayapi_is_refused() {
        assert_eq!(
            refused(&[
                ("serin.dev/provider", "smi:v1alpha2"),
                ("serin.dev/gateway", "infra/public")
            ]),
            [
                "serin.dev/gateway: only applies with serin.dev/provider gatewayapi, not smi:v1alpha2"
            ]
        );
    }

    #[test]
    fn a_metrics_provider_that_cannot_see_the_providers_requests_is_refused() {
        for (provider, extra, metrics, allowed) in [
            ("linkerd", None, "traefik", "linkerd"),
            ("smi:v1alpha2", None, "nginx", "linkerd"),
            ("gatewayapi", None, "envoy", "linkerd, traefik"),
            ("gatewayapi", None, "nginx", "linkerd, traefik"),
            (
                "nginx",
                Some(("serin.dev/ingress", "public")),
                "traefik",
                "linkerd, nginx",
            ),
            ("gloo", None, "traefik", "linkerd, envoy"),
            ("gloo", None, "nginx", "linkerd, envoy"),
        ] {
            let mut pairs = vec![
                ("serin.dev/provider", provider),
                ("serin.dev/metrics-provider", metrics),
            ];
            pairs.extend(extra);
            assert_eq!(
                refused(&pairs),
                [format!(
                    "serin.dev/metrics-provider: {metrics:?} does not see the canary's requests \
                     with serin.dev/provider {provider}; allowed with {provider}: {allowed}"
                )],
            );
        }
    }

    #[test]
    fn linkerd_metrics_work_behind_every_provider_and_each_router_with_its_own() {
        for (provider, extra, metrics) in [
            ("linkerd", None, "linkerd"),
            ("smi:v1alpha2", None, "linkerd"),
            ("gatewayapi", None, "linkerd"),
            ("gatewayapi", None, "traefik"),
            ("nginx", Some(("serin.dev/ingress", "public")), "linkerd"),
            ("nginx", Some(("serin.dev/ingress", "public")), "nginx"),
            ("gloo", None, "linkerd"),
            ("gloo", None, "envoy"),
        ] {
            let mut pairs = vec![
                ("serin.dev/provider", provider),
                ("serin.dev/metrics-provider", metrics),
            ];
            pairs.extend(extra);
            let spec = enabled(&pairs);
            assert_eq!(
                spec.metrics_provider.map(MetricsProvider::as_str),
                Some(metrics),
                "{provider}"
            );
        }
    }

    #[test]
    fn a_refused_provider_does_not_also_refuse_the_metrics_provider() {
        assert_eq!(
            refused(&[
                ("serin.dev/provider", "istio"),
                ("serin.dev/metrics-provider", "traefik"),
            ]),
            [
                r#"serin.dev/provider: "istio" is not supported; allowed: linkerd, smi:v1alpha2, gatewayapi, nginx, gloo"#
            ]
        );
    }

    #[test]
    fn port_missing_from_the_pod_template_is_refused_naming_the_ports() {
        assert_eq!(
            refused(&[("serin.dev/port", "9090")]),
            [
                r#"serin.dev/port: "9090" is not a containerPort of the pod template; it has 9898, 8080"#
            ]
        );
        assert_eq!(enabled(&[("serin.dev/port", "8080")]).port, Some(8080));
    }

    #[test]
    fn port_in_a_template_without_ports_is_refused() {
        let annotations = annotations(&[(ENABLED, "true"), ("serin.dev/port", "80")]);
        let problems = read_annotations("podinfo", &annotations, Some(&PodSpec::default()));
        assert_eq!(
            problems.err().map(|p| p.to_string()).as_deref(),
            Some(
                r#"serin.dev/port: "80" is not a containerPort of the pod template; it declares none"#
            )
        );
    }

    #[test]
    fn port_is_not_checked_without_a_pod_template() {
        let annotations = annotations(&[(ENABLED, "true"), ("serin.dev/port", "80")]);
        let read = read_annotations("podinfo", &annotations, None);
        assert!(matches!(read, Ok(OptIn::Enabled(spec)) if spec.port == Some(80)));
    }

    #[test]
    fn interval_below_one_second_is_refused() {
        assert_eq!(
            refused(&[("serin.dev/interval", "500ms")]),
            [r#"serin.dev/interval: "500ms" must be at least 1s"#]
        );
        assert_eq!(
            enabled(&[("serin.dev/interval", "1s")]).interval,
            Duration::from_secs(1)
        );
    }

    #[test]
    fn metrics_window_below_one_second_and_zero_latency_are_refused() {
        assert_eq!(
            refused(&[
                ("serin.dev/metrics-window", "0"),
                ("serin.dev/latency", "0s")
            ]),
            [
                r#"serin.dev/latency: "0s" must be at least 1ms"#,
                r#"serin.dev/metrics-window: "0" must be at least 1s"#,
            ]
        );
    }

    #[test]
    fn a_latency_below_the_first_bucket_is_refused_naming_the_buckets_when_judged_on_them() {
        let traefik = [
            ("serin.dev/provider", "gatewayapi"),
            ("serin.dev/metrics-provider", "traefik"),
        ];
        let mut pairs = traefik.to_vec();
        pairs.push(("serin.dev/latency", "50ms"));
        assert_eq!(
            refused(&pairs),
            [
                "serin.dev/latency: \"50ms\" is below the smallest bucket of traefik's latency \
                 histogram (100ms), which serin.dev/sequential-checks judges; allowed: at least \
                 100ms (its buckets: 100ms, 300ms, 1200ms, 5000ms), or \
                 serin.dev/sequential-checks: \"false\""
            ]
        );
        // The first bucket itself is a boundary; the per-interval p99 has no such floor.
        pairs.pop();
        pairs.push(("serin.dev/latency", "100ms"));
        assert_eq!(enabled(&pairs).latency, Duration::from_millis(100));
        pairs.pop();
        pairs.extend([
            ("serin.dev/latency", "50ms"),
            ("serin.dev/sequential-checks", "false"),
        ]);
        assert_eq!(enabled(&pairs).latency, Duration::from_millis(50));
        // Linkerd's first bucket is 1ms, so any latency Serin accepts is at or above it.
        assert_eq!(
            enabled(&[("serin.dev/latency", "1ms")]).latency,
            Duration::from_millis(1)
        );
    }

    #[test]
    fn durations_have_upper_bounds() {
        assert_eq!(
            refused(&[
                ("serin.dev/interval", "999999h"),
                ("serin.dev/metrics-window", "2h"),
                ("serin.dev/latency", "61s"),
            ]),
            [
                r#"serin.dev/interval: "999999h" must be at most 1h"#,
                r#"serin.dev/latency: "61s" must be at most 1m"#,
                r#"serin.dev/metrics-window: "2h" must be at most 1h"#,
            ]
        );
        let spec = enabled(&[
            ("serin.dev/interval", "1h"),
            ("serin.dev/metrics-window", "60m"),
            ("serin.dev/latency", "1m"),
        ]);
        assert_eq!(spec.interval, Duration::from_secs(3_600));
    }

    #[test]
    fn nginx_matches_at_most_one_header_rule_and_one_cookie_rule() {
        let nginx = [
            ("serin.dev/provider", "nginx"),
            ("serin.dev/ingress", "public"),
            ("serin.dev/iterations", "5"),
        ];
        let with = |rules: &'static str| {
            let mut pairs = nginx.to_vec();
            pairs.push(("serin.dev/match", rules));
            pairs
        };
        assert_eq!(
            refused(&with("header:x-a=1,header:x-b=2")),
            [
                r#"serin.dev/match: "header:x-a=1,header:x-b=2" has 2 header and 0 cookie rules; ingress-nginx matches at most one of each per canary Ingress"#
            ]
        );
        assert_eq!(refused(&with("cookie:a,cookie:b")).len(), 1);
        assert_eq!(enabled(&with("header:x-a=1,cookie:b")).matches.len(), 2);
        // Gloo and the Gateway API match any number.
        let gloo = [
            ("serin.dev/provider", "gloo"),
            ("serin.dev/iterations", "5"),
            ("serin.dev/match", "header:x-a=1,header:x-b=2"),
        ];
        assert_eq!(enabled(&gloo).matches.len(), 2);
    }

    #[test]
    fn regexes_beyond_re2_and_control_characters_in_header_values_are_refused() {
        let ab = |rules: &str| {
            vec![
                ("serin.dev/provider".to_owned(), "gatewayapi".to_owned()),
                ("serin.dev/iterations".to_owned(), "5".to_owned()),
                ("serin.dev/match".to_owned(), rules.to_owned()),
            ]
        };
        let lines = |rules: &str| {
            let pairs = ab(rules);
            let pairs: Vec<(&str, &str)> = pairs
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            refused(&pairs)
        };
        for (rules, why) in [
            ("header:x~^(?=insider).*$", "look-around"),
            ("header:x~(?<!a)b", "look-around"),
            (r"header:x~(a)\1", "backreferences"),
            ("header:x=a\nb", "control characters"),
            ("header:x=a\u{7f}", "control characters"),
            ("header:x~a\tb", "control characters"),
        ] {
            let found = lines(rules);
            assert_eq!(found.len(), 1, "{rules:?}: {found:?}");
            assert!(found[0].starts_with("serin.dev/match: "), "{}", found[0]);
            assert!(found[0].contains(why), "{rules:?}: {}", found[0]);
            assert!(!found[0].contains('\n'), "{}", found[0]);
        }
        assert!(lines("header:x~(?=a)b,header:y~(?=c)d")[0].contains("(and 1 more rules)"));
        let pairs = ab(r"header:user-agent~^.*(Firefox|Chrome)/\d+\.\d+.*$,header:x=a b");
        let pairs: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(enabled(&pairs).matches.len(), 2);
    }

    #[test]
    fn a_refused_value_does_not_cause_follow_on_problems() {
        // max-weight is malformed: no "step above max weight" line on top of it.
        assert_eq!(
            refused(&[
                ("serin.dev/max-weight", "0"),
                ("serin.dev/step-weight", "20")
            ]),
            [r#"serin.dev/max-weight: "0" must be an integer from 1 to 100"#]
        );
        // provider is malformed: no "match needs a provider" line on top of it.
        assert_eq!(
            refused(&[
                ("serin.dev/provider", "istio"),
                ("serin.dev/iterations", "5"),
                ("serin.dev/match", "cookie:canary"),
            ])
            .len(),
            1
        );
    }
}
