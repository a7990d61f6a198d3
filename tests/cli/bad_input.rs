//! The bad-input suite: every reader and flag, fed broken input, must exit
//! 2 with one line on stderr naming the file or flag (and, for binary
//! input, the byte offset), never panic, never print partial output.

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

/// A netlink header: length, type, flags, seq, pid.
fn nlhdr(len: u32, ty: u16) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&len.to_ne_bytes());
    v.extend_from_slice(&ty.to_ne_bytes());
    v.extend_from_slice(&2u16.to_ne_bytes());
    v.extend_from_slice(&123456u32.to_ne_bytes());
    v.extend_from_slice(&0u32.to_ne_bytes());
    v
}

#[test]
fn malformed_netlink_dumps_name_the_offset() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path.display().to_string()
    };
    let good = std::fs::read(crate::replay::fixture("workload.ss-dump")).unwrap();
    let first_len = u32::from_ne_bytes([good[0], good[1], good[2], good[3]]) as usize;

    // A header smaller than a header (length 8).
    let f = write("small.dump", &nlhdr(8, 20));
    fails_with_one_line(&["scan", "--from", &f], "byte offset 0");
    // A length past the end of the file, after one good message.
    let mut past = good[..first_len].to_vec();
    past.extend(nlhdr(4096, 20));
    past.extend([0u8; 40]);
    let f = write("past.dump", &past);
    fails_with_one_line(&["scan", "--from", &f], &format!("byte offset {first_len}"));
    // A payload shorter than inet_diag_msg (72 bytes).
    let mut short = nlhdr(16 + 40, 20);
    short.extend([0u8; 40]);
    let f = write("short.dump", &short);
    fails_with_one_line(&["scan", "--from", &f], "shorter than the 72");
    // An NLMSG_ERROR reply (EPERM) after a good message.
    let mut err = good[..first_len].to_vec();
    err.extend(nlhdr(36, 2));
    err.extend((-1i32).to_ne_bytes());
    err.extend(nlhdr(16, 20));
    let f = write("error.dump", &err);
    fails_with_one_line(&["scan", "--from", &f], "NLMSG_ERROR");
    // A dump the kernel stopped part-way: NLMSG_DONE carrying -ENOMEM.
    let mut failed = good[..first_len].to_vec();
    failed.extend(nlhdr(20, 3));
    failed.extend((-12i32).to_ne_bytes());
    let f = write("failed.dump", &failed);
    fails_with_one_line(
        &["scan", "--from", &f],
        &format!("byte offset {first_len}: the dump ends with an error"),
    );
    // A truncated trailing header.
    let mut cut = good.clone();
    cut.truncate(good.len() - 7);
    let f = write("cut-tail.dump", &cut);
    fails_with_one_line(&["scan", "--from", &f], "byte offset");
    // An unknown message type (a foreign netlink family).
    let mut foreign = nlhdr(20, 16);
    foreign.extend([0u8; 4]);
    let f = write("foreign.dump", &foreign);
    fails_with_one_line(
        &["scan", "--from", &f],
        "unexpected netlink message type 16",
    );
    // An invalid TCP state number.
    let mut bad_state = good[..first_len].to_vec();
    bad_state[17] = 99;
    let f = write("state.dump", &bad_state);
    fails_with_one_line(&["scan", "--from", &f], "invalid TCP state number 99");
}

#[test]
fn random_bytes_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    // A fixed xorshift stream: reproducible "random" files.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..40 {
        let len = 1 + (i * 37) % 700;
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let path = dir.path().join(format!("r{i}.bin"));
        std::fs::write(&path, &bytes).unwrap();
        let out = run(&["scan", "--json", "--from", path.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{i}: {err}");
        match out.status.code() {
            Some(0) => assert!(serde_json::from_slice::<serde_json::Value>(&out.stdout).is_ok()),
            Some(2) => {
                assert_eq!(err.lines().count(), 1, "{err}");
                assert!(
                    err.contains(path.to_str().unwrap()),
                    "names the file: {err}"
                );
            }
            other => panic!("random file {i}: exit {other:?}: {err}"),
        }
    }
}

#[test]
fn bad_sidecars_and_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("cap.dump");
    std::fs::copy(crate::replay::fixture("workload.dump"), &dump).unwrap();
    let side = dir.path().join("cap.dump.cwdiag.json");
    std::fs::write(&side, b"{ not json").unwrap();
    fails_with_one_line(
        &["scan", "--from", dump.to_str().unwrap()],
        "cap.dump.cwdiag.json",
    );
    std::fs::write(&side, b"{\"schema_version\": 7}").unwrap();
    fails_with_one_line(
        &["scan", "--from", dump.to_str().unwrap()],
        "cap.dump.cwdiag.json",
    );
    let snap = dir.path().join("s.json");
    std::fs::write(&snap, b"{\"schema_version\": 1, \"sockets\": 5}").unwrap();
    fails_with_one_line(&["scan", "--from", snap.to_str().unwrap()], "s.json");
    std::fs::write(&snap, b"[1,2,3]").unwrap();
    fails_with_one_line(&["scan", "--from", snap.to_str().unwrap()], "s.json");
}

#[test]
fn more_bad_flags() {
    fails_with_one_line(
        &["scan", "--interval", "soon", "--samples", "2"],
        "--interval",
    );
    fails_with_one_line(&["scan", "--samples", "0"], "--samples");
    fails_with_one_line(&["scan", "--source", "carrier-pigeon"], "--source");
    fails_with_one_line(&["scan", "--format", "xml"], "--format");
    fails_with_one_line(&["scan", "--color", "sometimes"], "--color");
    fails_with_one_line(&["scan", "--netns", "a/b"], "--netns");
    fails_with_one_line(&["scan", "--netns", "no-such-ns-xyz"], "no-such-ns-xyz");
    fails_with_one_line(&["assert", "--max-close-wait-growth", "1"], "--samples");
    fails_with_one_line(&["explain", "no-such-rule"], "no-such-rule");
    fails_with_one_line(
        &[
            "scan",
            "--source",
            "proc",
            "--proc-root",
            "/nonexistent-root",
        ],
        "/nonexistent-root",
    );
}
