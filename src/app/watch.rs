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
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    // Ctrl-C ends the loop after the current sample; nothing in the
    // terminal needs restoring (no raw mode, no alternate screen).
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .context("cannot install the Ctrl-C handler")?;
    let pipeline = Pipeline::of(&args.select, &args.policy);
    let st = style(color, args.top, true);
    let tty = std::io::stdout().is_terminal() && !args.json;
    let mut history: Vec<Report> = Vec::new();
    // Closes counted between consecutive samples, over the latest ones.
    let mut closes = crate::diag::closes::SampledCloses::keeping(WATCH_HISTORY);
    let mut n = 0u32;
    while !stop.load(Ordering::SeqCst) {
        let started = std::time::Instant::now();
        let c = pipeline.collect(&args.source, None)?;
        let snap = c
            .snapshots
            .first()
            .ok_or_else(|| anyhow::anyhow!("no namespace could be read"))?;
        let mut report = pipeline.classify_sampled(snap, &mut closes);
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
        // Sleep in small steps so Ctrl-C is prompt.
        while !stop.load(Ordering::SeqCst) && started.elapsed() < args.interval {
            std::thread::sleep(std::time::Duration::from_millis(50).min(args.interval));
        }
    }
    Ok(ExitCode::SUCCESS)
}
