//! `fd-exhaustion-risk` on a real process: a Python server that lowers its
//! own RLIMIT_NOFILE, keeps accepted sockets in CLOSE_WAIT and opens files
//! up to a chosen fd count. The same workload under a generous limit is the
//! healthy look-alike.

use crate::netns::{KillOnDrop, in_netns};
use crate::support::*;
use serde_json::Value;
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::Duration;

const SERVER: &str = r#"
import os, resource, socket, sys
limit, leaks, fds = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
resource.setrlimit(resource.RLIMIT_NOFILE, (limit, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
l = socket.socket(); l.bind(("127.0.0.1", 0)); l.listen(128)
print(l.getsockname()[1], flush=True)
keep = [l.accept()[0] for _ in range(leaks)]
pad = []
while len(os.listdir("/proc/self/fd")) - 1 < fds:
    pad.append(open("/dev/null"))
print(len(os.listdir("/proc/self/fd")) - 1, flush=True)
sys.stdin.read()
"#;

/// Runs the server with `limit` and `fds` open, `leaks` of them CLOSE_WAIT
/// sockets, and returns its pid and cwdiag's report.
fn scan_with(limit: u32, leaks: usize, fds: usize) -> (u32, Value) {
    let mut child = KillOnDrop(
        Command::new("python3")
            .args(["-c", SERVER])
            .args([limit.to_string(), leaks.to_string(), fds.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs"),
    );
    let mut out = std::io::BufReader::new(child.0.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let port: u16 = line.trim().parse().unwrap();
    for _ in 0..leaks {
        drop(std::net::TcpStream::connect(("127.0.0.1", port)).unwrap());
    }
    line.clear();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), fds.to_string(), "the server holds {fds} fds");
    wait_for_ss("CLOSE_WAIT", port, leaks as u64);
    let pid = child.0.id();
    let r = poll("the fd count to settle", Duration::from_secs(10), || {
        let r = json(&["scan", "--json"]);
        let seen = r["processes"][pid.to_string()]["fd_count"].as_u64();
        (seen == Some(fds as u64)).then_some(r)
    });
    (pid, r)
}

fn fd_findings(r: &Value, pid: u32) -> Vec<Value> {
    r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["rule_id"] == "fd-exhaustion-risk" && f["evidence"]["pid"] == pid)
        .cloned()
        .collect()
}

#[test]
fn fd_exhaustion_fires_near_the_limit_and_stays_silent_under_a_generous_one() {
    in_netns("fd exhaustion", || {
        // 56 of 64: 87.5 %, a warning.
        let (pid, r) = scan_with(64, 20, 56);
        let f = fd_findings(&r, pid);
        assert_eq!(f.len(), 1, "{r:#}");
        assert_eq!(f[0]["severity"], "warning", "{:#}", f[0]);
        assert_eq!(f[0]["evidence"]["fd_count"], 56);
        assert_eq!(f[0]["evidence"]["nofile_soft"], 64);
        assert_eq!(f[0]["evidence"]["close_wait"], 20);
        let summary = f[0]["summary"].as_str().unwrap();
        assert!(summary.contains("56 of 64"), "{summary}");
        // 62 of 64: 96.9 %, critical.
        let (pid, r) = scan_with(64, 20, 62);
        let f = fd_findings(&r, pid);
        assert_eq!(f.len(), 1, "{r:#}");
        assert_eq!(f[0]["severity"], "critical", "{:#}", f[0]);
        // The same 20 CLOSE_WAIT sockets and 56 fds under a limit of 4096:
        // the CLOSE_WAIT rules speak, this one does not.
        let (pid, r) = scan_with(4096, 20, 56);
        assert!(fd_findings(&r, pid).is_empty(), "{r:#}");
        assert!(
            r["findings"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f["rule_id"].as_str().unwrap().starts_with("close-wait")
                    && f["evidence"]["pid"] == pid),
            "the leak itself is still reported: {r:#}"
        );
    });
}
