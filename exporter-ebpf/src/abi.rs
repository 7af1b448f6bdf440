//! Records that cross the kernel boundary, and the names of the maps holding them.

use crate::{buckets::bucket_index, request::Finished};

/// Map names, shared so userspace opens exactly what the programs define.
pub mod map {
    /// tgid -> [`super::Proc`]: the processes being watched.
    pub const TRACKED: &str = "TRACKED";
    /// Counts of TRACKED entries by [`super::watch_slot`] (mmap-able).
    pub const WATCHED: &str = "WATCHED";
    /// [`super::ConnKey`] -> [`crate::request::Conn`].
    pub const CONNS: &str = "CONNS";
    /// [`super::MetricKey`] -> [`super::Aggregate`], per CPU.
    pub const METRICS: &str = "METRICS";
    /// [`super::Config`], one entry written by userspace before attaching.
    pub const CONFIG: &str = "CONFIG";
    /// Per-CPU counters indexed by [`super::error`].
    pub const ERRORS: &str = "ERRORS";
    /// Master pid -> [`super::MasterStats`], per CPU: its workers'
    /// connections, their queue wait, its unframed responses.
    pub const MASTER_STATS: &str = "MASTER_STATS";
    /// Ring buffer of [`super::Event`]s and the records that start with one.
    pub const EVENTS: &str = "EVENTS";
    /// TCP port -> 1 for the ports the masters listen on (an array of 65536).
    pub const LISTEN_PORTS: &str = "LISTEN_PORTS";
    /// Inode of a unix socket file the masters listen on -> 1.
    pub const LISTEN_INODES: &str = "LISTEN_INODES";
    /// [`super::Handshake`]s by [`super::Handshake::slot`]: connections
    /// waiting in an accept queue (direct-mapped: a later one overwrites).
    pub const HANDSHAKES: &str = "HANDSHAKES";
    /// tgid -> wait status of a watched process that died and is not reaped yet.
    pub const DEAD: &str = "DEAD";
    /// Worker tgid -> its [`super::Heartbeat`] file, written by userspace.
    pub const HEARTBEATS: &str = "HEARTBEATS";
    /// Discovery: tgid -> 0 for an untracked process that may become a
    /// Gunicorn master (a `python*` or `gunicorn*` exec, or a gunicorn with
    /// no worker yet), whose first fork is reported (an LRU map: those that
    /// never fork age out).
    pub const CANDIDATES: &str = "CANDIDATES";
    /// The stages of a write (`request::stage`) the socket hooks' write
    /// program tail-calls, and the syscall hooks' ones.
    pub const STAGES_RAW: &str = "STAGES_RAW";
    pub const STAGES_TRACEPOINT: &str = "STAGES_TRACEPOINT";
    /// Route key -> [`crate::route::RoutePath`]: the first path seen with
    /// each key, for userspace to name its route (bounded, never evicted).
    pub const ROUTES: &str = "ROUTES";
    /// [`super::RouteKey`] -> [`super::Aggregate`], per CPU: the requests
    /// of every worker by route, method and status.
    pub const ROUTE_METRICS: &str = "ROUTE_METRICS";
}

/// Route keys the kernel keeps a path for at most (the ROUTES map); a new
/// key beyond them counts under [`crate::route::OVERFLOW`].
pub const ROUTE_KEYS: u32 = 1024;
/// Series of ROUTE_METRICS at most.
pub const ROUTE_SERIES: u32 = 8192;

/// Slots of the WATCHED array: tracked processes counted by `tgid` modulo
/// this (a slot shared by an untracked process only costs it the hash lookup).
pub const WATCH_SLOTS: u32 = 65536;

/// The WATCHED slot of `tgid`.
#[inline(always)]
pub const fn watch_slot(tgid: u32) -> u32 {
    tgid & (WATCH_SLOTS - 1)
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
    pub flags: u32,
    pub _pad: u32,
}

impl Proc {
    /// A master as it starts being watched (also one that re-executed).
    pub const fn master(pid: u32) -> Proc {
        Proc {
            role: role::MASTER,
            master: pid,
            flags: 0,
            _pad: 0,
        }
    }

    /// A worker `master` forked.
    pub const fn worker(master: u32) -> Proc {
        Proc {
            role: role::WORKER,
            master,
            flags: 0,
            _pad: 0,
        }
    }
}

/// Bits of [`Proc::flags`].
pub mod flag {
    /// Its master sent it SIGABRT (gunicorn's worker timeout): requests it
    /// answers from now on with a 5xx, or never answers, failed by timeout.
    pub const ABORTING: u32 = 2;
}

/// Why a request failed, when the kernel or the worker's death tells
/// ([`FailedEvent::cause`]); otherwise userspace classifies it by its
/// exception record or its status.
pub mod cause {
    pub const NONE: u8 = 0;
    pub const WORKER_TIMEOUT: u8 = 1;
    pub const WORKER_CRASH: u8 = 2;
    pub const WORKER_KILLED: u8 = 3;
}

/// Which syscall family moved the bytes: where its buffer argument leads.
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

    /// The family of x86-64 syscall `nr`, for the socket tracepoints (which
    /// fire inside any of them); 0 for one that is not followed.
    #[inline(always)]
    pub fn of_syscall(nr: u64) -> u32 {
        match nr {
            0 => READ,      // read
            1 => WRITE,     // write
            19 => READV,    // readv
            20 => WRITEV,   // writev
            40 => SENDFILE, // sendfile
            44 => WRITE,    // sendto
            45 => READ,     // recvfrom
            46 => SENDMSG,  // sendmsg
            47 => RECVMSG,  // recvmsg
            _ => 0,
        }
    }
}

/// x86-64 syscall numbers the programs look for in `orig_ax`.
pub mod nr {
    pub const CLOSE: u64 = 3;
    pub const SHUTDOWN: u64 = 48;
}

/// A client connection: the worker and its socket's fd.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ConnKey {
    pub tgid: u32,
    pub fd: u32,
}

/// One series family: a worker, a method and a status (0 = no response).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MetricKey {
    pub tgid: u32,
    pub status: u16,
    pub method: u8,
    pub _pad: u8,
}

/// One series of requests by route: a master's workers', summed.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteKey {
    /// [`crate::route`] key ([`crate::route::NONE`], [`crate::route::OVERFLOW`]).
    pub route: u64,
    pub status: u16,
    pub method: u8,
    pub _pad: u8,
    /// The master of the worker that served it (0: not tracked any more):
    /// each app's routes apart when the exporter watches several.
    pub master: u32,
}

/// Socket families (`sock_common.skc_family`).
pub const AF_UNIX: u16 = 1;
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

/// A completed TCP handshake waiting for a worker: one slot of the
/// HANDSHAKES array. `started_ns` 0 means the slot is free (consumed).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Handshake {
    /// The new connection's `struct sock *`.
    pub sk: u64,
    pub started_ns: u64,
}

impl Handshake {
    /// The slot of socket `sk` in a direct-mapped table of `1 << bits`
    /// entries: a hash of the pointer (socket structs sit a slab object
    /// apart, so the raw low bits would crowd a few slots).
    #[inline(always)]
    pub fn slot(sk: u64, bits: u32) -> u32 {
        // murmur3's 64-bit finaliser: every input bit moves every output bit.
        let mut h = sk ^ (sk >> 33);
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^= h >> 33;
        (h >> (64 - bits)) as u32
    }
}

/// log2 of the HANDSHAKES slots: 16384 x 16 B = 256 KiB, far more than the
/// connections any accept queue holds at once, so collisions are rare; one
/// costs the overwritten connection its queue-time sample (counted as a
/// connection without a sample, never as a wrong time).
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

/// What a master's workers did that is no request's ([`map::MASTER_STATS`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MasterStats {
    /// Server-side connections its workers took from their listeners.
    pub connections: u64,
    /// Responses whose framing was not found within the scanned bound.
    pub unframed: u64,
    /// Those connections' wait in the accept queue (TCP listeners only).
    pub queue: Queue,
}

impl MasterStats {
    pub fn merge(&mut self, other: &MasterStats) {
        self.connections += other.connections;
        self.unframed += other.unframed;
        self.queue.merge(&other.queue);
    }
}

/// Slots of the duration histogram: up to 31 finite bounds and `+Inf`.
pub const DURATION_SLOTS: usize = 32;
/// Slots of the size histograms.
pub const SIZE_SLOTS: usize = 16;

/// Request and response size bucket bounds in bytes: powers of 4 from 64 B to
/// 1 GiB (a superset of gunicorn-prometheus-exporter's 1 KiB .. 4 MiB).
pub const SIZE_BOUNDS: [u64; SIZE_SLOTS] = {
    let mut b = [crate::buckets::INF; SIZE_SLOTS];
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
    /// Duration bucket upper bounds in ns, padded with [`crate::buckets::INF`].
    pub duration_bounds_ns: [u64; DURATION_SLOTS],
    /// Where the kernel structs' fields are on the running kernel.
    pub offsets: Offsets,
    /// [`hooks`]: which hook set is attached.
    pub hooks: u32,
    /// 1: requests are also counted by route (off with `--no-routes`).
    pub routes: u32,
    /// [`discover`]: discovery mode, where candidates' execs and first
    /// forks are followed (`map::CANDIDATES`), and which execs are.
    pub discover: u32,
    pub _pad: u32,
}

/// Discovery's modes ([`Config::discover`]).
pub mod discover {
    /// One master (--pid, --pidfile).
    pub const OFF: u32 = 0;
    /// Execs of programs named `python*` or `gunicorn*` are candidates.
    pub const NAMED: u32 = 1;
    /// Every exec is (--match: a custom script's program has any name).
    pub const EVERY_EXEC: u32 = 2;
}

/// The hook sets ([`Config::hooks`]).
pub mod hooks {
    /// Socket-layer tracepoints (sock_send_length, sock_recv_length, inet_sock_set_state).
    pub const SOCKETS: u32 = 1;
    /// Syscall tracepoints (accept, recvfrom, sendto, close...).
    pub const SYSCALLS: u32 = 2;
}

/// Byte offsets of the kernel struct fields the programs read with
/// bpf_probe_read_kernel. aya has no CO-RE, so userspace takes them from the
/// running kernel's BTF (/sys/kernel/btf/vmlinux) and writes them here.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offsets {
    /// task_struct.pid, .tgid, .exit_code, .signal, .files
    pub task_pid: u32,
    pub task_tgid: u32,
    pub task_exit_code: u32,
    pub task_signal: u32,
    pub task_files: u32,
    /// signal_struct.live (an atomic_t: threads not yet in do_exit)
    pub signal_live: u32,
    /// files_struct.fdt, fdtable.fd
    pub files_fdt: u32,
    pub fdt_fd: u32,
    /// file.private_data (a socket's `struct socket *`), socket.sk
    pub file_private_data: u32,
    pub socket_sk: u32,
    /// sock_common.skc_family, .skc_num (the local port, host order)
    pub sk_family: u32,
    pub sk_num: u32,
    /// unix_sock.path.dentry, dentry.d_inode, inode.i_ino
    pub unix_dentry: u32,
    pub dentry_inode: u32,
    pub inode_ino: u32,
    /// file.f_inode
    pub file_inode: u32,
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
        let duration_ns = f.duration_ns();
        self.count += 1;
        self.duration_sum_ns += duration_ns;
        self.req_bytes_sum += f.req_bytes;
        self.resp_bytes_sum += f.resp_bytes;
        if let Some(slot) = self
            .duration
            .get_mut(bucket_index(duration_bounds_ns, duration_ns))
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
    /// A new worker could not be tracked: TRACKED (or DEAD) full.
    pub const TRACKED_FULL: u32 = 2;
    /// An event was dropped: the ring buffer was full.
    pub const EVENTS_LOST: u32 = 3;
    /// A syscall buffer could not be read (one read or write not classified).
    pub const READ_FAILED: u32 = 4;
    /// A new route key found ROUTES full: its requests count under
    /// `route::OVERFLOW` (one per request that hit it).
    pub const ROUTES_FULL: u32 = 5;
    /// A request could be added neither to its route's series nor to the
    /// overflow route's (ROUTE_METRICS full, or no memory): not counted by route.
    pub const ROUTE_METRICS_FULL: u32 = 6;
    /// A master's statistics could not be added (MASTER_STATS full, or no
    /// memory): one connection (with its queue wait) or unframed response
    /// not counted.
    pub const MASTER_STATS_FULL: u32 = 7;
    pub const COUNT: u32 = 8;

    /// The `kind` label of each counter.
    pub const NAMES: [&str; COUNT as usize] = [
        "metrics_map_full",
        "conns_map_full",
        "tracked_map_full",
        "events_lost",
        "buffer_read_failed",
        "routes_map_full",
        "route_metrics_map_full",
        "master_stats_map_full",
    ];
}

/// Event kinds, and what [`Event`]'s fields hold for each.
pub mod event {
    /// A tracked master forked a process. `other`: the master.
    pub const FORK: u32 = 1;
    /// A tracked process's last thread exited. `other`: its master; `value`:
    /// its wait status (see [`super::exit_code`]); `code`: whether a worker
    /// still held its heartbeat file ([`super::heartbeat`]).
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
    /// A dead watched process was reaped (released by its parent's wait).
    /// `pid`: its master; `other`: the process; `value`: its wait status.
    pub const REAP: u32 = 6;
    /// A worker's first heartbeat: it finished booting (made by userspace,
    /// which watches the heartbeat files).
    pub const BOOTED: u32 = 8;
    /// The OOM killer chose a tracked process.
    pub const OOM: u32 = 9;
    /// A failed request: a [`super::FailedEvent`].
    pub const FAILED: u32 = 13;
    /// A piece of a log record with a Python traceback a worker thread
    /// wrote: a [`super::RecordEvent`].
    pub const RECORD: u32 = 14;
    /// Discovery: a candidate (see `map::CANDIDATES`) forked its first
    /// process. `pid`: the candidate; `other`: the child.
    pub const CANDIDATE_FORK: u32 = 15;
}

/// A worker's heartbeat file: Gunicorn closes it just before it runs the
/// worker_exit hook (the `finally` of its worker process), so whether the
/// worker still held it as it died tells whether that hook ran, whatever
/// killed the worker after (a SIGKILL while a stuck thread held its exit up).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Heartbeat {
    /// Its descriptor in the worker.
    pub fd: u32,
    pub _pad: u32,
    /// Its inode number (the descriptor may hold another file by then).
    pub ino: u64,
}

/// [`event::EXIT`]'s `code`: the worker's heartbeat file as it died.
pub mod heartbeat {
    /// Not known (a worker that died before userspace found its file).
    pub const UNKNOWN: i32 = 0;
    /// Still open: Gunicorn's worker_exit did not run.
    pub const OPEN: i32 = 1;
    /// Closed: Gunicorn got to its worker_exit.
    pub const CLOSED: i32 = 2;
}

/// The exit code a wait `status` carries, or [`NO_EXIT_CODE`] when a signal
/// ended the process.
pub fn exit_code(status: i32) -> i32 {
    if status & 0x7f == 0 {
        (status >> 8) & 0xff
    } else {
        NO_EXIT_CODE
    }
}

/// An exit without an exit code: killed by a signal.
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

/// A ring-buffer record of a fixed `#[repr(C)]` type made of integers.
pub trait Record: Copy + Sized {
    /// Decodes one; `None` if the bytes are too short.
    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < core::mem::size_of::<Self>() {
            return None;
        }
        // SAFETY: length checked; implementors are plain integers and bytes,
        // for which any bit pattern is valid.
        Some(unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<Self>()) })
    }
}

impl Event {
    #[inline(always)]
    pub const fn new(kind: u32, pid: u32, other: u32, value: i32, code: i32, ts_ns: u64) -> Event {
        Event {
            kind,
            pid,
            other,
            value,
            code,
            _pad: 0,
            ts_ns,
        }
    }
}

impl Record for Event {}

/// A failed request ([`event::FAILED`]): not answered, a 5xx, or cut short.
/// The header's `pid` is the worker, `other` the thread that read the
/// request, `value` the status (0: none), `ts_ns` when it ended.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FailedEvent {
    pub header: Event,
    pub start_ns: u64,
    /// [`crate::http::target_hash`] of the request target, over `target_len` bytes.
    pub target: u32,
    pub method: u8,
    pub target_len: u8,
    /// 1 when the response started but was cut short of its framing.
    pub cut: u8,
    /// [`cause`] the kernel knows (the master was aborting the worker).
    pub cause: u8,
    /// [`crate::route`] key of its path (0 with routes off).
    pub route: u64,
}

impl Record for FailedEvent {}

/// Bytes of a log record carried per [`RecordEvent`].
pub const RECORD_PIECE: usize = 4096;
/// Pieces of one record at most: longer records are cut (their tracebacks'
/// ends are then not seen).
pub const RECORD_PIECES: usize = 16;
/// Bytes a piece carries at most: one less than its array, so that a mask
/// bounds the copy for the verifier.
pub const RECORD_PIECE_DATA: usize = RECORD_PIECE - 1;
/// Bytes of a record carried at most.
pub const RECORD_MAX: usize = RECORD_PIECES * RECORD_PIECE_DATA;

/// One piece of a log record with a traceback ([`event::RECORD`]). The
/// header's `pid` is the worker, `other` the thread that wrote it, `value`
/// the record's whole length, `code` this piece's offset in it, `ts_ns` when
/// it was written. `len` bytes of `bytes` are valid; the ring buffer carries
/// only those.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordEvent {
    pub header: Event,
    pub len: u32,
    pub _pad: u32,
    pub bytes: [u8; RECORD_PIECE],
}

/// Bytes of a [`RecordEvent`] before its data.
pub const RECORD_HEADER: usize = core::mem::size_of::<Event>() + 8;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: each type is #[repr(C)], Copy, made only of integers (every bit
    // pattern valid), with explicit padding fields so no byte is uninitialised.
    unsafe impl aya::Pod for super::Heartbeat {}
    unsafe impl aya::Pod for super::Proc {}
    unsafe impl aya::Pod for super::ConnKey {}
    unsafe impl aya::Pod for super::MetricKey {}
    unsafe impl aya::Pod for super::RouteKey {}
    unsafe impl aya::Pod for crate::route::RoutePath {}
    unsafe impl aya::Pod for super::Config {}
    unsafe impl aya::Pod for super::Aggregate {}
    unsafe impl aya::Pod for super::Event {}
    unsafe impl aya::Pod for super::Handshake {}
    unsafe impl aya::Pod for super::Offsets {}
    unsafe impl aya::Pod for super::MasterStats {}
    unsafe impl aya::Pod for crate::request::Conn {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buckets::padded;

    #[test]
    fn handshake_slots_spread_sockets() {
        // Socket structs a slab object apart (2 KiB here) spread like random keys.
        let slots: std::collections::HashSet<u32> = (0..4096u64)
            .map(|i| Handshake::slot(0xffff_8880_0000_0000 + i * 2048, HANDSHAKE_BITS))
            .collect();
        // As a random function would: 16384 * (1 - e^(-1/4)) = 3624 expected.
        assert!(slots.len() > 3500, "{} distinct slots", slots.len());
        assert!(slots.iter().all(|&s| s < 1 << HANDSHAKE_BITS));
        assert_eq!(std::mem::size_of::<Handshake>(), 16);
    }

    #[test]
    fn wait_statuses() {
        assert_eq!(exit_code(0), 0);
        assert_eq!(exit_code(3 << 8), 3);
        assert_eq!(exit_code(9), NO_EXIT_CODE, "SIGKILL");
        assert_eq!(exit_code(6 | 0x80), NO_EXIT_CODE, "SIGABRT with a core");
    }

    #[test]
    fn size_bounds_are_powers_of_four() {
        assert_eq!(SIZE_BOUNDS[0], 64);
        assert_eq!(SIZE_BOUNDS[2], 1024);
        assert_eq!(SIZE_BOUNDS[10], 4 * 1024 * 1024 * 16);
        assert_eq!(SIZE_BOUNDS[12], 1 << 30);
        assert_eq!(SIZE_BOUNDS[13], crate::buckets::INF);
        assert!(SIZE_BOUNDS.contains(&4194304));
    }

    #[test]
    fn record_and_merge() {
        let bounds: [u64; DURATION_SLOTS] = padded(&[1_000, 2_000]).unwrap();
        let mut a = Aggregate::default();
        let f = Finished {
            method: 1,
            status: 200,
            start_ns: 1_000,
            end_ns: 3_000,
            req_bytes: 64,
            resp_bytes: 65,
            ..Finished::default()
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
        assert_eq!(size_of::<RouteKey>(), 16);
        assert_eq!(size_of::<crate::route::RoutePath>(), 8 + crate::route::LINE);
        assert_eq!(size_of::<crate::route::PathHash>(), 16 + 4 * 12);
        assert_eq!(size_of::<Event>(), 32);
        assert_eq!(size_of::<crate::request::Conn>(), 80);
        assert_eq!(size_of::<FailedEvent>(), 56);
        assert_eq!(size_of::<RecordEvent>(), RECORD_HEADER + RECORD_PIECE);
        assert_eq!(size_of::<Config>(), 8 * DURATION_SLOTS + 16 * 4 + 16);
        assert_eq!(
            size_of::<Aggregate>(),
            8 * (4 + DURATION_SLOTS + 2 * SIZE_SLOTS)
        );
    }
}
