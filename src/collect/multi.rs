//! Many network namespaces in one scan (`--all-netns`).
//!
//! The tables of each namespace are dumped on a worker thread that has
//! entered it (`setns(CLONE_NEWNET)` per thread, at most one worker per
//! core). Then ONE walk of `/proc` looks up the owners of every
//! namespace's sockets at once: socket inodes are unique host-wide (sockfs
//! numbers every socket from one counter, `get_next_ino()` in
//! `sock_alloc()`, net/socket.c), so the owners found are split back to
//! the namespace each inode came from. The walk's cost follows the fds on
//! the host, not the number of namespaces.
//!
//! A namespace that goes away between the listing and its dump (`ip netns
//! delete`, its last process exiting) is a warning, never an error: the
//! others are still reported.

use super::kernel::Kernel;
use super::netns::Target;
use super::procfs::ProcFs;
use super::{Plan, procmap, timing};
use crate::model::{Attribution, Snapshot};
use std::collections::{BTreeSet, HashSet};
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

/// The snapshots of the namespaces that could be read, in the order of
/// the targets, and one warning per namespace that could not.
#[derive(Debug, Default)]
pub struct Collected {
    pub snapshots: Vec<Snapshot>,
    pub warnings: Vec<String>,
}

/// Collects every target: dumps in parallel, one attribution walk, then
/// the owners' details (holders, stale fds, identities), again in
/// parallel, each inside its namespace.
pub fn live(plan: &Plan, targets: &[Target]) -> Collected {
    live_from(&super::kernel::Netlink, plan, targets)
}

/// [`live`], asking `kernel` for the tables and to enter the namespaces.
pub fn live_from(kernel: &dyn Kernel, plan: &Plan, targets: &[Target]) -> Collected {
    let t0 = Instant::now();
    // One root for every namespace: `thread-self` below it resolves to
    // whichever thread reads, inside the namespace it entered.
    let proc = &ProcFs::open(&plan.proc_root);
    let dumped = on_workers(targets.iter().collect(), |t: &Target| {
        kernel.enter(t)?;
        let (mut snap, _) = super::read_tables(kernel, proc, plan, None, false).map_err(|e| {
            format!(
                "network namespace {}: cannot read its tables: {e:#}",
                t.info.name
            )
        })?;
        snap.netns = Some(t.info.clone());
        Ok::<_, String>(snap)
    });
    timing("all namespaces: dump", t0);

    let mut out = Collected::default();
    let mut read = Vec::new();
    for (t, r) in targets.iter().zip(dumped) {
        match r {
            Ok(snap) => read.push((snap, t)),
            Err(w) => out.warnings.push(w),
        }
    }
    if read.is_empty() {
        return out;
    }

    let t1 = Instant::now();
    let mut wanted = HashSet::new();
    let mut uids = HashSet::new();
    for (snap, _) in &read {
        for s in snap.sockets.iter().filter(|s| plan.wants_owner(s)) {
            wanted.insert(s.inode);
            uids.insert(s.uid);
        }
    }
    // No second look: it would be one dump per namespace.
    let owners = procmap::find_owners_with(proc, &wanted, &uids, procmap::Search::Everywhere, None);
    drop(wanted);
    for (snap, _) in &mut read {
        assign(snap, plan, &owners);
    }
    timing("all namespaces: attribute (one walk)", t1);

    let t2 = Instant::now();
    let tables = &owners.tables;
    // Holders, stale fds and identities read the namespace's own tables:
    // each snapshot is finished inside its namespace.
    let finished = on_workers(read, |(mut snap, t): (Snapshot, &Target)| {
        let mut addrs = Vec::new();
        match kernel.enter(t) {
            Ok(()) => {
                super::finish_sampling(kernel, proc, &mut snap, plan, tables, false);
                addrs = super::addrs::read(proc, &mut snap.warnings);
            }
            Err(w) => snap
                .warnings
                .push(format!("{w} (its owners' details are missing)")),
        }
        (snap, addrs)
    });
    timing("all namespaces: enrich", t2);
    let (mut snapshots, addrs): (Vec<Snapshot>, Vec<Vec<IpAddr>>) = finished.into_iter().unzip();
    let t3 = Instant::now();
    super::sample_threads_of(proc, &mut snapshots, plan);
    timing("all namespaces: threads", t3);
    link_peers(&mut snapshots, &addrs);
    out.snapshots = snapshots;
    out
}

/// Gives each snapshot the listeners of the other namespaces that serve
/// the peers of its CLOSE_WAIT and TIME_WAIT sockets: a peer address one
/// of those namespaces owns (`addrs`, in the snapshots' order), with a
/// listener there on its port. Loopback peers are always the
/// namespace's own.
pub fn link_peers(snaps: &mut [Snapshot], addrs: &[Vec<IpAddr>]) {
    use crate::model::{PeerListener, TcpState, canonical_ip as canonical};
    let mut found: Vec<Vec<PeerListener>> = vec![Vec::new(); snaps.len()];
    // Each namespace's listening ports: a peer is looked up only where
    // its address is owned and its port listened on (TIME_WAIT peers
    // with ephemeral ports, the bulk, are passed over cheaply).
    let listening: Vec<HashSet<u16>> = snaps
        .iter()
        .map(|s| {
            s.sockets
                .iter()
                .filter(|s| s.state == TcpState::Listen)
                .map(|s| s.local.port())
                .collect()
        })
        .collect();
    for (i, snap) in snaps.iter().enumerate() {
        let peers: BTreeSet<crate::model::Endpoint> = snap
            .sockets
            .iter()
            .filter(|s| matches!(s.state, TcpState::CloseWait | TcpState::TimeWait))
            .map(|s| s.peer)
            .filter(|p| !canonical(p.ip()).is_loopback())
            .collect();
        for peer in peers {
            let ip = canonical(peer.ip());
            let Some(j) = (0..snaps.len()).find(|&j| {
                j != i
                    && listening[j].contains(&peer.port())
                    && addrs.get(j).is_some_and(|a| a.contains(&ip))
            }) else {
                continue;
            };
            if snap.local_listeners(peer).is_some() {
                continue;
            }
            let other = &snaps[j];
            let Some(ls) = other.listeners_for(peer, |_| true) else {
                continue;
            };
            let mut holders: Vec<u32> = Vec::new();
            for l in &ls {
                holders.extend(l.pid);
                holders.extend(other.listener_holders.get(&l.inode).into_iter().flatten());
            }
            holders.dedup();
            found[i].push(PeerListener {
                peer,
                netns: other
                    .netns
                    .as_ref()
                    .map(|n| n.name.clone())
                    .unwrap_or_default(),
                listener: ls[0].local,
                processes: holders
                    .iter()
                    .filter_map(|p| Some((*p, other.processes.get(p)?.clone())))
                    .collect(),
                holders,
            });
        }
    }
    for (snap, f) in snaps.iter_mut().zip(found) {
        snap.peer_listeners = f;
    }
}

/// Writes the walk's findings into one namespace's snapshot: the owners
/// of its sockets, their processes, and counts for its own sockets.
fn assign(snap: &mut Snapshot, plan: &Plan, owners: &procmap::Owners) {
    let (mut wanted, mut found) = (0, 0);
    let mut pids = BTreeSet::new();
    for s in &mut snap.sockets {
        if !plan.wants_owner(s) {
            continue;
        }
        wanted += 1;
        if let Some(&(pid, fd)) = owners.by_inode.get(&s.inode) {
            s.pid = Some(pid);
            s.fd = Some(fd);
            found += 1;
            pids.insert(pid);
        }
    }
    snap.processes = pids
        .into_iter()
        .filter_map(|pid| Some((pid, owners.processes.get(&pid)?.clone())))
        .collect();
    let walk = &owners.stats;
    snap.attribution = Attribution {
        complete: found == wanted || walk.unreadable_processes == 0,
        wanted_sockets: wanted,
        found_sockets: found,
        scanned_processes: walk.scanned_processes,
        unreadable_processes: walk.unreadable_processes,
        vanished_processes: walk.vanished_processes,
        unreadable_pids: walk.unreadable_pids.clone(),
        as_root: rustix::process::geteuid().is_root(),
    };
}

/// Runs `f` on every item, on at most one worker thread per core, and
/// returns the results in the items' order. Workers are scoped threads
/// that end with this call, so a namespace a worker entered never leaks
/// to the caller's thread.
fn on_workers<T: Send, R: Send>(items: Vec<T>, f: impl Fn(T) -> R + Sync) -> Vec<R> {
    let n = items.len();
    let workers = std::thread::available_parallelism()
        .map(|p| p.get())
        .unwrap_or(1)
        .min(n);
    if workers <= 1 {
        return items.into_iter().map(f).collect();
    }
    let items: Vec<Mutex<Option<T>>> = items.into_iter().map(|t| Mutex::new(Some(t))).collect();
    let results: Vec<Mutex<Option<R>>> = (0..n).map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    let Some(item) = items[i].lock().ok().and_then(|mut g| g.take()) else {
                        continue;
                    };
                    let r = f(item);
                    if let Ok(mut slot) = results[i].lock() {
                        *slot = Some(r);
                    }
                }
            });
        }
    });
    results
        .into_iter()
        .filter_map(|m| m.into_inner().ok().flatten())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_keep_the_order_of_the_items() {
        let items: Vec<u32> = (0..100).collect();
        let out = on_workers(items, |i| {
            std::thread::yield_now();
            i * 2
        });
        assert_eq!(out, (0..100).map(|i| i * 2).collect::<Vec<_>>());
        assert!(on_workers(Vec::<u32>::new(), |i| i).is_empty());
    }
}

#[cfg(test)]
mod link_tests {
    use super::link_peers;
    use crate::model::Snapshot;

    /// A snapshot of `(state, local, peer, pid)` sockets.
    fn snap(sockets: &[(&str, &str, &str, Option<u32>)]) -> Snapshot {
        let sockets: Vec<serde_json::Value> = sockets
            .iter()
            .enumerate()
            .map(|(i, (state, local, peer, pid))| {
                serde_json::json!({
                    "state": state, "local": local, "peer": peer, "timer": "off",
                    "expires_ms": 0, "retrans": 0, "recv_q": 1, "send_q": 0, "uid": 0,
                    "inode": 100 + i, "cookie": i, "pid": pid,
                })
            })
            .collect();
        serde_json::from_value(serde_json::json!({
            "schema_version": crate::model::SCHEMA_VERSION, "taken_at_ms": 0,
            "source": {"kind": "netlink"}, "sockets": sockets, "processes": {},
            "attribution": {"complete": true, "wanted_sockets": 0, "found_sockets": 0,
                "scanned_processes": 0, "unreadable_processes": 0, "vanished_processes": 0},
        }))
        .unwrap()
    }

    #[test]
    fn a_peer_is_linked_to_the_namespace_that_owns_its_address() {
        let client = snap(&[
            ("CLOSE_WAIT", "10.1.0.1:45000", "10.1.0.2:3307", Some(8)),
            ("CLOSE_WAIT", "10.1.0.1:45001", "10.9.9.9:3307", Some(8)),
        ]);
        let server = snap(&[("LISTEN", "0.0.0.0:3307", "0.0.0.0:0", Some(70))]);
        let mut snaps = vec![client, server];
        let addrs = vec![
            vec!["10.1.0.1".parse().unwrap()],
            vec!["10.1.0.2".parse().unwrap()],
        ];
        link_peers(&mut snaps, &addrs);
        let found = &snaps[0].peer_listeners;
        assert_eq!(found.len(), 1, "only the owned address: {found:?}");
        assert_eq!(found[0].peer.to_string(), "10.1.0.2:3307");
        assert_eq!(found[0].holders, vec![70]);
        assert!(snaps[1].peer_listeners.is_empty());
    }
}
