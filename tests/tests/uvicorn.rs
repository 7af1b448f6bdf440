//! Uvicorn workers under Gunicorn (`-k uvicorn_worker.UvicornWorker`), how
//! FastAPI and other ASGI apps are deployed: with `uvicorn[standard]` installed
//! the worker runs uvloop and httptools (libuv reads and writes the sockets with
//! read/write/writev and accepts with `accept4(fd, NULL, NULL)`);
//! `uvicorn_worker.UvicornH11Worker`, the worker package's own class with
//! `CONFIG_KWARGS = {"loop": "asyncio", "http": "h11"}`, runs plain asyncio
//! (recv/send). Either way a keep-alive connection stays registered with epoll
//! for reading the whole time, so after a response nothing says it is complete
//! but the next request or the close.
//!
//! Truth comes from the client: uvicorn writes its own access-log lines, not
//! Gunicorn's `--access-logformat`, so the client's counts per (method, status)
//! are what the exporter must show. Gunicorn's `--keep-alive 60` (uvicorn's
//! `timeout_keep_alive`) keeps idle connections open through the whole check.

use std::{collections::BTreeMap, sync::Arc};

use integration_tests::{
    Exporter, Gunicorn, Histogram, Metrics, Version,
    check::{self, KERNEL_ERRORS, REQUESTS, compare_table, story},
    env::STACKS_VENV,
    http::{Conn, Request, Traffic},
    load::{LoadConfig, LoadGen, Script},
};

const BUSY: &str = "gunicorn_worker_busy";
const WORKERS_BUSY: &str = "gunicorn_workers_busy";
const QUEUE: &str = "gunicorn_request_queue_seconds";

/// Requests of the load, over all its clients.
const LOAD_REQUESTS: u64 = 600;
/// Load clients, each on its own keep-alive connection.
const CLIENTS: usize = 6;
/// Connections left idle (open, one answered request each) after the load.
const IDLE: usize = 4;

/// A mix of statuses the ASGI app chooses: 200 (small, slow and 1 MiB bodies),
/// 404 and a 500 the app answers itself (no exception).
fn script() -> Script {
    Arc::new(|_, n| match n % 10 {
        5 => Request::get("/missing"),
        6 => Request::get("/error"),
        7 => Request::get("/slow?ms=5"),
        8 => Request::get("/big"),
        9 => Request::post("/ok", b"a small body".to_vec()),
        _ => Request::get("/ok"),
    })
}

/// What the idle connections ask before they go idle.
fn idle_request(i: usize) -> Request {
    match i % 3 {
        1 => Request::get("/missing"),
        2 => Request::get("/error"),
        _ => Request::get("/ok"),
    }
}

/// The client's responses per (method, status), keyed as the exporter's
/// `gunicorn_worker_requests_total` labels.
fn by_method_status(t: &Traffic) -> BTreeMap<Vec<String>, f64> {
    t.responses
        .iter()
        .map(|((m, s), n)| (vec![m.clone(), s.to_string()], *n as f64))
        .collect()
}

fn queue(m: &Metrics) -> Option<Histogram> {
    m.histograms(QUEUE)
        .into_iter()
        .find(|h| h.labels.is_empty())
}

/// Panics unless worker `pid` has (or has not) mapped a shared object whose
/// path contains each of `needles`: which event loop and HTTP parser the
/// worker really runs.
fn assert_loaded(g: &Gunicorn, pid: u32, needles: &[&str], loaded: bool) {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap_or_else(|err| panic!("reading /proc/{pid}/maps: {err}\n{}", g.story()));
    for needle in needles {
        assert_eq!(
            maps.lines().any(|l| l.contains(needle)),
            loaded,
            "harness: worker {pid} {} {needle}\n{}",
            if loaded {
                "has not loaded"
            } else {
                "has loaded"
            },
            g.story()
        );
    }
}

/// Runs the load and leaves [`IDLE`] keep-alive connections idle, then checks
/// the exporter against the client: every response counted per (method,
/// status), nothing busy (`gunicorn_worker_busy` sums to 0,
/// `gunicorn_workers_busy` 0) while the idle connections stay open, queue times
/// recorded, no kernel errors. The idle connections are used once more at the
/// end to show they were open all along.
fn uvicorn_counts_are_exact(worker_class: &str, uvloop: bool) {
    let g = Gunicorn::builder(Version::V27, worker_class)
        .venv(STACKS_VENV)
        .app("asgi_app:app")
        .workers(2)
        .arg("--keep-alive")
        .arg("60")
        .start();
    let e = Exporter::attach(&g);

    let load =
        LoadGen::run(LoadConfig::new(g.addr(), CLIENTS, true, script()).limit(LOAD_REQUESTS))
            .unwrap_or_else(|err| panic!("{err}\n{}", story(&g, &e, None)));
    // After the load: a uvicorn worker imports its HTTP parser once its
    // server starts, after Gunicorn's post_worker_init.
    for pid in g.worker_pids() {
        assert_loaded(
            &g,
            pid,
            &["uvloop/loop.", "httptools/parser/parser."],
            uvloop,
        );
    }
    let mut traffic = load.traffic;
    let mut idle: Vec<Conn> = Vec::new();
    for i in 0..IDLE {
        let req = idle_request(i);
        let mut c = Conn::connect(g.addr())
            .unwrap_or_else(|err| panic!("idle connection {i}: {err}\n{}", story(&g, &e, None)));
        let r = c
            .request(&req)
            .unwrap_or_else(|err| panic!("idle connection {i}: {err}\n{}", story(&g, &e, None)));
        assert!(
            !r.server_closes(),
            "harness: uvicorn closes idle connection {i} after {} {}: {:?}\n{}",
            req.method,
            req.target,
            r.headers,
            story(&g, &e, None)
        );
        traffic.record(&req.method, r.status);
        idle.push(c);
    }
    let connections = traffic.connections + IDLE as u64;
    let expected = by_method_status(&traffic);
    for status in ["200", "404", "500"] {
        assert!(
            expected.keys().any(|k| k[1] == status),
            "harness: the client got no {status}: {traffic:?}\n{}",
            story(&g, &e, None)
        );
    }
    let total = traffic.total_responses() as f64;

    let m = check::wait_metrics(
        &g,
        &e,
        &format!("{total} requests counted as the client got them and nothing busy"),
        |m| {
            let got = m.group_by(REQUESTS, &["method", "status"]);
            let busy = m.sum_all(BUSY);
            let workers_busy = m.value(WORKERS_BUSY, &[]);
            let queued = queue(m).map(|q| q.count);
            if got == expected
                && busy == 0.0
                && workers_busy == Some(0.0)
                && queued.is_some_and(|q| q > 0.0)
            {
                Ok(())
            } else {
                Err(format!(
                    "{REQUESTS} sums to {} of {total}, busy {busy}, {WORKERS_BUSY} \
                     {workers_busy:?}, {QUEUE}_count {queued:?}",
                    m.sum_all(REQUESTS) + 0.0
                ))
            }
        },
    );
    let saturation = m.lines(&[
        BUSY,
        WORKERS_BUSY,
        QUEUE,
        "gunicorn_connections",
        KERNEL_ERRORS,
    ]);
    let got = m.group_by(REQUESTS, &["method", "status"]);
    let (same, table) = compare_table(&["method", "status"], "exporter", &got, "client", &expected);
    assert!(
        same,
        "{worker_class}: {REQUESTS} per (method, status) differs from what the client got \
         ({} of {total} counted; {IDLE} of the connections are open and idle):\n{table}\n{}\
         --- saturation lines:\n{saturation}",
        m.sum_all(REQUESTS) + 0.0,
        story(&g, &e, Some(&m))
    );
    assert!(
        m.sum_all(BUSY) == 0.0 && m.value(WORKERS_BUSY, &[]) == Some(0.0),
        "{worker_class}: every response is complete and {IDLE} keep-alive connections are \
         idle, yet {BUSY} sums to {} and {WORKERS_BUSY} is {:?}\n{}--- saturation lines:\n{saturation}",
        m.sum_all(BUSY),
        m.value(WORKERS_BUSY, &[]),
        story(&g, &e, Some(&m))
    );
    let q = queue(&m).unwrap_or_else(|| {
        panic!(
            "{QUEUE} is not exported\n{}--- saturation lines:\n{saturation}",
            story(&g, &e, Some(&m))
        )
    });
    assert!(
        q.count > 0.0 && q.count <= connections as f64,
        "{worker_class}: {QUEUE}_count {} for the {connections} TCP connections the client made: \
         expected at least one wait and at most one per connection\n{}--- saturation lines:\n{saturation}",
        q.count,
        story(&g, &e, Some(&m))
    );
    check::assert_histograms_sane(&g, &e, &m, QUEUE);
    check::assert_worker_labels(&g, &e, &m);
    check::assert_no_kernel_errors(&g, &e, &m);

    // The idle connections were open during the checks: each answers again.
    for (i, c) in idle.iter_mut().enumerate() {
        let r = c.request(&Request::get("/ok"));
        assert!(
            matches!(&r, Ok(r) if r.status == 200),
            "harness: idle connection {i} was closed during the check: {r:?}\n{}",
            story(&g, &e, None)
        );
        c.finish()
            .unwrap_or_else(|err| panic!("closing idle connection {i}: {err}"));
    }
    eprintln!(
        "{worker_class}: {total} responses, {connections} connections, queue {} waits",
        q.count
    );
}

/// uvicorn's worker with plain asyncio and h11 (`UvicornH11Worker`: recv/send on
/// the client sockets, accept with the peer's address): per-status counts equal
/// the client's, idle keep-alive connections are not busy, queue time recorded.
#[test]
fn uvicorn_asyncio_h11_counts_and_idle_keep_alive_are_exact() {
    uvicorn_counts_are_exact("uvicorn_worker.UvicornH11Worker", false);
}

/// uvicorn's worker as `uvicorn[standard]` runs it (`UvicornWorker`: uvloop and
/// httptools; read/write on the client sockets, `accept4(fd, NULL, NULL)`):
/// per-status counts equal the client's, idle keep-alive connections are not
/// busy, queue time recorded.
#[test]
fn uvicorn_uvloop_httptools_counts_and_idle_keep_alive_are_exact() {
    uvicorn_counts_are_exact("uvicorn_worker.UvicornWorker", true);
}
