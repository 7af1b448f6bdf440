//! Offsets of the tracepoint fields the programs read, from
//! `/sys/kernel/tracing/events/<category>/<name>/format`. Syscall tracepoints
//! lay out `__syscall_nr` at 8 and then one 8-byte slot per argument from 16;
//! the exit tracepoints carry `ret` at 16. Userspace checks these against the
//! running kernel's format files before loading (see [`expected_fields`]).

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

/// task:task_newtask `pid` (the new task) and `clone_flags`.
pub const NEWTASK_PID: usize = 8;
pub const NEWTASK_CLONE_FLAGS: usize = 32;
/// sched:sched_process_exit `pid` (the exiting thread) and `group_dead`.
pub const EXIT_PID: usize = 24;
pub const EXIT_GROUP_DEAD: usize = 32;

/// signal:signal_generate `sig`, `code` and target `pid`.
pub const GENERATE_SIG: usize = 8;
pub const GENERATE_CODE: usize = 16;
pub const GENERATE_PID: usize = 36;
/// signal:signal_deliver `sig` and `sa_handler`.
pub const DELIVER_SIG: usize = 8;
pub const DELIVER_SA_HANDLER: usize = 24;
/// oom:mark_victim `pid`.
pub const OOM_PID: usize = 8;

/// sock:inet_sock_set_state fields.
pub const SOCK_OLDSTATE: usize = 16;
pub const SOCK_NEWSTATE: usize = 20;
pub const SOCK_SPORT: usize = 24;
pub const SOCK_DPORT: usize = 26;
pub const SOCK_FAMILY: usize = 28;
pub const SOCK_PROTOCOL: usize = 30;
pub const SOCK_DADDR: usize = 36;
pub const SOCK_DADDR_V6: usize = 56;
/// TCP states.
pub const TCP_ESTABLISHED: i32 = 1;
pub const TCP_SYN_RECV: i32 = 3;
/// IPPROTO_TCP.
pub const IPPROTO_TCP: u16 = 6;

/// `CLONE_THREAD`: the new task is a thread, not a process.
pub const CLONE_THREAD: u64 = 0x0001_0000;

/// (tracepoint, field, offset) the programs rely on.
pub fn expected_fields() -> &'static [(&'static str, &'static str, usize)] {
    &[
        ("syscalls/sys_exit_recvfrom", "ret", RET),
        ("syscalls/sys_exit_sendto", "ret", RET),
        ("syscalls/sys_exit_sendfile64", "ret", RET),
        ("syscalls/sys_enter_shutdown", "how", ARG1),
        ("syscalls/sys_enter_close", "fd", ARG0),
        ("syscalls/sys_exit_accept4", "ret", RET),
        ("syscalls/sys_enter_epoll_ctl", "op", ARG1),
        ("syscalls/sys_enter_epoll_ctl", "fd", ARG2),
        ("task/task_newtask", "pid", NEWTASK_PID),
        ("task/task_newtask", "clone_flags", NEWTASK_CLONE_FLAGS),
        ("sched/sched_process_exit", "pid", EXIT_PID),
        ("sched/sched_process_exit", "group_dead", EXIT_GROUP_DEAD),
        ("syscalls/sys_enter_exit_group", "error_code", ARG0),
        ("syscalls/sys_exit_wait4", "ret", RET),
        ("syscalls/sys_enter_utimensat", "filename", ARG1),
        ("signal/signal_generate", "sig", GENERATE_SIG),
        ("signal/signal_generate", "code", GENERATE_CODE),
        ("signal/signal_generate", "pid", GENERATE_PID),
        ("signal/signal_deliver", "sig", DELIVER_SIG),
        ("signal/signal_deliver", "sa_handler", DELIVER_SA_HANDLER),
        ("oom/mark_victim", "pid", OOM_PID),
        ("sock/inet_sock_set_state", "oldstate", SOCK_OLDSTATE),
        ("sock/inet_sock_set_state", "newstate", SOCK_NEWSTATE),
        ("sock/inet_sock_set_state", "sport", SOCK_SPORT),
        ("sock/inet_sock_set_state", "dport", SOCK_DPORT),
        ("sock/inet_sock_set_state", "family", SOCK_FAMILY),
        ("sock/inet_sock_set_state", "protocol", SOCK_PROTOCOL),
        ("sock/inet_sock_set_state", "daddr", SOCK_DADDR),
        ("sock/inet_sock_set_state", "daddr_v6", SOCK_DADDR_V6),
    ]
}

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
