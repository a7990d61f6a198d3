//! The client by its libraries and the stuck process by its threads
//! (root only): real clients (aiohttp, PyMySQL) and servers whose loop or
//! workers are blocked, each in its own network namespace, with a healthy
//! look-alike for every verdict. Whether a thread sleeps, spins or waits
//! on a downstream is built by the programs (each says when it is there),
//! never hoped for by timing.

use crate::netns::in_netns;
use crate::realworld::{
    Proc, assert_no_alarm, findings, python_has, recorded_scan, show, wait_listening,
};
use crate::support::*;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

/// The one finding of `rule` whose evidence port is `port`.
fn finding_on(report: &Value, rule: &str, port: u16) -> Value {
    let fs: Vec<&Value> = findings(report, rule)
        .into_iter()
        .filter(|f| f["evidence"]["port"] == port)
        .collect();
    assert_eq!(fs.len(), 1, "one {rule} finding on port {port}: {report:#}");
    fs[0].clone()
}

/// Unaccepted connections: `n` clients connect to `port` (the listener's
/// loop or workers are blocked, so nobody accepts them); `gone` of them
/// hang up, leaving CLOSE_WAIT children in the accept queue.
fn queue_up(port: u16, n: usize, gone: usize) -> Vec<TcpStream> {
    let mut kept: Vec<TcpStream> = (0..n)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    kept.drain(..gone);
    wait_for_ss("CLOSE_WAIT", port, gone as u64);
    kept
}

/// Waits until thread `pid` (its main thread) is inside one of the system
/// calls `nrs` (`/proc/PID/syscall`): the condition a test builds, so the
/// samples cwdiag takes afterwards cannot catch it on the way there.
fn wait_in_syscall(pid: u32, nrs: &[libc::c_long]) {
    poll(
        &format!("pid {pid} in system call {nrs:?}"),
        Duration::from_secs(30),
        || {
            let text = std::fs::read_to_string(format!("/proc/{pid}/syscall")).ok()?;
            let nr: libc::c_long = text.split_whitespace().next()?.parse().ok()?;
            nrs.contains(&nr).then_some(())
        },
    );
}

// ------------------------------------------------ a single-threaded loop

/// An asyncio server on one thread (the listening socket is made first,
/// so asyncio starts no resolver thread). Its handler blocks the loop
/// (`sleep`: time.sleep; `spin`: a busy loop) or answers (`serve`); it
/// prints `blocking` just before it blocks.
const ASYNC_SERVER: &str = r#"
import asyncio, socket, sys, time
mode = sys.argv[1]
async def handle(r, w):
    await r.readline()
    if mode == "sleep":
        print("blocking", flush=True)
        time.sleep(600)
    elif mode == "spin":
        print("blocking", flush=True)
        while True:
            pass
    w.write(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
    await w.drain()
    w.close()
async def main():
    sock = socket.create_server(("127.0.0.1", 8080), backlog=4)
    srv = await asyncio.start_server(handle, sock=sock)
    print("ready", flush=True)
    await srv.serve_forever()
asyncio.run(main())
"#;

/// The accept-queue finding of a single-threaded server whose loop is
/// blocked the way `mode` says, with the thread evidence checked.
fn blocked_loop(mode: &'static str, pattern: &'static str, words: &'static str) {
    in_netns(mode, move || {
        let mut server = Proc::spawn(
            "asyncio server",
            Command::new("python3").args(["-u", "-c", ASYNC_SERVER, mode]),
            libc::SIGKILL,
        );
        server.expect_line("ready", Duration::from_secs(20));
        wait_listening("asyncio server", 8080, &mut server);
        let mut first = TcpStream::connect("127.0.0.1:8080").unwrap();
        first.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        server.expect_line("blocking", Duration::from_secs(20));
        if mode == "sleep" {
            wait_in_syscall(
                server.pid(),
                &[
                    libc::SYS_clock_nanosleep,
                    libc::SYS_nanosleep,
                    libc::SYS_select,
                ],
            );
        }
        let _queued = queue_up(8080, 3, 2);
        // Replayed from its recording, the verdict is the same.
        let report = recorded_scan(mode, &["scan", "--json"]);
        show(mode, &report);
        let f = finding_on(&report, "accept-queue-not-drained", 8080);
        let hint = f["hint"].as_str().unwrap();
        let t = &f["evidence"]["threads"];
        assert_eq!(t["pattern"], pattern, "{f:#}");
        assert_eq!(t["single_threaded"], true, "{f:#}");
        assert_eq!(t["processes"][0]["pid"], server.pid(), "{f:#}");
        assert_eq!(t["processes"][0]["threads_total"], 1, "{f:#}");
        assert!(
            t["verdict"]
                .as_str()
                .unwrap()
                .starts_with(&format!("its only thread was {words}")),
            "{f:#}"
        );
        assert!(!hint.contains("add workers"), "{hint}");
        assert!(hint.contains("single thread"), "{hint}");
        // The samples behind the verdict are in the JSON.
        let seen = &t["processes"][0]["threads"][0]["seen"];
        let samples: u64 = seen
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["count"].as_u64().unwrap())
            .sum();
        assert_eq!(samples, t["processes"][0]["samples"].as_u64().unwrap());
        // --all-netns samples the threads of every namespace in one set of
        // rounds, after the namespaces are finished: the same verdict.
        let ino = std::os::unix::fs::MetadataExt::ino(
            &std::fs::metadata("/proc/thread-self/ns/net").unwrap(),
        );
        let all = json(&["scan", "--all-netns", "--json"]);
        let ns = all["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["netns"]["inode"] == ino)
            .unwrap_or_else(|| panic!("no report for namespace {ino}: {all:#}"));
        let f = finding_on(ns, "accept-queue-not-drained", 8080);
        let t = &f["evidence"]["threads"];
        assert_eq!(t["pattern"], pattern, "{f:#}");
        assert_eq!(t["processes"][0]["pid"], server.pid(), "{f:#}");
        drop(first);
    });
}

#[test]
fn a_single_threaded_loop_blocked_in_sleep_is_named_not_told_to_add_workers() {
    blocked_loop("sleep", "asleep", "asleep in ");
}

#[test]
fn a_single_threaded_loop_spinning_is_a_busy_loop() {
    // On CPU or runnable behind a busy CPU: state R either way.
    blocked_loop("spin", "on-cpu", "on CPU in ");
}

#[test]
fn a_single_threaded_loop_that_serves_raises_nothing() {
    in_netns("serve", || {
        let mut server = Proc::spawn(
            "asyncio server",
            Command::new("python3").args(["-u", "-c", ASYNC_SERVER, "serve"]),
            libc::SIGKILL,
        );
        server.expect_line("ready", Duration::from_secs(20));
        wait_listening("asyncio server", 8080, &mut server);
        for _ in 0..5 {
            let mut c = TcpStream::connect("127.0.0.1:8080").unwrap();
            c.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
            let mut body = String::new();
            c.read_to_string(&mut body).unwrap();
            assert!(body.ends_with("ok"), "{body}");
        }
        let _idle = TcpStream::connect("127.0.0.1:8080").unwrap();
        let report = json(&["scan", "--json"]);
        show("serve", &report);
        assert!(
            findings(&report, "accept-queue-not-drained").is_empty(),
            "{report:#}"
        );
        assert_no_alarm(&report);
    });
}

// ------------------------------------------- workers blocked downstream

/// A stand-in database on 127.0.0.1:5432 that accepts and never answers
/// (`silent`) or answers each query (`answer`); prints `conn` per accept.
const DOWNSTREAM: &str = r#"
import socket, sys, threading
l = socket.create_server(("127.0.0.1", 5432), backlog=64)
print("ready", flush=True)
def serve(c):
    while c.recv(1024):
        c.sendall(b"row")
    c.close()
conns = []
while True:
    c, _ = l.accept()
    conns.append(c)
    print("conn", flush=True)
    if sys.argv[1] == "answer":
        threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

/// Two forked workers sharing a listener on 8000 (the launcher closes its
/// copy), each handling one request at a time by querying 5432.
const PREFORK: &str = r#"
import os, socket
l = socket.create_server(("127.0.0.1", 8000), backlog=8)
kids = []
for i in range(2):
    pid = os.fork()
    if pid == 0:
        while True:
            c, _ = l.accept()
            c.recv(1024)
            d = socket.create_connection(("127.0.0.1", 5432))
            d.sendall(b"query")
            d.recv(1024)
            c.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
            c.close()
            d.close()
    kids.append(pid)
l.close()
print("ready", *kids, flush=True)
os.wait()
"#;

#[test]
fn workers_blocked_on_a_downstream_name_it() {
    in_netns("prefork", || {
        let mut db = Proc::spawn(
            "downstream",
            Command::new("python3").args(["-u", "-c", DOWNSTREAM, "silent"]),
            libc::SIGKILL,
        );
        db.expect_line("ready", Duration::from_secs(20));
        let mut app = Proc::spawn(
            "prefork server",
            Command::new("python3").args(["-u", "-c", PREFORK]),
            libc::SIGKILL,
        );
        let ready = app.expect_line("ready", Duration::from_secs(20));
        let workers: Vec<u64> = ready
            .split_whitespace()
            .skip(1)
            .map(|p| p.parse().unwrap())
            .collect();
        // Both workers take a request and block on the silent database.
        let mut busy = Vec::new();
        for _ in 0..2 {
            let mut c = TcpStream::connect("127.0.0.1:8000").unwrap();
            c.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
            busy.push(c);
            db.expect_line("conn", Duration::from_secs(20));
        }
        for &w in &workers {
            wait_in_syscall(w as u32, &[libc::SYS_recvfrom, libc::SYS_read]);
        }
        let _queued = queue_up(8000, 3, 2);
        let report = recorded_scan("prefork", &["scan", "--json"]);
        show("prefork", &report);
        let f = finding_on(&report, "accept-queue-not-drained", 8000);
        let (t, hint) = (&f["evidence"]["threads"], f["hint"].as_str().unwrap());
        assert_eq!(t["pattern"], "blocked-on-peer", "{f:#}");
        assert_eq!(t["peer"], "127.0.0.1:5432", "{f:#}");
        assert!(
            t["peer_owner"]
                .as_str()
                .unwrap()
                .ends_with(&format!("pid {}", db.pid())),
            "{f:#}"
        );
        let mut pids: Vec<u64> = t["processes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["pid"].as_u64().unwrap())
            .collect();
        pids.sort_unstable();
        let mut want = workers.clone();
        want.sort_unstable();
        assert_eq!(pids, want, "{f:#}");
        let verdict = t["verdict"].as_str().unwrap();
        assert!(
            verdict.starts_with(
                "all 2 worker processes were blocked in recvfrom() on connections to 127.0.0.1:5432"
            ),
            "{verdict}"
        );
        assert!(hint.contains("They wait on "), "{hint}");
        assert!(hint.contains(&format!("pid {}", db.pid())), "{hint}");
        assert!(!hint.contains("add workers"), "{hint}");
        drop(busy);
    });
}

#[test]
fn workers_whose_downstream_answers_raise_nothing() {
    in_netns("prefork-ok", || {
        let mut db = Proc::spawn(
            "downstream",
            Command::new("python3").args(["-u", "-c", DOWNSTREAM, "answer"]),
            libc::SIGKILL,
        );
        db.expect_line("ready", Duration::from_secs(20));
        let mut app = Proc::spawn(
            "prefork server",
            Command::new("python3").args(["-u", "-c", PREFORK]),
            libc::SIGKILL,
        );
        app.expect_line("ready", Duration::from_secs(20));
        for _ in 0..6 {
            let mut c = TcpStream::connect("127.0.0.1:8000").unwrap();
            c.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
            let mut body = String::new();
            c.read_to_string(&mut body).unwrap();
            assert!(body.ends_with("ok"), "{body}");
        }
        let report = json(&["scan", "--json"]);
        show("prefork-ok", &report);
        assert!(
            findings(&report, "accept-queue-not-drained").is_empty(),
            "{report:#}"
        );
        assert_no_alarm(&report);
    });
}

// ------------------------------------------------------------- aiohttp

/// An HTTP/1.1 server on port 80 that sends a `size`-byte body and closes
/// 200 ms later, whether the body was read or not.
const CLOSING_HTTP: &str = r#"
import socket, sys, threading, time
size = int(sys.argv[1])
l = socket.create_server(("127.0.0.1", 80), backlog=64)
print("ready", flush=True)
def serve(c):
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = c.recv(4096)
        if not d:
            return
        buf += d
    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size + b"x" * size)
    time.sleep(0.2)
    c.close()
    print("closed", flush=True)
while True:
    c, _ = l.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

/// An aiohttp client making three requests: `leak` keeps the responses
/// unread and unreleased, `tidy` reads them in `async with`.
const AIOHTTP_CLIENT: &str = r#"
import asyncio, sys, aiohttp
async def main():
    s = aiohttp.ClientSession()
    keep = []
    for _ in range(3):
        if sys.argv[1] == "leak":
            keep.append(await s.get("http://127.0.0.1:80/"))
        else:
            async with s.get("http://127.0.0.1:80/") as r:
                await r.read()
    print("ready", flush=True)
    await asyncio.sleep(600)
asyncio.run(main())
"#;

/// Bytes in each response: more than aiohttp buffers by itself, so the
/// rest waits in the socket with the FIN behind it.
const BIG_BODY: &str = "600000";

#[test]
fn an_aiohttp_client_is_told_about_aiohttp_not_urllib3() {
    if !python_has("aiohttp") {
        skip("python3 cannot import aiohttp (PyPI package aiohttp)");
        return;
    }
    in_netns("aiohttp", || {
        let mut server = Proc::spawn(
            "closing HTTP server",
            Command::new("python3").args(["-u", "-c", CLOSING_HTTP, BIG_BODY]),
            libc::SIGKILL,
        );
        server.expect_line("ready", Duration::from_secs(20));
        let mut client = Proc::spawn(
            "aiohttp client",
            Command::new("python3").args(["-u", "-c", AIOHTTP_CLIENT, "leak"]),
            libc::SIGKILL,
        );
        client.expect_line("ready", Duration::from_secs(30));
        wait_for_ss("CLOSE_WAIT", 80, 3);
        let report = json(&["scan", "--json"]);
        show("aiohttp", &report);
        let fs: Vec<&Value> = report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| {
                f["rule_id"].as_str().unwrap().starts_with("close-wait-")
                    && f["evidence"]["pid"] == client.pid()
            })
            .collect();
        assert!(!fs.is_empty(), "{report:#}");
        for f in fs {
            let (e, hint) = (&f["evidence"], f["hint"].as_str().unwrap());
            let libs = e["libraries"].as_array().unwrap();
            let aio = libs
                .iter()
                .find(|l| l["name"] == "aiohttp")
                .unwrap_or_else(|| panic!("aiohttp in the evidence: {f:#}"));
            assert_eq!(aio["seen_in"], "maps", "{f:#}");
            assert!(aio["path"].as_str().unwrap().contains("/aiohttp/"), "{f:#}");
            for not in ["urllib3", "pool_maxsize", "requests"] {
                assert!(!hint.contains(not), "{not} in {hint}");
            }
            // The loop is idle: nobody is blocked reading, the code left
            // the responses.
            if f["rule_id"] == "close-wait-unread-data" {
                assert_eq!(e["threads"]["pattern"], "waiting-for-events", "{f:#}");
                assert!(hint.contains("No reader is blocked"), "{hint}");
            } else {
                assert!(hint.contains("aiohttp"), "{hint}");
            }
        }
    });
}

#[test]
fn an_aiohttp_client_that_reads_its_responses_raises_nothing() {
    if !python_has("aiohttp") {
        skip("python3 cannot import aiohttp (PyPI package aiohttp)");
        return;
    }
    in_netns("aiohttp-ok", || {
        let mut server = Proc::spawn(
            "closing HTTP server",
            Command::new("python3").args(["-u", "-c", CLOSING_HTTP, BIG_BODY]),
            libc::SIGKILL,
        );
        server.expect_line("ready", Duration::from_secs(20));
        let mut client = Proc::spawn(
            "aiohttp client",
            Command::new("python3").args(["-u", "-c", AIOHTTP_CLIENT, "tidy"]),
            libc::SIGKILL,
        );
        client.expect_line("ready", Duration::from_secs(30));
        // The server closes 200 ms after each response; aiohttp closes
        // its side on the FIN: nothing stays in CLOSE_WAIT. Wait until the
        // server has closed and no connection on :80 is open any more
        // (a client socket left in CLOSE_WAIT is not ESTABLISHED).
        server.expect_line("closed", Duration::from_secs(20));
        poll("the server's closes", Duration::from_secs(20), || {
            let n = ss_counts(&["( sport = :80 or dport = :80 )"]);
            (n.get("ESTABLISHED").copied().unwrap_or(0) == 0).then_some(())
        });
        let report = json(&["scan", "--json"]);
        show("aiohttp-ok", &report);
        assert!(
            report["findings"]
                .as_array()
                .unwrap()
                .iter()
                .all(|f| !f["rule_id"].as_str().unwrap().starts_with("close-wait-")),
            "{report:#}"
        );
        assert_no_alarm(&report);
    });
}

// ------------------------------------------------------------- PyMySQL

/// A MySQL-protocol server on 3306 (handshake v10, any password, OK to
/// every command) that drops a connection idle for one second with a
/// bare FIN, as MySQL before 8.0.24 does at wait_timeout.
const FAKE_MYSQL: &str = r#"
import socket, struct, threading
def packet(seq, payload):
    return struct.pack("<I", len(payload))[:3] + bytes([seq]) + payload
def ok(seq):
    return packet(seq, b"\x00\x00\x00\x00\x00\x00\x00")
caps = 0x00000001 | 0x00000200 | 0x00008000 | 0x00080000 | 0x00000008
greeting = (b"\x0a" + b"5.7.99-fake\x00" + struct.pack("<I", 7) + b"abcdefgh\x00"
            + struct.pack("<H", caps & 0xffff) + b"\x21" + struct.pack("<H", 0)
            + struct.pack("<H", caps >> 16) + bytes([21]) + b"\x00" * 10
            + b"ijklmnopqrst\x00" + b"mysql_native_password\x00")
def serve(c):
    c.sendall(packet(0, greeting))
    c.recv(4096)
    c.sendall(ok(2))
    c.settimeout(1.0)
    try:
        while True:
            d = c.recv(4096)
            if not d:
                break
            c.sendall(ok(1))
    except socket.timeout:
        pass
    c.close()
l = socket.create_server(("127.0.0.1", 3306), backlog=64)
print("ready", flush=True)
while True:
    c, _ = l.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

const PYMYSQL_CLIENT: &str = r#"
import time, pymysql
conns = [pymysql.connect(host="127.0.0.1", port=3306, user="u", password="p") for _ in range(3)]
print("ready", flush=True)
time.sleep(600)
"#;

#[test]
fn a_pymysql_client_is_not_told_about_psycopg2() {
    if !python_has("pymysql") {
        skip("python3 cannot import pymysql (PyPI package PyMySQL)");
        return;
    }
    in_netns("pymysql", || {
        let mut server = Proc::spawn(
            "MySQL-protocol server",
            Command::new("python3").args(["-u", "-c", FAKE_MYSQL]),
            libc::SIGKILL,
        );
        server.expect_line("ready", Duration::from_secs(20));
        let mut client = Proc::spawn(
            "PyMySQL client",
            Command::new("python3").args(["-u", "-c", PYMYSQL_CLIENT]),
            libc::SIGKILL,
        );
        client.expect_line("ready", Duration::from_secs(30));
        wait_for_ss("CLOSE_WAIT", 3306, 3);
        let report = json(&["scan", "--json"]);
        show("pymysql", &report);
        let f = finding_on(&report, "close-wait-never-read", 3306);
        let (e, hint) = (&f["evidence"], f["hint"].as_str().unwrap());
        assert_eq!(e["pid"], client.pid(), "{f:#}");
        assert_eq!(e["count"], 3, "{f:#}");
        assert_eq!(f["severity"], "info", "{f:#}");
        assert!(hint.contains("PyMySQL"), "{hint}");
        assert!(!hint.contains("psycopg"), "{hint}");
        assert_no_alarm(&report);
    });
}

// ------------------------------------------------------------------ Go

/// Builds fixtures/go-client (its pgx and go-redis are local stand-ins
/// with the real module paths: no module proxy needed) into `dir`.
fn build_go_client(dir: &std::path::Path) -> Option<std::path::PathBuf> {
    let go = crate::realworld::program("go", &["/usr/lib/go/bin"])?;
    let out = dir.join("go-client");
    let st = Command::new(go)
        .args(["build", "-buildvcs=false", "-o"])
        .arg(&out)
        .arg(".")
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/go-client"))
        .env("GOCACHE", dir.join("cache"))
        .env("GOFLAGS", "-mod=mod")
        .env("GOPROXY", "off")
        .status()
        .expect("run go build");
    assert!(st.success(), "go build of fixtures/go-client failed");
    Some(out)
}

/// A Go client: its module list comes from the binary's build info.
fn go_client(mode: &'static str) {
    let dir = tempfile::tempdir().unwrap();
    let Some(bin) = build_go_client(dir.path()) else {
        skip("go is not installed (Debian package golang-go)");
        return;
    };
    in_netns(mode, move || {
        let mut server = Proc::spawn(
            "closing HTTP server",
            Command::new("python3").args(["-u", "-c", CLOSING_HTTP, "10"]),
            libc::SIGKILL,
        );
        server.expect_line("ready", Duration::from_secs(20));
        let mut client = Proc::spawn(
            "Go client",
            Command::new(&bin).args(["http://127.0.0.1:80/", "3", mode]),
            libc::SIGKILL,
        );
        client.expect_line("ready", Duration::from_secs(30));
        server.expect_line("closed", Duration::from_secs(20));
        if mode == "leak" {
            wait_for_ss("CLOSE_WAIT", 80, 3);
        } else {
            poll("the server's closes", Duration::from_secs(20), || {
                let n = ss_counts(&["( sport = :80 or dport = :80 )"]);
                (n.get("ESTABLISHED").copied().unwrap_or(0) == 0).then_some(())
            });
        }
        let report = json(&["scan", "--json"]);
        show(mode, &report);
        let mine: Vec<&Value> = report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| {
                f["rule_id"].as_str().unwrap().starts_with("close-wait-")
                    && f["evidence"]["pid"] == client.pid()
            })
            .collect();
        if mode != "leak" {
            assert!(mine.is_empty(), "{report:#}");
            assert_no_alarm(&report);
            return;
        }
        let f = finding_on(&report, "close-wait-never-read", 80);
        let (e, hint) = (&f["evidence"], f["hint"].as_str().unwrap());
        assert_eq!(e["pid"], client.pid(), "{f:#}");
        assert_eq!(e["runtime"], "Go", "{f:#}");
        let libs = e["libraries"].as_array().unwrap();
        let get = |name: &str| {
            libs.iter()
                .find(|l| l["name"] == name)
                .unwrap_or_else(|| panic!("{name} in {f:#}"))
        };
        assert_eq!(get("pgx")["version"], "v5.5.0", "{f:#}");
        assert_eq!(get("pgx")["seen_in"], "go-buildinfo", "{f:#}");
        assert_eq!(get("go-redis")["path"], "github.com/redis/go-redis/v9");
        assert!(get("Go")["version"].as_str().unwrap().starts_with("go1."));
        // HTTP advice: net/http's, not a database pool's.
        assert!(hint.contains("resp.Body"), "{hint}");
        assert!(!hint.contains("MaxConnIdleTime"), "{hint}");
    });
}

#[test]
fn a_go_client_shows_its_modules_and_gets_net_http_advice() {
    go_client("leak");
}

#[test]
fn a_go_client_that_closes_its_bodies_raises_nothing() {
    go_client("close");
}

// ------------------------------------------- Java: Apache HttpClient 4

/// A pooling Apache HttpClient 4 that makes three requests at once,
/// consumes and closes the responses (the connections go back to the
/// pool), then idles; `evict` adds the builder's idle-connection evictor.
const HTTPCLIENT4: &str = r#"
import org.apache.http.client.methods.CloseableHttpResponse;
import org.apache.http.client.methods.HttpGet;
import org.apache.http.impl.client.CloseableHttpClient;
import org.apache.http.impl.client.HttpClientBuilder;
import org.apache.http.impl.conn.PoolingHttpClientConnectionManager;
import org.apache.http.util.EntityUtils;
import java.util.concurrent.TimeUnit;

public class Client {
    public static void main(String[] a) throws Exception {
        PoolingHttpClientConnectionManager cm = new PoolingHttpClientConnectionManager();
        cm.setDefaultMaxPerRoute(10);
        HttpClientBuilder b = HttpClientBuilder.create().setConnectionManager(cm);
        if (a[1].equals("evict")) {
            b.evictIdleConnections(100, TimeUnit.MILLISECONDS);
        }
        CloseableHttpClient c = b.build();
        CloseableHttpResponse[] rs = new CloseableHttpResponse[3];
        for (int i = 0; i < 3; i++) {
            rs[i] = c.execute(new HttpGet(a[0]));
        }
        for (CloseableHttpResponse r : rs) {
            EntityUtils.consume(r.getEntity());
            r.close();
        }
        System.out.println("ready");
        Thread.sleep(600000);
    }
}
"#;

/// The Debian jars the client needs, or why the test cannot run.
fn httpclient_classpath() -> Result<String, &'static str> {
    let jars = [
        "/usr/share/java/httpclient.jar",
        "/usr/share/java/httpcore.jar",
        "/usr/share/java/commons-logging.jar",
    ];
    if crate::realworld::program("java", &[]).is_none() {
        return Err("java is not installed (Debian package default-jdk-headless)");
    }
    if jars.iter().any(|j| !std::path::Path::new(j).exists()) {
        return Err("Apache HttpClient 4 jars are missing (Debian package libhttpclient-java)");
    }
    Ok(jars.join(":"))
}

fn httpclient4(mode: &'static str) {
    let cp = match httpclient_classpath() {
        Ok(cp) => cp,
        Err(why) => {
            skip(why);
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("Client.java");
    std::fs::write(&src, HTTPCLIENT4).unwrap();
    in_netns(mode, move || {
        let mut server = Proc::spawn(
            "closing HTTP server",
            Command::new("python3").args(["-u", "-c", CLOSING_HTTP, "10"]),
            libc::SIGKILL,
        );
        server.expect_line("ready", Duration::from_secs(20));
        let mut client = Proc::spawn(
            "HttpClient 4 client",
            Command::new("java")
                .args(["-Xmx64m", "-cp", &cp])
                .arg(&src)
                .args(["http://127.0.0.1:80/", mode]),
            libc::SIGKILL,
        );
        client.expect_line("ready", Duration::from_secs(60));
        for _ in 0..3 {
            server.expect_line("closed", Duration::from_secs(20));
        }
        if mode == "evict" {
            // The evictor closes what the server closed: nothing stays.
            poll("the evictor", Duration::from_secs(20), || {
                let n = ss_counts(&["( sport = :80 or dport = :80 )"]);
                (n.get("CLOSE_WAIT").copied().unwrap_or(0) == 0).then_some(())
            });
        } else {
            wait_for_ss("CLOSE_WAIT", 80, 3);
        }
        let report = json(&["scan", "--json"]);
        show(mode, &report);
        if mode == "evict" {
            assert!(
                findings(&report, "close-wait-never-read").is_empty(),
                "{report:#}"
            );
            assert_no_alarm(&report);
            return;
        }
        let f = finding_on(&report, "close-wait-never-read", 80);
        let (e, hint) = (&f["evidence"], f["hint"].as_str().unwrap());
        assert_eq!(e["pid"], client.pid(), "{f:#}");
        assert_eq!(e["runtime"], "JVM", "{f:#}");
        let lib = e["libraries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["name"] == "Apache HttpClient 4")
            .unwrap_or_else(|| panic!("HttpClient 4 in {f:#}"));
        assert!(
            lib["seen_in"] == "fd" || lib["seen_in"] == "classpath",
            "{f:#}"
        );
        assert!(hint.contains("evictIdleConnections"), "{hint}");
        assert!(
            hint.contains("Apache HttpClient 4 seen in the process"),
            "{hint}"
        );
        for not in ["HttpURLConnection", "java.net.http", "HikariCP"] {
            assert!(!hint.contains(not), "{not} in {hint}");
        }
        assert_no_alarm(&report);
    });
}

#[test]
fn an_apache_httpclient4_pool_is_named_with_its_evictor() {
    httpclient4("pool");
}

#[test]
fn an_apache_httpclient4_pool_with_its_evictor_raises_nothing() {
    httpclient4("evict");
}

// ------------------------------------------------- Java: HikariCP pool

/// A fixed-size HikariCP pool (Debian's 2.7.9, with PostgreSQL's JDBC
/// driver) whose three connections each ran a query, then idle.
const HIKARI: &str = r#"
import com.zaxxer.hikari.HikariConfig;
import com.zaxxer.hikari.HikariDataSource;
import java.sql.Connection;
import java.sql.Statement;

public class Pool {
    public static void main(String[] a) throws Exception {
        HikariConfig c = new HikariConfig();
        c.setJdbcUrl("jdbc:postgresql://127.0.0.1:5432/postgres");
        c.setUsername("postgres");
        c.setMaximumPoolSize(3);
        c.setMinimumIdle(3);
        HikariDataSource ds = new HikariDataSource(c);
        Connection[] cs = new Connection[3];
        for (int i = 0; i < 3; i++) {
            cs[i] = ds.getConnection();
            try (Statement s = cs[i].createStatement()) {
                s.execute("SELECT 1");
            }
        }
        for (Connection x : cs) {
            x.close();
        }
        System.out.println("ready");
        Thread.sleep(600000);
    }
}
"#;

fn hikari_pool(server_timeout: Option<&'static str>) {
    let Some(bindir) = crate::realworld::postgres_prereqs() else {
        return;
    };
    let jars = [
        "/usr/share/java/HikariCP.jar",
        "/usr/share/java/postgresql.jar",
        "/usr/share/java/slf4j-api.jar",
        "/usr/share/java/slf4j-nop.jar",
    ];
    if crate::realworld::program("java", &[]).is_none() {
        skip("java is not installed (Debian package default-jdk-headless)");
        return;
    }
    if let Some(j) = jars.iter().find(|j| !std::path::Path::new(j).exists()) {
        skip(&format!(
            "{j} is missing (Debian packages libhikaricp-java, libpostgresql-jdbc-java, libslf4j-java)"
        ));
        return;
    }
    let cp = jars.join(":");
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("Pool.java");
    std::fs::write(&src, HIKARI).unwrap();
    in_netns("hikari", move || {
        let data = tempfile::tempdir().unwrap();
        let extra: Vec<&str> = server_timeout.into_iter().collect();
        let _server = crate::realworld::start_postgres(&bindir, data.path(), &extra);
        let mut client = Proc::spawn(
            "HikariCP pool",
            Command::new("java").args(["-Xmx64m", "-cp", &cp]).arg(&src),
            libc::SIGKILL,
        );
        client.expect_line("ready", Duration::from_secs(60));
        if server_timeout.is_some() {
            wait_for_ss("CLOSE_WAIT", 5432, 3);
        }
        let report = json(&["scan", "--json"]);
        show("hikari", &report);
        assert_no_alarm(&report);
        if server_timeout.is_none() {
            assert!(
                findings(&report, "close-wait-never-read").is_empty(),
                "{report:#}"
            );
            return;
        }
        let f = finding_on(&report, "close-wait-never-read", 5432);
        let (e, hint) = (&f["evidence"], f["hint"].as_str().unwrap());
        assert_eq!(e["pid"], client.pid(), "{f:#}");
        assert_eq!(e["goodbye"], 3, "PostgreSQL's 57P05 before each FIN: {f:#}");
        let lib = e["libraries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["name"] == "HikariCP")
            .unwrap_or_else(|| panic!("HikariCP in {f:#}"));
        // Debian's HikariCP.jar names no version; the JVM keeps it open.
        assert!(
            lib["seen_in"] == "fd" || lib["seen_in"] == "classpath",
            "{f:#}"
        );
        assert!(hint.contains("HikariCP seen in the process"), "{hint}");
        assert!(hint.contains("maxLifetime"), "{hint}");
        assert!(hint.contains("idle_session_timeout"), "{hint}");
        assert!(!hint.contains("no pool jar"), "{hint}");
    });
}

#[test]
fn a_hikaricp_pool_timed_out_by_postgres_is_named_by_its_jar() {
    hikari_pool(Some("idle_session_timeout=2s"));
}

#[test]
fn a_hikaricp_pool_without_a_server_timeout_raises_nothing() {
    hikari_pool(None);
}

// ------------------------------------------------ Node.js: a spinning loop

/// A Node.js server (backlog 4) whose handler spins on the event loop
/// after printing `blocking`; Node's helper threads (libuv, V8) idle.
const NODE_SPIN: &str = r#"
const net = require("net");
const srv = net.createServer((c) => {
  c.on("data", () => {
    console.log("blocking");
    for (;;) {}
  });
});
srv.listen(8081, "127.0.0.1", 4, () => console.log("ready"));
"#;

#[test]
fn a_node_server_spinning_on_its_event_loop_is_named_by_its_main_thread() {
    if crate::realworld::program("node", &[]).is_none() {
        skip("node is not installed (Debian package nodejs)");
        return;
    }
    in_netns("node-spin", || {
        let mut server = Proc::spawn(
            "node server",
            Command::new("node").args(["-e", NODE_SPIN]),
            libc::SIGKILL,
        );
        server.expect_line("ready", Duration::from_secs(20));
        let mut first = TcpStream::connect("127.0.0.1:8081").unwrap();
        first.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        server.expect_line("blocking", Duration::from_secs(20));
        let _queued = queue_up(8081, 3, 2);
        let report = recorded_scan("node-spin", &["scan", "--json"]);
        show("node-spin", &report);
        let f = finding_on(&report, "accept-queue-not-drained", 8081);
        let (t, hint) = (&f["evidence"]["threads"], f["hint"].as_str().unwrap());
        assert_eq!(t["pattern"], "on-cpu", "{f:#}");
        assert_eq!(t["single_threaded"], true, "{f:#}");
        assert!(
            t["processes"][0]["threads_total"].as_u64().unwrap() > 1,
            "Node runs helper threads: {f:#}"
        );
        let verdict = t["verdict"].as_str().unwrap();
        assert!(
            verdict.starts_with("its main thread (the event loop) was on CPU in "),
            "{verdict}"
        );
        assert!(!hint.contains("add workers"), "{hint}");
        assert!(hint.contains("single thread"), "{hint}");
        drop(first);
    });
}

// ------------------------------------------------- threads stuck on a lock

/// A threaded server whose workers wait for a lock the main thread never
/// releases before they accept; the main thread joins them. Every thread
/// waits on a futex; prints `stuck` once all have started.
const LOCKED: &str = r#"
import socket, threading
l = socket.create_server(("127.0.0.1", 8082), backlog=4)
lock = threading.Lock()
lock.acquire()
started = threading.Barrier(4)
def worker():
    started.wait()
    with lock:
        c, _ = l.accept()
ts = [threading.Thread(target=worker) for _ in range(3)]
for t in ts:
    t.start()
started.wait()
print("stuck", flush=True)
for t in ts:
    t.join()
"#;

#[test]
fn every_thread_waiting_on_a_lock_is_said_so() {
    in_netns("locked", || {
        let mut server = Proc::spawn(
            "locked server",
            Command::new("python3").args(["-u", "-c", LOCKED]),
            libc::SIGKILL,
        );
        server.expect_line("stuck", Duration::from_secs(20));
        // Every thread is inside futex() before the samples are taken.
        for tid in poll("four threads", Duration::from_secs(20), || {
            let tids: Vec<u32> = std::fs::read_dir(format!("/proc/{}/task", server.pid()))
                .ok()?
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect();
            (tids.len() == 4).then_some(tids)
        }) {
            poll("a thread in futex()", Duration::from_secs(30), || {
                let text =
                    std::fs::read_to_string(format!("/proc/{}/task/{tid}/syscall", server.pid()))
                        .ok()?;
                let nr: libc::c_long = text.split_whitespace().next()?.parse().ok()?;
                (nr == libc::SYS_futex).then_some(())
            });
        }
        let _queued = queue_up(8082, 3, 2);
        let report = recorded_scan("locked", &["scan", "--json"]);
        show("locked", &report);
        let f = finding_on(&report, "accept-queue-not-drained", 8082);
        let (t, hint) = (&f["evidence"]["threads"], f["hint"].as_str().unwrap());
        assert_eq!(t["pattern"], "futex", "{f:#}");
        assert_eq!(t["single_threaded"], false, "{f:#}");
        assert_eq!(
            t["verdict"], "all 4 threads were waiting on a futex (a lock or condition variable)",
            "{f:#}"
        );
        assert!(hint.contains("a deadlock"), "{hint}");
        assert!(!hint.contains("add workers"), "{hint}");
    });
}
