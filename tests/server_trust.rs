//! What the server reports about itself is true: bad intervals are refused
//! up front, unanswered datagrams are counted, the `closed` line names the
//! peer even after it has gone, and the totals are logged once.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn a_stats_interval_below_a_tenth_of_a_second_is_refused_with_exit_2() {
    let run = run_binary(
        &["serve", "--tcp", "127.0.0.1:0", "--stats", "1e-9"],
        Duration::from_secs(5),
    );
    assert_eq!(run.code(), 2, "{run:#?}");
    assert!(run.stderr.contains("too short"), "{}", run.stderr);
}

#[test]
fn daytime_counts_the_short_datagrams_it_leaves_unanswered() {
    let server = start_server(&["--mode", "daytime", "--udp", "127.0.0.1:0"]);
    let addr = server.udp_addr();
    let u = udp_client(addr);
    u.send_to(b"?", addr).expect("send");
    // A request long enough for the line gets it; sent after the short
    // one, its answer shows the short one was handled.
    u.send_to(&[b'?'; 100], addr).expect("send");
    let mut buf = [0u8; 256];
    let (n, _) = u.recv_from(&mut buf).expect("the long request's answer");
    assert!(n > 1, "a {n}-byte answer");
    let stderr = server.stop();
    assert_eq!(final_stat(&stderr, "udp in"), Some(2), "{stderr}");
    assert_eq!(final_stat(&stderr, "udp out"), Some(1), "{stderr}");
    assert_eq!(final_stat(&stderr, "udp refused-size"), Some(1), "{stderr}");
}

#[test]
fn the_closed_line_names_a_peer_that_reset() {
    let argv: Vec<String> = ["serve", "--tcp", "127.0.0.1:0"].map(String::from).into();
    let server = start_binary_logged(&argv, None, Some("echo_reactor=debug"));
    let mut s = connect(server.tcp_addr());
    assert_eq!(roundtrip(&mut s, b"hi"), b"hi");
    let me = s.local_addr().expect("local address").to_string();
    reset_abruptly(s);
    assert!(
        wait_until(IO_TIMEOUT, || server
            .stderr()
            .contains("closed: reset by peer")),
        "{}",
        server.stderr()
    );
    let stderr = server.stop();
    let line = stderr
        .lines()
        .find(|l| l.contains("closed: reset by peer"))
        .unwrap_or_default();
    assert!(line.contains(&format!(" {me}: closed")), "{line}");
}

#[test]
fn shutdown_logs_the_totals_once() {
    let server = start_server(&[]);
    let mut s = connect(server.tcp_addr());
    assert_eq!(roundtrip(&mut s, b"count me"), b"count me");
    drop(s);
    let stderr = server.stop();
    let totals = stderr
        .lines()
        .filter(|l| l.contains("tcp accepted"))
        .count();
    assert_eq!(totals, 1, "{stderr}");
}

#[test]
fn a_peer_that_resets_mid_echo_leaves_bytes_in_equal_to_out_plus_cut() {
    use std::io::Write;
    // Twenty clients each send 2 MiB without reading, with the server
    // buffering up to 1 MB per connection, then reset: the echo is cut at
    // every stage (pending here, queued in the kernel, half written), and
    // every byte read must be either delivered or counted cut.
    let argv: Vec<String> = ["serve", "--tcp", "127.0.0.1:0", "--max-pending", "1000000"]
        .map(String::from)
        .into();
    let server = start_binary_logged(&argv, None, Some("echo_reactor=debug"));
    let addr = server.tcp_addr();
    let mut clients = Vec::new();
    for i in 0..20u8 {
        let mut s = connect(addr);
        s.set_write_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        let data = vec![i; 2 << 20];
        let _ = s.write_all(&data);
        clients.push(s);
    }
    for s in clients {
        reset_abruptly(s);
    }
    assert!(
        wait_until(IO_TIMEOUT, || server.stderr().matches("closed:").count()
            >= 20),
        "the resets were not all seen"
    );
    let stderr = server.stop();
    let bytes_in = final_stat(&stderr, "in").expect("in");
    let out = final_stat(&stderr, "out").expect("out");
    let cut = final_stat(&stderr, "cut").expect("cut");
    assert!(bytes_in > 0, "{stderr}");
    assert_eq!(bytes_in, out + cut, "in = out + cut: {stderr}");
}
