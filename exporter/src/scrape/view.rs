//! What a scrape knows of the userspace state: a snapshot the lifecycle
//! flow publishes after each batch of changes. A scrape reads it (and the
//! kernel maps through its own handles) and never takes the state's lock,
//! so scrapes, however many or slow, never hold up the lifecycle events.

use std::{
    collections::BTreeMap,
    sync::{Arc, RwLock},
};

use exporter_ebpf::abi::{Aggregate, DURATION_SLOTS, MetricKey};

use crate::{
    lifecycle::{Hook, Reason, exceptions::FailureKey, workers::Workers},
    startup::capabilities,
};

/// Counters of what the lifecycle showed.
#[derive(Clone, Debug, Default)]
pub struct Counts {
    pub hooks: BTreeMap<Hook, u64>,
    pub restarts: BTreeMap<Reason, u64>,
    /// Signals delivered to a master, by name.
    pub master_signals: BTreeMap<String, u64>,
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
    pub masters: Vec<MasterView>,
    pub counts: Counts,
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
}

impl View {
    pub fn up(&self) -> bool {
        !self.masters.is_empty()
    }
}

/// Settings fixed at start that scrapes need.
#[derive(Clone, Debug)]
pub struct Fixed {
    pub bounds: [u64; DURATION_SLOTS],
    pub kernel: capabilities::Kernel,
    /// Request series per master only (`--worker-series none`).
    pub per_master: bool,
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
