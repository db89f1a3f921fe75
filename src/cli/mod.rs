//! The `serin` command line: flags (each also an environment variable `SERIN_<FLAG>`) and
//! the subcommands that wire the library's pieces together. `serin check` is [`check`]. The
//! same binary is the kubectl plugin ([`plugin`]) when run as `kubectl-serin` or as
//! `serin kubectl`.

pub mod check;
pub mod plugin;
mod run;

#[cfg(feature = "dev-tools")]
pub(crate) use run::shutdown_signal;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::certs::{self, CertOptions};

#[derive(Debug, Parser)]
#[command(name = "serin", version, about = "Progressive delivery for Kubernetes")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// The flags of the serving subcommands `run`, `webhook` and `controller`, each also a
// variable SERIN_<FLAG>. Not a doc comment: clap makes a struct's doc comment the `about`
// text of the command it is flattened into.
#[derive(Debug, Clone, Args)]
pub struct ServingArgs {
    /// Address of the webhook's HTTPS listener.
    #[arg(long, env = "SERIN_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// Address of the plain-HTTP admin listener (/healthz, /readyz, /metrics).
    #[arg(long, env = "SERIN_ADMIN_LISTEN", default_value = "0.0.0.0:8080")]
    pub admin_listen: SocketAddr,
    /// Serving certificate (PEM); reloaded when it changes.
    #[arg(long, env = "SERIN_TLS_CERT", default_value = "certs/tls.crt")]
    pub tls_cert: PathBuf,
    /// Serving key (PEM); reloaded together with the certificate.
    #[arg(long, env = "SERIN_TLS_KEY", default_value = "certs/tls.key")]
    pub tls_key: PathBuf,
    /// Username of Serin's own service account, whose writes the webhook lets through as
    /// they are.
    #[arg(
        long,
        env = "SERIN_SERVICE_ACCOUNT",
        default_value = crate::admission::DEFAULT_SERVICE_ACCOUNT
    )]
    pub service_account: String,
    /// Kubeconfig file; without it `KUBECONFIG`, then the in-cluster service account.
    #[arg(long, env = "SERIN_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Prometheus HTTP API the builtin checks query (an AnalysisTemplate metric may name
    /// another with `address`).
    #[arg(
        long,
        env = "SERIN_PROMETHEUS_URL",
        default_value = "http://prometheus.linkerd-viz:9090"
    )]
    pub prometheus_url: String,
    #[command(flatten)]
    pub prometheus_auth: PrometheusAuthArgs,
    /// Prefix of the ingress-nginx annotations Serin writes on canary Ingresses (provider
    /// `nginx`): the controller's `--annotations-prefix`.
    #[arg(
        long,
        env = "SERIN_NGINX_ANNOTATION_PREFIX",
        default_value = crate::router::nginx::DEFAULT_ANNOTATION_PREFIX,
        value_parser = annotation_prefix
    )]
    pub nginx_annotation_prefix: String,
    /// Namespace of the controller's leader-election Lease (Serin's own namespace).
    #[arg(long, env = "SERIN_LEASE_NAMESPACE", default_value = "serin-system")]
    pub lease_namespace: String,
    /// Track the Secrets a pod template uses, as ConfigMaps are: fold their contents into the
    /// revision, watch them, and copy them to `<secret>-primary` for the primary. Needs
    /// get, list, watch and writes on Secrets in every namespace (the Component
    /// manifests/overlays/secret-tracking). With `false` Serin never reads, watches or lists
    /// a Secret: a change to a Secret alone is no new release (it reaches the running pods as
    /// Kubernetes delivers it, without analysis), and the primary refers to the original
    /// Secret, which it shares with the canary. Switching it is a new revision of every
    /// opted-in Deployment that uses a Secret.
    #[arg(
        long,
        env = "SERIN_TRACK_SECRETS",
        value_name = "BOOL",
        default_value_t = true,
        default_missing_value = "true",
        num_args = 0..=1,
        require_equals = true,
        action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub track_secrets: bool,
    /// Log format.
    #[arg(long, env = "SERIN_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Name of Serin's MutatingWebhookConfiguration and ValidatingWebhookConfiguration (where
    /// --self-signed publishes its caBundle).
    #[arg(long, env = "SERIN_WEBHOOK_CONFIG_NAME", default_value = "serin")]
    pub webhook_config_name: String,
    #[command(flatten)]
    pub self_signed: SelfSignedArgs,
}

/// Credentials for `--prometheus-url` (Thanos, Mimir, managed services), sent only to it and
/// only over https://. Files are read again at every query, so a rotated token or
/// certificate is used from the next one; an AnalysisTemplate metric with its own `address`
/// takes its credentials from a Secret (`secretRef`) instead.
#[derive(Debug, Clone, Default, Args)]
pub struct PrometheusAuthArgs {
    /// File holding a bearer token for --prometheus-url (e.g. a projected ServiceAccount
    /// token).
    #[arg(long, env = "SERIN_PROMETHEUS_BEARER_TOKEN_FILE", conflicts_with_all = ["prometheus_username", "prometheus_password_file"])]
    pub prometheus_bearer_token_file: Option<PathBuf>,
    /// Basic-auth username for --prometheus-url (with --prometheus-password-file).
    #[arg(
        long,
        env = "SERIN_PROMETHEUS_USERNAME",
        requires = "prometheus_password_file"
    )]
    pub prometheus_username: Option<String>,
    /// File holding the basic-auth password for --prometheus-url.
    #[arg(
        long,
        env = "SERIN_PROMETHEUS_PASSWORD_FILE",
        requires = "prometheus_username"
    )]
    pub prometheus_password_file: Option<PathBuf>,
    /// CA certificates (PEM) trusted for --prometheus-url instead of the system's.
    #[arg(long, env = "SERIN_PROMETHEUS_CA_FILE")]
    pub prometheus_ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for --prometheus-url (with --prometheus-client-key).
    #[arg(
        long,
        env = "SERIN_PROMETHEUS_CLIENT_CERT",
        requires = "prometheus_client_key"
    )]
    pub prometheus_client_cert: Option<PathBuf>,
    /// Private key (PEM) of --prometheus-client-cert.
    #[arg(
        long,
        env = "SERIN_PROMETHEUS_CLIENT_KEY",
        requires = "prometheus_client_cert"
    )]
    pub prometheus_client_key: Option<PathBuf>,
}

impl PrometheusAuthArgs {
    /// The files the flags name, as the Prometheus client reads them.
    pub fn files(&self) -> crate::analysis::CredentialFiles {
        crate::analysis::CredentialFiles {
            bearer_token_file: self.prometheus_bearer_token_file.clone(),
            username: self.prometheus_username.clone(),
            password_file: self.prometheus_password_file.clone(),
            ca_file: self.prometheus_ca_file.clone(),
            client_cert: self.prometheus_client_cert.clone(),
            client_key: self.prometheus_client_key.clone(),
        }
    }
}

impl ServingArgs {
    /// The credentials for `--prometheus-url`, checked once at start: files that cannot be
    /// read or do not fit together, or credentials for an `http://` URL, stop Serin before
    /// it serves, naming the flag.
    pub fn prometheus_credentials(&self) -> anyhow::Result<crate::analysis::CredentialFiles> {
        let files = self.prometheus_auth.files();
        if let Some(credentials) = files.read()? {
            credentials
                .check_address(&self.prometheus_url)
                .map_err(|e| {
                    anyhow::anyhow!("--prometheus-url with --prometheus-* credentials: {e}")
                })?;
        }
        Ok(files)
    }
}

/// Self-managed certificates (`--self-signed`).
#[derive(Debug, Clone, Args)]
pub struct SelfSignedArgs {
    /// Make and rotate the webhook's CA and serving certificate, kept in a Secret in Serin's
    /// namespace (--lease-namespace) shared by all replicas, and publish the caBundle into
    /// the webhook configurations and Serin's CRDs; --tls-cert and --tls-key are not used.
    #[arg(long, env = "SERIN_SELF_SIGNED")]
    pub self_signed: bool,
    /// Name of the Secret that holds the self-signed certificates.
    #[arg(
        long,
        env = "SERIN_SELF_SIGNED_SECRET",
        default_value = "serin-webhook-tls"
    )]
    pub self_signed_secret: String,
    /// Lifetime of each self-signed CA and serving certificate.
    #[arg(long, env = "SERIN_SELF_SIGNED_VALIDITY", default_value = "2160h")]
    pub self_signed_validity: crate::spec::Duration,
    /// Start a rotation this long before the serving certificate expires.
    #[arg(long, env = "SERIN_SELF_SIGNED_RENEW_BEFORE", default_value = "720h")]
    pub self_signed_renew_before: crate::spec::Duration,
    /// Directory the serving pair from the Secret is written to for the TLS server (an
    /// emptyDir in a cluster); by default a new directory under the system's temp directory.
    #[arg(long, env = "SERIN_SELF_SIGNED_DIR")]
    pub self_signed_dir: Option<PathBuf>,
    /// How often each replica looks at the Secret; the grace periods of a rotation are three
    /// of these. Short values are for tests.
    #[arg(
        long,
        env = "SERIN_SELF_SIGNED_CHECK_INTERVAL",
        default_value = "30s",
        hide = true
    )]
    pub self_signed_check_interval: crate::spec::Duration,
    /// CRDs whose conversion webhook gets the caBundle (comma-separated); by default
    /// Serin's own. Tests name their own.
    #[arg(
        long,
        env = "SERIN_SELF_SIGNED_CRDS",
        value_delimiter = ',',
        hide = true
    )]
    pub self_signed_crds: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The webhooks and the release controller in one process (the default deployment).
    Run(ServingArgs),
    /// Serve the admission webhooks over HTTPS, and the admin port.
    Webhook(ServingArgs),
    /// Run only the release controller (leader-elected), with the admin port.
    Controller(ServingArgs),
    /// Make a local CA and a serving certificate for the webhook.
    Certs(CertsArgs),
    /// Print Serin's CustomResourceDefinitions (YAML), generated from its Rust types.
    Crds,
    /// Validate manifests offline, exactly as admission would; exit 1 on any mistake.
    Check(check::CheckArgs),
    /// `serin simulate` and `serin demo-chart`, hidden, in builds with the feature
    /// `dev-tools` only.
    #[cfg(feature = "dev-tools")]
    #[command(flatten)]
    DevTools(crate::devtools::Command),
    /// The kubectl plugin (`kubectl serin ...` when installed as `kubectl-serin`):
    /// status, promote, abort, pause, resume, check. `serin kubectl --help` for more.
    #[command(disable_help_flag = true)]
    Kubectl {
        /// The plugin's subcommand and flags.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
}

#[derive(Debug, Args)]
pub struct CertsArgs {
    /// Directory to write ca.crt, tls.crt and tls.key into.
    #[arg(long, default_value = "certs")]
    pub out_dir: PathBuf,
    /// Namespace of the webhook's Service (for the certificate's DNS names).
    #[arg(long, default_value = "serin-system")]
    pub namespace: String,
    /// Name of the webhook's Service.
    #[arg(long, default_value = "serin")]
    pub service: String,
    /// Validity in days.
    #[arg(long, default_value_t = 365)]
    pub days: u32,
}

impl Command {
    /// The format of the process's own log lines: `--log-format` where a subcommand has it.
    fn log_format(&self) -> LogFormat {
        match self {
            Command::Run(serving) | Command::Webhook(serving) | Command::Controller(serving) => {
                serving.log_format
            }
            #[cfg(feature = "dev-tools")]
            Command::DevTools(command) => command.log_format(),
            Command::Certs(_) | Command::Crds | Command::Check(_) | Command::Kubectl { .. } => {
                LogFormat::Text
            }
        }
    }
}

/// An annotation prefix: a DNS subdomain (lowercase letters, digits, `-` and `.`), as the
/// part of an annotation key before the `/` must be.
fn annotation_prefix(text: &str) -> Result<String, String> {
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    if text.len() <= 253 && text.split('.').all(label_ok) {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "{text:?} is not a DNS subdomain such as nginx.ingress.kubernetes.io"
        ))
    }
}

/// Runs the command line; the process exit code.
pub fn main() -> ExitCode {
    // The kubectl plugin has flags of its own (kubectl's), so it is told apart before clap
    // parses anything: by the name it runs under, or `serin kubectl ...`.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if plugin::invoked_as_plugin(args.first()) {
        init_plugin_logging();
        return plugin::main(args.into_iter().skip(1));
    }
    if args.get(1).is_some_and(|a| a == "kubectl") {
        init_plugin_logging();
        return plugin::main(args.into_iter().skip(2));
    }
    let cli = Cli::parse_from(args);
    if let Command::Kubectl { args } = cli.command {
        init_plugin_logging();
        return plugin::main(args);
    }
    init_logging(cli.command.log_format());
    let result = match cli.command {
        Command::Run(serving) => run::run(&serving, run::Parts::ALL),
        Command::Webhook(serving) => run::run(&serving, run::Parts::WEBHOOK),
        Command::Controller(serving) => run::run(&serving, run::Parts::CONTROLLER),
        Command::Certs(args) => make_certs(&args).map(|()| ExitCode::SUCCESS),
        Command::Crds => crate::crd::to_yaml()
            .map(|yaml| {
                print!("{yaml}");
                ExitCode::SUCCESS
            })
            .map_err(anyhow::Error::from),
        Command::Check(args) => Ok(check::run(&args)),
        #[cfg(feature = "dev-tools")]
        Command::DevTools(command) => command.run().map(|()| ExitCode::SUCCESS),
        Command::Kubectl { .. } => unreachable!("the plugin runs before the serving commands"),
    };
    result.unwrap_or_else(|e| {
        eprintln!("serin: {e:#}");
        ExitCode::FAILURE
    })
}

/// A client for the cluster: `--kubeconfig`, else `KUBECONFIG`, else in-cluster; every
/// request it sends is counted in `requests`.
pub async fn kube_client(
    kubeconfig: Option<&std::path::Path>,
    requests: crate::server::KubeApiRequests,
) -> anyhow::Result<kube::Client> {
    use anyhow::Context;
    let config = match kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading the kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                .await
                .with_context(|| format!("using the kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .context("finding the cluster (no --kubeconfig, KUBECONFIG or in-cluster config)")?,
    };
    let count = tower::util::MapRequestLayer::new(
        move |request: axum::http::Request<kube::client::Body>| {
            let path = request.uri().path_and_query().map_or("", |p| p.as_str());
            requests.count(request.method().as_str(), path);
            request
        },
    );
    Ok(kube::client::ClientBuilder::try_from(config)
        .context("building the Kubernetes client")?
        .with_layer(&count)
        .build())
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// The plugin prints its own results; only warnings from the libraries reach stderr.
fn init_plugin_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn make_certs(args: &CertsArgs) -> anyhow::Result<()> {
    let options = CertOptions {
        namespace: args.namespace.clone(),
        service: args.service.clone(),
        validity: std::time::Duration::from_secs(u64::from(args.days) * 24 * 3600),
        ..CertOptions::default()
    };
    let made = certs::generate(&options)?;
    certs::write(&args.out_dir, &made)?;
    eprintln!(
        "wrote {dir}/{ca}, {dir}/{crt} and {dir}/{key} (names: {names})",
        dir = args.out_dir.display(),
        ca = certs::CA_CERT_FILE,
        crt = certs::SERVING_CERT_FILE,
        key = certs::SERVING_KEY_FILE,
        names = options.subject_alt_names().join(", "),
    );
    eprintln!("caBundle for the webhook configurations (also printed on stdout):");
    println!("{}", certs::ca_bundle(&made));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `serin run ARGS`' serving flags.
    fn serving(args: &[&str]) -> Result<ServingArgs, String> {
        let cli = Cli::try_parse_from(["serin", "run"].iter().chain(args));
        match cli.map_err(|e| e.to_string())?.command {
            Command::Run(serving) => Ok(serving),
            other => Err(format!("parsed as {other:?}")),
        }
    }

    fn track_secrets(args: &[&str]) -> Result<bool, String> {
        serving(args).map(|serving| serving.track_secrets)
    }

    #[test]
    fn secrets_are_tracked_unless_turned_off() {
        assert_eq!(track_secrets(&[]), Ok(true));
        assert_eq!(track_secrets(&["--track-secrets"]), Ok(true));
        assert_eq!(track_secrets(&["--track-secrets=false"]), Ok(false));
        assert_eq!(track_secrets(&["--track-secrets=true"]), Ok(true));
        assert!(track_secrets(&["--track-secrets=maybe"]).is_err());
    }

    #[test]
    fn the_nginx_annotation_prefix_defaults_to_ingress_nginxs_and_must_be_a_dns_subdomain() {
        let parse = |args: &[&str]| serving(args).map(|serving| serving.nginx_annotation_prefix);
        assert_eq!(parse(&[]).as_deref(), Ok("nginx.ingress.kubernetes.io"));
        assert_eq!(
            parse(&["--nginx-annotation-prefix", "ingress.example.com"]).as_deref(),
            Ok("ingress.example.com")
        );
        for bad in ["", "Nginx.io", "a/b", "-a.io", "a..io"] {
            let flag = format!("--nginx-annotation-prefix={bad}");
            let refused = parse(&[flag.as_str()]);
            assert!(
                refused.as_ref().is_err_and(|e| e.contains("DNS subdomain")),
                "{bad:?}: {refused:?}"
            );
        }
    }

    #[test]
    fn prometheus_credentials_that_contradict_each_other_are_refused_by_flag_name() {
        let refused = |args: &[&str]| serving(args).expect_err("refused");
        let error = refused(&[
            "--prometheus-bearer-token-file=/t",
            "--prometheus-username=u",
            "--prometheus-password-file=/p",
        ]);
        assert!(error.contains("--prometheus-bearer-token-file"), "{error}");
        let error = refused(&["--prometheus-username=u"]);
        assert!(error.contains("--prometheus-password-file"), "{error}");
        let error = refused(&["--prometheus-client-cert=/c"]);
        assert!(error.contains("--prometheus-client-key"), "{error}");
    }

    #[test]
    fn prometheus_credentials_are_read_at_start_and_never_sent_over_http() {
        let dir = tempfile::tempdir().expect("temp dir");
        let token = dir.path().join("token");
        std::fs::write(&token, "abc\n").expect("write");
        let token_flag = format!("--prometheus-bearer-token-file={}", token.display());
        let over = |url: &str| {
            serving(&[&token_flag, &format!("--prometheus-url={url}")])
                .expect("parses")
                .prometheus_credentials()
                .map_err(|e| format!("{e:#}"))
        };
        let files = over("https://thanos.monitoring:10902").expect("usable");
        assert_eq!(files.bearer_token_file.as_deref(), Some(token.as_path()));
        assert_eq!(
            over("http://prometheus.linkerd-viz:9090").expect_err("refused"),
            "--prometheus-url with --prometheus-* credentials: \
             http://prometheus.linkerd-viz:9090 is not https://: Serin sends credentials only \
             over TLS, never in clear"
        );
        let missing = serving(&["--prometheus-ca-file=/nonexistent/ca.crt"])
            .expect("parses")
            .prometheus_credentials()
            .map_err(|e| format!("{e:#}"))
            .expect_err("refused");
        assert!(
            missing.starts_with("--prometheus-ca-file /nonexistent/ca.crt could not be read"),
            "{missing}"
        );
        let none = serving(&[]).expect("parses").prometheus_credentials();
        assert!(none.expect("no flags, no credentials").is_empty());
    }

    #[test]
    fn the_serving_flags_are_on_run_webhook_and_controller_each_with_its_variable() {
        let command = <Cli as clap::CommandFactory>::command();
        let serving_flags = |name: &str| {
            let subcommand = command.find_subcommand(name).expect(name);
            let flags: Vec<(String, String)> = subcommand
                .get_arguments()
                .filter_map(|arg| {
                    let long = arg.get_long()?.to_owned();
                    let var = arg.get_env().map(|v| v.to_string_lossy().into_owned());
                    Some((long, var.unwrap_or_default()))
                })
                .collect();
            flags
        };
        let run = serving_flags("run");
        assert_eq!(run.len(), 25, "{run:?}");
        for (flag, var) in &run {
            let expected = format!("SERIN_{}", flag.to_uppercase().replace('-', "_"));
            assert_eq!(var, &expected, "--{flag}");
        }
        assert_eq!(serving_flags("webhook"), run);
        assert_eq!(serving_flags("controller"), run);
        // And not on the top level, before the subcommand.
        assert_eq!(
            command
                .get_arguments()
                .filter(|a| a.get_long().is_some())
                .count(),
            0
        );
    }

    #[test]
    fn check_certs_crds_and_the_plugin_door_have_no_serving_flags() {
        for argv in [
            &[
                "serin",
                "check",
                "-f",
                "deploy.yaml",
                "--listen",
                "127.0.0.1:1",
            ][..],
            &["serin", "check", "-f", "deploy.yaml", "--kubeconfig", "k"],
            &["serin", "certs", "--tls-cert", "tls.crt"],
            &["serin", "crds", "--self-signed"],
            &["serin", "--listen", "127.0.0.1:1", "run"],
            &["serin", "--log-format", "json", "kubectl", "status"],
        ] {
            let refused = Cli::try_parse_from(argv).map(|_| ());
            assert_eq!(
                refused.map_err(|e| e.kind()),
                Err(clap::error::ErrorKind::UnknownArgument),
                "{argv:?}"
            );
        }
        let command = <Cli as clap::CommandFactory>::command();
        let check = command.find_subcommand("check").expect("check");
        assert!(check.get_arguments().all(|arg| arg.get_env().is_none()));
    }

    const DEV_TOOLS: [&str; 2] = ["simulate", "demo-chart"];

    #[cfg(not(feature = "dev-tools"))]
    #[test]
    fn the_product_has_no_simulate_or_demo_chart_subcommand() {
        let command = <Cli as clap::CommandFactory>::command();
        for name in DEV_TOOLS {
            assert!(command.find_subcommand(name).is_none(), "{name}");
            let refused = Cli::try_parse_from(["serin", name, "--help"]).map(|_| ());
            assert_eq!(
                refused.map_err(|e| e.kind()),
                Err(clap::error::ErrorKind::InvalidSubcommand),
                "{name}"
            );
        }
    }

    #[cfg(feature = "dev-tools")]
    #[test]
    fn dev_tools_builds_have_the_hidden_simulate_and_demo_chart_subcommands() {
        let command = <Cli as clap::CommandFactory>::command();
        for name in DEV_TOOLS {
            let found = command.find_subcommand(name);
            assert!(found.is_some_and(clap::Command::is_hide_set), "{name}");
        }
    }

    /// The image is the product: its build must not turn the dev tools on, and neither may
    /// the crate's default features.
    #[test]
    fn the_image_and_the_default_features_leave_the_dev_tools_out() {
        let dockerfile = include_str!("../../Dockerfile");
        let builds: Vec<&str> = dockerfile
            .lines()
            .filter(|line| line.contains("cargo build"))
            .collect();
        assert!(!builds.is_empty(), "the Dockerfile builds with cargo");
        for line in builds {
            assert!(!line.contains("feature"), "{line}");
        }
        let manifest = include_str!("../../Cargo.toml");
        let default = manifest
            .lines()
            .find(|line| line.starts_with("default ="))
            .expect("Cargo.toml names its default features");
        assert!(!default.contains("dev-tools"), "{default}");
    }
}
