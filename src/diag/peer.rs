//! What the peer is, and what the owner runs on: the server-side setting
//! that closes idle connections and the client-side setting that evicts
//! them, per service and runtime. Sources are the projects' own
//! documentation (named beside each entry); where none was certain the
//! hint stays generic.

use crate::procname::Interpreter;

/// A well-known service, recognised by its port or, for a local peer,
/// by the program holding the listener (`diag::listener`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Redis,
    Postgres,
    PgBouncer,
    MySql,
    Memcached,
    Kafka,
    MongoDb,
    Amqp,
    Elasticsearch,
    Http,
    Https,
    // Recognised by program only.
    MariaDb,
    Nginx,
    Apache,
    HaProxy,
    Envoy,
    NodeHttp,
    Gunicorn,
    JvmServer,
}

impl Service {
    /// The service usually found on `port` (IANA or the upstream default).
    pub fn by_port(port: u16) -> Option<Service> {
        Some(match port {
            6379 => Service::Redis,
            5432 => Service::Postgres,
            6432 => Service::PgBouncer,
            3306 => Service::MySql,
            11211 => Service::Memcached,
            9092 => Service::Kafka,
            27017 => Service::MongoDb,
            5672 => Service::Amqp,
            9200 => Service::Elasticsearch,
            80 | 8000 | 8080 | 8081 | 3000 | 5000 => Service::Http,
            443 | 8443 => Service::Https,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Service::Redis => "Redis",
            Service::Postgres => "PostgreSQL",
            Service::PgBouncer => "PgBouncer",
            Service::MySql => "MySQL/MariaDB",
            Service::Memcached => "memcached",
            Service::Kafka => "Kafka",
            Service::MongoDb => "MongoDB",
            Service::Amqp => "AMQP (RabbitMQ)",
            Service::Elasticsearch => "Elasticsearch",
            Service::Http => "HTTP",
            Service::Https => "HTTPS",
            Service::MariaDb => "MariaDB",
            Service::Nginx => "nginx",
            Service::Apache => "Apache httpd",
            Service::HaProxy => "HAProxy",
            Service::Envoy => "Envoy",
            Service::NodeHttp => "a Node.js server",
            Service::Gunicorn => "gunicorn",
            Service::JvmServer => "a JVM server",
        }
    }

    /// The protocol family the client advice is keyed on: a MariaDB
    /// server speaks MySQL's protocol, nginx or HAProxy HTTP.
    pub fn protocol(self) -> Service {
        match self {
            Service::MariaDb => Service::MySql,
            Service::Nginx
            | Service::Apache
            | Service::HaProxy
            | Service::Envoy
            | Service::NodeHttp
            | Service::Gunicorn => Service::Http,
            other => other,
        }
    }

    /// A proxy: the connections it closes are its own client side.
    pub fn is_proxy(self) -> bool {
        matches!(self, Service::HaProxy | Service::Envoy)
    }

    /// The server's setting that closes idle client connections, with its
    /// default.
    pub fn idle_close_setting(self) -> &'static str {
        match self {
            // redis.conf: "timeout 0" (never); tcp-keepalive only probes.
            Service::Redis => {
                "Redis closes idle clients after `timeout` seconds (default 0, never)"
            }
            // runtime-config-client: both default to 0 (disabled).
            Service::Postgres => {
                "PostgreSQL closes idle sessions after idle_session_timeout (idle_in_transaction_session_timeout inside a transaction), sending error 57P05 (25P03) before its FIN"
            }
            // pgbouncer config.md.
            Service::PgBouncer => "PgBouncer closes idle clients after client_idle_timeout",
            // server-system-variables: 28800 s; 8.0.24+ sends ER_CLIENT_INTERACTION_TIMEOUT first.
            Service::MySql => {
                "the server closes idle connections after wait_timeout (interactive_timeout for interactive clients; default 28800 s)"
            }
            // memcached -h: "-o idle_timeout".
            Service::Memcached => "memcached closes idle connections with -o idle_timeout=N",
            // Broker config connections.max.idle.ms (600000 ms).
            Service::Kafka => {
                "the broker closes idle connections after connections.max.idle.ms (default 10 min)"
            }
            Service::MongoDb => {
                "mongod keeps idle connections; a proxy, load balancer or NAT on the path may close them"
            }
            // rabbitmq.com/docs/heartbeats.
            Service::Amqp => {
                "RabbitMQ closes connections only when heartbeats are missed (heartbeat, default 60 s)"
            }
            Service::Elasticsearch => {
                "Elasticsearch closes HTTP connections after http.read_timeout (default none) or a proxy does"
            }
            Service::Http | Service::Https => {
                "HTTP servers close idle keep-alive connections after their keep-alive timeout (nginx keepalive_timeout 75 s, Apache KeepAliveTimeout 5 s, Node.js server.keepAliveTimeout 5 s)"
            }
            // mariadb.com wait_timeout: 28800 s.
            Service::MariaDb => {
                "MariaDB closes idle connections after wait_timeout (interactive_timeout for interactive clients; default 28800 s)"
            }
            // ngx_http_core_module: keepalive_timeout 75 s; keepalive_requests 1000.
            Service::Nginx => {
                "nginx closes idle keep-alive connections after keepalive_timeout (default 75 s) and after keepalive_requests requests (default 1000)"
            }
            // httpd.h: DEFAULT_KEEPALIVE_TIMEOUT 5, DEFAULT_KEEPALIVE 100.
            Service::Apache => {
                "Apache httpd closes idle keep-alive connections after KeepAliveTimeout (default 5 s) and after MaxKeepAliveRequests requests (default 100)"
            }
            // haproxy configuration.txt: no built-in default.
            Service::HaProxy => {
                "HAProxy closes idle client connections after `timeout http-keep-alive` (if unset, `timeout http-request`, then `timeout client`; none is built in)"
            }
            // envoy protocol.proto: HttpProtocolOptions.idle_timeout, 1 h.
            Service::Envoy => {
                "Envoy closes idle connections after common_http_protocol_options.idle_timeout (default 1 h)"
            }
            // nodejs.org/api/http.html#serverkeepalivetimeout.
            Service::NodeHttp => {
                "a Node.js http.Server closes idle keep-alive connections after server.keepAliveTimeout (default 5 s)"
            }
            // docs.gunicorn.org settings: keepalive, default 2 s.
            Service::Gunicorn => {
                "gunicorn closes idle keep-alive connections after --keep-alive seconds (default 2; its sync workers close after every response)"
            }
            Service::JvmServer => {
                "a JVM server closes idle connections after an idle timeout set in its own configuration or code"
            }
        }
    }
}

/// How to reuse connections to this kind of server instead of opening
/// one per request (TIME_WAIT churn on the client).
pub fn reuse_advice(service: Option<Service>) -> &'static str {
    match service.map(Service::protocol) {
        Some(Service::Http | Service::Https | Service::Elasticsearch) => {
            "reuse connections with HTTP keep-alive (one client or Session per destination, idle connections per host sized to the real concurrency; Go's MaxIdleConnsPerHost defaults to 2)"
        }
        Some(Service::Postgres | Service::MySql) => {
            "reuse database connections through a pool (HikariCP, SQLAlchemy's QueuePool, database/sql) or a pooler such as PgBouncer, instead of a connection per query"
        }
        Some(Service::PgBouncer) => {
            "reuse client connections to PgBouncer through a pool in the application instead of a connection per query"
        }
        Some(Service::Redis | Service::Memcached) => {
            "reuse one client and its connection pool for the process instead of connecting per command"
        }
        Some(Service::Kafka | Service::MongoDb | Service::Amqp) => {
            "keep one long-lived client per process (its driver multiplexes requests) instead of one per operation"
        }
        // protocol() leaves only the JVM server among the rest.
        _ => "reuse connections (keep-alive, a pool sized to the real concurrency)",
    }
}

/// The runtime a process runs on, from its executable and argv[0].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    Jvm,
    CPython,
    Node,
    DotNet,
    Ruby,
    Go,
}

impl Runtime {
    /// Recognises the runtime from any of the names a process goes by
    /// (comm, executable basename, argv[0] basename).
    pub fn detect<'a>(names: impl IntoIterator<Item = &'a str>) -> Option<Runtime> {
        names.into_iter().find_map(|n| {
            let base = n.rsplit('/').next().unwrap_or(n);
            let r = match base {
                "javaw" => Runtime::Jvm,
                "dotnet" => Runtime::DotNet,
                "puma" | "unicorn" => Runtime::Ruby,
                "gunicorn" | "uwsgi" => Runtime::CPython,
                // PyPy is no CPython, whose idioms the hints name.
                b if b.starts_with("pypy") => return None,
                b => match crate::procname::interpreter(b)? {
                    Interpreter::Java => Runtime::Jvm,
                    Interpreter::Python => Runtime::CPython,
                    Interpreter::Node => Runtime::Node,
                    Interpreter::Ruby => Runtime::Ruby,
                    Interpreter::Other => return None,
                },
            };
            Some(r)
        })
    }

    /// The runtime a collector recorded by name (`Go`).
    pub fn parse(name: &str) -> Option<Runtime> {
        [
            Runtime::Jvm,
            Runtime::CPython,
            Runtime::Node,
            Runtime::DotNet,
            Runtime::Ruby,
            Runtime::Go,
        ]
        .into_iter()
        .find(|r| r.name() == name)
    }

    /// A process's runtime: what the collector read from its executable,
    /// else what its names say.
    pub fn of(p: &crate::model::Process) -> Option<Runtime> {
        p.runtime
            .as_deref()
            .and_then(Runtime::parse)
            .or_else(|| Runtime::detect(p.names()))
    }

    pub fn name(self) -> &'static str {
        match self {
            Runtime::Jvm => "JVM",
            Runtime::CPython => "CPython",
            Runtime::Node => "Node.js",
            Runtime::DotNet => ".NET",
            Runtime::Ruby => "Ruby",
            Runtime::Go => "Go",
        }
    }
}

/// The client-side setting that evicts idle pooled connections before
/// the server closes them, for this service and runtime; `None` when no
/// specific advice is certain.
pub fn client_fix(service: Option<Service>, runtime: Option<Runtime>) -> Option<&'static str> {
    use Runtime::*;
    use Service::*;
    Some(match (service?.protocol(), runtime?) {
        // redis-py: health_check_interval checks only when a connection
        // is handed out; the pool has no background eviction.
        (Redis, CPython) => {
            "redis-py's pool has no background eviction (health_check_interval only checks at checkout): keep the server's timeout at 0 for pooled clients, or expect up to the pool size of these"
        }
        // Jedis JedisPoolConfig; go-redis options.go.
        (Redis, Jvm) => {
            "with Jedis, keep JedisPoolConfig's evictor on (testWhileIdle, timeBetweenEvictionRuns) with minEvictableIdleTime below the server's timeout"
        }
        (Redis, Go) => "set go-redis ConnMaxIdleTime below the server's timeout",
        // HikariCP README: maxLifetime "several seconds shorter" than any
        // database-imposed limit.
        (Postgres | MySql | PgBouncer, Jvm) => {
            "set HikariCP maxLifetime (and keepaliveTime) a few seconds below the server's idle limit"
        }
        // psycopg2 lib/pool.py: no check; SQLAlchemy pooling docs.
        (Postgres | MySql | PgBouncer, CPython) => {
            "psycopg2.pool never checks idle connections; with SQLAlchemy set pool_recycle below the server's idle limit (pool_pre_ping checks only at checkout)"
        }
        (Postgres | MySql | PgBouncer, Go) => {
            "call db.SetConnMaxIdleTime (database/sql) below the server's idle limit"
        }
        (Postgres, Node) => "set pg.Pool idleTimeoutMillis below the server's idle limit",
        // Kafka client connections.max.idle.ms defaults to 9 min, below the broker's 10.
        (Kafka, _) => {
            "keep the client's connections.max.idle.ms below the broker's (client default 9 min)"
        }
        // MongoDB CMAP: maxIdleTimeMS, default 0 (never).
        (MongoDb, _) => {
            "set the driver's maxIdleTimeMS below the idle limit of whatever closes these"
        }
        // Apache HttpClient 4.x/5.x; java.net.http; HttpURLConnection KeepAliveCache.
        (Http | Https | Elasticsearch, Jvm) => {
            "with Apache HttpClient enable evictIdleConnections (or IdleConnectionEvictor) below the server's keep-alive timeout; java.net.http.HttpClient uses jdk.httpclient.keepalive.timeout; HttpURLConnection's keep-alive cache drops idle connections by itself after 5 s (http.keepAlive.time.server), so a few short-lived ones are expected there"
        }
        // urllib3 connectionpool: no idle eviction, 10 per host.
        (Http | Https | Elasticsearch, CPython) => {
            "requests/urllib3 never evict idle connections (up to pool_maxsize, 10 per host, is expected); reuse one Session per host and close it, and close every response"
        }
        // net/http transport.go; response.go.
        (Http | Https | Elasticsearch, Go) => {
            "always close (and drain) resp.Body; set Transport.IdleConnTimeout below the server's keep-alive timeout"
        }
        // nodejs.org/api/http.html; undici Client.md.
        (Http | Https | Elasticsearch, Node) => {
            "give the http.Agent a timeout (or undici keepAliveTimeout) below the server's keep-alive timeout"
        }
        // learn.microsoft.com SocketsHttpHandler.PooledConnectionIdleTimeout.
        (Http | Https | Elasticsearch, DotNet) => {
            "set SocketsHttpHandler.PooledConnectionIdleTimeout below the server's keep-alive timeout"
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One recogniser: the runtime a hint names is Python exactly when
    /// the label reader treats the name as a Python interpreter.
    #[test]
    fn runtime_and_label_agree_on_python_and_ruby() {
        for name in [
            "python",
            "python3",
            "python3.11",
            "python3-dbg",
            "pythonista",
            "ruby",
            "ruby3.1",
            "rubyish",
            "java",
            "node",
            "nginx",
        ] {
            let label = crate::procname::interpreter(name);
            let runtime = Runtime::detect([name]);
            assert_eq!(
                runtime == Some(Runtime::CPython),
                label == Some(Interpreter::Python),
                "{name}"
            );
            assert_eq!(
                runtime == Some(Runtime::Ruby),
                label == Some(Interpreter::Ruby),
                "{name}"
            );
        }
        assert_eq!(
            Runtime::detect(["/usr/bin/python3.11"]),
            Some(Runtime::CPython)
        );
        assert_eq!(Runtime::detect(["pythonista"]), None);
    }

    #[test]
    fn services_and_runtimes_are_recognised() {
        assert_eq!(Service::by_port(5432), Some(Service::Postgres));
        assert_eq!(Service::by_port(6379), Some(Service::Redis));
        assert_eq!(Service::by_port(40000), None);
        assert_eq!(Runtime::detect(["python3.11"]), Some(Runtime::CPython));
        assert_eq!(
            Runtime::detect(["billing-sync-wo", "/usr/lib/jvm/bin/java"]),
            Some(Runtime::Jvm)
        );
        assert_eq!(Runtime::detect(["nginx"]), None);
    }

    #[test]
    fn advice_matches_the_peer_never_another_service() {
        let redis_py = client_fix(Some(Service::Redis), Some(Runtime::CPython)).unwrap();
        assert!(redis_py.contains("redis-py"));
        assert!(!redis_py.contains("Hikari") && !redis_py.contains("HttpClient"));
        let pg = client_fix(Some(Service::Postgres), Some(Runtime::Jvm)).unwrap();
        assert!(pg.contains("HikariCP"));
        assert!(
            !Service::Postgres
                .idle_close_setting()
                .contains("keep-alive")
        );
        assert_eq!(client_fix(None, Some(Runtime::Jvm)), None);
        assert_eq!(client_fix(Some(Service::Redis), None), None);
    }
}
