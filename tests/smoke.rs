//! The first black-box check: the binary starts on port 0, echoes over
//! TCP and UDP, and exits 0 on SIGTERM.

mod common;

use common::*;

#[test]
fn binary_echoes_tcp_and_udp_and_stops_on_sigterm() {
    let server = start_server(&["--mode", "upper"]);
    let mut s = connect(server.tcp_addr());
    assert_eq!(roundtrip(&mut s, b"hello boy"), b"HELLO BOY");
    let u = udp_client(server.udp_addr());
    u.send_to(b"abc", server.udp_addr()).unwrap();
    let mut buf = [0u8; 16];
    let (n, _) = u.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"ABC");
    let stderr = server.stop();
    assert!(stderr.contains("final stats"), "{stderr}");
}
