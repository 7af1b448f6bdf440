//! What is measured: the cells (app x worker class x keep-alive) and, in each,
//! the configurations (plain gunicorn, with this exporter, with the
//! alternatives), and the gunicorn command line of each.

use std::{
    fmt,
    path::{Path, PathBuf},
    process::Command,
};

use clap::ValueEnum;

use crate::{commands, venv, venv_dir};

/// Workers per gunicorn (one per core of the 2-core machine this is made for).
pub const WORKERS: u32 = 2;
/// Threads per gthread worker.
pub const THREADS: u32 = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, ValueEnum)]
pub enum App {
    /// Hello world: any per-request cost shows at its largest.
    Trivial,
    /// A small JSON API, ~2 ms of CPU per request, some 404/500/503.
    Realistic,
}

impl App {
    pub fn name(self) -> &'static str {
        match self {
            App::Trivial => "trivial",
            App::Realistic => "realistic",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, ValueEnum)]
pub enum Workers {
    Sync,
    Gthread,
}

impl Workers {
    pub fn name(self) -> &'static str {
        match self {
            Workers::Sync => "sync",
            Workers::Gthread => "gthread",
        }
    }
}

/// One workload: every configuration is measured against it, interleaved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cell {
    pub app: App,
    pub workers: Workers,
    /// wrk keeps connections open (no `Connection: close`). Sync workers close
    /// after every response whatever the client asks, so they run only without.
    pub keepalive: bool,
}

impl Cell {
    /// trivial/realistic x sync (close), gthread (close), gthread (keep-alive).
    pub fn all() -> Vec<Cell> {
        let mut cells = Vec::new();
        for app in [App::Trivial, App::Realistic] {
            for (workers, keepalive) in [
                (Workers::Sync, false),
                (Workers::Gthread, false),
                (Workers::Gthread, true),
            ] {
                cells.push(Cell {
                    app,
                    workers,
                    keepalive,
                });
            }
        }
        cells
    }

    pub fn keepalive_name(self) -> &'static str {
        if self.keepalive {
            "keep-alive"
        } else {
            "close"
        }
    }

    /// `trivial-sync-close`, for file names.
    pub fn slug(self) -> String {
        format!(
            "{}-{}-{}",
            self.app.name(),
            self.workers.name(),
            self.keepalive_name()
        )
    }
}

impl fmt::Display for Cell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} app, {} workers, {}",
            self.app.name(),
            self.workers.name(),
            self.keepalive_name()
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, ValueEnum)]
pub enum Variant {
    /// Plain gunicorn 27 (the baseline of the exporter and statsd rows).
    #[value(name = "plain27")]
    Plain27,
    /// Gunicorn 27 with gunicorn-ebpf-exporter attached, `--hooks sockets`.
    EbpfSockets,
    /// The same hooks running programs that do nothing (`--empty-programs`):
    /// the floor of the socket hooks.
    EmptySockets,
    /// The socket hooks with the exporter publishing to Redis
    /// (`--redis-url`, `--redis-interval 1s`).
    EbpfRedis,
    /// The same with `--no-routes`: what counting requests by route costs
    /// is the difference from `ebpf-sockets`.
    EbpfSocketsNoroutes,
    /// Gunicorn 27 with gunicorn-ebpf-exporter attached, `--hooks syscalls`.
    EbpfSyscalls,
    /// The same hooks running programs that do nothing (`--empty-programs`):
    /// the floor of the syscall hooks.
    EmptySyscalls,
    /// Gunicorn 27 with `--statsd-host` to a local UDP sink.
    Statsd,
    /// Plain gunicorn 23 (the baseline of the plugin rows).
    #[value(name = "plain23")]
    Plain23,
    /// Gunicorn 23 with gunicorn-prometheus-exporter 0.2.4, file (multiprocess) mode.
    PluginFile,
    /// Gunicorn 23 with gunicorn-prometheus-exporter 0.2.4, Redis mode.
    PluginRedis,
}

impl Variant {
    pub const ALL: [Variant; 11] = [
        Variant::Plain27,
        Variant::EbpfSockets,
        Variant::EbpfRedis,
        Variant::EbpfSocketsNoroutes,
        Variant::EmptySockets,
        Variant::EbpfSyscalls,
        Variant::EmptySyscalls,
        Variant::Statsd,
        Variant::Plain23,
        Variant::PluginFile,
        Variant::PluginRedis,
    ];

    /// The exporter's real configurations, one per hook set.
    pub const EXPORTER: [Variant; 2] = [Variant::EbpfSockets, Variant::EbpfSyscalls];

    pub fn label(self) -> &'static str {
        match self {
            Variant::Plain27 => "gunicorn 27.0.1",
            Variant::EbpfSockets => "+ gunicorn-ebpf-exporter, socket hooks",
            Variant::EbpfRedis => "+ gunicorn-ebpf-exporter, socket hooks, publishing to Redis",
            Variant::EmptySockets => "+ empty programs, socket hooks (floor)",
            Variant::EbpfSocketsNoroutes => "+ gunicorn-ebpf-exporter --no-routes, socket hooks",
            Variant::EbpfSyscalls => "+ gunicorn-ebpf-exporter, syscall hooks",
            Variant::EmptySyscalls => "+ empty programs, syscall hooks (floor)",
            Variant::Statsd => "+ statsd (--statsd-host)",
            Variant::Plain23 => "gunicorn 23.0.0",
            Variant::PluginFile => "+ plugin 0.2.4, file mode",
            Variant::PluginRedis => "+ plugin 0.2.4, Redis mode",
        }
    }

    /// Short name for logs, files, runs.csv and the chart legend (the
    /// `--variant` value).
    pub fn short(self) -> &'static str {
        match self {
            Variant::Plain27 => "plain27",
            Variant::EbpfSockets => "ebpf-sockets",
            Variant::EbpfRedis => "ebpf-redis",
            Variant::EmptySockets => "empty-sockets",
            Variant::EbpfSocketsNoroutes => "ebpf-sockets-noroutes",
            Variant::EbpfSyscalls => "ebpf-syscalls",
            Variant::EmptySyscalls => "empty-syscalls",
            Variant::Statsd => "statsd",
            Variant::Plain23 => "plain23",
            Variant::PluginFile => "plugin-file",
            Variant::PluginRedis => "plugin-redis",
        }
    }

    /// The plain gunicorn of the same version, measured side by side.
    pub fn baseline(self) -> Variant {
        match self {
            Variant::Plain23 | Variant::PluginFile | Variant::PluginRedis => Variant::Plain23,
            _ => Variant::Plain27,
        }
    }

    pub fn is_baseline(self) -> bool {
        self.baseline() == self
    }

    pub fn venv(self) -> PathBuf {
        match self.baseline() {
            Variant::Plain27 => venv_dir(venv::GUNICORN27.name),
            _ => venv_dir(venv::GUNICORN23_PLUGIN.name),
        }
    }

    /// The exporter's `--hooks` value, for the configurations that run it
    /// (real or empty programs).
    pub fn hooks(self) -> Option<&'static str> {
        match self {
            Variant::EbpfSockets
            | Variant::EbpfRedis
            | Variant::EmptySockets
            | Variant::EbpfSocketsNoroutes => Some("sockets"),
            Variant::EbpfSyscalls | Variant::EmptySyscalls => Some("syscalls"),
            _ => None,
        }
    }

    /// Runs with gunicorn-ebpf-exporter attached (real or empty programs).
    pub fn is_exporter(self) -> bool {
        self.hooks().is_some()
    }

    /// The exporter with `--empty-programs`.
    pub fn is_empty_programs(self) -> bool {
        matches!(self, Variant::EmptySockets | Variant::EmptySyscalls)
    }

    /// The exporter with `--no-routes`.
    pub fn is_no_routes(self) -> bool {
        self == Variant::EbpfSocketsNoroutes
    }

    /// The empty-programs configuration on the same hooks as a real one.
    pub fn floor(self) -> Option<Variant> {
        match self {
            Variant::EbpfSockets => Some(Variant::EmptySockets),
            Variant::EbpfSyscalls => Some(Variant::EmptySyscalls),
            _ => None,
        }
    }

    /// Runs with a redis-server beside it (the bench starts one).
    pub fn uses_redis(self) -> bool {
        matches!(self, Variant::EbpfRedis | Variant::PluginRedis)
    }

    pub fn is_plugin(self) -> bool {
        matches!(self, Variant::PluginFile | Variant::PluginRedis)
    }
}

/// What a gunicorn command line needs besides the variant and the cell.
pub struct Launch<'a> {
    /// xtask/bench: the apps and the plugin's gunicorn config.
    pub bench_dir: &'a Path,
    /// This instance's files (error log, multiprocess dir, access log).
    pub dir: &'a Path,
    pub port: u16,
    /// Where the plugin serves its metrics.
    pub plugin_metrics_port: u16,
    pub statsd_port: Option<u16>,
    pub redis_port: Option<u16>,
    /// Write an access log to this file (the accuracy runs only).
    pub access_log: Option<&'a Path>,
}

pub fn gunicorn_command(variant: Variant, cell: Cell, l: &Launch) -> Command {
    let mut cmd = commands::command(variant.venv().join("bin/gunicorn"));
    cmd.current_dir(l.dir);
    if variant.is_plugin() {
        cmd.arg("-c").arg(l.bench_dir.join("plugin_conf.py"));
    }
    let class = match (variant.is_plugin(), cell.workers) {
        (false, Workers::Sync) => "sync",
        (false, Workers::Gthread) => "gthread",
        (true, Workers::Sync) => "gunicorn_prometheus_exporter.PrometheusWorker",
        (true, Workers::Gthread) => "gunicorn_prometheus_exporter.PrometheusThreadWorker",
    };
    cmd.arg("--chdir")
        .arg(l.bench_dir)
        .arg("-b")
        .arg(format!("127.0.0.1:{}", l.port))
        .arg("-w")
        .arg(WORKERS.to_string())
        .arg("-k")
        .arg(class);
    if cell.workers == Workers::Gthread {
        cmd.arg("--threads").arg(THREADS.to_string());
    }
    cmd.arg("--error-logfile").arg(l.dir.join("error.log"));
    if let Some(access) = l.access_log {
        cmd.arg("--access-logfile").arg(access);
    }
    if variant.baseline() == Variant::Plain27 {
        // Gunicorn 27's control socket defaults to one path for every instance.
        cmd.arg("--no-control-socket");
    }
    if variant == Variant::Statsd
        && let Some(port) = l.statsd_port
    {
        cmd.arg("--statsd-host").arg(format!("127.0.0.1:{port}"));
    }
    if variant.is_plugin() {
        cmd.env("PROMETHEUS_METRICS_PORT", l.plugin_metrics_port.to_string())
            .env("PROMETHEUS_BIND_ADDRESS", "127.0.0.1")
            .env("PROMETHEUS_MULTIPROC_DIR", l.dir.join("multiproc"))
            .env("GUNICORN_WORKERS", WORKERS.to_string());
        if variant == Variant::PluginRedis {
            cmd.env("REDIS_ENABLED", "true")
                .env("REDIS_HOST", "127.0.0.1")
                .env(
                    "REDIS_PORT",
                    l.redis_port.map(|p| p.to_string()).unwrap_or_default(),
                )
                .env("REDIS_KEY_PREFIX", "gunicorn-bench");
        }
    }
    cmd.arg(format!("apps:{}", cell.app.name()));
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    fn launch<'a>(dir: &'a Path) -> Launch<'a> {
        Launch {
            bench_dir: dir,
            dir,
            port: 8000,
            plugin_metrics_port: 9000,
            statsd_port: Some(8125),
            redis_port: Some(6390),
            access_log: None,
        }
    }

    #[test]
    fn six_cells_no_sync_keepalive() {
        let cells = Cell::all();
        assert_eq!(cells.len(), 6);
        assert!(
            !cells
                .iter()
                .any(|c| c.workers == Workers::Sync && c.keepalive)
        );
    }

    #[test]
    fn command_lines() {
        let dir = Path::new("/b");
        let cell = Cell {
            app: App::Realistic,
            workers: Workers::Gthread,
            keepalive: true,
        };
        let line = commands::describe(&gunicorn_command(Variant::Statsd, cell, &launch(dir)));
        assert!(line.contains("-k gthread --threads 4"), "{line}");
        assert!(line.contains("--statsd-host 127.0.0.1:8125"), "{line}");
        assert!(line.contains("--no-control-socket"), "{line}");
        assert!(line.ends_with("apps:realistic"), "{line}");

        let line = commands::describe(&gunicorn_command(Variant::PluginRedis, cell, &launch(dir)));
        assert!(line.contains("REDIS_ENABLED=true"), "{line}");
        assert!(line.contains("REDIS_PORT=6390"), "{line}");
        assert!(line.contains("-c /b/plugin_conf.py"), "{line}");
        assert!(
            line.contains("-k gunicorn_prometheus_exporter.PrometheusThreadWorker"),
            "{line}"
        );
        assert!(!line.contains("control-socket"), "{line}");
        assert!(!line.contains("statsd"), "{line}");

        let line = commands::describe(&gunicorn_command(Variant::Plain23, cell, &launch(dir)));
        assert!(!line.contains("PROMETHEUS"), "{line}");
        assert!(
            line.contains("venvs/gunicorn23-plugin/bin/gunicorn"),
            "{line}"
        );
    }

    #[test]
    fn baselines() {
        for v in Variant::ALL {
            assert!(v.baseline().is_baseline());
            assert_eq!(v.venv(), v.baseline().venv());
            assert_eq!(v.floor().is_some(), Variant::EXPORTER.contains(&v));
            if let Some(f) = v.floor() {
                assert!(f.is_empty_programs() && f.hooks() == v.hooks());
            }
        }
        assert_eq!(Variant::EbpfSyscalls.baseline(), Variant::Plain27);
        assert_eq!(Variant::EmptySockets.baseline(), Variant::Plain27);
        assert_eq!(Variant::PluginRedis.baseline(), Variant::Plain23);
    }
}
