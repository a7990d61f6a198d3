//! `cwdiag trace`: the live stream of TCP state changes and resets.

use super::filter_of;
use crate::collect::netns;
use crate::events::session::Session;
use crate::events::view::{self, TraceFilter};
use anyhow::{Context, Result};
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Longest wait between reads: the latency of the stream and of Ctrl-C.
const TICK: Duration = Duration::from_millis(100);

/// While alive, SIGINT, SIGTERM and SIGHUP set a flag instead of ending
/// the process (the loop then stops and the instance is removed); dropped,
/// the signals do what they did before.
pub(crate) struct StopFlag {
    flag: Arc<AtomicBool>,
    /// Set on drop: the signals then take their default action.
    default: Arc<AtomicBool>,
}

impl StopFlag {
    pub(crate) fn is_set(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }
}

impl Drop for StopFlag {
    fn drop(&mut self) {
        self.default.store(true, Ordering::SeqCst);
    }
}

pub(crate) fn stop_flag() -> Result<StopFlag> {
    let flag = Arc::new(AtomicBool::new(false));
    let default = Arc::new(AtomicBool::new(false));
    for sig in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ] {
        signal_hook::flag::register_conditional_default(sig, default.clone())
            .and_then(|_| signal_hook::flag::register(sig, flag.clone()))
            .context("cannot install a signal handler")?;
    }
    Ok(StopFlag { flag, default })
}

pub(super) fn trace(args: crate::cli::TraceArgs) -> Result<ExitCode> {
    let proc_root = Path::new("/proc");
    let ns = match (&args.netns, args.netns_pid) {
        (Some(name), _) => Some(netns::named(name)?.info.inode),
        (None, Some(pid)) => Some(netns::of_pid(proc_root, pid)?.info.inode),
        _ => None,
    };
    let filter = TraceFilter {
        filter: filter_of(&args.select),
        netns: ns,
    };
    // Signals first: from the instance's creation on, SIGTERM must end
    // the loop (and remove it), not the process.
    let stop = stop_flag()?;
    // Before any thread: the source may need a mount namespace of its own.
    let mut s = Session::open(proc_root).map_err(|e| anyhow::anyhow!("{e}"))?;
    eprintln!(
        "cwdiag: tracing TCP state changes and resets ({}); Ctrl-C stops",
        s.tracer.dir().display()
    );
    let deadline = args.duration.map(|d| Instant::now() + d);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let (mut shown, mut closed_pipe) = (0u64, false);
    let mut write_err = None;
    let mut reported_lost = 0u64;
    let mut last_lost_check = Instant::now();
    loop {
        let left = deadline.map_or(TICK, |d| d.saturating_duration_since(Instant::now()));
        let ending = stop.is_set() || left.is_zero();
        let wait = if ending {
            Duration::ZERO
        } else {
            left.min(TICK)
        };
        s.pump(wait, &mut |s, a| {
            if closed_pipe || write_err.is_some() {
                return;
            }
            let Some(line) = view::line(&a, s.wall_ms(a.event.ts)) else {
                return;
            };
            if !filter.matches(&line, &a) {
                return;
            }
            shown += 1;
            let text = if args.json {
                serde_json::to_string(&line).unwrap_or_default()
            } else {
                view::text(&line)
            };
            if let Err(e) = writeln!(out, "{text}") {
                if e.kind() == std::io::ErrorKind::BrokenPipe {
                    closed_pipe = true;
                } else {
                    write_err = Some(e);
                }
            }
        });
        match out.flush() {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => closed_pipe = true,
            Err(e) => write_err = Some(e),
            Ok(()) => {}
        }
        if let Some(e) = write_err {
            return Err(e).context("cannot write the event stream");
        }
        if last_lost_check.elapsed() >= Duration::from_secs(1) {
            last_lost_check = Instant::now();
            let lost = s.tracer.lost();
            if lost > reported_lost {
                eprintln!(
                    "cwdiag: warning: the kernel lost {} TCP events (buffer full)",
                    lost - reported_lost
                );
                reported_lost = lost;
            }
        }
        if ending || closed_pipe {
            break;
        }
    }
    let lost = s.tracer.lost();
    eprintln!(
        "cwdiag: {} events read, {shown} shown, {lost} lost, {} without a known namespace",
        s.tracer.records, s.attributor.unattributed
    );
    Ok(ExitCode::SUCCESS)
}
