//! The load generator: its own mio poll loop driving many verified client
//! connections, with the same shape as the server's loop plus the send
//! schedule. `run` splits the connections over `threads` such loops (one
//! by default), collects their reports and merges them.
//!
//! A loop goes through phases: `Ramp` (connections are started, at most
//! [`MAX_HANDSHAKES`] at once and at `--connect-rate`, failures retried),
//! `Warmup` (traffic not counted), `Measure`, `Drain` (nothing new is sent;
//! replies in flight are awaited for a bounded grace period), `Done`.
//! The loop itself is in `event_loop`; the clients (TCP and UDP) in
//! `client`; payloads in [`payload`]; the figures in [`report`].
//!
//! Start reading at [`run`].

pub(crate) mod client;
pub mod compare;
mod event_loop;
pub mod find_max;
pub mod hdr_v2;
pub mod merge;
pub mod output;
pub mod payload;
pub mod plot;
pub mod report;
mod report_json;
mod report_text;
pub mod split;
pub mod stages;
#[cfg(target_os = "linux")]
pub(crate) mod timer;

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::AtomicBool;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use log::info;

use crate::mode::Mode;
use crate::tls_client::TlsConnector;
pub use client::greeting::ProxyVersion;
use event_loop::Loop;
pub use report::{Completions, Connects, Interval, Recent, Report, TestSettings, WallWindow};
pub use report_text::percentile_distribution;
use split::Segment;

/// Most TCP handshakes one loop has in progress at once. Keeps a ramp of
/// thousands of connections from overflowing the server's accept backlog.
pub const MAX_HANDSHAKES: usize = 128;

/// The largest UDP payload over IPv4.
pub const MAX_UDP_SIZE: usize = 65_507;

/// The largest TCP message.
pub const MAX_TCP_SIZE: usize = 16 << 20;

/// Most connections (UDP: sockets) in one run: beyond what ephemeral ports
/// allow towards one server anyway. The open-file limit usually binds first.
pub const MAX_CONNECTIONS: usize = 1_000_000;

/// Descriptors a run needs besides its connections: stdio, one poll and one
/// timer per loop, the log, the output files. Connections get the rest of
/// the open-file limit.
pub const RESERVED_FDS: u64 = 32 + 2 * MAX_THREADS as u64;

/// Most messages in flight per connection (`--pipeline`): as many as the
/// open loop allows, and far more than a connection's socket buffers hold
/// at the smallest message size.
pub const MAX_PIPELINE: usize = client::contract::OPEN_LOOP_MAX_IN_FLIGHT;

/// The highest `--rate`: several times what one process sends, so it
/// never binds a real run, while the schedule stays in whole nanoseconds.
pub const MAX_RATE: f64 = 10_000_000.0;

/// The lowest `--rate` and `--connect-rate`: one a quarter hour.
pub const MIN_RATE: f64 = 0.001;

/// The highest `--connect-rate`.
pub const MAX_CONNECT_RATE: f64 = 1_000_000.0;

/// The most messages one connection carries under `--churn`: past this a
/// connection lives for the whole run anyway.
pub const MAX_CHURN: u64 = 1_000_000_000;

/// Most poll loops (`--threads`).
pub const MAX_THREADS: usize = 256;

/// The longest `--duration` and `--warmup`: a year keeps every deadline
/// far inside what `Instant` can hold.
pub const MAX_WINDOW: Duration = Duration::from_secs(365 * 24 * 3600);

/// The longest `--connect-timeout`, `--drain-timeout` and `--udp-timeout`.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// The shortest `--udp-timeout` and `--connect-timeout`.
pub const MIN_TIMEOUT: Duration = Duration::from_millis(1);

/// How far ahead `--start-at` may be: a day. A later start is more likely
/// a typo than a plan, and the bound keeps the run's end bounded too.
pub const MAX_START_AHEAD: Duration = Duration::from_secs(24 * 3600);

/// How far in the past `--start-at` may be and still run: a start missed
/// by more than this would begin the segments' windows apart.
pub const MAX_START_LATE: Duration = Duration::from_secs(1);

/// Raises this process's soft open-file limit to its hard limit, so that
/// as many connections as the hard limit allows can run without `ulimit
/// -n` first (the usual soft limit is 1,024); returns the limit now in
/// force. Call it before [`LoadConfig::validate`], which checks against it.
///
/// # Errors
///
/// The OS error when the limit cannot be read or set.
pub fn raise_open_file_limit() -> io::Result<u64> {
    crate::net::raise_open_file_limit()
}

/// TCP, UDP or TLS; in JSON `"tcp"`, `"udp"` or `"tls"`, as in a URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// One stream per connection; replies may come in any chunking.
    Tcp,
    /// One datagram per message on a connected socket.
    Udp,
    /// One TLS session over TCP per connection: a stream like TCP's,
    /// after a handshake.
    Tls,
}

impl Proto {
    /// What a run of this protocol has many of, for people: UDP has no
    /// connections, only sockets.
    pub fn peers(self) -> &'static str {
        match self {
            Proto::Tcp | Proto::Tls => "connections",
            Proto::Udp => "sockets",
        }
    }

    /// TCP and TLS: a stream per connection, which loses nothing on its
    /// own.
    pub fn is_stream(self) -> bool {
        self != Proto::Udp
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Tls => "tls",
        })
    }
}

/// The server to load: protocol and address (`tcp://127.0.0.1:7007`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    /// TCP or UDP.
    pub proto: Proto,
    /// The server's address.
    pub addr: SocketAddr,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.proto, self.addr)
    }
}

/// Everything a load run needs to know.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// The server: the address the run uses.
    pub target: Target,
    /// The name the target was given by, when it was a name
    /// (`echo-reactor`, `localhost`); `target` holds the address it
    /// resolved to. `None` for an IP address.
    pub host: Option<String>,
    /// Client connections (UDP: sockets) of the whole test, over every
    /// segment and loop; this process runs its [`segment`](Self::segment)'s
    /// share ([`own_connections`](Self::own_connections)).
    pub connections: usize,
    /// Length of the measured window.
    pub duration: Duration,
    /// Bytes per message.
    pub size: usize,
    /// Messages in flight per connection in closed loop.
    pub pipeline: usize,
    /// Messages per second of the whole test (open loop); `None` for
    /// closed loop. This process sends its segment's share
    /// ([`own_rate`](Self::own_rate)).
    pub rate: Option<f64>,
    /// What the server does to each byte.
    pub expect: Mode,
    /// New connections per second, for this process (each segment of a
    /// split test ramps at this rate); `None`: as fast as
    /// [`MAX_HANDSHAKES`] allows.
    pub connect_rate: Option<f64>,
    /// Traffic before the measured window that is not counted.
    pub warmup: Duration,
    /// Poll loops, each with its share of the connections.
    pub threads: usize,
    /// UDP passes with at most this loss, in percent.
    pub max_loss_percent: f64,
    /// How long the drain waits for replies in flight after the window.
    pub drain_timeout: Duration,
    /// How long a UDP request waits for its reply before it is lost.
    pub udp_reply_timeout: Duration,
    /// How long a TCP connection may take to come up, retries included,
    /// counted from its turn in the ramp; then it is a connect error.
    pub connect_timeout: Duration,
    /// Keep the run second by second in [`Report::intervals`].
    pub record_intervals: bool,
    /// Replace a connection that ended in error (reset, closed, mismatch)
    /// with a new one, so the offered load holds; the error still counts.
    pub reconnect: bool,
    /// Which part of a split test this process runs (`--segment`);
    /// [`Segment::WHOLE`] when the test is not split.
    pub segment: Segment,
    /// When warm-up begins, the same instant for every segment
    /// (`--start-at`); connections come up before it. `None`: as soon as
    /// the ramp is done.
    pub start_at: Option<SystemTime>,
    /// Local addresses the connections are bound to, in turn by
    /// connection number (`--source`); empty: the kernel's choice.
    pub sources: Vec<IpAddr>,
    /// `tls://`: what the connections trust and which name they check;
    /// `None` for TCP and UDP, and required for TLS.
    pub tls: Option<TlsConnector>,
    /// Each TCP or TLS connection begins with a PROXY header of this
    /// version, naming its own addresses (`--proxy-protocol`); `None`:
    /// no header.
    pub proxy_protocol: Option<ProxyVersion>,
    /// `--stages`: open loop on a ramp of the whole test's rate, the
    /// window as long as the stages together (set `duration` to
    /// [`stages_length`](Self::stages_length)); empty: no ramp.
    pub stages: Vec<stages::Stage>,
    /// `--churn`: each TCP or TLS connection closes after this many
    /// verified replies and a new one opens in its place; `None`: a
    /// connection lives for the whole run.
    pub churn: Option<u64>,
    /// `--churn-reset`: a churned connection ends with a reset
    /// (`SO_LINGER` 0) instead of FIN, so no TIME_WAIT stays behind.
    pub churn_reset: bool,
}

impl LoadConfig {
    /// The defaults of the command line against `target`: 100
    /// connections, 10 s, 64 B, pipeline 1, closed loop, expect echo.
    pub fn new(target: Target) -> LoadConfig {
        LoadConfig {
            target,
            host: None,
            connections: 100,
            duration: Duration::from_secs(10),
            size: 64,
            pipeline: 1,
            rate: None,
            expect: Mode::Echo,
            connect_rate: None,
            warmup: Duration::ZERO,
            threads: 1,
            max_loss_percent: 1.0,
            drain_timeout: Duration::from_secs(2),
            udp_reply_timeout: Duration::from_millis(500),
            connect_timeout: Duration::from_secs(3),
            record_intervals: false,
            reconnect: false,
            segment: Segment::WHOLE,
            start_at: None,
            sources: Vec::new(),
            tls: None,
            proxy_protocol: None,
            stages: Vec::new(),
            churn: None,
            churn_reset: false,
        }
    }

    /// The stages' total length: the window of a `--stages` run.
    pub fn stages_length(&self) -> Duration {
        self.stages.iter().map(|s| s.duration).sum()
    }

    /// The connections this process runs: its segment's share of
    /// [`connections`](Self::connections).
    pub fn own_connections(&self) -> usize {
        let (_, own) = self.segment.share(self.connections as u64);
        usize::try_from(own).unwrap_or(usize::MAX)
    }

    /// The messages per second this process sends: its segment's share
    /// of [`rate`](Self::rate); `None` in closed loop.
    pub fn own_rate(&self) -> Option<f64> {
        self.rate
            .map(|r| self.segment.rate_share(r, self.connections as u64))
    }

    /// The settings a part of a split test shares with the others, as
    /// reports carry them so that `merge` can check parts belong together.
    pub fn test_settings(&self) -> TestSettings {
        TestSettings {
            connections: self.connections,
            rate: self.rate,
            size: self.size,
            pipeline: self.pipeline,
            expect: self.expect,
            duration: self.duration,
            warmup: self.warmup,
            start_at: self.start_at,
            max_loss_percent: self.max_loss_percent,
            churn: self.churn,
        }
    }

    /// Checks that the numbers make a run: every setting within its
    /// documented range (the constants of this module), and the
    /// connections within the open-file limit.
    ///
    /// # Errors
    ///
    /// [`LoadError::Invalid`] naming the first bad setting.
    pub fn validate(&self) -> Result<(), LoadError> {
        self.validate_with_fd_limit(crate::net::open_file_limit())?;
        self.validate_start(SystemTime::now())?;
        self.validate_sources()
    }

    /// Checks that every `--source` address is one of this host's, by
    /// binding a socket to it: a bogus one would otherwise fail every
    /// connect with the same `EADDRNOTAVAIL` as ports running out.
    ///
    /// # Errors
    ///
    /// [`LoadError::Invalid`] naming the first address that cannot be bound.
    pub fn validate_sources(&self) -> Result<(), LoadError> {
        for &source in &self.sources {
            // A bind accepts these too, but no connection can come from
            // them: the kernel would pick another address and the run
            // would not use the one asked for.
            let not_unicast = match source {
                IpAddr::V4(a) => a.is_unspecified() || a.is_multicast() || a.is_broadcast(),
                IpAddr::V6(a) => a.is_unspecified() || a.is_multicast(),
            };
            if not_unicast {
                return Err(LoadError::Invalid(format!(
                    "source {source} (--source) is not a unicast address of this host"
                )));
            }
            if let Err(e) = std::net::UdpSocket::bind(SocketAddr::new(source, 0)) {
                return Err(LoadError::Invalid(format!(
                    "source {source} (--source) is not an address of this host: {e}"
                )));
            }
        }
        Ok(())
    }

    /// Checks `--start-at` against the wall-clock time `now`: at most
    /// [`MAX_START_LATE`] past and [`MAX_START_AHEAD`] ahead.
    ///
    /// # Errors
    ///
    /// [`LoadError::Invalid`] saying how far off the start is.
    pub fn validate_start(&self, now: SystemTime) -> Result<(), LoadError> {
        let Some(start) = self.start_at else {
            return Ok(());
        };
        let at = split::unix_seconds(start);
        match start.duration_since(now) {
            Err(e) if e.duration() > MAX_START_LATE => Err(LoadError::Invalid(format!(
                "start time {at:.3} (--start-at) passed {:.3} s ago; the other segments have begun: pick a later one",
                e.duration().as_secs_f64()
            ))),
            Ok(ahead) if ahead > MAX_START_AHEAD => Err(LoadError::Invalid(format!(
                "start time {at:.3} (--start-at) is {:.0} s ahead, more than a day",
                ahead.as_secs_f64()
            ))),
            _ => Ok(()),
        }
    }

    /// [`validate`](Self::validate) against a given open-file limit
    /// (`None`: unlimited).
    ///
    /// # Errors
    ///
    /// [`LoadError::Invalid`] naming the first bad setting.
    pub fn validate_with_fd_limit(&self, fd_limit: Option<u64>) -> Result<(), LoadError> {
        let bad = |s: String| Err(LoadError::Invalid(s));
        if !(1..=MAX_CONNECTIONS).contains(&self.connections) {
            return bad(format!("connections must be 1 to {MAX_CONNECTIONS}"));
        }
        let own = self.own_connections();
        if own == 0 {
            return bad(format!(
                "segment {} gets no connection: {} connections cannot be split into {} segments",
                self.segment, self.connections, self.segment.count
            ));
        }
        if let Some(limit) = fd_limit {
            let room = limit.saturating_sub(RESERVED_FDS);
            if own as u64 > room {
                return bad(format!(
                    "{own} {} need more descriptors than the open-file limit ({limit}) allows: at most {room} (raise the limit: ulimit -n, and ulimit -Hn as root)",
                    self.target.proto.peers()
                ));
            }
        }
        if let Some(wrong) = self
            .sources
            .iter()
            .find(|a| a.is_ipv4() != self.target.addr.is_ipv4())
        {
            return bad(format!(
                "source {wrong} (--source) and target {} are not the same IP version",
                self.target.addr.ip()
            ));
        }
        if self.size == 0 {
            return bad("size must be at least 1 byte".into());
        }
        match self.target.proto {
            Proto::Udp if !(payload::MIN_UDP_SIZE..=MAX_UDP_SIZE).contains(&self.size) => {
                return bad(format!(
                    "udp size must be {} to {MAX_UDP_SIZE} bytes (the sequence number needs {} bytes)",
                    payload::MIN_UDP_SIZE,
                    payload::MIN_UDP_SIZE
                ))
            }
            Proto::Tcp | Proto::Tls if self.size > MAX_TCP_SIZE => {
                return bad(format!("size must be at most {MAX_TCP_SIZE} bytes"))
            }
            _ => {}
        }
        match (self.target.proto, &self.tls) {
            (Proto::Tls, None) => return bad("a tls:// target needs TLS settings".into()),
            (Proto::Tcp | Proto::Udp, Some(_)) => {
                return bad(format!(
                    "TLS settings are for tls:// targets, not {}://",
                    self.target.proto
                ))
            }
            _ => {}
        }
        self.validate_churn()?;
        if let (Some(v), Proto::Udp) = (self.proxy_protocol, self.target.proto) {
            return bad(format!(
                "a PROXY header ({v}) opens a TCP or TLS connection; UDP has none"
            ));
        }
        if !self.expect.is_byte_transform() {
            return bad(format!(
                "expect must be echo or upper: a {} server does not answer byte for byte",
                self.expect
            ));
        }
        if !(1..=MAX_PIPELINE).contains(&self.pipeline) {
            return bad(format!("pipeline must be 1 to {MAX_PIPELINE}"));
        }
        if self.threads == 0 || self.threads > MAX_THREADS.min(own) {
            return bad(format!(
                "threads must be 1 to {MAX_THREADS}, and at most the number of connections (of this segment)"
            ));
        }
        if self.duration.is_zero() || self.duration > MAX_WINDOW {
            return bad("duration must be more than 0 seconds and at most a year".into());
        }
        if self.warmup > MAX_WINDOW {
            return bad("warmup must be at most a year".into());
        }
        if let Some(r) = self.rate {
            if !(MIN_RATE..=MAX_RATE).contains(&r) {
                return bad(format!(
                    "rate must be {MIN_RATE} to {MAX_RATE} messages per second"
                ));
            }
        }
        self.validate_stages()?;
        if let Some(r) = self.connect_rate {
            if !(MIN_RATE..=MAX_CONNECT_RATE).contains(&r) {
                return bad(format!(
                    "connect rate must be {MIN_RATE} to {MAX_CONNECT_RATE} connections per second"
                ));
            }
        }
        if !(0.0..=100.0).contains(&self.max_loss_percent) {
            return bad("max loss must be between 0 and 100 percent".into());
        }
        for (name, d, min) in [
            ("udp timeout", self.udp_reply_timeout, MIN_TIMEOUT),
            ("connect timeout", self.connect_timeout, MIN_TIMEOUT),
            ("drain timeout", self.drain_timeout, Duration::ZERO),
        ] {
            if d < min || d > MAX_TIMEOUT {
                return bad(format!(
                    "{name} must be {} to {} seconds",
                    min.as_secs_f64(),
                    MAX_TIMEOUT.as_secs()
                ));
            }
        }
        Ok(())
    }

    /// `--stages`: 1 to [`MAX_STAGES`](stages::MAX_STAGES) stages, each
    /// longer than 0, each target 0 or within `--rate`'s range, some above
    /// 0; no `--rate` or warm-up beside them (the ramp from 0 is the
    /// warm-up), and the window their sum.
    fn validate_stages(&self) -> Result<(), LoadError> {
        let bad = |s: String| Err(LoadError::Invalid(s));
        if self.stages.is_empty() {
            return Ok(());
        }
        if self.stages.len() > stages::MAX_STAGES {
            return bad(format!("stages: at most {} stages", stages::MAX_STAGES));
        }
        if self.rate.is_some() {
            return bad("stages and rate exclude each other: the stages set the rate".into());
        }
        if !self.warmup.is_zero() {
            return bad("stages and warmup exclude each other: the ramp from 0 warms up".into());
        }
        for s in &self.stages {
            if s.duration.is_zero() {
                return bad("stages: each stage must last more than 0 seconds".into());
            }
            if s.target != 0.0 && !(MIN_RATE..=MAX_RATE).contains(&s.target) {
                return bad(format!(
                    "stages: a target must be 0 or {MIN_RATE} to {MAX_RATE} messages per second"
                ));
            }
        }
        if self.stages.iter().all(|s| s.target == 0.0) {
            return bad("stages: at least one stage must have a target above 0".into());
        }
        if self.duration != self.stages_length() {
            return bad("stages: the duration must be the stages' sum".into());
        }
        Ok(())
    }

    /// `--churn` and `--churn-reset`: a count in range, for TCP or TLS.
    fn validate_churn(&self) -> Result<(), LoadError> {
        let bad = |s: String| Err(LoadError::Invalid(s));
        match (self.churn, self.target.proto) {
            (Some(n), _) if !(1..=MAX_CHURN).contains(&n) => bad(format!(
                "churn must be 1 to {MAX_CHURN} messages per connection"
            )),
            (Some(_), Proto::Udp) => bad(
                "--churn closes and reopens TCP or TLS connections; a UDP socket has no \
                 connection to churn"
                    .into(),
            ),
            (None, _) if self.churn_reset => {
                bad("--churn-reset says how churned connections close: it needs --churn".into())
            }
            _ => Ok(()),
        }
    }

    /// Open loop: the time between two messages of one connection.
    /// `None` in closed loop, or for a rate out of range.
    pub fn message_interval(&self) -> Option<Duration> {
        let rate = self.rate?;
        Duration::try_from_secs_f64(self.connections as f64 / rate).ok()
    }

    /// The connection numbers loop `index` starts, in increasing order:
    /// every `threads`-th of the segment's own range, from `index`. The
    /// one place numbers are handed out: a number is half of every
    /// payload's key, so no two clients of a test, over all its segments,
    /// may share one.
    pub(crate) fn connection_ids(&self, index: usize) -> Vec<u64> {
        let (first, own) = self.segment.share(self.connections as u64);
        (index as u64..own)
            .step_by(self.threads.max(1))
            .map(|i| first + i)
            .collect()
    }

    /// `--connect-rate`: the time between two connects of one loop.
    /// `None` without a connect rate, or for one out of range.
    pub fn connect_interval(&self) -> Option<Duration> {
        let rate = self.connect_rate?;
        Duration::try_from_secs_f64(self.threads as f64 / rate).ok()
    }
}

/// A load run could not happen.
#[derive(Debug)]
pub enum LoadError {
    /// The configuration makes no run (zero connections, size 0, ...).
    Invalid(String),
    /// The poll could not be created.
    Setup(&'static str, io::Error),
    /// `poll` itself failed.
    Poll(io::Error),
    /// A loop thread panicked (a bug).
    LoopPanicked,
    /// The loops' counts did not add up within 64 bits (never in a real
    /// run; a bug if it happens).
    Overflow(report::Overflow),
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Invalid(s) => write!(f, "invalid load settings: {s}"),
            LoadError::Setup(what, e) => write!(f, "cannot set up {what}: {e}"),
            LoadError::Poll(e) => write!(f, "poll failed: {e}"),
            LoadError::LoopPanicked => f.write_str("a load loop panicked"),
            LoadError::Overflow(e) => write!(f, "adding up the loops' reports: {e}"),
        }
    }
}

impl std::error::Error for LoadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LoadError::Setup(_, e) | LoadError::Poll(e) => Some(e),
            _ => None,
        }
    }
}

/// Figures for the live progress line, about once a second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProgressLine {
    /// Time since the run began.
    pub elapsed: Duration,
    /// How long the run is planned to take until its window ends: the
    /// wait for `--start-at`, warm-up and duration (the ramp and the drain
    /// come on top).
    pub planned: Duration,
    /// Connections established and not yet ended.
    pub connections_up: u64,
    /// Replies per second since the last progress report.
    pub msgs_per_sec: f64,
    /// 99th percentile latency since the last report, in microseconds.
    pub p99_us: u64,
    /// Errors of every kind so far.
    pub errors: u64,
}

/// Runs a load test and returns its report. Failures of the server (refused
/// connections, resets, wrong bytes) are in the report, not errors.
///
/// # Errors
///
/// [`LoadError::Invalid`] for a configuration that makes no run; the
/// others when the loop itself cannot run.
pub fn run(config: &LoadConfig) -> Result<Report, LoadError> {
    run_inner(config, &AtomicBool::new(false), None)
}

/// Like [`run`], calling `on_progress` about once a second while it runs.
///
/// # Errors
///
/// As [`run`].
pub fn run_with_progress(
    config: &LoadConfig,
    on_progress: &mut dyn FnMut(&ProgressLine),
) -> Result<Report, LoadError> {
    run_inner(config, &AtomicBool::new(false), Some(on_progress))
}

/// Like [`run`], stopping early once `stop` is set (by a signal handler,
/// say): sending stops, replies in flight get at most a second, and the
/// report of the run so far comes back with [`Report::interrupted`] set.
/// Calls `on_progress`, if given, about once a second.
///
/// # Errors
///
/// As [`run`].
pub fn run_until(
    config: &LoadConfig,
    stop: &AtomicBool,
    on_progress: Option<&mut dyn FnMut(&ProgressLine)>,
) -> Result<Report, LoadError> {
    run_inner(config, stop, on_progress)
}

/// One reading of both clocks, so that the loops' `Instant`s (the start,
/// the window) translate to wall-clock times and back alike in every loop.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    instant: Instant,
    wall: SystemTime,
}

impl Clock {
    fn now() -> Clock {
        Clock {
            instant: Instant::now(),
            wall: SystemTime::now(),
        }
    }

    /// The wall-clock time of `at`.
    pub(crate) fn wall(&self, at: Instant) -> SystemTime {
        if at >= self.instant {
            self.wall + (at - self.instant)
        } else {
            self.wall - (self.instant - at)
        }
    }

    /// The `Instant` of wall-clock time `at` (validated: within a day of
    /// now, so the arithmetic cannot overflow; saturates to now anyway).
    pub(crate) fn instant(&self, at: SystemTime) -> Instant {
        match at.duration_since(self.wall) {
            Ok(ahead) => self.instant.checked_add(ahead),
            Err(e) => self.instant.checked_sub(e.duration()),
        }
        .unwrap_or(self.instant)
    }
}

/// What one loop publishes for the progress line.
#[derive(Debug)]
struct LoopFigures {
    up: u64,
    errors: u64,
    recent: Recent,
}

/// Where the loops publish their recent figures, one slot per loop; the
/// collector in `run_inner` takes them once a second for the progress line
/// and the intervals. Shared across threads, so behind a mutex; a loop
/// touches it only every `PROGRESS_PUBLISH_EVERY`, never per message.
type ProgressBoard = Arc<Mutex<Vec<LoopFigures>>>;

fn run_inner(
    config: &LoadConfig,
    stop: &AtomicBool,
    mut on_progress: Option<&mut dyn FnMut(&ProgressLine)>,
) -> Result<Report, LoadError> {
    config.validate()?;
    let clock = Clock::now();
    let started = clock.instant;
    let threads = config.threads;
    let wants_board = on_progress.is_some() || config.record_intervals;
    let board: Option<ProgressBoard> = wants_board.then(|| {
        Arc::new(Mutex::new(
            (0..threads)
                .map(|_| LoopFigures {
                    up: 0,
                    errors: 0,
                    recent: Recent::default(),
                })
                .collect(),
        ))
    });
    let until_start = config
        .start_at
        .and_then(|at| at.duration_since(clock.wall).ok())
        .unwrap_or_default();
    let planned = until_start + config.warmup + config.duration;
    let own = config.own_connections();
    info!(
        "load {}: {own} {} on {threads} loop(s), {} s, {} B, {}{}",
        config.target,
        config.target.proto.peers(),
        config.duration.as_secs_f64(),
        config.size,
        match (config.own_rate(), config.stages.len()) {
            (Some(r), _) => format!("open loop at {r} msgs/s"),
            (None, 0) => format!("closed loop, pipeline {}", config.pipeline),
            (None, n) => format!("open loop on {n} stages"),
        },
        if config.segment.is_whole() {
            String::new()
        } else {
            format!(
                ", segment {} of a test of {} {}",
                config.segment,
                config.connections,
                config.target.proto.peers()
            )
        }
    );
    let (tx, rx) = mpsc::channel();
    std::thread::scope(|scope| {
        for index in 0..threads {
            let tx = tx.clone();
            let board = board.clone().map(|b| (b, index));
            std::thread::Builder::new()
                .name(format!("load-{index}"))
                .spawn_scoped(scope, move || {
                    let result =
                        Loop::new(config, index, board, clock).and_then(|mut l| l.run(stop));
                    let _ = tx.send(result);
                })
                .map_err(|e| LoadError::Setup("load thread", e))?;
        }
        drop(tx);
        let mut merged = Report::for_config(config);
        let mut first_failure = None;
        let mut finished = 0;
        let mut last_report = Instant::now();
        let mut intervals = Vec::new();
        while finished < threads {
            match rx.recv_timeout(Duration::from_secs(1)) {
                Ok(Ok(r)) => {
                    if let Err(e) = merged.merge(&r) {
                        first_failure.get_or_insert(LoadError::Overflow(e));
                    }
                    finished += 1;
                }
                Ok(Err(e)) => {
                    first_failure.get_or_insert(e);
                    finished += 1;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Some(board) = &board {
                        let now = Instant::now();
                        let (progress, interval) =
                            take_progress(board, now - started, now - last_report, planned);
                        if let Some(cb) = on_progress.as_mut() {
                            cb(&progress);
                        }
                        if config.record_intervals {
                            intervals.push(interval);
                        }
                        last_report = now;
                    }
                }
                // A loop thread died without sending: it panicked.
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    first_failure.get_or_insert(LoadError::LoopPanicked);
                    break;
                }
            }
        }
        if let (Some(board), true) = (&board, config.record_intervals) {
            // The last, partial interval: what completed since the last tick.
            let now = Instant::now();
            intervals.push(take_progress(board, now - started, now - last_report, planned).1);
        }
        merged.intervals = intervals;
        merged.run_start = Some(clock.wall);
        match first_failure {
            Some(e) => Err(e),
            None => Ok(merged),
        }
    })
}

/// The figures since the last call, for the progress line and as one
/// interval of the run; resets the loops' recent counters.
fn take_progress(
    board: &ProgressBoard,
    elapsed: Duration,
    since_last: Duration,
    planned: Duration,
) -> (ProgressLine, Interval) {
    let mut p = ProgressLine {
        elapsed,
        planned,
        connections_up: 0,
        msgs_per_sec: 0.0,
        p99_us: 0,
        errors: 0,
    };
    let mut interval = Interval {
        start: elapsed.saturating_sub(since_last),
        length: since_last,
        completed: Recent::default(),
    };
    let Ok(mut slots) = board.lock() else {
        return (p, interval);
    };
    for s in slots.iter_mut() {
        p.connections_up += s.up;
        p.errors += s.errors;
        interval.completed.take_from(&mut s.recent);
    }
    p.msgs_per_sec = interval.all_per_sec();
    let mut all = interval.completed.measured.latency.clone();
    let _ = all.add(&interval.completed.unmeasured.latency);
    p.p99_us = if all.is_empty() {
        0
    } else {
        all.value_at_quantile(0.99)
    };
    (p, interval)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_ids_give_every_connection_one_loop() {
        let mut config = LoadConfig::new(Target {
            proto: Proto::Tcp,
            addr: "127.0.0.1:7".parse().expect("address"),
        });
        config.connections = 10;
        config.threads = 3;
        let mut all: Vec<u64> = (0..3).flat_map(|i| config.connection_ids(i)).collect();
        assert_eq!(config.connection_ids(1), [1, 4, 7]);
        all.sort_unstable();
        assert_eq!(all, (0..10).collect::<Vec<u64>>());
    }
}
