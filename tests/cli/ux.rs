//! User-facing conventions: completions, man pages, version, colour.

use crate::replay::fixture;
use crate::support::*;
use std::process::Command;

#[test]
fn bash_completion_loads_and_completes_subcommands() {
    let out = run(&["completions", "bash"]);
    assert!(out.status.success());
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("cwdiag.bash");
    std::fs::write(&f, &out.stdout).unwrap();
    let script = format!(
        "source {}; COMP_WORDS=(cwdiag sc); COMP_CWORD=1; _cwdiag cwdiag sc cwdiag; echo \"${{COMPREPLY[@]}}\"; complete -p cwdiag",
        f.display()
    );
    let r = Command::new("bash").args(["-c", &script]).output().unwrap();
    let text = String::from_utf8_lossy(&r.stdout);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(text.contains("scan"), "completes 'sc' to scan: {text}");
    assert!(text.contains("-F _cwdiag cwdiag"), "{text}");
    for shell in ["zsh", "fish"] {
        let out = run(&["completions", shell]);
        assert!(out.status.success() && out.stdout.len() > 500, "{shell}");
    }
}

#[test]
fn man_pages_render() {
    let top = run(&["man"]);
    let text = String::from_utf8(top.stdout).unwrap();
    assert!(text.contains(".TH cwdiag 1"), "{text}");
    let assert_page = String::from_utf8(run(&["man", "assert"]).stdout).unwrap();
    assert!(assert_page.contains("max\\-close\\-wait"));
    if Command::new("man").arg("--version").output().is_ok() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("cwdiag.1");
        std::fs::write(&f, text).unwrap();
        let r = Command::new("man")
            .arg("-l")
            .arg(&f)
            .env("MANPAGER", "cat")
            .env("PAGER", "cat")
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&r.stdout).contains("CLOSE_WAIT"));
    } else {
        skip("man is not installed: rendered the roff only");
    }
    assert_eq!(run(&["man", "nope"]).status.code(), Some(2));
}

#[test]
fn version_names_the_package_version() {
    let out = String::from_utf8(run(&["--version"]).stdout).unwrap();
    assert!(
        out.starts_with(&format!("cwdiag {}", env!("CARGO_PKG_VERSION"))),
        "{out}"
    );
}

#[test]
fn no_escape_codes_unless_asked() {
    let args = ["scan", "--from", &fixture("workload.dump")];
    let plain = run(&args);
    assert!(
        !plain.stdout.contains(&0x1b),
        "piped output has no escape codes"
    );
    let forced = cwdiag().args(args).arg("--color=always").output().unwrap();
    assert!(forced.stdout.contains(&0x1b), "--color=always colours");
    let no_color = cwdiag()
        .args(args)
        .arg("--color=auto")
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(!no_color.stdout.contains(&0x1b));
    // Severity is readable without colour.
    assert!(String::from_utf8_lossy(&plain.stdout).contains("[WARNING]"));
}

#[test]
fn tables_fit_80_columns_with_long_names_and_ipv6_peers() {
    let snap = serde_json::json!({
        "schema_version": 1, "taken_at_ms": 0, "source": {"kind": "netlink"},
        "sockets": (0..30).map(|i| serde_json::json!({
            "state": "CLOSE_WAIT", "local": "[2001:db8:aaaa:bbbb:cccc:dddd:eeee:1]:40000",
            "peer": format!("[2001:db8:ffff:eeee:dddd:cccc:bbbb:{:x}]:5432", i), "timer": "off",
            "expires_ms": 0, "retrans": 0, "recv_q": 1, "send_q": 0, "uid": 0,
            "inode": 100 + i, "cookie": i, "pid": 4242, "fd": 10 + i
        })).collect::<Vec<_>>(),
        "processes": {"4242": {"comm": "a-very-long-process-name-indeed"}},
        "attribution": {"complete": true, "wanted_sockets": 30, "found_sockets": 30,
            "scanned_processes": 1, "unreadable_processes": 0, "vanished_processes": 0},
        "sysctls": {}, "warnings": []
    });
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("wide.json");
    std::fs::write(&f, snap.to_string()).unwrap();
    let out = cwdiag()
        .args(["scan", "--top", "5", "--from"])
        .arg(&f)
        .env("COLUMNS", "80")
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    for line in text.lines() {
        assert!(
            line.chars().count() <= 80,
            "line wider than 80 columns ({}):\n{line}",
            line.chars().count()
        );
    }
    assert!(text.contains("25 more groups not shown"), "{text}");
    let bare =
        String::from_utf8(run(&["scan", "-H", "--from", f.to_str().unwrap()]).stdout).unwrap();
    assert!(!bare.contains("PROCESS"), "-H drops headers");
}

/// Every rule's write-up cites only what a user can open (man pages,
/// kernel source, RFCs, upstream docs): never the project's internal
/// research notes or its issue tracker.
#[test]
fn explain_texts_cite_only_what_a_user_can_read() {
    let list = run(&["explain"]);
    assert!(list.status.success());
    let ids: Vec<String> = String::from_utf8(list.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    assert_eq!(ids.len(), 16, "{ids:?}");
    for id in ids {
        let out = run(&["explain", &id]);
        assert!(out.status.success(), "{id}");
        let text = String::from_utf8(out.stdout).unwrap();
        for word in [
            "seed post",
            "tcp-states.md",
            "services.md",
            "../shared",
            "issue #",
        ] {
            assert!(!text.contains(word), "{id}: cites '{word}'");
        }
    }
}
