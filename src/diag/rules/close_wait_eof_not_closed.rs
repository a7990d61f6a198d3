//! `close-wait-eof-not-closed`: Recv-Q 0, the application read the end
//! of file and never called close().

use super::close_wait::{
    AVOID, CloseWaitEvidence, CloseWaitKind, NO_SYSCTL, age_words, close_wait_severity, held,
    owner_words, place_words, unknown_owner_prefix,
};
use super::{Ctx, Doc, Evidence, Finding, RuleId};
use crate::diag::peer::Runtime;
use crate::diag::types::Direction;
use crate::diag::words::plural;

pub const DOC: Doc = Doc {
    id: "close-wait-eof-not-closed",
    title: "CLOSE_WAIT, EOF read but never closed (Recv-Q 0)",
    meaning: "The application read the end of file (read() returned 0, which consumed the peer's FIN) and still did not call close(): a missing close() on the EOF path of its read loop. CLOSE_WAIT has no timer (RFC 9293 section 3.3.2): the socket and its file descriptor stay until close().",
    confirm: "Recv-Q 0 on CLOSE_WAIT sockets of one process (ss -tanp state close-wait); strace -p PID shows read()/recv() returning 0 without a following close() on that fd.",
    fix: "Call close() whenever read() returns 0 and on every error path (try/finally, try-with-resources, defer, RAII). In Go, always resp.Body.Close().",
    avoid: AVOID,
};

/// One finding per process, direction and port; the severity by the
/// CLOSE_WAIT count of that process, direction and port.
pub fn detect(ctx: &Ctx) -> Vec<Finding> {
    held(ctx, CloseWaitKind::EofNotClosed)
        .into_iter()
        .map(|h| {
            let severity = close_wait_severity(h.total, ctx.policy);
            let (summary, hint) = words(&h.evidence, h.runtime);
            Finding {
                rule_id: RuleId::CloseWaitEofNotClosed,
                severity,
                summary,
                evidence: Evidence::CloseWait(Box::new(h.evidence)),
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

pub fn words(e: &CloseWaitEvidence, runtime: Option<Runtime>) -> (String, String) {
    let who = owner_words(e);
    let summary = format!(
        "{} {} held by {who}{}: read EOF, never closed",
        plural(e.count, "CLOSE_WAIT socket", "CLOSE_WAIT sockets"),
        place_words(e),
        age_words(e)
    );
    let idiom = match runtime {
        Some(Runtime::Jvm) => " (try-with-resources)",
        Some(Runtime::CPython) => " (a with-block or finally: close())",
        Some(Runtime::Go) => " (defer conn.Close(); for HTTP, resp.Body.Close())",
        _ => "",
    };
    let fix = match e.direction {
        Direction::Inbound => format!(
            "Clients hung up and {who} read the EOF but never called close(): add close() where read() returns 0, and on every error path{idiom}, in the handler for port {}.",
            e.port
        ),
        Direction::Outbound => format!(
            "{} closed and {who} read the EOF but never called close(): close the connection on EOF and on errors{idiom}.",
            e.peers
                .first()
                .map(|p| format!("The server {p}"))
                .unwrap_or_else(|| format!("The servers on port {}", e.port))
        ),
    };
    let hint = format!(
        "{}{fix} {NO_SYSCTL} Restarting the process frees them until the bug is fixed.",
        unknown_owner_prefix(e)
    );
    (summary, hint)
}

#[cfg(test)]
pub fn cases() -> Vec<super::cases::Case> {
    use super::cases::{fires, silent};
    use crate::diag::types::Severity;
    use crate::diag::testkit::SnapBuilder;
    let mut leak = SnapBuilder::new().listen("0.0.0.0:8080", Some(10), 0, 128);
    for i in 0..12 {
        let peer = format!("10.1.0.{i}:5{i:04}");
        leak = leak.close_wait(
            "10.0.0.1:8080",
            &peer,
            0,
            Some(10),
            Some((60_000, 60_000, 50_000)),
        );
    }
    let mut few = SnapBuilder::new().listen("0.0.0.0:8080", Some(10), 0, 128);
    for i in 0..2 {
        let peer = format!("10.1.0.{i}:5{i:04}");
        few = few.close_wait("10.0.0.1:8080", &peer, 0, Some(10), None);
    }
    // Recv-Q 1: not this rule.
    let never_read = SnapBuilder::new()
        .listen("0.0.0.0:8080", Some(10), 0, 128)
        .close_wait("10.0.0.1:8080", "10.1.0.1:50000", 1, Some(10), None);
    vec![
        fires(
            "12 sockets read to EOF on a server port",
            leak.build(),
            Severity::Warning,
        ),
        fires(
            "2 sockets: reported, below the warning",
            few.build(),
            Severity::Info,
        ),
        silent("a socket that never read the FIN", never_read.build()),
        silent(
            "ESTABLISHED connections only",
            SnapBuilder::new()
                .listen("0.0.0.0:8080", Some(10), 0, 128)
                .established("10.0.0.1:8080", "10.1.0.1:50000", Some(10))
                .build(),
        ),
    ]
}
