//! The Helm chart `charts/serin`, checked with the real Helm (`hack/deps.sh helm`, the Go
//! module helm.sh/helm/v4 at HELM_VERSION): `helm lint --strict`, its values schema, the
//! objects `helm template` renders against what `kubectl kustomize` renders from the base
//! and its Components for the same choices, and `helm install --dry-run=server` against the
//! local cluster.
//!
//! The chart is a second copy of `manifests/` in Helm's idiom; these tests are what keeps the
//! two equal. They sit with the end-to-end tests, as `e2e_manifests` does, because they run
//! the tools of the local environment (the built kubectl, Helm); only the dry run needs the
//! API server.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use support::chart::{compare, keyed};
use support::kustomize::{
    NAMESPACE, manifests_dir, overlay_dirs, prepare_dry_run, render_with_components,
    through_kustomize,
};

/// One choice of a user: the chart's values and the Components of the base that make the
/// same installation.
struct Choice {
    values: &'static [&'static str],
    components: &'static [&'static str],
}

/// Every Component alone and every combination docs/install.md allows (one certificate
/// source, with or without Secret tracking; alerts with a certificate source).
const CHOICES: &[Choice] = &[
    Choice {
        values: &[],
        components: &[],
    },
    Choice {
        values: &["certificates=cert-manager"],
        components: &["cert-manager"],
    },
    Choice {
        values: &["certificates=self-signed"],
        components: &["self-signed"],
    },
    Choice {
        values: &["trackSecrets=true"],
        components: &["secret-tracking"],
    },
    Choice {
        values: &["certificates=cert-manager", "trackSecrets=true"],
        components: &["cert-manager", "secret-tracking"],
    },
    Choice {
        values: &["certificates=self-signed", "trackSecrets=true"],
        components: &["self-signed", "secret-tracking"],
    },
    Choice {
        values: &["alerts=true"],
        components: &["alerts"],
    },
    Choice {
        values: &["certificates=cert-manager", "alerts=true"],
        components: &["cert-manager", "alerts"],
    },
];

impl Choice {
    fn describe(&self) -> String {
        let values = match self.values {
            [] => "default values".to_owned(),
            values => format!("--set {}", values.join(",")),
        };
        let components = match self.components {
            [] => "the base".to_owned(),
            components => format!("the base + {}", components.join(" + ")),
        };
        format!("{values} (kustomize: {components})")
    }

    fn set_args(&self) -> Vec<&'static str> {
        self.values.iter().flat_map(|v| ["--set", *v]).collect()
    }
}

fn chart_dir() -> PathBuf {
    support::repo_root().join("charts/serin")
}

/// The Helm built by `hack/deps.sh helm` (which prints its bin directory).
fn helm_path() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let out = support::hack("deps.sh", &["helm"]);
        let bin = out
            .lines()
            .last()
            .expect("hack/deps.sh helm prints its bin directory");
        PathBuf::from(bin.trim()).join("helm")
    })
}

/// Runs Helm with its configuration, cache and data directories under the test target
/// directory, never the user's; returns (success, stdout, stderr).
fn helm(args: &[&str]) -> (bool, String, String) {
    let home = Path::new(env!("CARGO_TARGET_TMPDIR")).join("helm-home");
    let out = Command::new(helm_path())
        .args(args)
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_DATA_HOME", home.join("data"))
        .output()
        .expect("helm starts");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `helm template` of the chart into serin-system with extra arguments.
fn template(extra: &[&str]) -> (bool, String, String) {
    let chart = chart_dir().display().to_string();
    let mut args = vec!["template", "serin", &chart, "--namespace", NAMESPACE];
    args.extend_from_slice(extra);
    helm(&args)
}

// ---------------------------------------------------------------------------------------
// lint and the values schema

#[test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
fn chart_passes_helm_lint_strict_for_every_choice() {
    let chart = chart_dir().display().to_string();
    for choice in CHOICES {
        // As chart tools run it: no --namespace (Helm's "default").
        let mut args = vec!["lint", "--strict", &chart];
        args.extend(choice.set_args());
        let (ok, stdout, stderr) = helm(&args);
        assert!(
            ok && stdout.contains("1 chart(s) linted, 0 chart(s) failed"),
            "helm lint --strict, {}:\n{stdout}\n{stderr}",
            choice.describe()
        );
    }
}

#[test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
fn values_schema_refuses_a_misspelt_key_naming_it() {
    // (what is set, what the refusal must say)
    let refused = [
        (
            vec!["--set", "trackSecret=true"],
            "additional properties 'trackSecret' not allowed",
        ),
        (
            vec!["--set", "image.tags=1.0"],
            "at '/image': additional properties 'tags' not allowed",
        ),
        (
            vec!["--set", "certificates=certmanager"],
            "at '/certificates': value must be one of 'own', 'cert-manager', 'self-signed'",
        ),
        (
            vec!["--set", "replicas=0"],
            "at '/replicas': minimum: got 0, want 1",
        ),
        (
            vec!["--set", "logFormat=xml"],
            "at '/logFormat': value must be one of 'json', 'text'",
        ),
    ];
    for (args, message) in refused {
        let (ok, _, stderr) = template(&args);
        assert!(!ok, "helm template {args:?} was accepted");
        assert!(
            stderr.contains("values don't meet the specifications of the schema")
                && stderr.contains(message),
            "helm template {args:?}: the refusal does not say {message:?}:\n{stderr}"
        );
    }
    // The defaults and a correct value pass the same schema.
    let (ok, _, stderr) = template(&["--set", "trackSecrets=true"]);
    assert!(ok, "a correct value is refused:\n{stderr}");
}

/// `env` and `hostAliases` (the settings a cluster without kube-proxy or with extra flags
/// needs; hack/in-cluster.sh's Helm install uses both) render into the pod, and `env` may
/// not set a variable the chart sets itself: the container would carry two and the later
/// would win unseen, so the refusal names the value that sets it.
#[test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
fn env_and_host_aliases_render_and_env_may_not_shadow_the_charts_own() {
    let (ok, out, stderr) = template(&[
        "--set-json",
        r#"env=[{"name":"SERIN_SELF_SIGNED_VALIDITY","value":"720h"}]"#,
        "--set-json",
        r#"hostAliases=[{"ip":"10.0.0.9","hostnames":["api.internal"]}]"#,
    ]);
    assert!(ok, "{stderr}");
    let deployment = out
        .split("\n---")
        .find(|doc| doc.contains("\nkind: Deployment"))
        .expect("a Deployment");
    assert!(
        deployment.contains("- name: SERIN_SELF_SIGNED_VALIDITY\n          value: 720h"),
        "{deployment}"
    );
    assert!(
        deployment.contains(
            "hostAliases:\n        - hostnames:\n          - api.internal\n          ip: 10.0.0.9"
        ),
        "{deployment}"
    );
    // (what env sets, what the refusal must say)
    let refused = [
        (
            r#"env=[{"name":"SERIN_PROMETHEUS_URL","value":"http://p:9090"}]"#,
            "env: SERIN_PROMETHEUS_URL is set by the chart (use the value prometheus.url)",
        ),
        (
            r#"env=[{"name":"SERIN_LISTEN","value":"0.0.0.0:9443"}]"#,
            "env: SERIN_LISTEN is set by the chart; remove it from env",
        ),
        (
            r#"env=[{"name":"SERIN_X","value":"1"},{"name":"SERIN_X","value":"2"}]"#,
            "env: SERIN_X is listed twice",
        ),
        (
            r#"env=[{"value":"1"}]"#,
            "at '/env/0': missing property 'name'",
        ),
    ];
    for (set, message) in refused {
        let (ok, _, stderr) = template(&["--set-json", set]);
        assert!(!ok, "helm template --set-json {set} was accepted");
        assert!(
            stderr.contains(message),
            "{set}: not {message:?}:\n{stderr}"
        );
    }
}

#[test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
fn chart_refuses_a_release_namespace_other_than_serin_system() {
    let chart = chart_dir().display().to_string();
    let (ok, _, stderr) = helm(&["template", "serin", &chart, "--namespace", "tools"]);
    assert!(!ok, "the chart rendered into namespace tools");
    assert!(
        stderr.contains("installs into the namespace serin-system only")
            && stderr.contains("not \"tools\""),
        "{stderr}"
    );
}

// ---------------------------------------------------------------------------------------
// helm template against kubectl kustomize

#[test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
fn every_component_is_a_choice_of_the_chart() {
    let overlays: Vec<String> = overlay_dirs()
        .iter()
        .map(|d| {
            d.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert!(
        overlays.contains(&"cert-manager".to_owned()),
        "{overlays:?}"
    );
    for overlay in &overlays {
        assert!(
            CHOICES.iter().any(|c| c.components == [overlay.as_str()]),
            "manifests/overlays/{overlay} has no value in charts/serin (add one, and a Choice here)"
        );
    }
}

#[test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
fn helm_template_renders_what_kustomize_renders_for_each_choice() {
    let mut failures = Vec::new();
    for choice in CHOICES {
        let dirs: Vec<PathBuf> = choice
            .components
            .iter()
            .map(|c| manifests_dir().join("overlays").join(c))
            .collect();
        let dirs: Vec<&Path> = dirs.iter().map(PathBuf::as_path).collect();
        let from_kustomize = render_with_components(&dirs).unwrap_or_else(|e| panic!("{e}"));
        let (ok, from_helm, stderr) = template(&choice.set_args());
        assert!(ok, "helm template, {}:\n{stderr}", choice.describe());
        // Both read by the same YAML reader (kustomize's, kubectl's), then compared as data.
        let from_helm = through_kustomize(&from_helm).unwrap_or_else(|e| panic!("{e}"));

        let kustomize = keyed(&from_kustomize, false);
        let chart = keyed(&from_helm, true);
        assert!(kustomize.len() > 20, "{}: {kustomize:?}", choice.describe());
        let report = compare(&kustomize, &chart);
        if report.is_empty() {
            eprintln!("{}: {} objects, equal", choice.describe(), chart.len());
        } else {
            failures.push(format!("{}:\n  {}", choice.describe(), report.join("\n  ")));
        }
    }
    assert!(
        failures.is_empty(),
        "charts/serin has drifted from manifests/:\n{}",
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------------------
// helm install --dry-run=server

/// `helm install --dry-run=server` of one choice against the test cluster.
fn install_dry_run(choice: &Choice, take_ownership: bool) -> (bool, String, String) {
    let chart = chart_dir().display().to_string();
    let kubeconfig = support::kubeconfig().display().to_string();
    let mut args = vec![
        "install",
        "serin",
        &chart,
        "--namespace",
        NAMESPACE,
        "--dry-run=server",
        "--kubeconfig",
        &kubeconfig,
    ];
    if take_ownership {
        args.push("--take-ownership");
    }
    args.extend(choice.set_args());
    helm(&args)
}

/// Helm's server-side dry run: it reads the API server's discovery (every kind and version
/// the chart renders must be served), builds each object against the server's REST mapping,
/// and looks up each one to find objects the release would take over. The local
/// environment already holds Serin's cluster-wide objects, applied by hack/serin.sh without
/// Helm's ownership labels, so the run takes ownership, as a user moving from
/// `kubectl apply -k` to Helm would (docs/install.md). (Helm sends nothing to the server in a
/// dry run, so the objects' schemas and admission are checked by e2e_manifests' server-side
/// dry run of the kustomize renderings, which the chart equals.)
#[test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
fn helm_install_dry_run_server_is_accepted_for_each_choice() {
    let unchecked = prepare_dry_run();
    for choice in CHOICES {
        if choice.values.contains(&"certificates=cert-manager") && !unchecked.is_empty() {
            eprintln!(
                "{}: not checked, the cluster serves no cert-manager.io",
                choice.describe()
            );
            continue;
        }
        let (ok, stdout, stderr) = install_dry_run(choice, true);
        assert!(
            ok && stdout.contains("STATUS: pending-install"),
            "helm install --dry-run=server, {}:\n{stdout}\n{stderr}",
            choice.describe()
        );
        // What the dry run would install is what helm template renders: the same objects.
        let manifest = stdout
            .split_once("MANIFEST:\n")
            .map(|(_, rest)| rest.split("\nNOTES:\n").next().unwrap_or(rest))
            .unwrap_or_else(|| panic!("no MANIFEST in the dry run's output:\n{stdout}"));
        let (_, templated, _) = template(&choice.set_args());
        let would_install: Vec<String> = keyed(manifest, true).into_keys().collect();
        let rendered: Vec<String> = keyed(&templated, true).into_keys().collect();
        assert_eq!(would_install, rendered, "{}", choice.describe());
    }
}

/// Without taking ownership, the dry run refuses to adopt what exists already (the namespace
/// serin-system, made by `prepare_dry_run` or hack/serin.sh): the check above really asked
/// the server.
#[test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
fn helm_install_dry_run_server_refuses_objects_it_does_not_own() {
    prepare_dry_run();
    let (ok, stdout, stderr) = install_dry_run(&CHOICES[0], false);
    assert!(
        !ok,
        "the dry run adopted existing objects silently:\n{stdout}"
    );
    assert!(
        stderr.contains("exists and cannot be imported into the current release")
            && stderr.contains("serin-system"),
        "{stderr}"
    );
}
