//! DaemonSet releases on the local cluster (kwok's fake node runs the pods; the traffic
//! simulator gives DaemonSet versions traffic as it does Deployments): a DaemonSet opts in by
//! the same annotations, gets a `-primary` DaemonSet, keeps its canary off every node between
//! releases with the node-selector entry `serin.dev/idle`, and is promoted or rolled back on
//! the same checks. The users' road: the kubectl commands people use on a DaemonSet start a
//! release exactly when the pod template (or a tracked ConfigMap) changed, and the primary
//! stays on its nodes throughout. The protection of what Serin makes for a DaemonSet is in
//! `tests/e2e_protection.rs`.

mod support;

use std::time::Duration;

use kube::Client;
use serin::release::{Phase, ReleaseStatus};
use support::daemonset::{
    SETTLE, assert_idle, image, manifest, manifest_named, opt_in, ready_on_nodes,
    scheduled_on_nodes, wait_opted_in,
};
use support::release::{
    Version, apply, canary, config_map, reading_config, release_status, wait_phase,
};
use support::{kubectl, wait_until};

const RELEASE: Duration = Duration::from_secs(150);

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn a_good_daemonset_release_is_promoted_and_its_canary_idles_again() {
    let (client, ns) = agent_opted_in("ds-good").await;
    let ns = &ns.name;
    assert!(image(ns, "agent-primary").ends_with(":1"));

    apply(&manifest(ns, &Version::good("2"), &[]));
    wait_phase(&client, ns, "agent", Phase::Progressing, SETTLE).await;
    wait_phase(&client, ns, "agent", Phase::Succeeded, RELEASE).await;
    assert!(image(ns, "agent-primary").ends_with(":2"));
    wait_canary_idle(ns, "the canary idle again").await;
}

#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn a_bad_daemonset_release_is_rolled_back_and_its_primary_left_alone() {
    let (client, ns) = agent_opted_in("ds-bad").await;
    let ns = &ns.name;

    let broken = Version {
        error_rate: 0.5,
        ..Version::good("2")
    };
    apply(&manifest(ns, &broken, &[]));
    wait_phase(&client, ns, "agent", Phase::Failed, RELEASE).await;
    assert!(
        image(ns, "agent-primary").ends_with(":1"),
        "primary untouched"
    );
    assert!(ready_on_nodes(ns, "agent-primary") >= 1);
    wait_canary_idle(ns, "the canary idle after the rollback").await;
}

/// A test namespace where `agent` is opted in at version 1, its canary idle.
async fn agent_opted_in(prefix: &str) -> (Client, support::TestNamespace) {
    let (client, ns) = support::release_namespace(prefix).await;
    opt_in(&client, &ns.name, &[]).await;
    (client, ns)
}

/// Waits until no canary pod runs, then checks the switch is back.
async fn wait_canary_idle(ns: &str, what: &str) {
    wait_until(what, SETTLE, || async {
        match ready_on_nodes(ns, "agent") {
            0 => Ok(()),
            n => Err(format!("{n} canary pods Ready")),
        }
    })
    .await;
    assert_idle(ns);
}

/// Follows the release that `agent`'s last write started until it is promoted, sampling
/// twice a second that the primary is scheduled and Ready on its node all along; panics on a
/// rollback, on a primary off its node, or after [`RELEASE`]. The status it ended with.
async fn promoted_with_the_primary_on_its_nodes(client: &Client, ns: &str) -> ReleaseStatus {
    let deadline = tokio::time::Instant::now() + RELEASE;
    let mut seen_progressing = false;
    let mut samples = 0;
    loop {
        let status = release_status(client, ns, "agent").await;
        let (scheduled, ready) = (
            scheduled_on_nodes(ns, "agent-primary"),
            ready_on_nodes(ns, "agent-primary"),
        );
        assert!(
            scheduled >= 1 && ready >= 1,
            "the primary left its node during the release: {scheduled} scheduled, {ready} \
             Ready (phase {:?}, after {samples} samples)",
            status.phase
        );
        samples += 1;
        seen_progressing |= status.phase == Phase::Progressing;
        if status.phase == Phase::Succeeded && seen_progressing {
            eprintln!("promoted; the primary was on its node in all {samples} samples");
            return status;
        }
        assert!(
            status.phase != Phase::Failed,
            "the release failed: {status:?}"
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "no promotion in {RELEASE:?}: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn kubectl_ok(what: &str, args: &[&str]) {
    let (ok, _, stderr) = kubectl(args, None);
    assert!(ok, "{what}: {stderr}");
}

/// The users' road: `kubectl set image` on the opted-in DaemonSet starts a release, and the
/// primary keeps its pod on the node throughout.
#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn kubectl_set_image_starts_a_release_and_never_takes_the_primary_off_its_nodes() {
    let (client, ns) = agent_opted_in("ds-set-image").await;
    let ns = &ns.name;

    let image_arg = "app=example.invalid/agent:3";
    let args = ["-n", ns, "set", "image", "daemonset/agent", image_arg];
    kubectl_ok("kubectl set image", &args);
    promoted_with_the_primary_on_its_nodes(&client, ns).await;
    assert_eq!(image(ns, "agent-primary"), "example.invalid/agent:3");
    assert_idle(ns);
}

/// The rest of the users' road, one after the other on one DaemonSet: `kubectl rollout
/// restart` and a merge patch of the pod template are each released (promoted, the primary on
/// its node throughout), while `kubectl annotate` of a Serin setting alone is taken up
/// without a new revision.
#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn rollout_restart_and_a_template_patch_are_released_and_an_annotation_alone_is_not() {
    let (client, ns) = agent_opted_in("ds-road").await;
    let ns = &ns.name;
    let initial = release_status(&client, ns, "agent").await.revision;

    kubectl_ok(
        "kubectl rollout restart",
        &["-n", ns, "rollout", "restart", "daemonset/agent"],
    );
    let restarted = promoted_with_the_primary_on_its_nodes(&client, ns).await;
    assert_ne!(restarted.revision, initial, "a restart is a new revision");
    let restarted_at =
        "{.spec.template.metadata.annotations.kubectl\\.kubernetes\\.io/restartedAt}";
    assert!(
        !support::daemonset::field(ns, "agent-primary", restarted_at).is_empty(),
        "the primary's template carries the restart"
    );
    wait_canary_idle(ns, "the canary idle after the restart").await;

    let env = r#"{"spec":{"template":{"spec":{"containers":[{"name":"app","env":[{"name":"LOG_LEVEL","value":"debug"}]}]}}}}"#;
    // A merge patch replaces the container list: the patch names the image again.
    let env = env.replace(
        r#""name":"app","#,
        r#""name":"app","image":"example.invalid/agent:1","ports":[{"containerPort":8080}],"#,
    );
    kubectl_ok(
        "kubectl patch --type merge",
        &[
            "-n",
            ns,
            "patch",
            "daemonset/agent",
            "--type",
            "merge",
            "-p",
            &env,
        ],
    );
    let patched = promoted_with_the_primary_on_its_nodes(&client, ns).await;
    assert_ne!(
        patched.revision, restarted.revision,
        "a new env var is a new revision"
    );
    let primary_env = "{.spec.template.spec.containers[0].env[?(@.name==\"LOG_LEVEL\")].value}";
    assert_eq!(
        support::daemonset::field(ns, "agent-primary", primary_env),
        "debug"
    );
    wait_canary_idle(ns, "the canary idle after the patch").await;

    kubectl_ok(
        "kubectl annotate",
        &[
            "-n",
            ns,
            "annotate",
            "--overwrite",
            "daemonset/agent",
            "serin.dev/step-weight=20",
        ],
    );
    // Taken up (the Canary's configuration follows), then watched for several intervals.
    wait_until("the Canary to take step-weight 20", SETTLE, || async {
        let spec = canary(&client, ns, "agent").await.map(|c| c.spec.config);
        match spec.as_ref().and_then(|s| s.step_weight) {
            Some(20) => Ok(()),
            other => Err(format!("step weight {other:?}")),
        }
    })
    .await;
    for _ in 0..20 {
        let status = release_status(&client, ns, "agent").await;
        assert_eq!(status.phase, Phase::Succeeded, "{status:?}");
        assert_eq!(status.revision, patched.revision, "{status:?}");
        assert_eq!(ready_on_nodes(ns, "agent"), 0, "the canary woke up");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_idle(ns);
}

/// A tracked ConfigMap the DaemonSet's pod template reads is part of its revision: changing
/// it starts a release at once (the controller watches it), not at the DaemonSet's next
/// interval, which is a minute here; the primary's `-primary` copy keeps the old data until
/// promotion.
#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn a_changed_config_map_starts_a_release_of_the_daemonset_that_reads_it() {
    let (client, ns) = support::release_namespace("ds-config").await;
    let ns = &ns.name;
    let config = |level: &str| config_map(ns, "agent-config", "LOG_LEVEL", level);
    apply(&config("info"));
    let slow = [("serin.dev/interval", "1m")];
    let agent = manifest(ns, &Version::good("1"), &slow);
    apply(&reading_config(&agent, "agent-config"));
    wait_opted_in(&client, ns).await;
    let copy = |ns: &str| {
        let path = "jsonpath={.data.LOG_LEVEL}";
        let args = [
            "-n",
            ns,
            "get",
            "configmap",
            "agent-config-primary",
            "-o",
            path,
        ];
        let (ok, level, stderr) = kubectl(&args, None);
        assert!(ok, "the primary's copy of agent-config: {stderr}");
        level
    };
    assert_eq!(copy(ns), "info");
    let before = release_status(&client, ns, "agent").await.revision;

    apply(&config("debug"));
    let started = tokio::time::Instant::now();
    wait_until(
        "a release of agent within 20s of the ConfigMap change",
        Duration::from_secs(20),
        || async {
            let status = release_status(&client, ns, "agent").await;
            match status.phase {
                Phase::Progressing if status.revision != before => Ok(()),
                _ => Err(format!("{status:?}")),
            }
        },
    )
    .await;
    eprintln!("release started {:?} after the change", started.elapsed());
    assert_eq!(
        copy(ns),
        "info",
        "the primary keeps the old config until promotion"
    );
}

/// A DaemonSet name may be a DNS subdomain of 253 characters, but what Serin derives from it
/// (`<name>-primary`, the Services) are held to 63: the apply is refused naming the field and
/// the limit, and nothing is created. A `-primary` name already taken by a DaemonSet of the
/// user's refuses the opt-in too.
#[tokio::test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
async fn a_daemonset_whose_primary_would_be_too_long_or_is_taken_is_refused_at_apply() {
    let (_client, ns) = support::serin_namespace("ds-names").await;
    let ns = &ns.name;
    let name = "a".repeat(56);
    let (ok, stdout, stderr) = kubectl(
        &["apply", "-f", "-"],
        Some(&manifest_named(ns, &name, &Version::good("1"), &[])),
    );
    assert!(
        !ok,
        "a 56-character opted-in DaemonSet was admitted: {stdout}"
    );
    for expected in [
        "admission webhook \"validate-daemonsets.serin.dev\" denied the request".to_string(),
        format!(
            "metadata.name: \"{name}\" makes the primary DaemonSet \"{name}-primary\" 64 characters long, above the limit of 63"
        ),
        format!(
            "serin.dev/service: \"{name}\" (default) makes Service \"{name}-primary\" 64 characters long, above the limit of 63 for Service names"
        ),
    ] {
        assert!(stderr.contains(&expected), "no {expected:?} in:\n{stderr}");
    }
    let (_, found, _) = kubectl(&["-n", ns, "get", "daemonsets", "-o", "name"], None);
    assert_eq!(found.trim(), "", "nothing was created");
    // One character less fits.
    let fits = "a".repeat(55);
    apply(&manifest_named(ns, &fits, &Version::good("1"), &[]));

    // A DaemonSet of the user's under the name the primary would take refuses the opt-in.
    let plain: String = manifest_named(ns, "taken-primary", &Version::good("1"), &[])
        .lines()
        .filter(|l| *l != "  annotations:" && !l.starts_with("    serin.dev/"))
        .map(|l| format!("{l}\n"))
        .collect();
    apply(&plain);
    let (ok, _, stderr) = kubectl(
        &["apply", "-f", "-"],
        Some(&manifest_named(ns, "taken", &Version::good("1"), &[])),
    );
    assert!(!ok, "the opt-in of taken was admitted over taken-primary");
    let expected = "DaemonSet \"taken-primary\" exists and is not managed by Serin; Serin would \
                    write over it: rename or delete it, or choose another name for this DaemonSet";
    assert!(stderr.contains(expected), "no {expected:?} in:\n{stderr}");
}
