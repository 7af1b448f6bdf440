//! Least privilege: once the programs are attached and the listener bound,
//! only what runs later needs privileges, and it needs few. The exporter
//! keeps those capabilities and drops every other one from its effective,
//! permitted and bounding sets, and all from its inheritable and ambient
//! sets. `--on` commands, which it runs as children, then get none, but for
//! a root exporter without CAP_SETPCAP (bounded by a service manager): it
//! cannot set SECBIT_NOROOT, and root's children get the bounding set.
//!
//! What runs later, and what it needs:
//! - the scrape and the event loops use the maps through descriptors already
//!   open, but each access is a bpf() syscall, which Linux before 6.5 refuses
//!   without CAP_BPF when unprivileged eBPF is disabled (the usual default):
//!   a map read with the capabilities that would remain says which;
//! - the read/write syscall family on demand (syscall hooks, `--io-syscalls
//!   auto`) loads and attaches tracepoint programs: CAP_BPF and CAP_PERFMON;
//! - a uprobe on each new worker's C library (socket hooks, exception
//!   classes): CAP_SYS_ADMIN, which the kernel requires to create uprobes
//!   again since mid-2025 ("perf: Revert to requiring CAP_SYS_ADMIN for
//!   uprobes", in 6.16 and the stable kernels down to 6.1); it covers every
//!   CAP_BPF and CAP_PERFMON check too, so those two go then;
//! - /proc/<pid>/fd, maps, root and ns of Gunicorn's processes: a process
//!   whose credentials differ from ours, or with capabilities we lack, is
//!   readable only with CAP_SYS_PTRACE;
//! - the same directories are mode 0500 and the workers' heartbeat files
//!   0600, owned by Gunicorn's user: reading them as another user (inotify
//!   watches need read access) takes CAP_DAC_READ_SEARCH;
//! - sock_diag in a master's network namespace other than ours means
//!   entering it (setns): CAP_SYS_ADMIN, kept only for such a master.

use std::{ffi::c_ulong, os::unix::fs::MetadataExt as _};

use caps::{CapSet, Capability, CapsHashSet, errors::CapsError};

/// What the exporter does after start-up that needs privileges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Later {
    /// Uprobes on new workers.
    pub uprobes: bool,
    /// Tracepoint programs loaded and attached on demand.
    pub tracepoints: bool,
    /// The master is in another network namespace.
    pub enters_netns: bool,
}

/// The capabilities `later` needs, out of `permitted`, with CAP_BPF for
/// the maps if `maps_need_bpf`. CAP_SYS_ADMIN
/// passes every check CAP_BPF and CAP_PERFMON pass: it replaces them where
/// it is needed anyway, and where they were not given (the start-up check
/// accepts it instead).
fn needed(later: Later, maps_need_bpf: bool, permitted: &CapsHashSet) -> CapsHashSet {
    let mut want: CapsHashSet = [Capability::CAP_SYS_PTRACE, Capability::CAP_DAC_READ_SEARCH]
        .into_iter()
        .collect();
    let bpf: &[Capability] = match (later.tracepoints, maps_need_bpf) {
        (true, _) => &[Capability::CAP_BPF, Capability::CAP_PERFMON],
        (false, true) => &[Capability::CAP_BPF],
        (false, false) => &[],
    };
    if later.uprobes || later.enters_netns || !bpf.iter().all(|c| permitted.contains(c)) {
        want.insert(Capability::CAP_SYS_ADMIN);
    } else {
        want.extend(bpf);
    }
    want.intersection(permitted).copied().collect()
}

/// What to keep for `later`: CAP_BPF for the maps only if `maps_answer`
/// fails without it, run with the effective set that would remain (the
/// permitted set is untouched until [`keep_only`]).
pub fn to_keep(
    later: Later,
    permitted: &CapsHashSet,
    maps_answer: impl FnOnce() -> bool,
) -> Result<CapsHashSet, CapsError> {
    let with_bpf = needed(later, true, permitted);
    let without = needed(later, false, permitted);
    if without == with_bpf {
        return Ok(without);
    }
    let effective = caps::read(None, CapSet::Effective)?;
    caps::set(None, CapSet::Effective, &without)?;
    let answered = maps_answer();
    caps::set(None, CapSet::Effective, &effective)?;
    Ok(if answered { without } else { with_bpf })
}

/// Whether `pid` is in another network namespace than this process.
pub fn other_netns(pid: u32) -> bool {
    let ns = |path: String| std::fs::metadata(path).map(|m| (m.dev(), m.ino())).ok();
    ns("/proc/self/ns/net".into()) != ns(format!("/proc/{pid}/ns/net"))
}

/// Keeps only `keep` (of what this thread has) and returns what it kept,
/// sorted. Call it while the process has this one thread: capabilities are
/// per thread, and threads started later inherit them.
pub fn keep_only(keep: &CapsHashSet) -> Result<Vec<Capability>, CapsError> {
    if caps::has_cap(None, CapSet::Effective, Capability::CAP_SETPCAP)? {
        // A root child gains its bounding set at execve unless SECBIT_NOROOT
        // says otherwise: the `--on` commands then start with none.
        set_noroot()?;
        for cap in caps::read(None, CapSet::Bounding)?.difference(keep) {
            caps::drop(None, CapSet::Bounding, *cap)?;
        }
    } else {
        // Not ours to narrow (a service manager set it, e.g. systemd's
        // CapabilityBoundingSet): the sets below still shrink.
        log::debug!("no CAP_SETPCAP: the bounding set stays as given");
    }
    caps::clear(None, CapSet::Ambient)?;
    caps::clear(None, CapSet::Inheritable)?;
    let kept: CapsHashSet = caps::read(None, CapSet::Permitted)?
        .intersection(keep)
        .copied()
        .collect();
    caps::set(None, CapSet::Effective, &kept)?;
    caps::set(None, CapSet::Permitted, &kept)?;
    let mut kept: Vec<Capability> = kept.into_iter().collect();
    kept.sort_by_key(|c| c.index());
    Ok(kept)
}

/// SECBIT_NOROOT, locked. The caps crate sets only the keep-caps bit.
fn set_noroot() -> Result<(), CapsError> {
    const SECBIT_NOROOT: c_ulong = 1 << 0;
    const SECBIT_NOROOT_LOCKED: c_ulong = 1 << 1;
    // SAFETY: prctl with integer arguments only.
    let bits = unsafe { libc::prctl(libc::PR_GET_SECUREBITS) };
    let set = bits >= 0
        // SAFETY: as above.
        && unsafe {
            libc::prctl(
                libc::PR_SET_SECUREBITS,
                bits as c_ulong | SECBIT_NOROOT | SECBIT_NOROOT_LOCKED,
            )
        } == 0;
    if set {
        Ok(())
    } else {
        Err(format!("setting SECBIT_NOROOT: {}", std::io::Error::last_os_error()).into())
    }
}

/// `cap_bpf, cap_perfmon, ...` for the log.
pub fn names(caps: &[Capability]) -> String {
    let names: Vec<String> = caps.iter().map(|c| c.to_string().to_lowercase()).collect();
    names.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use Capability::*;

    fn set(caps: &[Capability]) -> CapsHashSet {
        caps.iter().copied().collect()
    }

    const QUIET: Later = Later {
        uprobes: false,
        tracepoints: false,
        enters_netns: false,
    };

    #[test]
    fn root_keeps_what_runs_later_needs() {
        let all = caps::all();
        let base = [CAP_SYS_PTRACE, CAP_DAC_READ_SEARCH];
        let with = |extra: &[Capability]| set(&[&base[..], extra].concat());
        assert_eq!(needed(QUIET, true, &all), with(&[CAP_BPF]));
        assert_eq!(needed(QUIET, false, &all), with(&[]));
        let tracepoints = Later {
            tracepoints: true,
            ..QUIET
        };
        assert_eq!(
            needed(tracepoints, true, &all),
            with(&[CAP_BPF, CAP_PERFMON])
        );
        let uprobes = Later {
            uprobes: true,
            ..QUIET
        };
        assert_eq!(needed(uprobes, true, &all), with(&[CAP_SYS_ADMIN]));
        let netns = Later {
            enters_netns: true,
            ..tracepoints
        };
        assert_eq!(needed(netns, true, &all), with(&[CAP_SYS_ADMIN]));
    }

    #[test]
    fn only_what_was_given_is_kept() {
        let tracepoints = Later {
            tracepoints: true,
            ..QUIET
        };
        let given = set(&[CAP_SYS_ADMIN, CAP_SYS_PTRACE, CAP_NET_ADMIN]);
        assert_eq!(
            needed(tracepoints, true, &given),
            set(&[CAP_SYS_ADMIN, CAP_SYS_PTRACE]),
            "CAP_SYS_ADMIN in place of CAP_BPF and CAP_PERFMON"
        );
        let given = set(&[CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE]);
        assert_eq!(needed(tracepoints, true, &given), given);
    }

    #[test]
    fn this_process_shares_its_network_namespace() {
        assert!(!other_netns(std::process::id()));
    }

    #[test]
    fn names_are_lowercase() {
        assert_eq!(names(&[CAP_BPF, CAP_SYS_PTRACE]), "cap_bpf, cap_sys_ptrace");
    }
}
