//! The rules. Each lives in a module of its own holding what it detects,
//! its typed evidence, its words (summary and hint), its `explain` text
//! and its tests, behind the [`Rule`] trait. The `rules!` list below is
//! the one registry: [`RuleId`], [`RULES`], `explain`, the JSON `rule_id`,
//! the Prometheus `rule_id` label and the README's rule table all come
//! from it, so a new rule is its file and one line there. The registry
//! test below fails for a rule that no test shows firing and staying
//! silent. Family files (`close_wait`, `time_wait`, `sysctl`) are
//! libraries their rules call; they name no rule.

pub use accept_queue_not_drained::{AcceptQueueEvidence, ListenerEvidence};
pub use close_wait::{CloseWaitEvidence, CloseWaitKind};
pub use close_wait_growing::GrowthEvidence;
pub use ephemeral_ports_exhausted::PortsEvidence;
pub use fd_exhaustion_risk::FdEvidence;
pub use stale_socket_fds::StaleEvidence;
pub use sysctl::SysctlEvidence;
pub use time_wait::TimeWaitEvidence;

pub(crate) use close_wait_growing::detect as growing;

use super::host::Host;
use super::types::{Group, Policy, Severity};
use crate::model::{Snapshot, Socket, TcpState};
use rustc_hash::FxHashSet;
use serde::{Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;

/// A rule's write-up, printed by `cwdiag explain RULE`.
pub struct Doc {
    pub id: &'static str,
    pub title: &'static str,
    pub meaning: &'static str,
    pub confirm: &'static str,
    pub fix: &'static str,
    pub avoid: &'static str,
}

/// One rule: its write-up (whose `id` is the JSON `rule_id`), what it
/// detects in a snapshot, and the cases that show it firing and staying
/// silent. The rule decides each finding's severity in `detect`.
pub trait Rule: Sync {
    fn doc(&self) -> &'static Doc;
    /// The rule's findings in one snapshot.
    fn detect(&self, ctx: &Ctx) -> Vec<Finding>;
    /// Snapshots where it fires and healthy look-alikes where it stays
    /// silent: the registry test runs every one.
    #[cfg(test)]
    fn cases(&self) -> Vec<cases::Case>;
}

/// The one list of rules: each line declares the rule's module, its
/// [`RuleId`] variant and its entry in [`RULES`]. A rule module holds a
/// `pub struct Def` implementing [`Rule`]: the compiler rejects a line
/// without one, and the registry tests fail for a rule file without a
/// line and for a rule whose findings carry another rule's id.
macro_rules! rules {
    ($($variant:ident => $module:ident,)*) => {
        $(mod $module;)*

        /// Every rule cwdiag raises, in catalogue order (the order of
        /// [`RULES`], which is also the order findings of equal severity
        /// and count are listed in).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum RuleId {
            $($variant,)*
        }

        impl RuleId {
            pub const ALL: [RuleId; [$(stringify!($variant),)*].len()] = [$(RuleId::$variant,)*];
        }

        /// Every rule, indexed by [`RuleId`].
        pub static RULES: &[&dyn Rule] = &[$(&$module::Def,)*];
    };
}

rules! {
    CloseWaitEofNotClosed => close_wait_eof_not_closed,
    CloseWaitNeverRead => close_wait_never_read,
    CloseWaitUnreadData => close_wait_unread_data,
    CloseWaitGrowing => close_wait_growing,
    AcceptQueueNotDrained => accept_queue_not_drained,
    TimeWaitServerCloses => time_wait_server_closes,
    TimeWaitClientChurn => time_wait_client_churn,
    EphemeralPortsExhausted => ephemeral_ports_exhausted,
    TimeWaitBucketsFull => time_wait_buckets_full,
    SysctlTcpTwRecycle => sysctl_tcp_tw_recycle,
    SysctlFinTimeoutMyth => sysctl_fin_timeout_myth,
    SysctlKeepaliveMyth => sysctl_keepalive_myth,
    SysctlAbortOnOverflow => sysctl_abort_on_overflow,
    OrphansNearLimit => orphans_near_limit,
    FdExhaustionRisk => fd_exhaustion_risk,
    StaleSocketFds => stale_socket_fds,
}

/// Libraries the rules of one family call (shared evidence, readings and
/// words); they name no rule.
mod close_wait;
mod sysctl;
mod time_wait;

impl RuleId {
    /// The rule's registry entry.
    pub fn rule(self) -> &'static dyn Rule {
        RULES[self as usize]
    }

    /// The rule's write-up.
    pub fn doc(self) -> &'static Doc {
        self.rule().doc()
    }

    /// The kebab-case id (`close-wait-never-read`).
    pub fn as_str(self) -> &'static str {
        self.doc().id
    }

    pub fn parse(s: &str) -> Option<RuleId> {
        RuleId::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl fmt::Display for RuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for RuleId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// One claim about the host, with the numbers it rests on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    pub rule_id: RuleId,
    pub severity: Severity,
    pub summary: String,
    /// Typed per rule: the README's JSON section lists each rule's fields.
    pub evidence: Evidence,
    pub hint: String,
}

/// A finding's evidence: one shape per family of rules (the README lists
/// which rule carries which). Serialised without a tag: `rule_id` beside
/// it says which shape it is.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Evidence {
    CloseWait(Box<CloseWaitEvidence>),
    Growth(GrowthEvidence),
    AcceptQueue(AcceptQueueEvidence),
    TimeWait(TimeWaitEvidence),
    Ports(PortsEvidence),
    Sysctl(SysctlEvidence),
    Fds(FdEvidence),
    Stale(StaleEvidence),
}

impl Evidence {
    /// The number of sockets (or fds) the finding is about, for ordering.
    pub fn count(&self) -> usize {
        match self {
            Evidence::CloseWait(e) => e.count,
            Evidence::Growth(e) => e.count,
            Evidence::AcceptQueue(e) => e.count,
            Evidence::TimeWait(e) => e.count,
            Evidence::Ports(e) => e.count,
            Evidence::Sysctl(e) => e.count,
            Evidence::Fds(e) => e.close_wait,
            Evidence::Stale(e) => e.count,
        }
    }
}

/// What every rule may look at: the snapshot, the sockets the filters
/// selected, the groups built from them, and the policy.
pub struct Ctx<'a> {
    pub snap: &'a Snapshot,
    pub host: Host<'a>,
    pub selected: &'a [&'a Socket],
    /// The selected CLOSE_WAIT and TIME_WAIT sockets, in snapshot order:
    /// the rules about one of them read only its sockets, not every socket
    /// of a busy host.
    pub by_state: &'a ByState<'a>,
    pub groups: &'a [Group],
    pub states: &'a BTreeMap<TcpState, usize>,
    pub listen_ports: &'a FxHashSet<u16>,
    pub policy: &'a Policy,
    pub budget: u32,
    pub filter: &'a crate::filter::Filter,
    /// Closes measured across samples, when there were samples.
    pub sampled: Option<&'a crate::diag::closes::SampledCloses>,
    /// Closes counted from the kernel's tracepoints over a window
    /// (`--window`); preferred over the other measurements.
    pub events: Option<&'a crate::diag::closes::EventCloses>,
}

/// The CLOSE_WAIT and TIME_WAIT sockets among some, each list in the
/// order given, and how many sockets each state has. Only these two are
/// listed: ESTABLISHED, the bulk of a busy host, no rule reads on its own,
/// and a list of it would cost a pointer per socket.
#[derive(Debug, Default)]
pub struct ByState<'a> {
    counts: [usize; 16],
    close_wait: Vec<&'a Socket>,
    time_wait: Vec<&'a Socket>,
}

impl<'a> ByState<'a> {
    pub fn of(sockets: &[&'a Socket]) -> ByState<'a> {
        let slot = |s: TcpState| usize::from(s.number()) % 16;
        let mut counts = [0usize; 16];
        for s in sockets {
            counts[slot(s.state)] += 1;
        }
        let mut b = ByState {
            counts,
            close_wait: Vec::with_capacity(counts[slot(TcpState::CloseWait)]),
            time_wait: Vec::with_capacity(counts[slot(TcpState::TimeWait)]),
        };
        for s in sockets {
            match s.state {
                TcpState::CloseWait => b.close_wait.push(s),
                TcpState::TimeWait => b.time_wait.push(s),
                _ => {}
            }
        }
        b
    }

    /// How many sockets are in `state`.
    pub fn count(&self, state: TcpState) -> usize {
        self.counts[usize::from(state.number()) % 16]
    }

    pub fn close_wait(&self) -> &[&'a Socket] {
        &self.close_wait
    }

    pub fn time_wait(&self) -> &[&'a Socket] {
        &self.time_wait
    }
}

impl Ctx<'_> {
    /// How findings name a process: its full name and what it runs
    /// (`java -jar billing.jar`), escaped; `None` when unknown.
    pub fn label(&self, pid: Option<u32>) -> Option<String> {
        pid.and_then(|p| self.snap.processes.get(&p))
            .map(|p| p.label())
    }

    /// Does the process selection (--pid, --comm) take this process?
    pub fn selected_pid(&self, pid: u32) -> bool {
        let f = self.filter;
        (f.pids.is_empty() || f.pids.contains(&pid))
            && (f.comms.is_empty()
                || self
                    .snap
                    .processes
                    .get(&pid)
                    .is_some_and(|p| f.comms.iter().any(|c| c.matches(p))))
    }

    pub fn state_count(&self, s: TcpState) -> usize {
        self.states.get(&s).copied().unwrap_or(0)
    }
}

/// Every single-snapshot rule, in catalogue order. Growth is judged over
/// samples by [`growing`].
pub fn run(ctx: &Ctx) -> Vec<Finding> {
    RULES.iter().flat_map(|r| r.detect(ctx)).collect()
}

#[cfg(test)]
pub(crate) mod cases {
    //! Each rule's table of cases: snapshots where it fires and healthy
    //! look-alikes where it stays silent.
    use super::*;
    use crate::diag::types::Policy;

    pub struct Case {
        pub name: &'static str,
        /// One snapshot, or several samples for growth rules.
        pub samples: Vec<Snapshot>,
        pub policy: Policy,
        /// `Some(severity)`: the rule fires with it; `None`: silent.
        pub expect: Option<Severity>,
    }

    pub fn fires(name: &'static str, snap: Snapshot, severity: Severity) -> Case {
        Case {
            name,
            samples: vec![snap],
            policy: Policy::default(),
            expect: Some(severity),
        }
    }

    pub fn silent(name: &'static str, snap: Snapshot) -> Case {
        Case {
            name,
            samples: vec![snap],
            policy: Policy::default(),
            expect: None,
        }
    }

    pub fn of(id: RuleId) -> Vec<Case> {
        id.rule().cases()
    }

    /// The findings of `id` for a case: classify every sample, and judge
    /// growth over them when there are several.
    pub fn findings_of(id: RuleId, case: &Case) -> Vec<Finding> {
        let filter = crate::filter::Filter::default();
        // As `scan --samples` does: closes measured across the samples.
        let mut closes = crate::diag::closes::SampledCloses::default();
        let reports: Vec<_> = case
            .samples
            .iter()
            .map(|s| {
                let listen = crate::diag::group::listen_ports(s);
                closes.observe(s, |_| true, |x| crate::diag::group::direction(x, &listen));
                let sampled = (case.samples.len() > 1).then_some(&closes);
                crate::diag::classify_sampled(s, &filter, &case.policy, sampled)
            })
            .collect();
        let mut all =
            crate::diag::growth::findings(&crate::diag::growth::series(&reports), &reports);
        if let Some(last) = reports.last() {
            all.extend(last.findings.iter().cloned());
        }
        all.into_iter().filter(|f| f.rule_id == id).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::cases::*;
    use super::*;

    /// The registry test: every rule has a case where it fires and one
    /// where a healthy look-alike stays silent, and each holds.
    #[test]
    fn every_rule_fires_on_its_cases_and_stays_silent_on_look_alikes() {
        for id in RuleId::ALL {
            let cases = of(id);
            assert!(
                cases.iter().any(|c| c.expect.is_some()),
                "{id}: no case shows it firing"
            );
            assert!(
                cases.iter().any(|c| c.expect.is_none()),
                "{id}: no healthy look-alike"
            );
            for case in &cases {
                let got = findings_of(id, case);
                match case.expect {
                    Some(sev) => {
                        assert!(!got.is_empty(), "{id} / {}: did not fire", case.name);
                        assert!(
                            got.iter().any(|f| f.severity == sev),
                            "{id} / {}: severity {:?}, want {sev:?}: {got:#?}",
                            case.name,
                            got.iter().map(|f| f.severity).collect::<Vec<_>>()
                        );
                    }
                    None => assert!(
                        got.is_empty(),
                        "{id} / {}: fired on a healthy look-alike: {got:#?}",
                        case.name
                    ),
                }
                for f in &got {
                    assert!(!f.summary.is_empty() && !f.hint.is_empty());
                    assert_eq!(f.rule_id, id);
                }
            }
        }
    }

    /// A rule file left out of the list is not even compiled: every file
    /// here that holds a write-up must be in the list.
    #[test]
    fn every_rule_file_is_in_the_list() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/diag/rules");
        let listed: Vec<&str> = RULES.iter().map(|r| r.doc().id).collect();
        let mut files = 0;
        for e in std::fs::read_dir(dir).unwrap() {
            let path = e.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            if path.ends_with("mod.rs") || !text.contains("pub const DOC: Doc = Doc {") {
                continue;
            }
            files += 1;
            let stem = path
                .file_stem()
                .unwrap()
                .to_string_lossy()
                .replace('_', "-");
            assert!(
                listed.contains(&stem.as_str()),
                "{}: a rule file with no line in `rules!`",
                path.display()
            );
        }
        assert_eq!(files, RULES.len(), "one rule file per listed rule");
    }

    #[test]
    fn ids_are_unique_kebab_case_and_parse_back() {
        let mut ids: Vec<_> = RuleId::ALL.iter().map(|r| r.as_str()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), RuleId::ALL.len());
        for r in RuleId::ALL {
            assert_eq!(RuleId::parse(r.as_str()), Some(r));
            assert!(
                r.as_str()
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c == '-')
            );
        }
    }

    #[test]
    fn hints_never_repeat_the_myths() {
        for id in RuleId::ALL {
            for case in of(id) {
                for f in findings_of(id, &case) {
                    let h = f.hint.to_lowercase();
                    for myth in [
                        "tcp_tw_recycle=1",
                        "lower tcp_keepalive",
                        "set tcp_fin_timeout",
                        "so_reuseaddr",
                    ] {
                        assert!(!h.contains(myth), "{id}: hint repeats '{myth}': {}", f.hint);
                    }
                }
            }
        }
    }
}
