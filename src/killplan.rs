//! What `cwdiag kill` was shown and may act on: the plan a dry run prints
//! with `--json`, read back by `kill --plan FILE`, and the sockets given by
//! `--cookie`. Pure: matching a plan against a fresh dump touches nothing.
//!
//! A socket cookie (`sock_gen_cookie`, net/core/sock_diag.c) is a 64-bit
//! counter value given to a socket once and never reused while the kernel
//! runs, so a cookie names one socket. A plan also keeps the socket's state
//! and 4-tuple: a reviewed socket is destroyed only if a socket with its
//! cookie still exists with the same state and addresses.

use crate::model::{Endpoint, Socket, TcpState};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `kind` of a plan document.
pub const KIND: &str = "cwdiag-kill-plan";

/// Largest plan file read (a million sockets is about 150 MB).
pub const MAX_PLAN: usize = 256 * 1024 * 1024;

/// The dry run's selection, as `kill --json` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KillPlan {
    pub schema_version: u32,
    pub kind: String,
    pub sockets: Vec<Planned>,
}

/// One reviewed socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Planned {
    pub cookie: u64,
    pub state: TcpState,
    pub local: Endpoint,
    pub peer: Endpoint,
    /// Owner when known, for people reading the plan; not matched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comm: Option<String>,
}

impl KillPlan {
    pub fn of(socks: &[&Socket], comm: impl Fn(&Socket) -> Option<String>) -> KillPlan {
        KillPlan {
            schema_version: crate::model::SCHEMA_VERSION,
            kind: KIND.to_string(),
            sockets: socks
                .iter()
                .map(|s| Planned {
                    cookie: s.cookie,
                    state: s.state,
                    local: s.local,
                    peer: s.peer,
                    pid: s.pid,
                    comm: comm(s),
                })
                .collect(),
        }
    }
}

/// Parses a plan file's bytes; `name` is used in error messages.
pub fn parse(bytes: &[u8], name: &str) -> Result<KillPlan, String> {
    let plan: KillPlan = serde_json::from_slice(bytes).map_err(|e| {
        format!("{name}: not a cwdiag kill plan (the output of `cwdiag kill --json`): {e}")
    })?;
    if plan.kind != KIND {
        return Err(format!(
            "{name}: not a cwdiag kill plan: kind is \"{}\", expected \"{KIND}\"",
            plan.kind.escape_default()
        ));
    }
    if plan.schema_version != crate::model::SCHEMA_VERSION {
        return Err(format!(
            "{name}: unsupported schema_version {} (this cwdiag reads {})",
            plan.schema_version,
            crate::model::SCHEMA_VERSION
        ));
    }
    if let Some(p) = plan.sockets.iter().find(|p| p.state == TcpState::Listen) {
        return Err(format!(
            "{name}: the plan lists a LISTEN socket ({}, cookie {:#x}): destroying a listener takes the service down",
            p.local, p.cookie
        ));
    }
    if let Some(p) = plan.sockets.iter().find(|p| p.cookie == 0) {
        return Err(format!(
            "{name}: the plan lists a socket without a cookie ({} -> {}): only sock_diag dumps identify sockets",
            p.local, p.peer
        ));
    }
    Ok(plan)
}

/// Parses a `--cookie` value: hex with `0x` (as `kill` prints it) or decimal.
pub fn parse_cookie(s: &str) -> Result<u64, String> {
    let v = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    };
    match v {
        Ok(0) => Err("cookie 0 names no socket".to_string()),
        Ok(c) => Ok(c),
        Err(_) => Err(format!(
            "invalid cookie '{s}': use the COOKIE column of the dry run (e.g. 0x1f3a)"
        )),
    }
}

/// What became of the reviewed sockets in a fresh dump.
#[derive(Debug, Default)]
pub struct Matched<'a> {
    /// Still there, same cookie, state and 4-tuple: may be destroyed.
    pub present: Vec<&'a Socket>,
    /// No socket with the cookie any more.
    pub gone: Vec<u64>,
    /// The cookie is there but its state or addresses differ (or it is a
    /// listener now): left alone.
    pub changed: Vec<(u64, String)>,
}

/// Matches reviewed sockets against `live`. `planned` entries without a
/// state or addresses (from `--cookie`) match on the cookie alone.
pub fn matches<'a>(planned: &[(u64, Option<&Planned>)], live: &'a [Socket]) -> Matched<'a> {
    let by_cookie: BTreeMap<u64, &Socket> = live
        .iter()
        .filter(|s| s.cookie != 0)
        .map(|s| (s.cookie, s))
        .collect();
    let mut m = Matched::default();
    let mut seen = std::collections::BTreeSet::new();
    for &(cookie, plan) in planned {
        if !seen.insert(cookie) {
            continue;
        }
        let Some(&s) = by_cookie.get(&cookie) else {
            m.gone.push(cookie);
            continue;
        };
        if s.state == TcpState::Listen {
            m.changed.push((cookie, "it is a listener".to_string()));
            continue;
        }
        if let Some(p) = plan {
            if p.state != s.state {
                m.changed.push((
                    cookie,
                    format!(
                        "state {} now, {} when reviewed",
                        s.state.name(),
                        p.state.name()
                    ),
                ));
                continue;
            }
            if p.local != s.local || p.peer != s.peer {
                m.changed.push((
                    cookie,
                    format!(
                        "{} -> {} now, {} -> {} when reviewed",
                        s.local, s.peer, p.local, p.peer
                    ),
                ));
                continue;
            }
        }
        m.present.push(s);
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sock(cookie: u64, state: TcpState, local: &str, peer: &str) -> Socket {
        Socket {
            state,
            local: local.parse::<std::net::SocketAddr>().unwrap().into(),
            peer: peer.parse::<std::net::SocketAddr>().unwrap().into(),
            timer: crate::model::Timer::Off,
            expires_ms: 0,
            retrans: 0,
            recv_q: 0,
            send_q: 0,
            uid: 0,
            inode: 1,
            cookie,
            iface: 0,
            tcp_info: None,
            pid: None,
            fd: None,
        }
    }

    #[test]
    fn only_the_same_cookie_state_and_tuple_match() {
        let cw = TcpState::CloseWait;
        let reviewed = [
            sock(1, cw, "127.0.0.1:80", "127.0.0.1:5001"),
            sock(2, cw, "127.0.0.1:80", "127.0.0.1:5002"),
            sock(3, cw, "127.0.0.1:80", "127.0.0.1:5003"),
            sock(4, cw, "127.0.0.1:80", "127.0.0.1:5004"),
        ];
        let plan = KillPlan::of(&reviewed.iter().collect::<Vec<_>>(), |_| None);
        let text = serde_json::to_string(&plan).unwrap();
        let back = parse(text.as_bytes(), "plan").unwrap();
        assert_eq!(back, plan);
        let live = [
            sock(1, cw, "127.0.0.1:80", "127.0.0.1:5001"),
            sock(3, TcpState::LastAck, "127.0.0.1:80", "127.0.0.1:5003"),
            sock(4, cw, "127.0.0.1:80", "127.0.0.1:6004"),
            // A new socket on a reviewed 4-tuple, with a new cookie.
            sock(9, cw, "127.0.0.1:80", "127.0.0.1:5002"),
        ];
        let planned: Vec<_> = back.sockets.iter().map(|p| (p.cookie, Some(p))).collect();
        let m = matches(&planned, &live);
        assert_eq!(m.present.iter().map(|s| s.cookie).collect::<Vec<_>>(), [1]);
        assert_eq!(m.gone, [2]);
        assert_eq!(m.changed.iter().map(|c| c.0).collect::<Vec<_>>(), [3, 4]);

        // --cookie: the cookie alone, never a listener.
        let live = [sock(7, TcpState::Listen, "0.0.0.0:80", "0.0.0.0:0")];
        let m = matches(&[(7, None), (8, None)], &live);
        assert!(m.present.is_empty());
        assert_eq!(m.gone, [8]);
        assert_eq!(m.changed.len(), 1);
    }

    #[test]
    fn bad_plans_and_cookies_are_refused_with_one_line() {
        for (text, want) in [
            ("", "not a cwdiag kill plan"),
            ("[]", "not a cwdiag kill plan"),
            (r#"{"schema_version":1,"kind":"x","sockets":[]}"#, "kind is"),
            (
                r#"{"schema_version":9,"kind":"cwdiag-kill-plan","sockets":[]}"#,
                "schema_version 9",
            ),
            (
                r#"{"schema_version":1,"kind":"cwdiag-kill-plan","sockets":[],"extra":1}"#,
                "unknown field",
            ),
            (
                r#"{"schema_version":1,"kind":"cwdiag-kill-plan","sockets":[{"cookie":5,"state":"LISTEN","local":"0.0.0.0:1","peer":"0.0.0.0:0"}]}"#,
                "LISTEN",
            ),
            (
                r#"{"schema_version":1,"kind":"cwdiag-kill-plan","sockets":[{"cookie":0,"state":"CLOSE_WAIT","local":"1.2.3.4:1","peer":"1.2.3.4:2"}]}"#,
                "without a cookie",
            ),
            (
                r#"{"schema_version":1,"kind":"cwdiag-kill-plan","sockets":[{"cookie":5,"state":"CLOSE_WAIT","local":"nope","peer":"1.2.3.4:2"}]}"#,
                "not a cwdiag kill plan",
            ),
        ] {
            let e = parse(text.as_bytes(), "p.json").unwrap_err();
            assert!(e.contains(want) && e.starts_with("p.json: "), "{text}: {e}");
            assert_eq!(e.lines().count(), 1, "{e}");
        }
        assert_eq!(parse_cookie("0x1f").unwrap(), 31);
        assert_eq!(parse_cookie("31").unwrap(), 31);
        assert!(parse_cookie("0").is_err());
        assert!(parse_cookie("0xzz").is_err());
        assert!(parse_cookie("-1").is_err());
    }
}
