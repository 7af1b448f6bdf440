//! Offsets of the classic tracepoint fields the programs read, from
//! `/sys/kernel/tracing/events/<category>/<name>/format`. Syscall tracepoints
//! lay out `__syscall_nr` at 8 and then one 8-byte slot per argument from 16;
//! the exit tracepoints carry `ret` at 16. Userspace checks these against the
//! running kernel's format files before loading ([`LIFECYCLE_FIELDS`],
//! [`SYSCALL_FIELDS`]). Raw tracepoints take their arguments as an array of
//! u64 instead, and kernel structs are read at offsets from BTF
//! ([`crate::abi::Offsets`]).

/// First syscall argument (fd for every syscall we trace).
pub const ARG0: usize = 16;
/// Second argument (the buffer, the iovec array or the msghdr).
pub const ARG1: usize = 24;
/// Third argument.
pub const ARG2: usize = 32;
/// Fourth argument.
pub const ARG3: usize = 40;
/// `ret` of a `sys_exit_*` tracepoint.
pub const RET: usize = 16;

/// x86-64 `struct pt_regs` (arch/x86/include/asm/ptrace.h, a layout fixed by
/// the kernel's entry code): the saved rdi and rsi, a syscall's first two
/// arguments, read by exit programs (see `syscall_args` in the programs).
pub const PT_REGS_DI: usize = 112;
pub const PT_REGS_SI: usize = 104;
pub const PT_REGS_DX: usize = 96;
/// The syscall number (`orig_ax`; `ax` holds the return value).
pub const PT_REGS_ORIG_AX: usize = 120;

/// task:task_newtask `pid` (the new task) and `clone_flags`.
pub const NEWTASK_PID: usize = 8;
pub const NEWTASK_CLONE_FLAGS: usize = 32;

/// signal:signal_generate `sig`, `code` and target `pid`.
pub const GENERATE_SIG: usize = 8;
pub const GENERATE_CODE: usize = 16;
pub const GENERATE_PID: usize = 36;
/// signal:signal_deliver `sig` and `sa_handler`.
pub const DELIVER_SIG: usize = 8;
pub const DELIVER_SA_HANDLER: usize = 24;
/// oom:mark_victim `pid`.
pub const OOM_PID: usize = 8;

/// TCP states (include/net/tcp_states.h).
pub const TCP_ESTABLISHED: i32 = 1;
pub const TCP_SYN_RECV: i32 = 3;
pub const TCP_FIN_WAIT1: i32 = 4;
pub const TCP_CLOSE: i32 = 7;
pub const TCP_CLOSE_WAIT: i32 = 8;
pub const TCP_LAST_ACK: i32 = 9;
pub const TCP_LISTEN: i32 = 10;

/// `CLONE_THREAD`: the new task is a thread, not a process.
pub const CLONE_THREAD: u64 = 0x0001_0000;

/// (tracepoint, field, offset) the lifecycle programs rely on (every hook set).
pub const LIFECYCLE_FIELDS: &[(&str, &str, usize)] = &[
    ("task/task_newtask", "pid", NEWTASK_PID),
    ("task/task_newtask", "clone_flags", NEWTASK_CLONE_FLAGS),
    ("signal/signal_generate", "sig", GENERATE_SIG),
    ("signal/signal_generate", "code", GENERATE_CODE),
    ("signal/signal_generate", "pid", GENERATE_PID),
    ("signal/signal_deliver", "sig", DELIVER_SIG),
    ("signal/signal_deliver", "sa_handler", DELIVER_SA_HANDLER),
    ("oom/mark_victim", "pid", OOM_PID),
];

/// (tracepoint, field, offset) the syscall hook set relies on.
pub const SYSCALL_FIELDS: &[(&str, &str, usize)] = &[
    ("syscalls/sys_exit_recvfrom", "ret", RET),
    ("syscalls/sys_exit_sendto", "ret", RET),
    ("syscalls/sys_exit_sendfile64", "ret", RET),
    ("syscalls/sys_enter_shutdown", "fd", ARG0),
    ("syscalls/sys_enter_shutdown", "how", ARG1),
    ("syscalls/sys_enter_close", "fd", ARG0),
    ("syscalls/sys_exit_accept4", "ret", RET),
    ("syscalls/sys_enter_write", "fd", ARG0),
    ("syscalls/sys_enter_write", "buf", ARG1),
    ("syscalls/sys_enter_write", "count", ARG2),
];

/// The offset of `field` in a tracepoint format file's text, if declared.
/// Lines look like `\tfield:int fd;\toffset:16;\tsize:8;\tsigned:0;`.
pub fn field_offset(format: &str, field: &str) -> Option<usize> {
    format.lines().find_map(|line| {
        let decl = line.trim().strip_prefix("field:")?;
        let (decl, rest) = decl.split_once(';')?;
        // The name is the last word of the declaration, minus any array suffix.
        let name = decl.rsplit([' ', '*']).next()?.split('[').next()?;
        if name != field {
            return None;
        }
        rest.trim()
            .strip_prefix("offset:")?
            .split(';')
            .next()?
            .trim()
            .parse()
            .ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const RECVFROM: &str = "name: sys_enter_recvfrom\nID: 1\nformat:\n\
        \tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
        \tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;\n\
        \tfield:int fd;\toffset:16;\tsize:8;\tsigned:0;\n\
        \tfield:void * ubuf;\toffset:24;\tsize:8;\tsigned:0;\n";

    const EXIT: &str = "\tfield:char comm[16];\toffset:8;\tsize:16;\tsigned:0;\n\
        \tfield:pid_t pid;\toffset:24;\tsize:4;\tsigned:1;\n\
        \tfield:bool group_dead;\toffset:32;\tsize:1;\tsigned:0;\n";

    #[test]
    fn parses_offsets() {
        assert_eq!(field_offset(RECVFROM, "fd"), Some(16));
        assert_eq!(field_offset(RECVFROM, "ubuf"), Some(24));
        assert_eq!(field_offset(RECVFROM, "__syscall_nr"), Some(8));
        assert_eq!(field_offset(RECVFROM, "size"), None);
        assert_eq!(field_offset(EXIT, "comm"), Some(8));
        assert_eq!(field_offset(EXIT, "group_dead"), Some(32));
        assert_eq!(field_offset("garbage\nfield:", "fd"), None);
    }
}
