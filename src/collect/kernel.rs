//! What collection asks of the kernel, as one seam: sock_diag dumps (per
//! state mask, port filter and whether to ask for `tcp_info`), the socket
//! inodes of a second look at the table, and entering a network namespace.
//! [`Netlink`] answers from the running kernel; [`Recorded`] answers from
//! sockets read out of a recording (the `ss -D` format), so the collection
//! steps above it (the dump merge, the late owner lookup, the stale-fd
//! recheck, the namespace fan-out) run without root and without a kernel.

use super::netns::Target;
use super::sockdiag::{self, Dump, DumpRequest, Recorder};
use crate::model::Socket;
use anyhow::Result;
use rustc_hash::FxHashSet;
use rustix::thread::{LinkNameSpaceType, move_into_link_name_space};
use std::collections::BTreeMap;
use std::os::fd::AsFd;

/// The kernel as collection sees it. Implementations are shared between
/// the worker threads of one scan.
pub trait Kernel: Sync {
    /// The TCP sockets in the states of `req` (both address families),
    /// `capacity` the expected count; `record` gets every raw reply.
    fn dump(
        &self,
        req: &DumpRequest,
        capacity: usize,
        record: Option<Recorder<'_>>,
    ) -> Result<Dump>;

    /// The inodes of the sockets in the states of `req` as they are now
    /// (a second look, without keeping the sockets).
    fn socket_inodes(&self, req: &DumpRequest) -> Result<FxHashSet<u32>>;

    /// Moves the calling thread into `target`'s network namespace; the
    /// message says whether it is gone or could not be entered.
    fn enter(&self, target: &Target) -> Result<(), String>;
}

/// The running kernel: `NETLINK_SOCK_DIAG` and `setns(2)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Netlink;

impl Kernel for Netlink {
    fn dump(
        &self,
        req: &DumpRequest,
        capacity: usize,
        record: Option<Recorder<'_>>,
    ) -> Result<Dump> {
        sockdiag::dump(req, capacity, record)
    }

    fn socket_inodes(&self, req: &DumpRequest) -> Result<FxHashSet<u32>> {
        sockdiag::socket_inodes(req)
    }

    fn enter(&self, target: &Target) -> Result<(), String> {
        enter(target)
    }
}

/// Moves the calling thread into `target`'s network namespace. The
/// message says whether the namespace is gone or could not be entered.
fn enter(target: &Target) -> Result<(), String> {
    let name = &target.info.name;
    let gone = || {
        format!(
            "network namespace {name} vanished during the scan ({} no longer names it): not reported",
            target.path.display()
        )
    };
    let file = match std::fs::File::open(&target.path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(gone()),
        // The process whose /proc/PID/ns/net it was has exited.
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::SRCH.raw_os_error()) => {
            return Err(gone());
        }
        Err(e) => {
            return Err(format!(
                "cannot open network namespace {name} ({}): {e}",
                target.path.display()
            ));
        }
    };
    // The path may name something else now: an unmounted handle file, or
    // a reused pid in another namespace.
    match rustix::fs::fstat(&file) {
        Ok(st) if st.st_ino == target.info.inode => {}
        _ => return Err(gone()),
    }
    move_into_link_name_space(file.as_fd(), Some(LinkNameSpaceType::Network)).map_err(|e| match e {
        rustix::io::Errno::INVAL => gone(),
        rustix::io::Errno::PERM => {
            format!("cannot enter network namespace {name}: {e} (needs root or CAP_SYS_ADMIN)")
        }
        _ => format!("cannot enter network namespace {name}: {e}"),
    })
}

/// A kernel made of recorded sockets, one table per network namespace
/// (keyed by namespace inode; inode 0 is the caller's own). A dump answers
/// with the sockets of the thread's current namespace that match the
/// request, as the kernel's filter would; [`Recorded::then`] sets what a
/// later look at a table sees (sockets opened or closed since the dump).
#[derive(Debug, Default, Clone)]
pub struct Recorded {
    tables: BTreeMap<u64, Vec<Socket>>,
    later: BTreeMap<u64, Vec<Socket>>,
}

thread_local! {
    /// The namespace the calling thread entered through [`Recorded`].
    static ENTERED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

impl Recorded {
    /// The sockets of one recording (`scan --record`, `ss -D`) as the
    /// caller's namespace.
    pub fn from_dump(bytes: &[u8], name: &str) -> Result<Recorded> {
        let snap = super::replay::from_bytes(bytes, name, None)?;
        Ok(Recorded::with(0, snap.sockets))
    }

    /// A kernel whose namespace `netns` holds `sockets`.
    pub fn with(netns: u64, sockets: Vec<Socket>) -> Recorded {
        Recorded::default().namespace(netns, sockets)
    }

    /// Adds the namespace `netns` holding `sockets`.
    pub fn namespace(mut self, netns: u64, sockets: Vec<Socket>) -> Recorded {
        self.tables.insert(netns, sockets);
        self
    }

    /// What a second look at namespace `netns` sees.
    pub fn then(mut self, netns: u64, sockets: Vec<Socket>) -> Recorded {
        self.later.insert(netns, sockets);
        self
    }

    fn current() -> u64 {
        ENTERED.with(|c| c.get())
    }

    fn matching<'a>(
        sockets: &'a [Socket],
        req: &'a DumpRequest,
    ) -> impl Iterator<Item = &'a Socket> + 'a {
        sockets.iter().filter(move |s| {
            req.states & s.state.mask_bit() != 0
                && (req.ports.is_empty()
                    || req.ports.contains(&s.local.port())
                    || req.ports.contains(&s.peer.port()))
        })
    }
}

impl Kernel for Recorded {
    fn dump(
        &self,
        req: &DumpRequest,
        capacity: usize,
        _record: Option<Recorder<'_>>,
    ) -> Result<Dump> {
        let Some(table) = self.tables.get(&Recorded::current()) else {
            anyhow::bail!("no recorded table for this network namespace");
        };
        let mut out = Dump::default();
        out.sockets.reserve(capacity);
        let mut seen = FxHashSet::default();
        for s in Recorded::matching(table, req) {
            if seen.insert(s.cookie) {
                let mut s = s.clone();
                if !req.tcp_info {
                    s.tcp_info = None;
                }
                out.sockets.push(s);
            }
        }
        Ok(out)
    }

    fn socket_inodes(&self, req: &DumpRequest) -> Result<FxHashSet<u32>> {
        let ns = Recorded::current();
        let Some(table) = self.later.get(&ns).or_else(|| self.tables.get(&ns)) else {
            anyhow::bail!("no recorded table for this network namespace");
        };
        Ok(Recorded::matching(table, req)
            .map(|s| s.inode)
            .filter(|&i| i != 0)
            .collect())
    }

    fn enter(&self, target: &Target) -> Result<(), String> {
        let ns = target.info.inode;
        if !self.tables.contains_key(&ns) {
            return Err(format!(
                "network namespace {} vanished during the scan: not reported",
                target.info.name
            ));
        }
        ENTERED.with(|c| c.set(ns));
        Ok(())
    }
}
