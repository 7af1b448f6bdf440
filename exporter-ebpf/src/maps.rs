//! The maps, and the few operations every program shares.

use aya_ebpf::{
    EbpfContext as _,
    bindings::{BPF_F_MMAPABLE, BPF_F_NO_PREALLOC, BPF_NOEXIST},
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_ns,
        generated::{bpf_get_current_task_btf, bpf_task_pt_regs},
    },
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::TracePointContext,
};
use exporter_ebpf::{
    abi::{
        Aggregate, Config, ConnKey, DURATION_SLOTS, Event, FailedEvent, MasterStats, MetricKey,
        Offsets, Proc, WATCH_SLOTS, cause, error, event, flag, role, watch_slot,
    },
    request::{Conn, Finished},
    tracepoint::{PT_REGS_DI, PT_REGS_DX, PT_REGS_ORIG_AX, PT_REGS_SI},
};

#[map]
pub static TRACKED: HashMap<u32, Proc> = HashMap::with_max_entries(4096, 0);
/// How many TRACKED entries fall in each slot (`watch_slot`), counted before
/// an entry is added and after it is gone: a zero proves a process is not
/// tracked with one array read the verifier inlines, where the hash lookup
/// costs every other process's socket I/O a hash and a few cache misses.
/// Userspace counts its own entries in it through a mapping (mmap).
#[map]
pub static WATCHED: Array<u64> = Array::with_max_entries(WATCH_SLOTS, BPF_F_MMAPABLE);
#[map]
pub static CONNS: HashMap<ConnKey, Conn> = HashMap::with_max_entries(65536, 0);
/// Not preallocated: memory follows the series in use, not max_entries x CPUs.
/// Sized for a node of 64 masters and 1,024 workers with 16 (method, status)
/// series each; beyond, a request is counted as `metrics_map_full`.
#[map]
pub static METRICS: PerCpuHashMap<MetricKey, Aggregate> =
    PerCpuHashMap::with_max_entries(16384, BPF_F_NO_PREALLOC);
#[map]
pub static CONFIG: Array<Config> = Array::with_max_entries(1, 0);
/// The failed request being sent to userspace (kept off the stack).
#[map]
static FAILED_BUF: PerCpuArray<FailedEvent> = PerCpuArray::with_max_entries(1, 0);
/// A zeroed Aggregate to insert from: it is too big for the 512-byte stack.
/// (A new MasterStats is inserted from it too: it is smaller.)
#[map]
pub static ZERO: PerCpuArray<Aggregate> = PerCpuArray::with_max_entries(1, 0);
const _: () = assert!(core::mem::size_of::<MasterStats>() <= core::mem::size_of::<Aggregate>());
#[map]
pub static ERRORS: PerCpuArray<u64> = PerCpuArray::with_max_entries(error::COUNT, 0);
/// Per master. Not preallocated; 1,024 entries are 64 masters many times
/// over (each re-exec is a new master, and discovery keeps an exited one's
/// series for its grace); userspace removes those it no longer shows.
#[map]
pub static MASTER_STATS: PerCpuHashMap<u32, MasterStats> =
    PerCpuHashMap::with_max_entries(1024, BPF_F_NO_PREALLOC);
/// Lifecycle events, failed requests and traceback records, in order.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);
/// tgid -> (wait status, master) of a watched process between its death and
/// its reaping.
#[map]
pub static DEAD: HashMap<u32, [u32; 2]> = HashMap::with_max_entries(4096, 0);
/// Discovery's candidates (see `abi::map::CANDIDATES`).
#[map]
pub static CANDIDATES: LruHashMap<u32, u32> = LruHashMap::with_max_entries(4096, 0);

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

/// A classic tracepoint's field, loaded straight from the context: tracepoint
/// programs may read their record at offsets aligned to the load size, which
/// saves a helper call per field.
#[inline(always)]
pub fn field<T: Copy>(ctx: &TracePointContext, offset: usize) -> T {
    // SAFETY: offsets come from the tracepoint formats (userspace checks them
    // against the running kernel before loading) and are aligned to their
    // field; the verifier rejects any access outside the record.
    unsafe { core::ptr::read((ctx.as_ptr() as *const u8).add(offset) as *const T) }
}

/// The configuration userspace wrote before attaching.
#[inline(always)]
pub fn config() -> Option<&'static Config> {
    // SAFETY: written once before the programs are attached, read-only after.
    CONFIG.get_ptr(0).map(|c| unsafe { &*c })
}

#[inline(always)]
pub fn offsets() -> Option<&'static Offsets> {
    config().map(|c| &c.offsets)
}

/// `value & mask`, the mask kept: LLVM drops a mask it can prove redundant,
/// but older verifiers (6.1) lose a value's lower bound on the way to a
/// helper's size argument and need the mask in the code to accept it.
#[inline(always)]
pub fn bounded(value: u32, mask: u32) -> u32 {
    // SAFETY: a volatile read of a local: LLVM no longer knows its range.
    unsafe { core::ptr::read_volatile(&value) & mask }
}

/// A kernel struct field at `base + off` (0 when unreadable). No branch on
/// the outcome: the helper zeroes the destination when it fails, so every
/// read leaves the verifier one path with an unknown value, not two (a known
/// 0 and an unknown), which doubled the paths to verify at each read.
#[inline(always)]
pub fn kernel<T: Copy + Default>(base: u64, off: u32) -> T {
    let mut value = T::default();
    // SAFETY: the helper faults safely on a bad kernel address and writes at
    // most size_of::<T>() bytes into `value`.
    unsafe {
        aya_ebpf::helpers::generated::bpf_probe_read_kernel(
            &mut value as *mut T as *mut _,
            core::mem::size_of::<T>() as u32,
            (base + off as u64) as *const _,
        )
    };
    value
}

#[inline(always)]
pub fn count_error(kind: u32) {
    if let Some(counter) = ERRORS.get_ptr_mut(kind) {
        // SAFETY: a per-CPU slot; programs do not preempt each other on one CPU.
        unsafe { *counter += 1 };
    }
}

/// This CPU's statistics of worker `tgid`'s master, added if new (None,
/// counted, when they could not be).
#[inline(always)]
pub fn master_stats(tgid: u32) -> Option<&'static mut MasterStats> {
    let master = master_of(tgid);
    if MASTER_STATS.get_ptr_mut(&master).is_none() {
        let zero = ZERO.get_ptr(0)?;
        // SAFETY: ZERO is never written, and is larger than a MasterStats
        // (asserted above). EEXIST (another CPU won the race) is fine.
        let zero = unsafe { &*(zero as *const MasterStats) };
        let _ = MASTER_STATS.insert(&master, zero, BPF_NOEXIST as u64);
    }
    match MASTER_STATS.get_ptr_mut(&master) {
        // SAFETY: this CPU's copy of a map value.
        Some(stats) => Some(unsafe { &mut *stats }),
        None => {
            count_error(error::MASTER_STATS_FULL);
            None
        }
    }
}

/// A response of worker `tgid` whose end its framing did not tell.
#[inline(always)]
pub fn count_unframed(tgid: u32) {
    if let Some(stats) = master_stats(tgid) {
        stats.unframed += 1;
    }
}

/// The master of tracked process `tgid` (0 if it is not tracked): read in
/// place, no copy of the entry on the stack.
#[inline(always)]
pub fn master_of(tgid: u32) -> u32 {
    // SAFETY: a map value; a racing update can at worst be read torn.
    TRACKED.get_ptr(&tgid).map_or(0, |p| unsafe { (*p).master })
}

#[inline(always)]
pub fn tracked(tgid: u32) -> Option<Proc> {
    if !watched(tgid) {
        return None;
    }
    // SAFETY: Proc is plain data; a racing update can at worst be read torn.
    TRACKED.get_ptr(&tgid).map(|p| unsafe { *p })
}

/// Whether `tgid` may be tracked: false proves it is not ([`WATCHED`]).
#[inline(always)]
pub fn watched(tgid: u32) -> bool {
    matches!(WATCHED.get(watch_slot(tgid)), Some(&n) if n != 0)
}

/// Adds `delta` (1, or -1 as u64) to WATCHED's count for `tgid`: an atomic
/// add (BPF has no compare-and-swap before v3, so core's atomics are not
/// offered for it; the add is in every version).
#[inline(always)]
fn count_watched(tgid: u32, delta: u64) {
    if let Some(n) = WATCHED.get_ptr_mut(watch_slot(tgid)) {
        // SAFETY: a map value, shared with other CPUs and userspace.
        unsafe {
            core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(
                n, delta,
            )
        };
    }
}

/// Tracks `tgid` as `proc_` (replacing what it was), counted in WATCHED
/// first when the entry is new.
#[inline(always)]
pub fn track(tgid: u32, proc_: &Proc) {
    count_watched(tgid, 1);
    match TRACKED.insert(&tgid, proc_, BPF_NOEXIST as u64) {
        Ok(()) => {}
        Err(EEXIST) => {
            let _ = TRACKED.insert(&tgid, proc_, 0);
            count_watched(tgid, u64::MAX);
        }
        Err(_) => {
            count_watched(tgid, u64::MAX);
            count_error(error::TRACKED_FULL);
        }
    }
}

/// Stops tracking `tgid` (its count in WATCHED goes once the entry has).
#[inline(always)]
pub fn untrack(tgid: u32) {
    if TRACKED.remove(&tgid).is_ok() {
        count_watched(tgid, u64::MAX);
    }
}

const EEXIST: i32 = -17;

/// The tracked worker `tgid`, if it is one.
#[inline(always)]
pub fn worker(tgid: u32) -> Option<Proc> {
    tracked(tgid).filter(|p| p.role == role::WORKER)
}

/// The `struct file *` behind descriptor `fd` of `task`
/// (task->files->fdt->fd[fd]), or 0.
#[inline(always)]
pub fn file_of(task: u64, fd: u32, off: &Offsets) -> u64 {
    let files: u64 = kernel(task, off.task_files);
    let fdt: u64 = kernel(files, off.files_fdt);
    let fds: u64 = kernel(fdt, off.fdt_fd);
    kernel(fds, fd.wrapping_mul(8))
}

/// Adds a finished request to its worker's series; a failed one also goes
/// to userspace, which tells why it failed.
#[inline(never)]
pub fn record(tgid: u32, done: &Finished) {
    let Some(config) = config() else { return };
    let key = MetricKey {
        tgid,
        status: done.status,
        method: done.method,
        _pad: 0,
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
    add(aggregate, done, &config.duration_bounds_ns);
    crate::routes::record(tgid, done, config);
    if done.failed() {
        failed(tgid, done);
    }
}

/// Adds a finished request to a series: one copy of the bucket arithmetic
/// for the worker's series and the route's. Inlined in `record` twice, its
/// registers spilled there took `record`'s frame past what the read
/// programs' chain of calls may use on 6.1 and 6.12 (512 bytes in all).
#[inline(never)]
pub fn add(aggregate: *mut Aggregate, done: &Finished, bounds: &[u64; DURATION_SLOTS]) {
    // SAFETY: our CPU's copy of a map value.
    unsafe { (*aggregate).record(done, bounds) };
}

/// Adds `n` response bytes written past a recorded response's end to its
/// series (the request was counted when its framing said it ended).
#[inline(never)]
pub fn add_late_bytes(tgid: u32, conn: &Conn, n: u64) {
    let (status, method) = (conn.status, conn.method);
    let key = MetricKey {
        tgid,
        status,
        method,
        _pad: 0,
    };
    if let Some(aggregate) = METRICS.get_ptr_mut(&key) {
        // SAFETY: our CPU's copy of the value.
        unsafe { (*aggregate).resp_bytes_sum += n };
    }
    if matches!(config(), Some(c) if c.routes != 0) {
        crate::routes::add_late_bytes(tgid, conn.route, status, method, n);
    }
}

#[inline(always)]
fn failed(tgid: u32, done: &Finished) {
    // The flags read in place (a copy of the entry took stack, see below).
    // SAFETY: a map value; a racing update can at worst be read torn.
    let aborting = watched(tgid)
        && matches!(TRACKED.get_ptr(&tgid), Some(p) if unsafe { (*p).flags } & flag::ABORTING != 0);
    let Some(ev) = FAILED_BUF.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's map value. Written field by field: a FailedEvent
    // built on the stack took record's frame past what 6.1 allows a chain
    // of calls (512 bytes from the program to its deepest call).
    let ev = unsafe { &mut *ev };
    ev.header.kind = event::FAILED;
    ev.header.pid = tgid;
    ev.header.other = done.tid;
    ev.header.value = done.status as i32;
    ev.header.code = 0;
    ev.header._pad = 0;
    ev.header.ts_ns = done.end_ns;
    ev.start_ns = done.start_ns;
    ev.target = done.target;
    ev.method = done.method;
    ev.target_len = done.target_len;
    ev.cut = done.cut as u8;
    ev.cause = if aborting {
        cause::WORKER_TIMEOUT
    } else {
        cause::NONE
    };
    ev.route = done.route;
    if EVENTS.output::<FailedEvent>(ev, 0).is_err() {
        count_error(error::EVENTS_LOST);
    }
}

/// Sends a lifecycle event to userspace (see `abi::event` for the fields).
#[inline(always)]
pub fn emit(kind: u32, pid: u32, other: u32, value: i32, code: i32) {
    let event = Event::new(kind, pid, other, value, code, now());
    if EVENTS.output::<Event>(&event, 0).is_err() {
        count_error(error::EVENTS_LOST);
    }
}

/// Sets flag bits on a tracked process.
#[inline(always)]
pub fn set_flags(tgid: u32, bits: u32) {
    if let Some(p) = TRACKED.get_ptr_mut(&tgid) {
        // SAFETY: a map value; the only writer of flags is SIGABRT's generation.
        unsafe { (*p).flags |= bits };
    }
}

/// The syscall this thread is in, from the registers the kernel saved at its
/// entry (a syscall reads but never changes them; only its return value is
/// written back): its number and first three arguments. Programs that run
/// inside a syscall (its exit, or a socket tracepoint) read them there, so no
/// enter program has to stash them.
#[derive(Clone, Copy)]
pub struct Syscall {
    pub nr: u64,
    pub arg0: u64,
    pub arg1: u64,
    pub arg2: u64,
}

#[inline(always)]
pub fn syscall() -> Syscall {
    // SAFETY: helpers returning the current task and its saved user registers
    // (BTF pointers: the verifier checks each load against struct pt_regs).
    unsafe {
        let regs = bpf_task_pt_regs(bpf_get_current_task_btf()) as *const u64;
        Syscall {
            nr: core::ptr::read_volatile(regs.add(PT_REGS_ORIG_AX / 8)),
            arg0: core::ptr::read_volatile(regs.add(PT_REGS_DI / 8)),
            arg1: core::ptr::read_volatile(regs.add(PT_REGS_SI / 8)),
            arg2: core::ptr::read_volatile(regs.add(PT_REGS_DX / 8)),
        }
    }
}
