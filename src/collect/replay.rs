//! Reading a capture back: cwdiag JSON snapshots, and netlink dumps as
//! `ss -D FILE` and `cwdiag scan --record FILE` write them (including the
//! legacy `TCPDIAG_GETSOCK` replies of old `ss`). The format is detected
//! from the content, never from the file name.

use super::decode::{Message, decode_messages};
use crate::model::{SCHEMA_VERSION, Snapshot, Source, SourceKind};
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};

/// Largest netlink message accepted in a dump. The kernel sizes sock_diag
/// replies to fit its receive buffer (a page or 32 KiB, see
/// `netlink_dump` in net/netlink/af_netlink.c), and one `inet_diag_msg`
/// with its attributes is well under 1 KiB: a header declaring more is
/// not a sock_diag dump, and refusing it bounds memory by this size.
pub const MAX_MESSAGE: usize = 1024 * 1024;

/// Largest JSON snapshot (or sidecar) read by `--from`: about four
/// million sockets' worth.
pub const MAX_JSON: usize = 1024 * 1024 * 1024;

/// The layout of the sidecar `--record` writes: 2 holds the snapshot
/// itself. Layout 1 (a hand-kept list of the snapshot's fields, which
/// lost the listener holders) is still read.
pub const SIDECAR_VERSION: u32 = 2;

/// What `--record` writes beside the dump: the snapshot as collected,
/// its sockets aside (the dump carries them), with what collection added
/// to each socket (its owner) by inode. Every field of the snapshot goes
/// through serde: none is copied by hand, so none can be left behind.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sidecar {
    /// [`SIDECAR_VERSION`].
    pub schema_version: u32,
    /// The snapshot with an empty socket list.
    pub snapshot: Snapshot,
    /// inode -> [pid, fd]
    pub owners: BTreeMap<u32, (u32, u32)>,
    /// Sockets in the dump beside it (after dropping duplicates), so a
    /// dump cut at a message boundary is caught.
    pub sockets: usize,
}

/// The sidecar of layout 1, as older cwdiag wrote it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct SidecarV1 {
    #[allow(dead_code)]
    schema_version: u32,
    taken_at_ms: u64,
    owners: BTreeMap<u32, (u32, u32)>,
    processes: BTreeMap<u32, crate::model::Process>,
    attribution: crate::model::Attribution,
    sysctls: BTreeMap<String, String>,
    #[serde(default)]
    counters: BTreeMap<String, u64>,
    warnings: Vec<String>,
    /// Absent in the oldest sidecars.
    #[serde(default)]
    sockets: Option<usize>,
}

/// A sidecar read back: the snapshot (without sockets), the owners, and
/// how many sockets the dump should hold when the sidecar says.
#[derive(Debug)]
pub struct Side {
    snapshot: Snapshot,
    owners: BTreeMap<u32, (u32, u32)>,
    sockets: Option<usize>,
}

/// The sidecar's path for a dump at `dump`.
pub fn sidecar_path(dump: &Path) -> PathBuf {
    let mut p = dump.as_os_str().to_owned();
    p.push(".cwdiag.json");
    PathBuf::from(p)
}

impl Sidecar {
    pub fn of(snap: &Snapshot) -> Sidecar {
        let mut snapshot = snap.clone();
        let sockets = std::mem::take(&mut snapshot.sockets);
        Sidecar {
            schema_version: SIDECAR_VERSION,
            snapshot,
            owners: sockets
                .iter()
                .filter_map(|s| Some((s.inode, (s.pid?, s.fd.unwrap_or(0)))))
                .collect(),
            sockets: sockets.len(),
        }
    }
}

impl From<Sidecar> for Side {
    fn from(sc: Sidecar) -> Side {
        Side {
            snapshot: sc.snapshot,
            owners: sc.owners,
            sockets: Some(sc.sockets),
        }
    }
}

impl From<SidecarV1> for Side {
    fn from(sc: SidecarV1) -> Side {
        Side {
            snapshot: Snapshot {
                schema_version: SCHEMA_VERSION,
                taken_at_ms: sc.taken_at_ms,
                netns: None,
                initial_netns: None,
                source: Source {
                    kind: SourceKind::Dump,
                    path: None,
                },
                sockets: Vec::new(),
                processes: sc.processes,
                attribution: sc.attribution,
                listener_holders: BTreeMap::new(),
                peer_listeners: Vec::new(),
                sysctls: sc.sysctls,
                counters: sc.counters,
                warnings: sc.warnings,
            },
            owners: sc.owners,
            sockets: sc.sockets,
        }
    }
}

/// Reads `path` as a snapshot or a netlink dump, as a stream: a dump
/// fails at its first bad header, and memory is bounded by the largest
/// message ([`MAX_MESSAGE`]), not by the file. A FIFO, socket or directory
/// is refused (a FIFO could block forever); a device is read as a stream
/// without blocking (`/dev/zero` fails at offset 0).
pub fn load(path: &Path) -> Result<Snapshot> {
    use rustix::fs::{FileType, Mode, OFlags};
    let name = path.display().to_string();
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::empty(),
    )
    .with_context(|| format!("cannot read {name}"))?;
    let st = rustix::fs::fstat(&fd).with_context(|| format!("cannot read {name}"))?;
    match FileType::from_raw_mode(st.st_mode) {
        FileType::RegularFile | FileType::CharacterDevice | FileType::BlockDevice => {}
        FileType::Fifo => {
            bail!("{name}: is a FIFO: --from reads a capture file (a FIFO could block)")
        }
        FileType::Directory => bail!("{name}: is a directory: --from reads a capture file"),
        _ => bail!("{name}: is not a regular file: --from reads a capture file"),
    }
    let side = sidecar(path)?;
    from_reader(std::fs::File::from(fd), &name, side)
}

fn sidecar(path: &Path) -> Result<Option<Side>> {
    let side = sidecar_path(path);
    let sname = side.display().to_string();
    let c = match super::fsread::read(&side, MAX_JSON) {
        Ok(c) => c,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {sname}")),
    };
    if c.truncated {
        bail!("{sname}: larger than {MAX_JSON} bytes: not a cwdiag sidecar");
    }
    side_from_bytes(&c.bytes, &sname).map(Some)
}

/// Parses a sidecar of either layout; `name` is used in error messages.
pub fn side_from_bytes(bytes: &[u8], name: &str) -> Result<Side> {
    #[derive(Deserialize)]
    struct Version {
        schema_version: Option<u32>,
    }
    let invalid = |e: serde_json::Error| anyhow::anyhow!("{name}: invalid cwdiag sidecar: {e}");
    let v: Version = serde_json::from_slice(bytes).map_err(invalid)?;
    match v.schema_version {
        Some(1) => Ok(serde_json::from_slice::<SidecarV1>(bytes)
            .map_err(invalid)?
            .into()),
        Some(SIDECAR_VERSION) => Ok(serde_json::from_slice::<Sidecar>(bytes)
            .map_err(invalid)?
            .into()),
        Some(v) => bail!(
            "{name}: unsupported sidecar schema_version {v} (this cwdiag reads 1 to {SIDECAR_VERSION})"
        ),
        None => bail!("{name}: not a cwdiag sidecar (no schema_version field)"),
    }
}

fn check_version(v: u32, name: &str) -> Result<()> {
    if v != SCHEMA_VERSION {
        bail!("{name}: unsupported schema_version {v} (this cwdiag reads {SCHEMA_VERSION})");
    }
    Ok(())
}

/// Parses capture bytes; `name` is used in error messages.
pub fn from_bytes(bytes: &[u8], name: &str, side: Option<Side>) -> Result<Snapshot> {
    from_reader(bytes, name, side)
}

/// The error for a read that failed part-way.
fn read_error(e: std::io::Error, name: &str, offset: usize) -> anyhow::Error {
    if e.kind() == ErrorKind::WouldBlock {
        anyhow::anyhow!(
            "{name}: at byte offset {offset}: no data ready (a device or pipe that would block): --from reads a capture file"
        )
    } else {
        anyhow::anyhow!("{name}: at byte offset {offset}: cannot read: {e}")
    }
}

/// Reads until `buf` is full or the end; returns how many bytes were read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Parses a capture from a stream; `name` is used in error messages.
pub fn from_reader(mut r: impl Read, name: &str, side: Option<Side>) -> Result<Snapshot> {
    // The format is told by the first non-blank byte among the first
    // DETECT bytes, whatever sizes the reads come in.
    const DETECT: usize = 4096;
    let mut head = vec![0u8; DETECT];
    let n = read_full(&mut r, &mut head).map_err(|e| read_error(e, name, 0))?;
    head.truncate(n);
    if head.is_empty() {
        bail!("{name}: empty file (expected a netlink dump or a cwdiag JSON snapshot)");
    }
    let first = head.iter().find(|b| !b.is_ascii_whitespace()).copied();
    let r = std::io::BufReader::with_capacity(64 * 1024, std::io::Cursor::new(head).chain(r));
    let mut snap = if first == Some(b'{') {
        let mut bytes = Vec::new();
        r.take(MAX_JSON as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| read_error(e, name, bytes.len()))?;
        if bytes.len() > MAX_JSON {
            bail!("{name}: larger than {MAX_JSON} bytes: not a cwdiag snapshot");
        }
        from_json(&bytes, name)?
    } else {
        from_dump(r, name, side)?
    };
    drop_duplicate_cookies(&mut snap);
    Ok(snap)
}

/// A socket listed twice (same non-zero cookie) is kept once, with a
/// warning. A live dump can meet a socket twice when it moves between
/// hash chains mid-walk and keeps it once too (see `sockdiag`); a capture
/// concatenated with itself shows every socket twice.
fn drop_duplicate_cookies(snap: &mut Snapshot) {
    let mut seen = rustc_hash::FxHashSet::default();
    let before = snap.sockets.len();
    snap.sockets
        .retain(|s| s.cookie == 0 || seen.insert(s.cookie));
    let dup = before - snap.sockets.len();
    if dup > 0 {
        snap.warnings.push(format!(
            "{dup} sockets appear more than once in this capture (same cookie): each was counted once"
        ));
    }
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

fn from_dump(mut r: impl Read, name: &str, side: Option<Side>) -> Result<Snapshot> {
    const HDR: usize = 16;
    let mut sockets = Vec::new();
    let mut error = None;
    // Offset of the first socket message not yet closed by an NLMSG_DONE.
    let mut open: Option<usize> = None;
    let mut done_seen = false;
    let mut offset = 0usize;
    let mut msg = Vec::new();
    let bad = |offset: usize, why: String| {
        anyhow::anyhow!(
            "{name}: not a valid netlink sock_diag dump: at byte offset {offset}: {why}"
        )
    };
    // Unlike ss, read to the end: a dump holds one NLMSG_DONE per family.
    loop {
        let mut hdr = [0u8; HDR];
        let n = read_full(&mut r, &mut hdr).map_err(|e| read_error(e, name, offset))?;
        if n == 0 {
            break;
        }
        if n < HDR {
            return Err(bad(
                offset,
                format!("truncated netlink header: {n} bytes left, a header needs {HDR}"),
            ));
        }
        let len = u32::from_ne_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]) as usize;
        if len < HDR {
            return Err(bad(
                offset,
                format!("netlink message length {len} is smaller than its {HDR}-byte header"),
            ));
        }
        if len > MAX_MESSAGE {
            return Err(bad(
                offset,
                format!(
                    "netlink message length {len} is larger than any sock_diag reply (at most {MAX_MESSAGE} bytes)"
                ),
            ));
        }
        msg.clear();
        msg.extend_from_slice(&hdr);
        msg.resize(len, 0);
        let got = read_full(&mut r, &mut msg[HDR..]).map_err(|e| read_error(e, name, offset))?;
        if got < len - HDR {
            return Err(bad(
                offset,
                format!(
                    "netlink message length {len} runs past the end of the data ({} bytes left)",
                    HDR + got
                ),
            ));
        }
        decode_messages(&msg, offset, |m, at| match m {
            Message::Socket { socket, .. } => {
                open.get_or_insert(at);
                sockets.push(socket);
            }
            Message::Done { .. } => {
                open = None;
                done_seen = true;
            }
            Message::Error { errno } => {
                error.get_or_insert((at, errno, "holds an NLMSG_ERROR reply"));
            }
            Message::DumpFailed { errno } => {
                error.get_or_insert((at, errno, "ends with an error: it is partial"));
            }
        })
        .map_err(|e| anyhow::anyhow!("{name}: not a valid netlink sock_diag dump: {e}"))?;
        // Messages are aligned to 4 bytes (NLMSG_ALIGN); the padding of the
        // last one may be missing.
        let pad = ((len + 3) & !3) - len;
        let mut skip = [0u8; 3];
        read_full(&mut r, &mut skip[..pad]).map_err(|e| read_error(e, name, offset))?;
        offset += len + pad;
    }
    if let Some((offset, errno, what)) = error {
        bail!(
            "{name}: at byte offset {offset}: the dump {what} ({})",
            std::io::Error::from_raw_os_error(errno)
        );
    }
    if let Some(at) = open.or((!done_seen).then_some(0)) {
        bail!(
            "{name}: at byte offset {offset}: the dump is truncated: the messages from offset {at} on are not closed by an NLMSG_DONE"
        );
    }
    let source = Source {
        kind: SourceKind::Dump,
        path: Some(name.to_string()),
    };
    let snap = match side {
        Some(sc) => {
            let n = {
                let mut seen = rustc_hash::FxHashSet::default();
                sockets
                    .iter()
                    .filter(|s| s.cookie == 0 || seen.insert(s.cookie))
                    .count()
            };
            if let Some(want) = sc.sockets
                && want != n
            {
                bail!(
                    "{name}: holds {n} sockets but its sidecar ({name}.cwdiag.json) records {want}: the dump is truncated or the two files do not belong together"
                );
            }
            let owners: HashMap<u32, (u32, u32)> = sc.owners.into_iter().collect();
            for s in &mut sockets {
                if let Some(&(pid, fd)) = owners.get(&s.inode).filter(|_| s.inode != 0) {
                    s.pid = Some(pid);
                    s.fd = Some(fd);
                }
            }
            Snapshot {
                source,
                sockets,
                ..sc.snapshot
            }
        }
        None => {
            let mut snap = Snapshot {
                schema_version: SCHEMA_VERSION,
                taken_at_ms: 0,
                netns: None,
                initial_netns: None,
                source,
                sockets,
                processes: BTreeMap::new(),
                attribution: Default::default(),
                listener_holders: BTreeMap::new(),
                peer_listeners: Vec::new(),
                sysctls: BTreeMap::new(),
                counters: BTreeMap::new(),
                warnings: Vec::new(),
            };
            snap.warnings.push(
                "replayed dump has no process information (no .cwdiag.json sidecar): owners are unknown".to_string(),
            );
            snap
        }
    };
    Ok(snap)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that hands out `chunk` bytes at a time.
    struct Chunked<'a>(&'a [u8], usize);

    impl Read for Chunked<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(self.1).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn the_stream_reads_the_same_in_any_chunk_size() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/");
        for file in [
            "workload.dump",
            "workload.ss-dump",
            "workload.snapshot.json",
        ] {
            let bytes = std::fs::read(format!("{dir}{file}")).unwrap();
            let whole = from_bytes(&bytes, file, None).unwrap();
            for chunk in [1, 3, 16, 17, 4096] {
                let s = from_reader(Chunked(&bytes, chunk), file, None).unwrap();
                assert_eq!(s.sockets, whole.sockets, "{file} in chunks of {chunk}");
            }
        }
        // Blank lines before a JSON snapshot, longer than one read.
        let json = std::fs::read(format!("{dir}workload.snapshot.json")).unwrap();
        let padded = [vec![b'\n'; 100], json].concat();
        assert!(from_reader(Chunked(&padded, 7), "padded", None).is_ok());
    }

    /// A recording replays to the snapshot it was taken from, every field
    /// of it (the listener holders and the namespace too), and a sidecar
    /// of the first layout still reads.
    #[test]
    fn a_recording_carries_the_whole_snapshot() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/");
        let dump = std::fs::read(format!("{dir}workload.dump")).unwrap();
        let v1 = std::fs::read(format!("{dir}workload.dump.cwdiag.json")).unwrap();
        let side = side_from_bytes(&v1, "v1").unwrap();
        let mut live = from_bytes(&dump, "cap", Some(side)).unwrap();
        assert!(live.sockets.iter().any(|s| s.pid.is_some()), "v1 owners");
        let listener = live
            .sockets
            .iter()
            .find(|s| s.state == crate::model::TcpState::Listen && s.inode != 0)
            .unwrap()
            .inode;
        live.listener_holders.insert(listener, vec![4242, 4243]);
        live.netns = Some(crate::model::NetnsInfo {
            name: "blue".into(),
            inode: 4026531840,
            pod_uid: None,
            container: None,
        });
        let json = serde_json::to_vec(&Sidecar::of(&live)).unwrap();
        let side = side_from_bytes(&json, "v2").unwrap();
        assert_eq!(from_bytes(&dump, "cap", Some(side)).unwrap(), live);
        let err = side_from_bytes(br#"{"schema_version": 3}"#, "x.cwdiag.json").unwrap_err();
        assert_eq!(
            err.to_string(),
            "x.cwdiag.json: unsupported sidecar schema_version 3 (this cwdiag reads 1 to 2)"
        );
    }
}
