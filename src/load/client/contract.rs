//! What every client of the load generator shares with the loop: the
//! run's [`Settings`], a client's [`Pace`], the measured [`Window`], the
//! loop's [`Tally`], the context a handler borrows ([`ClientCtx`]) and the
//! [`Step`] it hands back, with the [`End`] that closes it. The clients
//! themselves live in `tcp` and `udp`; the loop, the `Poll` and
//! connecting are the loop's.

use std::fmt;
use std::io;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::load::report::{Connects, Errors, Recent, TlsReport};
use crate::load::stages::{StageTally, StagedPace};
use crate::mode::Mode;

/// Most messages one open-loop client has in flight before it waits for
/// replies. Latency still counts from each message's due time, so a stall
/// shows; the cap only bounds memory.
pub const OPEN_LOOP_MAX_IN_FLIGHT: usize = 4096;

/// Settings every client of a run follows.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Bytes per message.
    pub size: usize,
    /// What the server is expected to do to each byte.
    pub expect: Mode,
    /// Stop reading after a read that did not fill the buffer (Linux).
    pub short_read: bool,
    /// How long a UDP request waits for its reply before it is lost.
    pub udp_reply_timeout: Duration,
}

/// When a client may send.
#[derive(Debug, Clone, PartialEq)]
pub enum Pace {
    /// Keep this many messages in flight; send the next when one completes.
    Closed {
        /// Messages in flight per client.
        pipeline: usize,
    },
    /// Message n is due at `first + n * interval`, sent or not.
    Open {
        /// When message 0 is due.
        first: Instant,
        /// Time between two messages of this client.
        interval: Duration,
    },
    /// `--stages`: message n is due where the ramp puts it, sent or not.
    Staged(StagedPace),
}

impl Pace {
    /// When message `seq` is due (open loop only).
    pub(crate) fn due(&self, seq: u64) -> Option<Instant> {
        match *self {
            Pace::Closed { .. } => None,
            Pace::Staged(ref s) => s.due(seq),
            Pace::Open { first, interval } => {
                let nanos = u64::try_from(interval.as_nanos())
                    .unwrap_or(u64::MAX)
                    .saturating_mul(seq);
                first.checked_add(Duration::from_nanos(nanos))
            }
        }
    }

    /// `--stages`: the schedule begins at `origin` (the window's start);
    /// other paces have their times already.
    pub(crate) fn begin_at(&mut self, origin: Instant) {
        if let Pace::Staged(s) = self {
            s.origin = Some(origin);
        }
    }

    /// How many messages are due at `now` (open loop only).
    pub(crate) fn due_count(&self, now: Instant) -> u64 {
        match *self {
            Pace::Closed { .. } => 0,
            Pace::Staged(ref s) => s.due_count(now),
            Pace::Open { first, interval } => {
                if now < first {
                    return 0;
                }
                let since = now.duration_since(first).as_nanos();
                let step = interval.as_nanos().max(1);
                u64::try_from(since / step + 1).unwrap_or(u64::MAX)
            }
        }
    }
}

/// The part of a run that counts: messages sent in it are measured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Window {
    /// Start of measuring; `None` while ramping up or warming up.
    pub start: Option<Instant>,
    /// End of measuring; `None` until then.
    pub end: Option<Instant>,
}

impl Window {
    /// True if a message stamped `at` (sent, or due) is measured. The
    /// start is exclusive: a message stamped in the very batch that opened
    /// the window went out before it did.
    pub fn contains(&self, at: Instant) -> bool {
        self.start.is_some_and(|s| at > s) && self.end.map_or(true, |e| at < e)
    }
}

/// A loop's counters: what its clients measured and what went wrong.
#[derive(Debug, Clone)]
pub struct Tally {
    /// Measured messages whose reply came back right.
    pub messages: u64,
    /// Reply bytes of those messages.
    pub bytes: u64,
    /// Messages sent in the measured window (stamped in it), the base of
    /// the loss rate.
    pub sent: u64,
    /// Errors by kind. Those that belong to a message (mismatch, lost)
    /// count, like `messages`, only for messages of the window.
    pub errors: Errors,
    /// UDP replies that overtook the reply to a later request (not errors).
    pub reordered: u64,
    /// UDP replies to requests already counted lost (not errors).
    pub late: u64,
    /// Mismatches that were exactly the ASCII uppercase of what was sent.
    pub mismatch_upper: u64,
    /// UDP: datagrams the kernel dropped at the loop's sockets (their
    /// receive buffers full), added up as the sockets end.
    pub rcvbuf_drops: u64,
    /// Latency of each measured message, in microseconds.
    pub latency: Histogram<u64>,
    /// Replies completed since the loop last published, measured or not;
    /// kept only when someone reads them (progress line, intervals).
    pub recent: Option<Recent>,
    /// The first error, described for people.
    pub first_error: Option<String>,
    /// `tls://`: the handshakes completed; `None` for TCP and UDP.
    pub tls: Option<TlsReport>,
    /// `--stages`: the counts per stage; `None` otherwise.
    pub stages: Option<StageTally>,
    /// Connections that came up, and how fast (see [`Connects`]).
    pub connects: Connects,
}

impl Tally {
    /// Empty counters; `with_recent` keeps the recent completions too.
    pub fn new(with_recent: bool) -> Tally {
        Tally {
            messages: 0,
            bytes: 0,
            sent: 0,
            errors: Errors::default(),
            reordered: 0,
            late: 0,
            mismatch_upper: 0,
            rcvbuf_drops: 0,
            latency: crate::load::report::new_histogram(),
            recent: with_recent.then(Recent::default),
            first_error: None,
            tls: None,
            stages: None,
            connects: Connects::default(),
        }
    }

    /// A reply to a message stamped `stamp` completed correctly at `now`.
    pub(crate) fn complete(&mut self, stamp: Instant, now: Instant, window: &Window, size: usize) {
        let micros = u64::try_from(now.saturating_duration_since(stamp).as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        let is_measured = window.contains(stamp);
        if let Some(r) = &mut self.recent {
            match is_measured {
                true => r.measured.record(micros),
                false => r.unmeasured.record(micros),
            }
        }
        if is_measured {
            self.messages += 1;
            self.bytes += size as u64;
            self.latency.saturating_record(micros);
            if let Some(stages) = &mut self.stages {
                stages.record(stamp, micros);
            }
        }
    }

    /// Remembers the first error's story; later ones only count.
    pub fn note(&mut self, describe: impl FnOnce() -> String) {
        self.note_if(true, describe);
    }

    /// [`note`](Self::note), for an error that counts only if `counts`
    /// (a message outside the window is not measured, right or wrong).
    pub fn note_if(&mut self, counts: bool, describe: impl FnOnce() -> String) {
        if counts && self.first_error.is_none() {
            self.first_error = Some(describe());
        }
    }
}

/// What a handler borrows from the loop for one call.
pub struct ClientCtx<'a> {
    /// The run's settings.
    pub settings: &'a Settings,
    /// The time of this batch of events.
    pub now: Instant,
    /// Which messages are measured.
    pub window: Window,
    /// The loop's counters.
    pub tally: &'a mut Tally,
}

/// Where a client is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    /// Sending as the pace allows and checking replies.
    Running,
    /// The measured window is over: no new messages, waiting for the
    /// replies in flight (a partly written message is finished first).
    Draining,
    /// `--churn`: every reply is in and our FIN (TLS: `close_notify`) is
    /// out; waiting for the server's end, which must come with no byte
    /// before it.
    Closing,
}

/// Why a client ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Drained: every reply arrived.
    Done,
    /// The server reset the connection.
    Reset,
    /// The server closed the connection while it was still needed.
    Eof,
    /// The server sent more bytes than it was sent.
    Excess,
    /// The reply began with the PROXY header the connection sent: the
    /// server does not take the protocol and echoed it (a mismatch).
    HeaderEchoed,
    /// The drain grace period ended with replies still in flight.
    Timeout,
    /// `--churn`: the connection carried its messages, we closed, and the
    /// server closed after us. Not an error.
    Closed,
    /// Any other IO error.
    Io(io::ErrorKind),
}

impl fmt::Display for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            End::Done => f.write_str("done"),
            End::Closed => f.write_str("closed after its --churn messages"),
            End::Reset => f.write_str("reset by server"),
            End::Eof => f.write_str("closed by server with replies outstanding"),
            End::Excess => f.write_str("server sent more bytes than it was sent"),
            End::HeaderEchoed => f.write_str(
                "the reply began with our PROXY header: the server does not take the \
                 PROXY protocol and echoed it (serve --proxy-protocol takes it)",
            ),
            End::Timeout => {
                f.write_str("replies still outstanding when the drain timed out (--drain-timeout)")
            }
            End::Io(kind) => write!(f, "io error: {kind}"),
        }
    }
}

/// What the loop should do with a client after a handler ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nothing until the next readiness edge or due time.
    Wait,
    /// Close it and count `End`.
    Close(End),
    /// `--churn`: every reply of its messages is in and verified; the
    /// loop closes it (FIN, or a reset with `--churn-reset`) and opens
    /// another in its place.
    Finished,
}

/// Counts a client's end under its kind, plus its messages in flight as
/// lost when it did not end cleanly.
pub fn count_end(tally: &mut Tally, end: End, in_flight: u64, who: &dyn fmt::Display) {
    match end {
        End::Done | End::Closed => return,
        End::Reset => tally.errors.reset += 1,
        End::Eof => tally.errors.closed += 1,
        End::Excess | End::HeaderEchoed => tally.errors.mismatch += 1,
        End::Timeout => tally.errors.timeout += 1,
        End::Io(_) => tally.errors.io += 1,
    }
    tally.errors.lost += in_flight;
    tally.note(|| format!("{who}: {end}"));
}

/// A byte for a message: `'a'` when printable ASCII, else `0x07`.
pub(crate) fn show_byte(b: u8) -> String {
    if b.is_ascii_graphic() || b == b' ' {
        format!("'{}'", b as char)
    } else {
        format!("0x{b:02x}")
    }
}
