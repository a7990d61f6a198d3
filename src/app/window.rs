//! `scan --window DURATION`: record the TCP tracepoints for the window,
//! then let the scan's report carry what they saw.

use super::collect_selected;
use crate::cli::SourceArgs;
use crate::collect::Plan;
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

/// Records for `length`; `None` (after a one-line warning) when the
/// tracepoints cannot be used: the scan then reports the snapshot only.
pub(super) fn record(src: &SourceArgs, length: Duration) -> Result<Option<Window>> {
    let stop = super::trace::stop_flag()?;
    // Before any thread: the source may need a mount namespace of its own.
    let mut s = match Session::open(&src.proc_root) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cwdiag: warning: {e}; --window ignored, reporting the snapshot only");
            return Ok(None);
        }
    };
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
    eprintln!(
        "cwdiag: recording TCP events for {} (Ctrl-C ends the window early)",
        humantime::format_duration(length)
    );
    // The window is exactly [start, end] of the trace clock: events read
    // from before it (while the start snapshot was taken) only feed the
    // attribution, and the rate divides by this span.
    let began = Instant::now();
    let start_ns = Session::trace_now();
    let mut end_ns = u64::MAX;
    let mut rec = Recording::default();
    rec.start_ms = s.wall_ms(start_ns);
    loop {
        let left = length.saturating_sub(began.elapsed());
        let ending = left.is_zero() || stop.is_set();
        let wait = if ending {
            end_ns = Session::trace_now();
            Duration::ZERO
        } else {
            left.min(Duration::from_millis(200))
        };
        s.pump(wait, &mut |s, a| {
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
    rec.end_ms = s.wall_ms(end_ns);
    rec.lost = s.tracer.lost();
    let own_netns = rustix::fs::stat(src.proc_root.join("self/ns/net"))
        .map(|st| st.st_ino)
        .unwrap_or(0);
    Ok(Some(Window {
        rec,
        cw_at_start,
        own_netns,
    }))
}

fn close_waits(s: &Snapshot) -> Vec<(SocketAddr, SocketAddr, Option<u32>)> {
    s.sockets
        .iter()
        .filter(|x| x.state == TcpState::CloseWait)
        .map(|x| (x.local.socket_addr(), x.peer.socket_addr(), x.pid))
        .collect()
}

impl Window {
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
                    netns: s.netns.as_ref().map_or(self.own_netns, |n| n.inode),
                    close_wait_at_start: &self.cw_at_start,
                    close_wait_now: &now,
                };
                window::annotate(&mut v, &self.rec, &scope);
                Ok(v)
            })
            .collect()
    }
}
