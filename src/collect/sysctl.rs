//! Reads the TCP sysctls that explain the findings, from the current
//! network namespace's `/proc/sys/net`.

use super::procfs::ProcFs;
use std::collections::BTreeMap;

/// Sysctls recorded in every snapshot (dotted names, as `sysctl` prints).
pub const NAMES: &[&str] = &[
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_tw_reuse",
    "net.ipv4.tcp_tw_reuse_delay",
    "net.ipv4.tcp_timestamps",
    "net.ipv4.tcp_tw_recycle",
    "net.ipv4.tcp_max_tw_buckets",
    "net.ipv4.tcp_max_orphans",
    "net.ipv4.tcp_mem",
    "net.ipv4.tcp_orphan_retries",
    "net.ipv4.tcp_retries2",
    "net.ipv4.tcp_syn_retries",
    "net.ipv4.tcp_synack_retries",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.tcp_max_syn_backlog",
    "net.ipv4.tcp_abort_on_overflow",
    "net.ipv4.tcp_rfc1337",
    "net.core.somaxconn",
];

/// Missing files (e.g. `tcp_tw_recycle` on kernels >= 4.12) are skipped;
/// files cut at their size cap are named in `warnings`.
pub fn read(proc: &ProcFs, warnings: &mut Vec<String>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for name in NAMES {
        let rel = format!("sys/{}", name.replace('.', "/"));
        if let Some(v) = proc.small_text(&rel, warnings) {
            out.insert(
                (*name).to_string(),
                v.split_whitespace().collect::<Vec<_>>().join(" "),
            );
        }
    }
    out
}
