//! What the exporter knows about the watched Gunicorn: its masters (more than
//! one during a USR2 re-exec), their workers, the hooks seen, and the
//! requests userspace had to finish itself.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    time::{Duration, Instant},
};

use aya::maps::MapError;
use exporter_ebpf::abi::{
    Aggregate, DURATION_SLOTS, Event, ExceptionEvent, MetricKey, Proc, cause, event,
};

use crate::{
    actions::Actions,
    exceptions::Exceptions,
    kernel::Kernel,
    lifecycle::{Change, Hook, Lifecycle, Occurrence, Reason},
    logging, procs, target,
    workers::Workers,
};

/// Counters of what the lifecycle showed.
#[derive(Debug, Default)]
pub struct Counts {
    pub hooks: BTreeMap<Hook, u64>,
    pub restarts: BTreeMap<Reason, u64>,
    /// Signals delivered to a master, by name.
    pub master_signals: BTreeMap<String, u64>,
}

#[derive(Debug)]
pub struct Master {
    pub start_ticks: u64,
    pub alive: bool,
}

pub struct State {
    pub kernel: Kernel,
    pub masters: BTreeMap<u32, Master>,
    pub workers: Workers,
    pub counts: Counts,
    pub exceptions: Exceptions,
    lifecycle: Lifecycle,
    /// Requests ended by their worker's death, finished here from the
    /// connection state the kernel left behind (the kernel sees no close then).
    swept: BTreeMap<MetricKey, Aggregate>,
    bounds: [u64; DURATION_SLOTS],
    grace: Duration,
    pidfile: Option<PathBuf>,
    actions: Actions,
}

impl State {
    pub fn new(
        kernel: Kernel,
        bounds: [u64; DURATION_SLOTS],
        grace: Duration,
        pidfile: Option<PathBuf>,
        actions: Actions,
    ) -> State {
        State {
            kernel,
            masters: BTreeMap::new(),
            workers: Workers::default(),
            counts: Counts::default(),
            exceptions: Exceptions::default(),
            lifecycle: Lifecycle::default(),
            swept: BTreeMap::new(),
            bounds,
            grace,
            pidfile,
            actions,
        }
    }

    /// Tracks a master and the workers it already has. The programs are
    /// attached already, so a fork racing with this is seen by the kernel too.
    pub fn attach(&mut self, master: procs::ProcInfo) -> Result<(), MapError> {
        let result = self.track(master);
        self.kernel.set_listen_ports(&self.listen_ports());
        result
    }

    fn track(&mut self, master: procs::ProcInfo) -> Result<(), MapError> {
        let pid = master.pid;
        self.kernel.track(pid, Proc::master(pid))?;
        self.masters.insert(
            pid,
            Master {
                start_ticks: master.start_ticks,
                alive: true,
            },
        );
        self.lifecycle.adopt_master(pid);
        for child in procs::children(pid) {
            self.kernel.track(child.pid, Proc::worker(pid))?;
            if let Some((fd, at_ns)) = procs::heartbeat_file(child.pid) {
                self.kernel.seed_heartbeat(child.pid, fd, at_ns);
            }
            self.lifecycle.adopt_worker(child.pid, pid);
            self.workers.spawned(
                child.pid,
                procs::start_unix_secs(child.start_ticks),
                Some(child.start_ticks),
            );
        }
        Ok(())
    }

    pub fn up(&self) -> bool {
        self.masters.values().any(|m| m.alive)
    }

    pub fn on_exception(&mut self, ev: &ExceptionEvent) {
        self.exceptions.logged(ev.header.other, ev.tail());
    }

    pub fn on_event(&mut self, ev: &Event) {
        if ev.kind == event::EXCEPTION_ANSWERED {
            return self.exceptions.answered(ev.pid, ev.other, ev.value as u8);
        }
        let outcome = self.lifecycle.on(ev);
        for change in outcome.changes {
            self.apply(change);
        }
        for occurrence in outcome.hooks {
            *self.counts.hooks.entry(occurrence.hook).or_default() += 1;
            logging::hook(&occurrence);
            self.actions.run(&occurrence);
        }
    }

    fn apply(&mut self, change: Change) {
        match change {
            Change::WorkerSpawned { pid, .. } => self.spawned(pid),
            Change::WorkerState { pid, state } => self.workers.set_state(pid, state),
            Change::WorkerExited { pid, reason } => {
                *self.counts.restarts.entry(reason).or_default() += 1;
                self.exited(pid, reason.in_flight_cause());
            }
            Change::MasterStarted { pid } => {
                let ticks = procs::info(pid).map_or(0, |p| p.start_ticks);
                self.masters.insert(
                    pid,
                    Master {
                        start_ticks: ticks,
                        alive: true,
                    },
                );
                log::info!("gunicorn master {pid} started (re-exec); following it");
            }
            Change::MasterExited { pid } => {
                if let Some(m) = self.masters.get_mut(&pid) {
                    m.alive = false;
                    log::warn!("gunicorn master {pid} exited");
                }
            }
            Change::MasterSignal { signal, .. } => {
                *self
                    .counts
                    .master_signals
                    .entry(crate::lifecycle::sig::name(signal))
                    .or_default() += 1;
            }
        }
    }

    fn spawned(&mut self, pid: u32) {
        let ticks = procs::info(pid).map(|p| p.start_ticks);
        let started = ticks.map_or_else(procs::now_unix_secs, procs::start_unix_secs);
        if let Some(old) = self.workers.spawned(pid, started, ticks) {
            // The pid was reused before the dead worker's grace period ended.
            self.forget(old.pid);
        }
        if let Some(w) = self.workers.get(pid) {
            log::debug!("worker {pid} spawned ({})", w.id());
        }
    }

    /// A worker is gone: finish what it left in flight, start its grace period.
    fn exited(&mut self, pid: u32, in_flight: u8) {
        let now_ns = crate::procs::monotonic_ns();
        for conn in self.kernel.drain_conns(pid) {
            if let Some(done) = conn.on_close(now_ns) {
                let cause = if done.status == 0 {
                    in_flight
                } else {
                    cause::NONE
                };
                let key = MetricKey {
                    tgid: pid,
                    status: done.status,
                    method: done.method,
                    cause,
                };
                self.swept
                    .entry(key)
                    .or_default()
                    .record(&done, &self.bounds);
            }
        }
        self.workers.exited(pid, Instant::now());
    }

    /// Runs at every scrape and every second: catches exits the ring buffer
    /// did not deliver, re-attaches through the pidfile when every master is
    /// gone, and drops the series of workers dead longer than the grace period.
    pub fn refresh(&mut self) {
        let vanished: Vec<u32> = self
            .workers
            .alive()
            .filter(|w| w.start_ticks.is_some_and(|t| !procs::alive(w.pid, t)))
            .map(|w| w.pid)
            .collect();
        for pid in vanished {
            self.kernel.untrack(pid);
            self.exited(pid, cause::NONE);
        }
        for (pid, master) in self.masters.iter_mut().filter(|(_, m)| m.alive) {
            if !procs::alive(*pid, master.start_ticks) {
                master.alive = false;
                self.kernel.untrack(*pid);
                log::warn!("gunicorn master {pid} is gone");
            }
        }
        self.masters.retain(|_, m| m.alive);
        if !self.up() {
            self.reattach();
        }
        self.kernel.set_listen_ports(&self.listen_ports());
        for pid in self.workers.expire(Instant::now(), self.grace) {
            self.forget(pid);
        }
    }

    /// The TCP ports the masters listen on (from their sockets, via sock_diag).
    fn listen_ports(&self) -> std::collections::BTreeSet<u16> {
        self.masters
            .keys()
            .flat_map(|&pid| {
                let inodes = crate::backlog::socket_fds(pid)
                    .into_iter()
                    .map(|(_, inode)| inode)
                    .collect();
                crate::backlog::listeners(pid, &inodes).listeners
            })
            .filter(|l| !l.label.starts_with("unix:"))
            .filter_map(|l| l.label.rsplit(':').next()?.parse().ok())
            .collect()
    }

    /// With --pidfile, a master started again is attached again.
    fn reattach(&mut self) {
        let Some(path) = self.pidfile.clone() else {
            return;
        };
        let Ok(pid) = target::read_pidfile(&path) else {
            return;
        };
        let Ok(master) = target::resolve(pid) else {
            return;
        };
        let pid = master.info.pid;
        match self.attach(master.info) {
            Ok(()) => log::info!(
                "re-attached to gunicorn master {pid} from {}",
                path.display()
            ),
            Err(e) => log::warn!("re-attaching to gunicorn master {pid} failed: {e}"),
        }
    }

    /// Registers a worker met only in the metrics (its fork event was lost).
    pub fn ensure_worker(&mut self, pid: u32) {
        if self.workers.get(pid).is_some() {
            return;
        }
        self.spawned(pid);
        if procs::info(pid).is_none() {
            self.workers.exited(pid, Instant::now());
        }
    }

    fn forget(&mut self, pid: u32) {
        self.kernel.forget_metrics(pid);
        self.swept.retain(|k, _| k.tgid != pid);
        self.exceptions.forget(pid);
    }

    /// Every series: the kernel's, plus those finished in userspace.
    pub fn series(&self) -> Result<BTreeMap<MetricKey, Aggregate>, MapError> {
        let mut all = self.swept.clone();
        for (key, aggregate) in self.kernel.read_metrics()? {
            all.entry(key).or_default().merge(&aggregate);
        }
        Ok(all)
    }

    pub fn duration_bounds_ns(&self) -> &[u64; DURATION_SLOTS] {
        &self.bounds
    }

    pub fn action_counts(&self) -> Vec<((Hook, &'static str), u64)> {
        self.actions.counts()
    }
}

impl Occurrence {
    /// The environment a user action sees.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let opt = |v: Option<i32>| v.map_or_else(String::new, |v| v.to_string());
        vec![
            ("GUNICORN_HOOK", self.hook.name().to_string()),
            ("GUNICORN_MASTER_PID", self.master.to_string()),
            (
                "GUNICORN_WORKER_PID",
                self.worker.map_or_else(String::new, |p| p.to_string()),
            ),
            (
                "GUNICORN_SIGNAL",
                self.signal
                    .map_or_else(String::new, crate::lifecycle::sig::name),
            ),
            ("GUNICORN_EXIT_STATUS", opt(self.status)),
            (
                "GUNICORN_REASON",
                self.reason.map_or("", |r| r.name()).to_string(),
            ),
        ]
    }
}
