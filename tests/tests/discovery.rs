//! Discovery (issue 13), first milestone: without --pid or --pidfile the
//! exporter finds every Gunicorn master running on the host and logs who each
//! is, one line with its identity labels, then stops with exit status 2
//! (watching several masters at once is not built yet). What this proves:
//! the masters of three Gunicorns (23 sync, 27 gthread, 27 gevent) and of one
//! in its own PID and network namespaces inside a cgroup shaped like a
//! kubelet pod's are found, each once, with the right labels (the pod's with
//! its container id, pod uid, pid in its namespace and a label copied from its
//! environment); their workers, a `gunicorn --check-config` and a plain
//! Python process (each with a child of its own command line, as a master has
//! workers) are not.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use integration_tests::{
    Exporter, Gunicorn, Version, env,
    fixtures::{children_of, die_with_parent},
    wait,
};

/// How long the scan may take to log and exit.
const EXIT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a process may take to fork (its import, its workers).
const FORK_TIMEOUT: Duration = Duration::from_secs(60);

/// A child process killed (with its own children) on drop.
struct Proc {
    child: Child,
    what: String,
}

impl Proc {
    fn spawn(what: &str, cmd: &mut Command) -> Proc {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        die_with_parent(cmd);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {what}: {e}"));
        Proc {
            child,
            what: what.into(),
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until `pid` has `n` children; returns them.
    fn wait_children(&self, pid: u32, n: usize) -> Vec<u32> {
        wait::until(&format!("{} to fork {n}", self.what), FORK_TIMEOUT, || {
            let kids = children_of(pid);
            if kids.len() >= n {
                Ok(kids)
            } else {
                Err(format!("children {kids:?}"))
            }
        })
        .unwrap_or_else(|e| panic!("{e}"))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory tree under the cgroup v2 mount, removed (deepest first) on
/// drop once its processes are gone.
struct Cgroup {
    created: Vec<PathBuf>,
}

impl Cgroup {
    fn cgroup2_mount() -> PathBuf {
        let mounts = fs::read_to_string("/proc/mounts").expect("reading /proc/mounts");
        mounts
            .lines()
            .find_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(f[1]))
            })
            .expect("a cgroup v2 hierarchy is mounted")
    }

    fn create(relative: &str) -> (Cgroup, PathBuf) {
        let mut path = Self::cgroup2_mount();
        let mut created = Vec::new();
        for part in relative.split('/').filter(|p| !p.is_empty()) {
            path.push(part);
            if !path.exists() {
                fs::create_dir(&path)
                    .unwrap_or_else(|e| panic!("creating cgroup {}: {e}", path.display()));
                created.push(path.clone());
            }
        }
        (Cgroup { created }, path)
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        for dir in self.created.iter().rev() {
            // Its processes may take a moment to be gone.
            for _ in 0..50 {
                if fs::remove_dir(dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

const POD_UID: &str = "0c6c3a57-95cf-4d4a-9c1c-2f5ad7e1b3f0";

/// A Gunicorn 27 master as a container runtime starts one in a pod: in the
/// cgroup of a containerd container of a burstable pod (systemd driver), in
/// its own PID namespace (where it is pid 1) and network namespace, with
/// POD_NAME in its environment.
struct PodGunicorn {
    // Field order: the processes go before their cgroup.
    _proc: Proc,
    _cgroup: Cgroup,
    master: u32,
    workers: Vec<u32>,
    container_id: String,
}

impl PodGunicorn {
    fn start() -> PodGunicorn {
        let container_id = format!("{:016x}", std::process::id()).repeat(4);
        let slice = POD_UID.replace('-', "_");
        let (cgroup, dir) = Cgroup::create(&format!(
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{slice}.slice/cri-containerd-{container_id}.scope"
        ));
        let venv = Version::V27.venv();
        let gunicorn = format!(
            "exec {} -w 2 -b 127.0.0.1:8000 --chdir {} --no-control-socket app:app",
            venv.join("bin/gunicorn").display(),
            env::apps_dir().display()
        );
        let inner = format!("ip link set lo up && {gunicorn}");
        let outer = format!(
            "echo $$ > {}/cgroup.procs && exec unshare --pid --net --kill-child sh -c '{inner}'",
            dir.display()
        );
        let proc_ = Proc::spawn(
            "the pod's gunicorn",
            Command::new("sh")
                .args(["-c", &outer])
                .env("POD_NAME", "web-0"),
        );
        // unshare's child is the namespace's pid 1, which execs gunicorn.
        let master = proc_.wait_children(proc_.pid(), 1)[0];
        let workers = proc_.wait_children(master, 2);
        PodGunicorn {
            _proc: proc_,
            _cgroup: cgroup,
            master,
            workers,
            container_id,
        }
    }
}

/// `found gunicorn master <pid>: <labels>` lines of the exporter's log, by pid.
fn found_masters(stderr: &str) -> BTreeMap<u32, Vec<String>> {
    let mut found: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for line in stderr.lines() {
        let Some(rest) = line.split_once("found gunicorn master ").map(|(_, r)| r) else {
            continue;
        };
        let (pid, labels) = rest.split_once(": ").expect("`<pid>: <labels>`");
        found
            .entry(pid.parse().expect("a pid"))
            .or_default()
            .push(labels.to_string());
    }
    found
}

fn python_forking(venv: &Path, args: &[&str], what: &str) -> (Proc, u32) {
    let apps = env::apps_dir();
    let p = Proc::spawn(
        what,
        Command::new(venv.join("bin").join(args[0]))
            .args(&args[1..])
            .current_dir(&apps),
    );
    let child = p.wait_children(p.pid(), 1)[0];
    (p, child)
}

#[test]
fn finds_every_master_and_only_masters() {
    let hosts = [
        Gunicorn::builder(Version::V23, "sync").start(),
        Gunicorn::builder(Version::V27, "gthread")
            .threads(2)
            .start(),
        Gunicorn::builder(Version::V27, "gevent").start(),
    ];
    let pod = PodGunicorn::start();
    let venv = Version::V27.venv();
    let (check, check_child) = python_forking(
        &venv,
        &["gunicorn", "--check-config", "forking_import:app"],
        "gunicorn --check-config",
    );
    let (plain, plain_child) =
        python_forking(&venv, &["python", "forking_import.py"], "a plain python");

    let exit = Exporter::builder()
        .arg("--all")
        .arg("--label-from-env")
        .arg("POD_NAME")
        .run_to_exit(EXIT_TIMEOUT);
    let story = format!(
        "command: {}\nexit: {}\nstderr:\n{}",
        exit.command_line, exit.status, exit.stderr
    );
    assert_eq!(exit.status.code(), Some(2), "{story}");
    assert!(exit.stderr.contains("not implemented yet"), "{story}");
    let found = found_masters(&exit.stderr);

    for g in &hosts {
        let pid = g.master_pid();
        let lines = found
            .get(&pid)
            .unwrap_or_else(|| panic!("master {pid} not found\n{story}\n{}", g.story()));
        assert_eq!(lines.len(), 1, "master {pid} found more than once\n{story}");
        let labels = &lines[0];
        assert!(
            labels.starts_with(&format!("app=\"app:app\" master_pid={pid}")),
            "{labels}\n{story}"
        );
        for absent in ["ns_pid=", "container_id=", "pod_uid=", "pod_name="] {
            assert!(
                !labels.contains(absent),
                "{absent} on a host master: {labels}"
            );
        }
    }

    let labels = found
        .get(&pod.master)
        .unwrap_or_else(|| panic!("the pod's master {} not found\n{story}", pod.master));
    assert_eq!(
        labels,
        &[format!(
            "app=\"app:app\" master_pid={} ns_pid=1 container_id={} pod_uid={POD_UID} pod_name=\"web-0\"",
            pod.master, pod.container_id
        )],
        "{story}"
    );

    let mut never: Vec<(u32, &str)> = vec![
        (check.pid(), "gunicorn --check-config"),
        (check_child, "the check's child"),
        (plain.pid(), "a plain python"),
        (plain_child, "its child"),
    ];
    for g in &hosts {
        never.extend(g.worker_pids().into_iter().map(|w| (w, "a worker")));
    }
    never.extend(pod.workers.iter().map(|&w| (w, "a pod worker")));
    for (pid, what) in never {
        assert!(
            !found.contains_key(&pid),
            "{what} ({pid}) taken for a master\n{story}"
        );
    }
}
