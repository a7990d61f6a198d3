//! Reads the TCP sysctls that explain the findings, from the current
//! network namespace's `/proc/sys/net`.

use std::collections::BTreeMap;
use std::path::Path;

/// Sysctls recorded in every snapshot (dotted names, as `sysctl` prints).
pub const NAMES: &[&str] = &[
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_max_tw_buckets",
    "net.ipv4.tcp_tw_reuse",
    "net.ipv4.tcp_timestamps",
];

/// Missing files (e.g. `tcp_tw_recycle` on kernels >= 4.12) are skipped.
pub fn read(proc_root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for name in NAMES {
        let path = proc_root.join("sys").join(name.replace('.', "/"));
        if let Ok(v) = std::fs::read_to_string(path) {
            out.insert(
                (*name).to_string(),
                v.split_whitespace().collect::<Vec<_>>().join(" "),
            );
        }
    }
    out
}
