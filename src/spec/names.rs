//! The names Serin derives from an opted-in workload (a Deployment or a DaemonSet) and the
//! limits Kubernetes sets them. A workload whose name, selector labels, `serin.dev/service`,
//! `serin.dev/ingress` or ConfigMaps make one of them too long could never be released: the
//! controller's writes would all be refused. So the opt-in is refused instead, naming the
//! derived name, its length and the limit. Both kinds have the same limits: a DaemonSet's own
//! name may be a DNS subdomain of 253 characters, but its `-primary`, its default
//! `serin.dev/service` and the `serin.dev/owner` label are held to 63 as a Deployment's are.
//!
//! | derived from | name | limit |
//! |---|---|---|
//! | workload `<name>` | Deployment or DaemonSet `<name>-primary` | 63: its pods carry it in a label (Linkerd's `linkerd.io/proxy-deployment` or `linkerd.io/proxy-daemonset`, the `deployment` of the metrics); `<name>` itself is the `serin.dev/owner` label of every object Serin makes |
//! | selector label value `v` | primary pods' label value `v-primary` | 63, and a label value starts with a letter or digit |
//! | `serin.dev/service` `<svc>` | Services `<svc>-primary`, `<svc>-canary` | 63 (Service names are DNS-1035 labels) |
//! | `serin.dev/ingress` `<ing>` | canary Ingress `<ing>-canary` | 253 (object names) |
//! | ConfigMap / Secret `<c>` the pod template uses | copy `<c>-primary` | 253 |
//!
//! The router objects other than NGINX's are named after `<svc>` (at most 63), and Gloo's
//! Upstreams `<namespace>-<svc>-canaryupstream-<port>` stay below 150 characters: neither can
//! be too long once the table above holds. The `-primary` copy of an HPA is named after the
//! HPA, which is not part of the Deployment: an HPA name of more than 245 characters is
//! reported by the controller.

use super::Workload;

use super::Problem;
use super::annotations::{Key, Reading, quoted};
use super::model::Provider;
use super::{CANARY_SUFFIX, PRIMARY_SUFFIX, config_refs};

/// Label values and DNS-1035 labels (Service names).
const MAX_LABEL: usize = 63;
/// DNS-1123 subdomains: most object names.
const MAX_NAME: usize = 253;

/// Refuses what would make a derived name too long; `deploy` is `None` when only the
/// annotations are known (then only the names derived from them are checked).
pub(super) fn check(reading: &mut Reading<'_>, workload: Option<&dyn Workload>) {
    let spec = &reading.spec;
    let mut found: Vec<(Option<Key>, Problem)> = Vec::new();
    if reading.usable(Key::Service) {
        // `-primary` is the longer suffix: the first name to cross the limit.
        let derived = format!("{}{PRIMARY_SUFFIX}", spec.service);
        if let Some(why) = too_long("Service", &derived, MAX_LABEL, "for Service names") {
            let shown = reading.shown(Key::Service);
            found.push((
                Some(Key::Service),
                Problem::new(Key::Service.annotation(), format!("{shown} makes {why}")),
            ));
        }
    }
    if let Some(ingress) = &spec.ingress
        && spec.provider == Provider::Nginx
        && reading.usable(Key::Ingress)
        && reading.usable(Key::Provider)
    {
        let derived = format!("{ingress}{CANARY_SUFFIX}");
        if let Some(why) = too_long("Ingress", &derived, MAX_NAME, OBJECT_NAMES) {
            let shown = reading.shown(Key::Ingress);
            found.push((
                Some(Key::Ingress),
                Problem::new(Key::Ingress.annotation(), format!("{shown} makes {why}")),
            ));
        }
    }
    if let Some(workload) = workload {
        found.extend(of_workload(workload).into_iter().map(|p| (None, p)));
    }
    for (key, problem) in found {
        match key {
            Some(key) => reading.refuse(key, problem),
            None => reading.problems.push(problem),
        }
    }
}

/// The names derived from the workload itself: its primary, its primary pods' selector
/// labels and the primary copies of its configs.
fn of_workload(workload: &dyn Workload) -> Vec<Problem> {
    let mut problems = Vec::new();
    let name = workload.meta().name.as_deref().unwrap_or_default();
    let primary = format!("{name}{PRIMARY_SUFFIX}");
    let kind = workload.kind();
    let limit = format!(
        "for label values, and the primary's pods carry its name in one (such as Linkerd's \
         linkerd.io/proxy-{})",
        kind.as_str().to_lowercase()
    );
    if let Some(why) = too_long(kind.as_str(), &primary, MAX_LABEL, &limit) {
        problems.push(Problem::new(
            "metadata.name",
            format!("{} makes the primary {why}", quoted(name)),
        ));
    }
    let labels = workload.selector().and_then(|s| s.match_labels.as_ref());
    for (key, value) in labels.into_iter().flatten() {
        let derived = format!("{value}{PRIMARY_SUFFIX}");
        let field = format!("spec.selector.matchLabels.{key}");
        if value.is_empty() {
            problems.push(Problem::new(
                field,
                format!(
                    "\"\" would make the primary pods' label value {derived:?}, which is not a \
                     label value (it must start with a letter or digit)"
                ),
            ));
        } else if derived.len() > MAX_LABEL {
            problems.push(Problem::new(
                field,
                format!(
                    "{} makes the primary pods' label value {} {} characters long, above the \
                     limit of {MAX_LABEL} for label values",
                    quoted(value),
                    quoted(&derived),
                    derived.len()
                ),
            ));
        }
    }
    let refs = workload.template().map(config_refs).unwrap_or_default();
    for config in refs {
        let derived = format!("{}{PRIMARY_SUFFIX}", config.name);
        let kind = config.kind.to_string();
        if let Some(why) = too_long(&kind, &derived, MAX_NAME, OBJECT_NAMES) {
            problems.push(Problem::new(
                "spec.template",
                format!(
                    "{} {} makes the primary's copy {why}",
                    config.kind,
                    quoted(&config.name)
                ),
            ));
        }
    }
    problems
}

const OBJECT_NAMES: &str = "for object names";

/// `Service "…-primary" 64 characters long, above the limit of 63 for Service names`, or
/// `None` when `name` fits.
fn too_long(kind: &str, name: &str, limit: usize, limit_of: &str) -> Option<String> {
    (name.len() > limit).then(|| {
        format!(
            "{kind} {} {} characters long, above the limit of {limit} {limit_of}",
            quoted(name),
            name.len()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::super::{ENABLED, OptIn, read_annotations, read_deployment};
    use k8s_openapi::api::apps::v1::Deployment;
    use serde_json::{Value, json};

    /// An opted-in Deployment `name` selecting `app: <app>`, using ConfigMap `config`.
    fn deployment(name: &str, app: &str, config: &str, annotations: Value) -> Deployment {
        let mut all = json!({ENABLED: "true", "serin.dev/service": "web"});
        if let (Some(all), Some(extra)) = (all.as_object_mut(), annotations.as_object()) {
            all.extend(extra.clone());
        }
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "shop", "annotations": all},
            "spec": {
                "selector": {"matchLabels": {"app": app}},
                "template": {
                    "metadata": {"labels": {"app": app}},
                    "spec": {
                        "containers": [{"name": "app", "ports": [{"containerPort": 8080}],
                                        "envFrom": [{"configMapRef": {"name": config}}]}],
                    }
                }
            }
        }))
        .unwrap_or_else(|e| panic!("test Deployment: {e}"))
    }

    fn problems(deploy: &Deployment) -> Vec<String> {
        match read_deployment(deploy) {
            Err(problems) => problems.iter().map(ToString::to_string).collect(),
            Ok(ok) => panic!("expected problems, got {ok:?}"),
        }
    }

    /// The two lines refusing workload `name` of `kind` (with the default Service) whose
    /// `-primary` is too long.
    fn name_refusals(kind: &str, name: &str) -> [String; 2] {
        let primary = format!("{name}-primary");
        let length = primary.len();
        let resource = kind.to_lowercase();
        [
            format!(
                "metadata.name: {name:?} makes the primary {kind} {primary:?} {length} \
                 characters long, above the limit of 63 for label values, and the primary's \
                 pods carry its name in one (such as Linkerd's linkerd.io/proxy-{resource})"
            ),
            format!(
                "serin.dev/service: {name:?} (default) makes Service {primary:?} {length} \
                 characters long, above the limit of 63 for Service names"
            ),
        ]
    }

    fn admitted(deploy: &Deployment) -> bool {
        matches!(read_deployment(deploy), Ok(OptIn::Enabled(_)))
    }

    #[test]
    fn names_at_their_limits_are_admitted() {
        let name = "d".repeat(55);
        let app = "a".repeat(55);
        let config = "c".repeat(245);
        let service = "s".repeat(55);
        let deploy = deployment(&name, &app, &config, json!({"serin.dev/service": service}));
        assert!(admitted(&deploy), "{:?}", read_deployment(&deploy));
    }

    #[test]
    fn a_63_character_deployment_name_is_refused_naming_its_primary_and_default_service() {
        let name = "d".repeat(63);
        let annotations = json!({ENABLED: "true"});
        let mut deploy = deployment(&name, "web", "config", json!({}));
        deploy.metadata.annotations = serde_json::from_value(annotations).ok();
        assert_eq!(problems(&deploy), name_refusals("Deployment", &name));
    }

    #[test]
    fn a_service_of_56_characters_is_refused_for_its_primary_service() {
        let service = "s".repeat(56);
        let deploy = deployment(
            "web",
            "web",
            "config",
            json!({"serin.dev/service": service}),
        );
        assert_eq!(
            problems(&deploy),
            [format!(
                "serin.dev/service: {service:?} makes Service \"{service}-primary\" 64 \
                 characters long, above the limit of 63 for Service names"
            )]
        );
        // The same reading from the annotations alone, as `serin check` of parts does.
        let annotations = deploy.metadata.annotations.clone().unwrap_or_default();
        assert!(read_annotations("web", &annotations, None).is_err());
    }

    #[test]
    fn a_selector_value_of_56_characters_or_empty_is_refused_naming_the_primary_label() {
        let app = "a".repeat(56);
        let deploy = deployment("web", &app, "config", json!({}));
        assert_eq!(
            problems(&deploy),
            [format!(
                "spec.selector.matchLabels.app: {app:?} makes the primary pods' label value \
                 \"{app}-primary\" 64 characters long, above the limit of 63 for label values"
            )]
        );
        let deploy = deployment("web", "", "config", json!({}));
        assert!(problems(&deploy)[0].contains("\"-primary\", which is not a label value"));
    }

    #[test]
    fn a_config_map_whose_copy_would_be_too_long_is_refused() {
        let config = "c".repeat(246);
        let deploy = deployment("web", "web", &config, json!({}));
        let lines = problems(&deploy);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].starts_with("spec.template: ConfigMap \"ccc")
                && lines[0].contains("c\" makes the primary's copy ConfigMap \"ccc")
                && lines[0].ends_with(
                    "ccc-primary\" 254 characters long, above the limit of 253 for object names"
                ),
            "{}",
            lines[0]
        );
    }

    #[test]
    fn an_ingress_whose_canary_would_be_too_long_is_refused_with_nginx() {
        let ingress = "i".repeat(247);
        let nginx = json!({"serin.dev/provider": "nginx", "serin.dev/ingress": ingress});
        let lines = problems(&deployment("web", "web", "config", nginx));
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].starts_with("serin.dev/ingress: \"iii"),
            "{}",
            lines[0]
        );
        assert!(lines[0].contains("254 characters long, above the limit of 253"));
    }

    #[test]
    fn a_daemonset_name_is_held_to_the_limits_of_its_primary_and_its_services() {
        use super::super::read_workload;
        use k8s_openapi::api::apps::v1::DaemonSet;
        let daemonset = |name: &str| -> DaemonSet {
            let deploy = deployment(name, "agent", "config", json!({}));
            let mut value = serde_json::to_value(deploy).unwrap_or_default();
            if let Some(annotations) = value["metadata"]["annotations"].as_object_mut() {
                annotations.remove("serin.dev/service");
            }
            if let Some(object) = value.as_object_mut() {
                object.insert("apiVersion".into(), json!("apps/v1"));
                object.insert("kind".into(), json!("DaemonSet"));
            }
            if let Some(spec) = value["spec"].as_object_mut() {
                spec.remove("replicas");
            }
            serde_json::from_value(value).unwrap_or_else(|e| panic!("test DaemonSet: {e}"))
        };
        // 55 characters: `<name>-primary` is 63.
        let fits = daemonset(&"a".repeat(55));
        assert!(
            matches!(read_workload(&fits), Ok(OptIn::Enabled(_))),
            "{:?}",
            read_workload(&fits)
        );
        // 56: a valid DaemonSet name (up to 253), but its primary and Services are not.
        let name = "a".repeat(56);
        let lines: Vec<String> = match read_workload(&daemonset(&name)) {
            Err(problems) => problems.iter().map(ToString::to_string).collect(),
            Ok(ok) => panic!("expected problems, got {ok:?}"),
        };
        assert_eq!(lines, name_refusals("DaemonSet", &name));
        assert!(lines[0].contains("\"aaaaaaaa") && lines[0].contains(" 64 characters"));
        // A name at the object limit is refused the same way, not accepted or cut.
        let longest = "a".repeat(253);
        assert!(read_workload(&daemonset(&longest)).is_err());
    }

    #[test]
    fn a_deployment_that_is_not_opted_in_has_no_derived_names_to_check() {
        let name = "d".repeat(63);
        let mut deploy = deployment(&name, &"a".repeat(60), "config", json!({}));
        deploy.metadata.annotations = serde_json::from_value(json!({ENABLED: "false"})).ok();
        assert_eq!(read_deployment(&deploy), Ok(OptIn::Disabled));
    }
}
