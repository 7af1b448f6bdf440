//! Lifecycle checks: Gunicorn's hook markers (written by the real hooks of
//! `tests/apps/gunicorn_conf.py`, the truth) against the exporter's hook,
//! restart, master-signal and worker-state metrics.
//!
//! A [`Rig`] is one Gunicorn with one exporter attached, driven step by step:
//! [`Rig::begin`] a step, act on Gunicorn, [`Rig::settle`] until Gunicorn's side
//! is over (the expected markers appeared, the workers are back and booted),
//! then [`Rig::check`] polls the exporter until everything it exports agrees
//! with the markers since it attached and with what the test did, or fails
//! with both sides side by side.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{self, Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::Path,
    time::{Duration, Instant},
};

use crate::{
    Exporter, ExporterBuilder, Gunicorn, TestDir,
    check::{COUNT_TIMEOUT, FAILED, REQUESTS, WORKERS},
    fixtures::{children_of, gunicorn::Marker, ppid_of},
    prom::{Metrics, describe_labels},
    tail_text, wait,
};

pub const HOOK_EVENTS: &str = "gunicorn_hook_events_total";
pub const RESTARTS: &str = "gunicorn_master_worker_restart_total";
pub const MASTER_SIGNALS: &str = "gunicorn_master_signals_total";
pub const WORKER_STATE: &str = "gunicorn_worker_state";
pub const HOOK_ACTIONS: &str = "gunicorn_exporter_hook_actions_total";
pub const UP: &str = "gunicorn_up";

/// Gunicorn's server hooks, as `gunicorn_hook_events_total{hook}` names them.
pub const HOOKS: [&str; 13] = [
    "on_starting",
    "when_ready",
    "on_reload",
    "nworkers_changed",
    "pre_fork",
    "post_fork",
    "post_worker_init",
    "worker_int",
    "worker_abort",
    "pre_exec",
    "child_exit",
    "worker_exit",
    "on_exit",
];

/// `gunicorn_master_worker_restart_total{reason}` values.
pub const REASONS: [&str; 10] = [
    "timeout",
    "max_requests",
    "reload",
    "scale_down",
    "graceful",
    "crash",
    "oom",
    "killed",
    "boot_error",
    "error",
];

/// `gunicorn_worker_state{state}` values.
pub const STATES: [&str; 3] = ["running", "quitting", "aborting"];

/// `--series-grace` of the rigs: short, so dead series are seen to go.
pub const GRACE_SECS: u32 = 3;

/// How long Gunicorn may take to finish what a step started (boot new workers
/// on a busy machine, stop old ones).
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(45);

/// Count per hook of `markers` (every hook of [`HOOKS`] present, 0 if none).
pub fn marker_counts(markers: &[Marker]) -> BTreeMap<String, f64> {
    let mut out: BTreeMap<String, f64> = HOOKS.iter().map(|h| (h.to_string(), 0.0)).collect();
    for m in markers {
        *out.entry(m.hook.clone()).or_insert(0.0) += 1.0;
    }
    out
}

/// Markers every replacement of one worker adds besides its exit.
pub const RESPAWN: [(&str, usize); 3] =
    [("pre_fork", 1), ("post_fork", 1), ("post_worker_init", 1)];

/// `extra` markers plus those of one respawn.
pub fn with_respawn(extra: &[(&'static str, usize)]) -> Vec<(&'static str, usize)> {
    let mut v = extra.to_vec();
    v.extend_from_slice(&RESPAWN);
    v
}

/// The status code of a raw response, None when the server sent nothing.
pub fn status_of(bytes: &[u8]) -> Option<u16> {
    let text = String::from_utf8_lossy(bytes);
    let line = text.lines().next()?;
    line.strip_prefix("HTTP/1.")?.get(2..5)?.parse().ok()
}

/// Sends `sig` to `pid`; panics if the process does not exist.
pub fn send_signal(pid: u32, sig: libc::c_int) {
    // SAFETY: plain syscall.
    let r = unsafe { libc::kill(pid as libc::pid_t, sig) };
    assert!(
        r == 0,
        "kill({pid}, {sig}) failed: {}",
        io::Error::last_os_error()
    );
}

/// Whether `pid` is a living (not zombie) process.
pub fn alive(pid: u32) -> bool {
    ppid_of(pid).is_some()
}

/// Formats `a` against `b` for every key of either, marking differences.
/// Returns whether they agree.
pub fn table(
    title: &str,
    left: &str,
    a: &BTreeMap<String, f64>,
    right: &str,
    b: &BTreeMap<String, f64>,
) -> (bool, String) {
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let mut same = true;
    let mut out = format!("  {title:<28} {left:>10} {right:>10}\n");
    for k in keys {
        let (x, y) = (a.get(k), b.get(k));
        let differs =
            x.copied().unwrap_or(0.0) != y.copied().unwrap_or(0.0) || (x.is_none() && y.is_some());
        same &= !differs;
        let show = |v: Option<&f64>| v.map_or("(absent)".to_string(), |v| v.to_string());
        out.push_str(&format!(
            "  {k:<28} {:>10} {:>10}{}\n",
            show(x),
            show(y),
            if differs { "  <-- differs" } else { "" }
        ));
    }
    (same, out)
}

/// Samples of `name`, keyed by the value of `label` (summed).
pub fn by_label(m: &Metrics, name: &str, label: &str) -> BTreeMap<String, f64> {
    m.group_by(name, &[label])
        .into_iter()
        .map(|(k, v)| (k[0].clone(), v))
        .collect()
}

/// The lifecycle metric lines of a scrape, for failure messages.
pub fn lifecycle_lines(m: &Metrics) -> String {
    m.lines(&[
        HOOK_EVENTS,
        RESTARTS,
        MASTER_SIGNALS,
        WORKER_STATE,
        HOOK_ACTIONS,
        UP,
        "gunicorn_workers ",
        FAILED,
        REQUESTS,
        crate::check::KERNEL_ERRORS,
    ])
}

/// Whether `m` holds a request or failed-request series of one of `pids`.
fn series_of(m: &Metrics, pids: &[u32]) -> bool {
    m.samples.iter().any(|s| {
        (s.name == FAILED || s.name == REQUESTS)
            && s.labels
                .get("pid")
                .and_then(|p| p.parse::<u32>().ok())
                .is_some_and(|p| pids.contains(&p))
    })
}

/// A request the test holds open on its own socket, to find which worker took
/// it (from /proc, not from the exporter) and to see how it ends.
pub struct HeldRequest {
    pub stream: TcpStream,
    pub server: SocketAddr,
    pub client: SocketAddr,
}

impl HeldRequest {
    /// Connects to `server` and writes `GET target`.
    pub fn send(server: SocketAddr, target: &str) -> HeldRequest {
        let mut stream = TcpStream::connect_timeout(&server, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("connecting to {server}: {e}"));
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let req = format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        stream
            .write_all(req.as_bytes())
            .unwrap_or_else(|e| panic!("sending GET {target}: {e}"));
        let client = stream.local_addr().unwrap();
        HeldRequest {
            stream,
            server,
            client,
        }
    }

    /// Which of `candidates` holds the server side of this connection, once
    /// it has read the whole request (its receive queue is empty).
    pub fn reader(&self, candidates: &[u32]) -> Option<u32> {
        let (inode, rx_queue) = tcp_socket(self.server.port(), self.client.port())?;
        if rx_queue != 0 {
            return None;
        }
        let link = format!("socket:[{inode}]");
        candidates.iter().copied().find(|pid| {
            std::fs::read_dir(format!("/proc/{pid}/fd"))
                .map(|d| {
                    d.flatten().any(|e| {
                        std::fs::read_link(e.path())
                            .map(|l| l.to_string_lossy() == link)
                            .unwrap_or(false)
                    })
                })
                .unwrap_or(false)
        })
    }

    /// Reads until the server closes; the bytes received.
    pub fn read_to_end(mut self) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return Ok(out),
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(out),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// Inode and receive-queue length of the server side (local port `server`,
/// peer port `client`) of an established 127.0.0.1 connection.
fn tcp_socket(server: u16, client: u16) -> Option<(u64, u64)> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let local = format!("0100007F:{server:04X}");
    let remote = format!("0100007F:{client:04X}");
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 10 || f[1] != local || f[2] != remote {
            return None;
        }
        let rx = u64::from_str_radix(f[4].split(':').nth(1)?, 16).ok()?;
        Some((f[9].parse().ok()?, rx))
    })
}

/// The start of a step: where the markers were.
#[derive(Debug)]
pub struct Mark {
    pub name: String,
    pub markers: usize,
    pub workers: Vec<u32>,
}

/// One Gunicorn and the exporter attached to it (dropped first).
pub struct Rig {
    pub e: Exporter,
    pub g: Gunicorn,
    /// The test's own files (release files, action outputs).
    pub dir: TestDir,
    /// Masters whose workers are watched: the fixture's, plus a re-exec'd one.
    masters: Vec<u32>,
    /// Markers written before the exporter attached (or before a rebase).
    marker_base: usize,
    /// Exporter hook counts at a rebase (none before), subtracted.
    hook_offset: BTreeMap<String, f64>,
    /// Expected restart counts (absolute), every reason present.
    restarts: BTreeMap<String, f64>,
    /// Expected master signals (absolute), SIGCHLD left out (signals coalesce).
    signals: BTreeMap<String, f64>,
    /// Workers expected in a state other than running.
    states: BTreeMap<u32, &'static str>,
    up: bool,
    steps: Vec<String>,
}

impl Rig {
    /// Attaches an exporter (`--series-grace` [`GRACE_SECS`]) to `g` and checks
    /// the state it starts from.
    pub fn start(g: Gunicorn) -> Rig {
        Rig::start_with(g, None, |_, b| b)
    }

    /// Same, with `--pidfile pidfile` instead of `--pid` when given, and more
    /// exporter options (`configure` gets the rig's directory).
    pub fn start_with(
        g: Gunicorn,
        pidfile: Option<&Path>,
        configure: impl FnOnce(&TestDir, ExporterBuilder) -> ExporterBuilder,
    ) -> Rig {
        let dir = TestDir::new("lifecycle");
        let marker_base = g.markers().len();
        let builder = match pidfile {
            Some(p) => Exporter::builder().pidfile(p),
            None => Exporter::builder().pid(g.master_pid()),
        };
        let builder = builder.arg("--series-grace").arg(GRACE_SECS.to_string());
        let e = configure(&dir, builder).start();
        // What Gunicorn does while the exporter attaches may or may not be
        // seen: the comparisons need it idle then.
        let mut during = g.markers();
        during.drain(..marker_base.min(during.len()));
        assert!(
            during.is_empty(),
            "gunicorn was not idle while the exporter attached (an overloaded machine?): \
             markers written meanwhile: {during:?}\n{}\n{}",
            e.story(),
            g.story()
        );
        let mut rig = Rig {
            masters: vec![g.master_pid()],
            e,
            g,
            dir,
            marker_base,
            hook_offset: BTreeMap::new(),
            restarts: REASONS.iter().map(|r| (r.to_string(), 0.0)).collect(),
            signals: BTreeMap::new(),
            states: BTreeMap::new(),
            up: true,
            steps: Vec::new(),
        };
        rig.steps.push("attach".into());
        rig.check();
        rig
    }

    /// Markers written since the exporter attached.
    pub fn markers(&self) -> Vec<Marker> {
        let mut all = self.g.markers();
        all.drain(..self.marker_base.min(all.len()));
        all
    }

    /// The masters being watched that are alive.
    pub fn masters(&self) -> Vec<u32> {
        self.masters.iter().copied().filter(|m| alive(*m)).collect()
    }

    /// Also watch `pid` (a master started by USR2).
    pub fn add_master(&mut self, pid: u32) {
        if !self.masters.contains(&pid) {
            self.masters.push(pid);
        }
    }

    /// Living workers of the watched masters (not the masters themselves).
    pub fn workers(&self) -> Vec<u32> {
        let masters = self.masters();
        let mut out: Vec<u32> = masters
            .iter()
            .flat_map(|m| children_of(*m))
            .filter(|p| !self.masters.contains(p))
            .collect();
        out.sort_unstable();
        out
    }

    /// Replaces the Gunicorn (e.g. a master started again with the same
    /// pidfile); returns the old one. Call [`Rig::rebase`] once the exporter
    /// follows the new one.
    pub fn replace_gunicorn(&mut self, g: Gunicorn) -> Gunicorn {
        self.masters = vec![g.master_pid()];
        self.marker_base = g.markers().len();
        self.states.clear();
        std::mem::replace(&mut self.g, g)
    }

    /// From now on compare hook counters as deltas from `m`, and markers from
    /// the current end of the marker file: for a master whose start the
    /// exporter saw only partly (what it counted of it is not checked).
    pub fn rebase(&mut self, m: &Metrics) {
        self.hook_offset = by_label(m, HOOK_EVENTS, "hook");
        self.marker_base = self.g.markers().len();
        self.steps.push("rebase".into());
    }

    /// Waits until `pid` (a master) is gone, reaping the fixture's master.
    pub fn wait_master_gone(&mut self, pid: u32) {
        let r = wait::until(&format!("master {pid} to exit"), SETTLE_TIMEOUT, || {
            let _ = self.g.check_alive();
            if alive(pid) {
                Err("still running".to_string())
            } else {
                Ok(())
            }
        });
        r.unwrap_or_else(|e| panic!("{e}\n{}", self.story(None)));
    }

    /// Polls until the exporter shows `pid` in `state` (1) and the other
    /// states 0, without checking anything else.
    pub fn wait_state(&mut self, pid: u32, state: &str) -> Metrics {
        let mut last = None;
        let r = wait::until(
            &format!("worker {pid} to be {state}"),
            COUNT_TIMEOUT,
            || {
                let m = self.e.try_scrape()?;
                let got: BTreeMap<String, f64> = m
                    .get(WORKER_STATE)
                    .filter(|s| {
                        s.labels.get("pid").map(String::as_str) == Some(pid.to_string().as_str())
                    })
                    .map(|s| (s.labels.get("state").cloned().unwrap_or_default(), s.value))
                    .collect();
                last = Some(m);
                let want: BTreeMap<String, f64> = STATES
                    .iter()
                    .map(|s| (s.to_string(), if *s == state { 1.0 } else { 0.0 }))
                    .collect();
                if got == want {
                    Ok(())
                } else {
                    Err(format!("{WORKER_STATE} of pid {pid}: {got:?}"))
                }
            },
        );
        if let Err(e) = r {
            panic!("{e}\n{}", self.story(last.as_ref()));
        }
        last.expect("a scrape")
    }

    /// Starts a step.
    pub fn begin(&mut self, name: &str) -> Mark {
        self.steps.push(name.to_string());
        Mark {
            name: name.to_string(),
            markers: self.g.markers().len(),
            workers: self.workers(),
        }
    }

    /// Markers written since `mark`.
    pub fn markers_since(&self, mark: &Mark) -> Vec<Marker> {
        let mut all = self.g.markers();
        all.drain(..mark.markers.min(all.len()));
        all
    }

    /// Waits until Gunicorn has written at least `want` markers since `mark`
    /// and has exactly `workers` living, booted workers (over the watched
    /// masters). Returns the markers since `mark`.
    pub fn settle(&mut self, mark: &Mark, want: &[(&str, usize)], workers: usize) -> Vec<Marker> {
        let r = wait::until(
            &format!("gunicorn to finish step {:?}", mark.name),
            SETTLE_TIMEOUT,
            || {
                let _ = self.g.check_alive(); // reaps an exited master
                let new = self.markers_since(mark);
                let counts = marker_counts(&new);
                let missing: Vec<String> = want
                    .iter()
                    .filter(|(h, n)| counts.get(*h).copied().unwrap_or(0.0) < *n as f64)
                    .map(|(h, n)| format!("{h} {}/{n}", counts.get(*h).copied().unwrap_or(0.0)))
                    .collect();
                let living = self.workers();
                let booted: BTreeSet<u32> = self
                    .g
                    .markers()
                    .iter()
                    .filter(|m| m.hook == "post_worker_init")
                    .filter_map(|m| m.worker_pid)
                    .collect();
                let unbooted: Vec<u32> = living
                    .iter()
                    .copied()
                    .filter(|p| !booted.contains(p))
                    .collect();
                if missing.is_empty() && living.len() == workers && unbooted.is_empty() {
                    Ok(new)
                } else {
                    Err(format!(
                        "markers missing: {missing:?}; living workers {living:?} (want {workers}), not booted {unbooted:?}"
                    ))
                }
            },
        );
        r.unwrap_or_else(|err| panic!("{err}\n{}", self.story(None)))
    }

    /// The one marker of `hook` among `markers` (panics unless exactly one).
    pub fn only<'a>(&self, markers: &'a [Marker], hook: &str) -> &'a Marker {
        let found: Vec<_> = markers.iter().filter(|m| m.hook == hook).collect();
        assert!(
            found.len() == 1,
            "expected one {hook} marker in this step, found {}\n{}",
            found.len(),
            self.story(None)
        );
        found[0]
    }

    /// The end of a worker-timeout step, once the held request got `got`: it
    /// failed by timeout unless answered below 500 (Gunicorn 27's sync
    /// worker may still answer it 500); the master aborted the victim, which
    /// died (worker_abort, child_exit, then a respawn back to `workers`), and
    /// one timeout restart is counted.
    ///
    /// `worker_exit` is not awaited: the master SIGKILLs an aborted worker
    /// still alive at its next pass (about a second later), and a slow machine
    /// may not reach the hook by then. Whether it ran, the markers say, and
    /// `check` holds the exporter to them.
    pub fn timed_out(&mut self, m: &Mark, victim: u32, got: &[u8], workers: usize) {
        let status = status_of(got);
        eprintln!("the held request got status {status:?}");
        let failed: Vec<(u32, &str, f64)> = match status {
            Some(s) if s < 500 => vec![],
            _ => vec![(victim, "worker_timeout", 1.0)],
        };
        self.check_requests(&[victim], &failed);
        let new = self.settle(
            m,
            &with_respawn(&[("worker_abort", 1), ("child_exit", 1)]),
            workers,
        );
        assert_eq!(self.only(&new, "worker_abort").worker_pid, Some(victim));
        assert_eq!(self.only(&new, "child_exit").worker_pid, Some(victim));
        self.recheck_requests(&[victim], &failed);
        self.expect_restarts("timeout", 1);
        self.check();
    }

    /// TTIN to `master`, which then runs `workers`: one more worker forked
    /// and booted, every hook and count checked.
    pub fn scale_up(&mut self, master: u32, workers: usize) {
        let m = self.begin("TTIN");
        send_signal(master, libc::SIGTTIN);
        self.settle(&m, &with_respawn(&[("nworkers_changed", 1)]), workers);
        self.expect_signals("ttin", 1);
        self.check();
    }

    /// TTOU to `master`, which then runs `workers`: its oldest worker
    /// stopped, every hook and count checked.
    pub fn scale_down(&mut self, master: u32, workers: usize) {
        let m = self.begin("TTOU");
        send_signal(master, libc::SIGTTOU);
        self.settle(
            &m,
            &[
                ("nworkers_changed", 1),
                ("worker_exit", 1),
                ("child_exit", 1),
            ],
            workers,
        );
        self.expect_signals("ttou", 1);
        self.expect_restarts("scale_down", 1);
        self.check();
    }

    /// The next [`check`](Rig::check) expects `n` more restarts for `reason`.
    pub fn expect_restarts(&mut self, reason: &str, n: u32) {
        *self.restarts.entry(reason.to_string()).or_insert(0.0) += n as f64;
    }

    /// The next check expects `n` more deliveries of `signal` to a master.
    pub fn expect_signals(&mut self, signal: &str, n: u32) {
        *self.signals.entry(signal.to_string()).or_insert(0.0) += n as f64;
    }

    /// The next check expects `pid` in `state` (running otherwise).
    pub fn expect_state(&mut self, pid: u32, state: &'static str) {
        self.states.insert(pid, state);
    }

    /// The next check expects gunicorn_up to be `up`.
    pub fn expect_up(&mut self, up: bool) {
        self.up = up;
    }

    /// Polls the exporter until everything agrees (see [`Rig::compare`]);
    /// panics with both sides after [`COUNT_TIMEOUT`]. Returns the last scrape.
    pub fn check(&mut self) -> Metrics {
        let mut last: Option<Metrics> = None;
        let r = wait::until("the exporter to agree with gunicorn", COUNT_TIMEOUT, || {
            if let Err(e) = self.e.check_alive() {
                return Ok(Err(e));
            }
            let m = match self.e.try_scrape() {
                Ok(m) => m,
                Err(e) => return Ok(Err(e)),
            };
            let verdict = self.compare(&m);
            last = Some(m);
            verdict.map(Ok)
        });
        match r {
            Ok(Ok(())) => last.expect("a scrape"),
            Ok(Err(e)) => panic!(
                "after step {:?}: the exporter failed: {e}\n{}",
                self.steps.last(),
                self.story(last.as_ref())
            ),
            Err(e) => panic!(
                "after step {:?} (steps so far: {:?}): {e}\n{}",
                self.steps.last(),
                self.steps,
                self.story(last.as_ref())
            ),
        }
    }

    /// Everything the exporter must agree on now: hook counters = markers since
    /// attach (all 13 exported), restart reasons and master signals = what the
    /// test did, gunicorn_up, gunicorn_workers = living workers, three
    /// worker_state series per living worker with the expected state set, and
    /// no per-worker series (those with a worker_id) of a worker that is gone
    /// (the grace is over).
    pub fn compare(&self, m: &Metrics) -> Result<(), String> {
        let mut problems = String::new();
        let markers = marker_counts(&self.markers());
        let mut hooks = by_label(m, HOOK_EVENTS, "hook");
        for (h, n) in &self.hook_offset {
            if let Some(v) = hooks.get_mut(h) {
                *v -= n;
            }
        }
        let title = if self.hook_offset.is_empty() {
            "hook"
        } else {
            "hook (since the rebase)"
        };
        let (same, t) = table(title, "exporter", &hooks, "markers", &markers);
        if !same {
            problems.push_str(&format!(
                "{HOOK_EVENTS} differs from the hook markers since attach:\n{t}"
            ));
        }
        let restarts = by_label(m, RESTARTS, "reason");
        let (same, t) = table("reason", "exporter", &restarts, "expected", &self.restarts);
        if !same {
            problems.push_str(&format!("{RESTARTS} differs from what the test did:\n{t}"));
        }
        let mut signals = by_label(m, MASTER_SIGNALS, "signal");
        signals.remove("chld");
        // The signals Gunicorn handles are exported from the start, at 0.
        signals.retain(|_, n| *n != 0.0);
        let (same, t) = table(
            "signal (chld left out)",
            "exporter",
            &signals,
            "expected",
            &self.signals,
        );
        if !same {
            problems.push_str(&format!(
                "{MASTER_SIGNALS} differs from the signals the test sent:\n{t}"
            ));
        }
        let up = m.value(UP, &[]);
        if up != Some(if self.up { 1.0 } else { 0.0 }) {
            problems.push_str(&format!("{UP} is {up:?}, expected {}\n", self.up as u8));
        }
        let living = self.workers();
        let workers = m.value(WORKERS, &[]).unwrap_or(0.0);
        if workers != living.len() as f64 {
            problems.push_str(&format!(
                "{WORKERS} is {workers}, but the masters {:?} have {} living workers {living:?}\n",
                self.masters(),
                living.len()
            ));
        }
        // worker_state: exactly running|quitting|aborting per living worker.
        let mut states: BTreeMap<u32, BTreeMap<String, f64>> = BTreeMap::new();
        for s in m.get(WORKER_STATE) {
            let pid = s
                .labels
                .get("pid")
                .and_then(|p| p.parse::<u32>().ok())
                .unwrap_or(0);
            let state = s.labels.get("state").cloned().unwrap_or_default();
            if states
                .entry(pid)
                .or_default()
                .insert(state, s.value)
                .is_some()
            {
                problems.push_str(&format!("{WORKER_STATE}: duplicate series for pid {pid}\n"));
            }
        }
        let exported: Vec<u32> = states.keys().copied().collect();
        if exported != living {
            problems.push_str(&format!(
                "{WORKER_STATE} covers pids {exported:?}, the living workers are {living:?}\n"
            ));
        }
        for (pid, s) in &states {
            let want_state = self.states.get(pid).copied().unwrap_or("running");
            let want: BTreeMap<String, f64> = STATES
                .iter()
                .map(|st| (st.to_string(), if *st == want_state { 1.0 } else { 0.0 }))
                .collect();
            if *s != want && living.contains(pid) {
                problems.push_str(&format!(
                    "{WORKER_STATE} of pid {pid} is {s:?}, expected {want_state}\n"
                ));
            }
        }
        // No series of a dead worker past the grace period (they fold into
        // their master's `worker_id="exited"`).
        let masters = self.masters();
        let lingering: BTreeSet<String> = m
            .samples
            .iter()
            .filter_map(|s| {
                let id = s.labels.get("worker_id")?;
                let p = s.labels.get("pid")?.parse::<u32>().ok()?;
                let folded = id == "exited" && masters.contains(&p);
                (!living.contains(&p) && !folded)
                    .then(|| format!("{}{{{}}}", s.name, describe_labels(&s.labels)))
            })
            .collect();
        if !lingering.is_empty() {
            problems.push_str(&format!(
                "series of workers that are gone linger (grace {GRACE_SECS} s): {lingering:?}\n"
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    /// Polls until the exporter's failed requests per (pid, error_type) are
    /// exactly `failed` (over every worker), and its answered requests of
    /// `pids` per (pid, status) are exactly Gunicorn's access log lines of
    /// those pids. Call it right after the act: the series of a worker that
    /// died only last the grace period. See also [`Rig::recheck_requests`].
    pub fn check_requests(&self, pids: &[u32], failed: &[(u32, &str, f64)]) -> Metrics {
        let mut last = None;
        // The last mismatch seen while the dead workers' series were still
        // exported (after the grace period they are gone, which says nothing).
        let mut last_present: Option<(String, Metrics)> = None;
        let r = wait::until(
            "the exporter's request counts of the dead workers",
            COUNT_TIMEOUT,
            || {
                let m = self.e.try_scrape()?;
                let verdict = self.requests_verdict(&m, pids, failed);
                if let Err(e) = &verdict
                    && series_of(&m, pids)
                {
                    last_present = Some((e.clone(), m.clone()));
                }
                last = Some(m);
                verdict
            },
        );
        if let Err(e) = r {
            match last_present {
                Some((mismatch, m)) if !series_of(last.as_ref().expect("a scrape"), pids) => {
                    panic!(
                        "after step {:?}: the exporter's request counts of {pids:?} never matched \
                     while their series were exported; the last such scrape showed:{mismatch}\
                     (their series are gone by now: the grace period is over)\n{}",
                        self.steps.last(),
                        self.story(Some(&m))
                    )
                }
                Some(_) => panic!(
                    "after step {:?}: {e}\n{}",
                    self.steps.last(),
                    self.story(last.as_ref())
                ),
                None => panic!(
                    "after step {:?}: {e}\n(no request series of {pids:?} was ever seen)\n{}",
                    self.steps.last(),
                    self.story(last.as_ref())
                ),
            }
        }
        last.expect("a scrape")
    }

    /// After the step settled: while any request series of `pids` is still
    /// exported (grace), it must still be exactly what
    /// [`Rig::check_requests`] saw (nothing counted late, twice or otherwise).
    pub fn recheck_requests(&self, pids: &[u32], failed: &[(u32, &str, f64)]) {
        let m = self.e.scrape();
        if series_of(&m, pids) {
            if let Err(e) = self.requests_verdict(&m, pids, failed) {
                panic!(
                    "after step {:?}, once gunicorn settled, the request counts changed:{e}\n{}",
                    self.steps.last(),
                    self.story(Some(&m))
                );
            }
        } else {
            eprintln!(
                "note: step {:?}: the series of {pids:?} were gone (grace) before the recheck",
                self.steps.last()
            );
        }
    }

    fn requests_verdict(
        &self,
        m: &Metrics,
        pids: &[u32],
        failed: &[(u32, &str, f64)],
    ) -> Result<(), String> {
        let want_failed: BTreeMap<String, f64> = failed
            .iter()
            .map(|(p, t, n)| (format!("pid={p} error_type={t}"), *n))
            .collect();
        // Workers' own series: earlier steps' dead workers have folded into
        // their master's `worker_id="exited"` by now.
        let mut got_failed: BTreeMap<String, f64> = BTreeMap::new();
        for s in m.get(FAILED) {
            let label = |k: &str| s.labels.get(k).map_or("", String::as_str);
            if label("worker_id") != "exited" {
                *got_failed
                    .entry(format!(
                        "pid={} error_type={}",
                        label("pid"),
                        label("error_type")
                    ))
                    .or_default() += s.value;
            }
        }
        let mut truth: BTreeMap<String, f64> = BTreeMap::new();
        for r in self.g.access_log() {
            if pids.contains(&r.pid) {
                *truth
                    .entry(format!("pid={} status={}", r.pid, r.status))
                    .or_default() += 1.0;
            }
        }
        let got_requests: BTreeMap<String, f64> = m
            .group_by(REQUESTS, &["pid", "status"])
            .into_iter()
            .filter(|(k, _)| k[0].parse::<u32>().is_ok_and(|p| pids.contains(&p)))
            .map(|(k, v)| (format!("pid={} status={}", k[0], k[1]), v))
            .collect();
        let (same_f, tf) = table(
            "failed request",
            "exporter",
            &got_failed,
            "expected",
            &want_failed,
        );
        let (same_r, tr) = table("request", "exporter", &got_requests, "access log", &truth);
        if same_f && same_r {
            Ok(())
        } else {
            Err(format!("\n{FAILED}:\n{tf}{REQUESTS}:\n{tr}"))
        }
    }

    /// Panics unless the exporter is alive and /metrics answers.
    pub fn assert_serving(&mut self) {
        if let Err(e) = self.e.check_alive() {
            panic!("{e}\n{}", self.story(None));
        }
        if let Err(e) = self.e.try_scrape() {
            panic!(
                "the exporter no longer serves /metrics: {e}\n{}",
                self.story(None)
            );
        }
    }

    /// Exporter stderr, Gunicorn's logs, every marker since attach and the
    /// lifecycle metric lines of `m`.
    pub fn story(&self, m: Option<&Metrics>) -> String {
        let markers: String = self
            .markers()
            .iter()
            .map(|mk| {
                format!(
                    "{} {} {} {}\n",
                    mk.hook,
                    mk.pid,
                    mk.worker_pid.map_or("-".to_string(), |p| p.to_string()),
                    mk.extra
                )
            })
            .collect();
        let mut s = format!(
            "{}\n{}\n--- markers since the exporter attached:\n{}",
            self.e.story(),
            self.g.story(),
            tail_text(&markers, 60)
        );
        s.push_str(&format!(
            "--- watched masters {:?} (alive {:?}), living workers {:?}\n",
            self.masters,
            self.masters(),
            self.workers()
        ));
        if let Some(m) = m {
            s.push_str("--- exporter lifecycle metric lines:\n");
            s.push_str(&lifecycle_lines(m));
        }
        s
    }

    /// A file path in the rig's directory.
    pub fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.join(name)
    }
}

/// Waits until `path`'s text satisfies `pred`, returning the text.
pub fn wait_file(
    path: &Path,
    what: &str,
    timeout: Duration,
    pred: impl Fn(&str) -> bool,
) -> Result<String, String> {
    wait::until(what, timeout, || {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if pred(&text) {
            Ok(text)
        } else {
            Err(format!(
                "{} holds {:?}",
                path.display(),
                tail_text(&text, 5)
            ))
        }
    })
}

/// How long ago (for messages).
pub fn since(t: Instant) -> String {
    format!("{:.1} s", t.elapsed().as_secs_f64())
}

/// A minimal JSON reader for the exporter's log lines (objects, arrays,
/// strings, numbers, true, false, null).
pub mod json {
    use std::collections::BTreeMap;

    #[derive(Clone, Debug, PartialEq)]
    pub enum Json {
        Null,
        Bool(bool),
        Number(f64),
        String(String),
        Array(Vec<Json>),
        Object(BTreeMap<String, Json>),
    }

    impl Json {
        pub fn get(&self, key: &str) -> Option<&Json> {
            match self {
                Json::Object(o) => o.get(key),
                _ => None,
            }
        }

        pub fn as_str(&self) -> Option<&str> {
            match self {
                Json::String(s) => Some(s),
                _ => None,
            }
        }

        pub fn as_f64(&self) -> Option<f64> {
            match self {
                Json::Number(n) => Some(*n),
                _ => None,
            }
        }
    }

    /// Parses one complete JSON value (surrounding whitespace allowed).
    pub fn parse(text: &str) -> Result<Json, String> {
        let mut p = Parser {
            s: text.as_bytes(),
            i: 0,
        };
        let v = p.value()?;
        p.ws();
        if p.i != p.s.len() {
            return Err(format!("trailing characters at byte {}", p.i));
        }
        Ok(v)
    }

    struct Parser<'a> {
        s: &'a [u8],
        i: usize,
    }

    impl Parser<'_> {
        fn ws(&mut self) {
            while self.i < self.s.len() && matches!(self.s[self.i], b' ' | b'\t' | b'\n' | b'\r') {
                self.i += 1;
            }
        }

        fn peek(&self) -> Option<u8> {
            self.s.get(self.i).copied()
        }

        fn expect(&mut self, lit: &str) -> Result<(), String> {
            if self.s[self.i..].starts_with(lit.as_bytes()) {
                self.i += lit.len();
                Ok(())
            } else {
                Err(format!("expected {lit:?} at byte {}", self.i))
            }
        }

        fn value(&mut self) -> Result<Json, String> {
            self.ws();
            match self.peek().ok_or("unexpected end")? {
                b'{' => {
                    self.i += 1;
                    let mut o = BTreeMap::new();
                    self.ws();
                    if self.peek() == Some(b'}') {
                        self.i += 1;
                        return Ok(Json::Object(o));
                    }
                    loop {
                        self.ws();
                        let k = self.string()?;
                        self.ws();
                        self.expect(":")?;
                        let v = self.value()?;
                        if o.insert(k.clone(), v).is_some() {
                            return Err(format!("duplicate key {k:?}"));
                        }
                        self.ws();
                        match self.peek() {
                            Some(b',') => self.i += 1,
                            Some(b'}') => {
                                self.i += 1;
                                return Ok(Json::Object(o));
                            }
                            _ => return Err(format!("expected ',' or '}}' at byte {}", self.i)),
                        }
                    }
                }
                b'[' => {
                    self.i += 1;
                    let mut a = Vec::new();
                    self.ws();
                    if self.peek() == Some(b']') {
                        self.i += 1;
                        return Ok(Json::Array(a));
                    }
                    loop {
                        a.push(self.value()?);
                        self.ws();
                        match self.peek() {
                            Some(b',') => self.i += 1,
                            Some(b']') => {
                                self.i += 1;
                                return Ok(Json::Array(a));
                            }
                            _ => return Err(format!("expected ',' or ']' at byte {}", self.i)),
                        }
                    }
                }
                b'"' => Ok(Json::String(self.string()?)),
                b't' => self.expect("true").map(|_| Json::Bool(true)),
                b'f' => self.expect("false").map(|_| Json::Bool(false)),
                b'n' => self.expect("null").map(|_| Json::Null),
                _ => {
                    let start = self.i;
                    while self.i < self.s.len()
                        && matches!(
                            self.s[self.i],
                            b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'
                        )
                    {
                        self.i += 1;
                    }
                    let t =
                        std::str::from_utf8(&self.s[start..self.i]).map_err(|e| e.to_string())?;
                    t.parse::<f64>()
                        .map(Json::Number)
                        .map_err(|_| format!("bad value at byte {start}"))
                }
            }
        }

        fn string(&mut self) -> Result<String, String> {
            self.expect("\"")?;
            let mut out: Vec<u8> = Vec::new();
            loop {
                let c = self.peek().ok_or("unterminated string")?;
                self.i += 1;
                match c {
                    b'"' => return String::from_utf8(out).map_err(|e| e.to_string()),
                    b'\\' => {
                        let e = self.peek().ok_or("unterminated escape")?;
                        self.i += 1;
                        let ch = match e {
                            b'"' => '"',
                            b'\\' => '\\',
                            b'/' => '/',
                            b'b' => '\u{8}',
                            b'f' => '\u{c}',
                            b'n' => '\n',
                            b'r' => '\r',
                            b't' => '\t',
                            b'u' => {
                                let hex =
                                    self.s.get(self.i..self.i + 4).ok_or("short \\u escape")?;
                                self.i += 4;
                                let code = u32::from_str_radix(
                                    std::str::from_utf8(hex).map_err(|e| e.to_string())?,
                                    16,
                                )
                                .map_err(|e| e.to_string())?;
                                char::from_u32(code).unwrap_or('\u{fffd}')
                            }
                            _ => return Err(format!("bad escape at byte {}", self.i)),
                        };
                        let mut b = [0u8; 4];
                        out.extend_from_slice(ch.encode_utf8(&mut b).as_bytes());
                    }
                    c if c < 0x20 => return Err("control character in a string".into()),
                    c => out.push(c),
                }
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn parses_log_lines() {
            let v = parse(r#"{"event":"hook","worker_pid":12,"signal":null,"ok":true,"a":[1,-2.5e1],"s":"x\"\u0041\n"}"#).unwrap();
            assert_eq!(v.get("event").and_then(Json::as_str), Some("hook"));
            assert_eq!(v.get("worker_pid").and_then(Json::as_f64), Some(12.0));
            assert_eq!(v.get("signal"), Some(&Json::Null));
            assert_eq!(v.get("ok"), Some(&Json::Bool(true)));
            assert_eq!(
                v.get("a"),
                Some(&Json::Array(vec![Json::Number(1.0), Json::Number(-25.0)]))
            );
            assert_eq!(v.get("s").and_then(Json::as_str), Some("x\"A\n"));
            for bad in [
                "{",
                "{\"a\":}",
                "{\"a\":1,}",
                "[1 2]",
                "\"x",
                "{\"a\":1}x",
                "{\"a\":1,\"a\":2}",
            ] {
                assert!(parse(bad).is_err(), "{bad:?}");
            }
        }
    }
}
