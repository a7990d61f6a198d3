//! A running event source with its attribution state: read what the
//! kernel buffered, merge the CPUs by time, attribute, hand on.

use super::attrib::{Attributed, Attributor, NoTuples, TupleIndex};
use super::decode::Event;
use super::procs::OsProcs;
use super::tracefs::{Tracer, Unavailable};
use std::path::Path;
use std::time::Duration;

pub struct Session {
    pub tracer: Tracer,
    pub attributor: Attributor,
    procs: OsProcs,
    /// CLOCK_REALTIME minus CLOCK_MONOTONIC, in ns: trace time to wall time.
    offset: i128,
    buf: Vec<Event>,
}

fn now_ns(id: rustix::time::ClockId) -> i128 {
    let t = rustix::time::clock_gettime(id);
    i128::from(t.tv_sec) * 1_000_000_000 + i128::from(t.tv_nsec)
}

impl Session {
    /// Opens the source. Run while the process is single-threaded (the
    /// tracefs mount may need a mount namespace of its own).
    pub fn open(proc_root: &Path) -> Result<Session, Unavailable> {
        let tracer = Tracer::open()?;
        let procs = OsProcs::new(proc_root, Some(tracer.root()));
        let offset =
            now_ns(rustix::time::ClockId::Realtime) - now_ns(rustix::time::ClockId::Monotonic);
        Ok(Session {
            tracer,
            attributor: Attributor::new(),
            procs,
            offset,
            buf: Vec::new(),
        })
    }

    /// The trace clock now (CLOCK_MONOTONIC, as trace_clock `mono`), ns.
    pub fn trace_now() -> u64 {
        u64::try_from(now_ns(rustix::time::ClockId::Monotonic)).unwrap_or(0)
    }

    /// Wall-clock milliseconds since the epoch of a trace timestamp.
    pub fn wall_ms(&self, ts: u64) -> u64 {
        u64::try_from((i128::from(ts) + self.offset) / 1_000_000).unwrap_or(0)
    }

    /// Waits up to `timeout` for events, then reads and attributes all
    /// that are buffered, oldest first.
    pub fn pump(&mut self, timeout: Duration, sink: &mut dyn FnMut(&Session, Attributed)) {
        self.pump_with(timeout, &NoTuples, sink);
    }

    pub fn pump_with(
        &mut self,
        timeout: Duration,
        tuples: &dyn TupleIndex,
        sink: &mut dyn FnMut(&Session, Attributed),
    ) {
        if !timeout.is_zero() {
            self.tracer.wait(timeout);
        }
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        self.tracer.drain(&mut buf);
        buf.sort_by_key(|e| e.ts);
        for e in buf.drain(..) {
            let a = self.attributor.attribute(e, &mut self.procs, tuples);
            sink(self, a);
        }
        self.buf = buf;
    }
}
