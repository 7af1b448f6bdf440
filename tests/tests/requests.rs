//! Exact request metrics for every worker class: a scripted mix of requests
//! (statuses 200/404/500, split and large request bodies, large, sendfile and
//! chunked responses, keep-alive, a pipelined pair) is counted by the exporter
//! exactly as Gunicorn's access log and the client's byte counts say.

use std::io;

use integration_tests::{
    AccessRecord, Exporter, Gunicorn, Metrics, Version,
    check::{self, story},
    http::{self, Request, Response, Traffic},
};

const BIG: usize = 1_048_576;
const FILE: usize = 262_144;

/// Panics with the Gunicorn story unless `r` is a response with `status` (and
/// `body` when given).
fn expect(g: &Gunicorn, what: &str, r: io::Result<Response>, status: u16, body: Option<&[u8]>) {
    let r = r.unwrap_or_else(|e| panic!("{what}: {e}\n{}", g.story()));
    assert_eq!(r.status, status, "{what}: unexpected status\n{}", g.story());
    if let Some(body) = body {
        assert!(
            r.body == body,
            "{what}: unexpected body ({} bytes, starts {:?})\n{}",
            r.body.len(),
            String::from_utf8_lossy(&r.body[..r.body.len().min(80)]),
            g.story()
        );
    }
}

/// Sends the scripted mix to `g`; returns what the client sent and received.
fn scripted_mix(g: &Gunicorn) -> Traffic {
    let addr = g.addr();
    let mut t = Traffic::default();

    // Several GET /ok, each on its own connection (the last says Connection: close).
    for _ in 0..3 {
        let r = http::exchange(addr, &Request::get("/ok"), &mut t);
        expect(g, "GET /ok", r, 200, Some(b"ok"));
    }
    let r = http::exchange(addr, &Request::get("/ok").close(), &mut t);
    expect(g, "GET /ok (Connection: close)", r, 200, Some(b"ok"));

    let r = http::exchange(addr, &Request::get("/missing"), &mut t);
    expect(g, "GET /missing", r, 404, None);
    let r = http::exchange(addr, &Request::get("/boom"), &mut t);
    expect(g, "GET /boom", r, 500, None);

    // A POST whose head and body arrive in several reads.
    let body = vec![b'b'; 20_000];
    let req = Request::post("/echo", body.clone());
    let head_len = req.to_bytes().len() - body.len();
    let req = req.split_at(&[
        7,
        head_len - 20,
        head_len,
        head_len + 5_000,
        head_len + 12_000,
    ]);
    let r = http::exchange(addr, &req, &mut t);
    expect(g, "POST /echo (split)", r, 200, Some(b"20000"));

    let r = http::exchange(addr, &Request::post("/echo", vec![b'x'; BIG]), &mut t);
    expect(
        g,
        "POST /echo (1 MiB)",
        r,
        200,
        Some(BIG.to_string().as_bytes()),
    );

    let r = http::exchange(addr, &Request::get("/big"), &mut t);
    expect(g, "GET /big", r, 200, Some(&vec![b'x'; BIG]));

    let file: Vec<u8> = (0..FILE).map(|i| (i % 251) as u8).collect();
    let r = http::exchange(addr, &Request::get("/file"), &mut t);
    expect(g, "GET /file", r, 200, Some(&file));

    // Keep-alive: several requests on one connection (sync workers close after
    // each response; the client then reconnects).
    let chunks = b"chunk-0\nchunk-1\nchunk-2\nchunk-3\nchunk-4\n";
    let seq = [
        Request::get("/ok"),
        Request::post("/echo", b"hello".to_vec()),
        // gunicorn 23 sends the body after a HEAD response's headers too.
        Request::head("/ok").with_head_body(g.sends_body_on_head()),
        Request::new("DELETE", "/missing"),
        Request::get("/chunked"),
        Request::get("/ok"),
    ];
    let rs = http::sequence(addr, &seq, &mut t)
        .unwrap_or_else(|e| panic!("keep-alive sequence: {e}\n{}", g.story()));
    let statuses: Vec<u16> = rs.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        [200, 200, 200, 404, 200, 200],
        "keep-alive sequence\n{}",
        g.story()
    );
    assert_eq!(rs[1].body, b"5");
    assert_eq!(rs[4].body, chunks);

    // A pipelined pair: both requests in one write.
    let rs = http::pipelined(
        addr,
        &Request::get("/ok"),
        &Request::get("/missing"),
        &mut t,
    )
    .unwrap_or_else(|e| panic!("pipelined pair: {e}\n{}", g.story()));
    let statuses: Vec<u16> = rs.iter().map(|r| r.status).collect();
    // Sync workers force Connection: close and answer only the first.
    let expected: &[u16] = if g.worker_class() == "sync" {
        &[200]
    } else {
        &[200, 404]
    };
    assert_eq!(statuses, expected, "pipelined pair\n{}", g.story());

    let r = http::exchange(addr, &Request::get("/chunked"), &mut t)
        .unwrap_or_else(|e| panic!("GET /chunked: {e}\n{}", g.story()));
    assert!(
        r.status == 200 && r.chunked && r.body == chunks,
        "GET /chunked: status {}, chunked {}, body {:?}\n{}",
        r.status,
        r.chunked,
        String::from_utf8_lossy(&r.body),
        g.story()
    );
    t
}

/// Runs the mix against `g` with an exporter attached and checks every request
/// metric against the access log and the client's counts, and the failed
/// requests against the access log's 5xx and the error log's app exceptions.
fn mix_is_counted_exactly(g: Gunicorn) {
    let e = Exporter::attach(&g);
    let (m, records) = mix_checks(&g, &e);
    // A 500 for an app exception carries the exception class from the error log.
    check::assert_failures_match(&g, &e, &m, &records);
    let exceptions = g.app_exceptions();
    assert!(
        exceptions.iter().any(|(_, class)| class == "RuntimeError"),
        "harness: no RuntimeError record in the error log: {exceptions:?}\n{}",
        story(&g, &e, Some(&m))
    );
}

/// The mix and the checks common to every exporter configuration; returns the
/// final scrape and the access log.
fn mix_checks(g: &Gunicorn, e: &Exporter) -> (Metrics, Vec<AccessRecord>) {
    let traffic = scripted_mix(g);
    let (m, records) = check::wait_counted(g, e, traffic.total_responses());

    // The mix must really contain what the assertions below are about.
    for status in [200, 404, 500] {
        assert!(
            records.iter().any(|r| r.status == status),
            "harness: no {status} in the access log\n{}",
            story(g, e, Some(&m))
        );
    }

    check::assert_requests_match(g, e, &m, &records);
    check::assert_bytes_match(g, e, &m, &traffic);
    check::assert_histogram_counts_match(g, e, &m, &records);
    for base in [check::DURATION, check::REQUEST_SIZE, check::RESPONSE_SIZE] {
        check::assert_histograms_sane(g, e, &m, base);
    }
    check::assert_worker_labels(g, e, &m);
    check::assert_no_kernel_errors(g, e, &m);
    (m, records)
}

/// gunicorn 27, sync workers (sendfile for /file, Connection: close forced, only
/// the first of a pipelined pair answered): counts, failures, bytes exact.
#[test]
fn sync_27_mix_is_counted_exactly() {
    mix_is_counted_exactly(Gunicorn::builder(Version::V27, "sync").workers(2).start());
}

/// gunicorn 27, gthread workers with 4 threads (requests read and answered on pool
/// threads, keep-alive and pipelining): counts, failures, bytes exact.
#[test]
fn gthread_27_mix_is_counted_exactly() {
    mix_is_counted_exactly(
        Gunicorn::builder(Version::V27, "gthread")
            .workers(2)
            .threads(4)
            .start(),
    );
}

/// gunicorn 27, gevent workers (non-blocking reads, /file as 8 KiB sendto calls
/// instead of sendfile): counts, failures, bytes exact.
#[test]
fn gevent_27_mix_is_counted_exactly() {
    mix_is_counted_exactly(Gunicorn::builder(Version::V27, "gevent").workers(2).start());
}

/// gunicorn 23, eventlet workers: counts, failures, bytes exact.
#[test]
fn eventlet_23_mix_is_counted_exactly() {
    mix_is_counted_exactly(
        Gunicorn::builder(Version::V23, "eventlet")
            .workers(2)
            .start(),
    );
}

/// gunicorn 23, sync workers: counts, failures, bytes exact.
#[test]
fn sync_23_mix_is_counted_exactly() {
    mix_is_counted_exactly(Gunicorn::builder(Version::V23, "sync").workers(2).start());
}

/// With `--no-exception-classes`, every 5xx response (the app exception's 500
/// included) is `error_type="http_5xx"`, per (pid, method) exactly as in the
/// access log; everything else stays exact.
#[test]
fn without_exception_classes_5xx_are_http_5xx() {
    let g = Gunicorn::builder(Version::V27, "sync").workers(2).start();
    let e = Exporter::builder()
        .pid(g.master_pid())
        .arg("--no-exception-classes")
        .start();
    let (m, records) = mix_checks(&g, &e);
    check::assert_5xx_match(&g, &e, &m, &records);
}

/// With `--io-syscalls all` (read/write/readv/writev/recvmsg/sendmsg traced
/// too, beside what gunicorn uses), gthread workers, whose wake-up pipe and
/// log files see read/write, are still counted exactly: no request twice,
/// none lost, bytes and failures exact.
#[test]
fn all_io_syscalls_still_count_exactly() {
    let g = Gunicorn::builder(Version::V27, "gthread")
        .workers(2)
        .threads(4)
        .start();
    let e = Exporter::builder()
        .pid(g.master_pid())
        .arg("--io-syscalls")
        .arg("all")
        .start();
    let (m, records) = mix_checks(&g, &e);
    check::assert_failures_match(&g, &e, &m, &records);
}
