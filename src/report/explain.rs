//! The rules' write-ups as text: `cwdiag explain RULE_ID`, the rule
//! list `cwdiag explain` prints, and the README's rule table. The words
//! are the rules' own ([`Doc`]); only their layout lives here.

use crate::diag::rules::Doc;

/// The write-up `cwdiag explain RULE_ID` prints.
pub fn render(r: &Doc, width: usize) -> String {
    let opts = |indent: &'static str| {
        textwrap::Options::new(width)
            .initial_indent(indent)
            .subsequent_indent(indent)
    };
    let mut out = format!("{}: {}\n", r.id, r.title);
    for (head, body) in [
        ("What it means", r.meaning),
        ("How to confirm", r.confirm),
        ("Fix", r.fix),
        ("What not to do", r.avoid),
    ] {
        out.push_str(&format!("\n{head}\n{}\n", textwrap::fill(body, opts("  "))));
    }
    out
}

/// One line per rule, for `cwdiag explain` without an argument.
pub fn list() -> String {
    let w = crate::diag::RuleId::ALL
        .iter()
        .map(|r| r.as_str().len())
        .max()
        .unwrap_or(0);
    crate::diag::RuleId::ALL
        .iter()
        .map(|r| format!("{:w$}  {}\n", r.as_str(), r.doc().title))
        .collect()
}

/// The README's rule table, generated from the registry.
pub fn markdown_table() -> String {
    let mut out = String::from("| rule | what it means |\n|---|---|\n");
    for r in crate::diag::RuleId::ALL {
        out.push_str(&format!("| `{}` | {} |\n", r.as_str(), r.doc().title));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's rule table is the registry's: a rule cannot be added,
    /// renamed or dropped without the README following.
    #[test]
    fn readme_rule_table_is_the_registry() {
        let readme = include_str!("../../README.md");
        let begin = "<!-- rules:begin -->\n";
        let start = readme.find(begin).expect("rules:begin marker") + begin.len();
        let end = readme.find("<!-- rules:end -->").expect("rules:end marker");
        assert_eq!(
            &readme[start..end],
            markdown_table(),
            "README rule table is out of date; it should read:\n{}",
            markdown_table()
        );
    }
}
