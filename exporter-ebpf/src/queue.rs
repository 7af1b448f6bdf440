//! Request queueing: time from a client's TCP handshake completing (the
//! connection enters the listening socket's accept queue) to a worker
//! accepting it, matched by the peer address accept(2) returns.
//!
//! The handshakes wait in a direct-mapped array, not a hash map: an array
//! lookup is a few inlined instructions, where an LRU insert took ~1 µs here
//! (its eviction scan) and ran for every connection to a listened port.

use aya_ebpf::{
    helpers::bpf_probe_read_user,
    macros::{map, tracepoint},
    maps::{Array, HashMap, PerCpuArray},
    programs::TracePointContext,
};
use exporter_ebpf::{
    abi::{AF_INET, HANDSHAKE_BITS, Handshake, Peer, Queue},
    tracepoint::{
        IPPROTO_TCP, SOCK_DADDR, SOCK_DADDR_V6, SOCK_DPORT, SOCK_FAMILY, SOCK_NEWSTATE,
        SOCK_OLDSTATE, SOCK_PROTOCOL, SOCK_SPORT, TCP_ESTABLISHED, TCP_SYN_RECV,
    },
};

use crate::maps::{CONFIG, field, now};

/// Written by userspace: the TCP ports the masters listen on.
#[map]
pub static LISTEN_PORTS: HashMap<u16, u8> = HashMap::with_max_entries(64, 0);
/// Indexed by [`Peer::slot`]; a connection never accepted (the client gave
/// up) stays until a later handshake takes its slot.
#[map]
pub static HANDSHAKES: Array<Handshake> = Array::with_max_entries(1 << HANDSHAKE_BITS, 0);
#[map]
pub static QUEUE: PerCpuArray<Queue> = PerCpuArray::with_max_entries(1, 0);

/// sock:inet_sock_set_state, SYN_RECV -> ESTABLISHED on a listened port: the
/// connection is in the accept queue now. Runs in softirq; `sport` is ours.
#[tracepoint]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    let read16 = |offset| field::<u16>(&ctx, offset);
    let (old, new) = (
        field::<i32>(&ctx, SOCK_OLDSTATE),
        field::<i32>(&ctx, SOCK_NEWSTATE),
    );
    if old != TCP_SYN_RECV || new != TCP_ESTABLISHED || read16(SOCK_PROTOCOL) != IPPROTO_TCP {
        return 0;
    }
    if LISTEN_PORTS.get_ptr(&read16(SOCK_SPORT)).is_none() {
        return 0;
    }
    let family = read16(SOCK_FAMILY);
    let mut peer = Peer {
        family,
        port: read16(SOCK_DPORT),
        addr: [0; 16],
    };
    // Whole-word loads: the verifier only allows ctx reads at a constant
    // offset from the unmodified context pointer (no byte-copy loop).
    if family == AF_INET {
        peer.addr[..4].copy_from_slice(&field::<u32>(&ctx, SOCK_DADDR).to_ne_bytes());
    } else {
        peer.addr[..8].copy_from_slice(&field::<u64>(&ctx, SOCK_DADDR_V6).to_ne_bytes());
        peer.addr[8..].copy_from_slice(&field::<u64>(&ctx, SOCK_DADDR_V6 + 8).to_ne_bytes());
    }
    if let Some(slot) = HANDSHAKES.get_ptr_mut(peer.slot(HANDSHAKE_BITS)) {
        // SAFETY: an array slot. The time is cleared before the peer changes
        // and set after, so an accept racing on another CPU never pairs this
        // peer with the slot's previous time (x86 keeps stores in order).
        unsafe {
            core::ptr::write_volatile(&mut (*slot).started_ns, 0);
            (*slot).peer = peer;
            core::ptr::write_volatile(&mut (*slot).started_ns, now());
        }
    }
    0
}

/// At accept's exit: the wait of the connection just accepted.
#[inline(always)]
pub fn accepted(peer_sockaddr: u64) {
    if peer_sockaddr == 0 {
        return;
    }
    // SAFETY: the user's sockaddr buffer, just filled by accept; faults safely.
    let Ok(sockaddr) = (unsafe { bpf_probe_read_user(peer_sockaddr as *const [u8; 24]) }) else {
        return;
    };
    let Some(peer) = Peer::from_sockaddr(&sockaddr) else {
        return;
    };
    let Some(slot) = HANDSHAKES.get_ptr_mut(peer.slot(HANDSHAKE_BITS)) else {
        return;
    };
    // SAFETY: an array slot (see inet_sock_set_state for races).
    let slot = unsafe { &mut *slot };
    if slot.started_ns == 0 || slot.peer != peer {
        return;
    }
    let started = core::mem::take(&mut slot.started_ns);
    let (Some(config), Some(queue)) = (CONFIG.get_ptr(0), QUEUE.get_ptr_mut(0)) else {
        return;
    };
    // SAFETY: our CPU's slot; CONFIG is written once before attach.
    unsafe { (*queue).record(now().saturating_sub(started), &(*config).duration_bounds_ns) };
}
