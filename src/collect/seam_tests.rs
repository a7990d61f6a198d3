//! The collection steps above the kernel seam, run against a recorded
//! dump ([`Recorded`], `fixtures/workload.ss-dump`) and a fixture proc
//! tree in a temporary directory: no root, no netlink, no real processes.

use super::kernel::{Kernel, Recorded};
use super::netns::Target;
use super::sockdiag::{Dump, DumpRequest, Recorder};
use super::{Plan, multi};
use crate::model::{NetnsInfo, Socket, TcpState};
use anyhow::Result;
use rustc_hash::FxHashSet;
use std::path::Path;

const DUMP: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/fixtures/workload.ss-dump"
));

/// A `/proc/PID/limits` as Linux writes it (fs/proc/base.c, proc_pid_limits).
const LIMITS: &str = "\
Limit                     Soft Limit           Hard Limit           Units     \n\
Max cpu time              unlimited            unlimited            seconds   \n\
Max file size             unlimited            unlimited            bytes     \n\
Max data size             unlimited            unlimited            bytes     \n\
Max stack size            8388608              unlimited            bytes     \n\
Max core file size        0                    unlimited            bytes     \n\
Max resident set          unlimited            unlimited            bytes     \n\
Max processes             96367                96367                processes \n\
Max open files            1024                 4096                 files     \n\
Max locked memory         8388608              8388608              bytes     \n\
Max address space         unlimited            unlimited            bytes     \n\
Max file locks            unlimited            unlimited            locks     \n\
Max pending signals       96367                96367                signals   \n\
Max msgqueue size         819200               819200               bytes     \n\
Max nice priority         0                    0                    \n\
Max realtime priority     0                    0                    \n\
Max realtime timeout      unlimited            unlimited            us        \n\
";

fn recorded_sockets() -> Vec<Socket> {
    super::replay::from_bytes(DUMP, "workload.ss-dump", None)
        .expect("the fixture replays")
        .sockets
}

/// A `/proc` made of plain files and symlinks: `PID/fd/N -> socket:[I]`,
/// `PID/comm`, `PID/cmdline`, `PID/limits`.
struct FakeProc {
    dir: tempfile::TempDir,
}

impl FakeProc {
    fn new() -> FakeProc {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("net")).unwrap();
        FakeProc { dir }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Process `pid` named `comm` holding socket inode `ino` at fd `fd`
    /// for each `(fd, ino)`.
    fn process(&self, pid: u32, comm: &str, fds: &[(u32, u32)]) {
        let p = self.root().join(pid.to_string());
        std::fs::create_dir_all(p.join("fd")).unwrap();
        std::fs::write(p.join("comm"), format!("{comm}\n")).unwrap();
        std::fs::write(p.join("cmdline"), format!("{comm}\0--serve\0")).unwrap();
        std::fs::write(p.join("limits"), LIMITS).unwrap();
        for &(fd, ino) in fds {
            std::os::unix::fs::symlink(
                format!("socket:[{ino}]"),
                p.join("fd").join(fd.to_string()),
            )
            .unwrap();
        }
        // An open file that is not a socket.
        std::os::unix::fs::symlink("/dev/null", p.join("fd").join("0")).unwrap();
    }

    fn plan(&self) -> Plan {
        let mut plan = Plan::new(&[]);
        plan.proc_root = self.root().to_path_buf();
        plan
    }
}

fn in_state(sockets: &[Socket], state: TcpState) -> Vec<&Socket> {
    sockets.iter().filter(|s| s.state == state).collect()
}

/// The owners of the recording's CLOSE_WAIT and LISTEN sockets: pid 4100
/// holds the listeners and the first CLOSE_WAIT half, pid 4200 the rest.
fn owners_of_recording(proc: &FakeProc, sockets: &[Socket]) -> (Vec<u32>, Vec<u32>) {
    let mut mine: Vec<u32> = in_state(sockets, TcpState::Listen)
        .iter()
        .map(|s| s.inode)
        .collect();
    let cw: Vec<u32> = in_state(sockets, TcpState::CloseWait)
        .iter()
        .map(|s| s.inode)
        .collect();
    let (a, b) = cw.split_at(cw.len() / 2);
    mine.extend_from_slice(a);
    let fds = |inodes: &[u32]| -> Vec<(u32, u32)> {
        inodes
            .iter()
            .enumerate()
            .map(|(i, &ino)| (3 + i as u32, ino))
            .collect()
    };
    proc.process(4100, "server", &fds(&mine));
    proc.process(4200, "worker", &fds(b));
    (mine, b.to_vec())
}

#[test]
fn the_split_dump_gives_every_recorded_socket_once_with_its_owner() {
    let sockets = recorded_sockets();
    assert_eq!(in_state(&sockets, TcpState::CloseWait).len(), 18);
    let proc = FakeProc::new();
    let (first, second) = owners_of_recording(&proc, &sockets);
    let kernel = Recorded::from_dump(DUMP, "workload.ss-dump").unwrap();
    let plan = proc.plan();
    assert!(plan.parallel, "the default plan dumps on both cores");
    let snap = super::live_from(&kernel, &plan, None).unwrap();

    let cookies = |v: &[Socket]| {
        let mut c: Vec<u64> = v.iter().map(|s| s.cookie).collect();
        c.sort_unstable();
        c
    };
    assert_eq!(
        cookies(&snap.sockets),
        cookies(&sockets),
        "each socket once"
    );
    for s in &snap.sockets {
        let want = if first.contains(&s.inode) {
            Some(4100)
        } else if second.contains(&s.inode) {
            Some(4200)
        } else {
            None
        };
        assert_eq!(s.pid, want, "{:?} {}", s.state, s.inode);
    }
    assert_eq!(snap.attribution.wanted_sockets, first.len() + second.len());
    assert_eq!(snap.attribution.found_sockets, first.len() + second.len());
    assert_eq!(snap.processes[&4100].comm, "server");
    assert_eq!(snap.processes[&4200].nofile_soft, Some(1024));
    assert_eq!(
        snap.processes[&4200].cmdline.as_deref(),
        Some(&["worker".to_string(), "--serve".to_string()][..])
    );
}

/// The recording, but the bulk (ESTABLISHED, TIME_WAIT) dump also reports
/// `moved`, a socket that left ESTABLISHED while the dump ran, and a
/// socket the other dump reported too.
struct Racing {
    inner: Recorded,
    moved: Socket,
    twice: Socket,
}

impl Kernel for Racing {
    fn dump(&self, req: &DumpRequest, cap: usize, rec: Option<Recorder<'_>>) -> Result<Dump> {
        let mut d = self.inner.dump(req, cap, rec)?;
        if req.states & TcpState::Established.mask_bit() != 0
            && req.states & TcpState::CloseWait.mask_bit() == 0
        {
            for s in [&self.moved, &self.twice] {
                d.sockets.push(s.clone());
            }
        }
        Ok(d)
    }

    fn socket_inodes(&self, req: &DumpRequest) -> Result<FxHashSet<u32>> {
        self.inner.socket_inodes(req)
    }

    fn enter(&self, target: &Target) -> Result<(), String> {
        self.inner.enter(target)
    }
}

#[test]
fn a_socket_that_changed_state_during_the_dump_is_kept_once_and_its_owner_found() {
    let sockets = recorded_sockets();
    let proc = FakeProc::new();
    owners_of_recording(&proc, &sockets);
    let mut moved = in_state(&sockets, TcpState::Established)[0].clone();
    moved.state = TcpState::CloseWait;
    moved.cookie = u64::MAX - 1;
    moved.inode = 990_001;
    proc.process(4300, "late", &[(7, 990_001)]);
    let twice = in_state(&sockets, TcpState::CloseWait)[0].clone();
    // The bulk dump's copy, read a moment later, tells itself apart.
    let mut later = twice.clone();
    later.recv_q = twice.recv_q + 12_345;
    let kernel = Racing {
        inner: Recorded::from_dump(DUMP, "workload.ss-dump").unwrap(),
        moved,
        twice: later,
    };
    let snap = super::live_from(&kernel, &proc.plan(), None).unwrap();
    assert_eq!(snap.sockets.len(), sockets.len() + 1);
    let seen: Vec<&Socket> = snap
        .sockets
        .iter()
        .filter(|s| s.cookie == twice.cookie)
        .collect();
    assert_eq!(seen.len(), 1, "the socket both dumps saw is kept once");
    assert_eq!(seen[0].recv_q, twice.recv_q, "the attributed dump's copy");
    assert_eq!(seen[0].pid, Some(4100));
    let late = snap.sockets.iter().find(|s| s.inode == 990_001).unwrap();
    assert_eq!((late.pid, late.fd), (Some(4300), Some(7)));
    assert_eq!(snap.processes[&4300].comm, "late");
}

#[test]
fn socket_fds_in_no_table_are_stale_unless_a_second_look_finds_them() {
    let sockets = recorded_sockets();
    let proc = FakeProc::new();
    let cw = in_state(&sockets, TcpState::CloseWait)[0].inode;
    // 880001: in no table, then or now (stale); 880002: opened after the
    // dump, in the second look (live); 880003: an fd closed before the
    // recheck reads it again (gone).
    proc.process(
        4100,
        "server",
        &[(3, cw), (4, 880_001), (5, 880_002), (6, 880_003)],
    );
    let mut newer = sockets.clone();
    let mut fresh = in_state(&sockets, TcpState::Established)[0].clone();
    fresh.inode = 880_002;
    fresh.cookie = u64::MAX - 2;
    newer.push(fresh);
    let kernel = Recorded::from_dump(DUMP, "workload.ss-dump")
        .unwrap()
        .then(0, newer);

    /// Removes fd 6 of pid 4100 when the recheck runs.
    struct Closing<'a>(&'a Recorded, &'a Path);
    impl Kernel for Closing<'_> {
        fn dump(&self, r: &DumpRequest, c: usize, rec: Option<Recorder<'_>>) -> Result<Dump> {
            self.0.dump(r, c, rec)
        }
        fn socket_inodes(&self, req: &DumpRequest) -> Result<FxHashSet<u32>> {
            std::fs::remove_file(self.1.join("4100/fd/6")).unwrap();
            self.0.socket_inodes(req)
        }
        fn enter(&self, t: &Target) -> Result<(), String> {
            self.0.enter(t)
        }
    }
    let snap = super::live_from(&Closing(&kernel, proc.root()), &proc.plan(), None).unwrap();
    let p = &snap.processes[&4100];
    assert_eq!(p.stale_socket_fds, Some(1), "{p:?}");
    assert_eq!(p.stale_socket_inodes, vec![880_001]);

    // Without a second look (it fails), what the walk saw is reported.
    struct Blind<'a>(&'a Recorded);
    impl Kernel for Blind<'_> {
        fn dump(&self, r: &DumpRequest, c: usize, rec: Option<Recorder<'_>>) -> Result<Dump> {
            self.0.dump(r, c, rec)
        }
        fn socket_inodes(&self, _: &DumpRequest) -> Result<FxHashSet<u32>> {
            anyhow::bail!("no second look")
        }
        fn enter(&self, t: &Target) -> Result<(), String> {
            self.0.enter(t)
        }
    }
    let proc = FakeProc::new();
    proc.process(4100, "server", &[(3, cw), (4, 880_001), (5, 880_002)]);
    let snap = super::live_from(&Blind(&kernel), &proc.plan(), None).unwrap();
    let p = &snap.processes[&4100];
    assert_eq!(p.stale_socket_fds, Some(2), "{p:?}");
}

#[test]
fn namespaces_are_dumped_apart_and_attributed_by_one_walk() {
    let sockets = recorded_sockets();
    let proc = FakeProc::new();
    // Namespace 11 holds the recording; namespace 12 one CLOSE_WAIT
    // socket of its own, owned by pid 4500; namespace 13 is gone.
    owners_of_recording(&proc, &sockets);
    let mut other = in_state(&sockets, TcpState::CloseWait)[0].clone();
    other.inode = 770_001;
    other.cookie = 1;
    proc.process(4500, "sidecar", &[(9, 770_001)]);
    let kernel = Recorded::with(11, sockets.clone()).namespace(12, vec![other]);
    let target = |inode: u64, name: &str| Target {
        path: proc.root().join(format!("ns-{inode}")),
        info: NetnsInfo {
            name: name.to_string(),
            inode,
            pod_uid: None,
            container: None,
        },
    };
    let targets = [target(11, "app"), target(12, "side"), target(13, "gone")];
    let c = multi::live_from(&kernel, &proc.plan(), &targets);
    assert_eq!(c.snapshots.len(), 2, "{:?}", c.warnings);
    assert_eq!(c.warnings.len(), 1);
    assert!(c.warnings[0].contains("gone"), "{:?}", c.warnings);
    let (app, side) = (&c.snapshots[0], &c.snapshots[1]);
    assert_eq!(app.netns.as_ref().unwrap().name, "app");
    assert_eq!(app.sockets.len(), sockets.len());
    assert!(app.processes.contains_key(&4100) && app.processes.contains_key(&4200));
    assert!(!app.processes.contains_key(&4500), "only its own owners");
    assert_eq!(side.sockets.len(), 1);
    assert_eq!(side.sockets[0].pid, Some(4500));
    assert_eq!(
        side.processes.keys().copied().collect::<Vec<_>>(),
        vec![4500]
    );
    assert_eq!(
        (
            side.attribution.wanted_sockets,
            side.attribution.found_sockets
        ),
        (1, 1)
    );
}
