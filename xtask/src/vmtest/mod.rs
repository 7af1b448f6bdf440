//! `cargo xtask vmtest [--kernel SERIES ...]`: the VM suite
//! (`tests/tests/vm.rs`) on the kernels operators run, each booted under
//! QEMU, two at a time: `full_` tests on 6.1 (the oldest kernel the exporter
//! fully supports), `smoke_` tests on 6.12 and 6.18, and on 5.10 the
//! `refuse_` test (the exporter must refuse it in one clear line).
//!
//! Kernels are Debian's packages ([`kernels`]), cached outside the clone;
//! [`boot`] runs one VM. `cargo xtask test` runs the whole matrix after the
//! host suite and counts its tests.

mod boot;
mod kernels;

use std::{
    collections::VecDeque,
    path::Path,
    sync::{
        Mutex, MutexGuard,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use clap::Args;

pub use kernels::Series;

use crate::{
    build, commands, exporter_bin, setup, target_dir, test::Tally, test_apps_dir, venv, venv_dir,
    workspace_root,
};

#[derive(Debug, Args)]
pub struct Options {
    /// A kernel series to boot (repeatable; default: 6.1 6.12 6.18 5.10).
    #[arg(long = "kernel", value_enum, value_name = "SERIES")]
    pub kernels: Vec<Series>,
    /// Run the VM suite's tests whose names contain this instead of each
    /// series' own (`full_`, `smoke_`, `refuse_`), e.g. `full_` on 6.18.
    #[arg(long, value_name = "NAME")]
    pub tests: Option<String>,
    /// VMs running at once.
    #[arg(long, default_value_t = JOBS)]
    pub jobs: usize,
}

/// VMs at once by default: the suite runs one test at a time, so an emulated
/// VM keeps about one core busy, and this machine has two.
pub const JOBS: usize = 2;

/// Deadlines of the suite's waits in a VM, as multiples of the host's: Python
/// runs 5-10x slower under emulation (and slower still while two VMs share
/// the cores).
const TIMEOUT_SCALE: &str = "4";

pub fn run(opts: Options) -> Result<()> {
    build::run(build::Options::default())?;
    let series = if opts.kernels.is_empty() {
        Series::ALL.to_vec()
    } else {
        opts.kernels
    };
    let runs = matrix(&series, opts.tests.as_deref(), opts.jobs)?;
    let mut tally = Tally::default();
    for r in &runs {
        r.count(&mut tally);
    }
    println!("{} passed, {} failed", tally.passed, tally.failed);
    if runs.iter().any(|r| !r.passed()) {
        bail!("the VM suite failed on some kernel (see above)");
    }
    Ok(())
}

/// Which tests of the VM suite a series runs, and how long its VM may take
/// (about twice what it takes on this 2-core machine with two VMs at once:
/// boot ~25 s, then ~40-60 s per test, mostly Gunicorn's boot and the
/// exporter's BPF loading, emulated).
fn plan(series: Series) -> (&'static str, Duration) {
    match series {
        Series::V6_1 => ("full_", Duration::from_secs(900)),
        Series::V6_12 | Series::V6_18 => ("smoke_", Duration::from_secs(420)),
        Series::V5_10 => ("refuse_", Duration::from_secs(240)),
    }
}

/// One kernel's part of the matrix.
pub struct KernelRun {
    pub series: Series,
    kernel: Option<kernels::Kernel>,
    outcome: Option<boot::Outcome>,
    /// Why it has no outcome (the kernel could not be had, the VM not started).
    problem: Option<String>,
}

impl KernelRun {
    /// The tests the guest's output counts.
    fn reported(&self) -> Tally {
        let mut t = Tally::default();
        for line in self.outcome.iter().flat_map(|o| o.output.lines()) {
            t.add_line(line);
        }
        t
    }

    /// The suite's own counts, plus one failure for a run that failed
    /// without a failed test (no kernel, a crash, a timeout, no test run).
    pub fn count(&self, tally: &mut Tally) {
        let own = self.reported();
        tally.passed += own.passed;
        tally.failed += if self.passed() {
            own.failed
        } else {
            own.failed.max(1)
        };
    }

    /// Whether it ended by itself, ran tests and all passed.
    pub fn passed(&self) -> bool {
        self.problem.is_none()
            && self.reported().passed > 0
            && self
                .outcome
                .as_ref()
                .is_some_and(|o| o.problem.is_none() && o.exit_code == Some(0))
    }

    /// One line for the summary table.
    fn summary(&self) -> String {
        let kernel = self
            .kernel
            .as_ref()
            .map_or("-".to_string(), |k| format!("{} {}", k.package, k.version));
        let result = match (&self.problem, &self.outcome) {
            (Some(p), _) => format!("error: {}", p.lines().next().unwrap_or_default()),
            (None, Some(o)) => {
                let t = self.reported();
                let mut r = format!("{} passed, {} failed", t.passed, t.failed);
                if let Some(p) = &o.problem {
                    r.push_str(&format!(" ({})", p.lines().next().unwrap_or_default()));
                } else if t.failed == 0 && !self.passed() {
                    r.push_str(&format!(" (exit code {:?})", o.exit_code));
                }
                format!("{r} in {:.0} s", o.wall.as_secs_f64())
            }
            (None, None) => "not run".to_string(),
        };
        format!("{:<5} {kernel:<58} {result}", self.series.name())
    }
}

static STOP: AtomicBool = AtomicBool::new(false);

/// Boots each of `series` (the exporter must be built), `jobs` VMs at a
/// time, and runs its part of the VM suite (or the tests `tests` names). A
/// kernel that cannot be had or booted is a failed run, and the others still
/// run; Ctrl-C stops everything.
pub fn matrix(series: &[Series], tests: Option<&str>, jobs: usize) -> Result<Vec<KernelRun>> {
    setup::vm_only()?;
    let test_bin = vm_test_binary()?;
    // QEMU runs in its own process group, which the terminal's Ctrl-C does
    // not reach: xtask kills it.
    ctrlc::set_handler(|| STOP.store(true, Ordering::SeqCst))
        .context("installing the Ctrl-C handler")?;
    // Every kernel first, one after the other: apt's cache takes one download
    // at a time. The archive stays locked until the VMs are done, so another
    // run (another clone) cannot prune a tree a VM boots from.
    let archive = kernels::Archive::open()?;
    let queue: VecDeque<(Series, Result<kernels::Kernel>)> =
        series.iter().map(|&s| (s, archive.kernel(s))).collect();

    let queue = Mutex::new(queue);
    let done = Mutex::new(Vec::new());
    thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            scope.spawn(|| {
                while !STOP.load(Ordering::SeqCst) {
                    let Some((s, kernel)) = lock(&queue).pop_front() else {
                        break;
                    };
                    let run = run_one(s, kernel, &test_bin, tests);
                    lock(&done).push(run);
                }
            });
        }
    });
    drop(archive);
    if STOP.load(Ordering::SeqCst) {
        bail!("interrupted (Ctrl-C): the VMs were killed");
    }
    let mut runs = done.into_inner().unwrap_or_else(|e| e.into_inner());
    runs.sort_by_key(|r| series.iter().position(|s| *s == r.series));
    println!("vmtest: summary (series, Debian package, VM suite result, VM wall time):");
    for r in &runs {
        println!("  {}", r.summary());
    }
    Ok(runs)
}

/// A mutex's guard, even if another lane panicked holding it.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One kernel's VM and what came of it.
fn run_one(
    s: Series,
    kernel: Result<kernels::Kernel>,
    test_bin: &Path,
    tests: Option<&str>,
) -> KernelRun {
    let (filter, timeout) = match tests {
        // Any test may be among them: the longest series' time.
        Some(t) => (t, plan(Series::V6_1).1),
        None => plan(s),
    };
    let mut run = KernelRun {
        series: s,
        kernel: None,
        outcome: None,
        problem: None,
    };
    match kernel {
        Err(e) => run.problem = Some(format!("{e:#}")),
        Ok(kernel) => {
            println!(
                "vmtest: {}: booting {} ({} {} from {}), running the tests named *{filter}*...",
                s.name(),
                kernel.release,
                kernel.package,
                kernel.version,
                kernel.suite
            );
            let guest = boot::Guest {
                label: s.name(),
                kernel: &kernel,
                test_bin,
                filter,
                env: vec![
                    ("EXPORTER_BIN", exporter_bin().display().to_string()),
                    (
                        "GUNICORN27_VENV",
                        venv_dir(venv::GUNICORN27.name).display().to_string(),
                    ),
                    (
                        "GUNICORN23_VENV",
                        venv_dir(venv::GUNICORN23.name).display().to_string(),
                    ),
                    ("TEST_APPS_DIR", test_apps_dir().display().to_string()),
                    ("TEST_TIMEOUT_SCALE", TIMEOUT_SCALE.to_string()),
                ],
                results: target_dir().join("vmtest").join(s.name()),
                timeout,
            };
            // Under emulation the guest kernel can die of its own live code
            // patching (an int3 left from text_poke_bp in __schedule, seen on
            // 6.12 and 6.18 as tracepoints are switched on and off): boot such
            // a VM once more, saying so; the suite must then pass in full.
            let mut result = boot::run(&guest, &STOP);
            if matches!(&result, Ok(o) if o.guest_panic) {
                // Kept beside the results, which the next boot starts afresh.
                let kept = guest
                    .results
                    .with_file_name(format!("{}-panicked-vng.log", s.name()));
                let _ = std::fs::rename(guest.results.join("vng.log"), &kept);
                eprintln!(
                    "vmtest: {}: the guest kernel panicked before the suite ended (console in {}); booting it once more",
                    s.name(),
                    kept.display()
                );
                result = boot::run(&guest, &STOP);
            }
            match result {
                Ok(o) if o.release.as_ref().is_some_and(|r| *r != kernel.release) => {
                    run.problem = Some(format!(
                        "the VM ran {:?}, not {}",
                        o.release, kernel.release
                    ));
                    run.outcome = Some(o);
                }
                Ok(o) => run.outcome = Some(o),
                Err(e) => run.problem = Some(format!("{e:#}")),
            }
            run.kernel = Some(kernel);
        }
    }
    if let Some(p) = run
        .problem
        .as_ref()
        .or(run.outcome.as_ref().and_then(|o| o.problem.as_ref()))
    {
        eprintln!("vmtest: {}: {p}", s.name());
    }
    println!("vmtest: {}", run.summary());
    run
}

/// Builds the VM suite's test binary; its path.
fn vm_test_binary() -> Result<std::path::PathBuf> {
    println!("vmtest: building the VM suite (tests/tests/vm.rs)...");
    let mut cmd = commands::cargo();
    cmd.current_dir(workspace_root()).args([
        "test",
        "--release",
        "-p",
        "integration-tests",
        "--test",
        "vm",
        "--no-run",
        "--message-format=json",
    ]);
    let out = commands::output(&mut cmd).context("building the VM suite failed")?;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] == "compiler-artifact"
            && msg["target"]["name"] == "vm"
            && let Some(exe) = msg["executable"].as_str()
        {
            return Ok(exe.into());
        }
    }
    bail!(
        "`{}` named no test executable for tests/tests/vm.rs",
        commands::describe(&cmd)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(output: &str, exit_code: Option<i32>, problem: Option<&str>) -> KernelRun {
        KernelRun {
            series: Series::V6_1,
            kernel: None,
            outcome: Some(boot::Outcome {
                output: output.to_string(),
                exit_code,
                release: None,
                wall: Duration::from_secs(1),
                problem: problem.map(str::to_string),
                guest_panic: false,
            }),
            problem: None,
        }
    }

    fn counted(r: &KernelRun) -> (u64, u64) {
        let mut t = Tally::default();
        r.count(&mut t);
        (t.passed, t.failed)
    }

    #[test]
    fn counts_a_kernels_tests() {
        let ok = "test result: ok. 5 passed; 0 failed; 0 ignored; 0 measured; 3 filtered out";
        let failed = "test result: FAILED. 1 passed; 1 failed; 0 ignored; 0 measured";
        assert_eq!(counted(&run(ok, Some(0), None)), (5, 0));
        assert!(run(ok, Some(0), None).passed());
        assert_eq!(counted(&run(failed, Some(101), None)), (1, 1));
        // Killed on its deadline halfway: what it reported, and a failure.
        assert_eq!(counted(&run("", None, Some("timed out"))), (0, 1));
        // A filter that matched nothing is no pass.
        let none = "test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 8 filtered out";
        assert_eq!(counted(&run(none, Some(0), None)), (0, 1));
        let missing = KernelRun {
            series: Series::V5_10,
            kernel: None,
            outcome: None,
            problem: Some("no package".into()),
        };
        assert_eq!(counted(&missing), (0, 1));
    }
}
