//! Pending output: the bytes the kernel refused, and the watermarks that
//! decide when a connection stops and resumes reading. No IO.
//!
//! Most writes are taken whole by the kernel, so most connections never hold
//! a buffer: an empty `PendingOutput` is one null pointer, and a buffer that
//! drains is freed. The bound on memory comes from the watermarks: a
//! connection stops reading once its pending output passes `high`, so it
//! never holds more than `high` plus one read.

/// Bytes accepted for a peer that the kernel has not taken yet, in order.
#[derive(Debug, Default)]
pub struct PendingOutput {
    /// `None` while nothing is pending, so an idle connection costs 8 bytes.
    chunk: Option<Box<Chunk>>,
}

#[derive(Debug)]
struct Chunk {
    bytes: Vec<u8>,
    /// `bytes[..start]` is already written; kept so `consume` is O(1).
    start: usize,
}

impl PendingOutput {
    /// An empty buffer; allocates nothing.
    pub const fn new() -> Self {
        PendingOutput { chunk: None }
    }

    /// Bytes waiting to be written.
    pub fn len(&self) -> usize {
        self.chunk.as_ref().map_or(0, |c| c.bytes.len() - c.start)
    }

    /// True when nothing waits to be written.
    pub fn is_empty(&self) -> bool {
        self.chunk.is_none()
    }

    /// The bytes to write next.
    pub fn as_slice(&self) -> &[u8] {
        self.chunk.as_ref().map_or(&[], |c| &c.bytes[c.start..])
    }

    /// Bytes of heap this buffer holds (its capacity), for statistics.
    #[cfg(test)]
    pub fn capacity(&self) -> usize {
        self.chunk.as_ref().map_or(0, |c| c.bytes.capacity())
    }

    /// Queues `data` after what is already pending.
    pub fn push(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        match &mut self.chunk {
            None => {
                self.chunk = Some(Box::new(Chunk {
                    bytes: data.to_vec(),
                    start: 0,
                }))
            }
            Some(c) => {
                // Reclaim the written prefix before growing, so a buffer that
                // is written and refilled in turns does not creep upwards.
                if c.start > 0 && c.bytes.len() + data.len() > c.bytes.capacity() {
                    c.bytes.drain(..c.start);
                    c.start = 0;
                }
                c.bytes.extend_from_slice(data);
            }
        }
    }

    /// Marks the first `n` pending bytes as written; frees the buffer once
    /// it is empty. `n` larger than `len()` empties it.
    pub fn consume(&mut self, n: usize) {
        if let Some(c) = &mut self.chunk {
            c.start = c.start.saturating_add(n).min(c.bytes.len());
            if c.start == c.bytes.len() {
                self.chunk = None;
            }
        }
    }
}

/// When a connection stops reading (pending output above `high`) and when
/// it starts again (pending output at or below `low`).
///
/// Made with [`Watermarks::with_high`] or `Watermarks::default()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Watermarks {
    /// Stop reading while more than this many bytes are pending.
    pub high: usize,
    /// Resume reading once pending output has fallen to this many bytes.
    pub low: usize,
}

impl Watermarks {
    /// Watermarks with `low` a quarter of `high`, so a paused connection
    /// does not flap between paused and reading on every small write.
    ///
    /// ```
    /// use echo_reactor::Watermarks;
    /// let w = Watermarks::with_high(64 * 1024);
    /// assert!(w.should_pause(64 * 1024 + 1));
    /// assert!(!w.may_resume(16 * 1024 + 1));
    /// assert!(w.may_resume(16 * 1024));
    /// // High 0: stop reading while anything at all is pending.
    /// let strict = Watermarks::with_high(0);
    /// assert!(strict.should_pause(1) && strict.may_resume(0));
    /// ```
    pub fn with_high(high: usize) -> Self {
        Watermarks {
            high,
            low: high / 4,
        }
    }

    /// True when a connection with `pending` bytes queued must stop reading.
    pub fn should_pause(&self, pending: usize) -> bool {
        pending > self.high
    }

    /// True when a paused connection with `pending` bytes queued may read again.
    pub fn may_resume(&self, pending: usize) -> bool {
        pending <= self.low
    }
}

impl Default for Watermarks {
    /// Stop reading while anything is pending: the kernel's socket buffers
    /// are the real queue, and a larger user-space queue only costs memory
    /// (measured on a C server under a 500-connection flood: a 1 MiB
    /// watermark cost 2.5 GB of RSS and half the throughput).
    fn default() -> Self {
        Watermarks::with_high(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pushed_bytes_come_out_in_order_as_they_are_consumed() {
        let mut p = PendingOutput::new();
        p.push(b"hello ");
        p.push(b"world");
        p.consume(6);
        assert_eq!(p.as_slice(), b"world");
        p.consume(5);
        assert!(p.is_empty());
    }

    #[test]
    fn empty_buffer_holds_no_heap() {
        let p = PendingOutput::new();
        assert_eq!(p.len(), 0);
        assert_eq!(p.capacity(), 0);
        assert!(p.as_slice().is_empty());
        assert_eq!(std::mem::size_of::<PendingOutput>(), 8);
    }

    #[test]
    fn drained_buffer_releases_its_memory() {
        let mut p = PendingOutput::new();
        p.push(&[7u8; 10_000]);
        assert!(p.capacity() >= 10_000);
        p.consume(9_999);
        assert_eq!(p.len(), 1);
        p.consume(1);
        assert!(p.is_empty());
        assert_eq!(p.capacity(), 0);
    }

    #[test]
    fn order_is_kept_across_partial_consumes_and_pushes() {
        let mut p = PendingOutput::new();
        let mut expected = Vec::new();
        let mut written = Vec::new();
        for round in 0..200u32 {
            let data: Vec<u8> = (0..(round % 37 + 1)).map(|i| (round + i) as u8).collect();
            p.push(&data);
            expected.extend_from_slice(&data);
            let take = (round as usize * 7) % (p.len() + 1);
            written.extend_from_slice(&p.as_slice()[..take]);
            p.consume(take);
        }
        written.extend_from_slice(p.as_slice());
        assert_eq!(written, expected);
    }

    #[test]
    fn compaction_keeps_capacity_bounded_when_refilled_in_turns() {
        let mut p = PendingOutput::new();
        p.push(&[1u8; 1000]);
        for _ in 0..10_000 {
            p.consume(100);
            p.push(&[2u8; 100]);
        }
        assert_eq!(p.len(), 1000);
        assert!(p.capacity() <= 2048, "capacity crept to {}", p.capacity());
    }

    #[test]
    fn consuming_more_than_pending_empties() {
        let mut p = PendingOutput::new();
        p.push(b"abc");
        p.consume(usize::MAX);
        assert!(p.is_empty());
        p.consume(5);
        assert!(p.is_empty());
    }

    #[test]
    fn watermarks_pause_above_high_and_resume_at_low() {
        let w = Watermarks { high: 100, low: 10 };
        assert!(!w.should_pause(100));
        assert!(w.should_pause(101));
        assert!(!w.may_resume(11));
        assert!(w.may_resume(10));
        assert_eq!(Watermarks::default(), Watermarks { high: 0, low: 0 });
    }
}
