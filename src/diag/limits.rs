//! `cwdiag assert`: pure evaluation of limits over a report.

use super::growth::{self, Series};
use super::report::Report;
use super::types::Group;
use crate::model::{Attribution, Source, TcpState};
use serde::Serialize;

/// Offenders listed per broken limit.
const TOP: usize = 5;

#[derive(Debug, Clone, Copy, Default)]
pub struct Limits {
    pub max_close_wait: Option<usize>,
    pub max_time_wait: Option<usize>,
    pub max_close_wait_growth: Option<usize>,
    pub max_time_wait_growth: Option<usize>,
    /// Socket fds in no table, summed over the selected processes.
    pub max_stale_socket_fds: Option<usize>,
}

impl Limits {
    /// States the limits count: the kernel only needs to send these.
    pub fn states(&self) -> Vec<TcpState> {
        let mut v = Vec::new();
        if self.max_close_wait.is_some() || self.max_close_wait_growth.is_some() {
            v.push(TcpState::CloseWait);
        }
        if self.max_time_wait.is_some() || self.max_time_wait_growth.is_some() {
            v.push(TcpState::TimeWait);
        }
        // Stale fds are looked for in the owners of CLOSE_WAIT sockets.
        if self.max_stale_socket_fds.is_some() && !v.contains(&TcpState::CloseWait) {
            v.push(TcpState::CloseWait);
        }
        v
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    /// The flag: `max-close-wait`, `max-time-wait`, ...
    pub limit: String,
    /// The state counted; null for `max-stale-socket-fds`.
    pub state: Option<TcpState>,
    pub max: usize,
    pub count: usize,
    pub ok: bool,
    /// Biggest groups of that state, when the limit is broken.
    pub offenders: Vec<Group>,
    /// Growth limits: the series that grew too much, with their counts.
    pub growing: Vec<Series>,
    /// `max-stale-socket-fds`: the processes holding them, when broken.
    pub stale: Vec<StaleHolder>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StaleHolder {
    pub pid: u32,
    pub comm: String,
    pub count: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    pub schema_version: u32,
    pub ok: bool,
    pub source: Source,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub netns: Option<crate::model::NetnsInfo>,
    pub checks: Vec<Check>,
    pub attribution: Attribution,
    pub warnings: Vec<String>,
    /// Names of the report's owners (`Process::label`),
    /// for the text; not part of the JSON.
    #[serde(skip)]
    pub names: std::collections::BTreeMap<u32, String>,
}

/// Evaluates `limits` on the last report; growth limits on `series`
/// (empty without sampling).
pub fn evaluate(r: &Report, limits: &Limits, series: &[Series]) -> Outcome {
    let mut checks = Vec::new();
    for (name, state, max) in [
        ("max-close-wait", TcpState::CloseWait, limits.max_close_wait),
        ("max-time-wait", TcpState::TimeWait, limits.max_time_wait),
    ] {
        let Some(max) = max else { continue };
        let count = r.states.get(&state).copied().unwrap_or(0);
        let ok = count <= max;
        let offenders = if ok {
            Vec::new()
        } else {
            r.groups
                .iter()
                .filter(|g| g.state == state)
                .take(TOP)
                .cloned()
                .collect()
        };
        checks.push(Check {
            limit: name.to_string(),
            state: Some(state),
            max,
            count,
            ok,
            offenders,
            growing: Vec::new(),
            stale: Vec::new(),
        });
    }
    for (name, state, max) in [
        (
            "max-close-wait-growth",
            TcpState::CloseWait,
            limits.max_close_wait_growth,
        ),
        (
            "max-time-wait-growth",
            TcpState::TimeWait,
            limits.max_time_wait_growth,
        ),
    ] {
        let Some(max) = max else { continue };
        let over: Vec<Series> = growth::over_limit(series, state, max)
            .into_iter()
            .take(TOP)
            .cloned()
            .collect();
        let count = series
            .iter()
            .filter(|s| s.state == state)
            .map(|s| s.delta.max(0) as usize)
            .max()
            .unwrap_or(0);
        checks.push(Check {
            limit: name.to_string(),
            state: Some(state),
            max,
            count,
            ok: over.is_empty(),
            offenders: Vec::new(),
            growing: over,
            stale: Vec::new(),
        });
    }
    if let Some(max) = limits.max_stale_socket_fds {
        let stale: Vec<StaleHolder> = r
            .processes
            .iter()
            .filter_map(|(&pid, p)| {
                Some(StaleHolder {
                    pid,
                    comm: p.comm.clone(),
                    count: p.stale_socket_fds.filter(|&n| n > 0)?,
                })
            })
            .collect();
        let count = stale.iter().map(|s| s.count).sum();
        checks.push(Check {
            limit: "max-stale-socket-fds".to_string(),
            state: None,
            max,
            count,
            ok: count <= max,
            offenders: Vec::new(),
            growing: Vec::new(),
            stale: if count <= max { Vec::new() } else { stale },
        });
    }
    Outcome {
        schema_version: super::report::REPORT_SCHEMA_VERSION,
        ok: checks.iter().all(|c| c.ok),
        source: r.source.clone(),
        netns: r.netns.clone(),
        checks,
        attribution: r.attribution.clone(),
        warnings: r.warnings.clone(),
        names: r
            .processes
            .iter()
            .map(|(pid, p)| (*pid, p.label()))
            .collect(),
    }
}
