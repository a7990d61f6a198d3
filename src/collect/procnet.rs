//! The `/proc/net/tcp` and `/proc/net/tcp6` fallback, for kernels or
//! sandboxes without sock_diag. Slower and poorer than netlink: no timer
//! expiry, no cookie, no tcp_info.

use super::procfs::ProcFs;
use crate::model::{Socket, TcpState, Timer};
use anyhow::{Context, Result};
use procfs_core::net::TcpNetEntries;
use procfs_core::{ExplicitSystemInfo, FromReadSI};

/// Parses one `/proc/net/tcp{,6}` file's text.
pub fn parse(text: &[u8], name: &str) -> Result<Vec<Socket>> {
    let si = ExplicitSystemInfo {
        boot_time_secs: 0,
        ticks_per_second: 100,
        page_size: 4096,
        is_little_endian: cfg!(target_endian = "little"),
    };
    let entries = TcpNetEntries::from_read(text, &si)
        .map_err(|e| anyhow::anyhow!("{name}: malformed TCP table: {e}"))?;
    entries
        .0
        .into_iter()
        .map(|e| {
            let state = TcpState::from_number(e.state.to_u8())
                .ok_or_else(|| anyhow::anyhow!("{name}: invalid state {}", e.state.to_u8()))?;
            Ok(Socket {
                state,
                local: e.local_address.into(),
                peer: e.remote_address.into(),
                timer: Timer::Off,
                expires_ms: 0,
                retrans: 0,
                recv_q: e.rx_queue,
                send_q: e.tx_queue,
                uid: e.uid,
                inode: u32::try_from(e.inode).unwrap_or(0),
                cookie: 0,
                iface: 0,
                tcp_info: None,
                pid: None,
                fd: None,
            })
        })
        .collect()
}

/// Reads both tables of the calling thread's namespace under `proc_root`;
/// a table cut at its size cap is named in `warnings`.
pub fn read(proc: &ProcFs, warnings: &mut Vec<String>) -> Result<Vec<Socket>> {
    use super::fsread;
    let net = proc.net();
    let mut out = Vec::new();
    for file in ["tcp", "tcp6"] {
        let rel = format!("{net}/{file}");
        let path = proc.path().join(&rel);
        match proc.read(&rel, fsread::TABLE) {
            Ok(mut c) => {
                if c.truncated {
                    // Keep whole lines only: the cut one would not parse.
                    let end = c
                        .bytes
                        .iter()
                        .rposition(|&b| b == b'\n')
                        .map_or(0, |i| i + 1);
                    c.bytes.truncate(end);
                    c.note(&path, fsread::TABLE, warnings);
                }
                out.extend(parse(&c.bytes, &path.display().to_string())?)
            }
            // No IPv6 in this kernel: nothing to read.
            Err(e) if file == "tcp6" && e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The project's own capture of fixtures/workload.py (see
    /// fixtures/README.md): per family 9 CLOSE_WAIT (4 never read, 3 read
    /// to EOF, 2 with unread data) and their 9 orphaned FIN_WAIT2 peers; 30
    /// TIME_WAIT and 5 ESTABLISHED pairs over IPv4.
    #[test]
    fn parses_the_projects_own_captures() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/");
        let count = |socks: &[Socket], st: TcpState| socks.iter().filter(|s| s.state == st).count();
        let v4 = std::fs::read(format!("{dir}workload.proc-net-tcp")).unwrap();
        let v4 = parse(&v4, "workload.proc-net-tcp").unwrap();
        assert_eq!(count(&v4, TcpState::CloseWait), 9);
        assert_eq!(count(&v4, TcpState::FinWait2), 9);
        assert_eq!(count(&v4, TcpState::TimeWait), 30);
        assert_eq!(count(&v4, TcpState::Established), 10);
        assert_eq!(count(&v4, TcpState::Listen), 2);
        assert_eq!(v4.len(), 60);
        let cw: Vec<_> = v4
            .iter()
            .filter(|s| s.state == TcpState::CloseWait)
            .collect();
        assert!(cw.iter().all(|s| s.local.port() == 8080), "{cw:?}");
        // rx_queue is rcv_nxt - copied_seq, so the peer's FIN counts as one
        // (net/ipv4/tcp_ipv4.c, get_tcp4_sock): 1 never read, 0 read to EOF,
        // 101 with 100 bytes unread.
        for (q, n) in [(1, 4), (0, 3), (101, 2)] {
            assert_eq!(
                cw.iter().filter(|s| s.recv_q == q).count(),
                n,
                "{q}: {cw:?}"
            );
        }
        let v6 = std::fs::read(format!("{dir}workload.proc-net-tcp6")).unwrap();
        let v6 = parse(&v6, "workload.proc-net-tcp6").unwrap();
        assert_eq!(count(&v6, TcpState::CloseWait), 9);
        assert!(v6.iter().all(|s| s.local.is_ipv6()), "{v6:?}");
        assert_eq!(v6.len(), 19);
    }

    /// Samples from other projects' test data, when that checkout sits
    /// beside this repository; the own captures above cover the parser.
    #[test]
    fn parses_samples_from_other_projects() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/external-fixtures/");
        for (file, n, state) in [
            ("node_exporter_proc_net_tcpstat.txt", 2, None),
            (
                "prometheus_procfs_proc_net_tcp.txt",
                3,
                Some(TcpState::Listen),
            ),
            (
                "prometheus_procfs_proc_net_tcp6.txt",
                2,
                Some(TcpState::Close),
            ),
        ] {
            let Ok(bytes) = std::fs::read(format!("{dir}{file}")) else {
                crate::testutil::skip_optional(&format!(
                    "{dir}{file} not found (another project's sample, beside the repository only in some checkouts)"
                ));
                continue;
            };
            let socks = parse(&bytes, file).unwrap();
            assert_eq!(socks.len(), n, "{file}");
            if let Some(st) = state {
                assert!(socks.iter().all(|s| s.state == st), "{file}: {socks:?}");
            }
        }
    }

    #[test]
    fn rejects_garbage_with_the_file_name() {
        let err = parse(b"header\n  0: zzz\n", "/x/tcp")
            .unwrap_err()
            .to_string();
        assert!(err.contains("/x/tcp"), "{err}");
    }

    #[test]
    fn live_tables_match_the_listener_we_open() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let socks = read(
            &ProcFs::open(std::path::Path::new("/proc")),
            &mut Vec::new(),
        )
        .unwrap();
        assert!(
            socks
                .iter()
                .any(|s| s.state == TcpState::Listen && s.local.port() == port)
        );
    }
}
