//! Every `$ cwdiag ...` line in the README's ```console blocks runs here,
//! from the repository top, so the documentation cannot rot. A trailing
//! `# exit N` comment states the expected exit code (default 0).

use crate::support::skip;
use std::path::Path;
use std::process::Command;

fn examples() -> Vec<(String, i32)> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let mut out = Vec::new();
    let mut in_console = false;
    for line in readme.lines() {
        if line.starts_with("```") {
            in_console = !in_console && line.trim() == "```console";
            continue;
        }
        let Some(cmd) = line.strip_prefix("$ ").filter(|_| in_console) else {
            continue;
        };
        let (cmd, code) = match cmd.rsplit_once("# exit ") {
            Some((c, n)) => (c.trim().to_string(), n.trim().parse().unwrap()),
            None => (cmd.trim().to_string(), 0),
        };
        out.push((cmd, code));
    }
    out
}

#[test]
fn readme_examples_run_as_printed() {
    let ex = examples();
    assert!(ex.len() >= 8, "README examples found: {ex:?}");
    // A newcomer's clone has nothing beside it: examples use only the
    // repository's own files.
    for (cmd, _) in &ex {
        assert!(
            !cmd.contains("../"),
            "README example reads outside the repository: {cmd}"
        );
    }
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_cwdiag"))
        .parent()
        .unwrap()
        .to_owned();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let has_jq = Command::new("jq").arg("--version").output().is_ok();
    for (cmd, want) in ex {
        if cmd.contains("| jq") && !has_jq {
            skip(&format!("jq is not installed: {cmd}"));
            continue;
        }
        let out = Command::new("bash")
            .args(["-o", "pipefail", "-c", &cmd])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("PATH", &path)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(want),
            "README example `{cmd}` exited {:?}: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !out.stdout.is_empty(),
            "README example `{cmd}` printed nothing"
        );
    }
}
