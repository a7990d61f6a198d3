//! Collectors: the only code that reads the kernel. Each one returns a
//! [`Snapshot`]; nothing after this module touches the OS.

pub mod addrs;
pub mod cgroup;
pub mod counters;
pub mod decode;
pub mod destroy;
pub mod fsread;
pub mod holders;
pub mod identity;
pub mod kernel;
pub mod libraries;
pub mod multi;
pub mod netns;
pub mod procfs;
pub mod procinfo;
pub mod procmap;
pub mod procnet;
pub mod replay;
pub mod runtime;
pub mod selection;
pub mod sockdiag;
pub mod stale;
pub mod sysctl;
pub mod threads;

#[cfg(test)]
mod seam_tests;

use crate::model::attributed_by_default;
use crate::model::{SCHEMA_VERSION, Snapshot, Socket, Source, SourceKind, TcpState};
use anyhow::{Context, Result};
use procfs::ProcFs;
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

/// Which sockets get mapped to a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attribute {
    /// None: counting only (e.g. `assert` without pid/comm filters).
    Nothing,
    /// Every state but ESTABLISHED (CLOSE_WAIT, LISTEN, SYN_SENT, ...).
    Default,
    /// Every socket with an inode (`--sockets`).
    All,
}

/// Which live interface to read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SourceChoice {
    /// netlink sock_diag, falling back to /proc/net/tcp when unavailable.
    #[default]
    Auto,
    /// netlink sock_diag only.
    Netlink,
    /// /proc/net/tcp and /proc/net/tcp6 only.
    Proc,
}

/// What a live collection asks for.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Kernel state mask. LISTEN is always added: direction needs it.
    pub states: u32,
    pub tcp_info: bool,
    pub attribute: Attribute,
    pub proc_root: PathBuf,
    pub source: SourceChoice,
    /// Kernel-side port filter (local or peer port), empty for none.
    pub ports: Vec<u16>,
    /// Dump on both cores, with tcp_info only for the attributed states
    /// (see `dump_and_attribute`); false keeps one dump with tcp_info for
    /// every socket (`snapshot` records everything).
    pub parallel: bool,
    /// Look for stale socket fds in every process of the namespace, not
    /// only when the kernel's counters show unhashed TCP sockets.
    pub sweep_stale: bool,
}

impl Plan {
    /// The plan for a filter: its states and ports go into the kernel
    /// request; the rest is applied in user space.
    pub fn for_filter(f: &crate::filter::Filter) -> Plan {
        let mut p = Plan::new(&f.states);
        p.ports = f.ports.clone();
        p
    }

    pub fn new(states: &[TcpState]) -> Plan {
        let mask = if states.is_empty() {
            sockdiag::all_states()
        } else {
            sockdiag::mask_of(states)
        };
        Plan {
            states: mask | TcpState::Listen.mask_bit(),
            tcp_info: true,
            attribute: Attribute::Default,
            proc_root: PathBuf::from("/proc"),
            source: SourceChoice::Auto,
            ports: Vec::new(),
            parallel: true,
            sweep_stale: false,
        }
    }
}

impl Plan {
    /// True for a socket whose owner the plan looks up.
    pub(crate) fn wants_owner(&self, s: &Socket) -> bool {
        s.inode != 0
            && match self.attribute {
                Attribute::Nothing => false,
                Attribute::Default => attributed_by_default(s.state),
                Attribute::All => true,
            }
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Dumps the live tables and attributes the sockets the plan wants.
/// `record` gets every raw reply, for `scan --record`.
/// With `CWDIAG_TIMING=1`, prints how long each collection step took to
/// stderr (for BENCHMARKS.md work; off by default).
pub fn timing(step: &str, since: std::time::Instant) {
    if std::env::var_os("CWDIAG_TIMING").is_some() {
        let peak = fsread::small_text(std::path::Path::new("/proc/self/status"), &mut Vec::new())
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmHWM:").map(|v| v.trim().to_string()))
            })
            .unwrap_or_default();
        eprintln!(
            "cwdiag timing: {step}: {:.1} ms (peak RSS so far {peak})",
            since.elapsed().as_secs_f64() * 1000.0
        );
    }
}

pub fn live(plan: &Plan, record: Option<sockdiag::Recorder<'_>>) -> Result<Snapshot> {
    live_from(&kernel::Netlink, plan, record)
}

/// [`live`], asking `kernel` for the tables.
pub fn live_from(
    kernel: &dyn kernel::Kernel,
    plan: &Plan,
    record: Option<sockdiag::Recorder<'_>>,
) -> Result<Snapshot> {
    let proc = ProcFs::open(&plan.proc_root);
    let (mut snap, owners) = read_tables(kernel, &proc, plan, record, plan.parallel)?;
    let t1 = std::time::Instant::now();
    let owners = owners.unwrap_or_else(|| {
        let again = sockdiag::DumpRequest {
            states: plan.states & !TcpState::TimeWait.mask_bit(),
            tcp_info: false,
            ports: plan.ports.clone(),
        };
        let live = || live_inodes(kernel, &snap, &again);
        let recheck = procmap::Recheck {
            table_sockets: table_sockets(&snap.counters),
            live: &live,
        };
        find_owners_of(
            &proc,
            &snap.sockets,
            plan,
            procmap::Search::Everywhere,
            Some(&recheck),
        )
    });
    let tables = apply_owners(&mut snap, owners);
    timing("attribute: apply", t1);
    finish(kernel, &proc, &mut snap, plan, &tables);
    Ok(snap)
}

/// What follows attribution, in the calling thread's namespace: holders
/// of sockets without an owner, the owners' details (fds, limits, stale
/// socket fds) and their identity.
pub(crate) fn finish(
    kernel: &dyn kernel::Kernel,
    proc: &ProcFs,
    snap: &mut Snapshot,
    plan: &Plan,
    tables: &std::collections::HashMap<u32, procmap::FdTable>,
) {
    finish_sampling(kernel, proc, snap, plan, tables, true);
}

/// [`finish`]; without `sample_threads` the caller samples the threads
/// itself ([`sample_threads_of`], once for many namespaces).
pub(crate) fn finish_sampling(
    kernel: &dyn kernel::Kernel,
    proc: &ProcFs,
    snap: &mut Snapshot,
    plan: &Plan,
    tables: &std::collections::HashMap<u32, procmap::FdTable>,
    sample_threads: bool,
) {
    let t1 = std::time::Instant::now();
    if plan.attribute != Attribute::Nothing {
        holders::find(snap, proc);
    }
    timing("holders", t1);
    // The threads of processes a finding may call stuck are sampled on a
    // thread of their own while the rest of this step reads /proc, so the
    // sampling's pauses cost no wall time beyond its minimum rounds.
    // Who holds CLOSE_WAIT sockets: read once, for the suspects and the
    // libraries (enrichment adds no CLOSE_WAIT owner).
    let owners = close_wait_owners(snap);
    let suspects = if plan.attribute == Attribute::Nothing || !sample_threads {
        Vec::new()
    } else {
        thread_suspects(snap, &owners)
    };
    let stop = std::sync::atomic::AtomicBool::new(false);
    // Files cut at their size cap, named in the snapshot's warnings.
    let mut read_warnings = Vec::new();
    let sampled = std::thread::scope(|scope| {
        let sampler =
            (!suspects.is_empty()).then(|| scope.spawn(|| threads::sample(proc, &suspects, &stop)));
        let t2 = std::time::Instant::now();
        if plan.attribute != Attribute::Nothing {
            enrich_owners(kernel, proc, snap, plan, tables, &mut read_warnings);
        }
        timing("enrich", t2);
        // Last, so that holders of stale fds the enrichment added are named too.
        let t = std::time::Instant::now();
        identify_owners(snap, proc);
        timing("identify owners", t);
        if plan.attribute != Attribute::Nothing {
            let t = std::time::Instant::now();
            read_libraries(snap, proc, tables, &owners, &mut read_warnings);
            timing("libraries", t);
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let t = std::time::Instant::now();
        // A sampler cannot panic short of a bug; its processes then go
        // without thread evidence.
        let sampled = sampler.and_then(|h| h.join().ok()).unwrap_or_default();
        timing("threads (waited for)", t);
        sampled
    });
    for (pid, t) in sampled {
        if let Some(p) = snap.processes.get_mut(&pid) {
            p.threads = Some(t);
        }
    }
    for w in read_warnings {
        if !snap.warnings.contains(&w) {
            snap.warnings.push(w);
        }
    }
}

/// The tables of the calling thread's namespace (sockets, counters,
/// sysctls), not yet attributed. With `parallel`, the default scan dumps on
/// both cores and attributes while it dumps (see [`dump_and_attribute`]):
/// the owners it found come back too.
pub(crate) fn read_tables(
    kernel: &dyn kernel::Kernel,
    proc: &ProcFs,
    plan: &Plan,
    record: Option<sockdiag::Recorder<'_>>,
    parallel: bool,
) -> Result<(Snapshot, Option<procmap::Owners>)> {
    let taken_at_ms = now_ms();
    let t0 = std::time::Instant::now();
    // Files cut at their size cap, named in the snapshot's warnings.
    let mut read_warnings = Vec::new();
    let counters = counters::read(proc, &mut read_warnings);
    // Reserve for every socket when all states are dumped; a filtered dump
    // is usually much smaller, so let it grow.
    let table = table_sockets(&counters);
    let expected = if plan.states & sockdiag::all_states() == sockdiag::all_states()
        && plan.ports.is_empty()
    {
        table * 101 / 100
    } else {
        0
    };
    let req = sockdiag::DumpRequest {
        states: plan.states,
        tcp_info: plan.tcp_info,
        ports: plan.ports.clone(),
    };
    let netlink = |record: Option<sockdiag::Recorder<'_>>| -> Result<NetlinkDump> {
        if record.is_none() && plan.attribute == Attribute::Default && parallel {
            dump_and_attribute(kernel, proc, plan, &req, expected, table)
        } else {
            let d = kernel.dump(&req, expected, record)?;
            Ok((d.sockets, d.warnings, None))
        }
    };
    let (sockets, mut warnings, kind, owners) = match plan.source {
        SourceChoice::Proc => (
            procnet::read(proc, &mut read_warnings)?,
            Vec::new(),
            SourceKind::Proc,
            None,
        ),
        SourceChoice::Netlink => {
            let (s, w, o) = netlink(record)?;
            (s, w, SourceKind::Netlink, o)
        }
        SourceChoice::Auto => match netlink(record) {
            Ok((s, w, o)) => (s, w, SourceKind::Netlink, o),
            Err(e) => {
                let mut socks = procnet::read(proc, &mut read_warnings).with_context(|| {
                    format!("sock_diag failed ({e:#}) and so did the /proc fallback")
                })?;
                // /proc/net/tcp has no kernel filter: apply the plan's here.
                socks.retain(|s| {
                    plan.states & s.state.mask_bit() != 0
                        && (plan.ports.is_empty()
                            || plan.ports.contains(&s.local.port())
                            || plan.ports.contains(&s.peer.port()))
                });
                (
                    socks,
                    vec![format!(
                        "sock_diag unavailable ({e:#}); read /proc/net/tcp instead (no timers, cookies or ages)"
                    )],
                    SourceKind::Proc,
                    None,
                )
            }
        },
    };
    if kind == SourceKind::Proc && plan.source == SourceChoice::Proc {
        warnings.push(
            "source is /proc/net/tcp (--source proc): no timers, cookies or ages".to_string(),
        );
    }
    let mut snap = Snapshot {
        schema_version: SCHEMA_VERSION,
        taken_at_ms,
        netns: None,
        initial_netns: initial_netns(proc),
        source: Source { kind, path: None },
        sockets,
        processes: BTreeMap::new(),
        attribution: Default::default(),
        listener_holders: Default::default(),
        peer_listeners: Vec::new(),
        sysctls: sysctl::read(proc, &mut read_warnings),
        counters,
        warnings,
    };
    timing("dump", t0);
    for w in read_warnings {
        if !snap.warnings.contains(&w) {
            snap.warnings.push(w);
        }
    }
    Ok((snap, owners))
}

/// TCP sockets in the namespace's tables, TIME_WAIT included, from
/// `/proc/net/sockstat` (0 when unknown).
fn table_sockets(counters: &BTreeMap<String, u64>) -> usize {
    [
        "sockstat.TCP.inuse",
        "sockstat.TCP6.inuse",
        "sockstat.TCP.tw",
    ]
    .iter()
    .filter_map(|k| counters.get(*k))
    .sum::<u64>() as usize
}

/// The inodes of the table now, for [`procmap::Recheck`]: a live look
/// only for a snapshot read over netlink.
fn live_inodes(
    kernel: &dyn kernel::Kernel,
    snap: &Snapshot,
    req: &sockdiag::DumpRequest,
) -> Option<rustc_hash::FxHashSet<u32>> {
    (snap.source.kind == SourceKind::Netlink)
        .then(|| kernel.socket_inodes(req).ok())
        .flatten()
}

/// Is the calling thread's network namespace the host's (the initial
/// one)? Compared with pid 1's (`ns/net` inodes, namespaces(7)); when
/// pid 1's cannot be read, kernels 6.18 and later give the initial
/// namespaces fixed inodes (`NET_NS_INIT_INO`, `MNT_NS_INIT_INO` in
/// include/uapi/linux/nsfs.h). In a container with its own pid namespace
/// pid 1 is the container's init, whose namespace is then called
/// initial: the one case this gets wrong.
fn initial_netns(proc: &ProcFs) -> Option<bool> {
    const NET_NS_INIT_INO: u64 = 0xEFFF_FFF9;
    const MNT_NS_INIT_INO: u64 = 0xEFFF_FFF8;
    let ours = proc
        .netns_inode("thread-self/ns/net")
        .or_else(|| proc.netns_inode("self/ns/net"))?;
    if let Some(init) = proc.netns_inode("1/ns/net") {
        return Some(ours == init);
    }
    if ours == NET_NS_INIT_INO {
        return Some(true);
    }
    let fixed_inodes = proc.netns_inode("thread-self/ns/mnt") == Some(MNT_NS_INIT_INO);
    fixed_inodes.then_some(false)
}

/// Fd counts, limits, cgroups and stale socket fds of the processes that
/// own CLOSE_WAIT sockets (the ones findings will name).
fn enrich_owners(
    kernel: &dyn kernel::Kernel,
    proc: &ProcFs,
    snap: &mut Snapshot,
    plan: &Plan,
    tables: &std::collections::HashMap<u32, procmap::FdTable>,
    warnings: &mut Vec<String>,
) {
    let pids: HashSet<u32> = snap
        .sockets
        .iter()
        .filter(|s| s.state == TcpState::CloseWait)
        .filter_map(|s| s.pid)
        .collect();
    // Stale-fd detection needs every TCP socket of the namespace.
    let complete_dump =
        plan.states & sockdiag::all_states() == sockdiag::all_states() && plan.ports.is_empty();
    // Beyond the CLOSE_WAIT owners, every process is searched when the
    // kernel counts TCP sockets in no table (or when asked to).
    let t = std::time::Instant::now();
    let sweep = complete_dump
        && snap.source.kind == SourceKind::Netlink
        && (plan.sweep_stale
            || stale::unhashed_tcp_sockets(proc).is_some_and(|n| n >= stale::SWEEP_TRIGGER));
    timing("stale-fd trigger", t);
    if pids.is_empty() && !sweep {
        return;
    }
    let t = std::time::Instant::now();
    let known: Option<rustc_hash::FxHashSet<u64>> = if complete_dump {
        procinfo::other_table_inodes(proc, warnings)
    } else {
        None
    }
    .map(|mut k| {
        k.reserve(snap.sockets.len());
        k.extend(
            snap.sockets
                .iter()
                .filter(|s| s.inode != 0)
                .map(|s| u64::from(s.inode)),
        );
        k
    });
    timing("enrich: socket inodes of every table", t);
    let t = std::time::Instant::now();
    let mut candidates = Vec::new();
    for &pid in &pids {
        if let Some(p) = snap.processes.get_mut(&pid) {
            let c = procinfo::enrich(proc, pid, p, tables.get(&pid), known.as_ref(), warnings);
            if runtime::is_go(proc, pid) {
                p.runtime = Some("Go".to_string());
            }
            candidates.push((pid, c));
        }
    }
    timing("enrich: owners", t);
    let Some(known_set) = known.as_ref() else {
        return;
    };
    let mut added = Vec::new();
    if sweep {
        let t = std::time::Instant::now();
        if let Some(ns) = stale::current_netns(proc) {
            for c in stale::sweep(proc, ns, known_set, &pids) {
                snap.processes
                    .entry(c.pid)
                    .or_insert_with(|| crate::model::Process::named(c.comm));
                added.push(c.pid);
                candidates.push((c.pid, c.fds));
            }
        }
        timing("stale-fd sweep", t);
    }
    // Socket fds in no table are mostly sockets newer than the dump (a busy
    // server accepts all the time): check them against a second look at
    // the table, taken now, after the fd walk. It costs a dump, so only
    // when there is something to check.
    let live = if candidates.iter().all(|(_, c)| c.is_empty()) {
        Default::default()
    } else {
        let t = std::time::Instant::now();
        let live = recheck_inodes(kernel, proc, snap.source.kind.clone());
        timing("stale-fd recheck", t);
        live
    };
    for (pid, c) in candidates {
        if let Some(p) = snap.processes.get_mut(&pid) {
            let stale = match &live {
                Some(live) => procinfo::confirm_stale(proc, pid, &c, live),
                // No second look possible: report what the first showed.
                None => c.iter().map(|&(_, ino)| u64::from(ino)).collect(),
            };
            p.stale_socket_fds = Some(stale.len());
            p.stale_socket_inodes = stale.into_iter().take(procinfo::LISTED_INODES).collect();
        }
    }
    // The other connections of processes holding stale fds: whether they
    // keep several to one server (a pool) says who reset the stale ones.
    let holders: Vec<u32> = snap
        .processes
        .iter()
        .filter(|(_, p)| p.stale_socket_fds.is_some_and(|n| n > 0))
        .map(|(pid, _)| *pid)
        .collect();
    for pid in holders {
        attribute_connections_of(snap, proc, pid);
    }
    // Processes read only for the sweep stay in the snapshot only when
    // they hold stale fds.
    for pid in added {
        if snap
            .processes
            .get(&pid)
            .is_some_and(|p| p.stale_socket_fds == Some(0))
        {
            snap.processes.remove(&pid);
        }
    }
}

/// Processes whose client libraries are read (those with the most
/// CLOSE_WAIT sockets first).
const LIBRARY_PROCESSES: usize = 32;

/// CLOSE_WAIT sockets per owner: all of them, and those a finding may
/// call stuck (bytes waiting unread beyond the FIN, or clients of the
/// owner's own listener that hung up unread; an outbound bare FIN is an
/// idle pool's and claims nothing). Most first, then by pid.
fn close_wait_owners(snap: &Snapshot) -> Vec<(u32, usize, usize)> {
    let listen_ports: HashSet<u16> = snap
        .sockets
        .iter()
        .filter(|s| s.state == TcpState::Listen)
        .map(|s| s.local.port())
        .collect();
    let mut by_pid: BTreeMap<u32, (usize, usize)> = BTreeMap::new();
    for s in snap
        .sockets
        .iter()
        .filter(|s| s.state == TcpState::CloseWait)
    {
        if let Some(pid) = s.pid {
            let e = by_pid.entry(pid).or_default();
            e.0 += 1;
            let inbound = listen_ports.contains(&s.local.port());
            e.1 += usize::from(s.recv_q > 1 || (s.recv_q == 1 && inbound));
        }
    }
    let mut v: Vec<(u32, usize, usize)> = by_pid.into_iter().map(|(p, c)| (p, c.0, c.1)).collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v
}

/// The client libraries of the owners of CLOSE_WAIT sockets, reading
/// again only the fds the owner lookup did not already find to be sockets.
fn read_libraries(
    snap: &mut Snapshot,
    proc: &ProcFs,
    tables: &std::collections::HashMap<u32, procmap::FdTable>,
    owners: &[(u32, usize, usize)],
    warnings: &mut Vec<String>,
) {
    for &(pid, _, _) in owners.iter().take(LIBRARY_PROCESSES) {
        if let Some(p) = snap.processes.get_mut(&pid) {
            let go = p.runtime.as_deref() == Some("Go");
            let files = tables.get(&pid).and_then(procmap::FdTable::non_sockets);
            p.libraries = libraries::collect(proc, pid, p.cmdline.as_deref(), go, files, warnings);
        }
    }
}

/// Samples, in one set of rounds, the threads of the suspects of every
/// snapshot (each namespace's first [`threads::MAX_PROCESSES`]): for
/// `--all-netns`, whose namespaces are finished without sampling, so that
/// the rounds' pauses are paid once and not once per namespace.
pub(crate) fn sample_threads_of(proc: &ProcFs, snaps: &mut [Snapshot], plan: &Plan) {
    if plan.attribute == Attribute::Nothing {
        return;
    }
    let per: Vec<Vec<u32>> = snaps
        .iter()
        .map(|s| {
            let mut v = thread_suspects(s, &close_wait_owners(s));
            v.truncate(threads::MAX_PROCESSES);
            v
        })
        .collect();
    let mut all: Vec<u32> = per.iter().flatten().copied().collect();
    all.sort_unstable();
    all.dedup();
    all.truncate(threads::MAX_PROCESSES_IN_ALL);
    if all.is_empty() {
        return;
    }
    let sampled = threads::sample(proc, &all, &std::sync::atomic::AtomicBool::new(true));
    for (snap, pids) in snaps.iter_mut().zip(&per) {
        for pid in pids {
            if let (Some(t), Some(p)) = (sampled.get(pid), snap.processes.get_mut(pid)) {
                p.threads = Some(t.clone());
            }
        }
    }
}

/// The processes whose threads are sampled: the holders of listeners
/// with children waiting for accept() and the processes holding accepted
/// connections on those ports, then the owners of CLOSE_WAIT sockets a
/// finding may call stuck.
fn thread_suspects(snap: &Snapshot, close_wait: &[(u32, usize, usize)]) -> Vec<u32> {
    let listeners: Vec<&Socket> = snap
        .sockets
        .iter()
        .filter(|s| s.state == TcpState::Listen)
        .collect();
    let mut queued_ports = HashSet::new();
    for s in &snap.sockets {
        if s.inode == 0
            && matches!(s.state, TcpState::Established | TcpState::CloseWait)
            && listeners.iter().any(|l| l.local.port() == s.local.port())
        {
            queued_ports.insert(s.local.port());
        }
    }
    let mut suspects: Vec<u32> = Vec::new();
    let push = |pid: u32, v: &mut Vec<u32>| {
        if !v.contains(&pid) {
            v.push(pid);
        }
    };
    for l in listeners
        .iter()
        .filter(|l| queued_ports.contains(&l.local.port()))
    {
        for pid in l.pid.into_iter().chain(
            snap.listener_holders
                .get(&l.inode)
                .into_iter()
                .flatten()
                .copied(),
        ) {
            push(pid, &mut suspects);
        }
    }
    for s in &snap.sockets {
        if s.state != TcpState::Listen
            && queued_ports.contains(&s.local.port())
            && let Some(pid) = s.pid
        {
            push(pid, &mut suspects);
        }
    }
    for &(pid, _, stuck) in close_wait {
        if stuck > 0 {
            push(pid, &mut suspects);
        }
    }
    suspects.retain(|p| snap.processes.contains_key(p));
    suspects.truncate(threads::MAX_PROCESSES);
    suspects
}

/// Records on `pid` its outbound connections in the snapshot, by peer
/// (ESTABLISHED ones are not attributed by default, and are not made to
/// be here: the groups stay as the plan asked).
fn attribute_connections_of(snap: &mut Snapshot, proc: &ProcFs, pid: u32) {
    let Some(fds) = proc.socket_fds(pid) else {
        return;
    };
    let held: HashSet<u32> = fds.into_iter().map(|(_, ino)| ino).collect();
    let listening: HashSet<u16> = snap
        .sockets
        .iter()
        .filter(|s| s.state == TcpState::Listen)
        .map(|s| s.local.port())
        .collect();
    let mut by_peer: BTreeMap<crate::model::Endpoint, usize> = BTreeMap::new();
    for s in snap.sockets.iter().filter(|s| {
        s.inode != 0
            && s.state != TcpState::Listen
            && !listening.contains(&s.local.port())
            && held.contains(&s.inode)
    }) {
        *by_peer.entry(s.peer).or_default() += 1;
    }
    let mut v: Vec<crate::model::PeerCount> = by_peer
        .into_iter()
        .map(|(peer, count)| crate::model::PeerCount { peer, count })
        .collect();
    v.sort_by(|a, b| b.count.cmp(&a.count).then(a.peer.cmp(&b.peer)));
    v.truncate(5);
    if let Some(p) = snap.processes.get_mut(&pid) {
        p.peer_connections = v;
    }
}

/// The socket inodes of the TCP table as it is now, from the same source
/// as the snapshot; None when it cannot be read.
fn recheck_inodes(
    kernel: &dyn kernel::Kernel,
    proc: &ProcFs,
    kind: SourceKind,
) -> Option<rustc_hash::FxHashSet<u32>> {
    match kind {
        SourceKind::Netlink => kernel
            .socket_inodes(&sockdiag::DumpRequest {
                states: sockdiag::all_states() & !TcpState::TimeWait.mask_bit(),
                tcp_info: false,
                ports: Vec::new(),
            })
            .ok(),
        _ => procnet::read(proc, &mut Vec::new())
            .ok()
            .map(|v| v.iter().map(|s| s.inode).filter(|&i| i != 0).collect()),
    }
}

/// Fills `pid`/`fd` of the sockets the plan wants attributed. Returns
/// what was read of the owners' fd tables.
pub fn attribute(
    snap: &mut Snapshot,
    plan: &Plan,
) -> std::collections::HashMap<u32, procmap::FdTable> {
    let proc = ProcFs::open(&plan.proc_root);
    let owners = find_owners_of(
        &proc,
        &snap.sockets,
        plan,
        procmap::Search::Everywhere,
        None,
    );
    let tables = apply_owners(snap, owners);
    identify_owners(snap, &proc);
    tables
}

/// Command line, executable, user, parent and start time of every owner
/// in the snapshot (a warning when they could not be read in time).
fn identify_owners(snap: &mut Snapshot, proc: &ProcFs) {
    if snap.processes.is_empty() {
        return;
    }
    let pids: Vec<u32> = snap.processes.keys().copied().collect();
    let found = proc
        .try_clone()
        .ok()
        .and_then(|p| identity::identify_in(p, pids));
    match found {
        Some(found) => {
            for (pid, id) in found {
                if let Some(p) = snap.processes.get_mut(&pid) {
                    id.apply(p);
                }
            }
        }
        None => snap.warnings.push(format!(
            "the command lines and users of {} socket owners could not be read within {} s: owners are named by their kernel comm only",
            snap.processes.len(),
            identity::DEADLINE.as_secs()
        )),
    }
}

/// Looks up the owners of the sockets the plan wants attributed.
fn find_owners_of(
    proc: &ProcFs,
    sockets: &[Socket],
    plan: &Plan,
    search: procmap::Search,
    recheck: Option<&procmap::Recheck<'_>>,
) -> procmap::Owners {
    let wants = |s: &Socket| {
        s.inode != 0
            && match plan.attribute {
                Attribute::Nothing => false,
                Attribute::Default => attributed_by_default(s.state),
                Attribute::All => true,
            }
    };
    let mut wanted = HashSet::new();
    let mut uids = HashSet::new();
    for s in sockets.iter().filter(|s| wants(s)) {
        wanted.insert(s.inode);
        uids.insert(s.uid);
    }
    procmap::find_owners_with(proc, &wanted, &uids, search, recheck)
}

/// Writes what [`find_owners_of`] found into the snapshot.
fn apply_owners(
    snap: &mut Snapshot,
    owners: procmap::Owners,
) -> std::collections::HashMap<u32, procmap::FdTable> {
    for s in snap
        .sockets
        .iter_mut()
        .filter(|s| s.inode != 0 && !owners.by_inode.is_empty())
    {
        if let Some(&(pid, fd)) = owners.by_inode.get(&s.inode) {
            s.pid = Some(pid);
            s.fd = Some(fd);
        }
    }
    // The "no known owner" warning is the report's, worded for the
    // filtered view (diag::classify); the snapshot carries the numbers.
    for w in owners.warnings {
        if !snap.warnings.contains(&w) {
            snap.warnings.push(w);
        }
    }
    snap.processes = owners.processes;
    snap.attribution = owners.stats;
    snap.attribution.as_root = rustix::process::geteuid().is_root();
    owners.tables
}

/// Sockets, warnings, and owners when they were already looked up.
type NetlinkDump = (Vec<Socket>, Vec<String>, Option<procmap::Owners>);

/// Sockets moved per step when merging the two dumps (about 450 KB).
const MOVE_SLICE: usize = 4096;

/// The two states that make up the bulk of a busy host and that `scan`
/// never attributes: ESTABLISHED (not by default) and TIME_WAIT (no inode).
fn bulk_states() -> u32 {
    TcpState::Established.mask_bit() | TcpState::TimeWait.mask_bit()
}

/// The default scan, on both cores: one thread dumps the states that are
/// attributed (CLOSE_WAIT, LISTEN, FIN_WAIT*, ..., with tcp_info) and
/// walks /proc for their owners while another dumps the bulk
/// (ESTABLISHED, TIME_WAIT) without tcp_info, which only the other states
/// use. Threads inherit the caller's network namespace (`--netns`).
///
/// The two dumps are not one atomic snapshot, but neither is one dump: a
/// socket that changes state in between may be seen in both (kept once,
/// by cookie) or in neither; one the bulk dump reports in an attributed
/// state is looked up afterwards.
fn dump_and_attribute(
    kernel: &dyn kernel::Kernel,
    proc: &ProcFs,
    plan: &Plan,
    req: &sockdiag::DumpRequest,
    expected: usize,
    table_sockets: usize,
) -> Result<NetlinkDump> {
    let mut bulk = req.clone();
    bulk.states &= bulk_states();
    bulk.tcp_info = false;
    let mut first = req.clone();
    first.states &= !bulk_states();
    std::thread::scope(|scope| {
        let bulk_job = (bulk.states != 0).then(|| {
            scope.spawn(|| {
                let t = std::time::Instant::now();
                let d = kernel.dump(&bulk, expected, None);
                timing("dump: established and time-wait", t);
                d
            })
        });
        let t = std::time::Instant::now();
        let mine = kernel.dump(&first, 0, None);
        timing("dump: attributed states", t);
        let t = std::time::Instant::now();
        let owners = mine.as_ref().ok().map(|d| {
            // The second look, should the walk need one: the same states,
            // inodes only, and ESTABLISHED too when connections were being
            // opened (one that got there since the dump still has an owner
            // to find).
            let mut again = first.clone();
            again.tcp_info = false;
            if d.sockets
                .iter()
                .any(|s| matches!(s.state, TcpState::SynSent | TcpState::SynRecv))
            {
                again.states |= req.states & TcpState::Established.mask_bit();
            }
            let live = || kernel.socket_inodes(&again).ok();
            let recheck = procmap::Recheck {
                table_sockets,
                live: &live,
            };
            find_owners_of(
                proc,
                &d.sockets,
                plan,
                procmap::Search::Everywhere,
                Some(&recheck),
            )
        });
        timing("attribute (in parallel)", t);
        // Join before any early return, so an error of either side is seen.
        let bulk = bulk_job.map(|job| {
            job.join()
                .map_err(|_| anyhow::anyhow!("the sock_diag dump thread panicked"))
        });
        let mine = mine?;
        let Some(bulk) = bulk else {
            return Ok((mine.sockets, mine.warnings, owners));
        };
        // The bulk dump reserved room for every socket: append to it.
        let mut all = bulk??;
        let mine_cookies: rustc_hash::FxHashSet<u64> =
            mine.sockets.iter().map(|s| s.cookie).collect();
        all.sockets.retain(|s| !mine_cookies.contains(&s.cookie));
        let from_bulk = all.sockets.len();
        for w in mine.warnings {
            if !all.warnings.contains(&w) {
                all.warnings.push(w);
            }
        }
        // Move the attributed sockets over a slice at a time, giving each
        // slice's memory back as we go: the peak stays near one copy.
        let mut rest = mine.sockets;
        while !rest.is_empty() {
            let keep = rest.len().saturating_sub(MOVE_SLICE);
            all.sockets.extend(rest.drain(keep..));
            rest.shrink_to_fit();
        }
        // The kernel matches a socket's state and fills its reply apart, so
        // the bulk dump can hold a socket that just left ESTABLISHED (to
        // CLOSE_WAIT, say): look those few up too, in the processes the
        // probe finds them in (they may be gone already: not worth reading
        // every fd table on the host for).
        let late = find_owners_of(
            proc,
            &all.sockets[..from_bulk],
            plan,
            procmap::Search::ProbeHits,
            None,
        );
        let owners = owners.map(|mut o| {
            o.absorb(late);
            o
        });
        Ok((all.sockets, all.warnings, owners))
    })
}
