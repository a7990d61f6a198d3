//! Looking for stale socket fds beyond the owners of CLOSE_WAIT sockets.
//!
//! A TCP socket the kernel closed (an RST from the peer, a keepalive or
//! retransmission timeout: `tcp_input.c:tcp_reset`, `tcp_timer.c:
//! tcp_write_err`) is unhashed, so no sock_diag dump shows it, but it
//! stays allocated until its fd is closed. `/proc/net/sockstat` counts
//! both: `alloc` (every TCP socket of the host, `proto_sockets_allocated`)
//! and `inuse` (the hashed ones of one namespace, `sock_prot_inuse_get`).
//! `alloc` minus the sum of `inuse` over all namespaces (those of
//! processes, and those only a bind mount keeps) is the number of
//! TCP sockets in no table: stale ones, plus the few just created and not
//! yet connected. Only when that number reaches [`SWEEP_TRIGGER`] are the
//! fd tables of every process read (the cost of `ss -p`); a quiet host
//! pays a few small reads.

use super::procfs::ProcFs;
use rustc_hash::FxHashSet;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Unhashed TCP sockets on the host from which every process is searched.
pub const SWEEP_TRIGGER: u64 = 8;

/// How long one reading of the counters serves (an `--all-netns` scan
/// asks once per namespace).
const REUSE: Duration = Duration::from_secs(1);

static LAST: Mutex<Option<(Instant, Option<u64>)>> = Mutex::new(None);

/// TCP sockets allocated on the host but hashed in no namespace's table;
/// `None` when the counters cannot be read (not Linux /proc, no access).
pub fn unhashed_tcp_sockets(proc: &ProcFs) -> Option<u64> {
    if let Ok(guard) = LAST.lock()
        && let Some((at, v)) = *guard
        && at.elapsed() < REUSE
    {
        return v;
    }
    let v = count_unhashed(proc);
    if let Ok(mut guard) = LAST.lock() {
        *guard = Some((Instant::now(), v));
    }
    v
}

fn count_unhashed(proc: &ProcFs) -> Option<u64> {
    // One process per network namespace.
    let mut per_ns: BTreeMap<u64, u32> = BTreeMap::new();
    for pid in proc.pids() {
        if let Some(ino) = proc.netns_inode(&format!("{pid}/ns/net")) {
            per_ns.entry(ino).or_insert(pid);
        }
    }
    let mut alloc = None;
    let mut inuse = 0u64;
    for pid in per_ns.values() {
        let Some((a, u)) = sockstat_tcp(proc, *pid) else {
            continue;
        };
        alloc = Some(a);
        inuse += u;
    }
    // Namespaces no process is in, kept by a bind mount (`ip netns add`,
    // CNI plugins): their hashed sockets count in `alloc` too. One that
    // cannot be read leaves the count unknown rather than too high.
    if proc.path() == Path::new("/proc") {
        for (ino, path) in mounted_netns(proc) {
            if !per_ns.contains_key(&ino) {
                inuse += sockstat_tcp_in(path, ino)?.1;
            }
        }
    }
    Some(alloc?.saturating_sub(inuse))
}

/// Network namespaces bind-mounted in our mount namespace: (nsfs inode,
/// mount point), from `/proc/self/mountinfo` (proc(5): the root field of
/// an nsfs mount is `net:[INODE]`).
fn mounted_netns(proc: &ProcFs) -> Vec<(u64, PathBuf)> {
    const CAP: usize = 16 * 1024 * 1024;
    let Ok(info) = proc.read("self/mountinfo", CAP) else {
        return Vec::new();
    };
    parse_mounted_netns(&info.text())
}

/// The nsfs `net:[INODE]` mounts of a mountinfo text.
fn parse_mounted_netns(text: &str) -> Vec<(u64, PathBuf)> {
    let mut out: Vec<(u64, PathBuf)> = Vec::new();
    for m in super::fsread::mounts(text).filter(|m| m.fstype == "nsfs") {
        let Some(ino) = m
            .root
            .strip_prefix("net:[")
            .and_then(|r| r.strip_suffix(']'))
            .and_then(|r| r.parse().ok())
        else {
            continue;
        };
        if !out.iter().any(|(i, _)| *i == ino) {
            out.push((ino, PathBuf::from(m.point)));
        }
    }
    out
}

/// `alloc` and `inuse` of TCP in the namespace mounted at `path`, read on
/// a thread that entered it (needs CAP_SYS_ADMIN).
fn sockstat_tcp_in(path: PathBuf, inode: u64) -> Option<(u64, u64)> {
    let target = super::netns::Target {
        info: crate::model::NetnsInfo {
            name: path.display().to_string(),
            inode,
            pod_uid: None,
            container: None,
        },
        path,
    };
    super::netns::run_in(&target, || {
        let proc = ProcFs::open(Path::new("/proc"));
        let c = proc.read("thread-self/net/sockstat", 4096)?;
        parse_sockstat_tcp(&c.text()).ok_or_else(|| anyhow::anyhow!("no TCP line"))
    })
    .ok()
}

/// `alloc` and `inuse` of the `TCP:` line of `/proc/PID/net/sockstat`.
pub fn sockstat_tcp(proc: &ProcFs, pid: u32) -> Option<(u64, u64)> {
    let c = proc.read(&format!("{pid}/net/sockstat"), 4096).ok()?;
    parse_sockstat_tcp(&c.text())
}

/// `alloc` and `inuse` of the `TCP:` line of a sockstat text (parsed by
/// the one sockstat parser, [`super::counters::parse_sockstat`]).
pub fn parse_sockstat_tcp(text: &str) -> Option<(u64, u64)> {
    let all = super::counters::parse_sockstat(text);
    Some((
        *all.get("sockstat.TCP.alloc")?,
        *all.get("sockstat.TCP.inuse")?,
    ))
}

/// A process with socket fds that no table of the namespace knows.
pub struct Candidate {
    pub pid: u32,
    pub comm: String,
    /// (fd, inode) of those sockets.
    pub fds: Vec<(u32, u32)>,
}

/// Every process in the network namespace `netns` (its nsfs inode) but
/// those in `skip`: its socket fds whose inode is not in `known`.
pub fn sweep(
    proc: &ProcFs,
    netns: u64,
    known: &FxHashSet<u64>,
    skip: &HashSet<u32>,
) -> Vec<Candidate> {
    let mut out = Vec::new();
    for pid in proc.pids() {
        if skip.contains(&pid) {
            continue;
        }
        if proc.netns_inode(&format!("{pid}/ns/net")) != Some(netns) {
            continue;
        }
        let Some(mut fds) = proc.socket_fds(pid) else {
            continue;
        };
        fds.retain(|(_, ino)| !known.contains(&u64::from(*ino)));
        if fds.is_empty() {
            continue;
        }
        let comm = proc.comm(pid).unwrap_or_default();
        out.push(Candidate { pid, comm, fds });
    }
    out
}

/// The nsfs inode of the calling thread's network namespace.
pub fn current_netns(proc: &ProcFs) -> Option<u64> {
    proc.netns_inode("thread-self/ns/net")
        .or_else(|| proc.netns_inode("self/ns/net"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_tcp_line_of_sockstat() {
        let text =
            "sockets: used 290\nTCP: inuse 4 orphan 0 tw 4 alloc 17 mem 1\nUDP: inuse 2 mem 1\n";
        assert_eq!(parse_sockstat_tcp(text), Some((17, 4)));
        assert_eq!(parse_sockstat_tcp("UDP: inuse 2\n"), None);
        assert_eq!(parse_sockstat_tcp("TCP: inuse x alloc 3\n"), None);
    }

    #[test]
    fn reads_network_namespace_mounts_from_mountinfo() {
        let text = "46 45 0:4 net:[4026532240] /run/netns/a rw shared:2 - nsfs nsfs rw\n\
                    47 45 0:4 net:[4026532240] /var/run/netns/a rw - nsfs nsfs rw\n\
                    48 45 0:4 mnt:[4026532241] /run/x rw - nsfs nsfs rw\n\
                    49 45 0:4 net:[4026532300] /run/netns/with\\040space rw - nsfs nsfs rw\n\
                    50 45 0:5 / /proc rw - proc proc rw\n\
                    garbage\n";
        assert_eq!(
            parse_mounted_netns(text),
            [
                (4026532240, PathBuf::from("/run/netns/a")),
                (4026532300, PathBuf::from("/run/netns/with space")),
            ]
        );
    }

    /// TCP sockets hashed in a namespace that no process is in (only an
    /// `ip netns add` mount keeps it) are not counted as unhashed: 200
    /// listeners made there by a thread of this process, which itself
    /// stays in its own namespace.
    #[test]
    fn sockets_of_a_namespace_only_a_mount_keeps_are_not_unhashed() {
        if !rustix::process::geteuid().is_root() {
            crate::testutil::skip("making a network namespace needs root");
            return;
        }
        let name = format!("cwstale-{}", std::process::id());
        let ok = std::process::Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            crate::testutil::skip("`ip netns add` failed (iproute2 missing?)");
            return;
        }
        let path = PathBuf::from(format!("/run/netns/{name}"));
        let listeners = {
            let path = path.clone();
            std::thread::spawn(move || {
                let f = std::fs::File::open(&path).unwrap();
                rustix::thread::move_into_link_name_space(
                    std::os::fd::AsFd::as_fd(&f),
                    Some(rustix::thread::LinkNameSpaceType::Network),
                )
                .unwrap();
                (0..200)
                    .map(|_| std::net::TcpListener::bind("0.0.0.0:0").unwrap())
                    .collect::<Vec<_>>()
            })
            .join()
            .unwrap()
        };
        let proc = ProcFs::open(Path::new("/proc"));
        let unhashed = count_unhashed(&proc);
        let inside = sockstat_tcp_in(path, 0);
        drop(listeners);
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &name])
            .status();
        assert!(inside.is_some_and(|(_, inuse)| inuse >= 200), "{inside:?}");
        // Other tests of this binary may hold a few sockets in passing.
        assert!(unhashed.is_some_and(|n| n < 100), "{unhashed:?}");
    }

    /// A fixture /proc: pids 10 and 11 share one namespace (one `ns/net`
    /// inode, a hard link), pid 20 has its own. `alloc` is host-wide; each
    /// namespace's `inuse` counts once however many of its pids are read.
    #[test]
    fn unhashed_is_alloc_minus_inuse_of_each_namespace_once() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let sockstat = |inuse: u64| {
            format!("sockets: used 9\nTCP: inuse {inuse} orphan 0 tw 0 alloc 40 mem 1\n")
        };
        for (pid, inuse) in [(10, 7), (11, 7), (20, 20)] {
            std::fs::create_dir_all(r.join(format!("{pid}/ns"))).unwrap();
            std::fs::create_dir_all(r.join(format!("{pid}/net"))).unwrap();
            std::fs::write(r.join(format!("{pid}/net/sockstat")), sockstat(inuse)).unwrap();
        }
        std::fs::write(r.join("10/ns/net"), "a").unwrap();
        std::fs::hard_link(r.join("10/ns/net"), r.join("11/ns/net")).unwrap();
        std::fs::write(r.join("20/ns/net"), "b").unwrap();
        std::fs::create_dir(r.join("self")).unwrap(); // not a pid: ignored
        assert_eq!(count_unhashed(&ProcFs::open(r)), Some(40 - 7 - 20));
        // Without any readable sockstat there is no answer, not a zero.
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(count_unhashed(&ProcFs::open(empty.path())), None);
    }
}
