//! Who an owner is: command line, executable, user, parent and start
//! time, read from `/proc/PID/{cmdline,exe,status,stat}` for the owners a
//! report names (never for every process the attribution walk visits).
//!
//! Reading another process's `cmdline` reads its memory (`get_mm_cmdline`
//! in `fs/proc/base.c`), which waits while that process's memory map is
//! locked, and a user lookup may ask a directory service: the reads run on
//! a helper thread that the collection waits for a bounded time only.

use super::procfs::ProcFs;
use crate::model::{CMDLINE_MAX, Process};
use procfs_core::{FromBufReadSI, FromRead};
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

/// How long the collection waits for the owners' details.
pub const DEADLINE: Duration = Duration::from_secs(2);

/// Largest `/proc/PID/status` and `/proc/PID/stat` read (the kernel's are
/// a few KB; a fake `--proc-root` may hold anything).
const SMALL_FILE_MAX: usize = 16 * 1024;
/// Largest `/proc/stat` read: the `intr` line of a big host is long, and
/// `btime` comes after it.
const PROC_STAT_MAX: usize = 1024 * 1024;

/// What is learnt of one process.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Identity {
    pub cmdline: Option<Vec<String>>,
    pub cmdline_truncated: bool,
    pub exe: Option<String>,
    pub uid: Option<u32>,
    pub user: Option<String>,
    pub ppid: Option<u32>,
    pub started_at_ms: Option<u64>,
}

impl Identity {
    /// Writes what is known into `p`.
    pub fn apply(self, p: &mut Process) {
        p.cmdline = self.cmdline;
        p.cmdline_truncated = self.cmdline_truncated;
        p.exe = self.exe;
        p.uid = self.uid;
        p.user = self.user;
        p.ppid = self.ppid;
        p.started_at_ms = self.started_at_ms;
    }
}

/// Runs `f` on a helper thread and waits at most `limit` for it. `None`
/// when it takes longer: the thread is left to finish on its own.
pub fn within<T: Send + 'static>(
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("cwdiag-procinfo".into())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .ok()?;
    rx.recv_timeout(limit).ok()
}

/// The details of `pids` under `proc_root`, read within [`DEADLINE`];
/// `None` when that was not enough.
pub fn identify(proc_root: &Path, pids: Vec<u32>) -> Option<Vec<(u32, Identity)>> {
    identify_in(ProcFs::open(proc_root), pids)
}

/// [`identify`], reading `proc`.
pub fn identify_in(proc: ProcFs, pids: Vec<u32>) -> Option<Vec<(u32, Identity)>> {
    within(DEADLINE, move || {
        if !proc.is_open() {
            return Vec::new();
        }
        let clock = Clock::read(&proc);
        let mut users = Users::default();
        pids.into_iter()
            .map(|pid| (pid, read(&proc, pid, &clock, &mut users)))
            .collect()
    })
}

/// What turns a start tick into a time.
struct Clock {
    boot_secs: Option<u64>,
    ticks_per_second: u64,
}

impl Clock {
    fn read(proc: &ProcFs) -> Clock {
        let ticks_per_second = rustix::param::clock_ticks_per_second().max(1);
        let info = procfs_core::ExplicitSystemInfo {
            boot_time_secs: 0,
            ticks_per_second,
            page_size: 4096,
            is_little_endian: cfg!(target_endian = "little"),
        };
        let boot_secs = proc
            .read("stat", PROC_STAT_MAX)
            .ok()
            .and_then(|c| procfs_core::KernelStats::from_buf_read(&c.bytes[..], &info).ok())
            .map(|k| k.btime);
        Clock {
            boot_secs,
            ticks_per_second,
        }
    }

    /// Milliseconds since the epoch of a `starttime` (clock ticks after
    /// boot, field 22 of `/proc/PID/stat`, see proc_pid_stat(5)).
    fn at(&self, start_ticks: u64) -> Option<u64> {
        let boot_ms = self.boot_secs?.checked_mul(1000)?;
        let after_ms = u128::from(start_ticks) * 1000 / u128::from(self.ticks_per_second);
        boot_ms.checked_add(u64::try_from(after_ms).ok()?)
    }
}

/// User names by uid, looked up once each (getpwuid_r(3)).
#[derive(Default)]
struct Users(HashMap<u32, Option<String>>);

impl Users {
    fn name(&mut self, uid: u32) -> Option<String> {
        self.0
            .entry(uid)
            .or_insert_with(|| {
                nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
                    .ok()
                    .flatten()
                    .map(|u| u.name)
            })
            .clone()
    }
}

fn read(proc: &ProcFs, pid: u32, clock: &Clock, users: &mut Users) -> Identity {
    let mut id = Identity::default();
    if proc.pid_dir(pid).is_err() {
        return id;
    }
    if let Ok(c) = proc.read(&format!("{pid}/cmdline"), CMDLINE_MAX) {
        // Kernel threads have an empty command line: leave it unknown.
        id.cmdline = Some(split_cmdline(&c.bytes)).filter(|a| !a.is_empty());
        id.cmdline_truncated = c.truncated && id.cmdline.is_some();
    }
    id.exe = proc.link(&format!("{pid}/exe"));
    if let Ok(c) = proc.read(&format!("{pid}/status"), SMALL_FILE_MAX)
        && let Ok(st) = procfs_core::process::Status::from_read(&c.bytes[..])
    {
        id.uid = Some(st.euid);
        id.ppid = u32::try_from(st.ppid).ok();
        id.user = users.name(st.euid);
    }
    if let Ok(c) = proc.read(&format!("{pid}/stat"), SMALL_FILE_MAX)
        && let Ok(st) = procfs_core::process::Stat::from_read(&c.bytes[..])
    {
        id.started_at_ms = clock.at(st.starttime);
        id.ppid = id.ppid.or(u32::try_from(st.ppid).ok());
    }
    id
}

/// argv from the NUL-separated `cmdline`; NULs a process left after
/// rewriting its arguments (a title) are dropped.
pub fn split_cmdline(bytes: &[u8]) -> Vec<String> {
    let mut args: Vec<String> = bytes
        .split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    while args.last().is_some_and(String::is_empty) {
        args.pop();
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_command_lines() {
        assert_eq!(
            split_cmdline(b"java\0-jar\0a.jar\0"),
            ["java", "-jar", "a.jar"]
        );
        assert_eq!(
            split_cmdline(b"nginx: worker process\0\0\0\0"),
            ["nginx: worker process"]
        );
        assert_eq!(
            split_cmdline(b"a\0\0b\0"),
            ["a", "", "b"],
            "an empty argument stays"
        );
        assert!(split_cmdline(b"").is_empty());
    }

    #[test]
    fn start_ticks_become_epoch_ms() {
        let c = Clock {
            boot_secs: Some(1_700_000_000),
            ticks_per_second: 100,
        };
        assert_eq!(c.at(250), Some(1_700_000_002_500));
        let unknown = Clock {
            boot_secs: None,
            ticks_per_second: 100,
        };
        assert_eq!(unknown.at(250), None);
    }

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        let got = identify(Path::new("/proc"), vec![me]).expect("within the deadline");
        let (pid, id) = &got[0];
        assert_eq!(*pid, me);
        let exe = std::env::current_exe().unwrap();
        assert_eq!(id.exe.as_deref(), exe.to_str());
        let argv: Vec<String> = std::env::args().collect();
        assert_eq!(id.cmdline.as_ref(), Some(&argv));
        let euid = rustix::process::geteuid().as_raw();
        let ppid = rustix::process::getppid().map(|p| p.as_raw_nonzero().get() as u32);
        assert_eq!((id.uid, id.ppid), (Some(euid), ppid));
        let started = id.started_at_ms.expect("start time");
        let now = crate::collect::now_ms();
        assert!(
            started <= now + 1000 && now - started < 3_600_000,
            "{started} {now}"
        );
        if euid == 0 {
            assert_eq!(id.user.as_deref(), Some("root"));
        }
    }

    #[test]
    fn long_command_lines_are_cut_and_marked() {
        let dir = tempfile::tempdir().unwrap();
        let pid_dir = dir.path().join("42");
        std::fs::create_dir(&pid_dir).unwrap();
        let long = "x".repeat(CMDLINE_MAX + 100);
        std::fs::write(pid_dir.join("cmdline"), format!("prog\0{long}\0")).unwrap();
        let got = identify(dir.path(), vec![42]).unwrap();
        let id = &got[0].1;
        assert!(id.cmdline_truncated);
        let args = id.cmdline.as_ref().unwrap();
        assert_eq!(args[0], "prog");
        assert_eq!(args[1].len(), CMDLINE_MAX - 5);
        assert_eq!(
            (id.exe.as_ref(), id.uid),
            (None, None),
            "absent files stay unknown"
        );
    }
}
