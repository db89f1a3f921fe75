//! `make demo`, short, on the real local environment: `hack/demo.sh` with `DEMO_SHORT=1`, in a
//! namespace of its own and writing to a directory of its own under `.serin/demo/`, releases a
//! good and a broken version; then the timelines and SVG charts it wrote are read back. The
//! demo always runs on the local environment (it starts it), whatever `KUBECONFIG` says. Both
//! data planes: the real one (podinfo's pods on the real node behind Traefik, the load
//! tester's requests) and the simulated one (kwok, the SMI/Linkerd provider, the simulator).

mod support;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serin::devtools::demo::{Sample, parse_timeline};
use serin::release::Phase;
use support::svg::{self, Element};

/// A cold first run builds the local control plane before the demo starts; `make test`
/// starts the environment first, so this is a warm run's budget with room to spare.
const DEMO_TIMEOUT: Duration = Duration::from_secs(600);
/// A data plane of the demo (`DEMO_DATA_PLANE`) and the names of its two releases.
struct Plane {
    name: &'static str,
    promoted: &'static str,
    rolled_back: &'static str,
}

const REAL: Plane = Plane {
    name: "real",
    promoted: "v2",
    rolled_back: "v3",
};
const SIMULATED: Plane = Plane {
    name: "simulated",
    promoted: "6.7.1",
    rolled_back: "6.8.0",
};
const SERIES: [&str; 3] = ["canary-weight", "success-rate", "p99-latency"];

/// The demo's namespace, deleted when the test ends (pass or fail) unless `SERIN_E2E_KEEP`
/// is set. The demo creates it, on the local cluster.
struct DemoNamespace(String);

impl Drop for DemoNamespace {
    fn drop(&mut self) {
        if std::env::var_os("SERIN_E2E_KEEP").is_some() {
            eprintln!("keeping namespace {}", self.0);
            return;
        }
        let deleted = Command::new(support::kubectl_path())
            .arg("--kubeconfig")
            .arg(support::repo_root().join(".serin/cluster/kubeconfig"))
            .args([
                "delete",
                "namespace",
                &self.0,
                "--ignore-not-found",
                "--wait=false",
            ])
            .output();
        if !deleted.is_ok_and(|out| out.status.success()) {
            eprintln!("warning: could not delete namespace {}", self.0);
        }
    }
}

/// Runs the short demo; its output (stdout and stderr, each line also echoed to the test's
/// stderr as it comes) and whether it succeeded. Killed after `DEMO_TIMEOUT`.
fn run_demo(plane: &Plane, namespace: &str, out: &Path) -> (bool, String) {
    let script = support::repo_root().join("hack/demo.sh");
    let mut child = Command::new(&script)
        .env("DEMO_SHORT", "1")
        .env("DEMO_DATA_PLANE", plane.name)
        .env("DEMO_NAMESPACE", namespace)
        .env("DEMO_OUT", out)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    let output = Arc::new(Mutex::new(String::new()));
    let forward = |stream: Box<dyn Read + Send>| {
        let output = Arc::clone(&output);
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                eprintln!("demo| {line}");
                let mut all = output.lock().expect("output lock");
                all.push_str(&line);
                all.push('\n');
            }
        })
    };
    let readers = [
        forward(Box::new(child.stdout.take().expect("stdout is piped"))),
        forward(Box::new(child.stderr.take().expect("stderr is piped"))),
    ];
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the demo") {
            break Some(status);
        }
        if start.elapsed() > DEMO_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    for reader in readers {
        let _ = reader.join();
    }
    let mut output = output.lock().expect("output lock").clone();
    if status.is_none() {
        output.push_str(&format!("(killed after {DEMO_TIMEOUT:?})\n"));
    }
    (status.is_some_and(|s| s.success()), output)
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn files_with_extension(dir: &Path, extension: &str) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(&format!(".{extension}")))
        .collect()
}

fn timeline(dir: &Path, version: &str) -> Vec<Sample> {
    let path = dir.join(format!("podinfo-{version}.jsonl"));
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    parse_timeline(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn chart(dir: &Path, version: &str) -> Element {
    let path = dir.join(format!("podinfo-{version}.svg"));
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    svg::parse(&text).unwrap_or_else(|e| panic!("{} is not well-formed: {e}", path.display()))
}

/// The points of every polyline of the series `name`, in pixels.
fn series_points(chart: &Element, name: &str) -> Vec<(f64, f64)> {
    let group = chart
        .descendants()
        .into_iter()
        .find(|e| e.attr("class") == Some("series") && e.attr("data-series") == Some(name))
        .unwrap_or_else(|| panic!("the chart has no series {name}"));
    group
        .descendants()
        .into_iter()
        .filter(|e| e.name == "polyline")
        .flat_map(|line| {
            line.attr("points")
                .unwrap_or_default()
                .split_whitespace()
                .map(|pair| {
                    let (x, y) = pair.split_once(',').expect("points are x,y");
                    (
                        x.parse::<f64>().expect("x is a number"),
                        y.parse::<f64>().expect("y is a number"),
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The phase of each band, left to right.
fn phase_bands(chart: &Element) -> Vec<String> {
    chart
        .descendants()
        .into_iter()
        .filter(|e| e.attr("class") == Some("phase-band"))
        .map(|e| e.attr("data-phase").unwrap_or_default().to_owned())
        .collect()
}

fn failed_check_marks(chart: &Element) -> usize {
    chart
        .descendants()
        .into_iter()
        .filter(|e| e.attr("class") == Some("failed-check"))
        .count()
}

/// What every chart must show: a title naming the release, and each series drawn with more
/// than one point, all inside the picture. The p99 series only when a p99 was measured: with
/// sequential checks a broken release can be rolled back on its request counts before the
/// first latency check has a value.
fn assert_drawn(chart: &Element, version: &str, p99_measured: bool) {
    assert_eq!(chart.name, "svg");
    let title = chart
        .descendants()
        .into_iter()
        .find(|e| e.name == "title")
        .map(Element::text)
        .unwrap_or_default();
    assert!(
        title.contains(version),
        "the title {title:?} names {version}"
    );
    let size = |attribute: &str| -> f64 {
        chart
            .attr(attribute)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("the chart has a numeric {attribute}"))
    };
    let (width, height) = (size("width"), size("height"));
    for name in SERIES {
        if name == "p99-latency" && !p99_measured {
            continue;
        }
        let points = series_points(chart, name);
        assert!(
            points.len() > 1,
            "{version}: series {name} has {} points",
            points.len()
        );
        for (x, y) in &points {
            assert!(
                (0.0..=width).contains(x) && (0.0..=height).contains(y),
                "{version}: {name} point ({x}, {y}) lies outside the {width}x{height} chart"
            );
        }
    }
}

#[test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
fn the_short_demo_on_real_pods_counts_the_real_requests_the_canary_answered() {
    let (promoted, rolled_back, output) = short_demo(&REAL);
    assert!(
        output.contains("Data plane: REAL"),
        "the demo says its data plane is real"
    );
    let served = |samples: &[Sample]| {
        let last = samples.last().expect("samples");
        (last.canary_requests, last.canary_failures)
    };
    let (requests, failures) = served(&promoted);
    assert!(
        requests.is_some_and(|n| n > 0) && failures == Some(0),
        "the promoted canary answered real requests, none failed: {requests:?}, {failures:?}"
    );
    let (requests, failures) = served(&rolled_back);
    assert!(
        requests.is_some_and(|n| n > 0) && failures.is_some_and(|n| n > 0),
        "the rolled-back canary answered real requests, some failed: {requests:?}, {failures:?}"
    );
    assert!(
        output.contains("canary served"),
        "the live lines count the canary's requests"
    );
}

#[test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
fn the_short_simulated_demo_writes_one_chart_per_release_showing_how_each_ended() {
    let (promoted, _, output) = short_demo(&SIMULATED);
    assert!(
        output.contains("Data plane: SIMULATED"),
        "the demo says its data plane is simulated"
    );
    // The counts come from the simulator's own tally of what each canary served.
    let last = promoted.last().expect("samples");
    assert!(
        last.canary_requests.is_some_and(|n| n > 0) && last.canary_failures == Some(0),
        "the simulator's counts of the promoted canary: {last:?}"
    );
    assert!(
        output.contains("canary served"),
        "the live lines count the canary's requests"
    );
}

/// Runs the short demo on `plane` and checks what every demo must show; the timelines of the
/// promoted and the rolled-back release, and the demo's output.
fn short_demo(plane: &Plane) -> (Vec<Sample>, Vec<Sample>, String) {
    let (promoted_version, rolled_back_version) = (plane.promoted, plane.rolled_back);
    let namespace = DemoNamespace(format!("e2e-demo-{}-{}", plane.name, std::process::id()));
    let out: PathBuf = support::repo_root().join(".serin/demo").join(&namespace.0);
    let _ = std::fs::remove_dir_all(&out);

    let (ok, output) = run_demo(plane, &namespace.0, &out);
    assert!(
        ok,
        "hack/demo.sh (DEMO_SHORT=1, DEMO_DATA_PLANE={}) failed; its last lines:\n{}",
        plane.name,
        last_lines(&output, 60)
    );
    for version in [promoted_version, rolled_back_version] {
        let path = out.join(format!("podinfo-{version}.svg"));
        assert!(
            output.contains(&path.display().to_string()),
            "the demo prints the path of {}",
            path.display()
        );
    }
    let expected = |extension: &str| -> BTreeSet<String> {
        [promoted_version, rolled_back_version]
            .iter()
            .map(|version| format!("podinfo-{version}.{extension}"))
            .collect()
    };
    assert_eq!(
        files_with_extension(&out, "svg"),
        expected("svg"),
        "one chart per release"
    );
    assert_eq!(
        files_with_extension(&out, "jsonl"),
        expected("jsonl"),
        "one timeline per release"
    );

    // The timelines: what the charts are drawn from.
    let promoted = timeline(&out, promoted_version);
    let rolled_back = timeline(&out, rolled_back_version);
    assert!(
        promoted.len() > 1 && rolled_back.len() > 1,
        "more than one sample each"
    );
    assert_eq!(promoted.last().map(|s| s.phase), Some(Phase::Succeeded));
    assert!(
        promoted
            .iter()
            .any(|s| s.canary_weight > 0 && s.success_rate.is_some()),
        "the promoted canary took traffic and was measured: {promoted:?}"
    );
    assert_eq!(rolled_back.last().map(|s| s.phase), Some(Phase::Failed));
    // Sequential checks (the default) roll back on the request counts, often before a whole
    // check has failed; either way the rollback followed failures the canary served.
    assert!(
        rolled_back
            .last()
            .is_some_and(|s| s.failed_checks > 0 || s.canary_failures.is_some_and(|f| f > 0)),
        "the rollback followed failed checks or failed requests: {rolled_back:?}"
    );

    // The charts.
    let promoted_chart = chart(&out, promoted_version);
    assert_drawn(&promoted_chart, promoted_version, true);
    let bands = phase_bands(&promoted_chart);
    assert_eq!(
        bands.last().map(String::as_str),
        Some("Succeeded"),
        "{bands:?}"
    );
    assert!(bands.iter().any(|b| b == "Progressing"), "{bands:?}");
    assert!(!bands.iter().any(|b| b == "Failed"), "{bands:?}");
    let weight_levels: BTreeSet<i64> = series_points(&promoted_chart, "canary-weight")
        .iter()
        .map(|(_, y)| y.round() as i64)
        .collect();
    assert!(
        weight_levels.len() >= 3,
        "the weight steps up through at least two levels above zero: {weight_levels:?}"
    );

    let rolled_back_chart = chart(&out, rolled_back_version);
    assert_drawn(
        &rolled_back_chart,
        rolled_back_version,
        rolled_back.iter().any(|s| s.p99_ms.is_some()),
    );
    let bands = phase_bands(&rolled_back_chart);
    assert_eq!(
        bands.last().map(String::as_str),
        Some("Failed"),
        "{bands:?}"
    );
    assert!(!bands.iter().any(|b| b == "Succeeded"), "{bands:?}");
    assert!(
        failed_check_marks(&rolled_back_chart) > 0
            || rolled_back
                .last()
                .is_some_and(|s| s.canary_failures.is_some_and(|f| f > 0)),
        "failed checks are marked, or the failed requests counted"
    );

    let _ = std::fs::remove_dir_all(&out);
    (promoted, rolled_back, output)
}

#[test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
fn demo_chart_draws_a_timeline_and_names_the_line_it_cannot_read() {
    let dir = tempfile::tempdir().expect("temp dir");
    let timeline = dir.path().join("web-v2.jsonl");
    let chart = dir.path().join("web-v2.svg");
    let serin = |title: Option<&str>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_serin"));
        command.arg("demo-chart").arg("--timeline").arg(&timeline);
        command.arg("--out").arg(&chart);
        if let Some(title) = title {
            command.args(["--title", title]);
        }
        command.output().expect("serin runs")
    };
    let samples = [
        r#"{"elapsed":0,"phase":"Progressing","canaryWeight":0,"failedChecks":0}"#,
        r#"{"elapsed":1,"phase":"Progressing","canaryWeight":25,"successRate":100,"p99Ms":12,"failedChecks":0}"#,
    ];
    std::fs::write(&timeline, samples.join("\n")).expect("write timeline");
    let out = serin(Some("web <v2> & more"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let drawn =
        svg::parse(&std::fs::read_to_string(&chart).expect("chart written")).expect("well-formed");
    assert_drawn(&drawn, "web <v2> & more", true);

    std::fs::write(&timeline, r#"{"elapsed":0,"phase":"Sleeping"}"#).expect("write");
    let out = serin(None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!(
            "{}: line 1: not a timeline sample",
            timeline.display()
        )),
        "{stderr}"
    );
}

#[test]
#[ignore = "e2e: needs the local environment (make test-e2e)"]
fn the_svg_reader_refuses_what_is_not_well_formed() {
    let ok = svg::parse(
        r#"<?xml version="1.0"?><svg a="1 &amp; 2"><g><text>a &lt; b</text></g><rect/></svg>"#,
    )
    .expect("well-formed");
    assert_eq!(ok.attr("a"), Some("1 & 2"));
    assert_eq!(ok.text(), "a < b");
    assert_eq!(ok.descendants().len(), 4);
    for bad in [
        "<svg><g></svg>",
        "<svg><text>a < b</text></svg>",
        "<svg><text>Tom & Jerry</text></svg>",
        r#"<svg a="1" a="2"/>"#,
        "<svg a=1/>",
        "<svg></svg><svg/>",
        "<svg>",
    ] {
        assert!(svg::parse(bad).is_err(), "{bad} is refused");
    }
}
