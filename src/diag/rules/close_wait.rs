//! What the three Recv-Q rules share: reading each CLOSE_WAIT socket
//! (Recv-Q with tcp_info's last data sent and received) and summing the
//! sockets of one process, direction and port into one finding.
//!
//! The peer's FIN takes one sequence number, so Recv-Q (`rcv_nxt -
//! copied_seq`, `tcp_diag.c:tcp_diag_get_info`) is 1 until the
//! application reads the end of file.

use super::Ctx;
use crate::diag::group::{direction, owner_of};
use crate::diag::listener::PeerService;
use crate::diag::peer::{Runtime, Service};
use crate::diag::types::{Direction, Owner, Policy, RecvQSplit, Severity};
use crate::model::{Socket, TcpState};
use serde::Serialize;
use std::collections::BTreeMap;

/// Which pattern a CLOSE_WAIT socket shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CloseWaitKind {
    /// Recv-Q 0: read EOF, never closed.
    EofNotClosed,
    /// The peer closed an idle connection the application is not
    /// reading: Recv-Q 1 (a bare FIN), or a goodbye message that came
    /// with the FIN after the connection had idled.
    NeverRead,
    /// Data the application stopped reading, then the FIN.
    UnreadData,
}

/// One socket's reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    pub kind: CloseWaitKind,
    /// Recv-Q > 1 bytes that are the server's goodbye.
    pub goodbye: bool,
    /// How long the connection carried no data before the peer's FIN.
    pub idle_before_close_ms: Option<u32>,
}

/// Does this socket's unread data look like a server's goodbye? Only an
/// outbound connection's peer is a server that may say one; inbound
/// bytes are a client's request that nobody read, whenever they came.
/// tcp_info gives "ms ago" for the last data sent, data received and ACK
/// received (`tcp.c:tcp_get_info`); the FIN carried the last ACK, so
/// `last_ack_recv` dates the close. A goodbye is small, and it came
/// after the connection had idled since its last request, nearer to the
/// FIN than to that request (see [`Policy::goodbye_min_idle_ms`]).
pub fn goodbye_like(s: &Socket, dir: Direction, p: &Policy) -> bool {
    let Some(t) = s.tcp_info else {
        return false;
    };
    let small = s.recv_q > 1 && s.recv_q - 1 <= p.goodbye_max_bytes;
    // Time from our last request to the data, and from the data to the FIN.
    let after_request = t.last_data_sent_ms.saturating_sub(t.last_data_recv_ms);
    let before_fin = t.last_data_recv_ms.saturating_sub(t.last_ack_recv_ms);
    dir == Direction::Outbound
        && small
        && after_request >= p.goodbye_min_idle_ms
        && before_fin < after_request
}

/// Reads one CLOSE_WAIT socket on its own. [`detect`] gives every
/// Recv-Q > 1 socket of a group the group's verdict (see there).
#[cfg(test)]
pub fn read(s: &Socket, dir: Direction, p: &Policy) -> Reading {
    reading(s, goodbye_like(s, dir, p))
}

/// The reading of `s`, given whether its group's unread data is a goodbye.
fn reading(s: &Socket, goodbye: bool) -> Reading {
    let goodbye = goodbye && s.recv_q > 1;
    let idle = s.tcp_info.map(|t| {
        // The connection's last activity before the close: the newest of
        // data sent and data received (unless that data is the goodbye).
        let last_activity = if goodbye {
            t.last_data_sent_ms
        } else {
            t.last_data_sent_ms.min(t.last_data_recv_ms)
        };
        last_activity.saturating_sub(t.last_ack_recv_ms)
    });
    let kind = match s.recv_q {
        0 => CloseWaitKind::EofNotClosed,
        1 => CloseWaitKind::NeverRead,
        _ if goodbye => CloseWaitKind::NeverRead,
        _ => CloseWaitKind::UnreadData,
    };
    Reading {
        kind,
        goodbye,
        idle_before_close_ms: idle,
    }
}

/// The evidence of the three Recv-Q rules.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CloseWaitEvidence {
    pub state: TcpState,
    pub count: usize,
    pub pid: Option<u32>,
    pub comm: Option<String>,
    pub owner: Owner,
    pub direction: Direction,
    /// Local port (inbound) or the peer's port (outbound).
    pub port: u16,
    /// Peers, busiest first (at most 5; outbound only).
    pub peers: Vec<String>,
    /// Recv-Q 0 / 1 / more among `count`.
    pub recv_q: RecvQSplit,
    /// Unread bytes beyond the FIN (sum over the sockets).
    pub unread_bytes: u64,
    /// Sockets whose unread bytes came with the FIN after the connection
    /// had idled: the peer's goodbye (e.g. an error message).
    pub goodbye: usize,
    /// Oldest CLOSE_WAIT age estimate (tcp_info last_ack_recv), ms.
    pub oldest_age_ms: Option<u32>,
    /// Median time the connections carried no data before the peer
    /// closed them (tcp_info), ms: for idle connections, about the
    /// closer's idle timeout.
    pub idle_before_close_ms: Option<u32>,
    /// The service's name (`PostgreSQL`, `MariaDB`), from `peer_service`.
    pub service: Option<String>,
    /// Outbound: the service at the busiest peer, named by the process
    /// listening on that address when it is local, else by the port.
    pub peer_service: Option<crate::diag::listener::PeerService>,
    /// Runtime of the owner (`JVM`, `CPython`...), if recognised.
    pub runtime: Option<String>,
    pub container: Option<String>,
    /// Client libraries the owner shows (what, and where it was seen).
    pub libraries: Vec<crate::model::Library>,
    /// The owner's threads, sampled, and what they show (owners with
    /// unread bytes on CLOSE_WAIT sockets; `null` when not sampled).
    pub threads: Option<crate::diag::threads::ThreadsEvidence>,
    /// How the words name the owner (`Process::label`); not in JSON.
    #[serde(skip)]
    pub label: Option<String>,
}

#[derive(Default)]
struct Acc {
    count: usize,
    peers: BTreeMap<crate::model::Endpoint, usize>,
    split: RecvQSplit,
    unread: u64,
    goodbye: usize,
    oldest: Option<u32>,
    idle: Vec<u32>,
}

type Key = (Option<u32>, Direction, u16, Owner);

/// The CLOSE_WAIT sockets of one process, direction and port that show
/// one kind, summed.
pub struct Held {
    pub evidence: CloseWaitEvidence,
    /// Every CLOSE_WAIT socket of that process, direction and port,
    /// whatever its kind.
    pub total: usize,
    /// The owner's runtime, for idioms in the words.
    pub runtime: Option<Runtime>,
}

/// The sockets of one kind: one [`Held`] per process, direction and port.
pub fn held(ctx: &Ctx, kind: CloseWaitKind) -> Vec<Held> {
    let mut agg: BTreeMap<Key, Acc> = BTreeMap::new();
    let mut totals: BTreeMap<Key, usize> = BTreeMap::new();
    // Recv-Q > 1 sockets per group, and how many of them look like a
    // goodbye, and whether any is too big to be one.
    let mut more: BTreeMap<Key, (usize, usize, bool)> = BTreeMap::new();
    let mut wanted: Vec<(Key, &Socket)> = Vec::new();
    for s in ctx.by_state.close_wait() {
        let dir = direction(s, ctx.listen_ports);
        let owner = owner_of(s, &ctx.snap.attribution);
        // Inbound sockets no process holds were never accepted: the
        // accept-queue rule reports them against their listener.
        if owner == Owner::None && dir == Direction::Inbound {
            continue;
        }
        let port = match dir {
            Direction::Inbound => s.local.port(),
            Direction::Outbound => s.peer.port(),
        };
        let key = (s.pid, dir, port, owner);
        *totals.entry(key).or_default() += 1;
        if s.recv_q > 1 {
            let m = more.entry(key).or_default();
            m.0 += 1;
            m.1 += usize::from(goodbye_like(s, dir, ctx.policy));
            m.2 |= s.recv_q - 1 > ctx.policy.goodbye_max_bytes;
        }
        wanted.push((key, s));
    }
    // One verdict per group: the unread data of one process's sockets to
    // one port is a goodbye only when none is too big for one and most
    // look like one. A FIN that came a little later on some sockets than
    // on others does not split the group between two rules.
    let goodbye_group = |key: &Key| {
        more.get(key)
            .is_some_and(|&(n, like, big)| !big && like * 2 > n)
    };
    for (key, s) in wanted {
        let r = reading(s, goodbye_group(&key));
        if r.kind != kind {
            continue;
        }
        let a = agg.entry(key).or_default();
        a.count += 1;
        if key.1 == Direction::Outbound {
            *a.peers.entry(s.peer).or_default() += 1;
        }
        match s.recv_q {
            0 => a.split.zero += 1,
            1 => a.split.one += 1,
            n => {
                a.split.more += 1;
                a.unread += u64::from(n - 1);
            }
        }
        a.goodbye += usize::from(r.goodbye);
        if let Some(t) = s.tcp_info {
            a.oldest = a.oldest.max(Some(t.last_ack_recv_ms));
        }
        a.idle.extend(r.idle_before_close_ms);
    }
    agg.into_iter()
        .map(|(key @ (pid, direction, port, owner), mut a)| {
            let process = pid.and_then(|p| ctx.snap.processes.get(&p));
            let mut peers: Vec<(crate::model::Endpoint, usize)> = a.peers.into_iter().collect();
            peers.sort_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(&y.0)));
            a.idle.sort_unstable();
            let runtime = process.and_then(Runtime::of);
            let peer_service = match (direction, peers.first()) {
                (Direction::Outbound, Some((busiest, _))) => PeerService::of(ctx.snap, *busiest),
                _ => None,
            };
            let e = CloseWaitEvidence {
                state: TcpState::CloseWait,
                count: a.count,
                pid,
                comm: process.map(|p| p.comm.clone()),
                owner,
                direction,
                port,
                peers: peers.into_iter().take(5).map(|p| p.0.to_string()).collect(),
                recv_q: a.split,
                unread_bytes: a.unread,
                goodbye: a.goodbye,
                oldest_age_ms: a.oldest,
                idle_before_close_ms: a.idle.get(a.idle.len() / 2).copied(),
                service: match direction {
                    Direction::Outbound => peer_service.as_ref().map(|p| p.name.clone()),
                    Direction::Inbound => Service::by_port(port).map(|s| s.name().to_string()),
                },
                peer_service,
                runtime: runtime.map(|r| r.name().to_string()),
                container: process.and_then(|p| p.container.clone()),
                libraries: process.map(|p| p.libraries.clone()).unwrap_or_default(),
                threads: pid.and_then(|p| crate::diag::threads::evidence(ctx.snap, &[p])),
                label: process.map(|p| p.label()),
            };
            Held {
                total: totals.get(&key).copied().unwrap_or(e.count),
                evidence: e,
                runtime,
            }
        })
        .collect()
}

/// Severity by count against the CLOSE_WAIT thresholds.
pub fn close_wait_severity(count: usize, p: &Policy) -> Severity {
    if count >= p.close_wait_crit {
        Severity::Critical
    } else if count >= p.close_wait_warn {
        Severity::Warning
    } else {
        Severity::Info
    }
}

/// `comm (pid N)` of the evidence.
pub fn owner_words(e: &CloseWaitEvidence) -> String {
    crate::diag::words::who(e.pid, e.label.as_deref().or(e.comm.as_deref())).to_string()
}

/// `inbound on port 8080` / `to 10.0.0.5:5432`.
pub fn place_words(e: &CloseWaitEvidence) -> String {
    crate::diag::words::Place {
        direction: e.direction,
        port: e.port,
        peers: &e.peers,
    }
    .to_string()
}

/// `, oldest ~2m` when ages are known.
pub fn age_words(e: &CloseWaitEvidence) -> String {
    e.oldest_age_ms
        .map(|ms| format!(", oldest ~{}", crate::units::age(ms)))
        .unwrap_or_default()
}

/// The sentence every CLOSE_WAIT hint ends with.
pub const NO_SYSCTL: &str =
    "No sysctl, keepalive or SO_LINGER setting fixes CLOSE_WAIT; only close() does.";

/// The owner could not be read: say so before the advice.
pub fn unknown_owner_prefix(e: &CloseWaitEvidence) -> &'static str {
    match e.owner {
        Owner::Unknown | Owner::NotResolved => {
            "The owning process could not be identified (run as root to read every /proc/PID/fd). "
        }
        _ => "",
    }
}

/// "What not to do" shared by the CLOSE_WAIT rules' write-ups.
pub const AVOID: &str = "No sysctl fixes CLOSE_WAIT: lowering tcp_keepalive_time only matters for SO_KEEPALIVE sockets and, when it kills one, leaves the fd leaked; tcp_fin_timeout is unrelated; SO_REUSEADDR and SO_LINGER do not act on a socket nobody close()s. `ss -K`/`cwdiag kill` send an RST but the fd stays leaked.";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::testkit::SnapBuilder;

    fn one(recv_q: u32, ages: (u32, u32, u32)) -> Reading {
        let s = SnapBuilder::new()
            .close_wait(
                "10.0.0.1:40000",
                "10.0.0.2:5432",
                recv_q,
                Some(7),
                Some(ages),
            )
            .build();
        read(&s.sockets[0], Direction::Outbound, &Policy::default())
    }

    #[test]
    fn readings_tell_a_goodbye_after_idling_from_a_stuck_reader() {
        // (last data sent, last data received, last ack received) ms ago.
        // PostgreSQL idle_session_timeout: the last query 12 s ago, error
        // and FIN 2 s ago.
        let r = one(118, (12_000, 2_000, 2_000));
        assert_eq!((r.kind, r.goodbye), (CloseWaitKind::NeverRead, true));
        assert_eq!(r.idle_before_close_ms, Some(10_000));
        // A response that arrived right after the request and was never
        // read, then the server closed: the reader is stuck.
        let r = one(5_000, (2_050, 2_000, 2_000));
        assert_eq!((r.kind, r.goodbye), (CloseWaitKind::UnreadData, false));
        // Data that came long before the FIN is unread data too.
        let r = one(300, (30_000, 30_000, 2_000));
        assert_eq!(r.kind, CloseWaitKind::UnreadData);
        assert_eq!(one(1, (9_000, 9_000, 1_000)).kind, CloseWaitKind::NeverRead);
        assert_eq!(
            one(0, (9_000, 9_000, 1_000)).kind,
            CloseWaitKind::EofNotClosed
        );
        // Inbound, a request that came with the FIN is still unread data.
        let s = SnapBuilder::new()
            .close_wait(
                "10.0.0.1:8080",
                "10.0.0.2:50000",
                300,
                Some(7),
                Some((60_000, 1_000, 1_000)),
            )
            .build();
        let r = read(&s.sockets[0], Direction::Inbound, &Policy::default());
        assert_eq!(r.kind, CloseWaitKind::UnreadData);
    }

    #[test]
    fn a_large_unread_body_is_never_a_goodbye() {
        // 348 KB left unread, arriving long after the request and just
        // before the FIN: too big for any server's last message.
        let r = one(348_001, (12_000, 2_000, 2_000));
        assert_eq!((r.kind, r.goodbye), (CloseWaitKind::UnreadData, false));
        // The same timing with 118 bytes is PostgreSQL's goodbye.
        assert!(one(118, (12_000, 2_000, 2_000)).goodbye);
    }

    #[test]
    fn the_fin_s_timing_does_not_split_one_group_between_rules() {
        use crate::diag::rules::RuleId;
        // One client, one server: responses read 5 ms after each request
        // never read; the server closed 996 ms or 1004 ms later.
        let mut b = SnapBuilder::new().process(50, "python3", Some(30), Some(1024));
        for i in 0..6u16 {
            let gap = if i % 2 == 0 { 996 } else { 1004 };
            b = b.close_wait(
                &format!("10.0.0.1:{}", 41_000 + i),
                "10.0.0.7:8080",
                700,
                Some(50),
                Some((2_000 + gap + 5, 2_000 + gap, 2_000)),
            );
        }
        // And a pool whose server said goodbye after idling, one of whose
        // goodbyes came late relative to the others.
        for i in 0..4u16 {
            let (sent, recv) = if i == 0 {
                (3_000, 2_600)
            } else {
                (12_000, 2_000)
            };
            b = b.close_wait(
                &format!("10.0.0.1:{}", 42_000 + i),
                "10.0.0.8:5432",
                118,
                Some(50),
                Some((sent, recv, 2_000)),
            );
        }
        let r = crate::diag::classify(&b.build(), &Default::default(), &Policy::default());
        let rules_for = |port: u16| -> Vec<RuleId> {
            r.findings
                .iter()
                .filter(|f| matches!(&f.evidence, crate::diag::Evidence::CloseWait(e) if e.port == port))
                .map(|f| f.rule_id)
                .collect()
        };
        assert_eq!(
            rules_for(8080),
            vec![RuleId::CloseWaitUnreadData],
            "{:#?}",
            r.findings
        );
        assert_eq!(
            rules_for(5432),
            vec![RuleId::CloseWaitNeverRead],
            "{:#?}",
            r.findings
        );
    }
}
