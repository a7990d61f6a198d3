//! `sysctl-abort-on-overflow`: tcp_abort_on_overflow enabled.

use super::Finding;
use super::sysctl::evidence;
use super::{Ctx, Doc, Evidence, RuleId};
use crate::diag::host::Sysctl;
use crate::diag::types::Severity;

pub const DOC: Doc = Doc {
    id: "sysctl-abort-on-overflow",
    title: "tcp_abort_on_overflow is enabled",
    meaning: "With a full accept queue the kernel resets new clients instead of dropping their handshake ACK and letting them retry (tcp_minisocks.c:tcp_check_req).",
    confirm: "sysctl net.ipv4.tcp_abort_on_overflow prints 1; clients see connection resets under load.",
    fix: "Set it back to 0 unless the listener truly cannot be made faster; fix the accept loop and raise the backlog and somaxconn.",
    avoid: "ip-sysctl warns it can harm clients.",
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
    if ctx.host.sysctl_u64(Sysctl::TcpAbortOnOverflow) != Some(1) {
        return Vec::new();
    }
    vec![Finding {
        rule_id: RuleId::SysctlAbortOnOverflow,
        severity: Severity::Warning,
        summary: "tcp_abort_on_overflow is 1: a full accept queue resets new clients".into(),
        evidence: Evidence::Sysctl(evidence(ctx, Sysctl::TcpAbortOnOverflow, None, 0)),
        hint: "With this set, a listener that falls behind resets connecting clients instead of letting them retry; ip-sysctl advises it only when the listener cannot be made faster. Prefer fixing the accept loop and raising the backlog and somaxconn.".into(),
    }]
}

#[cfg(test)]
pub fn cases() -> Vec<super::cases::Case> {
    use super::cases::{fires, silent};
    use crate::diag::testkit::SnapBuilder;
    let with = |v: &str| {
        SnapBuilder::new()
            .sysctl("net.ipv4.tcp_abort_on_overflow", v)
            .build()
    };
    vec![
        fires("set to 1", with("1"), Severity::Warning),
        silent("the default 0", with("0")),
    ]
}
