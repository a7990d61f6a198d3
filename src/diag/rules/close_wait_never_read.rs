//! `close-wait-never-read`: the peer closed a connection the application
//! is not reading: Recv-Q 1 (only the FIN), or the peer's goodbye message
//! that came with the FIN after the connection had idled.

use super::close_wait::{
    AVOID, CloseWaitEvidence, CloseWaitKind, NO_SYSCTL, age_words, close_wait_severity, held,
    owner_words, place_words, unknown_owner_prefix,
};
use super::{Ctx, Doc, Evidence, Finding, RuleId};
use crate::diag::clientlib;
use crate::diag::peer::{Runtime, Service};
use crate::diag::types::{Direction, Policy, Severity};
use crate::diag::words::plural;
use crate::units::age;

pub const DOC: Doc = Doc {
    id: "close-wait-never-read",
    title: "CLOSE_WAIT, idle connection the peer closed, never read since",
    meaning: "The peer closed a connection that was idle, and the application has not read it since: Recv-Q is 1 because the FIN takes one sequence number, or a little more when the server sent a last message before closing (PostgreSQL's idle_session_timeout error 57P05, MySQL 8.0.24+ error 4031): a goodbye is at most 4 KiB, came after the connection had idled since its last request, and nearer to the FIN than to that request; the sockets of one process and port get one verdict. Outbound, this is the usual mark of a client pool that only checks connections when it hands them out (urllib3, redis-py, HttpClient's validateAfterInactivity, psycopg2): up to the pool size per destination is expected, and steady. It is a leak when the count keeps growing: connections or responses opened and never closed. Inbound, a server keeps idle connections whose clients left without watching them.",
    confirm: "ss -tanp state close-wait shows Recv-Q 1 (or a small goodbye) on these sockets; `cwdiag assert --samples 5 --interval 10s --max-close-wait-growth 0` tells a steady pool (passes) from a leak (fails, naming the process and port).",
    fix: "Evict idle connections sooner than the server's idle timeout: a background evictor (HikariCP maxLifetime, JedisPoolConfig's evictor, Apache HttpClient evictIdleConnections), or an idle timeout in the client shorter than the server's keep-alive; close every connection and response the code opens. Servers: watch idle connections for readability and close on read() == 0.",
    avoid: AVOID,
};

/// One finding per process, direction and port: info for an outbound
/// pool's handful, else by the CLOSE_WAIT count of that process,
/// direction and port.
pub fn detect(ctx: &Ctx) -> Vec<Finding> {
    held(ctx, CloseWaitKind::NeverRead)
        .into_iter()
        .map(|h| {
            let severity = match h.evidence.direction {
                // Up to a pool's size towards one destination is what a
                // pool that checks connections on checkout keeps.
                Direction::Outbound if h.evidence.count <= ctx.policy.pool_bound => Severity::Info,
                _ => close_wait_severity(h.total, ctx.policy),
            };
            let (summary, hint) = words(&h.evidence, ctx.policy, h.runtime);
            Finding {
                rule_id: RuleId::CloseWaitNeverRead,
                severity,
                summary,
                evidence: Evidence::CloseWait(Box::new(h.evidence)),
                hint,
            }
        })
        .collect()
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

pub fn words(e: &CloseWaitEvidence, p: &Policy, runtime: Option<Runtime>) -> (String, String) {
    let who = owner_words(e);
    let idle = e
        .idle_before_close_ms
        .filter(|&ms| ms >= p.idle_before_close_ms)
        .map(|ms| format!(" after ~{} idle", age(ms)))
        .unwrap_or_default();
    let goodbye = if e.goodbye > 0 {
        format!(
            " ({} with the server's last message unread)",
            plural(e.goodbye, "socket", "sockets")
        )
    } else {
        String::new()
    };
    let service = match e.direction {
        Direction::Outbound => e.peer_service.as_ref().and_then(|p| p.service),
        Direction::Inbound => Service::by_port(e.port),
    };
    match e.direction {
        Direction::Inbound => {
            let summary = format!(
                "{} {} held by {who}{}: the clients closed{idle}, never read since",
                plural(e.count, "CLOSE_WAIT socket", "CLOSE_WAIT sockets"),
                place_words(e),
                age_words(e)
            );
            let threads = e
                .threads
                .as_ref()
                .map(|t| format!(" Its threads, sampled: {}.", t.verdict))
                .unwrap_or_default();
            let hint = format!(
                "{}{who} keeps connections on port {} whose clients hung up, without reading them: idle keep-alive connections nobody watches, or handlers waiting elsewhere.{threads} Watch idle connections for EOF (poll/epoll readability or a read timeout) and close() them. {NO_SYSCTL}",
                unknown_owner_prefix(e),
                e.port
            );
            (summary, hint)
        }
        Direction::Outbound => {
            let dest = e
                .peers
                .first()
                .cloned()
                .unwrap_or_else(|| format!("port {}", e.port));
            let svc = match &e.peer_service {
                Some(ps) => match ps.pid {
                    Some(pid) => format!(" ({}, pid {pid})", ps.name),
                    None => format!(" ({})", ps.name),
                },
                None => String::new(),
            };
            let summary = format!(
                "{} to {dest}{svc} held by {who}: the server closed {}{idle}{goodbye}; never read since",
                plural(e.count, "CLOSE_WAIT socket", "CLOSE_WAIT sockets"),
                if e.count == 1 { "it" } else { "them" },
            );
            let closer = match &e.peer_service {
                Some(ps) => ps.closer_words(),
                None => "The server closed idle connections (its idle timeout).".to_string(),
            };
            let limit_here = e
                .peer_service
                .as_ref()
                .and_then(|ps| ps.idle_s)
                .map(|t| format!(" (the server's limit here: {t} s)"))
                .unwrap_or_default();
            let pid = e.pid.map(|p| format!(" --pid {p}")).unwrap_or_default();
            let libs = clientlib::relevant(&e.libraries, service);
            let watcher = libs
                .iter()
                .find(|l| l.watches_idle() && l.advice().is_some());
            let verdict = if watcher.is_some_and(|w| *w != clientlib::ClientLib::GoStd) {
                // aiohttp drops a released connection whose server closed
                // (the fix below says so): these are still checked out.
                format!(
                    "{} sockets now; `cwdiag assert --samples 5 --interval 10s --max-close-wait-growth 0{pid}` tells a steady handful from a leak.",
                    e.count
                )
            } else if runtime == Some(Runtime::Go) {
                // net/http's Transport runs a read loop on every pooled
                // connection and drops one the server closed
                // (transport.go, errServerClosedIdle).
                format!(
                    "Go's HTTP Transport closes pooled connections the server closes, so CLOSE_WAIT in a Go client usually means responses whose Body was never closed, or a client of its own that keeps idle connections unwatched. {} sockets now; `cwdiag assert --samples 5 --interval 10s --max-close-wait-growth 0{pid}` tells a steady handful from a leak.",
                    e.count
                )
            } else if e.count <= p.pool_bound {
                format!(
                    "Two causes fit: a pool that checks connections only when it hands them out (expected: up to the pool size per destination, steady), or connections and responses the code never closes (the count keeps growing). {} a bounded pool; `cwdiag assert --samples 5 --interval 10s --max-close-wait-growth 0{pid}` tells: a steady count is the pool, a rising one a leak.",
                    plural(e.count, "socket fits", "sockets fit")
                )
            } else {
                format!(
                    "{} sockets are more than a pool keeps: connections or responses are opened and never closed (or pools are created and dropped). Find where; restarting the process frees them until then.",
                    e.count
                )
            };
            // Beyond any pool, idle-eviction settings would only hide the
            // leak (the server's idle timeout is what makes it visible).
            let seen = if libs.is_empty() {
                String::new()
            } else {
                format!(
                    " ({} seen in the process)",
                    clientlib::seen_words(&libs, &e.libraries)
                )
            };
            let fix = match clientlib::fix(&e.libraries, service, runtime) {
                _ if e.count > p.pool_bound => "Fix: close every client, connection and response the code opens, and share one pool per destination instead of creating one per request.".to_string(),
                Some(f) => format!("Fix{seen}: {f}{limit_here}."),
                None => "Fix: evict idle connections sooner than the server's idle timeout (an idle timeout or maximum lifetime in the pool), and close every connection and response the code opens.".to_string(),
            };
            let hint = format!(
                "{}{closer} {verdict} {fix} {NO_SYSCTL}",
                unknown_owner_prefix(e)
            );
            (summary, hint)
        }
    }
}

#[cfg(test)]
pub fn cases() -> Vec<super::cases::Case> {
    use super::cases::{fires, silent};
    use crate::diag::testkit::SnapBuilder;
    // A redis-py pool of 50 whose server timed the connections out.
    let mut pool = SnapBuilder::new().process(20, "python3", Some(80), Some(1024));
    for i in 0..50 {
        let local = format!("10.0.0.1:{}", 41_000 + i);
        pool = pool.close_wait(
            &local,
            "10.0.0.9:6379",
            1,
            Some(20),
            Some((310_000, 310_000, 10_000)),
        );
    }
    // PostgreSQL idle_session_timeout: ErrorResponse then FIN (Recv-Q 118).
    let mut pg = SnapBuilder::new().process(21, "java", Some(200), Some(20_000));
    for i in 0..8 {
        let local = format!("10.0.0.1:{}", 42_000 + i);
        pg = pg.close_wait(
            &local,
            "10.0.0.8:5432",
            118,
            Some(21),
            Some((15_000, 3_000, 3_000)),
        );
    }
    // Far more than any pool: a leak.
    let mut leak = SnapBuilder::new().process(22, "java", Some(900), Some(20_000));
    for i in 0..300 {
        let local = format!("10.0.0.1:{}", 43_000 + i);
        leak = leak.close_wait(&local, "10.0.0.7:443", 1, Some(22), None);
    }
    let mut inbound = SnapBuilder::new().listen("0.0.0.0:8080", Some(23), 0, 128);
    for i in 0..15 {
        let peer = format!("10.1.0.{i}:5{i:04}");
        inbound = inbound.close_wait("10.0.0.1:8080", &peer, 1, Some(23), None);
    }
    // A stuck reader with a response unread is not an idle pool.
    let stuck = SnapBuilder::new().close_wait(
        "10.0.0.1:44000",
        "10.0.0.7:80",
        4000,
        Some(24),
        Some((2_050, 2_000, 2_000)),
    );
    vec![
        fires(
            "a bounded redis-py pool: INFO, not a warning",
            pool.build(),
            Severity::Info,
        ),
        fires(
            "an idle PostgreSQL pool closed with a goodbye",
            pg.build(),
            Severity::Info,
        ),
        fires(
            "300 never-read sockets to one server",
            leak.build(),
            Severity::Critical,
        ),
        fires(
            "idle inbound keep-alives nobody watches",
            inbound.build(),
            Severity::Warning,
        ),
        silent("a response never read is unread data", stuck.build()),
    ]
}

#[cfg(test)]
mod tests {
    use super::cases;
    use crate::diag::rules::{RuleId, cases::findings_of};

    #[test]
    fn hints_name_the_peer_and_runtime_and_spare_bounded_pools_a_restart() {
        let c = cases();
        let redis = &findings_of(RuleId::CloseWaitNeverRead, &c[0])[0];
        assert!(redis.hint.contains("redis-py"), "{}", redis.hint);
        assert!(redis.hint.contains("`timeout`"), "{}", redis.hint);
        assert!(!redis.hint.contains("Hikari") && !redis.hint.contains("HttpClient"));
        assert!(
            !redis.hint.to_lowercase().contains("restart"),
            "{}",
            redis.hint
        );
        assert!(
            redis.hint.contains("--max-close-wait-growth 0 --pid 20"),
            "{}",
            redis.hint
        );
        assert!(
            redis.hint.contains("never closes"),
            "both causes named: {}",
            redis.hint
        );
        let pg = &findings_of(RuleId::CloseWaitNeverRead, &c[1])[0];
        assert!(pg.hint.contains("idle_session_timeout") && pg.hint.contains("HikariCP"));
        assert!(!pg.hint.contains("keep-alive"), "{}", pg.hint);
        assert!(!pg.hint.contains("thread dump"), "{}", pg.hint);
        assert!(pg.summary.contains("after ~12s idle"), "{}", pg.summary);
        assert!(
            pg.summary
                .contains("8 sockets with the server's last message")
        );
        let leak = &findings_of(RuleId::CloseWaitNeverRead, &c[2])[0];
        assert!(
            leak.hint.contains("more than a pool keeps"),
            "{}",
            leak.hint
        );
        // Eviction settings would hide a leak, not fix it.
        assert!(
            leak.hint.contains("close every client") && !leak.hint.contains("evict"),
            "{}",
            leak.hint
        );
    }

    /// The advice follows the library the process shows, not its runtime.
    #[test]
    fn advice_follows_the_library_seen() {
        use crate::diag::testkit::SnapBuilder;
        let lib = |name: &str, path: &str| crate::model::Library {
            name: name.into(),
            version: None,
            seen_in: "maps".into(),
            path: path.into(),
        };
        let run = |port: u16, libs: Vec<crate::model::Library>| {
            let mut b = SnapBuilder::new().process(61, "python3", Some(40), Some(1024));
            for i in 0..4 {
                let local = format!("10.0.0.1:{}", 47_000 + i);
                b = b.close_wait(&local, &format!("10.0.0.7:{port}"), 1, Some(61), None);
            }
            let mut snap = b.build();
            snap.processes.get_mut(&61).unwrap().libraries = libs;
            let case = crate::diag::rules::cases::fires("x", snap, crate::diag::Severity::Info);
            findings_of(RuleId::CloseWaitNeverRead, &case).remove(0)
        };
        let a = run(
            80,
            vec![lib(
                "aiohttp",
                "/usr/lib/python3/dist-packages/aiohttp/_http_parser.so",
            )],
        );
        assert!(a.hint.contains("aiohttp seen in the process"), "{}", a.hint);
        assert!(a.hint.contains("keepalive_timeout"), "{}", a.hint);
        assert!(
            !a.hint.contains("urllib3") && !a.hint.contains("pool_maxsize"),
            "{}",
            a.hint
        );
        assert!(a.hint.contains("async with session.get"), "{}", a.hint);
        let crate::diag::Evidence::CloseWait(e) = &a.evidence else {
            panic!()
        };
        assert_eq!(e.libraries[0].name, "aiohttp");
        let m = run(3306, Vec::new());
        assert!(!m.hint.contains("psycopg"), "{}", m.hint);
        assert!(m.hint.contains("PyMySQL"), "{}", m.hint);
    }

    #[test]
    fn a_go_client_points_at_bodies_never_closed() {
        use crate::diag::testkit::SnapBuilder;
        let mut b = SnapBuilder::new().process(60, "billing-sync", Some(40), Some(1024));
        for i in 0..6 {
            let local = format!("10.0.0.1:{}", 46_000 + i);
            b = b.close_wait(&local, "10.0.0.7:443", 1, Some(60), None);
        }
        let mut snap = b.build();
        snap.processes.get_mut(&60).unwrap().runtime = Some("Go".into());
        let case = crate::diag::rules::cases::fires("go", snap, crate::diag::Severity::Info);
        let f = &findings_of(RuleId::CloseWaitNeverRead, &case)[0];
        assert!(f.hint.contains("Body was never closed"), "{}", f.hint);
        assert!(f.hint.contains("resp.Body"), "{}", f.hint);
        let crate::diag::Evidence::CloseWait(e) = &f.evidence else {
            panic!()
        };
        assert_eq!(e.runtime.as_deref(), Some("Go"));
        assert_eq!(e.service.as_deref(), Some("HTTPS"));
    }
}

#[cfg(test)]
mod local_peer_tests {
    use crate::diag::rules::cases::{findings_of, fires};
    use crate::diag::rules::{Evidence, RuleId};
    use crate::diag::testkit::SnapBuilder;
    use crate::diag::{Severity, listener::ServiceSource};
    use crate::model::Process;

    fn named(comm: &str, exe: &str, args: &[&str]) -> Process {
        let mut p = Process::named(comm);
        p.exe = Some(exe.into());
        p.cmdline = Some(args.iter().map(|a| a.to_string()).collect());
        p
    }

    /// A JVM pool towards a server on this host: `server` listens on
    /// `listen`, the pool's 5 sockets point at `peer`.
    fn pool_to(listen: &str, peer: &str, server: Process) -> crate::model::Snapshot {
        let mut b = SnapBuilder::new().listen(listen, Some(7), 0, 128).process(
            30,
            "java",
            Some(60),
            Some(10_000),
        );
        for i in 0..5 {
            let local = format!("127.0.0.1:{}", 47_000 + i);
            b = b.close_wait(&local, peer, 1, Some(30), Some((9_000, 9_000, 6_000)));
        }
        let mut snap = b.build();
        snap.processes.insert(7, server);
        snap
    }

    #[test]
    fn a_local_server_is_named_by_its_listener_with_its_stated_setting() {
        let maria = named(
            "mariadbd",
            "/usr/sbin/mariadbd",
            &["/usr/sbin/mariadbd", "--port=3307", "--wait-timeout=3"],
        );
        let case = fires(
            "mariadb on 3307",
            pool_to("127.0.0.1:3307", "127.0.0.1:3307", maria),
            Severity::Info,
        );
        let f = &findings_of(RuleId::CloseWaitNeverRead, &case)[0];
        let Evidence::CloseWait(e) = &f.evidence else {
            panic!()
        };
        let ps = e.peer_service.as_ref().unwrap();
        assert_eq!(
            (ps.source, ps.pid, ps.name.as_str()),
            (ServiceSource::Listener, Some(7), "MariaDB")
        );
        assert_eq!(e.service.as_deref(), Some("MariaDB"));
        assert!(f.summary.contains("(MariaDB, pid 7)"), "{}", f.summary);
        assert!(
            f.hint.contains("`--wait-timeout=3`") && f.hint.contains("mariadbd (pid 7)"),
            "{}",
            f.hint
        );
        assert!(
            f.hint.contains("HikariCP") && f.hint.contains("limit here: 3 s"),
            "{}",
            f.hint
        );
        assert!(
            !f.hint.contains("28800"),
            "the stated setting, not the default: {}",
            f.hint
        );
        // The same pool towards a remote 3307: nothing names the service.
        let mut remote = pool_to("127.0.0.1:3307", "10.9.9.9:3307", named("x", "/x", &["x"]));
        remote
            .sockets
            .retain(|s| s.state != crate::model::TcpState::Listen);
        let case = fires("remote 3307", remote, Severity::Info);
        let f = &findings_of(RuleId::CloseWaitNeverRead, &case)[0];
        let Evidence::CloseWait(e) = &f.evidence else {
            panic!()
        };
        assert!(e.peer_service.is_none() && e.service.is_none(), "{e:?}");
        assert!(f.hint.contains("its idle timeout"), "{}", f.hint);
    }

    #[test]
    fn a_proxy_in_front_gets_proxy_advice_not_web_server_advice() {
        let haproxy = named(
            "haproxy",
            "/usr/sbin/haproxy",
            &["haproxy", "-f", "/etc/haproxy/haproxy.cfg"],
        );
        let case = fires(
            "haproxy on 80",
            pool_to("0.0.0.0:80", "127.0.0.1:80", haproxy),
            Severity::Info,
        );
        let f = &findings_of(RuleId::CloseWaitNeverRead, &case)[0];
        assert!(
            f.hint.contains("HAProxy") && f.hint.contains("timeout http-keep-alive"),
            "{}",
            f.hint
        );
        assert!(f.hint.contains("/etc/haproxy/haproxy.cfg"), "{}", f.hint);
        for not in ["nginx", "KeepAliveTimeout", "keepAliveTimeout", "Node.js"] {
            assert!(!f.hint.contains(not), "{not} in {}", f.hint);
        }
        let Evidence::CloseWait(e) = &f.evidence else {
            panic!()
        };
        let ps = e.peer_service.as_ref().unwrap();
        assert_eq!(ps.config.as_deref(), Some("/etc/haproxy/haproxy.cfg"));
        assert_eq!(ps.setting, None);
    }
}
