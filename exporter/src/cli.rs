//! Command-line options. Settings shared with gunicorn-prometheus-exporter
//! read the same environment variables, so a deployment can switch over.

use std::{net::IpAddr, path::PathBuf, time::Duration};

use clap::{CommandFactory as _, Parser, ValueEnum};

use crate::startup::capabilities::Hooks;

/// Exact per-worker request metrics of a running Gunicorn, from the kernel.
///
/// Attaches eBPF tracepoint programs to a Gunicorn master and its workers (no
/// change to the app or its config) and serves Prometheus metrics.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["pid", "pidfile"])))]
pub struct Options {
    /// PID of the Gunicorn master (a worker's PID is resolved to its master).
    #[arg(long)]
    pub pid: Option<u32>,

    /// Gunicorn's pidfile (its `--pid` setting), read at start.
    #[arg(long)]
    pub pidfile: Option<PathBuf>,

    /// Address to serve /metrics on.
    #[arg(long, env = "PROMETHEUS_BIND_ADDRESS", default_value = "0.0.0.0")]
    pub bind: IpAddr,

    /// Port to serve /metrics on.
    #[arg(long, env = "PROMETHEUS_METRICS_PORT", default_value_t = 9091)]
    pub port: u16,

    /// TLS, client certificates and basic auth for /metrics, in the
    /// Prometheus exporter-toolkit's web configuration format (the subset in
    /// the README). Re-read when it, or a file it names, changes. Without
    /// it, PROMETHEUS_SSL_CERTFILE, PROMETHEUS_SSL_KEYFILE,
    /// PROMETHEUS_SSL_CLIENT_CAFILE and PROMETHEUS_SSL_CLIENT_AUTH_REQUIRED
    /// configure TLS the same way; both at once is an error.
    #[arg(long = "web.config.file", value_name = "PATH")]
    pub web_config_file: Option<PathBuf>,

    /// Request duration histogram bucket upper bounds, in seconds, comma separated
    /// (at most 31, strictly increasing; +Inf is implied).
    #[arg(long, value_delimiter = ',', default_value = DEFAULT_BUCKETS)]
    pub buckets: Vec<f64>,

    /// Seconds a dead worker's series stay exported before they fold into
    /// its master's `worker_id="exited"` series (two scrape intervals of 30 s
    /// by default; set it to twice yours).
    #[arg(long, default_value_t = 60.0)]
    pub series_grace: f64,

    /// Dead workers per master whose own series are kept during the grace;
    /// older ones fold into `worker_id="exited"` at once (bounds the
    /// exposition under --max-requests churn).
    #[arg(long, default_value_t = 16)]
    pub max_dead_workers: usize,

    /// Per-worker request series (requests, durations, sizes, failures):
    /// `all` (live workers, and dead ones within the grace and the cap),
    /// `live` (a dead worker's fold into `worker_id="exited"` at once) or
    /// `none` (one series per master, `worker_id="all"`). Gauges of live
    /// workers (state, busy, heartbeat, resources) stay per worker.
    #[arg(long, value_enum, default_value_t = WorkerSeries::All)]
    pub worker_series: WorkerSeries,

    /// Which hooks see the workers' client-socket I/O. `auto`: the socket
    /// tracepoints where the kernel has them (Linux 6.5+: no syscall
    /// tracepoint, nothing added to the rest of the host's syscalls), else the
    /// syscall tracepoints. `sockets` or `syscalls` force one (an error where
    /// the kernel lacks it).
    #[arg(long, value_enum, default_value_t = Hooks::Auto)]
    pub hooks: Hooks,

    /// With the syscall hooks, which syscalls carry client-socket I/O.
    /// `auto`: what Gunicorn's worker classes use (recvfrom, sendto,
    /// sendfile), plus read, readv, recvmsg, write, writev and sendmsg once a
    /// worker is seen running uvloop, whose libuv uses them. `gunicorn`: never
    /// those. `all`: those from the start. Every traced syscall costs every
    /// process on the host a little (see README). The socket hooks see every
    /// family anyway.
    #[arg(long, value_enum, default_value_t = IoSyscalls::Auto)]
    pub io_syscalls: IoSyscalls,

    /// Do not follow workers' log records with Python tracebacks: failed
    /// requests are then reported as error_type http_5xx (or aborted) instead
    /// of their exception class, and workers' writes skip a small program.
    #[arg(long)]
    pub no_exception_classes: bool,

    /// A route template for the per-route families, e.g. `/users/{id}` or
    /// `/files/{name}/raw` (a `{...}` segment matches any one segment).
    /// Repeatable; tried in order, before the automatic rule (numeric, UUID
    /// and long hex segments become `{id}`).
    #[arg(long = "route", value_name = "TEMPLATE")]
    pub routes: Vec<String>,

    /// A file of route templates, one per line (blank lines and lines
    /// starting with `#` ignored), tried after the `--route` ones.
    #[arg(long, value_name = "PATH")]
    pub routes_file: Option<PathBuf>,

    /// Distinct routes at most; requests of further ones count under
    /// `route="other"` (and in gunicorn_http_route_overflow_requests_total).
    #[arg(long, default_value_t = 200)]
    pub max_routes: usize,

    /// Do not count requests by route: no gunicorn_http_* families, and the
    /// kernel neither hashes paths nor keeps per-route series.
    #[arg(long)]
    pub no_routes: bool,

    /// Diagnostics: attach a program that does nothing to each of the same
    /// tracepoints instead of the real ones. No request or lifecycle metric
    /// moves; what the host pays then is the floor of tracing itself here
    /// (`cargo xtask bench` measures the exporter against it).
    #[arg(long)]
    pub empty_programs: bool,

    /// Log format on stderr (hook lines carry master/worker pid, signal,
    /// exit status and reason as fields in JSON).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Run COMMAND (through `sh -c`) each time HOOK happens, e.g.
    /// `--on worker_exit='logger "worker $GUNICORN_WORKER_PID: $GUNICORN_REASON"'`.
    /// Repeatable. The command sees GUNICORN_HOOK, GUNICORN_MASTER_PID,
    /// GUNICORN_WORKER_PID, GUNICORN_SIGNAL, GUNICORN_EXIT_STATUS, GUNICORN_REASON.
    #[arg(long = "on", value_name = "HOOK=COMMAND")]
    pub on: Vec<String>,

    /// Seconds a hook command may run before it is killed.
    #[arg(long, default_value_t = 10.0)]
    pub on_timeout: f64,

    /// Hook commands running at once; more wait in a queue (up to 1024, then dropped and counted).
    #[arg(long, default_value_t = 4)]
    pub on_concurrency: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum WorkerSeries {
    All,
    Live,
    None,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum IoSyscalls {
    Auto,
    Gunicorn,
    All,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// What `--generate` prints: the man page or a shell's completion script,
/// made from these very options (`cargo xtask dist` packages them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Generate {
    Man,
    Bash,
    Zsh,
    Fish,
}

impl Generate {
    pub fn write(self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        let mut command = Options::command();
        let shell = match self {
            Generate::Man => return clap_mangen::Man::new(command).render(out),
            Generate::Bash => clap_complete::Shell::Bash,
            Generate::Zsh => clap_complete::Shell::Zsh,
            Generate::Fish => clap_complete::Shell::Fish,
        };
        let name = command.get_name().to_string();
        clap_complete::generate(shell, &mut command, name, out);
        Ok(())
    }
}

/// 1 ms .. 60 s, including gunicorn-prometheus-exporter's 0.1 0.5 1 2.5 5 10 30 60.
pub const DEFAULT_BUCKETS: &str =
    "0.001,0.0025,0.005,0.01,0.025,0.05,0.1,0.25,0.5,1,2.5,5,10,30,60";

impl Options {
    /// The command line, parsed. Alone, `--generate man|bash|zsh|fish`
    /// prints that artifact and exits, as `--help` does; it is no clap
    /// option, so neither the usage nor the artifacts show it. (`main` calls
    /// this, which shadows [`Parser::parse`].)
    pub fn parse() -> Self {
        let args: Vec<_> = std::env::args_os().collect();
        if let [_, flag, what] = &args[..]
            && flag == "--generate"
        {
            let written = match Generate::from_str(&what.to_string_lossy(), false) {
                Ok(what) => what.write(&mut std::io::stdout().lock()),
                Err(e) => Err(std::io::Error::other(e)),
            };
            if let Err(e) = written {
                eprintln!("error: --generate: {e}");
                std::process::exit(2);
            }
            std::process::exit(0);
        }
        <Self as Parser>::parse()
    }

    /// `inf` keeps a dead worker's series for good.
    pub fn series_grace(&self) -> Duration {
        seconds(self.series_grace.max(0.0))
    }

    /// `inf` lets a hook command run for good.
    pub fn on_timeout(&self) -> Duration {
        seconds(self.on_timeout.max(0.001))
    }
}

/// Seconds as a Duration; too many (or `inf`) is the longest one.
fn seconds(s: f64) -> Duration {
    Duration::try_from_secs_f64(s).unwrap_or(Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_or_pidfile_is_required() {
        assert!(Options::try_parse_from(["x"]).is_err());
        assert!(Options::try_parse_from(["x", "--pid", "1", "--pidfile", "/p"]).is_err());
        let o = Options::try_parse_from(["x", "--pid", "42"]).unwrap();
        assert_eq!((o.pid, o.port, o.buckets.len()), (Some(42), 9091, 15));
        assert_eq!((o.hooks, o.io_syscalls), (Hooks::Auto, IoSyscalls::Auto));
        let o = Options::try_parse_from(["x", "--pid", "1", "--hooks", "syscalls"]).unwrap();
        assert_eq!(o.hooks, Hooks::Syscalls);
    }

    #[test]
    fn infinite_durations_are_the_longest() {
        let o = Options::try_parse_from([
            "x",
            "--pid",
            "1",
            "--series-grace",
            "inf",
            "--on-timeout",
            "inf",
        ])
        .unwrap();
        assert_eq!(
            (o.series_grace(), o.on_timeout()),
            (Duration::MAX, Duration::MAX)
        );
        let o = Options::try_parse_from(["x", "--pid", "1", "--series-grace=-5"]).unwrap();
        assert_eq!(o.series_grace(), Duration::ZERO);
    }

    #[test]
    fn generated_artifacts_describe_the_options() {
        for what in Generate::value_variants() {
            let mut out = Vec::new();
            what.write(&mut out).unwrap();
            let text = String::from_utf8(out).unwrap();
            // (roff escapes the man page's hyphens: words without any.)
            assert!(
                text.contains("pidfile") && text.contains("buckets"),
                "{what:?}"
            );
        }
    }

    #[test]
    fn web_config_file_has_the_toolkit_flag_name() {
        let o =
            Options::try_parse_from(["x", "--pid", "1", "--web.config.file", "/w.yml"]).unwrap();
        assert_eq!(o.web_config_file, Some(PathBuf::from("/w.yml")));
    }

    #[test]
    fn buckets_parse() {
        let o = Options::try_parse_from(["x", "--pid", "1", "--buckets", "0.5,1,2"]).unwrap();
        assert_eq!(o.buckets, vec![0.5, 1.0, 2.0]);
    }
}
