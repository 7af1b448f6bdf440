//! What the running kernel offers, probed at start (never guessed from its
//! version), and the hook set chosen from it.
//!
//! - kernel BTF and the struct fields the programs read ([`crate::btf`]);
//! - the helpers the programs call, by loading a program that calls each
//!   (`bpf_task_pt_regs`, Linux 5.15; `bpf_loop`, 5.17): a kernel without
//!   one gets one clear error, not a verifier dump;
//! - the socket tracepoints `sock:sock_send_length`/`sock_recv_length`
//!   (6.3) and sendfile reaching them through `splice_to_socket` (6.5):
//!   with both, no syscall tracepoint is needed ([`Hooks::Sockets`]);
//! - uprobes, which carry the error log's records on the socket hooks.

use std::path::Path;

use thiserror::Error;

use super::{btf::KernelBtf, preflight};

/// Which hooks carry the client-socket I/O.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Hooks {
    /// The socket hooks where the kernel has them, else the syscall hooks.
    Auto,
    /// Socket-layer tracepoints: no syscall tracepoint, no cost to the rest
    /// of the host's syscalls.
    Sockets,
    /// Syscall tracepoints (every kernel; every syscall on the host takes the
    /// tracing slow path while attached).
    Syscalls,
}

impl Hooks {
    pub fn name(self) -> &'static str {
        match self {
            Hooks::Auto => "auto",
            Hooks::Sockets => "sockets",
            Hooks::Syscalls => "syscalls",
        }
    }
}

/// One probed capability, as the kernel-info metric and the start log show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capability {
    pub name: &'static str,
    pub present: bool,
}

/// What the probe found.
#[derive(Clone, Debug)]
pub struct Kernel {
    /// `uname -r`.
    pub release: String,
    /// The hook set in use.
    pub hooks: Hooks,
    pub capabilities: Vec<Capability>,
}

impl Kernel {
    pub fn has(&self, name: &str) -> bool {
        self.capabilities
            .iter()
            .any(|c| c.name == name && c.present)
    }

    /// One line for the start log.
    pub fn describe(&self) -> String {
        let caps: Vec<String> = self
            .capabilities
            .iter()
            .map(|c| format!("{}{}", if c.present { "+" } else { "-" }, c.name))
            .collect();
        format!(
            "kernel {}: {} hooks ({})",
            self.release,
            self.hooks.name(),
            caps.join(" ")
        )
    }
}

/// The capability names.
pub mod cap {
    pub const BTF: &str = "btf";
    pub const TASK_PT_REGS: &str = "bpf_task_pt_regs";
    pub const BPF_LOOP: &str = "bpf_loop";
    pub const SOCK_LENGTH: &str = "sock_length_tracepoints";
    pub const SENDFILE_SOCKETS: &str = "sendfile_through_sock_sendmsg";
    pub const UPROBES: &str = "uprobes";
}

#[derive(Debug, Error)]
pub enum Unsupported {
    #[error(
        "unsupported kernel {release}: missing {feature} (needs Linux {since} or newer); gunicorn-ebpf-exporter needs Linux 6.1 or newer with BTF"
    )]
    Missing {
        release: String,
        feature: String,
        since: &'static str,
    },
    #[error(
        "--hooks sockets: kernel {release} lacks {feature} (Linux {since}); use --hooks auto or syscalls"
    )]
    NoSocketHooks {
        release: String,
        feature: &'static str,
        since: &'static str,
    },
}

/// The kernel's release (`uname -r`).
pub fn release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string())
}

/// Whether tracefs has the event `category/name`.
fn has_tracepoint(category: &str, name: &str) -> bool {
    Path::new(preflight::TRACEFS)
        .join("events")
        .join(category)
        .join(name)
        .is_dir()
}

/// Whether uprobes can be created (the uprobe PMU is registered).
fn has_uprobes() -> bool {
    Path::new("/sys/bus/event_source/devices/uprobe").is_dir()
}

/// Probes everything but the helpers (which need the loaded object:
/// [`with_helpers`]) and chooses the hooks. `btf` is None without kernel BTF.
pub fn probe(btf: Option<&KernelBtf>, wanted: Hooks) -> Result<Kernel, Unsupported> {
    let release = release();
    let sock_length =
        has_tracepoint("sock", "sock_send_length") && has_tracepoint("sock", "sock_recv_length");
    let sendfile = btf.is_some_and(|b| b.has_func("splice_to_socket"));
    let uprobes = has_uprobes();
    let sockets_ok = sock_length && sendfile;
    let hooks = match wanted {
        Hooks::Auto if sockets_ok => Hooks::Sockets,
        Hooks::Auto => Hooks::Syscalls,
        Hooks::Sockets if !sock_length => {
            return Err(Unsupported::NoSocketHooks {
                release,
                feature: "the sock:sock_send_length and sock:sock_recv_length tracepoints",
                since: "6.3",
            });
        }
        Hooks::Sockets if !sendfile => {
            return Err(Unsupported::NoSocketHooks {
                release,
                feature: "sendfile through the socket layer (splice_to_socket)",
                since: "6.5",
            });
        }
        other => other,
    };
    Ok(Kernel {
        release,
        hooks,
        capabilities: vec![
            Capability {
                name: cap::BTF,
                present: btf.is_some(),
            },
            Capability {
                name: cap::SOCK_LENGTH,
                present: sock_length,
            },
            Capability {
                name: cap::SENDFILE_SOCKETS,
                present: sendfile,
            },
            Capability {
                name: cap::UPROBES,
                present: uprobes,
            },
        ],
    })
}

/// Adds the helpers' probe results (`loads(program)` tries to load the
/// probe program calling it); the first missing one is the error.
pub fn with_helpers(
    mut kernel: Kernel,
    mut loads: impl FnMut(&'static str) -> bool,
) -> Result<Kernel, Unsupported> {
    for (name, program, since) in [
        (cap::TASK_PT_REGS, "probe_task_pt_regs", "5.15"),
        (cap::BPF_LOOP, "probe_loop", "5.17"),
    ] {
        let present = loads(program);
        kernel.capabilities.push(Capability { name, present });
        if !present {
            return Err(Unsupported::Missing {
                release: kernel.release,
                feature: format!("the {name} BPF helper"),
                since,
            });
        }
    }
    Ok(kernel)
}

/// The error for a kernel without BTF.
pub fn no_btf() -> Unsupported {
    Unsupported::Missing {
        release: release(),
        feature: format!("BTF ({})", preflight::KERNEL_BTF),
        since: "5.4 built with CONFIG_DEBUG_INFO_BTF=y",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kernel() -> Kernel {
        Kernel {
            release: "5.10.0-33-amd64".into(),
            hooks: Hooks::Syscalls,
            capabilities: vec![],
        }
    }

    #[test]
    fn a_missing_helper_is_one_clear_error() {
        let err = with_helpers(kernel(), |p| p != "probe_task_pt_regs").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("unsupported kernel 5.10.0-33-amd64: missing the bpf_task_pt_regs BPF helper (needs Linux 5.15 or newer)"), "{text}");
        assert!(!text.contains('\n'));
        let ok = with_helpers(kernel(), |_| true).unwrap();
        assert!(ok.has(cap::BPF_LOOP) && ok.has(cap::TASK_PT_REGS));
    }

    #[test]
    fn this_kernel_has_the_socket_hooks() {
        // The machine the tests run on (Linux 6.18): the probe finds them.
        let btf = KernelBtf::load(Path::new(preflight::KERNEL_BTF)).unwrap();
        let k = probe(Some(&btf), Hooks::Auto).unwrap();
        assert_eq!(k.hooks, Hooks::Sockets, "{}", k.describe());
        assert_eq!(
            probe(Some(&btf), Hooks::Syscalls).unwrap().hooks,
            Hooks::Syscalls
        );
        assert!(k.describe().contains("+sock_length_tracepoints"));
    }
}
