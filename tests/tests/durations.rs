//! Request durations: 20 requests that sleep 50 ms land, every one of them, in
//! the (0.05, 0.1] bucket of `gunicorn_worker_request_duration_seconds`, and the
//! histogram's mean is within 5% of the mean Gunicorn logs for them (`%(D)s`).
//! Checked on the difference between two scrapes, so earlier traffic in the same
//! series does not hide anything.

use std::collections::BTreeMap;

use integration_tests::{
    Exporter, Gunicorn, Version, access_log,
    check::{self, DURATION, story},
    http::{self, Request, Traffic},
    prom::{self, Histogram},
};

const SLEEPS: usize = 20;
const WARMUP: usize = 5;

fn describe(hs: &[Histogram]) -> String {
    hs.iter()
        .map(|h| {
            format!(
                "{{{}}} buckets {:?} sum {} count {}\n",
                h.describe(),
                h.buckets,
                h.sum,
                h.count
            )
        })
        .collect()
}

fn sleeps_land_in_their_bucket(g: Gunicorn) {
    let e = Exporter::attach(&g);
    let addr = g.addr();
    let mut t = Traffic::default();

    // Earlier traffic in the same series (GET, 2xx), so the check is on a difference.
    http::sequence(addr, &vec![Request::get("/ok"); WARMUP], &mut t)
        .unwrap_or_else(|err| panic!("warm-up: {err}\n{}", g.story()));
    let (before, _) = check::wait_counted(&g, &e, WARMUP as u64);

    http::sequence(addr, &vec![Request::get("/sleep?ms=50"); SLEEPS], &mut t)
        .unwrap_or_else(|err| panic!("sleep requests: {err}\n{}", g.story()));
    let (after, records) = check::wait_counted(&g, &e, (WARMUP + SLEEPS) as u64);
    check::assert_requests_match(&g, &e, &after, &records);

    let sleeps: Vec<_> = records.iter().filter(|r| r.path == "/sleep").collect();
    assert_eq!(
        sleeps.len(),
        SLEEPS,
        "harness: sleep lines in the access log\n{}",
        g.story()
    );
    let logged_mean = sleeps.iter().map(|r| r.micros as f64).sum::<f64>() / SLEEPS as f64 / 1e6;

    let earlier: BTreeMap<_, _> = before
        .histograms(DURATION)
        .into_iter()
        .map(|h| (h.labels.clone(), h))
        .collect();
    let diffs: Vec<Histogram> = after
        .histograms(DURATION)
        .iter()
        .map(|h| h.minus(earlier.get(&h.labels)))
        .collect();
    let diff = prom::total(&diffs).unwrap_or_else(|| {
        panic!(
            "no {DURATION} series after the requests\n{}",
            story(&g, &e, Some(&after))
        )
    });
    let context = || {
        format!(
            "difference of the two scrapes, per series:\n{}total: buckets {:?} sum {} count {}\n\
             access log lines of the sleeps:\n{}\n{}",
            describe(&diffs),
            diff.buckets,
            diff.sum,
            diff.count,
            access_log::describe(
                &sleeps.iter().map(|r| (*r).clone()).collect::<Vec<_>>(),
                SLEEPS
            ),
            story(&g, &e, Some(&after))
        )
    };
    assert_eq!(
        diff.count,
        SLEEPS as f64,
        "{DURATION}_count grew by {} instead of {SLEEPS}\n{}",
        diff.count,
        context()
    );
    let in_bucket = diff.between(0.05, 0.1);
    assert_eq!(
        in_bucket,
        Some(SLEEPS as f64),
        "not every 50 ms request is in the (0.05, 0.1] bucket\n{}",
        context()
    );
    let mean = diff.sum / diff.count;
    assert!(
        (mean - logged_mean).abs() <= 0.05 * logged_mean,
        "mean duration {mean:.6} s is not within 5% of the access log's mean {logged_mean:.6} s\n{}",
        context()
    );
    check::assert_histograms_sane(&g, &e, &after, DURATION);
    check::assert_no_kernel_errors(&g, &e, &after);
}

/// gunicorn 27 sync: 50 ms requests in (0.05, 0.1], mean within 5% of `%(D)s`.
#[test]
fn sync_27_durations() {
    sleeps_land_in_their_bucket(Gunicorn::builder(Version::V27, "sync").workers(2).start());
}

/// gunicorn 27 gthread (read and answered on pool threads): 50 ms requests in
/// (0.05, 0.1], mean within 5% of `%(D)s`.
#[test]
fn gthread_27_durations() {
    sleeps_land_in_their_bucket(
        Gunicorn::builder(Version::V27, "gthread")
            .workers(2)
            .threads(4)
            .start(),
    );
}

/// gunicorn 27 gevent: 50 ms requests in (0.05, 0.1], mean within 5% of `%(D)s`.
#[test]
fn gevent_27_durations() {
    sleeps_land_in_their_bucket(Gunicorn::builder(Version::V27, "gevent").workers(2).start());
}

/// gunicorn 23 eventlet: 50 ms requests in (0.05, 0.1], mean within 5% of `%(D)s`.
#[test]
fn eventlet_23_durations() {
    sleeps_land_in_their_bucket(
        Gunicorn::builder(Version::V23, "eventlet")
            .workers(2)
            .start(),
    );
}

/// gunicorn 23 sync: 50 ms requests in (0.05, 0.1], mean within 5% of `%(D)s`.
#[test]
fn sync_23_durations() {
    sleeps_land_in_their_bucket(Gunicorn::builder(Version::V23, "sync").workers(2).start());
}
