//! gunicorn-ebpf-exporter: parse, check, resolve the master, bind, load and
//! attach, track the master's workers, then serve until told to stop.
//!
//! Data flows one way, in two flows:
//! - metrics: tracepoints -> kernel maps -> `scrape` (collectors read the
//!   maps and the published view) -> registry -> HTTP;
//! - lifecycle: ring buffer -> `events` (decoded) -> `state` (the
//!   `lifecycle` hook mapping) -> published view, logs and user actions.

mod cli;
#[cfg(test)]
mod deploy;
mod discovery;
mod events;
mod kernel;
mod lifecycle;
mod listeners;
mod logging;
mod procs;
mod redis;
mod scrape;
mod startup;

use std::{
    net::SocketAddr,
    process::ExitCode,
    sync::{Arc, Mutex},
};

use anyhow::{Context as _, anyhow};
use exporter_ebpf::{
    abi::{self, DURATION_SLOTS},
    buckets::padded,
};

use crate::{
    cli::{IoSyscalls, Options, Target, WorkerSeries},
    discovery::{Discovery, identity::Matcher},
    kernel::Kernel,
    lifecycle::{
        actions::Actions,
        heartbeats::Heartbeats,
        state::{Settings, State},
    },
    redis::{identity::Identity, publish},
    scrape::{
        gunicorn::GunicornMetrics,
        view::{Fixed, Published},
        web_config::{self, WebConfig},
    },
    startup::{btf::KernelBtf, capabilities, preflight, privileges, target},
};

fn main() -> ExitCode {
    let mut options = Options::parse();
    let result = match options.command.take() {
        Some(cli::Subcommand::Aggregate(aggregate)) => {
            logging::init(aggregate.log_format);
            crate::redis::aggregate::run(aggregate)
        }
        None => {
            logging::init(options.log_format);
            run(options)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs at the start of each of the main runtime's blocking threads (scrape
/// gathers, Redis snapshots, bcrypt): they run niced below the event thread,
/// so on a busy host scrapes wait rather than delay events. A worker that
/// lives a second must still be seen booting: its heartbeat file is looked
/// up when its fork is handled.
fn yield_to_events() {
    // SAFETY: plain syscall; `who` 0 with PRIO_PROCESS is the calling thread
    // on Linux. Lowering one's own priority needs no privilege.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 10) } != 0 {
        log::debug!(
            "cannot lower a blocking thread's priority: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Duration bucket bounds in seconds -> the kernel's padded nanoseconds.
fn duration_bounds_ns(seconds: &[f64]) -> anyhow::Result<[u64; DURATION_SLOTS]> {
    if let Some(bad) = seconds.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
        return Err(anyhow!(
            "--buckets: {bad} is not a positive number of seconds"
        ));
    }
    let ns: Vec<u64> = seconds.iter().map(|s| (s * 1e9).round() as u64).collect();
    padded(&ns).ok_or_else(|| {
        anyhow!(
            "--buckets: give at most {} strictly increasing bounds (at least 1 ns apart)",
            DURATION_SLOTS - 1
        )
    })
}

fn run(options: Options) -> anyhow::Result<()> {
    let started = std::time::SystemTime::now();
    // Checked (certificates and all) before anything is loaded or attached.
    let web = web_config::Source::new(options.web_config_file.clone(), |name| {
        std::env::var(name).ok()
    })?
    .map(WebConfig::new)
    .transpose()?
    .map(Arc::new);
    let redis = options.redis.resolve()?;
    let bounds = duration_bounds_ns(&options.buckets)?;
    let (actions, action_runner) =
        Actions::new(&options.on, options.on_concurrency, options.on_timeout())?;
    preflight::check_privileges()?;
    let open_files = preflight::raise_open_files();
    if open_files < 4096 {
        log::warn!(
            "at most {open_files} open files: workers beyond about that many are not followed for exception classes"
        );
    }

    // One master (today's labels), or discovery: every master, found once
    // the programs are attached (so none starts unseen in between).
    let (pinned, discovery) = match options.target() {
        Target::Pid(pid) => (Some(one_master(pid)?), None),
        Target::Pidfile(path) => (Some(one_master(target::read_pidfile(path)?)?), None),
        Target::Discover { matcher, labels } => (
            None,
            Some(Discovery {
                matcher: matcher.clone(),
                labels: labels.to_vec(),
            }),
        ),
    };
    let identity = match &pinned {
        Some(master) => Identity::of(master, started),
        None => Identity::node(started),
    };
    let identity_labels = discovery
        .as_ref()
        .map(|d| discovery::identity::Identity::label_names(&d.labels))
        .unwrap_or_default();

    let addr = SocketAddr::new(options.bind, options.port);
    let listener = std::net::TcpListener::bind(addr).with_context(|| {
        format!("cannot listen on {addr} (another exporter running? choose another --port)")
    })?;
    listener.set_nonblocking(true)?;

    preflight::ensure_tracefs()?;
    let btf_path = std::path::Path::new(preflight::KERNEL_BTF);
    if !btf_path.exists() {
        return Err(capabilities::no_btf().into());
    }
    let btf = KernelBtf::load(btf_path)?;
    let offsets = btf
        .offsets()
        .map_err(|e| capabilities::Unsupported::Missing {
            release: capabilities::release(),
            feature: e.to_string(),
            since: "6.1",
        })?;
    let probed = capabilities::probe(Some(&btf), options.hooks)?;
    drop(btf);
    preflight::check_layout(probed.hooks)?;
    let routes = if options.no_routes {
        None
    } else {
        Some(scrape::routes::Rules::load(
            &options.routes,
            options.routes_file.as_deref(),
            options.max_routes,
        )?)
    };
    let programs = kernel::Programs {
        rw_family: options.io_syscalls == IoSyscalls::All,
        exception_classes: !options.no_exception_classes,
        empty: options.empty_programs,
        routes: !options.no_routes,
        discover: match &discovery {
            None => abi::discover::OFF,
            Some(d) if d.matcher.narrows() => abi::discover::EVERY_EXEC,
            Some(_) => abi::discover::NAMED,
        },
    };
    if options.empty_programs {
        log::warn!(
            "--empty-programs: the hooks run a program that does nothing; request and lifecycle metrics stay at zero"
        );
    }
    let listeners = kernel::Listeners::of(pinned.iter().map(|m| m.pid).collect::<Vec<_>>());
    // An unsupported kernel is one line naming the feature, not a chain under "attaching".
    let (kernel, probed) = match Kernel::load(bounds, offsets, probed, programs, &listeners) {
        Err(kernel::KernelError::Unsupported(unsupported)) => return Err(unsupported.into()),
        loaded => loaded.context("attaching the eBPF programs")?,
    };
    // Parsing the kernel's BTF (ours, and aya's loader's) took tens of MB:
    // hand the freed heap back rather than keep it resident for good.
    // (musl, of the static build, has no malloc_trim: its allocator unmaps
    // freed memory by itself; resident 8 MB after attaching, glibc's 10.)
    #[cfg(target_env = "gnu")]
    // SAFETY: glibc's malloc_trim only releases free memory.
    unsafe {
        libc::malloc_trim(0)
    };
    log::info!("{}", probed.describe());
    if probed.hooks == capabilities::Hooks::Sockets
        && !options.no_exception_classes
        && !probed.has(capabilities::cap::UPROBES)
    {
        log::warn!(
            "this kernel has no uprobes: with the socket hooks, exception classes are not followed (failed requests count as http_5xx or aborted); --hooks syscalls follows them"
        );
    }
    let hooked = kernel.attached().len();
    let mut kernel = kernel;
    let ring = kernel
        .take_events()
        .context("the lifecycle ring buffer was already taken")?;
    let maps = kernel
        .take_reader()
        .context("the scrape's map handles were already taken")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .on_thread_start(yield_to_events)
        .build()?;
    let _runtime = runtime.enter();
    // Lifecycle events are read on a thread of their own, with its own
    // runtime: however many scrapes the main thread serves, a worker's fork
    // is handled while the worker still holds its heartbeat file.
    let events_runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let inotify = inotify::Inotify::init().context("creating an inotify instance")?;
    let beats = {
        // The heartbeat watch's stream registers with that runtime's reactor.
        let _events = events_runtime.enter();
        inotify
            .into_event_stream(vec![0u8; 4096])
            .context("watching heartbeat files")?
    };
    let (masters, starting) = match (pinned, &discovery) {
        (Some(master), _) => (vec![master], Vec::new()),
        (None, Some(d)) => discover(&d.matcher),
        (None, None) => unreachable!("a target or discovery"),
    };
    let master_pids: Vec<u32> = masters.iter().map(|m| m.pid).collect();
    let published = Published::default();
    let action_counts = actions.counts();
    let mut state = State::new(
        kernel,
        Heartbeats::new(beats.watches()),
        Settings {
            bounds,
            grace: options.series_grace(),
            max_dead_workers: match options.worker_series {
                WorkerSeries::All => options.max_dead_workers,
                WorkerSeries::Live | WorkerSeries::None => 0,
            },
            pidfile: options.pidfile.clone(),
            rw_on_demand: options.io_syscalls == IoSyscalls::Auto,
            discovery,
        },
        actions,
        published.clone(),
    );
    state.add_candidates(&starting);
    for master in masters {
        let pid = master.pid;
        state
            .attach(master)
            .with_context(|| format!("tracking gunicorn master {pid} and its workers"))?;
    }
    state.end_batch();
    let scheme = match &web {
        Some(web) if web.tls() => "https",
        _ => "http",
    };
    match &master_pids[..] {
        [master_pid] if identity_labels.is_empty() => log::info!(
            "attached to gunicorn master {master_pid} ({} workers, {hooked} hooks); serving {scheme}://{addr}/metrics",
            state.workers_alive()
        ),
        _ => log::info!(
            "discovery: attached to {} gunicorn masters {master_pids:?} ({} workers, {hooked} hooks); serving {scheme}://{addr}/metrics",
            master_pids.len(),
            state.workers_alive()
        ),
    }
    if let Some(web) = &web {
        log::info!("metrics endpoint: {}", web.describe());
    }
    // Start-up is over and this is still the only thread: keep only what
    // runs from here on needs (see startup::privileges).
    let sockets = probed.hooks == capabilities::Hooks::Sockets;
    let later = privileges::Later {
        uprobes: sockets && programs.exception_classes && probed.has(capabilities::cap::UPROBES),
        tracepoints: !sockets && options.io_syscalls == IoSyscalls::Auto,
        // In discovery mode a pod in its own network namespace may start later.
        enters_netns: !identity_labels.is_empty()
            || master_pids.iter().any(|&pid| privileges::other_netns(pid)),
    };
    let permitted = caps::read(None, caps::CapSet::Permitted)?;
    let kept = privileges::to_keep(later, &permitted, || maps.errors().is_ok())
        .and_then(|keep| privileges::keep_only(&keep))
        .context("dropping the capabilities only start-up needed")?;
    log::info!("capabilities kept: {}", privileges::names(&kept));
    state
        .start_background()
        .context("starting the uprobe thread")?;
    let state = Arc::new(Mutex::new(state));
    let registry = prometheus::Registry::new();
    registry.register(Box::new(GunicornMetrics::new(
        published.clone(),
        maps,
        Fixed {
            bounds,
            kernel: probed,
            per_master: options.worker_series == WorkerSeries::None,
            identity_labels: identity_labels.clone(),
        },
        action_counts,
        routes,
    )?))?;
    registry.register(Box::new(scrape::resources::Resources::new(
        published,
        identity_labels,
    )?))?;
    let redis_errors = match &redis {
        Some(_) => Some(publish::Errors::register(&registry)?),
        None => None,
    };
    let registry = Arc::new(registry);

    // Spawned after the capabilities were dropped, as the uprobe thread: a
    // thread inherits its creator's.
    let (events_done, events_stopped) = tokio::sync::oneshot::channel();
    let events_state = state.clone();
    std::thread::Builder::new()
        .name("events".into())
        .spawn(move || {
            let result = events_runtime.block_on(async move {
                tokio::select! {
                    result = events::ring(ring, events_state.clone()) => result.context("reading kernel events"),
                    result = events::heartbeats(beats, events_state) => result.context("watching heartbeat files"),
                }
            });
            let _ = events_done.send(result);
        })
        .context("starting the event thread")?;

    runtime.block_on(async move {
        tokio::spawn(action_runner);
        tokio::spawn(refresh_every_second(state.clone()));
        if let (Some(config), Some(errors)) = (redis, redis_errors) {
            tokio::spawn(publish::run(config, identity, registry.clone(), errors));
        }
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            result = scrape::server::serve(listener, registry, web) => result.context("serving /metrics"),
            result = events_stopped => result.unwrap_or_else(|_| Err(anyhow!("the event thread panicked"))),
            _ = tokio::signal::ctrl_c() => Ok(()),
            _ = terminate.recv() => Ok(()),
        }
    })
}

/// The master `pid` names (a worker's pid is resolved to its master).
fn one_master(pid: u32) -> anyhow::Result<procs::ProcInfo> {
    let master = target::resolve(pid)?;
    if let Some(notice) = &master.notice {
        log::warn!("{notice}");
    }
    Ok(master.info)
}

/// Discovery mode: the masters running now, from one scan of /proc, and
/// the gunicorn processes with no worker yet (followed to their first fork).
fn discover(matcher: &Matcher) -> (Vec<procs::ProcInfo>, Vec<u32>) {
    let (masters, starting) =
        discovery::scan::masters(&discovery::scan::snapshot(), matcher, std::process::id());
    for pid in &starting {
        log::info!("gunicorn {pid} has no worker yet: followed to its first fork");
    }
    if masters.is_empty() {
        log::info!("discovery: no gunicorn master running yet");
    }
    (
        masters.into_iter().filter_map(procs::info).collect(),
        starting,
    )
}

/// Liveness, pidfile re-attach and series expiry, in their own task: scrapes
/// only read what this and the event loops publish.
async fn refresh_every_second(state: Arc<Mutex<State>>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tick.tick().await;
        let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
        state.refresh();
        state.end_batch();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_bounds_are_exact_nanoseconds() {
        let b = duration_bounds_ns(&[0.001, 0.05, 60.0]).unwrap();
        assert_eq!(
            &b[..4],
            &[
                1_000_000,
                50_000_000,
                60_000_000_000,
                exporter_ebpf::buckets::INF
            ]
        );
        assert!(duration_bounds_ns(&[0.5, 0.1]).is_err());
        assert!(duration_bounds_ns(&[-1.0]).is_err());
        assert!(duration_bounds_ns(&[f64::NAN]).is_err());
        assert!(duration_bounds_ns(&vec![1.0; 40]).is_err());
    }
}
