//! What the exporter knows about the watched Gunicorn: the master, its
//! workers, and the requests that userspace had to finish itself.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use aya::maps::MapError;
use exporter_ebpf::abi::{event, role, Aggregate, Event, MetricKey, Proc, DURATION_SLOTS};

use crate::{
    kernel::Kernel,
    procs::{self, ProcInfo},
    workers::Workers,
};

pub struct State {
    pub kernel: Kernel,
    pub master: ProcInfo,
    pub master_alive: bool,
    pub workers: Workers,
    /// Requests ended by their worker's death, finished here from the
    /// connection state the kernel left behind (the kernel sees no close then).
    swept: BTreeMap<MetricKey, Aggregate>,
    bounds: [u64; DURATION_SLOTS],
    grace: Duration,
}

impl State {
    /// Tracks the master and the workers it already has. The programs are
    /// attached already, so a fork racing with this is seen by the kernel too.
    pub fn attach(mut kernel: Kernel, master: ProcInfo, bounds: [u64; DURATION_SLOTS], grace: Duration) -> anyhow::Result<State> {
        kernel
            .track(master.pid, Proc { role: role::MASTER, master: master.pid })
            .context("tracking the master")?;
        let mut workers = Workers::default();
        for child in procs::children(master.pid) {
            kernel
                .track(child.pid, Proc { role: role::WORKER, master: master.pid })
                .context("tracking a worker")?;
            workers.spawned(child.pid, procs::start_unix_secs(child.start_ticks), Some(child.start_ticks));
        }
        Ok(State { kernel, master, master_alive: true, workers, swept: BTreeMap::new(), bounds, grace })
    }

    pub fn on_event(&mut self, ev: &Event) {
        match ev.kind {
            event::FORK => self.spawned(ev.pid),
            event::EXIT => self.exited(ev.pid),
            _ => log::debug!("unknown event kind {}", ev.kind),
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
            log::info!("worker {pid} spawned ({})", w.id());
        }
    }

    fn exited(&mut self, pid: u32) {
        if pid == self.master.pid {
            if std::mem::replace(&mut self.master_alive, false) {
                log::warn!("gunicorn master {pid} exited");
            }
            return;
        }
        for conn in self.kernel.drain_conns(pid) {
            if let Some(done) = conn.on_close() {
                let key = MetricKey { tgid: pid, status: done.status, method: done.method, _pad: 0 };
                self.swept.entry(key).or_default().record(&done, &self.bounds);
            }
        }
        if self.workers.exited(pid, Instant::now()) {
            log::info!("worker {pid} exited");
        }
    }

    /// Catches exits the ring buffer did not deliver (the process vanished
    /// between listing and tracking, or an event was lost), and drops the
    /// series of workers dead for longer than the grace period.
    pub fn refresh(&mut self) {
        let vanished: Vec<u32> = self
            .workers
            .alive()
            .filter(|w| w.start_ticks.is_some_and(|t| !procs::alive(w.pid, t)))
            .map(|w| w.pid)
            .collect();
        for pid in vanished {
            self.kernel.untrack(pid);
            self.exited(pid);
        }
        if self.master_alive && !procs::alive(self.master.pid, self.master.start_ticks) {
            self.exited(self.master.pid);
        }
        for pid in self.workers.expire(Instant::now(), self.grace) {
            self.forget(pid);
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
}
