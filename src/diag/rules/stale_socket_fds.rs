//! `stale-socket-fds`: socket fds whose inode is in no socket table.

use super::Finding;
use super::{Ctx, Doc, Evidence, RuleId};
use crate::diag::types::Severity;
use crate::diag::words::who;
use serde::Serialize;

pub const DOC: Doc = Doc {
    id: "stale-socket-fds",
    title: "Socket fds that no socket table knows",
    meaning: "A socket fd whose inode is in no TCP, UDP, UNIX, raw, netlink or packet table is almost always a TCP connection the kernel already closed (an RST from the peer, or a keepalive or retransmission timeout; tcp_input.c:tcp_reset, tcp_timer.c:tcp_write_err) whose fd the application never close()d: lsof's \"can't identify protocol\" or \"protocol: TCP\". It is the CLOSE_WAIT leak after the kernel gave up on the connection, invisible to ss. cwdiag checks each such fd against a second look at the tables, taken after reading the fds, and counts only those still held and still in no table.",
    confirm: "lsof -p PID shows \"can't identify protocol\" / \"protocol: TCP\" entries; their number grows.",
    fix: "The same as for CLOSE_WAIT: close() on EOF and on errors. Restart the process for relief.",
    avoid: "A socket created in another network namespace and held by this process, or one created but not yet connected, also appears here: check before concluding.",
};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StaleEvidence {
    pub count: usize,
    pub pid: u32,
    pub comm: String,
    /// Socket inodes concerned (first few).
    pub inodes: Vec<u64>,
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

pub fn detect(ctx: &Ctx) -> Vec<Finding> {
    ctx.snap
        .processes
        .iter()
        .filter(|(pid, _)| ctx.selected_pid(**pid))
        .filter_map(|(&pid, p)| {
            let n = p.stale_socket_fds.filter(|&n| n > 0)?;
            let label = p.label();
            let owner = who(Some(pid), Some(&label));
            Some(Finding {
                rule_id: RuleId::StaleSocketFds,
                severity: Severity::Warning,
                summary: format!("{owner} holds {n} socket fds that no socket table knows"),
                hint: format!(
                    "These are most likely TCP connections the kernel already closed (RST from the peer or a keepalive timeout) whose fd pid {pid} never close()d: lsof shows them as \"can't identify protocol\". They are the same leak as CLOSE_WAIT, past the point where ss can see it: close() on EOF and on errors."
                ),
                evidence: Evidence::Stale(StaleEvidence {
                    count: n,
                    pid,
                    comm: p.comm.clone(),
                    inodes: p.stale_socket_inodes.clone(),
                }),
            })
        })
        .collect()
}

#[cfg(test)]
pub fn cases() -> Vec<super::cases::Case> {
    use super::cases::{fires, silent};
    use crate::diag::testkit::SnapBuilder;
    vec![
        fires(
            "30 fds of sockets reset by the peer",
            SnapBuilder::new()
                .stale(90, &(1..=30).collect::<Vec<u64>>())
                .build(),
            Severity::Warning,
        ),
        silent(
            "a process whose socket fds are all in the tables",
            SnapBuilder::new()
                .process(91, "redis-server", Some(40), Some(10_000))
                .build(),
        ),
    ]
}
