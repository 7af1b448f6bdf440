//! What /proc says about the bench's processes (children themselves: `crate::child`).

use std::{
    collections::BTreeMap,
    fs,
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};

/// A loopback port free right now (the kernel's choice).
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .context("binding 127.0.0.1:0 to find a free port")?;
    Ok(listener.local_addr()?.port())
}

/// Clock ticks per second (utime/stime unit).
pub fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// Fields of /proc/<pid>/stat after the `(comm)`, numbered as in proc(5)
/// (field 3, state, is index 0).
fn stat_fields(path: &Path) -> Result<Vec<String>> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let rest = text
        .rfind(')')
        .map(|i| &text[i + 1..])
        .with_context(|| format!("unexpected {}: {text:?}", path.display()))?;
    Ok(rest.split_whitespace().map(str::to_string).collect())
}

fn field(fields: &[String], number: usize) -> Result<u64> {
    fields
        .get(number - 3)
        .and_then(|f| f.parse().ok())
        .with_context(|| format!("no numeric field {number} in a /proc stat line"))
}

/// utime + stime of a process (all its threads, dead ones included), seconds.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    task_cpu_seconds(&PathBuf::from(format!("/proc/{pid}/stat")))
}

/// utime + stime from a /proc/.../stat file, seconds.
pub fn task_cpu_seconds(stat: &Path) -> Result<f64> {
    let fields = stat_fields(stat)?;
    Ok((field(&fields, 14)? + field(&fields, 15)?) as f64 / clk_tck())
}

/// The first field of a schedstat file: nanoseconds on CPU (user + system).
pub fn schedstat_ns(path: &Path) -> Result<u64> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("unexpected {}: {text:?}", path.display()))
}

/// On-CPU nanoseconds of every live thread of a process, by tid (from
/// /proc/<pid>/task/*/schedstat: exact, where utime+stime are whole ticks).
pub fn thread_cpu_ns(pid: u32) -> Result<BTreeMap<u32, u64>> {
    let dir = format!("/proc/{pid}/task");
    let mut out = BTreeMap::new();
    for entry in fs::read_dir(&dir).with_context(|| format!("listing {dir}"))? {
        let entry = entry?;
        let Some(tid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        // A thread may exit between the listing and the read.
        if let Ok(ns) = schedstat_ns(&entry.path().join("schedstat")) {
            out.insert(tid, ns);
        }
    }
    if out.is_empty() {
        bail!("no readable thread in {dir}");
    }
    Ok(out)
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

/// The parent pid and start time (ticks since boot) of a process.
fn ppid_and_start(pid: u32) -> Option<(u32, u64)> {
    let fields = stat_fields(&PathBuf::from(format!("/proc/{pid}/stat"))).ok()?;
    Some((field(&fields, 4).ok()? as u32, field(&fields, 22).ok()?))
}

/// A process identity that survives pid reuse: (pid, start time).
pub type ProcId = (u32, u64);

/// The children of `parent` (from every /proc/<pid>/stat), sorted.
pub fn children(parent: u32) -> Vec<ProcId> {
    let mut out = Vec::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some((ppid, start)) = ppid_and_start(pid)
            && ppid == parent
        {
            out.push((pid, start));
        }
    }
    out.sort();
    out
}

/// VmRSS and VmHWM (peak) of a process, bytes.
pub fn rss_bytes(pid: u32) -> Result<(u64, u64)> {
    let path = format!("/proc/{pid}/status");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let kb = |key: &str| -> Result<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|v| v * 1024)
            .with_context(|| format!("no {key} in {path}"))
    };
    Ok((kb("VmRSS:")?, kb("VmHWM:")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_stat() {
        let pid = std::process::id();
        assert!(cpu_seconds(pid).unwrap() >= 0.0);
        let (rss, hwm) = rss_bytes(pid).unwrap();
        assert!(rss > 0 && hwm >= rss);
        let (ppid, _) = ppid_and_start(pid).unwrap();
        assert!(children(ppid).iter().any(|(p, _)| *p == pid));
        let threads = thread_cpu_ns(pid).unwrap();
        assert!(threads.contains_key(&pid));
    }

    #[test]
    fn cpu_delta_counts_live_threads() {
        let before = BTreeMap::from([(1, 100), (2, 1_000_000_000), (3, 7)]);
        let after = BTreeMap::from([(1, 600), (2, 1_500_000_000), (4, 400)]);
        // 500 + 500_000_000 + 400 (born in between); thread 3 exited.
        assert_eq!(cpu_delta_s(&before, &after), 0.500_000_9);
    }

    #[test]
    fn stat_fields_skip_comm_with_spaces() {
        let dir = std::env::temp_dir().join(format!("xtask-stat-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("stat");
        fs::write(
            &path,
            "42 (a b) c) S 1 42 42 0 -1 4194560 1 0 0 0 250 50 0 0 20 0 1 0 999 0 0\n",
        )
        .unwrap();
        assert_eq!(task_cpu_seconds(&path).unwrap(), 300.0 / clk_tck());
        fs::remove_dir_all(&dir).unwrap();
    }
}
