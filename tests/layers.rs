//! The layers of the crate, read from its source: every `crate::` path in
//! `src/**.rs` (code and tests alike) must name a module of the same or a
//! lower layer, and the files of one folder must not name each other in a
//! circle. The order, lowest first:
//!
//! 1. leaves: `units`, `escape` (text escaping), `output`, `outfile`,
//!    `model` (the snapshot and the facts about it), `serve` (the HTTP
//!    exporter, sealed behind one closure)
//! 2. `procname`, then `filter`, then `killplan`: values over the model
//! 3. `collect`: reads the kernel and /proc into a snapshot, then
//!    `events`: the kernel's TCP tracepoints, read and attributed
//! 4. `diag`: the rules, pure functions over a snapshot
//! 5. `report`: renders what `diag` found
//! 6. `cli`: the flags
//! 7. `app`: the commands; nothing but `main` uses it
//!
//! So collectors never import rules or renderers, rules never import
//! renderers or collectors, and nothing imports `app`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each top-level module and its layer (a module may name only modules of
/// a layer no higher than its own, and never one of the same layer but
/// itself: each module has its own rank).
const LAYERS: &[&str] = &[
    "units", "escape", "output", "outfile", "model", "serve", "testutil", "procname", "filter",
    "killplan", "collect", "events", "diag", "report", "cli", "app",
];

fn rank(module: &str) -> Option<usize> {
    LAYERS.iter().position(|m| *m == module)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read src") {
        let p = e.expect("dir entry").path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The text with `//` comments removed (doc links are not imports).
fn code(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) if !l[..i].contains('"') => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn ident_after(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The modules a file names: `crate::x`, and `use crate::{x, y}`.
fn named(text: &str, prefix: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find(prefix) {
        let before = rest[..i].chars().last();
        rest = &rest[i + prefix.len()..];
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for part in group[..end].split(',') {
                let id = ident_after(part.trim());
                if !id.is_empty() {
                    out.insert(id.to_string());
                }
            }
        } else {
            let id = ident_after(rest);
            if !id.is_empty() {
                out.insert(id.to_string());
            }
        }
    }
    out
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The top-level module a file under `src/` belongs to.
fn top_module(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).expect("under src");
    let first = rel.components().next().expect("a component");
    let name = first.as_os_str().to_string_lossy();
    name.trim_end_matches(".rs").to_string()
}

#[test]
fn no_module_names_a_higher_layer() {
    let src = src();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut bad = Vec::new();
    for f in &files {
        let from = top_module(&src, f);
        if from == "main" || from == "lib" {
            continue;
        }
        let Some(own) = rank(&from) else {
            bad.push(format!(
                "{}: module `{from}` has no layer here",
                f.display()
            ));
            continue;
        };
        let text = code(&std::fs::read_to_string(f).expect("read"));
        for to in named(&text, "crate::") {
            if to == from {
                continue;
            }
            match rank(&to) {
                Some(r) if r < own => {}
                Some(_) => bad.push(format!(
                    "{}: `{from}` names `crate::{to}`, which is not below it",
                    f.display()
                )),
                None => bad.push(format!("{}: `crate::{to}` has no layer here", f.display())),
            }
        }
    }
    assert!(
        bad.is_empty(),
        "imports against the layers:\n{}",
        bad.join("\n")
    );
}

/// Only `report` lays out text: tables (`comfy_table`) and wrapped
/// paragraphs (`textwrap`) are built nowhere else, so `diag` stays data.
#[test]
fn only_report_lays_out_tables_and_text() {
    let src = src();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut bad = Vec::new();
    for f in &files {
        if top_module(&src, f) == "report" {
            continue;
        }
        let text = code(&std::fs::read_to_string(f).expect("read"));
        for lib in ["comfy_table", "textwrap"] {
            if text.contains(&format!("{lib}::")) {
                bad.push(format!("{}: uses `{lib}`", f.display()));
            }
        }
    }
    assert!(bad.is_empty(), "layout outside report:\n{}", bad.join("\n"));
}

/// Edges between the files of one folder: `super::x` from a child file, or
/// `crate::folder::x` from anywhere in the folder (`mod.rs` aside: it
/// declares the folder's files).
#[test]
fn no_files_of_one_folder_name_each_other_in_a_circle() {
    let src = src();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut dirs: BTreeMap<PathBuf, Vec<PathBuf>> = BTreeMap::new();
    for f in files {
        if f.file_name().is_some_and(|n| n == "mod.rs") {
            continue;
        }
        dirs.entry(f.parent().expect("parent").to_path_buf())
            .or_default()
            .push(f);
    }
    let mut circles = Vec::new();
    for (dir, files) in dirs {
        let stem = |p: &Path| p.file_stem().expect("stem").to_string_lossy().to_string();
        let names: BTreeSet<String> = files.iter().map(|p| stem(p)).collect();
        let rel = dir.strip_prefix(&src).expect("under src");
        let crate_path = format!(
            "crate::{}::",
            rel.components()
                .map(|c| c.as_os_str().to_string_lossy().to_string())
                .collect::<Vec<_>>()
                .join("::")
        );
        let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for f in &files {
            let text = code(&std::fs::read_to_string(f).expect("read"));
            let mut to = named(&text, "super::");
            if !rel.as_os_str().is_empty() {
                to.extend(named(&text, &crate_path));
            }
            let from = stem(f);
            edges.insert(
                from.clone(),
                to.into_iter()
                    .filter(|t| names.contains(t) && *t != from)
                    .collect(),
            );
        }
        // A circle: a file that reaches itself.
        for start in &names {
            let mut seen = BTreeSet::new();
            let mut stack: Vec<&String> = edges[start].iter().collect();
            while let Some(n) = stack.pop() {
                if n == start {
                    circles.push(format!("{}: {start} reaches itself", dir.display()));
                    break;
                }
                if seen.insert(n.clone()) {
                    stack.extend(edges[n].iter());
                }
            }
        }
    }
    assert!(
        circles.is_empty(),
        "import circles:\n{}",
        circles.join("\n")
    );
}

/// The test reads what it claims to: an upward import and a circle are
/// both seen.
#[test]
fn the_reader_sees_imports() {
    let text = code(
        "use crate::{diag::x, model};\nlet _ = crate::report::escape::escaped(s); // crate::app\n",
    );
    let got: Vec<_> = named(&text, "crate::").into_iter().collect();
    assert_eq!(got, ["diag", "model", "report"]);
    assert_eq!(
        named("use super::{close_wait::held, Ctx};", "super::")
            .into_iter()
            .collect::<Vec<_>>(),
        ["Ctx", "close_wait"]
    );
}
