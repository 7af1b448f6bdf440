//! Hostile input: malformed HTTP on the wire to Gunicorn, and hostile scrapes
//! of the exporter. Nothing is lost and the exporter keeps serving.

use std::{
    io::{Read as _, Write as _},
    net::{Shutdown, TcpStream},
    time::{Duration, Instant},
};

use integration_tests::{Exporter, Gunicorn, Version, check};

/// Sends `bytes` on a fresh connection to `addr` and returns what came back
/// until the server closed (or 5 s passed). The server may close before it has
/// read everything (that is how it refuses a huge header): a failed write is
/// part of the exchange.
fn exchange(addr: std::net::SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).expect("connecting");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let _ = s.write_all(bytes);
    let _ = s.shutdown(Shutdown::Write);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

/// The status of each response in `reply` (a connection's whole reply).
fn statuses(reply: &[u8]) -> Vec<u16> {
    let text = String::from_utf8_lossy(reply);
    text.match_indices("HTTP/1.")
        .filter_map(|(i, _)| text.get(i + 9..i + 12)?.parse().ok())
        .collect()
}

/// Garbage, a TLS hello, an over-long request line and a bad header sent to
/// Gunicorn are answered (400-class) or dropped by Gunicorn; the exporter
/// counts exactly the responses the clients received, by status, alongside
/// well-formed requests, with no kernel errors.
#[test]
fn malformed_http_is_counted_as_answered() {
    let g = Gunicorn::builder(Version::V27, "sync").workers(2).start();
    let e = Exporter::attach(&g);
    let long_line = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(10_000));
    let inputs: Vec<Vec<u8>> = vec![
        b"GARBAGE\r\n\r\n".to_vec(),
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03".to_vec(),
        long_line.into_bytes(),
        b"GET /ok HTTP/1.1\r\nBad Header Without Colon\r\n\r\n".to_vec(),
        b"GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc"
            .to_vec(),
    ];
    let mut expected: std::collections::BTreeMap<u16, f64> = Default::default();
    for input in &inputs {
        for status in statuses(&exchange(g.addr(), input)) {
            *expected.entry(status).or_default() += 1.0;
        }
    }
    assert!(
        expected.contains_key(&200),
        "the well-formed requests were answered: {expected:?}"
    );
    assert!(
        expected.keys().any(|s| *s >= 400),
        "gunicorn rejected some input: {expected:?}"
    );
    let total: f64 = expected.values().sum();
    let m = check::wait_metrics(&g, &e, "all responses counted", |m| {
        let got = m.sum_all("gunicorn_worker_requests_total");
        if got == total {
            Ok(())
        } else {
            Err(format!("{got} of {total}"))
        }
    });
    for (status, n) in &expected {
        let got = m.sum("gunicorn_worker_requests_total", |l| {
            l.get("status").map(String::as_str) == Some(&status.to_string())
        });
        assert_eq!(
            got,
            *n,
            "status {status}: exporter {got}, clients {n}\n{}",
            check::story(&g, &e, Some(&m))
        );
    }
    check::assert_no_kernel_errors(&g, &e, &m);
}

/// Idle connections, garbage, huge headers, wrong methods and paths thrown at
/// the metrics endpoint: each gets an error or is dropped, and a normal scrape
/// still succeeds promptly while the idle connections are open.
#[test]
fn hostile_scrapes_do_not_stop_serving() {
    let g = Gunicorn::builder(Version::V27, "sync").workers(1).start();
    let mut e = Exporter::attach(&g);
    let idle: Vec<TcpStream> = (0..100)
        .map(|_| TcpStream::connect(e.addr()).expect("idle connection"))
        .collect();
    let garbage = exchange(e.addr(), b"\x00\x01\x02 not http at all\r\n\r\n");
    assert!(
        !String::from_utf8_lossy(&garbage).contains(" 200 "),
        "garbage is not served"
    );
    let huge = format!(
        "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "b".repeat(1 << 20)
    );
    let reply = exchange(e.addr(), huge.as_bytes());
    assert!(
        !String::from_utf8_lossy(&reply).contains(" 200 "),
        "a 1 MiB header is refused"
    );
    let post = exchange(
        e.addr(),
        b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(statuses(&post), [405]);
    let missing = exchange(
        e.addr(),
        b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(statuses(&missing), [404]);
    let started = Instant::now();
    let m = e.scrape();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "a scrape took {:?} beside 100 idle connections",
        started.elapsed()
    );
    assert_eq!(m.value("gunicorn_up", &[]), Some(1.0));
    drop(idle);
    e.check_alive()
        .unwrap_or_else(|err| panic!("{err}\n{}", check::story(&g, &e, Some(&m))));
}
