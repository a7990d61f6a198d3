//! Rendering: pure functions from a report to text.

/// Text escaping is a leaf module of its own; renderers reach it here too.
pub use crate::escape;
pub mod events;
pub mod explain;
#[cfg(test)]
mod fuzz_regressions;
pub mod json;
pub mod kill;
pub mod limits;
pub mod prometheus;
#[cfg(test)]
mod snapshot_tests;
pub mod table;
pub mod watch;

/// Presentation choices that do not change the numbers.
#[derive(Debug, Clone)]
pub struct Style {
    pub color: bool,
    /// Table width in columns.
    pub width: u16,
    /// Groups per table, 0 = all.
    pub top: usize,
    pub header: bool,
}

impl Default for Style {
    fn default() -> Self {
        Style {
            color: false,
            width: 80,
            top: 20,
            header: true,
        }
    }
}

/// `text` as lines no wider than `width`, continuation lines indented by
/// `indent`: every line of text output fits the terminal.
pub fn wrap(text: &str, width: u16, indent: &str) -> String {
    let opts = textwrap::Options::new(usize::from(width).max(20)).subsequent_indent(indent);
    textwrap::fill(text, opts)
}

/// The last `n` counts as a sparkline (`▁▃▅█`), scaled from their
/// minimum to their maximum: a bounded picture of a long series.
pub fn sparkline(counts: &[usize], n: usize) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let recent = &counts[counts.len().saturating_sub(n)..];
    let (Some(lo), Some(hi)) = (recent.iter().min(), recent.iter().max()) else {
        return String::new();
    };
    recent
        .iter()
        .map(|&c| {
            if hi == lo {
                BARS[0]
            } else {
                BARS[(c - lo) * (BARS.len() - 1) / (hi - lo)]
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn long_lines_wrap_and_series_stay_bounded() {
        let w = super::wrap(&"word ".repeat(60), 80, "  ");
        assert!(w.lines().all(|l| l.chars().count() <= 80), "{w}");
        assert_eq!(super::sparkline(&[1, 2, 3, 4, 5, 6, 7, 8], 8), "▁▂▃▄▅▆▇█");
        assert_eq!(
            super::sparkline(&(0..1000).collect::<Vec<_>>(), 10)
                .chars()
                .count(),
            10
        );
        assert_eq!(super::sparkline(&[160, 162, 162], 10), "▁██");
    }
}
