//! `serin demo-chart` (hidden, `dev-tools` builds only): draws a release timeline recorded
//! by `make demo` as an SVG. See [`super`].

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use super::{chart, parse_timeline};

#[derive(Debug, Args)]
pub struct DemoChartArgs {
    /// The timeline: one JSON sample per line, as hack/demo.sh records it.
    #[arg(long)]
    pub timeline: PathBuf,
    /// Where to write the SVG.
    #[arg(long)]
    pub out: PathBuf,
    /// The chart's title; the timeline's file name without extension by default.
    #[arg(long)]
    pub title: Option<String>,
}

pub fn run(args: &DemoChartArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.timeline)
        .with_context(|| format!("reading the timeline {}", args.timeline.display()))?;
    let samples = parse_timeline(&text)
        .with_context(|| format!("reading the timeline {}", args.timeline.display()))?;
    if samples.is_empty() {
        eprintln!(
            "serin demo-chart: warning: {} has no samples; the chart says so",
            args.timeline.display()
        );
    }
    let title = match &args.title {
        Some(title) => title.clone(),
        None => args
            .timeline
            .file_stem()
            .map(|stem| stem.to_string_lossy().into_owned())
            .unwrap_or_default(),
    };
    let svg = chart::render(&title, &samples);
    std::fs::write(&args.out, svg)
        .with_context(|| format!("writing the chart {}", args.out.display()))?;
    Ok(())
}
