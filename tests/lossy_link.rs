//! A shutdown over a link that loses one packet in five each way: a
//! connection is taken for at rest only when the kernel says nothing is in
//! flight either way and has not been for longer than the peer could be
//! retransmitting, never after a fixed quiet spell that a lost segment
//! outlasts.
//!
//! Runs over a veth pair between two network namespaces, with nftables
//! dropping 20% of what enters each side; skipped, saying why, without
//! root, `ip` or `nft`.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use common::netns::Pair;
use common::*;

/// How one request/response client ended.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Half-closed when it chose to, got every reply, then the server's FIN.
    Clean {
        exchanges: u64,
        /// When its end came, after the signal.
        after_signal: Option<Duration>,
    },
    /// The server ended it before its half-close (EOF or reset), this
    /// long after the signal (`None`: before it).
    EndedEarly {
        exchanges: u64,
        how: String,
        after_signal: Option<Duration>,
    },
}

/// The server's `--shutdown-timeout` in the test.
const DEADLINE: Duration = Duration::from_secs(10);

#[test]
fn over_a_lossy_link_shutdown_waits_for_request_response_clients_to_finish() {
    const CLIENTS: usize = 50;
    let pair = match Pair::build(20) {
        Ok(p) => p,
        Err(why) => {
            eprintln!("skipped: {why}");
            return;
        }
    };
    let addr = format!("{}:0", pair.server_ip());
    let argv: Vec<String> = ["serve", "--tcp", &addr, "--shutdown-timeout", "10"]
        .map(String::from)
        .into();
    let mut server = start_binary_logged(
        &argv,
        Some(&Pair::exec_prefix(&pair.server)),
        std::env::var("LOSSY_LOG").ok().as_deref(),
    );
    let target = server.tcp_addr();
    let signalled: Arc<OnceLock<Instant>> = Arc::new(OnceLock::new());
    let started = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let signalled = Arc::clone(&signalled);
            let started = Arc::clone(&started);
            Pair::run_in(&pair.client, move || {
                // Half-closes 2.5 to 3.5 s after the signal, spread out.
                let finish_after = Duration::from_millis(2500 + (i as u64 * 1000) / CLIENTS as u64);
                let mut s =
                    TcpStream::connect_timeout(&target, Duration::from_secs(30)).expect("connect");
                // Longer than the deadline and its linger: a client stuck in
                // the path's backoff hears the server's deadline, not its own
                // timeout.
                s.set_read_timeout(Some(Duration::from_secs(30)))
                    .expect("timeout");
                let ended = |exchanges, how: String| Outcome::EndedEarly {
                    exchanges,
                    how,
                    after_signal: signalled.get().map(|t| t.elapsed()),
                };
                s.set_nodelay(true).expect("nodelay");
                let mut exchanges = 0u64;
                const REQUEST: usize = 64;
                let mut reply = [0u8; REQUEST];
                loop {
                    if signalled.get().is_some_and(|t| t.elapsed() >= finish_after) {
                        break;
                    }
                    let mut request = format!("client {i:03} request {exchanges:010}").into_bytes();
                    request.resize(REQUEST - 1, b' ');
                    request.push(b'\n');
                    let sent = s.write_all(&request);
                    let got = sent.and_then(|()| s.read_exact(&mut reply));
                    if let Err(e) = got {
                        let how = match e.kind() {
                            ErrorKind::UnexpectedEof => "eof".to_string(),
                            _ => e.to_string(),
                        };
                        return ended(exchanges, how);
                    }
                    assert_eq!(&reply[..], &request[..], "client {i}");
                    exchanges += 1;
                    if exchanges == 1 {
                        started.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                }
                if let Err(e) = s.shutdown(std::net::Shutdown::Write) {
                    return ended(exchanges, e.to_string());
                }
                let mut rest = Vec::new();
                match s.read_to_end(&mut rest) {
                    Ok(_) if rest.is_empty() => Outcome::Clean {
                        exchanges,
                        after_signal: signalled.get().map(|t| t.elapsed()),
                    },
                    Ok(_) => ended(exchanges, format!("{} B after the half-close", rest.len())),
                    Err(e) => ended(exchanges, e.to_string()),
                }
            })
        })
        .collect();
    assert!(
        wait_until(Duration::from_secs(60), || started
            .load(std::sync::atomic::Ordering::SeqCst)
            == CLIENTS),
        "not every client got its first reply over the lossy link"
    );
    // Let them run a little with losses, then stop the server.
    thread::sleep(Duration::from_secs(1));
    server.signal(libc::SIGTERM);
    let _ = signalled.set(Instant::now());
    let outcomes: Vec<Outcome> = clients
        .into_iter()
        .map(|c| c.join().expect("client thread"))
        .collect();
    let status = server.wait_timeout(Duration::from_secs(30));
    let stderr = server.final_stderr();
    if let Ok(path) = std::env::var("LOSSY_LOG_FILE") {
        let _ = std::fs::write(path, &stderr);
    }
    // At 20% loss each way TCP's own backoff can hold one exchange for
    // many seconds; a client still stuck at the deadline is the path's,
    // and the deadline's to end. Ending one before that is the server
    // taking a conversation for over.
    let before_deadline: Vec<(usize, &Outcome)> = outcomes
        .iter()
        .enumerate()
        .filter(|(_, o)| match o {
            Outcome::Clean { .. } => false,
            Outcome::EndedEarly { after_signal, .. } => {
                after_signal.map_or(true, |t| t < DEADLINE - Duration::from_millis(500))
            }
        })
        .collect();
    let stuck = outcomes
        .iter()
        .filter(|o| !matches!(o, Outcome::Clean { .. }))
        .count()
        - before_deadline.len();
    let exchanges: u64 = outcomes
        .iter()
        .map(|o| match o {
            Outcome::Clean { exchanges, .. } | Outcome::EndedEarly { exchanges, .. } => *exchanges,
        })
        .sum();
    eprintln!(
        "{exchanges} exchanges; {} ended before the deadline, {stuck} stuck in backoff past it",
        before_deadline.len()
    );
    assert!(
        before_deadline.is_empty(),
        "{} of {CLIENTS} ended before their half-close and before the deadline: \
         {before_deadline:?}\n{}",
        before_deadline.len(),
        tail(&stderr, 10)
    );
    assert!(status.is_some_and(|s| s.success()), "{status:?}\n{stderr}");
    // The deadline cuts only connections still busy then: clients whose
    // end (clean or not) came at the deadline or later, their own last
    // segments stuck in the path's backoff.
    let late = outcomes
        .iter()
        .filter(|o| {
            let after = match o {
                Outcome::Clean { after_signal, .. } | Outcome::EndedEarly { after_signal, .. } => {
                    *after_signal
                }
            };
            after.is_some_and(|t| t >= DEADLINE - Duration::from_millis(500))
        })
        .count();
    let forced = final_stat(&stderr, "forced").unwrap_or(u64::MAX);
    assert!(
        forced <= late as u64,
        "{forced} cut by the deadline, {late} clients ended at it or later\n{stderr}"
    );
    drop(pair);
}
