//! Kernel lifecycle events -> Gunicorn hook semantics.
//!
//! A pure state machine: [`Lifecycle::on`] takes one event and returns the
//! hooks Gunicorn ran (as far as the kernel can tell) and the changes the
//! exporter must make. No I/O here; see the README's mapping table for how
//! exact each hook is.

use std::collections::{BTreeMap, BTreeSet};

use exporter_ebpf::abi::{NO_EXIT_CODE, cause, exit_code};

use crate::events::{Event, HeartbeatAtExit};

pub mod sig {
    pub const HUP: i32 = 1;
    pub const INT: i32 = 2;
    pub const QUIT: i32 = 3;
    pub const ILL: i32 = 4;
    pub const ABRT: i32 = 6;
    pub const BUS: i32 = 7;
    pub const FPE: i32 = 8;
    pub const KILL: i32 = 9;
    pub const USR1: i32 = 10;
    pub const SEGV: i32 = 11;
    pub const USR2: i32 = 12;
    pub const PIPE: i32 = 13;
    pub const ALRM: i32 = 14;
    pub const TERM: i32 = 15;
    pub const CHLD: i32 = 17;
    pub const TTIN: i32 = 21;
    pub const TTOU: i32 = 22;
    pub const WINCH: i32 = 28;

    /// The signals a Gunicorn master handles (its arbiter's `SIGNALS` and
    /// SIGCHLD): their series exist from the start, at 0, so the first
    /// delivery of each shows in `increase()`.
    pub const GUNICORN: [i32; 10] = [HUP, QUIT, INT, TERM, TTIN, TTOU, USR1, USR2, WINCH, CHLD];

    /// Lower-case name without `SIG`, as gunicorn-prometheus-exporter labels signals.
    pub fn name(sig: i32) -> String {
        let known = match sig {
            HUP => "hup",
            INT => "int",
            QUIT => "quit",
            ILL => "ill",
            ABRT => "abrt",
            BUS => "bus",
            FPE => "fpe",
            KILL => "kill",
            USR1 => "usr1",
            SEGV => "segv",
            USR2 => "usr2",
            PIPE => "pipe",
            ALRM => "alrm",
            TERM => "term",
            CHLD => "chld",
            TTIN => "ttin",
            TTOU => "ttou",
            WINCH => "winch",
            _ => return format!("sig{sig}"),
        };
        known.to_string()
    }
}

/// Gunicorn's server hooks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Hook {
    OnStarting,
    WhenReady,
    OnReload,
    NworkersChanged,
    PreFork,
    PostFork,
    PostWorkerInit,
    WorkerInt,
    WorkerAbort,
    PreExec,
    ChildExit,
    WorkerExit,
    OnExit,
}

impl Hook {
    pub const ALL: [Hook; 13] = [
        Hook::OnStarting,
        Hook::WhenReady,
        Hook::OnReload,
        Hook::NworkersChanged,
        Hook::PreFork,
        Hook::PostFork,
        Hook::PostWorkerInit,
        Hook::WorkerInt,
        Hook::WorkerAbort,
        Hook::PreExec,
        Hook::ChildExit,
        Hook::WorkerExit,
        Hook::OnExit,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Hook::OnStarting => "on_starting",
            Hook::WhenReady => "when_ready",
            Hook::OnReload => "on_reload",
            Hook::NworkersChanged => "nworkers_changed",
            Hook::PreFork => "pre_fork",
            Hook::PostFork => "post_fork",
            Hook::PostWorkerInit => "post_worker_init",
            Hook::WorkerInt => "worker_int",
            Hook::WorkerAbort => "worker_abort",
            Hook::PreExec => "pre_exec",
            Hook::ChildExit => "child_exit",
            Hook::WorkerExit => "worker_exit",
            Hook::OnExit => "on_exit",
        }
    }

    pub fn parse(name: &str) -> Option<Hook> {
        Hook::ALL.into_iter().find(|h| h.name() == name)
    }
}

/// Why a worker went away.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// The master aborted it (SIGABRT): gunicorn's worker timeout.
    Timeout,
    /// It exited 0 on its own: gunicorn's --max-requests.
    MaxRequests,
    /// The master stopped it after a HUP.
    Reload,
    /// The master stopped it after a TTOU.
    ScaleDown,
    /// Terminated by QUIT/TERM/INT: shutdown, or an operator's signal.
    Graceful,
    /// Died of a signal nobody in gunicorn sent (SIGSEGV, an abort()...).
    Crash,
    /// Chosen by the OOM killer.
    Oom,
    /// SIGKILL.
    Killed,
    /// Exit code 3 or 4: the worker or the app failed to boot.
    BootError,
    /// Any other non-zero exit code.
    Error,
}

impl Reason {
    pub const ALL: [Reason; 10] = [
        Reason::Timeout,
        Reason::MaxRequests,
        Reason::Reload,
        Reason::ScaleDown,
        Reason::Graceful,
        Reason::Crash,
        Reason::Oom,
        Reason::Killed,
        Reason::BootError,
        Reason::Error,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Reason::Timeout => "timeout",
            Reason::MaxRequests => "max_requests",
            Reason::Reload => "reload",
            Reason::ScaleDown => "scale_down",
            Reason::Graceful => "graceful",
            Reason::Crash => "crash",
            Reason::Oom => "oom",
            Reason::Killed => "killed",
            Reason::BootError => "boot_error",
            Reason::Error => "error",
        }
    }

    /// The failure cause of a request in flight when the worker died.
    pub fn in_flight_cause(self) -> u8 {
        match self {
            Reason::Timeout => cause::WORKER_TIMEOUT,
            Reason::Crash => cause::WORKER_CRASH,
            Reason::Killed | Reason::Oom => cause::WORKER_KILLED,
            _ => cause::NONE,
        }
    }
}

/// A worker's state as gunicorn-prometheus-exporter reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum WorkerState {
    Running,
    /// SIGQUIT, SIGINT or SIGTERM received.
    Quitting,
    /// SIGABRT from the master received.
    Aborting,
}

impl WorkerState {
    pub const ALL: [WorkerState; 3] = [
        WorkerState::Running,
        WorkerState::Quitting,
        WorkerState::Aborting,
    ];

    pub fn name(self) -> &'static str {
        match self {
            WorkerState::Running => "running",
            WorkerState::Quitting => "quitting",
            WorkerState::Aborting => "aborting",
        }
    }
}

/// One hook Gunicorn ran, with what the kernel saw of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Occurrence {
    pub hook: Hook,
    pub master: u32,
    pub worker: Option<u32>,
    pub signal: Option<i32>,
    /// exit_group code (worker_exit, on_exit) or wait status (child_exit).
    pub status: Option<i32>,
    pub reason: Option<Reason>,
}

/// What the exporter must do about an event, besides counting hooks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    WorkerSpawned {
        pid: u32,
        master: u32,
    },
    WorkerState {
        pid: u32,
        state: WorkerState,
    },
    WorkerExited {
        pid: u32,
        reason: Reason,
    },
    MasterStarted {
        pid: u32,
    },
    MasterExited {
        pid: u32,
    },
    /// A signal delivered to a master (gunicorn_master_signals_total).
    MasterSignal {
        pid: u32,
        signal: i32,
    },
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub hooks: Vec<Occurrence>,
    pub changes: Vec<Change>,
}

#[derive(Debug, Default)]
struct MasterLife {
    /// SIGUSR2 handled: its next fork is the re-exec child, not a worker.
    reexec_pending: bool,
    /// Started while watched (exec seen): when_ready is still to come.
    starting: bool,
    /// The last control signal it handled (HUP, TTOU, INT, QUIT, TERM): what
    /// the SIGTERMs it sends next are for.
    control: Option<i32>,
}

#[derive(Debug, Default)]
struct WorkerLife {
    master: u32,
    /// The master sent it SIGABRT (timeout).
    aborted_by_master: bool,
    /// The master's control signal when it sent this worker TERM/QUIT/INT.
    stopped_for: Option<Option<i32>>,
    /// A TERM/QUIT/INT from anyone.
    asked_to_stop: bool,
    /// The last signal sent to it that kills by default.
    last_fatal: Option<i32>,
    oom: bool,
    /// Booted before we saw it (adopted at attach) or since: its next first
    /// heartbeat in the kernel's eyes is no post_worker_init.
    booted: bool,
    /// A stop signal (TERM, QUIT, INT) killed it by its default action after
    /// it had booted: Python restores the default handlers as it finalizes,
    /// after Gunicorn ran worker_exit (Gunicorn re-sends SIGTERM, which can
    /// land then).
    exiting: bool,
    /// Its fork's hooks were counted at its adoption (a master seen at its
    /// first fork): the kernel's fork event, if it saw the fork as the
    /// master was being tracked, must not count them again.
    fork_counted: bool,
}

#[derive(Debug, Default)]
pub struct Lifecycle {
    masters: BTreeMap<u32, MasterLife>,
    workers: BTreeMap<u32, WorkerLife>,
    reexec_children: BTreeSet<u32>,
}

impl Lifecycle {
    /// A master found at attach (its start was not seen).
    pub fn adopt_master(&mut self, pid: u32) {
        self.masters.entry(pid).or_default();
    }

    /// A worker found at attach.
    pub fn adopt_worker(&mut self, pid: u32, master: u32) {
        self.workers.entry(pid).or_insert_with(|| WorkerLife {
            master,
            booted: true,
            ..WorkerLife::default()
        });
    }

    /// Discovery: the hooks a master seen first at its first fork ran
    /// before it. One that exec'd since the exporter started ran its start
    /// (nworkers_changed, on_starting, when_ready), and every worker it has
    /// now was forked since (pre_fork, post_fork): those workers are
    /// adopted unbooted, so their first heartbeat is their post_worker_init.
    pub fn adopt_forked(&mut self, master: u32, workers: &[u32], execed: bool) -> Vec<Occurrence> {
        let mut hooks = Vec::new();
        if execed {
            for hook in [Hook::NworkersChanged, Hook::OnStarting, Hook::WhenReady] {
                hooks.push(occurrence(hook, master, None));
            }
        }
        for &pid in workers {
            let life = self.workers.entry(pid).or_insert_with(|| WorkerLife {
                master,
                ..WorkerLife::default()
            });
            life.booted = false;
            life.fork_counted = true;
            hooks.push(occurrence(Hook::PreFork, master, Some(pid)));
            hooks.push(occurrence(Hook::PostFork, master, Some(pid)));
        }
        hooks
    }

    #[cfg(test)]
    fn is_master(&self, pid: u32) -> bool {
        self.masters.contains_key(&pid)
    }

    fn alive_workers_of(&self, master: u32) -> usize {
        self.workers.values().filter(|w| w.master == master).count()
    }

    /// What `ev` means for Gunicorn: the hooks it ran, the changes it made.
    pub fn on(&mut self, ev: &Event) -> Outcome {
        let mut out = Outcome::default();
        match *ev {
            Event::Forked { child, master } => self.fork(child, master, &mut out),
            Event::Execed { pid, old_master } => self.exec(pid, old_master, &mut out),
            Event::Booted { pid, .. } => {
                if let Some(w) = self.workers.get_mut(&pid) {
                    if !std::mem::replace(&mut w.booted, true) {
                        out.hooks
                            .push(occurrence(Hook::PostWorkerInit, w.master, Some(pid)));
                    }
                }
            }
            Event::Signalled {
                target,
                sender,
                signal,
            } => self.signal(target, sender, signal),
            Event::Delivered {
                pid,
                signal,
                handled,
            } => self.deliver(pid, signal, handled, &mut out),
            Event::OomChosen { pid } => {
                if let Some(w) = self.workers.get_mut(&pid) {
                    w.oom = true;
                }
            }
            // Discovery's: no process the machine follows.
            Event::CandidateForked { .. } => {}
            Event::Reaped {
                master,
                child,
                status,
            } => {
                if self.reexec_children.remove(&child) {
                    return out;
                }
                if self.masters.contains_key(&master) && !self.masters.contains_key(&child) {
                    let mut o = occurrence(Hook::ChildExit, master, Some(child));
                    o.status = Some(status);
                    out.hooks.push(o);
                }
            }
            Event::Exited {
                pid,
                status,
                heartbeat,
                ..
            } => self.exit(pid, exit_code(status), heartbeat, &mut out),
            Event::Failed(_) | Event::Record(_) => {}
        }
        out
    }

    fn fork(&mut self, child: u32, master_pid: u32, out: &mut Outcome) {
        if self.workers.get(&child).is_some_and(|w| w.fork_counted) {
            return;
        }
        let master = self.masters.entry(master_pid).or_default();
        if std::mem::take(&mut master.reexec_pending) {
            self.reexec_children.insert(child);
            return;
        }
        if std::mem::take(&mut master.starting) {
            out.hooks
                .push(occurrence(Hook::WhenReady, master_pid, None));
        }
        out.hooks
            .push(occurrence(Hook::PreFork, master_pid, Some(child)));
        out.hooks
            .push(occurrence(Hook::PostFork, master_pid, Some(child)));
        self.workers.insert(
            child,
            WorkerLife {
                master: master_pid,
                ..WorkerLife::default()
            },
        );
        out.changes.push(Change::WorkerSpawned {
            pid: child,
            master: master_pid,
        });
    }

    fn exec(&mut self, pid: u32, old_master: u32, out: &mut Outcome) {
        // The re-exec child runs pre_exec, then execs a new master, which
        // sets its worker count (nworkers_changed) before on_starting.
        self.reexec_children.remove(&pid);
        if self.workers.remove(&pid).is_some() {
            // Forked before we saw the USR2 (it was taken for a worker).
            out.changes.push(Change::WorkerExited {
                pid,
                reason: Reason::Graceful,
            });
        }
        let mut pre_exec = occurrence(Hook::PreExec, old_master, None);
        pre_exec.worker = None;
        out.hooks.push(pre_exec);
        out.hooks.push(occurrence(Hook::NworkersChanged, pid, None));
        out.hooks.push(occurrence(Hook::OnStarting, pid, None));
        self.masters.insert(
            pid,
            MasterLife {
                starting: true,
                ..MasterLife::default()
            },
        );
        out.changes.push(Change::MasterStarted { pid });
    }

    fn signal(&mut self, target: u32, sender: u32, signal: i32) {
        let Some(w) = self.workers.get_mut(&target) else {
            return;
        };
        let from_master = sender == w.master;
        match signal {
            sig::ABRT if from_master => w.aborted_by_master = true,
            sig::TERM | sig::QUIT | sig::INT => {
                w.asked_to_stop = true;
                if from_master {
                    let control = self.masters.get(&sender).and_then(|m| m.control);
                    w.stopped_for.get_or_insert(control);
                }
            }
            _ => {}
        }
        if !matches!(
            signal,
            sig::CHLD | sig::WINCH | sig::USR1 | sig::USR2 | sig::TTIN | sig::TTOU
        ) {
            w.last_fatal = Some(signal);
        }
    }

    fn deliver(&mut self, pid: u32, signal: i32, handled: bool, out: &mut Outcome) {
        if self.masters.contains_key(&pid) {
            out.changes.push(Change::MasterSignal { pid, signal });
            if !handled {
                return;
            }
            let workers = self.alive_workers_of(pid);
            let Some(m) = self.masters.get_mut(&pid) else {
                return;
            };
            match signal {
                sig::HUP => {
                    m.control = Some(signal);
                    out.hooks.push(occurrence(Hook::NworkersChanged, pid, None));
                    out.hooks.push(occurrence(Hook::OnReload, pid, None));
                }
                sig::TTIN => out.hooks.push(occurrence(Hook::NworkersChanged, pid, None)),
                sig::TTOU => {
                    m.control = Some(signal);
                    // gunicorn ignores TTOU at one worker; the count we see may lag.
                    if workers > 1 {
                        out.hooks.push(occurrence(Hook::NworkersChanged, pid, None));
                    }
                }
                sig::INT | sig::QUIT | sig::TERM => m.control = Some(signal),
                sig::USR2 => m.reexec_pending = true,
                _ => {}
            }
            return;
        }
        let Some(w) = self.workers.get_mut(&pid) else {
            return;
        };
        if !handled {
            if w.booted && matches!(signal, sig::TERM | sig::QUIT | sig::INT) {
                w.exiting = true;
            }
            return;
        }
        let master = w.master;
        match signal {
            sig::QUIT | sig::INT => {
                let mut o = occurrence(Hook::WorkerInt, master, Some(pid));
                o.signal = Some(signal);
                out.hooks.push(o);
                out.changes.push(Change::WorkerState {
                    pid,
                    state: WorkerState::Quitting,
                });
            }
            sig::TERM => out.changes.push(Change::WorkerState {
                pid,
                state: WorkerState::Quitting,
            }),
            sig::ABRT if w.aborted_by_master => {
                let mut o = occurrence(Hook::WorkerAbort, master, Some(pid));
                o.signal = Some(signal);
                out.hooks.push(o);
                out.changes.push(Change::WorkerState {
                    pid,
                    state: WorkerState::Aborting,
                });
            }
            _ => {}
        }
    }

    /// A watched process died with exit `code`; whether a worker still held
    /// its heartbeat file says whether Gunicorn ran worker_exit.
    fn exit(&mut self, pid: u32, code: i32, heartbeat: HeartbeatAtExit, out: &mut Outcome) {
        self.reexec_children.remove(&pid);
        if self.masters.remove(&pid).is_some() {
            if code != NO_EXIT_CODE {
                let mut o = occurrence(Hook::OnExit, pid, None);
                o.status = Some(code);
                out.hooks.push(o);
            }
            out.changes.push(Change::MasterExited { pid });
            return;
        }
        let Some(w) = self.workers.remove(&pid) else {
            return;
        };
        let reason = reason(&w, code);
        let ran_worker_exit = match heartbeat {
            HeartbeatAtExit::Closed => true,
            HeartbeatAtExit::Open => false,
            // Died before its file was found: from how it ended.
            HeartbeatAtExit::Unknown => code != NO_EXIT_CODE || w.exiting,
        };
        if ran_worker_exit {
            let mut o = occurrence(Hook::WorkerExit, w.master, Some(pid));
            o.status = (code != NO_EXIT_CODE).then_some(code);
            o.reason = Some(reason);
            out.hooks.push(o);
        }
        out.changes.push(Change::WorkerExited { pid, reason });
    }
}

fn occurrence(hook: Hook, master: u32, worker: Option<u32>) -> Occurrence {
    Occurrence {
        hook,
        master,
        worker,
        signal: None,
        status: None,
        reason: None,
    }
}

/// Why a worker died, from what it was sent and how it ended. `code` is its
/// exit_group code or [`NO_EXIT_CODE`] when a signal killed it.
fn reason(w: &WorkerLife, code: i32) -> Reason {
    if w.oom {
        return Reason::Oom;
    }
    if w.aborted_by_master {
        return Reason::Timeout;
    }
    if code == NO_EXIT_CODE {
        return match w.last_fatal {
            Some(sig::KILL) => Reason::Killed,
            Some(sig::TERM | sig::QUIT | sig::INT) => stop_reason(w),
            _ => Reason::Crash,
        };
    }
    if w.asked_to_stop {
        return stop_reason(w);
    }
    match code {
        0 => Reason::MaxRequests,
        3 | 4 => Reason::BootError,
        _ => Reason::Error,
    }
}

fn stop_reason(w: &WorkerLife) -> Reason {
    match w.stopped_for {
        Some(Some(sig::HUP)) => Reason::Reload,
        Some(Some(sig::TTOU)) => Reason::ScaleDown,
        _ => Reason::Graceful,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use exporter_ebpf::abi::{event, heartbeat};

    const M: u32 = 100;

    /// The event the kernel would send, through the real decoder.
    fn ev(kind: u32, pid: u32, other: u32, value: i32, code: i32) -> Event {
        crate::events::decode(&crate::events::raw(kind, pid, other, value, code))
            .expect("a lifecycle event")
    }

    fn hooks(out: &Outcome) -> Vec<&'static str> {
        out.hooks.iter().map(|o| o.hook.name()).collect()
    }

    fn watched() -> Lifecycle {
        let mut l = Lifecycle::default();
        l.adopt_master(M);
        l.adopt_worker(1, M);
        l.adopt_worker(2, M);
        l
    }

    fn exit_reason(out: &Outcome) -> Option<Reason> {
        out.changes.iter().find_map(|c| match c {
            Change::WorkerExited { reason, .. } => Some(*reason),
            _ => None,
        })
    }

    #[test]
    fn fork_boot_and_max_requests() {
        let mut l = watched();
        let out = l.on(&ev(event::FORK, 3, M, 0, 0));
        assert_eq!(hooks(&out), ["pre_fork", "post_fork"]);
        assert_eq!(out.changes, [Change::WorkerSpawned { pid: 3, master: M }]);
        assert_eq!(
            hooks(&l.on(&ev(event::BOOTED, 3, M, 0, 0))),
            ["post_worker_init"]
        );
        let out = l.on(&ev(event::EXIT, 3, M, 0, 0));
        assert_eq!(hooks(&out), ["worker_exit"]);
        assert_eq!(exit_reason(&out), Some(Reason::MaxRequests));
        assert_eq!(hooks(&l.on(&ev(event::REAP, M, 3, 0, 0))), ["child_exit"]);
    }

    #[test]
    fn workers_found_at_attach_do_not_boot_again() {
        let mut l = watched();
        assert!(l.on(&ev(event::BOOTED, 1, M, 0, 0)).hooks.is_empty());
        l.on(&ev(event::FORK, 3, M, 0, 0));
        assert_eq!(
            hooks(&l.on(&ev(event::BOOTED, 3, M, 0, 0))),
            ["post_worker_init"]
        );
        assert!(
            l.on(&ev(event::BOOTED, 3, M, 0, 0)).hooks.is_empty(),
            "once"
        );
    }

    #[test]
    fn a_master_seen_at_its_first_fork_counts_what_it_ran_before() {
        let mut l = Lifecycle::default();
        l.adopt_master(M);
        let ran: Vec<_> = l
            .adopt_forked(M, &[1], true)
            .iter()
            .map(|o| o.hook.name())
            .collect();
        assert_eq!(
            ran,
            [
                "nworkers_changed",
                "on_starting",
                "when_ready",
                "pre_fork",
                "post_fork"
            ]
        );
        l.adopt_worker(1, M);
        // Its fork, also seen by the kernel as the master was tracked: once.
        assert!(l.on(&ev(event::FORK, 1, M, 0, 0)).hooks.is_empty());
        assert_eq!(
            hooks(&l.on(&ev(event::BOOTED, 1, M, 0, 0))),
            ["post_worker_init"]
        );
        // A gunicorn running before the exporter: its start went unseen.
        let ran: Vec<_> = l
            .adopt_forked(M, &[2], false)
            .iter()
            .map(|o| o.hook.name())
            .collect();
        assert_eq!(ran, ["pre_fork", "post_fork"]);
        assert_eq!(
            hooks(&l.on(&ev(event::FORK, 3, M, 0, 0))),
            ["pre_fork", "post_fork"]
        );
    }

    #[test]
    fn hup_reloads_and_old_workers_stop_for_reload() {
        let mut l = watched();
        assert_eq!(
            hooks(&l.on(&ev(event::DELIVER, M, M, sig::HUP, 1))),
            ["nworkers_changed", "on_reload"]
        );
        l.on(&ev(event::FORK, 3, M, 0, 0));
        l.on(&ev(event::SIGNAL, 1, M, sig::TERM, 0));
        let out = l.on(&ev(event::DELIVER, 1, 1, sig::TERM, 1));
        assert!(out.hooks.is_empty(), "SIGTERM runs no worker hook");
        assert_eq!(
            out.changes,
            [Change::WorkerState {
                pid: 1,
                state: WorkerState::Quitting
            }]
        );
        assert_eq!(
            exit_reason(&l.on(&ev(event::EXIT, 1, M, 0, 0))),
            Some(Reason::Reload)
        );
    }

    #[test]
    fn worker_exit_runs_even_if_a_second_term_kills_the_worker() {
        let mut l = watched();
        l.on(&ev(event::DELIVER, M, M, sig::TTOU, 1));
        l.on(&ev(event::SIGNAL, 1, M, sig::TERM, 0));
        l.on(&ev(event::DELIVER, 1, 1, sig::TERM, 1));
        l.on(&ev(event::SIGNAL, 1, M, sig::TERM, 0));
        // Default action: handlers were restored as the worker finalized.
        l.on(&ev(event::DELIVER, 1, 1, sig::TERM, 0));
        let out = l.on(&ev(event::EXIT, 1, M, sig::TERM, 0));
        assert_eq!(hooks(&out), ["worker_exit"]);
        assert_eq!(out.hooks[0].status, None);
        assert_eq!(exit_reason(&out), Some(Reason::ScaleDown));
    }

    #[test]
    fn worker_exit_is_read_from_the_heartbeat_file() {
        let mut l = watched();
        l.on(&ev(event::SIGNAL, 1, M, sig::ABRT, 0));
        l.on(&ev(event::DELIVER, 1, 1, sig::ABRT, 1));
        // A thread stuck in the app held the exit up until the master's SIGKILL.
        l.on(&ev(event::SIGNAL, 1, M, sig::KILL, 0));
        let out = l.on(&ev(event::EXIT, 1, M, sig::KILL, heartbeat::CLOSED));
        assert_eq!(hooks(&out), ["worker_exit"]);
        assert_eq!(exit_reason(&out), Some(Reason::Timeout));
        // os._exit() from the app: an exit code, but Gunicorn's finally never ran.
        l.on(&ev(event::FORK, 3, M, 0, 0));
        let out = l.on(&ev(event::EXIT, 3, M, 0, heartbeat::OPEN));
        assert!(hooks(&out).is_empty());
    }

    #[test]
    fn ttou_scales_down() {
        let mut l = watched();
        assert_eq!(
            hooks(&l.on(&ev(event::DELIVER, M, M, sig::TTOU, 1))),
            ["nworkers_changed"]
        );
        l.on(&ev(event::SIGNAL, 1, M, sig::TERM, 0));
        assert_eq!(
            exit_reason(&l.on(&ev(event::EXIT, 1, M, 0, 0))),
            Some(Reason::ScaleDown)
        );
        assert!(
            hooks(&l.on(&ev(event::DELIVER, M, M, sig::TTOU, 1))).is_empty(),
            "one worker left: ignored"
        );
    }

    #[test]
    fn timeout_aborts() {
        let mut l = watched();
        l.on(&ev(event::SIGNAL, 1, M, sig::ABRT, 0));
        let out = l.on(&ev(event::DELIVER, 1, 1, sig::ABRT, 1));
        assert_eq!(hooks(&out), ["worker_abort"]);
        let out = l.on(&ev(event::EXIT, 1, M, 1 << 8, 0));
        assert_eq!(hooks(&out), ["worker_exit"]);
        assert_eq!(exit_reason(&out), Some(Reason::Timeout));
    }

    #[test]
    fn self_abort_is_a_crash_not_worker_abort() {
        let mut l = watched();
        l.on(&ev(event::SIGNAL, 1, 1, sig::ABRT, 0));
        assert!(hooks(&l.on(&ev(event::DELIVER, 1, 1, sig::ABRT, 1))).is_empty());
        let out = l.on(&ev(event::EXIT, 1, M, sig::ABRT, 0));
        assert!(
            hooks(&out).is_empty(),
            "no worker_exit when killed by a signal"
        );
        assert_eq!(exit_reason(&out), Some(Reason::Crash));
    }

    #[test]
    fn segv_crash_kill_and_oom() {
        let mut l = watched();
        l.on(&ev(event::SIGNAL, 1, 1, sig::SEGV, 0));
        assert_eq!(
            exit_reason(&l.on(&ev(event::EXIT, 1, M, sig::SEGV, 0))),
            Some(Reason::Crash)
        );
        l.on(&ev(event::SIGNAL, 2, 4242, sig::KILL, 0));
        assert_eq!(
            exit_reason(&l.on(&ev(event::EXIT, 2, M, sig::KILL, 0))),
            Some(Reason::Killed)
        );
        l.adopt_worker(3, M);
        l.on(&ev(event::OOM, 3, M, 0, 0));
        l.on(&ev(event::SIGNAL, 3, 999, sig::KILL, 0));
        assert_eq!(
            exit_reason(&l.on(&ev(event::EXIT, 3, M, sig::KILL, 0))),
            Some(Reason::Oom)
        );
    }

    #[test]
    fn quit_to_a_worker_runs_worker_int() {
        let mut l = watched();
        l.on(&ev(event::SIGNAL, 1, 555, sig::QUIT, 0));
        assert_eq!(
            hooks(&l.on(&ev(event::DELIVER, 1, 1, sig::QUIT, 1))),
            ["worker_int"]
        );
        assert_eq!(
            exit_reason(&l.on(&ev(event::EXIT, 1, M, 0, 0))),
            Some(Reason::Graceful)
        );
    }

    #[test]
    fn usr2_reexec_then_old_master_term() {
        let mut l = watched();
        let out = l.on(&ev(event::DELIVER, M, M, sig::USR2, 1));
        assert_eq!(
            out.changes,
            [Change::MasterSignal {
                pid: M,
                signal: sig::USR2
            }]
        );
        assert!(
            l.on(&ev(event::FORK, 50, M, 0, 0)).hooks.is_empty(),
            "the re-exec child is no worker"
        );
        let out = l.on(&ev(event::EXEC, 50, M, 0, 0));
        assert_eq!(hooks(&out), ["pre_exec", "nworkers_changed", "on_starting"]);
        assert_eq!(out.changes, [Change::MasterStarted { pid: 50 }]);
        assert_eq!(
            hooks(&l.on(&ev(event::FORK, 51, 50, 0, 0))),
            ["when_ready", "pre_fork", "post_fork"]
        );
        assert_eq!(
            hooks(&l.on(&ev(event::FORK, 52, 50, 0, 0))),
            ["pre_fork", "post_fork"]
        );
        // TERM the old master: it stops its workers gracefully and exits.
        l.on(&ev(event::DELIVER, M, M, sig::TERM, 1));
        l.on(&ev(event::SIGNAL, 1, M, sig::TERM, 0));
        assert_eq!(
            exit_reason(&l.on(&ev(event::EXIT, 1, M, 0, 0))),
            Some(Reason::Graceful)
        );
        let out = l.on(&ev(event::EXIT, M, M, 0, 0));
        assert_eq!(hooks(&out), ["on_exit"]);
        assert_eq!(out.changes, [Change::MasterExited { pid: M }]);
        assert!(l.is_master(50));
    }

    #[test]
    fn reaping_the_reexec_child_is_no_child_exit() {
        let mut l = watched();
        l.on(&ev(event::DELIVER, M, M, sig::USR2, 1));
        l.on(&ev(event::FORK, 50, M, 0, 0));
        assert!(l.on(&ev(event::REAP, M, 50, 0, 0)).hooks.is_empty());
    }

    #[test]
    fn names() {
        assert_eq!(sig::name(sig::TTIN), "ttin");
        assert_eq!(sig::name(40), "sig40");
        for h in Hook::ALL {
            assert_eq!(Hook::parse(h.name()), Some(h));
        }
        assert_eq!(Hook::parse("nope"), None);
        assert_eq!(Reason::Timeout.in_flight_cause(), cause::WORKER_TIMEOUT);
    }
}
