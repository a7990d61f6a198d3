//! The one way collectors read a file under `/proc` (or `--proc-root`):
//! opened with `O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY`, accepted
//! only when `fstat` says it is a regular file (so a FIFO or a device put
//! in place of a `/proc` file can neither block nor stream forever), and
//! read up to a size cap. A file longer than its cap is cut there and the
//! caller gets a warning naming it.

use rustix::fs::{FileType, Mode, OFlags};
use std::io::Read;
use std::path::Path;

/// Cap for the small files: sysctls, limits, status, cgroup, comm,
/// netstat, snmp, sockstat (all a few KB on real kernels).
pub const SMALL: usize = 256 * 1024;

/// Cap for the `/proc/net` socket tables (`tcp`, `unix`, `udp`, ...):
/// about 150 bytes a line, so 256 MiB is well over a million sockets.
pub const TABLE: usize = 256 * 1024 * 1024;

/// What was read of one file.
#[derive(Debug)]
pub struct Capped {
    pub bytes: Vec<u8>,
    /// The file held more than the cap; `bytes` stops at the cap.
    pub truncated: bool,
}

impl Capped {
    /// The text, lossily decoded.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    /// Adds the warning for a cut file to `warnings`, once per file.
    pub fn note(&self, path: &Path, cap: usize, warnings: &mut Vec<String>) {
        if self.truncated {
            let w = cut_warning(path, cap);
            if !warnings.contains(&w) {
                warnings.push(w);
            }
        }
    }
}

/// The warning for a file cut at `cap` bytes.
pub fn cut_warning(path: &Path, cap: usize) -> String {
    format!(
        "{} is larger than {cap} bytes: read only the first {cap}",
        path.display()
    )
}

/// Opens `path` for reading without following a final symlink and without
/// blocking, and returns it only when it is a regular file.
pub fn open_regular(path: &Path) -> std::io::Result<std::fs::File> {
    let fd = rustix::fs::open(path, FLAGS | OFlags::NOFOLLOW, Mode::empty())?;
    regular(fd, &path.display().to_string())
}

/// Reads at most `cap` bytes of the regular file at `path`.
pub fn read(path: &Path, cap: usize) -> std::io::Result<Capped> {
    read_from(open_regular(path)?, cap)
}

/// [`read`] of a file the user named on the command line (`--plan FILE`):
/// a symlink is followed, as `cat` would, but the file it leads to must
/// still be a regular file, opened without blocking.
pub fn read_named(path: &Path, cap: usize) -> std::io::Result<Capped> {
    let fd = rustix::fs::open(path, FLAGS, Mode::empty())?;
    read_from(regular(fd, &path.display().to_string())?, cap)
}

/// Opens a file a link leads to (`/proc/PID/exe`) without blocking, and
/// returns it only when it is a regular file: for readers that seek in
/// it, each read capped by the caller.
pub fn open_named(path: &Path) -> std::io::Result<std::fs::File> {
    let fd = rustix::fs::open(path, FLAGS, Mode::empty())?;
    regular(fd, &path.display().to_string())
}

/// [`read`] of `path` relative to the directory `dir` (as `openat`).
pub fn read_at(dir: &rustix::fd::OwnedFd, path: &str, cap: usize) -> std::io::Result<Capped> {
    let fd = rustix::fs::openat(dir, path, FLAGS | OFlags::NOFOLLOW, Mode::empty())?;
    read_from(regular(fd, path)?, cap)
}

/// [`read_at`] of a link to follow (`PID/exe`): what it leads to must
/// still be a regular file, opened without blocking.
pub fn read_at_following(
    dir: &rustix::fd::OwnedFd,
    path: &str,
    cap: usize,
) -> std::io::Result<Capped> {
    let fd = rustix::fs::openat(dir, path, FLAGS, Mode::empty())?;
    read_from(regular(fd, path)?, cap)
}

/// The regular file the link `path` below `dir` leads to, opened without
/// blocking: for readers that seek in it (an ELF reader), each read
/// capped by the caller.
pub fn open_at_following(dir: &rustix::fd::OwnedFd, path: &str) -> std::io::Result<std::fs::File> {
    let fd = rustix::fs::openat(dir, path, FLAGS, Mode::empty())?;
    regular(fd, path)
}

/// Read-only, never blocking, never a controlling terminal, closed on exec.
const FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::NONBLOCK)
    .union(OFlags::CLOEXEC)
    .union(OFlags::NOCTTY);

/// `fd` as a file when `fstat` says it is a regular one.
fn regular(fd: rustix::fd::OwnedFd, what: &str) -> std::io::Result<std::fs::File> {
    let st = rustix::fs::fstat(&fd)?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{what} is not a regular file"),
        ));
    }
    Ok(std::fs::File::from(fd))
}

fn read_from(f: std::fs::File, cap: usize) -> std::io::Result<Capped> {
    let mut bytes = Vec::new();
    // One byte past the cap tells a file of exactly `cap` bytes from a longer one.
    f.take(cap as u64 + 1).read_to_end(&mut bytes)?;
    let truncated = bytes.len() > cap;
    bytes.truncate(cap);
    Ok(Capped { bytes, truncated })
}

/// Reads a small file as text, adding a warning to `warnings` when it was
/// cut; `None` when it cannot be read (missing, not a regular file, ...).
pub fn small_text(path: &Path, warnings: &mut Vec<String>) -> Option<String> {
    let c = read(path, SMALL).ok()?;
    c.note(path, SMALL, warnings);
    Some(c.text())
}

/// One mount of a `/proc/PID/mountinfo` text (proc(5)).
pub struct Mount<'a> {
    /// The filesystem type (after the ` - ` separator).
    pub fstype: &'a str,
    /// The root of the mount within its filesystem (`net:[INODE]` for a
    /// network namespace bind mount).
    pub root: &'a str,
    /// The mount point, unescaped.
    pub point: String,
}

/// The mounts of a mountinfo text; malformed lines are passed over.
pub fn mounts(text: &str) -> impl Iterator<Item = Mount<'_>> {
    text.lines().filter_map(|line| {
        let (pre, post) = line.split_once(" - ")?;
        let fstype = post.split_whitespace().next()?;
        let mut f = pre.split_whitespace().skip(3);
        let (root, point) = (f.next()?, f.next()?);
        Some(Mount {
            fstype,
            root,
            point: unescape_mount(point),
        })
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mount(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_large_files_and_refuses_what_is_not_regular() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big");
        let f = std::fs::File::create(&big).unwrap();
        // Sparse: 100 MB of holes cost nothing on disk.
        f.set_len(100 * 1024 * 1024).unwrap();
        let c = read(&big, 1000).unwrap();
        assert!(c.truncated);
        assert_eq!(c.bytes.len(), 1000);
        let mut w = Vec::new();
        c.note(&big, 1000, &mut w);
        c.note(&big, 1000, &mut w);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains(&big.display().to_string()), "{w:?}");

        let exact = dir.path().join("exact");
        std::fs::write(&exact, [b'x'; 1000]).unwrap();
        assert!(!read(&exact, 1000).unwrap().truncated);

        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // Would block forever without O_NONBLOCK and the type check.
        assert!(read(&fifo, 1000).is_err());
        assert!(read(Path::new("/dev/zero"), 1000).is_err());
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&exact, &link).unwrap();
        assert!(
            read(&link, 1000).is_err(),
            "a final symlink is not followed"
        );
    }
}
