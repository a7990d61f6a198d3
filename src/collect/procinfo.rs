//! Details of the processes that own flagged sockets: open fds against
//! RLIMIT_NOFILE, cgroup and container, and socket fds that no socket
//! table knows (closed by the kernel, never `close()`d by the app).

pub use super::cgroup::{cgroup_path, container_id, pod_uid};
use super::procfs::ProcFs;
use super::procmap::FdTable;
use crate::model::Process;
use procfs_core::FromRead;
use rustc_hash::FxHashSet;

/// Socket inodes listed per process, at most.
pub const LISTED_INODES: usize = 5;

/// Fills fd and limit details of `p` (pid `pid`). `table` is what the
/// attribution walk already read of its fds; the rest is read here. `known`
/// holds every socket inode present in the namespace's tables, when
/// complete; the socket fds (fd, inode) in none of them are returned, for
/// [`confirm_stale`].
pub fn enrich(
    proc: &ProcFs,
    pid: u32,
    p: &mut Process,
    table: Option<&FdTable>,
    known: Option<&FxHashSet<u64>>,
    warnings: &mut Vec<String>,
) -> Vec<(u32, u32)> {
    if let Some(limits) = proc
        .small_text(&format!("{pid}/limits"), warnings)
        .and_then(|t| procfs_core::process::Limits::from_read(t.as_bytes()).ok())
    {
        p.nofile_soft = limit_value(&limits.max_open_files.soft_limit);
        p.nofile_hard = limit_value(&limits.max_open_files.hard_limit);
    }
    let Some(table) = table else {
        return Vec::new();
    };
    let (mut sockets, unread): (Vec<(u32, u32)>, Vec<u32>) = if table.complete {
        (table.sockets.clone(), table.unread.clone())
    } else {
        // Only probed: list the table now.
        let all: Vec<u32> = proc.fds(pid).unwrap_or_default();
        (Vec::new(), all)
    };
    p.fd_count = Some(if table.complete {
        table.fd_count
    } else {
        unread.len()
    });
    let Some(known) = known else {
        return Vec::new();
    };
    if !unread.is_empty()
        && let Ok(dir) = proc.fd_dir(pid)
    {
        let mut name = String::new();
        for &fd in &unread {
            if let super::procfs::Link::Socket(ino) = ProcFs::fd_link(&dir, fd, &mut name) {
                sockets.push((fd, ino));
            }
        }
    }
    sockets
        .into_iter()
        .filter(|&(_, ino)| !known.contains(&u64::from(ino)))
        .collect()
}

/// Of the `candidates` (fd, inode) of `pid` (socket fds whose inode was in
/// no table when we dumped), the ones that are stale. A busy server
/// accepts and connects all the time, so most candidates are just newer
/// than the dump: `live` holds the socket inodes of a second dump, taken
/// after the fd walk, and a candidate found there is live. One whose fd
/// was closed or reused since the walk is gone. What is left is held by
/// the process yet in no table (or in another network namespace's).
/// Nothing here touches the process or its sockets: links are only read.
pub fn confirm_stale(
    proc: &ProcFs,
    pid: u32,
    candidates: &[(u32, u32)],
    live: &FxHashSet<u32>,
) -> Vec<u64> {
    candidates
        .iter()
        .filter(|(_, ino)| !live.contains(ino))
        .filter(|&&(fd, ino)| proc.socket_at(pid, fd) == Some(ino))
        .map(|&(_, ino)| u64::from(ino))
        .collect()
}

fn limit_value(v: &procfs_core::process::LimitValue) -> Option<u64> {
    match v {
        procfs_core::process::LimitValue::Value(n) => Some(*n),
        procfs_core::process::LimitValue::Unlimited => None,
    }
}

/// Socket inodes of the non-TCP tables in `/proc/net` of the calling
/// thread's namespace (UDP, raw, UNIX, netlink, packet). `None` when a
/// table was cut at its size cap (named in `warnings`): the set would then
/// miss sockets, and every fd of theirs would look stale.
pub fn other_table_inodes(proc: &ProcFs, warnings: &mut Vec<String>) -> Option<FxHashSet<u64>> {
    use super::fsread;
    let net = proc.net();
    let mut out = FxHashSet::default();
    for (file, col) in [
        ("udp", Some(9)),
        ("udp6", Some(9)),
        ("udplite", Some(9)),
        ("udplite6", Some(9)),
        ("raw", Some(9)),
        ("raw6", Some(9)),
        ("icmp", Some(9)),
        ("icmp6", Some(9)),
        ("unix", Some(6)),
        ("netlink", None),
        ("packet", None),
    ] {
        let rel = format!("{net}/{file}");
        let Ok(c) = proc.read(&rel, fsread::TABLE) else {
            continue;
        };
        if c.truncated {
            c.note(&proc.path().join(&rel), fsread::TABLE, warnings);
            return None;
        }
        out.extend(inode_column(&c.text(), col));
    }
    Some(out)
}

/// Inode column (`col`, or the last one) of a `/proc/net` table.
pub fn inode_column(text: &str, col: Option<usize>) -> Vec<u64> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            match col {
                Some(i) => f.nth(i),
                None => f.last(),
            }
        })
        .filter_map(|v| v.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_pod_uids_of_both_cgroup_drivers() {
        let uid = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
        let id = "a".repeat(64);
        let systemd = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{id}.scope",
            uid.replace('-', "_")
        );
        assert_eq!(pod_uid(&systemd).as_deref(), Some(uid));
        let guaranteed = format!(
            "/kubepods.slice/kubepods-pod{}.slice/crio-{id}.scope",
            uid.replace('-', "_")
        );
        assert_eq!(pod_uid(&guaranteed).as_deref(), Some(uid));
        let cgroupfs = format!("/kubepods/besteffort/pod{uid}/{id}");
        assert_eq!(pod_uid(&cgroupfs).as_deref(), Some(uid));
        assert_eq!(pod_uid(&format!("/system.slice/docker-{id}.scope")), None);
        assert_eq!(pod_uid("/kubepods/burstable/podnot-a-uid/x"), None);
        assert_eq!(
            pod_uid("/user.slice/pod0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"),
            None
        );
    }

    #[test]
    fn recognises_containers_and_units() {
        let id = "3f1c0e0d9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d";
        assert_eq!(
            container_id(&format!("/system.slice/docker-{id}.scope")).unwrap(),
            "docker:3f1c0e0d9a8b"
        );
        assert_eq!(
            container_id(&format!("/docker/{id}")).unwrap(),
            "docker:3f1c0e0d9a8b"
        );
        assert_eq!(
            container_id(&format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/cri-containerd-{id}.scope")).unwrap(),
            "containerd:3f1c0e0d9a8b"
        );
        assert_eq!(
            container_id(&format!("/kubepods/besteffort/pod1/{id}")).unwrap(),
            "kubepods:3f1c0e0d9a8b"
        );
        assert_eq!(
            container_id(&format!("/machine.slice/libpod-{id}.scope")).unwrap(),
            "podman:3f1c0e0d9a8b"
        );
        assert_eq!(
            container_id(&format!("/crio-{id}.scope")).unwrap(),
            "cri-o:3f1c0e0d9a8b"
        );
        assert_eq!(
            container_id("/system.slice/nginx.service").unwrap(),
            "systemd:nginx.service"
        );
        assert_eq!(
            container_id("/system.slice/billing.service/workers/3").unwrap(),
            "systemd:billing.service"
        );
        assert_eq!(
            container_id("/user.slice/user-1000.slice/user@1000.service/app.slice/x/y").unwrap(),
            "systemd:user@1000.service"
        );
        assert_eq!(container_id("/"), None);
        assert_eq!(container_id("/user.slice"), None);
    }

    #[test]
    fn picks_the_unified_cgroup() {
        assert_eq!(
            cgroup_path("0::/system.slice/sshd.service\n").unwrap(),
            "/system.slice/sshd.service"
        );
        assert_eq!(
            cgroup_path("12:memory:/docker/abc\n11:cpu:/docker/abc\n").unwrap(),
            "/docker/abc"
        );
    }

    #[test]
    fn reads_inode_columns() {
        let udp = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n  1: 00000000:0044 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 12345 2 0000 0\n";
        assert_eq!(inode_column(udp, Some(9)), vec![12345]);
        let unix = "Num       RefCount Protocol Flags    Type St Inode Path\n0000: 00000002 00000000 00010000 0001 01 777 /run/x.sock\n";
        assert_eq!(inode_column(unix, Some(6)), vec![777]);
        let nl = "sk               Eth Pid        Groups   Rmem     Wmem     Dump  Locks    Drops    Inode\n0000 0   1 00000000 0 0 0 2 0 4242\n";
        assert_eq!(inode_column(nl, None), vec![4242]);
    }
}
