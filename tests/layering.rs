//! The source tree's layering: each top-level module of `src/` may use only
//! the modules below it in `LAYERS`, so the folders read as the data flow
//! and no two of them form an import circle. The codecs in `proto/` depend
//! on nothing above them but `config` (for limits), and its sub-codecs on
//! each other only one way.
//!
//! This reads `crate::` paths off the code lines of every file (comments
//! are skipped): a use of a higher layer fails with the file and line.
//!
//! The shard core (`src/shard/`) does no I/O of its own: no system call,
//! no task, no file, no clock but its own (`Shard::now_ms` and
//! `Shard::unix_ms`, which the simulation test sets). Its drivers in
//! `src/io/` carry out what it asks (`shard::io::ShardIo`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Lowest first. A module may use modules of its own rank or lower ranks
/// only where the rank holds one module; within the base rank, `config`
/// alone may use the others.
const LAYERS: &[&[&str]] = &[
    &["latency", "log", "signal", "lifecycle", "test_rng"],
    &["config"],
    &["proto"],
    &["delivery"],
    &["conn"],
    &["order"],
    &["metrics"],
    &["route"],
    &["shard"],
    &["io"],
    &["api"],
    &["server"],
    &["sim"],
];

/// Inside `proto/`, lowest first.
const PROTO_LAYERS: &[&str] = &["goim", "nats", "http", "ws", "jwt", "auth_url"];

fn rank(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code lines of `text` (1-based numbers), comments cut off.
fn code_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines().enumerate().filter_map(|(index, line)| {
        let code = line.trim_start();
        (!code.starts_with("//")).then(|| (index + 1, code.split(" //").next().unwrap_or(code)))
    })
}

/// The `crate::a::b` paths used on code lines of `text`: (line, a, b).
fn crate_paths(text: &str) -> Vec<(usize, String, String)> {
    let mut found = Vec::new();
    for (line, code) in code_lines(text) {
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            let name = |s: &str| s.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect::<String>();
            let first = name(after);
            let second = after[first.len()..].strip_prefix("::").map(name).unwrap_or_default();
            // `$crate::` in a macro and `crate::log_warn!` are not module uses.
            let is_macro = after[first.len()..].starts_with('!');
            if !first.is_empty() && !is_macro && !rest[..at].ends_with('$') {
                found.push((line, first.clone(), second));
            }
            rest = &after[first.len()..];
        }
    }
    found
}

#[test]
fn every_module_uses_only_the_layers_below_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    assert!(files.len() > 50, "found only {} files under {}", files.len(), root.display());
    let mut wrong = Vec::new();
    let mut edges: BTreeMap<(String, String), usize> = BTreeMap::new();
    for file in &files {
        let relative = file.strip_prefix(&root).expect("under src/");
        let parts: Vec<String> =
            relative.iter().map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string()).collect();
        let module = parts[0].clone();
        if module == "main" || module == "lib" {
            continue;
        }
        let own = rank(&module).unwrap_or_else(|| panic!("{} is in no layer: add it to LAYERS", relative.display()));
        let text = std::fs::read_to_string(file).expect("a readable source file");
        for (line, used, sub) in crate_paths(&text) {
            let Some(theirs) = rank(&used) else {
                wrong.push(format!("{}:{line}: crate::{used} is in no layer", relative.display()));
                continue;
            };
            *edges.entry((module.clone(), used.clone())).or_default() += 1;
            let base_peer = own == 0 && theirs == 0 && used != module;
            if theirs > own || base_peer {
                wrong.push(format!("{}:{line}: {module} uses crate::{used}, a layer above it", relative.display()));
            }
            if module == "proto" && used == "proto" && parts.len() > 1 {
                let mine = PROTO_LAYERS.iter().position(|p| *p == parts[1]);
                let other = PROTO_LAYERS.iter().position(|p| *p == sub);
                if let (Some(mine), Some(other)) = (mine, other) {
                    if other > mine {
                        wrong.push(format!("{}:{line}: proto::{} uses proto::{sub}", relative.display(), parts[1]));
                    }
                }
            }
        }
    }
    assert!(edges.contains_key(&("shard".into(), "route".into())), "the scan found no shard -> route use: {edges:?}");
    assert!(wrong.is_empty(), "layering broken:\n{}", wrong.join("\n"));
}

/// What the shard core may not name on a code line, and why.
const CORE_FORBIDDEN: &[(&str, &str)] = &[
    ("libc::", "a system call"),
    ("glommio::", "a task, timer or socket of the executor"),
    ("unsafe", "unsafe code (the drivers hold it)"),
    ("futures_lite::", "an await point of a driver"),
    ("std::fs", "a file"),
    ("std::net::Tcp", "a socket"),
    ("SystemTime::now", "a clock other than the shard's own"),
    ("Instant::now", "a clock other than the shard's own"),
];

/// Where the shard's own clock is read (the one place each is allowed).
const CORE_CLOCK: &[(&str, &str)] = &[("mod.rs", "SystemTime::now"), ("mod.rs", "Instant::now")];

#[test]
fn the_shard_core_does_no_io_of_its_own() {
    let core = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/shard");
    let mut files = Vec::new();
    rust_files(&core, &mut files);
    assert!(files.len() > 15, "found only {} files under {}", files.len(), core.display());
    let mut wrong = Vec::new();
    for file in &files {
        let name = file.strip_prefix(&core).expect("under src/shard/").to_string_lossy().to_string();
        let text = std::fs::read_to_string(file).expect("a readable source file");
        for (line, code) in code_lines(&text) {
            for (what, why) in CORE_FORBIDDEN {
                let allowed = CORE_CLOCK.iter().any(|(file, clock)| *file == name && clock == what);
                if code.contains(what) && !allowed {
                    wrong.push(format!("src/shard/{name}:{line}: `{what}`: {why}"));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "the shard core does I/O of its own:\n{}", wrong.join("\n"));
}

#[test]
fn the_scan_sees_uses_and_skips_comments_and_macros() {
    let text = "use crate::shard::Shard;\n// crate::server::x\ncrate::log_warn!(\"x\");\nlet a = crate::route::placement::owner_of(&k, 2); // crate::api\n";
    let found: Vec<(usize, String, String)> = crate_paths(text);
    assert_eq!(found, vec![(1, "shard".into(), "Shard".into()), (4, "route".into(), "placement".into())]);
}
