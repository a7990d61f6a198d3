//! `sysctl-fin-timeout-myth`: tcp_fin_timeout lowered, presumably against
//! TIME_WAIT, which it does not shorten.

use super::Finding;
use super::sysctl::evidence;
use super::{Ctx, Doc, Evidence, RuleId};
use crate::diag::host::Sysctl;
use crate::diag::types::{Severity, TIME_WAIT_LEN_S};
use crate::model::TcpState;

/// The kernel default (`TCP_FIN_TIMEOUT`, include/net/tcp.h).
const DEFAULT_FIN_TIMEOUT_S: u64 = 60;

pub const DOC: Doc = Doc {
    id: "sysctl-fin-timeout-myth",
    title: "tcp_fin_timeout lowered, TIME_WAIT unchanged",
    meaning: "tcp_fin_timeout bounds orphaned FIN_WAIT2 sockets only (tcp.c:__tcp_close). TIME_WAIT is fixed at 60 s (TCP_TIMEWAIT_LEN) on upstream Linux; this setting does not shorten it.",
    confirm: "TIME_WAIT sockets still show up to 60 s left (ss -tano state time-wait).",
    fix: "If it was lowered to fight TIME_WAIT, it did nothing for that: reuse connections instead. Leave it as it is if orphaned FIN_WAIT2 was the real concern.",
    avoid: "Do not expect any sysctl to shorten TIME_WAIT on upstream kernels.",
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
    let Some(fin) = ctx.host.sysctl_u64(Sysctl::TcpFinTimeout) else {
        return Vec::new();
    };
    if fin >= DEFAULT_FIN_TIMEOUT_S || tw == 0 {
        return Vec::new();
    }
    vec![Finding {
        rule_id: RuleId::SysctlFinTimeoutMyth,
        severity: Severity::Info,
        summary: format!(
            "tcp_fin_timeout is {fin} s, but the {tw} TIME_WAIT sockets still last {TIME_WAIT_LEN_S} s"
        ),
        evidence: Evidence::Sysctl(evidence(ctx, Sysctl::TcpFinTimeout, Some(TcpState::TimeWait), tw)),
        hint: "tcp_fin_timeout only bounds orphaned FIN_WAIT2 sockets; TIME_WAIT is fixed at 60 s (TCP_TIMEWAIT_LEN) and this setting does not shorten it. If it was lowered to fight TIME_WAIT, it did nothing for that.".into(),
    }]
}

#[cfg(test)]
pub fn cases() -> Vec<super::cases::Case> {
    use super::cases::{fires, silent};
    use crate::diag::testkit::SnapBuilder;
    let with = |v: &str| {
        SnapBuilder::new()
            .sysctl("net.ipv4.tcp_fin_timeout", v)
            .time_wait("10.0.0.1:40000", "10.0.0.2:80", 30_000)
            .build()
    };
    vec![
        fires(
            "lowered to 15 s with TIME_WAIT present",
            with("15"),
            Severity::Info,
        ),
        silent("the default 60 s", with("60")),
        silent(
            "lowered, but no TIME_WAIT",
            SnapBuilder::new()
                .sysctl("net.ipv4.tcp_fin_timeout", "15")
                .build(),
        ),
    ]
}
