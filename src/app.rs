//! Command dispatch: parse -> collect -> classify -> render -> exit code.

use crate::assertion::{self, Limits};
use crate::classify::{self, Policy, Report};
use crate::cli::{
    AssertArgs, Cli, ColorChoice, Command, Format, ScanArgs, SelectArgs, SnapshotArgs, SourceArgs,
};
use crate::collect::{self, Attribute, Plan};
use crate::filter::Filter;
use crate::model::Snapshot;
use crate::output::emit;
use crate::report::{self, Style};
use anyhow::{Context, Result};
use std::io::IsTerminal;
use std::process::ExitCode;

pub fn run(cli: Cli) -> Result<ExitCode> {
    let color = cli.color;
    match cli.command {
        Command::Scan(args) => scan(args, color),
        Command::Assert(args) => assert(args),
        Command::Snapshot(args) => snapshot(args),
        Command::Explain { rule_id } => explain(rule_id.as_deref()),
    }
}

fn explain(rule_id: Option<&str>) -> Result<ExitCode> {
    let text = match rule_id {
        None => crate::rules::list(),
        Some(id) => {
            let rule = crate::rules::find(id).ok_or_else(|| {
                anyhow::anyhow!("unknown rule '{id}' (run `cwdiag explain` to list the rules)")
            })?;
            crate::rules::render(rule, 78)
        }
    };
    emit(&text)?;
    Ok(ExitCode::SUCCESS)
}

/// Live collection, or a replay when `--from` is given.
fn collect(src: &SourceArgs, plan: &Plan) -> Result<Snapshot> {
    match &src.from {
        Some(path) => collect::replay::load(path),
        None => collect::live(plan, None),
    }
}

/// Live collection that also writes the raw replies and a sidecar.
fn collect_recording(path: &std::path::Path, plan: &Plan) -> Result<Snapshot> {
    use std::io::Write;
    let name = path.display();
    let file = std::fs::File::create(path).with_context(|| format!("cannot create {name}"))?;
    let mut out = std::io::BufWriter::new(file);
    let mut rec = |b: &[u8]| -> Result<()> {
        out.write_all(b)
            .with_context(|| format!("cannot write {name}"))
    };
    let snap = collect::live(plan, Some(&mut rec))?;
    out.flush()
        .with_context(|| format!("cannot write {name}"))?;
    let side = collect::replay::sidecar_path(path);
    let json = report::json::render(&collect::replay::Sidecar::of(&snap))?;
    std::fs::write(&side, json).with_context(|| format!("cannot write {}", side.display()))?;
    Ok(snap)
}

fn snapshot(args: SnapshotArgs) -> Result<ExitCode> {
    let mut plan = Plan::new(&[]);
    plan.proc_root = args.source.proc_root.clone();
    if args.all_owners {
        plan.attribute = Attribute::All;
    }
    let snap = collect(&args.source, &plan)?;
    emit(&report::json::render(&snap)?)?;
    Ok(ExitCode::SUCCESS)
}

fn filter_of(s: &SelectArgs) -> Filter {
    Filter {
        states: s.states.clone(),
        ports: s.ports.clone(),
        pids: s.pids.clone(),
        comms: s.comms.clone(),
        peer: s.peer.clone(),
        family: s.family,
    }
}

fn style(color: ColorChoice, top: usize, header: bool) -> Style {
    let tty = std::io::stdout().is_terminal();
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let color = match color {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => tty && !no_color,
    };
    let width = if tty {
        terminal_size::terminal_size()
            .map(|(w, _)| w.0)
            .unwrap_or(80)
    } else {
        std::env::var("COLUMNS")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(80)
    };
    Style {
        color,
        width: width.clamp(40, 400),
        top,
        header,
    }
}

fn scan(args: ScanArgs, color: ColorChoice) -> Result<ExitCode> {
    let filter = filter_of(&args.select);
    let mut plan = Plan::new(&filter.states);
    plan.proc_root = args.source.proc_root.clone();
    if args.sockets {
        plan.attribute = Attribute::All;
    }
    let snap = match &args.record {
        Some(path) => collect_recording(path, &plan)?,
        None => collect(&args.source, &plan)?,
    };
    let policy = Policy {
        close_wait_warn: args.policy.close_wait_warn,
        close_wait_crit: args.policy.close_wait_crit,
        time_wait_warn: args.policy.time_wait_warn,
        sockets: args.sockets,
        ..Policy::default()
    };
    let report: Report = classify::classify(&snap, &filter, &policy);
    let json = args.json || args.format == Format::Json;
    let text = if json {
        report::json::render(&report)?
    } else {
        report::table::render(&report, &style(color, args.top, !args.no_header))
    };
    emit(&text)?;
    Ok(ExitCode::SUCCESS)
}

fn assert(args: AssertArgs) -> Result<ExitCode> {
    let mut filter = filter_of(&args.select);
    let limits = Limits {
        max_close_wait: args.max_close_wait,
        max_time_wait: args.max_time_wait,
    };
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
    plan.proc_root = args.source.proc_root.clone();
    plan.tcp_info = false;
    plan.attribute = if filter.needs_owner() {
        Attribute::Default
    } else {
        Attribute::Nothing
    };
    let mut snap = collect(&args.source, &plan)?;
    let policy = Policy::default();
    let mut outcome = assertion::evaluate(&classify::classify(&snap, &filter, &policy), &limits);
    if !outcome.ok && plan.attribute == Attribute::Nothing && args.source.from.is_none() {
        // Name the offenders: attribute now that we know it is worth it.
        plan.attribute = Attribute::Default;
        collect::attribute(&mut snap, &plan);
        outcome = assertion::evaluate(&classify::classify(&snap, &filter, &policy), &limits);
    }
    let text = if args.json {
        report::json::render(&outcome)?
    } else {
        assertion::render_text(&outcome)
    };
    emit(&text)?;
    Ok(if outcome.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
