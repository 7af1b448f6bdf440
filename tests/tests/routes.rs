//! Requests by route: `gunicorn_http_requests_total{route,method,status}` and
//! its histograms, every worker's requests summed, with routes named by the
//! user's templates (`--route`) and, for other paths, numeric segments written
//! `{id}`; at most `--max-routes` routes, the rest under `route="other"`.
//!
//! Truth: Gunicorn's access log (`%(U)s`: the path without its query),
//! aggregated here by the same templates with this file's own matching (not
//! the exporter's code). The apps (tests/apps/flask_app.py, django_app.py)
//! answer templated routes with 200/201, 404 for unknown ids and paths, and
//! 500 for a view that raises.
//!
//! Cardinality: 10,000 distinct paths no rule collapses give at most the cap's
//! routes plus `other`, every request still counted once, and the exporter's
//! resident memory stays flat while they come.

use std::{collections::BTreeMap, sync::Arc};

use integration_tests::{
    AccessRecord, Exporter, Gunicorn, LoadConfig, LoadGen, Metrics, Request, Version,
    check::{self, KERNEL_ERRORS, REQUESTS, compare_table, story},
    env::STACKS_VENV,
};

const HTTP_REQUESTS: &str = "gunicorn_http_requests_total";
const HTTP_DURATION: &str = "gunicorn_http_request_duration_seconds";
const HTTP_REQUEST_SIZE: &str = "gunicorn_http_request_size_bytes";
const OVERFLOW: &str = "gunicorn_http_route_overflow_requests_total";
const FAILED: &str = "gunicorn_worker_failed_requests_total";

/// The templates given to the exporter, and used here on the access log.
const TEMPLATES: &[&str] = &[
    "/users/{id}",
    "/users/{id}/orders/{order}",
    "/files/{name}",
    "/boom/{id}",
];

/// Whether `path` fits `template`: the same number of segments, literal ones
/// equal, `{...}` ones non-empty.
fn fits(template: &str, path: &str) -> bool {
    let t: Vec<&str> = template.split('/').collect();
    let p: Vec<&str> = path.split('/').collect();
    t.len() == p.len()
        && t.iter().zip(&p).all(|(t, p)| {
            if t.starts_with('{') && t.ends_with('}') {
                !p.is_empty()
            } else {
                t == p
            }
        })
}

/// This test's route of a path: the first template it fits, else the path
/// with its all-digit segments written `{id}` (the only ids these paths
/// carry outside templates).
fn route_of(path: &str) -> String {
    if let Some(t) = TEMPLATES.iter().find(|t| fits(t, path)) {
        return t.to_string();
    }
    path.split('/')
        .map(|s| {
            if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
                "{id}"
            } else {
                s
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// The access log by (route, method, status).
fn access_by_route(records: &[AccessRecord]) -> BTreeMap<Vec<String>, f64> {
    let mut out = BTreeMap::new();
    for r in records {
        *out.entry(vec![
            route_of(&r.path),
            r.method.clone(),
            r.status.to_string(),
        ])
        .or_insert(0.0) += 1.0;
    }
    out
}

/// A UUID made of `n`'s digits.
fn uuid(n: u64) -> String {
    let h = format!(
        "{:032x}",
        (n as u128).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)
    );
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// The mix: templated routes (ids, UUIDs, names), 404s for unknown ids and
/// unknown paths, 500s, a query string.
fn mixed(_phase: usize, seq: u64) -> Request {
    match seq % 9 {
        0 => Request::get(&format!("/users/{}", seq % 800)),
        1 => Request::post(&format!("/users/{}", seq % 800), b"name=x".to_vec()),
        2 => Request::get(&format!("/users/{}", 900 + seq % 50)),
        3 => Request::get(&format!("/users/{}/orders/{}", seq % 300, uuid(seq))),
        4 => Request::get(&format!("/files/report-{}x", seq % 30)),
        5 => Request::get(&format!("/boom/{}", seq % 100)),
        6 => Request::get(&format!("/nope/{seq}")),
        7 => Request::get(&format!("/page?x={seq}")),
        _ => Request::get("/missing"),
    }
}

struct Stack {
    name: &'static str,
    app: &'static str,
    env: &'static [(&'static str, &'static str)],
    worker_class: &'static str,
}

const FLASK: Stack = Stack {
    name: "flask",
    app: "flask_app:app",
    env: &[],
    worker_class: "sync",
};

const DJANGO: Stack = Stack {
    name: "django",
    app: "django_app:application",
    env: &[("DJANGO_SETTINGS_MODULE", "django_app")],
    worker_class: "gthread",
};

fn with_templates(mut b: integration_tests::ExporterBuilder) -> integration_tests::ExporterBuilder {
    for t in TEMPLATES {
        b = b.arg("--route").arg(*t);
    }
    b
}

fn requests_by_route_match_the_access_log(stack: &Stack) {
    const N: u64 = 1800;
    let mut b = Gunicorn::builder(Version::V27, stack.worker_class)
        .venv(STACKS_VENV)
        .app(stack.app)
        .workers(2);
    if stack.worker_class == "gthread" {
        b = b.threads(2);
    }
    for (k, v) in stack.env {
        b = b.env(*k, *v);
    }
    let g = b.start();
    let e = with_templates(Exporter::builder().pid(g.master_pid())).start();
    let script = Arc::new(mixed);
    let load = LoadGen::run(LoadConfig::new(g.addr(), 4, true, script).limit(N))
        .unwrap_or_else(|err| panic!("load: {err}\n{}", g.story()));
    let (_, records) = check::wait_counted(&g, &e, load.traffic.total_responses());
    let truth = access_by_route(&records);
    let n = records.len() as f64;
    let m = check::wait_metrics(&g, &e, &format!("{n} requests by route"), |m| {
        let total = m.sum_all(HTTP_REQUESTS);
        if total == n {
            Ok(())
        } else {
            Err(format!("{HTTP_REQUESTS} sums to {total} of {n}"))
        }
    });
    let got = m.group_by(HTTP_REQUESTS, &["route", "method", "status"]);
    let (same, table) = compare_table(
        &["route", "method", "status"],
        "exporter",
        &got,
        "access log",
        &truth,
    );
    assert!(
        same,
        "{} ({}): {HTTP_REQUESTS} differs from the access log aggregated by the templates \
         {TEMPLATES:?}:\n{table}\n{}",
        stack.name,
        stack.worker_class,
        story(&g, &e, Some(&m))
    );
    // Every kind of answer is there: 200, 201, 404 and 500.
    for status in ["200", "201", "404", "500"] {
        assert!(
            got.keys().any(|k| k[2] == status),
            "harness: no {status} in the mix:\n{table}"
        );
    }
    // The durations and request sizes count the same requests per route.
    let by_route = |name: &str| -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for h in m.histograms(name) {
            let route = h.labels.get("route").cloned().unwrap_or_default();
            *out.entry(route).or_insert(0.0) += h.count;
        }
        out
    };
    let mut counted: BTreeMap<String, f64> = BTreeMap::new();
    for (k, v) in &got {
        *counted.entry(k[0].clone()).or_insert(0.0) += v;
    }
    assert_eq!(
        by_route(HTTP_DURATION),
        counted,
        "{HTTP_DURATION} counts per route\n{table}"
    );
    assert_eq!(
        by_route(HTTP_REQUEST_SIZE),
        counted,
        "{HTTP_REQUEST_SIZE} counts per route\n{table}"
    );
    assert_eq!(m.sum_all(REQUESTS), n, "the per-worker family is unchanged");
    assert_eq!(m.sum_all(OVERFLOW), 0.0, "no route over the cap here");
    // The failed-requests counter's `endpoint` is the route: its failures by
    // endpoint are the access log's 5xx by route.
    let mut failed = m.group_by(FAILED, &["endpoint"]);
    failed.retain(|_, v| *v != 0.0);
    let mut fives: BTreeMap<Vec<String>, f64> = BTreeMap::new();
    for (k, v) in truth.iter().filter(|(k, _)| k[2].starts_with('5')) {
        *fives.entry(vec![k[0].clone()]).or_insert(0.0) += v;
    }
    let (same, table) = compare_table(&["endpoint"], "exporter", &failed, "access log 5xx", &fives);
    assert!(
        same,
        "{FAILED} by endpoint:\n{table}\n{}",
        story(&g, &e, Some(&m))
    );
    check::assert_no_kernel_errors(&g, &e, &m);
}

/// Flask (sync workers) under load: counts per route, method and status equal
/// the access log's by the same templates.
#[test]
fn flask_requests_by_route_match_the_access_log() {
    requests_by_route_match_the_access_log(&FLASK);
}

/// Django (gthread workers) under load: the same.
#[test]
fn django_requests_by_route_match_the_access_log() {
    requests_by_route_match_the_access_log(&DJANGO);
}

/// A path no rule collapses: letters from g on (never hex), one per `n`.
fn random_path(n: u64) -> String {
    let mut x = n.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5555;
    let mut s = String::from("/r/p");
    for _ in 0..10 {
        s.push((b'g' + (x % 20) as u8) as char);
        x /= 20;
    }
    s.push_str(&format!("q{}", to_letters(n)));
    s
}

fn to_letters(mut n: u64) -> String {
    let mut s = String::new();
    loop {
        s.push((b'g' + (n % 20) as u8) as char);
        n /= 20;
        if n == 0 {
            return s;
        }
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("reading status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

fn route_labels(m: &Metrics) -> std::collections::BTreeSet<String> {
    m.get(HTTP_REQUESTS)
        .filter_map(|s| s.labels.get("route").cloned())
        .collect()
}

/// 10,000 distinct paths that no rule collapses, through the plain WSGI app
/// (404 for each): at most `--max-routes` routes plus `other`, every request
/// counted once, `other` counted in the overflow counter, and the exporter's
/// resident memory flat from the first 2,000 paths (which fill the kernel's
/// table of paths) to the last.
#[test]
fn distinct_paths_stay_within_the_cap() {
    const CAP: usize = 50;
    const FIRST: u64 = 2_000;
    const TOTAL: u64 = 10_000;
    let g = Gunicorn::builder(Version::V27, "sync").workers(2).start();
    let e = Exporter::builder()
        .pid(g.master_pid())
        .arg("--max-routes")
        .arg(CAP.to_string())
        .start();
    let run = |from: u64, n: u64| {
        let script = Arc::new(move |_: usize, seq: u64| Request::get(&random_path(from + seq)));
        LoadGen::run(LoadConfig::new(g.addr(), 4, true, script).limit(n))
            .unwrap_or_else(|err| panic!("load: {err}\n{}", g.story()))
    };
    // Requests counted in no route series are counted as kernel errors.
    let lost = |m: &Metrics| {
        m.sum(KERNEL_ERRORS, |l| {
            l.get("kind").map(String::as_str) == Some("route_metrics_map_full")
        })
    };
    let counted = |n: u64| {
        check::wait_metrics(&g, &e, &format!("{n} requests by route"), |m| {
            let total = m.sum_all(HTTP_REQUESTS);
            if total + lost(m) == n as f64 {
                Ok(())
            } else {
                Err(format!("{HTTP_REQUESTS} sums to {total} of {n}"))
            }
        })
    };
    run(0, FIRST);
    let m = counted(FIRST);
    // A few scrapes, so the exporter's buffers have grown to their size.
    for _ in 0..3 {
        e.scrape();
    }
    let before = rss_kib(e.pid());
    let first_labels = route_labels(&m);
    run(FIRST, TOTAL - FIRST);
    let m = counted(TOTAL);
    for _ in 0..3 {
        e.scrape();
    }
    let after = rss_kib(e.pid());
    let labels = route_labels(&m);
    let series = m.get(HTTP_REQUESTS).count();
    let context = format!(
        "{} route labels, {series} {HTTP_REQUESTS} series; RSS {before} KiB after {FIRST} paths, \
         {after} KiB after {TOTAL}\n{}",
        labels.len(),
        m.lines(&[HTTP_REQUESTS, OVERFLOW, KERNEL_ERRORS]),
    );
    eprintln!("{context}");
    assert!(
        labels.len() <= CAP + 1 && labels.contains("other"),
        "at most {CAP} routes plus other: {context}"
    );
    assert_eq!(
        first_labels
            .iter()
            .filter(|l| *l != "other")
            .collect::<Vec<_>>(),
        labels.iter().filter(|l| *l != "other").collect::<Vec<_>>(),
        "the routes named first keep their names: {context}"
    );
    assert!(
        series <= CAP + 1,
        "one series per route (GET 404): {context}"
    );
    let other = m.sum(HTTP_REQUESTS, |l| {
        l.get("route").map(String::as_str) == Some("other")
    });
    assert_eq!(
        m.sum_all(OVERFLOW),
        other,
        "overflow = requests under other: {context}"
    );
    assert_eq!(
        other + lost(&m),
        (TOTAL - CAP as u64) as f64,
        "each path beyond the cap once: {context}"
    );
    assert_eq!(
        m.sum_all(HTTP_REQUESTS) + lost(&m),
        TOTAL as f64,
        "every request once: {context}"
    );
    assert_eq!(
        m.sum_all(REQUESTS),
        TOTAL as f64,
        "per-worker counts: {context}"
    );
    assert!(
        after <= before + 2048,
        "the exporter's RSS grew by {} KiB: {context}",
        after.saturating_sub(before)
    );
}

/// `--no-routes`: no route family at all, the per-worker ones as before.
#[test]
fn no_routes_turns_the_families_off() {
    let g = Gunicorn::builder(Version::V27, "sync").workers(1).start();
    let e = Exporter::builder()
        .pid(g.master_pid())
        .arg("--no-routes")
        .start();
    let script = Arc::new(|_: usize, seq: u64| Request::get(&format!("/users/{seq}")));
    let load = LoadGen::run(LoadConfig::new(g.addr(), 2, true, script).limit(50))
        .unwrap_or_else(|err| panic!("load: {err}\n{}", g.story()));
    let (m, _) = check::wait_counted(&g, &e, load.traffic.total_responses());
    assert_eq!(
        m.get(HTTP_REQUESTS).count(),
        0,
        "{}",
        story(&g, &e, Some(&m))
    );
    assert_eq!(m.get(OVERFLOW).count(), 0, "{}", story(&g, &e, Some(&m)));
}

#[test]
fn the_tests_own_templates() {
    assert_eq!(route_of("/users/12"), "/users/{id}");
    assert_eq!(
        route_of("/users/12/orders/x-y"),
        "/users/{id}/orders/{order}"
    );
    assert_eq!(route_of("/files/a"), "/files/{name}");
    assert_eq!(route_of("/nope/77"), "/nope/{id}");
    assert_eq!(route_of("/page"), "/page");
    assert_eq!(route_of("/users"), "/users");
    assert_eq!(uuid(7).len(), 36);
    assert_ne!(random_path(1), random_path(2));
}
