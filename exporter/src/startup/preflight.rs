//! Checks before loading anything: privileges, tracefs, kernel BTF, and the
//! tracepoint layout the programs were built for. Each failure says what to do.

use std::path::Path;

use exporter_ebpf::tracepoint::{LIFECYCLE_FIELDS, SYSCALL_FIELDS, field_offset};

use crate::startup::capabilities::Hooks;
use thiserror::Error;

pub const TRACEFS: &str = "/sys/kernel/tracing";
pub const KERNEL_BTF: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug, Error)]
pub enum PreflightError {
    #[error(
        "permission denied: loading eBPF programs needs root, or the capabilities CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN) plus CAP_SYS_PTRACE to read other processes; run it with sudo"
    )]
    NoPrivileges,
    #[error(
        "tracefs is not mounted at {TRACEFS} and mounting it failed ({0}): run `mount -t tracefs tracefs {TRACEFS}`"
    )]
    NoTracefs(std::io::Error),
    #[error(
        "permission denied reading tracefs at {TRACEFS}: a user other than root needs CAP_DAC_READ_SEARCH too"
    )]
    TracefsDenied,
    #[error(
        "tracepoint {tracepoint} is missing from this kernel ({TRACEFS}/events/{tracepoint}/format): the syscalls:* ones need CONFIG_FTRACE_SYSCALLS"
    )]
    MissingTracepoint { tracepoint: String },
    #[error(
        "tracepoint {tracepoint}: field `{field}` is at offset {actual:?} on this kernel, the programs expect {expected}"
    )]
    LayoutMismatch {
        tracepoint: String,
        field: String,
        expected: usize,
        actual: Option<usize>,
    },
}

const CAP_SYS_ADMIN: u32 = 21;
const CAP_SYS_PTRACE: u32 = 19;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Whether effective capabilities `cap_eff` (the CapEff mask) allow loading
/// and attaching tracepoint programs and reading other processes' /proc.
pub fn capabilities_suffice(cap_eff: u64) -> bool {
    let has = |cap: u32| cap_eff & (1u64 << cap) != 0;
    let load = has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON));
    load && has(CAP_SYS_PTRACE)
}

pub fn check_privileges() -> Result<(), PreflightError> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    if capabilities_suffice(cap_eff) {
        Ok(())
    } else {
        Err(PreflightError::NoPrivileges)
    }
}

/// Mounts tracefs when it is missing (aya resolves tracepoint ids through it).
pub fn ensure_tracefs() -> Result<(), PreflightError> {
    // tracefs is root's, mode 0700: not a missing mount for anyone else.
    match std::fs::metadata(Path::new(TRACEFS).join("events")) {
        Ok(meta) if meta.is_dir() => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Err(PreflightError::TracefsDenied);
        }
        _ => {}
    }
    let status = std::process::Command::new("mount")
        .args(["-t", "tracefs", "tracefs", TRACEFS])
        .status()
        .map_err(PreflightError::NoTracefs)?;
    if status.success() && Path::new(TRACEFS).join("events").is_dir() {
        log::info!("mounted tracefs at {TRACEFS}");
        Ok(())
    } else {
        Err(PreflightError::NoTracefs(std::io::Error::other(format!(
            "mount exited with {status}"
        ))))
    }
}

/// Raises the soft limit on open files to the hard one: each worker followed
/// by a uprobe (the socket hooks' exception classes) holds a descriptor, so
/// a node's 1,024 workers would pass the usual soft limit of 1,024. Returns
/// the limit now in force.
pub fn raise_open_files() -> libc::rlim_t {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 0;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    limit.rlim_cur
}

/// Compares the running kernel's tracepoint formats with what the classic
/// tracepoint programs of `hooks` read.
pub fn check_layout(hooks: Hooks) -> Result<(), PreflightError> {
    let syscalls: &[(&str, &str, usize)] = if hooks == Hooks::Sockets {
        &[]
    } else {
        SYSCALL_FIELDS
    };
    for &(tracepoint, field, expected) in LIFECYCLE_FIELDS.iter().chain(syscalls) {
        let path = Path::new(TRACEFS)
            .join("events")
            .join(tracepoint)
            .join("format");
        let format =
            std::fs::read_to_string(&path).map_err(|_| PreflightError::MissingTracepoint {
                tracepoint: tracepoint.into(),
            })?;
        let actual = field_offset(&format, field);
        if actual != Some(expected) {
            return Err(PreflightError::LayoutMismatch {
                tracepoint: tracepoint.into(),
                field: field.into(),
                expected,
                actual,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_sets() {
        assert!(capabilities_suffice(u64::MAX), "root");
        assert!(!capabilities_suffice(0), "nobody");
        let bpf_perfmon_ptrace = (1 << CAP_BPF) | (1 << CAP_PERFMON) | (1 << CAP_SYS_PTRACE);
        assert!(capabilities_suffice(bpf_perfmon_ptrace));
        assert!(!capabilities_suffice(
            (1 << CAP_BPF) | (1 << CAP_SYS_PTRACE)
        ));
        assert!(
            !capabilities_suffice(1 << CAP_SYS_ADMIN),
            "cannot read other processes"
        );
    }

    #[test]
    fn open_files_limit_is_the_hard_one() {
        let now = raise_open_files();
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes the struct we own.
        assert_eq!(
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
            0
        );
        assert_eq!((limit.rlim_cur, now), (limit.rlim_max, limit.rlim_max));
    }

    #[test]
    fn the_running_kernel_has_the_layout_the_programs_read() {
        ensure_tracefs().unwrap();
        check_layout(Hooks::Syscalls).unwrap();
    }
}
