//! Client-socket I/O of tracked workers, fed to each connection's state machine.
//!
//! Only syscall exits are traced: they alone know how many bytes moved, and
//! the syscall's own arguments (descriptor, buffer) are still in the registers
//! the kernel saved at its entry (`maps::syscall_args`). So no enter program
//! runs, and nothing is stored per thread between a syscall's enter and exit.

use aya_ebpf::{
    helpers::{bpf_probe_read_user, bpf_probe_read_user_buf},
    macros::tracepoint,
    programs::TracePointContext,
};
use exporter_ebpf::{
    abi::{ConnKey, ExceptionEvent, cause, error, event, flag, io},
    errlog::{ERRLOG_HEAD, ERRLOG_TAIL, is_request_error},
    http::{HEAD_LEN, request_method},
    request::{Conn, phase},
    tracepoint::{ARG0, ARG1, ARG2, RET},
};

use crate::maps::{
    ACCEPTED, CONNS, EVENTS, EXC_PENDING, HEARTBEAT, count_error, emit, field, is_worker, now,
    pid_tgid, record, syscall_args, tracked,
};

#[inline(always)]
fn arg(ctx: &TracePointContext, offset: usize) -> u64 {
    field::<u64>(ctx, offset)
}

#[inline(always)]
fn ret(ctx: &TracePointContext) -> i64 {
    field::<i64>(ctx, RET)
}

// ---- accept: a new connection starts clean --------------------------------

#[tracepoint]
pub fn sys_exit_accept4(ctx: TracePointContext) -> u32 {
    on_accept(&ctx);
    0
}

#[tracepoint]
pub fn sys_exit_accept(ctx: TracePointContext) -> u32 {
    on_accept(&ctx);
    0
}

#[inline(always)]
fn on_accept(ctx: &TracePointContext) {
    let fd = ret(ctx);
    if fd < 0 {
        return;
    }
    let (_, tgid) = pid_tgid();
    if !is_worker(tgid) {
        return;
    }
    if let Some(accepted) = ACCEPTED.get_ptr_mut(0) {
        // SAFETY: our CPU's slot.
        unsafe { *accepted += 1 };
    }
    let (_, peer_sockaddr) = syscall_args();
    crate::queue::accepted(peer_sockaddr);
    let key = ConnKey {
        tgid,
        fd: fd as u32,
    };
    match CONNS.get_ptr_mut(&key) {
        // SAFETY: a map value of this type; only this worker's threads touch it.
        Some(conn) => {
            if let Some(done) = unsafe { (*conn).on_accept(now()) } {
                record(tgid, &done);
            }
        }
        None => {
            if CONNS.insert(&key, &Conn::default(), 0).is_err() {
                count_error(error::CONNS_FULL);
            }
        }
    }
}

// ---- exits: the bytes a syscall moved --------------------------------------

/// The descriptor and buffer of the syscall being left, and its kind (`abi::io`).
#[derive(Clone, Copy)]
struct Io {
    fd: u32,
    buf: u64,
    kind: u32,
}

#[inline(always)]
fn io(kind: u32) -> Io {
    let (fd, buf) = syscall_args();
    Io {
        fd: fd as u32,
        buf,
        kind,
    }
}

/// The first bytes the syscall moved, and how many of them are valid.
#[inline(always)]
fn head(io: &Io, n: i64) -> Option<([u8; HEAD_LEN], usize)> {
    // SAFETY: user pointers from the syscall's own arguments; the helpers
    // fault safely on bad addresses.
    let data = unsafe {
        match io.kind {
            io::READV | io::WRITEV => bpf_probe_read_user(io.buf as *const u64).ok()?,
            // struct msghdr: msg_iov at offset 16, then iovec.iov_base at 0.
            io::RECVMSG | io::SENDMSG => {
                let iov = bpf_probe_read_user((io.buf + 16) as *const u64).ok()?;
                bpf_probe_read_user(iov as *const u64).ok()?
            }
            _ => io.buf,
        }
    };
    let mut head = [0u8; HEAD_LEN];
    // SAFETY: as above.
    if unsafe { bpf_probe_read_user_buf(data as *const u8, &mut head) }.is_err() {
        count_error(error::READ_FAILED);
        return None;
    }
    let len = if n < HEAD_LEN as i64 {
        n as usize
    } else {
        HEAD_LEN
    };
    Some((head, len))
}

const EAGAIN: i64 = -11;

/// The worker waits for the next request on `fd`: its response is complete.
#[inline(always)]
fn idle(tgid: u32, fd: u32) {
    if let Some(conn) = CONNS.get_ptr_mut(&ConnKey { tgid, fd }) {
        // SAFETY: as in on_read_exit.
        if let Some(done) = unsafe { (*conn).on_idle() } {
            record(tgid, &done);
        }
    }
}

/// A read's exit. Connections are looked up first: an entry exists only for
/// a tracked worker's socket, so a hit needs no other check, and only a miss
/// asks whether this is a worker reading a connection it accepted before we
/// attached.
#[inline(always)]
fn on_read_exit(ctx: &TracePointContext, kind: u32) -> u32 {
    let n = ret(ctx);
    if n <= 0 && n != EAGAIN {
        return 0;
    }
    let (_, tgid) = pid_tgid();
    let io = io(kind);
    if n == EAGAIN {
        // gevent and eventlet try the next request's read at once.
        idle(tgid, io.fd);
        return 0;
    }
    let key = ConnKey { tgid, fd: io.fd };
    let conn = CONNS.get_ptr_mut(&key);
    if conn.is_none() && !is_worker(tgid) {
        return 0;
    }
    let Some((head, len)) = head(&io, n) else {
        return 0;
    };
    match conn {
        // SAFETY: a map value; one worker's threads serialise on a connection.
        Some(conn) => {
            if let Some(done) = unsafe { (*conn).on_read(now(), n as u64, &head, len) } {
                record(tgid, &done);
            }
        }
        // Accepted before we attached: track it from its next request line.
        None => {
            if let Some(method) = request_method(&head, len) {
                if CONNS
                    .insert(&key, &Conn::reading(now(), n as u64, method), 0)
                    .is_err()
                {
                    count_error(error::CONNS_FULL);
                }
            }
        }
    }
    0
}

#[inline(always)]
fn on_write_exit(ctx: &TracePointContext, kind: u32) -> u32 {
    let n = ret(ctx);
    if n <= 0 {
        return 0;
    }
    let (_, tgid) = pid_tgid();
    let io = io(kind);
    // Only a connection of a tracked worker has an entry: the one check needed.
    let Some(conn) = CONNS.get_ptr_mut(&ConnKey { tgid, fd: io.fd }) else {
        return 0;
    };
    let Some((head, len)) = head(&io, n) else {
        return 0;
    };
    // SAFETY: as in on_read_exit.
    if let Some(done) = unsafe { (*conn).on_write(now(), n as u64, &head, len) } {
        record(tgid, &done);
    }
    // SAFETY: as in on_read_exit.
    let c = unsafe { &mut *conn };
    if c.phase == phase::RESPONDING && c.status >= 500 && c.cause == cause::NONE {
        let (tid, _) = pid_tgid();
        // This thread logged "Error handling request" and now answers 5xx;
        // unless its master is aborting it: then the "exception" is the
        // timeout's SystemExit, and the request failed by timeout.
        let aborting = matches!(tracked(tgid), Some(p) if p.flags & flag::ABORTING != 0);
        if EXC_PENDING.remove(&tid).is_ok() && !aborting {
            c.cause = cause::APP_EXCEPTION;
            emit(
                event::EXCEPTION_ANSWERED,
                tgid,
                tid,
                c.method as i32,
                c.status as i32,
            );
        }
    }
    0
}

// ---- the syscalls gunicorn uses on client sockets --------------------------

#[tracepoint]
pub fn sys_exit_recvfrom(ctx: TracePointContext) -> u32 {
    on_read_exit(&ctx, io::READ)
}

#[tracepoint]
pub fn sys_exit_sendto(ctx: TracePointContext) -> u32 {
    on_write_exit(&ctx, io::WRITE)
}

#[tracepoint]
pub fn sys_exit_sendfile64(ctx: TracePointContext) -> u32 {
    let n = ret(&ctx);
    if n <= 0 {
        return 0;
    }
    let (_, tgid) = pid_tgid();
    let io = io(io::SENDFILE);
    if let Some(conn) = CONNS.get_ptr_mut(&ConnKey { tgid, fd: io.fd }) {
        // SAFETY: as in on_read_exit.
        unsafe { (*conn).on_sendfile(now(), n as u64) };
    }
    0
}

#[tracepoint]
pub fn sys_enter_shutdown(ctx: TracePointContext) -> u32 {
    let (_, tgid) = pid_tgid();
    let key = ConnKey {
        tgid,
        fd: arg(&ctx, ARG0) as u32,
    };
    if let Some(conn) = CONNS.get_ptr_mut(&key) {
        // SAFETY: as in on_read_exit.
        if let Some(done) = unsafe { (*conn).on_shutdown(arg(&ctx, ARG1), now()) } {
            record(tgid, &done);
        }
    }
    0
}

/// gthread's main thread registers a keep-alive socket with its poller again
/// once the response is written.
#[tracepoint]
pub fn sys_enter_epoll_ctl(ctx: TracePointContext) -> u32 {
    const EPOLL_CTL_ADD: u64 = 1;
    if arg(&ctx, ARG1) != EPOLL_CTL_ADD {
        return 0;
    }
    let (_, tgid) = pid_tgid();
    idle(tgid, arg(&ctx, ARG2) as u32);
    0
}

/// close(2) runs on every process of the host: one lookup turns the
/// untracked ones away.
#[tracepoint]
pub fn sys_enter_close(ctx: TracePointContext) -> u32 {
    let (_, tgid) = pid_tgid();
    let Some(proc_) = tracked(tgid) else { return 0 };
    let key = ConnKey {
        tgid,
        fd: arg(&ctx, ARG0) as u32,
    };
    match CONNS.get_ptr_mut(&key) {
        // SAFETY: as in on_read_exit. The entry is kept (see phase::CLOSED).
        Some(conn) if unsafe { (*conn).is_open() } => {
            if let Some(done) = unsafe { (*conn).close(now()) } {
                record(tgid, &done);
            }
        }
        _ => heartbeat_closed(tgid, key.fd, proc_.master),
    }
    0
}

/// A worker closing its heartbeat file is about to run worker_exit.
#[inline(always)]
fn heartbeat_closed(tgid: u32, fd: u32, master: u32) {
    // SAFETY: plain data.
    let Some(beat) = HEARTBEAT.get_ptr(&tgid).map(|b| unsafe { *b }) else {
        return;
    };
    if beat.fd == fd {
        emit(event::WORKER_EXITING, tgid, master, 0, 0);
    }
}

// ---- the app exception behind a 500 ----------------------------------------

/// write(2) of a worker that starts gunicorn's "Error handling request"
/// record: send the record's end (naming the exception) to userspace and
/// remember that this thread owes a 5xx.
#[tracepoint]
pub fn error_log_write(ctx: TracePointContext) -> u32 {
    let (tid, tgid) = pid_tgid();
    let len = arg(&ctx, ARG2);
    if len < 40 || !is_worker(tgid) {
        return 0;
    }
    let buf = arg(&ctx, ARG1);
    let mut head = [0u8; ERRLOG_HEAD];
    // SAFETY: the syscall's own user buffer; the helper faults safely.
    if unsafe { bpf_probe_read_user_buf(buf as *const u8, &mut head) }.is_err() {
        // Shorter than the head and at a page end: too short to matter.
        return 0;
    }
    if !is_request_error(&head, len as usize) {
        return 0;
    }
    let _ = EXC_PENDING.insert(&tid, &1, 0);
    let Some(mut entry) = EVENTS.reserve::<ExceptionEvent>(0) else {
        count_error(error::EVENTS_LOST);
        return 0;
    };
    let valid = if len < ERRLOG_TAIL as u64 {
        len as usize
    } else {
        ERRLOG_TAIL
    };
    let ptr = entry.as_mut_ptr();
    // SAFETY: reserved ring-buffer memory of this type; the record's last
    // `valid` bytes go to the start of the tail array.
    unsafe {
        (*ptr).header = exporter_ebpf::abi::Event {
            kind: event::EXCEPTION,
            pid: tgid,
            other: tid,
            value: len as i32,
            code: valid as i32,
            _pad: 0,
            ts_ns: now(),
        };
        let tail: &mut [u8; ERRLOG_TAIL] = &mut (*ptr).tail;
        let read = if valid == ERRLOG_TAIL {
            bpf_probe_read_user_buf((buf + len - ERRLOG_TAIL as u64) as *const u8, tail)
        } else {
            bpf_probe_read_user_buf(buf as *const u8, &mut tail[..(valid & (ERRLOG_TAIL - 1))])
        };
        if read.is_err() {
            count_error(error::READ_FAILED);
        }
    }
    entry.submit(0);
    0
}

// ---- optional (--io-syscalls all): apps that use the read/write families ----

#[tracepoint]
pub fn sys_exit_read(ctx: TracePointContext) -> u32 {
    on_read_exit(&ctx, io::READ)
}

#[tracepoint]
pub fn sys_exit_readv(ctx: TracePointContext) -> u32 {
    on_read_exit(&ctx, io::READV)
}

#[tracepoint]
pub fn sys_exit_recvmsg(ctx: TracePointContext) -> u32 {
    on_read_exit(&ctx, io::RECVMSG)
}

#[tracepoint]
pub fn sys_exit_write(ctx: TracePointContext) -> u32 {
    on_write_exit(&ctx, io::WRITE)
}

#[tracepoint]
pub fn sys_exit_writev(ctx: TracePointContext) -> u32 {
    on_write_exit(&ctx, io::WRITEV)
}

#[tracepoint]
pub fn sys_exit_sendmsg(ctx: TracePointContext) -> u32 {
    on_write_exit(&ctx, io::SENDMSG)
}
