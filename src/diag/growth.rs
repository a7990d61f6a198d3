//! Growth over samples: a CLOSE_WAIT leak is a slope, not a number. Pure:
//! a series of reports in, per-group series and findings out.

use super::report::{Direction, Report};
use crate::model::TcpState;
use serde::Serialize;
use std::collections::BTreeMap;

/// One group followed across samples: (state, pid, direction, port).
/// Outbound groups are merged across peers, so a pool leaking towards
/// several servers on one port is one series.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Series {
    pub state: TcpState,
    pub pid: Option<u32>,
    pub comm: Option<String>,
    pub direction: Direction,
    pub port: u16,
    /// Count at each sample, oldest first (0 where the group was absent).
    pub counts: Vec<usize>,
    /// Last count minus first.
    pub delta: i64,
    /// delta per minute over the elapsed time.
    pub rate_per_min: f64,
    /// Rose at every sample (strictly), so "rose at every sample" is
    /// exactly what the numbers show.
    pub rising: bool,
    /// Oldest CLOSE_WAIT age in the last sample (ms), when known.
    pub oldest_age_ms: Option<u32>,
}

type Key = (TcpState, Option<u32>, Direction, u16);

/// Counts per sample, comm, and oldest age in the last sample.
type Track = (Vec<usize>, Option<String>, Option<u32>);

/// Builds series for CLOSE_WAIT and TIME_WAIT groups over `samples`
/// (oldest first), biggest growth first.
pub fn series(samples: &[Report]) -> Vec<Series> {
    let n = samples.len();
    let mut map: BTreeMap<Key, Track> = BTreeMap::new();
    for (i, r) in samples.iter().enumerate() {
        for g in r
            .groups
            .iter()
            .filter(|g| matches!(g.state, TcpState::CloseWait | TcpState::TimeWait))
        {
            let e = map
                .entry((g.state, g.pid, g.direction, g.port))
                .or_insert_with(|| (vec![0; n], None, None));
            e.0[i] += g.count;
            if g.comm.is_some() {
                e.1.clone_from(&g.comm);
            }
            if i + 1 == n {
                e.2 = e.2.max(g.oldest_age_ms);
            }
        }
    }
    let elapsed_min = match (samples.first(), samples.last()) {
        (Some(a), Some(b)) if b.taken_at_ms > a.taken_at_ms => {
            (b.taken_at_ms - a.taken_at_ms) as f64 / 60_000.0
        }
        _ => 0.0,
    };
    let mut out: Vec<Series> = map
        .into_iter()
        .map(|((state, pid, direction, port), (counts, comm, oldest))| {
            let first = counts.first().copied().unwrap_or(0) as i64;
            let last = counts.last().copied().unwrap_or(0) as i64;
            let delta = last - first;
            let rising = counts.len() >= 2 && counts.windows(2).all(|w| w[1] > w[0]);
            let rate = if elapsed_min > 0.0 {
                (delta as f64 / elapsed_min * 10.0).round() / 10.0
            } else {
                0.0
            };
            Series {
                state,
                pid,
                comm,
                direction,
                port,
                counts,
                delta,
                rate_per_min: rate,
                rising,
                oldest_age_ms: oldest,
            }
        })
        .collect();
    out.sort_by(|a, b| {
        b.delta
            .cmp(&a.delta)
            .then(b.counts.last().cmp(&a.counts.last()))
    });
    out
}

/// A broken growth limit: which series grew more than allowed.
pub fn over_limit(series: &[Series], state: TcpState, max_growth: usize) -> Vec<&Series> {
    series
        .iter()
        .filter(|s| s.state == state && s.delta > max_growth as i64)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::{Policy, classify};
    use crate::filter::Filter;
    use crate::model::Snapshot;

    fn sample(extra: usize, t: u64) -> Report {
        let mut snap: Snapshot =
            serde_json::from_str(include_str!("../../fixtures/workload.snapshot.json")).unwrap();
        let cw = snap
            .sockets
            .iter()
            .find(|s| s.state == TcpState::CloseWait)
            .unwrap()
            .clone();
        for i in 0..extra {
            let mut s = cw.clone();
            s.cookie = 1_000_000 + i as u64;
            s.peer.set_port(10_000 + i as u16);
            snap.sockets.push(s);
        }
        snap.taken_at_ms = t;
        classify(&snap, &Filter::default(), &Policy::default())
    }

    #[test]
    fn series_follow_groups_and_rising_means_at_every_sample() {
        let rising = series(&[sample(0, 0), sample(2, 1000), sample(5, 2000)]);
        let cw = rising
            .iter()
            .find(|s| s.state == TcpState::CloseWait)
            .unwrap();
        assert_eq!(cw.counts, vec![18, 20, 23]);
        assert_eq!(cw.delta, 5);
        assert!(cw.rising);
        assert_eq!(cw.rate_per_min, 150.0);
        assert_eq!(over_limit(&rising, TcpState::CloseWait, 4).len(), 1);
        assert!(over_limit(&rising, TcpState::CloseWait, 5).is_empty());
        let flat = series(&[sample(3, 0), sample(3, 1000), sample(3, 2000)]);
        assert!(!flat.iter().any(|s| s.rising));
        assert!(over_limit(&flat, TcpState::CloseWait, 0).is_empty());
        let step = series(&[sample(0, 0), sample(2, 1000), sample(2, 2000)]);
        assert!(!step.iter().any(|s| s.rising), "a plateau is not a rise");
    }
}
