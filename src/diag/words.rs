//! Words every rule shares, written once: who holds the sockets, where
//! they point, counts with their nouns.

use super::report::Direction;
use std::fmt;

/// `comm (pid N)`, or what is known of it.
pub struct Who<'a> {
    pub pid: Option<u32>,
    pub name: Option<&'a str>,
}

impl fmt::Display for Who<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.pid, self.name) {
            (Some(p), Some(c)) => write!(f, "{c} (pid {p})"),
            (Some(p), None) => write!(f, "pid {p}"),
            _ => f.write_str("an unidentified process"),
        }
    }
}

pub fn who(pid: Option<u32>, name: Option<&str>) -> Who<'_> {
    Who { pid, name }
}

/// `inbound on port 8080`, `to 10.0.0.5:5432`, `to peers on port 5432`.
pub struct Place<'a> {
    pub direction: Direction,
    pub port: u16,
    pub peers: &'a [String],
}

impl fmt::Display for Place<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.direction, self.peers) {
            (Direction::Inbound, _) => write!(f, "inbound on port {}", self.port),
            (Direction::Outbound, [one]) => write!(f, "to {one}"),
            (Direction::Outbound, _) => write!(f, "to peers on port {}", self.port),
        }
    }
}

/// `1 socket`, `3 sockets`.
pub fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}
