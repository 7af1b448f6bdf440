//! Signals to and from the watched processes: the master's kill()s, the
//! signals it receives, and what kills a worker.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use exporter_ebpf::{
    abi::{event, flag, role},
    tracepoint::{DELIVER_SA_HANDLER, DELIVER_SIG, GENERATE_CODE, GENERATE_PID, GENERATE_SIG},
};

use crate::maps::{emit, field, pid_tgid, set_flags, tracked};

const SIGABRT: i32 = 6;
/// `sa_handler` values that are not a handler: SIG_DFL, SIG_IGN.
const SIG_IGN: u64 = 1;

/// signal:signal_generate runs in the sender; `pid` is the target task.
#[tracepoint]
pub fn signal_generate(ctx: TracePointContext) -> u32 {
    let (_, sender) = pid_tgid();
    let (sig, code, target) = (
        field::<i32>(&ctx, GENERATE_SIG),
        field::<i32>(&ctx, GENERATE_CODE),
        field::<i32>(&ctx, GENERATE_PID) as u32,
    );
    let to = tracked(target);
    if to.is_none() && tracked(sender).is_none() {
        return 0;
    }
    if let Some(worker) = to {
        // gunicorn's worker timeout: the master aborts the worker.
        if sig == SIGABRT && worker.role == role::WORKER && worker.master == sender {
            set_flags(target, flag::ABORTING);
        }
    }
    emit(event::SIGNAL, target, sender, sig, code);
    0
}

/// signal:signal_deliver runs in the receiver as it takes the signal.
#[tracepoint]
pub fn signal_deliver(ctx: TracePointContext) -> u32 {
    let (_, tgid) = pid_tgid();
    if tracked(tgid).is_none() {
        return 0;
    }
    let (sig, handler) = (
        field::<i32>(&ctx, DELIVER_SIG),
        field::<u64>(&ctx, DELIVER_SA_HANDLER),
    );
    emit(event::DELIVER, tgid, tgid, sig, (handler > SIG_IGN) as i32);
    0
}
