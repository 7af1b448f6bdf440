//! The eBPF programs. Built for `bpfel-unknown-none` by the exporter's build
//! script; on the host this binary is empty (only the library is used there).
//!
//! - `procs`, `signals`: the process tree and its lifecycle (every kernel);
//! - `sockets`: client-socket I/O from the socket-layer tracepoints;
//! - `syscalls`: the same from syscall tracepoints, where those are missing;
//! - `conns`: the glue both run the shared request state machine through;
//! - `queue`: time from TCP handshake to worker; `records`: traceback records;
//! - `routes`: a request's route key and the per-route series.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]
// The WATCHED counts' atomic add (see maps::count_watched).
#![cfg_attr(
    target_arch = "bpf",
    allow(internal_features),
    feature(core_intrinsics)
)]

#[cfg(target_arch = "bpf")]
mod conns;
#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod procs;
#[cfg(target_arch = "bpf")]
mod queue;
#[cfg(target_arch = "bpf")]
mod records;
#[cfg(target_arch = "bpf")]
mod routes;
#[cfg(target_arch = "bpf")]
mod signals;
#[cfg(target_arch = "bpf")]
mod sockets;
#[cfg(target_arch = "bpf")]
mod syscalls;

/// Programs that do nothing: `--empty-programs` attaches them in place of the
/// real ones to measure the cost floor of the hooks themselves.
#[cfg(target_arch = "bpf")]
mod empty {
    use aya_ebpf::{
        macros::{raw_tracepoint, tracepoint, uprobe},
        programs::{ProbeContext, RawTracePointContext, TracePointContext},
    };

    #[tracepoint]
    pub fn empty(_ctx: TracePointContext) -> u32 {
        0
    }

    #[raw_tracepoint]
    pub fn empty_raw(_ctx: RawTracePointContext) -> i32 {
        0
    }

    #[uprobe]
    pub fn empty_uprobe(_ctx: ProbeContext) -> u32 {
        0
    }
}

/// Programs only loaded (never attached) at start, to learn whether the
/// running kernel has the helpers the real programs call: a load that fails
/// names the missing helper, instead of a verifier dump at the real load.
#[cfg(target_arch = "bpf")]
mod probe {
    use core::ffi::c_void;

    use aya_ebpf::{
        helpers::generated::{bpf_get_current_task_btf, bpf_loop, bpf_task_pt_regs},
        macros::raw_tracepoint,
        programs::RawTracePointContext,
    };

    #[raw_tracepoint]
    pub fn probe_task_pt_regs(_ctx: RawTracePointContext) -> i32 {
        // SAFETY: the helpers take the current task's BTF pointer.
        unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) as i32 }
    }

    #[inline(never)]
    extern "C" fn step(_index: u32, _ctx: *mut c_void) -> i64 {
        1
    }

    #[raw_tracepoint]
    pub fn probe_loop(_ctx: RawTracePointContext) -> i32 {
        // SAFETY: a callback that only stops the loop.
        unsafe { bpf_loop(1, step as *mut c_void, core::ptr::null_mut(), 0) as i32 }
    }
}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: the verifier rejects programs whose panics are reachable, so this never runs.
    unsafe { core::hint::unreachable_unchecked() }
}

#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";

#[cfg(not(target_arch = "bpf"))]
fn main() {}
