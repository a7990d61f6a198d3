//! What the sampled threads of a process (or of a listener's worker
//! processes) show, in one sentence a finding can stand on: "all 4
//! workers blocked in recvfrom() on connections to 127.0.0.1:5432
//! (postgres, pid 812)", "its only thread was on CPU in 10 of 10
//! samples". Pure: works on the samples the collector put in the
//! snapshot, matching each fd's socket inode to a connection there.

use crate::model::{Endpoint, Snapshot, TcpState, ThreadObservation, ThreadSamples};
use serde::Serialize;

/// The sampled threads behind a finding, and what they show.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ThreadsEvidence {
    /// What the samples show, in words.
    pub verdict: String,
    /// `on-cpu`, `blocked-on-peer`, `blocked-reading`, `asleep`,
    /// `futex`, `waiting-for-events`, `accepting`, `mixed`, `other`.
    pub pattern: &'static str,
    /// The process runs its work on one thread (one task, or Node.js's
    /// event loop): more workers are not an option it has.
    pub single_threaded: bool,
    /// The connection the blocked threads read from, and who serves it
    /// when it is on this host.
    pub peer: Option<String>,
    pub peer_owner: Option<String>,
    pub processes: Vec<ProcessThreads>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProcessThreads {
    pub pid: u32,
    pub comm: Option<String>,
    pub samples: u32,
    pub interval_ms: u32,
    pub threads_total: usize,
    pub threads: Vec<ThreadEvidence>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ThreadEvidence {
    pub tid: u32,
    pub comm: String,
    pub seen: Vec<SeenEvidence>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeenEvidence {
    #[serde(flatten)]
    pub seen: ThreadObservation,
    /// The peer of the socket the call works on, when it is a connection
    /// in the snapshot.
    pub peer: Option<String>,
}

/// What one thread mostly did.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Activity {
    OnCpu,
    Reading {
        call: String,
        peer: Option<Endpoint>,
    },
    Writing {
        call: String,
        peer: Option<Endpoint>,
    },
    Accepting {
        call: String,
    },
    Waiting {
        call: String,
    },
    Futex,
    Asleep {
        call: String,
    },
    Other(String),
}

impl Activity {
    fn of(o: &ThreadObservation, snap: &Snapshot) -> Activity {
        if o.state == "R" || o.syscall.as_deref() == Some("running") {
            return Activity::OnCpu;
        }
        let Some(call) = o.syscall.clone() else {
            // wchan and state come from /proc, or from a snapshot file:
            // escaped before they become words.
            return Activity::Other(crate::procname::printable(
                &o.wchan
                    .clone()
                    .unwrap_or_else(|| format!("state {}", o.state)),
            ));
        };
        let sock = o
            .socket_inode
            .and_then(|i| snap.sockets.iter().find(|s| s.inode == i && i != 0));
        let peer = sock.filter(|s| s.state != TcpState::Listen).map(|s| s.peer);
        match call.as_str() {
            "read" | "readv" | "pread64" | "recvfrom" | "recvmsg" | "recvmmsg" => {
                Activity::Reading { call, peer }
            }
            "write" | "writev" | "sendto" | "sendmsg" => Activity::Writing { call, peer },
            "accept" | "accept4" => Activity::Accepting { call },
            "epoll_wait" | "epoll_pwait" | "epoll_pwait2" | "poll" | "ppoll" | "select"
            | "pselect6" | "io_uring_enter" => Activity::Waiting { call },
            "futex" => Activity::Futex,
            "nanosleep" | "clock_nanosleep" => Activity::Asleep { call },
            _ => Activity::Other(format!("{}()", crate::procname::printable(&call))),
        }
    }

    fn pattern(&self) -> &'static str {
        match self {
            Activity::OnCpu => "on-cpu",
            Activity::Reading { peer: Some(_), .. } => "blocked-on-peer",
            Activity::Reading { .. } => "blocked-reading",
            Activity::Writing { .. } => "blocked-writing",
            Activity::Accepting { .. } => "accepting",
            Activity::Waiting { .. } => "waiting-for-events",
            Activity::Futex => "futex",
            Activity::Asleep { .. } => "asleep",
            Activity::Other(_) => "other",
        }
    }

    /// `blocked in recvfrom() on a connection to 127.0.0.1:5432 (postgres, pid 9)`.
    fn words(&self, many: bool, owner: Option<&str>) -> String {
        let conn = |peer: &Option<Endpoint>| match peer {
            Some(p) => format!(
                " on {} to {p}{}",
                if many { "connections" } else { "a connection" },
                owner.map(|o| format!(" ({o})")).unwrap_or_default()
            ),
            None => String::new(),
        };
        match self {
            Activity::OnCpu => "on CPU".to_string(),
            Activity::Reading { call, peer } => format!("blocked in {call}(){}", conn(peer)),
            Activity::Writing { call, peer } => format!("blocked in {call}(){}", conn(peer)),
            Activity::Accepting { call } => format!("waiting in {call}()"),
            Activity::Waiting { call } => format!("waiting for events in {call}()"),
            Activity::Futex => "waiting on a futex (a lock or condition variable)".to_string(),
            Activity::Asleep { call } => format!("asleep in {call}()"),
            Activity::Other(what) => format!("in {what}"),
        }
    }
}

/// The process serving `peer` on this host: the owner of a listening
/// socket on its port and address (a wildcard listener counts when the
/// address is one of this namespace's own).
pub fn local_server(snap: &Snapshot, peer: Endpoint) -> Option<(u32, String)> {
    let ours =
        |ip: std::net::IpAddr| ip.is_loopback() || snap.sockets.iter().any(|s| s.local.ip() == ip);
    let l = snap.sockets.iter().find(|s| {
        s.state == TcpState::Listen
            && s.local.port() == peer.port()
            && (s.local.ip() == peer.ip() || (s.local.ip().is_unspecified() && ours(peer.ip())))
    })?;
    let pid = l.pid?;
    let name = snap
        .processes
        .get(&pid)
        .map(|p| p.label())
        .unwrap_or_else(|| "a process".to_string());
    Some((pid, format!("{name}, pid {pid}")))
}

/// The evidence and verdict from the samples of `pids` (those that have
/// any); `None` when none was sampled.
pub fn evidence(snap: &Snapshot, pids: &[u32]) -> Option<ThreadsEvidence> {
    let sampled: Vec<(u32, &ThreadSamples)> = pids
        .iter()
        .filter_map(|&p| Some((p, snap.processes.get(&p)?.threads.as_ref()?)))
        .collect();
    if sampled.is_empty() {
        return None;
    }
    // Each thread's main activity, with how many samples showed it.
    let mut acts: Vec<(Activity, u32, u32)> = Vec::new();
    let mut processes = Vec::new();
    for &(pid, t) in &sampled {
        let mut threads = Vec::new();
        for th in &t.threads {
            if let Some(top) = th.seen.first() {
                acts.push((Activity::of(top, snap), top.count, t.samples));
            }
            threads.push(ThreadEvidence {
                tid: th.tid,
                comm: th.comm.clone(),
                seen: th
                    .seen
                    .iter()
                    .map(|o| SeenEvidence {
                        peer: o
                            .socket_inode
                            .and_then(|i| snap.sockets.iter().find(|s| s.inode == i && i != 0))
                            .filter(|s| s.state != TcpState::Listen)
                            .map(|s| s.peer.to_string()),
                        seen: o.clone(),
                    })
                    .collect(),
            });
        }
        processes.push(ProcessThreads {
            pid,
            comm: snap.processes.get(&pid).map(|p| p.comm.clone()),
            samples: t.samples,
            interval_ms: t.interval_ms,
            threads_total: t.threads_total,
            threads,
        });
    }
    if acts.is_empty() {
        return None;
    }
    let runtime = |pid: u32| {
        snap.processes
            .get(&pid)
            .and_then(crate::diag::peer::Runtime::of)
    };
    let event_loop = |pid: u32| {
        matches!(
            runtime(pid),
            Some(crate::diag::peer::Runtime::Node | crate::diag::peer::Runtime::CPython)
        )
    };
    // An event-loop runtime (Python, Node.js) whose main thread is busy,
    // blocked or asleep while every other thread idles (a resolver or
    // executor pool, V8's helpers): the loop is the main thread.
    if sampled.len() == 1 && event_loop(sampled[0].0) && sampled[0].1.threads.len() > 1 {
        let (pid, t) = sampled[0];
        let main = t
            .threads
            .iter()
            .find(|th| th.tid == pid)
            .and_then(|th| th.seen.first());
        let parked = |a: &Activity| matches!(a, Activity::Futex | Activity::Waiting { .. });
        let others_parked = t
            .threads
            .iter()
            .filter(|th| th.tid != pid)
            .filter_map(|th| th.seen.first())
            .all(|o| parked(&Activity::of(o, snap)));
        if let Some(m) = main
            && others_parked
        {
            let a = Activity::of(m, snap);
            if !parked(&a) {
                let peer = match &a {
                    Activity::Reading { peer, .. } | Activity::Writing { peer, .. } => *peer,
                    _ => None,
                };
                let owner = peer.and_then(|p| local_server(snap, p)).map(|o| o.1);
                let tail = match a {
                    Activity::OnCpu => ": a busy event loop",
                    Activity::Asleep { .. } => ": a blocking sleep on the event loop",
                    _ => "",
                };
                let idle = t.threads.len() - 1;
                return Some(ThreadsEvidence {
                    verdict: format!(
                        "its main thread (the event loop) was {} in {} of {} samples{tail}, its {idle} other {} idle",
                        a.words(false, owner.as_deref()),
                        m.count,
                        t.samples,
                        if idle == 1 { "thread" } else { "threads" }
                    ),
                    pattern: a.pattern(),
                    single_threaded: true,
                    peer: peer.map(|p| p.to_string()),
                    peer_owner: owner,
                    processes,
                });
            }
        }
    }
    let single_threaded = sampled.len() == 1
        && (sampled[0].1.threads_total == 1
            || runtime(sampled[0].0) == Some(crate::diag::peer::Runtime::Node));
    let multi = sampled.len() > 1;
    let n = acts.len();
    let total: usize = sampled.iter().map(|(_, t)| t.threads_total).sum();
    let unit = if multi { "worker processes" } else { "threads" };
    let first = acts[0].0.clone();
    let all_same = acts.iter().all(|(a, _, _)| *a == first);
    let peer = match &first {
        Activity::Reading { peer, .. } | Activity::Writing { peer, .. } if all_same => *peer,
        _ => None,
    };
    let owner = peer.and_then(|p| local_server(snap, p));
    let owner_words = owner.as_ref().map(|o| o.1.clone());
    let (verdict, pattern) = if all_same {
        let what = first.words(n > 1, owner_words.as_deref());
        let v = if n == 1 && total == 1 {
            let (c, s) = (acts[0].1, acts[0].2);
            let tail = match first {
                Activity::OnCpu => ": a busy loop, CPU-bound work on the thread that should read",
                Activity::Asleep { .. } => {
                    ": a blocking sleep on the only thread, so nothing else runs"
                }
                _ => "",
            };
            format!("its only thread was {what} in {c} of {s} samples{tail}")
        } else {
            let of = if total > n {
                format!(" (the first {n} of {total})")
            } else {
                String::new()
            };
            format!("all {n} {unit}{of} were {what}")
        };
        (v, first.pattern())
    } else {
        let mut groups: Vec<(Activity, usize)> = Vec::new();
        for (a, _, _) in &acts {
            match groups.iter_mut().find(|(g, _)| g == a) {
                Some(g) => g.1 += 1,
                None => groups.push((a.clone(), 1)),
            }
        }
        groups.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let parts: Vec<String> = groups
            .iter()
            .take(3)
            .map(|(a, c)| {
                let o = match a {
                    Activity::Reading { peer: Some(p), .. } => local_server(snap, *p).map(|o| o.1),
                    _ => None,
                };
                format!("{c} {}", a.words(*c > 1, o.as_deref()))
            })
            .collect();
        let more = if groups.len() > 3 { ", ..." } else { "" };
        (
            format!("of {n} {unit}, {}{more}", parts.join(", ")),
            "mixed",
        )
    };
    Some(ThreadsEvidence {
        verdict,
        pattern,
        single_threaded,
        peer: peer.map(|p| p.to_string()),
        peer_owner: owner_words,
        processes,
    })
}

/// The advice that follows the threads, for a process not reading or not
/// accepting; `None` when the samples settle nothing.
pub fn advice(t: &ThreadsEvidence) -> Option<String> {
    Some(match t.pattern {
        "blocked-on-peer" => format!(
            "They wait on {}: find why it is slow or stuck and put a timeout on those calls; more workers would only wait on it too.",
            t.peer_owner
                .clone()
                .or_else(|| t.peer.clone())
                .unwrap_or_else(|| "a downstream".into())
        ),
        "on-cpu" if t.single_threaded => "Its one thread is busy computing: move CPU-bound work off the event loop (a worker thread or process); more connections only queue behind it.".to_string(),
        "on-cpu" => "The threads are busy computing: profile them (perf top -p PID) before adding capacity.".to_string(),
        "asleep" if t.single_threaded => "A blocking call (a sleep) on the event loop stops everything on it: use the loop's own timer (asyncio.sleep, setTimeout) or move the blocking work to a thread.".to_string(),
        "futex" => "Every thread waits on a lock or condition: a deadlock, or a pool whose threads wait on each other; a thread dump (jstack, py-spy dump, gdb) shows on what.".to_string(),
        "waiting-for-events" => "The threads are idle, waiting for events: nothing is blocked, the code does not watch these connections (they were never registered with the loop, or were abandoned).".to_string(),
        "blocked-reading" | "blocked-writing" | "accepting" | "asleep" | "mixed" | "other" => {
            return None;
        }
        _ => return None,
    })
}

/// Helpers for rule tests: samples as the collector records them.
#[cfg(test)]
pub mod fixture {
    use crate::model::{ThreadObservation, ThreadSample, ThreadSamples};

    /// One observation seen in all 10 samples.
    pub fn obs(state: &str, syscall: Option<&str>, inode: Option<u32>) -> ThreadObservation {
        ThreadObservation {
            count: 10,
            state: state.into(),
            wchan: None,
            syscall: syscall.map(str::to_string),
            fd: inode.map(|_| 7),
            socket_inode: inode,
        }
    }

    /// A process whose threads each showed one observation throughout.
    pub fn samples(threads: Vec<ThreadObservation>) -> ThreadSamples {
        ThreadSamples {
            samples: 10,
            interval_ms: 10,
            threads_total: threads.len(),
            threads: threads
                .into_iter()
                .enumerate()
                .map(|(i, o)| ThreadSample {
                    tid: 100 + i as u32,
                    comm: "w".into(),
                    seen: vec![o],
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixture::{obs, samples};
    use super::*;
    use crate::diag::testkit::SnapBuilder;

    #[test]
    fn names_the_downstream_the_workers_read_from() {
        let mut snap = SnapBuilder::new()
            .process(5, "postgres", None, None)
            .listen("127.0.0.1:5432", Some(5), 0, 128)
            .process(9, "python3", None, None)
            .established("127.0.0.1:41000", "127.0.0.1:5432", Some(9))
            .build();
        let inode = snap.sockets[1].inode;
        snap.processes.get_mut(&9).unwrap().threads = Some(samples(vec![
            obs("S", Some("recvfrom"), Some(inode)),
            obs("S", Some("recvfrom"), Some(inode)),
        ]));
        let t = evidence(&snap, &[9]).unwrap();
        assert_eq!(t.pattern, "blocked-on-peer");
        assert_eq!(
            t.verdict,
            "all 2 threads were blocked in recvfrom() on connections to 127.0.0.1:5432 (postgres, pid 5)"
        );
        assert!(advice(&t).unwrap().contains("postgres, pid 5"));
        assert!(!advice(&t).unwrap().contains("add workers"));
    }

    #[test]
    fn tells_a_busy_loop_a_sleep_and_an_idle_loop() {
        let one = |o: ThreadObservation| {
            let mut snap = SnapBuilder::new().process(9, "python3", None, None).build();
            snap.processes.get_mut(&9).unwrap().threads = Some(samples(vec![o]));
            evidence(&snap, &[9]).unwrap()
        };
        let busy = one(obs("R", Some("running"), None));
        assert_eq!(busy.pattern, "on-cpu");
        assert!(busy.single_threaded);
        assert!(
            busy.verdict
                .starts_with("its only thread was on CPU in 10 of 10 samples"),
            "{}",
            busy.verdict
        );
        let sleep = one(obs("S", Some("clock_nanosleep"), None));
        assert_eq!(sleep.pattern, "asleep");
        assert!(advice(&sleep).unwrap().contains("event loop"));
        let idle = one(obs("S", Some("epoll_wait"), None));
        assert_eq!(idle.pattern, "waiting-for-events");
        let mut snap = SnapBuilder::new().process(9, "java", None, None).build();
        snap.processes.get_mut(&9).unwrap().threads = Some(samples(vec![
            obs("S", Some("futex"), None),
            obs("S", Some("futex"), None),
            obs("S", Some("futex"), None),
        ]));
        let f = evidence(&snap, &[9]).unwrap();
        assert_eq!(f.pattern, "futex");
        assert!(!f.single_threaded);
        assert!(
            f.verdict.contains("all 3 threads were waiting on a futex"),
            "{}",
            f.verdict
        );
        assert!(evidence(&snap, &[10]).is_none());
    }

    #[test]
    fn text_from_proc_is_escaped_in_the_verdict() {
        let mut snap = SnapBuilder::new().process(9, "x", None, None).build();
        let mut o = obs("D", None, None);
        o.wchan = Some("\x1b[31mevil\n".into());
        let mut odd = obs("S", Some("weird\x1b]0;title\x07"), None);
        odd.count = 3;
        snap.processes.get_mut(&9).unwrap().threads = Some(samples(vec![o, odd]));
        let t = evidence(&snap, &[9]).unwrap();
        assert!(
            !t.verdict.contains('\x1b') && !t.verdict.contains('\n'),
            "{}",
            t.verdict
        );
        assert!(t.verdict.contains("\\x1b[31mevil"), "{}", t.verdict);
    }

    #[test]
    fn an_event_loop_with_idle_helper_threads_is_its_main_thread() {
        let mut snap = SnapBuilder::new().process(100, "node", None, None).build();
        snap.processes.get_mut(&100).unwrap().threads = Some(samples(vec![
            obs("S", Some("clock_nanosleep"), None),
            obs("S", Some("futex"), None),
            obs("S", Some("epoll_wait"), None),
        ]));
        let t = evidence(&snap, &[100]).unwrap();
        assert!(t.single_threaded);
        assert_eq!(t.pattern, "asleep");
        assert_eq!(
            t.verdict,
            "its main thread (the event loop) was asleep in clock_nanosleep() in 10 of 10 samples: a blocking sleep on the event loop, its 2 other threads idle"
        );
        // A Java process is not an event loop: the threads are reported as they are.
        snap.processes.get_mut(&100).unwrap().comm = "java".into();
        let t = evidence(&snap, &[100]).unwrap();
        assert!(!t.single_threaded);
        assert_eq!(t.pattern, "mixed");
    }
}
