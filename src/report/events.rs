//! The exporter's event counters (`serve --events`) as Prometheus text.

use super::prometheus::escape_label_value;
use crate::events::counters::{Counters, Label};
use crate::model::TcpState;
use std::fmt::Write;

fn port(l: &Label<u16>) -> String {
    match l {
        Label::Value(p) => p.to_string(),
        Label::Other => "other".into(),
    }
}

fn dir(inbound: bool) -> &'static str {
    if inbound { "inbound" } else { "outbound" }
}

fn state(n: u8) -> &'static str {
    TcpState::from_number(n).map_or("?", TcpState::name)
}

/// The counters, plus events read and lost, as exposition text.
pub fn render(c: &Counters, lost: u64) -> String {
    let mut out = String::new();
    out += "# HELP cwdiag_tcp_transitions_total TCP state changes seen by the kernel's tracepoints in every network namespace of the host, by direction and service port (the port outside the ephemeral range; inbound when it is the local one) (ESTABLISHED->FIN_WAIT1, ESTABLISHED->CLOSE_WAIT, CLOSE_WAIT->LAST_ACK, CLOSE_WAIT->CLOSE, ESTABLISHED->CLOSE).\n";
    out += "# TYPE cwdiag_tcp_transitions_total counter\n";
    let mut t: Vec<_> = c.transitions.iter().collect();
    t.sort();
    for ((from, to, inbound, p), n) in t {
        let _ = writeln!(
            out,
            "cwdiag_tcp_transitions_total{{from=\"{}\",to=\"{}\",direction=\"{}\",port=\"{}\"}} {n}",
            state(*from),
            state(*to),
            dir(*inbound),
            port(p)
        );
    }
    out += "# HELP cwdiag_tcp_active_closes_total Connections this host closed first (ESTABLISHED->FIN_WAIT1, each later a TIME_WAIT), by the name of the process that closed.\n";
    out += "# TYPE cwdiag_tcp_active_closes_total counter\n";
    let mut a: Vec<_> = c.active_closes.iter().collect();
    a.sort();
    for (comm, n) in a {
        let name = match comm {
            Label::Value(s) => escape_label_value(s),
            Label::Other => "other".into(),
        };
        let _ = writeln!(out, "cwdiag_tcp_active_closes_total{{comm=\"{name}\"}} {n}");
    }
    out += "# HELP cwdiag_tcp_resets_total RSTs received or sent, by direction and service port.\n";
    out += "# TYPE cwdiag_tcp_resets_total counter\n";
    let mut r: Vec<_> = c.resets.iter().collect();
    r.sort();
    for ((received, inbound, p), n) in r {
        let what = if *received { "received" } else { "sent" };
        let _ = writeln!(
            out,
            "cwdiag_tcp_resets_total{{reset=\"{what}\",direction=\"{}\",port=\"{}\"}} {n}",
            dir(*inbound),
            port(p)
        );
    }
    out += "# HELP cwdiag_tcp_events_total TCP tracepoint events read.\n";
    out += "# TYPE cwdiag_tcp_events_total counter\n";
    let _ = writeln!(out, "cwdiag_tcp_events_total {}", c.events);
    out += "# HELP cwdiag_tcp_events_lost_total TCP tracepoint events the kernel could not store (its buffer was full).\n";
    out += "# TYPE cwdiag_tcp_events_lost_total counter\n";
    let _ = writeln!(out, "cwdiag_tcp_events_lost_total {lost}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_counters_still_expose_every_family() {
        let text = render(&Counters::new(5, (32768, 60999)), 3);
        for name in [
            "cwdiag_tcp_transitions_total",
            "cwdiag_tcp_active_closes_total",
            "cwdiag_tcp_resets_total",
            "cwdiag_tcp_events_total",
        ] {
            assert!(text.contains(&format!("# TYPE {name} counter")), "{text}");
        }
        assert!(text.contains("cwdiag_tcp_events_lost_total 3\n"));
    }
}
