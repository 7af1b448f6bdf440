//! Client connections: the glue between whatever hook saw a socket's I/O
//! (a socket tracepoint or a syscall's exit) and the shared state machine
//! (`exporter_ebpf::request`), which it runs with the syscall's own bytes.

use core::ffi::c_void;

use aya_ebpf::{
    EbpfContext,
    helpers::generated::{bpf_loop, bpf_probe_read_user},
    macros::map,
    maps::{HashMap, PerCpuArray, ProgramArray},
};
use exporter_ebpf::{
    abi::{AF_INET, AF_INET6, AF_UNIX, ConnKey, error, io, role},
    framing::{CARRY, CHUNK_STEPS, HEADER_BOUND, SCRATCH, SIZE_LINE},
    http::HEAD_LEN,
    request::{
        Conn, Env, Finished, NONE, SCAN_STEPS, Walk, Window, phase, read_values, scan_line,
        scan_step, stage,
    },
};

use crate::{
    maps::{
        CANDIDATES, CONNS, config, count_error, count_unframed, kernel, master_stats, now, offsets,
        pid_tgid, record, tracked,
    },
    queue, routes,
};

/// Whether requests are counted by route too (`--no-routes` turns it off).
#[inline(always)]
fn routes_on() -> bool {
    matches!(config(), Some(c) if c.routes != 0)
}

/// A header window of the response being written (one per CPU: programs do
/// not nest on a CPU).
#[map]
static SCRATCH_BUF: PerCpuArray<[u8; SCRATCH]> = PerCpuArray::with_max_entries(1, 0);

/// The header window being scanned, and the chunk walk under way: kept in
/// map values, not on the stack, for the bpf_loop callbacks. The verifier
/// tracks the stack's values, so a scan cursor there (0, 8, 16...) made it
/// follow each of the loop's iteration counts as its own path; it does not
/// track a map value's contents.
#[map]
static WINDOW: PerCpuArray<Window> = PerCpuArray::with_max_entries(1, 0);
#[map]
static WALK: PerCpuArray<ChunkWalk> = PerCpuArray::with_max_entries(1, 0);

/// Requests a write finished (at most two: a pipelined pair), recorded once
/// the write is handled: one call site of `record` in the write programs
/// instead of one per way a response can end, each of which the verifier
/// walked `record` from.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Done {
    count: u32,
    _pad: u32,
    finished: [Finished; 2],
}

#[map]
static DONE: PerCpuArray<Done> = PerCpuArray::with_max_entries(1, 0);

/// A write whose bytes are scanned (header block, chunks) by the next
/// program in the tail call ([`scan_stage`]): the bytes and the connection.
#[map]
static DEFERRED: PerCpuArray<Deferred> = PerCpuArray::with_max_entries(1, 0);

#[repr(C)]
#[derive(Clone, Copy)]
pub struct Deferred {
    io: Io,
    key: ConnKey,
    /// Where in the write the stage starts.
    off: u64,
}

/// The scanning stages (`request::stage`), one array per program type (a
/// tail call stays within its type): set by userspace.
#[map]
pub static STAGES_TRACEPOINT: ProgramArray = ProgramArray::with_max_entries(stage::COUNT, 0);
#[map]
pub static STAGES_RAW: ProgramArray = ProgramArray::with_max_entries(stage::COUNT, 0);

/// A header line split across two writes, kept for the second.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Carry {
    len: u32,
    bytes: [u8; CARRY],
}

#[map]
static PARTIAL: HashMap<ConnKey, Carry> = HashMap::with_max_entries(1024, 0);

/// Where a head or a chunk-size line is read to before it is copied onto
/// the stack: pieces of a vector call land at offsets the verifier cannot
/// fix, which it allows in a map value but not on the stack.
#[map]
static STAGE: PerCpuArray<[u8; 4 * HEAD_LEN]> = PerCpuArray::with_max_entries(1, 0);

/// Written by userspace: the TCP ports the masters listen on (index: port).
#[map]
pub static LISTEN_PORTS: aya_ebpf::maps::Array<u8> =
    aya_ebpf::maps::Array::with_max_entries(65536, 0);
/// Written by userspace: inodes of the unix socket files the masters listen on.
#[map]
pub static LISTEN_INODES: HashMap<u64, u8> = HashMap::with_max_entries(256, 0);

/// Where a read or write's bytes are: the syscall's buffer argument, which
/// for the vector calls leads to an iovec array.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Io {
    /// `abi::io` family.
    pub kind: u32,
    /// The buffer argument (the data, an iovec array or a msghdr).
    pub buf: u64,
    /// readv/writev's iovec count.
    pub iovcnt: u64,
    /// Bytes the call moved.
    pub n: u64,
}

/// Iovecs of a vector call followed at most (servers write headers and body
/// as two or three).
const IOVECS: usize = 4;

impl Io {
    /// The iovec array and its length, for the vector kinds.
    #[inline(always)]
    fn iovecs(&self) -> Option<(u64, u64)> {
        match self.kind {
            io::READV | io::WRITEV => Some((self.buf, self.iovcnt.min(IOVECS as u64))),
            // struct msghdr: msg_iov at offset 16, msg_iovlen at 24.
            io::RECVMSG | io::SENDMSG => {
                let iov = user::<u64>(self.buf + 16)?;
                let len = user::<u64>(self.buf + 24)?;
                Some((iov, len.min(IOVECS as u64)))
            }
            _ => None,
        }
    }

    /// Copies `len` (at most [`HEAD_LEN`]) bytes at `off` of the data into
    /// `dst`, through [`STAGE`].
    #[inline(always)]
    fn head(&self, off: u64, dst: &mut [u8; HEAD_LEN], len: u64) -> bool {
        let Some(stage) = STAGE.get_ptr_mut(0) else {
            return false;
        };
        if !self.copy::<HEAD_LEN>(off, stage as *mut u8, len) {
            return false;
        }
        // SAFETY: a map value of this type.
        let stage = unsafe { &*stage };
        let mut i = 0;
        while i < HEAD_LEN {
            dst[i] = stage[i];
            i += 1;
        }
        true
    }

    /// Copies `len` (at most `MAX`) bytes at `off` of the data into `dst`, a
    /// map value with room for `3 * MAX` (pieces of a vector call land at
    /// variable offsets, each below `2 * MAX` as the verifier sees it).
    #[inline(always)]
    pub fn copy<const MAX: usize>(&self, off: u64, dst: *mut u8, len: u64) -> bool {
        if len > MAX as u64 {
            return false;
        }
        let Some((iov, count)) = self.iovecs() else {
            return read_user::<MAX>(dst, self.buf + off, len);
        };
        // Walk the iovecs, copying the part of [off, off + len) each holds.
        let (mut start, mut done) = (0u64, 0u64);
        let mut i = 0;
        while i < IOVECS {
            if i as u64 >= count || done >= len {
                break;
            }
            let Some(base) = user::<u64>(iov + 16 * i as u64) else {
                return false;
            };
            let Some(size) = user::<u64>(iov + 16 * i as u64 + 8) else {
                return false;
            };
            let want = off + done;
            if want < start + size {
                let from = want - start;
                let n = (size - from).min(len - done);
                // SAFETY: done < len <= MAX: the piece fits in 3 * MAX.
                if !read_user::<MAX>(
                    unsafe { dst.add(done as usize & (2 * MAX - 1)) },
                    base + from,
                    n,
                ) {
                    return false;
                }
                done += n;
            }
            start += size;
            i += 1;
        }
        done == len
    }
}

/// A user value (None when unreadable).
#[inline(always)]
fn user<T>(addr: u64) -> Option<T> {
    // SAFETY: the helper faults safely on bad user addresses.
    unsafe { aya_ebpf::helpers::bpf_probe_read_user(addr as *const T) }.ok()
}

/// Copies `len` user bytes; `len` is bounded (by `MAX`) for the verifier,
/// and masked too: older verifiers lose a bound's lower half on the way.
#[inline(always)]
fn read_user<const MAX: usize>(dst: *mut u8, src: u64, len: u64) -> bool {
    if len > MAX as u64 {
        return false;
    }
    let len = crate::maps::bounded(len as u32, 2 * MAX as u32 - 1);
    // SAFETY: callers give `dst` room for `len` (at most MAX) bytes.
    unsafe { bpf_probe_read_user(dst as *mut c_void, len, src as *const c_void) == 0 }
}

/// The state machine's environment in the kernel.
struct KernelEnv {
    io: Io,
    key: ConnKey,
    /// The stage left to the next program ([`NO_STAGE`] if none).
    next: u32,
}

impl Env for KernelEnv {
    #[inline(always)]
    fn read(&mut self, off: u64, dst: &mut [u8; SIZE_LINE]) -> bool {
        // The end of the data may be less than a line away.
        *dst = [0; SIZE_LINE];
        let len = self.io.n.saturating_sub(off).min(SIZE_LINE as u64);
        self.io.head(off, dst, len)
    }

    #[inline(always)]
    fn fill(&mut self, at: usize, off: u64, len: usize) -> bool {
        let Some(scratch) = SCRATCH_BUF.get_ptr_mut(0) else {
            return false;
        };
        if at > CARRY || len > HEADER_BOUND {
            return false;
        }
        // SAFETY: at + len <= CARRY + HEADER_BOUND < SCRATCH.
        let dst = unsafe { (scratch as *mut u8).add(at & (2 * CARRY - 1)) };
        let ok = self.io.copy::<HEADER_BOUND>(off, dst, len as u64);
        if !ok {
            count_error(error::READ_FAILED);
        }
        ok
    }

    #[inline(always)]
    fn take_carry(&mut self) -> usize {
        let (Some(carry), Some(scratch)) = (PARTIAL.get_ptr(&self.key), SCRATCH_BUF.get_ptr_mut(0))
        else {
            return 0;
        };
        // SAFETY: map values of these types.
        let (carry, scratch) = unsafe { (&*carry, &mut *scratch) };
        let n = (carry.len as usize).min(CARRY);
        let mut i = 0;
        while i < CARRY {
            scratch[i] = carry.bytes[i];
            i += 1;
        }
        let _ = PARTIAL.remove(&self.key);
        n
    }

    #[inline(always)]
    fn put_carry(&mut self, from: usize, len: usize) {
        let Some(scratch) = SCRATCH_BUF.get_ptr(0) else {
            return;
        };
        // SAFETY: a map value of this type.
        let scratch = unsafe { &*scratch };
        let mut carry = Carry {
            len: len.min(CARRY) as u32,
            bytes: [0; CARRY],
        };
        let mut i = 0;
        while i < CARRY {
            carry.bytes[i] = scratch[(from + i) & (SCRATCH - 1)];
            i += 1;
        }
        if PARTIAL.insert(&self.key, &carry, 0).is_err() {
            count_error(error::CONNS_FULL);
        }
    }

    #[inline(always)]
    fn scan(&mut self, win: &mut Window, line_start: bool) {
        let (Some(scratch), Some(w)) = (SCRATCH_BUF.get_ptr(0), WINDOW.get_ptr_mut(0)) else {
            return;
        };
        // SAFETY: map values of these types, this CPU's.
        let (scratch, w) = unsafe { (&*scratch, &mut *w) };
        *w = *win;
        if line_start {
            scan_line(scratch, w, 0);
        }
        if w.end == NONE {
            // SAFETY: the callback finds its state in WINDOW.
            unsafe { bpf_loop(SCAN_STEPS, step as *mut c_void, core::ptr::null_mut(), 0) };
        }
        read_values(scratch, w);
        *win = *w;
    }

    #[inline(always)]
    fn unframed(&mut self) {
        count_unframed(self.key.tgid);
    }

    #[inline(always)]
    fn finished(&mut self, conn: &Conn) {
        let Some(done) = DONE.get_ptr_mut(0) else {
            return;
        };
        // SAFETY: this CPU's map value.
        let done = unsafe { &mut *done };
        let slot = (done.count as usize) & 1;
        done.finished[slot] = conn.completed();
        done.count += 1;
    }

    #[inline(always)]
    fn late(&mut self, conn: &Conn, n: u64) {
        crate::maps::add_late_bytes(self.key.tgid, conn, n);
    }

    #[inline(always)]
    fn defer(&mut self, stage: u32, off: u64) -> bool {
        let Some(deferred) = DEFERRED.get_ptr_mut(0) else {
            return true;
        };
        // SAFETY: this CPU's map value.
        unsafe {
            *deferred = Deferred {
                io: self.io,
                key: self.key,
                off,
            }
        };
        self.next = stage;
        true
    }

    #[inline(always)]
    fn walk_chunks(&mut self, _conn: &mut Conn, walk: &mut Walk) {
        let Some(w) = WALK.get_ptr_mut(0) else {
            walk.outcome = exporter_ebpf::request::walk::LOST;
            return;
        };
        // SAFETY: this CPU's map value; the callback finds the connection by
        // its key (a map value cannot hold a pointer to another).
        unsafe {
            *w = ChunkWalk {
                walk: *walk,
                io: self.io,
                key: self.key,
            };
            bpf_loop(CHUNK_STEPS, chunk as *mut c_void, core::ptr::null_mut(), 0);
            *walk = (*w).walk;
        }
    }
}

/// What bpf_loop's chunk callback works on (in [`WALK`]).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ChunkWalk {
    walk: Walk,
    io: Io,
    key: ConnKey,
}

/// bpf_loop's callback: one step of the header window's scan.
#[inline(never)]
extern "C" fn step(_index: u32, _ctx: *mut c_void) -> i64 {
    let (Some(scratch), Some(win)) = (SCRATCH_BUF.get_ptr(0), WINDOW.get_ptr_mut(0)) else {
        return 1;
    };
    // SAFETY: map values of these types, this CPU's.
    if scan_step(unsafe { &*scratch }, unsafe { &mut *win }) {
        0
    } else {
        1
    }
}

/// bpf_loop's callback: one step through the chunks of a write.
#[inline(never)]
extern "C" fn chunk(_index: u32, _ctx: *mut c_void) -> i64 {
    let Some(w) = WALK.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: this CPU's map value.
    let w = unsafe { &mut *w };
    let Some(conn) = lookup(w.key.tgid, w.key.fd) else {
        w.walk.outcome = exporter_ebpf::request::walk::LOST;
        return 1;
    };
    let mut env = KernelEnv {
        io: w.io,
        key: w.key,
        next: NO_STAGE,
    };
    if conn.chunk_step(&mut w.walk, &mut env) {
        0
    } else {
        1
    }
}

const EAGAIN: i64 = -11;

/// Whether a read or write failed because the connection is gone (reset by
/// the peer, written after its close, timed out): it ended there, even
/// where no close of it will be seen (a socket already closed by a reset).
#[inline(always)]
fn gone(n: i64) -> bool {
    const EPIPE: i64 = -32;
    const ECONNABORTED: i64 = -103;
    const ECONNRESET: i64 = -104;
    const ENOTCONN: i64 = -107;
    const ETIMEDOUT: i64 = -110;
    matches!(n, EPIPE | ECONNABORTED | ECONNRESET | ENOTCONN | ETIMEDOUT)
}

/// A read on a connection that returned `n`. Returns whether it began a
/// request whose route is to be found ([`routed`], which the caller runs:
/// called from here, its stack frame on top of this one's went past 6.1's
/// limit of 512 bytes for a chain of calls).
#[inline(never)]
pub fn on_read(tgid: u32, conn: &mut Conn, io: Io, n: i64) -> bool {
    let mut began = false;
    let done = if n > 0 {
        let mut head = [0u8; HEAD_LEN];
        let len = (n as u64).min(HEAD_LEN as u64);
        if !io.head(0, &mut head, len) {
            count_error(error::READ_FAILED);
            return false;
        }
        let (tid, _) = pid_tgid();
        let reading = conn.phase == phase::READING;
        let done = conn.on_read(now(), tid, n as u64, &head, len as usize);
        began = !reading && conn.phase == phase::READING && routes_on();
        done
    } else if n == 0 {
        conn.on_eof()
    } else if n == EAGAIN {
        conn.on_idle()
    } else if gone(n) {
        conn.close(now())
    } else {
        None
    };
    if let Some(done) = done {
        record(tgid, &done);
    }
    began
}

/// Sets the route of the request a read of `n` bytes began ([`on_read`]).
#[inline(always)]
pub fn routed(conn: &mut Conn, io: &Io, n: i64) {
    conn.route = routes::of_read(io, n as u64);
}

/// No stage is left to a next program.
pub const NO_STAGE: u32 = u32::MAX;

/// A write on a connection that sent `n`. Returns the [`stage`] of it left
/// to a next program (or [`NO_STAGE`]), which the caller tail-calls.
#[inline(never)]
pub fn on_write(tgid: u32, fd: u32, conn: &mut Conn, io: Io, n: i64) -> u32 {
    if gone(n) {
        if let Some(done) = conn.close(now()) {
            record(tgid, &done);
        }
        return NO_STAGE;
    }
    if n <= 0 {
        return NO_STAGE;
    }
    if io.kind == io::SENDFILE {
        if let Some(done) = conn.on_sendfile(now(), n as u64) {
            record(tgid, &done);
        }
        return NO_STAGE;
    }
    let Some(done) = DONE.get_ptr_mut(0) else {
        return NO_STAGE;
    };
    // SAFETY: this CPU's map value.
    unsafe { (*done).count = 0 };
    let mut env = KernelEnv {
        io,
        key: ConnKey { tgid, fd },
        next: NO_STAGE,
    };
    conn.on_write(now(), n as u64, &mut env);
    record_done(tgid);
    env.next
}

/// Tail-calls stage `next` of the write in [`DEFERRED`], if any. A tail call
/// that fails (its program not in place) leaves the response unframed,
/// counted, to end by the worker's signals.
#[inline(always)]
pub fn continue_at<C: EbpfContext>(ctx: &C, stages: &ProgramArray, next: u32) {
    if next == NO_STAGE {
        return;
    }
    // SAFETY: the stages take their state from maps, not from the context.
    unsafe { stages.tail_call(ctx, next) };
    let Some(deferred) = DEFERRED.get(0) else {
        return;
    };
    if let Some(conn) = lookup(deferred.key.tgid, deferred.key.fd) {
        conn.lose_framing();
    }
    count_unframed(deferred.key.tgid);
}

/// The write a stage resumes, with its connection, and [`DONE`] emptied for
/// what the stage finishes. Each stage is a program of its own (reached by
/// tail call), so the verifier checks it once, not once per path of the
/// write that led to it.
#[inline(always)]
fn resume() -> Option<(Deferred, &'static mut Conn, KernelEnv)> {
    let (Some(deferred), Some(done)) = (DEFERRED.get(0), DONE.get_ptr_mut(0)) else {
        return None;
    };
    let deferred = *deferred;
    let conn = lookup(deferred.key.tgid, deferred.key.fd)?;
    // SAFETY: this CPU's map value.
    unsafe { (*done).count = 0 };
    let env = KernelEnv {
        io: deferred.io,
        key: deferred.key,
        next: NO_STAGE,
    };
    Some((deferred, conn, env))
}

/// [`stage::HEADERS`]: the response's header block in the write; returns
/// the stage it defers in turn.
#[inline(always)]
pub fn headers_stage() -> u32 {
    let Some((deferred, conn, mut env)) = resume() else {
        return NO_STAGE;
    };
    conn.headers(deferred.io.n, &mut env);
    record_done(deferred.key.tgid);
    env.next
}

/// [`stage::CHUNKS`]: the chunks of the write from the deferred offset.
#[inline(always)]
pub fn chunks_stage() {
    let Some((deferred, conn, mut env)) = resume() else {
        return;
    };
    conn.chunks(deferred.off, deferred.io.n, &mut env);
    record_done(deferred.key.tgid);
}

/// Records what the write finished ([`DONE`]).
#[inline(never)]
fn record_done(tgid: u32) {
    let Some(done) = DONE.get_ptr(0) else {
        return;
    };
    // SAFETY: this CPU's map value.
    let done = unsafe { &*done };
    let mut i = 0;
    while i < 2 {
        if (i as u32) < done.count {
            record(tgid, &done.finished[i]);
        }
        i += 1;
    }
}

/// The connection of (tgid, fd), if the worker has one there.
#[inline(always)]
pub fn lookup(tgid: u32, fd: u32) -> Option<&'static mut Conn> {
    // Every other process of the host turned away by an array read.
    if !crate::maps::watched(tgid) {
        return None;
    }
    // SAFETY: a map value; one worker's threads serialise on a connection.
    CONNS
        .get_ptr_mut(&ConnKey { tgid, fd })
        .map(|c| unsafe { &mut *c })
}

/// The descriptor `fd` of worker `tgid` holds socket `sk`, not the one its
/// entry knew (accept returned it, or its I/O showed a new socket): end what
/// was open there, and start a connection if `sk` is server-side (accepted
/// from a listener of a watched master), else remember it as foreign.
#[inline(never)]
pub fn adopt(tgid: u32, fd: u32, sk: u64) -> Option<&'static mut Conn> {
    let server = sk == 0 || server_side(sk);
    if server && let Some(stats) = master_stats(tgid) {
        stats.connections += 1;
        queue::taken(sk, &mut stats.queue);
    }
    let fresh = if server {
        Conn::new(sk)
    } else {
        Conn::foreign(sk)
    };
    match lookup(tgid, fd) {
        Some(conn) => {
            if let Some(done) = conn.on_accept(now(), sk) {
                record(tgid, &done);
            }
            *conn = fresh;
            Some(conn)
        }
        None => {
            if CONNS.insert(&ConnKey { tgid, fd }, &fresh, 0).is_err() {
                count_error(error::CONNS_FULL);
                return None;
            }
            lookup(tgid, fd)
        }
    }
}

/// Whether `sk` was accepted from a socket a watched master listens on: a
/// TCP socket whose local port is a listened one, or a unix socket whose
/// path is a listened socket file (an accepted unix socket shares its
/// listener's path).
#[inline(always)]
pub fn server_side(sk: u64) -> bool {
    let Some(off) = offsets() else { return false };
    let family: u16 = kernel(sk, off.sk_family);
    if family == AF_INET || family == AF_INET6 {
        let port: u16 = kernel(sk, off.sk_num);
        return matches!(LISTEN_PORTS.get(port as u32), Some(&1));
    }
    if family == AF_UNIX {
        let dentry: u64 = kernel(sk, off.unix_dentry);
        let inode: u64 = kernel(dentry, off.dentry_inode);
        let ino: u64 = kernel(inode, off.inode_ino);
        return ino != 0 && LISTEN_INODES.get_ptr(&ino).is_some();
    }
    false
}

/// The current process put socket `sk` in LISTEN: if it is a watched master
/// or discovery's candidate (a master started later, which userspace learns
/// of only at its first fork), its port is listened on from now, so its
/// workers' first connections are known for theirs. (Userspace, which reads
/// the masters' listeners, takes the port back once no master has it.)
#[inline(never)]
pub fn listening(sk: u64) {
    let (_, tgid) = pid_tgid();
    let master = matches!(tracked(tgid), Some(p) if p.role == role::MASTER);
    // SAFETY: the value is not kept past the lookup.
    if !master && unsafe { CANDIDATES.get(&tgid) }.is_none() {
        return;
    }
    let Some(off) = offsets() else { return };
    let port: u16 = kernel(sk, off.sk_num);
    if let Some(slot) = LISTEN_PORTS.get_ptr_mut(port as u32) {
        // SAFETY: an array slot.
        unsafe { *slot = 1 };
    }
}

/// Ends the connection of (tgid, fd) at close(2).
#[inline(never)]
pub fn close(tgid: u32, conn: &mut Conn) {
    if let Some(done) = conn.close(now()) {
        record(tgid, &done);
    }
}

/// shutdown(2) of the connection.
#[inline(never)]
pub fn shutdown(tgid: u32, conn: &mut Conn, how: u64) {
    if let Some(done) = conn.on_shutdown(how, now()) {
        record(tgid, &done);
    }
}
