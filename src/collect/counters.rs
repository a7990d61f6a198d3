//! Kernel TCP counters: `/proc/net/netstat` (TcpExt), `/proc/net/snmp`
//! (Tcp) and `/proc/net/sockstat`. Parsing is pure and tested on samples.

use super::procfs::ProcFs;
use std::collections::BTreeMap;

/// TcpExt counters worth showing: the overflow, drop and abort counts
/// the kernel keeps for the states cwdiag diagnoses (`net/ipv4/proc.c`,
/// `snmp4_net_list`).
pub const TCP_EXT: &[&str] = &[
    "TCPTimeWaitOverflow",
    "TCPAbortOnClose",
    "TCPAbortOnData",
    "TCPAbortOnTimeout",
    "TCPAbortOnLinger",
    "TCPAbortOnMemory",
    "ListenOverflows",
    "ListenDrops",
    "SyncookiesSent",
    "SyncookiesRecv",
    "SyncookiesFailed",
    "TCPReqQFullDrop",
    "TCPReqQFullDoCookies",
];

/// Tcp counters of `/proc/net/snmp`.
pub const TCP: &[&str] = &[
    "ActiveOpens",
    "PassiveOpens",
    "AttemptFails",
    "EstabResets",
    "CurrEstab",
];

/// Parses the "Prefix: name name ...\nPrefix: value value ..." layout of
/// `/proc/net/netstat` and `/proc/net/snmp` into `Prefix.name -> value`.
pub fn parse_header_value_pairs(text: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let mut lines = text.lines();
    while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
        let (Some((p1, names)), Some((p2, values))) =
            (names.split_once(':'), values.split_once(':'))
        else {
            break;
        };
        if p1 != p2 {
            break;
        }
        for (n, v) in names.split_whitespace().zip(values.split_whitespace()) {
            // Tcp MaxConn is -1: keep what parses.
            if let Ok(v) = v.parse::<u64>() {
                out.insert(format!("{p1}.{n}"), v);
            }
        }
    }
    out
}

/// Parses `/proc/net/sockstat`: `TCP: inuse 4 orphan 0 tw 4 alloc 17 mem 1`
/// into `sockstat.TCP.inuse -> 4`, ...
pub fn parse_sockstat(text: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some((proto, rest)) = line.split_once(':') else {
            continue;
        };
        let words: Vec<&str> = rest.split_whitespace().collect();
        for pair in words.chunks(2) {
            if let [k, v] = pair
                && let Ok(v) = v.parse::<u64>()
            {
                out.insert(format!("sockstat.{}.{k}", proto.trim()), v);
            }
        }
    }
    out
}

/// Reads the counters of the network namespace of the calling thread;
/// files cut at their size cap are named in `warnings`.
pub fn read(proc: &ProcFs, warnings: &mut Vec<String>) -> BTreeMap<String, u64> {
    let net = proc.net();
    let mut out = BTreeMap::new();
    let mut text = |file: &str| proc.small_text(&format!("{net}/{file}"), warnings);
    if let Some(t) = text("netstat") {
        let all = parse_header_value_pairs(&t);
        for k in TCP_EXT {
            let key = format!("TcpExt.{k}");
            if let Some(v) = all.get(&key) {
                out.insert(key, *v);
            }
        }
    }
    if let Some(t) = text("snmp") {
        let all = parse_header_value_pairs(&t);
        for k in TCP {
            let key = format!("Tcp.{k}");
            if let Some(v) = all.get(&key) {
                out.insert(key, *v);
            }
        }
    }
    for file in ["sockstat", "sockstat6"] {
        if let Some(t) = text(file) {
            out.extend(
                parse_sockstat(&t)
                    .into_iter()
                    .filter(|(k, _)| k.starts_with("sockstat.TCP")),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_netstat_pairs() {
        let t = "TcpExt: SyncookiesSent ListenOverflows ListenDrops\nTcpExt: 0 12 13\nIpExt: InNoRoutes\nIpExt: 5\n";
        let m = parse_header_value_pairs(t);
        assert_eq!(m["TcpExt.ListenOverflows"], 12);
        assert_eq!(m["TcpExt.ListenDrops"], 13);
        assert_eq!(m["IpExt.InNoRoutes"], 5);
    }

    #[test]
    fn parses_snmp_with_negative_maxconn() {
        let t = "Tcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens\nTcp: 1 200 120000 -1 42\n";
        let m = parse_header_value_pairs(t);
        assert_eq!(m["Tcp.ActiveOpens"], 42);
        assert!(!m.contains_key("Tcp.MaxConn"));
    }

    #[test]
    fn parses_sockstat_samples_from_other_projects() {
        let t = "sockets: used 229\nTCP: inuse 4 orphan 0 tw 4 alloc 17 mem 1\nUDP: inuse 0\n";
        let m = parse_sockstat(t);
        assert_eq!(m["sockstat.TCP.tw"], 4);
        assert_eq!(m["sockstat.TCP.alloc"], 17);
        assert_eq!(m["sockstat.sockets.used"], 229);
        // The project's own capture of fixtures/workload.py: 21 sockets in
        // use; 30 TIME_WAIT plus 18 orphaned FIN_WAIT2, which the kernel
        // also keeps as timewait sockets (net/ipv4/tcp_minisocks.c,
        // tcp_time_wait).
        let own = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/workload.sockstat");
        let m = parse_sockstat(&std::fs::read_to_string(own).unwrap());
        assert_eq!(m["sockstat.TCP.inuse"], 21);
        assert_eq!(m["sockstat.TCP.tw"], 48);
        assert_eq!(m["sockstat.TCP.orphan"], 0);
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/external-fixtures/");
        for (file, inuse) in [
            ("node_exporter_proc_net_sockstat.txt", 4),
            ("prometheus_procfs_proc_net_sockstat.txt", 35),
        ] {
            match std::fs::read_to_string(format!("{dir}{file}")) {
                Ok(t) => assert_eq!(parse_sockstat(&t)["sockstat.TCP.inuse"], inuse, "{file}"),
                Err(_) => crate::testutil::skip_optional(&format!(
                    "{dir}{file} not found (another project's sample, beside the repository only in some checkouts)"
                )),
            }
        }
    }
}
