//! What a load run leaves behind besides its report: the HdrHistogram
//! interval log (`--hdr-log`) and an SVG picture (`--plot`); and
//! `json_number`, one figure of a saved report for scripts and benches.
//! Comparing saved reports is `compare`'s.

use std::io::{self, Write};
use std::path::Path;
use std::time::SystemTime;

use hdrhistogram::serialization::interval_log::IntervalLogWriterBuilder;
use hdrhistogram::serialization::V2DeflateSerializer;
use plotters::prelude::*;

use super::{LoadConfig, Report};

/// Writes the run's intervals as an HdrHistogram interval log: a comment
/// naming the run, a start time, and one compressed histogram per
/// interval (values in microseconds; the max column in milliseconds), the
/// format `HistogramLogProcessor` and the other HdrHistogram tools read
/// and merge.
///
/// # Errors
///
/// Writing or encoding failed.
pub fn write_hdr_log(
    report: &Report,
    title: &str,
    started: SystemTime,
    out: &mut impl Write,
) -> io::Result<()> {
    let mut serializer = V2DeflateSerializer::new();
    let mut builder = IntervalLogWriterBuilder::new();
    builder
        .add_comment(&format!("echo-reactor load: {title}"))
        .add_comment("values in microseconds")
        .with_start_time(started)
        .with_base_time(started)
        .with_max_value_divisor(1000.0);
    let mut log = builder.begin_log_with(out, &mut serializer)?;
    for iv in &report.intervals {
        log.write_histogram(&iv.latency, iv.start, iv.length, None)
            .map_err(|e| io::Error::other(format!("{e:?}")))?;
    }
    Ok(())
}

/// A one-line description of a run's settings, for titles.
pub fn describe(config: &LoadConfig) -> String {
    let pace = match config.rate {
        Some(r) => format!("open loop {r} msgs/s"),
        None => format!("closed loop, pipeline {}", config.pipeline),
    };
    format!(
        "{}: {} conns, {} B, {pace}, {} s",
        config.target,
        config.connections,
        config.size,
        config.duration.as_secs_f64()
    )
}

/// The percentile a position on the plot's x axis stands for:
/// `x = log10(1 / (1 - p))`, so 0 is the median's left (0%), 1 is 90%,
/// 2 is 99%, 3 is 99.9%: each tail decade gets the same width, as
/// HdrHistogram's plots draw it.
fn percentile_label(x: f64) -> String {
    let p = 100.0 * (1.0 - 10f64.powf(-x));
    let s = format!("{p:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s}%")
}

/// Draws the latency percentile curve and the rate over time into an SVG.
///
/// # Errors
///
/// The file could not be written.
pub fn plot_svg(report: &Report, title: &str, path: &Path) -> io::Result<()> {
    let err = |e: &dyn std::fmt::Display| io::Error::other(e.to_string());
    let root = SVGBackend::new(path, (1000, 860)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let root = root
        .titled(&format!("echo-reactor load {title}"), ("sans-serif", 20))
        .map_err(|e| err(&e))?;
    let (upper, lower) = root.split_vertically(430);

    // Latency by percentile: x = log10(1/(1-p)) up to the last recorded one.
    let mut points: Vec<(f64, f64)> = Vec::new();
    for v in report.latency.iter_quantiles(2) {
        let q = v.quantile_iterated_to();
        let x = if q >= 1.0 {
            6.0
        } else {
            (-(1.0 - q).log10()).min(6.0)
        };
        points.push((x, v.value_iterated_to() as f64 / 1000.0));
    }
    let x_max = points.iter().map(|p| p.0).fold(2.0, f64::max).ceil();
    let y_max = points.iter().map(|p| p.1).fold(0.001, f64::max) * 1.1;
    let caption = format!(
        "latency by percentile ({} replies, max {:.2} ms)",
        report.latency.len(),
        report.latency.max() as f64 / 1000.0
    );
    let mut chart = panel(&upper, caption)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_labels(x_max as usize + 1)
        .x_label_formatter(&|x| percentile_label(*x))
        .x_desc("percentile (log scale of 1/(1-p))")
        .y_desc("latency (ms)")
        .draw()
        .map_err(|e| err(&e))?;
    chart
        .draw_series(LineSeries::new(points, BLUE.stroke_width(2)))
        .map_err(|e| err(&e))?;

    // Rate over time, one point per interval at its end. The last, partial
    // interval (the drain) is too short for a meaningful rate.
    let rates: Vec<(f64, f64)> = report
        .intervals
        .iter()
        .filter(|iv| iv.length.as_secs_f64() >= 0.5)
        .map(|iv| ((iv.start + iv.length).as_secs_f64(), iv.msgs_per_sec()))
        .collect();
    let t_max = rates.iter().map(|p| p.0).fold(1.0, f64::max);
    let r_max = rates.iter().map(|p| p.1).fold(1.0, f64::max) * 1.1;
    let caption = format!(
        "replies per second (run average {:.0})",
        report.msgs_per_sec()
    );
    let mut chart = panel(&lower, caption)
        .build_cartesian_2d(0f64..t_max, 0f64..r_max)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("time since start (s)")
        .y_desc("msgs/s")
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()
        .map_err(|e| err(&e))?;
    chart
        .draw_series(LineSeries::new(rates, RED.stroke_width(2)))
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

/// One of the picture's two panels: its caption, margins and room for the
/// axis labels, the same for both.
fn panel<'a, 'b>(
    area: &'a DrawingArea<SVGBackend<'b>, plotters::coord::Shift>,
    caption: String,
) -> ChartBuilder<'a, 'b, SVGBackend<'b>> {
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(caption, ("sans-serif", 16))
        .margin(15)
        .margin_right(45)
        .x_label_area_size(40)
        .y_label_area_size(70);
    builder
}

/// The first number named `key` in a JSON document: the object's own
/// fields first, then inside its objects in the order they come, so
/// `"p99"` finds `latency_us.p99`. For scripts and benches that want one
/// figure of a report; `None` if the text is not JSON or has no such number.
pub fn json_number(json: &str, key: &str) -> Option<f64> {
    fn find(v: &serde_json::Value, key: &str) -> Option<f64> {
        let obj = v.as_object()?;
        if let Some(n) = obj.get(key).and_then(serde_json::Value::as_f64) {
            return Some(n);
        }
        obj.values().find_map(|child| find(child, key))
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
        assert_eq!(json_number("not json", "sent"), None);
    }

    #[test]
    fn percentile_labels_read_as_percent() {
        assert_eq!(percentile_label(0.0), "0%");
        assert_eq!(percentile_label(1.0), "90%");
        assert_eq!(percentile_label(3.0), "99.9%");
    }
}
