//! Named namespaces, as `ip netns add` makes them (root only): --netns,
//! --netns-pid and --all-netns must see exactly what `ip netns exec NAME
//! ss -tan` sees, and --source proc must count what netlink counts.

use crate::support::*;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::mpsc;

/// A named namespace holding a workload on a thread; removed on drop.
struct NamedNs {
    name: String,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NamedNs {
    fn new(tag: &str, cw: usize, tw: usize) -> Option<(NamedNs, u16)> {
        if !is_root() {
            skip(&format!("{tag}: needs root for ip netns"));
            return None;
        }
        let name = format!("cwdiag-test-{tag}-{}", std::process::id());
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "ip netns add {name} failed (is iproute2 installed?)");
        let (ready_tx, ready_rx) = mpsc::channel();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let path = format!("/run/netns/{name}");
        let thread = std::thread::spawn(move || {
            let f = std::fs::File::open(&path).unwrap();
            use std::os::fd::AsRawFd;
            // SAFETY: setns only changes this thread's network namespace.
            assert_eq!(
                unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) },
                0,
                "setns"
            );
            assert!(
                Command::new("ip")
                    .args(["link", "set", "lo", "up"])
                    .status()
                    .unwrap()
                    .success()
            );
            // The orphaned client ends stay in FIN_WAIT2 for the whole
            // test, however slow the machine (the timer is set when they
            // are orphaned, from the namespace's tcp_fin_timeout).
            std::fs::write("/proc/sys/net/ipv4/tcp_fin_timeout", "600").unwrap();
            let mut w = Workload::default();
            let port = w.listen("127.0.0.1:0");
            let server: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
            w.close_wait(server, cw, false, 0);
            w.time_wait(server, tw);
            w.established(server, 2);
            wait_for_ss("TIME_WAIT", port, tw as u64);
            ready_tx.send(port).unwrap();
            let _ = stop_rx.recv();
            drop(w);
        });
        let port = ready_rx.recv().expect("workload ready");
        Some((
            NamedNs {
                name,
                stop: Some(stop_tx),
                thread: Some(thread),
            },
            port,
        ))
    }

    fn ss(&self) -> std::collections::BTreeMap<String, u64> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name, "ss", "-tanH"])
            .output()
            .unwrap();
        let mut m = std::collections::BTreeMap::new();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let st = line.split_whitespace().next().unwrap();
            let name = match st {
                "ESTAB" => "ESTABLISHED",
                "CLOSE-WAIT" => "CLOSE_WAIT",
                "TIME-WAIT" => "TIME_WAIT",
                "FIN-WAIT-2" => "FIN_WAIT2",
                other => other,
            };
            *m.entry(name.to_string()).or_insert(0) += 1;
        }
        m
    }
}

impl Drop for NamedNs {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

#[test]
fn netns_and_netns_pid_match_ip_netns_exec_ss() {
    let Some((ns, port)) = NamedNs::new("named", 6, 9) else {
        return;
    };
    let want = ns.ss();
    assert_eq!(want.get("CLOSE_WAIT"), Some(&6));
    let r = json(&["scan", "--json", "--netns", &ns.name]);
    assert_eq!(nonzero_states(&r), want);
    assert_eq!(r["netns"]["name"], ns.name.as_str());
    assert_eq!(
        close_wait_groups(&r, port),
        vec![(Some(u64::from(std::process::id())), 6)]
    );

    // A process living in the namespace.
    let mut child = Command::new("ip")
        .args(["netns", "exec", &ns.name, "sleep", "30"])
        .spawn()
        .unwrap();
    // `ip netns exec` enters the namespace, then execs sleep: wait until
    // the child's namespace is the test's one, not the host's.
    let want_ns = ns_inode_of_file(&format!("/run/netns/{}", ns.name));
    assert!(want_ns.is_some(), "/run/netns/{} exists", ns.name);
    let child_ns = format!("/proc/{}/ns/net", child.id());
    poll(
        "the child to enter the namespace",
        std::time::Duration::from_secs(10),
        || (ns_inode_of_file(&child_ns) == want_ns).then_some(()),
    );
    let r = json(&["scan", "--json", "--netns-pid", &child.id().to_string()]);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(nonzero_states(&r), want);

    // /proc/net/tcp of that namespace counts the same.
    let r = json(&["scan", "--json", "--netns", &ns.name, "--source", "proc"]);
    assert_eq!(r["source"]["kind"], "proc");
    assert_eq!(nonzero_states(&r), want);

    // assert works inside a namespace too.
    let code = |max: &str| {
        run(&["assert", "--netns", &ns.name, "--max-close-wait", max])
            .status
            .code()
    };
    assert_eq!((code("6"), code("5")), (Some(0), Some(1)));
}

#[test]
fn all_netns_labels_each_namespace() {
    let Some((ns, _port)) = NamedNs::new("all", 2, 3) else {
        return;
    };
    let r = json(&["scan", "--json", "--all-netns"]);
    let list = r["namespaces"].as_array().unwrap();
    let mine = list
        .iter()
        .find(|n| n["netns"]["name"] == ns.name.as_str())
        .expect("our namespace is listed");
    assert_eq!(nonzero_states(mine), ns.ss());
    let inodes: Vec<u64> = list
        .iter()
        .map(|n| n["netns"]["inode"].as_u64().unwrap())
        .collect();
    let distinct: std::collections::BTreeSet<u64> = inodes.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        inodes.len(),
        "one entry per namespace inode: {inodes:?}"
    );
    let table = String::from_utf8(run(&["scan", "--all-netns"]).stdout).unwrap();
    assert!(
        table.contains(&format!("=== network namespace {} ", ns.name)),
        "{table}"
    );
}

#[test]
fn record_then_replay_reproduces_the_report() {
    let Some((ns, _port)) = NamedNs::new("record", 4, 5) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("cap.dump");
    let d = dump.to_str().unwrap();
    let live = json(&["scan", "--json", "--netns", &ns.name, "--record", d]);
    let mut replay = json(&["scan", "--json", "--from", d]);
    let mut live = live;
    for r in [&mut live, &mut replay] {
        r["source"] = serde_json::Value::Null;
        r["netns"] = serde_json::Value::Null;
    }
    assert_eq!(live, replay);
    // ss can read our recording too (it is the ss -D format).
    let out = Command::new("ss")
        .args(["-tanH"])
        .env("TCPDIAG_FILE", d)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("CLOSE-WAIT"));
}

#[test]
fn missing_namespace_is_one_line_and_exit_2() {
    let out = run(&["scan", "--netns", "no-such-namespace-here"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("no-such-namespace-here"), "{err}");
    let out = run(&["scan", "--netns-pid", "999999999"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("999999999"));
}

#[test]
fn privileged_actions_refuse_unprivileged_users_with_one_line() {
    if Command::new("setpriv").arg("--version").output().is_err() {
        skip("setpriv (util-linux) is not installed");
        return;
    }
    let Some((ns, _port)) = NamedNs::new("priv", 1, 1) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("cwdiag");
    std::fs::copy(env!("CARGO_BIN_EXE_cwdiag"), &bin).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let as_nobody = |args: &[&str]| {
        let start = std::time::Instant::now();
        loop {
            let out = Command::new("setpriv")
                .args([
                    "--reuid=65534",
                    "--regid=65534",
                    "--clear-groups",
                    "--inh-caps=-all",
                    "--",
                ])
                .arg(&bin)
                .args(args)
                .output()
                .unwrap();
            // ETXTBSY: a process forked by a parallel test still holds the
            // copy's write fd until it execs; it goes away at once.
            let busy = out.status.code() == Some(126)
                && String::from_utf8_lossy(&out.stderr).contains("Text file busy");
            if !busy || start.elapsed() > std::time::Duration::from_secs(10) {
                return out;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    for (args, needle) in [
        (
            vec!["kill", "--state", "close-wait", "--yes"],
            "CAP_NET_ADMIN",
        ),
        (vec!["scan", "--netns", ns.name.as_str()], "needs root"),
    ] {
        let out = as_nobody(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    // The dry run needs no privilege.
    assert_eq!(
        as_nobody(&["kill", "--state", "close-wait"]).status.code(),
        Some(0)
    );
}

/// The CLOSE_WAIT groups of one namespace's report in `--all-netns` JSON.
fn namespace<'a>(r: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    r["namespaces"]
        .as_array()
        .expect("namespaces")
        .iter()
        .find(|n| n["netns"]["name"] == name)
        .unwrap_or_else(|| panic!("namespace {name} is listed"))
}

#[test]
fn all_netns_counts_and_owners_match_each_namespace() {
    // Three namespaces with different loads: one walk of /proc must give
    // each its own owners and counts.
    let mut all = Vec::new();
    for (tag, cw, tw) in [("many-a", 2, 1), ("many-b", 3, 2), ("many-c", 5, 0)] {
        let Some((ns, port)) = NamedNs::new(tag, cw, tw) else {
            return;
        };
        all.push((ns, port, cw as u64));
    }
    let r = json(&["scan", "--json", "--all-netns"]);
    for (ns, port, cw) in &all {
        let mine = namespace(&r, &ns.name);
        assert_eq!(nonzero_states(mine), ns.ss(), "{}", ns.name);
        assert_eq!(
            close_wait_groups(mine, *port),
            vec![(Some(u64::from(std::process::id())), *cw)],
            "{}",
            ns.name
        );
        // Its own sockets only: the listener and the CLOSE_WAIT ends.
        let a = &mine["attribution"];
        assert_eq!(a["wanted_sockets"], a["found_sockets"], "{}: {a}", ns.name);
        assert_eq!(
            a["wanted_sockets"].as_u64(),
            Some(cw + 1),
            "{}: {a}",
            ns.name
        );
    }
}

#[test]
fn a_namespace_deleted_before_its_dump_is_a_warning() {
    use cwdiag::collect::{Plan, multi, netns};
    let Some((stays, port)) = NamedNs::new("stays", 2, 0) else {
        return;
    };
    let Some((goes, _)) = NamedNs::new("goes", 1, 0) else {
        return;
    };
    // Listed, then deleted before the scan reaches it.
    let targets = vec![
        netns::named(&goes.name).unwrap(),
        netns::named(&stays.name).unwrap(),
    ];
    assert!(
        Command::new("ip")
            .args(["netns", "del", &goes.name])
            .status()
            .unwrap()
            .success()
    );
    // A handle that is a plain file now (unmounted, not yet unlinked).
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("stale");
    std::fs::write(&plain, "").unwrap();
    let mut stale = targets[1].clone();
    stale.path = plain.clone();
    stale.info.name = "stale-handle".into();
    use std::os::unix::fs::MetadataExt;
    stale.info.inode = std::fs::metadata(&plain).unwrap().ino();
    let mut targets = targets;
    targets.push(stale);

    let c = multi::live(&Plan::new(&[]), &targets);
    assert_eq!(c.snapshots.len(), 1, "{:?}", c.warnings);
    let snap = &c.snapshots[0];
    assert_eq!(snap.netns.as_ref().unwrap().name, stays.name);
    let cw: Vec<_> = snap
        .sockets
        .iter()
        .filter(|s| s.state == cwdiag::model::TcpState::CloseWait && s.local.port() == port)
        .collect();
    assert_eq!(cw.len(), 2);
    assert!(cw.iter().all(|s| s.pid == Some(std::process::id())));
    assert_eq!(c.warnings.len(), 2, "{:?}", c.warnings);
    for (w, name) in c.warnings.iter().zip([goes.name.as_str(), "stale-handle"]) {
        assert!(w.contains(name) && w.contains("vanished"), "{w}");
        assert_eq!(w.lines().count(), 1);
    }
}

/// The `capabilities.add` list of the shipped DaemonSet, as setpriv
/// spells them (`sys_admin`).
fn daemonset_capabilities() -> Vec<String> {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes/daemonset.yaml"),
    )
    .unwrap();
    let mut lines = text.lines().skip_while(|l| l.trim() != "add:").skip(1);
    let mut caps = Vec::new();
    while let Some(cap) = lines.next().and_then(|l| l.trim().strip_prefix("- ")) {
        caps.push(cap.to_ascii_lowercase());
    }
    caps
}

/// What a scan's groups say, without what changes from one scan to the
/// next (ages, TIME_WAIT timers, rates).
fn stable_groups(report: &serde_json::Value) -> Vec<serde_json::Value> {
    report["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .map(|g| {
            let mut g = g.clone();
            for k in [
                "oldest_age_ms",
                "median_age_ms",
                "time_wait_left_s",
                "closes",
            ] {
                g.as_object_mut().unwrap().remove(k);
            }
            g
        })
        .collect()
}

#[test]
fn the_daemonsets_capabilities_are_enough_and_each_is_needed() {
    if Command::new("setpriv").arg("--version").output().is_err() {
        skip("setpriv (util-linux) is not installed");
        return;
    }
    let caps = daemonset_capabilities();
    assert_eq!(caps, ["sys_admin", "sys_ptrace", "dac_read_search"]);
    let Some((ns, port)) = NamedNs::new("caps", 4, 0) else {
        return;
    };
    // A copy nobody can run (the target dir may be closed to others).
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("cwdiag");
    std::fs::copy(env!("CARGO_BIN_EXE_cwdiag"), &bin).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let scan_with = |caps: &[String]| {
        let list = caps
            .iter()
            .map(|c| format!("+{c}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"]);
        if list.is_empty() {
            cmd.arg("--inh-caps=-all");
        } else {
            cmd.args([
                format!("--inh-caps=-all,{list}"),
                format!("--ambient-caps={list}"),
            ]);
        }
        let out = cmd
            .arg("--")
            .arg(&bin)
            .args(["scan", "--json", "--all-netns"])
            .output()
            .unwrap();
        let r = json_of(out);
        r["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["netns"]["name"] == ns.name.as_str())
            .cloned()
    };
    let root = json(&["scan", "--json", "--all-netns"]);
    let root = namespace(&root, &ns.name);
    assert_eq!(
        close_wait_groups(root, port),
        vec![(Some(u64::from(std::process::id())), 4)]
    );
    let capped = scan_with(&caps).expect("our namespace, scanned as nobody with the caps");
    assert_eq!(stable_groups(&capped), stable_groups(root));
    assert_eq!(capped["attribution"]["found_sockets"], 5, "listener + 4");
    // Each one is needed: without it our namespace or its owners are lost.
    for drop in &caps {
        let fewer: Vec<String> = caps.iter().filter(|c| *c != drop).cloned().collect();
        let lost = match scan_with(&fewer) {
            None => true,
            Some(r) => close_wait_groups(&r, port) != close_wait_groups(root, port),
        };
        assert!(lost, "without {drop} the scan still sees everything");
    }
}

/// Inode of a namespace file (`/run/netns/NAME`, `/proc/PID/ns/net`).
fn ns_inode_of_file(path: &str) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| m.ino())
}

#[test]
fn serve_all_netns_labels_every_series_with_its_namespace() {
    let Some((ns, port)) = NamedNs::new("serve", 3, 0) else {
        return;
    };
    let serve = crate::deploy::Serve::start(&["--all-netns", "--min-interval", "0s"]);
    let (code, body) = crate::deploy::http_get(serve.port, "/metrics").expect("serve answers");
    assert_eq!(code, 200);
    let label = format!("netns=\"{}\"", ns.name);
    let line = |prefix: &str| {
        body.lines()
            .find(|l| l.starts_with(prefix) && l.contains(&label))
            .unwrap_or_else(|| panic!("no {prefix} for {}:\n{body}", ns.name))
            .to_string()
    };
    let cw = body
        .lines()
        .find(|l| {
            l.starts_with("cwdiag_sockets{") && l.contains(&label) && l.contains("\"CLOSE_WAIT\"")
        })
        .expect("CLOSE_WAIT count of our namespace");
    assert!(cw.ends_with(" 3"), "{cw}");
    let group = body
        .lines()
        .find(|l| {
            l.starts_with("cwdiag_group_sockets{")
                && l.contains(&label)
                && l.contains("\"CLOSE_WAIT\"")
                && l.contains(&format!("port=\"{port}\""))
        })
        .expect("CLOSE_WAIT group of our namespace");
    assert!(group.ends_with(" 3"), "{group}");
    assert!(line("cwdiag_attribution_complete{").ends_with(" 1"));
}
