//! The process tree and its lifecycle: the master's forks become tracked
//! workers in the kernel (no early request of a new worker is missed); execs,
//! exits, reaps, listens, heartbeats and OOM kills become events.

use aya_ebpf::{helpers::bpf_probe_read_user, macros::tracepoint, programs::TracePointContext};
use exporter_ebpf::{
    abi::{Heartbeat, NO_EXIT_CODE, Proc, error, event, flag, role},
    tracepoint::{
        ARG0, ARG1, CLONE_THREAD, EXIT_GROUP_DEAD, NEWTASK_CLONE_FLAGS, NEWTASK_PID, OOM_PID, RET,
    },
};

use crate::maps::{
    HEARTBEAT, TRACKED, count_error, emit, field, now, pid_tgid, syscall_args, tracked,
};

#[inline(always)]
fn is_master(tgid: u32) -> bool {
    matches!(tracked(tgid), Some(p) if p.role == role::MASTER)
}

/// task:task_newtask runs in the parent before the child first runs, and
/// carries clone_flags, so threads (CLONE_THREAD) are told from processes.
#[tracepoint]
pub fn task_newtask(ctx: TracePointContext) -> u32 {
    let (_, parent) = pid_tgid();
    if !is_master(parent) {
        return 0;
    }
    let (flags, child) = (
        field::<u64>(&ctx, NEWTASK_CLONE_FLAGS),
        field::<i32>(&ctx, NEWTASK_PID),
    );
    if flags & CLONE_THREAD != 0 || child <= 0 {
        return 0;
    }
    let child = child as u32;
    if TRACKED.insert(&child, &Proc::worker(parent), 0).is_err() {
        count_error(error::TRACKED_FULL);
    }
    emit(event::FORK, child, parent, 0, 0);
    0
}

/// A tracked process that execs is no longer a worker: on USR2 the master's
/// child execs the new master, whose forks are then followed too.
#[tracepoint]
pub fn sched_process_exec(_ctx: TracePointContext) -> u32 {
    let (_, tgid) = pid_tgid();
    let Some(old) = tracked(tgid) else { return 0 };
    if TRACKED.insert(&tgid, &Proc::master(tgid), 0).is_err() {
        count_error(error::TRACKED_FULL);
    }
    emit(event::EXEC, tgid, old.master, 0, 0);
    0
}

/// exit_group's code, kept until the process's last thread is gone.
#[tracepoint]
pub fn sys_enter_exit_group(ctx: TracePointContext) -> u32 {
    let (_, tgid) = pid_tgid();
    if let Some(p) = TRACKED.get_ptr_mut(&tgid) {
        // SAFETY: offset from the syscall layout; a map value of this type.
        unsafe {
            (*p).exit_code = field::<u64>(&ctx, ARG0) as i32;
            (*p).flags |= flag::EXITED;
        }
    }
    0
}

/// sched:sched_process_exit fires for every exiting thread; the last one
/// (group_dead) ends the process.
#[tracepoint]
pub fn sched_process_exit(ctx: TracePointContext) -> u32 {
    let (_, tgid) = pid_tgid();
    let group_dead = field::<u8>(&ctx, EXIT_GROUP_DEAD);
    if group_dead == 0 {
        return 0;
    }
    let Some(p) = tracked(tgid) else { return 0 };
    let _ = TRACKED.remove(&tgid);
    let _ = HEARTBEAT.remove(&tgid);
    let code = if p.flags & flag::EXITED != 0 {
        p.exit_code
    } else {
        NO_EXIT_CODE
    };
    emit(event::EXIT, tgid, p.master, code, 0);
    0
}

/// wait4 in a master: report the reaped child and its status.
#[tracepoint]
pub fn sys_exit_wait4(ctx: TracePointContext) -> u32 {
    let child = field::<i64>(&ctx, RET);
    if child <= 0 {
        return 0;
    }
    let (_, tgid) = pid_tgid();
    if !is_master(tgid) {
        return 0;
    }
    let (_, status_ptr) = syscall_args();
    let status = if status_ptr == 0 {
        0
    } else {
        // SAFETY: the user's status pointer; the helper faults safely.
        unsafe { bpf_probe_read_user(status_ptr as *const i32).unwrap_or(0) }
    };
    emit(event::REAP, tgid, child as u32, status, 0);
    0
}

#[tracepoint]
pub fn sys_enter_listen(_ctx: TracePointContext) -> u32 {
    let (_, tgid) = pid_tgid();
    if is_master(tgid) {
        emit(event::LISTEN, tgid, tgid, 0, 0);
    }
    0
}

/// A worker's heartbeat: gunicorn touches its heartbeat file with
/// futimens(fd), i.e. utimensat with a NULL path. The first one after boot
/// means the worker is initialised.
#[tracepoint]
pub fn sys_enter_utimensat(ctx: TracePointContext) -> u32 {
    let (_, tgid) = pid_tgid();
    let path = field::<u64>(&ctx, ARG1);
    if path != 0 {
        return 0;
    }
    let Some(p) = tracked(tgid) else { return 0 };
    if p.role != role::WORKER {
        return 0;
    }
    let beat = Heartbeat {
        ts_ns: now(),
        fd: field::<u64>(&ctx, ARG0) as u32,
        _pad: 0,
    };
    match HEARTBEAT.get_ptr_mut(&tgid) {
        // SAFETY: this worker's entry; removed only when it exits.
        Some(slot) => unsafe { *slot = beat },
        None => {
            if HEARTBEAT.insert(&tgid, &beat, 0).is_err() {
                count_error(error::TRACKED_FULL);
            }
            emit(event::BOOTED, tgid, p.master, 0, 0);
        }
    }
    0
}

#[tracepoint]
pub fn mark_victim(ctx: TracePointContext) -> u32 {
    let pid = field::<i32>(&ctx, OOM_PID) as u32;
    if let Some(p) = tracked(pid) {
        emit(event::OOM, pid, p.master, 0, 0);
    }
    0
}
