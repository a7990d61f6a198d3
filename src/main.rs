//! cwdiag: find and explain TCP connections stuck in CLOSE_WAIT and
//! TIME_WAIT on Linux.
#![deny(clippy::unwrap_used, clippy::expect_used)]

use clap::Parser;
use cwdiag::{app, cli, output};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version: print as clap would; a closed pipe is fine.
            let _ = output::emit(&e.render().to_string());
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // One line: clap's first paragraph, without its "error: " prefix.
            let text = e.render().to_string();
            let para: Vec<&str> = text
                .lines()
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect();
            eprintln!("cwdiag: {}", para.join(" ").trim_start_matches("error: "));
            return ExitCode::from(2);
        }
    };
    match app::run(cli) {
        Ok(code) => code,
        Err(e) => {
            // Errors quote file names and contents: escape them as all text.
            eprintln!("cwdiag: {}", cwdiag::escape::Escaped(&format!("{e:#}")));
            ExitCode::from(2)
        }
    }
}
