//! Live scans in the host's own namespace: the test process opens real
//! sockets and checks that cwdiag attributes them to this very pid.

use crate::support::*;
use std::net::SocketAddr;

fn own_close_wait(addr: &str) -> Option<(Workload, u16)> {
    let mut w = Workload::default();
    let Ok(l) = std::net::TcpListener::bind(addr) else {
        skip(&format!("cannot bind {addr} (no IPv6 loopback?)"));
        return None;
    };
    let port = l.local_addr().unwrap().port();
    w.listeners.push(l);
    let server: SocketAddr = format!("{}:{port}", addr.rsplit_once(':').unwrap().0)
        .parse()
        .unwrap();
    w.close_wait(server, 3, false, 0);
    wait_for_ss("CLOSE_WAIT", port, 3);
    Some((w, port))
}

#[test]
fn scan_attributes_close_wait_to_this_process_ipv4_and_ipv6() {
    let me = u64::from(std::process::id());
    for addr in ["127.0.0.1:0", "[::1]:0"] {
        let Some((_w, port)) = own_close_wait(addr) else {
            continue;
        };
        let p = port.to_string();
        let report = json(&["scan", "--json", "--port", &p]);
        assert_eq!(
            close_wait_groups(&report, port),
            vec![(Some(me), 3)],
            "{addr}: {report:#}"
        );
        let group = report["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["state"] == "CLOSE_WAIT")
            .unwrap();
        assert_eq!(group["direction"], "inbound");
        assert_eq!(group["peer"], serde_json::Value::Null);
        assert_eq!(group["recv_q"]["one"], 3, "never read: Recv-Q 1");
        let f = report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["evidence"]["state"] == "CLOSE_WAIT")
            .expect("a CLOSE_WAIT finding");
        assert_eq!(f["evidence"]["pid"], me);
        assert_eq!(f["evidence"]["port"], port);
        assert_eq!(f["evidence"]["count"], 3);
        assert!(f["hint"].as_str().unwrap().contains(&format!("pid {me}")));

        let table = run(&["scan", "--port", &p]);
        let text = String::from_utf8(table.stdout).unwrap();
        assert!(
            text.contains(&me.to_string()),
            "table names the pid:\n{text}"
        );
        assert!(
            text.contains(&format!(":{port}")),
            "table names the port:\n{text}"
        );
    }
}

#[test]
fn assert_exits_1_above_the_limit_and_0_within_it() {
    let Some((_w, port)) = own_close_wait("127.0.0.1:0") else {
        return;
    };
    let p = port.to_string();
    let fail = run(&["assert", "--max-close-wait", "2", "--port", &p]);
    assert_eq!(fail.status.code(), Some(1));
    let text = String::from_utf8_lossy(&fail.stdout);
    assert!(
        text.contains("FAIL max-close-wait: 3 CLOSE_WAIT > 2"),
        "{text}"
    );
    assert!(
        text.contains(&format!("pid {}", std::process::id())),
        "names the offender: {text}"
    );

    let ok = run(&["assert", "--max-close-wait", "3", "--port", &p]);
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );

    let j = run(&["assert", "--max-close-wait", "2", "--port", &p, "--json"]);
    assert_eq!(j.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&j.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["checks"][0]["count"], 3);
    assert_eq!(v["checks"][0]["offenders"][0]["pid"], std::process::id());

    let by_pid = run(&[
        "assert",
        "--max-close-wait",
        "0",
        "--pid",
        &std::process::id().to_string(),
        "--port",
        &p,
    ]);
    assert_eq!(by_pid.status.code(), Some(1));
    let other_pid = run(&[
        "assert",
        "--max-close-wait",
        "0",
        "--pid",
        "1",
        "--port",
        &p,
    ]);
    assert_eq!(other_pid.status.code(), Some(0));
}

#[test]
fn closed_pipe_is_not_an_error() {
    // Output must outlast the pipe buffer, so the write really hits EPIPE.
    let Some((_w, _port)) = own_close_wait("127.0.0.1:0") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.json");
    std::fs::write(&big, crate::replay::synthetic_snapshot(5000)).unwrap();
    let mut child = cwdiag()
        .args(["scan", "--json", "--sockets", "--from"])
        .arg(&big)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut one = [0u8; 1];
    std::io::Read::read_exact(child.stdout.as_mut().unwrap(), &mut one).unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(
        out.stderr.is_empty(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_low_fd_limit_does_not_make_processes_unreadable() {
    if !is_root() {
        skip("needs root to read every process's fds");
        return;
    }
    let Some((_w, port)) = own_close_wait("127.0.0.1:0") else {
        return;
    };
    // A listener whose only reference is in flight in a UNIX socket's
    // queue: reported, but owned by no process, so the walk has to visit
    // every process on the host.
    let (tx, _rx) = std::os::unix::net::UnixStream::pair().unwrap();
    {
        let orphan = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        send_fd(&tx, &orphan);
    }
    let unreadable = |r: &serde_json::Value| r["attribution"]["unreadable_processes"].as_u64();
    let normal = json(&["scan", "--json"]);
    assert!(
        normal["attribution"]["scanned_processes"].as_u64().unwrap() > 1,
        "the walk visited every process: {:#}",
        normal["attribution"]
    );
    // The walk must not hold a directory fd per process it visits: with 32
    // fds it would fail to open the rest and call them unreadable.
    let out = std::process::Command::new("sh")
        .args([
            "-c",
            "ulimit -Sn 32 && exec \"$0\" scan --json",
            env!("CARGO_BIN_EXE_cwdiag"),
        ])
        .output()
        .unwrap();
    let low = json_of(out);
    assert_eq!(
        unreadable(&low),
        unreadable(&normal),
        "{:#}",
        low["attribution"]
    );
    let me = u64::from(std::process::id());
    assert_eq!(close_wait_groups(&low, port), vec![(Some(me), 3)]);
}

/// Sends `fd` over the UNIX socket `tx` (SCM_RIGHTS).
fn send_fd(tx: &std::os::unix::net::UnixStream, fd: &impl std::os::fd::AsRawFd) {
    use std::os::fd::AsRawFd;
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<libc::c_int>() as u32) } as usize;
    let mut control = vec![0u8; space];
    // SAFETY: msghdr is plain data; every pointer in it points into live
    // buffers (`iov`, `byte`, `control`) that outlive the sendmsg call, and
    // CMSG_FIRSTHDR/CMSG_DATA stay inside `control`, sized by CMSG_SPACE.
    let rc = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<libc::c_int>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>(), fd.as_raw_fd());
        libc::sendmsg(tx.as_raw_fd(), &msg, 0)
    };
    assert_eq!(rc, 1, "sendmsg: {}", std::io::Error::last_os_error());
}

#[test]
fn snapshot_keeps_tcp_info_of_every_full_socket() {
    let Some((_w, port)) = own_close_wait("127.0.0.1:0") else {
        return;
    };
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let est_port = l.local_addr().unwrap().port();
    let _c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let _s = l.accept().unwrap();
    let snap = json(&["snapshot"]);
    let mine = |p: u16, state: &str| -> Vec<serde_json::Value> {
        snap["sockets"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["state"] == state)
            .filter(|s| {
                [&s["local"], &s["peer"]]
                    .iter()
                    .any(|e| e.as_str().unwrap().ends_with(&format!(":{p}")))
            })
            .cloned()
            .collect()
    };
    let est = mine(est_port, "ESTABLISHED");
    assert_eq!(est.len(), 2, "both ends: {est:#?}");
    let cw = mine(port, "CLOSE_WAIT");
    assert_eq!(cw.len(), 3);
    for s in est.iter().chain(&cw) {
        assert!(s["tcp_info"].is_object(), "tcp_info on {s:#}");
    }
}
