//! Discovery of every Gunicorn master on the host (issue 13).
//!
//! - `identity`: pure rules over what /proc shows of a process (is it an
//!   arbiter, its app name, container and pod, namespace pid, labels copied
//!   from its environment), plus the one read of /proc that feeds them;
//! - `scan`: the masters running now, from one snapshot of /proc.
//!
//! Where it stands: `main` runs the scan in discovery mode (no --pid or
//! --pidfile), logs each master's identity and exits 2. What comes next:
//! - the state for several masters: `lifecycle::state` already keys masters
//!   by pid (for USR2) and the kernel's TRACKED map records each worker's
//!   master, so several attach as they are; what assumes one Gunicorn is the
//!   userspace `Counts` (hooks, restarts, master signals: key them by master;
//!   the occurrences carry it) and the kernel's global counters (the QUEUE
//!   histogram, STATS connections and unframed: key them by master in the
//!   kernel, or they stay per node). Each master's `Identity` goes in
//!   `WatchedMaster` and the published `MasterView`; a USR2 master takes its
//!   parent's `app`;
//! - the scrape: in discovery mode every family's label names gain `app`,
//!   `master_pid`, `ns_pid`, `container_id`, `pod_uid` and the
//!   `--label-from-env` labels (known at start, so the descs are fixed);
//!   empty values where absent. With --pid/--pidfile nothing changes;
//! - masters started later: `sched_process_exec` of an untracked process
//!   whose comm starts with `python` or `gunicorn` (a shebang script's comm
//!   is its own name) sent to userspace (only in discovery mode, a CONFIG
//!   flag), which keeps the candidates ([`scan::masters`]'s second list) in a
//!   small kernel map whose forks `task_newtask` reports, and classifies
//!   again on a candidate's first fork; a master's exit ends its watch after
//!   --series-grace.
//! - listeners: LISTEN_PORTS is keyed by port alone, so pods listening on
//!   the same port in their own network namespaces share an entry (their
//!   workers are still told apart by pid).

pub mod identity;
pub mod scan;

/// What discovery mode watches: masters `matcher` accepts, labelled with
/// `labels` from their environments.
#[derive(Clone, Debug)]
pub struct Discovery {
    pub matcher: identity::Matcher,
    pub labels: Vec<identity::EnvLabel>,
}
