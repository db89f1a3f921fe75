//! `kubectl serin status|promote|abort|pause|resume|check`: the kubectl plugin.
//!
//! The `serin` binary is the plugin when it is invoked as `kubectl-serin` (a symlink or copy
//! on `PATH`, which is how kubectl finds plugins), and as `serin kubectl ...` otherwise.
//! It finds the cluster as kubectl does: `--kubeconfig`, else `KUBECONFIG`, else
//! `~/.kube/config` (else in-cluster), with `--context`; the namespace is `-n/--namespace`,
//! else the context's, else `default`.
//!
//! - `status` lists the namespace's Canaries as a table; `status NAME` shows one with its
//!   steps, last checks, last request and its history (the Events on the Canary, as long as
//!   the cluster keeps them: one hour by default).
//! - `promote`, `abort`, `pause`, `resume` write a request on the Canary (the annotations of
//!   [`crate::controller::requests`]) and wait for Serin to record its outcome in
//!   `status.lastRequest`; exit 1 when it is ignored or invalid, or no answer comes in time.
//! - `check` is `serin check`.
//!
//! Rendering (tables, details, ages) is pure and tested here; the rest is a thin client.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use k8s_openapi::api::core::v1::Event;
use k8s_openapi::jiff::{Timestamp, Unit};
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use super::check::{self, CheckArgs};
use crate::controller::requests::{self, RuntimeAction};
use crate::crd::{Canary, RequestOutcome, RequestStatus};
use crate::spec::Strategy;

/// The name kubectl runs the plugin by.
pub const PLUGIN_NAME: &str = "kubectl-serin";

/// Field manager of the plugin's writes (the request annotations).
const FIELD_MANAGER: &str = "kubectl-serin";

#[derive(Debug, Parser)]
#[command(
    name = "kubectl serin",
    version,
    about = "Steer and inspect Serin's canary releases"
)]
pub struct Plugin {
    #[command(flatten)]
    pub target: Target,
    #[command(subcommand)]
    pub command: PluginCommand,
}

/// Which cluster and namespace, as kubectl chooses them.
#[derive(Debug, Clone, Args)]
pub struct Target {
    /// Kubeconfig file; without it `KUBECONFIG`, then ~/.kube/config.
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context; without it the current context.
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// Namespace; without it the context's namespace, then `default`.
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Every Canary in the namespace as a table, or one Canary's details and history.
    Status {
        /// A Canary (the name of its Deployment).
        name: Option<String>,
    },
    /// Skip the remaining steps and promote the canary now (the usual promotion: copy to
    /// the primary, wait for its rollout, route back).
    Promote(RequestArgs),
    /// Roll the canary back now, as a failed analysis does.
    Abort(RequestArgs),
    /// Hold the analysis in progress: its weight stays and no checks run until `resume`.
    Pause(RequestArgs),
    /// Continue a paused analysis.
    Resume(RequestArgs),
    /// Validate manifests offline, exactly as admission would (`serin check`).
    Check(CheckArgs),
}

#[derive(Debug, Args)]
pub struct RequestArgs {
    /// The Canary (the name of its Deployment).
    pub name: String,
    /// How long to wait for Serin to answer; `0s` returns once the request is written.
    #[arg(long, default_value = "30s")]
    pub timeout: crate::spec::Duration,
}

/// True when the process was started under the plugin's name.
pub fn invoked_as_plugin(argv0: Option<&OsString>) -> bool {
    argv0
        .map(Path::new)
        .and_then(Path::file_stem)
        .is_some_and(|stem| stem == PLUGIN_NAME)
}

/// Runs the plugin with its arguments (without the program name).
pub fn main(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let plugin = Plugin::parse_from(std::iter::once(OsString::from("kubectl serin")).chain(args));
    if let PluginCommand::Check(args) = &plugin.command {
        return check::run(args);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("kubectl serin: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(plugin)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kubectl serin: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(plugin: Plugin) -> anyhow::Result<ExitCode> {
    crate::server::install_crypto_provider();
    let (client, namespace) = connect(&plugin.target).await?;
    let action = |args: &RequestArgs, action| (args.name.clone(), args.timeout, action);
    let (name, timeout, action) = match &plugin.command {
        PluginCommand::Status { name: None } => {
            print!("{}", list(&client, &namespace).await?);
            return Ok(ExitCode::SUCCESS);
        }
        PluginCommand::Status { name: Some(name) } => {
            print!("{}", details(&client, &namespace, name).await?);
            return Ok(ExitCode::SUCCESS);
        }
        PluginCommand::Check(_) => unreachable!("handled before connecting"),
        PluginCommand::Promote(args) => action(args, RuntimeAction::Promote),
        PluginCommand::Abort(args) => action(args, RuntimeAction::Abort),
        PluginCommand::Pause(args) => action(args, RuntimeAction::Pause),
        PluginCommand::Resume(args) => action(args, RuntimeAction::Resume),
    };
    request(&client, &namespace, &name, action, timeout).await
}

/// A client and the namespace to work in, by kubectl's rules.
async fn connect(target: &Target) -> anyhow::Result<(Client, String)> {
    let options = kube::config::KubeConfigOptions {
        context: target.context.clone(),
        ..Default::default()
    };
    let config = match (&target.kubeconfig, &target.context) {
        (Some(path), _) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading the kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .with_context(|| format!("using the kubeconfig {}", path.display()))?
        }
        (None, Some(context)) => kube::Config::from_kubeconfig(&options)
            .await
            .with_context(|| format!("using the context {context}"))?,
        (None, None) => kube::Config::infer()
            .await
            .context("finding the cluster (no --kubeconfig, KUBECONFIG, ~/.kube/config or in-cluster config)")?,
    };
    let namespace = target
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = Client::try_from(config).context("building the Kubernetes client")?;
    Ok((client, namespace))
}

async fn list(client: &Client, namespace: &str) -> anyhow::Result<String> {
    let canaries = Api::<Canary>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await
        .with_context(|| format!("listing the Canaries in namespace {namespace}"))?;
    if canaries.items.is_empty() {
        return Ok(format!("No canaries in namespace {namespace}.\n"));
    }
    let mut rows: Vec<Row> = canaries.items.iter().map(Row::of).collect();
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(render_table(&rows, Timestamp::now()))
}

async fn details(client: &Client, namespace: &str, name: &str) -> anyhow::Result<String> {
    let canary = Api::<Canary>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .with_context(|| format!("reading Canary {namespace}/{name}"))?
        .with_context(|| no_canary(namespace, name))?;
    let mut selector = format!("involvedObject.kind=Canary,involvedObject.name={name}");
    if let Some(uid) = canary.uid() {
        selector.push_str(&format!(",involvedObject.uid={uid}"));
    }
    let events = Api::<Event>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().fields(&selector))
        .await
        .with_context(|| format!("listing the Events of Canary {namespace}/{name}"))?;
    let history: Vec<HistoryEntry> = events.items.iter().map(HistoryEntry::of).collect();
    Ok(render_details(&canary, history, Timestamp::now()))
}

fn no_canary(namespace: &str, name: &str) -> String {
    format!(
        "no Canary {name} in namespace {namespace}: Serin makes one for each Deployment with \
         serin.dev/enabled: \"true\" (kubectl serin status lists them)"
    )
}

/// Writes the request and waits for its outcome.
async fn request(
    client: &Client,
    namespace: &str,
    name: &str,
    action: RuntimeAction,
    timeout: crate::spec::Duration,
) -> anyhow::Result<ExitCode> {
    let api = Api::<Canary>::namespaced(client.clone(), namespace);
    let id = request_id(Timestamp::now());
    let patch = json!({"metadata": {"annotations": requests::annotations(action, &id)}});
    match api
        .patch(
            name,
            &PatchParams::apply(FIELD_MANAGER),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => anyhow::bail!(no_canary(namespace, name)),
        Err(e) => return Err(e).with_context(|| format!("writing the request on {name}")),
    }
    if timeout.as_millis() == 0 {
        println!("canary {name}: {action} requested (id {id})");
        return Ok(ExitCode::SUCCESS);
    }
    let deadline = tokio::time::Instant::now() + Duration::from(timeout);
    loop {
        let answer = api
            .get_opt(name)
            .await?
            .and_then(|c| c.status)
            .and_then(|s| s.last_request)
            .filter(|r| r.action == action.as_str() && r.id == id);
        if let Some(answer) = answer {
            println!("{}", render_outcome(name, &answer));
            return Ok(match answer.outcome {
                RequestOutcome::Applied | RequestOutcome::Pending => ExitCode::SUCCESS,
                RequestOutcome::Ignored | RequestOutcome::Invalid => ExitCode::FAILURE,
            });
        }
        if tokio::time::Instant::now() >= deadline {
            eprintln!(
                "kubectl serin: canary {name}: {action} requested (id {id}), but Serin has not \
                 answered within {timeout}; is its controller running?"
            );
            return Ok(ExitCode::FAILURE);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A request id: the time it was made, to the nanosecond.
fn request_id(now: Timestamp) -> String {
    now.to_string()
}

fn render_outcome(name: &str, answer: &RequestStatus) -> String {
    let outcome = match answer.outcome {
        RequestOutcome::Pending => "pending",
        RequestOutcome::Applied => "applied",
        RequestOutcome::Ignored => "ignored",
        RequestOutcome::Invalid => "invalid",
    };
    format!(
        "canary {name}: {} {outcome}: {}",
        answer.action, answer.message
    )
}

/// One line of the `status` table.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub name: String,
    /// The phase, `(paused)` added when paused.
    pub phase: String,
    pub weight: u32,
    pub failed_checks: u32,
    pub threshold: u32,
    pub revision: String,
    pub last_transition: Option<Timestamp>,
}

impl Row {
    pub fn of(canary: &Canary) -> Self {
        let status = canary.status.clone().unwrap_or_default();
        let release = &status.release;
        Row {
            name: canary.name_any(),
            phase: phase_text(&status),
            weight: release.canary_weight,
            failed_checks: release.failed_checks,
            threshold: canary.spec.config.threshold,
            revision: release.revision.clone().unwrap_or_default(),
            last_transition: release.last_transition_time.as_ref().map(|t| t.0),
        }
    }
}

fn phase_text(status: &crate::crd::CanaryStatus) -> String {
    let phase = format!("{:?}", status.release.phase);
    match status.paused {
        true => format!("{phase} (paused)"),
        false => phase,
    }
}

/// The `status` table: one row per Canary, columns as `kubectl get canaries` plus the time
/// since the last phase change.
pub fn render_table(rows: &[Row], now: Timestamp) -> String {
    let lines: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            vec![
                row.name.clone(),
                row.phase.clone(),
                format!("{}%", row.weight),
                format!("{}/{}", row.failed_checks, row.threshold),
                or_dash(&row.revision),
                row.last_transition
                    .map(|t| format!("{} ago", age(now, t)))
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    columns(
        &[
            "NAME",
            "PHASE",
            "WEIGHT",
            "FAILED CHECKS",
            "REVISION",
            "LAST TRANSITION",
        ],
        &lines,
    )
}

fn or_dash(text: &str) -> String {
    match text.is_empty() {
        true => "-".into(),
        false => text.to_owned(),
    }
}

/// Left-aligned columns, three spaces apart, as kubectl prints them; no trailing spaces.
fn columns(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let header: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    let mut out = String::new();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, (cell, width)) in row.iter().zip(&widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}   "));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// How long ago, as kubectl shows ages: `45s`, `3m12s`, `2h5m`, `4d3h`.
pub fn age(now: Timestamp, then: Timestamp) -> String {
    let seconds = now.as_second().saturating_sub(then.as_second()).max(0);
    let (m, h, d) = (60, 3600, 86_400);
    match seconds {
        s if s < 2 * m => format!("{s}s"),
        s if s < h => format!("{}m{}s", s / m, s % m),
        s if s < d => format!("{}h{}m", s / h, s % h / m),
        s => format!("{}d{}h", s / d, s % d / h),
    }
}

/// One Event on the Canary.
#[derive(Clone, Debug, PartialEq)]
pub struct HistoryEntry {
    pub time: Option<Timestamp>,
    pub type_: String,
    pub reason: String,
    pub message: String,
}

impl HistoryEntry {
    /// An Event as the core API shows it: the newest of its times, whichever API wrote it.
    pub fn of(event: &Event) -> Self {
        let time = [
            event
                .series
                .as_ref()
                .and_then(|s| s.last_observed_time.as_ref())
                .map(|t| t.0),
            event.last_timestamp.as_ref().map(|t| t.0),
            event.event_time.as_ref().map(|t| t.0),
            event.first_timestamp.as_ref().map(|t| t.0),
            event.metadata.creation_timestamp.as_ref().map(|t| t.0),
        ]
        .into_iter()
        .flatten()
        .max();
        HistoryEntry {
            time,
            type_: event.type_.clone().unwrap_or_default(),
            reason: event.reason.clone().unwrap_or_default(),
            message: event.message.clone().unwrap_or_default(),
        }
    }
}

/// `status NAME`: the Canary's state, its configuration's steps, the last checks and
/// request, and its history, oldest first.
pub fn render_details(canary: &Canary, mut history: Vec<HistoryEntry>, now: Timestamp) -> String {
    let status = canary.status.clone().unwrap_or_default();
    let release = &status.release;
    let config = &canary.spec.config;
    let mut fields: Vec<(&str, String)> = vec![
        ("Name", canary.name_any()),
        ("Namespace", canary.namespace().unwrap_or_default()),
        ("Phase", phase_text(&status)),
        ("Canary weight", format!("{}%", release.canary_weight)),
        (
            "Failed checks",
            format!("{} of {}", release.failed_checks, config.threshold),
        ),
    ];
    let plan = match config.strategy() {
        Strategy::Canary => {
            let weights: Vec<String> = config.weights().iter().map(|w| format!("{w}%")).collect();
            format!("canary, weights {}", weights.join(", "))
        }
        Strategy::BlueGreen => format!(
            "blue/green, {} iterations ({} passed)",
            config.iterations.unwrap_or(0),
            release.iterations
        ),
        Strategy::ABTesting => format!(
            "A/B, {} iterations ({} passed)",
            config.iterations.unwrap_or(0),
            release.iterations
        ),
    };
    fields.push(("Steps", format!("{plan}; every {}", config.interval)));
    // The blast radius as Serin measured it (the counted success-rate check).
    if release.canary_requests > 0 || config.sequential_checks {
        let share = match release.canary_requests {
            0 => String::new(),
            n => format!(
                " ({:.2}%)",
                release.canary_failed_requests as f64 * 100.0 / n as f64
            ),
        };
        fields.push((
            "Canary requests",
            format!(
                "{} served, {} failed{share} in this release",
                release.canary_requests, release.canary_failed_requests
            ),
        ));
    }
    let revision = match (&release.revision, &release.last_promoted_revision) {
        (Some(now), Some(promoted)) if now != promoted => {
            format!("{now} (last promoted: {promoted})")
        }
        (Some(now), _) => now.clone(),
        (None, _) => "-".into(),
    };
    fields.push(("Revision", revision));
    if let Some(t) = &release.last_transition_time {
        fields.push((
            "Last transition",
            format!("{} ({} ago)", seconds(t.0), age(now, t.0)),
        ));
    }
    if let Some(r) = &status.last_request {
        fields.push((
            "Last request",
            format!(
                "{} (id {}) {:?} at {}: {}",
                r.action,
                or_dash(&r.id),
                r.outcome,
                seconds(r.time.0),
                r.message
            ),
        ));
    }
    // Values line up one space after the longest key and its colon.
    let width = fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 2;
    let mut out = String::new();
    for (key, value) in &fields {
        out.push_str(&format!("{:<width$} {value}\n", format!("{key}:")));
    }
    out.push_str("Last checks:");
    if release.last_checks.is_empty() {
        out.push_str(" none yet\n");
    } else {
        out.push('\n');
        let rows: Vec<Vec<String>> = release
            .last_checks
            .iter()
            .map(|c| {
                vec![
                    c.name.clone(),
                    c.value
                        .map(|v| format!("{v:.2}"))
                        .unwrap_or_else(|| "no data".into()),
                ]
            })
            .collect();
        out.push_str(&indent(&columns(&["CHECK", "VALUE"], &rows)));
    }
    out.push_str("History:");
    if history.is_empty() {
        out.push_str(" no events (the cluster keeps them for an hour by default)\n");
        return out;
    }
    out.push('\n');
    history.sort_by_key(|e| e.time);
    let rows: Vec<Vec<String>> = history
        .into_iter()
        .map(|e| {
            vec![
                e.time.map(seconds).unwrap_or_else(|| "-".into()),
                e.type_,
                e.reason,
                e.message.replace('\n', " "),
            ]
        })
        .collect();
    out.push_str(&indent(&columns(
        &["TIME", "TYPE", "REASON", "MESSAGE"],
        &rows,
    )));
    out
}

/// A time in UTC to the second.
fn seconds(t: Timestamp) -> String {
    t.round(Unit::Second).unwrap_or(t).to_string()
}

fn indent(text: &str) -> String {
    text.lines().map(|line| format!("  {line}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{CanaryResourceSpec, CanaryStatus};
    use crate::release::{CheckValue, Phase, ReleaseStatus};
    use crate::spec::CanarySpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + seconds).unwrap_or_default()
    }

    fn canary(name: &str, status: CanaryStatus) -> Canary {
        let mut canary = Canary::new(
            name,
            CanaryResourceSpec {
                config: CanarySpec {
                    threshold: 3,
                    step_weight: Some(25),
                    interval: crate::spec::Duration::from_secs(2),
                    ..CanarySpec::defaults(name.into(), None)
                },
            },
        );
        canary.metadata.namespace = Some("shop".into());
        canary.status = Some(status);
        canary
    }

    fn progressing() -> CanaryStatus {
        CanaryStatus {
            release: ReleaseStatus {
                phase: Phase::Progressing,
                canary_weight: 25,
                failed_checks: 1,
                canary_requests: 400,
                canary_failed_requests: 2,
                revision: Some("9f86d081884c7d65".into()),
                last_promoted_revision: Some("2c26b46b68ffc68f".into()),
                last_transition_time: Some(Time(at(0))),
                last_checks: vec![
                    CheckValue {
                        name: "request-success-rate".into(),
                        value: Some(99.5),
                    },
                    CheckValue {
                        name: "request-duration".into(),
                        value: None,
                    },
                ],
                ..ReleaseStatus::default()
            },
            paused: true,
            ..CanaryStatus::default()
        }
    }

    #[test]
    fn the_plugin_is_recognised_by_its_file_name_only() {
        let name = |s: &str| Some(OsString::from(s));
        assert!(invoked_as_plugin(name("kubectl-serin").as_ref()));
        assert!(invoked_as_plugin(
            name("/usr/local/bin/kubectl-serin").as_ref()
        ));
        assert!(!invoked_as_plugin(name("/usr/local/bin/serin").as_ref()));
        assert!(!invoked_as_plugin(name("kubectl-serin-old/serin").as_ref()));
        assert!(!invoked_as_plugin(None));
    }

    #[test]
    fn subcommands_and_kubectl_flags_parse_in_any_order() {
        let parse = |args: &[&str]| {
            Plugin::try_parse_from(std::iter::once("kubectl serin").chain(args.iter().copied()))
        };
        let plugin = parse(&["-n", "shop", "promote", "web", "--kubeconfig", "/k"]).unwrap();
        assert_eq!(plugin.target.namespace.as_deref(), Some("shop"));
        assert_eq!(plugin.target.kubeconfig, Some(PathBuf::from("/k")));
        assert!(matches!(plugin.command, PluginCommand::Promote(ref a) if a.name == "web"));
        let plugin = parse(&["status", "--namespace=shop", "--context", "dev"]).unwrap();
        assert!(matches!(
            plugin.command,
            PluginCommand::Status { name: None }
        ));
        assert_eq!(plugin.target.context.as_deref(), Some("dev"));
        let plugin = parse(&["check", "-f", "web.yaml"]).unwrap();
        assert!(matches!(plugin.command, PluginCommand::Check(ref a) if a.files.len() == 1));
        assert!(parse(&["pause"]).is_err(), "a request names its canary");
        assert!(parse(&["restart", "web"]).is_err());
    }

    #[test]
    fn the_plugin_and_the_serin_kubectl_door_are_valid_commands() {
        use clap::CommandFactory;
        Plugin::command().debug_assert();
        super::super::Cli::command().debug_assert();
        let cli = super::super::Cli::try_parse_from(["serin", "kubectl", "status", "-n", "shop"])
            .unwrap();
        assert!(matches!(
            cli.command,
            super::super::Command::Kubectl { ref args } if args.len() == 3
        ));
    }

    #[test]
    fn the_table_has_a_row_per_canary_with_aligned_columns() {
        let mut idle = canary(
            "api",
            CanaryStatus {
                release: ReleaseStatus {
                    phase: Phase::Succeeded,
                    revision: Some("2c26b46b68ffc68f".into()),
                    last_transition_time: Some(Time(at(-4000))),
                    ..ReleaseStatus::default()
                },
                ..CanaryStatus::default()
            },
        );
        idle.spec.config.threshold = 5;
        let fresh = Canary::new("new", canary("new", CanaryStatus::default()).spec);
        let rows = [
            Row::of(&idle),
            Row::of(&canary("web", progressing())),
            Row::of(&fresh),
        ];
        let table = render_table(&rows, at(75));
        let expected = "\
NAME   PHASE                  WEIGHT   FAILED CHECKS   REVISION           LAST TRANSITION
api    Succeeded              0%       0/5             2c26b46b68ffc68f   1h7m ago
web    Progressing (paused)   25%      1/3             9f86d081884c7d65   75s ago
new    Initializing           0%       0/3             -                  -
";
        assert_eq!(table, expected);
    }

    #[test]
    fn ages_read_like_kubectl() {
        assert_eq!(age(at(10), at(0)), "10s");
        assert_eq!(age(at(119), at(0)), "119s");
        assert_eq!(age(at(192), at(0)), "3m12s");
        assert_eq!(age(at(7500), at(0)), "2h5m");
        assert_eq!(age(at(3 * 86_400 + 7200), at(0)), "3d2h");
        assert_eq!(age(at(0), at(5)), "0s", "a clock behind the server");
    }

    #[test]
    fn details_show_state_steps_checks_request_and_history_oldest_first() {
        let mut status = progressing();
        status.last_request = Some(RequestStatus {
            action: "pause".into(),
            id: "r1".into(),
            outcome: RequestOutcome::Applied,
            message: "paused at weight 25%".into(),
            time: Time(at(30)),
        });
        let entry = |s: i64, type_: &str, reason: &str, message: &str| HistoryEntry {
            time: Some(at(s)),
            type_: type_.into(),
            reason: reason.into(),
            message: message.into(),
        };
        let history = vec![
            entry(30, "Normal", "Paused", "pause: paused at weight 25%"),
            entry(
                0,
                "Normal",
                "NewRevision",
                "New revision 9f86d081884c7d65 detected",
            ),
            entry(
                12,
                "Warning",
                "CheckFailed",
                "Check failed:\nrequest-success-rate 98.00% < 99%",
            ),
        ];
        let text = render_details(&canary("web", status), history, at(40));
        let expected = "\
Name:             web
Namespace:        shop
Phase:            Progressing (paused)
Canary weight:    25%
Failed checks:    1 of 3
Steps:            canary, weights 25%, 50%; every 2s
Canary requests:  400 served, 2 failed (0.50%) in this release
Revision:         9f86d081884c7d65 (last promoted: 2c26b46b68ffc68f)
Last transition:  2023-11-14T22:13:20Z (40s ago)
Last request:     pause (id r1) Applied at 2023-11-14T22:13:50Z: paused at weight 25%
Last checks:
  CHECK                  VALUE
  request-success-rate   99.50
  request-duration       no data
History:
  TIME                   TYPE      REASON        MESSAGE
  2023-11-14T22:13:20Z   Normal    NewRevision   New revision 9f86d081884c7d65 detected
  2023-11-14T22:13:32Z   Warning   CheckFailed   Check failed: request-success-rate 98.00% < 99%
  2023-11-14T22:13:50Z   Normal    Paused        pause: paused at weight 25%
";
        assert_eq!(text, expected);
    }

    #[test]
    fn details_of_a_canary_without_checks_or_events_say_so() {
        let text = render_details(&canary("web", CanaryStatus::default()), Vec::new(), at(0));
        assert!(text.contains("Last checks: none yet\n"), "{text}");
        assert!(text.contains("History: no events"), "{text}");
        assert!(!text.contains("Last request"), "{text}");
    }

    #[test]
    fn an_event_is_dated_by_its_newest_time() {
        use k8s_openapi::api::core::v1::EventSeries;
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
        let event = Event {
            event_time: Some(MicroTime(at(5))),
            series: Some(EventSeries {
                count: Some(2),
                last_observed_time: Some(MicroTime(at(9))),
            }),
            reason: Some("Progressing".into()),
            ..Event::default()
        };
        let entry = HistoryEntry::of(&event);
        assert_eq!(entry.time, Some(at(9)));
        assert_eq!(entry.reason, "Progressing");
        assert_eq!(HistoryEntry::of(&Event::default()).time, None);
    }

    #[test]
    fn outcomes_are_one_line_naming_the_canary() {
        let answer = RequestStatus {
            action: "promote".into(),
            id: "r1".into(),
            outcome: RequestOutcome::Ignored,
            message: "no analysis in progress (phase Succeeded): nothing to promote".into(),
            time: Time(at(0)),
        };
        assert_eq!(
            render_outcome("web", &answer),
            "canary web: promote ignored: no analysis in progress (phase Succeeded): nothing to promote"
        );
    }

    #[test]
    fn request_ids_differ_from_one_instant_to_the_next() {
        let first = request_id(at(0));
        let next = request_id(at(0) + Duration::from_nanos(1));
        assert_ne!(first, next);
    }
}
