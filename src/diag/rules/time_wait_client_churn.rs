//! `time-wait-client-churn`: TIME_WAIT towards one destination: this host
//! opens and closes connections instead of reusing them.

use super::time_wait::{
    TimeWaitEvidence, groups, port_hold_s, projected_ratio, towards_loopback, tw_reuse_words,
};
use super::{Ctx, Doc, Evidence, Finding, RuleId};
use crate::diag::types::{Direction, Severity};

pub const DOC: Doc = Doc {
    id: "time-wait-client-churn",
    title: "TIME_WAIT towards one destination",
    meaning: "This host opens and closes many short connections to one destination; each close holds a local port for 60 s. The budget per (source IP, destination IP, destination port) is ip_local_port_range minus ip_local_reserved_ports (28,232 by default, about 470 new connections/s). A socket with t seconds left was closed 60 - t seconds ago, so one snapshot counts closes within a window (how many closed in the last N seconds), not a rate that holds: a burst looks the same as the start of a steady churn. The share of the ports held now sets the severity; a projection to exhaustion needs a rate sustained across samples (scan --samples, watch), and the finding names its window.",
    confirm: "cwdiag scan --samples 5 --interval 2s measures whether the closes are sustained; ss -tan state time-wait dst IP:PORT | wc -l over time; the remaining-time histogram (time_wait_left_s) shows when the closes happened.",
    fix: "Reuse connections (HTTP keep-alive, pools sized to the real concurrency; Go's MaxIdleConnsPerHost defaults to 2). tcp_tw_reuse=1 lets outgoing connects reuse TIME_WAIT ports after 1 s when TCP timestamps are on (2, the default, does so for loopback only). SO_LINGER {1,0} skips TIME_WAIT but resets the connection: only where the protocol already confirmed delivery.",
    avoid: "Lowering tcp_fin_timeout does not shorten TIME_WAIT; tcp_tw_recycle broke clients behind NAT and was removed in Linux 4.12.",
};

/// One finding per destination, from what is known: critical when the
/// ports held now near the budget; a warning also when they are past half
/// of it, or when a close rate sustained across samples would hold half
/// of it within one port-hold time. A burst seen in one snapshot is worth
/// knowing, not a warning.
pub fn detect(ctx: &Ctx) -> Vec<Finding> {
    groups(ctx, Direction::Outbound)
        .into_iter()
        .map(|g| {
            let e = g.evidence;
            let hold = port_hold_s(ctx, towards_loopback(&e));
            // A projection only from a rate sustained across samples.
            let steady = projected_ratio(&e.closes, hold, ctx.budget);
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
    let service = e.peer_service.as_ref().and_then(|p| p.service);
    let svc = match &e.peer_service {
        Some(ps) => match ps.pid {
            Some(pid) => format!(" ({}, pid {pid}, on this host)", ps.name),
            None => format!(" ({})", ps.name),
        },
        None => String::new(),
    };
    let loopback = towards_loopback(e);
    let hold = port_hold_s(ctx, loopback);
    let sustainable = f64::from(budget) / f64::from(hold);
    let closes = e.closes.words();
    let pace = match e.closes.sustained_per_s {
        Some(r) if r >= sustainable => format!(
            "at the ~{r:.0}/s sustained over {:.1} s it outruns the ~{sustainable:.0}/s the range sustains",
            e.closes.window_s
        ),
        Some(r) => format!(
            "the ~{r:.0}/s sustained over {:.1} s is within the ~{sustainable:.0}/s the range sustains",
            e.closes.window_s
        ),
        None => format!(
            "one snapshot shows when they closed, not a rate that holds: `cwdiag scan --samples 5 --interval 2s` measures one against the ~{sustainable:.0}/s the range sustains"
        ),
    };
    (
        format!(
            "{} TIME_WAIT sockets towards {dest}{pct}: {closes}",
            e.count
        ),
        format!(
            "This host opens and closes connections to {dest}{svc}; each close holds a local port for {hold} s, so one destination sustains about {sustainable:.0} new connections/s; {pace}. Fix: {}. {}. SO_LINGER {{1,0}} skips TIME_WAIT only where an RST on close is acceptable. Lowering tcp_fin_timeout does not shorten TIME_WAIT.",
            crate::diag::peer::reuse_advice(service),
            tw_reuse_words(ctx, loopback)
        ),
    )
}

/// Samples 2 s apart of a client closing `per_interval` connections
/// every 2 s towards 10.0.0.8:5432 since the first sample (`busy`
/// intervals, then none), with tcp_tw_reuse off and this port range.
#[cfg(test)]
pub fn sampled(
    samples: u64,
    busy: u64,
    per_interval: u32,
    range: &str,
) -> Vec<crate::model::Snapshot> {
    use crate::diag::testkit::SnapBuilder;
    (0..samples)
        .map(|k| {
            let closed = per_interval * k.min(busy) as u32;
            let quiet_ms = 2000 * (k - k.min(busy)) as u32;
            let mut b = SnapBuilder::new()
                .sysctl("net.ipv4.tcp_tw_reuse", "0")
                .sysctl("net.ipv4.ip_local_port_range", range);
            for i in 0..closed {
                // Evenly over the busy intervals, the last close `quiet_ms` ago.
                let ago = quiet_ms + 2000 * (closed - 1 - i) / per_interval;
                b = b.time_wait(
                    &format!("10.0.0.1:{}", 20_000 + i),
                    "10.0.0.8:5432",
                    60_000 - ago,
                );
            }
            let mut s = b.build();
            s.taken_at_ms = 1_700_000_000_000 + 2000 * k;
            s
        })
        .collect()
}

#[cfg(test)]
const DEFAULT_RANGE: &str = "32768 60999";

#[cfg(test)]
pub fn cases() -> Vec<super::cases::Case> {
    use super::cases::{Case, fires, silent};
    use crate::diag::testkit::SnapBuilder;
    use crate::diag::types::Severity;
    let burst = SnapBuilder::new()
        .sysctl("net.ipv4.tcp_tw_reuse", "2")
        .time_waits("10.0.0.1", "10.0.0.9:8080", 3000, 9_000)
        .build();
    let steady = SnapBuilder::new()
        .time_waits("10.0.0.1", "10.0.0.8:5432", 300, 60_000)
        .build();
    // 1200 closes in 1.3 s, 4 % of the ports: one snapshot cannot tell a
    // burst that is over from a churn that goes on.
    let fast = SnapBuilder::new()
        .time_waits("10.0.0.1", "10.0.0.8:5432", 1200, 1_300)
        .build();
    // 1000 closes in every 2 s interval across 5 samples: 500/s
    // sustained, which would hold every port within 60 s.
    let sustained = Case {
        samples: sampled(5, 4, 1000, DEFAULT_RANGE),
        ..fires(
            "500 closes/s sustained over 8 s",
            steady.clone(),
            Severity::Warning,
        )
    };
    // The same 4000 closes within the first interval, none after: a
    // burst over, 14 % of the ports held.
    let burst_sampled = Case {
        samples: {
            let mut s = sampled(2, 1, 4000, DEFAULT_RANGE);
            s.extend(sampled(5, 1, 4000, DEFAULT_RANGE).into_iter().skip(2));
            s
        },
        ..fires(
            "4000 closes in 2 s, then none",
            steady.clone(),
            Severity::Info,
        )
    };
    let narrow = SnapBuilder::new()
        .sysctl("net.ipv4.ip_local_port_range", "40000 41999")
        .time_waits("10.0.0.1", "10.0.0.8:5432", 1700, 30_000)
        .build();
    vec![
        fires(
            "3000 closes within 9 s to one server",
            burst,
            Severity::Info,
        ),
        fires(
            "1200 closes within 1.3 s to one database",
            fast,
            Severity::Info,
        ),
        sustained,
        burst_sampled,
        fires("85 % of the ports held", narrow, Severity::Critical),
        silent("5 closes/s to one database", steady),
    ]
}

#[cfg(test)]
mod tests {
    use super::cases;
    use crate::diag::closes::CloseSource;
    use crate::diag::rules::{Evidence, RuleId, cases::findings_of};

    fn evidence(f: &crate::diag::Finding) -> &super::TimeWaitEvidence {
        let Evidence::TimeWait(e) = &f.evidence else {
            panic!("{f:?}")
        };
        e
    }

    #[test]
    fn a_snapshot_counts_closes_within_a_window_and_names_no_rate() {
        let f = &findings_of(RuleId::TimeWaitClientChurn, &cases()[1])[0];
        let e = evidence(f);
        assert_eq!(e.closes.measured_by, CloseSource::TimeWaitTimers);
        assert_eq!((e.closes.count, e.closes.window_s), (1200, 2.0));
        assert_eq!(e.closes.sustained_per_s, None);
        assert!(
            f.summary
                .ends_with("(4 % of 28232 ephemeral ports): 1200 closes within the last ~2 s"),
            "{}",
            f.summary
        );
        assert!(!f.summary.contains("/s"), "{}", f.summary);
        assert!(f.hint.contains("not a rate that holds"), "{}", f.hint);
        let f = &findings_of(RuleId::TimeWaitClientChurn, &cases()[0])[0];
        assert!(f.hint.contains("loopback connections only"), "{}", f.hint);
    }

    #[test]
    fn a_rate_sustained_across_samples_is_named_with_its_window() {
        let f = &findings_of(RuleId::TimeWaitClientChurn, &cases()[2])[0];
        let e = evidence(f);
        assert_eq!(e.closes.measured_by, CloseSource::Samples);
        assert_eq!((e.closes.count, e.closes.window_s), (4000, 8.0));
        assert_eq!(e.closes.sustained_per_s, Some(500.0));
        assert!(
            f.summary
                .ends_with(": ~500 closes/s sustained (4000 over 5 samples in 8.0 s)"),
            "{}",
            f.summary
        );
        assert!(
            f.hint
                .contains("at the ~500/s sustained over 8.0 s it outruns the ~471/s"),
            "{}",
            f.hint
        );
        // The burst of the same size: counted, no rate, no warning.
        let f = &findings_of(RuleId::TimeWaitClientChurn, &cases()[3])[0];
        let e = evidence(f);
        assert_eq!((e.closes.count, e.closes.sustained_per_s), (4000, None));
        assert!(f.summary.contains("no sustained rate"), "{}", f.summary);
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
        assert!(
            f.hint.contains("sustains about 28232 new connections/s"),
            "{}",
            f.hint
        );
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
