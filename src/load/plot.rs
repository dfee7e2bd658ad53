//! The SVG pictures, drawn with plotters: a run's (`load --plot`) and a
//! merged test's (`merge --plot`). A run's has the latency percentile
//! curve of the report's histogram, then p50 and p99 and the replies per
//! second over time, with what lies outside the measured window (the
//! warm-up before it, the drain after it) shaded. A merged test's has the
//! percentile curve of the whole beside each part's: the parts' reports
//! carry their histograms, not their seconds.
//!
//! No figures are worked out here; they are the report's.

use std::io;
use std::path::Path;
use std::time::Duration;

use hdrhistogram::Histogram;
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::find_max::{FindMax, Percentile, Step};
use super::merge::Part;
use super::report::{Interval, Report};

/// Light grey for what lies outside the measured window.
const OUTSIDE: RGBColor = RGBColor(225, 225, 225);

/// Grey for the replies the report leaves out.
const UNMEASURED: RGBColor = RGBColor(150, 150, 150);

/// Colours for the parts of a merged test, in turn.
const PART_COLORS: [RGBColor; 6] = [
    RGBColor(230, 120, 30),
    RGBColor(40, 160, 60),
    RGBColor(200, 40, 40),
    RGBColor(140, 80, 190),
    RGBColor(30, 170, 190),
    RGBColor(150, 110, 60),
];

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

fn err(e: &dyn std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// Draws a run: the percentile curve above p50/p99 over time above the
/// replies per second, the time panels shaded outside the window.
///
/// # Errors
///
/// The file could not be written.
pub fn run_svg(report: &Report, title: &str, path: &Path) -> io::Result<()> {
    let root = SVGBackend::new(path, (1000, 1290)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let root = root
        .titled(&format!("echo-reactor load {title}"), ("sans-serif", 20))
        .map_err(|e| err(&e))?;
    let (upper, rest) = root.split_vertically(430);
    let (middle, lower) = rest.split_vertically(420);
    let caption = format!(
        "latency by percentile, measured window ({} replies, max {:.2} ms)",
        report.latency.len(),
        report.latency.max() as f64 / 1000.0
    );
    percentile_panel(&upper, caption, &[(&report.latency, BLUE, 2, None)])?;
    let window = report.window_offsets();
    latency_over_time(&middle, &report.intervals, window)?;
    rate_over_time(&lower, report, window)?;
    root.present().map_err(|e| err(&e))
}

/// Draws a merged test: the percentile curve of the whole, and each
/// part's beside it.
///
/// # Errors
///
/// The file could not be written.
pub fn merged_svg(merged: &Report, parts: &[Part], title: &str, path: &Path) -> io::Result<()> {
    let root = SVGBackend::new(path, (1000, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let root = root
        .titled(&format!("echo-reactor merge {title}"), ("sans-serif", 20))
        .map_err(|e| err(&e))?;
    let whole = format!("whole test ({} replies)", merged.latency.len());
    let names: Vec<String> = parts
        .iter()
        .map(|p| format!("segment {} ({})", p.report.segment, p.name))
        .collect();
    let mut curves = vec![(&merged.latency, BLUE, 3, Some(whole))];
    for (i, (part, name)) in parts.iter().zip(&names).enumerate() {
        let color = PART_COLORS[i % PART_COLORS.len()];
        curves.push((&part.report.latency, color, 1, Some(name.clone())));
    }
    let caption = format!(
        "latency by percentile, the whole test and its {} parts (max {:.2} ms)",
        parts.len(),
        merged.latency.max() as f64 / 1000.0
    );
    percentile_panel(&root, caption, &curves)?;
    root.present().map_err(|e| err(&e))
}

/// Draws a `--find-max` search: p50 and the objective's percentile
/// against the rate asked for, one point per step (filled: passed;
/// hollow: missed), the objective as a horizontal line and the highest
/// passing rate as a vertical one: the capacity curve.
///
/// # Errors
///
/// The file could not be written.
pub fn capacity_svg(found: &FindMax, title: &str, path: &Path) -> io::Result<()> {
    let root = SVGBackend::new(path, (1000, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let root = root
        .titled(&format!("echo-reactor load {title}"), ("sans-serif", 20))
        .map_err(|e| err(&e))?;
    let mut steps: Vec<&Step> = found.steps.iter().collect();
    steps.sort_by(|a, b| a.rate.total_cmp(&b.rate));
    let ms = |us: u64| us as f64 / 1000.0;
    let goal = found.objective.latency.as_secs_f64() * 1000.0;
    let pct = found.objective.percentile.name();
    let x_max = steps.iter().map(|s| s.rate).fold(1.0, f64::max) * 1.05;
    // Latency past a few times the objective only flattens the curve.
    let y_max = steps
        .iter()
        .map(|s| ms(s.objective_us.max(s.p50_us)))
        .fold(goal, f64::max)
        .min(goal * 4.0)
        * 1.1;
    let caption = match found.max_rate {
        Some(r) => format!(
            "latency against rate: highest rate that met {} is {r:.0} msgs/s",
            found.objective
        ),
        None => format!("latency against rate: no rate met {}", found.objective),
    };
    let mut chart = panel(&root, caption)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("rate asked for (msgs/s)")
        .y_desc("latency (ms)")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .draw()
        .map_err(|e| err(&e))?;
    let clip = |v: f64| v.min(y_max);
    let objective: Vec<(f64, f64)> = steps
        .iter()
        .map(|s| (s.rate, clip(ms(s.objective_us))))
        .collect();
    let p50: Vec<(f64, f64)> = steps.iter().map(|s| (s.rate, clip(ms(s.p50_us)))).collect();
    let mut lines: Vec<Line<'_>> = vec![(p50, BLUE, "p50")];
    let label = format!("{pct} (filled: step passed)");
    if found.objective.percentile != Percentile::P50 {
        lines.push((objective, MAGENTA, label.as_str()));
    }
    for (points, color, label) in lines {
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color));
        chart
            .draw_series(points.iter().zip(&steps).map(|(&p, s)| {
                let style = if s.ok {
                    color.filled()
                } else {
                    color.stroke_width(2)
                };
                Circle::new(p, 4, style)
            }))
            .map_err(|e| err(&e))?;
    }
    let objective_label = format!("objective {}", found.objective);
    chart
        .draw_series(LineSeries::new(
            [(0.0, goal), (x_max, goal)],
            RED.stroke_width(1),
        ))
        .map_err(|e| err(&e))?
        .label(objective_label.as_str())
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], RED));
    if let Some(r) = found.max_rate {
        chart
            .draw_series(LineSeries::new(
                [(r, 0.0), (r, y_max)],
                GREEN.stroke_width(1),
            ))
            .map_err(|e| err(&e))?
            .label("highest passing rate")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], GREEN));
    }
    draw_legend(&mut chart)?;
    root.present().map_err(|e| err(&e))
}

/// One curve of the percentile panel: histogram, colour, width, label.
type Curve<'h> = (&'h Histogram<u64>, RGBColor, u32, Option<String>);

/// Latency by percentile, on HdrHistogram's log scale of 1/(1-p).
fn percentile_panel(area: &Area<'_>, caption: String, curves: &[Curve<'_>]) -> io::Result<()> {
    let lines: Vec<Vec<(f64, f64)>> = curves.iter().map(|c| percentile_points(c.0)).collect();
    let x_max = lines
        .iter()
        .flatten()
        .map(|p| p.0)
        .fold(2.0, f64::max)
        .ceil();
    let y_max = lines.iter().flatten().map(|p| p.1).fold(0.001, f64::max) * 1.1;
    let mut chart = panel(area, caption)
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
    let mut labelled = false;
    for ((_, color, width, label), points) in curves.iter().zip(lines) {
        let series = chart
            .draw_series(LineSeries::new(points, color.stroke_width(*width)))
            .map_err(|e| err(&e))?;
        if let Some(label) = label {
            let color = *color;
            series
                .label(label.as_str())
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color));
            labelled = true;
        }
    }
    if labelled {
        draw_legend(&mut chart)?;
    }
    Ok(())
}

/// The percentile curve's points: x = log10(1/(1-p)), y in ms.
fn percentile_points(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    h.iter_quantiles(2)
        .map(|v| {
            let q = v.quantile_iterated_to();
            let x = if q >= 1.0 {
                6.0
            } else {
                (-(1.0 - q).log10()).min(6.0)
            };
            (x, v.value_iterated_to() as f64 / 1000.0)
        })
        .collect()
}

/// p50 and p99 of each second's replies (measured or not: what the
/// server did then), at the second's end.
fn latency_over_time(
    area: &Area<'_>,
    intervals: &[Interval],
    window: Option<(Duration, Duration)>,
) -> io::Result<()> {
    let mut p50 = Vec::new();
    let mut p99 = Vec::new();
    for iv in intervals {
        let mut all = iv.completed.measured.latency.clone();
        let _ = all.add(&iv.completed.unmeasured.latency);
        if all.is_empty() {
            continue;
        }
        let t = (iv.start + iv.length).as_secs_f64();
        p50.push((t, all.value_at_quantile(0.5) as f64 / 1000.0));
        p99.push((t, all.value_at_quantile(0.99) as f64 / 1000.0));
    }
    let t_max = time_axis_end(intervals);
    let y_max = p99.iter().map(|p| p.1).fold(0.001, f64::max) * 1.1;
    let caption = "p50 and p99 latency of each second (shaded: outside the measured window)";
    let mut chart = panel(area, caption.to_string())
        .build_cartesian_2d(0f64..t_max, 0f64..y_max)
        .map_err(|e| err(&e))?;
    // The shade first: the grid and the lines go over it.
    shade_outside(&mut chart, window, t_max, y_max)?;
    chart
        .configure_mesh()
        .x_desc("time since start (s)")
        .y_desc("latency (ms)")
        .draw()
        .map_err(|e| err(&e))?;
    draw_labelled(&mut chart, [(p50, BLUE, "p50"), (p99, MAGENTA, "p99")])
}

/// Replies per second over time: those the report counts, and those it
/// leaves out (ramp and warm-up traffic), one point per second at its
/// end. The last, partial second (the drain's end) is too short for a
/// meaningful rate.
fn rate_over_time(
    area: &Area<'_>,
    report: &Report,
    window: Option<(Duration, Duration)>,
) -> io::Result<()> {
    let whole: Vec<&Interval> = report
        .intervals
        .iter()
        .filter(|iv| iv.length.as_secs_f64() >= 0.5)
        .collect();
    let at = |iv: &Interval| (iv.start + iv.length).as_secs_f64();
    let measured: Vec<(f64, f64)> = whole.iter().map(|iv| (at(iv), iv.msgs_per_sec())).collect();
    let unmeasured: Vec<(f64, f64)> = whole
        .iter()
        .map(|iv| (at(iv), iv.all_per_sec() - iv.msgs_per_sec()))
        .collect();
    let t_max = time_axis_end(&report.intervals);
    let target = stages_target(report, window);
    let r_max = measured
        .iter()
        .chain(&unmeasured)
        .chain(&target)
        .map(|p| p.1)
        .fold(1.0, f64::max)
        * 1.1;
    let caption = format!(
        "replies per second (window average {:.0}; shaded: outside the measured window)",
        report.msgs_per_sec()
    );
    let mut chart = panel(area, caption)
        .build_cartesian_2d(0f64..t_max, 0f64..r_max)
        .map_err(|e| err(&e))?;
    shade_outside(&mut chart, window, t_max, r_max)?;
    chart
        .configure_mesh()
        .x_desc("time since start (s)")
        .y_desc("msgs/s")
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()
        .map_err(|e| err(&e))?;
    let mut lines = vec![
        (measured, RED, "measured (the report's)"),
        (unmeasured, UNMEASURED, "before the window (not counted)"),
    ];
    if !target.is_empty() {
        lines.push((target, GREEN, "target rate (--stages)"));
    }
    draw_labelled(&mut chart, lines)
}

/// `--stages`: the target rate over time, a straight line over each stage
/// from the previous target to its own, from the window's start; empty
/// without stages or a window.
fn stages_target(report: &Report, window: Option<(Duration, Duration)>) -> Vec<(f64, f64)> {
    let Some((start, _)) = window else {
        return Vec::new();
    };
    let mut at = start.as_secs_f64();
    let mut points = Vec::with_capacity(report.stages.len() + 1);
    if !report.stages.is_empty() {
        points.push((at, 0.0));
    }
    for s in &report.stages {
        at += s.duration.as_secs_f64();
        points.push((at, s.target_rate));
    }
    points
}

/// A time panel's chart.
type TimeChart<'a> = ChartContext<'a, SVGBackend<'a>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// One labelled line over time: its points, colour and label.
type Line<'l> = (Vec<(f64, f64)>, RGBColor, &'l str);

/// Draws labelled lines and their legend.
fn draw_labelled<'l>(
    chart: &mut TimeChart<'_>,
    lines: impl IntoIterator<Item = Line<'l>>,
) -> io::Result<()> {
    for (points, color, label) in lines {
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color));
    }
    draw_legend(chart)
}

/// The legend box, top left.
fn draw_legend(chart: &mut TimeChart<'_>) -> io::Result<()> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))
}

/// Where the time axis ends: the last interval's end, at least a second.
fn time_axis_end(intervals: &[Interval]) -> f64 {
    intervals
        .iter()
        .map(|iv| (iv.start + iv.length).as_secs_f64())
        .fold(1.0, f64::max)
}

/// Shades the time before the window (ramp, warm-up) and after it (the
/// drain); without a window, all of it.
fn shade_outside(
    chart: &mut TimeChart<'_>,
    window: Option<(Duration, Duration)>,
    t_max: f64,
    y_max: f64,
) -> io::Result<()> {
    let spans = match window {
        Some((start, end)) => vec![(0.0, start.as_secs_f64()), (end.as_secs_f64(), t_max)],
        None => vec![(0.0, t_max)],
    };
    chart
        .draw_series(
            spans
                .into_iter()
                .filter(|(a, b)| b > a)
                .map(|(a, b)| Rectangle::new([(a, 0.0), (b, y_max)], OUTSIDE.filled())),
        )
        .map_err(|e| err(&e))?;
    Ok(())
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

/// One panel: its caption, margins and room for the axis labels, the same
/// for all.
fn panel<'a, 'b>(area: &'a Area<'b>, caption: String) -> ChartBuilder<'a, 'b, SVGBackend<'b>> {
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(caption, ("sans-serif", 16))
        .margin(15)
        .margin_right(45)
        .x_label_area_size(40)
        .y_label_area_size(70);
    builder
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_labels_read_as_percent() {
        assert_eq!(percentile_label(0.0), "0%");
        assert_eq!(percentile_label(1.0), "90%");
        assert_eq!(percentile_label(3.0), "99.9%");
    }
}
