//! Socket inode -> owning process, by reading `/proc/<pid>/fd` links.
//!
//! This is what makes `ss -p` slow: every fd on the host is a `readlink`.
//! We only look for the inodes that will be reported, visit the processes
//! most likely to own them first, and stop as soon as all are found.
//! Processes we cannot read are counted, never silently skipped.

use crate::model::{Attribution, Process};
use rustix::fs::{AtFlags, CWD, Dir, Mode, OFlags, openat, readlinkat_raw, statat};
use rustix::io::Errno;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

/// At most this many unreadable pids are listed by number.
const LISTED_PIDS: usize = 10;

/// Where each wanted inode was found.
#[derive(Debug, Default)]
pub struct Owners {
    /// inode -> (pid, fd)
    pub by_inode: HashMap<u32, (u32, u32)>,
    pub processes: BTreeMap<u32, Process>,
    pub stats: Attribution,
}

/// Looks up `wanted` inodes under `proc_root` (normally `/proc`).
/// Processes owned by one of `likely_uids` are visited first: the socket's
/// uid is its creator's, so its owner is almost always among them.
pub fn find_owners(proc_root: &Path, wanted: &HashSet<u32>, likely_uids: &HashSet<u32>) -> Owners {
    let mut out = Owners::default();
    out.stats.wanted_sockets = wanted.len();
    if wanted.is_empty() {
        out.stats.complete = true;
        return out;
    }
    let Ok(root) = openat(
        CWD,
        proc_root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    ) else {
        out.stats.complete = false;
        return out;
    };
    let mut pids = list_pids(&root);
    // Likely owners first; stable, so pid order is kept within each class.
    pids.sort_by_key(|&(pid, uid)| (!likely_uids.contains(&uid), pid));

    let mut name = itoa_buf();
    let mut link = [0u8; 64];
    for (pid, _) in pids {
        if out.by_inode.len() == wanted.len() {
            break;
        }
        let pid_str = fmt_u32(&mut name, pid);
        let fd_dir = format!("{pid_str}/fd");
        let dirfd = match openat(
            &root,
            fd_dir.as_str(),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::NOENT) | Err(Errno::SRCH) => {
                out.stats.vanished_processes += 1;
                continue;
            }
            Err(_) => {
                out.stats.unreadable_processes += 1;
                if out.stats.unreadable_pids.len() < LISTED_PIDS {
                    out.stats.unreadable_pids.push(pid);
                }
                continue;
            }
        };
        out.stats.scanned_processes += 1;
        let Ok(dup) = rustix::io::dup(&dirfd) else {
            continue;
        };
        let Ok(mut dir) = Dir::new(dup) else { continue };
        let mut found_here = false;
        while let Some(entry) = dir.read() {
            let Ok(entry) = entry else {
                // The process exited while we listed its fds.
                out.stats.vanished_processes += 1;
                break;
            };
            let fname = entry.file_name();
            let Ok(n) = readlinkat_raw(&dirfd, fname, &mut link[..]) else {
                continue;
            };
            let Some(inode) = socket_inode(&link[..n]) else {
                continue;
            };
            if wanted.contains(&inode) && !out.by_inode.contains_key(&inode) {
                let fd = fname
                    .to_str()
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                out.by_inode.insert(inode, (pid, fd));
                found_here = true;
                if out.by_inode.len() == wanted.len() {
                    break;
                }
            }
        }
        if found_here {
            let comm = read_comm(&root, pid_str).unwrap_or_else(|| "?".to_string());
            let mut p = Process::named(comm);
            if let Some(cg) = read_small(&root, &format!("{pid_str}/cgroup"), 4096) {
                p.cgroup = super::procinfo::cgroup_path(&cg);
                p.container = p.cgroup.as_deref().and_then(super::procinfo::container_id);
            }
            out.processes.insert(pid, p);
        }
    }
    out.stats.found_sockets = out.by_inode.len();
    out.stats.complete =
        out.stats.found_sockets == wanted.len() || out.stats.unreadable_processes == 0;
    out
}

/// Numeric entries of `/proc` with the uid that owns each.
fn list_pids(root: &rustix::fd::OwnedFd) -> Vec<(u32, u32)> {
    let mut pids = Vec::new();
    let Ok(dup) = rustix::io::dup(root) else {
        return pids;
    };
    let Ok(mut dir) = Dir::new(dup) else {
        return pids;
    };
    while let Some(Ok(entry)) = dir.read() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .ok()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let uid = statat(root, entry.file_name(), AtFlags::empty())
            .map(|st| st.st_uid)
            .unwrap_or(u32::MAX);
        pids.push((pid, uid));
    }
    pids
}

/// Parses `socket:[12345]`.
fn socket_inode(link: &[u8]) -> Option<u32> {
    let rest = link.strip_prefix(b"socket:[")?.strip_suffix(b"]")?;
    std::str::from_utf8(rest).ok()?.parse().ok()
}

fn read_comm(root: &rustix::fd::OwnedFd, pid: &str) -> Option<String> {
    read_small(root, &format!("{pid}/comm"), 64).map(|c| c.trim_end().to_string())
}

/// Reads up to `max` bytes of a small /proc file relative to `root`.
fn read_small(root: &rustix::fd::OwnedFd, path: &str, max: usize) -> Option<String> {
    let fd = openat(root, path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()).ok()?;
    let mut buf = vec![0u8; max];
    let mut n = 0;
    while n < max {
        match rustix::io::read(&fd, &mut buf[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

fn itoa_buf() -> String {
    String::with_capacity(10)
}

fn fmt_u32(buf: &mut String, n: u32) -> &str {
    use std::fmt::Write;
    buf.clear();
    let _ = write!(buf, "{n}");
    buf.as_str()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_socket_links_only() {
        assert_eq!(socket_inode(b"socket:[4242]"), Some(4242));
        assert_eq!(socket_inode(b"pipe:[4242]"), None);
        assert_eq!(socket_inode(b"/dev/null"), None);
        assert_eq!(socket_inode(b"socket:[x]"), None);
    }

    #[test]
    fn finds_own_socket_in_own_process() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let ino = {
            use std::os::fd::AsRawFd;
            let link =
                std::fs::read_link(format!("/proc/self/fd/{}", listener.as_raw_fd())).unwrap();
            socket_inode(link.to_string_lossy().as_bytes()).unwrap()
        };
        let wanted: HashSet<u32> = [ino].into();
        let me = std::process::id();
        let owners = find_owners(Path::new("/proc"), &wanted, &HashSet::new());
        assert_eq!(owners.by_inode.get(&ino).map(|o| o.0), Some(me));
        assert!(owners.processes.contains_key(&me));
        assert_eq!(owners.stats.found_sockets, 1);
        assert!(owners.stats.complete);
    }
}
