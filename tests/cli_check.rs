//! `serin check` as a user runs it: exit status and output, from a file and from stdin.

use std::io::Write;
use std::process::{Command, Output, Stdio};

const GOOD: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  annotations: {serin.dev/enabled: "true"}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: app, image: "app:1", ports: [{containerPort: 8080}]}]}
"#;

fn check(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_serin"))
        .arg("check")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("serin starts");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("serin finishes")
}

#[test]
fn a_valid_manifest_on_stdin_exits_zero() {
    let out = check(&["-f", "-"], GOOD);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("-: Deployment web: ok (canary release enabled)"),
        "{stdout}"
    );
}

#[test]
fn a_file_with_mistakes_exits_one_and_prints_each_with_the_file_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("web.yaml");
    let bad = GOOD.replace(
        r#"{serin.dev/enabled: "true"}"#,
        r#"{serin.dev/enabled: "true", serin.dev/threshold: "0", serin.dev/latncy: "1s"}"#,
    );
    std::fs::write(&path, bad).expect("write manifest");
    let file = path.to_string_lossy().into_owned();
    let out = check(&["-f", &file], "");
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<_> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(
        lines
            .iter()
            .all(|l| l.starts_with(&format!("{file}: Deployment web: serin.dev/"))),
        "{stdout}"
    );
    assert!(
        stdout.contains("did you mean serin.dev/latency?"),
        "{stdout}"
    );
}

#[test]
fn an_unreadable_file_exits_one() {
    let out = check(&["-f", "/nonexistent/serin-manifest.yaml"], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
}

#[test]
fn policies_given_with_dash_dash_policy_apply_as_in_the_cluster() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        "apiVersion: serin.dev/v1beta1\nkind: CanaryPolicy\nmetadata: {name: careful}\nspec:\n  limits: {maxStepWeight: 5}\n",
    )
    .expect("write policy");
    let policy = policy.to_string_lossy().into_owned();
    let out = check(&["-f", "-", "--policy", &policy], GOOD);
    assert_eq!(
        out.status.code(),
        Some(1),
        "the default step of 10 is beyond 5"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.trim(),
        "-: Deployment web: serin.dev/step-weight: a step of 10 exceeds the limit maxStepWeight 5 (CanaryPolicy careful)"
    );
    let within = GOOD.replace(
        r#"{serin.dev/enabled: "true"}"#,
        r#"{serin.dev/enabled: "true", serin.dev/step-weight: "5"}"#,
    );
    let out = check(&["-f", "-", "--policy", &policy], &within);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn an_opt_in_whose_derived_names_are_too_long_or_taken_exits_one_naming_them() {
    let name = "w".repeat(60);
    let long = GOOD.replace("name: web\n", &format!("name: {name}\n"));
    let out = check(&["-f", "-"], &long);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "-: Deployment {name}: metadata.name: \"{name}\" makes the primary Deployment \
             \"{name}-primary\" 68 characters long, above the limit of 63 for label values"
        )),
        "{stdout}"
    );
    // Two Deployments of the same files taking one Service.
    let second = GOOD.replace("name: web\n", "name: web-v2\n").replace(
        r#"{serin.dev/enabled: "true"}"#,
        r#"{serin.dev/enabled: "true", serin.dev/service: web}"#,
    );
    let out = check(&["-f", "-"], &format!("{GOOD}---\n{second}"));
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(
            "-: Deployment web-v2: serin.dev/service: Service \"web\" is already the apex \
             Service of opted-in Deployment \"web\""
        ),
        "{stdout}"
    );
}

#[test]
fn a_metrics_provider_that_cannot_see_the_providers_requests_exits_one_naming_the_allowed() {
    let with = |annotations: &str| {
        GOOD.replace(
            r#"{serin.dev/enabled: "true"}"#,
            &format!(r#"{{serin.dev/enabled: "true", {annotations}}}"#),
        )
    };
    let out = check(
        &["-f", "-"],
        &with("serin.dev/provider: gloo, serin.dev/metrics-provider: traefik"),
    );
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.trim_end(),
        "-: Deployment web: serin.dev/metrics-provider: \"traefik\" does not see the canary's \
         requests with serin.dev/provider gloo; allowed with gloo: linkerd, envoy",
    );
    let out = check(
        &["-f", "-"],
        &with("serin.dev/provider: gatewayapi, serin.dev/metrics-provider: traefik"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn an_analysis_template_is_checked_as_admission_checks_it() {
    let template = r#"apiVersion: serin.dev/v1beta1
kind: AnalysisTemplate
metadata: {name: checks, namespace: shop}
spec:
  metrics:
  - name: request-success-rate
    thresholdRange: {min: 99}
    address: http://thanos.monitoring:10902
    secretRef: {name: thanos-auth}
"#;
    let out = check(&["-f", "-"], template);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(
            "-: AnalysisTemplate shop/checks: spec.metrics[0].address: \
             \"http://thanos.monitoring:10902\" would carry the credentials of \
             spec.metrics[0].secretRef in clear; credentials are sent only over https://"
        ),
        "{stdout}"
    );
    let fixed = template.replace("http://", "https://");
    let out = check(&["-f", "-"], &fixed);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn hosts_are_checked_each_bad_one_named_and_refused_off_gatewayapi() {
    let with = |annotations: &str| {
        GOOD.replace(
            r#"{serin.dev/enabled: "true"}"#,
            &format!(r#"{{serin.dev/enabled: "true", {annotations}}}"#),
        )
    };
    let out = check(
        &["-f", "-"],
        &with(
            r#"serin.dev/provider: gatewayapi, serin.dev/gateway: infra/public, serin.dev/hosts: "web.example.com,*.example.com""#,
        ),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = check(
        &["-f", "-"],
        &with(
            r#"serin.dev/provider: gatewayapi, serin.dev/gateway: infra/public, serin.dev/hosts: "Web.example.com,10.0.0.1,a.test:80,a.b,a.b""#,
        ),
    );
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let allowed = "must be a comma-separated list of at most 16 distinct hostnames, each a \
                   lowercase DNS name such as app.example.com, or one with a wildcard first \
                   label such as *.example.com, of at most 253 characters; no IP address, no port";
    assert_eq!(
        stdout.trim_end(),
        [
            format!(r#"-: Deployment web: serin.dev/hosts: "Web.example.com" {allowed}"#),
            format!(r#"-: Deployment web: serin.dev/hosts: "a.test:80" {allowed}"#),
            r#"-: Deployment web: serin.dev/hosts: "10.0.0.1" is an IP address; Gateway API routes by hostname only"#.to_owned(),
            r#"-: Deployment web: serin.dev/hosts: "a.b" listed more than once; each host must appear once"#.to_owned(),
        ]
        .join("\n"),
    );
    let out = check(
        &["-f", "-"],
        &with(r#"serin.dev/provider: gloo, serin.dev/hosts: web.example.com"#),
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim_end(),
        "-: Deployment web: serin.dev/hosts: only applies with serin.dev/provider gatewayapi, not \
         gloo; gloo routes the domains of your VirtualService",
    );
}

#[test]
fn mirroring_and_affinity_pass_on_gatewayapi_and_are_refused_elsewhere_naming_gatewayapi() {
    let with = |annotations: &str| {
        GOOD.replace(
            r#"{serin.dev/enabled: "true"}"#,
            &format!(r#"{{serin.dev/enabled: "true", {annotations}}}"#),
        )
    };
    let extras = r#"serin.dev/mirror-checks: "2", serin.dev/mirror-percent: "50", serin.dev/affinity-cookie: serin-canary, serin.dev/affinity-max-age: 1h"#;
    let out = check(
        &["-f", "-"],
        &with(&format!("serin.dev/provider: gatewayapi, {extras}")),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = check(
        &["-f", "-"],
        &with(&format!("serin.dev/provider: linkerd, {extras}")),
    );
    assert_eq!(out.status.code(), Some(1));
    let needs = "needs serin.dev/provider gatewayapi (its router's RequestMirror and \
                 ResponseHeaderModifier filters), not linkerd";
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim_end(),
        [
            format!("-: Deployment web: serin.dev/affinity-cookie: {needs}"),
            format!("-: Deployment web: serin.dev/affinity-max-age: {needs}"),
            format!("-: Deployment web: serin.dev/mirror-checks: {needs}"),
            format!("-: Deployment web: serin.dev/mirror-percent: {needs}"),
        ]
        .join("\n"),
    );
}

/// Flagger's `analysis.metrics` and `webhooks`, pasted into an AnalysisTemplate (written after
/// Flagger's documented examples): `serin check` accepts what maps and names what does not.
#[test]
fn a_pasted_flagger_analysis_is_accepted_and_what_does_not_map_is_named() {
    let template = r#"apiVersion: serin.dev/v1beta1
kind: AnalysisTemplate
metadata: {name: from-flagger, namespace: shop}
spec:
  metrics:
  - name: request-success-rate
    interval: 1m
    thresholdRange: {min: 99}
  - name: request-duration
    interval: 30s
    thresholdRange: {max: 500}
  - name: failure-share
    templateRef: {name: failure-share, namespace: monitoring}
    thresholdRange: {max: 2}
    interval: 2m
    query: 100 * sum(rate(errors{app="{{ target }}"}[{{ interval }}])) / sum(rate(requests{app="{{ target }}"}[{{ interval }}]))
  webhooks:
  - name: smoke
    type: pre-rollout
    url: http://loadtester.test/
    timeout: 15s
    metadata: {type: bash, cmd: "curl -s http://web-canary.shop/healthz"}
  - name: load
    type: rollout
    url: http://loadtester.test/
    metadata: {cmd: "hey -z 1m -q 10 -c 2 http://web-canary.shop/"}
  - name: on-call
    type: confirm-promotion
    url: http://gate.test/approve
    muteAlert: false
"#;
    let out = check(&["-f", "-"], template);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // As pasted from Flagger: the query lives in a MetricTemplate Serin does not read.
    let bare = template.replace(
        "    query: 100 * sum(rate(errors{app=\"{{ target }}\"}[{{ interval }}])) / sum(rate(requests{app=\"{{ target }}\"}[{{ interval }}]))\n",
        "",
    );
    assert_ne!(bare, template);
    let out = check(&["-f", "-"], &bare);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("spec.metrics[2].templateRef: Serin reads no Flagger MetricTemplate"),
        "{stdout}"
    );
}

#[test]
fn the_confidence_and_a_latency_below_the_histograms_buckets_are_checked_as_admission_does() {
    let with = |annotations: &str| {
        GOOD.replace(
            r#"{serin.dev/enabled: "true"}"#,
            &format!(r#"{{serin.dev/enabled: "true", {annotations}}}"#),
        )
    };
    let out = check(
        &["-f", "-"],
        &with(
            r#"serin.dev/confidence: "80", serin.dev/provider: gatewayapi, serin.dev/metrics-provider: traefik, serin.dev/latency: 50ms"#,
        ),
    );
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(
            "-: Deployment web: serin.dev/confidence: \"80\" must be a percentage from 90 to 99.9"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "-: Deployment web: serin.dev/latency: \"50ms\" is below the smallest bucket of \
             traefik's latency histogram (100ms)"
        ),
        "{stdout}"
    );
    // A policy's minimum confidence, as in the cluster.
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        "apiVersion: serin.dev/v1beta1\nkind: CanaryPolicy\nmetadata: {name: careful}\nspec:\n  limits: {minConfidence: 99.5}\n",
    )
    .expect("write policy");
    let policy = policy.to_string_lossy().into_owned();
    let out = check(&["-f", "-", "--policy", &policy], GOOD);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "-: Deployment web: serin.dev/confidence: 99 is below the limit minConfidence 99.5 \
         (allowed: 99.5 to 99.9) (CanaryPolicy careful)"
    );
    let out = check(
        &["-f", "-", "--policy", &policy],
        &with(r#"serin.dev/confidence: "99.9""#),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
