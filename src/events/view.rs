//! What `cwdiag trace` shows of an attributed event: the selection
//! (state, port, pid, comm, peer, family, namespace) and the two renderings
//! (a line for people, one JSON object per line). Pure.

use super::attrib::{Attributed, Evidence};
use super::decode::Kind;
use crate::escape::Escaped;
use crate::filter::Filter;
use crate::model::TcpState;
use serde::Serialize;

/// `event` in the JSON lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventName {
    State,
    ResetReceived,
    ResetSent,
}

/// One line of `trace --json`.
#[derive(Debug, Serialize)]
pub struct Line<'a> {
    pub ts_ms: u64,
    pub event: EventName,
    pub from: Option<&'static str>,
    pub to: Option<&'static str>,
    pub local: String,
    pub peer: String,
    pub pid: Option<u32>,
    pub comm: Option<&'a str>,
    pub cookie: Option<u64>,
    pub netns: Option<u64>,
    pub netns_evidence: Evidence,
}

fn state_name(n: u8) -> Option<&'static str> {
    TcpState::from_number(n).map(TcpState::name)
}

/// The event's shown form; `None` for events `trace` does not show
/// (socket destruction, used only for attribution).
pub fn line(a: &Attributed, ts_ms: u64) -> Option<Line<'_>> {
    let (event, from, to) = match a.event.kind {
        Kind::State { old, new } => (EventName::State, state_name(old), state_name(new)),
        Kind::ResetReceived => (EventName::ResetReceived, None, None),
        Kind::ResetSent { state } => (EventName::ResetSent, state_name(state), None),
        Kind::Destroy => return None,
    };
    Some(Line {
        ts_ms,
        event,
        from,
        to,
        local: a.event.local.to_string(),
        peer: a.event.peer.to_string(),
        pid: a.pid,
        comm: a.comm.as_deref(),
        cookie: a.cookie,
        netns: a.netns,
        netns_evidence: a.evidence,
    })
}

/// The selection of `trace`: the usual filters plus a namespace.
#[derive(Debug, Clone, Default)]
pub struct TraceFilter {
    pub filter: Filter,
    /// Inode of the namespace to show; events not attributed to it (or to
    /// none) are left out.
    pub netns: Option<u64>,
}

impl TraceFilter {
    /// Does the event pass? `--state` matches the state left or entered
    /// (a sent reset: the socket's state); `--pid`/`--comm` the process
    /// that caused the event.
    pub fn matches(&self, l: &Line, a: &Attributed) -> bool {
        let f = &self.filter;
        let state_ok = f.states.is_empty()
            || [l.from, l.to]
                .into_iter()
                .flatten()
                .any(|s| f.states.iter().any(|w| w.name() == s));
        let ports_ok = f.ports.is_empty()
            || f.ports.contains(&a.event.local.port())
            || f.ports.contains(&a.event.peer.port());
        let pid_ok = f.pids.is_empty() || a.pid.is_some_and(|p| f.pids.contains(&p));
        let comm_ok = f.comms.is_empty()
            || l.comm
                .is_some_and(|c| f.comms.iter().any(|p| p.matches_name(c)));
        let peer_ok = f.peer.as_ref().is_none_or(|p| {
            p.ip.to_canonical() == a.event.peer.ip().to_canonical()
                && p.port.is_none_or(|port| port == a.event.peer.port())
        });
        let family_ok = match f.family {
            None => true,
            Some(crate::filter::Family::V4) => a.event.local.is_ipv4(),
            Some(crate::filter::Family::V6) => a.event.local.is_ipv6(),
        };
        let ns_ok = self.netns.is_none_or(|n| a.netns == Some(n));
        state_ok && ports_ok && pid_ok && comm_ok && peer_ok && family_ok && ns_ok
    }
}

/// `2026-12-06T20:01:02.345Z  state  ESTABLISHED -> FIN_WAIT1  local -> peer  pid 12 (curl)`
pub fn text(l: &Line) -> String {
    let when = humantime::format_rfc3339_millis(
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(l.ts_ms),
    );
    let what = match l.event {
        EventName::State => format!("{} -> {}", l.from.unwrap_or("?"), l.to.unwrap_or("?")),
        EventName::ResetReceived => "RST received".to_string(),
        EventName::ResetSent => format!("RST sent in {}", l.from.unwrap_or("?")),
    };
    let who = match (l.pid, l.comm) {
        (Some(p), Some(c)) => format!("  pid {p} ({})", Escaped(c)),
        (Some(p), None) => format!("  pid {p}"),
        _ => String::new(),
    };
    let ns = l.netns.map(|n| format!("  netns {n}")).unwrap_or_default();
    format!("{when}  {what:<25}  {} -> {}{who}{ns}", l.local, l.peer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::decode::Event;

    fn att(kind: Kind, pid: Option<u32>, comm: Option<&str>, ns: Option<u64>) -> Attributed {
        Attributed {
            event: Event {
                ts: 0,
                kind,
                tid: 1,
                process_context: pid.is_some(),
                skaddr: 1,
                local: "127.0.0.1:40000".parse().unwrap(),
                peer: "127.0.0.1:8080".parse().unwrap(),
                cookie: None,
            },
            pid,
            comm: comm.map(String::from),
            netns: ns,
            evidence: if ns.is_some() {
                Evidence::Process
            } else {
                Evidence::None
            },
            cookie: None,
        }
    }

    #[test]
    fn json_line_has_the_documented_fields() {
        let a = att(
            Kind::State { old: 1, new: 4 },
            Some(7),
            Some("cu\x1brl"),
            Some(9),
        );
        let l = line(&a, 1234).unwrap();
        let v: serde_json::Value = serde_json::to_value(&l).unwrap();
        assert_eq!(v["ts_ms"], 1234);
        assert_eq!(v["event"], "state");
        assert_eq!(v["from"], "ESTABLISHED");
        assert_eq!(v["to"], "FIN_WAIT1");
        assert_eq!(v["local"], "127.0.0.1:40000");
        assert_eq!(v["peer"], "127.0.0.1:8080");
        assert_eq!(v["pid"], 7);
        assert_eq!(v["cookie"], serde_json::Value::Null);
        assert_eq!(v["netns_evidence"], "process");
        // Text escapes what a process put in its name.
        let t = text(&l);
        assert!(t.contains("ESTABLISHED -> FIN_WAIT1"), "{t}");
        assert!(!t.contains('\x1b'), "{t}");
        let r = att(Kind::ResetReceived, None, None, None);
        let l = line(&r, 1).unwrap();
        let v = serde_json::to_value(&l).unwrap();
        assert_eq!(v["event"], "reset_received");
        assert_eq!(v["pid"], serde_json::Value::Null);
        assert_eq!(v["comm"], serde_json::Value::Null);
        assert!(line(&att(Kind::Destroy, None, None, None), 0).is_none());
    }

    #[test]
    fn filters_select_by_state_process_port_and_namespace() {
        let a = att(
            Kind::State { old: 1, new: 4 },
            Some(7),
            Some("curl"),
            Some(9),
        );
        let l = line(&a, 0).unwrap();
        let mut f = TraceFilter::default();
        assert!(f.matches(&l, &a));
        f.filter.states = vec![TcpState::FinWait1];
        assert!(f.matches(&l, &a));
        f.filter.states = vec![TcpState::CloseWait];
        assert!(!f.matches(&l, &a));
        let mut f = TraceFilter::default();
        f.filter.pids = vec![8];
        assert!(!f.matches(&l, &a));
        f.filter.pids = vec![7];
        f.filter.comms = vec!["cu*".parse().unwrap()];
        f.filter.ports = vec![8080];
        f.filter.peer = Some("127.0.0.1:8080".parse().unwrap());
        assert!(f.matches(&l, &a));
        f.netns = Some(10);
        assert!(!f.matches(&l, &a));
        // An event of no known namespace never matches a namespace.
        let u = att(Kind::State { old: 1, new: 8 }, None, None, None);
        let ul = line(&u, 0).unwrap();
        let f = TraceFilter {
            netns: Some(9),
            ..Default::default()
        };
        assert!(!f.matches(&ul, &u));
    }
}
