//! `accept-queue-not-drained`: children the application never
//! accepted. Until accept() they have no `struct socket`, so inode 0
//! (`inet_diag.c:inet_sk_diag_fill`), and a listener's Recv-Q is its
//! accept queue and Send-Q its backlog.

use super::Finding;
use super::{Ctx, Doc, Evidence, RuleId};
use crate::diag::host::Counter;
use crate::diag::types::Severity;
use crate::diag::words::who;
use crate::model::TcpState;
use serde::Serialize;
use std::collections::BTreeMap;

pub const DOC: Doc = Doc {
    id: "accept-queue-not-drained",
    title: "Connections the listener never accepted",
    meaning: "ESTABLISHED or CLOSE_WAIT sockets with inode 0 on a listening port are children still in the accept queue: no process called accept() for them. CLOSE_WAIT among them means the clients already gave up. The listener's Recv-Q is the queue length and its Send-Q the backlog. Every process holding the listener is named (a pre-fork master and its workers share one; SO_REUSEPORT gives each its own), with the processes holding accepted connections on the port: when those are all busy, the worker pool is saturated.",
    confirm: "ss -ltnp sport = :PORT shows Recv-Q near Send-Q and the processes holding the listener; nstat -az TcpExtListenOverflows TcpExtListenDrops keep rising. cwdiag samples the busy workers' threads (/proc/PID/task/TID/{stat,wchan,syscall}) and says what they wait in, and on which connection (evidence.threads); a thread dump (jstack, py-spy dump, gdb) shows the code.",
    fix: "Make the workers free again (timeouts on downstream calls, bounded handler time) or add workers; a hung accept loop needs fixing first. Raise the listen() backlog and net.core.somaxconn only for short bursts (the effective backlog is the smaller of the two).",
    avoid: "Raising the backlog for a saturated pool only queues more requests that clients abandon; tcp_abort_on_overflow=1 turns overflows into resets (ip-sysctl advises it only when the listener cannot be made faster).",
};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ListenerEvidence {
    pub local: String,
    pub pid: Option<u32>,
    pub comm: Option<String>,
    /// Every process holding this listening socket (a pre-fork master
    /// and its workers share one), `pid` first.
    pub holders: Vec<u32>,
    /// Recv-Q of the listener: connections waiting for accept().
    pub accept_queue: u32,
    /// Send-Q of the listener: the backlog.
    pub backlog: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HolderEvidence {
    pub pid: u32,
    pub comm: Option<String>,
    /// Accepted connections on the port this process holds (attributed
    /// states: CLOSE_WAIT and the like; ESTABLISHED with --sockets).
    pub connections: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AcceptQueueEvidence {
    pub state: TcpState,
    /// Children never accepted.
    pub count: usize,
    pub port: u16,
    pub unaccepted_established: usize,
    pub unaccepted_close_wait: usize,
    /// Every listening socket on the port.
    pub listeners: Vec<ListenerEvidence>,
    /// Processes holding accepted connections on the port.
    pub connection_holders: Vec<HolderEvidence>,
    /// TcpExt ListenOverflows / ListenDrops since boot (or since the
    /// namespace was created).
    pub listen_overflows: Option<u64>,
    pub listen_drops: Option<u64>,
    /// The threads of the listener's holders and of the processes holding
    /// accepted connections, sampled, and what they show (`null` when
    /// none could be sampled).
    pub threads: Option<crate::diag::threads::ThreadsEvidence>,
}

/// The rule's registry entry.
pub struct Def;

impl super::Rule for Def {
    fn doc(&self) -> &'static Doc {
        &DOC
    }

    fn detect(&self, ctx: &Ctx) -> Vec<Finding> {
        detect(ctx)
    }

    #[cfg(test)]
    fn cases(&self) -> Vec<super::cases::Case> {
        cases()
    }
}

pub fn detect(ctx: &Ctx) -> Vec<Finding> {
    let mut listeners: BTreeMap<u16, Vec<&crate::model::Socket>> = BTreeMap::new();
    for s in ctx
        .snap
        .sockets
        .iter()
        .filter(|s| s.state == TcpState::Listen)
    {
        listeners.entry(s.local.port()).or_default().push(s);
    }
    let mut per_port: BTreeMap<u16, (usize, usize)> = BTreeMap::new();
    let mut holders: BTreeMap<u16, BTreeMap<u32, usize>> = BTreeMap::new();
    for s in ctx.selected {
        let port = s.local.port();
        // The listening ports, as a hash set: this runs for every socket.
        if s.state == TcpState::Listen || !ctx.listen_ports.contains(&port) {
            continue;
        }
        if s.inode == 0 && matches!(s.state, TcpState::Established | TcpState::CloseWait) {
            let e = per_port.entry(port).or_default();
            if s.state == TcpState::Established {
                e.0 += 1
            } else {
                e.1 += 1
            }
        } else if let Some(pid) = s.pid {
            *holders.entry(port).or_default().entry(pid).or_default() += 1;
        }
    }
    let overflows = ctx.host.counter(Counter::ListenOverflows);
    let drops = ctx.host.counter(Counter::ListenDrops);
    let comm = |pid: Option<u32>| {
        pid.and_then(|p| ctx.snap.processes.get(&p))
            .map(|p| p.comm.clone())
    };
    per_port
        .into_iter()
        .filter_map(|(port, (est, cw))| {
            let ls = listeners.get(&port)?;
            let queue: u32 = ls.iter().map(|l| l.recv_q).sum();
            let backlog: u32 = ls.iter().map(|l| l.send_q).sum();
            let full = ls.iter().any(|l| l.send_q > 0 && l.recv_q >= l.send_q);
            let severity = if full || cw > 0 {
                Severity::Critical
            } else if backlog > 0
                && f64::from(queue) >= f64::from(backlog) * ctx.policy.accept_queue_ratio_warn
            {
                Severity::Warning
            } else {
                // A few children between handshake and accept() are what
                // a busy, healthy server always has.
                return None;
            };
            let listeners: Vec<ListenerEvidence> = ls
                .iter()
                .map(|l| ListenerEvidence {
                    local: l.local.to_string(),
                    pid: l.pid,
                    comm: comm(l.pid),
                    holders: l
                        .pid
                        .into_iter()
                        .chain(
                            ctx.snap
                                .listener_holders
                                .get(&l.inode)
                                .into_iter()
                                .flatten()
                                .copied(),
                        )
                        .collect(),
                    accept_queue: l.recv_q,
                    backlog: l.send_q,
                })
                .collect();
            let connection_holders: Vec<HolderEvidence> = holders
                .remove(&port)
                .unwrap_or_default()
                .into_iter()
                .map(|(pid, connections)| HolderEvidence {
                    pid,
                    comm: comm(Some(pid)),
                    connections,
                })
                .collect();
            let mut holder_pids: Vec<u32> =
                listeners.iter().flat_map(|l| l.holders.iter().copied()).collect();
            holder_pids.sort_unstable();
            holder_pids.dedup();
            let names: Vec<String> = holder_pids
                .iter()
                .map(|&p| who(Some(p), ctx.label(Some(p)).as_deref()).to_string())
                .collect();
            let held_by = match names.as_slice() {
                [] => "no readable process".to_string(),
                [a, b, c, rest @ ..] if !rest.is_empty() => {
                    format!("{a}, {b}, {c} and {} more", rest.len())
                }
                all => all.join(", "),
            };
            // Holders of the listener that hold no accepted connection:
            // idle workers (or the master, which only forks).
            let idle = holder_pids
                .iter()
                .filter(|p| !connection_holders.iter().any(|h| h.pid == **p))
                .count();
            let busy = if connection_holders.is_empty() {
                String::new()
            } else {
                let list: Vec<String> = connection_holders
                    .iter()
                    .map(|h| {
                        let name = ctx.label(Some(h.pid));
                        format!("{} {}", who(Some(h.pid), name.as_deref()), h.connections)
                    })
                    .collect();
                format!(" Accepted connections on the port are held by {}.", list.join(", "))
            };
            let counters = match (overflows, drops) {
                (Some(o), Some(d)) => format!(
                    " ListenOverflows {o}, ListenDrops {d} {}.",
                    ctx.host.counters_since()
                ),
                _ => String::new(),
            };
            // The processes holding accepted connections are the busy
            // workers; without any, whoever holds the listener.
            let sampled: Vec<u32> = if connection_holders.is_empty() {
                holder_pids.clone()
            } else {
                connection_holders.iter().map(|h| h.pid).collect()
            };
            let threads = crate::diag::threads::evidence(ctx.snap, &sampled);
            let saturated = !connection_holders.is_empty() && idle <= 1;
            let advice = if let Some(t) = &threads {
                let then = crate::diag::threads::advice(t);
                if t.single_threaded {
                    format!(
                        "{held_by} serves the port on a single thread, and {}. More workers are not the fix for a single-threaded loop: {}",
                        t.verdict,
                        then.unwrap_or_else(|| "find what keeps it from accepting (py-spy dump, gdb, or the runtime's own diagnostics show where it waits).".to_string())
                    )
                } else {
                    let pool = if saturated {
                        format!(
                            "{} of the {} processes holding the listener hold a connection in progress: the worker pool is saturated. ",
                            holder_pids.len() - idle,
                            holder_pids.len()
                        )
                    } else {
                        String::new()
                    };
                    let tail = then.unwrap_or_else(|| {
                        if connection_holders.is_empty() {
                            "Check that the accept loop runs.".to_string()
                        } else {
                            "Free the workers (timeouts on downstream calls, bounded handler time) or add workers.".to_string()
                        }
                    });
                    format!("{pool}Threads, sampled: {}. {tail}", t.verdict)
                }
            } else if connection_holders.is_empty() {
                "Nothing is accepting: check that the accept loop runs and is not blocked (a thread dump shows where it waits).".to_string()
            } else if idle <= 1 {
                format!(
                    "{} of the {} processes holding the listener hold a connection in progress: the worker pool is saturated. Free the workers (timeouts on downstream calls, bounded handler time) or add workers.",
                    holder_pids.len() - idle,
                    holder_pids.len()
                )
            } else {
                format!(
                    "{idle} of the {} processes holding the listener hold no connection yet nothing accepts: check that their accept loops run and are not blocked (a thread dump shows where they wait).",
                    holder_pids.len()
                )
            };
            Some(Finding {
                rule_id: RuleId::AcceptQueueNotDrained,
                severity,
                summary: format!(
                    "listener on port {port} (held by {held_by}) has {} connections nobody accepted ({est} ESTABLISHED, {cw} CLOSE_WAIT); accept queue {queue}/{backlog}",
                    est + cw
                ),
                hint: format!(
                    "{advice}{busy} Clients already gave up on {cw} of the queued connections.{counters} Raising the listen() backlog or somaxconn only queues more requests that clients abandon; tcp_abort_on_overflow turns them into resets."
                ),
                evidence: Evidence::AcceptQueue(AcceptQueueEvidence {
                    state: if cw > 0 { TcpState::CloseWait } else { TcpState::Established },
                    count: est + cw,
                    port,
                    unaccepted_established: est,
                    unaccepted_close_wait: cw,
                    listeners,
                    connection_holders,
                    listen_overflows: overflows,
                    listen_drops: drops,
                    threads,
                }),
            })
        })
        .collect()
}

#[cfg(test)]
pub fn cases() -> Vec<super::cases::Case> {
    use super::cases::{fires, silent};
    use crate::diag::testkit::SnapBuilder;
    // A pre-fork server: master 50 holds the listener, worker 51 is busy
    // with a request; 3 clients gave up in the queue, 2 still wait.
    let mut prefork = SnapBuilder::new()
        .listen("0.0.0.0:8000", Some(50), 5, 5)
        .process(50, "gunicorn", None, None)
        .process(51, "gunicorn", None, None)
        .close_wait("10.0.0.1:8000", "10.2.0.1:51000", 80, Some(51), None);
    for i in 0..2 {
        prefork = prefork.established("10.0.0.1:8000", &format!("10.2.1.{i}:52000"), None);
    }
    for i in 0..3 {
        prefork = prefork.close_wait(
            "10.0.0.1:8000",
            &format!("10.2.2.{i}:53000"),
            100,
            None,
            None,
        );
    }
    let mut busy_ok = SnapBuilder::new().listen("0.0.0.0:80", Some(60), 2, 511);
    for i in 0..2 {
        busy_ok = busy_ok.established("10.0.0.1:80", &format!("10.3.0.{i}:54000"), None);
    }
    // The worker inherited the master's listener.
    let mut prefork = prefork.build();
    let inode = prefork.sockets[0].inode;
    prefork.listener_holders.insert(inode, vec![51]);
    vec![
        fires(
            "pre-fork server with a saturated worker",
            prefork,
            Severity::Critical,
        ),
        silent(
            "two connections between handshake and accept()",
            busy_ok.build(),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::cases;
    use crate::diag::rules::{Evidence, RuleId, cases::findings_of};

    /// A single-threaded server whose loop is blocked in a sleep: the
    /// advice follows its thread, never "add workers".
    #[test]
    fn a_blocked_single_threaded_loop_is_not_told_to_add_workers() {
        use crate::diag::rules::cases::fires;
        use crate::diag::testkit::SnapBuilder;
        use crate::diag::threads::fixture::{obs, samples};
        let mut b = SnapBuilder::new()
            .listen("0.0.0.0:8080", Some(70), 3, 5)
            .process(70, "python3", None, None)
            .close_wait("10.0.0.1:8080", "10.2.0.1:51000", 80, Some(70), None);
        for i in 0..3 {
            b = b.close_wait(
                "10.0.0.1:8080",
                &format!("10.2.2.{i}:53000"),
                100,
                None,
                None,
            );
        }
        let mut snap = b.build();
        let saturated = findings_of(
            RuleId::AcceptQueueNotDrained,
            &fires("x", snap.clone(), crate::diag::Severity::Critical),
        );
        assert!(
            saturated[0].hint.contains("add workers"),
            "{}",
            saturated[0].hint
        );
        snap.processes.get_mut(&70).unwrap().threads =
            Some(samples(vec![obs("S", Some("clock_nanosleep"), None)]));
        let f = &findings_of(
            RuleId::AcceptQueueNotDrained,
            &fires("x", snap, crate::diag::Severity::Critical),
        )[0];
        assert!(!f.hint.contains("add workers"), "{}", f.hint);
        assert!(f.hint.contains("single thread"), "{}", f.hint);
        assert!(
            f.hint
                .contains("its only thread was asleep in clock_nanosleep() in 10 of 10 samples"),
            "{}",
            f.hint
        );
        let Evidence::AcceptQueue(e) = &f.evidence else {
            panic!()
        };
        let t = e.threads.as_ref().unwrap();
        assert_eq!((t.pattern, t.single_threaded), ("asleep", true));
        assert_eq!(
            t.processes[0].threads[0].seen[0].seen.syscall.as_deref(),
            Some("clock_nanosleep")
        );
    }

    #[test]
    fn names_the_listener_holders_and_the_busy_worker() {
        let f = &findings_of(RuleId::AcceptQueueNotDrained, &cases()[0])[0];
        let Evidence::AcceptQueue(e) = &f.evidence else {
            panic!("{f:?}")
        };
        assert_eq!((e.unaccepted_established, e.unaccepted_close_wait), (2, 3));
        assert_eq!(e.connection_holders.len(), 1);
        assert_eq!(e.connection_holders[0].pid, 51);
        assert!(f.hint.contains("gunicorn (pid 51) 1"), "{}", f.hint);
        assert!(f.hint.contains("saturated"), "{}", f.hint);
        assert!(f.hint.contains("1 of the 2 processes"), "{}", f.hint);
        assert!(
            f.summary
                .contains("held by gunicorn (pid 50), gunicorn (pid 51)"),
            "{}",
            f.summary
        );
        assert_eq!(e.listeners[0].holders, vec![50, 51]);
    }
}
