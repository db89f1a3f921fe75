//! Comparing what the Helm chart `charts/serin` renders with what `kubectl kustomize` renders
//! from `manifests/`: objects keyed by identity, Helm's conventional additions dropped, every
//! other difference named by its path. Used by `e2e_chart`; tested in `chart_comparison`.

use std::collections::BTreeMap;

use serde_json::Value;

use super::kustomize::parse_documents;

/// The labels Helm charts conventionally add to every object (charts/serin/templates/
/// _helpers.tpl, serin.helmLabels), and Helm's resource policy on the CRDs: the only
/// differences from the kustomize rendering the comparison drops.
const HELM_LABELS: &[&str] = &[
    "helm.sh/chart",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
];
const HELM_ANNOTATIONS: &[&str] = &["helm.sh/resource-policy"];

/// `kind.group namespace/name` of an object.
fn identity(object: &Value) -> String {
    let group = object["apiVersion"]
        .as_str()
        .and_then(|v| v.split_once('/'))
        .map(|(group, _)| format!(".{group}"))
        .unwrap_or_default();
    format!(
        "{}{group} {}/{}",
        object["kind"].as_str().unwrap_or_default(),
        object["metadata"]["namespace"].as_str().unwrap_or_default(),
        object["metadata"]["name"].as_str().unwrap_or_default()
    )
}

/// Removes `keys` from the map `field` of the object at `parent`, and the map itself if that
/// leaves it empty.
fn drop_keys(object: &mut Value, parent: &str, field: &str, keys: &[&str]) {
    let Some(Value::Object(parent)) = object.pointer_mut(parent) else {
        return;
    };
    if let Some(Value::Object(map)) = parent.get_mut(field) {
        for key in keys {
            map.remove(*key);
        }
        if map.is_empty() {
            parent.remove(field);
        }
    }
}

/// Orders every `env` list by variable name. Kustomize's strategic merge puts a Component's
/// variables first, the chart writes them in one place: a difference of order only, which
/// matters to Kubernetes only when a value refers to another variable as `$(NAME)`. None
/// may, or this comparison would have to keep the order.
fn sort_env(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, item) in map.iter_mut() {
                if key == "env"
                    && let Value::Array(vars) = item
                {
                    for var in vars.iter() {
                        assert!(
                            !var["value"].as_str().unwrap_or_default().contains("$("),
                            "{var} refers to another variable: compare env in order"
                        );
                    }
                    vars.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
                } else {
                    sort_env(item);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(sort_env),
        _ => {}
    }
}

/// The objects of a rendering by identity; `helm_rendering` drops what Helm adds.
pub(crate) fn keyed(yaml: &str, helm_rendering: bool) -> BTreeMap<String, Value> {
    parse_documents(yaml)
        .into_iter()
        .map(|mut object| {
            if helm_rendering {
                drop_keys(&mut object, "/metadata", "labels", HELM_LABELS);
                drop_keys(&mut object, "/metadata", "annotations", HELM_ANNOTATIONS);
            }
            sort_env(&mut object);
            (identity(&object), object)
        })
        .collect()
}

/// Where two values differ, one line per difference: `path: kustomize …, chart …`.
fn differences(path: &str, kustomize: &Value, chart: &Value, out: &mut Vec<String>) {
    match (kustomize, chart) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, value) in a {
                let at = format!("{path}/{key}");
                match b.get(key) {
                    Some(other) => differences(&at, value, other, out),
                    None => out.push(format!("{at}: kustomize {value}, not in the chart")),
                }
            }
            for (key, value) in b.iter().filter(|(k, _)| !a.contains_key(*k)) {
                out.push(format!("{path}/{key}: not in kustomize, chart {value}"));
            }
        }
        (Value::Array(a), Value::Array(b)) => match (by_name(a), by_name(b)) {
            // Lists of named items (containers, env, volumes, webhooks): item by item.
            (Some(a), Some(b)) => {
                for (name, x) in &a {
                    let at = format!("{path}[name={name}]");
                    match b.iter().find(|(n, _)| n == name) {
                        Some((_, y)) => differences(&at, x, y, out),
                        None => out.push(format!("{at}: kustomize {x}, not in the chart")),
                    }
                }
                for (name, y) in b.iter().filter(|(n, _)| !a.iter().any(|(m, _)| m == n)) {
                    out.push(format!("{path}[name={name}]: not in kustomize, chart {y}"));
                }
                let order = |items: &[(&str, &Value)]| -> Vec<String> {
                    items.iter().map(|(n, _)| n.to_string()).collect()
                };
                if a.len() == b.len() && order(&a) != order(&b) {
                    out.push(format!(
                        "{path}: another order, kustomize {:?}, chart {:?}",
                        order(&a),
                        order(&b)
                    ));
                }
            }
            _ => {
                for i in 0..a.len().max(b.len()) {
                    let at = format!("{path}/{i}");
                    match (a.get(i), b.get(i)) {
                        (Some(x), Some(y)) => differences(&at, x, y, out),
                        (Some(x), None) => {
                            out.push(format!("{at}: kustomize {x}, not in the chart"))
                        }
                        (None, Some(y)) => out.push(format!("{at}: not in kustomize, chart {y}")),
                        (None, None) => {}
                    }
                }
            }
        },
        (a, b) if a != b => out.push(format!("{path}: kustomize {a}, chart {b}")),
        _ => {}
    }
}

/// The items of a list by their `name`, in order, when every item has a name of its own.
fn by_name(items: &[Value]) -> Option<Vec<(&str, &Value)>> {
    let named: Vec<(&str, &Value)> = items
        .iter()
        .map(|item| Some((item.get("name")?.as_str()?, item)))
        .collect::<Option<_>>()?;
    let mut names: Vec<&str> = named.iter().map(|(n, _)| *n).collect();
    names.sort_unstable();
    names.dedup();
    (names.len() == named.len()).then_some(named)
}

/// What differs between the two renderings of one choice, readably; empty when they agree.
pub(crate) fn compare(
    kustomize: &BTreeMap<String, Value>,
    chart: &BTreeMap<String, Value>,
) -> Vec<String> {
    let mut report = Vec::new();
    for (id, object) in kustomize {
        match chart.get(id) {
            None => report.push(format!("{id}: rendered by kustomize, not by the chart")),
            Some(other) => {
                let mut lines = Vec::new();
                differences("", object, other, &mut lines);
                if !lines.is_empty() {
                    report.push(format!("{id}:\n    {}", lines.join("\n    ")));
                }
            }
        }
    }
    for id in chart.keys().filter(|id| !kustomize.contains_key(*id)) {
        report.push(format!("{id}: rendered by the chart, not by kustomize"));
    }
    report
}
