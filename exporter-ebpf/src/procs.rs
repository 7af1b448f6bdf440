//! The process tree and its lifecycle: the master's forks become tracked
//! workers in the kernel (no early request of a new worker is missed); execs,
//! deaths, reaps and OOM kills become events. None of these hooks is a
//! syscall tracepoint: they fire on process events only.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_current_comm, bpf_get_current_task},
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
};
use exporter_ebpf::{
    abi::{Heartbeat, Offsets, Proc, discover, error, event, heartbeat, role},
    tracepoint::{CLONE_THREAD, NEWTASK_CLONE_FLAGS, NEWTASK_PID, OOM_PID},
};

use aya_ebpf::{macros::map, maps::HashMap};

use crate::maps::{
    CANDIDATES, DEAD, config, count_error, emit, field, file_of, kernel, offsets, pid_tgid, track,
    tracked, untrack,
};

/// Written by userspace: each worker's heartbeat file, once found.
#[map]
static HEARTBEATS: HashMap<u32, Heartbeat> = HashMap::with_max_entries(16384, 0);

/// task:task_newtask runs in the parent before the child first runs, and
/// carries clone_flags, so threads (CLONE_THREAD) are told from processes.
#[tracepoint]
pub fn task_newtask(ctx: TracePointContext) -> u32 {
    let (_, parent) = pid_tgid();
    let master = matches!(tracked(parent), Some(p) if p.role == role::MASTER);
    if !master && !discovering() {
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
    if !master {
        candidate_fork(parent, child);
        return 0;
    }
    track(child, &Proc::worker(parent));
    emit(event::FORK, child, parent, 0, 0);
    0
}

/// Discovery: a candidate's first fork, for userspace to classify it again
/// now that it has a child. An untracked candidate and its child are
/// tracked at once, as a master and its worker, so a request the child
/// serves before userspace has classified them is counted (userspace
/// untracks them if they are not). The child is a candidate too: `gunicorn
/// --daemon` forks the process that forks the arbiter, then exits.
#[inline(always)]
fn candidate_fork(parent: u32, child: u32) {
    // SAFETY: the value is not kept past the lookup.
    if unsafe { CANDIDATES.get(&parent) }.is_none() {
        return;
    }
    let _ = CANDIDATES.remove(&parent);
    let _ = CANDIDATES.insert(&child, &0, 0);
    if tracked(parent).is_none() {
        track(parent, &Proc::master(parent));
        track(child, &Proc::worker(parent));
    }
    emit(event::CANDIDATE_FORK, parent, child, 0, 0);
}

/// Discovery mode (the exporter watches every master on the host).
#[inline(always)]
fn discovering() -> bool {
    config().is_some_and(|c| c.discover != 0)
}

/// Discovery: an untracked process exec'd a `python*` or `gunicorn*`
/// program (a shebang script's comm is its own name), or any program with
/// --match: a candidate, whose first fork is reported.
#[inline(always)]
fn candidate_exec(tgid: u32) {
    let Some(mode) = config().map(|c| c.discover) else {
        return;
    };
    let candidate = match mode {
        discover::EVERY_EXEC => true,
        discover::NAMED => bpf_get_current_comm()
            .is_ok_and(|comm| comm.starts_with(b"python") || comm.starts_with(b"gunicorn")),
        _ => false,
    };
    if candidate {
        let _ = CANDIDATES.insert(&tgid, &0, 0);
    }
}

/// A tracked process that execs is no longer a worker: on USR2 the master's
/// child execs the new master, whose forks are then followed too.
#[tracepoint]
pub fn sched_process_exec(_ctx: TracePointContext) -> u32 {
    let (_, tgid) = pid_tgid();
    let Some(old) = tracked(tgid) else {
        candidate_exec(tgid);
        return 0;
    };
    track(tgid, &Proc::master(tgid));
    emit(event::EXEC, tgid, old.master, 0, 0);
    0
}

const EEXIST: i32 = -17;

/// sched:sched_process_exit fires for every exiting thread. The process is
/// dead when no thread is left alive: `signal->live` (which do_exit has just
/// decremented) is 0. That is the kernel's own test for `group_dead`, which
/// only recent kernels pass to the tracepoint. Two threads exiting at once
/// may both see 0: DEAD's insert lets only the first report it.
#[tracepoint]
pub fn sched_process_exit(_ctx: TracePointContext) -> u32 {
    let (_, tgid) = pid_tgid();
    let Some(p) = tracked(tgid) else { return 0 };
    let Some(off) = offsets() else { return 0 };
    // SAFETY: a helper without arguments.
    let task = unsafe { bpf_get_current_task() };
    let signal: u64 = kernel(task, off.task_signal);
    let live: i32 = kernel(signal, off.signal_live);
    if live != 0 || signal == 0 {
        return 0;
    }
    // The wait status the parent will see (exit code << 8, or the signal).
    let status: i32 = kernel(task, off.task_exit_code);
    match DEAD.insert(&tgid, &[status as u32, p.master], BPF_NOEXIST as u64) {
        Ok(()) => {}
        Err(EEXIST) => return 0,
        Err(_) => count_error(error::TRACKED_FULL),
    }
    untrack(tgid);
    emit(
        event::EXIT,
        tgid,
        p.master,
        status,
        heartbeat_state(task, tgid, off),
    );
    0
}

/// Whether the dying worker `tgid` (the current task, its files not yet
/// released: that comes after this tracepoint) still holds its heartbeat
/// file ([`heartbeat`]).
#[inline(always)]
fn heartbeat_state(task: u64, tgid: u32, off: &Offsets) -> i32 {
    let Some(beat) = HEARTBEATS.get_ptr(&tgid) else {
        return heartbeat::UNKNOWN;
    };
    // SAFETY: plain data.
    let beat = unsafe { *beat };
    let _ = HEARTBEATS.remove(&tgid);
    let file = file_of(task, beat.fd, off);
    let inode: u64 = kernel(file, off.file_inode);
    let ino: u64 = kernel(inode, off.inode_ino);
    if file != 0 && ino == beat.ino {
        heartbeat::OPEN
    } else {
        heartbeat::CLOSED
    }
}

/// sched:sched_process_free: a task is released, which for a dead process's
/// leader happens once its parent reaped it (wait) - Gunicorn's child_exit
/// moment - and an RCU grace period passed. Runs in any context: the task
/// comes as the raw tracepoint's argument.
#[raw_tracepoint(tracepoint = "sched_process_free")]
pub fn sched_process_free(ctx: RawTracePointContext) -> i32 {
    let task: u64 = ctx.arg(0);
    let Some(off) = offsets() else { return 0 };
    let pid: u32 = kernel(task, off.task_pid);
    let Some(dead) = DEAD.get_ptr(&pid) else {
        return 0;
    };
    // A thread of the process shares its tgid, not its pid.
    let tgid: u32 = kernel(task, off.task_tgid);
    if tgid != pid {
        return 0;
    }
    // SAFETY: plain data.
    let [status, master] = unsafe { *dead };
    let _ = DEAD.remove(&pid);
    emit(event::REAP, master, pid, status as i32, 0);
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
