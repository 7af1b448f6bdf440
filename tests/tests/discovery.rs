//! Discovery (issue 13): without --pid or --pidfile (here `--all`) one
//! exporter watches every Gunicorn master on the host at once. What this
//! proves, with three host Gunicorns (23 sync, 27 gthread, 27 gevent) and one
//! in its own PID and network namespaces inside a cgroup shaped like a
//! kubelet pod's, all running before the exporter, and one more (27 sync)
//! started after it:
//! - each master is found once, with the right identity labels (the pod's
//!   with its container id, pod uid, pid in its namespace and a label copied
//!   from its environment), on every series; their workers, a
//!   `gunicorn --check-config` and a plain Python process (each with a child
//!   of its own command line, as a master has workers) are not;
//! - the master started later is found from the kernel (its exec, then its
//!   first fork), with its labels; a `gunicorn --check-config` and a plain
//!   Python started later, each forking too, are not;
//! - each master's request counts equal its own access log exactly, and its
//!   listen backlog is read in its own network namespace;
//! - a SIGKILL of one master's worker shows in that master's restarts and
//!   hooks only: the others' hooks and counts do not move;
//! - a USR2 of another master: the new master it starts is followed under
//!   its own master_pid (its post_fork and post_worker_init as its markers
//!   say), and the others' hooks do not move;
//! - a master that exits keeps its series for --series-grace (gunicorn_up 0),
//!   then they are gone; the others stay.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use integration_tests::{
    Exporter, Gunicorn, Metrics, Version, access_log, env,
    fixtures::{TestDir, children_of, die_with_parent},
    http::{self, Request, Traffic},
    wait,
};

/// How long a process may take to fork (its import, its workers).
const FORK_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the exporter may take to count what happened.
const COUNT_TIMEOUT: Duration = Duration::from_secs(20);
/// The exporter's --series-grace, short to keep the test fast.
const GRACE_SECS: u64 = 4;
/// The tests' access log format (see `access_log`).
const ACCESS_FORMAT: &str = "%(p)s %(s)s %(m)s %(D)s %(U)s";

/// A child process killed (with its own children) on drop.
struct Proc {
    child: Child,
    what: String,
}

impl Proc {
    fn spawn(what: &str, cmd: &mut Command) -> Proc {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        die_with_parent(cmd);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {what}: {e}"));
        Proc {
            child,
            what: what.into(),
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until `pid` has `n` children; returns them.
    fn wait_children(&self, pid: u32, n: usize) -> Vec<u32> {
        wait::until(&format!("{} to fork {n}", self.what), FORK_TIMEOUT, || {
            let kids = children_of(pid);
            if kids.len() >= n {
                Ok(kids)
            } else {
                Err(format!("children {kids:?}"))
            }
        })
        .unwrap_or_else(|e| panic!("{e}"))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory tree under the cgroup v2 mount, removed (deepest first) on
/// drop once its processes are gone.
struct Cgroup {
    created: Vec<PathBuf>,
}

impl Cgroup {
    fn cgroup2_mount() -> PathBuf {
        let mounts = fs::read_to_string("/proc/mounts").expect("reading /proc/mounts");
        mounts
            .lines()
            .find_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(f[1]))
            })
            .expect("a cgroup v2 hierarchy is mounted")
    }

    fn create(relative: &str) -> (Cgroup, PathBuf) {
        let mut path = Self::cgroup2_mount();
        let mut created = Vec::new();
        for part in relative.split('/').filter(|p| !p.is_empty()) {
            path.push(part);
            if !path.exists() {
                fs::create_dir(&path)
                    .unwrap_or_else(|e| panic!("creating cgroup {}: {e}", path.display()));
                created.push(path.clone());
            }
        }
        (Cgroup { created }, path)
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        for dir in self.created.iter().rev() {
            // Its processes may take a moment to be gone.
            for _ in 0..50 {
                if fs::remove_dir(dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

const POD_UID: &str = "0c6c3a57-95cf-4d4a-9c1c-2f5ad7e1b3f0";

/// A Gunicorn 27 master as a container runtime starts one in a pod: in the
/// cgroup of a containerd container of a burstable pod (systemd driver), in
/// its own PID namespace (where it is pid 1) and network namespace, with
/// POD_NAME in its environment.
struct PodGunicorn {
    // Field order: the processes go before their cgroup.
    _proc: Proc,
    _cgroup: Cgroup,
    dir: TestDir,
    master: u32,
    workers: Vec<u32>,
    container_id: String,
}

impl PodGunicorn {
    fn start() -> PodGunicorn {
        let container_id = format!("{:016x}", std::process::id()).repeat(4);
        let slice = POD_UID.replace('-', "_");
        let (cgroup, dir) = Cgroup::create(&format!(
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{slice}.slice/cri-containerd-{container_id}.scope"
        ));
        let venv = Version::V27.venv();
        // Its access log through a config file (the format's spaces and
        // parentheses would need quoting in the shell lines below).
        let logs = TestDir::new("pod");
        let config = logs.join("pod_conf.py");
        fs::write(
            &config,
            format!(
                "accesslog = {:?}\naccess_log_format = {ACCESS_FORMAT:?}\n",
                logs.join("access.log").display().to_string()
            ),
        )
        .expect("writing the pod's gunicorn config");
        let gunicorn = format!(
            "exec {} -c {} -w 2 -b 127.0.0.1:8000 --chdir {} --no-control-socket app:app",
            venv.join("bin/gunicorn").display(),
            config.display(),
            env::apps_dir().display()
        );
        let inner = format!("ip link set lo up && {gunicorn}");
        let outer = format!(
            "echo $$ > {}/cgroup.procs && exec unshare --pid --net --kill-child sh -c '{inner}'",
            dir.display()
        );
        let proc_ = Proc::spawn(
            "the pod's gunicorn",
            Command::new("sh")
                .args(["-c", &outer])
                .env("POD_NAME", "web-0"),
        );
        // unshare's child is the namespace's pid 1, which execs gunicorn.
        let master = proc_.wait_children(proc_.pid(), 1)[0];
        let workers = proc_.wait_children(master, 2);
        PodGunicorn {
            _proc: proc_,
            _cgroup: cgroup,
            dir: logs,
            master,
            workers,
            container_id,
        }
    }
}

impl PodGunicorn {
    /// Sends `paths` from inside the pod's network namespace (its port is
    /// not reachable from the host's); returns the count of each status.
    fn requests(&self, paths: &[&str]) -> BTreeMap<u16, usize> {
        let script = format!(
            "import urllib.request as r, urllib.error as e\n\
             for p in {paths:?}:\n\
             \x20   try: print(r.urlopen('http://127.0.0.1:8000' + p).status)\n\
             \x20   except e.HTTPError as x: print(x.code)\n"
        );
        let out = Command::new("nsenter")
            .args(["-t", &self.master.to_string(), "-n"])
            .arg(Version::V27.venv().join("bin/python"))
            .args(["-c", &script])
            .output()
            .expect("running a client in the pod's network namespace");
        assert!(
            out.status.success(),
            "the pod's client: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut statuses = BTreeMap::new();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            *statuses.entry(line.parse().expect("a status")).or_default() += 1;
        }
        statuses
    }

    /// Its access log's requests by (status, method): its workers log their
    /// pids in the pod's namespace, which the exporter's labels do not use.
    fn access_counts(&self) -> BTreeMap<Vec<String>, f64> {
        let text = fs::read_to_string(self.dir.join("access.log")).unwrap_or_default();
        let records = access_log::parse(&text).unwrap_or_else(|e| panic!("{e}"));
        let mut out = BTreeMap::new();
        for r in records {
            *out.entry(vec![r.status.to_string(), r.method])
                .or_insert(0.0) += 1.0;
        }
        out
    }
}

/// `watching gunicorn master <pid>: <labels>` lines of the exporter's log, by pid.
fn found_masters(stderr: &str) -> BTreeMap<u32, Vec<String>> {
    let mut found: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for line in stderr.lines() {
        let Some(rest) = line.split_once("watching gunicorn master ").map(|(_, r)| r) else {
            continue;
        };
        let (pid, labels) = rest.split_once(": ").expect("`<pid>: <labels>`");
        found
            .entry(pid.parse().expect("a pid"))
            .or_default()
            .push(labels.to_string());
    }
    found
}

fn python_forking(venv: &Path, args: &[&str], what: &str) -> (Proc, u32) {
    let apps = env::apps_dir();
    let p = Proc::spawn(
        what,
        Command::new(venv.join("bin").join(args[0]))
            .args(&args[1..])
            .current_dir(&apps),
    );
    let child = p.wait_children(p.pid(), 1)[0];
    (p, child)
}

/// The samples of `name` of master `pid`, grouped by `by`.
fn of_master(m: &Metrics, name: &str, pid: u32, by: &[&str]) -> BTreeMap<Vec<String>, f64> {
    let keys: Vec<&str> = std::iter::once("master_pid")
        .chain(by.iter().copied())
        .collect();
    let pid = pid.to_string();
    m.group_by(name, &keys)
        .into_iter()
        .filter(|(key, _)| key[0] == pid)
        .map(|(key, n)| (key[1..].to_vec(), n))
        .collect()
}

/// Whether any sample carries master `pid`'s label.
fn has_master(m: &Metrics, pid: u32) -> bool {
    let pid = pid.to_string();
    m.samples
        .iter()
        .any(|s| s.labels.get("master_pid") == Some(&pid))
}

/// A `gunicorn --daemon` (sync, one worker) started from this test: the
/// process spawned forks and exits; the arbiter, two forks down, writes
/// its pidfile. Stopped (TERM, then KILL of what is left) on drop.
struct Daemon {
    dir: TestDir,
    port: u16,
    pid: u32,
    /// The process spawned, and the session leader it forked.
    starters: [u32; 2],
}

impl Daemon {
    fn start(venv: &Path) -> Daemon {
        let dir = TestDir::new("gunicorn-daemon");
        let port = integration_tests::ports::free_port();
        let apps = env::apps_dir();
        let mut cmd = Command::new(venv.join("bin/gunicorn"));
        cmd.args(["-c", &apps.join("gunicorn_conf.py").display().to_string()])
            .args(["--chdir", &apps.display().to_string()])
            .args(["-b", &format!("127.0.0.1:{port}"), "-w", "1", "-k", "sync"])
            .args(["--daemon", "--no-control-socket"])
            .args(["--pid", &dir.join("pid").display().to_string()])
            .args([
                "--access-logfile",
                &dir.join("access.log").display().to_string(),
            ])
            .args(["--access-logformat", ACCESS_FORMAT])
            .args([
                "--error-logfile",
                &dir.join("error.log").display().to_string(),
            ])
            .arg("app:app")
            .env("GUNICORN_MARKERS", dir.join("markers"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut spawned = cmd.spawn().expect("starting gunicorn --daemon");
        let status = spawned.wait().expect("gunicorn --daemon");
        assert!(status.success(), "gunicorn --daemon: {status}");
        let pidfile = dir.join("pid");
        let pid = wait::until("the daemon's pidfile", FORK_TIMEOUT, || {
            fs::read_to_string(&pidfile)
                .ok()
                .and_then(|t| t.trim().parse::<u32>().ok())
                .filter(|&pid| !children_of(pid).is_empty())
                .ok_or_else(|| "not yet".to_string())
        })
        .unwrap_or_else(|err| panic!("{err}"));
        // Its session's id is the leader's pid (field 6 of stat, after the
        // parenthesised name).
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).expect("the daemon's stat");
        let after_name = stat.rsplit_once(')').expect("stat's name").1;
        let leader = after_name
            .split_whitespace()
            .nth(3)
            .and_then(|f| f.parse().ok());
        Daemon {
            dir,
            port,
            pid,
            starters: [spawned.id(), leader.expect("the daemon's session id")],
        }
    }

    fn addr(&self) -> std::net::SocketAddr {
        ([127, 0, 0, 1], self.port).into()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let workers = children_of(self.pid);
        // SAFETY: plain kill(2) of processes this test started.
        unsafe { libc::kill(self.pid as i32, libc::SIGTERM) };
        let _ = wait::until("the daemon to stop", FORK_TIMEOUT, || {
            if Path::new(&format!("/proc/{}", self.pid)).exists() {
                Err("running".to_string())
            } else {
                Ok(())
            }
        });
        for pid in workers.into_iter().chain([self.pid]) {
            // SAFETY: as above.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
}

/// Requests sent to the later master as soon as it listens.
const EARLY: usize = 6;

/// Sends `n` requests at once, each on its own connection, to 127.0.0.1:`port`
/// as soon as something listens there; how many were answered 200.
fn early_requests(port: u16, n: usize) -> usize {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    // Polled every millisecond (not at wait::until's pace): the clients
    // must be queued before the worker is forked.
    let start = std::time::Instant::now();
    while !integration_tests::fixtures::gunicorn::is_listening(port) {
        assert!(
            start.elapsed() < FORK_TIMEOUT,
            "the later master never listened"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let clients: Vec<_> = (0..n)
        .map(|_| {
            std::thread::spawn(move || {
                http::exchange(addr, &Request::get("/ok"), &mut Traffic::default())
                    .map(|r| r.status)
            })
        })
        .collect();
    clients
        .into_iter()
        .map(|c| c.join().expect("a client"))
        .filter(|r| matches!(r, Ok(200)))
        .count()
}

/// Requests to one host Gunicorn: 200s, 404s and app exceptions (500).
fn host_requests(g: &Gunicorn, ok: usize) {
    let mut t = Traffic::default();
    let paths = std::iter::repeat_n("/ok", ok).chain(["/missing", "/missing", "/boom"]);
    for path in paths {
        http::exchange(g.addr(), &Request::get(path), &mut t)
            .unwrap_or_else(|e| panic!("GET {path}: {e}\n{}", g.story()));
    }
}

/// Waits until the exporter's requests of each host master, by (worker pid,
/// status, method), and of the pod's, by (status, method), equal their
/// access logs, which must hold `logged` lines each (host masters in order).
fn counts_equal_access_logs(
    e: &Exporter,
    hosts: &[&Gunicorn],
    logged: &[usize],
    pod: &PodGunicorn,
) {
    const REQUESTS: &str = "gunicorn_worker_requests_total";
    const ROUTED: &str = "gunicorn_http_requests_total";
    const CONNECTIONS: &str = "gunicorn_connections_total";
    const QUEUED: &str = "gunicorn_request_queue_seconds_count";
    for (g, n) in hosts.iter().zip(logged) {
        let records = g
            .wait_access_log_lines(*n, COUNT_TIMEOUT)
            .unwrap_or_else(|err| panic!("{err}\n{}", g.story()));
        let pid = g.master_pid();
        // A dead worker's series folds into its master's `exited` one
        // (labelled with the master's pid) once --series-grace has passed:
        // a dead worker's requests are compared as its master's.
        let dead_as_master = |key: &Vec<String>| -> Vec<String> {
            let mut key = key.clone();
            if key[0]
                .parse()
                .is_ok_and(|w: u32| !Path::new(&format!("/proc/{w}")).exists())
            {
                key[0] = pid.to_string();
            }
            key
        };
        let folded = |counts: BTreeMap<Vec<String>, f64>| -> BTreeMap<Vec<String>, f64> {
            let mut out = BTreeMap::new();
            for (key, n) in counts {
                *out.entry(dead_as_master(&key)).or_insert(0.0) += n;
            }
            out
        };
        let expected = folded(access_log::counts_by_pid_status_method(&records));
        // By route, summed over the workers: the same requests, its own.
        let mut by_route = BTreeMap::new();
        for (key, n) in &expected {
            *by_route.entry(key[1..].to_vec()).or_insert(0.0) += n;
        }
        wait::until(
            &format!("master {pid}'s requests to equal its access log"),
            COUNT_TIMEOUT,
            || {
                let m = e.scrape();
                let got = folded(of_master(&m, REQUESTS, pid, &["pid", "status", "method"]));
                let routed = of_master(&m, ROUTED, pid, &["status", "method"]);
                // Each request came on a connection of its own (`exchange`),
                // each one timed from its handshake.
                let connections = (
                    of_master(&m, CONNECTIONS, pid, &[]).values().sum::<f64>(),
                    of_master(&m, QUEUED, pid, &[]).values().sum::<f64>(),
                );
                if got == expected && routed == by_route && connections == (*n as f64, *n as f64) {
                    Ok(())
                } else {
                    Err(format!(
                        "exporter {got:?}\naccess log {expected:?}\nby route {routed:?}\naccess log {by_route:?}\n(connections, queued) {connections:?}, requests {n}"
                    ))
                }
            },
        )
        .unwrap_or_else(|err| panic!("{err}\n{}\n{}", e.story(), g.story()));
    }
    let expected = pod.access_counts();
    wait::until(
        "the pod master's requests to equal its access log",
        COUNT_TIMEOUT,
        || {
            let m = e.scrape();
            let got = of_master(&m, REQUESTS, pod.master, &["status", "method"]);
            let routed = of_master(&m, ROUTED, pod.master, &["status", "method"]);
            if got == expected && routed == expected {
                Ok(())
            } else {
                Err(format!("exporter {got:?}\naccess log {expected:?}"))
            }
        },
    )
    .unwrap_or_else(|err| panic!("{err}\n{}", e.story()));
}

/// One exporter in discovery mode over four masters running before it and
/// one started after it: each found once with its labels, counted apart and
/// exactly, undisturbed by another's SIGKILLed worker or USR2, and an exited
/// one's series gone after the grace (see the module's list). One test, in
/// phases, so the five Gunicorns start once.
#[test]
fn watches_every_master_apart() {
    // One after the other: a child dies with the thread that started it
    // (PR_SET_PDEATHSIG), so not from threads that end.
    let hosts = vec![
        Gunicorn::builder(Version::V23, "sync").start(),
        Gunicorn::builder(Version::V27, "gthread")
            .threads(2)
            .start(),
        Gunicorn::builder(Version::V27, "gevent").start(),
    ];
    let pod = PodGunicorn::start();
    let venv = Version::V27.venv();
    let (check, check_child) = python_forking(
        &venv,
        &["gunicorn", "--check-config", "forking_import:app"],
        "gunicorn --check-config",
    );
    let (plain, plain_child) =
        python_forking(&venv, &["python", "forking_import.py"], "a plain python");

    let e = Exporter::builder()
        .arg("--all")
        .arg("--label-from-env")
        .arg("POD_NAME")
        .arg("--series-grace")
        .arg(GRACE_SECS.to_string())
        .start();
    let story = e.story();

    // Who each is: one log line per master, and its labels on every series.
    let found = found_masters(&e.stderr());
    let m = e.scrape();
    let up = |pid: u32| -> Vec<BTreeMap<String, String>> {
        m.get("gunicorn_up")
            .filter(|s| s.labels.get("master_pid") == Some(&pid.to_string()))
            .map(|s| {
                assert_eq!(s.value, 1.0, "gunicorn_up of {pid}\n{}", m.text);
                s.labels.clone().into_iter().collect()
            })
            .collect()
    };
    let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    for g in &hosts {
        let pid = g.master_pid();
        let lines = found
            .get(&pid)
            .unwrap_or_else(|| panic!("master {pid} not found\n{story}\n{}", g.story()));
        assert_eq!(
            lines,
            &[format!("app=\"app:app\" master_pid={pid}")],
            "{story}"
        );
        let pid_text = pid.to_string();
        assert_eq!(
            up(pid),
            [labels(&[
                ("app", "app:app"),
                ("master_pid", &pid_text),
                ("ns_pid", ""),
                ("container_id", ""),
                ("pod_uid", ""),
                ("pod_name", ""),
            ])],
            "{}",
            m.text
        );
    }
    let lines = found
        .get(&pod.master)
        .unwrap_or_else(|| panic!("the pod's master {} not found\n{story}", pod.master));
    assert_eq!(
        lines,
        &[format!(
            "app=\"app:app\" master_pid={} ns_pid=1 container_id={} pod_uid={POD_UID} pod_name=\"web-0\"",
            pod.master, pod.container_id
        )],
        "{story}"
    );
    let pod_pid = pod.master.to_string();
    assert_eq!(
        up(pod.master),
        [labels(&[
            ("app", "app:app"),
            ("master_pid", &pod_pid),
            ("ns_pid", "1"),
            ("container_id", &pod.container_id),
            ("pod_uid", POD_UID),
            ("pod_name", "web-0"),
        ])],
        "{}",
        m.text
    );
    // Each master's listen backlog, read in its own network namespace (the
    // pod's 127.0.0.1:8000 is not the host's).
    let listeners = |pid: u32| -> Vec<String> {
        of_master(&m, "gunicorn_listen_backlog_limit", pid, &["listener"])
            .into_keys()
            .flatten()
            .collect()
    };
    for g in &hosts {
        assert_eq!(
            listeners(g.master_pid()),
            [g.addr().to_string()],
            "{}",
            m.text
        );
    }
    assert_eq!(listeners(pod.master), ["127.0.0.1:8000"], "{}", m.text);
    // Every family of a master carries its labels; the node-wide ones none.
    for s in &m.samples {
        let node_wide = s.name.starts_with("gunicorn_exporter_")
            && s.name != "gunicorn_exporter_unframed_responses_total";
        assert_eq!(
            s.labels.contains_key("master_pid"),
            !node_wide,
            "{} {:?}\n{}",
            s.name,
            s.labels,
            m.text
        );
    }
    let mut never: Vec<(u32, &str)> = vec![
        (check.pid(), "gunicorn --check-config"),
        (check_child, "the check's child"),
        (plain.pid(), "a plain python"),
        (plain_child, "its child"),
    ];
    for g in &hosts {
        never.extend(g.worker_pids().into_iter().map(|w| (w, "a worker")));
    }
    never.extend(pod.workers.iter().map(|&w| (w, "a pod worker")));
    for (pid, what) in never {
        assert!(
            !found.contains_key(&pid) && !has_master(&m, pid),
            "{what} ({pid}) taken for a master\n{story}\n{}",
            m.text
        );
    }

    // A master started after the exporter: seen from the kernel. It preloads
    // the app, and clients wait in its listen queue from the moment it
    // listens: its worker serves them as soon as it is forked, before the
    // exporter has classified the master (the kernel tracks them from that
    // fork, and counts its listener's connections from its listen).
    let late_port = integration_tests::ports::free_port();
    let early = std::thread::spawn(move || early_requests(late_port, EARLY));
    let late = Gunicorn::builder(Version::V27, "sync")
        .port(late_port)
        .arg("--preload")
        .start();
    let early = early.join().expect("the early clients");
    assert_eq!(early, EARLY, "early requests answered\n{}", late.story());
    let late_pid = late.master_pid().to_string();
    wait::until("the later master's gunicorn_up", COUNT_TIMEOUT, || {
        let m = e.scrape();
        let up: Vec<_> = m
            .get("gunicorn_up")
            .filter(|s| s.labels.get("master_pid") == Some(&late_pid))
            .map(|s| (s.labels.get("app").cloned(), s.value))
            .collect();
        match &up[..] {
            [(Some(app), v)] if app == "app:app" && *v == 1.0 => Ok(()),
            _ => Err(format!("{up:?}")),
        }
    })
    .unwrap_or_else(|err| panic!("{err}\n{}\n{}", e.story(), late.story()));
    // Every hook it ran since its exec, its start's and its first workers'
    // (forked before the exporter knew it was a master) included.
    wait::until(
        "the later master's hooks to equal its markers",
        COUNT_TIMEOUT,
        || {
            let want: BTreeMap<String, f64> =
                integration_tests::hooks::marker_counts(&late.markers())
                    .into_iter()
                    .filter(|(_, n)| *n > 0.0)
                    .collect();
            let got: BTreeMap<String, f64> =
                of_master(&e.scrape(), HOOKS, late.master_pid(), &["hook"])
                    .into_iter()
                    .filter(|(_, n)| *n > 0.0)
                    .map(|(hook, n)| (hook.concat(), n))
                    .collect();
            if got == want && want.contains_key("post_worker_init") {
                Ok(())
            } else {
                Err(format!("exporter {got:?}\nmarkers {want:?}"))
            }
        },
    )
    .unwrap_or_else(|err| panic!("{err}\n{}\n{}", e.story(), late.story()));
    let (late_check, late_check_child) = python_forking(
        &venv,
        &["gunicorn", "--check-config", "forking_import:app"],
        "a later gunicorn --check-config",
    );
    let (late_plain, late_plain_child) = python_forking(
        &venv,
        &["python", "forking_import.py"],
        "a later plain python",
    );

    // Each master's requests, counted apart (sent side by side).
    std::thread::scope(|s| {
        for (g, ok) in hosts.iter().chain([&late]).zip([5, 7, 9, 5]) {
            s.spawn(move || host_requests(g, ok));
        }
        let statuses = pod.requests(&["/ok", "/ok", "/ok", "/ok", "/missing"]);
        assert_eq!(statuses, BTreeMap::from([(200, 4), (404, 1)]));
    });
    let host_refs: Vec<&Gunicorn> = hosts.iter().chain([&late]).collect();
    counts_equal_access_logs(&e, &host_refs, &[8, 10, 12, 8 + EARLY], &pod);

    // By now the later forks were long handled: neither is a master.
    let found = found_masters(&e.stderr());
    let m = e.scrape();
    for (pid, what) in [
        (late_check.pid(), "a later gunicorn --check-config"),
        (late_check_child, "its child"),
        (late_plain.pid(), "a later plain python"),
        (late_plain_child, "its child"),
    ] {
        assert!(
            !found.contains_key(&pid) && !has_master(&m, pid),
            "{what} ({pid}) taken for a master\n{}\n{}",
            e.story(),
            m.text
        );
    }

    // SIGKILL of a gthread worker: its master's restarts and hooks only.
    const HOOKS: &str = "gunicorn_hook_events_total";
    const RESTARTS: &str = "gunicorn_master_worker_restart_total";
    let m = e.scrape();
    let before = |pid| {
        (
            of_master(&m, HOOKS, pid, &["hook"]),
            of_master(&m, RESTARTS, pid, &["reason"]),
        )
    };
    let others: Vec<u32> = [
        hosts[0].master_pid(),
        hosts[2].master_pid(),
        late.master_pid(),
        pod.master,
    ]
    .into();
    let others_before: Vec<_> = others.iter().map(|&pid| before(pid)).collect();
    let gthread = &hosts[1];
    let victim = gthread.worker_pids()[0];
    // SAFETY: plain kill(2) of a worker this test started.
    assert_eq!(unsafe { libc::kill(victim as i32, libc::SIGKILL) }, 0);
    wait::until(
        "the gthread master's restart by SIGKILL",
        COUNT_TIMEOUT,
        || {
            let m = e.scrape();
            let restarts: f64 = of_master(&m, RESTARTS, gthread.master_pid(), &[])
                .values()
                .sum();
            let hooks = of_master(&m, HOOKS, gthread.master_pid(), &["hook"]);
            let child_exit = hooks
                .get(&vec!["child_exit".to_string()])
                .copied()
                .unwrap_or(0.0);
            if restarts == 1.0 && child_exit == 1.0 {
                Ok(())
            } else {
                Err(format!("restarts {restarts}, hooks {hooks:?}"))
            }
        },
    )
    .unwrap_or_else(|err| panic!("{err}\n{}\n{}", e.story(), gthread.story()));
    // Wait for the replacement's post_fork, then more requests everywhere.
    wait::until("the replacement worker to boot", COUNT_TIMEOUT, || {
        let (workers, booted) = (gthread.worker_pids(), gthread.booted_workers());
        match workers.iter().all(|w| booted.contains(w)) && !workers.contains(&victim) {
            true => Ok(()),
            false => Err(format!("workers {workers:?}, booted {booted:?}")),
        }
    })
    .unwrap_or_else(|err| panic!("{err}\n{}", gthread.story()));
    std::thread::scope(|s| {
        for &g in &host_refs {
            s.spawn(move || host_requests(g, 2));
        }
        pod.requests(&["/ok"]);
    });
    counts_equal_access_logs(&e, &host_refs, &[13, 15, 17, 13 + EARLY], &pod);
    let m = e.scrape();
    for (pid, (hooks, restarts)) in others.iter().zip(&others_before) {
        assert_eq!(
            (
                &of_master(&m, HOOKS, *pid, &["hook"]),
                &of_master(&m, RESTARTS, *pid, &["reason"])
            ),
            (hooks, restarts),
            "master {pid}'s hooks or restarts moved\n{}",
            m.text
        );
    }

    // USR2 of the gevent master: the new master under its own labels.
    let m = e.scrape();
    let others: Vec<u32> = [
        hosts[0].master_pid(),
        hosts[1].master_pid(),
        late.master_pid(),
        pod.master,
    ]
    .into();
    let others_before: Vec<_> = others
        .iter()
        .map(|&pid| of_master(&m, HOOKS, pid, &["hook"]))
        .collect();
    let gevent = &hosts[2];
    let old = gevent.master_pid();
    // SAFETY: plain kill(2) of a master this test started.
    assert_eq!(unsafe { libc::kill(old as i32, libc::SIGUSR2) }, 0);
    let new_master = wait::until("the new master's on_starting marker", COUNT_TIMEOUT, || {
        gevent
            .markers()
            .iter()
            .find(|mk| mk.hook == "on_starting" && mk.pid != old)
            .map(|mk| mk.pid)
            .ok_or_else(|| "not yet".to_string())
    })
    .unwrap_or_else(|err| panic!("{err}\n{}", gevent.story()));
    let new_text = new_master.to_string();
    wait::until(
        "the new master's workers, under its labels",
        COUNT_TIMEOUT,
        || {
            let markers = gevent.markers();
            let marked = |hook: &str| {
                markers
                    .iter()
                    .filter(|mk| mk.hook == hook && mk.worker_pid.is_some())
                    .filter(|mk| integration_tests::fixtures::ppid_of(mk.pid) == Some(new_master))
                    .count() as f64
            };
            let m = e.scrape();
            let hooks = of_master(&m, HOOKS, new_master, &["hook"]);
            let got = |hook: &str| hooks.get(&vec![hook.to_string()]).copied().unwrap_or(0.0);
            let up = m
                .get("gunicorn_up")
                .find(|s| s.labels.get("master_pid") == Some(&new_text))
                .map(|s| (s.labels.get("app").cloned(), s.value));
            let want = (marked("post_fork"), marked("post_worker_init"));
            if up == Some((Some("app:app".into()), 1.0))
                && want == (2.0, 2.0)
                && (got("post_fork"), got("post_worker_init")) == want
            {
                Ok(())
            } else {
                Err(format!("up {up:?}, hooks {hooks:?}, markers {want:?}"))
            }
        },
    )
    .unwrap_or_else(|err| panic!("{err}\n{}\n{}", e.story(), gevent.story()));
    let m = e.scrape();
    for (pid, hooks) in others.iter().zip(&others_before) {
        assert_eq!(
            &of_master(&m, HOOKS, *pid, &["hook"]),
            hooks,
            "master {pid}'s hooks moved with another's USR2\n{}",
            m.text
        );
    }

    // A master that exits: its series for the grace (up 0), then none.
    drop(host_refs);
    let mut hosts = hosts;
    let gone = hosts.remove(0);
    let gone_pid = gone.master_pid();
    drop(gone);
    let exited = std::time::Instant::now();
    let pid_text = gone_pid.to_string();
    wait::until("the exited master's gunicorn_up 0", COUNT_TIMEOUT, || {
        let m = e.scrape();
        match m
            .get("gunicorn_up")
            .find(|s| s.labels.get("master_pid") == Some(&pid_text))
        {
            Some(s) if s.value == 0.0 => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .unwrap_or_else(|err| panic!("{err}\n{}", e.story()));
    wait::until("the exited master's series to end", COUNT_TIMEOUT, || {
        if has_master(&e.scrape(), gone_pid) {
            Err("still there".into())
        } else {
            Ok(())
        }
    })
    .unwrap_or_else(|err| panic!("{err}\n{}", e.story()));
    let after = exited.elapsed();
    assert!(
        after >= Duration::from_secs(GRACE_SECS - 1),
        "the series ended {after:?} after the exit, before the {GRACE_SECS} s grace"
    );
    let m = e.scrape();
    for pid in [hosts[0].master_pid(), hosts[1].master_pid(), pod.master] {
        assert_eq!(
            m.get("gunicorn_up")
                .find(|s| s.labels.get("master_pid") == Some(&pid.to_string()))
                .map(|s| s.value),
            Some(1.0),
            "master {pid}\n{}",
            m.text
        );
    }

    // A later `gunicorn --daemon`: the process exec'd forks a session
    // leader and exits, which forks the arbiter and exits. Only the arbiter
    // is a master; its requests are counted.
    let daemon = Daemon::start(&venv);
    let app = counted_from_the_first(
        &e,
        "the daemon",
        daemon.addr(),
        daemon.pid,
        &daemon.dir.join("access.log"),
    );
    assert_eq!(app, "app:app", "the daemon's app label\n{}", e.story());
    let found = found_masters(&e.stderr());
    assert!(
        found.contains_key(&daemon.pid),
        "the daemon's arbiter: {found:?}"
    );
    for pid in daemon.starters {
        assert!(
            !found.contains_key(&pid),
            "{pid}, which started the daemon, taken for a master: {found:?}\n{}",
            e.story()
        );
    }
}

/// A custom `BaseApplication` script run directly (its program is named
/// after the script, neither `python*` nor `gunicorn*`), started after an
/// exporter given `--match`: every exec is then a candidate, and the script
/// is found at its first fork, its requests counted from the first.
#[test]
fn a_custom_script_started_later_is_found_with_match() {
    let dir = TestDir::new("custom-script");
    let port = integration_tests::ports::free_port();
    let name = format!("serve-{}", std::process::id());
    let script = dir.join(&name);
    let log = dir.join("access.log");
    fs::write(
        &script,
        format!(
            "#!{python}
import sys
sys.path.insert(0, {apps:?})
from gunicorn.app.base import BaseApplication
from app import app

class Custom(BaseApplication):
    def load_config(self):
        for key, value in {{'bind': '127.0.0.1:{port}', 'workers': 1,
                           'accesslog': {log:?}, 'access_log_format': {ACCESS_FORMAT:?}}}.items():
            self.cfg.set(key, value)

    def load(self):
        return app

Custom().run()
",
            python = Version::V23.venv().join("bin/python").display(),
            apps = env::apps_dir().display().to_string(),
            log = log.display().to_string(),
        ),
    )
    .expect("writing the script");
    let mut perms = fs::metadata(&script).expect("the script").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    fs::set_permissions(&script, perms).expect("chmod the script");

    let e = Exporter::builder().arg("--match").arg(&name).start();
    let master = Proc::spawn("the custom script", &mut Command::new(&script));
    let pid = master.pid();
    master.wait_children(pid, 1);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    wait::until("the script to listen", FORK_TIMEOUT, || {
        integration_tests::fixtures::gunicorn::is_listening(port)
            .then_some(())
            .ok_or_else(|| "not yet".to_string())
    })
    .unwrap_or_else(|err| panic!("{err}"));
    counted_from_the_first(&e, "the script", addr, pid, &log);
}

/// Sends 3 requests to the master `pid` started after `e` (`what`, serving
/// at `addr`), and waits until `e` shows it up with its requests by (worker,
/// status, method) equal to its access log at `log`; its app label.
fn counted_from_the_first(
    e: &Exporter,
    what: &str,
    addr: std::net::SocketAddr,
    pid: u32,
    log: &Path,
) -> String {
    for _ in 0..3 {
        http::exchange(addr, &Request::get("/ok"), &mut Traffic::default())
            .unwrap_or_else(|err| panic!("GET /ok from {what}: {err}"));
    }
    let pid_text = pid.to_string();
    wait::until(
        &format!("{what}'s requests to equal its access log"),
        COUNT_TIMEOUT,
        || {
            let m = e.scrape();
            let up = m
                .get("gunicorn_up")
                .find(|s| s.labels.get("master_pid") == Some(&pid_text))
                .map(|s| (s.labels.get("app").cloned().unwrap_or_default(), s.value));
            let got = of_master(
                &m,
                "gunicorn_worker_requests_total",
                pid,
                &["pid", "status", "method"],
            );
            let text = fs::read_to_string(log).unwrap_or_default();
            let want = access_log::counts_by_pid_status_method(
                &access_log::parse(&text).expect("an access log"),
            );
            match up {
                Some((app, 1.0)) if got == want && want.values().sum::<f64>() == 3.0 => Ok(app),
                _ => Err(format!("up {up:?}, exporter {got:?}, access log {want:?}")),
            }
        },
    )
    .unwrap_or_else(|err| panic!("{err}\n{}", e.story()))
}
