//! The per-connection request state machine.
//!
//! The kernel keeps one [`Conn`] per server-side client socket of a worker,
//! keyed by (tgid, fd), and feeds it what it sees on that socket. Each call may
//! hand back a [`Finished`] request, which the kernel records. The rules:
//!
//! - A request starts at the *exit* of its first data-bearing read (a blocking
//!   read is entered long before data arrives): any bytes on a fresh
//!   connection, a request line (`METHOD SP target`) on a kept-alive one.
//! - A write starting with `HTTP/1.x NNN` (a final status) starts its
//!   response; interim 1xx lines belong to the response that follows.
//! - The response ends where its own framing says ([`crate::framing`]): the
//!   last `Content-Length` body byte, the last chunk, or the header block's
//!   end when it has no body. Only a response without such framing (a body
//!   delimited by the connection's end, or headers beyond the scanned bound)
//!   ends at the worker's signals: it reads the next request or finds none
//!   (EAGAIN), shuts the socket down or closes it.
//! - A connection that goes away with a request read but not answered, or
//!   with a response cut short of its framing, hands back a failure.
//!
//! So every final status line is counted exactly once, and a response is
//! complete (its worker no longer busy with it) exactly when its last byte is
//! written, whatever order a worker class interleaves its syscalls in.
//!
//! The state machine is generic over [`Env`]: the kernel provides the bytes
//! of the syscall, a scratch buffer and a word loop (`bpf_loop`), the host
//! tests a vector and a `for` loop; the logic is the same code.

use crate::{
    framing::{self, CARRY, HEADER_BOUND, Line, SCRATCH, SIZE_LINE, SizeLine, chunk, flag, kind},
    http::{self, HEAD_LEN},
};

/// Where a connection is.
pub mod phase {
    /// Accepted, nothing read yet: the first bytes start a request.
    pub const NEW: u8 = 0;
    /// Kept alive between requests: a request line starts the next one.
    /// Other bytes (the rest of a body the app did not read) wait as
    /// `req_bytes`: should a status line follow, they were a request after all.
    pub const IDLE: u8 = 1;
    /// Open before the exporter attached, found mid-stream: nothing is counted
    /// until a request line starts a request.
    pub const ATTACHED: u8 = 2;
    /// Request data read, no final status line yet.
    pub const READING: u8 = 3;
    /// The status line was written; the response's framing says when it ends.
    pub const RESPONDING: u8 = 4;
    /// Shut down for writing: nothing more will be answered on it.
    pub const SHUT: u8 = 5;
    /// Closed. The entry stays for the descriptor's next connection: resetting
    /// it then costs less than a delete now and an insert at the next accept.
    pub const CLOSED: u8 = 6;
    /// No longer HTTP (after 101 Switching Protocols or a CONNECT tunnel).
    pub const TUNNEL: u8 = 7;
    /// A socket of the worker that is not a server-side connection (one it
    /// connected out, to a database or a cache): ignored.
    pub const FOREIGN: u8 = 8;
}

/// Status of a request that ended without a response.
pub const ABORTED: u16 = 0;

/// One client connection's current exchange. `#[repr(C)]`: a map value.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Conn {
    /// The kernel socket (`struct sock *`) behind the descriptor, when known:
    /// a different one means the descriptor was reused.
    pub sk: u64,
    /// Exit of the request's first read.
    pub start_ns: u64,
    /// Time of the last response write (the request's end so far).
    pub last_write_ns: u64,
    pub req_bytes: u64,
    pub resp_bytes: u64,
    /// Body bytes still to come (`Content-Length`), or bytes of the current
    /// chunk and its CRLF (chunked); while headers are scanned, the
    /// `Content-Length` value seen so far.
    pub body_left: u64,
    /// [`crate::route`] key of the request's path (set by the kernel after
    /// the request's first read when routes are on; 0 otherwise).
    pub route: u64,
    /// The thread that read the request (exception records are tied to it).
    pub tid: u32,
    /// [`http::RequestLine::hash`] of the request line's start.
    pub target: u32,
    pub status: u16,
    /// Header bytes scanned so far, up to [`HEADER_BOUND`].
    pub hdr_seen: u16,
    pub method: u8,
    pub phase: u8,
    /// [`framing::kind`] of the response being written.
    pub framing: u8,
    /// [`framing::flag`] bits of the header scan.
    pub scan: u8,
    /// [`framing::chunk`] position in a chunked body.
    pub chunk: u8,
    /// Bytes that hash covered.
    pub target_len: u8,
    /// 0 for a response joined mid-way at attach: followed, not recorded.
    pub counted: u8,
    pub _pad: [u8; 5],
}

/// A request that ended, ready to be recorded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Finished {
    pub method: u8,
    /// Final status, or [`ABORTED`].
    pub status: u16,
    /// The response started but ended before its framing said it would.
    pub cut: bool,
    pub start_ns: u64,
    pub end_ns: u64,
    pub req_bytes: u64,
    pub resp_bytes: u64,
    pub tid: u32,
    pub target: u32,
    pub target_len: u8,
    /// [`crate::route`] key.
    pub route: u64,
}

impl Finished {
    pub fn duration_ns(&self) -> u64 {
        self.end_ns.saturating_sub(self.start_ns)
    }

    /// Not answered, answered with a 5xx, or cut short.
    pub fn failed(&self) -> bool {
        self.status == ABORTED || self.status >= 500 || self.cut
    }
}

/// One header window's scan: the state [`scan_word`] carries from word to word.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Window {
    /// Valid bytes in the scratch buffer.
    pub len: u64,
    /// Where [`scan_step`] looks for the next line's start.
    pub pos: u64,
    /// Index just past the empty line that ends the header block, or [`NONE`].
    pub end: u64,
    /// Start of the window's last line (after its last `\n`), or [`NONE`].
    pub tail: u64,
    /// `Content-Length` seen in this window.
    pub length: u64,
    /// Where the window's first and last `Content-Length` lines start, and
    /// its last `Transfer-Encoding` line ([`NONE`]: none): their values are
    /// read once the scan is over ([`read_values`]).
    pub length_at: u64,
    pub length_again_at: u64,
    pub encoding_at: u64,
    /// [`flag::LENGTH`], [`flag::CHUNKED`], [`flag::BAD`] seen in this window.
    pub flags: u64,
}

/// No index.
pub const NONE: u64 = u64::MAX;

/// A walk through the chunks of one write ([`Conn::chunk_step`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Walk {
    /// Where in the write the walk is.
    pub off: u64,
    /// The write's length.
    pub n: u64,
    /// [`walk`] outcome.
    pub outcome: u64,
}

/// Parts of a write's handling an [`Env`] may run apart ([`Env::defer`]).
pub mod stage {
    /// [`super::Conn::headers`] of the write's bytes.
    pub const HEADERS: u32 = 0;
    /// [`super::Conn::chunks`] from the deferred offset.
    pub const CHUNKS: u32 = 1;
    pub const COUNT: u32 = 2;
}

/// How a [`Walk`] ended.
pub mod walk {
    /// Still walking (if the steps run out here, more chunks than
    /// `CHUNKS_PER_WRITE` came in one write).
    pub const ON: u64 = 0;
    /// The last chunk ended: the response is complete.
    pub const COMPLETE: u64 = 1;
    /// The write ended inside the body: wait for the next one.
    pub const WAIT: u64 = 2;
    /// Not chunked as announced.
    pub const LOST: u64 = 3;
}

/// What the state machine needs from where it runs.
pub trait Env {
    /// `dst.len()` bytes at `off` of the data the current read or write moved.
    fn read(&mut self, off: u64, dst: &mut [u8; SIZE_LINE]) -> bool;
    /// Copies `len` bytes at `off` of that data into the scratch buffer at `at`.
    fn fill(&mut self, at: usize, off: u64, len: usize) -> bool;
    /// Moves a partial header line carried from the previous write to the
    /// scratch buffer's start; its length (0 if none).
    fn take_carry(&mut self) -> usize;
    /// Keeps scratch bytes `from..from + len` for the next write.
    fn put_carry(&mut self, from: usize, len: usize);
    /// Runs [`scan_step`] until it returns false, at most [`SCAN_STEPS`]
    /// times (after a [`scan_line`] at index 0 when `line_start`), then
    /// [`read_values`].
    fn scan(&mut self, win: &mut Window, line_start: bool);
    /// A response left [`kind::UNFRAMED`] (a self-metric).
    fn unframed(&mut self);
    /// The response of `conn` is complete ([`Conn::completed`]). A write
    /// hands its requests here rather than returning them: in the kernel, a
    /// value returned through the write's many paths made the compiler share
    /// stack slots between paths the verifier then walks apart, and a copy
    /// per path overflowed the 512-byte stack.
    fn finished(&mut self, conn: &Conn);
    /// `n` bytes written past the end of `conn`'s last response (the kernel
    /// adds them to its series' byte sum).
    fn late(&mut self, conn: &Conn, n: u64);
    /// Runs [`Conn::chunk_step`] until it returns false, at most
    /// [`framing::CHUNK_STEPS`] times.
    fn walk_chunks(&mut self, conn: &mut Conn, walk: &mut Walk);
    /// Whether a [`stage`] of this write, from byte `off`, runs later apart
    /// from the write's other paths (the kernel runs each in a program of
    /// its own, which the verifier checks once rather than once per way the
    /// write got there).
    fn defer(&mut self, stage: u32, off: u64) -> bool {
        let _ = (stage, off);
        false
    }
}

/// Scans the line starting at scratch index `s`: what it says about framing.
#[inline(always)]
pub fn scan_line(scratch: &[u8; SCRATCH], win: &mut Window, s: u64) {
    win.tail = s;
    if s >= win.len {
        return;
    }
    match framing::classify(scratch, s as usize, (win.len - s) as usize) {
        Line::End(n) => win.end = s + n as u64,
        Line::LengthHeader if win.length_at == NONE => win.length_at = s,
        Line::LengthHeader => win.length_again_at = s,
        Line::EncodingHeader => win.encoding_at = s,
        _ => {}
    }
}

/// Reads the values of the framing lines a scan found: the length (a second
/// `Content-Length` line leaves the response unframed) and whether it is
/// chunked.
#[inline(always)]
pub fn read_values(scratch: &[u8; SCRATCH], win: &mut Window) {
    let value = |at: u64| {
        if at == NONE || at >= win.len {
            return None;
        }
        match framing::content_length(scratch, at as usize, (win.len - at) as usize) {
            Line::Length(v) => Some(v),
            _ => None,
        }
    };
    if let Some(v) = value(win.length_at) {
        win.flags |= flag::LENGTH as u64;
        win.length = v;
    }
    // Servers send one Content-Length: two are not a framing to trust.
    if win.length_again_at != NONE {
        win.flags |= flag::BAD as u64;
    }
    let at = win.encoding_at;
    if at != NONE
        && at < win.len
        && framing::chunked_value(scratch, at as usize, (win.len - at) as usize) == Line::Chunked
    {
        win.flags |= flag::CHUNKED as u64;
    }
}

/// One step of a header window's scan: the next `\n` within a word from
/// `win.pos`, and the line after it. One line per step keeps each step
/// small (the kernel runs it under bpf_loop, whose callback the verifier
/// checks once). Returns false once the header block's end is found or the
/// window is done.
#[inline(always)]
pub fn scan_step(scratch: &[u8; SCRATCH], win: &mut Window) -> bool {
    let pos = win.pos;
    if pos >= win.len {
        return false;
    }
    let mut mask = framing::newlines(framing::load64(scratch, pos as usize));
    // Bytes past the window's end are stale.
    let valid = win.len - pos;
    if valid < 8 {
        mask &= (1u64 << (8 * valid)) - 1;
    }
    if mask == 0 {
        win.pos = pos + 8;
        return true;
    }
    let at = pos + framing::first_byte(mask) as u64;
    win.pos = at + 1;
    scan_line(scratch, win, at + 1);
    win.end == NONE
}

/// Steps a scan takes at most: one per word and one per line of a window.
pub const SCAN_STEPS: u32 = ((HEADER_BOUND + CARRY) / 8 + HEADER_BOUND / 2) as u32;

impl Conn {
    /// A fresh server-side connection on socket `sk`.
    pub fn new(sk: u64) -> Conn {
        Conn {
            sk,
            counted: 1,
            ..Conn::default()
        }
    }

    /// A connection found open at attach (socket not known yet).
    pub fn attached() -> Conn {
        Conn {
            phase: phase::ATTACHED,
            ..Conn::default()
        }
    }

    /// A socket that is not a server-side connection.
    pub fn foreign(sk: u64) -> Conn {
        Conn {
            sk,
            phase: phase::FOREIGN,
            ..Conn::default()
        }
    }

    fn begin(&mut self, now: u64, n: u64, tid: u32, line: Option<http::RequestLine>) {
        let (method, target, target_len) = match line {
            Some(l) => (l.method, l.hash, l.hashed),
            None => (http::method::OTHER, 0, 0),
        };
        *self = Conn {
            sk: self.sk,
            start_ns: now,
            last_write_ns: now,
            req_bytes: n,
            tid,
            target,
            target_len,
            method,
            phase: phase::READING,
            counted: 1,
            ..Conn::default()
        };
    }

    /// The request as it ends at `now` (not answered: it lasted until `now`).
    fn finished_at(&self, now: u64, cut: bool) -> Finished {
        let answered = self.phase == phase::RESPONDING;
        Finished {
            method: self.method,
            status: if answered { self.status } else { ABORTED },
            cut: answered && cut,
            start_ns: self.start_ns,
            end_ns: if answered { self.last_write_ns } else { now },
            req_bytes: self.req_bytes,
            resp_bytes: self.resp_bytes,
            tid: self.tid,
            target: self.target,
            target_len: self.target_len,
            route: self.route,
        }
    }

    /// The response is complete: hand it back (unless joined mid-way) and
    /// wait for the next request.
    fn complete(&mut self) -> Option<Finished> {
        let done = (self.counted != 0).then(|| self.completed());
        self.idle();
        done
    }

    /// The request whose response was just completed.
    #[inline(always)]
    pub fn completed(&self) -> Finished {
        self.finished_at(self.last_write_ns, false)
    }

    /// Kept alive: wait for the next request. The last response's method
    /// and status stay, for a pipelined follower and for bytes written past
    /// that response's end.
    #[inline(always)]
    fn idle(&mut self) {
        *self = Conn {
            sk: self.sk,
            last_write_ns: self.last_write_ns,
            route: self.route,
            method: self.method,
            status: self.status,
            phase: phase::IDLE,
            counted: 1,
            ..Conn::default()
        };
    }

    /// Whether the response's own framing (not a worker signal) ends it.
    fn framed(&self) -> bool {
        self.phase == phase::RESPONDING
            && matches!(self.framing, kind::HEADERS | kind::LENGTH | kind::CHUNKED)
    }

    /// A read that returned `n > 0` bytes starting with `head[..len]`.
    #[inline(always)]
    pub fn on_read(
        &mut self,
        now: u64,
        tid: u32,
        n: u64,
        head: &[u8; HEAD_LEN],
        len: usize,
    ) -> Option<Finished> {
        let line = http::request_line(head, len);
        match (self.phase, line) {
            (phase::NEW, _) => {
                self.begin(now, n, tid, line);
                None
            }
            (phase::IDLE | phase::ATTACHED, Some(_)) => {
                self.begin(now, n, tid, line);
                None
            }
            (phase::IDLE, None) => {
                if self.req_bytes == 0 {
                    self.start_ns = now;
                    self.tid = tid;
                }
                self.req_bytes += n;
                None
            }
            (phase::READING, _) => {
                self.req_bytes += n;
                None
            }
            // The next request on a keep-alive connection whose response had
            // no framing: that response ended with its last write.
            (phase::RESPONDING, Some(_)) if !self.framed() => {
                let done = self.complete();
                self.begin(now, n, tid, line);
                done
            }
            // The rest of a body the app did not read, drained by the server
            // while it answers (or a pipelined request read ahead).
            (phase::RESPONDING, _) => {
                self.req_bytes += n;
                None
            }
            _ => None,
        }
    }

    /// A read that found nothing (EAGAIN): the worker waits for the next
    /// request, so an unframed response is complete.
    #[inline(always)]
    pub fn on_idle(&mut self) -> Option<Finished> {
        if self.phase == phase::RESPONDING && !self.framed() {
            return self.complete();
        }
        None
    }

    /// A read that returned 0: the client closed its side. Nothing more can be
    /// asked on this connection; the worker will close it.
    #[inline(always)]
    pub fn on_eof(&mut self) -> Option<Finished> {
        match self.phase {
            phase::RESPONDING if !self.framed() => {
                let done = self.complete();
                self.phase = phase::CLOSED;
                done
            }
            // The server may still answer a request whose client half-closed.
            phase::READING | phase::RESPONDING => None,
            phase::FOREIGN | phase::TUNNEL => None,
            _ => {
                self.phase = phase::CLOSED;
                None
            }
        }
    }

    /// A write that sent `n > 0` bytes; `env` reads them.
    #[inline(always)]
    pub fn on_write(&mut self, now: u64, n: u64, env: &mut impl Env) {
        match self.phase {
            phase::READING | phase::IDLE | phase::ATTACHED => {
                if !self.status_line(n, env) {
                    // Past the end of a response its framing announced (a
                    // body sent for HEAD, as gunicorn 23 does, or longer than
                    // its Content-Length): bytes of that response still.
                    if self.phase == phase::IDLE && self.req_bytes == 0 && self.status != 0 {
                        env.late(self, n);
                    }
                    return;
                }
            }
            phase::RESPONDING => {
                if !self.framed() && starts_final_status(n, env) {
                    // Pipelining: a second status line ends an unframed response.
                    self.finish(env);
                    if !self.status_line(n, env) {
                        return;
                    }
                }
            }
            _ => return,
        }
        self.resp_bytes += n;
        self.last_write_ns = now;
        // Read back from the map: the verifier then follows one dispatch,
        // not one per value the paths above left in a register.
        // SAFETY: a field of self.
        let framing = unsafe { core::ptr::read_volatile(&self.framing) };
        match framing {
            kind::LENGTH => self.body(n, env),
            kind::HEADERS => {
                if !env.defer(stage::HEADERS, 0) {
                    self.headers(n, env)
                }
            }
            kind::CHUNKED => {
                if !env.defer(stage::CHUNKS, 0) {
                    self.chunks(0, n, env)
                }
            }
            _ => {}
        }
    }

    /// The response is complete: hand it to `env` (which reads it off the
    /// connection, [`Conn::completed`], so no copy of it is made here).
    #[inline(always)]
    fn finish(&mut self, env: &mut impl Env) {
        if self.counted != 0 {
            env.finished(self);
        }
        self.idle();
    }

    /// A write while no response is under way: whether it starts one with a
    /// status line (then the response's header block is to be scanned).
    #[inline(always)]
    fn status_line(&mut self, n: u64, env: &mut impl Env) -> bool {
        let mut head = [0u8; SIZE_LINE];
        if !env.read(0, &mut head) {
            return false;
        }
        let Some(status) = http::response_status(&head, n.min(SIZE_LINE as u64) as usize) else {
            return false;
        };
        if http::is_interim(status) {
            if self.phase == phase::READING {
                self.resp_bytes += n;
            }
            return false;
        }
        match self.phase {
            phase::READING => {}
            phase::ATTACHED => self.counted = 0,
            // Kept alive: either bytes that were a request after all (a
            // request line split inside its method), or a pipelined request
            // read with the previous one, which started when that one ended.
            _ => {
                if self.req_bytes == 0 {
                    self.start_ns = self.last_write_ns;
                } else {
                    self.method = http::method::OTHER;
                }
                self.counted = 1;
            }
        }
        self.phase = phase::RESPONDING;
        self.status = status;
        self.framing = kind::HEADERS;
        self.scan = if framing::has_body(self.method, status) {
            0
        } else {
            flag::NO_BODY
        } | if framing::is_tunnel(self.method, status) {
            flag::TUNNEL
        } else {
            0
        };
        true
    }

    /// The `n` bytes of this write belong to the header block.
    #[inline(always)]
    pub fn headers(&mut self, n: u64, env: &mut impl Env) {
        let carried = if self.scan & flag::CARRY != 0 {
            env.take_carry()
        } else {
            0
        };
        let budget = HEADER_BOUND as u64 - (self.hdr_seen as u64).min(HEADER_BOUND as u64);
        let take = n.min(budget);
        if !env.fill(carried, 0, take as usize) {
            return self.unframe(env);
        }
        let mut win = Window {
            len: carried as u64 + take,
            end: NONE,
            tail: NONE,
            length_at: NONE,
            length_again_at: NONE,
            encoding_at: NONE,
            ..Window::default()
        };
        let line_start = self.scan & (flag::LINE_START | flag::CARRY) != 0;
        if line_start {
            win.tail = 0;
        }
        env.scan(&mut win, line_start);
        if win.end == NONE && win.pos < win.len {
            // The steps ran out before the window did (a pathological block).
            return self.unframe(env);
        }
        if win.flags & flag::LENGTH as u64 != 0 {
            if self.scan & flag::LENGTH != 0 && self.body_left != win.length {
                win.flags |= flag::BAD as u64;
            }
            self.body_left = win.length;
        }
        self.scan |= (win.flags & (flag::LENGTH | flag::CHUNKED | flag::BAD) as u64) as u8;
        self.scan &= !(flag::LINE_START | flag::CARRY | flag::SKIP);
        if win.end == NONE {
            self.hdr_seen += take as u16;
            if take < n || self.hdr_seen as usize >= HEADER_BOUND {
                return self.unframe(env);
            }
            // The window ended inside a line (or right after one).
            if win.tail == win.len {
                self.scan |= flag::LINE_START;
            } else if win.tail != NONE && win.len - win.tail <= CARRY as u64 {
                env.put_carry(win.tail as usize, (win.len - win.tail) as usize);
                self.scan |= flag::CARRY;
            } else {
                self.scan |= flag::SKIP;
            }
            return;
        }
        // The header block ends in this write, at `end - carried` of its bytes.
        let body_from = win.end - carried as u64;
        self.hdr_seen += body_from as u16;
        if self.scan & flag::TUNNEL != 0 {
            self.finish(env);
            self.phase = phase::TUNNEL;
            return;
        }
        if self.scan & flag::NO_BODY != 0 {
            return self.finish(env);
        }
        if self.scan & flag::BAD != 0 {
            return self.unframe(env);
        }
        if self.scan & flag::CHUNKED != 0 {
            self.framing = kind::CHUNKED;
            self.chunk = chunk::SIZE;
            self.body_left = 0;
            if !env.defer(stage::CHUNKS, body_from) {
                self.chunks(body_from, n, env);
            }
            return;
        }
        if self.scan & flag::LENGTH != 0 {
            self.framing = kind::LENGTH;
            return self.body(n - body_from, env);
        }
        self.framing = kind::CLOSE;
    }

    /// `n` bytes of a `Content-Length` body.
    #[inline(always)]
    fn body(&mut self, n: u64, env: &mut impl Env) {
        self.body_left -= n.min(self.body_left);
        if self.body_left == 0 {
            self.finish(env);
        }
    }

    /// Bytes `off..n` of this write belong to a chunked body.
    #[inline(always)]
    pub fn chunks(&mut self, off: u64, n: u64, env: &mut impl Env) {
        let mut walk = Walk {
            off,
            n,
            outcome: walk::ON,
        };
        env.walk_chunks(self, &mut walk);
        match walk.outcome {
            walk::COMPLETE => self.finish(env),
            walk::WAIT => {}
            // Lost, or more chunks in one write than walked.
            _ => self.unframe(env),
        }
    }

    /// One step through a chunked body: the current chunk's data, or one
    /// chunk-size line. Returns false once the walk is over (its outcome set).
    #[inline(always)]
    pub fn chunk_step(&mut self, walk: &mut Walk, env: &mut impl Env) -> bool {
        if self.chunk == chunk::DATA {
            let take = (walk.n - walk.off).min(self.body_left);
            self.body_left -= take;
            walk.off += take;
            if self.body_left > 0 {
                walk.outcome = walk::WAIT;
                return false;
            }
            self.chunk = chunk::SIZE;
        }
        if walk.off >= walk.n {
            walk.outcome = walk::WAIT;
            return false;
        }
        let mut line = [0u8; SIZE_LINE];
        if !env.read(walk.off, &mut line) {
            walk.outcome = walk::LOST;
            return false;
        }
        let avail = (walk.n - walk.off).min(SIZE_LINE as u64) as usize;
        if self.chunk == chunk::LAST {
            // The final CRLF; trailer fields are not followed.
            walk.outcome = if avail >= 2 && line[0] == b'\r' && line[1] == b'\n' {
                walk::COMPLETE
            } else {
                walk::LOST
            };
            return false;
        }
        match framing::size_line(&line, avail) {
            SizeLine::Size { size, len } => {
                walk.off += len as u64;
                if size == 0 {
                    self.chunk = chunk::LAST;
                } else {
                    self.body_left = size + 2;
                    self.chunk = chunk::DATA;
                }
                true
            }
            SizeLine::Partial | SizeLine::Bad => {
                walk.outcome = walk::LOST;
                false
            }
        }
    }

    /// The framing was lost: the worker's signals end this response.
    fn unframe(&mut self, env: &mut impl Env) {
        self.lose_framing();
        env.unframed();
    }

    /// The response's framing is not followed (the caller counts it).
    #[inline(always)]
    pub fn lose_framing(&mut self) {
        self.framing = kind::UNFRAMED;
    }

    /// sendfile(2) of `n > 0` bytes: always response body.
    #[inline(always)]
    pub fn on_sendfile(&mut self, now: u64, n: u64) -> Option<Finished> {
        if self.phase != phase::RESPONDING {
            return None;
        }
        self.resp_bytes += n;
        self.last_write_ns = now;
        if self.framing == kind::LENGTH {
            self.body_left -= n.min(self.body_left);
            if self.body_left == 0 {
                return self.complete();
            }
        }
        None
    }

    /// shutdown(2) with `how`; SHUT_WR or SHUT_RDWR end the exchange.
    #[inline(always)]
    pub fn on_shutdown(&mut self, how: u64, now: u64) -> Option<Finished> {
        const SHUT_RD: u64 = 0;
        if how == SHUT_RD || self.phase >= phase::SHUT {
            return None;
        }
        let done = self.ended(now);
        self.phase = phase::SHUT;
        done
    }

    /// The descriptor now holds another connection, on socket `sk` (accept
    /// returned it, or I/O showed a new socket): whatever was open ended.
    #[inline(always)]
    pub fn on_accept(&mut self, now: u64, sk: u64) -> Option<Finished> {
        let done = self.ended(now);
        *self = Conn::new(sk);
        done
    }

    /// close(2) of the descriptor: the request in flight ends here.
    #[inline(always)]
    pub fn close(&mut self, now: u64) -> Option<Finished> {
        let done = self.ended(now);
        if self.phase != phase::FOREIGN {
            self.phase = phase::CLOSED;
        }
        done
    }

    /// Whether this is a live client connection (not a closed entry kept for
    /// reuse, nor a foreign socket).
    #[inline(always)]
    pub fn is_open(&self) -> bool {
        self.phase != phase::CLOSED && self.phase != phase::FOREIGN
    }

    /// Whether a request is in flight: read, response not complete.
    #[inline(always)]
    pub fn busy(&self) -> bool {
        self.counted != 0 && matches!(self.phase, phase::READING | phase::RESPONDING)
    }

    /// The connection is gone at `now` (closed, descriptor reused, or its
    /// process exited): a response without framing ends complete, one cut
    /// short of its framing and a request never answered end failed.
    #[inline(always)]
    pub fn ended(&self, now: u64) -> Option<Finished> {
        match self.phase {
            phase::READING => Some(self.finished_at(now, false)),
            phase::RESPONDING if self.counted != 0 => Some(self.finished_at(now, self.framed())),
            _ => None,
        }
    }
}

/// Whether the `n` bytes written start with a final status line.
#[inline(always)]
fn starts_final_status(n: u64, env: &mut impl Env) -> bool {
    let mut head = [0u8; SIZE_LINE];
    env.read(0, &mut head)
        && matches!(http::response_status(&head, n.min(SIZE_LINE as u64) as usize), Some(s) if !http::is_interim(s))
}

/// A host-side [`Env`] over a byte vector, for the tests (and userspace).
#[cfg(test)]
pub mod host {
    use super::*;

    pub struct HostEnv {
        pub data: Vec<u8>,
        pub scratch: Box<[u8; SCRATCH]>,
        pub carry: Vec<u8>,
        pub unframed: u32,
        pub finished: Vec<Finished>,
        pub late: u64,
    }

    impl HostEnv {
        pub fn new() -> HostEnv {
            HostEnv {
                data: Vec::new(),
                scratch: Box::new([0; SCRATCH]),
                carry: Vec::new(),
                unframed: 0,
                finished: Vec::new(),
                late: 0,
            }
        }
    }

    impl Env for HostEnv {
        fn read(&mut self, off: u64, dst: &mut [u8; SIZE_LINE]) -> bool {
            let off = off as usize;
            if off > self.data.len() {
                return false;
            }
            *dst = [0xEE; SIZE_LINE];
            let n = (self.data.len() - off).min(SIZE_LINE);
            dst[..n].copy_from_slice(&self.data[off..off + n]);
            true
        }

        fn fill(&mut self, at: usize, off: u64, len: usize) -> bool {
            let off = off as usize;
            if off + len > self.data.len() {
                return false;
            }
            // Stale bytes after the window must not matter.
            self.scratch[at..].fill(0xEE);
            self.scratch[at..at + len].copy_from_slice(&self.data[off..off + len]);
            true
        }

        fn take_carry(&mut self) -> usize {
            let n = self.carry.len();
            self.scratch[..n].copy_from_slice(&self.carry);
            self.carry.clear();
            n
        }

        fn put_carry(&mut self, from: usize, len: usize) {
            self.carry = self.scratch[from..from + len].to_vec();
        }

        fn scan(&mut self, win: &mut Window, line_start: bool) {
            if line_start {
                scan_line(&self.scratch, win, 0);
            }
            let mut steps = 0;
            while win.end == NONE && steps < SCAN_STEPS && scan_step(&self.scratch, win) {
                steps += 1;
            }
            read_values(&self.scratch, win);
        }

        fn unframed(&mut self) {
            self.unframed += 1;
        }

        fn finished(&mut self, conn: &Conn) {
            self.finished.push(conn.completed());
        }

        fn late(&mut self, _conn: &Conn, n: u64) {
            self.late += n;
        }

        fn walk_chunks(&mut self, conn: &mut Conn, walk: &mut Walk) {
            let mut steps = 0;
            while steps < framing::CHUNK_STEPS && conn.chunk_step(walk, self) {
                steps += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{host::HostEnv, *};
    use crate::http::method::{GET, HEAD, OTHER, POST};

    /// A connection and the environment feeding it, like the kernel does.
    struct Wire {
        c: Conn,
        env: HostEnv,
        done: Vec<Finished>,
    }

    fn head(bytes: &[u8]) -> ([u8; HEAD_LEN], usize) {
        let mut h = [0u8; HEAD_LEN];
        let n = bytes.len().min(HEAD_LEN);
        h[..n].copy_from_slice(&bytes[..n]);
        (h, n)
    }

    impl Wire {
        fn new() -> Wire {
            Wire {
                c: Conn::new(1),
                env: HostEnv::new(),
                done: Vec::new(),
            }
        }

        fn keep(&mut self, f: Option<Finished>) -> Option<Finished> {
            self.done.extend(f);
            f
        }

        fn read(&mut self, now: u64, data: &[u8]) -> Option<Finished> {
            let (h, n) = head(data);
            let f = self.c.on_read(now, 7, data.len() as u64, &h, n);
            self.keep(f)
        }

        /// The last request the write finished (all are kept in `done`).
        fn write(&mut self, now: u64, data: &[u8]) -> Option<Finished> {
            self.env.data = data.to_vec();
            self.c.on_write(now, data.len() as u64, &mut self.env);
            let finished: Vec<Finished> = self.env.finished.drain(..).collect();
            self.done.extend(&finished);
            finished.last().copied()
        }

        fn statuses(&self) -> Vec<u16> {
            self.done.iter().map(|f| f.status).collect()
        }
    }

    const NOW: u64 = 10_000;
    const REQ: &[u8] = b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n";
    const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n";

    #[test]
    fn sync_worker_exchange_ends_at_its_last_body_byte() {
        let mut w = Wire::new();
        assert_eq!(w.read(100, REQ), None);
        assert_eq!(w.write(150, OK), None);
        assert!(w.c.busy());
        let done = w.write(160, b"hi").expect("complete at the last body byte");
        assert_eq!(
            done,
            Finished {
                method: GET,
                status: 200,
                cut: false,
                start_ns: 100,
                end_ns: 160,
                req_bytes: REQ.len() as u64,
                resp_bytes: OK.len() as u64 + 2,
                tid: 7,
                target: http::line_hash(b"GET /ok", 7),
                target_len: 7,
                route: 0,
            }
        );
        assert!(!w.c.busy());
        assert_eq!(w.c.on_shutdown(1, NOW), None, "counted once");
        assert_eq!(w.c.close(NOW), None);
        assert_eq!(w.statuses(), [200]);
    }

    #[test]
    fn headers_and_body_in_one_write() {
        let mut w = Wire::new();
        w.read(0, REQ);
        assert!(
            w.write(5, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi")
                .is_some()
        );
        assert_eq!(w.c.phase, phase::IDLE);
    }

    #[test]
    fn keep_alive_requests_are_timely() {
        let mut w = Wire::new();
        w.read(0, REQ);
        w.write(3, OK);
        assert_eq!(w.write(5, b"hi").map(|f| f.duration_ns()), Some(5));
        assert!(!w.c.busy(), "idle between requests");
        w.read(1000, REQ);
        w.write(1002, OK);
        assert_eq!(w.write(1007, b"hi").map(|f| f.duration_ns()), Some(7));
        assert_eq!(w.c.close(NOW), None);
    }

    #[test]
    fn big_body_in_many_writes() {
        let mut w = Wire::new();
        w.read(0, REQ);
        w.write(1, b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n");
        for i in 0..99 {
            assert_eq!(w.write(2 + i, &[b'x'; 1000]), None);
        }
        // An EAGAIN (gevent waiting for the socket to drain) is no end.
        assert_eq!(w.c.on_idle(), None);
        let done = w.write(500, &[b'x'; 1000]).expect("the last byte");
        assert_eq!((done.end_ns, done.resp_bytes), (500, 43 + 100_000));
    }

    #[test]
    fn sendfile_body() {
        let mut w = Wire::new();
        w.read(0, REQ);
        w.write(1, b"HTTP/1.1 200 OK\r\nContent-Length: 262144\r\n\r\n");
        assert_eq!(w.c.on_sendfile(5, 200_000), None);
        let done = w.c.on_sendfile(9, 62_144).expect("complete");
        assert_eq!(done.end_ns, 9);
    }

    #[test]
    fn chunked_gunicorn_style() {
        let mut w = Wire::new();
        w.read(0, REQ);
        w.write(1, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
        for i in 0..5 {
            assert_eq!(w.write(2 + i, b"8\r\nchunk-0\n\r\n"), None);
        }
        let done = w.write(9, b"0\r\n\r\n").expect("terminator");
        assert_eq!((done.status, done.end_ns), (200, 9));
    }

    #[test]
    fn chunked_coalesced_and_split() {
        // Several chunks in one write, a chunk split across writes, data that
        // looks like a terminator.
        let mut w = Wire::new();
        w.read(0, REQ);
        let mut all = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        all.extend(b"3\r\nabc\r\n5\r\n0\r\n\r\n\r\n");
        assert_eq!(w.write(1, &all), None, "data \"0\\r\\n\\r\\n\" is no end");
        assert_eq!(w.write(2, b"a\r\n01234"), None);
        assert_eq!(w.write(3, b"56789\r"), None);
        assert_eq!(w.write(4, b"\n0\r\n"), None);
        assert!(w.write(5, b"\r\n").is_some());
    }

    #[test]
    fn chunked_in_headers_write() {
        let mut w = Wire::new();
        w.read(0, REQ);
        let r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n";
        assert!(w.write(1, r).is_some());
    }

    #[test]
    fn no_body_responses_end_with_their_headers() {
        for (req, resp) in [
            (
                &b"HEAD / HTTP/1.1\r\n\r\n"[..],
                &b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n"[..],
            ),
            (REQ, b"HTTP/1.1 204 No Content\r\n\r\n"),
            (
                REQ,
                b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n",
            ),
        ] {
            let mut w = Wire::new();
            w.read(0, req);
            assert!(
                w.write(1, resp).is_some(),
                "{:?}",
                String::from_utf8_lossy(resp)
            );
        }
        let mut w = Wire::new();
        w.read(0, b"HEAD / HTTP/1.1\r\n\r\n");
        assert_eq!(w.write(1, OK).map(|f| f.method), Some(HEAD));
        // gunicorn 23 sends the body of a HEAD response anyway.
        assert_eq!(w.write(2, b"hi"), None);
        assert_eq!(w.env.late, 2, "counted as that response's bytes");
        assert!(!w.c.busy());
    }

    #[test]
    fn close_delimited_body_ends_at_shutdown_or_close() {
        let mut w = Wire::new();
        w.read(0, REQ);
        w.write(1, b"HTTP/1.0 200 OK\r\nConnection: close\r\n\r\n");
        w.write(2, b"body");
        assert!(w.c.busy());
        let done = w.c.on_shutdown(1, NOW).expect("ends at shutdown");
        assert_eq!((done.end_ns, done.cut), (2, false));
    }

    #[test]
    fn cut_short_responses_fail() {
        let mut w = Wire::new();
        w.read(0, REQ);
        w.write(1, b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc");
        let done = w.c.close(NOW).expect("ended");
        assert!(done.cut && done.failed());
        assert_eq!((done.status, done.end_ns), (200, 1));
        // A chunked response without its last chunk.
        let mut w = Wire::new();
        w.read(0, REQ);
        w.write(1, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
        w.write(2, b"5\r\nhello\r\n");
        assert!(w.c.close(NOW).unwrap().cut);
    }

    #[test]
    fn headers_across_writes_and_kilobytes_in() {
        let mut w = Wire::new();
        w.read(0, REQ);
        let cookie = format!("Set-Cookie: {}\r\n", "c".repeat(1500));
        w.write(1, b"HTTP/1.1 200 OK\r\nServer: x\r\n");
        w.write(2, cookie.as_bytes());
        // A line split inside its name, then its value split too.
        w.write(3, b"Conte");
        w.write(4, b"nt-Length: 1");
        w.write(5, b"2\r\n");
        assert_eq!(w.write(6, b"\r\n"), None);
        assert_eq!(w.c.framing, kind::LENGTH);
        assert_eq!(w.c.body_left, 12);
        assert!(w.write(7, b"0123456789ab").is_some());
        assert_eq!(w.env.unframed, 0);
    }

    #[test]
    fn long_line_split_and_blank_line_split() {
        let mut w = Wire::new();
        w.read(0, REQ);
        let long = format!("HTTP/1.1 200 OK\r\nX-Long: {}", "l".repeat(300));
        w.write(1, long.as_bytes());
        w.write(2, b"still long\r\nContent-Length: 1\r\n\r");
        assert_eq!(w.c.framing, kind::HEADERS);
        assert_eq!(w.write(3, b"\n"), None);
        assert_eq!(w.c.framing, kind::LENGTH);
        assert!(w.write(4, b"!").is_some());
    }

    #[test]
    fn headers_beyond_the_bound_are_unframed_and_end_by_signals() {
        let mut w = Wire::new();
        w.read(0, REQ);
        let huge = format!(
            "HTTP/1.1 200 OK\r\nX-Big: {}\r\nContent-Length: 2\r\n\r\nhi",
            "b".repeat(3000)
        );
        assert_eq!(w.write(1, huge.as_bytes()), None);
        assert_eq!(w.c.framing, kind::UNFRAMED);
        assert!(w.c.busy());
        let done = w.c.on_idle().expect("EAGAIN ends it");
        assert_eq!((done.status, done.cut), (200, false));
    }

    #[test]
    fn conflicting_lengths_are_unframed() {
        let mut w = Wire::new();
        w.read(0, REQ);
        w.write(
            1,
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nhi",
        );
        assert_eq!(w.c.framing, kind::UNFRAMED);
    }

    #[test]
    fn interim_and_upgrade() {
        let mut w = Wire::new();
        w.read(0, b"POST /echo HTTP/1.1\r\nExpect: 100-continue\r\n\r\n");
        assert_eq!(w.write(1, b"HTTP/1.1 100 Continue\r\n\r\n"), None);
        w.read(2, b"body");
        assert!(w.write(3, OK).is_none());
        let done = w.write(4, b"hi").unwrap();
        assert_eq!(
            (done.status, done.duration_ns(), done.method),
            (200, 4, POST)
        );

        let mut w = Wire::new();
        w.read(0, b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n");
        let done = w
            .write(
                1,
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
            )
            .expect("101 counted at once");
        assert_eq!(done.status, 101);
        assert_eq!(w.c.phase, phase::TUNNEL);
        assert!(!w.c.busy());
        assert_eq!(w.read(2, b"\x81\x05hello"), None);
        assert_eq!(
            w.write(3, b"HTTP/1.1 200 OK\r\n\r\n"),
            None,
            "frames, not HTTP"
        );
        assert_eq!(w.c.close(NOW), None, "no phantom abort");
    }

    #[test]
    fn drained_body_after_response_is_no_request() {
        let mut w = Wire::new();
        w.read(0, b"POST /early HTTP/1.1\r\nContent-Length: 100\r\n\r\n");
        assert!(
            w.write(1, b"HTTP/1.1 413 Too Large\r\nContent-Length: 0\r\n\r\n")
                .is_some()
        );
        assert_eq!(w.read(2, &[b'x'; 100]), None);
        assert_eq!(w.c.on_idle(), None, "EAGAIN after the drain");
        assert!(!w.c.busy());
        assert_eq!(w.c.close(NOW), None, "no phantom");
        assert_eq!(w.statuses(), [413]);
    }

    #[test]
    fn pipelined_pair_is_two_requests() {
        let mut w = Wire::new();
        let two = [REQ, REQ].concat();
        w.read(0, &two);
        w.write(10, OK);
        assert_eq!(
            w.write(11, b"hi").map(|f| (f.status, f.req_bytes)),
            Some((200, two.len() as u64))
        );
        w.write(20, OK);
        let second = w.write(25, b"hi").expect("second response");
        assert_eq!(
            (
                second.method,
                second.start_ns,
                second.end_ns,
                second.req_bytes
            ),
            (GET, 11, 25, 0)
        );
    }

    #[test]
    fn split_method_on_keep_alive_still_counts() {
        let mut w = Wire::new();
        w.read(0, REQ);
        w.write(1, OK);
        w.write(2, b"hi");
        w.read(50, b"GET");
        w.read(51, b" /ok HTTP/1.1\r\n\r\n");
        w.write(52, OK);
        let f = w.write(53, b"hi").expect("counted");
        assert_eq!((f.method, f.start_ns), (OTHER, 50));
    }

    #[test]
    fn unframed_keep_alive_ends_at_next_request() {
        let mut w = Wire::new();
        w.read(0, REQ);
        let huge = format!("HTTP/1.1 200 OK\r\nX: {}\r\n\r\n", "b".repeat(3000));
        w.write(1, huge.as_bytes());
        let done = w.read(100, REQ).expect("previous ends");
        assert_eq!(done.end_ns, 1);
        assert_eq!(w.c.phase, phase::READING);
    }

    #[test]
    fn close_without_response_is_aborted() {
        let mut w = Wire::new();
        w.read(0, REQ);
        let done = w.c.close(NOW).unwrap();
        assert_eq!(
            (done.status, done.duration_ns(), done.method),
            (ABORTED, NOW, GET)
        );
        assert!(done.failed());
        assert_eq!(
            Conn::new(1).close(NOW),
            None,
            "idle connections are not requests"
        );
    }

    #[test]
    fn garbage_first_bytes_are_other() {
        let mut w = Wire::new();
        w.read(0, b"\x16\x03\x01garbage");
        assert_eq!(
            w.write(1, b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                .map(|f| (f.method, f.status)),
            Some((OTHER, 400))
        );
    }

    #[test]
    fn attached_mid_stream_counts_from_the_next_request_line() {
        let mut w = Wire::new();
        w.c = Conn::attached();
        assert_eq!(w.read(0, b"the middle of a body"), None);
        assert_eq!(w.write(1, OK), None);
        assert!(!w.c.busy(), "joined mid-way: not counted");
        assert_eq!(w.write(2, b"hi"), None, "not recorded");
        assert_eq!(w.c.phase, phase::IDLE);
        w.read(10, REQ);
        w.write(11, OK);
        assert_eq!(w.write(12, b"hi").map(|f| f.duration_ns()), Some(2));
    }

    #[test]
    fn eof_closes_and_foreign_sockets_are_ignored() {
        let mut w = Wire::new();
        w.read(0, REQ);
        w.write(1, OK);
        w.write(2, b"hi");
        assert_eq!(w.c.on_shutdown(1, 3), None);
        assert_eq!(w.c.on_eof(), None);
        assert!(!w.c.is_open());
        let mut f = Wire::new();
        f.c = Conn::foreign(9);
        assert_eq!(f.read(0, b"VALUE key 0 5\r\nhello\r\nEND\r\n"), None);
        assert_eq!(f.write(1, b"get key\r\n"), None);
        assert_eq!(f.c.close(2), None);
        assert!(!f.c.is_open());
        assert!(!f.c.busy());
    }

    #[test]
    fn accept_over_an_unclosed_connection_ends_its_request() {
        let mut w = Wire::new();
        w.read(100, REQ);
        let done =
            w.c.on_accept(NOW, 2)
                .expect("in flight when the descriptor was reused");
        assert_eq!(done.status, ABORTED);
        assert_eq!(w.c, Conn::new(2));
    }

    /// Whatever the sequence, every final status line of a counted exchange
    /// is handed back exactly once, and nothing ends twice.
    #[test]
    fn every_response_counted_once_under_random_sequences() {
        let mut seed = 0x2545F4914F6CDD1Du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..3000 {
            let mut w = Wire::new();
            let (mut finals, mut now) = (0u64, 0u64);
            for _ in 0..40 {
                now += next() % 100;
                let before = w.c.phase;
                let answerable = matches!(before, phase::READING | phase::IDLE) && w.c.counted != 0;
                match next() % 9 {
                    0 => drop(w.read(now, REQ)),
                    1 => drop(w.read(now, b"body")),
                    2 => {
                        let responding_unframed = before == phase::RESPONDING && !w.c.framed();
                        if answerable || responding_unframed {
                            finals += 1;
                        }
                        w.write(now, b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n");
                    }
                    3 => drop(w.write(now, b"more")),
                    4 => {
                        let f = w.c.on_shutdown(1, now);
                        w.keep(f);
                    }
                    5 => {
                        let f = w.c.on_idle();
                        w.keep(f);
                    }
                    6 => {
                        let f = w.c.on_sendfile(now, 3);
                        w.keep(f);
                    }
                    7 => {
                        let responding_unframed = before == phase::RESPONDING && !w.c.framed();
                        if answerable || responding_unframed {
                            finals += 1;
                        }
                        w.write(now, b"HTTP/1.1 200 OK\r\n\r\n");
                    }
                    _ => {
                        let f = w.c.on_eof();
                        w.keep(f);
                    }
                }
            }
            let f = w.c.close(NOW);
            w.keep(f);
            let answered = w.done.iter().filter(|f| f.status != ABORTED).count() as u64;
            assert_eq!(finals, answered, "{:?}", w.done);
            assert!(w.done.iter().all(|f| f.end_ns >= f.start_ns));
        }
    }
}
