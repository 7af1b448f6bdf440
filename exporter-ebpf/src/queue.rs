//! Request queueing: time from a client's TCP handshake completing (the
//! connection enters the listening socket's accept queue) to a worker taking
//! the connection (its accept, or its first I/O on the socket), matched by the
//! socket itself, so it works whatever the worker's accept asks for.
//!
//! The handshakes wait in a direct-mapped array, not a hash map: an array
//! lookup is a few inlined instructions, where an LRU insert took ~1 µs here
//! (its eviction scan) and ran for every connection to a listened port.

use aya_ebpf::{macros::map, maps::Array};
use exporter_ebpf::abi::{HANDSHAKE_BITS, Handshake, Queue};

use crate::{
    conns::LISTEN_PORTS,
    maps::{config, kernel, now, offsets},
};

/// Indexed by [`Handshake::slot`]; a connection never taken (the client gave
/// up) stays until a later handshake takes its slot.
#[map]
static HANDSHAKES: Array<Handshake> = Array::with_max_entries(1 << HANDSHAKE_BITS, 0);

/// sock:inet_sock_set_state, SYN_RECV -> ESTABLISHED of socket `sk` (the new
/// connection, in softirq): if it came to a listened port, it is in the
/// accept queue now.
#[inline(never)]
pub fn handshake(sk: u64) {
    let Some(off) = offsets() else { return };
    let port: u16 = kernel(sk, off.sk_num);
    if !matches!(LISTEN_PORTS.get(port as u32), Some(&1)) {
        return;
    }
    if let Some(slot) = HANDSHAKES.get_ptr_mut(Handshake::slot(sk, HANDSHAKE_BITS)) {
        // SAFETY: an array slot. The time is cleared before the socket changes
        // and set after, so a worker racing on another CPU never pairs this
        // socket with the slot's previous time (x86 keeps stores in order).
        unsafe {
            core::ptr::write_volatile(&mut (*slot).started_ns, 0);
            (*slot).sk = sk;
            core::ptr::write_volatile(&mut (*slot).started_ns, now());
        }
    }
}

/// A worker took socket `sk`: the wait of the connection, if it was timed,
/// goes to its master's `queue`.
#[inline(never)]
pub fn taken(sk: u64, queue: &mut Queue) {
    let Some(slot) = HANDSHAKES.get_ptr_mut(Handshake::slot(sk, HANDSHAKE_BITS)) else {
        return;
    };
    // SAFETY: an array slot (see handshake for races).
    let slot = unsafe { &mut *slot };
    if slot.started_ns == 0 || slot.sk != sk {
        return;
    }
    let started = core::mem::take(&mut slot.started_ns);
    let Some(config) = config() else { return };
    queue.record(now().saturating_sub(started), &config.duration_bounds_ns);
}
