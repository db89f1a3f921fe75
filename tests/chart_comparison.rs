//! The comparison `e2e_chart` makes between the Helm chart and the kustomize base
//! (tests/support/chart.rs), on small renderings: it needs no cluster and no Helm.

mod support;

use support::chart::{compare, keyed};

const SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: serin, namespace: \
                       serin-system, labels: {app.kubernetes.io/name: serin}}\n\
                       spec: {ports: [{port: 443}]}\n";
const ACCOUNT: &str = "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: serin, namespace: \
                       serin-system}\n";

fn pod(env: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: p, namespace: n}}\n\
         spec: {{containers: [{{name: c, env: [{env}]}}]}}\n"
    )
}

fn stream(documents: &[&str]) -> String {
    documents.join("---\n")
}

/// Helm's own labels and resource policy, and the order of `env`, are the only differences
/// set aside.
#[test]
fn compare_ignores_only_helm_conventions_and_env_order() {
    let kustomize = keyed(
        &stream(&[
            SERVICE,
            ACCOUNT,
            &pod("{name: B, value: '2'}, {name: A, value: '1'}"),
        ]),
        false,
    );
    let helm_service = "apiVersion: v1\nkind: Service\nmetadata: {name: serin, namespace: \
                        serin-system, labels: {app.kubernetes.io/name: serin, \
                        helm.sh/chart: serin-0.1.0, app.kubernetes.io/managed-by: Helm, \
                        app.kubernetes.io/instance: serin, app.kubernetes.io/version: '0.1.0'}, \
                        annotations: {helm.sh/resource-policy: keep}}\n\
                        spec: {ports: [{port: 443}]}\n";
    let chart = keyed(
        &stream(&[
            helm_service,
            ACCOUNT,
            &pod("{name: A, value: '1'}, {name: B, value: '2'}"),
        ]),
        true,
    );
    assert_eq!(compare(&kustomize, &chart), Vec::<String>::new());
}

/// A drift is caught and named by path: an object one side lacks, a changed value, a label
/// or a variable only one side has. Guards against a comparison that passes whatever it is
/// given.
#[test]
fn compare_names_each_difference_by_path() {
    let kustomize = keyed(
        &stream(&[SERVICE, ACCOUNT, &pod("{name: A, value: '1'}")]),
        false,
    );
    let drifted_service = SERVICE
        .replace("port: 443", "port: 8443")
        .replace("name: serin}}", "name: serin, team: a}}");
    let extra =
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: extra, namespace: serin-system}\n";
    let chart = keyed(
        &stream(&[
            &drifted_service,
            extra,
            &pod("{name: A, value: '9'}, {name: C, value: '3'}"),
        ]),
        true,
    );
    let report = compare(&kustomize, &chart).join("\n");
    for expected in [
        "Service serin-system/serin:",
        "/spec/ports/0/port: kustomize 443, chart 8443",
        "/metadata/labels/team: not in kustomize, chart \"a\"",
        "ServiceAccount serin-system/serin: rendered by kustomize, not by the chart",
        "ConfigMap serin-system/extra: rendered by the chart, not by kustomize",
        "Pod n/p:",
        "/spec/containers[name=c]/env[name=A]/value: kustomize \"1\", chart \"9\"",
        "/spec/containers[name=c]/env[name=C]: not in kustomize, chart {\"name\":\"C\",\"value\":\"3\"}",
    ] {
        assert!(report.contains(expected), "{expected:?} not in:\n{report}");
    }
}
