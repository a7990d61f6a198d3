//! Tables for people: a state summary, CLOSE_WAIT by process and port,
//! TIME_WAIT by port or destination, then the findings with their hints.

use super::Style;
use crate::diag::{Direction, Finding, Group, Owner, Report, Severity};
use crate::escape::Escaped;
use crate::model::{SourceKind, TcpState};
use crate::units::age;
use anstyle::{AnsiColor, Style as Ansi};
use comfy_table::{Cell, CellAlignment, ContentArrangement, Table, presets};
use std::fmt::Write;

pub fn render(r: &Report, st: &Style) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}", super::wrap(&headline(r), st.width, "  "));
    for w in &r.warnings {
        let w = crate::procname::printable(w);
        let line = super::wrap(&format!("warning: {w}"), st.width, "  ");
        let _ = writeln!(out, "{}", paint(st, warn_style(), &line));
    }
    out.push('\n');
    out.push_str(&states_table(r, st));

    let cw: Vec<&Group> = r
        .groups
        .iter()
        .filter(|g| g.state == TcpState::CloseWait)
        .collect();
    if !cw.is_empty() {
        out.push_str("\nCLOSE_WAIT by process and port\n");
        out.push_str(&close_wait_table(&cw, r, st));
    }
    let tw: Vec<&Group> = r
        .groups
        .iter()
        .filter(|g| g.state == TcpState::TimeWait)
        .collect();
    if !tw.is_empty() {
        out.push_str("\nTIME_WAIT by port and destination (no process owns TIME_WAIT)\n");
        out.push_str(&time_wait_table(&tw, st));
    }
    out.push('\n');
    out.push_str(&findings(&r.findings, st));
    out
}

fn headline(r: &Report) -> String {
    let source = match (&r.source.kind, &r.source.path) {
        (SourceKind::Netlink, _) => "netlink sock_diag".to_string(),
        (SourceKind::Proc, _) => "/proc/net/tcp (fallback)".to_string(),
        (_, Some(p)) => format!("replay of {}", Escaped(p)),
        (_, None) => "replay".to_string(),
    };
    let a = &r.attribution;
    let attribution = if a.wanted_sockets == 0 {
        "no sockets to attribute".to_string()
    } else if a.complete {
        format!(
            "{}/{} sockets attributed",
            a.found_sockets, a.wanted_sockets
        )
    } else {
        format!(
            "{}/{} sockets attributed, INCOMPLETE ({} processes unreadable)",
            a.found_sockets, a.wanted_sockets, a.unreadable_processes
        )
    };
    format!("{} TCP sockets ({source}); {attribution}", r.total)
}

/// The one table set-up of every text output: condensed UTF-8 borders,
/// columns fitted to `width`, and `header` when there is one.
pub(super) fn table(width: u16, header: Option<&[&str]>) -> Table {
    let mut t = Table::new();
    t.load_style(presets::UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_width(width);
    if let Some(header) = header {
        t.set_header(header.iter().map(Cell::new));
    }
    t
}

fn new_table(st: &Style, header: &[&str]) -> Table {
    table(st.width, st.header.then_some(header))
}

fn states_table(r: &Report, st: &Style) -> String {
    let mut t = new_table(st, &["STATE", "COUNT", "MEANING"]);
    for (state, n) in &r.states {
        if *n == 0 && !matches!(state, TcpState::CloseWait | TcpState::TimeWait) {
            continue;
        }
        t.add_row(vec![
            Cell::new(state.name()),
            Cell::new(n).set_alignment(CellAlignment::Right),
            Cell::new(meaning(*state)),
        ]);
    }
    format!("{t}\n")
}

fn meaning(s: TcpState) -> &'static str {
    match s {
        TcpState::Established => "open",
        TcpState::SynSent => "connecting, waiting for the peer",
        TcpState::SynRecv => "handshake in progress (server side)",
        TcpState::FinWait1 => "we closed, waiting for the peer's ACK",
        TcpState::FinWait2 => "we closed, waiting for the peer's FIN",
        TcpState::TimeWait => "we closed first; kernel expires it (60 s)",
        TcpState::Close => "closed",
        TcpState::CloseWait => "peer closed; the local app must close()",
        TcpState::LastAck => "we closed last, waiting for the final ACK",
        TcpState::Listen => "listening",
        TcpState::Closing => "both closed at once",
    }
}

fn place(g: &Group) -> String {
    match (g.direction, &g.peer) {
        (Direction::Inbound, _) => format!("in :{}", g.port),
        (Direction::Outbound, Some(p)) => format!("out {p}"),
        (Direction::Outbound, None) => format!("out :{}", g.port),
    }
}

/// Characters of a command line shown in a table cell.
pub const COMMAND_WIDTH: usize = 40;

/// The owner's short command line (see `Process::short_command`), or its
/// escaped comm when the report does not list it.
pub fn process_cell(
    pid: Option<u32>,
    comm: Option<&str>,
    procs: &std::collections::BTreeMap<u32, crate::model::Process>,
    width: usize,
) -> String {
    match pid.and_then(|p| procs.get(&p)) {
        Some(p) => p.short_command(width),
        None => comm.map(crate::procname::printable).unwrap_or_default(),
    }
}

fn owner_cells(g: &Group, r: &Report) -> (String, String) {
    match g.owner {
        Owner::Process => {
            let mut cell = process_cell(g.pid, g.comm.as_deref(), &r.processes, COMMAND_WIDTH);
            // Where it runs: the pod (first 8 of its UID) and container.
            let place: Vec<String> = g
                .pod_uid
                .iter()
                .map(|u| format!("pod {}", u.get(..8).unwrap_or(u)))
                .chain(g.container.iter().map(|c| crate::procname::printable(c)))
                .collect();
            if !place.is_empty() {
                cell.push('\n');
                cell.push_str(&place.join(" "));
            }
            (g.pid.map(|p| p.to_string()).unwrap_or_default(), cell)
        }
        Owner::None => ("-".into(), "(no owner: not accepted)".into()),
        Owner::Unknown => ("?".into(), "(owner unreadable)".into()),
        Owner::NotResolved => ("".into(), "".into()),
    }
}

fn hidden_line(total: usize, shown: usize) -> String {
    if total > shown {
        format!(
            "... {} more groups not shown (use --top 0 to show all)\n",
            total - shown
        )
    } else {
        String::new()
    }
}

fn limit<'a>(groups: &'a [&'a Group], st: &Style) -> &'a [&'a Group] {
    if st.top == 0 {
        groups
    } else {
        &groups[..groups.len().min(st.top)]
    }
}

fn close_wait_table(groups: &[&Group], r: &Report, st: &Style) -> String {
    let mut t = new_table(
        st,
        &[
            "PID",
            "PROCESS",
            "WHERE",
            "COUNT",
            "RECV-Q 0/1/>1",
            "OLDEST",
        ],
    );
    let shown = limit(groups, st);
    for g in shown {
        let (pid, comm) = owner_cells(g, r);
        t.add_row(vec![
            Cell::new(pid),
            Cell::new(comm),
            Cell::new(place(g)),
            Cell::new(g.count).set_alignment(CellAlignment::Right),
            Cell::new(format!(
                "{}/{}/{}",
                g.recv_q.zero, g.recv_q.one, g.recv_q.more
            )),
            Cell::new(g.oldest_age_ms.map(age).unwrap_or_else(|| "-".into())),
        ]);
    }
    format!("{t}\n{}", hidden_line(groups.len(), shown.len()))
}

fn time_wait_table(groups: &[&Group], st: &Style) -> String {
    let mut t = new_table(st, &["WHERE", "COUNT", "IPv4/IPv6"]);
    let shown = limit(groups, st);
    for g in shown {
        t.add_row(vec![
            Cell::new(place(g)),
            Cell::new(g.count).set_alignment(CellAlignment::Right),
            Cell::new(format!("{}/{}", g.ipv4, g.ipv6)),
        ]);
    }
    format!("{t}\n{}", hidden_line(groups.len(), shown.len()))
}

fn severity_style(s: Severity) -> Ansi {
    let c = match s {
        Severity::Info => AnsiColor::Cyan,
        Severity::Warning => AnsiColor::Yellow,
        Severity::Critical => AnsiColor::Red,
    };
    Ansi::new().fg_color(Some(c.into())).bold()
}

fn warn_style() -> Ansi {
    Ansi::new().fg_color(Some(AnsiColor::Yellow.into()))
}

fn paint(st: &Style, style: Ansi, text: &str) -> String {
    if st.color {
        format!("{style}{text}{style:#}")
    } else {
        text.to_string()
    }
}

fn findings(fs: &[Finding], st: &Style) -> String {
    if fs.is_empty() {
        return "No findings: no CLOSE_WAIT, and TIME_WAIT below the thresholds.\n".to_string();
    }
    let mut out = format!("Findings ({})\n", fs.len());
    let width = usize::from(st.width).max(40);
    let body = textwrap::Options::new(width)
        .initial_indent("  ")
        .subsequent_indent("  ");
    let hint = textwrap::Options::new(width)
        .initial_indent("  hint: ")
        .subsequent_indent("        ");
    for f in fs {
        let label = paint(
            st,
            severity_style(f.severity),
            &format!("[{}]", f.severity.label()),
        );
        let _ = writeln!(out, "{label} {}", f.rule_id);
        // Findings quote process names: escape what could drive the terminal.
        let summary = crate::procname::printable(&f.summary);
        let _ = writeln!(out, "{}", textwrap::fill(&summary, &body));
        let _ = writeln!(
            out,
            "{}",
            textwrap::fill(&crate::procname::printable(&f.hint), &hint)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::testkit::SnapBuilder;

    #[test]
    fn owners_show_their_full_name_and_command_escaped() {
        let mut snap = SnapBuilder::new()
            .listen("10.0.0.1:8080", Some(7), 0, 128)
            .close_wait("10.0.0.1:8080", "10.0.0.9:40000", 1, Some(7), None)
            .close_wait("10.0.0.1:8080", "10.0.0.9:40001", 1, Some(8), None)
            .process(7, "billing-sync-wo", None, None)
            .process(8, "evil\u{1b}[2J", None, None)
            .build();
        let p = snap.processes.get_mut(&7).unwrap();
        p.exe = Some("/opt/billing/billing-sync-worker".into());
        p.cmdline = Some(vec!["/opt/billing/billing-sync-worker".into(), "-q".into()]);
        let r = crate::diag::classify(
            &snap,
            &crate::filter::Filter::default(),
            &crate::diag::Policy::default(),
        );
        let st = Style {
            color: false,
            width: 120,
            top: 0,
            header: true,
        };
        let text = render(&r, &st);
        let row = |pid: &str| {
            text.lines()
                .find(|l| l.starts_with(&format!("│ {pid} ")))
                .unwrap_or_else(|| panic!("row {pid}:\n{text}"))
                .to_string()
        };
        assert!(row("7").contains("billing-sync-worker -q"), "{text}");
        assert!(row("8").contains("evil\\x1b[2J"), "{text}");
        assert!(
            !text.contains('\u{1b}'),
            "no raw escape reaches the terminal"
        );
    }
}
