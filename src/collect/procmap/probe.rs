//! The first pass of the owner lookup: in every process, the links of
//! the first fds and of a few spread over the table, so that the tables
//! holding wanted sockets are walked first.

use super::walk::{Closed, open_dir};
use super::{LISTED_PIDS, Owners, Table};
use crate::collect::procfs::{Link, ProcFs};
use crate::model::Attribution;
use std::collections::HashSet;

/// Entries read from the head of each fd table in the probe pass:
/// listeners and other early sockets live there.
pub(super) const PROBE_HEAD: usize = 32;
/// Evenly spaced entries sampled from the rest of each fd table.
pub(super) const PROBE_SAMPLES: usize = 16;

/// Probes the fd table of `pid` (owned by `uid`), recording the wanted
/// sockets it finds in `out`; `None` when the table cannot be opened
/// (counted in `out.stats`).
pub(super) fn table(
    proc: &ProcFs,
    pid: u32,
    uid: u32,
    wanted: &HashSet<u32>,
    out: &mut Owners,
) -> Option<Table> {
    let dirfd = open_fd_dir(proc, pid, &mut out.stats)?;
    let count = rustix::fs::fstat(&dirfd)
        .map(|st| st.st_size.max(0) as usize)
        .unwrap_or(0);
    let mut t = Table {
        pid,
        uid,
        count,
        read: HashSet::new(),
        hits: 0,
        present: 0,
        holes: 0,
        denied: false,
        sockets: Vec::new(),
        others: Vec::new(),
        whole: false,
    };
    let probe: Vec<u32> = if count <= PROBE_HEAD + PROBE_SAMPLES {
        // A small table (or, before Linux 6.2, one of unknown size: 0): one
        // listing names its fds, so no link is read in vain. Most
        // processes on a host are small, and kernel threads have none.
        let fds = ProcFs::list_fds(&dirfd, 0).unwrap_or_default();
        t.count = fds.len();
        if fds.len() <= PROBE_HEAD + PROBE_SAMPLES {
            t.whole = true;
            fds
        } else {
            // Listed on a kernel that does not report the size: probe the
            // listing's head and spread, and let the walk list it again.
            t.holes = 1;
            let step = ((fds.len() - PROBE_HEAD) / PROBE_SAMPLES).max(1);
            let mut probe = fds[..PROBE_HEAD].to_vec();
            probe.extend(fds[PROBE_HEAD..].iter().step_by(step).take(PROBE_SAMPLES));
            probe
        }
    } else {
        let step = ((count - PROBE_HEAD) / PROBE_SAMPLES).max(1);
        (0..PROBE_HEAD as u32)
            .chain(
                (PROBE_HEAD..count)
                    .step_by(step)
                    .take(PROBE_SAMPLES)
                    .map(|n| n as u32),
            )
            .collect()
    };
    t.hits = read_links(&dirfd, &mut t, &probe, wanted, out);
    Some(t)
}

/// Opens `/proc/PID/fd`, counting unreadable and vanished processes.
fn open_fd_dir(proc: &ProcFs, pid: u32, stats: &mut Attribution) -> Option<rustix::fd::OwnedFd> {
    match open_dir(proc, pid) {
        Ok(fd) => Some(fd),
        Err(Closed::Vanished) => {
            stats.vanished_processes += 1;
            None
        }
        Err(Closed::Refused) => {
            stats.unreadable_processes += 1;
            if stats.unreadable_pids.len() < LISTED_PIDS {
                stats.unreadable_pids.push(pid);
            }
            None
        }
    }
}

/// Reads the links of `fds` in `dirfd`, recording wanted sockets; returns
/// how many were found.
pub(super) fn read_links(
    dirfd: &rustix::fd::OwnedFd,
    t: &mut Table,
    fds: &[u32],
    wanted: &HashSet<u32>,
    out: &mut Owners,
) -> usize {
    let mut name = String::with_capacity(10);
    let mut hits = 0;
    for &fd in fds {
        if !t.read.insert(fd) {
            continue;
        }
        out.links_read += 1;
        let inode = match ProcFs::fd_link(dirfd, fd, &mut name) {
            Link::Socket(inode) => inode,
            Link::Denied => {
                t.denied = true;
                continue;
            }
            Link::Missing if (fd as usize) < t.count => {
                t.holes += 1;
                continue;
            }
            Link::Missing | Link::Failed => continue,
            Link::Other => {
                t.present += 1;
                t.others.push(fd);
                continue;
            }
        };
        t.present += 1;
        t.sockets.push((fd, inode));
        if wanted.contains(&inode) && !out.by_inode.contains_key(&inode) {
            out.by_inode.insert(inode, (t.pid, fd));
            hits += 1;
            if out.by_inode.len() == wanted.len() {
                break;
            }
        }
    }
    hits
}
