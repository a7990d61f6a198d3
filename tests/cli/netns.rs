//! Exact counts in a private network namespace (root only): a workload
//! of known size, compared with what `ss -tan` sees in the same namespace.

use crate::support::*;
use std::net::SocketAddr;
use std::process::Command;

/// Runs `body` on a thread that lives in a fresh network namespace.
pub(crate) fn in_netns(name: &str, body: impl FnOnce() + Send + 'static) {
    if !is_root() {
        skip(&format!("{name}: needs root to create a network namespace"));
        return;
    }
    // Named as the test is, so that a skip inside says which test it was.
    let test = std::thread::current().name().map(str::to_string);
    let mut thread = std::thread::Builder::new();
    if let Some(t) = test {
        thread = thread.name(t);
    }
    thread
        .spawn(move || {
            if let Err(e) = enter_fresh_netns() {
                panic!("cannot enter a fresh network namespace as root: {e}");
            }
            body();
        })
        .expect("spawn the namespace's thread")
        .join()
        .expect("netns test thread");
}

const N_V4: usize = 4;
const N_V6: usize = 3;
const M_TW: usize = 25;
const K_EST: usize = 5;

fn workload() -> (Workload, u16) {
    let mut w = Workload::default();
    let port = w.listen("127.0.0.1:0");
    let v6 = std::net::TcpListener::bind(format!("[::1]:{port}")).expect("bind ::1");
    w.listeners.push(v6);
    let dest = w.listen("127.0.0.1:0");
    w.close_wait(format!("127.0.0.1:{port}").parse().unwrap(), N_V4, false, 0);
    w.close_wait(
        format!("[::1]:{port}").parse::<SocketAddr>().unwrap(),
        N_V6,
        false,
        0,
    );
    w.time_wait(format!("127.0.0.1:{dest}").parse().unwrap(), M_TW);
    w.established(format!("127.0.0.1:{dest}").parse().unwrap(), K_EST);
    wait_for_ss("TIME_WAIT", dest, M_TW as u64);
    // The closed clients' ends settle in FIN_WAIT2 (not FIN_WAIT1) once
    // their FIN is acknowledged: wait, so that counts compare exactly.
    wait_for_ss("FIN_WAIT2", port, (N_V4 + N_V6) as u64);
    (w, port)
}

#[test]
fn counts_match_ss_and_close_wait_is_attributed() {
    in_netns("counts_match_ss", || {
        let (_w, port) = workload();
        let me = u64::from(std::process::id());
        let report = json(&["scan", "--json"]);
        assert_eq!(
            nonzero_states(&report),
            ss_counts(&[]),
            "states equal ss -tan: {report:#}"
        );
        assert_eq!(report["states"]["CLOSE_WAIT"], (N_V4 + N_V6) as u64);
        assert_eq!(report["states"]["TIME_WAIT"], M_TW as u64);
        assert_eq!(report["states"].as_object().unwrap().len(), 11);
        let total: u64 = close_wait_groups(&report, port).iter().map(|g| g.1).sum();
        assert_eq!(total, (N_V4 + N_V6) as u64);
        assert!(
            close_wait_groups(&report, port)
                .iter()
                .all(|g| g.0 == Some(me))
        );
        assert_eq!(report["attribution"]["complete"], true);
        let f = &report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["evidence"]["state"] == "CLOSE_WAIT")
            .unwrap()["evidence"];
        assert_eq!(
            (f["pid"].as_u64(), f["port"].as_u64()),
            (Some(me), Some(u64::from(port)))
        );

        let tw: u64 = report["groups"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|g| g["state"] == "TIME_WAIT")
            .map(|g| {
                assert_eq!(g["pid"], serde_json::Value::Null, "TIME_WAIT has no owner");
                assert_eq!(g["owner"], "none");
                assert_eq!(g["direction"], "outbound");
                g["count"].as_u64().unwrap()
            })
            .sum();
        assert_eq!(tw, M_TW as u64);

        let n = (N_V4 + N_V6).to_string();
        let below = (N_V4 + N_V6 - 1).to_string();
        assert_eq!(
            run(&["assert", "--max-close-wait", &n]).status.code(),
            Some(0)
        );
        assert_eq!(
            run(&["assert", "--max-close-wait", &below]).status.code(),
            Some(1)
        );
        assert_eq!(
            run(&["assert", "--max-time-wait", &M_TW.to_string()])
                .status
                .code(),
            Some(0)
        );
        assert_eq!(
            run(&["assert", "--max-time-wait", "0"]).status.code(),
            Some(1)
        );

        // The kernel port filter sees what ss's own filter sees.
        let p = port.to_string();
        let by_port = json(&["scan", "--json", "--port", &p]);
        let expr = format!("sport = :{port} or dport = :{port}");
        assert_eq!(nonzero_states(&by_port), ss_counts(&[expr.as_str()]));

        // Filters: family and state.
        let v6 = json(&["scan", "--json", "--family", "6", "--state", "close-wait"]);
        assert_eq!(v6["states"]["CLOSE_WAIT"], N_V6 as u64);
        assert_eq!(v6["states"]["TIME_WAIT"], 0);
    });
}

#[test]
fn unprivileged_run_sees_the_same_counts_and_says_attribution_is_incomplete() {
    in_netns("unprivileged", || {
        if Command::new("setpriv").arg("--version").output().is_err() {
            skip("setpriv (util-linux) is not installed");
            return;
        }
        let (_w, _port) = workload();
        // The test binary may sit in a directory nobody cannot enter.
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("cwdiag");
        std::fs::copy(env!("CARGO_BIN_EXE_cwdiag"), &bin).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let out = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(&bin)
            .args(["scan", "--json"])
            .output()
            .unwrap();
        let report = json_of(out);
        assert_eq!(nonzero_states(&report), ss_counts(&[]));
        assert_eq!(report["attribution"]["complete"], false);
        assert!(
            report["attribution"]["unreadable_processes"]
                .as_u64()
                .unwrap()
                > 0
        );
        assert!(
            report["warnings"]
                .as_array()
                .unwrap()
                .iter()
                .any(|w| w.as_str().unwrap().contains("could not be inspected")),
            "the report says what it could not see: {report:#}"
        );
    });
}

fn finding<'a>(report: &'a serde_json::Value, rule: &str) -> Option<&'a serde_json::Value> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["rule_id"] == rule)
}

#[test]
fn recv_q_patterns_accept_queue_and_ages_are_diagnosed() {
    in_netns("diagnosis", || {
        let me = u64::from(std::process::id());
        let mut w = Workload::default();
        let port = w.listen("127.0.0.1:0");
        let server: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        w.close_wait(server, 3, false, 100); // Recv-Q 101
        w.close_wait(server, 4, false, 0); // Recv-Q 1
        w.close_wait(server, 5, true, 0); // Recv-Q 0
        // A listener that never accepts: 2 clients stay, 3 give up.
        let lazy = w.listen("127.0.0.1:0");
        let mut clients = Vec::new();
        for i in 0..5 {
            let c = std::net::TcpStream::connect(("127.0.0.1", lazy)).unwrap();
            if i < 2 {
                clients.push(c);
            }
        }
        wait_for_ss("CLOSE_WAIT", port, 12);
        wait_for_ss("CLOSE_WAIT", lazy, 3);
        // Ages come from tcp_info: poll until the sockets are 2 s old.
        let rules = [
            "close-wait-unread-data",
            "close-wait-never-read",
            "close-wait-eof-not-closed",
        ];
        let r = poll(
            "CLOSE_WAIT ages of 2 s",
            std::time::Duration::from_secs(15),
            || {
                let r = json(&["scan", "--json"]);
                let aged = |rule: &&str| {
                    finding(&r, rule)
                        .and_then(|f| f["evidence"]["oldest_age_ms"].as_u64())
                        .is_some_and(|ms| ms >= 2000)
                };
                rules.iter().all(aged).then_some(r)
            },
        );
        for (rule, n, split) in [
            ("close-wait-unread-data", 3, "more"),
            ("close-wait-never-read", 4, "one"),
            ("close-wait-eof-not-closed", 5, "zero"),
        ] {
            let f = finding(&r, rule).unwrap_or_else(|| panic!("{rule} missing: {r:#}"));
            assert_eq!(f["evidence"]["count"], n, "{rule}");
            assert_eq!(f["evidence"]["pid"], me);
            assert_eq!(f["evidence"]["port"], port);
            assert_eq!(f["evidence"]["recv_q"][split], n);
            assert!(
                f["evidence"]["oldest_age_ms"].as_u64().unwrap() >= 2000,
                "age: {f:#}"
            );
        }
        assert_eq!(
            finding(&r, "close-wait-unread-data").unwrap()["evidence"]["unread_bytes"],
            3 * 100
        );
        let aq = finding(&r, "accept-queue-not-drained").expect("accept-queue finding");
        assert_eq!(aq["evidence"]["port"], lazy);
        assert_eq!(aq["evidence"]["unaccepted_established"], 2);
        assert_eq!(aq["evidence"]["unaccepted_close_wait"], 3);
        assert_eq!(aq["evidence"]["listeners"][0]["accept_queue"], 5);
        assert_eq!(aq["evidence"]["listeners"][0]["pid"], me);
        // The never-accepted CLOSE_WAIT sockets are not blamed on a process.
        assert!(
            r["findings"]
                .as_array()
                .unwrap()
                .iter()
                .all(
                    |f| f["rule_id"] == "accept-queue-not-drained" || f["evidence"]["port"] != lazy
                )
        );
        // The owner's fd usage is reported with the findings.
        assert!(r["processes"][me.to_string()]["fd_count"].as_u64().unwrap() >= 12);
        drop(clients);
    });
}

#[test]
fn port_exhaustion_is_measured_against_the_namespace_port_range() {
    in_netns("port exhaustion", || {
        std::fs::write("/proc/sys/net/ipv4/ip_local_port_range", "40000 40999")
            .expect("set the namespace's port range");
        // tcp_tw_reuse=2 (the default) lets loopback connects reuse
        // TIME_WAIT ports older than 1 s: on a loaded machine the 800
        // connections take longer than that, and the count would depend
        // on timing.
        std::fs::write("/proc/sys/net/ipv4/tcp_tw_reuse", "0").expect("set tcp_tw_reuse");
        let mut w = Workload::default();
        // A listener outside the narrowed ephemeral range.
        let dest = w.listen("127.0.0.1:9000");
        w.time_wait(format!("127.0.0.1:{dest}").parse().unwrap(), 800);
        wait_for_ss("TIME_WAIT", dest, 800);
        let r = json(&["scan", "--json"]);
        let f = finding(&r, "ephemeral-ports-exhausted")
            .unwrap_or_else(|| panic!("no port finding: {r:#}"));
        assert_eq!(f["evidence"]["port_budget"], 1000);
        let ratio = f["evidence"]["port_ratio"].as_f64().unwrap();
        assert!((0.79..=0.81).contains(&ratio), "ratio {ratio}");
        assert_eq!(f["severity"], "critical");
        assert!(f["summary"].as_str().unwrap().contains("80 %"), "{f:#}");
        assert_eq!(f["evidence"]["peer"], format!("127.0.0.1:{dest}"));
        let tw = r["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["state"] == "TIME_WAIT")
            .unwrap();
        let hist: u64 = tw["time_wait_left_s"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .sum();
        assert_eq!(hist, 800);
        assert_eq!(
            tw["time_wait_left_s"][5], 800,
            "all closed in the last 10 s"
        );
    });
}

/// A thread in the namespace adds one CLOSE_WAIT socket every `every`
/// until the returned sender is dropped. Returns the port.
fn leak_steadily(
    every: std::time::Duration,
) -> (
    u16,
    std::sync::mpsc::Sender<()>,
    std::thread::JoinHandle<Workload>,
) {
    let mut w = Workload::default();
    let port = w.listen("127.0.0.1:0");
    let server: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    w.close_wait(server, 2, false, 0);
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let h = std::thread::spawn(move || {
        while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(every) {
            w.close_wait(server, 1, false, 0);
        }
        w
    });
    (port, tx, h)
}

#[test]
fn growth_assertions_and_watch_see_a_leak_and_pass_a_static_load() {
    in_netns("growth", || {
        let me = u64::from(std::process::id());
        // Static first: two CLOSE_WAIT that do not move.
        let mut w = Workload::default();
        let p0 = w.listen("127.0.0.1:0");
        w.close_wait(format!("127.0.0.1:{p0}").parse().unwrap(), 2, false, 0);
        let stat = run(&[
            "assert",
            "--samples",
            "3",
            "--interval",
            "0.4",
            "--max-close-wait-growth",
            "0",
        ]);
        assert_eq!(
            stat.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&stat.stdout)
        );
        drop(w);

        // The child threads inherit nothing: the leak runs on a thread
        // spawned here, in this namespace.
        let (port, stop, h) = leak_steadily(std::time::Duration::from_millis(250));
        let out = run(&[
            "assert",
            "--samples",
            "3",
            "--interval",
            "1",
            "--max-close-wait-growth",
            "0",
        ]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{text}");
        assert!(text.contains("FAIL max-close-wait-growth"), "{text}");
        assert!(
            text.contains(&format!("pid {me}")) && text.contains(&format!("port {port}")),
            "{text}"
        );

        let out = run(&["watch", "--count", "3", "--interval", "0.6", "--json"]);
        assert!(out.status.success());
        let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).expect("each line is JSON"))
            .collect();
        assert_eq!(lines.len(), 3);
        let cw: Vec<u64> = lines
            .iter()
            .map(|l| l["states"]["CLOSE_WAIT"].as_u64().unwrap())
            .collect();
        assert!(cw[0] < cw[2], "rise over the samples: {cw:?}");
        let s = lines[2]["series"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["port"] == port)
            .unwrap();
        assert_eq!(s["pid"], me);
        assert_eq!(s["rising"], true);
        assert!(
            lines[2]["findings"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f["rule_id"] == "close-wait-growing")
        );

        let scan = json(&["scan", "--json", "--samples", "3", "--interval", "0.6"]);
        assert!(
            scan["growth"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["port"] == port && s["rising"] == true)
        );
        drop(stop);
        drop(h.join().unwrap());
    });
}

#[test]
fn kill_destroys_only_the_selected_port_and_never_listeners() {
    in_netns("kill", || {
        let mut w = Workload::default();
        let a = w.listen("127.0.0.1:0");
        let b = w.listen("127.0.0.1:0");
        w.close_wait(format!("127.0.0.1:{a}").parse().unwrap(), 4, false, 0);
        w.close_wait(format!("127.0.0.1:{b}").parse().unwrap(), 3, false, 0);
        w.established(format!("127.0.0.1:{a}").parse().unwrap(), 2);
        wait_for_ss("CLOSE_WAIT", a, 4);
        wait_for_ss("CLOSE_WAIT", b, 3);
        let cw_on = |port: u16| {
            let out = Command::new("ss")
                .args([
                    "-tanH",
                    "state",
                    "close-wait",
                    "sport",
                    "=",
                    &format!(":{port}"),
                ])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).lines().count()
        };

        // Dry run: lists, touches nothing, and says so.
        let dry = run(&["kill", "--state", "close-wait", "--port", &a.to_string()]);
        let text = String::from_utf8_lossy(&dry.stdout);
        assert_eq!(dry.status.code(), Some(0));
        assert!(
            text.contains("4 sockets selected") && text.contains("dry run"),
            "{text}"
        );
        assert!(
            text.contains("stays leaked until the application calls close()"),
            "{text}"
        );
        assert_eq!(cw_on(a), 4);

        let real = run(&[
            "kill",
            "--state",
            "close-wait",
            "--port",
            &a.to_string(),
            "--yes",
        ]);
        let text = String::from_utf8_lossy(&real.stdout);
        assert_eq!(
            real.status.code(),
            Some(0),
            "{text}{}",
            String::from_utf8_lossy(&real.stderr)
        );
        assert!(text.contains("destroyed 4, gone 0"), "{text}");
        assert!(text.contains("first aid, not a fix"));
        let after = ss_counts(&[]);
        assert_eq!(cw_on(a), 0, "selected sockets destroyed");
        assert_eq!(cw_on(b), 3, "the other port untouched");
        assert_eq!(after.get("LISTEN"), Some(&2), "listeners untouched");
        assert_eq!(after.get("ESTABLISHED"), Some(&4), "established untouched");

        for bad in [
            vec!["kill", "--port", "1"],
            vec!["kill", "--state", "listen"],
            vec!["kill", "--state", "close-wait,listen", "--yes"],
        ] {
            let out = run(&bad);
            assert_eq!(out.status.code(), Some(2), "{bad:?}");
            assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
        }
    });
}

#[test]
fn scans_during_heavy_churn_stay_consistent() {
    in_netns("churn", || {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        const CONNECTIONS: u64 = 4000;
        let stop = Arc::new(AtomicBool::new(false));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let s1 = stop.clone();
        // Server: accept, wait for the client's FIN, then close. The client
        // always closes first, so only its side enters TIME_WAIT: at most one
        // TIME_WAIT per connection. (Closing at once would race the client's
        // close; a simultaneous close leaves both ends in TIME_WAIT, RFC 9293
        // section 3.6.)
        let server = std::thread::spawn(move || {
            use std::io::Read;
            while !s1.load(Ordering::Relaxed) {
                if let Ok((mut c, _)) = listener.accept() {
                    let mut buf = [0u8; 64];
                    while matches!(c.read(&mut buf), Ok(n) if n > 0) {}
                    drop(c);
                }
            }
        });
        // Client: a fixed number of short connections, as fast as it can.
        let client = std::thread::spawn(move || {
            let mut n = 0u64;
            while n < CONNECTIONS {
                if let Ok(c) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                    drop(c);
                    n += 1;
                }
            }
            n
        });
        let mut scans = 0;
        while !client.is_finished() || scans < 3 {
            // Short-lived processes come and go during the scans too.
            let kid = Command::new("sleep").arg("0.01").spawn();
            let r = json(&["scan", "--json", "--sockets"]);
            if let Ok(mut k) = kid {
                let _ = k.wait();
            }
            let sockets = r["sockets"].as_array().unwrap();
            let mut cookies: Vec<u64> = sockets
                .iter()
                .map(|s| s["cookie"].as_u64().unwrap())
                .collect();
            let n = cookies.len();
            cookies.sort_unstable();
            cookies.dedup();
            assert_eq!(cookies.len(), n, "no duplicate socket");
            assert_eq!(r["total"].as_u64().unwrap() as usize, n);
            let sum: u64 = r["states"]
                .as_object()
                .unwrap()
                .values()
                .map(|v| v.as_u64().unwrap())
                .sum();
            assert_eq!(sum as usize, n, "states add up");
            assert_eq!(r["states"]["LISTEN"], 1);
            // Never more TIME_WAIT than connections made.
            assert!(r["states"]["TIME_WAIT"].as_u64().unwrap() <= CONNECTIONS);
            scans += 1;
        }
        stop.store(true, Ordering::Relaxed);
        assert_eq!(client.join().unwrap(), CONNECTIONS);
        // Wake the blocking accept so the server sees the stop flag.
        let _ = std::net::TcpStream::connect(("127.0.0.1", port));
        server.join().unwrap();
        assert!(scans >= 3);
    });
}

/// Not a test on its own: the busy server that
/// `stale_check_ignores_sockets_opened_after_the_dump` runs as a child
/// process (with `CWDIAG_BUSY_SERVER` set). It holds `BUSY_CW` CLOSE_WAIT
/// sockets and `BUSY_STALE` reset by the peer, then keeps connecting, accepting and holding new connections
/// (dropping the oldest, at most `BUSY_PAIRS`, well under a 1024-fd limit)
/// about every millisecond, for at most 60 s.
#[test]
#[ignore = "helper process of stale_check_ignores_sockets_opened_after_the_dump"]
fn busy_server_helper() {
    use std::io::Write;
    if std::env::var_os("CWDIAG_BUSY_SERVER").is_none() {
        return;
    }
    let mut w = Workload::default();
    let port = w.listen("127.0.0.1:0");
    let server: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    w.close_wait(server, BUSY_CW, false, 0);
    // Really stale: connections reset by the peer whose fds stay open.
    let mut reset = Vec::new();
    for _ in 0..BUSY_STALE {
        let c = std::net::TcpStream::connect(server).unwrap();
        let s = w.listeners[0].accept().unwrap().0;
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: a valid fd and a linger struct that outlives the call.
        let rc = unsafe {
            use std::os::fd::AsRawFd;
            libc::setsockopt(
                c.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0);
        drop(c); // RST: `s` goes to CLOSE, its fd stays
        reset.push(s);
    }
    let mut pairs = std::collections::VecDeque::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut told = false;
    while std::time::Instant::now() < deadline {
        let c = std::net::TcpStream::connect(server).unwrap();
        let s = w.listeners[0].accept().unwrap().0;
        pairs.push_back((s, c));
        if pairs.len() > BUSY_PAIRS {
            // Server end first: the helper's own ends never sit in
            // CLOSE_WAIT on the listening port.
            pairs.pop_front();
        }
        if !told && pairs.len() == BUSY_PAIRS {
            println!("ready {port}");
            std::io::stdout().flush().unwrap();
            told = true;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

const BUSY_CW: usize = 20;
const BUSY_STALE: usize = 3;
const BUSY_PAIRS: usize = 300;

/// Kills and reaps a child process when dropped, even when a test fails.
pub(crate) struct KillOnDrop(pub(crate) std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn stale_check_ignores_sockets_opened_after_the_dump() {
    in_netns("stale_check_ignores_sockets_opened_after_the_dump", || {
        use std::io::BufRead;
        let mut child = KillOnDrop(
            Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "netns::busy_server_helper",
                    "--ignored",
                    "--nocapture",
                ])
                .env("CWDIAG_BUSY_SERVER", "1")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        );
        let mut lines = std::io::BufReader::new(child.0.stdout.take().unwrap()).lines();
        let port: u16 = lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|l| l.strip_prefix("ready ").map(|p| p.parse().unwrap()))
            .expect("the busy server starts");
        let pid = u64::from(child.0.id());
        // A server that accepts all the time holds sockets newer than any
        // dump: they are live, not stale; the reset ones are stale.
        for _ in 0..3 {
            let report = json(&["scan", "--json"]);
            // Connections it is closing at that instant can pass through
            // CLOSE_WAIT unowned; the ones it holds are all its own.
            let owned: Vec<_> = close_wait_groups(&report, port)
                .into_iter()
                .filter(|g| g.0.is_some())
                .collect();
            assert_eq!(owned, vec![(Some(pid), BUSY_CW as u64)]);
            let p = &report["processes"][pid.to_string()];
            assert!(
                p["fd_count"].as_u64().unwrap() > 2 * BUSY_PAIRS as u64,
                "{p:#}"
            );
            assert_eq!(p["stale_socket_fds"], BUSY_STALE as u64, "{p:#}");
            let f = finding(&report, "stale-socket-fds").expect("a stale-socket-fds finding");
            assert_eq!(f["evidence"]["pid"], pid);
            assert_eq!(f["evidence"]["count"], BUSY_STALE as u64);
        }
    });
}

/// A client process holding `n` connections to 127.0.0.1:`port`, started
/// in the calling thread's namespace; prints its pid when connected.
fn python_client(port: u16, n: usize) -> std::process::Child {
    use std::io::BufRead;
    let script = format!(
        "import socket, sys, time\n\
         keep = [socket.create_connection(('127.0.0.1', {port})) for _ in range({n})]\n\
         print('ready', flush=True)\n\
         time.sleep(60)\n"
    );
    let mut child = Command::new("python3")
        .args(["-c", &script])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let mut line = String::new();
    let out = child.stdout.take().unwrap();
    std::io::BufReader::new(out).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    child
}

#[test]
fn stale_fds_of_reset_connections_are_found_in_any_process() {
    in_netns("stale sweep", || {
        // The server resets every connection (SO_LINGER {1,0} close): the
        // client's sockets go CLOSE and leave every table, while the
        // client keeps their fds. It holds no CLOSE_WAIT socket at all.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut client = python_client(port, 30);
        for _ in 0..30 {
            let (a, _) = listener.accept().unwrap();
            linger_zero(&a);
            drop(a);
        }
        let pid = u64::from(client.id());
        let r = poll(
            "the resets to land",
            std::time::Duration::from_secs(10),
            || {
                let r = json(&["scan", "--json"]);
                finding(&r, "stale-socket-fds")
                    .is_some_and(|f| f["evidence"]["count"] == 30)
                    .then_some(r)
            },
        );
        let f = finding(&r, "stale-socket-fds").unwrap();
        assert_eq!(f["evidence"]["pid"], pid, "{f:#}");
        assert_eq!(r["states"]["CLOSE_WAIT"], 0);
        let out = run(&["assert", "--max-stale-socket-fds", "0"]);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(&format!("(pid {pid})")), "{text}");
        assert_eq!(
            run(&["assert", "--max-stale-socket-fds", "30"])
                .status
                .code(),
            Some(0)
        );
        let _ = client.kill();
        let _ = client.wait();

        // The healthy look-alike: 30 live connections, nothing stale.
        let mut healthy = python_client(port, 30);
        let accepted: Vec<_> = (0..30).map(|_| listener.accept().unwrap().0).collect();
        let r = json(&["scan", "--json"]);
        assert!(finding(&r, "stale-socket-fds").is_none(), "{r:#}");
        assert_eq!(
            run(&["assert", "--max-stale-socket-fds", "0"])
                .status
                .code(),
            Some(0)
        );
        drop(accepted);
        let _ = healthy.kill();
        let _ = healthy.wait();
    });
}

/// Sets SO_LINGER {1, 0} so that dropping the stream sends an RST.
fn linger_zero(s: &std::net::TcpStream) {
    rustix::net::sockopt::set_socket_linger(s, Some(std::time::Duration::ZERO)).unwrap();
}

#[test]
fn a_prefork_server_is_named_whole_master_and_busy_workers() {
    in_netns("prefork", || {
        use std::io::BufRead;
        // A master that listens and forks two workers; each worker
        // accepts one connection and then hangs in a slow handler.
        let script = "import os, socket, sys, time\n\
            l = socket.socket(); l.bind(('127.0.0.1', 0)); l.listen(16)\n\
            kids = []\n\
            for _ in range(2):\n\
            \x20   pid = os.fork()\n\
            \x20   if pid == 0:\n\
            \x20       c, _ = l.accept(); time.sleep(60); os._exit(0)\n\
            \x20   kids.append(pid)\n\
            print(l.getsockname()[1], *kids, flush=True)\n\
            time.sleep(60)\n";
        let mut master = Command::new("python3")
            .args(["-c", script])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let mut line = String::new();
        std::io::BufReader::new(master.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let nums: Vec<u32> = line
            .split_whitespace()
            .map(|n| n.parse().unwrap())
            .collect();
        let (port, workers) = (nums[0] as u16, &nums[1..]);
        // Two clients keep the workers busy; five more wait in the queue,
        // three of which give up.
        let mut clients: Vec<_> = (0..7)
            .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap())
            .collect();
        clients.truncate(4);
        wait_for_ss("CLOSE_WAIT", port, 3);
        let r = poll(
            "both workers to hold a connection",
            std::time::Duration::from_secs(10),
            || {
                let r = json(&["scan", "--json"]);
                let f = finding(&r, "accept-queue-not-drained")?;
                (f["evidence"]["connection_holders"].as_array()?.len() == 2).then_some(r)
            },
        );
        let f = finding(&r, "accept-queue-not-drained").unwrap();
        let mut holders: Vec<u64> = f["evidence"]["listeners"][0]["holders"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_u64().unwrap())
            .collect();
        holders.sort_unstable();
        let mut want: Vec<u64> = workers.iter().map(|&p| u64::from(p)).collect();
        want.push(u64::from(master.id()));
        want.sort_unstable();
        assert_eq!(holders, want, "{f:#}");
        let busy: Vec<u64> = f["evidence"]["connection_holders"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["pid"].as_u64().unwrap())
            .collect();
        for w in workers {
            assert!(busy.contains(&u64::from(*w)), "{f:#}");
        }
        assert_eq!(f["evidence"]["unaccepted_close_wait"], 3);
        assert!(f["hint"].as_str().unwrap().contains("saturated"), "{f:#}");
        drop(clients);
        for w in workers {
            let _ = Command::new("kill").arg(w.to_string()).status();
        }
        let _ = master.kill();
        let _ = master.wait();
    });
}

/// A cgroup v2 hierarchy this test may create cgroups in: the host's
/// when it is cgroup2, else a private mount of one (unmounted on drop).
/// Everything it creates sits under one cgroup of its own
/// (`cwdiag-test-PID-N`), never beside a real `kubepods.slice`, and is
/// removed on drop, after the processes moved in were killed: a failing
/// assertion leaves the host's hierarchy as it was.
struct Cgroup2 {
    root: std::path::PathBuf,
    mounted: bool,
    made: Vec<std::path::PathBuf>,
    /// Processes moved in, killed and reaped before the cgroups go.
    members: Vec<std::process::Child>,
}

impl Cgroup2 {
    fn new() -> Option<Cgroup2> {
        let host = std::path::Path::new("/sys/fs/cgroup");
        let (base, mounted) = if std::fs::metadata(host.join("cgroup.procs")).is_ok()
            && std::fs::metadata(host.join("cgroup.controllers")).is_ok()
        {
            (host.to_path_buf(), false)
        } else {
            let dir = std::env::temp_dir().join(format!("cwdiag-cg2-{}", std::process::id()));
            std::fs::create_dir_all(&dir).ok()?;
            let ok = Command::new("mount")
                .args(["-t", "cgroup2", "none"])
                .arg(&dir)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                let _ = std::fs::remove_dir(&dir);
                return None;
            }
            (dir, true)
        };
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let own = base.join(format!("cwdiag-test-{}-{n}", std::process::id()));
        let mut cg = Cgroup2 {
            root: own.clone(),
            mounted,
            made: Vec::new(),
            members: Vec::new(),
        };
        if mounted {
            cg.made.push(base.clone()); // the mount point, handled in drop
        }
        std::fs::create_dir(&own).ok()?;
        cg.made.push(own);
        Some(cg)
    }

    /// Creates `rel` (and its parents) under this test's own cgroup and
    /// moves `child` into it; `child` is killed when this is dropped.
    fn enter(&mut self, rel: &str, child: std::process::Child) -> u32 {
        let pid = child.id();
        self.members.push(child);
        let mut path = self.root.clone();
        for part in rel.split('/') {
            path.push(part);
            if !path.exists() {
                std::fs::create_dir(&path).expect("create cgroup");
                self.made.push(path.clone());
            }
        }
        std::fs::write(path.join("cgroup.procs"), pid.to_string()).expect("move into cgroup");
        pid
    }
}

impl Drop for Cgroup2 {
    fn drop(&mut self) {
        for c in &mut self.members {
            let _ = c.kill();
            let _ = c.wait();
        }
        let mount_point = self.mounted.then(|| self.made.remove(0));
        for p in self.made.iter().rev() {
            let _ = std::fs::remove_dir(p);
        }
        if let Some(dir) = mount_point {
            let _ = Command::new("umount").arg(&dir).status();
            let _ = std::fs::remove_dir(&dir);
        }
    }
}

#[test]
fn a_pod_owner_is_named_by_pod_uid_and_container_everywhere() {
    in_netns("pod identity", || {
        use std::io::BufRead;
        let Some(mut cg) = Cgroup2::new() else {
            skip("no cgroup v2 hierarchy can be used or mounted here");
            return;
        };
        let script = "import socket, time\n\
            l = socket.socket(); l.bind(('127.0.0.1', 0)); l.listen(16)\n\
            print(l.getsockname()[1], flush=True)\n\
            keep = [l.accept()[0] for _ in range(3)]\n\
            time.sleep(60)\n";
        let mut child = Command::new("python3")
            .args(["-c", script])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let stdout = child.stdout.take().unwrap();
        let uid = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
        let id = "ab".repeat(32);
        // From here on the child is the cgroup guard's: killed and its
        // cgroups removed whatever assertion below fails.
        cg.enter(
            &format!(
                "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{id}.scope",
                uid.replace('-', "_")
            ),
            child,
        );
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .unwrap();
        let port: u16 = line.trim().parse().unwrap();
        for _ in 0..3 {
            drop(std::net::TcpStream::connect(("127.0.0.1", port)).unwrap());
        }
        wait_for_ss("CLOSE_WAIT", port, 3);
        let r = poll(
            "the owner to be attributed",
            std::time::Duration::from_secs(10),
            || {
                let r = json(&["scan", "--json"]);
                let g = r["groups"]
                    .as_array()?
                    .iter()
                    .find(|g| g["state"] == "CLOSE_WAIT" && g["port"] == port)?
                    .clone();
                (g["count"] == 3 && g["pid"].is_u64()).then_some(g)
            },
        );
        assert_eq!(r["pod_uid"], uid, "{r:#}");
        assert_eq!(r["container"], format!("containerd:{}", &id[..12]));
        let prom = String::from_utf8(run(&["scan", "--format", "prometheus"]).stdout).unwrap();
        assert!(
            prom.lines().any(|l| l.starts_with("cwdiag_group_sockets{")
                && l.contains("state=\"CLOSE_WAIT\"")
                && l.contains(&format!("pod_uid=\"{uid}\""))
                && l.contains(&format!("container=\"containerd:{}\"", &id[..12]))),
            "{prom}"
        );
        let table = String::from_utf8(run(&["scan", "--color", "never"]).stdout).unwrap();
        assert!(table.contains("pod 0f1e2d3c"), "{table}");
        // --all-netns, run from the host's namespace (the test process's
        // main thread is there), names this namespace by its pod.
        let host_ns = format!("--net=/proc/{}/ns/net", std::process::id());
        let out = Command::new("nsenter")
            .arg(&host_ns)
            .arg(env!("CARGO_BIN_EXE_cwdiag"))
            .args(["scan", "--all-netns", "--json"])
            .output()
            .expect("nsenter runs");
        let all = json_of(out);
        let ns = all["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["netns"]["pod_uid"] == uid)
            .unwrap_or_else(|| panic!("no namespace carries the pod: {all:#}"));
        assert_eq!(
            ns["netns"]["container"],
            format!("containerd:{}", &id[..12])
        );
    });
}

/// Opens `n` loopback connections to `listener` and returns both ends.
fn connected(
    listener: &std::net::TcpListener,
    n: usize,
) -> Vec<(std::net::TcpStream, std::net::TcpStream)> {
    let addr = listener.local_addr().unwrap();
    (0..n)
        .map(|_| {
            let c = std::net::TcpStream::connect(addr).expect("connect");
            let (s, _) = listener.accept().expect("accept");
            (c, s)
        })
        .collect()
}

/// Closes every pair, the client first: once the server side is all in
/// CLOSE_WAIT (no simultaneous close, which would leave TIME_WAIT on both
/// sides), the servers close and the clients enter TIME_WAIT. Returns the
/// instants before the first server close and once `ss` shows all
/// `tw_after` TIME_WAIT on `port` (a loaded host may defer the last FINs
/// to ksoftirqd, after close() returned).
fn close_all(
    pairs: Vec<(std::net::TcpStream, std::net::TcpStream)>,
    port: u16,
    tw_after: u64,
) -> (std::time::Instant, std::time::Instant) {
    let n = pairs.len() as u64;
    let servers: Vec<std::net::TcpStream> = pairs.into_iter().map(|(_, s)| s).collect();
    wait_for_ss("CLOSE_WAIT", port, n);
    let before = std::time::Instant::now();
    drop(servers);
    wait_for_ss("TIME_WAIT", port, tw_after);
    (before, std::time::Instant::now())
}

#[test]
fn time_wait_timers_date_each_close_and_a_burst_is_counted_not_rated() {
    in_netns("time-wait timers", || {
        // Every close keeps its TIME_WAIT: no reuse of client ports.
        std::fs::write("/proc/sys/net/ipv4/tcp_tw_reuse", "0").expect("set tcp_tw_reuse");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        const N: usize = 200;
        // Two bursts of N closes at known instants, ~1.5 s apart.
        let first = connected(&listener, N);
        let second = connected(&listener, N);
        let (a0, a1) = close_all(first, port, N as u64);
        std::thread::sleep(std::time::Duration::from_millis(1500));
        let (b0, b1) = close_all(second, port, 2 * N as u64);
        let scanned_from = std::time::Instant::now();
        let r = json(&["scan", "--json", "--sockets", "--time-wait-warn", "100"]);
        let scanned_by = std::time::Instant::now();
        // Ages from the remaining times (60 000 ms - expires): the
        // youngest N are the second burst, the oldest N the first.
        let mut ages: Vec<u64> = r["sockets"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["state"] == "TIME_WAIT")
            .map(|s| 60_000 - s["expires_ms"].as_u64().unwrap())
            .collect();
        assert_eq!(ages.len(), 2 * N, "{r:#}");
        ages.sort_unstable();
        let (young, old) = ages.split_at(N);
        // Each burst reads as closed within the time from its first
        // close to all of it in TIME_WAIT (measured here, whatever the
        // host's speed) plus two jiffies (at most 20 ms at HZ=100) of
        // timer resolution.
        let ms = |d: std::time::Duration| d.as_millis() as u64;
        let spread = |v: &[u64]| v[v.len() - 1] - v[0];
        assert!(spread(old) <= ms(a1 - a0) + 20, "first burst {old:?}");
        assert!(spread(young) <= ms(b1 - b0) + 20, "second burst {young:?}");
        // And the bursts are as far apart as they were closed.
        let gap = old[0] as i64 - young[young.len() - 1] as i64;
        let (lo, hi) = (ms(b0 - a1) as i64 - 20, ms(b1 - a0) as i64 + 20);
        assert!((lo..=hi).contains(&gap), "gap {gap} ms, not in {lo}..={hi}");
        // The finding counts all of them within a window that reaches
        // the oldest close: a burst, however fast, is a count, not a rate.
        let fs: Vec<&serde_json::Value> = r["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["rule_id"] == "time-wait-client-churn")
            .collect();
        assert_eq!(fs.len(), 1, "{r:#}");
        assert_eq!(fs[0]["severity"], "info", "{:#}", fs[0]);
        let c = &fs[0]["evidence"]["closes"];
        assert_eq!(c["count"], 2 * N as u64, "{c:#}");
        let window = c["window_s"]
            .as_u64()
            .unwrap_or_else(|| c["window_s"].as_f64().unwrap() as u64);
        assert_eq!(window, old[N - 1].div_ceil(1000), "{c:#}");
        let least = (scanned_from - a1).as_secs_f64();
        let most = (scanned_by - a0).as_secs_f64();
        assert!(
            (least.floor() as u64..=most.ceil() as u64).contains(&window),
            "window {window} s, closes {least:.2}..{most:.2} s before the scan"
        );
        assert!(c["sustained_per_s"].is_null(), "{c:#}");
        let summary = fs[0]["summary"].as_str().unwrap();
        assert!(
            summary.ends_with(&format!("{} closes within the last ~{window} s", 2 * N)),
            "{summary}"
        );
    });
}
