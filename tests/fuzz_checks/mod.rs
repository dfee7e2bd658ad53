//! What each fuzz target holds the library to, one function a target:
//! the fuzz targets in `fuzz/` call these on every input they make up,
//! and `tests/fuzz_regressions.rs` replays the inputs kept under
//! `fuzz/regressions/` through them on every `cargo test`, so a crash
//! the fuzzers once found stays found without nightly or libFuzzer.
//!
//! Each function panics (the fuzzer's "crash") when a parser panics or
//! breaks one of the promises its doc names, and returns quietly for any
//! input the parser is right to refuse.
#![allow(dead_code)] // each includer uses its own part

use std::io::Write;
use std::sync::OnceLock;

use base64::Engine as _;
use echo_reactor::fuzzing::{
    metrics_response, parse_proxy_header, ProxyHeader, MAX_V1_HEADER, MAX_V2_HEADER,
    METRICS_MAX_REQUEST,
};
use echo_reactor::load::merge::{merge, parts_from_text};
use echo_reactor::load::report::new_histogram;
use echo_reactor::load::{compare, hdr_v2, output, Report};
use flate2::write::ZlibEncoder;
use flate2::Compression;

/// Replays `data` through the check of the fuzz target named `target`;
/// `false` for a target without one here (`cli` is the binary's).
pub fn replay(target: &str, data: &[u8]) -> bool {
    match target {
        "proxy_header" => proxy_header(data),
        "metrics_request" => metrics_request(data),
        "merge_input" => merge_input(data),
        "report_json" => report_json(data),
        "histogram" => histogram(data),
        _ => return false,
    }
    true
}

/// The PROXY header parser, from anyone who reaches the port. A complete
/// header lies within the input and the spec's bounds and ends where it
/// says (what follows is payload); every prefix of it is only incomplete
/// (a header split over many reads is assembled, never refused); and
/// "incomplete" never outlasts the gate's 4 KiB window.
pub fn proxy_header(data: &[u8]) {
    match parse_proxy_header(data) {
        ProxyHeader::Incomplete => assert!(
            data.len() < MAX_V2_HEADER,
            "incomplete after {} bytes: the gate would wait on a full window",
            data.len()
        ),
        ProxyHeader::Invalid(why) => assert!(!why.is_empty()),
        ProxyHeader::Complete { len, source } => {
            assert!(len <= data.len(), "header of {len} B in {} B", data.len());
            let bound = if data.starts_with(b"PROXY ") {
                MAX_V1_HEADER
            } else {
                MAX_V2_HEADER
            };
            assert!(len <= bound, "header of {len} B, beyond {bound}");
            let header = &data[..len];
            assert_eq!(
                parse_proxy_header(header),
                ProxyHeader::Complete { len, source },
                "the payload after the header changed it"
            );
            for cut in 0..len {
                assert_eq!(
                    parse_proxy_header(&header[..cut]),
                    ProxyHeader::Incomplete,
                    "the first {cut} of {len} header bytes"
                );
            }
        }
    }
}

/// The metrics endpoint's request reader: a complete head (or an
/// oversized one) gets a well-formed HTTP/1.1 response whose
/// `Content-Length` is its body's; nothing comes back while a head within
/// the limit is still on its way.
pub fn metrics_request(data: &[u8]) {
    let Some(response) = metrics_response(data) else {
        assert!(
            data.len() <= METRICS_MAX_REQUEST,
            "no answer to {} bytes, more than a request may have",
            data.len()
        );
        return;
    };
    let text = std::str::from_utf8(&response).expect("the response is text");
    let (head, body) = text.split_once("\r\n\r\n").expect("a head that ends");
    let mut lines = head.split("\r\n");
    let status = lines.next().expect("a status line");
    let rest = status.strip_prefix("HTTP/1.1 ").expect("HTTP/1.1");
    let (code, reason) = rest.split_once(' ').expect("code and reason");
    assert!(
        code.len() == 3 && matches!(code.as_bytes()[0], b'2' | b'4'),
        "status code {code:?}"
    );
    assert!(code.bytes().all(|b| b.is_ascii_digit()), "status {code:?}");
    let printable = |s: &str| s.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
    assert!(!reason.is_empty() && printable(reason), "reason {reason:?}");
    let mut length = None;
    for line in lines {
        let (name, value) = line.split_once(": ").expect("name: value");
        assert!(!name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic()));
        assert!(printable(value), "header value {value:?}");
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse::<usize>().expect("a length"));
        }
    }
    assert_eq!(length, Some(body.len()), "Content-Length and the body");
}

/// `merge`'s input: the first byte picks how the text is named (stdin or
/// a file), the rest is the text. Read into parts, merged, written out as
/// `merge` writes it; each part read back, and the merged report, write
/// JSON that reads back to the same, and no part holds a histogram larger
/// than the generator's own (memory follows the input's size, not what
/// its headers claim).
pub fn merge_input(data: &[u8]) {
    let Some((&which, text)) = data.split_first() else {
        return;
    };
    let name = if which & 1 == 0 { "stdin" } else { "a.json" };
    let Ok(parts) = parts_from_text(name, text) else {
        return;
    };
    for part in &parts {
        reads_back(&part.report);
    }
    let Ok(merged) = merge(&parts) else {
        return;
    };
    let _ = format!("{merged}");
    let _ = merged.failure_summary();
    let _ = merged.percentile_distribution();
    let _ = output::describe_merged(&merged, parts.len());
    reads_back(&merged);
}

/// The report reader, as `compare` and `merge` use it: a report it
/// accepts renders as text and as a `compare` table, and writes JSON that
/// reads back to the same.
pub fn report_json(data: &[u8]) {
    let Ok(json) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(summary) = compare::parse_summary("a.json", json) {
        let runs = [summary.clone(), summary];
        let _ = compare::unlike_runs(&runs);
        let _ = compare::compare_table(&runs);
        let _ = compare::compare_json(&runs);
    }
    let Ok(report) = Report::from_json(json) else {
        return;
    };
    let _ = format!("{report}");
    let _ = report.failure_summary();
    let _ = report.percentile_distribution();
    reads_back(&report);
}

/// What `to_json` wrote, `from_json` reads, and it writes the same again;
/// and the report's histogram is no larger than one of the generator's
/// own, whatever range the input gave it.
fn reads_back(report: &Report) {
    static OURS: OnceLock<usize> = OnceLock::new();
    let ours = *OURS.get_or_init(|| new_histogram().distinct_values());
    let handshakes = report.tls.as_ref().map(|t| &t.latency);
    for h in std::iter::once(&report.latency).chain(handshakes) {
        let counts = h.distinct_values();
        assert!(counts <= ours, "a histogram of {counts} counts");
    }
    let json = report.to_json();
    match Report::from_json(&json) {
        Ok(back) => assert_eq!(back.to_json(), json, "a report changed on its way back"),
        Err(e) => panic!("a report does not read back: {e}\n{json}"),
    }
}

/// HdrHistogram's V2 compressed cookie.
const V2_COMPRESSED_COOKIE: u32 = 0x1c84_9304 | 0x10;

/// The histogram inside every report. The JSON and base64 around it
/// would hide its structure from a fuzzer, so the first byte picks how
/// the rest is wrapped: as the text itself, as raw V2 bytes (base64'd
/// here), or as a V2 body compressed here behind the compressed cookie.
/// A histogram it accepts encodes and decodes to the same counts.
pub fn histogram(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let text = match which % 3 {
        0 => match std::str::from_utf8(rest) {
            Ok(s) => s.to_string(),
            Err(_) => return,
        },
        1 => b64(rest),
        _ => {
            let mut z = ZlibEncoder::new(Vec::new(), Compression::fast());
            z.write_all(rest).expect("into memory");
            let deflated = z.finish().expect("into memory");
            let mut bytes = V2_COMPRESSED_COOKIE.to_be_bytes().to_vec();
            let len = u32::try_from(deflated.len()).expect("a fuzz input is small");
            bytes.extend_from_slice(&len.to_be_bytes());
            bytes.extend_from_slice(&deflated);
            b64(&bytes)
        }
    };
    let Ok(h) = hdr_v2::decode(&text) else {
        return;
    };
    let again = hdr_v2::decode(&hdr_v2::encode(&h).expect("encodes")).expect("decodes");
    assert_eq!(again.len(), h.len());
    assert_eq!(again.max(), h.max());
    assert_eq!(again.min(), h.min());
}
