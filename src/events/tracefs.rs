//! The event source: a private tracefs instance with the four TCP
//! tracepoints, read from the binary per-CPU buffers
//! (`per_cpu/cpuN/trace_pipe_raw`) without blocking. See the kernel's
//! Documentation/trace/ftrace.rst ("Instances") and events.rst.
//!
//! The instance is `instances/cwdiag-<pid>-<start time>`, so a later run
//! recognises the leftovers of a run that died (its pid gone, or reused by
//! another process) and removes them. Dropping the [`Tracer`] disables
//! the events and removes the instance.
//!
//! When tracefs is not mounted, it is mounted in a mount namespace of
//! cwdiag's own (unshare(2) CLONE_NEWNS, then every mount made private),
//! so the mount is invisible to the host and ends with the process.

use super::decode::{Decoder, Event, TRACEPOINTS};
use super::format::{Format, PageHeader, check_entry_header};
use crate::collect::fsread;
use rustix::fd::OwnedFd;
use rustix::fs::{Mode, OFlags};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Instance names start with this.
pub const INSTANCE_PREFIX: &str = "cwdiag-";

/// Why tracepoints cannot be used: one line for a warning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable(pub String);

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TCP tracepoints unavailable: {}", self.0)
    }
}

/// An open instance with its per-CPU readers.
pub struct Tracer {
    dir: PathBuf,
    root: PathBuf,
    cpus: Vec<(u32, OwnedFd)>,
    hdr: PageHeader,
    decoder: Decoder,
    buf: Vec<u8>,
    /// Pages whose header said events were lost before them.
    pub missed_pages: u64,
    /// Pages that could not be decoded (counted, skipped).
    pub bad_pages: u64,
    /// Records seen (of any of the four events).
    pub records: u64,
    /// The tracefs mount was made by this process, in its own namespace.
    pub private_mount: bool,
}

/// Reads a tracefs (or /proc) text file of at most 256 KiB. Reads are
/// large: some tracefs files do not continue a short first read.
fn small(path: &Path) -> Result<String, String> {
    read_text(path, fsread::SMALL)
}

/// [`small`] with another cap.
pub(crate) fn read_text(path: &Path, cap: usize) -> Result<String, String> {
    use std::io::Read;
    let err = |e: std::io::Error| format!("{}: {e}", path.display());
    let mut f = fsread::open_regular(path).map_err(err)?;
    let mut out = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    while out.len() < cap {
        match f.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(err(e)),
        }
    }
    out.truncate(cap);
    Ok(String::from_utf8_lossy(&out).into_owned())
}

fn write(path: &Path, value: &str) -> Result<(), String> {
    std::fs::write(path, value).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Where tracefs is mounted for this process, from /proc/self/mountinfo.
pub fn find_mount() -> Option<PathBuf> {
    let info = fsread::read(Path::new("/proc/self/mountinfo"), fsread::TABLE).ok()?;
    let text = info.text();
    fsread::mounts(&text)
        .filter(|m| m.fstype == "tracefs")
        .map(|m| PathBuf::from(m.point))
        .find(|path| path.join("instances").is_dir())
}

/// tracefs for this process: the host's mount, or one made in a private
/// mount namespace. Must run before the process starts threads.
fn mount_point() -> Result<(PathBuf, bool), Unavailable> {
    if let Some(p) = find_mount() {
        return Ok((p, false));
    }
    // SAFETY: unshare(CLONE_NEWNS) changes only this process's view of
    // mounts; callers run it while single-threaded (the kernel refuses
    // otherwise, which is reported as unavailable).
    unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNS) }.map_err(
        |e| {
            Unavailable(format!(
                "tracefs is not mounted and a private mount namespace cannot be made ({e})"
            ))
        },
    )?;
    use rustix::mount::{MountFlags, MountPropagationFlags, mount, mount_change};
    mount_change(
        "/",
        MountPropagationFlags::REC | MountPropagationFlags::PRIVATE,
    )
    .map_err(|e| Unavailable(format!("cannot make mounts private ({e})")))?;
    let target = PathBuf::from("/sys/kernel/tracing");
    mount("nodev", &target, "tracefs", MountFlags::empty(), None).map_err(|e| {
        Unavailable(format!(
            "tracefs is not mounted and cannot be mounted at {} ({e})",
            target.display()
        ))
    })?;
    Ok((target, true))
}

/// Field 22 of /proc/PID/stat: start time in clock ticks since boot.
pub(crate) fn start_time(pid: u32) -> Option<u64> {
    let s = small(&PathBuf::from(format!("/proc/{pid}/stat"))).ok()?;
    let (_, rest) = s.rsplit_once(')')?;
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Disables an instance's events and removes it.
fn remove_instance(dir: &Path) -> Result<(), String> {
    let _ = write(&dir.join("tracing_on"), "0");
    let _ = write(&dir.join("events/enable"), "0");
    std::fs::remove_dir(dir).map_err(|e| format!("cannot remove {}: {e}", dir.display()))
}

/// Removes instances of cwdiag runs whose process is gone; returns their
/// names.
pub fn remove_stale(root: &Path) -> Vec<String> {
    let mut removed = Vec::new();
    let Ok(rd) = std::fs::read_dir(root.join("instances")) else {
        return removed;
    };
    for entry in rd.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some((pid, start)) = parse_instance_name(&name) else {
            continue;
        };
        if start_time(pid) == Some(start) {
            continue; // A live run's own instance.
        }
        // Nothing is written to it first: a run in another pid namespace
        // (whose pid is not ours to see) still reads its instance, and the
        // kernel refuses to remove an instance with open buffers (EBUSY,
        // kernel/trace/trace.c, __remove_instance); an abandoned one goes,
        // its events disabled by the removal itself.
        if std::fs::remove_dir(entry.path()).is_ok() {
            removed.push(name);
        }
    }
    removed
}

/// `cwdiag-<pid>-<start>` into (pid, start).
pub fn parse_instance_name(name: &str) -> Option<(u32, u64)> {
    let rest = name.strip_prefix(INSTANCE_PREFIX)?;
    let (pid, start) = rest.split_once('-')?;
    Some((pid.parse().ok()?, start.parse().ok()?))
}

/// Does this process hold CAP_DAC_OVERRIDE (as the DaemonSet grants it)?
fn may_override_dac() -> bool {
    use rustix::thread::{CapabilitySet, capabilities};
    capabilities(None).is_ok_and(|c| c.effective.contains(CapabilitySet::DAC_OVERRIDE))
}

/// Per-CPU buffer size: 64 MiB over all CPUs, 1 to 8 MiB each.
fn buffer_kb(ncpu: usize) -> usize {
    (65536 / ncpu.max(1)).clamp(1024, 8192)
}

impl Tracer {
    /// Opens the event source, or says in one line why it cannot.
    pub fn open() -> Result<Tracer, Unavailable> {
        // tracefs is root's (mode 0700): another user needs to override
        // its permissions to make an instance and write its files
        // (`fs/tracefs/inode.c`); mounting it, where it is not mounted,
        // also needs CAP_SYS_ADMIN (reported by `mount_point`).
        if !rustix::process::geteuid().is_root() && !may_override_dac() {
            return Err(Unavailable("needs root".into()));
        }
        let (root, private_mount) = mount_point()?;
        remove_stale(&root);
        let me = std::process::id();
        let start = start_time(me).unwrap_or(0);
        let dir = root
            .join("instances")
            .join(format!("{INSTANCE_PREFIX}{me}-{start}"));
        std::fs::create_dir(&dir)
            .map_err(|e| Unavailable(format!("cannot create {}: {e}", dir.display())))?;
        match setup(&dir) {
            Ok((hdr, decoder, buf, cpus)) => Ok(Tracer {
                dir,
                root,
                cpus,
                hdr,
                decoder,
                buf,
                missed_pages: 0,
                bad_pages: 0,
                records: 0,
                private_mount,
            }),
            Err(e) => {
                let _ = remove_instance(&dir);
                Err(Unavailable(e))
            }
        }
    }
}

/// What an open instance is read with.
type Readers = (PageHeader, Decoder, Vec<u8>, Vec<(u32, OwnedFd)>);

/// Configures the instance at `d` and opens its per-CPU buffers.
fn setup(d: &Path) -> Result<Readers, String> {
    let events = d.join("events");
    let hdr = PageHeader::parse(&small(&events.join("header_page"))?)?;
    check_entry_header(&small(&events.join("header_event"))?)?;
    let mut formats = Vec::new();
    for (sys, name) in TRACEPOINTS {
        let f = events.join(sys).join(name).join("format");
        let text = small(&f).map_err(|_| format!("this kernel has no {sys}:{name} tracepoint"))?;
        formats.push(Format::parse(&text)?);
    }
    let decoder = Decoder::new(&formats)?;
    let ncpu = std::fs::read_dir(d.join("per_cpu"))
        .map_err(|e| format!("{}: {e}", d.join("per_cpu").display()))?
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_prefix("cpu"))
                .and_then(|n| n.parse::<u32>().ok())
        })
        .collect::<Vec<_>>();
    write(&d.join("tracing_on"), "0")?;
    write(
        &d.join("buffer_size_kb"),
        &buffer_kb(ncpu.len()).to_string(),
    )?;
    // Keep what was recorded when full, count the rest as dropped.
    let _ = write(&d.join("options/overwrite"), "0");
    let _ = write(&d.join("options/record-tgid"), "1");
    write(&d.join("trace_clock"), "mono")?;
    write(
        &events.join("sock/inet_sock_set_state/filter"),
        "protocol == 6",
    )?;
    for (sys, name) in TRACEPOINTS {
        write(&events.join(sys).join(name).join("enable"), "1")?;
    }
    let page = small(&d.join("buffer_subbuf_size_kb"))
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .map_or(4096, |kb| kb * 1024)
        .clamp(4096, 1 << 20);
    let mut cpus = Vec::new();
    for cpu in ncpu {
        let p = d.join(format!("per_cpu/cpu{cpu}/trace_pipe_raw"));
        let fd = rustix::fs::open(
            &p,
            OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| format!("cannot open {}: {e}", p.display()))?;
        cpus.push((cpu, fd));
    }
    write(&d.join("tracing_on"), "1")?;
    Ok((hdr, decoder, vec![0u8; page], cpus))
}

impl Tracer {
    /// The instance directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Waits up to `timeout` for a buffer to fill enough to read.
    pub fn wait(&self, timeout: Duration) {
        use rustix::event::{PollFd, PollFlags, Timespec, poll};
        let mut fds: Vec<PollFd> = self
            .cpus
            .iter()
            .map(|(_, fd)| PollFd::new(fd, PollFlags::IN))
            .collect();
        let ts = Timespec {
            tv_sec: timeout.as_secs() as i64,
            tv_nsec: i64::from(timeout.subsec_nanos()),
        };
        let _ = poll(&mut fds, Some(&ts));
    }

    /// Reads everything buffered now, on every CPU, into `out` (each CPU's
    /// events in order; the caller merges by time).
    pub fn drain(&mut self, out: &mut Vec<Event>) {
        for i in 0..self.cpus.len() {
            loop {
                let n = match rustix::io::read(&self.cpus[i].1, &mut self.buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                match super::ring::parse_page(&self.buf[..n], &self.hdr) {
                    Ok(page) => {
                        if page.missed {
                            self.missed_pages += 1;
                        }
                        for r in &page.records {
                            self.records += 1;
                            if let Some(e) = self.decoder.decode(r.ts, r.data) {
                                out.push(e);
                            }
                        }
                    }
                    Err(_) => self.bad_pages += 1,
                }
            }
        }
    }

    /// Events the kernel could not store (buffer full) or overwrote, over
    /// all CPUs, from `per_cpu/cpuN/stats`.
    pub fn lost(&self) -> u64 {
        self.cpus
            .iter()
            .filter_map(|(cpu, _)| small(&self.dir.join(format!("per_cpu/cpu{cpu}/stats"))).ok())
            .map(|s| parse_lost(&s))
            .sum()
    }

    /// The tracefs mount this instance lives in.
    pub fn root(&self) -> &Path {
        &self.root
    }
}

/// `overrun:` plus `dropped events:` of a stats file.
pub fn parse_lost(stats: &str) -> u64 {
    stats
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            matches!(k.trim(), "overrun" | "dropped events")
                .then(|| v.trim().parse::<u64>().ok())
                .flatten()
        })
        .sum()
}

impl Drop for Tracer {
    fn drop(&mut self) {
        self.cpus.clear();
        let _ = remove_instance(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_names_and_stats() {
        assert_eq!(parse_instance_name("cwdiag-123-4567"), Some((123, 4567)));
        assert_eq!(parse_instance_name("cwdiag-x-1"), None);
        assert_eq!(parse_instance_name("other-1-2"), None);
        let stats = "entries: 5\noverrun: 3\ncommit overrun: 9\nbytes: 100\ndropped events: 4\nread events: 2\n";
        assert_eq!(parse_lost(stats), 7);
        assert_eq!(buffer_kb(2), 8192);
        assert_eq!(buffer_kb(256), 1024);
        let m: Vec<_> =
            fsread::mounts("36 35 0:12 / /a\\040b rw - tracefs tracefs rw\nbad line\n").collect();
        assert_eq!(
            (m.len(), m[0].fstype, m[0].point.as_str()),
            (1, "tracefs", "/a b")
        );
    }
}
