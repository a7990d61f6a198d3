//! Prometheus text exposition format (version 0.0.4) for a [`Report`]:
//! `cwdiag scan --format prometheus`, the node_exporter textfile collector
//! (`--output FILE`, written by [`crate::outfile`]) and `cwdiag serve`.
//!
//! Every metric is prefixed `cwdiag_` and has `# HELP` and `# TYPE`:
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `cwdiag_sockets` | gauge | `state` (all eleven, zeros included) |
//! | `cwdiag_group_sockets` | gauge | `state`, `port`, `direction`, `comm` |
//! | `cwdiag_findings` | gauge | `rule_id`, `severity` |
//! | `cwdiag_close_wait_oldest_age_seconds` | gauge | |
//! | `cwdiag_attribution_complete` | gauge | |
//! | `cwdiag_attribution_unreadable_processes` | gauge | |
//! | `cwdiag_scan_timestamp_seconds` | gauge | |
//! | `cwdiag_scan_duration_seconds` | gauge | (only when known) |
//! | `cwdiag_scan_errors_total` | counter | |
//!
//! With [`PromOptions::namespace`] set, every series also carries a `netns`
//! label.
//!
//! # Cardinality of `cwdiag_group_sockets`
//!
//! Groups are summed over pid and peer into one series per
//! (state, port, direction, comm); `comm` is `""` when no process owns the
//! sockets (TIME_WAIT, orphans) or the owner is unknown. `port` is the local
//! port for inbound sockets and the peer's port for outbound ones.
//! ESTABLISHED and LISTEN are left out: they dwarf everything else and are
//! not what cwdiag is about (`cwdiag_sockets` still counts them).
//!
//! For each state, only the [`PromOptions::top_k`] largest series are kept
//! (ties broken by labels, so the choice is stable); the rest are summed
//! into one series `{state="X",port="other",direction="other",comm="other"}`,
//! present only when something was folded into it. `top_k = 0` keeps all.
//! The number of series is thus at most 9 × (top_k + 1).

use crate::diag::{Direction, Report, Severity};
use crate::model::TcpState;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// What the exposition adds to the report's numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct PromOptions {
    /// `cwdiag_group_sockets` series kept per state; 0 keeps all.
    pub top_k: usize,
    /// Wall-clock duration of the scan, in milliseconds.
    pub scan_duration_ms: Option<f64>,
    /// Failed scans since the exporter started (0 for a one-shot scan).
    pub scan_errors: u64,
    /// Value of the `netns` label added to every series.
    pub namespace: Option<String>,
}

impl Default for PromOptions {
    fn default() -> Self {
        PromOptions {
            top_k: 20,
            scan_duration_ms: None,
            scan_errors: 0,
            namespace: None,
        }
    }
}

/// States left out of `cwdiag_group_sockets`.
fn per_group(state: TcpState) -> bool {
    !matches!(state, TcpState::Established | TcpState::Listen)
}

/// The exposition text of a report.
pub fn render(report: &Report, opts: &PromOptions) -> String {
    write(families(report, opts))
}

/// The exposition of several reports (one per namespace, each with its
/// own options and so its own `netns` label): every family's HELP and TYPE
/// once, with every report's samples under it, families in the order they
/// first appear.
pub fn render_many(reports: &[(&Report, PromOptions)]) -> String {
    let mut merged: Vec<Family> = Vec::new();
    for (report, opts) in reports {
        for f in families(report, opts) {
            match merged.iter_mut().find(|m| m.name == f.name) {
                Some(m) => m.samples.extend(f.samples),
                None => merged.push(f),
            }
        }
    }
    write(merged)
}

/// One metric family: its name, HELP and TYPE lines, and sample lines.
struct Family {
    name: String,
    head: String,
    samples: Vec<String>,
}

fn write(families: Vec<Family>) -> String {
    let mut out = String::new();
    for f in families {
        out.push_str(&f.head);
        for l in f.samples {
            out.push_str(&l);
            out.push('\n');
        }
    }
    out
}

/// The families of a report.
fn families(report: &Report, opts: &PromOptions) -> Vec<Family> {
    let mut out = Exposition::new(opts.namespace.as_deref());

    out.family(
        "cwdiag_sockets",
        "gauge",
        "TCP sockets by state in the scanned network namespace, after filters.",
    );
    for state in TcpState::ALL {
        let n = report.states.get(&state).copied().unwrap_or(0);
        out.sample("cwdiag_sockets", &[("state", state.name())], int(n));
    }

    out.family(
        "cwdiag_group_sockets",
        "gauge",
        "Sockets by state, port (local port inbound, peer port outbound), direction and owning command \
         (comm, empty when no process owns them). ESTABLISHED and LISTEN are left out. Per state only the \
         largest series are kept; the rest are summed into port, direction and comm \"other\". pod_uid and \
         container name the owner's Kubernetes pod and container (empty when none).",
    );
    for (state, series) in group_series(report, opts.top_k) {
        for (key, n) in series {
            let port = key.port.to_string();
            out.sample(
                "cwdiag_group_sockets",
                &[
                    ("state", state.name()),
                    ("port", &port),
                    ("direction", &key.direction),
                    ("comm", &key.comm),
                    ("pod_uid", &key.pod_uid),
                    ("container", &key.container),
                ],
                int(n),
            );
        }
    }

    out.family(
        "cwdiag_findings",
        "gauge",
        "Findings of the scan by rule and severity (cwdiag explain RULE_ID).",
    );
    let mut findings: BTreeMap<(&str, Severity), usize> = BTreeMap::new();
    for f in &report.findings {
        *findings
            .entry((f.rule_id.as_str(), f.severity))
            .or_default() += 1;
    }
    for ((rule_id, severity), n) in findings {
        out.sample(
            "cwdiag_findings",
            &[("rule_id", rule_id), ("severity", severity_label(severity))],
            int(n),
        );
    }

    let oldest_ms = report
        .groups
        .iter()
        .filter(|g| g.state == TcpState::CloseWait)
        .filter_map(|g| g.oldest_age_ms)
        .max()
        .unwrap_or(0);
    out.family(
        "cwdiag_close_wait_oldest_age_seconds",
        "gauge",
        "Age of the oldest CLOSE_WAIT socket (time since the peer's last ACK, from tcp_info); \
         0 when there is none or no tcp_info.",
    );
    out.sample(
        "cwdiag_close_wait_oldest_age_seconds",
        &[],
        float(f64::from(oldest_ms) / 1000.0),
    );

    let a = &report.attribution;
    out.family(
        "cwdiag_attribution_complete",
        "gauge",
        "1 when socket-to-process attribution is complete, 0 when an owner may be hidden \
         (unreadable processes).",
    );
    out.sample(
        "cwdiag_attribution_complete",
        &[],
        int(usize::from(a.complete)),
    );
    out.family(
        "cwdiag_attribution_unreadable_processes",
        "gauge",
        "Processes whose /proc/PID/fd could not be read during the scan.",
    );
    out.sample(
        "cwdiag_attribution_unreadable_processes",
        &[],
        int(a.unreadable_processes),
    );

    out.family(
        "cwdiag_scan_timestamp_seconds",
        "gauge",
        "Unix time at which the scan started.",
    );
    out.sample(
        "cwdiag_scan_timestamp_seconds",
        &[],
        float(report.taken_at_ms as f64 / 1000.0),
    );
    if let Some(ms) = opts.scan_duration_ms {
        out.family(
            "cwdiag_scan_duration_seconds",
            "gauge",
            "Wall-clock time the scan took.",
        );
        out.sample("cwdiag_scan_duration_seconds", &[], float(ms / 1000.0));
    }
    out.family(
        "cwdiag_scan_errors_total",
        "counter",
        "Scans that failed since the exporter started (always 0 for a one-shot scan).",
    );
    out.sample(
        "cwdiag_scan_errors_total",
        &[],
        opts.scan_errors.to_string(),
    );
    out.families
}

/// Labels of one `cwdiag_group_sockets` series besides `state`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct SeriesKey {
    port: PortLabel,
    direction: String,
    comm: String,
    /// Kubernetes pod UID and container of the owner, empty when none.
    pod_uid: String,
    container: String,
}

/// A port number, or the catch-all `other` (sorted last).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum PortLabel {
    Port(u16),
    Other,
}

impl std::fmt::Display for PortLabel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PortLabel::Port(p) => write!(f, "{p}"),
            PortLabel::Other => f.write_str("other"),
        }
    }
}

/// Per state (in kernel order), the kept series largest first, then the
/// `other` series if anything was folded.
fn group_series(report: &Report, top_k: usize) -> Vec<(TcpState, Vec<(SeriesKey, usize)>)> {
    let mut by_state: BTreeMap<TcpState, BTreeMap<SeriesKey, usize>> = BTreeMap::new();
    for g in report.groups.iter().filter(|g| per_group(g.state)) {
        let key = SeriesKey {
            port: PortLabel::Port(g.port),
            direction: direction_label(g.direction).to_string(),
            comm: g.comm.clone().unwrap_or_default(),
            pod_uid: g.pod_uid.clone().unwrap_or_default(),
            container: g.container.clone().unwrap_or_default(),
        };
        *by_state.entry(g.state).or_default().entry(key).or_default() += g.count;
    }
    by_state
        .into_iter()
        .map(|(state, series)| {
            let mut series: Vec<(SeriesKey, usize)> = series.into_iter().collect();
            series.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            if top_k > 0 && series.len() > top_k {
                let rest: usize = series.drain(top_k..).map(|(_, n)| n).sum();
                series.push((
                    SeriesKey {
                        port: PortLabel::Other,
                        direction: "other".to_string(),
                        comm: "other".to_string(),
                        pod_uid: "other".to_string(),
                        container: "other".to_string(),
                    },
                    rest,
                ));
            }
            (state, series)
        })
        .collect()
}

fn direction_label(d: Direction) -> &'static str {
    match d {
        Direction::Inbound => "inbound",
        Direction::Outbound => "outbound",
    }
}

/// The JSON spelling of a severity.
fn severity_label(s: Severity) -> &'static str {
    match s {
        Severity::Info => "info",
        Severity::Warning => "warning",
        Severity::Critical => "critical",
    }
}

fn int(n: usize) -> String {
    n.to_string()
}

/// A float as the exposition format spells it (`+Inf`, `-Inf`, `NaN`).
fn float(x: f64) -> String {
    if x.is_nan() {
        "NaN".to_string()
    } else if x.is_infinite() {
        if x > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else {
        // Rust never uses exponent notation here, which the format accepts
        // either way.
        format!("{x}")
    }
}

/// A label value with backslash, double quote and newline escaped.
pub fn escape_label_value(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// HELP text with backslash and newline escaped.
fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

struct Exposition<'a> {
    families: Vec<Family>,
    netns: Option<&'a str>,
}

impl<'a> Exposition<'a> {
    fn new(netns: Option<&'a str>) -> Self {
        Exposition {
            families: Vec::new(),
            netns,
        }
    }

    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let mut head = String::new();
        let _ = writeln!(head, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(head, "# TYPE {name} {kind}");
        self.families.push(Family {
            name: name.to_string(),
            head,
            samples: Vec::new(),
        });
    }

    /// Adds a sample to the family opened last (its own).
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: String) {
        let mut line = String::from(name);
        let netns = self.netns.map(|ns| ("netns", ns));
        let mut all = netns.iter().chain(labels.iter()).peekable();
        if all.peek().is_some() {
            line.push('{');
            for (i, (k, v)) in all.enumerate() {
                if i > 0 {
                    line.push(',');
                }
                let _ = write!(line, "{k}=\"{}\"", escape_label_value(v));
            }
            line.push('}');
        }
        let _ = write!(line, " {value}");
        debug_assert!(self.families.last().is_some_and(|f| f.name == name));
        if let Some(f) = self.families.last_mut() {
            f.samples.push(line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::{Policy, classify};
    use crate::filter::Filter;
    use crate::model::Snapshot;
    use std::collections::HashMap;

    /// The text merge [`render_many`] replaced (texts parsed back): the
    /// oracle it must agree with.
    fn text_merge(texts: &[String]) -> String {
        let mut order: Vec<String> = Vec::new();
        let mut families: BTreeMap<String, (Vec<String>, Vec<String>)> = BTreeMap::new();
        for text in texts {
            let mut current = String::new();
            for line in text.lines() {
                if let Some(rest) = line
                    .strip_prefix("# HELP ")
                    .or_else(|| line.strip_prefix("# TYPE "))
                {
                    let name = rest
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_string();
                    if !families.contains_key(&name) {
                        order.push(name.clone());
                    }
                    let fam = families.entry(name.clone()).or_default();
                    if !fam.0.iter().any(|h| h == line) {
                        fam.0.push(line.to_string());
                    }
                    current = name;
                } else if !line.is_empty() {
                    families
                        .entry(current.clone())
                        .or_default()
                        .1
                        .push(line.to_string());
                }
            }
        }
        let mut out = String::new();
        for name in order {
            if let Some((head, samples)) = families.get(&name) {
                for l in head.iter().chain(samples) {
                    out.push_str(l);
                    out.push('\n');
                }
            }
        }
        out
    }

    #[test]
    fn namespaces_merge_on_values_as_the_text_merge_did() {
        let (a, b) = (report(), report());
        let opts = |ns: &str| PromOptions {
            namespace: Some(ns.to_string()),
            scan_duration_ms: Some(12.5),
            ..PromOptions::default()
        };
        let both = render_many(&[(&a, opts("app")), (&b, opts("side\"car"))]);
        let texts = [render(&a, &opts("app")), render(&b, &opts("side\"car"))];
        assert_eq!(both, text_merge(&texts));
        assert_eq!(both.matches("# HELP cwdiag_sockets ").count(), 1);
        let per_ns = |ns: &str| {
            samples(&both)
                .iter()
                .filter(|(n, l, _)| n == "cwdiag_sockets" && l["netns"] == ns)
                .count()
        };
        assert_eq!(per_ns("app"), TcpState::ALL.len());
        assert_eq!(per_ns("side\"car"), TcpState::ALL.len());
        assert_eq!(render_many(&[(&a, opts("app"))]), texts[0]);
        assert_eq!(render_many(&[]), "");
    }

    fn report() -> Report {
        let snap: Snapshot =
            serde_json::from_str(include_str!("../../fixtures/workload.snapshot.json")).unwrap();
        classify(&snap, &Filter::default(), &Policy::default())
    }

    /// Parsed samples: (name, labels, value).
    fn samples(text: &str) -> Vec<(String, BTreeMap<String, String>, f64)> {
        let mut out = Vec::new();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (series, value) = line.rsplit_once(' ').unwrap();
            let value: f64 = value.parse().unwrap();
            let (name, labels) = match series.split_once('{') {
                None => (series.to_string(), BTreeMap::new()),
                Some((name, rest)) => (name.to_string(), parse_labels(rest)),
            };
            out.push((name, labels, value));
        }
        out
    }

    /// `a="x",b="y\"z"}` -> {a: x, b: y"z}, unescaping.
    fn parse_labels(s: &str) -> BTreeMap<String, String> {
        let mut labels = BTreeMap::new();
        let mut chars = s.chars().peekable();
        loop {
            let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
            assert_eq!(chars.next(), Some('"'));
            let mut value = String::new();
            loop {
                match chars.next().unwrap() {
                    '\\' => match chars.next().unwrap() {
                        'n' => value.push('\n'),
                        c => value.push(c),
                    },
                    '"' => break,
                    c => value.push(c),
                }
            }
            labels.insert(key, value);
            match chars.next() {
                Some(',') => continue,
                Some('}') => break,
                other => panic!("unexpected {other:?} in labels"),
            }
        }
        labels
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn promtool_check(text: &str) {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let child = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                crate::testutil::skip("promtool not installed (Debian package prometheus)");
                return;
            }
            Err(e) => panic!("cannot run promtool: {e}"),
        };
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "promtool check metrics failed ({}):\n{}{}\n--- input ---\n{text}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
    }

    #[test]
    fn every_state_is_present_with_zeros() {
        let r = report();
        let text = render(&r, &PromOptions::default());
        let got: HashMap<String, f64> = samples(&text)
            .into_iter()
            .filter(|(n, _, _)| n == "cwdiag_sockets")
            .map(|(_, l, v)| (l["state"].clone(), v))
            .collect();
        assert_eq!(got.len(), 11);
        for state in TcpState::ALL {
            assert_eq!(got[state.name()], r.states[&state] as f64, "{state}");
        }
        assert_eq!(got["CLOSE_WAIT"], 18.0);
        assert_eq!(got["TIME_WAIT"], 30.0);
        assert_eq!(got["SYN_SENT"], 0.0);
        assert_eq!(got["CLOSING"], 0.0);
    }

    #[test]
    fn group_series_match_the_report() {
        let r = report();
        let text = render(&r, &PromOptions::default());
        let mut want: BTreeMap<BTreeMap<String, String>, f64> = BTreeMap::new();
        for g in r.groups.iter().filter(|g| per_group(g.state)) {
            let port = g.port.to_string();
            let key = labels(&[
                ("state", g.state.name()),
                ("port", &port),
                ("direction", direction_label(g.direction)),
                ("comm", g.comm.as_deref().unwrap_or("")),
                ("pod_uid", g.pod_uid.as_deref().unwrap_or("")),
                ("container", g.container.as_deref().unwrap_or("")),
            ]);
            *want.entry(key).or_default() += g.count as f64;
        }
        let got: BTreeMap<BTreeMap<String, String>, f64> = samples(&text)
            .into_iter()
            .filter(|(n, _, _)| n == "cwdiag_group_sockets")
            .map(|(_, l, v)| (l, v))
            .collect();
        assert_eq!(got, want);
        // The fixture's CLOSE_WAIT all belong to python3 on one inbound port.
        let cw: Vec<_> = got
            .iter()
            .filter(|(l, _)| l["state"] == "CLOSE_WAIT")
            .collect();
        assert_eq!(cw.len(), 1, "{cw:?}");
        assert_eq!(cw[0].0["comm"], "python3");
        assert_eq!(cw[0].0["direction"], "inbound");
        assert_eq!(*cw[0].1, 18.0);
        // TIME_WAIT has no owner: comm is empty.
        assert!(
            got.keys()
                .filter(|l| l["state"] == "TIME_WAIT")
                .all(|l| l["comm"].is_empty())
        );
        assert!(
            got.keys()
                .all(|l| l["state"] != "ESTABLISHED" && l["state"] != "LISTEN")
        );
    }

    #[test]
    fn findings_oldest_age_and_attribution() {
        let r = report();
        let text = render(&r, &PromOptions::default());
        let s = samples(&text);
        let findings: BTreeMap<(String, String), f64> = s
            .iter()
            .filter(|(n, _, _)| n == "cwdiag_findings")
            .map(|(_, l, v)| ((l["rule_id"].clone(), l["severity"].clone()), *v))
            .collect();
        assert_eq!(findings.values().sum::<f64>(), r.findings.len() as f64);
        assert_eq!(
            findings.get(&("close-wait-never-read".into(), "warning".into())),
            Some(&1.0),
            "{findings:?}"
        );
        let value = |name: &str| {
            s.iter()
                .find(|(n, _, _)| n == name)
                .map(|(_, _, v)| *v)
                .unwrap()
        };
        let oldest = r
            .groups
            .iter()
            .filter(|g| g.state == TcpState::CloseWait)
            .filter_map(|g| g.oldest_age_ms)
            .max()
            .unwrap_or(0);
        assert_eq!(
            value("cwdiag_close_wait_oldest_age_seconds"),
            f64::from(oldest) / 1000.0
        );
        assert_eq!(
            value("cwdiag_attribution_complete"),
            if r.attribution.complete { 1.0 } else { 0.0 }
        );
        assert_eq!(
            value("cwdiag_attribution_unreadable_processes"),
            r.attribution.unreadable_processes as f64
        );
        assert_eq!(
            value("cwdiag_scan_timestamp_seconds"),
            r.taken_at_ms as f64 / 1000.0
        );
        assert_eq!(value("cwdiag_scan_errors_total"), 0.0);
        assert!(!text.contains("cwdiag_scan_duration_seconds"));
    }

    #[test]
    fn help_and_type_for_every_metric_and_promtool_accepts_it() {
        let r = report();
        let opts = PromOptions {
            scan_duration_ms: Some(12.5),
            scan_errors: 3,
            namespace: Some("ns-a".into()),
            ..PromOptions::default()
        };
        let text = render(&r, &opts);
        let names: std::collections::BTreeSet<String> =
            samples(&text).into_iter().map(|(n, _, _)| n).collect();
        assert_eq!(names.len(), 9, "{names:?}");
        for name in &names {
            assert!(name.starts_with("cwdiag_"), "{name}");
            assert_eq!(
                text.matches(&format!("# HELP {name} ")).count(),
                1,
                "{name}"
            );
            assert_eq!(
                text.matches(&format!("# TYPE {name} ")).count(),
                1,
                "{name}"
            );
        }
        assert!(text.contains("# TYPE cwdiag_scan_errors_total counter\n"));
        assert!(text.contains("cwdiag_scan_duration_seconds{netns=\"ns-a\"} 0.0125\n"));
        assert!(text.contains("cwdiag_scan_errors_total{netns=\"ns-a\"} 3\n"));
        for (_, l, _) in samples(&text) {
            assert_eq!(l.get("netns").map(String::as_str), Some("ns-a"));
        }
        promtool_check(&text);
        promtool_check(&render(&r, &PromOptions::default()));
    }

    #[test]
    fn empty_families_still_pass_promtool() {
        let mut r = report();
        r.groups.clear();
        r.findings.clear();
        let text = render(&r, &PromOptions::default());
        assert!(text.contains("# TYPE cwdiag_group_sockets gauge\n"));
        assert!(text.contains("# TYPE cwdiag_findings gauge\n"));
        assert!(!text.contains("cwdiag_findings{"));
        assert!(text.contains("cwdiag_close_wait_oldest_age_seconds 0\n"));
        promtool_check(&text);
    }

    #[test]
    fn label_values_are_escaped() {
        let mut r = report();
        let nasty = "a\"b\\c\nd";
        for g in r
            .groups
            .iter_mut()
            .filter(|g| g.state == TcpState::CloseWait)
        {
            g.comm = Some(nasty.to_string());
        }
        let opts = PromOptions {
            namespace: Some("we\"ird\\ns\n".into()),
            ..PromOptions::default()
        };
        let text = render(&r, &opts);
        assert!(
            text.contains(r#"comm="a\"b\\c\nd""#),
            "escaped comm missing:\n{text}"
        );
        assert!(text.contains(r#"netns="we\"ird\\ns\n""#));
        // Every sample stays on one line and parses back to the raw value.
        let cw: Vec<_> = samples(&text)
            .into_iter()
            .filter(|(n, l, _)| n == "cwdiag_group_sockets" && l["state"] == "CLOSE_WAIT")
            .collect();
        assert_eq!(cw.len(), 1);
        assert_eq!(cw[0].1["comm"], nasty);
        assert_eq!(cw[0].1["netns"], "we\"ird\\ns\n");
        promtool_check(&text);
    }

    #[test]
    fn top_k_folds_the_rest_into_other() {
        let mut r = report();
        // The fixture has one TIME_WAIT series (towards :5432); add two
        // more destinations, one with the same port and another comm-less
        // owner so that it aggregates, one with its own port.
        let tw = r
            .groups
            .iter()
            .find(|g| g.state == TcpState::TimeWait)
            .unwrap()
            .clone();
        for (port, count, peer) in [
            (5432, 4, "10.0.0.9:5432"),
            (6379, 7, "10.0.0.7:6379"),
            (80, 2, "10.0.0.8:80"),
        ] {
            let mut g = tw.clone();
            g.port = port;
            g.count = count;
            g.peer = Some(peer.to_string());
            r.groups.push(g);
        }
        let all = render(
            &r,
            &PromOptions {
                top_k: 0,
                ..PromOptions::default()
            },
        );
        let all: Vec<_> = samples(&all)
            .into_iter()
            .filter(|(n, l, _)| n == "cwdiag_group_sockets" && l["state"] == "TIME_WAIT")
            .map(|(_, l, v)| (l, v))
            .collect();
        // :5432 is 30 + 4 from two peers.
        assert_eq!(all.len(), 3, "{all:?}");
        let total: f64 = all.iter().map(|(_, v)| v).sum();
        assert_eq!(total, 43.0);

        let text = render(
            &r,
            &PromOptions {
                top_k: 1,
                ..PromOptions::default()
            },
        );
        let tw: Vec<_> = samples(&text)
            .into_iter()
            .filter(|(n, l, _)| n == "cwdiag_group_sockets" && l["state"] == "TIME_WAIT")
            .map(|(_, l, v)| (l, v))
            .collect();
        assert_eq!(tw.len(), 2, "{tw:?}");
        let biggest = all.iter().map(|(_, v)| *v).fold(0.0, f64::max);
        assert_eq!(tw[0].1, biggest);
        assert_eq!(biggest, 34.0);
        assert_eq!(tw[0].0["port"], "5432");
        let other = &tw[1];
        assert_eq!(
            other.0,
            labels(&[
                ("state", "TIME_WAIT"),
                ("port", "other"),
                ("direction", "other"),
                ("comm", "other"),
                ("pod_uid", "other"),
                ("container", "other"),
            ])
        );
        assert_eq!(other.1, total - biggest);
        assert_eq!(other.1, 9.0);
        // States with a single series get no "other".
        assert!(
            !samples(&text)
                .iter()
                .any(
                    |(_, l, _)| l.get("state").map(String::as_str) == Some("CLOSE_WAIT")
                        && l.get("port").map(String::as_str) == Some("other")
                )
        );
        promtool_check(&text);
    }

    #[test]
    fn top_k_on_synthetic_groups_sums_exactly() {
        let mut r = report();
        let template = r
            .groups
            .iter()
            .find(|g| g.state == TcpState::CloseWait)
            .unwrap()
            .clone();
        r.groups.retain(|g| g.state != TcpState::CloseWait);
        for i in 0..30u16 {
            let mut g = template.clone();
            g.port = 1000 + i;
            g.count = usize::from(i) + 1;
            r.groups.push(g);
        }
        let text = render(
            &r,
            &PromOptions {
                top_k: 5,
                ..PromOptions::default()
            },
        );
        let cw: Vec<_> = samples(&text)
            .into_iter()
            .filter(|(n, l, _)| n == "cwdiag_group_sockets" && l["state"] == "CLOSE_WAIT")
            .map(|(_, l, v)| (l["port"].clone(), v))
            .collect();
        let ports: Vec<&str> = cw.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(ports, ["1029", "1028", "1027", "1026", "1025", "other"]);
        // 1 + 2 + ... + 25
        assert_eq!(cw[5].1, (25 * 26 / 2) as f64);
    }

    #[test]
    fn floats_follow_the_format() {
        assert_eq!(float(f64::NAN), "NaN");
        assert_eq!(float(f64::INFINITY), "+Inf");
        assert_eq!(float(f64::NEG_INFINITY), "-Inf");
        assert_eq!(float(1.5), "1.5");
        assert_eq!(float(0.0), "0");
    }
}
