//! `time-wait-client-churn`: TIME_WAIT towards one destination: this host
//! opens and closes connections instead of reusing them.

use super::time_wait::{TimeWaitEvidence, tw_reuse_words};
use super::{Ctx, Doc};

pub const DOC: Doc = Doc {
    id: "time-wait-client-churn",
    title: "TIME_WAIT towards one destination",
    meaning: "This host opens and closes many short connections to one destination; each close holds a local port for 60 s. The budget per (source IP, destination IP, destination port) is ip_local_port_range minus ip_local_reserved_ports (28,232 by default, about 470 new connections/s). The close rate comes from the remaining times: a socket with t seconds left was closed 60 - t seconds ago.",
    confirm: "ss -tan state time-wait dst IP:PORT | wc -l over time; the group's remaining-time histogram (time_wait_left_s) shows when the closes happened.",
    fix: "Reuse connections (HTTP keep-alive, pools sized to the real concurrency; Go's MaxIdleConnsPerHost defaults to 2). tcp_tw_reuse=1 lets outgoing connects reuse TIME_WAIT ports after 1 s when TCP timestamps are on (2, the default, does so for loopback only). SO_LINGER {1,0} skips TIME_WAIT but resets the connection: only where the protocol already confirmed delivery.",
    avoid: "Lowering tcp_fin_timeout does not shorten TIME_WAIT; tcp_tw_recycle broke clients behind NAT and was removed in Linux 4.12.",
};

pub fn words(e: &TimeWaitEvidence, ctx: &Ctx) -> (String, String) {
    let dest = e.peer.clone().unwrap_or_else(|| format!("port {}", e.port));
    let budget = e.port_budget.unwrap_or(ctx.budget);
    let pct = e
        .port_ratio
        .map(|r| format!(" ({:.0} % of {budget} ephemeral ports)", r * 100.0))
        .unwrap_or_default();
    let rate = e.close_rate_per_s.max(e.last_10s_close_rate_per_s);
    let service = e.peer_service.as_ref().and_then(|p| p.service);
    let svc = match &e.peer_service {
        Some(ps) => match ps.pid {
            Some(pid) => format!(" ({}, pid {pid}, on this host)", ps.name),
            None => format!(" ({})", ps.name),
        },
        None => String::new(),
    };
    let loopback = e
        .peer
        .as_deref()
        .and_then(|p| p.parse::<std::net::SocketAddr>().ok())
        .is_some_and(|a| a.ip().is_loopback());
    let hold = super::time_wait::port_hold_s(ctx, loopback);
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

    #[test]
    fn churn_towards_a_local_server_names_it_by_its_listener() {
        use crate::diag::testkit::SnapBuilder;
        // A script connecting per query to a PostgreSQL on port 6000.
        let mut snap = SnapBuilder::new()
            .listen("127.0.0.1:6000", Some(9), 0, 128)
            .time_waits("127.0.0.1", "127.0.0.1:6000", 1500, 9_000)
            .build();
        let mut pg = crate::model::Process::named("postgres");
        pg.exe = Some("/usr/lib/postgresql/15/bin/postgres".into());
        pg.cmdline = Some(vec!["postgres".into(), "-p".into(), "6000".into()]);
        snap.processes.insert(9, pg);
        let case = crate::diag::rules::cases::fires("local pg", snap, crate::diag::Severity::Info);
        let f = &findings_of(RuleId::TimeWaitClientChurn, &case)[0];
        assert!(
            f.hint.contains("(PostgreSQL, pid 9, on this host)"),
            "{}",
            f.hint
        );
        assert!(
            f.hint.contains("database connections through a pool"),
            "{}",
            f.hint
        );
        let Evidence::TimeWait(e) = &f.evidence else {
            panic!()
        };
        assert_eq!(
            e.peer_service.as_ref().map(|p| p.source),
            Some(crate::diag::listener::ServiceSource::Listener)
        );
        // A remote destination on 6000: nothing to name it by.
        let remote = SnapBuilder::new()
            .time_waits("10.0.0.1", "10.0.0.9:6000", 1500, 9_000)
            .build();
        let case = crate::diag::rules::cases::fires("remote", remote, crate::diag::Severity::Info);
        let f = &findings_of(RuleId::TimeWaitClientChurn, &case)[0];
        let Evidence::TimeWait(e) = &f.evidence else {
            panic!()
        };
        assert!(e.peer_service.is_none());
        assert!(!f.hint.contains("PostgreSQL"), "{}", f.hint);
    }
}
