//! `replay::from_bytes`, what `--from FILE` reads: the format is detected
//! from the content (a leading `{` means a JSON snapshot, anything else a
//! netlink dump as `ss -D` or `--record` write it).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = cwdiag::collect::replay::from_bytes(data, "fuzz", None);
});
