//! `scan --window DURATION`: record the TCP tracepoints for the window,
//! then let the scan's report carry what they saw.

use super::collect_selected;
use crate::cli::SourceArgs;
use crate::collect::Plan;
use crate::diag::Report;
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
                let ev = window::event_closes(&self.rec, self.netns_of(s));
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
