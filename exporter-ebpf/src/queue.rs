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

use crate::maps::{now, CONFIG};

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
    // SAFETY: offsets from the tracepoint's format, checked by userspace at load.
    let read16 = |offset| unsafe { ctx.read_at::<u16>(offset).unwrap_or(0) };
    // SAFETY: as above.
    let (old, new) = unsafe {
        (ctx.read_at::<i32>(SOCK_OLDSTATE).unwrap_or(0), ctx.read_at::<i32>(SOCK_NEWSTATE).unwrap_or(0))
    };
    if old != TCP_SYN_RECV || new != TCP_ESTABLISHED || read16(SOCK_PROTOCOL) != IPPROTO_TCP {
        return 0;
    }
    if LISTEN_PORTS.get_ptr(&read16(SOCK_SPORT)).is_none() {
        return 0;
    }
    let family = read16(SOCK_FAMILY);
    let mut peer = Peer { family, port: read16(SOCK_DPORT), addr: [0; 16] };
    // SAFETY: as above.
    unsafe {
        if family == AF_INET {
            let v4 = ctx.read_at::<[u8; 4]>(SOCK_DADDR).unwrap_or([0; 4]);
            peer.addr[..4].copy_from_slice(&v4);
        } else {
            peer.addr = ctx.read_at::<[u8; 16]>(SOCK_DADDR_V6).unwrap_or([0; 16]);
        }
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
    // SAFETY: a u64 map value.
    let Some(started) = HANDSHAKES.get_ptr(&peer).map(|t| unsafe { *t }) else { return };
    let _ = HANDSHAKES.remove(&peer);
    let (Some(config), Some(queue)) = (CONFIG.get_ptr(0), QUEUE.get_ptr_mut(0)) else { return };
    // SAFETY: our CPU's slot; CONFIG is written once before attach.
    unsafe { (*queue).record(now().saturating_sub(started), &(*config).duration_bounds_ns) };
}
