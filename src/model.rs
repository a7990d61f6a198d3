//! The OS-independent snapshot of a host's TCP tables.
//!
//! Collectors (live netlink, replayed dumps, `/proc/net/tcp`) produce a
//! [`Snapshot`]; everything after that (classification, hints, rendering)
//! is a pure function of it. A snapshot serialises to JSON and reads back
//! unchanged, which is what `--from snapshot.json` and the fixtures rely on.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

/// Version of the snapshot and report JSON documents.
pub const SCHEMA_VERSION: u32 = 1;

/// The eleven TCP states of `include/net/tcp_states.h`, numbered as the
/// kernel numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TcpState {
    #[serde(rename = "ESTABLISHED")]
    Established = 1,
    #[serde(rename = "SYN_SENT")]
    SynSent = 2,
    #[serde(rename = "SYN_RECV")]
    SynRecv = 3,
    #[serde(rename = "FIN_WAIT1")]
    FinWait1 = 4,
    #[serde(rename = "FIN_WAIT2")]
    FinWait2 = 5,
    #[serde(rename = "TIME_WAIT")]
    TimeWait = 6,
    #[serde(rename = "CLOSE")]
    Close = 7,
    #[serde(rename = "CLOSE_WAIT")]
    CloseWait = 8,
    #[serde(rename = "LAST_ACK")]
    LastAck = 9,
    #[serde(rename = "LISTEN")]
    Listen = 10,
    #[serde(rename = "CLOSING")]
    Closing = 11,
}

impl TcpState {
    pub const ALL: [TcpState; 11] = [
        TcpState::Established,
        TcpState::SynSent,
        TcpState::SynRecv,
        TcpState::FinWait1,
        TcpState::FinWait2,
        TcpState::TimeWait,
        TcpState::Close,
        TcpState::CloseWait,
        TcpState::LastAck,
        TcpState::Listen,
        TcpState::Closing,
    ];

    /// The kernel's number for this state (`TCP_ESTABLISHED` = 1, ...).
    pub fn number(self) -> u8 {
        self as u8
    }

    pub fn from_number(n: u8) -> Option<TcpState> {
        TcpState::ALL.get(usize::from(n).checked_sub(1)?).copied()
    }

    /// The kernel's spelling, used as JSON key: `CLOSE_WAIT`.
    pub fn name(self) -> &'static str {
        match self {
            TcpState::Established => "ESTABLISHED",
            TcpState::SynSent => "SYN_SENT",
            TcpState::SynRecv => "SYN_RECV",
            TcpState::FinWait1 => "FIN_WAIT1",
            TcpState::FinWait2 => "FIN_WAIT2",
            TcpState::TimeWait => "TIME_WAIT",
            TcpState::Close => "CLOSE",
            TcpState::CloseWait => "CLOSE_WAIT",
            TcpState::LastAck => "LAST_ACK",
            TcpState::Listen => "LISTEN",
            TcpState::Closing => "CLOSING",
        }
    }

    /// Bit of this state in an `inet_diag_req_v2.idiag_states` mask.
    pub fn mask_bit(self) -> u32 {
        1 << self.number()
    }
}

impl fmt::Display for TcpState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for TcpState {
    type Err = String;

    /// Accepts the kernel's (`CLOSE_WAIT`), ss's (`close-wait`, `CLOSE-WAIT`)
    /// and netstat's spellings, plus `estab`/`syn-recv`-style short names.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let norm: String = s
            .trim()
            .chars()
            .filter(|c| !matches!(c, '-' | '_' | ' '))
            .map(|c| c.to_ascii_lowercase())
            .collect();
        let state = match norm.as_str() {
            "established" | "estab" => TcpState::Established,
            "synsent" => TcpState::SynSent,
            "synrecv" | "synreceived" => TcpState::SynRecv,
            "finwait1" => TcpState::FinWait1,
            "finwait2" => TcpState::FinWait2,
            "timewait" | "timew" => TcpState::TimeWait,
            "close" | "closed" | "unconn" | "unconnected" => TcpState::Close,
            "closewait" => TcpState::CloseWait,
            "lastack" => TcpState::LastAck,
            "listen" | "listening" => TcpState::Listen,
            "closing" => TcpState::Closing,
            _ => {
                return Err(format!(
                    "unknown TCP state '{s}' (expected e.g. close-wait, CLOSE_WAIT, time-wait, established, listen)"
                ));
            }
        };
        Ok(state)
    }
}

/// The timer a socket has pending, as `idiag_timer` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Timer {
    Off,
    /// Retransmit, TLP or RACK timer (1).
    Retransmit,
    /// `sk_timer`: keepalive, or the orphaned FIN_WAIT2 timer (2).
    Keepalive,
    /// TIME_WAIT expiry (3).
    TimeWait,
    /// Zero-window probe (4).
    Probe,
}

impl Timer {
    pub fn from_number(n: u8) -> Timer {
        match n {
            1 => Timer::Retransmit,
            2 => Timer::Keepalive,
            3 => Timer::TimeWait,
            4 => Timer::Probe,
            _ => Timer::Off,
        }
    }
}

/// A few `tcp_info` fields, in milliseconds ago, for full sockets only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TcpAges {
    pub last_data_recv_ms: u32,
    pub last_ack_recv_ms: u32,
    pub last_data_sent_ms: u32,
}

/// An address and port, stored in 20 bytes instead of `SocketAddr`'s 32:
/// a busy host has hundreds of thousands of these. Serialised as
/// `ip:port` (`[v6]:port`), exactly like `SocketAddr`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint {
    addr: [u8; 16],
    port: u16,
    v6: bool,
}

impl Endpoint {
    pub fn ip(&self) -> std::net::IpAddr {
        if self.v6 {
            std::net::IpAddr::V6(std::net::Ipv6Addr::from(self.addr))
        } else {
            std::net::IpAddr::V4(std::net::Ipv4Addr::new(
                self.addr[0],
                self.addr[1],
                self.addr[2],
                self.addr[3],
            ))
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn set_port(&mut self, port: u16) {
        self.port = port;
    }

    pub fn is_ipv6(&self) -> bool {
        self.v6
    }

    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip(), self.port)
    }
}

impl From<SocketAddr> for Endpoint {
    fn from(sa: SocketAddr) -> Endpoint {
        let mut addr = [0u8; 16];
        let v6 = match sa.ip() {
            std::net::IpAddr::V4(ip) => {
                addr[..4].copy_from_slice(&ip.octets());
                false
            }
            std::net::IpAddr::V6(ip) => {
                addr = ip.octets();
                true
            }
        };
        Endpoint {
            addr,
            port: sa.port(),
            v6,
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.socket_addr().fmt(f)
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.socket_addr().fmt(f)
    }
}

impl Serialize for Endpoint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Endpoint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let sa = SocketAddr::deserialize(d)?;
        Ok(Endpoint::from(sa))
    }
}

/// One TCP socket as sock_diag (or /proc/net/tcp) reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Socket {
    pub state: TcpState,
    pub local: Endpoint,
    pub peer: Endpoint,
    pub timer: Timer,
    /// Milliseconds until the timer fires (remaining TIME_WAIT time for
    /// TIME_WAIT sockets).
    pub expires_ms: u32,
    pub retrans: u8,
    pub recv_q: u32,
    pub send_q: u32,
    pub uid: u32,
    /// 0 when no process holds a file descriptor for the socket (TIME_WAIT,
    /// SYN_RECV, orphans, children the application has not accepted yet).
    pub inode: u32,
    pub cookie: u64,
    /// Bound interface index (`idiag_if`), 0 when unbound.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub iface: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_info: Option<TcpAges>,
    /// Pid of the process found holding the socket's inode, if looked up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// File descriptor number in that process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fd: Option<u32>,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

fn is_false(v: &bool) -> bool {
    !*v
}

/// Bytes of `/proc/PID/cmdline` read at most.
pub const CMDLINE_MAX: usize = 4096;

impl Socket {
    pub fn is_ipv6(&self) -> bool {
        self.local.is_ipv6()
    }
}

/// A process that holds at least one reported socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Process {
    /// The kernel's command name (`/proc/PID/comm`): the executable's
    /// name cut to 15 bytes, or what the process set with `PR_SET_NAME`.
    pub comm: String,
    /// Command line (`/proc/PID/cmdline`), one string per argument; at
    /// most [`CMDLINE_MAX`] bytes are read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<Vec<String>>,
    /// True when the command line was longer than [`CMDLINE_MAX`] bytes.
    #[serde(default, skip_serializing_if = "is_false")]
    pub cmdline_truncated: bool,
    /// Executable (`/proc/PID/exe`); `None` for kernel threads and when
    /// it cannot be read (another user's process without root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
    /// Effective uid, and its name in the user database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Parent pid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ppid: Option<u32>,
    /// Process start, milliseconds since the Unix epoch (from the boot
    /// time and the start tick in `/proc/PID/stat`: one-second precision).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at_ms: Option<u64>,
    /// Open file descriptors (only for owners of flagged sockets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fd_count: Option<usize>,
    /// RLIMIT_NOFILE soft limit; `None` when unlimited or unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nofile_soft: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nofile_hard: Option<u64>,
    /// cgroup path (`/proc/PID/cgroup`, the unified hierarchy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    /// Container or unit recognised in the cgroup path (`docker:0123abcd`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// Kubernetes pod UID recognised in the cgroup path (kubepods).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    /// Socket fds whose inode is in no socket table of the namespace:
    /// sockets the kernel already closed that the app never close()d.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale_socket_fds: Option<usize>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stale_socket_inodes: Vec<u64>,
    /// For holders of stale socket fds: the outbound connections of the
    /// tables it holds, counted by peer, busiest first (at most 5).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peer_connections: Vec<PeerCount>,
    /// Runtime recognised from the executable itself (`Go`, from its
    /// build-ID note), for owners of CLOSE_WAIT sockets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    /// Client libraries the process shows (mapped shared objects, open or
    /// class-path jars, a Go binary's module list, its command line), for
    /// owners of CLOSE_WAIT sockets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub libraries: Vec<Library>,
    /// What its threads were doing, sampled a few times, for processes a
    /// finding may call stuck (not reading, not accepting).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<ThreadSamples>,
}

/// A client library seen in a process, and where it was seen.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Library {
    /// The library's own name: `aiohttp`, `HikariCP`, `pgx`, `undici`...
    pub name: String,
    /// Its version, when the file or module list states it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Where: `maps` (a mapped shared object), `fd` (an open file),
    /// `classpath`, `cmdline` or `go-buildinfo`.
    pub seen_in: String,
    /// The path (or module path) it was recognised in.
    pub path: String,
}

/// A client library cwdiag has advice for (or recognises as a driver).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ClientLib {
    // Python
    Requests,
    Aiohttp,
    Httpx,
    SqlAlchemy,
    Psycopg2,
    Psycopg3,
    PyMySql,
    MysqlClient,
    RedisPy,
    Hiredis,
    Asyncpg,
    // C client libraries any runtime may map
    Libpq,
    LibMysql,
    // JVM
    HikariCp,
    ApacheHttpClient4,
    ApacheHttpClient5,
    OkHttp,
    Jedis,
    Lettuce,
    // Go modules
    Pgx,
    LibPq,
    GoMysql,
    GoRedis,
    /// The Go toolchain the binary was built with: its standard library's
    /// net/http (database/sql advice goes with the driver seen).
    GoStd,
    // Node.js packages
    Undici,
    NodePg,
    Ioredis,
    NodeRedis,
    Axios,
}

impl ClientLib {
    pub const ALL: [ClientLib; 29] = {
        use ClientLib::*;
        [
            Requests,
            Aiohttp,
            Httpx,
            SqlAlchemy,
            Psycopg2,
            Psycopg3,
            PyMySql,
            MysqlClient,
            RedisPy,
            Hiredis,
            Asyncpg,
            Libpq,
            LibMysql,
            HikariCp,
            ApacheHttpClient4,
            ApacheHttpClient5,
            OkHttp,
            Jedis,
            Lettuce,
            Pgx,
            LibPq,
            GoMysql,
            GoRedis,
            GoStd,
            Undici,
            NodePg,
            Ioredis,
            NodeRedis,
            Axios,
        ]
    };

    /// The name the evidence carries.
    pub fn name(self) -> &'static str {
        use ClientLib::*;
        match self {
            Requests => "requests/urllib3",
            Aiohttp => "aiohttp",
            Httpx => "httpx",
            SqlAlchemy => "SQLAlchemy",
            Psycopg2 => "psycopg2",
            Psycopg3 => "psycopg",
            PyMySql => "PyMySQL",
            MysqlClient => "mysqlclient",
            RedisPy => "redis-py",
            Hiredis => "hiredis",
            Asyncpg => "asyncpg",
            Libpq => "libpq",
            LibMysql => "libmysqlclient",
            HikariCp => "HikariCP",
            ApacheHttpClient4 => "Apache HttpClient 4",
            ApacheHttpClient5 => "Apache HttpClient 5",
            OkHttp => "OkHttp",
            Jedis => "Jedis",
            Lettuce => "Lettuce",
            Pgx => "pgx",
            LibPq => "lib/pq",
            GoMysql => "go-sql-driver/mysql",
            GoRedis => "go-redis",
            GoStd => "Go",
            Undici => "undici",
            NodePg => "pg",
            Ioredis => "ioredis",
            NodeRedis => "node-redis",
            Axios => "axios",
        }
    }

    pub fn parse(name: &str) -> Option<ClientLib> {
        ClientLib::ALL.into_iter().find(|l| l.name() == name)
    }
}

/// Threads of one process, sampled `samples` times `interval_ms` apart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThreadSamples {
    pub samples: u32,
    pub interval_ms: u32,
    /// Threads the process had; only the first `threads.len()` were read.
    pub threads_total: usize,
    pub threads: Vec<ThreadSample>,
}

/// One thread: what it was seen doing, each distinct observation once
/// with the number of samples that showed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThreadSample {
    pub tid: u32,
    pub comm: String,
    pub seen: Vec<ThreadObservation>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThreadObservation {
    /// Samples that showed this.
    pub count: u32,
    /// Scheduler state (`/proc/PID/task/TID/stat` field 3): `R`, `S`, `D`...
    pub state: String,
    /// Kernel function a sleeping thread waits in (`wchan`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wchan: Option<String>,
    /// The system call it is in (`recvfrom`, `epoll_wait`, `futex`...),
    /// `running` when on CPU in user space.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syscall: Option<String>,
    /// The fd that system call works on (its first argument), when it
    /// takes one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fd: Option<u32>,
    /// That fd's socket inode, when it is a socket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket_inode: Option<u32>,
}

impl Process {
    pub fn named(comm: impl Into<String>) -> Process {
        Process {
            comm: comm.into(),
            cmdline: None,
            cmdline_truncated: false,
            exe: None,
            uid: None,
            user: None,
            ppid: None,
            started_at_ms: None,
            fd_count: None,
            nofile_soft: None,
            nofile_hard: None,
            cgroup: None,
            container: None,
            stale_socket_fds: None,
            stale_socket_inodes: Vec::new(),
            runtime: None,
            pod_uid: None,
            libraries: Vec::new(),
            threads: None,
            peer_connections: Vec::new(),
        }
    }
}

/// Connections to one peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerCount {
    pub peer: Endpoint,
    pub count: usize,
}

/// How complete the socket -> process mapping is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attribution {
    /// False when some wanted socket was not found and some process could
    /// not be inspected: an owner may be hidden from us.
    pub complete: bool,
    /// Sockets with an inode that were looked up.
    pub wanted_sockets: usize,
    /// Of those, how many were found in some process's fd table.
    pub found_sockets: usize,
    /// Processes whose `/proc/PID/fd` was walked.
    pub scanned_processes: usize,
    /// Processes whose fd table could not be read (permission denied).
    pub unreadable_processes: usize,
    /// Processes that exited while we were reading them.
    pub vanished_processes: usize,
    /// Pids that could not be read (first few), for the report.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unreadable_pids: Vec<u32>,
    /// The collector ran as root (so unreadable processes are ones whose
    /// fds are closed even to root, not a missing privilege).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub as_root: bool,
}

/// Where the snapshot came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceKind {
    /// Live `SOCK_DIAG_BY_FAMILY` dump.
    Netlink,
    /// Live `/proc/net/tcp` and `/proc/net/tcp6`.
    Proc,
    /// A netlink dump file (`ss -D`, `cwdiag scan --record`).
    Dump,
    /// A cwdiag JSON snapshot.
    Snapshot,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    pub kind: SourceKind,
    /// File name for replays, `None` for live sources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// The network namespace a snapshot was taken in, when chosen explicitly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetnsInfo {
    /// `/run/netns` name, `pid:PID(comm)`, or `host`.
    pub name: String,
    /// Namespace inode (as in `net:[4026531840]`).
    pub inode: u64,
    /// Kubernetes pod UID and container of the process the namespace was
    /// found through (`--all-netns`), when its cgroup names them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
}

/// Everything a report is computed from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    pub schema_version: u32,
    /// Milliseconds since the Unix epoch when collection started.
    pub taken_at_ms: u64,
    pub source: Source,
    /// Set when collected with --netns, --netns-pid or --all-netns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<NetnsInfo>,
    /// True when the scanned network namespace is pid 1's (the host's),
    /// false when it is another one: the kernel's TcpExt counters count
    /// from boot in the first and from the namespace's creation in the
    /// others (`struct net` holds them, net/ipv4/proc.c). `None` when
    /// unknown (replayed dumps, /proc/1 unreadable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_netns: Option<bool>,
    pub sockets: Vec<Socket>,
    /// Owners of attributed sockets, by pid.
    pub processes: BTreeMap<u32, Process>,
    pub attribution: Attribution,
    /// Listener inode -> the other processes holding that listening
    /// socket (a pre-fork server's workers), for listeners with children
    /// nobody accepted and listeners that CLOSE_WAIT sockets point at.
    /// The socket's own `pid` is the first holder found.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub listener_holders: BTreeMap<u32, Vec<u32>>,
    /// `--all-netns`: listeners of the host's other network namespaces
    /// that serve peers of this namespace's CLOSE_WAIT and TIME_WAIT
    /// sockets (the peer's address is one of that namespace's own).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peer_listeners: Vec<PeerListener>,
    /// TCP sysctls of the scanned namespace, dotted names.
    #[serde(default)]
    pub sysctls: BTreeMap<String, String>,
    /// Kernel counters: `TcpExt.ListenOverflows`, `Tcp.ActiveOpens`,
    /// `sockstat.TCP.tw`, ...
    #[serde(default)]
    pub counters: BTreeMap<String, u64>,
    /// Things the collector could not do, in one line each.
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// A listener in another network namespace of the host, serving `peer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerListener {
    /// The peer address of this namespace's sockets it serves.
    pub peer: Endpoint,
    /// Its namespace's name (as in `netns.name`).
    pub netns: String,
    /// The listening socket's address.
    pub listener: Endpoint,
    /// Every process holding it, first the owner found.
    pub holders: Vec<u32>,
    /// Those processes.
    pub processes: BTreeMap<u32, Process>,
}

/// IPv4-mapped IPv6 addresses as IPv4.
pub fn canonical_ip(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
        v4 => v4,
    }
}

impl Snapshot {
    /// The listening sockets of this namespace that serve `peer`, when
    /// the peer is a local address: one bound to exactly that address,
    /// else wildcard ones on that port. `None` when the peer is not
    /// local or nothing here listens on its port.
    pub fn local_listeners(&self, peer: Endpoint) -> Option<Vec<&Socket>> {
        self.listeners_for(peer, |ip| self.is_local(ip))
    }

    /// The listening sockets that serve `peer`, when `ours` says the
    /// peer's address belongs to this namespace (exact binds always do).
    pub fn listeners_for(
        &self,
        peer: Endpoint,
        ours: impl Fn(std::net::IpAddr) -> bool,
    ) -> Option<Vec<&Socket>> {
        let ip = canonical_ip(peer.ip());
        let on_port: Vec<&Socket> = self
            .sockets
            .iter()
            .filter(|s| s.state == TcpState::Listen && s.local.port() == peer.port())
            .collect();
        if on_port.is_empty() {
            return None;
        }
        let exact: Vec<&Socket> = on_port
            .iter()
            .copied()
            .filter(|s| canonical_ip(s.local.ip()) == ip)
            .collect();
        if !exact.is_empty() {
            return Some(exact);
        }
        let wildcard: Vec<&Socket> = on_port
            .into_iter()
            .filter(|s| {
                s.local.ip().is_unspecified()
                    // An IPv6 wildcard takes IPv4 too unless IPV6_V6ONLY.
                    && (s.local.is_ipv6() || ip.is_ipv4())
            })
            .collect();
        (!wildcard.is_empty() && ours(ip)).then_some(wildcard)
    }

    /// Is `ip` an address of this namespace? Loopback always is; any
    /// other is when some socket of the snapshot is bound to it.
    fn is_local(&self, ip: std::net::IpAddr) -> bool {
        ip.is_loopback()
            || self
                .sockets
                .iter()
                .any(|s| canonical_ip(s.local.ip()) == ip && !s.local.ip().is_unspecified())
    }
}

/// States whose sockets `scan` maps to processes without `--sockets`:
/// everything but ESTABLISHED, which is the bulk of a busy host.
pub fn attributed_by_default(state: TcpState) -> bool {
    state != TcpState::Established
}

#[cfg(test)]
mod size_tests {
    #[test]
    fn socket_record_stays_small() {
        // 400k sockets must fit the 64 MB RSS budget with room to spare.
        eprintln!(
            "size_of::<Socket>() = {}",
            std::mem::size_of::<super::Socket>()
        );
        assert!(std::mem::size_of::<super::Socket>() <= 136);
    }
}
