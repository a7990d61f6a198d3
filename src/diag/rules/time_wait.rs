//! What the two TIME_WAIT rules share: TIME_WAIT per local listening
//! port (this host closed first as the server) and per destination (this
//! host closed first as the client), with the closes they show (counted
//! within a window by the remaining times, or measured across samples:
//! see `diag/closes.rs`).

use super::Ctx;
use crate::diag::closes::{CloseKey, Closer, Closes};
use crate::diag::group::{direction as direction_of, left_s, round3};
use crate::diag::types::Direction;
use crate::model::{Endpoint, Socket, TcpState};
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimeWaitEvidence {
    pub state: TcpState,
    pub count: usize,
    pub direction: Direction,
    /// Local port (inbound) or destination port (outbound).
    pub port: u16,
    /// The destination, for outbound findings.
    pub peer: Option<String>,
    /// Sockets by seconds left: [0,10) .. [50,60].
    pub time_wait_left_s: [usize; 6],
    /// The closes, the window they were counted in and how.
    pub closes: Closes,
    /// With `--window`: the processes whose close() began these
    /// connections' way to TIME_WAIT, most first; null without a window.
    pub closers: Option<Vec<Closer>>,
    /// Outbound: ephemeral ports per destination, and the share in use.
    pub port_budget: Option<u32>,
    pub port_ratio: Option<f64>,
    /// Outbound: the service at the destination (see the CLOSE_WAIT
    /// rules' field): named by its listener when it is on this host.
    pub peer_service: Option<crate::diag::listener::PeerService>,
}

/// The TIME_WAIT sockets of one direction, grouped per local listening
/// port (inbound) or destination (outbound), for groups of at least the
/// TIME_WAIT threshold.
pub struct Churn {
    pub evidence: TimeWaitEvidence,
}

/// The closes towards (or on) one key: measured across samples when
/// there were samples, else counted by the remaining times of `socks`.
/// With an event window, the exact closes on `port` (inbound) or towards
/// `peer` (outbound) and the processes that closed them.
pub fn closes_of<'a>(
    ctx: &Ctx,
    (direction, port, peer): (Direction, u16, Option<Endpoint>),
    take: impl Fn(&CloseKey) -> bool,
    socks: impl IntoIterator<Item = &'a Socket>,
) -> (Closes, Option<Vec<Closer>>) {
    if let Some(ev) = ctx.events {
        let (c, who) = ev.closes(direction, port, peer);
        return (c, Some(who));
    }
    let c = ctx
        .sampled
        .and_then(|m| m.closes(take))
        .unwrap_or_else(|| Closes::from_timers(socks));
    (c, None)
}

/// The closes in words, naming the closers when the tracepoints did.
pub fn closes_words(c: &Closes, closers: Option<&[Closer]>) -> String {
    c.words_by(closers.unwrap_or(&[]))
}

/// Ports the closes would hold at the rate sustained across samples, as
/// a share of `budget`; None without a sustained measurement.
pub fn projected_ratio(c: &Closes, hold_s: u32, budget: u32) -> Option<f64> {
    let r = c.sustained_per_s?;
    (budget > 0).then(|| (r * f64::from(hold_s)).min(f64::from(budget)) / f64::from(budget))
}

pub fn groups(ctx: &Ctx, direction: Direction) -> Vec<Churn> {
    let mut agg: BTreeMap<(u16, Option<Endpoint>), Vec<&Socket>> = BTreeMap::new();
    for s in ctx.by_state.time_wait() {
        let d = direction_of(s, ctx.listen_ports);
        if d != direction {
            continue;
        }
        let key = match d {
            Direction::Inbound => (s.local.port(), None),
            Direction::Outbound => (s.peer.port(), Some(s.peer)),
        };
        agg.entry(key).or_default().push(s);
    }
    agg.into_iter()
        .filter(|(_, socks)| socks.len() >= ctx.policy.time_wait_warn)
        .map(|((port, peer), socks)| {
            let (closes, closers) = closes_of(
                ctx,
                (direction, port, peer),
                |k| k.0 == direction && k.2 == port && k.3 == peer,
                socks.iter().copied(),
            );
            let outbound = direction == Direction::Outbound;
            let ratio = (outbound && ctx.budget > 0)
                .then(|| round3(socks.len() as f64 / f64::from(ctx.budget)));
            Churn {
                evidence: TimeWaitEvidence {
                    state: TcpState::TimeWait,
                    count: socks.len(),
                    direction,
                    port,
                    peer: peer.map(|p| p.to_string()),
                    time_wait_left_s: left_s(socks.iter().copied()),
                    closes,
                    closers,
                    port_budget: outbound.then_some(ctx.budget),
                    port_ratio: ratio,
                    peer_service: peer
                        .filter(|_| outbound)
                        .and_then(|p| crate::diag::listener::PeerService::of(ctx.snap, p)),
                },
            }
        })
        .collect()
}

/// Is the destination of this evidence a loopback address?
pub fn towards_loopback(e: &TimeWaitEvidence) -> bool {
    e.peer
        .as_deref()
        .and_then(|p| p.parse::<std::net::SocketAddr>().ok())
        .is_some_and(|a| a.ip().is_loopback())
}

/// Seconds a local port stays unusable after a close towards this
/// destination: 1 when tcp_tw_reuse applies (1, or the default 2 towards
/// loopback, with timestamps on), else the whole TIME_WAIT.
pub fn port_hold_s(ctx: &Ctx, loopback: bool) -> u32 {
    use crate::diag::host::Sysctl;
    let timestamps = ctx.host.sysctl_u64(Sysctl::TcpTimestamps) != Some(0);
    let reuse = match ctx.host.sysctl_u64(Sysctl::TcpTwReuse) {
        Some(1) => true,
        Some(2) | None => loopback,
        _ => false,
    };
    if timestamps && reuse {
        1
    } else {
        crate::diag::types::TIME_WAIT_LEN_S
    }
}

/// What `tcp_tw_reuse` does on this host, for 0, 1 and 2 (ip-sysctl.rst;
/// `tcp_ipv4.c:tcp_twsk_unique`): it only ever applies to outgoing
/// connect(), and needs TCP timestamps.
pub fn tw_reuse_words(ctx: &Ctx, loopback: bool) -> String {
    use crate::diag::host::Sysctl;
    let reuse = ctx.host.sysctl_u64(Sysctl::TcpTwReuse);
    if ctx.host.sysctl_u64(Sysctl::TcpTimestamps) == Some(0) {
        return "tcp_tw_reuse needs tcp_timestamps, which is off here".to_string();
    }
    match reuse {
        Some(1) => "tcp_tw_reuse is already 1: outgoing connects reuse TIME_WAIT ports older than 1 s, so the churn outruns even that".to_string(),
        Some(2) if loopback => "tcp_tw_reuse is 2 (the default): outgoing connects to loopback already reuse TIME_WAIT ports after 1 s".to_string(),
        Some(2) | None => "tcp_tw_reuse=2 (the default) reuses TIME_WAIT ports for loopback connections only; 1 extends it to every outgoing connect (after 1 s, with timestamps on)".to_string(),
        Some(0) => "tcp_tw_reuse is 0 (off): 1 lets outgoing connects reuse TIME_WAIT ports after 1 s, with timestamps on".to_string(),
        Some(v) => format!("tcp_tw_reuse is {v}, not a value the kernel documents (0, 1 or 2)"),
    }
}
