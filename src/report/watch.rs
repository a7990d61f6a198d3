//! `cwdiag watch` frames: the live table per process and port, and the
//! NDJSON line per sample. Pure.

use super::Style;
use crate::diag::growth::Series;
use crate::diag::{Direction, Finding, Report};
use crate::model::TcpState;
use crate::units::{age, duration};
use anstyle::{AnsiColor, Style as Ansi};
use comfy_table::{Cell, CellAlignment};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;

/// Samples the TREND sparkline shows (the most recent).
const TREND_SAMPLES: usize = 8;

pub fn render(
    n: u32,
    interval: std::time::Duration,
    r: &Report,
    series: &[Series],
    growth: &[Finding],
    st: &Style,
) -> String {
    let mut out = format!(
        "cwdiag watch: sample {n}, every {}; Ctrl-C to stop\n",
        duration(interval.as_millis() as u64)
    );
    let summary: Vec<String> = r
        .states
        .iter()
        .filter(|(s, c)| **c > 0 || matches!(s, TcpState::CloseWait | TcpState::TimeWait))
        .map(|(s, c)| format!("{} {c}", s.name()))
        .collect();
    let _ = writeln!(out, "{}", super::wrap(&summary.join("  "), st.width, ""));
    for w in &r.warnings {
        let _ = writeln!(
            out,
            "{}",
            super::wrap(
                &format!("warning: {}", crate::procname::printable(w)),
                st.width,
                "  "
            )
        );
    }
    let mut t = super::table::table(
        st.width,
        Some(&[
            "STATE", "PID", "NAME", "WHERE", "NOW", "DELTA", "/MIN", "TREND", "OLDEST",
        ]),
    );
    let shown = if st.top == 0 {
        series.len()
    } else {
        series.len().min(st.top)
    };
    for s in &series[..shown] {
        let now = s.counts.last().copied().unwrap_or(0);
        if now == 0 && s.delta == 0 {
            continue;
        }
        let mark = if s.rising { " ▲" } else { "" };
        let delta = format!("{:+}{mark}", s.delta);
        let delta_cell = if s.rising && st.color {
            let style = Ansi::new().fg_color(Some(AnsiColor::Red.into())).bold();
            Cell::new(format!("{style}{delta}{style:#}"))
        } else {
            Cell::new(delta)
        };
        let place = match s.direction {
            Direction::Inbound => format!("in :{}", s.port),
            Direction::Outbound => format!("out :{}", s.port),
        };
        t.add_row(vec![
            Cell::new(s.state.name()),
            Cell::new(s.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into())),
            // The owner's label (full name; what a runtime runs): the
            // live view is narrow, the scan table has the command line.
            Cell::new(
                s.pid
                    .and_then(|p| r.processes.get(&p))
                    .map(|p| p.label())
                    .or_else(|| s.comm.as_deref().map(crate::procname::printable))
                    .unwrap_or_default(),
            ),
            Cell::new(place),
            Cell::new(now).set_alignment(CellAlignment::Right),
            delta_cell.set_alignment(CellAlignment::Right),
            Cell::new(format!("{:.1}", s.rate_per_min)).set_alignment(CellAlignment::Right),
            Cell::new(super::sparkline(&s.counts, TREND_SAMPLES)),
            Cell::new(s.oldest_age_ms.map(age).unwrap_or_else(|| "-".into())),
        ]);
    }
    let _ = writeln!(out, "{t}");
    if series.len() > shown {
        let _ = writeln!(
            out,
            "... {} more rows not shown (use --top 0 to show all)",
            series.len() - shown
        );
    }
    for f in growth {
        let line = format!(
            "[{}] {}: {}",
            f.severity.label(),
            f.rule_id,
            crate::procname::printable(&f.summary)
        );
        let _ = writeln!(out, "{}", super::wrap(&line, st.width, "  "));
    }
    out
}

#[derive(Serialize)]
struct Line<'a> {
    schema_version: u32,
    sample: u32,
    taken_at_ms: u64,
    states: &'a BTreeMap<TcpState, usize>,
    series: &'a [Series],
    findings: Vec<&'a Finding>,
    attribution: &'a crate::model::Attribution,
    warnings: &'a [String],
}

/// One compact JSON object and a newline.
pub fn ndjson_line(
    n: u32,
    r: &Report,
    series: &[Series],
    growth: &[Finding],
) -> anyhow::Result<String> {
    let line = Line {
        schema_version: crate::diag::report::REPORT_SCHEMA_VERSION,
        sample: n,
        taken_at_ms: r.taken_at_ms,
        states: &r.states,
        series,
        findings: growth.iter().chain(r.findings.iter()).collect(),
        attribution: &r.attribution,
        warnings: &r.warnings,
    };
    let mut s = serde_json::to_string(&line)?;
    s.push('\n');
    Ok(s)
}
