//! The per-connection request state machine.
//!
//! The kernel keeps one [`Conn`] per accepted client socket, keyed by (tgid, fd),
//! and feeds it the syscalls it sees on that socket. Each call may hand back a
//! [`Finished`] request, which the kernel records in its metrics map. The rules:
//!
//! - A request starts at the exit of its first data-bearing read (a blocking
//!   read is entered long before data arrives).
//! - A write starting with `HTTP/1.x NNN` (final status) starts its response;
//!   interim 1xx lines belong to the response that follows them.
//! - The request ends at its last response write; it is recorded as soon as
//!   the worker shows it is done with the response: it waits for the next
//!   request (a read that finds no data, or the socket handed back to an epoll
//!   set), reads the next request (a request line, or a second status line on
//!   the same connection: pipelining), shuts the socket down for writing,
//!   closes it, accepts a new connection on the same fd, or exits.
//! - A connection that goes away while a request was read but not answered
//!   yields a `Finished` with status 0: the request was aborted.
//!
//! So every final status line is counted exactly once, whatever the order in
//! which a worker class interleaves its reads, writes, shutdowns and closes.

use crate::http::{self, HEAD_LEN};

/// Where a connection is in its current exchange.
pub mod phase {
    /// Accepted, no request data yet (or attached after the fact).
    pub const IDLE: u8 = 0;
    /// Request data read, no response yet.
    pub const READING: u8 = 1;
    /// The response's status line was written; body writes may follow.
    pub const RESPONDING: u8 = 2;
    /// Shut down for writing: nothing more will be answered on it.
    pub const SHUT: u8 = 3;
    /// Closed. The entry stays for the descriptor's next connection: resetting
    /// it then costs less than a delete now and an insert at the next accept.
    pub const CLOSED: u8 = 4;
}

/// Status of a request that ended without a response.
pub const ABORTED: u16 = 0;

/// One client connection's current exchange. `#[repr(C)]`: a map value.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Conn {
    /// `bpf_ktime_get_ns` at the exit of the request's first read.
    pub start_ns: u64,
    /// Time of the last response write (the request's end so far).
    pub last_write_ns: u64,
    pub req_bytes: u64,
    pub resp_bytes: u64,
    pub status: u16,
    pub method: u8,
    pub phase: u8,
    /// Why the current request failed, when the kernel knows (`abi::cause`).
    pub cause: u8,
    pub _pad: [u8; 3],
}

/// A request that ended, ready to be recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Finished {
    pub method: u8,
    /// Final status, or [`ABORTED`].
    pub status: u16,
    pub duration_ns: u64,
    pub req_bytes: u64,
    pub resp_bytes: u64,
    /// `abi::cause` of a failure, as far as the connection knows.
    pub cause: u8,
}

impl Conn {
    /// A connection first seen on a read that opened a request (attached to a
    /// worker whose connection was accepted before the exporter started).
    pub fn reading(now: u64, n: u64, method: u8) -> Conn {
        let mut c = Conn::default();
        c.begin(now, n, method);
        c
    }

    fn begin(&mut self, now: u64, n: u64, method: u8) {
        *self = Conn {
            start_ns: now,
            last_write_ns: now,
            req_bytes: n,
            method,
            phase: phase::READING,
            ..Conn::default()
        };
    }

    /// The request as it ends; one never answered lasted until `now`.
    fn finished_at(&self, now: u64) -> Finished {
        let answered = self.phase == phase::RESPONDING;
        let end = if answered { self.last_write_ns } else { now };
        Finished {
            method: self.method,
            status: if answered { self.status } else { ABORTED },
            duration_ns: end.saturating_sub(self.start_ns),
            req_bytes: self.req_bytes,
            resp_bytes: self.resp_bytes,
            cause: self.cause,
        }
    }

    /// A read that returned `n > 0` bytes starting with `head[..len]`.
    #[inline(always)]
    pub fn on_read(
        &mut self,
        now: u64,
        n: u64,
        head: &[u8; HEAD_LEN],
        len: usize,
    ) -> Option<Finished> {
        match self.phase {
            phase::IDLE => {
                let method = http::request_method(head, len).unwrap_or(http::method::OTHER);
                self.begin(now, n, method);
                None
            }
            phase::READING => {
                self.req_bytes += n;
                None
            }
            // The descriptor now belongs to another socket, found mid-stream
            // (accepted before we attached, or not by accept): a request line starts one.
            phase::CLOSED => {
                let method = http::request_method(head, len)?;
                self.begin(now, n, method);
                None
            }
            phase::RESPONDING => match http::request_method(head, len) {
                Some(method) => {
                    let done = self.finished_at(self.last_write_ns);
                    self.begin(now, n, method);
                    Some(done)
                }
                // The rest of a body the app did not read, drained by gunicorn.
                None => {
                    self.req_bytes += n;
                    None
                }
            },
            _ => None,
        }
    }

    /// A write that sent `n > 0` bytes starting with `head[..len]`.
    #[inline(always)]
    pub fn on_write(
        &mut self,
        now: u64,
        n: u64,
        head: &[u8; HEAD_LEN],
        len: usize,
    ) -> Option<Finished> {
        let status = http::response_status(head, len);
        match (self.phase, status) {
            (phase::READING, Some(s)) if http::is_interim(s) => {
                self.resp_bytes += n;
                None
            }
            (phase::READING, Some(s)) => {
                self.phase = phase::RESPONDING;
                self.status = s;
                self.resp_bytes += n;
                self.last_write_ns = now;
                None
            }
            (phase::RESPONDING, Some(s)) if !http::is_interim(s) => {
                // Pipelining: the next request was read with this one; it
                // started when the worker finished the previous response.
                let done = self.finished_at(self.last_write_ns);
                let (method, start) = (self.method, self.last_write_ns);
                self.begin(start, 0, method);
                self.phase = phase::RESPONDING;
                self.status = s;
                self.resp_bytes = n;
                self.last_write_ns = now;
                Some(done)
            }
            (phase::RESPONDING, _) => {
                self.resp_bytes += n;
                self.last_write_ns = now;
                None
            }
            _ => None,
        }
    }

    /// sendfile(2) of `n > 0` bytes: always response body.
    #[inline(always)]
    pub fn on_sendfile(&mut self, now: u64, n: u64) {
        if self.phase == phase::RESPONDING {
            self.resp_bytes += n;
            self.last_write_ns = now;
        }
    }

    /// The worker waits for the next request on this connection (a read that
    /// found no data, or the socket registered with epoll again): a response
    /// being written is complete.
    #[inline(always)]
    pub fn on_idle(&mut self) -> Option<Finished> {
        if self.phase != phase::RESPONDING {
            return None;
        }
        let done = self.finished_at(self.last_write_ns);
        *self = Conn::default();
        Some(done)
    }

    /// shutdown(2) with `how`; SHUT_WR or SHUT_RDWR end the exchange.
    #[inline(always)]
    pub fn on_shutdown(&mut self, how: u64, now: u64) -> Option<Finished> {
        const SHUT_RD: u64 = 0;
        if how == SHUT_RD || self.phase >= phase::SHUT {
            return None;
        }
        let done = self.on_close(now);
        self.phase = phase::SHUT;
        done
    }

    /// accept(2) returned this descriptor: a new connection starts clean.
    /// One still open here was never seen closing (dup2, close_range): it ended.
    #[inline(always)]
    pub fn on_accept(&mut self, now: u64) -> Option<Finished> {
        let done = self.on_close(now);
        *self = Conn::default();
        done
    }

    /// close(2) of the descriptor: the request in flight ends here.
    #[inline(always)]
    pub fn close(&mut self, now: u64) -> Option<Finished> {
        let done = self.on_close(now);
        self.phase = phase::CLOSED;
        done
    }

    /// Whether this is a live connection, not a closed entry kept for reuse.
    #[inline(always)]
    pub fn is_open(&self) -> bool {
        self.phase != phase::CLOSED
    }

    /// The connection is gone at `now` (closed, fd reused, or its process
    /// exited): whatever was in flight ends here.
    #[inline(always)]
    pub fn on_close(&self, now: u64) -> Option<Finished> {
        match self.phase {
            phase::READING | phase::RESPONDING => Some(self.finished_at(now)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::method::{GET, OTHER, POST};

    fn head(bytes: &[u8]) -> ([u8; HEAD_LEN], usize) {
        let mut h = [0u8; HEAD_LEN];
        let n = bytes.len().min(HEAD_LEN);
        h[..n].copy_from_slice(&bytes[..n]);
        (h, n)
    }

    fn read(c: &mut Conn, now: u64, data: &[u8]) -> Option<Finished> {
        let (h, n) = head(data);
        c.on_read(now, data.len() as u64, &h, n)
    }

    fn write(c: &mut Conn, now: u64, data: &[u8]) -> Option<Finished> {
        let (h, n) = head(data);
        c.on_write(now, data.len() as u64, &h, n)
    }

    /// When a test's connection closes.
    const NOW: u64 = 10_000;
    const REQ: &[u8] = b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n";
    const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n";

    #[test]
    fn sync_worker_exchange() {
        // accept, recv, send headers, send body, shutdown, recv()=0 (not fed), close
        let mut c = Conn::default();
        assert_eq!(read(&mut c, 100, REQ), None);
        assert_eq!(write(&mut c, 150, OK), None);
        assert_eq!(write(&mut c, 160, b"hi"), None);
        let done = c.on_shutdown(1, NOW).expect("finished at shutdown");
        assert_eq!(
            done,
            Finished {
                method: GET,
                status: 200,
                duration_ns: 60,
                req_bytes: REQ.len() as u64,
                resp_bytes: OK.len() as u64 + 2,
                cause: 0
            }
        );
        assert_eq!(c.on_close(NOW), None, "counted once");
        assert_eq!(
            read(&mut c, 170, REQ),
            None,
            "reads after shutdown are ignored"
        );
        assert_eq!(c.on_close(NOW), None);
    }

    #[test]
    fn split_request_and_body() {
        let mut c = Conn::default();
        read(&mut c, 10, b"POST /echo HTTP/1.1\r\n");
        read(&mut c, 20, b"Content-Length: 10\r\n\r\n");
        read(&mut c, 30, b"01234");
        read(&mut c, 40, b"56789");
        write(&mut c, 50, OK);
        let done = c.on_close(NOW).unwrap();
        assert_eq!(done.method, POST);
        assert_eq!(done.duration_ns, 40);
        assert_eq!(done.req_bytes, 21 + 22 + 10);
    }

    #[test]
    fn keep_alive_finishes_at_next_request() {
        let mut c = Conn::default();
        read(&mut c, 0, REQ);
        write(&mut c, 5, OK);
        assert_eq!(read(&mut c, 1000, REQ).map(|f| f.duration_ns), Some(5));
        write(&mut c, 1007, OK);
        assert_eq!(c.on_close(NOW).map(|f| f.duration_ns), Some(7));
    }

    #[test]
    fn idle_wait_ends_the_response_at_once() {
        let mut c = Conn::default();
        assert_eq!(c.on_idle(), None, "no request yet");
        read(&mut c, 0, REQ);
        assert_eq!(
            c.on_idle(),
            None,
            "still reading: more request data may come"
        );
        write(&mut c, 5, OK);
        assert_eq!(
            c.on_idle().map(|f| (f.status, f.duration_ns)),
            Some((200, 5))
        );
        assert_eq!(c.on_idle(), None, "counted once");
        assert_eq!(c.on_close(NOW), None);
        read(&mut c, 100, REQ);
        write(&mut c, 103, OK);
        assert_eq!(
            c.on_close(NOW).map(|f| f.duration_ns),
            Some(3),
            "next request starts clean"
        );
    }

    #[test]
    fn pipelined_pair_is_two_requests() {
        let mut c = Conn::default();
        let two = [REQ, REQ].concat();
        read(&mut c, 0, &two);
        write(&mut c, 10, OK);
        write(&mut c, 11, b"hi");
        let first = write(&mut c, 20, OK).expect("second status line ends the first");
        assert_eq!(
            (first.status, first.duration_ns, first.req_bytes),
            (200, 11, two.len() as u64)
        );
        write(&mut c, 25, b"hi");
        let second = c.on_close(NOW).unwrap();
        assert_eq!(
            (
                second.method,
                second.status,
                second.duration_ns,
                second.req_bytes
            ),
            (GET, 200, 14, 0)
        );
    }

    #[test]
    fn chunked_and_sendfile_bodies() {
        let mut c = Conn::default();
        read(&mut c, 0, REQ);
        write(
            &mut c,
            1,
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        write(&mut c, 2, b"5\r\nhello\r\n");
        write(&mut c, 3, b"0\r\n\r\n");
        c.on_sendfile(9, 1000);
        let done = c.on_close(NOW).unwrap();
        assert_eq!(done.duration_ns, 9);
        assert_eq!(done.resp_bytes, 47 + 10 + 5 + 1000);
    }

    #[test]
    fn interim_continue_is_not_a_response() {
        let mut c = Conn::default();
        read(
            &mut c,
            0,
            b"POST /echo HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
        );
        assert_eq!(write(&mut c, 1, b"HTTP/1.1 100 Continue\r\n\r\n"), None);
        read(&mut c, 2, b"body");
        assert_eq!(write(&mut c, 3, OK), None);
        let done = c.on_close(NOW).unwrap();
        assert_eq!((done.status, done.duration_ns), (200, 3));
    }

    #[test]
    fn close_without_response_is_aborted() {
        let mut c = Conn::default();
        read(&mut c, 0, REQ);
        let done = c.on_close(NOW).unwrap();
        assert_eq!(
            (done.status, done.duration_ns, done.method),
            (ABORTED, NOW, GET),
            "in flight until the close"
        );
        assert_eq!(
            Conn::default().on_close(NOW),
            None,
            "idle connections are not requests"
        );
    }

    #[test]
    fn body_drained_after_response_stays_with_its_request() {
        let mut c = Conn::default();
        read(&mut c, 0, b"POST /early HTTP/1.1\r\n\r\n");
        write(&mut c, 1, b"HTTP/1.1 413 Too Large\r\n\r\n");
        assert_eq!(read(&mut c, 2, b"leftover body bytes"), None);
        let done = c.on_close(NOW).unwrap();
        assert_eq!((done.status, done.req_bytes), (413, 24 + 19));
    }

    #[test]
    fn garbage_request_is_other() {
        let mut c = Conn::default();
        read(&mut c, 0, b"\x16\x03\x01garbage");
        write(&mut c, 1, b"HTTP/1.1 400 Bad Request\r\n");
        assert_eq!(
            c.on_close(NOW).map(|f| (f.method, f.status)),
            Some((OTHER, 400))
        );
    }

    #[test]
    fn writes_before_a_request_are_ignored() {
        let mut c = Conn::default();
        assert_eq!(write(&mut c, 1, OK), None);
        assert_eq!(c, Conn::default());
        assert_eq!(c.on_close(NOW), None);
    }

    #[test]
    fn shutdown_read_side_only_is_not_the_end() {
        let mut c = Conn::default();
        read(&mut c, 0, REQ);
        write(&mut c, 1, OK);
        assert_eq!(c.on_shutdown(0, NOW), None);
        assert!(c.on_shutdown(2, NOW).is_some());
        assert_eq!(c.on_shutdown(2, NOW), None);
    }

    #[test]
    fn attach_mid_stream() {
        let mut c = Conn::reading(50, REQ.len() as u64, GET);
        write(&mut c, 80, OK);
        assert_eq!(c.on_close(NOW).map(|f| f.duration_ns), Some(30));
    }

    /// Whatever the sequence, every final status line is counted exactly once
    /// and no duration exceeds the span of the events fed.
    #[test]
    fn a_closed_entry_waits_for_the_descriptors_next_connection() {
        let mut c = Conn::default();
        read(&mut c, 100, REQ);
        write(&mut c, 150, OK);
        let done = c.close(NOW).expect("the response ends at close");
        assert_eq!((done.status, done.duration_ns), (200, 50));
        assert!(!c.is_open());
        // Nothing but a request line revives it: not a stray read or write,
        // not a shutdown (which would make it look open again).
        assert_eq!(read(&mut c, 200, b"\x16\x03\x01 tls"), None);
        assert_eq!(write(&mut c, 210, OK), None);
        assert_eq!(c.on_shutdown(1, 220), None);
        assert!(!c.is_open());
        assert_eq!(c.close(230), None);
        // accept returning the descriptor starts a clean connection.
        assert_eq!(c.on_accept(300), None);
        assert_eq!(c, Conn::default());
        assert!(c.is_open());
        c.close(310);
        assert_eq!(read(&mut c, 400, REQ), None);
        assert_eq!((c.phase, c.method, c.start_ns), (phase::READING, GET, 400));
    }

    #[test]
    fn accept_over_an_unclosed_connection_ends_its_request() {
        let mut c = Conn::default();
        read(&mut c, 100, REQ);
        let done = c
            .on_accept(NOW)
            .expect("in flight when the descriptor was reused");
        assert_eq!(done.status, ABORTED);
        assert_eq!(c, Conn::default());
    }

    #[test]
    fn every_response_counted_once_under_random_sequences() {
        let mut seed = 0x2545F4914F6CDD1Du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..2000 {
            let mut c = Conn::default();
            let (mut finals, mut counted, mut now) = (0u64, 0u64, 0u64);
            let count = |f: Option<Finished>, counted: &mut u64| {
                if let Some(f) = f {
                    assert!(f.duration_ns <= 1_000_000);
                    if f.status != ABORTED {
                        *counted += 1;
                    }
                }
            };
            for _ in 0..40 {
                now += next() % 100;
                let shut = c.phase == phase::SHUT;
                match next() % 7 {
                    0 => count(read(&mut c, now, REQ), &mut counted),
                    1 => count(read(&mut c, now, b"body"), &mut counted),
                    2 => {
                        let started = matches!(c.phase, phase::READING | phase::RESPONDING);
                        if started && !shut {
                            finals += 1;
                        }
                        count(write(&mut c, now, OK), &mut counted)
                    }
                    3 => count(write(&mut c, now, b"more"), &mut counted),
                    4 => count(c.on_shutdown(1, NOW), &mut counted),
                    5 => count(c.on_idle(), &mut counted),
                    _ => c.on_sendfile(now, 10),
                }
            }
            count(c.on_close(NOW), &mut counted);
            assert_eq!(finals, counted);
        }
    }
}
