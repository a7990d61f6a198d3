//! Socket inode -> owning process, by reading `/proc/<pid>/fd` links.
//!
//! This is what makes `ss -p` slow: every fd on the host is a `readlink`.
//! We only look for the inodes that will be reported, visit the processes
//! most likely to own them first, and stop as soon as all are found.
//! Processes we cannot read are counted, never silently skipped.

use crate::model::{Attribution, Process};
use rustc_hash::FxHashMap;
use rustix::fs::{AtFlags, CWD, Dir, Mode, OFlags, openat, readlinkat_raw, statat};
use rustix::io::Errno;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

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
    /// Files that were cut at their size cap.
    pub warnings: Vec<String>,
}

impl Owners {
    /// Adds what a second lookup, for other inodes, found.
    pub fn absorb(&mut self, o: Owners) {
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
    /// Probed fd numbers below `count` that were not open: the table has
    /// holes, so reading it by number would miss fds above `count`.
    holes: usize,
    /// A link read was refused (EACCES/EPERM).
    denied: bool,
    /// (fd, inode) of the sockets seen so far.
    sockets: Vec<(u32, u32)>,
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
pub fn find_owners_in(
    proc_root: &Path,
    wanted: &HashSet<u32>,
    likely_uids: &HashSet<u32>,
    search: Search,
) -> Owners {
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
            holes: 0,
            denied: false,
            sockets: Vec::new(),
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
    let t1 = std::time::Instant::now();
    let walked = walk(&root, &mut tables, wanted, &mut out, &mut found_in, search);
    super::timing("attribute: walk", t1);
    for (t, w) in tables.iter().zip(&walked) {
        if !t.denied && !matches!(w, Walked::Unreadable) {
            continue;
        }
        out.stats.unreadable_processes += 1;
        if out.stats.unreadable_pids.len() < LISTED_PIDS {
            out.stats.unreadable_pids.push(t.pid);
        }
    }
    for w in &walked {
        match w {
            Walked::Vanished => out.stats.vanished_processes += 1,
            Walked::Read { .. } => out.stats.scanned_processes += 1,
            _ => {}
        }
    }
    for (t, w) in tables.into_iter().zip(walked) {
        if !found_in.contains(&t.pid) {
            continue;
        }
        let probed_whole = t.count > 0 && t.present >= t.count;
        let table = match w {
            Walked::Read { unread, fd_count } => FdTable {
                fd_count,
                sockets: t.sockets,
                unread,
                complete: true,
            },
            _ => FdTable {
                fd_count: t.count,
                sockets: t.sockets,
                unread: Vec::new(),
                complete: probed_whole,
            },
        };
        out.tables.insert(t.pid, table);
    }
    for pid in found_in {
        let pid_str = pid.to_string();
        let comm = read_small(
            &root,
            proc_root,
            &format!("{pid_str}/comm"),
            COMM_CAP,
            &mut out.warnings,
        )
        .map(|c| c.trim_end().to_string())
        .unwrap_or_else(|| "?".to_string());
        let mut p = Process::named(comm);
        if let Some(cg) = read_small(
            &root,
            proc_root,
            &format!("{pid_str}/cgroup"),
            super::fsread::SMALL,
            &mut out.warnings,
        ) {
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

/// Opens `/proc/PID/fd`, counting unreadable and vanished processes.
fn open_fd_dir(
    root: &rustix::fd::OwnedFd,
    pid: u32,
    stats: &mut Attribution,
) -> Option<rustix::fd::OwnedFd> {
    match open_dir(root, pid) {
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
fn read_links(
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
        let inode = match read_link(dirfd, fd, &mut name) {
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

/// What the link of one fd turned out to be.
enum Link {
    Socket(u32),
    /// Open, but not a socket.
    Other,
    /// Refused (EACCES/EPERM): some processes' links stay closed even to
    /// root (e.g. pid 1 of a sandbox); the table is then unreadable.
    Denied,
    /// Not an open fd (ENOENT).
    Missing,
    Failed,
}

/// Reads the link of `fd` in the open `/proc/PID/fd` directory `dir`;
/// `name` is scratch space for the fd number.
fn read_link(dir: &rustix::fd::OwnedFd, fd: u32, name: &mut String) -> Link {
    let mut link = [0u8; 64];
    name.clear();
    use std::fmt::Write;
    let _ = write!(name, "{fd}");
    match readlinkat_raw(dir, name.as_str(), &mut link[..]) {
        Ok(n) => socket_inode(&link[..n]).map_or(Link::Other, Link::Socket),
        Err(Errno::ACCESS) | Err(Errno::PERM) => Link::Denied,
        Err(Errno::NOENT) => Link::Missing,
        Err(_) => Link::Failed,
    }
}

/// fds per work item of the walk: small enough that two cores can share
/// one big table and stop soon after the last wanted inode turns up, big
/// enough that handing items out costs nothing measurable.
const CHUNK: usize = 512;
/// Most threads the walk uses.
const MAX_WALKERS: usize = 4;

/// How a table fared in the walk.
#[derive(Debug)]
enum Walked {
    /// Not walked: every wanted inode was found first, or the probe
    /// already read the whole table.
    No,
    /// Walked; `unread` lists the fds not read (items skipped once every
    /// wanted inode was found), for later steps.
    Read { unread: Vec<u32>, fd_count: usize },
    /// Its `/proc/PID/fd` could not be opened again.
    Unreadable,
    /// The process exited.
    Vanished,
}

/// One piece of one table's walk, read by one walker.
#[derive(Debug, Clone, Copy)]
enum Item {
    /// fd numbers `lo..hi` (a dense table, read without listing it).
    Numbers { table: usize, lo: u32, hi: u32 },
    /// Entries `lo..hi` of the table's fd list.
    Listed { table: usize, lo: usize, hi: usize },
    /// List the fds from `from` on and read them (the rest of a dense
    /// table, or a whole table nobody expected to hold wanted sockets).
    From { table: usize, from: u32 },
}

impl Item {
    fn table(self) -> usize {
        match self {
            Item::Numbers { table, .. } | Item::Listed { table, .. } | Item::From { table, .. } => {
                table
            }
        }
    }
}

/// What a walker read in one item.
#[derive(Default)]
struct ItemRead {
    /// (inode, fd) of wanted sockets.
    hits: Vec<(u32, u32)>,
    /// (fd, inode) of every socket read.
    sockets: Vec<(u32, u32)>,
    present: usize,
    denied: bool,
    /// The fds an `Item::From` listed.
    listed: Vec<u32>,
    /// Listed fds left unread once every wanted inode was found.
    unread: Vec<u32>,
    /// The table's directory could not be opened.
    failed: Option<Closed>,
}

/// Why a `/proc/PID/fd` could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closed {
    /// The process exited.
    Vanished,
    /// Permission denied (or any other refusal).
    Refused,
}

/// Wanted inodes, each claimed by the first walker that finds it, and how
/// many are still unclaimed.
struct Claims {
    inodes: FxHashMap<u32, AtomicBool>,
    remaining: AtomicUsize,
}

impl Claims {
    fn new(wanted: &HashSet<u32>, found: &HashMap<u32, (u32, u32)>) -> Claims {
        Claims {
            inodes: wanted
                .iter()
                .map(|&ino| (ino, AtomicBool::new(found.contains_key(&ino))))
                .collect(),
            remaining: AtomicUsize::new(wanted.len() - found.len()),
        }
    }

    fn done(&self) -> bool {
        self.remaining.load(Ordering::Relaxed) == 0
    }

    /// Reads the link of `fd` in `dir` into `r`.
    fn read(&self, dir: &rustix::fd::OwnedFd, fd: u32, name: &mut String, r: &mut ItemRead) {
        let inode = match read_link(dir, fd, name) {
            Link::Socket(inode) => inode,
            Link::Other => {
                r.present += 1;
                return;
            }
            Link::Denied => {
                r.denied = true;
                return;
            }
            Link::Missing | Link::Failed => return,
        };
        r.present += 1;
        r.sockets.push((fd, inode));
        if let Some(c) = self.inodes.get(&inode) {
            r.hits.push((inode, fd));
            if !c.swap(true, Ordering::Relaxed) {
                self.remaining.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

/// What the walkers share.
struct Walk<'a> {
    root: &'a rustix::fd::OwnedFd,
    tables: &'a [Table],
    /// Fd lists of the tables listed before the walk.
    lists: &'a [Option<Vec<u32>>],
    items: &'a [Item],
    next: AtomicUsize,
    claims: Claims,
}

impl Walk<'_> {
    /// Takes items until none are left or every wanted inode is found.
    /// Each item opens its table's directory itself and closes it when
    /// done: holding one per process would run out of fds on a busy host.
    fn work(&self) -> Vec<(usize, ItemRead)> {
        let mut done = Vec::new();
        let mut name = String::with_capacity(10);
        while !self.claims.done() {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            let Some(&item) = self.items.get(i) else {
                break;
            };
            let t = &self.tables[item.table()];
            let mut r = ItemRead::default();
            let dir = match open_dir(self.root, t.pid) {
                Ok(dir) => dir,
                Err(closed) => {
                    r.failed = Some(closed);
                    done.push((i, r));
                    continue;
                }
            };
            let mut read = |fd: u32, r: &mut ItemRead| {
                if !t.read.contains(&fd) {
                    self.claims.read(&dir, fd, &mut name, r);
                }
            };
            match item {
                Item::Numbers { lo, hi, .. } => (lo..hi).for_each(|fd| read(fd, &mut r)),
                Item::Listed { table, lo, hi } => {
                    let fds = self.lists[table].as_deref().unwrap_or_default();
                    fds[lo..hi].iter().for_each(|&fd| read(fd, &mut r));
                }
                Item::From { from, .. } => {
                    let fds = list_from(&dir, from).unwrap_or_default();
                    // A whole table can be big: stop as soon as everything
                    // is found, and say what was left unread.
                    for (k, &fd) in fds.iter().enumerate() {
                        if self.claims.done() {
                            r.unread.extend_from_slice(&fds[k..]);
                            break;
                        }
                        read(fd, &mut r);
                    }
                    r.listed = fds;
                }
            }
            done.push((i, r));
        }
        done
    }
}

fn open_dir(root: &rustix::fd::OwnedFd, pid: u32) -> Result<rustix::fd::OwnedFd, Closed> {
    openat(
        root,
        format!("{pid}/fd").as_str(),
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| match e {
        Errno::NOENT | Errno::SRCH => Closed::Vanished,
        _ => Closed::Refused,
    })
}

/// The work items for the tables the probe did not read whole, in
/// priority order. A table whose probe hit wanted sockets is read on every
/// core: by fd number when the probe found it dense (fds are allocated
/// lowest-first; `st_size` of `/proc/PID/fd` gives the count on Linux
/// 6.2+), which spares listing it (listing costs a third as much again as
/// reading: the kernel builds a dentry per entry), otherwise from a list
/// made now. Other tables are listed and read by one walker each, and
/// only if wanted inodes are still missing when their turn comes.
fn plan_items(
    root: &rustix::fd::OwnedFd,
    tables: &[Table],
    search: Search,
) -> (Vec<Item>, Vec<Option<Vec<u32>>>) {
    let mut items = Vec::new();
    let mut lists = vec![None; tables.len()];
    for (i, t) in tables.iter().enumerate() {
        if t.count > 0 && t.present >= t.count {
            continue; // the probe read it all
        }
        if t.hits == 0 {
            if search == Search::Everywhere {
                items.push(Item::From { table: i, from: 0 });
            }
        } else if t.count > 0 && t.holes == 0 {
            let end = t.count as u32;
            items.extend((0..end).step_by(CHUNK).map(|lo| Item::Numbers {
                table: i,
                lo,
                hi: lo.saturating_add(CHUNK as u32).min(end),
            }));
            // Holes the probe missed push fds above the count.
            items.push(Item::From {
                table: i,
                from: end,
            });
        } else {
            let Ok(dir) = open_dir(root, t.pid) else {
                items.push(Item::From { table: i, from: 0 });
                continue;
            };
            let fds = list_from(&dir, 0).unwrap_or_default();
            items.extend((0..fds.len()).step_by(CHUNK).map(|lo| Item::Listed {
                table: i,
                lo,
                hi: (lo + CHUNK).min(fds.len()),
            }));
            lists[i] = Some(fds);
        }
    }
    (items, lists)
}

/// Reads, in priority order and on up to [`MAX_WALKERS`] threads, the fd
/// tables the probe did not read whole, until every wanted inode is found.
/// Returns how each table fared.
fn walk(
    root: &rustix::fd::OwnedFd,
    tables: &mut [Table],
    wanted: &HashSet<u32>,
    out: &mut Owners,
    found_in: &mut HashSet<u32>,
    search: Search,
) -> Vec<Walked> {
    let (items, lists) = plan_items(root, tables, search);
    let w = Walk {
        root,
        tables,
        lists: &lists,
        items: &items,
        next: AtomicUsize::new(0),
        claims: Claims::new(wanted, &out.by_inode),
    };
    let walkers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, MAX_WALKERS)
        .min(items.len().max(1));
    let mut reads: Vec<(usize, ItemRead)> = std::thread::scope(|s| {
        let others: Vec<_> = (1..walkers).map(|_| s.spawn(|| w.work())).collect();
        let mut all = w.work();
        for h in others {
            // A walker cannot panic short of a bug; its items would then
            // count as unread and their sockets as unattributed.
            if let Ok(r) = h.join() {
                all.extend(r);
            }
        }
        all
    });
    // Merge in item order, so the first owner of a shared socket is the
    // one a single walker would have found.
    reads.sort_by_key(|(i, _)| *i);
    let mut read_items = vec![false; items.len()];
    let mut listed: Vec<Option<Vec<u32>>> = lists;
    let mut unread: Vec<Vec<u32>> = vec![Vec::new(); tables.len()];
    // Per table: some item opened it / found it gone / was refused.
    let mut opened = vec![false; tables.len()];
    let mut vanished = vec![false; tables.len()];
    let mut refused = vec![false; tables.len()];
    for (i, r) in reads {
        let ti = items[i].table();
        match r.failed {
            Some(Closed::Vanished) => vanished[ti] = true,
            Some(Closed::Refused) => refused[ti] = true,
            None => opened[ti] = true,
        }
        // An item whose directory could not be opened read nothing.
        read_items[i] = r.failed.is_none();
        let t = &mut tables[ti];
        claim(t.pid, r.hits, out, found_in);
        t.present += r.present;
        t.denied |= r.denied;
        t.sockets.extend(r.sockets);
        unread[ti].extend(r.unread);
        if let Item::From { from: 0, .. } = items[i] {
            listed[ti] = Some(r.listed);
        }
    }
    let mut walked: Vec<Walked> = Vec::with_capacity(tables.len());
    for (ti, t) in tables.iter().enumerate() {
        if vanished[ti] {
            walked.push(Walked::Vanished);
            continue;
        }
        if !opened[ti] {
            walked.push(if refused[ti] {
                Walked::Unreadable
            } else {
                Walked::No
            });
            continue;
        }
        let mut unread = std::mem::take(&mut unread[ti]);
        for (&item, _) in items
            .iter()
            .zip(&read_items)
            .filter(|(it, r)| it.table() == ti && !**r)
        {
            match item {
                Item::Numbers { lo, hi, .. } => unread.extend(lo..hi),
                Item::Listed { lo, hi, .. } => {
                    unread.extend_from_slice(&listed[ti].as_deref().unwrap_or_default()[lo..hi])
                }
                Item::From { from, .. } => {
                    if let Ok(dir) = open_dir(root, t.pid) {
                        unread.extend(list_from(&dir, from).unwrap_or_default());
                    }
                }
            }
        }
        unread.retain(|fd| !t.read.contains(fd));
        let fd_count = match &listed[ti] {
            Some(fds) if t.count == 0 => fds.len(),
            _ => t.count,
        };
        walked.push(Walked::Read { unread, fd_count });
    }
    walked
}

/// Records the first owner of each wanted inode, in walk order.
fn claim(pid: u32, hits: Vec<(u32, u32)>, out: &mut Owners, found_in: &mut HashSet<u32>) {
    for (inode, fd) in hits {
        if let std::collections::hash_map::Entry::Vacant(e) = out.by_inode.entry(inode) {
            e.insert((pid, fd));
            found_in.insert(pid);
        }
    }
}

/// The fd numbers of an open `/proc/PID/fd` from `start` on (the
/// directory's position is fd + 2, after `.` and `..`).
fn list_from(dir: &rustix::fd::OwnedFd, start: u32) -> Option<Vec<u32>> {
    let mut d = Dir::read_from(dir).ok()?;
    if start > 0 {
        d.seek(i64::from(start) + 2).ok()?;
    }
    let mut fds = Vec::new();
    while let Some(entry) = d.read() {
        let entry = entry.ok()?;
        if let Some(fd) = entry.file_name().to_str().ok().and_then(|s| s.parse().ok()) {
            fds.push(fd);
        }
    }
    Some(fds)
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

/// `comm` is at most 15 bytes and a newline (`TASK_COMM_LEN`).
const COMM_CAP: usize = 64;

/// Reads up to `max` bytes of a small /proc file relative to `root` (see
/// [`super::fsread`]); a cut file is named in `warnings`.
fn read_small(
    root: &rustix::fd::OwnedFd,
    proc_root: &Path,
    path: &str,
    max: usize,
    warnings: &mut Vec<String>,
) -> Option<String> {
    let c = super::fsread::read_at(root, path, max).ok()?;
    c.note(&proc_root.join(path), max, warnings);
    Some(c.text())
}

#[cfg(test)]
mod tests {
    use super::*;

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
            by_inode: [(10, (100, 3))].into(),
            stats: stats(2, 1),
            ..Default::default()
        };
        let b = Owners {
            by_inode: [(11, (200, 4))].into(),
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
        let root = openat(
            CWD,
            "/proc",
            OFlags::RDONLY | OFlags::DIRECTORY,
            Mode::empty(),
        )
        .unwrap();
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
            );
            for (ino, fd) in &want {
                assert_eq!(out.by_inode.get(ino), Some(&(me, *fd)), "holes {holes}");
            }
            assert_eq!(found_in, [me].into());
            assert!(matches!(walked[0], Walked::Read { .. }), "{walked:?}");
            assert!(tables[0].sockets.len() >= 20);
        }
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
