//! Who and which namespace an event belongs to. The tracepoints fire for
//! every network namespace and name none, so an event is attributed only
//! on evidence, and what has none is counted, never guessed:
//! - `Process`: the event ran in process context (the thread on the CPU
//!   acted on the socket: connect, close, shutdown, a linger-0 abort, or
//!   backlog processing under the socket lock); the socket's namespace is
//!   that process's `/proc/PID/ns/net`.
//! - `Socket`: the same kernel socket (`skaddr`) was attributed earlier
//!   in its life; continuity ends when it is destroyed or a new life
//!   begins at that address (a state change out of CLOSE or LISTEN).
//! - `Tuple`: the caller knows the 4-tuple exists in one namespace only
//!   (e.g. from a sock_diag dump of every namespace).
//!
//! Pure: process lookups come through [`ProcLookup`].

use super::decode::{Event, Kind};
use rustc_hash::FxHashMap;
use std::net::SocketAddr;

/// The process a thread belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proc {
    /// Thread-group id: the process.
    pub pid: u32,
    pub comm: String,
    /// Inode of its network namespace (`/proc/PID/ns/net`), when readable.
    pub netns: Option<u64>,
}

/// Thread id to process, as the OS says now.
pub trait ProcLookup {
    fn lookup(&mut self, tid: u32) -> Option<Proc>;
}

/// Why an event has the namespace it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Evidence {
    Process,
    Socket,
    Tuple,
    /// No evidence: namespace unknown.
    None,
}

/// An event with the process that caused it (process-context events) and
/// the namespace of its socket, where known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attributed {
    pub event: Event,
    pub pid: Option<u32>,
    pub comm: Option<String>,
    pub netns: Option<u64>,
    pub evidence: Evidence,
    /// The cookie of this socket, from this or an earlier event.
    pub cookie: Option<u64>,
}

#[derive(Debug, Clone)]
struct Known {
    netns: u64,
    cookie: Option<u64>,
}

/// The namespaces of 4-tuples, for [`Evidence::Tuple`].
pub trait TupleIndex {
    /// The one namespace holding (local, peer), when exactly one does.
    fn unique(&self, local: SocketAddr, peer: SocketAddr) -> Option<u64>;
}

/// No tuple knowledge.
pub struct NoTuples;

impl TupleIndex for NoTuples {
    fn unique(&self, _: SocketAddr, _: SocketAddr) -> Option<u64> {
        None
    }
}

/// Sockets remembered at most; beyond, the memory is dropped (and counted)
/// rather than grown without bound.
const MAX_KNOWN: usize = 1 << 20;

/// Attribution state across a stream of events, in time order.
#[derive(Debug, Default)]
pub struct Attributor {
    known: FxHashMap<u64, Known>,
    /// Events left without a namespace.
    pub unattributed: u64,
    /// Times the socket memory was dropped at its bound.
    pub forgotten: u64,
}

impl Attributor {
    pub fn new() -> Attributor {
        Attributor::default()
    }

    pub fn attribute(
        &mut self,
        ev: Event,
        procs: &mut dyn ProcLookup,
        tuples: &dyn TupleIndex,
    ) -> Attributed {
        // A new life at a reused address: what was known is not this socket.
        if let Kind::State { old, .. } = ev.kind
            && (old == 7 || old == 10)
        {
            self.known.remove(&ev.skaddr);
        }
        let proc = if ev.process_context {
            procs.lookup(ev.tid)
        } else {
            None
        };
        let prior = self.known.get(&ev.skaddr);
        let mut cookie = ev.cookie.or(prior.and_then(|k| k.cookie));
        let (netns, evidence) = if let Some(ns) = proc.as_ref().and_then(|p| p.netns) {
            (Some(ns), Evidence::Process)
        } else if let Some(k) = prior.filter(|_| ev.skaddr != 0) {
            (Some(k.netns), Evidence::Socket)
        } else if let Some(ns) = tuples.unique(ev.local, ev.peer) {
            (Some(ns), Evidence::Tuple)
        } else {
            (None, Evidence::None)
        };
        if netns.is_none() {
            self.unattributed += 1;
        }
        if ev.skaddr != 0 {
            if ev.kind == Kind::Destroy {
                self.known.remove(&ev.skaddr);
            } else if let Some(ns) = netns {
                if self.known.len() >= MAX_KNOWN && !self.known.contains_key(&ev.skaddr) {
                    self.known.clear();
                    self.forgotten += 1;
                }
                self.known.insert(ev.skaddr, Known { netns: ns, cookie });
            } else if let Some(k) = self.known.get_mut(&ev.skaddr) {
                k.cookie = cookie;
            }
        }
        if ev.kind == Kind::Destroy {
            cookie = ev.cookie;
        }
        Attributed {
            pid: proc.as_ref().map(|p| p.pid),
            comm: proc.map(|p| p.comm),
            netns,
            evidence,
            cookie,
            event: ev,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::decode::tests::fixture_events;

    /// Threads of a fixed table.
    struct Table(Vec<(u32, Proc)>);

    impl ProcLookup for Table {
        fn lookup(&mut self, tid: u32) -> Option<Proc> {
            self.0
                .iter()
                .find(|(t, _)| *t == tid)
                .map(|(_, p)| p.clone())
        }
    }

    fn proc(pid: u32, comm: &str, ns: u64) -> Proc {
        Proc {
            pid,
            comm: comm.into(),
            netns: Some(ns),
        }
    }

    fn ev(kind: Kind, tid: u32, pctx: bool, sk: u64, local: &str, peer: &str) -> Event {
        Event {
            ts: 0,
            kind,
            tid,
            process_context: pctx,
            skaddr: sk,
            local: local.parse().unwrap(),
            peer: peer.parse().unwrap(),
            cookie: None,
        }
    }

    const EST: u8 = 1;
    const FW1: u8 = 4;
    const CW: u8 = 8;
    const LA: u8 = 9;
    const CLOSE: u8 = 7;

    #[test]
    fn closer_is_the_process_in_context_and_softirq_names_nobody() {
        let mut a = Attributor::new();
        let mut t = Table(vec![(101, proc(100, "client", 1))]);
        let close = a.attribute(
            ev(
                Kind::State { old: EST, new: FW1 },
                101,
                true,
                0xa,
                "127.0.0.1:40000",
                "127.0.0.1:8080",
            ),
            &mut t,
            &NoTuples,
        );
        assert_eq!((close.pid, close.netns), (Some(100), Some(1)));
        assert_eq!(close.comm.as_deref(), Some("client"));
        assert_eq!(close.evidence, Evidence::Process);
        // The same socket later, in softirq on some other thread: the
        // namespace by continuity, no process.
        let later = a.attribute(
            ev(
                Kind::State { old: FW1, new: 5 },
                101,
                false,
                0xa,
                "127.0.0.1:40000",
                "127.0.0.1:8080",
            ),
            &mut t,
            &NoTuples,
        );
        assert_eq!((later.pid, later.netns), (None, Some(1)));
        assert_eq!(later.evidence, Evidence::Socket);
        assert_eq!(a.unattributed, 0);
    }

    #[test]
    fn same_loopback_tuple_in_two_namespaces_is_not_mixed() {
        let mut a = Attributor::new();
        let mut t = Table(vec![(11, proc(11, "srv-a", 1)), (22, proc(22, "srv-b", 2))]);
        let (l, p) = ("127.0.0.1:8080", "127.0.0.1:40000");
        // Both servers' sockets enter CLOSE_WAIT in softirq: no evidence.
        for sk in [0xa, 0xb] {
            let r = a.attribute(
                ev(Kind::State { old: EST, new: CW }, 99, false, sk, l, p),
                &mut t,
                &NoTuples,
            );
            assert_eq!(r.netns, None);
            assert_eq!(r.evidence, Evidence::None);
        }
        assert_eq!(a.unattributed, 2);
        // Each server closes its own: attributed to its own namespace.
        let ra = a.attribute(
            ev(Kind::State { old: CW, new: LA }, 11, true, 0xa, l, p),
            &mut t,
            &NoTuples,
        );
        let rb = a.attribute(
            ev(Kind::State { old: CW, new: LA }, 22, true, 0xb, l, p),
            &mut t,
            &NoTuples,
        );
        assert_eq!((ra.netns, rb.netns), (Some(1), Some(2)));
        // Their final softirq transitions follow their own sockets.
        let fa = a.attribute(
            ev(
                Kind::State {
                    old: LA,
                    new: CLOSE,
                },
                0,
                false,
                0xa,
                l,
                p,
            ),
            &mut t,
            &NoTuples,
        );
        let fb = a.attribute(
            ev(
                Kind::State {
                    old: LA,
                    new: CLOSE,
                },
                0,
                false,
                0xb,
                l,
                p,
            ),
            &mut t,
            &NoTuples,
        );
        assert_eq!((fa.netns, fb.netns), (Some(1), Some(2)));
        assert_eq!(a.unattributed, 2);
    }

    #[test]
    fn a_reused_socket_address_does_not_inherit_the_old_namespace() {
        let mut a = Attributor::new();
        let mut t = Table(vec![(11, proc(11, "a", 1))]);
        a.attribute(
            ev(
                Kind::State { old: EST, new: FW1 },
                11,
                true,
                0xa,
                "10.0.0.1:1",
                "10.0.0.2:2",
            ),
            &mut t,
            &NoTuples,
        );
        // The address freed and reused by a new child socket in softirq.
        let r = a.attribute(
            ev(
                Kind::State { old: 10, new: 3 },
                0,
                false,
                0xa,
                "10.0.0.9:80",
                "10.0.0.8:3",
            ),
            &mut t,
            &NoTuples,
        );
        assert_eq!(r.netns, None);
        // And after a destroy.
        a.attribute(
            ev(
                Kind::State { old: EST, new: FW1 },
                11,
                true,
                0xc,
                "10.0.0.1:1",
                "10.0.0.2:2",
            ),
            &mut t,
            &NoTuples,
        );
        let mut d = ev(Kind::Destroy, 0, false, 0xc, "10.0.0.1:1", "10.0.0.2:2");
        d.cookie = Some(5);
        assert_eq!(a.attribute(d, &mut t, &NoTuples).netns, Some(1));
        let r = a.attribute(
            ev(
                Kind::ResetReceived,
                0,
                false,
                0xc,
                "10.0.0.1:1",
                "10.0.0.2:2",
            ),
            &mut t,
            &NoTuples,
        );
        assert_eq!(r.netns, None);
    }

    #[test]
    fn a_unique_tuple_is_evidence_and_a_dead_process_is_not() {
        struct One;
        impl TupleIndex for One {
            fn unique(&self, l: SocketAddr, _: SocketAddr) -> Option<u64> {
                (l.port() == 8080).then_some(7)
            }
        }
        let mut a = Attributor::new();
        let mut t = Table(vec![]);
        let r = a.attribute(
            ev(
                Kind::State { old: EST, new: CW },
                5,
                false,
                0xa,
                "127.0.0.1:8080",
                "127.0.0.1:1",
            ),
            &mut t,
            &One,
        );
        assert_eq!((r.netns, r.evidence), (Some(7), Evidence::Tuple));
        // A process-context event whose thread is gone: no pid, no guess.
        let r = a.attribute(
            ev(
                Kind::State { old: EST, new: FW1 },
                5,
                true,
                0xb,
                "127.0.0.1:9",
                "127.0.0.1:1",
            ),
            &mut t,
            &One,
        );
        assert_eq!((r.pid, r.netns), (None, None));
        assert_eq!(a.unattributed, 1);
    }

    #[test]
    fn the_captured_page_attributes_closers_and_keeps_cookies() {
        let evs = fixture_events();
        let tid = evs[0].tid;
        let mut t = Table(vec![(tid, proc(tid, "python3", 42))]);
        let mut a = Attributor::new();
        let out: Vec<Attributed> = evs
            .into_iter()
            .map(|e| a.attribute(e, &mut t, &NoTuples))
            .collect();
        let closers: Vec<_> = out
            .iter()
            .filter(|r| r.event.kind == (Kind::State { old: EST, new: FW1 }))
            .map(|r| (r.pid, r.netns))
            .collect();
        assert_eq!(closers, vec![(Some(tid), Some(42))]);
        // The reset's cookie is the socket's cookie at its destroy.
        let rst = out
            .iter()
            .find(|r| r.event.kind == Kind::ResetReceived)
            .unwrap();
        assert_eq!(rst.netns, Some(42), "continuity from the client's connect");
        // The server child's CLOSE_WAIT entry ran in softirq on a socket
        // never seen in process context before: unattributed, counted.
        let cw = out
            .iter()
            .find(|r| r.event.kind == (Kind::State { old: EST, new: CW }))
            .unwrap();
        assert_eq!(cw.netns, None);
        assert!(a.unattributed >= 1);
    }
}
