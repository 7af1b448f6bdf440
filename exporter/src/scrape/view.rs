//! What a scrape knows of the userspace state: a snapshot the lifecycle
//! flow publishes after each batch of changes. A scrape reads it (and the
//! kernel maps through its own handles) and never takes the state's lock,
//! so scrapes, however many or slow, never hold up the lifecycle events.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, RwLock},
};

use exporter_ebpf::abi::{Aggregate, DURATION_SLOTS, MasterStats, MetricKey};

use crate::{
    lifecycle::{Hook, Reason, exceptions::FailureKey, workers::Workers},
    startup::capabilities,
};

/// Counters of what the lifecycle showed (of one master).
#[derive(Clone, Debug, Default)]
pub struct Counts {
    pub hooks: BTreeMap<Hook, u64>,
    pub restarts: BTreeMap<Reason, u64>,
    /// Signals delivered to a master, by name.
    pub master_signals: BTreeMap<String, u64>,
}

impl Counts {
    fn add(&mut self, other: &Counts) {
        for (h, n) in &other.hooks {
            *self.hooks.entry(*h).or_default() += n;
        }
        for (r, n) in &other.restarts {
            *self.restarts.entry(*r).or_default() += n;
        }
        for (s, n) in &other.master_signals {
            *self.master_signals.entry(s.clone()).or_default() += n;
        }
    }
}

/// A master found by discovery, alive or within its grace period.
#[derive(Clone, Debug)]
pub struct Discovered {
    /// Its identity labels (`discovery::identity::Identity::labels`), the
    /// same names for every master.
    pub labels: Vec<(String, String)>,
}

/// With --pid/--pidfile: the kernel's statistics of the masters that are
/// gone (a USR2's old one), kept so the node's counters never go back.
#[derive(Clone, Debug, Default)]
pub struct GoneMasters {
    /// Whose kernel entries this view counts here: a scrape skips them
    /// (they are removed once this view is out).
    pub pids: BTreeSet<u32>,
    pub stats: MasterStats,
}

/// A living master, for the resource metrics.
#[derive(Clone, Copy, Debug)]
pub struct MasterView {
    pub pid: u32,
    /// /proc start time, to tell a reused pid (None when unknown).
    pub start_ticks: Option<u64>,
}

#[derive(Clone, Debug, Default)]
pub struct View {
    /// Alive, and dead ones within their grace period.
    pub workers: Workers,
    /// The living masters.
    pub masters: Vec<MasterView>,
    /// By master.
    pub counts: BTreeMap<u32, Counts>,
    /// Failed requests by (worker, method, error_type, route key).
    pub failures: BTreeMap<FailureKey, u64>,
    /// Requests that workers' deaths ended, finished in userspace.
    pub swept: BTreeMap<MetricKey, Aggregate>,
    /// Series of workers whose own series ended, per master (`tgid`).
    pub exited: BTreeMap<MetricKey, Aggregate>,
    /// Their failed requests, by (master, method, error_type, route key).
    pub exited_failures: BTreeMap<FailureKey, u64>,
    /// (worker, descriptor) of each heartbeat file known.
    pub heartbeat_fds: Vec<(u32, u32)>,
    /// In discovery mode, every master whose series are exported (alive,
    /// or dead within --series-grace); empty with --pid/--pidfile.
    pub discovered: BTreeMap<u32, Discovered>,
    pub gone_masters: GoneMasters,
}

impl View {
    pub fn up(&self) -> bool {
        !self.masters.is_empty()
    }

    /// Every master's counts summed (one master and its USR2 successor,
    /// with --pid/--pidfile).
    pub fn counts(&self) -> Counts {
        let mut total = Counts::default();
        for counts in self.counts.values() {
            total.add(counts);
        }
        total
    }

    /// What of this view is master `pid`'s: its workers and their series,
    /// its counts, itself if alive.
    pub fn of_master(&self, pid: u32) -> View {
        let workers = self.workers.of_master(pid);
        let mine = |worker: u32| workers.get(worker).is_some();
        View {
            masters: self
                .masters
                .iter()
                .filter(|m| m.pid == pid)
                .copied()
                .collect(),
            counts: kept(&self.counts, |m| *m == pid),
            failures: kept(&self.failures, |k| mine(k.0)),
            swept: kept(&self.swept, |k| mine(k.tgid)),
            exited: kept(&self.exited, |k| k.tgid == pid),
            exited_failures: kept(&self.exited_failures, |k| k.0 == pid),
            heartbeat_fds: self
                .heartbeat_fds
                .iter()
                .filter(|(w, _)| mine(*w))
                .copied()
                .collect(),
            discovered: kept(&self.discovered, |m| *m == pid),
            gone_masters: GoneMasters::default(),
            workers,
        }
    }
}

/// The entries of `map` whose key `keep` accepts.
fn kept<K: Ord + Clone, V: Clone>(
    map: &BTreeMap<K, V>,
    keep: impl Fn(&K) -> bool,
) -> BTreeMap<K, V> {
    map.iter()
        .filter(|(k, _)| keep(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Settings fixed at start that scrapes need.
#[derive(Clone, Debug)]
pub struct Fixed {
    pub bounds: [u64; DURATION_SLOTS],
    pub kernel: capabilities::Kernel,
    /// Request series per master only (`--worker-series none`).
    pub per_master: bool,
    /// Discovery mode: the identity label names every per-master series
    /// carries (`Identity::label_names`); empty with --pid/--pidfile.
    pub identity_labels: Vec<String>,
}

/// The latest view: replaced whole by the lifecycle flow, read whole by
/// scrapes (the lock is held only to swap or clone a pointer).
#[derive(Clone, Default)]
pub struct Published(Arc<RwLock<Arc<View>>>);

impl Published {
    pub fn publish(&self, view: View) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(view);
    }

    pub fn latest(&self) -> Arc<View> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn key(tgid: u32) -> MetricKey {
        MetricKey {
            tgid,
            status: 200,
            method: 1,
            _pad: 0,
        }
    }

    /// A master's part of the view holds its workers and their series, its
    /// exited series, counts and failures, and nothing of another master's.
    #[test]
    fn a_master_sees_only_its_own() {
        let mut view = View::default();
        for (worker, master) in [(11, 1), (12, 1), (21, 2)] {
            view.workers.spawned(worker, 0, None);
            view.workers.set_master(worker, master);
        }
        view.workers.exited(12, Instant::now());
        view.masters = vec![
            MasterView {
                pid: 1,
                start_ticks: None,
            },
            MasterView {
                pid: 2,
                start_ticks: None,
            },
        ];
        for master in [1, 2] {
            let counts = view.counts.entry(master).or_default();
            counts.hooks.insert(Hook::PostFork, u64::from(master));
            view.exited.insert(key(master), Aggregate::default());
            view.exited_failures
                .insert((master, 1, "boom".into(), 0), 1);
            view.discovered.insert(
                master,
                Discovered {
                    labels: vec![("master_pid".into(), master.to_string())],
                },
            );
        }
        for worker in [11, 12, 21] {
            view.swept.insert(key(worker), Aggregate::default());
            view.failures.insert((worker, 1, "boom".into(), 0), 1);
            view.heartbeat_fds.push((worker, 3));
        }

        let one = view.of_master(1);
        let pids = |w: &Workers| {
            [11, 12, 21]
                .into_iter()
                .filter(|p| w.get(*p).is_some())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            pids(&one.workers),
            [11, 12],
            "the dead one within its grace too"
        );
        assert_eq!(one.masters.iter().map(|m| m.pid).collect::<Vec<_>>(), [1]);
        assert_eq!(one.counts().hooks.get(&Hook::PostFork), Some(&1));
        assert_eq!(
            one.swept.keys().map(|k| k.tgid).collect::<Vec<_>>(),
            [11, 12]
        );
        assert_eq!(one.exited.keys().map(|k| k.tgid).collect::<Vec<_>>(), [1]);
        assert_eq!(
            one.failures.keys().map(|k| k.0).collect::<Vec<_>>(),
            [11, 12]
        );
        assert_eq!(
            one.exited_failures.keys().map(|k| k.0).collect::<Vec<_>>(),
            [1]
        );
        assert_eq!(one.heartbeat_fds, [(11, 3), (12, 3)]);
        assert_eq!(one.discovered.keys().collect::<Vec<_>>(), [&1]);
        // The whole view's counts are every master's summed (--pid after a USR2).
        assert_eq!(view.counts().hooks.get(&Hook::PostFork), Some(&3));
        // A master gone (not alive): its part has no master, so gunicorn_up 0.
        view.masters.retain(|m| m.pid != 2);
        assert!(!view.of_master(2).up() && view.of_master(1).up());
    }
}
