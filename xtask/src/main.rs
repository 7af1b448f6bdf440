//! Project tasks: `cargo xtask <task>`.
//!
//! - `setup`: install what building and testing need (nightly + rust-src, LLVM 22,
//!   bpf-linker, tracefs, wrk, nginx, memcached, the Python venvs); idempotent
//!   and fast when done.
//! - `venv`: only the Python venvs with the pinned Gunicorn versions.
//! - `build`: setup, then the release exporter (its build.rs builds the eBPF object).
//! - `dist`: the release artifacts in `target/dist/`: a static x86-64 binary,
//!   a .deb (unit, man page, completions, dashboards), SHA256SUMS.
//! - `demo`: run a sample Gunicorn with the exporter attached and show its metrics.
//! - `test`: setup, build, then the unit and integration tests, then the VM
//!   suite on each kernel of the matrix.
//! - `vmtest`: setup, build, then the VM suite on Debian's 6.1, 6.12, 6.18 and
//!   5.10 kernels (or those named), each booted under QEMU.
//! - `bench`: setup, build, then measure what the exporter and the usual
//!   alternatives cost gunicorn (not part of the tests; several minutes).

mod background;
mod bench;
mod build;
mod commands;
mod demo;
mod dist;
mod setup;
mod test;
mod venv;
mod vmtest;

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "xtask",
    bin_name = "cargo xtask",
    about = "gunicorn-ebpf-exporter project tasks"
)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Install what is missing to build and test (toolchains, LLVM, bpf-linker, venvs...).
    Setup(setup::Options),
    /// Create or update the Python venvs with the pinned Gunicorn versions.
    Venv(venv::Options),
    /// Setup, then build the exporter in release mode.
    Build(build::Options),
    /// Build what ships, in target/dist/: a static x86-64 binary, a .deb
    /// (systemd unit, man page, completions, dashboards) and SHA256SUMS.
    Dist(dist::Options),
    /// Run a sample Gunicorn with the exporter attached and show its metrics.
    Demo(demo::Options),
    /// Setup, build, then run the unit and integration tests, then the VM suite.
    Test(test::Options),
    /// Setup, build, then run the VM suite on Debian kernels booted under QEMU.
    Vmtest(vmtest::Options),
    /// Measure the cost and accuracy of the exporter (each hook set) against
    /// plain gunicorn and the alternatives (statsd, gunicorn-prometheus-exporter),
    /// and what it costs the rest of the host; writes target/bench/report.md and
    /// chart.svg. Needs root; takes ~40 min.
    Bench(bench::Options),
    /// The bench's host-tax loops, run in a child of `bench` (not for users).
    #[command(hide = true)]
    BenchLoops(bench::loops::Options),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Setup(opts) => setup::run(opts),
        Task::Venv(opts) => venv::run(opts),
        Task::Build(opts) => build::run(opts),
        Task::Dist(opts) => dist::run(opts),
        Task::Demo(opts) => demo::run(opts),
        Task::Test(opts) => test::run(opts),
        Task::Vmtest(opts) => vmtest::run(opts),
        Task::Bench(opts) => bench::run(opts),
        Task::BenchLoops(opts) => bench::loops::run(opts),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root (the parent of the xtask crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives inside the workspace")
        .to_path_buf()
}

/// `$XDG_CACHE_HOME/gunicorn-ebpf-exporter`, or `~/.cache/...`: what every
/// clone on the machine reuses (kernels, the Debian root of the package tests).
pub fn cache_dir() -> anyhow::Result<PathBuf> {
    use anyhow::Context as _;
    let base = match std::env::var_os("XDG_CACHE_HOME").map(PathBuf::from) {
        Some(dir) if dir.is_absolute() => dir,
        _ => std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(|h| PathBuf::from(h).join(".cache"))
            .context("neither XDG_CACHE_HOME nor HOME is set: no cache directory")?,
    };
    Ok(base.join("gunicorn-ebpf-exporter"))
}

/// The workspace's target directory.
pub fn target_dir() -> PathBuf {
    workspace_root().join("target")
}

/// Where the Python venv called `name` lives (`target/venvs/<name>`).
pub fn venv_dir(name: &str) -> PathBuf {
    target_dir().join("venvs").join(name)
}

/// The release exporter binary that `cargo xtask build` produces.
pub fn exporter_bin() -> PathBuf {
    target_dir().join("release").join("gunicorn-ebpf-exporter")
}

/// The sample WSGI apps and Gunicorn config used by the tests and the demo.
pub fn test_apps_dir() -> PathBuf {
    workspace_root().join("tests").join("apps")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_passes_extra_args_through() {
        let cli = Cli::try_parse_from(["xtask", "test", "--", "--nocapture", "lifecycle"]).unwrap();
        match cli.task {
            Task::Test(opts) => assert_eq!(opts.extra, ["--nocapture", "lifecycle"]),
            other => panic!("parsed {other:?}"),
        }
    }

    #[test]
    fn bench_options() {
        let cli = Cli::try_parse_from([
            "xtask",
            "bench",
            "--quick",
            "--app",
            "trivial",
            "--variant",
            "ebpf-sockets,empty-syscalls,plugin-redis",
        ])
        .unwrap();
        match cli.task {
            Task::Bench(opts) => {
                assert!(opts.quick);
                assert!(!opts.only_host_tax && !opts.no_host_tax);
                assert_eq!(opts.reps, 5);
                assert_eq!(opts.app, [bench::App::Trivial]);
                assert_eq!(
                    opts.variant,
                    [
                        bench::Variant::EbpfSockets,
                        bench::Variant::EmptySyscalls,
                        bench::Variant::PluginRedis
                    ]
                );
            }
            other => panic!("parsed {other:?}"),
        }
    }

    #[test]
    fn bench_host_tax_options() {
        let cli = Cli::try_parse_from(["xtask", "bench", "--quick", "--only-host-tax"]).unwrap();
        assert!(matches!(cli.task, Task::Bench(o) if o.only_host_tax));
        assert!(
            Cli::try_parse_from(["xtask", "bench", "--only-host-tax", "--no-host-tax"]).is_err()
        );
        let cli = Cli::try_parse_from(["xtask", "bench-loops", "--loop", "getppid,tcp"]).unwrap();
        match cli.task {
            Task::BenchLoops(o) => {
                assert_eq!(
                    o.loops,
                    [bench::loops::Loop::Getppid, bench::loops::Loop::Tcp]
                );
                assert_eq!(o.batches, 20);
            }
            other => panic!("parsed {other:?}"),
        }
    }

    #[test]
    fn vmtest_options() {
        let cli = Cli::try_parse_from(["xtask", "vmtest", "--kernel", "6.1", "--kernel", "5.10"])
            .unwrap();
        match cli.task {
            Task::Vmtest(opts) => {
                assert_eq!(opts.kernels, [vmtest::Series::V6_1, vmtest::Series::V5_10])
            }
            other => panic!("parsed {other:?}"),
        }
        assert!(Cli::try_parse_from(["xtask", "vmtest", "--kernel", "4.19"]).is_err());
    }

    #[test]
    fn demo_options() {
        let cli =
            Cli::try_parse_from(["xtask", "demo", "--duration", "5", "--port", "9999"]).unwrap();
        match cli.task {
            Task::Demo(opts) => {
                assert_eq!(opts.duration, Some(5));
                assert_eq!(opts.port, 9999);
                assert_eq!(opts.app_port, 8000);
            }
            other => panic!("parsed {other:?}"),
        }
    }
}
