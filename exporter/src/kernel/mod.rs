//! The kernel side as userspace sees it: load the embedded object, probe
//! the helpers, configure it, attach the hook set the kernel supports, and
//! typed access to its maps.

use std::{
    collections::BTreeSet,
    os::unix::ffi::OsStrExt as _,
    path::PathBuf,
    sync::{Arc, Mutex, MutexGuard},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, MapError, PerCpuHashMap, ProgramArray, RingBuf},
    programs::{Program, ProgramError, RawTracePoint, TracePoint},
};
use exporter_ebpf::{
    abi::{
        Aggregate, Config, ConnKey, DURATION_SLOTS, Heartbeat, MasterStats, MetricKey, Offsets,
        Proc, hooks, map,
    },
    request::Conn,
};
use thiserror::Error;

mod reader;
mod watched;
mod write_probes;

pub use reader::MapReader;

use crate::startup::capabilities::{self, Hooks};
use watched::Watched;
use write_probes::WriteProbes;

// The programs take syscall arguments from x86-64 `struct pt_regs` offsets
// (exporter_ebpf::tracepoint::PT_REGS_*); another architecture needs its own.
#[cfg(not(target_arch = "x86_64"))]
compile_error!("gunicorn-ebpf-exporter's eBPF programs read x86-64 syscall registers");

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/exporter-ebpf"));

/// Insert only if absent.
const BPF_NOEXIST: u64 = 1;

#[derive(Debug, Error)]
pub enum KernelError {
    #[error("loading the eBPF object failed")]
    Load(#[source] aya::EbpfError),
    #[error(transparent)]
    Unsupported(#[from] capabilities::Unsupported),
    #[error("map {0} is missing from the eBPF object")]
    MissingMap(&'static str),
    #[error("mapping the WATCHED counts into memory")]
    Watched(#[source] std::io::Error),
    #[error("map {name}")]
    Map {
        name: &'static str,
        source: MapError,
    },
    #[error("program {0} is missing from the eBPF object")]
    MissingProgram(&'static str),
    #[error("program {name}")]
    Program {
        name: &'static str,
        source: ProgramError,
    },
}

/// Where a program attaches.
#[derive(Clone, Copy, Debug)]
enum Point {
    /// A classic tracepoint: category, name.
    Tracepoint(&'static str, &'static str),
    /// A raw tracepoint by name.
    Raw(&'static str),
}

/// (program, where).
type Attachment = (&'static str, Point);

/// The process tree and lifecycle: no syscall tracepoint, every hook set.
const LIFECYCLE: [Attachment; 7] = [
    ("task_newtask", Point::Tracepoint("task", "task_newtask")),
    (
        "sched_process_exec",
        Point::Tracepoint("sched", "sched_process_exec"),
    ),
    (
        "sched_process_exit",
        Point::Tracepoint("sched", "sched_process_exit"),
    ),
    ("sched_process_free", Point::Raw("sched_process_free")),
    (
        "signal_generate",
        Point::Tracepoint("signal", "signal_generate"),
    ),
    (
        "signal_deliver",
        Point::Tracepoint("signal", "signal_deliver"),
    ),
    ("mark_victim", Point::Tracepoint("oom", "mark_victim")),
];
/// Client-socket I/O from the socket layer.
const SOCKETS: [Attachment; 3] = [
    ("sock_recv_length", Point::Raw("sock_recv_length")),
    ("sock_send_length", Point::Raw("sock_send_length")),
    ("inet_sock_set_state", Point::Raw("inet_sock_set_state")),
];
/// Client-socket I/O from the syscalls Gunicorn's worker classes use.
const SYSCALLS: [Attachment; 8] = [
    (
        "sys_exit_accept4",
        Point::Tracepoint("syscalls", "sys_exit_accept4"),
    ),
    (
        "sys_exit_accept",
        Point::Tracepoint("syscalls", "sys_exit_accept"),
    ),
    (
        "sys_exit_recvfrom",
        Point::Tracepoint("syscalls", "sys_exit_recvfrom"),
    ),
    (
        "sys_exit_sendto",
        Point::Tracepoint("syscalls", "sys_exit_sendto"),
    ),
    (
        "sys_exit_sendfile64",
        Point::Tracepoint("syscalls", "sys_exit_sendfile64"),
    ),
    (
        "sys_enter_shutdown",
        Point::Tracepoint("syscalls", "sys_enter_shutdown"),
    ),
    (
        "sys_enter_close",
        Point::Tracepoint("syscalls", "sys_enter_close"),
    ),
    ("inet_sock_set_state", Point::Raw("inet_sock_set_state")),
];
/// The read/write family, for servers that use it (uvloop's libuv).
const SYSCALL_RW: [Attachment; 6] = [
    (
        "sys_exit_read",
        Point::Tracepoint("syscalls", "sys_exit_read"),
    ),
    (
        "sys_exit_readv",
        Point::Tracepoint("syscalls", "sys_exit_readv"),
    ),
    (
        "sys_exit_recvmsg",
        Point::Tracepoint("syscalls", "sys_exit_recvmsg"),
    ),
    (
        "sys_exit_write",
        Point::Tracepoint("syscalls", "sys_exit_write"),
    ),
    (
        "sys_exit_writev",
        Point::Tracepoint("syscalls", "sys_exit_writev"),
    ),
    (
        "sys_exit_sendmsg",
        Point::Tracepoint("syscalls", "sys_exit_sendmsg"),
    ),
];
/// Workers' error-log writes, with the syscall hooks.
const SYSCALL_LOG: [Attachment; 1] = [(
    "sys_enter_write",
    Point::Tracepoint("syscalls", "sys_enter_write"),
)];
/// The same with the socket hooks: a uprobe on the C library's write() in
/// each worker.
const LIBC_WRITE: &str = "libc_write";

/// The stages of a write (`request::stage`, by index) that the write
/// programs tail-call, for each hook set's program type.
const STAGES_RAW: [&str; 2] = ["write_headers_raw", "write_chunks_raw"];
const STAGES_TRACEPOINT: [&str; 2] = ["write_headers", "write_chunks"];

/// Programs that return at once (`--empty-programs`), one per program type.
const EMPTY_TRACEPOINT: &str = "empty";
const EMPTY_RAW: &str = "empty_raw";
const EMPTY_UPROBE: &str = "empty_uprobe";

/// What to attach.
#[derive(Clone, Copy, Debug)]
pub struct Programs {
    /// The read/write family with the syscall hooks from the start (else
    /// only once a worker needs it: [`Kernel::need_rw_family`]).
    pub rw_family: bool,
    /// Follow workers' tracebacks (exception classes).
    pub exception_classes: bool,
    /// Attach the empty programs in place of every program (the cost floor).
    pub empty: bool,
    /// Count requests by route too.
    pub routes: bool,
    /// Discovery (`abi::discover`): report candidates' first forks
    /// (masters started later), and which execs make candidates.
    pub discover: u32,
}

pub struct Kernel {
    /// Kept open: programs loaded later (the read/write family, uprobes)
    /// refer to every map by its descriptor.
    _config: Array<MapData, Config>,
    /// Kept open too: the kernel empties a program array once userspace
    /// holds it no more.
    _stages: Option<ProgramArray<MapData>>,
    tracked: HashMap<MapData, u32, Proc>,
    watched: Watched,
    heartbeats: HashMap<MapData, u32, Heartbeat>,
    candidates: HashMap<MapData, u32, u32>,
    conns: HashMap<MapData, ConnKey, Conn>,
    metrics: PerCpuHashMap<MapData, MetricKey, Aggregate>,
    master_stats: PerCpuHashMap<MapData, u32, MasterStats>,
    /// The scrape's own handles on the maps it reads, until taken.
    reader: Option<MapReader>,
    listen_ports: Array<MapData, u8>,
    listen_inodes: HashMap<MapData, u64, u8>,
    events: Option<RingBuf<MapData>>,
    programs: Programs,
    hooks: Hooks,
    attached: Vec<&'static str>,
    rw_attached: bool,
    /// Per-worker uprobes on the C library's write() (socket hooks).
    write_probes: WriteProbes,
    /// What the kernel knows the masters listen on.
    listeners: Listeners,
    /// Owns the programs and their links: dropping it detaches everything.
    /// Shared with the write probes' thread.
    ebpf: Arc<Mutex<Ebpf>>,
}

fn lock(ebpf: &Mutex<Ebpf>) -> MutexGuard<'_, Ebpf> {
    ebpf.lock().unwrap_or_else(|p| p.into_inner())
}

/// Loads the write stages of the hook set and puts them in its program array.
fn install_stages(ebpf: &mut Ebpf, hooks: Hooks) -> Result<ProgramArray<MapData>, KernelError> {
    let (name, programs) = match hooks {
        Hooks::Sockets => (map::STAGES_RAW, STAGES_RAW),
        _ => (map::STAGES_TRACEPOINT, STAGES_TRACEPOINT),
    };
    let mut stages: ProgramArray<MapData> = take(ebpf, name)?;
    for (index, program) in (0u32..).zip(programs) {
        let error = |source| KernelError::Program {
            name: program,
            source,
        };
        let loaded = match ebpf.program_mut(program) {
            Some(Program::RawTracePoint(p)) => p.load().map(|()| p.fd()),
            Some(Program::TracePoint(p)) => p.load().map(|()| p.fd()),
            _ => return Err(KernelError::MissingProgram(program)),
        };
        let fd = loaded.map_err(error)?.map_err(error)?;
        stages
            .set(index, fd, 0)
            .map_err(|source| KernelError::Map { name, source })?;
    }
    Ok(stages)
}

fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, KernelError>
where
    T: TryFrom<aya::maps::Map, Error = MapError>,
{
    let map = ebpf.take_map(name).ok_or(KernelError::MissingMap(name))?;
    T::try_from(map).map_err(|source| KernelError::Map { name, source })
}

impl Kernel {
    /// Loads the object, checks the helpers the programs need (adding them
    /// to `probed`), configures and attaches the hook set `probed` chose.
    pub fn load(
        duration_bounds_ns: [u64; DURATION_SLOTS],
        offsets: Offsets,
        probed: capabilities::Kernel,
        programs: Programs,
        listeners: &Listeners,
    ) -> Result<(Kernel, capabilities::Kernel), KernelError> {
        // No CO-RE relocation to resolve against the kernel's BTF: the
        // offsets come from our own reading of it (`btf`).
        let mut ebpf = EbpfLoader::new()
            .btf(None)
            .load(OBJECT)
            .map_err(KernelError::Load)?;
        let probed = capabilities::with_helpers(probed, |name| {
            let Some(program) = ebpf.program_mut(name) else {
                return false;
            };
            let loaded = <&mut RawTracePoint>::try_from(program).is_ok_and(|p| p.load().is_ok());
            // Unloaded at once: it only had to pass the verifier.
            if let Some(Ok(p)) = ebpf.program_mut(name).map(<&mut RawTracePoint>::try_from) {
                let _ = p.unload();
            }
            loaded
        })?;
        let hooks = probed.hooks;
        let mut config: Array<MapData, Config> = take(&mut ebpf, map::CONFIG)?;
        config
            .set(
                0,
                Config {
                    duration_bounds_ns,
                    offsets,
                    hooks: if hooks == Hooks::Sockets {
                        hooks::SOCKETS
                    } else {
                        hooks::SYSCALLS
                    },
                    routes: programs.routes as u32,
                    discover: programs.discover,
                    _pad: 0,
                },
                0,
            )
            .map_err(|source| KernelError::Map {
                name: map::CONFIG,
                source,
            })?;
        let stages = if programs.empty {
            None
        } else {
            Some(install_stages(&mut ebpf, hooks)?)
        };
        let mut kernel = Kernel {
            _config: config,
            _stages: stages,
            tracked: take(&mut ebpf, map::TRACKED)?,
            watched: match ebpf.take_map(map::WATCHED) {
                Some(aya::maps::Map::Array(data)) => {
                    Watched::new(data).map_err(KernelError::Watched)?
                }
                _ => return Err(KernelError::MissingMap(map::WATCHED)),
            },
            heartbeats: take(&mut ebpf, map::HEARTBEATS)?,
            candidates: take(&mut ebpf, map::CANDIDATES)?,
            conns: take(&mut ebpf, map::CONNS)?,
            metrics: take(&mut ebpf, map::METRICS)?,
            master_stats: take(&mut ebpf, map::MASTER_STATS)?,
            reader: None,
            listen_ports: take(&mut ebpf, map::LISTEN_PORTS)?,
            listen_inodes: take(&mut ebpf, map::LISTEN_INODES)?,
            events: Some(take(&mut ebpf, map::EVENTS)?),
            programs,
            hooks,
            attached: Vec::new(),
            rw_attached: false,
            write_probes: WriteProbes::new(
                if programs.empty {
                    EMPTY_UPROBE
                } else {
                    LIBC_WRITE
                },
                programs.discover != exporter_ebpf::abi::discover::OFF,
            ),
            listeners: Listeners::default(),
            ebpf: Arc::new(Mutex::new(ebpf)),
        };
        let mut ebpf = lock(&kernel.ebpf);
        let reader = MapReader::new(
            &kernel.conns,
            &kernel.metrics,
            take(&mut ebpf, map::ROUTES)?,
            take(&mut ebpf, map::ROUTE_METRICS)?,
            take(&mut ebpf, map::ERRORS)?,
            &kernel.master_stats,
        )?;
        drop(ebpf);
        kernel.reader = Some(reader);
        // The listeners before any I/O is seen: a connection first seen
        // without them would be taken for one the worker made itself.
        kernel.set_listeners(listeners);
        // The process tree first, so forks are followed before any I/O is.
        for attachment in LIFECYCLE {
            kernel.attach(attachment)?;
        }
        match hooks {
            Hooks::Sockets => {
                for attachment in SOCKETS {
                    kernel.attach(attachment)?;
                }
            }
            _ => {
                for attachment in SYSCALLS {
                    kernel.attach(attachment)?;
                }
                if programs.exception_classes {
                    for attachment in SYSCALL_LOG {
                        kernel.attach(attachment)?;
                    }
                }
                if programs.rw_family {
                    kernel.need_rw_family()?;
                }
            }
        }
        Ok((kernel, probed))
    }

    fn attach(&mut self, (name, point): Attachment) -> Result<(), KernelError> {
        let name = match (self.programs.empty, point) {
            (false, _) => name,
            (true, Point::Tracepoint(..)) => EMPTY_TRACEPOINT,
            (true, Point::Raw(_)) => EMPTY_RAW,
        };
        let error = |source| KernelError::Program { name, source };
        let mut ebpf = lock(&self.ebpf);
        let program = ebpf
            .program_mut(name)
            .ok_or(KernelError::MissingProgram(name))?;
        match point {
            Point::Tracepoint(category, tracepoint) => {
                let program: &mut TracePoint = program.try_into().map_err(error)?;
                // One program may serve several tracepoints (the empty ones): load it once.
                if program.fd().is_err() {
                    program.load().map_err(error)?;
                }
                program.attach(category, tracepoint).map_err(error)?;
            }
            Point::Raw(tracepoint) => {
                let program: &mut RawTracePoint = program.try_into().map_err(error)?;
                if program.fd().is_err() {
                    program.load().map_err(error)?;
                }
                program.attach(tracepoint).map_err(error)?;
            }
        }
        self.attached.push(name);
        Ok(())
    }

    /// Programs attached (one entry per hook point).
    pub fn attached(&self) -> &[&'static str] {
        &self.attached
    }

    /// Attaches the read/write family (syscall hooks) if it is not yet: a
    /// worker reads and writes its clients with read/write/readv/writev.
    /// The socket hooks see those calls anyway.
    pub fn need_rw_family(&mut self) -> Result<bool, KernelError> {
        if self.hooks == Hooks::Sockets || self.rw_attached {
            return Ok(false);
        }
        for attachment in SYSCALL_RW {
            self.attach(attachment)?;
        }
        self.rw_attached = true;
        Ok(true)
    }

    /// With the socket hooks, follows worker `pid`'s write() calls (its
    /// error-log records) with a uprobe on its C library, soon (see
    /// [`write_probes`]).
    pub fn watch_writes(&mut self, pid: u32) {
        if self.hooks == Hooks::Sockets && self.programs.exception_classes {
            self.write_probes.follow(&self.ebpf, pid);
        }
    }

    /// Stops following a dead worker's writes.
    pub fn unwatch_writes(&mut self, pid: u32) {
        self.write_probes.forget(&self.ebpf, pid);
    }

    /// Starts attaching and detaching the write uprobes, once start-up has
    /// dropped the capabilities it alone needed.
    pub fn start_write_probes(&mut self) -> std::io::Result<()> {
        self.write_probes.start(self.ebpf.clone())
    }

    /// The ring buffer of events (taken once, by the event loop).
    /// The scrape's read-only handles on the maps (once).
    pub fn take_reader(&mut self) -> Option<MapReader> {
        self.reader.take()
    }

    pub fn take_events(&mut self) -> Option<RingBuf<MapData>> {
        self.events.take()
    }

    /// Tracks `pid` as `proc_`, counted in WATCHED before the entry exists
    /// (the programs must never see an entry their count does not cover).
    pub fn track(&mut self, pid: u32, proc_: Proc) -> Result<(), MapError> {
        self.watched.add(pid);
        match self.tracked.insert(pid, proc_, BPF_NOEXIST) {
            Ok(()) => Ok(()),
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::EEXIST) => {
                // Already tracked (the kernel saw the fork): counted already.
                self.watched.remove(pid);
                self.tracked.insert(pid, proc_, 0)
            }
            Err(e) => {
                self.watched.remove(pid);
                Err(e)
            }
        }
    }

    /// Discovery: a process that may become a master; its first fork is
    /// reported ([`crate::events::Event::CandidateForked`]).
    pub fn add_candidate(&mut self, pid: u32) {
        if let Err(e) = self.candidates.insert(pid, 0, 0) {
            log::warn!("discovery: process {pid} not followed to its first fork: {e}");
        }
    }

    pub fn untrack(&mut self, pid: u32) {
        if self.tracked.remove(&pid).is_ok() {
            self.watched.remove(pid);
        }
        let _ = self.heartbeats.remove(&pid);
    }

    /// Worker `pid`'s heartbeat file, which the kernel looks for as it dies.
    pub fn set_heartbeat(&mut self, pid: u32, heartbeat: Heartbeat) {
        if let Err(e) = self.heartbeats.insert(pid, heartbeat, 0) {
            log::debug!("worker {pid}: heartbeat file not given to the kernel: {e}");
        }
    }

    /// A connection the worker held before the exporter attached: followed
    /// from its next request line (unless the kernel already has it).
    pub fn seed_conn(&mut self, tgid: u32, fd: u32) {
        let _ = self
            .conns
            .insert(ConnKey { tgid, fd }, Conn::attached(), BPF_NOEXIST);
    }

    /// Removes the connections dead workers `tgids` left behind, for
    /// userspace to finish: one walk of the map for all of them.
    pub fn drain_conns(&mut self, tgids: &BTreeSet<u32>) -> Vec<(u32, Conn)> {
        let keys: Vec<ConnKey> = self
            .conns
            .keys()
            .filter_map(Result::ok)
            .filter(|k| tgids.contains(&k.tgid))
            .collect();
        keys.iter()
            .filter_map(|key| {
                let conn = self.conns.get(key, 0).ok();
                let _ = self.conns.remove(key);
                Some((key.tgid, conn?))
            })
            .collect()
    }

    /// The workers the metrics map has series of.
    pub fn metric_tgids(&self) -> BTreeSet<u32> {
        self.metrics
            .keys()
            .filter_map(Result::ok)
            .map(|k| k.tgid)
            .collect()
    }

    /// The series of dead workers `tgids`, their per-CPU values summed
    /// (they no longer change: the workers are gone).
    pub fn metrics_of(&self, tgids: &BTreeSet<u32>) -> Vec<(MetricKey, Aggregate)> {
        self.metrics
            .iter()
            .filter_map(Result::ok)
            .filter(|(k, _)| tgids.contains(&k.tgid))
            .map(|(key, per_cpu)| {
                let mut total = Aggregate::default();
                per_cpu.iter().for_each(|v| total.merge(v));
                (key, total)
            })
            .collect()
    }

    pub fn remove_metrics(&mut self, keys: &[MetricKey]) {
        for key in keys {
            let _ = self.metrics.remove(key);
        }
    }

    /// Master `pid`'s statistics, summed over CPUs (zero if it has none).
    pub fn master_stats(&self, pid: u32) -> MasterStats {
        self.master_stats
            .get(&pid, 0)
            .map(|per_cpu| reader::sum_stats(per_cpu.iter()))
            .unwrap_or_default()
    }

    pub fn remove_master_stats(&mut self, pids: &[u32]) {
        for pid in pids {
            let _ = self.master_stats.remove(pid);
        }
    }

    /// Makes `listeners` what the masters listen on: connections to them are
    /// the workers' clients, and their handshakes are timed. A listener new
    /// to the kernel makes it forget the sockets it had taken for the
    /// workers' own (one may be a connection to it).
    pub fn set_listeners(&mut self, listeners: &Listeners) {
        let (was_ports, was_unix) = (self.listeners.ports.clone(), self.listeners.unix.clone());
        for &port in was_ports.difference(&listeners.ports) {
            let _ = self.listen_ports.set(port as u32, 0, 0);
        }
        for &port in listeners.ports.difference(&was_ports) {
            if let Err(e) = self.listen_ports.set(port as u32, 1, 0) {
                log::warn!("cannot follow connections to port {port}: {e}");
            }
        }
        for inode in was_unix.difference(&listeners.unix) {
            let _ = self.listen_inodes.remove(inode);
        }
        for &inode in listeners.unix.difference(&was_unix) {
            if let Err(e) = self.listen_inodes.insert(inode, 1, 0) {
                log::warn!("cannot follow connections to unix socket inode {inode}: {e}");
            }
        }
        let added = !listeners.ports.is_subset(&was_ports) || !listeners.unix.is_subset(&was_unix);
        if added {
            let foreign: Vec<ConnKey> = self
                .conns
                .iter()
                .filter_map(Result::ok)
                .filter(|(_, c)| c.phase == exporter_ebpf::request::phase::FOREIGN)
                .map(|(k, _)| k)
                .collect();
            for key in foreign {
                let _ = self.conns.remove(&key);
            }
        }
        self.listeners = listeners.clone();
    }
}

/// What the masters listen on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listeners {
    pub ports: std::collections::BTreeSet<u16>,
    /// Inodes of the unix socket files.
    pub unix: std::collections::BTreeSet<u64>,
    /// Their paths (as the masters see them).
    pub unix_paths: std::collections::BTreeSet<PathBuf>,
}

impl Listeners {
    /// What the masters `pids` listen on, from their sockets (sock_diag)
    /// and, for unix sockets, the socket files in their mount namespaces.
    pub fn of(pids: impl IntoIterator<Item = u32>) -> Listeners {
        let mut found = Listeners::default();
        for pid in pids {
            let inodes = crate::listeners::socket_fds(pid)
                .into_iter()
                .map(|(_, inode)| inode)
                .collect();
            for l in crate::listeners::listeners(pid, &inodes).listeners {
                if let Some(path) = l.label.strip_prefix("unix:") {
                    let inside = PathBuf::from(format!("/proc/{pid}/root"))
                        .join(path.trim_start_matches('/'));
                    if let Ok(meta) = std::fs::metadata(&inside) {
                        found
                            .unix
                            .insert(std::os::unix::fs::MetadataExt::ino(&meta));
                        found.unix_paths.insert(PathBuf::from(path));
                    }
                } else if let Some(port) = l.label.rsplit(':').next().and_then(|p| p.parse().ok()) {
                    found.ports.insert(port);
                }
            }
        }
        found
    }
}

/// The C library `pid` has mapped, as a path this process can open (through
/// the process's root, so one in a container works too).
fn libc_of(pid: u32) -> Option<PathBuf> {
    let maps = std::fs::read(format!("/proc/{pid}/maps")).ok()?;
    let line = maps.split(|&b| b == b'\n').find(|line| {
        let path = line.rsplit(|&b| b == b' ').next().unwrap_or_default();
        let name = path.rsplit(|&b| b == b'/').next().unwrap_or_default();
        name.starts_with(b"libc.so") || name.starts_with(b"libc-") || name.starts_with(b"ld-musl")
    })?;
    let path = line.rsplit(|&b| b == b' ').next()?;
    let mut full = PathBuf::from(format!("/proc/{pid}/root"));
    full.push(std::ffi::OsStr::from_bytes(path.strip_prefix(b"/")?));
    Some(full)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_this_process_c_library() {
        let path = libc_of(std::process::id()).expect("libc mapped");
        assert!(path.starts_with(format!("/proc/{}/root/", std::process::id())));
        assert!(path.exists(), "{}", path.display());
    }
}
