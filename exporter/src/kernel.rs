//! The kernel side as userspace sees it: load the embedded object, configure
//! it, attach its programs, and typed access to its maps.

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, MapError, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::{ProgramError, TracePoint},
};
use exporter_ebpf::{
    abi::{
        Aggregate, Config, ConnKey, DURATION_SLOTS, Heartbeat, MetricKey, Proc, Queue, error, map,
    },
    request::Conn,
};
use thiserror::Error;

/// Insert only if absent (a heartbeat the kernel saw meanwhile wins).
const BPF_NOEXIST: u64 = 1;

use crate::cli::IoSyscalls;

// The programs take syscall arguments from x86-64 `struct pt_regs` offsets
// (exporter_ebpf::tracepoint::PT_REGS_DI/SI); another architecture needs its own.
#[cfg(not(target_arch = "x86_64"))]
compile_error!("gunicorn-ebpf-exporter's eBPF programs read x86-64 syscall registers");

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/exporter-ebpf"));

#[derive(Debug, Error)]
pub enum KernelError {
    #[error("loading the eBPF object failed")]
    Load(#[source] aya::EbpfError),
    #[error("map {0} is missing from the eBPF object")]
    MissingMap(&'static str),
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

/// (program, category, tracepoint). Processes first, so forks are followed
/// before any I/O is. Syscalls are traced at their exit only (their arguments
/// come from the saved registers), except the few whose entry is the event.
type Attachment = (&'static str, &'static str, &'static str);

const PROCESS: [Attachment; 10] = [
    ("task_newtask", "task", "task_newtask"),
    ("sched_process_exec", "sched", "sched_process_exec"),
    ("sys_enter_exit_group", "syscalls", "sys_enter_exit_group"),
    ("sched_process_exit", "sched", "sched_process_exit"),
    ("sys_exit_wait4", "syscalls", "sys_exit_wait4"),
    ("sys_enter_listen", "syscalls", "sys_enter_listen"),
    ("sys_enter_utimensat", "syscalls", "sys_enter_utimensat"),
    ("signal_generate", "signal", "signal_generate"),
    ("signal_deliver", "signal", "signal_deliver"),
    ("mark_victim", "oom", "mark_victim"),
];
const GUNICORN_IO: [Attachment; 9] = [
    ("sys_exit_accept4", "syscalls", "sys_exit_accept4"),
    ("sys_exit_accept", "syscalls", "sys_exit_accept"),
    ("sys_exit_recvfrom", "syscalls", "sys_exit_recvfrom"),
    ("sys_exit_sendto", "syscalls", "sys_exit_sendto"),
    ("sys_exit_sendfile64", "syscalls", "sys_exit_sendfile64"),
    ("sys_enter_shutdown", "syscalls", "sys_enter_shutdown"),
    ("sys_enter_close", "syscalls", "sys_enter_close"),
    ("sys_enter_epoll_ctl", "syscalls", "sys_enter_epoll_ctl"),
    ("inet_sock_set_state", "sock", "inet_sock_set_state"),
];
/// The exception class behind an app-exception 500 (--no-exception-classes drops it).
const ERROR_LOG: [Attachment; 1] = [("error_log_write", "syscalls", "sys_enter_write")];
const OTHER_IO: [Attachment; 6] = [
    ("sys_exit_read", "syscalls", "sys_exit_read"),
    ("sys_exit_readv", "syscalls", "sys_exit_readv"),
    ("sys_exit_recvmsg", "syscalls", "sys_exit_recvmsg"),
    ("sys_exit_write", "syscalls", "sys_exit_write"),
    ("sys_exit_writev", "syscalls", "sys_exit_writev"),
    ("sys_exit_sendmsg", "syscalls", "sys_exit_sendmsg"),
];

/// Which optional programs to attach.
#[derive(Clone, Copy, Debug)]
pub struct Programs {
    pub io: IoSyscalls,
    pub exception_classes: bool,
    /// Attach [`EMPTY`] in place of every program (the cost floor).
    pub empty: bool,
}

/// A program that returns at once, for measuring what tracing itself costs.
const EMPTY: &str = "empty";

pub struct Kernel {
    tracked: HashMap<MapData, u32, Proc>,
    conns: HashMap<MapData, ConnKey, Conn>,
    metrics: PerCpuHashMap<MapData, MetricKey, Aggregate>,
    errors: PerCpuArray<MapData, u64>,
    heartbeats: HashMap<MapData, u32, Heartbeat>,
    listen_ports: HashMap<MapData, u16, u8>,
    queue: PerCpuArray<MapData, Queue>,
    accepted: PerCpuArray<MapData, u64>,
    events: Option<RingBuf<MapData>>,
    attached: Vec<&'static str>,
    /// Owns the programs and their links: dropping it detaches everything.
    _ebpf: Ebpf,
}

fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, KernelError>
where
    T: TryFrom<aya::maps::Map, Error = MapError>,
{
    let map = ebpf.take_map(name).ok_or(KernelError::MissingMap(name))?;
    T::try_from(map).map_err(|source| KernelError::Map { name, source })
}

impl Kernel {
    /// Loads the programs with the duration buckets and attaches them.
    pub fn load(
        duration_bounds_ns: [u64; DURATION_SLOTS],
        programs: Programs,
    ) -> Result<Kernel, KernelError> {
        let mut ebpf = EbpfLoader::new().load(OBJECT).map_err(KernelError::Load)?;
        let mut config: Array<MapData, Config> = take(&mut ebpf, map::CONFIG)?;
        config
            .set(0, Config { duration_bounds_ns }, 0)
            .map_err(|source| KernelError::Map {
                name: map::CONFIG,
                source,
            })?;
        let mut kernel = Kernel {
            tracked: take(&mut ebpf, map::TRACKED)?,
            conns: take(&mut ebpf, map::CONNS)?,
            metrics: take(&mut ebpf, map::METRICS)?,
            errors: take(&mut ebpf, map::ERRORS)?,
            heartbeats: take(&mut ebpf, map::HEARTBEAT)?,
            listen_ports: take(&mut ebpf, map::LISTEN_PORTS)?,
            queue: take(&mut ebpf, map::QUEUE)?,
            accepted: take(&mut ebpf, map::ACCEPTED)?,
            events: Some(take(&mut ebpf, map::EVENTS)?),
            attached: Vec::new(),
            _ebpf: ebpf,
        };
        let other: &[Attachment] = if programs.io == IoSyscalls::All {
            &OTHER_IO
        } else {
            &[]
        };
        let errors: &[Attachment] = if programs.exception_classes {
            &ERROR_LOG
        } else {
            &[]
        };
        for &(name, category, tracepoint) in PROCESS
            .iter()
            .chain(&GUNICORN_IO)
            .chain(errors)
            .chain(other)
        {
            let name = if programs.empty { EMPTY } else { name };
            kernel.attach((name, category, tracepoint))?;
        }
        Ok(kernel)
    }

    fn attach(&mut self, (name, category, tracepoint): Attachment) -> Result<(), KernelError> {
        let program: &mut TracePoint = self
            ._ebpf
            .program_mut(name)
            .ok_or(KernelError::MissingProgram(name))?
            .try_into()
            .map_err(|source| KernelError::Program { name, source })?;
        // One program may serve several tracepoints (EMPTY does): load it once.
        if program.fd().is_err() {
            program
                .load()
                .map_err(|source| KernelError::Program { name, source })?;
        }
        program
            .attach(category, tracepoint)
            .map_err(|source| KernelError::Program { name, source })?;
        self.attached.push(name);
        Ok(())
    }

    pub fn attached(&self) -> &[&'static str] {
        &self.attached
    }

    /// The ring buffer of lifecycle events (taken once, by the event loop).
    pub fn take_events(&mut self) -> Option<RingBuf<MapData>> {
        self.events.take()
    }

    pub fn track(&mut self, pid: u32, proc_: Proc) -> Result<(), MapError> {
        self.tracked.insert(pid, proc_, 0)
    }

    pub fn untrack(&mut self, pid: u32) {
        let _ = self.tracked.remove(&pid);
    }

    /// Removes the connections a dead worker left behind, for userspace to finish.
    pub fn drain_conns(&mut self, tgid: u32) -> Vec<Conn> {
        let keys: Vec<ConnKey> = self
            .conns
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.tgid == tgid)
            .collect();
        keys.iter()
            .filter_map(|key| {
                let conn = self.conns.get(key, 0).ok();
                let _ = self.conns.remove(key);
                conn
            })
            .collect()
    }

    /// Every open client connection: (tgid, its state).
    pub fn connections(&self) -> Vec<(u32, Conn)> {
        self.conns
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, c)| c.is_open())
            .map(|(k, c)| (k.tgid, c))
            .collect()
    }

    /// Every series, its per-CPU values summed.
    pub fn read_metrics(&self) -> Result<Vec<(MetricKey, Aggregate)>, MapError> {
        self.metrics
            .iter()
            .map(|entry| {
                let (key, per_cpu) = entry?;
                let mut total = Aggregate::default();
                per_cpu.iter().for_each(|v| total.merge(v));
                Ok((key, total))
            })
            .collect()
    }

    /// Drops a worker's series (after its grace period).
    pub fn forget_metrics(&mut self, tgid: u32) {
        let keys: Vec<MetricKey> = self
            .metrics
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.tgid == tgid)
            .collect();
        for key in keys {
            let _ = self.metrics.remove(&key);
        }
    }

    /// Makes the TCP ports the masters listen on the ones whose queue is timed.
    pub fn set_listen_ports(&mut self, ports: &std::collections::BTreeSet<u16>) {
        let old: Vec<u16> = self.listen_ports.keys().filter_map(Result::ok).collect();
        for port in old.iter().filter(|p| !ports.contains(p)) {
            let _ = self.listen_ports.remove(port);
        }
        for port in ports.iter().filter(|p| !old.contains(p)) {
            if let Err(e) = self.listen_ports.insert(port, 1, 0) {
                log::warn!("cannot time the accept queue of port {port}: {e}");
            }
        }
    }

    /// Connections accepted by workers since attach.
    pub fn accepted(&self) -> Result<u64, MapError> {
        Ok(self.accepted.get(&0, 0)?.iter().sum())
    }

    /// The accept-queue wait histogram, summed over CPUs.
    pub fn read_queue(&self) -> Result<Queue, MapError> {
        let mut total = Queue::default();
        self.queue.get(&0, 0)?.iter().for_each(|q| total.merge(q));
        Ok(total)
    }

    /// A heartbeat that happened before we attached (from the file's mtime).
    pub fn seed_heartbeat(&mut self, pid: u32, fd: u32, at_ns: u64) {
        let _ = self.heartbeats.insert(
            pid,
            Heartbeat {
                ts_ns: at_ns,
                fd,
                _pad: 0,
            },
            BPF_NOEXIST,
        );
    }

    /// tgid -> monotonic ns of its last heartbeat.
    pub fn heartbeats(&self) -> Vec<(u32, u64)> {
        self.heartbeats
            .iter()
            .filter_map(Result::ok)
            .map(|(pid, beat)| (pid, beat.ts_ns))
            .collect()
    }

    /// The kernel's failure counters, summed over CPUs, indexed by `abi::error`.
    pub fn read_errors(&self) -> Result<[u64; error::COUNT as usize], MapError> {
        let mut out = [0u64; error::COUNT as usize];
        for (index, slot) in out.iter_mut().enumerate() {
            *slot = self.errors.get(&(index as u32), 0)?.iter().sum();
        }
        Ok(out)
    }
}
