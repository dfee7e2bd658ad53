//! What a load run leaves behind besides its report: the HdrHistogram
//! interval log (`--hdr-log`) and the one-line description of a run that
//! titles it and the SVG picture (`plot`); and `json_number`, one figure
//! of a saved report for scripts and benches. Comparing saved reports is
//! `compare`'s.

use std::io::{self, Write};
use std::time::SystemTime;

use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use hdrhistogram::serialization::V2DeflateSerializer;

use super::{LoadConfig, Report, TestSettings};

/// The tag of the histograms of replies the report leaves out: to
/// messages sent before the measured window (ramp, warm-up).
pub const UNMEASURED_TAG: &str = "warmup";

/// Writes the run's intervals as an HdrHistogram interval log: comments
/// naming the run, what the histograms hold and where the window lies, a
/// start time, and for each interval (values in microseconds; the max
/// column in milliseconds) one untagged histogram of the replies the
/// report counts, so that the untagged histograms add up to the report's
/// exactly (`HistogramLogProcessor`, which reads untagged ones by
/// default, gives the report's percentiles), and, when there were any,
/// one tagged [`UNMEASURED_TAG`] of the replies it leaves out.
///
/// # Errors
///
/// Writing or encoding failed.
pub fn write_hdr_log(report: &Report, title: &str, out: &mut impl Write) -> io::Result<()> {
    let started = report.run_start.unwrap_or_else(SystemTime::now);
    let mut serializer = V2DeflateSerializer::new();
    let mut builder = IntervalLogWriterBuilder::new();
    builder
        .add_comment(&format!("echo-reactor load: {title}"))
        .add_comment("values in microseconds")
        .add_comment(
            "untagged: replies to the messages of the measured window, by the second they \
             completed in (the drain's included); they add up to the report's messages",
        )
        .add_comment(&format!(
            "Tag={UNMEASURED_TAG}: replies to messages sent before the window (ramp, \
             --start-at, warm-up), which the report leaves out"
        ));
    let window = match report.window_offsets() {
        Some((start, end)) => format!(
            "window: {:.3} s to {:.3} s after StartTime; before it the ramp and warm-up, \
             after it the drain",
            start.as_secs_f64(),
            end.as_secs_f64()
        ),
        None => "window: none (the run never measured)".into(),
    };
    builder.add_comment(&window);
    let stages = stages_comment(report);
    if let Some(stages) = &stages {
        builder.add_comment(stages);
    }
    builder
        .with_start_time(started)
        .with_base_time(started)
        .with_max_value_divisor(1000.0);
    let mut log = builder.begin_log_with(out, &mut serializer)?;
    let unmeasured = Tag::new(UNMEASURED_TAG);
    let other = |e| io::Error::other(format!("{e:?}"));
    for iv in &report.intervals {
        let c = &iv.completed;
        log.write_histogram(&c.measured.latency, iv.start, iv.length, None)
            .map_err(other)?;
        if c.unmeasured.messages > 0 {
            log.write_histogram(&c.unmeasured.latency, iv.start, iv.length, unmeasured)
                .map_err(other)?;
        }
    }
    Ok(())
}

/// `--stages`: where each stage lies in the log's time and the rate it
/// ramps over (`stages: 1: 0.002 s to 1.002 s, 0 -> 200 msgs/s; ...`);
/// `None` without stages or a window.
fn stages_comment(report: &Report) -> Option<String> {
    let (start, _) = report.window_offsets()?;
    if report.stages.is_empty() {
        return None;
    }
    let mut at = start.as_secs_f64();
    let mut from = 0.0;
    let spans: Vec<String> = report
        .stages
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let end = at + s.duration.as_secs_f64();
            let span = format!(
                "{}: {at:.3} s to {end:.3} s, {from} -> {} msgs/s",
                i + 1,
                s.target_rate
            );
            (at, from) = (end, s.target_rate);
            span
        })
        .collect();
    Some(format!(
        "stages (after StartTime; the rate moves linearly over each): {}",
        spans.join("; ")
    ))
}

/// A one-line description of a run's settings, for titles.
pub fn describe(config: &LoadConfig) -> String {
    let text = describe_test(&config.target.to_string(), &config.test_settings());
    if config.stages.is_empty() {
        return text;
    }
    let stages: Vec<String> = config
        .stages
        .iter()
        .map(|s| format!("{}s:{}", s.duration.as_secs_f64(), s.target))
        .collect();
    text.replace(
        &format!("closed loop, pipeline {}", config.pipeline),
        &format!("stages {}", stages.join(",")),
    )
}

/// The same description of a merged test, from the settings its parts
/// carried, with how many parts there were.
pub fn describe_merged(report: &Report, parts: usize) -> String {
    let target = format!("{}://{}", report.proto, report.target);
    match &report.settings {
        Some(t) if !report.stages.is_empty() => {
            let stages: Vec<String> = report
                .stages
                .iter()
                .map(|s| format!("{}s:{}", s.duration.as_secs_f64(), s.target_rate))
                .collect();
            let text = describe_test(&target, t).replace(
                &format!("closed loop, pipeline {}", t.pipeline),
                &format!("stages {}", stages.join(",")),
            );
            format!("{text}, {parts} parts")
        }
        Some(t) => format!("{}, {parts} parts", describe_test(&target, t)),
        None => format!("{target}, {parts} parts"),
    }
}

fn describe_test(target: &str, t: &TestSettings) -> String {
    let pace = match t.rate {
        Some(r) => format!("open loop {r} msgs/s"),
        None => format!("closed loop, pipeline {}", t.pipeline),
    };
    format!(
        "{target}: {} conns, {} B, {pace}, {} s",
        t.connections,
        t.size,
        t.duration.as_secs_f64()
    )
}

/// The first number named `key` in a JSON document: the object's own
/// fields first, then inside `latency_us` (so `"p99"` is the message
/// latency's, not the connects' or the handshakes'), then inside its other
/// objects. For scripts and benches that want one figure of a report;
/// `None` if the text is not JSON or has no such number.
pub fn json_number(json: &str, key: &str) -> Option<f64> {
    fn find(v: &serde_json::Value, key: &str) -> Option<f64> {
        let obj = v.as_object()?;
        if let Some(n) = obj.get(key).and_then(serde_json::Value::as_f64) {
            return Some(n);
        }
        // serde_json's map is sorted by key, and `connect_latency_us`
        // sorts before `latency_us`: look where a bare percentile means.
        let latency = obj.get("latency_us").into_iter();
        latency
            .chain(
                obj.iter()
                    .filter(|(k, _)| *k != "latency_us")
                    .map(|(_, v)| v),
            )
            .find_map(|child| find(child, key))
    }
    find(&serde_json::from_str(json).ok()?, key)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A report as `load --json` wrote it before the histogram travelled
    /// with it: older files still compare.
    const A: &str = r#"{"proto":"tcp","target":"127.0.0.1:7007","connections":10,"connected":10,"reconnects":0,"ramp_s":0.002,"duration_s":0.1,"messages":100,"bytes":6400,"sent":102,"msgs_per_sec":1000,"bytes_per_sec":64000,"loss_percent":1.961,"latency_us":{"p50":10,"p90":20,"p99":40,"p999":80,"max":100,"mean":12.5},"errors":{"connect":0,"reset":1,"timeout":0,"mismatch":0,"lost":2,"closed":0,"io":0,"duplicate":0},"reordered":0,"late":0,"interrupted":false,"ok":false,"error":"tcp://127.0.0.1:7007: errors: reset 1"}"#;

    #[test]
    fn json_number_finds_a_figure_at_any_depth() {
        assert_eq!(json_number(A, "sent"), Some(102.0));
        assert_eq!(json_number(A, "p99"), Some(40.0));
        assert_eq!(json_number(A, "lost"), Some(2.0));
        assert_eq!(json_number(A, "nothing"), None);
        // With the connects' latency beside the messages', still the
        // messages'.
        let both = A.replace(
            r#""latency_us""#,
            r#""connect_latency_us":{"p50":1,"p99":2,"max":3},"latency_us""#,
        );
        assert_eq!(json_number(&both, "p99"), Some(40.0));
        assert_eq!(json_number(&both, "max"), Some(100.0));
        assert_eq!(json_number("not json", "sent"), None);
    }
}
