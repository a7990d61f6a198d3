//! `close-wait-unread-data`: data arrived that the application stopped
//! reading, then the peer closed.

use super::close_wait::{
    CloseWaitEvidence, CloseWaitKind, NO_SYSCTL, age_words, close_wait_severity, held,
    owner_words, place_words, unknown_owner_prefix,
};
use super::{Ctx, Doc, Evidence, Finding, RuleId};
use crate::diag::types::Direction;
use crate::diag::words::plural;

pub const DOC: Doc = Doc {
    id: "close-wait-unread-data",
    title: "CLOSE_WAIT with data the application stopped reading (Recv-Q > 1)",
    meaning: "Data arrived while the connection was in use, the application stopped reading it, and then the peer gave up and closed. Inbound, clients sent requests that no worker read: every worker busy (a saturated worker pool) or handlers blocked. Outbound, responses were never read. When the application finally closes such a socket the kernel sends an RST instead of a FIN, because unread data is discarded (tcp.c:__tcp_close, TCPAbortOnClose). A few bytes (at most 4 KiB) that came with the FIN after the connection had idled are the server's goodbye message, not this rule (see close-wait-never-read); more is never a goodbye. The sockets of one process and port get one verdict.",
    confirm: "Recv-Q > 1 on CLOSE_WAIT sockets (ss -tanp state close-wait); cwdiag samples the owner's threads (evidence.threads: blocked in recvfrom() on a named downstream, on CPU, idle in epoll_wait); a thread dump (jstack, py-spy dump, gdb) or strace shows the code.",
    fix: "Find and unblock what the workers wait on: timeouts on every downstream call, a worker pool sized to the load, handlers that read to EOF or close on timeout.",
    avoid: "Raising the listen backlog or somaxconn only queues more requests that clients abandon. No sysctl fixes CLOSE_WAIT.",
};

/// One finding per process, direction and port; the severity by the
/// CLOSE_WAIT count of that process, direction and port.
pub fn detect(ctx: &Ctx) -> Vec<Finding> {
    held(ctx, CloseWaitKind::UnreadData)
        .into_iter()
        .map(|h| {
            let severity = close_wait_severity(h.total, ctx.policy);
            let (summary, hint) = words(&h.evidence);
            Finding {
                rule_id: RuleId::CloseWaitUnreadData,
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

pub fn words(e: &CloseWaitEvidence) -> (String, String) {
    let who = owner_words(e);
    let summary = format!(
        "{} {} held by {who}{}: {} bytes unread when the peer closed",
        plural(e.count, "CLOSE_WAIT socket", "CLOSE_WAIT sockets"),
        place_words(e),
        age_words(e),
        e.unread_bytes
    );
    let threads = e.threads.as_ref();
    let seen = threads
        .map(|t| format!(" Its threads, sampled: {}.", t.verdict))
        .unwrap_or_default();
    let then = threads.and_then(crate::diag::threads::advice);
    let what = match e.direction {
        Direction::Inbound => {
            let cause = match threads {
                Some(t) if t.single_threaded => format!(
                    "Clients sent requests on port {} that {who} never read before they gave up; it runs on a single thread, so adding workers is not the fix.",
                    e.port
                ),
                Some(_) => format!(
                    "Clients sent requests on port {} that {who} never read before they gave up.",
                    e.port
                ),
                None => format!(
                    "Clients sent requests on port {} that {who} never read before they gave up: usually every worker is busy (a saturated worker pool) or a handler is blocked.",
                    e.port
                ),
            };
            let next = then.unwrap_or_else(|| match threads {
                Some(_) => "Put timeouts on downstream calls and bound handler time.".to_string(),
                None => "Take a thread dump (jstack, py-spy dump, gdb) to see what the workers wait on; put timeouts on downstream calls and size the pool to the load.".to_string(),
            });
            format!("{cause}{seen} {next}")
        }
        Direction::Outbound => {
            let from = e
                .peers
                .first()
                .cloned()
                .unwrap_or_else(|| format!("port {}", e.port));
            let abandoned = format!(
                "{who} left {} bytes from {from} unread and the server then closed: the code stopped reading those responses (abandoned before their end: a body never read or released, a stream never closed).",
                e.unread_bytes
            );
            let fix = "Read every response to its end or close it (a with-block or try-with-resources; aiohttp resp.release(), Go resp.Body.Close()).";
            match threads {
                // Only sampled threads can show a reader blocked; without
                // them, or when they show none, the data is unread.
                Some(t) if t.pattern == "waiting-for-events" => {
                    format!("{abandoned}{seen} No reader is blocked. {fix}")
                }
                Some(_) => format!(
                    "{who} stopped reading responses from {from} before the server closed.{seen} {}",
                    then.unwrap_or_else(
                        || "Close every response the code opens, read or not.".to_string()
                    )
                ),
                None => format!("{abandoned} {fix}"),
            }
        }
    };
    let hint = format!(
        "{}{what} Closing these sends RST, not FIN (unread data is discarded). {NO_SYSCTL}",
        unknown_owner_prefix(e)
    );
    (summary, hint)
}

#[cfg(test)]
pub fn cases() -> Vec<super::cases::Case> {
    use super::cases::{fires, silent};
    use crate::diag::types::Severity;
    use crate::diag::testkit::SnapBuilder;
    // A pre-fork server whose workers are all busy: requests unread.
    let mut busy = SnapBuilder::new().listen("0.0.0.0:8000", Some(30), 0, 128);
    for i in 0..11 {
        let peer = format!("10.1.0.{i}:5{i:04}");
        busy = busy.close_wait(
            "10.0.0.1:8000",
            &peer,
            300,
            Some(31),
            Some((40_000, 30_000, 29_000)),
        );
    }
    // The PostgreSQL goodbye after idling is not unread data.
    let goodbye = SnapBuilder::new().close_wait(
        "10.0.0.1:42000",
        "10.0.0.8:5432",
        118,
        Some(21),
        Some((15_000, 3_000, 3_000)),
    );
    // An aiohttp client that abandoned 348 KB bodies; the server closed
    // its idle connections later, goodbye-like timing and all.
    let mut body = SnapBuilder::new().process(33, "python3", Some(30), Some(1024));
    for i in 0..3 {
        body = body.close_wait(
            &format!("10.0.0.1:{}", 44_100 + i),
            "10.0.0.7:8080",
            348_001,
            Some(33),
            Some((12_000, 2_000, 2_000)),
        );
    }
    vec![
        fires(
            "348 KB bodies abandoned unread",
            body.build(),
            Severity::Info,
        ),
        fires(
            "requests unread by busy workers",
            busy.build(),
            Severity::Warning,
        ),
        silent("an idle PostgreSQL connection's goodbye", goodbye.build()),
    ]
}

#[cfg(test)]
mod tests {
    use super::cases;
    use crate::diag::rules::{RuleId, cases::findings_of, cases::fires};
    use crate::diag::testkit::SnapBuilder;
    use crate::diag::threads::fixture::{obs, samples};

    /// Workers blocked reading from PostgreSQL on this host: the hint
    /// names it, and the evidence carries the samples.
    #[test]
    fn workers_blocked_on_a_downstream_name_it() {
        let mut b = SnapBuilder::new()
            .listen("0.0.0.0:8000", Some(30), 0, 128)
            .process(30, "gunicorn", None, None)
            .process(5, "postgres", None, None)
            .listen("127.0.0.1:5432", Some(5), 0, 128)
            .established("127.0.0.1:41000", "127.0.0.1:5432", Some(30));
        for i in 0..11 {
            b = b.close_wait(
                "10.0.0.1:8000",
                &format!("10.1.0.{i}:5{i:04}"),
                300,
                Some(30),
                Some((40_000, 30_000, 29_000)),
            );
        }
        let mut snap = b.build();
        let inode = snap.sockets[2].inode;
        let blocked = || obs("S", Some("recvfrom"), Some(inode));
        snap.processes.get_mut(&30).unwrap().threads =
            Some(samples(vec![blocked(), blocked(), blocked(), blocked()]));
        let f = &findings_of(
            RuleId::CloseWaitUnreadData,
            &fires("x", snap, crate::diag::Severity::Warning),
        )[0];
        assert!(
            f.hint.contains("all 4 threads were blocked in recvfrom() on connections to 127.0.0.1:5432 (postgres, pid 5)"),
            "{}",
            f.hint
        );
        assert!(
            f.hint.contains("They wait on postgres, pid 5"),
            "{}",
            f.hint
        );
        assert!(!f.hint.contains("thread dump"), "{}", f.hint);
        let v = serde_json::to_value(&f.evidence).unwrap();
        assert_eq!(v["threads"]["pattern"], "blocked-on-peer");
        assert_eq!(
            v["threads"]["processes"][0]["threads"][0]["seen"][0]["syscall"],
            "recvfrom"
        );
        assert_eq!(
            v["threads"]["processes"][0]["threads"][0]["seen"][0]["peer"],
            "127.0.0.1:5432"
        );
    }

    #[test]
    fn an_abandoned_response_is_unread_not_a_blocked_reader() {
        let f = &findings_of(RuleId::CloseWaitUnreadData, &cases()[0])[0];
        assert!(
            f.hint.contains("1044000 bytes") && f.hint.contains("stopped reading"),
            "{}",
            f.hint
        );
        for not in ["thread dump", "blocked reader", "waits"] {
            assert!(!f.hint.contains(not), "{not}: {}", f.hint);
        }
        assert!(findings_of(RuleId::CloseWaitNeverRead, &cases()[0]).is_empty());
    }
}
