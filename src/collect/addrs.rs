//! The addresses of a network namespace's own interfaces, so that a peer
//! address can be matched to the namespace that owns it (`--all-netns`):
//! IPv4 from the kernel's local routes (`/proc/net/fib_trie`, the
//! `/32 host LOCAL` leaves, `net/ipv4/fib_trie.c:fib_trie_seq_show`),
//! IPv6 from `/proc/net/if_inet6`
//! (`net/ipv6/addrconf.c:if6_seq_show`). Both are read size-capped: a
//! router's full table can be large, and only the local leaves matter.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Bytes read at most of each file.
const CAP: usize = 4 * 1024 * 1024;

/// The calling thread's namespace's addresses (under `proc_root`),
/// sorted, without duplicates; a warning when a file was cut.
pub fn read(proc: &super::procfs::ProcFs, warnings: &mut Vec<String>) -> Vec<IpAddr> {
    let net = proc.net();
    let mut out = Vec::new();
    for (name, parse) in [
        ("fib_trie", parse_fib_trie as fn(&str) -> Vec<IpAddr>),
        ("if_inet6", parse_if_inet6),
    ] {
        if let Some(text) = proc.text(&format!("{net}/{name}"), CAP, warnings) {
            out.extend(parse(&text));
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// The `/32 host LOCAL` leaves of a fib_trie dump.
pub fn parse_fib_trie(text: &str) -> Vec<IpAddr> {
    let mut last: Option<Ipv4Addr> = None;
    let mut out = Vec::new();
    for line in text.lines() {
        let t = line.trim_start();
        if let Some(a) = t.strip_prefix("|-- ") {
            last = a.trim().parse().ok();
        } else if t.starts_with("/32 host LOCAL")
            && let Some(a) = last
        {
            out.push(IpAddr::V4(a));
        }
    }
    out
}

/// The addresses of if_inet6: 32 hex digits first on each line.
pub fn parse_if_inet6(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|l| {
            let hex = l.split_whitespace().next()?;
            if hex.len() != 32 {
                return None;
            }
            let n = u128::from_str_radix(hex, 16).ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(n)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_leaves_only() {
        let trie = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 10.1.0.0\n        /24 link UNICAST\n     |-- 10.1.0.2\n        /32 host LOCAL\n        |-- 10.1.0.255\n           /32 link BROADCAST\n";
        assert_eq!(
            parse_fib_trie(trie),
            vec!["10.1.0.2".parse::<IpAddr>().unwrap()]
        );
        let v6 = "00000000000000000000000000000001 01 80 10 80       lo\nzz\n";
        assert_eq!(parse_if_inet6(v6), vec!["::1".parse::<IpAddr>().unwrap()]);
    }
}
