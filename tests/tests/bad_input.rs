//! Bad input: the exporter refuses what it cannot work with, fast, with one
//! specific `error:` line on stderr and a non-zero exit; and a worker's PID is
//! resolved to its master.

use std::{
    net::{Ipv4Addr, TcpListener},
    path::Path,
    process::{Child, Command, Stdio},
    thread,
    time::Duration,
};

use integration_tests::{
    Exporter, ExporterExit, Gunicorn, TestDir, Version,
    check::{self, WORKERS, story},
    fixtures::exporter::binary_for_nobody,
    http::{self, Request, Traffic},
};

/// How long a refusing exporter may take to exit.
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

/// Panics unless the run failed with a single `error:` line on stderr that
/// mentions one of `keywords` (case-insensitive).
fn assert_refused(exit: &ExporterExit, keywords: &[&str]) {
    let lines: Vec<&str> = exit
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    let context = format!(
        "command: {}\nexit: {}\nstderr:\n{}\nstdout:\n{}",
        exit.command_line, exit.status, exit.stderr, exit.stdout
    );
    assert!(
        !exit.status.success(),
        "the exporter should have failed\n{context}"
    );
    assert_eq!(
        lines.len(),
        1,
        "stderr should be exactly one line\n{context}"
    );
    assert!(
        lines[0].starts_with("error:"),
        "stderr should start with `error:`\n{context}"
    );
    let lower = lines[0].to_lowercase();
    assert!(
        keywords.iter().any(|k| lower.contains(k)),
        "the error should say one of {keywords:?}\n{context}"
    );
}

/// A child killed and reaped on drop.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `--pid` of a process that no longer exists (a child that exited and was
/// reaped): "no process".
#[test]
fn missing_pid_is_refused() {
    let mut child = Command::new("true").spawn().expect("spawning true");
    let pid = child.id();
    child.wait().expect("waiting for true");
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "harness: pid {pid} was reused already"
    );
    let exit = Exporter::builder().pid(pid).run_to_exit(EXIT_TIMEOUT);
    assert_refused(&exit, &["no process"]);
}

/// `--pid` of a process that is not Gunicorn (`sleep`): "not a gunicorn".
#[test]
fn non_gunicorn_pid_is_refused() {
    let sleeper = Guard(
        Command::new("sleep")
            .arg("1000")
            .stdin(Stdio::null())
            .spawn()
            .expect("spawning sleep"),
    );
    let exit = Exporter::builder()
        .pid(sleeper.0.id())
        .run_to_exit(EXIT_TIMEOUT);
    assert_refused(&exit, &["not a gunicorn"]);
}

/// Run as an unprivileged user (uid 65534, no capabilities) against a real
/// Gunicorn master: a "permission"/"privilege" error.
#[test]
fn no_privileges_is_refused() {
    let g = Gunicorn::builder(Version::V27, "sync").workers(1).start();
    let dir = TestDir::new("nobody");
    let exit = Exporter::builder()
        .binary(binary_for_nobody(&dir))
        .wrapper(&[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ])
        .pid(g.master_pid())
        .run_to_exit(EXIT_TIMEOUT);
    assert_refused(&exit, &["permission", "privilege"]);
}

/// `--port` that another socket already listens on: "in use".
#[test]
fn port_in_use_is_refused() {
    let g = Gunicorn::builder(Version::V27, "sync").workers(1).start();
    let taken = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("binding a port");
    let port = taken.local_addr().expect("local addr").port();
    let exit = Exporter::builder()
        .pid(g.master_pid())
        .port(port)
        .run_to_exit(EXIT_TIMEOUT);
    assert_refused(&exit, &["in use"]);
    drop(taken);
}

/// `--pid` of a worker: the exporter attaches to its master (a notice on stderr
/// names the master and its pid) and reports both of the master's workers, with
/// their pids and ages, and `gunicorn_workers` = 2.
#[test]
fn worker_pid_resolves_to_the_master() {
    let g = Gunicorn::builder(Version::V27, "sync").workers(2).start();
    let workers = g.worker_pids();
    assert_eq!(
        workers.len(),
        2,
        "harness: workers {workers:?}\n{}",
        g.story()
    );
    let e = Exporter::builder().pid(workers[0]).start();
    let master = g.master_pid().to_string();
    let stderr = e.stderr();
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("master")
                && l.split(|c: char| !c.is_ascii_digit()).any(|w| w == master)),
        "no stderr notice naming the master and its pid {master}\n{}",
        story(&g, &e, None)
    );

    // Two concurrent slow requests: each sync worker takes one, so both serve.
    let addr = g.addr();
    let clients: Vec<_> = (0..2)
        .map(|_| {
            thread::spawn(move || {
                let mut t = Traffic::default();
                http::exchange(addr, &Request::get("/sleep?ms=300"), &mut t).map(|_| t)
            })
        })
        .collect();
    let mut t = Traffic::default();
    for c in clients {
        let r = c.join().expect("client thread");
        t.merge(&r.unwrap_or_else(|err| panic!("request: {err}\n{}", g.story())));
    }
    let (m, records) = check::wait_counted(&g, &e, t.total_responses());
    let served: std::collections::BTreeSet<u32> = records.iter().map(|r| r.pid).collect();
    assert_eq!(
        served.into_iter().collect::<Vec<_>>(),
        workers,
        "harness: both workers should have served one request\n{}",
        story(&g, &e, Some(&m))
    );
    check::assert_requests_match(&g, &e, &m, &records);
    check::assert_worker_labels(&g, &e, &m);
    let alive = m.sum_all(WORKERS);
    assert_eq!(
        alive,
        2.0,
        "{WORKERS} should be 2\n{}",
        story(&g, &e, Some(&m))
    );
    check::assert_no_kernel_errors(&g, &e, &m);
}
