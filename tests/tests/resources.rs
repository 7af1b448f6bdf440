//! Worker and master resources (memory, CPU, uptime, threads, descriptors,
//! context switches) and listen backlogs, against real Gunicorns. Truth comes
//! from outside the exporter: what the app says it did (the 200 MB /alloc
//! holds, the 1.5 s of CPU /cpu burns), this test's own reads of /proc, the
//! `--backlog` passed to Gunicorn, and the number of clients kept waiting.

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use integration_tests::{
    Exporter, Gunicorn, Metrics, TestDir, Version,
    check::story,
    http::{self, Request},
    load::{LoadConfig, LoadGen, Script},
    ports, wait,
};

const MEMORY: &str = "gunicorn_worker_memory_bytes";
const MASTER_MEMORY: &str = "gunicorn_master_memory_bytes";
const CPU: &str = "gunicorn_worker_cpu_seconds_total";
const MASTER_CPU: &str = "gunicorn_master_cpu_seconds_total";
const CPU_PERCENT: &str = "gunicorn_worker_cpu_percent";
const MASTER_CPU_PERCENT: &str = "gunicorn_master_cpu_percent";
const UPTIME: &str = "gunicorn_worker_uptime_seconds";
const MASTER_UPTIME: &str = "gunicorn_master_uptime_seconds";
const THREADS: &str = "gunicorn_worker_threads";
const MASTER_THREADS: &str = "gunicorn_master_threads";
const FDS: &str = "gunicorn_worker_open_fds";
const MASTER_FDS: &str = "gunicorn_master_open_fds";
const SWITCHES: &str = "gunicorn_worker_context_switches_total";
const MASTER_SWITCHES: &str = "gunicorn_master_context_switches_total";
const BACKLOG: &str = "gunicorn_listen_backlog";
const BACKLOG_LIMIT: &str = "gunicorn_listen_backlog_limit";

const MIB: f64 = 1024.0 * 1024.0;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a loaded server may take to show a waiting connection.
const BACKLOG_TIMEOUT: Duration = Duration::from_secs(20);

// ------------------------------------------------------- truth from /proc

/// What this test reads itself from /proc/<pid>/stat.
#[derive(Clone, Copy, Debug)]
struct ProcStat {
    cpu_secs: f64,
    threads: u64,
    start_secs: f64,
    rss_bytes: f64,
}

fn sysconf(name: libc::c_int) -> f64 {
    // SAFETY: plain libc call.
    unsafe { libc::sysconf(name) as f64 }
}

fn proc_stat(pid: u32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let f: Vec<&str> = text[text.rfind(')')? + 1..].split_whitespace().collect();
    let n = |field: usize| f.get(field - 3)?.parse::<f64>().ok();
    let hz = sysconf(libc::_SC_CLK_TCK);
    Some(ProcStat {
        cpu_secs: (n(14)? + n(15)?) / hz,
        threads: n(20)? as u64,
        start_secs: n(22)? / hz,
        rss_bytes: n(24)? * sysconf(libc::_SC_PAGESIZE),
    })
}

/// VmRSS from /proc/<pid>/status, in bytes.
fn vm_rss(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<f64>().ok()? * 1024.0)
}

fn open_fds(pid: u32) -> Option<f64> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as f64)
}

/// The main thread's voluntary context switches (the process has at least these).
fn leader_voluntary_switches(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text
        .lines()
        .find(|l| l.starts_with("voluntary_ctxt_switches:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Seconds since boot (CLOCK_BOOTTIME: the clock of /proc's start times).
fn boot_secs() -> f64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
}

fn somaxconn() -> u32 {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(4096)
}

// --------------------------------------------------------- metric queries

/// The one sample of `name` for process `pid` (and `kind`, when given).
fn of_pid(m: &Metrics, name: &str, pid: u32, kind: Option<&str>) -> Option<f64> {
    let pid = pid.to_string();
    let mut found = m.get(name).filter(|s| {
        s.labels.get("pid") == Some(&pid) && s.labels.get("kind").map(String::as_str) == kind
    });
    let first = found.next()?.value;
    assert!(
        found.next().is_none(),
        "{name}: several samples for pid {pid}\n{}",
        m.lines(&[name])
    );
    Some(first)
}

fn listener(m: &Metrics, name: &str, label: &str) -> Option<f64> {
    m.value(name, &[("listener", label)])
}

/// Scrapes until `label`'s backlog holds connections; returns their number
/// and that scrape.
fn backlog_filled(e: &Exporter, label: &str, what: &str) -> Result<(f64, Metrics), String> {
    wait::until(what, BACKLOG_TIMEOUT, || {
        let m = e.scrape();
        match listener(&m, BACKLOG, label) {
            Some(v) if v > 0.0 => Ok((v, m)),
            other => Err(format!("{BACKLOG} {other:?}")),
        }
    })
}

fn resource_lines(m: &Metrics) -> String {
    m.lines(&[
        "gunicorn_worker_memory",
        "gunicorn_master_memory",
        "gunicorn_worker_cpu",
        "gunicorn_master_cpu",
        "gunicorn_worker_uptime",
        "gunicorn_master_uptime",
        "gunicorn_worker_threads",
        "gunicorn_master_threads",
        "gunicorn_worker_open_fds",
        "gunicorn_master_open_fds",
        "gunicorn_worker_context",
        "gunicorn_master_context",
        "gunicorn_listen_backlog",
    ])
}

fn fail_story(g: &Gunicorn, e: &Exporter, m: &Metrics) -> String {
    format!(
        "{}--- resource metric lines:\n{}",
        story(g, e, None),
        resource_lines(m)
    )
}

/// Scrapes, and the moments just before and just after.
fn timed_scrape(e: &Exporter) -> (Metrics, Instant, Instant) {
    let before = Instant::now();
    let m = e.scrape();
    (m, before, Instant::now())
}

/// `GET target` over TCP, expecting 200; returns the body.
fn get_ok(g: &Gunicorn, target: &str) -> String {
    let (status, body) = http::get(g.addr(), target, REQUEST_TIMEOUT)
        .unwrap_or_else(|err| panic!("GET {target}: {err}\n{}", g.story()));
    assert_eq!(status, 200, "GET {target}\n{}", g.story());
    body
}

// ------------------------------------------------- HTTP over a unix socket

/// `clients` threads each sending `target` over the unix socket in a loop
/// (at most `per_client` requests) until stopped.
struct UnixLoad {
    stop: Arc<AtomicBool>,
    handles: Vec<thread::JoinHandle<Result<u64, String>>>,
}

impl UnixLoad {
    fn start(path: &Path, target: &str, clients: usize, per_client: u64) -> UnixLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let handles = (0..clients)
            .map(|_| {
                let (path, target, stop) = (path.to_path_buf(), target.to_string(), stop.clone());
                thread::spawn(move || {
                    let mut done = 0;
                    while done < per_client && !stop.load(Ordering::SeqCst) {
                        let (status, _) = http::unix_get(&path, &target, REQUEST_TIMEOUT)?;
                        if status != 200 {
                            return Err(format!("GET {target} over unix: status {status}"));
                        }
                        done += 1;
                    }
                    Ok(done)
                })
            })
            .collect();
        UnixLoad { stop, handles }
    }

    /// Stops the clients (each finishes its request); the responses they got.
    fn stop(mut self) -> Result<u64, String> {
        self.stop.store(true, Ordering::SeqCst);
        let mut total = 0;
        for h in std::mem::take(&mut self.handles) {
            total += h
                .join()
                .map_err(|_| "a unix client panicked".to_string())??;
        }
        Ok(total)
    }
}

impl Drop for UnixLoad {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

// ------------------------------------------------------------------ tests

/// A worker that allocates 200 MB (and holds it) shows ~200 MB more RSS at the
/// very next scrape, taken while no request is in flight; the other worker
/// does not move.
#[test]
fn memory_shows_a_held_allocation_at_the_next_scrape() {
    let g = Gunicorn::builder(Version::V27, "sync").workers(2).start();
    let e = Exporter::attach(&g);
    let workers = g.worker_pids();
    let before = e.scrape();
    for &w in &workers {
        assert!(
            of_pid(&before, MEMORY, w, None).is_some_and(|v| v > 0.0),
            "no memory for worker {w}\n{}",
            fail_story(&g, &e, &before)
        );
    }

    let body = get_ok(&g, "/alloc?mb=200&hold=30");
    let pid: u32 = body
        .strip_prefix("allocated pid=")
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("/alloc answered {body:?}\n{}", g.story()));
    assert!(
        workers.contains(&pid),
        "/alloc ran in {pid}, not one of {workers:?}"
    );

    let after = e.scrape();
    let own = vm_rss(pid);
    let rise = of_pid(&after, MEMORY, pid, None).unwrap_or(f64::NAN)
        - of_pid(&before, MEMORY, pid, None).unwrap_or(f64::NAN);
    assert!(
        (rise / (200.0 * MIB) - 1.0).abs() <= 0.15,
        "worker {pid} allocated and holds 200 MiB; its RSS rose by {:.1} MiB (own VmRSS now {:.1} MiB)\n{}",
        rise / MIB,
        own.unwrap_or(f64::NAN) / MIB,
        fail_story(&g, &e, &after)
    );
    let exported = of_pid(&after, MEMORY, pid, None).unwrap();
    let own = own.expect("the allocating worker's VmRSS");
    assert!(
        (exported - own).abs() <= 0.05 * own,
        "worker {pid}: exported RSS {exported} vs VmRSS {own}\n{}",
        fail_story(&g, &e, &after)
    );
    for &other in workers.iter().filter(|&&w| w != pid) {
        let moved = of_pid(&after, MEMORY, other, None).unwrap_or(f64::NAN)
            - of_pid(&before, MEMORY, other, None).unwrap_or(f64::NAN);
        assert!(
            moved.abs() < 20.0 * MIB,
            "worker {other} allocated nothing but its RSS moved by {:.1} MiB\n{}",
            moved / MIB,
            fail_story(&g, &e, &after)
        );
    }
}

/// A worker that burns 1.5 s of CPU in /cpu shows 1.5 s more CPU seconds
/// (within 10%) at the next scrape; its cpu_percent is that CPU over the time
/// between the two scrapes; the other worker stays idle.
#[test]
fn cpu_seconds_follow_a_busy_loop() {
    let g = Gunicorn::builder(Version::V27, "sync").workers(2).start();
    let e = Exporter::attach(&g);
    let workers = g.worker_pids();
    let own_before: Vec<f64> = workers
        .iter()
        .map(|&w| proc_stat(w).expect("worker stat").cpu_secs)
        .collect();
    let (m0, t0a, t0b) = timed_scrape(&e);

    assert_eq!(get_ok(&g, "/cpu?ms=1500"), "done");

    let (m1, t1a, t1b) = timed_scrape(&e);
    let own_after: Vec<f64> = workers
        .iter()
        .map(|&w| proc_stat(w).expect("worker stat").cpu_secs)
        .collect();
    // The worker that ran the loop, by this test's own reading of /proc.
    let (busy, own_delta) = workers
        .iter()
        .zip(own_before.iter().zip(&own_after))
        .map(|(&w, (b, a))| (w, a - b))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap();
    assert!(
        own_delta >= 1.4,
        "no worker used 1.5 s of CPU by /proc: {own_before:?} -> {own_after:?}\n{}",
        g.story()
    );

    let cpu = |m: &Metrics, pid| of_pid(m, CPU, pid, None).unwrap_or(f64::NAN);
    let delta = cpu(&m1, busy) - cpu(&m0, busy);
    assert!(
        (delta - 1.5).abs() <= 0.15,
        "worker {busy} burned 1.5 s of CPU; its cpu_seconds_total rose by {delta:.3} s (by /proc: {own_delta:.3} s)\n{}",
        fail_story(&g, &e, &m1)
    );
    assert!(
        delta <= own_delta + 0.011 && delta >= own_delta - 0.1,
        "worker {busy}: exported CPU delta {delta:.3} s vs /proc around the scrapes {own_delta:.3} s\n{}",
        fail_story(&g, &e, &m1)
    );
    for &other in workers.iter().filter(|&&w| w != busy) {
        let idle = cpu(&m1, other) - cpu(&m0, other);
        assert!(
            idle < 0.15,
            "idle worker {other} gained {idle:.3} CPU seconds\n{}",
            fail_story(&g, &e, &m1)
        );
    }

    // The exporter's interval lies between these two (its clock reads happen
    // inside the scrapes).
    let shortest = t1a.duration_since(t0b).as_secs_f64();
    let longest = t1b.duration_since(t0a).as_secs_f64();
    let percent = of_pid(&m1, CPU_PERCENT, busy, None).unwrap_or(f64::NAN);
    let (low, high) = (delta / longest * 100.0, delta / shortest * 100.0);
    assert!(
        percent >= low * 0.99 && percent <= high * 1.01,
        "worker {busy}: cpu_percent {percent:.2}, expected {low:.2}..{high:.2} ({delta:.3} s of CPU in {shortest:.3}..{longest:.3} s)\n{}",
        fail_story(&g, &e, &m1)
    );
}

/// One sync worker busy 200 ms per request and 10 concurrent clients: the
/// connections waiting for it show in gunicorn_listen_backlog, and the limit
/// is gunicorn's --backlog.
#[test]
fn listen_backlog_rises_under_load_and_limit_is_the_backlog() {
    let g = Gunicorn::builder(Version::V23, "sync")
        .workers(1)
        .arg("--backlog")
        .arg("64")
        .start();
    let e = Exporter::attach(&g);
    let label = format!("127.0.0.1:{}", g.port());
    let idle = e.scrape();
    assert_eq!(
        (
            listener(&idle, BACKLOG, &label),
            listener(&idle, BACKLOG_LIMIT, &label)
        ),
        (Some(0.0), Some(64.0)),
        "idle listener {label}: backlog 0, limit --backlog 64\n{}",
        fail_story(&g, &e, &idle)
    );

    let script: Script = Arc::new(|_, _| Request::get("/sleep?ms=200"));
    let load = LoadGen::start(LoadConfig::new(g.addr(), 10, false, script).limit(100));
    let seen = backlog_filled(&e, &label, "connections waiting in the accept queue");
    let result = load.stop();
    let (waiting, m) = seen.unwrap_or_else(|err| {
        panic!("{err}\n{}", story(&g, &e, None));
    });
    result.unwrap_or_else(|err| panic!("{err}\n{}", g.story()));
    assert!(
        waiting <= 10.0,
        "{waiting} connections waiting, but only 10 clients\n{}",
        fail_story(&g, &e, &m)
    );
    assert_eq!(
        listener(&m, BACKLOG_LIMIT, &label),
        Some(64.0),
        "limit under load\n{}",
        fail_story(&g, &e, &m)
    );
}

/// A Gunicorn that also binds a unix socket: requests over it work, its
/// listener is exported as `unix:<path>` with the --backlog as limit, clients
/// kept waiting on it show in its backlog, and the worker's resources are there.
#[test]
fn unix_socket_listener_has_backlog_and_resources() {
    let sock_dir = TestDir::new("unix-bind");
    let path: PathBuf = sock_dir.join("gunicorn.sock");
    let g = Gunicorn::builder(Version::V27, "sync")
        .workers(1)
        .arg("--backlog")
        .arg("32")
        .arg("-b")
        .arg(format!("unix:{}", path.display()))
        .start();
    let e = Exporter::attach(&g);
    let label = format!("unix:{}", path.display());

    let (status, body) = http::unix_get(&path, "/ok", REQUEST_TIMEOUT)
        .unwrap_or_else(|err| panic!("{err}\n{}", g.story()));
    assert_eq!(
        (status, body.as_slice()),
        (200, b"ok".as_slice()),
        "{}",
        g.story()
    );

    let idle = e.scrape();
    assert_eq!(
        (
            listener(&idle, BACKLOG, &label),
            listener(&idle, BACKLOG_LIMIT, &label)
        ),
        (Some(0.0), Some(32.0)),
        "idle unix listener: backlog 0, limit --backlog 32\n{}",
        fail_story(&g, &e, &idle)
    );
    let tcp = format!("127.0.0.1:{}", g.port());
    assert_eq!(
        listener(&idle, BACKLOG_LIMIT, &tcp),
        Some(32.0),
        "{}",
        fail_story(&g, &e, &idle)
    );
    let worker = g.worker_pids()[0];
    let rss = of_pid(&idle, MEMORY, worker, None).unwrap_or(f64::NAN);
    let own = vm_rss(worker).unwrap_or(f64::NAN);
    assert!(
        (rss - own).abs() <= 0.05 * own,
        "worker {worker}: exported RSS {rss} vs VmRSS {own}\n{}",
        fail_story(&g, &e, &idle)
    );

    let load = UnixLoad::start(&path, "/sleep?ms=200", 10, 10);
    let seen = backlog_filled(&e, &label, "connections waiting on the unix socket");
    let result = load.stop();
    let (waiting, m) = seen.unwrap_or_else(|err| panic!("{err}\n{}", story(&g, &e, None)));
    let answered = result.unwrap_or_else(|err| panic!("{err}\n{}", g.story()));
    assert!(
        answered > 0,
        "no request over the unix socket was answered\n{}",
        g.story()
    );
    assert!(
        waiting <= 10.0,
        "{waiting} waiting, but only 10 clients\n{}",
        fail_story(&g, &e, &m)
    );
    assert_eq!(
        listener(&m, BACKLOG_LIMIT, &label),
        Some(32.0),
        "{}",
        fail_story(&g, &e, &m)
    );
}

/// Every resource metric of every worker and of the master agrees with this
/// test's own reads of /proc around the scrape; the listeners are exactly the
/// ones Gunicorn binds (IPv4 and IPv6), with gunicorn's default backlog.
fn resources_match_proc(g: Gunicorn) {
    let e = Exporter::attach(&g);
    let workers = g.worker_pids();
    let master = g.master_pid();
    let mut pids: Vec<(u32, bool)> = workers.iter().map(|&w| (w, true)).collect();
    pids.push((master, false));

    let before: Vec<(ProcStat, f64, f64)> = pids
        .iter()
        .map(|&(p, _)| {
            (
                proc_stat(p).expect("stat"),
                open_fds(p).expect("fds"),
                leader_voluntary_switches(p).expect("switches"),
            )
        })
        .collect();
    let boot_before = boot_secs();
    let m = e.scrape();
    let boot_after = boot_secs();
    let after: Vec<(ProcStat, f64)> = pids
        .iter()
        .map(|&(p, _)| (proc_stat(p).expect("stat"), open_fds(p).expect("fds")))
        .collect();
    let cores = thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let within = |v: f64, a: f64, b: f64| v >= a.min(b) && v <= a.max(b);

    for (i, &(pid, is_worker)) in pids.iter().enumerate() {
        let names = if is_worker {
            [MEMORY, CPU, CPU_PERCENT, UPTIME, THREADS, FDS, SWITCHES]
        } else {
            [
                MASTER_MEMORY,
                MASTER_CPU,
                MASTER_CPU_PERCENT,
                MASTER_UPTIME,
                MASTER_THREADS,
                MASTER_FDS,
                MASTER_SWITCHES,
            ]
        };
        let [memory, cpu, percent, uptime, threads, fds, switches] = names;
        let get = |name: &str, kind: Option<&str>| {
            of_pid(&m, name, pid, kind).unwrap_or_else(|| {
                panic!(
                    "no {name} for pid {pid} (kind {kind:?})\n{}",
                    fail_story(&g, &e, &m)
                )
            })
        };
        let (b, b_fds, b_switches) = before[i];
        let (a, a_fds) = after[i];
        let what = if is_worker { "worker" } else { "master" };
        let check = |ok: bool, msg: String| {
            assert!(ok, "{what} {pid}: {msg}\n{}", fail_story(&g, &e, &m));
        };
        let rss = get(memory, None);
        check(
            (rss - a.rss_bytes).abs() <= 0.05 * a.rss_bytes.max(b.rss_bytes),
            format!("RSS {rss} vs /proc {} .. {}", b.rss_bytes, a.rss_bytes),
        );
        let c = get(cpu, None);
        check(
            within(c, b.cpu_secs, a.cpu_secs),
            format!("CPU {c} s vs /proc {} .. {}", b.cpu_secs, a.cpu_secs),
        );
        let p = get(percent, None);
        check(
            (0.0..=100.0 * cores + 1.0).contains(&p),
            format!("cpu_percent {p}"),
        );
        let up = get(uptime, None);
        // /proc's start times have a resolution of one clock tick.
        let (up_low, up_high) = (
            boot_before - a.start_secs - 0.02,
            boot_after - a.start_secs + 0.02,
        );
        check(
            (up_low..=up_high).contains(&up),
            format!("uptime {up} s, by /proc {up_low:.3} .. {up_high:.3} s"),
        );
        let t = get(threads, None);
        check(
            within(t, b.threads as f64, a.threads as f64),
            format!("threads {t} vs /proc {} .. {}", b.threads, a.threads),
        );
        let f = get(fds, None);
        check(
            within(f, b_fds, a_fds),
            format!("open fds {f} vs /proc {b_fds} .. {a_fds}"),
        );
        let voluntary = get(switches, Some("voluntary"));
        let involuntary = get(switches, Some("involuntary"));
        check(
            voluntary >= b_switches && involuntary >= 0.0,
            format!(
                "context switches voluntary {voluntary} (main thread alone had {b_switches}), involuntary {involuntary}"
            ),
        );
        if is_worker {
            let id = m
                .get(memory)
                .find(|s| s.labels.get("pid") == Some(&pid.to_string()))
                .and_then(|s| s.labels.get("worker_id").cloned())
                .unwrap_or_default();
            check(id.starts_with("worker_"), format!("worker_id {id:?}"));
        }
    }
    assert_eq!(
        m.get(MEMORY).count(),
        workers.len(),
        "one memory series per worker {workers:?}\n{}",
        fail_story(&g, &e, &m)
    );

    // Listeners: exactly those bound, each with gunicorn's default --backlog.
    let limit = 2048u32.min(somaxconn()) as f64;
    let mut labels: Vec<String> = m
        .get(BACKLOG_LIMIT)
        .filter_map(|s| s.labels.get("listener").cloned())
        .collect();
    labels.sort();
    let v6 = m
        .get(BACKLOG_LIMIT)
        .filter_map(|s| s.labels.get("listener"))
        .find(|l| l.starts_with("[::1]:"))
        .cloned()
        .unwrap_or_default();
    let mut expected = vec![format!("127.0.0.1:{}", g.port()), v6.clone()];
    expected.sort();
    assert!(
        !v6.is_empty() && labels == expected,
        "listeners {labels:?}\n{}",
        fail_story(&g, &e, &m)
    );
    for l in &labels {
        assert_eq!(
            (listener(&m, BACKLOG, l), listener(&m, BACKLOG_LIMIT, l)),
            (Some(0.0), Some(limit)),
            "idle listener {l}\n{}",
            fail_story(&g, &e, &m)
        );
    }
}

/// gunicorn 27 gthread (threads in the worker) bound to 127.0.0.1 and [::1].
#[test]
fn gthread_27_resources_match_proc() {
    let v6 = format!("[::1]:{}", ports::free_port());
    resources_match_proc(
        Gunicorn::builder(Version::V27, "gthread")
            .workers(2)
            .threads(4)
            .arg("-b")
            .arg(v6)
            .start(),
    );
}

/// gunicorn 23 eventlet bound to 127.0.0.1 and [::1].
#[test]
fn eventlet_23_resources_match_proc() {
    let v6 = format!("[::1]:{}", ports::free_port());
    resources_match_proc(
        Gunicorn::builder(Version::V23, "eventlet")
            .workers(2)
            .arg("-b")
            .arg(v6)
            .start(),
    );
}
