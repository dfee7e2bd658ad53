//! ARCHITECTURE.md stays true to the code: every type, function, constant,
//! flag and file it names in backticks must exist, and the server's
//! components must not import each other in a cycle.
//!
//! The map is read by people deciding where a change goes; a name that
//! no longer exists sends them looking for something that is not there.
//! The checks are textual on purpose (no parser of Rust): a definition is
//! `struct Name`, `enum Name`, `fn name` and the like, or an enum variant
//! at the start of a line.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Names the map uses that belong to the kernel, the standard library or
/// other crates, or that are words of the command line and the logs
/// rather than of the code. Each is here for a reason that does not
/// change with our code.
const OUTSIDE: &[&str] = &[
    // std, mio, slab, socket2, clap
    "Instant",
    "Poll",
    "Token",
    "WouldBlock",
    "Interrupted",
    "WriteZero",
    "ToSocketAddrs",
    "Slab",
    "TcpStream",
    "Read",
    "Write",
    "usize",
    "io",
    "mio",
    "READABLE",
    "WRITABLE",
    "Cli",
    "parse",
    "Ok",
    "MAX",
    // the kernel's names
    "EMFILE",
    "ENFILE",
    "ETIMEDOUT",
    "FIONREAD",
    "SIOCOUTQ",
    "IPV6_V6ONLY",
    "SO_REUSEADDR",
    "SO_REUSEPORT",
    "SO_LINGER",
    "SO_RXQ_OVFL",
    "TCP_NODELAY",
    "TCP_INFO",
    "TCP_USER_TIMEOUT",
    "O_ASYNC",
    "epoll_ctl",
    "epoll_wait",
    "recvmmsg",
    "sendmmsg",
    "sigwaitinfo",
    "timerfd",
    "poll",
    "accept",
    "tcpi_bytes_acked",
    "MSG_PEEK",
    // crates and tools
    "env_logger",
    "io-uring",
    "perf",
    "cc",
    "pdsh",
    "kubectl",
    "cargo",
    "ppp",
    // rustls's
    "read_tls",
    "write_tls",
    // log levels, cargo profiles and features
    "error",
    "warn",
    "info",
    "debug",
    "trace",
    "release",
    "bench",
    "profiling",
    "cli",
    // subcommands and words of the stats line and the report
    "pub",
    "crate",
    "non_exhaustive",
    "serve",
    "load",
    "client",
    "merge",
    "compare",
    "forced",
    "rejected",
    "reset",
    "cut",
    "host",
    "refused-size",
    "high",
    "low",
    "main",
    "udp",
    "listener",
    "localhost",
];

struct Tree {
    root: PathBuf,
    /// Every Rust source of the crate, its tests, examples and benches.
    sources: Vec<(PathBuf, String)>,
}

impl Tree {
    fn load() -> Tree {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let mut sources = Vec::new();
        for dir in ["src", "tests", "examples", "benches"] {
            collect(&root.join(dir), &mut sources);
        }
        Tree { root, sources }
    }

    /// True when some source defines `name` as a type, trait, module,
    /// function, constant, static, field or enum variant.
    fn defines(&self, name: &str) -> bool {
        let kinds = [
            "struct", "enum", "trait", "type", "mod", "fn", "const", "static",
        ];
        self.sources.iter().any(|(_, text)| {
            text.lines().any(|line| {
                let t = line.trim_start();
                let t = ["pub(crate) ", "pub(super) ", "pub "]
                    .iter()
                    .find_map(|p| t.strip_prefix(p))
                    .unwrap_or(t);
                kinds.iter().any(|k| {
                    t.strip_prefix(k)
                        .and_then(|r| r.strip_prefix(' '))
                        .is_some_and(|r| starts_with_word(r, name))
                }) || (starts_with_word(t, name) && {
                    // A variant (`Name,` `Name(..)` `Name {`) or a field
                    // (`name: Type`).
                    let rest = &t[name.len()..];
                    rest.is_empty()
                        || rest.starts_with(',')
                        || rest.starts_with('(')
                        || rest.starts_with(" {")
                        || rest.starts_with(": ")
                })
            })
        })
    }

    /// True when `rel` names a file or folder of the repository, or a file
    /// of that name anywhere in it (the map often gives only the name).
    fn has_path(&self, rel: &str) -> bool {
        let rel = rel.trim_end_matches('/');
        if self.root.join(rel).exists() {
            return true;
        }
        // A name, or a path inside a folder the paragraph is about.
        find_file(&self.root, rel)
    }

    /// A command-line flag of the binary: clap derives `--max-pending` from
    /// a field `max_pending` in `src/cli.rs`.
    fn has_flag(&self, flag: &str) -> bool {
        let cli = fs::read_to_string(self.root.join("src/cli.rs")).unwrap_or_default();
        let field = flag.trim_start_matches('-').replace('-', "_");
        let long = flag.trim_start_matches('-');
        cli.contains(&format!("pub {field}:"))
            || cli.contains(&format!("\"{flag}\""))
            || cli.contains(&format!("long = \"{long}\""))
    }
}

fn starts_with_word(text: &str, word: &str) -> bool {
    text.starts_with(word)
        && !text[word.len()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_alphanumeric() || c == '_')
}

fn collect(dir: &Path, out: &mut Vec<(PathBuf, String)>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            if let Ok(text) = fs::read_to_string(&path) {
                out.push((path, text));
            }
        }
    }
}

/// True when `tail` (a name, or a relative path) ends some path under `dir`.
fn find_file(dir: &Path, tail: &str) -> bool {
    let Ok(entries) = fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        let path = e.path();
        let skip = path
            .file_name()
            .is_some_and(|n| n == "target" || n == ".git");
        !skip && (path.ends_with(tail) || (path.is_dir() && find_file(&path, tail)))
    })
}

/// The backticked spans of `markdown` outside fenced blocks.
fn backticked(markdown: &str) -> Vec<String> {
    let mut spans = Vec::new();
    let mut fenced = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        let mut parts = line.split('`');
        parts.next();
        while let (Some(inside), Some(_)) = (parts.next(), parts.next()) {
            spans.push(inside.to_string());
        }
    }
    spans
}

/// What is wrong with one backticked name, if anything.
fn check(tree: &Tree, examples: &BTreeSet<String>, span: &str) -> Option<String> {
    let span = span.trim();
    if span.starts_with("--") {
        let flag = span.split_whitespace().next().unwrap_or(span);
        return (!tree.has_flag(flag)).then(|| format!("flag {flag}"));
    }
    let foreign = ["io::", "std::", "mio::", "usize"];
    if span.starts_with('/')
        || span.starts_with(|c: char| c.is_ascii_digit())
        || foreign.iter().any(|f| span.starts_with(f))
        || span.contains(' ') && !span.contains("::")
    {
        // A system path, a value (`500ms`), the standard library's, a
        // command line or a log phrase: not ours to check.
        return None;
    }
    let is_path = span.contains('/')
        || [".rs", ".md", ".c", ".sh", ".yaml", ".svg", ".py"]
            .iter()
            .any(|ext| span.ends_with(ext))
        || span == "Dockerfile";
    if is_path {
        return (!tree.has_path(span)).then(|| format!("file {span}"));
    }
    // Code: every identifier in it must exist (`Server::run`,
    // `Progress::Close(reason)`, `Slab<Connection>`, `next_deadline()`);
    // lowercase single words only when they look like ours.
    let idents: Vec<&str> = span
        .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '-'))
        .filter(|w| !w.is_empty() && !w.chars().all(|c| c.is_ascii_digit()))
        .collect();
    let missing: Vec<&str> = idents
        .iter()
        .copied()
        .filter(|w| {
            // A hyphenated word is a crate or a phrase, not Rust.
            let known = OUTSIDE.contains(w)
                || examples.contains(*w)
                || w.contains('-')
                || tree.defines(w)
                || (idents.len() > 1 && is_argument(span, w));
            !known
        })
        .collect();
    (!missing.is_empty()).then(|| format!("{} in `{span}`", missing.join(", ")))
}

/// An argument or binding inside a span (`reason` in `Close(reason)`,
/// `linger` in `Cut { linger }`, `i` in `UDP_BASE + i`), not a name.
fn is_argument(span: &str, word: &str) -> bool {
    word.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && (span.contains(&format!("({word})"))
            || span.contains(&format!("{{ {word} }}"))
            || span.contains(&format!("+ {word}"))
            || span.contains(&format!("- {word}")))
}

#[test]
fn every_name_the_map_gives_in_backticks_exists() {
    let tree = Tree::load();
    let map = fs::read_to_string(tree.root.join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    // The examples and benches are named by their file stems.
    let mut examples = BTreeSet::new();
    for dir in ["examples", "benches"] {
        if let Ok(entries) = fs::read_dir(tree.root.join(dir)) {
            for e in entries.flatten() {
                if let Some(stem) = e.path().file_stem() {
                    examples.insert(stem.to_string_lossy().into_owned());
                }
            }
        }
    }
    let mut problems: BTreeMap<String, usize> = BTreeMap::new();
    let spans = backticked(&map);
    assert!(
        spans.len() > 100,
        "the map names too little: {}",
        spans.len()
    );
    for span in &spans {
        if let Some(p) = check(&tree, &examples, span) {
            *problems.entry(p).or_default() += 1;
        }
    }
    assert!(
        problems.is_empty(),
        "ARCHITECTURE.md names what the code no longer has:\n{}",
        problems
            .keys()
            .map(|p| format!("  {p}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn the_check_catches_a_name_that_does_not_exist() {
    let tree = Tree::load();
    let none = BTreeSet::new();
    assert!(check(&tree, &none, "ConnTable::close").is_none());
    assert!(check(&tree, &none, "src/server/conn.rs").is_none());
    assert!(check(&tree, &none, "--write-timeout").is_none());
    assert!(check(&tree, &none, "ConnTable::vanished_method").is_some());
    assert!(check(&tree, &none, "NoSuchType").is_some());
    assert!(check(&tree, &none, "src/server/gone.rs").is_some());
    assert!(check(&tree, &none, "--no-such-flag").is_some());
}

/// The `use super::...` and `use crate::server::...` edges among the
/// server's own modules.
fn server_imports(tree: &Tree) -> BTreeMap<String, BTreeSet<String>> {
    let server = tree.root.join("src/server");
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (path, text) in &tree.sources {
        let Ok(rel) = path.strip_prefix(&server) else {
            continue;
        };
        // A module is its top folder or file under src/server.
        let module = module_of(rel);
        if module == "mod" {
            continue; // the parent: it owns and calls every component
        }
        let code = text.split("#[cfg(test)]").next().unwrap_or(text);
        for line in code.lines().map(str::trim_start) {
            if !line.starts_with("use ") {
                continue;
            }
            let is_nested = rel.components().count() > 1;
            let target = if let Some(rest) = line.strip_prefix("use crate::server::") {
                first_word(rest)
            } else if let Some(rest) = line.strip_prefix("use super::super::") {
                first_word(rest)
            } else if let Some(rest) = line.strip_prefix("use super::") {
                if is_nested {
                    continue; // a sibling inside the same component folder
                }
                first_word(rest)
            } else {
                continue;
            };
            // `use super::{a, b}`: each one.
            let names: Vec<String> = if target.is_empty() {
                let inner = line
                    .split('{')
                    .nth(1)
                    .and_then(|r| r.split('}').next())
                    .unwrap_or("");
                inner
                    .split(',')
                    .map(|n| first_word(n.trim()))
                    .filter(|n| !n.is_empty())
                    .collect()
            } else {
                vec![target]
            };
            for n in names {
                let is_module = server.join(format!("{n}.rs")).exists() || server.join(&n).is_dir();
                if n != module && is_module {
                    edges.entry(module.clone()).or_default().insert(n);
                }
            }
        }
    }
    edges
}

fn module_of(rel: &Path) -> String {
    let first = rel
        .components()
        .next()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .unwrap_or_default();
    first.trim_end_matches(".rs").to_string()
}

fn first_word(s: &str) -> String {
    s.split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .next()
        .unwrap_or("")
        .to_string()
}

#[test]
fn the_servers_components_import_each_other_without_a_cycle() {
    let tree = Tree::load();
    let edges = server_imports(&tree);
    assert!(
        edges.get("table").is_some_and(|t| t.contains("conn")),
        "the import scan found too little: {edges:?}"
    );
    // Depth-first search for a path back to where it started.
    fn cycle_from(
        start: &str,
        at: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        for next in edges.get(at).into_iter().flatten() {
            if next == start {
                let mut c = path.clone();
                c.push(next.clone());
                return Some(c);
            }
            if !path.contains(next) {
                path.push(next.clone());
                if let Some(c) = cycle_from(start, next, edges, path) {
                    return Some(c);
                }
                path.pop();
            }
        }
        None
    }
    for start in edges.keys() {
        let mut path = vec![start.clone()];
        if let Some(c) = cycle_from(start, start, &edges, &mut path) {
            panic!("import cycle among server modules: {}", c.join(" -> "));
        }
    }
}
