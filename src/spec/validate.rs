//! Semantic rules that a JSON Schema cannot say: between annotations (steps and max weight,
//! provider and `match`, `ingress`, `gateway`), against the pod template (the port exists), and
//! minimums on durations. Each rule skips keys already refused, so one mistake is one line.

use k8s_openapi::api::core::v1::PodSpec;

use super::Problem;
use super::annotations::{Key, Reading};
use super::duration::Duration;
use super::model::Provider;

const MIN_INTERVAL: Duration = Duration::from_secs(1);
const MIN_METRICS_WINDOW: Duration = Duration::from_secs(1);
const MIN_LATENCY: Duration = Duration::from_millis(1);

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
    if let Some(step) = spec
        .step_weight
        .filter(|_| usable(&[Key::StepWeight, Key::MaxWeight]))
        && step > spec.max_weight
    {
        refuse(
            Key::StepWeight,
            format!(
                "{} must not be above {} ({})",
                reading.shown(Key::StepWeight),
                Key::MaxWeight.annotation(),
                spec.max_weight
            ),
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
                format!(
                    "{} must end at or below {} ({})",
                    reading.shown(Key::StepWeights),
                    Key::MaxWeight.annotation(),
                    spec.max_weight
                ),
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

    for (key, value, min) in [
        (Key::Interval, spec.interval, MIN_INTERVAL),
        (Key::MetricsWindow, spec.metrics_window, MIN_METRICS_WINDOW),
        (Key::Latency, spec.latency, MIN_LATENCY),
    ] {
        if value < min && usable(&[key]) {
            refuse(
                key,
                format!("{} must be at least {min}", reading.shown(key)),
            );
        }
    }

    for (key, message) in found {
        reading.refuse(key, Problem::new(key.annotation(), message));
    }
}

fn only_with(needed: Provider, provider: Provider) -> String {
    format!(
        "only applies with {} {needed}, not {provider}",
        Key::Provider.annotation()
    )
}
