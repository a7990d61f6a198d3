//! `sysctl-keepalive-myth`: tcp_keepalive_time lowered while CLOSE_WAIT
//! sockets pile up.

use super::Finding;
use super::sysctl::evidence;
use super::{Ctx, Doc, Evidence, RuleId};
use crate::diag::host::Sysctl;
use crate::diag::types::Severity;
use crate::model::TcpState;

/// The kernel default (`TCP_KEEPALIVE_TIME`, include/net/tcp.h): 2 h.
const DEFAULT_KEEPALIVE_S: u64 = 7200;

pub const DOC: Doc = Doc {
    id: "sysctl-keepalive-myth",
    title: "tcp_keepalive_time lowered against CLOSE_WAIT",
    meaning: "Keepalive only runs on SO_KEEPALIVE sockets (tcp_timer.c:tcp_keepalive_timer). A peer that still holds its half answers the probes, so CLOSE_WAIT stays; when the probes do kill a socket, the application's fd stays leaked and the socket merely vanishes from ss (see stale-socket-fds).",
    confirm: "CLOSE_WAIT persists despite the lowered value; lsof shows 'can't identify protocol' fds.",
    fix: "Fix the missing close() in the application. Prefer per-socket TCP_KEEPIDLE/TCP_KEEPINTVL/TCP_KEEPCNT for detecting dead peers.",
    avoid: "Do not treat keepalive as a CLOSE_WAIT fix: it hides the leak.",
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
    let cw = ctx.state_count(TcpState::CloseWait);
    let Some(ka) = ctx.host.sysctl_u64(Sysctl::TcpKeepaliveTime) else {
        return Vec::new();
    };
    if ka >= DEFAULT_KEEPALIVE_S || cw == 0 {
        return Vec::new();
    }
    vec![Finding {
        rule_id: RuleId::SysctlKeepaliveMyth,
        severity: Severity::Info,
        summary: format!("tcp_keepalive_time is lowered to {ka} s while {cw} sockets are in CLOSE_WAIT"),
        evidence: Evidence::Sysctl(evidence(ctx, Sysctl::TcpKeepaliveTime, Some(TcpState::CloseWait), cw)),
        hint: "Keepalive only applies to SO_KEEPALIVE sockets and does not end CLOSE_WAIT while the peer still answers; when it does kill a socket, the application's fd stays leaked. It hides the bug rather than fixing it: the fix is close() in the application.".into(),
    }]
}

#[cfg(test)]
pub fn cases() -> Vec<super::cases::Case> {
    use super::cases::{fires, silent};
    use crate::diag::testkit::SnapBuilder;
    let with = |v: &str| {
        SnapBuilder::new()
            .sysctl("net.ipv4.tcp_keepalive_time", v)
            .close_wait("10.0.0.1:40000", "10.0.0.2:80", 1, Some(5), None)
            .build()
    };
    vec![
        fires(
            "lowered to 600 s with CLOSE_WAIT present",
            with("600"),
            Severity::Info,
        ),
        silent("the default 7200 s", with("7200")),
    ]
}
