//! A report for people: the few lines `load` prints (rate, latency
//! percentiles, errors, verdict) and HdrHistogram's standard
//! percentile-distribution text (`--latency`), the one its plotters read.
//! What the figures mean is the report's (`report`); JSON is
//! `report_json`'s.

use std::fmt::{self, Write as _};

use hdrhistogram::Histogram;

use super::report::Report;
use super::split::rfc3339;
use super::Proto;

impl fmt::Display for Report {
    /// A few readable lines: rate, latency percentiles, errors.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [p50, p90, p99, p999, max] = self.percentiles_us();
        match self.proto {
            Proto::Tcp => writeln!(
                f,
                "target     {} ({} of {} connections up in {:.2} s)",
                self.target_text(),
                self.connected,
                self.connections,
                self.ramp.as_secs_f64()
            )?,
            // UDP has no connections: sockets open, and some may hear
            // "port unreachable" back.
            Proto::Udp => writeln!(
                f,
                "target     {} ({} of {} sockets open, {} of them told port unreachable)",
                self.target_text(),
                self.connected,
                self.connections,
                self.errors.connect
            )?,
        }
        if !self.segment.is_whole() {
            let of = self.settings.map_or(String::new(), |t| {
                format!(" of a test of {} {}", t.connections, self.proto.peers())
            });
            writeln!(f, "segment    {}{of}", self.segment)?;
        }
        let is_timed = self.settings.is_some_and(|t| t.start_at.is_some());
        if let (Some(w), true) = (self.window, is_timed || !self.segment.is_whole()) {
            writeln!(f, "window     {} to {}", rfc3339(w.start), rfc3339(w.end))?;
        }
        if self.reconnects > 0 {
            writeln!(
                f,
                "reconnect  {} connections replaced after an error",
                self.reconnects
            )?;
        }
        writeln!(
            f,
            "measured   {:.2} s: {} messages, {} bytes",
            self.duration.as_secs_f64(),
            self.messages,
            self.bytes
        )?;
        writeln!(
            f,
            "rate       {:.0} msgs/s, {:.2} MB/s",
            self.msgs_per_sec(),
            self.bytes_per_sec() / 1e6
        )?;
        writeln!(
            f,
            "latency us p50 {p50}, p90 {p90}, p99 {p99}, p99.9 {p999}, max {max}"
        )?;
        let e = &self.errors;
        writeln!(f, "errors     {}", self.errors_text())?;
        if self.proto == Proto::Udp {
            writeln!(
                f,
                "udp        duplicate {} (an error), reordered {}, late {} (not errors)",
                e.duplicate, self.reordered, self.late
            )?;
        }
        let result = if self.interrupted {
            "INTERRUPTED (the figures cover the run so far)"
        } else if self.is_ok() {
            "ok"
        } else {
            "FAILED"
        };
        write!(f, "result     {result}")
    }
}

/// HdrHistogram's `outputPercentileDistribution` text, values divided by
/// `scale` (1000 turns recorded microseconds into milliseconds).
///
/// ```
/// let mut h = echo_reactor::load::report::new_histogram();
/// for v in 1..=100u64 { h.record(v * 10).unwrap(); }
/// let text = echo_reactor::load::percentile_distribution(&h, 1000.0);
/// assert!(text.starts_with("       Value     Percentile TotalCount 1/(1-Percentile)"));
/// assert!(text.contains("#[Max     =        1.000, Total count    =          100]"));
/// ```
pub fn percentile_distribution(h: &Histogram<u64>, scale: f64) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    let mut total = 0u64;
    for v in h.iter_quantiles(5) {
        total += v.count_since_last_iteration();
        let value = v.value_iterated_to() as f64 / scale;
        let q = v.quantile_iterated_to();
        if q < 1.0 {
            let _ = writeln!(
                out,
                "{value:12.3} {q:2.12} {total:10} {:14.2}",
                1.0 / (1.0 - q)
            );
        } else {
            let _ = writeln!(out, "{value:12.3} {q:2.12} {total:10}");
        }
    }
    let (mean, stdev) = if h.is_empty() {
        (0.0, 0.0)
    } else {
        (h.mean() / scale, h.stdev() / scale)
    };
    let _ = writeln!(
        out,
        "#[Mean    = {mean:12.3}, StdDeviation   = {stdev:12.3}]"
    );
    let _ = writeln!(
        out,
        "#[Max     = {:12.3}, Total count    = {:12}]",
        h.max() as f64 / scale,
        h.len()
    );
    let _ = writeln!(
        out,
        "#[Buckets = {:12}, SubBuckets     = {:12}]",
        h.buckets(),
        sub_buckets(h.sigfig())
    );
    out
}

/// HdrHistogram's sub-bucket count for `sigfig` significant digits: the
/// power of two that covers 2 * 10^sigfig (2048 for 3 digits).
pub(crate) fn sub_buckets(sigfig: u8) -> u64 {
    (2 * 10u64.pow(u32::from(sigfig))).next_power_of_two()
}

impl Report {
    /// The full latency distribution in HdrHistogram's standard text
    /// format (`Value Percentile TotalCount 1/(1-Percentile)`, the one its
    /// plotters read), values in microseconds like the rest of the report.
    pub fn percentile_distribution(&self) -> String {
        percentile_distribution(&self.latency, 1.0)
    }
}
