//! `cwdiag snapshot`: the raw snapshot as JSON, for `--from` later.

use super::{collect_all, per_namespace_json};
use crate::cli::SnapshotArgs;
use crate::collect::{Attribute, Plan};
use crate::output::emit;
use crate::report;
use anyhow::Result;
use std::process::ExitCode;

pub(super) fn snapshot(args: SnapshotArgs) -> Result<ExitCode> {
    let mut plan = Plan::new(&[]);
    // A snapshot keeps everything, tcp_info of ESTABLISHED sockets too.
    plan.parallel = false;
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
