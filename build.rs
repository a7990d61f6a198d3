//! Records the git revision for `cwdiag --version` when built from a git
//! checkout; builds from a tarball simply omit it.

use std::process::Command;

fn main() {
    // Only watch files that exist: a missing one makes cargo rebuild
    // every time (tarball and `git archive` builds have no .git). Asked of
    // git, so that a worktree (whose .git is a file) watches its own.
    for what in ["HEAD", "index"] {
        let path = Command::new("git")
            .args(["rev-parse", "--git-path", what])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_string());
        if let Some(p) = path.filter(|p| std::path::Path::new(p).exists()) {
            println!("cargo:rerun-if-changed={p}");
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
    let rev = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    let dirty = Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .ok()
        .is_some_and(|o| o.status.success() && !o.stdout.is_empty());
    let version = env!("CARGO_PKG_VERSION");
    let long = match rev {
        Some(r) => format!(
            "{version} (git {r}{})",
            if dirty { ", modified" } else { "" }
        ),
        None => version.to_string(),
    };
    println!("cargo:rustc-env=CWDIAG_VERSION={long}");
}
