//! Whether `--pid` and `--comm` name a running process: decided from the
//! processes in `/proc`, not from the sockets, so that a selector naming
//! a process that exists but holds no socket stays silent while a typo or
//! an exited pid is reported.

use super::identity::{self, split_cmdline};
use super::procfs::ProcFs;
use crate::filter::{Filter, Selection};
use crate::model::{CMDLINE_MAX, Process};
use std::path::Path;

/// The selection `filter` makes among the processes under `proc_root`;
/// `None` when `/proc` could not be read within [`identity::DEADLINE`].
pub fn check(proc_root: &Path, filter: &Filter) -> Option<Selection> {
    if !filter.needs_owner() {
        return Some(Selection::default());
    }
    let (root, filter) = (proc_root.to_path_buf(), filter.clone());
    identity::within(identity::DEADLINE, move || {
        let proc = ProcFs::open(&root);
        if !proc.is_open() {
            return None;
        }
        let names = !filter.comms.is_empty();
        let pids = proc.pids();
        Some(filter.selection(pids.into_iter().map(|pid| {
            let p = if names {
                names_of(&proc, pid)
            } else {
                Process::named("")
            };
            (pid, p)
        })))
    })
    .flatten()
}

/// The names `--comm` matches: comm, executable and argv[0].
fn names_of(proc: &ProcFs, pid: u32) -> Process {
    if proc.pid_dir(pid).is_err() {
        return Process::named("");
    }
    let comm = proc
        .read(&format!("{pid}/comm"), 64)
        .map(|c| c.text().trim_end_matches('\n').to_string())
        .unwrap_or_default();
    let mut p = Process::named(comm);
    p.exe = proc.link(&format!("{pid}/exe"));
    p.cmdline = proc
        .read(&format!("{pid}/cmdline"), CMDLINE_MAX)
        .ok()
        .map(|c| split_cmdline(&c.bytes));
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
