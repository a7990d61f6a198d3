//! Command dispatch: parse -> collect -> classify -> render -> exit code.

use crate::assertion::{self, Limits};
use crate::classify::{self, Policy, Report};
use crate::cli::{
    AssertArgs, Cli, ColorChoice, Command, Format, SampleArgs, ScanArgs, SelectArgs, SnapshotArgs,
    SourceArgs,
};
use crate::collect::{self, Attribute, Plan};
use crate::filter::Filter;
use crate::model::Snapshot;
use crate::output::emit;
use crate::report::{self, Style};
use anyhow::{Context, Result};
use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;

pub fn run(cli: Cli) -> Result<ExitCode> {
    let color = cli.color;
    match cli.command {
        Command::Scan(args) => scan(args, color),
        Command::Assert(args) => assert(args),
        Command::Watch(args) => watch(args, color),
        Command::Kill(args) => kill(args),
        Command::Serve(args) => serve(args),
        Command::Snapshot(args) => snapshot(args),
        Command::Explain { rule_id } => explain(rule_id.as_deref()),
        Command::Completions { shell } => {
            let mut buf = Vec::new();
            clap_complete::generate(
                shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "cwdiag",
                &mut buf,
            );
            emit(&String::from_utf8_lossy(&buf))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Man { subcommand } => {
            let top = <Cli as clap::CommandFactory>::command();
            let man = match subcommand {
                None => clap_mangen::Man::new(top),
                Some(name) => {
                    let sub = top
                        .find_subcommand(&name)
                        .ok_or_else(|| anyhow::anyhow!("man: unknown subcommand '{name}'"))?
                        .clone()
                        .bin_name(format!("cwdiag {name}"));
                    clap_mangen::Man::new(sub).title(format!("cwdiag-{name}"))
                }
            };
            let mut buf = Vec::new();
            man.render(&mut buf)?;
            emit(&String::from_utf8_lossy(&buf))?;
            Ok(ExitCode::SUCCESS)
        }
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

/// The snapshots of one run: one per namespace, plus namespaces that could
/// not be read (reported, never silently skipped).
struct Collected {
    snapshots: Vec<Snapshot>,
    warnings: Vec<String>,
    /// True with --all-netns: output is labelled per namespace.
    multi: bool,
}

/// Live collection (in the chosen namespaces), or a replay with `--from`.
fn collect_all(src: &SourceArgs, plan: &Plan, record: Option<&Path>) -> Result<Collected> {
    let mut plan = plan.clone();
    plan.proc_root = src.proc_root.clone();
    plan.source = src.source;
    let one = |snapshots| Collected {
        snapshots,
        warnings: Vec::new(),
        multi: false,
    };
    if let Some(path) = &src.from {
        return Ok(one(vec![collect::replay::load(path)?]));
    }
    let mut warnings = Vec::new();
    let targets = if src.all_netns {
        let (targets, unreadable) = collect::netns::all(&src.proc_root);
        if unreadable > 0 {
            warnings.push(format!("the network namespace of {unreadable} processes could not be read (not root?): namespaces only they use are missing"));
        }
        targets
    } else if let Some(name) = &src.netns {
        vec![collect::netns::named(name)?]
    } else if let Some(pid) = src.netns_pid {
        vec![collect::netns::of_pid(&src.proc_root, pid)?]
    } else {
        let snap = match record {
            Some(path) => collect_recording(path, &plan)?,
            None => collect::live(&plan, None)?,
        };
        return Ok(one(vec![snap]));
    };
    if src.all_netns && record.is_some() {
        anyhow::bail!(
            "--record takes one namespace: use --netns or --netns-pid with it, not --all-netns"
        );
    }
    let mut out = Collected {
        snapshots: Vec::new(),
        warnings,
        multi: src.all_netns,
    };
    for t in targets {
        let (plan, info, record) = (plan.clone(), t.info.clone(), record.map(Path::to_path_buf));
        let res = collect::netns::run_in(&t, move || {
            let mut snap = match &record {
                Some(path) => collect_recording(path, &plan)?,
                None => collect::live(&plan, None)?,
            };
            snap.netns = Some(info);
            Ok(snap)
        });
        match res {
            Ok(s) => out.snapshots.push(s),
            // One unreadable namespace must not hide the others.
            Err(e) if src.all_netns => out.warnings.push(format!("{e:#}")),
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Live collection that also writes the raw replies and a sidecar.
fn collect_recording(path: &Path, plan: &Plan) -> Result<Snapshot> {
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

/// JSON for several namespaces: `{"schema_version":1,"namespaces":[...],"warnings":[...]}`.
#[derive(serde::Serialize)]
struct PerNamespace<'a, T: serde::Serialize> {
    schema_version: u32,
    namespaces: &'a [T],
    warnings: &'a [String],
}

fn per_namespace_json<T: serde::Serialize>(items: &[T], warnings: &[String]) -> Result<String> {
    report::json::render(&PerNamespace {
        schema_version: crate::model::SCHEMA_VERSION,
        namespaces: items,
        warnings,
    })
}

fn netns_heading(netns: Option<&crate::model::NetnsInfo>) -> String {
    match netns {
        Some(n) => format!("=== network namespace {} (net:[{}]) ===\n", n.name, n.inode),
        None => String::new(),
    }
}

fn snapshot(args: SnapshotArgs) -> Result<ExitCode> {
    let mut plan = Plan::new(&[]);
    if args.all_owners {
        plan.attribute = Attribute::All;
    }
    let c = collect_all(&args.source, &plan, None)?;
    let text = if c.multi {
        per_namespace_json(&c.snapshots, &c.warnings)?
    } else {
        let snap = c
            .snapshots
            .first()
            .ok_or_else(|| anyhow::anyhow!("no namespace could be read"))?;
        report::json::render(snap)?
    };
    emit(&text)?;
    Ok(ExitCode::SUCCESS)
}

fn policy_of(p: &crate::cli::PolicyArgs) -> Policy {
    Policy {
        close_wait_warn: p.close_wait_warn,
        close_wait_crit: p.close_wait_crit,
        time_wait_warn: p.time_wait_warn,
        ..Policy::default()
    }
}

/// Text output of several namespaces: warnings first, then each item under
/// its namespace heading.
fn per_namespace_text<T>(
    warnings: &[String],
    items: &[T],
    netns: impl Fn(&T) -> Option<&crate::model::NetnsInfo>,
    render: impl Fn(&T) -> String,
) -> String {
    let mut t: String = warnings.iter().map(|w| format!("warning: {w}\n")).collect();
    for item in items {
        t.push_str(&netns_heading(netns(item)));
        t.push_str(&render(item));
    }
    t
}

/// JSON output: one document, or the per-namespace wrapper.
fn json_output<T: serde::Serialize>(
    items: &[T],
    warnings: &[String],
    multi: bool,
) -> Result<String> {
    if multi {
        return per_namespace_json(items, warnings);
    }
    let first = items
        .first()
        .ok_or_else(|| anyhow::anyhow!("no namespace could be read"))?;
    report::json::render(first)
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
    let started = std::time::Instant::now();
    let filter = filter_of(&args.select);
    let mut plan = Plan::for_filter(&filter);
    if args.sockets {
        plan.attribute = Attribute::All;
    }
    let policy = Policy {
        sockets: args.sockets,
        ..policy_of(&args.policy)
    };
    let (reports, c) = if args.sampling.samples > 1 {
        if args.record.is_some() {
            anyhow::bail!("--record takes a single sample: drop --samples");
        }
        let (samples, c) = sample(&args.source, &plan, &filter, &policy, &args.sampling)?;
        let series = crate::growth::series(&samples);
        let mut last = samples
            .into_iter()
            .last()
            .ok_or_else(|| anyhow::anyhow!("no sample taken"))?;
        last.findings.splice(0..0, crate::growth::findings(&series));
        last.growth = Some(series);
        (vec![last], c)
    } else {
        let c = collect_all(&args.source, &plan, args.record.as_deref())?;
        let t = std::time::Instant::now();
        let reports = c
            .snapshots
            .iter()
            .map(|s| classify::classify(s, &filter, &policy))
            .collect();
        collect::timing("classify", t);
        (reports, c)
    };
    let format = if args.json { Format::Json } else { args.format };
    let text = match format {
        Format::Json => json_output(&reports, &c.warnings, c.multi)?,
        Format::Prometheus => prometheus(&reports, args.top_k, Some(started.elapsed()), 0),
        Format::Table => {
            let st = style(color, args.top, !args.no_header);
            per_namespace_text(
                &c.warnings,
                &reports,
                |r| r.netns.as_ref(),
                |r| report::table::render(r, &st) + "\n",
            )
        }
    };
    collect::timing("scan", started);
    match &args.output {
        Some(path) => report::prometheus::write_atomic(path, &text)?,
        None => emit(&text)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Prometheus exposition of one report, or of several namespaces merged.
fn prometheus(
    reports: &[Report],
    top_k: usize,
    took: Option<std::time::Duration>,
    errors: u64,
) -> String {
    let texts: Vec<String> = reports
        .iter()
        .map(|r| {
            let opts = report::prometheus::PromOptions {
                top_k,
                scan_duration_ms: took.map(|d| d.as_secs_f64() * 1000.0),
                scan_errors: errors,
                namespace: r.netns.as_ref().map(|n| n.name.clone()),
            };
            report::prometheus::render(r, &opts)
        })
        .collect();
    if texts.len() == 1 {
        texts.into_iter().next().unwrap_or_default()
    } else {
        report::prometheus::merge(&texts)
    }
}

fn serve(args: crate::cli::ServeArgs) -> Result<ExitCode> {
    use std::sync::atomic::{AtomicU64, Ordering};
    if args.source.from.is_some() {
        anyhow::bail!("serve scans live at scrape time: --from is not supported");
    }
    let filter = filter_of(&args.select);
    let plan = Plan::for_filter(&filter);
    let policy = policy_of(&args.policy);
    let errors = AtomicU64::new(0);
    let (source, top_k) = (args.source.clone(), args.top_k);
    let collect: crate::serve::Collect = Box::new(move || {
        let started = std::time::Instant::now();
        let c = collect_all(&source, &plan, None).inspect_err(|_| {
            errors.fetch_add(1, Ordering::Relaxed);
        })?;
        let reports: Vec<Report> = c
            .snapshots
            .iter()
            .map(|s| classify::classify(s, &filter, &policy))
            .collect();
        Ok(prometheus(
            &reports,
            top_k,
            Some(started.elapsed()),
            errors.load(Ordering::Relaxed),
        ))
    });
    crate::serve::serve(
        crate::serve::ServeConfig {
            listen: args.listen,
            min_interval: args.min_interval,
        },
        collect,
    )?;
    Ok(ExitCode::SUCCESS)
}

/// Takes `n` samples `interval` apart in one namespace (live only) and
/// classifies each.
fn sample(
    src: &SourceArgs,
    plan: &Plan,
    filter: &Filter,
    policy: &Policy,
    s: &SampleArgs,
) -> Result<(Vec<Report>, Collected)> {
    if src.from.is_some() || src.all_netns {
        anyhow::bail!(
            "--samples needs one live namespace: it cannot be used with --from or --all-netns"
        );
    }
    let mut reports = Vec::new();
    let mut warnings = Vec::new();
    for i in 0..s.samples {
        if i > 0 {
            std::thread::sleep(s.interval);
        }
        let c = collect_all(src, plan, None)?;
        warnings.extend(c.warnings);
        for snap in &c.snapshots {
            reports.push(classify::classify(snap, filter, policy));
        }
    }
    warnings.dedup();
    Ok((
        reports,
        Collected {
            snapshots: Vec::new(),
            warnings,
            multi: false,
        },
    ))
}

/// Printed with every `kill`, dry run or not.
const KILL_WARNING: &str = "note: destroying a socket resets the connection (RST) and returns ECONNABORTED to the application, but its file descriptor stays leaked until the application calls close(): this is first aid, not a fix.";

fn kill(args: crate::cli::KillArgs) -> Result<ExitCode> {
    use crate::collect::destroy::{self, Destroyer, Outcome};
    use crate::model::TcpState;
    let filter = filter_of(&args.select);
    if filter.states.is_empty() {
        anyhow::bail!("kill: --state is required (e.g. --state close-wait)");
    }
    if filter.states.contains(&TcpState::Listen) {
        anyhow::bail!(
            "kill: --state listen is refused: destroying a listener takes the service down"
        );
    }
    if args.source.from.is_some() || args.source.all_netns {
        anyhow::bail!("kill: works on one live namespace (not with --from or --all-netns)");
    }
    if args.yes && !destroy::has_net_admin(&args.source.proc_root) {
        anyhow::bail!(
            "kill --yes needs root or CAP_NET_ADMIN (the dry run without --yes works for everyone)"
        );
    }
    let mut plan = Plan::for_filter(&filter);
    plan.tcp_info = false;
    // Selection by process needs owners for every selected state.
    if filter.needs_owner() {
        plan.attribute = Attribute::All;
    }
    let c = collect_all(&args.source, &plan, None)?;
    let snap = c
        .snapshots
        .first()
        .ok_or_else(|| anyhow::anyhow!("no namespace could be read"))?;
    let comm = |s: &crate::model::Socket| {
        s.pid
            .and_then(|p| snap.processes.get(&p))
            .map(|p| p.comm.as_str())
    };
    let chosen: Vec<&crate::model::Socket> = snap
        .sockets
        .iter()
        .filter(|s| s.state != TcpState::Listen && filter.matches(s, comm(s)))
        .collect();
    let mut out = report::kill::list(&chosen, &snap.processes);
    let mut code = ExitCode::SUCCESS;
    if !args.yes {
        out.push_str(&format!(
            "dry run: {} sockets would be destroyed; add --yes to destroy them.\n",
            chosen.len()
        ));
    } else {
        let mut d = Destroyer::new()?;
        let (mut destroyed, mut gone, mut failed) = (0, 0, Vec::new());
        let mut unsupported = false;
        for s in &chosen {
            match d.destroy(s)? {
                Outcome::Destroyed => destroyed += 1,
                Outcome::Gone => gone += 1,
                Outcome::Unsupported => {
                    unsupported = true;
                    break;
                }
                Outcome::Denied => anyhow::bail!(
                    "kill: the kernel refused SOCK_DESTROY (EPERM): needs CAP_NET_ADMIN in the socket's network namespace"
                ),
                Outcome::Failed(e) => failed.push(e),
            }
        }
        if unsupported {
            anyhow::bail!(
                "kill: this kernel does not support SOCK_DESTROY (EOPNOTSUPP): it was built without CONFIG_INET_DIAG_DESTROY; restart the owning process instead"
            );
        }
        out.push_str(&format!(
            "destroyed {destroyed}, gone {gone} (closed or reused meanwhile), failed {}\n",
            failed.len()
        ));
        if let Some(e) = failed.first() {
            out.push_str(&format!(
                "first failure: {}\n",
                std::io::Error::from_raw_os_error(*e)
            ));
            code = ExitCode::from(1);
        }
    }
    out.push_str(KILL_WARNING);
    out.push('\n');
    emit(&out)?;
    Ok(code)
}

/// Samples kept for growth in `watch`: the first one and the latest ones.
const WATCH_HISTORY: usize = 120;

fn watch(args: crate::cli::WatchArgs, color: ColorChoice) -> Result<ExitCode> {
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
    let filter = filter_of(&args.select);
    let plan = Plan::for_filter(&filter);
    let policy = policy_of(&args.policy);
    let st = style(color, args.top, true);
    let tty = std::io::stdout().is_terminal() && !args.json;
    let mut history: Vec<Report> = Vec::new();
    let mut n = 0u32;
    while !stop.load(Ordering::SeqCst) {
        let started = std::time::Instant::now();
        let c = collect_all(&args.source, &plan, None)?;
        let mut report = c
            .snapshots
            .first()
            .map(|s| classify::classify(s, &filter, &policy))
            .ok_or_else(|| anyhow::anyhow!("no namespace could be read"))?;
        report.warnings.extend(c.warnings);
        n += 1;
        if history.len() >= WATCH_HISTORY {
            history.remove(1);
        }
        history.push(report);
        let series = crate::growth::series(&history);
        let growth = crate::growth::findings(&series);
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

fn assert(args: AssertArgs) -> Result<ExitCode> {
    let mut filter = filter_of(&args.select);
    let limits = Limits {
        max_close_wait: args.max_close_wait,
        max_time_wait: args.max_time_wait,
        max_close_wait_growth: args.max_close_wait_growth,
        max_time_wait_growth: args.max_time_wait_growth,
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
    // Growth is tracked per process: every sample needs owners.
    plan.attribute = if filter.needs_owner() || growth_limits {
        Attribute::Default
    } else {
        Attribute::Nothing
    };
    let policy = Policy::default();
    let mut outcomes = Vec::new();
    let c = if args.sampling.samples > 1 {
        let (reports, c) = sample(&args.source, &plan, &filter, &policy, &args.sampling)?;
        let series = crate::growth::series(&reports);
        if let Some(last) = reports.last() {
            outcomes.push(assertion::evaluate(last, &limits, &series));
        }
        c
    } else {
        let c = collect_all(&args.source, &plan, None)?;
        plan.proc_root = args.source.proc_root.clone();
        for snap in &c.snapshots {
            let mut snap = snap.clone();
            let mut outcome =
                assertion::evaluate(&classify::classify(&snap, &filter, &policy), &limits, &[]);
            if !outcome.ok && plan.attribute == Attribute::Nothing && args.source.from.is_none() {
                // Name the offenders: attribute now that we know it is worth it.
                plan.attribute = Attribute::Default;
                collect::attribute(&mut snap, &plan);
                plan.attribute = Attribute::Nothing;
                outcome =
                    assertion::evaluate(&classify::classify(&snap, &filter, &policy), &limits, &[]);
            }
            outcomes.push(outcome);
        }
        Collected {
            snapshots: Vec::new(),
            ..c
        }
    };
    let ok = outcomes.iter().all(|o| o.ok);
    let text = if args.json {
        json_output(&outcomes, &c.warnings, c.multi)?
    } else {
        per_namespace_text(
            &c.warnings,
            &outcomes,
            |o| o.netns.as_ref(),
            assertion::render_text,
        )
    };
    emit(&text)?;
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
