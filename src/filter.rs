//! Socket filters shared by every command: state, port, pid, comm, peer,
//! family. Pure: they look at a socket and the owner the snapshot gives it.

use crate::model::{Process, Socket, TcpState};
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

/// `--peer ADDR[:PORT]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerFilter {
    pub ip: IpAddr,
    pub port: Option<u16>,
}

impl FromStr for PeerFilter {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(sa) = s.parse::<SocketAddr>() {
            return Ok(PeerFilter {
                ip: sa.ip(),
                port: Some(sa.port()),
            });
        }
        let bare = s.trim_start_matches('[').trim_end_matches(']');
        bare.parse::<IpAddr>()
            .map(|ip| PeerFilter { ip, port: None })
            .map_err(|_| format!("invalid peer '{s}': expected ADDR or ADDR:PORT, e.g. 10.0.0.5:5432 or [2001:db8::1]:443"))
    }
}

/// `--family 4|6`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl FromStr for Family {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "4" | "inet" | "ipv4" => Ok(Family::V4),
            "6" | "inet6" | "ipv6" => Ok(Family::V6),
            _ => Err(format!("invalid family '{s}': expected 4 or 6")),
        }
    }
}

/// `--comm NAME`: a process name, matched exactly against the kernel's
/// comm, the executable's name (`/proc/PID/exe`) and argv[0]'s name; or,
/// when it holds `*` (any characters) or `?` (one character), a pattern
/// matched against the same names.
#[derive(Debug, Clone)]
pub struct CommPattern {
    text: String,
    glob: Option<wildmatch::WildMatch>,
}

impl CommPattern {
    /// What the user typed.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Does one of `p`'s names (see [`Process::names`]) match?
    pub fn matches(&self, p: &Process) -> bool {
        p.names().into_iter().any(|n| self.matches_name(n))
    }

    pub fn matches_name(&self, name: &str) -> bool {
        match &self.glob {
            Some(g) => g.matches(name),
            None => name == self.text,
        }
    }
}

impl PartialEq for CommPattern {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl FromStr for CommPattern {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(
                "empty process name: expected e.g. --comm nginx or --comm 'billing-*'".into(),
            );
        }
        let glob = s.contains(['*', '?']).then(|| wildmatch::WildMatch::new(s));
        Ok(CommPattern {
            text: s.to_string(),
            glob,
        })
    }
}

/// Which sockets a command looks at. Empty lists match everything.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub states: Vec<TcpState>,
    pub ports: Vec<u16>,
    pub pids: Vec<u32>,
    pub comms: Vec<CommPattern>,
    pub peer: Option<PeerFilter>,
    pub family: Option<Family>,
}

impl Filter {
    /// True when only the state can exclude sockets: the kernel mask is
    /// then the whole filter.
    pub fn needs_owner(&self) -> bool {
        !self.pids.is_empty() || !self.comms.is_empty()
    }

    /// Does `p` pass the process selectors (`--pid`, `--comm`)?
    pub fn selects_process(&self, pid: u32, p: &Process) -> bool {
        (self.pids.is_empty() || self.pids.contains(&pid))
            && (self.comms.is_empty() || self.comms.iter().any(|c| c.matches(p)))
    }

    /// Does `s` (owned by `owner`, if known) pass?
    pub fn matches(&self, s: &Socket, owner: Option<&Process>) -> bool {
        (self.states.is_empty() || self.states.contains(&s.state))
            && (self.ports.is_empty()
                || self.ports.contains(&s.local.port())
                || self.ports.contains(&s.peer.port()))
            && (self.pids.is_empty() || s.pid.is_some_and(|p| self.pids.contains(&p)))
            && (self.comms.is_empty()
                || owner.is_some_and(|p| self.comms.iter().any(|c| c.matches(p))))
            && self.peer.as_ref().is_none_or(|p| {
                same_ip(p.ip, s.peer.ip()) && p.port.is_none_or(|port| port == s.peer.port())
            })
            && match self.family {
                None => true,
                Some(Family::V4) => !s.is_ipv6(),
                Some(Family::V6) => s.is_ipv6(),
            }
    }
}

/// Which process selectors (`--pid`, `--comm`) name some process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Selector values no process matches, as typed: `--comm nosuchproc`,
    /// `--pid 4242`.
    pub unmatched: Vec<String>,
    /// Some process passes every process selector at once.
    pub together: bool,
}

impl Filter {
    /// Which selectors the `processes` (pid and names) match; stops
    /// reading them once every selector has matched.
    pub fn selection(&self, processes: impl IntoIterator<Item = (u32, Process)>) -> Selection {
        let mut pid_seen = vec![false; self.pids.len()];
        let mut comm_seen = vec![false; self.comms.len()];
        let mut together = false;
        for (pid, p) in processes {
            for (seen, want) in pid_seen.iter_mut().zip(&self.pids) {
                *seen |= *want == pid;
            }
            for (seen, c) in comm_seen.iter_mut().zip(&self.comms) {
                *seen = *seen || c.matches(&p);
            }
            together = together || self.selects_process(pid, &p);
            if together && pid_seen.iter().chain(&comm_seen).all(|s| *s) {
                break;
            }
        }
        let mut unmatched: Vec<String> = Vec::new();
        for (seen, pid) in pid_seen.iter().zip(&self.pids) {
            if !seen {
                unmatched.push(format!("--pid {pid}"));
            }
        }
        for (seen, c) in comm_seen.iter().zip(&self.comms) {
            if !seen {
                unmatched.push(format!("--comm {}", crate::procname::printable(c.as_str())));
            }
        }
        Selection {
            unmatched,
            together,
        }
    }
}

impl Selection {
    /// One line saying what matched nothing (`what` names where it was
    /// looked for: "running process"), or `None` when all is well.
    pub fn warning(&self, f: &Filter, what: &str) -> Option<String> {
        if !self.unmatched.is_empty() {
            let verb = if self.unmatched.len() == 1 {
                "matches"
            } else {
                "match"
            };
            return Some(format!("{} {verb} no {what}", self.unmatched.join(", ")));
        }
        if !self.together && f.needs_owner() {
            return Some(format!(
                "no {what} matches --pid and --comm together (each matches another process)"
            ));
        }
        None
    }
}

/// Compares addresses, treating `::ffff:a.b.c.d` as `a.b.c.d`.
fn same_ip(a: IpAddr, b: IpAddr) -> bool {
    a.to_canonical() == b.to_canonical()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_peers() {
        assert_eq!(
            "10.0.0.5:5432".parse::<PeerFilter>().unwrap().port,
            Some(5432)
        );
        assert_eq!("10.0.0.5".parse::<PeerFilter>().unwrap().port, None);
        assert_eq!("[::1]:80".parse::<PeerFilter>().unwrap().port, Some(80));
        assert_eq!("::1".parse::<PeerFilter>().unwrap().port, None);
        assert!("nope".parse::<PeerFilter>().is_err());
    }

    fn worker() -> Process {
        let mut p = Process::named("billing-sync-wo");
        p.exe = Some("/opt/billing/billing-sync-worker".into());
        p.cmdline = Some(vec!["/opt/billing/billing-sync-worker".into(), "-q".into()]);
        p
    }

    #[test]
    fn comm_matches_comm_exe_and_argv0_exactly() {
        let p = worker();
        for yes in [
            "billing-sync-wo",
            "billing-sync-worker",
            "billing-*",
            "billing-sync-w?rker",
            "*",
        ] {
            assert!(yes.parse::<CommPattern>().unwrap().matches(&p), "{yes}");
        }
        // Exact, not a prefix or substring; a glob must match a whole name.
        for no in [
            "billing",
            "billing-sync-work",
            "sync",
            "*-sync",
            "billing-sync-worker2",
        ] {
            assert!(!no.parse::<CommPattern>().unwrap().matches(&p), "{no}");
        }
        // argv[0] alone (exe unreadable): still matched.
        let mut q = Process::named("billing-sync-wo");
        q.cmdline = Some(vec!["./billing-sync-worker".into()]);
        assert!(
            "billing-sync-worker"
                .parse::<CommPattern>()
                .unwrap()
                .matches(&q)
        );
        // A python service: the interpreter's names, not the script's.
        let mut py = Process::named("python3");
        py.exe = Some("/usr/bin/python3.11".into());
        py.cmdline = Some(vec!["python3".into(), "worker.py".into()]);
        assert!("python3.11".parse::<CommPattern>().unwrap().matches(&py));
        assert!(!"worker.py".parse::<CommPattern>().unwrap().matches(&py));
    }

    #[test]
    fn selection_says_which_selectors_match_no_process() {
        let procs = || vec![(10, worker()), (11, Process::named("sshd"))];
        let f = |pids: &[u32], comms: &[&str]| Filter {
            pids: pids.to_vec(),
            comms: comms.iter().map(|c| c.parse().unwrap()).collect(),
            ..Filter::default()
        };
        let all_fine = f(&[10], &["billing-sync-worker"]);
        let s = all_fine.selection(procs());
        assert_eq!(s.warning(&all_fine, "running process"), None, "{s:?}");
        // A healthy look-alike: the process exists (socket or not): silent.
        let sshd = f(&[], &["sshd"]);
        assert_eq!(
            sshd.selection(procs()).warning(&sshd, "running process"),
            None
        );
        let typo = f(&[], &["billing-sync-wrker", "sshd"]);
        assert_eq!(
            typo.selection(procs())
                .warning(&typo, "running process")
                .unwrap(),
            "--comm billing-sync-wrker matches no running process"
        );
        let gone = f(&[4242], &["nosuch"]);
        assert_eq!(
            gone.selection(procs())
                .warning(&gone, "running process")
                .unwrap(),
            "--pid 4242, --comm nosuch match no running process"
        );
        let apart = f(&[11], &["billing-*"]);
        let s = apart.selection(procs());
        assert!(s.unmatched.is_empty() && !s.together);
        assert!(
            s.warning(&apart, "running process")
                .unwrap()
                .contains("together")
        );
        // Nothing selected by process: nothing to say.
        let none = Filter::default();
        assert_eq!(
            none.selection(Vec::new()).warning(&none, "running process"),
            None
        );
    }

    #[test]
    fn comm_patterns_reject_empty_names() {
        assert!("".parse::<CommPattern>().is_err());
    }

    #[test]
    fn mapped_v4_peer_matches_v4_filter() {
        assert!(same_ip(
            "10.1.2.3".parse().unwrap(),
            "::ffff:10.1.2.3".parse().unwrap()
        ));
    }
}
