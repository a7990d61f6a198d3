//! Pure classification: a [`Snapshot`] and a [`Policy`] in, a [`Report`]
//! out. No I/O here; time comes from the snapshot.

use crate::diagnose;
use crate::filter::Filter;
use crate::hints;
use crate::model::{Attribution, Snapshot, Socket, Source, TcpState};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// Thresholds that turn groups into findings of a given severity.
#[derive(Debug, Clone)]
pub struct Policy {
    /// CLOSE_WAIT sockets per process and port for a warning.
    pub close_wait_warn: usize,
    /// ... and for a critical finding.
    pub close_wait_crit: usize,
    /// TIME_WAIT sockets per port or destination for a finding.
    pub time_wait_warn: usize,
    /// Share of the ephemeral port range held towards one destination
    /// that makes a warning, and a critical finding.
    pub port_ratio_warn: f64,
    pub port_ratio_crit: f64,
    /// Include per-socket records in the report.
    pub sockets: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            close_wait_warn: 10,
            close_wait_crit: 100,
            time_wait_warn: 1000,
            port_ratio_warn: 0.5,
            port_ratio_crit: 0.8,
            sockets: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// The local port is one this host listens on.
    Inbound,
    /// Anything else: the local port is ephemeral, the peer is the server.
    Outbound,
}

/// Whether, and how, a group's sockets were matched to a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Owner {
    /// Found in `/proc/PID/fd`: `pid` and `comm` are set.
    Process,
    /// inode 0: no process holds a file descriptor (TIME_WAIT, SYN_RECV,
    /// orphans after close(), children not yet accepted).
    None,
    /// Has an inode, but no readable process holds it (not root, or the
    /// process exited during the scan).
    Unknown,
    /// Not looked up: this state is not attributed by default (use
    /// `--sockets` to attribute every socket).
    NotResolved,
}

/// How many sockets of a group have Recv-Q 0, 1 and more (CLOSE_WAIT).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecvQSplit {
    /// Read the FIN (EOF) and did not close.
    pub zero: usize,
    /// Never read after the peer's FIN.
    pub one: usize,
    /// Data and FIN unread: the reader stopped.
    pub more: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Group {
    pub state: TcpState,
    pub pid: Option<u32>,
    pub comm: Option<String>,
    pub owner: Owner,
    pub direction: Direction,
    /// Local port for inbound groups, the peer's port for outbound ones.
    pub port: u16,
    /// `ip:port` of the peer for outbound groups, null for inbound ones.
    pub peer: Option<String>,
    pub count: usize,
    pub ipv4: usize,
    pub ipv6: usize,
    /// Sum of Recv-Q over the group's sockets.
    pub recv_q_bytes: u64,
    pub recv_q: RecvQSplit,
    /// Oldest/median CLOSE_WAIT age estimate from tcp_info
    /// `last_ack_recv` (ms); null without tcp_info.
    pub oldest_age_ms: Option<u32>,
    pub median_age_ms: Option<u32>,
    /// Container or systemd unit of the owner.
    pub container: Option<String>,
    /// TIME_WAIT only: sockets by seconds left, [0,10) .. [50,60].
    pub time_wait_left_s: Option<[usize; 6]>,
    /// TIME_WAIT only: closes per second over the last 60 s.
    pub close_rate_per_s: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn label(self) -> &'static str {
        match self {
            Severity::Info => "INFO",
            Severity::Warning => "WARNING",
            Severity::Critical => "CRITICAL",
        }
    }
}

/// The numbers a finding rests on. Absent fields are omitted from JSON.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Evidence {
    pub state: Option<TcpState>,
    pub count: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comm: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Peers, busiest first (at most 5).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub peers: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recv_q: Option<RecvQSplit>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recv_q_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oldest_age_ms: Option<u32>,
    /// Ephemeral ports usable per destination (`ip_local_port_range`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port_budget: Option<u32>,
    /// count / port_budget.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port_ratio: Option<f64>,
    /// Container or systemd unit of the owner (`docker:0123abcd`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// Source address of an outgoing flow.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_ip: Option<String>,
    /// TIME_WAIT sockets among `count`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_wait: Option<usize>,
    /// Closes per second over the last 60 s (TIME_WAIT count / 60).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub close_rate_per_s: Option<f64>,
    /// Closes per second over the last 10 s (TIME_WAIT with >= 50 s left).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recent_close_rate_per_s: Option<f64>,
    /// port_budget / 60: new connections per second one destination sustains.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sustainable_rate_per_s: Option<f64>,
    /// Listener's accept queue (Recv-Q) and backlog (Send-Q).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accept_queue: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backlog: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unaccepted_established: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unaccepted_close_wait: Option<usize>,
    /// TcpExt ListenOverflows / ListenDrops (since boot).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen_overflows: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen_drops: Option<u64>,
    /// The sysctl a finding is about, and its value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sysctl: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// A kernel counter relevant to the finding.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counter: Option<u64>,
    /// Open fds of the owner and its RLIMIT_NOFILE soft limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fd_count: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nofile_soft: Option<u64>,
    /// CLOSE_WAIT sockets per second, from one scan's ages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leak_rate_per_s: Option<f64>,
    /// Socket inodes concerned (first few).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub inodes: Vec<u64>,
    /// Counts over samples, oldest first (growth findings).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub series: Vec<usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Finding {
    pub rule_id: String,
    pub severity: Severity,
    pub summary: String,
    pub evidence: Evidence,
    pub hint: String,
}

impl Finding {
    pub fn new(
        rule_id: &str,
        severity: Severity,
        summary: String,
        evidence: Evidence,
        hint: String,
    ) -> Finding {
        Finding {
            rule_id: rule_id.to_string(),
            severity,
            summary,
            evidence,
            hint,
        }
    }
}

/// Everything `scan` reports. Serialised as-is for `--json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    pub schema_version: u32,
    pub taken_at_ms: u64,
    pub source: Source,
    /// The network namespace, when one was chosen (--netns, --all-netns).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub netns: Option<crate::model::NetnsInfo>,
    /// Socket count per state, all eleven states present.
    pub states: BTreeMap<TcpState, usize>,
    pub total: usize,
    pub groups: Vec<Group>,
    pub findings: Vec<Finding>,
    pub attribution: Attribution,
    /// TCP sysctls of the scanned namespace (empty for bare dumps).
    pub sysctls: BTreeMap<String, String>,
    /// Kernel counters of the scanned namespace.
    pub counters: BTreeMap<String, u64>,
    /// Owners of the reported sockets, by pid: comm, fds, limits, cgroup.
    pub processes: BTreeMap<u32, crate::model::Process>,
    pub warnings: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sockets: Option<Vec<Socket>>,
    /// With `scan --samples N`: CLOSE_WAIT/TIME_WAIT groups over the samples.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub growth: Option<Vec<crate::growth::Series>>,
}

/// Default ephemeral range 32768-60999, used when the snapshot lacks it.
pub const DEFAULT_PORT_BUDGET: u32 = 28_232;

type GroupKey = (
    TcpState,
    Option<u32>,
    Direction,
    u16,
    Option<crate::model::Endpoint>,
    Owner,
);

pub fn classify(snap: &Snapshot, filter: &Filter, policy: &Policy) -> Report {
    // Direction needs every listening port, whatever the filters say.
    let listen_ports: rustc_hash::FxHashSet<u16> = snap
        .sockets
        .iter()
        .filter(|s| s.state == TcpState::Listen)
        .map(|s| s.local.port())
        .collect();
    let process_of = |s: &Socket| s.pid.and_then(|p| snap.processes.get(&p));
    let selected: Vec<&Socket> = snap
        .sockets
        .iter()
        .filter(|s| filter.matches(s, process_of(s)))
        .collect();

    let mut states: BTreeMap<TcpState, usize> = TcpState::ALL.iter().map(|&s| (s, 0)).collect();
    let mut buckets: rustc_hash::FxHashMap<GroupKey, Vec<&Socket>> = Default::default();
    for s in &selected {
        *states.entry(s.state).or_default() += 1;
        let direction = if s.state == TcpState::Listen || listen_ports.contains(&s.local.port()) {
            Direction::Inbound
        } else {
            Direction::Outbound
        };
        let (port, peer) = match direction {
            Direction::Inbound => (s.local.port(), None),
            Direction::Outbound => (s.peer.port(), Some(s.peer)),
        };
        let owner = owner_of(s, &snap.attribution);
        buckets
            .entry((s.state, s.pid, direction, port, peer, owner))
            .or_default()
            .push(s);
    }

    let mut groups: Vec<Group> = buckets
        .into_iter()
        .map(|((state, pid, direction, port, peer, owner), socks)| {
            let comm = pid
                .and_then(|p| snap.processes.get(&p))
                .map(|p| p.comm.clone());
            let mut g = build_group(state, pid, comm, owner, direction, port, peer, &socks);
            g.container = pid
                .and_then(|p| snap.processes.get(&p))
                .and_then(|p| p.container.clone());
            g
        })
        .collect();
    groups.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then(a.state.cmp(&b.state))
            .then(a.pid.cmp(&b.pid))
            .then(a.port.cmp(&b.port))
            .then(a.peer.cmp(&b.peer))
    });

    let budget = port_budget(snap);
    let mut findings = close_wait_findings(&groups, policy, snap);
    findings.extend(time_wait_findings(&groups, policy, budget));
    findings.extend(diagnose::accept_queue(snap, &selected));
    findings.extend(diagnose::port_exhaustion(
        snap,
        &selected,
        &listen_ports,
        policy,
        budget,
    ));
    findings.extend(diagnose::sysctl_audit(snap, &states));
    findings.extend(diagnose::fd_findings(snap, &groups));
    findings.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then(b.evidence.count.cmp(&a.evidence.count))
    });

    let processes = reported_processes(snap, &groups);
    Report {
        schema_version: crate::model::SCHEMA_VERSION,
        taken_at_ms: snap.taken_at_ms,
        source: snap.source.clone(),
        netns: snap.netns.clone(),
        total: selected.len(),
        states,
        groups,
        findings,
        attribution: snap.attribution.clone(),
        sysctls: snap.sysctls.clone(),
        counters: snap.counters.clone(),
        processes,
        warnings: snap.warnings.clone(),
        sockets: policy
            .sockets
            .then(|| selected.iter().map(|s| (*s).clone()).collect()),
        growth: None,
    }
}

/// The processes that own at least one reported group.
fn reported_processes(snap: &Snapshot, groups: &[Group]) -> BTreeMap<u32, crate::model::Process> {
    groups
        .iter()
        .filter_map(|g| g.pid)
        .filter_map(|pid| Some((pid, snap.processes.get(&pid)?.clone())))
        .collect()
}

fn owner_of(s: &Socket, attr: &Attribution) -> Owner {
    if s.pid.is_some() {
        Owner::Process
    } else if s.inode == 0 {
        Owner::None
    } else if attr.wanted_sockets > 0 && attributed_by_default(s.state) {
        Owner::Unknown
    } else {
        Owner::NotResolved
    }
}

/// States whose sockets `scan` maps to processes without `--sockets`:
/// everything but ESTABLISHED, which is the bulk of a busy host.
pub fn attributed_by_default(state: TcpState) -> bool {
    state != TcpState::Established
}

#[allow(clippy::too_many_arguments)]
fn build_group(
    state: TcpState,
    pid: Option<u32>,
    comm: Option<String>,
    owner: Owner,
    direction: Direction,
    port: u16,
    peer: Option<crate::model::Endpoint>,
    socks: &[&Socket],
) -> Group {
    let mut recv_q = RecvQSplit::default();
    let mut ages: Vec<u32> = Vec::new();
    let mut ipv6 = 0;
    let mut bytes = 0u64;
    for s in socks {
        ipv6 += usize::from(s.is_ipv6());
        bytes += u64::from(s.recv_q);
        match s.recv_q {
            0 => recv_q.zero += 1,
            1 => recv_q.one += 1,
            _ => recv_q.more += 1,
        }
        if let (TcpState::CloseWait, Some(t)) = (state, s.tcp_info) {
            ages.push(t.last_ack_recv_ms);
        }
    }
    ages.sort_unstable();
    let tw = state == TcpState::TimeWait;
    Group {
        state,
        pid,
        comm,
        owner,
        direction,
        port,
        peer: peer.map(|p| p.to_string()),
        count: socks.len(),
        ipv4: socks.len() - ipv6,
        ipv6,
        recv_q_bytes: bytes,
        recv_q,
        oldest_age_ms: ages.last().copied(),
        median_age_ms: ages.get(ages.len() / 2).copied(),
        container: None,
        time_wait_left_s: tw.then(|| diagnose::time_wait_histogram(socks)),
        close_rate_per_s: tw.then(|| (socks.len() as f64 / 60.0 * 1000.0).round() / 1000.0),
    }
}

/// Which of the three CLOSE_WAIT patterns (tcp-states.md 2.1a) a Recv-Q
/// value shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CloseWaitKind {
    /// Recv-Q 0: read EOF, never closed.
    EofNotClosed,
    /// Recv-Q 1: the FIN itself is unread: never read after the peer closed.
    NeverRead,
    /// Recv-Q > 1: data and FIN unread: the reader stopped.
    UnreadData,
}

impl CloseWaitKind {
    pub fn rule_id(self) -> &'static str {
        match self {
            CloseWaitKind::EofNotClosed => "close-wait-eof-not-closed",
            CloseWaitKind::NeverRead => "close-wait-never-read",
            CloseWaitKind::UnreadData => "close-wait-unread-data",
        }
    }
}

/// Sockets of one CLOSE_WAIT finding, summed over its groups.
#[derive(Default)]
struct CloseWaitAgg {
    count: usize,
    peers: Vec<(usize, String)>,
    comm: Option<String>,
    unread_bytes: u64,
    oldest_age_ms: Option<u32>,
    split: RecvQSplit,
}

/// One finding per (process, direction, port, Recv-Q pattern).
fn close_wait_findings(groups: &[Group], policy: &Policy, snap: &Snapshot) -> Vec<Finding> {
    type Key = (Option<u32>, Direction, u16, Owner, CloseWaitKind);
    let mut agg: BTreeMap<Key, CloseWaitAgg> = BTreeMap::new();
    // Inbound sockets with no owner are children never accepted: the
    // accept-queue rule reports them against their listener.
    let unaccepted = |g: &&Group| g.owner == Owner::None && g.direction == Direction::Inbound;
    for g in groups
        .iter()
        .filter(|g| g.state == TcpState::CloseWait)
        .filter(|g| !unaccepted(g))
    {
        for (kind, n) in [
            (CloseWaitKind::EofNotClosed, g.recv_q.zero),
            (CloseWaitKind::NeverRead, g.recv_q.one),
            (CloseWaitKind::UnreadData, g.recv_q.more),
        ] {
            if n == 0 {
                continue;
            }
            let e = agg
                .entry((g.pid, g.direction, g.port, g.owner, kind))
                .or_default();
            e.count += n;
            if let Some(p) = &g.peer {
                e.peers.push((n, p.clone()));
            }
            e.comm.clone_from(&g.comm);
            e.oldest_age_ms = e.oldest_age_ms.max(g.oldest_age_ms);
            match kind {
                CloseWaitKind::EofNotClosed => e.split.zero += n,
                CloseWaitKind::NeverRead => e.split.one += n,
                CloseWaitKind::UnreadData => {
                    e.split.more += n;
                    // Recv-Q 0 sockets add nothing, Recv-Q 1 ones 1 each.
                    e.unread_bytes += g.recv_q_bytes - g.recv_q.one as u64;
                }
            }
        }
    }
    // Severity follows the process's whole CLOSE_WAIT pile on that port,
    // not each Recv-Q pattern's share of it.
    let mut totals: HashMap<(Option<u32>, Direction, u16, Owner), usize> = HashMap::new();
    for ((pid, direction, port, owner, _), a) in &agg {
        *totals.entry((*pid, *direction, *port, *owner)).or_default() += a.count;
    }
    agg.into_iter()
        .map(|((pid, direction, port, owner, kind), mut a)| {
            a.peers.sort_by(|x, y| y.0.cmp(&x.0).then(x.1.cmp(&y.1)));
            let total = totals
                .get(&(pid, direction, port, owner))
                .copied()
                .unwrap_or(a.count);
            let severity = if total >= policy.close_wait_crit {
                Severity::Critical
            } else if total >= policy.close_wait_warn {
                Severity::Warning
            } else {
                Severity::Info
            };
            let evidence = Evidence {
                state: Some(TcpState::CloseWait),
                count: a.count,
                pid,
                comm: a.comm,
                direction: Some(direction),
                port: Some(port),
                peers: a.peers.into_iter().take(5).map(|p| p.1).collect(),
                recv_q: Some(a.split),
                recv_q_bytes: (kind == CloseWaitKind::UnreadData).then_some(a.unread_bytes),
                oldest_age_ms: a.oldest_age_ms,
                container: pid
                    .and_then(|p| snap.processes.get(&p))
                    .and_then(|p| p.container.clone()),
                fd_count: pid
                    .and_then(|p| snap.processes.get(&p))
                    .and_then(|p| p.fd_count),
                nofile_soft: pid
                    .and_then(|p| snap.processes.get(&p))
                    .and_then(|p| p.nofile_soft),
                ..Evidence::default()
            };
            let (summary, hint) = hints::close_wait(kind, owner, &evidence);
            Finding::new(kind.rule_id(), severity, summary, evidence, hint)
        })
        .collect()
}

/// TIME_WAIT per local listening port (inbound) and per destination.
fn time_wait_findings(groups: &[Group], policy: &Policy, budget: u32) -> Vec<Finding> {
    let mut agg: BTreeMap<(Direction, u16, Option<String>), usize> = BTreeMap::new();
    for g in groups.iter().filter(|g| g.state == TcpState::TimeWait) {
        *agg.entry((g.direction, g.port, g.peer.clone()))
            .or_default() += g.count;
    }
    agg.into_iter()
        .filter(|&(_, count)| count >= policy.time_wait_warn)
        .map(|((direction, port, peer), count)| {
            let ratio = (direction == Direction::Outbound && budget > 0)
                .then(|| count as f64 / f64::from(budget));
            let severity = if ratio.is_some_and(|r| r >= policy.port_ratio_crit) {
                Severity::Critical
            } else if direction == Direction::Outbound {
                Severity::Warning
            } else {
                Severity::Info
            };
            let evidence = Evidence {
                state: Some(TcpState::TimeWait),
                count,
                direction: Some(direction),
                port: Some(port),
                peers: peer.into_iter().collect(),
                port_budget: (direction == Direction::Outbound).then_some(budget),
                port_ratio: ratio.map(|r| (r * 1000.0).round() / 1000.0),
                ..Evidence::default()
            };
            let (rule, summary, hint) = hints::time_wait(direction, &evidence);
            Finding::new(rule, severity, summary, evidence, hint)
        })
        .collect()
}

/// Ports per (source IP, destination) from `ip_local_port_range` minus
/// `ip_local_reserved_ports`, when the snapshot carries them.
pub fn port_budget(snap: &Snapshot) -> u32 {
    let Some(range) = snap.sysctls.get("net.ipv4.ip_local_port_range") else {
        return DEFAULT_PORT_BUDGET;
    };
    let mut it = range
        .split_whitespace()
        .filter_map(|v| v.parse::<u32>().ok());
    let (Some(lo), Some(hi)) = (it.next(), it.next()) else {
        return DEFAULT_PORT_BUDGET;
    };
    if lo > hi {
        // The kernel refuses such a range; a crafted snapshot may not.
        return DEFAULT_PORT_BUDGET;
    }
    let reserved = snap
        .sysctls
        .get("net.ipv4.ip_local_reserved_ports")
        .map(|r| reserved_in(r, lo, hi))
        .unwrap_or(0);
    hi.saturating_sub(lo)
        .saturating_add(1)
        .saturating_sub(reserved)
}

/// Counts ports of a `ip_local_reserved_ports` list (`8080,9000-9100`)
/// that fall inside `lo..=hi`.
fn reserved_in(list: &str, lo: u32, hi: u32) -> u32 {
    list.split(',')
        .filter_map(|part| {
            let part = part.trim();
            let (a, b) = part.split_once('-').unwrap_or((part, part));
            let (a, b) = (a.trim().parse::<u32>().ok()?, b.trim().parse::<u32>().ok()?);
            let (a, b) = (a.max(lo), b.min(hi));
            (a <= b).then(|| (b - a).saturating_add(1))
        })
        .fold(0u32, u32::saturating_add)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Snapshot;

    fn workload() -> Snapshot {
        serde_json::from_str(include_str!("../fixtures/workload.snapshot.json")).unwrap()
    }

    fn rules(r: &Report) -> Vec<(&str, Severity, usize)> {
        r.findings
            .iter()
            .map(|f| (f.rule_id.as_str(), f.severity, f.evidence.count))
            .collect()
    }

    #[test]
    fn splits_close_wait_by_recv_q_pattern() {
        let r = classify(&workload(), &Filter::default(), &Policy::default());
        let mut got = rules(&r);
        got.sort();
        assert_eq!(
            got,
            vec![
                ("close-wait-eof-not-closed", Severity::Warning, 6),
                ("close-wait-never-read", Severity::Warning, 8),
                ("close-wait-unread-data", Severity::Warning, 4),
            ]
        );
        let unread = r
            .findings
            .iter()
            .find(|f| f.rule_id == "close-wait-unread-data")
            .unwrap();
        // 100 bytes plus the FIN's sequence number, on each of 4 sockets.
        assert_eq!(unread.evidence.recv_q_bytes, Some(4 * 101));
    }

    #[test]
    fn thresholds_set_severity_and_time_wait_findings() {
        let policy = Policy {
            close_wait_warn: 5,
            close_wait_crit: 8,
            time_wait_warn: 30,
            ..Policy::default()
        };
        let r = classify(&workload(), &Filter::default(), &policy);
        let got = rules(&r);
        // 18 CLOSE_WAIT on the port in all: every pattern shares that severity.
        assert!(
            got.contains(&("close-wait-never-read", Severity::Critical, 8)),
            "{got:?}"
        );
        assert!(
            got.contains(&("close-wait-eof-not-closed", Severity::Critical, 6)),
            "{got:?}"
        );
        let policy = Policy {
            close_wait_warn: 18,
            close_wait_crit: 19,
            ..policy
        };
        let r2 = classify(&workload(), &Filter::default(), &policy);
        assert!(rules(&r2).contains(&("close-wait-unread-data", Severity::Warning, 4)));
        let policy = Policy {
            close_wait_warn: 19,
            ..policy
        };
        let r3 = classify(&workload(), &Filter::default(), &policy);
        assert!(rules(&r3).contains(&("close-wait-unread-data", Severity::Info, 4)));
        let tw = r
            .findings
            .iter()
            .find(|f| f.rule_id == "time-wait-client-churn")
            .unwrap();
        assert_eq!(tw.evidence.peers, vec!["127.0.0.1:5432".to_string()]);
        assert_eq!(tw.evidence.port_budget, Some(port_budget(&workload())));
    }

    #[test]
    fn inbound_has_local_port_and_no_peer_outbound_has_peer() {
        let r = classify(&workload(), &Filter::default(), &Policy::default());
        for g in &r.groups {
            match g.direction {
                Direction::Inbound => assert!(g.peer.is_none()),
                Direction::Outbound => assert!(g.peer.is_some()),
            }
        }
        let cw: usize = r
            .groups
            .iter()
            .filter(|g| g.state == TcpState::CloseWait)
            .map(|g| g.count)
            .sum();
        assert_eq!(cw, 18);
    }

    #[test]
    fn port_budget_subtracts_reserved_ports_in_range() {
        let mut s = workload();
        s.sysctls
            .insert("net.ipv4.ip_local_port_range".into(), "10000 10999".into());
        s.sysctls.insert(
            "net.ipv4.ip_local_reserved_ports".into(),
            "8080,10100-10199,10990-11010".into(),
        );
        assert_eq!(port_budget(&s), 1000 - 100 - 10);
        s.sysctls.clear();
        assert_eq!(port_budget(&s), DEFAULT_PORT_BUDGET);
    }

    #[test]
    fn hints_never_repeat_the_myths() {
        let policy = Policy {
            close_wait_warn: 1,
            time_wait_warn: 1,
            ..Policy::default()
        };
        let r = classify(&workload(), &Filter::default(), &policy);
        assert!(r.findings.len() >= 4);
        for f in &r.findings {
            let h = f.hint.to_lowercase();
            for myth in [
                "tcp_tw_recycle=1",
                "lower tcp_keepalive",
                "set tcp_fin_timeout",
                "so_reuseaddr",
            ] {
                assert!(
                    !h.contains(myth),
                    "{} hint repeats a myth ({myth}): {}",
                    f.rule_id,
                    f.hint
                );
            }
            if f.evidence.state == Some(TcpState::CloseWait) {
                assert!(h.contains("close()"), "{}", f.hint);
            }
        }
    }
}
