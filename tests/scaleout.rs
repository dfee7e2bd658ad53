//! "Several machines" on one: Linux network namespaces are separate network
//! stacks. One namespace holds the server, three hold generators, and a
//! fifth holds the bridge that joins them, so the host's own stack gets no
//! new address. The test runs a split load test across them and checks that
//! the merged report adds up, against the parts and the server's counters.
//!
//! Needs root (to create namespaces) and `ip` from iproute2; without them
//! it says why and passes without running. Every namespace it makes is
//! removed on the way out, also when an assertion fails.

mod common;

use std::process::{Command, Output, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use common::netns::{ip, ip_in, is_root};
use common::{final_stat, start_binary, IO_TIMEOUT};

/// Addresses from 198.18.0.0/15, the range set aside for network
/// benchmarks (RFC 2544): they exist only inside the test's namespaces.
const SERVER_IP: &str = "198.18.0.1";
const GENERATORS: usize = 3;

fn generator_ip(i: usize) -> String {
    format!("198.18.0.{}", 11 + i)
}

/// The namespaces of one test run; dropping it removes them all.
struct Lab {
    prefix: String,
}

impl Lab {
    fn bridge(&self) -> String {
        format!("{}-br", self.prefix)
    }
    fn server(&self) -> String {
        format!("{}-srv", self.prefix)
    }
    fn generator(&self, i: usize) -> String {
        format!("{}-g{i}", self.prefix)
    }

    /// Builds the namespaces, or says why it cannot (`Err`).
    fn build() -> Result<Lab, String> {
        if !is_root() {
            return Err("not root: cannot create network namespaces".into());
        }
        let lab = Lab {
            prefix: format!("er{}", std::process::id()),
        };
        // From here on, Drop cleans up whatever was made.
        let br = lab.bridge();
        ip(&["netns", "add", &br])?;
        ip_in(&br, &["link", "add", "br0", "type", "bridge"])?;
        ip_in(&br, &["link", "set", "br0", "up"])?;
        let hosts: Vec<(String, String)> = std::iter::once((lab.server(), SERVER_IP.to_string()))
            .chain((0..GENERATORS).map(|i| (lab.generator(i), generator_ip(i))))
            .collect();
        for (n, (ns, addr)) in hosts.iter().enumerate() {
            ip(&["netns", "add", ns])?;
            // The veth pair is made inside the bridge namespace, then one
            // end moves to the host namespace: nothing touches the root stack.
            let (inner, outer) = (format!("h{n}"), format!("p{n}"));
            ip_in(
                &br,
                &[
                    "link", "add", &outer, "type", "veth", "peer", "name", &inner,
                ],
            )?;
            ip_in(&br, &["link", "set", &inner, "netns", ns])?;
            ip_in(&br, &["link", "set", &outer, "master", "br0", "up"])?;
            ip_in(ns, &["addr", "add", &format!("{addr}/24"), "dev", &inner])?;
            ip_in(ns, &["link", "set", &inner, "up"])?;
            ip_in(ns, &["link", "set", "lo", "up"])?;
        }
        Ok(lab)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Killing what still runs inside first, so the namespaces can go.
        let mut names = vec![self.server(), self.bridge()];
        names.extend((0..GENERATORS).map(|i| self.generator(i)));
        for ns in &names {
            common::netns::remove(ns);
        }
    }
}

fn has_pdsh() -> bool {
    Command::new("pdsh")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Runs the three segments, one per generator namespace: through pdsh's
/// `exec` module when installed (as an operator would on real hosts), or
/// directly. Returns each segment's JSON report, in segment order.
fn run_segments(lab: &Lab, load_args: &[String]) -> Vec<String> {
    let bin = env!("CARGO_BIN_EXE_echo-reactor");
    if has_pdsh() {
        println!("launching the segments through pdsh -R exec");
        let hosts = format!("{}-g[0-{}]", lab.prefix, GENERATORS - 1);
        // %h is the host name, here the namespace; each segment's index
        // comes from its host name's last digit.
        let script = format!(
            "i=$(echo %h | sed 's/.*-g//'); exec ip netns exec %h {bin} {} --segment $i/{GENERATORS}",
            load_args.join(" ")
        );
        let out = Command::new("pdsh")
            .args(["-R", "exec", "-f", "16", "-w", &hosts, "sh", "-c", &script])
            .stdin(Stdio::null())
            .output()
            .expect("run pdsh");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        // pdsh prefixes each line with "host: ".
        let mut parts = vec![String::new(); GENERATORS];
        for line in text.lines() {
            let Some((host, json)) = line.split_once(": ") else {
                continue;
            };
            let i: usize = host
                .rsplit("-g")
                .next()
                .and_then(|d| d.parse().ok())
                .unwrap_or(99);
            if i < GENERATORS && json.trim_start().starts_with('{') {
                parts[i] = json.to_string();
            }
        }
        assert!(
            parts.iter().all(|p| !p.is_empty()),
            "pdsh gave no report for some segment; stdout:\n{text}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        parts
    } else {
        println!("pdsh not installed: starting the segments directly");
        let children: Vec<_> = (0..GENERATORS)
            .map(|i| {
                let segment = format!("{i}/{GENERATORS}");
                Command::new("ip")
                    .args(["netns", "exec", &lab.generator(i), bin])
                    .args(load_args)
                    .args(["--segment", &segment])
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("spawn a segment")
            })
            .collect();
        children
            .into_iter()
            .map(|c| {
                let out: Output = c.wait_with_output().expect("segment ends");
                String::from_utf8_lossy(&out.stdout).trim().to_string()
            })
            .collect()
    }
}

fn field<'a>(v: &'a serde_json::Value, path: &[&str]) -> &'a serde_json::Value {
    path.iter().fold(v, |v, k| &v[*k])
}

fn count(v: &serde_json::Value, path: &[&str]) -> u64 {
    field(v, path)
        .as_u64()
        .unwrap_or_else(|| panic!("{} is not a count in {v}", path.join(".")))
}

#[test]
fn a_test_split_over_three_namespaces_merges_to_the_sum_of_its_parts() {
    let lab = match Lab::build() {
        Ok(lab) => lab,
        Err(why) => {
            println!("skipped: {why}");
            return;
        }
    };
    let server_ns = lab.server();
    let server = start_binary(
        &["serve", "--tcp", &format!("{SERVER_IP}:0")].map(String::from),
        Some(&["ip", "netns", "exec", &server_ns]),
    );
    let target = server.tcp_addr();

    let start_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64()
        + 1.0;
    let load_args: Vec<String> = [
        "load",
        &format!("tcp://{target}"),
        "--connections",
        "30",
        "--duration",
        "1",
        "--start-at",
        &format!("{start_at:.3}"),
        "--json",
    ]
    .map(String::from)
    .to_vec();
    let parts = run_segments(&lab, &load_args);

    let dir = std::env::temp_dir().join(format!("{}-reports", lab.prefix));
    std::fs::create_dir_all(&dir).expect("report dir");
    let files: Vec<String> = parts
        .iter()
        .enumerate()
        .map(|(i, json)| {
            let path = dir.join(format!("segment-{i}.json"));
            std::fs::write(&path, json).expect("write a part");
            path.display().to_string()
        })
        .collect();
    let mut merge_args = vec!["merge"];
    merge_args.extend(files.iter().map(String::as_str));
    merge_args.push("--json");
    let merged = common::run_binary(&merge_args, IO_TIMEOUT);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(merged.code(), 0, "merge failed: {merged:#?}");

    let parts: Vec<serde_json::Value> = parts
        .iter()
        .map(|p| serde_json::from_str(p).unwrap_or_else(|e| panic!("{e}: {p}")))
        .collect();
    let whole: serde_json::Value = serde_json::from_str(&merged.stdout).expect("merged JSON");
    for p in &parts {
        assert_eq!(p["ok"], true, "a segment failed: {p}");
    }
    assert_eq!(whole["ok"], true);

    // Counts: the merged report is the sum of its parts.
    for path in [
        &["messages"][..],
        &["bytes"],
        &["connected"],
        &["errors", "mismatch"],
    ] {
        let sum: u64 = parts.iter().map(|p| count(p, path)).sum();
        assert_eq!(count(&whole, path), sum, "{}", path.join("."));
    }
    assert_eq!(count(&whole, &["connections"]), 30);
    let per_segment: Vec<u64> = parts.iter().map(|p| count(p, &["connections"])).collect();
    assert_eq!(per_segment, [10, 10, 10]);

    // The server saw exactly the merged test's connections, and sent at
    // least the bytes of its window (more: the ramp's and drain's too).
    let stderr = server.stop();
    assert_eq!(final_stat(&stderr, "accepted"), Some(30), "{stderr}");
    let server_out = final_stat(&stderr, "out").expect("bytes out");
    assert!(server_out >= count(&whole, &["bytes"]), "{stderr}");

    // Percentiles: those of the union of the three histograms.
    let mut union = echo_reactor::load::report::new_histogram();
    for p in &parts {
        let h = echo_reactor::load::hdr_v2::decode(
            p["latency_us"]["histogram"]
                .as_str()
                .expect("histogram text"),
        )
        .expect("decodes");
        union.add(&h).expect("same bounds");
    }
    for (key, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99)] {
        assert_eq!(
            count(&whole, &["latency_us", key]),
            union.value_at_quantile(q),
            "{key}"
        );
    }

    // The windows started together: within a few milliseconds.
    let starts: Vec<f64> = parts
        .iter()
        .map(|p| p["window"]["start"].as_f64().expect("window start"))
        .collect();
    let skew = starts.iter().cloned().fold(f64::MIN, f64::max)
        - starts.iter().cloned().fold(f64::MAX, f64::min);
    println!("segment start skew: {:.3} ms", skew * 1000.0);
    assert!(skew < 0.050, "segments started {skew:.3} s apart");
    println!(
        "merged: {} connections, {} messages, {} bytes, p50 {} us, p90 {} us, p99 {} us, max {} us, {} msgs/s",
        count(&whole, &["connected"]),
        count(&whole, &["messages"]),
        count(&whole, &["bytes"]),
        count(&whole, &["latency_us", "p50"]),
        count(&whole, &["latency_us", "p90"]),
        count(&whole, &["latency_us", "p99"]),
        count(&whole, &["latency_us", "max"]),
        whole["msgs_per_sec"]
    );
}
