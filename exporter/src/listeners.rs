//! The sockets a Gunicorn master listens on, and their listen backlogs.
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
//! The rust-netlink crates encode the requests and decode the answers
//! (netlink-packet-sock-diag over netlink-packet-core) and carry them
//! (netlink-sys); procfs reads /proc/net/tcp. What is left here is selection
//! and thin readers; a process or socket that vanished is skipped.

use std::{
    collections::BTreeSet,
    fs::File,
    io,
    net::SocketAddr,
    os::{
        fd::AsRawFd,
        unix::{ffi::OsStrExt, fs::MetadataExt},
    },
    time::Duration,
};

use netlink_packet_core::{
    DecodeError, NLM_F_DUMP, NLM_F_REQUEST, NLMSG_ALIGNTO, NetlinkBuffer, NetlinkHeader,
    NetlinkMessage, NetlinkPayload, Parseable,
};
use netlink_packet_sock_diag::{
    AF_INET, AF_INET6, IPPROTO_TCP, SOCK_DIAG_BY_FAMILY, SockDiagMessage,
    inet::{self, ExtensionFlags, InetRequest, SocketId},
    unix::{self, ShowFlags, UnixRequest, nlas::UnixDiagName},
};
use netlink_sys::{Socket, protocols::NETLINK_SOCK_DIAG};
use procfs::{ProcError, ProcResult, net::TcpState, process::Process};
use socket2::SockRef;

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

/// The TCP listeners in `pid`'s network namespace, from /proc: queue
/// lengths, no limits (a listener's tx_queue there is 0).
pub fn proc_tcp_listeners(pid: u32) -> ProcResult<Vec<Sock>> {
    let process = Process::new(pid as i32)?;
    let mut entries = process.tcp()?;
    match process.tcp6() {
        Ok(v6) => entries.extend(v6),
        // No IPv6 in this kernel.
        Err(ProcError::NotFound(_)) => {}
        Err(e) => return Err(e),
    }
    Ok(entries
        .into_iter()
        .filter(|e| e.state == TcpState::Listen)
        .map(|e| Sock {
            inode: e.inode,
            label: e.local_address.to_string(),
            rqueue: e.rx_queue,
            wqueue: None,
        })
        .collect())
}

// ------------------------------------------------------------------ netlink

/// The listening TCP sockets of `family` (AF_INET or AF_INET6).
pub fn inet_request(family: u8) -> SockDiagMessage {
    SockDiagMessage::InetRequest(InetRequest {
        family,
        protocol: IPPROTO_TCP,
        extensions: ExtensionFlags::empty(),
        states: inet::StateFlags::LISTEN,
        // All zero: a dump matches every address.
        socket_id: SocketId::new_v4(),
    })
}

/// The listening unix sockets, with their names and queue lengths.
pub fn unix_request() -> SockDiagMessage {
    SockDiagMessage::UnixRequest(UnixRequest {
        state_flags: unix::StateFlags::LISTEN,
        inode: 0,
        show_flags: ShowFlags::NAME | ShowFlags::RQLEN,
        cookie: [0; 8],
    })
}

/// `request` as a dump request with sequence number `seq`, on the wire.
pub fn dump_request(request: SockDiagMessage, seq: u32) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    header.sequence_number = seq;
    let mut message = NetlinkMessage::new(header, request.into());
    message.finalize();
    let mut buf = vec![0; message.buffer_len()];
    message.serialize(&mut buf);
    buf
}

/// `unix:/path`, or `unix:@name` for an abstract socket.
pub fn unix_label(name: &UnixDiagName) -> String {
    match name {
        UnixDiagName::Pathname(path) => format!("unix:{}", path.to_string_lossy()),
        UnixDiagName::Abstract(name) => format!("unix:@{}", String::from_utf8_lossy(name)),
    }
}

/// The listener an answer describes: for TCP, its accept queue (recv_queue)
/// and the queue's limit (send_queue); for unix, the same from
/// UNIX_DIAG_RQLEN. None for an unnamed unix socket.
pub fn sock(answer: &SockDiagMessage) -> Option<Sock> {
    match answer {
        SockDiagMessage::InetResponse(r) => {
            let id = &r.header.socket_id;
            Some(Sock {
                inode: r.header.inode.into(),
                label: SocketAddr::new(id.source_address, id.source_port).to_string(),
                rqueue: r.header.recv_queue,
                wqueue: Some(r.header.send_queue),
            })
        }
        SockDiagMessage::UnixResponse(r) => Some(Sock {
            inode: r.header.inode.into(),
            label: unix_label(r.name()?),
            rqueue: r.number_of_pending_connection()?,
            wqueue: Some(r.max_number_of_pending_connection()?),
        }),
        _ => None,
    }
}

/// What one received datagram held.
#[derive(Debug, PartialEq, Eq)]
pub enum Batch {
    /// More messages follow in the next datagram.
    More,
    Done,
}

/// Walks the netlink messages of one datagram, handing each answer to
/// request `seq` to `each`.
pub fn parse_batch(
    mut buf: &[u8],
    seq: u32,
    mut each: impl FnMut(SockDiagMessage),
) -> io::Result<Batch> {
    let invalid =
        |e: DecodeError| io::Error::new(io::ErrorKind::InvalidData, format!("sock_diag: {e}"));
    while !buf.is_empty() {
        let frame = NetlinkBuffer::new_checked(&buf).map_err(invalid)?;
        let len = frame.length() as usize;
        if frame.sequence_number() == seq {
            match NetlinkMessage::<SockDiagMessage>::parse(&frame) {
                Ok(message) => match message.payload {
                    NetlinkPayload::InnerMessage(answer) => each(answer),
                    // Since Linux 4.x a dump's DONE carries its error (0 = none).
                    NetlinkPayload::Done(done) if done.code < 0 => {
                        return Err(io::Error::from_raw_os_error(-done.code));
                    }
                    NetlinkPayload::Done(_) => return Ok(Batch::Done),
                    NetlinkPayload::Error(e) if e.code.is_some() => return Err(e.to_io()),
                    NetlinkPayload::Error(_) => return Ok(Batch::Done),
                    _ => {}
                },
                // A socket the crate cannot decode is skipped, not the dump.
                Err(_) if frame.message_type() == SOCK_DIAG_BY_FAMILY => {}
                Err(e) => return Err(invalid(e)),
            }
        }
        let aligned = len.next_multiple_of(NLMSG_ALIGNTO.into());
        buf = buf.get(aligned..).unwrap_or_default();
    }
    Ok(Batch::More)
}

/// A NETLINK_SOCK_DIAG socket in the network namespace of `pid` (the
/// exporter's own when they are the same). The socket keeps the namespace it
/// was made in, so a short-lived thread enters the other namespace to make it.
fn diag_socket(pid: u32) -> io::Result<Socket> {
    fn make() -> io::Result<Socket> {
        let socket = Socket::new(NETLINK_SOCK_DIAG)?;
        // A scrape never hangs on the kernel.
        SockRef::from(&socket).set_read_timeout(Some(Duration::from_secs(2)))?;
        Ok(socket)
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

/// Sends one dump request and collects the listeners of the answers.
fn dump(socket: &Socket, request: SockDiagMessage, seq: u32) -> io::Result<Vec<Sock>> {
    let kernel = netlink_sys::SocketAddr::new(0, 0);
    socket.send_to(&dump_request(request, seq), &kernel, 0)?;
    let mut out = Vec::new();
    let mut buf = Vec::with_capacity(32 * 1024);
    loop {
        buf.clear();
        match socket.recv(&mut buf, 0) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "sock_diag: connection closed",
                ));
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        if parse_batch(&buf, seq, |answer| out.extend(sock(&answer)))? == Batch::Done {
            return Ok(out);
        }
    }
}

/// Every listening TCP (v4 and v6) socket in `pid`'s network namespace.
pub fn diag_tcp_listeners(pid: u32) -> io::Result<Vec<Sock>> {
    let socket = diag_socket(pid)?;
    let mut out = dump(&socket, inet_request(AF_INET), 1)?;
    match dump(&socket, inet_request(AF_INET6), 2) {
        Ok(v6) => out.extend(v6),
        // No IPv6 in this kernel.
        Err(e) if e.raw_os_error() == Some(libc::EAFNOSUPPORT) => {}
        Err(e) => return Err(e),
    }
    Ok(out)
}

/// Every listening named unix socket in `pid`'s network namespace.
pub fn diag_unix_listeners(pid: u32) -> io::Result<Vec<Sock>> {
    dump(&diag_socket(pid)?, unix_request(), 3)
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
                // procfs names the file it could not read.
                Err(e) => found.problems.push(format!("no TCP backlogs: {e}")),
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
    use netlink_packet_core::{DoneMessage, ErrorMessage};
    use netlink_packet_sock_diag::{
        AF_UNIX, TCP_LISTEN,
        inet::{InetResponse, InetResponseHeader},
        unix::{UnixResponse, UnixResponseHeader, nlas::Nla},
    };
    use std::{
        net::{TcpListener, TcpStream},
        num::NonZeroI32,
        os::unix::net::{UnixListener, UnixStream},
    };

    #[test]
    fn socket_links() {
        assert_eq!(socket_inode(b"socket:[12345]"), Some(12345));
        assert_eq!(socket_inode(b"pipe:[12345]"), None);
        assert_eq!(socket_inode(b"socket:[]"), None);
        assert_eq!(socket_inode(b"/dev/null"), None);
    }

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_ne_bytes(b[at..at + 4].try_into().unwrap())
    }

    /// The requests the crate encodes are the kernel's dumps of listeners.
    #[test]
    fn requests_have_the_kernel_layout() {
        let r = dump_request(inet_request(AF_INET6), 7);
        assert_eq!(r.len(), 72);
        assert_eq!(u32_at(&r, 0), 72);
        assert_eq!(u16::from_ne_bytes([r[4], r[5]]), 20, "SOCK_DIAG_BY_FAMILY");
        assert_eq!(
            u16::from_ne_bytes([r[6], r[7]]),
            0x301,
            "NLM_F_REQUEST | NLM_F_DUMP"
        );
        assert_eq!(u32_at(&r, 8), 7);
        assert_eq!(&r[16..20], &[AF_INET6, 6, 0, 0]);
        assert_eq!(u32_at(&r, 20), 1 << 10);
        assert!(r[24..].iter().all(|&b| b == 0), "any address");
        let u = dump_request(unix_request(), 3);
        assert_eq!(u.len(), 40);
        assert_eq!(u32_at(&u, 0), 40);
        assert_eq!(&u[16..20], &[AF_UNIX, 0, 0, 0]);
        assert_eq!(u32_at(&u, 20), 1 << 10);
        assert_eq!(u32_at(&u, 28), 0x11, "UDIAG_SHOW_NAME | UDIAG_SHOW_RQLEN");
    }

    /// One message of an answer, as the kernel sends it.
    fn message(payload: NetlinkPayload<SockDiagMessage>, seq: u32) -> Vec<u8> {
        let mut header = NetlinkHeader::default();
        header.sequence_number = seq;
        let mut m = NetlinkMessage::new(header, payload);
        m.finalize();
        let mut buf = vec![0; m.buffer_len()];
        m.serialize(&mut buf);
        buf.resize(buf.len().next_multiple_of(4), 0);
        buf
    }

    fn inet_answer(addr: &str, rq: u32, wq: u32, inode: u32) -> SockDiagMessage {
        let addr: SocketAddr = addr.parse().unwrap();
        SockDiagMessage::InetResponse(Box::new(InetResponse {
            header: InetResponseHeader {
                family: if addr.is_ipv4() { AF_INET } else { AF_INET6 },
                state: TCP_LISTEN,
                timer: None,
                socket_id: SocketId {
                    source_address: addr.ip(),
                    source_port: addr.port(),
                    ..SocketId::new_v4()
                },
                recv_queue: rq,
                send_queue: wq,
                uid: 0,
                inode,
            },
            nlas: Default::default(),
        }))
    }

    fn unix_answer(inode: u32, name: Option<UnixDiagName>, rq: u32, wq: u32) -> SockDiagMessage {
        let nlas = name
            .map(Nla::Name)
            .into_iter()
            .chain([Nla::ReceiveQueueLength(rq, wq)])
            .collect();
        SockDiagMessage::UnixResponse(Box::new(UnixResponse {
            header: UnixResponseHeader {
                kind: libc::SOCK_STREAM as u8,
                state: TCP_LISTEN,
                inode,
                cookie: [0xff; 8],
            },
            nlas,
        }))
    }

    #[test]
    fn decodes_answers() {
        assert_eq!(
            sock(&inet_answer("127.0.0.1:8000", 3, 64, 42)),
            Some(Sock {
                inode: 42,
                label: "127.0.0.1:8000".into(),
                rqueue: 3,
                wqueue: Some(64)
            })
        );
        let v6 = sock(&inet_answer("[::1]:8001", 0, 2048, 43)).unwrap();
        assert_eq!((v6.label.as_str(), v6.wqueue), ("[::1]:8001", Some(2048)));

        let path = UnixDiagName::Pathname("/run/g.sock".into());
        assert_eq!(
            sock(&unix_answer(77, Some(path), 4, 32)),
            Some(Sock {
                inode: 77,
                label: "unix:/run/g.sock".into(),
                rqueue: 4,
                wqueue: Some(32)
            })
        );
        let abstract_name = UnixDiagName::Abstract(b"abstract".to_vec());
        assert_eq!(
            sock(&unix_answer(78, Some(abstract_name), 0, 5))
                .unwrap()
                .label,
            "unix:@abstract"
        );
        assert_eq!(sock(&unix_answer(79, None, 0, 5)), None, "unnamed");
    }

    #[test]
    fn walks_batches() {
        let answer = |m| NetlinkPayload::InnerMessage(m);
        let mut buf = message(
            answer(unix_answer(
                1,
                Some(UnixDiagName::Abstract(b"a".to_vec())),
                0,
                1,
            )),
            5,
        );
        buf.extend(message(answer(inet_answer("127.0.0.1:1", 0, 1, 2)), 9)); // another request's: ignored
        buf.extend(message(answer(inet_answer("127.0.0.1:2", 0, 1, 3)), 5));
        let mut undecodable = message(answer(inet_answer("127.0.0.1:3", 0, 1, 4)), 5);
        undecodable[16] = 99; // an address family the crate does not know: skipped
        buf.extend(undecodable);
        let mut seen = Vec::new();
        assert_eq!(
            parse_batch(&buf, 5, |m| seen.extend(sock(&m).map(|s| s.inode))).unwrap(),
            Batch::More
        );
        assert_eq!(seen, vec![1, 3]);

        let done = message(NetlinkPayload::Done(DoneMessage::default()), 5);
        assert_eq!(parse_batch(&done, 5, |_| {}).unwrap(), Batch::Done);
        let mut code = DoneMessage::default();
        code.code = -libc::EINTR;
        let interrupted = message(NetlinkPayload::Done(code), 5);
        assert_eq!(
            parse_batch(&interrupted, 5, |_| {})
                .unwrap_err()
                .raw_os_error(),
            Some(libc::EINTR)
        );
        let mut error = ErrorMessage::default();
        error.code = NonZeroI32::new(-libc::ENOENT);
        let failed = message(NetlinkPayload::Error(error), 5);
        assert_eq!(
            parse_batch(&failed, 5, |_| {}).unwrap_err().raw_os_error(),
            Some(libc::ENOENT)
        );
        let mut truncated = message(answer(inet_answer("127.0.0.1:1", 0, 1, 2)), 5);
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
