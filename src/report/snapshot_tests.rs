//! Snapshot tests of what people read: the scan tables and findings, and
//! a watch frame, rendered at 80 columns without colour. A change in
//! wording or layout shows up as a reviewed diff of the `.snap` files.

use super::Style;
use crate::diag::testkit::SnapBuilder;
use crate::diag::{Policy, classify};
use crate::filter::Filter;
use crate::model::Snapshot;

fn style() -> Style {
    Style {
        color: false,
        width: 80,
        top: 20,
        header: true,
    }
}

fn workload() -> Snapshot {
    serde_json::from_str(include_str!("../../fixtures/workload.snapshot.json")).unwrap()
}

#[test]
fn scan_table_of_the_captured_workload() {
    let r = classify(&workload(), &Filter::default(), &Policy::default());
    insta::assert_snapshot!(super::table::render(&r, &style()));
}

/// An idle PostgreSQL pool closed by idle_session_timeout, a redis-py
/// pool timed out by Redis, and a client churning TIME_WAIT.
fn pools() -> Snapshot {
    let mut b = SnapBuilder::new()
        .process(21, "java", Some(200), Some(20_000))
        .process(20, "python3", Some(80), Some(1024))
        .sysctl("net.ipv4.tcp_tw_reuse", "2");
    for i in 0..8 {
        let local = format!("10.0.0.1:{}", 42_000 + i);
        b = b.close_wait(
            &local,
            "10.0.0.8:5432",
            118,
            Some(21),
            Some((15_000, 3_000, 3_000)),
        );
    }
    for i in 0..12 {
        let local = format!("10.0.0.1:{}", 41_000 + i);
        b = b.close_wait(
            &local,
            "10.0.0.9:6379",
            1,
            Some(20),
            Some((310_000, 310_000, 10_000)),
        );
    }
    b.time_waits("10.0.0.1", "10.0.0.7:443", 3000, 9_000)
        .build()
}

#[test]
fn findings_of_idle_pools_and_churn() {
    let r = classify(&pools(), &Filter::default(), &Policy::default());
    insta::assert_snapshot!(super::table::render(&r, &style()));
}

#[test]
fn watch_frame_with_a_growing_group() {
    let sample = |n: usize, t: u64| {
        let s = crate::diag::testkit::leaky_sample(n, t);
        classify(&s, &Filter::default(), &Policy::default())
    };
    let reports: Vec<_> = (0..30)
        .map(|i| sample(10 + i * 2, i as u64 * 2000))
        .collect();
    let series = crate::diag::growth::series(&reports);
    let growth = crate::diag::growth::findings(&series, &reports);
    let frame = super::watch::render(
        30,
        std::time::Duration::from_secs(2),
        reports.last().unwrap(),
        &series,
        &growth,
        &style(),
    );
    assert!(frame.lines().all(|l| l.chars().count() <= 80), "{frame}");
    insta::assert_snapshot!(frame);
}
