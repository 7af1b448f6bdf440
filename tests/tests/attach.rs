//! Attaching to a Gunicorn that is already busy: connections and requests that
//! started before the exporter attached must not produce wrong observations, and
//! everything after attaching is exact.

use std::{sync::Arc, time::Duration};

use integration_tests::{
    Exporter, Gunicorn, Version, access_log,
    check::{self, DURATION, REQUESTS, WORKERS, story},
    http::{self, Request, Traffic},
    load::{LoadConfig, LoadGen, Script},
    prom::Histogram,
};

/// Responses each generator must get in the counted POST phase.
const COUNTED: u64 = 150;
const LOAD_TIMEOUT: Duration = Duration::from_secs(60);

fn attach_under_load(g: Gunicorn) {
    let addr = g.addr();
    // Phase 0: GET /ok and GET /sleep?ms=5; phase 1: POST /echo.
    let script: Script = Arc::new(|phase, n| match phase {
        0 if n % 2 == 0 => Request::get("/ok"),
        0 => Request::get("/sleep?ms=5"),
        _ => Request::post("/echo", b"hello, exporter".to_vec()),
    });
    let gens = [
        LoadGen::start(LoadConfig::new(addr, 2, true, script.clone())),
        LoadGen::start(LoadConfig::new(addr, 2, false, script)),
    ];
    for l in &gens {
        l.wait_completed(0, 50, LOAD_TIMEOUT)
            .unwrap_or_else(|err| panic!("load before attaching: {err}\n{}", g.story()));
    }
    let before: Vec<u64> = gens.iter().map(|l| l.completed(0)).collect();
    let e = Exporter::attach(&g);
    let after: Vec<u64> = gens.iter().map(|l| l.completed(0)).collect();
    // The point of the test: requests were in flight while the exporter attached.
    assert!(
        before.iter().zip(&after).all(|(b, a)| a > b),
        "harness: the load did not run while the exporter attached (responses before {before:?}, after {after:?})\n{}",
        story(&g, &e, None)
    );

    for l in &gens {
        l.set_phase(1);
    }
    for l in &gens {
        l.wait_completed(1, COUNTED, LOAD_TIMEOUT)
            .unwrap_or_else(|err| panic!("counted phase: {err}\n{}", story(&g, &e, None)));
    }
    let mut traffic = Traffic::default();
    for l in gens {
        let r = l
            .stop()
            .unwrap_or_else(|err| panic!("{err}\n{}", story(&g, &e, None)));
        traffic.merge(&r.traffic);
    }

    let records = g
        .wait_access_log_lines(traffic.total_responses() as usize, check::COUNT_TIMEOUT)
        .unwrap_or_else(|err| {
            panic!(
                "client got {:?}; access log: {err}\n{}",
                traffic.responses,
                story(&g, &e, None)
            )
        });
    let posts: Vec<_> = records
        .iter()
        .filter(|r| r.method == "POST")
        .cloned()
        .collect();
    assert_eq!(
        posts.len() as u64,
        traffic.method_responses("POST"),
        "harness: the access log's POSTs differ from the client's\n{}",
        story(&g, &e, None)
    );
    let m = check::wait_metrics(&g, &e, "the exporter to count every POST", |m| {
        let n = m.sum(REQUESTS, |l| {
            l.get("method").map(String::as_str) == Some("POST")
        });
        if n == posts.len() as f64 {
            Ok(())
        } else {
            Err(format!(
                "{n} POSTs counted, {} in the access log",
                posts.len()
            ))
        }
    });

    // POSTs (all sent after attaching): exact per (pid, status).
    let mut exporter_posts = m.group_by(REQUESTS, &["pid", "status", "method"]);
    exporter_posts.retain(|k, _| k[2] == "POST");
    let truth = access_log::counts_by_pid_status_method(&posts);
    let (same, table) = check::compare_table(
        &["pid", "status", "method"],
        "exporter",
        &exporter_posts,
        "access log",
        &truth,
    );
    assert!(
        same,
        "POST counts differ from the access log:\n{table}\n{}",
        story(&g, &e, Some(&m))
    );

    // GETs: some were before the exporter; never more than the access log.
    let exporter_gets = m.group_by(REQUESTS, &["pid", "method"]);
    let truth_gets = access_log::counts_by_pid_method(&records);
    let (_, table) = check::compare_table(
        &["pid", "method"],
        "exporter",
        &exporter_gets,
        "access log",
        &truth_gets,
    );
    for (k, v) in &exporter_gets {
        if k[1] == "GET" {
            let logged = truth_gets.get(k).copied().unwrap_or(0.0);
            assert!(
                *v <= logged,
                "the exporter counts more GETs for pid {} than the access log:\n{table}\n{}",
                k[0],
                story(&g, &e, Some(&m))
            );
        }
    }

    // No observation longer than 1 s: requests take milliseconds; a longer one
    // means a request was timed from before the exporter saw it start.
    for h in m.histograms(DURATION) {
        let over = over_one_second(&h);
        assert!(
            over == Some(0.0),
            "{DURATION}{{{}}} has {over:?} observations above 1 s: buckets {:?}\n{}",
            h.describe(),
            h.buckets,
            story(&g, &e, Some(&m))
        );
    }
    for base in [check::DURATION, check::REQUEST_SIZE, check::RESPONSE_SIZE] {
        check::assert_histograms_sane(&g, &e, &m, base);
    }
    check::assert_worker_labels(&g, &e, &m);
    check::assert_no_kernel_errors(&g, &e, &m);
}

/// `+Inf` minus `le="1"`.
fn over_one_second(h: &Histogram) -> Option<f64> {
    Some(h.bucket(f64::INFINITY)? - h.bucket(1.0)?)
}

/// gunicorn 27 sync, 2 workers, attached under keep-alive and one-shot load:
/// POSTs after attaching exact per pid, GETs never over-counted, no duration
/// above 1 s, histograms consistent, no kernel errors.
#[test]
fn sync_27_attach_under_load() {
    attach_under_load(Gunicorn::builder(Version::V27, "sync").workers(2).start());
}

/// gunicorn 27 gthread (idle keep-alive connections parked in the main thread's
/// poller when the exporter attaches): same checks as for sync.
#[test]
fn gthread_27_attach_under_load() {
    attach_under_load(
        Gunicorn::builder(Version::V27, "gthread")
            .workers(2)
            .threads(4)
            .start(),
    );
}

/// `--pidfile` (Gunicorn's own `--pid` file) attaches to that master: its
/// requests are counted exactly.
#[test]
fn pidfile_attaches_to_the_master() {
    let g = Gunicorn::builder(Version::V27, "sync")
        .workers(2)
        .pidfile()
        .start();
    let e = Exporter::builder().pidfile(&g.pidfile_path()).start();
    let mut t = Traffic::default();
    http::sequence(g.addr(), &vec![Request::get("/ok"); 3], &mut t)
        .unwrap_or_else(|err| panic!("requests: {err}\n{}", g.story()));
    let (m, records) = check::wait_counted(&g, &e, t.total_responses());
    check::assert_requests_match(&g, &e, &m, &records);
    check::assert_worker_labels(&g, &e, &m);
    check::assert_no_kernel_errors(&g, &e, &m);
}

/// `--empty-programs` (the bench's floor) attaches a do-nothing program to the
/// same tracepoints as a normal exporter attached beside it: it serves, knows
/// the workers from /proc, and counts none of the requests the normal one
/// counts as the access log does.
#[test]
fn empty_programs_attach_the_same_tracepoints_and_count_nothing() {
    let g = Gunicorn::builder(Version::V27, "sync").workers(2).start();
    let real = Exporter::attach(&g);
    let empty = Exporter::builder()
        .pid(g.master_pid())
        .arg("--empty-programs")
        .start();
    let mut t = Traffic::default();
    http::sequence(g.addr(), &vec![Request::get("/ok"); 3], &mut t)
        .unwrap_or_else(|err| panic!("requests: {err}\n{}", g.story()));
    let (m, records) = check::wait_counted(&g, &real, t.total_responses());
    check::assert_requests_match(&g, &real, &m, &records);

    let m = empty.scrape();
    assert_eq!(m.sum_all(REQUESTS), 0.0, "{}", story(&g, &empty, Some(&m)));
    assert_eq!(m.sum_all(WORKERS), 2.0, "{}", story(&g, &empty, Some(&m)));
    let tracepoints = |e: &Exporter| {
        let stderr = e.stderr();
        let line = stderr
            .lines()
            .find(|l| l.contains("hooks); serving"))
            .map(str::to_owned);
        line.and_then(|l| l.split(", ").nth(1)?.split(' ').next()?.parse::<u32>().ok())
    };
    let (n_real, n_empty) = (tracepoints(&real), tracepoints(&empty));
    assert!(
        n_real.is_some() && n_real == n_empty,
        "attached tracepoints: normal {n_real:?}, empty {n_empty:?}\n{}\n{}",
        real.stderr(),
        empty.stderr()
    );
}
