//! The canary model and the `serin.dev/` annotations that configure it.
//!
//! Pure code: admission, the controller and `serin check` all read a Deployment through
//! [`read_deployment`] / [`read_annotations`], so they cannot disagree. Reading is a pipeline:
//! parse each annotation into the typed model (`annotations`), check the result against the
//! JSON Schema derived from the same types as the `Canary` CRD (`schema`), then apply the
//! rules between annotations (`validate`). Every mistake is reported at once, one line each.

mod annotations;
mod builtin;
mod configs;
mod duration;
mod model;
mod names;
mod schema;
mod validate;
mod workload;

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::PodSpec;

pub use builtin::{Builtin, LATENCY_QUANTILE};
pub(crate) use configs::visit_config_refs;
pub use configs::{ConfigKind, ConfigRef, config_refs};
pub use duration::{Duration, InvalidDuration, Limits};
pub use model::{
    CanarySpec, Compare, DEFAULT_AFFINITY_MAX_AGE, GatewayRef, MatchRule, MetricsProvider,
    Provider, Strategy, UnknownMetricsProvider, UnknownProvider, default_compare_margin,
    default_confidence, sequential_by_default,
};
pub use schema::annotation_schema;
pub use workload::{IDLE_NODE_LABEL, Workload, WorkloadKind, object_reference};

use annotations::Key;

pub const PREFIX: &str = "serin.dev/";
pub const ENABLED: &str = "serin.dev/enabled";
/// Written by the mutating webhook: the replica count requested for the primary; integer >= 0.
pub const DESIRED_REPLICAS: &str = "serin.dev/desired-replicas";
/// Written by the controller on the `-primary` Deployment: the revision its template was
/// copied from. Known here so that the primary's annotations are never an error.
pub const REVISION: &str = "serin.dev/revision";
/// Label put on opted-in Deployments so the controller can watch by label selector.
pub const MANAGED_LABEL: &str = "serin.dev/canary";

/// Suffix of the primary Deployment, Service, HPA and config copies, and of the values of the
/// primary pods' selector labels. Here, beside the model, because the names check measures
/// the names it makes; [`crate::release`] builds them.
pub const PRIMARY_SUFFIX: &str = "-primary";

/// Suffix of the Service that selects the canary pods.
pub const CANARY_SUFFIX: &str = "-canary";

/// One mistake in the annotations, for the person who wrote them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The annotation at fault, e.g. `serin.dev/step-weight`.
    pub field: String,
    pub message: String,
}

impl Problem {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Every mistake found, in annotation order; displayed one per line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    pub fn iter(&self) -> std::slice::Iter<'_, Problem> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

impl<'a> IntoIterator for &'a Problems {
    type Item = &'a Problem;
    type IntoIter = std::slice::Iter<'a, Problem>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// What a Deployment's annotations say about Serin.
#[derive(Clone, Debug, PartialEq)]
#[expect(
    clippy::large_enum_variant,
    reason = "made once per admission request and matched at once; a Box would only add noise"
)]
pub enum OptIn {
    /// No serin.dev/ annotation at all: Serin has nothing to say.
    Absent,
    /// serin.dev/ annotations present but serin.dev/enabled is not "true" ("false" or
    /// missing): still validated, no release machinery.
    Disabled,
    /// Opted in, with the effective configuration (defaults filled).
    Enabled(CanarySpec),
}

/// Reads and validates the serin.dev/ annotations of a Deployment, returning EVERY mistake at
/// once. An opted-in Deployment must also leave room for the names Serin derives from it
/// (`<name>-primary`, its selector labels, the Services; see `names`).
pub fn read_deployment(deploy: &Deployment) -> Result<OptIn, Problems> {
    match &deploy.metadata.annotations {
        Some(annotations) => read_deployment_with(deploy, annotations),
        None => Ok(OptIn::Absent),
    }
}

/// [`read_deployment`] with `annotations` read in place of the Deployment's own (admission
/// fills in a `CanaryPolicy`'s defaults first).
pub fn read_deployment_with(
    deploy: &Deployment,
    annotations: &BTreeMap<String, String>,
) -> Result<OptIn, Problems> {
    read_workload_with(deploy, annotations)
}

/// [`read_deployment`] for any [`Workload`] (a Deployment or a DaemonSet).
pub fn read_workload(workload: &dyn Workload) -> Result<OptIn, Problems> {
    match &workload.meta().annotations {
        Some(annotations) => read_workload_with(workload, annotations),
        None => Ok(OptIn::Absent),
    }
}

/// [`read_deployment_with`] for any [`Workload`]. A DaemonSet runs one pod per node and has
/// no replica count: what sizes one (`serin.dev/desired-replicas`) is refused on it.
pub fn read_workload_with(
    workload: &dyn Workload,
    annotations: &BTreeMap<String, String>,
) -> Result<OptIn, Problems> {
    let name = workload.meta().name.as_deref().unwrap_or_default();
    let pod = workload.template().and_then(|t| t.spec.as_ref());
    let read = read(name, annotations, pod, Some(workload));
    if workload.kind().has_replicas() || !annotations.contains_key(DESIRED_REPLICAS) {
        return read;
    }
    let problem = Problem {
        field: DESIRED_REPLICAS.to_owned(),
        message: format!(
            "a {} runs one pod per eligible node and has no replicas to request; remove \
             {DESIRED_REPLICAS}",
            workload.kind()
        ),
    };
    match read {
        Ok(_) => Err(Problems(vec![problem])),
        Err(Problems(mut problems)) => {
            problems.push(problem);
            problems.sort_by(|a, b| a.field.cmp(&b.field));
            Err(Problems(problems))
        }
    }
}

/// Same from parts (for `serin check`, policies, tests): the Deployment name (the default
/// Service), its annotations, and the pod template's spec (the default port, and the check
/// that `serin.dev/port` exists; skipped when `pod` is `None`). Of the derived names, only
/// those the annotations make are checked.
pub fn read_annotations(
    name: &str,
    annotations: &BTreeMap<String, String>,
    pod: Option<&PodSpec>,
) -> Result<OptIn, Problems> {
    read(name, annotations, pod, None)
}

fn read(
    name: &str,
    annotations: &BTreeMap<String, String>,
    pod: Option<&PodSpec>,
    workload: Option<&dyn Workload>,
) -> Result<OptIn, Problems> {
    let mut ours = annotations
        .iter()
        .filter(|(key, _)| key.starts_with(PREFIX))
        .map(|(key, value)| (key.as_str(), value.as_str()))
        .peekable();
    if ours.peek().is_none() {
        return Ok(OptIn::Absent);
    }
    let ports = pod.map(validate::container_ports);
    let first_port = ports.as_ref().and_then(|p| p.first().copied());
    let mut reading = annotations::read(ours, CanarySpec::defaults(name.to_owned(), first_port));
    schema::check(&mut reading);
    annotations::fill_derived_defaults(&mut reading);
    validate::check(&mut reading, ports.as_deref());
    if reading.enabled {
        names::check(&mut reading, workload);
    }

    if !reading.problems.is_empty() || reading.unlisted_unknown > 0 {
        // Stable: problems of one annotation stay in the order they were found.
        reading.problems.sort_by(|a, b| a.field.cmp(&b.field));
        if reading.unlisted_unknown > 0 {
            let count = reading.unlisted_unknown;
            reading.problems.push(annotations::unlisted_unknown(count));
        }
        return Err(Problems(reading.problems));
    }
    Ok(match reading.enabled {
        true => OptIn::Enabled(reading.spec),
        false => OptIn::Disabled,
    })
}

/// The configuration annotations in canonical form (every key, defaults included, and
/// `serin.dev/enabled: "true"`), which the mutating webhook writes back so defaults become
/// explicit. `read_annotations` of the result gives `spec` back.
pub fn defaulted_annotations(spec: &CanarySpec) -> BTreeMap<String, String> {
    Key::ALL
        .into_iter()
        .filter_map(|key| {
            annotations::value_of(key, spec).map(|value| (key.annotation().to_owned(), value))
        })
        .collect()
}

/// Helpers shared by the tests of the submodules: read annotations the way admission does.
#[cfg(test)]
mod testing {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, ContainerPort};

    /// A pod template with a sidecar without ports and an app exposing 9898 and 8080.
    pub(super) fn pod() -> PodSpec {
        let container = |name: &str, ports: &[i32]| Container {
            name: name.to_owned(),
            ports: (!ports.is_empty()).then(|| {
                ports
                    .iter()
                    .map(|p| ContainerPort {
                        container_port: *p,
                        ..Default::default()
                    })
                    .collect()
            }),
            ..Default::default()
        };
        PodSpec {
            containers: vec![container("proxy", &[]), container("app", &[9898, 8080])],
            ..Default::default()
        }
    }

    pub(super) fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// Reads `pairs` as the annotations of Deployment `podinfo` with [`pod`].
    pub(super) fn read(pairs: &[(&str, &str)]) -> Result<OptIn, Problems> {
        read_annotations("podinfo", &annotations(pairs), Some(&pod()))
    }

    /// The effective spec of an opted-in Deployment with these extra annotations.
    pub(super) fn enabled(pairs: &[(&str, &str)]) -> CanarySpec {
        let mut all = vec![(ENABLED, "true")];
        all.extend_from_slice(pairs);
        match read(&all) {
            Ok(OptIn::Enabled(spec)) => spec,
            other => panic!("expected an opted-in spec, got {other:?}"),
        }
    }

    /// The problem lines for these annotations (with `serin.dev/enabled: "true"`).
    pub(super) fn refused(pairs: &[(&str, &str)]) -> Vec<String> {
        let mut all = vec![(ENABLED, "true")];
        all.extend_from_slice(pairs);
        match read(&all) {
            Err(problems) => problems.iter().map(ToString::to_string).collect(),
            Ok(ok) => panic!("expected problems, got {ok:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::{
        CanarySpec, Deployment, ENABLED, OptIn, PREFIX, Problem, Problems, annotations,
        read_annotations, read_deployment,
    };
    use k8s_openapi::api::apps::v1::DeploymentSpec;
    use k8s_openapi::api::core::v1::PodTemplateSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use proptest::prelude::*;

    #[test]
    fn deployment_without_serin_annotations_is_absent() {
        assert_eq!(
            read(&[("app.kubernetes.io/name", "podinfo")]),
            Ok(OptIn::Absent)
        );
        assert_eq!(
            read(&[("simulate.serin.dev/error-rate", "0.5")]),
            Ok(OptIn::Absent)
        );
    }

    #[test]
    fn enabled_false_is_disabled() {
        assert_eq!(read(&[(ENABLED, "false")]), Ok(OptIn::Disabled));
    }

    #[test]
    fn annotations_without_enabled_are_disabled_but_still_validated() {
        assert_eq!(read(&[("serin.dev/interval", "30s")]), Ok(OptIn::Disabled));
        let problems = read(&[("serin.dev/interval", "30")])
            .err()
            .map(|p| p.to_string());
        assert_eq!(
            problems.as_deref(),
            Some(r#"serin.dev/interval: "30" must be a duration such as 30s, 1m or 1m30s"#)
        );
    }

    #[test]
    fn enabled_alone_gets_every_default() {
        let expected = CanarySpec::defaults("podinfo".into(), Some(9898));
        assert_eq!(enabled(&[]), expected);
        assert_eq!(expected.weights(), vec![10, 20, 30, 40, 50]);
    }

    #[test]
    fn every_mistake_is_reported_at_once() {
        let lines = refused(&[
            ("serin.dev/step-weight", "0"),
            ("serin.dev/interval", "5x"),
            ("serin.dev/provider", "istio"),
            ("serin.dev/stepweights", "5,10"),
        ]);
        assert_eq!(
            lines,
            vec![
                r#"serin.dev/interval: "5x" must be a duration such as 30s, 1m or 1m30s"#,
                r#"serin.dev/provider: "istio" is not supported; allowed: linkerd, smi:v1alpha2, gatewayapi, nginx, gloo"#,
                r#"serin.dev/step-weight: "0" must be an integer from 1 to 100"#,
                "serin.dev/stepweights: unknown annotation; did you mean serin.dev/step-weights?",
            ]
        );
    }

    #[test]
    fn problems_display_one_per_line() {
        let problems = Problems(vec![Problem::new("a", "x"), Problem::new("b", "y")]);
        assert_eq!(problems.to_string(), "a: x\nb: y");
        assert_eq!(problems.len(), 2);
    }

    #[test]
    fn a_value_with_a_newline_still_makes_one_line() {
        let lines = refused(&[("serin.dev/threshold", "5\nserin.dev/fake: injected")]);
        assert_eq!(lines.len(), 1);
        assert!(!lines[0].contains('\n'), "{}", lines[0]);
    }

    #[test]
    fn read_deployment_uses_name_annotations_and_pod_template() {
        let deploy = Deployment {
            metadata: ObjectMeta {
                name: Some("podinfo".into()),
                annotations: Some(annotations(&[
                    (ENABLED, "true"),
                    ("serin.dev/port", "8080"),
                ])),
                ..Default::default()
            },
            spec: Some(DeploymentSpec {
                template: PodTemplateSpec {
                    spec: Some(pod()),
                    ..Default::default()
                },
                ..Default::default()
            }),
            ..Default::default()
        };
        let spec = CanarySpec {
            port: Some(8080),
            ..CanarySpec::defaults("podinfo".into(), Some(9898))
        };
        assert_eq!(read_deployment(&deploy), Ok(OptIn::Enabled(spec)));
        assert_eq!(read_deployment(&Deployment::default()), Ok(OptIn::Absent));
    }

    /// Keys that are mostly near the real ones, so values reach every parser and rule.
    fn any_key() -> impl Strategy<Value = String> {
        let known = annotations::Key::ALL
            .map(|k| k.annotation().to_owned())
            .to_vec();
        prop_oneof![
            3 => proptest::sample::select(known),
            1 => "[a-z-]{0,14}".prop_map(|s| format!("{PREFIX}{s}")),
            1 => "\\PC{0,20}",
        ]
    }

    fn any_value() -> impl Strategy<Value = String> {
        prop_oneof![
            "true|false|-?[0-9]{1,12}|[0-9]{1,3}(ms|s|m|h)|linkerd|nginx|gatewayapi",
            "([0-9]{1,3},){0,4}[0-9]{1,3}",
            "(header:[a-z ]{0,4}[=~][a-z(\\[,]{0,4}|cookie:[a-z]{0,4}|x)(,(header|cookie):[a-z=~]{0,6}){0,2}",
            "[a-z.]{0,8}/[a-z.]{0,8}",
            "(\\*\\.)?[a-z0-9.:-]{0,10}(,(\\*\\.)?[a-z0-9.:-]{0,10}){0,3}",
            "\\PC{0,30}",
        ]
    }

    proptest! {
        #[test]
        fn arbitrary_annotations_never_panic(
            pairs in proptest::collection::btree_map(any_key(), any_value(), 0..8),
            with_pod in any::<bool>(),
            name in "[a-z.]{0,10}",
        ) {
            let pod = pod();
            let result = read_annotations(&name, &pairs, with_pod.then_some(&pod));
            if let Err(problems) = result {
                prop_assert!(!problems.is_empty());
                for problem in &problems {
                    prop_assert!(!problem.to_string().contains('\n'));
                }
            }
        }
    }
}
