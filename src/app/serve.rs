//! `cwdiag serve`: the Prometheus exposition over HTTP, scanned at scrape
//! time.

use super::pipeline::Pipeline;
use super::prometheus;
use anyhow::Result;
use std::process::ExitCode;

pub(super) fn serve(args: crate::cli::ServeArgs) -> Result<ExitCode> {
    use std::sync::atomic::{AtomicU64, Ordering};
    if args.source.from.is_some() {
        anyhow::bail!("serve scans live at scrape time: --from is not supported");
    }
    let pipeline = Pipeline::of(&args.select, &args.policy);
    let errors = AtomicU64::new(0);
    // Selector warnings go to the log once each time they change: the
    // exposition format has no place for them.
    let said = std::sync::Mutex::new(Vec::<String>::new());
    let (source, top_k) = (args.source.clone(), args.top_k);
    let collect: crate::serve::Collect = Box::new(move || {
        let started = std::time::Instant::now();
        let c = pipeline.collect(&source, None).inspect_err(|_| {
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
        let reports = pipeline.classify(&c.snapshots);
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
