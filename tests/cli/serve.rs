//! `cwdiag serve` against real clients: curl over TLS with basic auth, and
//! hostile clients under a 1024 file descriptor limit.

use crate::support::{cwdiag, skip};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running `cwdiag serve` on 127.0.0.1 port 0; killed on drop.
pub struct Served {
    child: Child,
    pub addr: SocketAddr,
    stderr: Arc<Mutex<String>>,
}

impl Served {
    /// Starts `cwdiag serve --listen 127.0.0.1:0 ARGS`, with RLIMIT_NOFILE
    /// set to `nofile` (soft and hard) in the child when given.
    pub fn start(args: &[&str], nofile: Option<u64>) -> Served {
        let mut cmd = cwdiag();
        cmd.args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(n) = nofile {
            // SAFETY: setrlimit is async-signal-safe; nothing else runs
            // between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    let lim = libc::rlimit {
                        rlim_cur: n,
                        rlim_max: n,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = cmd.spawn().expect("cwdiag serve starts");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("://").nth(1) {
                    let _ = tx.send(rest.trim_end_matches("/metrics").to_string());
                }
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(a) => a.parse().expect("listening address"),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("serve did not start: {}", log.lock().unwrap());
            }
        };
        Served {
            child,
            addr,
            stderr: log,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    fn rss_kb(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap()
    }

    fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .unwrap()
            .count()
    }

    /// A normal scrape: status and how long it took.
    fn scrape(&self) -> (u16, Duration) {
        let t = Instant::now();
        let reply = exchange(
            self.addr,
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            Duration::from_secs(20),
        );
        let status = status_of(&reply);
        assert!(
            status != 200 || reply.windows(14).any(|w| w == b"cwdiag_sockets"),
            "{}",
            String::from_utf8_lossy(&reply)
        );
        (status, t.elapsed())
    }

    /// Another client is served at once (the index page, no scan: within
    /// 3 s even on a loaded machine), and a scrape answers 200 (its scan
    /// takes what it takes on this machine; bounded at 30 s).
    fn assert_scrape_ok(&mut self, after: &str) -> Duration {
        assert!(
            self.alive(),
            "serve died {after}: {}",
            self.stderr.lock().unwrap()
        );
        let t = Instant::now();
        let reply = exchange(
            self.addr,
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            Duration::from_secs(20),
        );
        let index = t.elapsed();
        assert_eq!(status_of(&reply), 200, "index {after}");
        assert!(
            index < Duration::from_secs(3),
            "index {after} took {index:?}"
        );
        let (status, took) = self.scrape();
        assert_eq!(status, 200, "scrape {after}");
        assert!(
            took < Duration::from_secs(30),
            "scrape {after} took {took:?}"
        );
        eprintln!(
            "{after}: index {index:?}, scrape {took:?}, RSS {} kB, {} fds",
            self.rss_kb(),
            self.fds()
        );
        took
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `request`, reads until the server closes (or `limit` passes).
fn exchange(addr: SocketAddr, request: &[u8], limit: Duration) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(limit)).unwrap();
    // The server may close before taking everything (431, 413).
    let _ = s.write_all(request);
    read_until_closed(&mut s, limit)
}

fn read_until_closed(s: &mut TcpStream, limit: Duration) -> Vec<u8> {
    let deadline = Instant::now() + limit;
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    out
}

fn status_of(reply: &[u8]) -> u16 {
    let text = String::from_utf8_lossy(reply);
    text.strip_prefix("HTTP/1.")
        .and_then(|r| r.get(2..5))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// Raises this test process's own soft fd limit (its clients need more
/// than the server's 1024).
fn raise_own_fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
    }
    lim.rlim_cur
}

/// Polls `f` until it is true or `limit` passes.
fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

#[test]
fn serve_survives_hostile_clients_under_a_1024_fd_limit() {
    let own = raise_own_fd_limit();
    // As many connections as the fd limit allows (1024 - 128).
    let mut srv = Served::start(
        &["--min-interval", "0", "--max-connections", "5000"],
        Some(1024),
    );
    let addr = srv.addr;
    srv.assert_scrape_ok("at start");
    let rss_start = srv.rss_kb();
    let fds_start = srv.fds();

    // Huge declared bodies: refused at once, nothing allocated.
    for cl in [
        "18446744073709551615",
        "100000000000",
        "99999999999999999999999",
    ] {
        let reply = exchange(
            addr,
            format!("GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: {cl}\r\n\r\n").as_bytes(),
            Duration::from_secs(10),
        );
        let status = status_of(&reply);
        assert!(
            (400..500).contains(&status),
            "Content-Length {cl}: {status}"
        );
    }
    srv.assert_scrape_ok("after huge declared bodies");

    // An endless chunked body: 413 and closed while the client still sends.
    {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"POST /metrics HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
            .unwrap();
        let mut writer = s.try_clone().unwrap();
        let pump = std::thread::spawn(move || {
            let chunk = format!("4000\r\n{}\r\n", "z".repeat(0x4000));
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut sent = 0usize;
            while Instant::now() < deadline && writer.write_all(chunk.as_bytes()).is_ok() {
                sent += chunk.len();
            }
            sent
        });
        let reply = read_until_closed(&mut s, Duration::from_secs(10));
        assert_eq!(
            status_of(&reply),
            413,
            "{}",
            String::from_utf8_lossy(&reply)
        );
        let sent = pump.join().unwrap();
        eprintln!("endless body: refused after {sent} bytes sent");
        srv.assert_scrape_ok("after an endless body");
    }

    // Stalled bodies (declared, never sent): refused without waiting.
    for _ in 0..50 {
        let reply = exchange(
            addr,
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc",
            Duration::from_secs(10),
        );
        assert_eq!(status_of(&reply), 413);
    }
    // Partial heads and silent connections, held open: 600, far more
    // than any worker count.
    let mut held = Vec::new();
    // Fewer if this process's own hard limit is low (other tests share it).
    let n_held = 600.min(
        usize::try_from(own)
            .unwrap_or(usize::MAX)
            .saturating_sub(424),
    );
    for i in 0..n_held {
        let mut s = TcpStream::connect(addr).unwrap();
        let part: &[u8] = if i % 2 == 0 {
            b"GET /metrics HTTP/1.1\r\nHost: loc"
        } else {
            b""
        };
        s.write_all(part).unwrap();
        held.push(s);
    }
    assert!(
        eventually(Duration::from_secs(10), || srv.fds() >= n_held),
        "{} fds",
        srv.fds()
    );
    let with_600 = srv.assert_scrape_ok("with 600 stalled connections held");
    let rss_600 = srv.rss_kb();

    // Pipelined requests never read: the reply stalls in the socket.
    let mut hog = TcpStream::connect(addr).unwrap();
    let many = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".repeat(2000);
    hog.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
    let _ = hog.write_all(&many);
    srv.assert_scrape_ok("with a pipelining client that does not read");

    // Other HTTP versions: a reply, then the connection is closed.
    for (req, want) in [
        (&b"GET / HTTP/2.0\r\nHost: x\r\n\r\n"[..], 400),
        (b"GET / HTTP/3\r\nHost: x\r\n\r\n", 400),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),
    ] {
        let t = Instant::now();
        let reply = exchange(addr, req, Duration::from_secs(10));
        assert_eq!(
            status_of(&reply),
            want,
            "{}",
            String::from_utf8_lossy(&reply)
        );
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "not closed: {:?}",
            t.elapsed()
        );
    }
    srv.assert_scrape_ok("after other HTTP versions");

    // A giant header line: 431, read no further than the head cap.
    let giant = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(1 << 20)
    );
    let reply = exchange(addr, giant.as_bytes(), Duration::from_secs(10));
    assert_eq!(
        status_of(&reply),
        431,
        "{}",
        String::from_utf8_lossy(&reply)
    );
    srv.assert_scrape_ok("after a 1 MB header line");

    // More connections than the exporter's fd limit.
    let want = 1500.min(
        usize::try_from(own)
            .unwrap_or(usize::MAX)
            .saturating_sub(n_held + 300),
    );
    let mut refused = 0;
    for _ in 0..want {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Ok(s) => held.push(s),
            Err(_) => refused += 1,
        }
    }
    eprintln!("{} connections held, {refused} not accepted", held.len());
    srv.assert_scrape_ok("with more connections than the fd limit");
    assert!(srv.fds() < 1024, "{} fds", srv.fds());

    drop(held);
    drop(hog);
    let end = srv.assert_scrape_ok("at the end");
    // No leaked connection (no CLOSE_WAIT left behind): fds come back.
    assert!(
        eventually(Duration::from_secs(15), || srv.fds() <= fds_start + 4),
        "fds {} (start {fds_start})",
        srv.fds()
    );
    let rss_end = srv.rss_kb();
    eprintln!(
        "RSS start {rss_start} kB, with 600 stalled {rss_600} kB, end {rss_end} kB; scrape with 600 stalled {with_600:?}, at end {end:?}"
    );
    assert!(
        rss_end < rss_start + 64 * 1024,
        "RSS grew from {rss_start} to {rss_end} kB"
    );
    assert!(srv.alive());
    let log = srv.stderr.lock().unwrap().clone();
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn serve_answers_head_and_http10_and_stops_on_sigterm_with_0() {
    let mut srv = Served::start(&[], None);
    let reply = exchange(
        srv.addr,
        b"HEAD /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        Duration::from_secs(20),
    );
    let text = String::from_utf8_lossy(&reply).to_string();
    assert_eq!(status_of(&reply), 200, "{text}");
    assert!(text.ends_with("\r\n\r\n"), "HEAD has no body: {text}");
    let reply = exchange(srv.addr, b"GET / HTTP/1.0\r\n\r\n", Duration::from_secs(20));
    assert!(
        reply.starts_with(b"HTTP/1.0 200"),
        "{}",
        String::from_utf8_lossy(&reply)
    );

    // An idle kept-alive connection and a half-sent request do not hold
    // up the stop.
    let mut idle = TcpStream::connect(srv.addr).unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut half = TcpStream::connect(srv.addr).unwrap();
    half.write_all(b"GET / HTTP/1.1\r\nHo").unwrap();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(srv.pid() as i32, libc::SIGTERM) };
    let t = Instant::now();
    let status = loop {
        if let Some(st) = srv.child.try_wait().unwrap() {
            break st;
        }
        assert!(t.elapsed() < Duration::from_secs(15), "serve did not stop");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
    assert!(srv.stderr.lock().unwrap().contains("stopping"));
    drop((idle, half));
}

fn have_curl() -> bool {
    Command::new("curl")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A CA, a server certificate for 127.0.0.1 and localhost, and a client
/// certificate, all signed by the CA, written as PEM files into `dir`.
fn make_pki(dir: &Path) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "cwdiag test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    p.subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    // For server authentication only: refused when offered by a client.
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let cert = p.signed_by(&key, &issuer).unwrap();
    std::fs::write(dir.join("ca.crt"), ca_cert.pem()).unwrap();
    std::fs::write(dir.join("server.crt"), cert.pem()).unwrap();
    std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();

    let ckey = KeyPair::generate().unwrap();
    let mut cp = CertificateParams::new(vec!["prometheus".to_string()]).unwrap();
    cp.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let ccert = cp.signed_by(&ckey, &issuer).unwrap();
    std::fs::write(dir.join("client.crt"), ccert.pem()).unwrap();
    std::fs::write(dir.join("client.key"), ckey.serialize_pem()).unwrap();
}

/// curl's status code and output for `args` (`-s`, a 20 s cap).
fn curl(args: &[&str]) -> (String, String) {
    let out = Command::new("curl")
        .args([
            "-s",
            "-S",
            "--max-time",
            "20",
            "-o",
            "/dev/stdout",
            "-w",
            "\n%{http_code}",
        ])
        .args(args)
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", ""));
    (
        code.to_string(),
        format!("{body}{}", String::from_utf8_lossy(&out.stderr)),
    )
}

#[test]
fn serve_over_tls_with_basic_auth_answers_curl() {
    if !have_curl() {
        return skip("curl is not installed");
    }
    let dir = tempfile::tempdir().unwrap();
    make_pki(dir.path());
    let hash = bcrypt::hash("right horse", 4).unwrap();
    // Relative paths: next to the configuration file.
    std::fs::write(
        dir.path().join("web.yml"),
        format!(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n\
             basic_auth_users:\n  prometheus: '{hash}'\n"
        ),
    )
    .unwrap();
    let web = dir.path().join("web.yml");
    let srv = Served::start(&["--web-config", web.to_str().unwrap()], None);
    let url = format!("https://{}/metrics", srv.addr);
    let ca = dir.path().join("ca.crt");
    let ca = ca.to_str().unwrap();

    let (code, body) = curl(&["--cacert", ca, "-u", "prometheus:right horse", &url]);
    assert_eq!(code, "200", "{body}");
    assert!(body.contains("cwdiag_sockets"), "{body}");
    // Again (remembered credentials), and with HTTP/2 offered: HTTP/1.1.
    let (code, body) = curl(&[
        "--cacert",
        ca,
        "--http2",
        "-u",
        "prometheus:right horse",
        "-i",
        &url,
    ]);
    assert_eq!(code, "200", "{body}");
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");

    for creds in [
        &["-u", "prometheus:wrong"][..],
        &["-u", "nobody:right horse"],
        &[],
    ] {
        let (code, body) = curl(&[&["--cacert", ca, "-i", &url][..], creds].concat());
        assert_eq!(code, "401", "{creds:?}: {body}");
        assert!(
            body.to_ascii_lowercase()
                .contains("www-authenticate: basic realm="),
            "{body}"
        );
    }
    // The index and unknown paths sit behind the password too.
    let root = format!("https://{}/", srv.addr);
    assert_eq!(curl(&["--cacert", ca, &root]).0, "401");
    assert_eq!(
        curl(&["--cacert", ca, "-u", "prometheus:right horse", &root]).0,
        "200"
    );
    // Clients that stall in the TLS handshake (nothing, or half a
    // ClientHello) do not hold up a scrape.
    let stalled: Vec<TcpStream> = (0..50)
        .map(|i| {
            let mut s = TcpStream::connect(srv.addr).unwrap();
            if i % 2 == 0 {
                s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).unwrap();
            }
            s
        })
        .collect();
    let t = Instant::now();
    let (code, body) = curl(&["--cacert", ca, "-u", "prometheus:right horse", &url]);
    assert_eq!(code, "200", "{body}");
    eprintln!("TLS scrape with 50 stalled handshakes: {:?}", t.elapsed());
    drop(stalled);
    // A client that does not trust the CA fails the handshake.
    assert_eq!(curl(&[&url]).0, "000");
    // Plain HTTP to the TLS port gets no HTTP answer.
    assert_eq!(curl(&[&format!("http://{}/metrics", srv.addr)]).0, "000");
}

#[test]
fn serve_with_client_certificates_answers_only_verified_clients() {
    if !have_curl() {
        return skip("curl is not installed");
    }
    let dir = tempfile::tempdir().unwrap();
    make_pki(dir.path());
    let d = dir.path().display();
    std::fs::write(
        dir.path().join("web.yml"),
        format!(
            "tls_server_config:\n  cert_file: {d}/server.crt\n  key_file: {d}/server.key\n  \
             client_ca_file: ca.crt\n  client_auth_type: RequireAndVerifyClientCert\n"
        ),
    )
    .unwrap();
    let web = dir.path().join("web.yml");
    let srv = Served::start(&["--web-config", web.to_str().unwrap()], None);
    let url = format!("https://{}/metrics", srv.addr);
    let p = |f: &str| dir.path().join(f).display().to_string();
    let (code, body) = curl(&[
        "--cacert",
        &p("ca.crt"),
        "--cert",
        &p("client.crt"),
        "--key",
        &p("client.key"),
        &url,
    ]);
    assert_eq!(code, "200", "{body}");
    let (code, body) = curl(&["--cacert", &p("ca.crt"), &url]);
    assert_eq!(code, "000", "no client certificate: {body}");
    // The server's own certificate chains to the CA but its extended key
    // usage is serverAuth only (RFC 5280, 4.2.1.12): refused for a client.
    let (code, _) = curl(&[
        "--cacert",
        &p("ca.crt"),
        "--cert",
        &p("server.crt"),
        "--key",
        &p("server.key"),
        &url,
    ]);
    assert_eq!(
        code, "000",
        "a serverAuth-only certificate is not a client's"
    );
}

#[test]
fn bad_web_config_is_one_line_naming_file_and_field_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let web = dir.path().join("web.yml");
    for (text, field) in [
        (
            "tls_server_config:\n  cert_file: nope.crt\n  key_file: nope.key\n",
            "tls_server_config.cert_file",
        ),
        (
            "basic_auth_users:\n  alice: notahash\n",
            "basic_auth_users.alice",
        ),
        (
            "tls_server_config:\n  key_fil: x\n",
            "tls_server_config.key_fil",
        ),
        ("basic_auth_users: [1, 2\n", ""),
    ] {
        std::fs::write(&web, text).unwrap();
        let out = cwdiag()
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--web-config",
                web.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(web.to_str().unwrap()), "{err}");
        assert!(err.contains(field), "{field}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}
