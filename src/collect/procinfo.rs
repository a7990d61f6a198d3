//! Details of the processes that own flagged sockets: open fds against
//! RLIMIT_NOFILE, cgroup and container, and socket fds that no socket
//! table knows (closed by the kernel, never `close()`d by the app).

use super::procmap::{FdTable, socket_inode};
use crate::model::Process;
use procfs_core::FromRead;
use rustc_hash::FxHashSet;
use std::path::Path;

/// Socket inodes listed per process, at most.
const LISTED_INODES: usize = 5;

/// Fills fd and limit details of `p` (pid `pid`). `table` is what the
/// attribution walk already read of its fds; the rest is read here. `known`
/// holds every socket inode present in the namespace's tables, when
/// complete.
pub fn enrich(
    proc_root: &Path,
    pid: u32,
    p: &mut Process,
    table: Option<&FdTable>,
    known: Option<&FxHashSet<u64>>,
) {
    let dir = proc_root.join(pid.to_string());
    if let Ok(limits) = std::fs::File::open(dir.join("limits"))
        .map_err(|_| ())
        .and_then(|f| procfs_core::process::Limits::from_read(f).map_err(|_| ()))
    {
        p.nofile_soft = limit_value(&limits.max_open_files.soft_limit);
        p.nofile_hard = limit_value(&limits.max_open_files.hard_limit);
    }
    let Some(table) = table else { return };
    let (mut sockets, unread): (Vec<(u32, u32)>, Vec<u32>) = if table.complete {
        (table.sockets.clone(), table.unread.clone())
    } else {
        // Only probed: list the table now.
        let all: Vec<u32> = std::fs::read_dir(dir.join("fd"))
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.file_name().to_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        (Vec::new(), all)
    };
    p.fd_count = Some(if table.complete {
        table.fd_count
    } else {
        unread.len()
    });
    let Some(known) = known else { return };
    for &fd in &unread {
        if let Ok(link) = std::fs::read_link(dir.join("fd").join(fd.to_string()))
            && let Some(ino) = socket_inode(link.to_string_lossy().as_bytes())
        {
            sockets.push((fd, ino));
        }
    }
    let candidates: Vec<(u32, u32)> = sockets
        .into_iter()
        .filter(|&(_, ino)| !known.contains(&u64::from(ino)))
        .collect();
    let stale = confirm_stale(pid, candidates);
    p.stale_socket_fds = Some(stale.len());
    p.stale_socket_inodes = stale.into_iter().take(LISTED_INODES).collect();
}

/// `TCP_CLOSE`, `tcpi_state` of a socket the kernel is done with.
const TCP_CLOSE: u8 = 7;
/// Offset of `tcpi_segs_in` in `struct tcp_info` (Linux 4.2+).
const TCPI_SEGS_IN: usize = 140;

/// The candidates (fd, inode) that really are stale. A socket fd whose
/// inode was in no table may just be newer than the dump (a busy server
/// accepts and connects all the time) or belong to another network
/// namespace, so each one is borrowed from its owner with `pidfd_getfd`
/// (Linux 5.6+, needs ptrace rights over it, as root has) and kept only if
/// it is still the same socket, a TCP socket in the CLOSE state, and one
/// that has received packets: a connection the kernel is done with and
/// the application is not (a socket just created, not yet connected, is
/// in the CLOSE state too, but has received nothing). An fd closed since
/// the walk is not stale; candidates that cannot be borrowed (no ptrace
/// rights, a kernel before 5.6) are kept as they are.
fn confirm_stale(pid: u32, candidates: Vec<(u32, u32)>) -> Vec<u64> {
    let inodes = |c: Vec<(u32, u32)>| c.into_iter().map(|(_, i)| u64::from(i)).collect();
    if candidates.is_empty() {
        return Vec::new();
    }
    let pidfd = rustix::process::Pid::from_raw(pid as i32)
        .and_then(|p| rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()).ok());
    let Some(pidfd) = pidfd else {
        return inodes(candidates);
    };
    let kept = candidates
        .into_iter()
        .filter(|&(fd, ino)| {
            let sock = match rustix::process::pidfd_getfd(
                &pidfd,
                fd as i32,
                rustix::process::PidfdGetfdFlags::empty(),
            ) {
                Ok(sock) => sock,
                // Closed since the walk, or the process is gone.
                Err(rustix::io::Errno::BADF) | Err(rustix::io::Errno::SRCH) => return false,
                Err(_) => return true, // cannot check (no ptrace rights, old kernel): keep
            };
            let same = rustix::fs::fstat(&sock).is_ok_and(|st| st.st_ino == u64::from(ino));
            same && match tcp_info_head(&sock) {
                Some((state, segs_in)) => state == TCP_CLOSE && segs_in != Some(0),
                None => false, // not a TCP socket
            }
        })
        .collect();
    inodes(kept)
}

/// `tcpi_state` and, when the kernel reports it, `tcpi_segs_in` of a TCP
/// socket (`TCP_INFO`); None for any other kind of socket.
fn tcp_info_head(sock: &rustix::fd::OwnedFd) -> Option<(u8, Option<u32>)> {
    use std::os::fd::AsRawFd;
    let mut info = [0u8; TCPI_SEGS_IN + 4];
    let mut len = info.len() as libc::socklen_t;
    // SAFETY: `info` is writable for `len` bytes and both outlive the call;
    // the kernel writes at most `len` bytes and stores the length it wrote.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc != 0 || len < 1 {
        return None;
    }
    let segs_in = info
        .get(TCPI_SEGS_IN..TCPI_SEGS_IN + 4)
        .filter(|_| len as usize >= TCPI_SEGS_IN + 4)
        .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
    Some((info[0], segs_in))
}

fn limit_value(v: &procfs_core::process::LimitValue) -> Option<u64> {
    match v {
        procfs_core::process::LimitValue::Value(n) => Some(*n),
        procfs_core::process::LimitValue::Unlimited => None,
    }
}

/// The unified (v2) cgroup path, or the first v1 hierarchy's.
pub fn cgroup_path(text: &str) -> Option<String> {
    let mut first = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(_ctrl), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if id == "0" {
            return Some(path.to_string());
        }
        first.get_or_insert_with(|| path.to_string());
    }
    first
}

/// Recognises container runtimes and systemd units in a cgroup path:
/// `docker:0123456789ab`, `containerd:...`, `cri-o:...`, `podman:...`,
/// `kubepods:...`, `systemd:nginx.service`.
pub fn container_id(path: &str) -> Option<String> {
    let leaf = path.rsplit('/').find(|s| !s.is_empty())?;
    let short = |id: &str| id.get(..12).unwrap_or(id).to_string();
    let is_id = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
    for (prefix, runtime) in [
        ("docker-", "docker"),
        ("cri-containerd-", "containerd"),
        ("crio-", "cri-o"),
        ("libpod-", "podman"),
    ] {
        if let Some(id) = leaf
            .strip_prefix(prefix)
            .and_then(|r| r.strip_suffix(".scope"))
            && is_id(id)
        {
            return Some(format!("{runtime}:{}", short(id)));
        }
    }
    if is_id(leaf) {
        let runtime = if path.contains("kubepods") {
            "kubepods"
        } else if path.contains("docker") {
            "docker"
        } else {
            "container"
        };
        return Some(format!("{runtime}:{}", short(leaf)));
    }
    if leaf.ends_with(".service") || leaf.ends_with(".scope") {
        return Some(format!("systemd:{leaf}"));
    }
    None
}

/// Socket inodes of the non-TCP tables in `/proc/net` of the calling
/// thread's namespace (UDP, raw, UNIX, netlink, packet).
pub fn other_table_inodes(net: &Path) -> FxHashSet<u64> {
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
        let Ok(text) = std::fs::read_to_string(net.join(file)) else {
            continue;
        };
        out.extend(inode_column(&text, col));
    }
    out
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

    fn fd_and_inode(fd: &impl std::os::fd::AsRawFd) -> (u32, u32) {
        let raw = fd.as_raw_fd();
        let link = std::fs::read_link(format!("/proc/self/fd/{raw}")).unwrap();
        (
            raw as u32,
            socket_inode(link.to_string_lossy().as_bytes()).unwrap(),
        )
    }

    #[test]
    fn only_closed_tcp_sockets_are_confirmed_stale() {
        use std::io::Read;
        use std::os::fd::AsRawFd;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let live = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (mut reset, _) = l.accept().unwrap();
        // The peer closes with SO_LINGER 0: an RST, and `reset` is CLOSED.
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: a valid fd and a linger struct that outlives the call.
        let rc = unsafe {
            libc::setsockopt(
                live.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0);
        drop(live);
        let mut buf = [0u8; 1];
        assert!(reset.read(&mut buf).is_err(), "the RST is seen");
        let still_live = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        // SAFETY: socket() has no memory arguments; a valid fd is owned once.
        let unconnected = unsafe {
            use std::os::fd::FromRawFd;
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
            assert!(fd >= 0);
            std::os::fd::OwnedFd::from_raw_fd(fd)
        };
        let me = std::process::id();
        let candidates = vec![
            fd_and_inode(&reset),
            fd_and_inode(&still_live),
            fd_and_inode(&udp),
            fd_and_inode(&l),
            fd_and_inode(&unconnected),
        ];
        let reset_inode = u64::from(candidates[0].1);
        // Borrowing our own fds needs no privilege.
        assert_eq!(confirm_stale(me, candidates.clone()), vec![reset_inode]);
        // An fd that now holds another socket is not that stale socket.
        let moved = vec![(candidates[1].0, candidates[0].1)];
        assert!(confirm_stale(me, moved).is_empty());
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
