//! `SOCK_DESTROY`: asks the kernel to abort chosen sockets (what `ss -K`
//! does). Each request carries the socket's full id, cookie included, so a
//! socket that was closed and its 4-tuple reused meanwhile is not hit: the
//! kernel answers ESTALE or ENOENT instead.

use crate::model::Socket;
use anyhow::{Context, Result};
use netlink_packet_core::{
    ErrorBuffer, NLM_F_ACK, NLM_F_REQUEST, NLMSG_ERROR, NetlinkBuffer, NetlinkHeader,
    NetlinkMessage,
};
use netlink_packet_sock_diag::{
    SockDiagDestroy, SockDiagMessage,
    constants::{AF_INET, AF_INET6, IPPROTO_TCP},
    inet::{ExtensionFlags, InetRequest, SocketId, StateFlags},
};
use netlink_sys::{Socket as NlSocket, SocketAddr, protocols::NETLINK_SOCK_DIAG};

/// What happened to one socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Destroyed,
    /// Already gone, or its id now belongs to another socket.
    Gone,
    /// The kernel lacks CONFIG_INET_DIAG_DESTROY.
    Unsupported,
    /// Not allowed (needs CAP_NET_ADMIN in the socket's namespace).
    Denied,
    Failed(i32),
}

/// A netlink socket for destroy requests.
pub struct Destroyer {
    sock: NlSocket,
    seq: u32,
}

impl Destroyer {
    pub fn new() -> Result<Destroyer> {
        let mut sock =
            NlSocket::new(NETLINK_SOCK_DIAG).context("cannot open a NETLINK_SOCK_DIAG socket")?;
        sock.bind_auto().context("cannot bind the netlink socket")?;
        sock.connect(&SocketAddr::new(0, 0))
            .context("cannot connect the netlink socket")?;
        Ok(Destroyer { sock, seq: 0 })
    }

    /// Destroys `s`, matched by addresses, ports, interface, state and cookie.
    pub fn destroy(&mut self, s: &Socket) -> Result<Outcome> {
        self.seq = self.seq.wrapping_add(1);
        let mut hdr = NetlinkHeader::default();
        hdr.flags = NLM_F_REQUEST | NLM_F_ACK;
        hdr.sequence_number = self.seq;
        let family = if s.is_ipv6() { AF_INET6 } else { AF_INET };
        let req = InetRequest {
            family,
            protocol: IPPROTO_TCP,
            extensions: ExtensionFlags::empty(),
            states: StateFlags::from_bits_truncate(s.state.mask_bit()),
            socket_id: SocketId {
                source_port: s.local.port(),
                destination_port: s.peer.port(),
                source_address: s.local.ip(),
                destination_address: s.peer.ip(),
                interface_id: s.iface,
                cookie: s.cookie.to_ne_bytes(),
            },
        };
        let mut msg = NetlinkMessage::new(
            hdr,
            SockDiagDestroy::new(SockDiagMessage::InetRequest(req)).into(),
        );
        msg.finalize();
        let mut buf = vec![0u8; msg.buffer_len()];
        msg.serialize(&mut buf);
        self.sock
            .send(&buf, 0)
            .context("cannot send the SOCK_DESTROY request")?;
        let mut rbuf = vec![0u8; 8192];
        loop {
            let n = self
                .sock
                .recv(&mut &mut rbuf[..], 0)
                .context("cannot read the SOCK_DESTROY answer")?;
            let Ok(reply) = NetlinkBuffer::new_checked(&rbuf[..n]) else {
                anyhow::bail!("malformed SOCK_DESTROY answer");
            };
            if reply.sequence_number() != self.seq || reply.message_type() != NLMSG_ERROR {
                continue;
            }
            let code = ErrorBuffer::new_checked(reply.payload())
                .map(|e| e.code().map(|c| c.get().saturating_neg()).unwrap_or(0))
                .map_err(|_| anyhow::anyhow!("truncated SOCK_DESTROY answer"))?;
            use rustix::io::Errno;
            if code == 0 {
                return Ok(Outcome::Destroyed);
            }
            return Ok(match Errno::from_raw_os_error(code) {
                Errno::NOENT | Errno::STALE => Outcome::Gone,
                Errno::OPNOTSUPP => Outcome::Unsupported,
                Errno::PERM | Errno::ACCESS => Outcome::Denied,
                _ => Outcome::Failed(code),
            });
        }
    }
}

/// True when this process may destroy sockets: root, or CAP_NET_ADMIN in
/// its effective set.
pub fn has_net_admin(proc_root: &std::path::Path) -> bool {
    const CAP_NET_ADMIN: u32 = 12;
    let Some(status) =
        super::procfs::ProcFs::open(proc_root).small_text("self/status", &mut Vec::new())
    else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_NET_ADMIN) != 0)
}
