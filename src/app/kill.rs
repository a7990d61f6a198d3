//! `cwdiag kill`: destroy selected sockets with SOCK_DESTROY (dry run by
//! default). With `--plan FILE` or `--cookie C`, only reviewed sockets that
//! still exist unchanged are acted on.

use super::{collect_selected, filter_of};
use crate::collect::{Attribute, Plan};
use crate::killplan::{self, KillPlan, Planned};
use crate::model::{Socket, TcpState};
use crate::output::emit;
use crate::report;
use anyhow::Result;
use std::process::ExitCode;

/// Printed with every `kill`, dry run or not.
const KILL_WARNING: &str = "note: destroying a socket resets the connection (RST) and returns ECONNABORTED to the application, but its file descriptor stays leaked until the application calls close(): this is first aid, not a fix.";

fn read_plan(path: &std::path::Path) -> Result<KillPlan> {
    let name = path.display().to_string();
    let c = crate::collect::fsread::read_named(path, killplan::MAX_PLAN)
        .map_err(|e| anyhow::anyhow!("cannot read --plan {name}: {e}"))?;
    if c.truncated {
        anyhow::bail!(
            "{name}: larger than {} bytes: not a kill plan",
            killplan::MAX_PLAN
        );
    }
    killplan::parse(&c.bytes, &name).map_err(anyhow::Error::msg)
}

pub(super) fn kill(args: crate::cli::KillArgs) -> Result<ExitCode> {
    use crate::collect::destroy::{self, Destroyer, Outcome};
    let filter = filter_of(&args.select);
    let plan_file = args.plan.as_deref().map(read_plan).transpose()?;
    let reviewed = plan_file.is_some() || !args.cookies.is_empty();
    let selects = !(filter.states.is_empty()
        && filter.ports.is_empty()
        && filter.pids.is_empty()
        && filter.comms.is_empty()
        && filter.peer.is_none()
        && filter.family.is_none());
    if reviewed && selects {
        anyhow::bail!(
            "kill: --plan and --cookie name the sockets: drop the selection flags (--state, --port, ...)"
        );
    }
    if !reviewed && filter.states.is_empty() {
        anyhow::bail!("kill: --state is required (e.g. --state close-wait), or --plan / --cookie");
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
    let mut plan = match &plan_file {
        Some(p) => {
            let mut states: Vec<TcpState> = p.sockets.iter().map(|s| s.state).collect();
            states.dedup();
            if states.is_empty() {
                // Nothing reviewed: dump as little as possible.
                states.push(TcpState::CloseWait);
            }
            Plan::new(&states)
        }
        None if reviewed => Plan::new(&[]),
        None => Plan::for_filter(&filter),
    };
    plan.tcp_info = false;
    // Selection by process needs owners for every selected state.
    if filter.needs_owner() {
        plan.attribute = Attribute::All;
    }
    let c = collect_selected(&args.source, &plan, None, &filter)?;
    let snap = c
        .snapshots
        .first()
        .ok_or_else(|| anyhow::anyhow!("no namespace could be read"))?;
    let process_of = |s: &Socket| s.pid.and_then(|p| snap.processes.get(&p));
    let mut out: String = c
        .selection
        .iter()
        .map(|w| format!("warning: {}\n", crate::procname::printable(w)))
        .collect();
    let chosen: Vec<&Socket> = if reviewed {
        let wanted: Vec<(u64, Option<&Planned>)> = match &plan_file {
            Some(p) => p.sockets.iter().map(|s| (s.cookie, Some(s))).collect(),
            None => args.cookies.iter().map(|&c| (c, None)).collect(),
        };
        let m = killplan::matches(&wanted, &snap.sockets);
        out.push_str(&report::kill::reviewed(&m));
        m.present
    } else {
        snap.sockets
            .iter()
            .filter(|s| s.state != TcpState::Listen && filter.matches(s, process_of(s)))
            .collect()
    };
    if args.json {
        let doc = KillPlan::of(&chosen, |s| process_of(s).map(|p| p.comm.clone()));
        emit(&report::json::render(&doc)?)?;
        // stdout is the plan; the rest goes to stderr.
        eprint!("{out}");
        eprintln!("{KILL_WARNING}");
        return Ok(ExitCode::SUCCESS);
    }
    out.push_str(&report::kill::list(&chosen, &snap.processes));
    let mut code = ExitCode::SUCCESS;
    if !args.yes {
        out.push_str(&report::kill::dry_run(chosen.len()));
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
        out.push_str(&report::kill::destroyed(destroyed, gone, failed.len()));
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
