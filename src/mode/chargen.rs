//! The character generator of RFC 864: the 95 printable ASCII characters
//! (0x20 to 0x7E) as a ring, 72 per line plus CRLF, each line starting one
//! character later than the one before. Pure: the stream is a function of
//! the byte offset, so a connection keeps no copy of what it has not sent
//! yet, only how much it has sent.

use std::sync::atomic::{AtomicU64, Ordering};

/// Characters per line, before the CRLF.
pub const LINE_CHARS: usize = 72;
/// Bytes per line, CRLF included.
pub const LINE_LEN: usize = LINE_CHARS + 2;
/// Printable ASCII characters in the ring.
const RING: usize = 95;
/// After 95 lines the pattern repeats: 7,030 bytes.
pub const PERIOD: usize = RING * LINE_LEN;

/// The whole period, computed at compile time, so filling is copying.
static STREAM: [u8; PERIOD] = build_period();

const fn build_period() -> [u8; PERIOD] {
    let mut out = [0u8; PERIOD];
    let mut line = 0;
    while line < RING {
        let mut col = 0;
        while col < LINE_CHARS {
            out[line * LINE_LEN + col] = 0x20 + ((line + col) % RING) as u8;
            col += 1;
        }
        out[line * LINE_LEN + LINE_CHARS] = b'\r';
        out[line * LINE_LEN + LINE_CHARS + 1] = b'\n';
        line += 1;
    }
    out
}

/// Fills `out` with the stream from byte `offset` on; always fills it all.
pub fn fill(offset: u64, out: &mut [u8]) -> usize {
    let mut at = (offset % PERIOD as u64) as usize;
    let mut done = 0;
    while done < out.len() {
        let n = (PERIOD - at).min(out.len() - done);
        out[done..done + n].copy_from_slice(&STREAM[at..at + n]);
        done += n;
        at = 0;
    }
    done
}

/// Which line the next UDP reply starts at: each reply starts one line
/// later, as a TCP stream would. Shared by every loop; order between loops
/// does not matter.
static UDP_LINE: AtomicU64 = AtomicU64::new(0);

/// A UDP reply into `buf`, whose length is the most the server may send.
/// Without amplification that is the request's length: one line cut to
/// fit. With it (`amplify`), RFC 864's random 0 to 512 characters.
pub fn datagram(buf: &mut [u8], amplify: bool) -> usize {
    let line = UDP_LINE.fetch_add(1, Ordering::Relaxed);
    let want = if amplify {
        (xorshift(line) % 513) as usize
    } else {
        LINE_LEN
    };
    let n = want.min(buf.len());
    fill(line * LINE_LEN as u64, &mut buf[..n])
}

/// A cheap, deterministic pseudo-random number from a counter: enough to
/// vary reply sizes, and not a secret of any kind.
fn xorshift(seed: u64) -> u64 {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The RFC's rule, spelled out independently of the table.
    fn expected(offset: usize) -> u8 {
        let (line, col) = ((offset / LINE_LEN) % RING, offset % LINE_LEN);
        match col {
            c if c < LINE_CHARS => b' ' + ((line + c) % RING) as u8,
            c if c == LINE_CHARS => b'\r',
            _ => b'\n',
        }
    }

    #[test]
    fn first_lines_follow_rfc_864() {
        let mut out = [0u8; 2 * LINE_LEN];
        fill(0, &mut out);
        let first = &out[..LINE_LEN];
        assert!(first.starts_with(b" !\"#$%&'()*+,-./0123456789:"));
        assert!(first.ends_with(b"efg\r\n"));
        assert!(out[LINE_LEN..].starts_with(b"!\"#$%&'()*+,-./0123456789:"));
        assert!(out.ends_with(b"fgh\r\n"));
    }

    #[test]
    fn every_offset_matches_the_rule_across_the_wrap() {
        let mut out = vec![0u8; 3 * PERIOD + 17];
        fill(5, &mut out);
        for (i, &b) in out.iter().enumerate() {
            assert_eq!(b, expected(i + 5), "offset {}", i + 5);
        }
    }

    #[test]
    fn filling_in_pieces_equals_filling_at_once() {
        let mut whole = vec![0u8; 10_000];
        fill(0, &mut whole);
        let mut pieces = Vec::new();
        let mut offset = 0u64;
        for size in [1usize, 73, 74, 500, 7030, 2322] {
            let mut piece = vec![0u8; size];
            fill(offset, &mut piece);
            pieces.extend_from_slice(&piece);
            offset += size as u64;
        }
        assert_eq!(pieces, whole);
    }

    #[test]
    fn datagram_never_exceeds_the_room_given() {
        for room in [0usize, 1, 10, 73, 74, 75, 1000] {
            let mut buf = vec![0u8; room];
            let n = datagram(&mut buf, false);
            assert_eq!(n, room.min(LINE_LEN));
            assert!(buf[..n]
                .iter()
                .all(|&b| (0x20..=0x7e).contains(&b) || b == b'\r' || b == b'\n'));
        }
    }

    #[test]
    fn amplified_datagrams_are_at_most_512_bytes() {
        let mut buf = vec![0u8; 65_507];
        let sizes: Vec<usize> = (0..200).map(|_| datagram(&mut buf, true)).collect();
        assert!(sizes.iter().all(|&n| n <= 512));
        assert!(sizes.iter().any(|&n| n > 74), "random sizes: {sizes:?}");
    }
}
