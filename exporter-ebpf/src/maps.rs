//! The maps, and the few operations every program shares.

use aya_ebpf::{
    EbpfContext as _,
    bindings::{BPF_F_NO_PREALLOC, BPF_NOEXIST},
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_ns,
        generated::{bpf_get_current_task_btf, bpf_task_pt_regs},
    },
    macros::map,
    maps::{Array, HashMap, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::TracePointContext,
};
use exporter_ebpf::{
    abi::{
        Aggregate, Config, ConnKey, Event, Heartbeat, MetricKey, Proc, cause, error, flag, role,
    },
    request::{Conn, Finished},
    tracepoint::{PT_REGS_DI, PT_REGS_SI},
};

#[map]
pub static TRACKED: HashMap<u32, Proc> = HashMap::with_max_entries(4096, 0);
#[map]
pub static CONNS: HashMap<ConnKey, Conn> = HashMap::with_max_entries(65536, 0);
/// Not preallocated: memory follows the series in use, not max_entries x CPUs.
#[map]
pub static METRICS: PerCpuHashMap<MetricKey, Aggregate> =
    PerCpuHashMap::with_max_entries(4096, BPF_F_NO_PREALLOC);
#[map]
pub static CONFIG: Array<Config> = Array::with_max_entries(1, 0);
/// A zeroed Aggregate to insert from: it is too big for the 512-byte stack.
#[map]
pub static ZERO: PerCpuArray<Aggregate> = PerCpuArray::with_max_entries(1, 0);
#[map]
pub static ERRORS: PerCpuArray<u64> = PerCpuArray::with_max_entries(error::COUNT, 0);
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);
#[map]
pub static HEARTBEAT: HashMap<u32, Heartbeat> = HashMap::with_max_entries(4096, 0);
#[map]
pub static EXC_PENDING: HashMap<u32, u8> = HashMap::with_max_entries(4096, 0);
#[map]
pub static ACCEPTED: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// A tracepoint field, loaded straight from the context: tracepoint programs
/// may read their record at offsets aligned to the load size, which saves a
/// bpf_probe_read helper call per field.
#[inline(always)]
pub fn field<T: Copy>(ctx: &TracePointContext, offset: usize) -> T {
    // SAFETY: offsets come from the tracepoint formats (userspace checks them
    // against the running kernel before loading) and are aligned to their
    // field; the verifier rejects any access outside the record.
    unsafe { core::ptr::read((ctx.as_ptr() as *const u8).add(offset) as *const T) }
}

#[inline(always)]
pub fn pid_tgid() -> (u32, u32) {
    let id = bpf_get_current_pid_tgid();
    (id as u32, (id >> 32) as u32)
}

#[inline(always)]
pub fn now() -> u64 {
    // SAFETY: a helper without arguments or side effects.
    unsafe { bpf_ktime_get_ns() }
}

#[inline(always)]
pub fn count_error(kind: u32) {
    if let Some(counter) = ERRORS.get_ptr_mut(kind) {
        // SAFETY: a per-CPU slot; programs do not preempt each other on one CPU.
        unsafe { *counter += 1 };
    }
}

#[inline(always)]
pub fn tracked(tgid: u32) -> Option<Proc> {
    // SAFETY: Proc is plain data; a racing update can at worst be read torn,
    // and both fields are only ever written together at insert.
    TRACKED.get_ptr(&tgid).map(|p| unsafe { *p })
}

#[inline(always)]
pub fn is_worker(tgid: u32) -> bool {
    matches!(tracked(tgid), Some(p) if p.role == role::WORKER)
}

/// Adds a finished request to its worker's series. A 5xx or unanswered
/// request of a worker its master is aborting failed by timeout.
#[inline(always)]
pub fn record(tgid: u32, done: &Finished) {
    let Some(config) = CONFIG.get_ptr(0) else {
        return;
    };
    let failed = done.status >= 500 || done.status == 0;
    let aborting = failed && matches!(tracked(tgid), Some(p) if p.flags & flag::ABORTING != 0);
    let cause = if aborting {
        cause::WORKER_TIMEOUT
    } else {
        done.cause
    };
    let key = MetricKey {
        tgid,
        status: done.status,
        method: done.method,
        cause,
    };
    let aggregate = match METRICS.get_ptr_mut(&key) {
        Some(a) => a,
        None => {
            let Some(zero) = ZERO.get_ptr(0) else { return };
            // SAFETY: ZERO is never written. EEXIST (another CPU won the race) is fine.
            let _ = METRICS.insert(&key, unsafe { &*zero }, BPF_NOEXIST as u64);
            match METRICS.get_ptr_mut(&key) {
                Some(a) => a,
                None => return count_error(error::METRICS_FULL),
            }
        }
    };
    // SAFETY: our CPU's copy of the value; CONFIG is written once before attach.
    unsafe { (*aggregate).record(done, &(*config).duration_bounds_ns) };
}

/// Sends a lifecycle event to userspace (see `abi::event` for the fields).
#[inline(always)]
pub fn emit(kind: u32, pid: u32, other: u32, value: i32, code: i32) {
    let event = Event {
        kind,
        pid,
        other,
        value,
        code,
        _pad: 0,
        ts_ns: now(),
    };
    if EVENTS.output::<Event>(&event, 0).is_err() {
        count_error(error::EVENTS_LOST);
    }
}

/// Sets flag bits on a tracked process.
#[inline(always)]
pub fn set_flags(tgid: u32, bits: u32) {
    if let Some(p) = TRACKED.get_ptr_mut(&tgid) {
        // SAFETY: a map value; a lost race between two setters loses a bit
        // only when both run at once for the same process, which the
        // lifecycle never does (exit_group and SIGABRT come from one thread each).
        unsafe { (*p).flags |= bits };
    }
}

/// The first two arguments of the syscall this thread is in, from the
/// registers the kernel saved at its entry (a syscall reads but never changes
/// them; only its return value is written back). Exit programs read them
/// there, so no enter program has to run and stash them.
#[inline(always)]
pub fn syscall_args() -> (u64, u64) {
    // SAFETY: helpers returning the current task and its saved user registers
    // (BTF pointers: the verifier checks each load against struct pt_regs).
    unsafe {
        let regs = bpf_task_pt_regs(bpf_get_current_task_btf()) as *const u64;
        (
            core::ptr::read_volatile(regs.add(PT_REGS_DI / 8)),
            core::ptr::read_volatile(regs.add(PT_REGS_SI / 8)),
        )
    }
}
