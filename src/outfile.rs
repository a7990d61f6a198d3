//! Files cwdiag writes on request (`--output`, `--record` and its
//! sidecar), written safely when running as root in a directory others
//! can write to (open(2) "O_NOFOLLOW", rename(2), and the symlink attacks
//! that protected_symlinks in proc_sys_fs(5) guards against):
//!
//! - `-` is stdout; `/dev/stdout`, `/dev/stderr` (and `/dev/fd/1`, `/dev/fd/2`,
//!   `/proc/self/fd/1`, `/proc/self/fd/2`) are our own stdout and stderr,
//!   written through the handles we already have, never reopened.
//! - A FIFO or a character device (`/dev/null`) is written in place: opened
//!   with `O_NOFOLLOW` and without `O_CREAT`/`O_TRUNC`, so it stays what it
//!   is. A FIFO owned by another user (not root) is refused: its owner
//!   would read what we write.
//! - Anything else that is a symlink is refused: a link planted in `/tmp`
//!   could point at any file root can write.
//! - A regular file is replaced, never written into: the new content goes
//!   to a fresh file created exclusively (`O_EXCL`) under an unpredictable
//!   name in the same directory (the tempfile crate), which is then
//!   renamed over the target (rename(2) replaces the directory entry, link
//!   or not, and never follows it). An existing target must be owned by
//!   us; one owned by another user is refused. Readers see the old file or
//!   the new one, never a partial one.
//! - The directory must be one that nobody else can swap under us: every
//!   directory on its canonical path is owned by root or by us, and one
//!   writable by others must be sticky (as `/tmp`), with our entry in it
//!   owned by root or us.
//! - Only our own temporary file is ever removed, and only when the name
//!   still points at the file we created.
//!
//! Block devices, sockets and directories are refused.

use anyhow::{Context, Result, bail};
use rustix::fs::{FileType, Mode, OFlags};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// What a target path turned out to be.
enum Kind {
    Stdout,
    Stderr,
    /// A FIFO or character device, opened in place.
    InPlace(std::fs::File),
    /// A regular file (or nothing yet), replaced through a temporary file.
    Replace(tempfile::NamedTempFile),
}

/// A file being written; nothing is visible at a replaced target until
/// [`OutFile::commit`].
pub struct OutFile {
    path: PathBuf,
    kind: Kind,
}

/// True when `path` is written in place (stdout, a FIFO, a device), so
/// there is no regular file to put a sidecar beside.
pub fn is_stream(f: &OutFile) -> bool {
    !matches!(f.kind, Kind::Replace(_))
}

fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// stdout or stderr, when `path` names one of ours.
fn std_stream(path: &Path) -> Option<Kind> {
    match path.to_str()? {
        "-" | "/dev/stdout" | "/dev/fd/1" | "/proc/self/fd/1" => Some(Kind::Stdout),
        "/dev/stderr" | "/dev/fd/2" | "/proc/self/fd/2" => Some(Kind::Stderr),
        _ => None,
    }
}

/// `/dev/fd/N` or `/proc/self/fd/N`: one of our own open files, e.g. the
/// pipe of a shell's process substitution (`--output >(gzip > f)`).
fn is_fd_link(path: &Path) -> bool {
    let Some(s) = path.to_str() else {
        return false;
    };
    ["/dev/fd/", "/proc/self/fd/", "/proc/thread-self/fd/"]
        .iter()
        .filter_map(|p| s.strip_prefix(p))
        .any(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Opens one of our fds through its `/proc` link, accepting only a pipe,
/// FIFO or character device (never a regular file: that is written by
/// its own path, replaced as any other).
fn open_fd_link(path: &Path) -> Result<std::fs::File> {
    let name = path.display();
    let fd = rustix::fs::open(
        path,
        OFlags::WRONLY | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("cannot write {name}"))?;
    let st = rustix::fs::fstat(&fd).with_context(|| format!("cannot write {name}"))?;
    match FileType::from_raw_mode(st.st_mode) {
        FileType::Fifo | FileType::CharacterDevice => Ok(std::fs::File::from(fd)),
        _ => {
            bail!("refusing to write {name}: it is not a pipe or device (give the file's own path)")
        }
    }
}

/// Checks that no other user can replace `dir` (canonical) or any
/// directory above it.
fn check_dir(dir: &Path) -> Result<()> {
    let me = euid();
    let ours = |uid: u32| uid == 0 || uid == me;
    let mut parent: Option<rustix::fs::Stat> = None;
    for d in dir.ancestors().collect::<Vec<_>>().into_iter().rev() {
        let st = rustix::fs::lstat(d).with_context(|| format!("cannot inspect {}", d.display()))?;
        if let Some(p) = parent {
            let others_write = p.st_mode & 0o022 != 0;
            let sticky = p.st_mode & 0o1000 != 0;
            if !ours(p.st_uid) || (others_write && (!sticky || !ours(st.st_uid))) {
                bail!(
                    "refusing to write under {}: another user can replace {} (owned by uid {}, in a directory owned by uid {} with mode {:o})",
                    dir.display(),
                    d.display(),
                    st.st_uid,
                    p.st_uid,
                    p.st_mode & 0o7777
                );
            }
        }
        parent = Some(st);
    }
    Ok(())
}

impl OutFile {
    /// Prepares to write `path`; a new regular file gets `mode`.
    pub fn create(path: &Path, mode: u32) -> Result<OutFile> {
        let name = path.display();
        if let Some(kind) = std_stream(path) {
            return Ok(OutFile {
                path: path.to_path_buf(),
                kind,
            });
        }
        if is_fd_link(path) {
            return Ok(OutFile {
                path: path.to_path_buf(),
                kind: Kind::InPlace(open_fd_link(path)?),
            });
        }
        let file_name = path
            .file_name()
            .with_context(|| format!("cannot write {name}: not a file name"))?;
        let existing = match rustix::fs::lstat(path) {
            Ok(st) => Some(st),
            Err(rustix::io::Errno::NOENT) => None,
            Err(e) => return Err(e).with_context(|| format!("cannot write {name}")),
        };
        if let Some(st) = existing {
            match FileType::from_raw_mode(st.st_mode) {
                FileType::RegularFile => {
                    if st.st_uid != euid() {
                        bail!(
                            "refusing to write {name}: it is owned by uid {}, not by us (uid {}): remove it or choose another name",
                            st.st_uid,
                            euid()
                        );
                    }
                }
                FileType::Fifo | FileType::CharacterDevice => {
                    return Ok(OutFile {
                        path: path.to_path_buf(),
                        kind: Kind::InPlace(open_in_place(path, &st)?),
                    });
                }
                FileType::Symlink => {
                    bail!("refusing to write {name}: it is a symbolic link (give the real path)")
                }
                _ => {
                    bail!("refusing to write {name}: not a regular file, FIFO or character device")
                }
            }
        }
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let dir = dir
            .canonicalize()
            .with_context(|| format!("cannot write {name}: no directory {}", dir.display()))?;
        check_dir(&dir)?;
        let mut prefix = std::ffi::OsString::from(".");
        prefix.push(file_name);
        prefix.push(".");
        let tmp = tempfile::Builder::new()
            .prefix(&prefix)
            .suffix(".tmp")
            .permissions(std::fs::Permissions::from_mode(0o600))
            .tempfile_in(&dir)
            .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
        // Set the documented mode whatever the umask.
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("cannot set the mode of {}", tmp.path().display()))?;
        Ok(OutFile {
            path: dir.join(file_name),
            kind: Kind::Replace(tmp),
        })
    }

    /// Makes the content visible: renames a replaced file into place
    /// (after an fsync), or flushes a stream.
    pub fn commit(mut self) -> Result<()> {
        let name = self.path.display().to_string();
        match std::mem::replace(&mut self.kind, Kind::Stdout) {
            Kind::Stdout => flush_ok(std::io::stdout().flush()),
            Kind::Stderr => flush_ok(std::io::stderr().flush()),
            Kind::InPlace(mut f) => f.flush().with_context(|| format!("cannot write {name}")),
            Kind::Replace(tmp) => {
                tmp.as_file()
                    .sync_all()
                    .with_context(|| format!("cannot write {name}"))?;
                // The target may have been swapped for a link since we
                // looked: rename replaces the entry, it never follows it.
                match tmp.persist(&self.path) {
                    Ok(_) => {
                        // Make the rename durable; not worth failing over.
                        if let Some(d) = self.path.parent()
                            && let Ok(d) = std::fs::File::open(d)
                        {
                            let _ = d.sync_all();
                        }
                        Ok(())
                    }
                    Err(e) => {
                        discard(e.file);
                        Err(e.error).with_context(|| format!("cannot write {name}"))
                    }
                }
            }
        }
    }
}

/// Removes our temporary file, but only if its name still points at it.
fn discard(tmp: tempfile::NamedTempFile) {
    let (file, path) = tmp.into_parts();
    let ours = match (rustix::fs::fstat(&file), rustix::fs::lstat(&*path)) {
        (Ok(a), Ok(b)) => a.st_dev == b.st_dev && a.st_ino == b.st_ino,
        _ => false,
    };
    if ours {
        let _ = path.close();
    } else {
        // Someone else's entry now: leave it.
        let _ = path.keep();
    }
}

impl Drop for OutFile {
    fn drop(&mut self) {
        // Not committed (an error on the way): drop our temporary file.
        if let Kind::Replace(_) = self.kind {
            let kind = std::mem::replace(&mut self.kind, Kind::Stdout);
            if let Kind::Replace(tmp) = kind {
                discard(tmp);
            }
        }
    }
}

fn flush_ok(r: std::io::Result<()>) -> Result<()> {
    match r {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// Opens a FIFO or device for writing where it is: no O_CREAT, no O_TRUNC,
/// no following a link, and the same inode as the `lstat` saw.
fn open_in_place(path: &Path, seen: &rustix::fs::Stat) -> Result<std::fs::File> {
    let name = path.display();
    let fifo = FileType::from_raw_mode(seen.st_mode) == FileType::Fifo;
    if fifo && seen.st_uid != 0 && seen.st_uid != euid() {
        bail!(
            "refusing to write {name}: the FIFO is owned by uid {}, not by us (uid {})",
            seen.st_uid,
            euid()
        );
    }
    let fd = rustix::fs::open(
        path,
        OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("cannot write {name}"))?;
    let st = rustix::fs::fstat(&fd).with_context(|| format!("cannot write {name}"))?;
    if st.st_dev != seen.st_dev || st.st_ino != seen.st_ino {
        bail!("refusing to write {name}: it was replaced while being opened");
    }
    Ok(std::fs::File::from(fd))
}

impl Write for OutFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match &mut self.kind {
            Kind::Stdout => std::io::stdout().write(buf),
            Kind::Stderr => std::io::stderr().write(buf),
            Kind::InPlace(f) => f.write(buf),
            Kind::Replace(t) => t.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.kind {
            Kind::Stdout => std::io::stdout().flush(),
            Kind::Stderr => std::io::stderr().flush(),
            Kind::InPlace(f) => f.flush(),
            Kind::Replace(t) => t.flush(),
        }
    }
}

/// Mode of `--output` files: world-readable, as node_exporter's textfile
/// collector (running as its own user) must read them.
pub const OUTPUT_MODE: u32 = 0o644;

/// Mode of `--record` dumps and sidecars: they list every process's
/// sockets, names and cgroups, which hidepid may hide from other users.
pub const RECORD_MODE: u32 = 0o600;

/// Writes all of `text` to `path` (see the module documentation). A
/// reader that closes a stdout pipe early is not an error.
pub fn write(path: &Path, text: &[u8], mode: u32) -> Result<()> {
    let mut f = OutFile::create(path, mode)?;
    match f.write_all(text) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe && is_stream(&f) => return Ok(()),
        r => r.with_context(|| format!("cannot write {}", path.display()))?,
    }
    f.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_file_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cwdiag.prom");
        std::fs::write(&path, "old\n").unwrap();
        write(&path, b"new\n", OUTPUT_MODE).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new\n");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("cwdiag.prom")]);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644, "{mode:o}");
        write(&dir.path().join("rec"), b"x", RECORD_MODE).unwrap();
        let mode = std::fs::metadata(dir.path().join("rec"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");

        let missing = dir.path().join("no/such/dir/cwdiag.prom");
        let err = format!("{:#}", write(&missing, b"x", OUTPUT_MODE).unwrap_err());
        assert!(err.contains("cannot write"), "{err}");
        assert!(err.contains("no/such/dir"), "{err}");
    }

    #[test]
    fn refuses_links_and_keeps_devices() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, "keep").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = format!("{:#}", write(&link, b"x", OUTPUT_MODE).unwrap_err());
        assert!(err.contains("symbolic link"), "{err}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );

        write(Path::new("/dev/null"), b"x", OUTPUT_MODE).unwrap();
        use std::os::unix::fs::FileTypeExt;
        assert!(
            std::fs::metadata("/dev/null")
                .unwrap()
                .file_type()
                .is_char_device()
        );
        assert!(is_fd_link(Path::new("/dev/fd/63")));
        assert!(!is_fd_link(Path::new("/dev/fd/")));
        assert!(!is_fd_link(Path::new("/dev/fd/1x")));
    }
}
