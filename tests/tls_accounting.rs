//! TLS and PROXY connections counted and started like plain ones: chargen
//! streams as soon as the handshake (or the PROXY header) is done, without
//! waiting for client input; a broken record after the handshake is a
//! connection error, not a handshake failure; and the bytes a reset takes
//! back are never counted as delivered.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::tls::Pki;
use common::*;

#[test]
fn chargen_over_tls_streams_without_any_client_input() {
    let pki = Pki::new();
    let server = start_tls_server(&pki, &["--mode", "chargen"]);
    let mut s = pki.connect(server.tls[0]);
    s.sock
        .set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    let mut got = vec![0u8; 10_000];
    s.read_exact(&mut got)
        .expect("chargen's stream over TLS, with nothing sent");
    assert!(got.iter().all(|b| b.is_ascii()), "not chargen's text");
    drop(s);
    server.stop();
}

#[test]
fn chargen_behind_a_proxy_header_streams_without_any_client_input() {
    let server = start_server(&[
        "--tcp",
        "127.0.0.1:0",
        "--proxy-protocol",
        "--mode",
        "chargen",
    ]);
    let mut s = connect(server.tcp_addr());
    s.write_all(b"PROXY TCP4 192.0.2.1 192.0.2.2 1000 7007\r\n")
        .expect("header");
    s.set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    let mut got = vec![0u8; 10_000];
    s.read_exact(&mut got)
        .expect("chargen's stream after the header, with nothing else sent");
    assert!(got.iter().all(|b| b.is_ascii()), "not chargen's text");
    drop(s);
    server.stop();
}

#[test]
fn a_broken_record_after_the_handshake_is_an_error_not_a_handshake_failure() {
    let pki = Pki::new();
    let server = start_tls_server(&pki, &[]);
    let mut s = pki.connect(server.tls[0]);
    // An application-data record whose ciphertext is noise: it fails to
    // decrypt, as a record tampered with on the way would.
    let mut record = vec![0x17, 0x03, 0x03, 0x00, 0x40];
    record.extend((0..0x40u8).map(|i| i.wrapping_mul(37)));
    s.sock.write_all(&record).expect("send the record");
    let mut buf = [0u8; 256];
    // The server answers with an alert and closes: the client sees an end.
    let _ = s.read(&mut buf);
    let stderr = server.stop();
    assert_eq!(final_stat(&stderr, "tls handshakes"), Some(1), "{stderr}");
    assert_eq!(final_stat(&stderr, "tls failed"), Some(0), "{stderr}");
    assert_eq!(final_stat(&stderr, "error"), Some(1), "{stderr}");
}

#[test]
fn a_write_timeout_reset_never_counts_tls_output_the_client_did_not_get() {
    let pki = Pki::new();
    let server = start_tls_server(&pki, &["--write-timeout", "1", "--max-pending", "1000000"]);
    let s = pki.connect(server.tls[0]);
    let (mut conn, mut sock) = (s.conn, s.sock);
    // Send 4 MiB, read nothing: the server's output backs up, its reads
    // pause, and after a second without progress it resets.
    let data = pattern(3, 4 << 20);
    conn.set_buffer_limit(None);
    conn.writer().write_all(&data).expect("plaintext");
    let mut records = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut records).expect("records");
    }
    let mut w = sock.try_clone().expect("clone");
    let writer = std::thread::spawn(move || {
        let _ = w.write_all(&records);
    });
    std::thread::sleep(Duration::from_secs(3));
    // Now read what the kernel kept for us, record by record, up to the
    // reset: that is all the client ever got.
    let mut got = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    'read: loop {
        loop {
            match conn.reader().read(&mut buf) {
                Ok(0) => break 'read,
                Ok(n) => got += n as u64,
                Err(_) => break,
            }
        }
        match conn.read_tls(&mut sock) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                if conn.process_new_packets().is_err() {
                    break;
                }
            }
        }
    }
    let _ = writer.join();
    let stderr = server.stop();
    let out = final_stat(&stderr, "out").expect("out");
    let bytes_in = final_stat(&stderr, "in").expect("in");
    let cut = final_stat(&stderr, "cut").expect("cut");
    assert_eq!(final_stat(&stderr, "stalled"), Some(1), "{stderr}");
    assert!(got > 0, "the client got nothing before the reset");
    assert!(
        out <= got,
        "the server counts {out} B delivered; the client got {got} B"
    );
    assert_eq!(bytes_in, out + cut, "{stderr}");
}
