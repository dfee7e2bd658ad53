//! The command blocks of docs/GUIDE.md, read out of the guide and run as
//! printed, through bash, as a student types them: so an edited command is
//! a tested command. The only changes are the port (a free one instead of
//! the guide's fixed 70xx) and `$T` (this build's target directory); where
//! a student would wait a moment before the next line, the test waits for
//! the event the next line needs, with a deadline.
//!
//! Each run is a process group of its own, like a terminal's job, and the
//! whole group is killed when the test is done with it. The tools are
//! the guide's: bash, nc (OpenBSD), ss, ps, python3 and strace, which
//! `.ci/run` installs.
//!
//! The same extraction keeps the Chinese edition (docs/zh/GUIDE.md) in
//! step: every English command block must appear in it, comments aside.

mod common;

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;

/// The repository's root: where the guide's relative paths start.
fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The command blocks of a Markdown file: runs of lines indented by four
/// spaces, also inside a `>` quote, one block per run.
fn command_blocks(text: &str) -> Vec<Vec<String>> {
    let mut blocks: Vec<Vec<String>> = Vec::new();
    let mut current: Vec<String> = Vec::new();
    for line in text.lines() {
        let body = line
            .strip_prefix("> ")
            .or_else(|| line.strip_prefix('>'))
            .unwrap_or(line);
        match body.strip_prefix("    ") {
            Some(code) if !code.trim().is_empty() => current.push(code.to_string()),
            _ if !current.is_empty() => blocks.push(std::mem::take(&mut current)),
            _ => {}
        }
    }
    if !current.is_empty() {
        blocks.push(current);
    }
    blocks
}

/// The English guide's one command block that contains `needle`.
fn guide_block(needle: &str) -> Vec<String> {
    let text = std::fs::read_to_string(root().join("docs/GUIDE.md")).expect("docs/GUIDE.md");
    let mut found: Vec<Vec<String>> = command_blocks(&text)
        .into_iter()
        .filter(|b| b.iter().any(|l| l.contains(needle)))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "blocks with {needle:?} in the guide: {found:?}"
    );
    found.remove(0)
}

/// The guide's line containing `needle`, in `block`, with the guide's port
/// replaced by `port`.
fn line(block: &[String], needle: &str, port: (u16, u16)) -> String {
    block
        .iter()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no {needle:?} in {block:?}"))
        .replace(&port.0.to_string(), &port.1.to_string())
}

/// A port nobody uses right now, below the kernel's ephemeral range: a
/// port from that range could be taken as the local port of some
/// outgoing connection between this check and the guide's server binding
/// it, and the bind would then fail.
fn free_port() -> u16 {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let span = low.saturating_sub(10_000).max(1) as u64;
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64)
        ^ (std::process::id() as u64) << 16;
    (0..1000u64)
        .map(|i| {
            let mixed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(i * 7919);
            10_000 + (mixed % span) as u16
        })
        .find(|&port| TcpListener::bind(("127.0.0.1", port)).is_ok())
        .expect("a free port below the ephemeral range")
}

/// Fails with what to install when a tool the guide uses is missing.
fn require(tool: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "the guide uses {tool}: install it (.ci/run does: see the apt-get line there)"
    );
}

/// A script run by bash in its own process group, as a terminal runs a
/// job, with `T` set as the guide sets it and the repository as its
/// directory; the whole group is killed on drop.
///
/// Its output goes to files, not pipes: once bash has exited, everything
/// its commands printed is in the file, where a pipe's reader might not
/// have read it yet.
struct Job {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Job {
    fn start(script: &str) -> Job {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let target: PathBuf = example_path("reactor")
            .parent()
            .and_then(Path::parent)
            .expect("target dir")
            .to_path_buf();
        let name = format!(
            "guide-job-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let stdout = std::env::temp_dir().join(format!("{name}.out"));
        let stderr = std::env::temp_dir().join(format!("{name}.err"));
        let file = |path: &Path| std::fs::File::create(path).expect("a file for the job's output");
        let child = Command::new("bash")
            .args(["-c", script])
            .env("T", target)
            .current_dir(root())
            .stdin(Stdio::null())
            .stdout(file(&stdout))
            .stderr(file(&stderr))
            .process_group(0)
            .spawn()
            .expect("spawn bash");
        Job {
            child,
            stdout,
            stderr,
        }
    }

    /// Starts a server's line and waits for its `listening on` line.
    fn serving(script: &str) -> Job {
        let job = Job::start(script);
        let up = job.wait_for("listening on", IO_TIMEOUT);
        assert!(up, "{script}: no listening line; stderr:\n{}", job.stderr());
        job
    }

    /// Runs a client's line to its end.
    fn finished(script: &str) -> Job {
        let mut job = Job::start(script);
        assert!(job.wait(IO_TIMEOUT), "{script}: did not end");
        job
    }

    fn stdout(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.stdout).unwrap_or_default()).into_owned()
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.stderr).unwrap_or_default()).into_owned()
    }

    /// Waits up to `limit` for stdout to contain `needle`.
    fn wait_for(&self, needle: &str, limit: Duration) -> bool {
        wait_until(limit, || self.stdout().contains(needle))
    }

    /// Waits up to `limit` for bash to exit; true if it did.
    fn wait(&mut self, limit: Duration) -> bool {
        wait_until(limit, || matches!(self.child.try_wait(), Ok(Some(_))))
    }

    /// Sends `signal` to the whole job, like Ctrl-Z (SIGSTOP) and `fg`
    /// (SIGCONT) do.
    fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on the process group this job created.
        unsafe { libc::kill(-(self.child.id() as i32), signal) };
    }

    /// Numbers alone on their line, in order (what `ps -o rss=` and
    /// `wc -c` print).
    fn numbers(&self) -> Vec<u64> {
        self.stdout()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        self.signal(libc::SIGKILL);
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.stdout);
        let _ = std::fs::remove_file(&self.stderr);
    }
}

/// A line of bash that waits (20 s at most) until something listens on
/// `port`: what a student's pause between two lines gives the server
/// started in the background by the first.
fn until_listening(port: u16) -> String {
    format!("for i in $(seq 400); do ss -Hltn 'sport = :{port}' | grep -q LISTEN && break; sleep 0.05; done")
}

/// Lab 1, both blocks as printed: the example's RSS climbs by hundreds of
/// MB under a client that never reads and never sends FIN; the server's
/// stays at a few MB.
#[test]
fn lab_1_pushing_without_reading_grows_the_example_not_the_server() {
    require("nc");
    for (needle, guide_port, grows) in [
        ("examples/reactor 127.0.0.1:7003 & server=$!", 7003, true),
        (
            "echo-reactor serve --tcp 127.0.0.1:7007 & server=$!",
            7007,
            false,
        ),
    ] {
        let block = guide_block(needle);
        assert_eq!(block.len(), 4, "the test runs these four lines: {block:?}");
        let port = (guide_port, free_port());
        let script = [
            line(&block, "server=$!", port),
            until_listening(port.1),
            line(&block, "client=$!", port),
            line(&block, "for i in", port),
            line(&block, "kill", port),
        ]
        .join("\n");
        let mut job = Job::start(&script);
        assert!(job.wait(Duration::from_secs(60)), "the lab did not end");
        let kb = job.numbers();
        assert_eq!(
            kb.len(),
            4,
            "four RSS lines: {}{}",
            job.stdout(),
            job.stderr()
        );
        if grows {
            // 486 MB in a second or two on a quiet machine; at least 124 MB
            // after four seconds with eight copies of this file's tests
            // running at once on two cores.
            assert!(
                kb[3] > 100_000,
                "the example should hold hundreds of MB: {kb:?} KB"
            );
        } else {
            assert!(
                kb.iter().all(|&k| k < 20_000),
                "the server should stay at a few MB: {kb:?} KB"
            );
        }
    }
}

/// Section 1, the block as printed: `listen(5)` and no `accept` hold six
/// established connections (Recv-Q 6, Send-Q 5 on the LISTEN socket),
/// leave two clients in SYN-SENT, and none half-open on the server.
#[test]
fn section_1_listen_5_holds_six_established_and_none_half_open() {
    require("nc");
    require("ss");
    let block = guide_block("s.listen(5)");
    let port = (7012, free_port());
    let p = port.1;
    let script = [
        line(&block, "s.listen(5)", port),
        until_listening(p),
        line(&block, "for i in", port),
        // A student looks a moment later; the test waits for all eight.
        format!("for i in $(seq 400); do [ $(ss -Htn 'dport = :{p}' | wc -l) -ge 8 ] && break; sleep 0.05; done"),
        "echo '-- listen'".into(),
        line(&block, "ss -ltn", port),
        "echo '-- clients'".into(),
        line(&block, "dport", port),
        "echo '-- half-open'".into(),
        line(&block, "syn-recv", port),
        "echo '-- end'".into(),
        line(&block, "kill", port),
    ]
    .join("\n");
    let mut job = Job::start(&script);
    assert!(
        job.wait(IO_TIMEOUT),
        "the block did not end: {}",
        job.stdout()
    );
    let out = job.stdout();
    let part = |from: &str, to: &str| -> Vec<String> {
        let rest = out.split_once(from).map_or("", |(_, r)| r);
        let part = rest.split_once(to).map_or(rest, |(p, _)| p);
        part.lines()
            .filter(|l| !l.trim().is_empty() && !l.contains("Local Address"))
            .map(String::from)
            .collect()
    };
    let listen = part("-- listen", "-- clients");
    let fields: Vec<&str> = listen
        .first()
        .map(|l| l.split_whitespace().collect())
        .unwrap_or_default();
    assert_eq!(fields.get(..3), Some(&["LISTEN", "6", "5"][..]), "{out}");
    let clients = part("-- clients", "-- half-open");
    let count = |state: &str| clients.iter().filter(|l| l.starts_with(state)).count();
    assert_eq!((count("ESTAB"), count("SYN-SENT")), (6, 2), "{out}");
    assert!(part("-- half-open", "-- end").is_empty(), "{out}");
}

/// Section 1, the block as printed: the non-blocking polling loop uses
/// most of a core with no client at all.
#[test]
fn section_1_the_polling_loop_burns_a_core_at_rest() {
    let block = guide_block("examples/nonblocking 127.0.0.1:7006 & server=$!");
    let port = free_port();
    let script = block.join("\n").replace("7006", &port.to_string());
    let mut job = Job::start(&script);
    assert!(job.wait(IO_TIMEOUT), "the block did not end");
    let out = job.stdout();
    let cpu: Vec<f64> = out.lines().filter_map(|l| l.trim().parse().ok()).collect();
    // A whole core on an idle machine; on a loaded one it gets its share
    // of the cores (9% each for eight copies at once on two), where a
    // model that waits shows 0.0.
    assert!(
        cpu.len() == 1 && cpu[0] >= 5.0,
        "ps should show most of a core: {out}{}",
        job.stderr()
    );
}

/// Section 1, as printed: under strace, every `poll` call lists every
/// socket (the test plays the two `nc`s).
#[test]
fn section_1_poll_hands_the_kernel_every_socket_on_every_call() {
    require("strace");
    let block = guide_block("trace=poll");
    let port = (7008, free_port());
    let job = Job::serving(&line(&block, "strace", port));
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port.1));
    let _first = connect(addr);
    let mut second = connect(addr);
    assert_eq!(roundtrip(&mut second, b"hello\n"), b"HELLO\n");
    let quoted = "poll([{fd=3, events=POLLIN}, {fd=4, events=POLLIN}, {fd=5, events=POLLIN}], 3, -1) = 1 ([{fd=5, revents=POLLIN}])";
    let listed = wait_until(IO_TIMEOUT, || job.stderr().lines().any(|l| l == quoted));
    assert!(listed, "no {quoted:?} in:\n{}", job.stderr());
}

/// Section 1, both commands as printed: the io_uring echo answers, and
/// strace sees `io_uring_enter` where the reactor makes `recvfrom` and
/// `sendto`.
#[test]
fn section_1_the_proactor_makes_no_recvfrom_or_sendto() {
    require("strace");
    require("nc");
    let block = guide_block("trace=io_uring_enter");
    let port = (7010, free_port());
    let server = Job::serving(&line(&block, "strace", port));
    let client = Job::finished(&line(&block, "printf", port));
    assert_eq!(client.stdout(), "HELLO\n");
    let trace = server.stderr();
    assert!(trace.contains("io_uring_enter("), "{trace}");
    assert!(
        !trace.contains("recvfrom(") && !trace.contains("sendto("),
        "{trace}"
    );
}

/// Section 2, both sides as printed: Python's `selectors` registers
/// level-triggered and reads a 32-byte line in two wake-ups of 16 bytes;
/// mio registers edge-triggered, and the same 16-byte reads leave the
/// second half in the kernel until the next event.
#[test]
fn section_2_python_selectors_is_level_triggered_and_mio_edge_triggered() {
    require("strace");
    require("nc");
    require("python3");
    let block = guide_block("selectors_echo.py");
    let port = (7011, free_port());
    let python = Job::serving(&line(&block, "strace", port));
    let client = Job::finished(&line(&block, "printf", port));
    assert_eq!(client.stdout(), "TWO READS OF SIXTEEN BYTES EACH\n");
    let trace = python.stderr();
    let conn_fd = trace
        .lines()
        .filter(|l| l.starts_with("epoll_ctl(") && l.contains("EPOLL_CTL_ADD"))
        .nth(1)
        .unwrap_or_else(|| panic!("no registration of the connection:\n{trace}"));
    assert!(
        conn_fd.contains("{events=EPOLLIN,") && !conn_fd.contains("EPOLLET"),
        "{conn_fd}"
    );
    let calls: Vec<&str> = trace
        .lines()
        .filter(|l| l.starts_with("epoll_wait(") || l.starts_with("recvfrom("))
        .collect();
    let first = calls
        .iter()
        .position(|l| l.contains("\"two reads of six\", 16, 0, NULL, NULL) = 16"))
        .unwrap_or_else(|| panic!("no first 16-byte read:\n{trace}"));
    assert!(calls[first - 1].starts_with("epoll_wait(") && calls[first - 1].ends_with("= 1"));
    assert!(calls[first + 1].starts_with("epoll_wait(") && calls[first + 1].ends_with("= 1"));
    assert!(
        calls[first + 2].contains("\"teen bytes each\\n\", 16, 0, NULL, NULL) = 16"),
        "{trace}"
    );

    let block = guide_block("recvfrom $T/examples/reactor");
    let port = (7003, free_port());
    let rust = Job::serving(&line(&block, "strace", port));
    let client = Job::start(&line(&block, "printf", port));
    assert!(
        client.wait_for("TWO READS OF SIX", IO_TIMEOUT),
        "{}",
        client.stdout()
    );
    // ss -tn 'sport = :7003': the other half waits in the Recv-Q.
    let server_side = wait_until(IO_TIMEOUT, || tcp_queues_by_local(port.1) == Some((0, 16)));
    assert!(server_side, "16 bytes should wait in the Recv-Q");
    // And no edge announces it: nothing more within a while.
    let more = wait_until(Duration::from_millis(500), || {
        client.stdout() != "TWO READS OF SIX"
    });
    assert!(
        !more,
        "the rest came without a new event: {:?}",
        client.stdout()
    );
    let trace = rust.stderr();
    assert!(
        trace
            .lines()
            .any(|l| l.contains("EPOLL_CTL_ADD") && l.contains("EPOLLIN|EPOLLRDHUP|EPOLLET")),
        "{trace}"
    );
    assert_eq!(
        trace.matches(", 16, 0, NULL, NULL) = 16").count(),
        1,
        "one 16-byte read:\n{trace}"
    );
}

/// The kernel's queues of the one TCP socket with local port `port` that is
/// not listening (the server's side of the only connection).
fn tcp_queues_by_local(port: u16) -> Option<(u64, u64)> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    table.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let local = u16::from_str_radix(f.get(1)?.rsplit_once(':')?.1, 16).ok()?;
        if local != port || *f.get(3)? != "01" {
            return None;
        }
        let (tx, rx) = f.get(4)?.split_once(':')?;
        Some((
            u64::from_str_radix(tx, 16).ok()?,
            u64::from_str_radix(rx, 16).ok()?,
        ))
    })
}

/// Section 4, as printed: a blocking `send` takes all 50 MB, a
/// non-blocking one what fits, then `BlockingIOError`; the rest is still
/// the caller's.
#[test]
fn section_4_send_returns_what_the_kernel_took() {
    require("python3");
    let block = guide_block("send_vs_sendall.py");
    let mut job = Job::start(&block.join("\n"));
    assert!(job.wait(Duration::from_secs(30)), "the script did not end");
    let out = job.stdout();
    let number_after = |prefix: &str| -> u64 {
        out.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no {prefix:?} in:\n{out}{}", job.stderr()))
    };
    assert_eq!(number_after("blocking send returned "), 50_000_000);
    let first = number_after("non-blocking send returned ");
    let taken = number_after("then, at ");
    assert!(0 < first && first <= taken && taken < 50_000_000, "{out}");
    assert!(out.contains("send raised BlockingIOError"), "{out}");
    assert_eq!(
        number_after("not lost, still ours to send: "),
        50_000_000 - taken
    );
}

/// Section 12, the commands as printed, with Ctrl-Z and `fg` as signals to
/// the reader's job: a reader that stopped is cut off by the flood, and
/// after `fg` sees what was queued, then EOF, far less than the flood.
#[test]
fn section_12_a_stopped_reader_is_cut_off_and_sees_eof() {
    require("nc");
    let block = guide_block("nc -d 127.0.0.1 7005 | wc -c");
    let port = (7005, free_port());
    let _room = Job::serving(&line(&block, "examples/chat", port));
    let mut reader = Job::start(&line(&block, "wc -c", port));
    let joined = wait_until(IO_TIMEOUT, || tcp_queues_by_local(port.1).is_some());
    assert!(joined, "the reader never connected");
    reader.signal(libc::SIGSTOP); // Ctrl-Z
    let mut flood = Job::start(&line(&block, "yes", port));
    assert!(flood.wait(Duration::from_secs(60)), "the flood did not end");
    reader.signal(libc::SIGCONT); // fg
    assert!(
        reader.wait(IO_TIMEOUT),
        "the stopped reader was never cut off: its pipeline is still waiting"
    );
    let got = reader.numbers();
    assert!(
        got.len() == 1 && got[0] > 0 && got[0] < 50_000_000,
        "wc -c should print a few MB of the 100 MB: {:?}",
        reader.stdout()
    );
}

/// A command line without its comment (`# ...` after a blank, outside
/// quotes) and trailing blanks: what the editions must share, since the
/// comments are translated.
fn without_comment(line: &str) -> String {
    let (mut single, mut double, mut prev) = (false, false, ' ');
    for (i, c) in line.char_indices() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '#' if !single && !double && prev.is_whitespace() => {
                return line[..i].trim_end().to_string();
            }
            _ => {}
        }
        prev = c;
    }
    line.trim_end().to_string()
}

/// Both editions, block by block: an experiment changed in one and not in
/// the other fails here.
#[test]
fn the_chinese_edition_has_every_command_of_the_english_one() {
    let read = |path: &str| {
        let text =
            std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
        command_blocks(&text)
            .into_iter()
            .map(|b| {
                b.iter()
                    .map(|l| without_comment(l))
                    .filter(|l| !l.is_empty())
                    .collect::<Vec<String>>()
            })
            .filter(|b| !b.is_empty())
            .collect::<Vec<_>>()
    };
    let english = read("docs/GUIDE.md");
    let chinese = read("docs/zh/GUIDE.md");
    assert!(english.len() > 10, "the guide's blocks were not found");
    let missing: Vec<&Vec<String>> = english.iter().filter(|b| !chinese.contains(b)).collect();
    assert!(
        missing.is_empty(),
        "commands of docs/GUIDE.md missing from docs/zh/GUIDE.md:\n{missing:#?}"
    );
    let extra: Vec<&Vec<String>> = chinese.iter().filter(|b| !english.contains(b)).collect();
    assert!(
        extra.is_empty(),
        "commands of docs/zh/GUIDE.md that the English guide does not have:\n{extra:#?}"
    );
}

#[test]
fn a_comment_is_cut_only_outside_quotes() {
    assert_eq!(without_comment("ss -tn   # two lines"), "ss -tn");
    assert_eq!(without_comment("# only a comment"), "");
    assert_eq!(
        without_comment("echo '# kept' \"#kept\" a#b"),
        "echo '# kept' \"#kept\" a#b"
    );
}
