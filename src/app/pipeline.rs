//! What every command builds once from its flags: which sockets
//! (`filter`), what to collect (`plan`) and how to judge (`policy`). A
//! command reads: flags -> pipeline -> reports -> render -> emit.

use super::{Collected, collect_selected, filter_of, policy_of};
use crate::cli::{PolicyArgs, SampleArgs, SelectArgs, SourceArgs};
use crate::collect::Plan;
use crate::diag::closes::SampledCloses;
use crate::diag::{self, Policy, Report};
use crate::filter::Filter;
use crate::model::Snapshot;
use anyhow::Result;
use std::path::Path;

pub(super) struct Pipeline {
    pub filter: Filter,
    pub plan: Plan,
    pub policy: Policy,
}

impl Pipeline {
    /// The pipeline of the selection and policy flags: the filter's states
    /// and ports go into the kernel request.
    pub fn of(select: &SelectArgs, policy: &PolicyArgs) -> Pipeline {
        let filter = filter_of(select);
        Pipeline {
            plan: Plan::for_filter(&filter),
            policy: policy_of(policy),
            filter,
        }
    }

    /// One report per snapshot.
    pub fn classify(&self, snapshots: &[Snapshot]) -> Vec<Report> {
        snapshots
            .iter()
            .map(|s| diag::classify(s, &self.filter, &self.policy))
            .collect()
    }

    /// Collects what the flags name (live or `--from`), with the selector
    /// warnings.
    pub fn collect(&self, src: &SourceArgs, record: Option<&Path>) -> Result<Collected> {
        collect_selected(src, &self.plan, record, &self.filter)
    }

    /// The report of one of a series of samples: `closes` counts the
    /// closes seen since the previous one.
    pub fn classify_sampled(&self, snap: &Snapshot, closes: &mut SampledCloses) -> Report {
        let listen = diag::group::listen_ports(snap);
        closes.observe(
            snap,
            |s| {
                self.filter
                    .matches(s, s.pid.and_then(|p| snap.processes.get(&p)))
            },
            |s| diag::group::direction(s, &listen),
        );
        diag::classify_sampled(snap, &self.filter, &self.policy, Some(closes))
    }

    /// [`Pipeline::collect`], then [`Pipeline::classify`].
    pub fn reports(
        &self,
        src: &SourceArgs,
        record: Option<&Path>,
    ) -> Result<(Vec<Report>, Collected)> {
        let c = self.collect(src, record)?;
        let t = std::time::Instant::now();
        let reports = self.classify(&c.snapshots);
        crate::collect::timing("classify", t);
        Ok((reports, c))
    }

    /// Takes `n` samples `interval` apart in one namespace (live only) and
    /// classifies each.
    pub fn sample(&self, src: &SourceArgs, s: &SampleArgs) -> Result<(Vec<Report>, Collected)> {
        if src.from.is_some() || src.all_netns {
            anyhow::bail!(
                "--samples needs one live namespace: it cannot be used with --from or --all-netns"
            );
        }
        let mut reports = Vec::new();
        let mut warnings = Vec::new();
        let mut selection = Vec::new();
        let mut closes = SampledCloses::default();
        for i in 0..s.samples {
            if i > 0 {
                std::thread::sleep(s.interval);
            }
            let c = self.collect(src, None)?;
            warnings.extend(c.warnings);
            selection = c.selection;
            for snap in &c.snapshots {
                reports.push(self.classify_sampled(snap, &mut closes));
            }
        }
        warnings.dedup();
        Ok((
            reports,
            Collected {
                snapshots: Vec::new(),
                warnings,
                multi: false,
                selection,
            },
        ))
    }
}
