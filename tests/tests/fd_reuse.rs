//! File-descriptor reuse: thousands of short connections make every worker reuse
//! the same socket fd numbers over and over. Per-connection state kept by fd
//! must never leak from one connection into the next: counts and bytes stay
//! exact, and no request is timed longer than the slowest exchange a client saw
//! (a stale timestamp inherited from an earlier connection would be).

use std::sync::Arc;

use integration_tests::{
    Exporter, Gunicorn, Version, access_log,
    check::{self, DURATION, story},
    http::Request,
    load::{LoadConfig, LoadGen, Script},
};

const CONNECTIONS: u64 = 3000;
const CLIENT_THREADS: usize = 6;

fn short_connections_are_exact(g: Gunicorn) {
    let e = Exporter::attach(&g);
    let script: Script = Arc::new(|_, _| Request::get("/ok"));
    let load =
        LoadGen::run(LoadConfig::new(g.addr(), CLIENT_THREADS, false, script).limit(CONNECTIONS))
            .unwrap_or_else(|err| panic!("{err}\n{}", story(&g, &e, None)));
    let traffic = load.traffic;
    assert_eq!(
        (traffic.total_responses(), traffic.connections),
        (CONNECTIONS, CONNECTIONS),
        "harness: responses and connections of the load"
    );
    let (m, records) = check::wait_counted(&g, &e, CONNECTIONS);
    check::assert_requests_match(&g, &e, &m, &records);
    check::assert_bytes_match(&g, &e, &m, &traffic);
    check::assert_histogram_counts_match(&g, &e, &m, &records);
    for base in [check::DURATION, check::REQUEST_SIZE, check::RESPONSE_SIZE] {
        check::assert_histograms_sane(&g, &e, &m, base);
    }
    check::assert_no_kernel_errors(&g, &e, &m);

    // No observation in a bucket above the one holding the slowest exchange a
    // client saw: a request's time in a worker (first read to last write) lies
    // within its client's wait. Gunicorn's %(D)s is not a bound: it starts
    // after the headers are parsed, so a worker preempted between the read
    // and the parse is rightly timed a little longer than it logs.
    let logged = records.iter().map(|r| r.micros).max().unwrap_or(0) as f64 / 1e6;
    let slowest = traffic.slowest.as_secs_f64().max(logged);
    for h in m.histograms(DURATION) {
        let bound = h
            .buckets
            .iter()
            .map(|(le, _)| *le)
            .find(|le| *le >= slowest)
            .unwrap_or(f64::INFINITY);
        let above = h.count - h.bucket(bound).unwrap_or(0.0);
        let mut slow = records.clone();
        slow.sort_by_key(|r| std::cmp::Reverse(r.micros));
        slow.truncate(10);
        assert!(
            above == 0.0,
            "{DURATION}{{{}}} has {above} observations above le={bound}, the bucket of the \
             slowest exchange a client saw ({slowest} s): buckets {:?}\n\
             (client's slowest {:?})\nslowest access log lines:\n{}\n{}",
            h.describe(),
            h.buckets,
            traffic.slowest,
            access_log::describe(&slow, 10),
            story(&g, &e, Some(&m))
        );
    }
}

/// gunicorn 27 sync, 2 workers: 3000 one-request connections from 6 client
/// threads; exact counts and bytes, no duration beyond the slowest exchange.
#[test]
fn sync_27_short_connections() {
    short_connections_are_exact(Gunicorn::builder(Version::V27, "sync").workers(2).start());
}

/// gunicorn 27 gthread (fds accepted on the main thread, served on pool threads,
/// closed on the main thread): same checks as for sync.
#[test]
fn gthread_27_short_connections() {
    short_connections_are_exact(
        Gunicorn::builder(Version::V27, "gthread")
            .workers(2)
            .threads(4)
            .start(),
    );
}
