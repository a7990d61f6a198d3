//! The peer as the host sees it. When a connection's peer address is one
//! of this namespace's own, the server is a process here: the one that
//! holds the listening socket on that address and port. Its executable
//! and command line name the service better than the port number does
//! (a MySQL-compatible server on 3307, a proxy on 80), and its command
//! line may state the idle timeout that closed the connections. For a
//! remote peer, the port number is all there is.
//!
//! Pure: reads the snapshot (listeners, their holders, their processes'
//! `comm`, `exe` and `cmdline`, already size-capped by the collector).
//! Command lines are hostile text: what is quoted from them is escaped
//! and cut.

use super::peer::Service;
use crate::model::{Endpoint, Process, Snapshot};
use crate::procname::{basename, printable};
use serde::Serialize;

/// Characters quoted from a command line at most.
const QUOTE_MAX: usize = 120;

/// Where the service's name came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceSource {
    /// The process holding the listening socket on the peer's address.
    Listener,
    /// The peer's port number (a remote peer, or no listener found).
    Port,
}

/// The service at the other end of a group's connections.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PeerService {
    /// `MariaDB`, `HAProxy`, `PostgreSQL`...; for a listener whose
    /// program is not recognised, the program's name.
    pub name: String,
    pub source: ServiceSource,
    /// The listener's owner (the first holder found); null for `port`.
    pub pid: Option<u32>,
    /// Every process holding the listening socket (a pre-fork server's
    /// master and workers); empty for `port`.
    pub holders: Vec<u32>,
    /// The listening socket's address (`127.0.0.1:3307`, `0.0.0.0:80`).
    pub listener: Option<String>,
    /// With `--all-netns`, the network namespace of a listener found in
    /// another namespace of the host; null when it is this one's.
    pub netns: Option<String>,
    /// The idle setting as the listener's command line states it
    /// (`--wait-timeout=3`), escaped; null when it does not.
    pub setting: Option<String>,
    /// The configuration file its command line names, for servers whose
    /// idle setting lives there (haproxy -f, nginx -c), escaped.
    pub config: Option<String>,
    /// What the words need, not in JSON.
    #[serde(skip)]
    pub service: Option<Service>,
    #[serde(skip)]
    pub label: Option<String>,
    /// The stated idle limit in seconds, when it parses.
    #[serde(skip)]
    pub idle_s: Option<f64>,
}

impl PeerService {
    /// The service at `peer`: the local listener's program, else the
    /// port's usual service; `None` when neither says anything.
    pub fn of(snap: &Snapshot, peer: Endpoint) -> Option<PeerService> {
        if let Some(listeners) = snap.local_listeners(peer) {
            let mut holders: Vec<u32> = Vec::new();
            for l in &listeners {
                holders.extend(l.pid);
                if let Some(more) = snap.listener_holders.get(&l.inode) {
                    holders.extend(more);
                }
            }
            let owner = listeners.iter().find_map(|l| l.pid);
            return Some(Self::from_parts(
                listeners[0].local,
                owner,
                holders,
                &snap.processes,
                None,
            ));
        }
        if let Some(f) = snap.peer_listeners.iter().find(|f| f.peer == peer) {
            return Some(Self::from_parts(
                f.listener,
                f.holders.first().copied(),
                f.holders.clone(),
                &f.processes,
                Some(printable(&f.netns)),
            ));
        }
        Service::by_port(peer.port()).map(|s| PeerService {
            name: s.name().to_string(),
            source: ServiceSource::Port,
            pid: None,
            holders: Vec::new(),
            listener: None,
            netns: None,
            setting: None,
            config: None,
            service: Some(s),
            label: None,
            idle_s: None,
        })
    }

    fn from_parts(
        listener: Endpoint,
        pid: Option<u32>,
        mut holders: Vec<u32>,
        processes: &std::collections::BTreeMap<u32, Process>,
        netns: Option<String>,
    ) -> PeerService {
        holders.sort_unstable();
        holders.dedup();
        // The first holder whose program is recognised names the service
        // (a pre-fork master and its workers run the same program).
        let procs: Vec<(u32, &Process)> = pid
            .into_iter()
            .chain(holders.iter().copied())
            .filter_map(|p| Some((p, processes.get(&p)?)))
            .collect();
        let known = procs
            .iter()
            .find_map(|(p, proc)| Some((*p, *proc, recognise(proc)?)));
        let (name, service, setting, config, idle_s, label) = match known {
            Some((_, proc, service)) => {
                let stated = stated_setting(service, proc);
                (
                    service.name().to_string(),
                    Some(service),
                    stated.as_ref().map(|s| s.quoted.clone()),
                    config_file(service, proc),
                    stated.and_then(|s| s.seconds),
                    Some(proc.label()),
                )
            }
            None => {
                let proc = procs.first().map(|(_, p)| *p);
                (
                    proc.map(|p| p.display_name())
                        .unwrap_or_else(|| "an unidentified process".to_string()),
                    None,
                    None,
                    None,
                    None,
                    proc.map(|p| p.label()),
                )
            }
        };
        PeerService {
            name,
            source: ServiceSource::Listener,
            pid: known.map(|k| k.0).or(pid),
            holders,
            listener: Some(listener.to_string()),
            netns,
            setting,
            config,
            service,
            label,
            idle_s,
        }
    }

    /// The sentence that names who closed the connections and what
    /// setting made it, ending with a full stop.
    pub fn closer_words(&self) -> String {
        let Some(listener) = &self.listener else {
            return match self.service {
                Some(s) => format!("{}.", s.idle_close_setting()),
                None => "The server closed idle connections (its idle timeout).".to_string(),
            };
        };
        let who = crate::diag::words::who(self.pid, self.label.as_deref());
        let place = match &self.netns {
            Some(n) => format!("in network namespace {n} on this host"),
            None => "on this host".to_string(),
        };
        let Some(service) = self.service else {
            return format!(
                "The server is {who}, listening on {listener} {place}: it closed idle connections (its idle timeout; {} does not state one on its command line).",
                self.name
            );
        };
        let proxy = if service.is_proxy() {
            format!(
                " {} is a proxy: these are its client-side connections, closed by the proxy itself, not by the servers behind it.",
                service.name()
            )
        } else {
            String::new()
        };
        let setting = match (&self.setting, &self.config) {
            (Some(s), _) => {
                let limit = self
                    .idle_s
                    .map(|t| format!(": it closes connections idle for {}", seconds(t)))
                    .unwrap_or_default();
                format!("Its command line sets `{s}`{limit}.")
            }
            (None, Some(c)) => format!(
                "{}; that is set in its configuration ({c}), not on its command line.",
                service.idle_close_setting()
            ),
            // redis-server replaces its argv with its address
            // (redisSetProcTitle), so a `--timeout` given there is gone.
            (None, None) if service == Service::Redis => format!(
                "{}; redis-server rewrites its command line, so the value cannot be read there (`CONFIG GET timeout` shows it).",
                service.idle_close_setting()
            ),
            (None, None) => format!(
                "{}; its command line does not set it, so its configuration or the default applies.",
                service.idle_close_setting()
            ),
        };
        format!(
            "The server is {} {place}: {who}, listening on {listener}.{proxy} {setting}",
            service.name()
        )
    }
}

/// `3 s`, `1.5 s`.
fn seconds(t: f64) -> String {
    if t.fract() == 0.0 {
        format!("{t:.0} s")
    } else {
        format!("{t} s")
    }
}

/// The names a process goes by, and for an interpreter the script it
/// runs (`python3 /usr/bin/gunicorn app:app` -> `gunicorn`).
fn program_names(p: &Process) -> Vec<&str> {
    let mut names = p.names();
    if let Some(args) = &p.cmdline {
        // nginx and postgres children retitle argv[0] ("nginx: worker
        // process"): its first word is the program.
        if let Some(first) = args.first().and_then(|a| a.split_whitespace().next()) {
            names.push(basename(first.trim_end_matches(':')));
        }
        if let Some(script) = args.iter().skip(1).find(|a| !a.starts_with('-')) {
            names.push(basename(script));
        }
    }
    names
}

/// The service a listener's program is, from its names.
pub fn recognise(p: &Process) -> Option<Service> {
    let names = program_names(p);
    let has = |n: &str| names.contains(&n);
    let interp = p
        .names()
        .iter()
        .any(|n| *n == "java" || *n == "node" || *n == "nodejs");
    Some(if has("mariadbd") || has("mariadb") {
        Service::MariaDb
    } else if has("mysqld") {
        Service::MySql
    } else if has("postgres") || has("postmaster") {
        Service::Postgres
    } else if has("pgbouncer") {
        Service::PgBouncer
    } else if has("redis-server") {
        Service::Redis
    } else if has("memcached") {
        Service::Memcached
    } else if has("haproxy") {
        Service::HaProxy
    } else if has("envoy") {
        Service::Envoy
    } else if has("nginx") {
        Service::Nginx
    } else if has("apache2") || has("httpd") {
        Service::Apache
    } else if has("mongod") {
        Service::MongoDb
    } else if has("gunicorn") {
        Service::Gunicorn
    } else if interp && p.names().iter().any(|n| *n == "node" || *n == "nodejs") {
        Service::NodeHttp
    } else if interp {
        Service::JvmServer
    } else {
        return None;
    })
}

/// An idle setting found on a command line.
#[derive(Debug, Clone, PartialEq)]
pub struct Stated {
    /// The argument(s) as written, escaped and cut.
    pub quoted: String,
    pub seconds: Option<f64>,
}

/// The command line's words: nginx and postgres children put theirs in
/// one string, so every argument is split at whitespace.
fn words(p: &Process) -> Vec<&str> {
    p.cmdline
        .iter()
        .flatten()
        .flat_map(|a| a.split_whitespace())
        .collect()
}

/// The value of `flag` among `words`: `--flag=V`, `--flag V`.
fn flag_value<'a>(words: &[&'a str], flags: &[&str]) -> Option<(String, &'a str)> {
    for (i, w) in words.iter().enumerate() {
        for f in flags {
            if let Some(v) = w.strip_prefix(f).and_then(|r| r.strip_prefix('=')) {
                return Some((w.to_string(), v));
            }
            if w == f
                && let Some(v) = words.get(i + 1)
            {
                return Some((format!("{w} {v}"), v));
            }
        }
    }
    None
}

fn quoted(s: &str) -> String {
    let p = printable(s);
    if p.chars().count() > QUOTE_MAX {
        let mut c: String = p.chars().take(QUOTE_MAX - 1).collect();
        c.push('…');
        c
    } else {
        p
    }
}

/// The idle timeout the listener's command line states, for the
/// services that take it there.
pub fn stated_setting(service: Service, p: &Process) -> Option<Stated> {
    let w = words(p);
    let plain = |v: &str| v.parse::<f64>().ok().filter(|t| t.is_finite() && *t >= 0.0);
    let (arg, seconds) = match service {
        // mysqld --help: options take `-` or `_`; wait_timeout in seconds.
        Service::MySql | Service::MariaDb => {
            let (arg, v) = flag_value(&w, &["--wait-timeout", "--wait_timeout"])?;
            (arg, plain(v))
        }
        // redis.conf directives as options (`--timeout 5`); redis-server
        // retitles itself, so this is rarely still visible.
        Service::Redis => {
            let (arg, v) = flag_value(&w, &["--timeout"])?;
            (arg, plain(v))
        }
        // `-c name=value` or `--name=value` (postgres(1)); ms without a unit.
        Service::Postgres => {
            let pos = w.iter().position(|a| {
                let a = a.trim_start_matches("--").replace('-', "_");
                a.starts_with("idle_session_timeout=")
                    || a.starts_with("idle_in_transaction_session_timeout=")
            })?;
            let a = w[pos];
            let arg = match pos.checked_sub(1).map(|i| w[i]) {
                Some("-c") => format!("-c {a}"),
                _ => a.to_string(),
            };
            let v = a.split_once('=').map(|x| x.1).unwrap_or("");
            (arg, pg_duration_s(v))
        }
        // memcached -o idle_timeout=N (seconds), in a comma list.
        Service::Memcached => {
            let (arg, v) = flag_value(&w, &["-o", "--extended"])?;
            let t = v.split(',').find_map(|o| o.strip_prefix("idle_timeout="))?;
            (arg, plain(t))
        }
        // gunicorn --keep-alive N (seconds).
        Service::Gunicorn => {
            let (arg, v) = flag_value(&w, &["--keep-alive"])?;
            (arg, plain(v))
        }
        _ => return None,
    };
    Some(Stated {
        quoted: quoted(&arg),
        seconds,
    })
}

/// A PostgreSQL duration setting in seconds: a number with an optional
/// unit (`ms`, `s`, `min`, `h`, `d`), milliseconds without one.
fn pg_duration_s(v: &str) -> Option<f64> {
    let v = v.trim_matches(|c| c == '\'' || c == '"').trim();
    let split = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let n: f64 = num.parse().ok()?;
    let scale = match unit.trim() {
        "" | "ms" => 0.001,
        "s" => 1.0,
        "min" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        _ => return None,
    };
    Some(n * scale).filter(|t| t.is_finite())
}

/// The configuration file a server's command line names, for servers
/// whose idle timeout lives in one.
fn config_file(service: Service, p: &Process) -> Option<String> {
    let w = words(p);
    let flags: &[&str] = match service {
        Service::HaProxy | Service::Apache => &["-f"],
        Service::Nginx => &["-c"],
        Service::Envoy => &["-c", "--config-path"],
        Service::PgBouncer => {
            return w
                .iter()
                .skip(1)
                .find(|a| a.ends_with(".ini"))
                .map(|a| quoted(a));
        }
        _ => return None,
    };
    flag_value(&w, flags).map(|(_, v)| quoted(v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::testkit::SnapBuilder;

    fn proc_with(comm: &str, exe: &str, args: &[&str]) -> Process {
        let mut p = Process::named(comm);
        p.exe = Some(exe.to_string());
        p.cmdline = Some(args.iter().map(|a| a.to_string()).collect());
        p
    }

    #[test]
    fn the_listener_names_the_service_not_the_port() {
        let mut snap = SnapBuilder::new()
            .listen("127.0.0.1:3307", Some(7), 0, 80)
            .close_wait("127.0.0.1:45000", "127.0.0.1:3307", 1, Some(8), None)
            .build();
        snap.processes.insert(
            7,
            proc_with(
                "mariadbd",
                "/usr/sbin/mariadbd",
                &["/usr/sbin/mariadbd", "--port=3307", "--wait-timeout=3"],
            ),
        );
        let ps = PeerService::of(&snap, snap.sockets[1].peer).unwrap();
        assert_eq!(ps.source, ServiceSource::Listener);
        assert_eq!(ps.name, "MariaDB");
        assert_eq!((ps.pid, ps.holders.clone()), (Some(7), vec![7]));
        assert_eq!(ps.setting.as_deref(), Some("--wait-timeout=3"));
        assert_eq!(ps.idle_s, Some(3.0));
        let w = ps.closer_words();
        assert!(
            w.contains("mariadbd") && w.contains("`--wait-timeout=3`"),
            "{w}"
        );
        assert!(w.contains("idle for 3 s"), "{w}");
        // The same address from another host: the port is all there is.
        let remote: Endpoint = "10.9.9.9:3306"
            .parse::<std::net::SocketAddr>()
            .unwrap()
            .into();
        let ps = PeerService::of(&snap, remote).unwrap();
        assert_eq!((ps.source, ps.pid), (ServiceSource::Port, None));
        assert_eq!(ps.name, "MySQL/MariaDB");
    }

    #[test]
    fn a_wildcard_listener_serves_only_local_addresses() {
        let snap = SnapBuilder::new()
            .listen("0.0.0.0:80", Some(7), 0, 80)
            .close_wait("10.0.0.1:45000", "10.0.0.2:80", 1, Some(8), None)
            .close_wait("10.0.0.1:45001", "10.0.0.1:80", 1, Some(8), None)
            .build();
        // 10.0.0.2 is not ours: another host's port 80.
        assert!(snap.local_listeners(snap.sockets[1].peer).is_none());
        assert_eq!(
            snap.local_listeners(snap.sockets[2].peer).map(|v| v.len()),
            Some(1)
        );
        let mapped: Endpoint = "[::ffff:127.0.0.1]:80"
            .parse::<std::net::SocketAddr>()
            .unwrap()
            .into();
        assert!(snap.local_listeners(mapped).is_some());
    }

    #[test]
    fn a_proxy_is_named_as_the_proxy_with_its_own_settings() {
        let mut snap = SnapBuilder::new()
            .listen("127.0.0.1:80", Some(7), 0, 80)
            .build();
        snap.processes.insert(
            7,
            proc_with(
                "haproxy",
                "/usr/sbin/haproxy",
                &["haproxy", "-f", "/tmp/peer/haproxy.cfg", "-db"],
            ),
        );
        let ps = PeerService::of(&snap, snap.sockets[0].local).unwrap();
        assert_eq!(ps.name, "HAProxy");
        assert_eq!(ps.config.as_deref(), Some("/tmp/peer/haproxy.cfg"));
        let w = ps.closer_words();
        assert!(
            w.contains("timeout http-keep-alive") && w.contains("a proxy"),
            "{w}"
        );
        for not in ["nginx", "Apache", "Node"] {
            assert!(!w.contains(not), "{not}: {w}");
        }
    }

    #[test]
    fn settings_are_read_from_each_servers_own_syntax() {
        let pg = proc_with(
            "postgres",
            "/usr/lib/postgresql/15/bin/postgres",
            &[
                "/usr/lib/postgresql/15/bin/postgres",
                "-D",
                "/d",
                "-c",
                "idle_session_timeout=2500",
            ],
        );
        let s = stated_setting(Service::Postgres, &pg).unwrap();
        assert_eq!(
            (s.quoted.as_str(), s.seconds),
            ("-c idle_session_timeout=2500", Some(2.5))
        );
        let pg = proc_with(
            "postgres",
            "/p/postgres",
            &["postgres", "--idle-session-timeout=1min"],
        );
        assert_eq!(
            stated_setting(Service::Postgres, &pg).unwrap().seconds,
            Some(60.0)
        );
        let mc = proc_with(
            "memcached",
            "/usr/bin/memcached",
            &["memcached", "-o", "modern,idle_timeout=2"],
        );
        assert_eq!(
            stated_setting(Service::Memcached, &mc).unwrap().seconds,
            Some(2.0)
        );
        let redis = proc_with(
            "redis-server",
            "/usr/bin/redis-server",
            &["redis-server 127.0.0.1:6379"],
        );
        assert_eq!(recognise(&redis), Some(Service::Redis));
        assert!(stated_setting(Service::Redis, &redis).is_none());
        // nginx workers retitle themselves.
        let w = proc_with("nginx", "/usr/sbin/nginx", &["nginx: worker process"]);
        assert_eq!(recognise(&w), Some(Service::Nginx));
        let gu = proc_with(
            "python3",
            "/usr/bin/python3.11",
            &[
                "/usr/bin/python3",
                "/usr/bin/gunicorn",
                "--keep-alive",
                "4",
                "app:app",
            ],
        );
        assert_eq!(recognise(&gu), Some(Service::Gunicorn));
        assert_eq!(
            stated_setting(Service::Gunicorn, &gu).unwrap().seconds,
            Some(4.0)
        );
        assert_eq!(
            recognise(&proc_with("node", "/usr/bin/node", &["node", "server.js"])),
            Some(Service::NodeHttp)
        );
        assert_eq!(
            recognise(&proc_with("billing", "/opt/billing", &["/opt/billing"])),
            None
        );
    }

    #[test]
    fn hostile_command_lines_are_escaped_and_cut() {
        let long = format!("--wait-timeout=3\x1b[2J{}", "A".repeat(500));
        let p = proc_with("mariadbd", "/usr/sbin/mariadbd", &["mariadbd", &long]);
        let s = stated_setting(Service::MariaDb, &p).unwrap();
        assert!(!s.quoted.contains('\x1b'), "{}", s.quoted);
        assert!(s.quoted.chars().count() <= QUOTE_MAX, "{}", s.quoted);
        assert_eq!(
            s.seconds, None,
            "a value that is not a number is not a limit"
        );
    }

    #[test]
    fn a_listener_in_another_namespace_names_the_peer() {
        use crate::model::PeerListener;
        let mut snap = SnapBuilder::new()
            .close_wait("10.1.0.1:45000", "10.1.0.2:3307", 1, Some(8), None)
            .build();
        let peer = snap.sockets[0].peer;
        let maria = proc_with(
            "mariadbd",
            "/usr/sbin/mariadbd",
            &["mariadbd", "--wait_timeout=3"],
        );
        snap.peer_listeners.push(PeerListener {
            peer,
            netns: "peerdb\x1b".into(),
            listener: "0.0.0.0:3307"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
            holders: vec![70],
            processes: [(70, maria)].into(),
        });
        let ps = PeerService::of(&snap, peer).unwrap();
        assert_eq!(
            (ps.source, ps.pid, ps.name.as_str()),
            (ServiceSource::Listener, Some(70), "MariaDB")
        );
        assert_eq!(ps.setting.as_deref(), Some("--wait_timeout=3"));
        let w = ps.closer_words();
        assert!(w.contains("in network namespace peerdb"), "{w}");
        assert!(!w.contains('\x1b'), "{w}");
    }

    #[test]
    fn a_retitled_redis_is_not_said_to_lack_the_setting() {
        let mut snap = SnapBuilder::new()
            .listen("127.0.0.1:6390", Some(7), 0, 80)
            .build();
        snap.processes.insert(
            7,
            proc_with(
                "redis-server",
                "/usr/bin/redis-server",
                &["redis-server *:6390"],
            ),
        );
        let ps = PeerService::of(&snap, snap.sockets[0].local).unwrap();
        assert_eq!(ps.name, "Redis");
        let w = ps.closer_words();
        assert!(
            w.contains("CONFIG GET timeout") && !w.contains("does not set it"),
            "{w}"
        );
    }
}
