//! The shipped recipes, run as written, so that one that cannot work
//! fails here: the Kubernetes manifests' container args (with only what
//! Kubernetes and `run-test.sh` fill in), `run-test.sh` against a
//! stand-in `kubectl` whose Job fails, and the README's pdsh recipe,
//! extracted verbatim.
//!
//! The servers run in network namespaces of their own, where the
//! manifests' fixed port is free and the Service's name resolves through
//! the namespace's hosts file. Needs root, `ip` and, for the recipe,
//! pdsh (`.ci/run` installs both); each test says when it skipped.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::netns::Netns;
use common::{final_stat, run_to_end, start_binary, Finished};

const BIN: &str = env!("CARGO_BIN_EXE_echo-reactor");

/// One test here at a time: the manifests' test loads two cores for half
/// a minute, and the recipes' split runs must start their windows
/// together (merge refuses parts that overlap less than 90%), which a
/// starved machine can delay.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    // A test that failed holding it leaves it poisoned, not wrong.
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

fn repo_file(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// The directory of the binary, first on a PATH that is otherwise this
/// process's: the recipes call `echo-reactor` by name.
fn path_with_binary(first: Option<&Path>) -> String {
    let bin_dir = Path::new(BIN).parent().expect("binary directory");
    let mut dirs: Vec<PathBuf> = first.into_iter().map(Path::to_path_buf).collect();
    dirs.push(bin_dir.to_path_buf());
    dirs.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(dirs)
        .expect("joinable PATH")
        .to_string_lossy()
        .into_owned()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// A YAML scalar as the manifests write them: plain or double-quoted.
fn scalar(s: &str) -> String {
    let s = s.trim();
    match s.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
        Some(inner) => {
            assert!(!inner.contains('\\'), "escapes are not read here: {s}");
            inner.to_string()
        }
        None => s.to_string(),
    }
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// The lines of the block under `key:` (one of `lines`, at any depth):
/// those after it that are more indented than the key, or list items at
/// its own indent, as YAML allows for a sequence under a mapping key.
fn block<'a>(lines: &[&'a str], key: &str) -> Vec<&'a str> {
    let at = lines
        .iter()
        .position(|l| l.trim() == format!("{key}:"))
        .unwrap_or_else(|| panic!("no `{key}:` in the manifest"));
    let depth = indent(lines[at]);
    lines[at + 1..]
        .iter()
        .take_while(|l| {
            l.trim().is_empty()
                || indent(l) > depth
                || (indent(l) == depth && l.trim_start().starts_with("- "))
        })
        .copied()
        .collect()
}

/// The items of a sequence of scalars (`- item` lines at one indent).
fn items(block: &[&str]) -> Vec<String> {
    let depth = block.first().map_or(0, |l| indent(l));
    block
        .iter()
        .filter(|l| indent(l) == depth)
        .map(|l| {
            let item = l.trim_start().strip_prefix("- ");
            scalar(item.unwrap_or_else(|| panic!("not a sequence item: {l}")))
        })
        .collect()
}

/// The one container of a manifest: its `args`, and its `env` as name
/// to either a value or the field it refers to (`fieldRef: fieldPath`).
struct Container {
    args: Vec<String>,
    env: Vec<(String, Result<String, String>)>,
}

/// Reads the only container of `yaml` (both manifests have one) by a
/// small, strict extraction: anything shaped otherwise fails the test.
fn container(yaml: &str) -> Container {
    let lines: Vec<&str> = yaml
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect();
    let containers = block(&lines, "containers");
    let depth = containers.first().map_or(0, |l| indent(l));
    let named = containers
        .iter()
        .filter(|l| indent(l) == depth && l.trim_start().starts_with("- "))
        .count();
    assert_eq!(named, 1, "expected one container");
    let args = items(&block(&containers, "args"));
    let mut env = Vec::new();
    if containers.iter().any(|l| l.trim() == "env:") {
        let env_lines = block(&containers, "env");
        let depth = indent(env_lines[0]);
        for (i, l) in env_lines.iter().enumerate() {
            let Some(name) = l.trim_start().strip_prefix("- name:") else {
                continue;
            };
            assert_eq!(indent(l), depth, "env entry: {l}");
            let rest: Vec<&str> = env_lines[i + 1..]
                .iter()
                .take_while(|m| indent(m) > depth)
                .copied()
                .collect();
            let field = |key: &str| {
                rest.iter()
                    .find_map(|m| m.trim().strip_prefix(key).map(scalar))
            };
            let source = match (field("value:"), field("fieldPath:")) {
                (Some(v), None) => Ok(v),
                (None, Some(path)) => Err(path),
                other => panic!("env {name}: neither value nor fieldRef: {other:?}"),
            };
            env.push((scalar(name), source));
        }
    }
    Container { args, env }
}

/// `$(NAME)` replaced by `vars[NAME]`, as Kubernetes expands container
/// args; an unknown name fails the test (Kubernetes would leave it).
fn expand(arg: &str, vars: &HashMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = arg;
    while let Some(at) = rest.find("$(") {
        out.push_str(&rest[..at]);
        let end = rest[at..].find(')').expect("closing parenthesis") + at;
        let name = &rest[at + 2..end];
        out.push_str(
            vars.get(name)
                .unwrap_or_else(|| panic!("$({name}) is not set")),
        );
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

fn spec_number(yaml: &str, key: &str) -> usize {
    yaml.lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key}"))
        .trim()
        .parse()
        .expect("a number")
}

#[test]
fn the_manifests_args_run_against_a_server_by_the_services_name() {
    let _turn = one_at_a_time();
    let Some(ns) = Netns::or_skip("k8s", "127.0.0.1 localhost\n127.0.0.1 echo-reactor\n") else {
        return;
    };
    // The server: server.yaml's args as they stand.
    let serve_args = container(&repo_file("deploy/kubernetes/server.yaml")).args;
    assert_eq!(serve_args[0], "serve");
    let server = start_binary(&serve_args, Some(&ns.prefix()));

    // The generators: load-job.yaml's args, one process per completion
    // index. Kubernetes gives SEGMENT (the index) and the env values;
    // run-test.sh replaces START_AT_PLACEHOLDER with a time ahead, here
    // 3 s: the three start together, as the pods would.
    let job_yaml = repo_file("deploy/kubernetes/load-job.yaml");
    let job = container(&job_yaml);
    let completions = spec_number(&job_yaml, "completions");
    assert_eq!(completions, spec_number(&job_yaml, "parallelism"));
    let start_at = (unix_now() + 3).to_string();
    let children: Vec<_> = (0..completions)
        .map(|index| {
            let mut vars = HashMap::new();
            let mut cmd = ns.command(BIN);
            for (name, source) in &job.env {
                let value = match source {
                    Ok(v) if v == "START_AT_PLACEHOLDER" => start_at.clone(),
                    Ok(v) => v.clone(),
                    Err(path) => {
                        assert!(path.contains("job-completion-index"), "{name}: {path}");
                        index.to_string()
                    }
                };
                cmd.env(name, &value);
                vars.insert(name.clone(), value);
            }
            assert_eq!(vars.get("SEGMENTS"), Some(&completions.to_string()));
            cmd.args(job.args.iter().map(|a| expand(a, &vars)));
            std::thread::spawn(move || run_to_end(cmd, Duration::from_secs(120)))
        })
        .collect();
    let parts: Vec<Finished> = children
        .into_iter()
        .map(|c| c.join().expect("segment thread"))
        .collect();
    for (i, p) in parts.iter().enumerate() {
        assert_eq!(p.code(), 0, "segment {i}: {p:#?}");
        let report: serde_json::Value =
            serde_json::from_str(p.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {p:#?}"));
        assert_eq!(report["host"], "echo-reactor", "{report}");
        assert_eq!(report["target"], "127.0.0.1:7007", "{report}");
    }

    // As run-test.sh does: every pod's log into merge.
    let logs: String = parts.iter().map(|p| p.stdout.as_str()).collect();
    let input = std::env::temp_dir().join(format!("er{}-k8s-logs", std::process::id()));
    std::fs::write(&input, &logs).expect("write logs");
    let mut merge = Command::new(BIN);
    merge.args(["merge", &input.to_string_lossy(), "--json"]);
    let merged = run_to_end(merge, Duration::from_secs(30));
    let _ = std::fs::remove_file(&input);
    assert_eq!(merged.code(), 0, "{merged:#?}");
    let whole: serde_json::Value = serde_json::from_str(&merged.stdout).expect("merged JSON");
    let connections: u64 = job
        .args
        .iter()
        .find_map(|a| a.strip_prefix("--connections="))
        .expect("--connections")
        .parse()
        .expect("a count");
    assert_eq!(whole["connected"], connections, "{whole}");
    assert_eq!(whole["ok"], true, "{whole}");
    let stderr = server.stop();
    assert_eq!(
        final_stat(&stderr, "accepted"),
        Some(connections),
        "{stderr}"
    );
}

/// A stand-in `kubectl` in a directory of its own: applies and rollouts
/// succeed, the Job reports `state` (`Failed`, `Complete`), and its pods'
/// logs are `logs`. Like the real one, `wait --for=condition=complete`
/// on a Job that failed waits until its timeout (here a minute).
fn fake_kubectl(dir: &Path, state: &str, logs: &str) {
    std::fs::create_dir_all(dir).expect("stand-in dir");
    let script = format!(
        r#"#!/bin/sh
case "$1" in
  apply) cat >/dev/null ;;
  get) printf '%s ' "{state}" ;;
  logs) cat "$(dirname "$0")/logs" ;;
  wait) sleep 60; exit 1 ;;
esac
exit 0
"#
    );
    std::fs::write(dir.join("logs"), format!("{logs}\n")).expect("write logs");
    let path = dir.join("kubectl");
    std::fs::write(&path, script).expect("write kubectl");
    let status = Command::new("chmod").arg("+x").arg(&path).status();
    assert!(status.is_ok_and(|s| s.success()));
}

#[test]
fn run_test_stops_at_once_when_the_job_fails_and_shows_the_pods_logs() {
    let _turn = one_at_a_time();
    let dir = std::env::temp_dir().join(format!("er{}-kubectl", std::process::id()));
    let log = "echo-load-0: error: host name 'echo-reactor' resolves to nothing";
    fake_kubectl(&dir, "Failed", log);
    let mut cmd = Command::new("bash");
    cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes/run-test.sh"))
        .env("PATH", path_with_binary(Some(&dir)))
        .env("LEAD", "0");
    let out = run_to_end(cmd, Duration::from_secs(30));
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(out.status.and_then(|s| s.code()), Some(1), "{out:#?}");
    assert!(out.stderr.contains("the Job failed"), "{}", out.stderr);
    assert!(out.stderr.contains(log), "{}", out.stderr);
    assert!(out.elapsed < Duration::from_secs(20), "{out:#?}");
}

/// The fenced `sh` block after `<!-- recipe: NAME -->` in README.md.
fn readme_recipe(readme: &str, name: &str) -> String {
    let marker = format!("<!-- recipe: {name} -->");
    let at = readme
        .find(&marker)
        .unwrap_or_else(|| panic!("README.md has no {marker}"));
    let start = readme[at..].find("```sh\n").expect("a sh block") + at + "```sh\n".len();
    let end = readme[start..].find("\n```").expect("the block's end") + start;
    format!("{}\n", &readme[start..end])
}

/// Runs `script` with sh inside `ns`, `echo-reactor` (and `extra_path`)
/// on its PATH.
fn run_script(ns: &Netns, script: &str, extra_path: Option<&Path>) -> Finished {
    let mut cmd = ns.command("sh");
    cmd.args(["-c", script])
        .env("PATH", path_with_binary(extra_path));
    run_to_end(cmd, Duration::from_secs(60))
}

fn has_pdsh() -> bool {
    Command::new("pdsh").arg("-V").output().is_ok()
}

#[test]
fn the_readme_pdsh_recipe_runs_as_written_on_one_machine() {
    let _turn = one_at_a_time();
    if !has_pdsh() {
        println!("skipped: pdsh is not installed");
        return;
    }
    let Some(ns) = Netns::or_skip("pdsh", "127.0.0.1 localhost\n") else {
        return;
    };
    let readme = repo_file("README.md");
    let here = readme_recipe(&readme, "pdsh here");
    let recipe = readme_recipe(&readme, "pdsh");
    // The local settings name the server; start it there.
    let target = here
        .lines()
        .find_map(|l| l.strip_prefix("target=tcp://"))
        .expect("a target= line");
    let server = start_binary(
        &["serve".to_string(), "--tcp".into(), target.into()],
        Some(&ns.prefix()),
    );
    let out = run_script(&ns, &format!("{here}{recipe}"), None);
    assert_eq!(out.code(), 0, "{out:#?}");
    assert!(out.stdout.contains("result     ok"), "{}", out.stdout);
    let stderr = server.stop();
    assert_eq!(final_stat(&stderr, "accepted"), Some(30), "{stderr}");
}

#[test]
fn the_readme_pdsh_recipe_reaches_hosts_through_on() {
    let _turn = one_at_a_time();
    // The real settings, with an ssh that runs the command here, and the
    // target and test made local and small: the recipe's quoting of
    // `$on` and what it carries is what this checks.
    if !has_pdsh() {
        println!("skipped: pdsh is not installed");
        return;
    }
    let Some(ns) = Netns::or_skip("ssh", "127.0.0.1 localhost\n") else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("er{}-ssh", std::process::id()));
    std::fs::create_dir_all(&dir).expect("stand-in dir");
    // sshd hands the words it got, joined, to the user's shell.
    std::fs::write(dir.join("ssh"), "#!/bin/sh\nshift\nexec sh -c \"$*\"\n").expect("ssh");
    assert!(Command::new("chmod")
        .arg("+x")
        .arg(dir.join("ssh"))
        .status()
        .is_ok_and(|s| s.success()));
    let readme = repo_file("README.md");
    let settings = readme_recipe(&readme, "pdsh settings");
    assert!(settings.contains("on='ssh %h'"), "{settings}");
    let recipe = readme_recipe(&readme, "pdsh");
    let server = start_binary(
        &["serve", "--tcp", "127.0.0.1:7007"].map(String::from),
        Some(&ns.prefix()),
    );
    let script = format!("{settings}target=tcp://127.0.0.1:7007\ntest='-c 30 -d 1'\n{recipe}");
    let out = run_script(&ns, &script, Some(&dir));
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(out.code(), 0, "{out:#?}");
    assert!(out.stdout.contains("result     ok"), "{}", out.stdout);
    let stderr = server.stop();
    assert_eq!(final_stat(&stderr, "accepted"), Some(30), "{stderr}");
}
