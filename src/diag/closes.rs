//! What cwdiag can know about connection closes, and how it says it.
//!
//! One snapshot: a TIME_WAIT socket reports the time left on its timer
//! (`inet_diag.c:inet_twsk_diag_fill`, `idiag_expires` from
//! `tw_timer.expires - jiffies`), set to `TCP_TIMEWAIT_LEN` (60 s) when
//! the connection entered TIME_WAIT (`inet_timewait_sock.c:
//! __inet_twsk_schedule`). So a socket with `t` ms left closed `60 000 - t`
//! ms ago, to the resolution of one jiffy (1-10 ms; 4 ms at HZ=250: 400
//! sockets closed at one instant read within 8 ms of each other). The
//! timer wheel may fire late (`kernel/time/timer.c`: a 60 s timeout sits
//! on a level whose granularity is seconds), so a socket can outlive its
//! 60 s and read 0 ms left. What a snapshot gives is therefore *counts of
//! closes within windows* ("401 closes within the last ~2 s"), never a
//! rate that holds: 400 closes in 1.3 s may be a burst that is over or
//! the first second of a steady churn, and one snapshot cannot tell.
//!
//! A sustained rate needs a measurement over time: with `scan --samples`
//! or `watch`, every interval between two samples counts the TIME_WAIT
//! sockets of the later sample that closed after the earlier one. The
//! rate is sustained when every interval saw closes; it is then the
//! total over the whole window.

pub use super::types::{CloseSource, Closes};
use super::types::{Direction, TIME_WAIT_LEN_S};
use crate::model::{Endpoint, Snapshot, Socket, TcpState};
use std::collections::BTreeMap;

impl Closes {
    /// What the remaining times of `socks` (TIME_WAIT) say.
    pub fn from_timers<'a>(socks: impl IntoIterator<Item = &'a Socket>) -> Closes {
        let full = TIME_WAIT_LEN_S * 1000;
        let (mut count, mut oldest) = (0usize, 0u32);
        for s in socks {
            count += 1;
            oldest = oldest.max(full.saturating_sub(s.expires_ms.min(full)));
        }
        Closes {
            count,
            window_s: f64::from(oldest.div_ceil(1000).clamp(1, TIME_WAIT_LEN_S)),
            measured_by: CloseSource::TimeWaitTimers,
            samples: 1,
            sustained_per_s: None,
        }
    }

    /// "401 closes within the last ~2 s" / "~150 closes/s sustained over
    /// 5 samples in 8.0 s" / "400 closes over 5 samples in 8.0 s, not in
    /// every interval".
    pub fn words(&self) -> String {
        let n = self.count;
        let plural = if n == 1 { "" } else { "s" };
        match (self.measured_by, self.sustained_per_s) {
            (CloseSource::TimeWaitTimers, _) => {
                format!("{n} close{plural} within the last ~{:.0} s", self.window_s)
            }
            (CloseSource::Samples, Some(r)) => format!(
                "~{r:.0} closes/s sustained ({n} over {} samples in {:.1} s)",
                self.samples, self.window_s
            ),
            (CloseSource::Samples, None) => format!(
                "{n} close{plural} over {} samples in {:.1} s, not in every interval: no sustained rate",
                self.samples, self.window_s
            ),
        }
    }
}

/// Where a close happened: direction, local IP, the port (local for
/// inbound, the peer's for outbound) and the peer (outbound only).
pub type CloseKey = (Direction, std::net::IpAddr, u16, Option<Endpoint>);

/// The closes seen between two consecutive samples.
#[derive(Debug, Clone)]
struct Interval {
    start_ms: u64,
    end_ms: u64,
    per: BTreeMap<CloseKey, u32>,
}

/// Closes counted across samples, per [`CloseKey`] and interval; at most
/// `limit` intervals are kept (the latest), 0 for all of them.
#[derive(Debug, Clone, Default)]
pub struct SampledCloses {
    limit: usize,
    last_ms: Option<u64>,
    intervals: std::collections::VecDeque<Interval>,
}

impl SampledCloses {
    /// Keeps the latest `limit` intervals (`watch` runs for ever).
    pub fn keeping(limit: usize) -> SampledCloses {
        SampledCloses {
            limit,
            ..Default::default()
        }
    }

    /// Takes the next sample (oldest first). `selected` says which
    /// sockets the filters take; `direction` which side a socket is on
    /// (`group::direction` over the sample's listening ports).
    pub fn observe(
        &mut self,
        snap: &Snapshot,
        selected: impl Fn(&Socket) -> bool,
        direction: impl Fn(&Socket) -> Direction,
    ) {
        let now = snap.taken_at_ms;
        let Some(prev) = self.last_ms.replace(now) else {
            return;
        };
        let dt = now.saturating_sub(prev);
        let full = u64::from(TIME_WAIT_LEN_S) * 1000;
        let mut per: BTreeMap<CloseKey, u32> = BTreeMap::new();
        for s in snap
            .sockets
            .iter()
            .filter(|s| s.state == TcpState::TimeWait && selected(s))
        {
            let ago = full.saturating_sub(u64::from(s.expires_ms).min(full));
            if ago >= dt {
                continue;
            }
            let d = direction(s);
            let key = match d {
                Direction::Inbound => (d, s.local.ip(), s.local.port(), None),
                Direction::Outbound => (d, s.local.ip(), s.peer.port(), Some(s.peer)),
            };
            *per.entry(key).or_default() += 1;
        }
        self.intervals.push_back(Interval {
            start_ms: prev,
            end_ms: now,
            per,
        });
        if self.limit > 0 && self.intervals.len() > self.limit {
            self.intervals.pop_front();
        }
    }

    /// The closes of the keys `take` selects; None before two samples.
    pub fn closes(&self, take: impl Fn(&CloseKey) -> bool) -> Option<Closes> {
        let (first, last) = (self.intervals.front()?, self.intervals.back()?);
        let full = u64::from(TIME_WAIT_LEN_S) * 1000;
        let per_interval: Vec<u64> = self
            .intervals
            .iter()
            .map(|i| {
                i.per
                    .iter()
                    .filter(|(k, _)| take(k))
                    .map(|(_, n)| u64::from(*n))
                    .sum()
            })
            .collect();
        let count: u64 = per_interval.iter().sum();
        let window_s = last.end_ms.saturating_sub(first.start_ms) as f64 / 1000.0;
        // An interval as long as TIME_WAIT, or a clock that went back,
        // may hide closes: nothing is sustained then.
        let whole = self
            .intervals
            .iter()
            .all(|i| i.end_ms > i.start_ms && i.end_ms - i.start_ms < full);
        let sustained = whole && window_s > 0.0 && per_interval.iter().all(|&n| n > 0);
        Some(Closes {
            count: count as usize,
            window_s: (window_s * 10.0).round() / 10.0,
            measured_by: CloseSource::Samples,
            samples: self.intervals.len() + 1,
            sustained_per_s: sustained.then(|| (count as f64 / window_s * 10.0).round() / 10.0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::testkit::SnapBuilder;

    #[test]
    fn one_snapshot_counts_closes_within_the_window_the_timers_cover() {
        // 400 closes within 1.3 s: a count within ~2 s, no rate.
        let s = SnapBuilder::new()
            .time_waits("10.0.0.1", "10.0.0.9:5432", 400, 1_300)
            .build();
        let c = Closes::from_timers(&s.sockets);
        assert_eq!((c.count, c.window_s, c.sustained_per_s), (400, 2.0, None));
        assert_eq!(c.words(), "400 closes within the last ~2 s");
        // Past 60 s (a late timer reads 0 ms left): the whole TIME_WAIT.
        let s = SnapBuilder::new()
            .time_wait("10.0.0.1:40000", "10.0.0.9:80", 0)
            .build();
        let c = Closes::from_timers(&s.sockets);
        assert_eq!(c.words(), "1 close within the last ~60 s");
    }

    /// A sample at `t_ms` holding `n_new` TIME_WAIT closed `ago_ms` ago
    /// (after the previous sample) and `n_old` closed long before.
    fn sample(t_ms: u64, n_new: u32, ago_ms: u32, n_old: u32) -> Snapshot {
        let mut b = SnapBuilder::new();
        for i in 0..n_new {
            b = b.time_wait(
                &format!("10.0.0.1:{}", 20_000 + i),
                "10.0.0.9:5432",
                60_000 - ago_ms,
            );
        }
        for i in 0..n_old {
            b = b.time_wait(&format!("10.0.0.1:{}", 40_000 + i), "10.0.0.9:5432", 1_000);
        }
        let mut s = b.build();
        s.taken_at_ms = t_ms;
        s
    }

    fn measure(samples: &[Snapshot]) -> Closes {
        let mut m = SampledCloses::default();
        for s in samples {
            m.observe(s, |_| true, |_| Direction::Outbound);
        }
        m.closes(|k| k.2 == 5432).unwrap()
    }

    #[test]
    fn samples_measure_a_sustained_rate_only_when_every_interval_closes() {
        // 100 closes in each of four 2 s intervals: 50/s sustained.
        let steady: Vec<_> = (0..5).map(|i| sample(i * 2000, 100, 500, 300)).collect();
        let c = measure(&steady);
        assert_eq!((c.count, c.window_s), (400, 8.0));
        assert_eq!(c.sustained_per_s, Some(50.0));
        assert!(
            c.words().starts_with("~50 closes/s sustained"),
            "{}",
            c.words()
        );
        // The same 400 closes in the first interval alone: a burst.
        let mut burst = vec![sample(0, 0, 0, 0), sample(2000, 400, 500, 0)];
        burst.extend((2..5).map(|i| sample(i * 2000, 0, 0, 400)));
        let c = measure(&burst);
        assert_eq!((c.count, c.sustained_per_s), (400, None));
        assert!(c.words().contains("no sustained rate"), "{}", c.words());
        // Samples further apart than TIME_WAIT may miss closes.
        let far = vec![sample(0, 0, 0, 0), sample(61_000, 10, 500, 0)];
        assert_eq!(measure(&far).sustained_per_s, None);
        // One sample measures nothing over time.
        let mut one = SampledCloses::default();
        one.observe(&steady[0], |_| true, |_| Direction::Outbound);
        assert!(one.closes(|_| true).is_none());
        // `watch` keeps the latest intervals: the burst ages out.
        let mut m = SampledCloses::keeping(2);
        let later: Vec<_> = (1..3)
            .map(|i| sample(8000 + i * 2000, 100, 500, 0))
            .collect();
        for s in burst.iter().chain(&later) {
            m.observe(s, |_| true, |_| Direction::Outbound);
        }
        let c = m.closes(|_| true).unwrap();
        assert_eq!(
            (c.count, c.samples, c.sustained_per_s),
            (200, 3, Some(50.0))
        );
    }
}
