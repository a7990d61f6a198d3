//! What the two TIME_WAIT rules share: TIME_WAIT per local listening
//! port (this host closed first as the server) and per destination (this
//! host closed first as the client), with the closes they show (counted
//! within a window by the remaining times, or measured across samples:
//! see `diag/closes.rs`).

use super::Finding;
use super::{Ctx, Evidence, RuleId};
use crate::diag::closes::{CloseKey, Closes};
use crate::diag::group::{direction, left_s, round3};
use crate::diag::types::{Direction, Severity};
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
    /// Outbound: ephemeral ports per destination, and the share in use.
    pub port_budget: Option<u32>,
    pub port_ratio: Option<f64>,
}

/// The closes towards (or on) one key: measured across samples when
/// there were samples, else counted by the remaining times of `socks`.
pub fn closes_of<'a>(
    ctx: &Ctx,
    take: impl Fn(&CloseKey) -> bool,
    socks: impl IntoIterator<Item = &'a Socket>,
) -> Closes {
    ctx.sampled
        .and_then(|m| m.closes(take))
        .unwrap_or_else(|| Closes::from_timers(socks))
}

/// Ports the closes would hold at the rate sustained across samples, as
/// a share of `budget`; None without a sustained measurement.
pub fn projected_ratio(c: &Closes, hold_s: u32, budget: u32) -> Option<f64> {
    let r = c.sustained_per_s?;
    (budget > 0).then(|| (r * f64::from(hold_s)).min(f64::from(budget)) / f64::from(budget))
}

pub fn detect(ctx: &Ctx) -> Vec<Finding> {
    let mut agg: BTreeMap<(Direction, u16, Option<Endpoint>), Vec<&Socket>> = BTreeMap::new();
    for s in ctx
        .selected
        .iter()
        .filter(|s| s.state == TcpState::TimeWait)
    {
        let d = direction(s, ctx.listen_ports);
        let key = match d {
            Direction::Inbound => (d, s.local.port(), None),
            Direction::Outbound => (d, s.peer.port(), Some(s.peer)),
        };
        agg.entry(key).or_default().push(s);
    }
    agg.into_iter()
        .filter(|(_, socks)| socks.len() >= ctx.policy.time_wait_warn)
        .map(|((direction, port, peer), socks)| {
            let closes = closes_of(
                ctx,
                |k| k.0 == direction && k.2 == port && k.3 == peer,
                socks.iter().copied(),
            );
            let outbound = direction == Direction::Outbound;
            let ratio = (outbound && ctx.budget > 0)
                .then(|| round3(socks.len() as f64 / f64::from(ctx.budget)));
            let e = TimeWaitEvidence {
                state: TcpState::TimeWait,
                count: socks.len(),
                direction,
                port,
                peer: peer.map(|p| p.to_string()),
                time_wait_left_s: left_s(socks.iter().copied()),
                closes,
                port_budget: outbound.then_some(ctx.budget),
                port_ratio: ratio,
            };
            let (rule_id, severity, summary, hint) = if outbound {
                // From what is known: the share of the ports held now;
                // a projection only from a rate sustained across samples
                // (what it would hold after one port-hold time). A burst
                // seen in one snapshot is worth knowing, not a warning.
                let loopback = peer.is_some_and(|p| p.ip().is_loopback());
                let projected = projected_ratio(&closes, port_hold_s(ctx, loopback), ctx.budget);
                let at = |r: Option<f64>, limit: f64| r.is_some_and(|r| r >= limit);
                let severity = if at(ratio, ctx.policy.port_ratio_crit) {
                    Severity::Critical
                } else if at(ratio, ctx.policy.port_ratio_warn)
                    || at(projected, ctx.policy.port_ratio_warn)
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
