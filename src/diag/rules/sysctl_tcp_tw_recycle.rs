//! `sysctl-tcp-tw-recycle`: tcp_tw_recycle enabled (kernels before 4.12).

use super::Finding;
use super::sysctl::evidence;
use super::{Ctx, Doc, Evidence, RuleId};
use crate::diag::host::Sysctl;
use crate::diag::types::Severity;
use crate::model::TcpState;

pub const DOC: Doc = Doc {
    id: "sysctl-tcp-tw-recycle",
    title: "tcp_tw_recycle is enabled",
    meaning: "tcp_tw_recycle (kernels before 4.12) dropped SYNs from clients behind NAT, which share an address but not one monotonic timestamp clock; Linux 4.12 removed it for that reason (commit 4396e46187ca).",
    confirm: "sysctl net.ipv4.tcp_tw_recycle prints 1; clients behind NAT see intermittent connect timeouts; nstat shows TcpExtPAWSPassive rising.",
    fix: "Set it to 0. Use connection reuse, or tcp_tw_reuse=1 for outgoing connects.",
    avoid: "Never enable it, whatever old advice says.",
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
    if ctx.host.sysctl_u64(Sysctl::TcpTwRecycle) != Some(1) {
        return Vec::new();
    }
    let tw = ctx.state_count(TcpState::TimeWait);
    vec![Finding {
        rule_id: RuleId::SysctlTcpTwRecycle,
        severity: Severity::Critical,
        summary: "net.ipv4.tcp_tw_recycle is 1".into(),
        evidence: Evidence::Sysctl(evidence(ctx, Sysctl::TcpTwRecycle, Some(TcpState::TimeWait), tw)),
        hint: "tcp_tw_recycle drops SYNs from clients behind NAT (they share an address but not one timestamp clock); Linux removed it in 4.12 for that reason. Set it to 0; use connection reuse, or tcp_tw_reuse=1 for outgoing connects, instead.".into(),
    }]
}

#[cfg(test)]
pub fn cases() -> Vec<super::cases::Case> {
    use super::cases::{fires, silent};
    use crate::diag::testkit::SnapBuilder;
    let with = |v: &str| {
        SnapBuilder::new()
            .sysctl("net.ipv4.tcp_tw_recycle", v)
            .build()
    };
    vec![
        fires("set to 1 on an old kernel", with("1"), Severity::Critical),
        silent("set to 0", with("0")),
        silent("absent (Linux 4.12 and later)", SnapBuilder::new().build()),
    ]
}
