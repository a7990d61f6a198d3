//! The list `cwdiag kill` prints before acting (or instead, in a dry run).

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
