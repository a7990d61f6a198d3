//! `cwdiag assert`: pure evaluation of limits over a report.

use crate::classify::{Group, Report};
use crate::growth::{self, Series};
use crate::model::{Attribution, Source, TcpState};
use serde::{Deserialize, Serialize};
use std::fmt::Write;

/// Offenders listed per broken limit.
const TOP: usize = 5;

#[derive(Debug, Clone, Copy, Default)]
pub struct Limits {
    pub max_close_wait: Option<usize>,
    pub max_time_wait: Option<usize>,
    pub max_close_wait_growth: Option<usize>,
    pub max_time_wait_growth: Option<usize>,
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
        v
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Check {
    /// The flag: `max-close-wait`, `max-time-wait`.
    pub limit: String,
    pub state: TcpState,
    pub max: usize,
    pub count: usize,
    pub ok: bool,
    /// Biggest groups of that state, when the limit is broken.
    pub offenders: Vec<Group>,
    /// Growth limits: the series that grew too much, with their counts.
    pub growing: Vec<Series>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outcome {
    pub schema_version: u32,
    pub ok: bool,
    pub source: Source,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub netns: Option<crate::model::NetnsInfo>,
    pub checks: Vec<Check>,
    pub attribution: Attribution,
    pub warnings: Vec<String>,
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
            state,
            max,
            count,
            ok,
            offenders,
            growing: Vec::new(),
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
            state,
            max,
            count,
            ok: over.is_empty(),
            offenders: Vec::new(),
            growing: over,
        });
    }
    Outcome {
        schema_version: crate::model::SCHEMA_VERSION,
        ok: checks.iter().all(|c| c.ok),
        source: r.source.clone(),
        netns: r.netns.clone(),
        checks,
        attribution: r.attribution.clone(),
        warnings: r.warnings.clone(),
    }
}

/// Plain-text result: one line per limit, offenders under broken ones.
pub fn render_text(o: &Outcome) -> String {
    use crate::report::escape::Escaped;
    let mut out = String::new();
    for c in &o.checks {
        let verdict = if c.ok { "ok  " } else { "FAIL" };
        let op = if c.ok { "<=" } else { ">" };
        let what = if c.limit.ends_with("-growth") {
            format!("{} growth", c.state)
        } else {
            c.state.to_string()
        };
        let _ = writeln!(
            out,
            "{verdict} {}: {} {what} {op} {}",
            c.limit, c.count, c.max
        );
        for s in &c.growing {
            let who = match (s.pid, &s.comm) {
                (Some(p), Some(c)) => format!("pid {p} ({})", Escaped(c)),
                (Some(p), None) => format!("pid {p}"),
                _ => "no owner".to_string(),
            };
            let series = s
                .counts
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" -> ");
            let _ = writeln!(out, "     {:>+6}  {who} port {}: {series}", s.delta, s.port);
        }
        for g in &c.offenders {
            let who = match (g.pid, &g.comm) {
                (Some(p), Some(c)) => format!("pid {p} ({})", Escaped(c)),
                (Some(p), None) => format!("pid {p}"),
                _ => "no owner".to_string(),
            };
            let place = match &g.peer {
                Some(p) => format!("to {p}"),
                None => format!("on port {}", g.port),
            };
            let _ = writeln!(out, "     {:>6}  {who} {place}", g.count);
        }
    }
    for w in &o.warnings {
        let _ = writeln!(out, "warning: {}", Escaped(w));
    }
    out
}
