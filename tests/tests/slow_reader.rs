//! A 16 MiB response to a slow reader under gevent (gunicorn 27) and eventlet
//! (gunicorn 23): the hub's `sendall` sends until the socket's buffer is full,
//! gets EAGAIN, registers the socket for writability (`epoll_ctl(ADD)` when it
//! had no watcher), switches away and sends the rest as the client drains it,
//! for seconds. The request is not over until its last byte is written.
//!
//! Truth from the client: the bytes it received (the exporter's response size
//! sum must equal them), and when it received them. When the server's last
//! write returns, at most its socket's send buffer plus the client's receive
//! buffer are still unread by the client, so the server's last write came no
//! earlier than the moment the client had read all but those bytes; and the
//! server read the request before the client saw the first response byte. So
//! the request's duration is at least the client's time from the first byte
//! to all but (SO_SNDBUF of the server socket + SO_RCVBUF of the client +
//! [`SLACK`]) bytes, both buffers measured (the server's from `ss -tm`, sampled
//! during the transfer since the kernel grows it; the client's, set small
//! before connecting so it cannot grow, from getsockopt), and at most the
//! client's time from starting to send the request to its last byte. Gunicorn's
//! access log (`%(D)s`, its own request time) must lie inside the same bounds,
//! which checks the bounds themselves.

use std::{
    io::{self, Read as _, Write as _},
    net::{Shutdown, SocketAddr, TcpStream},
    os::fd::{AsRawFd as _, FromRawFd as _},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use integration_tests::{
    Exporter, Gunicorn, Version,
    check::{self, DURATION, RESPONSE_SIZE, story},
    http::{IO_TIMEOUT, Request},
};

const HUGE: u64 = 16 * 1024 * 1024;
/// What the client reads at a time, and its pause after each read.
const PIECE: usize = 16 * 1024;
const PAUSE: Duration = Duration::from_millis(2);
/// The client's SO_RCVBUF request (the kernel doubles it); set before
/// connecting, which also stops the kernel from growing it.
const CLIENT_RCVBUF: libc::c_int = 64 * 1024;
/// Bytes between two samples of the server socket's send buffer.
const SAMPLE_EVERY: u64 = 1024 * 1024;
/// What the buffers may hold beyond their sizes: a sender queues one more
/// segment while below its send buffer (up to 64 KiB of payload), and the
/// receive window is rounded; one 64 KiB segment on each side, twice over.
const SLACK: u64 = 256 * 1024;

/// What the slow client saw.
struct Reading {
    /// Bytes received, in total (head and body).
    received: u64,
    /// Per read: (when it started, when it returned, bytes received after it),
    /// times since the client started to send the request.
    marks: Vec<(Duration, Duration, u64)>,
    /// The largest send buffer the server socket had (bytes, `tb` of `ss -tm`).
    server_sndbuf: u64,
    /// The client socket's receive buffer (getsockopt SO_RCVBUF).
    client_rcvbuf: u64,
    /// Status line.
    status_line: String,
}

impl Reading {
    /// When the read that brought the client to at least `bytes` started.
    fn reached(&self, bytes: u64) -> Option<Duration> {
        self.marks
            .iter()
            .find(|(_, _, b)| *b >= bytes)
            .map(|(t, _, _)| *t)
    }
}

/// A TCP connection to `addr` whose receive buffer is set to `rcvbuf` before
/// connecting.
fn connect_with_rcvbuf(addr: SocketAddr, rcvbuf: libc::c_int) -> io::Result<TcpStream> {
    let SocketAddr::V4(v4) = addr else {
        return Err(io::Error::other("IPv4 only"));
    };
    // SAFETY: plain syscalls on a descriptor this function owns until it hands
    // it to TcpStream (or closes it on error).
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let fail = |fd| {
            let e = io::Error::last_os_error();
            libc::close(fd);
            Err(e)
        };
        if libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &rcvbuf as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        ) != 0
        {
            return fail(fd);
        }
        let sa = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: v4.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*v4.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        if libc::connect(
            fd,
            &sa as *const libc::sockaddr_in as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        ) != 0
        {
            return fail(fd);
        }
        Ok(TcpStream::from_raw_fd(fd))
    }
}

/// The socket's SO_RCVBUF.
fn rcvbuf_of(s: &TcpStream) -> io::Result<u64> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt into a local of the size passed.
    let r = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &mut v as *mut libc::c_int as *mut libc::c_void,
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(v as u64)
}

/// The send buffer (`tb` in `ss -tm`'s skmem) of the established socket from
/// `server` to `client`.
fn server_sndbuf(server: SocketAddr, client: SocketAddr) -> Result<u64, String> {
    let filter = format!(
        "( sport = :{} and dport = :{} )",
        server.port(),
        client.port()
    );
    let out = Command::new("ss")
        .args(["-tmnH", "state", "established", &filter])
        .output()
        .map_err(|e| format!("running ss: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let tb = text
        .split(|c: char| c == ',' || c == '(' || c.is_whitespace())
        .find_map(|f| f.strip_prefix("tb")?.parse::<u64>().ok());
    tb.ok_or_else(|| format!("no tb in `ss -tmnH state established '{filter}'`: {text:?}"))
}

/// GET /huge, read slowly; the connection is closed after the last byte.
fn read_slowly(addr: SocketAddr) -> Result<Reading, String> {
    let mut s = connect_with_rcvbuf(addr, CLIENT_RCVBUF).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(IO_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let local = s.local_addr().map_err(|e| e.to_string())?;
    let req = Request::get("/huge").to_bytes();
    let sent = Instant::now();
    s.write_all(&req).map_err(|e| format!("write: {e}"))?;
    let mut buf = vec![0u8; PIECE];
    let mut head: Vec<u8> = Vec::new();
    let mut total: Option<u64> = None;
    let mut r = Reading {
        received: 0,
        marks: Vec::new(),
        server_sndbuf: 0,
        client_rcvbuf: 0,
        status_line: String::new(),
    };
    let mut next_sample = 0;
    while total != Some(r.received) {
        let before = sent.elapsed();
        let n = s
            .read(&mut buf)
            .map_err(|e| format!("read after {} bytes: {e}", r.received))?;
        if n == 0 {
            return Err(format!("EOF after {} of {total:?} bytes", r.received));
        }
        r.received += n as u64;
        r.marks.push((before, sent.elapsed(), r.received));
        if total.is_none() {
            head.extend_from_slice(&buf[..n]);
            if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                let text = String::from_utf8_lossy(&head[..end]).into_owned();
                r.status_line = text.lines().next().unwrap_or("").to_string();
                let length = text
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse::<u64>().ok())?
                    })
                    .ok_or_else(|| format!("no Content-Length in {text:?}"))?;
                total = Some(end as u64 + 4 + length);
            }
        }
        if r.received >= next_sample {
            r.server_sndbuf = r.server_sndbuf.max(server_sndbuf(addr, local)?);
            next_sample += SAMPLE_EVERY;
        }
        thread::sleep(PAUSE);
    }
    r.server_sndbuf = r.server_sndbuf.max(server_sndbuf(addr, local)?);
    r.client_rcvbuf = rcvbuf_of(&s).map_err(|e| format!("getsockopt: {e}"))?;
    s.shutdown(Shutdown::Write).map_err(|e| e.to_string())?;
    let mut rest = Vec::new();
    s.read_to_end(&mut rest)
        .map_err(|e| format!("reading to EOF: {e}"))?;
    if !rest.is_empty() {
        return Err(format!("{} bytes after the response", rest.len()));
    }
    Ok(r)
}

fn huge_response_to_a_slow_reader(version: Version, worker_class: &str) {
    let g = Gunicorn::builder(version, worker_class).workers(1).start();
    let e = Exporter::attach(&g);
    let r = read_slowly(g.addr()).unwrap_or_else(|err| panic!("{err}\n{}", story(&g, &e, None)));
    assert!(
        r.status_line.starts_with("HTTP/1.1 200 "),
        "GET /huge: {:?}\n{}",
        r.status_line,
        story(&g, &e, None)
    );
    let (_, records) = check::wait_counted(&g, &e, 1);
    let m = check::wait_metrics(&g, &e, "the response's bytes", |m| {
        let bytes = m.sum_all(&format!("{RESPONSE_SIZE}_sum"));
        if bytes == r.received as f64 {
            Ok(())
        } else {
            Err(format!("{RESPONSE_SIZE}_sum {bytes}"))
        }
    });

    // The server read the request before the first response byte reached the
    // client (so before the first read returned), and its last write returned
    // once the client had read all but the buffered bytes (so after the read
    // that got there started).
    let buffers = r.server_sndbuf + r.client_rcvbuf + SLACK;
    let all_but = r.received.saturating_sub(buffers);
    let first = r.marks[0].1;
    let last = r.marks[r.marks.len() - 1].1;
    let reached = r.reached(all_but).unwrap_or(last);
    let at_least = reached.saturating_sub(first).as_secs_f64();
    let at_most = last.as_secs_f64();
    let facts = format!(
        "client: {} bytes in {} reads of up to {PIECE} with {PAUSE:?} pauses; first byte \
         {first:?} and last byte {last:?} after starting to send the request; {all_but} bytes \
         (all but server SO_SNDBUF {} + client SO_RCVBUF {} + {SLACK}) after {reached:?}",
        r.received,
        r.marks.len(),
        r.server_sndbuf,
        r.client_rcvbuf
    );
    assert!(
        all_but >= r.received / 2 && at_least >= 0.5,
        "harness: the buffers are too large or the reader too fast for the bound to say \
         anything: {facts}\n{}",
        story(&g, &e, None)
    );

    // Gunicorn's own request time (%(D)s: from the parsed request to its last
    // write) lies inside the same bounds, or the bounds are wrong.
    let logged = records[0].micros as f64 / 1e6;
    assert!(
        logged >= at_least && logged <= at_most + 0.001,
        "harness: the access log's request time {logged:.3} s is outside {at_least:.3}..\
         {at_most:.3} s; {facts}\n{}",
        story(&g, &e, None)
    );

    let bytes = m.sum_all(&format!("{RESPONSE_SIZE}_sum"));
    let duration = m.sum_all(&format!("{DURATION}_sum"));
    let count = m.sum_all(&format!("{DURATION}_count"));
    let mut wrong = Vec::new();
    if bytes != r.received as f64 {
        wrong.push(format!(
            "{RESPONSE_SIZE}_sum is {bytes}, but the client received {} bytes ({HUGE} of body \
             and the head)",
            r.received
        ));
    }
    if count != 1.0 || duration < at_least || duration > at_most + 0.001 {
        wrong.push(format!(
            "the one request's duration ({DURATION}_sum {duration:.3} s, _count {count}) \
             should be at least {at_least:.3} s (the client's time to receive all but the \
             buffered bytes) and at most {at_most:.3} s (request sent to last byte)"
        ));
    }
    assert!(
        wrong.is_empty(),
        "{worker_class}, 16 MiB to a slow reader:\n  {}\n{facts}\n{}",
        wrong.join("\n  "),
        story(&g, &e, Some(&m))
    );
    check::assert_requests_match(&g, &e, &m, &records);
    check::assert_no_kernel_errors(&g, &e, &m);
    eprintln!("{worker_class}: duration {duration:.3} s; {facts}");
}

/// gunicorn 27, gevent worker: 16 MiB to a slow reader, bytes and duration.
#[test]
fn gevent_huge_response_to_a_slow_reader() {
    huge_response_to_a_slow_reader(Version::V27, "gevent");
}

/// gunicorn 23, eventlet worker: 16 MiB to a slow reader, bytes and duration.
#[test]
fn eventlet_huge_response_to_a_slow_reader() {
    huge_response_to_a_slow_reader(Version::V23, "eventlet");
}
