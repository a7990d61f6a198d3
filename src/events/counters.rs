//! Running counts of TCP events for the exporter (`serve --events`):
//! transitions that matter for CLOSE_WAIT and TIME_WAIT by local port,
//! active closes by process name, resets by direction and local port.
//! Label values get their own series in the order first seen, up to a
//! bound; later ones are counted under `other`, so every series only
//! grows (a counter) and their number stays bounded. Pure.

use super::attrib::Attributed;
use super::decode::Kind;
use rustc_hash::FxHashMap;

/// The transitions counted: (from, to) kernel state numbers.
pub const TRANSITIONS: [(u8, u8); 5] = [
    (1, 4), // ESTABLISHED -> FIN_WAIT1: this end closed first (TIME_WAIT follows)
    (1, 8), // ESTABLISHED -> CLOSE_WAIT: the peer closed
    (8, 9), // CLOSE_WAIT -> LAST_ACK: the application closed it
    (8, 7), // CLOSE_WAIT -> CLOSE: closed with an RST (linger 0, or reset)
    (1, 7), // ESTABLISHED -> CLOSE: aborted (reset sent or received)
];

/// A label value, or the bucket of those past the bound.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Label<T> {
    Value(T),
    Other,
}

/// Assigns label values to series: the first `bound` distinct values
/// keep their own.
#[derive(Debug, Default)]
struct Bounded<T: std::hash::Hash + Eq> {
    seen: FxHashMap<T, ()>,
    bound: usize,
}

impl<T: std::hash::Hash + Eq + Clone> Bounded<T> {
    fn label(&mut self, v: &T) -> Label<T> {
        if self.seen.contains_key(v) {
            return Label::Value(v.clone());
        }
        if self.seen.len() < self.bound {
            self.seen.insert(v.clone(), ());
            return Label::Value(v.clone());
        }
        Label::Other
    }
}

/// Which end of a connection is the service: the port outside the
/// ephemeral range (net.ipv4.ip_local_port_range) when exactly one is,
/// else the lower one. `true` when it is the local end (inbound).
pub fn service_port(local: u16, peer: u16, ephemeral: (u16, u16)) -> (bool, u16) {
    let eph = |p: u16| p >= ephemeral.0 && p <= ephemeral.1;
    match (eph(local), eph(peer)) {
        (false, true) => (true, local),
        (true, false) => (false, peer),
        _ if local <= peer => (true, local),
        _ => (false, peer),
    }
}

#[derive(Debug, Default)]
pub struct Counters {
    /// The ephemeral port range, for [`service_port`].
    pub ephemeral: (u16, u16),
    ports: Bounded<u16>,
    comms: Bounded<String>,
    /// (from, to, inbound?, service port) -> count.
    pub transitions: FxHashMap<(u8, u8, bool, Label<u16>), u64>,
    /// Process name -> ESTABLISHED -> FIN_WAIT1 in its context.
    pub active_closes: FxHashMap<Label<String>, u64>,
    /// (received?, inbound?, service port) -> count.
    pub resets: FxHashMap<(bool, bool, Label<u16>), u64>,
    pub events: u64,
}

impl Counters {
    /// `bound` label values per label (at least 1; 0 means 1000).
    pub fn new(bound: usize, ephemeral: (u16, u16)) -> Counters {
        let bound = if bound == 0 { 1000 } else { bound };
        Counters {
            ephemeral,
            ports: Bounded {
                seen: FxHashMap::default(),
                bound,
            },
            comms: Bounded {
                seen: FxHashMap::default(),
                bound,
            },
            ..Counters::default()
        }
    }

    pub fn add(&mut self, a: &Attributed) {
        self.events += 1;
        let e = &a.event;
        let (inbound, service) = service_port(e.local.port(), e.peer.port(), self.ephemeral);
        match e.kind {
            Kind::State { old, new } => {
                if TRANSITIONS.contains(&(old, new)) {
                    let port = self.ports.label(&service);
                    *self
                        .transitions
                        .entry((old, new, inbound, port))
                        .or_default() += 1;
                }
                if (old, new) == (1, 4) && e.process_context {
                    let comm = a.comm.clone().unwrap_or_default();
                    let label = self.comms.label(&comm);
                    *self.active_closes.entry(label).or_default() += 1;
                }
            }
            Kind::ResetReceived => {
                let port = self.ports.label(&service);
                *self.resets.entry((true, inbound, port)).or_default() += 1;
            }
            Kind::ResetSent { .. } => {
                let port = self.ports.label(&service);
                *self.resets.entry((false, inbound, port)).or_default() += 1;
            }
            Kind::Destroy => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::attrib::Evidence;
    use crate::events::decode::Event;

    fn ev(kind: Kind, port: u16, comm: Option<&str>) -> Attributed {
        Attributed {
            event: Event {
                ts: 0,
                kind,
                tid: 1,
                process_context: comm.is_some(),
                skaddr: 1,
                local: "127.0.0.1:40000".parse().unwrap(),
                peer: format!("127.0.0.1:{port}").parse().unwrap(),
                cookie: None,
            },
            pid: comm.map(|_| 1),
            comm: comm.map(String::from),
            netns: None,
            evidence: Evidence::None,
            cookie: None,
        }
    }

    #[test]
    fn counts_and_bounds_series_in_the_order_first_seen() {
        let mut c = Counters::new(2, (32768, 60999));
        for port in [80, 443, 8080, 80] {
            c.add(&ev(Kind::State { old: 1, new: 8 }, port, None));
        }
        assert_eq!(c.transitions[&(1, 8, false, Label::Value(80))], 2);
        assert_eq!(c.transitions[&(1, 8, false, Label::Value(443))], 1);
        assert_eq!(c.transitions[&(1, 8, false, Label::Other)], 1);
        let mut c = Counters::new(2, (32768, 60999));
        // Not a counted transition.
        c.add(&ev(Kind::State { old: 4, new: 5 }, 80, None));
        assert_eq!(service_port(8080, 40000, (32768, 60999)), (true, 8080));
        assert_eq!(service_port(40000, 5432, (32768, 60999)), (false, 5432));
        assert_eq!(service_port(80, 443, (32768, 60999)), (true, 80));
        for comm in ["a", "b", "c", "a"] {
            c.add(&ev(Kind::State { old: 1, new: 4 }, 80, Some(comm)));
        }
        assert_eq!(c.active_closes[&Label::Value("a".into())], 2);
        assert_eq!(c.active_closes[&Label::Other], 1);
        c.add(&ev(Kind::ResetReceived, 80, None));
        c.add(&ev(Kind::ResetSent { state: 1 }, 9999, Some("x")));
        assert_eq!(c.resets[&(true, false, Label::Value(80))], 1);
        assert_eq!(c.resets[&(false, false, Label::Value(9999))], 1);
        assert!(!c.transitions.contains_key(&(4, 5, false, Label::Value(80))));
    }
}
