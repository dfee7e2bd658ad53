//! What a server needs to know before it binds ([`ServerConfig`]), and
//! what can go wrong while it binds ([`ServerError`]). Plain data: the
//! loop and its components read it once, in `Server::bind`.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::buffer::Watermarks;
use super::fault::FaultPlan;
use super::tls::TlsIdentity;
use crate::mode::{Mode, Service};
use crate::net::BindError;

/// Everything a server needs to know before it binds.
///
/// Start from [`ServerConfig::default`] and set the fields you need:
/// new options may be added in any release, so the struct cannot be
/// built field by field from outside the crate.
///
/// ```
/// use echo_reactor::ServerConfig;
/// let mut config = ServerConfig::default();
/// config.tcp.push("127.0.0.1:0".parse().unwrap());
/// config.idle_timeout = Some(std::time::Duration::from_secs(30));
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerConfig {
    /// TCP addresses to listen on.
    pub tcp: Vec<SocketAddr>,
    /// UDP addresses to serve.
    pub udp: Vec<SocketAddr>,
    /// TLS addresses to listen on; they need `tls_identity`.
    pub tls: Vec<SocketAddr>,
    /// The certificate and key the TLS listeners present.
    pub tls_identity: Option<TlsIdentity>,
    /// How long a TLS handshake may take before the connection is closed.
    pub tls_handshake_timeout: Duration,
    /// Every TCP and TLS connection begins with a PROXY protocol header
    /// (v1 or v2), whose source address is then the connection's peer.
    pub proxy_protocol: bool,
    /// How long a connection may take to send its whole PROXY header.
    pub proxy_timeout: Duration,
    /// Faults to inject on purpose (`--fault`); `None`: none, and the
    /// plain path pays nothing.
    pub faults: Option<FaultPlan>,
    /// What to answer.
    pub service: Arc<dyn Service>,
    /// The listen backlog.
    pub backlog: i32,
    /// Per-connection backpressure.
    pub watermarks: Watermarks,
    /// The short-read shortcut (Linux: a read that did not fill the buffer ends the drain).
    pub short_read: bool,
    /// Open connections at most; `None` derives it from the open-file limit.
    pub max_connections: Option<usize>,
    /// How long shutdown waits for pending output to drain.
    pub shutdown_timeout: Duration,
    /// Close a connection with no traffic either way for this long.
    pub idle_timeout: Option<Duration>,
    /// Close a connection whose pending output has not moved for this long.
    pub write_timeout: Option<Duration>,
    /// Answer each UDP source at most this many datagrams per second.
    pub udp_rate_limit: Option<u32>,
    /// Let UDP replies be larger than their requests (chargen's random
    /// 0-512 characters, daytime to short requests). Off: an open port
    /// must not be a reflection amplifier.
    pub udp_allow_amplification: bool,
    /// Log a statistics line this often (`--stats SECS`); only loop 0 does.
    pub stats_interval: Option<Duration>,
    /// Serve Prometheus metrics here (`--metrics ADDR`); only loop 0 does.
    pub metrics: Option<SocketAddr>,
    /// Receive and answer UDP in batches with `recvmmsg`/`sendmmsg`
    /// (Linux; ignored elsewhere). Off by default: on the 2-core test box it
    /// cut syscalls per datagram from 2.05 to 1.3 but did not raise
    /// datagrams per second (see BENCHMARKS.md).
    pub udp_batch: bool,
    /// Listen for SIGINT and SIGTERM (the binary does; embedders may not).
    pub handle_signals: bool,
}

impl Default for ServerConfig {
    /// No sockets yet, echo mode, backlog 1024, 5 s shutdown timeout, 60 s
    /// write timeout, no idle timeout, no UDP rate limit.
    fn default() -> Self {
        ServerConfig {
            tcp: Vec::new(),
            udp: Vec::new(),
            tls: Vec::new(),
            tls_identity: None,
            tls_handshake_timeout: Duration::from_secs(10),
            proxy_protocol: false,
            proxy_timeout: Duration::from_secs(5),
            faults: None,
            service: Arc::new(Mode::Echo),
            backlog: 1024,
            watermarks: Watermarks::default(),
            short_read: cfg!(target_os = "linux"),
            max_connections: None,
            shutdown_timeout: Duration::from_secs(5),
            idle_timeout: None,
            write_timeout: Some(Duration::from_secs(60)),
            udp_rate_limit: None,
            udp_allow_amplification: false,
            stats_interval: None,
            metrics: None,
            udp_batch: false,
            handle_signals: false,
        }
    }
}

/// Setting a server up failed.
#[derive(Debug)]
pub enum ServerError {
    /// A listener or UDP socket could not be bound.
    Bind(BindError),
    /// The poll, waker or signal source could not be created.
    Setup(&'static str, io::Error),
    /// TLS listeners were asked for without a certificate and key.
    NoTlsIdentity,
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerError::Bind(e) => e.fmt(f),
            ServerError::Setup(what, e) => write!(f, "cannot set up {what}: {e}"),
            ServerError::NoTlsIdentity => {
                f.write_str("TLS listeners need a certificate and key (--tls-cert, --tls-key)")
            }
        }
    }
}

impl std::error::Error for ServerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ServerError::Bind(e) => Some(e),
            ServerError::Setup(_, e) => Some(e),
            ServerError::NoTlsIdentity => None,
        }
    }
}

impl From<BindError> for ServerError {
    fn from(e: BindError) -> Self {
        ServerError::Bind(e)
    }
}
