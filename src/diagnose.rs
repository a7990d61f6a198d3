//! Host-level diagnoses beyond per-group counts (issue #4): un-accepted
//! children, ephemeral-port exhaustion, TIME_WAIT close rates, harmful
//! sysctls and counters, fd exhaustion and stale socket fds. Pure: they
//! read a snapshot and the groups already built from it. The words of each
//! finding live next to the rule that raises it; kernel facts follow
//! `tcp-states.md`.

use crate::classify::{Direction, Evidence, Finding, Group, Owner, Policy, Severity};
use crate::model::{Snapshot, Socket, TcpState};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

/// `comm (pid N)`, or what is known of it.
pub fn who(pid: Option<u32>, comm: Option<&str>) -> String {
    match (pid, comm) {
        (Some(p), Some(c)) => format!("{c} (pid {p})"),
        (Some(p), None) => format!("pid {p}"),
        _ => "an unidentified process".to_string(),
    }
}

/// Children the application never accepted: inode 0, ESTABLISHED or
/// CLOSE_WAIT, on a port with a listener. Reported against the listener.
pub fn accept_queue(snap: &Snapshot, selected: &[&Socket]) -> Vec<Finding> {
    let listeners: HashMap<u16, &Socket> = snap
        .sockets
        .iter()
        .filter(|s| s.state == TcpState::Listen)
        .map(|s| (s.local.port(), s))
        .collect();
    let mut per_port: BTreeMap<u16, (usize, usize)> = BTreeMap::new();
    for s in selected {
        if s.inode != 0 || !matches!(s.state, TcpState::Established | TcpState::CloseWait) {
            continue;
        }
        if listeners.contains_key(&s.local.port()) {
            let e = per_port.entry(s.local.port()).or_default();
            if s.state == TcpState::Established {
                e.0 += 1
            } else {
                e.1 += 1
            }
        }
    }
    let overflows = snap.counters.get("TcpExt.ListenOverflows").copied();
    let drops = snap.counters.get("TcpExt.ListenDrops").copied();
    per_port
        .into_iter()
        .filter_map(|(port, (est, cw))| {
            let l = listeners.get(&port)?;
            let comm = l.pid.and_then(|p| snap.processes.get(&p)).map(|p| p.comm.as_str());
            let full = l.recv_q >= l.send_q && l.send_q > 0;
            let severity = if full || cw > 0 { Severity::Critical } else { Severity::Warning };
            let ev = Evidence {
                state: Some(if cw > 0 { TcpState::CloseWait } else { TcpState::Established }),
                count: est + cw,
                pid: l.pid,
                comm: comm.map(str::to_string),
                direction: Some(Direction::Inbound),
                port: Some(port),
                accept_queue: Some(l.recv_q),
                backlog: Some(l.send_q),
                unaccepted_established: Some(est),
                unaccepted_close_wait: Some(cw),
                listen_overflows: overflows,
                listen_drops: drops,
                ..Evidence::default()
            };
            let owner = who(l.pid, comm);
            let counters = match (overflows, drops) {
                (Some(o), Some(d)) => format!(" ListenOverflows {o}, ListenDrops {d} since boot."),
                _ => String::new(),
            };
            Some(Finding::new(
                "accept-queue-not-drained",
                severity,
                format!(
                    "listener on port {port} ({owner}) has {} connections it never accepted ({est} ESTABLISHED, {cw} CLOSE_WAIT); accept queue {}/{}",
                    est + cw,
                    l.recv_q,
                    l.send_q
                ),
                ev,
                format!(
                    "{owner} is not calling accept() fast enough (hung, blocked or overloaded accept loop): clients already gave up on {cw} of these.{counters} Fix the accept loop first; then raise the listen() backlog and net.core.somaxconn (the effective queue is the smaller of the two). tcp_abort_on_overflow only turns the symptom into resets."
                ),
            ))
        })
        .collect()
}

/// Local ports held per (source IP, destination IP, destination port),
/// every state, against the ephemeral range.
pub fn port_exhaustion(
    snap: &Snapshot,
    selected: &[&Socket],
    listen_ports: &rustc_hash::FxHashSet<u16>,
    policy: &Policy,
    budget: u32,
) -> Vec<Finding> {
    #[derive(Default)]
    struct Acc {
        held: usize,
        time_wait: usize,
        recent_tw: usize,
    }
    let mut per: BTreeMap<(IpAddr, IpAddr, u16), Acc> = BTreeMap::new();
    for s in selected {
        if s.state == TcpState::Listen
            || listen_ports.contains(&s.local.port())
            || s.peer.port() == 0
        {
            continue;
        }
        let a = per
            .entry((s.local.ip(), s.peer.ip(), s.peer.port()))
            .or_default();
        a.held += 1;
        if s.state == TcpState::TimeWait {
            a.time_wait += 1;
            if s.expires_ms >= 50_000 {
                a.recent_tw += 1;
            }
        }
    }
    let reuse = snap
        .sysctls
        .get("net.ipv4.tcp_tw_reuse")
        .map(String::as_str);
    let timestamps = snap
        .sysctls
        .get("net.ipv4.tcp_timestamps")
        .map(String::as_str);
    per.into_iter()
        .filter(|(_, a)| budget > 0 && a.held as f64 / f64::from(budget) >= policy.port_ratio_warn)
        .map(|((src, dst, dport), a)| {
            let ratio = a.held as f64 / f64::from(budget);
            let severity = if ratio >= policy.port_ratio_crit { Severity::Critical } else { Severity::Warning };
            let dest = std::net::SocketAddr::new(dst, dport).to_string();
            let rate = a.time_wait as f64 / 60.0;
            let sustainable = f64::from(budget) / 60.0;
            let ev = Evidence {
                state: Some(TcpState::TimeWait),
                count: a.held,
                direction: Some(Direction::Outbound),
                port: Some(dport),
                peers: vec![dest.clone()],
                local_ip: Some(src.to_string()),
                time_wait: Some(a.time_wait),
                port_budget: Some(budget),
                port_ratio: Some(round3(ratio)),
                close_rate_per_s: Some(round3(rate)),
                recent_close_rate_per_s: Some(round3(a.recent_tw as f64 / 10.0)),
                sustainable_rate_per_s: Some(round3(sustainable)),
                ..Evidence::default()
            };
            let reuse_note = match (reuse, timestamps) {
                (Some("1"), _) => "tcp_tw_reuse is already 1".to_string(),
                (_, Some("0")) => "tcp_tw_reuse needs tcp_timestamps=1, which is off here".to_string(),
                (Some(v), _) => format!("tcp_tw_reuse is {v}: setting 1 lets outgoing connects reuse TIME_WAIT ports after 1 s (timestamps are on)"),
                (None, _) => "tcp_tw_reuse=1 lets outgoing connects reuse TIME_WAIT ports when timestamps are on".to_string(),
            };
            Finding::new(
                "ephemeral-ports-exhausted",
                severity,
                format!(
                    "{src} -> {dest} holds {} of {budget} ephemeral ports ({:.0} %), {} in TIME_WAIT: ~{rate:.1} closes/s against a sustainable {sustainable:.0}/s",
                    a.held,
                    ratio * 100.0,
                    a.time_wait
                ),
                ev,
                format!(
                    "Each connection to {dest} from {src} needs its own local port, and each close holds it for 60 s in TIME_WAIT; past {budget} ports connect() fails with EADDRNOTAVAIL. Reuse connections (keep-alive, a pool sized to the real concurrency); spread over more source IPs or destination addresses; {reuse_note}. Widening ip_local_port_range must not cover service ports (reserve them in ip_local_reserved_ports). tcp_fin_timeout does not shorten TIME_WAIT."
                ),
            )
        })
        .collect()
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// TIME_WAIT remaining-time histogram in six 10 s buckets: [0,10) ..
/// [50,60] seconds left. Bucket 5 holds the sockets closed in the last
/// ten seconds.
pub fn time_wait_histogram(socks: &[&Socket]) -> [usize; 6] {
    let mut h = [0usize; 6];
    for s in socks {
        let b = (s.expires_ms / 10_000).min(5) as usize;
        h[b] += 1;
    }
    h
}

fn sysctl_u64(snap: &Snapshot, name: &str) -> Option<u64> {
    snap.sysctls
        .get(name)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Settings that are harmful, or myths from the seed post, judged against
/// what this host shows.
pub fn sysctl_audit(snap: &Snapshot, states: &BTreeMap<TcpState, usize>) -> Vec<Finding> {
    let mut out = Vec::new();
    let tw = states.get(&TcpState::TimeWait).copied().unwrap_or(0);
    let cw = states.get(&TcpState::CloseWait).copied().unwrap_or(0);
    let ev = |name: &str, count: usize| Evidence {
        state: None,
        count,
        sysctl: Some(name.to_string()),
        value: snap.sysctls.get(name).cloned(),
        ..Evidence::default()
    };
    if sysctl_u64(snap, "net.ipv4.tcp_tw_recycle") == Some(1) {
        out.push(Finding::new(
            "sysctl-tcp-tw-recycle",
            Severity::Critical,
            "net.ipv4.tcp_tw_recycle is 1".into(),
            ev("net.ipv4.tcp_tw_recycle", tw),
            "tcp_tw_recycle drops SYNs from clients behind NAT (they share an address but not one timestamp clock); Linux removed it in 4.12 for that reason. Set it to 0; use connection reuse or tcp_tw_reuse=1 for outgoing connects instead.".into(),
        ));
    }
    if let Some(max) = sysctl_u64(snap, "net.ipv4.tcp_max_tw_buckets") {
        let overflow = snap
            .counters
            .get("TcpExt.TCPTimeWaitOverflow")
            .copied()
            .unwrap_or(0);
        if max > 0 && ((tw as u64).saturating_mul(10) >= max.saturating_mul(9) || overflow > 0) {
            let mut e = ev("net.ipv4.tcp_max_tw_buckets", tw);
            e.state = Some(TcpState::TimeWait);
            e.counter = Some(overflow);
            out.push(Finding::new(
                "time-wait-buckets-full",
                if tw as u64 >= max || overflow > 0 { Severity::Critical } else { Severity::Warning },
                format!("{tw} TIME_WAIT sockets against tcp_max_tw_buckets {max}; TCPTimeWaitOverflow {overflow}"),
                e,
                format!(
                    "Past tcp_max_tw_buckets ({max}) the kernel skips TIME_WAIT and counts TCPTimeWaitOverflow, losing its protection against late segments. ip-sysctl says not to lower this limit: restore the default (ehash/2) if it was lowered, and cut the close rate by reusing connections."
                ),
            ));
        }
    }
    if let Some(fin) = sysctl_u64(snap, "net.ipv4.tcp_fin_timeout")
        && fin < 60
        && tw > 0
    {
        out.push(Finding::new(
                "sysctl-fin-timeout-myth",
                Severity::Info,
                format!("tcp_fin_timeout is {fin} s, but TIME_WAIT still lasts 60 s"),
                ev("net.ipv4.tcp_fin_timeout", tw),
                "tcp_fin_timeout only bounds orphaned FIN_WAIT2 sockets; TIME_WAIT is fixed at 60 s (TCP_TIMEWAIT_LEN) and this setting does not shorten it. If it was lowered to fight TIME_WAIT, it did nothing for that.".into(),
            ));
    }
    if let Some(ka) = sysctl_u64(snap, "net.ipv4.tcp_keepalive_time")
        && ka < 7200
        && cw > 0
    {
        out.push(Finding::new(
                "sysctl-keepalive-myth",
                Severity::Info,
                format!("tcp_keepalive_time is lowered to {ka} s while {cw} sockets are in CLOSE_WAIT"),
                ev("net.ipv4.tcp_keepalive_time", cw),
                "Keepalive only applies to SO_KEEPALIVE sockets and does not end CLOSE_WAIT while the peer still answers; when it does kill a socket, the application's fd stays leaked. It hides the bug rather than fixing it: the fix is close() in the application.".into(),
            ));
    }
    if sysctl_u64(snap, "net.ipv4.tcp_abort_on_overflow") == Some(1) {
        out.push(Finding::new(
            "sysctl-abort-on-overflow",
            Severity::Warning,
            "tcp_abort_on_overflow is 1: a full accept queue resets new clients".into(),
            ev("net.ipv4.tcp_abort_on_overflow", 0),
            "With this set, a listener that falls behind resets connecting clients instead of letting them retry; ip-sysctl advises it only when the listener cannot be made faster. Prefer fixing the accept loop and raising the backlog and somaxconn.".into(),
        ));
    }
    if let (Some(orphans), Some(max)) = (
        snap.counters.get("sockstat.TCP.orphan"),
        sysctl_u64(snap, "net.ipv4.tcp_max_orphans"),
    ) && max > 0
        && orphans.saturating_mul(10) >= max.saturating_mul(8)
    {
        let mut e = ev("net.ipv4.tcp_max_orphans", *orphans as usize);
        e.counter = snap.counters.get("TcpExt.TCPAbortOnMemory").copied();
        out.push(Finding::new(
                "orphans-near-limit",
                Severity::Warning,
                format!("{orphans} orphaned sockets against tcp_max_orphans {max}"),
                e,
                "Orphans are sockets the application closed that the kernel is still finishing (FIN_WAIT1, LAST_ACK, CLOSING); past tcp_max_orphans the kernel resets them ('too many orphaned sockets', TCPAbortOnMemory). They are separate from TIME_WAIT ('tw' in sockstat). Raise tcp_max_orphans if memory allows, never lower it; look for peers that stopped reading.".into(),
            ));
    }
    out
}

/// For each process named by a CLOSE_WAIT finding: how close it is to
/// "too many open files", and socket fds no table knows.
pub fn fd_findings(snap: &Snapshot, groups: &[Group]) -> Vec<Finding> {
    let mut per_pid: BTreeMap<u32, (usize, Option<u32>)> = BTreeMap::new();
    for g in groups
        .iter()
        .filter(|g| g.state == TcpState::CloseWait && g.owner == Owner::Process)
    {
        if let Some(pid) = g.pid {
            let e = per_pid.entry(pid).or_default();
            e.0 += g.count;
            e.1 = e.1.max(g.oldest_age_ms);
        }
    }
    let mut out = Vec::new();
    for (pid, (cw, oldest)) in per_pid {
        let Some(p) = snap.processes.get(&pid) else {
            continue;
        };
        if let (Some(fds), Some(soft)) = (p.fd_count, p.nofile_soft) {
            // Leak rate from one scan: CLOSE_WAIT sockets over the age of the oldest.
            let rate = oldest
                .filter(|&ms| ms >= 1000)
                .map(|ms| cw as f64 / (f64::from(ms) / 1000.0));
            let left = soft.saturating_sub(fds as u64);
            let eta_s = rate.filter(|r| *r > 0.0).map(|r| left as f64 / r);
            let used = fds as f64 / soft as f64;
            let severity = if used >= 0.9 {
                Some(Severity::Critical)
            } else if used >= 0.75 || eta_s.is_some_and(|s| s < 86_400.0) {
                Some(Severity::Warning)
            } else {
                None
            };
            if let Some(severity) = severity {
                let eta = eta_s
                    .map(|s| {
                        format!(
                            "; at ~{:.2}/s it reaches the limit in ~{}",
                            rate.unwrap_or(0.0),
                            crate::units::duration((s.min(1e12) * 1000.0) as u64)
                        )
                    })
                    .unwrap_or_default();
                out.push(Finding::new(
                    "fd-exhaustion-risk",
                    severity,
                    format!("{} has {fds} of {soft} file descriptors open, {cw} of them CLOSE_WAIT sockets{eta}", who(Some(pid), Some(&p.comm))),
                    Evidence {
                        state: Some(TcpState::CloseWait),
                        count: cw,
                        pid: Some(pid),
                        comm: Some(p.comm.clone()),
                        fd_count: Some(fds),
                        nofile_soft: Some(soft),
                        leak_rate_per_s: rate.map(round3),
                        ..Evidence::default()
                    },
                    format!(
                        "Leaked CLOSE_WAIT sockets keep their fds until close(); when pid {pid} reaches RLIMIT_NOFILE ({soft}), accept() and open() fail with EMFILE ('too many open files'). Raising the limit only buys time: fix the missing close(), and restart the process before it hits the limit."
                    ),
                ));
            }
        }
        if let Some(n) = p.stale_socket_fds.filter(|&n| n > 0) {
            out.push(Finding::new(
                "stale-socket-fds",
                Severity::Warning,
                format!("{} holds {n} socket fds that no socket table knows", who(Some(pid), Some(&p.comm))),
                Evidence {
                    state: None,
                    count: n,
                    pid: Some(pid),
                    comm: Some(p.comm.clone()),
                    inodes: p.stale_socket_inodes.clone(),
                    ..Evidence::default()
                },
                format!(
                    "These are most likely TCP connections the kernel already closed (RST from the peer or a keepalive timeout) whose fd pid {pid} never close()d: lsof shows them as \"can't identify protocol\". They are the same leak as CLOSE_WAIT, past the point where ss can see it."
                ),
            ));
        }
    }
    out
}
