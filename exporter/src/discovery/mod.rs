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
//!   whose comm starts with `python` or `gunicorn` (with --match, of any
//!   untracked process: `abi::discover::EVERY_EXEC`) puts it in CANDIDATES (an
//!   LRU map: those that never fork age out); at a candidate's first fork
//!   the kernel tracks it and its child as a master and its worker (so the
//!   child's first requests are counted), makes the child a candidate too
//!   (`gunicorn --daemon` forks twice), and reports the fork
//!   (`CANDIDATE_FORK`); `State` classifies it again
//!   ([`scan::classify_forked`]): a master is attached, anything else is
//!   untracked with what the kernel kept of it (`State::reject`), and one
//!   still without a worker goes back in the map. A candidate's listen(2)
//!   puts its port in LISTEN_PORTS from the kernel, before any worker;
//! - each `WatchedMaster` keeps its identity labels; the published view
//!   carries them (`View::discovered`) and the collectors build each
//!   master's families from its part of the view (`View::of_master`) and of
//!   the kernel's per-master maps (routes, MASTER_STATS) with its labels
//!   appended; counts of hooks, restarts and signals are kept per master.
//!   With --pid/--pidfile none of this changes a label;
//! - a master that exits is forgotten after --series-grace (its counts and
//!   its exited workers' series with it).
//!
//! Still open:
//! - `--max-routes` caps the routes of all masters together;
//! - LISTEN_PORTS is keyed by port alone, so pods listening on the same
//!   port in their own network namespaces share an entry (their workers are
//!   still told apart by pid);
//! - a later master listening on a unix socket only is known to listen
//!   there once attached.

pub mod identity;
pub mod scan;

/// What discovery mode watches: masters `matcher` accepts, labelled with
/// `labels` from their environments.
#[derive(Clone, Debug)]
pub struct Discovery {
    pub matcher: identity::Matcher,
    pub labels: Vec<identity::EnvLabel>,
}
