//! The syscall hook set, for kernels without the socket tracepoints: the
//! exits of the syscalls Gunicorn's workers use on client sockets (and, where
//! a worker needs them, the read/write family), and the entries of shutdown
//! and close. Enabling any syscall tracepoint puts every syscall of the host
//! on the kernel's tracing slow path: this set costs the host more.
//!
//! Only exits are traced for I/O: they alone know how many bytes moved, and
//! the syscall's own arguments are still in the registers saved at its entry.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use exporter_ebpf::{
    abi::io,
    request::phase,
    tracepoint::{ARG0, ARG1, RET},
};

use crate::{
    conns::{self, Io},
    maps::{field, file_of, kernel, offsets, pid_tgid, syscall, worker},
};

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
    if worker(tgid).is_none() {
        return;
    }
    conns::adopt(tgid, fd as u32, socket_of(fd as u32));
}

/// The `struct sock *` behind descriptor `fd` of the current task
/// (task->files->fdt->fd[fd]->private_data->sk), or 0.
#[inline(always)]
fn socket_of(fd: u32) -> u64 {
    let Some(off) = offsets() else { return 0 };
    // SAFETY: a helper without arguments.
    let task = unsafe { aya_ebpf::helpers::bpf_get_current_task() };
    let file = file_of(task, fd, off);
    let socket: u64 = kernel(file, off.file_private_data);
    kernel(socket, off.socket_sk)
}

// ---- exits: the bytes a syscall moved --------------------------------------

#[inline(always)]
fn on_io(ctx: &TracePointContext, kind: u32, send: bool) -> u32 {
    let n = ret(ctx);
    let (_, tgid) = pid_tgid();
    // Only a server-side connection of a tracked worker has an entry: a hit
    // needs no other check.
    let call = syscall();
    let fd = call.arg0 as u32;
    let Some(conn) = conns::lookup(tgid, fd) else {
        return 0;
    };
    if conn.phase == phase::FOREIGN {
        return 0;
    }
    let io = Io {
        kind,
        buf: call.arg1,
        iovcnt: call.arg2,
        n: n.max(0) as u64,
    };
    if send {
        let next = conns::on_write(tgid, fd, conn, io, n);
        conns::continue_at(ctx, &conns::STAGES_TRACEPOINT, next);
    } else {
        if conns::on_read(tgid, conn, io, n) {
            conns::routed(conn, &io, n);
        }
    }
    0
}

#[tracepoint]
pub fn sys_exit_recvfrom(ctx: TracePointContext) -> u32 {
    on_io(&ctx, io::READ, false)
}

#[tracepoint]
pub fn sys_exit_sendto(ctx: TracePointContext) -> u32 {
    on_io(&ctx, io::WRITE, true)
}

#[tracepoint]
pub fn sys_exit_sendfile64(ctx: TracePointContext) -> u32 {
    on_io(&ctx, io::SENDFILE, true)
}

#[tracepoint]
pub fn sys_enter_shutdown(ctx: TracePointContext) -> u32 {
    let (_, tgid) = pid_tgid();
    if let Some(conn) = conns::lookup(tgid, field::<u64>(&ctx, ARG0) as u32) {
        conns::shutdown(tgid, conn, field::<u64>(&ctx, ARG1));
    }
    0
}

/// close(2) runs on every process of the host: one lookup turns the others away.
#[tracepoint]
pub fn sys_enter_close(ctx: TracePointContext) -> u32 {
    let (_, tgid) = pid_tgid();
    if let Some(conn) = conns::lookup(tgid, field::<u64>(&ctx, ARG0) as u32) {
        conns::close(tgid, conn);
    }
    0
}

// ---- the read/write family, for servers that use it (uvloop's libuv) --------

#[tracepoint]
pub fn sys_exit_read(ctx: TracePointContext) -> u32 {
    on_io(&ctx, io::READ, false)
}

#[tracepoint]
pub fn sys_exit_readv(ctx: TracePointContext) -> u32 {
    on_io(&ctx, io::READV, false)
}

#[tracepoint]
pub fn sys_exit_recvmsg(ctx: TracePointContext) -> u32 {
    on_io(&ctx, io::RECVMSG, false)
}

#[tracepoint]
pub fn sys_exit_write(ctx: TracePointContext) -> u32 {
    on_io(&ctx, io::WRITE, true)
}

#[tracepoint]
pub fn sys_exit_writev(ctx: TracePointContext) -> u32 {
    on_io(&ctx, io::WRITEV, true)
}

#[tracepoint]
pub fn sys_exit_sendmsg(ctx: TracePointContext) -> u32 {
    on_io(&ctx, io::SENDMSG, true)
}

/// The stages of a write (`request::stage`, by index in
/// `conns::STAGES_TRACEPOINT`): reached only by tail call from the write programs.
#[tracepoint]
pub fn write_headers(ctx: TracePointContext) -> u32 {
    let next = conns::headers_stage();
    conns::continue_at(&ctx, &conns::STAGES_TRACEPOINT, next);
    0
}

#[tracepoint]
pub fn write_chunks(_ctx: TracePointContext) -> u32 {
    conns::chunks_stage();
    0
}
