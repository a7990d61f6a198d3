//! The fuzz targets' regressions, replayed through the whole pipeline:
//! decode, replay, classify and render (this layer may name them all).

#[test]
fn fuzz_regressions_replay_cleanly() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/regressions");
    let Ok(entries) = std::fs::read_dir(dir) else {
        crate::testutil::skip(&format!("{dir} not found"));
        return;
    };
    for e in entries.flatten() {
        let bytes = std::fs::read(e.path()).unwrap();
        // Must return, Ok or Err, without panicking.
        let _ = crate::collect::decode::decode_messages(&bytes, 0, |_, _| {});
        // As the snapshot_json target does: force the JSON reader, then
        // classify and render whatever parses.
        let json = if bytes.first() == Some(&b'{') {
            bytes.clone()
        } else {
            [b"{".as_slice(), &bytes].concat()
        };
        for input in [&bytes, &json] {
            if let Ok(snap) = crate::collect::replay::from_bytes(input, "fuzz", None) {
                let r = crate::diag::classify(&snap, &Default::default(), &Default::default());
                let _ = crate::report::table::render(&r, &Default::default());
                let _ = crate::report::json::render(&r);
            }
        }
    }
}
