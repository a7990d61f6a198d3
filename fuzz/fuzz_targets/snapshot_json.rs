//! The JSON snapshot path of `replay::from_bytes`, then the classifier and
//! both renderers on every snapshot that parses: whatever a snapshot file
//! says, `cwdiag scan --from it` must not panic.
#![no_main]

use cwdiag::diag::{Policy, classify};
use cwdiag::filter::Filter;
use cwdiag::report::{Style, json, table};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Keep the fuzzer on the JSON reader: from_bytes picks it for a
    // leading '{' (after whitespace).
    let owned;
    let bytes = if data.first() == Some(&b'{') {
        data
    } else {
        owned = [b"{".as_slice(), data].concat();
        &owned
    };
    let Ok(snap) = cwdiag::collect::replay::from_bytes(bytes, "fuzz", None) else {
        return;
    };
    let report = classify(&snap, &Filter::default(), &Policy::default());
    let _ = table::render(&report, &Style::default());
    let _ = json::render(&report);
});
