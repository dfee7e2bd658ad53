//! The latency histogram as one line of text: HdrHistogram's standard "V2
//! compressed" encoding (DEFLATE), in base64. Java's
//! `encodeIntoCompressedByteBuffer`, Go's, Python's `hdrh` and this crate's
//! `V2DeflateSerializer` all write and read this form, so a report's
//! histogram can be merged or plotted by any of them.
//!
//! A report carries its histogram this way so that parts of a split test
//! can be added exactly: percentiles of the sum, never averages of
//! percentiles.

use base64::Engine as _;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
use hdrhistogram::Histogram;

/// The longest encoded histogram accepted: a 1 us..1 h histogram with
/// three digits encodes to a few KiB; anything far larger was not written
/// by a load run, and decoding it could allocate without bound.
pub const MAX_ENCODED_LEN: usize = 1 << 20;

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

/// Decodes what [`encode`] (or another HdrHistogram library) wrote.
///
/// # Errors
///
/// A message for people when the text is too long, not base64, or not a
/// V2 histogram.
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
    Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| format!("histogram is not in HdrHistogram's V2 encoding: {e:?}"))
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

    #[test]
    fn garbage_is_refused_with_a_reason() {
        assert!(decode("not base64 at all!").is_err());
        assert!(decode("aGVsbG8=").is_err());
        assert!(decode(&"A".repeat(MAX_ENCODED_LEN + 1)).is_err());
    }
}
