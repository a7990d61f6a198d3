//! `cwdiag serve`: the Prometheus exposition over HTTP, scanned at scrape
//! time.

use super::{collect_selected, filter_of, policy_of, prometheus};
use crate::collect::Plan;
use crate::diag::{self as classify, Report};
use anyhow::Result;
use std::process::ExitCode;

pub(super) fn serve(args: crate::cli::ServeArgs) -> Result<ExitCode> {
    use std::sync::atomic::{AtomicU64, Ordering};
    if args.source.from.is_some() {
        anyhow::bail!("serve scans live at scrape time: --from is not supported");
    }
    let filter = filter_of(&args.select);
    let plan = Plan::for_filter(&filter);
    let policy = policy_of(&args.policy);
    let errors = AtomicU64::new(0);
    // Selector warnings go to the log once each time they change: the
    // exposition format has no place for them.
    let said = std::sync::Mutex::new(Vec::<String>::new());
    let (source, top_k) = (args.source.clone(), args.top_k);
    let collect: crate::serve::Collect = Box::new(move || {
        let started = std::time::Instant::now();
        let c = collect_selected(&source, &plan, None, &filter).inspect_err(|_| {
            errors.fetch_add(1, Ordering::Relaxed);
        })?;
        if let Ok(mut said) = said.lock()
            && *said != c.selection
        {
            for line in &c.selection {
                eprintln!("cwdiag serve: warning: {line}");
            }
            *said = c.selection.clone();
        }
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
            max_connections: args.max_connections,
            web_config: args.web_config,
        },
        collect,
    )?;
    Ok(ExitCode::SUCCESS)
}
