//! Pure decoding of sock_diag netlink replies: bytes in, sockets out.
//!
//! The same code reads a live reply buffer, a recording made with
//! `cwdiag scan --record` and a dump written by `ss -D`, so every error
//! carries the byte offset of the message that broke it.

use crate::model::{Socket, TcpAges, TcpState, Timer};
use netlink_packet_core::{
    ErrorBuffer, NLM_F_DUMP_INTR, NLMSG_DONE, NLMSG_ERROR, NetlinkBuffer, NlasIterator, Parseable,
};
use netlink_packet_sock_diag::constants::{INET_DIAG_INFO, SOCK_DIAG_BY_FAMILY};
use netlink_packet_sock_diag::inet::InetResponseHeader;
use std::net::SocketAddr;

/// `TCPDIAG_GETSOCK`: the pre-2.6.x message type older `ss` versions and
/// kernels used; its payload is the same `inet_diag_msg`.
pub const TCPDIAG_GETSOCK: u16 = 18;
const NLMSG_NOOP: u16 = 1;
const NLMSG_HDRLEN: usize = 16;
/// `sizeof(struct inet_diag_msg)`.
pub const INET_DIAG_MSG_LEN: usize = 72;

/// Offsets of the `tcp_info` fields we read (`include/uapi/linux/tcp.h`).
/// The crate's full `TcpInfo` parser insists on the newest struct size,
/// which older kernels do not send, so we take the few fields we need.
const TCPI_LAST_DATA_SENT: usize = 44;
const TCPI_LAST_DATA_RECV: usize = 52;
const TCPI_LAST_ACK_RECV: usize = 56;

/// A netlink message that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at byte offset {offset}: {reason}")]
pub struct DecodeError {
    pub offset: usize,
    pub reason: String,
}

/// One decoded netlink message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Socket {
        socket: Socket,
        /// The kernel set `NLM_F_DUMP_INTR`: the table changed while being
        /// dumped, and the dump may be inconsistent.
        interrupted: bool,
    },
    /// End of one family's dump.
    Done { interrupted: bool },
    /// `NLMSG_ERROR` with a non-zero errno (positive, e.g. `EPERM` = 1).
    Error { errno: i32 },
    /// An `NLMSG_DONE` carrying an errno: the dump stopped part-way.
    DumpFailed { errno: i32 },
}

/// Walks `buf`, a concatenation of netlink messages, calling `f` for each.
/// `base` is the offset of `buf` in its file or stream, for error messages.
pub fn decode_messages(
    buf: &[u8],
    base: usize,
    mut f: impl FnMut(Message, usize),
) -> Result<(), DecodeError> {
    let mut pos = 0;
    while pos < buf.len() {
        let offset = base + pos;
        let rest = &buf[pos..];
        let err = |reason: String| DecodeError { offset, reason };
        if rest.len() < NLMSG_HDRLEN {
            return Err(err(format!(
                "truncated netlink header: {} bytes left, a header needs {NLMSG_HDRLEN}",
                rest.len()
            )));
        }
        let msg = NetlinkBuffer::new_checked(rest).map_err(|_| {
            let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]);
            if (len as usize) < NLMSG_HDRLEN {
                err(format!(
                    "netlink message length {len} is smaller than its {NLMSG_HDRLEN}-byte header"
                ))
            } else {
                err(format!(
                    "netlink message length {len} runs past the end of the data ({} bytes left)",
                    rest.len()
                ))
            }
        })?;
        let len = msg.length() as usize;
        let interrupted = msg.flags() & NLM_F_DUMP_INTR != 0;
        let payload = &rest[NLMSG_HDRLEN..len];
        match msg.message_type() {
            SOCK_DIAG_BY_FAMILY | TCPDIAG_GETSOCK => {
                let socket = decode_inet_msg(payload).map_err(err)?;
                f(
                    Message::Socket {
                        socket,
                        interrupted,
                    },
                    offset,
                );
            }
            NLMSG_DONE => {
                // A dump that fails part-way (no handler: -ENOENT, out of
                // memory: -ENOMEM) ends with the error in NLMSG_DONE's
                // payload, not in an NLMSG_ERROR: what came before is partial.
                if let Some(b) = payload.get(..4) {
                    let code = i32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
                    if code < 0 {
                        f(
                            Message::DumpFailed {
                                errno: code.saturating_neg(),
                            },
                            offset,
                        );
                    }
                }
                f(Message::Done { interrupted }, offset)
            }
            NLMSG_ERROR => {
                let e = ErrorBuffer::new_checked(payload)
                    .map_err(|_| err("truncated NLMSG_ERROR message".to_string()))?;
                let code = e.code().map(|c| c.get()).unwrap_or(0);
                if code != 0 {
                    f(
                        Message::Error {
                            errno: code.saturating_neg(),
                        },
                        offset,
                    );
                }
            }
            NLMSG_NOOP => {}
            other => {
                return Err(err(format!(
                    "unexpected netlink message type {other} (not a sock_diag reply)"
                )));
            }
        }
        // Messages are aligned to 4 bytes (NLMSG_ALIGN).
        pos += (len + 3) & !3;
    }
    Ok(())
}

/// Decodes one `inet_diag_msg` and the attributes that follow it.
pub fn decode_inet_msg(payload: &[u8]) -> Result<Socket, String> {
    if payload.len() < INET_DIAG_MSG_LEN {
        return Err(format!(
            "inet_diag_msg payload is {} bytes, shorter than the {INET_DIAG_MSG_LEN} it needs",
            payload.len()
        ));
    }
    let hdr = InetResponseHeader::parse(&payload[..INET_DIAG_MSG_LEN])
        .map_err(|e| format!("invalid inet_diag_msg: {e}"))?;
    let state = TcpState::from_number(hdr.state)
        .ok_or_else(|| format!("invalid TCP state number {}", hdr.state))?;
    // The crate folds timer/expires/retrans into an enum; read the raw
    // bytes so TIME_WAIT keeps its remaining time.
    let timer = Timer::from_number(payload[2]);
    let retrans = payload[3];
    let expires_ms = u32::from_ne_bytes([payload[52], payload[53], payload[54], payload[55]]);
    let id = &hdr.socket_id;
    let mut tcp_info = None;
    for nla in NlasIterator::new(&payload[INET_DIAG_MSG_LEN..]) {
        let nla = nla.map_err(|e| format!("invalid attribute after inet_diag_msg: {e}"))?;
        if nla.kind() == INET_DIAG_INFO && tcp_info.is_none() {
            tcp_info = tcp_ages(nla.value());
        }
    }
    Ok(Socket {
        state,
        local: SocketAddr::new(id.source_address, id.source_port).into(),
        peer: SocketAddr::new(id.destination_address, id.destination_port).into(),
        timer,
        expires_ms,
        retrans,
        recv_q: hdr.recv_queue,
        send_q: hdr.send_queue,
        uid: hdr.uid,
        inode: hdr.inode,
        cookie: u64::from_ne_bytes(id.cookie),
        iface: id.interface_id,
        tcp_info,
        pid: None,
        fd: None,
    })
}

fn tcp_ages(info: &[u8]) -> Option<TcpAges> {
    let field = |at: usize| -> Option<u32> {
        let b = info.get(at..at + 4)?;
        Some(u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
    };
    Some(TcpAges {
        last_data_sent_ms: field(TCPI_LAST_DATA_SENT)?,
        last_data_recv_ms: field(TCPI_LAST_DATA_RECV)?,
        last_ack_recv_ms: field(TCPI_LAST_ACK_RECV)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_msg(code: i32) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&36u32.to_ne_bytes());
        v.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        v.extend_from_slice(&[0u8; 10]);
        v.extend_from_slice(&code.to_ne_bytes());
        v.extend_from_slice(&[0u8; 16]);
        v
    }

    #[test]
    fn nlmsg_error_with_extreme_codes_does_not_overflow() {
        // Found by the netlink_decode fuzz target: -i32::MIN overflowed.
        for (code, want) in [(-1, 1), (i32::MIN, i32::MAX), (i32::MAX, -i32::MAX)] {
            let mut got = Vec::new();
            decode_messages(&error_msg(code), 0, |m, _| got.push(m)).unwrap();
            assert_eq!(got, vec![Message::Error { errno: want }], "code {code}");
        }
        let mut got = Vec::new();
        decode_messages(&error_msg(0), 0, |m, _| got.push(m)).unwrap();
        assert!(got.is_empty(), "an ACK is not an error");
    }

    #[test]
    fn an_error_in_nlmsg_done_is_reported() {
        let done = |code: i32| {
            let mut v = Vec::new();
            v.extend_from_slice(&20u32.to_ne_bytes());
            v.extend_from_slice(&NLMSG_DONE.to_ne_bytes());
            v.extend_from_slice(&[0u8; 10]);
            v.extend_from_slice(&code.to_ne_bytes());
            v
        };
        let mut got = Vec::new();
        decode_messages(&done(-2), 0, |m, _| got.push(m)).unwrap();
        assert_eq!(
            got,
            vec![
                Message::DumpFailed { errno: 2 },
                Message::Done { interrupted: false }
            ]
        );
        got.clear();
        decode_messages(&done(0), 0, |m, _| got.push(m)).unwrap();
        assert_eq!(got, vec![Message::Done { interrupted: false }]);
    }
}
