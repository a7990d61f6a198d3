//! Live sock_diag dumps over a `NETLINK_SOCK_DIAG` socket.
//!
//! One `SOCK_DIAG_BY_FAMILY` dump request per address family (the kernel
//! refuses AF_UNSPEC), read until `NLMSG_DONE`. The bytes go to the pure
//! decoder in [`super::decode`], and optionally to a recorder.

use super::decode::{Message, decode_messages};
use crate::model::{Socket, TcpState};
use anyhow::{Context, Result, bail};
use netlink_packet_core::{NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage};
use netlink_packet_sock_diag::{
    SockDiagMessage,
    constants::{AF_INET, AF_INET6, IPPROTO_TCP},
    inet::{ExtensionFlags, InetRequest, SocketId, StateFlags},
};
use netlink_sys::{Socket as NlSocket, SocketAddr, protocols::NETLINK_SOCK_DIAG};

/// Receive buffer per `recv()`. The kernel fills each reply up to the
/// buffer it is given (at least 32 KiB are needed to avoid truncation);
/// bigger buffers mean fewer system calls.
const RECV_BUF: usize = 256 * 1024;
/// How often an interrupted (`NLM_F_DUMP_INTR`) dump is retried.
const DUMP_RETRIES: usize = 3;

/// What to ask the kernel for.
#[derive(Debug, Clone, Copy)]
pub struct DumpRequest {
    /// `idiag_states` mask, see [`TcpState::mask_bit`].
    pub states: u32,
    /// Ask for `INET_DIAG_INFO` (tcp_info): costs ~17 %.
    pub tcp_info: bool,
}

/// Receives every raw reply buffer (for `scan --record`).
pub type Recorder<'a> = &'a mut dyn FnMut(&[u8]) -> Result<()>;

/// The result of dumping both families.
#[derive(Debug, Default)]
pub struct Dump {
    pub sockets: Vec<Socket>,
    pub warnings: Vec<String>,
}

/// Dumps IPv4 then IPv6 TCP sockets. `capacity` is the expected socket
/// count (from /proc/net/sockstat): reserving it up front avoids the
/// vector doubling that would otherwise set the peak memory. `record`
/// receives every reply buffer exactly as the kernel sent it (the `ss -D`
/// format).
pub fn dump(req: DumpRequest, capacity: usize, mut record: Option<Recorder<'_>>) -> Result<Dump> {
    let mut out = Dump::default();
    out.sockets.reserve_exact(capacity);
    let mut seen = rustc_hash::FxHashSet::with_capacity_and_hasher(capacity, Default::default());
    for family in [AF_INET, AF_INET6] {
        let name = if family == AF_INET { "IPv4" } else { "IPv6" };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let start = out.sockets.len();
            let mut replies: Vec<Vec<u8>> = Vec::new();
            let sockets = &mut out.sockets;
            let interrupted = dump_family(
                family,
                req,
                &mut |s: Socket| {
                    // A socket can appear twice when it moves between hash
                    // chains during the dump; the cookie identifies it.
                    if seen.insert(s.cookie) {
                        sockets.push(s);
                    }
                },
                &mut |b| {
                    if record.is_some() {
                        replies.push(b.to_vec());
                    }
                },
            )
            .with_context(|| format!("sock_diag dump of {name} TCP sockets failed"))?;
            if interrupted && attempt <= DUMP_RETRIES {
                for s in out.sockets.drain(start..) {
                    seen.remove(&s.cookie);
                }
                continue;
            }
            if interrupted {
                out.warnings.push(format!(
                    "the {name} dump was interrupted by table changes {attempt} times in a row (NLM_F_DUMP_INTR); counts may be slightly off"
                ));
            }
            if let Some(rec) = record.as_mut() {
                for r in &replies {
                    rec(r)?;
                }
            }
            break;
        }
    }
    Ok(out)
}

/// The `idiag_states` mask with every real state.
pub fn all_states() -> u32 {
    StateFlags::all().bits()
}

fn dump_family(
    family: u8,
    req: DumpRequest,
    on_socket: &mut dyn FnMut(Socket),
    on_reply: &mut dyn FnMut(&[u8]),
) -> Result<bool> {
    let mut sock =
        NlSocket::new(NETLINK_SOCK_DIAG).context("cannot open a NETLINK_SOCK_DIAG socket")?;
    sock.bind_auto().context("cannot bind the netlink socket")?;
    sock.connect(&SocketAddr::new(0, 0))
        .context("cannot connect the netlink socket")?;
    // Best effort: a bigger socket buffer lets the kernel queue more
    // replies; the per-recv buffer below is what prevents truncation.
    let _ = sock.set_rx_buf_sz(RECV_BUF);

    let mut hdr = NetlinkHeader::default();
    hdr.flags = NLM_F_REQUEST | NLM_F_DUMP;
    hdr.sequence_number = 1;
    let mut msg = NetlinkMessage::new(
        hdr,
        SockDiagMessage::InetRequest(InetRequest {
            family,
            protocol: IPPROTO_TCP,
            extensions: if req.tcp_info {
                ExtensionFlags::INFO
            } else {
                ExtensionFlags::empty()
            },
            states: StateFlags::from_bits_truncate(req.states),
            socket_id: if family == AF_INET {
                SocketId::new_v4()
            } else {
                SocketId::new_v6()
            },
        })
        .into(),
    );
    msg.finalize();
    let mut buf = vec![0u8; msg.buffer_len()];
    msg.serialize(&mut buf);
    sock.send(&buf, 0)
        .context("cannot send the sock_diag request")?;

    let mut rbuf = vec![0u8; RECV_BUF];
    let mut interrupted = false;
    let mut offset = 0usize;
    loop {
        let n = sock
            .recv(&mut &mut rbuf[..], 0)
            .context("cannot read the sock_diag reply")?;
        if n == 0 {
            bail!("the kernel closed the sock_diag socket before NLMSG_DONE");
        }
        let reply = &rbuf[..n];
        on_reply(reply);
        let mut done = false;
        let mut errno = None;
        decode_messages(reply, offset, |m, _| match m {
            Message::Socket {
                socket,
                interrupted: i,
            } => {
                interrupted |= i;
                on_socket(socket);
            }
            Message::Done { interrupted: i } => {
                interrupted |= i;
                done = true;
            }
            Message::Error { errno: e } => errno = Some(e),
        })
        .context("malformed sock_diag reply")?;
        offset += n;
        if let Some(e) = errno {
            let err = std::io::Error::from_raw_os_error(e);
            bail!("the kernel answered NLMSG_ERROR: {err}");
        }
        if done {
            return Ok(interrupted);
        }
    }
}

/// Mask of the given states.
pub fn mask_of(states: &[TcpState]) -> u32 {
    states.iter().fold(0, |m, s| m | s.mask_bit())
}
