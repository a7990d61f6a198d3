//! What a process's threads are doing, sampled a few times: the state in
//! `/proc/PID/task/TID/stat`, the kernel function a sleeping thread
//! waits in (`wchan`), and the system call it is in with its first
//! argument (`syscall`, `proc_pid_syscall` in fs/proc/base.c; needs
//! ptrace access, so root or the process's own user). The fd that call
//! works on is resolved to its socket inode, which the rules match to a
//! connection in the snapshot. Only for processes a finding may call
//! stuck, a bounded number of them and of their threads.

use super::procfs::ProcFs;
use crate::model::{ThreadObservation, ThreadSample, ThreadSamples};
use std::collections::BTreeMap;
use std::time::Duration;

/// Rounds of sampling: at least [`MIN_SAMPLES`], then more while the rest
/// of the scan runs, up to [`SAMPLES`]; [`INTERVAL`] apart. A thread stuck
/// long enough to leave sockets in CLOSE_WAIT is in the same state in
/// every round; the rounds are there to tell a thread that is always on
/// the CPU (a busy loop) from one seen there once.
pub const SAMPLES: u32 = 10;
pub const MIN_SAMPLES: u32 = 5;
pub const INTERVAL: Duration = Duration::from_millis(1);
/// Processes sampled per snapshot (per namespace), in all for
/// `--all-netns`, and threads read per process.
pub const MAX_PROCESSES: usize = 8;
pub const MAX_PROCESSES_IN_ALL: usize = 32;
pub const MAX_THREADS: usize = 64;
/// Task entries counted at most (a process with more says "64 of 10000+").
const MAX_COUNTED: usize = 100_000;

/// One reading of one thread's three files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reading {
    pub state: String,
    pub wchan: Option<String>,
    pub syscall: Option<String>,
    pub fd: Option<u32>,
}

/// The state letter of a `stat` line: the field after the last `)` (the
/// comm in parentheses may itself hold `)` and spaces).
pub fn stat_state(stat: &str) -> Option<String> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().next().map(str::to_string)
}

/// A `syscall` file: `running`, `-1 SP PC` (in the kernel, not in a
/// system call), or `NR ARG1 .. ARG6 SP PC` with the arguments in hex.
/// Returns the call's name and the fd it works on, when it takes one.
pub fn parse_syscall(text: &str) -> (Option<String>, Option<u32>) {
    let mut f = text.split_whitespace();
    let Some(first) = f.next() else {
        return (None, None);
    };
    if first == "running" {
        return (Some("running".to_string()), None);
    }
    let Ok(nr) = first.parse::<i64>() else {
        return (None, None);
    };
    if nr < 0 {
        return (None, None);
    }
    let arg0 = f
        .next()
        .and_then(|a| u64::from_str_radix(a.trim_start_matches("0x"), 16).ok());
    let (name, takes_fd) = syscall_name(nr);
    let name = name
        .map(str::to_string)
        .unwrap_or_else(|| format!("syscall {nr}"));
    let fd = arg0
        .filter(|_| takes_fd)
        .and_then(|a| u32::try_from(a).ok())
        .filter(|&a| a < (1 << 30));
    (Some(name), fd)
}

/// The name of system call `nr` on this architecture, and whether its
/// first argument is a file descriptor.
fn syscall_name(nr: i64) -> (Option<&'static str>, bool) {
    #[cfg(target_arch = "x86_64")]
    const TABLE: &[(i64, &str, bool)] = &[
        (0, "read", true),
        (1, "write", true),
        (7, "poll", false),
        (17, "pread64", true),
        (19, "readv", true),
        (20, "writev", true),
        (23, "select", false),
        (34, "pause", false),
        (35, "nanosleep", false),
        (42, "connect", true),
        (43, "accept", true),
        (44, "sendto", true),
        (45, "recvfrom", true),
        (46, "sendmsg", true),
        (47, "recvmsg", true),
        (61, "wait4", false),
        (202, "futex", false),
        (230, "clock_nanosleep", false),
        (232, "epoll_wait", true),
        (270, "pselect6", false),
        (271, "ppoll", false),
        (281, "epoll_pwait", true),
        (288, "accept4", true),
        (299, "recvmmsg", true),
        (426, "io_uring_enter", true),
        (441, "epoll_pwait2", true),
    ];
    #[cfg(target_arch = "aarch64")]
    const TABLE: &[(i64, &str, bool)] = &[
        (22, "epoll_pwait", true),
        (63, "read", true),
        (64, "write", true),
        (65, "readv", true),
        (66, "writev", true),
        (67, "pread64", true),
        (72, "pselect6", false),
        (73, "ppoll", false),
        (98, "futex", false),
        (101, "nanosleep", false),
        (115, "clock_nanosleep", false),
        (202, "accept", true),
        (203, "connect", true),
        (206, "sendto", true),
        (207, "recvfrom", true),
        (211, "sendmsg", true),
        (212, "recvmsg", true),
        (242, "accept4", true),
        (243, "recvmmsg", true),
        (260, "wait4", false),
        (426, "io_uring_enter", true),
        (441, "epoll_pwait2", true),
    ];
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    const TABLE: &[(i64, &str, bool)] = &[];
    TABLE
        .iter()
        .find(|(n, _, _)| *n == nr)
        .map_or((None, false), |(_, name, fd)| (Some(*name), *fd))
}

/// `socket:[12345]` -> 12345.
pub fn socket_inode(link: &str) -> Option<u32> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// Reads one thread once; `None` when it is gone.
fn read_thread(proc: &ProcFs, task: &str) -> Option<Reading> {
    const CAP: usize = 4096;
    let stat = proc.read(&format!("{task}/stat"), CAP).ok()?.text();
    let state = stat_state(&stat)?;
    let wchan = proc
        .read(&format!("{task}/wchan"), 256)
        .ok()
        .map(|c| c.text().trim().to_string())
        .filter(|w| !w.is_empty() && w != "0");
    let (syscall, fd) = proc
        .read(&format!("{task}/syscall"), 512)
        .ok()
        .map(|c| parse_syscall(&c.text()))
        .unwrap_or((None, None));
    Some(Reading {
        state,
        wchan,
        syscall,
        fd,
    })
}

/// The thread ids of `pid` (the first [`MAX_THREADS`], lowest first) and
/// how many it has.
fn tasks(proc: &ProcFs, pid: u32) -> Option<(Vec<u32>, usize)> {
    // The task directory lists numbers, as an fd table does.
    let dir = proc.dir(&format!("{pid}/task")).ok()?;
    let mut tids = ProcFs::list_fds(&dir, 0)?;
    tids.truncate(MAX_COUNTED);
    let total = tids.len();
    tids.sort_unstable();
    tids.truncate(MAX_THREADS);
    Some((tids, total))
}

/// Samples the threads of `pids` (at most [`MAX_PROCESSES_IN_ALL`], in
/// the order given), all processes in the same rounds: [`MIN_SAMPLES`]
/// rounds, then more until `stop` is set or [`SAMPLES`] are taken.
pub fn sample(
    proc: &ProcFs,
    pids: &[u32],
    stop: &std::sync::atomic::AtomicBool,
) -> BTreeMap<u32, ThreadSamples> {
    struct Proc {
        pid: u32,
        total: usize,
        threads: Vec<(u32, String, Vec<Reading>)>,
        fds: BTreeMap<u32, Option<u32>>,
    }
    let mut procs: Vec<Proc> = pids
        .iter()
        .take(MAX_PROCESSES_IN_ALL)
        .filter_map(|&pid| {
            let (tids, total) = tasks(proc, pid)?;
            let threads = tids
                .into_iter()
                .map(|tid| {
                    let comm = proc
                        .read(&format!("{pid}/task/{tid}/comm"), 64)
                        .map(|c| c.text().trim_end().to_string())
                        .unwrap_or_default();
                    (tid, comm, Vec::new())
                })
                .collect();
            Some(Proc {
                pid,
                total,
                threads,
                fds: BTreeMap::new(),
            })
        })
        .collect();
    let mut rounds = 0;
    while rounds < SAMPLES {
        if rounds >= MIN_SAMPLES && stop.load(std::sync::atomic::Ordering::Relaxed) {
            break;
        }
        if rounds > 0 {
            std::thread::sleep(INTERVAL);
        }
        rounds += 1;
        for p in &mut procs {
            for (tid, _, seen) in &mut p.threads {
                if let Some(r) = read_thread(proc, &format!("{}/task/{tid}", p.pid)) {
                    seen.push(r);
                }
            }
        }
    }
    let mut out = BTreeMap::new();
    for mut p in procs {
        let mut threads = Vec::new();
        for (tid, comm, seen) in std::mem::take(&mut p.threads) {
            if seen.is_empty() {
                continue;
            }
            let mut obs: Vec<ThreadObservation> = Vec::new();
            for r in seen {
                let inode = r
                    .fd
                    .and_then(|fd| *p.fds.entry(fd).or_insert_with(|| proc.socket_at(p.pid, fd)));
                match obs.iter_mut().find(|o| {
                    o.state == r.state
                        && o.wchan == r.wchan
                        && o.syscall == r.syscall
                        && o.fd == r.fd
                }) {
                    Some(o) => o.count += 1,
                    None => obs.push(ThreadObservation {
                        count: 1,
                        state: r.state,
                        wchan: r.wchan,
                        syscall: r.syscall,
                        fd: r.fd,
                        socket_inode: inode,
                    }),
                }
            }
            obs.sort_by_key(|o| std::cmp::Reverse(o.count));
            threads.push(ThreadSample {
                tid,
                comm,
                seen: obs,
            });
        }
        if !threads.is_empty() {
            out.insert(
                p.pid,
                ThreadSamples {
                    samples: rounds,
                    interval_ms: INTERVAL.as_millis() as u32,
                    threads_total: p.total,
                    threads,
                },
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_files() {
        assert_eq!(
            stat_state("4242 (a) b) c) S 1 4242 4242 0 -1").as_deref(),
            Some("S")
        );
        assert_eq!(stat_state("no parenthesis"), None);
        assert_eq!(
            parse_syscall("running\n"),
            (Some("running".to_string()), None)
        );
        assert_eq!(parse_syscall("-1 0x7ffd 0x7f00\n"), (None, None));
        assert_eq!(parse_syscall(""), (None, None));
        assert_eq!(parse_syscall("garbage 0x1"), (None, None));
        #[cfg(target_arch = "x86_64")]
        {
            assert_eq!(
                parse_syscall("45 0x7 0x55d0 0x10000 0x0 0x0 0x0 0x7ffd 0x7f00"),
                (Some("recvfrom".to_string()), Some(7))
            );
            assert_eq!(
                parse_syscall("288 0x3 0x0 0x0 0x80800 0x0 0x0 0x7ffd 0x7f00"),
                (Some("accept4".to_string()), Some(3))
            );
            // futex's first argument is an address, not an fd.
            assert_eq!(
                parse_syscall("202 0x7f12 0x80 0x0 0x0 0x0 0x0 0x7ffd 0x7f00"),
                (Some("futex".to_string()), None)
            );
            assert_eq!(
                parse_syscall("999 0x1 0 0 0 0 0 0 0").0.as_deref(),
                Some("syscall 999")
            );
        }
        assert_eq!(socket_inode("socket:[98765]"), Some(98765));
        assert_eq!(socket_inode("pipe:[98765]"), None);
        assert_eq!(socket_inode("/dev/null"), None);
    }

    #[test]
    fn samples_a_thread_blocked_in_accept() {
        // Our own thread, blocked in accept() on a listener we made: its
        // syscall and fd, resolved to the listener's inode.
        if std::fs::read_to_string("/proc/thread-self/syscall").is_err() {
            crate::testutil::skip("/proc/self/task/*/syscall is not readable here");
            return;
        }
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let h = std::thread::spawn(move || {
            use std::os::unix::io::AsRawFd;
            tx.send((
                rustix::thread::gettid().as_raw_nonzero().get() as u32,
                l.as_raw_fd(),
            ))
            .unwrap();
            let _ = l.accept();
        });
        let (tid, fd) = rx.recv().unwrap();
        let inode = std::fs::metadata(format!("/proc/self/fd/{fd}"))
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m) as u32)
            .unwrap();
        // Wait until the thread is in accept(), then sample.
        let task = format!("/proc/self/task/{tid}/syscall");
        let start = std::time::Instant::now();
        while !matches!(
            parse_syscall(&std::fs::read_to_string(&task).unwrap_or_default())
                .0
                .as_deref(),
            Some("accept" | "accept4")
        ) {
            assert!(start.elapsed() < Duration::from_secs(30));
            std::thread::sleep(Duration::from_millis(5));
        }
        // Stopped at once: the minimum rounds are still taken.
        let got = sample(
            &ProcFs::open(std::path::Path::new("/proc")),
            &[std::process::id()],
            &std::sync::atomic::AtomicBool::new(true),
        );
        let me = &got[&std::process::id()];
        assert_eq!(me.samples, MIN_SAMPLES);
        // Never stopped: every round is taken.
        let all = sample(
            &ProcFs::open(std::path::Path::new("/proc")),
            &[std::process::id()],
            &std::sync::atomic::AtomicBool::new(false),
        );
        assert_eq!(all[&std::process::id()].samples, SAMPLES);
        let t = me
            .threads
            .iter()
            .find(|t| t.tid == tid)
            .expect("the thread");
        let top = &t.seen[0];
        assert!(
            matches!(top.syscall.as_deref(), Some("accept" | "accept4")),
            "{t:?}"
        );
        assert_eq!(top.fd, Some(fd as u32));
        assert_eq!(top.socket_inode, Some(inode));
        assert_eq!(top.state, "S");
        std::net::TcpStream::connect(addr).unwrap();
        h.join().unwrap();
    }
}
