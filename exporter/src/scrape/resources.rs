//! Resources of the master(s) and workers, from /proc (through procfs), and
//! the listen backlogs of the master's sockets, read fresh at every scrape.
//!
//! The pids come from the published view (no lock on the state). A process
//! that is gone (or whose pid now names another process) by the time it is
//! read is skipped.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Mutex,
};

use procfs::process::{Process, Status};
use prometheus::{
    core::{Collector, Desc},
    proto::MetricFamily,
};

use crate::{
    listeners,
    scrape::{
        exposition::{self, Labels, counter, gauge, name},
        view::{Published, View},
    },
};

/// (name, help, variable labels) of every family, for the registry's descs.
const FAMILIES: [exposition::Family; 16] = [
    (
        name::WORKER_MEMORY,
        "Resident memory (RSS) of the worker process, in bytes.",
        &["worker_id", "pid"],
    ),
    (
        name::MASTER_MEMORY,
        "Resident memory (RSS) of the gunicorn master process, in bytes.",
        &["pid"],
    ),
    (
        name::WORKER_CPU,
        "CPU time the worker process used (user plus system, all its threads), in seconds.",
        &["worker_id", "pid"],
    ),
    (
        name::MASTER_CPU,
        "CPU time the gunicorn master process used (user plus system, all its threads), in seconds.",
        &["pid"],
    ),
    (
        name::WORKER_CPU_PERCENT,
        "CPU use of the worker process since the exporter's previous scrape of it (at the first: since it started); 100 = one core busy.",
        &["worker_id", "pid"],
    ),
    (
        name::MASTER_CPU_PERCENT,
        "CPU use of the gunicorn master process since the exporter's previous scrape of it (at the first: since it started); 100 = one core busy.",
        &["pid"],
    ),
    (
        name::WORKER_UPTIME,
        "Seconds since the worker process started.",
        &["worker_id", "pid"],
    ),
    (
        name::MASTER_UPTIME,
        "Seconds since the gunicorn master process started.",
        &["pid"],
    ),
    (
        name::WORKER_THREADS,
        "Threads of the worker process.",
        &["worker_id", "pid"],
    ),
    (
        name::MASTER_THREADS,
        "Threads of the gunicorn master process.",
        &["pid"],
    ),
    (
        name::WORKER_OPEN_FDS,
        "Open file descriptors of the worker process (sockets and connections included).",
        &["worker_id", "pid"],
    ),
    (
        name::MASTER_OPEN_FDS,
        "Open file descriptors of the gunicorn master process.",
        &["pid"],
    ),
    (
        name::WORKER_CONTEXT_SWITCHES,
        "Context switches of the worker's threads, by kind: voluntary (a thread waited: I/O, lock, sleep) or involuntary (preempted). Threads that ended between scrapes are counted up to the last scrape that saw them.",
        &["worker_id", "pid", "kind"],
    ),
    (
        name::MASTER_CONTEXT_SWITCHES,
        "Context switches of the gunicorn master's threads, by kind: voluntary or involuntary.",
        &["pid", "kind"],
    ),
    (
        name::LISTEN_BACKLOG,
        "Connections waiting in the accept queue of a socket gunicorn listens on (accepted by the kernel, not yet by a worker).",
        &["listener"],
    ),
    (
        name::LISTEN_BACKLOG_LIMIT,
        "Most connections the accept queue of the listener can hold: gunicorn's --backlog capped by net.core.somaxconn. When it is full, new TCP connections stall (handshake packets dropped and retried) and new unix-socket connections wait or fail with EAGAIN.",
        &["listener"],
    ),
];

// ------------------------------------------------------------ bookkeeping

/// Context switch counts of one thread (or their sum).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Switches {
    pub voluntary: u64,
    pub involuntary: u64,
}

impl Switches {
    fn add(self, o: Switches) -> Switches {
        Switches {
            voluntary: self.voluntary + o.voluntary,
            involuntary: self.involuntary + o.involuntary,
        }
    }
}

/// Sums a process's per-thread switch counts into counters that do not go
/// down when a thread ends: an ended thread's last seen counts are kept.
#[derive(Debug, Default)]
pub struct SwitchTally {
    last: BTreeMap<u32, Switches>,
    gone: Switches,
}

impl SwitchTally {
    pub fn update(&mut self, now: BTreeMap<u32, Switches>) -> Switches {
        for (tid, old) in &self.last {
            match now.get(tid) {
                // Same thread (counts never go down).
                Some(new)
                    if new.voluntary >= old.voluntary && new.involuntary >= old.involuntary => {}
                // Ended, or its tid now names a new thread.
                _ => self.gone = self.gone.add(*old),
            }
        }
        let total = now.values().fold(self.gone, |sum, s| sum.add(*s));
        self.last = now;
        total
    }
}

/// CPU ticks used by a process at a moment (seconds since boot).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CpuMark {
    pub ticks: u64,
    pub at_secs: f64,
}

/// CPU use between two marks, in percent of one core.
pub fn cpu_percent(prev: CpuMark, now: CpuMark, ticks_per_sec: f64) -> f64 {
    let wall = now.at_secs - prev.at_secs;
    if wall <= 0.0 {
        return 0.0;
    }
    now.ticks.saturating_sub(prev.ticks) as f64 / ticks_per_sec / wall * 100.0
}

// ----------------------------------------------------------------- reading

/// CLOCK_BOOTTIME in seconds: the clock of /proc/<pid>/stat's start time.
/// (procfs has it only as /proc/uptime: a file read, in 10 ms steps.)
fn boot_secs() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// The switch counts of a /proc status (they are per thread).
fn switches(status: &Status) -> Option<Switches> {
    Some(Switches {
        voluntary: status.voluntary_ctxt_switches?,
        involuntary: status.nonvoluntary_ctxt_switches?,
    })
}

/// The switch counts of each thread of `process` (`threads` from its stat).
fn thread_switches(process: &Process, threads: i64) -> Option<BTreeMap<u32, Switches>> {
    if threads <= 1 {
        let only = switches(&process.status().ok()?)?;
        return Some(BTreeMap::from([(process.pid as u32, only)]));
    }
    Some(
        process
            .tasks()
            .ok()?
            .flatten()
            // A thread that ended meanwhile is skipped.
            .filter_map(|task| Some((task.tid as u32, switches(&task.status().ok()?)?)))
            .collect(),
    )
}

/// One process's numbers at a scrape.
#[derive(Clone, Debug, PartialEq)]
struct Reading {
    rss_bytes: u64,
    cpu_seconds: f64,
    cpu_percent: f64,
    uptime_secs: f64,
    threads: u64,
    open_fds: Option<u64>,
    switches: Option<Switches>,
}

/// What the collector remembers of a process between scrapes.
#[derive(Debug)]
struct Remembered {
    cpu: CpuMark,
    switches: SwitchTally,
}

/// What the collector remembers between scrapes.
#[derive(Debug, Default)]
struct Memory {
    /// By (pid, start ticks): a reused pid starts afresh.
    procs: HashMap<(u32, u64), Remembered>,
    /// The listener inodes a worker was last seen holding, by (first) master.
    served: BTreeMap<u32, BTreeSet<u64>>,
    /// Problems already logged (each is logged once).
    logged: BTreeSet<String>,
}

/// A process to read, copied out of the State.
struct Target {
    pid: u32,
    start_ticks: Option<u64>,
    /// The worker's id; None for a master.
    worker_id: Option<String>,
}

pub struct Resources {
    view: Published,
    /// Discovery's identity label names (empty with --pid/--pidfile).
    identity_labels: Vec<String>,
    descs: Vec<Desc>,
    memory: Mutex<Memory>,
    page_size: u64,
    ticks_per_sec: f64,
}

/// Open descriptors of `pid`. Not procfs's `fd_count`: before Linux 6.2 it
/// counts the directory's `.` and `..` too (two more on Debian 12's 6.1).
fn open_fds(pid: u32) -> Option<u64> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64)
}

impl Resources {
    pub fn new(view: Published, identity_labels: Vec<String>) -> prometheus::Result<Resources> {
        let descs = exposition::descs_with(&FAMILIES, &identity_labels, &[])?;
        Ok(Resources {
            view,
            identity_labels,
            descs,
            memory: Mutex::default(),
            page_size: procfs::page_size(),
            ticks_per_sec: procfs::ticks_per_second().max(1) as f64,
        })
    }

    fn help(name: &str) -> &'static str {
        exposition::help(&FAMILIES, name)
    }

    /// Reads one process; None if it is gone, a zombie, or no longer the
    /// process that had `start_ticks`.
    fn read(
        &self,
        t: &Target,
        memory: &mut Memory,
        seen: &mut BTreeSet<(u32, u64)>,
    ) -> Option<Reading> {
        let process = Process::new(t.pid as i32).ok()?;
        let stat = process.stat().ok()?;
        let now = boot_secs();
        if matches!(stat.state, 'Z' | 'X' | 'x')
            || t.start_ticks.is_some_and(|s| s != stat.starttime)
        {
            return None;
        }
        let started = stat.starttime as f64 / self.ticks_per_sec;
        let key = (t.pid, stat.starttime);
        seen.insert(key);
        let remembered = memory.procs.entry(key).or_insert_with(|| Remembered {
            cpu: CpuMark {
                ticks: 0,
                at_secs: started,
            },
            switches: SwitchTally::default(),
        });
        let cpu_ticks = stat.utime + stat.stime;
        let mark = CpuMark {
            ticks: cpu_ticks,
            at_secs: now,
        };
        let percent = cpu_percent(remembered.cpu, mark, self.ticks_per_sec);
        remembered.cpu = mark;
        let switches =
            thread_switches(&process, stat.num_threads).map(|now| remembered.switches.update(now));
        Some(Reading {
            rss_bytes: stat.rss * self.page_size,
            cpu_seconds: cpu_ticks as f64 / self.ticks_per_sec,
            cpu_percent: percent,
            uptime_secs: (now - started).max(0.0),
            threads: stat.num_threads.max(0) as u64,
            open_fds: open_fds(t.pid),
            switches,
        })
    }

    /// The served listeners' backlogs, read from the first master's view.
    fn backlogs(
        &self,
        masters: &[u32],
        workers: &[u32],
        memory: &mut Memory,
    ) -> Vec<listeners::Listener> {
        let Some(&first) = masters.first() else {
            return Vec::new();
        };
        let master_fds: Vec<(u32, u64)> = masters
            .iter()
            .flat_map(|&m| listeners::socket_fds(m))
            .collect();
        if master_fds.is_empty() {
            return Vec::new();
        }
        let inodes: BTreeSet<u64> = master_fds.iter().map(|&(_, inode)| inode).collect();
        let found = listeners::listeners(first, &inodes);
        // A master that exited meanwhile is no problem to report.
        let gone = !std::path::Path::new(&format!("/proc/{first}")).exists();
        for problem in found.problems {
            if !gone && memory.logged.insert(problem.clone()) {
                log::warn!("listen backlog: {problem}");
            }
        }
        let listening: BTreeSet<u64> = found.listeners.iter().map(|l| l.inode).collect();
        let candidates: Vec<(u32, u64)> = master_fds
            .into_iter()
            .filter(|(_, inode)| listening.contains(inode))
            .collect();
        let served =
            match listeners::served_by_workers(&candidates, workers, listeners::fd_socket_inode) {
                Some(served) => {
                    memory.served.insert(first, served.clone());
                    served
                }
                // No worker to ask: what workers held last, or else everything.
                None => {
                    let before: BTreeSet<u64> = memory
                        .served
                        .get(&first)
                        .map(|s| s.intersection(&listening).copied().collect())
                        .unwrap_or_default();
                    if before.is_empty() { listening } else { before }
                }
            };
        found
            .listeners
            .into_iter()
            .filter(|l| served.contains(&l.inode))
            .collect()
    }
}

impl Collector for Resources {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let view = self.view.latest();
        let mut memory = self
            .memory
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut seen = BTreeSet::new();
        let mut families = Vec::with_capacity(FAMILIES.len());
        if self.identity_labels.is_empty() {
            families = self.families(&view, &mut memory, &mut seen);
        } else {
            // Discovery: each master with its workers, its listeners read
            // in its own network namespace, under its identity labels.
            for (pid, discovered) in &view.discovered {
                let mut more = self.families(&view.of_master(*pid), &mut memory, &mut seen);
                exposition::add_labels(&mut more, &discovered.labels);
                families.extend(more);
            }
            memory
                .served
                .retain(|pid, _| view.discovered.contains_key(pid));
        }
        memory.procs.retain(|key, _| seen.contains(key));
        families
            .into_iter()
            .filter(|f| !f.get_metric().is_empty())
            .collect()
    }
}

impl Resources {
    /// The families of the processes `view` holds.
    fn families(
        &self,
        view: &View,
        memory: &mut Memory,
        seen: &mut BTreeSet<(u32, u64)>,
    ) -> Vec<MetricFamily> {
        let masters: Vec<Target> = view
            .masters
            .iter()
            .map(|m| Target {
                pid: m.pid,
                start_ticks: m.start_ticks,
                worker_id: None,
            })
            .collect();
        let workers: Vec<Target> = view
            .workers
            .alive()
            .map(|w| Target {
                pid: w.pid,
                start_ticks: w.start_ticks,
                worker_id: Some(w.id()),
            })
            .collect();

        let mut read = |targets: &[Target], memory: &mut Memory| -> Vec<(Labels, Reading)> {
            targets
                .iter()
                .filter_map(|t| {
                    let reading = self.read(t, memory, seen)?;
                    let mut labels = Vec::with_capacity(2);
                    if let Some(id) = &t.worker_id {
                        labels.push(("worker_id", id.clone()));
                    }
                    labels.push(("pid", t.pid.to_string()));
                    Some((labels, reading))
                })
                .collect()
        };
        let master_rows = read(&masters, memory);
        let worker_rows = read(&workers, memory);
        let master_pids: Vec<u32> = masters.iter().map(|t| t.pid).collect();
        let worker_pids: Vec<u32> = workers.iter().map(|t| t.pid).collect();
        let listeners = self.backlogs(&master_pids, &worker_pids, memory);

        let mut families = Vec::with_capacity(FAMILIES.len());
        for (rows, [memory, cpu, percent, uptime, threads, fds, switches]) in [
            (
                &worker_rows,
                [
                    name::WORKER_MEMORY,
                    name::WORKER_CPU,
                    name::WORKER_CPU_PERCENT,
                    name::WORKER_UPTIME,
                    name::WORKER_THREADS,
                    name::WORKER_OPEN_FDS,
                    name::WORKER_CONTEXT_SWITCHES,
                ],
            ),
            (
                &master_rows,
                [
                    name::MASTER_MEMORY,
                    name::MASTER_CPU,
                    name::MASTER_CPU_PERCENT,
                    name::MASTER_UPTIME,
                    name::MASTER_THREADS,
                    name::MASTER_OPEN_FDS,
                    name::MASTER_CONTEXT_SWITCHES,
                ],
            ),
        ] {
            let each = |f: fn(&Reading) -> Option<f64>| {
                rows.iter()
                    .filter_map(move |(l, r)| Some((l.clone(), f(r)?)))
            };
            families.push(gauge(
                memory,
                Self::help(memory),
                each(|r| Some(r.rss_bytes as f64)),
            ));
            families.push(counter(cpu, Self::help(cpu), each(|r| Some(r.cpu_seconds))));
            families.push(gauge(
                percent,
                Self::help(percent),
                each(|r| Some(r.cpu_percent)),
            ));
            families.push(gauge(
                uptime,
                Self::help(uptime),
                each(|r| Some(r.uptime_secs)),
            ));
            families.push(gauge(
                threads,
                Self::help(threads),
                each(|r| Some(r.threads as f64)),
            ));
            families.push(gauge(
                fds,
                Self::help(fds),
                each(|r| r.open_fds.map(|n| n as f64)),
            ));
            let by_kind = rows.iter().flat_map(|(l, r)| {
                r.switches.into_iter().flat_map(move |s| {
                    [("voluntary", s.voluntary), ("involuntary", s.involuntary)].map(|(kind, n)| {
                        let mut labels = l.clone();
                        labels.push(("kind", kind.to_string()));
                        (labels, n as f64)
                    })
                })
            });
            families.push(counter(switches, Self::help(switches), by_kind));
        }
        let label = |l: &listeners::Listener| vec![("listener", l.label.clone())];
        families.push(gauge(
            name::LISTEN_BACKLOG,
            Self::help(name::LISTEN_BACKLOG),
            listeners.iter().map(|l| (label(l), l.backlog as f64)),
        ));
        families.push(gauge(
            name::LISTEN_BACKLOG_LIMIT,
            Self::help(name::LISTEN_BACKLOG_LIMIT),
            listeners
                .iter()
                .filter_map(|l| Some((label(l), l.limit? as f64))),
        ));
        families
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sw(v: u64, i: u64) -> Switches {
        Switches {
            voluntary: v,
            involuntary: i,
        }
    }

    #[test]
    fn switch_counts_survive_ended_threads() {
        let mut t = SwitchTally::default();
        assert_eq!(
            t.update(BTreeMap::from([(1, sw(10, 1)), (2, sw(5, 2))])),
            sw(15, 3)
        );
        assert_eq!(
            t.update(BTreeMap::from([(1, sw(12, 1)), (2, sw(6, 2))])),
            sw(18, 3)
        );
        // Thread 2 ended: its last counts stay.
        assert_eq!(t.update(BTreeMap::from([(1, sw(13, 1))])), sw(19, 3));
        // Thread 3 appeared.
        assert_eq!(
            t.update(BTreeMap::from([(1, sw(13, 1)), (3, sw(1, 0))])),
            sw(20, 3)
        );
        // Tid 3 reused by a new thread (its counts went down).
        assert_eq!(
            t.update(BTreeMap::from([(1, sw(13, 1)), (3, sw(0, 0))])),
            sw(20, 3)
        );
        assert_eq!(
            t.update(BTreeMap::from([(1, sw(13, 1)), (3, sw(4, 0))])),
            sw(24, 3)
        );
    }

    #[test]
    fn cpu_percent_over_the_interval() {
        let hz = 100.0;
        let a = CpuMark {
            ticks: 100,
            at_secs: 10.0,
        };
        assert_eq!(
            cpu_percent(
                a,
                CpuMark {
                    ticks: 150,
                    at_secs: 11.0
                },
                hz
            ),
            50.0
        );
        assert_eq!(
            cpu_percent(
                a,
                CpuMark {
                    ticks: 500,
                    at_secs: 12.0
                },
                hz
            ),
            200.0
        );
        assert_eq!(
            cpu_percent(
                a,
                CpuMark {
                    ticks: 100,
                    at_secs: 10.0
                },
                hz
            ),
            0.0,
            "no time passed"
        );
        assert_eq!(
            cpu_percent(
                a,
                CpuMark {
                    ticks: 90,
                    at_secs: 11.0
                },
                hz
            ),
            0.0,
            "never negative"
        );
    }

    #[test]
    fn own_thread_switches() {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let other = std::thread::spawn(move || stopped.recv());
        let me = Process::myself().unwrap();
        let pid = std::process::id();
        let stat = me.stat().unwrap();
        let threads = thread_switches(&me, stat.num_threads).unwrap();
        drop(stop);
        let _ = other.join();
        assert!(
            threads.len() >= 2 && threads.contains_key(&pid),
            "{threads:?}"
        );
        let leader = thread_switches(&me, 1).unwrap();
        assert_eq!(leader.keys().collect::<Vec<_>>(), vec![&pid]);
    }
}
