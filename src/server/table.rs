//! The connection table: every open connection in a slab whose key is its
//! token, and everything done to connections as a group. Closing happens
//! here and only here (counted, logged with its story); so do the timeout
//! sweep and the shutdown's steps (close those at rest, cut the busy ones,
//! close the rest).
//!
//! It drives a [`Connection`] by lending it a [`conn::Ctx`] and carrying
//! out the [`Progress`] it returns. It never accepts (the acceptor hands it
//! sockets) and never decides when shutdown steps happen (the drain does).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use log::{debug, trace, warn};
use mio::net::TcpStream;
use mio::Interest;
use slab::Slab;

use super::config::ServerConfig;
use super::conn::{self, CloseReason, Connection, Limits, Progress};
use super::observe::{live, Stats};
use super::timeouts::{Sweep, Timeouts};
use super::{token, LoopCtx};
use crate::mode::Service;

/// The most connection slots reserved up front (address space, not RSS).
const MAX_PREALLOCATED: usize = 1 << 20;

/// Every open connection, and how they are all served.
pub(crate) struct ConnTable {
    /// The key is the mio token.
    conns: Slab<Connection>,
    limits: Limits,
    service: Arc<dyn Service>,
    /// `service.streams()`, asked once instead of per writable event.
    streams: bool,
    /// Idle and write timeouts, swept about once a second.
    sweep: Sweep,
    /// Some connection closed since the loop last asked: a descriptor is
    /// free, so a paused acceptor may try again.
    closed_since: bool,
}

impl ConnTable {
    /// An empty table sized for `max_connections`.
    pub fn new(config: &ServerConfig, limits: Limits, max_connections: usize) -> ConnTable {
        ConnTable {
            // Reserve the whole table up front, as the C baseline does: pages
            // nobody touched cost no memory, and the table never moves, so
            // RSS grows by one entry per connection instead of doubling.
            conns: Slab::with_capacity(max_connections.min(MAX_PREALLOCATED)),
            limits,
            streams: config.service.streams(),
            service: Arc::clone(&config.service),
            sweep: Sweep::new(Timeouts::new(config.idle_timeout, config.write_timeout)),
            closed_since: false,
        }
    }

    /// Open connections.
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// True when no connection is open.
    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// True while one more connection fits under `max` and the token space.
    pub fn has_room(&self, max: usize) -> bool {
        self.conns.len() < max && self.conns.vacant_key() <= token::MAX_CONN_KEY
    }

    /// The service's name, for the start-up line.
    pub fn service_name(&self) -> &str {
        self.service.name()
    }

    /// The high watermark, for the start-up line.
    pub fn high_watermark(&self) -> usize {
        self.limits.watermarks.high
    }

    /// When the sweep is next due.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.sweep.next_at()
    }

    /// True once after any close: a descriptor was freed since last asked.
    pub fn take_closed(&mut self) -> bool {
        std::mem::take(&mut self.closed_since)
    }

    /// This loop's figures for the stats line and metrics: counters, open
    /// connections, the output they all still owe (summed here, once per
    /// report or scrape, rather than tracked on every write).
    pub fn figures(&self, stats: Stats, accept_paused: bool) -> live::Snapshot {
        live::Snapshot {
            stats,
            open: self.conns.len() as u64,
            pending_bytes: self.conns.iter().map(|(_, c)| c.pending_len() as u64).sum(),
            accept_paused,
        }
    }

    /// Registers an accepted socket and lets the service speak first.
    pub fn open(&mut self, mut stream: TcpStream, peer: SocketAddr, cx: &mut LoopCtx<'_>) {
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        // Both interests once: with edge triggering, a writable edge comes
        // only after a write hit WouldBlock, so it costs nothing while no
        // output is pending and saves an epoll_ctl per partial write.
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = cx
            .registry
            .register(&mut stream, token::from_key(key), interest)
        {
            cx.stats.accept_errors += 1;
            debug!("{peer}: cannot register: {e}");
            return;
        }
        let conn = entry.insert(Connection::new(stream, cx.tick));
        if log::log_enabled!(log::Level::Debug) {
            conn.tell_story(peer, cx.tick);
        }
        cx.stats.tcp_accepted += 1;
        debug!("conn {key} {peer}: accepted");
        trace!("conn {key}: registered READABLE | WRITABLE once, edge-triggered (token {key})");
        // The service may speak first (daytime, time).
        self.drive(key, cx, Connection::on_open);
    }

    /// A readiness event for connection `key`.
    pub fn on_event(
        &mut self,
        key: usize,
        readable: bool,
        writable: bool,
        hangup: bool,
        cx: &mut LoopCtx<'_>,
    ) {
        trace!(
            "conn {key}: event{}{}{}",
            if readable { " readable" } else { "" },
            if writable { " writable" } else { "" },
            if hangup { " hangup" } else { "" }
        );
        self.drive(key, cx, |conn, ccx| {
            if hangup {
                conn.note_hangup();
            }
            let mut progress = Progress::Wait;
            if writable {
                progress = conn.on_writable(ccx);
            }
            // A deferred connection reads when the ready list comes round.
            if readable && progress == Progress::Wait && !conn.is_deferred() {
                progress = conn.on_readable(ccx);
            }
            progress
        });
    }

    /// Connection `key`'s turn on the ready list.
    pub fn on_turn(&mut self, key: usize, cx: &mut LoopCtx<'_>) {
        self.drive(key, cx, |conn, ccx| {
            // A reused key: this is a newer connection, not deferred.
            if !conn.is_deferred() {
                return Progress::Wait;
            }
            conn.set_deferred(false);
            trace!("conn {}: its turn on the ready list", ccx.key);
            // Deferred by the read budget or by a stream's write budget:
            // carry on with whichever it was.
            let progress = conn.on_readable(ccx);
            if progress != Progress::Wait {
                return progress;
            }
            conn.on_writable(ccx)
        });
    }

    /// Runs a handler on connection `key` with what it borrows, then
    /// carries out the `Progress` it returns. Nothing happens for a key
    /// with no connection (closed earlier in this batch).
    fn drive(
        &mut self,
        key: usize,
        cx: &mut LoopCtx<'_>,
        handler: impl FnOnce(&mut Connection, &mut conn::Ctx<'_>) -> Progress,
    ) {
        let Some(conn) = self.conns.get_mut(key) else {
            trace!("conn {key}: closed earlier in this batch, skipped");
            return;
        };
        let mut ccx = conn::Ctx {
            key,
            scratch: cx.scratch,
            service: &*self.service,
            streams: self.streams,
            limits: &self.limits,
            stats: cx.stats,
            now: cx.tick,
        };
        match handler(conn, &mut ccx) {
            Progress::Wait => {}
            Progress::Again => {
                if !conn.is_deferred() {
                    conn.set_deferred(true);
                    cx.ready.push_conn(token::from_key(key));
                }
            }
            Progress::Close(reason) => self.close(key, reason, cx),
        }
    }

    /// Closes connection `key`: counts it, and what it threw away, and
    /// logs its story. The one place a connection ends.
    fn close(&mut self, key: usize, reason: CloseReason, cx: &mut LoopCtx<'_>) {
        self.close_as(key, reason, false, cx);
    }

    /// [`ConnTable::close`], or the shutdown's final close (`final_close`),
    /// which gives up whatever the kernel still holds.
    fn close_as(
        &mut self,
        key: usize,
        reason: CloseReason,
        final_close: bool,
        cx: &mut LoopCtx<'_>,
    ) {
        let Some(mut conn) = self.conns.try_remove(key) else {
            return;
        };
        reason.count_in(cx.stats);
        self.closed_since = true;
        // Output the peer will never get is cut, whatever the reason, and
        // what the kernel held unacknowledged leaves `bytes out`, which
        // then counts only what was not thrown away.
        let lost = conn.abandon(reason, final_close);
        cx.stats.tcp_cut_bytes += lost.total();
        cx.stats.bytes_out = cx.stats.bytes_out.saturating_sub(lost.in_kernel);
        let cut = if lost.total() > 0 {
            format!(", reset, cut {} B", lost.total())
        } else {
            String::new()
        };
        if let Some((peer, bytes_in, bytes_out, age)) = conn.story(cx.tick) {
            debug!(
                "conn {key} {peer}: closed: {reason} (in {bytes_in} B, out {} B{cut}, {:.1} s)",
                bytes_out.saturating_sub(lost.in_kernel),
                f64::from(age) / 10.0
            );
        } else {
            debug!("conn {key}: closed: {reason}{cut}");
        }
        // Dropping the stream closes the descriptor, which also removes it
        // from the epoll set: no deregister call needed.
    }

    /// Closes the connections whose idle or write timeout has passed, when
    /// the sweep is due.
    pub fn on_timer(&mut self, cx: &mut LoopCtx<'_>) {
        if !self.sweep.is_due(cx.now, !self.conns.is_empty()) {
            return;
        }
        let timeouts = self.sweep.timeouts();
        let tick = cx.tick;
        let expired: Vec<(usize, CloseReason)> = self
            .conns
            .iter_mut()
            // A lingering connection drops its input on purpose: it looks
            // idle or stalled, but its end belongs to the drain.
            .filter(|(_, conn)| !conn.is_lingering())
            .filter_map(|(key, conn)| {
                timeouts
                    .expiry(conn.sweep_facts(tick))
                    .map(|reason| (key, reason))
            })
            .collect();
        let stalled = expired
            .iter()
            .filter(|(_, r)| *r == CloseReason::WriteTimeout)
            .count();
        if self.sweep.note_stalled(stalled) {
            warn!(
                "closing connections whose peers stopped reading (write timeout {:.1} s); \
                 counted as stalled in stats",
                timeouts.write.map_or(0.0, |t| f64::from(t) / 10.0)
            );
        }
        if !expired.is_empty() {
            debug!("sweep: {} connections timed out", expired.len());
        }
        for (key, reason) in expired {
            self.drive(key, cx, |conn, ccx| conn.expire(ccx.key, reason));
        }
    }

    /// Shutdown: FIN and close for every open connection with nothing
    /// moving (quiet for a moment, no output owed, none unacknowledged in
    /// the kernel, no input waiting). The others are still served (their clients keep sending,
    /// or read their echo) until they half-close or the deadline passes.
    /// Returns how many it closed.
    pub fn close_those_at_rest(&mut self, cx: &mut LoopCtx<'_>) -> usize {
        let before = self.conns.len();
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            self.drive(key, cx, |conn, ccx| conn.close_if_at_rest(ccx.key, ccx.now));
        }
        before - self.conns.len()
    }

    /// Shutdown deadline: every connection still busy gets one last flush
    /// and a FIN, and lingers (input dropped) until its peer closes.
    pub fn cut_busy(&mut self, linger: std::time::Duration, cx: &mut LoopCtx<'_>) {
        if self.conns.is_empty() {
            return;
        }
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        let cut_before = cx.stats.tcp_cut_bytes;
        for &key in &keys {
            self.drive(key, cx, |conn, ccx| {
                let (left, progress) = conn.cut(ccx);
                ccx.stats.tcp_cut_bytes += left;
                progress
            });
        }
        let never_sent = cx.stats.tcp_cut_bytes - cut_before;
        if linger.is_zero() {
            warn!(
                "drain deadline passed: cut {} connections ({never_sent} B of echo never sent); \
                 closing them now",
                keys.len()
            );
        } else {
            warn!(
                "drain deadline passed: cut {} connections ({never_sent} B of echo never sent); \
                 FIN sent, waiting up to {:.1} s for their peers to close",
                keys.len(),
                linger.as_secs_f64()
            );
        }
    }

    /// Shutdown, the end: closes what is left with a reset where the
    /// kernel still holds output, counting that output as cut.
    pub fn close_all(&mut self, cx: &mut LoopCtx<'_>) {
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            self.close_as(key, CloseReason::ShutdownDeadline, true, cx);
        }
    }
}
