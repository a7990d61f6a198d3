//! cwdiag's own parsing of request bytes (the HTTP/1 parser itself is
//! hyper's): the `Authorization: Basic` value and the check of a
//! connection's first bytes for the HTTP/2 preface.
#![no_main]

use cwdiag::serve::{auth, sniff};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some((user, pass)) = auth::parse_basic(data) {
        assert!(user.len() + pass.len() < data.len());
        assert!(!user.contains(&b':'));
    }
    let start = sniff::classify(data);
    if start == sniff::Start::Http2 {
        assert!(data.starts_with(sniff::H2_PREFACE));
    }
});
