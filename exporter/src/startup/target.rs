//! Which Gunicorn master to watch.

use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::procs::{self, looks_like_gunicorn};

#[derive(Debug, Error)]
pub enum TargetError {
    #[error(
        "no process with PID {0}: check the PID (the gunicorn master's, e.g. from its --pid file)"
    )]
    NoProcess(u32),
    #[error(
        "PID {pid} is not a gunicorn process (command line `{cmdline}`): pass the gunicorn master's PID"
    )]
    NotGunicorn { pid: u32, cmdline: String },
    #[error("cannot read pidfile {path}")]
    PidfileUnreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("pidfile {path} does not hold a PID (it holds `{content}`)")]
    PidfileInvalid { path: PathBuf, content: String },
}

/// The master to attach to, and a notice when it was found from a worker.
#[derive(Debug)]
pub struct Resolved {
    pub info: procs::ProcInfo,
    pub notice: Option<String>,
}

pub fn read_pidfile(path: &Path) -> Result<u32, TargetError> {
    let text = std::fs::read_to_string(path).map_err(|source| TargetError::PidfileUnreadable {
        path: path.into(),
        source,
    })?;
    text.trim()
        .parse()
        .map_err(|_| TargetError::PidfileInvalid {
            path: path.into(),
            content: text.trim().chars().take(40).collect(),
        })
}

/// Resolves `pid` to a gunicorn master. A worker (a gunicorn process whose
/// parent is gunicorn and which has no gunicorn children of its own - a master
/// re-executed by USR2 has its workers) resolves to its parent.
pub fn resolve(pid: u32) -> Result<Resolved, TargetError> {
    let info = procs::info(pid).ok_or(TargetError::NoProcess(pid))?;
    if !looks_like_gunicorn(&info.cmdline) {
        return Err(TargetError::NotGunicorn {
            pid,
            cmdline: info.cmdline.join(" "),
        });
    }
    let parent = procs::info(info.ppid).filter(|p| looks_like_gunicorn(&p.cmdline));
    let has_gunicorn_children = procs::children(pid)
        .iter()
        .any(|c| looks_like_gunicorn(&c.cmdline));
    match parent {
        Some(master) if !has_gunicorn_children => Ok(Resolved {
            notice: Some(format!(
                "PID {pid} is a gunicorn worker; attaching to its master, PID {}",
                master.pid
            )),
            info: master,
        }),
        _ => Ok(Resolved { info, notice: None }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pidfile_errors_are_specific() {
        let dir = std::env::temp_dir().join(format!("target-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.pid");
        std::fs::write(&good, "1234\n").unwrap();
        assert_eq!(read_pidfile(&good).unwrap(), 1234);
        let bad = dir.join("bad.pid");
        std::fs::write(&bad, "hello").unwrap();
        assert!(matches!(
            read_pidfile(&bad),
            Err(TargetError::PidfileInvalid { .. })
        ));
        assert!(matches!(
            read_pidfile(&dir.join("missing")),
            Err(TargetError::PidfileUnreadable { .. })
        ));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn non_gunicorn_and_missing() {
        let mut sleeper = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let result = resolve(sleeper.id());
        sleeper.kill().unwrap();
        sleeper.wait().unwrap();
        assert!(
            matches!(result, Err(TargetError::NotGunicorn { .. })),
            "{result:?}"
        );
        assert!(matches!(
            resolve(u32::MAX - 1),
            Err(TargetError::NoProcess(_))
        ));
    }
}
