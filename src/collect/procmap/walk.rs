//! The second pass of the owner lookup: the fd tables the probe did not
//! read whole, in priority order, on several threads, until every wanted
//! inode is found.

use super::{Owners, Recheck, Search, Table};
use crate::collect::procfs::{Link, ProcFs};
use rustc_hash::FxHashMap;
use rustix::io::Errno;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};

/// fds per work item of the walk: small enough that two cores can share
/// one big table and stop soon after the last wanted inode turns up, big
/// enough that handing items out costs nothing measurable.
pub(super) const CHUNK: usize = 512;
/// Most threads the walk uses.
pub(super) const MAX_WALKERS: usize = 4;

/// How a table fared in the walk.
#[derive(Debug)]
pub(super) enum Walked {
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
pub(super) enum Item {
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
pub(super) struct ItemRead {
    /// (inode, fd) of wanted sockets.
    hits: Vec<(u32, u32)>,
    /// (fd, inode) of every socket read.
    sockets: Vec<(u32, u32)>,
    /// fds read whose links are not sockets.
    others: Vec<u32>,
    present: usize,
    /// Links read.
    links: usize,
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
pub(super) enum Closed {
    /// The process exited.
    Vanished,
    /// Permission denied (or any other refusal).
    Refused,
}

/// Wanted inodes, each claimed by the first walker that finds it, and how
/// many are still unclaimed.
pub(super) struct Claims {
    inodes: FxHashMap<u32, AtomicBool>,
    remaining: AtomicUsize,
}

impl Claims {
    fn new(wanted: &HashSet<u32>, found: &FxHashMap<u32, (u32, u32)>) -> Claims {
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

    /// Stops looking for the wanted inodes not in `live` (sockets closed
    /// since the dump). Called while no walker reads.
    fn forget_all_but(&self, live: &rustc_hash::FxHashSet<u32>) {
        for (inode, claimed) in &self.inodes {
            if !live.contains(inode) && !claimed.swap(true, Ordering::Relaxed) {
                self.remaining.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// Reads the link of `fd` in `dir` into `r`.
    fn read(&self, dir: &rustix::fd::OwnedFd, fd: u32, name: &mut String, r: &mut ItemRead) {
        r.links += 1;
        let inode = match ProcFs::fd_link(dir, fd, name) {
            Link::Socket(inode) => inode,
            Link::Other => {
                r.present += 1;
                r.others.push(fd);
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
pub(super) struct Walk<'a> {
    proc: &'a ProcFs,
    tables: &'a [Table],
    /// Fd lists of the tables listed before the walk.
    lists: &'a [Option<Vec<u32>>],
    items: &'a [Item],
    next: AtomicUsize,
    claims: Claims,
    /// The items of tables whose probe hit wanted sockets come first:
    /// how many, and how many of them are not finished yet.
    hit_items: usize,
    hit_items_left: Mutex<usize>,
    hit_items_done: Condvar,
    /// Links the tables after the hit ones would have read at most.
    unhit_fds: usize,
    recheck: Option<&'a Recheck<'a>>,
    rechecked: std::sync::Once,
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
            let hit = i < self.hit_items;
            if !hit {
                // The tables the probe hit almost always hold the rest of
                // the wanted sockets: let the walkers still reading them
                // finish before listing a table nobody expects to hold any
                // (on a busy host, tens of thousands of pipes and files).
                self.wait_for_hit_items();
                // The first walker here takes the second look; the others
                // wait for it.
                self.rechecked.call_once(|| self.drop_closed());
                if self.claims.done() {
                    break;
                }
            }
            let r = self.read_item(t, item, &mut name);
            if hit {
                self.hit_item_done();
            }
            done.push((i, r));
        }
        done
    }

    /// Drops the wanted sockets that closed since the dump, when asking
    /// the kernel costs less than reading the other tables would.
    fn drop_closed(&self) {
        let Some(r) = self.recheck else { return };
        if self.claims.done() || !r.worth_it(self.unhit_fds) {
            return;
        }
        let t = std::time::Instant::now();
        if let Some(live) = (r.live)() {
            self.claims.forget_all_but(&live);
        }
        crate::collect::timing("attribute: recheck before the other tables", t);
    }

    fn wait_for_hit_items(&self) {
        let mut left = self
            .hit_items_left
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        while *left > 0 {
            left = self
                .hit_items_done
                .wait(left)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    fn hit_item_done(&self) {
        let mut left = self
            .hit_items_left
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *left = left.saturating_sub(1);
        if *left == 0 {
            self.hit_items_done.notify_all();
        }
    }

    /// Reads one item of table `t`.
    fn read_item(&self, t: &Table, item: Item, name: &mut String) -> ItemRead {
        {
            let mut r = ItemRead::default();
            let dir = match open_dir(self.proc, t.pid) {
                Ok(dir) => dir,
                Err(closed) => {
                    r.failed = Some(closed);
                    return r;
                }
            };
            let mut read = |fd: u32, r: &mut ItemRead| {
                if !t.read.contains(&fd) {
                    self.claims.read(&dir, fd, name, r);
                }
            };
            match item {
                Item::Numbers { lo, hi, .. } => (lo..hi).for_each(|fd| read(fd, &mut r)),
                Item::Listed { table, lo, hi } => {
                    let fds = self.lists[table].as_deref().unwrap_or_default();
                    fds[lo..hi].iter().for_each(|&fd| read(fd, &mut r));
                }
                Item::From { from, .. } => {
                    let fds = ProcFs::list_fds(&dir, from).unwrap_or_default();
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
            r
        }
    }
}

pub(super) fn open_dir(proc: &ProcFs, pid: u32) -> Result<rustix::fd::OwnedFd, Closed> {
    proc.fd_dir(pid).map_err(|e| match e {
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
pub(super) fn plan_items(
    proc: &ProcFs,
    tables: &[Table],
    search: Search,
) -> (Vec<Item>, Vec<Option<Vec<u32>>>) {
    let mut items = Vec::new();
    let mut lists = vec![None; tables.len()];
    for (i, t) in tables.iter().enumerate() {
        if t.probed_whole() {
            continue;
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
            let Ok(dir) = open_dir(proc, t.pid) else {
                items.push(Item::From { table: i, from: 0 });
                continue;
            };
            let fds = ProcFs::list_fds(&dir, 0).unwrap_or_default();
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
pub(super) fn walk(
    proc: &ProcFs,
    tables: &mut [Table],
    wanted: &HashSet<u32>,
    out: &mut Owners,
    found_in: &mut HashSet<u32>,
    search: Search,
    recheck: Option<&Recheck<'_>>,
) -> Vec<Walked> {
    let (items, lists) = plan_items(proc, tables, search);
    let hit_items = items
        .iter()
        .take_while(|i| tables[i.table()].hits > 0)
        .count();
    // Tables of unknown size (before Linux 6.2) count as big.
    let unhit_fds = items[hit_items..]
        .iter()
        .map(|i| match tables[i.table()].count {
            0 => usize::MAX / items.len().max(1),
            n => n,
        })
        .fold(0usize, usize::saturating_add);
    let w = Walk {
        proc,
        tables,
        lists: &lists,
        items: &items,
        next: AtomicUsize::new(0),
        claims: Claims::new(wanted, &out.by_inode),
        hit_items,
        hit_items_left: Mutex::new(hit_items),
        hit_items_done: Condvar::new(),
        unhit_fds,
        recheck,
        rechecked: std::sync::Once::new(),
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
        out.links_read += r.links;
        t.denied |= r.denied;
        t.sockets.extend(r.sockets);
        t.others.extend(r.others);
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
                    if let Ok(dir) = open_dir(proc, t.pid) {
                        unread.extend(ProcFs::list_fds(&dir, from).unwrap_or_default());
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
pub(super) fn claim(
    pid: u32,
    hits: Vec<(u32, u32)>,
    out: &mut Owners,
    found_in: &mut HashSet<u32>,
) {
    for (inode, fd) in hits {
        if let std::collections::hash_map::Entry::Vacant(e) = out.by_inode.entry(inode) {
            e.insert((pid, fd));
            found_in.insert(pid);
        }
    }
}
