//! Command-line options. Settings shared with gunicorn-prometheus-exporter
//! read the same environment variables, so a deployment can switch over.

use std::{net::IpAddr, path::PathBuf, time::Duration};

use clap::{CommandFactory as _, Parser, ValueEnum};

use crate::{
    discovery::identity::{EnvLabel, Matcher},
    redis::{aggregate::AggregateOptions, config::RedisArgs},
    startup::capabilities::Hooks,
};

/// Exact per-worker request metrics of a running Gunicorn, from the kernel.
#[derive(Debug, Parser)]
#[command(
    version,
    about,
    long_about = DESCRIPTION,
    after_help = "`--help` adds a description, examples, the environment and the exit status.",
    after_long_help = AFTER_LONG_HELP,
    max_term_width = 100
)]
#[command(group(clap::ArgGroup::new("target").args(["pid", "pidfile"])))]
// `gunicorn-ebpf-exporter --pid N ...` stays the form that attaches;
// `gunicorn-ebpf-exporter aggregate ...` takes none of its options.
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct Options {
    #[command(subcommand)]
    pub command: Option<Subcommand>,

    /// PID of the Gunicorn master (a worker's PID is resolved to its master).
    #[arg(long, value_name = "PID", help_heading = "Target")]
    pub pid: Option<u32>,

    /// Gunicorn's pidfile (its `--pid` setting), read at start.
    #[arg(long, value_name = "PATH", help_heading = "Target")]
    pub pidfile: Option<PathBuf>,

    /// Watch every Gunicorn master on the host (the default without --pid
    /// or --pidfile): those running and those started later. Every series of
    /// a master then carries the labels app, master_pid, ns_pid,
    /// container_id and pod_uid (empty where it has none); node-wide ones none.
    #[arg(long, conflicts_with = "target", help_heading = "Target")]
    pub all: bool,

    /// With discovery: only masters whose command line (or process title)
    /// matches REGEX; also finds masters of custom BaseApplication scripts,
    /// which do not run the gunicorn command, started before or after the
    /// exporter (every exec is then a candidate).
    #[arg(
        long = "match",
        value_name = "REGEX",
        conflicts_with = "target",
        value_parser = matcher,
        help_heading = "Target"
    )]
    pub match_: Option<Matcher>,

    /// With discovery: copy variable VAR of each master's environment into
    /// label LABEL; without `LABEL=` the label is VAR in lower case. E.g.
    /// POD_NAME, or namespace=POD_NAMESPACE. Repeatable.
    #[arg(
        long,
        value_name = "LABEL=VAR",
        conflicts_with = "target",
        help_heading = "Target"
    )]
    pub label_from_env: Vec<EnvLabel>,

    /// Address to serve /metrics on.
    #[arg(
        long,
        value_name = "ADDR",
        env = "PROMETHEUS_BIND_ADDRESS",
        default_value = "0.0.0.0",
        help_heading = "Endpoint"
    )]
    pub bind: IpAddr,

    /// Port to serve /metrics on.
    #[arg(
        long,
        value_name = "PORT",
        env = "PROMETHEUS_METRICS_PORT",
        default_value_t = 9091,
        help_heading = "Endpoint"
    )]
    pub port: u16,

    /// TLS, client certificates and basic auth for /metrics, in the
    /// Prometheus exporter-toolkit's web configuration format (the subset in
    /// the README). Re-read when it, or a file it names, changes. Without
    /// it, PROMETHEUS_SSL_CERTFILE, PROMETHEUS_SSL_KEYFILE,
    /// PROMETHEUS_SSL_CLIENT_CAFILE and PROMETHEUS_SSL_CLIENT_AUTH_REQUIRED
    /// configure TLS the same way; both at once is an error.
    #[arg(
        long = "web.config.file",
        value_name = "PATH",
        help_heading = "Endpoint"
    )]
    pub web_config_file: Option<PathBuf>,

    /// Request duration histogram bucket upper bounds, in seconds, comma separated
    /// (at most 31, strictly increasing; +Inf is implied).
    #[arg(long, value_name = "SECONDS", value_delimiter = ',', default_value = DEFAULT_BUCKETS, help_heading = "Series")]
    pub buckets: Vec<f64>,

    /// Seconds a dead worker's series stay exported before they fold into
    /// its master's `worker_id="exited"` series (two scrape intervals of 30 s
    /// by default; set it to twice yours).
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 60.0,
        help_heading = "Series"
    )]
    pub series_grace: f64,

    /// Dead workers per master whose own series are kept during the grace;
    /// older ones fold into `worker_id="exited"` at once (bounds the
    /// exposition under --max-requests churn).
    #[arg(long, value_name = "N", default_value_t = 16, help_heading = "Series")]
    pub max_dead_workers: usize,

    /// Per-worker request series (requests, durations, sizes, failures):
    /// `all` (live workers, and dead ones within the grace and the cap),
    /// `live` (a dead worker's fold into `worker_id="exited"` at once) or
    /// `none` (one series per master, `worker_id="all"`). Gauges of live
    /// workers (state, busy, heartbeat, resources) stay per worker.
    #[arg(long, value_name = "WHICH", value_enum, default_value_t = WorkerSeries::All, help_heading = "Series")]
    pub worker_series: WorkerSeries,

    /// Which hooks see the workers' client-socket I/O. `auto`: the socket
    /// tracepoints where the kernel has them (Linux 6.5+: no syscall
    /// tracepoint, nothing added to the rest of the host's syscalls), else the
    /// syscall tracepoints. `sockets` or `syscalls` force one (an error where
    /// the kernel lacks it).
    #[arg(long, value_name = "SET", value_enum, default_value_t = Hooks::Auto, help_heading = "Kernel hooks")]
    pub hooks: Hooks,

    /// With the syscall hooks, which syscalls carry client-socket I/O.
    /// `auto`: what Gunicorn's worker classes use (recvfrom, sendto,
    /// sendfile), plus read, readv, recvmsg, write, writev and sendmsg once a
    /// worker is seen running uvloop, whose libuv uses them. `gunicorn`: never
    /// those. `all`: those from the start. Every traced syscall costs every
    /// process on the host a little (see README). The socket hooks see every
    /// family anyway.
    #[arg(long, value_name = "WHICH", value_enum, default_value_t = IoSyscalls::Auto, help_heading = "Kernel hooks")]
    pub io_syscalls: IoSyscalls,

    /// Do not follow workers' log records with Python tracebacks: failed
    /// requests are then reported as error_type http_5xx (or aborted) instead
    /// of their exception class, and workers' writes skip a small program.
    #[arg(long, help_heading = "Kernel hooks")]
    pub no_exception_classes: bool,

    /// A route template for the per-route families, e.g. `/users/{id}` or
    /// `/files/{name}/raw` (a `{...}` segment matches any one segment).
    /// Repeatable; tried in order, before the automatic rule (numeric, UUID
    /// and long hex segments become `{id}`).
    #[arg(long = "route", value_name = "TEMPLATE", help_heading = "Routes")]
    pub routes: Vec<String>,

    /// A file of route templates, one per line (blank lines and lines
    /// starting with `#` ignored), tried after the `--route` ones.
    #[arg(long, value_name = "PATH", help_heading = "Routes")]
    pub routes_file: Option<PathBuf>,

    /// Distinct routes at most; requests of further ones count under
    /// `route="other"` (and in gunicorn_http_route_overflow_requests_total).
    #[arg(long, value_name = "N", default_value_t = 200, help_heading = "Routes")]
    pub max_routes: usize,

    /// Do not count requests by route: no gunicorn_http_* families, and the
    /// kernel neither hashes paths nor keeps per-route series.
    #[arg(long, help_heading = "Routes")]
    pub no_routes: bool,

    /// Diagnostics: attach a program that does nothing to each of the same
    /// tracepoints instead of the real ones. No request or lifecycle metric
    /// moves; what the host pays then is the floor of tracing itself here
    /// (`cargo xtask bench` measures the exporter against it).
    #[arg(long, help_heading = "Kernel hooks")]
    pub empty_programs: bool,

    /// Log format on stderr (hook lines carry master/worker pid, signal,
    /// exit status and reason as fields in JSON).
    #[arg(long, value_name = "FORMAT", value_enum, default_value_t = LogFormat::Text, help_heading = "Logs and hook commands")]
    pub log_format: LogFormat,

    /// Run COMMAND (through `sh -c`) each time HOOK happens, e.g.
    /// `--on worker_exit='logger "worker $GUNICORN_WORKER_PID: $GUNICORN_REASON"'`.
    /// Repeatable. The command sees GUNICORN_HOOK, GUNICORN_MASTER_PID,
    /// GUNICORN_WORKER_PID, GUNICORN_SIGNAL, GUNICORN_EXIT_STATUS, GUNICORN_REASON.
    #[arg(
        long = "on",
        value_name = "HOOK=COMMAND",
        help_heading = "Logs and hook commands"
    )]
    pub on: Vec<String>,

    /// Seconds a hook command may run before it is killed.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 10.0,
        help_heading = "Logs and hook commands"
    )]
    pub on_timeout: f64,

    /// Hook commands running at once; more wait in a queue (up to 1024, then dropped and counted).
    #[arg(
        long,
        value_name = "N",
        default_value_t = 4,
        help_heading = "Logs and hook commands"
    )]
    pub on_concurrency: usize,

    #[command(flatten)]
    pub redis: RedisArgs,
}

#[derive(Debug, clap::Subcommand)]
pub enum Subcommand {
    /// Serve the merged series of every exporter publishing to Redis, each
    /// labelled with its instance and host (needs no privileges).
    Aggregate(AggregateOptions),
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

/// `--help`'s (and the man page's) description.
const DESCRIPTION: &str = "\
Exact per-worker request metrics of a running Gunicorn, from the kernel.

Attaches eBPF programs to a running Gunicorn master and its workers (or, without \
--pid and --pidfile, to every Gunicorn master on the host, those started later \
included, each series labelled with its master's identity) and serves \
Prometheus metrics: requests by worker, method and status, their durations and \
sizes, failures by exception class, Gunicorn's hooks as the kernel sees them \
(post_fork, worker_exit, worker_abort, child_exit, ...), restarts by reason, busy \
workers, the listen backlog and queue time, and each worker's CPU, memory and \
open files. Nothing changes in the application, its configuration or its \
request path; counts equal Gunicorn's access log.

It needs Linux 6.1 or newer with BTF, and root (it keeps only the capabilities \
it still needs once attached; see the README's Privileges section).";

/// What `--help` (and the man page) shows after the options.
const AFTER_LONG_HELP: &str = "\
Examples:
  Watch the master named in Gunicorn's pidfile; metrics on port 9091:
    gunicorn-ebpf-exporter --pidfile /run/gunicorn/app.pid

  Watch every Gunicorn on a Kubernetes node, with the pod's name as a label:
    gunicorn-ebpf-exporter --all --label-from-env pod=POD_NAME

  Serve on localhost only, with TLS and basic auth:
    gunicorn-ebpf-exporter --pid 1234 --bind 127.0.0.1 \\
        --web.config.file /etc/gunicorn-ebpf-exporter/web.yml

  Log each worker that goes away, with its reason:
    gunicorn-ebpf-exporter --pid 1234 \\
        --on worker_exit='logger -t gunicorn \"$GUNICORN_WORKER_PID: $GUNICORN_REASON\"'

  Keep the exposition small under --max-requests churn:
    gunicorn-ebpf-exporter --pid 1234 --worker-series live

  Count requests by route, naming two templates (other paths: numeric,
  UUID and long hex segments become {id}):
    gunicorn-ebpf-exporter --pid 1234 --route '/users/{name}' --route '/files/{path}/raw'

  Publish to Redis every 5 s, and serve every host's series from one place:
    gunicorn-ebpf-exporter --pid 1234 --redis-url redis://redis.internal:6379/0
    gunicorn-ebpf-exporter aggregate --redis-url redis://redis.internal:6379/0 --port 9092

Environment:
  PROMETHEUS_BIND_ADDRESS, PROMETHEUS_METRICS_PORT
      as --bind and --port (gunicorn-prometheus-exporter's names).
  PROMETHEUS_SSL_CERTFILE, PROMETHEUS_SSL_KEYFILE, PROMETHEUS_SSL_CLIENT_CAFILE,
  PROMETHEUS_SSL_CLIENT_AUTH_REQUIRED
      TLS and client certificates without --web.config.file.
  REDIS_ENABLED, REDIS_HOST, REDIS_PORT, REDIS_DB, REDIS_PASSWORD,
  REDIS_KEY_PREFIX, REDIS_TTL_SECONDS, REDIS_TTL_DISABLED
      Redis publishing as gunicorn-prometheus-exporter's settings say.
  RUST_LOG
      log level (error, warn, info, debug), also per module.

Exit status:
  0   stopped by SIGTERM or SIGINT; every program, link and map is gone.
  1   an error, said on stderr with what to do: mostly at start (no such
      master, missing privileges, an unsupported kernel, a bad
      --web.config.file).
  2   a bad command line.

See also:
  README.md (in /usr/share/doc/gunicorn-ebpf-exporter/ where the .deb
  installed it): every metric, the hook mapping, the privileges kept, the
  limits and troubleshooting.";

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
            Generate::Man => return man_page(command, out),
            Generate::Bash => clap_complete::Shell::Bash,
            Generate::Zsh => clap_complete::Shell::Zsh,
            Generate::Fish => clap_complete::Shell::Fish,
        };
        let name = command.get_name().to_string();
        clap_complete::generate(shell, &mut command, name, out);
        Ok(())
    }
}

/// The man page: clap_mangen's sections, then those after the options
/// written here, since clap_mangen would fill their lines (the examples and
/// the exit codes) into paragraphs.
fn man_page(command: clap::Command, out: &mut impl std::io::Write) -> std::io::Result<()> {
    use roff::{Roff, roman};
    let man = clap_mangen::Man::new(command.after_long_help(None::<&str>));
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    man.render_options_section(out)?;
    let mut roff = Roff::new();
    for line in AFTER_LONG_HELP.lines() {
        match line.strip_suffix(':') {
            Some(heading) if !line.starts_with(' ') => {
                roff.control("SH", [heading.to_uppercase().as_str()])
                    .control("nf", []);
            }
            _ => {
                roff.text([roman(line.strip_prefix("  ").unwrap_or(line))]);
            }
        }
    }
    roff.to_writer(out)?;
    man.render_version_section(out)
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

fn matcher(pattern: &str) -> Result<Matcher, regex::Error> {
    Matcher::new(Some(pattern))
}

/// Which masters to watch.
#[derive(Debug)]
pub enum Target<'a> {
    /// One master, from --pid or --pidfile (today's labels).
    Pid(u32),
    Pidfile(&'a std::path::Path),
    /// Every master on the host (--all, or neither --pid nor --pidfile).
    Discover {
        matcher: &'a Matcher,
        labels: &'a [EnvLabel],
    },
}

impl Options {
    pub fn target(&self) -> Target<'_> {
        match (&self.pid, &self.pidfile, &self.match_) {
            (Some(pid), _, _) => Target::Pid(*pid),
            (None, Some(path), _) => Target::Pidfile(path),
            (None, None, matcher) => Target::Discover {
                matcher: matcher.as_ref().unwrap_or(&ANY),
                labels: &self.label_from_env,
            },
        }
    }
}

static ANY: Matcher = Matcher::ANY;

/// Seconds as a Duration; too many (or `inf`) is the longest one.
fn seconds(s: f64) -> Duration {
    Duration::try_from_secs_f64(s).unwrap_or(Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_master_or_discovery() {
        assert!(matches!(
            Options::try_parse_from(["x"]).unwrap().target(),
            Target::Discover { .. }
        ));
        let o = Options::try_parse_from([
            "x",
            "--all",
            "--match",
            "shop",
            "--label-from-env",
            "POD_NAME",
            "--label-from-env",
            "namespace=POD_NAMESPACE",
        ])
        .unwrap();
        let Target::Discover { labels, .. } = o.target() else {
            panic!("{o:?}")
        };
        assert_eq!(
            labels.iter().map(|l| l.to_string()).collect::<Vec<_>>(),
            ["pod_name=POD_NAME", "namespace=POD_NAMESPACE"]
        );
        assert!(matches!(
            Options::try_parse_from(["x", "--pidfile", "/p"])
                .unwrap()
                .target(),
            Target::Pidfile(_)
        ));
        // Discovery's options do not go with one master.
        for bad in [
            &["x", "--pid", "1", "--all"][..],
            &["x", "--pidfile", "/p", "--match", "a"],
            &["x", "--pid", "1", "--label-from-env", "POD_NAME"],
            &["x", "--match", "("],
            &["x", "--label-from-env", "app=APP"],
        ] {
            assert!(Options::try_parse_from(bad).is_err(), "{bad:?}");
        }
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

    /// `--help` reads like a man page: a description, the options in
    /// sections, a value name for every option that takes one, examples,
    /// the environment and the exit status. So does the man page.
    #[test]
    fn help_reads_like_a_man_page() {
        let mut command = Options::command();
        let help = command.render_long_help().to_string();
        for section in [
            "Target:",
            "Endpoint:",
            "Series:",
            "Kernel hooks:",
            "Logs and hook commands:",
            "Routes:",
            "Redis:",
            "Examples:",
            "Environment:",
            "Exit status:",
            "See also:",
        ] {
            assert!(help.contains(section), "--help lacks {section}");
        }
        for arg in command.get_arguments() {
            let id = arg.get_id().as_str();
            if ["help", "version"].contains(&id) {
                continue;
            }
            assert!(arg.get_help_heading().is_some(), "--{id} has no section");
            if arg.get_action().takes_values() {
                let names = arg.get_value_names().unwrap_or_default();
                assert!(!names.is_empty(), "--{id} has no value name");
                assert!(
                    names.iter().all(|n| n
                        .chars()
                        .all(|c| c.is_ascii_uppercase() || "=_".contains(c))),
                    "--{id}: value name {names:?}"
                );
            }
        }
        // Lines fit a terminal: clap wraps at 100 columns at most.
        assert!(help.lines().all(|l| l.chars().count() <= 100), "{help}");
        let mut man = Vec::new();
        Generate::Man.write(&mut man).unwrap();
        let man = String::from_utf8(man).unwrap();
        for section in [
            "DESCRIPTION",
            "OPTIONS",
            "EXIT STATUS",
            "EXAMPLES",
            "ENVIRONMENT",
        ] {
            assert!(man.contains(section), "the man page lacks {section}");
        }
    }

    #[test]
    fn web_config_file_has_the_toolkit_flag_name() {
        let o =
            Options::try_parse_from(["x", "--pid", "1", "--web.config.file", "/w.yml"]).unwrap();
        assert_eq!(o.web_config_file, Some(PathBuf::from("/w.yml")));
    }

    #[test]
    fn aggregate_is_a_subcommand_without_the_attach_options() {
        let o = Options::try_parse_from([
            "x",
            "aggregate",
            "--redis-url",
            "redis://h:1/2",
            "--port",
            "9100",
        ])
        .unwrap();
        match o.command {
            Some(Subcommand::Aggregate(a)) => {
                assert_eq!(a.redis.redis_url.as_deref(), Some("redis://h:1/2"));
                assert_eq!(a.port, 9100);
            }
            None => panic!("no subcommand"),
        }
        // The attach options belong to the exporter, not the aggregate.
        assert!(Options::try_parse_from(["x", "aggregate", "--pid", "1"]).is_err());
        assert!(Options::try_parse_from(["x", "--pid", "1", "aggregate"]).is_err());
        let o = Options::try_parse_from(["x", "--pid", "1", "--redis-url", "redis://h"]).unwrap();
        assert!(o.command.is_none());
        assert_eq!(o.redis.redis_url.as_deref(), Some("redis://h"));
    }

    #[test]
    fn buckets_parse() {
        let o = Options::try_parse_from(["x", "--pid", "1", "--buckets", "0.5,1,2"]).unwrap();
        assert_eq!(o.buckets, vec![0.5, 1.0, 2.0]);
    }
}
