//! Long-running children of xtask (gunicorn masters, the exporter,
//! redis-server, QEMU), shared by the demo, the bench and vmtest; one-shot
//! commands are in `commands`.

use std::{
    fs::File,
    os::unix::process::CommandExt as _,
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use integration_tests::{fixtures::die_with_parent, tail_file};

use crate::commands;

/// A child in its own process group, so the terminal's Ctrl-C reaches only
/// xtask, which stops its children itself; sent SIGTERM by the kernel if
/// xtask dies; stopped when dropped.
pub struct BackgroundProcess {
    pub name: String,
    child: Child,
    /// Files whose tails explain an early death: its stdout+stderr first.
    logs: Vec<PathBuf>,
    /// Signal that stops it quickly (gunicorn: SIGINT or SIGTERM).
    stop_signal: libc::c_int,
    exited: bool,
}

impl BackgroundProcess {
    /// Starts `cmd` with its stdout and stderr in `output`.
    pub fn spawn(
        name: impl Into<String>,
        mut cmd: Command,
        output: PathBuf,
        stop_signal: libc::c_int,
    ) -> Result<Self> {
        let out =
            File::create(&output).with_context(|| format!("creating {}", output.display()))?;
        let err = out.try_clone()?;
        cmd.stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        die_with_parent(&mut cmd);
        let child = cmd
            .spawn()
            .with_context(|| format!("could not start `{}`", commands::describe(&cmd)))?;
        Ok(Self {
            name: name.into(),
            child,
            logs: vec![output],
            stop_signal,
            exited: false,
        })
    }

    /// More files (its own log files) to show when it dies early.
    pub fn with_logs(mut self, more: impl IntoIterator<Item = PathBuf>) -> Self {
        self.logs.extend(more);
        self
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last lines of its output and logs, for error messages.
    pub fn tail(&self) -> String {
        self.logs
            .iter()
            .map(|log| {
                format!(
                    "--- {} (last lines of {}):\n{}",
                    self.name,
                    log.display(),
                    tail_file(log, 25)
                )
            })
            .collect()
    }

    /// Fail, showing its output, if it has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        if self.exited {
            bail!("{} is not running", self.name);
        }
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => {
                self.exited = true;
                bail!("{} exited early ({status})\n{}", self.name, self.tail())
            }
            Err(e) => Err(e).with_context(|| format!("waiting for {}", self.name)),
        }
    }

    /// Whether it has exited (reaping it if so).
    pub fn exited(&mut self) -> Result<Option<ExitStatus>> {
        if self.exited {
            bail!("{} was already stopped", self.name);
        }
        let status = self
            .child
            .try_wait()
            .with_context(|| format!("waiting for {}", self.name))?;
        self.exited = status.is_some();
        Ok(status)
    }

    /// SIGKILL to its whole process group at once (a child that hands its work
    /// to a grandchild, like vng to QEMU), then waits for it.
    pub fn kill_group(&mut self) {
        if self.exited {
            return;
        }
        // SAFETY: plain syscall; the group is the one our child leads, and the
        // child is not reaped yet, so its pid (= the group id) is still ours.
        unsafe { libc::kill(-(self.child.id() as libc::pid_t), libc::SIGKILL) };
        let _ = self.child.wait();
        self.exited = true;
    }

    /// Its stop signal, then SIGKILL to its process group after 10 s; waits for it.
    pub fn stop(&mut self) {
        if self.exited || !matches!(self.child.try_wait(), Ok(None)) {
            self.exited = true;
            return;
        }
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: plain syscall on our own, not yet reaped, child.
        unsafe { libc::kill(pid, self.stop_signal) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                self.exited = true;
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "xtask: {} ignored its stop signal for 10 s; killing it",
            self.name
        );
        // Its whole process group (gunicorn workers included).
        // SAFETY: as above; the group is the one it leads.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
        let _ = self.child.wait();
        self.exited = true;
    }
}

impl Drop for BackgroundProcess {
    fn drop(&mut self) {
        self.stop();
    }
}
