//! Listen backlogs of the sockets a Gunicorn master listens on.
//!
//! The master's descriptors give socket inodes (`/proc/<pid>/fd/* ->
//! socket:[inode]`). The kernel's sock_diag netlink interface lists the
//! listening TCP (v4, v6) and unix sockets of the master's network namespace
//! with, for a listener, the accept queue's length (`rqueue`) and its limit
//! (`wqueue`: listen()'s backlog capped by net.core.somaxconn), the same
//! numbers `ss -l` shows. `/proc/net/tcp` has the queue length of a TCP
//! listener (its rx_queue) but not its limit (its tx_queue is 0), and
//! `/proc/net/unix` has neither; it serves as the fallback for TCP when
//! sock_diag is not available.
//!
//! Everything here is either pure (encoding, decoding, parsing, selection) or
//! a thin reader around it; a process or socket that vanished is skipped.

use std::{
    collections::BTreeSet,
    fs::File,
    io,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6},
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::{ffi::OsStrExt, fs::MetadataExt},
    },
};

/// A listening socket of the master, as exported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listener {
    pub inode: u64,
    /// `127.0.0.1:8000`, `[::1]:8000` or `unix:/path`.
    pub label: String,
    /// Connections waiting to be accepted.
    pub backlog: u32,
    /// How many may wait; None when only /proc/net/tcp could be read.
    pub limit: Option<u32>,
}

/// A listening socket as the kernel describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sock {
    pub inode: u64,
    pub label: String,
    pub rqueue: u32,
    pub wqueue: Option<u32>,
}

// ---------------------------------------------------------------- descriptors

/// The inode of a `socket:[123]` descriptor link.
pub fn socket_inode(link: &[u8]) -> Option<u64> {
    std::str::from_utf8(link.strip_prefix(b"socket:[")?.strip_suffix(b"]")?)
        .ok()?
        .parse()
        .ok()
}

/// `(fd, socket inode)` of every socket `pid` holds; empty if it is gone.
pub fn socket_fds(pid: u32) -> Vec<(u32, u64)> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    dir.filter_map(|entry| {
        let entry = entry.ok()?;
        let fd = std::str::from_utf8(entry.file_name().as_bytes())
            .ok()?
            .parse()
            .ok()?;
        let link = std::fs::read_link(entry.path()).ok()?;
        Some((fd, socket_inode(link.as_os_str().as_bytes())?))
    })
    .collect()
}

/// The socket inode `pid` holds at descriptor `fd`.
pub fn fd_socket_inode(pid: u32, fd: u32) -> Option<u64> {
    let link = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()?;
    socket_inode(link.as_os_str().as_bytes())
}

/// The listeners Gunicorn serves on: the master's listening sockets that a
/// worker inherited (at the same descriptor number, as fork leaves them).
/// Excludes what the master alone listens on, like gunicorn 27's control
/// socket. `masters` holds the masters' `(fd, inode)` of listening sockets;
/// `fd_inode(worker, fd)` reads a worker's descriptor. None when no worker
/// holds any (no worker, or all of them gone).
pub fn served_by_workers(
    masters: &[(u32, u64)],
    workers: &[u32],
    mut fd_inode: impl FnMut(u32, u32) -> Option<u64>,
) -> Option<BTreeSet<u64>> {
    workers.iter().find_map(|&w| {
        let held: BTreeSet<u64> = masters
            .iter()
            .filter(|&&(fd, inode)| fd_inode(w, fd) == Some(inode))
            .map(|&(_, inode)| inode)
            .collect();
        (!held.is_empty()).then_some(held)
    })
}

// ------------------------------------------------------------ /proc/net/tcp

/// One row of `/proc/net/tcp` or `/proc/net/tcp6`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpRow {
    pub local: SocketAddr,
    /// The kernel's TCP state; 0x0A is LISTEN.
    pub state: u8,
    pub tx_queue: u32,
    /// For a listener: connections waiting to be accepted.
    pub rx_queue: u32,
    pub inode: u64,
}

pub const TCP_LISTEN: u8 = 0x0A;

/// An address as /proc/net/tcp{,6} prints it: the in-memory (network order)
/// address as native-endian 32-bit words in hex, then the port in hex.
fn proc_addr(field: &str) -> Option<SocketAddr> {
    let (addr, port) = field.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| {
        u32::from_str_radix(addr.get(i * 8..i * 8 + 8)?, 16)
            .ok()
            .map(u32::to_ne_bytes)
    };
    match addr.len() {
        8 => Some(SocketAddr::V4(SocketAddrV4::new(
            Ipv4Addr::from(word(0)?),
            port,
        ))),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(bytes),
                port,
                0,
                0,
            )))
        }
        _ => None,
    }
}

/// Parses `/proc/net/tcp` or `/proc/net/tcp6`; malformed rows are skipped.
pub fn parse_proc_net_tcp(text: &str) -> Vec<TcpRow> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let _sl = f.next()?;
            let local = proc_addr(f.next()?)?;
            let _remote = f.next()?;
            let state = u8::from_str_radix(f.next()?, 16).ok()?;
            let (tx, rx) = f.next()?.split_once(':')?;
            let (tx_queue, rx_queue) = (
                u32::from_str_radix(tx, 16).ok()?,
                u32::from_str_radix(rx, 16).ok()?,
            );
            let inode = f.nth(4)?.parse().ok()?;
            Some(TcpRow {
                local,
                state,
                tx_queue,
                rx_queue,
                inode,
            })
        })
        .collect()
}

/// The TCP listeners in `pid`'s network namespace, from /proc: queue
/// lengths, no limits.
pub fn proc_tcp_listeners(pid: u32) -> io::Result<Vec<Sock>> {
    let mut out = Vec::new();
    for file in ["tcp", "tcp6"] {
        let text = match std::fs::read_to_string(format!("/proc/{pid}/net/{file}")) {
            Ok(text) => text,
            // No IPv6 in this kernel.
            Err(e) if file == "tcp6" && e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        out.extend(
            parse_proc_net_tcp(&text)
                .into_iter()
                .filter(|r| r.state == TCP_LISTEN)
                .map(|r| Sock {
                    inode: r.inode,
                    label: r.local.to_string(),
                    rqueue: r.rx_queue,
                    wqueue: None,
                }),
        );
    }
    Ok(out)
}

// ------------------------------------------------------------------ netlink

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_HDRLEN: usize = 16;
/// Bit of TCP_LISTEN (10) in sock_diag's state masks.
const LISTEN_STATES: u32 = 1 << 10;
const UDIAG_SHOW_NAME: u32 = 0x01;
const UDIAG_SHOW_RQLEN: u32 = 0x10;
const UNIX_DIAG_NAME: u16 = 0;
const UNIX_DIAG_RQLEN: u16 = 4;
const NLA_TYPE_MASK: u16 = 0x3fff;
/// sizeof(struct inet_diag_req_v2), (struct unix_diag_req), (struct inet_diag_msg), (struct unix_diag_msg).
const INET_REQ_LEN: usize = 56;
const UNIX_REQ_LEN: usize = 24;
const INET_MSG_LEN: usize = 72;
const UNIX_MSG_LEN: usize = 16;

fn nlmsghdr(out: &mut Vec<u8>, body_len: usize, seq: u32) {
    out.extend_from_slice(&((NLMSG_HDRLEN + body_len) as u32).to_ne_bytes());
    out.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    out.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
}

/// A dump request for the listening TCP sockets of `family` (AF_INET or
/// AF_INET6): nlmsghdr + inet_diag_req_v2.
pub fn inet_request(family: u8, seq: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(NLMSG_HDRLEN + INET_REQ_LEN);
    nlmsghdr(&mut out, INET_REQ_LEN, seq);
    out.extend_from_slice(&[family, libc::IPPROTO_TCP as u8, 0, 0]);
    out.extend_from_slice(&LISTEN_STATES.to_ne_bytes());
    out.resize(NLMSG_HDRLEN + INET_REQ_LEN, 0); // inet_diag_sockid: all zero
    out
}

/// A dump request for the listening unix sockets, with their names and queue
/// lengths: nlmsghdr + unix_diag_req.
pub fn unix_request(seq: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(NLMSG_HDRLEN + UNIX_REQ_LEN);
    nlmsghdr(&mut out, UNIX_REQ_LEN, seq);
    out.extend_from_slice(&[libc::AF_UNIX as u8, 0, 0, 0]);
    out.extend_from_slice(&LISTEN_STATES.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes()); // udiag_ino
    out.extend_from_slice(&(UDIAG_SHOW_NAME | UDIAG_SHOW_RQLEN).to_ne_bytes());
    out.resize(NLMSG_HDRLEN + UNIX_REQ_LEN, 0); // udiag_cookie
    out
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// What one received datagram held.
#[derive(Debug, PartialEq, Eq)]
pub enum Batch {
    /// More messages follow in the next datagram.
    More,
    Done,
}

/// Walks the netlink messages of one datagram, handing the payload of each
/// SOCK_DIAG_BY_FAMILY message with sequence `seq` to `each`.
pub fn parse_batch(buf: &[u8], seq: u32, mut each: impl FnMut(&[u8])) -> io::Result<Batch> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("sock_diag: {what}"));
    let mut at = 0;
    while at + NLMSG_HDRLEN <= buf.len() {
        let len = u32_at(buf, at).ok_or_else(|| bad("short header"))? as usize;
        if len < NLMSG_HDRLEN || at + len > buf.len() {
            return Err(bad("bad message length"));
        }
        let kind = u16_at(buf, at + 4).ok_or_else(|| bad("short header"))?;
        let msg_seq = u32_at(buf, at + 8).ok_or_else(|| bad("short header"))?;
        let payload = &buf[at + NLMSG_HDRLEN..at + len];
        at += align4(len);
        if msg_seq != seq {
            continue;
        }
        match kind {
            NLMSG_DONE => {
                // Since Linux 4.x a dump's DONE carries its error (0 = none).
                return match u32_at(payload, 0).map(|e| e as i32) {
                    Some(e) if e < 0 => Err(io::Error::from_raw_os_error(-e)),
                    _ => Ok(Batch::Done),
                };
            }
            NLMSG_ERROR => {
                let e = u32_at(payload, 0).ok_or_else(|| bad("short error"))? as i32;
                return if e < 0 {
                    Err(io::Error::from_raw_os_error(-e))
                } else {
                    Ok(Batch::Done)
                };
            }
            SOCK_DIAG_BY_FAMILY => each(payload),
            _ => {}
        }
    }
    Ok(Batch::More)
}

/// Decodes an inet_diag_msg: a TCP listener with its accept queue (rqueue)
/// and its limit (wqueue).
pub fn parse_inet_msg(p: &[u8]) -> Option<Sock> {
    if p.len() < INET_MSG_LEN {
        return None;
    }
    let port = u16::from_be_bytes([p[4], p[5]]);
    let addr = match p[0] as i32 {
        libc::AF_INET => SocketAddr::V4(SocketAddrV4::new(
            Ipv4Addr::new(p[8], p[9], p[10], p[11]),
            port,
        )),
        libc::AF_INET6 => {
            let bytes: [u8; 16] = p[8..24].try_into().ok()?;
            SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(bytes), port, 0, 0))
        }
        _ => return None,
    };
    Some(Sock {
        inode: u32_at(p, 68)?.into(),
        label: addr.to_string(),
        rqueue: u32_at(p, 56)?,
        wqueue: Some(u32_at(p, 60)?),
    })
}

/// `unix:/path`, or `unix:@name` for an abstract socket; None for an unnamed one.
pub fn unix_label(sun_path: &[u8]) -> Option<String> {
    match sun_path {
        [] => None,
        [0, name @ ..] => Some(format!("unix:@{}", String::from_utf8_lossy(name))),
        path => {
            let end = path.iter().position(|&b| b == 0).unwrap_or(path.len());
            Some(format!("unix:{}", String::from_utf8_lossy(&path[..end])))
        }
    }
}

/// Decodes a unix_diag_msg with its UNIX_DIAG_NAME and UNIX_DIAG_RQLEN
/// attributes (for a listener: pending connections, and the limit).
pub fn parse_unix_msg(p: &[u8]) -> Option<Sock> {
    if p.len() < UNIX_MSG_LEN || p[0] as i32 != libc::AF_UNIX {
        return None;
    }
    let inode = u32_at(p, 4)?.into();
    let (mut label, mut queues) = (None, None);
    let mut at = UNIX_MSG_LEN;
    while at + 4 <= p.len() {
        let len = u16_at(p, at)? as usize;
        let kind = u16_at(p, at + 2)? & NLA_TYPE_MASK;
        if len < 4 || at + len > p.len() {
            break;
        }
        let data = &p[at + 4..at + len];
        match kind {
            UNIX_DIAG_NAME => label = unix_label(data),
            UNIX_DIAG_RQLEN => queues = Some((u32_at(data, 0)?, u32_at(data, 4)?)),
            _ => {}
        }
        at += align4(len);
    }
    let (rqueue, wqueue) = queues?;
    Some(Sock {
        inode,
        label: label?,
        rqueue,
        wqueue: Some(wqueue),
    })
}

/// A NETLINK_SOCK_DIAG socket in the network namespace of `pid` (the
/// exporter's own when they are the same). The socket keeps the namespace it
/// was made in, so a short-lived thread enters the other namespace to make it.
fn diag_socket(pid: u32) -> io::Result<OwnedFd> {
    fn make() -> io::Result<OwnedFd> {
        // SAFETY: plain syscalls; the descriptor is owned from here on.
        unsafe {
            let fd = libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_SOCK_DIAG,
            );
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            let fd = OwnedFd::from_raw_fd(fd);
            // A scrape never hangs on the kernel.
            let timeout = libc::timeval {
                tv_sec: 2,
                tv_usec: 0,
            };
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&timeout as *const libc::timeval).cast(),
                size_of::<libc::timeval>() as libc::socklen_t,
            );
            Ok(fd)
        }
    }
    let ns = |p: &str| std::fs::metadata(p).map(|m| (m.dev(), m.ino()));
    let theirs = format!("/proc/{pid}/ns/net");
    if ns("/proc/self/ns/net")? == ns(&theirs)? {
        return make();
    }
    let file = File::open(&theirs)?;
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns on this thread only; the thread ends right after.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            make()
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("netns thread panicked")))
    })
}

/// Sends one dump request and decodes every answer with `decode`.
fn dump(
    fd: &OwnedFd,
    request: &[u8],
    seq: u32,
    decode: fn(&[u8]) -> Option<Sock>,
) -> io::Result<Vec<Sock>> {
    // SAFETY: sockaddr_nl is plain data; zero is the kernel's address.
    let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    // SAFETY: the request and the address outlive the call.
    let sent = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            request.as_ptr().cast(),
            request.len(),
            0,
            (&kernel as *const libc::sockaddr_nl).cast(),
            size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        // SAFETY: recv writes at most buf.len() bytes into buf.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "sock_diag: connection closed",
            ));
        }
        let batch = parse_batch(&buf[..n as usize], seq, |p| out.extend(decode(p)))?;
        if batch == Batch::Done {
            return Ok(out);
        }
    }
}

/// Every listening TCP (v4 and v6) socket in `pid`'s network namespace.
pub fn diag_tcp_listeners(pid: u32) -> io::Result<Vec<Sock>> {
    let fd = diag_socket(pid)?;
    let mut out = dump(
        &fd,
        &inet_request(libc::AF_INET as u8, 1),
        1,
        parse_inet_msg,
    )?;
    match dump(
        &fd,
        &inet_request(libc::AF_INET6 as u8, 2),
        2,
        parse_inet_msg,
    ) {
        Ok(v6) => out.extend(v6),
        // No IPv6 in this kernel.
        Err(e) if e.raw_os_error() == Some(libc::EAFNOSUPPORT) => {}
        Err(e) => return Err(e),
    }
    Ok(out)
}

/// Every listening named unix socket in `pid`'s network namespace.
pub fn diag_unix_listeners(pid: u32) -> io::Result<Vec<Sock>> {
    dump(&diag_socket(pid)?, &unix_request(3), 3, parse_unix_msg)
}

/// What [`listeners`] found, and what it could not read.
#[derive(Debug, Default)]
pub struct Found {
    pub listeners: Vec<Listener>,
    pub problems: Vec<String>,
}

/// The listening sockets among `inodes`, seen from `pid`'s network namespace:
/// TCP and unix from sock_diag; TCP from /proc/<pid>/net/tcp{,6} (without
/// limits) when sock_diag fails. Sorted by label.
pub fn listeners(pid: u32, inodes: &BTreeSet<u64>) -> Found {
    let mut found = Found::default();
    let mut socks = Vec::new();
    match diag_tcp_listeners(pid) {
        Ok(v) => socks.extend(v),
        Err(diag) => {
            found.problems.push(format!(
                "sock_diag for TCP: {diag}; reading backlogs from /proc/net/tcp (no limits)"
            ));
            match proc_tcp_listeners(pid) {
                Ok(v) => socks.extend(v),
                Err(e) => found.problems.push(format!("/proc/{pid}/net/tcp: {e}")),
            }
        }
    }
    match diag_unix_listeners(pid) {
        Ok(v) => socks.extend(v),
        Err(e) => found.problems.push(format!(
            "sock_diag for unix sockets: {e}; no unix socket backlogs"
        )),
    }
    found.listeners = socks
        .into_iter()
        .filter(|s| inodes.contains(&s.inode))
        .map(|s| Listener {
            inode: s.inode,
            label: s.label,
            backlog: s.rqueue,
            limit: s.wqueue,
        })
        .collect();
    found
        .listeners
        .sort_by(|a, b| a.label.cmp(&b.label).then(a.inode.cmp(&b.inode)));
    found.listeners.dedup_by_key(|l| l.inode);
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{
        net::{TcpListener, TcpStream},
        os::unix::net::{UnixListener, UnixStream},
    };

    #[test]
    fn socket_links() {
        assert_eq!(socket_inode(b"socket:[12345]"), Some(12345));
        assert_eq!(socket_inode(b"pipe:[12345]"), None);
        assert_eq!(socket_inode(b"socket:[]"), None);
        assert_eq!(socket_inode(b"/dev/null"), None);
    }

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:B043 00000000:0000 0A 00000000:00000003 00:00000000 00000000     0        0 163662 4 0000000031a40ee9 100 0 0 10 0
   1: 00000000:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 1621 1 000000005495d0fe 100 0 0 10 0
   2: 0100007F:761C 0100007F:C6CC 06 00000000:00000000 03:00000C1F 00000000     0        0 0 3 00000000700269e2
   garbage
";

    #[test]
    fn parses_proc_net_tcp() {
        let rows = parse_proc_net_tcp(TCP);
        assert_eq!(rows.len(), 3, "{rows:?}");
        if cfg!(target_endian = "little") {
            assert_eq!(rows[0].local, "127.0.0.1:45123".parse().unwrap());
        }
        assert_eq!(
            (
                rows[0].state,
                rows[0].tx_queue,
                rows[0].rx_queue,
                rows[0].inode
            ),
            (TCP_LISTEN, 0, 3, 163662)
        );
        assert_eq!(rows[1].local, "0.0.0.0:8000".parse().unwrap());
        assert_eq!((rows[1].state, rows[1].inode), (TCP_LISTEN, 1621));
        assert_eq!(rows[2].state, 6);
    }

    #[test]
    fn parses_proc_net_tcp6() {
        let text = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:1F40 00000000000000000000000000000000:0000 0A 00000000:00000002 00:00000000 00000000     0        0 99 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000000000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 98 1 0000000000000000 100 0 0 10 0
";
        let rows = parse_proc_net_tcp(text);
        assert_eq!(rows.len(), 2);
        if cfg!(target_endian = "little") {
            assert_eq!(rows[0].local.to_string(), "[::1]:8000");
        }
        assert_eq!((rows[0].rx_queue, rows[0].inode), (2, 99));
        assert_eq!(rows[1].local.to_string(), "[::]:80");
    }

    #[test]
    fn requests_have_the_kernel_layout() {
        let r = inet_request(libc::AF_INET6 as u8, 7);
        assert_eq!(r.len(), 72);
        assert_eq!(u32_at(&r, 0), Some(72));
        assert_eq!(u16_at(&r, 4), Some(SOCK_DIAG_BY_FAMILY));
        assert_eq!(u16_at(&r, 6), Some(0x301));
        assert_eq!(u32_at(&r, 8), Some(7));
        assert_eq!(&r[16..20], &[libc::AF_INET6 as u8, 6, 0, 0]);
        assert_eq!(u32_at(&r, 20), Some(1 << 10));
        let u = unix_request(3);
        assert_eq!(u.len(), 40);
        assert_eq!(u32_at(&u, 0), Some(40));
        assert_eq!(&u[16..20], &[libc::AF_UNIX as u8, 0, 0, 0]);
        assert_eq!(u32_at(&u, 20), Some(1 << 10));
        assert_eq!(u32_at(&u, 28), Some(0x11));
    }

    fn message(kind: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&((16 + payload.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&2u16.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(payload);
        m.resize(align4(m.len()), 0);
        m
    }

    fn inet_msg(family: u8, addr: &[u8], port: u16, rq: u32, wq: u32, inode: u32) -> Vec<u8> {
        let mut p = vec![family, 10, 0, 0];
        p.extend_from_slice(&port.to_be_bytes());
        p.extend_from_slice(&[0, 0]);
        let mut src = [0u8; 16];
        src[..addr.len()].copy_from_slice(addr);
        p.extend_from_slice(&src);
        p.resize(56, 0);
        for v in [rq, wq, 0, inode] {
            p.extend_from_slice(&v.to_ne_bytes());
        }
        p
    }

    #[test]
    fn decodes_inet_messages() {
        let v4 = parse_inet_msg(&inet_msg(
            libc::AF_INET as u8,
            &[127, 0, 0, 1],
            8000,
            3,
            64,
            42,
        ))
        .unwrap();
        assert_eq!(
            v4,
            Sock {
                inode: 42,
                label: "127.0.0.1:8000".into(),
                rqueue: 3,
                wqueue: Some(64)
            }
        );
        let mut one = [0u8; 16];
        one[15] = 1;
        let v6 = parse_inet_msg(&inet_msg(libc::AF_INET6 as u8, &one, 8001, 0, 2048, 43)).unwrap();
        assert_eq!(v6.label, "[::1]:8001");
        assert_eq!(v6.wqueue, Some(2048));
        assert_eq!(parse_inet_msg(&[0u8; 10]), None);
    }

    fn attr(kind: u16, data: &[u8]) -> Vec<u8> {
        let mut a = Vec::new();
        a.extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
        a.extend_from_slice(&kind.to_ne_bytes());
        a.extend_from_slice(data);
        a.resize(align4(a.len()), 0);
        a
    }

    fn unix_msg(inode: u32, name: &[u8], rq: u32, wq: u32) -> Vec<u8> {
        let mut p = vec![libc::AF_UNIX as u8, libc::SOCK_STREAM as u8, 10, 0];
        p.extend_from_slice(&inode.to_ne_bytes());
        p.extend_from_slice(&[0xff; 8]);
        p.extend(attr(1, b"vfs-ignored")); // UNIX_DIAG_VFS
        p.extend(attr(UNIX_DIAG_NAME, name));
        let mut q = rq.to_ne_bytes().to_vec();
        q.extend_from_slice(&wq.to_ne_bytes());
        p.extend(attr(UNIX_DIAG_RQLEN, &q));
        p
    }

    #[test]
    fn decodes_unix_messages() {
        let s = parse_unix_msg(&unix_msg(77, b"/run/g.sock\0", 4, 32)).unwrap();
        assert_eq!(
            s,
            Sock {
                inode: 77,
                label: "unix:/run/g.sock".into(),
                rqueue: 4,
                wqueue: Some(32)
            }
        );
        assert_eq!(
            parse_unix_msg(&unix_msg(78, b"\0abstract", 0, 5))
                .unwrap()
                .label,
            "unix:@abstract"
        );
        assert_eq!(parse_unix_msg(&unix_msg(79, b"", 0, 5)), None, "unnamed");
        assert_eq!(unix_label(b"/a"), Some("unix:/a".into()));
    }

    #[test]
    fn walks_batches() {
        let mut buf = message(SOCK_DIAG_BY_FAMILY, 5, &[1, 2, 3]);
        buf.extend(message(SOCK_DIAG_BY_FAMILY, 9, &[9])); // another sequence: ignored
        buf.extend(message(SOCK_DIAG_BY_FAMILY, 5, &[4]));
        let mut seen = Vec::new();
        assert_eq!(
            parse_batch(&buf, 5, |p| seen.push(p.to_vec())).unwrap(),
            Batch::More
        );
        assert_eq!(seen, vec![vec![1, 2, 3], vec![4]]);

        let done = message(NLMSG_DONE, 5, &0i32.to_ne_bytes());
        assert_eq!(parse_batch(&done, 5, |_| {}).unwrap(), Batch::Done);
        let failed = message(NLMSG_ERROR, 5, &(-libc::ENOENT).to_ne_bytes());
        assert_eq!(
            parse_batch(&failed, 5, |_| {}).unwrap_err().raw_os_error(),
            Some(libc::ENOENT)
        );
        let mut truncated = message(SOCK_DIAG_BY_FAMILY, 5, &[1; 8]);
        truncated.truncate(20);
        assert!(parse_batch(&truncated, 5, |_| {}).is_err());
    }

    #[test]
    fn served_listeners_are_the_ones_workers_inherited() {
        // The master listens on 5 -> inode 100 and 9 -> 200 (its control socket).
        let masters = [(5, 100), (9, 200)];
        let fds = |pid: u32, fd: u32| match (pid, fd) {
            (11, 5) => Some(100),
            (11, 9) => Some(999), // another socket at the same number
            (12, 5) => Some(100),
            _ => None,
        };
        assert_eq!(
            served_by_workers(&masters, &[10, 11, 12], fds),
            Some(BTreeSet::from([100]))
        );
        assert_eq!(
            served_by_workers(&masters, &[10], fds),
            None,
            "a worker holding none does not count"
        );
        assert_eq!(served_by_workers(&masters, &[], fds), None);
    }

    /// A TCP listener with a chosen backlog (std picks its own).
    fn tcp_listener(addr: &str, backlog: i32) -> TcpListener {
        let l = TcpListener::bind(addr).unwrap();
        // SAFETY: listen() again on our own socket just changes its backlog.
        assert_eq!(unsafe { libc::listen(l.as_raw_fd(), backlog) }, 0);
        l
    }

    fn inode_of(fd: &impl AsRawFd) -> u64 {
        fd_socket_inode(std::process::id(), fd.as_raw_fd() as u32).expect("own socket inode")
    }

    /// Against this kernel: sock_diag and /proc/net/tcp agree on queue lengths
    /// of real listeners, and sock_diag has their limits.
    #[test]
    fn reads_real_tcp_listeners() {
        let l = tcp_listener("127.0.0.1:0", 17);
        let addr = l.local_addr().unwrap();
        let _clients: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();
        let inode = inode_of(&l);
        let me = std::process::id();
        assert!(socket_fds(me).contains(&(l.as_raw_fd() as u32, inode)));

        let found = listeners(me, &BTreeSet::from([inode]));
        assert!(found.problems.is_empty(), "{:?}", found.problems);
        assert_eq!(
            found.listeners,
            vec![Listener {
                inode,
                label: addr.to_string(),
                backlog: 3,
                limit: Some(17)
            }]
        );

        let from_proc = proc_tcp_listeners(me).unwrap();
        let row = from_proc
            .iter()
            .find(|s| s.inode == inode)
            .expect("in /proc/net/tcp");
        assert_eq!(
            (row.label.as_str(), row.rqueue, row.wqueue),
            (addr.to_string().as_str(), 3, None)
        );
    }

    #[test]
    fn reads_real_tcp6_listeners() {
        let Ok(l) = TcpListener::bind("[::1]:0") else {
            return;
        }; // no IPv6 here
        // SAFETY: as above.
        assert_eq!(unsafe { libc::listen(l.as_raw_fd(), 9) }, 0);
        let addr = l.local_addr().unwrap();
        let _c = TcpStream::connect(addr).unwrap();
        let inode = inode_of(&l);
        let found = listeners(std::process::id(), &BTreeSet::from([inode]));
        assert_eq!(
            found.listeners,
            vec![Listener {
                inode,
                label: format!("[::1]:{}", addr.port()),
                backlog: 1,
                limit: Some(9)
            }]
        );
    }

    #[test]
    fn reads_real_unix_listeners() {
        let dir = std::env::temp_dir().join(format!("backlog-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("l.sock");
        let _ = std::fs::remove_file(&path);
        let l = UnixListener::bind(&path).unwrap();
        // SAFETY: as above.
        assert_eq!(unsafe { libc::listen(l.as_raw_fd(), 5) }, 0);
        let _clients: Vec<UnixStream> = (0..2)
            .map(|_| UnixStream::connect(&path).unwrap())
            .collect();
        let inode = inode_of(&l);
        let found = listeners(std::process::id(), &BTreeSet::from([inode]));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(found.problems.is_empty(), "{:?}", found.problems);
        assert_eq!(
            found.listeners,
            vec![Listener {
                inode,
                label: format!("unix:{}", path.display()),
                backlog: 2,
                limit: Some(5)
            }]
        );
    }

    /// A master in another network namespace (a container): its sockets are
    /// found through its namespace, not the exporter's. Needs root.
    #[test]
    fn reads_listeners_in_another_network_namespace() {
        use std::os::unix::process::CommandExt as _;
        // SAFETY: plain syscall.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("not root: cannot make a network namespace; netns test not run");
            return;
        }
        let mut cmd = std::process::Command::new("sleep");
        cmd.arg("30");
        // SAFETY: unshare is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                if libc::unshare(libc::CLONE_NEWNET) == 0 {
                    Ok(())
                } else {
                    Err(io::Error::last_os_error())
                }
            });
        }
        let mut child = cmd.spawn().expect("sleep in a new network namespace");
        let pid = child.id();
        let path = std::env::temp_dir().join(format!("backlog-netns-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        // A listener made inside the child's namespace, by a thread that entered it.
        let ns = File::open(format!("/proc/{pid}/ns/net")).unwrap();
        let l = std::thread::scope(|s| {
            s.spawn(|| {
                // SAFETY: this thread only; it ends right after.
                assert_eq!(
                    unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) },
                    0,
                    "{}",
                    io::Error::last_os_error()
                );
                UnixListener::bind(&path).unwrap()
            })
            .join()
            .unwrap()
        });
        let inode = inode_of(&l);
        let theirs = listeners(pid, &BTreeSet::from([inode]));
        let ours = listeners(std::process::id(), &BTreeSet::from([inode]));
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_file(&path);
        assert!(theirs.problems.is_empty(), "{:?}", theirs.problems);
        assert_eq!(
            theirs.listeners.iter().map(|l| l.inode).collect::<Vec<_>>(),
            vec![inode],
            "seen from the child's namespace"
        );
        assert!(
            ours.listeners.is_empty(),
            "not in the exporter's namespace: {:?}",
            ours.listeners
        );
    }
}
