//! Whether `--pid` and `--comm` name a running process: decided from the
//! processes in `/proc`, not from the sockets, so that a selector naming
//! a process that exists but holds no socket stays silent while a typo or
//! an exited pid is reported.

use super::identity::{self, open_dir, open_root, read_capped, read_exe, split_cmdline};
use crate::filter::{Filter, Selection};
use crate::model::{CMDLINE_MAX, Process};
use rustix::fs::Dir;
use std::path::Path;

/// The selection `filter` makes among the processes under `proc_root`;
/// `None` when `/proc` could not be read within [`identity::DEADLINE`].
pub fn check(proc_root: &Path, filter: &Filter) -> Option<Selection> {
    if !filter.needs_owner() {
        return Some(Selection::default());
    }
    let (root, filter) = (proc_root.to_path_buf(), filter.clone());
    identity::within(identity::DEADLINE, move || {
        let dir = open_root(&root).ok()?;
        let names = !filter.comms.is_empty();
        let pids = list_pids(&dir);
        Some(filter.selection(pids.into_iter().map(|pid| {
            let p = if names {
                names_of(&dir, pid)
            } else {
                Process::named("")
            };
            (pid, p)
        })))
    })
    .flatten()
}

/// Process ids listed in `/proc` (thread ids are not listed).
fn list_pids(root: &rustix::fd::OwnedFd) -> Vec<u32> {
    let Ok(dup) = rustix::io::dup(root) else {
        return Vec::new();
    };
    let Ok(mut dir) = Dir::new(dup) else {
        return Vec::new();
    };
    let mut pids = Vec::new();
    while let Some(Ok(e)) = dir.read() {
        if let Some(pid) = e.file_name().to_str().ok().and_then(|s| s.parse().ok()) {
            pids.push(pid);
        }
    }
    pids
}

/// The names `--comm` matches: comm, executable and argv[0].
fn names_of(root: &rustix::fd::OwnedFd, pid: u32) -> Process {
    let Ok(dir) = open_dir(root, pid.to_string()) else {
        return Process::named("");
    };
    let comm = read_capped(&dir, "comm", 64)
        .map(|(b, _)| {
            String::from_utf8_lossy(&b)
                .trim_end_matches('\n')
                .to_string()
        })
        .unwrap_or_default();
    let mut p = Process::named(comm);
    p.exe = read_exe(&dir);
    p.cmdline = read_capped(&dir, "cmdline", CMDLINE_MAX).map(|(b, _)| split_cmdline(&b));
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_this_process_by_pid_and_name_and_misses_others() {
        let exe = std::env::current_exe().unwrap();
        let name = crate::procname::basename(exe.to_str().unwrap()).to_string();
        let f = Filter {
            pids: vec![std::process::id(), u32::MAX - 1],
            comms: vec![
                name.parse().unwrap(),
                "no-such-process-name".parse().unwrap(),
            ],
            ..Filter::default()
        };
        let s = check(Path::new("/proc"), &f).expect("read /proc in time");
        assert_eq!(
            s.unmatched,
            [
                format!("--pid {}", u32::MAX - 1),
                "--comm no-such-process-name".to_string()
            ]
        );
        assert!(s.together, "this process passes both its pid and its name");
    }
}
