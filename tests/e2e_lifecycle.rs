//! The local environment's lifecycle: `cluster.sh up` is idempotent and `down` stops exactly
//! the processes it started. These tests stop the shared cluster, so they are ignored in the
//! parallel run and `make test-lifecycle` runs them alone, last.

mod support;

use std::path::PathBuf;

const COMPONENTS: [&str; 5] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
];

fn pid_file(component: &str) -> PathBuf {
    support::repo_root()
        .join(".serin/cluster")
        .join(format!("{component}.pid"))
}

fn recorded_pids() -> Vec<(String, u32)> {
    COMPONENTS
        .iter()
        .map(|c| {
            let text = std::fs::read_to_string(pid_file(c))
                .unwrap_or_else(|e| panic!("pid file of {c}: {e}"));
            (c.to_string(), text.trim().parse().expect("pid is a number"))
        })
        .collect()
}

fn running(pid: u32) -> bool {
    // A zombie still has a /proc entry; only count processes that are not dead.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| stat.split_whitespace().nth(2).is_none_or(|s| s != "Z"))
        .unwrap_or(false)
}

#[test]
#[ignore = "stops the shared cluster; run alone by `make test-lifecycle`"]
fn cluster_up_twice_is_harmless_and_down_leaves_no_process() {
    if std::env::var_os("KUBECONFIG").is_some() {
        eprintln!("KUBECONFIG is set: the local cluster's lifecycle is not under test");
        return;
    }
    support::hack("cluster.sh", &["up"]);
    let before = recorded_pids();
    assert!(
        before.iter().all(|(_, pid)| running(*pid)),
        "all components run: {before:?}"
    );

    support::hack("cluster.sh", &["up"]);
    let after = recorded_pids();
    assert_eq!(before, after, "a second `up` starts nothing new");
    assert!(support::hack("cluster.sh", &["status"]).is_empty());

    support::hack("cluster.sh", &["down"]);
    let left: Vec<_> = before.iter().filter(|(_, pid)| running(*pid)).collect();
    assert!(left.is_empty(), "processes left after down: {left:?}");
    for c in COMPONENTS {
        assert!(!pid_file(c).exists(), "pid file of {c} removed");
    }
    let status = std::process::Command::new(support::repo_root().join("hack/cluster.sh"))
        .arg("status")
        .status()
        .expect("status runs");
    assert!(!status.success(), "status reports the cluster down");
}
