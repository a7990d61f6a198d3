//! `collect::procnet::parse`: the /proc/net/tcp{,6} fallback parser.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = cwdiag::collect::procnet::parse(data, "fuzz");
});
