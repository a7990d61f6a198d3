//! The peer as the host sees it, on real software (root only): a
//! MariaDB server on a non-default port with its idle timeout on its
//! command line, and HAProxy in front of nginx, each in a private network
//! namespace with real clients (PyMySQL, requests). cwdiag must name the
//! process holding the listener and the setting it states, not guess from
//! the port.

use crate::netns::in_netns;
use crate::realworld::{
    Proc, assert_no_alarm, findings, nginx_prereq, program, python_has, show, ss_close_wait_to,
    start_nginx, wait_listening,
};
use crate::support::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Not 3306: the port alone would not say MariaDB.
const MARIADB_PORT: u16 = 3307;

fn mariadb_prereqs() -> Option<(PathBuf, PathBuf)> {
    let Some(server) = program("mariadbd", &["/usr/sbin"]) else {
        skip("mariadbd is not installed (Debian package mariadb-server)");
        return None;
    };
    let Some(install) = program("mariadb-install-db", &["/usr/bin"]) else {
        skip("mariadb-install-db is not installed (Debian package mariadb-server)");
        return None;
    };
    if !python_has("pymysql") {
        skip("python3 cannot import pymysql (PyPI package PyMySQL)");
        return None;
    }
    Some((server, install))
}

/// A data directory in `dir`, then mariadbd on 127.0.0.1:3307 with
/// `--wait-timeout=3` and `extra` options.
fn start_mariadb(server: &Path, install: &Path, dir: &Path, extra: &[&str]) -> Proc {
    let data = dir.join("data");
    let out = Command::new(install)
        .arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .args(["--user=root", "--auth-root-authentication-method=normal"])
        .arg("--skip-test-db")
        .output()
        .expect("run mariadb-install-db");
    assert!(
        out.status.success(),
        "mariadb-install-db: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut p = Proc::spawn(
        "mariadbd",
        Command::new(server)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", dir.join("sock").display()))
            .arg(format!("--pid-file={}", dir.join("pid").display()))
            .args(["--user=root", "--bind-address=127.0.0.1", "--skip-log-bin"])
            .arg(format!("--port={MARIADB_PORT}"))
            .args(["--skip-grant-tables", "--wait-timeout=3"])
            .args(extra),
        libc::SIGTERM,
    );
    wait_listening("mariadbd", MARIADB_PORT, &mut p);
    p
}

/// A PyMySQL "pool": `idle` connections used once then left idle, and
/// `busy` ones running a long query (never idle, so never timed out).
const PYMYSQL_POOL: &str = r#"
import sys, threading, time, pymysql
idle, busy, port = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
host = sys.argv[4] if len(sys.argv) > 4 else "127.0.0.1"
conns = [pymysql.connect(host=host, port=port, user="root", password="")
         for _ in range(idle + busy)]
for c in conns:
    with c.cursor() as cur:
        cur.execute("SELECT 1")
def hold(c):
    with c.cursor() as cur:
        cur.execute("SELECT SLEEP(600)")
for c in conns[idle:]:
    threading.Thread(target=hold, args=(c,), daemon=True).start()
print("ready", flush=True)
time.sleep(600)
"#;

fn pymysql_pool(idle: usize, busy: usize) -> Proc {
    let mut c = Proc::spawn(
        "PyMySQL pool",
        Command::new("python3").args([
            "-u",
            "-c",
            PYMYSQL_POOL,
            &idle.to_string(),
            &busy.to_string(),
            &MARIADB_PORT.to_string(),
        ]),
        libc::SIGKILL,
    );
    c.expect_line("ready", Duration::from_secs(30));
    c
}

fn process_findings<'a>(report: &'a Value, rule: &str, pid: u32) -> Vec<&'a Value> {
    findings(report, rule)
        .into_iter()
        .filter(|f| f["evidence"]["pid"] == pid)
        .collect()
}

#[test]
fn mariadb_on_a_non_default_port_is_named_by_its_listener_and_its_wait_timeout() {
    let Some((server, install)) = mariadb_prereqs() else {
        return;
    };
    in_netns("peer mariadb close-wait", move || {
        let dir = tempfile::tempdir().unwrap();
        // pool-of-threads closes an idle connection with a FIN (the
        // default thread handling resets it: see the next test).
        let maria = start_mariadb(
            &server,
            &install,
            dir.path(),
            &["--thread-handling=pool-of-threads"],
        );
        const POOL: usize = 4;
        let client = pymysql_pool(POOL, 0);
        // wait_timeout is checked by the thread pool's timer: allow for a
        // loaded host rather than assume 3 s.
        poll(
            "the pool closed by wait_timeout",
            Duration::from_secs(30),
            || (ss_close_wait_to(MARIADB_PORT).len() >= POOL).then_some(()),
        );
        let report = json(&["scan", "--json"]);
        show("peer mariadb", &report);
        let fs = process_findings(&report, "close-wait-never-read", client.pid());
        assert_eq!(fs.len(), 1, "{report:#}");
        let (f, e) = (fs[0], &fs[0]["evidence"]);
        let ss = ss_close_wait_to(MARIADB_PORT);
        assert_eq!(ss.len(), POOL, "{ss:?}");
        assert_eq!(e["count"], POOL as u64, "{f:#}");
        let ps = &e["peer_service"];
        assert_eq!(ps["source"], "listener", "{f:#}");
        assert_eq!(ps["name"], "MariaDB", "{f:#}");
        assert_eq!(ps["pid"], maria.pid(), "{f:#}");
        assert_eq!(ps["holders"], serde_json::json!([maria.pid()]), "{f:#}");
        assert_eq!(ps["listener"], format!("127.0.0.1:{MARIADB_PORT}"), "{f:#}");
        assert_eq!(ps["setting"], "--wait-timeout=3", "{f:#}");
        assert_eq!(e["service"], "MariaDB", "{f:#}");
        let hint = f["hint"].as_str().unwrap();
        assert!(
            hint.contains("mariadbd") && hint.contains("`--wait-timeout=3`"),
            "{hint}"
        );
        assert!(hint.contains("idle for 3 s"), "{hint}");
        assert!(
            !hint.contains("28800"),
            "the stated setting, not the default: {hint}"
        );
        assert_eq!(f["severity"], "info", "a bounded pool: {f:#}");
        assert_no_alarm(&report);
    });
}

#[test]
fn mariadb_reset_pool_members_are_the_pool_s_and_a_busy_pool_is_silent() {
    let Some((server, install)) = mariadb_prereqs() else {
        return;
    };
    in_netns("peer mariadb reset", move || {
        let dir = tempfile::tempdir().unwrap();
        // The default thread handling ends an idle connection with an RST:
        // the client's sockets leave every table, their fds stay.
        let _maria = start_mariadb(&server, &install, dir.path(), &[]);
        // Enough reset sockets for a plain scan to look for stale fds in
        // every process (the sweep's trigger, 8 on the host).
        const IDLE: usize = 9;
        const BUSY: usize = 2;
        let pool = pymysql_pool(IDLE, BUSY);
        // The look-alike: a pool whose connections are all in use.
        let busy = pymysql_pool(0, 3);
        let report = poll("the idle members reset", Duration::from_secs(30), || {
            let r = json(&["scan", "--json"]);
            process_findings(&r, "stale-socket-fds", pool.pid())
                .first()
                .is_some_and(|f| f["evidence"]["count"] == IDLE as u64)
                .then_some(r)
        });
        show("peer mariadb reset", &report);
        let f = process_findings(&report, "stale-socket-fds", pool.pid())[0];
        let e = &f["evidence"];
        assert_eq!(e["pool_peer"], format!("127.0.0.1:{MARIADB_PORT}"), "{f:#}");
        assert_eq!(e["pool_connections"], BUSY as u64, "{f:#}");
        assert_eq!(e["peer_service"]["name"], "MariaDB", "{f:#}");
        assert_eq!(e["peer_service"]["source"], "listener", "{f:#}");
        let hint = f["hint"].as_str().unwrap();
        assert!(
            hint.contains("connection pool") && hint.contains("reset"),
            "{hint}"
        );
        assert!(!hint.contains("close() on EOF"), "{hint}");
        // Nothing is said about the pool whose connections are busy.
        let about_busy: Vec<&Value> = report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["evidence"]["pid"] == busy.pid())
            .collect();
        assert!(about_busy.is_empty(), "{about_busy:#?}");
    });
}

const HAPROXY_PORT: u16 = 8090;

/// haproxy in HTTP mode on 127.0.0.1:8090 in front of nginx on 8080,
/// closing idle client connections after 2 s.
fn start_haproxy(haproxy: &Path, dir: &Path) -> Proc {
    let conf = format!(
        "global\n  maxconn 256\n\
         defaults\n  mode http\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n  timeout http-keep-alive 2s\n\
         frontend web\n  bind 127.0.0.1:{HAPROXY_PORT}\n  default_backend app\n\
         backend app\n  server nginx 127.0.0.1:8080\n"
    );
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, conf).unwrap();
    let mut p = Proc::spawn(
        "haproxy",
        Command::new(haproxy).arg("-f").arg(&path).arg("-db"),
        libc::SIGTERM,
    );
    wait_listening("haproxy", HAPROXY_PORT, &mut p);
    p
}

/// One requests.Session used by `n` threads at once through the proxy.
const REQUESTS_VIA_PROXY: &str = r#"
import sys, threading, time, requests
n, port = int(sys.argv[1]), int(sys.argv[2])
s = requests.Session()
barrier = threading.Barrier(n)
def get():
    r = s.get(f"http://127.0.0.1:{port}/", stream=True, timeout=10)
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
fn haproxy_in_front_of_nginx_is_named_as_the_proxy_with_proxy_advice() {
    let Some(nginx) = nginx_prereq() else {
        return;
    };
    let Some(haproxy) = program("haproxy", &["/usr/sbin"]) else {
        skip("haproxy is not installed (Debian package haproxy)");
        return;
    };
    if !python_has("requests") {
        skip("python3 cannot import requests (PyPI package requests)");
        return;
    }
    in_netns("peer haproxy", move || {
        let dir = tempfile::tempdir().unwrap();
        let _nginx = start_nginx(&nginx, dir.path(), "60s");
        let proxy = start_haproxy(&haproxy, dir.path());
        const N: usize = 3;
        let mut client = Proc::spawn(
            "requests via haproxy",
            Command::new("python3").args([
                "-u",
                "-c",
                REQUESTS_VIA_PROXY,
                &N.to_string(),
                &HAPROXY_PORT.to_string(),
            ]),
            libc::SIGKILL,
        );
        client.expect_line("ready", Duration::from_secs(20));
        wait_for_ss("CLOSE_WAIT", HAPROXY_PORT, N as u64);
        let report = json(&["scan", "--json"]);
        show("peer haproxy", &report);
        let fs = process_findings(&report, "close-wait-never-read", client.pid());
        assert_eq!(fs.len(), 1, "{report:#}");
        let (f, e) = (fs[0], &fs[0]["evidence"]);
        let ps = &e["peer_service"];
        assert_eq!(ps["source"], "listener", "{f:#}");
        assert_eq!(ps["name"], "HAProxy", "{f:#}");
        let holders: Vec<u64> = ps["holders"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_u64().unwrap())
            .collect();
        assert!(holders.contains(&u64::from(proxy.pid())), "{f:#}");
        assert_eq!(
            ps["config"],
            dir.path().join("haproxy.cfg").display().to_string(),
            "{f:#}"
        );
        assert_eq!(ps["setting"], Value::Null, "{f:#}");
        let hint = f["hint"].as_str().unwrap();
        assert!(
            hint.contains("timeout http-keep-alive") && hint.contains("a proxy"),
            "{hint}"
        );
        for not in [
            "keepalive_timeout",
            "KeepAliveTimeout",
            "keepAliveTimeout",
            "Node.js",
        ] {
            assert!(!hint.contains(not), "{not} in {hint}");
        }
        assert_no_alarm(&report);
    });
}

/// nginx on 127.0.0.1:8080 serving `/big` (`size` bytes) and closing
/// idle keep-alive connections after 1 s.
fn start_nginx_with_body(nginx: &Path, dir: &Path, size: usize) -> Proc {
    let d = dir.display();
    std::fs::create_dir_all(dir.join("www")).unwrap();
    std::fs::write(dir.join("www/big"), vec![b'x'; size]).unwrap();
    let conf = format!(
        "worker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n access_log off;\n client_body_temp_path {d}/body;\n proxy_temp_path {d}/proxy;\n\
          fastcgi_temp_path {d}/fastcgi;\n uwsgi_temp_path {d}/uwsgi;\n scgi_temp_path {d}/scgi;\n\
          keepalive_timeout 1s;\n\
          server {{ listen 127.0.0.1:8080; root {d}/www; }}\n}}\n"
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    let mut p = Proc::spawn(
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
    wait_listening("nginx", 8080, &mut p);
    p
}

/// `n` concurrent streamed GETs of /big on one Session; `read` says
/// whether the bodies are read (and the connections returned to the
/// pool) or abandoned unread.
const REQUESTS_BIG: &str = r#"
import sys, threading, time, requests
n, read = int(sys.argv[1]), sys.argv[2] == "read"
s = requests.Session()
keep = []
barrier = threading.Barrier(n)
def get():
    r = s.get("http://127.0.0.1:8080/big", stream=True, timeout=10)
    barrier.wait(timeout=10)
    if read:
        assert len(r.content) > 0
        r.close()
    else:
        keep.append(r)
ts = [threading.Thread(target=get) for _ in range(n)]
for t in ts: t.start()
for t in ts: t.join()
print("ready", flush=True)
time.sleep(120)
"#;

#[test]
fn unread_response_bodies_are_unread_data_in_one_verdict_and_read_ones_raise_nothing() {
    let Some(nginx) = nginx_prereq() else {
        return;
    };
    if !python_has("requests") {
        skip("python3 cannot import requests (PyPI package requests)");
        return;
    }
    in_netns("peer unread bodies", move || {
        let dir = tempfile::tempdir().unwrap();
        // Fits the loopback socket buffers whole, so nginx finishes the
        // response and then times the idle connection out (1 s).
        const BODY: usize = 40_000;
        let _nginx = start_nginx_with_body(&nginx, dir.path(), BODY);
        const N: usize = 4;
        let spawn = |mode: &str| {
            let mut c = Proc::spawn(
                "requests /big",
                Command::new("python3").args(["-u", "-c", REQUESTS_BIG, &N.to_string(), mode]),
                libc::SIGKILL,
            );
            c.expect_line("ready", Duration::from_secs(20));
            c
        };
        let abandoned = spawn("abandon");
        let reader = spawn("read");
        wait_for_ss("CLOSE_WAIT", 8080, 2 * N as u64);
        for run in 0..2 {
            let report = json(&["scan", "--json"]);
            show("peer unread bodies", &report);
            // Every abandoned body: one rule, one finding, whatever the
            // FIN's timing on each socket.
            let unread = process_findings(&report, "close-wait-unread-data", abandoned.pid());
            assert_eq!(unread.len(), 1, "run {run}: {report:#}");
            assert!(
                process_findings(&report, "close-wait-never-read", abandoned.pid()).is_empty(),
                "run {run}: split between rules: {report:#}"
            );
            let e = &unread[0]["evidence"];
            assert_eq!(e["count"], N as u64, "{e:#}");
            assert_eq!(e["goodbye"], 0, "a 40 KB body is no goodbye: {e:#}");
            assert!(
                e["unread_bytes"].as_u64().unwrap() >= (N * BODY) as u64 / 2,
                "{e:#}"
            );
            let hint = unread[0]["hint"].as_str().unwrap();
            assert!(hint.contains("stopped reading"), "{hint}");
            assert!(
                !hint.contains("thread dump"),
                "no threads were looked at: {hint}"
            );
            // The look-alike that read its bodies: an idle pool, at INFO.
            assert!(
                process_findings(&report, "close-wait-unread-data", reader.pid()).is_empty(),
                "{report:#}"
            );
            let pool = process_findings(&report, "close-wait-never-read", reader.pid());
            assert_eq!(pool.len(), 1, "{report:#}");
            assert_eq!(pool[0]["severity"], "info");
            assert_eq!(
                pool[0]["evidence"]["peer_service"]["name"], "nginx",
                "{:#}",
                pool[0]
            );
        }
    });
}

/// A named network namespace (`ip netns add`), deleted on drop.
struct PeerNs(String);

impl PeerNs {
    fn new(tag: &str) -> PeerNs {
        let name = format!("peer{tag}-{}", std::process::id());
        ip(&["netns", "add", &name]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        PeerNs(name)
    }

    fn exec(&self, program: &Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0]).arg(program);
        c
    }

    /// Sockets of `ss -tanH state STATE` there with `port` on either end.
    fn ss_count(&self, state: &str, port: u16) -> usize {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.0, "ss", "-tanH", "state", state])
            .output()
            .expect("ss");
        let p = format!(":{port}");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.split_whitespace().any(|w| w.ends_with(&p)))
            .count()
    }
}

impl Drop for PeerNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.0])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

fn ip(args: &[&str]) {
    let ok = Command::new("ip")
        .args(args)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "ip {args:?} failed");
}

#[test]
fn all_netns_names_a_server_in_another_namespace_by_its_listener() {
    let Some((server, install)) = mariadb_prereqs() else {
        return;
    };
    if !is_root() {
        skip("peer all-netns: needs root for ip netns");
        return;
    }
    let (app, db) = (PeerNs::new("app"), PeerNs::new("db"));
    // A veth pair between them: the client 10.77.0.1, the server 10.77.0.2.
    let id = std::process::id() % 100_000;
    let (va, vb) = (format!("pa{id}"), format!("pb{id}"));
    ip(&["link", "add", &va, "type", "veth", "peer", "name", &vb]);
    ip(&["link", "set", &va, "netns", &app.0]);
    ip(&["link", "set", &vb, "netns", &db.0]);
    for (ns, dev, addr) in [(&app, &va, "10.77.0.1/24"), (&db, &vb, "10.77.0.2/24")] {
        ip(&["-n", &ns.0, "addr", "add", addr, "dev", dev]);
        ip(&["-n", &ns.0, "link", "set", dev, "up"]);
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = Command::new(&install)
        .arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .args([
            "--user=root",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
        ])
        .output()
        .expect("run mariadb-install-db");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let maria = Proc::spawn(
        "mariadbd in its namespace",
        db.exec(&server)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", dir.path().join("sock").display()))
            .arg(format!("--pid-file={}", dir.path().join("pid").display()))
            .args(["--user=root", "--bind-address=0.0.0.0", "--skip-log-bin"])
            .arg(format!("--port={MARIADB_PORT}"))
            .args(["--skip-grant-tables", "--wait-timeout=3"])
            .arg("--thread-handling=pool-of-threads"),
        libc::SIGTERM,
    );
    poll(
        "mariadbd listening in its namespace",
        Duration::from_secs(20),
        || (db.ss_count("listening", MARIADB_PORT) > 0).then_some(()),
    );
    const POOL: usize = 3;
    let mut client = Proc::spawn(
        "PyMySQL pool in the app namespace",
        app.exec(Path::new("python3")).args([
            "-u",
            "-c",
            PYMYSQL_POOL,
            &POOL.to_string(),
            "0",
            &MARIADB_PORT.to_string(),
            "10.77.0.2",
        ]),
        libc::SIGKILL,
    );
    client.expect_line("ready", Duration::from_secs(30));
    poll(
        "the pool closed by wait_timeout",
        Duration::from_secs(30),
        || (app.ss_count("close-wait", MARIADB_PORT) == POOL).then_some(()),
    );
    let all = json(&["scan", "--all-netns", "--json"]);
    let report = all["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["netns"]["name"] == app.0.as_str())
        .unwrap_or_else(|| panic!("no report for {}: {all:#}", app.0));
    show("peer all-netns", report);
    let fs = process_findings(report, "close-wait-never-read", client.pid());
    assert_eq!(fs.len(), 1, "{report:#}");
    let (f, ps) = (fs[0], &fs[0]["evidence"]["peer_service"]);
    assert_eq!(ps["source"], "listener", "{f:#}");
    assert_eq!(ps["name"], "MariaDB", "{f:#}");
    assert_eq!(ps["netns"], db.0.as_str(), "{f:#}");
    assert_eq!(ps["pid"], maria.pid(), "{f:#}");
    assert_eq!(ps["setting"], "--wait-timeout=3", "{f:#}");
    let hint = f["hint"].as_str().unwrap();
    assert!(
        hint.contains(&format!("in network namespace {}", db.0)),
        "{hint}"
    );
    // Without --all-netns the client's namespace alone cannot see the
    // server: the port (not a well-known one) names nothing.
    let alone = json(&["scan", "--json", "--netns", &app.0]);
    let fs = process_findings(&alone, "close-wait-never-read", client.pid());
    assert_eq!(fs.len(), 1, "{alone:#}");
    assert_eq!(fs[0]["evidence"]["peer_service"], Value::Null, "{alone:#}");
    drop(client);
    drop(maria);
}
