//! Text from outside (process names, command lines, cgroup and container
//! names, paths, file contents quoted in warnings) shown on a terminal
//! without letting it drive the terminal: every control character (C0,
//! DEL, C1) and every Unicode format character that reorders or hides text
//! (bidirectional overrides and isolates, zero-width characters) is shown
//! as an escape, the way `ps` replaces them, except that the escape says
//! which character it was: `\x1b` for ESC, `\n` for a newline, `\t` for a
//! tab, `\u{202e}` above U+007F, and `\\` for a backslash itself (so an
//! escape in the output always means an escaped character). Printable
//! text, non-ASCII letters included, is unchanged.
//!
//! Used once per text renderer, at the point where data becomes text;
//! JSON and Prometheus output keep their own escaping.

use std::fmt;

/// Displays the wrapped text with control characters escaped.
#[derive(Debug, Clone, Copy)]
pub struct Escaped<'a>(pub &'a str);

/// Characters that would change how the terminal shows the rest.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || c == '\\'
        || matches!(c,
            '\u{061c}'                      // Arabic letter mark
            | '\u{200b}'..='\u{200f}'       // zero-width space/joiners, LRM, RLM
            | '\u{2028}'..='\u{202e}'       // line/paragraph separators, bidi embeddings and overrides
            | '\u{2060}'..='\u{2069}'       // word joiner, invisible operators, bidi isolates
            | '\u{feff}'                    // zero-width no-break space
        )
}

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(i) = rest.find(needs_escape) {
            f.write_str(&rest[..i])?;
            let Some(c) = rest[i..].chars().next() else {
                break;
            };
            match c {
                '\\' => f.write_str("\\\\")?,
                '\n' => f.write_str("\\n")?,
                '\t' => f.write_str("\\t")?,
                '\r' => f.write_str("\\r")?,
                c if (c as u32) < 0x80 => write!(f, "\\x{:02x}", c as u32)?,
                c => write!(f, "\\u{{{:04x}}}", c as u32)?,
            }
            rest = &rest[i + c.len_utf8()..];
        }
        f.write_str(rest)
    }
}

/// The escaped text as a `String`.
pub fn escaped(s: &str) -> String {
    Escaped(s).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_drives_a_terminal_and_keeps_the_rest() {
        assert_eq!(escaped("nginx: worker"), "nginx: worker");
        assert_eq!(escaped("café-Ünïcode 名前"), "café-Ünïcode 名前");
        assert_eq!(escaped("\x1b[31mred\n"), "\\x1b[31mred\\n");
        assert_eq!(escaped("a\tb\rc\x00d\x7f"), "a\\tb\\rc\\x00d\\x7f");
        assert_eq!(escaped("\u{9b}31m"), "\\u{009b}31m");
        assert_eq!(escaped("abc\u{202e}fed"), "abc\\u{202e}fed");
        assert_eq!(
            escaped("x\u{200b}y\u{2066}z\u{feff}"),
            "x\\u{200b}y\\u{2066}z\\u{feff}"
        );
        assert_eq!(escaped(r"C:\x1b"), r"C:\\x1b");
        assert_eq!(escaped(""), "");
    }
}
