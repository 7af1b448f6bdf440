//! The eBPF programs. Built for `bpfel-unknown-none` by the exporter's build
//! script; on the host this binary is empty (only the library is used there).
#![cfg_attr(target_arch = "bpf", no_std, no_main)]

#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod net;
#[cfg(target_arch = "bpf")]
mod procs;
#[cfg(target_arch = "bpf")]
mod queue;
#[cfg(target_arch = "bpf")]
mod signals;

/// Does nothing: `--empty-programs` attaches it everywhere to measure the
/// cost floor of tracing itself.
#[cfg(target_arch = "bpf")]
#[aya_ebpf::macros::tracepoint]
pub fn empty(_ctx: aya_ebpf::programs::TracePointContext) -> u32 {
    0
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
