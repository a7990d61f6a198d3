//! The text parsers of /proc files: netstat/snmp pairs, sockstat, cgroup
//! paths and container ids, and the inode columns of /proc/net tables.
#![no_main]

use cwdiag::collect::{counters, procinfo};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = counters::parse_header_value_pairs(&text);
    let _ = counters::parse_sockstat(&text);
    if let Some(path) = procinfo::cgroup_path(&text) {
        let _ = procinfo::container_id(&path);
    }
    let _ = procinfo::container_id(&text);
    let _ = procinfo::inode_column(&text, Some(9));
    let _ = procinfo::inode_column(&text, Some(6));
    let _ = procinfo::inode_column(&text, None);
});
