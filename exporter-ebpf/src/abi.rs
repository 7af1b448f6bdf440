//! Records that cross the kernel boundary, and the names of the maps holding them.

use crate::{buckets::bucket_index, request::Finished};

/// Map names, shared so userspace opens exactly what the programs define.
pub mod map {
    /// tgid -> [`super::Proc`]: the processes being watched.
    pub const TRACKED: &str = "TRACKED";
    /// [`super::ConnKey`] -> [`crate::request::Conn`].
    pub const CONNS: &str = "CONNS";
    /// [`super::MetricKey`] -> [`super::Aggregate`], per CPU.
    pub const METRICS: &str = "METRICS";
    /// [`super::Config`], one entry written by userspace before attaching.
    pub const CONFIG: &str = "CONFIG";
    /// Per-CPU counters indexed by [`super::error`].
    pub const ERRORS: &str = "ERRORS";
    /// Ring buffer of [`super::Event`]s.
    pub const EVENTS: &str = "EVENTS";
    /// tgid -> the worker's last [`super::Heartbeat`] (utimensat on its heartbeat file).
    pub const HEARTBEAT: &str = "HEARTBEAT";
    /// tid -> 1 while a worker thread has logged a request error it has not answered yet.
    pub const EXC_PENDING: &str = "EXC_PENDING";
    /// TCP port (host order) -> 1 for the ports the masters listen on.
    pub const LISTEN_PORTS: &str = "LISTEN_PORTS";
    /// [`super::Handshake`]s by [`super::Peer::slot`]: connections waiting in
    /// an accept queue (direct-mapped: a later handshake overwrites its slot).
    pub const HANDSHAKES: &str = "HANDSHAKES";
    /// [`super::Queue`], per CPU: time from handshake to accept.
    pub const QUEUE: &str = "QUEUE";
    /// Connections the workers accepted, per CPU (one slot).
    pub const ACCEPTED: &str = "ACCEPTED";
}

/// Roles in [`Proc::role`].
pub mod role {
    pub const MASTER: u32 = 1;
    pub const WORKER: u32 = 2;
}

/// A watched process.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Proc {
    pub role: u32,
    /// The master that forked this worker (itself for a master).
    pub master: u32,
    /// The code passed to exit_group, valid when `flags` has [`flag::EXITED`].
    pub exit_code: i32,
    pub flags: u32,
}

impl Proc {
    /// A master as it starts being watched (also one that re-executed).
    pub const fn master(pid: u32) -> Proc {
        Proc {
            role: role::MASTER,
            master: pid,
            exit_code: 0,
            flags: 0,
        }
    }

    /// A worker `master` forked.
    pub const fn worker(master: u32) -> Proc {
        Proc {
            role: role::WORKER,
            master,
            exit_code: 0,
            flags: 0,
        }
    }
}

/// Bits of [`Proc::flags`].
pub mod flag {
    /// The process called exit_group (it was not killed by a signal).
    pub const EXITED: u32 = 1;
    /// Its master sent it SIGABRT (gunicorn's worker timeout): requests it
    /// answers from now on with a 5xx, or never answers, failed by timeout.
    pub const ABORTING: u32 = 2;
}

/// Why a request failed, beyond its status ([`MetricKey::cause`]).
pub mod cause {
    /// No response (client went away: `aborted`) or a plain 5xx (`http_5xx`).
    pub const NONE: u8 = 0;
    pub const WORKER_TIMEOUT: u8 = 1;
    pub const WORKER_CRASH: u8 = 2;
    pub const WORKER_KILLED: u8 = 3;
    /// An app exception gunicorn answered with a 500 (its class arrives as
    /// [`super::event::EXCEPTION`] and [`super::event::EXCEPTION_ANSWERED`]).
    pub const APP_EXCEPTION: u8 = 4;
}

/// Which syscall family an exit program handles: where its buffer argument
/// leads to the bytes.
pub mod io {
    pub const READ: u32 = 1;
    pub const WRITE: u32 = 2;
    pub const SENDFILE: u32 = 3;
    /// readv/writev: `buf` points at an iovec array.
    pub const READV: u32 = 4;
    pub const WRITEV: u32 = 5;
    /// recvmsg/sendmsg: `buf` points at a msghdr.
    pub const RECVMSG: u32 = 6;
    pub const SENDMSG: u32 = 7;
}

/// A client connection: the worker and its socket's fd.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ConnKey {
    pub tgid: u32,
    pub fd: u32,
}

/// One series family: a worker, a method, a status (0 = no response) and
/// the [`cause`] of a failure.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MetricKey {
    pub tgid: u32,
    pub status: u16,
    pub method: u8,
    pub cause: u8,
}

/// A client as a listening socket's queue sees it: family, its port (host
/// order) and its address (IPv4 in the first 4 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Peer {
    pub family: u16,
    pub port: u16,
    pub addr: [u8; 16],
}

/// AF_INET and AF_INET6.
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

impl Peer {
    /// The peer of a `struct sockaddr_in`/`sockaddr_in6` as accept(2) fills it.
    pub fn from_sockaddr(sa: &[u8; 24]) -> Option<Peer> {
        let family = u16::from_ne_bytes([sa[0], sa[1]]);
        let port = u16::from_be_bytes([sa[2], sa[3]]);
        let mut addr = [0u8; 16];
        match family {
            AF_INET => addr[..4].copy_from_slice(&sa[4..8]),
            AF_INET6 => addr.copy_from_slice(&sa[8..24]),
            _ => return None,
        }
        Some(Peer { family, port, addr })
    }

    /// The peer's slot in a direct-mapped table of `1 << bits` entries: a
    /// multiplicative hash of port and address (Fibonacci hashing), so that
    /// one client's consecutive ports spread over the table.
    #[inline(always)]
    pub fn slot(&self, bits: u32) -> u32 {
        let word = |i: usize| {
            u32::from_ne_bytes([
                self.addr[i],
                self.addr[i + 1],
                self.addr[i + 2],
                self.addr[i + 3],
            ])
        };
        let mixed =
            word(0) ^ word(4) ^ word(8) ^ word(12) ^ (self.port as u32) << 16 ^ self.port as u32;
        mixed.wrapping_mul(0x9E37_79B1) >> (32 - bits)
    }
}

/// A completed TCP handshake waiting for its accept: one slot of the
/// HANDSHAKES array. `started_ns` 0 means the slot is free (consumed).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Handshake {
    pub peer: Peer,
    pub _pad: u32,
    pub started_ns: u64,
}

/// log2 of the HANDSHAKES slots: 16384 x 32 B = 512 KiB, far more than the
/// connections any accept queue holds at once, so collisions are rare; one
/// costs the overwritten connection its queue-time sample (counted as an
/// accept without a sample, never as a wrong time).
pub const HANDSHAKE_BITS: u32 = 14;

/// Time from the TCP handshake completing to a worker accepting the connection.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Queue {
    pub count: u64,
    pub sum_ns: u64,
    pub buckets: [u64; DURATION_SLOTS],
}

impl Default for Queue {
    fn default() -> Self {
        Queue {
            count: 0,
            sum_ns: 0,
            buckets: [0; DURATION_SLOTS],
        }
    }
}

impl Queue {
    #[inline(always)]
    pub fn record(&mut self, wait_ns: u64, bounds: &[u64; DURATION_SLOTS]) {
        self.count += 1;
        self.sum_ns += wait_ns;
        if let Some(slot) = self.buckets.get_mut(bucket_index(bounds, wait_ns)) {
            *slot += 1;
        }
    }

    pub fn merge(&mut self, other: &Queue) {
        self.count += other.count;
        self.sum_ns += other.sum_ns;
        for (a, b) in self.buckets.iter_mut().zip(other.buckets) {
            *a += b;
        }
    }
}

/// Slots of the duration histogram: up to 31 finite bounds and `+Inf`.
pub const DURATION_SLOTS: usize = 32;
/// Slots of the size histograms.
pub const SIZE_SLOTS: usize = 16;

/// Request and response size bucket bounds in bytes: powers of 4 from 64 B to
/// 1 GiB (a superset of gunicorn-prometheus-exporter's 1 KiB .. 4 MiB).
pub const SIZE_BOUNDS: [u64; SIZE_SLOTS] = {
    let mut b = [u64::MAX; SIZE_SLOTS];
    let mut i = 0;
    while i < 13 {
        b[i] = 64 << (2 * i);
        i += 1;
    }
    b
};

/// Set by userspace before the programs are attached.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Duration bucket upper bounds in ns, padded with `u64::MAX`.
    pub duration_bounds_ns: [u64; DURATION_SLOTS],
}

/// Everything recorded about the finished requests of one [`MetricKey`].
/// Bucket arrays are per bucket (not cumulative).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Aggregate {
    pub count: u64,
    pub duration_sum_ns: u64,
    pub req_bytes_sum: u64,
    pub resp_bytes_sum: u64,
    pub duration: [u64; DURATION_SLOTS],
    pub req_size: [u64; SIZE_SLOTS],
    pub resp_size: [u64; SIZE_SLOTS],
}

impl Default for Aggregate {
    fn default() -> Self {
        Aggregate {
            count: 0,
            duration_sum_ns: 0,
            req_bytes_sum: 0,
            resp_bytes_sum: 0,
            duration: [0; DURATION_SLOTS],
            req_size: [0; SIZE_SLOTS],
            resp_size: [0; SIZE_SLOTS],
        }
    }
}

impl Aggregate {
    /// Adds one finished request.
    #[inline(always)]
    pub fn record(&mut self, f: &Finished, duration_bounds_ns: &[u64; DURATION_SLOTS]) {
        self.count += 1;
        self.duration_sum_ns += f.duration_ns;
        self.req_bytes_sum += f.req_bytes;
        self.resp_bytes_sum += f.resp_bytes;
        if let Some(slot) = self
            .duration
            .get_mut(bucket_index(duration_bounds_ns, f.duration_ns))
        {
            *slot += 1;
        }
        if let Some(slot) = self
            .req_size
            .get_mut(bucket_index(&SIZE_BOUNDS, f.req_bytes))
        {
            *slot += 1;
        }
        if let Some(slot) = self
            .resp_size
            .get_mut(bucket_index(&SIZE_BOUNDS, f.resp_bytes))
        {
            *slot += 1;
        }
    }

    /// Adds another aggregate (summing per-CPU values, or merging series).
    pub fn merge(&mut self, other: &Aggregate) {
        self.count += other.count;
        self.duration_sum_ns += other.duration_sum_ns;
        self.req_bytes_sum += other.req_bytes_sum;
        self.resp_bytes_sum += other.resp_bytes_sum;
        for (a, b) in self.duration.iter_mut().zip(other.duration) {
            *a += b;
        }
        for (a, b) in self.req_size.iter_mut().zip(other.req_size) {
            *a += b;
        }
        for (a, b) in self.resp_size.iter_mut().zip(other.resp_size) {
            *a += b;
        }
    }
}

/// Things the kernel side could not do; each is a per-CPU counter in
/// [`map::ERRORS`], exported so nothing is lost silently.
pub mod error {
    /// A finished request could not be recorded: METRICS full (a lost request).
    pub const METRICS_FULL: u32 = 0;
    /// A connection could not be tracked: CONNS full (its requests are lost).
    pub const CONNS_FULL: u32 = 1;
    /// A new worker could not be tracked: TRACKED full.
    pub const TRACKED_FULL: u32 = 2;
    /// A lifecycle event was dropped: the ring buffer was full.
    pub const EVENTS_LOST: u32 = 3;
    /// A syscall buffer could not be read (one read or write not classified).
    pub const READ_FAILED: u32 = 4;
    pub const COUNT: u32 = 5;

    /// The `kind` label of each counter.
    pub const NAMES: [&str; COUNT as usize] = [
        "metrics_map_full",
        "conns_map_full",
        "tracked_map_full",
        "events_lost",
        "buffer_read_failed",
    ];
}

/// Lifecycle event kinds, and what [`Event`]'s fields hold for each.
pub mod event {
    /// A tracked master forked a process. `other`: the master.
    pub const FORK: u32 = 1;
    /// A tracked process's last thread exited. `other`: its master; `value`:
    /// its exit_group code, or [`super::NO_EXIT_CODE`] when a signal killed it.
    pub const EXIT: u32 = 2;
    /// A tracked process called execve (a master re-executing on USR2).
    /// `other`: its master before the exec.
    pub const EXEC: u32 = 3;
    /// A signal was generated to or by a tracked process. `pid`: the target;
    /// `other`: the sender's tgid; `value`: the signal; `code`: si_code.
    pub const SIGNAL: u32 = 4;
    /// A signal was delivered to a tracked process (`pid`). `value`: the
    /// signal; `code`: 1 when a handler runs for it, 0 for the default action.
    pub const DELIVER: u32 = 5;
    /// A master's wait4 reaped a child. `pid`: the master; `other`: the
    /// child; `value`: the wait status.
    pub const REAP: u32 = 6;
    /// A master called listen(2).
    pub const LISTEN: u32 = 7;
    /// A worker's first heartbeat: it finished booting.
    pub const BOOTED: u32 = 8;
    /// The OOM killer chose a tracked process.
    pub const OOM: u32 = 9;
    /// A worker thread wrote gunicorn's "Error handling request" record: an
    /// [`super::ExceptionEvent`]. `other`: the thread; `value`: the record's
    /// length; `code`: how many tail bytes are valid.
    pub const EXCEPTION: u32 = 10;
    /// That thread then answered a request with a 5xx. `other`: the thread;
    /// `value`: the method; `code`: the status.
    pub const EXCEPTION_ANSWERED: u32 = 11;
    /// A worker closed its heartbeat file: gunicorn does that right before it
    /// runs the worker_exit hook. `other`: its master.
    pub const WORKER_EXITING: u32 = 12;
}

/// A worker's heartbeat: when, and on which fd (its heartbeat file).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Heartbeat {
    pub ts_ns: u64,
    pub fd: u32,
    pub _pad: u32,
}

/// An [`event::EXCEPTION`]: the header, then the record's last bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExceptionEvent {
    pub header: Event,
    pub tail: [u8; crate::errlog::ERRLOG_TAIL],
}

impl ExceptionEvent {
    pub fn from_bytes(bytes: &[u8]) -> Option<ExceptionEvent> {
        if bytes.len() < core::mem::size_of::<ExceptionEvent>() {
            return None;
        }
        // SAFETY: length checked; plain integers and bytes, any pattern is valid.
        Some(unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<ExceptionEvent>()) })
    }

    /// The valid tail bytes (the record's last bytes, at the array's start).
    pub fn tail(&self) -> &[u8] {
        let n = (self.header.code.max(0) as usize).min(self.tail.len());
        &self.tail[..n]
    }
}

/// [`Event::value`] of an EXIT without exit_group.
pub const NO_EXIT_CODE: i32 = i32::MIN;

/// A lifecycle event from the ring buffer; see [`event`] for the fields.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Event {
    pub kind: u32,
    pub pid: u32,
    pub other: u32,
    pub value: i32,
    pub code: i32,
    pub _pad: u32,
    pub ts_ns: u64,
}

impl Event {
    /// Decodes a ring-buffer record; `None` if it is too short.
    pub fn from_bytes(bytes: &[u8]) -> Option<Event> {
        if bytes.len() < core::mem::size_of::<Event>() {
            return None;
        }
        // SAFETY: length checked; Event is plain integers, any bit pattern is valid.
        Some(unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<Event>()) })
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: each type is #[repr(C)], Copy, made only of integers (every bit
    // pattern valid), with explicit padding fields so no byte is uninitialised.
    unsafe impl aya::Pod for super::Proc {}
    unsafe impl aya::Pod for super::ConnKey {}
    unsafe impl aya::Pod for super::MetricKey {}
    unsafe impl aya::Pod for super::Config {}
    unsafe impl aya::Pod for super::Aggregate {}
    unsafe impl aya::Pod for super::Event {}
    unsafe impl aya::Pod for super::Peer {}
    unsafe impl aya::Pod for super::Heartbeat {}
    unsafe impl aya::Pod for super::Queue {}
    unsafe impl aya::Pod for crate::request::Conn {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buckets::padded;

    #[test]
    fn peer_slots_spread_one_clients_ports() {
        let peer = |port| Peer {
            family: AF_INET,
            port,
            addr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        };
        let slots: std::collections::HashSet<u32> = (40000..41024)
            .map(|p| peer(p).slot(HANDSHAKE_BITS))
            .collect();
        // 1024 consecutive ports of one client: almost all in distinct slots.
        assert!(slots.len() > 1000, "{} distinct slots", slots.len());
        assert!(slots.iter().all(|&s| s < 1 << HANDSHAKE_BITS));
        let v6 = Peer {
            family: AF_INET6,
            port: 1,
            addr: [0xff; 16],
        };
        assert!(v6.slot(HANDSHAKE_BITS) < 1 << HANDSHAKE_BITS);
        assert_eq!(std::mem::size_of::<Handshake>(), 32);
    }

    #[test]
    fn size_bounds_are_powers_of_four() {
        assert_eq!(SIZE_BOUNDS[0], 64);
        assert_eq!(SIZE_BOUNDS[2], 1024);
        assert_eq!(SIZE_BOUNDS[10], 4 * 1024 * 1024 * 16);
        assert_eq!(SIZE_BOUNDS[12], 1 << 30);
        assert_eq!(SIZE_BOUNDS[13], u64::MAX);
        assert!(SIZE_BOUNDS.contains(&4194304));
    }

    #[test]
    fn record_and_merge() {
        let bounds: [u64; DURATION_SLOTS] = padded(&[1_000, 2_000]).unwrap();
        let mut a = Aggregate::default();
        let f = Finished {
            method: 1,
            status: 200,
            duration_ns: 2_000,
            req_bytes: 64,
            resp_bytes: 65,
            cause: 0,
        };
        a.record(&f, &bounds);
        assert_eq!(
            (a.count, a.duration[1], a.req_size[0], a.resp_size[1]),
            (1, 1, 1, 1)
        );
        let mut b = a;
        b.merge(&a);
        assert_eq!(
            (b.count, b.duration_sum_ns, b.duration[1], b.resp_bytes_sum),
            (2, 4_000, 2, 130)
        );
    }

    #[test]
    fn peers_from_sockaddrs() {
        let mut v4 = [0u8; 24];
        v4[..2].copy_from_slice(&AF_INET.to_ne_bytes());
        v4[2..4].copy_from_slice(&8080u16.to_be_bytes());
        v4[4..8].copy_from_slice(&[127, 0, 0, 1]);
        let p = Peer::from_sockaddr(&v4).unwrap();
        assert_eq!(
            (p.family, p.port, &p.addr[..4], p.addr[4]),
            (AF_INET, 8080, &[127u8, 0, 0, 1][..], 0)
        );
        let mut v6 = [0u8; 24];
        v6[..2].copy_from_slice(&AF_INET6.to_ne_bytes());
        v6[2..4].copy_from_slice(&443u16.to_be_bytes());
        v6[23] = 1;
        assert_eq!(
            Peer::from_sockaddr(&v6).map(|p| (p.port, p.addr[15])),
            Some((443, 1))
        );
        let unix = [
            1u8, 0, b'/', b't', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        assert_eq!(Peer::from_sockaddr(&unix), None);
    }

    #[test]
    fn events_decode() {
        let e = Event {
            kind: event::EXIT,
            pid: 7,
            other: 1,
            value: 3,
            code: 0,
            _pad: 0,
            ts_ns: 99,
        };
        // SAFETY: reading the bytes of a plain #[repr(C)] value.
        let bytes: [u8; 32] = unsafe { core::mem::transmute(e) };
        assert_eq!(Event::from_bytes(&bytes), Some(e));
        assert_eq!(Event::from_bytes(&bytes[..31]), None);
    }

    #[test]
    fn records_have_no_implicit_padding() {
        use core::mem::size_of;
        assert_eq!(size_of::<Proc>(), 16);
        assert_eq!(size_of::<ConnKey>(), 8);
        assert_eq!(size_of::<MetricKey>(), 8);
        assert_eq!(size_of::<Event>(), 32);
        assert_eq!(size_of::<crate::request::Conn>(), 40);
        assert_eq!(size_of::<ExceptionEvent>(), 32 + crate::errlog::ERRLOG_TAIL);
        assert_eq!(
            size_of::<Aggregate>(),
            8 * (4 + DURATION_SLOTS + 2 * SIZE_SLOTS)
        );
    }
}
