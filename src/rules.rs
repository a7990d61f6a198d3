//! The catalogue of every rule cwdiag can raise, with the long write-up
//! `cwdiag explain RULE_ID` prints. A test checks that every rule id used
//! in the source is here.

/// One rule's write-up.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    pub id: &'static str,
    pub title: &'static str,
    pub meaning: &'static str,
    pub confirm: &'static str,
    pub fix: &'static str,
    pub avoid: &'static str,
}

const CW_AVOID: &str = "No sysctl fixes CLOSE_WAIT. Lowering tcp_keepalive_time does nothing without SO_KEEPALIVE, and when keepalive does kill the socket the fd stays leaked (the seed post's '2 hours' is tcp_keepalive_time, not a CLOSE_WAIT timer). SO_REUSEADDR is irrelevant: the CLOSE_WAIT socket still owns its 4-tuple. SO_LINGER {1,0} only acts inside close(), which is never called. `ss -K` resets the TCP side but leaves the fd leaked.";

pub const RULES: &[Rule] = &[
    Rule {
        id: "close-wait-growing",
        title: "CLOSE_WAIT rising at every sample",
        meaning: "Across several samples (`scan --samples`, `watch`, `assert --samples`) the CLOSE_WAIT count of one process and port never fell and rose overall. A pool may hold a steady handful of CLOSE_WAIT sockets; a count that only grows is a leak that ends in 'too many open files'.",
        confirm: "`cwdiag watch` shows the group's delta and rate per minute climbing; `cwdiag assert --samples 5 --interval 10s --max-close-wait-growth 0` fails naming it.",
        fix: "Find the missing close() on the EOF and error paths of that process (see the Recv-Q rules for which path); restart it for relief.",
        avoid: CW_AVOID,
    },
    Rule {
        id: "close-wait-never-read",
        title: "CLOSE_WAIT, never read after the peer closed (Recv-Q 1)",
        meaning: "The peer sent FIN; the socket's Recv-Q is 1 because the FIN takes one sequence number and the application has not read since. It is an idle connection the application forgot or keeps in a pool without watching it. CLOSE_WAIT has no timer: it lasts until close().",
        confirm: "ss -tanp state close-wait shows Recv-Q 1 for these sockets; the owning process keeps them across many scans (`cwdiag assert --samples` shows they do not go away).",
        fix: "Make the pool or server notice EOF on idle connections and close them: evict idle connections sooner than the server's idle timeout (Apache HttpClient evictIdleConnections/IdleConnectionEvictor, HikariCP maxLifetime, a client idle timeout shorter than the server's keep-alive); in servers, watch idle connections for readability and close on read() == 0.",
        avoid: CW_AVOID,
    },
    Rule {
        id: "close-wait-eof-not-closed",
        title: "CLOSE_WAIT, EOF read but never closed (Recv-Q 0)",
        meaning: "The application read the end of file (read() returned 0, which consumed the FIN) and still did not call close(): a missing close() on the EOF path of its read loop.",
        confirm: "Recv-Q 0 on CLOSE_WAIT sockets of one process; strace -p PID shows read()/recv() returning 0 without a following close() on that fd.",
        fix: "Call close() whenever read() returns 0 and on every error path (try/finally, defer, RAII). In Go, always resp.Body.Close() (and drain the body).",
        avoid: CW_AVOID,
    },
    Rule {
        id: "close-wait-unread-data",
        title: "CLOSE_WAIT with unread data (Recv-Q > 1)",
        meaning: "Data and the FIN are both unread: the application stopped reading this socket (hung or blocked handler, a thread stuck elsewhere). When it finally closes it, the kernel sends RST instead of FIN because unread data is discarded (TCPAbortOnClose).",
        confirm: "Recv-Q > 1 on CLOSE_WAIT sockets; a thread dump (jstack, py-spy, gdb) or strace of the owner shows the handlers blocked.",
        fix: "Find and unblock the stuck handlers (timeouts on downstream calls, bounded worker pools); make sure every handler reads to EOF or closes on timeout.",
        avoid: CW_AVOID,
    },
    Rule {
        id: "accept-queue-not-drained",
        title: "Connections the listener never accepted",
        meaning: "ESTABLISHED or CLOSE_WAIT sockets with inode 0 on a listening port are children still in the accept queue: the application never called accept() for them. CLOSE_WAIT among them means the clients already gave up. The listener's Recv-Q is the queue length and its Send-Q the backlog.",
        confirm: "ss -ltn shows the listener's Recv-Q near its Send-Q; nstat -az TcpExtListenOverflows TcpExtListenDrops keep rising.",
        fix: "Fix the accept loop (hung, blocked or too slow); then raise the listen() backlog and net.core.somaxconn (the effective backlog is the smaller of the two; somaxconn defaults to 4096 since 5.4, Node caps at 511).",
        avoid: "tcp_abort_on_overflow=1 turns the overflow into resets for clients; ip-sysctl advises it only when the listener cannot be made faster. Raising the backlog alone hides a stuck accept loop.",
    },
    Rule {
        id: "time-wait-server-closes",
        title: "TIME_WAIT on a local listening port",
        meaning: "This host's server closed these connections first (the active closer keeps TIME_WAIT for a fixed 60 s). On a server port this uses no ephemeral ports and is usually harmless.",
        confirm: "ss -tan state time-wait sport = :PORT; compare the count with tcp_max_tw_buckets.",
        fix: "Nothing unless it nears tcp_max_tw_buckets. To reduce it: HTTP keep-alive so fewer connections are closed, or a protocol where the client closes first.",
        avoid: "Do not lower tcp_fin_timeout (it does not change TIME_WAIT), do not lower tcp_max_tw_buckets, never tcp_tw_recycle (removed in 4.12). tcp_tw_reuse only applies to outgoing connects.",
    },
    Rule {
        id: "time-wait-client-churn",
        title: "TIME_WAIT towards one destination",
        meaning: "This host opens and closes many short connections to one destination; each close holds a local port for 60 s. The budget per (source IP, destination IP, destination port) is ip_local_port_range minus reserved ports (28,232 by default, about 470 new connections/s).",
        confirm: "ss -tan state time-wait dst IP:PORT | wc -l over time; the remaining-time histogram in the group shows the close rate.",
        fix: "Reuse connections (HTTP keep-alive, pools sized to the real concurrency; Go's MaxIdleConnsPerHost defaults to 2). tcp_tw_reuse=1 lets outgoing connects reuse TIME_WAIT ports after 1 s when TCP timestamps are on. SO_LINGER {1,0} skips TIME_WAIT but resets the connection: only where the protocol already confirmed delivery.",
        avoid: "Lowering tcp_fin_timeout does not shorten TIME_WAIT; tcp_tw_recycle broke clients behind NAT and was removed in 4.12.",
    },
    Rule {
        id: "ephemeral-ports-exhausted",
        title: "Ephemeral ports towards one destination running out",
        meaning: "Local ports held (every state, TIME_WAIT included) per (source IP, destination IP, destination port) against ip_local_port_range minus ip_local_reserved_ports. At 100 % connect() fails with EADDRNOTAVAIL ('Cannot assign requested address') and the CPU burns in __inet_check_established.",
        confirm: "Application logs show EADDRNOTAVAIL; the ratio in the evidence approaches 1; sysctl net.ipv4.ip_local_port_range.",
        fix: "Reuse connections; add source IPs or destination addresses (the budget is per 4-tuple); tcp_tw_reuse=1 for outgoing connects with timestamps on; widen ip_local_port_range while reserving service ports with ip_local_reserved_ports.",
        avoid: "tcp_fin_timeout does not shorten TIME_WAIT; tcp_tw_recycle is gone; bind() before connect() takes ports exclusively unless IP_BIND_ADDRESS_NO_PORT is set.",
    },
    Rule {
        id: "time-wait-buckets-full",
        title: "TIME_WAIT at or near tcp_max_tw_buckets",
        meaning: "Past tcp_max_tw_buckets the kernel skips TIME_WAIT for new closes and counts TcpExt TCPTimeWaitOverflow, losing the protection TIME_WAIT gives against late segments.",
        confirm: "nstat -az TcpExtTCPTimeWaitOverflow rising; sockstat tw near the limit.",
        fix: "Restore the default limit (ehash/2) if it was lowered, and cut the close rate by reusing connections.",
        avoid: "ip-sysctl: 'you must not lower the limit'. Lowering it to 'get rid of' TIME_WAIT is the seed post's trap.",
    },
    Rule {
        id: "sysctl-tcp-tw-recycle",
        title: "tcp_tw_recycle is enabled",
        meaning: "tcp_tw_recycle (kernels before 4.12) dropped SYNs from clients behind NAT, which share an address but not a monotonic timestamp clock; it was removed for that reason.",
        confirm: "sysctl net.ipv4.tcp_tw_recycle prints 1; clients behind NAT see intermittent connect timeouts.",
        fix: "Set it to 0. Use connection reuse, or tcp_tw_reuse=1 for outgoing connects.",
        avoid: "Never enable it, whatever old blog posts say.",
    },
    Rule {
        id: "sysctl-fin-timeout-myth",
        title: "tcp_fin_timeout lowered, TIME_WAIT unchanged",
        meaning: "tcp_fin_timeout bounds orphaned FIN_WAIT2 sockets only. TIME_WAIT is fixed at 60 s (TCP_TIMEWAIT_LEN) on upstream Linux; this setting does not shorten it.",
        confirm: "TIME_WAIT sockets still show up to 60 s left (`ss -tano state time-wait`).",
        fix: "If it was lowered to fight TIME_WAIT, it did nothing for that: reuse connections instead. Leave it as it is if orphaned FIN_WAIT2 was the real concern.",
        avoid: "Do not expect any sysctl to shorten TIME_WAIT on upstream kernels.",
    },
    Rule {
        id: "sysctl-keepalive-myth",
        title: "tcp_keepalive_time lowered against CLOSE_WAIT",
        meaning: "Keepalive only runs on SO_KEEPALIVE sockets. A peer that still holds its half answers the probes, so CLOSE_WAIT stays; when the probes do kill a socket, the application's fd stays leaked and the socket merely vanishes from ss.",
        confirm: "CLOSE_WAIT persists despite the lowered value; lsof shows 'can't identify protocol' fds.",
        fix: "Fix the missing close() in the application. Prefer per-socket TCP_KEEPIDLE/TCP_KEEPINTVL/TCP_KEEPCNT for detecting dead peers.",
        avoid: "Do not treat keepalive as a CLOSE_WAIT fix: it hides the leak.",
    },
    Rule {
        id: "sysctl-abort-on-overflow",
        title: "tcp_abort_on_overflow is enabled",
        meaning: "With a full accept queue the kernel resets new clients instead of dropping their handshake ACK and letting them retry.",
        confirm: "sysctl net.ipv4.tcp_abort_on_overflow prints 1; clients see connection resets under load.",
        fix: "Set it back to 0 unless the listener truly cannot be made faster; fix the accept loop and raise the backlog and somaxconn.",
        avoid: "ip-sysctl warns it can harm clients.",
    },
    Rule {
        id: "orphans-near-limit",
        title: "Orphaned sockets near tcp_max_orphans",
        meaning: "Orphans are sockets the application closed that the kernel is still finishing (FIN_WAIT1, LAST_ACK, CLOSING). Past tcp_max_orphans the kernel resets them ('TCP: too many orphaned sockets', TCPAbortOnMemory). They are counted apart from TIME_WAIT.",
        confirm: "/proc/net/sockstat 'orphan' near the limit; dmesg shows 'too many orphaned sockets'.",
        fix: "Raise tcp_max_orphans if memory allows; find peers that stop reading (FIN_WAIT1 with Send-Q); TCP_USER_TIMEOUT for app-held sockets.",
        avoid: "Never lower tcp_max_orphans; do not blame TIME_WAIT (a separate counter).",
    },
    Rule {
        id: "fd-exhaustion-risk",
        title: "Leaking process approaching RLIMIT_NOFILE",
        meaning: "Each leaked CLOSE_WAIT socket keeps a file descriptor. At RLIMIT_NOFILE, accept() and open() fail with EMFILE ('too many open files'). The projection uses the CLOSE_WAIT count over the oldest socket's age, so it is an estimate.",
        confirm: "ls /proc/PID/fd | wc -l against 'Max open files' in /proc/PID/limits, over time.",
        fix: "Fix the missing close(); restart the process before it reaches the limit. Raising the limit only buys time.",
        avoid: "Raising ulimit -n as the fix.",
    },
    Rule {
        id: "stale-socket-fds",
        title: "Socket fds that no socket table knows",
        meaning: "A socket fd whose inode is in no TCP, UDP, UNIX, raw, netlink or packet table is almost always a TCP connection the kernel already closed (RST from the peer or a keepalive timeout) whose fd the application never close()d: lsof's 'can't identify protocol'. It is the CLOSE_WAIT leak after the kernel gave up on it. Sockets opened after the dump are no such thing: cwdiag checks each fd against a second look at the table, taken after reading the fds, and counts only those still held and still in no table.",
        confirm: "lsof -p PID shows 'can't identify protocol' / 'protocol: TCP' entries; their number grows.",
        fix: "The same as for CLOSE_WAIT: close() on EOF and on errors. Restart the process for relief.",
        avoid: "A socket created in another network namespace and held by this process, or one created but not yet connected, also appears here: check before concluding.",
    },
];

pub fn find(id: &str) -> Option<&'static Rule> {
    RULES.iter().find(|r| r.id == id)
}

/// The write-up `cwdiag explain RULE_ID` prints.
pub fn render(r: &Rule, width: usize) -> String {
    let opts = |indent: &'static str| {
        textwrap::Options::new(width)
            .initial_indent(indent)
            .subsequent_indent(indent)
    };
    let mut out = format!("{}: {}\n", r.id, r.title);
    for (head, body) in [
        ("What it means", r.meaning),
        ("How to confirm", r.confirm),
        ("Fix", r.fix),
        ("What not to do", r.avoid),
    ] {
        out.push_str(&format!("\n{head}\n{}\n", textwrap::fill(body, opts("  "))));
    }
    out
}

/// One line per rule, for `cwdiag explain` without an argument.
pub fn list() -> String {
    let w = RULES.iter().map(|r| r.id.len()).max().unwrap_or(0);
    RULES
        .iter()
        .map(|r| format!("{:w$}  {}\n", r.id, r.title))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_id_in_the_source_is_explained() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src");
        let mut seen = Vec::new();
        for entry in walk(std::path::Path::new(dir)) {
            let text = std::fs::read_to_string(&entry).unwrap();
            if entry.ends_with("rules.rs") {
                continue;
            }
            // Rule ids appear as string literals passed to finding() or
            // returned by rule_id()/time_wait().
            for cap in text.split('"').skip(1).step_by(2) {
                let is_rule = [
                    "close-wait-",
                    "time-wait-",
                    "accept-queue-",
                    "ephemeral-",
                    "sysctl-",
                    "orphans-",
                    "fd-exhaustion",
                    "stale-socket",
                ]
                .iter()
                .any(|p| cap.starts_with(p))
                    && cap.chars().all(|c| c.is_ascii_lowercase() || c == '-');
                if is_rule {
                    seen.push(cap.to_string());
                }
            }
        }
        assert!(seen.len() >= RULES.len(), "{seen:?}");
        for id in &seen {
            assert!(find(id).is_some(), "rule {id} is emitted but not explained");
        }
    }

    fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
        out
    }

    #[test]
    fn ids_are_unique_and_kebab_case() {
        let mut ids: Vec<_> = RULES.iter().map(|r| r.id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), RULES.len());
        assert!(
            ids.iter()
                .all(|i| i.chars().all(|c| c.is_ascii_lowercase() || c == '-'))
        );
    }
}
