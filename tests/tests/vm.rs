//! The VM suite: what `cargo xtask vmtest` runs inside VMs booted on the
//! kernels operators run (Debian's packages), one test binary per VM run,
//! selected by name prefix:
//!
//! - `full_` on 6.1, the oldest kernel the exporter fully supports: exact
//!   counts for sync, gthread and gevent workers, a lifecycle sequence
//!   (HUP, TTIN, TTOU, SIGKILL of a worker, a worker timeout), resources,
//!   queue time, the kernel-info metric;
//! - `smoke_` on 6.12 and 6.18: attach, exact counts (sync), one lifecycle
//!   event (TTIN), the kernel-info metric;
//! - `refuse_` on 5.10, which the exporter must refuse in one clear line.
//!
//! Every test is `#[ignore]`d, so the host suite does not run them: it covers
//! the same ground at length, while these scenarios are cut short for an
//! emulated machine (~10x slower; every exporter start loads its BPF
//! programs for ~15 s). Truth comes from outside the exporter as on the
//! host: Gunicorn's access log, the markers its real hooks write, /proc,
//! tracefs and uname.

use std::{collections::BTreeMap, path::Path, sync::Arc, time::Duration};

use integration_tests::{
    Exporter, Gunicorn, GunicornBuilder, Metrics, Version,
    check::{self, story},
    hooks::{HeldRequest, Rig, send_signal, with_respawn},
    http::{self, Request, Traffic},
    load::{LoadConfig, LoadGen},
    unix_now, wait,
};

const KERNEL_INFO: &str = "gunicorn_exporter_kernel_info";
const QUEUE: &str = "gunicorn_request_queue_seconds";

/// Gunicorn's --timeout in the lifecycle test: long enough that an idle
/// worker of an emulated machine always heartbeats in time (every half of it).
const WORKER_TIMEOUT: &str = "6";

/// How long a held request may take to reach a worker.
const PICKUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Gunicorn 27 with `class` workers (gthread with 2 threads).
fn gunicorn(class: &str, workers: usize) -> GunicornBuilder {
    let b = Gunicorn::builder(Version::V27, class).workers(workers);
    if class == "gthread" { b.threads(2) } else { b }
}

// ------------------------------------------------------------ request counts

/// A short mix: 200s on their own connections, a 404, an app exception's
/// 500, a POST, and (except for sync workers, which close every connection)
/// two requests on one keep-alive connection.
fn short_mix(g: &Gunicorn) -> Traffic {
    let addr = g.addr();
    let mut t = Traffic::default();
    let mut send = |req: Request, status: u16| {
        let what = format!("{} {}", req.method, req.target);
        let r = http::exchange(addr, &req, &mut t)
            .unwrap_or_else(|e| panic!("{what}: {e}\n{}", g.story()));
        assert_eq!(r.status, status, "{what}\n{}", g.story());
    };
    for _ in 0..3 {
        send(Request::get("/ok"), 200);
    }
    send(Request::get("/missing"), 404);
    send(Request::get("/boom"), 500);
    send(Request::post("/echo", vec![b'b'; 5_000]), 200);
    if g.worker_class() != "sync" {
        let rs = http::sequence(
            addr,
            &[Request::get("/ok"), Request::get("/missing")],
            &mut t,
        )
        .unwrap_or_else(|e| panic!("keep-alive pair: {e}\n{}", g.story()));
        let statuses: Vec<u16> = rs.iter().map(|r| r.status).collect();
        assert_eq!(statuses, [200, 404], "keep-alive pair\n{}", g.story());
    }
    t
}

/// Sends the short mix to `g` and checks the exporter's requests per (pid,
/// status, method), failures and bytes against the access log, the error
/// log and the client's counts.
fn mix_is_counted_exactly(g: &Gunicorn, e: &Exporter) {
    let traffic = short_mix(g);
    let (m, records) = check::wait_counted(g, e, traffic.total_responses());
    for status in [200, 404, 500] {
        assert!(
            records.iter().any(|r| r.status == status),
            "harness: no {status} in the access log\n{}",
            story(g, e, Some(&m))
        );
    }
    check::assert_requests_match(g, e, &m, &records);
    check::assert_failures_match(g, e, &m, &records);
    check::assert_bytes_match(g, e, &m, &traffic);
    check::assert_no_kernel_errors(g, e, &m);
}

/// One worker: each booted worker costs seconds of emulated Python, and the
/// host suite covers several.
fn counts_exactly(class: &str) {
    let g = gunicorn(class, 1).start();
    let e = Exporter::attach(&g);
    mix_is_counted_exactly(&g, &e);
}

/// gthread workers (requests on pool threads, keep-alive): exact.
#[test]
#[ignore = "VM suite: run by `cargo xtask vmtest`"]
fn full_gthread_counts_exactly() {
    counts_exactly("gthread");
}

/// gevent workers (non-blocking reads, keep-alive): exact.
#[test]
#[ignore = "VM suite: run by `cargo xtask vmtest`"]
fn full_gevent_counts_exactly() {
    counts_exactly("gevent");
}

// ----------------------------------------------------------------- lifecycle

/// HUP, TTIN, TTOU to the master, SIGKILL to an idle worker, then a request
/// past --timeout: after each step every hook counter equals the markers
/// Gunicorn's hooks wrote, and restart reasons and master signals equal what
/// the test did (see `hooks::Rig::check`).
#[test]
#[ignore = "VM suite: run by `cargo xtask vmtest`"]
fn full_lifecycle_hup_ttin_ttou_kill_timeout() {
    let mut rig = Rig::start(
        gunicorn("sync", 2)
            .arg("--timeout")
            .arg(WORKER_TIMEOUT)
            .start(),
    );
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
    rig.expect_signals("hup", 1);
    rig.expect_restarts("reload", 2);
    rig.check();

    rig.scale_up(master, 3);
    rig.scale_down(master, 2);

    let victim = rig.workers()[0];
    let m = rig.begin("SIGKILL an idle worker");
    send_signal(victim, libc::SIGKILL);
    let new = rig.settle(&m, &with_respawn(&[("child_exit", 1)]), 2);
    assert_eq!(rig.only(&new, "child_exit").worker_pid, Some(victim));
    rig.expect_restarts("killed", 1);
    rig.check();

    let m = rig.begin("GET /sleep?ms=30000 with --timeout 6");
    let held = HeldRequest::send(rig.g.addr(), "/sleep?ms=30000");
    let victim = wait::until("a worker to read the held request", PICKUP_TIMEOUT, || {
        let workers = rig.workers();
        held.reader(&workers)
            .ok_or_else(|| format!("not read yet by any of {workers:?}"))
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", rig.story(None)));
    let got = held
        .read_to_end()
        .unwrap_or_else(|e| panic!("reading the slow request: {e}"));
    rig.timed_out(&m, victim, &got, 2);
    rig.assert_serving();
}

// ------------------------------------------------- resources and queue time

/// What this test reads itself from /proc for one process.
#[derive(Debug)]
struct ProcView {
    rss_bytes: f64,
    cpu_secs: f64,
    threads: f64,
    fds: f64,
}

fn proc_view(pid: u32) -> ProcView {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|e| panic!("reading /proc/{pid}/stat: {e}"));
    let f: Vec<&str> = stat[stat.rfind(')').expect("comm") + 1..]
        .split_whitespace()
        .collect();
    // Fields counted from 1 as in proc(5); f[0] is field 3.
    let n = |field: usize| f[field - 3].parse::<f64>().expect("a number in stat");
    // SAFETY: plain libc calls.
    let (hz, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK) as f64,
            libc::sysconf(libc::_SC_PAGESIZE) as f64,
        )
    };
    ProcView {
        rss_bytes: n(24) * page,
        cpu_secs: (n(14) + n(15)) / hz,
        threads: n(20),
        fds: std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| d.count() as f64)
            .unwrap_or(0.0),
    }
}

/// The one sample of `name` for process `pid`.
fn of_pid(m: &Metrics, name: &str, pid: u32) -> Option<f64> {
    let pid = pid.to_string();
    let found: Vec<f64> = m
        .get(name)
        .filter(|s| s.labels.get("pid") == Some(&pid))
        .map(|s| s.value)
        .collect();
    match found.as_slice() {
        [v] => Some(*v),
        _ => None,
    }
}

/// Sync workers (one connection per request): the short mix is counted
/// exactly; then under TCP load queue time is sampled (some connections
/// waited in the accept queue, none counted twice) and the requests are
/// still exact; every worker's and the master's resource series agree with
/// this test's reads of /proc around the scrape. (One Gunicorn for the
/// three: every exporter start costs ~15 s of BPF loading emulated.)
#[test]
#[ignore = "VM suite: run by `cargo xtask vmtest`"]
fn full_sync_counts_resources_queue_time() {
    let g = gunicorn("sync", 2).start();
    let e = Exporter::attach(&g);
    mix_is_counted_exactly(&g, &e);

    let logged = g.access_log().len() as u64;
    let load = LoadConfig::new(g.addr(), 4, false, Arc::new(|_, _| Request::get("/ok"))).limit(40);
    let result = LoadGen::run(load).unwrap_or_else(|err| panic!("{err}\n{}", g.story()));
    let (_, records) = check::wait_counted(&g, &e, logged + result.traffic.total_responses());
    // Sync workers close every connection: one per access log line.
    let connections = records.len() as f64;
    let m = check::wait_metrics(&g, &e, "queue-time samples", |m| {
        let count = m.sum_all(&format!("{QUEUE}_count"));
        if count > 0.0 {
            Ok(())
        } else {
            Err(format!("{QUEUE}_count is {count}"))
        }
    });
    check::assert_requests_match(&g, &e, &m, &records);
    let queued = m.sum_all(&format!("{QUEUE}_count"));
    assert!(
        queued > 0.0 && queued <= connections,
        "{QUEUE}_count is {queued} after {connections} client connections\n{}{}",
        story(&g, &e, Some(&m)),
        m.lines(&[QUEUE])
    );
    check::assert_histograms_sane(&g, &e, &m, QUEUE);

    let mut pids: Vec<(u32, &str)> = g.worker_pids().into_iter().map(|p| (p, "worker")).collect();
    pids.push((g.master_pid(), "master"));
    let before: BTreeMap<u32, ProcView> = pids.iter().map(|&(p, _)| (p, proc_view(p))).collect();
    let m = e.scrape();
    let now = unix_now();
    for &(pid, kind) in &pids {
        let after = proc_view(pid);
        let b = &before[&pid];
        let get = |what: &str| {
            let name = format!("gunicorn_{kind}_{what}");
            of_pid(&m, &name, pid).unwrap_or_else(|| {
                panic!(
                    "no single {name} sample for {kind} {pid}\n{}{}",
                    story(&g, &e, None),
                    m.lines(&[&format!("gunicorn_{kind}_")])
                )
            })
        };
        let problems: Vec<String> = [
            (
                "memory_bytes",
                get("memory_bytes"),
                (
                    b.rss_bytes.min(after.rss_bytes) * 0.9,
                    b.rss_bytes.max(after.rss_bytes) * 1.1,
                ),
            ),
            (
                "cpu_seconds_total",
                get("cpu_seconds_total"),
                (b.cpu_secs, after.cpu_secs),
            ),
            (
                "uptime_seconds",
                get("uptime_seconds"),
                (0.001, now - g.started_unix() + 1.0),
            ),
            ("threads", get("threads"), (b.threads, after.threads)),
            (
                "open_fds",
                get("open_fds"),
                (b.fds.min(after.fds), b.fds.max(after.fds)),
            ),
        ]
        .into_iter()
        .filter(|(_, v, (low, high))| !(v >= low && v <= high))
        .map(|(what, v, (low, high))| format!("{what} {v}, by /proc {low} .. {high}"))
        .collect();
        assert!(
            problems.is_empty(),
            "{kind} {pid}: {problems:?}\n{}{}",
            story(&g, &e, None),
            m.lines(&[&format!("gunicorn_{kind}_")])
        );
    }
}

// --------------------------------------------------------------- kernel info

/// Whether this kernel has the socket tracepoints the exporter prefers
/// (`sock:sock_send_length`/`sock_recv_length`, Linux 6.3+); without them it
/// hooks syscalls.
fn has_socket_tracepoints() -> bool {
    ["sock_send_length", "sock_recv_length"].iter().all(|t| {
        Path::new("/sys/kernel/tracing/events/sock")
            .join(t)
            .is_dir()
    })
}

/// `gunicorn_exporter_kernel_info{release, hooks} 1`: the release is what
/// uname says, hooks `sockets` where tracefs has the socket tracepoints
/// (6.12, 6.18), `syscalls` where it lacks them (6.1).
fn kernel_info_names_release_and_hooks() {
    let g = gunicorn("sync", 1).start();
    let e = Exporter::attach(&g);
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .expect("reading /proc/sys/kernel/osrelease")
        .trim()
        .to_string();
    let hooks = if has_socket_tracepoints() {
        "sockets"
    } else {
        "syscalls"
    };
    let m = e.scrape();
    let samples: Vec<String> = m
        .get(KERNEL_INFO)
        .map(|s| format!("{:?} {}", s.labels, s.value))
        .collect();
    println!("{KERNEL_INFO} on {release}: {samples:?}");
    assert_eq!(
        m.value(KERNEL_INFO, &[("release", &release), ("hooks", hooks)]),
        Some(1.0),
        "expected {KERNEL_INFO}{{release=\"{release}\",hooks=\"{hooks}\"}} 1, found {samples:?}\n{}",
        story(&g, &e, None)
    );
    assert_eq!(samples.len(), 1, "{KERNEL_INFO}: {samples:?}");
}

#[test]
#[ignore = "VM suite: run by `cargo xtask vmtest`"]
fn full_kernel_info_names_release_and_hooks() {
    kernel_info_names_release_and_hooks();
}

#[test]
#[ignore = "VM suite: run by `cargo xtask vmtest`"]
fn smoke_kernel_info_names_release_and_hooks() {
    kernel_info_names_release_and_hooks();
}

// --------------------------------------------------------------------- smoke

/// Attach (the rig checks the state it starts from), exact counts of a
/// short mix on sync workers, then TTIN: pre_fork, post_fork and
/// post_worker_init counted as the hooks wrote them.
#[test]
#[ignore = "VM suite: run by `cargo xtask vmtest`"]
fn smoke_sync_counts_and_ttin() {
    let mut rig = Rig::start(gunicorn("sync", 2).start());
    mix_is_counted_exactly(&rig.g, &rig.e);

    let m = rig.begin("TTIN");
    send_signal(rig.g.master_pid(), libc::SIGTTIN);
    let new = rig.settle(&m, &with_respawn(&[("nworkers_changed", 1)]), 3);
    let spawned = rig.only(&new, "post_fork").worker_pid;
    assert_eq!(rig.only(&new, "post_worker_init").worker_pid, spawned);
    rig.expect_signals("ttin", 1);
    rig.check();
    rig.assert_serving();
}

// -------------------------------------------------------------------- refuse

/// On a kernel it cannot run on, the exporter exits non-zero with one clear
/// line (`error: unsupported kernel ...: needs Linux ...`, or `error: ... no
/// BTF` on a kernel without BTF, which is checked first), not a verifier dump.
#[test]
#[ignore = "VM suite: run by `cargo xtask vmtest`"]
fn refuse_unsupported_kernel() {
    let g = gunicorn("sync", 1).start();
    let exit = Exporter::builder()
        .pid(g.master_pid())
        .run_to_exit(Duration::from_secs(120));
    let lines: Vec<&str> = exit
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    println!(
        "the exporter on {}: {} with stderr {lines:#?}",
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim(),
        exit.status
    );
    let clear = lines.iter().any(|l| {
        (l.starts_with("error: unsupported kernel") && l.contains("needs Linux"))
            || (l.starts_with("error: ") && l.contains("no BTF"))
    });
    assert!(
        !exit.status.success() && clear && lines.len() < 5,
        "expected a non-zero exit and one clear `error: unsupported kernel ... needs Linux ...` \
         (or `no BTF`) line, at most 4 lines; got {} and {} lines:\n{}\n(command: {})",
        exit.status,
        lines.len(),
        exit.stderr,
        exit.command_line
    );
}
