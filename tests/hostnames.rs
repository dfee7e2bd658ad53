//! Host names for `load` and `client`: resolved once at the start, the
//! first address that accepts used for TCP, the name and the address in
//! the report, and a name that resolves to nothing a usage error (exit 2).
//!
//! The made-up names live in a network namespace's own `/etc/hosts`, so
//! nothing outside it resolves them and no lookup leaves it; those tests
//! say they skipped where namespaces cannot be made (not root, no `ip`).
//! `localhost` needs no resolver and runs anywhere.

mod common;

use std::time::Duration;

use common::netns::Netns;
use common::{final_stat, run_to_end, start_binary, start_server, Finished};

const BIN: &str = env!("CARGO_BIN_EXE_echo-reactor");
const LIMIT: Duration = Duration::from_secs(30);

/// `echo-reactor ARGS` inside `ns`, to its end.
fn run_in(ns: &Netns, args: &[&str], stdin_text: Option<&str>) -> Finished {
    match stdin_text {
        None => {
            let mut cmd = ns.command(BIN);
            cmd.args(args);
            run_to_end(cmd, LIMIT)
        }
        // The client reads its lines from stdin: through a shell here.
        Some(text) => {
            let mut cmd = ns.command("sh");
            cmd.args(["-c", r#"printf "$0" | "$@""#, text, BIN])
                .args(args);
            run_to_end(cmd, LIMIT)
        }
    }
}

fn json(out: &Finished) -> serde_json::Value {
    serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("{e}: not one JSON object: {out:#?}"))
}

#[test]
fn load_and_client_reach_a_made_up_name_from_the_hosts_file() {
    let Some(ns) = Netns::or_skip("names", "127.0.0.1 localhost\n127.0.0.1 echo-target.test\n")
    else {
        return;
    };
    let server = start_binary(
        &["serve", "--tcp", "127.0.0.1:0", "--udp", "127.0.0.1:0"].map(String::from),
        Some(&ns.prefix()),
    );
    let (tcp, udp) = (server.tcp_addr().port(), server.udp_addr().port());

    let url = format!("tcp://echo-target.test:{tcp}");
    let out = run_in(
        &ns,
        &["load", &url, "-c", "4", "-d", "500ms", "--json"],
        None,
    );
    assert_eq!(out.code(), 0, "{out:#?}");
    let report = json(&out);
    assert_eq!(report["host"], "echo-target.test", "{report}");
    assert_eq!(report["target"], format!("127.0.0.1:{tcp}"), "{report}");
    assert_eq!(report["connected"], 4);

    // The text report names both, and UDP resolves the same way.
    let url = format!("udp://echo-target.test:{udp}");
    let out = run_in(
        &ns,
        &["load", &url, "-c", "2", "-d", "0.3", "--rate", "200"],
        None,
    );
    assert_eq!(out.code(), 0, "{out:#?}");
    let want =
        format!("target     udp://echo-target.test:{udp} at 127.0.0.1:{udp} (2 of 2 sockets");
    assert!(out.stdout.contains(&want), "{}", out.stdout);

    let addr = format!("echo-target.test:{tcp}");
    let out = run_in(&ns, &["client", &addr], Some("hello\\n"));
    assert_eq!(out.code(), 0, "{out:#?}");
    assert_eq!(out.stdout, "hello\n");
    let stderr = server.stop();
    assert_eq!(final_stat(&stderr, "accepted"), Some(5), "{stderr}");
}

#[test]
fn tcp_tries_the_next_address_when_the_first_refuses() {
    // The resolver lists ::1 first (RFC 6724 prefers IPv6); the server
    // listens on 127.0.0.1 only.
    let hosts = "127.0.0.1 localhost\n::1 both.test\n127.0.0.1 both.test\n";
    let Some(ns) = Netns::or_skip("order", hosts) else {
        return;
    };
    let server = start_binary(
        &["serve", "--tcp", "127.0.0.1:0"].map(String::from),
        Some(&ns.prefix()),
    );
    let port = server.tcp_addr().port();
    let url = format!("tcp://both.test:{port}");
    let out = run_in(
        &ns,
        &["load", &url, "-c", "20", "-d", "500ms", "--json"],
        None,
    );
    assert_eq!(out.code(), 0, "{out:#?}");
    let report = json(&out);
    assert_eq!(report["target"], format!("127.0.0.1:{port}"), "{report}");
    assert_eq!(report["errors"]["connect"], 0, "{report}");
    assert!(
        out.stderr
            .contains(&format!("[::1]:{port} did not accept a connection")),
        "{}",
        out.stderr
    );

    let out = run_in(
        &ns,
        &["client", &format!("both.test:{port}")],
        Some("hi\\n"),
    );
    assert_eq!(out.code(), 0, "{out:#?}");
    assert_eq!(out.stdout, "hi\n");
    // The probe and the twenty connections, each once: every connection
    // went to the address that answered, none tried ::1 first.
    let stderr = server.stop();
    assert_eq!(final_stat(&stderr, "accepted"), Some(22), "{stderr}");
}

#[test]
fn a_name_that_resolves_to_nothing_is_a_usage_error() {
    let Some(ns) = Netns::or_skip("none", "127.0.0.1 localhost\n") else {
        return;
    };
    for args in [
        &["load", "tcp://no-such-host.test:7007", "-d", "1"][..],
        &["load", "udp://no-such-host.test:7007", "--json"],
        &["client", "no-such-host.test:7007"],
    ] {
        let out = run_in(&ns, args, None);
        assert_eq!(out.code(), 2, "{args:?}: {out:#?}");
        assert!(
            out.stderr
                .contains("host name 'no-such-host.test' resolves to nothing"),
            "{args:?}: {}",
            out.stderr
        );
        assert!(out.stdout.is_empty(), "{args:?}: {}", out.stdout);
    }
}

#[test]
fn localhost_means_both_loopbacks_whatever_etc_hosts_says() {
    // Here /etc/hosts may list localhost as 127.0.0.1 only; the server
    // listens on ::1 only, and localhost still reaches it.
    let server = start_server(&["--tcp", "[::1]:0"]);
    let port = server.tcp_addr().port();
    let url = format!("tcp://localhost:{port}");
    let out = common::run_binary(&["load", &url, "-c", "3", "-d", "300ms", "--json"], LIMIT);
    assert_eq!(out.code(), 0, "{out:#?}");
    let report = json(&out);
    assert_eq!(report["host"], "localhost");
    assert_eq!(report["target"], format!("[::1]:{port}"));
    server.stop();
}
