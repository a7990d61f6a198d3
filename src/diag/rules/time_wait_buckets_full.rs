//! `time-wait-buckets-full`: TIME_WAIT at or near tcp_max_tw_buckets.

use super::Finding;
use super::sysctl::evidence;
use super::{Ctx, Doc, Evidence, RuleId};
use crate::diag::host::{Counter, Sysctl};
use crate::diag::types::Severity;
use crate::model::TcpState;

pub const DOC: Doc = Doc {
    id: "time-wait-buckets-full",
    title: "TIME_WAIT at or near tcp_max_tw_buckets",
    meaning: "Past tcp_max_tw_buckets the kernel skips TIME_WAIT for new closes and counts TcpExt TCPTimeWaitOverflow (tcp_minisocks.c:tcp_time_wait), losing the protection TIME_WAIT gives against late segments of an old connection.",
    confirm: "nstat -az TcpExtTCPTimeWaitOverflow rising; the 'tw' count in /proc/net/sockstat near the limit.",
    fix: "Restore the default limit (ehash/2) if it was lowered, and cut the close rate by reusing connections.",
    avoid: "ip-sysctl: 'you must not lower the limit'. Lowering it to get rid of TIME_WAIT trades a harmless state for lost protection.",
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
    let tw = ctx.state_count(TcpState::TimeWait);
    let Some(max) = ctx
        .host
        .sysctl_u64(Sysctl::TcpMaxTwBuckets)
        .filter(|&m| m > 0)
    else {
        return Vec::new();
    };
    let overflow = ctx.host.counter(Counter::TimeWaitOverflow).unwrap_or(0);
    let share = tw as f64 / max as f64;
    if share < ctx.policy.tw_buckets_ratio_warn && overflow == 0 {
        return Vec::new();
    }
    let mut e = evidence(ctx, Sysctl::TcpMaxTwBuckets, Some(TcpState::TimeWait), tw);
    e.counter = Some(Counter::TimeWaitOverflow.key().to_string());
    e.counter_value = Some(overflow);
    vec![Finding {
        rule_id: RuleId::TimeWaitBucketsFull,
        severity: if tw as u64 >= max || overflow > 0 {
            Severity::Critical
        } else {
            Severity::Warning
        },
        summary: format!(
            "{tw} TIME_WAIT sockets against tcp_max_tw_buckets {max}; TCPTimeWaitOverflow {overflow} {}",
            ctx.host.counters_since()
        ),
        evidence: Evidence::Sysctl(e),
        hint: format!(
            "Past tcp_max_tw_buckets ({max}) the kernel skips TIME_WAIT and counts TCPTimeWaitOverflow, losing its protection against late segments. ip-sysctl says not to lower this limit: restore the default (ehash/2) if it was lowered, and cut the close rate by reusing connections."
        ),
    }]
}

#[cfg(test)]
pub fn cases() -> Vec<super::cases::Case> {
    use super::cases::{fires, silent};
    use crate::diag::testkit::SnapBuilder;
    let with = |max: &str, n: u32, overflow: u64| {
        SnapBuilder::new()
            .sysctl("net.ipv4.tcp_max_tw_buckets", max)
            .counter("TcpExt.TCPTimeWaitOverflow", overflow)
            .time_waits("10.0.0.1", "10.0.0.9:80", n, 60_000)
            .build()
    };
    vec![
        fires(
            "950 of 1000 buckets",
            with("1000", 950, 0),
            Severity::Warning,
        ),
        fires("overflowing", with("1000", 500, 12), Severity::Critical),
        silent("500 of 262144 buckets", with("262144", 500, 0)),
    ]
}
