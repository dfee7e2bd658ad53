//! A real HAProxy (`haproxy -f CFG -db`, 2.6 here) between the generator
//! and the server. Its configuration is README.md's, the block after a
//! `<!-- haproxy: NAME -->` marker, with the test's ports and files put in
//! place of the README's, so the configs the README shows are the ones
//! the tests run. The process and its directory go when the handle drops.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The frontend address README.md's configs listen on (TLS and plain).
pub const README_TLS_FRONTEND: &str = "127.0.0.1:7443";
/// See [`README_TLS_FRONTEND`].
pub const README_TCP_FRONTEND: &str = "127.0.0.1:7100";
/// The backend (our server) README.md's configs forward to.
pub const README_BACKEND: &str = "127.0.0.1:7007";
/// Where README.md's TLS config reads the certificate and key.
pub const README_PEM: &str = "/etc/echo-reactor/haproxy.pem";

/// True when `haproxy` can be run.
pub fn have_haproxy() -> bool {
    Command::new("haproxy")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The fenced block after `<!-- haproxy: NAME -->` in README.md.
pub fn readme_config(name: &str) -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README");
    let marker = format!("<!-- haproxy: {name} -->");
    let at = readme
        .find(&marker)
        .unwrap_or_else(|| panic!("README.md has no {marker}"));
    let fence = "```haproxy\n";
    let start = readme[at..].find(fence).expect("a haproxy block") + at + fence.len();
    let end = readme[start..].find("\n```").expect("the block's end") + start;
    format!("{}\n", &readme[start..end])
}

/// A running HAProxy.
pub struct Haproxy {
    child: Child,
    dir: PathBuf,
    /// Where its frontend listens.
    pub frontend: SocketAddr,
    stderr: Arc<Mutex<String>>,
}

impl Haproxy {
    /// Starts HAProxy with `config`, in which `frontend` (one of the
    /// README's frontend addresses) becomes a free loopback port, and
    /// `replace` pairs are put in place; waits until the frontend accepts.
    pub fn start(config: &str, frontend: &str, replace: &[(&str, String)]) -> Haproxy {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "echo-reactor-haproxy-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("haproxy dir");
        // A port freed just now may be taken by someone else before HAProxy
        // binds it: then HAProxy exits, and another port is tried.
        for _ in 0..5 {
            let port = free_port();
            let mut text = config.replace(frontend, &format!("127.0.0.1:{port}"));
            for (from, to) in replace {
                text = text.replace(from, to);
            }
            let cfg = dir.join("haproxy.cfg");
            std::fs::write(&cfg, &text).expect("write haproxy.cfg");
            let mut child = Command::new("haproxy")
                .arg("-f")
                .arg(&cfg)
                .arg("-db")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn haproxy");
            let stderr = Arc::new(Mutex::new(String::new()));
            let pipe = child.stderr.take().expect("stderr piped");
            let sink = Arc::clone(&stderr);
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let mut s = sink.lock().expect("stderr");
                    s.push_str(&line);
                    s.push('\n');
                }
            });
            let frontend: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
            let deadline = Instant::now() + super::IO_TIMEOUT;
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break; // exited: try another port
                }
                // Read from the kernel's table rather than probed with a
                // connection, which HAProxy would pass on to the server.
                if is_listening(port) {
                    return Haproxy {
                        child,
                        dir,
                        frontend,
                        stderr,
                    };
                }
                if Instant::now() >= deadline {
                    let _ = child.kill();
                    panic!(
                        "haproxy did not listen on {frontend}:\n{text}\n{}",
                        stderr.lock().expect("stderr")
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("haproxy would not start on any of five ports");
    }

    /// Its process id (the benches read its CPU time and RSS).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What HAProxy said on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr").clone()
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// True when a TCP socket listens on `port` (`/proc/net/tcp`, state 0A).
fn is_listening(port: u16) -> bool {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    table.lines().skip(1).any(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let local_port = f
            .get(1)
            .and_then(|a| a.rsplit_once(':'))
            .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
        local_port == Some(port) && f.get(3) == Some(&"0A")
    })
}

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}
