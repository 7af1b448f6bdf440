//! `cargo xtask bench`: what request metrics cost gunicorn, this exporter
//! against what users would otherwise run, in one run on one machine.
//!
//! For each workload (a trivial and a realistic WSGI app x sync / gthread
//! workers x keep-alive off / on), every configuration runs side by side:
//! plain gunicorn 27, the same with gunicorn-ebpf-exporter attached on each of
//! its hook sets (sockets, syscalls) and with its empty programs on each (the
//! floors), with its built-in statsd client (to a local UDP sink); plain
//! gunicorn 23, with gunicorn-prometheus-exporter 0.2.4 in file mode and in
//! Redis mode. All the gunicorns of a workload stay up while it runs;
//! repetitions are interleaved (each version's configurations run next to
//! their plain baseline, in an order that rotates each repetition); wrk drives
//! each in turn. The exporter is started for each of its runs and stopped
//! after it, so no hook is attached while another configuration runs. Then a
//! separate accuracy run per hook set (gunicorn 27 with an access log, the
//! exporter attached) compares counts.
//!
//! Before the workloads, the host tax (`hosttax`): what a process the
//! exporter does not watch pays per syscall, socket send/receive and file
//! write with each exporter configuration attached to an idle gunicorn,
//! against nothing attached, interleaved.
//!
//! Writes target/bench/report.md (also printed), chart.svg, runs.csv; logs
//! of every process under target/bench/run/. Needs root (BPF, sysctl). Not part
//! of the test suite.

mod chart;
mod hosttax;
pub mod loops;
mod measure;
mod report;
mod scenario;

use std::{
    collections::{BTreeMap, HashMap},
    fs,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use clap::Args;
use integration_tests::{ports, tail_file};

pub use self::scenario::{App, Variant, Workers};
use self::{
    measure::{BpfStats, PidAndStart, ProgStats, StatsdSink, WrkParams},
    report::{Accuracy, ExporterRun, ProgDelta, Results, Run},
    scenario::{Cell, Launch, WORKERS},
};
use crate::{
    background::BackgroundProcess, build, commands, exporter_bin, setup, target_dir, workspace_root,
};

#[derive(Debug, Args)]
pub struct Options {
    /// Repetitions of every configuration (interleaved).
    #[arg(long, default_value_t = 5)]
    pub reps: u32,
    /// Seconds of load per run.
    #[arg(long, value_name = "SECS", default_value_t = 5)]
    pub duration: u64,
    /// wrk connections (one wrk thread).
    #[arg(long, default_value_t = 8)]
    pub connections: u32,
    /// A short check of the whole machinery: 2 repetitions of 2 s.
    #[arg(long)]
    pub quick: bool,
    /// Only these apps (default: both).
    #[arg(long, value_delimiter = ',')]
    pub app: Vec<App>,
    /// Only these worker classes (default: both).
    #[arg(long, value_delimiter = ',')]
    pub workers: Vec<Workers>,
    /// Only these configurations (their plain baselines are always added).
    #[arg(long, value_delimiter = ',')]
    pub variant: Vec<Variant>,
    /// Skip the accuracy runs (access log vs exporter).
    #[arg(long)]
    pub no_accuracy: bool,
    /// Only the host tax (what an unrelated process pays per call with each
    /// exporter configuration attached to an idle gunicorn): no workload.
    #[arg(long, conflicts_with = "no_host_tax")]
    pub only_host_tax: bool,
    /// Skip the host tax.
    #[arg(long)]
    pub no_host_tax: bool,
    /// Repetitions of the host tax (--quick: 3).
    #[arg(long, default_value_t = 10)]
    pub host_tax_reps: u32,
    /// Leave kernel.bpf_stats_enabled alone: the exporter's worker CPU then
    /// excludes the stats' own cost, and no BPF program time is reported.
    #[arg(long)]
    pub no_bpf_stats: bool,
    /// Skip setup and build: use what is installed and built.
    #[arg(long)]
    pub no_build: bool,
    /// Output directory (default: target/bench).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

const WARMUP_SECS: u64 = 1;
const SETTLE: Duration = Duration::from_millis(300);
const GUNICORN_READY: Duration = Duration::from_secs(60);
const EXPORTER_READY: Duration = Duration::from_secs(60);
/// How long counts may keep moving after wrk stops (gthread keep-alive
/// connections are closed by wrk at exit; gunicorn's keep-alive is 2 s).
const COUNT_SETTLE_MAX: Duration = Duration::from_secs(6);

static STOP: AtomicBool = AtomicBool::new(false);

fn check_stop() -> Result<()> {
    if STOP.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

/// Sleep, failing early on Ctrl-C.
fn sleep(d: Duration) -> Result<()> {
    let end = Instant::now() + d;
    loop {
        check_stop()?;
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        thread::sleep((end - now).min(Duration::from_millis(50)));
    }
}

struct Ctx {
    reps: u32,
    duration: u64,
    host_tax_reps: u32,
    host_tax_batches: u32,
    connections: u32,
    accuracy: bool,
    bpf_stats: bool,
    exporter: PathBuf,
    bench_dir: PathBuf,
    run_dir: PathBuf,
    scripts: HashMap<App, PathBuf>,
    variants: Vec<Variant>,
    sink: Option<StatsdSink>,
    redis: Option<(BackgroundProcess, u16)>,
}

pub fn run(opts: Options) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the bench needs root (it loads eBPF programs and sets kernel.bpf_stats_enabled)");
    }
    let (reps, duration) = if opts.quick {
        (2, 2)
    } else {
        (opts.reps.max(1), opts.duration.max(1))
    };
    if !opts.no_build {
        build::run(build::Options::default())?;
        setup::bench_only()?;
    }
    if !exporter_bin().is_file() {
        bail!(
            "{} is missing (run `cargo xtask build`)",
            exporter_bin().display()
        );
    }
    ctrlc::set_handler(|| STOP.store(true, Ordering::SeqCst))
        .context("installing the Ctrl-C handler")?;

    let out = opts
        .out
        .clone()
        .unwrap_or_else(|| target_dir().join("bench"));
    let run_dir = out.join("run");
    if run_dir.exists() {
        fs::remove_dir_all(&run_dir).with_context(|| format!("removing {}", run_dir.display()))?;
    }
    fs::create_dir_all(&run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
    // A copy, so that a rebuild of target/release during the bench (another
    // task, an editor) cannot mix two exporter builds in one report.
    let exporter = run_dir.join("gunicorn-ebpf-exporter");
    fs::copy(exporter_bin(), &exporter).with_context(|| {
        format!(
            "copying {} to {}",
            exporter_bin().display(),
            exporter.display()
        )
    })?;
    let bench_dir = workspace_root().join("xtask").join("bench");
    let scripts = write_scripts(&bench_dir, &run_dir)?;

    let mut variants: Vec<Variant> = if opts.variant.is_empty() {
        Variant::ALL.to_vec()
    } else {
        opts.variant
            .iter()
            .flat_map(|v| [*v, v.baseline()])
            .collect()
    };
    variants.sort();
    variants.dedup();
    let cells: Vec<Cell> = Cell::all()
        .into_iter()
        .filter(|c| opts.app.is_empty() || opts.app.contains(&c.app))
        .filter(|c| opts.workers.is_empty() || opts.workers.contains(&c.workers))
        .filter(|_| !opts.only_host_tax)
        .collect();
    if cells.is_empty() && !opts.only_host_tax {
        bail!("no workload left after --app/--workers");
    }
    let host_tax = !opts.no_host_tax && variants.iter().any(|v| v.is_exporter());
    if opts.only_host_tax && !host_tax {
        bail!("--only-host-tax needs an exporter configuration in --variant");
    }

    let mut res = Results {
        cells: cells.clone(),
        variants: variants.clone(),
        ..Default::default()
    };
    environment(&mut res, reps, duration, opts.connections, &exporter);
    let foreign = measure::foreign_tracing_progs().unwrap_or_default();
    note_foreign(&mut res, &foreign, "at start");

    let mut ctx = Ctx {
        reps,
        duration,
        host_tax_reps: if opts.quick {
            3
        } else {
            opts.host_tax_reps.max(1)
        },
        host_tax_batches: hosttax::batches(opts.quick),
        connections: opts.connections,
        accuracy: !opts.no_accuracy && Variant::EXPORTER.iter().any(|v| variants.contains(v)),
        bpf_stats: !opts.no_bpf_stats,
        exporter,
        bench_dir,
        run_dir,
        scripts,
        variants,
        sink: None,
        redis: None,
    };

    let host_tax_secs = if host_tax {
        hosttax::estimate_secs(&ctx)
    } else {
        0.0
    };
    let estimate = estimate_secs(&ctx, cells.len()) + host_tax_secs as u64;
    let mut phases = Vec::new();
    if host_tax {
        phases.push(format!(
            "host tax ({} configurations x {} repetitions)",
            hosttax::configurations(&ctx.variants).len() - 1,
            ctx.host_tax_reps
        ));
    }
    if !cells.is_empty() {
        phases.push(format!(
            "{} workloads x {} configurations x {reps} repetitions x {duration} s",
            cells.len(),
            ctx.variants.len()
        ));
    }
    println!(
        "bench: {}; about {} min",
        phases.join(", then "),
        estimate.div_ceil(60)
    );
    let started = Instant::now();
    let mut outcome = Ok(());
    if host_tax {
        // First, while nothing else of the bench runs: no other gunicorn, no
        // statsd sink, no redis-server.
        println!("bench: host tax");
        outcome = hosttax::run(&ctx, &mut res).context("host tax");
        let foreign = measure::foreign_tracing_progs().unwrap_or_default();
        note_foreign(&mut res, &foreign, "after the host tax");
        write_outputs(&res, &out)?;
    }
    if outcome.is_ok() && !cells.is_empty() {
        if ctx.variants.contains(&Variant::Statsd) {
            ctx.sink = Some(StatsdSink::start()?);
        }
        if ctx.variants.iter().any(|v| v.uses_redis()) {
            ctx.redis = Some(start_redis(&ctx.run_dir)?);
        }
    }
    for (i, &cell) in cells.iter().enumerate() {
        if outcome.is_err() {
            break;
        }
        println!("bench: [{}/{}] {cell}", i + 1, cells.len());
        if let Err(e) = run_cell(&ctx, cell, &mut res) {
            outcome = Err(e.context(format!("workload {cell}")));
            break;
        }
        let foreign = measure::foreign_tracing_progs().unwrap_or_default();
        note_foreign(&mut res, &foreign, &format!("after {}", cell.slug()));
        write_outputs(&res, &out)?;
    }
    drop(ctx);
    res.env.push((
        "load average at end".into(),
        fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    ));
    res.env.push((
        "bench wall time".into(),
        format!("{:.1} min", started.elapsed().as_secs_f64() / 60.0),
    ));
    if !res.runs.is_empty() || !res.host_tax.is_empty() {
        write_outputs(&res, &out)?;
    }
    outcome?;
    let md = report::markdown(&res);
    println!("\n{md}");
    let mut written = vec![out.join("report.md")];
    if !res.runs.is_empty() {
        written.push(out.join("chart.svg"));
    }
    written.push(out.join("runs.csv"));
    println!(
        "bench: wrote {} ({:.1} min)",
        written
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        started.elapsed().as_secs_f64() / 60.0
    );
    Ok(())
}

fn write_outputs(res: &Results, out: &Path) -> Result<()> {
    let write = |name: &str, text: String| {
        let path = out.join(name);
        fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    };
    write("report.md", report::markdown(res))?;
    if !res.runs.is_empty() {
        write("chart.svg", chart::svg(res).context("drawing the chart")?)?;
    }
    write("runs.csv", report::csv(res))
}

/// wrk scripts: report.lua's `done` after each app's request mix.
fn write_scripts(bench_dir: &Path, run_dir: &Path) -> Result<HashMap<App, PathBuf>> {
    let read = |name: &str| {
        let path = bench_dir.join(name);
        fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
    };
    let done = read("report.lua")?;
    let mut scripts = HashMap::new();
    for (app, mix) in [
        (App::Trivial, String::new()),
        (App::Realistic, read("realistic.lua")?),
    ] {
        let path = run_dir.join(format!("wrk-{}.lua", app.name()));
        fs::write(&path, format!("{mix}\n{done}"))
            .with_context(|| format!("writing {}", path.display()))?;
        scripts.insert(app, path);
    }
    Ok(scripts)
}

/// Seconds a run takes, from timings of this bench on a 2-core VM: each run
/// adds ~1.5 s to its load (settling, counting), each exporter start ~2.5 s,
/// each gunicorn start and warm-up ~2.5 s.
fn estimate_secs(ctx: &Ctx, cells: usize) -> u64 {
    let n = ctx.variants.len() as f64;
    let reps = ctx.reps as f64;
    let mut cell = n * (WARMUP_SECS as f64 + 1.5) + reps * n * (ctx.duration as f64 + 1.5);
    cell += reps * 2.5 * ctx.variants.iter().filter(|v| v.is_exporter()).count() as f64;
    if ctx.accuracy {
        let hook_sets = Variant::EXPORTER
            .iter()
            .filter(|v| ctx.variants.contains(v))
            .count();
        cell += hook_sets as f64 * (ctx.duration as f64 + 8.0);
    }
    (cell * cells as f64) as u64
}

fn command_line(program: &str, args: &[&str]) -> String {
    match commands::command(program).args(args).output() {
        Ok(o) => String::from_utf8_lossy(&[o.stdout, o.stderr].concat())
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_string(),
        Err(_) => "?".into(),
    }
}

fn environment(res: &mut Results, reps: u32, duration: u64, connections: u32, exporter: &Path) {
    let read = |p: &str| fs::read_to_string(p).unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    let cores = thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let env = &mut res.env;
    env.push((
        "date".into(),
        command_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
    ));
    env.push((
        "machine".into(),
        format!(
            "{cores} cores ({cpu}), Linux {}",
            read("/proc/sys/kernel/osrelease").trim()
        ),
    ));
    env.push((
        "load average at start".into(),
        read("/proc/loadavg")
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    ));
    env.push((
        "load".into(),
        format!(
            "{} ({}), one thread, {connections} connections, {duration} s per run, \
             {reps} repetitions per configuration, interleaved",
            "wrk",
            command_line("wrk", &["-v"])
        ),
    ));
    env.push((
        "gunicorn".into(),
        format!(
            "{WORKERS} workers (gthread: {} threads), 27.0.1 and 23.0.0, {}",
            scenario::THREADS,
            command_line("python3", &["--version"])
        ),
    ));
    env.push((
        "exporter".into(),
        format!(
            "{} (built {}), default options",
            command_line(&exporter.to_string_lossy(), &["--version"]),
            command_line(
                "date",
                &[
                    "-u",
                    "-r",
                    &exporter_bin().to_string_lossy(),
                    "+%Y-%m-%d %H:%M UTC"
                ]
            )
        ),
    ));
    env.push((
        "alternatives".into(),
        format!(
            "gunicorn-prometheus-exporter 0.2.4 (prometheus_client 0.26.0, redis 8.1.0; \
             {}); gunicorn's `--statsd-host` to a UDP socket drained by the bench",
            command_line("redis-server", &["--version"])
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        ),
    ));
}

/// Record the tracing programs of other processes seen at a checkpoint.
fn note_foreign(res: &mut Results, progs: &[(u32, String, String)], when: &str) {
    res.foreign_progs.push((when.to_string(), progs.len()));
    res.foreign_names
        .extend(progs.iter().map(|(_, _, name)| name.clone()));
}

fn start_redis(run_dir: &Path) -> Result<(BackgroundProcess, u16)> {
    let mut last = None;
    for _ in 0..3 {
        let port = ports::free_port();
        let mut cmd = commands::command("redis-server");
        cmd.current_dir(run_dir).args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
        ]);
        let mut proc = BackgroundProcess::spawn(
            "redis-server",
            cmd,
            run_dir.join("redis.log"),
            libc::SIGTERM,
        )?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let start = Instant::now();
        loop {
            if let Err(e) = proc.check_alive() {
                last = Some(e);
                break;
            }
            if measure::redis_ping(addr) {
                println!("bench: redis-server on {addr} (pid {})", proc.pid());
                return Ok((proc, port));
            }
            if start.elapsed() > Duration::from_secs(15) {
                bail!("redis-server not answering on {addr}\n{}", proc.tail());
            }
            sleep(Duration::from_millis(50))?;
        }
    }
    Err(last.unwrap()).context("starting redis-server")
}

/// One gunicorn of a workload.
struct Instance {
    variant: Variant,
    proc: BackgroundProcess,
    addr: SocketAddr,
    plugin_metrics: Option<SocketAddr>,
    dir: PathBuf,
    workers: Vec<PidAndStart>,
}

impl Instance {
    fn start(
        ctx: &Ctx,
        cell: Cell,
        variant: Variant,
        name: &str,
        access_log: bool,
    ) -> Result<Self> {
        let dir = ctx.run_dir.join(cell.slug()).join(name);
        let mut last = None;
        for attempt in 0..3 {
            if dir.exists() {
                fs::remove_dir_all(&dir)?;
            }
            let mkdir = if variant.is_plugin() {
                dir.join("multiproc")
            } else {
                dir.clone()
            };
            fs::create_dir_all(&mkdir).with_context(|| format!("creating {}", mkdir.display()))?;
            let port = ports::free_port();
            let plugin_port = ports::free_port();
            let access = dir.join("access.log");
            let launch = Launch {
                bench_dir: &ctx.bench_dir,
                dir: &dir,
                port,
                plugin_metrics_port: plugin_port,
                statsd_port: ctx.sink.as_ref().map(|s| s.port),
                redis_port: ctx.redis.as_ref().map(|r| r.1),
                access_log: access_log.then_some(access.as_path()),
            };
            let cmd = scenario::gunicorn_command(variant, cell, &launch);
            fs::write(dir.join("command.txt"), commands::describe(&cmd) + "\n")?;
            let proc = BackgroundProcess::spawn(
                format!("gunicorn ({name})"),
                cmd,
                dir.join("gunicorn.out"),
                libc::SIGINT,
            )?;
            let mut inst = Instance {
                variant,
                proc,
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
                plugin_metrics: variant
                    .is_plugin()
                    .then(|| SocketAddr::from(([127, 0, 0, 1], plugin_port))),
                dir: dir.clone(),
                workers: Vec::new(),
            };
            match inst.wait_ready() {
                Ok(()) => return Ok(inst),
                Err(e) => {
                    check_stop()?;
                    let tail = tail_file(&dir.join("error.log"), 15);
                    eprintln!(
                        "bench: {name} did not start (attempt {}): {e:#}\n{tail}",
                        attempt + 1
                    );
                    last = Some(e.context(tail));
                }
            }
        }
        Err(last.unwrap()).with_context(|| format!("starting gunicorn for {name}"))
    }

    fn master(&self) -> u32 {
        self.proc.pid()
    }

    fn wait_ready(&mut self) -> Result<()> {
        let start = Instant::now();
        loop {
            self.proc.check_alive()?;
            check_stop()?;
            let http_ok = measure::answers(self.addr, "/");
            let workers = measure::children(self.master());
            let metrics_ok = self
                .plugin_metrics
                .is_none_or(|m| measure::scrape(m).is_ok());
            if http_ok && workers.len() == WORKERS as usize && metrics_ok {
                return Ok(());
            }
            if start.elapsed() > GUNICORN_READY {
                bail!(
                    "not ready after {} s (http {http_ok}, {} workers, metrics {metrics_ok})",
                    GUNICORN_READY.as_secs(),
                    workers.len()
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// A short unmeasured load (imports, caches, connections), then the
    /// worker pids this instance's runs measure.
    fn warm_up(&mut self, ctx: &Ctx, cell: Cell) -> Result<()> {
        self.wrk(ctx, cell, WARMUP_SECS, "warmup")?;
        self.workers = measure::children(self.master());
        if self.workers.len() != WORKERS as usize {
            bail!(
                "{}: {} workers after the warm-up, expected {WORKERS}\n{}",
                self.variant.short(),
                self.workers.len(),
                self.proc.tail()
            );
        }
        Ok(())
    }

    fn wrk(&self, ctx: &Ctx, cell: Cell, secs: u64, tag: &str) -> Result<measure::WrkResult> {
        let url = format!("http://{}/", self.addr);
        measure::wrk(&WrkParams {
            url: &url,
            script: &ctx.scripts[&cell.app],
            connections: ctx.connections,
            seconds: secs,
            keepalive: cell.keepalive,
            stderr: &self.dir.join(format!("wrk-{tag}.err")),
        })
    }

    /// Fail if a worker was replaced (its CPU would be lost).
    fn check_workers(&mut self) -> Result<()> {
        self.proc.check_alive()?;
        let now = measure::children(self.master());
        if now != self.workers {
            bail!(
                "{}: the workers changed during the workload ({:?} -> {:?}); see {}",
                self.variant.short(),
                self.workers,
                now,
                self.dir.display()
            );
        }
        Ok(())
    }

    /// The master's and workers' threads' CPU (ns by tid), and their
    /// utime+stime (seconds, whole ticks) as a cross-check.
    fn cpu_snapshot(&self) -> Result<(BTreeMap<u32, u64>, f64)> {
        let mut threads = measure::thread_cpu_ns(self.master())?;
        let mut ticks = measure::cpu_seconds(self.master())?;
        for (pid, _) in &self.workers {
            threads.extend(measure::thread_cpu_ns(*pid)?);
            ticks += measure::cpu_seconds(*pid)?;
        }
        Ok((threads, ticks))
    }

    fn plugin_count(&self) -> Result<Option<u64>> {
        match self.plugin_metrics {
            Some(addr) => {
                let m = measure::scrape(addr)?;
                Ok(Some(m.sum_all("gunicorn_worker_requests_total") as u64))
            }
            None => Ok(None),
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.proc.stop();
    }
}

/// An exporter process the bench starts and measures, attached to one
/// instance for one run.
struct MeasuredExporter {
    proc: BackgroundProcess,
    addr: SocketAddr,
    names: HashMap<u32, String>,
}

impl MeasuredExporter {
    /// Start the exporter of `variant` (its hook set, real or empty programs)
    /// on an instance's master; ready once it sees the workers, and checked to
    /// run on the hooks asked for.
    fn attach(ctx: &Ctx, inst: &Instance, variant: Variant, tag: &str) -> Result<Self> {
        let hooks = variant
            .hooks()
            .with_context(|| format!("{} runs no exporter", variant.short()))?;
        let port = ports::free_port();
        let mut cmd = commands::command(&ctx.exporter);
        cmd.arg("--pid")
            .arg(inst.master().to_string())
            .args(["--bind", "127.0.0.1", "--port"])
            .arg(port.to_string())
            .args(["--hooks", hooks]);
        if variant.is_empty_programs() {
            cmd.arg("--empty-programs");
        }
        if variant == Variant::EbpfRedis {
            let port = ctx.redis.as_ref().context("no redis-server")?.1;
            // 1 s, not the default 5 s: several publishes in each run.
            cmd.arg("--redis-url")
                .arg(format!("redis://127.0.0.1:{port}/0"))
                .args(["--redis-interval", "1s"]);
        }
        if variant.is_no_routes() {
            cmd.arg("--no-routes");
        }
        let mut proc = BackgroundProcess::spawn(
            "gunicorn-ebpf-exporter",
            cmd,
            inst.dir.join(format!("exporter-{tag}.log")),
            libc::SIGTERM,
        )?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let start = Instant::now();
        loop {
            proc.check_alive()?;
            check_stop()?;
            if let Ok(m) = measure::scrape(addr)
                && m.sum_all("gunicorn_workers") == WORKERS as f64
            {
                let used = m
                    .get("gunicorn_exporter_kernel_info")
                    .find_map(|s| s.labels.get("hooks"))
                    .map(String::as_str);
                if used != Some(hooks) {
                    bail!("asked for --hooks {hooks}, the exporter reports {used:?}");
                }
                break;
            }
            if start.elapsed() > EXPORTER_READY {
                bail!("the exporter was not ready after 60 s\n{}", proc.tail());
            }
            thread::sleep(Duration::from_millis(50));
        }
        let names = measure::prog_names()?;
        Ok(Self { proc, addr, names })
    }

    fn pid(&self) -> u32 {
        self.proc.pid()
    }

    fn progs(&self) -> Result<BTreeMap<u32, ProgStats>> {
        measure::process_progs(self.pid())
    }

    fn total(&self) -> Result<u64> {
        let m = measure::scrape(self.addr)?;
        Ok(m.sum_all("gunicorn_worker_requests_total") as u64)
    }

    /// The total once it stops moving (and has reached `at_least`, or
    /// COUNT_SETTLE_MAX passed).
    fn settled_total(&self, at_least: u64, also: impl Fn() -> u64) -> Result<(u64, u64)> {
        let start = Instant::now();
        let mut last = (self.total()?, also());
        let mut same = 0;
        loop {
            sleep(Duration::from_millis(100))?;
            let now = (self.total()?, also());
            if now == last {
                same += 1;
            } else {
                same = 0;
                last = now;
            }
            if (same >= 5 && last.0 >= at_least) || start.elapsed() > COUNT_SETTLE_MAX {
                return Ok(last);
            }
        }
    }

    /// Kernel errors, collect errors, failed requests by type.
    fn errors(&self) -> Result<(f64, f64, BTreeMap<String, f64>)> {
        let m = measure::scrape(self.addr)?;
        let kernel = m.sum_all("gunicorn_exporter_kernel_errors_total");
        let collect = m.sum_all("gunicorn_exporter_collect_errors_total");
        let mut failed = BTreeMap::new();
        for s in m.get("gunicorn_worker_failed_requests_total") {
            let kind = s.labels.get("error_type").cloned().unwrap_or_default();
            *failed.entry(kind).or_insert(0.0) += s.value;
        }
        Ok((kernel, collect, failed))
    }
}

fn prog_deltas(
    names: &HashMap<u32, String>,
    before: &BTreeMap<u32, ProgStats>,
    after: &BTreeMap<u32, ProgStats>,
) -> BTreeMap<String, ProgDelta> {
    let mut out: BTreeMap<String, ProgDelta> = BTreeMap::new();
    for (id, a) in after {
        let b = before.get(id).cloned().unwrap_or_default();
        let name = names
            .get(id)
            .cloned()
            .unwrap_or_else(|| format!("prog_{id}"));
        let d = out.entry(name).or_default();
        d.runs += a.run_cnt.saturating_sub(b.run_cnt);
        d.ns += a.run_time_ns.saturating_sub(b.run_time_ns);
        d.misses += a.recursion_misses.saturating_sub(b.recursion_misses);
    }
    out
}

fn run_cell(ctx: &Ctx, cell: Cell, res: &mut Results) -> Result<()> {
    let mut instances = Vec::new();
    for &v in &ctx.variants {
        check_stop()?;
        instances.push(Instance::start(ctx, cell, v, v.short(), false)?);
    }
    for inst in &mut instances {
        check_stop()?;
        inst.warm_up(ctx, cell)?;
    }
    for rep in 0..ctx.reps {
        for idx in run_order(&ctx.variants, rep) {
            check_stop()?;
            let inst = &mut instances[idx];
            let run = measure_run(ctx, cell, inst, rep)
                .with_context(|| format!("{} repetition {}", inst.variant.short(), rep + 1))?;
            print_run(&run, ctx.reps);
            res.runs.push(run);
        }
    }
    drop(instances);
    let accuracy = Variant::EXPORTER
        .into_iter()
        .filter(|v| ctx.accuracy && ctx.variants.contains(v));
    for v in accuracy {
        check_stop()?;
        let a = accuracy_run(ctx, cell, v)?;
        println!(
            "bench:   accuracy ({}): wrk {} completed, access log {}, exporter {} ({:+}), kernel errors {}",
            v.short(),
            a.wrk_requests,
            a.access_log,
            a.exporter,
            a.exporter as i64 - a.access_log as i64,
            a.kernel_errors
        );
        res.accuracy.push(a);
    }
    Ok(())
}

/// The order of one repetition, as indexes into `variants`: each gunicorn
/// version's configurations together, next to their plain baseline, rotated
/// by one each repetition; the two versions' groups alternate which goes first.
fn run_order(variants: &[Variant], rep: u32) -> Vec<usize> {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for base in [Variant::Plain27, Variant::Plain23] {
        let mut group: Vec<usize> = (0..variants.len())
            .filter(|&i| variants[i].baseline() == base)
            .collect();
        if !group.is_empty() {
            let k = rep as usize % group.len();
            group.rotate_left(k);
            groups.push(group);
        }
    }
    if rep % 2 == 1 {
        groups.reverse();
    }
    groups.concat()
}

fn print_run(r: &Run, reps: u32) {
    let mut line = format!(
        "bench:   rep {}/{reps} {:<14} {:>7.0} req/s  worker {:>7.1} µs/req  wrk {:>6.1} µs/req  p99 {:>7.2} ms",
        r.rep + 1,
        r.variant.short(),
        r.wrk.rps(),
        r.worker_cpu_per_req_us(),
        r.wrk_cpu_per_req_us(),
        r.wrk.p99_us / 1000.0
    );
    if let Some(side) = r.side_cpu_per_req_us() {
        line.push_str(&format!("  side {side:.1} µs/req"));
    }
    if let Some(n) = r.redis_commands {
        line.push_str(&format!(
            "  redis {:.1} cmds/s",
            n as f64 / r.wrk.seconds.max(1e-9)
        ));
    }
    if let Some(c) = r.counted {
        line.push_str(&format!("  counted {:+}", c as i64 - r.wrk.requests as i64));
    }
    if let Some(e) = &r.exporter {
        line.push_str(&format!(
            "  exporter {:.2}% core, bpf {:.2} µs/req, {:.1} hits/req",
            e.cpu_s * 100.0 / r.wrk.seconds.max(1e-9),
            e.bpf_ns() as f64 / 1000.0 / r.wrk.requests.max(1) as f64,
            e.bpf_runs() as f64 / r.wrk.requests.max(1) as f64
        ));
    }
    if r.wrk.socket_errors > 0 {
        line.push_str(&format!("  wrk socket errors {}", r.wrk.socket_errors));
    }
    println!("{line}");
}

fn measure_run(ctx: &Ctx, cell: Cell, inst: &mut Instance, rep: u32) -> Result<Run> {
    inst.check_workers()?;
    let exporter = match inst.variant.is_exporter() {
        true => Some(MeasuredExporter::attach(
            ctx,
            inst,
            inst.variant,
            &format!("rep{}", rep + 1),
        )?),
        false => None,
    };
    let stats = match &exporter {
        Some(_) if ctx.bpf_stats => Some(BpfStats::enable()?),
        _ => None,
    };
    let side_cpu = |inst: &Instance| -> Result<Option<BTreeMap<u32, u64>>> {
        Ok(match inst.variant {
            v if v.is_exporter() => Some(measure::thread_cpu_ns(exporter.as_ref().unwrap().pid())?),
            Variant::PluginRedis => {
                Some(measure::thread_cpu_ns(ctx.redis.as_ref().unwrap().0.pid())?)
            }
            Variant::Statsd => Some(ctx.sink.as_ref().unwrap().cpu_ns()?),
            _ => None,
        })
    };
    let count = |inst: &Instance| -> Result<Option<u64>> {
        Ok(match inst.variant {
            v if v.is_exporter() && !v.is_empty_programs() => {
                Some(exporter.as_ref().unwrap().total()?)
            }
            Variant::Statsd => Some(ctx.sink.as_ref().unwrap().requests.load(Ordering::SeqCst)),
            _ => inst.plugin_count()?,
        })
    };
    let redis_commands = || -> Result<Option<u64>> {
        match (&ctx.redis, inst.variant.uses_redis()) {
            (Some((_, port)), true) => Ok(Some(measure::redis_commands(SocketAddr::from((
                [127, 0, 0, 1],
                *port,
            )))?)),
            _ => Ok(None),
        }
    };
    let counted_before = count(inst)?;
    sleep(SETTLE)?;
    let redis0 = redis_commands()?;

    let (cpu0, ticks0) = inst.cpu_snapshot()?;
    let side0 = side_cpu(inst)?;
    let bpf0 = exporter.as_ref().map(|e| e.progs()).transpose()?;
    let wrk = inst.wrk(ctx, cell, ctx.duration, &format!("rep{}", rep + 1))?;
    let (cpu1, ticks1) = inst.cpu_snapshot()?;
    let side1 = side_cpu(inst)?;
    let redis1 = redis_commands()?;
    let bpf1 = exporter.as_ref().map(|e| e.progs()).transpose()?;
    drop(stats);
    inst.check_workers()?;

    let side_cpu_s = side0.zip(side1).map(|(a, b)| measure::cpu_delta_s(&a, &b));
    let mut exporter_run = None;
    let counted_after = match &exporter {
        Some(e) => {
            let (rss, peak) = measure::rss_bytes(e.pid())?;
            // Empty programs count nothing: waiting for their total to reach
            // wrk's would only run out COUNT_SETTLE_MAX.
            let total = match inst.variant.is_empty_programs() {
                true => None,
                false => Some(e.settled_total(wrk.requests, || 0)?.0),
            };
            let (kernel_errors, collect_errors, failed) = e.errors()?;
            exporter_run = Some(ExporterRun {
                cpu_s: side_cpu_s.unwrap_or_default(),
                rss_bytes: rss,
                rss_peak_bytes: peak,
                kernel_errors,
                collect_errors,
                failed,
                // Without the stats the kernel counts nothing.
                progs: if ctx.bpf_stats {
                    prog_deltas(&e.names, bpf0.as_ref().unwrap(), bpf1.as_ref().unwrap())
                } else {
                    BTreeMap::new()
                },
            });
            total
        }
        None => {
            if counted_before.is_some() {
                sleep(Duration::from_millis(500))?;
            }
            count(inst)?
        }
    };
    drop(exporter);
    let counted = counted_before
        .zip(counted_after)
        .map(|(b, a)| a.saturating_sub(b));
    Ok(Run {
        cell,
        variant: inst.variant,
        rep,
        wrk,
        worker_cpu_s: measure::cpu_delta_s(&cpu0, &cpu1),
        worker_cpu_ticks_s: ticks1 - ticks0,
        side_cpu_s,
        counted,
        exporter: exporter_run,
        redis_commands: redis0.zip(redis1).map(|(a, b)| b.saturating_sub(a)),
    })
}

fn count_lines(path: &Path) -> u64 {
    fs::read(path)
        .map(|b| b.iter().filter(|&&c| c == b'\n').count() as u64)
        .unwrap_or(0)
}

/// Gunicorn 27 with an access log and the exporter of `variant` attached, at
/// full load: the exporter's count against the access log's lines and wrk's
/// count.
fn accuracy_run(ctx: &Ctx, cell: Cell, variant: Variant) -> Result<Accuracy> {
    let name = format!("accuracy-{}", variant.short());
    let mut inst = Instance::start(ctx, cell, variant, &name, true)?;
    inst.warm_up(ctx, cell)?;
    let exporter = MeasuredExporter::attach(ctx, &inst, variant, "accuracy")?;
    let log = inst.dir.join("access.log");
    let (before, lines_before) = exporter.settled_total(0, || count_lines(&log))?;
    let wrk = inst.wrk(ctx, cell, ctx.duration, "accuracy")?;
    inst.check_workers()?;
    let (after, lines_after) = exporter.settled_total(wrk.requests, || count_lines(&log))?;
    let (kernel_errors, collect_errors, failed) = exporter.errors()?;
    Ok(Accuracy {
        cell,
        variant,
        wrk_requests: wrk.requests,
        access_log: lines_after - lines_before,
        exporter: after - before,
        kernel_errors: kernel_errors + collect_errors,
        failed,
        rps: wrk.rps(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_order_keeps_versions_together_and_rotates() {
        let v = Variant::ALL.to_vec();
        let all: Vec<usize> = (0..v.len()).collect();
        // gunicorn 27's eight (plain27 .. statsd), then gunicorn 23's three.
        assert_eq!(run_order(&v, 0), all);
        assert_eq!(run_order(&v, 1), [9, 10, 8, 1, 2, 3, 4, 5, 6, 7, 0]);
        assert_eq!(run_order(&v, 2), [2, 3, 4, 5, 6, 7, 0, 1, 10, 8, 9]);
        for rep in 0..10 {
            let mut o = run_order(&v, rep);
            o.sort();
            assert_eq!(o, all);
        }
        let only = [Variant::Plain27, Variant::EbpfSyscalls];
        assert_eq!(run_order(&only, 1), [1, 0]);
    }
}
