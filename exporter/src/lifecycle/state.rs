//! What the exporter knows about the watched Gunicorn: its masters (more than
//! one during a USR2 re-exec), their workers, the hooks seen, why requests
//! failed, and the requests userspace had to finish itself.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    time::{Duration, Instant},
};

use aya::maps::MapError;
use exporter_ebpf::abi::{Aggregate, DURATION_SLOTS, FailedEvent, MetricKey, Proc};
use inotify::WatchDescriptor;

use super::{
    Change, Lifecycle, Occurrence,
    actions::Actions,
    exceptions::{Exceptions, Failure, FailureKey},
    heartbeats::Heartbeats,
    sig,
    workers::{Worker, Workers},
};
use crate::{
    discovery::{
        Discovery,
        identity::{Identity, Verdict},
        scan,
    },
    events::Event,
    kernel::{Kernel, Listeners},
    logging, procs,
    scrape::view::{Counts, Discovered, MasterView, Published, View},
    startup::target,
};

/// A master being watched.
#[derive(Debug)]
pub struct WatchedMaster {
    pub start_ticks: u64,
    pub alive: bool,
    /// Discovery mode: its identity labels, read when it was found.
    pub labels: Option<Vec<(String, String)>>,
    /// When it was seen gone: discovery keeps its series for the grace.
    pub exited: Option<Instant>,
}

/// Settings the state acts on.
pub struct Settings {
    pub bounds: [u64; DURATION_SLOTS],
    pub grace: Duration,
    /// Dead workers whose series are kept (within the grace) per master.
    pub max_dead_workers: usize,
    pub pidfile: Option<PathBuf>,
    /// Attach the read/write family when a worker is seen to need it.
    pub rw_on_demand: bool,
    /// Discovery mode (every master, with identity labels). None with
    /// --pid/--pidfile.
    pub discovery: Option<Discovery>,
}

/// A worker death whose in-flight requests are still to be finished.
struct Death {
    pid: u32,
    /// The abi::cause of what it left in flight.
    cause: u8,
    at_ns: u64,
}

pub struct State {
    kernel: Kernel,
    masters: BTreeMap<u32, WatchedMaster>,
    workers: Workers,
    /// By master.
    counts: BTreeMap<u32, Counts>,
    exceptions: Exceptions,
    heartbeats: Heartbeats,
    lifecycle: Lifecycle,
    /// Requests ended by their worker's death, finished here from the
    /// connection state the kernel left behind (the kernel sees no close then).
    swept: BTreeMap<MetricKey, Aggregate>,
    /// Deaths of this batch of events, finished together at its end.
    deaths: Vec<Death>,
    /// The series of workers whose own series ended, per master
    /// (`MetricKey::tgid` is the master's pid).
    exited: BTreeMap<MetricKey, Aggregate>,
    /// Their failed requests, by (master, method, error_type, route key).
    exited_failures: BTreeMap<FailureKey, u64>,
    /// Workers whose heartbeat file was not found yet.
    heartbeat_missing: BTreeSet<u32>,
    /// Discovery: gunicorns with no worker at start, watched to their
    /// first fork (their start, unlike a later exec's, was not seen).
    started_unseen: BTreeSet<u32>,
    /// Kernel series folded into `exited`, to remove after the next publish.
    retired_keys: Vec<MetricKey>,
    /// A master may listen on something new (after a HUP or a re-exec, or it
    /// had no listener yet): look again when it forks a worker.
    listeners_stale: bool,
    settings: Settings,
    actions: Actions,
    published: Published,
}

impl State {
    pub fn new(
        kernel: Kernel,
        heartbeats: Heartbeats,
        settings: Settings,
        actions: Actions,
        published: Published,
    ) -> State {
        State {
            kernel,
            masters: BTreeMap::new(),
            workers: Workers::default(),
            counts: BTreeMap::new(),
            exceptions: Exceptions::default(),
            heartbeats,
            lifecycle: Lifecycle::default(),
            swept: BTreeMap::new(),
            deaths: Vec::new(),
            exited: BTreeMap::new(),
            exited_failures: BTreeMap::new(),
            retired_keys: Vec::new(),
            heartbeat_missing: BTreeSet::new(),
            started_unseen: BTreeSet::new(),
            listeners_stale: false,
            settings,
            actions,
            published,
        }
    }

    /// Starts the kernel's background work (see `kernel::write_probes`):
    /// after start-up dropped its capabilities.
    pub fn start_background(&mut self) -> std::io::Result<()> {
        self.kernel.start_write_probes()
    }

    pub fn workers_alive(&self) -> usize {
        self.workers.alive().count()
    }

    /// Tracks a master and the workers it already has. The programs are
    /// attached already, so a fork racing with this is seen by the kernel too.
    pub fn attach(&mut self, master: procs::ProcInfo) -> Result<(), MapError> {
        self.attach_as(master, None)
    }

    /// [`Self::attach`]; `forked_since` for a master seen first at its
    /// first fork (whether it also exec'd since the exporter started): the
    /// hooks Gunicorn ran before are counted (see `Lifecycle::adopt_forked`).
    fn attach_as(
        &mut self,
        master: procs::ProcInfo,
        forked_since: Option<bool>,
    ) -> Result<(), MapError> {
        let pid = master.pid;
        let result = self.track(master, forked_since);
        let listeners = self.refresh_listeners();
        self.seed_connections(pid, &listeners);
        result
    }

    fn track(
        &mut self,
        master: procs::ProcInfo,
        forked_since: Option<bool>,
    ) -> Result<(), MapError> {
        let pid = master.pid;
        self.kernel.track(pid, Proc::master(pid))?;
        // Discovery: a dead master's pid, reused within its grace, starts afresh.
        if self.settings.discovery.is_some() && self.masters.get(&pid).is_some_and(|m| !m.alive) {
            self.forget_counts(pid);
        }
        let watched = self.watched(pid, master.start_ticks);
        self.masters.insert(pid, watched);
        self.lifecycle.adopt_master(pid);
        let children = procs::children(pid);
        if let Some(execed) = forked_since {
            let pids: Vec<u32> = children.iter().map(|c| c.pid).collect();
            for occurrence in self.lifecycle.adopt_forked(pid, &pids, execed) {
                self.ran(&occurrence);
            }
        }
        for child in children {
            self.kernel.track(child.pid, Proc::worker(pid))?;
            self.lifecycle.adopt_worker(child.pid, pid);
            self.workers.spawned(
                child.pid,
                procs::start_unix_secs(child.start_ticks),
                Some(child.start_ticks),
            );
            self.workers.set_master(child.pid, pid);
            self.find_heartbeat(child.pid);
            self.follow_writes(child.pid);
            self.rw_if_needed(child.pid);
        }
        Ok(())
    }

    /// A master to watch from now on, with its identity in discovery mode.
    fn watched(&self, pid: u32, start_ticks: u64) -> WatchedMaster {
        let labels = self.settings.discovery.as_ref().map(|d| {
            let wanted = &d.labels;
            let identity = Identity::read(pid, wanted).unwrap_or_else(|| Identity {
                master_pid: pid,
                ..Identity::default()
            });
            log::info!("watching gunicorn master {pid}: {}", identity.describe());
            identity.labels(wanted)
        });
        WatchedMaster {
            start_ticks,
            alive: true,
            labels,
            exited: None,
        }
    }

    pub fn up(&self) -> bool {
        self.masters.values().any(|m| m.alive)
    }

    fn on_failed(&mut self, ev: &FailedEvent) {
        self.exceptions.failed(&Failure {
            tgid: ev.header.pid,
            tid: ev.header.other,
            method: ev.method,
            status: ev.header.value as u16,
            cut: ev.cut != 0,
            cause: ev.cause,
            start_ns: ev.start_ns,
            end_ns: ev.header.ts_ns,
            target: ev.target,
            target_len: ev.target_len,
            route: ev.route,
        });
    }

    /// Discovery: candidate `pid` (an untracked `python*` or `gunicorn*`
    /// exec, or a gunicorn with no worker at start) forked `child`: a master
    /// now is attached; one still without a worker (a child that is no
    /// worker, or gone already) is followed to its next fork.
    fn on_candidate(&mut self, pid: u32, child: u32) {
        let Some(discovery) = &self.settings.discovery else {
            return;
        };
        // (A dead master's pid within its grace may be reused by this one.)
        if self.masters.get(&pid).is_some_and(|m| m.alive) {
            return;
        }
        match scan::classify_forked(pid, child, &discovery.matcher) {
            Some(Verdict::Master) => {
                let Some(info) = procs::info(pid) else {
                    return;
                };
                // A candidate of the start-up scan was running before (its
                // start's hooks ran unseen); any other exec'd since.
                let execed = !self.started_unseen.remove(&pid);
                match self.attach_as(info, Some(execed)) {
                    Ok(()) => log::info!("gunicorn master {pid} started: attached"),
                    Err(e) => log::warn!("attaching to gunicorn master {pid} failed: {e}"),
                }
            }
            Some(Verdict::Candidate) => self.kernel.add_candidate(pid),
            verdict => log::debug!("process {pid} forked {child}: {verdict:?}, not a master"),
        }
    }

    /// Discovery: gunicorn processes found at start with no worker yet.
    pub fn add_candidates(&mut self, pids: &[u32]) {
        for &pid in pids {
            self.kernel.add_candidate(pid);
            self.started_unseen.insert(pid);
        }
    }

    /// A worker's heartbeat file was touched for the first time.
    pub fn on_heartbeat(&mut self, wd: &WatchDescriptor) {
        if let Some(pid) = self.heartbeats.touched(wd) {
            self.booted(pid);
        }
    }

    /// Worker `pid` booted: Gunicorn ran post_worker_init.
    fn booted(&mut self, pid: u32) {
        let master = self.workers.master_of(pid).unwrap_or(0);
        self.on_event(&Event::Booted { pid, master });
        self.rw_if_needed(pid);
    }

    pub fn on_event(&mut self, ev: &Event) {
        match ev {
            Event::Failed(failed) => return self.on_failed(failed),
            Event::Record(piece) => return self.exceptions.piece(piece),
            Event::CandidateForked { pid, child } => return self.on_candidate(*pid, *child),
            _ => {}
        }
        // A first touch whose inotify event is still queued behind this
        // exit: post_worker_init first, as it happened.
        if let Event::Exited { pid, .. } = ev
            && self.heartbeats.touched_unseen(*pid)
        {
            self.booted(*pid);
        }
        let outcome = self.lifecycle.on(ev);
        for change in outcome.changes {
            self.apply(change, ev);
        }
        for occurrence in outcome.hooks {
            self.ran(&occurrence);
        }
    }

    /// Gunicorn ran a hook: counted, logged, its `--on` command run.
    fn ran(&mut self, occurrence: &Occurrence) {
        *self
            .counts
            .entry(occurrence.master)
            .or_default()
            .hooks
            .entry(occurrence.hook)
            .or_default() += 1;
        logging::hook(occurrence);
        self.actions.run(occurrence);
    }

    /// Ends a batch of events: finishes the requests the batch's deaths
    /// left in flight (one walk of the connection map for all of them) and
    /// publishes what scrapes see.
    pub fn end_batch(&mut self) {
        if !self.heartbeat_missing.is_empty() {
            self.find_missing_heartbeats();
        }
        if !self.deaths.is_empty() {
            self.finish_deaths();
            // The cap on dead workers' series holds at every publish.
            self.expire();
        }
        self.published.publish(self.view());
        let retired = std::mem::take(&mut self.retired_keys);
        self.kernel.remove_metrics(&retired);
    }

    fn view(&self) -> View {
        View {
            workers: self.workers.clone(),
            masters: self
                .masters
                .iter()
                .filter(|(_, m)| m.alive)
                .map(|(&pid, m)| MasterView {
                    pid,
                    start_ticks: (m.start_ticks != 0).then_some(m.start_ticks),
                })
                .collect(),
            counts: self.counts.clone(),
            discovered: self
                .masters
                .iter()
                .filter_map(|(&pid, m)| {
                    let labels = m.labels.clone()?;
                    Some((pid, Discovered { labels }))
                })
                .collect(),
            failures: self
                .exceptions
                .counts()
                .map(|(k, n)| (k.clone(), *n))
                .collect(),
            swept: self.swept.clone(),
            exited: self.exited.clone(),
            exited_failures: self.exited_failures.clone(),
            heartbeat_fds: self.heartbeats.fds(),
        }
    }

    fn apply(&mut self, change: Change, ev: &Event) {
        match change {
            Change::WorkerSpawned { pid, master } => {
                if std::mem::take(&mut self.listeners_stale) {
                    self.refresh_listeners();
                }
                self.spawned(pid, master);
            }
            Change::WorkerState { pid, state } => self.workers.set_state(pid, state),
            Change::WorkerExited { pid, reason } => {
                let master = self.workers.master_of(pid).unwrap_or(0);
                *self
                    .counts
                    .entry(master)
                    .or_default()
                    .restarts
                    .entry(reason)
                    .or_default() += 1;
                // The kernel's time of death, if this event is the death.
                let at = match *ev {
                    Event::Exited {
                        pid: died, at_ns, ..
                    } if died == pid => at_ns,
                    _ => procs::monotonic_ns(),
                };
                self.exited(pid, reason.in_flight_cause(), at);
            }
            Change::MasterStarted { pid } => {
                let ticks = procs::info(pid).map_or(0, |p| p.start_ticks);
                let watched = self.watched(pid, ticks);
                self.masters.insert(pid, watched);
                self.listeners_stale = true;
                log::info!("gunicorn master {pid} started (re-exec); following it");
            }
            Change::MasterExited { pid } => {
                if let Some(m) = self.masters.get_mut(&pid) {
                    m.alive = false;
                    m.exited.get_or_insert_with(Instant::now);
                    log::warn!("gunicorn master {pid} exited");
                }
            }
            Change::MasterSignal { pid, signal } => {
                // A reload may bind new addresses before it forks new workers.
                self.listeners_stale |= signal == sig::HUP;
                *self
                    .counts
                    .entry(pid)
                    .or_default()
                    .master_signals
                    .entry(sig::name(signal))
                    .or_default() += 1;
            }
        }
    }

    fn spawned(&mut self, pid: u32, master: u32) {
        let ticks = procs::info(pid).map(|p| p.start_ticks);
        let started = ticks.map_or_else(procs::now_unix_secs, procs::start_unix_secs);
        if let Some(old) = self.workers.spawned(pid, started, ticks) {
            // The pid was reused before the dead worker's grace period ended.
            self.retire(vec![old]);
        }
        self.workers.set_master(pid, master);
        // The heartbeat file first: a worker may live less than a second.
        self.find_heartbeat(pid);
        self.follow_writes(pid);
        if let Some(w) = self.workers.get(pid) {
            log::debug!("worker {pid} spawned ({})", w.id());
        }
    }

    /// Follows worker `pid`'s heartbeat file, or looks again at the end of
    /// the batch and every second until it shows (with its first touch, if
    /// the worker booted meanwhile: post_worker_init is late, never lost).
    fn find_heartbeat(&mut self, pid: u32) {
        let older = self.workers.older_siblings(pid);
        match self.heartbeats.watch(pid, &older) {
            None => {
                self.heartbeat_missing.insert(pid);
            }
            Some(touched) => {
                self.heartbeat_missing.remove(&pid);
                self.share_heartbeat(pid);
                if touched {
                    self.booted(pid);
                }
            }
        }
    }

    /// Looks again for the heartbeat files not found yet, of living workers.
    fn find_missing_heartbeats(&mut self) {
        let missing = std::mem::take(&mut self.heartbeat_missing);
        for pid in missing {
            if self.workers.get(pid).is_some_and(|w| w.exited.is_none()) {
                self.find_heartbeat(pid);
            }
        }
    }

    /// Tells the kernel which file is the worker's heartbeat: whether the
    /// worker still holds it as it dies says whether worker_exit ran.
    fn share_heartbeat(&mut self, pid: u32) {
        if let Some(heartbeat) = self.heartbeats.file(pid) {
            self.kernel.set_heartbeat(pid, heartbeat);
        }
    }

    /// With the socket hooks, a uprobe follows the worker's log writes.
    fn follow_writes(&mut self, pid: u32) {
        self.kernel.watch_writes(pid);
    }

    /// With the syscall hooks, a worker that reads and writes its clients
    /// with read/write (uvloop's libuv) needs that family attached.
    fn rw_if_needed(&mut self, pid: u32) {
        if !self.settings.rw_on_demand || !procs::maps_library(pid, "uvloop") {
            return;
        }
        match self.kernel.need_rw_family() {
            Ok(true) => log::info!(
                "worker {pid} runs uvloop: tracing read/write/readv/writev/recvmsg/sendmsg too"
            ),
            Ok(false) => {}
            Err(e) => log::warn!(
                "attaching the read/write family for worker {pid}: {:#}",
                anyhow::Error::from(e)
            ),
        }
    }

    /// A worker is gone at `at_ns`: start its grace period; what it left in
    /// flight is finished at the end of the batch.
    fn exited(&mut self, pid: u32, cause: u8, at_ns: u64) {
        self.deaths.push(Death { pid, cause, at_ns });
        self.heartbeats.forget(pid);
        self.kernel.unwatch_writes(pid);
        self.workers.exited(pid, Instant::now());
    }

    /// Finishes the requests the dead workers left in flight.
    fn finish_deaths(&mut self) {
        let deaths: BTreeMap<u32, Death> = self.deaths.drain(..).map(|d| (d.pid, d)).collect();
        let pids = deaths.keys().copied().collect();
        for (pid, conn) in self.kernel.drain_conns(&pids) {
            let Some(death) = deaths.get(&pid) else {
                continue;
            };
            let Some(done) = conn.ended(death.at_ns) else {
                continue;
            };
            let key = MetricKey {
                tgid: pid,
                status: done.status,
                method: done.method,
                _pad: 0,
            };
            self.swept
                .entry(key)
                .or_default()
                .record(&done, &self.settings.bounds);
            if done.failed() {
                self.exceptions.failed(&Failure {
                    tgid: pid,
                    tid: done.tid,
                    method: done.method,
                    status: done.status,
                    cut: done.cut,
                    cause: death.cause,
                    start_ns: done.start_ns,
                    end_ns: done.end_ns,
                    target: done.target,
                    target_len: done.target_len,
                    route: done.route,
                });
            }
        }
    }

    /// Runs every second: catches exits the ring buffer did not deliver and
    /// workers it did not announce, re-attaches through the pidfile when
    /// every master is gone, and drops what outlived its time.
    pub fn refresh(&mut self) {
        let vanished: Vec<u32> = self
            .workers
            .alive()
            .filter(|w| w.start_ticks.is_some_and(|t| !procs::alive(w.pid, t)))
            .map(|w| w.pid)
            .collect();
        for pid in vanished {
            self.kernel.untrack(pid);
            self.exited(pid, exporter_ebpf::abi::cause::NONE, procs::monotonic_ns());
        }
        for (pid, master) in self.masters.iter_mut().filter(|(_, m)| m.alive) {
            if !procs::alive(*pid, master.start_ticks) {
                master.alive = false;
                master.exited.get_or_insert_with(Instant::now);
                self.kernel.untrack(*pid);
                log::warn!("gunicorn master {pid} is gone");
            }
        }
        self.forget_masters();
        if !self.up() {
            self.reattach();
        }
        for pid in self.kernel.metric_tgids() {
            self.ensure_worker(pid);
        }
        self.expire();
        self.exceptions.prune(procs::monotonic_ns());
    }

    /// Forgets the dead masters: at once with --pid/--pidfile (their
    /// workers' series fold into the next master's as before); in discovery
    /// mode once --series-grace has passed, with their counts and the
    /// series of their workers that ended.
    fn forget_masters(&mut self) {
        let now = Instant::now();
        let grace = self.settings.grace;
        let discovery = self.settings.discovery.is_some();
        let gone: Vec<u32> = self
            .masters
            .iter()
            .filter(|(_, m)| {
                !m.alive && (!discovery || m.exited.is_none_or(|t| now.duration_since(t) >= grace))
            })
            .map(|(pid, _)| *pid)
            .collect();
        for pid in gone {
            self.masters.remove(&pid);
            if discovery {
                self.forget_counts(pid);
                log::info!("gunicorn master {pid}: its series end (--series-grace passed)");
            }
        }
    }

    /// Discovery: drops what was counted for master `pid`.
    fn forget_counts(&mut self, pid: u32) {
        self.counts.remove(&pid);
        self.exited.retain(|k, _| k.tgid != pid);
        self.exited_failures.retain(|k, _| k.0 != pid);
    }

    /// Tells the kernel the masters' listeners.
    fn refresh_listeners(&mut self) -> Listeners {
        let alive = self.masters.iter().filter(|(_, m)| m.alive);
        let found = Listeners::of(alive.map(|(pid, _)| *pid).collect::<Vec<_>>());
        self.kernel.set_listeners(&found);
        // None yet (a master found before it bound): again at its first fork.
        self.listeners_stale = found.ports.is_empty() && found.unix.is_empty();
        found
    }

    /// Connections master `master`'s workers held before the exporter
    /// attached, told to the kernel so their next request is counted. Its
    /// workers only: the other masters' were seeded at their attach, and
    /// each worker costs a read of its TCP tables (milliseconds: a walk of
    /// the kernel's whole established hash), so seeding all at each attach
    /// made a start with many masters quadratic.
    fn seed_connections(&mut self, master: u32, listeners: &Listeners) {
        let pids: Vec<u32> = self
            .workers
            .alive()
            .filter(|w| w.master == master)
            .map(|w| w.pid)
            .collect();
        for pid in pids {
            for fd in procs::server_connections(pid, &listeners.ports, &listeners.unix_paths) {
                self.kernel.seed_conn(pid, fd);
            }
        }
    }

    /// With --pidfile, a master started again is attached again.
    fn reattach(&mut self) {
        let Some(path) = self.settings.pidfile.clone() else {
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
    fn ensure_worker(&mut self, pid: u32) {
        if self.workers.get(pid).is_some() {
            return;
        }
        let master = procs::info(pid).map_or(0, |p| p.ppid);
        self.spawned(pid, master);
        if procs::info(pid).is_none() {
            self.workers.exited(pid, Instant::now());
        }
    }

    /// Retires the dead workers past their grace or beyond the cap.
    fn expire(&mut self) {
        let expired = self.workers.expire(
            Instant::now(),
            self.settings.grace,
            self.settings.max_dead_workers,
        );
        self.retire(expired);
    }

    /// Ends the series of dead workers: their counts fold into their
    /// master's `exited` series, so sums over workers never go backwards.
    fn retire(&mut self, gone: Vec<Worker>) {
        // (A scrape reads the view, then the kernel's series of the workers
        // that view knows.)
        if gone.is_empty() {
            return;
        }
        let master_of: BTreeMap<u32, u32> = gone.iter().map(|w| (w.pid, w.master)).collect();
        let pids: BTreeSet<u32> = master_of.keys().copied().collect();
        let mut series = self.kernel.metrics_of(&pids);
        // Removed from the kernel once the view that counts them in
        // `exited` is out: no scrape misses them.
        self.retired_keys.extend(series.iter().map(|(k, _)| *k));
        self.swept.retain(|k, a| {
            let keep = !pids.contains(&k.tgid);
            if !keep {
                series.push((*k, *a));
            }
            keep
        });
        // In discovery mode a master already forgotten takes no more series.
        let forgotten =
            |m: &u32| self.settings.discovery.is_some() && !self.masters.contains_key(m);
        for (key, aggregate) in series {
            let master = master_of.get(&key.tgid).copied().unwrap_or(0);
            if forgotten(&master) {
                continue;
            }
            self.exited
                .entry(MetricKey {
                    tgid: master,
                    ..key
                })
                .or_default()
                .merge(&aggregate);
        }
        for (pid, master) in master_of {
            let failures = self.exceptions.retire(pid);
            if forgotten(&master) {
                continue;
            }
            for ((method, kind, route), n) in failures {
                *self
                    .exited_failures
                    .entry((master, method, kind, route))
                    .or_default() += n;
            }
        }
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
                self.signal.map_or_else(String::new, sig::name),
            ),
            ("GUNICORN_EXIT_STATUS", opt(self.status)),
            (
                "GUNICORN_REASON",
                self.reason.map_or("", |r| r.name()).to_string(),
            ),
        ]
    }
}
