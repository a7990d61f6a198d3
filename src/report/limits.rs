//! The `cwdiag assert` outcome as text: one line per limit, offenders
//! under broken ones.

use crate::diag::limits::Outcome;
use std::fmt::Write;

/// The owner's label (already printable), else its comm escaped.
fn name_of(names: &std::collections::BTreeMap<u32, String>, pid: u32, comm: &str) -> String {
    names
        .get(&pid)
        .cloned()
        .unwrap_or_else(|| crate::procname::printable(comm))
}

/// Plain-text result: one line per limit, offenders under broken ones.
pub fn render_text(o: &Outcome) -> String {
    let mut out = String::new();
    for c in &o.checks {
        let verdict = if c.ok { "ok  " } else { "FAIL" };
        let op = if c.ok { "<=" } else { ">" };
        let what = match c.state {
            Some(st) if c.limit.ends_with("-growth") => format!("{st} growth"),
            Some(st) => st.to_string(),
            None => "stale socket fds".to_string(),
        };
        let _ = writeln!(
            out,
            "{verdict} {}: {} {what} {op} {}",
            c.limit, c.count, c.max
        );
        for s in &c.growing {
            let who = match (s.pid, &s.comm) {
                (Some(p), Some(c)) => format!("pid {p} ({})", name_of(&o.names, p, c)),
                (Some(p), None) => format!("pid {p}"),
                _ => "no owner".to_string(),
            };
            // The first count and the last few: bounded however long
            // the sampling ran.
            let tail = &s.counts[s.counts.len().saturating_sub(4)..];
            let shown = tail
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" -> ");
            let series = match s.counts.first() {
                Some(first) if s.counts.len() > tail.len() => format!("{first} ... {shown}"),
                _ => shown,
            };
            let _ = writeln!(out, "     {:>+6}  {who} port {}: {series}", s.delta, s.port);
        }
        for s in &c.stale {
            let _ = writeln!(
                out,
                "     {:>6}  {}",
                s.count,
                crate::diag::words::who(Some(s.pid), Some(&name_of(&o.names, s.pid, &s.comm)))
            );
        }
        for g in &c.offenders {
            let who = match (g.pid, &g.comm) {
                (Some(p), Some(c)) => format!("pid {p} ({})", name_of(&o.names, p, c)),
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
        let _ = writeln!(out, "warning: {}", crate::procname::printable(w));
    }
    out
}
