//! `cwdiag serve`: a Prometheus exporter over HTTP/1.x (hyper on a small
//! tokio runtime), optionally with TLS and basic authentication
//! ([`webconfig`]).
//!
//! * `GET /metrics` scans at scrape time through the caller's `collect`
//!   closure, on a blocking thread. One scan runs at a time; a scrape that
//!   waited for a running scan gets that scan's result, and a result
//!   younger than [`ServeConfig::min_interval`] is served from cache, so a
//!   burst of scrapes costs one scan.
//! * `GET /` is a short HTML page linking to `/metrics`. `HEAD` works as
//!   `GET` without the body. Any other path is 404, any other method 405.
//! * A failed scan answers 500 with a one-line body and logs one line to
//!   stderr (`cwdiag serve: ...`).
//!
//! Hostile clients (every limit is a constant below):
//! * a request head must arrive whole within [`HEADER_TIMEOUT`] of the
//!   moment the connection waits for it (so this is also the keep-alive
//!   idle timeout) and fit in [`MAX_HEAD_BYTES`] (else 431);
//! * request bodies are never read: a request that declares one gets 413
//!   and the connection is closed;
//! * a request is answered within [`REQUEST_TIMEOUT`] (else 503), and a
//!   connection on which no byte moves for [`STALL_TIMEOUT`] outside a
//!   request (a client that does not read its reply) is closed;
//! * at most [`ServeConfig::max_connections`] connections are open (never
//!   more than the file descriptor limit less [`FD_RESERVE`]); beyond that
//!   the connection that has been quiet the longest and is not in a
//!   request is dropped for the new one, and when every connection is in a
//!   request the new one gets 503 and is closed;
//! * running out of file descriptors on accept is retried with back-off;
//! * only HTTP/1.0 and HTTP/1.1 are spoken: other versions get 400, the
//!   HTTP/2 connection preface gets 505, and the connection is closed.
//!
//! Each connection is a task on two async worker threads, so a stalled
//! client holds a file descriptor and a few KiB, never a thread.
//! [`StopHandle::stop`] (and, from [`serve`], SIGTERM or Ctrl-C) stops
//! accepting, lets the requests in progress finish (at most
//! [`DRAIN_TIMEOUT`]) and returns `Ok`.

pub mod auth;
pub mod sniff;
pub mod webconfig;

use anyhow::{Context as _, Result, anyhow};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body as _, Incoming};
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{Notify, watch};

/// Default listen address: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9911";

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// From the moment a connection waits for a request head (a new
/// connection, or a kept-alive one after a reply) until the head is whole.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// From a whole request head to the reply (authentication and the scan).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// No byte read or written, outside a request: the connection is closed.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(10);
/// TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// After a stop: how long requests in progress may take to finish.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(35);
/// A connection that is between requests when the exporter stops is
/// closed after this.
const DRAIN_GRACE: Duration = Duration::from_secs(1);
/// Request line and headers together (the server's read buffer).
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Header fields in one request.
pub const MAX_HEADERS: usize = 64;
/// Default for [`ServeConfig::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;
/// File descriptors kept free of connections for the scan (netlink
/// sockets, /proc), the runtime and stdio.
pub const FD_RESERVE: u64 = 128;
/// Async worker threads; scans and password checks run on blocking threads.
const WORKER_THREADS: usize = 2;
const BLOCKING_THREADS: usize = 4;

/// Runs a scan and returns its exposition text.
pub type Collect = Box<dyn Fn() -> Result<String> + Send + Sync>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeConfig {
    /// `HOST:PORT` to listen on, e.g. `127.0.0.1:9911` or `[::]:9911`.
    pub listen: String,
    /// A scan younger than this is served from cache.
    pub min_interval: Duration,
    /// Open connections at most (see the module doc).
    pub max_connections: usize,
    /// An exporter-toolkit web configuration file (TLS, basic auth).
    pub web_config: Option<PathBuf>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            listen: DEFAULT_LISTEN.to_string(),
            min_interval: Duration::from_secs(5),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            web_config: None,
        }
    }
}

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns the soft
/// limit in force afterwards (`None`: unlimited).
pub fn raise_fd_limit() -> Option<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let lim = getrlimit(Resource::Nofile);
    if lim.current != lim.maximum {
        let raised = Rlimit {
            current: lim.maximum,
            maximum: lim.maximum,
        };
        if setrlimit(Resource::Nofile, raised).is_err() {
            // An unlimited hard limit cannot be the soft one (fs.nr_open).
            let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok());
            if let Some(n) = nr_open {
                let _ = setrlimit(
                    Resource::Nofile,
                    Rlimit {
                        current: Some(n),
                        maximum: lim.maximum,
                    },
                );
            }
        }
    }
    getrlimit(Resource::Nofile).current
}

/// Raises the fd limit, binds `cfg.listen`, logs the address to stderr and
/// serves until SIGTERM or Ctrl-C (then `Ok` once the requests in progress
/// are answered).
pub fn serve(cfg: ServeConfig, collect: Collect) -> Result<()> {
    raise_fd_limit();
    let mut exporter = bind(&cfg)?;
    exporter.signals = true;
    let scheme = if exporter.web.tls.is_some() {
        "https"
    } else {
        "http"
    };
    eprintln!(
        "cwdiag serve: listening on {scheme}://{}/metrics",
        exporter.local_addr()
    );
    exporter.run(collect)
}

/// A bound, not yet running exporter.
pub struct Exporter {
    listener: std::net::TcpListener,
    addr: SocketAddr,
    min_interval: Duration,
    max_connections: usize,
    web: webconfig::Loaded,
    stop: Arc<watch::Sender<bool>>,
    signals: bool,
}

/// Stops a running [`Exporter::run`] from another thread.
#[derive(Clone)]
pub struct StopHandle {
    stop: Arc<watch::Sender<bool>>,
}

impl StopHandle {
    /// Makes `run` stop accepting and return `Ok(())` once the requests in
    /// progress are answered.
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }
}

/// Reads the web configuration and binds the listening socket (port 0
/// picks a free port).
pub fn bind(cfg: &ServeConfig) -> Result<Exporter> {
    let web = match &cfg.web_config {
        Some(path) => webconfig::load(path)?,
        None => webconfig::Loaded {
            tls: None,
            users: None,
            headers: Vec::new(),
        },
    };
    let listener = std::net::TcpListener::bind(&cfg.listen).map_err(|e| {
        let hint = if e.kind() == io::ErrorKind::InvalidInput {
            " (expected HOST:PORT, e.g. 127.0.0.1:9911 or [::]:9911)"
        } else {
            ""
        };
        anyhow!("cannot listen on {}: {e}{hint}", cfg.listen)
    })?;
    listener
        .set_nonblocking(true)
        .with_context(|| format!("cannot listen on {}", cfg.listen))?;
    let addr = listener
        .local_addr()
        .with_context(|| format!("cannot listen on {}", cfg.listen))?;
    let fd_room = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .map_or(u64::MAX, |n| n.saturating_sub(FD_RESERVE).max(8));
    let max_connections = cfg
        .max_connections
        .max(1)
        .min(usize::try_from(fd_room).unwrap_or(usize::MAX));
    Ok(Exporter {
        listener,
        addr,
        min_interval: cfg.min_interval,
        max_connections,
        web,
        stop: Arc::new(watch::channel(false).0),
        signals: false,
    })
}

impl Exporter {
    /// The address actually bound (with the port chosen for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections open at most, after the fd limit.
    pub fn max_connections(&self) -> usize {
        self.max_connections
    }

    pub fn stop_handle(&self) -> StopHandle {
        StopHandle {
            stop: Arc::clone(&self.stop),
        }
    }

    /// Serves until stopped; `Err` only when the runtime cannot start.
    pub fn run(self, collect: Collect) -> Result<()> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(WORKER_THREADS)
            .max_blocking_threads(BLOCKING_THREADS)
            .thread_name("cwdiag-serve")
            .enable_all()
            .build()
            .context("cannot start the exporter's runtime")?;
        let result = rt.block_on(self.serve_until_stopped(collect));
        // A scan still running on a blocking thread is not waited for.
        rt.shutdown_timeout(Duration::from_secs(1));
        result
    }

    async fn serve_until_stopped(self, collect: Collect) -> Result<()> {
        let listener = tokio::net::TcpListener::from_std(self.listener)
            .with_context(|| format!("cannot listen on {}", self.addr))?;
        if self.signals {
            use tokio::signal::unix::{SignalKind, signal};
            let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
            let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
            let stop = Arc::clone(&self.stop);
            tokio::spawn(async move {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
                eprintln!("cwdiag serve: stopping: answering the requests in progress");
                stop.send_replace(true);
            });
        }
        let ctx = Arc::new(Ctx {
            collect: Arc::from(collect),
            min_interval: self.min_interval,
            last: Arc::new(tokio::sync::Mutex::new(None)),
            users: self.web.users,
            tls: self.web.tls.map(tokio_rustls::TlsAcceptor::from),
            headers: self.web.headers,
            conns: Mutex::new(HashMap::new()),
            max_connections: self.max_connections,
            next_id: AtomicU64::new(0),
            epoch: Instant::now(),
            stop: self.stop.subscribe(),
        });
        ctx.accept_loop(&listener).await;
        drop(listener);
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        while ctx.open_connections() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }
}

/// Outcome of the last scan and when it finished.
type Last = Option<(Instant, std::result::Result<Bytes, String>)>;

/// One open connection, as the accept loop sees it.
struct Slot {
    /// Requests of this connection being answered (0 or 1 for HTTP/1).
    busy: AtomicUsize,
    /// When a byte last moved, in ms after `epoch`.
    progress: AtomicU64,
    epoch: Instant,
    /// Tells the connection's task to drop it.
    kill: Notify,
}

impl Slot {
    fn new(epoch: Instant) -> Slot {
        let s = Slot {
            busy: AtomicUsize::new(0),
            progress: AtomicU64::new(0),
            epoch,
            kill: Notify::new(),
        };
        s.touch();
        s
    }
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
    fn touch(&self) {
        self.progress.store(self.now_ms(), Ordering::Relaxed);
    }
    fn quiet_for(&self) -> Duration {
        Duration::from_millis(
            self.now_ms()
                .saturating_sub(self.progress.load(Ordering::Relaxed)),
        )
    }
    fn busy(&self) -> bool {
        self.busy.load(Ordering::Relaxed) > 0
    }
}

/// Marks a slot busy while a request is answered.
struct Busy(Arc<Slot>);

impl Busy {
    fn new(slot: &Arc<Slot>) -> Busy {
        slot.busy.fetch_add(1, Ordering::Relaxed);
        Busy(Arc::clone(slot))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// Removes a connection from the table when its task ends.
struct Gone(Arc<Ctx>, u64);

impl Drop for Gone {
    fn drop(&mut self) {
        self.0.table().remove(&self.1);
    }
}

/// A socket that records when bytes move.
struct Tracked {
    inner: TcpStream,
    slot: Arc<Slot>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.slot.touch();
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.slot.touch();
        }
        r
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.slot.touch();
        }
        r
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

struct Ctx {
    collect: Arc<dyn Fn() -> Result<String> + Send + Sync>,
    min_interval: Duration,
    /// Held for the whole scan (by the blocking task): one scan at a time.
    last: Arc<tokio::sync::Mutex<Last>>,
    users: Option<Arc<auth::Users>>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    headers: Vec<(HeaderName, HeaderValue)>,
    conns: Mutex<HashMap<u64, Arc<Slot>>>,
    max_connections: usize,
    next_id: AtomicU64,
    epoch: Instant,
    stop: watch::Receiver<bool>,
}

const INDEX: &str = "<!DOCTYPE html>
<html><head><meta charset=\"utf-8\"><title>cwdiag exporter</title></head>
<body><h1>cwdiag exporter</h1>
<p>TCP CLOSE_WAIT and TIME_WAIT build-up, scanned at scrape time.</p>
<p><a href=\"/metrics\">Metrics</a></p>
</body></html>
";

/// Written (best effort, without waiting) to a plain-HTTP connection
/// refused because every connection is in a request.
const BUSY_REPLY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
Content-Type: text/plain; charset=utf-8\r\nContent-Length: 21\r\nRetry-After: 1\r\n\
Connection: close\r\n\r\ntoo many connections\n";

const TEXT: &str = "text/plain; charset=utf-8";

fn reply(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn is_fd_exhaustion(e: &io::Error) -> bool {
    use rustix::io::Errno;
    matches!(
        Errno::from_io_error(e),
        Some(Errno::MFILE | Errno::NFILE | Errno::NOBUFS | Errno::NOMEM)
    )
}

impl Ctx {
    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Slot>>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn open_connections(&self) -> usize {
        self.table().len()
    }

    /// Drops the connection quiet for longest that is not in a request.
    fn evict(conns: &mut HashMap<u64, Arc<Slot>>) -> bool {
        let victim = conns
            .iter()
            .filter(|(_, s)| !s.busy())
            .max_by_key(|(_, s)| s.quiet_for())
            .map(|(id, _)| *id);
        match victim.and_then(|id| conns.remove(&id)) {
            Some(slot) => {
                slot.kill.notify_one();
                true
            }
            None => false,
        }
    }

    async fn accept_loop(self: &Arc<Self>, listener: &tokio::net::TcpListener) {
        const FIRST_BACKOFF: Duration = Duration::from_millis(5);
        let mut stop = self.stop.clone();
        let mut backoff = FIRST_BACKOFF;
        let mut logged: Option<Instant> = None;
        loop {
            let accepted = tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                r = listener.accept() => r,
            };
            match accepted {
                Ok((tcp, _)) => {
                    backoff = FIRST_BACKOFF;
                    self.admit(tcp);
                }
                Err(e) => {
                    if is_fd_exhaustion(&e) {
                        Self::evict(&mut self.table());
                    }
                    if logged.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                        eprintln!("cwdiag serve: accepting a connection failed: {e}; retrying");
                        logged = Some(Instant::now());
                    }
                    tokio::select! {
                        _ = stop.wait_for(|s| *s) => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    fn admit(self: &Arc<Self>, tcp: TcpStream) {
        let _ = tcp.set_nodelay(true);
        let (id, slot) = {
            let mut conns = self.table();
            if conns.len() >= self.max_connections && !Self::evict(&mut conns) {
                drop(conns);
                if self.tls.is_none() {
                    let _ = tcp.try_write(BUSY_REPLY);
                }
                return;
            }
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            let slot = Arc::new(Slot::new(self.epoch));
            conns.insert(id, Arc::clone(&slot));
            (id, slot)
        };
        let ctx = Arc::clone(self);
        tokio::spawn(async move {
            let _gone = Gone(Arc::clone(&ctx), id);
            tokio::select! {
                _ = slot.kill.notified() => {}
                _ = ctx.connection(tcp, &slot) => {}
            }
        });
    }

    async fn connection(self: &Arc<Self>, tcp: TcpStream, slot: &Arc<Slot>) {
        let io = Tracked {
            inner: tcp,
            slot: Arc::clone(slot),
        };
        match &self.tls {
            None => self.http(io, slot).await,
            Some(acceptor) => {
                let accepted = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(io)).await;
                if let Ok(Ok(tls)) = accepted {
                    self.http(tls, slot).await;
                }
            }
        }
    }

    async fn http<I>(self: &Arc<Self>, mut io: I, slot: &Arc<Slot>)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let started = Instant::now();
        let Ok(Ok((first, start))) =
            tokio::time::timeout(HEADER_TIMEOUT, sniff::read_start(&mut io)).await
        else {
            return;
        };
        if start == sniff::Start::Http2 {
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                io.write_all(sniff::H2_REPLY).await?;
                io.shutdown().await
            })
            .await;
            return;
        }
        if first.is_empty() {
            return;
        }
        let io = sniff::Prefixed::new(first, io);
        let header_budget = HEADER_TIMEOUT
            .saturating_sub(started.elapsed())
            .max(Duration::from_secs(1));
        let ctx = Arc::clone(self);
        let svc_slot = Arc::clone(slot);
        let service = hyper::service::service_fn(move |req| {
            let ctx = Arc::clone(&ctx);
            let busy = Busy::new(&svc_slot);
            async move {
                let response = match tokio::time::timeout(REQUEST_TIMEOUT, ctx.respond(req)).await {
                    Ok(r) => r,
                    Err(_) => reply(
                        StatusCode::SERVICE_UNAVAILABLE,
                        TEXT,
                        "the request took too long\n",
                    ),
                };
                drop(busy);
                Ok::<_, Infallible>(response)
            }
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(header_budget)
            .max_buf_size(MAX_HEAD_BYTES)
            .max_headers(MAX_HEADERS)
            .keep_alive(true)
            .half_close(false);
        let conn = builder.serve_connection(TokioIo::new(io), service);
        tokio::pin!(conn);
        let mut stop = self.stop.clone();
        let mut draining: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = stop.wait_for(|s| *s), if draining.is_none() => {
                    conn.as_mut().graceful_shutdown();
                    draining = Some(Instant::now());
                }
                _ = tokio::time::sleep(Duration::from_millis(500)) => {
                    if !slot.busy()
                        && (slot.quiet_for() >= STALL_TIMEOUT
                            || draining.is_some_and(|t| t.elapsed() >= DRAIN_GRACE))
                    {
                        return;
                    }
                }
            }
        }
    }

    async fn respond(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let mut response = self.route(req).await;
        for (name, value) in &self.headers {
            response.headers_mut().insert(name.clone(), value.clone());
        }
        response
    }

    async fn route(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        // Bodies are never read: refuse one before anything else, and
        // close, since the connection is not at a request boundary.
        if !req.body().is_end_stream() {
            let mut r = reply(
                StatusCode::PAYLOAD_TOO_LARGE,
                TEXT,
                "request bodies are not accepted\n",
            );
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return r;
        }
        if let Some(users) = &self.users {
            let given = req
                .headers()
                .get(header::AUTHORIZATION)
                .map(HeaderValue::as_bytes);
            if !users.check(given).await {
                let mut r = reply(StatusCode::UNAUTHORIZED, TEXT, "unauthorized\n");
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"cwdiag\", charset=\"UTF-8\""),
                );
                return r;
            }
        }
        if req.method() != Method::GET && req.method() != Method::HEAD {
            let mut r = reply(StatusCode::METHOD_NOT_ALLOWED, TEXT, "method not allowed\n");
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return r;
        }
        match req.uri().path() {
            "/metrics" => match self.metrics().await {
                Ok(text) => reply(StatusCode::OK, CONTENT_TYPE, text),
                Err(line) => reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    TEXT,
                    format!("scan failed: {line}\n"),
                ),
            },
            "/" => reply(StatusCode::OK, "text/html; charset=utf-8", INDEX),
            _ => reply(StatusCode::NOT_FOUND, TEXT, "not found\n"),
        }
    }

    /// The exposition text: cached, from a scan that finished while this
    /// request waited, or from a new scan.
    async fn metrics(&self) -> std::result::Result<Bytes, String> {
        let arrived = Instant::now();
        let mut last = Arc::clone(&self.last).lock_owned().await;
        if let Some((done, outcome)) = last.as_ref() {
            let waited_for_it = *done >= arrived;
            let fresh = outcome.is_ok() && done.elapsed() < self.min_interval;
            if waited_for_it || fresh {
                return outcome.clone();
            }
        }
        let collect = Arc::clone(&self.collect);
        // The lock moves into the scan's thread: a request that times out
        // leaves the scan running and the next one waiting for it.
        tokio::task::spawn_blocking(move || {
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| collect()))
                .unwrap_or_else(|_| Err(anyhow!("the scan panicked")))
                .map(Bytes::from)
                .map_err(|e| one_line(&format!("{e:#}")));
            if let Err(line) = &outcome {
                eprintln!("cwdiag serve: scan failed: {line}");
            }
            *last = Some((Instant::now(), outcome.clone()));
            outcome
        })
        .await
        .unwrap_or_else(|_| Err("the scan could not run".to_string()))
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
            ..ServeConfig::default()
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
        for _ in 0..6 {
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
        assert!(
            head.to_ascii_lowercase().contains("allow: get, head"),
            "{head}"
        );
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
        let (status, _, body) = request(addr, "GET", "/metrics");
        assert_eq!((status, body.as_str()), (200, "x 1\n"));

        // Many stalled clients, one of them silent: each is a task, none
        // holds a thread.
        let mut stalled = vec![TcpStream::connect(addr).unwrap()];
        for _ in 0..50 {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(b"GET / HTTP/1.1\r\n").unwrap();
            stalled.push(s);
        }
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
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
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
            ..ServeConfig::default()
        })
        .unwrap();
        let addr = exporter.local_addr();
        let stop = exporter.stop_handle();
        let t = std::thread::spawn(move || exporter.run(fixed("x 1\n")));
        assert_eq!(request(addr, "GET", "/metrics").0, 200);
        stop.stop();
        t.join().unwrap().unwrap();
    }

    #[test]
    fn stop_lets_a_scrape_in_progress_finish() {
        let exporter = bind(&ServeConfig {
            listen: "127.0.0.1:0".into(),
            min_interval: Duration::ZERO,
            ..ServeConfig::default()
        })
        .unwrap();
        let addr = exporter.local_addr();
        let stop = exporter.stop_handle();
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let started_tx = Mutex::new(started_tx);
        let collect: Collect = Box::new(move || {
            let _ = started_tx.lock().unwrap().send(());
            std::thread::sleep(Duration::from_millis(500));
            Ok("x 1\n".to_string())
        });
        let t = std::thread::spawn(move || exporter.run(collect));
        let scrape = std::thread::spawn(move || request(addr, "GET", "/metrics"));
        started_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        stop.stop();
        let (status, _, body) = scrape.join().unwrap();
        assert_eq!((status, body.as_str()), (200, "x 1\n"));
        t.join().unwrap().unwrap();
        // Stopped: the port no longer accepts.
        assert!(TcpStream::connect(addr).is_err());
    }

    #[test]
    fn beyond_the_bound_idle_connections_make_room_and_busy_ones_get_503() {
        let exporter = bind(&ServeConfig {
            listen: "127.0.0.1:0".into(),
            min_interval: Duration::ZERO,
            max_connections: 2,
            ..ServeConfig::default()
        })
        .unwrap();
        let addr = exporter.local_addr();
        let stop = exporter.stop_handle();
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let started_tx = Mutex::new(started_tx);
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let go_rx = Mutex::new(go_rx);
        let collect: Collect = Box::new(move || {
            let _ = started_tx.lock().unwrap().send(());
            let _ = go_rx.lock().unwrap().recv_timeout(Duration::from_secs(20));
            Ok("x 1\n".to_string())
        });
        std::thread::spawn(move || exporter.run(collect));
        // Two idle connections fill the table; a third client evicts one.
        let idle: Vec<_> = (0..2).map(|_| TcpStream::connect(addr).unwrap()).collect();
        assert_eq!(request(addr, "GET", "/").0, 200);
        drop(idle);
        // Two scrapes in a request (one scanning, one waiting for it).
        let a = std::thread::spawn(move || request(addr, "GET", "/metrics"));
        started_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        // The second may be dropped for a newer client before its request
        // is read (it is then the one quiet the longest): it retries.
        let b = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let (status, raw) = raw_get(addr, "/metrics");
                if status != 0 || Instant::now() > deadline {
                    return (status, raw);
                }
            }
        });
        // Once both are in a request, a third gets 503 at once.
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            // The refusal may come before the request is written.
            let (status, head) = raw_get(addr, "/");
            if status == 503 {
                assert!(
                    head.to_ascii_lowercase().contains("connection: close"),
                    "{head}"
                );
                break status;
            }
            assert!(Instant::now() < deadline, "never 503, last {status}");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(status, 503);
        go_tx.send(()).unwrap();
        assert_eq!(a.join().unwrap().0, 200);
        assert_eq!(b.join().unwrap().0, 200);
        stop.stop();
    }

    /// A GET that tolerates a refused or reset connection (status 0).
    fn raw_get(addr: SocketAddr, path: &str) -> (u16, String) {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: l\r\nConnection: close\r\n\r\n"
        );
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw);
        let head = String::from_utf8_lossy(&raw).to_string();
        let status = head.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
        (status, head)
    }
}
