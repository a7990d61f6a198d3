//! The report `scan` prints: groups, findings and what the collector
//! saw. Built by [`super::classify`].

use super::rules::Finding;
use super::types::{Group, Series};
use crate::model::{Attribution, NetnsInfo, Process, Socket, Source, TcpState};
use serde::Serialize;
use std::collections::BTreeMap;

/// Version of the report documents (`scan --json`, `assert --json`,
/// `watch --json`). 2: typed evidence per rule (see the README). The
/// snapshot format keeps its own version (`model::SCHEMA_VERSION`).
pub const REPORT_SCHEMA_VERSION: u32 = 3;

/// Everything `scan` reports. Serialised as-is for `--json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub schema_version: u32,
    pub taken_at_ms: u64,
    pub source: Source,
    /// The network namespace, when one was chosen (--netns, --all-netns).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub netns: Option<NetnsInfo>,
    /// Whether the scanned namespace is the host's (see the snapshot's
    /// field): the counters below count since boot when true, since the
    /// namespace was created when false.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initial_netns: Option<bool>,
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
    pub growth: Option<Vec<Series>>,
}
