//! A real Prometheus server scrapes `cwdiag serve` in a private network
//! namespace holding a CLOSE_WAIT workload, with the shipped rules loaded:
//! the series must carry the workload's values and every rule must
//! evaluate without error.

use crate::deploy::{Serve, free_port, have, http_get, repo};
use crate::support::*;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Percent-encodes a query parameter (RFC 3986 unreserved characters stay).
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A Prometheus server on a free port with its own storage, killed on drop.
struct Prometheus {
    port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target_port: u16) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let rules = repo("deploy/prometheus/cwdiag.rules.yml");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - {}\n\
                 scrape_configs:\n  - job_name: cwdiag\n    static_configs:\n      - targets: ['127.0.0.1:{target_port}']\n",
                rules.display()
            ),
        )
        .unwrap();
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus starts");
        Prometheus {
            port,
            child,
            _dir: dir,
        }
    }

    /// GET an API path; the parsed `data` of a successful answer.
    fn api(&self, path: &str) -> Option<serde_json::Value> {
        let (code, body) = http_get(self.port, path)?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        (code == 200 && v["status"] == "success").then(|| v["data"].clone())
    }

    /// The value of a one-series instant query, once there is one.
    fn value(&self, query: &str) -> Option<f64> {
        let data = self.api(&format!("/api/v1/query?query={}", encode(query)))?;
        let result = data["result"].as_array()?;
        match result.as_slice() {
            [one] => one["value"][1].as_str()?.parse().ok(),
            _ => None,
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn prometheus_scrapes_serve_and_evaluates_the_shipped_rules() {
    if !have("prometheus", "a real Prometheus scrapes cwdiag serve") {
        return;
    }
    if !is_root() {
        skip("needs root to create a network namespace");
        return;
    }
    std::thread::spawn(|| {
        enter_fresh_netns().expect("fresh network namespace");
        const CW: usize = 7;
        let mut w = Workload::default();
        let port = w.listen("127.0.0.1:0");
        let server: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        w.close_wait(server, CW, false, 0);
        w.established(server, 3);
        wait_for_ss("FIN_WAIT2", port, CW as u64);
        // Both children live in this thread's namespace.
        let serve = Serve::start(&["--min-interval", "0s"]);
        let prom = Prometheus::start(serve.port);
        let limit = Duration::from_secs(90);
        poll("Prometheus to answer", limit, || prom.api("/api/v1/status/config"));
        let value = |q: &str, want: f64| {
            poll(&format!("{q} == {want}"), limit, || {
                prom.value(q).filter(|v| *v == want)
            })
        };
        value(r#"up{job="cwdiag"}"#, 1.0);
        value(r#"cwdiag_sockets{job="cwdiag",state="CLOSE_WAIT"}"#, CW as f64);
        // ESTABLISHED also counts Prometheus's own connections: at least ours.
        poll("ESTABLISHED >= 6", limit, || {
            prom.value(r#"cwdiag_sockets{job="cwdiag",state="ESTABLISHED"}"#)
                .filter(|v| *v >= 6.0)
        });
        value(
            &format!(
                r#"cwdiag_group_sockets{{job="cwdiag",state="CLOSE_WAIT",port="{port}",direction="inbound"}}"#
            ),
            CW as f64,
        );
        value(r#"cwdiag_attribution_complete{job="cwdiag"}"#, 1.0);
        value(r#"cwdiag_scan_errors_total{job="cwdiag"}"#, 0.0);
        // Every shipped rule loaded and evaluated, none in error.
        let want = std::fs::read_to_string(repo("deploy/prometheus/cwdiag.rules.yml"))
            .unwrap()
            .matches("- alert: ")
            .count();
        poll("every rule evaluated", limit, || {
            let data = prom.api("/api/v1/rules")?;
            let rules: Vec<serde_json::Value> = data["groups"]
                .as_array()?
                .iter()
                .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
                .collect();
            for r in &rules {
                assert_ne!(r["health"], "err", "rule failed to evaluate: {r}");
            }
            (rules.len() == want && rules.iter().all(|r| r["health"] == "ok")).then_some(())
        });
        drop(prom);
        drop(serve);
        drop(w);
    })
    .join()
    .expect("prometheus test thread");
}
