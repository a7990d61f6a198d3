//! Synthetic snapshots for the rules' table-driven tests.

use crate::model::{
    Attribution, Process, Snapshot, Socket, Source, SourceKind, TcpAges, TcpState, Timer,
};

pub struct SnapBuilder {
    snap: Snapshot,
    next: u32,
}

impl SnapBuilder {
    pub fn new() -> SnapBuilder {
        SnapBuilder {
            snap: Snapshot {
                schema_version: crate::model::SCHEMA_VERSION,
                taken_at_ms: 1_700_000_000_000,
                source: Source {
                    kind: SourceKind::Netlink,
                    path: None,
                },
                netns: None,
                initial_netns: None,
                sockets: Vec::new(),
                processes: Default::default(),
                attribution: Attribution {
                    complete: true,
                    ..Default::default()
                },
                listener_holders: Default::default(),
                peer_listeners: Vec::new(),
                sysctls: Default::default(),
                counters: Default::default(),
                warnings: Vec::new(),
            },
            next: 1000,
        }
    }

    fn socket(&mut self, state: TcpState, local: &str, peer: &str) -> Socket {
        self.next += 1;
        Socket {
            state,
            local: local.parse::<std::net::SocketAddr>().unwrap().into(),
            peer: peer.parse::<std::net::SocketAddr>().unwrap().into(),
            timer: Timer::Off,
            expires_ms: 0,
            retrans: 0,
            recv_q: 0,
            send_q: 0,
            uid: 0,
            inode: self.next,
            cookie: u64::from(self.next),
            iface: 0,
            tcp_info: None,
            pid: None,
            fd: None,
        }
    }

    /// A listener held by `pid`, with its accept queue and backlog.
    pub fn listen(mut self, local: &str, pid: Option<u32>, queue: u32, backlog: u32) -> Self {
        let mut s = self.socket(TcpState::Listen, local, "0.0.0.0:0");
        if local.starts_with('[') {
            s.peer = "[::]:0".parse::<std::net::SocketAddr>().unwrap().into();
        }
        s.pid = pid;
        s.recv_q = queue;
        s.send_q = backlog;
        self.snap.sockets.push(s);
        self
    }

    /// A CLOSE_WAIT socket. `ages` = (last_data_sent, last_data_recv,
    /// last_ack_recv) in ms ago; `pid` None with inode 0 = never accepted.
    pub fn close_wait(
        mut self,
        local: &str,
        peer: &str,
        recv_q: u32,
        pid: Option<u32>,
        ages: Option<(u32, u32, u32)>,
    ) -> Self {
        let mut s = self.socket(TcpState::CloseWait, local, peer);
        s.recv_q = recv_q;
        s.pid = pid;
        if pid.is_none() {
            s.inode = 0;
        }
        s.tcp_info = ages.map(|(sent, recv, ack)| TcpAges {
            last_data_sent_ms: sent,
            last_data_recv_ms: recv,
            last_ack_recv_ms: ack,
        });
        self.snap.sockets.push(s);
        self
    }

    pub fn established(mut self, local: &str, peer: &str, pid: Option<u32>) -> Self {
        let mut s = self.socket(TcpState::Established, local, peer);
        s.pid = pid;
        if pid.is_none() {
            s.inode = 0;
        }
        self.snap.sockets.push(s);
        self
    }

    pub fn time_wait(mut self, local: &str, peer: &str, expires_ms: u32) -> Self {
        let mut s = self.socket(TcpState::TimeWait, local, peer);
        s.inode = 0;
        s.timer = Timer::TimeWait;
        s.expires_ms = expires_ms;
        self.snap.sockets.push(s);
        self
    }

    /// `n` TIME_WAIT sockets from `src_ip` to `peer`, closed evenly over
    /// the last `span_ms`.
    pub fn time_waits(mut self, src_ip: &str, peer: &str, n: u32, span_ms: u32) -> Self {
        for i in 0..n {
            let local = format!("{src_ip}:{}", 20_000 + i % 40_000);
            let closed_ago = span_ms.saturating_mul(i) / n.max(1);
            self = self.time_wait(&local, peer, 60_000u32.saturating_sub(closed_ago));
        }
        self
    }

    pub fn process(mut self, pid: u32, comm: &str, fds: Option<usize>, soft: Option<u64>) -> Self {
        let mut p = Process::named(comm);
        p.fd_count = fds;
        p.nofile_soft = soft;
        self.snap.processes.insert(pid, p);
        self
    }

    pub fn stale(mut self, pid: u32, inodes: &[u64]) -> Self {
        let p = self
            .snap
            .processes
            .entry(pid)
            .or_insert_with(|| Process::named("app"));
        p.stale_socket_fds = Some(inodes.len());
        p.stale_socket_inodes = inodes.to_vec();
        self
    }

    pub fn sysctl(mut self, k: &str, v: &str) -> Self {
        self.snap.sysctls.insert(k.into(), v.into());
        self
    }

    pub fn counter(mut self, k: &str, v: u64) -> Self {
        self.snap.counters.insert(k.into(), v);
        self
    }

    pub fn build(mut self) -> Snapshot {
        let wanted = self
            .snap
            .sockets
            .iter()
            .filter(|s| s.inode != 0 && s.state != TcpState::Established)
            .count();
        self.snap.attribution.wanted_sockets = wanted;
        self.snap.attribution.found_sockets = wanted;
        for s in &self.snap.sockets {
            if let Some(pid) = s.pid {
                self.snap
                    .processes
                    .entry(pid)
                    .or_insert_with(|| Process::named("app"));
            }
        }
        self.snap
    }
}

/// One sample of a leaking server: pid 40 ("leaky") holds `n` CLOSE_WAIT
/// sockets on port 8080, `t` ms after the first sample.
pub fn leaky_sample(n: usize, t: u64) -> Snapshot {
    let mut b = SnapBuilder::new()
        .listen("0.0.0.0:8080", Some(40), 0, 128)
        .process(40, "leaky", Some(100 + n), Some(1024));
    for i in 0..n {
        let peer = format!("10.1.{}.{}:50000", i / 200, i % 200);
        b = b.close_wait("10.0.0.1:8080", &peer, 1, Some(40), None);
    }
    let mut s = b.build();
    s.taken_at_ms += t;
    s
}
