//! Replays of captures: our own fixtures (made by fixtures/make-fixtures.sh
//! from a real workload) and dumps from other projects in ../shared.

use crate::support::*;
use std::path::PathBuf;

pub fn fixture(name: &str) -> String {
    format!("{}/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// `../shared/external-fixtures/NAME`, if that checkout is present.
pub fn external(name: &str) -> Option<String> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/external-fixtures")
        .join(name);
    if p.exists() {
        Some(p.display().to_string())
    } else {
        skip_optional(&format!(
            "{} not found (another project's capture, beside the repository only in some checkouts)",
            p.display()
        ));
        None
    }
}

/// A snapshot JSON with `n` CLOSE_WAIT sockets, for large outputs.
pub fn synthetic_snapshot(n: usize) -> String {
    let sockets: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            serde_json::json!({
                "state": "CLOSE_WAIT", "local": "10.0.0.1:8080",
                "peer": format!("10.9.{}.{}:{}", i / 250 % 250, i % 250, 1024 + i % 60000),
                "timer": "off", "expires_ms": 0, "retrans": 0, "recv_q": 1, "send_q": 0,
                "uid": 0, "inode": 1000 + i, "cookie": i, "pid": 42, "fd": 10 + i
            })
        })
        .collect();
    serde_json::json!({
        "schema_version": 1, "taken_at_ms": 0,
        "source": {"kind": "netlink"},
        "sockets": sockets,
        "processes": {"42": {"comm": "leaky"}},
        "attribution": {"complete": true, "wanted_sockets": n, "found_sockets": n,
            "scanned_processes": 1, "unreadable_processes": 0, "vanished_processes": 0},
        "sysctls": {}, "warnings": []
    })
    .to_string()
}

/// Expected state counts from `ss -tan` at capture time.
fn ss_counts_file() -> std::collections::BTreeMap<String, u64> {
    let text = std::fs::read_to_string(fixture("workload.ss-counts.txt")).unwrap();
    text.lines()
        .map(|l| {
            let mut it = l.split_whitespace();
            let n: u64 = it.next().unwrap().parse().unwrap();
            let name = match it.next().unwrap() {
                "ESTAB" => "ESTABLISHED",
                "CLOSE-WAIT" => "CLOSE_WAIT",
                "FIN-WAIT-2" => "FIN_WAIT2",
                "TIME-WAIT" => "TIME_WAIT",
                "LISTEN" => "LISTEN",
                other => panic!("unexpected state {other} in fixture"),
            };
            (name.to_string(), n)
        })
        .collect()
}

#[test]
fn ss_dump_record_and_snapshot_of_one_workload_agree() {
    let want = ss_counts_file();
    let ss = json(&["scan", "--json", "--from", &fixture("workload.ss-dump")]);
    let rec = json(&["scan", "--json", "--from", &fixture("workload.dump")]);
    let snap = json(&[
        "scan",
        "--json",
        "--from",
        &fixture("workload.snapshot.json"),
    ]);
    for r in [&ss, &rec, &snap] {
        assert_eq!(nonzero_states(r), want);
        assert_eq!(
            close_wait_groups(r, 8080).iter().map(|g| g.1).sum::<u64>(),
            18
        );
    }
    // The recording carries owners; the bare ss dump cannot.
    assert!(close_wait_groups(&rec, 8080).iter().all(|g| g.0.is_some()));
    assert!(close_wait_groups(&ss, 8080).iter().all(|g| g.0.is_none()));
    // Two captures a few ms apart: equal but for the age estimates.
    let strip = |r: &serde_json::Value| {
        let mut g = r["groups"].clone();
        for x in g.as_array_mut().unwrap() {
            x["oldest_age_ms"] = serde_json::Value::Null;
            x["median_age_ms"] = serde_json::Value::Null;
        }
        g
    };
    assert_eq!(strip(&rec), strip(&snap));
    // Same findings, whether from the recording or the snapshot.
    let ids = |r: &serde_json::Value| -> Vec<String> {
        r["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["rule_id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(&rec), ids(&snap));
    for rule in [
        "close-wait-never-read",
        "close-wait-eof-not-closed",
        "close-wait-unread-data",
    ] {
        assert!(
            ids(&rec).iter().any(|r| r == rule),
            "{rule} in {:?}",
            ids(&rec)
        );
    }
}

#[test]
fn replay_applies_state_filters_in_user_space() {
    let r = json(&[
        "scan",
        "--json",
        "--state",
        "time-wait",
        "--from",
        &fixture("workload.ss-dump"),
    ]);
    assert_eq!(
        nonzero_states(&r).into_iter().collect::<Vec<_>>(),
        vec![("TIME_WAIT".to_string(), 30)]
    );
}

#[test]
fn iproute2_dump_shows_all_seven_sockets_across_both_done_messages() {
    let Some(path) = external("iproute2_ss1.dump") else {
        return;
    };
    let r = json(&["scan", "--json", "--sockets", "--from", &path]);
    assert_eq!(r["total"], 7);
    let sockets = r["sockets"].as_array().unwrap();
    let v6 = sockets
        .iter()
        .filter(|s| s["local"].as_str().unwrap().starts_with('['))
        .count();
    assert_eq!(v6, 3, "the IPv6 half after the first NLMSG_DONE");
    assert_eq!(r["states"]["LISTEN"], 2);
    assert_eq!(r["states"]["ESTABLISHED"], 5);
}

#[test]
fn legacy_tcpdiag_dump_shows_its_twelve_sockets() {
    let Some(path) = external("gosigar_inet-dump-rhel6-2.6.32-504.3.3.el6.x86_64.bin") else {
        return;
    };
    let r = json(&["scan", "--json", "--from", &path]);
    assert_eq!(r["total"], 12);
    assert_eq!(r["states"]["LISTEN"], 11);
    assert_eq!(r["states"]["ESTABLISHED"], 1);
}

/// The legacy format from the project's own capture: real TCPDIAG_GETSOCK
/// (type 18) replies of the fixture workload, taken together with
/// /proc/net/tcp and tcp6, whose per-state counts it must reproduce (the
/// compat dump asks for AF_UNSPEC whatever family the request names:
/// net/ipv4/inet_diag.c, inet_diag_dump_compat).
#[test]
fn own_legacy_tcpdiag_dump_matches_proc_net_tcp_of_the_same_moment() {
    let bytes = std::fs::read(fixture("workload.legacy-dump")).unwrap();
    let kind = u16::from_ne_bytes(bytes[4..6].try_into().unwrap());
    assert_eq!(kind, 18, "a TCPDIAG_GETSOCK reply");
    let mut text = std::fs::read_to_string(fixture("workload.proc-net-tcp")).unwrap();
    let v6 = std::fs::read_to_string(fixture("workload.proc-net-tcp6")).unwrap();
    text.extend(v6.lines().skip(1).map(|l| format!("{l}\n")));
    let mut want = std::collections::BTreeMap::<String, u64>::new();
    for line in text.lines().skip(1) {
        let st = line.split_whitespace().nth(3).unwrap();
        let name = match st {
            "01" => "ESTABLISHED",
            "05" => "FIN_WAIT2",
            "06" => "TIME_WAIT",
            "08" => "CLOSE_WAIT",
            "0A" => "LISTEN",
            other => panic!("unexpected state {other} in the fixture"),
        };
        *want.entry(name.to_string()).or_default() += 1;
    }
    let r = json(&["scan", "--json", "--from", &fixture("workload.legacy-dump")]);
    for (state, n) in &want {
        assert_eq!(r["states"][state], *n, "{state}: {}", r["states"]);
    }
    assert_eq!(r["total"], want.values().sum::<u64>());
    assert_eq!(want["CLOSE_WAIT"], 18);
}

#[test]
fn snapshot_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let first = run(&["snapshot", "--from", &fixture("workload.snapshot.json")]);
    assert!(first.status.success());
    let p = dir.path().join("again.json");
    std::fs::write(&p, &first.stdout).unwrap();
    let second = run(&["snapshot", "--from", p.to_str().unwrap()]);
    let a: serde_json::Value = serde_json::from_slice(&first.stdout).unwrap();
    let mut b: serde_json::Value = serde_json::from_slice(&second.stdout).unwrap();
    b["source"] = a["source"].clone();
    assert_eq!(a, b);
}

/// The project's own `ss -D` capture holds what the replay tests need
/// without ../shared: both families' parts (two NLMSG_DONE), IPv6 rows,
/// CLOSE_WAIT and TIME_WAIT.
#[test]
fn own_ss_capture_has_both_families_ipv6_close_wait_and_time_wait() {
    let bytes = std::fs::read(fixture("workload.ss-dump")).unwrap();
    let (mut off, mut done) = (0usize, 0);
    while off + 16 <= bytes.len() {
        let len = u32::from_ne_bytes(bytes[off..off + 4].try_into().unwrap()) as usize;
        let kind = u16::from_ne_bytes(bytes[off + 4..off + 6].try_into().unwrap());
        assert!(len >= 16, "bad netlink header at {off}");
        done += usize::from(kind == 3); // NLMSG_DONE
        off += (len + 3) & !3;
    }
    assert_eq!(off, bytes.len(), "the capture ends on a message boundary");
    assert_eq!(done, 2, "one NLMSG_DONE per family");
    let r = json(&[
        "scan",
        "--json",
        "--sockets",
        "--from",
        &fixture("workload.ss-dump"),
    ]);
    let sockets = r["sockets"].as_array().unwrap();
    let v6 = sockets
        .iter()
        .filter(|s| s["local"].as_str().unwrap().starts_with('['))
        .count();
    assert!(v6 >= 6, "IPv6 rows: {v6}");
    assert_eq!(r["states"]["CLOSE_WAIT"], 18);
    assert_eq!(r["states"]["TIME_WAIT"], 30);
}
