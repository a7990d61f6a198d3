//! JSON output: the serde form of the report types, pretty-printed, with a
//! trailing newline.

use anyhow::Result;
use serde::Serialize;

pub fn render<T: Serialize>(value: &T) -> Result<String> {
    let mut s = serde_json::to_string_pretty(value)?;
    s.push('\n');
    Ok(s)
}
