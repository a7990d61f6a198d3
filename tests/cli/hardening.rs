//! Hostile files and names: what another user on the host can plant for
//! root's cwdiag (links, files, FIFOs in world-writable directories),
//! captures that are cut, endless or duplicated, `/proc` files that are
//! huge or block, process names with terminal escapes, and a socket that
//! replaces a reviewed one before `kill --yes`.

use crate::netns::in_netns;
use crate::support::*;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures");

/// Runs cwdiag and fails the test if it does not finish within `secs`.
fn run_within(args: &[&str], secs: u64) -> Output {
    let mut child = cwdiag()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cwdiag runs");
    // Drain both pipes meanwhile, so a large output cannot stall the child.
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if start.elapsed() > Duration::from_secs(secs) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("cwdiag {args:?} still running after {secs} s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Exit 2 with one line on stderr containing every piece of `want`.
fn fails_with(o: &Output, want: &[&str]) {
    let e = stderr(o);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert_eq!(e.lines().count(), 1, "one line: {e}");
    for w in want {
        assert!(e.contains(w), "{w:?} not in: {e}");
    }
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
}

/// Runs a command as user nobody (setpriv, util-linux).
fn as_nobody(args: &[&str]) {
    let st = Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .args(args)
        .status()
        .expect("run setpriv (install util-linux)");
    assert!(st.success(), "as nobody: {args:?}");
}

/// A world-writable sticky directory like /tmp, owned by root.
fn sticky_dir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    d
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn links_and_files_planted_by_another_user_are_refused() {
    if !is_root() {
        skip("planted links: needs root (to act as another user with setpriv)");
        return;
    }
    let d = sticky_dir();
    let secret = d.path().join("root-secret");
    std::fs::write(&secret, "secret\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let link = d.path().join("cwdiag.prom");
    as_nobody(&["ln", "-s", p(&secret), p(&link)]);

    // --output through the planted link.
    let o = run(&["scan", "--format", "prometheus", "--output", p(&link)]);
    fails_with(&o, &[p(&link), "symbolic link"]);
    // --record through a planted link, and through a planted sidecar link.
    let rec = d.path().join("rec");
    as_nobody(&["ln", "-s", p(&secret), p(&rec)]);
    let o = run(&["scan", "--record", p(&rec)]);
    fails_with(&o, &[p(&rec), "symbolic link"]);
    let rec2 = d.path().join("rec2");
    let side2 = d.path().join("rec2.cwdiag.json");
    as_nobody(&["ln", "-s", p(&secret), p(&side2)]);
    let o = run(&["scan", "--record", p(&rec2)]);
    fails_with(&o, &[p(&side2), "symbolic link"]);
    assert!(
        !rec2.exists(),
        "nothing written when the sidecar is refused"
    );

    // A file another user created first stays theirs and untouched.
    let theirs = d.path().join("theirs.prom");
    as_nobody(&["sh", "-c", &format!("umask 0; : > {}", p(&theirs))]);
    let o = run(&["scan", "--output", p(&theirs)]);
    fails_with(&o, &[p(&theirs), "owned by uid 65534"]);
    let m = std::fs::metadata(&theirs).unwrap();
    assert_eq!((m.uid(), m.len()), (65534, 0));

    // A directory another user can swap under us is refused too.
    let sub = d.path().join("sub");
    as_nobody(&["mkdir", p(&sub)]);
    let o = run(&["scan", "--output", &format!("{}/x.prom", p(&sub))]);
    fails_with(&o, &["another user can replace", p(&sub)]);

    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "secret\n");
    assert_eq!(std::fs::metadata(&secret).unwrap().mode() & 0o777, 0o600);
    for l in [&link, &rec, &side2] {
        assert!(
            std::fs::symlink_metadata(l)
                .unwrap()
                .file_type()
                .is_symlink()
        );
    }

    // The same names, removed by their owner, are then written normally,
    // with the documented modes.
    for l in [&link, &rec, &side2] {
        as_nobody(&["rm", p(l)]);
    }
    let o = run(&["scan", "--format", "prometheus", "--output", p(&link)]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::metadata(&link).unwrap().mode() & 0o7777, 0o644);
    let o = run(&["scan", "--record", p(&rec)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let side = d.path().join("rec.cwdiag.json");
    for f in [&rec, &side] {
        let m = std::fs::symlink_metadata(f).unwrap();
        assert!(m.file_type().is_file());
        assert_eq!((m.uid(), m.mode() & 0o7777), (0, 0o600), "{f:?}");
    }
}

#[test]
fn planted_temporary_names_are_never_touched() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("m.prom");
    // The names a predictable scheme would use, and look-alikes of ours.
    let mut planted: Vec<PathBuf> = (0..50)
        .map(|i| {
            d.path()
                .join(format!(".m.prom.{}.tmp", std::process::id() + i))
        })
        .collect();
    planted.push(d.path().join(".m.prom.AAAAAA.tmp"));
    for f in &planted {
        std::fs::write(f, "planted").unwrap();
    }
    let o = run(&["scan", "--format", "prometheus", "--output", p(&out)]);
    assert!(o.status.success(), "{}", stderr(&o));
    // A refused write (the target is a directory) deletes nothing either.
    let o = run(&["scan", "--output", p(d.path())]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    for f in &planted {
        assert_eq!(std::fs::read_to_string(f).unwrap(), "planted", "{f:?}");
    }
    let names: Vec<String> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        names.len(),
        planted.len() + 1,
        "no temp file left: {names:?}"
    );
}

#[test]
fn devices_stdout_and_fifos_are_written_in_place() {
    let o = run(&["scan", "--format", "prometheus", "--output", "/dev/null"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(o.stdout.is_empty());
    let m = std::fs::metadata("/dev/null").unwrap();
    assert!(
        m.file_type().is_char_device(),
        "/dev/null is still a device"
    );

    for target in ["/dev/stdout", "-"] {
        let o = run(&["scan", "--format", "prometheus", "--output", target]);
        assert!(o.status.success(), "{target}: {}", stderr(&o));
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(
            text.contains("# TYPE cwdiag_sockets gauge"),
            "{target}: {text}"
        );
    }
    assert!(
        std::fs::symlink_metadata("/dev/stdout")
            .unwrap()
            .file_type()
            .is_symlink()
    );

    let d = tempfile::tempdir().unwrap();
    let fifo = d.path().join("fifo");
    mkfifo(&fifo);
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            let mut s = String::new();
            std::fs::File::open(&fifo)
                .unwrap()
                .read_to_string(&mut s)
                .unwrap();
            s
        })
    };
    let o = run_within(
        &["scan", "--format", "prometheus", "--output", p(&fifo)],
        60,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let got = reader.join().unwrap();
    assert!(got.contains("# TYPE cwdiag_sockets gauge"), "{got}");
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
}

/// Offsets of the netlink messages of a dump: (offset, length, type).
fn messages(dump: &[u8]) -> Vec<(usize, usize, u16)> {
    let mut out = Vec::new();
    let mut off = 0;
    while off + 16 <= dump.len() {
        let len = u32::from_ne_bytes(dump[off..off + 4].try_into().unwrap()) as usize;
        let ty = u16::from_ne_bytes(dump[off + 4..off + 6].try_into().unwrap());
        out.push((off, len, ty));
        off += (len + 3) & !3;
    }
    out
}

const NLMSG_DONE: u16 = 3;

#[test]
fn a_dump_cut_at_a_message_boundary_is_truncated_not_healthy() {
    let dump = std::fs::read(format!("{FIXTURES}/workload.dump")).unwrap();
    let msgs = messages(&dump);
    let dones: Vec<usize> = msgs
        .iter()
        .filter(|m| m.2 == NLMSG_DONE)
        .map(|m| m.0)
        .collect();
    assert_eq!(dones.len(), 2, "one NLMSG_DONE per family");
    let d = tempfile::tempdir().unwrap();

    // The whole capture: 18 CLOSE_WAIT sockets break the limit.
    let whole = run(&[
        "assert",
        "--from",
        &format!("{FIXTURES}/workload.dump"),
        "--max-close-wait",
        "0",
    ]);
    assert_eq!(whole.status.code(), Some(1), "{}", stderr(&whole));

    // Cut just before the last NLMSG_DONE, and in the middle of the
    // sockets: exit 2, naming the offset, never "No findings".
    let mid = msgs[msgs.len() / 2].0;
    for cut in [*dones.last().unwrap(), mid] {
        let path = d.path().join(format!("cut-{cut}"));
        std::fs::write(&path, &dump[..cut]).unwrap();
        let o = run(&["assert", "--from", p(&path), "--max-close-wait", "0"]);
        fails_with(&o, &[p(&path), "truncated", &format!("offset {cut}")]);
        let o = run(&["scan", "--from", p(&path)]);
        assert_eq!(o.status.code(), Some(2));
        assert!(o.stdout.is_empty());
    }

    // Cut right after the first family's NLMSG_DONE: well-formed, but its
    // sidecar records more sockets than it holds.
    let cut = dones[0] + 20;
    let path = d.path().join("first-family");
    std::fs::write(&path, &dump[..cut]).unwrap();
    // The fixture's sidecar predates the socket count: add it, as
    // `--record` now writes it.
    let mut side: serde_json::Value = serde_json::from_slice(
        &std::fs::read(format!("{FIXTURES}/workload.dump.cwdiag.json")).unwrap(),
    )
    .unwrap();
    side["sockets"] = 79.into();
    std::fs::write(d.path().join("first-family.cwdiag.json"), side.to_string()).unwrap();
    let o = run(&["assert", "--from", p(&path), "--max-close-wait", "0"]);
    fails_with(&o, &[p(&path), "sidecar", "records 79"]);
}

#[test]
fn a_duplicated_dump_counts_each_socket_once_and_says_so() {
    let dump = std::fs::read(format!("{FIXTURES}/workload.dump")).unwrap();
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("twice");
    std::fs::write(&path, [dump.as_slice(), &dump].concat()).unwrap();
    let once = json(&[
        "scan",
        "--json",
        "--from",
        &format!("{FIXTURES}/workload.dump"),
    ]);
    let twice = json(&["scan", "--json", "--from", p(&path)]);
    assert_eq!(twice["states"], once["states"]);
    assert_eq!(twice["total"], 79);
    let warnings = twice["warnings"].to_string();
    assert!(
        warnings.contains("79 sockets appear more than once"),
        "{warnings}"
    );
    assert!(!once["warnings"].to_string().contains("more than once"));
}

#[test]
fn endless_huge_and_blocking_inputs_fail_fast() {
    let o = run_within(&["scan", "--from", "/dev/zero"], 10);
    fails_with(&o, &["/dev/zero", "offset 0"]);

    let d = tempfile::tempdir().unwrap();
    let big = d.path().join("big.dump");
    // Sparse: 2 GB of holes, nothing on disk.
    std::fs::File::create(&big)
        .unwrap()
        .set_len(2 << 30)
        .unwrap();
    let t = Instant::now();
    let o = run_within(&["scan", "--from", p(&big)], 10);
    fails_with(&o, &[p(&big), "offset 0"]);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());

    // A header declaring a huge message fails at once, without reading it.
    let huge = d.path().join("huge.dump");
    let mut bytes = (1u32 << 30).to_ne_bytes().to_vec();
    bytes.extend_from_slice(&[0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    std::fs::write(&huge, bytes).unwrap();
    let o = run_within(&["scan", "--from", p(&huge)], 10);
    fails_with(
        &o,
        &[p(&huge), "offset 0", "larger than any sock_diag reply"],
    );

    // A FIFO with a writer that never writes must not hang.
    let fifo = d.path().join("fifo");
    mkfifo(&fifo);
    let holder = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            // Blocks until cwdiag opens the read end (or the test ends).
            let f = std::fs::OpenOptions::new().write(true).open(&fifo);
            std::thread::sleep(Duration::from_millis(200));
            drop(f);
        })
    };
    let o = run_within(&["scan", "--from", p(&fifo)], 10);
    fails_with(&o, &[p(&fifo), "FIFO"]);
    // Unblock the writer thread if cwdiag never opened the FIFO.
    let _ = std::os::unix::fs::OpenOptionsExt::custom_flags(
        std::fs::OpenOptions::new().read(true),
        libc::O_NONBLOCK,
    )
    .open(&fifo);
    holder.join().unwrap();
}

fn socket_inode(fd: i32) -> u32 {
    let link = std::fs::read_link(format!("/proc/self/fd/{fd}")).unwrap();
    let s = link.to_str().unwrap();
    s.strip_prefix("socket:[")
        .and_then(|r| r.strip_suffix(']'))
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn a_proc_root_with_a_huge_sysctl_and_a_fifo_for_limits_is_read_safely() {
    in_netns("proc-root caps", || {
        use std::os::fd::AsRawFd;
        let mut w = Workload::default();
        let port = w.listen("127.0.0.1:0");
        w.close_wait(format!("127.0.0.1:{port}").parse().unwrap(), 1, false, 0);
        wait_for_ss("CLOSE_WAIT", port, 1);
        let ino = socket_inode(w.keep[0].as_raw_fd());

        // A fake /proc: process 4242 holds the CLOSE_WAIT socket; its
        // limits file is a FIFO nobody writes; one sysctl is 100 MB.
        let root = tempfile::tempdir().unwrap();
        let proc_dir = root.path().join("4242");
        std::fs::create_dir_all(proc_dir.join("fd")).unwrap();
        std::os::unix::fs::symlink(format!("socket:[{ino}]"), proc_dir.join("fd/3")).unwrap();
        std::fs::write(proc_dir.join("comm"), "fakeproc\n").unwrap();
        mkfifo(&proc_dir.join("limits"));
        let ipv4 = root.path().join("sys/net/ipv4");
        std::fs::create_dir_all(&ipv4).unwrap();
        let big = ipv4.join("tcp_fin_timeout");
        std::fs::File::create(&big)
            .unwrap()
            .set_len(100 << 20)
            .unwrap();
        std::fs::write(ipv4.join("tcp_tw_reuse"), "2\n").unwrap();

        let o = run_within(&["scan", "--json", "--proc-root", p(root.path())], 30);
        let r = json_of(o);
        let warnings = r["warnings"].to_string();
        assert!(
            warnings.contains(&format!("{} is larger than", p(&big))),
            "{warnings}"
        );
        assert_eq!(close_wait_groups(&r, port), vec![(Some(4242), 1)]);
        // The healthy look-alike beside it is read and raises no warning.
        assert!(!warnings.contains("tcp_tw_reuse"), "{warnings}");
        drop(w);
    });
}

/// A process named `ESC[31mevil` + newline + `x`, holding `fd` as fd 3.
fn evil_holder(fd: i32) -> std::process::Child {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        r#"printf '\033[31mevil\nx' > /proc/$$/comm && echo ready && read line"#,
    ])
    .stdin(Stdio::piped())
    .stdout(Stdio::piped());
    // SAFETY: dup2 is async-signal-safe; it runs in the child before exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("run sh");
    let mut buf = [0u8; 6];
    child
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut buf)
        .expect("holder ready");
    child
}

#[test]
fn escape_sequences_in_a_process_name_never_reach_the_terminal() {
    in_netns("escaped names", || {
        use std::os::fd::AsRawFd;
        let mut w = Workload::default();
        let port = w.listen("127.0.0.1:0");
        w.close_wait(format!("127.0.0.1:{port}").parse().unwrap(), 1, false, 0);
        wait_for_ss("CLOSE_WAIT", port, 1);
        let sock = w.keep.pop().unwrap();
        let mut holder = evil_holder(sock.as_raw_fd());
        drop(sock);
        let comm = std::fs::read(format!("/proc/{}/comm", holder.id())).unwrap();
        assert_eq!(comm, b"\x1b[31mevil\nx\n", "the kernel keeps the raw name");

        let port_s = port.to_string();
        let escaped = r"\x1b[31mevil\nx";
        for color in ["never", "always"] {
            let runs = [
                vec!["scan", "--color", color, "--close-wait-warn", "1"],
                vec![
                    "kill",
                    "--color",
                    color,
                    "--state",
                    "close-wait",
                    "--port",
                    &port_s,
                ],
                vec!["assert", "--color", color, "--max-close-wait", "0"],
            ];
            for args in runs {
                let o = run(&args);
                let text = String::from_utf8_lossy(&o.stdout);
                assert!(text.contains(escaped), "{args:?}: {text}");
                assert!(
                    !text.contains("\x1b[31mevil") && !text.contains("evil\n"),
                    "{args:?}: raw name printed: {text:?}"
                );
            }
        }
        // JSON keeps the name, escaped as JSON does.
        let r = json(&["scan", "--json"]).to_string();
        assert!(r.contains(r"\u001b[31mevil\nx"), "{r}");
        let _ = holder.kill();
        let _ = holder.wait();
    });
}

fn close_wait_peers(port: u16) -> Vec<u16> {
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
    let mut v: Vec<u16> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            l.split_whitespace()
                .last()?
                .rsplit(':')
                .next()?
                .parse()
                .ok()
        })
        .collect();
    v.sort_unstable();
    v
}

fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "timed out: {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn kill_with_a_plan_destroys_only_the_reviewed_sockets_still_there() {
    in_netns("kill --plan", || {
        let mut w = Workload::default();
        let port = w.listen("127.0.0.1:0");
        let server: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        w.close_wait(server, 3, false, 0);
        wait_until("3 CLOSE_WAIT", || close_wait_peers(port).len() == 3);

        // Review: the dry run's JSON is the plan.
        let dry = run(&[
            "kill",
            "--state",
            "close-wait",
            "--port",
            &port.to_string(),
            "--json",
        ]);
        assert!(dry.status.success(), "{}", stderr(&dry));
        let plan: serde_json::Value = serde_json::from_slice(&dry.stdout).unwrap();
        assert_eq!(plan["kind"], "cwdiag-kill-plan");
        assert_eq!(plan["sockets"].as_array().unwrap().len(), 3);
        let d = tempfile::tempdir().unwrap();
        let plan_file = d.path().join("plan.json");
        std::fs::write(&plan_file, &dry.stdout).unwrap();

        // One reviewed socket closes; a new one takes its place on the port.
        let gone = w.keep.remove(0);
        let gone_peer = gone.peer_addr().unwrap().port();
        drop(gone);
        wait_until("the closed one leaves CLOSE_WAIT", || {
            !close_wait_peers(port).contains(&gone_peer)
        });
        w.close_wait(server, 1, false, 0);
        let new_peer = w.keep.last().unwrap().peer_addr().unwrap().port();
        wait_until("the new one in CLOSE_WAIT", || {
            close_wait_peers(port).contains(&new_peer)
        });
        assert_eq!(close_wait_peers(port).len(), 3);

        let real = run(&["kill", "--plan", p(&plan_file), "--yes"]);
        let text = String::from_utf8_lossy(&real.stdout);
        assert_eq!(real.status.code(), Some(0), "{text}{}", stderr(&real));
        assert!(
            text.contains("reviewed 3: 2 still present, 1 gone"),
            "{text}"
        );
        assert!(text.contains("destroyed 2, gone 0"), "{text}");
        assert_eq!(
            close_wait_peers(port),
            vec![new_peer],
            "the new socket survives"
        );

        // --cookie: a reviewed cookie that is gone destroys nothing; the new
        // socket's own cookie destroys exactly it.
        let old = plan["sockets"][0]["cookie"].as_u64().unwrap();
        let o = run(&["kill", "--cookie", &format!("{old:#x}"), "--yes"]);
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(text.contains("destroyed 0"), "{text}");
        assert_eq!(close_wait_peers(port), vec![new_peer]);
        let dry = json(&[
            "kill",
            "--state",
            "close-wait",
            "--port",
            &port.to_string(),
            "--json",
        ]);
        let new_cookie = dry["sockets"][0]["cookie"].as_u64().unwrap();
        let o = run(&["kill", "--cookie", &new_cookie.to_string(), "--yes"]);
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(
            text.contains("reviewed 1: 1 still present") && text.contains("destroyed 1"),
            "{text}"
        );
        assert!(close_wait_peers(port).is_empty());
        assert_eq!(ss_counts(&[]).get("LISTEN"), Some(&1), "the listener stays");

        // Bad plans and mixed selections: one line, exit 2.
        let bad = d.path().join("bad.json");
        std::fs::write(&bad, "{\"kind\":\"x\"}").unwrap();
        let fifo = d.path().join("plan.fifo");
        mkfifo(&fifo);
        let o = run_within(&["kill", "--plan", p(&fifo)], 10);
        fails_with(&o, &[p(&fifo), "not a regular file"]);
        for args in [
            vec!["kill", "--plan", p(&bad)],
            vec!["kill", "--plan", "/nonexistent/plan.json"],
            vec!["kill", "--plan", p(&plan_file), "--state", "close-wait"],
            vec!["kill", "--cookie", "0"],
            vec!["kill", "--cookie", "zz"],
        ] {
            let o = run(&args);
            assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
            assert_eq!(stderr(&o).lines().count(), 1, "{args:?}: {}", stderr(&o));
        }
    });
}
