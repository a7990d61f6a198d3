//! `fd-exhaustion-risk`: a process near its RLIMIT_NOFILE. Judged from
//! its share of the limit alone: one snapshot cannot measure a leak rate
//! (that is `close-wait-growing`'s job, over samples).

use super::Finding;
use super::{Ctx, Doc, Evidence, RuleId};
use crate::diag::types::{Owner, Severity};
use crate::diag::words::who;
use crate::model::TcpState;
use serde::Serialize;
use std::collections::BTreeMap;

pub const DOC: Doc = Doc {
    id: "fd-exhaustion-risk",
    title: "Process near its open-file limit (RLIMIT_NOFILE)",
    meaning: "A process that holds reported sockets uses most of its soft RLIMIT_NOFILE (at least the policy's share: 80 % for a warning, 95 % critical). At the limit accept(), socket() and open() fail with EMFILE ('too many open files'). Each leaked CLOSE_WAIT or stale socket keeps one fd. The finding never extrapolates a rate from one scan; over samples, close-wait-growing says when the limit will be reached.",
    confirm: "ls /proc/PID/fd | wc -l against 'Max open files' in /proc/PID/limits; the application logs EMFILE.",
    fix: "Fix the leak the other findings name (the missing close()); restarting the process frees its fds (a process that has reached the limit is already failing with EMFILE). Raising the limit only buys time, unless the process legitimately needs that many connections.",
    avoid: "Raising ulimit -n as the fix for a leak.",
};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FdEvidence {
    pub pid: u32,
    pub comm: String,
    pub fd_count: usize,
    pub nofile_soft: u64,
    /// fd_count / nofile_soft.
    pub fd_ratio: f64,
    /// CLOSE_WAIT sockets the process holds.
    pub close_wait: usize,
    /// Socket fds in no table.
    pub stale_socket_fds: usize,
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
    let mut cw: BTreeMap<u32, usize> = BTreeMap::new();
    for g in ctx.groups.iter().filter(|g| g.owner == Owner::Process) {
        if let Some(pid) = g.pid {
            let e = cw.entry(pid).or_default();
            if g.state == TcpState::CloseWait {
                *e += g.count;
            }
        }
    }
    let mut out = Vec::new();
    for (pid, close_wait) in cw {
        let Some(p) = ctx.snap.processes.get(&pid) else {
            continue;
        };
        let (Some(fds), Some(soft)) = (p.fd_count, p.nofile_soft.filter(|&s| s > 0)) else {
            continue;
        };
        let ratio = fds as f64 / soft as f64;
        let severity = if ratio >= ctx.policy.fd_ratio_crit {
            Severity::Critical
        } else if ratio >= ctx.policy.fd_ratio_warn {
            Severity::Warning
        } else {
            continue;
        };
        let label = p.label();
        let owner = who(Some(pid), Some(&label));
        let stale = p.stale_socket_fds.unwrap_or(0);
        // Every fd number below the soft limit is taken: the next
        // accept(), socket() or open() fails with EMFILE (fs/file.c,
        // alloc_fd), now, not later.
        let reached = fds as u64 >= soft;
        let (severity, summary, hint) = if reached {
            (
                Severity::Critical,
                format!(
                    "{owner} has reached its open-file limit: {fds} of {soft} file descriptors open, {close_wait} of them CLOSE_WAIT sockets"
                ),
                format!(
                    "At RLIMIT_NOFILE ({soft}) accept(), socket() and open() fail with EMFILE ('too many open files'): {owner} can open no connection or file until it closes one. If the CLOSE_WAIT ({close_wait}) or stale ({stale}) sockets are a leak, restart {owner} to free them now and fix the missing close(); raising the limit only buys time."
                ),
            )
        } else {
            (
                severity,
                format!(
                    "{owner} has {fds} of {soft} file descriptors open ({:.0} %), {close_wait} of them CLOSE_WAIT sockets",
                    ratio * 100.0
                ),
                format!(
                    "At RLIMIT_NOFILE ({soft}) accept() and open() fail with EMFILE ('too many open files'). If the CLOSE_WAIT ({close_wait}) or stale ({stale}) sockets are a leak, fix the missing close() and restart {owner} before it reaches the limit; raising the limit only buys time. `cwdiag watch --pid {pid}` shows whether the count grows."
                ),
            )
        };
        out.push(Finding {
            rule_id: RuleId::FdExhaustionRisk,
            severity,
            summary,
            hint,
            evidence: Evidence::Fds(FdEvidence {
                pid,
                comm: p.comm.clone(),
                fd_count: fds,
                nofile_soft: soft,
                fd_ratio: crate::diag::group::round3(ratio),
                close_wait,
                stale_socket_fds: stale,
            }),
        });
    }
    out
}

#[cfg(test)]
pub fn cases() -> Vec<super::cases::Case> {
    use super::cases::{fires, silent};
    use crate::diag::testkit::SnapBuilder;
    let with = |fds: usize, soft: u64, cw: usize, age_ms: u32| {
        let mut b = SnapBuilder::new().process(80, "java", Some(fds), Some(soft));
        for i in 0..cw {
            let local = format!("10.0.0.1:{}", 45_000 + i);
            b = b.close_wait(
                &local,
                "10.0.0.7:80",
                1,
                Some(80),
                Some((age_ms, age_ms, age_ms)),
            );
        }
        b.build()
    };
    vec![
        fires(
            "1024 of 1024 fds: at the limit",
            with(1024, 1024, 900, 60_000),
            Severity::Critical,
        ),
        fires(
            "990 of 1024 fds",
            with(990, 1024, 40, 60_000),
            Severity::Critical,
        ),
        fires(
            "850 of 1024 fds",
            with(850, 1024, 40, 60_000),
            Severity::Warning,
        ),
        // One transient keep-alive socket, 8 of 20000 fds, 1 s old: the
        // old single-scan projection said "limit in ~9h".
        silent(
            "a JDK keep-alive cache's transient CLOSE_WAIT",
            with(8, 20_000, 1, 1_200),
        ),
        silent(
            "a bounded 50-connection pool at 55 of 20000 fds",
            with(55, 20_000, 50, 3_000),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::cases;
    use crate::diag::rules::{RuleId, cases::findings_of};

    #[test]
    fn at_the_limit_it_has_reached_it_not_will() {
        let c = cases();
        let at = &findings_of(RuleId::FdExhaustionRisk, &c[0])[0];
        assert!(
            at.summary.contains("has reached its open-file limit"),
            "{}",
            at.summary
        );
        assert!(
            at.hint.contains("EMFILE") && !at.hint.contains("before it reaches"),
            "{}",
            at.hint
        );
        let near = &findings_of(RuleId::FdExhaustionRisk, &c[1])[0];
        assert!(near.summary.contains("990 of 1024"), "{}", near.summary);
        assert!(!near.summary.contains("reached"), "{}", near.summary);
    }
}
