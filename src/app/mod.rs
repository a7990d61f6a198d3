//! Command dispatch (parse -> collect -> classify -> render -> exit code)
//! and what the commands share: collection across namespaces, sampling,
//! per-namespace output. Each command lives in its own module.

use crate::cli::{Cli, ColorChoice, Command, SelectArgs, SourceArgs};
use crate::collect::{self, Plan};
use crate::diag::{Policy, Report};
use crate::filter::Filter;
use crate::model::Snapshot;
use crate::output::emit;
use crate::report::{self, Style};
use anyhow::{Context, Result};
use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;

mod assert;
mod kill;
mod pipeline;
mod scan;
mod serve;
mod snapshot;
mod trace;
mod watch;
mod window;

pub fn run(cli: Cli) -> Result<ExitCode> {
    let color = cli.color;
    match cli.command {
        Command::Scan(args) => scan::scan(args, color),
        Command::Assert(args) => assert::assert(args),
        Command::Watch(args) => watch::watch(args, color),
        Command::Kill(args) => kill::kill(args),
        Command::Trace(args) => trace::trace(args),
        Command::Serve(args) => serve::serve(args),
        Command::Snapshot(args) => snapshot::snapshot(args),
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
        None => crate::report::explain::list(),
        Some(id) => {
            let rule = crate::diag::RuleId::parse(id).ok_or_else(|| {
                anyhow::anyhow!("unknown rule '{id}' (run `cwdiag explain` to list the rules)")
            })?;
            crate::report::explain::render(rule.doc(), 78)
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
    /// What the process selectors matched nothing of (also in the
    /// warnings), for `assert --require-match`, `kill` and `serve`.
    selection: Vec<String>,
}

/// [`collect_all`], then says in the warnings when `--pid` or `--comm`
/// names no running process (for a replay: no owner in the capture).
fn collect_selected(
    src: &SourceArgs,
    plan: &Plan,
    record: Option<&Path>,
    filter: &Filter,
) -> Result<Collected> {
    let mut c = collect_all(src, plan, record)?;
    if !filter.needs_owner() {
        return Ok(c);
    }
    let line = if let Some(path) = &src.from {
        let procs = c
            .snapshots
            .iter()
            .flat_map(|s| s.processes.iter().map(|(pid, p)| (*pid, p.clone())));
        filter.selection(procs).warning(
            filter,
            &format!("process that owns a socket in {}", path.display()),
        )
    } else {
        match collect::selection::check(&src.proc_root, filter) {
            Some(sel) => sel.warning(filter, "running process"),
            None => Some(format!(
                "could not tell within {} s whether --pid/--comm match a running process (reading /proc was too slow)",
                collect::identity::DEADLINE.as_secs()
            )),
        }
    };
    if let Some(line) = line {
        if c.multi {
            c.warnings.push(line.clone());
        } else {
            for s in &mut c.snapshots {
                s.warnings.push(line.clone());
            }
        }
        c.selection.push(line);
    }
    Ok(c)
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
        selection: Vec::new(),
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
    if src.all_netns {
        let c = collect::multi::live(&plan, &targets);
        warnings.extend(c.warnings);
        return Ok(Collected {
            snapshots: c.snapshots,
            warnings,
            multi: true,
            selection: Vec::new(),
        });
    }
    let mut out = Collected {
        snapshots: Vec::new(),
        warnings,
        multi: false,
        selection: Vec::new(),
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
        out.snapshots.push(res?);
    }
    Ok(out)
}

/// Live collection that also writes the raw replies and a sidecar (both
/// through [`crate::outfile`], mode 0600). A dump written in place (stdout,
/// a FIFO, a device) gets no sidecar: there is no file to put it beside.
fn collect_recording(path: &Path, plan: &Plan) -> Result<Snapshot> {
    use crate::outfile::{self, OutFile};
    use std::io::Write;
    let name = path.display();
    // Both targets are checked before anything is collected or written.
    let file = OutFile::create(path, outfile::RECORD_MODE)?;
    let stream = outfile::is_stream(&file);
    let side_path = collect::replay::sidecar_path(path);
    let side = if stream {
        None
    } else {
        Some(OutFile::create(&side_path, outfile::RECORD_MODE)?)
    };
    let mut out = std::io::BufWriter::new(file);
    let mut rec = |b: &[u8]| -> Result<()> {
        out.write_all(b)
            .with_context(|| format!("cannot write {name}"))
    };
    let mut snap = collect::live(plan, Some(&mut rec))?;
    let Some(mut side) = side else {
        out.into_inner()
            .map_err(|e| anyhow::anyhow!("cannot write {name}: {}", e.error()))?
            .commit()?;
        snap.warnings.push(format!(
            "--record {name} is not a regular file: no sidecar written, so a replay will not know owners or sysctls"
        ));
        return Ok(snap);
    };
    let json = report::json::render(&collect::replay::Sidecar::of(&snap))?;
    side.write_all(json.as_bytes())
        .with_context(|| format!("cannot write {}", side_path.display()))?;
    // The sidecar first: a dump is never left without the sidecar it needs.
    side.commit()?;
    out.into_inner()
        .map_err(|e| anyhow::anyhow!("cannot write {name}: {}", e.error()))?
        .commit()?;
    Ok(snap)
}

/// JSON for several namespaces: `{"schema_version":4,"namespaces":[...],"warnings":[...]}`.
#[derive(serde::Serialize)]
struct PerNamespace<'a, T: serde::Serialize> {
    schema_version: u32,
    namespaces: &'a [T],
    warnings: &'a [String],
}

fn per_namespace_json<T: serde::Serialize>(items: &[T], warnings: &[String]) -> Result<String> {
    report::json::render(&PerNamespace {
        schema_version: crate::diag::report::REPORT_SCHEMA_VERSION,
        namespaces: items,
        warnings,
    })
}

fn netns_heading(netns: Option<&crate::model::NetnsInfo>) -> String {
    match netns {
        Some(n) => {
            let pod = n
                .pod_uid
                .iter()
                .map(|u| format!(" pod {u}"))
                .chain(n.container.iter().map(|c| format!(" {c}")))
                .collect::<String>();
            format!(
                "=== network namespace {} (net:[{}]){} ===\n",
                crate::escape::Escaped(&n.name),
                n.inode,
                crate::escape::Escaped(&pod)
            )
        }
        None => String::new(),
    }
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
    let mut t: String = warnings
        .iter()
        .map(|w| format!("warning: {}\n", crate::procname::printable(w)))
        .collect();
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

/// Prometheus exposition of one report, or of several namespaces merged.
fn prometheus(
    reports: &[Report],
    top_k: usize,
    took: Option<std::time::Duration>,
    errors: u64,
) -> String {
    let each: Vec<_> = reports
        .iter()
        .map(|r| {
            let opts = report::prometheus::PromOptions {
                top_k,
                scan_duration_ms: took.map(|d| d.as_secs_f64() * 1000.0),
                scan_errors: errors,
                namespace: r.netns.as_ref().map(|n| n.name.clone()),
            };
            (r, opts)
        })
        .collect();
    report::prometheus::render_many(&each)
}
