//! Verdicts on real software (root only): real servers (redis-server,
//! PostgreSQL, nginx, gunicorn) and real clients (redis-py, psycopg2,
//! requests, the JDK, ApacheBench), each test in its own network
//! namespace, compared with `ss -tanp` there. Servers use their standard
//! ports, which are free inside a private namespace, so that cwdiag can
//! recognise the service.

use crate::netns::in_netns;
use crate::support::*;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A program found on PATH or in one of `also` (Debian keeps nginx in
/// /usr/sbin and PostgreSQL's server binaries in /usr/lib/postgresql).
pub(crate) fn program(name: &str, also: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(also.iter().map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// PostgreSQL's server binaries (`postgres`, `initdb`), newest version.
fn postgres_bindir() -> Option<PathBuf> {
    if let Some(p) = program("initdb", &[]) {
        let p = std::fs::canonicalize(p).ok()?;
        return p.parent().map(Path::to_path_buf);
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|d| d.join("initdb").is_file() && d.join("postgres").is_file())
        .collect();
    dirs.sort_by_key(|d| {
        d.parent()
            .and_then(|v| v.file_name()?.to_str()?.parse::<u32>().ok())
            .unwrap_or(0)
    });
    dirs.pop()
}

/// True when `python3` can import every module of `modules`.
pub(crate) fn python_has(modules: &str) -> bool {
    Command::new("python3")
        .args(["-c", &format!("import {modules}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A child in its own process group, stopped with `stop` (then SIGKILL
/// for the whole group) when dropped, so forked workers go too.
pub(crate) struct Proc {
    what: String,
    child: Child,
    stop: i32,
    lines: Receiver<String>,
    stderr: Arc<Mutex<String>>,
}

impl Proc {
    pub(crate) fn spawn(what: &str, cmd: &mut Command, stop: i32) -> Proc {
        use std::os::unix::process::CommandExt;
        let mut child = cmd
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        let (tx, lines) = channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err = child.stderr.take().unwrap();
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let mut s = sink.lock().unwrap();
                if s.len() < 64 * 1024 {
                    s.push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            }
        });
        Proc {
            what: what.to_string(),
            child,
            stop,
            lines,
            stderr,
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for a line on stdout starting with `prefix`; returns it.
    pub(crate) fn expect_line(&mut self, prefix: &str, limit: Duration) -> String {
        let start = Instant::now();
        loop {
            let left = limit.saturating_sub(start.elapsed());
            match self.lines.recv_timeout(left.max(Duration::from_millis(1))) {
                Ok(l) if l.starts_with(prefix) => return l,
                Ok(_) => continue,
                Err(_) => panic!(
                    "{} did not print {prefix:?} within {limit:?} (exit: {:?}); stderr:\n{}",
                    self.what,
                    self.child.try_wait(),
                    self.stderr.lock().unwrap()
                ),
            }
        }
    }

    /// Waits for the child to exit by itself; returns its success.
    fn finish(&mut self, limit: Duration) -> bool {
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.success();
            }
            assert!(
                start.elapsed() < limit,
                "{} did not finish within {limit:?}; stderr:\n{}",
                self.what,
                self.stderr.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: plain syscalls on our own child and its group. The
        // leader stays a zombie (WNOWAIT) until wait() below, so the
        // group id cannot be reused by another process meanwhile.
        unsafe {
            libc::kill(pid, self.stop);
            let start = Instant::now();
            loop {
                let mut info: libc::siginfo_t = std::mem::zeroed();
                let r = libc::waitid(
                    libc::P_PID,
                    pid as libc::id_t,
                    &mut info,
                    libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
                );
                if r != 0 || info.si_pid() != 0 || start.elapsed() > Duration::from_secs(5) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            libc::killpg(pid, libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

/// One socket of `ss -tanpH`: state, Recv-Q, local, peer, pids.
#[derive(Debug)]
pub(crate) struct SsLine {
    pub(crate) state: String,
    pub(crate) recv_q: u64,
    pub(crate) local_port: u16,
    pub(crate) peer_port: u16,
    pub(crate) pids: Vec<u32>,
}

/// The port of `ip:port` (0 for a listener's `*`).
fn port_of(addr: &str) -> u16 {
    addr.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or(0)
}

/// `ss -tanpH` in the current namespace, sockets in `state` (as ss
/// names it: `LISTEN`, `TIME-WAIT`...). Filtered here: with a state
/// filter ss leaves out its State column.
pub(crate) fn ss_tanp(state: &str) -> Vec<SsLine> {
    ss_lines(state, true)
}

/// `ss -tanH`: the same without owners, much faster on a busy host (no
/// walk over every process's fds), for polling counts.
fn ss_tan(state: &str) -> Vec<SsLine> {
    ss_lines(state, false)
}

fn ss_lines(state: &str, owners: bool) -> Vec<SsLine> {
    let out = Command::new("ss")
        .arg(if owners { "-tanpH" } else { "-tanH" })
        .output()
        .expect("run ss");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 5 {
                return None;
            }
            let pids = l
                .split("pid=")
                .skip(1)
                .filter_map(|p| p.split(',').next()?.parse().ok())
                .collect();
            Some(SsLine {
                state: f[0].to_string(),
                recv_q: f[1].parse().ok()?,
                local_port: port_of(f[3]),
                peer_port: port_of(f[4]),
                pids,
            })
        })
        .filter(|s| s.state == state)
        .collect()
}

/// Client sockets in CLOSE_WAIT towards `port`, per `ss -tanp`.
pub(crate) fn ss_close_wait_to(port: u16) -> Vec<SsLine> {
    ss_tanp("CLOSE-WAIT")
        .into_iter()
        .filter(|s| s.peer_port == port)
        .collect()
}

pub(crate) fn findings<'a>(report: &'a Value, rule: &str) -> Vec<&'a Value> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["rule_id"] == rule)
        .collect()
}

/// Prints every finding (seen with `--nocapture`): what a user reads.
pub(crate) fn show(test: &str, report: &Value) {
    for f in report["findings"].as_array().unwrap() {
        eprintln!(
            "{test}: {} [{}] {}\n  hint: {}\n  evidence: {}",
            f["rule_id"], f["severity"], f["summary"], f["hint"], f["evidence"]
        );
    }
}

/// Nothing at warning or critical: the workload is healthy.
pub(crate) fn assert_no_alarm(report: &Value) {
    let loud: Vec<&Value> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["severity"] != "info")
        .collect();
    assert!(loud.is_empty(), "a healthy workload raised {loud:#?}");
}

/// A scan taken while `count` (of ss) held still at `min` or more:
/// returns it with that count, so the two compare exactly.
fn scan_settled(what: &str, min: u64, count: impl Fn() -> u64) -> (Value, u64) {
    let settled = poll(what, Duration::from_secs(10), || {
        let before = count();
        if before < min {
            return None;
        }
        let (report, rec) = record_scan(&["scan", "--json"]);
        (count() == before).then_some((report, rec, before))
    });
    let (report, rec, before) = settled;
    rec.replays_to(what, &["scan", "--json"], &report);
    (report, before)
}

/// Polls until something listens on 127.0.0.1:`port`.
pub(crate) fn wait_listening(what: &str, port: u16, server: &mut Proc) {
    poll(
        &format!("{what} listening on {port}"),
        Duration::from_secs(20),
        || {
            if let Some(st) = server.child.try_wait().unwrap() {
                panic!("{what} exited ({st}); stderr:\n{}", server.stderr());
            }
            ss_tan("LISTEN")
                .iter()
                .any(|s| s.local_port == port)
                .then_some(())
        },
    );
}

/// `scan ARGS --record FILE`, then `scan ARGS --from FILE`: the replayed
/// report must be the live one field for field (only `source` differs:
/// netlink live, the dump's path replayed). Returns the live report.
pub(crate) fn recorded_scan(what: &str, args: &[&str]) -> Value {
    let (live, rec) = record_scan(args);
    rec.replays_to(what, args, &live);
    live
}

/// A `--record` capture in a directory of its own.
struct Recording {
    _dir: tempfile::TempDir,
    path: String,
}

/// `scan ARGS --record FILE`: the live report, and the recording to check
/// with [`Recording::replays_to`] once the timing-sensitive part is over.
fn record_scan(args: &[&str]) -> (Value, Recording) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scan.dump").to_str().unwrap().to_string();
    let live = json(&[args, &["--record", &path]].concat());
    (live, Recording { _dir: dir, path })
}

impl Recording {
    /// `scan ARGS --from FILE` gives `live` field for field, `source` aside.
    fn replays_to(&self, what: &str, args: &[&str], live: &Value) {
        let replayed = json(&[args, &["--from", &self.path]].concat());
        let without_source = |v: &Value| {
            let mut v = v.clone();
            let source = v.as_object_mut().unwrap().remove("source");
            assert!(source.is_some(), "{what}: a report names its source");
            v
        };
        let (live_cmp, replayed_cmp) = (without_source(live), without_source(&replayed));
        if live_cmp != replayed_cmp {
            let keys = live_cmp
                .as_object()
                .unwrap()
                .keys()
                .filter(|k| live_cmp[*k] != replayed_cmp[*k]);
            panic!(
                "{what}: `--from` the recording differs from the live scan in {:?}\nlive: {live:#}\nreplayed: {replayed:#}",
                keys.collect::<Vec<_>>()
            );
        }
        assert_eq!(replayed["source"]["kind"], "dump", "{what}: {replayed:#}");
    }
}

/// The one close-wait-never-read finding towards `port`, checked against
/// `ss -tanp` (`ss`, taken after the scan): same count, same owner.
fn never_read_finding(report: &Value, ss: &[SsLine], port: u16, client: u32, n: usize) -> Value {
    let fs: Vec<&Value> = findings(report, "close-wait-never-read")
        .into_iter()
        .filter(|f| f["evidence"]["port"] == port)
        .collect();
    assert_eq!(fs.len(), 1, "one finding for port {port}: {report:#}");
    let f = fs[0].clone();
    let e = &f["evidence"];
    assert_eq!(ss.len(), n, "ss sees the pool's {n} sockets: {ss:?}");
    assert!(ss.iter().all(|s| s.pids == vec![client]), "{ss:?}");
    assert_eq!(e["count"], n as u64, "{f:#}");
    assert_eq!(e["pid"], client, "{f:#}");
    assert_eq!(e["direction"], "outbound", "{f:#}");
    assert_eq!(e["owner"], "process", "{f:#}");
    let groups: u64 = close_wait_groups(report, port).iter().map(|g| g.1).sum();
    assert_eq!(groups, n as u64);
    f
}

// ---------------------------------------------------------------- Redis

const REDIS_POOL: usize = 5;

/// A redis-py pool that has used `REDIS_POOL` connections at once, then
/// idles with them all back in the pool.
const REDIS_PY: &str = r#"
import sys, time, redis
n = int(sys.argv[1])
pool = redis.ConnectionPool(host="127.0.0.1", port=6379, max_connections=n)
deadline = time.time() + 15
while True:
    try:
        redis.Redis(connection_pool=pool).ping()
        break
    except redis.ConnectionError:
        if time.time() > deadline:
            raise
        time.sleep(0.05)
conns = []
for _ in range(n):
    try:
        c = pool.get_connection()
    except TypeError:
        c = pool.get_connection("PING")
    c.send_command("PING")
    assert c.read_response() in (b"PONG", "PONG", True)
    conns.append(c)
for c in conns:
    pool.release(c)
print("ready", flush=True)
time.sleep(120)
"#;

#[test]
fn redis_py_pool_timed_out_by_redis_is_an_idle_pool_at_info() {
    let Some(redis) = program("redis-server", &["/usr/bin", "/usr/sbin"]) else {
        skip("redis-server is not installed (Debian package redis-server)");
        return;
    };
    if !python_has("redis") {
        skip("python3 cannot import redis (PyPI package redis)");
        return;
    }
    in_netns("redis", move || {
        let dir = tempfile::tempdir().unwrap();
        let mut server = Proc::spawn(
            "redis-server",
            Command::new(redis)
                .args(["--port", "6379", "--bind", "127.0.0.1", "--timeout", "2"])
                .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
                .arg("--dir")
                .arg(dir.path()),
            libc::SIGTERM,
        );
        wait_listening("redis-server", 6379, &mut server);
        let mut client = Proc::spawn(
            "redis-py client",
            Command::new("python3").args(["-u", "-c", REDIS_PY, &REDIS_POOL.to_string()]),
            libc::SIGKILL,
        );
        client.expect_line("ready", Duration::from_secs(20));
        // Redis closes clients idle for more than `timeout` seconds.
        wait_for_ss("CLOSE_WAIT", 6379, REDIS_POOL as u64);
        let report = recorded_scan("redis", &["scan", "--json"]);
        show("redis", &report);
        let f = never_read_finding(
            &report,
            &ss_close_wait_to(6379),
            6379,
            client.pid(),
            REDIS_POOL,
        );
        assert!(
            ss_close_wait_to(6379).iter().all(|s| s.recv_q == 1),
            "Redis closes without a message: Recv-Q 1"
        );
        let (e, hint) = (&f["evidence"], f["hint"].as_str().unwrap());
        assert_eq!(f["severity"], "info", "{f:#}");
        assert_eq!(e["service"], "Redis", "{f:#}");
        assert_eq!(e["runtime"], "CPython", "{f:#}");
        assert_eq!(e["recv_q"]["one"], REDIS_POOL as u64);
        assert_eq!(e["goodbye"], 0);
        assert!(
            hint.contains("redis-py") && hint.contains("`timeout`"),
            "{hint}"
        );
        for not in ["Hikari", "HttpClient", "restart"] {
            assert!(!hint.contains(not), "{not} in {hint}");
        }
        assert!(
            findings(&report, "fd-exhaustion-risk").is_empty(),
            "{report:#}"
        );
        assert_no_alarm(&report);
    });
}

/// The leak look-alike: a new client (with its own pool) per request,
/// kept and never closed, as code that builds `redis.Redis()` inside a
/// loop and stores it does.
const REDIS_PY_LEAK: &str = r#"
import sys, time, redis
n = int(sys.argv[1])
deadline = time.time() + 15
while True:
    try:
        redis.Redis(host="127.0.0.1", port=6379).ping()
        break
    except redis.ConnectionError:
        if time.time() > deadline:
            raise
        time.sleep(0.05)
leaked = []
for _ in range(n):
    r = redis.Redis(host="127.0.0.1", port=6379)
    r.ping()
    leaked.append(r)
print("ready", flush=True)
time.sleep(120)
"#;

#[test]
fn redis_py_clients_never_closed_are_a_leak_beyond_any_pool() {
    let Some(redis) = program("redis-server", &["/usr/bin", "/usr/sbin"]) else {
        skip("redis-server is not installed (Debian package redis-server)");
        return;
    };
    if !python_has("redis") {
        skip("python3 cannot import redis (PyPI package redis)");
        return;
    }
    in_netns("redis leak", move || {
        const LEAKED: usize = 150;
        let dir = tempfile::tempdir().unwrap();
        let mut server = Proc::spawn(
            "redis-server",
            Command::new(redis)
                .args(["--port", "6379", "--bind", "127.0.0.1", "--timeout", "1"])
                .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
                .arg("--dir")
                .arg(dir.path()),
            libc::SIGTERM,
        );
        wait_listening("redis-server", 6379, &mut server);
        let mut client = Proc::spawn(
            "redis-py leak",
            Command::new("python3").args(["-u", "-c", REDIS_PY_LEAK, &LEAKED.to_string()]),
            libc::SIGKILL,
        );
        client.expect_line("ready", Duration::from_secs(30));
        wait_for_ss("CLOSE_WAIT", 6379, LEAKED as u64);
        let report = recorded_scan("redis leak", &["scan", "--json"]);
        show("redis leak", &report);
        let f = never_read_finding(&report, &ss_close_wait_to(6379), 6379, client.pid(), LEAKED);
        let hint = f["hint"].as_str().unwrap();
        assert_eq!(f["severity"], "critical", "{f:#}");
        assert!(hint.contains("more than a pool keeps"), "{hint}");
        assert!(hint.contains("close every client"), "{hint}");
        // Pool advice (a server timeout of 0) would hide the leak.
        assert!(!hint.contains("timeout at 0"), "{hint}");
    });
}

// ----------------------------------------------------------- PostgreSQL

/// initdb as the `postgres` user into `dir/data`, then the server on
/// 127.0.0.1:5432 with its socket in `dir` and `extra` settings.
pub(crate) fn start_postgres(bindir: &Path, dir: &Path, extra: &[&str]) -> Proc {
    let uid = id_of("-u");
    let gid = id_of("-g");
    // SAFETY: chown of a directory this test created.
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
    assert_eq!(unsafe { libc::chown(c.as_ptr(), uid, gid) }, 0);
    let as_postgres = |prog: &Path| {
        let mut c = Command::new("setpriv");
        c.arg(format!("--reuid={uid}"))
            .arg(format!("--regid={gid}"))
            .args(["--clear-groups", "--"])
            .arg(prog)
            .current_dir(dir)
            .env("LC_ALL", "C");
        c
    };
    let data = dir.join("data");
    let out = as_postgres(&bindir.join("initdb"))
        .args([
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
            "-D",
        ])
        .arg(&data)
        .output()
        .expect("run initdb");
    assert!(
        out.status.success(),
        "initdb failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut cmd = as_postgres(&bindir.join("postgres"));
    cmd.arg("-D").arg(&data).arg("-k").arg(dir);
    cmd.args(["-p", "5432", "-c", "listen_addresses=127.0.0.1"]);
    cmd.args(["-c", "fsync=off", "-c", "max_connections=50"]);
    for e in extra {
        cmd.args(["-c", e]);
    }
    // SIGINT: PostgreSQL's fast shutdown.
    let mut server = Proc::spawn("postgres", &mut cmd, libc::SIGINT);
    wait_listening("postgres", 5432, &mut server);
    server
}

fn id_of(flag: &str) -> u32 {
    let out = Command::new("id")
        .args([flag, "postgres"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "no postgres user (Debian package postgresql creates it)"
    );
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

pub(crate) fn postgres_prereqs() -> Option<PathBuf> {
    let Some(bindir) = postgres_bindir() else {
        skip("PostgreSQL server binaries not found (Debian package postgresql)");
        return None;
    };
    if !python_has("psycopg2") {
        skip("python3 cannot import psycopg2 (PyPI package psycopg2-binary)");
        return None;
    }
    if program("setpriv", &[]).is_none() {
        skip("setpriv (util-linux) is not installed");
        return None;
    }
    Some(bindir)
}

/// Connects with retries while the server finishes starting up.
const PG_CONNECT: &str = r#"
import sys, time, psycopg2, psycopg2.pool
ARGS = dict(host="127.0.0.1", port=5432, user="postgres", dbname="postgres")
def wait_ready():
    deadline = time.time() + 20
    while True:
        try:
            psycopg2.connect(**ARGS).close()
            return
        except psycopg2.OperationalError:
            if time.time() > deadline:
                raise
            time.sleep(0.05)
"#;

const PG_POOL_SIZE: usize = 4;

/// A SimpleConnectionPool whose connections each ran one query (and
/// committed: an open transaction would not count as an idle session),
/// then went back to the pool and idle.
const PG_POOL: &str = r#"
wait_ready()
n = int(sys.argv[1])
pool = psycopg2.pool.SimpleConnectionPool(n, n, **ARGS)
conns = [pool.getconn() for _ in range(n)]
for c in conns:
    with c.cursor() as cur:
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,)
    c.commit()
for c in conns:
    pool.putconn(c)
print("ready", flush=True)
time.sleep(120)
"#;

/// Short sessions, each closed by the client: what a script or a
/// pool-less web handler does.
const PG_CHURN: &str = r#"
wait_ready()
n = int(sys.argv[1])
start = time.monotonic()
for _ in range(n):
    c = psycopg2.connect(**ARGS)
    with c.cursor() as cur:
        cur.execute("SELECT 1")
    c.close()
print("done", time.monotonic() - start, flush=True)
"#;

/// One session at a time, started on a fixed schedule (`rate` per
/// second from the first), each close's wall-clock time printed.
const PG_PACED: &str = r#"
wait_ready()
rate = float(sys.argv[1])
start = time.monotonic()
print("started", flush=True)
i = 0
while time.monotonic() - start < 120:
    pause = start + i / rate - time.monotonic()
    if pause > 0:
        time.sleep(pause)
    c = psycopg2.connect(**ARGS)
    with c.cursor() as cur:
        cur.execute("SELECT 1")
    c.close()
    print("closed", int(time.time() * 1000), flush=True)
    i += 1
"#;

#[test]
fn psycopg2_pool_under_idle_session_timeout_is_an_idle_pool_not_a_stuck_reader() {
    let Some(bindir) = postgres_prereqs() else {
        return;
    };
    in_netns("postgres pool", move || {
        let dir = tempfile::tempdir().unwrap();
        let server = start_postgres(&bindir, dir.path(), &["idle_session_timeout=2s"]);
        let mut client = Proc::spawn(
            "psycopg2 pool",
            Command::new("python3").args([
                "-u",
                "-c",
                &format!("{PG_CONNECT}{PG_POOL}"),
                &PG_POOL_SIZE.to_string(),
            ]),
            libc::SIGKILL,
        );
        client.expect_line("ready", Duration::from_secs(30));
        wait_for_ss("CLOSE_WAIT", 5432, PG_POOL_SIZE as u64);
        let report = recorded_scan("postgres pool", &["scan", "--json"]);
        show("postgres pool", &report);
        assert!(
            findings(&report, "close-wait-unread-data").is_empty(),
            "the 57P05 message is a goodbye, not unread data: {report:#}"
        );
        let f = never_read_finding(
            &report,
            &ss_close_wait_to(5432),
            5432,
            client.pid(),
            PG_POOL_SIZE,
        );
        let ss = ss_close_wait_to(5432);
        assert!(
            ss.iter().all(|s| s.recv_q > 1),
            "PostgreSQL sends FATAL 57P05 before its FIN: {ss:?}"
        );
        let (e, hint) = (&f["evidence"], f["hint"].as_str().unwrap());
        assert_eq!(f["severity"], "info", "{f:#}");
        assert_eq!(e["goodbye"], PG_POOL_SIZE as u64, "{f:#}");
        assert_eq!(e["recv_q"]["more"], PG_POOL_SIZE as u64, "{f:#}");
        let unread: u64 = ss.iter().map(|s| s.recv_q - 1).sum();
        assert_eq!(e["unread_bytes"], unread, "{f:#}");
        let idle = e["idle_before_close_ms"].as_u64().expect("tcp_info idle");
        assert!((1_500..10_000).contains(&idle), "idle ~2 s: {f:#}");
        assert_eq!(e["service"], "PostgreSQL", "{f:#}");
        assert_eq!(e["runtime"], "CPython", "{f:#}");
        // The server is on this host: named by its listener, with the
        // setting its command line states.
        let ps = &e["peer_service"];
        assert_eq!(ps["source"], "listener", "{f:#}");
        assert_eq!(ps["setting"], "-c idle_session_timeout=2s", "{f:#}");
        let postmaster = ps["pid"].as_u64().expect("listener pid") as u32;
        assert!(
            postmaster == server.pid() || children_of(server.pid()).contains(&postmaster),
            "the postmaster (setpriv execs it): {f:#}"
        );
        assert!(
            hint.contains("`-c idle_session_timeout=2s`") && hint.contains("idle for 2 s"),
            "{hint}"
        );
        assert!(hint.contains("psycopg2"), "{hint}");
        for not in ["thread dump", "keep-alive", "restart", "HttpClient"] {
            assert!(!hint.contains(not), "{not} in {hint}");
        }
        assert_no_alarm(&report);
    });
}

#[test]
fn psycopg2_connect_close_churn_raises_no_alarm() {
    let Some(bindir) = postgres_prereqs() else {
        return;
    };
    in_netns("postgres churn", move || {
        let dir = tempfile::tempdir().unwrap();
        let _server = start_postgres(&bindir, dir.path(), &[]);
        // Loopback connects reuse TIME_WAIT ports older than 1 s under
        // the default tcp_tw_reuse=2, which a remote database would not
        // see; 0 (this namespace only) keeps every client TIME_WAIT.
        std::fs::write("/proc/sys/net/ipv4/tcp_tw_reuse", "0").expect("set tcp_tw_reuse");
        const N: usize = 400;
        let spawned = Instant::now();
        let mut client = Proc::spawn(
            "psycopg2 churn",
            Command::new("python3").args([
                "-u",
                "-c",
                &format!("{PG_CONNECT}{PG_CHURN}"),
                &N.to_string(),
            ]),
            libc::SIGKILL,
        );
        let done = client.expect_line("done", Duration::from_secs(120));
        let took: f64 = done["done ".len()..].parse().unwrap();
        assert!(
            client.finish(Duration::from_secs(10)),
            "{}",
            client.stderr()
        );
        // psycopg2 sends Terminate and closes; the backend exits on it,
        // so either side may close first: TIME_WAIT on the client's or
        // the server's end of every session. As under ab, a new SYN may
        // take over a server-side TIME_WAIT on the same 4-tuple.
        let on_port = |s: &SsLine| s.local_port == 5432 || s.peer_port == 5432;
        let count = || ss_tan("TIME-WAIT").iter().filter(|s| on_port(s)).count() as u64;
        let (report, tw) = scan_settled("psycopg2 TIME_WAIT", N as u64 * 9 / 10, count);
        show("postgres churn", &report);
        let groups: u64 = report["groups"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|g| g["state"] == "TIME_WAIT" && g["port"] == 5432)
            .map(|g| g["count"].as_u64().unwrap())
            .sum();
        assert_eq!(groups, tw, "{report:#}");
        assert_eq!(report["states"]["CLOSE_WAIT"], 0);
        assert_no_alarm(&report);
        // With the TIME_WAIT threshold below the session count (as for a
        // small host) the churn is reported, at INFO: however fast the
        // host ran the sessions, one snapshot only counts the closes within
        // a window, and 400 closes hold ~1 % of the ports.
        // Which side closed first is the scheduler's choice (see above):
        // the threshold is half of what the client side holds.
        let client_side = ss_tan("TIME-WAIT")
            .iter()
            .filter(|s| s.peer_port == 5432)
            .count();
        let low_threshold = (client_side / 2).max(1).to_string();
        let report = recorded_scan(
            "psycopg2 churn",
            &["scan", "--json", "--time-wait-warn", &low_threshold],
        );
        let since_spawn = spawned.elapsed().as_secs_f64();
        show("postgres churn (low threshold)", &report);
        eprintln!(
            "postgres churn: ss TIME-WAIT {tw}, client side {client_side}, {N} sessions in {took:.1}s"
        );
        assert_no_alarm(&report);
        let fs = findings(&report, "time-wait-client-churn");
        assert_eq!(fs.len(), 1, "{report:#}");
        assert_eq!(fs[0]["severity"], "info", "{:#}", fs[0]);
        let e = &fs[0]["evidence"];
        assert_eq!(e["peer"], "127.0.0.1:5432", "{e:#}");
        assert_eq!(e["count"], client_side as u64, "{e:#}");
        // The server is on this host: its listener names it.
        assert_eq!(e["peer_service"]["source"], "listener", "{e:#}");
        assert_eq!(e["peer_service"]["name"], "PostgreSQL", "{e:#}");
        let c = &e["closes"];
        assert_eq!(c["count"], client_side as u64, "{c:#}");
        assert_eq!(c["measured_by"], "time-wait-timers", "{c:#}");
        assert!(c["sustained_per_s"].is_null(), "{c:#}");
        // Every close happened after the client started, so the window
        // (the oldest close, rounded up to a second) is within that.
        let window = c["window_s"].as_f64().unwrap();
        assert!(
            (1.0..=since_spawn.ceil() + 1.0).contains(&window),
            "window {window} s, client started {since_spawn:.1} s before the scan"
        );
        let summary = fs[0]["summary"].as_str().unwrap();
        assert!(
            summary.ends_with(&format!(
                "{client_side} closes within the last ~{window:.0} s"
            )),
            "{summary}"
        );
        assert!(!summary.contains("/s"), "{summary}");
    });
}

// ---------------------------------------------------------------- nginx

pub(crate) fn nginx_prereq() -> Option<PathBuf> {
    let p = program("nginx", &["/usr/sbin"]);
    if p.is_none() {
        skip("nginx is not installed (Debian package nginx)");
    }
    p
}

/// nginx on 127.0.0.1:8080 with everything in `dir`, one worker.
pub(crate) fn start_nginx(nginx: &Path, dir: &Path, keepalive: &str) -> Proc {
    let d = dir.display();
    let conf = format!(
        "worker_processes 1;\n\
         daemon off;\n\
         pid {d}/nginx.pid;\n\
         error_log {d}/error.log;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n\
           access_log off;\n\
           client_body_temp_path {d}/body;\n\
           proxy_temp_path {d}/proxy;\n\
           fastcgi_temp_path {d}/fastcgi;\n\
           uwsgi_temp_path {d}/uwsgi;\n\
           scgi_temp_path {d}/scgi;\n\
           keepalive_timeout {keepalive};\n\
           server {{\n\
             listen 127.0.0.1:8080 backlog=4096;\n\
             location / {{ return 200 \"ok\\n\"; }}\n\
           }}\n\
         }}\n"
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    let mut server = Proc::spawn(
        "nginx",
        Command::new(nginx)
            .arg("-p")
            .arg(dir)
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-c")
            .arg(&path),
        libc::SIGTERM,
    );
    wait_listening("nginx", 8080, &mut server);
    server
}

const SESSION_SIZE: usize = 4;

/// One requests.Session used by `n` threads at once (so its urllib3
/// pool opens `n` connections), then idle.
const REQUESTS_SESSION: &str = r#"
import sys, threading, time, requests
n = int(sys.argv[1])
s = requests.Session()
barrier = threading.Barrier(n)
def get():
    r = s.get("http://127.0.0.1:8080/", stream=True, timeout=10)
    barrier.wait(timeout=10)
    assert r.content == b"ok\n"
    r.close()
ts = [threading.Thread(target=get) for _ in range(n)]
for t in ts: t.start()
for t in ts: t.join()
print("ready", flush=True)
time.sleep(120)
"#;

#[test]
fn requests_session_behind_nginx_keepalive_timeout_is_an_idle_pool_at_info() {
    let Some(nginx) = nginx_prereq() else {
        return;
    };
    if !python_has("requests") {
        skip("python3 cannot import requests (PyPI package requests)");
        return;
    }
    in_netns("nginx requests", move || {
        let dir = tempfile::tempdir().unwrap();
        let _server = start_nginx(&nginx, dir.path(), "1s");
        let mut client = Proc::spawn(
            "requests client",
            Command::new("python3").args(["-u", "-c", REQUESTS_SESSION, &SESSION_SIZE.to_string()]),
            libc::SIGKILL,
        );
        client.expect_line("ready", Duration::from_secs(20));
        wait_for_ss("CLOSE_WAIT", 8080, SESSION_SIZE as u64);
        let report = recorded_scan("nginx requests", &["scan", "--json"]);
        show("nginx requests", &report);
        let f = never_read_finding(
            &report,
            &ss_close_wait_to(8080),
            8080,
            client.pid(),
            SESSION_SIZE,
        );
        assert!(ss_close_wait_to(8080).iter().all(|s| s.recv_q == 1));
        let (e, hint) = (&f["evidence"], f["hint"].as_str().unwrap());
        assert_eq!(f["severity"], "info", "{f:#}");
        // nginx is on this host: its listener names it, not the port.
        assert_eq!(e["service"], "nginx", "{f:#}");
        assert_eq!(e["peer_service"]["source"], "listener", "{f:#}");
        assert_eq!(e["runtime"], "CPython", "{f:#}");
        assert!(
            hint.contains("urllib3") && hint.contains("requests"),
            "{hint}"
        );
        assert!(hint.contains("keepalive_timeout"), "{hint}");
        for not in ["Hikari", "HttpClient", "restart"] {
            assert!(!hint.contains(not), "{not} in {hint}");
        }
        assert_no_alarm(&report);
    });
}

#[test]
fn nginx_under_apachebench_without_keepalive_is_server_time_wait_at_most_info() {
    let Some(nginx) = nginx_prereq() else {
        return;
    };
    let Some(ab) = program("ab", &["/usr/sbin"]) else {
        skip("ab is not installed (Debian package apache2-utils)");
        return;
    };
    in_netns("nginx ab", move || {
        let dir = tempfile::tempdir().unwrap();
        let _server = start_nginx(&nginx, dir.path(), "1s");
        const N: u64 = 3000;
        let start = Instant::now();
        let out = Command::new(ab)
            .args(["-q", "-n", &N.to_string(), "-c", "10"])
            .arg("http://127.0.0.1:8080/")
            .output()
            .expect("run ab");
        let took = start.elapsed();
        eprintln!("nginx ab: {N} requests in {took:?}");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(&format!("Complete requests:      {N}")),
            "{text}"
        );
        // Without -k ab speaks HTTP/1.0: nginx closes every connection
        // after its response, so TIME_WAIT sits on the server's port. A
        // few are fewer: a new SYN on a 4-tuple in TIME_WAIT takes it
        // over (tcp_minisocks.c:tcp_timewait_state_process), and loopback
        // connects may reuse client TIME_WAIT ports (tcp_tw_reuse=2).
        let server_side = || {
            ss_tan("TIME-WAIT")
                .iter()
                .filter(|s| s.local_port == 8080)
                .count() as u64
        };
        // ab has exited: the count only settles (the last FINs).
        let (report, server_tw) = scan_settled("nginx TIME_WAIT", N * 9 / 10, server_side);
        let since_ab = start.elapsed();
        show("nginx ab", &report);
        assert_no_alarm(&report);
        let fs = findings(&report, "time-wait-server-closes");
        assert_eq!(fs.len(), 1, "{report:#}");
        let e = &fs[0]["evidence"];
        assert_eq!(e["port"], 8080);
        assert_eq!(e["direction"], "inbound");
        assert_eq!(e["count"], server_tw, "{e:#}");
        // The oldest of them closed at most `since_ab` ago: one snapshot
        // counts them within a window that covers that, and names no rate.
        let c = &e["closes"];
        let window = c["window_s"].as_f64().unwrap();
        eprintln!("nginx ab: {server_tw} closes within ~{window} s, {since_ab:?} since ab started");
        assert_eq!(c["count"], server_tw, "{c:#}");
        assert_eq!(c["measured_by"], "time-wait-timers", "{c:#}");
        assert!(c["sustained_per_s"].is_null(), "{c:#}");
        assert!(
            (1.0..=since_ab.as_secs_f64().ceil() + 1.0).contains(&window),
            "window {window} s, ab took {took:?}"
        );
        assert!(findings(&report, "time-wait-client-churn").is_empty());
        assert!(findings(&report, "ephemeral-ports-exhausted").is_empty());
    });
}

#[test]
fn psycopg2_paced_churn_is_measured_across_samples() {
    let Some(bindir) = postgres_prereqs() else {
        return;
    };
    in_netns("postgres paced churn", move || {
        let dir = tempfile::tempdir().unwrap();
        let _server = start_postgres(&bindir, dir.path(), &[]);
        // Every close keeps its TIME_WAIT (see the churn test above).
        std::fs::write("/proc/sys/net/ipv4/tcp_tw_reuse", "0").expect("set tcp_tw_reuse");
        let mut client = Proc::spawn(
            "psycopg2 paced churn",
            Command::new("python3").args(["-u", "-c", &format!("{PG_CONNECT}{PG_PACED}"), "10"]),
            libc::SIGKILL,
        );
        client.expect_line("started", Duration::from_secs(60));
        client.expect_line("closed", Duration::from_secs(30));
        // The scan runs while the client closes a session every 100 ms
        // (on a loaded host, late sessions catch up: the truth below is
        // what the client did, not the schedule).
        let report = json(&[
            "scan",
            "--json",
            "--samples",
            "3",
            "--interval",
            "2s",
            "--time-wait-warn",
            "1",
        ]);
        let closed: Vec<u64> = std::iter::from_fn(|| client.lines.try_recv().ok())
            .filter_map(|l| l.strip_prefix("closed ").and_then(|v| v.parse().ok()))
            .collect();
        drop(client);
        show("postgres paced churn", &report);
        assert_no_alarm(&report);
        let end = report["taken_at_ms"].as_u64().unwrap();
        let tw: Vec<&Value> = report["groups"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|g| g["state"] == "TIME_WAIT" && g["port"] == 5432)
            .collect();
        assert!(!tw.is_empty(), "{report:#}");
        let mut measured = 0;
        let mut window = 0.0;
        for g in &tw {
            let c = &g["closes"];
            assert_eq!(c["measured_by"], "samples", "{c:#}");
            assert_eq!(c["samples"], 3, "{c:#}");
            measured += c["count"].as_u64().unwrap();
            window = c["window_s"].as_f64().unwrap();
        }
        // Three samples 2 s apart: at least 4 s, whatever the scan's pace.
        assert!(window >= 4.0, "window {window}");
        let start = end - (window * 1000.0) as u64;
        let real = closed.iter().filter(|&&t| t > start && t <= end).count() as u64;
        eprintln!(
            "postgres paced churn: cwdiag counted {measured} closes over {window} s, the client made {real}"
        );
        // A close during a dump may land on either side of the window's
        // edges (the sample's time is taken once per dump); a new SYN may
        // take over a server-side TIME_WAIT.
        assert!(
            measured.abs_diff(real) <= 2 + real / 5,
            "cwdiag {measured}, client {real} closes in ({start}, {end}]"
        );
        // psycopg2 sends Terminate and closes while the backend exits on
        // it: either side may close first (on a loaded host the server
        // often does), so the TIME_WAIT splits between the client's
        // destination group and the server's port. Together they close at
        // the client's real rate. Which side holds how many, interval by
        // interval, is the scheduler's choice: a side's own rate is
        // checked below wherever it was sustained.
        let real_rate = real as f64 / window;
        let rate = measured as f64 / window;
        assert!(
            (rate - real_rate).abs() <= (2.0 + real as f64 / 5.0) / window,
            "cwdiag {rate:.1}/s, client {real_rate:.1}/s"
        );
        for f in ["time-wait-client-churn", "time-wait-server-closes"] {
            for f in findings(&report, f) {
                let c = &f["evidence"]["closes"];
                assert_eq!(c["measured_by"], "samples", "{f:#}");
                if let Some(r) = c["sustained_per_s"].as_f64() {
                    let n = c["count"].as_f64().unwrap();
                    assert!((r - n / window).abs() < 0.2, "{c:#}");
                    assert!(
                        f["summary"]
                            .as_str()
                            .unwrap()
                            .contains("closes/s sustained ("),
                        "{f:#}"
                    );
                }
            }
        }
    });
}

// ---------------------------------------------------------------- JDK

/// HttpURLConnection: a request every 7 s, body read and closed, so the
/// connection waits in the JDK's keep-alive cache, which closes it after
/// 5 s idle (the default when the server sends no Keep-Alive header),
/// before the next request opens a new one.
const JAVA_CLIENT: &str = r#"
import java.io.InputStream;
import java.net.HttpURLConnection;
import java.net.URI;

public class Client {
    public static void main(String[] args) throws Exception {
        for (int i = 0; i < 20; i++) {
            HttpURLConnection c = (HttpURLConnection) URI.create("http://127.0.0.1:8080/").toURL().openConnection();
            try (InputStream in = c.getInputStream()) {
                in.readAllBytes();
            }
            System.out.println("ready " + i);
            Thread.sleep(7_000);
        }
    }
}
"#;

#[test]
fn jdk_keepalive_cache_close_wait_raises_no_alarm() {
    let Some(nginx) = nginx_prereq() else {
        return;
    };
    let Some(java) = program("java", &[]) else {
        skip("java is not installed (Debian package default-jdk-headless)");
        return;
    };
    in_netns("nginx jdk", move || {
        let dir = tempfile::tempdir().unwrap();
        // nginx closes the idle connection after 1 s, the JDK's cache
        // only after 5 s: a transient CLOSE_WAIT in between.
        let _server = start_nginx(&nginx, dir.path(), "1s");
        let src = dir.path().join("Client.java");
        std::fs::write(&src, JAVA_CLIENT).unwrap();
        let mut client = Proc::spawn(
            "java Client.java",
            Command::new(java).arg("-Xshare:auto").arg(&src),
            libc::SIGKILL,
        );
        client.expect_line("ready", Duration::from_secs(60));
        // nginx closes the idle connection after 1 s, the JDK's cache
        // after 5 s: take a scan inside that window, seen by ss before
        // and after it (a slow scan waits for the next request's window).
        let local_ports = || -> Vec<u16> {
            ss_tan("CLOSE-WAIT")
                .iter()
                .filter(|s| s.peer_port == 8080)
                .map(|s| s.local_port)
                .collect()
        };
        let (report, ss, rec) = poll(
            "a scan inside the CLOSE_WAIT window",
            Duration::from_secs(60),
            || {
                let before = local_ports();
                if before.len() != 1 {
                    return None;
                }
                let (report, rec) = record_scan(&["scan", "--json"]);
                let after = ss_close_wait_to(8080);
                let same = after
                    .iter()
                    .map(|s| s.local_port)
                    .eq(before.iter().copied());
                same.then_some((report, after, rec))
            },
        );
        rec.replays_to("nginx jdk", &["scan", "--json"], &report);
        show("nginx jdk", &report);
        assert_no_alarm(&report);
        assert!(findings(&report, "fd-exhaustion-risk").is_empty());
        let f = never_read_finding(&report, &ss, 8080, client.pid(), 1);
        let (summary, hint) = (f["summary"].as_str().unwrap(), f["hint"].as_str().unwrap());
        assert!(summary.starts_with("1 CLOSE_WAIT socket to"), "{summary}");
        assert!(summary.contains("closed it after"), "{summary}");
        assert!(hint.contains("1 socket fits a bounded pool"), "{hint}");
        assert!(!hint.contains("restart"), "{hint}");
        assert_eq!(f["evidence"]["runtime"], "JVM", "{f:#}");
        // The IPv4-mapped peer is nginx's 127.0.0.1 listener.
        assert_eq!(f["evidence"]["service"], "nginx", "{f:#}");
        assert_eq!(
            f["evidence"]["peer_service"]["listener"], "127.0.0.1:8080",
            "{f:#}"
        );
    });
}

// ------------------------------------------------------------ pre-fork

/// A WSGI app whose handler is slow.
const SLOW_APP: &str = r#"
import time
def app(environ, start_response):
    time.sleep(60)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"late\n"]
"#;

const WORKERS: usize = 2;

#[test]
fn saturated_gunicorn_names_master_and_busy_workers() {
    // The gunicorn script, or the module when pip put no script on PATH.
    let mut gunicorn = match program("gunicorn", &[]) {
        Some(g) => Command::new(g),
        None if python_has("gunicorn") => {
            let mut c = Command::new("python3");
            c.args(["-m", "gunicorn"]);
            c
        }
        None => {
            skip("gunicorn is not installed (PyPI package gunicorn)");
            return;
        }
    };
    in_netns("gunicorn", move || {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("slow.py"), SLOW_APP).unwrap();
        let mut server = Proc::spawn(
            "gunicorn",
            gunicorn
                .arg("--chdir")
                .arg(dir.path())
                .args(["-w", &WORKERS.to_string(), "-k", "sync", "-t", "120"])
                .args(["-b", "127.0.0.1:8000", "slow:app"]),
            // SIGINT: gunicorn's quick shutdown.
            libc::SIGINT,
        );
        wait_listening("gunicorn", 8000, &mut server);
        let master = server.pid();
        let workers: Vec<u32> = poll("gunicorn workers", Duration::from_secs(20), || {
            let w = children_of(master);
            (w.len() == WORKERS).then_some(w)
        });
        // Each worker takes one request and sleeps in it; later clients
        // wait in the accept queue, and some give up.
        const WAITING: usize = 2;
        const GAVE_UP: usize = 3;
        let mut keep = Vec::new();
        let request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        for _ in 0..WORKERS {
            let mut c = std::net::TcpStream::connect("127.0.0.1:8000").unwrap();
            std::io::Write::write_all(&mut c, request).unwrap();
            keep.push(c);
        }
        // Both workers hold a connection before the queue builds up.
        poll("busy workers", Duration::from_secs(60), || {
            let held = ss_tanp("ESTAB")
                .iter()
                .filter(|s| s.local_port == 8000 && s.pids.iter().any(|p| workers.contains(p)))
                .count();
            (held == WORKERS).then_some(())
        });
        for i in 0..WAITING + GAVE_UP {
            let mut c = std::net::TcpStream::connect("127.0.0.1:8000").unwrap();
            std::io::Write::write_all(&mut c, request).unwrap();
            if i < WAITING {
                keep.push(c);
            }
        }
        wait_for_ss("CLOSE_WAIT", 8000, GAVE_UP as u64);
        // ss names every process holding the listener: the master and
        // both workers share one socket.
        let ss_listen: Vec<SsLine> = ss_tanp("LISTEN")
            .into_iter()
            .filter(|s| s.local_port == 8000)
            .collect();
        assert_eq!(ss_listen.len(), 1, "{ss_listen:?}");
        let mut ss_holders = ss_listen[0].pids.clone();
        ss_holders.sort_unstable();
        let mut expect = workers.clone();
        expect.push(master);
        expect.sort_unstable();
        assert_eq!(ss_holders, expect, "ss -tlnp");
        let pids = |v: &Value, key: &str| -> Vec<u32> {
            let mut p: Vec<u32> = v
                .as_array()
                .unwrap()
                .iter()
                .map(|h| h[key].as_u64().unwrap() as u32)
                .collect();
            p.sort_unstable();
            p
        };
        // A plain scan does not look up ESTABLISHED owners everywhere,
        // yet must name the busy workers of a troubled listener.
        for args in [&["scan", "--json"][..], &["scan", "--json", "--sockets"]] {
            let report = recorded_scan("gunicorn", args);
            show(&format!("gunicorn {args:?}"), &report);
            let fs = findings(&report, "accept-queue-not-drained");
            assert_eq!(fs.len(), 1, "{report:#}");
            let (f, e) = (fs[0], &fs[0]["evidence"]);
            assert_eq!(f["severity"], "critical", "{f:#}");
            assert_eq!(e["port"], 8000);
            assert_eq!(e["unaccepted_close_wait"], GAVE_UP as u64, "{f:#}");
            assert_eq!(e["unaccepted_established"], WAITING as u64, "{f:#}");
            let listeners = e["listeners"].as_array().unwrap();
            assert_eq!(listeners.len(), 1, "{f:#}");
            let mut named: Vec<u32> = listeners[0]["holders"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_u64().unwrap() as u32)
                .collect();
            named.sort_unstable();
            assert_eq!(named, ss_holders, "every listener holder: {f:#}");
            let busy = pids(&e["connection_holders"], "pid");
            assert_eq!(busy, workers, "the busy workers: {f:#}");
            let hint = f["hint"].as_str().unwrap();
            assert!(hint.contains("saturated"), "{hint}");
            assert!(!hint.contains("Nothing is accepting"), "{hint}");
            // The namespace is minutes old: its counters are too.
            assert_eq!(report["initial_netns"], false, "{report:#}");
            assert!(
                hint.contains("since the network namespace was created")
                    && !hint.contains("since boot"),
                "{hint}"
            );
            eprintln!(
                "gunicorn {args:?}: ss -tlnp holders {ss_holders:?}; cwdiag listener holders {named:?}, connection holders {busy:?}"
            );
        }
        drop(keep);
    });
}

/// Pids whose parent is `parent`, from /proc.
fn children_of(parent: u32) -> Vec<u32> {
    let mut v: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    let rest = &s[s.rfind(')')? + 2..];
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(parent)
        })
        .collect();
    v.sort_unstable();
    v
}
