//! The words of a finding: a one-line summary and a short, correct hint
//! built from its evidence. Facts follow `tcp-states.md` (kernel source);
//! no hint suggests a sysctl for CLOSE_WAIT or `tcp_fin_timeout` for
//! TIME_WAIT.

use crate::classify::{CloseWaitKind, Direction, Evidence, Owner};
use crate::units::age;

fn who(e: &Evidence) -> String {
    match (e.pid, &e.comm) {
        (Some(pid), Some(comm)) => format!("{comm} (pid {pid})"),
        (Some(pid), None) => format!("pid {pid}"),
        _ => "an unknown process".to_string(),
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Summary and hint for a CLOSE_WAIT finding.
pub fn close_wait(kind: CloseWaitKind, owner: Owner, e: &Evidence) -> (String, String) {
    let port = e.port.unwrap_or(0);
    let n = e.count;
    let socks = plural(n, "CLOSE_WAIT socket", "CLOSE_WAIT sockets");
    let place = match e.direction {
        Some(Direction::Inbound) => format!("inbound on port {port}"),
        _ => match e.peers.as_slice() {
            [one] => format!("to {one}"),
            _ => format!("to peers on port {port}"),
        },
    };
    let what = match kind {
        CloseWaitKind::EofNotClosed => "read EOF, never closed",
        CloseWaitKind::NeverRead => "not read since the peer closed",
        CloseWaitKind::UnreadData => "reader stopped with data unread",
    };
    let age_note = e
        .oldest_age_ms
        .map(|ms| format!(", oldest ~{}", age(ms)))
        .unwrap_or_default();
    let summary = format!("{socks} {place} held by {}{age_note}: {what}", who(e));

    let culprit = who(e);
    let mut hint = match owner {
        Owner::None => format!(
            "No process holds these sockets (inode 0): they were never accept()ed. The listener on port {port} is not draining its accept queue; check that its accept loop is running and not blocked."
        ),
        Owner::Unknown | Owner::NotResolved => {
            "The owning process could not be identified (run as root to read every /proc/PID/fd). "
                .to_string()
                + &app_fix(kind, e.direction, port, "the owner")
        }
        Owner::Process => app_fix(kind, e.direction, port, &culprit),
    };
    hint.push_str(" No sysctl, keepalive or SO_LINGER setting fixes CLOSE_WAIT; only close() does. Emergency relief: restart the process.");
    (summary, hint)
}

fn app_fix(kind: CloseWaitKind, direction: Option<Direction>, port: u16, who: &str) -> String {
    let inbound = direction == Some(Direction::Inbound);
    match (kind, inbound) {
        (CloseWaitKind::EofNotClosed, true) => format!(
            "Clients hung up and {who} read the EOF but never called close(): add close() where read() returns 0 (and on errors) in the handler for port {port}."
        ),
        (CloseWaitKind::EofNotClosed, false) => format!(
            "The server on port {port} closed and {who} read the EOF but never called close(): close the connection on EOF and on errors (in Go, always resp.Body.Close())."
        ),
        (CloseWaitKind::NeverRead, true) => format!(
            "Clients hung up on port {port} and {who} never read these connections again: handlers left idle or waiting elsewhere. Watch idle connections for EOF (poll/read timeout) and close() them."
        ),
        (CloseWaitKind::NeverRead, false) => format!(
            "The server on port {port} closed idle connections that {who} keeps in a pool without checking them. Evict idle connections sooner than the server's idle timeout (idle-timeout/maxLifetime/evictIdleConnections)."
        ),
        (CloseWaitKind::UnreadData, _) => format!(
            "{who} stopped reading these connections on port {port} with data still queued: a hung or blocked handler (take a thread dump or strace it). Closing them will send RST, not FIN, because unread data is discarded."
        ),
    }
}

/// Rule id, summary and hint for a TIME_WAIT finding.
pub fn time_wait(direction: Direction, e: &Evidence) -> (&'static str, String, String) {
    let n = e.count;
    let port = e.port.unwrap_or(0);
    match direction {
        Direction::Inbound => (
            "time-wait-server-closes",
            format!("{n} TIME_WAIT sockets on local port {port}: this host closed them first"),
            format!(
                "The server on port {port} is the active closer, so it keeps TIME_WAIT for a fixed 60 s. This costs the server no ports and is usually harmless; watch tcp_max_tw_buckets. To reduce it, keep client connections alive or let clients close first. tcp_fin_timeout does not shorten TIME_WAIT, and tcp_tw_reuse only affects outgoing connects."
            ),
        ),
        Direction::Outbound => {
            let dest = e
                .peers
                .first()
                .cloned()
                .unwrap_or_else(|| format!("port {port}"));
            let budget = e
                .port_budget
                .unwrap_or(crate::classify::DEFAULT_PORT_BUDGET);
            let pct = e
                .port_ratio
                .map(|r| format!(" ({:.0} % of {budget} ephemeral ports)", r * 100.0))
                .unwrap_or_default();
            (
                "time-wait-client-churn",
                format!(
                    "{n} TIME_WAIT sockets towards {dest}{pct}: ~{:.0} closes/s",
                    n as f64 / 60.0
                ),
                format!(
                    "This host opens and closes connections to {dest}; each close holds a local port for 60 s, so one destination sustains about {} new connections/s. Reuse connections (HTTP keep-alive, a pool sized to the real concurrency). tcp_tw_reuse=1 lets outgoing connects reuse TIME_WAIT ports when TCP timestamps are on; SO_LINGER {{1,0}} skips TIME_WAIT only where an RST on close is acceptable. Lowering tcp_fin_timeout does not shorten TIME_WAIT; never use tcp_tw_recycle (removed in 4.12).",
                    budget / 60
                ),
            )
        }
    }
}
