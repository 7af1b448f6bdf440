//! nginx in front of Gunicorn, the usual production setup: clients talk to
//! nginx, nginx to Gunicorn over a unix socket with upstream keep-alive
//! (`keepalive 8; proxy_http_version 1.1; proxy_set_header Connection "";`), so
//! a gthread worker serves many requests per upstream connection and nginx
//! keeps idle ones open; sync workers answer `Connection: close` every time.
//!
//! Truth: nginx's access log, aggregated by `$upstream_status` (what Gunicorn
//! answered nginx) and method, and cross-checked with Gunicorn's own access
//! log; /proc/net/unix shows the upstream connections nginx keeps open.

use std::{collections::BTreeMap, path::Path, sync::Arc};

use integration_tests::{
    Exporter, Gunicorn, Metrics, Nginx, NginxRecord, TestDir, Version, access_log,
    check::{self, FAILED, REQUESTS, compare_table, story},
    http::Request,
    load::{LoadConfig, LoadGen, Script},
};

const WORKERS_BUSY: &str = "gunicorn_workers_busy";
const BUSY: &str = "gunicorn_worker_busy";

/// Requests of the load, over all its clients (each on a keep-alive
/// connection to nginx).
const LOAD_REQUESTS: u64 = 400;
const CLIENTS: usize = 6;
/// nginx's idle upstream connections (`keepalive`).
const UPSTREAM_KEEPALIVE: usize = 8;

/// 200s (small, 1 MiB, chunked, a POST body, a short sleep), 404, and an app
/// exception Gunicorn answers with 500.
fn script() -> Script {
    Arc::new(|_, n| match n % 10 {
        3 => Request::get("/missing"),
        4 => Request::get("/boom"),
        5 => Request::get("/big"),
        6 => Request::get("/chunked"),
        7 => Request::post("/echo", vec![b'p'; 3000]),
        8 => Request::get("/sleep?ms=5"),
        _ => Request::get("/ok"),
    })
}

/// nginx's records per (upstream status, method); panics unless each record
/// has exactly one upstream attempt whose status nginx passed on.
fn upstream_counts(
    records: &[NginxRecord],
    fail: impl Fn(String) -> String,
) -> BTreeMap<Vec<String>, f64> {
    let mut out = BTreeMap::new();
    for r in records {
        match r.upstream_status.as_slice() {
            [s] if *s == r.status => {
                *out.entry(vec![s.to_string(), r.method.clone()])
                    .or_insert(0.0) += 1.0;
            }
            _ => panic!(
                "{}",
                fail(format!(
                    "harness: nginx record {r:?}: expected one upstream attempt whose status \
                     nginx passed on (a retried attempt means Gunicorn closed an idle upstream \
                     connection as nginx reused it)"
                ))
            ),
        }
    }
    out
}

/// Connected server-side sockets of the unix listener at `path` (what nginx
/// holds open to Gunicorn), from /proc/net/unix (state 03: connected).
fn upstream_connections(path: &Path) -> usize {
    let wanted = path.display().to_string();
    std::fs::read_to_string("/proc/net/unix")
        .unwrap_or_default()
        .lines()
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() >= 8 && f[5] == "03" && f[7] == wanted
        })
        .count()
}

fn nginx_counts_match(worker_class: &str) {
    let dir = TestDir::new("nginx-upstream");
    let sock = dir.join("gunicorn.sock");
    let mut b = Gunicorn::builder(Version::V27, worker_class)
        .workers(2)
        .no_tcp()
        .arg("-b")
        .arg(format!("unix:{}", sock.display()))
        // Longer than the test: Gunicorn never closes an idle upstream
        // connection under nginx's feet.
        .arg("--keep-alive")
        .arg("120");
    if worker_class == "gthread" {
        b = b.threads(4);
    }
    let g = b.start();
    let n = Nginx::start(&sock, UPSTREAM_KEEPALIVE);
    let e = Exporter::attach(&g);
    let full = |m: Option<&Metrics>| format!("{}\n{}", story(&g, &e, m), n.story());

    let traffic =
        LoadGen::run(LoadConfig::new(n.addr(), CLIENTS, true, script()).limit(LOAD_REQUESTS))
            .unwrap_or_else(|err| panic!("{err}\n{}", full(None)))
            .traffic;
    let records = n
        .wait_access_log_lines(traffic.total_responses() as usize, check::COUNT_TIMEOUT)
        .unwrap_or_else(|err| {
            panic!(
                "the client got {} responses: {err}\n{}",
                traffic.total_responses(),
                full(None)
            )
        });
    let truth = upstream_counts(&records, |msg| format!("{msg}\n{}", full(None)));
    for status in ["200", "404", "500"] {
        assert!(
            truth.keys().any(|k| k[0] == status),
            "harness: no upstream {status} in nginx's access log\n{}",
            full(None)
        );
    }
    // Gunicorn's access log says the same (it logs before the 500 of an app
    // exception, so wait for all of its lines).
    let gunicorn_records = g
        .wait_access_log_lines(records.len(), check::COUNT_TIMEOUT)
        .unwrap_or_else(|err| panic!("harness: Gunicorn's access log: {err}\n{}", full(None)));
    let gunicorn: BTreeMap<Vec<String>, f64> =
        access_log::counts_by_pid_status_method(&gunicorn_records)
            .into_iter()
            .fold(Default::default(), |mut acc, (k, v)| {
                *acc.entry(vec![k[1].clone(), k[2].clone()]).or_insert(0.0) += v;
                acc
            });
    let (same, table) = compare_table(
        &["status", "method"],
        "gunicorn",
        &gunicorn,
        "nginx",
        &truth,
    );
    assert!(
        same,
        "harness: Gunicorn's and nginx's access logs disagree:\n{table}\n{}",
        full(None)
    );
    let kept = upstream_connections(&sock);
    if worker_class == "gthread" {
        assert!(
            kept > 0,
            "harness: nginx keeps no idle upstream connection to {} (keepalive \
             {UPSTREAM_KEEPALIVE}): the test would not exercise upstream keep-alive\n{}",
            sock.display(),
            full(None)
        );
    }

    let total = records.len() as f64;
    let m = check::wait_metrics(&g, &e, "the exporter to agree with nginx", |m| {
        let got = m.group_by(REQUESTS, &["status", "method"]);
        let busy = m.value(WORKERS_BUSY, &[]);
        if got == truth && busy == Some(0.0) {
            Ok(())
        } else {
            Err(format!(
                "{REQUESTS} sums to {} of {total}, {WORKERS_BUSY} {busy:?}",
                m.sum_all(REQUESTS) + 0.0
            ))
        }
    });
    let got = m.group_by(REQUESTS, &["status", "method"]);
    let (same, table) = compare_table(&["status", "method"], "exporter", &got, "nginx", &truth);
    assert!(
        same,
        "{worker_class} behind nginx: {REQUESTS} per (status, method) differs from nginx's \
         access log by $upstream_status ({kept} upstream connections held open by nginx):\n\
         {table}\n{}",
        full(Some(&m))
    );
    assert!(
        m.value(WORKERS_BUSY, &[]) == Some(0.0) && m.sum_all(BUSY) == 0.0,
        "{worker_class} behind nginx: every response is complete ({kept} idle upstream \
         connections held open by nginx), yet {WORKERS_BUSY} is {:?} and {BUSY} sums to {}\n{}\
         --- busy lines:\n{}",
        m.value(WORKERS_BUSY, &[]),
        m.sum_all(BUSY),
        full(Some(&m)),
        m.lines(&[BUSY, WORKERS_BUSY, "gunicorn_connections", FAILED])
    );
    check::assert_worker_labels(&g, &e, &m);
    check::assert_no_kernel_errors(&g, &e, &m);
    eprintln!(
        "{worker_class} behind nginx: {total} requests, {} client connections, {kept} upstream \
         connections kept",
        traffic.connections
    );
}

/// Sync workers behind nginx (Gunicorn closes every upstream connection):
/// counts by status exactly as nginx's `$upstream_status`.
#[test]
fn nginx_to_sync_counts_match_upstream_status() {
    nginx_counts_match("sync");
}

/// gthread workers behind nginx with upstream keep-alive (many requests per
/// upstream connection, idle ones kept open): counts by status exactly as
/// nginx's `$upstream_status`, nothing busy after the load.
#[test]
fn nginx_to_gthread_counts_match_upstream_status() {
    nginx_counts_match("gthread");
}
