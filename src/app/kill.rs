//! `cwdiag kill`: destroy selected sockets with SOCK_DESTROY (dry run by
//! default).

use super::{collect_selected, filter_of};
use crate::collect::{Attribute, Plan};
use crate::output::emit;
use crate::report;
use anyhow::Result;
use std::process::ExitCode;

/// Printed with every `kill`, dry run or not.
const KILL_WARNING: &str = "note: destroying a socket resets the connection (RST) and returns ECONNABORTED to the application, but its file descriptor stays leaked until the application calls close(): this is first aid, not a fix.";

pub(super) fn kill(args: crate::cli::KillArgs) -> Result<ExitCode> {
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
    let c = collect_selected(&args.source, &plan, None, &filter)?;
    let snap = c
        .snapshots
        .first()
        .ok_or_else(|| anyhow::anyhow!("no namespace could be read"))?;
    let process_of = |s: &crate::model::Socket| s.pid.and_then(|p| snap.processes.get(&p));
    let chosen: Vec<&crate::model::Socket> = snap
        .sockets
        .iter()
        .filter(|s| s.state != TcpState::Listen && filter.matches(s, process_of(s)))
        .collect();
    let mut out: String = c
        .selection
        .iter()
        .map(|w| format!("warning: {w}\n"))
        .collect();
    out.push_str(&report::kill::list(&chosen, &snap.processes));
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
