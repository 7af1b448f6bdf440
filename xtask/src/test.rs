//! `cargo xtask test [-- ARGS]`: setup, build, then the test steps, stopping at
//! the first failure. Ends with the plain line `N passed, M failed` (N and M
//! count steps), which CI reads.

use std::process::Command;

use anyhow::Result;
use clap::Args;

use crate::{build, exporter_bin, test_apps_dir, util, venv, venv_dir, workspace_root};

#[derive(Debug, Default, Args)]
pub struct Options {
    /// Extra arguments for the integration test binaries (after `--`), e.g. a
    /// test name filter or `--nocapture`.
    #[arg(last = true)]
    pub extra: Vec<String>,
}

/// Integration test threads unless the extra arguments set their own.
const TEST_THREADS: &str = "6";

pub fn run(opts: Options) -> Result<()> {
    build::run(build::Options::default())?;

    let root = workspace_root();
    let mut steps: Vec<(&str, Command)> = Vec::new();

    // The shared kernel/user library, for the host; `--lib` keeps the eBPF
    // binary (bpfel only) out of it.
    let mut cmd = util::cargo();
    cmd.args(["test", "-p", "exporter-ebpf", "--lib"]);
    steps.push(("exporter-ebpf unit tests", cmd));

    let mut cmd = util::cargo();
    cmd.args([
        "test",
        "--release",
        "--workspace",
        "--exclude",
        "exporter-ebpf",
        "--exclude",
        "integration-tests",
    ]);
    steps.push(("exporter unit tests", cmd));

    let mut cmd = util::cargo();
    // Every scenario file runs even when an earlier one fails, so a run shows all failures.
    cmd.args(["test", "--release", "--no-fail-fast", "-p", "integration-tests", "--"]);
    if !opts.extra.iter().any(|a| a.starts_with("--test-threads")) {
        cmd.args(["--test-threads", TEST_THREADS]);
    }
    cmd.args(&opts.extra)
        .env("EXPORTER_BIN", exporter_bin())
        .env("GUNICORN27_VENV", venv_dir(venv::GUNICORN27.name))
        .env("GUNICORN23_VENV", venv_dir(venv::GUNICORN23.name))
        .env("TEST_APPS_DIR", test_apps_dir());
    steps.push(("integration tests", cmd));

    let (mut passed, mut failed) = (0, 0);
    let mut failure = None;
    for (name, mut cmd) in steps {
        cmd.current_dir(&root);
        println!("test: {name}: {}", util::describe(&cmd));
        match util::run(&mut cmd) {
            Ok(()) => passed += 1,
            Err(e) => {
                failed += 1;
                failure = Some(format!("{name}: {e:#}"));
                break;
            }
        }
    }
    if let Some(f) = &failure {
        eprintln!("xtask: error: {f}");
    }
    // Last line of the output, for CI.
    println!("{passed} passed, {failed} failed");
    if failure.is_some() {
        std::process::exit(1);
    }
    Ok(())
}
