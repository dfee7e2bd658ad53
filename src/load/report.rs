//! The result of a load run: counters, errors by kind, the latency
//! HdrHistogram, merging the loops' reports, and the figures and verdict
//! worked out from them. Its renderings live beside it: text for people in
//! `report_text`, JSON for scripts (and reading back) in `report_json`.
//!
//! Nothing here does IO or looks at a clock; the loops fill a [`Report`]
//! each and the caller merges them.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use hdrhistogram::Histogram;

use super::split::Segment;
use super::{LoadConfig, Proto};
use crate::mode::Mode;
use crate::tls_client::TlsVersion;

/// Latencies are recorded in microseconds, from 1 us to one hour.
const LATENCY_MAX_US: u64 = 3_600_000_000;

/// An open-loop run whose window sent less than this share of what its
/// schedule asked for is behind: the offered load was not offered.
pub const BEHIND_BELOW: f64 = 0.95;

/// A new, empty latency histogram (microseconds, three significant digits).
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 3)
        .expect("constant bounds 1..1h with 3 digits are valid")
}

/// Errors by kind. Each is a count of events, not of bytes. The field
/// names are the JSON report's (`errors.reset`), in this order.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Errors {
    /// Connections that never came up (refused, timed out, no address),
    /// after retries; for UDP, sockets that were refused by ICMP.
    pub connect: u64,
    /// Connections reset by the server (`ECONNRESET`, `EPIPE`).
    pub reset: u64,
    /// Connections still waiting for replies when the drain grace ended.
    pub timeout: u64,
    /// Replies with at least one wrong byte (counted per message).
    pub mismatch: u64,
    /// Messages whose reply never came (UDP: no reply in time; TCP: in
    /// flight when the connection ended).
    pub lost: u64,
    /// Connections the server closed (EOF) while the run still needed them.
    pub closed: u64,
    /// Connections ended by any other IO error.
    pub io: u64,
    /// UDP: a second reply to a request already answered. A server fault
    /// (and an amplification), so it fails the run.
    pub duplicate: u64,
    /// TLS: connections whose TLS handshake failed (the certificate was
    /// refused, the server refused us, or did not speak TLS, or did not
    /// finish within `--connect-timeout`). Never retried: the same
    /// certificate fails the same way.
    #[serde(default)]
    pub tls: u64,
}

impl Errors {
    /// All errors except `lost`, which UDP tolerates up to `--max-loss`.
    /// Saturates: a count read from a hostile report cannot wrap to zero.
    pub fn hard(&self) -> u64 {
        [
            self.connect,
            self.reset,
            self.timeout,
            self.mismatch,
            self.closed,
            self.io,
            self.duplicate,
            self.tls,
        ]
        .into_iter()
        .fold(0, u64::saturating_add)
    }

    /// Every error of every kind (saturating, like [`hard`](Self::hard)).
    pub fn total(&self) -> u64 {
        self.hard().saturating_add(self.lost)
    }

    /// Adds another report's counts to these.
    ///
    /// # Errors
    ///
    /// A sum does not fit: the name of the count (`errors.reset`); nothing
    /// is changed then.
    pub fn merge(&mut self, o: &Errors) -> Result<(), Overflow> {
        let sum = Errors {
            connect: add("errors.connect", self.connect, o.connect)?,
            reset: add("errors.reset", self.reset, o.reset)?,
            timeout: add("errors.timeout", self.timeout, o.timeout)?,
            mismatch: add("errors.mismatch", self.mismatch, o.mismatch)?,
            lost: add("errors.lost", self.lost, o.lost)?,
            closed: add("errors.closed", self.closed, o.closed)?,
            io: add("errors.io", self.io, o.io)?,
            duplicate: add("errors.duplicate", self.duplicate, o.duplicate)?,
            tls: add("errors.tls", self.tls, o.tls)?,
        };
        *self = sum;
        Ok(())
    }
}

/// A count that would not fit after adding reports: its JSON name. Real
/// runs come nowhere near; a hand-made report can, and a wrapped sum
/// would turn errors into none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflow(pub &'static str);

impl std::fmt::Display for Overflow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the sum of `{}` does not fit in 64 bits", self.0)
    }
}

impl std::error::Error for Overflow {}

/// `a + b`, or the count's name when it does not fit.
fn add(name: &'static str, a: u64, b: u64) -> Result<u64, Overflow> {
    a.checked_add(b).ok_or(Overflow(name))
}

/// The settings every part of a split test shares: what `merge` compares
/// to tell whether parts belong together. Counts are the whole test's,
/// not a segment's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TestSettings {
    /// Connections of the whole test, over every segment.
    pub connections: usize,
    /// Messages per second of the whole test; `None` for closed loop.
    pub rate: Option<f64>,
    /// Bytes per message.
    pub size: usize,
    /// Messages in flight per connection (closed loop).
    pub pipeline: usize,
    /// What the server does to each byte.
    pub expect: Mode,
    /// The measured window asked for.
    pub duration: Duration,
    /// The warm-up asked for.
    pub warmup: Duration,
    /// The common start (`--start-at`), if there was one.
    pub start_at: Option<SystemTime>,
    /// The loss (percent) UDP may have and still pass.
    pub max_loss_percent: f64,
    /// `--churn`: messages per connection; `None`: a connection lives
    /// for the whole run.
    pub churn: Option<u64>,
}

/// What a `tls://` run tells of TLS: the name checked and whether the
/// certificate was, and its handshakes, counted over the whole run (ramp
/// and replacements included, since handshakes mostly happen outside the
/// window).
#[derive(Debug, Clone)]
pub struct TlsReport {
    /// The name the certificate was checked against (and sent as SNI).
    pub server_name: String,
    /// False with `--tls-insecure`: no certificate was checked.
    pub verified: bool,
    /// Handshakes completed.
    pub handshakes: u64,
    /// Of those, sessions resumed from an earlier one's ticket.
    pub resumed: u64,
    /// Of those, TLS 1.2 ones; the rest are TLS 1.3.
    pub tls12: u64,
    /// Each handshake's time, from the TCP connection being up to the
    /// TLS handshake being done, in microseconds.
    pub latency: Histogram<u64>,
}

impl TlsReport {
    /// No handshake yet, for connections checking `server_name`.
    pub fn new(server_name: String, verified: bool) -> TlsReport {
        TlsReport {
            server_name,
            verified,
            handshakes: 0,
            resumed: 0,
            tls12: 0,
            latency: new_histogram(),
        }
    }

    /// One more handshake, of `version`, resumed or not, that took `took`.
    pub fn record(&mut self, version: TlsVersion, resumed: bool, took: Duration) {
        self.handshakes += 1;
        self.resumed += u64::from(resumed);
        self.tls12 += u64::from(version == TlsVersion::Tls12);
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1);
        self.latency.saturating_record(micros);
    }

    /// TLS 1.3 handshakes.
    pub fn tls13(&self) -> u64 {
        self.handshakes.saturating_sub(self.tls12)
    }

    /// The version every handshake used (`TLSv1.3`), `mixed`, or `None`
    /// without handshakes.
    pub fn version(&self) -> Option<&'static str> {
        match (self.tls12, self.tls13()) {
            (0, 0) => None,
            (_, 0) => Some("TLSv1.2"),
            (0, _) => Some("TLSv1.3"),
            _ => Some("mixed"),
        }
    }

    /// (p50, p90, p99, p99.9, max) handshake time in microseconds.
    pub fn percentiles_us(&self) -> [u64; 5] {
        percentiles(&self.latency)
    }

    /// This report with `o`'s handshakes added; a part run without
    /// verification makes the sum unverified.
    ///
    /// # Errors
    ///
    /// A count's sum does not fit.
    fn plus(&self, o: &TlsReport) -> Result<TlsReport, Overflow> {
        let mut sum = self.clone();
        sum.handshakes = add("tls.handshakes", self.handshakes, o.handshakes)?;
        sum.resumed = add("tls.resumed", self.resumed, o.resumed)?;
        sum.tls12 = add("tls.versions.tls12", self.tls12, o.tls12)?;
        sum.verified &= o.verified;
        add_histogram(&mut sum.latency, &o.latency);
        Ok(sum)
    }
}

/// New connections: how many came up and how long each took, from its
/// `connect` (the SYN) to established, or for TLS to the handshake done.
#[derive(Debug, Clone)]
pub struct Connects {
    /// Connections that came up over the whole run: the ramp, warm-up,
    /// window and drain, replacements included; what the server accepted.
    pub total: u64,
    /// Of those, the ones that came up in the measured window.
    pub measured: u64,
    /// The measured ones' connect latency, in microseconds.
    pub latency: Histogram<u64>,
}

impl Default for Connects {
    fn default() -> Self {
        Connects {
            total: 0,
            measured: 0,
            latency: new_histogram(),
        }
    }
}

impl Connects {
    /// A connection began at `began` and came up at `up`; it is measured
    /// when `is_measured` (it came up in the window).
    pub fn record(&mut self, began: Instant, up: Instant, is_measured: bool) {
        self.total += 1;
        if is_measured {
            self.measured += 1;
            let micros = u64::try_from(up.saturating_duration_since(began).as_micros())
                .unwrap_or(u64::MAX)
                .max(1);
            self.latency.saturating_record(micros);
        }
    }

    /// (p50, p90, p99, p99.9, max) connect latency in microseconds.
    pub fn percentiles_us(&self) -> [u64; 5] {
        percentiles(&self.latency)
    }

    /// These connects with `o`'s added.
    ///
    /// # Errors
    ///
    /// A count's sum does not fit.
    fn plus(&self, o: &Connects) -> Result<Connects, Overflow> {
        let mut sum = self.clone();
        sum.total = add("connects_total", self.total, o.total)?;
        sum.measured = add("connects", self.measured, o.measured)?;
        add_histogram(&mut sum.latency, &o.latency);
        Ok(sum)
    }
}

/// The measured window by the wall clock, so that the windows of
/// generators on different machines can be compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WallWindow {
    /// When counting began.
    pub start: SystemTime,
    /// When counting ended.
    pub end: SystemTime,
}

/// What a load run measured.
#[derive(Debug, Clone)]
pub struct Report {
    /// TCP or UDP.
    pub proto: Proto,
    /// The server's address: the one the run used.
    pub target: SocketAddr,
    /// The name the target was given by, when it was a name; `None` for
    /// an IP address.
    pub host: Option<String>,
    /// Connections asked for.
    pub connections: usize,
    /// Connections that came up (UDP: sockets opened), each counted once
    /// however often it was replaced.
    pub connected: u64,
    /// Connections opened again after one ended in error (`--reconnect`).
    pub reconnects: u64,
    /// Length of the measured window (warmup and drain excluded).
    pub duration: Duration,
    /// Time from the start until every connection was up or had failed
    /// (the longest over the loops).
    pub ramp: Duration,
    /// Messages sent in the measured window whose reply came back right.
    pub messages: u64,
    /// Reply bytes of those messages.
    pub bytes: u64,
    /// Messages sent in the measured window (warmup and drain excluded,
    /// like `messages`), the base of the loss rate.
    pub sent: u64,
    /// Errors by kind, over the whole run.
    pub errors: Errors,
    /// UDP: replies that came after the reply to a later request of the
    /// same socket. UDP may reorder, so these are counted, not errors.
    pub reordered: u64,
    /// UDP: replies that came after their request had been counted
    /// `lost`; they stay lost (the verdict was given) and are counted here.
    pub late: u64,
    /// Mismatches that were exactly the ASCII uppercase of what was sent.
    pub mismatch_upper: u64,
    /// UDP: datagrams the kernel dropped at this host's sockets, their
    /// receive buffers full (`SO_MEMINFO`'s drop count, over the run), so
    /// replies that came but were lost here. Not errors by themselves: a
    /// loss they explain is still a loss.
    pub rcvbuf_drops: u64,
    /// Latency of each counted message, in microseconds.
    pub latency: Histogram<u64>,
    /// The loss rate (percent) UDP may have and still pass.
    pub max_loss_percent: f64,
    /// The first error seen, described for people (`connect to ...: refused`).
    pub first_error: Option<String>,
    /// Set when the run could not happen at all; the counters are then empty.
    pub failure: Option<String>,
    /// The run was stopped early (SIGINT, SIGTERM): the figures cover the
    /// window so far, and the run does not pass.
    pub interrupted: bool,
    /// The run second by second (warmup and drain included), when the
    /// configuration asked for them (`--hdr-log`, `--plot`).
    pub intervals: Vec<Interval>,
    /// When the run began by the wall clock, the origin of the intervals'
    /// times; `None` for reports read back or merged.
    pub run_start: Option<SystemTime>,
    /// Which part of a split test this report covers; [`Segment::WHOLE`]
    /// for a test run by one process, or merged from all its parts.
    pub segment: Segment,
    /// This report's share of the open-loop rate (messages per second);
    /// `None` for closed loop.
    pub rate: Option<f64>,
    /// The measured window by the wall clock; `None` when the run never
    /// got to measure.
    pub window: Option<WallWindow>,
    /// The whole test's settings; `None` in reports written before they
    /// were carried, which cannot be merged.
    pub settings: Option<TestSettings>,
    /// Merged reports: the parts that failed on their own, one line each
    /// (`segment 1/3: ...`). Any fails the merged run.
    pub failed_parts: Vec<String>,
    /// `tls://` runs: the handshakes and how the server was checked;
    /// `None` for TCP and UDP.
    pub tls: Option<TlsReport>,
    /// `--stages`: one entry per stage, in order; empty otherwise.
    pub stages: Vec<StageReport>,
    /// TCP and TLS: the connections that came up, over the run and in
    /// the window, and their connect latency (`--churn` makes many).
    pub connects: Connects,
}

/// One stage of a `--stages` run: its target and what its messages did.
/// Messages belong to the stage they were due in; errors to the stage
/// they happened in (those before the window to the first, those of the
/// drain to the last).
#[derive(Debug, Clone)]
pub struct StageReport {
    /// How long the stage lasted.
    pub duration: Duration,
    /// Messages per second asked for at the stage's end: this report's
    /// share (reports that are added up add their shares).
    pub target_rate: f64,
    /// Replies of the stage's messages that came back right.
    pub messages: u64,
    /// Errors of every kind in the stage.
    pub errors: u64,
    /// The replies' latencies, in microseconds.
    pub latency: Histogram<u64>,
}

impl StageReport {
    /// Replies per second over the stage.
    pub fn msgs_per_sec(&self) -> f64 {
        per_sec(self.messages, self.duration)
    }

    /// (p50, p90, p99, p99.9, max) latency in microseconds; zeros if empty.
    pub fn percentiles_us(&self) -> [u64; 5] {
        percentiles(&self.latency)
    }

    /// Adds `o`'s counts and share of the target to these.
    ///
    /// # Errors
    ///
    /// A count's sum does not fit; nothing is changed then.
    fn add(&mut self, o: &StageReport) -> Result<(), Overflow> {
        let messages = add("stages.messages", self.messages, o.messages)?;
        let errors = add("stages.errors", self.errors, o.errors)?;
        (self.messages, self.errors) = (messages, errors);
        self.target_rate += o.target_rate;
        self.duration = self.duration.max(o.duration);
        add_histogram(&mut self.latency, &o.latency);
        Ok(())
    }
}

/// Adds the stages of `o` to `mine` stage by stage; a side without stages
/// takes the other's.
///
/// # Errors
///
/// A count's sum does not fit; nothing is changed then.
fn merge_stages(mine: &mut Vec<StageReport>, o: &[StageReport]) -> Result<(), Overflow> {
    if mine.is_empty() {
        *mine = o.to_vec();
        return Ok(());
    }
    let mut sum = mine.clone();
    for (a, b) in sum.iter_mut().zip(o) {
        a.add(b)?;
    }
    *mine = sum;
    Ok(())
}

/// Replies that completed over some span: how many, and their latencies
/// in microseconds.
#[derive(Debug, Clone)]
pub struct Completions {
    /// Replies completed.
    pub messages: u64,
    /// Their latencies, in microseconds.
    pub latency: Histogram<u64>,
}

impl Default for Completions {
    fn default() -> Self {
        Completions {
            messages: 0,
            latency: new_histogram(),
        }
    }
}

impl Completions {
    /// One more reply, `micros` after its message was sent (or due).
    pub fn record(&mut self, micros: u64) {
        self.messages += 1;
        self.latency.saturating_record(micros);
    }

    /// Moves `other`'s replies into these, leaving it empty.
    pub fn take_from(&mut self, other: &mut Completions) {
        self.messages = self.messages.saturating_add(other.messages);
        // Same bounds on both sides: adding cannot fail.
        let _ = self.latency.add(&other.latency);
        other.messages = 0;
        other.latency.reset();
    }
}

/// Replies completed over some span, split as the report counts them.
#[derive(Debug, Clone, Default)]
pub struct Recent {
    /// Replies to messages of the measured window: what the report
    /// counts, wherever they completed (the drain included).
    pub measured: Completions,
    /// Replies to messages sent before the window (ramp, the wait for
    /// `--start-at`, warm-up), which the report leaves out.
    pub unmeasured: Completions,
}

impl Recent {
    /// Moves `other`'s replies into these, leaving it empty.
    pub fn take_from(&mut self, other: &mut Recent) {
        self.measured.take_from(&mut other.measured);
        self.unmeasured.take_from(&mut other.unmeasured);
    }
}

/// About one second of a run: when it began, how long it was, the replies
/// that completed in it, measured or not. Over all intervals, the
/// measured replies are exactly the report's `messages` and `latency`.
#[derive(Debug, Clone)]
pub struct Interval {
    /// From the start of the run.
    pub start: Duration,
    /// Its length (about a second).
    pub length: Duration,
    /// The replies that completed in it.
    pub completed: Recent,
}

impl Interval {
    /// Measured replies per second in this interval.
    pub fn msgs_per_sec(&self) -> f64 {
        per_sec(self.completed.measured.messages, self.length)
    }

    /// Replies per second in this interval, measured or not.
    pub fn all_per_sec(&self) -> f64 {
        let c = &self.completed;
        per_sec(c.measured.messages + c.unmeasured.messages, self.length)
    }
}

impl Report {
    /// An empty report for a run against `target`.
    pub fn new(proto: Proto, target: SocketAddr, connections: usize) -> Report {
        Report {
            proto,
            target,
            host: None,
            connections,
            connected: 0,
            reconnects: 0,
            duration: Duration::ZERO,
            ramp: Duration::ZERO,
            messages: 0,
            bytes: 0,
            sent: 0,
            errors: Errors::default(),
            reordered: 0,
            late: 0,
            mismatch_upper: 0,
            rcvbuf_drops: 0,
            latency: new_histogram(),
            max_loss_percent: 1.0,
            first_error: None,
            failure: None,
            interrupted: false,
            intervals: Vec::new(),
            run_start: None,
            segment: Segment::WHOLE,
            rate: None,
            window: None,
            settings: None,
            failed_parts: Vec::new(),
            tls: None,
            stages: Vec::new(),
            connects: Connects::default(),
        }
    }

    /// The target as it was named: `tcp://echo-reactor:7007`, or
    /// `tcp://127.0.0.1:7007` for an address.
    pub fn named_target(&self) -> String {
        match &self.host {
            Some(name) => format!("{}://{name}:{}", self.proto, self.target.port()),
            None => format!("{}://{}", self.proto, self.target),
        }
    }

    /// The target for people: `tcp://127.0.0.1:7007`, or with the name it
    /// was given by, `tcp://echo-reactor:7007 at 10.96.0.12:7007`.
    pub fn target_text(&self) -> String {
        match &self.host {
            Some(_) => format!("{} at {}", self.named_target(), self.target),
            None => self.named_target(),
        }
    }

    /// An empty report for a run of `config`: its target, its segment and
    /// share, the test's settings.
    pub fn for_config(config: &LoadConfig) -> Report {
        let mut r = Report::new(
            config.target.proto,
            config.target.addr,
            config.own_connections(),
        );
        r.host = config.host.clone();
        r.max_loss_percent = config.max_loss_percent;
        r.segment = config.segment;
        r.rate = config.own_rate();
        r.settings = Some(config.test_settings());
        r.tls = config
            .tls
            .as_ref()
            .map(|t| TlsReport::new(t.server_name(), t.is_verified()));
        r
    }

    /// Adds another report's counts (a loop's, or a part's) to this one;
    /// `connections`, which the caller knows, is left alone. The measured
    /// window is the longest of the two (they run side by side).
    ///
    /// # Errors
    ///
    /// A count's sum does not fit; nothing is changed then.
    pub fn merge(&mut self, o: &Report) -> Result<(), Overflow> {
        let mut errors = self.errors;
        errors.merge(&o.errors)?;
        let mut stages = self.stages.clone();
        merge_stages(&mut stages, &o.stages)?;
        let tls = match (&self.tls, &o.tls) {
            (Some(a), Some(b)) => Some(a.plus(b)?),
            (a, b) => a.as_ref().or(b.as_ref()).cloned(),
        };
        let connects = self.connects.plus(&o.connects)?;
        let counts = [
            add("connected", self.connected, o.connected)?,
            add("reconnects", self.reconnects, o.reconnects)?,
            add("messages", self.messages, o.messages)?,
            add("bytes", self.bytes, o.bytes)?,
            add("sent", self.sent, o.sent)?,
            add("reordered", self.reordered, o.reordered)?,
            add("late", self.late, o.late)?,
            add("mismatch_upper", self.mismatch_upper, o.mismatch_upper)?,
            add("rcvbuf_drops", self.rcvbuf_drops, o.rcvbuf_drops)?,
        ];
        self.errors = errors;
        self.tls = tls;
        self.stages = stages;
        self.connects = connects;
        [
            self.connected,
            self.reconnects,
            self.messages,
            self.bytes,
            self.sent,
            self.reordered,
            self.late,
            self.mismatch_upper,
            self.rcvbuf_drops,
        ] = counts;
        self.duration = self.duration.max(o.duration);
        self.ramp = self.ramp.max(o.ramp);
        self.interrupted |= o.interrupted;
        self.window = match (self.window, o.window) {
            (Some(a), Some(b)) => Some(WallWindow {
                start: a.start.min(b.start),
                end: a.end.max(b.end),
            }),
            (a, b) => a.or(b),
        };
        add_histogram(&mut self.latency, &o.latency);
        if self.first_error.is_none() {
            self.first_error.clone_from(&o.first_error);
        }
        Ok(())
    }

    /// The measured window as offsets from the run's start (`run_start`),
    /// the frame of the intervals; `None` for a run that never measured,
    /// or a report read back.
    pub fn window_offsets(&self) -> Option<(Duration, Duration)> {
        let (start, w) = (self.run_start?, self.window?);
        let offset = |t: SystemTime| t.duration_since(start).unwrap_or_default();
        Some((offset(w.start), offset(w.end)))
    }

    /// Connections that came up per second of the measured window.
    pub fn connects_per_sec(&self) -> f64 {
        per_sec(self.connects.measured, self.duration)
    }

    /// Messages per second over the measured window.
    pub fn msgs_per_sec(&self) -> f64 {
        per_sec(self.messages, self.duration)
    }

    /// Reply bytes per second over the measured window.
    pub fn bytes_per_sec(&self) -> f64 {
        per_sec(self.bytes, self.duration)
    }

    /// Open loop: the share of the messages its schedule asked for in the
    /// window (`rate` times the window) that went out; `None` in closed
    /// loop or without a window.
    pub fn achieved_share(&self) -> Option<f64> {
        let asked = self.rate? * self.duration.as_secs_f64();
        (asked > 0.0).then(|| self.sent as f64 / asked)
    }

    /// True when the generator fell behind its own schedule: it sent less
    /// than [`BEHIND_BELOW`] of what was due, so the server was offered
    /// less than `--rate`.
    pub fn is_behind(&self) -> bool {
        self.achieved_share().is_some_and(|s| s < BEHIND_BELOW)
    }

    /// Lost messages as a percentage of those sent in the window (100 when
    /// some were lost but none sent, 0 when neither).
    pub fn loss_percent(&self) -> f64 {
        if self.sent == 0 {
            // Losses with nothing sent in the window (they came from the
            // drain) are no small share: count them as all lost.
            if self.errors.lost > 0 {
                100.0
            } else {
                0.0
            }
        } else {
            self.errors.lost as f64 * 100.0 / self.sent as f64
        }
    }

    /// True when the run passes: it happened, no hard errors, and loss is
    /// zero for TCP or within `max_loss_percent` for UDP.
    pub fn is_ok(&self) -> bool {
        if self.failure.is_some()
            || !self.failed_parts.is_empty()
            || self.interrupted
            || self.errors.hard() > 0
            || self.connected == 0
            || self.messages == 0
        {
            // No reply measured is no verdict: nothing was shown to work.
            return false;
        }
        match self.proto {
            Proto::Tcp | Proto::Tls => self.errors.lost == 0,
            Proto::Udp => self.loss_percent() <= self.max_loss_percent,
        }
    }

    /// What a `connect` error is for this protocol: a TCP connection that
    /// never came up, or a UDP socket told "port unreachable".
    pub(crate) fn connect_word(&self) -> &'static str {
        match self.proto {
            Proto::Tcp | Proto::Tls => "connect",
            Proto::Udp => "unreachable",
        }
    }

    /// The lost count with its share of the window's messages. When the
    /// window sent none (a percentage of nothing means nothing), the count
    /// stands alone, and any loss is said to be of messages sent outside
    /// the window: a connection that ends loses what it has in flight,
    /// whenever that went out. Never "none sent" beside a count of
    /// messages, which would read as a contradiction after `mismatch N`.
    pub(crate) fn loss_text(&self) -> String {
        if self.sent == 0 {
            return match self.errors.lost {
                0 => "0".into(),
                lost => format!("{lost} (all sent outside the measured window)"),
            };
        }
        format!(
            "{} ({:.2}% of {} sent in the window)",
            self.errors.lost,
            self.loss_percent(),
            self.sent
        )
    }

    /// The errors by kind, as both the text report and the failure line
    /// say them: `connect 0, reset 0, ..., io 0` (`connect 0, tls 0, ...`
    /// for TLS).
    pub(crate) fn errors_text(&self) -> String {
        let e = &self.errors;
        let tls = if self.proto == Proto::Tls || e.tls > 0 {
            format!(", tls {}", e.tls)
        } else {
            String::new()
        };
        format!(
            "{} {}{tls}, reset {}, timeout {}, mismatch {}, lost {}, closed {}, io {}",
            self.connect_word(),
            e.connect,
            e.reset,
            e.timeout,
            e.mismatch,
            self.loss_text(),
            e.closed,
            e.io
        )
    }

    /// One line saying why the run failed, or `None` if it passed.
    pub fn failure_summary(&self) -> Option<String> {
        if self.is_ok() {
            return None;
        }
        if let Some(f) = &self.failure {
            return Some(f.clone());
        }
        let url = self.target_text();
        if !self.failed_parts.is_empty() {
            return Some(format!(
                "{url}: {} of the merged parts failed: {}",
                self.failed_parts.len(),
                self.failed_parts.join("; ")
            ));
        }
        if self.interrupted {
            return Some(format!(
                "{url}: interrupted after {:.2} s of measuring; the report covers the run so far",
                self.duration.as_secs_f64()
            ));
        }
        let is_udp_unreachable =
            self.proto == Proto::Udp && self.connected > 0 && self.errors.connect >= self.connected;
        if is_udp_unreachable && self.messages == 0 {
            return Some(format!(
                "cannot reach {url}: port unreachable (ICMP) on all {} sockets",
                self.connected
            ));
        }
        if self.connected == 0 {
            let why = self
                .first_error
                .as_deref()
                .unwrap_or("no connection came up");
            if self.errors.tls > 0 {
                return Some(format!(
                    "{url}: no TLS handshake succeeded ({} failed): {why}",
                    self.errors.tls
                ));
            }
            return Some(format!("cannot reach {url}: {why}"));
        }
        if self.messages == 0 && self.errors.total() == 0 {
            return Some(format!(
                "{url}: no reply completed in the {:.2} s window: nothing was measured \
                 (a longer --duration, or a higher --rate?)",
                self.duration.as_secs_f64()
            ));
        }
        let e = &self.errors;
        let mut s = format!("{url}: ");
        if self.proto == Proto::Udp && self.loss_percent() > self.max_loss_percent {
            // Name the threshold crossed, and what this host dropped itself.
            let _ = write!(
                s,
                "loss {:.2}% above --max-loss {}%",
                self.loss_percent(),
                self.max_loss_percent
            );
            if self.rcvbuf_drops > 0 {
                let _ = write!(
                    s,
                    " ({} replies dropped in this host's receive buffers)",
                    self.rcvbuf_drops
                );
            }
            s.push_str("; ");
        }
        let _ = write!(s, "errors: {}", self.errors_text());
        if e.duplicate > 0 {
            let _ = write!(s, ", duplicate {}", e.duplicate);
        }
        if let Some(first) = &self.first_error {
            let _ = write!(s, "; first: {first}");
        }
        if e.mismatch > 0 && self.mismatch_upper == e.mismatch {
            s.push_str("; the server seems to uppercase: try --expect upper");
        }
        Some(s)
    }

    /// (p50, p90, p99, p99.9, max) latency in microseconds; zeros if empty.
    pub fn percentiles_us(&self) -> [u64; 5] {
        percentiles(&self.latency)
    }
}

/// (p50, p90, p99, p99.9, max) of `h`; zeros if empty.
fn percentiles(h: &Histogram<u64>) -> [u64; 5] {
    if h.is_empty() {
        return [0; 5];
    }
    [
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.9),
        h.value_at_quantile(0.99),
        h.value_at_quantile(0.999),
        h.max(),
    ]
}

/// Adds `o` into `h`. Our histograms and those read back from reports
/// share the bounds of [`new_histogram`], so adding cannot fail; should
/// it (a report's histogram of another range, as read back), the values
/// are recorded one by one, saturating.
pub(crate) fn add_histogram(h: &mut Histogram<u64>, o: &Histogram<u64>) {
    if h.add(o).is_err() {
        for v in o.iter_recorded() {
            h.saturating_record_n(v.value_iterated_to(), v.count_at_value());
        }
    }
}

/// `count` per second of `window`; 0 for an empty window.
fn per_sec(count: u64, window: Duration) -> f64 {
    let secs = window.as_secs_f64();
    if secs > 0.0 {
        count as f64 / secs
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::report_text::sub_buckets;

    fn report() -> Report {
        let mut r = Report::new(Proto::Tcp, "127.0.0.1:7".parse().unwrap(), 2);
        r.connected = 2;
        r.duration = Duration::from_secs(2);
        r.messages = 1000;
        r.bytes = 64_000;
        r.sent = 1000;
        for v in 1..=1000u64 {
            r.latency.record(v).unwrap();
        }
        r
    }

    #[test]
    fn loss_is_a_share_of_the_window_or_stands_alone_when_none_was_sent() {
        let mut r = report();
        r.errors.lost = 10;
        assert_eq!(r.loss_text(), "10 (1.00% of 1000 sent in the window)");
        r.sent = 0;
        assert_eq!(r.loss_text(), "10 (all sent outside the measured window)");
        // Mismatches that end connections count whatever the window; the
        // loss beside them says nothing that contradicts them.
        r.errors.lost = 0;
        r.errors.mismatch = 2;
        let errors = r.errors_text();
        assert!(errors.contains("mismatch 2, lost 0, closed"), "{errors}");
        assert!(!errors.contains("none sent"), "{errors}");
        r.errors.lost = 10;
        r.proto = Proto::Udp;
        let why = r.failure_summary().expect("lost messages fail");
        assert!(why.contains("errors: unreachable 0"), "{why}");
    }

    #[test]
    fn a_udp_loss_failure_names_the_threshold_it_crossed() {
        let mut r = report();
        r.proto = Proto::Udp;
        r.errors.lost = 477;
        r.rcvbuf_drops = 470;
        let why = r.failure_summary().expect("47.7% fails");
        assert!(
            why.contains("loss 47.70% above --max-loss 1% (470 replies dropped"),
            "{why}"
        );
    }

    #[test]
    fn an_open_loop_run_that_sent_under_95_percent_is_behind() {
        let mut r = report();
        assert_eq!(r.achieved_share(), None, "closed loop has no schedule");
        r.rate = Some(500.0);
        assert_eq!(r.achieved_share(), Some(1.0));
        assert!(!r.is_behind());
        r.rate = Some(1000.0);
        assert_eq!(r.achieved_share(), Some(0.5));
        assert!(r.is_behind());
    }

    #[test]
    fn a_run_that_measured_no_reply_fails_and_says_so() {
        let mut r = report();
        r.messages = 0;
        r.bytes = 0;
        assert!(!r.is_ok());
        let why = r.failure_summary().expect("a reason");
        assert!(why.contains("no reply completed"), "{why}");
    }

    #[test]
    fn rates_and_percentiles_follow_the_counters() {
        let r = report();
        assert_eq!(r.msgs_per_sec(), 500.0);
        assert_eq!(r.bytes_per_sec(), 32_000.0);
        let [p50, p90, p99, p999, max] = r.percentiles_us();
        assert_eq!((p50, p90, p99, p999, max), (500, 900, 990, 999, 1000));
        assert!(r.is_ok());
        assert!(r.to_string().contains("result     ok"));
    }

    #[test]
    fn any_tcp_error_fails_but_udp_tolerates_some_loss() {
        let mut r = report();
        r.errors.lost = 1;
        assert!(!r.is_ok());
        r.proto = Proto::Udp;
        assert!(r.is_ok(), "0.1% loss is within 1%");
        r.errors.lost = 20;
        assert!(!r.is_ok(), "2% loss is not");
        r.errors.lost = 0;
        r.errors.mismatch = 1;
        assert!(!r.is_ok());
        assert!(r.failure_summary().unwrap().contains("mismatch 1"));
    }

    #[test]
    fn json_has_every_field_and_escapes_strings() {
        let mut r = report();
        r.first_error = Some("say \"hi\"\n".into());
        r.errors.reset = 1;
        let j = r.to_json();
        for key in [
            "\"connections\":2",
            "\"duration_s\":2,",
            "\"messages\":1000",
            "\"bytes\":64000",
            "\"msgs_per_sec\":500,",
            "\"bytes_per_sec\":32000,",
            "\"latency_us\":{\"p50\":500,\"p90\":900,\"p99\":990,\"p999\":999,\"max\":1000,",
            "\"errors\":{\"connect\":0,\"reset\":1,\"timeout\":0,\"mismatch\":0,\"lost\":0,",
            "\"ok\":false",
            "say \\\"hi\\\"\\n",
        ] {
            assert!(j.contains(key), "{key} missing in {j}");
        }
        assert!(!j.contains('\n'));
        assert_eq!(sub_buckets(3), 2048);
    }

    #[test]
    fn merge_adds_counts_and_histograms() {
        let mut a = report();
        let b = report();
        a.merge(&b).expect("fits");
        assert_eq!((a.connected, a.messages, a.latency.len()), (4, 2000, 2000));
        assert_eq!(a.duration, Duration::from_secs(2));
    }

    #[test]
    fn merge_adds_handshake_counts_and_histograms() {
        let tls = |handshakes: u64, us: u64, verified: bool| {
            let mut t = TlsReport::new("localhost".into(), verified);
            for _ in 0..handshakes {
                t.record(TlsVersion::Tls13, false, Duration::from_micros(us));
            }
            t
        };
        let mut a = report();
        a.tls = Some(tls(3, 1000, true));
        let mut b = report();
        b.tls = Some(tls(2, 5000, false));
        b.tls
            .as_mut()
            .expect("tls")
            .record(TlsVersion::Tls12, true, Duration::ZERO);
        a.merge(&b).expect("fits");
        let t = a.tls.expect("tls");
        assert_eq!((t.handshakes, t.resumed, t.tls12, t.tls13()), (6, 1, 1, 5));
        assert_eq!(t.latency.len(), 6);
        assert_eq!(t.latency.max(), 5003, "within the histogram's precision");
        assert!(!t.verified, "one unverified part makes the sum unverified");
        assert_eq!(t.version(), Some("mixed"));
        // A merged report starts from none and takes the first part's.
        let mut empty = Report::new(Proto::Tls, "127.0.0.1:7".parse().unwrap(), 0);
        let mut c = report();
        c.tls = Some(tls(4, 10, true));
        empty.merge(&c).expect("fits");
        assert_eq!(empty.tls.expect("tls").handshakes, 4);
    }

    #[test]
    fn a_run_whose_every_handshake_failed_says_so() {
        let mut r = report();
        r.proto = Proto::Tls;
        (r.connected, r.messages, r.sent) = (0, 0, 0);
        r.errors.tls = 2;
        r.first_error = Some("tls conn 0: certificate verification failed: expired".into());
        let why = r.failure_summary().expect("fails");
        assert!(
            why.contains("no TLS handshake succeeded (2 failed): tls conn 0: certificate"),
            "{why}"
        );
        assert!(r.errors_text().contains("connect 0, tls 2, reset 0"));
    }

    #[test]
    fn sums_that_do_not_fit_are_refused_and_change_nothing() {
        let mut a = report();
        let mut b = report();
        b.sent = u64::MAX;
        assert_eq!(a.merge(&b).unwrap_err(), Overflow("sent"));
        assert_eq!((a.sent, a.messages), (1000, 1000), "untouched");
        b.sent = 0;
        b.errors.mismatch = u64::MAX;
        a.errors.mismatch = 1;
        assert_eq!(a.merge(&b).unwrap_err(), Overflow("errors.mismatch"));
        assert_eq!(a.errors.mismatch, 1);
    }

    #[test]
    fn error_totals_saturate_instead_of_wrapping_to_a_pass() {
        let mut r = report();
        r.errors.mismatch = u64::MAX;
        r.errors.reset = 1;
        assert_eq!(r.errors.hard(), u64::MAX);
        assert!(!r.is_ok());
    }

    #[test]
    fn distribution_ends_at_100_percent_with_the_total() {
        let text = report().percentile_distribution();
        let last = text
            .lines()
            .rfind(|l| !l.starts_with('#') && !l.is_empty())
            .unwrap();
        assert!(last.contains("1.000000000000       1000"), "{last}");
    }
}
