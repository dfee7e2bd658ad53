//! Merging the parts of a split test (`load --segment I/N --json`) into
//! the report one generator would have written for the whole test:
//! finding the reports in the text people hand over (files, `kubectl
//! logs`, pdsh output), checking that they are the parts of one test, and
//! adding them up: counts summed, histograms added exactly, the rate over
//! the window all parts shared.
//!
//! No IO: the caller reads the files and prints the result.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use super::report::{self, Report, TestSettings, WallWindow};
use super::split::{self, Segment};

/// One part's report and where it came from (`a.json`, `stdin line 3
/// (host g1)`), for messages that say which part is wrong.
#[derive(Debug, Clone)]
pub struct Part {
    /// Where the report was read, for people.
    pub name: String,
    /// The report as read back.
    pub report: Report,
}

/// The parts cannot be merged: which one (when one is to blame) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeError {
    /// The part at fault, by name; `None` when the set as a whole is
    /// wrong (a segment missing, nothing to merge).
    pub part: Option<String>,
    /// What is wrong, for people.
    pub reason: String,
}

impl MergeError {
    fn of(part: &Part, reason: String) -> MergeError {
        MergeError {
            part: Some(part.name.clone()),
            reason,
        }
    }
}

impl fmt::Display for MergeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.part {
            Some(part) => write!(f, "{part}: {}", self.reason),
            None => f.write_str(&self.reason),
        }
    }
}

impl std::error::Error for MergeError {}

/// The reports in `text`, read from `name`: the whole text as one JSON
/// object, or else one object a line. Lines that are not a JSON object
/// (log lines, blank lines, bytes that are not UTF-8) are skipped; a
/// `host: ` prefix, as pdsh and `kubectl logs --prefix` write, is taken
/// off and kept in the name.
///
/// # Errors
///
/// A JSON object that is not a readable report, naming its line.
pub fn parts_from_text(name: &str, text: &[u8]) -> Result<Vec<Part>, MergeError> {
    if let Ok(whole) = std::str::from_utf8(text) {
        if let Ok(serde_json::Value::Object(_)) = serde_json::from_str(whole) {
            let report = Report::from_json(whole).map_err(|reason| MergeError {
                part: Some(name.to_string()),
                reason,
            })?;
            return Ok(vec![Part {
                name: name.to_string(),
                report,
            }]);
        }
    }
    let mut found = Vec::new();
    for (n, line) in text.split(|&b| b == b'\n').enumerate() {
        // JSON is UTF-8: a line that is not holds no report.
        let Ok(line) = std::str::from_utf8(line) else {
            continue;
        };
        let Some((host, json)) = json_object_in(line) else {
            continue;
        };
        let name = match host {
            Some(host) => format!("{name} line {} (host {host})", n + 1),
            None => format!("{name} line {}", n + 1),
        };
        let report = Report::from_json(json).map_err(|reason| MergeError {
            part: Some(name.clone()),
            reason,
        })?;
        found.push(Part { name, report });
    }
    // One report in a file is that file, whatever lines surround it.
    if let [one] = found.as_mut_slice() {
        if !name.starts_with("stdin") {
            one.name = name.to_string();
        }
    }
    Ok(found)
}

/// The JSON object on `line`, after a `host: ` prefix if there is one.
fn json_object_in(line: &str) -> Option<(Option<&str>, &str)> {
    let line = line.trim();
    let (host, json) = match line.strip_prefix('{') {
        Some(_) => (None, line),
        None => {
            let (host, rest) = line.split_once(": ")?;
            let rest = rest.trim_start();
            if host.is_empty() || host.contains(char::is_whitespace) || !rest.starts_with('{') {
                return None;
            }
            (Some(host), rest)
        }
    };
    matches!(serde_json::from_str(json), Ok(serde_json::Value::Object(_))).then_some((host, json))
}

/// Merges the parts of one test into the report of the whole: counts
/// and errors summed, latency histograms added (so percentiles are those
/// of every message), the window the one all parts shared and the rates
/// over it; `ok` only if every part is ok and so is the sum.
///
/// # Errors
///
/// The parts do not belong together: no parts, a part without the test's
/// settings, another target or setting, a segment count that differs, a
/// segment repeated or missing, a share that is not the segment's, or
/// windows that share less than 90%. The error names the part at fault.
pub fn merge(parts: &[Part]) -> Result<Report, MergeError> {
    let Some(first) = parts.first() else {
        return Err(MergeError {
            part: None,
            reason: "no report to merge: expected `load --json` output".into(),
        });
    };
    let settings = settings_of(first)?;
    for part in parts {
        check_same_test(first, &settings, part)?;
    }
    check_segments(parts, settings.connections)?;
    let window = common_window(parts)?;

    let mut merged = Report::new(first.report.proto, first.report.target, 0);
    merged.host = first.report.host.clone();
    merged.max_loss_percent = settings.max_loss_percent;
    merged.settings = Some(settings);
    merged.rate = settings.rate;
    for part in parts {
        let r = &part.report;
        let sum = |e: report::Overflow| {
            MergeError::of(part, format!("{e}: the parts cannot be added up"))
        };
        merged.connections = merged
            .connections
            .checked_add(r.connections)
            .ok_or(report::Overflow("connections"))
            .map_err(sum)?;
        merged.merge(r).map_err(sum)?;
        if let Some(why) = r.failure_summary() {
            merged
                .failed_parts
                .push(format!("segment {} ({}): {why}", r.segment, part.name));
        }
    }
    merged.segment = Segment::WHOLE;
    merged.window = window;
    merged.duration = window.map_or(Duration::ZERO, |w| {
        w.end.duration_since(w.start).unwrap_or_default()
    });
    Ok(merged)
}

fn settings_of(part: &Part) -> Result<TestSettings, MergeError> {
    part.report.settings.ok_or_else(|| {
        MergeError::of(
            part,
            "the report carries no test settings (`test`): it was written by an older \
             echo-reactor, so which test it belongs to cannot be checked"
                .into(),
        )
    })
}

/// The same target, settings and segment count as the first part.
fn check_same_test(first: &Part, want: &TestSettings, part: &Part) -> Result<(), MergeError> {
    let (a, b) = (&first.report, &part.report);
    let other = |what: &str, theirs: String, ours: String| {
        Err(MergeError::of(
            part,
            format!(
                "another test: {what} {theirs}, but {} has {what} {ours}",
                first.name
            ),
        ))
    };
    // The target as named: parts given a host name may each have
    // resolved it to another address (one pod each) and are one test.
    if a.named_target() != b.named_target() {
        return other("target", b.named_target(), a.named_target());
    }
    let got = settings_of(part)?;
    let secs = |d: &Duration| format!("{} s", d.as_secs_f64());
    let rate = |r: &Option<f64>| r.map_or("closed loop".into(), |r| format!("{r} msgs/s"));
    let start = |t: &Option<std::time::SystemTime>| {
        t.map_or("none".into(), |t| format!("{:.3}", split::unix_seconds(t)))
    };
    let mismatch = differs(
        "connections (of the whole test)",
        got.connections,
        want.connections,
        ToString::to_string,
    )
    .or_else(|| differs("size", got.size, want.size, ToString::to_string))
    .or_else(|| differs("expect", got.expect, want.expect, ToString::to_string))
    .or_else(|| differs("pipeline", got.pipeline, want.pipeline, ToString::to_string))
    .or_else(|| differs("rate", got.rate, want.rate, rate))
    .or_else(|| differs("duration", got.duration, want.duration, secs))
    .or_else(|| differs("warmup", got.warmup, want.warmup, secs))
    .or_else(|| differs("start-at", got.start_at, want.start_at, start))
    .or_else(|| {
        differs("churn", got.churn, want.churn, |c| {
            c.map_or("none".into(), |n| format!("{n} messages a connection"))
        })
    })
    .or_else(|| {
        differs(
            "max loss",
            got.max_loss_percent,
            want.max_loss_percent,
            |p| format!("{p}%"),
        )
    });
    if let Some((what, theirs, ours)) = mismatch {
        return other(what, theirs, ours);
    }
    let stages = |r: &Report| {
        let spans: Vec<String> = r
            .stages
            .iter()
            .map(|s| format!("{}s", s.duration.as_secs_f64()))
            .collect();
        format!("[{}]", spans.join(","))
    };
    if stages(a) != stages(b) {
        return other("stages", stages(b), stages(a));
    }
    if a.segment.count != b.segment.count {
        return other(
            "segment count",
            b.segment.count.to_string(),
            a.segment.count.to_string(),
        );
    }
    Ok(())
}

/// `Some((what, theirs, ours))` when a part's setting differs from the
/// first part's, shown the way people read it.
fn differs<T: PartialEq>(
    what: &'static str,
    theirs: T,
    ours: T,
    show: impl Fn(&T) -> String,
) -> Option<(&'static str, String, String)> {
    (theirs != ours).then(|| (what, show(&theirs), show(&ours)))
}

/// Every segment once, each with its own share of the connections.
fn check_segments(parts: &[Part], connections: usize) -> Result<(), MergeError> {
    let mut seen: BTreeMap<u32, &Part> = BTreeMap::new();
    for part in parts {
        let seg = part.report.segment;
        if let Some(earlier) = seen.insert(seg.index, part) {
            return Err(MergeError::of(
                part,
                format!("segment {seg} again: {} is segment {seg} too", earlier.name),
            ));
        }
        let (_, share) = seg.share(connections as u64);
        if part.report.connections as u64 != share {
            return Err(MergeError::of(
                part,
                format!(
                    "segment {seg} of a test of {connections} connections runs {share}, but this part ran {}",
                    part.report.connections
                ),
            ));
        }
    }
    let count = parts[0].report.segment.count;
    let missing: Vec<String> = (0..count)
        .filter(|i| !seen.contains_key(i))
        .map(|i| format!("{i}/{count}"))
        .collect();
    if !missing.is_empty() {
        let have: Vec<String> = seen
            .values()
            .map(|p| format!("{} from {}", p.report.segment, p.name))
            .collect();
        return Err(MergeError {
            part: None,
            reason: format!(
                "segments missing: {} (have {})",
                missing.join(", "),
                have.join(", ")
            ),
        });
    }
    Ok(())
}

/// The window every part measured in: from the latest start to the
/// earliest end. Parts that never measured (no window) do not count.
fn common_window(parts: &[Part]) -> Result<Option<WallWindow>, MergeError> {
    let with_window: Vec<(&Part, WallWindow)> = parts
        .iter()
        .filter_map(|p| p.report.window.map(|w| (p, w)))
        .collect();
    let (Some(latest_start), Some(earliest_end)) = (
        with_window.iter().max_by_key(|(_, w)| w.start),
        with_window.iter().min_by_key(|(_, w)| w.end),
    ) else {
        return Ok(None);
    };
    let (start, end) = (latest_start.1.start, earliest_end.1.end);
    if start >= end {
        return Err(MergeError::of(
            latest_start.0,
            format!(
                "its window began at {} (Unix {:.6}), after the window of {} ended at {} \
                 (Unix {:.6}): the parts did not run together",
                split::rfc3339(start),
                split::unix_seconds(start),
                earliest_end.0.name,
                split::rfc3339(end),
                split::unix_seconds(end),
            ),
        ));
    }
    // Each part counted its messages over its own window; the sum over
    // the shared window is a true rate only when the windows nearly
    // coincide, as they do with a common --start-at.
    let shared = end.duration_since(start).unwrap_or_default();
    for (part, w) in &with_window {
        let own = w.end.duration_since(w.start).unwrap_or_default();
        if shared.as_secs_f64() < MIN_SHARED_WINDOW * own.as_secs_f64() {
            return Err(MergeError::of(
                part,
                format!(
                    "its {:.3} s window shares only {:.3} s with the others': the parts did \
                     not run together (start them with one --start-at)",
                    own.as_secs_f64(),
                    shared.as_secs_f64()
                ),
            ));
        }
    }
    Ok(Some(WallWindow { start, end }))
}

/// The least share of each part's window that all parts must have in
/// common for their counts to add up to one rate.
const MIN_SHARED_WINDOW: f64 = 0.9;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::report::new_histogram;
    use crate::load::Proto;
    use crate::mode::Mode;
    use std::time::UNIX_EPOCH;

    const T0: u64 = 1_767_225_600;

    /// Segment `index` of a 3-way split of 10 connections, run in the
    /// window [T0 + offset_ms, T0 + offset_ms + 2 s], latencies `lat`.
    fn part(index: u32, offset_ms: u64, lat: &[u64]) -> Part {
        let segment = Segment { index, count: 3 };
        let (_, own) = segment.share(10);
        let mut r = Report::new(Proto::Tcp, "10.0.0.1:7007".parse().expect("address"), 0);
        r.connections = own as usize;
        r.connected = own;
        r.segment = segment;
        r.duration = Duration::from_secs(2);
        let start = UNIX_EPOCH + Duration::from_millis(T0 * 1000 + offset_ms);
        r.window = Some(WallWindow {
            start,
            end: start + r.duration,
        });
        r.settings = Some(TestSettings {
            connections: 10,
            rate: None,
            size: 64,
            pipeline: 1,
            expect: Mode::Echo,
            duration: Duration::from_secs(2),
            warmup: Duration::ZERO,
            start_at: Some(UNIX_EPOCH + Duration::from_secs(T0)),
            max_loss_percent: 1.0,
            churn: None,
        });
        for &v in lat {
            r.latency.record(v).expect("in range");
        }
        r.messages = lat.len() as u64;
        r.sent = r.messages;
        r.bytes = 64 * r.messages;
        Part {
            name: format!("part{index}.json"),
            report: r,
        }
    }

    /// Three parts, as a JSON round trip would give them back.
    fn three() -> Vec<Part> {
        let lat: [Vec<u64>; 3] = [
            (1..=1000).collect(),
            (1..=10).map(|v| v * 5000).collect(),
            vec![7; 500],
        ];
        (0..3)
            .map(|i| {
                let p = part(i, u64::from(i), &lat[i as usize]);
                let back = Report::from_json(&p.report.to_json()).expect("reads back");
                Part {
                    name: p.name,
                    report: back,
                }
            })
            .collect()
    }

    #[test]
    fn merged_percentiles_are_those_of_every_message_not_averages() {
        let parts = three();
        let merged = merge(&parts).expect("merges");
        let mut union = new_histogram();
        for v in (1..=1000).chain((1..=10).map(|v| v * 5000)) {
            union.record(v).expect("in range");
        }
        union.record_n(7, 500).expect("in range");
        assert_eq!(merged.latency, union);
        assert_eq!(merged.latency.len(), 1510);
        for q in [0.5, 0.9, 0.99, 0.999, 1.0] {
            assert_eq!(
                merged.latency.value_at_quantile(q),
                union.value_at_quantile(q)
            );
        }
        // The average of the parts' p99s would be far from the truth.
        assert_eq!(merged.percentiles_us()[2], union.value_at_quantile(0.99));
        assert_eq!((merged.messages, merged.connections), (1510, 10));
        assert_eq!(merged.connected, 10);
        assert_eq!(merged.segment, Segment::WHOLE);
        assert!(merged.is_ok(), "{:?}", merged.failure_summary());
    }

    #[test]
    fn the_rate_is_over_the_window_all_parts_shared() {
        let merged = merge(&three()).expect("merges");
        // Windows start at +0, +1, +2 ms and last 2 s: shared 1.998 s
        // (to the microsecond Unix seconds in JSON keep).
        let off = merged.duration.abs_diff(Duration::from_millis(1998));
        assert!(off < Duration::from_micros(1), "{:?}", merged.duration);
        let w = merged.window.expect("a window");
        let want = UNIX_EPOCH + Duration::from_millis(T0 * 1000 + 2);
        assert!((split::unix_seconds(w.start) - split::unix_seconds(want)).abs() < 1e-6);
        assert!((merged.msgs_per_sec() - 1510.0 / 1.998).abs() < 1e-3);
    }

    #[test]
    fn a_failed_part_fails_the_merge_even_when_the_sum_would_pass() {
        let mut parts = three();
        for p in &mut parts {
            p.report.proto = Proto::Udp;
        }
        // 1 of 11 lost in one part (9%), none elsewhere: 0.07% overall.
        parts[1].report.sent += 1;
        parts[1].report.errors.lost = 1;
        assert!(!parts[1].report.is_ok());
        let merged = merge(&parts).expect("merges");
        assert!(merged.loss_percent() < 1.0);
        assert!(!merged.is_ok());
        let why = merged.failure_summary().expect("a reason");
        assert!(why.contains("segment 1/3 (part1.json)"), "{why}");
    }

    fn refused(parts: &[Part]) -> MergeError {
        match merge(parts) {
            Ok(_) => panic!("merged parts that do not belong together"),
            Err(e) => e,
        }
    }

    #[test]
    fn parts_of_another_test_are_refused_naming_the_part() {
        type Spoil = fn(&mut Report);
        let cases: [(&str, Spoil); 7] = [
            ("stages", |r| {
                r.stages = vec![report::StageReport {
                    duration: Duration::from_secs(1),
                    target_rate: 10.0,
                    messages: 0,
                    errors: 0,
                    latency: new_histogram(),
                }];
            }),
            ("target", |r| {
                r.target = "10.0.0.2:7007".parse().expect("address")
            }),
            ("size", |r| {
                if let Some(s) = &mut r.settings {
                    s.size = 65;
                }
            }),
            ("expect", |r| {
                if let Some(s) = &mut r.settings {
                    s.expect = Mode::Upper;
                }
            }),
            ("rate", |r| {
                if let Some(s) = &mut r.settings {
                    s.rate = Some(100.0);
                }
            }),
            ("connections (of the whole test)", |r| {
                if let Some(s) = &mut r.settings {
                    s.connections = 11;
                }
            }),
            ("segment count", |r| {
                r.segment = Segment { index: 1, count: 4 };
            }),
        ];
        for (what, spoil) in cases {
            let mut parts = three();
            spoil(&mut parts[1].report);
            let e = refused(&parts);
            assert_eq!(e.part.as_deref(), Some("part1.json"), "{what}: {e}");
            assert!(e.reason.contains(what), "{what}: {e}");
        }
    }

    #[test]
    fn parts_that_named_one_host_merge_whatever_address_each_used() {
        let mut parts = three();
        for (i, p) in parts.iter_mut().enumerate() {
            p.report.host = Some("echo-reactor".into());
            p.report.target = format!("10.0.0.{}:7007", i + 1).parse().expect("address");
        }
        let merged = merge(&parts).expect("one test");
        assert_eq!(merged.host.as_deref(), Some("echo-reactor"));
        parts[2].report.host = Some("other-server".into());
        let e = refused(&parts);
        assert!(e.reason.contains("tcp://other-server:7007"), "{e}");
        parts[2].report.host = None;
        let e = refused(&parts);
        assert!(e.reason.contains("target"), "{e}");
    }

    #[test]
    fn repeated_or_missing_segments_are_refused() {
        let mut parts = three();
        parts[2] = part(1, 0, &[5]);
        parts[2].name = "again.json".into();
        let e = refused(&parts);
        assert_eq!(e.part.as_deref(), Some("again.json"));
        assert!(e.reason.contains("segment 1/3 again: part1.json"), "{e}");

        let parts = &three()[..2];
        let e = refused(parts);
        assert_eq!(e.part, None);
        assert!(e.reason.contains("segments missing: 2/3"), "{e}");
    }

    #[test]
    fn a_share_that_is_not_the_segments_is_refused() {
        let mut parts = three();
        parts[0].report.connections = 3;
        let e = refused(&parts);
        assert!(
            e.to_string()
                .starts_with("part0.json: segment 0/3 of a test of 10 connections runs 4"),
            "{e}"
        );
    }

    #[test]
    fn windows_that_do_not_overlap_are_refused() {
        let mut parts = three();
        parts[1] = part(1, 5_000, &[5]);
        let e = refused(&parts);
        assert_eq!(e.part.as_deref(), Some("part1.json"), "{e}");
        assert!(e.reason.contains("did not run together"), "{e}");
    }

    #[test]
    fn windows_that_barely_overlap_are_refused_rather_than_inflating_the_rate() {
        // Started 1.5 s apart, 2 s each: 0.5 s in common, and the summed
        // counts over it would claim four times the real rate.
        let mut parts = three();
        parts[2] = part(2, 1_500, &[5]);
        let e = refused(&parts);
        assert_eq!(e.part.as_deref(), Some("part0.json"), "{e}");
        assert!(e.reason.contains("--start-at"), "{e}");
    }

    #[test]
    fn old_reports_without_settings_are_refused() {
        let mut parts = three();
        parts[0].report.settings = None;
        let e = refused(&parts);
        assert_eq!(e.part.as_deref(), Some("part0.json"));
        assert!(e.reason.contains("no test settings"), "{e}");
        assert_eq!(refused(&[]).part, None);
    }

    #[test]
    fn reports_are_found_among_log_lines_and_host_prefixes() {
        let parts = three();
        let text = format!(
            "[2026-01-01T00:00:00Z INFO  echo_reactor] load: starting\n\
             g0: {}\n\
             \n\
             g1: not json at all\n\
             {{not json either\n\
             {}\n",
            parts[0].report.to_json(),
            parts[1].report.to_json()
        );
        let found = parts_from_text("stdin", text.as_bytes()).expect("reads");
        let names: Vec<&str> = found.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["stdin line 2 (host g0)", "stdin line 6"]);
        assert_eq!(found[1].report.segment, Segment { index: 1, count: 3 });

        let one = format!("log line\n{}\n", parts[2].report.to_json());
        let found = parts_from_text("c.json", one.as_bytes()).expect("reads");
        assert_eq!(found[0].name, "c.json");

        let e = parts_from_text("x.json", b"{\"hello\":1}").unwrap_err();
        assert_eq!(e.part.as_deref(), Some("x.json"));
    }
}
