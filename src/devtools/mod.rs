//! Development tools: the local environment's traffic simulator ([`simulate`], `serin
//! simulate`) and `make demo`'s release timelines and charts ([`demo`], `serin demo-chart`).
//!
//! They are not the product. The module is compiled only with the cargo feature `dev-tools`,
//! which the local environment (`make`, `hack/*.sh`) always turns on and the Dockerfile's
//! release build does not, so the shipped binary and image have neither subcommand.

pub mod demo;
pub mod simulate;

use clap::Subcommand;

use crate::cli::LogFormat;

/// The development subcommands, hidden from `serin --help`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// The local environment's traffic simulator: Linkerd-style series from the router
    /// weights, on --listen (plain HTTP).
    #[command(hide = true)]
    Simulate(simulate::command::SimulateArgs),
    /// Draw a release timeline recorded by `make demo` as an SVG chart.
    #[command(hide = true)]
    DemoChart(demo::command::DemoChartArgs),
}

impl Command {
    pub fn run(&self) -> anyhow::Result<()> {
        match self {
            Command::Simulate(args) => simulate::command::run(args),
            Command::DemoChart(args) => demo::command::run(args),
        }
    }

    /// The format of the tool's own log lines.
    pub fn log_format(&self) -> LogFormat {
        match self {
            Command::Simulate(args) => args.log_format,
            Command::DemoChart(_) => LogFormat::Text,
        }
    }
}
