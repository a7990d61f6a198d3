//! Client libraries a process shows (see `collect::libraries`), and the
//! setting of each that evicts or validates pooled connections. Every
//! entry names its upstream source; the advice is picked by the library
//! seen, not by the runtime, so an aiohttp client is not told about
//! urllib3 and a PyMySQL client is not told about psycopg2.

use crate::diag::peer::{Runtime, Service};
use crate::model::Library;

pub use crate::model::ClientLib;
use ClientLib::*;

impl ClientLib {
    /// The kind of server this library talks to.
    fn talks_to(self) -> Talks {
        match self {
            Requests | Aiohttp | Httpx | ApacheHttpClient4 | ApacheHttpClient5 | OkHttp
            | Undici | Axios | GoStd => Talks::Http,
            SqlAlchemy => Talks::AnySql,
            Psycopg2 | Psycopg3 | Asyncpg | Libpq | Pgx | LibPq | NodePg => Talks::Postgres,
            PyMySql | MysqlClient | LibMysql | GoMysql => Talks::MySql,
            HikariCp => Talks::AnySql,
            RedisPy | Hiredis | Jedis | Lettuce | GoRedis | Ioredis | NodeRedis => Talks::Redis,
        }
    }

    /// Does this library plausibly hold connections to `service`?
    /// (`None`: a port cwdiag does not recognise: any library may.)
    pub fn serves(self, service: Option<Service>) -> bool {
        let Some(s) = service else {
            return true;
        };
        match self.talks_to() {
            Talks::Http => matches!(s, Service::Http | Service::Https | Service::Elasticsearch),
            Talks::AnySql => matches!(s, Service::Postgres | Service::PgBouncer | Service::MySql),
            Talks::Postgres => matches!(s, Service::Postgres | Service::PgBouncer),
            Talks::MySql => s == Service::MySql,
            Talks::Redis => s == Service::Redis,
        }
    }

    /// How this library's pool evicts or checks idle connections; `None`
    /// for a driver whose pool is another library's (libpq, the JDBC
    /// drivers, lib/pq under database/sql).
    pub fn advice(self) -> Option<&'static str> {
        Some(match self {
            // urllib3 connectionpool.py (_get_conn: is_connection_dropped);
            // requests adapters.py (DEFAULT_POOLSIZE 10).
            Requests => {
                "requests/urllib3 never evict idle connections: a dropped one is noticed only when it is handed out again, so up to pool_maxsize (10 per host by default) of these is expected; share one Session per host, close every response"
            }
            // aio-libs/aiohttp aiohttp/connector.py, BaseConnector
            // (keepalive_timeout 15.0 unless given; force_close); a released
            // connection whose peer closed is dropped by the event loop, an
            // unreleased response keeps its connection.
            Aiohttp => {
                "aiohttp drops pooled connections the server closes once they are released: CLOSE_WAIT here means responses never read to the end nor released. Use `async with session.get(...)` (or resp.release()), keep TCPConnector keepalive_timeout (15 s by default) below the server's idle timeout, or force_close=True to stop reusing connections"
            }
            // python-httpx.org/advanced/resource-limits: keepalive_expiry 5 s,
            // max_keepalive_connections 20.
            Httpx => {
                "set httpx.Limits keepalive_expiry (5 s by default) below the server's keep-alive timeout, and close responses (`with client.stream(...)`, response.close()) and the Client itself"
            }
            // docs.sqlalchemy.org/en/20/core/pooling.html.
            SqlAlchemy => {
                "set SQLAlchemy pool_recycle below the server's idle limit (pool_pre_ping only tests a connection at checkout, so idle ones stay in CLOSE_WAIT until then)"
            }
            // psycopg/psycopg2 lib/pool.py: getconn() checks nothing.
            Psycopg2 => {
                "psycopg2.pool never checks or evicts idle connections: put them back only briefly, or use a pool with an idle limit (SQLAlchemy pool_recycle, psycopg_pool max_idle) below the server's"
            }
            // psycopg.org/psycopg3/docs/api/pool.html: max_idle 600 s,
            // max_lifetime 3600 s.
            Psycopg3 => {
                "with psycopg_pool set max_idle (600 s by default) and max_lifetime below the server's idle limit; a bare psycopg connection kept open idle is closed only by your code"
            }
            // PyMySQL has no pool: Connection.ping(reconnect=True).
            PyMySql => {
                "PyMySQL has no pool of its own: a connection kept idle past wait_timeout stays open until the code uses or closes it; close idle connections, call conn.ping(reconnect=True) before reuse, or pool them with SQLAlchemy pool_recycle below wait_timeout"
            }
            MysqlClient => {
                "mysqlclient (MySQLdb) has no pool of its own: close connections the code no longer uses, or pool them with SQLAlchemy pool_recycle below wait_timeout"
            }
            // redis/redis-py redis/connection.py: health_check_interval is
            // checked at checkout; no background eviction.
            RedisPy | Hiredis => {
                "redis-py's pool has no background eviction (health_check_interval only checks at checkout): keep the server's timeout at 0 for pooled clients, or expect up to the pool size of these"
            }
            Asyncpg => {
                "set asyncpg.create_pool max_inactive_connection_lifetime (300 s by default) below the server's idle limit"
            }
            // brettwooldridge/HikariCP README: maxLifetime "several seconds
            // shorter than any database or infrastructure imposed
            // connection time limit"; idleTimeout only below
            // maximumPoolSize; keepaliveTime since 4.0.0.
            HikariCp => {
                "set HikariCP maxLifetime a few seconds below the server's idle limit (idleTimeout acts only when minimumIdle is below maximumPoolSize; keepaliveTime needs HikariCP 4+)"
            }
            // httpcomponents-client 4.x PoolingHttpClientConnectionManager:
            // validateAfterInactivity 2000 ms is checked on lease;
            // HttpClientBuilder.evictIdleConnections runs a background thread.
            ApacheHttpClient4 => {
                "Apache HttpClient 4 checks idle connections only when leasing them (validateAfterInactivity): add HttpClientBuilder.evictIdleConnections (or an IdleConnectionEvictor) below the server's keep-alive timeout, and close every response"
            }
            ApacheHttpClient5 => {
                "Apache HttpClient 5: set ConnectionConfig timeToLive, or HttpClientBuilder.evictIdleConnections, below the server's keep-alive timeout, and close every response"
            }
            // square/okhttp ConnectionPool(5, 5 min).
            OkHttp => {
                "OkHttp's ConnectionPool keeps up to 5 idle connections for 5 minutes by default: give it a keepAliveDuration below the server's keep-alive timeout, and close every Response body"
            }
            // redis/jedis JedisPoolConfig.java.
            Jedis => {
                "with Jedis keep JedisPoolConfig's evictor (testWhileIdle, timeBetweenEvictionRuns) with minEvictableIdleTime below the server's timeout; a plain GenericObjectPoolConfig leaves the evictor off"
            }
            Lettuce => {
                "Lettuce shares one connection by default; with ConnectionPoolSupport configure the commons-pool evictor (timeBetweenEvictionRuns, minEvictableIdleTime) below the server's timeout"
            }
            // jackc/pgx pgxpool: MaxConnIdleTime 30 min, MaxConnLifetime
            // 1 h, closed by its background health check.
            Pgx => {
                "set pgxpool's MaxConnIdleTime (30 min by default) below the server's idle limit; with database/sql call db.SetConnMaxIdleTime"
            }
            // golang/go database/sql: SetConnMaxIdleTime, SetMaxIdleConns.
            LibPq | GoMysql => {
                "call db.SetConnMaxIdleTime (database/sql) below the server's idle limit"
            }
            // redis/go-redis options.go: ConnMaxIdleTime 30 min, closed
            // lazily before reuse.
            GoRedis => {
                "set go-redis ConnMaxIdleTime (30 min by default, checked before reuse) below the server's timeout"
            }
            // golang/go src/net/http/transport.go (IdleConnTimeout 90 s in
            // DefaultTransport; errServerClosedIdle), response.go.
            GoStd => {
                "always close (and drain) resp.Body, and keep Transport.IdleConnTimeout (90 s in DefaultTransport) below the server's keep-alive timeout"
            }
            // nodejs/undici docs/docs/api/Client.md: keepAliveTimeout 4 s.
            Undici => {
                "set undici's keepAliveTimeout (4 s by default; the server's Keep-Alive hint overrides it) below the server's keep-alive timeout, and consume or cancel every response body"
            }
            NodePg => "set pg.Pool idleTimeoutMillis below the server's idle limit",
            Ioredis | NodeRedis => {
                "a Node Redis client keeps one connection per client: close clients the code no longer uses, or keep the server's timeout at 0"
            }
            Axios => {
                "axios uses Node's http.Agent: give the agent a timeout below the server's keep-alive timeout (http.globalAgent since Node 19: keepAlive with a 5 s timeout)"
            }
            Libpq | LibMysql => return None,
        })
    }

    /// Does the library notice a server's FIN on its own (an event loop
    /// or a read loop on every pooled connection)?
    pub fn watches_idle(self) -> bool {
        matches!(self, Aiohttp | GoStd)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Talks {
    Http,
    Postgres,
    MySql,
    AnySql,
    Redis,
}

/// The libraries of `libs` that may hold connections to `service`,
/// most specific first (a pool before its driver), each once.
pub fn relevant(libs: &[Library], service: Option<Service>) -> Vec<ClientLib> {
    // A server named by its program (MariaDB, nginx) speaks its protocol's.
    let service = service.map(Service::protocol);
    let mut out: Vec<ClientLib> = libs
        .iter()
        .filter_map(|l| ClientLib::parse(&l.name))
        .filter(|l| l.serves(service))
        .collect();
    out.sort_by_key(|l| (rank(*l), *l));
    out.dedup();
    out
}

/// Pools before drivers, drivers before the Go toolchain.
fn rank(l: ClientLib) -> u8 {
    match l {
        SqlAlchemy | HikariCp | Pgx => 0,
        Libpq | LibMysql | Hiredis => 2,
        GoStd => 3,
        _ => 1,
    }
}

/// The advice for a process's pooled connections to `service`: from the
/// libraries it shows when one fits, else by runtime without naming a
/// library the process does not show; `None` when nothing is certain.
pub fn fix(libs: &[Library], service: Option<Service>, runtime: Option<Runtime>) -> Option<String> {
    let seen = relevant(libs, service);
    let mut advice: Vec<&str> = Vec::new();
    for l in &seen {
        if let Some(a) = l.advice()
            && !advice.contains(&a)
        {
            advice.push(a);
        }
        // One pool's advice covers its drivers; two HTTP clients both get theirs.
        if advice.len() == 2 || (rank(*l) == 0 && !advice.is_empty()) {
            break;
        }
    }
    if !advice.is_empty() {
        return Some(advice.join("; "));
    }
    by_runtime(service, runtime).map(str::to_string)
}

/// When no library is visible: the runtime's standard or usual choices,
/// named as possibilities.
fn by_runtime(service: Option<Service>, runtime: Option<Runtime>) -> Option<&'static str> {
    use Runtime::*;
    use Service::*;
    Some(match (service?.protocol(), runtime?) {
        (Redis, CPython) => RedisPy.advice()?,
        (Redis, Jvm) => Jedis.advice()?,
        (Redis, Go) => GoRedis.advice()?,
        (Postgres | PgBouncer, Jvm) | (MySql, Jvm) => {
            "with HikariCP (no pool jar was visible in the process) set maxLifetime a few seconds below the server's idle limit; with another pool, its idle eviction or maximum lifetime"
        }
        (Postgres | PgBouncer, CPython) => {
            "psycopg2.pool never evicts idle connections; with SQLAlchemy set pool_recycle, with psycopg_pool max_idle, below the server's idle limit (no pool library was visible in the process)"
        }
        (MySql, CPython) => {
            "PyMySQL and mysqlclient have no pool of their own (close idle connections, or ping(reconnect=True) before reuse); with SQLAlchemy set pool_recycle below wait_timeout (no pool library was visible in the process)"
        }
        (Postgres | PgBouncer | MySql, Go) => LibPq.advice()?,
        (Postgres, Node) => NodePg.advice()?,
        (Kafka, _) => {
            "keep the client's connections.max.idle.ms below the broker's (client default 9 min)"
        }
        (MongoDb, _) => {
            "set the driver's maxIdleTimeMS below the idle limit of whatever closes these"
        }
        // Apache HttpClient 4.x/5.x; java.net.http; HttpURLConnection KeepAliveCache.
        (Http | Https | Elasticsearch, Jvm) => {
            "with Apache HttpClient (no HTTP client jar was visible) enable evictIdleConnections below the server's keep-alive timeout; java.net.http.HttpClient keeps idle connections jdk.httpclient.keepalive.timeout (1200 s through JDK 19, 30 s from JDK 20); HttpURLConnection's keep-alive cache drops idle connections by itself after 5 s, so a few short-lived ones are expected there"
        }
        (Http | Https | Elasticsearch, CPython) => {
            "requests/urllib3 never evict idle connections (up to pool_maxsize, 10 per host, is expected); httpx expires them after keepalive_expiry (5 s); close every response (no HTTP library was visible: requests, urllib3 and httpx are pure Python and map nothing)"
        }
        (Http | Https | Elasticsearch, Go) => GoStd.advice()?,
        // nodejs.org/api/http.html; undici Client.md.
        (Http | Https | Elasticsearch, Node) => {
            "give the http.Agent a timeout below the server's keep-alive timeout; fetch() (undici, built into Node 18+) keeps idle connections keepAliveTimeout (4 s by default)"
        }
        // learn.microsoft.com SocketsHttpHandler.PooledConnectionIdleTimeout.
        (Http | Https | Elasticsearch, DotNet) => {
            "set SocketsHttpHandler.PooledConnectionIdleTimeout below the server's keep-alive timeout"
        }
        _ => return None,
    })
}

/// `aiohttp (maps: .../aiohttp/_http_parser...so)`, for words.
pub fn seen_words(libs: &[ClientLib], all: &[Library]) -> String {
    let names: Vec<String> = libs
        .iter()
        .filter_map(|l| {
            let lib = all.iter().find(|x| x.name == l.name())?;
            Some(match &lib.version {
                Some(v) => format!("{} {}", l.name(), crate::procname::printable(v)),
                None => l.name().to_string(),
            })
        })
        .collect();
    names.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lib(name: &str) -> Library {
        Library {
            name: name.to_string(),
            version: None,
            seen_in: "maps".into(),
            path: "/x".into(),
        }
    }

    #[test]
    fn names_parse_back_and_every_pool_has_advice() {
        for l in ClientLib::ALL {
            assert_eq!(ClientLib::parse(l.name()), Some(l));
        }
        assert!(
            ClientLib::ALL
                .iter()
                .filter(|l| l.advice().is_none())
                .count()
                <= 2
        );
    }

    #[test]
    fn the_library_seen_decides_not_the_runtime() {
        let http = Some(Service::Http);
        let a = fix(&[lib("aiohttp")], http, Some(Runtime::CPython)).unwrap();
        assert!(
            a.contains("aiohttp") && a.contains("keepalive_timeout"),
            "{a}"
        );
        assert!(!a.contains("urllib3") && !a.contains("pool_maxsize"), "{a}");
        let m = fix(&[], Some(Service::MySql), Some(Runtime::CPython)).unwrap();
        assert!(!m.contains("psycopg"), "{m}");
        let m = fix(
            &[lib("PyMySQL")],
            Some(Service::MySql),
            Some(Runtime::CPython),
        )
        .unwrap();
        assert!(m.contains("PyMySQL") && !m.contains("psycopg"), "{m}");
        // A library for another kind of server is not advice for this one.
        let r = fix(
            &[lib("psycopg2")],
            Some(Service::Redis),
            Some(Runtime::CPython),
        )
        .unwrap();
        assert!(r.contains("redis-py") && !r.contains("psycopg"), "{r}");
        // A pool before its driver.
        let h = fix(
            &[lib("libpq"), lib("SQLAlchemy"), lib("psycopg2")],
            Some(Service::Postgres),
            Some(Runtime::CPython),
        )
        .unwrap();
        assert!(h.starts_with("set SQLAlchemy pool_recycle"), "{h}");
        let j = fix(&[lib("HikariCP")], Some(Service::MySql), Some(Runtime::Jvm)).unwrap();
        assert!(j.contains("maxLifetime"), "{j}");
        let g = fix(
            &[lib("Go"), lib("pgx")],
            Some(Service::Postgres),
            Some(Runtime::Go),
        )
        .unwrap();
        assert!(g.contains("MaxConnIdleTime"), "{g}");
        assert_eq!(fix(&[], None, Some(Runtime::Jvm)), None);
    }
}
