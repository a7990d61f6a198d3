//! TCP history from the kernel's tracepoints: which process closed what,
//! when, and which connections were reset. Beside the snapshot collector:
//! `tracefs` is the only part that touches the OS; parsing, decoding and
//! attribution are pure.

pub mod attrib;
pub mod counters;
pub mod decode;
pub mod format;
pub mod procs;
pub mod ring;
pub mod session;
pub mod tracefs;
pub mod view;
pub mod window;
