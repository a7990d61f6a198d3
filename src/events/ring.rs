//! One page of a per-CPU ring buffer as `trace_pipe_raw` hands it out
//! (kernel/trace/ring_buffer.c): a page header (absolute timestamp,
//! commit = bytes of data plus the missed-events flags), then entries,
//! each a 32-bit header word (type_len:5, time_delta:27, host byte order)
//! followed by its payload:
//! - type_len 1..=28: data of type_len * 4 bytes;
//! - type_len 0: the next word is the length (+4), data after it;
//! - 29 padding (time_delta 0: the rest of the page is empty);
//! - 30 time extend: time_delta plus the next word << 27;
//! - 31 absolute time stamp (the lower 59 bits).
//!
//! Pure: decodes bytes, bounds-checked; a malformed page is an error,
//! never a panic.

use super::format::PageHeader;

/// One data entry: its absolute timestamp (trace clock ns) and payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    pub ts: u64,
    pub data: &'a [u8],
}

const PADDING: u32 = 29;
const TIME_EXTEND: u32 = 30;
const TIME_STAMP: u32 = 31;
const TS_SHIFT: u32 = 27;
/// `RB_MISSED_EVENTS | RB_MISSED_STORED` in the commit word.
const MISSED_FLAGS: u64 = (1 << 31) | (1 << 30);
const MISSED_EVENTS: u64 = 1 << 31;

/// What one page held.
#[derive(Debug, Default)]
pub struct Page<'a> {
    pub records: Vec<Record<'a>>,
    /// The kernel dropped events before this page (ring overrun).
    pub missed: bool,
}

fn word(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn dword(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Decodes one page.
pub fn parse_page<'a>(page: &'a [u8], hdr: &PageHeader) -> Result<Page<'a>, String> {
    let short = || format!("ring-buffer page of {} bytes is too short", page.len());
    let mut ts = dword(page, hdr.timestamp_offset).ok_or_else(short)?;
    let commit = if hdr.commit_size == 8 {
        dword(page, hdr.commit_offset)
    } else {
        word(page, hdr.commit_offset).map(u64::from)
    }
    .ok_or_else(short)?;
    let missed = commit & MISSED_EVENTS != 0;
    let len = (commit & !MISSED_FLAGS) as usize;
    let end = hdr
        .data_offset
        .checked_add(len)
        .filter(|&e| e <= page.len())
        .ok_or_else(|| {
            format!(
                "ring-buffer page claims {len} bytes of data, holds {}",
                page.len().saturating_sub(hdr.data_offset)
            )
        })?;
    let data = &page[hdr.data_offset..end];
    let mut records = Vec::new();
    let mut at = 0usize;
    let bad = |at: usize| format!("malformed ring-buffer entry at byte {at} of a page");
    while at + 4 <= data.len() {
        let h = word(data, at).ok_or_else(|| bad(at))?;
        let type_len = h & 0x1f;
        let delta = u64::from(h >> 5);
        match type_len {
            PADDING => {
                if delta == 0 {
                    break;
                }
                let n = word(data, at + 4).ok_or_else(|| bad(at))? as usize;
                at = at.checked_add(4 + n).ok_or_else(|| bad(at))?;
            }
            TIME_EXTEND => {
                let hi = u64::from(word(data, at + 4).ok_or_else(|| bad(at))?);
                ts = ts.wrapping_add((hi << TS_SHIFT) + delta);
                at += 8;
            }
            TIME_STAMP => {
                let hi = u64::from(word(data, at + 4).ok_or_else(|| bad(at))?);
                let abs = (hi << TS_SHIFT) | delta;
                // rb_fix_abs_ts: the upper bits come from the current time.
                let msb = ts & !((1u64 << 59) - 1);
                let mut fixed = abs | msb;
                if msb != 0 && fixed < ts {
                    fixed += 1 << 59;
                }
                ts = fixed;
                at += 8;
            }
            0 => {
                let n = word(data, at + 4).ok_or_else(|| bad(at))? as usize;
                let body = n.checked_sub(4).ok_or_else(|| bad(at))?;
                let start = at + 8;
                let payload = data.get(start..start + body).ok_or_else(|| bad(at))?;
                ts = ts.wrapping_add(delta);
                records.push(Record { ts, data: payload });
                at = start + body.next_multiple_of(4);
            }
            n => {
                let body = n as usize * 4;
                let start = at + 4;
                let payload = data.get(start..start + body).ok_or_else(|| bad(at))?;
                ts = ts.wrapping_add(delta);
                records.push(Record { ts, data: payload });
                at = start + body;
            }
        }
    }
    Ok(Page { records, missed })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HDR: PageHeader = PageHeader {
        timestamp_offset: 0,
        commit_offset: 8,
        commit_size: 8,
        data_offset: 16,
    };

    fn page(ts: u64, entries: &[u8], flags: u64) -> Vec<u8> {
        let mut p = Vec::new();
        p.extend_from_slice(&ts.to_ne_bytes());
        p.extend_from_slice(&(entries.len() as u64 | flags).to_ne_bytes());
        p.extend_from_slice(entries);
        p.resize(4096, 0);
        p
    }

    fn head(type_len: u32, delta: u32) -> [u8; 4] {
        (type_len | (delta << 5)).to_ne_bytes()
    }

    #[test]
    fn deltas_extends_padding_and_long_entries() {
        let mut e = Vec::new();
        // A small entry, 8 bytes, 10 ns after the page time.
        e.extend_from_slice(&head(2, 10));
        e.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        // A time extend of (1 << 27) + 5 ns.
        e.extend_from_slice(&head(TIME_EXTEND, 5));
        e.extend_from_slice(&1u32.to_ne_bytes());
        // A discarded entry turned padding: skipped, its delta ignored.
        e.extend_from_slice(&head(PADDING, 1));
        // Its length word counts from after the header: itself and 4 bytes.
        e.extend_from_slice(&8u32.to_ne_bytes());
        e.extend_from_slice(&[0xee; 4]);
        // A long entry: length word (data + 4), then 120 bytes.
        e.extend_from_slice(&head(0, 3));
        e.extend_from_slice(&124u32.to_ne_bytes());
        e.extend_from_slice(&[9u8; 120]);
        // An absolute time stamp, then an entry at +1.
        e.extend_from_slice(&head(TIME_STAMP, 7));
        e.extend_from_slice(&2u32.to_ne_bytes());
        e.extend_from_slice(&head(1, 1));
        e.extend_from_slice(&[4u8; 4]);
        let p = page(1000, &e, 0);
        let got = parse_page(&p, &HDR).unwrap();
        assert!(!got.missed);
        let ts: Vec<u64> = got.records.iter().map(|r| r.ts).collect();
        assert_eq!(ts, vec![1010, 1010 + (1 << 27) + 5 + 3, (2 << 27 | 7) + 1]);
        assert_eq!(got.records[0].data, &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(got.records[1].data.len(), 120);
        assert_eq!(got.records[2].data, &[4u8; 4]);
    }

    #[test]
    fn null_padding_ends_the_page_and_missed_flag_is_read() {
        let mut e = Vec::new();
        e.extend_from_slice(&head(1, 0));
        e.extend_from_slice(&[1u8; 4]);
        e.extend_from_slice(&head(PADDING, 0));
        e.extend_from_slice(&[0xffu8; 12]);
        let p = page(5, &e, 1 << 31);
        let got = parse_page(&p, &HDR).unwrap();
        assert!(got.missed);
        assert_eq!(got.records.len(), 1);
    }

    #[test]
    fn malformed_pages_are_errors_not_panics() {
        // Commit beyond the page.
        let mut p = page(0, &[], 0);
        p[8..16].copy_from_slice(&9000u64.to_ne_bytes());
        assert!(parse_page(&p, &HDR).unwrap_err().contains("claims"));
        // An entry longer than the data.
        let mut e = Vec::new();
        e.extend_from_slice(&head(0, 0));
        e.extend_from_slice(&4000u32.to_ne_bytes());
        assert!(parse_page(&page(0, &e, 0), &HDR).is_err());
        // A length word under 4.
        let mut e = Vec::new();
        e.extend_from_slice(&head(0, 0));
        e.extend_from_slice(&1u32.to_ne_bytes());
        assert!(parse_page(&page(0, &e, 0), &HDR).is_err());
        assert!(parse_page(&[0u8; 10], &HDR).is_err());
    }

    #[test]
    fn a_page_read_from_this_kernel() {
        let raw = std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tracefs/cpu0.page"),
        )
        .unwrap();
        let got = parse_page(&raw, &HDR).unwrap();
        // The fixture: two loopback connections (see fixtures/README.md).
        assert_eq!(got.records.len(), 25);
        let ts: Vec<u64> = got.records.iter().map(|r| r.ts).collect();
        assert!(ts.windows(2).all(|w| w[0] <= w[1]), "{ts:?}");
        // common_type of the first is inet_sock_set_state (ID 2287).
        assert_eq!(
            u16::from_ne_bytes([got.records[0].data[0], got.records[0].data[1]]),
            2287
        );
    }
}
