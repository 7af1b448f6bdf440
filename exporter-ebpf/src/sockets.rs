//! The socket hook set: socket-layer tracepoints only, no syscall
//! tracepoint, so the rest of the host's syscalls stay on their fast path.
//!
//! sock:sock_recv_length and sock:sock_send_length fire inside every socket
//! receive and send of any syscall, after the copy, in the syscall's own
//! context: the saved registers give the syscall, the descriptor and the
//! buffer. sock:inet_sock_set_state gives the TCP handshakes (queue time) and
//! the shutdowns and closes a worker makes (in its own context too). Raw
//! tracepoints: their arguments come as an array, cheaper than a classic
//! tracepoint's record.

use aya_ebpf::{macros::raw_tracepoint, programs::RawTracePointContext};
use exporter_ebpf::{
    abi::{hooks, io, nr},
    request::phase,
    tracepoint::{
        TCP_CLOSE, TCP_CLOSE_WAIT, TCP_ESTABLISHED, TCP_FIN_WAIT1, TCP_LAST_ACK, TCP_LISTEN,
        TCP_SYN_RECV,
    },
};

use crate::{
    conns::{self, Io},
    maps::{config, pid_tgid, syscall, worker},
    queue,
};

/// recvmsg's MSG_PEEK: the bytes stay queued and will be read again.
const MSG_PEEK: i64 = 2;

#[raw_tracepoint(tracepoint = "sock_recv_length")]
pub fn sock_recv_length(ctx: RawTracePointContext) -> i32 {
    let flags: i64 = ctx.arg(2);
    if flags & MSG_PEEK == 0 {
        socket_io(&ctx, false);
    }
    0
}

#[raw_tracepoint(tracepoint = "sock_send_length")]
pub fn sock_send_length(ctx: RawTracePointContext) -> i32 {
    socket_io(&ctx, true);
    0
}

#[inline(always)]
fn socket_io(ctx: &RawTracePointContext, send: bool) {
    let (_, tgid) = pid_tgid();
    if worker(tgid).is_none() {
        return;
    }
    let call = syscall();
    let kind = io::of_syscall(call.nr);
    if kind == 0 {
        return;
    }
    let sk: u64 = ctx.arg(0);
    let ret: i32 = ctx.arg(1);
    let fd = call.arg0 as u32;
    let conn = match conns::lookup(tgid, fd) {
        // A closed entry seeing data holds a new connection, even on the same
        // socket address: the kernel reuses a freed socket's memory.
        Some(conn) if conn.sk == sk && (conn.phase != phase::CLOSED || ret <= 0) => conn,
        // Found open at attach: its socket is known now.
        Some(conn) if conn.sk == 0 && conn.phase == phase::ATTACHED => {
            conn.sk = sk;
            conn
        }
        _ => match conns::adopt(tgid, fd, sk) {
            Some(conn) => conn,
            None => return,
        },
    };
    if conn.phase == phase::FOREIGN {
        return;
    }
    let io = Io {
        kind,
        buf: call.arg1,
        iovcnt: call.arg2,
        n: ret.max(0) as u64,
    };
    if send {
        let next = conns::on_write(tgid, fd, conn, io, ret as i64);
        conns::continue_at(ctx, &conns::STAGES_RAW, next);
    } else {
        if conns::on_read(tgid, conn, io, ret as i64) {
            conns::routed(conn, &io, ret as i64);
        }
    }
}

/// The stages of a write (`request::stage`, by index in
/// `conns::STAGES_RAW`): reached only by tail call from the write programs.
#[raw_tracepoint]
pub fn write_headers_raw(ctx: RawTracePointContext) -> i32 {
    let next = conns::headers_stage();
    conns::continue_at(&ctx, &conns::STAGES_RAW, next);
    0
}

#[raw_tracepoint]
pub fn write_chunks_raw(_ctx: RawTracePointContext) -> i32 {
    conns::chunks_stage();
    0
}

/// TCP state changes: a handshake completing on a listened port, a master
/// (or discovery's candidate) listening, and (with
/// this hook set) a worker's own shutdown or close of a connection.
#[raw_tracepoint(tracepoint = "inet_sock_set_state")]
pub fn inet_sock_set_state(ctx: RawTracePointContext) -> i32 {
    let (sk, old, new): (u64, i32, i32) = (ctx.arg(0), ctx.arg(1), ctx.arg(2));
    if old == TCP_SYN_RECV && new == TCP_ESTABLISHED {
        queue::handshake(sk);
        return 0;
    }
    if new == TCP_LISTEN {
        conns::listening(sk);
        return 0;
    }
    let ends = (old == TCP_ESTABLISHED || old == TCP_CLOSE_WAIT)
        && (new == TCP_FIN_WAIT1 || new == TCP_LAST_ACK || new == TCP_CLOSE);
    if !ends || !matches!(config(), Some(c) if c.hooks == hooks::SOCKETS) {
        return 0;
    }
    // Only transitions the worker makes itself, inside its shutdown(2) or
    // close(2), are ours; packet-driven ones run in whatever task is current.
    let (_, tgid) = pid_tgid();
    if worker(tgid).is_none() {
        return 0;
    }
    let call = syscall();
    if call.nr != nr::CLOSE && call.nr != nr::SHUTDOWN {
        return 0;
    }
    let Some(conn) = conns::lookup(tgid, call.arg0 as u32) else {
        return 0;
    };
    if conn.sk != sk {
        return 0;
    }
    if call.nr == nr::SHUTDOWN {
        conns::shutdown(tgid, conn, call.arg1);
    } else {
        conns::close(tgid, conn);
    }
    0
}
