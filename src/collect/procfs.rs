//! The one reader of `/proc` (or `--proc-root`). A [`ProcFs`] holds the
//! root as an open directory; every path below it is opened relative to
//! that descriptor (`openat(2)`), never following a final symlink, and
//! every file is read through the bounded opener of [`super::fsread`]. It
//! alone lists pids, lists and reads fd links, and reads files; what the
//! bytes mean is parsed elsewhere, by pure functions.

use super::fsread::{self, Capped};
use rustix::fd::OwnedFd;
use rustix::fs::{
    AtFlags, CWD, Dir, Mode, OFlags, ResolveFlags, openat, openat2, readlinkat_raw, statat,
};
use rustix::io::Errno;
use std::path::{Path, PathBuf};

/// The proc root, open.
#[derive(Debug)]
pub struct ProcFs {
    path: PathBuf,
    /// `None` when the root cannot be opened: every read then fails, as
    /// reading a missing file would.
    root: Option<OwnedFd>,
}

/// What the link of one fd turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    Socket(u32),
    /// Open, but not a socket.
    Other,
    /// Refused (EACCES/EPERM): some processes' links stay closed even to
    /// root (e.g. pid 1 of a sandbox); the table is then unreadable.
    Denied,
    /// Not an open fd (ENOENT).
    Missing,
    Failed,
}

/// Read-only directory, closed on exec, a final symlink not followed.
const DIR: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

impl ProcFs {
    /// Opens the proc root the user chose (which may itself be a symlink,
    /// as `/proc` is named on the command line).
    pub fn open(path: &Path) -> ProcFs {
        let root = openat(
            CWD,
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .ok();
        ProcFs {
            path: path.to_path_buf(),
            root,
        }
    }

    /// The same root, for another thread that must own it.
    pub fn try_clone(&self) -> std::io::Result<ProcFs> {
        Ok(ProcFs {
            path: self.path.clone(),
            root: match &self.root {
                Some(fd) => Some(fd.try_clone()?),
                None => None,
            },
        })
    }

    /// True when the root could be opened.
    pub fn is_open(&self) -> bool {
        self.root.is_some()
    }

    /// The root as named (for messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn root(&self) -> rustix::io::Result<&OwnedFd> {
        self.root.as_ref().ok_or(Errno::NOENT)
    }

    /// The pids under the root (its numeric entries).
    pub fn pids(&self) -> Vec<u32> {
        let mut out = Vec::new();
        self.each_pid(|pid, _| out.push(pid));
        out
    }

    /// The pids with the uid that owns each (`u32::MAX` when unknown).
    pub fn pids_with_uid(&self) -> Vec<(u32, u32)> {
        let mut out = Vec::new();
        self.each_pid(|pid, name| {
            let uid = self
                .root()
                .and_then(|root| statat(root, name, AtFlags::SYMLINK_NOFOLLOW))
                .map(|st| st.st_uid)
                .unwrap_or(u32::MAX);
            out.push((pid, uid));
        });
        out
    }

    fn each_pid(&self, mut f: impl FnMut(u32, &std::ffi::CStr)) {
        let Ok(root) = self.root() else { return };
        // A descriptor of its own (`openat(root, ".")`): a `dup` would
        // share the root's position, and a second listing find it at the end.
        let Ok(mut dir) = Dir::read_from(root) else {
            return;
        };
        while let Some(Ok(entry)) = dir.read() {
            if let Some(pid) = pid_of(entry.file_name().to_bytes()) {
                f(pid, entry.file_name());
            }
        }
    }

    /// Opens the directory `rel` below the root, following no symlink on
    /// the way (`RESOLVE_NO_SYMLINKS`; component by component on kernels
    /// before 5.6, which lack `openat2(2)`).
    pub fn dir(&self, rel: &str) -> rustix::io::Result<OwnedFd> {
        let root = self.root()?;
        match openat2(root, rel, DIR, Mode::empty(), ResolveFlags::NO_SYMLINKS) {
            Err(Errno::NOSYS) => {}
            r => return r,
        }
        let mut at = openat(root, ".", DIR, Mode::empty())?;
        for part in rel.split('/').filter(|p| !p.is_empty()) {
            at = openat(&at, part, DIR, Mode::empty())?;
        }
        Ok(at)
    }

    /// Opens `/proc/PID/fd`.
    pub fn fd_dir(&self, pid: u32) -> rustix::io::Result<OwnedFd> {
        self.dir(&format!("{pid}/fd"))
    }

    /// Opens `/proc/PID`.
    pub fn pid_dir(&self, pid: u32) -> rustix::io::Result<OwnedFd> {
        self.dir(&pid.to_string())
    }

    /// Reads the link of `fd` in the open `/proc/PID/fd` directory `dir`;
    /// `name` is scratch space for the fd number.
    pub fn fd_link(dir: &OwnedFd, fd: u32, name: &mut String) -> Link {
        let mut link = [0u8; 64];
        name.clear();
        use std::fmt::Write;
        let _ = write!(name, "{fd}");
        match readlinkat_raw(dir, name.as_str(), &mut link[..]) {
            Ok(n) => socket_inode(&link[..n]).map_or(Link::Other, Link::Socket),
            Err(Errno::ACCESS) | Err(Errno::PERM) => Link::Denied,
            Err(Errno::NOENT) => Link::Missing,
            Err(_) => Link::Failed,
        }
    }

    /// The fd numbers of an open `/proc/PID/fd` from `start` on (the
    /// directory's position is fd + 2, after `.` and `..`).
    pub fn list_fds(dir: &OwnedFd, start: u32) -> Option<Vec<u32>> {
        let mut d = Dir::read_from(dir).ok()?;
        if start > 0 {
            d.seek(i64::from(start) + 2).ok()?;
        }
        let mut fds = Vec::new();
        while let Some(entry) = d.read() {
            let entry = entry.ok()?;
            if let Some(fd) = pid_of(entry.file_name().to_bytes()) {
                fds.push(fd);
            }
        }
        Some(fds)
    }

    /// Every (fd, socket inode) of `pid`'s socket fds; `None` when its fd
    /// table cannot be opened.
    pub fn socket_fds(&self, pid: u32) -> Option<Vec<(u32, u32)>> {
        let dir = self.fd_dir(pid).ok()?;
        let fds = ProcFs::list_fds(&dir, 0)?;
        let mut name = String::with_capacity(10);
        Some(
            fds.into_iter()
                .filter_map(|fd| match ProcFs::fd_link(&dir, fd, &mut name) {
                    Link::Socket(ino) => Some((fd, ino)),
                    _ => None,
                })
                .collect(),
        )
    }

    /// The fd numbers of `pid`'s fd table; `None` when it cannot be opened.
    pub fn fds(&self, pid: u32) -> Option<Vec<u32>> {
        ProcFs::list_fds(&self.fd_dir(pid).ok()?, 0)
    }

    /// The socket inode `pid`'s `fd` links to now, if a socket.
    pub fn socket_at(&self, pid: u32, fd: u32) -> Option<u32> {
        let dir = self.fd_dir(pid).ok()?;
        match ProcFs::fd_link(&dir, fd, &mut String::new()) {
            Link::Socket(ino) => Some(ino),
            _ => None,
        }
    }

    /// At most `cap` bytes of the regular file `rel` below the root.
    pub fn read(&self, rel: &str, cap: usize) -> std::io::Result<Capped> {
        fsread::read_at(self.root()?, rel, cap)
    }

    /// At most `cap` bytes of the regular file the link `rel` leads to
    /// (`PID/exe`, a link to follow by its nature).
    pub fn read_linked(&self, rel: &str, cap: usize) -> std::io::Result<Capped> {
        fsread::read_at_following(self.root()?, rel, cap)
    }

    /// [`ProcFs::read`] as text; a file cut at `cap` is named in `warnings`.
    pub fn text(&self, rel: &str, cap: usize, warnings: &mut Vec<String>) -> Option<String> {
        let c = self.read(rel, cap).ok()?;
        c.note(&self.path.join(rel), cap, warnings);
        Some(c.text())
    }

    /// A small file (see [`fsread::SMALL`]) as text.
    pub fn small_text(&self, rel: &str, warnings: &mut Vec<String>) -> Option<String> {
        self.text(rel, fsread::SMALL, warnings)
    }

    /// `/proc/PID/comm` without its newline (at most 64 bytes: the
    /// kernel's is 16, `TASK_COMM_LEN`).
    pub fn comm(&self, pid: u32) -> Option<String> {
        let c = self.read(&format!("{pid}/comm"), COMM_CAP).ok()?;
        Some(c.text().trim_end().to_string())
    }

    /// The nsfs inode of the network namespace `rel` names (`PID/ns/net`,
    /// `thread-self/ns/net`): the namespace link itself is followed, as
    /// `stat(2)` does, to the namespace it stands for.
    pub fn netns_inode(&self, rel: &str) -> Option<u64> {
        self.netns(rel).ok()
    }

    /// [`ProcFs::netns_inode`], with the reason it could not be read.
    pub fn netns(&self, rel: &str) -> rustix::io::Result<u64> {
        statat(self.root()?, rel, AtFlags::empty()).map(|st| st.st_ino)
    }

    /// The target of the link `rel` (`PID/exe`), at most `PATH_MAX` bytes;
    /// `None` when it cannot be read (kernel threads, another user's
    /// process).
    pub fn link(&self, rel: &str) -> Option<String> {
        let mut buf = [0u8; 4096];
        let n = readlinkat_raw(self.root().ok()?, rel, &mut buf[..]).ok()?;
        (n > 0 && n < buf.len()).then(|| String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// The directory, relative to the root, of the calling thread's
    /// network namespace tables: `thread-self/net` (which `--netns`
    /// changes), or `net` for a fake root without `thread-self`.
    pub fn net(&self) -> &'static str {
        if self
            .root()
            .is_ok_and(|r| statat(r, "thread-self/net", AtFlags::empty()).is_ok())
        {
            "thread-self/net"
        } else {
            "net"
        }
    }
}

/// `comm` is at most 15 bytes and a newline.
pub const COMM_CAP: usize = 64;

/// A decimal entry name (a pid, an fd number).
fn pid_of(name: &[u8]) -> Option<u32> {
    std::str::from_utf8(name).ok()?.parse().ok()
}

/// Parses `socket:[12345]`.
pub fn socket_inode(link: &[u8]) -> Option<u32> {
    let rest = link.strip_prefix(b"socket:[")?.strip_suffix(b"]")?;
    std::str::from_utf8(rest).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_fixture_tree_without_following_links() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::create_dir_all(r.join("12/fd")).unwrap();
        std::fs::create_dir_all(r.join("net")).unwrap();
        std::os::unix::fs::symlink("socket:[77]", r.join("12/fd/3")).unwrap();
        std::os::unix::fs::symlink("/dev/null", r.join("12/fd/0")).unwrap();
        std::fs::write(r.join("12/comm"), "srv\n").unwrap();
        std::fs::write(r.join("secret"), "x").unwrap();
        // /proc/13 is a symlink to another process's directory.
        std::os::unix::fs::symlink(r.join("12"), r.join("13")).unwrap();
        std::os::unix::fs::symlink(r.join("secret"), r.join("12/cmdline")).unwrap();
        let p = ProcFs::open(r);
        let mut pids = p.pids();
        pids.sort_unstable();
        assert_eq!(pids, vec![12, 13]);
        assert_eq!(p.pids().len(), 2, "a second listing sees them all again");
        assert_eq!(p.socket_fds(12), Some(vec![(3, 77)]));
        assert_eq!(p.socket_fds(13), None, "a symlinked pid dir is not entered");
        assert_eq!(p.socket_at(12, 3), Some(77));
        assert_eq!(p.socket_at(12, 0), None);
        let mut fds = p.fds(12).unwrap();
        fds.sort_unstable();
        assert_eq!(fds, vec![0, 3]);
        assert_eq!(p.comm(12).as_deref(), Some("srv"));
        assert!(p.read("12/cmdline", 10).is_err(), "a final symlink");
        let gone = ProcFs::open(&r.join("missing"));
        assert!(gone.pids().is_empty() && gone.comm(12).is_none());
    }

    #[test]
    fn parses_socket_links() {
        assert_eq!(socket_inode(b"socket:[12345]"), Some(12345));
        assert_eq!(socket_inode(b"pipe:[12345]"), None);
        assert_eq!(socket_inode(b"socket:[x]"), None);
    }
}
