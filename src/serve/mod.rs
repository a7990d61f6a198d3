//! `cwdiag serve`: a Prometheus exporter over HTTP (tiny_http).
//!
//! * `GET /metrics` scans at scrape time through the caller's `collect`
//!   closure. One scan runs at a time; a scrape that waited for a running
//!   scan gets that scan's result, and a result younger than
//!   [`ServeConfig::min_interval`] is served from cache, so a burst of
//!   scrapes costs one scan.
//! * `GET /` is a short HTML page linking to `/metrics`.
//! * Any other path is 404, any other method 405.
//! * A failed scan answers 500 with a one-line body and logs one line to
//!   stderr (`cwdiag serve: ...`).
//!
//! tiny_http reads each connection in a thread of its own, so a client that
//! sends half a request ties up only that thread; [`WORKERS`] threads answer
//! complete requests. Limits of tiny_http 0.12, which has no read or write
//! timeouts: an idle or stalled connection (keep-alive included) holds its
//! thread until the client goes away, and its thread pool can park a new
//! connection that arrives in the same instant as one that then stalls
//! until some pool thread is free again. Keep the default loopback address
//! or firewall the port so that only Prometheus talks to it.
//! If accepting connections fails (e.g. out of file descriptors), tiny_http
//! stops accepting; [`Exporter::run`] then returns the error instead of
//! hanging, so a supervisor can restart the exporter.

use anyhow::{Context, Result, anyhow};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tiny_http::{Header, Method, Request, Response, Server};

/// Default listen address: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9911";

/// Threads answering requests.
pub const WORKERS: usize = 4;

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Runs a scan and returns its exposition text.
pub type Collect = Box<dyn Fn() -> Result<String> + Send + Sync>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeConfig {
    /// `HOST:PORT` to listen on, e.g. `127.0.0.1:9911` or `[::]:9911`.
    pub listen: String,
    /// A scan younger than this is served from cache.
    pub min_interval: Duration,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            listen: DEFAULT_LISTEN.to_string(),
            min_interval: Duration::from_secs(5),
        }
    }
}

/// Binds `cfg.listen`, logs the address to stderr and serves until an
/// accept error.
pub fn serve(cfg: ServeConfig, collect: Collect) -> Result<()> {
    let exporter = bind(&cfg)?;
    eprintln!(
        "cwdiag serve: listening on http://{}/metrics",
        exporter.local_addr()
    );
    exporter.run(collect)
}

/// A bound, not yet running exporter.
pub struct Exporter {
    server: Arc<Server>,
    addr: SocketAddr,
    min_interval: Duration,
    stop: Arc<AtomicBool>,
}

/// Stops a running [`Exporter::run`] from another thread.
#[derive(Clone)]
pub struct StopHandle {
    server: Arc<Server>,
    stop: Arc<AtomicBool>,
}

impl StopHandle {
    /// Makes `run` return `Ok(())` once the requests in progress are
    /// answered.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        for _ in 0..WORKERS {
            self.server.unblock();
        }
    }
}

/// Binds the listening socket (port 0 picks a free port).
pub fn bind(cfg: &ServeConfig) -> Result<Exporter> {
    let listener = TcpListener::bind(&cfg.listen).map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::InvalidInput {
            " (expected HOST:PORT, e.g. 127.0.0.1:9911 or [::]:9911)"
        } else {
            ""
        };
        anyhow!("cannot listen on {}: {e}{hint}", cfg.listen)
    })?;
    let addr = listener
        .local_addr()
        .with_context(|| format!("cannot listen on {}", cfg.listen))?;
    let server = Server::from_listener(listener, None)
        .map_err(|e| anyhow!("cannot listen on {}: {e}", cfg.listen))?;
    Ok(Exporter {
        server: Arc::new(server),
        addr,
        min_interval: cfg.min_interval,
        stop: Arc::new(AtomicBool::new(false)),
    })
}

impl Exporter {
    /// The address actually bound (with the port chosen for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn stop_handle(&self) -> StopHandle {
        StopHandle {
            server: Arc::clone(&self.server),
            stop: Arc::clone(&self.stop),
        }
    }

    /// Answers requests on [`WORKERS`] threads until stopped (`Ok`) or
    /// until accepting connections fails (`Err`).
    pub fn run(self, collect: Collect) -> Result<()> {
        let shared = Shared {
            collect,
            min_interval: self.min_interval,
            last: Mutex::new(None),
            headers: Headers::new()?,
        };
        let results: Vec<Result<()>> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..WORKERS)
                .map(|_| scope.spawn(|| self.worker(&shared)))
                .collect();
            workers
                .into_iter()
                .map(|w| {
                    w.join()
                        .unwrap_or_else(|_| Err(anyhow!("cwdiag serve: a worker thread panicked")))
                })
                .collect()
        });
        results.into_iter().collect()
    }

    fn worker(&self, shared: &Shared) -> Result<()> {
        loop {
            match self.server.recv() {
                Ok(rq) => shared.handle(rq),
                Err(_) if self.stop.load(Ordering::SeqCst) => return Ok(()),
                Err(e) => {
                    // The accept thread has ended: nothing more will come.
                    self.stop_handle().stop();
                    return Err(anyhow!("cannot accept connections on {}: {e}", self.addr));
                }
            }
        }
    }
}

struct Headers {
    metrics: Header,
    html: Header,
    text: Header,
    allow: Header,
}

impl Headers {
    fn new() -> Result<Headers> {
        let h = |name: &str, value: &str| {
            Header::from_bytes(name.as_bytes(), value.as_bytes())
                .map_err(|()| anyhow!("invalid header {name}: {value}"))
        };
        Ok(Headers {
            metrics: h("Content-Type", CONTENT_TYPE)?,
            html: h("Content-Type", "text/html; charset=utf-8")?,
            text: h("Content-Type", "text/plain; charset=utf-8")?,
            allow: h("Allow", "GET")?,
        })
    }
}

/// Outcome of the last scan and when it finished.
type Last = Option<(Instant, std::result::Result<String, String>)>;

struct Shared {
    collect: Collect,
    min_interval: Duration,
    /// Held for the whole scan: one scan at a time.
    last: Mutex<Last>,
    headers: Headers,
}

const INDEX: &str = "<!DOCTYPE html>
<html><head><meta charset=\"utf-8\"><title>cwdiag exporter</title></head>
<body><h1>cwdiag exporter</h1>
<p>TCP CLOSE_WAIT and TIME_WAIT build-up, scanned at scrape time.</p>
<p><a href=\"/metrics\">Metrics</a></p>
</body></html>
";

impl Shared {
    fn handle(&self, rq: Request) {
        let path = rq.url().split('?').next().unwrap_or("");
        let response = if *rq.method() != Method::Get {
            Response::from_string("method not allowed\n")
                .with_status_code(405)
                .with_header(self.headers.text.clone())
                .with_header(self.headers.allow.clone())
        } else {
            match path {
                "/metrics" => match self.metrics() {
                    Ok(text) => {
                        Response::from_string(text).with_header(self.headers.metrics.clone())
                    }
                    Err(line) => Response::from_string(format!("scan failed: {line}\n"))
                        .with_status_code(500)
                        .with_header(self.headers.text.clone()),
                },
                "/" => Response::from_string(INDEX).with_header(self.headers.html.clone()),
                _ => Response::from_string("not found\n")
                    .with_status_code(404)
                    .with_header(self.headers.text.clone()),
            }
        };
        // A client that went away is not our error.
        let _ = rq.respond(response);
    }

    /// The exposition text: cached, from a scan that finished while this
    /// request waited, or from a new scan.
    fn metrics(&self) -> std::result::Result<String, String> {
        let arrived = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((done, outcome)) = last.as_ref() {
            let waited_for_it = *done >= arrived;
            let fresh = outcome.is_ok() && done.elapsed() < self.min_interval;
            if waited_for_it || fresh {
                return outcome.clone();
            }
        }
        // A panicking scan must not take a worker thread with it.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (self.collect)()))
            .unwrap_or_else(|_| Err(anyhow!("the scan panicked")))
            .map_err(|e| one_line(&format!("{e:#}")));
        if let Err(line) = &outcome {
            eprintln!("cwdiag serve: scan failed: {line}");
        }
        *last = Some((Instant::now(), outcome.clone()));
        outcome
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::sync::atomic::AtomicUsize;

    /// Binds 127.0.0.1:0 and runs the exporter in a thread.
    fn start(collect: Collect, min_interval: Duration) -> (SocketAddr, StopHandle) {
        let exporter = bind(&ServeConfig {
            listen: "127.0.0.1:0".into(),
            min_interval,
        })
        .unwrap();
        let addr = exporter.local_addr();
        let stop = exporter.stop_handle();
        std::thread::spawn(move || exporter.run(collect).unwrap());
        (addr, stop)
    }

    /// One request, `Connection: close`; returns (status, headers, body).
    fn request(addr: SocketAddr, method: &str, path: &str) -> (u16, String, String) {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut raw = Vec::new();
        let t = Instant::now();
        if let Err(e) = s.read_to_end(&mut raw) {
            panic!(
                "{method} {path}: {e} after {:?}, got {:?}",
                t.elapsed(),
                String::from_utf8_lossy(&raw)
            );
        }
        let raw = String::from_utf8(raw).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        (status, head.to_string(), body.to_string())
    }

    fn fixed(text: &'static str) -> Collect {
        Box::new(move || Ok(text.to_string()))
    }

    #[test]
    fn metrics_returns_the_text_with_the_content_type() {
        let (addr, stop) = start(
            fixed("cwdiag_sockets{state=\"CLOSE_WAIT\"} 3\n"),
            Duration::ZERO,
        );
        let (status, head, body) = request(addr, "GET", "/metrics");
        assert_eq!(status, 200, "{head}");
        assert_eq!(body, "cwdiag_sockets{state=\"CLOSE_WAIT\"} 3\n");
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: text/plain; version=0.0.4; charset=utf-8"),
            "{head}"
        );
        // A query string does not change the path.
        assert_eq!(request(addr, "GET", "/metrics?x=1").0, 200);
        stop.stop();
    }

    #[test]
    fn concurrent_scrapes_share_one_scan() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&calls);
        let collect: Collect = Box::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(200));
            Ok("cwdiag_sockets 1\n".to_string())
        });
        let (addr, stop) = start(collect, Duration::from_secs(30));
        let clients: Vec<_> = (0..20)
            .map(|_| std::thread::spawn(move || request(addr, "GET", "/metrics")))
            .collect();
        for c in clients {
            let (status, head, body) = c.join().unwrap();
            assert_eq!(status, 200, "{head}");
            assert_eq!(body, "cwdiag_sockets 1\n");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        stop.stop();
    }

    #[test]
    fn scrapes_that_waited_share_a_scan_even_without_cache() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&calls);
        let collect: Collect = Box::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(300));
            Ok("x 1\n".to_string())
        });
        let (addr, stop) = start(collect, Duration::ZERO);
        let first = std::thread::spawn(move || request(addr, "GET", "/metrics"));
        std::thread::sleep(Duration::from_millis(100));
        let others: Vec<_> = (0..3)
            .map(|_| std::thread::spawn(move || request(addr, "GET", "/metrics")))
            .collect();
        assert_eq!(first.join().unwrap().0, 200);
        for o in others {
            assert_eq!(o.join().unwrap().0, 200);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // Later scrapes scan again.
        assert_eq!(request(addr, "GET", "/metrics").0, 200);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        stop.stop();
    }

    #[test]
    fn a_panicking_scan_is_a_500_and_the_workers_survive() {
        let collect: Collect = Box::new(|| panic!("boom"));
        let (addr, stop) = start(collect, Duration::ZERO);
        for _ in 0..WORKERS + 2 {
            let (status, _, body) = request(addr, "GET", "/metrics");
            assert_eq!(status, 500);
            assert_eq!(body, "scan failed: the scan panicked\n");
        }
        assert_eq!(request(addr, "GET", "/").0, 200);
        stop.stop();
    }

    #[test]
    fn index_links_to_metrics_and_unknown_paths_are_404() {
        let (addr, stop) = start(fixed("x 1\n"), Duration::ZERO);
        let (status, head, body) = request(addr, "GET", "/");
        assert_eq!(status, 200);
        assert!(head.to_ascii_lowercase().contains("text/html"), "{head}");
        assert!(body.contains("<a href=\"/metrics\">"), "{body}");
        assert_eq!(request(addr, "GET", "/nope").0, 404);
        assert_eq!(request(addr, "GET", "/metrics/extra").0, 404);
        let (status, head, _) = request(addr, "POST", "/metrics");
        assert_eq!(status, 405);
        assert!(head.to_ascii_lowercase().contains("allow: get"), "{head}");
        assert_eq!(request(addr, "DELETE", "/").0, 405);
        stop.stop();
    }

    #[test]
    fn failed_scan_is_500_with_one_line_and_is_retried() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&calls);
        let collect: Collect = Box::new(move || {
            if counter.fetch_add(1, Ordering::SeqCst) == 0 {
                Err(anyhow!("netlink: permission denied\nsecond line"))
            } else {
                Ok("x 1\n".to_string())
            }
        });
        let (addr, stop) = start(collect, Duration::from_secs(30));
        let (status, _, body) = request(addr, "GET", "/metrics");
        assert_eq!(status, 500);
        assert_eq!(
            body,
            "scan failed: netlink: permission denied second line\n"
        );
        // Errors are not cached.
        let (status, _, body) = request(addr, "GET", "/metrics");
        assert_eq!(status, 200);
        assert_eq!(body, "x 1\n");
        stop.stop();
    }

    #[test]
    fn garbage_and_slow_clients_do_not_stop_the_server() {
        let (addr, stop) = start(fixed("x 1\n"), Duration::ZERO);
        // Garbage: answered 400 or dropped, never a crash.
        let mut g = TcpStream::connect(addr).unwrap();
        g.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        g.write_all(b"\x00\xffGARBAGE\r\n\r\n").unwrap();
        let mut reply = Vec::new();
        let _ = g.read_to_end(&mut reply);
        if !reply.is_empty() {
            assert!(reply.starts_with(b"HTTP/1.1 400"), "{reply:?}");
        }
        assert_eq!(request(addr, "GET", "/metrics").0, 200);

        // A slow client that sent half a request and waits.
        let mut half = TcpStream::connect(addr).unwrap();
        half.write_all(b"GET /metrics HTTP/1.1\r\nHost: loc")
            .unwrap();
        settle();
        let (status, _, body) = request(addr, "GET", "/metrics");
        assert_eq!((status, body.as_str()), (200, "x 1\n"));

        // More stalled clients than there are worker threads, one of them
        // silent: each holds a connection thread of its own, not a worker.
        let mut stalled = vec![TcpStream::connect(addr).unwrap()];
        for _ in 0..WORKERS + 2 {
            settle();
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(b"GET / HTTP/1.1\r\n").unwrap();
            stalled.push(s);
        }
        settle();
        assert_eq!(request(addr, "GET", "/").0, 200);
        assert_eq!(request(addr, "GET", "/metrics").0, 200);

        // The slow client finishes its request and is answered.
        half.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        half.write_all(b"host\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut reply = String::new();
        half.read_to_string(&mut reply).unwrap();
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        assert!(reply.ends_with("\r\n\r\nx 1\n"), "{reply}");
        drop(stalled);
        assert_eq!(request(addr, "GET", "/metrics").0, 200);
        stop.stop();
    }

    /// Lets tiny_http's connection pool hand the last connection to a
    /// thread: its pool can park a connection that arrives in the same
    /// instant as one that then stalls (see the module doc).
    fn settle() {
        std::thread::sleep(Duration::from_millis(100));
    }

    #[test]
    fn keep_alive_connections_get_several_answers() {
        let (addr, stop) = start(fixed("x 1\n"), Duration::ZERO);
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: l\r\n\r\n")
            .unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: l\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).unwrap();
        assert_eq!(raw.matches("HTTP/1.1 200 OK").count(), 2, "{raw}");
        assert!(raw.contains("<a href=\"/metrics\">"), "{raw}");
        stop.stop();
    }

    #[test]
    fn bind_failure_names_the_address() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap().to_string();
        let err = bind(&ServeConfig {
            listen: addr.clone(),
            ..ServeConfig::default()
        })
        .err()
        .unwrap();
        let msg = format!("{err:#}");
        assert!(msg.contains(&format!("cannot listen on {addr}")), "{msg}");

        let msg = format!(
            "{:#}",
            bind(&ServeConfig {
                listen: "9911".into(),
                ..ServeConfig::default()
            })
            .err()
            .unwrap()
        );
        assert!(msg.contains("cannot listen on 9911"), "{msg}");
        assert!(msg.contains("HOST:PORT"), "{msg}");
    }

    #[test]
    fn stop_makes_run_return_ok() {
        let exporter = bind(&ServeConfig {
            listen: "127.0.0.1:0".into(),
            min_interval: Duration::ZERO,
        })
        .unwrap();
        let addr = exporter.local_addr();
        let stop = exporter.stop_handle();
        let t = std::thread::spawn(move || exporter.run(fixed("x 1\n")));
        assert_eq!(request(addr, "GET", "/metrics").0, 200);
        stop.stop();
        t.join().unwrap().unwrap();
    }
}
