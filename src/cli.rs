//! The command line: clap types, and the parsing of ADDR, MODE and
//! durations into plain config structs. No IO happens here.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use std::time::SystemTime;

use clap::{Args, Parser, Subcommand};

use echo_reactor::load::find_max::{Objective, Percentile};
use echo_reactor::load::split::{self, Segment};
use echo_reactor::load::stages::Stage;
use echo_reactor::load::ProxyVersion;
use echo_reactor::load::{self, LoadConfig, Proto, Target};
use echo_reactor::resolve::HostPort;
use echo_reactor::server::{Fault, FaultKind, FaultPlan, TlsIdentity};
use echo_reactor::tls_client::{TlsConnector, Trust};
use echo_reactor::Mode;
use echo_reactor::ServerConfig;
use echo_reactor::Watermarks;

/// The address used when neither `--tcp` nor `--udp` is given.
pub const DEFAULT_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 7007);

/// echo-reactor: an event-driven TCP/UDP echo server and load generator.
#[derive(Debug, Parser)]
#[command(name = "echo-reactor", version, about, long_about = None)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server: TCP and UDP on one single-threaded poll loop.
    Serve(ServeArgs),
    /// Load a TCP, TLS or UDP echo server from one poll loop and check every reply.
    Load(LoadArgs),
    /// Type lines, see the replies: an interactive client for any echo server.
    Client(ClientArgs),
    /// Put two or more `load --json` results side by side, with ratios to the first.
    Compare(CompareArgs),
    /// Add up the parts of a split load test (`load --segment ... --json`) into one report.
    Merge(MergeArgs),
}

/// `echo-reactor merge`.
#[derive(Debug, Args)]
#[command(
    after_help = "Each FILE holds `load --json` reports, one JSON object a line (or one object over several lines); `-` reads them from stdin, skipping lines that are not JSON objects and `host: ` prefixes (pdsh, kubectl logs --prefix). The parts must be every segment of one test, once each, against the same target with the same settings, with windows that share at least 90% (start them with one --start-at). Exit status: 0 merged and ok, 1 merged but a part or the whole failed, 2 the parts do not belong together or cannot be read."
)]
pub struct MergeArgs {
    /// Reports of the parts (`load --segment I/N --json`); `-` for stdin
    #[arg(value_name = "FILE", required = true, num_args = 1..)]
    pub files: Vec<PathBuf>,

    /// Print one JSON object on stdout, in the schema of `load --json`
    #[arg(long)]
    pub json: bool,

    /// Draw the latency percentile curve of the whole test and of each
    /// part into an SVG
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
}

/// `echo-reactor compare`.
#[derive(Debug, Args)]
#[command(
    after_help = "Each run's settings (protocol, target, connections, rate or closed loop, \
size) are listed above the figures; runs not made like the first are named in a warning \
on stderr. Exit status: 0 compared, 2 a file is missing or not a `load --json` report."
)]
pub struct CompareArgs {
    /// JSON reports saved from `echo-reactor load --json`; the first is the baseline
    #[arg(value_name = "FILE.json", required = true, num_args = 2..)]
    pub files: Vec<PathBuf>,

    /// Print one JSON object on stdout: each run's file, settings, figures
    /// and ratios to the first, and the unlike runs
    #[arg(long)]
    pub json: bool,
}

/// `echo-reactor client`.
#[derive(Debug, Args)]
#[command(
    after_help = "On a terminal it prompts `>>: `; with stdin from a pipe it \
prints replies only. A TCP reply is complete once it is as long as the request, or \
200 ms after its last byte. Exit status: 0 at end of input, 1 when the server is \
unreachable, closes or resets, the TLS handshake fails, or a request got no reply."
)]
pub struct ClientArgs {
    /// Send each line as one UDP datagram instead of over one TCP
    /// connection (a udp:// address implies it)
    #[arg(long)]
    pub udp: bool,

    /// How long any wait may last: for a reply (TCP: its first byte), or
    /// for the server to take more of a long line; 1ms to 1h (5, 0.5,
    /// 500ms, 10s, 1m: a plain number is seconds)
    #[arg(long, value_name = "DURATION", default_value = "5", value_parser = parse_nonzero_timeout)]
    pub timeout: Duration,

    /// The server, like 127.0.0.1:7007, [::1]:7007, localhost:7007,
    /// echo.example.com:7007, tcp://127.0.0.1:7007, udp://127.0.0.1:7007
    /// or tls://localhost:7443
    #[arg(value_name = "ADDR", value_parser = parse_client_addr)]
    pub addr: ClientAddr,

    /// tls:// only: what to trust and which name to check.
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// The TLS flags of `load` and `client`, for `tls://` addresses.
#[derive(Debug, Clone, Default, Args)]
pub struct TlsArgs {
    /// tls:// only: trust the root certificates in this PEM file instead
    /// of the system's
    #[arg(long, value_name = "FILE", conflicts_with = "tls_insecure")]
    pub tls_ca: Option<PathBuf>,

    /// tls:// only: do not verify the server's certificate at all (any
    /// issuer, any name, expired or not); the report says so
    #[arg(long)]
    pub tls_insecure: bool,

    /// tls:// only: the server name to send (SNI) and to check the
    /// certificate against: a DNS name, or an IP address, checked against
    /// the certificate's IP addresses [default: the address's host]
    #[arg(long, value_name = "NAME")]
    pub tls_sni: Option<String>,
}

impl TlsArgs {
    /// The TLS settings for a connection to `host`, `None` when `is_tls`
    /// is false (a tcp:// or udp:// address).
    ///
    /// # Errors
    ///
    /// A TLS flag for an address that is not tls://, a name that is no
    /// DNS name or IP address, or a roots file that does not load (naming
    /// it), or no system roots.
    pub fn connector(&self, is_tls: bool, host: &HostPort) -> Result<Option<TlsConnector>, String> {
        if !is_tls {
            if self.tls_ca.is_some() || self.tls_insecure || self.tls_sni.is_some() {
                return Err(
                    "--tls-ca, --tls-insecure and --tls-sni are for tls:// addresses".into(),
                );
            }
            return Ok(None);
        }
        let trust = match (&self.tls_ca, self.tls_insecure) {
            (_, true) => Trust::Insecure,
            (Some(file), false) => Trust::File(file.clone()),
            (None, false) => Trust::System,
        };
        let name = self.tls_sni.as_deref().unwrap_or(&host.host);
        TlsConnector::new(trust, name)
            .map(Some)
            .map_err(|e| format!("TLS: {e}"))
    }
}

/// The client's server, with the protocol if a URL named one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAddr {
    /// `Some` for a `tcp://` or `udp://` URL, `None` for a bare address.
    pub proto: Option<Proto>,
    /// The server's host (a name or an address) and port.
    pub host: HostPort,
}

/// Parses the client's ADDR: `HOST:PORT`, or the same behind `tcp://` or
/// `udp://`, where HOST is a name or an IP address (`[::1]` for IPv6).
///
/// # Errors
///
/// A message naming the bad input and the forms accepted.
pub fn parse_client_addr(s: &str) -> Result<ClientAddr, String> {
    if s.contains("://") {
        let target = parse_url(s)?;
        return Ok(ClientAddr {
            proto: Some(target.proto),
            host: target.host,
        });
    }
    HostPort::parse(s)
        .map(|host| ClientAddr { proto: None, host })
        .map_err(|why| format!("invalid address '{s}' ({why}): {ADDR_FORMS}"))
}

impl ClientArgs {
    /// Whether the session is UDP: `--udp` or a `udp://` address.
    ///
    /// # Errors
    ///
    /// A `tcp://` or `tls://` address together with `--udp`.
    pub fn is_udp(&self) -> Result<bool, String> {
        match self.addr.proto {
            Some(proto @ (Proto::Tcp | Proto::Tls)) if self.udp => Err(format!(
                "a {proto}:// address and --udp contradict each other"
            )),
            Some(Proto::Tcp | Proto::Tls) => Ok(false),
            Some(Proto::Udp) => Ok(true),
            None => Ok(self.udp),
        }
    }

    /// The session these arguments describe, with the addresses the host
    /// resolved to.
    ///
    /// # Errors
    ///
    /// A `tcp://` or `tls://` address together with `--udp`; TLS flags
    /// without a `tls://` address, or TLS settings that do not load.
    pub fn to_config(
        &self,
        addrs: Vec<SocketAddr>,
    ) -> Result<echo_reactor::client::ClientConfig, String> {
        let is_tls = self.addr.proto == Some(Proto::Tls);
        Ok(echo_reactor::client::ClientConfig {
            addrs,
            udp: self.is_udp()?,
            // Parsed as at least a millisecond: never "block forever".
            timeout: self.timeout,
            tls: self.tls.connector(is_tls, &self.addr.host)?,
        })
    }
}

/// `echo-reactor serve`.
#[derive(Debug, Args)]
#[command(
    after_help = "With none of --tcp, --udp and --port, both listen on 127.0.0.1:7007. \
ADDR is IP:PORT, localhost:PORT (127.0.0.1), or :PORT for every address, IPv4 \
and IPv6 (0.0.0.0:PORT and [::]:PORT). Port 0 picks a free port; the \
`listening on` lines on stdout show the real one."
)]
pub struct ServeArgs {
    /// TCP address to listen on, like 127.0.0.1:7007, [::1]:7007 or :7007
    /// (every address) (repeatable)
    #[arg(long, value_name = "ADDR", value_parser = parse_listen_addr)]
    pub tcp: Vec<ListenAddr>,

    /// UDP address to serve, like 127.0.0.1:7007, [::1]:7007 or :7007
    /// (every address) (repeatable)
    #[arg(long, value_name = "ADDR", value_parser = parse_listen_addr)]
    pub udp: Vec<ListenAddr>,

    /// Short for --tcp 127.0.0.1:PORT --udp 127.0.0.1:PORT
    #[arg(long, short = 'p', value_name = "PORT")]
    pub port: Option<u16>,

    /// TLS address to listen on, answering in the same mode (repeatable;
    /// needs --tls-cert and --tls-key); with only --tls, only TLS is served
    #[arg(long, value_name = "ADDR", value_parser = parse_listen_addr)]
    pub tls: Vec<ListenAddr>,

    /// The TLS listeners' certificate chain, PEM, leaf first
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// The TLS listeners' private key, PEM (PKCS#8, SEC1 or PKCS#1)
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,

    /// How long a TLS handshake may take before the connection is closed
    /// and counted (10, 500ms, 1m; at least 100ms)
    #[arg(long, value_name = "DURATION", default_value = "10", value_parser = parse_nonzero_interval)]
    pub tls_handshake_timeout: Duration,

    /// Every TCP and TLS connection must begin with a PROXY protocol
    /// header (v1 or v2, as HAProxy's send-proxy and send-proxy-v2 send
    /// it); its source address is the client shown everywhere; without a
    /// valid header the connection is closed unanswered
    #[arg(long)]
    pub proxy_protocol: bool,

    /// How long a connection has to send its whole PROXY header (5, 500ms;
    /// at least 100ms)
    #[arg(long, value_name = "DURATION", default_value = "5", value_parser = parse_nonzero_interval)]
    pub proxy_timeout: Duration,

    /// Misbehave on purpose (repeatable; each kind once): KIND[=VALUE][@P],
    /// P from 0 to 1 (default 1). Per reply: delay=DURATION (hold each
    /// reply, 1us to 1h), slice=BYTES (write replies in pieces of at most
    /// BYTES, 1 to 1048576, each its own write), close (FIN after the
    /// reply), reset (RST after it), corrupt (flip one bit of it), drop
    /// (UDP: do not send it). Per connection: rate=BYTES_PER_SEC (pace its
    /// output, 1 to 10G), stall (never read or answer it). Per-reply
    /// faults act on echo and upper; on a stream chargen, daytime and time
    /// take only rate and stall, discard (no output) only stall; UDP takes
    /// drop, delay and corrupt. A fault that cannot act is a usage error.
    /// The log says loudly that faults are on
    #[arg(long = "fault", value_name = "KIND[=VALUE][@P]", value_parser = parse_fault)]
    pub faults: Vec<Fault>,

    /// Seed of the faults' random draws, to repeat a run exactly
    /// [default: from the clock, logged]
    #[arg(long, value_name = "N")]
    pub fault_seed: Option<u64>,

    /// What to answer: echo (bytes unchanged), upper (ASCII a-z
    /// uppercased), discard (RFC 863), chargen (RFC 864), daytime (RFC 867)
    /// or time (RFC 868)
    #[arg(long, value_name = "MODE", default_value = "echo", value_parser = parse_mode)]
    pub mode: Mode,

    /// Listen backlog: connections the kernel queues before they are accepted
    #[arg(long, value_name = "N", default_value_t = 1024,
          value_parser = clap::value_parser!(i32).range(1..))]
    pub backlog: i32,

    /// Stop reading from a connection while more than this many bytes of
    /// its output wait for the kernel (0: while any wait); resumes at a quarter
    #[arg(long, value_name = "BYTES", default_value_t = 0)]
    pub max_pending: usize,

    /// Most open connections; one more is accepted and closed at once
    /// [default: the open-file limit minus 32]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: Option<u64>,

    /// How long shutdown serves busy clients until they finish (5, 0.5,
    /// 500ms, 1m); then the rest are cut (FIN) and may linger up to 1 s
    /// more before the exit
    #[arg(long, value_name = "DURATION", default_value = "5", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,

    /// Share-nothing loops, each on its own thread with its own sockets
    /// bound with SO_REUSEPORT (only when N > 1)
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=256))]
    pub threads: u16,
    /// Close a connection with no traffic either way for this long, with
    /// FIN (300, 5m, 500ms; at least 100ms; 0: never)
    #[arg(long, value_name = "DURATION", default_value = "0", value_parser = parse_interval)]
    pub idle_timeout: Duration,

    /// Reset a connection whose pending output has not moved for this
    /// long: its peer stopped reading (60, 1m, 2s; at least 100ms; 0: never)
    #[arg(long, value_name = "DURATION", default_value = "60", value_parser = parse_interval)]
    pub write_timeout: Duration,

    /// Answer each UDP source address at most this many datagrams per
    /// second (100, 20k, 1M; bursts of one second's worth); the excess is
    /// dropped and counted
    #[arg(long, value_name = "PPS", value_parser = parse_pps)]
    pub udp_rate_limit: Option<u32>,

    /// Log one statistics line every DURATION (10, 1m, 500ms; at least
    /// 100ms; 0: off, as without the flag): connections, bytes and
    /// datagrams per second, pending output, accepting or paused
    #[arg(long, value_name = "DURATION", value_parser = parse_interval)]
    pub stats: Option<Duration>,

    /// Serve Prometheus metrics over HTTP at ADDR (GET /metrics), on the
    /// same poll loop
    #[arg(long, value_name = "ADDR", value_parser = parse_addr)]
    pub metrics: Option<SocketAddr>,

    /// Let UDP replies be larger than their requests (chargen's random
    /// 0-512 characters, daytime to short requests): makes the server a
    /// reflection amplifier for spoofed requests
    #[arg(long)]
    pub udp_allow_amplification: bool,

    /// Receive and answer UDP in batches of up to 32 datagrams per syscall
    /// (recvmmsg/sendmmsg; Linux only); a switch, or given true or false
    #[arg(long, value_name = "BOOL", default_value_t = false, num_args = 0..=1,
          default_missing_value = "true", action = clap::ArgAction::Set)]
    pub udp_batch: bool,

    /// Skip the read that would only return WouldBlock after a short read
    /// (sound on Linux's epoll; default on there); a switch, or given true
    /// or false
    #[arg(long, value_name = "BOOL", default_value_t = cfg!(target_os = "linux"),
          num_args = 0..=1, default_missing_value = "true",
          action = clap::ArgAction::Set)]
    pub short_read: bool,
}

impl ServeArgs {
    /// The server configuration these arguments describe, with the TLS
    /// certificate and key loaded.
    ///
    /// # Errors
    ///
    /// Settings that clash (`--tls` without a certificate and key, or the
    /// other way round), and certificate or key files that do not load or
    /// do not match, naming the file.
    pub fn to_config(&self) -> Result<ServerConfig, String> {
        let flat = |given: &[ListenAddr]| -> Vec<SocketAddr> {
            let mut all: Vec<SocketAddr> = given.iter().flat_map(|l| l.0.clone()).collect();
            all.extend(
                self.port
                    .map(|p| SocketAddr::new(Ipv4Addr::LOCALHOST.into(), p)),
            );
            all
        };
        let named = !self.tcp.is_empty()
            || !self.udp.is_empty()
            || !self.tls.is_empty()
            || self.port.is_some();
        let (tcp, udp) = if named {
            (flat(&self.tcp), flat(&self.udp))
        } else {
            (vec![DEFAULT_ADDR], vec![DEFAULT_ADDR])
        };
        let tls: Vec<SocketAddr> = self.tls.iter().flat_map(|l| l.0.clone()).collect();
        let identity = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) if !tls.is_empty() => Some(
                TlsIdentity::from_pem_files(cert, key)
                    .map_err(|e| format!("cannot use the TLS certificate and key: {e}"))?,
            ),
            (None, None) if tls.is_empty() => None,
            _ if tls.is_empty() => {
                return Err(
                    "--tls-cert and --tls-key are for --tls listeners; no --tls given".into(),
                )
            }
            _ => return Err("--tls needs both --tls-cert FILE and --tls-key FILE".into()),
        };
        let mut config = ServerConfig::default();
        config.tcp = tcp;
        config.udp = udp;
        config.tls = tls;
        config.tls_identity = identity;
        config.tls_handshake_timeout = self.tls_handshake_timeout;
        config.proxy_protocol = self.proxy_protocol;
        config.proxy_timeout = self.proxy_timeout;
        config.faults = self.fault_plan(&config)?;
        config.service = Arc::new(self.mode);
        config.backlog = self.backlog;
        config.watermarks = Watermarks::with_high(self.max_pending);
        config.short_read = self.short_read;
        config.max_connections = self
            .max_connections
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX));
        config.shutdown_timeout = self.shutdown_timeout;
        config.idle_timeout = nonzero(self.idle_timeout);
        config.write_timeout = nonzero(self.write_timeout);
        config.udp_rate_limit = self.udp_rate_limit;
        config.udp_allow_amplification = self.udp_allow_amplification;
        config.stats_interval = self.stats.filter(|d| !d.is_zero());
        config.metrics = self.metrics;
        config.udp_batch = self.udp_batch;
        config.handle_signals = true;
        Ok(config)
    }
}

/// `echo-reactor load`.
#[derive(Debug, Args)]
#[command(
    after_help = "Exit status: 0 when every reply came back right (UDP: loss within \
--max-loss), 1 otherwise (a TLS handshake that fails counts as a `tls` error). --json \
prints one JSON object on stdout, also on failure."
)]
pub struct LoadArgs {
    /// The server: tcp://HOST:PORT, tls://HOST:PORT or udp://HOST:PORT,
    /// HOST a name or an IP address (IPv6: tcp://[::1]:7007), resolved
    /// once at the start
    #[arg(value_name = "URL", value_parser = parse_url)]
    pub url: TargetArg,

    /// Client connections (UDP: sockets), 1 to 1000000 and within the
    /// open-file limit
    #[arg(long, short = 'c', value_name = "N", default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(1..=load::MAX_CONNECTIONS as u64))]
    pub connections: u64,

    /// How long to measure: 10, 0.5, 500ms, 10s, 1m, 2h (a plain number is
    /// seconds); more than 0 and at most a year [default: 10; with
    /// --find-max, 5 per step]
    #[arg(long, short = 'd', value_name = "DURATION", value_parser = parse_window)]
    pub duration: Option<Duration>,

    /// Bytes per message: TCP and TLS 1 to 16777216, UDP 8 to 65507
    #[arg(long, value_name = "BYTES", default_value_t = 64,
          value_parser = clap::value_parser!(u64).range(1..=load::MAX_TCP_SIZE as u64))]
    pub size: u64,

    /// Messages in flight per connection (closed loop), 1 to 4096
    #[arg(long, value_name = "K", default_value_t = 1,
          value_parser = clap::value_parser!(u64).range(1..=load::MAX_PIPELINE as u64))]
    pub pipeline: u64,

    /// Open loop: total messages per second over all connections, like
    /// 20000, 20k or 1.5M (0.001 to 10M); latency counts from each
    /// message's due time [default: closed loop]
    #[arg(long, value_name = "MSGS_PER_SEC", value_parser = parse_rate)]
    pub rate: Option<f64>,

    /// What the server should answer: echo or upper
    #[arg(long, value_name = "MODE", default_value = "echo", value_parser = parse_expect)]
    pub expect: Mode,

    /// New connections per second, like 500 or 2k (0.001 to 1M) [default:
    /// as fast as the loop can, a bounded number of handshakes at a time]
    #[arg(long, value_name = "CONNS_PER_SEC", value_parser = parse_connect_rate)]
    pub connect_rate: Option<f64>,

    /// Traffic before measuring, not counted: 2, 500ms, 1m (at most a year)
    #[arg(long, value_name = "DURATION", default_value = "0", value_parser = parse_duration)]
    pub warmup: Duration,

    /// Poll loops, each driving its share of the connections (1 to 256,
    /// at most the connections)
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u64).range(1..=load::MAX_THREADS as u64))]
    pub threads: u64,

    /// Print one JSON object on stdout instead of the text report
    #[arg(long)]
    pub json: bool,

    /// Also print the full latency distribution (HdrHistogram text format)
    #[arg(long)]
    pub latency: bool,

    /// UDP: the highest loss (percent, 0 to 100) that still passes
    #[arg(long, value_name = "PERCENT", default_value = "1", value_parser = parse_percent)]
    pub max_loss: f64,

    /// After the window, how long to wait for the replies still in flight
    /// (0 to 1h: 2, 500ms, 1m); any still missing then count as `timeout`
    /// errors
    #[arg(long, value_name = "DURATION", default_value = "2", value_parser = parse_timeout)]
    pub drain_timeout: Duration,

    /// UDP: how long a request waits for its reply before it counts as
    /// lost (1ms to 1h: 0.5, 500ms, 2s)
    #[arg(long, value_name = "DURATION", default_value = "0.5", value_parser = parse_nonzero_timeout)]
    pub udp_timeout: Duration,

    /// How long a connection may take to come up, retries included (1ms
    /// to 1h: 3, 500ms, 1m); then it counts as a `connect` error. The run
    /// ends within this (with --start-at, the later of this and the time
    /// until the start) + --warmup + --duration + --drain-timeout + 1 s
    /// (plus the ramp's pacing with --connect-rate; plus up to this once
    /// more to pick one address of a name that has several)
    #[arg(long, value_name = "DURATION", default_value = "3", value_parser = parse_nonzero_timeout)]
    pub connect_timeout: Duration,

    /// Open a new connection in place of one that ended in error, so the
    /// load holds; the error still counts
    #[arg(long)]
    pub reconnect: bool,

    /// Write the latency as an HdrHistogram interval log, one interval a
    /// second (values in microseconds)
    #[arg(long, value_name = "FILE")]
    pub hdr_log: Option<PathBuf>,

    /// Draw the latency percentile curve and msgs/s over time into an SVG
    /// (with --stages, the target ramp too; with --find-max, latency
    /// against rate instead)
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,

    /// Run part INDEX (from 0) of a test split into COUNT parts (1 to
    /// 100000): its share of --connections and --rate, with connection
    /// numbers no other part uses
    #[arg(long, value_name = "INDEX/COUNT", default_value = "0/1", value_parser = Segment::parse)]
    pub segment: Segment,

    /// Begin warm-up and the window at this instant (Unix seconds, or RFC
    /// 3339 like 2026-01-01T00:00:00Z), from 1 s past to a day ahead;
    /// connections come up before it [default: when the ramp is done]
    #[arg(long, value_name = "TIME", value_parser = split::parse_start_at)]
    pub start_at: Option<SystemTime>,

    /// Bind the connections to these local addresses in turn (same IP
    /// version as the target), for more than one address's ephemeral
    /// ports towards one server [default: the kernel's choice]
    #[arg(long, value_name = "ADDR[,ADDR...]", value_delimiter = ',')]
    pub source: Vec<IpAddr>,

    /// tls:// only: what to trust and which name to check.
    #[command(flatten)]
    pub tls: TlsArgs,

    /// Begin each TCP or TLS connection with a PROXY protocol header, v1
    /// (text) or v2 (binary), naming the connection's own addresses (so
    /// --source shows through); only the payload is expected back
    #[arg(long, value_name = "VERSION", value_parser = parse_proxy_version)]
    pub proxy_protocol: Option<ProxyVersion>,

    /// TCP and TLS: close each connection after N verified replies (our
    /// FIN first, then the server's) and open a new one in its place, so
    /// --connections stay in flight; N is 1 (one request per connection,
    /// like tcp_crr) to 1000000000. With --rate the rate is messages, each
    /// connection carrying N. The report adds connects/s and connect
    /// latency. Each close leaves a TIME_WAIT port behind: spread over
    /// --source addresses, or use --churn-reset
    #[arg(long, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..=load::MAX_CHURN))]
    pub churn: Option<u64>,

    /// With --churn: close with a reset (SO_LINGER 0) instead of FIN, so
    /// no port stays in TIME_WAIT; the server counts each as a reset
    #[arg(long, requires = "churn")]
    pub churn_reset: bool,

    #[command(flatten)]
    pub shapes: ShapeArgs,
}

/// The load shapes beyond one rate: `--stages` and `--find-max`.
#[derive(Debug, Args)]
pub struct ShapeArgs {
    /// Open loop on a ramp: over each stage the rate (messages per second
    /// of the whole test) moves linearly from the previous stage's target
    /// (0 before the first) to RATE; a repeated target holds, 0 ramps
    /// down. DUR takes a unit (500ms, 30s, 2m), RATE is 0 or 0.001 to 10M
    /// (20k, 1.5M); 1 to 64 stages; the window is their sum. Latency
    /// counts from each message's due time on the ramp. Not with
    /// --duration, --rate or --warmup
    #[arg(long, value_name = "DUR:RATE[,DUR:RATE...]", value_parser = parse_stages,
          conflicts_with_all = ["duration", "rate", "warmup", "find_max"])]
    pub stages: Option<StageList>,

    /// Find the highest open-loop rate that meets PCT=LATENCY (PCT p50,
    /// p90, p99 or p99.9; LATENCY 1us to 1h with a unit: 250us, 5ms, 1s):
    /// steps of --duration (default 5 s) each after a warm-up (--warmup,
    /// or 1 s when 0), from --rate (default 1000) doubling until a step
    /// misses (the percentile above LATENCY, any error, or under 95% of
    /// the rate achieved), then bisecting until within 5%; at most 20
    /// steps, so the search ends within 20 x (--connect-timeout plus
    /// warm-up plus --duration plus --drain-timeout plus 1 s). Exit 0
    /// when a step passed, 1 when even the first missed. Not with
    /// --stages, --segment, --start-at or --hdr-log
    #[arg(long, value_name = "PCT=LATENCY", value_parser = parse_objective,
          conflicts_with_all = ["segment", "start_at", "hdr_log"])]
    pub find_max: Option<Objective>,
}

/// `--stages` as parsed: the stages in order.
#[derive(Debug, Clone, PartialEq)]
pub struct StageList(pub Vec<Stage>);

/// Parses `--stages`: `DUR:RATE[,DUR:RATE...]`, each DUR a duration with
/// a unit, more than 0 (`500ms`, `30s`, `2m`), each RATE 0 or within
/// `--rate`'s range (`200`, `20k`).
///
/// # Errors
///
/// An empty list, a stage without `:`, a duration without a unit or of 0,
/// a rate out of range, more than 64 stages, or none above 0.
pub fn parse_stages(s: &str) -> Result<StageList, String> {
    const FORM: &str = "expected DUR:RATE[,DUR:RATE...] like 30s:1000,1m:1000,30s:0";
    if s.trim().is_empty() {
        return Err(format!("empty stage list: {FORM}"));
    }
    let mut stages = Vec::new();
    for part in s.split(',') {
        let (dur, rate) = part
            .split_once(':')
            .ok_or_else(|| format!("invalid stage '{part}': {FORM}"))?;
        let dur = dur.trim();
        if dur.is_empty() || dur.ends_with(|c: char| c.is_ascii_digit() || c == '.') {
            return Err(format!(
                "invalid stage '{part}': the duration needs a unit (500ms, 30s, 2m): {FORM}"
            ));
        }
        let duration = parse_window(dur).map_err(|e| format!("invalid stage '{part}': {e}"))?;
        let target = if parse_per_sec(rate) == Ok(0.0) {
            0.0
        } else {
            parse_rate(rate).map_err(|e| format!("invalid stage '{part}': {e}"))?
        };
        stages.push(Stage { duration, target });
    }
    if stages.len() > load::stages::MAX_STAGES {
        return Err(format!(
            "{} stages: at most {}",
            stages.len(),
            load::stages::MAX_STAGES
        ));
    }
    if stages.iter().all(|s| s.target == 0.0) {
        return Err(format!(
            "invalid stages '{s}': every target is 0, so nothing would be sent"
        ));
    }
    Ok(StageList(stages))
}

/// Parses `--find-max`: `PCT=LATENCY`, PCT one of p50, p90, p99, p99.9,
/// LATENCY a duration with a unit from 1us to 1h.
///
/// # Errors
///
/// Another form, percentile or unit, or a latency out of range.
pub fn parse_objective(s: &str) -> Result<Objective, String> {
    const FORM: &str = "expected PCT=LATENCY like p99=5ms, PCT one of p50, p90, p99, p99.9 and LATENCY 1us to 1h with a unit (us, ms, s)";
    let (pct, latency) = s
        .split_once('=')
        .ok_or_else(|| format!("invalid objective '{s}': {FORM}"))?;
    let percentile = Percentile::ALL
        .iter()
        .find(|(_, name)| *name == pct.trim())
        .map(|(p, _)| *p)
        .ok_or_else(|| format!("invalid objective '{s}': unknown percentile '{pct}': {FORM}"))?;
    let latency = latency.trim();
    if !["us", "µs", "ms", "s"].iter().any(|u| latency.ends_with(u)) {
        return Err(format!(
            "invalid objective '{s}': the latency needs a unit: {FORM}"
        ));
    }
    let latency = parse_duration_in(latency, Duration::from_micros(1), load::MAX_TIMEOUT)
        .map_err(|_| format!("invalid objective '{s}': the latency must be 1us to 1h: {FORM}"))?;
    Ok(Objective {
        percentile,
        latency,
    })
}

/// `--duration` when not given.
pub const DEFAULT_LOAD_DURATION: Duration = Duration::from_secs(10);

impl ShapeArgs {
    /// `base` with the shape's settings: the stages, and their length as
    /// the window; with `--find-max`, each step's window (`duration`, or
    /// 5 s) and warm-up (or 1 s).
    fn shape(&self, mut base: LoadConfig, duration: Option<Duration>) -> LoadConfig {
        if let Some(StageList(stages)) = &self.stages {
            base.stages = stages.clone();
            base.duration = base.stages_length();
        } else if self.find_max.is_some() {
            base.duration = duration.unwrap_or(load::find_max::DEFAULT_STEP);
            if base.warmup.is_zero() {
                base.warmup = load::find_max::DEFAULT_WARMUP;
            }
        }
        base
    }
}

impl LoadArgs {
    /// The load configuration these arguments describe, against `addr`,
    /// the address the URL's host resolved to (check it with
    /// [`LoadConfig::validate`]).
    pub fn to_config(&self, addr: SocketAddr) -> LoadConfig {
        let to_usize = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        let target = Target {
            proto: self.url.proto,
            addr,
        };
        let config = LoadConfig {
            host: self.url.host.is_name().then(|| self.url.host.host.clone()),
            connections: to_usize(self.connections),
            duration: self.duration.unwrap_or(DEFAULT_LOAD_DURATION),
            size: to_usize(self.size),
            pipeline: to_usize(self.pipeline),
            rate: self.rate,
            expect: self.expect,
            connect_rate: self.connect_rate,
            warmup: self.warmup,
            threads: to_usize(self.threads),
            max_loss_percent: self.max_loss,
            drain_timeout: self.drain_timeout,
            udp_reply_timeout: self.udp_timeout,
            connect_timeout: self.connect_timeout,
            reconnect: self.reconnect,
            record_intervals: self.hdr_log.is_some() || self.plot.is_some(),
            segment: self.segment,
            start_at: self.start_at,
            sources: self.source.clone(),
            proxy_protocol: self.proxy_protocol,
            churn: self.churn,
            churn_reset: self.churn_reset,
            ..LoadConfig::new(target)
        };
        self.shapes.shape(config, self.duration)
    }

    /// The TLS settings of a tls:// URL; `None` for tcp:// and udp://.
    ///
    /// # Errors
    ///
    /// As [`TlsArgs::connector`].
    pub fn tls_connector(&self) -> Result<Option<TlsConnector>, String> {
        self.tls
            .connector(self.url.proto == Proto::Tls, &self.url.host)
    }
}

/// Parses `--proxy-protocol`: `v1` or `v2`.
///
/// # Errors
///
/// Anything else, with the versions known.
pub fn parse_proxy_version(s: &str) -> Result<ProxyVersion, String> {
    s.parse()
}

/// A load target as written: the protocol and a host still to resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetArg {
    /// TCP or UDP.
    pub proto: Proto,
    /// A name or an IP address, and the port.
    pub host: HostPort,
}

/// What an address on the command line may look like, for error messages.
const ADDR_FORMS: &str = "expected HOST:PORT, where HOST is a name or an IP address, \
like 127.0.0.1:7007, [::1]:7007, localhost:7007 or echo.example.com:7007";

/// Parses a load target: `tcp://HOST:PORT`, `udp://HOST:PORT`, or a bare
/// `HOST:PORT` (TCP), where HOST is a name or an IP address (`[::1]` for
/// IPv6). Names are resolved later, once, by the caller.
///
/// # Errors
///
/// A message naming the bad input and the expected form.
pub fn parse_url(s: &str) -> Result<TargetArg, String> {
    const FORMS: &str = "expected tcp://HOST:PORT, udp://HOST:PORT, tls://HOST:PORT or \
HOST:PORT (TCP), where HOST is a name or an IP address, like tcp://127.0.0.1:7007, \
udp://[::1]:7007, localhost:7007, tcp://echo.example.com:7007 or tls://localhost:7443";
    let (proto, rest) = if let Some(rest) = s.strip_prefix("tcp://") {
        (Proto::Tcp, rest)
    } else if let Some(rest) = s.strip_prefix("udp://") {
        (Proto::Udp, rest)
    } else if let Some(rest) = s.strip_prefix("tls://") {
        (Proto::Tls, rest)
    } else if s.contains("://") {
        return Err(format!("invalid URL '{s}': {FORMS}"));
    } else {
        (Proto::Tcp, s)
    };
    let host = HostPort::parse(rest.trim_end_matches('/'))
        .map_err(|why| format!("invalid URL '{s}' ({why}): {FORMS}"))?;
    if host.port == 0 {
        return Err(format!("invalid URL '{s}': port 0 is not a server's port"));
    }
    Ok(TargetArg { proto, host })
}

/// Parses a count per second: a plain number (`20000`, `0.5`) or one with
/// `k` (thousands) or `M` (millions): `20k`, `1.5M`.
///
/// # Errors
///
/// Not a number in one of those forms, negative, or not finite.
pub fn parse_per_sec(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let (number, scale) = [("k", 1e3), ("K", 1e3), ("M", 1e6), ("G", 1e9)]
        .iter()
        .find_map(|(unit, scale)| t.strip_suffix(unit).map(|n| (n.trim_end(), *scale)))
        .unwrap_or((t, 1.0));
    number
        .parse::<f64>()
        .ok()
        .map(|n| n * scale)
        .filter(|x| x.is_finite() && *x >= 0.0)
        .ok_or_else(|| format!("invalid number '{s}': {PER_SEC_FORMS}"))
}

/// The forms a rate takes, for error messages.
const PER_SEC_FORMS: &str = "expected a number like 20000, 0.5, 20k, 1.5M or 10G";

/// Parses a rate with [`parse_per_sec`] and checks it is within `min..=max`.
fn parse_per_sec_in(s: &str, min: f64, max: f64, what: &str) -> Result<f64, String> {
    parse_per_sec(s)
        .ok()
        .filter(|x| (min..=max).contains(x))
        .ok_or_else(|| {
            format!(
                "invalid {what} '{s}': expected {min} to {max} ({}), like 20000, 20k or 1.5M",
                with_si(max)
            )
        })
}

/// A round number written the short way: 10000000 as `10M`, 1000 as `1k`.
fn with_si(x: f64) -> String {
    if x >= 1e6 && (x / 1e6).fract() == 0.0 {
        format!("{}M", x / 1e6)
    } else if x >= 1e3 && (x / 1e3).fract() == 0.0 {
        format!("{}k", x / 1e3)
    } else {
        format!("{x}")
    }
}

/// Parses `--rate`: messages per second, `MIN_RATE..=MAX_RATE`, with `k`
/// or `M` if wished (`20k`).
///
/// # Errors
///
/// Not a number, or out of that range.
pub fn parse_rate(s: &str) -> Result<f64, String> {
    parse_per_sec_in(s, load::MIN_RATE, load::MAX_RATE, "rate")
}

/// Parses `--connect-rate`: connections per second,
/// `MIN_RATE..=MAX_CONNECT_RATE`, with `k` or `M` if wished.
///
/// # Errors
///
/// Not a number, or out of that range.
pub fn parse_connect_rate(s: &str) -> Result<f64, String> {
    parse_per_sec_in(s, load::MIN_RATE, load::MAX_CONNECT_RATE, "connect rate")
}

/// Parses a whole number per second from 1 to `u32::MAX`, with `k` or
/// `M` if wished (`--udp-rate-limit 20k`).
///
/// # Errors
///
/// Not a number, not whole, or out of that range.
pub fn parse_pps(s: &str) -> Result<u32, String> {
    parse_per_sec(s)
        .ok()
        .filter(|x| x.fract() == 0.0 && (1.0..=f64::from(u32::MAX)).contains(x))
        // In range and whole: the conversion is exact.
        .map(|x| x as u32)
        .ok_or_else(|| {
            format!(
                "invalid rate '{s}': expected a whole number from 1 to {}, like 100, 20k or 1M",
                u32::MAX
            )
        })
}

/// Parses a measured window (`--duration`): more than 0 s, at most a year.
///
/// # Errors
///
/// Not a duration, zero (or rounding to zero), negative, or too long.
pub fn parse_window(s: &str) -> Result<Duration, String> {
    parse_duration(s)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            format!(
                "invalid duration '{s}': expected more than 0 and at most a year, {DURATION_FORMS}"
            )
        })
}

/// Parses a timeout that may be 0 (`--drain-timeout`): 0 to an hour.
///
/// # Errors
///
/// Not a duration, negative, or over an hour.
pub fn parse_timeout(s: &str) -> Result<Duration, String> {
    parse_duration_in(s, Duration::ZERO, load::MAX_TIMEOUT)
}

/// Parses a timeout that must not be 0 (`--udp-timeout`,
/// `--connect-timeout`, the client's `--timeout`): 1 ms to an hour.
///
/// # Errors
///
/// Not a duration, under a millisecond, or over an hour.
pub fn parse_nonzero_timeout(s: &str) -> Result<Duration, String> {
    parse_duration_in(s, load::MIN_TIMEOUT, load::MAX_TIMEOUT)
}

fn parse_duration_in(s: &str, min: Duration, max: Duration) -> Result<Duration, String> {
    parse_duration(s)
        .ok()
        .filter(|d| (min..=max).contains(d))
        .ok_or_else(|| {
            format!(
                "invalid duration '{s}': expected {} to {}, {DURATION_FORMS}",
                short_duration(min),
                short_duration(max)
            )
        })
}

/// A bound in the unit it is round in: `1h`, `1ms`, `0`.
fn short_duration(d: Duration) -> String {
    let ms = d.as_millis();
    match ms {
        0 => "0".into(),
        _ if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        _ if ms % 60_000 == 0 => format!("{}m", ms / 60_000),
        _ if ms % 1000 == 0 => format!("{}s", ms / 1000),
        _ => format!("{ms}ms"),
    }
}

/// Parses a percentage from 0 to 100.
///
/// # Errors
///
/// Not a number, or outside 0..=100.
pub fn parse_percent(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .ok()
        .filter(|x| (0.0..=100.0).contains(x))
        .ok_or_else(|| format!("invalid percentage '{s}': expected a number from 0 to 100"))
}

/// Zero seconds means "off" for the timeouts.
fn nonzero(d: Duration) -> Option<Duration> {
    (!d.is_zero()).then_some(d)
}

/// Parses `IP:PORT` (`127.0.0.1:7007`, `[::1]:7007`) or `localhost:PORT`
/// (127.0.0.1, where this server listens by default).
///
/// # Errors
///
/// A message naming the bad input and the expected form.
pub fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Some(port) = s.strip_prefix("localhost:") {
        if let Ok(port) = port.parse::<u16>() {
            return Ok(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port));
        }
    }
    Err(format!(
        "invalid address '{s}': expected IP:PORT or localhost:PORT, like 127.0.0.1:7007, \
[::1]:7007, localhost:7007 or 0.0.0.0:7007 (every IPv4 address)"
    ))
}

/// Where `serve` listens, as one `--tcp` or `--udp` gave it: one address,
/// or two for `:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenAddr(pub Vec<SocketAddr>);

/// Parses a listening address: what [`parse_addr`] takes, or `:PORT` for
/// every address of both IP versions (`0.0.0.0:PORT` and `[::]:PORT`, two
/// sockets, since IPv6 sockets here are IPv6 only), the habit of Go's
/// `:8080` and Docker's `-p`.
///
/// # Errors
///
/// A message naming the bad input and the forms accepted.
pub fn parse_listen_addr(s: &str) -> Result<ListenAddr, String> {
    if let Some(port) = s.strip_prefix(':') {
        let port: u16 = port.parse().map_err(|_| {
            format!("invalid address '{s}': :PORT needs a port from 0 to 65535, like :7007")
        })?;
        return Ok(ListenAddr(vec![
            SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port),
            SocketAddr::new(std::net::Ipv6Addr::UNSPECIFIED.into(), port),
        ]));
    }
    parse_addr(s)
        .map(|addr| ListenAddr(vec![addr]))
        .map_err(|e| format!("{e}, or :7007 (every address, IPv4 and IPv6)"))
}

/// Parses a `--mode` name.
///
/// # Errors
///
/// The names of the known modes.
pub fn parse_mode(s: &str) -> Result<Mode, String> {
    s.parse::<Mode>().map_err(|e| e.to_string())
}

/// Parses a load `--expect` name: only the modes that answer byte for
/// byte can be checked.
pub fn parse_expect(s: &str) -> Result<Mode, String> {
    match s.parse::<Mode>() {
        Ok(m) if m.is_byte_transform() => Ok(m),
        Ok(m) => Err(format!("cannot check a {m} server: expected echo or upper")),
        Err(_) => Err(format!("unknown mode '{s}' (expected echo or upper)")),
    }
}

/// The forms a duration takes, for error messages.
const DURATION_FORMS: &str = "like 10 or 0.5 (seconds), or with a unit: 500ms, 10s, 1m, 2h";

/// Splits a duration as written into its number and the seconds one unit
/// of it is worth: `500ms` is (500, 0.001), a plain `5` is (5, 1).
fn duration_parts(s: &str) -> Option<(f64, f64)> {
    let t = s.trim();
    // "ms" and "us" before "s" and "m", which they end with and start with.
    let (number, unit) = [
        ("ms", 1e-3),
        ("us", 1e-6),
        ("µs", 1e-6),
        ("s", 1.0),
        ("m", 60.0),
        ("h", 3600.0),
    ]
    .iter()
    .find_map(|(unit, secs)| t.strip_suffix(unit).map(|n| (n.trim_end(), *secs)))
    .unwrap_or((t, 1.0));
    number.parse::<f64>().ok().map(|n| (n, unit))
}

/// Parses a duration: a number with a unit (`500ms`, `10s`, `1.5m`,
/// `2h`) or a plain number of seconds (`5`, `0.25`), from 0 to a year.
/// Every flag that takes a duration reads it here.
///
/// # Errors
///
/// Not one of those forms, negative, or longer than a year; the message
/// shows the forms.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (number, unit) =
        duration_parts(s).ok_or_else(|| format!("invalid duration '{s}': {DURATION_FORMS}"))?;
    Duration::try_from_secs_f64(number * unit)
        .ok()
        .filter(|d| *d <= load::MAX_WINDOW)
        .ok_or_else(|| {
            format!("invalid duration '{s}': must be between 0 and a year, {DURATION_FORMS}")
        })
}

/// The shortest period a repeating flag accepts: anything shorter turns a
/// report into a busy loop (`--stats 1e-9` logged 270,000 lines a second).
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// Parses the period of something that repeats or a timeout the sweep
/// enforces (`--stats`, `--idle-timeout`, `--write-timeout`): a duration
/// as [`parse_duration`] reads it, 0 for off, otherwise at least
/// [`MIN_INTERVAL`]. The check is on the number as written, so `1e-300`
/// is too short rather than a zero that silently means off.
///
/// # Errors
///
/// What `parse_duration` refuses, and periods between 0 and 100 ms.
pub fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    let written = duration_parts(s).map_or(0.0, |(number, _)| number);
    if written != 0.0 && d < MIN_INTERVAL {
        return Err(format!(
            "interval '{s}' is too short: must be 0 (off) or at least 100ms"
        ));
    }
    Ok(d)
}

/// True when a fault of `kind` can do something in `mode` on the listeners
/// given: the per-reply faults act on replies to requests, which only echo
/// and upper make on a stream; discard makes no output at all.
fn fault_acts_in_mode(kind: &FaultKind, mode: Mode, streams: bool, datagrams: bool) -> bool {
    let on_streams = streams
        && kind.applies_to_tcp()
        && match mode {
            Mode::Echo | Mode::Upper => true,
            Mode::Discard => matches!(kind, FaultKind::Stall),
            Mode::Chargen | Mode::Daytime | Mode::Time => {
                matches!(kind, FaultKind::Rate(_) | FaultKind::Stall)
            }
        };
    let on_datagrams = datagrams && kind.applies_to_udp() && mode != Mode::Discard;
    on_streams || on_datagrams
}

impl ServeArgs {
    /// The `--fault` flags as a plan, checked against the listeners: each
    /// kind once, and every kind acting on some listener given.
    fn fault_plan(&self, config: &ServerConfig) -> Result<Option<FaultPlan>, String> {
        if self.faults.is_empty() {
            return match self.fault_seed {
                Some(_) => Err("--fault-seed without any --fault".into()),
                None => Ok(None),
            };
        }
        let mut seen = Vec::new();
        for f in &self.faults {
            let name = f.kind.name();
            if seen.contains(&name) {
                return Err(format!("--fault {name} given twice: give each kind once"));
            }
            seen.push(name);
            let streams = !config.tcp.is_empty() || !config.tls.is_empty();
            let datagrams = !config.udp.is_empty();
            let fits =
                (streams && f.kind.applies_to_tcp()) || (datagrams && f.kind.applies_to_udp());
            if fits && !fault_acts_in_mode(&f.kind, self.mode, streams, datagrams) {
                return Err(format!(
                    "--fault {name} cannot act on --mode {}: {}",
                    echo_reactor::Service::name(&self.mode),
                    match self.mode {
                        Mode::Discard => "discard sends nothing, so only stall acts on it, and only on TCP and TLS connections",
                        _ => "on a stream its output is not replies to requests, so only rate and stall act on its TCP and TLS connections",
                    }
                ));
            }
            if !fits {
                let listeners = match (streams, datagrams) {
                    (true, false) => "TCP and TLS only",
                    (false, true) => "UDP only",
                    _ => "none",
                };
                let acts_on = match (f.kind.applies_to_tcp(), f.kind.applies_to_udp()) {
                    (true, true) => "TCP, TLS and UDP",
                    (true, false) => "TCP and TLS connections",
                    _ => "UDP replies",
                };
                return Err(format!(
                    "--fault {name} acts on {acts_on}, and the listeners given are {listeners}"
                ));
            }
        }
        let seed = self.fault_seed.unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        });
        Ok(Some(FaultPlan {
            faults: self.faults.clone(),
            seed,
        }))
    }
}

/// Parses a `--fault`: `KIND[=VALUE][@PROBABILITY]`.
///
/// # Errors
///
/// An unknown kind, a value missing, unexpected or out of range, or a
/// probability outside 0 to 1, each naming the accepted forms.
pub fn parse_fault(s: &str) -> Result<Fault, String> {
    const FORMS: &str = "delay=DURATION, rate=BYTES_PER_SEC, slice=BYTES, close, reset, \
stall, corrupt, drop; each with an optional @PROBABILITY from 0 to 1";
    let (spec, probability) = match s.rsplit_once('@') {
        Some((spec, p)) => {
            let p: f64 = p
                .parse()
                .ok()
                .filter(|p: &f64| (0.0..=1.0).contains(p))
                .ok_or_else(|| format!("invalid probability '{p}' in '{s}': expected 0 to 1"))?;
            (spec, p)
        }
        None => (s, 1.0),
    };
    let (name, value) = match spec.split_once('=') {
        Some((n, v)) => (n, Some(v)),
        None => (spec, None),
    };
    let need =
        |what: &str| value.ok_or_else(|| format!("--fault {name} needs a value: {name}={what}"));
    let kind = match name {
        "delay" => {
            let d = parse_duration(need("DURATION")?)?;
            if d < Duration::from_micros(1) || d > Duration::from_secs(3600) {
                return Err(format!("invalid delay in '{s}': 1us to 1h"));
            }
            FaultKind::Delay(d)
        }
        "rate" => {
            let r = parse_per_sec(need("BYTES_PER_SEC")?)?;
            if !(1.0..=1e10).contains(&r) {
                return Err(format!("invalid rate in '{s}': 1 to 10G bytes a second"));
            }
            FaultKind::Rate(r as u64)
        }
        "slice" => {
            let v = need("BYTES")?;
            let n: usize = v
                .parse()
                .ok()
                .filter(|n| (1..=1 << 20).contains(n))
                .ok_or_else(|| format!("invalid slice '{v}' in '{s}': 1 to 1048576 bytes"))?;
            FaultKind::Slice(n)
        }
        "close" | "reset" | "stall" | "corrupt" | "drop" if value.is_some() => {
            return Err(format!(
                "--fault {name} takes no value, only @PROBABILITY: '{s}'"
            ));
        }
        "close" => FaultKind::Close,
        "reset" => FaultKind::Reset,
        "stall" => FaultKind::Stall,
        "corrupt" => FaultKind::Corrupt,
        "drop" => FaultKind::Drop,
        other => return Err(format!("unknown fault '{other}': expected {FORMS}")),
    };
    Ok(Fault { kind, probability })
}

/// Parses a timeout that cannot be off (`--tls-handshake-timeout`,
/// `--proxy-timeout`): as [`parse_interval`], and not 0.
///
/// # Errors
///
/// What `parse_interval` refuses, and 0.
pub fn parse_nonzero_interval(s: &str) -> Result<Duration, String> {
    let d = parse_interval(s)?;
    if d.is_zero() {
        return Err(format!("'{s}': this timeout cannot be off; at least 100ms"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_subcommand_help_lists_each_flag_with_its_default() {
        use clap::CommandFactory;
        let mut cmd = Cli::command();
        for sub in cmd.get_subcommands_mut() {
            let help = sub.render_long_help().to_string();
            for arg in sub.get_arguments() {
                if let Some(long) = arg.get_long() {
                    assert!(
                        help.contains(&format!("--{long}")),
                        "{} --help lacks --{long}:\n{help}",
                        sub.get_name()
                    );
                }
                let defaults: Vec<String> = arg
                    .get_default_values()
                    .iter()
                    .map(|v| v.to_string_lossy().into_owned())
                    .collect();
                // A switch's implied `false` is not a default worth showing.
                if !defaults.is_empty() && arg.get_action().takes_values() {
                    let shown = format!("[default: {}]", defaults.join(","));
                    assert!(
                        help.contains(&shown),
                        "{} --help lacks {shown} for {:?}:\n{help}",
                        sub.get_name(),
                        arg.get_id()
                    );
                }
            }
        }
    }

    fn serve(args: &[&str]) -> Result<ServeArgs, clap::Error> {
        let mut argv = vec!["echo-reactor", "serve"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).map(|cli| match cli.command {
            Command::Serve(a) => a,
            other => panic!("parsed as {other:?}"),
        })
    }

    fn load(args: &[&str]) -> Result<LoadArgs, clap::Error> {
        let mut argv = vec!["echo-reactor", "load"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).map(|cli| match cli.command {
            Command::Load(a) => a,
            other => panic!("parsed as {other:?}"),
        })
    }

    /// The config of `a`, its host resolved without a lookup (an address
    /// or localhost: no test here asks a resolver).
    fn config(a: &LoadArgs) -> LoadConfig {
        a.to_config(a.url.host.resolve().expect("a literal or localhost")[0])
    }

    #[test]
    fn load_defaults_follow_the_issue() {
        let c = config(&load(&["tcp://127.0.0.1:7007"]).unwrap());
        assert_eq!(c.target.to_string(), "tcp://127.0.0.1:7007");
        assert_eq!(
            (c.connections, c.size, c.pipeline, c.threads),
            (100, 64, 1, 1)
        );
        assert_eq!(c.duration, Duration::from_secs(10));
        assert_eq!(
            (c.rate, c.expect, c.max_loss_percent),
            (None, Mode::Echo, 1.0)
        );
        assert_eq!(c.drain_timeout, Duration::from_secs(2));
        assert_eq!(c.udp_reply_timeout, Duration::from_millis(500));
        assert!(!c.reconnect);
        assert!(c.validate().is_ok());
    }

    #[test]
    fn load_options_parse_into_the_config() {
        let a = load(&[
            "udp://[::1]:9",
            "-c",
            "7",
            "-d",
            "1.5",
            "--size",
            "100",
            "--pipeline",
            "4",
            "--rate",
            "200",
            "--expect",
            "upper",
            "--connect-rate",
            "50",
            "--warmup",
            "0.5",
            "--threads",
            "2",
            "--json",
            "--latency",
            "--max-loss",
            "5",
            "--drain-timeout",
            "3",
            "--udp-timeout",
            "0.25",
            "--reconnect",
            "--segment",
            "1/3",
            "--start-at",
            "2026-01-01T00:00:00Z",
            "--source",
            "::1,::2",
            "--source",
            "::3",
        ])
        .unwrap();
        assert!(a.json && a.latency);
        let c = config(&a);
        assert_eq!(c.target.proto, Proto::Udp);
        assert_eq!(
            (c.connections, c.size, c.pipeline, c.threads),
            (7, 100, 4, 2)
        );
        assert_eq!(c.duration, Duration::from_millis(1500));
        assert_eq!(c.warmup, Duration::from_millis(500));
        assert_eq!((c.rate, c.connect_rate), (Some(200.0), Some(50.0)));
        assert_eq!((c.expect, c.max_loss_percent), (Mode::Upper, 5.0));
        assert_eq!(c.drain_timeout, Duration::from_secs(3));
        assert_eq!(c.udp_reply_timeout, Duration::from_millis(250));
        assert!(c.reconnect);
        assert_eq!(c.segment, Segment { index: 1, count: 3 });
        assert_eq!(
            c.start_at,
            Some(std::time::UNIX_EPOCH + Duration::from_secs(1_767_225_600))
        );
        let sources: Vec<IpAddr> = ["::1", "::2", "::3"].map(|a| a.parse().unwrap()).into();
        assert_eq!(c.sources, sources);
    }

    #[test]
    fn churn_parses_within_its_range_and_reset_needs_it() {
        let c = config(&load(&["tcp://127.0.0.1:9", "--churn", "10", "--churn-reset"]).unwrap());
        assert_eq!((c.churn, c.churn_reset), (Some(10), true));
        let c = config(&load(&["tcp://127.0.0.1:9"]).unwrap());
        assert_eq!((c.churn, c.churn_reset), (None, false));
        for bad in [
            &["tcp://127.0.0.1:9", "--churn", "0"][..],
            &["tcp://127.0.0.1:9", "--churn", "1000000001"],
            &["tcp://127.0.0.1:9", "--churn-reset"],
        ] {
            assert!(load(bad).is_err(), "{bad:?}");
        }
        // UDP has no connection to churn: refused when the settings meet.
        let c = config(&load(&["udp://127.0.0.1:9", "--churn", "1"]).unwrap());
        assert!(c.validate().is_err());
    }

    #[test]
    fn bad_load_input_is_a_usage_error() {
        for bad in [
            &[][..],
            &["http://127.0.0.1:7007"],
            &["tcp://127.0.0.1"],
            &["tcp://nowhere"],
            &["tcp://:7"],
            &["tcp://::1:7"],
            &["tcp://127.0.0.1:0"],
            &["tcp://127.0.0.1:7", "--connections", "0"],
            &["tcp://127.0.0.1:7", "--size", "0"],
            &["tcp://127.0.0.1:7", "--pipeline", "0"],
            &["tcp://127.0.0.1:7", "--rate", "0"],
            &["tcp://127.0.0.1:7", "--rate", "fast"],
            &["tcp://127.0.0.1:7", "--expect", "lower"],
            &["tcp://127.0.0.1:7", "--max-loss", "101"],
            &["tcp://127.0.0.1:7", "--duration", "-1"],
        ] {
            let err = load(bad).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad:?}");
        }
    }

    /// Values at and past every edge a number can have.
    const EXTREMES: &[&str] = &[
        "0",
        "-0",
        "-1",
        "1",
        "0.0001",
        "1e-300",
        "5e-324",
        "1e300",
        "1e10",
        "1.7976931348623157e308",
        "nan",
        "inf",
        "-inf",
        "4096",
        "4097",
        "65507",
        "65508",
        "1000000",
        "1000001",
        "4294967296",
        "9223372036854775807",
        "18446744073709551615",
        "18446744073709551616",
        "",
        "0x10",
        "1,5",
    ];

    const NUMERIC_LOAD_FLAGS: &[&str] = &[
        "--connections",
        "--duration",
        "--size",
        "--pipeline",
        "--rate",
        "--connect-rate",
        "--warmup",
        "--threads",
        "--max-loss",
        "--drain-timeout",
        "--udp-timeout",
        "--connect-timeout",
    ];

    /// Parses, builds and validates `args` against an open-file limit of
    /// 20000; a value either is refused with exit 2 or makes a config
    /// whose schedule can be computed. Nothing may panic.
    fn parse_and_validate(args: &[&str]) -> Result<LoadConfig, i32> {
        let a = load(args).map_err(|e| e.exit_code())?;
        let c = config(&a);
        match c.validate_with_fd_limit(Some(20_000)) {
            Ok(()) => {
                if c.rate.is_some() {
                    let every = c.message_interval().expect("a valid rate has an interval");
                    assert!(!every.is_zero(), "{args:?}");
                }
                if c.connect_rate.is_some() {
                    assert!(c.connect_interval().is_some(), "{args:?}");
                }
                Ok(c)
            }
            Err(_) => Err(2),
        }
    }

    #[test]
    fn extreme_values_of_every_numeric_load_flag_are_refused_or_run() {
        for proto in ["tcp://127.0.0.1:7", "udp://127.0.0.1:7"] {
            for flag in NUMERIC_LOAD_FLAGS {
                for value in EXTREMES {
                    let args = [proto, flag, value];
                    match parse_and_validate(&args) {
                        Ok(c) => {
                            assert!((1..=load::MAX_CONNECTIONS).contains(&c.connections));
                            assert!((1..=load::MAX_PIPELINE).contains(&c.pipeline));
                            assert!(c.rate.map_or(true, |r| r <= load::MAX_RATE));
                        }
                        Err(code) => assert_eq!(code, 2, "{args:?}"),
                    }
                }
            }
        }
    }

    #[test]
    fn the_values_the_issue_found_are_usage_errors() {
        for args in [
            &["tcp://127.0.0.1:7", "--pipeline", "18446744073709551615"][..],
            &["tcp://127.0.0.1:7", "--connections", "18446744073709551615"],
            &["tcp://127.0.0.1:7", "--connect-rate", "1e-300"],
            &["tcp://127.0.0.1:7", "--rate", "1e10"],
            &["tcp://127.0.0.1:7", "--connections", "19990"],
            &["tcp://127.0.0.1:7", "--duration", "1e-300"],
        ] {
            assert_eq!(parse_and_validate(args).err(), Some(2), "{args:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_rates_and_durations_are_refused_or_run(
            rate in proptest::num::f64::ANY,
            connect_rate in proptest::num::f64::ANY,
            secs in proptest::num::f64::ANY,
            connections in 1u64..=2_000_000,
            threads in 1u64..=300,
        ) {
            let (rate, connect_rate, secs) =
                (rate.to_string(), connect_rate.to_string(), secs.to_string());
            let (connections, threads) = (connections.to_string(), threads.to_string());
            let args = [
                "tcp://127.0.0.1:7", "--rate", &rate, "--connect-rate", &connect_rate,
                "-d", &secs, "--warmup", &secs, "--drain-timeout", &secs,
                "-c", &connections, "--threads", &threads,
            ];
            if let Err(code) = parse_and_validate(&args) {
                proptest::prop_assert_eq!(code, 2);
            }
        }
    }

    #[test]
    fn a_bare_address_is_a_tcp_target_and_errors_mention_localhost() {
        let c = config(&load(&["127.0.0.1:7007"]).unwrap());
        assert_eq!(c.target.to_string(), "tcp://127.0.0.1:7007");
        assert_eq!(c.host, None, "an address is no name");
        let c = config(&load(&["localhost:9"]).unwrap());
        assert_eq!(c.target.to_string(), "tcp://127.0.0.1:9");
        assert_eq!(c.host.as_deref(), Some("localhost"));
        let err = load(&["nowhere"]).unwrap_err().to_string();
        assert!(err.contains("localhost:7007"), "{err}");
        let err = parse_addr("nowhere").unwrap_err();
        assert!(err.contains("localhost:PORT"), "{err}");
    }

    #[test]
    fn host_names_are_taken_as_written_and_resolved_later() {
        let a = load(&["tcp://echo-reactor:7007"]).unwrap();
        assert_eq!(a.url.host.to_string(), "echo-reactor:7007");
        assert!(a.url.host.is_name());
        let c = a.to_config("10.0.0.5:7007".parse().unwrap());
        assert_eq!(c.host.as_deref(), Some("echo-reactor"));
        assert_eq!(c.target.to_string(), "tcp://10.0.0.5:7007");
        let u = load(&["udp://gen-0.example.com:9"]).unwrap();
        assert_eq!((u.url.proto, u.url.host.port), (Proto::Udp, 9));
    }

    /// The `cli` fuzz target's range check: "at most a year" held only
    /// for whole seconds, so up to a year and 999 ms more got through
    /// (`--stats 31536000.5` ran, `-d 8760.0001h` failed later, in
    /// `validate`, with another message).
    #[test]
    fn a_duration_is_at_most_a_year_fractions_included() {
        assert_eq!(parse_duration("31536000"), Ok(load::MAX_WINDOW));
        assert_eq!(parse_duration("8760h"), Ok(load::MAX_WINDOW));
        for bad in ["31536000.5", "31536000.001", "8760.0001h", "525600.01m"] {
            let err = parse_duration(bad).unwrap_err();
            assert!(err.contains("between 0 and a year"), "{bad}: {err}");
        }
    }

    #[test]
    fn a_tls_url_takes_the_tls_flags_and_names_its_host_for_the_certificate() {
        let a = load(&[
            "tls://localhost:7443",
            "--tls-insecure",
            "--proxy-protocol",
            "v2",
        ])
        .unwrap();
        assert_eq!(a.url.proto, Proto::Tls);
        let tls = a.tls_connector().expect("settings").expect("tls");
        assert_eq!(tls.server_name(), "localhost", "the URL's host by default");
        assert!(!tls.is_verified());
        let c = config(&a);
        assert_eq!(c.target.to_string(), "tls://127.0.0.1:7443");
        assert_eq!(c.proxy_protocol, Some(ProxyVersion::V2));
        let a = load(&[
            "tls://[::1]:7443",
            "--tls-insecure",
            "--tls-sni",
            "echo.example",
        ])
        .unwrap();
        let tls = a.tls_connector().expect("settings").expect("tls");
        assert_eq!(tls.server_name(), "echo.example");
        // Without tls://, the flags are refused; without flags, nothing.
        let a = load(&["tcp://127.0.0.1:9", "--tls-sni", "x"]).unwrap();
        assert!(a.tls_connector().unwrap_err().contains("tls://"));
        let a = load(&["tcp://127.0.0.1:9"]).unwrap();
        assert!(a.tls_connector().expect("plain").is_none());
        assert!(load(&["tls://127.0.0.1:9", "--tls-insecure", "--tls-ca", "x.pem"]).is_err());
        assert!(load(&["tcp://127.0.0.1:9", "--proxy-protocol", "v3"]).is_err());
    }

    #[test]
    fn durations_take_units_and_plain_numbers_stay_seconds() {
        for (s, want) in [
            ("10", Duration::from_secs(10)),
            ("0.5", Duration::from_millis(500)),
            ("500ms", Duration::from_millis(500)),
            ("10s", Duration::from_secs(10)),
            ("1m", Duration::from_secs(60)),
            ("1.5m", Duration::from_secs(90)),
            ("2h", Duration::from_secs(7200)),
            (" 3 s ", Duration::from_secs(3)),
            ("1e3ms", Duration::from_secs(1)),
            ("250us", Duration::from_micros(250)),
            ("1µs", Duration::from_micros(1)),
        ] {
            assert_eq!(parse_duration(s), Ok(want), "{s}");
        }
        for bad in [
            "", "s", "ten", "10x", "10 sec", "-1s", "1ns", "nan", "infh", "9000h",
        ] {
            let err = parse_duration(bad).unwrap_err();
            assert!(err.contains("500ms, 10s, 1m, 2h"), "{bad}: {err}");
        }
        let a = load(&["tcp://127.0.0.1:7", "-d", "1m", "--warmup", "500ms"]).unwrap();
        let c = config(&a);
        assert_eq!(
            (c.duration, c.warmup),
            (Duration::from_secs(60), Duration::from_millis(500))
        );
        let a = load(&[
            "tcp://127.0.0.1:7",
            "--drain-timeout",
            "250ms",
            "--connect-timeout",
            "1m",
        ])
        .unwrap();
        assert_eq!(a.drain_timeout, Duration::from_millis(250));
        assert_eq!(a.connect_timeout, Duration::from_secs(60));
        let err = load(&["tcp://127.0.0.1:7", "--connect-timeout", "2h"]).unwrap_err();
        assert!(err.to_string().contains("expected 1ms to 1h"), "{err}");
        let c = serve(&[
            "--shutdown-timeout",
            "1m",
            "--idle-timeout",
            "5m",
            "--stats",
            "500ms",
        ])
        .unwrap()
        .to_config()
        .expect("config");
        assert_eq!(c.shutdown_timeout, Duration::from_secs(60));
        assert_eq!(c.idle_timeout, Some(Duration::from_secs(300)));
        assert_eq!(c.stats_interval, Some(Duration::from_millis(500)));
        let err = serve(&["--stats", "50ms"]).unwrap_err().to_string();
        assert!(err.contains("too short"), "{err}");
    }

    #[test]
    fn rates_take_k_and_m() {
        let a = load(&[
            "tcp://127.0.0.1:7",
            "--rate",
            "20k",
            "--connect-rate",
            "1.5k",
        ])
        .unwrap();
        assert_eq!((a.rate, a.connect_rate), (Some(20_000.0), Some(1_500.0)));
        assert_eq!(
            load(&["tcp://127.0.0.1:7", "--rate", "10M"]).unwrap().rate,
            Some(1e7)
        );
        let err = load(&["tcp://127.0.0.1:7", "--rate", "11M"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("20k or 1.5M"), "{err}");
        for bad in ["20x", "k", "-1k", "20kk", "1m"] {
            assert!(parse_per_sec(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_per_sec("10G"), Ok(1e10));
        // The fault flags' documented ends are accepted.
        assert!(parse_fault("rate=10G").is_ok());
        assert!(parse_fault("delay=1us").is_ok());
        assert!(parse_fault("rate=11G").is_err());
        let c = serve(&["--udp-rate-limit", "20k"])
            .unwrap()
            .to_config()
            .expect("config");
        assert_eq!(c.udp_rate_limit, Some(20_000));
        for bad in ["0", "0.5", "1.5", "5000M"] {
            assert_eq!(
                serve(&["--udp-rate-limit", bad]).unwrap_err().exit_code(),
                2,
                "{bad}"
            );
        }
    }

    #[test]
    fn port_is_short_for_loopback_tcp_and_udp_and_a_bare_port_is_every_address() {
        let c = serve(&["-p", "7010"]).unwrap().to_config().expect("config");
        let lo: SocketAddr = "127.0.0.1:7010".parse().unwrap();
        assert_eq!((c.tcp.clone(), c.udp.clone()), (vec![lo], vec![lo]));
        let c = serve(&["--port", "7010", "--tcp", "[::1]:7011"])
            .unwrap()
            .to_config()
            .expect("config");
        assert_eq!(c.tcp, vec!["[::1]:7011".parse().unwrap(), lo]);
        assert_eq!(c.udp, vec![lo]);
        let c = serve(&["--tcp", ":7012"])
            .unwrap()
            .to_config()
            .expect("config");
        assert_eq!(
            c.tcp,
            vec![
                "0.0.0.0:7012".parse().unwrap(),
                "[::]:7012".parse::<SocketAddr>().unwrap()
            ]
        );
        assert!(c.udp.is_empty());
        for bad in [
            &["--tcp", ":"][..],
            &["--udp", ":x"],
            &["-p", "70000"],
            &["--port"],
        ] {
            assert_eq!(serve(bad).unwrap_err().exit_code(), 2, "{bad:?}");
        }
    }

    #[test]
    fn udp_batch_and_short_read_are_switches_that_still_take_a_value() {
        let c = serve(&["--udp-batch"])
            .unwrap()
            .to_config()
            .expect("config");
        assert!(c.udp_batch);
        let c = serve(&["--udp-batch", "--short-read", "--tcp", "127.0.0.1:0"])
            .unwrap()
            .to_config()
            .expect("config");
        assert!(c.udp_batch && c.short_read);
        let c = serve(&["--udp-batch", "false", "--short-read", "false"])
            .unwrap()
            .to_config()
            .expect("config");
        assert!(!c.udp_batch && !c.short_read);
        assert!(
            serve(&["--udp-batch=true"])
                .unwrap()
                .to_config()
                .expect("config")
                .udp_batch
        );
        assert_eq!(serve(&["--udp-batch", "yes"]).unwrap_err().exit_code(), 2);
    }

    #[test]
    fn no_addresses_means_tcp_and_udp_on_7007() {
        let config = serve(&[]).unwrap().to_config().expect("config");
        assert_eq!(config.tcp, vec![DEFAULT_ADDR]);
        assert_eq!(config.udp, vec![DEFAULT_ADDR]);
        assert_eq!(config.backlog, 1024);
        assert_eq!(config.shutdown_timeout, Duration::from_secs(5));
        assert_eq!(config.service.name(), "echo");
        assert_eq!(config.idle_timeout, None);
        assert_eq!(config.write_timeout, Some(Duration::from_secs(60)));
        assert_eq!(config.udp_rate_limit, None);
    }

    #[test]
    fn timeouts_and_rate_limit_parse_and_zero_turns_a_timeout_off() {
        let c = serve(&[
            "--idle-timeout",
            "2.5",
            "--write-timeout",
            "0",
            "--udp-rate-limit",
            "100",
        ])
        .unwrap()
        .to_config()
        .expect("config");
        assert_eq!(c.idle_timeout, Some(Duration::from_millis(2500)));
        assert_eq!(c.write_timeout, None);
        assert_eq!(c.udp_rate_limit, Some(100));
        for bad in [
            &["--udp-rate-limit", "0"][..],
            &["--idle-timeout", "-1"],
            &["--write-timeout", "later"],
        ] {
            assert_eq!(serve(bad).unwrap_err().exit_code(), 2, "{bad:?}");
        }
    }

    #[test]
    fn only_the_given_sockets_are_bound() {
        let config = serve(&["--tcp", "[::1]:0", "--tcp", "127.0.0.1:9"])
            .unwrap()
            .to_config()
            .expect("config");
        assert_eq!(config.tcp.len(), 2);
        assert!(config.udp.is_empty());
        let config = serve(&["--udp", "127.0.0.1:0"])
            .unwrap()
            .to_config()
            .expect("config");
        assert!(config.tcp.is_empty());
    }

    #[test]
    fn options_parse_into_the_config() {
        let a = serve(&[
            "--mode",
            "upper",
            "--backlog",
            "5",
            "--max-pending",
            "4096",
            "--shutdown-timeout",
            "0.5",
            "--short-read",
            "false",
            "--max-connections",
            "10",
            "--threads",
            "2",
        ])
        .unwrap();
        let c = a.to_config().expect("config");
        assert_eq!(c.service.name(), "upper");
        assert_eq!(c.backlog, 5);
        assert_eq!((c.watermarks.high, c.watermarks.low), (4096, 1024));
        assert_eq!(c.shutdown_timeout, Duration::from_millis(500));
        assert!(!c.short_read);
        assert_eq!(c.max_connections, Some(10));
        assert_eq!(a.threads, 2);
    }

    #[test]
    fn bad_values_are_usage_errors() {
        for bad in [
            &["--mode", "shout"][..],
            &["--tcp", "nowhere"],
            &["--tcp", "127.0.0.1"],
            &["--udp", "127.0.0.1:70000"],
            &["--backlog", "0"],
            &["--backlog", "-3"],
            &["--shutdown-timeout", "-1"],
            &["--shutdown-timeout", "soon"],
            &["--max-connections", "0"],
            &["--threads", "0"],
            &["--frobnicate"],
        ] {
            let err = serve(bad).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad:?}");
        }
    }

    #[test]
    fn a_stats_interval_under_a_tenth_of_a_second_is_a_usage_error() {
        for bad in ["1e-9", "0.05", "0.0999"] {
            let err = serve(&["--stats", bad]).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad}");
            assert!(err.to_string().contains("too short"), "{err}");
        }
        let ok = |s| {
            serve(&["--stats", s])
                .unwrap()
                .to_config()
                .expect("config")
                .stats_interval
        };
        assert_eq!(ok("0.1"), Some(Duration::from_millis(100)));
        assert_eq!(ok("0"), None, "0 turns the line off");
    }

    #[test]
    fn timeouts_and_intervals_too_short_to_mean_anything_are_usage_errors() {
        // 1e-300 s rounds to a zero Duration; it must not silently mean off.
        for flag in ["--stats", "--idle-timeout", "--write-timeout"] {
            for bad in ["1e-300", "0.05"] {
                let err = serve(&[flag, bad]).unwrap_err();
                assert_eq!(err.exit_code(), 2, "{flag} {bad}");
                assert!(err.to_string().contains("too short"), "{flag} {bad}: {err}");
            }
        }
        let c = serve(&["--idle-timeout", "0.1", "--write-timeout", "0"])
            .unwrap()
            .to_config()
            .expect("config");
        assert_eq!(c.idle_timeout, Some(Duration::from_millis(100)));
        assert_eq!(c.write_timeout, None, "0 turns it off");
    }

    #[test]
    fn mode_error_names_the_choices() {
        let err = serve(&["--mode", "shout"]).unwrap_err().to_string();
        assert!(err.contains("echo, upper"), "{err}");
    }

    #[test]
    fn stages_read_with_units_and_zero_targets_and_set_the_window() {
        let StageList(stages) = parse_stages("500ms:2k, 1m:2000,30s:0").expect("stages");
        let secs: Vec<f64> = stages.iter().map(|s| s.duration.as_secs_f64()).collect();
        let targets: Vec<f64> = stages.iter().map(|s| s.target).collect();
        assert_eq!(secs, [0.5, 60.0, 30.0]);
        assert_eq!(targets, [2000.0, 2000.0, 0.0]);
        for bad in [
            "",
            "1s",
            "5:100",
            "1s:",
            "1s:1e9",
            "0ms:5",
            "1s:0",
            "1s:5,,2s:5",
        ] {
            assert!(parse_stages(bad).is_err(), "{bad}");
        }
        let config =
            config(&load(&["tcp://127.0.0.1:7", "--stages", "1s:5,2s:5"]).expect("parses"));
        assert_eq!(config.duration, Duration::from_secs(3));
        assert_eq!(config.stages.len(), 2);
        assert!(config.validate_with_fd_limit(None).is_ok());
    }

    #[test]
    fn objectives_name_a_percentile_and_a_latency_with_a_unit() {
        let o = parse_objective("p99.9=250us").expect("objective");
        assert_eq!(o.percentile, Percentile::P999);
        assert_eq!(o.latency, Duration::from_micros(250));
        assert_eq!(o.to_string(), "p99.9=250us");
        assert_eq!(
            parse_objective("p50=1s").expect("objective").to_string(),
            "p50=1s"
        );
        for bad in [
            "p99", "p95=5ms", "p99=5", "p99=0ms", "p99=2h", "=5ms", "p99=fast",
        ] {
            assert!(parse_objective(bad).is_err(), "{bad}");
        }
        // Each step is 5 s and warms up 1 s unless told otherwise.
        let config =
            config(&load(&["tcp://127.0.0.1:7", "--find-max", "p99=5ms"]).expect("parses"));
        assert_eq!(config.duration, Duration::from_secs(5));
        assert_eq!(config.warmup, Duration::from_secs(1));
    }
}
