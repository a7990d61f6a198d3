//! Live sock_diag dumps over a `NETLINK_SOCK_DIAG` socket.
//!
//! One `SOCK_DIAG_BY_FAMILY` dump request per address family (the kernel
//! refuses AF_UNSPEC), read until `NLMSG_DONE`. The bytes go to the pure
//! decoder in [`super::decode`], and optionally to a recorder.

use super::decode::{Message, decode_messages};
use crate::model::{Socket, TcpState};
use anyhow::{Context, Result, bail};
use netlink_packet_core::{Emitable, NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage};
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
#[derive(Debug, Clone)]
pub struct DumpRequest {
    /// `idiag_states` mask, see [`TcpState::mask_bit`].
    pub states: u32,
    /// Ask for `INET_DIAG_INFO` (tcp_info): costs ~17 %.
    pub tcp_info: bool,
    /// Only sockets whose local or peer port is one of these, filtered in
    /// the kernel with `INET_DIAG_REQ_BYTECODE`.
    pub ports: Vec<u16>,
}

/// Receives every raw reply buffer (for `scan --record`).
pub type Recorder<'a> = &'a mut dyn FnMut(&[u8]) -> Result<()>;

/// The result of dumping both families.
#[derive(Debug, Default)]
pub struct Dump {
    pub sockets: Vec<Socket>,
    pub warnings: Vec<String>,
}

/// What one dump request covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// Both families in one walk of the kernel's tables, through the
    /// compatibility request `TCPDIAG_GETSOCK` (see [`compat_request`]).
    Both,
    /// One family, through `SOCK_DIAG_BY_FAMILY`.
    Family(u8),
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Both => "TCP",
            Target::Family(AF_INET) => "IPv4 TCP",
            Target::Family(_) => "IPv6 TCP",
        }
    }
}

/// Dumps IPv4 and IPv6 TCP sockets. `capacity` is the expected socket
/// count (from /proc/net/sockstat): reserving it up front avoids the
/// vector doubling that would otherwise set the peak memory. `record`
/// receives every reply buffer exactly as the kernel sent it (the `ss -D`
/// format).
///
/// The kernel walks its whole socket hash for every request, whatever the
/// family asked for, so one request for both families costs half of two
/// (about 17 ms per walk at 200k sockets). Recordings keep the
/// per-family `SOCK_DIAG_BY_FAMILY` replies that `ss -D` writes, and a
/// kernel that refuses the combined request gets the per-family ones.
pub fn dump(req: &DumpRequest, capacity: usize, record: Option<Recorder<'_>>) -> Result<Dump> {
    if record.is_none()
        && let Ok(d) = dump_targets(&ONE_WALK, req, capacity, None)
    {
        return Ok(d);
    }
    dump_targets(&PER_FAMILY, req, capacity, record)
}

/// Both families in one request, as [`dump`] asks first.
const ONE_WALK: [Target; 1] = [Target::Both];
/// One request per family: the fallback, and what recordings hold.
const PER_FAMILY: [Target; 2] = [Target::Family(AF_INET), Target::Family(AF_INET6)];

/// The inodes of the sockets the kernel has now in the states of `req`,
/// without keeping the sockets (a recheck, see `collect::enrich_owners`).
pub fn socket_inodes(req: &DumpRequest) -> Result<rustc_hash::FxHashSet<u32>> {
    let mut seen = rustc_hash::FxHashSet::default();
    let mut collect = |targets: &[Target]| {
        targets.iter().try_for_each(|&target| {
            let mut on_socket = |s: Socket| {
                if s.inode != 0 {
                    seen.insert(s.inode);
                }
            };
            dump_one(target, req, &mut on_socket, &mut |_| {}).map(drop)
        })
    };
    if collect(&ONE_WALK).is_err() {
        collect(&PER_FAMILY)?;
    }
    Ok(seen)
}

fn dump_targets(
    targets: &[Target],
    req: &DumpRequest,
    capacity: usize,
    mut record: Option<Recorder<'_>>,
) -> Result<Dump> {
    let mut out = Dump::default();
    out.sockets.reserve_exact(capacity);
    let mut seen = Recent::default();
    for &target in targets {
        let name = target.name();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let start = out.sockets.len();
            let mut replies: Vec<Vec<u8>> = Vec::new();
            let sockets = &mut out.sockets;
            seen.clear();
            let seen = std::cell::RefCell::new(&mut seen);
            let interrupted = dump_one(
                target,
                req,
                &mut |s: Socket| {
                    if seen.borrow_mut().first_time(s.cookie) {
                        sockets.push(s);
                    }
                },
                &mut |b| {
                    seen.borrow_mut().next_reply();
                    if record.is_some() {
                        replies.push(b.to_vec());
                    }
                },
            )
            .with_context(|| format!("sock_diag dump of {name} sockets failed"))?;
            if interrupted && attempt <= DUMP_RETRIES {
                out.sockets.truncate(start);
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

/// Drops the copies of a socket one dump reports twice. The kernel
/// resumes a dump that filled its reply at the hash bucket and the number
/// of entries it had sent from it (`net/ipv4/inet_diag.c`,
/// `inet_diag_dump_icsk`: `s_i`, `s_num`): a socket inserted ahead in that
/// bucket meanwhile shifts an entry already sent past the resume point,
/// and it comes again. A copy can therefore only follow its first report
/// within one bucket, so the cookies of the current and the previous reply
/// (thousands of sockets, far more than a bucket holds) catch it without
/// a set of every cookie: at 400k sockets that set cost more than parsing.
#[derive(Default)]
struct Recent {
    previous: rustc_hash::FxHashSet<u64>,
    current: rustc_hash::FxHashSet<u64>,
}

impl Recent {
    fn clear(&mut self) {
        self.previous.clear();
        self.current.clear();
    }

    /// A new reply begins.
    fn next_reply(&mut self) {
        std::mem::swap(&mut self.previous, &mut self.current);
        self.current.clear();
    }

    /// True the first time `cookie` is seen in the two latest replies.
    fn first_time(&mut self, cookie: u64) -> bool {
        !self.previous.contains(&cookie) && self.current.insert(cookie)
    }
}

/// The `idiag_states` mask with every real state.
pub fn all_states() -> u32 {
    StateFlags::all().bits()
}

/// The request of `SOCK_DIAG_BY_FAMILY` for one family, serialised by the
/// crate.
fn family_request(family: u8, req: &DumpRequest) -> Vec<u8> {
    let mut hdr = NetlinkHeader::default();
    hdr.flags = NLM_F_REQUEST | NLM_F_DUMP;
    hdr.sequence_number = 1;
    let mut msg = NetlinkMessage::new(
        hdr,
        SockDiagMessage::InetRequest(InetRequest {
            family,
            protocol: IPPROTO_TCP,
            extensions: extensions(req),
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
    buf
}

fn extensions(req: &DumpRequest) -> ExtensionFlags {
    if req.tcp_info {
        ExtensionFlags::INFO
    } else {
        ExtensionFlags::empty()
    }
}

/// `sizeof(struct inet_diag_req)`, the compatibility request: family,
/// src_len, dst_len, ext, a 48-byte `inet_diag_sockid`, states, dbs.
const INET_DIAG_REQ_V1_LEN: usize = 60;

/// The compatibility request `TCPDIAG_GETSOCK` (`struct inet_diag_req`,
/// which the crate does not model). The kernel turns it into a request
/// for family `AF_UNSPEC` (`inet_diag_dump_compat`), which matches both
/// IPv4 and IPv6 sockets in a single walk; replies are `inet_diag_msg`
/// with message type `TCPDIAG_GETSOCK`, which the decoder reads.
fn compat_request(req: &DumpRequest) -> Vec<u8> {
    let mut hdr = NetlinkHeader::default();
    hdr.length = (NETLINK_HEADER_LEN + INET_DIAG_REQ_V1_LEN) as u32;
    hdr.message_type = super::decode::TCPDIAG_GETSOCK;
    hdr.flags = NLM_F_REQUEST | NLM_F_DUMP;
    hdr.sequence_number = 1;
    let mut buf = vec![0u8; NETLINK_HEADER_LEN + INET_DIAG_REQ_V1_LEN];
    hdr.emit(&mut buf[..NETLINK_HEADER_LEN]);
    let body = &mut buf[NETLINK_HEADER_LEN..];
    // family AF_UNSPEC (0), src_len 0, dst_len 0, then the extensions.
    body[3] = extensions(req).bits();
    // The socket id (bytes 4..52) stays zero: no address match.
    body[52..56].copy_from_slice(&req.states.to_ne_bytes());
    // idiag_dbs (56..60): unused by the kernel.
    buf
}

const NETLINK_HEADER_LEN: usize = 16;

/// Sends one dump request and reads its replies until `NLMSG_DONE`.
/// Returns whether the kernel flagged the dump as interrupted.
fn dump_one(
    target: Target,
    req: &DumpRequest,
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

    let mut buf = match target {
        Target::Both => compat_request(req),
        Target::Family(family) => family_request(family, req),
    };
    if !req.ports.is_empty() {
        append_bytecode(&mut buf, &port_filter(&req.ports));
    }
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
            Message::Error { errno: e } => errno = Some(("answered NLMSG_ERROR", e)),
            Message::DumpFailed { errno: e } => errno = Some(("ended the dump with an error", e)),
        })
        .context("malformed sock_diag reply")?;
        offset += n;
        if let Some((what, e)) = errno {
            let err = std::io::Error::from_raw_os_error(e);
            bail!("the kernel {what}: {err}");
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

/// `INET_DIAG_REQ_BYTECODE`, the request attribute carrying a filter.
const INET_DIAG_REQ_BYTECODE: u16 = 1;
/// Bytecode ops of `include/uapi/linux/inet_diag.h`.
const INET_DIAG_BC_JMP: u8 = 1;
const INET_DIAG_BC_S_COND: u8 = 7;
const INET_DIAG_BC_D_COND: u8 = 8;

/// One port test, encoded as ss encodes `sport = :P` (or `dport`): an op
/// `{code, yes, no}`, an `inet_diag_hostcond` with family AF_UNSPEC,
/// prefix 0 and the port, then a 4-byte zero address. A true test jumps
/// `yes` bytes (past the test), a false one `no` bytes (4 past the end:
/// reject).
fn port_cond(code: u8, port: u16) -> Vec<u8> {
    let len: u16 = 16;
    let mut v = vec![code, len as u8];
    v.extend_from_slice(&(len + 4).to_ne_bytes());
    v.extend_from_slice(&[0, 0, 0, 0]); // family, prefix_len, padding
    v.extend_from_slice(&i32::from(port).to_ne_bytes());
    v.extend_from_slice(&[0, 0, 0, 0]); // address (unused)
    v
}

/// `a or b`, as ss builds it: `a`, a JMP over `b`, then `b`. Tests in `a`
/// that fail jump 4 past `a`'s end, which is `b`'s start; tests that pass
/// land on the JMP, which jumps to the end: accept.
fn or(mut a: Vec<u8>, b: Vec<u8>) -> Vec<u8> {
    a.push(INET_DIAG_BC_JMP);
    a.push(4);
    a.extend_from_slice(&((b.len() + 4) as u16).to_ne_bytes());
    a.extend(b);
    a
}

/// Bytecode for `sport = :P1 or dport = :P1 or sport = :P2 ...`, byte for
/// byte what ss sends for that filter (left-associative ORs).
pub fn port_filter(ports: &[u16]) -> Vec<u8> {
    ports
        .iter()
        .flat_map(|&p| {
            [
                port_cond(INET_DIAG_BC_S_COND, p),
                port_cond(INET_DIAG_BC_D_COND, p),
            ]
        })
        .reduce(or)
        .unwrap_or_default()
}

/// Appends an `INET_DIAG_REQ_BYTECODE` attribute to a serialised request
/// and fixes the netlink length (the crate has no builder for it).
fn append_bytecode(buf: &mut Vec<u8>, bc: &[u8]) {
    let attr_len = 4 + bc.len();
    buf.extend_from_slice(&(attr_len as u16).to_ne_bytes());
    buf.extend_from_slice(&INET_DIAG_REQ_BYTECODE.to_ne_bytes());
    buf.extend_from_slice(bc);
    while !buf.len().is_multiple_of(4) {
        buf.push(0);
    }
    let total = buf.len() as u32;
    buf[..4].copy_from_slice(&total.to_ne_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_port_bytecode_is_what_ss_sends() {
        // `ss -tan 'sport = :8080 or dport = :8080'` (iproute2 6.1), its
        // INET_DIAG_REQ_BYTECODE as captured with strace -xx.
        let ss: [u8; 36] = [
            0x07, 0x10, 0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x90, 0x1f, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x00, //
            0x01, 0x04, 0x14, 0x00, //
            0x08, 0x10, 0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x90, 0x1f, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x00,
        ];
        assert_eq!(port_filter(&[8080]), ss);
    }

    #[test]
    fn chained_ports_nest_like_ss() {
        let bc = port_filter(&[80, 443]);
        // ((S80 or D80) or S443) or D443: 4 tests of 16 bytes, 3 JMPs.
        assert_eq!(bc.len(), 4 * 16 + 3 * 4);
        // The outermost JMP skips the last test.
        assert_eq!(&bc[56..60], &[INET_DIAG_BC_JMP, 4, 20, 0]);
        assert!(port_filter(&[]).is_empty());
    }

    #[test]
    fn one_compat_request_sees_both_families_like_two_family_requests() {
        let l4 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let l6 = match std::net::TcpListener::bind("[::1]:0") {
            Ok(l) => l,
            Err(e) => {
                crate::testutil::skip(&format!("no IPv6 loopback here ({e})"));
                return;
            }
        };
        let _c4 = std::net::TcpStream::connect(l4.local_addr().unwrap()).unwrap();
        let _c6 = std::net::TcpStream::connect(l6.local_addr().unwrap()).unwrap();
        let ports = vec![
            l4.local_addr().unwrap().port(),
            l6.local_addr().unwrap().port(),
        ];
        let req = DumpRequest {
            states: all_states(),
            tcp_info: true,
            ports,
        };
        let both = dump_targets(&ONE_WALK, &req, 0, None).unwrap();
        let each = dump_targets(&PER_FAMILY, &req, 0, None).unwrap();
        // Only this test's sockets: others running beside it may reuse
        // the port numbers (TIME_WAIT of an earlier connection).
        let ours: Vec<std::net::SocketAddr> = vec![
            l4.local_addr().unwrap(),
            l6.local_addr().unwrap(),
            _c4.local_addr().unwrap(),
            _c6.local_addr().unwrap(),
        ];
        let key = |d: &Dump| {
            let mut v: Vec<_> = d
                .sockets
                .iter()
                .filter(|s| ours.contains(&s.local.socket_addr()) && s.state != TcpState::TimeWait)
                .map(|s| (s.cookie, s.state, s.local, s.peer, s.tcp_info.is_some()))
                .collect();
            v.sort();
            v
        };
        // Listener, client and server end for each family.
        let mine = key(&both);
        assert_eq!(mine.len(), 6, "{:?}", both.sockets);
        assert_eq!(mine.iter().filter(|s| s.2.is_ipv6()).count(), 3);
        assert_eq!(key(&both), key(&each));
    }

    #[test]
    fn kernel_filters_by_port() {
        let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let b = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let pa = a.local_addr().unwrap().port();
        let _c = std::net::TcpStream::connect(("127.0.0.1", pa)).unwrap();
        let req = DumpRequest {
            states: all_states(),
            tcp_info: false,
            ports: vec![pa],
        };
        let d = dump(&req, 0, None).unwrap();
        assert!(
            d.sockets
                .iter()
                .all(|s| s.local.port() == pa || s.peer.port() == pa),
            "only port {pa}"
        );
        assert!(
            d.sockets.len() >= 3,
            "listener and both ends: {:?}",
            d.sockets
        );
        // Our own three sockets are there; the other listener is not (a
        // socket of another test may legitimately match port `pa`).
        let client = _c.local_addr().unwrap();
        let has = |st: TcpState, local: std::net::SocketAddr| {
            d.sockets
                .iter()
                .any(|s| s.state == st && s.local.socket_addr() == local)
        };
        assert!(
            has(TcpState::Listen, a.local_addr().unwrap()),
            "{:?}",
            d.sockets
        );
        assert!(has(TcpState::Established, client), "{:?}", d.sockets);
        assert!(!has(TcpState::Listen, b.local_addr().unwrap()));
    }
}
