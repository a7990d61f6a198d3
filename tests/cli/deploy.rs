//! What ships under deploy/: the Prometheus rules pass promtool and their
//! own unit tests, and the rules and the Grafana dashboard use only metric
//! names that cwdiag really exports (taken from a live scan and a live
//! `serve`).

use crate::support::*;
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

/// True when `tool` can be run; otherwise the test is skipped.
pub fn have(tool: &str, why: &str) -> bool {
    if Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
    {
        return true;
    }
    skip(&format!("{tool} is not installed ({why})"));
    false
}

/// A free loopback port (bound, then released for the caller to use).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET `path` from 127.0.0.1:`port` (HTTP/1.0: the server closes after
/// the answer); None when nobody answers. A scan of every namespace on a
/// busy host can take many seconds: the read timeout is generous.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(120))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

/// A `cwdiag serve` child on a free loopback port, killed on drop.
pub struct Serve {
    pub port: u16,
    child: Child,
}

impl Serve {
    pub fn start(extra: &[&str]) -> Serve {
        let port = free_port();
        let child = cwdiag()
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cwdiag serve starts");
        let s = Serve { port, child };
        poll("cwdiag serve to answer", Duration::from_secs(120), || {
            http_get(port, "/metrics").filter(|(code, _)| *code == 200)
        });
        s
    }
}

impl Serve {
    /// SIGTERM, as a service manager stops it, and its exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        // SAFETY: a signal to our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.child.wait().expect("serve exits")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Metric names in an exposition: the `# TYPE` families and the names of
/// samples.
fn exported_names(text: &str) -> BTreeSet<String> {
    let sample = regex::Regex::new(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]").unwrap();
    text.lines()
        .filter_map(|l| match l.strip_prefix("# TYPE ") {
            Some(t) => t.split_whitespace().next().map(str::to_string),
            None => sample.captures(l).map(|c| c[1].to_string()),
        })
        .collect()
}

/// cwdiag metric names a PromQL text refers to.
fn used_names(promql: &str) -> BTreeSet<String> {
    let re = regex::Regex::new(r"\bcwdiag_[a-z0-9_]+\b").unwrap();
    re.find_iter(promql)
        .map(|m| m.as_str().to_string())
        .collect()
}

/// Every `expr`, `query` and `definition` string in the dashboard.
fn dashboard_queries(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match v {
                    serde_json::Value::String(s)
                        if matches!(k.as_str(), "expr" | "query" | "definition") =>
                    {
                        out.push(s.clone())
                    }
                    _ => dashboard_queries(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| dashboard_queries(v, out)),
        _ => {}
    }
}

#[test]
fn shipped_rules_pass_promtool_and_their_unit_tests() {
    if !have("promtool", "checks the shipped Prometheus rules") {
        return;
    }
    let dir = repo("deploy/prometheus");
    for args in [
        vec!["check", "rules", "cwdiag.rules.yml"],
        vec!["test", "rules", "cwdiag.rules.test.yml"],
    ] {
        let out = Command::new("promtool")
            .args(&args)
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn dashboard_and_rules_use_only_metrics_cwdiag_exports() {
    // What cwdiag really exports: a live scan, and a live serve.
    let out = run(&["scan", "--format", "prometheus"]);
    assert!(out.status.success());
    let mut exported = exported_names(&String::from_utf8_lossy(&out.stdout));
    let serve = Serve::start(&[]);
    let (_, body) = http_get(serve.port, "/metrics").expect("serve answers");
    exported.extend(exported_names(&body));
    assert!(exported.contains("cwdiag_sockets"), "{exported:?}");
    // The event counters of `serve --events` (root: the tracepoints).
    if crate::support::is_root() {
        let ev = Serve::start(&["--events"]);
        let (_, body) = http_get(ev.port, "/metrics").expect("serve --events answers");
        assert!(ev.stop().success());
        let names = exported_names(&body);
        assert!(names.contains("cwdiag_tcp_transitions_total"), "{names:?}");
        exported.extend(names);
    } else {
        crate::support::skip("serve --events metrics: needs root");
        exported.extend(
            used_names(
                &std::fs::read_to_string(repo("deploy/prometheus/cwdiag.rules.yml")).unwrap(),
            )
            .into_iter()
            .filter(|n| n.starts_with("cwdiag_tcp_")),
        );
    }

    let text = std::fs::read_to_string(repo("deploy/grafana/cwdiag-dashboard.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut queries = Vec::new();
    dashboard_queries(&dash, &mut queries);
    assert!(queries.len() >= 10, "{queries:?}");
    let in_dashboard: BTreeSet<String> = queries.iter().flat_map(|q| used_names(q)).collect();
    // Every name in the file, not only in the queries, must exist.
    let anywhere = used_names(&text);
    assert_eq!(in_dashboard, anywhere, "names outside the queries");
    let rules = std::fs::read_to_string(repo("deploy/prometheus/cwdiag.rules.yml")).unwrap();
    let in_rules = used_names(&rules);
    for (what, names) in [("dashboard", &in_dashboard), ("rules", &in_rules)] {
        let missing: Vec<_> = names.difference(&exported).collect();
        assert!(missing.is_empty(), "{what} uses unexported {missing:?}");
    }
    // The dashboard shows what it is for: states, owners and ports,
    // findings, scan duration and errors.
    for m in [
        "cwdiag_sockets",
        "cwdiag_group_sockets",
        "cwdiag_findings",
        "cwdiag_scan_duration_seconds",
        "cwdiag_scan_errors_total",
    ] {
        assert!(in_dashboard.contains(m), "the dashboard does not show {m}");
    }
    let by = |label: &str| {
        queries
            .iter()
            .any(|q| q.contains("cwdiag_group_sockets") && q.contains(label))
    };
    assert!(by("comm") && by("port"), "top CLOSE_WAIT owners and ports");
}

#[test]
fn metric_name_extraction_sees_families_and_samples() {
    let names = exported_names(
        "# HELP cwdiag_a x\n# TYPE cwdiag_a gauge\ncwdiag_a{state=\"x\"} 1\ncwdiag_b 2\n",
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["cwdiag_a", "cwdiag_b"]
    );
    assert_eq!(
        used_names("sum(cwdiag_x{a=\"b\"}) / up{job=\"cwdiag\"} + foo_cwdiag_y")
            .into_iter()
            .collect::<Vec<_>>(),
        ["cwdiag_x"]
    );
}

#[test]
fn kubernetes_manifests_validate_against_the_api_schemas() {
    // kubernetes-validate (PyPI) checks each resource against the API's
    // JSON schemas, offline; --strict rejects unknown fields.
    if !have("kubernetes-validate", "validates the Kubernetes manifests") {
        return;
    }
    let out = Command::new("kubernetes-validate")
        .args(["--strict", "--quiet"])
        .arg(repo("deploy/kubernetes/daemonset.yaml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn deploy_yaml_passes_yamllint() {
    if !have("yamllint", "lints the shipped YAML") {
        return;
    }
    let out = Command::new("yamllint")
        .args(["--strict", "-c"])
        .arg(repo("deploy/.yamllint.yml"))
        .arg(repo("deploy"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn the_daemonset_is_unprivileged_and_sees_the_node() {
    let text = std::fs::read_to_string(repo("deploy/kubernetes/daemonset.yaml")).unwrap();
    let has = |line: &str| text.lines().any(|l| l.trim() == line);
    for line in [
        "kind: DaemonSet",
        "hostPID: true",
        "privileged: false",
        "allowPrivilegeEscalation: false",
        "readOnlyRootFilesystem: true",
        "runAsNonRoot: true",
        "mountPath: /run/netns",
        "path: /run/netns",
        "containerPort: 9911",
        "- --all-netns",
        "- ALL",
        "limits:",
    ] {
        assert!(has(line), "the DaemonSet lacks `{line}`");
    }
    assert!(
        !has("hostNetwork: true"),
        "it must not need the host network"
    );
    // The exporter listens where the container port says.
    assert!(has("- 0.0.0.0:9911"));
}

#[test]
fn every_subcommand_has_a_packaged_man_page() {
    let help = String::from_utf8(run(&["--help"]).stdout).unwrap();
    let subs: Vec<&str> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .filter(|s| *s != "help")
        .collect();
    assert!(subs.contains(&"serve") && subs.len() >= 8, "{subs:?}");
    let cargo = std::fs::read_to_string(repo("Cargo.toml")).unwrap();
    for sub in &subs {
        assert!(
            cargo.contains(&format!("\"target/assets/cwdiag-{sub}.1\"")),
            "Cargo.toml does not package the man page of {sub}"
        );
        let page = run(&["man", sub]);
        assert!(page.status.success() && page.stdout.starts_with(b".ie"));
    }
    assert!(cargo.contains("\"packaging/cwdiag.service\""));
}

#[test]
fn rules_name_only_rules_cwdiag_explains() {
    let rules = std::fs::read_to_string(repo("deploy/prometheus/cwdiag.rules.yml")).unwrap();
    let re = regex::Regex::new(r#"(?:cwdiag explain |rule_id=")([a-z0-9-]+)"#).unwrap();
    let ids: BTreeSet<&str> = re
        .captures_iter(&rules)
        .map(|c| c.get(1).unwrap().as_str())
        .collect();
    assert!(ids.contains("close-wait-growing"), "{ids:?}");
    for id in ids {
        let out = run(&["explain", id]);
        assert!(out.status.success(), "cwdiag explain {id} fails");
    }
}
