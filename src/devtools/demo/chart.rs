//! A release timeline drawn as one standalone SVG (pure: samples in, text out).
//!
//! Three panels share the time axis: canary weight, success rate and p99 latency, each a step
//! line (a value holds until the next sample); a fourth, the failed requests the canary served
//! since the release began, when the timeline counts them (the real data plane's counters, or
//! the simulator's ground truth). Behind them, one band per run of the same
//! phase, named in a strip above the panels; below them, a lane marks each failed check.
//! Every element a reader or a test looks for carries a `class` (`series`, `phase-band`,
//! `failed-check`) and a `data-*` attribute naming what it shows.

use std::fmt::Write;

use super::Sample;
use super::scale::{Linear, nice_step, tick_label, trim_number};
use crate::release::Phase;

const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 700.0;
const PLOT_LEFT: f64 = 100.0;
const PLOT_RIGHT: f64 = WIDTH - 30.0;
/// The phase strip: rows of phase names above the panels.
const STRIP_TOP: f64 = 116.0;
const STRIP_ROW: f64 = 15.0;
const STRIP_ROWS: usize = 3;
const PANEL_HEIGHT: f64 = 110.0;
/// Vertical space between panels, where each panel's title sits.
const PANEL_GAP: f64 = 36.0;
const FIRST_PANEL_TOP: f64 = STRIP_TOP + STRIP_ROW * STRIP_ROWS as f64 + 26.0;
const LANE_HEIGHT: f64 = 24.0;
/// Space inside a panel above its highest and below its lowest value, so that a line at
/// either end is not hidden by the frame.
const PANEL_PADDING: (f64, f64) = (8.0, 4.0);

const WEIGHT_COLOUR: &str = "#1f5fa8";
const SUCCESS_COLOUR: &str = "#23883a";
const LATENCY_COLOUR: &str = "#7b3fa0";
const FAILED_COLOUR: &str = "#c62828";
const THRESHOLD_COLOUR: &str = "#555555";
const GRID_COLOUR: &str = "#d9d9d9";
const TEXT_COLOUR: &str = "#222222";

/// The SVG document for one release. `title` is shown as given (escaped). An empty timeline
/// gives a chart that says so.
pub fn render(title: &str, samples: &[Sample]) -> String {
    let mut svg = String::new();
    let panels = panel_count(samples);
    // Each panel beyond the usual three makes the chart taller by its height and title.
    let height = HEIGHT + (panels - 3) as f64 * (PANEL_HEIGHT + PANEL_GAP);
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="Helvetica, Arial, sans-serif" font-size="12" fill="{TEXT_COLOUR}">"#
    );
    let _ = writeln!(svg, "<title>{}</title>", escape(title));
    let _ = writeln!(
        svg,
        "<desc>Canary weight, success rate, p99 latency and phase of a release over time, as Serin's Canary status showed them.</desc>"
    );
    let _ = writeln!(
        svg,
        r##"<rect width="{WIDTH}" height="{height}" fill="#ffffff"/>"##
    );
    let _ = writeln!(
        svg,
        r#"<text x="{PLOT_LEFT}" y="30" font-size="18" font-weight="bold">{}</text>"#,
        escape(title)
    );
    let _ = writeln!(
        svg,
        r##"<text x="{PLOT_LEFT}" y="50" fill="#555555">{}</text>"##,
        escape(&subtitle(samples))
    );
    if samples.is_empty() {
        let _ = writeln!(
            svg,
            r##"<text class="empty" x="{x}" y="{y}" text-anchor="middle" font-size="16" fill="#555555">No samples were recorded for this release.</text>"##,
            x = (PLOT_LEFT + PLOT_RIGHT) / 2.0,
            y = height / 2.0,
        );
        svg.push_str("</svg>\n");
        return svg;
    }
    let timeline = Timeline::new(samples);
    legend(&mut svg, &timeline);
    phase_bands(&mut svg, &timeline);
    let mut drawn = vec![
        Panel::weight(&timeline),
        Panel::success_rate(&timeline),
        Panel::latency(&timeline),
    ];
    if panels > 3 {
        drawn.push(Panel::failed_served(&timeline));
    }
    for (index, panel) in drawn.iter().enumerate() {
        panel.draw(&mut svg, &timeline, panel_top(index));
    }
    failed_checks(&mut svg, &timeline);
    time_axis(&mut svg, &timeline);
    svg.push_str("</svg>\n");
    svg
}

fn panel_top(index: usize) -> f64 {
    FIRST_PANEL_TOP + index as f64 * (PANEL_HEIGHT + PANEL_GAP)
}

/// The panels a timeline gets: a fourth when it counts the canary's failed requests.
fn panel_count(samples: &[Sample]) -> usize {
    match samples.iter().any(|s| s.canary_failures.is_some()) {
        true => 4,
        false => 3,
    }
}

fn lane_top(timeline: &Timeline) -> f64 {
    panel_top(panel_count(timeline.samples))
}

fn subtitle(samples: &[Sample]) -> String {
    let (Some(first), Some(last)) = (samples.first(), samples.last()) else {
        return "No samples".into();
    };
    let started = match &first.time {
        Some(time) => format!(", from {time}"),
        None => String::new(),
    };
    let served = match (last.canary_requests, last.canary_failures) {
        (Some(requests), failures) => format!(
            " The canary served {requests} requests ({} failed).",
            failures.unwrap_or(0)
        ),
        (None, _) => String::new(),
    };
    format!(
        "{} samples over {} s{started}. Success rate and p99 are the values of Serin's latest check.{served}",
        samples.len(),
        trim_number(last.elapsed - first.elapsed.min(0.0), 1)
    )
}

/// The samples with the time scale: sample `i` holds from its own time until the next
/// sample's, and the last one for a typical sampling interval, so that a final phase seen
/// once still gets a visible band.
struct Timeline<'a> {
    samples: &'a [Sample],
    x: Linear,
    /// End time of each sample's span.
    ends: Vec<f64>,
}

impl<'a> Timeline<'a> {
    fn new(samples: &'a [Sample]) -> Self {
        let mut gaps: Vec<f64> = samples
            .windows(2)
            .map(|w| w[1].elapsed - w[0].elapsed)
            .filter(|gap| *gap > 0.0)
            .collect();
        gaps.sort_by(f64::total_cmp);
        let typical = gaps.get(gaps.len() / 2).copied().unwrap_or(1.0);
        let mut ends: Vec<f64> = samples.iter().skip(1).map(|s| s.elapsed).collect();
        let last = samples.last().map_or(0.0, |s| s.elapsed);
        ends.push(last + typical);
        let start = samples.first().map_or(0.0, |s| s.elapsed.min(0.0));
        Timeline {
            samples,
            x: Linear::new((start, last + typical), (PLOT_LEFT, PLOT_RIGHT)),
            ends,
        }
    }

    /// Runs of consecutive samples with the same phase: (phase, start, end) in seconds.
    fn phase_runs(&self) -> Vec<(Phase, f64, f64)> {
        let mut runs: Vec<(Phase, f64, f64)> = Vec::new();
        for (sample, end) in self.samples.iter().zip(&self.ends) {
            match runs.last_mut() {
                Some(run) if run.0 == sample.phase => run.2 = *end,
                _ => runs.push((sample.phase, sample.elapsed, *end)),
            }
        }
        runs
    }

    /// The last value of a setting the samples carry, if any does.
    fn last_setting(&self, field: impl Fn(&Sample) -> Option<f64>) -> Option<f64> {
        self.samples.iter().rev().find_map(field)
    }
}

/// One of the three measured panels.
struct Panel {
    series: &'static str,
    title: &'static str,
    unit: &'static str,
    colour: &'static str,
    domain: (f64, f64),
    values: Vec<Option<f64>>,
    /// A bound the release must stay on the right side of: (value, label).
    threshold: Option<(f64, String)>,
    no_data: &'static str,
}

impl Panel {
    fn weight(timeline: &Timeline) -> Self {
        Panel {
            series: "canary-weight",
            title: "Canary weight (% of traffic)",
            unit: "%",
            colour: WEIGHT_COLOUR,
            domain: (0.0, 100.0),
            values: timeline
                .samples
                .iter()
                .map(|s| Some(f64::from(s.canary_weight)))
                .collect(),
            threshold: None,
            no_data: "",
        }
    }

    fn success_rate(timeline: &Timeline) -> Self {
        let values: Vec<Option<f64>> = timeline.samples.iter().map(|s| s.success_rate).collect();
        let minimum = timeline.last_setting(|s| s.min_success_rate);
        // At least 95-100, so that a steady 100 % is not drawn on the panel's floor.
        let lowest = values
            .iter()
            .flatten()
            .chain(&minimum)
            .fold(95.0f64, |low, v| low.min(*v));
        let highest = values
            .iter()
            .flatten()
            .fold(100.0f64, |high, v| high.max(*v));
        let step = nice_step(highest - lowest, 4);
        let low = ((lowest / step).floor() * step).max(0.0);
        Panel {
            series: "success-rate",
            title: "Success rate (%)",
            unit: "%",
            colour: SUCCESS_COLOUR,
            domain: (low.min(highest - step), highest),
            values,
            threshold: minimum.map(|m| (m, format!("minimum {} %", trim_number(m, 2)))),
            no_data: "no data: no request reached the canary",
        }
    }

    fn latency(timeline: &Timeline) -> Self {
        let values: Vec<Option<f64>> = timeline.samples.iter().map(|s| s.p99_ms).collect();
        let maximum = timeline.last_setting(|s| s.max_p99_ms);
        let highest_value = values.iter().flatten().fold(0.0f64, |high, v| high.max(*v));
        // A limit far above what was measured would squash the line onto the floor: the
        // scale includes it only when it is within 3 times the highest value.
        let limit_in_scale = maximum.filter(|m| highest_value == 0.0 || *m <= highest_value * 3.0);
        let top = limit_in_scale.map_or(highest_value * 1.15, |m| {
            (m * 1.1).max(highest_value * 1.15)
        });
        let top = if top > 0.0 { top } else { 1.0 };
        let step = nice_step(top, 4);
        Panel {
            series: "p99-latency",
            title: "p99 latency (ms)",
            unit: "ms",
            colour: LATENCY_COLOUR,
            domain: (0.0, (top / step).ceil() * step),
            values,
            threshold: maximum.map(|m| (m, format!("maximum {} ms", trim_number(m, 1)))),
            no_data: "no data: no request reached the canary",
        }
    }

    /// The failed requests the canary served since the release began: what users saw go
    /// wrong. A sample without the count leaves a gap.
    fn failed_served(timeline: &Timeline) -> Self {
        let values: Vec<Option<f64>> = timeline
            .samples
            .iter()
            .map(|s| s.canary_failures.map(|n| n as f64))
            .collect();
        let highest = values.iter().flatten().fold(0.0f64, |high, v| high.max(*v));
        let top = if highest > 0.0 { highest * 1.15 } else { 1.0 };
        let step = nice_step(top, 4);
        Panel {
            series: "canary-failed-requests",
            title: "Failed requests served by the canary (since the release began)",
            unit: "",
            colour: FAILED_COLOUR,
            domain: (0.0, (top / step).ceil() * step),
            values,
            threshold: None,
            no_data: "not counted",
        }
    }

    /// The vertical scale of the panel whose frame starts at `top`.
    fn y_scale(&self, top: f64) -> Linear {
        let (above, below) = PANEL_PADDING;
        Linear::new(self.domain, (top + PANEL_HEIGHT - below, top + above))
    }

    fn draw(&self, svg: &mut String, timeline: &Timeline, top: f64) {
        let y = self.y_scale(top);
        let _ = writeln!(
            svg,
            r#"<g class="panel" data-panel="{series}">"#,
            series = self.series
        );
        let _ = writeln!(
            svg,
            r#"<text x="{PLOT_LEFT}" y="{ty}" font-weight="bold">{title}</text>"#,
            ty = top - 8.0,
            title = escape(self.title)
        );
        let (ticks, step) = y.ticks(4);
        for tick in ticks {
            let ty = y.map(tick);
            let _ = writeln!(
                svg,
                r#"<line x1="{PLOT_LEFT}" y1="{ty:.1}" x2="{PLOT_RIGHT}" y2="{ty:.1}" stroke="{GRID_COLOUR}" stroke-width="0.8"/>"#
            );
            let _ = writeln!(
                svg,
                r#"<text x="{lx}" y="{ly:.1}" text-anchor="end">{label}</text>"#,
                lx = PLOT_LEFT - 6.0,
                ly = ty + 4.0,
                label = escape(&format!("{} {}", tick_label(tick, step), self.unit)),
            );
        }
        let _ = writeln!(
            svg,
            r##"<rect x="{PLOT_LEFT}" y="{top}" width="{w}" height="{PANEL_HEIGHT}" fill="none" stroke="#888888" stroke-width="1"/>"##,
            w = PLOT_RIGHT - PLOT_LEFT
        );
        if let Some((value, label)) = &self.threshold {
            self.draw_threshold(svg, &y, *value, label, top);
        }
        let runs = self.runs(timeline, &y);
        if runs.is_empty() {
            let _ = writeln!(
                svg,
                r##"<text x="{x}" y="{ty}" text-anchor="middle" fill="#777777">{note}</text>"##,
                x = (PLOT_LEFT + PLOT_RIGHT) / 2.0,
                ty = top + PANEL_HEIGHT / 2.0,
                note = escape(self.no_data)
            );
        }
        let _ = writeln!(
            svg,
            r#"<g class="series" data-series="{series}" fill="none" stroke="{colour}" stroke-width="2.2" stroke-linejoin="round">"#,
            series = self.series,
            colour = self.colour
        );
        for points in runs {
            let points: Vec<String> = points
                .iter()
                .map(|(x, y)| format!("{x:.1},{y:.1}"))
                .collect();
            let _ = writeln!(svg, r#"<polyline points="{}"/>"#, points.join(" "));
        }
        svg.push_str("</g>\n</g>\n");
    }

    fn draw_threshold(&self, svg: &mut String, y: &Linear, value: f64, label: &str, top: f64) {
        let (low, high) = y.domain;
        if (low..=high).contains(&value) {
            let ty = y.map(value);
            let _ = writeln!(
                svg,
                r#"<line class="threshold" x1="{PLOT_LEFT}" y1="{ty:.1}" x2="{PLOT_RIGHT}" y2="{ty:.1}" stroke="{THRESHOLD_COLOUR}" stroke-width="1.2" stroke-dasharray="6 4"/>"#
            );
            // Above the line, unless that would leave the panel.
            let ly = if ty - 5.0 > top + 12.0 {
                ty - 5.0
            } else {
                ty + 14.0
            };
            let _ = writeln!(
                svg,
                r#"<text x="{lx}" y="{ly:.1}" text-anchor="end" fill="{THRESHOLD_COLOUR}">{label}</text>"#,
                lx = PLOT_RIGHT - 4.0,
                label = escape(label)
            );
        } else {
            let note = format!("{label}: above this scale");
            let _ = writeln!(
                svg,
                r#"<text x="{lx}" y="{ly}" text-anchor="end" fill="{THRESHOLD_COLOUR}">{note}</text>"#,
                lx = PLOT_RIGHT - 4.0,
                ly = top + 14.0,
                note = escape(&note)
            );
        }
    }

    /// The step line in pixels, one polyline per run of samples with a value (a sample
    /// without one, e.g. before any traffic, leaves a gap).
    fn runs(&self, timeline: &Timeline, y: &Linear) -> Vec<Vec<(f64, f64)>> {
        let mut runs: Vec<Vec<(f64, f64)>> = Vec::new();
        let mut open = false;
        for ((sample, end), value) in timeline
            .samples
            .iter()
            .zip(&timeline.ends)
            .zip(&self.values)
        {
            let Some(value) = value else {
                open = false;
                continue;
            };
            let vy = y.map(value.clamp(y.domain.0, y.domain.1));
            let start = (timeline.x.map(sample.elapsed), vy);
            let finish = (timeline.x.map(*end), vy);
            match runs.last_mut() {
                Some(run) if open => run.extend([start, finish]),
                _ => runs.push(vec![start, finish]),
            }
            open = true;
        }
        runs
    }
}

/// How each phase is shown: (label, band colour).
fn phase_style(phase: Phase) -> (&'static str, &'static str) {
    match phase {
        Phase::Initializing => ("Initializing", "#eeeeee"),
        Phase::Initialized => ("Initialized", "#e4e4e4"),
        Phase::Waiting => ("Waiting", "#fff1c2"),
        Phase::Progressing => ("Progressing", "#d6e6f7"),
        Phase::WaitingPromotion => ("WaitingPromotion", "#ffe0c2"),
        Phase::Promoting => ("Promoting", "#e2d6f2"),
        Phase::Finalising => ("Finalising", "#d9d2ee"),
        Phase::Succeeded => ("Succeeded", "#c9ebd2"),
        Phase::Failed => ("Failed", "#f6c9cc"),
        Phase::Terminating => ("Terminating", "#dddddd"),
    }
}

fn legend(svg: &mut String, timeline: &Timeline) {
    let row = 76.0;
    let mut x = PLOT_LEFT;
    svg.push_str("<g class=\"legend\">\n");
    let lines = [
        (WEIGHT_COLOUR, "", "canary weight"),
        (SUCCESS_COLOUR, "", "success rate"),
        (LATENCY_COLOUR, "", "p99 latency"),
        (THRESHOLD_COLOUR, " stroke-dasharray=\"6 4\"", "limit"),
    ];
    for (colour, dash, label) in lines {
        let _ = writeln!(
            svg,
            r#"<line x1="{x}" y1="{ly}" x2="{x2}" y2="{ly}" stroke="{colour}" stroke-width="2.2"{dash}/>"#,
            ly = row - 4.0,
            x2 = x + 24.0
        );
        let _ = writeln!(
            svg,
            r#"<text x="{tx}" y="{row}">{label}</text>"#,
            tx = x + 30.0
        );
        x += 40.0 + text_width(label, 12.0);
    }
    cross(svg, x + 6.0, row - 4.0, 4.5);
    let _ = writeln!(
        svg,
        r#"<text x="{tx}" y="{row}">failed check</text>"#,
        tx = x + 16.0
    );
    let row = row + 20.0;
    let _ = writeln!(svg, r#"<text x="{PLOT_LEFT}" y="{row}">phases:</text>"#);
    let mut x = PLOT_LEFT + 52.0;
    let mut shown: Vec<Phase> = Vec::new();
    for sample in timeline.samples {
        if shown.contains(&sample.phase) {
            continue;
        }
        shown.push(sample.phase);
        let (label, colour) = phase_style(sample.phase);
        let _ = writeln!(
            svg,
            r##"<rect x="{x}" y="{ry}" width="14" height="12" fill="{colour}" stroke="#999999" stroke-width="0.6"/>"##,
            ry = row - 10.0
        );
        let _ = writeln!(
            svg,
            r#"<text x="{tx}" y="{row}">{label}</text>"#,
            tx = x + 19.0
        );
        x += 32.0 + text_width(label, 12.0);
    }
    svg.push_str("</g>\n");
}

/// A band per run of one phase behind the panels, its name in the strip above them, and a
/// dashed line where the phase changes.
fn phase_bands(svg: &mut String, timeline: &Timeline) {
    let bottom = lane_top(timeline) + LANE_HEIGHT;
    let mut row_ends = [f64::NEG_INFINITY; STRIP_ROWS];
    svg.push_str("<g class=\"phases\">\n");
    for (index, (phase, start, end)) in timeline.phase_runs().into_iter().enumerate() {
        let (label, colour) = phase_style(phase);
        let (x0, x1) = (timeline.x.map(start), timeline.x.map(end));
        let _ = writeln!(
            svg,
            r#"<rect class="phase-band" data-phase="{label}" x="{x0:.1}" y="{STRIP_TOP}" width="{w:.1}" height="{h:.1}" fill="{colour}" fill-opacity="0.55"/>"#,
            w = (x1 - x0).max(1.0),
            h = bottom - STRIP_TOP
        );
        if index > 0 {
            let _ = writeln!(
                svg,
                r##"<line x1="{x0:.1}" y1="{STRIP_TOP}" x2="{x0:.1}" y2="{bottom}" stroke="#777777" stroke-width="0.8" stroke-dasharray="3 3"/>"##
            );
        }
        // The name goes in the first strip row where it does not overlap the previous one;
        // a phase too brief for any row is still named by its colour in the legend.
        let width = text_width(label, 11.0);
        if let Some(row) = row_ends.iter().position(|end| x0 + 3.0 >= *end) {
            row_ends[row] = x0 + 3.0 + width + 6.0;
            let _ = writeln!(
                svg,
                r#"<text class="phase-label" x="{tx:.1}" y="{ty}" font-size="11">{label}</text>"#,
                tx = x0 + 3.0,
                ty = STRIP_TOP + STRIP_ROW * (row as f64 + 1.0) - 3.0
            );
        }
    }
    svg.push_str("</g>\n");
}

/// A cross in the lane under the panels wherever the count of failed checks went up.
fn failed_checks(svg: &mut String, timeline: &Timeline) {
    let top = lane_top(timeline);
    let middle = top + LANE_HEIGHT / 2.0;
    let _ = writeln!(
        svg,
        r#"<text x="{lx}" y="{ly}" text-anchor="end">failed checks</text>"#,
        lx = PLOT_LEFT - 6.0,
        ly = middle + 4.0
    );
    let _ = writeln!(
        svg,
        r##"<line x1="{PLOT_LEFT}" y1="{middle}" x2="{PLOT_RIGHT}" y2="{middle}" stroke="#bbbbbb" stroke-width="0.8"/>"##
    );
    let mut previous = 0;
    for sample in timeline.samples {
        if sample.failed_checks > previous {
            let x = timeline.x.map(sample.elapsed);
            let _ = writeln!(
                svg,
                r#"<g class="failed-check" data-count="{count}">"#,
                count = sample.failed_checks
            );
            cross(svg, x, middle, 5.0);
            let _ = writeln!(
                svg,
                r#"<text x="{tx:.1}" y="{ty}" fill="{FAILED_COLOUR}" font-weight="bold">{count}</text>"#,
                tx = x + 8.0,
                ty = middle + 4.0,
                count = sample.failed_checks
            );
            svg.push_str("</g>\n");
        }
        previous = sample.failed_checks;
    }
}

fn cross(svg: &mut String, x: f64, y: f64, size: f64) {
    let _ = writeln!(
        svg,
        r#"<path d="M{a:.1},{b:.1} L{c:.1},{d:.1} M{a:.1},{d:.1} L{c:.1},{b:.1}" stroke="{FAILED_COLOUR}" stroke-width="2.2" fill="none"/>"#,
        a = x - size,
        b = y - size,
        c = x + size,
        d = y + size
    );
}

fn time_axis(svg: &mut String, timeline: &Timeline) {
    let top = STRIP_TOP + STRIP_ROW * STRIP_ROWS as f64;
    let bottom = lane_top(timeline) + LANE_HEIGHT;
    let (ticks, step) = timeline.x.ticks(10);
    svg.push_str("<g class=\"time-axis\">\n");
    for tick in ticks {
        let x = timeline.x.map(tick);
        let _ = writeln!(
            svg,
            r#"<line x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{bottom}" stroke="{GRID_COLOUR}" stroke-width="0.6"/>"#
        );
        let _ = writeln!(
            svg,
            r#"<text x="{x:.1}" y="{ty}" text-anchor="middle">{label}</text>"#,
            ty = bottom + 16.0,
            label = tick_label(tick, step)
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{x}" y="{ty}" text-anchor="middle">seconds since the new version was applied</text>"#,
        x = (PLOT_LEFT + PLOT_RIGHT) / 2.0,
        ty = bottom + 36.0
    );
    svg.push_str("</g>\n");
}

/// Roughly how wide `text` is drawn in a sans-serif font of `size` pixels.
fn text_width(text: &str, size: f64) -> f64 {
    text.chars().count() as f64 * size * 0.56
}

/// Text made safe for SVG element content and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Characters XML 1.0 does not allow at all.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(elapsed: f64, phase: Phase, weight: u32, success: Option<f64>) -> Sample {
        Sample {
            elapsed,
            time: None,
            phase,
            canary_weight: weight,
            success_rate: success,
            p99_ms: success.map(|_| 30.0),
            failed_checks: 0,
            min_success_rate: Some(99.0),
            max_p99_ms: Some(500.0),
            canary_requests: None,
            canary_failures: None,
        }
    }

    /// A promoted release: no data at first, then steps of 20 % up to 60 %, then Succeeded.
    fn promoted() -> Vec<Sample> {
        vec![
            sample(0.0, Phase::Progressing, 0, None),
            sample(1.0, Phase::Progressing, 20, None),
            sample(2.0, Phase::Progressing, 40, Some(100.0)),
            sample(3.0, Phase::Progressing, 60, Some(100.0)),
            sample(4.0, Phase::Promoting, 60, Some(100.0)),
            sample(5.0, Phase::Succeeded, 0, Some(100.0)),
        ]
    }

    /// The part of the SVG from the element carrying `marker` to the end of its group.
    fn group<'a>(svg: &'a str, marker: &str) -> &'a str {
        let start = svg
            .find(marker)
            .unwrap_or_else(|| panic!("{marker} in\n{svg}"));
        let rest = &svg[start..];
        &rest[..rest.find("</g>").expect("group ends")]
    }

    /// The points of each polyline of a series, in pixels.
    fn series(svg: &str, name: &str) -> Vec<Vec<(f64, f64)>> {
        group(svg, &format!("data-series=\"{name}\""))
            .split("points=\"")
            .skip(1)
            .map(|rest| {
                rest[..rest.find('"').expect("points end")]
                    .split(' ')
                    .map(|pair| {
                        let (x, y) = pair.split_once(',').expect("x,y");
                        (x.parse().expect("x"), y.parse().expect("y"))
                    })
                    .collect()
            })
            .collect()
    }

    fn bands(svg: &str) -> Vec<String> {
        svg.split("class=\"phase-band\" data-phase=\"")
            .skip(1)
            .map(|rest| rest[..rest.find('"').expect("phase ends")].to_owned())
            .collect()
    }

    #[test]
    fn the_subtitle_counts_the_requests_the_canary_served_only_when_known() {
        let mut samples = promoted();
        assert!(!subtitle(&samples).contains("served"));
        if let Some(last) = samples.last_mut() {
            last.canary_requests = Some(412);
            last.canary_failures = Some(37);
        }
        assert!(
            subtitle(&samples).ends_with("The canary served 412 requests (37 failed)."),
            "{}",
            subtitle(&samples)
        );
    }

    #[test]
    fn a_scale_maps_its_domain_onto_its_range_and_widens_a_single_value() {
        let y = Linear::new((0.0, 100.0), (300.0, 100.0));
        assert_eq!(y.map(0.0), 300.0);
        assert_eq!(y.map(100.0), 100.0);
        assert_eq!(y.map(25.0), 250.0);
        let single = Linear::new((7.0, 7.0), (0.0, 10.0));
        assert_eq!(single.domain, (7.0, 8.0));
        assert_eq!(single.map(7.0), 0.0);
    }

    #[test]
    fn ticks_are_round_numbers_inside_the_domain() {
        let (ticks, step) = Linear::new((0.0, 100.0), (0.0, 1.0)).ticks(4);
        assert_eq!(
            (ticks, step),
            (vec![0.0, 20.0, 40.0, 60.0, 80.0, 100.0], 20.0)
        );
        let (ticks, step) = Linear::new((0.0, 13.0), (0.0, 1.0)).ticks(10);
        assert_eq!(step, 1.0);
        assert_eq!(ticks.len(), 14);
        assert_eq!(nice_step(0.4, 4), 0.1);
        assert_eq!(nice_step(2300.0, 4), 500.0);
        assert_eq!(nice_step(0.0, 4), 1.0);
        assert_eq!(tick_label(0.30000000000000004, 0.1), "0.3");
        assert_eq!(tick_label(-1e-17, 0.5), "0.0");
        assert_eq!(trim_number(12.50, 2), "12.5");
        assert_eq!(trim_number(500.0, 1), "500");
    }

    #[test]
    fn weight_is_a_step_line_on_a_fixed_0_to_100_scale() {
        let svg = render("podinfo 6.7.1", &promoted());
        let lines = series(&svg, "canary-weight");
        assert_eq!(lines.len(), 1, "no gap in the weight");
        let points = &lines[0];
        assert_eq!(points.len(), 12, "two points per sample: {points:?}");
        let y = Panel::weight(&Timeline::new(&promoted())).y_scale(panel_top(0));
        let at = |weight: f64| (y.map(weight) * 10.0).round() / 10.0;
        assert_eq!(points[0], (PLOT_LEFT, at(0.0)));
        assert_eq!(points[2].1, at(20.0));
        assert_eq!(points[6].1, at(60.0));
        // Each value holds until the next sample: a horizontal, then a vertical segment.
        assert_eq!(points[1].1, points[0].1);
        assert_eq!(points[1].0, points[2].0);
        // The last sample holds for one sampling interval, to the right edge.
        assert_eq!(points[11].0, PLOT_RIGHT);
    }

    #[test]
    fn phases_are_bands_in_order_and_named_in_the_legend() {
        let svg = render("podinfo 6.7.1", &promoted());
        assert_eq!(bands(&svg), ["Progressing", "Promoting", "Succeeded"]);
        let legend = group(&svg, "class=\"legend\"");
        for name in ["canary weight", "success rate", "p99 latency", "Succeeded"] {
            assert!(legend.contains(name), "{name} in the legend");
        }
        assert!(!legend.contains("Failed"), "only phases that occurred");
    }

    #[test]
    fn no_success_rate_without_traffic_leaves_a_gap_not_a_zero() {
        let mut samples = promoted();
        samples[3].success_rate = None;
        let svg = render("gap", &samples);
        let lines = series(&svg, "success-rate");
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert_eq!(lines[0].len(), 2, "the sample at 2 s alone");
        assert_eq!(lines[1].len(), 4, "the samples at 4 s and 5 s");
        let first_x = lines[0][0].0;
        assert!(
            first_x > PLOT_LEFT,
            "nothing drawn for the first two samples"
        );
    }

    #[test]
    fn a_series_without_any_value_says_there_was_no_data() {
        let samples = vec![
            sample(0.0, Phase::Progressing, 0, None),
            sample(1.0, Phase::Progressing, 20, None),
        ];
        let svg = render("silent", &samples);
        assert!(series(&svg, "success-rate").is_empty());
        assert!(series(&svg, "p99-latency").is_empty());
        assert_eq!(
            svg.matches("no data: no request reached the canary")
                .count(),
            2
        );
        assert_eq!(series(&svg, "canary-weight").len(), 1);
    }

    #[test]
    fn a_single_sample_is_drawn_over_one_unit_of_time() {
        let svg = render("one", &[sample(4.0, Phase::Failed, 0, Some(80.0))]);
        let weight = series(&svg, "canary-weight");
        let floor = panel_top(0) + PANEL_HEIGHT - PANEL_PADDING.1;
        // The domain is 0..5 s (from 0, and one unit past the sample): 4 s is at 80 %.
        let x = PLOT_LEFT + (PLOT_RIGHT - PLOT_LEFT) * 0.8;
        assert_eq!(weight.len(), 1);
        assert_eq!(weight[0].len(), 2);
        assert!((weight[0][0].0 - x).abs() < 0.06, "{weight:?}");
        assert_eq!(weight[0][0].1, floor);
        assert_eq!(weight[0][1], (PLOT_RIGHT, floor));
        assert_eq!(bands(&svg), ["Failed"]);
        assert_eq!(series(&svg, "success-rate")[0].len(), 2);
    }

    #[test]
    fn an_empty_timeline_gives_a_chart_that_says_so() {
        let svg = render("nothing", &[]);
        assert!(svg.starts_with("<svg "));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("No samples were recorded"));
        assert!(!svg.contains("<polyline"));
        assert!(bands(&svg).is_empty());
    }

    #[test]
    fn the_failed_requests_the_canary_served_get_a_panel_of_their_own_only_when_counted() {
        let plain = render("podinfo 6.7.1", &promoted());
        assert!(!plain.contains("canary-failed-requests"));
        assert!(plain.contains("height=\"700\""), "the usual three panels");
        let mut counted = promoted();
        for (i, sample) in counted.iter_mut().enumerate() {
            sample.canary_failures = Some(3 * i as u64);
        }
        let svg = render("podinfo 6.8.0", &counted);
        let lines = series(&svg, "canary-failed-requests");
        assert_eq!(lines.len(), 1, "one line, no gap");
        // Higher counts are drawn higher (smaller y), step by step.
        let ys: Vec<f64> = lines[0].iter().map(|(_, y)| *y).collect();
        assert!(ys.windows(2).all(|w| w[1] <= w[0]), "{ys:?}");
        assert!(ys.first() > ys.last(), "{ys:?}");
        assert!(svg.contains("Failed requests served by the canary"));
        let taller = format!("height=\"{}\"", 700.0 + PANEL_HEIGHT + PANEL_GAP);
        assert!(
            svg.contains(&taller),
            "a fourth panel makes room for itself"
        );
    }

    #[test]
    fn failed_checks_are_marked_where_the_count_rises() {
        let mut samples = promoted();
        for (sample, failed) in samples.iter_mut().zip([0, 0, 1, 1, 2, 3]) {
            sample.failed_checks = failed;
        }
        samples[5].phase = Phase::Failed;
        let svg = render("broken", &samples);
        let counts: Vec<&str> = svg
            .split("class=\"failed-check\" data-count=\"")
            .skip(1)
            .map(|rest| &rest[..rest.find('"').expect("count ends")])
            .collect();
        assert_eq!(counts, ["1", "2", "3"]);
        assert_eq!(bands(&svg).last().map(String::as_str), Some("Failed"));
    }

    #[test]
    fn the_success_rate_scale_includes_the_minimum_and_the_lowest_value() {
        let mut samples = promoted();
        samples[3].success_rate = Some(76.7);
        let panel = Panel::success_rate(&Timeline::new(&samples));
        assert_eq!(panel.domain, (75.0, 100.0));
        let steady = Panel::success_rate(&Timeline::new(&promoted()));
        assert_eq!(
            steady.domain,
            (95.0, 100.0),
            "a steady 100 % is not on the floor"
        );
        let svg = render("t", &samples);
        assert!(svg.contains("minimum 99 %"));
    }

    #[test]
    fn a_latency_limit_far_above_the_values_is_noted_not_scaled_to() {
        let panel = Panel::latency(&Timeline::new(&promoted()));
        assert_eq!(
            panel.domain,
            (0.0, 40.0),
            "30 ms, not squashed under 500 ms"
        );
        let svg = render("t", &promoted());
        assert!(svg.contains("maximum 500 ms: above this scale"));
        let mut slow = promoted();
        for s in &mut slow {
            s.p99_ms = s.p99_ms.map(|_| 450.0);
        }
        let panel = Panel::latency(&Timeline::new(&slow));
        assert!(panel.domain.1 >= 550.0, "{:?}", panel.domain);
        assert!(render("t", &slow).contains("class=\"threshold\""));
    }

    #[test]
    fn text_is_escaped_in_content_and_attributes() {
        assert_eq!(
            escape(r#"<a href="x">Tom & 'Jerry'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;Tom &amp; &apos;Jerry&apos;&lt;/a&gt;"
        );
        assert_eq!(escape("bell\u{7}"), "bell\u{fffd}");
        let svg = render("podinfo <script>&</script>", &promoted());
        assert!(!svg.contains("<script>"));
        assert_eq!(
            svg.matches("podinfo &lt;script&gt;&amp;&lt;/script&gt;")
                .count(),
            2,
            "in <title> and in the heading"
        );
    }
}
