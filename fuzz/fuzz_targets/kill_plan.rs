//! `killplan::parse`, what `cwdiag kill --plan FILE` reads (the dry run's
//! `--json` output, or anything handed in its place), then matching the
//! parsed plan against a few sockets as `kill` does before destroying.
#![no_main]

use cwdiag::killplan;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(plan) = killplan::parse(data, "fuzz") {
        let live: Vec<cwdiag::model::Socket> = Vec::new();
        let wanted: Vec<_> = plan.sockets.iter().map(|p| (p.cookie, Some(p))).collect();
        let _ = killplan::matches(&wanted, &live);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = killplan::parse_cookie(text);
    }
});
