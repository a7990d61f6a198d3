//! `cwdiag scan`: one report (or one per namespace) as a table, JSON or
//! Prometheus text.

use super::pipeline::Pipeline;
use super::{json_output, per_namespace_text, prometheus, style};
use crate::cli::{ColorChoice, Format, ScanArgs};
use crate::collect::{self, Attribute};
use crate::output::emit;
use crate::report;
use anyhow::Result;
use std::process::ExitCode;

pub(super) fn scan(args: ScanArgs, color: ColorChoice) -> Result<ExitCode> {
    let started = std::time::Instant::now();
    if args.window.is_some() && args.sampling.samples > 1 {
        anyhow::bail!("--window takes a single sample: drop --samples");
    }
    // First, while single-threaded: the event source may need a mount
    // namespace of its own.
    let window = match args.window {
        Some(w) => super::window::record(&args.source, w)?,
        None => None,
    };
    let mut pipeline = Pipeline::of(&args.select, &args.policy);
    if args.sockets {
        pipeline.plan.attribute = Attribute::All;
    }
    pipeline.policy.sockets = args.sockets;
    let (reports, c) = if args.sampling.samples > 1 {
        if args.record.is_some() {
            anyhow::bail!("--record takes a single sample: drop --samples");
        }
        let (samples, c) = pipeline.sample(&args.source, &args.sampling)?;
        let series = crate::diag::growth::series(&samples);
        let growth = crate::diag::growth::findings(&series, &samples);
        let mut last = samples
            .into_iter()
            .last()
            .ok_or_else(|| anyhow::anyhow!("no sample taken"))?;
        last.findings.splice(0..0, growth);
        last.growth = Some(series);
        (vec![last], c)
    } else {
        pipeline.reports(&args.source, args.record.as_deref())?
    };
    let format = if args.json { Format::Json } else { args.format };
    let text = match format {
        Format::Json => match &window {
            Some(w) => json_output(&w.annotate(&reports, &c.snapshots)?, &c.warnings, c.multi)?,
            None => json_output(&reports, &c.warnings, c.multi)?,
        },
        Format::Prometheus => {
            // The exposition has no place for warnings: say it on stderr.
            for line in &c.selection {
                eprintln!("cwdiag: warning: {line}");
            }
            prometheus(&reports, args.top_k, Some(started.elapsed()), 0)
        }
        Format::Table => {
            let st = style(color, args.top, !args.no_header);
            let extra = match &window {
                Some(w) => w
                    .annotate(&reports, &c.snapshots)?
                    .iter()
                    .map(crate::events::window::text)
                    .collect(),
                None => vec![String::new(); reports.len()],
            };
            per_namespace_text(
                &c.warnings,
                &reports,
                |r| r.netns.as_ref(),
                |r| {
                    let i = reports.iter().position(|x| std::ptr::eq(x, r));
                    let w = i.and_then(|i| extra.get(i)).map_or("", String::as_str);
                    report::table::render(r, &st) + w + "\n"
                },
            )
        }
    };
    collect::timing("scan", started);
    match &args.output {
        Some(path) => crate::outfile::write(path, text.as_bytes(), crate::outfile::OUTPUT_MODE)?,
        None => emit(&text)?,
    }
    Ok(ExitCode::SUCCESS)
}
