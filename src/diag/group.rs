//! Grouping: sockets per (state, owner, direction, port, peer), the
//! direction of a connection, and the arithmetic of TIME_WAIT and ports.

use super::closes::{Closes, SampledCloses};
use super::host::{Host, Sysctl};
use super::types::{DEFAULT_PORT_BUDGET, Direction, Group, Owner, RecvQSplit};
use crate::model::{Attribution, Endpoint, Snapshot, Socket, TcpState};
use rustc_hash::{FxHashMap, FxHashSet};

/// Local ports this host listens on, whatever the filters select.
pub fn listen_ports(snap: &Snapshot) -> FxHashSet<u16> {
    snap.sockets
        .iter()
        .filter(|s| s.state == TcpState::Listen)
        .map(|s| s.local.port())
        .collect()
}

/// Inbound when the local port is a listening one: this host is the server.
pub fn direction(s: &Socket, listen_ports: &FxHashSet<u16>) -> Direction {
    if s.state == TcpState::Listen || listen_ports.contains(&s.local.port()) {
        Direction::Inbound
    } else {
        Direction::Outbound
    }
}

pub fn owner_of(s: &Socket, attr: &Attribution) -> Owner {
    if s.pid.is_some() {
        Owner::Process
    } else if s.inode == 0 {
        Owner::None
    } else if attr.wanted_sockets > 0 && attributed_by_default(s.state) {
        Owner::Unknown
    } else {
        Owner::NotResolved
    }
}

pub use crate::model::attributed_by_default;

type GroupKey = (
    TcpState,
    Option<u32>,
    Direction,
    u16,
    Option<Endpoint>,
    Owner,
);

/// The groups of `selected`, biggest first.
/// TIME_WAIT groups carry their closes: measured across samples when
/// `sampled` is given, else read from the remaining times.
pub fn groups(
    snap: &Snapshot,
    selected: &[&Socket],
    listen: &FxHashSet<u16>,
    sampled: Option<&SampledCloses>,
) -> Vec<Group> {
    let mut buckets: FxHashMap<GroupKey, Vec<&Socket>> = Default::default();
    for s in selected {
        let direction = direction(s, listen);
        let (port, peer) = match direction {
            Direction::Inbound => (s.local.port(), None),
            Direction::Outbound => (s.peer.port(), Some(s.peer)),
        };
        let owner = owner_of(s, &snap.attribution);
        buckets
            .entry((s.state, s.pid, direction, port, peer, owner))
            .or_default()
            .push(s);
    }
    let mut groups: Vec<Group> = buckets
        .into_iter()
        .map(|((state, pid, direction, port, peer, owner), socks)| {
            let process = pid.and_then(|p| snap.processes.get(&p));
            let mut g = build(state, owner, direction, port, peer, &socks, sampled);
            g.pid = pid;
            g.comm = process.map(|p| p.comm.clone());
            g.container = process.and_then(|p| p.container.clone());
            g.pod_uid = process.and_then(|p| p.pod_uid.clone());
            g
        })
        .collect();
    groups.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then(a.state.cmp(&b.state))
            .then(a.pid.cmp(&b.pid))
            .then(a.port.cmp(&b.port))
            .then(a.peer.cmp(&b.peer))
    });
    groups
}

fn build(
    state: TcpState,
    owner: Owner,
    direction: Direction,
    port: u16,
    peer: Option<Endpoint>,
    socks: &[&Socket],
    sampled: Option<&SampledCloses>,
) -> Group {
    let mut recv_q = RecvQSplit::default();
    let mut ages: Vec<u32> = Vec::new();
    let mut ipv6 = 0;
    let mut bytes = 0u64;
    for s in socks {
        ipv6 += usize::from(s.is_ipv6());
        bytes += u64::from(s.recv_q);
        match s.recv_q {
            0 => recv_q.zero += 1,
            1 => recv_q.one += 1,
            _ => recv_q.more += 1,
        }
        if let (TcpState::CloseWait, Some(t)) = (state, s.tcp_info) {
            ages.push(t.last_ack_recv_ms);
        }
    }
    ages.sort_unstable();
    let tw = state == TcpState::TimeWait;
    let closes = tw.then(|| {
        sampled
            .and_then(|m| m.closes(|k| k.0 == direction && k.2 == port && k.3 == peer))
            .unwrap_or_else(|| Closes::from_timers(socks.iter().copied()))
    });
    Group {
        state,
        pid: None,
        comm: None,
        owner,
        direction,
        port,
        peer: peer.map(|p| p.to_string()),
        count: socks.len(),
        ipv4: socks.len() - ipv6,
        ipv6,
        recv_q_bytes: bytes,
        recv_q,
        oldest_age_ms: ages.last().copied(),
        median_age_ms: ages.get(ages.len() / 2).copied(),
        container: None,
        pod_uid: None,
        time_wait_left_s: tw.then(|| left_s(socks.iter().copied())),
        closes,
    }
}

/// TIME_WAIT sockets by seconds left, [0,10) .. [50,60]: bucket 5 holds
/// the closes of the last ten seconds.
pub fn left_s<'a>(socks: impl IntoIterator<Item = &'a Socket>) -> [usize; 6] {
    let mut h = [0usize; 6];
    for s in socks {
        h[(s.expires_ms / 10_000).min(5) as usize] += 1;
    }
    h
}

/// Ports per (source IP, destination) from `ip_local_port_range` minus
/// `ip_local_reserved_ports`, when the snapshot carries them.
pub fn port_budget(host: &Host) -> u32 {
    let Some(range) = host.sysctl(Sysctl::IpLocalPortRange) else {
        return DEFAULT_PORT_BUDGET;
    };
    let mut it = range
        .split_whitespace()
        .filter_map(|v| v.parse::<u32>().ok());
    let (Some(lo), Some(hi)) = (it.next(), it.next()) else {
        return DEFAULT_PORT_BUDGET;
    };
    if lo > hi {
        // The kernel refuses such a range; a crafted snapshot may not.
        return DEFAULT_PORT_BUDGET;
    }
    let reserved = host
        .sysctl(Sysctl::IpLocalReservedPorts)
        .map(|r| reserved_in(r, lo, hi))
        .unwrap_or(0);
    hi.saturating_sub(lo)
        .saturating_add(1)
        .saturating_sub(reserved)
}

/// Counts ports of a `ip_local_reserved_ports` list (`8080,9000-9100`)
/// that fall inside `lo..=hi`.
fn reserved_in(list: &str, lo: u32, hi: u32) -> u32 {
    list.split(',')
        .filter_map(|part| {
            let part = part.trim();
            let (a, b) = part.split_once('-').unwrap_or((part, part));
            let (a, b) = (a.trim().parse::<u32>().ok()?, b.trim().parse::<u32>().ok()?);
            let (a, b) = (a.max(lo), b.min(hi));
            (a <= b).then(|| (b - a).saturating_add(1))
        })
        .fold(0u32, u32::saturating_add)
}

pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::testkit::SnapBuilder;

    #[test]
    fn port_budget_subtracts_reserved_ports_in_range() {
        let s = SnapBuilder::new()
            .sysctl("net.ipv4.ip_local_port_range", "10000 10999")
            .sysctl(
                "net.ipv4.ip_local_reserved_ports",
                "8080,10100-10199,10990-11010",
            )
            .build();
        assert_eq!(port_budget(&Host::of(&s)), 1000 - 100 - 10);
        let bare = SnapBuilder::new().build();
        assert_eq!(port_budget(&Host::of(&bare)), DEFAULT_PORT_BUDGET);
        let reversed = SnapBuilder::new()
            .sysctl("net.ipv4.ip_local_port_range", "20000 10000")
            .build();
        assert_eq!(port_budget(&Host::of(&reversed)), DEFAULT_PORT_BUDGET);
    }

    #[test]
    fn groups_carry_the_closes_of_their_timers() {
        // 3000 closes spread over the last 9 s: counted within ~9 s, and
        // all in the last ten-second bucket.
        let s = SnapBuilder::new()
            .time_waits("10.0.0.1", "10.0.0.2:80", 3000, 9_000)
            .build();
        let sel: Vec<&Socket> = s.sockets.iter().collect();
        let g = &groups(&s, &sel, &listen_ports(&s), None)[0];
        assert_eq!(g.time_wait_left_s, Some([0, 0, 0, 0, 0, 3000]));
        let c = g.closes.unwrap();
        assert_eq!((c.count, c.window_s, c.sustained_per_s), (3000, 9.0, None));
    }
}
