//! `scan --window`: what the tracepoints recorded over the window, and
//! how it completes a report: who closed the connections behind TIME_WAIT
//! (and at what measured rate), when CLOSE_WAIT sockets began, which
//! connections the peer reset while their fd stays open. Pure.

use super::attrib::Attributed;
use super::decode::Kind;
use rustc_hash::{FxHashMap, FxHashSet};
use serde::Serialize;
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

/// The closers behind one TIME_WAIT group of a namespace.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Closer {
    pub pid: u32,
    pub comm: String,
    pub closes: u64,
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

/// Closes in `scope`'s namespace that match a TIME_WAIT group (inbound by
/// local port, outbound by destination): per process, and per second of
/// the window over all of them.
fn closers(rec: &Recording, scope: &Scope, target: &Target) -> (Vec<Closer>, Vec<u32>) {
    let mut by: FxHashMap<(u32, &str), u64> = FxHashMap::default();
    let mut per_s: Vec<u32> = Vec::new();
    for (k, c) in &rec.closes {
        if k.netns != Some(scope.netns) || &k.target != target {
            continue;
        }
        *by.entry((k.pid, k.comm.as_str())).or_default() += c.total;
        if per_s.len() < c.per_s.len() {
            per_s.resize(c.per_s.len(), 0);
        }
        for (t, n) in per_s.iter_mut().zip(&c.per_s) {
            *t += n;
        }
    }
    let mut v: Vec<Closer> = by
        .into_iter()
        .map(|((pid, comm), closes)| Closer {
            pid,
            comm: comm.to_string(),
            closes,
        })
        .collect();
    v.sort_by(|a, b| b.closes.cmp(&a.closes).then(a.pid.cmp(&b.pid)));
    (v, per_s)
}

/// Adds the window's evidence to one report (its JSON form): TIME_WAIT
/// findings gain `evidence.closers`, `evidence.window_s`,
/// `evidence.window_closes` and `evidence.window_close_rate_per_s`; the
/// report gains a `window` object.
pub fn annotate(report: &mut Value, rec: &Recording, scope: &Scope) {
    if let Some(findings) = report.get_mut("findings").and_then(Value::as_array_mut) {
        for f in findings {
            let Some(ev) = f.get_mut("evidence").and_then(Value::as_object_mut) else {
                continue;
            };
            if ev.get("state").and_then(Value::as_str) != Some("TIME_WAIT") {
                continue;
            }
            let inbound = ev.get("direction").and_then(Value::as_str) == Some("inbound");
            let target = if inbound {
                let port = ev.get("port").and_then(Value::as_u64).unwrap_or(0);
                Target::LocalPort(u16::try_from(port).unwrap_or(0))
            } else {
                match ev
                    .get("peer")
                    .and_then(Value::as_str)
                    .and_then(|p| p.parse::<SocketAddr>().ok())
                {
                    Some(p) => Target::Peer(p),
                    None => continue,
                }
            };
            let (c, per_s) = closers(rec, scope, &target);
            let total: u64 = c.iter().map(|c| c.closes).sum();
            // Burst or sustained: the busiest second, and how many seconds
            // of the window saw a close at all.
            ev.insert(
                "window_close_peak_per_s".into(),
                json!(per_s.iter().max().copied().unwrap_or(0)),
            );
            ev.insert(
                "window_seconds_with_closes".into(),
                json!(per_s.iter().filter(|n| **n > 0).count()),
            );
            ev.insert("window_s".into(), json!(round3(rec.window_s())));
            ev.insert("window_closes".into(), json!(total));
            ev.insert(
                "window_close_rate_per_s".into(),
                json!(round3(total as f64 / rec.window_s().max(0.001))),
            );
            ev.insert("closers".into(), json!(c));
        }
    }
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
    use crate::escape::Escaped;
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
    for f in report["findings"].as_array().into_iter().flatten() {
        let e = &f["evidence"];
        if e.get("closers").is_none() {
            continue;
        }
        let what = match e["peer"].as_str() {
            Some(p) => format!("towards {p}"),
            None => format!("on local port {}", e["port"]),
        };
        let who: Vec<String> = e["closers"]
            .as_array()
            .into_iter()
            .flatten()
            .take(5)
            .map(|c| {
                format!(
                    "pid {} ({}) {}",
                    c["pid"],
                    Escaped(c["comm"].as_str().unwrap_or("")),
                    c["closes"]
                )
            })
            .collect();
        out += &format!(
            "  TIME_WAIT {what}: {} closes in {} s ({} per s){}{}\n",
            e["window_closes"],
            e["window_s"],
            e["window_close_rate_per_s"],
            if who.is_empty() { "" } else { ", closed by " },
            who.join(", ")
        );
    }
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
mod tests {
    use super::*;
    use crate::events::attrib::Evidence;
    use crate::events::decode::Event;

    fn a(kind: Kind, sk: u64, pid: Option<u32>, ns: Option<u64>, l: &str, p: &str) -> Attributed {
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

    fn tw_report(direction: &str, port: u16, peer: Option<&str>) -> Value {
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
    fn closers_of_the_namespace_and_the_exact_rate() {
        let mut rec = Recording {
            window_ms: 2000,
            end_ms: 10_000,
            ..Default::default()
        };
        let fw1 = Kind::State { old: 1, new: 4 };
        for i in 0..30 {
            rec.add(
                &a(
                    fw1,
                    i,
                    Some(100),
                    Some(1),
                    "10.0.0.1:40000",
                    "10.0.0.5:5432",
                ),
                0,
            );
        }
        for i in 0..10 {
            rec.add(
                &a(
                    fw1,
                    100 + i,
                    Some(200),
                    Some(1),
                    "10.0.0.1:40001",
                    "10.0.0.5:5432",
                ),
                0,
            );
        }
        // Same destination, another namespace: not counted here.
        for i in 0..7 {
            rec.add(
                &a(
                    fw1,
                    200 + i,
                    Some(300),
                    Some(2),
                    "10.0.0.1:40000",
                    "10.0.0.5:5432",
                ),
                0,
            );
        }
        // Another destination.
        rec.add(
            &a(
                fw1,
                300,
                Some(100),
                Some(1),
                "10.0.0.1:40000",
                "10.0.0.6:5432",
            ),
            0,
        );
        // A close of an unknown process: counted apart.
        let mut gone = a(fw1, 301, None, None, "10.0.0.1:40000", "10.0.0.5:5432");
        gone.event.process_context = true;
        rec.add(&gone, 0);
        let start = FxHashSet::default();
        let now = cw_now();
        let scope = Scope {
            netns: 1,
            close_wait_at_start: &start,
            close_wait_now: &now,
        };
        let mut r = tw_report("outbound", 5432, Some("10.0.0.5:5432"));
        annotate(&mut r, &rec, &scope);
        let ev = &r["findings"][0]["evidence"];
        assert_eq!(ev["window_closes"], 40);
        assert_eq!(ev["window_close_rate_per_s"], 20.0);
        assert_eq!(ev["window_s"], 2.0);
        assert_eq!(
            ev["closers"],
            json!([{"pid": 100, "comm": "c100", "closes": 30}, {"pid": 200, "comm": "c200", "closes": 10}])
        );
        assert_eq!(r["window"]["closes_without_process"], 1);
        // All 40 in the same second: a burst.
        assert_eq!(ev["window_close_peak_per_s"], 40);
        assert_eq!(ev["window_seconds_with_closes"], 1);
        // Inbound: matched by local port.
        let mut r = tw_report("inbound", 40001, None);
        annotate(&mut r, &rec, &scope);
        assert_eq!(r["findings"][0]["evidence"]["window_closes"], 10);
    }

    #[test]
    fn sustained_churn_is_told_from_a_burst() {
        let mut rec = Recording {
            start_ms: 100_000,
            window_ms: 10_000,
            end_ms: 110_000,
            ..Default::default()
        };
        let fw1 = Kind::State { old: 1, new: 4 };
        // 5 closes a second for 10 s.
        for i in 0..50u64 {
            let at = 100_000 + i * 200;
            rec.add(
                &a(fw1, i, Some(100), Some(1), "10.0.0.1:40000", "10.0.0.5:80"),
                at,
            );
        }
        let start = FxHashSet::default();
        let now = Vec::new();
        let scope = Scope {
            netns: 1,
            close_wait_at_start: &start,
            close_wait_now: &now,
        };
        let mut r = tw_report("outbound", 80, Some("10.0.0.5:80"));
        annotate(&mut r, &rec, &scope);
        let ev = &r["findings"][0]["evidence"];
        assert_eq!(ev["window_closes"], 50);
        assert_eq!(ev["window_close_rate_per_s"], 5.0);
        assert_eq!(ev["window_close_peak_per_s"], 5);
        assert_eq!(ev["window_seconds_with_closes"], 10);
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
