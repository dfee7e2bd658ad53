//! Network namespaces for the tests that play other machines: each one a
//! separate network stack with its own loopback, and with its own
//! `/etc/hosts` and `/etc/resolv.conf` (`ip netns exec` mounts
//! `/etc/netns/NAME/*` over `/etc/*`), so a made-up host name resolves
//! there and nowhere else. Needs root and `ip` (iproute2); `Netns::new`
//! says why when it cannot. Dropping one kills what still runs inside
//! and removes it, its files under `/etc/netns` too.

use std::path::PathBuf;
use std::process::{Command, Stdio};

/// Whether this process runs as root.
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Runs `ip ARGS`.
pub fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// Runs `ip ARGS` inside namespace `ns`.
pub fn ip_in(ns: &str, args: &[&str]) -> Result<(), String> {
    let mut all = vec!["netns", "exec", ns, "ip"];
    all.extend_from_slice(args);
    ip(&all)
}

/// Kills every process in namespace `ns`, then removes it.
pub fn remove(ns: &str) {
    if let Ok(o) = Command::new("ip").args(["netns", "pids", ns]).output() {
        for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
            let _ = Command::new("kill").args(["-9", pid]).status();
        }
    }
    let _ = Command::new("ip").args(["netns", "del", ns]).status();
}

/// One namespace with its loopback up and its own hosts file.
pub struct Netns {
    /// Its name, for `ip netns exec`.
    pub name: String,
    etc: PathBuf,
}

impl Netns {
    /// Makes namespace `er<pid>-<tag>` whose `/etc/hosts` is `hosts`
    /// (lines like `127.0.0.1 echo-reactor`) and whose resolver asks
    /// 127.0.0.1, where nothing answers: a name not in `hosts` fails at
    /// once, and no lookup leaves the namespace. `Err` says why it cannot.
    pub fn new(tag: &str, hosts: &str) -> Result<Netns, String> {
        if !is_root() {
            return Err("not root: cannot create network namespaces".into());
        }
        let name = format!("er{}-{tag}", std::process::id());
        let etc = PathBuf::from("/etc/netns").join(&name);
        std::fs::create_dir_all(&etc).map_err(|e| format!("{}: {e}", etc.display()))?;
        let ns = Netns { name, etc };
        // From here on, Drop cleans up whatever was made.
        let write = |file: &str, text: &str| {
            std::fs::write(ns.etc.join(file), text).map_err(|e| format!("{file}: {e}"))
        };
        write("hosts", hosts)?;
        write(
            "resolv.conf",
            "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n",
        )?;
        ip(&["netns", "add", &ns.name])?;
        ip_in(&ns.name, &["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// [`Netns::new`], or `None` after printing why the calling test
    /// skips.
    pub fn or_skip(tag: &str, hosts: &str) -> Option<Netns> {
        Netns::new(tag, hosts)
            .map_err(|why| println!("skipped: {why}"))
            .ok()
    }

    /// `PROGRAM` to be run inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    /// The prefix `start_binary` takes to start a server inside.
    pub fn prefix(&self) -> [&str; 4] {
        ["ip", "netns", "exec", &self.name]
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        remove(&self.name);
        let _ = std::fs::remove_dir_all(&self.etc);
    }
}
