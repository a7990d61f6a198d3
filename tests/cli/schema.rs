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
    #[serde(default)]
    initial_netns: Option<bool>,
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
    cmdline: Option<Vec<String>>,
    cmdline_truncated: Option<bool>,
    exe: Option<String>,
    uid: Option<u32>,
    user: Option<String>,
    ppid: Option<u32>,
    started_at_ms: Option<u64>,
    fd_count: Option<u64>,
    nofile_soft: Option<u64>,
    nofile_hard: Option<u64>,
    cgroup: Option<String>,
    container: Option<String>,
    pod_uid: Option<String>,
    stale_socket_fds: Option<u64>,
    #[serde(default)]
    stale_socket_inodes: Vec<u64>,
    #[serde(default)]
    peer_connections: Vec<serde_json::Value>,
    runtime: Option<String>,
    #[serde(default)]
    libraries: Vec<Library>,
    threads: Option<ThreadSamples>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Library {
    name: String,
    version: Option<String>,
    seen_in: String,
    path: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct ThreadSamples {
    samples: u32,
    interval_ms: u32,
    threads_total: u64,
    threads: Vec<ThreadSample>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct ThreadSample {
    tid: u32,
    comm: String,
    seen: Vec<ThreadObservation>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct ThreadObservation {
    count: u32,
    state: String,
    wchan: Option<String>,
    syscall: Option<String>,
    fd: Option<u32>,
    socket_inode: Option<u32>,
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
    pod_uid: Option<String>,
    time_wait_left_s: Option<[u64; 6]>,
    closes: Option<Closes>,
}

/// The one close figure of groups and TIME_WAIT / port findings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Closes {
    count: u64,
    window_s: f64,
    measured_by: String,
    samples: u64,
    sustained_per_s: Option<f64>,
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
    evidence: serde_json::Value,
    hint: String,
}

/// Every field of each evidence shape, and which rules carry it: the
/// README's "Findings and evidence" table says the same.
const EVIDENCE: &[(&[&str], &[&str])] = &[
    (
        &[
            "close-wait-eof-not-closed",
            "close-wait-never-read",
            "close-wait-unread-data",
        ],
        &[
            "state",
            "count",
            "pid",
            "comm",
            "owner",
            "direction",
            "port",
            "peers",
            "recv_q",
            "unread_bytes",
            "goodbye",
            "oldest_age_ms",
            "idle_before_close_ms",
            "service",
            "peer_service",
            "runtime",
            "container",
            "libraries",
            "threads",
        ],
    ),
    (
        &["close-wait-growing"],
        &[
            "state",
            "count",
            "pid",
            "comm",
            "direction",
            "port",
            "delta",
            "rate_per_min",
            "first",
            "samples",
            "fd_count",
            "nofile_soft",
            "fd_limit_eta_s",
        ],
    ),
    (
        &["accept-queue-not-drained"],
        &[
            "state",
            "count",
            "port",
            "unaccepted_established",
            "unaccepted_close_wait",
            "listeners",
            "connection_holders",
            "listen_overflows",
            "listen_drops",
            "threads",
        ],
    ),
    (
        &["time-wait-server-closes", "time-wait-client-churn"],
        &[
            "state",
            "count",
            "direction",
            "port",
            "peer",
            "time_wait_left_s",
            "closes",
            "port_budget",
            "port_ratio",
            "peer_service",
        ],
    ),
    (
        &["ephemeral-ports-exhausted"],
        &[
            "state",
            "count",
            "local_ip",
            "peer",
            "port",
            "time_wait",
            "port_budget",
            "port_ratio",
            "closes",
            "sustainable_rate_per_s",
        ],
    ),
    (
        &[
            "time-wait-buckets-full",
            "sysctl-tcp-tw-recycle",
            "sysctl-fin-timeout-myth",
            "sysctl-keepalive-myth",
            "sysctl-abort-on-overflow",
            "orphans-near-limit",
        ],
        &[
            "state",
            "count",
            "sysctl",
            "value",
            "counter",
            "counter_value",
        ],
    ),
    (
        &["fd-exhaustion-risk"],
        &[
            "pid",
            "comm",
            "fd_count",
            "nofile_soft",
            "fd_ratio",
            "close_wait",
            "stale_socket_fds",
        ],
    ),
    (
        &["stale-socket-fds"],
        &[
            "count",
            "pid",
            "comm",
            "inodes",
            "pool_peer",
            "pool_connections",
            "peer_service",
        ],
    ),
];

/// Checks a finding's evidence has exactly its rule's fields; returns them.
fn evidence_fields(f: &Finding) -> &'static [&'static str] {
    let fields = EVIDENCE
        .iter()
        .find(|(rules, _)| rules.contains(&f.rule_id.as_str()))
        .unwrap_or_else(|| panic!("undocumented rule {}", f.rule_id))
        .1;
    let obj = f.evidence.as_object().expect("evidence is an object");
    let mut got: Vec<&str> = obj.keys().map(String::as_str).collect();
    let mut want = fields.to_vec();
    got.sort();
    want.sort();
    assert_eq!(got, want, "{} evidence fields", f.rule_id);
    fields
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
    #[serde(default)]
    as_root: bool,
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
    assert_eq!(r.schema_version, 3);
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
        evidence_fields(f);
        assert!(!f.hint.is_empty() && !f.summary.is_empty());
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
            .all(|f| f.evidence.get("pid").is_some() || f.evidence["state"] != "CLOSE_WAIT")
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
    let r = check(&["scan", "--json"]);
    // Owners carry who they are: /proc/PID/stat and status are readable
    // by everyone (an owner may exit before they are read: not all).
    assert!(
        r.processes.is_empty()
            || r.processes
                .values()
                .any(|p| p.ppid.is_some() && p.uid.is_some() && p.started_at_ms.is_some()),
        "{:?}",
        r.processes
    );
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
    state: Option<String>,
    max: u64,
    count: u64,
    ok: bool,
    offenders: Vec<Group>,
    growing: Vec<serde_json::Value>,
    stale: Vec<StaleHolder>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct StaleHolder {
    pid: u32,
    comm: String,
    count: u64,
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

/// A snapshot built to raise every single-snapshot rule at once.
fn every_rule_snapshot() -> String {
    let mut sockets = Vec::new();
    let sock = |state: &str, local: &str, peer: &str, recv_q: u32, inode: u32, pid: Option<u32>| {
        let mut v = serde_json::json!({
            "state": state, "local": local, "peer": peer, "timer": "off",
            "expires_ms": 0, "retrans": 0, "recv_q": recv_q, "send_q": 0,
            "uid": 0, "inode": inode, "cookie": inode,
        });
        if let Some(p) = pid {
            v["pid"] = p.into();
            v["fd"] = 10.into();
        }
        v
    };
    // CLOSE_WAIT: EOF read, never read, unread data; inbound on 8080.
    sockets.push(sock(
        "LISTEN",
        "10.0.0.1:8080",
        "0.0.0.0:0",
        5,
        100,
        Some(42),
    ));
    for (i, q) in [0u32, 1, 300].into_iter().enumerate() {
        for j in 0..4u32 {
            let peer = format!("10.1.{i}.{j}:50000");
            let mut v = sock(
                "CLOSE_WAIT",
                "10.0.0.1:8080",
                &peer,
                q,
                200 + i as u32 * 10 + j,
                Some(42),
            );
            v["tcp_info"] = serde_json::json!({"last_data_recv_ms": 9000, "last_ack_recv_ms": 5000, "last_data_sent_ms": 9000});
            sockets.push(v);
        }
    }
    // Never accepted: 3 gave up in the queue.
    for j in 0..3u32 {
        sockets.push(sock(
            "CLOSE_WAIT",
            "10.0.0.1:8080",
            &format!("10.2.0.{j}:51000"),
            50,
            0,
            None,
        ));
    }
    // 1100 TIME_WAIT to one destination out of a 2000-port range, and
    // 1000 on the listening port.
    for j in 0..1100u32 {
        let mut v = sock(
            "TIME_WAIT",
            &format!("10.0.0.1:{}", 40000 + j),
            "10.0.0.9:5432",
            0,
            0,
            None,
        );
        v["timer"] = "time-wait".into();
        v["expires_ms"] = (50_000 + j * 9).into();
        sockets.push(v);
    }
    for j in 0..1000u32 {
        let mut v = sock(
            "TIME_WAIT",
            "10.0.0.1:8080",
            &format!("10.3.{}.{}:52000", j / 200, j % 200),
            0,
            0,
            None,
        );
        v["timer"] = "time-wait".into();
        v["expires_ms"] = 30_000.into();
        sockets.push(v);
    }
    serde_json::json!({
        "schema_version": 1, "taken_at_ms": 1_700_000_000_000u64,
        "source": {"kind": "netlink"},
        "sockets": sockets,
        "processes": {"42": {"comm": "leaky", "fd_count": 1000, "nofile_soft": 1024,
            "stale_socket_fds": 2, "stale_socket_inodes": [77, 78]}},
        "attribution": {"complete": true, "wanted_sockets": 13, "found_sockets": 13,
            "scanned_processes": 1, "unreadable_processes": 0, "vanished_processes": 0},
        "sysctls": {
            "net.ipv4.ip_local_port_range": "40000 41999",
            "net.ipv4.tcp_tw_recycle": "1", "net.ipv4.tcp_abort_on_overflow": "1",
            "net.ipv4.tcp_fin_timeout": "15", "net.ipv4.tcp_keepalive_time": "600",
            "net.ipv4.tcp_max_tw_buckets": "2000", "net.ipv4.tcp_max_orphans": "100"
        },
        "counters": {"sockstat.TCP.orphan": 95, "TcpExt.TCPTimeWaitOverflow": 3},
        "warnings": []
    })
    .to_string()
}

#[test]
fn every_evidence_shape_matches_the_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("every-rule.json");
    std::fs::write(&path, every_rule_snapshot()).unwrap();
    let r = check(&["scan", "--json", "--from", path.to_str().unwrap()]);
    let mut seen: Vec<&str> = r.findings.iter().map(|f| f.rule_id.as_str()).collect();
    seen.sort();
    seen.dedup();
    let all: Vec<&str> = EVIDENCE
        .iter()
        .flat_map(|(rules, _)| rules.iter().copied())
        .filter(|r| *r != "close-wait-growing")
        .collect();
    for rule in all {
        assert!(seen.contains(&rule), "{rule} not raised: {seen:?}");
    }
}
