//! One VM: a kernel booted under QEMU by virtme-ng (`vng`) with the host's
//! filesystem, running the VM suite, and what it wrote back.
//!
//! Emulated (TCG, `--disable-kvm`): this machine's /dev/kvm runs only
//! kernels built for its hypervisor, stock ones abort or hang there.

use std::{
    fs,
    io::{Read as _, Seek as _, SeekFrom},
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

use super::kernels::Kernel;
use crate::{background::BackgroundProcess, commands, venv, venv_dir, workspace_root};

/// How often the VM is checked on (and its output echoed).
const POLL: Duration = Duration::from_millis(200);

/// What to run in the VM.
pub struct Guest<'a> {
    /// Prefixes its echoed output (VMs run side by side).
    pub label: &'a str,
    pub kernel: &'a Kernel,
    /// The VM suite's test binary, run in place.
    pub test_bin: &'a Path,
    /// Which of its tests (a name filter).
    pub filter: &'a str,
    /// The tests' environment (host paths are seen as they are).
    pub env: Vec<(&'static str, String)>,
    /// Where the guest writes its results; emptied first.
    pub results: PathBuf,
    /// QEMU is killed after this.
    pub timeout: Duration,
}

/// How a VM run ended.
#[derive(Debug)]
pub struct Outcome {
    /// What the test binary printed (empty if it never ran).
    pub output: String,
    /// Its exit code, when it ended by itself.
    pub exit_code: Option<i32>,
    /// `uname -r` in the guest.
    pub release: Option<String>,
    pub wall: Duration,
    /// Why the run has no exit code (timeout, the VM died).
    pub problem: Option<String>,
    /// The guest kernel panicked before the suite ended (its console in
    /// vng.log says so).
    pub guest_panic: bool,
}

/// Boots the kernel, runs the suite, reads the results. `stop` (Ctrl-C)
/// kills the VM and returns an error.
pub fn run(guest: &Guest, stop: &AtomicBool) -> Result<Outcome> {
    let results = &guest.results;
    if results.exists() {
        fs::remove_dir_all(results).with_context(|| format!("removing {}", results.display()))?;
    }
    fs::create_dir_all(results).with_context(|| format!("creating {}", results.display()))?;
    let script = results.join("guest.sh");
    fs::write(&script, script_text(guest))
        .with_context(|| format!("writing {}", script.display()))?;

    let vng_bin = venv_dir(venv::VIRTME_NG.name).join("bin");
    let mut cmd = commands::command(vng_bin.join("vng"));
    // vng runs virtme-run, which lives beside it.
    let path = std::env::join_paths(
        std::iter::once(vng_bin.clone()).chain(std::env::split_paths(&commands::child_path())),
    )
    .context("building PATH for vng")?;
    cmd.env("PATH", path)
        .current_dir(workspace_root())
        .arg("--run")
        .arg(&guest.kernel.vmlinuz)
        .args([
            // The guest kernel's console goes to vng.log: a VM that stops
            // early (a kernel panic reboots it) leaves its reason there.
            "--verbose",
            "--force-9p",
            "--disable-kvm",
            "--cpus",
            "2",
            "--memory",
            "2G",
        ])
        .arg(format!("--rwdir={}", results.display()))
        .arg("--exec")
        .arg(format!(
            "sh {}",
            commands::quote(&script.display().to_string())
        ));
    println!("vmtest: {}", commands::describe(&cmd));

    let start = Instant::now();
    let log = results.join("vng.log");
    let mut vm = BackgroundProcess::spawn(
        format!("vng ({})", guest.kernel.release),
        cmd,
        log.clone(),
        libc::SIGTERM,
    )?;
    let mut echo = Echo::new(guest.label, results.join("output"), start);
    let mut problem = None;
    loop {
        echo.lines();
        if vm.exited()?.is_some() {
            break;
        }
        if stop.load(Ordering::SeqCst) {
            vm.kill_group();
            anyhow::bail!("interrupted: the VM ({}) was killed", guest.kernel.release);
        }
        if start.elapsed() >= guest.timeout {
            vm.kill_group();
            problem = Some(format!(
                "timed out after {} s: QEMU was killed",
                guest.timeout.as_secs()
            ));
            break;
        }
        thread::sleep(POLL);
    }
    let wall = start.elapsed();
    echo.lines();
    echo.rest();

    let read = |name: &str| fs::read_to_string(results.join(name)).ok();
    let exit_code = read("exit-code").and_then(|c| c.trim().parse().ok());
    let guest_panic = exit_code.is_none()
        && fs::read_to_string(&log).is_ok_and(|l| l.contains("Kernel panic - not syncing"));
    if exit_code.is_none() && problem.is_none() {
        problem = Some(format!(
            "the VM stopped before the suite ended (no {}); the end of vng's output:\n{}",
            results.join("exit-code").display(),
            integration_tests::tail_file(&log, 30)
        ));
    }
    Ok(Outcome {
        output: read("output").unwrap_or_default(),
        exit_code,
        release: read("release").map(|r| r.trim().to_string()),
        wall,
        problem,
        guest_panic,
    })
}

/// The guest script: the variables it needs, then `guest.sh`.
fn script_text(guest: &Guest) -> String {
    let mut text = String::from("# Written by `cargo xtask vmtest` for this run.\n");
    let mut var = |name: &str, value: &str| {
        text.push_str(&format!("export {name}={}\n", commands::quote(value)));
    };
    var("RESULTS", &guest.results.display().to_string());
    var("TEST_BIN", &guest.test_bin.display().to_string());
    var("FILTER", guest.filter);
    for (name, value) in &guest.env {
        var(name, value);
    }
    text.push_str(include_str!("guest.sh"));
    text
}

/// Echoes the lines a file gains while the VM writes it (the suite's
/// progress, through 9p), each with the time since the VM started: libtest
/// ends a test's line when the test ends, so this times every test.
struct Echo<'a> {
    label: &'a str,
    path: PathBuf,
    start: Instant,
    offset: u64,
    partial: String,
}

impl<'a> Echo<'a> {
    fn new(label: &'a str, path: PathBuf, start: Instant) -> Echo<'a> {
        Echo {
            label,
            path,
            start,
            offset: 0,
            partial: String::new(),
        }
    }

    /// Prints the complete lines added since the last call.
    fn lines(&mut self) {
        let Ok(mut file) = fs::File::open(&self.path) else {
            return;
        };
        let mut bytes = Vec::new();
        if file.seek(SeekFrom::Start(self.offset)).is_err() || file.read_to_end(&mut bytes).is_err()
        {
            return;
        }
        self.offset += bytes.len() as u64;
        self.partial.push_str(&String::from_utf8_lossy(&bytes));
        let secs = self.start.elapsed().as_secs_f64();
        while let Some(end) = self.partial.find('\n') {
            println!("  {:<5}|{secs:6.1}s| {}", self.label, &self.partial[..end]);
            self.partial.drain(..=end);
        }
    }

    /// Prints a last line without a newline.
    fn rest(&mut self) {
        if !self.partial.is_empty() {
            println!(
                "  |{:6.1}s| {}",
                self.start.elapsed().as_secs_f64(),
                self.partial
            );
            self.partial.clear();
        }
    }
}
