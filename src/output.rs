//! Writing to stdout where a closed pipe (`cwdiag scan | head -c1`) is a
//! normal way for a reader to say "enough", not an error.

use std::io::{ErrorKind, Write};

/// Writes `text` to stdout. Returns `Ok` when the reader went away.
pub fn emit(text: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}
