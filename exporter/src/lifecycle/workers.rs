//! The registry of a master's workers: their gunicorn-style ids, who is alive,
//! and when a dead worker's series may go.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use super::WorkerState;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Worker {
    pub pid: u32,
    /// The master that forked it (0 until known).
    pub master: u32,
    /// Spawn order as seen by the exporter (gunicorn's `worker.age`).
    pub age: u64,
    pub started_unix: u64,
    /// /proc start time, to tell a reused pid from this worker.
    pub start_ticks: Option<u64>,
    pub exited: Option<Instant>,
    pub state: WorkerState,
}

impl Worker {
    /// `worker_<age>_<start unix seconds>`, as gunicorn-prometheus-exporter names workers.
    pub fn id(&self) -> String {
        format!("worker_{}_{}", self.age, self.started_unix)
    }
}

#[derive(Clone, Debug, Default)]
pub struct Workers {
    next_age: u64,
    by_pid: BTreeMap<u32, Worker>,
}

impl Workers {
    /// Registers a new worker. A live entry with the same pid is kept (the
    /// same worker seen twice, at attach and at fork); a dead one is replaced
    /// and returned, so its series can be dropped now.
    pub fn spawned(
        &mut self,
        pid: u32,
        started_unix: u64,
        start_ticks: Option<u64>,
    ) -> Option<Worker> {
        if self.by_pid.get(&pid).is_some_and(|w| w.exited.is_none()) {
            return None;
        }
        self.next_age += 1;
        let worker = Worker {
            pid,
            master: 0,
            age: self.next_age,
            started_unix,
            start_ticks,
            exited: None,
            state: WorkerState::Running,
        };
        self.by_pid.insert(pid, worker)
    }

    /// Marks a worker dead; false if it was unknown or already dead.
    pub fn exited(&mut self, pid: u32, at: Instant) -> bool {
        match self.by_pid.get_mut(&pid) {
            Some(w) if w.exited.is_none() => {
                w.exited = Some(at);
                true
            }
            _ => false,
        }
    }

    /// Removes and returns the dead workers whose series end now: those dead
    /// for longer than `grace`, and the oldest dead of a master beyond its
    /// `max_dead` newest (so churn cannot grow the exposition without bound).
    pub fn expire(&mut self, now: Instant, grace: Duration, max_dead: usize) -> Vec<Worker> {
        let mut dead: Vec<&Worker> = self
            .by_pid
            .values()
            .filter(|w| w.exited.is_some())
            .collect();
        // Newest first within each master.
        dead.sort_by_key(|w| (w.master, std::cmp::Reverse(w.age)));
        let mut kept_of: BTreeMap<u32, usize> = BTreeMap::new();
        let gone: Vec<u32> = dead
            .into_iter()
            .filter(|w| {
                let kept = kept_of.entry(w.master).or_default();
                let expired = w.exited.is_some_and(|t| now.duration_since(t) >= grace);
                if expired || *kept >= max_dead {
                    return true;
                }
                *kept += 1;
                false
            })
            .map(|w| w.pid)
            .collect();
        gone.iter()
            .filter_map(|pid| self.by_pid.remove(pid))
            .collect()
    }

    pub fn set_master(&mut self, pid: u32, master: u32) {
        if let Some(w) = self.by_pid.get_mut(&pid) {
            w.master = master;
        }
    }

    pub fn master_of(&self, pid: u32) -> Option<u32> {
        self.by_pid.get(&pid).map(|w| w.master)
    }

    pub fn set_state(&mut self, pid: u32, state: WorkerState) {
        if let Some(w) = self.by_pid.get_mut(&pid) {
            w.state = state;
        }
    }

    pub fn get(&self, pid: u32) -> Option<&Worker> {
        self.by_pid.get(&pid)
    }

    /// The live workers of `pid`'s master spawned before it.
    pub fn older_siblings(&self, pid: u32) -> Vec<u32> {
        let Some(me) = self.by_pid.get(&pid) else {
            return Vec::new();
        };
        self.alive()
            .filter(|w| w.master == me.master && w.age < me.age)
            .map(|w| w.pid)
            .collect()
    }

    /// The workers (alive, and dead within their grace) of master `master`.
    pub fn of_master(&self, master: u32) -> Workers {
        Workers {
            next_age: self.next_age,
            by_pid: self
                .by_pid
                .iter()
                .filter(|(_, w)| w.master == master)
                .map(|(pid, w)| (*pid, w.clone()))
                .collect(),
        }
    }

    pub fn alive(&self) -> impl Iterator<Item = &Worker> {
        self.by_pid.values().filter(|w| w.exited.is_none())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_follow_spawn_order() {
        let mut w = Workers::default();
        w.spawned(10, 1000, None);
        w.spawned(11, 1001, None);
        assert_eq!(w.get(10).unwrap().id(), "worker_1_1000");
        assert_eq!(w.get(11).unwrap().id(), "worker_2_1001");
        assert_eq!(w.spawned(11, 1002, None), None, "seen twice: kept");
        assert_eq!(w.get(11).unwrap().age, 2);
        assert_eq!(w.alive().count(), 2);
    }

    #[test]
    fn dead_workers_expire_after_grace() {
        let mut w = Workers::default();
        let t0 = Instant::now();
        w.spawned(10, 1000, None);
        assert!(w.exited(10, t0));
        assert!(!w.exited(10, t0), "only once");
        assert_eq!(w.alive().count(), 0);
        assert!(
            w.expire(t0 + Duration::from_secs(5), Duration::from_secs(10), 8)
                .is_empty()
        );
        assert!(w.get(10).is_some(), "still exported during grace");
        let gone = w.expire(t0 + Duration::from_secs(10), Duration::from_secs(10), 8);
        assert_eq!(gone.iter().map(|w| w.pid).collect::<Vec<_>>(), vec![10]);
        assert!(w.get(10).is_none());
    }

    #[test]
    fn at_most_max_dead_per_master_are_kept() {
        let mut w = Workers::default();
        let t0 = Instant::now();
        for pid in 10..16 {
            w.spawned(pid, 1000, None);
            w.set_master(pid, if pid < 14 { 1 } else { 2 });
            w.exited(pid, t0);
        }
        let gone = w.expire(t0, Duration::from_secs(60), 2);
        let mut pids: Vec<u32> = gone.iter().map(|w| w.pid).collect();
        pids.sort();
        assert_eq!(
            pids,
            vec![10, 11],
            "master 1's two oldest; master 2 has only two"
        );
        assert!(w.get(12).is_some() && w.get(15).is_some());
    }

    #[test]
    fn reused_pid_replaces_a_dead_worker() {
        let mut w = Workers::default();
        w.spawned(10, 1000, None);
        w.exited(10, Instant::now());
        let old = w.spawned(10, 2000, None).expect("dead one returned");
        assert_eq!(old.age, 1);
        assert_eq!(w.get(10).unwrap().id(), "worker_2_2000");
    }
}
