//! `cwdiag trace` against real sockets in private namespaces: the counts
//! of closes, resets and CLOSE_WAIT entries equal what the workload did,
//! while another namespace runs the very same loopback 4-tuples; the
//! fallback without privilege; no instance or mount left behind.

use crate::support::{cwdiag, is_root, skip};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// A network namespace made with `ip netns add`, deleted on drop.
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("trace-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).status();
        assert!(
            Command::new("ip")
                .args(["netns", "add", &name])
                .status()
                .unwrap()
                .success()
        );
        let up = Command::new("ip")
            .args(["netns", "exec", &name, "ip", "link", "set", "lo", "up"])
            .status()
            .unwrap();
        assert!(up.success());
        Netns(name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Server: accepts N connections on 127.0.0.1:PORT, greets each; the
/// first CLOSES wait for the client's FIN then close, the rest are closed
/// with SO_LINGER {1,0} (an RST). Client: from fixed source ports
/// BASE.., connects, reads the greeting, then closes first (the CLOSES
/// ones) or waits for the server's RST. Both print their pid, then "done"
/// and stay alive until stdin closes (so /proc still knows them).
const SERVER: &str = r#"
import socket, struct, sys, os
closes, resets, port = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("127.0.0.1", port)); l.listen(128)
print(os.getpid(), flush=True)
for i in range(closes + resets):
    s, _ = l.accept(); s.sendall(b"x")
    if i < closes:
        while s.recv(100): pass
    else:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
print("done", flush=True); sys.stdin.read()
"#;

const CLIENT: &str = r#"
import socket, sys, os
closes, resets, base, port = (int(a) for a in sys.argv[1:5])
print(os.getpid(), flush=True)
for i in range(closes + resets):
    c = socket.socket(); c.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    c.bind(("127.0.0.1", base + i)); c.connect(("127.0.0.1", port))
    assert c.recv(1) == b"x"
    if i >= closes:
        try:
            while c.recv(100): pass
        except ConnectionResetError: pass
    c.close()
print("done", flush=True); sys.stdin.read()
"#;

struct Py {
    child: Child,
    out: BufReader<std::process::ChildStdout>,
    pid: u64,
}

fn py(ns: &str, script: &str, args: &[String]) -> Py {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "python3", "-c", script])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let pid = line
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("pid line: {line:?}"));
    Py { child, out, pid }
}

impl Py {
    fn wait_done(&mut self) {
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "done");
    }
    fn finish(mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// Starts `cwdiag trace ARGS` and returns once it reports it is tracing.
fn start_trace(args: &[&str]) -> (Child, std::thread::JoinHandle<String>) {
    let mut child = cwdiag()
        .arg("trace")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut first = String::new();
    err.read_line(&mut first).unwrap();
    assert!(
        first.contains("tracing TCP"),
        "trace did not start: {first}"
    );
    let rest = std::thread::spawn(move || {
        let mut s = first;
        let mut more = String::new();
        while err.read_line(&mut more).unwrap_or(0) > 0 {
            s.push_str(&more);
            more.clear();
        }
        s
    });
    (child, rest)
}

fn sigterm(child: &Child) {
    // SAFETY: sending a signal to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
}

fn lines(child: Child) -> Vec<Value> {
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "trace exit {:?}", out.status);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Instances in tracefs, seen from a private mount namespace (tracefs is
/// mounted there when the host has it unmounted).
fn instances() -> Vec<String> {
    let out = Command::new("unshare")
        .args([
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            "mountpoint -q /sys/kernel/tracing || mount -t tracefs nodev /sys/kernel/tracing; ls /sys/kernel/tracing/instances",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect()
}

/// A file of tracefs (`rel` to its root), read from a private mount
/// namespace as [`instances`] lists them.
fn tracefs_read(rel: &str) -> String {
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c"])
        .arg("mountpoint -q /sys/kernel/tracing || mount -t tracefs nodev /sys/kernel/tracing; cat \"/sys/kernel/tracing/$1\"")
        .args(["sh", rel])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{rel}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn count(ev: &[Value], f: impl Fn(&Value) -> bool) -> usize {
    ev.iter().filter(|e| f(e)).count()
}

fn usable() -> bool {
    if !is_root() {
        skip("trace: needs root (tracefs, network namespaces)");
        return false;
    }
    if Command::new("python3").arg("-V").output().is_err() {
        skip("trace: python3 is not installed");
        return false;
    }
    true
}

#[test]
fn counts_equal_the_workload_while_another_namespace_runs_the_same_tuples() {
    if !usable() {
        return;
    }
    let a = Netns::new("a");
    let b = Netns::new("b");
    // A: 12 client closes, 5 server resets. B: 7 and 3, same ports.
    let (ca, ra, cb, rb) = (12, 5, 7, 3);
    // A port no other test of this suite uses, the same in both.
    let (base, port) = (41000, (18000 + std::process::id() % 1000).to_string());
    let (trace, err) = start_trace(&["--json", "--netns", &a.0]);
    let (all, all_err) = start_trace(&["--json", "--port", &port]);
    let args = |c: usize, r: usize| [c.to_string(), r.to_string(), port.clone()];
    let sa = py(&a.0, SERVER, &args(ca, ra));
    let sb = py(&b.0, SERVER, &args(cb, rb));
    let cargs = |c: usize, r: usize| [c.to_string(), r.to_string(), base.to_string(), port.clone()];
    let mut cla = py(&a.0, CLIENT, &cargs(ca, ra));
    let mut clb = py(&b.0, CLIENT, &cargs(cb, rb));
    cla.wait_done();
    clb.wait_done();
    let (mut sa, mut sb) = (sa, sb);
    sa.wait_done();
    sb.wait_done();
    let mine = [trace.id(), all.id()].map(|p| format!("cwdiag-{p}-"));
    sigterm(&trace);
    sigterm(&all);
    let ev = lines(trace);
    let every = lines(all);
    let summary = err.join().unwrap();
    let _ = all_err.join().unwrap();
    let (pa, pca) = (sa.pid, cla.pid);
    for p in [sa, sb, cla, clb] {
        p.finish();
    }
    let is = |e: &Value, from: &str, to: &str| e["from"] == from && e["to"] == to;
    // Only namespace A's events, none of B's.
    assert!(ev.iter().all(|e| e["netns"].is_u64()), "{ev:?}");
    let closes_a = count(&ev, |e| {
        is(e, "ESTABLISHED", "FIN_WAIT1") && e["pid"] == pca
    });
    assert_eq!(closes_a, ca, "closes by A's client");
    assert_eq!(
        count(&ev, |e| is(e, "ESTABLISHED", "FIN_WAIT1")),
        ca,
        "no close of B's client counted in A"
    );
    assert_eq!(
        count(&ev, |e| is(e, "CLOSE_WAIT", "LAST_ACK") && e["pid"] == pa),
        ca,
        "CLOSE_WAIT sockets A's server closed"
    );
    assert_eq!(
        count(&ev, |e| e["event"] == "reset_sent" && e["pid"] == pa),
        ra,
        "resets A's server sent"
    );
    assert_eq!(
        count(&ev, |e| e["event"] == "reset_received"),
        ra,
        "resets A's client received"
    );
    assert!(
        ev.iter()
            .filter(|e| e["event"] == "reset_received")
            .all(|e| e["peer"] == format!("127.0.0.1:{port}") && e["cookie"].is_u64()),
        "{ev:?}"
    );
    assert!(
        ev.iter()
            .all(|e| e["comm"].is_null() || e["comm"] == "python3"),
        "{ev:?}"
    );
    assert!(summary.contains(" 0 lost"), "{summary}");
    // Unfiltered: both namespaces' CLOSE_WAIT entries, every one on the
    // shared tuples, none given to a namespace without evidence.
    let cw: Vec<&Value> = every
        .iter()
        .filter(|e| is(e, "ESTABLISHED", "CLOSE_WAIT"))
        .collect();
    assert_eq!(cw.len(), ca + cb, "CLOSE_WAIT entries on the port");
    assert!(
        cw.iter()
            .all(|e| e["netns_evidence"] == "none" && e["pid"].is_null())
    );
    let ns_of_a = ev[0]["netns"].clone();
    let closes_b = count(&every, |e| {
        is(e, "ESTABLISHED", "FIN_WAIT1") && e["netns"] != ns_of_a && e["netns"].is_u64()
    });
    assert_eq!(closes_b, cb, "closes by B's client, in B");
    let left = instances();
    assert!(
        !left.iter().any(|i| mine.iter().any(|m| i.starts_with(m))),
        "{left:?}"
    );
}

#[test]
fn the_instance_goes_with_sigterm_and_stale_ones_are_removed() {
    if !usable() {
        return;
    }
    // A leftover of a run that died: pid 999999999 does not exist.
    let planted = "cwdiag-999999999-1";
    let st = Command::new("unshare")
        .args([
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            &format!("mountpoint -q /sys/kernel/tracing || mount -t tracefs nodev /sys/kernel/tracing; mkdir /sys/kernel/tracing/instances/{planted}"),
        ])
        .status()
        .unwrap();
    assert!(st.success());
    let (trace, err) = start_trace(&["--json"]);
    let mine = format!("cwdiag-{}-", trace.id());
    let now = instances();
    assert!(now.iter().any(|i| i.starts_with(&mine)), "{now:?}");
    assert!(
        !now.iter().any(|i| i == planted),
        "stale instance kept: {now:?}"
    );
    sigterm(&trace);
    let out = trace.wait_with_output().unwrap();
    assert!(out.status.success());
    let e = err.join().unwrap();
    assert!(e.contains("events read"), "{e}");
    assert!(
        !instances().iter().any(|i| i.starts_with(&mine)),
        "instance left after SIGTERM"
    );
}

#[test]
fn without_privilege_a_one_line_error() {
    if !usable() {
        return;
    }
    let out = Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_cwdiag"))
        .args(["trace", "--duration", "1"])
        .output()
        .expect("run setpriv (install util-linux)");
    assert_eq!(out.status.code(), Some(2));
    let e = String::from_utf8_lossy(&out.stderr);
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(e.contains("TCP tracepoints unavailable: needs root"), "{e}");
}

#[test]
fn without_tracefs_mounted_it_mounts_privately_and_leaves_nothing() {
    if !usable() {
        return;
    }
    let ns = Netns::new("m");
    // In a mount namespace without tracefs: cwdiag mounts its own, in its
    // own namespace; afterwards this namespace still has none. The client
    // stays alive until the trace has ended (its /proc entry names it).
    let script = format!(
        "umount /sys/kernel/tracing 2>/dev/null; umount /sys/kernel/debug/tracing 2>/dev/null
         ! grep -q ' tracefs ' /proc/self/mountinfo || exit 3
         E=$(mktemp); P=$(mktemp)
         {bin} trace --json --netns {ns} 2>$E & T=$!
         until grep -q tracing $E; do kill -0 $T 2>/dev/null || {{ cat $E >&2; exit 5; }}; sleep 0.05; done
         ip netns exec {ns} python3 -c 'import socket, time
l = socket.socket(); l.bind((\"127.0.0.1\", 8080)); l.listen()
c = socket.create_connection((\"127.0.0.1\", 8080)); c.close()
print(\"ok\", flush=True); time.sleep(120)' >$P & PY=$!
         until grep -q ok $P; do kill -0 $PY 2>/dev/null || exit 6; sleep 0.05; done
         kill -TERM $T; wait $T; rc=$?; kill $PY
         cat $E >&2
         grep -q ' tracefs ' /proc/self/mountinfo && exit 4; exit $rc",
        bin = env!("CARGO_BIN_EXE_cwdiag"),
        ns = ns.0
    );
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let ev: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        ev.iter()
            .filter(|e| e["from"] == "ESTABLISHED" && e["to"] == "FIN_WAIT1")
            .count(),
        1,
        "{ev:?} {err}"
    );
}

/// Server for `scan --window`: accepts CLOSES + LEAKS + RESETS connections
/// on 127.0.0.1:PORT; closes the first CLOSES after the client's FIN,
/// keeps the next LEAKS open (CLOSE_WAIT), resets the last RESETS
/// (SO_LINGER {1,0}). Client: connects from source ports BASE.., closes
/// the first CLOSES + LEAKS, keeps the reset ones' fds open.
const WINDOW_SERVER: &str = r#"
import socket, struct, sys, os
closes, leaks, resets, port = (int(a) for a in sys.argv[1:5])
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("127.0.0.1", port)); l.listen(128)
print(os.getpid(), flush=True)
keep = []
for i in range(closes + leaks + resets):
    s, _ = l.accept(); s.sendall(b"x")
    if i < closes + leaks:
        while s.recv(100): pass
        if i < closes: s.close()
        else: keep.append(s)
    else:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)); s.close()
print("done", flush=True); sys.stdin.read()
"#;

const WINDOW_CLIENT: &str = r#"
import socket, sys, os
closes, leaks, resets, base, port = (int(a) for a in sys.argv[1:6])
print(os.getpid(), flush=True)
keep = []
for i in range(closes + leaks + resets):
    c = socket.socket(); c.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    c.bind(("127.0.0.1", base + i)); c.connect(("127.0.0.1", port))
    assert c.recv(1) == b"x"
    if i < closes + leaks: c.close()
    else:
        try:
            while c.recv(100): pass
        except ConnectionResetError: pass
        keep.append(c)
print("done", flush=True); sys.stdin.read()
"#;

#[test]
fn scan_window_names_closers_close_wait_starts_and_resets_exactly() {
    if !usable() {
        return;
    }
    let a = Netns::new("wa");
    let b = Netns::new("wb");
    let port = (19000 + std::process::id() % 1000).to_string();
    let base = 42000;
    // A: 12 closes, 6 leaks, 3 resets (ports base..base+21). B, at the
    // same time with the same ports: 12, 2, 1: its leaks share A's first
    // two CLOSE_WAIT 4-tuples, which therefore cannot be dated in A.
    let (a_args, b_args) = ([12, 6, 3], [12, 2, 1]);
    let mut scan = cwdiag()
        .args(["scan", "--json", "--netns", &a.0, "--window", "5m"])
        .args(["--time-wait-warn", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(scan.stderr.take().unwrap());
    let mut first = String::new();
    err.read_line(&mut first).unwrap();
    assert!(first.contains("recording TCP events"), "{first}");
    let args = |n: [usize; 3]| {
        let mut v: Vec<String> = n.iter().map(usize::to_string).collect();
        v.push(port.clone());
        v
    };
    let cargs = |n: [usize; 3]| {
        let mut v: Vec<String> = n.iter().map(usize::to_string).collect();
        v.push(base.to_string());
        v.push(port.clone());
        v
    };
    let mut sa = py(&a.0, WINDOW_SERVER, &args(a_args));
    let mut sb = py(&b.0, WINDOW_SERVER, &args(b_args));
    let mut ca = py(&a.0, WINDOW_CLIENT, &cargs(a_args));
    let mut cb = py(&b.0, WINDOW_CLIENT, &cargs(b_args));
    for p in [&mut sa, &mut sb, &mut ca, &mut cb] {
        p.wait_done();
    }
    // SIGINT ends the window early; the scan then runs.
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(scan.id() as i32, libc::SIGINT) };
    let out = scan.wait_with_output().unwrap();
    let (spid, cpid) = (sa.pid, ca.pid);
    for p in [sa, sb, ca, cb] {
        p.finish();
    }
    assert!(out.status.success(), "{:?}", out.status);
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    let peer = format!("127.0.0.1:{port}");
    let churn = r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["rule_id"] == "time-wait-client-churn" && f["evidence"]["peer"] == peer)
        .unwrap_or_else(|| panic!("no churn finding: {r:#}"));
    let ev = &churn["evidence"];
    // The client closed 12 + 6 connections towards the server.
    assert_eq!(
        ev["closers"],
        serde_json::json!([{"pid": cpid, "comm": "python3", "closes": 18}]),
        "{ev:#}"
    );
    assert_eq!(ev["closes"]["count"], 18, "{ev:#}");
    assert_eq!(ev["closes"]["measured_by"], "events");
    assert!(ev["closes"]["window_s"].as_f64().unwrap() > 0.0);
    let summary = churn["summary"].as_str().unwrap();
    assert!(
        summary.contains(&format!("python3 (pid {cpid}) closed 18 connections in ")),
        "{summary}"
    );
    let w = &r["window"];
    assert_eq!(w["lost_events"], 0);
    // CLOSE_WAIT begun: A's four leaks on ports B never used, each with
    // the server as owner; the two 4-tuples both namespaces leaked are not
    // dated (no evidence says whose event is whose).
    let began: Vec<&Value> = w["close_wait_begun"].as_array().unwrap().iter().collect();
    let mut ports: Vec<u64> = began
        .iter()
        .map(|c| {
            c["peer"]
                .as_str()
                .unwrap()
                .rsplit(':')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    ports.sort();
    let want: Vec<u64> = (base + 14..base + 18).collect();
    assert_eq!(ports, want, "{began:?}");
    assert!(
        began
            .iter()
            .all(|c| c["pid"] == spid && c["age_s"].as_f64().unwrap() >= 0.0)
    );
    // Resets by the peer with the fd still open: A's three.
    assert_eq!(w["reset_by_peer_fd_open_count"], 3, "{w:#}");
    assert!(
        w["reset_by_peer_fd_open"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["peer"] == peer && x["cookie"].is_u64())
    );
}

#[test]
fn scan_window_without_privilege_warns_and_scans() {
    if !usable() {
        return;
    }
    let out = Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_cwdiag"))
        .args(["scan", "--json", "--window", "1s"])
        .output()
        .expect("run setpriv (install util-linux)");
    assert_eq!(out.status.code(), Some(0));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.lines().any(|l| l
            == "cwdiag: warning: TCP tracepoints unavailable: needs root; --window ignored, reporting the snapshot only"),
        "{e}"
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(r.get("window").is_none());
    assert!(r["states"].is_object());
}

/// The value of the series `name{labels}` in an exposition, 0 when absent.
fn series(body: &str, name_labels: &str) -> u64 {
    body.lines()
        .find_map(|l| l.strip_prefix(name_labels))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn serve_events_counts_the_workload_transitions_and_resets() {
    if !usable() {
        return;
    }
    let serve = crate::deploy::Serve::start(&["--events", "--top-k", "0"]);
    let ns = Netns::new("s");
    let port = (20000 + std::process::id() % 1000).to_string();
    let n = |v: [usize; 3]| -> Vec<String> { v.iter().map(usize::to_string).collect() };
    let mut sargs = n([4, 3, 2]);
    sargs.push(port.clone());
    let mut cargs = n([4, 3, 2]);
    cargs.extend(["42000".to_string(), port.clone()]);
    let mut s = py(&ns.0, WINDOW_SERVER, &sargs);
    let mut c = py(&ns.0, WINDOW_CLIENT, &cargs);
    s.wait_done();
    c.wait_done();
    let t = |from: &str, to: &str, dir: &str| {
        format!(
            "cwdiag_tcp_transitions_total{{from=\"{from}\",to=\"{to}\",direction=\"{dir}\",port=\"{port}\"}}"
        )
    };
    let r = |what: &str, dir: &str| {
        format!("cwdiag_tcp_resets_total{{reset=\"{what}\",direction=\"{dir}\",port=\"{port}\"}}")
    };
    // The counters follow the events within a read interval: wait until
    // the last of them (the client's resets) is counted.
    let body = crate::support::poll(
        "serve --events to count the workload",
        std::time::Duration::from_secs(60),
        || {
            crate::deploy::http_get(serve.port, "/metrics")
                .map(|(_, b)| b)
                .filter(|b| series(b, &r("received", "outbound")) >= 2)
        },
    );
    s.finish();
    c.finish();
    let mine = format!("cwdiag-{}-", serve.pid());
    assert!(instances().iter().any(|i| i.starts_with(&mine)));
    assert!(serve.stop().success());
    assert!(
        !instances().iter().any(|i| i.starts_with(&mine)),
        "serve left its instance"
    );
    // 4 + 3 connections the client closed first: CLOSE_WAIT on the
    // server's port; 4 of them closed by the server; 2 reset by it.
    assert_eq!(
        series(&body, &t("ESTABLISHED", "CLOSE_WAIT", "inbound")),
        7,
        "{body}"
    );
    assert_eq!(series(&body, &t("CLOSE_WAIT", "LAST_ACK", "inbound")), 4);
    assert_eq!(series(&body, &t("ESTABLISHED", "FIN_WAIT1", "outbound")), 7);
    assert_eq!(series(&body, &t("ESTABLISHED", "CLOSE", "inbound")), 2);
    assert_eq!(series(&body, &r("sent", "inbound")), 2);
    assert_eq!(series(&body, &r("received", "outbound")), 2);
    assert_eq!(series(&body, "cwdiag_tcp_events_lost_total"), 0);
}

/// A listener that closes after its client, and a client of it that
/// closes first (so the TIME_WAIT is the client's): `steady` closes one
/// connection every 20 ms until stdin closes; `burst N` waits for a line
/// on stdin, closes N connections at once and prints "done".
const CHURN: &str = r#"
import socket, sys, os, threading, time
mode, port = sys.argv[1], int(sys.argv[2])
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("127.0.0.1", port)); l.listen(512)
def serve():
    while True:
        s, _ = l.accept()
        while s.recv(100): pass
        s.close()
threading.Thread(target=serve, daemon=True).start()
def one():
    c = socket.create_connection(("127.0.0.1", port)); c.close()
print(os.getpid(), flush=True)
if mode == "steady":
    threading.Thread(target=lambda: (sys.stdin.read(), os._exit(0)), daemon=True).start()
    while True:
        one(); time.sleep(0.02)
else:
    sys.stdin.readline()
    for _ in range(int(sys.argv[3])): one()
    print("done", flush=True); sys.stdin.read()
"#;

/// A namespace whose ports are few (1000) and whose TIME_WAIT ports are
/// never reused, so a sustained loopback churn of ~8/s would hold half of
/// them within the 60 s a close holds one.
fn narrow_netns(tag: &str) -> Netns {
    let ns = Netns::new(tag);
    let ok = Command::new("ip")
        .args(["netns", "exec", &ns.0, "sysctl", "-qw"])
        .args([
            "net.ipv4.ip_local_port_range=40000 40999",
            "net.ipv4.tcp_tw_reuse=0",
        ])
        .status()
        .unwrap();
    assert!(ok.success());
    ns
}

fn churn_finding(r: &Value, port: &str) -> Value {
    let peer = format!("127.0.0.1:{port}");
    r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["rule_id"] == "time-wait-client-churn" && f["evidence"]["peer"] == peer)
        .unwrap_or_else(|| panic!("no churn finding towards {peer}: {r:#}"))
        .clone()
}

#[test]
fn scan_window_measures_a_sustained_churn_and_names_its_closer() {
    if !usable() {
        return;
    }
    let ns = narrow_netns("ws");
    let port = (21000 + std::process::id() % 1000).to_string();
    // The churn runs before and through the whole window.
    let churn = py(&ns.0, CHURN, &["steady".into(), port.clone()]);
    let out = cwdiag()
        .args(["scan", "--json", "--netns", &ns.0, "--window", "4s"])
        .args(["--time-wait-warn", "1"])
        .output()
        .unwrap();
    let pid = churn.pid;
    churn.finish();
    assert!(out.status.success(), "{out:?}");
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    let f = churn_finding(&r, &port);
    let (ev, c) = (&f["evidence"], &f["evidence"]["closes"]);
    assert_eq!(c["measured_by"], "events", "{f:#}");
    let n = c["count"].as_u64().unwrap();
    // Every close in the window is the churner's, and it closed in every
    // whole second of it.
    assert_eq!(
        ev["closers"],
        serde_json::json!([{"pid": pid, "comm": "python3", "closes": n}])
    );
    // The window is the recording's own span: 4 s asked, a little more
    // on a loaded host.
    let whole = c["whole_seconds"].as_u64().unwrap();
    assert!(whole >= 4, "{c:#}");
    assert_eq!(c["seconds_with_closes"], whole, "{c:#}");
    let rate = c["sustained_per_s"].as_f64().expect("a sustained rate");
    let w = c["window_s"].as_f64().unwrap();
    assert!((4.0..6.0).contains(&w), "{c:#}");
    assert!((rate - n as f64 / w).abs() < 0.06, "{rate} vs {n} / {w}");
    let summary = f["summary"].as_str().unwrap();
    assert!(
        summary.contains(&format!(
            "python3 (pid {pid}) closed {n} connections in {w:.1} s: ~{rate:.0}/s sustained"
        )),
        "{summary}"
    );
    let hint = f["hint"].as_str().unwrap();
    assert!(
        hint.starts_with(&format!(
            "python3 (pid {pid}) on this host opens and closes connections to 127.0.0.1:{port}"
        )) && hint.contains("outruns"),
        "{hint}"
    );
    // Fewer than half of the 1000 ports are held: the warning is the
    // sustained rate's projection (at >= ~8/s for 60 s).
    assert!(ev["port_ratio"].as_f64().unwrap() < 0.5, "{ev:#}");
    assert_eq!(f["severity"], "warning", "{f:#}");
}

#[test]
fn scan_window_tells_a_burst_from_a_sustained_churn() {
    if !usable() {
        return;
    }
    // The healthy look-alike: as many closes as a busy second of churn,
    // all at once, in the same narrow namespace.
    let ns = narrow_netns("wu");
    let port = (22000 + std::process::id() % 1000).to_string();
    let mut burst = py(&ns.0, CHURN, &["burst".into(), port.clone(), "200".into()]);
    let mut scan = cwdiag()
        .args(["scan", "--json", "--netns", &ns.0, "--window", "5m"])
        .args(["--time-wait-warn", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(scan.stderr.take().unwrap());
    let mut first = String::new();
    err.read_line(&mut first).unwrap();
    assert!(first.contains("recording TCP events"), "{first}");
    {
        use std::io::Write;
        let stdin = burst.child.stdin.as_mut().unwrap();
        stdin.write_all(b"go\n").unwrap();
        stdin.flush().unwrap();
    }
    burst.wait_done();
    // Built, not timed: whatever the burst took, the window then runs on
    // for 4 s without a close before SIGINT ends it, so whole seconds
    // without closes are certain.
    std::thread::sleep(std::time::Duration::from_secs(4));
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(scan.id() as i32, libc::SIGINT) };
    let out = scan.wait_with_output().unwrap();
    let pid = burst.pid;
    burst.finish();
    assert!(out.status.success(), "{out:?}");
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    let f = churn_finding(&r, &port);
    let c = &f["evidence"]["closes"];
    assert_eq!(
        (c["measured_by"].as_str(), c["count"].as_u64()),
        (Some("events"), Some(200)),
        "{c:#}"
    );
    assert_eq!(c["sustained_per_s"], Value::Null, "{c:#}");
    assert!(
        c["seconds_with_closes"].as_u64().unwrap() < c["whole_seconds"].as_u64().unwrap(),
        "{c:#}"
    );
    let summary = f["summary"].as_str().unwrap();
    assert!(
        summary.contains(&format!("python3 (pid {pid}) closed 200 connections in "))
            && summary.contains("a burst"),
        "{summary}"
    );
    assert!(!summary.contains("sustained ("), "{summary}");
    assert_eq!(f["severity"], "info", "{f:#}");
}

#[test]
fn watch_window_judges_each_frame_on_the_closes_of_its_window() {
    if !usable() {
        return;
    }
    let ns = narrow_netns("ww");
    let port = (23000 + std::process::id() % 1000).to_string();
    let churn = py(&ns.0, CHURN, &["steady".into(), port.clone()]);
    let out = cwdiag()
        .args(["watch", "--json", "--netns", &ns.0, "--window", "2s"])
        .args(["--count", "2", "--time-wait-warn", "1"])
        .output()
        .unwrap();
    let pid = churn.pid;
    churn.finish();
    assert!(out.status.success(), "{out:?}");
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    for l in &lines {
        let f = churn_finding(l, &port);
        let c = &f["evidence"]["closes"];
        assert_eq!(c["measured_by"], "events", "{f:#}");
        assert_eq!(c["whole_seconds"], 2, "{c:#}");
        let n = c["count"].as_u64().unwrap();
        assert!(n > 0, "{c:#}");
        assert_eq!(
            f["evidence"]["closers"],
            serde_json::json!([{"pid": pid, "comm": "python3", "closes": n}])
        );
    }
}

#[test]
fn assert_window_dates_the_close_wait_it_counts() {
    if !usable() {
        return;
    }
    let ns = Netns::new("wc");
    let port = (24000 + std::process::id() % 1000).to_string();
    let mut check = cwdiag()
        .args(["assert", "--json", "--netns", &ns.0, "--window", "5m"])
        .args(["--max-close-wait", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(check.stderr.take().unwrap());
    let mut first = String::new();
    err.read_line(&mut first).unwrap();
    assert!(first.contains("recording TCP events"), "{first}");
    // Two connections the server keeps in CLOSE_WAIT, begun in the window.
    let leaks = ["0".to_string(), "2".into(), "0".into()];
    let mut s = py(
        &ns.0,
        WINDOW_SERVER,
        &[&leaks[..], std::slice::from_ref(&port)].concat(),
    );
    let mut c = py(
        &ns.0,
        WINDOW_CLIENT,
        &[&leaks[..], &["43000".to_string(), port.clone()]].concat(),
    );
    s.wait_done();
    c.wait_done();
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(check.id() as i32, libc::SIGINT) };
    let out = check.wait_with_output().unwrap();
    let spid = s.pid;
    s.finish();
    c.finish();
    // Two CLOSE_WAIT break the limit of one: exit 1, with the window's
    // evidence of when each began and who holds it.
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["ok"], false);
    let began = r["window"]["close_wait_begun"].as_array().unwrap();
    assert_eq!(began.len(), 2, "{r:#}");
    assert!(began.iter().all(|b| b["pid"] == spid), "{began:?}");
}

#[test]
fn the_state_tracepoint_is_filtered_to_tcp_in_the_kernel() {
    if !usable() {
        return;
    }
    // inet_sock_set_state also fires for SCTP and MPTCP sockets: the
    // instance's filter keeps them out before they reach the buffer.
    let (child, err) = start_trace(&["--json"]);
    let pid = child.id();
    let ours = format!("cwdiag-{pid}-");
    let name = instances()
        .into_iter()
        .find(|n| n.starts_with(&ours))
        .unwrap_or_else(|| panic!("no instance {ours}*"));
    let ev = format!("instances/{name}/events/sock/inet_sock_set_state");
    let filter = tracefs_read(&format!("{ev}/filter"));
    let enabled = tracefs_read(&format!("{ev}/enable"));
    sigterm(&child);
    let _ = lines(child);
    let _ = err.join();
    assert_eq!(filter.trim(), "protocol == 6");
    assert_eq!(enabled.trim(), "1");
}
