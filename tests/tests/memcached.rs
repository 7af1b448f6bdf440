//! An app that talks to memcached on every request (pymemcache, Debian's
//! memcached): the worker's own client socket reads replies like
//! `VALUE k-12 0 14`, which begin like an HTTP request line (a method-like word,
//! a space, a target). That socket was connected out, never accepted from
//! Gunicorn's listener: none of its traffic is a request.
//!
//! Truth: Gunicorn's access log (every request counted exactly), the client's
//! statuses and bodies (the value read back from memcached), memcached's own
//! `stats` (one set and one hit per request: the app really used it).

use std::sync::Arc;

use integration_tests::{
    Exporter, Gunicorn, Memcached, Metrics, Version,
    check::{self, FAILED, REQUESTS, story},
    env::STACKS_VENV,
    http::Request,
    load::{LoadConfig, LoadGen, Script},
};

const WORKERS_BUSY: &str = "gunicorn_workers_busy";
const BUSY: &str = "gunicorn_worker_busy";

/// Requests of the load; every tenth is a 404 that does not touch memcached.
const REQUESTS_SENT: u64 = 300;
const CLIENTS: usize = 4;

fn script() -> Script {
    Arc::new(|_, n| {
        if n % 10 == 9 {
            Request::get("/missing")
        } else {
            Request::get(&format!("/mc?key=k-{n}"))
        }
    })
}

fn memcached_story(mc: &Memcached, g: &Gunicorn, e: &Exporter, m: Option<&Metrics>) -> String {
    format!("{}\n{}", story(g, e, m), mc.story())
}

fn memcached_app_is_counted_exactly(worker_class: &str, keep_alive: bool) {
    let mc = Memcached::start();
    let mut b = Gunicorn::builder(Version::V27, worker_class)
        .venv(STACKS_VENV)
        .app("memcache_app:app")
        .env("MEMCACHED_ADDR", format!("127.0.0.1:{}", mc.port()))
        .workers(2);
    if worker_class == "gthread" {
        b = b.threads(4);
    }
    let g = b.start();
    let e = Exporter::attach(&g);
    let stat = |name: &str| {
        mc.stat(name)
            .unwrap_or_else(|err| panic!("{err}\n{}", mc.story()))
    };
    let (sets0, hits0) = (stat("cmd_set"), stat("get_hits"));

    let traffic =
        LoadGen::run(LoadConfig::new(g.addr(), CLIENTS, keep_alive, script()).limit(REQUESTS_SENT))
            .unwrap_or_else(|err| panic!("{err}\n{}", memcached_story(&mc, &g, &e, None)))
            .traffic;
    let mc_requests = REQUESTS_SENT - REQUESTS_SENT / 10;
    assert_eq!(
        (
            traffic.responses.get(&("GET".to_string(), 200)).copied(),
            traffic.responses.get(&("GET".to_string(), 404)).copied()
        ),
        (Some(mc_requests), Some(REQUESTS_SENT - mc_requests)),
        "harness: the client's statuses (a 502 means memcached gave back another value): \
         {traffic:?}\n{}",
        memcached_story(&mc, &g, &e, None)
    );
    let (sets, hits) = (stat("cmd_set"), stat("get_hits"));
    assert_eq!(
        (sets - sets0, hits - hits0),
        (mc_requests, mc_requests),
        "harness: memcached should have seen one set and one hit per /mc request \
         (cmd_set {sets0} -> {sets}, get_hits {hits0} -> {hits})\n{}",
        memcached_story(&mc, &g, &e, None)
    );

    let records = g
        .wait_access_log_lines(REQUESTS_SENT as usize, check::COUNT_TIMEOUT)
        .unwrap_or_else(|err| {
            panic!(
                "the client got {REQUESTS_SENT} responses but the access log disagrees: {err}\n{}",
                memcached_story(&mc, &g, &e, None)
            )
        });
    let n = records.len() as f64;
    let m = check::wait_metrics(&g, &e, "every request counted and nothing busy", |m| {
        let total = m.sum_all(REQUESTS);
        let busy = m.value(WORKERS_BUSY, &[]);
        let failed = m.sum_all(FAILED) + 0.0;
        if total == n && busy == Some(0.0) && failed == 0.0 {
            Ok(())
        } else {
            Err(format!(
                "{REQUESTS} sums to {total} of {n}, {WORKERS_BUSY} {busy:?}, {FAILED} sums to \
                 {failed}"
            ))
        }
    });
    let lines = m.lines(&[BUSY, WORKERS_BUSY, FAILED, "gunicorn_connections"]);
    let failed = m.group_by(FAILED, &["error_type"]);
    assert!(
        failed.values().all(|&v| v == 0.0),
        "{worker_class}: every request was answered 200 or 404, yet {FAILED} {failed:?} (an \
         `aborted` is memcached's reply taken for a request nobody answered)\n{}\
         --- busy and failure lines:\n{lines}",
        memcached_story(&mc, &g, &e, Some(&m))
    );
    assert!(
        m.value(WORKERS_BUSY, &[]) == Some(0.0) && m.sum_all(BUSY) == 0.0,
        "{worker_class}: the load is over, yet {WORKERS_BUSY} is {:?} and {BUSY} sums to {} (a \
         memcached reply taken for a request in flight?)\n{}--- busy and failure lines:\n{lines}",
        m.value(WORKERS_BUSY, &[]),
        m.sum_all(BUSY),
        memcached_story(&mc, &g, &e, Some(&m))
    );
    check::assert_requests_match(&g, &e, &m, &records);
    check::assert_worker_labels(&g, &e, &m);
    check::assert_no_kernel_errors(&g, &e, &m);
}

/// Sync workers (one connection per request), each keeping its memcached
/// connection: counts exact, nothing busy or failed after the load.
#[test]
fn memcached_app_sync_is_counted_exactly() {
    memcached_app_is_counted_exactly("sync", false);
}

/// gthread workers (4 threads, keep-alive clients), a memcached connection per
/// thread: counts exact, nothing busy or failed after the load.
#[test]
fn memcached_app_gthread_is_counted_exactly() {
    memcached_app_is_counted_exactly("gthread", true);
}
