//! Socket inode -> owning process, by reading `/proc/<pid>/fd` links.
//!
//! This is what makes `ss -p` slow: every fd on the host is a `readlink`.
//! We only look for the inodes that will be reported, visit the processes
//! most likely to own them first, and stop as soon as all are found.
//! Processes we cannot read are counted, never silently skipped.

mod probe;
mod walk;

use walk::Walked;

pub use super::procfs::socket_inode;
use super::procfs::{COMM_CAP, ProcFs};
use crate::model::{Attribution, Process};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

/// At most this many unreadable pids are listed by number.
const LISTED_PIDS: usize = 10;

/// Where each wanted inode was found.
#[derive(Debug, Default)]
pub struct Owners {
    /// inode -> (pid, fd)
    pub by_inode: rustc_hash::FxHashMap<u32, (u32, u32)>,
    pub processes: BTreeMap<u32, Process>,
    pub stats: Attribution,
    /// For owners found: what the walk already read of their fd tables,
    /// so later steps need not read it again.
    pub tables: HashMap<u32, FdTable>,
    /// Files that were cut at their size cap.
    pub warnings: Vec<String>,
    /// fd links read (what the lookup cost: `CWDIAG_TIMING` shows it).
    pub links_read: usize,
}

impl Owners {
    /// Adds what a second lookup, for other inodes, found.
    pub fn absorb(&mut self, o: Owners) {
        self.links_read += o.links_read;
        for (inode, at) in o.by_inode {
            self.by_inode.entry(inode).or_insert(at);
        }
        for (pid, p) in o.processes {
            self.processes.entry(pid).or_insert(p);
        }
        for (pid, t) in o.tables {
            self.tables.entry(pid).or_insert(t);
        }
        for w in o.warnings {
            if !self.warnings.contains(&w) {
                self.warnings.push(w);
            }
        }
        let (s, t) = (&mut self.stats, o.stats);
        s.wanted_sockets += t.wanted_sockets;
        s.found_sockets += t.found_sockets;
        // The same processes, seen twice: count them once.
        s.scanned_processes = s.scanned_processes.max(t.scanned_processes);
        s.unreadable_processes = s.unreadable_processes.max(t.unreadable_processes);
        s.vanished_processes = s.vanished_processes.max(t.vanished_processes);
        for pid in t.unreadable_pids {
            if !s.unreadable_pids.contains(&pid) && s.unreadable_pids.len() < LISTED_PIDS {
                s.unreadable_pids.push(pid);
            }
        }
        s.complete = s.found_sockets == s.wanted_sockets || s.unreadable_processes == 0;
    }
}

/// An owner's fd table as far as the walk read it.
#[derive(Debug, Default, Clone)]
pub struct FdTable {
    pub fd_count: usize,
    /// (fd, inode) of the socket entries read.
    pub sockets: Vec<(u32, u32)>,
    /// fd numbers not read yet.
    pub unread: Vec<u32>,
    /// fds read whose links are not sockets (files, pipes, ...).
    pub others: Vec<u32>,
    /// False when the table was only probed, never listed: `unread` is then
    /// unknown and the socket list partial.
    pub complete: bool,
}

/// fds left unread by the walk that [`FdTable::non_sockets`] still names:
/// the walk stops after the last wanted socket, and what a process opened
/// early (a JVM's jars) sits below it.
const UNREAD_NAMED: usize = 512;

impl FdTable {
    /// The fds that may be files: those read that were not sockets and the
    /// first [`UNREAD_NAMED`] not read; `None` when the walk did not see the
    /// whole table.
    pub fn non_sockets(&self) -> Option<Vec<u32>> {
        self.complete.then(|| {
            let mut unread = self.unread.clone();
            unread.sort_unstable();
            unread.truncate(UNREAD_NAMED);
            let mut v: Vec<u32> = self.others.iter().chain(&unread).copied().collect();
            v.sort_unstable();
            v.dedup();
            v
        })
    }
}

/// One process's fd table as far as we have read it.
pub(super) struct Table {
    pub(super) pid: u32,
    pub(super) uid: u32,
    /// Open fds, from the size the kernel reports for `/proc/PID/fd`
    /// (Linux 6.2+; 0 when unknown).
    pub(super) count: usize,
    /// fd numbers already read.
    pub(super) read: HashSet<u32>,
    /// Wanted sockets found in the probe.
    pub(super) hits: usize,
    /// Links read successfully (fds that exist).
    pub(super) present: usize,
    /// Probed fd numbers below `count` that were not open: the table has
    /// holes, so reading it by number would miss fds above `count`.
    pub(super) holes: usize,
    /// A link read was refused (EACCES/EPERM).
    pub(super) denied: bool,
    /// (fd, inode) of the sockets seen so far.
    pub(super) sockets: Vec<(u32, u32)>,
    /// fds seen so far whose links are not sockets.
    pub(super) others: Vec<u32>,
    /// The probe listed the table and read every fd in it.
    pub(super) whole: bool,
}

impl Table {
    /// Did the probe read every fd of the table?
    pub(super) fn probed_whole(&self) -> bool {
        self.whole || (self.count > 0 && self.present >= self.count)
    }
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
    find_owners_in(proc_root, wanted, likely_uids, Search::Everywhere)
}

/// How far [`find_owners_in`] looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Search {
    /// Every process, until every inode is found.
    Everywhere,
    /// Only the processes the probe hits: for a few sockets seen in
    /// passing, not worth reading every fd table on the host for.
    ProbeHits,
}

/// [`find_owners`], looking as far as `search` says.
fn find_owners_in(
    proc_root: &Path,
    wanted: &HashSet<u32>,
    likely_uids: &HashSet<u32>,
    search: Search,
) -> Owners {
    find_owners_with(&ProcFs::open(proc_root), wanted, likely_uids, search, None)
}

/// A second look at the kernel's table, taken when the tables the probe
/// hit are read and wanted sockets are still missing: a socket that closed
/// since the dump has no owner left to find, and without this look its
/// absence would be searched for through every fd on the host (on a busy
/// host, tens of thousands of pipes and files). Taken only when those fds
/// outnumber what the look costs. The caller says which states the look
/// covers: those the wanted sockets were dumped in, and any they can move
/// to while keeping their owner.
pub struct Recheck<'a> {
    /// Sockets in the table (a dump walks them all, whatever it keeps).
    pub table_sockets: usize,
    /// The inodes in the table now, in the states the wanted ones were
    /// dumped in; `None` when the kernel could not be asked.
    pub live: &'a (dyn Fn() -> Option<rustc_hash::FxHashSet<u32>> + Sync),
}

impl Recheck<'_> {
    /// Is reading `fds` more links likely to cost more than the look? A
    /// link costs about as much as eight sockets of a dump (readlink(2) on
    /// `/proc/PID/fd/N`: lookup, revalidation, ptrace check and `d_path`,
    /// against `inet_diag_dump_icsk` stepping over a socket it does not
    /// send).
    pub(super) fn worth_it(&self, fds: usize) -> bool {
        fds >= 256 && fds.saturating_mul(8) > self.table_sockets
    }
}

/// [`find_owners_in`], reading `proc`; `recheck` drops wanted sockets that
/// closed since the dump before any table the probe did not hit is read.
pub fn find_owners_with(
    proc: &ProcFs,
    wanted: &HashSet<u32>,
    likely_uids: &HashSet<u32>,
    search: Search,
    recheck: Option<&Recheck<'_>>,
) -> Owners {
    let mut out = Owners::default();
    out.stats.wanted_sockets = wanted.len();
    if wanted.is_empty() {
        out.stats.complete = true;
        return out;
    }
    if !proc.is_open() {
        out.stats.complete = false;
        return out;
    }
    let t0 = std::time::Instant::now();
    let mut found_in: HashSet<u32> = HashSet::new();
    let mut tables = Vec::new();
    for (pid, uid) in proc.pids_with_uid() {
        if out.by_inode.len() == wanted.len() {
            break;
        }
        let Some(t) = probe::table(proc, pid, uid, wanted, &mut out) else {
            continue;
        };
        if t.hits > 0 {
            found_in.insert(t.pid);
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
    let t1 = std::time::Instant::now();
    let walked = walk::walk(
        proc,
        &mut tables,
        wanted,
        &mut out,
        &mut found_in,
        search,
        recheck,
    );
    super::timing("attribute: walk", t1);
    if std::env::var_os("CWDIAG_TIMING").is_some() {
        eprintln!(
            "cwdiag timing: attribute: fd links read: {}",
            out.links_read
        );
    }
    for (t, w) in tables.iter().zip(&walked) {
        if !t.denied && !matches!(w, Walked::Unreadable) {
            continue;
        }
        out.stats.unreadable_processes += 1;
        if out.stats.unreadable_pids.len() < LISTED_PIDS {
            out.stats.unreadable_pids.push(t.pid);
        }
    }
    for (t, w) in tables.iter().zip(&walked) {
        match w {
            Walked::Vanished => out.stats.vanished_processes += 1,
            Walked::Read { .. } => out.stats.scanned_processes += 1,
            // A small table the probe read whole was looked through too.
            Walked::No if t.probed_whole() => out.stats.scanned_processes += 1,
            _ => {}
        }
    }
    for (t, w) in tables.into_iter().zip(walked) {
        if !found_in.contains(&t.pid) {
            continue;
        }
        let probed_whole = t.probed_whole();
        let table = match w {
            Walked::Read { unread, fd_count } => FdTable {
                fd_count,
                sockets: t.sockets,
                unread,
                others: t.others,
                complete: true,
            },
            _ => FdTable {
                fd_count: t.count,
                sockets: t.sockets,
                unread: Vec::new(),
                others: t.others,
                complete: probed_whole,
            },
        };
        out.tables.insert(t.pid, table);
    }
    for pid in found_in {
        let pid_str = pid.to_string();
        let comm = proc
            .text(&format!("{pid_str}/comm"), COMM_CAP, &mut out.warnings)
            .map(|c| c.trim_end().to_string())
            .unwrap_or_else(|| "?".to_string());
        let mut p = Process::named(comm);
        if let Some(cg) = proc.small_text(&format!("{pid_str}/cgroup"), &mut out.warnings) {
            p.cgroup = super::cgroup::cgroup_path(&cg);
            p.container = p.cgroup.as_deref().and_then(super::cgroup::container_id);
            p.pod_uid = p.cgroup.as_deref().and_then(super::cgroup::pod_uid);
        }
        out.processes.insert(pid, p);
    }
    out.stats.found_sockets = out.by_inode.len();
    out.stats.complete =
        out.stats.found_sockets == wanted.len() || out.stats.unreadable_processes == 0;
    out
}

#[cfg(test)]
mod tests {
    use super::walk::{open_dir, walk};
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn a_second_lookup_adds_its_sockets_but_not_its_processes_twice() {
        let stats = |wanted, found| Attribution {
            wanted_sockets: wanted,
            found_sockets: found,
            scanned_processes: 5,
            unreadable_processes: 1,
            unreadable_pids: vec![1],
            ..Default::default()
        };
        let mut a = Owners {
            by_inode: [(10, (100, 3))].into_iter().collect(),
            stats: stats(2, 1),
            ..Default::default()
        };
        let b = Owners {
            by_inode: [(11, (200, 4))].into_iter().collect(),
            stats: stats(1, 1),
            ..Default::default()
        };
        a.absorb(b);
        assert_eq!(a.by_inode.len(), 2);
        let s = &a.stats;
        assert_eq!((s.wanted_sockets, s.found_sockets), (3, 2));
        assert_eq!((s.scanned_processes, s.unreadable_processes), (5, 1));
        assert_eq!(s.unreadable_pids, vec![1]);
        assert!(
            !s.complete,
            "one socket unfound while a process was unreadable"
        );
    }

    #[test]
    fn parses_socket_links_only() {
        assert_eq!(socket_inode(b"socket:[4242]"), Some(4242));
        assert_eq!(socket_inode(b"pipe:[4242]"), None);
        assert_eq!(socket_inode(b"/dev/null"), None);
        assert_eq!(socket_inode(b"socket:[x]"), None);
    }

    fn inode_of(fd: &impl std::os::fd::AsRawFd) -> u32 {
        let link = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap();
        socket_inode(link.to_string_lossy().as_bytes()).unwrap()
    }

    #[test]
    fn walk_finds_sockets_above_the_fd_count_whether_read_by_number_or_listed() {
        use std::os::fd::AsRawFd;
        // Client sockets moved to fds just below the soft fd limit, far
        // above the table's size (its count of open fds), whatever tests
        // running beside this one open or close meanwhile.
        use rustix::process::{Resource, getrlimit, setrlimit};
        let mut lim = getrlimit(Resource::Nofile);
        lim.current = lim.maximum; // raising the soft limit harms no test
        let _ = setrlimit(Resource::Nofile, lim);
        let limit = getrlimit(Resource::Nofile)
            .current
            .unwrap_or(1 << 16)
            .min(1 << 16) as i32;
        let floor = limit.saturating_sub(64).max(256);
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let clients: Vec<rustix::fd::OwnedFd> = (0..20)
            .map(|_| {
                let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
                rustix::io::fcntl_dupfd_cloexec(&c, floor).unwrap()
            })
            .collect();
        let want: HashMap<u32, u32> = clients
            .iter()
            .map(|c| (inode_of(c), c.as_raw_fd() as u32))
            .collect();
        let wanted: HashSet<u32> = want.keys().copied().collect();
        let root = ProcFs::open(Path::new("/proc"));
        let me = std::process::id();
        let dir = open_dir(&root, me).expect("my own fd table opens");
        let count = rustix::fs::fstat(&dir).unwrap().st_size as usize;
        if count == 0 {
            crate::testutil::skip("this kernel does not report fd table sizes (Linux < 6.2)");
            return;
        }
        assert!(
            want.values().all(|&fd| fd as usize > count),
            "{count} {want:?}"
        );
        // holes 0: read by number 0..count, then the rest listed from count;
        // holes 1: listed first, then read in chunks.
        for holes in [0, 1] {
            let mut tables = vec![Table {
                pid: me,
                uid: 0,
                count,
                read: HashSet::new(),
                hits: 1,
                present: 0,
                holes,
                denied: false,
                sockets: Vec::new(),
                others: Vec::new(),
                whole: false,
            }];
            let mut out = Owners::default();
            let mut found_in = HashSet::new();
            let walked = walk(
                &root,
                &mut tables,
                &wanted,
                &mut out,
                &mut found_in,
                Search::Everywhere,
                None,
            );
            for (ino, fd) in &want {
                assert_eq!(out.by_inode.get(ino), Some(&(me, *fd)), "holes {holes}");
            }
            assert_eq!(found_in, [me].into());
            assert!(matches!(walked[0], Walked::Read { .. }), "{walked:?}");
            assert!(tables[0].sockets.len() >= 20);
        }
    }

    /// A wanted socket that closed after the dump: with a second look the
    /// walk stops after the tables the probe hit, without one it reads
    /// every other table on the host looking for it (here a child holding
    /// 400 pipe fds).
    #[test]
    fn a_socket_closed_since_the_dump_is_not_searched_for_everywhere() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        if !rustix::process::geteuid().is_root() {
            crate::testutil::skip("reading other processes' fd tables needs root");
            return;
        }
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mine = inode_of(&listener);
        let gone = u32::MAX - 7; // an inode no socket has
        // A child that inherits 400 pipe fds: a big table the probe cannot hit.
        let mut ends = [0i32; 2];
        let mut held = Vec::new();
        for _ in 0..200 {
            // SAFETY: a valid two-int array; the fds are closed below.
            assert_eq!(unsafe { libc::pipe(ends.as_mut_ptr()) }, 0);
            held.extend(ends);
        }
        let mut child = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        for fd in held {
            // SAFETY: fds this test opened and owns.
            unsafe { libc::close(fd) };
        }
        let wanted: HashSet<u32> = [mine, gone].into();
        let proc = ProcFs::open(Path::new("/proc"));
        let looks = AtomicUsize::new(0);
        let live = || {
            looks.fetch_add(1, Ordering::Relaxed);
            Some([mine].into_iter().collect())
        };
        let recheck = Recheck {
            table_sockets: 1000,
            live: &live,
        };
        let with = find_owners_with(
            &proc,
            &wanted,
            &HashSet::new(),
            Search::Everywhere,
            Some(&recheck),
        );
        let without = find_owners_with(&proc, &wanted, &HashSet::new(), Search::Everywhere, None);
        let me = std::process::id();
        for o in [&with, &without] {
            assert_eq!(o.by_inode.get(&mine).map(|f| f.0), Some(me));
            assert!(!o.by_inode.contains_key(&gone));
        }
        assert_eq!(looks.load(Ordering::Relaxed), 1, "one second look");
        assert!(
            without.links_read >= with.links_read + 300,
            "without the look the child's 400 fds are read too: {} against {}",
            without.links_read,
            with.links_read
        );
        // Fewer fds than the look costs: no look, the tables are read.
        let costly_looks = AtomicUsize::new(0);
        let costly_live = || {
            costly_looks.fetch_add(1, Ordering::Relaxed);
            Some([mine].into_iter().collect())
        };
        let costly = Recheck {
            table_sockets: usize::MAX,
            live: &costly_live,
        };
        let read = find_owners_with(
            &proc,
            &wanted,
            &HashSet::new(),
            Search::Everywhere,
            Some(&costly),
        );
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(costly_looks.load(Ordering::Relaxed), 0);
        assert!(
            read.links_read >= with.links_read + 300,
            "the child's table is read: {} against {}",
            read.links_read,
            with.links_read
        );
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
