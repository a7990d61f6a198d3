//! `ephemeral-ports-exhausted`: local ports held towards one destination
//! against the ephemeral range (`inet_hashtables.c:__inet_hash_connect`
//! needs a free 4-tuple per connection).

use super::Finding;
use super::time_wait::tw_reuse_words;
use super::{Ctx, Doc, Evidence, RuleId};
use crate::diag::closes::Closes;
use crate::diag::group::round3;
use crate::diag::types::Severity;
use crate::model::{Socket, TcpState};
use serde::Serialize;
use std::net::{IpAddr, SocketAddr};

pub const DOC: Doc = Doc {
    id: "ephemeral-ports-exhausted",
    title: "Ephemeral ports towards one destination running out",
    meaning: "Local ports held (every state, TIME_WAIT included) per (source IP, destination IP, destination port) against ip_local_port_range minus ip_local_reserved_ports. At 100 % connect() fails with EADDRNOTAVAIL ('Cannot assign requested address'). Severity is the share held now. Whether the closes outrun what the range sustains (ports / 60 s, or / 1 s where tcp_tw_reuse applies) is said only for a rate sustained across samples (scan --samples, watch); one snapshot only counts the closes within a window.",
    confirm: "Application logs show EADDRNOTAVAIL; the ratio in the evidence approaches 1; sysctl net.ipv4.ip_local_port_range.",
    fix: "Reuse connections; add source IPs or destination addresses (the budget is per 4-tuple); tcp_tw_reuse=1 for outgoing connects with timestamps on; widen ip_local_port_range while reserving service ports with ip_local_reserved_ports.",
    avoid: "tcp_fin_timeout does not shorten TIME_WAIT; tcp_tw_recycle is gone; bind() before connect() takes ports exclusively unless IP_BIND_ADDRESS_NO_PORT is set.",
};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PortsEvidence {
    pub state: TcpState,
    /// Local ports held towards the destination, every state.
    pub count: usize,
    pub local_ip: String,
    pub peer: String,
    pub port: u16,
    pub time_wait: usize,
    pub port_budget: u32,
    pub port_ratio: f64,
    /// The closes, the window they were counted in and how.
    pub closes: Closes,
    /// With `--window`: the processes that closed, most first; null
    /// without a window.
    pub closers: Option<Vec<crate::diag::closes::Closer>>,
    /// port_budget / the port-hold time (60 s, or 1 s where tcp_tw_reuse
    /// applies): new connections per second the range sustains.
    pub sustainable_rate_per_s: f64,
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
    // Hashed while counting (this runs for every socket), sorted after.
    let mut per: rustc_hash::FxHashMap<(IpAddr, IpAddr, u16), (usize, Vec<&Socket>)> =
        Default::default();
    for s in ctx.selected {
        if s.state == TcpState::Listen
            || ctx.listen_ports.contains(&s.local.port())
            || s.peer.port() == 0
        {
            continue;
        }
        let a = per
            .entry((s.local.ip(), s.peer.ip(), s.peer.port()))
            .or_default();
        a.0 += 1;
        if s.state == TcpState::TimeWait {
            a.1.push(s);
        }
    }
    let budget = ctx.budget;
    let mut per: Vec<_> = per.into_iter().collect();
    per.sort_unstable_by_key(|e| e.0);
    per.into_iter()
        .filter(|(_, (held, _))| {
            budget > 0 && *held as f64 / f64::from(budget) >= ctx.policy.port_ratio_warn
        })
        .map(|((src, dst, dport), (held, tw))| {
            let peer = crate::model::Endpoint::from(std::net::SocketAddr::new(dst, dport));
            let (closes, closers) = super::time_wait::closes_of(
                ctx,
                (crate::diag::types::Direction::Outbound, dport, Some(peer)),
                |k| {
                    k.0 == crate::diag::types::Direction::Outbound
                        && k.1 == src
                        && k.3.is_some_and(|p| p.ip() == dst && p.port() == dport)
                },
                tw.iter().copied(),
            );
            let ratio = held as f64 / f64::from(budget);
            let severity = if ratio >= ctx.policy.port_ratio_crit {
                Severity::Critical
            } else {
                Severity::Warning
            };
            let dest = SocketAddr::new(dst, dport).to_string();
            let sustainable = f64::from(budget)
                / f64::from(super::time_wait::port_hold_s(ctx, dst.is_loopback()));
            let e = PortsEvidence {
                state: TcpState::TimeWait,
                count: held,
                local_ip: src.to_string(),
                peer: dest.clone(),
                port: dport,
                time_wait: tw.len(),
                port_budget: budget,
                port_ratio: round3(ratio),
                closes,
                closers: closers.clone(),
                sustainable_rate_per_s: round3(sustainable),
            };
            let said = super::time_wait::closes_words(&closes, closers.as_deref());
            let headroom = match closes.sustained_per_s {
                Some(r) if r >= sustainable => format!(
                    "{}, past the ~{sustainable:.0}/s the range sustains: connect() will fail with EADDRNOTAVAIL",
                    said
                ),
                Some(_) => format!(
                    "{}, within the ~{sustainable:.0}/s the range sustains",
                    said
                ),
                None => said,
            };
            Finding {
                rule_id: RuleId::EphemeralPortsExhausted,
                severity,
                summary: format!(
                    "{src} -> {dest} holds {held} of {budget} ephemeral ports ({:.0} %), {} in TIME_WAIT; {headroom}",
                    ratio * 100.0,
                    tw.len()
                ),
                hint: format!(
                    "Each connection to {dest} from {src} needs its own local port, and each close holds it for 60 s in TIME_WAIT; past {budget} ports connect() fails with EADDRNOTAVAIL. Fix: {}; spread over more source IPs or destination addresses; {}. Widening ip_local_port_range must not cover service ports (reserve them in ip_local_reserved_ports). tcp_fin_timeout does not shorten TIME_WAIT.",
                    crate::diag::peer::reuse_advice(crate::diag::peer::Service::by_port(dport)),
                    tw_reuse_words(ctx, dst.is_loopback())
                ),
                evidence: Evidence::Ports(e),
            }
        })
        .collect()
}

#[cfg(test)]
pub fn cases() -> Vec<super::cases::Case> {
    use super::cases::{fires, silent};
    use crate::diag::testkit::SnapBuilder;
    let narrow = |n: u32| {
        SnapBuilder::new()
            .sysctl("net.ipv4.ip_local_port_range", "40000 40999")
            .sysctl("net.ipv4.tcp_tw_reuse", "0")
            .time_waits("10.0.0.1", "10.0.0.9:5432", n, 9_000)
            .build()
    };
    vec![
        fires(
            "850 of 1000 ports in TIME_WAIT",
            narrow(850),
            Severity::Critical,
        ),
        fires("600 of 1000 ports", narrow(600), Severity::Warning),
        silent("300 of 1000 ports", narrow(300)),
    ]
}

#[cfg(test)]
mod tests {
    use super::cases;
    use crate::diag::Severity;
    use crate::diag::rules::{RuleId, cases::findings_of};

    #[test]
    fn headroom_is_judged_only_from_a_sustained_rate() {
        // One snapshot: the share held and the closes within a window.
        let f = &findings_of(RuleId::EphemeralPortsExhausted, &cases()[0])[0];
        assert!(
            f.summary
                .ends_with("(85 %), 850 in TIME_WAIT; 850 closes within the last ~9 s"),
            "{}",
            f.summary
        );
        assert!(f.hint.contains("tcp_tw_reuse is 0 (off)"), "{}", f.hint);
        // Port 5432 is PostgreSQL: a pool, not HTTP keep-alive.
        assert!(
            f.hint.contains("PgBouncer") && !f.hint.contains("HTTP"),
            "{}",
            f.hint
        );
        // 150 closes every 2 s across 5 samples: 75/s sustained, past
        // 1000 ports / 60 s.
        let case = crate::diag::rules::cases::Case {
            samples: crate::diag::rules::time_wait_client_churn::sampled(5, 4, 150, "40000 40999"),
            ..crate::diag::rules::cases::fires("sustained", narrow_empty(), Severity::Warning)
        };
        let f = &findings_of(RuleId::EphemeralPortsExhausted, &case)[0];
        assert_eq!(f.severity, Severity::Warning);
        assert!(
            f.summary.ends_with(
                "~75 closes/s sustained (600 over 5 samples in 8.0 s), past the ~17/s the range sustains: connect() will fail with EADDRNOTAVAIL"
            ),
            "{}",
            f.summary
        );
    }

    fn narrow_empty() -> crate::model::Snapshot {
        crate::diag::testkit::SnapBuilder::new().build()
    }
}
