//! `cargo xtask test [-- ARGS]`: setup, build (the `dist` artifacts too), then
//! the host test steps, stopping at the first failed step, then the VM suite on
//! each kernel of the matrix (`cargo xtask vmtest`). Ends with the plain line
//! `N passed, M failed`, the tests counted over every step's `test result:`
//! lines and every VM's, which CI reads.

use std::{
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
};

use anyhow::Result;
use clap::Args;

use crate::{
    build, commands, dist, exporter_bin, setup, test_apps_dir, venv, venv_dir, vmtest,
    workspace_root,
};

#[derive(Debug, Default, Args)]
pub struct Options {
    /// Only the host steps, not the VM suite (`cargo xtask vmtest` runs it alone).
    #[arg(long)]
    pub no_vm: bool,
    /// Extra arguments for the integration test binaries (after `--`), e.g. a
    /// test name filter or `--nocapture`.
    #[arg(last = true)]
    pub extra: Vec<String>,
}

/// Integration test threads unless the extra arguments set their own.
const TEST_THREADS: &str = "6";

/// The scenario files whose outcome depends on the hooks (the rest - bad
/// input, hostile scrapes, the harness itself - run with the first set only).
const HOOK_DEPENDENT: &[&str] = &[
    "attach",
    "discovery",
    "durations",
    "fd_reuse",
    "framework_exceptions",
    "lifecycle",
    "memcached",
    "nginx",
    "requests",
    "resources",
    "saturation",
    "slow_reader",
    "uvicorn",
];

pub fn run(opts: Options) -> Result<()> {
    build::run(build::Options::default())?;
    let dist = dist::build()?;
    // Made by setup.
    let debian_root = dist::debootstrap::tarball()?;

    let root = workspace_root();
    let mut steps: Vec<(&str, Command)> = Vec::new();

    // The shared kernel/user library, for the host; `--lib` keeps the eBPF
    // binary (bpfel only) out of it.
    let mut cmd = commands::cargo();
    cmd.args(["test", "-p", "exporter-ebpf", "--lib"]);
    steps.push(("exporter-ebpf unit tests", cmd));

    let mut cmd = commands::cargo();
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

    // Every scenario file runs even when an earlier one fails, so a run shows
    // all failures; once per hook set, the second time only the scenarios
    // whose outcome depends on the hooks.
    for (name, hooks, only) in [
        ("integration tests (socket hooks)", "sockets", &[][..]),
        (
            "integration tests (syscall hooks)",
            "syscalls",
            HOOK_DEPENDENT,
        ),
    ] {
        let mut cmd = commands::cargo();
        cmd.args([
            "test",
            "--release",
            "--no-fail-fast",
            "-p",
            "integration-tests",
        ]);
        for test in only {
            cmd.args(["--test", test]);
        }
        cmd.arg("--");
        if !opts.extra.iter().any(|a| a.starts_with("--test-threads")) {
            cmd.args(["--test-threads", TEST_THREADS]);
        }
        cmd.args(&opts.extra)
            .env("EXPORTER_HOOKS", hooks)
            .env("EXPORTER_BIN", exporter_bin())
            .env("GUNICORN27_VENV", venv_dir(venv::GUNICORN27.name))
            .env("GUNICORN23_VENV", venv_dir(venv::GUNICORN23.name))
            .env("STACKS_VENV", venv_dir(venv::STACKS.name))
            .env("NGINX_BIN", setup::NGINX)
            .env("MEMCACHED_BIN", setup::MEMCACHED)
            .env("REDIS_SERVER_BIN", setup::REDIS_SERVER)
            .env("PROMETHEUS_BIN", setup::PROMETHEUS)
            .env("PROMTOOL_BIN", setup::PROMTOOL)
            .env("TEST_APPS_DIR", test_apps_dir())
            .env("DIST_BIN", &dist.binary)
            .env("DIST_DEB", &dist.deb)
            .env("DEBIAN_ROOT_TAR", &debian_root);
        steps.push((name, cmd));
    }

    let mut tally = Tally::default();
    let mut failures = Vec::new();
    let steps_count = steps.len();
    let mut ran = 0;
    for (name, mut cmd) in steps {
        cmd.current_dir(&root);
        println!("test: {name}: {}", commands::describe(&cmd));
        ran += 1;
        if let Err(e) = run_counting(&mut cmd, &mut tally) {
            failures.push(format!("{name}: {e:#}"));
            // Unit tests failing stop the run; integration steps all run.
            if !name.starts_with("integration") {
                break;
            }
        }
    }
    // After the host suite, failed integration tests included (a run shows
    // all failures): the VMs alone have the machine.
    if !opts.no_vm && ran == steps_count && failures.iter().all(|f| f.starts_with("integration")) {
        let all = vmtest::Series::ALL;
        println!("test: VM suite on kernels {:?}", all.map(|s| s.name()));
        match vmtest::matrix(&all, None, vmtest::JOBS) {
            Ok(runs) => {
                for r in &runs {
                    r.count(&mut tally);
                }
                let failed: Vec<&str> = runs
                    .iter()
                    .filter(|r| !r.passed())
                    .map(|r| r.series.name())
                    .collect();
                if !failed.is_empty() {
                    failures.push(format!("VM suite: failed on {}", failed.join(", ")));
                }
            }
            Err(e) => {
                tally.failed += 1;
                failures.push(format!("VM suite: {e:#}"));
            }
        }
    }
    if tally.passed == 0 && failures.is_empty() {
        failures.push("no test ran".to_string());
    }
    for f in &failures {
        eprintln!("xtask: error: {f}");
    }
    // Last line of the output, for CI: a failed step counts at least once
    // even when it failed before any test ran (a build error).
    let failed = tally.failed.max(!failures.is_empty() as u64);
    println!("{} passed, {failed} failed", tally.passed);
    if !failures.is_empty() {
        std::process::exit(1);
    }
    Ok(())
}

/// Tests counted from cargo's `test result: ok. N passed; M failed; ...` lines.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub passed: u64,
    pub failed: u64,
}

impl Tally {
    pub fn add_line(&mut self, line: &str) {
        let Some(rest) = line.trim().strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(kind), Some(n)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(n) = n.parse::<u64>() else { continue };
            match kind {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                _ => {}
            }
        }
    }
}

/// Runs `cmd`, echoing its stdout while counting its test results.
fn run_counting(cmd: &mut Command, tally: &mut Tally) -> Result<()> {
    let mut child = cmd.stdout(Stdio::piped()).spawn()?;
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines() {
            let line = line?;
            println!("{line}");
            tally.add_line(&line);
        }
    }
    let status = child.wait()?;
    if !status.success() {
        anyhow::bail!("command failed ({status}): `{}`", commands::describe(cmd));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_cargo_test_results() {
        let mut t = Tally::default();
        t.add_line("test result: ok. 35 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.05s");
        t.add_line("test result: FAILED. 6 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 15.81s");
        t.add_line("running 3 tests");
        assert_eq!(
            t,
            Tally {
                passed: 41,
                failed: 2
            }
        );
    }
}
