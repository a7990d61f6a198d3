//! Reading a capture back: cwdiag JSON snapshots, and netlink dumps as
//! `ss -D FILE` and `cwdiag scan --record FILE` write them (including the
//! legacy `TCPDIAG_GETSOCK` replies of old `ss`). The format is detected
//! from the content, never from the file name.

use super::decode::{Message, decode_messages};
use crate::model::{SCHEMA_VERSION, Snapshot, Source, SourceKind};
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// What `--record` writes beside the dump: what the raw netlink bytes do
/// not carry (owners, sysctls, time).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sidecar {
    pub schema_version: u32,
    pub taken_at_ms: u64,
    /// inode -> [pid, fd]
    pub owners: BTreeMap<u32, (u32, u32)>,
    pub processes: BTreeMap<u32, crate::model::Process>,
    pub attribution: crate::model::Attribution,
    pub sysctls: BTreeMap<String, String>,
    #[serde(default)]
    pub counters: BTreeMap<String, u64>,
    pub warnings: Vec<String>,
}

/// The sidecar's path for a dump at `dump`.
pub fn sidecar_path(dump: &Path) -> PathBuf {
    let mut p = dump.as_os_str().to_owned();
    p.push(".cwdiag.json");
    PathBuf::from(p)
}

impl Sidecar {
    pub fn of(snap: &Snapshot) -> Sidecar {
        Sidecar {
            schema_version: SCHEMA_VERSION,
            taken_at_ms: snap.taken_at_ms,
            owners: snap
                .sockets
                .iter()
                .filter_map(|s| Some((s.inode, (s.pid?, s.fd.unwrap_or(0)))))
                .collect(),
            processes: snap.processes.clone(),
            attribution: snap.attribution.clone(),
            sysctls: snap.sysctls.clone(),
            counters: snap.counters.clone(),
            warnings: snap.warnings.clone(),
        }
    }
}

/// Reads `path` as a snapshot or a netlink dump.
pub fn load(path: &Path) -> Result<Snapshot> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {name}"))?;
    from_bytes(&bytes, &name, sidecar(path)?)
}

fn sidecar(path: &Path) -> Result<Option<Sidecar>> {
    let side = sidecar_path(path);
    if !side.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&side)
        .with_context(|| format!("cannot read {}", side.display()))?;
    let sc: Sidecar = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{}: invalid cwdiag sidecar: {e}", side.display()))?;
    check_version(sc.schema_version, &side.display().to_string())?;
    Ok(Some(sc))
}

fn check_version(v: u32, name: &str) -> Result<()> {
    if v != SCHEMA_VERSION {
        bail!("{name}: unsupported schema_version {v} (this cwdiag reads {SCHEMA_VERSION})");
    }
    Ok(())
}

/// Parses capture bytes; `name` is used in error messages.
pub fn from_bytes(bytes: &[u8], name: &str, side: Option<Sidecar>) -> Result<Snapshot> {
    if bytes.is_empty() {
        bail!("{name}: empty file (expected a netlink dump or a cwdiag JSON snapshot)");
    }
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace()).copied();
    if first == Some(b'{') {
        return from_json(bytes, name);
    }
    from_dump(bytes, name, side)
}

fn from_json(bytes: &[u8], name: &str) -> Result<Snapshot> {
    // Check the version first, so a future document gets a clear message
    // rather than an unknown-field error.
    #[derive(Deserialize)]
    struct Version {
        schema_version: Option<u32>,
    }
    let v: Version =
        serde_json::from_slice(bytes).map_err(|e| anyhow::anyhow!("{name}: invalid JSON: {e}"))?;
    let Some(version) = v.schema_version else {
        bail!("{name}: not a cwdiag snapshot (no schema_version field)");
    };
    check_version(version, name)?;
    let mut snap: Snapshot = serde_json::from_slice(bytes)
        .map_err(|e| anyhow::anyhow!("{name}: invalid cwdiag snapshot: {e}"))?;
    if snap.source.path.is_none() {
        snap.source.path = Some(name.to_string());
    }
    snap.source.kind = SourceKind::Snapshot;
    Ok(snap)
}

fn from_dump(bytes: &[u8], name: &str, side: Option<Sidecar>) -> Result<Snapshot> {
    let mut sockets = Vec::new();
    let mut error = None;
    // Unlike ss, read to the end: a dump holds one NLMSG_DONE per family.
    decode_messages(bytes, 0, |m, offset| match m {
        Message::Socket { socket, .. } => sockets.push(socket),
        Message::Done { .. } => {}
        Message::Error { errno } => {
            error.get_or_insert((offset, errno, "holds an NLMSG_ERROR reply"));
        }
        Message::DumpFailed { errno } => {
            error.get_or_insert((offset, errno, "ends with an error: it is partial"));
        }
    })
    .map_err(|e| anyhow::anyhow!("{name}: not a valid netlink sock_diag dump: {e}"))?;
    if let Some((offset, errno, what)) = error {
        bail!(
            "{name}: at byte offset {offset}: the dump {what} ({})",
            std::io::Error::from_raw_os_error(errno)
        );
    }
    let mut snap = Snapshot {
        schema_version: SCHEMA_VERSION,
        taken_at_ms: 0,
        netns: None,
        source: Source {
            kind: SourceKind::Dump,
            path: Some(name.to_string()),
        },
        sockets,
        processes: BTreeMap::new(),
        attribution: Default::default(),
        listener_holders: BTreeMap::new(),
        sysctls: BTreeMap::new(),
        counters: BTreeMap::new(),
        warnings: Vec::new(),
    };
    match side {
        Some(sc) => {
            let owners: HashMap<u32, (u32, u32)> = sc.owners.into_iter().collect();
            for s in &mut snap.sockets {
                if let Some(&(pid, fd)) = owners.get(&s.inode).filter(|_| s.inode != 0) {
                    s.pid = Some(pid);
                    s.fd = Some(fd);
                }
            }
            snap.taken_at_ms = sc.taken_at_ms;
            snap.processes = sc.processes;
            snap.attribution = sc.attribution;
            snap.sysctls = sc.sysctls;
            snap.counters = sc.counters;
            snap.warnings = sc.warnings;
        }
        None => snap
            .warnings
            .push("replayed dump has no process information (no .cwdiag.json sidecar): owners are unknown".to_string()),
    }
    Ok(snap)
}
