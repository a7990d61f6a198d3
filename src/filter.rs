//! Socket filters shared by every command: state, port, pid, comm, peer,
//! family. Pure: they look at a socket and the owner the snapshot gives it.

use crate::model::{Socket, TcpState};
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

/// `--peer ADDR[:PORT]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerFilter {
    pub ip: IpAddr,
    pub port: Option<u16>,
}

impl FromStr for PeerFilter {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(sa) = s.parse::<SocketAddr>() {
            return Ok(PeerFilter {
                ip: sa.ip(),
                port: Some(sa.port()),
            });
        }
        let bare = s.trim_start_matches('[').trim_end_matches(']');
        bare.parse::<IpAddr>()
            .map(|ip| PeerFilter { ip, port: None })
            .map_err(|_| format!("invalid peer '{s}': expected ADDR or ADDR:PORT, e.g. 10.0.0.5:5432 or [2001:db8::1]:443"))
    }
}

/// `--family 4|6`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl FromStr for Family {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "4" | "inet" | "ipv4" => Ok(Family::V4),
            "6" | "inet6" | "ipv6" => Ok(Family::V6),
            _ => Err(format!("invalid family '{s}': expected 4 or 6")),
        }
    }
}

/// Which sockets a command looks at. Empty lists match everything.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub states: Vec<TcpState>,
    pub ports: Vec<u16>,
    pub pids: Vec<u32>,
    pub comms: Vec<String>,
    pub peer: Option<PeerFilter>,
    pub family: Option<Family>,
}

impl Filter {
    /// True when only the state can exclude sockets: the kernel mask is
    /// then the whole filter.
    pub fn needs_owner(&self) -> bool {
        !self.pids.is_empty() || !self.comms.is_empty()
    }

    /// Does `s` (owned by `comm`, if known) pass?
    pub fn matches(&self, s: &Socket, comm: Option<&str>) -> bool {
        (self.states.is_empty() || self.states.contains(&s.state))
            && (self.ports.is_empty()
                || self.ports.contains(&s.local.port())
                || self.ports.contains(&s.peer.port()))
            && (self.pids.is_empty() || s.pid.is_some_and(|p| self.pids.contains(&p)))
            && (self.comms.is_empty() || comm.is_some_and(|c| self.comms.iter().any(|w| w == c)))
            && self.peer.as_ref().is_none_or(|p| {
                same_ip(p.ip, s.peer.ip()) && p.port.is_none_or(|port| port == s.peer.port())
            })
            && match self.family {
                None => true,
                Some(Family::V4) => !s.is_ipv6(),
                Some(Family::V6) => s.is_ipv6(),
            }
    }
}

/// Compares addresses, treating `::ffff:a.b.c.d` as `a.b.c.d`.
fn same_ip(a: IpAddr, b: IpAddr) -> bool {
    a.to_canonical() == b.to_canonical()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_peers() {
        assert_eq!(
            "10.0.0.5:5432".parse::<PeerFilter>().unwrap().port,
            Some(5432)
        );
        assert_eq!("10.0.0.5".parse::<PeerFilter>().unwrap().port, None);
        assert_eq!("[::1]:80".parse::<PeerFilter>().unwrap().port, Some(80));
        assert_eq!("::1".parse::<PeerFilter>().unwrap().port, None);
        assert!("nope".parse::<PeerFilter>().is_err());
    }

    #[test]
    fn mapped_v4_peer_matches_v4_filter() {
        assert!(same_ip(
            "10.1.2.3".parse().unwrap(),
            "::ffff:10.1.2.3".parse().unwrap()
        ));
    }
}
