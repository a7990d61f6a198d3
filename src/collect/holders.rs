//! Every process behind a listener in trouble. A pre-fork server's master
//! and workers share one listening socket (one inode, held by each after
//! fork()), so the attribution walk, which stops at the first holder,
//! names only one of them. When a listener has children nobody accepted,
//! the owner's family (its parent, its children, their children) is
//! read: every holder of the listener is recorded, and so is who holds
//! the accepted connections on its port (ESTABLISHED ones are not
//! attributed by default), so the report can tell a hung master from a
//! saturated worker pool. SO_REUSEPORT listeners are separate sockets,
//! each found by the walk on its own. The listeners that local CLOSE_WAIT
//! sockets point at get their holders too: the server that closed them.

use super::procfs::ProcFs;
use crate::model::{Snapshot, TcpState};
use std::collections::{BTreeMap, HashMap, HashSet};

/// Processes read at most per listener port (a family larger than this
/// is cut, and the evidence says so by what it lists).
const MAX_FAMILY: usize = 256;

pub fn find(snap: &mut Snapshot, proc: &ProcFs) {
    // One pass over the table: ports with children nobody accepted,
    // listening ports, and the peer ports of CLOSE_WAIT connections.
    let mut troubled: HashSet<u16> = HashSet::new();
    let mut listening: HashSet<u16> = HashSet::new();
    let mut cw_peers: HashSet<u16> = HashSet::new();
    for s in &snap.sockets {
        match s.state {
            TcpState::Listen => {
                listening.insert(s.local.port());
            }
            TcpState::Established if s.inode == 0 => {
                troubled.insert(s.local.port());
            }
            TcpState::CloseWait => {
                if s.inode == 0 {
                    troubled.insert(s.local.port());
                }
                cw_peers.insert(s.peer.port());
            }
            _ => {}
        }
    }
    let peer_ports: HashSet<u16> = cw_peers.intersection(&listening).copied().collect();
    if troubled.is_empty() && peer_ports.is_empty() {
        return;
    }
    let owners: HashSet<u32> = snap
        .sockets
        .iter()
        .filter(|s| {
            s.state == TcpState::Listen
                && (troubled.contains(&s.local.port()) || peer_ports.contains(&s.local.port()))
        })
        .filter_map(|s| s.pid)
        .collect();
    if owners.is_empty() {
        return;
    }
    let parents = parent_pids(proc);
    let mut family: HashSet<u32> = HashSet::new();
    for &o in &owners {
        family.insert(o);
        if let Some(&pp) = parents.get(&o).filter(|&&pp| pp > 1) {
            family.insert(pp);
        }
    }
    // Children and grandchildren of everyone found so far.
    for _ in 0..2 {
        let more: Vec<u32> = parents
            .iter()
            .filter(|(_, pp)| family.contains(pp))
            .map(|(p, _)| *p)
            .collect();
        family.extend(more);
        if family.len() > MAX_FAMILY {
            break;
        }
    }
    // Inodes worth looking for: the listeners, and the accepted sockets
    // on those ports nobody is known to hold.
    let mut wanted: HashMap<u32, usize> = HashMap::new();
    for (i, s) in snap.sockets.iter().enumerate() {
        let port = s.local.port();
        if s.inode != 0
            && ((troubled.contains(&port) && (s.state == TcpState::Listen || s.pid.is_none()))
                || (peer_ports.contains(&port) && s.state == TcpState::Listen))
        {
            wanted.insert(s.inode, i);
        }
    }
    let mut shared: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    let mut comms: Vec<u32> = Vec::new();
    for &pid in family.iter().take(MAX_FAMILY) {
        let Some(fds) = proc.socket_fds(pid) else {
            continue;
        };
        for (fd, ino) in fds {
            let Some(&i) = wanted.get(&ino) else { continue };
            let s = &mut snap.sockets[i];
            if s.state == TcpState::Listen {
                if s.pid != Some(pid) {
                    let v = shared.entry(ino).or_default();
                    if !v.contains(&pid) {
                        v.push(pid);
                        comms.push(pid);
                    }
                }
            } else if s.pid.is_none() {
                s.pid = Some(pid);
                s.fd = Some(fd);
                comms.push(pid);
            }
        }
    }
    for v in shared.values_mut() {
        v.sort_unstable();
    }
    for pid in comms {
        snap.processes
            .entry(pid)
            .or_insert_with(|| crate::model::Process::named(proc.comm(pid).unwrap_or_default()));
    }
    snap.listener_holders = shared;
}

/// pid -> parent pid, from /proc/PID/stat (the field after the comm).
fn parent_pids(proc: &ProcFs) -> HashMap<u32, u32> {
    proc.pids()
        .into_iter()
        .filter_map(|pid| {
            let stat = proc.read(&format!("{pid}/stat"), 1024).ok()?;
            Some((pid, parse_ppid(&stat.bytes)?))
        })
        .collect()
}

/// The ppid field of /proc/PID/stat: after the last ')' (the comm may
/// hold spaces and parentheses), skip the state.
pub fn parse_ppid(stat: &[u8]) -> Option<u32> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&stat[close + 1..]).ok()?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn ppid_survives_odd_comms() {
        assert_eq!(super::parse_ppid(b"42 (gunicorn) S 7 42 42 0"), Some(7));
        assert_eq!(super::parse_ppid(b"42 (a) b) c) R 9 1"), Some(9));
        assert_eq!(super::parse_ppid(b"42 (x"), None);
    }
}
