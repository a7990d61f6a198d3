//! `time-wait-server-closes`: TIME_WAIT on a local listening port: this
//! host's server closed first.

use super::time_wait::{TimeWaitEvidence, groups};
use super::{Ctx, Doc, Evidence, Finding, RuleId};
use crate::diag::types::{Direction, Severity};

pub const DOC: Doc = Doc {
    id: "time-wait-server-closes",
    title: "TIME_WAIT on a local listening port",
    meaning: "This host's server closed these connections first; the side that closes first keeps TIME_WAIT for a fixed 60 s (TCP_TIMEWAIT_LEN, include/net/tcp.h). On a server port this uses no ephemeral ports and is usually harmless.",
    confirm: "ss -tan state time-wait sport = :PORT | wc -l; compare the count with net.ipv4.tcp_max_tw_buckets.",
    fix: "Nothing unless it nears tcp_max_tw_buckets. To reduce it: HTTP keep-alive so fewer connections are closed, a higher keepalive_requests, or a protocol where the client closes first.",
    avoid: "Do not lower tcp_fin_timeout (it does not change TIME_WAIT) or tcp_max_tw_buckets; tcp_tw_recycle was removed in Linux 4.12; tcp_tw_reuse only applies to outgoing connects.",
};

/// One finding per local listening port, always info: TIME_WAIT on a
/// server port costs no ephemeral ports.
pub fn detect(ctx: &Ctx) -> Vec<Finding> {
    groups(ctx, Direction::Inbound)
        .into_iter()
        .map(|g| {
            let (summary, hint) = words(&g.evidence);
            Finding {
                rule_id: RuleId::TimeWaitServerCloses,
                severity: Severity::Info,
                summary,
                evidence: Evidence::TimeWait(g.evidence),
                hint,
            }
        })
        .collect()
}

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

pub fn words(e: &TimeWaitEvidence) -> (String, String) {
    (
        format!(
            "{} TIME_WAIT sockets on local port {}: this host closed them first ({})",
            e.count,
            e.port,
            e.closes.words()
        ),
        format!(
            "The server on port {} closes first, so it keeps TIME_WAIT for a fixed 60 s. That costs the server no ports and is usually harmless; watch tcp_max_tw_buckets. To reduce it, keep client connections alive or let clients close first. tcp_fin_timeout does not shorten TIME_WAIT, and tcp_tw_reuse only affects outgoing connects.",
            e.port
        ),
    )
}

#[cfg(test)]
pub fn cases() -> Vec<super::cases::Case> {
    use super::cases::{fires, silent};
    use crate::diag::testkit::SnapBuilder;
    use crate::diag::types::Severity;
    let mut many = SnapBuilder::new().listen("0.0.0.0:80", Some(70), 0, 511);
    for i in 0..1200u32 {
        let peer = format!("10.4.{}.{}:{}", i / 250, i % 250, 30_000 + i);
        many = many.time_wait("10.0.0.1:80", &peer, 1000 + i * 40);
    }
    let mut few = SnapBuilder::new().listen("0.0.0.0:80", Some(70), 0, 511);
    for i in 0..50u32 {
        few = few.time_wait("10.0.0.1:80", &format!("10.4.0.{i}:40000"), 30_000);
    }
    vec![
        fires("1200 TIME_WAIT on port 80", many.build(), Severity::Info),
        silent("50 TIME_WAIT on port 80", few.build()),
    ]
}
