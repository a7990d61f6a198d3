//! Command-line definition. Doc comments are the `--help` text.

use crate::collect::SourceChoice;
use crate::filter::{Family, PeerFilter};
use crate::model::TcpState;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// Find and explain TCP connections stuck in CLOSE_WAIT and TIME_WAIT.
///
/// Reads the kernel's TCP tables over netlink sock_diag (IPv4 and IPv6),
/// maps sockets to processes through /proc, and explains build-ups with
/// hints that are correct on current Linux.
///
/// Exit codes: 0 ok, 1 an `assert` limit is broken, 2 usage or runtime error.
#[derive(Debug, Parser)]
#[command(name = "cwdiag", version = env!("CWDIAG_VERSION"), about, long_about, max_term_width = 100)]
pub struct Cli {
    /// When to colour output: auto (only on a terminal, and not when
    /// NO_COLOR is set), always, never.
    #[arg(long, global = true, value_name = "WHEN", default_value = "auto")]
    pub color: ColorChoice,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Report socket states, CLOSE_WAIT/TIME_WAIT groups and findings.
    Scan(ScanArgs),
    /// CI check: exit 1 when a limit is broken, 0 when all hold.
    Assert(AssertArgs),
    /// Sample every --interval and redraw a live table per process and port
    /// (count now, delta since start, rate per minute, oldest age); with
    /// --json, one JSON object per sample per line. Ctrl-C stops.
    Watch(WatchArgs),
    /// Serve Prometheus metrics over HTTP (/metrics), scanning at scrape
    /// time, at most one scan at a time.
    ///
    /// HTTP/1.0 and 1.1, GET and HEAD; TLS and basic auth with
    /// --web-config. Limits: request head 16 KiB
    /// within 10 s (also the keep-alive idle time), request bodies refused
    /// (413), 30 s per request, a connection idle 10 s outside a request is
    /// closed. At most --max-connections open; the fd limit is raised to
    /// its hard limit at start. SIGTERM or Ctrl-C: finish the scrapes in
    /// progress, exit 0.
    Serve(ServeArgs),
    /// Stream TCP state changes and resets as the kernel makes them, with
    /// the process that caused each where the kernel knows it (the one
    /// that called connect(), close() or shutdown(), or reset). Reads the
    /// tracepoints sock:inet_sock_set_state, tcp:tcp_receive_reset,
    /// tcp:tcp_send_reset and tcp:tcp_destroy_sock through a private
    /// tracefs instance. Needs root. Ctrl-C or SIGTERM stops; lost and
    /// unattributed events are counted on stderr at the end.
    Trace(TraceArgs),
    /// Emergency first aid: destroy selected sockets with SOCK_DESTROY
    /// (as `ss -K`). Dry run unless --yes. A state is mandatory; LISTEN is
    /// refused. The application's fd stays leaked until it calls close().
    Kill(KillArgs),
    /// Print the raw collected data (sockets, owners, sysctls) as a JSON
    /// snapshot that `--from` reads back.
    Snapshot(SnapshotArgs),
    /// Explain a rule: what it means, how to confirm it, the fix, and what
    /// not to do. Without RULE_ID, list every rule.
    Explain {
        /// A rule_id from a finding, e.g. close-wait-never-read.
        rule_id: Option<String>,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        #[arg(value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), e.g. `cwdiag man > cwdiag.1`; with a
    /// subcommand, its own page (`cwdiag man scan > cwdiag-scan.1`).
    Man {
        #[arg(value_name = "SUBCOMMAND")]
        subcommand: Option<String>,
    },
}

/// A whole number of at least 1.
fn parse_positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!(
            "invalid number '{s}': expected a whole number of at least 1"
        )),
    }
}

/// Parses `2s`, `500ms`, `1m` or a bare number of seconds (`2`, `0.5`).
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    if let Ok(secs) = s.parse::<f64>()
        && secs.is_finite()
        && secs >= 0.0
    {
        return Ok(std::time::Duration::from_secs_f64(secs));
    }
    humantime::parse_duration(s)
        .map_err(|e| format!("invalid duration '{s}' ({e}): use e.g. 2s, 500ms, 1m"))
}

/// Repeated sampling, for growth.
#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "Sampling")]
pub struct SampleArgs {
    /// Take N samples, --interval apart, and report growth across them;
    /// TIME_WAIT findings then say whether the closes were sustained
    /// (closes in every interval) and at what rate over which window.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub samples: u32,

    /// Time between samples (2s, 500ms, 1m; bare numbers are seconds).
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_duration)]
    pub interval: std::time::Duration,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub select: SelectArgs,

    #[command(flatten)]
    pub source: SourceArgs,

    #[command(flatten)]
    pub policy: PolicyArgs,

    /// Time between samples (2s, 500ms, 1m; bare numbers are seconds).
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_duration)]
    pub interval: std::time::Duration,

    /// Stop after N samples (default: until Ctrl-C).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub count: Option<u32>,

    /// One JSON object per sample per line (NDJSON), no terminal codes.
    #[arg(long)]
    pub json: bool,

    /// Show at most N rows (0 = all).
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub top: usize,
}

#[derive(Debug, Args)]
pub struct TraceArgs {
    /// Only events of these states (left or entered; repeatable or
    /// comma-separated), whose local or peer port is PORT, caused by
    /// process PID or NAME, towards a peer, of a family.
    #[command(flatten)]
    pub select: SelectArgs,

    /// Only events of sockets in the network namespace NAME (a /run/netns
    /// handle). Events are attributed to a namespace only on evidence (the
    /// process that acted on the socket, or the same socket seen earlier);
    /// the rest never match.
    #[arg(long, value_name = "NAME", conflicts_with = "netns_pid")]
    pub netns: Option<String>,

    /// Only events of sockets in the network namespace of process PID.
    #[arg(long, value_name = "PID")]
    pub netns_pid: Option<u32>,

    /// Stop after DURATION (2s, 500ms, 1m; bare numbers are seconds).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<std::time::Duration>,

    /// One JSON object per event per line (NDJSON).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct KillArgs {
    #[command(flatten)]
    pub select: SelectArgs,

    #[command(flatten)]
    pub source: SourceArgs,

    /// Really destroy the sockets (default: only list what would be hit).
    #[arg(long)]
    pub yes: bool,

    /// Act only on the socket with this cookie (repeatable), as the dry
    /// run's COOKIE column shows it (0x1f3a or decimal). Replaces the
    /// selection flags; a listener is never destroyed.
    #[arg(long = "cookie", value_name = "COOKIE", value_parser = crate::killplan::parse_cookie, value_delimiter = ',', conflicts_with = "plan")]
    pub cookies: Vec<u64>,

    /// Act only on the sockets of FILE, a plan saved from a dry run with
    /// `--json`, that still exist with the same cookie, state and
    /// addresses; the rest are reported as gone or changed and left alone.
    /// Replaces the selection flags.
    #[arg(long, value_name = "FILE")]
    pub plan: Option<PathBuf>,

    /// Dry run only: print the selection as JSON, a plan for --plan.
    #[arg(long, conflicts_with = "yes")]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct SnapshotArgs {
    #[command(flatten)]
    pub source: SourceArgs,

    /// Attribute every socket, ESTABLISHED included (slower).
    #[arg(long)]
    pub all_owners: bool,
}

/// Which sockets to look at. Shared by every command.
#[derive(Debug, Args, Clone, Default)]
#[command(next_help_heading = "Selection")]
pub struct SelectArgs {
    /// Only these states (repeatable or comma-separated). Kernel and ss
    /// spellings are accepted: close-wait, CLOSE_WAIT, CLOSE-WAIT, time-wait.
    #[arg(long = "state", value_name = "STATE", value_delimiter = ',')]
    pub states: Vec<TcpState>,

    /// Only sockets whose local or peer port is PORT (repeatable).
    #[arg(long = "port", value_name = "PORT", value_delimiter = ',')]
    pub ports: Vec<u16>,

    /// Only sockets held by process PID (repeatable). Sockets without an
    /// owner (TIME_WAIT, orphans) never match. A PID that is not running
    /// is reported in a warning.
    #[arg(long = "pid", value_name = "PID", value_delimiter = ',')]
    pub pids: Vec<u32>,

    /// Only sockets held by a process named NAME (repeatable): the
    /// kernel's comm (cut to 15 characters), the executable's file name
    /// or argv[0]'s file name, matched exactly; `*` and `?` make a
    /// pattern ('billing-*'). A NAME that matches no running process is
    /// reported in a warning.
    #[arg(long = "comm", value_name = "NAME")]
    pub comms: Vec<crate::filter::CommPattern>,

    /// Only sockets whose peer is ADDR or ADDR:PORT ([v6]:port for IPv6).
    #[arg(long, value_name = "ADDR[:PORT]")]
    pub peer: Option<PeerFilter>,

    /// Only IPv4 (4) or IPv6 (6) sockets.
    #[arg(long, value_name = "4|6")]
    pub family: Option<Family>,
}

/// Where the sockets come from. Shared by every command.
#[derive(Debug, Args, Clone, Default)]
#[command(next_help_heading = "Source")]
pub struct SourceArgs {
    /// Read a capture instead of the live kernel: a cwdiag JSON snapshot
    /// (`cwdiag snapshot`), a dump written by `cwdiag scan --record` or by
    /// `ss -ntaD FILE`. The format is detected from the content. A dump is
    /// read as a stream and must end with NLMSG_DONE (else it is
    /// truncated: exit 2); FIFOs are refused.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["netns", "netns_pid", "all_netns", "source"])]
    pub from: Option<PathBuf>,

    /// Live interface: auto (netlink sock_diag, falling back to
    /// /proc/net/tcp when it is unavailable), netlink, or proc.
    #[arg(long, value_name = "SOURCE", default_value = "auto")]
    pub source: SourceChoice,

    /// Scan the network namespace NAME (a /run/netns handle, as made by
    /// `ip netns add`). Needs root.
    #[arg(long, value_name = "NAME", conflicts_with_all = ["netns_pid", "all_netns"])]
    pub netns: Option<String>,

    /// Scan the network namespace of process PID (e.g. a container's main
    /// process). Needs root.
    #[arg(long, value_name = "PID", conflicts_with = "all_netns")]
    pub netns_pid: Option<u32>,

    /// Scan every distinct network namespace (of processes and under
    /// /run/netns), one report each. Namespaces are dumped in parallel and
    /// one walk of /proc finds the owners in all of them; a namespace that
    /// vanishes during the scan is a warning.
    #[arg(long)]
    pub all_netns: bool,

    /// Directory to read process information and sysctls from instead of
    /// /proc (for tests and chroots).
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/proc",
        hide_default_value = true
    )]
    pub proc_root: PathBuf,
}

/// When groups become findings, and how severe they are.
#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "Thresholds")]
pub struct PolicyArgs {
    /// CLOSE_WAIT sockets per process and port that make a warning
    /// (fewer are reported as info).
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub close_wait_warn: usize,

    /// CLOSE_WAIT sockets per process and port that make a critical finding.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub close_wait_crit: usize,

    /// TIME_WAIT sockets per local port or destination that make a finding.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub time_wait_warn: usize,
}

/// `--format json`'s help, with the schema version the output carries.
fn json_help() -> String {
    format!(
        "The JSON document described in the README (schema_version {})",
        crate::diag::report::REPORT_SCHEMA_VERSION
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Tables for people.
    Table,
    /// The JSON document described in the README.
    #[value(help = json_help())]
    Json,
    /// Prometheus text exposition (metrics listed in the README).
    Prometheus,
}

#[derive(Debug, Args)]
pub struct ScanArgs {
    #[command(flatten)]
    pub select: SelectArgs,

    #[command(flatten)]
    pub source: SourceArgs,

    /// Also save the raw netlink replies to FILE, in the format `ss -D`
    /// writes, plus owners and sysctls in FILE.cwdiag.json, so that
    /// `--from FILE` reproduces this report. Both are mode 0600 and written
    /// as --output is (no symlinks followed, no other user's file
    /// replaced); a FIFO or device gets the dump only.
    #[arg(long, value_name = "FILE", conflicts_with = "from")]
    pub record: Option<PathBuf>,

    #[command(flatten)]
    pub policy: PolicyArgs,

    /// Print JSON instead of tables (same as --format json).
    #[arg(long, help_heading = "Output")]
    pub json: bool,

    /// Output format.
    #[arg(
        long,
        value_name = "FORMAT",
        default_value = "table",
        conflicts_with = "json",
        help_heading = "Output"
    )]
    pub format: Format,

    /// Add one record per socket (and attribute every socket, ESTABLISHED
    /// included, which reads every process's fd table).
    #[arg(long, help_heading = "Output")]
    pub sockets: bool,

    /// Show at most N groups per table (0 = all).
    #[arg(long, value_name = "N", default_value_t = 20, help_heading = "Output")]
    pub top: usize,

    /// Do not print table headers (as ss -H).
    #[arg(short = 'H', long, help_heading = "Output")]
    pub no_header: bool,

    /// Write the output to FILE atomically (a new file, mode 0644, renamed
    /// into place), e.g. for node_exporter's textfile collector, instead of
    /// stdout. Symlinks and files owned by other users are refused; `-`,
    /// /dev/stdout, a FIFO or /dev/null are written in place.
    #[arg(long, value_name = "FILE", help_heading = "Output")]
    pub output: Option<PathBuf>,

    /// Prometheus: series kept per state in cwdiag_group_sockets; the rest
    /// are summed into an "other" series (0 = keep all).
    #[arg(long, value_name = "N", default_value_t = 20, help_heading = "Output")]
    pub top_k: usize,

    #[command(flatten)]
    pub sampling: SampleArgs,

    /// Record the kernel's TCP tracepoints for DURATION (10s, 1m), then
    /// scan: TIME_WAIT findings name the processes that closed
    /// (evidence.closers) and the close rate measured over the window;
    /// the report's `window` lists CLOSE_WAIT sockets that began in it
    /// (with the time of the peer's FIN) and connections the peer reset
    /// whose fd is still open. Needs root; without the tracepoints, a
    /// warning and the snapshot alone. Not with --from, --record or
    /// --samples; Prometheus output leaves it out.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, conflicts_with_all = ["from", "record"], help_heading = "Sampling")]
    pub window: Option<std::time::Duration>,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub select: SelectArgs,

    #[command(flatten)]
    pub source: SourceArgs,

    #[command(flatten)]
    pub policy: PolicyArgs,

    /// Address to serve /metrics on. 9911 sits in the range Prometheus
    /// exporters use, clear of 9090-9100; loopback by default.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9911")]
    pub listen: String,

    /// Serve a cached result to scrapes that come sooner than this after
    /// the last scan (concurrent scrapes share one scan anyway).
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub min_interval: std::time::Duration,

    /// Series kept per state in cwdiag_group_sockets (0 = keep all).
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub top_k: usize,

    /// TLS and basic authentication from a Prometheus exporter-toolkit
    /// web configuration file (YAML: tls_server_config with cert_file,
    /// key_file and optionally client_ca_file and client_auth_type;
    /// basic_auth_users mapping user names to bcrypt hashes). Relative
    /// paths are relative to the file's directory. Read once at start.
    #[arg(long, value_name = "FILE")]
    pub web_config: Option<std::path::PathBuf>,

    /// Connections open at once (at most the file descriptor limit less
    /// 128). Beyond it, the connection quiet the longest that is not in a
    /// request is closed for the new one; when all are in a request, the
    /// new one gets 503.
    #[arg(long, value_name = "N", default_value_t = crate::serve::DEFAULT_MAX_CONNECTIONS,
          value_parser = parse_positive)]
    pub max_connections: usize,

    /// Also keep the kernel's TCP tracepoints running between scrapes and
    /// export counters: cwdiag_tcp_transitions_total (by local port),
    /// cwdiag_tcp_active_closes_total (by process name),
    /// cwdiag_tcp_resets_total (by direction and local port),
    /// cwdiag_tcp_events_lost_total. Host-wide: the tracepoints name no
    /// namespace. Label values past --top-k distinct ones are counted as
    /// "other". Needs root; without, a warning and no counters.
    #[arg(long)]
    pub events: bool,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("limits").required(true).multiple(true)))]
pub struct AssertArgs {
    #[command(flatten)]
    pub select: SelectArgs,

    #[command(flatten)]
    pub source: SourceArgs,

    /// Fail when more than N sockets (after filters) are in CLOSE_WAIT.
    #[arg(long, value_name = "N", group = "limits")]
    pub max_close_wait: Option<usize>,

    /// Fail when more than N sockets (after filters) are in TIME_WAIT.
    #[arg(long, value_name = "N", group = "limits")]
    pub max_time_wait: Option<usize>,

    /// Fail when one process's CLOSE_WAIT on one port grew by more than K
    /// over the samples (needs --samples 2 or more).
    #[arg(long, value_name = "K", group = "limits", requires = "samples")]
    pub max_close_wait_growth: Option<usize>,

    /// Fail when TIME_WAIT on one port or destination port grew by more
    /// than K over the samples (needs --samples 2 or more).
    #[arg(long, value_name = "K", group = "limits", requires = "samples")]
    pub max_time_wait_growth: Option<usize>,

    /// Fail when the selected processes hold more than N socket fds that
    /// no socket table knows (connections the kernel already closed whose
    /// fd was never close()d; see `cwdiag explain stale-socket-fds`).
    #[arg(long, value_name = "N", group = "limits")]
    pub max_stale_socket_fds: Option<usize>,

    #[command(flatten)]
    pub sampling: SampleArgs,

    /// Exit 2 when a --comm or --pid value matches no running process,
    /// instead of passing with a warning (a gate that cannot fire).
    #[arg(long)]
    pub require_match: bool,

    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_valid() {
        Cli::command().debug_assert();
    }

    /// `--help` names the schema version the JSON output carries.
    #[test]
    fn help_names_the_json_schema_version() {
        let mut cmd = Cli::command();
        let scan = cmd.find_subcommand_mut("scan").unwrap();
        let help = scan.render_long_help().to_string();
        let want = format!(
            "schema_version {}",
            crate::diag::report::REPORT_SCHEMA_VERSION
        );
        assert!(help.contains(&want), "{help}");
    }
}
