//! `orphans-near-limit`: orphaned sockets near tcp_max_orphans.

use super::Finding;
use super::sysctl::evidence;
use super::{Ctx, Doc, Evidence, RuleId};
use crate::diag::host::{Counter, Sysctl};
use crate::diag::types::Severity;

pub const DOC: Doc = Doc {
    id: "orphans-near-limit",
    title: "Orphaned sockets near tcp_max_orphans",
    meaning: "Orphans are sockets the application closed that the kernel is still finishing (FIN_WAIT1, LAST_ACK, CLOSING). Past tcp_max_orphans the kernel resets them ('TCP: too many orphaned sockets', TCPAbortOnMemory; tcp.c:tcp_check_oom). They are counted apart from TIME_WAIT ('tw' in /proc/net/sockstat).",
    confirm: "/proc/net/sockstat 'orphan' near the limit; dmesg shows 'too many orphaned sockets'.",
    fix: "Raise tcp_max_orphans if memory allows; find peers that stop reading (FIN_WAIT1 with Send-Q); TCP_USER_TIMEOUT for app-held sockets.",
    avoid: "Never lower tcp_max_orphans; do not blame TIME_WAIT (a separate counter).",
};

/// The rule's registry entry.
pub struct Def;

impl super::Rule for Def {
    fn doc(&self) -> &'static Doc {
        &DOC
    }

    fn detect(&self, ctx: &Ctx) -> Vec<Finding> {
        detect(ctx)
    }

    #[cfg(test)]
    fn cases(&self) -> Vec<super::cases::Case> {
        cases()
    }
}

pub fn detect(ctx: &Ctx) -> Vec<Finding> {
    let (Some(orphans), Some(max)) = (
        ctx.host.counter(Counter::SockstatOrphans),
        ctx.host
            .sysctl_u64(Sysctl::TcpMaxOrphans)
            .filter(|&m| m > 0),
    ) else {
        return Vec::new();
    };
    if (orphans as f64) < max as f64 * ctx.policy.orphans_ratio_warn {
        return Vec::new();
    }
    let mut e = evidence(ctx, Sysctl::TcpMaxOrphans, None, orphans as usize);
    e.counter = Some(Counter::AbortOnMemory.key().to_string());
    e.counter_value = ctx.host.counter(Counter::AbortOnMemory);
    vec![Finding {
        rule_id: RuleId::OrphansNearLimit,
        severity: Severity::Warning,
        summary: format!("{orphans} orphaned sockets against tcp_max_orphans {max}"),
        evidence: Evidence::Sysctl(e),
        hint: "Orphans are sockets the application closed that the kernel is still finishing (FIN_WAIT1, LAST_ACK, CLOSING); past tcp_max_orphans the kernel resets them ('too many orphaned sockets', TCPAbortOnMemory). They are separate from TIME_WAIT ('tw' in sockstat). Raise tcp_max_orphans if memory allows, never lower it; look for peers that stopped reading.".into(),
    }]
}

#[cfg(test)]
pub fn cases() -> Vec<super::cases::Case> {
    use super::cases::{fires, silent};
    use crate::diag::testkit::SnapBuilder;
    let with = |n: u64| {
        SnapBuilder::new()
            .sysctl("net.ipv4.tcp_max_orphans", "1000")
            .counter("sockstat.TCP.orphan", n)
            .build()
    };
    vec![
        fires("850 of 1000", with(850), Severity::Warning),
        silent("12 of 1000", with(12)),
        // The look-alike: a host finishing as many closes, but in TIME_WAIT
        // (sockstat's `tw`), which are not orphans and have their own limit.
        silent(
            "900 TIME_WAIT and 3 orphans",
            SnapBuilder::new()
                .sysctl("net.ipv4.tcp_max_orphans", "1000")
                .counter("sockstat.TCP.orphan", 3)
                .counter("sockstat.TCP.tw", 900)
                .build(),
        ),
    ]
}
