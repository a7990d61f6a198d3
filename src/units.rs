//! Human units for ages and durations: `59s`, `12m`, `3h`, `2d`.

/// Formats milliseconds the way `ss -o` users read them.
pub fn age(ms: u32) -> String {
    duration(u64::from(ms))
}

pub fn duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0 => format!("{ms}ms"),
        1..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_units() {
        for (ms, want) in [
            (0, "0ms"),
            (999, "999ms"),
            (59_000, "59s"),
            (119_999, "119s"),
            (720_000, "12m"),
            (3 * 3_600_000, "3h"),
            (3 * 86_400_000, "3d"),
        ] {
            assert_eq!(duration(ms), want, "{ms} ms");
        }
    }
}
