//! App exceptions in Flask and Django apps under Gunicorn's sync and gthread
//! workers: `gunicorn_worker_failed_requests_total{error_type}` names the Python
//! class of each exception once per failing request, as Python prints it
//! (builtins unqualified, others module-qualified: `failures.UpstreamError`,
//! `django.db.utils.OperationalError`), and nothing else.
//!
//! Neither framework lets the exception reach Gunicorn: each answers 500 itself
//! and logs the traceback its own way (Flask: "Exception on <path> [GET]" to the
//! WSGI error stream, i.e. Gunicorn's error log; Django, logging to the console
//! as its docs show: "Internal Server Error: <path>" on stderr). The exception
//! set (tests/apps/failures.py) is shaped against a parser that takes the
//! traceback's last line: a multi-line message, an `add_note()` note, a chained
//! exception, a message over 4 KiB, a database error (sqlite3's for Flask,
//! Django's own wrapping it). A body streamed by a generator that raises after
//! its first chunk is iterated by Gunicorn, which logs "Error handling request"
//! but can only cut the connection (the 200 is out); a plain 503 the app
//! returns right after on the same worker is `http_5xx`, not that class.
//!
//! Truth: the app's routes are deterministic (each raises a known class); the
//! client checks every status; Gunicorn's access log counts every request.
//! One worker, so the 503 follows the streamed request on the same worker.

use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
};

use integration_tests::{
    Exporter, Gunicorn, Metrics, Version,
    check::{self, FAILED, REQUESTS, compare_table, story},
    env::STACKS_VENV,
    http::{self, IO_TIMEOUT, Request, Traffic},
};

/// How many times the whole set is sent.
const ROUNDS: usize = 2;

/// A framework's app in tests/apps.
struct Stack {
    name: &'static str,
    app: &'static str,
    env: &'static [(&'static str, &'static str)],
    /// What `/error/db` raises.
    db_error: &'static str,
}

const FLASK: Stack = Stack {
    name: "flask",
    app: "flask_app:app",
    env: &[],
    db_error: "sqlite3.OperationalError",
};

const DJANGO: Stack = Stack {
    name: "django",
    app: "django_app:application",
    env: &[("DJANGO_SETTINGS_MODULE", "django_app")],
    db_error: "django.db.utils.OperationalError",
};

/// The routes that raise in the view (answered 500 by the framework) and the
/// class each raises (as tests/apps/failures.py documents).
fn raising_routes(stack: &Stack) -> Vec<(&'static str, &'static str)> {
    vec![
        ("/error/multiline", "ValueError"),
        ("/error/note", "KeyError"),
        ("/error/chained", "failures.UpstreamError"),
        ("/error/long", "TypeError"),
        ("/error/db", stack.db_error),
    ]
}

/// What the generator of `/stream/error` raises after its first chunk.
const STREAM_ERROR: &str = "failures.StreamInterrupted";

/// `GET /stream/error` on its own connection: the response must be a 200 whose
/// chunked body stops after the first chunk (no terminating `0` chunk) when
/// the server cuts the connection. Returns the bytes received.
fn streamed_then_cut(addr: SocketAddr) -> Result<Vec<u8>, String> {
    let what = "GET /stream/error";
    let mut s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
        .map_err(|e| format!("{what}: connect: {e}"))?;
    s.set_read_timeout(Some(IO_TIMEOUT))
        .map_err(|e| format!("{what}: {e}"))?;
    s.write_all(&Request::get("/stream/error").to_bytes())
        .map_err(|e| format!("{what}: write: {e}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .map_err(|e| format!("{what}: read: {e}"))?;
    let text = String::from_utf8_lossy(&raw);
    let chunked = text
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    if !text.starts_with("HTTP/1.1 200 ")
        || !chunked
        || !text.contains("first chunk\n")
        || text.ends_with("0\r\n\r\n")
    {
        return Err(format!(
            "{what}: expected a 200 with a chunked body cut after its first chunk, got {text:?}"
        ));
    }
    Ok(raw)
}

/// Sends the set [`ROUNDS`] times: per round a templated page, a 404, each
/// raising route, then the streamed response that raises followed by the
/// plain 503. Checks every status; returns the client's counts (the streamed
/// request counted as the 200 it got) and the expected failures per
/// error_type.
fn send_the_set(g: &Gunicorn, stack: &Stack) -> (Traffic, BTreeMap<Vec<String>, f64>) {
    let addr = g.addr();
    let mut t = Traffic::default();
    let mut failures: BTreeMap<Vec<String>, f64> = BTreeMap::new();
    let mut fail = |class: &str| *failures.entry(vec![class.to_string()]).or_insert(0.0) += 1.0;
    let expect = |t: &mut Traffic, target: &str, status: u16| {
        let r = http::exchange(addr, &Request::get(target), t)
            .unwrap_or_else(|e| panic!("GET {target}: {e}\n{}", g.story()));
        assert_eq!(r.status, status, "GET {target}\n{}", g.story());
        r
    };
    for _ in 0..ROUNDS {
        let page = expect(&mut t, "/page", 200);
        assert!(
            String::from_utf8_lossy(&page.body).contains("<li>b</li>"),
            "harness: /page is not the rendered template: {:?}\n{}",
            String::from_utf8_lossy(&page.body),
            g.story()
        );
        expect(&mut t, "/missing", 404);
        for (target, class) in raising_routes(stack) {
            expect(&mut t, target, 500);
            fail(class);
        }
        let raw = streamed_then_cut(addr).unwrap_or_else(|e| panic!("{e}\n{}", g.story()));
        t.sent += Request::get("/stream/error").to_bytes().len() as u64;
        t.received += raw.len() as u64;
        t.connections += 1;
        t.record("GET", 200);
        fail(STREAM_ERROR);
        expect(&mut t, "/unavailable", 503);
        fail("http_5xx");
    }
    (t, failures)
}

/// Lines of the app's logs (Gunicorn's error log and its stdout/stderr) that
/// start with `<class>:`, the exception line of a traceback, per class.
fn exception_lines(g: &Gunicorn, classes: &[&str]) -> BTreeMap<String, usize> {
    let mut text = std::fs::read_to_string(g.error_log_path()).unwrap_or_default();
    text.push_str(&std::fs::read_to_string(g.output_path()).unwrap_or_default());
    classes
        .iter()
        .map(|c| {
            let prefix = format!("{c}: ");
            (
                c.to_string(),
                text.lines().filter(|l| l.starts_with(&prefix)).count(),
            )
        })
        .collect()
}

/// Whether `s` is a Python class name as a traceback prints it: identifiers
/// joined by dots.
fn is_class_name(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
}

fn failed_by_type(m: &Metrics) -> BTreeMap<Vec<String>, f64> {
    m.group_by(FAILED, &["error_type"])
        .into_iter()
        .filter(|(_, v)| *v != 0.0)
        .collect()
}

fn exceptions_are_counted_by_class(stack: &Stack, worker_class: &str) {
    let mut b = Gunicorn::builder(Version::V27, worker_class)
        .venv(STACKS_VENV)
        .app(stack.app)
        .workers(1);
    if worker_class == "gthread" {
        b = b.threads(2);
    }
    for (k, v) in stack.env {
        b = b.env(*k, *v);
    }
    let g = b.start();
    let e = Exporter::attach(&g);
    let (traffic, expected) = send_the_set(&g, stack);

    // The app really raised what the routes say, once per request: one
    // exception line per failing request in its logs.
    let mut classes: Vec<&str> = raising_routes(stack).iter().map(|(_, c)| *c).collect();
    classes.push(STREAM_ERROR);
    let records = check::wait_counted(&g, &e, traffic.total_responses()).1;
    let logged = exception_lines(&g, &classes);
    assert!(
        logged.values().all(|&n| n == ROUNDS),
        "harness: the app's logs should hold {ROUNDS} exception lines per class: {logged:?}\n{}",
        story(&g, &e, None)
    );

    let n = traffic.total_responses() as f64;
    let m = check::wait_metrics(
        &g,
        &e,
        &format!("{n} requests and the failures counted"),
        |m| {
            let total = m.sum_all(REQUESTS);
            let failed = failed_by_type(m);
            if total == n && failed == expected {
                Ok(())
            } else {
                Err(format!(
                    "{REQUESTS} sums to {total} of {n}, {FAILED} {failed:?}"
                ))
            }
        },
    );
    let got = failed_by_type(&m);
    let (same, table) = compare_table(&["error_type"], "exporter", &got, "app routes", &expected);
    assert!(
        same,
        "{} under {worker_class}: {FAILED} per error_type differs from what the app raised \
         ({ROUNDS} rounds of: each raising route once, the stream that raises after its first \
         chunk, then a plain 503):\n{table}\n{}",
        stack.name,
        story(&g, &e, Some(&m))
    );
    for s in m.get(FAILED) {
        let t = s.labels.get("error_type").map(String::as_str).unwrap_or("");
        assert!(
            is_class_name(t),
            "{FAILED} has error_type {t:?}: not a class name (message text?)\n{}",
            story(&g, &e, Some(&m))
        );
    }
    check::assert_requests_match(&g, &e, &m, &records);
    check::assert_worker_labels(&g, &e, &m);
    check::assert_no_kernel_errors(&g, &e, &m);
}

/// Flask under sync workers: each exception class once per failing request.
#[test]
fn flask_sync_exceptions_are_counted_by_class() {
    exceptions_are_counted_by_class(&FLASK, "sync");
}

/// Flask under gthread workers: each exception class once per failing request.
#[test]
fn flask_gthread_exceptions_are_counted_by_class() {
    exceptions_are_counted_by_class(&FLASK, "gthread");
}

/// Django under sync workers: each exception class once per failing request.
#[test]
fn django_sync_exceptions_are_counted_by_class() {
    exceptions_are_counted_by_class(&DJANGO, "sync");
}

/// Django under gthread workers: each exception class once per failing request.
#[test]
fn django_gthread_exceptions_are_counted_by_class() {
    exceptions_are_counted_by_class(&DJANGO, "gthread");
}

/// The label check's own definition of a class name.
#[test]
fn class_names_are_dotted_identifiers() {
    for ok in ["ValueError", "django.db.utils.OperationalError", "_x.y_1"] {
        assert!(is_class_name(ok), "{ok}");
    }
    for bad in [
        "",
        "third line",
        "note: x",
        "a..b",
        "1a",
        "ValueError:",
        "x.y.",
    ] {
        assert!(!is_class_name(bad), "{bad}");
    }
}
