//! Recognising a Go binary: the Go linker writes a build-ID note (ELF
//! note named "Go", type 4, `cmd/link/internal/ld/elf.go`) into the first
//! page of every executable it links, so the runtime of a process whose
//! name says nothing (`billing-sync`) can still be told.

use super::procfs::ProcFs;
use std::path::Path;

/// Bytes of the executable read: the note sits right after the headers.
const HEAD: u64 = 16 * 1024;

/// True when `/proc/PID/exe` carries the Go build-ID note.
pub fn is_go(proc: &ProcFs, pid: u32) -> bool {
    // A link to follow; what it leads to must still be a regular file.
    proc.read_linked(&format!("{pid}/exe"), HEAD as usize)
        .is_ok_and(|c| has_go_note(&c.bytes))
}

/// True when the executable at `path` carries the Go build-ID note.
/// Opened without blocking, and read only if it is a regular file (a
/// FIFO planted under `--proc-root` cannot stall the scan).
pub fn is_go_file(path: &Path) -> bool {
    // `/proc/PID/exe` is a link to follow; what it leads to must still be
    // a regular file. Only the head is wanted: a longer file is the norm.
    super::fsread::read_named(path, HEAD as usize).is_ok_and(|c| has_go_note(&c.bytes))
}

/// An ELF note with namesz 4, type 4 (`NT_GOBUILDID`), name "Go\0\0".
pub fn has_go_note(head: &[u8]) -> bool {
    if !head.starts_with(b"\x7fELF") {
        return false;
    }
    const NAME: &[u8] = b"Go\0\0";
    head.windows(16).any(|w| {
        w[0..4] == 4u32.to_le_bytes() && w[8..12] == 4u32.to_le_bytes() && &w[12..16] == NAME
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_note_and_nothing_else() {
        let mut elf = b"\x7fELF".to_vec();
        elf.extend_from_slice(&[0; 60]);
        assert!(!has_go_note(&elf));
        elf.extend_from_slice(&4u32.to_le_bytes());
        elf.extend_from_slice(&83u32.to_le_bytes());
        elf.extend_from_slice(&4u32.to_le_bytes());
        elf.extend_from_slice(b"Go\0\0");
        assert!(has_go_note(&elf));
        assert!(!has_go_note(b"Go\0\0 not an ELF file"));
        // This test binary is not Go; promtool (Debian's prometheus) is.
        assert!(!is_go(
            &ProcFs::open(Path::new("/proc")),
            std::process::id()
        ));
        match which("promtool") {
            Some(p) => assert!(is_go_file(&p), "{}", p.display()),
            None => crate::testutil::skip("promtool (a Go binary) is not installed"),
        }
    }

    fn which(name: &str) -> Option<std::path::PathBuf> {
        std::env::var_os("PATH")?
            .to_str()?
            .split(':')
            .map(|d| Path::new(d).join(name))
            .find(|p| p.is_file())
    }
}
