//! Typed access to the sysctls and kernel counters a snapshot carries:
//! rules name an enum variant, so a misspelt key cannot compile.

use crate::model::Snapshot;

/// The sysctls rules read (`net.ipv4.*`, see ip-sysctl.rst).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sysctl {
    IpLocalPortRange,
    IpLocalReservedPorts,
    TcpTwReuse,
    TcpTimestamps,
    TcpTwRecycle,
    TcpMaxTwBuckets,
    TcpFinTimeout,
    TcpKeepaliveTime,
    TcpAbortOnOverflow,
    TcpMaxOrphans,
}

impl Sysctl {
    pub fn key(self) -> &'static str {
        match self {
            Sysctl::IpLocalPortRange => "net.ipv4.ip_local_port_range",
            Sysctl::IpLocalReservedPorts => "net.ipv4.ip_local_reserved_ports",
            Sysctl::TcpTwReuse => "net.ipv4.tcp_tw_reuse",
            Sysctl::TcpTimestamps => "net.ipv4.tcp_timestamps",
            Sysctl::TcpTwRecycle => "net.ipv4.tcp_tw_recycle",
            Sysctl::TcpMaxTwBuckets => "net.ipv4.tcp_max_tw_buckets",
            Sysctl::TcpFinTimeout => "net.ipv4.tcp_fin_timeout",
            Sysctl::TcpKeepaliveTime => "net.ipv4.tcp_keepalive_time",
            Sysctl::TcpAbortOnOverflow => "net.ipv4.tcp_abort_on_overflow",
            Sysctl::TcpMaxOrphans => "net.ipv4.tcp_max_orphans",
        }
    }
}

/// The kernel counters rules read (`/proc/net/netstat`, `/proc/net/sockstat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    ListenOverflows,
    ListenDrops,
    TimeWaitOverflow,
    AbortOnMemory,
    SockstatOrphans,
}

impl Counter {
    pub fn key(self) -> &'static str {
        match self {
            Counter::ListenOverflows => "TcpExt.ListenOverflows",
            Counter::ListenDrops => "TcpExt.ListenDrops",
            Counter::TimeWaitOverflow => "TcpExt.TCPTimeWaitOverflow",
            Counter::AbortOnMemory => "TcpExt.TCPAbortOnMemory",
            Counter::SockstatOrphans => "sockstat.TCP.orphan",
        }
    }
}

/// A snapshot's sysctls and counters, read through the enums above.
#[derive(Clone, Copy)]
pub struct Host<'a> {
    snap: &'a Snapshot,
}

impl<'a> Host<'a> {
    pub fn of(snap: &'a Snapshot) -> Host<'a> {
        Host { snap }
    }

    pub fn sysctl(&self, s: Sysctl) -> Option<&'a str> {
        self.snap.sysctls.get(s.key()).map(String::as_str)
    }

    /// The first number of a sysctl's value.
    pub fn sysctl_u64(&self, s: Sysctl) -> Option<u64> {
        self.sysctl(s)?.split_whitespace().next()?.parse().ok()
    }

    pub fn counter(&self, c: Counter) -> Option<u64> {
        self.snap.counters.get(c.key()).copied()
    }

    /// Since when the kernel's counters count: each network namespace
    /// has its own (`struct net`), zero at its creation; only the host's
    /// namespace is as old as the boot.
    pub fn counters_since(&self) -> &'static str {
        match self.snap.initial_netns {
            Some(true) => "since boot",
            Some(false) => "since the network namespace was created",
            None => {
                "since boot (or since the network namespace was created, if it is not the host's)"
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_count_from_the_namespace_not_the_boot() {
        let mut snap = crate::diag::testkit::SnapBuilder::new().build();
        snap.initial_netns = Some(false);
        assert_eq!(
            Host::of(&snap).counters_since(),
            "since the network namespace was created"
        );
        snap.initial_netns = Some(true);
        assert_eq!(Host::of(&snap).counters_since(), "since boot");
    }
}
