//! `serin check -f FILE [--policy FILE]`: the admission validation, offline, for CI pipelines
//! and pre-commit hooks. Reads multi-document YAML (and `List` objects), checks every
//! `apps/v1` Deployment with the same functions the webhook calls
//! ([`crate::admission::deployments::judge`]), and reports each mistake on its own line.
//!
//! With `--policy`, the CanaryPolicy objects of those files (either version) apply as they
//! would in the cluster. Namespace labels come from Namespace objects in the checked files
//! (otherwise only `kubernetes.io/metadata.name`), and a named AnalysisTemplate from the
//! checked files when it is there (otherwise its checks are skipped: offline, Serin cannot
//! know whether it exists). An AnalysisTemplate in the files is itself checked as its
//! admission webhook checks it ([`crate::crd::AnalysisTemplateSpec::problems`]).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::spec::{Workload, WorkloadKind};
use clap::Args;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;
use serde_json::Value;

use crate::admission::deployments::{Judgement, PolicyView, Template, judge};
use crate::conversion::{self, Version};
use crate::crd::{AnalysisTemplate, CanaryPolicy};
use crate::policy::{self, NamedPolicy, Names, Occupant, Subject};
use crate::spec::OptIn;

/// What one checked document said.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// An opted-in Deployment whose configuration is valid (with `warn` policy findings).
    OptedIn { warnings: Vec<String> },
    /// A Deployment without Serin configuration (or with `serin.dev/enabled: "false"`).
    NotOptedIn { warnings: Vec<String> },
    /// Problems, one line each.
    Invalid(Vec<String>),
}

/// One finding: which object (or document) and what was found.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// `Deployment NAMESPACE/NAME` or `document N` when the object could not be read.
    pub object: String,
    pub verdict: Verdict,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (summary, lines) = match &self.verdict {
            Verdict::OptedIn { warnings } => ("ok (canary release enabled)", warnings),
            Verdict::NotOptedIn { warnings } => ("ok (not opted in)", warnings),
            Verdict::Invalid(lines) => ("", lines),
        };
        if !summary.is_empty() {
            write!(f, "{}: {summary}", self.object)?;
        }
        for (i, line) in lines.iter().enumerate() {
            if i > 0 || !summary.is_empty() {
                writeln!(f)?;
            }
            match &self.verdict {
                Verdict::Invalid(_) => write!(f, "{}: {line}", self.object)?,
                _ => write!(f, "{}: warning: {line}", self.object)?,
            }
        }
        Ok(())
    }
}

impl Finding {
    pub fn is_error(&self) -> bool {
        matches!(self.verdict, Verdict::Invalid(_))
    }

    fn invalid(object: String, line: String) -> Self {
        Finding {
            object,
            verdict: Verdict::Invalid(vec![line]),
        }
    }
}

/// The objects of one input, flattened out of `List`s, each with a label for messages; or
/// the finding that the text is not YAML.
fn documents(text: &str) -> (Vec<(String, Value)>, Option<Finding>) {
    fn flatten(label: String, value: Value, out: &mut Vec<(String, Value)>) {
        let is_list = value.get("apiVersion").and_then(Value::as_str) == Some("v1")
            && value.get("kind").and_then(Value::as_str) == Some("List");
        match (is_list, value.get("items")) {
            (true, Some(Value::Array(items))) => {
                for (i, item) in items.iter().enumerate() {
                    flatten(format!("{label} item {}", i + 1), item.clone(), out);
                }
            }
            _ => out.push((label, value)),
        }
    }
    let mut out = Vec::new();
    for (index, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let label = format!("document {}", index + 1);
        match Value::deserialize(document) {
            Ok(Value::Null) => {}
            Ok(value) => flatten(label, value, &mut out),
            Err(e) => {
                // The YAML stream cannot be resynchronised after a syntax error (and the
                // iterator would keep yielding it), so stop here.
                return (
                    out,
                    Some(Finding::invalid(label, format!("not valid YAML: {e}"))),
                );
            }
        }
    }
    (out, None)
}

fn kind_of(value: &Value) -> (&str, &str) {
    let text = |key| value.get(key).and_then(Value::as_str).unwrap_or_default();
    (text("apiVersion"), text("kind"))
}

fn name_of(value: &Value) -> (String, String) {
    let text = |pointer| value.pointer(pointer).and_then(Value::as_str);
    (
        text("/metadata/namespace").unwrap_or("default").to_owned(),
        text("/metadata/name").unwrap_or("(unnamed)").to_owned(),
    )
}

/// A Serin object of either version, as `v1beta1`.
fn stored<K: serde::de::DeserializeOwned>(value: &Value) -> Result<K, String> {
    let converted =
        conversion::convert_object(value.clone(), Version::V1beta1).map_err(|e| e.to_string())?;
    serde_json::from_value(converted).map_err(|e| e.to_string())
}

/// The CanaryPolicy objects in a policy file, and a finding for each one that is broken
/// (the same checks as the webhook's).
pub fn load_policies(text: &str) -> (Vec<NamedPolicy>, Vec<Finding>) {
    let (documents, broken) = documents(text);
    let mut policies = Vec::new();
    let mut findings: Vec<Finding> = broken.into_iter().collect();
    for (label, value) in documents {
        let (api_version, kind) = kind_of(&value);
        if kind != "CanaryPolicy" || !api_version.starts_with("serin.dev/") {
            continue;
        }
        let (_, name) = name_of(&value);
        let object = format!("CanaryPolicy {name}");
        match stored::<CanaryPolicy>(&value) {
            Err(e) => findings.push(Finding::invalid(format!("{object} ({label})"), e)),
            Ok(policy) => {
                let problems = policy.spec.policy.problems();
                if problems.is_empty() {
                    policies.push(NamedPolicy {
                        name,
                        spec: policy.spec.policy,
                    });
                } else {
                    findings.push(Finding {
                        object,
                        verdict: Verdict::Invalid(
                            problems.iter().map(ToString::to_string).collect(),
                        ),
                    });
                }
            }
        }
    }
    (policies, findings)
}

/// Checks every Deployment in a multi-document YAML text, without policies.
pub fn check_yaml(text: &str) -> Vec<Finding> {
    check_inputs(&[text], &[])
        .into_iter()
        .map(|(_, f)| f)
        .collect()
}

/// Checks every Deployment of several inputs under `policies`; each finding comes with the
/// index of its input. Namespaces and AnalysisTemplates of any input are seen by all.
pub fn check_inputs(texts: &[&str], policies: &[NamedPolicy]) -> Vec<(usize, Finding)> {
    let mut findings = Vec::new();
    let mut all = Vec::new();
    for (input, text) in texts.iter().enumerate() {
        let (documents, broken) = documents(text);
        findings.extend(broken.map(|f| (input, f)));
        all.extend(
            documents
                .into_iter()
                .map(|(label, value)| (input, label, value)),
        );
    }
    let mut namespaces: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut templates = BTreeMap::new();
    // What the checked files hold under the names an opt-in derives, per namespace: the
    // cluster's objects are not known offline, but two Deployments of one release claiming
    // the same Service, or a Service of the user's named like a derived one, are.
    let mut names: BTreeMap<String, Names> = BTreeMap::new();
    for (_, _, value) in &all {
        let kind = match kind_of(value) {
            ("apps/v1", "Deployment") => "Deployment",
            ("v1", "Service") => "Service",
            _ => continue,
        };
        let Some(meta) = value
            .get("metadata")
            .and_then(|m| serde_json::from_value::<ObjectMeta>(m.clone()).ok())
        else {
            continue;
        };
        let in_namespace = names.entry(name_of(value).0).or_default();
        in_namespace.objects.push(Occupant::of(kind, &meta));
        if kind == "Deployment"
            && let Ok(deploy) = serde_json::from_value::<Deployment>(value.clone())
            && let Ok(OptIn::Enabled(canary)) = crate::spec::read_deployment(&deploy)
        {
            in_namespace
                .services
                .push((name_of(value).1, canary.service));
        }
    }
    for (input, label, value) in &all {
        match kind_of(value) {
            ("v1", "Namespace") => {
                let labels = value
                    .pointer("/metadata/labels")
                    .and_then(|l| serde_json::from_value(l.clone()).ok())
                    .unwrap_or_default();
                namespaces.insert(name_of(value).1, labels);
            }
            (api_version, "AnalysisTemplate") if api_version.starts_with("serin.dev/") => {
                // The template itself, as its admission webhook judges it.
                let (namespace, name) = name_of(value);
                let object = format!("AnalysisTemplate {namespace}/{name}");
                match stored::<AnalysisTemplate>(value) {
                    Ok(template) => {
                        let problems = template.spec.problems();
                        if !problems.is_empty() {
                            let lines = problems.iter().map(ToString::to_string).collect();
                            let verdict = Verdict::Invalid(lines);
                            findings.push((*input, Finding { object, verdict }));
                        }
                        templates.insert(name_of(value), template.spec);
                    }
                    Err(e) => {
                        findings.push((*input, Finding::invalid(format!("{object} ({label})"), e)))
                    }
                }
            }
            _ => {}
        }
    }
    for (input, label, value) in all {
        let kind = match kind_of(&value) {
            ("apps/v1", "Deployment") => WorkloadKind::Deployment,
            ("apps/v1", "DaemonSet") => WorkloadKind::DaemonSet,
            _ => continue,
        };
        let (namespace, name) = name_of(&value);
        let object = match value.pointer("/metadata/namespace") {
            Some(_) => format!("{kind} {namespace}/{name}"),
            None => format!("{kind} {name}"),
        };
        let decoded: Result<Box<dyn Workload>, _> = match kind {
            WorkloadKind::Deployment => serde_json::from_value::<Deployment>(value)
                .map(|d| Box::new(d) as Box<dyn Workload>),
            WorkloadKind::DaemonSet => {
                serde_json::from_value::<DaemonSet>(value).map(|d| Box::new(d) as Box<dyn Workload>)
            }
        };
        let deploy = match decoded {
            Ok(deploy) => deploy,
            Err(e) => {
                let line = format!("not a valid apps/v1 {kind}: {e}");
                findings.push((input, Finding::invalid(format!("{object} ({label})"), line)));
                continue;
            }
        };
        let deploy = deploy.as_ref();
        let namespace_labels = namespaces.get(&namespace).cloned().unwrap_or_else(|| {
            BTreeMap::from([("kubernetes.io/metadata.name".to_owned(), namespace.clone())])
        });
        let labels = deploy.meta().labels.clone().unwrap_or_default();
        let subject = Subject {
            namespace_labels: &namespace_labels,
            labels: &labels,
        };
        let covering: Vec<NamedPolicy> = policy::applicable(policies, subject)
            .into_iter()
            .cloned()
            .collect();
        let named = deploy
            .meta()
            .annotations
            .as_ref()
            .and_then(|a| a.get("serin.dev/analysis"))
            .cloned();
        let template = named
            .and_then(|t| templates.get(&(namespace.clone(), t)).cloned())
            .map_or(Template::NotLooked, Template::Found);
        let view = PolicyView {
            policies: covering,
            template,
            names: Some(names.get(&namespace).cloned().unwrap_or_default()),
        };
        let verdict = match judge(deploy, &namespace, &view) {
            Judgement::Admitted {
                opt_in: OptIn::Enabled(_),
                warnings,
            } => Verdict::OptedIn { warnings },
            Judgement::Admitted { warnings, .. } => Verdict::NotOptedIn { warnings },
            Judgement::Refused { lines, .. } => Verdict::Invalid(lines),
        };
        findings.push((input, Finding { object, verdict }));
    }
    findings
}

/// The flags of `serin check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Manifest file (multi-document YAML); `-` reads standard input.
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<PathBuf>,
    /// CanaryPolicy objects (either version) to apply as the cluster would.
    #[arg(long = "policy", value_name = "FILE")]
    pub policies: Vec<PathBuf>,
}

/// Runs `serin check`: prints every finding as `FILE: line` and a summary on stderr; exit 1
/// when any object (or file) has a mistake.
pub fn run(args: &CheckArgs) -> ExitCode {
    fn read(file: &std::path::Path) -> std::io::Result<String> {
        match file.as_os_str() == "-" {
            true => std::io::read_to_string(std::io::stdin()),
            false => std::fs::read_to_string(file),
        }
    }
    let mut errors = 0;
    let mut checked = 0;
    let mut policies = Vec::new();
    for file in &args.policies {
        let text = match read(file) {
            Ok(text) => text,
            Err(e) => {
                eprintln!("{}: cannot read: {e}", file.display());
                errors += 1;
                continue;
            }
        };
        let (loaded, broken) = load_policies(&text);
        if loaded.is_empty() && broken.is_empty() {
            eprintln!("{}: no CanaryPolicy in this file", file.display());
            errors += 1;
        }
        policies.extend(loaded);
        for finding in broken {
            errors += 1;
            for line in finding.to_string().lines() {
                println!("{}: {line}", file.display());
            }
        }
    }
    let mut inputs = Vec::new();
    for file in &args.files {
        match read(file) {
            Ok(text) => inputs.push((file, text)),
            Err(e) => {
                eprintln!("{}: cannot read: {e}", file.display());
                errors += 1;
            }
        }
    }
    let texts: Vec<&str> = inputs.iter().map(|(_, text)| text.as_str()).collect();
    for (input, finding) in check_inputs(&texts, &policies) {
        checked += 1;
        if finding.is_error() {
            errors += 1;
        }
        for line in finding.to_string().lines() {
            println!("{}: {line}", inputs[input].0.display());
        }
    }
    if errors > 0 {
        eprintln!("serin check: {errors} of {checked} objects have mistakes");
        ExitCode::FAILURE
    } else {
        eprintln!("serin check: {checked} objects ok");
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
  annotations:
    serin.dev/enabled: "true"
    serin.dev/step-weight: "20"
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: app, image: "app:1", ports: [{containerPort: 8080}]}]
"#;

    #[test]
    fn a_valid_opted_in_deployment_passes() {
        let findings = check_yaml(GOOD);
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].verdict, Verdict::OptedIn { warnings: vec![] });
        assert_eq!(findings[0].object, "Deployment shop/web");
    }

    #[test]
    fn daemonsets_are_checked_like_deployments_and_refused_a_replica_count() {
        let daemonset = GOOD.replace("kind: Deployment", "kind: DaemonSet");
        let findings = check_yaml(&daemonset);
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert_eq!(findings[0].object, "DaemonSet shop/web");
        assert!(
            matches!(findings[0].verdict, Verdict::OptedIn { .. }),
            "{findings:?}"
        );
        let sized = daemonset.replace(
            "    serin.dev/step-weight: \"20\"",
            "    serin.dev/step-weight: \"20\"\n    serin.dev/desired-replicas: \"3\"",
        );
        let findings = check_yaml(&sized);
        let Verdict::Invalid(lines) = &findings[0].verdict else {
            panic!("a DaemonSet with a replica count passed: {findings:?}");
        };
        assert!(
            lines[0].starts_with("serin.dev/desired-replicas"),
            "{lines:?}"
        );
    }

    #[test]
    fn every_mistake_of_every_document_is_reported() {
        let bad = GOOD
            .replace(
                r#"serin.dev/step-weight: "20""#,
                r#"serin.dev/step-weight: "0""#,
            )
            .replace(
                r#"serin.dev/enabled: "true""#,
                "serin.dev/enabled: \"true\"\n    serin.dev/interval: \"soon\"",
            );
        let text = format!(
            "{bad}\n---\n{GOOD}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: x}}\n"
        );
        let findings = check_yaml(&text);
        assert_eq!(findings.len(), 2, "{findings:?}");
        let Verdict::Invalid(lines) = &findings[0].verdict else {
            panic!("first Deployment should be refused: {findings:?}");
        };
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("serin.dev/step-weight:")),
            "{lines:?}"
        );
        assert!(
            lines.iter().any(|l| l.starts_with("serin.dev/interval:")),
            "{lines:?}"
        );
        assert_eq!(findings[1].verdict, Verdict::OptedIn { warnings: vec![] });
    }

    #[test]
    fn derived_names_too_long_are_reported_naming_the_derived_name_and_its_length() {
        let name = "w".repeat(63);
        let long = GOOD.replace("name: web\n", &format!("name: {name}\n"));
        let findings = check_yaml(&long);
        let Verdict::Invalid(lines) = &findings[0].verdict else {
            panic!("refused: {findings:?}");
        };
        assert!(
            lines.contains(&format!(
                "serin.dev/service: {name:?} (default) makes Service \"{name}-primary\" 71 \
                 characters long, above the limit of 63 for Service names"
            )),
            "{lines:?}"
        );
        // A DaemonSet's name is held to the same limits, the primary named as a DaemonSet.
        let findings = check_yaml(&long.replace("kind: Deployment", "kind: DaemonSet"));
        let Verdict::Invalid(lines) = &findings[0].verdict else {
            panic!("refused: {findings:?}");
        };
        assert!(
            lines.iter().any(|l| l.starts_with(&format!(
                "metadata.name: {name:?} makes the primary DaemonSet \"{name}-primary\" 71"
            ))),
            "{lines:?}"
        );
    }

    #[test]
    fn two_deployments_of_the_checked_files_claiming_one_service_are_reported() {
        let other = GOOD.replace("name: web\n", "name: web-v2\n").replace(
            "serin.dev/enabled: \"true\"",
            "serin.dev/enabled: \"true\"\n    serin.dev/service: web",
        );
        let findings = check_yaml(&format!("{GOOD}\n---\n{other}"));
        assert_eq!(findings.len(), 2, "{findings:?}");
        for (finding, rival) in findings.iter().zip(["web-v2", "web"]) {
            let Verdict::Invalid(lines) = &finding.verdict else {
                panic!("refused: {finding:?}");
            };
            assert_eq!(
                lines,
                &[format!(
                    "serin.dev/service: Service \"web\" is already the apex Service of \
                     opted-in Deployment {rival:?}; choose another serin.dev/service"
                )]
            );
        }
        // A Service of the user's under a derived name, in the same files.
        let service =
            "apiVersion: v1\nkind: Service\nmetadata: {name: web-canary, namespace: shop}\n";
        let findings = check_yaml(&format!("{GOOD}\n---\n{service}"));
        assert!(findings[0].is_error(), "{findings:?}");
        assert!(
            findings[0]
                .to_string()
                .contains("Service \"web-canary\" exists and is not managed by Serin")
        );
        // The user's own apex Service is fine: Serin takes it over.
        let apex = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\n";
        let findings = check_yaml(&format!("{GOOD}\n---\n{apex}"));
        assert_eq!(findings[0].verdict, Verdict::OptedIn { warnings: vec![] });
    }

    #[test]
    fn broken_yaml_is_a_finding_not_a_panic() {
        let findings = check_yaml("kind: [unclosed\n");
        assert_eq!(findings.len(), 1);
        assert!(findings[0].is_error());
        assert!(
            findings[0]
                .to_string()
                .starts_with("document 1: not valid YAML")
        );
    }

    #[test]
    fn deployments_inside_a_list_are_checked() {
        let list = serde_json::json!({
            "apiVersion": "v1", "kind": "List",
            "items": [serde_yaml_ng::from_str::<Value>(GOOD).expect("yaml")]
        });
        let findings = check_yaml(&list.to_string());
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].verdict, Verdict::OptedIn { warnings: vec![] });
    }

    const POLICY: &str = r#"
apiVersion: serin.dev/v1alpha1
kind: CanaryPolicy
metadata: {name: prod-rules}
spec:
  match: {namespaceSelector: {matchLabels: {tier: prod}}}
  requireCanary: true
  limits: {maxStepWeight: 10}
"#;

    const PROD: &str =
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {tier: prod}}\n";

    #[test]
    fn policies_apply_offline_to_deployments_in_namespaces_they_select() {
        let (policies, broken) = load_policies(POLICY);
        assert!(broken.is_empty(), "{broken:?}");
        assert_eq!(policies.len(), 1);
        // Without the Namespace object, shop has no tier label: the policy does not apply.
        let findings: Vec<Finding> = check_inputs(&[GOOD], &policies)
            .into_iter()
            .map(|(_, f)| f)
            .collect();
        assert_eq!(findings[0].verdict, Verdict::OptedIn { warnings: vec![] });
        let findings: Vec<Finding> = check_inputs(&[GOOD, PROD], &policies)
            .into_iter()
            .map(|(_, f)| f)
            .collect();
        let Verdict::Invalid(lines) = &findings[0].verdict else {
            panic!("refused by the policy: {findings:?}");
        };
        assert_eq!(
            lines,
            &[
                "serin.dev/step-weight: a step of 20 exceeds the limit maxStepWeight 10 (CanaryPolicy prod-rules)"
            ]
        );
        let plain = GOOD
            .replace("serin.dev/enabled: \"true\"", "team: web")
            .replace("serin.dev/step-weight: \"20\"", "");
        let findings: Vec<Finding> = check_inputs(&[&plain, PROD], &policies)
            .into_iter()
            .map(|(_, f)| f)
            .collect();
        assert!(
            findings[0].to_string().contains("must release as canaries"),
            "{}",
            findings[0]
        );
    }

    #[test]
    fn a_warn_policy_reports_warnings_and_passes() {
        let warn = POLICY.replace("requireCanary: true", "auditOnly: true");
        let (policies, _) = load_policies(&warn);
        let findings: Vec<Finding> = check_inputs(&[GOOD, PROD], &policies)
            .into_iter()
            .map(|(_, f)| f)
            .collect();
        assert!(!findings[0].is_error());
        assert_eq!(
            findings[0].to_string(),
            "Deployment shop/web: ok (canary release enabled)\nDeployment shop/web: warning: Deployment \"web\": serin.dev/step-weight: a step of 20 exceeds the limit maxStepWeight 10 (CanaryPolicy prod-rules) [enforcement: warn]"
        );
    }

    #[test]
    fn a_broken_policy_file_is_reported_with_each_mistake() {
        let broken = POLICY.replace(
            "maxStepWeight: 10",
            "maxStepWeight: 10, minSuccessRate: 150",
        );
        let (policies, findings) = load_policies(&broken);
        assert!(policies.is_empty());
        assert_eq!(findings.len(), 1);
        assert!(findings[0].is_error());
        assert!(
            findings[0]
                .to_string()
                .contains("spec.limits.minSuccessRate: 150 must be from 0 to 100"),
            "{}",
            findings[0]
        );
    }
}
