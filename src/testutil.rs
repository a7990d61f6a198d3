//! Helpers shared by the unit tests.

/// Prints why a test is skipped, so the skip shows in the output. Under
/// `CI=true` a skip fails the test instead: a green CI run proves that the
/// tests needing root, a tool or a capture really ran.
pub(crate) fn skip(why: &str) {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    assert!(!ci, "would skip under CI=true: {why}");
    eprintln!("SKIPPED: {why}");
}

/// True when this process may read its own threads' `syscall` files
/// (ptrace access: some sandboxes deny it).
pub(crate) fn can_read_own_syscall() -> bool {
    std::fs::read_to_string("/proc/thread-self/syscall").is_ok()
}
