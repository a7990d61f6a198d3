//! `stale-socket-fds`: socket fds whose inode is in no socket table.

use super::Finding;
use super::{Ctx, Doc, Evidence, RuleId};
use crate::diag::listener::PeerService;
use crate::diag::types::Severity;
use crate::diag::words::who;
use crate::model::Endpoint;
use serde::Serialize;

pub const DOC: Doc = Doc {
    id: "stale-socket-fds",
    title: "Socket fds that no socket table knows",
    meaning: "A socket fd whose inode is in no TCP, UDP, UNIX, raw, netlink or packet table is almost always a TCP connection the kernel already closed (an RST from the peer, or a keepalive or retransmission timeout; tcp_input.c:tcp_reset, tcp_timer.c:tcp_write_err) whose fd the application never close()d: lsof's \"can't identify protocol\" or \"protocol: TCP\". It is the CLOSE_WAIT leak after the kernel gave up on the connection, invisible to ss. cwdiag checks each such fd against a second look at the tables, taken after reading the fds, and counts only those still held and still in no table.",
    confirm: "lsof -p PID shows \"can't identify protocol\" / \"protocol: TCP\" entries; their number grows.",
    fix: "The same as for CLOSE_WAIT: close() on EOF and on errors. Restart the process for relief.",
    avoid: "A socket created in another network namespace and held by this process, or one created but not yet connected, also appears here: check before concluding.",
};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StaleEvidence {
    pub count: usize,
    pub pid: u32,
    pub comm: String,
    /// Socket inodes concerned (first few).
    pub inodes: Vec<u64>,
    /// The server the process keeps most other connections to (outbound,
    /// any state), `ip:port`; null when it keeps none.
    pub pool_peer: Option<String>,
    /// How many connections it keeps to `pool_peer`: two or more make it
    /// a pool.
    pub pool_connections: usize,
    /// The service at `pool_peer` (see the CLOSE_WAIT rules' field).
    pub peer_service: Option<PeerService>,
}

/// The outbound connection peer `pid` keeps most connections to, with
/// their count: a pool shows as several towards one server.
fn busiest_peer(ctx: &Ctx, pid: u32) -> Option<(Endpoint, usize)> {
    let p = ctx.snap.processes.get(&pid)?;
    p.peer_connections.first().map(|c| (c.peer, c.count))
}

/// The rule's registry entry.
pub struct Def;

impl super::Rule for Def {
    fn doc(&self) -> &'static Doc {
        &DOC
    }

    fn detect(&self, ctx: &Ctx) -> Vec<Finding> {
        detect(ctx)
    }

    #[cfg(test)]
    fn cases(&self) -> Vec<super::cases::Case> {
        cases()
    }
}

pub fn detect(ctx: &Ctx) -> Vec<Finding> {
    ctx.snap
        .processes
        .iter()
        .filter(|(pid, _)| ctx.selected_pid(**pid))
        .filter_map(|(&pid, p)| {
            let n = p.stale_socket_fds.filter(|&n| n > 0)?;
            let label = p.label();
            let owner = who(Some(pid), Some(&label));
            let busiest = busiest_peer(ctx, pid);
            let peer_service = busiest.and_then(|(peer, _)| PeerService::of(ctx.snap, peer));
            let server = |peer: &Endpoint| match &peer_service {
                Some(ps) => match ps.pid {
                    Some(p) => format!("{peer} ({}, pid {p})", ps.name),
                    None => format!("{peer} ({})", ps.name),
                },
                None => peer.to_string(),
            };
            let hint = match busiest {
                // Several live connections to one server beside fds of dead
                // ones: a pool whose idle members the server reset.
                Some((peer, n)) if n >= 2 => format!(
                    "pid {pid} keeps {n} other connections to {}: a connection pool. These fds are most likely pooled connections that server reset while they sat idle (an idle timeout that ends with an RST, as MariaDB's wait_timeout does; or a keepalive or retransmission timeout), kept by a pool that checks connections only when it hands them out. Each is dropped on its next checkout; to stop keeping them, evict idle connections before the server's idle timeout (a maximum idle time or lifetime in the pool below it). lsof shows them as \"can't identify protocol\".",
                    server(&peer)
                ),
                Some((peer, _)) => format!(
                    "pid {pid} also keeps a connection to {}: these fds are most likely its earlier connections that were reset (by that server's idle timeout, or a keepalive or retransmission timeout) and never close()d. lsof shows them as \"can't identify protocol\". close() a connection on any error or reset, or evict idle ones before the server's idle timeout.",
                    server(&peer)
                ),
                None => format!(
                    "These are most likely TCP connections the kernel already closed (RST from the peer or a keepalive timeout) whose fd pid {pid} never close()d: lsof shows them as \"can't identify protocol\". They are the same leak as CLOSE_WAIT, past the point where ss can see it: close() on EOF and on errors."
                ),
            };
            let summary = match busiest {
                Some((peer, kept)) if kept >= 2 => format!(
                    "{owner} holds {n} socket fds that no socket table knows, beside a pool of {kept} live connections to {}",
                    server(&peer)
                ),
                _ => format!("{owner} holds {n} socket fds that no socket table knows"),
            };
            Some(Finding {
                rule_id: RuleId::StaleSocketFds,
                severity: Severity::Warning,
                summary,
                hint,
                evidence: Evidence::Stale(StaleEvidence {
                    count: n,
                    pid,
                    comm: p.comm.clone(),
                    inodes: p.stale_socket_inodes.clone(),
                    pool_peer: busiest.map(|(peer, _)| peer.to_string()),
                    pool_connections: busiest.map_or(0, |b| b.1),
                    peer_service,
                }),
            })
        })
        .collect()
}

#[cfg(test)]
pub fn cases() -> Vec<super::cases::Case> {
    use super::cases::{fires, silent};
    use crate::diag::testkit::SnapBuilder;
    vec![
        fires(
            "30 fds of sockets reset by the peer",
            SnapBuilder::new()
                .stale(90, &(1..=30).collect::<Vec<u64>>())
                .build(),
            Severity::Warning,
        ),
        fires(
            "a pool's reset members beside its live ones",
            pool_with_reset_members(),
            Severity::Warning,
        ),
        silent(
            "a process whose socket fds are all in the tables",
            SnapBuilder::new()
                .process(91, "redis-server", Some(40), Some(10_000))
                .build(),
        ),
        silent("a pool with no reset members", {
            let mut s = pool_with_reset_members();
            let p = s.processes.get_mut(&92).unwrap();
            p.stale_socket_fds = Some(0);
            p.stale_socket_inodes.clear();
            s
        }),
    ]
}

/// A Python pool with 2 live connections to a local MariaDB on 3307 and
/// 3 fds of members the server reset.
#[cfg(test)]
fn pool_with_reset_members() -> crate::model::Snapshot {
    use crate::diag::testkit::SnapBuilder;
    let mut snap = SnapBuilder::new()
        .listen("127.0.0.1:3307", Some(7), 0, 80)
        .process(92, "python3", Some(20), Some(1024))
        .established("127.0.0.1:47000", "127.0.0.1:3307", None)
        .established("127.0.0.1:47001", "127.0.0.1:3307", None)
        .stale(92, &[5001, 5002, 5003])
        .build();
    snap.processes.get_mut(&92).unwrap().peer_connections = vec![crate::model::PeerCount {
        peer: "127.0.0.1:3307"
            .parse::<std::net::SocketAddr>()
            .unwrap()
            .into(),
        count: 2,
    }];
    let mut maria = crate::model::Process::named("mariadbd");
    maria.exe = Some("/usr/sbin/mariadbd".into());
    maria.cmdline = Some(vec!["mariadbd".into(), "--wait-timeout=3".into()]);
    snap.processes.insert(7, maria);
    snap
}

#[cfg(test)]
mod tests {
    use super::cases;
    use crate::diag::rules::{Evidence, RuleId, cases::findings_of};

    #[test]
    fn reset_members_of_a_pool_are_described_as_the_pool_s() {
        let c = cases();
        let f = &findings_of(RuleId::StaleSocketFds, &c[1])[0];
        assert!(f.summary.contains("holds 3 socket fds"), "{}", f.summary);
        assert!(
            f.summary
                .contains("pool of 2 live connections to 127.0.0.1:3307 (MariaDB, pid 7)"),
            "{}",
            f.summary
        );
        assert!(
            f.hint.contains("connection pool") && f.hint.contains("reset"),
            "{}",
            f.hint
        );
        assert!(
            !f.hint.contains("close() on EOF"),
            "not a missing close on EOF: {}",
            f.hint
        );
        let Evidence::Stale(e) = &f.evidence else {
            panic!()
        };
        assert_eq!(
            (e.pool_peer.as_deref(), e.pool_connections),
            (Some("127.0.0.1:3307"), 2)
        );
        assert_eq!(
            e.peer_service.as_ref().map(|p| p.name.as_str()),
            Some("MariaDB")
        );
        // Nothing else open: the generic words, and no pool claimed.
        let f = &findings_of(RuleId::StaleSocketFds, &c[0])[0];
        assert!(!f.hint.contains("pool"), "{}", f.hint);
    }
}
