//! Message payloads derived from (connection, sequence), and the check of a
//! reply against them. Pure: no IO, no clock, no allocation.
//!
//! Because a payload is a function of two numbers, the generator never keeps
//! a copy of what it sent: it regenerates any byte of any message on demand,
//! to send it (after a partial write) or to check the reply. Every byte is a
//! lowercase ASCII letter, so a server that uppercases is visible and every
//! reply byte can be compared with `expect` applied to what was sent.
//!
//! Layout of a message of `size` bytes:
//!
//! | bytes | content |
//! |---|---|
//! | `0 .. min(size, 16)` | the sequence number, low nibble first, as `a`..=`p` |
//! | `16 .. size` | letters from a hash of (connection, sequence, index) |
//!
//! The sequence prefix is what lets a UDP reply be matched to its request.

use crate::mode::Mode;

/// How many leading bytes carry the sequence number (one hex digit each).
pub const SEQ_DIGITS: usize = 16;

/// The smallest UDP message: enough digits to tell 2^32 sequences apart.
pub const MIN_UDP_SIZE: usize = 8;

/// One message: who sends it and which of its messages it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message {
    /// The connection's number within the whole run.
    pub conn: u64,
    /// The message's number on its connection, from 0.
    pub seq: u64,
}

impl Message {
    /// Writes bytes `offset .. offset + out.len()` of this message into `out`.
    ///
    /// ```
    /// use echo_reactor::load::payload::Message;
    /// let m = Message { conn: 3, seq: 0x2a };
    /// let mut whole = [0u8; 24];
    /// m.fill(0, &mut whole);
    /// assert!(whole.iter().all(u8::is_ascii_lowercase));
    /// assert_eq!(&whole[..3], b"kca"); // 0x2a: digits a (10), 2, 0 as letters
    /// let mut tail = [0u8; 10];
    /// m.fill(14, &mut tail);
    /// assert_eq!(tail, whole[14..]);
    /// ```
    pub fn fill(&self, offset: usize, out: &mut [u8]) {
        let key = mix(self.conn.rotate_left(32) ^ self.seq);
        for (i, b) in out.iter_mut().enumerate() {
            *b = self.byte_with(key, offset + i);
        }
    }

    /// Byte `index` of this message.
    pub fn byte(&self, index: usize) -> u8 {
        self.byte_with(mix(self.conn.rotate_left(32) ^ self.seq), index)
    }

    fn byte_with(&self, key: u64, index: usize) -> u8 {
        if index < SEQ_DIGITS {
            // Truncating to a nibble is the encoding.
            return b'a' + ((self.seq >> (4 * index)) & 0xf) as u8;
        }
        // A Weyl step and one multiply: cheap, and different for every
        // (connection, sequence, index) that matters here.
        let v = key
            .wrapping_add(index as u64)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
        b'a' + ((v >> 32) % 26) as u8
    }

    /// Compares `reply` with bytes `offset ..` of this message as a server
    /// in mode `expect` would return them; returns the index in `reply` of
    /// the first wrong byte, or `None` if all are right.
    ///
    /// ```
    /// use echo_reactor::load::payload::Message;
    /// use echo_reactor::Mode;
    /// let m = Message { conn: 1, seq: 7 };
    /// let mut reply = [0u8; 20];
    /// m.fill(0, &mut reply);
    /// assert_eq!(m.check(Mode::Echo, 0, &reply), None);
    /// assert_eq!(m.check(Mode::Upper, 0, &reply), Some(0)); // not uppercased
    /// reply.make_ascii_uppercase();
    /// assert_eq!(m.check(Mode::Upper, 0, &reply[5..]), Some(0)); // wrong offset
    /// assert_eq!(m.check(Mode::Upper, 5, &reply[5..]), None);
    /// ```
    pub fn check(&self, expect: Mode, offset: usize, reply: &[u8]) -> Option<usize> {
        let key = mix(self.conn.rotate_left(32) ^ self.seq);
        reply.iter().enumerate().find_map(|(i, &got)| {
            let want = transform(expect, self.byte_with(key, offset + i));
            (got != want).then_some(i)
        })
    }
}

/// What a server in mode `expect` answers for the payload byte `sent`.
/// Only echo and upper answer byte for byte (the load configuration
/// refuses the others); anything else is checked as echo.
pub fn transform(expect: Mode, sent: u8) -> u8 {
    match expect {
        Mode::Upper => sent.to_ascii_uppercase(),
        _ => sent,
    }
}

/// Reads the sequence number back from the first bytes of a reply (as a
/// server in mode `expect` returned it), or `None` if they are not digits.
/// Only `min(reply.len(), SEQ_DIGITS)` digits are there to read.
///
/// ```
/// use echo_reactor::load::payload::{decode_seq, Message};
/// use echo_reactor::Mode;
/// let mut buf = [0u8; 32];
/// Message { conn: 9, seq: 123_456 }.fill(0, &mut buf);
/// assert_eq!(decode_seq(Mode::Echo, &buf), Some(123_456));
/// assert_eq!(decode_seq(Mode::Echo, b"zz"), None);
/// ```
pub fn decode_seq(expect: Mode, reply: &[u8]) -> Option<u64> {
    let mut seq = 0u64;
    for (i, &b) in reply.iter().take(SEQ_DIGITS).enumerate() {
        let digit = (b'a'..=b'p')
            .find(|&d| transform(expect, d) == b)
            .map(|d| u64::from(d - b'a'))?;
        seq |= digit << (4 * i);
    }
    Some(seq)
}

/// splitmix64's finaliser: spreads (connection, sequence) over 64 bits.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(m: Message, size: usize) -> Vec<u8> {
        let mut v = vec![0; size];
        m.fill(0, &mut v);
        v
    }

    #[test]
    fn payloads_differ_by_connection_and_sequence() {
        let a = whole(Message { conn: 0, seq: 0 }, 64);
        let b = whole(Message { conn: 1, seq: 0 }, 64);
        let c = whole(Message { conn: 0, seq: 1 }, 64);
        assert_ne!(a[16..], b[16..]);
        assert_ne!(a, c);
        assert!(a.iter().all(u8::is_ascii_lowercase));
        // All 26 letters show up in a long message: a dropped or
        // uppercased letter anywhere would be caught.
        let long = whole(Message { conn: 5, seq: 5 }, 4096);
        for l in b'a'..=b'z' {
            assert!(long.contains(&l), "letter {}", l as char);
        }
    }

    #[test]
    fn any_chunking_checks_the_same() {
        let m = Message { conn: 77, seq: 901 };
        let reply = whole(m, 300);
        for chunk in [1, 2, 7, 64, 299, 300] {
            let mut off = 0;
            for part in reply.chunks(chunk) {
                assert_eq!(m.check(Mode::Echo, off, part), None, "chunk {chunk}");
                off += part.len();
            }
        }
    }

    #[test]
    fn one_wrong_byte_is_found_where_it_is() {
        let m = Message { conn: 2, seq: 3 };
        let mut reply = whole(m, 100);
        for i in [0, 15, 16, 99] {
            let saved = reply[i];
            reply[i] ^= 0x01;
            assert_eq!(m.check(Mode::Echo, 0, &reply), Some(i));
            reply[i] = saved;
        }
    }

    #[test]
    fn sequence_survives_upper_and_short_messages() {
        let m = Message {
            conn: 4,
            seq: 0xdead_beef,
        };
        let mut reply = whole(m, 8);
        reply.make_ascii_uppercase();
        assert_eq!(decode_seq(Mode::Upper, &reply), Some(0xdead_beef));
        assert_eq!(decode_seq(Mode::Echo, &reply), None);
    }
}
