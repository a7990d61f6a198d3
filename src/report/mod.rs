//! Rendering: pure functions from a report to text.

pub mod escape;
pub mod json;
pub mod kill;
pub mod prometheus;
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
