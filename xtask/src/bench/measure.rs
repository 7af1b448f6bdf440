//! What one measured run reads: wrk's results and its own CPU (rusage of the
//! child), processes' CPU and memory from /proc (procfs), BPF program
//! statistics, scrapes (parsed as the tests parse them), the statsd sink's
//! counts.

use std::{
    collections::{BTreeMap, HashMap},
    fs::{self, File},
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream, UdpSocket},
    os::unix::process::CommandExt as _,
    path::Path,
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use integration_tests::{
    fixtures::die_with_parent,
    http,
    prom::{self, Metrics},
    tail_file,
};
use procfs::process::{FDTarget, Process};

use crate::commands;

// ---------------------------------------------------------------- wrk

/// One wrk run's results.
#[derive(Debug, Clone, Default)]
pub struct WrkResult {
    pub requests: u64,
    pub seconds: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub mean_us: f64,
    pub max_us: f64,
    /// Responses with status >= 400 (wrk's "Non-2xx or 3xx").
    pub status_errors: u64,
    /// connect + read + write + timeout errors.
    pub socket_errors: u64,
    /// wrk's own user + system CPU (rusage of the child), seconds.
    pub cpu_seconds: f64,
}

impl WrkResult {
    pub fn rps(&self) -> f64 {
        if self.seconds > 0.0 {
            self.requests as f64 / self.seconds
        } else {
            0.0
        }
    }
}

pub struct WrkParams<'a> {
    pub url: &'a str,
    pub script: &'a Path,
    pub connections: u32,
    pub seconds: u64,
    pub keepalive: bool,
    pub stderr: &'a Path,
}

/// Run wrk to completion; its CPU comes from wait4's rusage.
pub fn wrk(p: &WrkParams) -> Result<WrkResult> {
    let mut cmd = commands::command("wrk");
    cmd.args(["-t1", "-c"])
        .arg(p.connections.to_string())
        .arg("-d")
        .arg(format!("{}s", p.seconds))
        .arg("--timeout")
        .arg("10s")
        .arg("-s")
        .arg(p.script);
    if !p.keepalive {
        cmd.args(["-H", "Connection: close"]);
    }
    cmd.arg(p.url);
    let described = commands::describe(&cmd);
    let err = File::create(p.stderr).with_context(|| format!("creating {}", p.stderr.display()))?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(err)
        .process_group(0);
    die_with_parent(&mut cmd);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("could not start `{described}`"))?;
    let mut out = String::new();
    child
        .stdout
        .take()
        .context("wrk's stdout")?
        .read_to_string(&mut out)
        .context("reading wrk's output")?;
    let mut status = 0;
    // SAFETY: zeroed rusage is a valid value; wait4 fills it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: our own child, not reaped yet (std's Child is not waited after).
    let rc = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    if rc < 0 {
        bail!("wait4 on wrk: {}", std::io::Error::last_os_error());
    }
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!(
            "`{described}` failed (wait status {status})\n{}{}",
            out,
            tail_file(p.stderr, 10)
        );
    }
    let mut result = parse_wrk(&out).with_context(|| format!("output of `{described}`"))?;
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    result.cpu_seconds = tv(usage.ru_utime) + tv(usage.ru_stime);
    Ok(result)
}

/// The `BENCH key=value ...` line that report.lua's `done` prints.
pub fn parse_wrk(out: &str) -> Result<WrkResult> {
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix("BENCH "))
        .with_context(|| format!("no BENCH line in wrk's output:\n{out}"))?;
    let kv: HashMap<&str, f64> = line
        .split_whitespace()
        .filter_map(|f| f.split_once('='))
        .filter_map(|(k, v)| v.parse().ok().map(|v| (k, v)))
        .collect();
    let get = |k: &str| {
        kv.get(k)
            .copied()
            .with_context(|| format!("no {k} in wrk's BENCH line {line:?}"))
    };
    Ok(WrkResult {
        requests: get("requests")? as u64,
        seconds: get("duration_us")? / 1e6,
        p50_us: get("p50_us")?,
        p90_us: get("p90_us")?,
        p99_us: get("p99_us")?,
        mean_us: get("mean_us")?,
        max_us: get("max_us")?,
        status_errors: get("status")? as u64,
        socket_errors: (get("connect")? + get("read")? + get("write")? + get("timeout")?) as u64,
        cpu_seconds: 0.0,
    })
}

// ---------------------------------------------------------------- HTTP, scrapes

const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether `GET path` gets an answer, whatever its status.
pub fn answers(addr: SocketAddr, path: &str) -> bool {
    http::get(addr, path, HTTP_TIMEOUT).is_ok()
}

/// `http://addr/metrics`, parsed as the tests parse it.
pub fn scrape(addr: SocketAddr) -> Result<Metrics> {
    prom::scrape(addr, HTTP_TIMEOUT).map_err(anyhow::Error::msg)
}

// ---------------------------------------------------------------- processes

/// On-CPU nanoseconds of every live thread of a process, by tid (schedstat:
/// exact, where utime+stime are whole ticks).
pub fn thread_cpu_ns(pid: u32) -> Result<BTreeMap<u32, u64>> {
    let threads: BTreeMap<u32, u64> = Process::new(pid as i32)
        .and_then(|p| p.tasks())
        .with_context(|| format!("/proc/{pid}/task"))?
        .flatten()
        // A thread may exit between the listing and the read.
        .filter_map(|t| Some((t.tid as u32, t.schedstat().ok()?.sum_exec_runtime)))
        .collect();
    if threads.is_empty() {
        bail!("no readable thread in /proc/{pid}/task");
    }
    Ok(threads)
}

/// CPU seconds between two thread snapshots: for every thread alive at the
/// end, what it gained (all of it for a thread born in between). A thread that
/// exited in between is missed (gunicorn's and the exporter's threads live as
/// long as their process).
pub fn cpu_delta_s(before: &BTreeMap<u32, u64>, after: &BTreeMap<u32, u64>) -> f64 {
    after
        .iter()
        .map(|(tid, ns)| ns.saturating_sub(before.get(tid).copied().unwrap_or(0)))
        .sum::<u64>() as f64
        / 1e9
}

/// utime + stime of a process (all its threads, dead ones included), seconds.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = Process::new(pid as i32)
        .and_then(|p| p.stat())
        .with_context(|| format!("/proc/{pid}/stat"))?;
    Ok((stat.utime + stat.stime) as f64 / procfs::ticks_per_second() as f64)
}

/// VmRSS and VmHWM (peak) of a process, bytes.
pub fn rss_bytes(pid: u32) -> Result<(u64, u64)> {
    let status = Process::new(pid as i32)
        .and_then(|p| p.status())
        .with_context(|| format!("/proc/{pid}/status"))?;
    let bytes = |kb: Option<u64>, what| {
        kb.map(|kb| kb * 1024)
            .with_context(|| format!("no {what} in /proc/{pid}/status"))
    };
    Ok((bytes(status.vmrss, "VmRSS")?, bytes(status.vmhwm, "VmHWM")?))
}

/// A process identity that survives pid reuse: (pid, start time in ticks).
pub type PidAndStart = (u32, u64);

/// The children of `parent`, sorted.
pub fn children(parent: u32) -> Vec<PidAndStart> {
    let mut out: Vec<PidAndStart> = procfs::process::all_processes()
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|p| p.stat().ok())
        .filter(|stat| stat.ppid == parent as i32)
        .map(|stat| (stat.pid as u32, stat.starttime))
        .collect();
    out.sort();
    out
}

// ---------------------------------------------------------------- BPF

const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// `kernel.bpf_stats_enabled=1` while alive; the previous value is restored
/// when dropped (errors and Ctrl-C included: the bench unwinds to drop it).
pub struct BpfStats {
    previous: String,
}

impl BpfStats {
    pub fn enable() -> Result<Self> {
        let previous = fs::read_to_string(BPF_STATS)
            .with_context(|| format!("reading {BPF_STATS}"))?
            .trim()
            .to_string();
        fs::write(BPF_STATS, "1").with_context(|| format!("writing 1 to {BPF_STATS}"))?;
        Ok(Self { previous })
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        if let Err(e) = fs::write(BPF_STATS, &self.previous) {
            eprintln!(
                "bench: could not restore {BPF_STATS} to {}: {e}",
                self.previous
            );
        }
    }
}

/// Statistics of one BPF program, from the fdinfo of a process's program fd.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProgStats {
    pub id: u32,
    pub run_time_ns: u64,
    pub run_cnt: u64,
    pub recursion_misses: u64,
}

/// The BPF programs a process holds open, by program id (the exporter keeps
/// one fd per program). bpftool here prints no owner pids, so the programs
/// are found from /proc/<pid>/fdinfo, which also carries the run statistics.
pub fn process_progs(pid: u32) -> Result<BTreeMap<u32, ProgStats>> {
    let fds = Process::new(pid as i32)
        .and_then(|p| p.fd())
        .with_context(|| format!("/proc/{pid}/fd"))?;
    let mut progs = BTreeMap::new();
    for fd in fds.flatten() {
        if !matches!(&fd.target, FDTarget::AnonInode(kind) if kind == "bpf-prog") {
            continue;
        }
        let Ok(text) = fs::read_to_string(format!("/proc/{pid}/fdinfo/{}", fd.fd)) else {
            continue;
        };
        let stats = parse_fdinfo(&text);
        if stats.id != 0 {
            progs.insert(stats.id, stats);
        }
    }
    Ok(progs)
}

fn parse_fdinfo(text: &str) -> ProgStats {
    let mut stats = ProgStats::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key.trim() {
            "prog_id" => stats.id = value.parse().unwrap_or(0),
            "run_time_ns" => stats.run_time_ns = value.parse().unwrap_or(0),
            "run_cnt" => stats.run_cnt = value.parse().unwrap_or(0),
            "recursion_misses" => stats.recursion_misses = value.parse().unwrap_or(0),
            _ => {}
        }
    }
    stats
}

/// Program id -> name, from `bpftool --json prog show`.
pub fn prog_names() -> Result<HashMap<u32, String>> {
    let out = commands::stdout(commands::command("bpftool").args(["--json", "prog", "show"]))?;
    let json: serde_json::Value =
        serde_json::from_str(&out).context("parsing `bpftool --json prog show`")?;
    let mut names = HashMap::new();
    for prog in json.as_array().into_iter().flatten() {
        if let (Some(id), Some(name)) = (prog["id"].as_u64(), prog["name"].as_str()) {
            names.insert(id as u32, name.to_string());
        }
    }
    Ok(names)
}

/// Tracing programs loaded on the host right now: (id, type, name). Taken
/// while no exporter of the bench runs, they are someone else's: programs on
/// syscall tracepoints slow every process, the plain rows included.
pub fn foreign_tracing_progs() -> Result<Vec<(u32, String, String)>> {
    let out = commands::stdout(commands::command("bpftool").args(["--json", "prog", "show"]))?;
    let json: serde_json::Value =
        serde_json::from_str(&out).context("parsing `bpftool --json prog show`")?;
    let mut progs = Vec::new();
    for prog in json.as_array().into_iter().flatten() {
        let kind = prog["type"].as_str().unwrap_or_default();
        if matches!(
            kind,
            "tracepoint" | "raw_tracepoint" | "kprobe" | "tracing" | "perf_event"
        ) {
            progs.push((
                prog["id"].as_u64().unwrap_or_default() as u32,
                kind.to_string(),
                prog["name"].as_str().unwrap_or_default().to_string(),
            ));
        }
    }
    Ok(progs)
}

// ---------------------------------------------------------------- statsd sink

/// A local statsd sink: a UDP socket drained by a thread of xtask, counting
/// gunicorn's per-request counter; its CPU is read from
/// /proc/self/task/<tid>/stat.
pub struct StatsdSink {
    pub port: u16,
    pub requests: Arc<AtomicU64>,
    tid: Arc<AtomicI32>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl StatsdSink {
    pub fn start() -> Result<Self> {
        let socket = UdpSocket::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .context("binding the statsd sink")?;
        socket.set_read_timeout(Some(Duration::from_millis(200)))?;
        let port = socket.local_addr()?.port();
        let requests = Arc::new(AtomicU64::new(0));
        let tid = Arc::new(AtomicI32::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (requests, tid, stop) = (requests.clone(), tid.clone(), stop.clone());
            thread::Builder::new()
                .name("statsd-sink".into())
                .spawn(move || {
                    // SAFETY: gettid has no preconditions.
                    tid.store(unsafe { libc::gettid() }, Ordering::SeqCst);
                    let mut buf = [0u8; 65536];
                    while !stop.load(Ordering::Relaxed) {
                        let Ok(n) = socket.recv(&mut buf) else {
                            continue;
                        };
                        // gunicorn sends one metric per datagram; a statsd
                        // client may batch lines.
                        for line in buf[..n].split(|&b| b == b'\n') {
                            if line.starts_with(b"gunicorn.requests:") {
                                requests.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                })
                .context("starting the statsd sink thread")?
        };
        let start = Instant::now();
        while tid.load(Ordering::SeqCst) == 0 && start.elapsed() < Duration::from_secs(5) {
            thread::sleep(Duration::from_millis(5));
        }
        Ok(Self {
            port,
            requests,
            tid,
            stop,
            thread: Some(thread),
        })
    }

    /// The sink thread's CPU, as a one-thread snapshot (tid -> ns).
    pub fn cpu_ns(&self) -> Result<BTreeMap<u32, u64>> {
        let tid = self.tid.load(Ordering::SeqCst);
        let ns = Process::myself()
            .and_then(|p| p.task_from_tid(tid)?.schedstat())
            .with_context(|| format!("schedstat of the statsd sink's thread {tid}"))?
            .sum_exec_runtime;
        Ok(BTreeMap::from([(tid as u32, ns)]))
    }
}

impl Drop for StatsdSink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------- redis

/// Whether a Redis server answers PING on `addr`.
/// The server's `total_commands_processed` (INFO stats; the INFO itself counts).
pub fn redis_commands(addr: SocketAddr) -> Result<u64> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .with_context(|| format!("connecting to redis-server on {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(b"INFO stats\r\n")?;
    let mut text = Vec::new();
    let mut buf = [0u8; 8192];
    // A bulk string: `$<len>\r\n<text>\r\n`; read until the counter's line is in.
    while !String::from_utf8_lossy(&text).contains("total_commands_processed:")
        || !text.ends_with(b"\r\n")
    {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        text.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&text)
        .lines()
        .find_map(|l| {
            l.strip_prefix("total_commands_processed:")?
                .trim()
                .parse()
                .ok()
        })
        .context("INFO stats without total_commands_processed")
}

pub fn redis_ping(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wrk_line() {
        let out = "Running 2s test\nBENCH requests=834 duration_us=2010523 connect=1 read=2 \
                   write=0 status=126 timeout=3 p50_us=16869 p90_us=44309 p99_us=80739 \
                   mean_us=21298.1 max_us=120239\n";
        let r = parse_wrk(out).unwrap();
        assert_eq!(r.requests, 834);
        assert_eq!(r.status_errors, 126);
        assert_eq!(r.socket_errors, 6);
        assert_eq!(r.p99_us, 80739.0);
        assert!((r.rps() - 834.0 / 2.010523).abs() < 1e-6);
        assert!(parse_wrk("nothing").is_err());
    }

    #[test]
    fn reads_own_process() {
        let pid = std::process::id();
        assert!(cpu_seconds(pid).unwrap() >= 0.0);
        let (rss, peak) = rss_bytes(pid).unwrap();
        assert!(rss > 0 && peak >= rss);
        assert!(thread_cpu_ns(pid).unwrap().contains_key(&pid));
        let parent = Process::myself().unwrap().stat().unwrap().ppid as u32;
        assert!(children(parent).iter().any(|(p, _)| *p == pid));
    }

    #[test]
    fn cpu_delta_counts_live_threads() {
        let before = BTreeMap::from([(1, 100), (2, 1_000_000_000), (3, 7)]);
        let after = BTreeMap::from([(1, 600), (2, 1_500_000_000), (4, 400)]);
        // 500 + 500_000_000 + 400 (born in between); thread 3 exited.
        assert_eq!(cpu_delta_s(&before, &after), 0.500_000_9);
    }

    #[test]
    fn parses_fdinfo() {
        let text = "pos:\t0\nflags:\t02000002\nprog_type:\t5\nprog_tag:\tef37\nprog_id:\t2011\n\
                    run_time_ns:\t23919\nrun_cnt:\t83\nrecursion_misses:\t1\n";
        assert_eq!(
            parse_fdinfo(text),
            ProgStats {
                id: 2011,
                run_time_ns: 23919,
                run_cnt: 83,
                recursion_misses: 1
            }
        );
    }
}
