//! `cargo xtask demo`: build, start a sample Gunicorn (gunicorn27 venv, 2 sync
//! workers) and the exporter attached to its master, drive some traffic, show
//! the request metrics, then keep a light load going until Ctrl-C (or
//! `--duration`). Both children are stopped on exit, Ctrl-C included; their
//! output goes to files under target/demo/ so the terminal stays readable.

use std::{
    fs::{self},
    net::{SocketAddr, TcpListener},
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use clap::Args;
use integration_tests::http;

use crate::{
    background::BackgroundProcess, build, commands, exporter_bin, target_dir, test_apps_dir, venv,
    venv_dir,
};

#[derive(Debug, Args)]
pub struct Options {
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long, value_name = "SECS")]
    pub duration: Option<u64>,
    /// Port the exporter serves /metrics on (127.0.0.1).
    #[arg(long, default_value_t = 9091)]
    pub port: u16,
    /// Port the sample Gunicorn listens on (127.0.0.1).
    #[arg(long, default_value_t = 8000)]
    pub app_port: u16,
}

/// The metric lines shown after the first burst of traffic.
const SHOWN_METRICS: &[&str] = &[
    "gunicorn_worker_requests_total",
    "gunicorn_worker_failed_requests_total",
    "gunicorn_worker_request_duration_seconds_count",
    "gunicorn_worker_busy_seconds_total",
    "gunicorn_hook_events_total{hook=\"post_fork\"}",
    "gunicorn_workers",
];
const GUNICORN_READY_TIMEOUT: Duration = Duration::from_secs(30);
const EXPORTER_READY_TIMEOUT: Duration = Duration::from_secs(60);
const FIRST_TRAFFIC: Duration = Duration::from_secs(3);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

static STOP: AtomicBool = AtomicBool::new(false);

fn stopped() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// Sleep `d`, waking early on Ctrl-C; false when stopped.
fn sleep_unless_stopped(d: Duration) -> bool {
    let end = Instant::now() + d;
    while !stopped() {
        let now = Instant::now();
        if now >= end {
            return true;
        }
        thread::sleep((end - now).min(Duration::from_millis(100)));
    }
    false
}

pub fn run(opts: Options) -> Result<()> {
    build::run(build::Options::default())?;

    let app_addr = SocketAddr::from(([127, 0, 0, 1], opts.app_port));
    let metrics_addr = SocketAddr::from(([127, 0, 0, 1], opts.port));
    for addr in [app_addr, metrics_addr] {
        TcpListener::bind(addr)
            .with_context(|| format!("demo: {addr} is already in use (see --port, --app-port)"))?;
    }
    let demo_dir = target_dir().join("demo");
    fs::create_dir_all(&demo_dir).with_context(|| format!("creating {}", demo_dir.display()))?;

    ctrlc::set_handler(|| STOP.store(true, Ordering::SeqCst))
        .context("installing the Ctrl-C handler")?;

    // Declared before the exporter so that it is dropped (stopped) after it.
    let gunicorn_venv = venv_dir(venv::GUNICORN27.name);
    let error_log = demo_dir.join("gunicorn-error.log");
    let mut cmd = commands::command(gunicorn_venv.join("bin/gunicorn"));
    cmd.args(["-w", "2", "-k", "sync", "-b"])
        .arg(app_addr.to_string())
        .arg("--chdir")
        .arg(test_apps_dir())
        .arg("--error-logfile")
        .arg(&error_log)
        .arg("--control-socket")
        .arg(demo_dir.join("gunicorn.ctl"))
        .arg("app:app");
    println!("demo: starting gunicorn: {}", commands::describe(&cmd));
    let mut gunicorn = BackgroundProcess::spawn(
        "gunicorn",
        cmd,
        demo_dir.join("gunicorn.out"),
        libc::SIGTERM,
    )?
    .with_logs([error_log.clone()]);
    wait_until(
        "gunicorn",
        GUNICORN_READY_TIMEOUT,
        &mut [&mut gunicorn],
        || http::get(app_addr, "/ok", REQUEST_TIMEOUT).is_ok_and(|(status, _)| status == 200),
    )?;
    if stopped() {
        println!("demo: interrupted");
        return Ok(());
    }
    let master_pid = gunicorn.pid();
    println!("demo: gunicorn answers on http://{app_addr} (master pid {master_pid})");

    let mut cmd = commands::command(exporter_bin());
    cmd.arg("--pid")
        .arg(master_pid.to_string())
        .args(["--bind", "127.0.0.1", "--port"])
        .arg(opts.port.to_string());
    println!("demo: starting the exporter: {}", commands::describe(&cmd));
    let mut exporter = BackgroundProcess::spawn(
        "exporter",
        cmd,
        demo_dir.join("exporter.log"),
        libc::SIGTERM,
    )?;
    wait_until(
        "the exporter's /metrics",
        EXPORTER_READY_TIMEOUT,
        &mut [&mut gunicorn, &mut exporter],
        || {
            http::get(metrics_addr, "/metrics", REQUEST_TIMEOUT)
                .is_ok_and(|(status, _)| status == 200)
        },
    )?;
    if stopped() {
        println!("demo: interrupted");
        return Ok(());
    }

    println!(
        "demo: exporter attached; sending traffic for {} s...",
        FIRST_TRAFFIC.as_secs()
    );
    let mut traffic = Traffic::new();
    let end = Instant::now() + FIRST_TRAFFIC;
    while Instant::now() < end && !stopped() {
        traffic.round(app_addr);
        gunicorn.check_alive()?;
        exporter.check_alive()?;
    }
    if stopped() {
        println!("demo: interrupted");
        return Ok(());
    }
    println!("demo: {}", traffic.summary());

    let (status, body) = http::get(metrics_addr, "/metrics", REQUEST_TIMEOUT)
        .with_context(|| format!("scraping http://{metrics_addr}/metrics"))?;
    if status != 200 {
        bail!("http://{metrics_addr}/metrics answered {status}");
    }
    println!();
    for line in body.lines() {
        if SHOWN_METRICS.iter().any(|m| line.starts_with(m)) {
            println!("  {line}");
        }
    }
    println!();
    println!("demo: scrape http://{metrics_addr}/metrics");
    println!("demo: gunicorn master pid {master_pid}, app on http://{app_addr}");
    println!("demo: logs in {}", demo_dir.display());
    match opts.duration {
        Some(secs) => println!("demo: light traffic every second for {secs} s; Ctrl-C stops"),
        None => println!("demo: light traffic every second; press Ctrl-C to stop"),
    }

    let started = Instant::now();
    let limit = opts.duration.map(Duration::from_secs);
    while limit.is_none_or(|l| started.elapsed() < l) {
        if !sleep_unless_stopped(Duration::from_secs(1)) {
            break;
        }
        traffic.round(app_addr);
        gunicorn.check_alive()?;
        exporter.check_alive()?;
    }
    println!("demo: stopping ({})", traffic.summary());
    drop(exporter);
    drop(gunicorn);
    println!("demo: stopped");
    Ok(())
}

/// Poll `ready` every 200 ms until it holds, the timeout passes, one of the
/// processes dies (error with its log tail) or Ctrl-C (returns Ok).
fn wait_until(
    what: &str,
    timeout: Duration,
    children: &mut [&mut BackgroundProcess],
    mut ready: impl FnMut() -> bool,
) -> Result<()> {
    let start = Instant::now();
    loop {
        for child in children.iter_mut() {
            child.check_alive()?;
        }
        if stopped() || ready() {
            return Ok(());
        }
        if start.elapsed() > timeout {
            let tails: Vec<String> = children.iter().map(|c| c.tail()).collect();
            bail!(
                "{what} not ready after {} s\n{}",
                timeout.as_secs(),
                tails.join("\n")
            );
        }
        thread::sleep(Duration::from_millis(200));
    }
}

/// The demo's request mix, with counts of what came back.
struct Traffic {
    agent: ureq::Agent,
    requests: u64,
    by_status: std::collections::BTreeMap<u16, u64>,
    errors: u64,
}

impl Traffic {
    /// Paths to GET, or to POST a body to.
    const MIX: &[(&str, Option<&[u8]>)] = &[
        ("/ok", None),
        ("/ok", None),
        ("/missing", None),
        ("/boom", None),
        ("/sleep?ms=20", None),
        ("/echo", Some(b"hello from cargo xtask demo")),
    ];

    fn new() -> Self {
        Self {
            agent: http::agent(REQUEST_TIMEOUT),
            requests: 0,
            by_status: Default::default(),
            errors: 0,
        }
    }

    fn round(&mut self, addr: SocketAddr) {
        for (path, body) in Self::MIX {
            self.requests += 1;
            let url = format!("http://{addr}{path}");
            let response = match body {
                Some(body) => self
                    .agent
                    .post(&url)
                    .header("Content-Type", "application/octet-stream")
                    .send(*body),
                None => self.agent.get(&url).call(),
            };
            match response {
                Ok(r) => *self.by_status.entry(r.status().as_u16()).or_default() += 1,
                Err(_) => self.errors += 1,
            }
        }
    }

    fn summary(&self) -> String {
        let statuses: Vec<String> = self
            .by_status
            .iter()
            .map(|(s, n)| format!("{n}x{s}"))
            .collect();
        format!(
            "{} requests sent: {}{}",
            self.requests,
            statuses.join(" "),
            if self.errors > 0 {
                format!(" {} failed", self.errors)
            } else {
                String::new()
            }
        )
    }
}
