//! The diagnosis layer: pure functions from a [`Snapshot`] (and a
//! [`Policy`]) to a [`Report`]. No I/O here; time comes from the snapshot.
//!
//! Layers, each importing only those before it: `types` (thresholds,
//! groups, severities; a leaf), `words`, `host` and `peer`; `closes`
//! (what a snapshot or samples say about closes); `group`
//! (per-process and per-port groups); `rules` (one module per rule, and
//! `Finding`); `report` (what `scan` prints); `growth` (groups across
//! samples); `limits` (`cwdiag assert`).

pub mod clientlib;
pub mod closes;
pub mod group;
pub mod growth;
pub mod host;
pub mod limits;
pub mod listener;
pub mod peer;
pub mod report;
pub mod rules;
#[cfg(test)]
pub(crate) mod testkit;
pub mod threads;
pub mod types;
pub mod words;

pub use report::{REPORT_SCHEMA_VERSION, Report};
pub use rules::{Evidence, Finding, RuleId};
pub use types::{
    DEFAULT_PORT_BUDGET, Direction, Group, Owner, Policy, RecvQSplit, Severity, TIME_WAIT_LEN_S,
};

use crate::filter::Filter;
use crate::model::{Snapshot, Socket, TcpState};
use std::collections::BTreeMap;

pub fn classify(snap: &Snapshot, filter: &Filter, policy: &Policy) -> Report {
    classify_sampled(snap, filter, policy, None)
}

/// [`classify`] with the closes an event window counted in this
/// snapshot's namespace (`--window`): TIME_WAIT findings then carry the
/// exact closes, who closed them and whether they were sustained.
pub fn classify_events(
    snap: &Snapshot,
    filter: &Filter,
    policy: &Policy,
    events: &closes::EventCloses,
) -> Report {
    classify_measured(snap, filter, policy, None, Some(events))
}

/// [`classify`] with the closes measured across samples up to `snap`
/// (`scan --samples`, `watch`): TIME_WAIT findings and groups then say
/// whether a close rate was sustained.
pub fn classify_sampled(
    snap: &Snapshot,
    filter: &Filter,
    policy: &Policy,
    sampled: Option<&closes::SampledCloses>,
) -> Report {
    classify_measured(snap, filter, policy, sampled, None)
}

fn classify_measured(
    snap: &Snapshot,
    filter: &Filter,
    policy: &Policy,
    sampled: Option<&closes::SampledCloses>,
    events: Option<&closes::EventCloses>,
) -> Report {
    // Direction needs every listening port, whatever the filters say.
    let listen_ports = group::listen_ports(snap);
    // Only a process-name filter reads the owner.
    let by_name = !filter.comms.is_empty();
    let process_of = |s: &Socket| {
        s.pid
            .filter(|_| by_name)
            .and_then(|p| snap.processes.get(&p))
    };
    let selected: Vec<&Socket> = snap
        .sockets
        .iter()
        .filter(|s| filter.matches(s, process_of(s)))
        .collect();
    let by_state = rules::ByState::of(&selected);
    let states: BTreeMap<TcpState, usize> = TcpState::ALL
        .iter()
        .map(|&s| (s, by_state.count(s)))
        .collect();
    let t = std::time::Instant::now();
    let groups = group::groups(snap, &selected, &listen_ports, sampled, events);
    crate::collect::timing("classify: groups", t);
    let host = host::Host::of(snap);
    let ctx = rules::Ctx {
        snap,
        host,
        selected: &selected,
        by_state: &by_state,
        groups: &groups,
        states: &states,
        listen_ports: &listen_ports,
        policy,
        budget: group::port_budget(&host),
        filter,
        sampled,
        events,
    };
    let (attribution, owner_warning) = view_attribution(snap, &selected);
    let t = std::time::Instant::now();
    let mut findings = rules::run(&ctx);
    sort_findings(&mut findings);
    crate::collect::timing("classify: rules", t);

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
        initial_netns: snap.initial_netns,
        total: selected.len(),
        states,
        groups,
        findings,
        attribution,
        sysctls: snap.sysctls.clone(),
        counters: snap.counters.clone(),
        processes,
        warnings: snap.warnings.iter().cloned().chain(owner_warning).collect(),
        sockets: policy
            .sockets
            .then(|| selected.iter().map(|s| (*s).clone()).collect()),
        growth: None,
    }
}

/// Attribution of the sockets the filters selected, and the warning for
/// owners that stayed hidden among them: a filtered view reports only on
/// what it shows (a LISTEN socket hidden by `--state close-wait` is not
/// counted).
fn view_attribution(
    snap: &Snapshot,
    selected: &[&Socket],
) -> (crate::model::Attribution, Option<String>) {
    let mut a = snap.attribution.clone();
    if a.wanted_sockets == 0 {
        return (a, None);
    }
    let looked_up = |s: &&&Socket| {
        matches!(
            group::owner_of(s, &snap.attribution),
            Owner::Process | Owner::Unknown
        )
    };
    a.wanted_sockets = selected.iter().filter(looked_up).count();
    a.found_sockets = selected.iter().filter(|s| s.pid.is_some()).count();
    let hidden = a.wanted_sockets.saturating_sub(a.found_sockets);
    a.complete = hidden == 0 || a.unreadable_processes == 0;
    let warning = (!a.complete).then(|| {
        let why = if a.as_root {
            "their fds are closed even to root here"
        } else {
            "run as root to see every process"
        };
        format!(
            "{hidden} of {} sockets have no known owner: {} processes could not be inspected ({why})",
            a.wanted_sockets, a.unreadable_processes
        )
    });
    (a, warning)
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
    fn a_listener_hidden_by_the_filter_raises_no_owner_warning() {
        let mut snap = testkit::SnapBuilder::new()
            .close_wait("10.0.0.1:40000", "10.0.0.2:80", 1, Some(5), None)
            .build();
        // A listener whose owner could not be read (pid 1's fds, say).
        let mut l = snap.sockets[0].clone();
        l.state = TcpState::Listen;
        l.pid = None;
        l.inode = 4242;
        snap.sockets.push(l);
        snap.attribution.wanted_sockets = 2;
        snap.attribution.found_sockets = 1;
        snap.attribution.unreadable_processes = 1;
        snap.attribution.complete = false;
        let all = classify(&snap, &Filter::default(), &Policy::default());
        assert!(!all.attribution.complete);
        assert_eq!(all.warnings.len(), 1, "{:?}", all.warnings);
        assert!(all.warnings[0].starts_with("1 of 2 sockets have no known owner"));
        let cw = Filter {
            states: vec![TcpState::CloseWait],
            ..Filter::default()
        };
        let view = classify(&snap, &cw, &Policy::default());
        assert!(view.attribution.complete, "{:?}", view.attribution);
        assert_eq!(
            (
                view.attribution.wanted_sockets,
                view.attribution.found_sockets
            ),
            (1, 1)
        );
        assert!(view.warnings.is_empty(), "{:?}", view.warnings);
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
