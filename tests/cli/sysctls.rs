//! The sysctl rules against real settings: each test sets the knob in a
//! private network namespace (these are per-namespace since Linux 4.x-5.x:
//! `struct netns_ipv4` in include/net/netns/ipv4.h), builds the sockets the
//! rule is about, and checks the rule fires, and stays silent on the same
//! sockets under the default.

use crate::netns::in_netns;
use crate::support::*;
use serde_json::Value;
use std::net::{TcpListener, TcpStream};

fn set(name: &str, value: &str) {
    let path = format!("/proc/sys/{}", name.replace('.', "/"));
    std::fs::write(&path, value).unwrap_or_else(|e| panic!("write {path}: {e}"));
}

fn findings_of(rule: &str) -> Vec<Value> {
    let r = json(&["scan", "--json"]);
    r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["rule_id"] == rule)
        .cloned()
        .collect()
}

/// `n` connections to a fresh listener that the client side closes first:
/// `n` TIME_WAIT sockets on the client side. Returns the listener's port.
fn time_wait(n: usize) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    for _ in 0..n {
        let c = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (s, _) = l.accept().unwrap();
        drop(c);
        // The server reads the FIN, then closes: the client ends in TIME_WAIT.
        let mut buf = [0u8; 1];
        let _ = std::io::Read::read(&mut &s, &mut buf);
        drop(s);
    }
    port
}

/// `n` CLOSE_WAIT sockets held by this process (returned: keep them).
fn close_wait(n: usize) -> (u16, Vec<TcpStream>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let mut keep = Vec::new();
    for _ in 0..n {
        let c = TcpStream::connect(("127.0.0.1", port)).unwrap();
        keep.push(l.accept().unwrap().0);
        drop(c);
    }
    wait_for_ss("CLOSE_WAIT", port, n as u64);
    (port, keep)
}

#[test]
fn abort_on_overflow_fires_when_set_and_not_by_default() {
    in_netns("sysctl abort_on_overflow", || {
        assert!(
            findings_of("sysctl-abort-on-overflow").is_empty(),
            "default 0"
        );
        set("net.ipv4.tcp_abort_on_overflow", "1");
        let f = findings_of("sysctl-abort-on-overflow");
        assert_eq!(f.len(), 1, "{f:#?}");
        assert_eq!(f[0]["severity"], "warning");
        assert_eq!(f[0]["evidence"]["value"], "1", "{:#}", f[0]);
    });
}

#[test]
fn fin_timeout_myth_needs_both_a_lowered_value_and_time_wait() {
    in_netns("sysctl fin_timeout", || {
        set("net.ipv4.tcp_fin_timeout", "10");
        // Lowered, but no TIME_WAIT to be wrong about: nothing to say.
        assert!(findings_of("sysctl-fin-timeout-myth").is_empty());
        let port = time_wait(5);
        wait_for_ss("TIME_WAIT", port, 5);
        let f = findings_of("sysctl-fin-timeout-myth");
        assert_eq!(f.len(), 1, "{f:#?}");
        assert_eq!(f[0]["severity"], "info");
        let s = f[0]["summary"].as_str().unwrap();
        assert!(s.contains("10 s") && s.contains("5 TIME_WAIT"), "{s}");
        // The same TIME_WAIT sockets under the default 60 s: silent.
        set("net.ipv4.tcp_fin_timeout", "60");
        assert!(findings_of("sysctl-fin-timeout-myth").is_empty());
    });
}

#[test]
fn keepalive_myth_fires_on_close_wait_under_a_lowered_keepalive_only() {
    in_netns("sysctl keepalive", || {
        let (_port, _keep) = close_wait(3);
        // The default (7200 s) with the same CLOSE_WAIT sockets: silent.
        assert!(findings_of("sysctl-keepalive-myth").is_empty());
        set("net.ipv4.tcp_keepalive_time", "60");
        let f = findings_of("sysctl-keepalive-myth");
        assert_eq!(f.len(), 1, "{f:#?}");
        let s = f[0]["summary"].as_str().unwrap();
        assert!(s.contains("60 s") && s.contains("3 sockets"), "{s}");
    });
}

#[test]
fn time_wait_buckets_full_fires_on_real_overflow_and_not_under_the_default() {
    in_netns("sysctl tw_buckets", || {
        // The namespace's default limit with 20 TIME_WAIT sockets: silent.
        let port = time_wait(20);
        wait_for_ss("TIME_WAIT", port, 20);
        assert!(findings_of("time-wait-buckets-full").is_empty());
        // A limit of 8: the next closes find the table full, skip TIME_WAIT
        // and count TCPTimeWaitOverflow (net/ipv4/tcp_minisocks.c,
        // tcp_time_wait).
        set("net.ipv4.tcp_max_tw_buckets", "8");
        time_wait(5);
        let f = findings_of("time-wait-buckets-full");
        assert_eq!(f.len(), 1, "{f:#?}");
        assert_eq!(f[0]["severity"], "critical", "{:#}", f[0]);
        assert_eq!(f[0]["evidence"]["counter_value"], 5, "{:#}", f[0]);
    });
}

/// A fixture /proc for the two settings a test cannot set for real:
/// tcp_max_orphans is host-wide (lowering it would reset other tests'
/// closing sockets) and tcp_tw_recycle is gone since Linux 4.12. The
/// sockets are still the live ones of a private namespace.
fn scan_with_proc(files: &[(&str, &str)]) -> Value {
    let root = tempfile::tempdir().unwrap();
    for (path, text) in files {
        let p = root.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    json(&[
        "scan",
        "--json",
        "--proc-root",
        root.path().to_str().unwrap(),
    ])
}

fn rule_in(r: &Value, rule: &str) -> Vec<Value> {
    r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["rule_id"] == rule)
        .cloned()
        .collect()
}

#[test]
fn orphans_near_limit_counts_orphans_not_time_wait() {
    in_netns("orphans", || {
        let sockstat = |orphan: u64, tw: u64| {
            format!("sockets: used 9\nTCP: inuse 3 orphan {orphan} tw {tw} alloc 40 mem 1\n")
        };
        let max = ("sys/net/ipv4/tcp_max_orphans", "1000");
        let near = sockstat(850, 3);
        let r = scan_with_proc(&[max, ("net/sockstat", &near)]);
        let f = rule_in(&r, "orphans-near-limit");
        assert_eq!(f.len(), 1, "{r:#}");
        assert!(
            f[0]["summary"].as_str().unwrap().contains("850"),
            "{:#}",
            f[0]
        );
        // The look-alike: as many sockets finishing their close, but in
        // TIME_WAIT, which are not orphans and have their own limit.
        let tw = sockstat(3, 900);
        let r = scan_with_proc(&[max, ("net/sockstat", &tw)]);
        assert!(rule_in(&r, "orphans-near-limit").is_empty(), "{r:#}");
    });
}

#[test]
fn tw_recycle_fires_where_the_setting_exists_and_is_one() {
    in_netns("tw_recycle", || {
        let r = scan_with_proc(&[("sys/net/ipv4/tcp_tw_recycle", "1\n")]);
        let f = rule_in(&r, "sysctl-tcp-tw-recycle");
        assert_eq!(f.len(), 1, "{r:#}");
        assert_eq!(f[0]["severity"], "critical");
        for silent in [&[("sys/net/ipv4/tcp_tw_recycle", "0\n")][..], &[]] {
            let r = scan_with_proc(silent);
            assert!(rule_in(&r, "sysctl-tcp-tw-recycle").is_empty(), "{r:#}");
        }
    });
}
