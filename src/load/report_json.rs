//! The report on the wire: [`ReportJson`] is the one place the JSON
//! schema of `load --json` lives, written and read by serde. It holds the
//! counts a [`Report`] is made of, the latency histogram (base64 of
//! HdrHistogram's V2 encoding, see `hdr_v2`), and the figures derived
//! from them (rates, loss, percentiles, the verdict) for people and
//! scripts. Reading a report back trusts only the counts: the derived
//! figures are worked out again.
//!
//! What the figures mean, and merging, are the report's (`report`); this
//! file only maps them to and from JSON. The per-second intervals do not
//! travel: they are for `--hdr-log` and `--plot`, written beside.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::report::{
    add_histogram, new_histogram, Connects, Errors, Report, StageReport, TestSettings, TlsReport,
    WallWindow,
};
use super::split::{self, Segment};
use super::{hdr_v2, Proto};
use crate::mode::Mode;

/// A load report as JSON, field for field; keys in the order written.
///
/// Fields added after the first reports were saved (`histogram`,
/// `mismatch_upper`, `max_loss_percent`, `first_error`, `failure`,
/// `rate`, `segment`, `window`, `test`, `failed_parts`, `achieved_share`,
/// `behind`, `rcvbuf_drops`, `errors.tls`) may be missing,
/// so older files still `compare`; [`Report::from_json`] needs the
/// histogram, and `merge` needs `test`. `tls` is there for `tls://` runs
/// only.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReportJson {
    /// `tcp` or `udp`.
    pub proto: Proto,
    /// The server's address, `127.0.0.1:7007`.
    pub target: SocketAddr,
    /// The name the target was given by (`echo-reactor`), when it was a
    /// name; absent for an IP address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Connections asked for: this report's share of the test's.
    pub connections: usize,
    /// This report's share of the open-loop rate, messages per second;
    /// `null` for closed loop.
    #[serde(default, serialize_with = "optional_number")]
    pub rate: Option<f64>,
    /// Connections that came up, each counted once.
    pub connected: u64,
    /// Connections opened again after an error (`--reconnect`).
    pub reconnects: u64,
    /// Time until every connection was up or had failed, in seconds.
    #[serde(serialize_with = "seconds")]
    pub ramp_s: f64,
    /// The measured window, in seconds.
    #[serde(serialize_with = "seconds")]
    pub duration_s: f64,
    /// Measured messages whose reply came back right.
    pub messages: u64,
    /// Their reply bytes.
    pub bytes: u64,
    /// Messages sent in the measured window.
    pub sent: u64,
    /// Derived: `messages / duration_s`.
    #[serde(serialize_with = "figure")]
    pub msgs_per_sec: f64,
    /// Derived: `bytes / duration_s`.
    #[serde(serialize_with = "figure")]
    pub bytes_per_sec: f64,
    /// Derived: lost as a percentage of sent.
    #[serde(serialize_with = "figure")]
    pub loss_percent: f64,
    /// Derived, open loop: the share of the messages its schedule asked
    /// for in the window that went out (`sent` over `rate` times
    /// `duration_s`); `null` in closed loop.
    #[serde(default, serialize_with = "optional_number")]
    pub achieved_share: Option<f64>,
    /// Derived: the generator fell behind its own schedule, sending less
    /// than 95% of it, so the server was offered less than `rate`.
    #[serde(default)]
    pub behind: bool,
    /// Latency of the measured messages, in microseconds.
    pub latency_us: LatencyJson,
    /// `tls://` runs: the handshakes; absent for TCP and UDP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsJson>,
    /// `--stages` runs: one entry per stage; absent otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<StageJson>,
    /// Connections that came up in the measured window (`--churn` makes
    /// many; without it, only replacements do).
    #[serde(default)]
    pub connects: u64,
    /// Derived: `connects / duration_s`.
    #[serde(default, serialize_with = "figure")]
    pub connects_per_sec: f64,
    /// Connections that came up over the whole run (ramp, warm-up, window
    /// and drain): what the server accepted.
    #[serde(default)]
    pub connects_total: u64,
    /// The window's connects: connect latency, in microseconds, from the
    /// SYN to established (TLS: to the handshake done).
    #[serde(default)]
    pub connect_latency_us: ConnectLatencyJson,
    /// Errors by kind.
    pub errors: Errors,
    /// UDP replies that overtook a later request's (not errors).
    pub reordered: u64,
    /// UDP replies to requests already counted lost (not errors).
    pub late: u64,
    /// UDP: datagrams the kernel dropped at this host's sockets because
    /// their receive buffers were full (replies that came but were lost
    /// here).
    #[serde(default)]
    pub rcvbuf_drops: u64,
    /// Mismatches that were exactly the uppercase of what was sent.
    #[serde(default)]
    pub mismatch_upper: u64,
    /// The loss (percent) UDP may have and still pass.
    #[serde(default = "default_max_loss_percent", serialize_with = "figure")]
    pub max_loss_percent: f64,
    /// The run was stopped early by a signal.
    pub interrupted: bool,
    /// The first error seen, for people.
    #[serde(default)]
    pub first_error: Option<String>,
    /// Why the run could not happen at all.
    #[serde(default)]
    pub failure: Option<String>,
    /// Which part of a split test this is; `0/1` for a whole one.
    #[serde(default)]
    pub segment: SegmentJson,
    /// The measured window by the wall clock; `null` if there was none.
    #[serde(default)]
    pub window: Option<WindowJson>,
    /// The whole test's settings, the same in every part.
    #[serde(default)]
    pub test: Option<TestJson>,
    /// Merged reports: the parts that failed on their own, one line each.
    #[serde(default)]
    pub failed_parts: Vec<String>,
    /// Derived: the verdict.
    pub ok: bool,
    /// Derived: why the run failed, one line; `null` when it passed.
    pub error: Option<String>,
}

/// The latency figures, in microseconds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LatencyJson {
    /// Derived: median.
    pub p50: u64,
    /// Derived: 90th percentile.
    pub p90: u64,
    /// Derived: 99th percentile.
    pub p99: u64,
    /// Derived: 99.9th percentile.
    pub p999: u64,
    /// Derived: the largest.
    pub max: u64,
    /// Derived: the mean.
    #[serde(serialize_with = "figure")]
    pub mean: f64,
    /// The whole distribution: base64 of HdrHistogram's V2 compressed
    /// encoding ([`hdr_v2::encode`]); `null` if it could not be encoded.
    #[serde(default)]
    pub histogram: Option<String>,
}

/// One entry of `stages`: a stage's target and what its messages did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageJson {
    /// How long the stage lasted, seconds.
    #[serde(serialize_with = "seconds")]
    pub duration_s: f64,
    /// Messages per second asked for at the stage's end (this report's
    /// share).
    #[serde(serialize_with = "number_ref")]
    pub target_rate: f64,
    /// Replies of the stage's messages that came back right.
    pub messages: u64,
    /// Derived: `messages / duration_s`.
    #[serde(serialize_with = "figure")]
    pub msgs_per_sec: f64,
    /// Derived: median latency, microseconds.
    pub p50_us: u64,
    /// Derived: 99th percentile latency, microseconds.
    pub p99_us: u64,
    /// Errors of every kind in the stage.
    pub errors: u64,
    /// The stage's latencies as [`LatencyJson::histogram`] holds them,
    /// so that `merge` adds stages exactly.
    #[serde(default)]
    pub histogram: Option<String>,
}

impl From<&StageReport> for StageJson {
    fn from(s: &StageReport) -> StageJson {
        let [p50, _, p99, _, _] = s.percentiles_us();
        StageJson {
            duration_s: s.duration.as_secs_f64(),
            target_rate: s.target_rate,
            messages: s.messages,
            msgs_per_sec: s.msgs_per_sec(),
            p50_us: p50,
            p99_us: p99,
            errors: s.errors,
            histogram: hdr_v2::encode(&s.latency).ok(),
        }
    }
}

impl StageJson {
    /// The stage back, checked: a target that is a rate, a histogram
    /// that holds one value per message.
    fn into_stage(self, n: usize) -> Result<StageReport, String> {
        if !self.target_rate.is_finite() || self.target_rate < 0.0 {
            return Err(format!("stages[{n}].target_rate is not a rate"));
        }
        let encoded = self
            .histogram
            .ok_or_else(|| format!("stages[{n}] carries no histogram"))?;
        let mut latency = new_histogram();
        add_histogram(&mut latency, &hdr_v2::decode(&encoded)?);
        if latency.len() != self.messages {
            return Err(format!(
                "stages[{n}]: the histogram holds {} values but the stage counts {} messages",
                latency.len(),
                self.messages
            ));
        }
        Ok(StageReport {
            duration: duration(&format!("stages[{n}].duration_s"), self.duration_s)?,
            target_rate: self.target_rate,
            messages: self.messages,
            errors: self.errors,
            latency,
        })
    }
}

/// `connect_latency_us`: how long the window's connects took.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ConnectLatencyJson {
    /// Derived: median.
    pub p50: u64,
    /// Derived: 90th percentile.
    pub p90: u64,
    /// Derived: 99th percentile.
    pub p99: u64,
    /// Derived: the largest.
    pub max: u64,
    /// The whole distribution, as [`LatencyJson::histogram`]; what
    /// `merge` adds. `null` in reports written before connects were kept.
    #[serde(default)]
    pub histogram: Option<String>,
}

impl ConnectLatencyJson {
    /// The figures of `c` and its histogram.
    fn of(c: &Connects) -> ConnectLatencyJson {
        let [p50, p90, p99, _, max] = c.percentiles_us();
        ConnectLatencyJson {
            p50,
            p90,
            p99,
            max,
            histogram: hdr_v2::encode(&c.latency).ok(),
        }
    }

    /// The connects back, `measured` of them in the window and `total`
    /// over the run, checked against the histogram.
    fn into_connects(self, measured: u64, total: u64) -> Result<Connects, String> {
        if measured > total {
            return Err(format!(
                "connects is {measured}, more than the {total} of the whole run (connects_total)"
            ));
        }
        let mut c = Connects::default();
        if let Some(encoded) = self.histogram {
            add_histogram(&mut c.latency, &hdr_v2::decode(&encoded)?);
        }
        if c.latency.len() != measured {
            return Err(format!(
                "the connect latency histogram holds {} values but the report counts {measured} connects",
                c.latency.len()
            ));
        }
        c.measured = measured;
        c.total = total;
        Ok(c)
    }
}

/// `tls`: the handshakes of a `tls://` run, over the whole run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TlsJson {
    /// The name the certificate was checked against (and sent as SNI).
    pub server_name: String,
    /// False with `--tls-insecure`: no certificate was checked.
    pub verified: bool,
    /// Handshakes completed.
    pub handshakes: u64,
    /// Of those, resumed sessions.
    pub resumed: u64,
    /// Derived: `TLSv1.3`, `TLSv1.2`, `mixed`, or `null` without handshakes.
    pub version: Option<String>,
    /// Handshakes by version.
    pub versions: TlsVersionsJson,
    /// Each handshake's time (TCP up to TLS done), in microseconds.
    pub handshake_us: LatencyJson,
}

/// `tls.versions`: handshakes by version.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct TlsVersionsJson {
    /// TLS 1.2 handshakes.
    pub tls12: u64,
    /// TLS 1.3 handshakes.
    pub tls13: u64,
}

/// `segment`: which part of how many.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct SegmentJson {
    /// From 0.
    pub index: u32,
    /// At least 1.
    pub count: u32,
}

impl Default for SegmentJson {
    fn default() -> Self {
        SegmentJson { index: 0, count: 1 }
    }
}

/// `window`: the measured window by the wall clock, as Unix seconds
/// (every digit, so it reads back to the microsecond) and as RFC 3339
/// text for people; only the seconds are read back.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WindowJson {
    /// When counting began, Unix seconds.
    #[serde(serialize_with = "seconds")]
    pub start: f64,
    /// When counting ended, Unix seconds.
    #[serde(serialize_with = "seconds")]
    pub end: f64,
    /// Derived: `start` in RFC 3339, UTC.
    #[serde(default)]
    pub start_utc: String,
    /// Derived: `end` in RFC 3339, UTC.
    #[serde(default)]
    pub end_utc: String,
}

/// `test`: the settings of the whole test, the same in each of its parts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TestJson {
    /// Connections over every segment.
    pub connections: usize,
    /// Messages per second over every segment; `null` for closed loop.
    #[serde(serialize_with = "optional_number")]
    pub rate: Option<f64>,
    /// Bytes per message.
    pub size: usize,
    /// Messages in flight per connection (closed loop).
    pub pipeline: usize,
    /// `echo` or `upper`.
    #[serde(serialize_with = "mode_name", deserialize_with = "mode_from_name")]
    pub expect: Mode,
    /// The window asked for, seconds.
    #[serde(serialize_with = "seconds")]
    pub duration_s: f64,
    /// The warm-up asked for, seconds.
    #[serde(serialize_with = "seconds")]
    pub warmup_s: f64,
    /// `--start-at` as Unix seconds; `null` without it.
    #[serde(serialize_with = "optional_number")]
    pub start_at: Option<f64>,
    /// `--churn`: messages per connection; absent without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub churn: Option<u64>,
}

/// What `--max-loss` defaults to, for reports saved without it.
fn default_max_loss_percent() -> f64 {
    1.0
}

impl LatencyJson {
    /// The figures of `h` and the histogram itself.
    fn of(h: &Histogram<u64>, [p50, p90, p99, p999, max]: [u64; 5]) -> LatencyJson {
        LatencyJson {
            p50,
            p90,
            p99,
            p999,
            max,
            mean: if h.is_empty() { 0.0 } else { h.mean() },
            // Encoding into memory fails only on an encoder bug; the
            // report is still worth printing without the histogram.
            histogram: hdr_v2::encode(h).ok(),
        }
    }
}

impl From<&TlsReport> for TlsJson {
    fn from(t: &TlsReport) -> TlsJson {
        TlsJson {
            server_name: t.server_name.clone(),
            verified: t.verified,
            handshakes: t.handshakes,
            resumed: t.resumed,
            version: t.version().map(String::from),
            versions: TlsVersionsJson {
                tls12: t.tls12,
                tls13: t.tls13(),
            },
            handshake_us: LatencyJson::of(&t.latency, t.percentiles_us()),
        }
    }
}

impl TlsJson {
    /// The handshakes back, checked: the histogram holds one value per
    /// handshake, the versions add up to them, resumed ones are among them.
    fn into_tls(self) -> Result<TlsReport, String> {
        let v = self.versions;
        if v.tls12.checked_add(v.tls13) != Some(self.handshakes) || self.resumed > self.handshakes {
            return Err(format!(
                "tls: {} handshakes, but {} TLS 1.2 and {} TLS 1.3, {} resumed",
                self.handshakes, v.tls12, v.tls13, self.resumed
            ));
        }
        let encoded = self
            .handshake_us
            .histogram
            .ok_or("the report carries no handshake histogram (tls.handshake_us.histogram)")?;
        let mut t = TlsReport::new(self.server_name, self.verified);
        // At our own bounds, as the message latency (see `into_report`).
        add_histogram(&mut t.latency, &hdr_v2::decode(&encoded)?);
        if t.latency.len() != self.handshakes {
            return Err(format!(
                "the handshake histogram holds {} values but the report counts {} handshakes",
                t.latency.len(),
                self.handshakes
            ));
        }
        t.handshakes = self.handshakes;
        t.resumed = self.resumed;
        t.tls12 = v.tls12;
        Ok(t)
    }
}

impl From<&Report> for ReportJson {
    fn from(r: &Report) -> ReportJson {
        ReportJson {
            proto: r.proto,
            target: r.target,
            host: r.host.clone(),
            connections: r.connections,
            rate: r.rate,
            connected: r.connected,
            reconnects: r.reconnects,
            ramp_s: r.ramp.as_secs_f64(),
            duration_s: r.duration.as_secs_f64(),
            messages: r.messages,
            bytes: r.bytes,
            sent: r.sent,
            msgs_per_sec: r.msgs_per_sec(),
            bytes_per_sec: r.bytes_per_sec(),
            loss_percent: r.loss_percent(),
            achieved_share: r.achieved_share(),
            behind: r.is_behind(),
            latency_us: LatencyJson::of(&r.latency, r.percentiles_us()),
            tls: r.tls.as_ref().map(TlsJson::from),
            stages: r.stages.iter().map(StageJson::from).collect(),
            connects: r.connects.measured,
            connects_per_sec: r.connects_per_sec(),
            connects_total: r.connects.total,
            connect_latency_us: ConnectLatencyJson::of(&r.connects),
            errors: r.errors,
            reordered: r.reordered,
            late: r.late,
            rcvbuf_drops: r.rcvbuf_drops,
            mismatch_upper: r.mismatch_upper,
            max_loss_percent: r.max_loss_percent,
            interrupted: r.interrupted,
            first_error: r.first_error.clone(),
            failure: r.failure.clone(),
            segment: SegmentJson {
                index: r.segment.index,
                count: r.segment.count,
            },
            window: r.window.map(|w| WindowJson {
                start: split::unix_seconds(w.start),
                end: split::unix_seconds(w.end),
                start_utc: split::rfc3339(w.start),
                end_utc: split::rfc3339(w.end),
            }),
            test: r.settings.map(|t| TestJson {
                connections: t.connections,
                rate: t.rate,
                size: t.size,
                pipeline: t.pipeline,
                expect: t.expect,
                duration_s: t.duration.as_secs_f64(),
                warmup_s: t.warmup.as_secs_f64(),
                start_at: t.start_at.map(split::unix_seconds),
                churn: t.churn,
            }),
            failed_parts: r.failed_parts.clone(),
            ok: r.is_ok(),
            error: r.failure_summary(),
        }
    }
}

impl ReportJson {
    /// Reads one report; the message says what is wrong, not where from.
    ///
    /// # Errors
    ///
    /// The text is not JSON, or not a `load --json` report.
    pub fn parse(json: &str) -> Result<ReportJson, String> {
        serde_json::from_str(json).map_err(|e| format!("not a `load --json` report: {e}"))
    }

    /// The report as one line of JSON.
    pub fn to_line(&self) -> String {
        // A struct of numbers, strings and options has no value JSON
        // cannot hold, so this fails only if serde_json has a bug.
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// The full report back: the counts as written, the histogram
    /// decoded, everything derived worked out again.
    ///
    /// # Errors
    ///
    /// The histogram is missing or broken, its count disagrees with
    /// `messages`, a duration is negative or too long, or the counts
    /// cannot come from one run (see [`check_possible`](Self::check_possible)).
    pub fn into_report(self) -> Result<Report, String> {
        self.check_possible()?;
        let encoded = self
            .latency_us
            .histogram
            .ok_or("the report carries no latency histogram (latency_us.histogram)")?;
        // Held at the generator's own bounds and precision, whatever the
        // writer chose: a part read back then costs what one of ours does
        // (about 190 KB), not the 16 MiB another range may ask for in a
        // few dozen bytes, and merging adds like to like.
        let mut latency = new_histogram();
        add_histogram(&mut latency, &hdr_v2::decode(&encoded)?);
        if latency.len() != self.messages {
            return Err(format!(
                "the latency histogram holds {} values but the report counts {} messages",
                latency.len(),
                self.messages
            ));
        }
        let mut r = Report::new(self.proto, self.target, self.connections);
        r.host = self.host;
        r.connected = self.connected;
        r.reconnects = self.reconnects;
        r.ramp = duration("ramp_s", self.ramp_s)?;
        r.duration = duration("duration_s", self.duration_s)?;
        r.messages = self.messages;
        r.bytes = self.bytes;
        r.sent = self.sent;
        r.errors = self.errors;
        r.reordered = self.reordered;
        r.late = self.late;
        r.rcvbuf_drops = self.rcvbuf_drops;
        r.mismatch_upper = self.mismatch_upper;
        r.latency = latency;
        r.max_loss_percent = self.max_loss_percent;
        r.first_error = self.first_error;
        r.failure = self.failure;
        r.interrupted = self.interrupted;
        r.rate = self.rate;
        let SegmentJson { index, count } = self.segment;
        r.segment =
            Segment::parse(&format!("{index}/{count}")).map_err(|e| format!("segment: {e}"))?;
        r.window = match self.window {
            Some(w) => Some(WallWindow {
                start: wall("window.start", w.start)?,
                end: wall("window.end", w.end)?,
            }),
            None => None,
        };
        r.settings = match self.test {
            Some(t) => Some(TestSettings {
                connections: t.connections,
                rate: t.rate,
                size: t.size,
                pipeline: t.pipeline,
                expect: t.expect,
                duration: duration("test.duration_s", t.duration_s)?,
                warmup: duration("test.warmup_s", t.warmup_s)?,
                start_at: t.start_at.map(|s| wall("test.start_at", s)).transpose()?,
                max_loss_percent: self.max_loss_percent,
                churn: t.churn,
            }),
            None => None,
        };
        r.failed_parts = self.failed_parts;
        r.tls = self.tls.map(TlsJson::into_tls).transpose()?;
        r.stages = self
            .stages
            .into_iter()
            .enumerate()
            .map(|(n, s)| s.into_stage(n))
            .collect::<Result<_, _>>()?;
        // Every measured reply was due in one stage.
        let in_stages = r
            .stages
            .iter()
            .try_fold(0u64, |sum, s| sum.checked_add(s.messages));
        if !r.stages.is_empty() && in_stages != Some(r.messages) {
            return Err(format!(
                "the stages count {} messages but the report {}",
                in_stages.map_or("more than 64 bits hold".into(), |n| n.to_string()),
                r.messages
            ));
        }
        r.connects = self
            .connect_latency_us
            .into_connects(self.connects, self.connects_total)?;
        Ok(r)
    }
}

impl ReportJson {
    /// Refuses counts and settings no run writes: a share of the loss
    /// outside 0 to 100%, messages with no connection, more replies than
    /// messages sent, bytes that are not the messages' size, a rate that is
    /// not a positive number. Read back from files people hand over, these
    /// would otherwise merge into figures that mean nothing.
    ///
    /// # Errors
    ///
    /// The first impossible value, named as in the JSON.
    pub fn check_possible(&self) -> Result<(), String> {
        let bad = |s: String| Err(s);
        if !(0.0..=100.0).contains(&self.max_loss_percent) {
            return bad(format!(
                "max_loss_percent is {}: a loss threshold is 0 to 100",
                self.max_loss_percent
            ));
        }
        if self.connections == 0 && (self.connected > 0 || self.sent > 0 || self.messages > 0) {
            return bad(format!(
                "connections is 0, but the report counts {} connected, {} sent and {} messages",
                self.connected, self.sent, self.messages
            ));
        }
        if self.connected > self.connections as u64 {
            return bad(format!(
                "connected is {}, more than the {} connections asked for",
                self.connected, self.connections
            ));
        }
        if self.messages > self.sent {
            return bad(format!(
                "messages is {}, more than the {} sent",
                self.messages, self.sent
            ));
        }
        if self.mismatch_upper > self.errors.mismatch {
            return bad(format!(
                "mismatch_upper is {}, more than the {} mismatches",
                self.mismatch_upper, self.errors.mismatch
            ));
        }
        let positive = |r: Option<f64>| r.map_or(true, |r| r.is_finite() && r > 0.0);
        if !positive(self.rate) {
            return bad("rate is not a positive number of messages per second".into());
        }
        if let Some(t) = &self.test {
            if t.connections == 0 || t.size == 0 || t.pipeline == 0 || !positive(t.rate) {
                return bad(
                    "test: connections, size and pipeline must be at least 1, and rate positive"
                        .into(),
                );
            }
            if self.connections > t.connections {
                return bad(format!(
                    "connections is {}, more than the test's {}",
                    self.connections, t.connections
                ));
            }
            // Every measured reply counts its message's size in bytes.
            if Some(self.bytes) != self.messages.checked_mul(t.size as u64) {
                return bad(format!(
                    "bytes is {}, but {} messages of {} bytes make {}",
                    self.bytes,
                    self.messages,
                    t.size,
                    self.messages
                        .checked_mul(t.size as u64)
                        .map_or("more than 64 bits hold".into(), |b| b.to_string())
                ));
            }
        }
        if let Some(w) = &self.window {
            if w.start > w.end {
                return bad(format!(
                    "window ends ({}) before it starts ({})",
                    w.end, w.start
                ));
            }
        }
        Ok(())
    }
}

/// Seconds as written back to a `Duration`, to the nanosecond: rates are
/// worked out again from it, so it must come back as it went out.
fn duration(name: &str, secs: f64) -> Result<Duration, String> {
    let nanos = (secs * 1e9).round();
    if !(0.0..=u64::MAX as f64).contains(&nanos) {
        return Err(format!("{name} is {secs}: not a duration"));
    }
    Ok(Duration::from_nanos(nanos as u64))
}

/// Unix seconds as written back to a wall-clock time.
fn wall(name: &str, secs: f64) -> Result<SystemTime, String> {
    Ok(UNIX_EPOCH + duration(name, secs)?)
}

/// `null`, or a number as [`number`] writes it.
pub(super) fn optional_number<S: Serializer>(x: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    match x {
        Some(x) => number(*x, s),
        None => s.serialize_none(),
    }
}

/// A number as [`number`] writes it, from a field.
pub(super) fn number_ref<S: Serializer>(x: &f64, s: S) -> Result<S::Ok, S::Error> {
    number(*x, s)
}

/// A mode by its name (`echo`).
fn mode_name<S: Serializer>(m: &Mode, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(m.as_str())
}

/// A mode from its name.
fn mode_from_name<'de, D: Deserializer<'de>>(d: D) -> Result<Mode, D::Error> {
    let name = String::deserialize(d)?;
    name.parse().map_err(serde::de::Error::custom)
}

/// A duration in seconds: whole seconds as an integer (`2`), otherwise
/// every digit, so reading it back loses nothing.
fn seconds<S: Serializer>(secs: &f64, s: S) -> Result<S::Ok, S::Error> {
    number(*secs, s)
}

/// A derived figure for people: three decimals at most (`500`, `0.25`);
/// NaN and infinities, which JSON lacks, as 0.
pub(super) fn figure<S: Serializer>(x: &f64, s: S) -> Result<S::Ok, S::Error> {
    number((x * 1000.0).round() / 1000.0, s)
}

/// A finite number, written as an integer when it is whole; 0 otherwise.
fn number<S: Serializer>(x: f64, s: S) -> Result<S::Ok, S::Error> {
    // Integers up to 2^53 are exact in an f64.
    const EXACT: f64 = 9_007_199_254_740_992.0;
    if !x.is_finite() {
        s.serialize_u64(0)
    } else if x.fract() == 0.0 && x.abs() <= EXACT {
        s.serialize_i64(x as i64)
    } else {
        s.serialize_f64(x)
    }
}

/// The JSON rendering lives here, beside its schema, so that `report.rs`
/// knows nothing of serde.
impl Report {
    /// The report as one JSON object on one line (no trailing newline);
    /// the schema is `ReportJson`, which [`from_json`](Self::from_json)
    /// reads back.
    pub fn to_json(&self) -> String {
        ReportJson::from(self).to_line()
    }

    /// Rebuilds a report from what [`to_json`](Self::to_json) wrote, in
    /// any field order: the counts and the latency histogram as written,
    /// the derived figures (rates, percentiles, verdict) worked out again.
    /// The per-second intervals do not travel and come back empty.
    ///
    /// # Errors
    ///
    /// A message for people: not JSON, not a report, or one without its
    /// latency histogram (`latency_us.histogram`).
    pub fn from_json(json: &str) -> Result<Report, String> {
        ReportJson::parse(json)?.into_report()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls_client::TlsVersion;

    fn report() -> Report {
        let mut r = Report::new(Proto::Udp, "[::1]:7007".parse().expect("address"), 3);
        r.connected = 3;
        r.reconnects = 1;
        r.ramp = Duration::from_micros(2_345);
        r.duration = Duration::from_nanos(2_000_123_457);
        r.messages = 1000;
        r.bytes = 64_000;
        r.sent = 1010;
        r.errors.lost = 10;
        r.errors.duplicate = 1;
        r.errors.mismatch = 2;
        r.mismatch_upper = 2;
        r.reordered = 4;
        r.late = 3;
        r.max_loss_percent = 2.5;
        r.first_error = Some("udp socket 1: a second reply to message 7 \"x\"".into());
        for v in 1..=1000u64 {
            r.latency.record(v * 7).expect("in range");
        }
        r.segment = Segment { index: 1, count: 3 };
        r.rate = Some(1000.0 / 3.0);
        let start = UNIX_EPOCH + Duration::from_micros(1_767_225_600_123_456);
        r.window = Some(WallWindow {
            start,
            end: start + r.duration,
        });
        r.settings = Some(TestSettings {
            connections: 9,
            rate: Some(1000.0),
            size: 64,
            pipeline: 1,
            expect: Mode::Upper,
            duration: Duration::from_secs(2),
            warmup: Duration::from_millis(500),
            start_at: Some(start - Duration::from_millis(500)),
            max_loss_percent: 2.5,
            churn: None,
        });
        r
    }

    #[test]
    fn a_segment_report_carries_its_segment_window_and_test() {
        let r = report();
        let j = r.to_json();
        for key in [
            r#""rate":333.3333333333333,"#,
            r#""segment":{"index":1,"count":3}"#,
            r#""window":{"start":1767225600.123456,"#,
            r#""start_utc":"2026-01-01T00:00:00.123456Z""#,
            r#""test":{"connections":9,"rate":1000,"size":64,"pipeline":1,"expect":"upper","duration_s":2,"warmup_s":0.5,"#,
        ] {
            assert!(j.contains(key), "{key} missing in {j}");
        }
        let back = Report::from_json(&j).unwrap_or_else(|e| panic!("{e}: {j}"));
        assert_eq!(back.segment, r.segment);
        assert_eq!(back.rate, r.rate);
        assert_eq!(back.settings, r.settings);
        let (w, b) = (r.window.expect("window"), back.window.expect("window"));
        for (x, y) in [(w.start, b.start), (w.end, b.end)] {
            let apart = x.duration_since(y).or_else(|_| y.duration_since(x));
            assert!(apart.expect("ordered") < Duration::from_micros(1));
        }
    }

    #[test]
    fn a_report_survives_json_and_back_unchanged() {
        let first = report().to_json();
        let back = Report::from_json(&first).unwrap_or_else(|e| panic!("{e}: {first}"));
        assert_eq!(back.to_json(), first);
        assert_eq!(back.duration, Duration::from_nanos(2_000_123_457));
        assert_eq!(back.latency, report().latency);
        assert_eq!(back.errors, report().errors);
        assert_eq!(back.failure_summary(), report().failure_summary());
    }

    #[test]
    fn a_tls_report_carries_its_handshakes_there_and_back() {
        let mut r = report();
        r.proto = Proto::Tls;
        let mut tls = TlsReport::new("echo.example".into(), true);
        for us in [900, 1200, 4000] {
            tls.record(TlsVersion::Tls13, us == 900, Duration::from_micros(us));
        }
        r.tls = Some(tls);
        let j = r.to_json();
        assert!(
            j.contains(r#""tls":{"server_name":"echo.example","verified":true,"handshakes":3,"resumed":1,"version":"TLSv1.3","versions":{"tls12":0,"tls13":3},"handshake_us":{"p50":1200,"#),
            "{j}"
        );
        let back = Report::from_json(&j).unwrap_or_else(|e| panic!("{e}: {j}"));
        assert_eq!(back.to_json(), j);
        let t = back.tls.expect("tls");
        assert_eq!((t.handshakes, t.resumed, t.latency.len()), (3, 1, 3));
        // Counts that do not add up are refused by name.
        let mut v: serde_json::Value = serde_json::from_str(&j).expect("JSON");
        v["tls"]["handshakes"] = 4.into();
        let e = Report::from_json(&v.to_string()).unwrap_err();
        assert!(e.contains("tls: 4 handshakes"), "{e}");
        // TCP and UDP reports carry no `tls` at all.
        assert!(!report().to_json().contains("\"tls\":{"));
    }

    #[test]
    fn a_stages_report_carries_its_stages_there_and_back() {
        let mut r = report();
        let stage = |secs: u64, target: f64, lat: &[u64]| {
            let mut latency = new_histogram();
            for v in lat {
                latency.record(*v).expect("in range");
            }
            StageReport {
                duration: Duration::from_secs(secs),
                target_rate: target,
                messages: lat.len() as u64,
                errors: 1,
                latency,
            }
        };
        let (first, rest): (Vec<u64>, Vec<u64>) =
            (1..=1000u64).map(|v| v * 7).partition(|v| *v < 2000);
        r.stages = vec![stage(1, 200.0, &first), stage(2, 0.0, &rest)];
        let j = r.to_json();
        assert!(
            j.contains(r#""stages":[{"duration_s":1,"target_rate":200,"messages":285,"msgs_per_sec":285,"p50_us":1001,"p99_us":1981,"errors":1,"histogram":"#),
            "{j}"
        );
        let back = Report::from_json(&j).unwrap_or_else(|e| panic!("{e}: {j}"));
        assert_eq!(back.to_json(), j);
        // Stages that do not add up to the report's messages are refused.
        let mut v: serde_json::Value = serde_json::from_str(&j).expect("JSON");
        v["stages"].as_array_mut().expect("stages").pop();
        let e = Report::from_json(&v.to_string()).unwrap_err();
        assert!(e.contains("the stages count 285 messages"), "{e}");
    }

    #[test]
    fn keys_come_in_the_order_of_the_schema() {
        let j = report().to_json();
        let at = |key: &str| {
            j.find(&format!("\"{key}\":"))
                .unwrap_or_else(|| panic!("{key} in {j}"))
        };
        let order = [
            "proto",
            "target",
            "connections",
            "duration_s",
            "msgs_per_sec",
            "latency_us",
            "histogram",
            "errors",
            "reordered",
            "ok",
            "error",
        ];
        for pair in order.windows(2) {
            assert!(
                at(pair[0]) < at(pair[1]),
                "{} before {}: {j}",
                pair[0],
                pair[1]
            );
        }
        assert!(
            j.starts_with(r#"{"proto":"udp","target":"[::1]:7007","#),
            "{j}"
        );
    }

    #[test]
    fn derived_figures_have_three_decimals_and_whole_ones_none() {
        let mut r = report();
        r.duration = Duration::from_secs(2);
        let j = r.to_json();
        assert!(j.contains(r#""duration_s":2,"#), "{j}");
        assert!(j.contains(r#""msgs_per_sec":500,"#), "{j}");
        // 10 lost of 1010 sent: 0.990099...%.
        assert!(j.contains(r#""loss_percent":0.99,"#), "{j}");
        let nothing = Report::new(Proto::Tcp, "127.0.0.1:7".parse().expect("address"), 1);
        assert!(nothing.to_json().contains(r#""msgs_per_sec":0,"#));
    }

    #[test]
    fn counts_no_run_writes_are_refused_by_name() {
        type Spoil = fn(&mut serde_json::Value);
        let cases: [(&str, Spoil); 6] = [
            ("max_loss_percent", |v| v["max_loss_percent"] = 101.into()),
            ("connections is 0", |v| v["connections"] = 0.into()),
            ("more than the 1010 sent", |v| v["messages"] = 1011.into()),
            ("mismatch_upper", |v| v["mismatch_upper"] = 3.into()),
            ("bytes is 1", |v| v["bytes"] = 1.into()),
            ("rate", |v| v["rate"] = (-5).into()),
        ];
        for (why, spoil) in cases {
            let mut v: serde_json::Value = serde_json::from_str(&report().to_json()).expect("JSON");
            spoil(&mut v);
            let e = Report::from_json(&v.to_string()).unwrap_err();
            assert!(e.contains(why), "{why}: {e}");
        }
    }

    #[test]
    fn reading_back_needs_the_histogram_and_its_count_to_agree() {
        let mut v: serde_json::Value = serde_json::from_str(&report().to_json()).expect("JSON");
        v["messages"] = 999.into();
        v["bytes"] = (999 * 64).into();
        let e = Report::from_json(&v.to_string()).unwrap_err();
        assert!(
            e.contains("1000 values") && e.contains("999 messages"),
            "{e}"
        );
        v["latency_us"]
            .as_object_mut()
            .expect("an object")
            .remove("histogram");
        let e = Report::from_json(&v.to_string()).unwrap_err();
        assert!(e.contains("latency_us.histogram"), "{e}");
        v["latency_us"]["histogram"] = "not base64!".into();
        assert!(Report::from_json(&v.to_string()).is_err());
        assert!(Report::from_json(r#"{"hello":"world"}"#)
            .unwrap_err()
            .contains("load --json"));
    }

    /// Found by the `report_json` and `merge_input` fuzz targets: a
    /// window end as `load --json` writes it (`1796193799.5163233`) was
    /// read back as another number (`1796193799.516323`): serde_json's
    /// default float parser may miss the nearest double by one step, so a
    /// report changed a little each time `merge` or `compare` read it.
    #[test]
    fn a_report_reads_back_to_the_same_json() {
        let mut r = report();
        let start = UNIX_EPOCH + Duration::new(1_796_193_799, 16_114_200);
        let end = UNIX_EPOCH + Duration::new(1_796_193_799, 516_323_328);
        r.window = Some(WallWindow { start, end });
        let json = r.to_json();
        assert!(json.contains("\"end\":1796193799.5163233,"), "{json}");
        let back = Report::from_json(&json).expect("reads back");
        assert_eq!(back.window.map(|w| w.end), Some(end));
        assert_eq!(back.to_json(), json);
    }

    /// Found while choosing the `merge_input` target's memory limit: a
    /// histogram of another range and precision (1 us to 36 min at five
    /// digits: 2^21 counts, 16 MiB) encodes to a few dozen bytes, so a
    /// kilobyte line of `merge` input held 16 MiB. Read back, a report's
    /// histogram now has the generator's own bounds (about 190 KB),
    /// whatever its writer chose; the values stay, at three digits.
    #[test]
    fn a_histogram_of_another_range_is_held_at_the_generators() {
        let wide = || {
            let mut h = hdrhistogram::Histogram::new_with_bounds(1, 1 << 31, 5).expect("bounds");
            for v in [1, 1000, 123_456, 1 << 31] {
                h.record(v).expect("in range");
            }
            h
        };
        let mut r = report();
        r.proto = Proto::Tls;
        r.latency = wide();
        r.messages = 4;
        r.bytes = 4 * 64;
        let mut tls = TlsReport::new("echo.example".into(), true);
        tls.latency = wide();
        (tls.handshakes, tls.tls12) = (4, 4);
        r.tls = Some(tls);
        let back = Report::from_json(&r.to_json()).expect("reads back");
        let ours = new_histogram().distinct_values();
        let handshakes = &back.tls.as_ref().expect("tls").latency;
        for h in [&back.latency, handshakes] {
            assert_eq!(h.distinct_values(), ours);
            assert_eq!(h.len(), 4);
            assert!(h.equivalent(h.max(), 1 << 31));
            assert!(h.equivalent(h.value_at_quantile(0.5), 1000));
        }
    }
}
