//! Arbitrary annotation maps (keys biased towards `serin.dev/`, values towards the shapes the
//! parser expects) and pod templates through `spec::read_annotations`. Nothing may panic,
//! and an accepted configuration must read back to itself from `defaulted_annotations`, the
//! annotations the mutating webhook writes.

#![no_main]

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, ContainerPort, PodSpec};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use serin::spec::{self, OptIn};

const KNOWN: [&str; 21] = [
    "enabled",
    "provider",
    "port",
    "service",
    "ingress",
    "gateway",
    "hosts",
    "interval",
    "threshold",
    "step-weight",
    "step-weights",
    "max-weight",
    "iterations",
    "match",
    "success-rate",
    "latency",
    "metrics-provider",
    "metrics-window",
    "analysis",
    "skip-analysis",
    "desired-replicas",
];

#[derive(Debug, Arbitrary)]
enum Key {
    Known(u8),
    Ours(String),
    Other(String),
}

impl Key {
    fn text(self) -> String {
        match self {
            Key::Known(i) => format!("{}{}", spec::PREFIX, KNOWN[usize::from(i) % KNOWN.len()]),
            Key::Ours(rest) => format!("{}{rest}", spec::PREFIX),
            Key::Other(key) => key,
        }
    }
}

#[derive(Debug, Arbitrary)]
enum Value {
    Text(String),
    Integer(i64),
    Number(f64),
    Bool(bool),
    Duration(u32, u8),
    Weights(Vec<u8>),
    Provider(u8),
}

impl Value {
    fn text(self) -> String {
        match self {
            Value::Text(text) => text,
            Value::Integer(n) => n.to_string(),
            Value::Number(x) => x.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Duration(n, unit) => {
                format!("{n}{}", ["ms", "s", "m", "h"][usize::from(unit) % 4])
            }
            Value::Weights(list) => list.iter().map(u8::to_string).collect::<Vec<_>>().join(","),
            Value::Provider(i) => ["linkerd", "smi:v1alpha2", "gatewayapi", "nginx", "gloo"]
                [usize::from(i) % 5]
                .to_owned(),
        }
    }
}

#[derive(Debug, Arbitrary)]
struct Input {
    name: String,
    /// Opt in before the other annotations are applied, so accepted configurations (and the
    /// round trip) are reached often.
    opted_in: bool,
    annotations: Vec<(Key, Value)>,
    /// Container ports per container; no pod template at all when `None`.
    pod: Option<Vec<Vec<i32>>>,
}

fuzz_target!(|input: Input| {
    let mut annotations = BTreeMap::new();
    if input.opted_in {
        annotations.insert(spec::ENABLED.to_owned(), "true".to_owned());
    }
    annotations.extend(
        input
            .annotations
            .into_iter()
            .map(|(key, value)| (key.text(), value.text())),
    );
    let pod = input.pod.map(|containers| PodSpec {
        containers: containers
            .into_iter()
            .enumerate()
            .map(|(i, ports)| Container {
                name: format!("c{i}"),
                ports: Some(
                    ports
                        .into_iter()
                        .map(|container_port| ContainerPort {
                            container_port,
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    });

    let Ok(OptIn::Enabled(canary)) =
        spec::read_annotations(&input.name, &annotations, pod.as_ref())
    else {
        return;
    };
    let written = spec::defaulted_annotations(&canary);
    match spec::read_annotations(&input.name, &written, pod.as_ref()) {
        Ok(OptIn::Enabled(again)) => assert_eq!(again, canary, "round trip through {written:?}"),
        other => panic!("defaulted annotations {written:?} read back as {other:?}"),
    }
});
