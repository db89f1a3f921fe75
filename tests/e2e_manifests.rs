//! `manifests/` as users install it: the kustomize base (`kubectl apply -k manifests/`) and
//! every overlay under `manifests/overlays/` render with the built kubectl, the API server
//! accepts what they render (server-side dry run), the Deployment they install is hardened
//! and wired to the flags `serin run` really reads, and the Grafana dashboard
//! (`manifests/grafana/serin.json`) queries only metrics that Serin or Linkerd export.
//!
//! Overlays live inside the base's directory, where kustomize cannot build a Kustomization
//! that includes its own ancestor; they are Components, rendered here (as a user would) from
//! a kustomization outside `manifests/` that names the base and the component.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use clap::CommandFactory;
use serde_json::{Value, json};

use support::kustomize::{
    NAMESPACE, kustomize, manifests_dir, overlay_dirs, parse_documents, prepare_dry_run,
    render_overlay,
};
const NAME: &str = "serin";

// ---------------------------------------------------------------------------------------
// Rendering

/// What one kustomization renders to.
struct Rendering {
    /// `base`, or `overlays/<name>`.
    name: String,
    objects: Vec<Value>,
}

impl Rendering {
    fn find(&self, kind: &str, namespace: Option<&str>, name: &str) -> Option<&Value> {
        self.objects.iter().find(|o| {
            o["kind"] == kind
                && o["metadata"]["name"] == name
                && o["metadata"]["namespace"].as_str() == namespace
        })
    }

    fn all(&self, kind: &str) -> impl Iterator<Item = &Value> {
        self.objects.iter().filter(move |o| o["kind"] == kind)
    }

    fn deployment(&self) -> &Value {
        self.find("Deployment", Some(NAMESPACE), NAME)
            .unwrap_or_else(|| panic!("{}: no Deployment {NAMESPACE}/{NAME}", self.name))
    }

    /// `(kind, namespace/name)` of every object.
    fn identities(&self) -> BTreeSet<(String, String)> {
        self.objects
            .iter()
            .map(|o| {
                let kind = o["kind"].as_str().unwrap_or_default().to_owned();
                let ns = o["metadata"]["namespace"].as_str().unwrap_or_default();
                let name = o["metadata"]["name"].as_str().unwrap_or_default();
                (kind, format!("{ns}/{name}"))
            })
            .collect()
    }
}

/// The base and every overlay, rendered once per test binary; a rendering that fails is an
/// `Err` with kubectl's message.
fn renderings() -> &'static [Result<Rendering, String>] {
    static ALL: OnceLock<Vec<Result<Rendering, String>>> = OnceLock::new();
    ALL.get_or_init(|| {
        let mut all = vec![kustomize(&manifests_dir()).map(|yaml| ("base".to_owned(), yaml))];
        for dir in overlay_dirs() {
            let name = format!(
                "overlays/{}",
                dir.file_name().unwrap_or_default().to_string_lossy()
            );
            all.push(render_overlay(&dir).map(|yaml| (name, yaml)));
        }
        all.into_iter()
            .map(|r| {
                r.map(|(name, yaml)| Rendering {
                    name,
                    objects: parse_documents(&yaml),
                })
            })
            .collect()
    })
}

/// Every rendering, panicking with all kustomize errors if any failed.
fn rendered() -> Vec<&'static Rendering> {
    let errors: Vec<&String> = renderings()
        .iter()
        .filter_map(|r| r.as_ref().err())
        .collect();
    assert!(errors.is_empty(), "rendering failed:\n{errors:#?}");
    renderings()
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .collect()
}

fn base() -> &'static Rendering {
    match &renderings()[0] {
        Ok(base) => base,
        Err(e) => panic!("the base does not render: {e}"),
    }
}

// ---------------------------------------------------------------------------------------
// Rendering and server-side dry run

#[test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
fn base_and_every_overlay_render_with_kubectl_kustomize() {
    let all = rendered();
    let overlays: Vec<&str> = all.iter().skip(1).map(|r| r.name.as_str()).collect();
    assert!(
        overlays.contains(&"overlays/cert-manager"),
        "overlays rendered: {overlays:?}"
    );

    let base = base();
    let crds_in_file = parse_documents(
        &std::fs::read_to_string(manifests_dir().join("crds.yaml")).expect("crds.yaml"),
    )
    .len();
    assert_eq!(
        base.all("CustomResourceDefinition").count(),
        crds_in_file,
        "the base installs every CRD of manifests/crds.yaml"
    );
    for (kind, namespace) in [
        ("Namespace", None),
        ("ServiceAccount", Some(NAMESPACE)),
        ("ClusterRole", None),
        ("ClusterRoleBinding", None),
        ("Deployment", Some(NAMESPACE)),
        ("Service", Some(NAMESPACE)),
        ("PodDisruptionBudget", Some(NAMESPACE)),
        ("MutatingWebhookConfiguration", None),
        ("ValidatingWebhookConfiguration", None),
    ] {
        let name = if kind == "Namespace" { NAMESPACE } else { NAME };
        assert!(
            base.find(kind, namespace, name).is_some(),
            "the base has no {kind} {name}"
        );
    }
    // An overlay adds and patches; it never drops what the base installs.
    for overlay in &all[1..] {
        let missing: Vec<_> = base
            .identities()
            .difference(&overlay.identities())
            .cloned()
            .collect();
        assert!(
            missing.is_empty(),
            "{} drops {missing:?} of the base",
            overlay.name
        );
    }
}

/// A CRD whose conversion webhook is the `serin` Service, with the clientConfig the local
/// environment registered instead (`url:` on 127.0.0.1: loopback cannot be a Service
/// endpoint). Applying the Service reference over a CRD that holds a `url` would merge the two
/// into an invalid object; everything else in the CRD is still checked.
fn with_live_conversion(object: &Value) -> Value {
    let pointer = "/spec/conversion/webhook/clientConfig";
    let Some(config) = object.pointer(pointer) else {
        return object.clone();
    };
    assert_eq!(
        config["service"],
        json!({"name": "serin", "namespace": NAMESPACE, "path": "/convert", "port": 443}),
        "the conversion webhook of {} is Serin's Service",
        object["metadata"]["name"]
    );
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    let (ok, live, _) = support::kubectl(&["get", "crd", name, "-o", "json"], None);
    let live: Value = match ok {
        true => serde_json::from_str(&live).unwrap_or(Value::Null),
        false => return object.clone(), // not installed: the Service reference is applied as is
    };
    let mut object = object.clone();
    if let Some(live_config) = live.pointer(pointer).cloned()
        && let Some(slot) = object.pointer_mut(pointer)
    {
        *slot = live_config;
    }
    object
}

#[test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
fn every_rendering_is_accepted_by_a_server_side_dry_run() {
    let unchecked = prepare_dry_run();
    let mut refused = Vec::new();
    for rendering in rendered() {
        let mut documents = Vec::new();
        for object in &rendering.objects {
            let group = object["apiVersion"]
                .as_str()
                .and_then(|v| v.split_once('/'))
                .map(|(group, _)| group)
                .unwrap_or_default();
            if unchecked.contains(group) {
                eprintln!(
                    "{}: {} {} not checked: the cluster does not serve {group}",
                    rendering.name, object["kind"], object["metadata"]["name"]
                );
            } else {
                documents.push(with_live_conversion(object).to_string());
            }
        }
        let stream = documents.join("\n---\n");
        let (ok, stdout, stderr) =
            support::kubectl(&["apply", "--dry-run=server", "-f", "-"], Some(&stream));
        if !ok {
            refused.push(format!("{}:\n{stderr}", rendering.name));
            continue;
        }
        // One line per object: `<kind>/<name> created|configured|unchanged (server dry run)`.
        let answered = stdout.lines().filter(|l| l.contains("dry run")).count();
        assert_eq!(
            answered,
            documents.len(),
            "{}: not every object was answered:\n{stdout}",
            rendering.name
        );
    }
    assert!(
        refused.is_empty(),
        "the API server refused:\n{}",
        refused.join("\n")
    );
}

// ---------------------------------------------------------------------------------------
// The Deployment

fn pod_spec(deploy: &Value) -> &Value {
    &deploy["spec"]["template"]["spec"]
}

fn containers(deploy: &Value) -> Vec<&Value> {
    let spec = pod_spec(deploy);
    ["initContainers", "containers"]
        .iter()
        .flat_map(|k| spec[*k].as_array().into_iter().flatten())
        .collect()
}

fn serin_container(deploy: &Value) -> &Value {
    pod_spec(deploy)["containers"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == NAME))
        .expect("a container named serin")
}

/// `SERIN_*` variable → value, as the container sets them.
fn env(container: &Value) -> BTreeMap<String, String> {
    container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            Some((
                e["name"].as_str()?.to_owned(),
                e["value"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

/// What `serin run` reads from each environment variable: variable → default value.
fn serin_env_flags() -> BTreeMap<String, Option<String>> {
    serin::cli::Cli::command()
        .find_subcommand("run")
        .expect("serin run")
        .get_arguments()
        .filter_map(|arg| {
            let var = arg.get_env()?.to_string_lossy().into_owned();
            let default = arg
                .get_default_values()
                .first()
                .map(|v| v.to_string_lossy().into_owned());
            Some((var, default))
        })
        .collect()
}

/// The value `serin` uses for a flag: the container's variable, else the flag's default.
fn flag_value(container: &Value, var: &str) -> String {
    env(container)
        .get(var)
        .cloned()
        .or_else(|| serin_env_flags().get(var).cloned().flatten())
        .unwrap_or_else(|| panic!("{var} is neither set nor defaulted"))
}

fn port_of(address: &str) -> i64 {
    address
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .unwrap_or_else(|| panic!("{address:?} is no host:port"))
}

/// A container port given by name or number, as a number.
fn resolve_port(container: &Value, port: &Value) -> Option<i64> {
    if let Some(number) = port.as_i64() {
        return Some(number);
    }
    container["ports"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == *port)
        .and_then(|p| p["containerPort"].as_i64())
}

/// Whether `selector` (a LabelSelector with matchLabels) selects `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    let wanted = selector["matchLabels"].as_object();
    wanted.is_some_and(|w| !w.is_empty() && w.iter().all(|(k, v)| labels[k] == *v))
        && selector.get("matchExpressions").is_none()
}

#[test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
fn deployment_runs_serin_run_with_variables_serin_reads() {
    let known = serin_env_flags();
    for rendering in rendered() {
        let deploy = rendering.deployment();
        let container = serin_container(deploy);
        assert_eq!(
            container["args"].as_array().and_then(|a| a.first()),
            Some(&json!("run")),
            "{}: the container runs `serin run`",
            rendering.name
        );
        let unknown: Vec<String> = env(container)
            .into_keys()
            .filter(|k| k.starts_with("SERIN_") && !known.contains_key(k))
            .collect();
        assert!(
            unknown.is_empty(),
            "{}: serin reads none of {unknown:?}; it reads {:?}",
            rendering.name,
            known.keys().collect::<Vec<_>>()
        );
        assert_eq!(
            pod_spec(deploy)["serviceAccountName"],
            NAME,
            "{}: Serin runs as its ServiceAccount",
            rendering.name
        );
        assert!(
            rendering
                .find("ServiceAccount", Some(NAMESPACE), NAME)
                .is_some(),
            "{}: the ServiceAccount is installed",
            rendering.name
        );
    }
    let image = serin_container(base().deployment())["image"]
        .as_str()
        .unwrap_or_default();
    assert!(
        image.ends_with(&format!(":{}", env!("CARGO_PKG_VERSION"))),
        "the base's image {image:?} is tagged with the crate's version"
    );
}

#[test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
fn deployment_security_context_is_restricted_in_every_rendering() {
    for rendering in rendered() {
        let deploy = rendering.deployment();
        let pod = &pod_spec(deploy)["securityContext"];
        let mut wrong = Vec::new();
        for container in containers(deploy) {
            let name = container["name"].as_str().unwrap_or("?");
            let sc = &container["securityContext"];
            // A container's setting wins over the pod's.
            let effective = |key: &str| match &sc[key] {
                Value::Null => &pod[key],
                value => value,
            };
            if effective("runAsNonRoot") != true {
                wrong.push(format!("{name}: runAsNonRoot is not true"));
            }
            if effective("runAsUser").as_i64() == Some(0) {
                wrong.push(format!("{name}: runAsUser is 0"));
            }
            if effective("seccompProfile")["type"] != "RuntimeDefault" {
                wrong.push(format!("{name}: seccompProfile is not RuntimeDefault"));
            }
            if sc["allowPrivilegeEscalation"] != false {
                wrong.push(format!("{name}: allowPrivilegeEscalation is not false"));
            }
            if sc["readOnlyRootFilesystem"] != true {
                wrong.push(format!("{name}: readOnlyRootFilesystem is not true"));
            }
            if sc["privileged"] == true {
                wrong.push(format!("{name}: privileged"));
            }
            let drop = sc["capabilities"]["drop"].as_array();
            if !drop.is_some_and(|d| d.contains(&json!("ALL"))) {
                wrong.push(format!("{name}: capabilities do not drop ALL"));
            }
            if sc["capabilities"]["add"]
                .as_array()
                .is_some_and(|a| !a.is_empty())
            {
                wrong.push(format!("{name}: capabilities added"));
            }
            for kind in ["requests", "limits"] {
                for resource in ["cpu", "memory"] {
                    if container["resources"][kind][resource].is_null() {
                        wrong.push(format!("{name}: no {resource} {kind}"));
                    }
                }
            }
        }
        if pod_spec(deploy)["hostNetwork"] == true || pod_spec(deploy)["hostPID"] == true {
            wrong.push("the pod shares the host's network or PIDs".to_owned());
        }
        assert!(wrong.is_empty(), "{}: {wrong:#?}", rendering.name);
    }
}

#[test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
fn deployment_keeps_a_replica_serving_through_disruptions() {
    for rendering in rendered() {
        let deploy = rendering.deployment();
        let name = &rendering.name;
        let labels = &deploy["spec"]["template"]["metadata"]["labels"];
        assert_eq!(deploy["spec"]["replicas"], 2, "{name}: replicas");
        assert!(
            selects(&deploy["spec"]["selector"], labels),
            "{name}: the Deployment selects its pods"
        );
        assert_eq!(
            deploy["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"], 0,
            "{name}: an upgrade never takes a serving replica away first"
        );

        let pdb = rendering
            .find("PodDisruptionBudget", Some(NAMESPACE), NAME)
            .unwrap_or_else(|| panic!("{name}: no PodDisruptionBudget"));
        assert!(
            selects(&pdb["spec"]["selector"], labels),
            "{name}: the PodDisruptionBudget selects Serin's pods"
        );
        let min_available = pdb["spec"]["minAvailable"].as_i64();
        assert!(
            min_available.is_some_and(|m| (1..2).contains(&m)),
            "{name}: minAvailable {min_available:?} must keep one of two replicas and let one go"
        );

        let anti = &pod_spec(deploy)["affinity"]["podAntiAffinity"];
        let terms: Vec<&Value> = anti["preferredDuringSchedulingIgnoredDuringExecution"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| &t["podAffinityTerm"])
            .chain(
                anti["requiredDuringSchedulingIgnoredDuringExecution"]
                    .as_array()
                    .into_iter()
                    .flatten(),
            )
            .collect();
        assert!(
            terms
                .iter()
                .any(|t| t["topologyKey"] == "kubernetes.io/hostname"
                    && selects(&t["labelSelector"], labels)),
            "{name}: no pod anti-affinity between Serin's replicas per node: {anti}"
        );
    }
}

#[test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
fn probes_use_the_admin_port_and_the_service_reaches_the_webhook_port() {
    for rendering in rendered() {
        let name = &rendering.name;
        let deploy = rendering.deployment();
        let container = serin_container(deploy);
        let admin = port_of(&flag_value(container, "SERIN_ADMIN_LISTEN"));
        let webhook = port_of(&flag_value(container, "SERIN_LISTEN"));
        for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
            let get = &container[probe]["httpGet"];
            assert_eq!(get["path"], path, "{name}: {probe} path");
            assert_eq!(
                resolve_port(container, &get["port"]),
                Some(admin),
                "{name}: {probe} must use the admin port {admin}"
            );
        }

        let service = rendering
            .find("Service", Some(NAMESPACE), NAME)
            .unwrap_or_else(|| panic!("{name}: no Service {NAME}"));
        assert!(
            selects(
                &json!({"matchLabels": service["spec"]["selector"]}),
                &deploy["spec"]["template"]["metadata"]["labels"]
            ),
            "{name}: the Service selects Serin's pods"
        );
        let https = service["spec"]["ports"]
            .as_array()
            .and_then(|ports| ports.iter().find(|p| p["port"] == 443))
            .unwrap_or_else(|| panic!("{name}: the Service has no port 443"));
        assert_eq!(
            resolve_port(container, &https["targetPort"]),
            Some(webhook),
            "{name}: the Service's 443 must reach the webhook port {webhook}"
        );

        for kind in [
            "MutatingWebhookConfiguration",
            "ValidatingWebhookConfiguration",
        ] {
            for config in rendering.all(kind) {
                for hook in config["webhooks"].as_array().into_iter().flatten() {
                    let svc = &hook["clientConfig"]["service"];
                    assert_eq!(
                        (&svc["namespace"], &svc["name"], svc["port"].as_i64()),
                        (&json!(NAMESPACE), &json!(NAME), Some(443)),
                        "{name}: {} calls {svc}",
                        hook["name"]
                    );
                }
            }
        }
    }
}

/// Every rendering ships the boundary (manifests/boundary.yaml) for the identity Serin runs
/// as, with the names Serin really writes, and the roles that give `view`/`edit` users
/// Serin's objects (manifests/user-roles.yaml). tests/e2e_rbac.rs checks what they allow.
#[test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
fn every_rendering_ships_the_boundary_for_the_identity_serin_runs_as() {
    for rendering in rendered() {
        let name = &rendering.name;
        let deploy = rendering.deployment();
        let container = serin_container(deploy);
        let policy = rendering
            .find("ValidatingAdmissionPolicy", None, "serin-boundary")
            .unwrap_or_else(|| panic!("{name}: no ValidatingAdmissionPolicy serin-boundary"));
        assert_eq!(
            policy["spec"]["failurePolicy"], "Fail",
            "{name}: the boundary must refuse when it cannot be evaluated"
        );
        let binding = rendering
            .find("ValidatingAdmissionPolicyBinding", None, "serin-boundary")
            .unwrap_or_else(|| panic!("{name}: no binding serin-boundary"));
        assert_eq!(binding["spec"]["policyName"], "serin-boundary", "{name}");
        assert_eq!(
            binding["spec"]["validationActions"],
            json!(["Deny"]),
            "{name}"
        );
        assert_eq!(
            binding["spec"].get("matchResources"),
            None,
            "{name}: the binding narrows nothing (the policy matches every resource)"
        );

        // The user it evaluates is the one Serin runs as, and the one its flags name.
        let account = pod_spec(deploy)["serviceAccountName"]
            .as_str()
            .unwrap_or_default();
        let user = format!("system:serviceaccount:{NAMESPACE}:{account}");
        assert_eq!(
            flag_value(container, "SERIN_SERVICE_ACCOUNT"),
            user,
            "{name}"
        );
        let conditions = policy["spec"]["matchConditions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            conditions
                .iter()
                .map(|c| c["expression"].clone())
                .collect::<Vec<_>>(),
            vec![json!(format!("request.userInfo.username == '{user}'"))],
            "{name}: the boundary evaluates exactly Serin's requests"
        );
        // What it lets Serin write by name is what Serin writes.
        let text = policy["spec"].to_string();
        for (flag, what) in [
            ("SERIN_SELF_SIGNED_SECRET", "the Secret of --self-signed"),
            ("SERIN_WEBHOOK_CONFIG_NAME", "the webhook configurations"),
        ] {
            let value = flag_value(container, flag);
            assert!(
                text.contains(&format!("== '{value}'")),
                "{name}: the boundary does not let Serin write {what}, {value}"
            );
        }
        let rules = &policy["spec"]["matchConstraints"]["resourceRules"];
        assert_eq!(
            rules,
            &json!([{"apiGroups": ["*"], "apiVersions": ["*"],
                     "operations": ["CREATE", "UPDATE", "DELETE"], "resources": ["*/*"]}]),
            "{name}: the boundary sees every write of every resource and subresource"
        );

        for (role, label) in [
            ("serin-view", "rbac.authorization.k8s.io/aggregate-to-view"),
            ("serin-edit", "rbac.authorization.k8s.io/aggregate-to-edit"),
        ] {
            let found = rendering
                .find("ClusterRole", None, role)
                .unwrap_or_else(|| panic!("{name}: no ClusterRole {role}"));
            assert_eq!(found["metadata"]["labels"][label], "true", "{name}: {role}");
        }
    }
}

/// Whether the rendering runs `serin run --self-signed` (the pair is Serin's own, written
/// into an in-memory volume from a Secret it manages).
fn self_signed(deploy: &Value) -> bool {
    env(serin_container(deploy))
        .get("SERIN_SELF_SIGNED")
        .map(String::as_str)
        == Some("true")
}

/// The Secret whose files `SERIN_TLS_CERT` and `SERIN_TLS_KEY` name.
fn tls_secret(deploy: &Value) -> String {
    let container = serin_container(deploy);
    let mounts = container["volumeMounts"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut secrets = BTreeSet::new();
    for var in ["SERIN_TLS_CERT", "SERIN_TLS_KEY"] {
        let file = flag_value(container, var);
        let mount = mounts
            .iter()
            .find(|m| {
                m["mountPath"]
                    .as_str()
                    .is_some_and(|dir| Path::new(&file).parent() == Some(Path::new(dir)))
            })
            .unwrap_or_else(|| panic!("{var} {file} is in no mounted volume"));
        let volume = pod_spec(deploy)["volumes"]
            .as_array()
            .and_then(|vs| vs.iter().find(|v| v["name"] == mount["name"]))
            .unwrap_or_else(|| panic!("no volume {}", mount["name"]));
        let secret = volume["secret"]["secretName"]
            .as_str()
            .unwrap_or_else(|| panic!("volume {} is not a Secret", mount["name"]));
        secrets.insert(secret.to_owned());
    }
    assert_eq!(secrets.len(), 1, "certificate and key from one Secret");
    secrets.into_iter().next().unwrap_or_default()
}

#[test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
fn serving_certificate_is_mounted_from_a_secret() {
    for rendering in rendered() {
        if self_signed(rendering.deployment()) {
            // Serin writes the pair itself: the TLS directory is a small in-memory emptyDir,
            // the only writable mount.
            let volumes = pod_spec(rendering.deployment())["volumes"].clone();
            let tls = volumes
                .as_array()
                .and_then(|vs| vs.iter().find(|v| v["name"] == "tls"))
                .unwrap_or_else(|| panic!("{}: no tls volume", rendering.name));
            assert_eq!(
                tls["emptyDir"]["medium"], "Memory",
                "{}: {tls}",
                rendering.name
            );
            assert!(tls.get("secret").is_none(), "{}: {tls}", rendering.name);
            continue;
        }
        tls_secret(rendering.deployment());
        let container = serin_container(rendering.deployment());
        let mounts = container["volumeMounts"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(
            mounts.iter().all(|m| m["readOnly"] == true),
            "{}: mounts are read-only: {mounts:?}",
            rendering.name
        );
    }
}

/// The verbs the rendering's ClusterRoles grant on Secrets (every ClusterRole in it is
/// Serin's).
fn cluster_wide_secret_verbs(rendering: &Rendering) -> BTreeSet<String> {
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(str::to_owned))
            .collect()
    };
    rendering
        .all("ClusterRole")
        .flat_map(|role| role["rules"].as_array().cloned().unwrap_or_default())
        .filter(|rule| {
            let groups = strings(&rule["apiGroups"]);
            let resources = strings(&rule["resources"]);
            groups.iter().any(|g| g.is_empty() || g == "*")
                && resources.iter().any(|r| r == "secrets" || r == "*")
        })
        .flat_map(|rule| strings(&rule["verbs"]))
        .collect()
}

#[test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
fn secrets_are_tracked_and_readable_only_with_the_secret_tracking_component() {
    let needed: BTreeSet<String> = ["get", "list", "watch", "create", "patch", "delete"]
        .map(String::from)
        .into();
    for rendering in rendered() {
        let tracked = flag_value(
            serin_container(rendering.deployment()),
            "SERIN_TRACK_SECRETS",
        );
        let verbs = cluster_wide_secret_verbs(rendering);
        if rendering.name == "overlays/secret-tracking" {
            assert_eq!(tracked, "true", "{}", rendering.name);
            assert!(
                verbs.is_superset(&needed),
                "{}: Secret tracking needs {needed:?} on Secrets, granted {verbs:?}",
                rendering.name
            );
        } else {
            assert_eq!(
                tracked, "false",
                "{}: SERIN_TRACK_SECRETS must be false without the Secrets grant",
                rendering.name
            );
            assert!(
                verbs.is_empty(),
                "{}: grants {verbs:?} on Secrets cluster-wide",
                rendering.name
            );
        }
    }
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn pod_template_is_admitted_where_pod_security_enforces_restricted() {
    let client = support::client().await;
    let level = base()
        .find("Namespace", None, NAMESPACE)
        .map(|ns| ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"].clone());
    assert_eq!(
        level,
        Some(json!("restricted")),
        "the base's namespace enforces the restricted Pod Security Standard"
    );
    let ns = support::TestNamespace::create(&client, "psa").await;
    let label = "pod-security.kubernetes.io/enforce=restricted";
    let (ok, _, stderr) = support::kubectl(&["label", "namespace", &ns.name, label], None);
    assert!(ok, "{stderr}");
    let (ok, _, stderr) =
        support::kubectl(&["create", "serviceaccount", NAME, "-n", &ns.name], None);
    assert!(ok, "{stderr}");

    let create = |pod: &Value| {
        support::kubectl(
            &["create", "--dry-run=server", "-f", "-", "-o", "name"],
            Some(&pod.to_string()),
        )
    };
    for rendering in rendered() {
        let template = &rendering.deployment()["spec"]["template"];
        let pod = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "serin", "namespace": ns.name, "labels": template["metadata"]["labels"]},
            "spec": template["spec"],
        });
        let (ok, _, stderr) = create(&pod);
        assert!(ok, "{}: the pod is refused:\n{stderr}", rendering.name);

        // The namespace really enforces: the same pod allowed to escalate is refused.
        let mut weaker = pod.clone();
        weaker["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] =
            json!(true);
        let (ok, _, stderr) = create(&weaker);
        assert!(
            !ok && stderr.contains("PodSecurity"),
            "a pod allowed to escalate privileges should be refused by Pod Security: {stderr}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// The cert-manager overlay

fn overlay(name: &str) -> &'static Rendering {
    rendered()
        .into_iter()
        .find(|r| r.name == format!("overlays/{name}"))
        .unwrap_or_else(|| panic!("overlays/{name} is not rendered"))
}

#[test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
fn cert_manager_overlay_issues_the_mounted_secret_and_injects_its_ca() {
    let rendering = overlay("cert-manager");
    let secret = tls_secret(rendering.deployment());
    let certificates: Vec<&Value> = rendering.all("Certificate").collect();
    let serving = certificates
        .iter()
        .find(|c| c["spec"]["secretName"] == secret.as_str())
        .unwrap_or_else(|| panic!("no Certificate writes the Secret {secret} Serin mounts"));
    let dns: Vec<&str> = serving["spec"]["dnsNames"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    for name in [
        format!("{NAME}.{NAMESPACE}.svc"),
        format!("{NAME}.{NAMESPACE}.svc.cluster.local"),
    ] {
        assert!(dns.contains(&name.as_str()), "{name} missing from {dns:?}");
    }
    assert_eq!(
        serving["spec"]["isCA"],
        Value::Null,
        "the serving pair is no CA"
    );

    // The serving certificate's issuer is a CA issued by the overlay itself, so that
    // renewing the serving pair leaves the injected caBundle unchanged.
    let issuer_name = serving["spec"]["issuerRef"]["name"].as_str().unwrap_or("");
    let issuer = rendering
        .find("Issuer", Some(NAMESPACE), issuer_name)
        .unwrap_or_else(|| panic!("no Issuer {issuer_name}"));
    let ca_secret = &issuer["spec"]["ca"]["secretName"];
    assert!(
        certificates
            .iter()
            .any(|c| c["spec"]["secretName"] == *ca_secret && c["spec"]["isCA"] == true),
        "Issuer {issuer_name} signs with {ca_secret}, which no CA Certificate writes"
    );

    let expected = format!(
        "{NAMESPACE}/{}",
        serving["metadata"]["name"].as_str().unwrap_or("")
    );
    let annotation = "cert-manager.io/inject-ca-from";
    let mut targets: Vec<&Value> = rendering
        .all("MutatingWebhookConfiguration")
        .chain(rendering.all("ValidatingWebhookConfiguration"))
        .chain(
            rendering
                .all("CustomResourceDefinition")
                .filter(|crd| crd["spec"]["group"] == "serin.dev"),
        )
        .collect();
    assert!(
        targets.len() >= 4,
        "webhook configurations and Serin's CRDs"
    );
    targets.retain(|o| o["metadata"]["annotations"][annotation] != expected.as_str());
    let wrong: Vec<&Value> = targets.iter().map(|o| &o["metadata"]["name"]).collect();
    assert!(
        wrong.is_empty(),
        "without {annotation}: {expected}: {wrong:?}"
    );
}

// ---------------------------------------------------------------------------------------
// The Grafana dashboard

/// Linkerd's proxy metrics the dashboard may use (Serin's builtin checks read the same).
const LINKERD_METRICS: [&str; 5] = [
    "response_total",
    "response_latency_ms_bucket",
    "response_latency_ms_sum",
    "response_latency_ms_count",
    "request_total",
];

/// Words of PromQL that are not metric names: aggregation operators (which may put
/// `by (...)` before their parenthesis), keywords, and the grouping modifiers, which take a
/// label list.
const PROMQL_WORDS: [&str; 22] = [
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
    "atan2",
];
const LABEL_LISTS: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// The metric names a PromQL expression reads: identifiers that are not functions,
/// keywords, label names, strings, durations or Grafana variables (`$name`).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    let skip_until = |mut i: usize, close: char| {
        while i < chars.len() && chars[i] != close {
            if chars[i] == '\\' {
                i += 1;
            }
            i += 1;
        }
        i + 1
    };
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => i = skip_until(i + 1, c),
            '{' => i = skip_until(i + 1, '}'),
            '[' => i = skip_until(i + 1, ']'),
            '$' => {
                i += 1;
                while i < chars.len() && word(chars[i]) {
                    i += 1;
                }
            }
            c if c.is_ascii_digit() || c == '.' => {
                while i < chars.len() && (word(chars[i]) || chars[i] == '.') {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len() && word(chars[i]) {
                    i += 1;
                }
                let ident: String = chars[start..i].iter().collect();
                let mut next = i;
                while next < chars.len() && chars[next].is_whitespace() {
                    next += 1;
                }
                let call = chars.get(next) == Some(&'(');
                if LABEL_LISTS.contains(&ident.as_str()) && call {
                    i = skip_until(next + 1, ')');
                } else if !call
                    && !PROMQL_WORDS.contains(&ident.to_lowercase().as_str())
                    && !LABEL_LISTS.contains(&ident.as_str())
                {
                    names.insert(ident);
                }
            }
            _ => i += 1,
        }
    }
    names
}

/// A templating query's metric names: `label_values(EXPR, label)` reads EXPR's.
fn variable_metric_names(query: &str) -> BTreeSet<String> {
    let query = query.trim();
    match query
        .strip_prefix("label_values(")
        .and_then(|rest| rest.strip_suffix(')'))
    {
        Some(args) => {
            let expr = args.rsplit_once(',').map_or(args, |(expr, _label)| expr);
            metric_names(expr)
        }
        None => metric_names(query),
    }
}

fn dashboard() -> Value {
    let path = manifests_dir().join("grafana/serin.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// `(panel title, expression)` of every query, rows' nested panels included.
fn dashboard_queries(dashboard: &Value) -> Vec<(String, String)> {
    fn walk(panels: &Value, out: &mut Vec<(String, String)>) {
        for panel in panels.as_array().into_iter().flatten() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    let title = panel["title"].as_str().unwrap_or("?").to_owned();
                    out.push((title, expr.to_owned()));
                }
            }
            walk(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

fn variable_queries(dashboard: &Value) -> Vec<(String, String)> {
    dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["type"] == "query")
        .filter_map(|v| {
            let query = v["query"]["query"].as_str().or(v["query"].as_str())?;
            Some((format!("${}", v["name"].as_str()?), query.to_owned()))
        })
        .collect()
}

/// Serin's registry as `serin run` builds it (src/cli/run.rs), with one sample in every
/// family (prometheus-client prints a labelled family only once it has one), encoded:
/// family name → the series names it exposes.
fn serin_metrics() -> BTreeMap<String, BTreeSet<String>> {
    use prometheus_client::registry::Registry;
    use serin::server::{KubeApiRequests, Metrics, Outcome, Reconciles, ReloadResult};
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let requests = KubeApiRequests::register(&mut registry);
    let reconciles = Reconciles::register(&mut registry);
    let releases = serin::controller::ReleaseMetrics::register(&mut registry);
    metrics.observe(
        "validate-deployments",
        Outcome::Allowed,
        std::time::Duration::from_millis(1),
    );
    metrics.tls_reload(ReloadResult::Success);
    requests.count("GET", "/apis/apps/v1/namespaces/a/deployments/b");
    reconciles.observe(None, std::time::Duration::from_millis(1));
    // A release that has just been promoted, with a check value: every release family.
    let now =
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now());
    let finalising = serin::crd::CanaryStatus {
        release: serin::release::ReleaseStatus {
            phase: serin::release::Phase::Finalising,
            ..Default::default()
        },
        conditions: vec![k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
            type_: "Promoted".into(),
            status: "Unknown".into(),
            reason: "Finalising".into(),
            message: String::new(),
            last_transition_time: now.clone(),
            observed_generation: None,
        }],
        ..Default::default()
    };
    let succeeded = serin::release::ReleaseStatus {
        phase: serin::release::Phase::Succeeded,
        last_checks: vec![serin::release::CheckValue {
            name: "request-success-rate".into(),
            value: Some(100.0),
        }],
        ..Default::default()
    };
    releases.observe("a", "b", &finalising, &succeeded, &now);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");

    let mut families: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some(family) = rest.split_whitespace().next() {
                families.entry(family.to_owned()).or_default();
            }
        } else if !line.starts_with('#') {
            let series: String = line
                .chars()
                .take_while(|c| *c != '{' && *c != ' ')
                .collect();
            let family = families
                .keys()
                .filter(|f| series.starts_with(f.as_str()))
                .max_by_key(|f| f.len())
                .cloned();
            if let Some(family) = family {
                families.entry(family).or_default().insert(series);
            }
        }
    }
    families
}

#[test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
fn metric_names_are_read_from_promql_without_functions_labels_or_variables() {
    let expr = r#"histogram_quantile(0.99, sum by (le, deployment) (rate(response_latency_ms_bucket{namespace="$namespace", deployment=~"a|b"}[$__rate_interval]))) / on(deployment) group_left sum without (pod) (my_made_up:metric offset 5m) > bool 1e3"#;
    assert_eq!(
        metric_names(expr),
        BTreeSet::from([
            "my_made_up:metric".to_owned(),
            "response_latency_ms_bucket".to_owned()
        ])
    );
    assert_eq!(
        variable_metric_names(
            r#"label_values(response_total{namespace="$namespace"}, deployment)"#
        ),
        BTreeSet::from(["response_total".to_owned()])
    );
}

#[test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
fn grafana_dashboard_queries_only_metrics_serin_or_linkerd_export() {
    let dashboard = dashboard();
    let serin = serin_metrics();
    let known: BTreeSet<&str> = serin
        .values()
        .flatten()
        .map(String::as_str)
        .chain(LINKERD_METRICS)
        .collect();
    let queries: Vec<(String, String)> = dashboard_queries(&dashboard)
        .into_iter()
        .chain(variable_queries(&dashboard))
        .collect();
    assert!(queries.len() >= 8, "panels with queries: {queries:?}");

    let mut unknown = Vec::new();
    let mut used = BTreeSet::new();
    for (title, expr) in &queries {
        let names = if title.starts_with('$') {
            variable_metric_names(expr)
        } else {
            metric_names(expr)
        };
        assert!(!names.is_empty(), "{title}: no metric in {expr:?}");
        for name in names {
            if !known.contains(name.as_str()) {
                unknown.push(format!("{title}: {name}"));
            }
            used.insert(name);
        }
    }
    assert!(
        unknown.is_empty(),
        "metrics neither Serin nor Linkerd exports:\n  {}\nSerin's: {:?}",
        unknown.join("\n  "),
        serin.values().flatten().collect::<Vec<_>>()
    );

    // Every family Serin exports is on the dashboard, and the canary's two checks are.
    let unshown: Vec<&String> = serin
        .iter()
        .filter(|(_, series)| series.is_disjoint(&used))
        .map(|(family, _)| family)
        .collect();
    assert!(
        unshown.is_empty(),
        "Serin metrics without a panel: {unshown:?}"
    );
    for name in ["response_total", "response_latency_ms_bucket"] {
        assert!(used.contains(name), "no panel on Linkerd's {name}");
    }

    let ids: Vec<i64> = dashboard["panels"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["id"].as_i64())
        .collect();
    let distinct: BTreeSet<&i64> = ids.iter().collect();
    assert_eq!(distinct.len(), ids.len(), "panel ids are unique: {ids:?}");
}

/// promtool from the local environment's Prometheus package (hack/deps.sh).
fn promtool() -> PathBuf {
    support::hack("deps.sh", &["prometheus"]);
    let cache = std::env::var_os("SERIN_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/serin")
        });
    cache.join("prometheus-deb/bin/promtool")
}

#[test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
fn grafana_dashboard_queries_are_valid_promql() {
    let dashboard = dashboard();
    // Grafana's range variables become a duration; other variables sit inside label
    // strings, where any text is valid.
    let rules: Vec<Value> = dashboard_queries(&dashboard)
        .iter()
        .enumerate()
        .map(|(i, (_, expr))| {
            json!({
                "record": format!("dashboard:query_{i}"),
                "expr": expr.replace("$__rate_interval", "5m"),
            })
        })
        .collect();
    let file = tempfile::Builder::new()
        .suffix(".yaml")
        .tempfile_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("temp file");
    let groups = json!({"groups": [{"name": "dashboard", "rules": rules}]});
    std::fs::write(file.path(), groups.to_string()).expect("write rules");
    let out = std::process::Command::new(promtool())
        .args(["check", "rules"])
        .arg(file.path())
        .output()
        .expect("promtool runs");
    assert!(
        out.status.success(),
        "promtool refuses the dashboard's queries:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
