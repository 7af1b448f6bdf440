//! Lifecycle (issue 3): the hooks Gunicorn runs, why its workers restart, the
//! signals its master handles, worker states and requests cut short by a
//! worker's death, as the exporter reports them from the kernel.
//!
//! Truth is the marker file the real hooks of `tests/apps/gunicorn_conf.py`
//! write, Gunicorn's error and access logs, /proc and the test's own actions.
//! Each step acts, waits until Gunicorn's side is over (the expected markers
//! appeared, the workers are back and booted), then polls the exporter until
//! every hook counter equals the markers written since it attached, the restart
//! reasons and master signals equal what the test did, every living worker has
//! its three state series (the dead worker's existed at the step's start, as the
//! previous check saw) and no series of a dead worker outlives the grace
//! period. Every test ends by checking that the exporter still runs and serves.

use std::time::{Duration, Instant};

use integration_tests::{
    Gunicorn, GunicornBuilder, TestDir, Version,
    hooks::{
        self, HOOK_ACTIONS, HOOK_EVENTS, HeldRequest, Rig, UP, by_label, json, send_signal,
        status_of, table, wait_file, with_respawn,
    },
    http::{self, Request, Traffic},
    wait,
};

/// How long a held request may take to reach a worker.
const PICKUP_TIMEOUT: Duration = Duration::from_secs(20);

/// Gunicorn 27 with `class` workers (gthread with 2 threads).
fn gunicorn(class: &str, workers: usize) -> GunicornBuilder {
    let b = Gunicorn::builder(Version::V27, class).workers(workers);
    if class == "gthread" { b.threads(2) } else { b }
}

/// The worker that read `held` (from /proc), waiting for it.
fn reader_of(rig: &Rig, held: &HeldRequest) -> u32 {
    wait::until("a worker to read the held request", PICKUP_TIMEOUT, || {
        let workers = rig.workers();
        held.reader(&workers)
            .ok_or_else(|| format!("not read yet by any of {workers:?}"))
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", rig.story(None)))
}

/// Core dumps of the crashing workers would land in the app directory.
fn no_core_dumps() {
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_CORE, &mut r) == 0 {
            r.rlim_cur = 0;
            libc::setrlimit(libc::RLIMIT_CORE, &r);
        }
    }
}

// ---------------------------------------------------------------------------
// HUP, TTIN, TTOU to the master; QUIT to a worker.

fn master_signals_and_worker_quit(class: &str) {
    let mut rig = Rig::start(gunicorn(class, 2).start());
    let master = rig.g.master_pid();

    let m = rig.begin("HUP");
    send_signal(master, libc::SIGHUP);
    rig.settle(
        &m,
        &[
            ("nworkers_changed", 1),
            ("on_reload", 1),
            ("pre_fork", 2),
            ("post_fork", 2),
            ("post_worker_init", 2),
            ("worker_exit", 2),
            ("child_exit", 2),
        ],
        2,
    );
    let now = rig.workers();
    assert!(
        now.iter().all(|p| !m.workers.contains(p)),
        "HUP should have replaced every worker: before {:?}, after {now:?}\n{}",
        m.workers,
        rig.story(None)
    );
    rig.expect_signals("hup", 1);
    rig.expect_restarts("reload", 2);
    rig.check();

    rig.scale_up(master, 3);
    rig.scale_down(master, 2);

    let victim = rig.workers()[0];
    let m = rig.begin("QUIT a worker");
    send_signal(victim, libc::SIGQUIT);
    let new = rig.settle(
        &m,
        &with_respawn(&[("worker_int", 1), ("worker_exit", 1), ("child_exit", 1)]),
        2,
    );
    assert_eq!(rig.only(&new, "worker_int").worker_pid, Some(victim));
    rig.expect_restarts("graceful", 1);
    rig.check();
    rig.assert_serving();
}

#[test]
fn master_signals_and_worker_quit_sync() {
    master_signals_and_worker_quit("sync");
}

#[test]
fn master_signals_and_worker_quit_gthread() {
    master_signals_and_worker_quit("gthread");
}

// ---------------------------------------------------------------------------
// A busy worker SIGKILLed (its request is lost), then a busy worker TERMed
// (it is quitting until its request is answered).

fn busy_worker_killed_then_terminated(class: &str) {
    let mut rig = Rig::start(gunicorn(class, 2).start());

    let m = rig.begin("SIGKILL a worker serving /sleep?ms=5000");
    let held = HeldRequest::send(rig.g.addr(), "/sleep?ms=5000");
    let victim = reader_of(&rig, &held);
    send_signal(victim, libc::SIGKILL);
    let got = held
        .read_to_end()
        .unwrap_or_else(|e| panic!("reading the held request: {e}"));
    assert!(
        got.is_empty(),
        "the killed worker answered: {:?}",
        String::from_utf8_lossy(&got)
    );
    let failed = [(victim, "worker_killed", 1.0)];
    rig.check_requests(&[victim], &failed);
    let new = rig.settle(&m, &with_respawn(&[("child_exit", 1)]), 2);
    assert_eq!(rig.only(&new, "child_exit").worker_pid, Some(victim));
    rig.recheck_requests(&[victim], &failed);
    rig.expect_restarts("killed", 1);
    rig.check();

    let m = rig.begin("SIGTERM a worker serving /sleep?ms=4000");
    let held = HeldRequest::send(rig.g.addr(), "/sleep?ms=4000");
    let victim = reader_of(&rig, &held);
    send_signal(victim, libc::SIGTERM);
    // Graceful: it finishes the request first, quitting meanwhile.
    rig.wait_state(victim, "quitting");
    let got = held
        .read_to_end()
        .unwrap_or_else(|e| panic!("reading the held request: {e}"));
    assert_eq!(
        status_of(&got),
        Some(200),
        "the terminated worker's answer: {:?}",
        String::from_utf8_lossy(&got)
    );
    rig.check_requests(&[victim], &[]);
    let new = rig.settle(
        &m,
        &with_respawn(&[("worker_exit", 1), ("child_exit", 1)]),
        2,
    );
    assert_eq!(rig.only(&new, "worker_exit").worker_pid, Some(victim));
    rig.recheck_requests(&[victim], &[]);
    rig.expect_restarts("graceful", 1);
    rig.check();
    rig.assert_serving();
}

#[test]
fn busy_worker_killed_then_terminated_sync() {
    busy_worker_killed_then_terminated("sync");
}

#[test]
fn busy_worker_killed_then_terminated_gthread() {
    busy_worker_killed_then_terminated("gthread");
}

// ---------------------------------------------------------------------------
// A worker that segfaults, then one that calls os.abort(), mid-request.

fn worker_crashes(class: &str) {
    no_core_dumps();
    let mut rig = Rig::start(gunicorn(class, 2).start());
    for (route, what) in [
        ("/segv", "a worker segfaults"),
        ("/crash", "a worker calls os.abort()"),
    ] {
        let m = rig.begin(what);
        let held = HeldRequest::send(rig.g.addr(), route);
        let got = held
            .read_to_end()
            .unwrap_or_else(|e| panic!("reading GET {route}: {e}"));
        assert!(
            got.is_empty(),
            "GET {route} was answered: {:?}",
            String::from_utf8_lossy(&got)
        );
        let dead = wait::until("the crashed worker to be gone", PICKUP_TIMEOUT, || {
            m.workers
                .iter()
                .copied()
                .find(|p| !hooks::alive(*p))
                .ok_or_else(|| format!("all of {:?} alive", m.workers))
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", rig.story(None)));
        let failed = [(dead, "worker_crash", 1.0)];
        rig.check_requests(&[dead], &failed);
        let new = rig.settle(&m, &with_respawn(&[("child_exit", 1)]), 2);
        assert_eq!(rig.only(&new, "child_exit").worker_pid, Some(dead));
        rig.recheck_requests(&[dead], &failed);
        rig.expect_restarts("crash", 1);
        rig.check();
    }
    rig.assert_serving();
}

#[test]
fn worker_crashes_sync() {
    worker_crashes("sync");
}

#[test]
fn worker_crashes_gthread() {
    worker_crashes("gthread");
}

// ---------------------------------------------------------------------------
// A request past --timeout: the master aborts the worker.

/// Gunicorn's --timeout in these tests: short, but long enough that an idle
/// worker of a machine busy with the rest of the suite is not timed out too.
const TIMEOUT: &str = "4";

#[test]
fn worker_timeout_sync() {
    let mut rig = Rig::start(gunicorn("sync", 1).arg("--timeout").arg(TIMEOUT).start());
    let victim = rig.workers()[0];
    let m = rig.begin("GET /sleep?ms=15000 with --timeout 4");
    let held = HeldRequest::send(rig.g.addr(), "/sleep?ms=15000");
    let got = held
        .read_to_end()
        .unwrap_or_else(|e| panic!("reading the slow request: {e}"));
    // Gunicorn 27's sync worker still answers the aborted request (500): it
    // failed by timeout, not as an ordinary 5xx (nor as anything else).
    rig.timed_out(&m, victim, &got, 1);
    rig.assert_serving();
}

/// A gthread worker heartbeats from its main thread while a pool thread runs
/// the request, so a merely slow request never times out: /block stalls the
/// whole process (it holds the GIL) until the test releases it, after the
/// master has decided to abort the worker.
#[test]
fn worker_timeout_gthread() {
    let mut rig = Rig::start(gunicorn("gthread", 1).arg("--timeout").arg(TIMEOUT).start());
    let victim = rig.workers()[0];
    let release = rig.path("release");
    let m = rig.begin("GET /block (whole worker stalled) with --timeout 4");
    let held = HeldRequest::send(
        rig.g.addr(),
        &format!("/block?ms=60000&until={}", release.display()),
    );
    let line = format!("WORKER TIMEOUT (pid:{victim})");
    wait_file(
        &rig.g.error_log_path(),
        &format!("{line:?} in the error log"),
        hooks::SETTLE_TIMEOUT,
        |t| t.contains(&line),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", rig.story(None)));
    // SIGABRT is delivered (Python's C-level handler ran) but the hook cannot
    // run while the GIL is held: the exporter must show the worker aborting.
    rig.wait_state(victim, "aborting");
    std::fs::write(&release, b"").expect("creating the release file");
    let got = held
        .read_to_end()
        .unwrap_or_else(|e| panic!("reading the blocked request: {e}"));
    // The pool thread answers once released, before the main thread runs the
    // abort handler: an answered request (counted by its status), or an
    // unanswered/5xx one that failed by timeout.
    rig.timed_out(&m, victim, &got, 1);
    rig.assert_serving();
}

// ---------------------------------------------------------------------------
// --max-requests 3.

fn max_requests(class: &str) {
    let mut rig = Rig::start(gunicorn(class, 1).arg("--max-requests").arg("3").start());
    let victim = rig.workers()[0];
    let m = rig.begin("3 requests with --max-requests 3");
    let mut traffic = Traffic::default();
    for i in 0..3 {
        let r = http::exchange(rig.g.addr(), &Request::get("/ok").close(), &mut traffic)
            .unwrap_or_else(|e| panic!("request {i}: {e}\n{}", rig.story(None)));
        assert_eq!(r.status, 200, "request {i}");
    }
    rig.check_requests(&[victim], &[]);
    let new = rig.settle(
        &m,
        &with_respawn(&[("worker_exit", 1), ("child_exit", 1)]),
        1,
    );
    assert_eq!(rig.only(&new, "worker_exit").worker_pid, Some(victim));
    rig.recheck_requests(&[victim], &[]);
    rig.expect_restarts("max_requests", 1);
    rig.check();
    rig.assert_serving();
}

#[test]
fn max_requests_sync() {
    max_requests("sync");
}

#[test]
fn max_requests_gthread() {
    max_requests("gthread");
}

// ---------------------------------------------------------------------------
// USR2 (re-exec a new master), TERM the old one, then TTIN the new one.

fn usr2_then_term(class: &str) {
    let mut rig = Rig::start(gunicorn(class, 2).start());
    let old = rig.g.master_pid();

    let m = rig.begin("USR2");
    send_signal(old, libc::SIGUSR2);
    let new_master = wait::until(
        "the new master's on_starting marker",
        hooks::SETTLE_TIMEOUT,
        || {
            rig.markers_since(&m)
                .iter()
                .find(|mk| mk.hook == "on_starting")
                .map(|mk| mk.pid)
                .ok_or_else(|| "not yet".to_string())
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", rig.story(None)));
    rig.add_master(new_master);
    rig.settle(
        &m,
        &[
            ("pre_exec", 1),
            ("nworkers_changed", 1),
            ("on_starting", 1),
            ("when_ready", 1),
            ("pre_fork", 2),
            ("post_fork", 2),
            ("post_worker_init", 2),
        ],
        4,
    );
    rig.expect_signals("usr2", 1);
    rig.check();

    let m = rig.begin("TERM the old master");
    send_signal(old, libc::SIGTERM);
    rig.settle(
        &m,
        &[("worker_exit", 2), ("child_exit", 2), ("on_exit", 1)],
        2,
    );
    rig.wait_master_gone(old);
    rig.expect_signals("term", 1);
    rig.expect_restarts("graceful", 2);
    rig.check(); // gunicorn_up stays 1: the new master is followed

    let m = rig.begin("TTIN the new master");
    send_signal(new_master, libc::SIGTTIN);
    rig.settle(&m, &with_respawn(&[("nworkers_changed", 1)]), 3);
    rig.expect_signals("ttin", 1);
    rig.check();
    rig.assert_serving();
}

#[test]
fn usr2_then_term_sync() {
    usr2_then_term("sync");
}

#[test]
fn usr2_then_term_gthread() {
    usr2_then_term("gthread");
}

// ---------------------------------------------------------------------------
// INT to the master: shutdown.

fn master_int(class: &str) {
    let mut rig = Rig::start(gunicorn(class, 2).start());
    let master = rig.g.master_pid();
    let m = rig.begin("INT the master");
    send_signal(master, libc::SIGINT);
    // child_exit is left out of what to wait for: the master may exit
    // without reaping; the comparison below uses whatever the markers say.
    rig.settle(
        &m,
        &[("worker_int", 2), ("worker_exit", 2), ("on_exit", 1)],
        0,
    );
    rig.wait_master_gone(master);
    let child_exits = rig
        .markers_since(&m)
        .iter()
        .filter(|mk| mk.hook == "child_exit")
        .count();
    eprintln!("child_exit markers at shutdown: {child_exits} of 2");
    rig.expect_up(false);
    rig.expect_signals("int", 1);
    rig.expect_restarts("graceful", 2);
    rig.check();
    rig.assert_serving();
}

#[test]
fn master_int_sync() {
    master_int("sync");
}

#[test]
fn master_int_gthread() {
    master_int("gthread");
}

// ---------------------------------------------------------------------------
// --pidfile: the master exits, is started again, and is re-attached.

#[test]
fn pidfile_reattach() {
    let shared = TestDir::new("pidfile");
    let pidfile = shared.join("gunicorn.pid");
    let first = gunicorn("sync", 1)
        .arg("--pid")
        .arg(pidfile.display().to_string())
        .start();
    let mut rig = Rig::start_with(first, Some(&pidfile), |_, b| b);
    let master = rig.g.master_pid();

    let m = rig.begin("TERM the master");
    send_signal(master, libc::SIGTERM);
    rig.settle(&m, &[("worker_exit", 1), ("on_exit", 1)], 0);
    rig.wait_master_gone(master);
    rig.expect_up(false);
    rig.expect_signals("term", 1);
    rig.expect_restarts("graceful", 1);
    rig.check();

    let second = gunicorn("sync", 2)
        .arg("--pid")
        .arg(pidfile.display().to_string())
        .start();
    let ready = Instant::now();
    let second_master = second.master_pid();
    drop(rig.replace_gunicorn(second));
    rig.expect_up(true);
    let workers = rig.workers();
    let m = wait::until("the exporter to re-attach through the pidfile", Duration::from_secs(5), || {
        let m = rig.e.try_scrape()?;
        let up = m.value(UP, &[]);
        let pids: std::collections::BTreeSet<u32> = m
            .get(hooks::WORKER_STATE)
            .filter_map(|s| s.labels.get("pid")?.parse().ok())
            .collect();
        if up == Some(1.0) && pids.iter().copied().eq(workers.iter().copied()) {
            Ok(m)
        } else {
            Err(format!("{UP} {up:?}, worker_state pids {pids:?} (workers of {second_master}: {workers:?})"))
        }
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", rig.story(None)));
    eprintln!(
        "re-attached {:.1} s after the new master was ready",
        ready.elapsed().as_secs_f64()
    );
    // What the exporter saw of the new master's start depends on when it
    // re-attached: from here on, compare deltas.
    rig.rebase(&m);
    rig.check();

    let m = rig.begin("TTIN the new master");
    send_signal(second_master, libc::SIGTTIN);
    rig.settle(&m, &with_respawn(&[("nworkers_changed", 1)]), 3);
    rig.expect_signals("ttin", 1);
    rig.check();
    rig.assert_serving();
}

// ---------------------------------------------------------------------------
// --on HOOK=COMMAND.

#[test]
fn hook_actions() {
    let record = |dir: &TestDir| {
        format!(
            "printf '%s|%s|%s|%s|%s|%s\\n' \"$GUNICORN_HOOK\" \"$GUNICORN_MASTER_PID\" \
             \"$GUNICORN_WORKER_PID\" \"$GUNICORN_SIGNAL\" \"$GUNICORN_EXIT_STATUS\" \
             \"$GUNICORN_REASON\" >> '{}'",
            dir.join("actions").display()
        )
    };
    let g = gunicorn("sync", 2).start();
    let mut rig = Rig::start_with(g, None, |dir, b| {
        b.arg("--on")
            .arg(format!("worker_int={}", record(dir)))
            .arg("--on")
            .arg(format!("worker_exit={}", record(dir)))
            .arg("--on")
            .arg(format!("child_exit={}; exit 3", record(dir)))
            .arg("--on")
            .arg("post_fork=exec sleep 30")
            .arg("--on-timeout")
            .arg("1")
    });
    let master = rig.g.master_pid();
    let victim = rig.workers()[0];
    let m = rig.begin("QUIT a worker");
    send_signal(victim, libc::SIGQUIT);
    rig.settle(
        &m,
        &with_respawn(&[("worker_int", 1), ("worker_exit", 1), ("child_exit", 1)]),
        2,
    );
    rig.expect_restarts("graceful", 1);
    rig.check();

    let want: std::collections::BTreeMap<String, f64> = [
        ("worker_int ok", 1.0),
        ("worker_exit ok", 1.0),
        ("child_exit failed", 1.0),
        ("post_fork timeout", 1.0),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let mut last = None;
    let r = wait::until(
        "the hook actions to be counted",
        Duration::from_secs(15),
        || {
            let m = rig.e.try_scrape()?;
            let got: std::collections::BTreeMap<String, f64> = m
                .group_by(HOOK_ACTIONS, &["hook", "result"])
                .into_iter()
                .filter(|(_, v)| *v != 0.0)
                .map(|(k, v)| (k.join(" "), v))
                .collect();
            let (same, t) = table("hook result", "exporter", &got, "expected", &want);
            last = Some(m);
            if same { Ok(()) } else { Err(format!("\n{t}")) }
        },
    );
    if let Err(e) = r {
        panic!("{e}\n{}", rig.story(last.as_ref()));
    }

    let path = rig.path("actions");
    let text = wait_file(&path, "three action lines", Duration::from_secs(10), |t| {
        t.lines().count() >= 3
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", rig.story(None)));
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort_unstable();
    assert_eq!(lines.len(), 3, "action lines: {lines:#?}");
    assert_eq!(
        lines[0].split('|').take(3).collect::<Vec<_>>(),
        ["child_exit", &master.to_string(), &victim.to_string()],
        "child_exit action env: {lines:#?}"
    );
    assert_eq!(
        lines[1],
        format!("worker_exit|{master}|{victim}||0|graceful"),
        "worker_exit action env: {lines:#?}"
    );
    assert_eq!(
        lines[2],
        format!("worker_int|{master}|{victim}|quit||"),
        "worker_int action env: {lines:#?}"
    );
    rig.assert_serving();
}

// ---------------------------------------------------------------------------
// --log-format json: one JSON object per line, hook lines with their fields.

#[test]
fn json_hook_logs() {
    let g = gunicorn("sync", 2).start();
    let mut rig = Rig::start_with(g, None, |_, b| b.arg("--log-format").arg("json"));
    let master = rig.g.master_pid();
    let victim = rig.workers()[0];
    let m = rig.begin("QUIT a worker");
    send_signal(victim, libc::SIGQUIT);
    let new = rig.settle(
        &m,
        &with_respawn(&[("worker_int", 1), ("worker_exit", 1), ("child_exit", 1)]),
        2,
    );
    let spawned = rig
        .only(&new, "post_fork")
        .worker_pid
        .expect("post_fork names its worker");
    rig.expect_restarts("graceful", 1);
    let metrics = rig.check();
    let counted = by_label(&metrics, HOOK_EVENTS, "hook");

    let stderr = rig.e.stderr();
    let mut hooks_logged: std::collections::BTreeMap<String, f64> =
        counted.keys().map(|h| (h.clone(), 0.0)).collect();
    let mut by_hook: std::collections::BTreeMap<String, Vec<json::Json>> = Default::default();
    for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
        let v = json::parse(line).unwrap_or_else(|e| {
            panic!(
                "stderr line is not JSON ({e}): {line:?}\n{}",
                rig.story(None)
            )
        });
        assert!(
            matches!(v, json::Json::Object(_)),
            "stderr line is not a JSON object: {line:?}"
        );
        if v.get("event").and_then(json::Json::as_str) == Some("hook") {
            let hook = v
                .get("hook")
                .and_then(json::Json::as_str)
                .unwrap_or_else(|| panic!("hook line without hook: {line:?}"))
                .to_string();
            for field in [
                "master_pid",
                "worker_pid",
                "signal",
                "exit_status",
                "reason",
            ] {
                assert!(
                    v.get(field).is_some(),
                    "hook line without {field}: {line:?}"
                );
            }
            *hooks_logged.entry(hook.clone()).or_default() += 1.0;
            by_hook.entry(hook).or_default().push(v);
        }
    }
    let (same, t) = table("hook", "log lines", &hooks_logged, "counted", &counted);
    assert!(
        same,
        "JSON hook lines differ from {HOOK_EVENTS}:\n{t}\n{}",
        rig.story(Some(&metrics))
    );

    let one = |hook: &str| -> &json::Json {
        let v = by_hook.get(hook).map(Vec::as_slice).unwrap_or_default();
        assert!(
            v.len() == 1,
            "expected one {hook} line, found {}:\n{stderr}",
            v.len()
        );
        &v[0]
    };
    let num = |v: &json::Json, f: &str| v.get(f).and_then(json::Json::as_f64);
    let text = |v: &json::Json, f: &str| v.get(f).and_then(json::Json::as_str).map(str::to_string);
    let int = one("worker_int");
    assert_eq!(
        (
            num(int, "master_pid"),
            num(int, "worker_pid"),
            text(int, "signal")
        ),
        (
            Some(master as f64),
            Some(victim as f64),
            Some("quit".into())
        ),
        "worker_int: {int:?}"
    );
    let exit = one("worker_exit");
    assert_eq!(
        (
            num(exit, "master_pid"),
            num(exit, "worker_pid"),
            num(exit, "exit_status"),
            text(exit, "reason")
        ),
        (
            Some(master as f64),
            Some(victim as f64),
            Some(0.0),
            Some("graceful".into())
        ),
        "worker_exit: {exit:?}"
    );
    let reaped = one("child_exit");
    assert_eq!(
        (num(reaped, "master_pid"), num(reaped, "worker_pid")),
        (Some(master as f64), Some(victim as f64)),
        "child_exit: {reaped:?}"
    );
    for hook in ["pre_fork", "post_fork", "post_worker_init"] {
        let v = one(hook);
        assert_eq!(
            (num(v, "master_pid"), num(v, "worker_pid")),
            (Some(master as f64), Some(spawned as f64)),
            "{hook}: {v:?}"
        );
    }
    rig.assert_serving();
}
