//! The text parsers of /proc files: netstat/snmp pairs, sockstat, cgroup
//! paths and container ids, the inode columns of /proc/net tables, fd
//! links, `/proc/PID/stat` parents and NUL-separated command lines.
#![no_main]

use cwdiag::collect::{counters, holders, identity, procfs, procinfo, stale};
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
    let _ = stale::parse_sockstat_tcp(&text);
    let _ = procfs::socket_inode(data);
    let _ = holders::parse_ppid(data);
    let _ = identity::split_cmdline(data);
});
