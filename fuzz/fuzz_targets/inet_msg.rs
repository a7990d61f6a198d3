//! `decode_inet_msg`: one `inet_diag_msg` payload and its attributes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = cwdiag::collect::decode::decode_inet_msg(data);
});
