//! The diagnosis layer: pure functions from a [`Snapshot`] (and a
//! [`Policy`]) to a [`Report`]. No I/O here; time comes from the snapshot.
//!
//! `report` holds the types and imports nothing else of this layer;
//! `group` builds the per-process and per-port groups; `rules` holds one
//! module per rule; `growth` follows groups across samples; `limits`
//! evaluates `cwdiag assert`.

pub mod group;
pub mod growth;
pub mod host;
pub mod limits;
pub mod peer;
pub mod report;
pub mod rules;
#[cfg(test)]
pub(crate) mod testkit;
pub mod words;

pub use report::{
    DEFAULT_PORT_BUDGET, Direction, Finding, Group, Owner, Policy, RecvQSplit, Report, Severity,
    TIME_WAIT_LEN_S,
};
pub use rules::{Evidence, RuleId};

use crate::filter::Filter;
use crate::model::{Snapshot, Socket, TcpState};
use std::collections::BTreeMap;

pub fn classify(snap: &Snapshot, filter: &Filter, policy: &Policy) -> Report {
    // Direction needs every listening port, whatever the filters say.
    let listen_ports = group::listen_ports(snap);
    let comm_of = |s: &Socket| {
        s.pid
            .and_then(|p| snap.processes.get(&p))
            .map(|p| p.comm.as_str())
    };
    let selected: Vec<&Socket> = snap
        .sockets
        .iter()
        .filter(|s| filter.matches(s, comm_of(s)))
        .collect();
    let mut states: BTreeMap<TcpState, usize> = TcpState::ALL.iter().map(|&s| (s, 0)).collect();
    for s in &selected {
        *states.entry(s.state).or_default() += 1;
    }
    let groups = group::groups(snap, &selected, &listen_ports);
    let host = host::Host::of(snap);
    let ctx = rules::Ctx {
        snap,
        host,
        selected: &selected,
        groups: &groups,
        states: &states,
        listen_ports: &listen_ports,
        policy,
        budget: group::port_budget(&host),
        filter,
    };
    let mut findings = rules::run(&ctx);
    sort_findings(&mut findings);

    let processes = groups
        .iter()
        .filter_map(|g| g.pid)
        .chain(
            snap.processes
                .iter()
                .filter(|(pid, p)| {
                    p.stale_socket_fds.is_some_and(|n| n > 0) && ctx.selected_pid(**pid)
                })
                .map(|(pid, _)| *pid),
        )
        .filter_map(|pid| Some((pid, snap.processes.get(&pid)?.clone())))
        .collect();
    Report {
        schema_version: report::REPORT_SCHEMA_VERSION,
        taken_at_ms: snap.taken_at_ms,
        source: snap.source.clone(),
        netns: snap.netns.clone(),
        total: selected.len(),
        states,
        groups,
        findings,
        attribution: snap.attribution.clone(),
        sysctls: snap.sysctls.clone(),
        counters: snap.counters.clone(),
        processes,
        warnings: snap.warnings.clone(),
        sockets: policy
            .sockets
            .then(|| selected.iter().map(|s| (*s).clone()).collect()),
        growth: None,
    }
}

/// Most severe first, then the biggest.
pub fn sort_findings(findings: &mut [Finding]) {
    findings.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then(b.evidence.count().cmp(&a.evidence.count()))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload() -> Snapshot {
        serde_json::from_str(include_str!("../../fixtures/workload.snapshot.json")).unwrap()
    }

    #[test]
    fn the_captured_workload_reads_as_three_close_wait_patterns() {
        let r = classify(&workload(), &Filter::default(), &Policy::default());
        let mut got: Vec<(RuleId, Severity, usize)> = r
            .findings
            .iter()
            .map(|f| (f.rule_id, f.severity, f.evidence.count()))
            .collect();
        got.sort();
        // 18 CLOSE_WAIT on one server port: the pile decides severity.
        assert_eq!(
            got,
            vec![
                (RuleId::CloseWaitEofNotClosed, Severity::Warning, 6),
                (RuleId::CloseWaitNeverRead, Severity::Warning, 8),
                (RuleId::CloseWaitUnreadData, Severity::Warning, 4),
            ]
        );
        let cw: usize = r
            .groups
            .iter()
            .filter(|g| g.state == TcpState::CloseWait)
            .map(|g| g.count)
            .sum();
        assert_eq!(cw, 18);
        for g in &r.groups {
            match g.direction {
                Direction::Inbound => assert!(g.peer.is_none()),
                Direction::Outbound => assert!(g.peer.is_some()),
            }
        }
    }

    #[test]
    fn filtered_views_report_only_what_they_show() {
        let f = Filter {
            states: vec![TcpState::TimeWait],
            ..Filter::default()
        };
        let r = classify(&workload(), &f, &Policy::default());
        assert!(
            r.findings
                .iter()
                .all(|f| !matches!(f.evidence, Evidence::CloseWait(_)))
        );
        assert_eq!(r.states[&TcpState::CloseWait], 0);
    }
}
