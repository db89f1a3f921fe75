//! Serin: progressive delivery for Kubernetes.
//!
//! A team annotates an existing Deployment (`serin.dev/enabled: "true"`); from then on every
//! new revision is released as a canary. The crate is layered so that the pure core never
//! touches the network:
//! - [`spec`]: the canary model, annotation parsing, schema and validation (pure);
//! - [`release`]: the release machinery as pure functions: desired objects (primary,
//!   Services, config copies, HPA), the revision hash and the release state machine;
//! - [`router`]: one traffic router per provider behind a small trait (SMI TrafficSplit);
//! - [`analysis`]: what a release measures and calls: the planned checks, the builtin queries
//!   one file per data plane, Prometheus, the AnalysisTemplate's webhooks and their validation,
//!   and the controller's door to them ([`analysis::Measuring`]);
//! - [`alerts`]: chat alerts (Slack, Teams, Discord, Rocket.Chat, Google Chat) of a
//!   release's Events, one file per format, configured in `CanaryPolicy`;
//! - [`policy`]: `CanaryPolicy` rules (coverage, defaults, findings) and the watch-fed index
//!   of the cluster's policies;
//! - [`controller`]: the release controller (kube-rs), the executor of [`release`];
//! - [`admission`]: the validating and mutating webhooks built on [`spec`];
//! - [`crd`]: Serin's custom resources (`Canary`, `AnalysisTemplate`, `CanaryPolicy`), types
//!   only, source of the CRD YAML;
//! - [`server`]: HTTPS serving with reloadable certificates and the admin port;
//! - [`certs`]: a local CA and serving certificate;
//! - [`tolerant`]: watches that skip (and name) an object Serin cannot decode;
//! - [`cli`]: the `serin` command line: the serving subcommands, `serin check` (admission's
//!   validation, offline; [`cli::check`]) and the kubectl plugin;
//! - `devtools` (cargo feature `dev-tools`, off in the shipped binary and image): the local
//!   environment's traffic simulator (Linkerd-style series from the router weights in the
//!   API server) and `make demo`'s release timelines and SVG charts, with their hidden
//!   subcommands `serin simulate` and `serin demo-chart`.

pub mod admission;
pub mod alerts;
pub mod analysis;
pub mod certs;
pub mod cli;
pub mod controller;
pub mod conversion;
pub mod crd;
#[cfg(feature = "dev-tools")]
pub mod devtools;
pub mod policy;
pub mod release;
pub mod router;
pub mod server;
pub mod spec;
pub mod tolerant;
