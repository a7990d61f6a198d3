//! Owners a person recognises, and selectors that match what people type:
//! a real process whose executable name is longer than the kernel's
//! 15-byte comm holds CLOSE_WAIT sockets in a private namespace.

use crate::netns::{KillOnDrop, in_netns};
use crate::support::*;
use serde_json::Value;
use std::io::{BufRead, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

const NAME: &str = "billing-sync-worker";
const LEAKED: usize = 3;

/// Run as `billing-sync-worker` by the tests below: accepts `LEAKED`
/// connections on a fresh port, never reads or closes them, and exits when
/// its stdin closes.
#[test]
#[ignore = "helper process for identity tests"]
fn billing_sync_worker_helper() {
    if std::env::var_os("CWDIAG_BILLING_HELPER").is_none() {
        return;
    }
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    println!("port {}", l.local_addr().unwrap().port());
    std::io::stdout().flush().unwrap();
    let held: Vec<_> = (0..LEAKED).map(|_| l.accept().unwrap().0).collect();
    println!("accepted {}", held.len());
    std::io::stdout().flush().unwrap();
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    drop(held);
}

/// The helper under its long name, started in the calling thread's
/// namespace, with its leaked sockets in CLOSE_WAIT.
struct Worker {
    child: KillOnDrop,
    port: u16,
    exe: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

fn start_worker() -> Worker {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let exe = dir.path().join(NAME);
    let me = std::env::current_exe().unwrap();
    if std::fs::hard_link(&me, &exe).is_err() {
        std::fs::copy(&me, &exe).unwrap();
    }
    let mut child = KillOnDrop(
        Command::new(&exe)
            .args([
                "--exact",
                "identity::billing_sync_worker_helper",
                "--ignored",
                "--nocapture",
            ])
            .env("CWDIAG_BILLING_HELPER", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut lines = std::io::BufReader::new(child.0.stdout.take().unwrap()).lines();
    let port: u16 = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("port ").map(|p| p.parse().unwrap()))
        .expect("the helper listens");
    let clients: Vec<_> = (0..LEAKED)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    assert!(
        lines
            .map_while(Result::ok)
            .any(|l| l == format!("accepted {LEAKED}")),
        "the helper accepts"
    );
    drop(clients);
    wait_for_ss("CLOSE_WAIT", port, LEAKED as u64);
    Worker {
        child,
        port,
        exe,
        _dir: dir,
    }
}

fn assert_run(args: &[&str]) -> (Option<i32>, String, String) {
    let out = run(args);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `pid`'s start time as ps computes it: boot time plus the start tick.
fn started_at_ms(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
    // Field 22 overall; the 20th after the comm's closing parenthesis.
    let ticks: u64 = after_comm.split(' ').nth(19).unwrap().parse().unwrap();
    let btime: u64 = std::fs::read_to_string("/proc/stat")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("btime ").map(|v| v.trim().parse().unwrap()))
        .unwrap();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    btime * 1000 + ticks * 1000 / hz
}

fn status_field(pid: u32, key: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_string()))
        .unwrap()
}

fn passwd_name(uid: u64) -> Option<String> {
    std::fs::read_to_string("/etc/passwd")
        .ok()?
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() > 2 && f[2] == uid.to_string()).then(|| f[0].to_string())
        })
}

#[test]
fn a_long_binary_name_is_matched_named_and_identified() {
    in_netns("a_long_binary_name_is_matched_named_and_identified", || {
        let w = start_worker();
        let pid = w.child.0.id();
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
        assert_eq!(
            comm.trim_end(),
            "billing-sync-wo",
            "the kernel cut the name"
        );

        // The full name, the kernel's cut name and a pattern all select it.
        for sel in [NAME, "billing-sync-wo", "billing-*"] {
            let (code, out, _) = assert_run(&["assert", "--max-close-wait", "0", "--comm", sel]);
            assert_eq!(code, Some(1), "--comm {sel}: {out}");
            assert!(
                out.contains(&format!("{LEAKED}  pid {pid} ({NAME}) on port {}", w.port)),
                "--comm {sel} names the worker by its full name:\n{out}"
            );
            assert!(!out.contains("matches no"), "{out}");
        }

        // Look-alikes: a name is matched whole, not as a prefix.
        for sel in ["billing-sync-wor", "billing-sync", "billing-sync-worker2"] {
            let (code, out, _) = assert_run(&["assert", "--max-close-wait", "0", "--comm", sel]);
            assert_eq!(code, Some(0), "--comm {sel}: {out}");
            assert!(
                out.contains(&format!("warning: --comm {sel} matches no running process")),
                "{out}"
            );
        }

        // The process exists but holds nothing on that port: no warning.
        let (code, out, _) = assert_run(&[
            "assert",
            "--max-close-wait",
            "0",
            "--comm",
            NAME,
            "--port",
            "1",
            "--require-match",
        ]);
        assert_eq!(code, Some(0), "{out}");
        assert!(!out.contains("warning"), "{out}");

        // The table shows the whole name, not the kernel's 15 bytes.
        let out = cwdiag()
            .args(["scan", "--state", "close-wait"])
            .env("COLUMNS", "120")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let row = text
            .lines()
            .find(|l| l.contains(&format!(" {pid} ")))
            .unwrap_or_else(|| panic!("a row for pid {pid}:\n{text}"));
        assert!(row.contains(NAME), "{row}");

        // The JSON identifies the owner as /proc does.
        let report = json(&["scan", "--json", "--state", "close-wait"]);
        let p = &report["processes"][pid.to_string()];
        let cmdline: Vec<String> = std::fs::read(format!("/proc/{pid}/cmdline"))
            .unwrap()
            .split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        assert_eq!(p["comm"], "billing-sync-wo", "{p:#}");
        assert_eq!(p["cmdline"], Value::from(cmdline.clone()), "{p:#}");
        assert_eq!(cmdline[0], w.exe.to_str().unwrap());
        assert_eq!(p.get("cmdline_truncated"), None, "{p:#}");
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
        assert_eq!(p["exe"], exe.to_str().unwrap(), "{p:#}");
        let euid: u64 = status_field(pid, "Uid:")
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(p["uid"], euid, "{p:#}");
        if let Some(name) = passwd_name(euid) {
            assert_eq!(p["user"], name, "{p:#}");
        }
        assert_eq!(p["ppid"], u64::from(std::process::id()), "{p:#}");
        // btime is whole seconds and may step by one under clock
        // adjustment between two reads.
        let started = p["started_at_ms"].as_u64().expect("started_at_ms");
        assert!(started.abs_diff(started_at_ms(pid)) <= 1000, "{p:#}");
        assert_eq!(status_field(pid, "PPid:"), std::process::id().to_string());

        // watch shows it by name too.
        let out = cwdiag()
            .args(["watch", "--count", "1", "--comm", NAME])
            .env("COLUMNS", "160")
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&out.stdout);
        let row = out
            .lines()
            .find(|l| l.contains(&format!(" {pid} ")))
            .unwrap_or_else(|| panic!("a watch row for pid {pid}:\n{out}"));
        assert!(row.contains(NAME), "{row}");

        // kill's dry run names it too.
        let (code, out, _) = assert_run(&["kill", "--state", "close-wait", "--comm", NAME]);
        assert_eq!(code, Some(0), "{out}");
        assert!(
            out.contains(NAME) && out.contains(&format!("{LEAKED} sockets selected")),
            "{out}"
        );
    });
}

#[test]
fn selectors_that_match_no_process_say_so() {
    in_netns("selectors_that_match_no_process_say_so", || {
        let _w = start_worker();
        // A pid that is not running: one of a child that exited (tried
        // again in the unlikely case that it was handed out again at once).
        let exited = poll("an exited pid not reused", Duration::from_secs(10), || {
            let mut c = Command::new("true").spawn().unwrap();
            let pid = c.id();
            c.wait().unwrap();
            (!std::path::Path::new(&format!("/proc/{pid}")).exists()).then_some(pid)
        });
        let exited = exited.to_string();
        for (flag, value) in [("--comm", "nosuchproc"), ("--pid", exited.as_str())] {
            let line = format!("{flag} {value} matches no running process");
            // assert: passes with the warning, in text and JSON.
            let (code, out, _) = assert_run(&["assert", "--max-close-wait", "0", flag, value]);
            assert_eq!(code, Some(0), "{out}");
            assert_eq!(
                out.lines().filter(|l| l.contains(&line)).count(),
                1,
                "one warning line:\n{out}"
            );
            let v = json_of(run(&[
                "assert",
                "--json",
                "--max-close-wait",
                "0",
                flag,
                value,
            ]));
            assert!(
                v["warnings"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|w| *w == *line),
                "{v:#}"
            );
            // With --require-match: exit 2 and one line.
            let (code, out, err) = assert_run(&[
                "assert",
                "--max-close-wait",
                "0",
                flag,
                value,
                "--require-match",
            ]);
            assert_eq!(code, Some(2), "{out}{err}");
            assert_eq!(err.trim_end(), format!("cwdiag: --require-match: {line}"));
            assert!(out.is_empty(), "{out}");
            // scan (text and JSON), kill and watch say it too.
            let (code, out, _) = assert_run(&["scan", flag, value]);
            assert_eq!(code, Some(0));
            assert!(out.contains(&format!("warning: {line}")), "{out}");
            let v = json(&["scan", "--json", flag, value]);
            assert!(
                v["warnings"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|w| *w == *line),
                "{v:#}"
            );
            let (code, _, err) = assert_run(&["scan", "--format", "prometheus", flag, value]);
            assert_eq!(code, Some(0));
            assert_eq!(err.trim_end(), format!("cwdiag: warning: {line}"));
            let (_, out, _) = assert_run(&["kill", "--state", "close-wait", flag, value]);
            assert!(out.contains(&format!("warning: {line}")), "{out}");
            assert!(out.contains("no socket matches the selection"), "{out}");
            let (_, out, _) = assert_run(&["watch", "--count", "1", flag, value]);
            assert!(out.contains(&format!("warning: {line}")), "{out}");
        }
        // Each matches a process, but not the same one.
        let me = std::process::id().to_string();
        let (code, out, err) = assert_run(&[
            "assert",
            "--max-close-wait",
            "0",
            "--pid",
            &me,
            "--comm",
            NAME,
            "--require-match",
        ]);
        assert_eq!(code, Some(2), "{out}{err}");
        assert!(err.contains("together"), "{err}");
    });
}

#[test]
fn serve_logs_a_selector_that_matches_no_process() {
    in_netns("serve_logs_a_selector_that_matches_no_process", || {
        use std::io::Read;
        // A free port in this fresh namespace.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let listen = format!("127.0.0.1:{port}");
        let mut serve = KillOnDrop(
            cwdiag()
                .args(["serve", "--listen", &listen, "--comm", "nosuchproc"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let body = poll("serve answers", Duration::from_secs(10), || {
            let mut c = std::net::TcpStream::connect(&listen).ok()?;
            c.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").ok()?;
            let mut body = String::new();
            c.read_to_string(&mut body).ok()?;
            Some(body)
        });
        assert!(body.contains("cwdiag_"), "{body}");
        let stderr = std::io::BufReader::new(serve.0.stderr.take().unwrap());
        let line = stderr
            .lines()
            .map_while(Result::ok)
            .find(|l| l.contains("warning"))
            .expect("a warning on stderr");
        assert_eq!(
            line,
            "cwdiag serve: warning: --comm nosuchproc matches no running process"
        );
    });
}

#[test]
fn require_match_needs_a_process_selector() {
    let (code, _, err) = assert_run(&["assert", "--max-close-wait", "0", "--require-match"]);
    assert_eq!(code, Some(2));
    assert_eq!(
        err.trim_end(),
        "cwdiag: --require-match needs a process selector: --pid or --comm"
    );
}
