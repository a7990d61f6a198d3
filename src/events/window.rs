//! `scan --window`: what the tracepoints recorded over the window, and
//! how it completes a report: who closed the connections behind TIME_WAIT
//! (and at what measured rate), when CLOSE_WAIT sockets began, which
//! connections the peer reset while their fd stays open. Pure.

use super::attrib::Attributed;
use super::decode::Kind;
use rustc_hash::{FxHashMap, FxHashSet};
use serde_json::{Value, json};
use std::net::SocketAddr;

const FIN_WAIT1: u8 = 4;
const CLOSE_WAIT: u8 = 8;
/// Entries kept per table; beyond, events are counted, not stored.
const MAX_ENTRIES: usize = 200_000;
/// Items listed per report section.
const MAX_LISTED: usize = 50;

/// Where a close went, as TIME_WAIT groups are keyed: the local port
/// (inbound groups) or the destination (outbound groups).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Target {
    LocalPort(u16),
    Peer(SocketAddr),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CloseKey {
    netns: Option<u64>,
    pid: u32,
    comm: String,
    target: Target,
}

/// Seconds of per-second counts kept per key (longer windows fold the
/// rest into the last second).
const MAX_SECONDS: usize = 3600;

#[derive(Debug, Clone, Default)]
struct Closes {
    total: u64,
    per_s: Vec<u32>,
}

#[derive(Debug, Clone)]
struct CwEntry {
    at_ms: u64,
    local: SocketAddr,
    peer: SocketAddr,
}

#[derive(Debug, Clone)]
struct ResetSeen {
    at_ms: u64,
    local: SocketAddr,
    peer: SocketAddr,
    netns: Option<u64>,
    cookie: Option<u64>,
}

/// What a window recorded.
#[derive(Debug, Default)]
pub struct Recording {
    /// Wall time the window began (ms since the epoch).
    pub start_ms: u64,
    pub window_ms: u64,
    pub end_ms: u64,
    pub events: u64,
    pub lost: u64,
    pub unattributed: u64,
    /// Events not stored because a table was full.
    pub overflow: u64,
    closes: FxHashMap<CloseKey, Closes>,
    /// Active closes whose process is unknown (it exited before its
    /// event was read and tracefs had no record of it).
    pub closes_unknown: u64,
    /// CLOSE_WAIT entries still open, by socket address.
    cw: FxHashMap<u64, CwEntry>,
    /// Resets received whose socket was not destroyed yet.
    resets: FxHashMap<u64, ResetSeen>,
}

impl Recording {
    /// Adds one event (in time order) at wall time `at_ms`.
    pub fn add(&mut self, a: &Attributed, at_ms: u64) {
        self.events += 1;
        if a.netns.is_none() {
            self.unattributed += 1;
        }
        let e = &a.event;
        match e.kind {
            Kind::State { old, new } => {
                if new == FIN_WAIT1 && e.process_context {
                    match (a.pid, &a.comm) {
                        (Some(pid), Some(comm)) => {
                            let sec = (at_ms.saturating_sub(self.start_ms) / 1000) as usize;
                            let sec = sec.min(MAX_SECONDS - 1);
                            for target in [Target::LocalPort(e.local.port()), Target::Peer(e.peer)]
                            {
                                let key = CloseKey {
                                    netns: a.netns,
                                    pid,
                                    comm: comm.clone(),
                                    target,
                                };
                                if self.closes.len() >= MAX_ENTRIES
                                    && !self.closes.contains_key(&key)
                                {
                                    self.overflow += 1;
                                    continue;
                                }
                                let c = self.closes.entry(key).or_default();
                                c.total += 1;
                                if c.per_s.len() <= sec {
                                    c.per_s.resize(sec + 1, 0);
                                }
                                c.per_s[sec] += 1;
                            }
                        }
                        _ => self.closes_unknown += 1,
                    }
                }
                if new == CLOSE_WAIT {
                    if self.cw.len() < MAX_ENTRIES {
                        self.cw.insert(
                            e.skaddr,
                            CwEntry {
                                at_ms,
                                local: e.local,
                                peer: e.peer,
                            },
                        );
                    } else {
                        self.overflow += 1;
                    }
                } else if old == CLOSE_WAIT {
                    self.cw.remove(&e.skaddr);
                }
            }
            Kind::ResetReceived => {
                if self.resets.len() < MAX_ENTRIES {
                    self.resets.insert(
                        e.skaddr,
                        ResetSeen {
                            at_ms,
                            local: e.local,
                            peer: e.peer,
                            netns: a.netns,
                            cookie: a.cookie,
                        },
                    );
                } else {
                    self.overflow += 1;
                }
            }
            Kind::Destroy => {
                self.cw.remove(&e.skaddr);
                self.resets.remove(&e.skaddr);
            }
            Kind::ResetSent { .. } => {}
        }
    }

    fn window_s(&self) -> f64 {
        self.window_ms as f64 / 1000.0
    }
}

/// A report's view of the namespace it covers.
pub struct Scope<'a> {
    pub netns: u64,
    /// 4-tuples (local, peer) in CLOSE_WAIT when the window began.
    pub close_wait_at_start: &'a FxHashSet<(SocketAddr, SocketAddr)>,
    /// CLOSE_WAIT sockets at the window's end: local, peer, owner.
    pub close_wait_now: &'a [(SocketAddr, SocketAddr, Option<u32>)],
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Active closes the window counted for one process in one place.
pub struct CloseTally<'a> {
    /// The local port (None: `peer` is the destination instead).
    pub port: Option<u16>,
    pub peer: Option<SocketAddr>,
    pub pid: u32,
    pub comm: &'a str,
    pub total: u64,
    /// Closes per second of the window.
    pub per_s: &'a [u32],
}

impl Recording {
    /// The active closes seen in namespace `netns`: each close is counted
    /// once on its local port and once towards its destination.
    pub fn closes_in(&self, netns: u64) -> impl Iterator<Item = CloseTally<'_>> {
        self.closes
            .iter()
            .filter(move |(k, _)| k.netns == Some(netns))
            .map(|(k, c)| {
                let (port, peer) = match k.target {
                    Target::LocalPort(p) => (Some(p), None),
                    Target::Peer(a) => (None, Some(a)),
                };
                CloseTally {
                    port,
                    peer,
                    pid: k.pid,
                    comm: &k.comm,
                    total: c.total,
                    per_s: &c.per_s,
                }
            })
    }
}

/// Adds the window's evidence to one report (its JSON form): a `window`
/// object. (TIME_WAIT findings carry the window's closes in their own
/// `closes` and `closers`: see [`Recording::closes_in`].)
pub fn annotate(report: &mut Value, rec: &Recording, scope: &Scope) {
    let began = close_wait_begun(rec, scope);
    let resets: Vec<Value> = rec
        .resets
        .values()
        .filter(|r| r.netns == Some(scope.netns))
        .map(|r| {
            json!({
                "local": r.local.to_string(),
                "peer": r.peer.to_string(),
                "reset_at_ms": r.at_ms,
                "cookie": r.cookie,
            })
        })
        .collect();
    let mut resets = resets;
    resets.sort_by_key(|r| r["reset_at_ms"].as_u64());
    let resets_total = resets.len();
    resets.truncate(MAX_LISTED);
    if let Some(obj) = report.as_object_mut() {
        obj.insert(
            "window".into(),
            json!({
                "window_s": round3(rec.window_s()),
                "end_ms": rec.end_ms,
                "events": rec.events,
                "lost_events": rec.lost,
                "events_without_namespace": rec.unattributed,
                "closes_without_process": rec.closes_unknown,
                "close_wait_begun": began,
                "reset_by_peer_fd_open_count": resets_total,
                "reset_by_peer_fd_open": resets,
            }),
        );
    }
}

/// CLOSE_WAIT sockets of the report that began within the window: not in
/// CLOSE_WAIT at its start, in CLOSE_WAIT at its end, and exactly one
/// ESTABLISHED -> CLOSE_WAIT event with that 4-tuple still open (any
/// namespace): that event is theirs, and its time is the peer's FIN.
fn close_wait_begun(rec: &Recording, scope: &Scope) -> Vec<Value> {
    let mut events: FxHashMap<(SocketAddr, SocketAddr), Vec<&CwEntry>> = FxHashMap::default();
    for e in rec.cw.values() {
        events.entry((e.local, e.peer)).or_default().push(e);
    }
    let mut out = Vec::new();
    for &(l, p, pid) in scope.close_wait_now {
        if scope.close_wait_at_start.contains(&(l, p)) {
            continue;
        }
        if let Some([e]) = events.get(&(l, p)).map(Vec::as_slice) {
            out.push(json!({
                "local": l.to_string(),
                "peer": p.to_string(),
                "fin_received_at_ms": e.at_ms,
                "age_s": round3(rec.end_ms.saturating_sub(e.at_ms) as f64 / 1000.0),
                "pid": pid,
            }));
        }
    }
    out.sort_by_key(|v| v["fin_received_at_ms"].as_u64());
    out.truncate(MAX_LISTED);
    out
}

/// The window's part of a table report, from an annotated report.
pub fn text(report: &Value) -> String {
    let w = &report["window"];
    if w.is_null() {
        return String::new();
    }
    let when = |ms: &Value| {
        ms.as_u64().map_or("?".to_string(), |m| {
            humantime::format_rfc3339_millis(
                std::time::UNIX_EPOCH + std::time::Duration::from_millis(m),
            )
            .to_string()
        })
    };
    let mut out = format!(
        "Window of {} s (kernel tracepoints): {} events, {} lost, {} without a known namespace, {} closes by a process no longer known\n",
        w["window_s"],
        w["events"],
        w["lost_events"],
        w["events_without_namespace"],
        w["closes_without_process"]
    );
    let began = w["close_wait_begun"]
        .as_array()
        .map_or(&[][..], Vec::as_slice);
    for c in began.iter().take(10) {
        out += &format!(
            "  CLOSE_WAIT {} <- {}: peer's FIN at {}, {} s ago\n",
            c["local"].as_str().unwrap_or("?"),
            c["peer"].as_str().unwrap_or("?"),
            when(&c["fin_received_at_ms"]),
            c["age_s"]
        );
    }
    if began.len() > 10 {
        out += &format!(
            "  ... {} more CLOSE_WAIT begun in the window (--json lists up to {MAX_LISTED})\n",
            began.len() - 10
        );
    }
    let resets = w["reset_by_peer_fd_open"]
        .as_array()
        .map_or(&[][..], Vec::as_slice);
    for r in resets.iter().take(10) {
        out += &format!(
            "  reset by peer {} at {}, fd still open: {}\n",
            r["peer"].as_str().unwrap_or("?"),
            when(&r["reset_at_ms"]),
            r["local"].as_str().unwrap_or("?")
        );
    }
    if resets.len() > 10 {
        out += &format!(
            "  ... {} more connections reset by the peer with the fd open\n",
            resets.len() - 10
        );
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::events::attrib::Evidence;
    use crate::events::decode::Event;

    /// An attributed event, for tests here and in `app::window`.
    pub(crate) fn a(
        kind: Kind,
        sk: u64,
        pid: Option<u32>,
        ns: Option<u64>,
        l: &str,
        p: &str,
    ) -> Attributed {
        Attributed {
            event: Event {
                ts: 0,
                kind,
                tid: pid.unwrap_or(0),
                process_context: pid.is_some(),
                skaddr: sk,
                local: l.parse().unwrap(),
                peer: p.parse().unwrap(),
                cookie: None,
            },
            pid,
            comm: pid.map(|p| format!("c{p}")),
            netns: ns,
            evidence: Evidence::Process,
            cookie: Some(sk),
        }
    }

    /// A report with one TIME_WAIT finding, for the same tests.
    pub(crate) fn tw_report(direction: &str, port: u16, peer: Option<&str>) -> Value {
        json!({
            "findings": [{"rule_id": "x", "evidence": {
                "state": "TIME_WAIT", "direction": direction, "port": port, "peer": peer
            }}]
        })
    }

    fn cw_now() -> Vec<(SocketAddr, SocketAddr, Option<u32>)> {
        (5000..5003)
            .map(|p| {
                (
                    "127.0.0.1:8080".parse().unwrap(),
                    format!("127.0.0.1:{p}").parse().unwrap(),
                    Some(9),
                )
            })
            .collect()
    }

    #[test]
    fn close_wait_begun_only_on_a_unique_event_and_not_before_the_window() {
        let mut rec = Recording {
            window_ms: 5000,
            end_ms: 10_000,
            ..Default::default()
        };
        let cw = Kind::State { old: 1, new: 8 };
        // 5000: one event, began in the window.
        rec.add(
            &a(cw, 1, None, None, "127.0.0.1:8080", "127.0.0.1:5000"),
            7_500,
        );
        // 5001: two events with this tuple (two namespaces): ambiguous.
        rec.add(
            &a(cw, 2, None, None, "127.0.0.1:8080", "127.0.0.1:5001"),
            7_000,
        );
        rec.add(
            &a(cw, 3, None, None, "127.0.0.1:8080", "127.0.0.1:5001"),
            7_100,
        );
        // 5002: an event, but this namespace had the tuple in CLOSE_WAIT
        // before the window began: the event is another namespace's.
        rec.add(
            &a(cw, 4, None, None, "127.0.0.1:8080", "127.0.0.1:5002"),
            8_000,
        );
        let mut start = FxHashSet::default();
        start.insert((
            "127.0.0.1:8080".parse().unwrap(),
            "127.0.0.1:5002".parse().unwrap(),
        ));
        let now = cw_now();
        let scope = Scope {
            netns: 1,
            close_wait_at_start: &start,
            close_wait_now: &now,
        };
        let mut r = tw_report("inbound", 1, None);
        annotate(&mut r, &rec, &scope);
        let began = r["window"]["close_wait_begun"].as_array().unwrap();
        assert_eq!(began.len(), 1, "{began:?}");
        assert_eq!(began[0]["peer"], "127.0.0.1:5000");
        assert_eq!(began[0]["fin_received_at_ms"], 7_500);
        assert_eq!(began[0]["age_s"], 2.5);
        // A CLOSE_WAIT its owner closed is gone from the record.
        rec.add(
            &a(
                Kind::State { old: 8, new: 9 },
                1,
                Some(9),
                Some(1),
                "127.0.0.1:8080",
                "127.0.0.1:5000",
            ),
            9_000,
        );
        let mut r = tw_report("inbound", 1, None);
        annotate(&mut r, &rec, &scope);
        assert!(
            r["window"]["close_wait_begun"]
                .as_array()
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn resets_with_the_fd_still_open_are_named_until_destroyed() {
        let mut rec = Recording {
            window_ms: 1000,
            end_ms: 2000,
            ..Default::default()
        };
        rec.add(
            &a(
                Kind::ResetReceived,
                7,
                None,
                Some(1),
                "10.0.0.1:40000",
                "10.0.0.9:3306",
            ),
            1500,
        );
        rec.add(
            &a(
                Kind::ResetReceived,
                8,
                None,
                Some(1),
                "10.0.0.1:40001",
                "10.0.0.9:3306",
            ),
            1600,
        );
        rec.add(
            &a(
                Kind::ResetReceived,
                9,
                None,
                Some(2),
                "10.0.0.1:40001",
                "10.0.0.9:3306",
            ),
            1600,
        );
        rec.add(
            &a(
                Kind::Destroy,
                8,
                None,
                Some(1),
                "10.0.0.1:40001",
                "10.0.0.9:3306",
            ),
            1700,
        );
        let start = FxHashSet::default();
        let now = cw_now();
        let scope = Scope {
            netns: 1,
            close_wait_at_start: &start,
            close_wait_now: &now,
        };
        let mut r = json!({"findings": []});
        annotate(&mut r, &rec, &scope);
        let w = &r["window"];
        assert_eq!(w["reset_by_peer_fd_open_count"], 1);
        assert_eq!(w["reset_by_peer_fd_open"][0]["peer"], "10.0.0.9:3306");
        assert_eq!(w["reset_by_peer_fd_open"][0]["reset_at_ms"], 1500);
        assert_eq!(w["reset_by_peer_fd_open"][0]["cookie"], 7);
    }
}
