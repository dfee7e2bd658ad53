//! `serve --metrics ADDR`: a Prometheus endpoint on the same poll loop.
//!
//! A third kind of socket beside the echo listeners and UDP sockets: a
//! listener with its own token and at most [`MAX_CLIENTS`] HTTP
//! connections with theirs (see `token`). It speaks just enough HTTP/1.x
//! for a scraper: read one request head (at most [`MAX_REQUEST`] bytes,
//! within [`DEADLINE`] of connecting), answer `GET /metrics` with the text
//! exposition format 0.0.4, 404 for other paths, 405 for other methods,
//! 400 for anything unparsable, then close. A slow, silent or hostile
//! client costs one slot until its deadline and nothing else: the echo
//! traffic never waits for it.
//!
//! The figures are loop 0's own, fresh, plus the other loops' last
//! published snapshots (see `live`).

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use log::{debug, trace};
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry};
use slab::Slab;

use super::live::Snapshot;
use crate::net::{is_interrupted, is_peer_gone, is_would_block, ACCEPT_RETRY};
use crate::server::token;

/// The most scrapers served at once; more are accepted and closed.
pub const MAX_CLIENTS: usize = token::MAX_METRICS_CLIENTS;
/// The largest request head read.
pub const MAX_REQUEST: usize = 8 * 1024;
/// How long a client has from connecting to receiving its answer.
pub const DEADLINE: Duration = Duration::from_secs(5);
/// How long accepting pauses after a round that had to turn clients away:
/// the connections that come meanwhile wait in the backlog, where a
/// scraper's whole request arrives, so the next round answers it on
/// accept; a flood of reconnecting dribblers is turned away once a round
/// instead of as fast as it reconnects.
pub const ACCEPT_PACE: Duration = Duration::from_millis(100);
/// The metrics listener's backlog (the kernel caps it at
/// `net.core.somaxconn`, 4096 by default).
const METRICS_BACKLOG: i32 = 4096;

/// One scraper's connection.
#[derive(Debug)]
struct Client {
    stream: TcpStream,
    request: Vec<u8>,
    response: Vec<u8>,
    sent: usize,
    deadline: Instant,
    /// When it connected: the oldest silent client is the one evicted.
    since: Instant,
    /// Who it is, for log lines.
    peer: SocketAddr,
    /// The round of accepting it came in.
    round: u64,
}

/// What one turn on a client decided.
enum Next {
    Wait,
    Close,
}

/// The listener and its clients.
#[derive(Debug)]
pub struct Endpoint {
    listener: TcpListener,
    addr: SocketAddr,
    clients: Slab<Client>,
    /// Set while accepting waits: when to accept again (descriptors ran
    /// out, or a flood is being paced). The edge that announced the
    /// waiting scraper is spent, so nothing else would.
    retry_at: Option<Instant>,
    /// Rounds of accepting so far: a client accepted in this round cannot
    /// be evicted by a newcomer of the same round.
    round: u64,
}

impl Endpoint {
    /// Binds `addr` and registers it with `registry`.
    ///
    /// # Errors
    ///
    /// What binding or registering says.
    pub fn bind(addr: SocketAddr, registry: &Registry) -> io::Result<Endpoint> {
        // A deep backlog: under a flood of reconnecting connections a full
        // accept queue drops new SYNs, and a dropped SYN is retried only
        // after a second, longer than a scraper waits. The kernel caps it
        // at net.core.somaxconn.
        let opts = crate::net::BindOptions {
            backlog: METRICS_BACKLOG,
            reuse_port: false,
        };
        let mut listener = crate::net::tcp_listener(addr, opts).map_err(|e| e.source)?;
        let addr = listener.local_addr()?;
        registry.register(&mut listener, token::METRICS, Interest::READABLE)?;
        Ok(Endpoint {
            listener,
            addr,
            clients: Slab::with_capacity(MAX_CLIENTS),
            retry_at: None,
            round: 0,
        })
    }

    /// The address really bound.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The earliest client deadline or accept retry, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.clients
            .iter()
            .map(|(_, c)| c.deadline)
            .chain(self.retry_at)
            .min()
    }

    /// Resumes accepting after a pause, when it is time.
    pub fn on_timer(
        &mut self,
        registry: &Registry,
        now: Instant,
        figures: &mut dyn FnMut() -> String,
    ) {
        if self.retry_at.is_some_and(|at| now >= at) {
            self.retry_at = None;
            self.on_accept_ready(registry, now, figures);
        }
    }

    /// Makes room for a new client that has sent nothing yet when every
    /// slot is taken, so that silent or dribbling connections reopened as
    /// fast as they are dropped cannot lock scraping out. The clients that
    /// have sent nothing are read first: their readable events may wait
    /// behind this very accept, and a scraper among them whose whole
    /// request has arrived is answered, which frees its slot. Otherwise the
    /// slowest client of an earlier round goes: the one that has been
    /// dribbling a request the longest without finishing it, and only when
    /// none dribbles, the longest silent one. A scraper sends its small
    /// request in one piece, so it never looks like a dribbler. False when
    /// none may go: every slot is being answered or came in this round.
    fn make_room(&mut self, figures: &mut dyn FnMut() -> String) -> bool {
        let silent: Vec<usize> = self
            .clients
            .iter()
            .filter(|(_, c)| c.request.is_empty() && c.response.is_empty())
            .map(|(key, _)| key)
            .collect();
        let mut freed = false;
        for key in silent {
            if let Next::Close = self.clients[key].turn(&mut *figures) {
                self.clients.remove(key);
                freed = true;
            }
        }
        if freed {
            return true;
        }
        let round = self.round;
        let slowest = self
            .clients
            .iter()
            .filter(|(_, c)| c.response.is_empty() && c.round < round)
            .min_by_key(|(_, c)| (c.request.is_empty(), c.since))
            .map(|(key, _)| key);
        let Some(key) = slowest else {
            return false;
        };
        let client = self.clients.remove(key);
        debug!(
            "metrics client {key} {}: no whole request yet ({} B), closed to make room for a new scraper",
            client.peer,
            client.request.len()
        );
        true
    }

    /// Accepts until the backlog is empty (one round). Each new client is
    /// answered at once if its whole request is already there (as a
    /// scraper's is once it has waited in the backlog), and then needs no
    /// slot at all. The others take a free slot; beyond [`MAX_CLIENTS`],
    /// one that has sent nothing yet takes the slot of the slowest
    /// unfinished request (see `make_room`), and the rest are closed. A
    /// round that closed any pauses accepting for [`ACCEPT_PACE`].
    pub fn on_accept_ready(
        &mut self,
        registry: &Registry,
        now: Instant,
        figures: &mut dyn FnMut() -> String,
    ) {
        if self.retry_at.is_some() {
            return; // the timer resumes; accepting now would fail or spin
        }
        self.round += 1;
        let mut turned_away = 0u64;
        // A round takes the connections that were waiting when it began;
        // those that come meanwhile (often the ones just turned away,
        // reconnecting) wait for the next, and send their bytes meanwhile.
        let mut left = {
            use std::os::fd::AsRawFd;
            // At least one: the edge that brought us here may have come
            // with a connection the count missed by a hair.
            crate::net::accept_queue_len(self.listener.as_raw_fd())
                .unwrap_or(usize::MAX)
                .max(1)
        };
        loop {
            if left == 0 {
                // More may wait: the next round takes them; at once while
                // there is room, after the pace while the slots are full.
                self.retry_at = Some(now + self.pace(turned_away));
                return;
            }
            left -= 1;
            match self.listener.accept() {
                Ok((stream, peer)) => {
                    let mut client = Client {
                        stream,
                        request: Vec::new(),
                        response: Vec::new(),
                        sent: 0,
                        deadline: now + DEADLINE,
                        since: now,
                        peer,
                        round: self.round,
                    };
                    // Answered and closed at once: no slot taken.
                    if let Next::Close = client.turn(&mut *figures) {
                        trace!("metrics {peer}: answered on accept");
                        continue;
                    }
                    let full = self.clients.len() >= MAX_CLIENTS;
                    if full && (!client.request.is_empty() || !self.make_room(&mut *figures)) {
                        debug!("metrics {peer}: no whole request and no room, closed");
                        turned_away += 1;
                        continue;
                    }
                    let key = self.clients.vacant_entry().key();
                    let interest = Interest::READABLE | Interest::WRITABLE;
                    if let Err(e) =
                        registry.register(&mut client.stream, token::metrics_client(key), interest)
                    {
                        debug!("metrics {peer}: cannot register: {e}");
                        continue;
                    }
                    trace!("metrics {peer}: connected as client {key}");
                    self.clients.insert(client);
                }
                Err(e) if is_would_block(&e) => {
                    if !self.pace(turned_away).is_zero() {
                        self.retry_at = Some(now + ACCEPT_PACE);
                    }
                    return;
                }
                Err(e) if is_interrupted(&e) => {}
                // A client that gave up while waiting: take the next one.
                Err(e) if is_peer_gone(&e) => {}
                // Out of descriptors, or any other failure: like the echo
                // listener, try again on a timer, since no new edge will
                // announce the backlog still waiting.
                Err(e) => {
                    debug!("metrics: accept failed: {e}; retrying in {ACCEPT_RETRY:?}");
                    self.retry_at = Some(now + ACCEPT_RETRY);
                    return;
                }
            }
        }
    }

    /// How long to wait before the next round: none while slots are free,
    /// [`ACCEPT_PACE`] once they are full or clients were turned away, so
    /// that those who come meanwhile wait in the backlog long enough for
    /// a scraper's request to arrive before it is accepted.
    fn pace(&self, turned_away: u64) -> Duration {
        if turned_away > 0 || self.clients.len() >= MAX_CLIENTS {
            trace!("metrics: {turned_away} turned away, slots full; next round in {ACCEPT_PACE:?}");
            ACCEPT_PACE
        } else {
            Duration::ZERO
        }
    }

    /// Client `key` is readable or writable: read its request, answer it.
    pub fn on_client_ready(&mut self, key: usize, figures: impl FnOnce() -> String) {
        let Some(client) = self.clients.get_mut(key) else {
            return;
        };
        if let Next::Close = client.turn(figures) {
            self.clients.remove(key);
        }
    }

    /// Closes the clients whose deadline has passed.
    pub fn expire(&mut self, now: Instant) {
        self.clients.retain(|key, c| {
            let keep = c.deadline > now;
            if !keep {
                debug!("metrics client {key} {}: deadline passed, closed", c.peer);
            }
            keep
        });
    }
}

/// How far a request head has come.
enum Request {
    Incomplete,
    Head(Vec<u8>),
    TooLarge,
}

impl Client {
    fn turn(&mut self, figures: impl FnOnce() -> String) -> Next {
        if self.response.is_empty() {
            self.response = match self.read_request() {
                Ok(Request::Incomplete) => return Next::Wait,
                Ok(Request::Head(head)) => respond(&head, figures),
                Ok(Request::TooLarge) => response(
                    431,
                    "Request Header Fields Too Large",
                    "request too large\n",
                ),
                Err(()) => return Next::Close,
            };
        }
        self.write_response()
    }

    /// Reads until the head is complete, too large, or the socket is
    /// drained; `Err` when the client closed or failed first.
    fn read_request(&mut self) -> Result<Request, ()> {
        let mut buf = [0u8; 1024];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return Err(()),
                Ok(n) => {
                    self.request.extend_from_slice(&buf[..n]);
                    if let Some(end) = head_end(&self.request) {
                        return Ok(Request::Head(self.request[..end].to_vec()));
                    }
                    if self.request.len() > MAX_REQUEST {
                        return Ok(Request::TooLarge);
                    }
                }
                Err(e) if is_would_block(&e) => return Ok(Request::Incomplete),
                Err(e) if is_interrupted(&e) => {}
                Err(_) => return Err(()),
            }
        }
    }

    fn write_response(&mut self) -> Next {
        while self.sent < self.response.len() {
            match self.stream.write(&self.response[self.sent..]) {
                Ok(0) => return Next::Close,
                Ok(n) => self.sent += n,
                Err(e) if is_would_block(&e) => return Next::Wait,
                Err(e) if is_interrupted(&e) => {}
                Err(_) => return Next::Close,
            }
        }
        // All sent: FIN after it, then close.
        trace!("metrics {}: answered ({} B)", self.peer, self.sent);
        let _ = self.stream.shutdown(std::net::Shutdown::Write);
        Next::Close
    }
}

/// What the endpoint answers to `request` received whole: the response
/// bytes (figures left empty), or `None` while no head has ended. The
/// pure core of a client's turn, for the fuzz target.
pub(crate) fn answer_request(request: &[u8]) -> Option<Vec<u8>> {
    if let Some(end) = head_end(request) {
        return Some(respond(&request[..end], String::new));
    }
    (request.len() > MAX_REQUEST).then(|| {
        response(
            431,
            "Request Header Fields Too Large",
            "request too large\n",
        )
    })
}

/// Where the request head ends (after the blank line), if it has.
fn head_end(data: &[u8]) -> Option<usize> {
    if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
        return Some(i + 4);
    }
    data.windows(2).position(|w| w == b"\n\n").map(|i| i + 2)
}

/// The response to a request head.
fn respond(head: &[u8], figures: impl FnOnce() -> String) -> Vec<u8> {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.trim_end().split(' ');
    let (method, target, version) = (parts.next(), parts.next(), parts.next());
    let valid = matches!(version, Some(v) if v.starts_with("HTTP/1.")) && parts.next().is_none();
    match (method, target) {
        _ if !valid => response(400, "Bad Request", "bad request\n"),
        (Some("GET"), Some(path)) if path == "/metrics" || path.starts_with("/metrics?") => {
            response(200, "OK", &figures())
        }
        (Some("GET"), _) => response(404, "Not Found", "not found: try /metrics\n"),
        _ => response(405, "Method Not Allowed", "only GET\n"),
    }
}

fn response(code: u16, reason: &str, body: &str) -> Vec<u8> {
    let content_type = if code == 200 {
        "text/plain; version=0.0.4; charset=utf-8"
    } else {
        "text/plain; charset=utf-8"
    };
    let mut out = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\n\
         Content-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if code == 405 {
        out.push_str("Allow: GET\r\n");
    }
    out.push_str("\r\n");
    out.push_str(body);
    out.into_bytes()
}

/// The Prometheus text exposition of `t`, the figures of `loops` loops
/// after `uptime`.
pub fn render(t: &Snapshot, loops: usize, uptime: Duration) -> String {
    let s = &t.stats;
    let mut out = String::with_capacity(4096);
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, u64)]| {
        let _ = writeln!(out, "# HELP echo_reactor_{name} {help}");
        let _ = writeln!(out, "# TYPE echo_reactor_{name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "echo_reactor_{name}{labels} {value}");
        }
    };
    metric(
        "tcp_connections_accepted_total",
        "counter",
        "TCP connections accepted and served.",
        &[("", s.tcp_accepted)],
    );
    metric(
        "tcp_connections_closed_total",
        "counter",
        "TCP connections closed, for any reason.",
        &[("", s.tcp_closed)],
    );
    metric(
        "tcp_connections_closed_abnormally_total",
        "counter",
        "TCP connections closed other than by a clean end, by reason.",
        &[
            ("{reason=\"reset\"}", s.tcp_resets),
            ("{reason=\"error\"}", s.tcp_io_errors),
            ("{reason=\"shutdown_deadline\"}", s.tcp_forced_closes),
            ("{reason=\"idle_timeout\"}", s.tcp_idle_timeouts),
            ("{reason=\"write_timeout\"}", s.tcp_write_timeouts),
        ],
    );
    metric(
        "tcp_cut_bytes_total",
        "counter",
        "Echo owed to TCP peers and thrown away: output dropped by a close that had to be a reset, input read and dropped while lingering.",
        &[("", s.tcp_cut_bytes)],
    );
    metric(
        "tcp_connections_rejected_total",
        "counter",
        "TCP connections accepted and closed at once at --max-connections.",
        &[("", s.tcp_rejected)],
    );
    metric(
        "tcp_accept_errors_total",
        "counter",
        "accept failures other than an empty backlog.",
        &[("", s.accept_errors)],
    );
    metric(
        "tcp_received_bytes_total",
        "counter",
        "TCP payload bytes read.",
        &[("", s.bytes_in)],
    );
    metric(
        "tcp_sent_bytes_total",
        "counter",
        "TCP payload bytes written to the kernel.",
        &[("", s.bytes_out)],
    );
    metric(
        "tcp_sent_dropped_bytes_total",
        "counter",
        "Of the bytes written, those a reset threw away before the peer acknowledged them (part of the cut).",
        &[("", s.tcp_out_dropped)],
    );
    metric(
        "udp_received_datagrams_total",
        "counter",
        "UDP datagrams received.",
        &[("", s.udp_datagrams_in)],
    );
    metric(
        "udp_sent_datagrams_total",
        "counter",
        "UDP reply datagrams sent.",
        &[("", s.udp_datagrams_out)],
    );
    metric(
        "udp_dropped_datagrams_total",
        "counter",
        "UDP datagrams left unanswered, by reason.",
        &[
            ("{reason=\"reply_dropped\"}", s.udp_replies_dropped),
            ("{reason=\"refused_port\"}", s.udp_refused_ports),
            ("{reason=\"rate_limited\"}", s.udp_rate_limited),
            ("{reason=\"refused_size\"}", s.udp_refused_size),
            ("{reason=\"receive_buffer\"}", s.udp_rcvbuf_drops),
        ],
    );
    metric(
        "udp_errors_total",
        "counter",
        "UDP receive and send errors.",
        &[("", s.udp_errors)],
    );
    metric(
        "tls_handshakes_total",
        "counter",
        "TLS handshakes that finished.",
        &[("", s.tls_handshakes)],
    );
    metric(
        "tls_handshake_failures_total",
        "counter",
        "TLS handshakes that did not finish, by cause.",
        &[
            ("{cause=\"not_tls\"}", s.tls_failed_not_tls),
            ("{cause=\"peer_alert\"}", s.tls_failed_peer_alert),
            ("{cause=\"incompatible\"}", s.tls_failed_incompatible),
            ("{cause=\"closed\"}", s.tls_failed_closed),
            ("{cause=\"timeout\"}", s.tls_failed_timeout),
            ("{cause=\"other\"}", s.tls_failed_other),
        ],
    );
    metric(
        "proxy_headers_total",
        "counter",
        "Connections whose PROXY protocol header was read.",
        &[("", s.proxy_headers)],
    );
    metric(
        "proxy_refused_total",
        "counter",
        "Connections closed unanswered for want of a valid PROXY header.",
        &[("", s.proxy_refused)],
    );
    metric(
        "faults_injected_total",
        "counter",
        "Faults injected on purpose (--fault), by kind.",
        &[
            ("{kind=\"delay\"}", s.faults_delay),
            ("{kind=\"rate\"}", s.faults_rate),
            ("{kind=\"slice\"}", s.faults_slice),
            ("{kind=\"close\"}", s.faults_close),
            ("{kind=\"reset\"}", s.faults_reset),
            ("{kind=\"stall\"}", s.faults_stall),
            ("{kind=\"corrupt\"}", s.faults_corrupt),
            ("{kind=\"drop\"}", s.faults_drop),
        ],
    );
    metric(
        "tcp_connections_open",
        "gauge",
        "TCP connections open now.",
        &[("", t.open)],
    );
    metric(
        "tcp_pending_output_bytes",
        "gauge",
        "Bytes of output waiting for the kernel, over all connections.",
        &[("", t.pending_bytes)],
    );
    metric(
        "accept_paused",
        "gauge",
        "1 while accepting is paused because descriptors ran out.",
        &[("", u64::from(t.accept_paused))],
    );
    metric(
        "loops",
        "gauge",
        "Poll loops (--threads).",
        &[("", loops as u64)],
    );
    metric(
        "uptime_seconds",
        "gauge",
        "Seconds since the server started.",
        &[("", uptime.as_secs())],
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(head: &str) -> String {
        String::from_utf8_lossy(&respond(head.as_bytes(), || "x 1\n".to_string())).into_owned()
    }

    #[test]
    fn routes_methods_and_paths() {
        assert!(
            answer("GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n").starts_with("HTTP/1.1 200 OK\r\n")
        );
        assert!(answer("GET /metrics HTTP/1.0\r\n\r\n").ends_with("\r\n\r\nx 1\n"));
        assert!(answer("GET / HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
        assert!(answer("POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
        assert!(answer("\x16\x03\x01 garbage\r\n\r\n").starts_with("HTTP/1.1 400"));
        assert!(answer("GET /metrics\r\n\r\n").starts_with("HTTP/1.1 400"));
    }

    #[test]
    fn head_ends_at_the_blank_line() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nbody"), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.0\n\n"), Some(16));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: x\r\n"), None);
    }

    #[test]
    fn every_metric_has_help_and_type_and_counters_end_in_total() {
        let text = render(&Snapshot::default(), 1, Duration::from_secs(3));
        let mut kinds = std::collections::HashMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap_or_default();
                kinds.insert(name.to_string(), kind.to_string());
            }
        }
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap_or_default();
            let kind = kinds.get(name).map(String::as_str);
            assert!(name.starts_with("echo_reactor_"), "{line}");
            match kind {
                Some("counter") => assert!(name.ends_with("_total"), "{line}"),
                Some("gauge") => assert!(!name.ends_with("_total"), "{line}"),
                other => panic!("{name}: type {other:?}"),
            }
        }
        assert!(text.contains("echo_reactor_uptime_seconds 3\n"));
    }
}
