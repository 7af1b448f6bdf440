//! Log records with a Python traceback, written by a worker thread: sent to
//! userspace, which reads the exception class and ties it to the request the
//! thread was serving. The write(2) is seen by the syscall tracepoint with the
//! syscall hook set, or by a uprobe on the C library's write() attached to
//! each worker with the socket hook set (no syscall tracepoint then).

use aya_ebpf::{
    helpers::generated::bpf_probe_read_user,
    macros::{map, tracepoint, uprobe},
    maps::PerCpuArray,
    programs::{ProbeContext, TracePointContext},
};
use exporter_ebpf::{
    abi::{Event, RECORD_PIECE, RECORD_PIECE_DATA, RECORD_PIECES, RecordEvent, error, event},
    errlog::{ERRLOG_BUF, ERRLOG_HEAD, ERRLOG_MIN, has_traceback},
    tracepoint::{ARG0, ARG1, ARG2},
};

use crate::{
    conns,
    maps::{EVENTS, count_error, field, now, pid_tgid, worker},
};

/// The head of a write being checked for a traceback (per CPU).
#[map]
static HEAD: PerCpuArray<[u8; ERRLOG_BUF]> = PerCpuArray::with_max_entries(1, 0);

/// write(2)'s entry (syscall hook set).
#[tracepoint]
pub fn sys_enter_write(ctx: TracePointContext) -> u32 {
    log_write(
        field::<u64>(&ctx, ARG0),
        field::<u64>(&ctx, ARG1),
        field::<u64>(&ctx, ARG2),
    );
    0
}

/// The C library's write(fd, buf, count) in a worker (socket hook set).
#[uprobe]
pub fn libc_write(ctx: ProbeContext) -> u32 {
    let (fd, buf, len): (u64, u64, u64) = (
        ctx.arg(0).unwrap_or(0),
        ctx.arg(1).unwrap_or(0),
        ctx.arg(2).unwrap_or(0),
    );
    log_write(fd, buf, len);
    0
}

#[inline(always)]
fn log_write(fd: u64, buf: u64, len: u64) {
    if len < ERRLOG_MIN {
        return;
    }
    let (tid, tgid) = pid_tgid();
    if worker(tgid).is_none() {
        return;
    }
    // A client connection's response is no log record.
    if conns::lookup(tgid, fd as u32).is_some() {
        return;
    }
    let Some(head) = HEAD.get_ptr_mut(0) else {
        return;
    };
    let n = crate::maps::bounded(len.min(ERRLOG_HEAD as u64) as u32, ERRLOG_BUF as u32 - 1);
    // SAFETY: the user's buffer, `n` bytes fit the head; faults safely.
    if unsafe { bpf_probe_read_user(head as *mut _, n, buf as *const _) } != 0 {
        return;
    }
    // SAFETY: a map value of this type.
    if !has_traceback(unsafe { &*head }, n as usize) {
        return;
    }
    send(tgid, tid, buf, len);
}

/// Sends the record to userspace in pieces.
#[inline(always)]
fn send(tgid: u32, tid: u32, buf: u64, len: u64) {
    let ts = now();
    let mut i = 0;
    while i < RECORD_PIECES {
        let off = (i * RECORD_PIECE_DATA) as u64;
        if off >= len {
            break;
        }
        // Masked: a bound older verifiers keep on the way to the helper.
        let piece = crate::maps::bounded(
            (len - off).min(RECORD_PIECE_DATA as u64) as u32,
            RECORD_PIECE as u32 - 1,
        );
        let Some(mut entry) = EVENTS.reserve::<RecordEvent>(0) else {
            count_error(error::EVENTS_LOST);
            return;
        };
        let ptr = entry.as_mut_ptr();
        // SAFETY: reserved ring-buffer memory of this type; `piece` bytes fit.
        unsafe {
            (*ptr).header = Event {
                kind: event::RECORD,
                pid: tgid,
                other: tid,
                value: len.min(i32::MAX as u64) as i32,
                code: off as i32,
                _pad: 0,
                ts_ns: ts,
            };
            (*ptr).len = piece;
            (*ptr)._pad = 0;
            if bpf_probe_read_user(
                (*ptr).bytes.as_mut_ptr() as *mut _,
                piece,
                (buf + off) as *const _,
            ) != 0
            {
                (*ptr).len = 0;
                count_error(error::READ_FAILED);
            }
        }
        entry.submit(0);
        i += 1;
    }
}
