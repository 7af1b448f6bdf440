//! Least privilege and clean exit.
//!
//! Once attached, every thread of the exporter holds exactly the capabilities
//! the README's "Privileges" table lists for the hook set in use (CapEff,
//! CapPrm, CapBnd of /proc/<pid>/task/*/status, named from their masks; none
//! inheritable or ambient), its `--on` commands start with none, and it still
//! counts exactly what a worker forked after the drop serves: its uprobe, or
//! the syscall hooks' read/write family attached on demand, its heartbeat
//! file and /proc all reached without the dropped ones. With nothing attached
//! later, less stays. Run as an unprivileged user with ambient capabilities
//! (the systemd way) the same holds, and without CAP_DAC_READ_SEARCH start-up
//! says what is missing.
//!
//! After SIGTERM, SIGINT or SIGKILL (one exporter each), none of the eBPF
//! programs, maps, links and perf events it held is left, and SIGTERM and
//! SIGINT end it with status 0 at once.

use std::{
    collections::BTreeSet,
    os::unix::process::ExitStatusExt as _,
    process::Command,
    time::{Duration, Instant},
};

use exporter_ebpf::abi::map;
use integration_tests::{
    Exporter, ExporterBuilder, Gunicorn, TestDir, Version,
    check::{self, story},
    env::STACKS_VENV,
    fixtures::exporter::binary_for_nobody,
    hooks::send_signal,
    http::{self, Request, Traffic},
    wait,
};
use serde_json::Value;

/// Debian's bpftool (`cargo xtask setup` installs it).
const BPFTOOL: &str = "/usr/sbin/bpftool";
/// SIGTERM and SIGINT: the exporter is gone within this.
const EXIT_TIMEOUT: Duration = Duration::from_secs(5);
/// The kernel frees a map after its last reference goes, asynchronously.
const FREED_TIMEOUT: Duration = Duration::from_secs(10);
const WORKER_TIMEOUT: Duration = Duration::from_secs(30);

/// linux/capability.h, by number.
const CAPABILITIES: [&str; 41] = [
    "chown",
    "dac_override",
    "dac_read_search",
    "fowner",
    "fsetid",
    "kill",
    "setgid",
    "setuid",
    "setpcap",
    "linux_immutable",
    "net_bind_service",
    "net_broadcast",
    "net_admin",
    "net_raw",
    "ipc_lock",
    "ipc_owner",
    "sys_module",
    "sys_rawio",
    "sys_chroot",
    "sys_ptrace",
    "sys_pacct",
    "sys_admin",
    "sys_boot",
    "sys_nice",
    "sys_resource",
    "sys_time",
    "sys_tty_config",
    "mknod",
    "lease",
    "audit_write",
    "audit_control",
    "setfcap",
    "mac_override",
    "mac_admin",
    "syslog",
    "wake_alarm",
    "block_suspend",
    "audit_read",
    "perfmon",
    "bpf",
    "checkpoint_restore",
];

/// What the README's table lists, by hook set, with exception classes and
/// `--io-syscalls auto` (the defaults): the socket hooks attach a uprobe to
/// each new worker, the syscall hooks may attach the read/write family.
const KEPT_SOCKETS: [&str; 3] = ["dac_read_search", "sys_admin", "sys_ptrace"];
const KEPT_SYSCALLS: [&str; 4] = ["bpf", "dac_read_search", "perfmon", "sys_ptrace"];
/// With the syscall hooks, a worker forked after the drop that maps uvloop
/// gets the read/write family attached (CAP_BPF and CAP_PERFMON kept for
/// that), and what it serves is counted exactly.
#[test]
fn read_write_family_attaches_after_the_drop() {
    let dir = TestDir::new("uvloop-flag");
    let flag = dir.join("flag");
    let g = Gunicorn::builder(Version::V27, "sync")
        .venv(STACKS_VENV)
        .workers(1)
        .env("GUNICORN_UVLOOP_FLAG", flag.display().to_string())
        .start();
    let e = Exporter::builder()
        .pid(g.master_pid())
        .arg("--hooks")
        .arg("syscalls")
        .start();
    let kept = names(&KEPT_SYSCALLS);
    assert_kept(&g, &e, &kept, &kept);
    const ATTACHED: &str = "runs uvloop: tracing read/write";
    assert!(
        !e.stderr().contains(ATTACHED),
        "harness: the first worker mapped uvloop\n{}",
        story(&g, &e, None)
    );

    std::fs::write(&flag, "").expect("the flag file");
    let before = g.worker_pids();
    send_signal(g.master_pid(), libc::SIGTTIN);
    wait::until("the read/write family attached", WORKER_TIMEOUT, || {
        let stderr = e.stderr();
        if stderr.contains("attaching the read/write family") {
            return Ok(Err(stderr));
        }
        stderr
            .contains(ATTACHED)
            .then_some(Ok(()))
            .ok_or("not yet".to_string())
    })
    .and_then(|r| r)
    .unwrap_or_else(|err| panic!("{err}\n{}", story(&g, &e, None)));
    for _ in &before {
        send_signal(g.master_pid(), libc::SIGTTOU);
    }
    wait::until("only the new worker left", WORKER_TIMEOUT, || {
        let workers = g.worker_pids();
        (workers.len() == 1 && !before.contains(&workers[0]))
            .then_some(())
            .ok_or(format!("{workers:?}"))
    })
    .unwrap_or_else(|err| panic!("{err}\n{}", story(&g, &e, None)));
    let mut t = Traffic::default();
    for path in ["/ok", "/missing", "/big", "/ok"] {
        http::exchange(g.addr(), &Request::get(path), &mut t)
            .unwrap_or_else(|err| panic!("GET {path}: {err}\n{}", g.story()));
    }
    let (m, records) = check::wait_counted(&g, &e, t.total_responses());
    check::assert_requests_match(&g, &e, &m, &records);
    check::assert_bytes_match(&g, &e, &m, &t);
    check::assert_no_kernel_errors(&g, &e, &m);
}

/// The README's systemd unit's AmbientCapabilities and CapabilityBoundingSet.
const SYSTEMD: [&str; 5] = [
    "bpf",
    "dac_read_search",
    "perfmon",
    "sys_admin",
    "sys_ptrace",
];
/// When nothing is attached after start-up (either hook set), and the maps
/// answer without CAP_BPF.
const KEPT_NOTHING_ATTACHED_LATER: [&str; 2] = ["dac_read_search", "sys_ptrace"];

/// Whether this kernel refuses map syscalls without CAP_BPF: before 6.5,
/// with unprivileged eBPF disabled.
fn maps_need_bpf() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("osrelease");
    let mut numbers = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let version = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
    let disabled = std::fs::read_to_string("/proc/sys/kernel/unprivileged_bpf_disabled")
        .is_ok_and(|v| v.trim() != "0");
    version < (6, 5) && disabled
}

/// The capabilities the README's table lists for the hook set `e` runs.
fn kept_by_default(g: &Gunicorn, e: &Exporter) -> BTreeSet<String> {
    let m = e.scrape();
    let hooks = m
        .get("gunicorn_exporter_kernel_info")
        .find_map(|s| s.labels.get("hooks").cloned())
        .unwrap_or_else(|| panic!("no kernel_info hooks label\n{}", story(g, e, Some(&m))));
    match hooks.as_str() {
        "sockets" => names(&KEPT_SOCKETS),
        "syscalls" => names(&KEPT_SYSCALLS),
        other => panic!("hook set {other}?"),
    }
}

fn names(caps: &[&str]) -> BTreeSet<String> {
    caps.iter().map(|c| c.to_string()).collect()
}

/// The capability names of a /proc status mask (`000001ffffffffff`).
fn decode(hex: &str) -> BTreeSet<String> {
    let mask = u64::from_str_radix(hex.trim(), 16)
        .unwrap_or_else(|e| panic!("capability mask {hex:?}: {e}"));
    (0..64)
        .filter(|bit| mask & (1u64 << bit) != 0)
        .map(|bit| {
            CAPABILITIES
                .get(bit)
                .map_or_else(|| format!("cap_{bit}"), |n| n.to_string())
        })
        .collect()
}

/// The capability sets of a status file: (CapInh, CapPrm, CapEff, CapBnd, CapAmb).
#[derive(Debug, PartialEq, Eq)]
struct Sets {
    inheritable: BTreeSet<String>,
    permitted: BTreeSet<String>,
    effective: BTreeSet<String>,
    bounding: BTreeSet<String>,
    ambient: BTreeSet<String>,
}

fn sets(status: &str) -> Sets {
    let field = |name: &str| {
        let line = status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in\n{status}"));
        decode(line.trim_start_matches(':'))
    };
    Sets {
        inheritable: field("CapInh"),
        permitted: field("CapPrm"),
        effective: field("CapEff"),
        bounding: field("CapBnd"),
        ambient: field("CapAmb"),
    }
}

/// Every thread's capability sets: the kernel keeps them per thread.
fn thread_sets(pid: u32) -> Vec<(u32, Sets)> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the exporter's threads");
    let mut out: Vec<(u32, Sets)> = tasks
        .flatten()
        .filter_map(|t| {
            let tid = t.file_name().to_str()?.parse().ok()?;
            Some((
                tid,
                sets(&std::fs::read_to_string(t.path().join("status")).ok()?),
            ))
        })
        .collect();
    out.sort_by_key(|(tid, _)| *tid);
    out
}

/// Panics unless every thread of `e` has effective and permitted sets
/// `kept`, bounding set `bounding`, and no inheritable or ambient one.
fn assert_kept(g: &Gunicorn, e: &Exporter, kept: &BTreeSet<String>, bounding: &BTreeSet<String>) {
    let threads = thread_sets(e.pid());
    assert!(!threads.is_empty(), "no threads\n{}", story(g, e, None));
    for (tid, s) in &threads {
        let want = Sets {
            inheritable: BTreeSet::new(),
            permitted: kept.clone(),
            effective: kept.clone(),
            bounding: bounding.clone(),
            ambient: BTreeSet::new(),
        };
        assert_eq!(
            s,
            &want,
            "thread {tid} of the exporter\n{}",
            story(g, e, None)
        );
    }
}

/// Forks a worker after the drop (TTIN), checks the `--on post_fork` command
/// recorded that it ran without capabilities in `caps_file`, stops the older
/// workers (TTOU) so that the new one serves everything, then sends a mix
/// with an app exception and checks the exporter counts it exactly, failures
/// by exception class included.
fn new_worker_is_counted_exactly(g: &Gunicorn, e: &Exporter, caps_file: &std::path::Path) {
    let before = g.worker_pids();
    send_signal(g.master_pid(), libc::SIGTTIN);
    let new = wait::until("a worker forked after the drop", WORKER_TIMEOUT, || {
        let booted = g.booted_workers();
        booted
            .iter()
            .find(|w| !before.contains(w))
            .copied()
            .ok_or(format!("booted {booted:?}"))
    })
    .unwrap_or_else(|err| panic!("{err}\n{}", story(g, e, None)));
    let hook = wait::until("the post_fork command's record", WORKER_TIMEOUT, || {
        std::fs::read_to_string(caps_file)
            .ok()
            .filter(|s| s.contains("CapAmb"))
            .ok_or("none yet".to_string())
    })
    .unwrap_or_else(|err| panic!("{err}\n{}", story(g, e, None)));
    let hook = sets(&hook);
    for (set, caps) in [
        ("CapInh", &hook.inheritable),
        ("CapPrm", &hook.permitted),
        ("CapEff", &hook.effective),
        ("CapAmb", &hook.ambient),
    ] {
        assert!(
            caps.is_empty(),
            "the --on command ran with {set} {caps:?}\n{}",
            story(g, e, None)
        );
    }
    for _ in &before {
        send_signal(g.master_pid(), libc::SIGTTOU);
    }
    wait::until("only the new worker left", WORKER_TIMEOUT, || {
        let workers = g.worker_pids();
        (workers == [new])
            .then_some(())
            .ok_or(format!("{workers:?}"))
    })
    .unwrap_or_else(|err| panic!("{err}\n{}", story(g, e, None)));

    let mut t = Traffic::default();
    for path in ["/ok", "/missing", "/boom", "/ok", "/big", "/boom"] {
        http::exchange(g.addr(), &Request::get(path), &mut t)
            .unwrap_or_else(|err| panic!("GET {path}: {err}\n{}", g.story()));
    }
    http::exchange(
        g.addr(),
        &Request::post("/echo", vec![b'x'; 20_000]),
        &mut t,
    )
    .unwrap_or_else(|err| panic!("POST /echo: {err}\n{}", g.story()));
    let (m, records) = check::wait_counted(g, e, t.total_responses());
    assert!(
        records.iter().all(|r| r.pid == new),
        "harness: worker {new} should have served everything\n{}",
        story(g, e, Some(&m))
    );
    check::assert_requests_match(g, e, &m, &records);
    check::assert_bytes_match(g, e, &m, &t);
    check::assert_failures_match(g, e, &m, &records);
    check::assert_no_kernel_errors(g, e, &m);
    // Its heartbeat file was found in /proc/<worker>/fd after the drop.
    let pid = new.to_string();
    assert!(
        m.get("gunicorn_worker_heartbeat_age_seconds")
            .any(|s| s.labels.get("pid") == Some(&pid)),
        "no heartbeat for worker {new}\n{}",
        story(g, e, Some(&m))
    );
}

/// `--on post_fork` writing the command's own capability sets to `file`.
fn recording_hook(b: ExporterBuilder, file: &std::path::Path) -> ExporterBuilder {
    b.arg("--on").arg(format!(
        "post_fork=grep ^Cap /proc/self/status > {}",
        file.display()
    ))
}

/// Root: exactly the README's set in every set that matters, the bounding
/// set included; counting still exact on a worker forked after the drop.
#[test]
fn keeps_exactly_the_documented_capabilities() {
    let g = Gunicorn::builder(Version::V27, "sync").workers(1).start();
    let dir = TestDir::new("hook-caps");
    let caps_file = dir.join("post_fork");
    let e = recording_hook(Exporter::builder().pid(g.master_pid()), &caps_file).start();
    let kept = kept_by_default(&g, &e);
    assert_kept(&g, &e, &kept, &kept);
    new_worker_is_counted_exactly(&g, &e, &caps_file);
    // Nothing since brought a capability back.
    assert_kept(&g, &e, &kept, &kept);
}

/// Without exception classes and with `--io-syscalls gunicorn` nothing is
/// attached after start-up, with either hook set: only what /proc needs
/// stays, and CAP_BPF where the maps refuse access without it (the exporter
/// tries a map read with the set that would remain).
#[test]
fn nothing_attached_later_keeps_what_proc_and_the_maps_need() {
    let g = Gunicorn::builder(Version::V27, "sync").workers(1).start();
    let e = Exporter::builder()
        .pid(g.master_pid())
        .arg("--no-exception-classes")
        .arg("--io-syscalls")
        .arg("gunicorn")
        .start();
    let mut kept = names(&KEPT_NOTHING_ATTACHED_LATER);
    if maps_need_bpf() {
        kept.insert("bpf".into());
    }
    assert_kept(&g, &e, &kept, &kept);
    let mut t = Traffic::default();
    for path in ["/ok", "/missing", "/boom"] {
        http::exchange(g.addr(), &Request::get(path), &mut t)
            .unwrap_or_else(|err| panic!("GET {path}: {err}\n{}", g.story()));
    }
    let (m, records) = check::wait_counted(&g, &e, t.total_responses());
    check::assert_requests_match(&g, &e, &m, &records);
    check::assert_5xx_match(&g, &e, &m, &records);
}

/// The README's systemd unit, with setpriv: user nobody, the capabilities
/// it lists ambient and bounding, nothing else. It starts (tracefs, and the
/// root-owned Gunicorn's /proc through CAP_DAC_READ_SEARCH and
/// CAP_SYS_PTRACE), keeps what the table says (the bounding set is not its
/// own to narrow without CAP_SETPCAP), and counts exactly; the heartbeat
/// files it watches are root's, mode 0600.
#[test]
fn runs_as_an_unprivileged_user_with_ambient_capabilities() {
    let g = Gunicorn::builder(Version::V27, "sync").workers(1).start();
    let dir = TestDir::new("ambient");
    let caps_file = dir.join("post_fork");
    // The hook, run as nobody, writes there.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .expect("chmod");
    let given = names(&SYSTEMD);
    let caps: Vec<String> = SYSTEMD.iter().map(|c| format!("+{c}")).collect();
    let caps = caps.join(",");
    let (inh, amb, bnd) = (
        format!("--inh-caps=-all,{caps}"),
        format!("--ambient-caps=-all,{caps}"),
        format!("--bounding-set=-all,{caps}"),
    );
    let b = Exporter::builder()
        .binary(binary_for_nobody(&dir))
        .wrapper(&[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--no-new-privs",
            &inh,
            &amb,
            &bnd,
        ])
        .pid(g.master_pid());
    let e = recording_hook(b, &caps_file).start();
    let kept = kept_by_default(&g, &e);
    assert_kept(&g, &e, &kept, &given);
    new_worker_is_counted_exactly(&g, &e, &caps_file);
}

/// As nobody with what loading needs but CAP_DAC_READ_SEARCH, the start-up
/// error says what is missing (tracefs is root's, mode 0700), not that
/// tracefs is not mounted.
#[test]
fn a_user_without_cap_dac_read_search_is_told_so() {
    let g = Gunicorn::builder(Version::V27, "sync").workers(1).start();
    let dir = TestDir::new("no-dac");
    let caps = "+bpf,+perfmon,+sys_ptrace";
    let (inh, amb, bnd) = (
        format!("--inh-caps=-all,{caps}"),
        format!("--ambient-caps=-all,{caps}"),
        format!("--bounding-set=-all,{caps}"),
    );
    let exit = Exporter::builder()
        .binary(binary_for_nobody(&dir))
        .wrapper(&[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            &inh,
            &amb,
            &bnd,
        ])
        .pid(g.master_pid())
        .run_to_exit(EXIT_TIMEOUT * 6);
    assert!(
        !exit.status.success() && exit.stderr.contains("CAP_DAC_READ_SEARCH"),
        "{exit:?}"
    );
}

/// The ids of the eBPF objects a process holds, from its descriptors'
/// fdinfo, with the maps its programs use and the programs its perf events
/// run.
#[derive(Debug, Default)]
struct Held {
    progs: BTreeSet<u32>,
    maps: BTreeSet<u32>,
    links: BTreeSet<u32>,
}

/// `bpftool -j ARGS`, parsed.
fn bpftool(args: &[&str]) -> Value {
    let out = Command::new(BPFTOOL)
        .arg("-j")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{BPFTOOL}: {e} (`cargo xtask setup` installs it)"));
    assert!(
        out.status.success(),
        "bpftool {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("bpftool {args:?}: not JSON: {e}"))
}

/// `bpftool KIND show id ID`: only while the exporter holds the object (see
/// [`exists`]).
fn shown(kind: &str, id: u32) -> Value {
    bpftool(&[kind, "show", "id", &id.to_string()])
}

/// Programs run by perf events that `pid` holds (tracepoints, uprobes).
fn perf_programs(pid: u32) -> BTreeSet<u32> {
    let perf = bpftool(&["perf", "list"]);
    perf.as_array()
        .into_iter()
        .flatten()
        .filter(|p| p.get("pid").and_then(Value::as_u64) == Some(pid.into()))
        .filter_map(|p| p.get("prog_id")?.as_u64()?.try_into().ok())
        .collect()
}

fn held(pid: u32) -> Held {
    let mut held = Held::default();
    let fds = std::fs::read_dir(format!("/proc/{pid}/fdinfo")).expect("the exporter's fdinfo");
    for fd in fds.flatten() {
        let info = std::fs::read_to_string(fd.path()).unwrap_or_default();
        for line in info.lines() {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let set = match key {
                "prog_id" => &mut held.progs,
                "map_id" => &mut held.maps,
                "link_id" => &mut held.links,
                _ => continue,
            };
            set.extend(value.trim().parse::<u32>());
        }
    }
    held.progs.extend(perf_programs(pid));
    for &prog in &held.progs {
        let maps = shown("prog", prog);
        let maps = maps.get("map_ids").and_then(Value::as_array);
        held.maps.extend(
            maps.into_iter()
                .flatten()
                .filter_map(|m| u32::try_from(m.as_u64()?).ok()),
        );
    }
    held
}

/// The names of `ids` of `kind`, cut to the kernel's 15 bytes (bpftool
/// shows a program's whole name from its BTF).
fn names_of(kind: &str, ids: &BTreeSet<u32>) -> BTreeSet<String> {
    ids.iter()
        .filter_map(|&id| Some(truncated(shown(kind, id).get("name")?.as_str()?)))
        .collect()
}

fn truncated(name: &str) -> String {
    name.chars().take(15).collect()
}

/// Whether the kernel still has object `id` of `kind`, asked without
/// opening it (BPF_*_GET_NEXT_ID from `id - 1`). `bpftool list` and `show`
/// open objects by id, and a prog array opened and closed that way while
/// the kernel's deferred clear of it is pending (just after its owner
/// closed it) is never freed: on Linux 6.18 `prog_array_map_clear` takes a
/// reference each time and its work, already queued, drops one. A test
/// polling bpftool would leak the very maps it looks for.
fn exists(kind: &str, id: u32) -> bool {
    const BPF_PROG_GET_NEXT_ID: libc::c_long = 11;
    const BPF_MAP_GET_NEXT_ID: libc::c_long = 12;
    const BPF_LINK_GET_NEXT_ID: libc::c_long = 31;
    /// The GET_NEXT_ID member of `union bpf_attr`.
    #[repr(C)]
    struct NextId {
        start_id: u32,
        next_id: u32,
        open_flags: u32,
    }
    let cmd = match kind {
        "prog" => BPF_PROG_GET_NEXT_ID,
        "map" => BPF_MAP_GET_NEXT_ID,
        "link" => BPF_LINK_GET_NEXT_ID,
        _ => unreachable!("kind {kind}"),
    };
    let mut attr = NextId {
        start_id: id - 1,
        next_id: 0,
        open_flags: 0,
    };
    // SAFETY: bpf(2) reads and writes only `attr`, of the size given.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            &mut attr as *mut NextId,
            std::mem::size_of::<NextId>(),
        )
    };
    r == 0 && attr.next_id == id
}

/// One exporter, stopped by `sig`: what it held is all gone soon after, and
/// SIGTERM and SIGINT end it at once with status 0.
fn leaves_nothing_behind(sig: libc::c_int) {
    let g = Gunicorn::builder(Version::V27, "sync").workers(1).start();
    let mut e = Exporter::attach(&g);
    let held = held(e.pid());

    // By name: these are the exporter's objects, all of them.
    let maps = names_of("map", &held.maps);
    let want_maps = [
        map::TRACKED,
        map::WATCHED,
        map::CONNS,
        map::METRICS,
        map::CONFIG,
        map::ERRORS,
        map::MASTER_STATS,
        map::EVENTS,
        map::LISTEN_PORTS,
        map::LISTEN_INODES,
        map::HANDSHAKES,
        map::DEAD,
        map::HEARTBEATS,
        map::STAGES_RAW,
        map::STAGES_TRACEPOINT,
    ];
    let missing: Vec<String> = want_maps
        .iter()
        .map(|m| truncated(m))
        .filter(|m| !maps.contains(m))
        .collect();
    assert!(
        missing.is_empty(),
        "maps {missing:?} not among those the exporter holds {maps:?}\n{}",
        story(&g, &e, None)
    );
    let progs = names_of("prog", &held.progs);
    for prog in [
        "task_newtask",
        "sched_process_exec",
        "signal_generate",
        "mark_victim",
    ] {
        assert!(
            progs.contains(&truncated(prog)),
            "program {prog} not among those the exporter holds {progs:?}\n{}",
            story(&g, &e, None)
        );
    }

    // The look-up that follows the exit sees them now.
    for (kind, ids) in [
        ("prog", &held.progs),
        ("map", &held.maps),
        ("link", &held.links),
    ] {
        assert!(
            !ids.is_empty() && ids.iter().all(|&id| exists(kind, id)),
            "harness: {kind} ids {ids:?}\n{}",
            story(&g, &e, None)
        );
    }

    let pid = e.pid();
    let started = Instant::now();
    let status = e
        .signal_and_wait(
            sig,
            if sig == libc::SIGKILL {
                FREED_TIMEOUT
            } else {
                EXIT_TIMEOUT
            },
        )
        .unwrap_or_else(|err| panic!("signal {sig}: {err}\n{}", story(&g, &e, None)));
    let took = started.elapsed();
    if sig == libc::SIGKILL {
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
    } else {
        assert!(
            status.success(),
            "signal {sig}: the exporter exited with {status}\n{}",
            story(&g, &e, None)
        );
    }

    let left = wait::until(
        "the exporter's eBPF objects to be freed",
        FREED_TIMEOUT,
        || {
            let remaining = |kind: &str, ids: &BTreeSet<u32>| -> Vec<u32> {
                ids.iter().copied().filter(|&id| exists(kind, id)).collect()
            };
            let left = [
                ("prog", remaining("prog", &held.progs)),
                ("map", remaining("map", &held.maps)),
                ("link", remaining("link", &held.links)),
                ("perf event", perf_programs(pid).into_iter().collect()),
            ];
            if left.iter().all(|(_, ids)| ids.is_empty()) {
                Ok(())
            } else {
                Err(format!("{left:?}"))
            }
        },
    );
    if let Err(err) = left {
        panic!(
            "after signal {sig} (exit {status} in {took:?}), held {held:?}: {err}\n{}",
            story(&g, &e, None)
        );
    }
}

#[test]
fn sigterm_leaves_nothing_behind() {
    leaves_nothing_behind(libc::SIGTERM);
}

#[test]
fn sigint_leaves_nothing_behind() {
    leaves_nothing_behind(libc::SIGINT);
}

#[test]
fn sigkill_leaves_nothing_behind() {
    leaves_nothing_behind(libc::SIGKILL);
}
