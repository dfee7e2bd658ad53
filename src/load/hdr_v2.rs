//! The latency histogram as one line of text: HdrHistogram's standard "V2
//! compressed" encoding (DEFLATE), in base64. Java's
//! `encodeIntoCompressedByteBuffer`, Go's, Python's `hdrh` and this crate's
//! `V2DeflateSerializer` all write and read this form, so a report's
//! histogram can be merged or plotted by any of them.
//!
//! A report carries its histogram this way so that parts of a split test
//! can be added exactly: percentiles of the sum, never averages of
//! percentiles.

use std::io::Read;

use base64::Engine as _;
use flate2::read::ZlibDecoder;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
use hdrhistogram::Histogram;

/// The longest encoded histogram accepted: a 1 us..1 h histogram with
/// three digits encodes to a few KiB; anything far larger was not written
/// by a load run.
pub const MAX_ENCODED_LEN: usize = 1 << 20;

/// The most counts (slots) a decoded histogram may have: every range at
/// up to four significant digits, and 1 us..1 h at five, fits; a header
/// asking for more would make decoding allocate what a report never needs.
pub const MAX_COUNTS: usize = 1 << 21;

/// HdrHistogram's V2 cookies, plain and DEFLATE-compressed.
const V2_COOKIE: u32 = 0x1c84_9303 | 0x10;
const V2_COMPRESSED_COOKIE: u32 = 0x1c84_9304 | 0x10;

/// The cookie and header of the plain V2 form: payload length, normalizing
/// offset and significant digits (4 bytes each), lowest and highest value
/// (8 each), integer-to-double ratio (8).
const V2_HEADER_LEN: usize = 40;

/// The most bytes one count takes in the payload: a LEB128 varint of a
/// zig-zag i64, at most 9 bytes in HdrHistogram's variant.
const MAX_VARINT_LEN: usize = 9;

/// Encodes a histogram as base64 of its V2 compressed form.
///
/// # Errors
///
/// Only if compression fails, which for an in-memory buffer means a bug
/// in the encoder; the message says so.
pub fn encode(h: &Histogram<u64>) -> Result<String, String> {
    let mut bytes = Vec::new();
    V2DeflateSerializer::new()
        .serialize(h, &mut bytes)
        .map_err(|e| format!("cannot encode the latency histogram: {e:?}"))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// Decodes what [`encode`] (or another HdrHistogram library) wrote, plain
/// V2 or compressed. Before anything is allocated, the header is checked
/// against what a histogram of its range and precision can hold: the
/// payload it announces (a hostile one claims gigabytes in a few bytes)
/// and the number of counts.
///
/// # Errors
///
/// A message for people when the text is too long, not base64, not a V2
/// histogram, or announces more than its range and precision can hold.
pub fn decode(text: &str) -> Result<Histogram<u64>, String> {
    if text.len() > MAX_ENCODED_LEN {
        return Err(format!(
            "encoded histogram is {} bytes, more than the {MAX_ENCODED_LEN} a report can hold",
            text.len()
        ));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|e| format!("histogram is not base64: {e}"))?;
    let plain = plain_v2(&bytes)?;
    Deserializer::new()
        .deserialize(&mut plain.as_slice())
        .map_err(|e| format!("histogram is not in HdrHistogram's V2 encoding: {e:?}"))
}

/// The plain V2 form (cookie, header, payload) of `bytes`, inflated if
/// compressed, with the header checked before the payload is read.
fn plain_v2(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let short = || "histogram is too short for HdrHistogram's V2 header".to_string();
    let cookie = be_u32(bytes, 0).ok_or_else(short)?;
    if cookie == V2_COOKIE {
        let header = bytes.get(..V2_HEADER_LEN).ok_or_else(short)?;
        let payload_len = checked_payload_len(header)?;
        if bytes.len() - V2_HEADER_LEN < payload_len {
            return Err(payload_short(payload_len));
        }
        let plain = bytes[..V2_HEADER_LEN + payload_len].to_vec();
        check_counts(&plain[V2_HEADER_LEN..])?;
        return Ok(plain);
    }
    if cookie != V2_COMPRESSED_COOKIE {
        return Err(format!(
            "histogram is not in HdrHistogram's V2 encoding (cookie {cookie:#010x})"
        ));
    }
    let deflated_len = be_u32(bytes, 4).ok_or_else(short)? as usize;
    let deflated = &bytes[8..];
    let deflated = &deflated[..deflated_len.min(deflated.len())];
    let mut inflater = ZlibDecoder::new(deflated);
    let mut plain = vec![0u8; V2_HEADER_LEN];
    inflater
        .read_exact(&mut plain)
        .map_err(|e| format!("histogram does not inflate to a V2 header: {e}"))?;
    let payload_len = checked_payload_len(&plain)?;
    // Bounded by the check above, and by what inflates: a zip bomb stops
    // at the payload length its header announced.
    inflater
        .take(payload_len as u64)
        .read_to_end(&mut plain)
        .map_err(|e| format!("histogram does not inflate: {e}"))?;
    if plain.len() < V2_HEADER_LEN + payload_len {
        return Err(payload_short(payload_len));
    }
    check_counts(&plain[V2_HEADER_LEN..])?;
    Ok(plain)
}

fn payload_short(payload_len: usize) -> String {
    format!("histogram ends before the {payload_len}-byte payload its header announces")
}

/// The payload length a plain V2 header announces, if a histogram of the
/// range and precision it gives can hold that much.
fn checked_payload_len(header: &[u8]) -> Result<usize, String> {
    let field = |at| be_u32(header, at).unwrap_or(0);
    let (payload_len, digits) = (field(4) as usize, field(12));
    let low = be_u64(header, 16).unwrap_or(0);
    let high = be_u64(header, 24).unwrap_or(0);
    let counts = counts_len(low, high, digits).ok_or_else(|| {
        format!(
            "histogram's header is not a valid range and precision \
             (lowest {low}, highest {high}, {digits} digits)"
        )
    })?;
    if counts > MAX_COUNTS {
        return Err(format!(
            "histogram's range {low}..{high} at {digits} digits needs {counts} counts, \
             more than the {MAX_COUNTS} a report's histogram may have"
        ));
    }
    let most = counts * MAX_VARINT_LEN;
    if payload_len > most {
        return Err(format!(
            "histogram's header announces a {payload_len}-byte payload, but one of range \
             {low}..{high} at {digits} digits holds at most {most} bytes"
        ));
    }
    Ok(payload_len)
}

/// How many counts HdrHistogram allocates for a histogram of `low..=high`
/// at `digits` significant digits (its `new_with_bounds`, worked out
/// without allocating); `None` for parameters it refuses.
fn counts_len(low: u64, high: u64, digits: u32) -> Option<usize> {
    if !(1..=u64::MAX / 2).contains(&low) || high < 2 * low || digits > 5 {
        return None;
    }
    // Single-unit resolution up to 2 * 10^digits, in a power of two.
    let largest = 2 * 10u64.pow(digits);
    let sub_bucket_magnitude = 64 - (largest - 1).leading_zeros();
    let unit_magnitude = 63 - low.leading_zeros();
    if unit_magnitude + sub_bucket_magnitude > 63 {
        return None;
    }
    let sub_bucket_count = 1u64 << sub_bucket_magnitude;
    let mut smallest_untrackable = sub_bucket_count << unit_magnitude;
    let mut buckets = 1u64;
    while smallest_untrackable <= high {
        if smallest_untrackable > u64::MAX / 2 {
            buckets += 1;
            break;
        }
        smallest_untrackable <<= 1;
        buckets += 1;
    }
    usize::try_from((buckets + 1) * (sub_bucket_count / 2)).ok()
}

/// Refuses a payload holding the one count HdrHistogram's decoder cannot
/// negate (a zero run of 2^63, whose zig-zag varint is all ones).
fn check_counts(payload: &[u8]) -> Result<(), String> {
    let mut at = 0;
    while at < payload.len() {
        let (value, len) = varint(&payload[at..]);
        if value == u64::MAX {
            return Err("histogram's payload holds an impossible count".into());
        }
        at += len;
    }
    Ok(())
}

/// One of HdrHistogram's varints at the start of `bytes`: LEB128 with at
/// most 9 bytes, the ninth taken whole; stops early at the end.
fn varint(bytes: &[u8]) -> (u64, usize) {
    let mut value = 0u64;
    for (i, &b) in bytes.iter().enumerate().take(MAX_VARINT_LEN) {
        if i == MAX_VARINT_LEN - 1 {
            return (value | u64::from(b) << 56, MAX_VARINT_LEN);
        }
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return (value, i + 1);
        }
    }
    (value, bytes.len().min(MAX_VARINT_LEN))
}

fn be_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let b: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
    Some(u32::from_be_bytes(b))
}

fn be_u64(bytes: &[u8], at: usize) -> Option<u64> {
    let b: [u8; 8] = bytes.get(at..at + 8)?.try_into().ok()?;
    Some(u64::from_be_bytes(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::report::new_histogram;

    #[test]
    fn a_histogram_survives_the_round_trip_exactly() {
        let mut h = new_histogram();
        for v in [1u64, 7, 120, 120, 999, 45_000, 3_000_000] {
            h.record(v).expect("in range");
        }
        let back = decode(&encode(&h).expect("encodes")).expect("decodes");
        assert_eq!(back.len(), h.len());
        for q in [0.0, 0.5, 0.9, 0.99, 1.0] {
            assert_eq!(back.value_at_quantile(q), h.value_at_quantile(q), "q {q}");
        }
        assert_eq!(back.max(), h.max());
    }

    #[test]
    fn the_encoding_starts_with_the_v2_compressed_cookie() {
        // 0x1c849304 is the V2 compressed cookie; in base64 it reads "HISTF".
        let text = encode(&new_histogram()).expect("encodes");
        assert!(text.starts_with("HISTF"), "{text}");
    }

    #[test]
    fn reads_what_another_hdrhistogram_library_wrote() {
        // Python's hdrh: HdrHistogram(1, 3600000000, 3), values 5 and 77, encode().
        let python = "HISTFAAAACV4nJNpmSzMwMDAygABzFCaEURcm7yEwf4DRICTqZeRCQBqGwUn";
        let h = decode(python).expect("decodes");
        assert_eq!(h.len(), 2);
        assert_eq!((h.min(), h.max()), (5, 77));
    }

    /// A compressed V2 histogram whose header says what the caller likes.
    fn forged(payload_len: u32, digits: u32, low: u64, high: u64, payload: &[u8]) -> String {
        use flate2::write::ZlibEncoder;
        use std::io::Write as _;
        let mut plain = Vec::new();
        plain.extend(V2_COOKIE.to_be_bytes());
        plain.extend(payload_len.to_be_bytes());
        plain.extend(0u32.to_be_bytes());
        plain.extend(digits.to_be_bytes());
        plain.extend(low.to_be_bytes());
        plain.extend(high.to_be_bytes());
        plain.extend(1.0f64.to_be_bytes());
        plain.extend(payload);
        let mut z = ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        z.write_all(&plain).expect("in memory");
        let deflated = z.finish().expect("in memory");
        let mut bytes = Vec::new();
        bytes.extend(V2_COMPRESSED_COOKIE.to_be_bytes());
        bytes.extend((deflated.len() as u32).to_be_bytes());
        bytes.extend(deflated);
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    #[test]
    fn a_header_claiming_gigabytes_is_refused_before_anything_is_allocated() {
        let text = forged(u32::MAX - 15, 3, 1, 3_600_000_000, &[]);
        assert!(text.len() < 80, "a few dozen bytes: {text}");
        let e = decode(&text).unwrap_err();
        assert!(e.contains("4294967280-byte payload"), "{e}");
        // A range that needs more counts than a report's may have.
        let e = decode(&forged(8, 5, 1, u64::MAX, &[])).unwrap_err();
        assert!(e.contains("counts"), "{e}");
        let e = decode(&forged(8, 3, 0, 10, &[])).unwrap_err();
        assert!(e.contains("not a valid range"), "{e}");
    }

    #[test]
    fn a_count_the_decoder_cannot_negate_is_refused() {
        let e = decode(&forged(9, 3, 1, 3_600_000_000, &[0xff; 9])).unwrap_err();
        assert!(e.contains("impossible count"), "{e}");
    }

    #[test]
    fn counts_are_worked_out_as_hdrhistogram_allocates_them() {
        for (low, high, digits) in [
            (1, 3_600_000_000, 3),
            (1, 2, 0),
            (1, u64::MAX, 2),
            (1000, 1 << 40, 4),
            (7, 1 << 62, 1),
            (1, 3_600_000_000, 5),
        ] {
            let h = Histogram::<u64>::new_with_bounds(low, high, digits as u8).expect("valid");
            assert_eq!(
                counts_len(low, high, digits),
                Some(h.distinct_values()),
                "{low}..{high} at {digits}"
            );
        }
    }

    #[test]
    fn garbage_is_refused_with_a_reason() {
        assert!(decode("not base64 at all!").is_err());
        assert!(decode("aGVsbG8=").is_err());
        assert!(decode(&"A".repeat(MAX_ENCODED_LEN + 1)).is_err());
    }
}
