//! Thread id to process through /proc (`/proc/TID/status` Tgid,
//! `/proc/PID/comm`, `/proc/PID/ns/net`), cached; for threads gone by the
//! time their event is read, tracefs's own record (`saved_tgids` and
//! `saved_cmdlines`, kept with options/record-tgid and record-cmd): the
//! process and name, but no namespace.

use super::attrib::{Proc, ProcLookup};
use crate::collect::fsread;
use rustc_hash::FxHashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Entries kept before the cache is dropped (pids are reused).
const MAX_CACHED: usize = 65536;
/// How long a cached answer is trusted.
const TTL: Duration = Duration::from_secs(5);

/// tracefs's saved maps (tid to tgid, pid to comm) and when they were read.
type Saved = (Instant, FxHashMap<u32, u32>, FxHashMap<u32, String>);

pub struct OsProcs {
    proc_root: PathBuf,
    tracefs: Option<PathBuf>,
    cache: FxHashMap<u32, Option<Proc>>,
    since: Instant,
    saved: Option<Saved>,
}

impl OsProcs {
    pub fn new(proc_root: &Path, tracefs: Option<&Path>) -> OsProcs {
        OsProcs {
            proc_root: proc_root.to_path_buf(),
            tracefs: tracefs.map(Path::to_path_buf),
            cache: FxHashMap::default(),
            since: Instant::now(),
            saved: None,
        }
    }

    fn live(&self, tid: u32) -> Option<Proc> {
        let status = fsread::read(
            &self.proc_root.join(tid.to_string()).join("status"),
            fsread::SMALL,
        )
        .ok()?
        .text();
        let pid: u32 = status
            .lines()
            .find_map(|l| l.strip_prefix("Tgid:"))?
            .trim()
            .parse()
            .ok()?;
        let dir = self.proc_root.join(pid.to_string());
        let comm = fsread::read(&dir.join("comm"), 64)
            .ok()
            .map(|c| c.text().trim_end_matches('\n').to_string())
            .unwrap_or_default();
        let netns = rustix::fs::stat(dir.join("ns/net")).ok().map(|s| s.st_ino);
        Some(Proc { pid, comm, netns })
    }

    /// From tracefs's saved maps, reloaded at most once a second.
    fn saved(&mut self, tid: u32) -> Option<Proc> {
        let root = self.tracefs.clone()?;
        let stale = self
            .saved
            .as_ref()
            .is_none_or(|(t, _, _)| t.elapsed() > Duration::from_secs(1));
        if stale {
            let read = |name: &str| {
                super::tracefs::read_text(&root.join(name), 16 << 20).unwrap_or_default()
            };
            let tgids = read("saved_tgids")
                .lines()
                .filter_map(|l| {
                    let (a, b) = l.split_once(' ')?;
                    Some((a.parse().ok()?, b.trim().parse().ok()?))
                })
                .collect();
            let comms = read("saved_cmdlines")
                .lines()
                .filter_map(|l| {
                    let (a, b) = l.split_once(' ')?;
                    Some((a.parse().ok()?, b.to_string()))
                })
                .collect();
            self.saved = Some((Instant::now(), tgids, comms));
        }
        let (_, tgids, comms) = self.saved.as_ref()?;
        let pid = *tgids.get(&tid)?;
        let comm = comms
            .get(&pid)
            .or_else(|| comms.get(&tid))
            .cloned()
            .unwrap_or_default();
        Some(Proc {
            pid,
            comm,
            netns: None,
        })
    }
}

impl ProcLookup for OsProcs {
    fn lookup(&mut self, tid: u32) -> Option<Proc> {
        if self.cache.len() >= MAX_CACHED || self.since.elapsed() > TTL {
            self.cache.clear();
            self.since = Instant::now();
        }
        if let Some(hit) = self.cache.get(&tid) {
            return hit.clone();
        }
        let got = self.live(tid).or_else(|| self.saved(tid));
        self.cache.insert(tid, got.clone());
        got
    }
}
