//! `replay::from_reader`, the streaming reader behind `--from FILE`, fed
//! through a reader that returns the bytes in chunks of a size the input
//! chooses (its first byte, 1 to 256): headers, bodies and padding split
//! across reads, as a slow disk or a device delivers them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::io::Read;

struct Chunked<'a> {
    data: &'a [u8],
    chunk: usize,
}

impl Read for Chunked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.chunk).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let r = Chunked {
        data: rest,
        chunk: usize::from(first) + 1,
    };
    let chunked = cwdiag::collect::replay::from_reader(r, "fuzz", None);
    // Chunking must not change the verdict.
    let whole = cwdiag::collect::replay::from_bytes(rest, "fuzz", None);
    assert_eq!(
        chunked.as_ref().map(|s| s.sockets.len()).map_err(|e| e.to_string()),
        whole.as_ref().map(|s| s.sockets.len()).map_err(|e| e.to_string()),
    );
});
