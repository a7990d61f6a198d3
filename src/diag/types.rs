//! The types the rules read and the renderers show: thresholds, groups,
//! directions, severities. A leaf of the diagnosis layer: it imports
//! only the snapshot model, so nothing cycles through it.

use crate::model::TcpState;
use serde::Serialize;

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
    /// The largest unread message (the FIN's byte excluded) that may be
    /// a server's goodbye: the last message a server sends before its
    /// FIN is short (PostgreSQL's ErrorResponse 57P05 and MySQL's ERR
    /// 4031 are about a hundred bytes, PgBouncer's 41, a TLS close_notify
    /// alert a few dozen, an HTTP/2 GOAWAY a frame): 4 KiB holds any of
    /// them with room to spare, and anything larger is a response or
    /// request somebody stopped reading, not a goodbye.
    pub goodbye_max_bytes: u32,
    /// A goodbye ends an idle connection: the unread data came at least
    /// this long after the connection's last request, and nearer to the
    /// FIN than to that request. A response comes within milliseconds of
    /// its request; idle timeouts are a second or more. The comparison,
    /// not a fixed window before the FIN, decides, so that the timing of
    /// one FIN does not change the verdict.
    pub goodbye_min_idle_ms: u32,
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
    /// Share of a listener's backlog filled by children nobody accepted
    /// for a warning (a full queue, or clients that gave up, is critical).
    pub accept_queue_ratio_warn: f64,
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
            goodbye_max_bytes: 4096,
            goodbye_min_idle_ms: 500,
            time_wait_warn: 1000,
            port_ratio_warn: 0.5,
            port_ratio_crit: 0.8,
            fd_ratio_warn: 0.8,
            fd_ratio_crit: 0.95,
            tw_buckets_ratio_warn: 0.9,
            orphans_ratio_warn: 0.8,
            accept_queue_ratio_warn: 0.5,
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
    /// Kubernetes pod UID of the owner, when its cgroup names one.
    pub pod_uid: Option<String>,
    /// TIME_WAIT only: sockets by seconds left, [0,10) .. [50,60].
    pub time_wait_left_s: Option<[usize; 6]>,
    /// TIME_WAIT only: the closes the group's sockets show, and over
    /// which window (see `closes.rs`).
    pub closes: Option<Closes>,
}

/// How a count of closes was measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CloseSource {
    /// The TIME_WAIT remaining times of one snapshot.
    TimeWaitTimers,
    /// New TIME_WAIT sockets counted between consecutive samples
    /// (`scan --samples`, `watch`).
    Samples,
}

/// Closes counted within a named window ending at the (last) snapshot:
/// the one close figure every finding and group carries.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Closes {
    /// Connections that entered TIME_WAIT within the window.
    pub count: usize,
    /// The window, in seconds before the snapshot: from the oldest close
    /// the timers show (rounded up to a second), or the time the samples
    /// spanned.
    pub window_s: f64,
    pub measured_by: CloseSource,
    /// Samples taken (1 for a snapshot).
    pub samples: usize,
    /// Closes per second over the window, only when measured across
    /// samples with closes in every interval; null otherwise (one
    /// snapshot, or a burst that did not last).
    pub sustained_per_s: Option<f64>,
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

/// One group followed across samples: (state, pid, direction, port).
/// Outbound groups are merged across peers, so a pool leaking towards
/// several servers on one port is one series.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Series {
    pub state: TcpState,
    pub pid: Option<u32>,
    pub comm: Option<String>,
    pub direction: Direction,
    pub port: u16,
    /// Count at each sample, oldest first (0 where the group was absent).
    pub counts: Vec<usize>,
    /// Last count minus first.
    pub delta: i64,
    /// delta per minute over the elapsed time.
    pub rate_per_min: f64,
    /// Rose at every sample (strictly), so "rose at every sample" is
    /// exactly what the numbers show.
    pub rising: bool,
    /// Oldest CLOSE_WAIT age in the last sample (ms), when known.
    pub oldest_age_ms: Option<u32>,
}
