//! User actions on hooks (`--on HOOK=COMMAND`): the out-of-process
//! equivalent of gunicorn's hook functions. Commands run through `sh -c` with
//! the event in their environment, off the event path: queued without
//! blocking, run with bounded concurrency and a timeout; outcomes are counted.

use std::{
    collections::BTreeMap,
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use thiserror::Error;
use tokio::sync::{Semaphore, mpsc};

use super::{Hook, Occurrence};

/// Jobs waiting for a slot; beyond this they are dropped (and counted).
const QUEUE: usize = 1024;

#[derive(Debug, Error)]
pub enum ActionError {
    #[error("--on {0:?}: expected HOOK=COMMAND")]
    Syntax(String),
    #[error("--on {spec:?}: unknown hook `{hook}` (one of {known})")]
    UnknownHook {
        spec: String,
        hook: String,
        known: String,
    },
}

/// Actions run, by (hook, result): shared by the runner that counts them and
/// the scrape that reads them.
#[derive(Clone, Debug, Default)]
pub struct Counts(Arc<Mutex<BTreeMap<(Hook, &'static str), u64>>>);

impl Counts {
    fn add(&self, hook: Hook, result: &'static str) {
        *self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((hook, result))
            .or_default() += 1;
    }

    /// (hook, result) -> number of actions, result one of ok, failed, timeout, dropped.
    pub fn read(&self) -> Vec<((Hook, &'static str), u64)> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (*k, *v))
            .collect()
    }
}

struct Job {
    hook: Hook,
    command: String,
    env: Vec<(&'static str, String)>,
}

pub struct Actions {
    commands: BTreeMap<Hook, Vec<String>>,
    queue: Option<mpsc::Sender<Job>>,
    counts: Counts,
}

/// Parses `HOOK=COMMAND`.
pub fn parse(spec: &str) -> Result<(Hook, String), ActionError> {
    let (hook, command) = spec
        .split_once('=')
        .ok_or_else(|| ActionError::Syntax(spec.into()))?;
    if command.trim().is_empty() {
        return Err(ActionError::Syntax(spec.into()));
    }
    let hook = Hook::parse(hook.trim()).ok_or_else(|| ActionError::UnknownHook {
        spec: spec.into(),
        hook: hook.into(),
        known: Hook::ALL.map(Hook::name).join(", "),
    })?;
    Ok((hook, command.to_string()))
}

impl Actions {
    /// The actions, and the task that runs them (spawn it on the runtime).
    pub fn new(
        specs: &[String],
        concurrency: usize,
        timeout: Duration,
    ) -> Result<(Actions, impl std::future::Future<Output = ()> + use<>), ActionError> {
        let mut commands: BTreeMap<Hook, Vec<String>> = BTreeMap::new();
        for spec in specs {
            let (hook, command) = parse(spec)?;
            commands.entry(hook).or_default().push(command);
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        let counts = Counts::default();
        let runner = run_jobs(rx, concurrency.max(1), timeout, counts.clone());
        let queue = (!commands.is_empty()).then_some(tx);
        Ok((
            Actions {
                commands,
                queue,
                counts,
            },
            runner,
        ))
    }

    /// Queues the commands registered for this hook; never blocks.
    pub fn run(&self, occurrence: &Occurrence) {
        let (Some(queue), Some(commands)) = (&self.queue, self.commands.get(&occurrence.hook))
        else {
            return;
        };
        for command in commands {
            let job = Job {
                hook: occurrence.hook,
                command: command.clone(),
                env: occurrence.env(),
            };
            if queue.try_send(job).is_err() {
                log::warn!(
                    "hook action for {} dropped: {QUEUE} actions already waiting",
                    occurrence.hook.name()
                );
                self.counts.add(occurrence.hook, "dropped");
            }
        }
    }

    /// What the actions' results are counted in.
    pub fn counts(&self) -> Counts {
        self.counts.clone()
    }
}

async fn run_jobs(
    mut queue: mpsc::Receiver<Job>,
    concurrency: usize,
    timeout: Duration,
    counts: Counts,
) {
    let slots = Arc::new(Semaphore::new(concurrency));
    while let Some(job) = queue.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let counts = counts.clone();
        tokio::spawn(async move {
            let result = run_one(&job, timeout).await;
            counts.add(job.hook, result);
            drop(slot);
        });
    }
}

async fn run_one(job: &Job, timeout: Duration) -> &'static str {
    let child = tokio::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(&job.command)
        .envs(job.env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => {
            log::warn!(
                "hook action for {} could not start `{}`: {e}",
                job.hook.name(),
                job.command
            );
            return "failed";
        }
    };
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) if status.success() => "ok",
        Ok(Ok(status)) => {
            log::warn!(
                "hook action for {} `{}` failed: {status}",
                job.hook.name(),
                job.command
            );
            "failed"
        }
        Ok(Err(e)) => {
            log::warn!(
                "hook action for {} `{}` failed: {e}",
                job.hook.name(),
                job.command
            );
            "failed"
        }
        Err(_) => {
            log::warn!(
                "hook action for {} `{}` timed out after {timeout:?}; killed",
                job.hook.name(),
                job.command
            );
            let _ = child.kill().await;
            "timeout"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_specs() {
        assert_eq!(
            parse("post_fork=echo hi").unwrap(),
            (Hook::PostFork, "echo hi".to_string())
        );
        assert_eq!(parse("child_exit=a=b").unwrap().1, "a=b");
        assert!(matches!(
            parse("nope=x"),
            Err(ActionError::UnknownHook { .. })
        ));
        assert!(matches!(parse("post_fork"), Err(ActionError::Syntax(_))));
        assert!(matches!(parse("post_fork= "), Err(ActionError::Syntax(_))));
    }

    #[tokio::test]
    async fn runs_with_env_counts_failures_and_timeouts() {
        let dir = std::env::temp_dir().join(format!("actions-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("out");
        let specs = vec![
            format!(
                "worker_exit=echo $GUNICORN_HOOK $GUNICORN_WORKER_PID $GUNICORN_REASON > {}",
                out.display()
            ),
            "worker_exit=exit 3".to_string(),
            "worker_exit=sleep 5".to_string(),
        ];
        let (actions, runner) = Actions::new(&specs, 2, Duration::from_millis(300)).unwrap();
        tokio::spawn(runner);
        let occurrence = Occurrence {
            hook: Hook::WorkerExit,
            master: 1,
            worker: Some(42),
            signal: None,
            status: Some(0),
            reason: Some(crate::lifecycle::Reason::MaxRequests),
        };
        actions.run(&occurrence);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while actions.counts().read().iter().map(|(_, n)| n).sum::<u64>() < 3 {
            assert!(
                std::time::Instant::now() < deadline,
                "actions did not finish: {:?}",
                actions.counts().read()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let counts: BTreeMap<_, _> = actions.counts().read().into_iter().collect();
        assert_eq!(counts.get(&(Hook::WorkerExit, "ok")), Some(&1));
        assert_eq!(counts.get(&(Hook::WorkerExit, "failed")), Some(&1));
        assert_eq!(counts.get(&(Hook::WorkerExit, "timeout")), Some(&1));
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "worker_exit 42 max_requests\n"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
