//! `cwdiag watch`: a live view that redraws every interval and marks
//! growing rows.

use super::pipeline::Pipeline;
use super::style;
use crate::cli::ColorChoice;
use crate::diag::Report;
use crate::output::emit;
use crate::report;
use anyhow::{Context, Result};
use std::io::IsTerminal;
use std::process::ExitCode;

/// Samples kept for growth in `watch`: the first one and the latest ones.
const WATCH_HISTORY: usize = 120;

pub(super) fn watch(args: crate::cli::WatchArgs, color: ColorChoice) -> Result<ExitCode> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    if args.source.from.is_some() || args.source.all_netns {
        anyhow::bail!(
            "watch needs one live namespace: it cannot be used with --from or --all-netns"
        );
    }
    // First, while single-threaded: the event source may need a mount
    // namespace of its own; it then owns the signals.
    let mut source = match args.window {
        Some(_) => super::window::open(&args.source)?,
        None => None,
    };
    let stop = Arc::new(AtomicBool::new(false));
    if source.is_none() {
        let flag = stop.clone();
        // Ctrl-C ends the loop after the current sample; nothing in the
        // terminal needs restoring (no raw mode, no alternate screen).
        ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
            .context("cannot install the Ctrl-C handler")?;
    }
    let stopped = |source: &Option<super::window::Source>| {
        stop.load(Ordering::SeqCst) || source.as_ref().is_some_and(|s| s.stopped())
    };
    let pipeline = Pipeline::of(&args.select, &args.policy);
    let st = style(color, args.top, true);
    let tty = std::io::stdout().is_terminal() && !args.json;
    let mut history: Vec<Report> = Vec::new();
    // Closes counted between consecutive samples, over the latest ones.
    let mut closes = crate::diag::closes::SampledCloses::keeping(WATCH_HISTORY);
    let mut n = 0u32;
    while !stopped(&source) {
        let started = std::time::Instant::now();
        // With --window, the frame's window is recorded first, and its
        // closes are the ones the TIME_WAIT rules judge.
        let window = match (&mut source, args.window) {
            (Some(s), Some(w)) => Some(s.record(&args.source, w)?),
            _ => None,
        };
        let c = pipeline.collect(&args.source, None)?;
        let snap = c
            .snapshots
            .first()
            .ok_or_else(|| anyhow::anyhow!("no namespace could be read"))?;
        let mut report = match &window {
            Some(w) => w.classify(&pipeline, std::slice::from_ref(snap)).remove(0),
            None => pipeline.classify_sampled(snap, &mut closes),
        };
        report.warnings.extend(c.warnings);
        n += 1;
        if history.len() >= WATCH_HISTORY {
            history.remove(1);
        }
        history.push(report);
        let series = crate::diag::growth::series(&history);
        let growth = crate::diag::growth::findings(&series, &history);
        let Some(last) = history.last() else { continue };
        let text = if args.json {
            report::watch::ndjson_line(n, last, &series, &growth)?
        } else {
            let frame = report::watch::render(n, args.interval, last, &series, &growth, &st);
            if tty {
                format!("\x1b[H\x1b[2J{frame}")
            } else {
                format!("{frame}\n")
            }
        };
        emit(&text)?;
        if args.count.is_some_and(|c| n >= c) {
            break;
        }
        if window.is_some() {
            continue;
        }
        // Sleep in small steps so Ctrl-C is prompt.
        while !stopped(&source) && started.elapsed() < args.interval {
            std::thread::sleep(std::time::Duration::from_millis(50).min(args.interval));
        }
    }
    Ok(ExitCode::SUCCESS)
}
