//! The list `cwdiag kill` prints before acting (or instead, in a dry run).

use crate::killplan::Matched;
use crate::model::{Process, Socket};
use comfy_table::Cell;
use std::collections::BTreeMap;

pub fn list(socks: &[&Socket], procs: &BTreeMap<u32, Process>) -> String {
    if socks.is_empty() {
        return "no socket matches the selection.\n".to_string();
    }
    let mut t = super::table::table(
        100,
        Some(&["STATE", "LOCAL", "PEER", "PID", "PROCESS", "COOKIE"]),
    );
    for s in socks {
        let comm = super::table::process_cell(s.pid, None, procs, 30);
        t.add_row(vec![
            Cell::new(s.state.name()),
            Cell::new(s.local.to_string()),
            Cell::new(s.peer.to_string()),
            Cell::new(s.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into())),
            Cell::new(comm),
            Cell::new(format!("{:#x}", s.cookie)),
        ]);
    }
    format!("{} sockets selected:\n{t}\n", socks.len())
}

/// Changed sockets listed by cookie, at most.
const LISTED_CHANGED: usize = 10;

/// What became of a reviewed plan's sockets since the review.
pub fn reviewed(m: &Matched) -> String {
    let mut out = format!(
        "reviewed {}: {} still present, {} gone (closed since the review), {} changed (left alone)\n",
        m.present.len() + m.gone.len() + m.changed.len(),
        m.present.len(),
        m.gone.len(),
        m.changed.len()
    );
    for (cookie, why) in m.changed.iter().take(LISTED_CHANGED) {
        out.push_str(&format!("  changed {cookie:#x}: {why}\n"));
    }
    if m.changed.len() > LISTED_CHANGED {
        out.push_str(&format!(
            "  ... and {} more changed\n",
            m.changed.len() - LISTED_CHANGED
        ));
    }
    out
}

/// The line a dry run ends with.
pub fn dry_run(n: usize) -> String {
    format!("dry run: {n} sockets would be destroyed; add --yes to destroy them.\n")
}

/// The tally after destroying.
pub fn destroyed(destroyed: usize, gone: usize, failed: usize) -> String {
    format!("destroyed {destroyed}, gone {gone} (closed or reused meanwhile), failed {failed}\n")
}
