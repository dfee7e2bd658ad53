//! `echo-reactor compare`: saved `load --json` reports side by side, each
//! figure with its ratio to the first run, each run's settings above the
//! figures, and a warning when the runs were not alike (another protocol,
//! target, connection count, load or message size). Pure: the caller
//! reads the files and prints.

use std::fmt::Write as _;

use serde::Serialize;

use super::report_json::ReportJson;
use super::Proto;

/// What `compare` reads from one saved report: its settings and figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Where it came from (a file name).
    pub name: String,
    /// How the run was made.
    pub settings: RunSettings,
    /// msgs/s, p50, p90, p99, p99.9, max (µs), errors: in [`ROWS`] order.
    pub figures: [f64; 7],
}

/// The settings that make two runs comparable.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunSettings {
    /// TCP or UDP.
    pub proto: Proto,
    /// The server as named (`echo-reactor:7007`) or its address.
    pub target: String,
    /// Connections (UDP: sockets) of this report.
    pub connections: usize,
    /// Open loop: messages per second of this report; `None`: closed loop.
    pub rate: Option<f64>,
    /// Closed loop: messages in flight per connection; `None` when the
    /// report predates the field.
    pub pipeline: Option<usize>,
    /// Bytes per message; `None` when the report predates the field.
    pub size: Option<usize>,
}

impl RunSettings {
    /// The settings as a short phrase: `tcp 127.0.0.1:7007, 50
    /// connections, closed loop (pipeline 1), 64 B`.
    pub fn describe(&self) -> String {
        let load = match (self.rate, self.pipeline) {
            (Some(r), _) => format!("{r} msgs/s"),
            (None, Some(p)) => format!("closed loop (pipeline {p})"),
            (None, None) => "closed loop".into(),
        };
        let size = self
            .size
            .map_or("size unknown".into(), |s| format!("{s} B"));
        format!(
            "{} {}, {} {}, {load}, {size}",
            self.proto,
            self.target,
            self.connections,
            self.proto.peers()
        )
    }

    /// What differs from `base`, one phrase each (`size 1024 B, not 64 B`).
    pub fn unlike(&self, base: &RunSettings) -> Vec<String> {
        let mut out = Vec::new();
        let mut differ = |what: &str, ours: String, theirs: String| {
            if ours != theirs {
                out.push(format!("{what} {ours}, not {theirs}"));
            }
        };
        differ("protocol", self.proto.to_string(), base.proto.to_string());
        differ("target", self.target.clone(), base.target.clone());
        differ(
            "connections",
            self.connections.to_string(),
            base.connections.to_string(),
        );
        let load = |s: &RunSettings| match (s.rate, s.pipeline) {
            (Some(r), _) => format!("{r} msgs/s"),
            (None, p) => format!("closed loop (pipeline {})", p.unwrap_or(1)),
        };
        differ("load", load(self), load(base));
        let size = |s: &RunSettings| s.size.map_or("unknown".into(), |b| format!("{b} B"));
        differ("size", size(self), size(base));
        out
    }
}

/// The figure rows, as the table labels them and `--json` names them.
pub const ROWS: [(&str, &str); 7] = [
    ("msgs/s", "msgs_per_sec"),
    ("p50 us", "p50_us"),
    ("p90 us", "p90_us"),
    ("p99 us", "p99_us"),
    ("p99.9 us", "p999_us"),
    ("max us", "max_us"),
    ("errors", "errors"),
];

/// Reads the settings and figures from one JSON report of ours, in any
/// field order.
///
/// # Errors
///
/// A message naming the file and what is wrong with it.
pub fn parse_summary(name: &str, json: &str) -> Result<Summary, String> {
    let r = ReportJson::parse(json).map_err(|e| format!("{name}: {e}"))?;
    let l = &r.latency_us;
    let target = match &r.host {
        Some(host) => format!("{host}:{}", r.target.port()),
        None => r.target.to_string(),
    };
    Ok(Summary {
        name: name.to_string(),
        settings: RunSettings {
            proto: r.proto,
            target,
            connections: r.connections,
            rate: r.rate,
            pipeline: r.test.as_ref().map(|t| t.pipeline),
            size: r.test.as_ref().map(|t| t.size),
        },
        figures: [
            r.msgs_per_sec,
            l.p50 as f64,
            l.p90 as f64,
            l.p99 as f64,
            l.p999 as f64,
            l.max as f64,
            r.errors.total() as f64,
        ],
    })
}

/// For each run after the first that was not made like the first, one
/// line saying how (`2 (b.json): size 1024 B, not 64 B`).
pub fn unlike_runs(runs: &[Summary]) -> Vec<String> {
    let Some(base) = runs.first() else {
        return Vec::new();
    };
    runs.iter()
        .enumerate()
        .skip(1)
        .filter_map(|(i, r)| {
            let how = r.settings.unlike(&base.settings);
            (!how.is_empty()).then(|| format!("{} ({}): {}", i + 1, r.name, how.join(", ")))
        })
        .collect()
}

/// The ratio of `v` to the first run's figure; `None` for the first run
/// and where the first run's figure is 0.
fn ratio(j: usize, v: f64, base: f64) -> Option<f64> {
    (j > 0 && base != 0.0).then(|| v / base)
}

/// The runs for people: a numbered list with each run's file and
/// settings, then the figures in columns headed by those numbers and
/// sized to the numbers, each with its ratio to run 1.
pub fn compare_table(runs: &[Summary]) -> String {
    let mut out = String::new();
    let name_width = runs.iter().map(|r| r.name.len()).max().unwrap_or(0);
    for (j, r) in runs.iter().enumerate() {
        let _ = writeln!(
            out,
            "{:>2}  {:<name_width$}  {}",
            j + 1,
            r.name,
            r.settings.describe()
        );
    }
    out.push('\n');
    let cells: Vec<Vec<String>> = ROWS
        .iter()
        .enumerate()
        .map(|(i, _)| {
            let base = runs.first().map_or(0.0, |r| r.figures[i]);
            runs.iter()
                .enumerate()
                .map(|(j, r)| {
                    let v = r.figures[i];
                    match ratio(j, v, base) {
                        Some(x) => format!("{v:.0} ({x:.2}x)"),
                        None => format!("{v:.0}"),
                    }
                })
                .collect()
        })
        .collect();
    let widths: Vec<usize> = (0..runs.len())
        .map(|j| {
            cells
                .iter()
                .map(|row| row[j].len())
                .chain(std::iter::once((j + 1).to_string().len()))
                .max()
                .unwrap_or(1)
        })
        .collect();
    let label_width = ROWS.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
    let _ = write!(out, "{:<label_width$}", "");
    for (j, w) in widths.iter().enumerate() {
        let _ = write!(out, "  {:>w$}", j + 1);
    }
    out.push('\n');
    for ((label, _), row) in ROWS.iter().zip(&cells) {
        let _ = write!(out, "{label:<label_width$}");
        for (cell, w) in row.iter().zip(&widths) {
            let _ = write!(out, "  {cell:>w$}");
        }
        out.push('\n');
    }
    out
}

/// One run in `compare --json`.
#[derive(Debug, Serialize)]
struct RunJson<'a> {
    file: &'a str,
    settings: &'a RunSettings,
    figures: serde_json::Map<String, serde_json::Value>,
    /// Each figure over run 1's; `null` for run 1 and where run 1 had 0.
    ratios: serde_json::Map<String, serde_json::Value>,
}

/// The comparison as one JSON object: `runs` (file, settings, figures,
/// ratios to the first run) and `unlike` (the lines of
/// [`unlike_runs`]).
pub fn compare_json(runs: &[Summary]) -> String {
    let base = runs.first().map(|r| r.figures);
    let runs_json: Vec<RunJson> = runs
        .iter()
        .enumerate()
        .map(|(j, r)| {
            let mut figures = serde_json::Map::new();
            let mut ratios = serde_json::Map::new();
            for (i, (_, key)) in ROWS.iter().enumerate() {
                let v = r.figures[i];
                figures.insert(key.to_string(), number(v));
                let x = ratio(j, v, base.map_or(0.0, |b| b[i]));
                ratios.insert(key.to_string(), x.map_or(serde_json::Value::Null, number));
            }
            RunJson {
                file: &r.name,
                settings: &r.settings,
                figures,
                ratios,
            }
        })
        .collect();
    serde_json::json!({ "runs": runs_json, "unlike": unlike_runs(runs) }).to_string()
}

/// A figure as JSON: whole numbers as integers, the rest to three places.
fn number(v: f64) -> serde_json::Value {
    if v.fract() == 0.0 && v.abs() < 9e15 {
        serde_json::Value::from(v as i64)
    } else {
        serde_json::Number::from_f64((v * 1000.0).round() / 1000.0)
            .map_or(serde_json::Value::Null, serde_json::Value::Number)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A report as `load --json` wrote it before the histogram and the
    /// test's settings travelled with it: older files still compare.
    const A: &str = r#"{"proto":"tcp","target":"127.0.0.1:7007","connections":10,"connected":10,"reconnects":0,"ramp_s":0.002,"duration_s":0.1,"messages":100,"bytes":6400,"sent":102,"msgs_per_sec":1000,"bytes_per_sec":64000,"loss_percent":1.961,"latency_us":{"p50":10,"p90":20,"p99":40,"p999":80,"max":100,"mean":12.5},"errors":{"connect":0,"reset":1,"timeout":0,"mismatch":0,"lost":2,"closed":0,"io":0,"duplicate":0},"reordered":0,"late":0,"interrupted":false,"ok":false,"error":"tcp://127.0.0.1:7007: errors: reset 1"}"#;

    #[test]
    fn reads_the_figures_of_a_json_report() {
        let s = parse_summary("a.json", A).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.figures, [1000.0, 10.0, 20.0, 40.0, 80.0, 100.0, 3.0]);
        assert_eq!(
            s.settings.describe(),
            "tcp 127.0.0.1:7007, 10 connections, closed loop, size unknown"
        );
        assert!(parse_summary("x", "{}").is_err());
        assert!(parse_summary("x", "not json")
            .unwrap_err()
            .contains("load --json"));
    }

    #[test]
    fn a_report_with_its_keys_in_another_order_reads_the_same() {
        // serde_json's map keeps keys sorted, so this turns the order
        // written (proto, target, ...) into alphabetical order, nested
        // objects included.
        let value: serde_json::Value = serde_json::from_str(A).expect("A is JSON");
        let sorted = value.to_string();
        assert!(sorted.starts_with(r#"{"bytes":"#), "{sorted}");
        let a = parse_summary("a.json", A).unwrap_or_else(|e| panic!("{e}"));
        let b = parse_summary("a.json", &sorted).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a, b);
    }

    #[test]
    fn a_file_that_is_not_a_report_is_named_with_what_is_missing() {
        let e = parse_summary("notes.json", r#"{"hello": "world"}"#).unwrap_err();
        assert!(
            e.starts_with("notes.json: not a `load --json` report"),
            "{e}"
        );
        assert!(e.contains("proto"), "{e}");
    }

    fn two() -> [Summary; 2] {
        let a = parse_summary("/a/long/path/to/before.json", A).unwrap_or_else(|e| panic!("{e}"));
        let mut b = a.clone();
        b.name = "after.json".into();
        b.figures[0] = 1500.0;
        b.figures[3] = 20.0;
        [a, b]
    }

    #[test]
    fn the_table_gives_ratios_to_the_first_run_in_columns_sized_to_the_numbers() {
        let t = compare_table(&two());
        assert!(t.contains("1500 (1.50x)"), "{t}");
        assert!(t.contains("20 (0.50x)"), "{t}");
        assert!(
            t.contains(" 1  /a/long/path/to/before.json  tcp 127.0.0.1:7007"),
            "{t}"
        );
        // The rows: no column as wide as the long file name.
        let rate = t
            .lines()
            .find(|l| l.starts_with("msgs/s"))
            .expect("rate row");
        assert_eq!(rate, "msgs/s    1000  1500 (1.50x)", "{t}");
        assert_eq!(t.lines().count(), 2 + 1 + 1 + 7);
    }

    #[test]
    fn unlike_runs_are_named_with_what_differs() {
        let mut runs = two();
        assert!(unlike_runs(&runs).is_empty());
        runs[1].settings.size = Some(1024);
        runs[1].settings.rate = Some(500.0);
        let unlike = unlike_runs(&runs);
        assert_eq!(
            unlike,
            ["2 (after.json): load 500 msgs/s, not closed loop (pipeline 1), size 1024 B, not unknown"]
        );
        runs[1].settings.proto = Proto::Udp;
        assert!(unlike_runs(&runs)[0].contains("protocol udp, not tcp"));
    }

    #[test]
    fn the_json_has_settings_figures_and_ratios() {
        let mut runs = two();
        runs[1].settings.connections = 20;
        let v: serde_json::Value = serde_json::from_str(&compare_json(&runs)).expect("JSON");
        assert_eq!(v["runs"][0]["file"], "/a/long/path/to/before.json");
        assert_eq!(v["runs"][1]["figures"]["msgs_per_sec"], 1500);
        assert_eq!(v["runs"][1]["ratios"]["msgs_per_sec"], 1.5);
        assert_eq!(
            v["runs"][0]["ratios"]["msgs_per_sec"],
            serde_json::Value::Null
        );
        assert_eq!(v["runs"][1]["settings"]["connections"], 20);
        assert!(v["unlike"][0]
            .as_str()
            .expect("a line")
            .contains("connections 20, not 10"));
    }
}
