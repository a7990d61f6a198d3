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
    /// For owners found: what the walk already read of their fd tables,
    /// so later steps need not read it again.
    pub tables: HashMap<u32, FdTable>,
}

/// An owner's fd table as far as the walk read it.
#[derive(Debug, Default, Clone)]
pub struct FdTable {
    pub fd_count: usize,
    /// Socket inodes of the entries read.
    pub sockets: Vec<u32>,
    /// fd numbers not read yet.
    pub unread: Vec<u32>,
    /// False when the table was only probed, never listed: `unread` is then
    /// unknown and the socket list partial.
    pub complete: bool,
}

/// Entries read from the head of each fd table in the probe pass:
/// listeners and other early sockets live there.
const PROBE_HEAD: usize = 32;
/// Evenly spaced entries sampled from the rest of each fd table.
const PROBE_SAMPLES: usize = 16;

/// One process's fd table as far as we have read it.
struct Table {
    pid: u32,
    uid: u32,
    /// Open fds, from the size the kernel reports for `/proc/PID/fd`
    /// (Linux 6.2+; 0 when unknown).
    count: usize,
    /// fd numbers already read.
    read: HashSet<u32>,
    /// Wanted sockets found in the probe.
    hits: usize,
    /// Links read successfully (fds that exist).
    present: usize,
    /// A link read was refused (EACCES/EPERM).
    denied: bool,
    /// Socket inodes seen so far.
    sockets: Vec<u32>,
    /// Full fd list, once listed (phase 2).
    listed: Option<Vec<u32>>,
}

/// Looks up `wanted` inodes under `proc_root` (normally `/proc`).
///
/// Listing a big fd table costs about as much as reading its links (the
/// kernel builds a dentry per fd), so we avoid both where we can. A probe
/// reads, in every process, the links of fds 0-31 (listeners and other
/// early sockets live there) and of 16 fd numbers spread over the table's
/// size; processes whose samples hit wanted sockets are then walked in
/// full first, then those owned by `likely_uids` (a socket's uid is its
/// creator's), then the rest, stopping once every inode is found. When a
/// few processes hold the reported sockets among hundreds of thousands of
/// others, this reads a small fraction of all fds.
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
    let t0 = std::time::Instant::now();
    let mut found_in: HashSet<u32> = HashSet::new();
    let mut tables = Vec::new();
    for (pid, uid) in list_pids(&root) {
        if out.by_inode.len() == wanted.len() {
            break;
        }
        let Some(dirfd) = open_fd_dir(&root, pid, &mut out.stats) else {
            continue;
        };
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
            denied: false,
            sockets: Vec::new(),
            listed: None,
        };
        let mut probe: Vec<u32> = (0..PROBE_HEAD as u32).collect();
        if count > PROBE_HEAD {
            let step = ((count - PROBE_HEAD) / PROBE_SAMPLES).max(1);
            probe.extend(
                (PROBE_HEAD..count)
                    .step_by(step)
                    .take(PROBE_SAMPLES)
                    .map(|n| n as u32),
            );
        }
        t.hits = read_links(&dirfd, &mut t, &probe, wanted, &mut out);
        if t.hits > 0 {
            found_in.insert(pid);
        }
        tables.push(t);
    }
    super::timing("attribute: probe", t0);
    // Most promising first; stable, so pid order is kept within a class.
    tables.sort_by_key(|t| {
        (
            std::cmp::Reverse(t.hits),
            !likely_uids.contains(&t.uid),
            t.pid,
        )
    });
    for t in &mut tables {
        if out.by_inode.len() == wanted.len() {
            break;
        }
        // Small tables were read whole by the probe (count known).
        if t.count > 0 && t.present >= t.count {
            continue;
        }
        let Some(dirfd) = open_fd_dir(&root, t.pid, &mut out.stats) else {
            continue;
        };
        let Some(fds) = list_fds(dirfd.try_clone().ok(), &mut out.stats) else {
            continue;
        };
        out.stats.scanned_processes += 1;
        let rest: Vec<u32> = fds
            .iter()
            .copied()
            .filter(|fd| !t.read.contains(fd))
            .collect();
        t.listed = Some(fds);
        if read_links(&dirfd, t, &rest, wanted, &mut out) > 0 {
            found_in.insert(t.pid);
        }
    }
    for t in tables.iter().filter(|t| t.denied) {
        out.stats.unreadable_processes += 1;
        if out.stats.unreadable_pids.len() < LISTED_PIDS {
            out.stats.unreadable_pids.push(t.pid);
        }
    }
    for t in tables.into_iter().filter(|t| found_in.contains(&t.pid)) {
        let unread = match &t.listed {
            Some(fds) => fds
                .iter()
                .copied()
                .filter(|fd| !t.read.contains(fd))
                .collect(),
            None => Vec::new(),
        };
        let fd_count = t.listed.as_ref().map_or(t.count, Vec::len);
        let complete = t.listed.is_some() || (t.count > 0 && t.present >= t.count);
        out.tables.insert(
            t.pid,
            FdTable {
                fd_count,
                sockets: t.sockets,
                unread,
                complete,
            },
        );
    }
    for pid in found_in {
        let pid_str = pid.to_string();
        let comm = read_comm(&root, &pid_str).unwrap_or_else(|| "?".to_string());
        let mut p = Process::named(comm);
        if let Some(cg) = read_small(&root, &format!("{pid_str}/cgroup"), 4096) {
            p.cgroup = super::procinfo::cgroup_path(&cg);
            p.container = p.cgroup.as_deref().and_then(super::procinfo::container_id);
        }
        out.processes.insert(pid, p);
    }
    out.stats.found_sockets = out.by_inode.len();
    out.stats.complete =
        out.stats.found_sockets == wanted.len() || out.stats.unreadable_processes == 0;
    out
}

/// Opens `/proc/PID/fd`, counting unreadable and vanished processes.
fn open_fd_dir(
    root: &rustix::fd::OwnedFd,
    pid: u32,
    stats: &mut Attribution,
) -> Option<rustix::fd::OwnedFd> {
    match openat(
        root,
        format!("{pid}/fd").as_str(),
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => Some(fd),
        Err(Errno::NOENT) | Err(Errno::SRCH) => {
            stats.vanished_processes += 1;
            None
        }
        Err(_) => {
            stats.unreadable_processes += 1;
            if stats.unreadable_pids.len() < LISTED_PIDS {
                stats.unreadable_pids.push(pid);
            }
            None
        }
    }
}

/// Lists the fd numbers of an open `/proc/PID/fd`.
fn list_fds(dirfd: Option<rustix::fd::OwnedFd>, stats: &mut Attribution) -> Option<Vec<u32>> {
    let mut dir = Dir::new(dirfd?).ok()?;
    let mut fds = Vec::new();
    while let Some(entry) = dir.read() {
        let Ok(entry) = entry else {
            // The process exited while we listed its fds.
            stats.vanished_processes += 1;
            return None;
        };
        if let Some(fd) = entry.file_name().to_str().ok().and_then(|s| s.parse().ok()) {
            fds.push(fd);
        }
    }
    Some(fds)
}

/// Reads the links of `fds` in `dirfd`, recording wanted sockets; returns
/// how many were found.
fn read_links(
    dirfd: &rustix::fd::OwnedFd,
    t: &mut Table,
    fds: &[u32],
    wanted: &HashSet<u32>,
    out: &mut Owners,
) -> usize {
    let mut link = [0u8; 64];
    let mut name = String::with_capacity(10);
    let mut hits = 0;
    for &fd in fds {
        if !t.read.insert(fd) {
            continue;
        }
        name.clear();
        use std::fmt::Write;
        let _ = write!(name, "{fd}");
        let n = match readlinkat_raw(dirfd, name.as_str(), &mut link[..]) {
            Ok(n) => n,
            // Some processes' links stay closed even to root (e.g. pid 1 of
            // a sandbox): the table is unreadable, say so.
            Err(Errno::ACCESS) | Err(Errno::PERM) => {
                t.denied = true;
                continue;
            }
            Err(_) => continue,
        };
        t.present += 1;
        let Some(inode) = socket_inode(&link[..n]) else {
            continue;
        };
        t.sockets.push(inode);
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
pub fn socket_inode(link: &[u8]) -> Option<u32> {
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
