//! How a test says it checked nothing. Shared by the unit tests and, through
//! `#[path]`, by the integration tests in `tests/cli`.
//!
//! The test harness captures what `eprintln!` prints and shows it only for
//! failing tests, so a skip reported that way looks like a pass. A skip here
//! is written to the process's stderr directly (the harness captures only the
//! print macros), and a summary of every skip is printed when the test binary
//! exits, after the harness's own `test result:` line.

use std::io::Write;
use std::sync::{Mutex, Once};

static SKIPS: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());
static SUMMARY: Once = Once::new();

/// Skips the rest of a test whose prerequisite is part of the README's
/// set-up (root, a package `.ci/run` installs). Under `CI=true` that is a
/// failure: a green CI run proves every such test ran.
#[allow(dead_code)] // each of the two crates that include this file uses a part
pub fn skip(why: &str) {
    assert!(
        !in_ci(),
        "would skip under CI=true (CI must run every test): {why}"
    );
    record(why);
}

/// Skips a check whose input is optional even in CI (a capture from another
/// project that sits beside the repository only in some checkouts). Visible
/// like [`skip`], never a failure.
#[allow(dead_code)]
pub fn skip_optional(why: &str) {
    record(why);
}

/// True when `CI` is set to `true` or `1`, as CI systems do.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

fn record(why: &str) {
    // The harness names each test's thread after the test.
    let test = std::thread::current()
        .name()
        .unwrap_or("(unnamed test)")
        .to_string();
    let _ = writeln!(std::io::stderr().lock(), "SKIPPED {test}: {why}");
    SKIPS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((test, why.to_string()));
    SUMMARY.call_once(|| {
        // SAFETY: registers a plain `extern "C" fn` with no arguments; it
        // runs once, at exit, after the harness printed its summary.
        unsafe { libc::atexit(print_summary) };
    });
}

extern "C" fn print_summary() {
    let skips = SKIPS.lock().unwrap_or_else(|e| e.into_inner());
    let tests: std::collections::BTreeSet<&str> = skips.iter().map(|(t, _)| t.as_str()).collect();
    let mut err = std::io::stderr().lock();
    let _ = writeln!(
        err,
        "\nSKIPPED: {} test(s) of this binary checked nothing or only part of what they check:",
        tests.len()
    );
    for (test, why) in skips.iter() {
        let _ = writeln!(err, "  {test}: {why}");
    }
}
