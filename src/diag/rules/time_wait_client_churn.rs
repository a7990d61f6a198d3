//! `time-wait-client-churn`: TIME_WAIT towards one destination: this host
//! opens and closes connections instead of reusing them.

use super::time_wait::{TimeWaitEvidence, groups, port_hold_s, towards_loopback, tw_reuse_words};
use super::{Ctx, Doc, Evidence, Finding, RuleId};
use crate::diag::types::{Direction, Severity};

pub const DOC: Doc = Doc {
    id: "time-wait-client-churn",
    title: "TIME_WAIT towards one destination",
    meaning: "This host opens and closes many short connections to one destination; each close holds a local port for 60 s. The budget per (source IP, destination IP, destination port) is ip_local_port_range minus ip_local_reserved_ports (28,232 by default, about 470 new connections/s). The close rate comes from the remaining times: a socket with t seconds left was closed 60 - t seconds ago.",
    confirm: "ss -tan state time-wait dst IP:PORT | wc -l over time; the group's remaining-time histogram (time_wait_left_s) shows when the closes happened.",
    fix: "Reuse connections (HTTP keep-alive, pools sized to the real concurrency; Go's MaxIdleConnsPerHost defaults to 2). tcp_tw_reuse=1 lets outgoing connects reuse TIME_WAIT ports after 1 s when TCP timestamps are on (2, the default, does so for loopback only). SO_LINGER {1,0} skips TIME_WAIT but resets the connection: only where the protocol already confirmed delivery.",
    avoid: "Lowering tcp_fin_timeout does not shorten TIME_WAIT; tcp_tw_recycle broke clients behind NAT and was removed in Linux 4.12.",
};

/// One finding per destination. Critical when the ports held now near the
/// budget; a warning also when the recent close rate would hold half of it
/// after a whole TIME_WAIT length. Churn well inside the budget is worth
/// knowing, not a page.
pub fn detect(ctx: &Ctx) -> Vec<Finding> {
    groups(ctx, Direction::Outbound)
        .into_iter()
        .map(|g| {
            let e = g.evidence;
            let hold = port_hold_s(ctx, towards_loopback(&e));
            let steady =
                (ctx.budget > 0).then(|| g.rate_per_s * f64::from(hold) / f64::from(ctx.budget));
            let at = |r: Option<f64>, limit: f64| r.is_some_and(|r| r >= limit);
            let severity = if at(e.port_ratio, ctx.policy.port_ratio_crit) {
                Severity::Critical
            } else if at(e.port_ratio, ctx.policy.port_ratio_warn)
                || at(steady, ctx.policy.port_ratio_warn)
            {
                Severity::Warning
            } else {
                Severity::Info
            };
            let (summary, hint) = words(&e, ctx);
            Finding {
                rule_id: RuleId::TimeWaitClientChurn,
                severity,
                summary,
                evidence: Evidence::TimeWait(e),
                hint,
            }
        })
        .collect()
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

pub fn words(e: &TimeWaitEvidence, ctx: &Ctx) -> (String, String) {
    let dest = e.peer.clone().unwrap_or_else(|| format!("port {}", e.port));
    let budget = e.port_budget.unwrap_or(ctx.budget);
    let pct = e
        .port_ratio
        .map(|r| format!(" ({:.0} % of {budget} ephemeral ports)", r * 100.0))
        .unwrap_or_default();
    let rate = e.close_rate_per_s.max(e.last_10s_close_rate_per_s);
    let service = crate::diag::peer::Service::by_port(e.port);
    let svc = service
        .map(|s| format!(" ({})", s.name()))
        .unwrap_or_default();
    let loopback = towards_loopback(e);
    let hold = port_hold_s(ctx, loopback);
    let sustainable = f64::from(budget) / f64::from(hold);
    (
        format!(
            "{} TIME_WAIT sockets towards {dest}{pct}: ~{rate:.0} closes/s against a sustainable ~{sustainable:.0}/s",
            e.count
        ),
        format!(
            "This host opens and closes connections to {dest}{svc}; each close holds a local port for {hold} s, so one destination sustains about {sustainable:.0} new connections/s, and it is closing ~{rate:.0}/s. Fix: {}. {}. SO_LINGER {{1,0}} skips TIME_WAIT only where an RST on close is acceptable. Lowering tcp_fin_timeout does not shorten TIME_WAIT.",
            crate::diag::peer::reuse_advice(service),
            tw_reuse_words(ctx, loopback)
        ),
    )
}

#[cfg(test)]
pub fn cases() -> Vec<super::cases::Case> {
    use super::cases::{fires, silent};
    use crate::diag::testkit::SnapBuilder;
    use crate::diag::types::Severity;
    let burst = SnapBuilder::new()
        .sysctl("net.ipv4.tcp_tw_reuse", "2")
        .time_waits("10.0.0.1", "10.0.0.9:8080", 3000, 9_000)
        .build();
    let steady = SnapBuilder::new()
        .time_waits("10.0.0.1", "10.0.0.9:8080", 300, 60_000)
        .build();
    // A script connecting to its database per query: 1200 closes over
    // 15 s (80/s), a sixth of what the port budget sustains.
    let modest = SnapBuilder::new()
        .time_waits("10.0.0.1", "10.0.0.8:5432", 1200, 15_000)
        .build();
    // 1200 closes in 2 s: at that rate the budget runs out (critical
    // only once the ports held near it).
    let fast = SnapBuilder::new()
        .time_waits("10.0.0.1", "10.0.0.8:5432", 1200, 2_000)
        .build();
    vec![
        fires("3000 closes in 9 s to one server", burst, Severity::Warning),
        fires("80 closes/s to one database", modest, Severity::Info),
        fires("600 closes/s to one database", fast, Severity::Warning),
        silent("5 closes/s to one server", steady),
    ]
}

#[cfg(test)]
mod tests {
    use super::cases;
    use crate::diag::rules::{Evidence, RuleId, cases::findings_of};

    #[test]
    fn the_rate_is_the_recent_one_and_tw_reuse_2_is_described_right() {
        let f = &findings_of(RuleId::TimeWaitClientChurn, &cases()[0])[0];
        let Evidence::TimeWait(e) = &f.evidence else {
            panic!()
        };
        // 3000 closes over 9 s: ~333/s (within 20 %), not 3000/60 = 50.
        assert!((e.close_rate_per_s - 333.0).abs() < 66.0, "{e:?}");
        assert!(f.summary.contains("closes/s"), "{}", f.summary);
        assert!(f.hint.contains("loopback connections only"), "{}", f.hint);
    }

    #[test]
    fn loopback_with_the_default_reuse_holds_ports_one_second() {
        use crate::diag::testkit::SnapBuilder;
        let snap = SnapBuilder::new()
            .sysctl("net.ipv4.tcp_tw_reuse", "2")
            .time_waits("127.0.0.1", "127.0.0.1:8080", 3000, 9_000)
            .build();
        let case = crate::diag::rules::cases::fires("lo", snap, crate::diag::Severity::Info);
        let f = &findings_of(RuleId::TimeWaitClientChurn, &case)[0];
        assert!(f.summary.contains("sustainable ~28232/s"), "{}", f.summary);
        assert!(f.hint.contains("holds a local port for 1 s"), "{}", f.hint);
    }
}
