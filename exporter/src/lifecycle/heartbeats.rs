//! Workers' heartbeats, from their heartbeat files rather than from the
//! kernel: a Gunicorn worker touches its (unlinked) temp file with
//! `os.utime`, setting its mtime to `time.monotonic()`, about once a second
//! and after each request of a sync worker. Hooking utimensat would put a
//! syscall tracepoint (and every syscall of the host) on the slow path.
//!
//! - The first touch is `post_worker_init`: Gunicorn heartbeats only after
//!   running that hook. An inotify watch on the file (through
//!   /proc/<worker>/fd, which reaches an unlinked file) sees it; the watch is
//!   removed at once, so later touches cost the exporter nothing.
//! - The heartbeat age is the file's mtime, read when Prometheus scrapes.
//! - The file (descriptor and inode) goes to the kernel, which looks for it
//!   in the worker's descriptor table as the worker dies: Gunicorn closes it
//!   right before running worker_exit, so its absence says that hook ran.

use std::{collections::BTreeMap, os::unix::fs::MetadataExt as _, path::PathBuf};

use exporter_ebpf::abi::Heartbeat;
use inotify::{WatchDescriptor, WatchMask, Watches};

use crate::procs::monotonic_ns;

/// A worker's heartbeat file.
#[derive(Debug)]
struct File {
    fd: u32,
    ino: u64,
    /// Watched until its first touch.
    watch: Option<WatchDescriptor>,
    /// The file itself, opened through /proc: its mtime stays readable
    /// after the worker and its master closed it.
    opened: Option<std::fs::File>,
}

pub struct Heartbeats {
    watches: Watches,
    files: BTreeMap<u32, File>,
}

/// What a worker's heartbeat file says now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Beat {
    /// Touched at this monotonic time (ns).
    At(u64),
    /// Not touched since the master created it (its mtime is wall-clock).
    Never,
}

impl Heartbeats {
    pub fn new(watches: Watches) -> Heartbeats {
        Heartbeats {
            watches,
            files: BTreeMap::new(),
        }
    }

    /// Follows worker `pid`'s heartbeat file; `older` are its master's live
    /// workers forked before it. Returns whether the file has already been
    /// touched (the worker booted before the watch was set, or was found
    /// running at attach); None when the file is not found (yet: a fork is
    /// announced before the child shows in /proc).
    pub fn watch(&mut self, pid: u32, older: &[u32]) -> Option<bool> {
        // A worker inherits the files its master held at the fork: those of
        // the siblings forked before it, which they hold too (each its own,
        // and those it inherited). Its own file, created after their forks,
        // is the one none of them holds: that needs no knowledge of which
        // file is whose, so a burst of forks cannot swap two workers' files.
        let theirs: Vec<u64> = older
            .iter()
            .flat_map(|&sibling| heartbeat_files(sibling))
            .map(|f| f.ino)
            .collect();
        let found = heartbeat_fd(pid, &theirs);
        log::debug!(
            "worker {pid}: heartbeat file {found:?} (older siblings {older:?} hold {theirs:?})"
        );
        let (fd, ino) = found?;
        let path = fd_path(pid, fd);
        let opened = std::fs::File::open(&path).ok();
        if let Beat::At(_) = beat(&path) {
            self.files.insert(
                pid,
                File {
                    fd,
                    ino,
                    watch: None,
                    opened,
                },
            );
            return Some(true);
        }
        let watch = match self
            .watches
            .add(&path, WatchMask::ATTRIB | WatchMask::ONESHOT)
        {
            Ok(wd) => Some(wd),
            Err(e) => {
                log::debug!("cannot watch worker {pid}'s heartbeat file: {e}");
                None
            }
        };
        self.files.insert(
            pid,
            File {
                fd,
                ino,
                watch,
                opened,
            },
        );
        // A touch between the first look and the watch is seen now.
        Some(matches!(beat(&path), Beat::At(_)))
    }

    /// The worker whose file a watch event came from, now touched. Its
    /// watch is gone (ONESHOT).
    pub fn touched(&mut self, wd: &WatchDescriptor) -> Option<u32> {
        let (&pid, file) = self
            .files
            .iter_mut()
            .find(|(_, f)| f.watch.as_ref() == Some(wd))?;
        file.watch = None;
        Some(pid)
    }

    /// Whether worker `pid` touched its file while its watch's event has
    /// not been read yet (it is being handled as dead: its post_worker_init
    /// must come first, as it happened). The watch is then done with.
    pub fn touched_unseen(&mut self, pid: u32) -> bool {
        let Some(file) = self.files.get_mut(&pid) else {
            return false;
        };
        let touched = file.watch.is_some()
            && file
                .opened
                .as_ref()
                .and_then(|f| f.metadata().ok())
                .is_some_and(|m| matches!(mtime_beat(&m), Beat::At(_)));
        if touched && let Some(wd) = file.watch.take() {
            let _ = self.watches.remove(wd);
        }
        touched
    }

    /// Worker `pid`'s heartbeat file, once found.
    pub fn file(&self, pid: u32) -> Option<Heartbeat> {
        self.files.get(&pid).map(|f| Heartbeat {
            fd: f.fd,
            _pad: 0,
            ino: f.ino,
        })
    }

    /// Stops following a worker.
    pub fn forget(&mut self, pid: u32) {
        if let Some(File {
            watch: Some(wd), ..
        }) = self.files.remove(&pid)
        {
            let _ = self.watches.remove(wd);
        }
    }

    /// (worker, descriptor) of each file known.
    pub fn fds(&self) -> Vec<(u32, u32)> {
        self.files.iter().map(|(&pid, f)| (pid, f.fd)).collect()
    }
}

/// Seconds since each worker of `fds` last touched its heartbeat file (those
/// that never did have none), read from the files now.
pub fn ages(fds: &[(u32, u32)]) -> Vec<(u32, f64)> {
    let now = monotonic_ns();
    fds.iter()
        .filter_map(|&(pid, fd)| match beat(&fd_path(pid, fd)) {
            Beat::At(at) => Some((pid, now.saturating_sub(at) as f64 / 1e9)),
            Beat::Never => None,
        })
        .collect()
}

fn fd_path(pid: u32, fd: u32) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/fd/{fd}"))
}

/// The mtime of the file at `path`: a monotonic time once the worker
/// touched it (values up to now on the monotonic clock), wall-clock before.
fn beat(path: &std::path::Path) -> Beat {
    std::fs::metadata(path).map_or(Beat::Never, |meta| mtime_beat(&meta))
}

fn mtime_beat(meta: &std::fs::Metadata) -> Beat {
    let (Ok(secs), Ok(nanos)) = (
        u64::try_from(meta.mtime()),
        u64::try_from(meta.mtime_nsec()),
    ) else {
        return Beat::Never;
    };
    classify(secs * 1_000_000_000 + nanos, monotonic_ns())
}

/// A touched file's mtime is on the monotonic clock, so not after `now`
/// on it; the master's creation set a wall-clock time decades later.
fn classify(mtime_ns: u64, now_monotonic_ns: u64) -> Beat {
    if mtime_ns <= now_monotonic_ns {
        Beat::At(mtime_ns)
    } else {
        Beat::Never
    }
}

/// A `wgunicorn-*` file in a process's descriptor table: Gunicorn's
/// worker temp files, unlinked once created.
struct Candidate {
    fd: u32,
    ino: u64,
    touched: bool,
    /// Status change time (the unlink, right after creation), ns.
    ctime_ns: i128,
}

fn heartbeat_files(pid: u32) -> Vec<Candidate> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|entry| {
            let target = std::fs::read_link(entry.path()).ok()?;
            let name = target.to_string_lossy();
            if !(name.contains("/wgunicorn-") && name.ends_with("(deleted)")) {
                return None;
            }
            let fd: u32 = entry.file_name().to_str()?.parse().ok()?;
            let meta = std::fs::metadata(entry.path()).ok()?;
            Some(Candidate {
                fd,
                ino: meta.ino(),
                touched: matches!(beat(&entry.path()), Beat::At(_)),
                ctime_ns: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
            })
        })
        .collect()
}

/// The descriptor and inode of worker `pid`'s own heartbeat file, leaving
/// out the files of `theirs` (its older siblings'). What may remain beside
/// its own: the file of a sibling that died before the fork and that the
/// master had not closed yet, most likely touched, and older; so untouched
/// first, newest first.
fn heartbeat_fd(pid: u32, theirs: &[u64]) -> Option<(u32, u64)> {
    heartbeat_files(pid)
        .into_iter()
        .filter(|c| !theirs.contains(&c.ino))
        .min_by_key(|c| (c.touched, std::cmp::Reverse((c.ctime_ns, c.ino))))
        .map(|c| (c.fd, c.ino))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_mtimes_are_touches() {
        let now = 5_000 * 1_000_000_000;
        assert_eq!(
            classify(4_999 * 1_000_000_000, now),
            Beat::At(4_999_000_000_000)
        );
        assert_eq!(classify(1_764_000_000 * 1_000_000_000, now), Beat::Never);
    }

    /// The tests create `wgunicorn-` files in this process, which the
    /// other test's forks would inherit: one at a time.
    static FILES: std::sync::Mutex<()> = std::sync::Mutex::new(());

    /// An unlinked `wgunicorn-` file, as Gunicorn's WorkerTmp makes.
    fn worker_tmp(name: &str) -> std::fs::File {
        let path = std::env::temp_dir().join(format!("wgunicorn-{name}-{}", std::process::id()));
        let file = std::fs::File::create(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        file
    }

    /// A child that holds what this process holds now, until dropped.
    struct Forked(libc::pid_t);

    impl Forked {
        fn new() -> Forked {
            // SAFETY: the child only calls async-signal-safe functions.
            match unsafe { libc::fork() } {
                0 => loop {
                    unsafe { libc::pause() };
                },
                pid => Forked(pid),
            }
        }
    }

    impl Drop for Forked {
        fn drop(&mut self) {
            // SAFETY: our own child.
            unsafe {
                libc::kill(self.0, libc::SIGKILL);
                libc::waitpid(self.0, std::ptr::null_mut(), 0);
            }
        }
    }

    /// A master forks three workers in a burst: each inherits the files of
    /// the ones before it. Each worker's file is found whatever the files'
    /// times say (here the oldest file's status changed last, as coarse
    /// timestamps or an inode order can also mislead).
    #[test]
    fn a_burst_of_forks_keeps_each_file_with_its_worker() {
        use std::os::fd::AsRawFd;
        let _one = FILES.lock().unwrap();
        let a = worker_tmp("a");
        let worker_a = Forked::new();
        let b = worker_tmp("b");
        let worker_b = Forked::new();
        let c = worker_tmp("c");
        let worker_c = Forked::new();
        // SAFETY: a valid fd; its mode is unchanged, its ctime is now.
        assert_eq!(unsafe { libc::fchmod(a.as_raw_fd(), 0o600) }, 0);
        let inotify = inotify::Inotify::init().unwrap();
        let mut hb = Heartbeats::new(inotify.watches());
        let ino = |f: &std::fs::File| f.metadata().unwrap().ino();
        let pids = [worker_a.0, worker_b.0, worker_c.0].map(|p| p as u32);
        // Looked up youngest first, as after a burst whose files showed late.
        for (i, file) in [(2, &c), (1, &b), (0, &a)] {
            assert_eq!(hb.watch(pids[i], &pids[..i]), Some(false));
            assert_eq!(hb.files[&pids[i]].ino, ino(file), "worker {i}");
        }
    }

    /// A worker touched its file, then died, and the death is handled before
    /// the watch's event is read: the touch is still seen, once.
    #[test]
    fn a_touch_queued_behind_the_death_is_seen_once() {
        use std::os::fd::AsRawFd;
        let _one = FILES.lock().unwrap();
        let file = worker_tmp("queued");
        let mut inotify = inotify::Inotify::init().unwrap();
        let mut hb = Heartbeats::new(inotify.watches());
        let me = std::process::id();
        assert_eq!(hb.watch(me, &[]), Some(false));
        assert!(!hb.touched_unseen(me), "not touched yet");
        let t = monotonic_ns() / 1_000_000_000;
        let times = [libc::timespec {
            tv_sec: t as i64,
            tv_nsec: 0,
        }; 2];
        // SAFETY: a valid fd and two timespecs.
        assert_eq!(
            unsafe { libc::futimens(file.as_raw_fd(), times.as_ptr()) },
            0
        );
        drop(file);
        assert!(
            hb.touched_unseen(me),
            "seen through the exporter's own descriptor"
        );
        let mut buf = [0u8; 1024];
        let events: Vec<_> = inotify.read_events_blocking(&mut buf).unwrap().collect();
        assert!(
            events.iter().all(|e| hb.touched(&e.wd).is_none()),
            "{events:?}"
        );
        assert!(!hb.touched_unseen(me), "once");
    }

    /// A real unlinked file touched through /proc, as Gunicorn does.
    #[test]
    fn first_touch_is_seen_through_proc() {
        let _one = FILES.lock().unwrap();
        use std::os::fd::AsRawFd;
        let file = worker_tmp("test");
        let inotify = inotify::Inotify::init().unwrap();
        let mut hb = Heartbeats::new(inotify.watches());
        let me = std::process::id();
        assert_eq!(hb.watch(me, &[]), Some(false), "not touched yet");
        assert_eq!(hb.files[&me].fd, file.as_raw_fd() as u32);
        assert!(ages(&hb.fds()).is_empty());
        // Touch it with a monotonic time, as os.utime(fd, (t, t)) does.
        let t = monotonic_ns() / 1_000_000_000;
        let times = [libc::timespec {
            tv_sec: t as i64,
            tv_nsec: 0,
        }; 2];
        // SAFETY: a valid fd and two timespecs.
        assert_eq!(
            unsafe { libc::futimens(file.as_raw_fd(), times.as_ptr()) },
            0
        );
        let mut buf = [0u8; 1024];
        let mut inotify = inotify;
        let events: Vec<_> = inotify.read_events_blocking(&mut buf).unwrap().collect();
        assert_eq!(hb.touched(&events[0].wd), Some(me));
        let found = ages(&hb.fds());
        assert_eq!(found.len(), 1);
        assert!(found[0].1 >= 0.0 && found[0].1 < 2.0, "{found:?}");
        hb.forget(me);
        assert!(ages(&hb.fds()).is_empty());
    }
}
