//! `cwdiag serve`: the Prometheus exposition over HTTP, scanned at scrape
//! time.

use super::pipeline::Pipeline;
use super::prometheus;
use crate::events::counters::Counters;
use crate::events::session::Session;
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
    // Before the server's threads: the source may need a mount namespace.
    let events = args.events.then(|| EventCounting::start(top_k)).flatten();
    let counters = events.as_ref().map(|e| e.shared.clone());
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
        let mut text = prometheus(
            &reports,
            top_k,
            Some(started.elapsed()),
            errors.load(Ordering::Relaxed),
        );
        if let Some(shared) = &counters
            && let Ok(c) = shared.lock()
        {
            text += &crate::report::events::render(&c.0, c.1);
        }
        Ok(text)
    });
    let served = crate::serve::serve(
        crate::serve::ServeConfig {
            listen: args.listen,
            min_interval: args.min_interval,
            max_connections: args.max_connections,
            web_config: args.web_config,
        },
        collect,
    );
    // The source's instance is removed when its thread ends.
    drop(events);
    served?;
    Ok(ExitCode::SUCCESS)
}

/// net.ipv4.ip_local_port_range of this namespace (the kernel's default
/// when unreadable).
fn ephemeral_range() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|x| x.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32768, 60999))
}

/// Counters and lost events, shared with the scrape.
type Shared = std::sync::Arc<std::sync::Mutex<(Counters, u64)>>;

/// The event source on a thread of its own, counting.
struct EventCounting {
    shared: Shared,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EventCounting {
    fn start(top_k: usize) -> Option<EventCounting> {
        use std::sync::atomic::{AtomicBool, Ordering};
        let mut s = match Session::open(std::path::Path::new("/proc")) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("cwdiag serve: warning: {e}; no event counters");
                return None;
            }
        };
        let shared: Shared = Default::default();
        if let Ok(mut c) = shared.lock() {
            c.0 = Counters::new(top_k, ephemeral_range());
        }
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let (sh, st) = (shared.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut last_lost = std::time::Instant::now();
            while !st.load(Ordering::SeqCst) {
                let mut batch = Vec::new();
                s.pump(std::time::Duration::from_millis(200), &mut |_, a| {
                    batch.push(a)
                });
                let lost = (last_lost.elapsed() >= std::time::Duration::from_secs(1)).then(|| {
                    last_lost = std::time::Instant::now();
                    s.tracer.lost()
                });
                if let Ok(mut c) = sh.lock() {
                    for a in &batch {
                        c.0.add(a);
                    }
                    if let Some(l) = lost {
                        c.1 = l;
                    }
                }
            }
        });
        Some(EventCounting {
            shared,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for EventCounting {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
