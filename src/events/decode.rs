//! Raw records of the four TCP tracepoints into [`Event`]s, with every
//! field located through the event's `format` file. Pure.
//!
//! Tracepoints (include/trace/events/sock.h, include/trace/events/tcp.h):
//! `sock:inet_sock_set_state`, `tcp:tcp_receive_reset`,
//! `tcp:tcp_send_reset`, `tcp:tcp_destroy_sock`.

use super::format::{Field, Format};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The tracepoints read, as `events/<system>/<name>`.
pub const TRACEPOINTS: [(&str, &str); 4] = [
    ("sock", "inet_sock_set_state"),
    ("tcp", "tcp_receive_reset"),
    ("tcp", "tcp_send_reset"),
    ("tcp", "tcp_destroy_sock"),
];

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A state change (kernel state numbers, include/net/tcp_states.h).
    State { old: u8, new: u8 },
    /// An RST arrived for this socket.
    ResetReceived,
    /// This host sent an RST; `state` is the socket's state (0 unknown).
    ResetSent { state: u8 },
    /// The socket was destroyed (its last reference gone).
    Destroy,
}

/// One decoded event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Trace clock (CLOCK_MONOTONIC) nanoseconds.
    pub ts: u64,
    pub kind: Kind,
    /// The thread on the CPU (`common_pid`).
    pub tid: u32,
    /// Not in an interrupt (no hardirq, softirq or NMI flag): the thread
    /// on the CPU acted on the socket itself.
    pub process_context: bool,
    /// The kernel's socket address (0 when none).
    pub skaddr: u64,
    pub local: SocketAddr,
    pub peer: SocketAddr,
    pub cookie: Option<u64>,
}

/// `TRACE_FLAG_HARDIRQ | TRACE_FLAG_SOFTIRQ | TRACE_FLAG_NMI`
/// (include/linux/trace_events.h, enum trace_flag_type).
const INTERRUPT_FLAGS: u8 = 0x08 | 0x10 | 0x40;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const IPPROTO_TCP: u64 = 6;

#[derive(Debug, Clone)]
struct Common {
    flags: Field,
    pid: Field,
}

#[derive(Debug, Clone)]
struct Tuple {
    sport: Field,
    dport: Field,
    family: Field,
    saddr: Field,
    daddr: Field,
    saddr_v6: Field,
    daddr_v6: Field,
}

#[derive(Debug, Clone)]
enum Layout {
    SetState {
        skaddr: Field,
        old: Field,
        new: Field,
        protocol: Field,
        tuple: Tuple,
    },
    Cookie {
        reset: bool,
        skaddr: Field,
        cookie: Field,
        tuple: Tuple,
    },
    SendReset {
        skaddr: Field,
        state: Option<Field>,
        src: Field,
        dst: Field,
    },
}

/// Decodes records of the four tracepoints, by `common_type`.
#[derive(Debug, Clone)]
pub struct Decoder {
    type_field: Field,
    common: Common,
    layouts: Vec<(u16, Layout)>,
}

fn need<'a>(f: &'a Format, name: &str) -> Result<&'a Field, String> {
    f.field(name)
        .ok_or_else(|| format!("{} has no '{name}' field", f.name))
}

fn tuple(f: &Format) -> Result<Tuple, String> {
    Ok(Tuple {
        sport: need(f, "sport")?.clone(),
        dport: need(f, "dport")?.clone(),
        family: need(f, "family")?.clone(),
        saddr: need(f, "saddr")?.clone(),
        daddr: need(f, "daddr")?.clone(),
        saddr_v6: need(f, "saddr_v6")?.clone(),
        daddr_v6: need(f, "daddr_v6")?.clone(),
    })
}

impl Decoder {
    /// From the four `format` files; an error names the missing field.
    pub fn new(formats: &[Format]) -> Result<Decoder, String> {
        let first = formats.first().ok_or("no event formats")?;
        let type_field = need(first, "common_type")?.clone();
        let common = Common {
            flags: need(first, "common_flags")?.clone(),
            pid: need(first, "common_pid")?.clone(),
        };
        let mut layouts = Vec::new();
        for f in formats {
            if need(f, "common_type")? != &type_field {
                return Err(format!("{}: common fields differ between events", f.name));
            }
            let layout = match f.name.as_str() {
                "inet_sock_set_state" => Layout::SetState {
                    skaddr: need(f, "skaddr")?.clone(),
                    old: need(f, "oldstate")?.clone(),
                    new: need(f, "newstate")?.clone(),
                    protocol: need(f, "protocol")?.clone(),
                    tuple: tuple(f)?,
                },
                "tcp_receive_reset" | "tcp_destroy_sock" => Layout::Cookie {
                    reset: f.name == "tcp_receive_reset",
                    skaddr: need(f, "skaddr")?.clone(),
                    cookie: need(f, "sock_cookie")?.clone(),
                    tuple: tuple(f)?,
                },
                "tcp_send_reset" => Layout::SendReset {
                    skaddr: need(f, "skaddr")?.clone(),
                    state: f.field("state").cloned(),
                    src: need(f, "saddr")?.clone(),
                    dst: need(f, "daddr")?.clone(),
                },
                other => return Err(format!("unexpected event format '{other}'")),
            };
            layouts.push((f.id, layout));
        }
        Ok(Decoder {
            type_field,
            common,
            layouts,
        })
    }

    /// Decodes one record at trace time `ts`; `None` for a record of
    /// another event, a non-TCP state change, or a record too short.
    pub fn decode(&self, ts: u64, rec: &[u8]) -> Option<Event> {
        let id = uint(rec, &self.type_field)? as u16;
        let (_, layout) = self.layouts.iter().find(|(i, _)| *i == id)?;
        let flags = uint(rec, &self.common.flags)? as u8;
        let tid = uint(rec, &self.common.pid)? as u32;
        let process_context = flags & INTERRUPT_FLAGS == 0 && tid != 0;
        let (kind, skaddr, local, peer, cookie) = match layout {
            Layout::SetState {
                skaddr,
                old,
                new,
                protocol,
                tuple: t,
            } => {
                if uint(rec, protocol)? != IPPROTO_TCP {
                    return None;
                }
                let (l, p) = addrs(rec, t)?;
                let kind = Kind::State {
                    old: uint(rec, old)? as u8,
                    new: uint(rec, new)? as u8,
                };
                (kind, uint(rec, skaddr)?, l, p, None)
            }
            Layout::Cookie {
                reset,
                skaddr,
                cookie,
                tuple: t,
            } => {
                let (l, p) = addrs(rec, t)?;
                let kind = if *reset {
                    Kind::ResetReceived
                } else {
                    Kind::Destroy
                };
                (kind, uint(rec, skaddr)?, l, p, Some(uint(rec, cookie)?))
            }
            Layout::SendReset {
                skaddr,
                state,
                src,
                dst,
            } => {
                let st = match state {
                    Some(f) => uint(rec, f)? as u8,
                    None => 0,
                };
                let l = sockaddr(bytes(rec, src)?)?;
                let p = sockaddr(bytes(rec, dst)?)?;
                (
                    Kind::ResetSent { state: st },
                    uint(rec, skaddr)?,
                    l,
                    p,
                    None,
                )
            }
        };
        Some(Event {
            ts,
            kind,
            tid,
            process_context,
            skaddr,
            local,
            peer,
            cookie,
        })
    }
}

fn bytes<'a>(rec: &'a [u8], f: &Field) -> Option<&'a [u8]> {
    rec.get(f.offset..f.offset.checked_add(f.size)?)
}

/// An unsigned field of 1, 2, 4 or 8 bytes, host byte order.
fn uint(rec: &[u8], f: &Field) -> Option<u64> {
    let b = bytes(rec, f)?;
    Some(match f.size {
        1 => u64::from(b[0]),
        2 => u64::from(u16::from_ne_bytes(b.try_into().ok()?)),
        4 => u64::from(u32::from_ne_bytes(b.try_into().ok()?)),
        8 => u64::from_ne_bytes(b.try_into().ok()?),
        _ => return None,
    })
}

fn addrs(rec: &[u8], t: &Tuple) -> Option<(SocketAddr, SocketAddr)> {
    // The ports are stored in host order (ntohs in TP_fast_assign).
    let sport = uint(rec, &t.sport)? as u16;
    let dport = uint(rec, &t.dport)? as u16;
    let ip = |v4: &Field, v6: &Field| -> Option<IpAddr> {
        match uint(rec, &t.family)? as u16 {
            AF_INET => {
                let b: [u8; 4] = bytes(rec, v4)?.try_into().ok()?;
                Some(IpAddr::V4(Ipv4Addr::from(b)))
            }
            AF_INET6 => {
                let b: [u8; 16] = bytes(rec, v6)?.try_into().ok()?;
                Some(IpAddr::V6(Ipv6Addr::from(b)))
            }
            _ => None,
        }
    };
    Some((
        SocketAddr::new(ip(&t.saddr, &t.saddr_v6)?, sport),
        SocketAddr::new(ip(&t.daddr, &t.daddr_v6)?, dport),
    ))
}

/// A `struct sockaddr_in` / `sockaddr_in6` as `tcp_send_reset` stores it
/// (family in host order, port and address in network order).
fn sockaddr(b: &[u8]) -> Option<SocketAddr> {
    let family = u16::from_ne_bytes(b.get(0..2)?.try_into().ok()?);
    let port = u16::from_be_bytes(b.get(2..4)?.try_into().ok()?);
    match family {
        AF_INET => {
            let a: [u8; 4] = b.get(4..8)?.try_into().ok()?;
            Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(a)), port))
        }
        AF_INET6 => {
            let a: [u8; 16] = b.get(8..24)?.try_into().ok()?;
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(a)), port))
        }
        _ => None,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::events::format::PageHeader;
    use crate::events::ring::parse_page;

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("fixtures/tracefs")
                .join(name),
        )
        .unwrap()
    }

    pub(crate) fn decoder() -> Decoder {
        let formats: Vec<Format> = TRACEPOINTS
            .iter()
            .map(|(_, n)| {
                Format::parse(&String::from_utf8(fixture(&format!("{n}.format"))).unwrap()).unwrap()
            })
            .collect();
        Decoder::new(&formats).unwrap()
    }

    /// The fixture page decoded: two loopback connections in a private
    /// namespace, the second closed by the server with SO_LINGER {1,0}.
    pub(crate) fn fixture_events() -> Vec<Event> {
        let raw = fixture("cpu0.page");
        let hdr = PageHeader::parse(&String::from_utf8(fixture("header_page")).unwrap()).unwrap();
        let d = decoder();
        let page = parse_page(&raw, &hdr).unwrap();
        page.records
            .iter()
            .filter_map(|r| d.decode(r.ts, r.data))
            .collect()
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn decodes_the_captured_page() {
        let ev = fixture_events();
        assert_eq!(ev.len(), 25);
        let states: Vec<(u8, u8, bool)> = ev
            .iter()
            .filter_map(|e| match e.kind {
                Kind::State { old, new } => Some((old, new, e.process_context)),
                _ => None,
            })
            .collect();
        // LISTEN, connect, then the first close by the client: in process
        // context; its peer's CLOSE_WAIT in softirq.
        assert_eq!(states[0], (7, 10, true));
        assert_eq!(states[1], (7, 2, true));
        let fin = ev
            .iter()
            .find(|e| e.kind == Kind::State { old: 1, new: 4 })
            .unwrap();
        assert!(fin.process_context);
        assert_eq!(fin.peer, sa("127.0.0.1:8080"));
        assert_eq!(fin.local.ip(), sa("127.0.0.1:1").ip());
        let cw = ev
            .iter()
            .find(|e| e.kind == Kind::State { old: 1, new: 8 })
            .unwrap();
        assert!(!cw.process_context);
        assert_eq!(cw.local, sa("127.0.0.1:8080"));
        assert_eq!(cw.peer, fin.local);
        // The linger-0 close: a reset sent from 8080, received by the client.
        let sent = ev
            .iter()
            .find(|e| matches!(e.kind, Kind::ResetSent { .. }))
            .unwrap();
        assert_eq!(sent.local, sa("127.0.0.1:8080"));
        assert!(sent.process_context);
        let got = ev.iter().find(|e| e.kind == Kind::ResetReceived).unwrap();
        assert_eq!(got.peer, sa("127.0.0.1:8080"));
        assert_eq!(got.local, sent.peer);
        assert!(got.cookie.is_some_and(|c| c != 0));
        // Its destroy, when the client closed the fd, carries the same cookie.
        let d = ev
            .iter()
            .rfind(|e| e.kind == Kind::Destroy && e.local == got.local)
            .unwrap();
        assert_eq!(d.cookie, got.cookie);
        assert_eq!(d.skaddr, got.skaddr);
        assert!(d.ts > got.ts);
    }

    #[test]
    fn missing_fields_are_named() {
        let mut f = Format::parse(&String::from_utf8(fixture("tcp_receive_reset.format")).unwrap())
            .unwrap();
        f.fields.retain(|x| x.name != "sock_cookie");
        let err = Decoder::new(&[f]).unwrap_err();
        assert!(err.contains("sock_cookie"), "{err}");
    }

    #[test]
    fn short_and_foreign_records_are_skipped() {
        let d = decoder();
        assert_eq!(d.decode(0, &[0xef, 0x08, 0, 0]), None);
        assert_eq!(d.decode(0, &[1, 0, 0, 0, 0, 0, 0, 0]), None);
    }
}
