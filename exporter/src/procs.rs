//! Facts about processes, from /proc.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use procfs::process::{Process, all_processes};

/// What the exporter needs to know about one process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcInfo {
    pub pid: u32,
    pub ppid: u32,
    pub cmdline: Vec<String>,
    /// Start time, in clock ticks since boot: with the pid, identifies the
    /// process even if the pid is reused.
    pub start_ticks: u64,
}

pub fn info(pid: u32) -> Option<ProcInfo> {
    let process = Process::new(pid as i32).ok()?;
    let stat = process.stat().ok()?;
    let cmdline = process.cmdline().unwrap_or_default();
    // /proc/<tid> of a thread exists too: only thread group leaders are processes.
    if stat.pid != pid as i32 || process.status().ok()?.tgid != pid as i32 {
        return None;
    }
    Some(ProcInfo {
        pid,
        ppid: stat.ppid as u32,
        cmdline,
        start_ticks: stat.starttime,
    })
}

/// The direct children of `ppid`, oldest first.
pub fn children(ppid: u32) -> Vec<ProcInfo> {
    let Ok(all) = all_processes() else {
        return Vec::new();
    };
    let mut kids: Vec<ProcInfo> = all
        .filter_map(|p| p.ok())
        .filter_map(|p| {
            let stat = p.stat().ok()?;
            (stat.ppid as u32 == ppid).then(|| ProcInfo {
                pid: stat.pid as u32,
                ppid,
                cmdline: p.cmdline().unwrap_or_default(),
                start_ticks: stat.starttime,
            })
        })
        .collect();
    kids.sort_by_key(|k| (k.start_ticks, k.pid));
    kids
}

/// Is the process that had `start_ticks` still alive under `pid`?
pub fn alive(pid: u32, start_ticks: u64) -> bool {
    Process::new(pid as i32)
        .and_then(|p| p.stat())
        .is_ok_and(|s| s.starttime == start_ticks && s.state != 'Z')
}

/// Converts a start time in ticks since boot to Unix seconds.
pub fn start_unix_secs(start_ticks: u64) -> u64 {
    let boot = procfs::boot_time_secs().unwrap_or(0);
    let ticks = procfs::ticks_per_second().max(1);
    boot + start_ticks / ticks
}

/// Whether `pid` has a file whose path has a component `name` mapped (e.g.
/// `uvloop`, the package whose libuv reads and writes sockets with
/// read/write: `.../site-packages/uvloop/loop.cpython-311-....so`).
pub fn maps_library(pid: u32, name: &str) -> bool {
    Process::new(pid as i32)
        .and_then(|p| p.maps())
        .is_ok_and(|maps| {
            maps.iter().any(|m| match &m.pathname {
                procfs::process::MMapPath::Path(path) => path
                    .components()
                    .any(|c| c.as_os_str().to_string_lossy() == name),
                _ => false,
            })
        })
}

/// The server-side client connections in `pid`'s network namespace (read
/// from /proc/<pid>/net): inodes of TCP sockets whose local port is one of
/// `ports`, and of unix sockets bound to one of `unix_paths` (an accepted
/// unix socket carries its listener's path), the listeners themselves
/// excepted. The same for every process of that namespace: reading it walks
/// the kernel's whole table of connections (milliseconds on a busy host).
pub fn server_sockets(
    pid: u32,
    ports: &std::collections::BTreeSet<u16>,
    unix_paths: &std::collections::BTreeSet<std::path::PathBuf>,
) -> std::collections::BTreeSet<u64> {
    let mut server = std::collections::BTreeSet::new();
    let Ok(process) = Process::new(pid as i32) else {
        return server;
    };
    for table in [process.tcp(), process.tcp6()] {
        for entry in table.into_iter().flatten() {
            if entry.state != procfs::net::TcpState::Listen
                && ports.contains(&entry.local_address.port())
            {
                server.insert(entry.inode);
            }
        }
    }
    for entry in process.unix().into_iter().flatten() {
        if entry.state != procfs::net::UnixState::UNCONNECTED
            && entry.path.as_ref().is_some_and(|p| unix_paths.contains(p))
        {
            server.insert(entry.inode);
        }
    }
    server
}

/// The descriptors of `pid` that hold one of the sockets `inodes`.
pub fn fds_holding(pid: u32, inodes: &std::collections::BTreeSet<u64>) -> Vec<u32> {
    crate::listeners::socket_fds(pid)
        .into_iter()
        .filter(|(_, inode)| inodes.contains(inode))
        .map(|(fd, _)| fd)
        .collect()
}

/// The inode of `pid`'s network namespace.
pub fn netns(pid: u32) -> Option<u64> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(format!("/proc/{pid}/ns/net"))
        .ok()
        .map(|m| m.ino())
}

/// CLOCK_MONOTONIC in ns: the clock of bpf_ktime_get_ns.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

pub fn now_unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

/// Does a command line belong to Gunicorn? Covers `.../bin/gunicorn ...`,
/// `python -m gunicorn ...` and setproctitle's `gunicorn: master [app]`,
/// by discovery's rules (so not `gunicorn-ebpf-exporter`, nor a shell or
/// a script that merely names gunicorn).
pub fn looks_like_gunicorn(cmdline: &[String]) -> bool {
    use crate::discovery::identity::{gunicorn_args, title};
    gunicorn_args(cmdline).is_some() || title(cmdline).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn recognises_gunicorn_command_lines() {
        assert!(looks_like_gunicorn(&v(&[
            "/venv/bin/python3",
            "/venv/bin/gunicorn",
            "-w",
            "2",
            "app:app"
        ])));
        assert!(looks_like_gunicorn(&v(&["gunicorn", "app:app"])));
        assert!(looks_like_gunicorn(&v(&[
            "python3", "-m", "gunicorn", "app:app"
        ])));
        assert!(looks_like_gunicorn(&v(&["gunicorn: master [app:app]"])));
        assert!(looks_like_gunicorn(&v(&["gunicorn: worker [app:app]"])));
    }

    #[test]
    fn rejects_others() {
        assert!(!looks_like_gunicorn(&v(&["sleep", "1000"])));
        assert!(!looks_like_gunicorn(&v(&[
            "/usr/bin/python3",
            "server.py",
            "--name",
            "x",
            "gunicorn"
        ])));
        assert!(!looks_like_gunicorn(&[]));
        assert!(!looks_like_gunicorn(&v(&[
            "/usr/bin/gunicorn-ebpf-exporter",
            "--pid",
            "1234"
        ])));
    }

    #[test]
    fn this_process() {
        let me = info(std::process::id()).expect("own /proc entry");
        assert_eq!(me.pid, std::process::id());
        assert!(alive(me.pid, me.start_ticks));
        assert!(!alive(me.pid, me.start_ticks + 1));
        assert!(start_unix_secs(me.start_ticks) <= now_unix_secs());
    }
}
