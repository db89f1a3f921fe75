//! The kubectl plugin as a user runs it: the built kubectl finds the test binary of `serin`
//! on PATH under the name `kubectl-serin`, and the cluster through `KUBECONFIG` (kubectl
//! passes neither its flags before the plugin's name nor its kubeconfig to a plugin).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use super::{kubeconfig, kubectl_path};

/// A directory holding only the `kubectl-serin` symlink to `serin`.
fn plugin_dir(serin: &str) -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("serin-plugin-")
            .tempdir()
            .expect("temp dir")
            .keep();
        std::os::unix::fs::symlink(serin, dir.join("kubectl-serin")).expect("plugin symlink");
        dir
    })
}

/// `kubectl serin ARGS` with the plugin `serin` (pass `env!("CARGO_BIN_EXE_serin")`) on
/// PATH; returns (success, stdout, stderr).
pub(crate) fn kubectl_serin(serin: &str, args: &[&str]) -> (bool, String, String) {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs = vec![plugin_dir(serin).clone()];
    dirs.extend(std::env::split_paths(&path));
    let out = Command::new(kubectl_path())
        .arg("serin")
        .args(args)
        .env("PATH", std::env::join_paths(dirs).expect("PATH"))
        .env("KUBECONFIG", kubeconfig())
        .stdin(Stdio::null())
        .output()
        .expect("kubectl runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
