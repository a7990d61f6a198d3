//! Helpers for tests that build real socket workloads.

use serde_json::Value;
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub fn cwdiag() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cwdiag"))
}

pub fn run(args: &[&str]) -> Output {
    cwdiag().args(args).output().expect("cwdiag runs")
}

pub fn json(args: &[&str]) -> Value {
    let out = run(args);
    assert!(
        out.status.success(),
        "cwdiag {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("valid JSON")
}

/// The JSON a finished command printed, which must have succeeded.
pub fn json_of(out: Output) -> Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("valid JSON")
}

pub fn is_root() -> bool {
    rustix_uid() == 0
}

fn rustix_uid() -> u32 {
    // SAFETY: getuid cannot fail.
    unsafe { libc::getuid() }
}

#[path = "../../src/testutil.rs"]
mod testutil;
pub use testutil::{skip, skip_optional};

/// Moves the calling thread into a fresh network namespace with `lo` up.
/// Sockets this thread opens, and processes it spawns, live there.
pub fn enter_fresh_netns() -> Result<(), String> {
    // SAFETY: unshare only changes this thread's namespace.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(format!(
            "unshare(CLONE_NEWNET): {}",
            std::io::Error::last_os_error()
        ));
    }
    let st = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .map_err(|e| format!("cannot run ip (install iproute2): {e}"))?;
    if !st.success() {
        return Err("ip link set lo up failed".into());
    }
    // Exact counts: no connect() may reuse a TIME_WAIT port of the test
    // (tcp_tw_reuse=2, the default, does so on loopback after 1 s, which
    // a loaded machine reaches in the middle of a workload).
    std::fs::write("/proc/sys/net/ipv4/tcp_tw_reuse", "0")
        .map_err(|e| format!("set the namespace's tcp_tw_reuse: {e}"))?;
    Ok(())
}

/// Holds sockets of a workload open until dropped.
#[derive(Default)]
pub struct Workload {
    pub keep: Vec<TcpStream>,
    pub listeners: Vec<TcpListener>,
}

impl Workload {
    /// A listener on `addr` (port 0 = any); returns its port.
    pub fn listen(&mut self, addr: &str) -> u16 {
        let l = TcpListener::bind(addr).expect("bind listener");
        let port = l.local_addr().unwrap().port();
        self.listeners.push(l);
        port
    }

    fn listener_for(&self, port: u16, v6: bool) -> &TcpListener {
        self.listeners
            .iter()
            .find(|l| {
                let a = l.local_addr().unwrap();
                a.port() == port && a.is_ipv6() == v6
            })
            .expect("listener exists")
    }

    /// `n` accepted sockets in CLOSE_WAIT: the client closes, the server
    /// keeps its end. `read_eof` makes the server read the EOF first
    /// (Recv-Q 0); `unread` bytes sent before closing stay unread.
    pub fn close_wait(&mut self, server: SocketAddr, n: usize, read_eof: bool, unread: usize) {
        for _ in 0..n {
            let mut c = TcpStream::connect(server).expect("connect");
            let (mut a, _) = self
                .listener_for(server.port(), server.is_ipv6())
                .accept()
                .expect("accept");
            if unread > 0 {
                std::io::Write::write_all(&mut c, &vec![b'x'; unread]).unwrap();
            }
            drop(c);
            if read_eof {
                let mut buf = [0u8; 16];
                a.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                assert_eq!(a.read(&mut buf).unwrap(), 0, "expected EOF");
            }
            self.keep.push(a);
        }
    }

    /// `n` TIME_WAIT sockets on the client side towards `server`: the client
    /// closes first, the server reads EOF and closes too.
    pub fn time_wait(&mut self, server: SocketAddr, n: usize) {
        for _ in 0..n {
            let c = TcpStream::connect(server).expect("connect");
            let (mut a, _) = self
                .listener_for(server.port(), server.is_ipv6())
                .accept()
                .expect("accept");
            drop(c);
            let mut buf = [0u8; 16];
            a.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let _ = a.read(&mut buf);
            drop(a);
        }
    }

    /// `n` established pairs (2n ESTABLISHED sockets).
    pub fn established(&mut self, server: SocketAddr, n: usize) {
        for _ in 0..n {
            let c = TcpStream::connect(server).expect("connect");
            let (a, _) = self
                .listener_for(server.port(), server.is_ipv6())
                .accept()
                .expect("accept");
            self.keep.push(c);
            self.keep.push(a);
        }
    }
}

/// Counts of `ss -tan` output, by kernel state name.
pub fn ss_counts(extra: &[&str]) -> std::collections::BTreeMap<String, u64> {
    let out = Command::new("ss")
        .args(["-tanH"])
        .args(extra)
        .output()
        .expect("run ss (install iproute2)");
    let mut m = std::collections::BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(st) = line.split_whitespace().next() else {
            continue;
        };
        let name = match st {
            "ESTAB" => "ESTABLISHED",
            "SYN-SENT" => "SYN_SENT",
            "SYN-RECV" => "SYN_RECV",
            "FIN-WAIT-1" => "FIN_WAIT1",
            "FIN-WAIT-2" => "FIN_WAIT2",
            "TIME-WAIT" => "TIME_WAIT",
            "UNCONN" | "CLOSE" => "CLOSE",
            "CLOSE-WAIT" => "CLOSE_WAIT",
            "LAST-ACK" => "LAST_ACK",
            "LISTEN" => "LISTEN",
            "CLOSING" => "CLOSING",
            other => panic!("unknown ss state {other}"),
        };
        *m.entry(name.to_string()).or_insert(0) += 1;
    }
    m
}

/// Non-zero `.states` of a cwdiag report.
pub fn nonzero_states(report: &Value) -> std::collections::BTreeMap<String, u64> {
    report["states"]
        .as_object()
        .expect("states object")
        .iter()
        .filter(|(_, v)| v.as_u64() != Some(0))
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
        .collect()
}

/// Waits until `ss` shows at least `want` sockets in `state` with `port`
/// as local or peer port (kernel work on loopback finishes in
/// microseconds, but not synchronously). Only the test's own port counts,
/// so sockets of tests running beside it cannot satisfy the wait.
pub fn wait_for_ss(state: &str, port: u16, want: u64) {
    let filter = format!("( sport = :{port} or dport = :{port} )");
    let start = Instant::now();
    loop {
        let n = ss_counts(&[filter.as_str()])
            .get(state)
            .copied()
            .unwrap_or(0);
        if n >= want {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out waiting for {want} {state} on port {port} (have {n})"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `probe` every 20 ms until it returns `Some`, failing the test
/// with `what` after `limit`.
pub fn poll<T>(what: &str, limit: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// CLOSE_WAIT groups for `port`, as (pid, count) pairs.
pub fn close_wait_groups(report: &Value, port: u16) -> Vec<(Option<u64>, u64)> {
    report["groups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["state"] == "CLOSE_WAIT" && g["port"] == port)
        .map(|g| (g["pid"].as_u64(), g["count"].as_u64().unwrap()))
        .collect()
}
