//! Following the process tree: the master's forks become tracked workers in
//! the kernel (no early request of a new worker is missed), exits untrack them.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use exporter_ebpf::{
    abi::{error, event, role, Event, Proc},
    tracepoint::{CLONE_THREAD, EXIT_GROUP_DEAD, NEWTASK_CLONE_FLAGS, NEWTASK_PID},
};

use crate::maps::{count_error, emit, now, pid_tgid, tracked, STASH, TRACKED};

/// task:task_newtask runs in the parent before the child first runs, and
/// carries clone_flags, so threads (CLONE_THREAD) are told from processes.
#[tracepoint]
pub fn task_newtask(ctx: TracePointContext) -> u32 {
    let (_, parent) = pid_tgid();
    if !matches!(tracked(parent), Some(p) if p.role == role::MASTER) {
        return 0;
    }
    // SAFETY: offsets from the tracepoint's format, checked by userspace at load.
    let (flags, child) = unsafe {
        (ctx.read_at::<u64>(NEWTASK_CLONE_FLAGS).unwrap_or(CLONE_THREAD), ctx.read_at::<i32>(NEWTASK_PID).unwrap_or(0))
    };
    if flags & CLONE_THREAD != 0 || child <= 0 {
        return 0;
    }
    let child = child as u32;
    if TRACKED.insert(&child, &Proc { role: role::WORKER, master: parent }, 0).is_err() {
        count_error(error::TRACKED_FULL);
    }
    emit(&Event { kind: event::FORK, pid: child, ppid: parent, _pad: 0, ts_ns: now() });
    0
}

/// sched:sched_process_exit fires for every exiting thread; the last one
/// (group_dead) ends the process.
#[tracepoint]
pub fn sched_process_exit(ctx: TracePointContext) -> u32 {
    let (tid, tgid) = pid_tgid();
    let _ = STASH.remove(&tid);
    // SAFETY: as above.
    let group_dead = unsafe { ctx.read_at::<u8>(EXIT_GROUP_DEAD).unwrap_or(0) };
    if group_dead == 0 {
        return 0;
    }
    let Some(proc_) = tracked(tgid) else { return 0 };
    let _ = TRACKED.remove(&tgid);
    emit(&Event { kind: event::EXIT, pid: tgid, ppid: proc_.master, _pad: 0, ts_ns: now() });
    0
}
