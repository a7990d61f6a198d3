//! The report types every rule, renderer and command shares. A leaf
//! module: it imports nothing of the diagnosis layer, so nothing cycles.

use super::rules::{Evidence, RuleId};
use crate::model::{Attribution, NetnsInfo, Process, Socket, Source, TcpState};
use serde::Serialize;
use std::collections::BTreeMap;

/// Version of the report documents (`scan --json`, `assert --json`,
/// `watch --json`). 2: typed evidence per rule (see the README). The
/// snapshot format keeps its own version (`model::SCHEMA_VERSION`).
pub const REPORT_SCHEMA_VERSION: u32 = 2;

/// How long a socket stays in TIME_WAIT on Linux: `TCP_TIMEWAIT_LEN`
/// (`include/net/tcp.h`), fixed at 60 s; no sysctl changes it.
pub const TIME_WAIT_LEN_S: u32 = 60;

/// Ephemeral ports of the default `ip_local_port_range` (32768-60999),
/// used when the snapshot does not carry the range.
pub const DEFAULT_PORT_BUDGET: u32 = 28_232;

/// Every threshold a rule applies. Defaults are documented in the README
/// (section "Rules and thresholds") and overridable where a flag says so.
#[derive(Debug, Clone)]
pub struct Policy {
    /// CLOSE_WAIT sockets per process and port for a warning.
    pub close_wait_warn: usize,
    /// ... and for a critical finding.
    pub close_wait_crit: usize,
    /// Outbound CLOSE_WAIT sockets never read (Recv-Q 1) per process and
    /// destination port that a connection pool validating only at
    /// checkout may hold in normal operation: up to this many are
    /// reported as INFO. Above it the count is beyond any usual pool.
    pub pool_bound: usize,
    /// A CLOSE_WAIT socket whose connection carried no data for at least
    /// this long before the peer's FIN was idle when it was closed.
    pub idle_before_close_ms: u32,
    /// Data that arrived at most this long before the FIN came with it:
    /// the peer's goodbye message (e.g. an error sent before closing).
    pub goodbye_window_ms: u32,
    /// TIME_WAIT sockets per port or destination for a finding.
    pub time_wait_warn: usize,
    /// Share of the ephemeral port range held towards one destination
    /// for a warning, and for a critical finding.
    pub port_ratio_warn: f64,
    pub port_ratio_crit: f64,
    /// Share of RLIMIT_NOFILE (soft) a process may use before a warning,
    /// and a critical finding.
    pub fd_ratio_warn: f64,
    pub fd_ratio_crit: f64,
    /// Share of tcp_max_tw_buckets in use for a warning.
    pub tw_buckets_ratio_warn: f64,
    /// Share of tcp_max_orphans in use for a warning.
    pub orphans_ratio_warn: f64,
    /// Include per-socket records in the report.
    pub sockets: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            close_wait_warn: 10,
            close_wait_crit: 100,
            pool_bound: 100,
            idle_before_close_ms: 1000,
            goodbye_window_ms: 1000,
            time_wait_warn: 1000,
            port_ratio_warn: 0.5,
            port_ratio_crit: 0.8,
            fd_ratio_warn: 0.8,
            fd_ratio_crit: 0.95,
            tw_buckets_ratio_warn: 0.9,
            orphans_ratio_warn: 0.8,
            sockets: false,
        }
    }
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// The local port is one this host listens on.
    Inbound,
    /// Anything else: the local port is ephemeral, the peer is the server.
    Outbound,
}

/// Whether, and how, a group's sockets were matched to a process.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize,
)]
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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RecvQSplit {
    /// Read the FIN (EOF) and did not close.
    pub zero: usize,
    /// Never read after the peer's FIN.
    pub one: usize,
    /// Data and FIN unread.
    pub more: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
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
    /// TIME_WAIT only: closes per second over the span the remaining
    /// times cover (the recent rate, not count / 60).
    pub close_rate_per_s: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
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

/// One claim about the host, with the numbers it rests on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    pub rule_id: RuleId,
    pub severity: Severity,
    pub summary: String,
    /// Typed per rule: the README's JSON section lists each rule's fields.
    pub evidence: Evidence,
    pub hint: String,
}

/// Everything `scan` reports. Serialised as-is for `--json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub schema_version: u32,
    pub taken_at_ms: u64,
    pub source: Source,
    /// The network namespace, when one was chosen (--netns, --all-netns).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub netns: Option<NetnsInfo>,
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
    pub processes: BTreeMap<u32, Process>,
    pub warnings: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sockets: Option<Vec<Socket>>,
    /// With `scan --samples N`: CLOSE_WAIT/TIME_WAIT groups over the samples.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub growth: Option<Vec<super::growth::Series>>,
}
