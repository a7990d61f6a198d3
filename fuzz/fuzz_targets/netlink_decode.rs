//! `decode_messages` on arbitrary bytes: must return Ok or Err, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = cwdiag::collect::decode::decode_messages(data, 0, |_m, _off| {});
});
