//! `scan --window DURATION`: record the TCP tracepoints for the window,
//! then let the scan's report carry what they saw.

use super::collect_selected;
use crate::cli::SourceArgs;
use crate::collect::Plan;
use crate::diag::Report;
use crate::diag::closes::EventCloses;
use crate::events::session::Session;
use crate::events::window::{self, Recording, Scope};
use crate::filter::Filter;
use crate::model::{Snapshot, TcpState};
use anyhow::Result;
use rustc_hash::FxHashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// What a window recorded, with the CLOSE_WAIT 4-tuples at its start.
pub(super) struct Window {
    rec: Recording,
    cw_at_start: FxHashSet<(SocketAddr, SocketAddr)>,
    own_netns: u64,
}

/// The event source, open: records one window after another (`watch`).
pub(super) struct Source {
    s: Session,
    stop: super::trace::StopFlag,
    announced: bool,
}

/// Opens the source; `None` (after a one-line warning) when the
/// tracepoints cannot be used: the command then reports snapshots only.
/// Call it before any thread: the source may need a mount namespace of
/// its own.
pub(super) fn open(src: &SourceArgs) -> Result<Option<Source>> {
    let stop = super::trace::stop_flag()?;
    match Session::open(&src.proc_root) {
        Ok(s) => Ok(Some(Source {
            s,
            stop,
            announced: false,
        })),
        Err(e) => {
            eprintln!("cwdiag: warning: {e}; --window ignored, reporting the snapshot only");
            Ok(None)
        }
    }
}

/// Records for `length`; `None` (after a one-line warning) when the
/// tracepoints cannot be used: the scan then reports the snapshot only.
pub(super) fn record(src: &SourceArgs, length: Duration) -> Result<Option<Window>> {
    match open(src)? {
        Some(mut source) => source.record(src, length).map(Some),
        None => Ok(None),
    }
}

impl Source {
    /// Has a signal (Ctrl-C, SIGTERM) asked to stop?
    pub(super) fn stopped(&self) -> bool {
        self.stop.is_set()
    }

    /// Records one window of `length` (a signal ends it early).
    pub(super) fn record(&mut self, src: &SourceArgs, length: Duration) -> Result<Window> {
        let cw = Filter {
            states: vec![TcpState::CloseWait],
            ..Filter::default()
        };
        let start = collect_selected(src, &Plan::for_filter(&cw), None, &cw)?;
        let cw_at_start = start
            .snapshots
            .iter()
            .flat_map(|s| close_waits(s).into_iter().map(|(l, p, _)| (l, p)))
            .collect();
        if !std::mem::replace(&mut self.announced, true) {
            eprintln!(
                "cwdiag: recording TCP events for {} (Ctrl-C ends the window early)",
                humantime::format_duration(length)
            );
        }
        // The window is exactly [start, end] of the trace clock: events read
        // from before it (while the start snapshot was taken) only feed the
        // attribution, and the rate divides by this span.
        let began = Instant::now();
        let start_ns = Session::trace_now();
        let mut end_ns = u64::MAX;
        let mut rec = Recording::default();
        rec.start_ms = self.s.wall_ms(start_ns);
        loop {
            let left = length.saturating_sub(began.elapsed());
            let ending = left.is_zero() || self.stop.is_set();
            let wait = if ending {
                end_ns = Session::trace_now();
                Duration::ZERO
            } else {
                left.min(Duration::from_millis(200))
            };
            self.s.pump(wait, &mut |s, a| {
                if (start_ns..=end_ns).contains(&a.event.ts) {
                    let at = s.wall_ms(a.event.ts);
                    rec.add(&a, at);
                }
            });
            if ending {
                break;
            }
        }
        rec.window_ms = end_ns.saturating_sub(start_ns) / 1_000_000;
        rec.end_ms = self.s.wall_ms(end_ns);
        rec.lost = self.s.tracer.lost();
        let own_netns = rustix::fs::stat(src.proc_root.join("self/ns/net"))
            .map(|st| st.st_ino)
            .unwrap_or(0);
        Ok(Window {
            rec,
            cw_at_start,
            own_netns,
        })
    }
}

fn close_waits(s: &Snapshot) -> Vec<(SocketAddr, SocketAddr, Option<u32>)> {
    s.sockets
        .iter()
        .filter(|x| x.state == TcpState::CloseWait)
        .map(|x| (x.local.socket_addr(), x.peer.socket_addr(), x.pid))
        .collect()
}

impl Window {
    fn netns_of(&self, s: &Snapshot) -> u64 {
        s.netns.as_ref().map_or(self.own_netns, |n| n.inode)
    }

    /// One report per snapshot, the TIME_WAIT rules judging the closes
    /// the window counted in that snapshot's namespace.
    pub(super) fn classify(
        &self,
        p: &super::pipeline::Pipeline,
        snaps: &[Snapshot],
    ) -> Vec<Report> {
        snaps
            .iter()
            .map(|s| {
                let ev = event_closes(&self.rec, self.netns_of(s));
                crate::diag::classify_events(s, &p.filter, &p.policy, &ev)
            })
            .collect()
    }

    /// The reports as JSON values with the window's evidence added.
    pub(super) fn annotate<R: serde::Serialize>(
        &self,
        reports: &[R],
        snapshots: &[Snapshot],
    ) -> Result<Vec<serde_json::Value>> {
        reports
            .iter()
            .zip(snapshots)
            .map(|(r, s)| {
                let mut v = serde_json::to_value(r)?;
                let now = close_waits(s);
                let scope = Scope {
                    netns: self.netns_of(s),
                    close_wait_at_start: &self.cw_at_start,
                    close_wait_now: &now,
                };
                window::annotate(&mut v, &self.rec, &scope);
                Ok(v)
            })
            .collect()
    }
}

/// The active closes a window saw in namespace `netns`, per local port and
/// per destination, for the TIME_WAIT rules to judge.
fn event_closes(rec: &Recording, netns: u64) -> EventCloses {
    let mut out = EventCloses {
        window_ms: rec.window_ms,
        ..EventCloses::default()
    };
    for c in rec.closes_in(netns) {
        let t = match (c.port, c.peer) {
            (Some(p), _) => out.by_port.entry(p).or_default(),
            (None, Some(a)) => out.by_peer.entry(a).or_default(),
            (None, None) => continue,
        };
        *t.closers.entry((c.pid, c.comm.to_string())).or_default() += c.total;
        if t.per_s.len() < c.per_s.len() {
            t.per_s.resize(c.per_s.len(), 0);
        }
        for (n, m) in t.per_s.iter_mut().zip(c.per_s) {
            *n += m;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::closes::{CloseSource, Closer};
    use crate::diag::types::Direction;
    use crate::events::decode::Kind;
    use crate::events::window::annotate;
    use crate::events::window::tests::{a, tw_report};
    use crate::model::Endpoint;

    fn recording(start_ms: u64, window_ms: u64, end_ms: u64) -> Recording {
        let mut r = Recording::default();
        (r.start_ms, r.window_ms, r.end_ms) = (start_ms, window_ms, end_ms);
        r
    }

    fn cw_now() -> Vec<(SocketAddr, SocketAddr, Option<u32>)> {
        Vec::new()
    }

    #[test]
    fn closers_of_the_namespace_and_the_exact_rate() {
        let mut rec = recording(0, 2000, 10_000);
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
        assert_eq!(r["window"]["closes_without_process"], 1);
        let ev = event_closes(&rec, 1);
        let (c, who) = ev.closes(Direction::Outbound, 5432, Some(ep("10.0.0.5:5432")));
        assert_eq!(
            (c.count, c.window_s, c.measured_by),
            (40, 2.0, CloseSource::Events)
        );
        assert_eq!(
            who,
            [closer(100, 30), closer(200, 10)],
            "most first, this namespace only"
        );
        // All 40 in the same second of two: a burst.
        assert_eq!(
            (c.busiest_second, c.seconds_with_closes, c.whole_seconds),
            (Some(40), Some(1), Some(2))
        );
        assert_eq!(c.sustained_per_s, None);
        assert_eq!(
            c.words_by(&who),
            "c100 (pid 100) 30, c200 (pid 200) 10 closed 40 connections in 2.0 s: a burst (closes in 1 of 2 seconds, busiest 40), no sustained rate"
        );
        // Inbound: matched by local port.
        let (c, _) = ev.closes(Direction::Inbound, 40001, None);
        assert_eq!(c.count, 10);
        // Another namespace, and a destination nobody closed towards.
        let (c, who) =
            event_closes(&rec, 2).closes(Direction::Outbound, 5432, Some(ep("10.0.0.5:5432")));
        assert_eq!((c.count, who), (7, vec![closer(300, 7)]));
        let (c, who) = ev.closes(Direction::Outbound, 5432, Some(ep("10.0.0.9:5432")));
        assert_eq!((c.count, who.len()), (0, 0));
        assert!(c.words().contains("none in the window"), "{}", c.words());
    }

    fn ep(s: &str) -> Endpoint {
        Endpoint::from(s.parse::<SocketAddr>().unwrap())
    }

    fn closer(pid: u32, closes: u64) -> Closer {
        Closer {
            pid,
            comm: format!("c{pid}"),
            closes,
        }
    }

    #[test]
    fn sustained_churn_is_told_from_a_burst() {
        let mut rec = recording(100_000, 10_000, 110_000);
        let fw1 = Kind::State { old: 1, new: 4 };
        // 5 closes a second for 10 s.
        for i in 0..50u64 {
            let at = 100_000 + i * 200;
            rec.add(
                &a(fw1, i, Some(100), Some(1), "10.0.0.1:40000", "10.0.0.5:80"),
                at,
            );
        }
        let (c, who) =
            event_closes(&rec, 1).closes(Direction::Outbound, 80, Some(ep("10.0.0.5:80")));
        assert_eq!((c.count, c.sustained_per_s), (50, Some(5.0)));
        assert_eq!(
            (c.busiest_second, c.seconds_with_closes, c.whole_seconds),
            (Some(5), Some(10), Some(10))
        );
        assert_eq!(
            c.words_by(&who),
            "c100 (pid 100) closed 50 connections in 10.0 s: ~5/s sustained (closes in each of 10 seconds, busiest 5)"
        );
        // The same 50 closes within the first second: a burst.
        let mut burst = recording(100_000, 10_000, 110_000);
        for i in 0..50u64 {
            burst.add(
                &a(fw1, i, Some(100), Some(1), "10.0.0.1:40000", "10.0.0.5:80"),
                100_000 + i * 10,
            );
        }
        let (c, _) =
            event_closes(&burst, 1).closes(Direction::Outbound, 80, Some(ep("10.0.0.5:80")));
        assert_eq!(
            (c.count, c.sustained_per_s, c.seconds_with_closes),
            (50, None, Some(1))
        );
        // A window shorter than two whole seconds cannot tell.
        burst.window_ms = 1_500;
        let (c, _) =
            event_closes(&burst, 1).closes(Direction::Outbound, 80, Some(ep("10.0.0.5:80")));
        assert_eq!(c.sustained_per_s, None);
        assert!(c.words().contains("too short"), "{}", c.words());
    }
}
