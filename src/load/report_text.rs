//! A report for people: the few lines `load` prints (rate, latency
//! percentiles, errors, verdict) and HdrHistogram's standard
//! percentile-distribution text (`--latency`), the one its plotters read.
//! What the figures mean is the report's (`report`); JSON is
//! `report_json`'s.

use std::fmt::{self, Write as _};

use hdrhistogram::Histogram;

use super::report::{Report, TlsReport};
use super::split::rfc3339;
use super::Proto;

impl fmt::Display for Report {
    /// A few readable lines: rate, latency percentiles, errors.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [p50, p90, p99, p999, max] = self.percentiles_us();
        match self.proto {
            Proto::Tcp | Proto::Tls => writeln!(
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
        let asked = self
            .rate
            .map_or(String::new(), |r| format!(" of {} asked", figure(r)));
        writeln!(
            f,
            "rate       {:.0} msgs/s{asked}, {:.2} MB/s",
            self.msgs_per_sec(),
            self.bytes_per_sec() / 1e6
        )?;
        if let (true, Some(share)) = (self.is_behind(), self.achieved_share()) {
            writeln!(
                f,
                "behind     the generator sent {:.1}% of the messages its schedule asked for \
                 in the window: the server was offered less than --rate (more --threads, \
                 or more generators with --segment)",
                share * 100.0
            )?;
        }
        if self.latency.is_empty() {
            writeln!(f, "latency    none: no reply measured")?;
        } else {
            writeln!(
                f,
                "latency    p50 {}, p90 {}, p99 {}, p99.9 {}, max {}",
                latency(p50),
                latency(p90),
                latency(p99),
                latency(p999),
                latency(max)
            )?;
        }
        if !self.stages.is_empty() {
            f.write_str(&stages_table(self))?;
        }
        if let Some(tls) = &self.tls {
            writeln!(f, "tls        {}", tls_text(tls))?;
        }
        if self.connects.measured > 0 {
            writeln!(f, "connects   {}", connects_text(self))?;
        }
        let e = &self.errors;
        writeln!(f, "errors     {}", self.errors_text())?;
        if self.proto == Proto::Udp {
            writeln!(
                f,
                "udp        duplicate {} (an error), reordered {}, late {} (not errors); \
                 {} dropped in this host's receive buffers",
                e.duplicate, self.reordered, self.late, self.rcvbuf_drops
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

/// The `--stages` rows: one per stage, with the rate it ramped from and
/// to, what it achieved, its messages, errors and p50/p99.
fn stages_table(r: &Report) -> String {
    let mut out = String::from(
        "stages     stage  duration          target msgs/s  achieved  messages  errors       p50       p99\n",
    );
    let mut from = 0.0;
    for (i, s) in r.stages.iter().enumerate() {
        let [p50, _, p99, _, _] = s.percentiles_us();
        let (p50, p99) = match s.messages {
            0 => ("-".to_string(), "-".to_string()),
            _ => (latency(p50), latency(p99)),
        };
        let target = format!("{} -> {}", figure(from), figure(s.target_rate));
        let _ = writeln!(
            out,
            "           {:>5}  {:>7.2} s  {target:>20}  {:>8.0}  {:>8}  {:>6}  {p50:>8}  {p99:>8}",
            i + 1,
            s.duration.as_secs_f64(),
            s.msgs_per_sec(),
            s.messages,
            s.errors,
        );
        from = s.target_rate;
    }
    out
}

/// The connects line: `1520 in the window, 15200/s (1530 over the run);
/// connect p50 41 us, p90 60 us, p99 95 us, max 310 us`.
fn connects_text(r: &Report) -> String {
    let c = &r.connects;
    let [p50, p90, p99, _, max] = c.percentiles_us();
    format!(
        "{} in the window, {:.0}/s ({} over the run); connect p50 {}, p90 {}, p99 {}, max {}",
        c.measured,
        r.connects_per_sec(),
        c.total,
        latency(p50),
        latency(p90),
        latency(p99),
        latency(max)
    )
}

/// The TLS line: `TLSv1.3, 50 handshakes (0 resumed): p50 1.9 ms, p99
/// 3.2 ms; certificate verified for localhost`, or NOT verified.
fn tls_text(tls: &TlsReport) -> String {
    let checked = if tls.verified {
        format!("certificate verified for {}", tls.server_name)
    } else {
        "certificate NOT verified (--tls-insecure)".to_string()
    };
    let Some(version) = tls.version() else {
        let checking = if tls.verified {
            format!("the certificate checked for {}", tls.server_name)
        } else {
            "the certificate not checked (--tls-insecure)".to_string()
        };
        return format!("no handshake completed, {checking}");
    };
    let [p50, _, p99, _, max] = tls.percentiles_us();
    format!(
        "{version}, {} handshakes ({} resumed): p50 {}, p99 {}, max {}; {checked}",
        tls.handshakes,
        tls.resumed,
        latency(p50),
        latency(p99),
        latency(max)
    )
}

/// A latency for people: microseconds below 10 ms (`542 us`), then
/// milliseconds with one decimal (`12.6 ms`).
fn latency(us: u64) -> String {
    if us < 10_000 {
        format!("{us} us")
    } else {
        format!("{:.1} ms", us as f64 / 1000.0)
    }
}

/// A rate as asked for: at most three decimals, none when whole
/// (`10000`, `333.333`, `0.5`).
fn figure(x: f64) -> String {
    let s = format!("{x:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn report() -> Report {
        let mut r = Report::new(Proto::Tcp, "127.0.0.1:7".parse().expect("address"), 2);
        r.connected = 2;
        r.duration = Duration::from_secs(2);
        r
    }

    #[test]
    fn latencies_past_10_ms_read_in_ms() {
        assert_eq!(latency(542), "542 us");
        assert_eq!(latency(9_999), "9999 us");
        assert_eq!(latency(12_640), "12.6 ms");
        let mut r = report();
        for v in [100, 200, 15_000] {
            r.latency.record(v).expect("in range");
        }
        (r.messages, r.sent, r.bytes) = (3, 3, 192);
        let text = r.to_string();
        assert!(text.contains("latency    p50 200 us,"), "{text}");
        assert!(text.contains("max 15.0 ms"), "{text}");
    }

    #[test]
    fn no_reply_shows_no_percentiles() {
        let text = report().to_string();
        assert!(
            text.contains("latency    none: no reply measured"),
            "{text}"
        );
        assert!(!text.contains("p50"), "{text}");
    }

    #[test]
    fn the_rate_asked_for_stands_beside_the_rate_achieved_and_falling_behind_shows() {
        let mut r = report();
        r.rate = Some(10_000.0);
        (r.messages, r.sent, r.bytes) = (6_000, 6_100, 6_000 * 64);
        for _ in 0..6_000 {
            r.latency.record(100).expect("in range");
        }
        let text = r.to_string();
        assert!(
            text.contains("rate       3000 msgs/s of 10000 asked, 0.19 MB/s"),
            "{text}"
        );
        assert!(
            text.contains("behind     the generator sent 30.5% of the messages"),
            "{text}"
        );
        r.rate = Some(3_000.0);
        assert!(!r.to_string().contains("behind"), "{}", r);
        assert_eq!(figure(1000.0 / 3.0), "333.333");
        assert_eq!(figure(0.5), "0.5");
    }
}
