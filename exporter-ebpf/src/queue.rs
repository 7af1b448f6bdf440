//! Request queueing: time from a client's TCP handshake completing (the
//! connection enters the listening socket's accept queue) to a worker
//! accepting it, matched by the peer address accept(2) returns.

use aya_ebpf::{
    helpers::bpf_probe_read_user,
    macros::{map, tracepoint},
    maps::{HashMap, LruHashMap, PerCpuArray},
    programs::TracePointContext,
};
use exporter_ebpf::{
    abi::{Peer, Queue, Stash, AF_INET},
    tracepoint::{
        IPPROTO_TCP, SOCK_DADDR, SOCK_DADDR_V6, SOCK_DPORT, SOCK_FAMILY, SOCK_NEWSTATE, SOCK_OLDSTATE, SOCK_PROTOCOL,
        SOCK_SPORT, TCP_ESTABLISHED, TCP_SYN_RECV,
    },
};

use crate::maps::{field, now, CONFIG};

/// Written by userspace: the TCP ports the masters listen on.
#[map]
pub static LISTEN_PORTS: HashMap<u16, u8> = HashMap::with_max_entries(64, 0);
/// LRU: a connection that is never accepted (the client gave up) ages out.
#[map]
pub static HANDSHAKES: LruHashMap<Peer, u64> = LruHashMap::with_max_entries(16384, 0);
#[map]
pub static QUEUE: PerCpuArray<Queue> = PerCpuArray::with_max_entries(1, 0);

/// sock:inet_sock_set_state, SYN_RECV -> ESTABLISHED on a listened port: the
/// connection is in the accept queue now. Runs in softirq; `sport` is ours.
#[tracepoint]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    let read16 = |offset| field::<u16>(&ctx, offset);
    let (old, new) = (field::<i32>(&ctx, SOCK_OLDSTATE), field::<i32>(&ctx, SOCK_NEWSTATE));
    if old != TCP_SYN_RECV || new != TCP_ESTABLISHED || read16(SOCK_PROTOCOL) != IPPROTO_TCP {
        return 0;
    }
    if LISTEN_PORTS.get_ptr(&read16(SOCK_SPORT)).is_none() {
        return 0;
    }
    let family = read16(SOCK_FAMILY);
    let mut peer = Peer { family, port: read16(SOCK_DPORT), addr: [0; 16] };
    // Whole-word loads: the verifier only allows ctx reads at a constant
    // offset from the unmodified context pointer (no byte-copy loop).
    if family == AF_INET {
        peer.addr[..4].copy_from_slice(&field::<u32>(&ctx, SOCK_DADDR).to_ne_bytes());
    } else {
        peer.addr[..8].copy_from_slice(&field::<u64>(&ctx, SOCK_DADDR_V6).to_ne_bytes());
        peer.addr[8..].copy_from_slice(&field::<u64>(&ctx, SOCK_DADDR_V6 + 8).to_ne_bytes());
    }
    let _ = HANDSHAKES.insert(&peer, &now(), 0);
    0
}

/// At accept's exit: the wait of the connection just accepted.
#[inline(always)]
pub fn accepted(stash: &Stash) {
    if stash.buf == 0 {
        return;
    }
    // SAFETY: the user's sockaddr buffer, just filled by accept; faults safely.
    let Ok(sockaddr) = (unsafe { bpf_probe_read_user(stash.buf as *const [u8; 24]) }) else { return };
    let Some(peer) = Peer::from_sockaddr(&sockaddr) else { return };
    // SAFETY: a u64 map value. Not removed: the next handshake from this
    // peer overwrites it before its accept, and the LRU ages it out (a
    // delete would cost more than the whole lookup).
    let Some(started) = HANDSHAKES.get_ptr(&peer).map(|t| unsafe { *t }) else { return };
    let (Some(config), Some(queue)) = (CONFIG.get_ptr(0), QUEUE.get_ptr_mut(0)) else { return };
    // SAFETY: our CPU's slot; CONFIG is written once before attach.
    unsafe { (*queue).record(now().saturating_sub(started), &(*config).duration_bounds_ns) };
}
