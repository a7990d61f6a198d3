//! `cwdiag assert`: limits for CI, exit 0 within them and 1 when one is
//! broken.

use super::pipeline::Pipeline;
use super::{Collected, filter_of, json_output, per_namespace_text};
use crate::cli::AssertArgs;
use crate::collect::{self, Attribute, Plan};
use crate::diag::Policy;
use crate::diag::limits::{self as assertion, Limits};
use crate::model::Snapshot;
use crate::output::emit;
use anyhow::Result;
use std::process::ExitCode;

pub(super) fn assert(args: AssertArgs) -> Result<ExitCode> {
    let mut filter = filter_of(&args.select);
    let limits = Limits {
        max_close_wait: args.max_close_wait,
        max_time_wait: args.max_time_wait,
        max_close_wait_growth: args.max_close_wait_growth,
        max_time_wait_growth: args.max_time_wait_growth,
        max_stale_socket_fds: args.max_stale_socket_fds,
    };
    if args.require_match && !filter.needs_owner() {
        anyhow::bail!("--require-match needs a process selector: --pid or --comm");
    }
    if args.window.is_some() && args.sampling.samples > 1 {
        anyhow::bail!("--window takes a single sample: drop --samples");
    }
    // First, while single-threaded: the event source may need a mount
    // namespace of its own.
    let window = match args.window {
        Some(w) => super::window::record(&args.source, w)?,
        None => None,
    };
    let growth_limits =
        limits.max_close_wait_growth.is_some() || limits.max_time_wait_growth.is_some();
    if growth_limits && args.sampling.samples < 2 {
        anyhow::bail!(
            "--max-close-wait-growth and --max-time-wait-growth need --samples 2 or more"
        );
    }
    // Only the states the limits count, unless the user narrowed further.
    let wanted: Vec<_> = limits
        .states()
        .into_iter()
        .filter(|s| filter.states.is_empty() || filter.states.contains(s))
        .collect();
    if wanted.is_empty() {
        anyhow::bail!(
            "--state excludes every state the limits count (CLOSE_WAIT for --max-close-wait, TIME_WAIT for --max-time-wait)"
        );
    }
    filter.states = wanted.clone();
    let mut plan = Plan::new(&wanted);
    plan.ports = filter.ports.clone();
    plan.tcp_info = false;
    let stale_limit = limits.max_stale_socket_fds.is_some();
    if stale_limit {
        // Stale fds are socket fds in no table: that needs every table
        // whole, and every process searched.
        plan.states = crate::collect::sockdiag::all_states();
        plan.ports.clear();
        plan.sweep_stale = true;
    }
    // Growth is tracked per process: every sample needs owners.
    plan.attribute = if filter.needs_owner() || growth_limits || stale_limit {
        Attribute::Default
    } else {
        Attribute::Nothing
    };
    let mut pipeline = Pipeline {
        filter,
        plan,
        policy: Policy::default(),
    };
    let mut outcomes = Vec::new();
    // With a window: each outcome as JSON with the window's object.
    let mut annotated = Vec::new();
    let c = if args.sampling.samples > 1 {
        let (reports, c) = pipeline.sample(&args.source, &args.sampling)?;
        let series = crate::diag::growth::series(&reports);
        if let Some(last) = reports.last() {
            outcomes.push(assertion::evaluate(last, &limits, &series));
        }
        c
    } else {
        let c = pipeline.collect(&args.source, None)?;
        pipeline.plan.proc_root = args.source.proc_root.clone();
        for snap in &c.snapshots {
            let mut snap = snap.clone();
            let judge = |p: &Pipeline, snap: &Snapshot| {
                let report = &p.classify(std::slice::from_ref(snap))[0];
                assertion::evaluate(report, &limits, &[])
            };
            let mut outcome = judge(&pipeline, &snap);
            if !outcome.ok
                && pipeline.plan.attribute == Attribute::Nothing
                && args.source.from.is_none()
            {
                // Name the offenders: attribute now that we know it is worth it.
                pipeline.plan.attribute = Attribute::Default;
                collect::attribute(&mut snap, &pipeline.plan);
                pipeline.plan.attribute = Attribute::Nothing;
                outcome = judge(&pipeline, &snap);
            }
            if let Some(w) = &window {
                annotated.extend(w.annotate(std::slice::from_ref(&outcome), &[snap])?);
            }
            outcomes.push(outcome);
        }
        Collected {
            snapshots: Vec::new(),
            ..c
        }
    };
    if args.require_match
        && let Some(line) = c.selection.first()
    {
        anyhow::bail!("--require-match: {line}");
    }
    let ok = outcomes.iter().all(|o| o.ok);
    let text = if args.json && window.is_some() {
        json_output(&annotated, &c.warnings, c.multi)?
    } else if args.json {
        json_output(&outcomes, &c.warnings, c.multi)?
    } else {
        per_namespace_text(
            &c.warnings,
            &outcomes,
            |o| o.netns.as_ref(),
            |o| {
                let i = outcomes.iter().position(|x| std::ptr::eq(x, o));
                let w = i
                    .and_then(|i| annotated.get(i))
                    .map(crate::events::window::text)
                    .unwrap_or_default();
                crate::report::limits::render_text(o) + &w
            },
        )
    };
    emit(&text)?;
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
