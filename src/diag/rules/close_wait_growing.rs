//! `close-wait-growing`: a CLOSE_WAIT count that rose at every sample.
//! The only place a leak rate is measured: a slope over samples, never
//! one snapshot's count over its oldest age.

use super::Finding;
use super::{Doc, Evidence, RuleId};
use crate::diag::types::Series;
use crate::diag::types::{Direction, Severity};
use crate::diag::words::who;
use crate::model::Process;
use crate::model::TcpState;
use serde::Serialize;
use std::collections::BTreeMap;

pub const DOC: Doc = Doc {
    id: "close-wait-growing",
    title: "CLOSE_WAIT count rising at every sample",
    meaning: "Over several samples (scan --samples, assert --samples, watch, or the exporter's history in Prometheus), the CLOSE_WAIT sockets of one process and port only grew. A pool's idle handful stays steady; a count that only grows is a leak that ends in EMFILE ('too many open files') at RLIMIT_NOFILE.",
    confirm: "`cwdiag watch` shows the group's delta and rate per minute climbing; `cwdiag assert --samples 5 --interval 10s --max-close-wait-growth 0` fails naming it.",
    fix: "Find the missing close() on the EOF and error paths of that process (the Recv-Q rules say which path); restart it for relief until the fix ships.",
    avoid: "Raising ulimit -n or any sysctl: it only moves the day the process runs out.",
};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GrowthEvidence {
    pub state: TcpState,
    /// Count in the last sample.
    pub count: usize,
    pub pid: Option<u32>,
    pub comm: Option<String>,
    pub direction: Direction,
    pub port: u16,
    /// Sockets gained between the first and the last sample.
    pub delta: i64,
    /// Measured growth per minute.
    pub rate_per_min: f64,
    /// First and last count and the number of samples.
    pub first: usize,
    pub samples: usize,
    /// Open fds and soft RLIMIT_NOFILE of the owner (last sample).
    pub fd_count: Option<usize>,
    pub nofile_soft: Option<u64>,
    /// Time until the owner reaches its fd limit at the measured rate, s.
    pub fd_limit_eta_s: Option<u64>,
}

/// The rule's registry entry. Growth is judged over samples
/// ([`detect`], called by `diag::growth`), never in one snapshot.
pub struct Def;

impl super::Rule for Def {
    fn doc(&self) -> &'static Doc {
        &DOC
    }

    fn detect(&self, _: &super::Ctx) -> Vec<Finding> {
        Vec::new()
    }

    #[cfg(test)]
    fn cases(&self) -> Vec<super::cases::Case> {
        cases()
    }
}

fn process_label(pid: Option<u32>, processes: Option<&BTreeMap<u32, Process>>) -> Option<String> {
    processes?.get(&pid?).map(|p| p.label())
}

/// A finding per CLOSE_WAIT series that rose at every sample (at least
/// three samples).
/// `processes`: the owners as of the last sample (fd counts, limits).
pub fn detect(series: &[Series], processes: Option<&BTreeMap<u32, Process>>) -> Vec<Finding> {
    series
        .iter()
        .filter(|s| s.state == TcpState::CloseWait && s.rising && s.counts.len() >= 3)
        .map(|s| {
            let label = process_label(s.pid, processes);
            let owner = who(s.pid, label.as_deref().or(s.comm.as_deref())).to_string();
            let place = match s.direction {
                Direction::Inbound => format!("inbound on port {}", s.port),
                Direction::Outbound => format!("to port {}", s.port),
            };
            let process = s.pid.and_then(|p| processes.and_then(|m| m.get(&p)));
            let fd_count = process.and_then(|p| p.fd_count);
            let soft = process.and_then(|p| p.nofile_soft);
            let eta = match (fd_count, soft) {
                (Some(fds), Some(soft)) if s.rate_per_min > 0.0 => {
                    let left = soft.saturating_sub(fds as u64) as f64;
                    Some((left / (s.rate_per_min / 60.0)).min(1e12) as u64)
                }
                _ => None,
            };
            let now = s.counts.last().copied().unwrap_or(0);
            let first = s.counts.first().copied().unwrap_or(0);
            let reached = matches!((fd_count, soft), (Some(fds), Some(soft)) if fds as u64 >= soft);
            let eta_words = eta
                .filter(|_| !reached)
                .map(|e| {
                    format!(
                        "; at this rate it reaches its fd limit ({}) in ~{}",
                        soft.unwrap_or(0),
                        crate::units::duration(e.saturating_mul(1000))
                    )
                })
                .unwrap_or_else(|| {
                    if reached {
                        format!(
                            "; it has reached its fd limit ({}): accept() and open() fail with EMFILE",
                            soft.unwrap_or(0)
                        )
                    } else {
                        String::new()
                    }
                });
            Finding {
                rule_id: RuleId::CloseWaitGrowing,
                severity: Severity::Critical,
                summary: format!(
                    "CLOSE_WAIT of {owner} {place} rose at every one of {} samples: {first} -> {now} (+{:.1}/min){eta_words}",
                    s.counts.len(),
                    s.rate_per_min
                ),
                evidence: Evidence::Growth(GrowthEvidence {
                    state: TcpState::CloseWait,
                    count: now,
                    pid: s.pid,
                    comm: s.comm.clone(),
                    direction: s.direction,
                    port: s.port,
                    delta: s.delta,
                    rate_per_min: s.rate_per_min,
                    first,
                    samples: s.counts.len(),
                    fd_count,
                    nofile_soft: soft,
                    fd_limit_eta_s: eta,
                }),
                hint: format!(
                    "A steady CLOSE_WAIT count can be a pool's idle handful; one that only grows is a leak: {owner} is not calling close() after its peers hang up, and will run out of file descriptors. Find the missing close() on the EOF and error paths; no sysctl helps. Restart the process for relief."
                ),
            }
        })
        .collect()
}

#[cfg(test)]
pub fn cases() -> Vec<super::cases::Case> {
    use super::cases::Case;
    use crate::diag::testkit::leaky_sample as sample;
    use crate::diag::types::Policy;
    vec![
        Case {
            name: "18 -> 20 -> 23 over two seconds",
            samples: vec![sample(18, 0), sample(20, 1000), sample(23, 2000)],
            policy: Policy::default(),
            expect: Some(Severity::Critical),
        },
        Case {
            name: "a steady pool: 30, 30, 30",
            samples: vec![sample(30, 0), sample(30, 1000), sample(30, 2000)],
            policy: Policy::default(),
            expect: None,
        },
        Case {
            name: "not monotonic: 20, 24, 22",
            samples: vec![sample(20, 0), sample(24, 1000), sample(22, 2000)],
            policy: Policy::default(),
            expect: None,
        },
        Case {
            name: "160 -> 162 -> 162 is not rising at every sample",
            samples: vec![sample(160, 0), sample(162, 1000), sample(162, 2000)],
            policy: Policy::default(),
            expect: None,
        },
    ]
}

#[cfg(test)]
mod tests {
    use crate::diag::rules::RuleId;
    use crate::diag::rules::cases::{Case, findings_of};
    use crate::diag::testkit::leaky_sample;

    #[test]
    fn at_the_fd_limit_growth_says_it_has_reached_it() {
        // 100 + n fds of 1024: the last sample holds 924 CLOSE_WAIT, 1024 fds.
        let case = Case {
            name: "growing to the limit",
            samples: vec![
                leaky_sample(900, 0),
                leaky_sample(910, 1000),
                leaky_sample(924, 2000),
            ],
            policy: Default::default(),
            expect: Some(crate::diag::Severity::Critical),
        };
        let f = &findings_of(RuleId::CloseWaitGrowing, &case)[0];
        assert!(
            f.summary.contains("has reached its fd limit (1024)"),
            "{}",
            f.summary
        );
        assert!(!f.summary.contains("in ~"), "{}", f.summary);
        let case = Case {
            samples: vec![
                leaky_sample(18, 0),
                leaky_sample(20, 1000),
                leaky_sample(23, 2000),
            ],
            ..case
        };
        let f = &findings_of(RuleId::CloseWaitGrowing, &case)[0];
        assert!(
            f.summary.contains("reaches its fd limit (1024) in ~"),
            "{}",
            f.summary
        );
    }
}
