//! Requests by route: the route key of a request's path, computed once at
//! its first read ([`of_read`]), and the per-route series every worker's
//! finished requests add to ([`record`]). Both maps are bounded and never
//! evict: a key beyond ROUTES' capacity counts under `route::OVERFLOW`, and
//! so does a request whose series could not be added to ROUTE_METRICS.

use core::ffi::c_void;

use aya_ebpf::{
    bindings::{BPF_F_NO_PREALLOC, BPF_NOEXIST},
    helpers::generated::bpf_loop,
    macros::map,
    maps::{HashMap, PerCpuArray, PerCpuHashMap},
};
use exporter_ebpf::{
    abi::{Aggregate, Config, ROUTE_KEYS, ROUTE_SERIES, RouteKey, error},
    request::Finished,
    route::{self, LINE, PathHash, RoutePath},
};

use crate::{
    conns::Io,
    maps::{ZERO, count_error},
};

/// Route key -> the first path seen with it.
#[map]
static ROUTES: HashMap<u64, RoutePath> = HashMap::with_max_entries(ROUTE_KEYS, BPF_F_NO_PREALLOC);
/// Not preallocated: memory follows the series in use.
#[map]
static ROUTE_METRICS: PerCpuHashMap<RouteKey, Aggregate> =
    PerCpuHashMap::with_max_entries(ROUTE_SERIES, BPF_F_NO_PREALLOC);

/// The first bytes of the read, copied: room for a vector read's pieces
/// (`Io::copy` needs `3 * LINE`).
#[map]
static LINE_BUF: PerCpuArray<[u8; 4 * LINE]> = PerCpuArray::with_max_entries(1, 0);
/// The hash under way, for bpf_loop's callback (in a map value, so the
/// verifier does not follow each position as a path of its own).
#[map]
static HASHING: PerCpuArray<PathHash> = PerCpuArray::with_max_entries(1, 0);
/// The route series being recorded ([`record`]).
#[map]
static ROUTE_KEY: PerCpuArray<RouteKey> = PerCpuArray::with_max_entries(1, 0);
/// A path to insert (too big for the stack).
#[map]
static PATH: PerCpuArray<RoutePath> = PerCpuArray::with_max_entries(1, 0);

/// bpf_loop's callback: one byte of the line.
#[inline(never)]
extern "C" fn step(_index: u32, _ctx: *mut c_void) -> i64 {
    let (Some(line), Some(h)) = (LINE_BUF.get_ptr(0), HASHING.get_ptr_mut(0)) else {
        return 1;
    };
    // SAFETY: this CPU's map values.
    let (line, h) = unsafe { (&*line, &mut *h) };
    let b = line[h.pos as usize & (LINE - 1)];
    if h.step(b) { 0 } else { 1 }
}

/// The route key of a request whose first read moved `n` bytes: its path
/// hashed (numeric, UUID and long hex segments collapsed), the path kept in
/// ROUTES the first time the key is seen.
#[inline(never)]
pub fn of_read(io: &Io, n: u64) -> u64 {
    let (Some(line), Some(h)) = (LINE_BUF.get_ptr_mut(0), HASHING.get_ptr_mut(0)) else {
        return route::NONE;
    };
    let len = n.min(LINE as u64);
    if !io.copy::<LINE>(0, line as *mut u8, len) {
        return route::NONE;
    }
    // SAFETY: this CPU's map values.
    unsafe { *h = PathHash::new(len as usize) };
    // SAFETY: the callback finds its state in HASHING and LINE_BUF; one more
    // step than bytes lets it close the path at the end of the copy.
    unsafe {
        bpf_loop(
            LINE as u32 + 1,
            step as *mut c_void,
            core::ptr::null_mut(),
            0,
        )
    };
    // SAFETY: as above.
    let h = unsafe { &*h };
    let key = h.key();
    if key == route::NONE || ROUTES.get_ptr(&key).is_some() {
        return key;
    }
    let Some(path) = PATH.get_ptr_mut(0) else {
        return key;
    };
    // SAFETY: this CPU's map values.
    let (line, path) = unsafe { (&*line, &mut *path) };
    let start = h.start as usize;
    let mut i = 0;
    while i < LINE {
        path.bytes[i] = line[(start + i) & (2 * LINE - 1)];
        i += 1;
    }
    path.len = h.end.saturating_sub(h.start);
    path.cut = h.cut;
    match ROUTES.insert(&key, &*path, BPF_NOEXIST as u64) {
        Ok(()) => key,
        Err(EEXIST) => key,
        Err(_) => {
            count_error(error::ROUTES_FULL);
            route::OVERFLOW
        }
    }
}

const EEXIST: i32 = -17;

/// Adds a finished request to its route's series.
#[inline(always)]
pub fn record(tgid: u32, done: &Finished, config: &Config) {
    if config.routes == 0 {
        return;
    }
    // The key in a map value, not on the stack: `record`, which this is
    // part of, is the deepest frame of the read and write programs' call
    // chains, which 6.1 allows 512 bytes in all.
    let Some(key) = ROUTE_KEY.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's map value.
    let key = unsafe { &mut *key };
    key.route = done.route;
    key.status = done.status;
    key.method = done.method;
    key._pad = 0;
    key.master = crate::maps::master_of(tgid);
    let aggregate = match series(key) {
        Some(a) => a,
        None => {
            // Not added (the map full, or no memory to add it now: a burst
            // of new series empties the allocator's per-CPU cache): counted
            // under the overflow route rather than lost.
            key.route = route::OVERFLOW;
            match series(key) {
                Some(a) => a,
                None => return count_error(error::ROUTE_METRICS_FULL),
            }
        }
    };
    crate::maps::add(aggregate, done, &config.duration_bounds_ns);
}

/// The series of `key`, added if new (None when it could not be added).
#[inline(always)]
fn series(key: &RouteKey) -> Option<*mut Aggregate> {
    if let Some(a) = ROUTE_METRICS.get_ptr_mut(key) {
        return Some(a);
    }
    let zero = ZERO.get_ptr(0)?;
    // SAFETY: ZERO is never written. EEXIST (another CPU won the race) is fine.
    let _ = ROUTE_METRICS.insert(key, unsafe { &*zero }, BPF_NOEXIST as u64);
    ROUTE_METRICS.get_ptr_mut(key)
}

/// Adds `n` response bytes written past a recorded response's end to its
/// route's series.
#[inline(always)]
pub fn add_late_bytes(tgid: u32, route: u64, status: u16, method: u8, n: u64) {
    let key = RouteKey {
        route,
        status,
        method,
        _pad: 0,
        master: crate::maps::master_of(tgid),
    };
    if let Some(aggregate) = ROUTE_METRICS.get_ptr_mut(&key) {
        // SAFETY: our CPU's copy of the value.
        unsafe { (*aggregate).resp_bytes_sum += n };
    }
}
