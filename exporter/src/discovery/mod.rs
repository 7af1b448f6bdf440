//! Discovery of every Gunicorn master on the host (issue 13).
//!
//! - `identity`: pure rules over what /proc shows of a process (is it an
//!   arbiter, its app name, container and pod, namespace pid, labels copied
//!   from its environment), plus the one read of /proc that feeds them;
//! - `scan`: the masters running now, from one snapshot of /proc.
//!
//! How it runs (without --pid or --pidfile, or with --all):
//! - `main` loads and attaches the programs with `Config.discover` set, then
//!   scans /proc once: every master found is attached (`State::attach`, the
//!   same as one --pid master), and the gunicorns with no worker yet are put
//!   in the kernel's CANDIDATES map;
//! - masters started later: `sched_process_exec` of an untracked process
//!   whose comm starts with `python` or `gunicorn` puts it in CANDIDATES (an
//!   LRU map: those that never fork age out); `task_newtask` reports a
//!   candidate's first fork (`CANDIDATE_FORK`) and forgets it; `State`
//!   classifies it again ([`scan::classify_forked`]): a master is attached, a
//!   candidate still without a worker goes back in the map;
//! - each `WatchedMaster` keeps its identity labels; the published view
//!   carries them (`View::discovered`) and the collectors build each
//!   master's families from its part of the view (`View::of_master`) with
//!   its labels appended; counts of hooks, restarts and signals are kept per
//!   master. With --pid/--pidfile none of this changes a label;
//! - a master that exits is forgotten after --series-grace (its counts and
//!   its exited workers' series with it).
//!
//! Still open:
//! - the kernel's global counters (the QUEUE histogram, STATS connections
//!   and unframed) are per node: keying them by master in the kernel would
//!   give them identity labels too (the per-route series are keyed so);
//!   `--max-routes` caps the routes of all masters together;
//! - LISTEN_PORTS is keyed by port alone, so pods listening on the same
//!   port in their own network namespaces share an entry (their workers are
//!   still told apart by pid);
//! - a later master whose comm is neither `python*` nor `gunicorn*` (a
//!   custom `BaseApplication` script run directly) is not seen; --match
//!   finds it at start only. A later master is attached at its first fork
//!   (its start's and first workers' hooks counted then, see
//!   `Lifecycle::adopt_forked`); a request its worker served before that
//!   would be missed: the kernel could track the candidate and its child
//!   provisionally at that fork, and userspace untrack them if no master;
//! - a later `gunicorn --daemon`: the exec'd process forks the daemon and
//!   exits, and is taken for a master (its child has its command line); the
//!   daemon, tracked as its worker, is never classified. Making a
//!   candidate's children candidates (and re-tracking a "worker" that turns
//!   out to be a master) would follow it.

pub mod identity;
pub mod scan;

/// What discovery mode watches: masters `matcher` accepts, labelled with
/// `labels` from their environments.
#[derive(Clone, Debug)]
pub struct Discovery {
    pub matcher: identity::Matcher,
    pub labels: Vec<identity::EnvLabel>,
}
