//! Prometheus exposition from the CLI, and `cwdiag serve` over real HTTP.

use crate::replay::fixture;
use crate::support::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

fn promtool_ok(text: &str) {
    let Ok(mut child) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    else {
        skip("promtool is not installed (Debian package prometheus)");
        return;
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn exposition_matches_the_json_report_and_passes_promtool() {
    let text = String::from_utf8(
        run(&[
            "scan",
            "--format",
            "prometheus",
            "--from",
            &fixture("workload.dump"),
        ])
        .stdout,
    )
    .unwrap();
    let report = json(&["scan", "--json", "--from", &fixture("workload.dump")]);
    for state in ["ESTABLISHED", "SYN_SENT", "CLOSING", "LAST_ACK"] {
        let n = report["states"][state].as_u64().unwrap();
        assert!(
            text.contains(&format!("cwdiag_sockets{{state=\"{state}\"}} {n}\n")),
            "{state} in\n{text}"
        );
    }
    for g in report["groups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["state"] == "CLOSE_WAIT")
    {
        let line = format!(
            "cwdiag_group_sockets{{state=\"CLOSE_WAIT\",port=\"{}\",direction=\"{}\",comm=\"{}\",pod_uid=\"{}\",container=\"{}\"}} {}",
            g["port"],
            g["direction"].as_str().unwrap(),
            g["comm"].as_str().unwrap(),
            g["pod_uid"].as_str().unwrap_or(""),
            g["container"].as_str().unwrap_or(""),
            g["count"]
        );
        assert!(text.contains(&line), "{line} in\n{text}");
    }
    promtool_ok(&text);
    promtool_ok(&String::from_utf8(run(&["scan", "--format", "prometheus"]).stdout).unwrap());
}

#[test]
fn output_file_is_written_whole() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("cwdiag.prom");
    let out = run(&[
        "scan",
        "--format",
        "prometheus",
        "--output",
        f.to_str().unwrap(),
        "--from",
        &fixture("workload.dump"),
    ]);
    assert!(out.status.success() && out.stdout.is_empty());
    let text = std::fs::read_to_string(&f).unwrap();
    assert!(text.contains("cwdiag_sockets{state=\"CLOSE_WAIT\"} 18"));
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "no temp file left behind"
    );
    let bad = run(&[
        "scan",
        "--output",
        "/nonexistent-dir/x.prom",
        "--from",
        &fixture("workload.dump"),
    ]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("/nonexistent-dir/x.prom"));
}

fn get(addr: &str, path: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    Ok(body)
}

#[test]
fn serve_answers_concurrent_scrapes_and_survives_garbage() {
    // Port 0: serve picks a free port and logs it; killed on drop.
    let served = crate::serve::Served::start(&[], None);
    let addr = served.addr.to_string();
    let result = std::panic::catch_unwind(|| {
        let handles: Vec<_> = (0..20)
            .map(|_| {
                let a = addr.clone();
                std::thread::spawn(move || get(&a, "/metrics"))
            })
            .collect();
        for h in handles {
            let body = h.join().unwrap().expect("scrape");
            assert!(body.starts_with("HTTP/1.1 200"), "{body}");
            assert!(body.contains("cwdiag_sockets{state=\"CLOSE_WAIT\"}"));
        }
        let mut g = TcpStream::connect(&addr).unwrap();
        g.write_all(b"\x00\xffGARBAGE\r\n\r\n").unwrap();
        drop(g);
        assert!(get(&addr, "/nope").unwrap().starts_with("HTTP/1.1 404"));
        assert!(get(&addr, "/").unwrap().contains("/metrics"));
        assert!(get(&addr, "/metrics").unwrap().starts_with("HTTP/1.1 200"));
    });
    drop(served);
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}
