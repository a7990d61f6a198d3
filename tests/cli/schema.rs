//! The JSON contract, pinned as ripgrep pins its own: the output must
//! deserialize into these mirror types, which reject unknown fields, so
//! any change to the schema is a deliberate change to this file too.

use crate::replay::fixture;
use crate::support::*;
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Report {
    schema_version: u32,
    taken_at_ms: u64,
    source: Source,
    states: BTreeMap<String, u64>,
    total: u64,
    groups: Vec<Group>,
    findings: Vec<Finding>,
    attribution: Attribution,
    sysctls: BTreeMap<String, String>,
    counters: BTreeMap<String, u64>,
    processes: BTreeMap<u32, Process>,
    warnings: Vec<String>,
    #[serde(default)]
    sockets: Option<Vec<serde_json::Value>>,
    #[serde(default)]
    growth: Option<Vec<serde_json::Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Process {
    comm: String,
    fd_count: Option<u64>,
    nofile_soft: Option<u64>,
    nofile_hard: Option<u64>,
    cgroup: Option<String>,
    container: Option<String>,
    stale_socket_fds: Option<u64>,
    #[serde(default)]
    stale_socket_inodes: Vec<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Source {
    kind: String,
    path: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Group {
    state: String,
    pid: Option<u32>,
    comm: Option<String>,
    owner: String,
    direction: String,
    port: u16,
    peer: Option<String>,
    count: u64,
    ipv4: u64,
    ipv6: u64,
    recv_q_bytes: u64,
    recv_q: RecvQ,
    oldest_age_ms: Option<u32>,
    median_age_ms: Option<u32>,
    container: Option<String>,
    time_wait_left_s: Option<[u64; 6]>,
    close_rate_per_s: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct RecvQ {
    zero: u64,
    one: u64,
    more: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Finding {
    rule_id: String,
    severity: String,
    summary: String,
    evidence: BTreeMap<String, serde_json::Value>,
    hint: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Attribution {
    complete: bool,
    wanted_sockets: u64,
    found_sockets: u64,
    scanned_processes: u64,
    unreadable_processes: u64,
    vanished_processes: u64,
    #[serde(default)]
    unreadable_pids: Vec<u32>,
}

const STATES: [&str; 11] = [
    "ESTABLISHED",
    "SYN_SENT",
    "SYN_RECV",
    "FIN_WAIT1",
    "FIN_WAIT2",
    "TIME_WAIT",
    "CLOSE",
    "CLOSE_WAIT",
    "LAST_ACK",
    "LISTEN",
    "CLOSING",
];

fn check(args: &[&str]) -> Report {
    let out = run(args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Report =
        serde_json::from_slice(&out.stdout).expect("output matches the documented schema");
    assert_eq!(r.schema_version, 1);
    assert_eq!(
        r.states
            .keys()
            .map(String::as_str)
            .collect::<std::collections::BTreeSet<_>>(),
        STATES.into()
    );
    for g in &r.groups {
        assert!(["inbound", "outbound"].contains(&g.direction.as_str()));
        assert_eq!(
            g.peer.is_none(),
            g.direction == "inbound",
            "peer is null exactly for inbound: {g:?}"
        );
        assert_eq!(g.pid.is_some(), g.owner == "process");
    }
    for f in &r.findings {
        assert!(["info", "warning", "critical"].contains(&f.severity.as_str()));
        assert!(
            f.rule_id
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '-'),
            "kebab-case: {}",
            f.rule_id
        );
        for key in ["state", "count"] {
            assert!(f.evidence.contains_key(key), "evidence has {key}: {f:?}");
        }
        assert!(!f.hint.is_empty());
    }
    r
}

#[test]
fn report_json_matches_the_schema() {
    let r = check(&["scan", "--json", "--from", &fixture("workload.dump")]);
    assert!(!r.findings.is_empty());
    assert!(
        r.findings
            .iter()
            .all(|f| f.evidence.contains_key("pid") || f.evidence["state"] != "CLOSE_WAIT")
    );
    let r = check(&[
        "scan",
        "--json",
        "--sockets",
        "--from",
        &fixture("workload.snapshot.json"),
    ]);
    assert_eq!(r.sockets.map(|s| s.len() as u64), Some(r.total));
}

#[test]
fn live_report_json_matches_the_schema() {
    check(&["scan", "--json"]);
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct AssertOutcome {
    schema_version: u32,
    ok: bool,
    source: Source,
    checks: Vec<Check>,
    attribution: Attribution,
    warnings: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Check {
    limit: String,
    state: String,
    max: u64,
    count: u64,
    ok: bool,
    offenders: Vec<Group>,
    growing: Vec<serde_json::Value>,
}

#[test]
fn assert_json_matches_the_schema() {
    let out = run(&[
        "assert",
        "--json",
        "--max-close-wait",
        "5",
        "--max-time-wait",
        "100",
        "--from",
        &fixture("workload.dump"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let o: AssertOutcome = serde_json::from_slice(&out.stdout).unwrap();
    assert!(!o.ok);
    assert_eq!(o.checks.len(), 2);
    assert_eq!((o.checks[0].count, o.checks[0].ok), (18, false));
    assert_eq!((o.checks[1].count, o.checks[1].ok), (30, true));
    assert!(!o.checks[0].offenders.is_empty());
}

/// `cwdiag kill --json`: the plan `kill --plan` reads back.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct KillPlan {
    schema_version: u32,
    kind: String,
    sockets: Vec<PlannedSocket>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct PlannedSocket {
    cookie: u64,
    state: String,
    local: String,
    peer: String,
    pid: Option<u64>,
    comm: Option<String>,
}

#[test]
fn kill_plan_json_matches_the_schema() {
    // A dry run touches nothing, and works for everyone.
    let out = run(&["kill", "--state", "close-wait,time-wait", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let p: KillPlan = serde_json::from_slice(&out.stdout).expect("plan matches the schema");
    assert_eq!((p.schema_version, p.kind.as_str()), (1, "cwdiag-kill-plan"));
    for s in &p.sockets {
        assert!(
            ["CLOSE_WAIT", "TIME_WAIT"].contains(&s.state.as_str()),
            "{s:?}"
        );
        assert_ne!(s.cookie, 0);
    }
}
