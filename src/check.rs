//! `serin check -f FILE`: the admission validation, offline, for CI pipelines and
//! pre-commit hooks. Reads multi-document YAML (and `List` objects), checks every
//! `apps/v1` Deployment with the same [`crate::spec`] functions the webhook calls, and
//! reports each mistake on its own line.

use std::fmt;

use k8s_openapi::api::apps::v1::Deployment;
use serde::Deserialize;
use serde_json::Value;

use crate::spec::{self, OptIn};

/// What one checked document said.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// An opted-in Deployment whose configuration is valid.
    OptedIn,
    /// A Deployment without Serin configuration (or with `serin.dev/enabled: "false"`).
    NotOptedIn,
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
        match &self.verdict {
            Verdict::OptedIn => write!(f, "{}: ok (canary release enabled)", self.object),
            Verdict::NotOptedIn => write!(f, "{}: ok (not opted in)", self.object),
            Verdict::Invalid(lines) => {
                for (i, line) in lines.iter().enumerate() {
                    if i > 0 {
                        writeln!(f)?;
                    }
                    write!(f, "{}: {line}", self.object)?;
                }
                Ok(())
            }
        }
    }
}

impl Finding {
    pub fn is_error(&self) -> bool {
        matches!(self.verdict, Verdict::Invalid(_))
    }
}

/// Checks every Deployment in a multi-document YAML text. Objects of other kinds are
/// skipped; a document that is not YAML, or a Deployment that does not parse, is a finding.
pub fn check_yaml(text: &str) -> Vec<Finding> {
    let mut findings = Vec::new();
    for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let label = format!("document {}", index + 1);
        match Value::deserialize(document) {
            Ok(Value::Null) => {}
            Ok(value) => check_object(&label, value, &mut findings),
            Err(e) => {
                findings.push(Finding {
                    object: label,
                    verdict: Verdict::Invalid(vec![format!("not valid YAML: {e}")]),
                });
                // The YAML stream cannot be resynchronised after a syntax error (and the
                // iterator would keep yielding it), so stop here.
                break;
            }
        }
    }
    findings
}

fn check_object(label: &str, value: Value, findings: &mut Vec<Finding>) {
    let kind = value
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let api_version = value
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    match (api_version, kind) {
        ("v1", "List") => {
            if let Some(Value::Array(items)) = value.get("items") {
                for (i, item) in items.iter().enumerate() {
                    check_object(&format!("{label} item {}", i + 1), item.clone(), findings);
                }
            }
        }
        ("apps/v1", "Deployment") => findings.push(check_deployment(label, value)),
        _ => {}
    }
}

fn check_deployment(label: &str, value: Value) -> Finding {
    let name = value
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("(unnamed)");
    let object = match value.pointer("/metadata/namespace").and_then(Value::as_str) {
        Some(ns) => format!("Deployment {ns}/{name}"),
        None => format!("Deployment {name}"),
    };
    let deploy: Deployment = match serde_json::from_value(value) {
        Ok(deploy) => deploy,
        Err(e) => {
            return Finding {
                object: format!("{object} ({label})"),
                verdict: Verdict::Invalid(vec![format!("not a valid apps/v1 Deployment: {e}")]),
            };
        }
    };
    let verdict = match spec::read_deployment(&deploy) {
        Ok(OptIn::Enabled(_)) => Verdict::OptedIn,
        Ok(OptIn::Absent | OptIn::Disabled) => Verdict::NotOptedIn,
        Err(problems) => Verdict::Invalid(problems.iter().map(ToString::to_string).collect()),
    };
    Finding { object, verdict }
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
        assert_eq!(findings[0].verdict, Verdict::OptedIn);
        assert_eq!(findings[0].object, "Deployment shop/web");
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
        assert_eq!(findings[1].verdict, Verdict::OptedIn);
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
            "items": [serde_yaml::from_str::<Value>(GOOD).expect("yaml")]
        });
        let findings = check_yaml(&list.to_string());
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].verdict, Verdict::OptedIn);
    }
}
