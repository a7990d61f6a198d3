//! Network namespaces: finding them and collecting inside them.
//!
//! sock_diag and `/proc/sys/net` answer for the namespace of the calling
//! thread, so each namespace is collected on its own thread after
//! `setns(CLONE_NEWNET)`. Every namespace's dump walks the host's whole
//! socket hash table: `--all-netns` costs about (namespaces x host sockets).

use super::procfs::ProcFs;
use crate::model::NetnsInfo;
use anyhow::{Context, Result, anyhow, bail};
use rustix::thread::{LinkNameSpaceType, move_into_link_name_space};
use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A namespace to collect from: a handle file and a label.
#[derive(Debug, Clone)]
pub struct Target {
    pub path: PathBuf,
    pub info: NetnsInfo,
}

/// `--netns NAME`: a handle under /run/netns, as `ip netns add` makes.
pub fn named(name: &str) -> Result<Target> {
    if name.is_empty() || name.contains('/') {
        bail!("--netns: invalid namespace name '{name}'");
    }
    let path = Path::new("/run/netns").join(name);
    let meta = std::fs::metadata(&path).map_err(|e| {
        anyhow!(
            "--netns: network namespace '{name}' not found ({}: {e})",
            path.display()
        )
    })?;
    Ok(Target {
        path,
        info: NetnsInfo {
            name: name.to_string(),
            inode: meta.ino(),
            pod_uid: None,
            container: None,
        },
    })
}

/// `--netns-pid PID`: the namespace process PID lives in.
pub fn of_pid(proc_root: &Path, pid: u32) -> Result<Target> {
    let path = proc_root.join(pid.to_string()).join("ns/net");
    let meta = std::fs::metadata(&path).map_err(|e| {
        anyhow!(
            "--netns-pid: cannot open the network namespace of pid {pid} ({}: {e})",
            path.display()
        )
    })?;
    Ok(Target {
        path,
        info: NetnsInfo {
            name: format!("pid:{pid}"),
            inode: meta.ino(),
            pod_uid: None,
            container: None,
        },
    })
}

/// `--all-netns`: every distinct namespace among processes and under
/// /run/netns, deduplicated by inode. Named handles win for labels; the
/// namespace of pid 1 (or, when that is hidden, our own) is `host`.
/// Also returns how many processes' namespaces could not be read.
pub fn all(proc_root: &Path) -> (Vec<Target>, usize) {
    let proc = ProcFs::open(proc_root);
    let mut by_ino: BTreeMap<u64, Target> = BTreeMap::new();
    if let Ok(dir) = std::fs::read_dir("/run/netns") {
        for e in dir.flatten() {
            if let (Ok(meta), Some(name)) = (std::fs::metadata(e.path()), e.file_name().to_str()) {
                by_ino.insert(
                    meta.ino(),
                    Target {
                        path: e.path(),
                        info: NetnsInfo {
                            name: name.to_string(),
                            inode: meta.ino(),
                            pod_uid: None,
                            container: None,
                        },
                    },
                );
            }
        }
    }
    let host = proc
        .netns_inode("1/ns/net")
        .or_else(|| proc.netns_inode("self/ns/net"));
    let mut unreadable = 0;
    let mut pids: Vec<u32> = proc.pids();
    pids.sort_unstable();
    for pid in pids {
        let rel = format!("{pid}/ns/net");
        let ino = match proc.netns(&rel) {
            Ok(ino) => ino,
            Err(rustix::io::Errno::NOENT) => continue,
            Err(_) => {
                unreadable += 1;
                continue;
            }
        };
        let path = proc_root.join(&rel);
        by_ino.entry(ino).or_insert_with(|| {
            // The pod and container this namespace belongs to, from the
            // cgroup of the process it was found through.
            let (pod_uid, container) = if Some(ino) == host {
                (None, None)
            } else {
                let cg = proc
                    .small_text(&format!("{pid}/cgroup"), &mut Vec::new())
                    .and_then(|t| super::procinfo::cgroup_path(&t));
                (
                    cg.as_deref().and_then(super::procinfo::pod_uid),
                    cg.as_deref().and_then(super::procinfo::container_id),
                )
            };
            let name = if Some(ino) == host {
                "host".to_string()
            } else {
                let comm = proc
                    .small_text(&format!("{pid}/comm"), &mut Vec::new())
                    .unwrap_or_default();
                format!("pid:{pid}({})", comm.trim())
            };
            Target {
                path,
                info: NetnsInfo {
                    name,
                    inode: ino,
                    pod_uid,
                    container,
                },
            }
        });
    }
    (by_ino.into_values().collect(), unreadable)
}

/// Runs `f` on a new thread that has entered `target`'s namespace.
pub fn run_in<T: Send + 'static>(
    target: &Target,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    // Non-blocking and close-on-exec: whatever is at the path, opening it
    // cannot hang, and setns refuses anything that is not a namespace.
    let file = rustix::fs::open(
        &target.path,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map(std::fs::File::from)
    .with_context(|| {
        format!(
            "cannot open network namespace {} ({})",
            target.info.name,
            target.path.display()
        )
    })?;
    let name = target.info.name.clone();
    std::thread::spawn(move || -> Result<T> {
        move_into_link_name_space(file.as_fd(), Some(LinkNameSpaceType::Network)).map_err(|e| {
            let why = if e == rustix::io::Errno::PERM {
                " (needs root or CAP_SYS_ADMIN)"
            } else {
                ""
            };
            anyhow!("cannot enter network namespace {name}: {e}{why}")
        })?;
        f()
    })
    .join()
    .map_err(|_| {
        anyhow!(
            "the collector thread for network namespace {} failed",
            target.info.name
        )
    })?
}
