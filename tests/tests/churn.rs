//! Cardinality under churn (issue 14): Gunicorn with --max-requests replaces
//! its workers every few requests. A dead worker's request series fold into
//! its master's `worker_id="exited"` series once its grace ends or more than
//! --max-dead-workers died since, so the exposition stays bounded while every
//! total stays exact against the access log and never goes backwards.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use integration_tests::{
    Exporter, Gunicorn, Version,
    check::{self, REQUESTS, story},
    http::{self, Request},
    load::{LoadConfig, LoadGen},
    prom::Metrics,
};

const REQUESTS_SENT: u64 = 400;
const MAX_REQUESTS: &str = "10";
const MAX_DEAD: usize = 2;
const WORKERS: usize = 2;

/// Runs the churn with `--worker-series mode`; returns the last scrape.
fn churn(mode: &str) -> (Gunicorn, Exporter, Metrics) {
    let g = Gunicorn::builder(Version::V27, "sync")
        .workers(WORKERS)
        .arg("--max-requests")
        .arg(MAX_REQUESTS)
        .start();
    let e = Exporter::builder()
        .pid(g.master_pid())
        .arg("--max-dead-workers")
        .arg(MAX_DEAD.to_string())
        .arg("--worker-series")
        .arg(mode)
        .start();
    let load = LoadGen::start(
        LoadConfig::new(g.addr(), 2, false, Arc::new(|_, _| Request::get("/ok")))
            .limit(REQUESTS_SENT),
    );
    // Scrape all along: totals never go backwards, series stay bounded.
    let (mut last_total, mut biggest, mut scrapes) = (0.0, 0, 0);
    while load.completed(0) < REQUESTS_SENT {
        let (_, body) = http::get(e.addr(), "/metrics", Duration::from_secs(10))
            .unwrap_or_else(|err| panic!("scrape: {err}\n{}", story(&g, &e, None)));
        let m = Metrics::parse(&body).expect("exposition parses");
        let total = m.sum_all(REQUESTS);
        assert!(
            total >= last_total,
            "{REQUESTS} went back from {last_total} to {total}\n{}",
            story(&g, &e, Some(&m))
        );
        let owners: BTreeSet<&str> = m
            .get(REQUESTS)
            .filter_map(|s| s.labels.get("worker_id").map(String::as_str))
            .collect();
        // Live workers (one more while a replacement starts), the capped dead
        // ones, and the folded series.
        assert!(
            owners.len() <= WORKERS + 1 + MAX_DEAD + 1,
            "{} owners of request series: {owners:?}\n{}",
            owners.len(),
            story(&g, &e, Some(&m))
        );
        (last_total, biggest, scrapes) = (total, biggest.max(body.len()), scrapes + 1);
    }
    let traffic = load.stop().expect("load").traffic;
    let (m, records) = check::wait_counted(&g, &e, traffic.total_responses());
    assert_eq!(
        m.sum_all(REQUESTS),
        records.len() as f64,
        "{REQUESTS} total vs the access log\n{}",
        story(&g, &e, Some(&m))
    );
    let generations = g
        .markers()
        .iter()
        .filter(|marker| marker.hook == "post_fork")
        .count();
    assert!(
        generations >= 5 * (WORKERS + MAX_DEAD),
        "harness: only {generations} workers forked: no churn"
    );
    eprintln!(
        "{mode}: {generations} workers, {scrapes} scrapes during the load, the largest {biggest} bytes"
    );
    (g, e, m)
}

#[test]
fn dead_workers_fold_into_exited_and_totals_stay_exact() {
    let (g, e, m) = churn("all");
    let exited: f64 = m.sum(REQUESTS, |l| {
        l.get("worker_id").map(String::as_str) == Some("exited")
    });
    assert!(
        exited > 0.0,
        "no request folded into worker_id=\"exited\"\n{}",
        story(&g, &e, Some(&m))
    );
    let master = g.master_pid().to_string();
    for s in m.get(REQUESTS) {
        if s.labels.get("worker_id").map(String::as_str) == Some("exited") {
            assert_eq!(
                s.labels.get("pid"),
                Some(&master),
                "the exited series carries the master's pid"
            );
        }
    }
}

#[test]
fn worker_series_none_keeps_one_series_per_master() {
    let (g, e, m) = churn("none");
    let master = g.master_pid().to_string();
    for s in m.get(REQUESTS) {
        assert_eq!(
            (
                s.labels.get("worker_id").map(String::as_str),
                s.labels.get("pid")
            ),
            (Some("all"), Some(&master)),
            "a per-worker request series with --worker-series none\n{}",
            story(&g, &e, Some(&m))
        );
    }
}
