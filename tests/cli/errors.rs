//! Bad input: one line on stderr naming the problem, exit 2, no panic.

use crate::support::*;

fn fails_with_one_line(args: &[&str], needle: &str) {
    let out = run(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert_eq!(err.lines().count(), 1, "{args:?}: one line, got:\n{err}");
    assert!(
        err.contains(needle),
        "{args:?}: expected '{needle}' in: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(out.stdout.is_empty(), "no partial output on error");
}

#[test]
fn bad_flag_values() {
    fails_with_one_line(&["assert", "--max-close-wait", "lots"], "--max-close-wait");
    fails_with_one_line(&["assert", "--max-close-wait=-1"], "--max-close-wait");
    fails_with_one_line(&["scan", "--port", "70000"], "--port");
    fails_with_one_line(&["scan", "--state", "sleepy"], "sleepy");
    fails_with_one_line(&["scan", "--family", "5"], "--family");
    fails_with_one_line(&["scan", "--peer", "nowhere:x"], "--peer");
    fails_with_one_line(&["scan", "--bogus"], "--bogus");
    fails_with_one_line(&["assert"], "--max-close-wait");
}

#[test]
fn unreadable_and_malformed_files() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path.display().to_string()
    };
    fails_with_one_line(
        &["scan", "--from", "/nonexistent/dump"],
        "/nonexistent/dump",
    );
    let empty = p("empty", b"");
    fails_with_one_line(&["scan", "--from", &empty], "empty file");
    let text = p("text.txt", b"hello world, this is not a dump\n");
    fails_with_one_line(&["scan", "--from", &text], "byte offset 0");
    let json = p("bad.json", b"{ \"schema_version\": 1, ");
    fails_with_one_line(&["scan", "--from", &json], "invalid JSON");
    let future = p("future.json", b"{ \"schema_version\": 99 }");
    fails_with_one_line(&["scan", "--from", &future], "schema_version 99");
    // A valid dump cut in the middle of its second message.
    let whole = std::fs::read(crate::replay::fixture("workload.ss-dump")).unwrap();
    let cut = p("cut.dump", &whole[..150]);
    fails_with_one_line(&["scan", "--from", &cut], "byte offset");
    // A header whose length is 0.
    let zero = p("zero.dump", &[0u8; 20]);
    fails_with_one_line(
        &["scan", "--from", &zero],
        "smaller than its 16-byte header",
    );
}
