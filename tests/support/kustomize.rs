//! The kustomize base `manifests/` and its Components built as users build them, with the
//! built kubectl (`kubectl kustomize`), and what a server-side dry run of them needs in the
//! local environment. Shared by `e2e_manifests` (the manifests themselves) and `e2e_chart`
//! (the Helm chart, which must render the same objects).

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;

use serde::Deserialize;
use serde_json::{Value, json};

/// The namespace the base installs into.
pub(crate) const NAMESPACE: &str = "serin-system";

pub(crate) fn manifests_dir() -> PathBuf {
    super::repo_root().join("manifests")
}

/// Every directory under `manifests/overlays/`, sorted.
pub(crate) fn overlay_dirs() -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(manifests_dir().join("overlays")) else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

/// The kustomization file of `dir`, parsed.
pub(crate) fn kustomization(dir: &Path) -> Value {
    let file = ["kustomization.yaml", "kustomization.yml", "Kustomization"]
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("{} has no kustomization.yaml", dir.display()));
    let text = std::fs::read_to_string(&file).expect("read kustomization");
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// `to` relative to the directory `from` (kustomize refuses absolute paths).
fn relative(from: &Path, to: &Path) -> PathBuf {
    let from: Vec<Component> = from.components().collect();
    let to: Vec<Component> = to.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut path = PathBuf::new();
    for _ in common..from.len() {
        path.push("..");
    }
    for part in &to[common..] {
        path.push(part);
    }
    path
}

/// `kubectl kustomize DIR` with the built kubectl.
pub(crate) fn kustomize(dir: &Path) -> Result<String, String> {
    let dir = dir.display().to_string();
    match super::kubectl(&["kustomize", &dir], None) {
        (true, stdout, _) => Ok(stdout),
        (false, _, stderr) => Err(format!("kubectl kustomize {dir}: {stderr}")),
    }
}

pub(crate) fn parse_documents(yaml: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(yaml)
        .map(|doc| Value::deserialize(doc).expect("kustomize output is YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

/// Builds a kustomization of our own in a temporary directory outside `manifests/` (where
/// kustomize refuses to build anything that includes its own ancestor), made of `resources`
/// (paths) and `components`, plus the files in `files` written beside it.
fn kustomize_wrapper(
    resources: &[&Path],
    components: &[&Path],
    files: &[(&str, &str)],
) -> Result<String, String> {
    let wrapper = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let root = wrapper.path().canonicalize().expect("canonical tempdir");
    let relative_to_root = |paths: &[&Path]| -> Vec<PathBuf> {
        paths
            .iter()
            .map(|p| relative(&root, &p.canonicalize().expect("an existing path")))
            .collect()
    };
    let mut resources = relative_to_root(resources);
    for (name, text) in files {
        std::fs::write(root.join(name), text).expect("write a resource file");
        resources.push(PathBuf::from(name));
    }
    let text = json!({
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": resources,
        "components": relative_to_root(components),
    });
    std::fs::write(root.join("kustomization.yaml"), text.to_string()).expect("write wrapper");
    kustomize(&root)
}

/// The base with `components` (directories under `manifests/overlays/`), as a user's own
/// kustomization builds them (docs/install.md, "Components").
pub(crate) fn render_with_components(components: &[&Path]) -> Result<String, String> {
    kustomize_wrapper(&[&manifests_dir()], components, &[])
}

/// A YAML stream (e.g. what `helm template` prints) read and written back by kustomize, with
/// no transformer: the same YAML reader as the base's rendering, so that both sides of a
/// comparison agree on what `0444` or a folded scalar with more-indented lines means.
pub(crate) fn through_kustomize(stream: &str) -> Result<String, String> {
    kustomize_wrapper(&[], &[], &[("stream.yaml", stream)])
}

/// Renders an overlay: a Component through a kustomization of our own outside manifests/
/// (base + component), a Kustomization directly.
pub(crate) fn render_overlay(dir: &Path) -> Result<String, String> {
    let kind = kustomization(dir)["kind"]
        .as_str()
        .unwrap_or("Kustomization")
        .to_owned();
    if kind != "Component" {
        return kustomize(dir).map_err(|e| {
            format!(
                "{e}\n(an overlay inside manifests/ cannot include manifests/ as a Kustomization: \
                 kustomize reports a cycle; make it a `kind: Component`)"
            )
        });
    }
    render_with_components(&[dir])
}

/// A CRD standing in for one of cert-manager's in the local environment, which has no
/// cert-manager: the server then checks everything about these objects but their schema.
fn stand_in_crd(kind: &str, plural: &str) -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": format!("{plural}.cert-manager.io"),
            "labels": {"serin.dev/e2e-stand-in": "true"},
        },
        "spec": {
            "group": "cert-manager.io",
            "scope": "Namespaced",
            "names": {"kind": kind, "plural": plural, "singular": kind.to_lowercase()},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {
                    "type": "object", "x-kubernetes-preserve-unknown-fields": true,
                }},
            }],
        },
    })
}

fn served(crd: &str) -> bool {
    super::kubectl(&["get", "crd", crd, "-o", "name"], None).0
}

/// What a server-side dry run of the renderings needs: the namespace (a dry run creates
/// nothing, so its namespaced objects need it to exist) and, locally, stand-ins for
/// cert-manager's CRDs. Returns the API groups whose objects cannot be checked.
pub(crate) fn prepare_dry_run() -> &'static BTreeSet<String> {
    static UNCHECKED: OnceLock<BTreeSet<String>> = OnceLock::new();
    UNCHECKED.get_or_init(|| {
        super::kubeconfig();
        if !super::kubectl(&["get", "namespace", NAMESPACE, "-o", "name"], None).0 {
            let (ok, _, stderr) = super::kubectl(&["create", "namespace", NAMESPACE], None);
            assert!(ok || stderr.contains("AlreadyExists"), "{stderr}");
        }
        let local = std::env::var_os("KUBECONFIG").is_none();
        let mut unchecked = BTreeSet::new();
        for (kind, plural) in [("Issuer", "issuers"), ("Certificate", "certificates")] {
            let crd = format!("{plural}.cert-manager.io");
            if served(&crd) {
                continue;
            }
            if !local {
                unchecked.insert("cert-manager.io".to_owned());
                continue;
            }
            let manifest = stand_in_crd(kind, plural).to_string();
            let (ok, _, stderr) = super::kubectl(&["apply", "-f", "-"], Some(&manifest));
            assert!(ok, "stand-in CRD {crd}: {stderr}");
            let (ok, _, stderr) = super::kubectl(
                &[
                    "wait",
                    "--for=condition=Established",
                    "--timeout=60s",
                    &format!("crd/{crd}"),
                ],
                None,
            );
            assert!(ok, "stand-in CRD {crd} not Established: {stderr}");
        }
        unchecked
    })
}
