//! What the two TIME_WAIT rules share: TIME_WAIT per local listening
//! port (this host closed first as the server) and per destination (this
//! host closed first as the client), with close rates read from the
//! remaining times.

use super::Finding;
use super::{Ctx, Evidence, RuleId};
use crate::diag::group::{TimeWaitClock, direction, round3};
use crate::diag::types::{Direction, Severity};
use crate::model::{Socket, TcpState};
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
    /// Closes per second over the span the remaining times cover.
    pub close_rate_per_s: f64,
    /// Closes per second over the last 10 s.
    pub last_10s_close_rate_per_s: f64,
    /// Outbound: ephemeral ports per destination, and the share in use.
    pub port_budget: Option<u32>,
    pub port_ratio: Option<f64>,
    /// Outbound: the service at the destination (see the CLOSE_WAIT
    /// rules' field): named by its listener when it is on this host.
    pub peer_service: Option<crate::diag::listener::PeerService>,
}

pub fn detect(ctx: &Ctx) -> Vec<Finding> {
    let mut agg: BTreeMap<(Direction, u16, Option<String>), Vec<&Socket>> = BTreeMap::new();
    for s in ctx
        .selected
        .iter()
        .filter(|s| s.state == TcpState::TimeWait)
    {
        let d = direction(s, ctx.listen_ports);
        let key = match d {
            Direction::Inbound => (d, s.local.port(), None),
            Direction::Outbound => (d, s.peer.port(), Some(s.peer.to_string())),
        };
        agg.entry(key).or_default().push(s);
    }
    agg.into_iter()
        .filter(|(_, socks)| socks.len() >= ctx.policy.time_wait_warn)
        .map(|((direction, port, peer), socks)| {
            let clock = TimeWaitClock::of(socks.iter().copied());
            let outbound = direction == Direction::Outbound;
            let ratio = (outbound && ctx.budget > 0)
                .then(|| round3(clock.count as f64 / f64::from(ctx.budget)));
            let e = TimeWaitEvidence {
                state: TcpState::TimeWait,
                count: clock.count,
                direction,
                port,
                peer,
                time_wait_left_s: clock.left_s,
                close_rate_per_s: round3(clock.rate_per_s()),
                last_10s_close_rate_per_s: round3(clock.last_10s_rate_per_s()),
                port_budget: outbound.then_some(ctx.budget),
                port_ratio: ratio,
                peer_service: socks
                    .first()
                    .filter(|_| outbound)
                    .and_then(|s| crate::diag::listener::PeerService::of(ctx.snap, s.peer)),
            };
            let (rule_id, severity, summary, hint) = if outbound {
                // Critical when the ports held now near the budget; a
                // warning also when the recent close rate would hold half
                // of it after a whole TIME_WAIT length. Churn well inside
                // the budget is worth knowing, not a page.
                let rate = clock.rate_per_s().max(clock.last_10s_rate_per_s());
                let loopback = e
                    .peer
                    .as_deref()
                    .and_then(|p| p.parse::<std::net::SocketAddr>().ok())
                    .is_some_and(|a| a.ip().is_loopback());
                let hold = port_hold_s(ctx, loopback);
                let steady =
                    (ctx.budget > 0).then(|| rate * f64::from(hold) / f64::from(ctx.budget));
                let at = |r: Option<f64>, limit: f64| r.is_some_and(|r| r >= limit);
                let severity = if at(ratio, ctx.policy.port_ratio_crit) {
                    Severity::Critical
                } else if at(ratio, ctx.policy.port_ratio_warn)
                    || at(steady, ctx.policy.port_ratio_warn)
                {
                    Severity::Warning
                } else {
                    Severity::Info
                };
                let (s, h) = super::time_wait_client_churn::words(&e, ctx);
                (RuleId::TimeWaitClientChurn, severity, s, h)
            } else {
                let (s, h) = super::time_wait_server_closes::words(&e);
                (RuleId::TimeWaitServerCloses, Severity::Info, s, h)
            };
            Finding {
                rule_id,
                severity,
                summary,
                evidence: Evidence::TimeWait(e),
                hint,
            }
        })
        .collect()
}

/// What `tcp_tw_reuse` does on this host, for 0, 1 and 2 (ip-sysctl.rst;
/// `tcp_ipv4.c:tcp_twsk_unique`): it only ever applies to outgoing
/// connect(), and needs TCP timestamps.
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
