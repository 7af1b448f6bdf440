//! The host-tax loops: what a process the exporter does not watch pays per
//! call. `cargo xtask bench-loops` (hidden) runs them in a child of the
//! bench, so the caller is neither gunicorn nor xtask's own threads. Each loop
//! runs batches of a fixed number of calls, the loops taking turns, each batch
//! timed with the thread's CPU clock; then one line per loop:
//! `<loop> <ns per call of each batch>...`.

use std::{
    fs::{self, File},
    hint::black_box,
    io::{self, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    os::{
        fd::{AsRawFd as _, OwnedFd},
        unix::net::UnixStream,
    },
};

use anyhow::{Context as _, Result, bail};
use clap::{Args, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, ValueEnum)]
pub enum Loop {
    /// getppid(): a syscall no hook watches (the syscall slow path alone).
    Getppid,
    /// send() then recv() of one byte over an AF_UNIX stream socketpair.
    Unix,
    /// send() then recv() of one byte over a TCP loopback connection.
    Tcp,
    /// pwrite() of 64 bytes at offset 0 of a file on tmpfs (/dev/shm).
    Pwrite,
    /// The C library's write() of 64 bytes to /dev/null (the socket hooks
    /// put a uprobe on it, in the workers only).
    Write,
}

impl Loop {
    pub const ALL: [Loop; 5] = [
        Loop::Getppid,
        Loop::Unix,
        Loop::Tcp,
        Loop::Pwrite,
        Loop::Write,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Loop::Getppid => "getppid",
            Loop::Unix => "unix",
            Loop::Tcp => "tcp",
            Loop::Pwrite => "pwrite",
            Loop::Write => "write",
        }
    }

    /// What one call is, for the report.
    pub fn describe(self) -> &'static str {
        match self {
            Loop::Getppid => "`getppid()`",
            Loop::Unix => "`send` + `recv` of 1 byte, AF_UNIX socketpair",
            Loop::Tcp => "`send` + `recv` of 1 byte, TCP loopback",
            Loop::Pwrite => "`pwrite` of 64 bytes, tmpfs file",
            Loop::Write => "libc `write` of 64 bytes, /dev/null",
        }
    }

    /// Calls per batch: a few milliseconds of CPU each on a 2-core VM, the
    /// same in every configuration.
    pub fn calls(self) -> u64 {
        match self {
            Loop::Getppid => 20_000,
            Loop::Unix => 2_000,
            Loop::Tcp => 1_000,
            Loop::Pwrite => 10_000,
            Loop::Write => 20_000,
        }
    }

    pub fn parse(name: &str) -> Option<Loop> {
        Loop::ALL.into_iter().find(|l| l.name() == name)
    }
}

#[derive(Debug, Args)]
pub struct Options {
    /// Timed batches per loop (after one untimed).
    #[arg(long, default_value_t = 20)]
    pub batches: u32,
    /// Only these loops (default: all, in the order listed).
    #[arg(long = "loop", value_delimiter = ',')]
    pub loops: Vec<Loop>,
}

pub fn run(opts: Options) -> Result<()> {
    let loops = if opts.loops.is_empty() {
        Loop::ALL.to_vec()
    } else {
        opts.loops
    };
    let mut fixtures = loops
        .iter()
        .map(|&l| Fixture::open(l))
        .collect::<Result<Vec<_>>>()?;
    let mut lines: Vec<String> = loops.iter().map(|l| l.name().to_string()).collect();
    // One untimed round, then the timed ones. The loops take turns batch by
    // batch, so each one's batches spread over the whole run: the machine's
    // slower and faster spells fall on every loop alike.
    for round in 0..=opts.batches.max(1) {
        for ((l, fixture), line) in loops.iter().zip(&mut fixtures).zip(&mut lines) {
            let calls = l.calls();
            let start = thread_cpu_ns();
            fixture
                .batch(calls)
                .with_context(|| format!("loop {}", l.name()))?;
            let ns = thread_cpu_ns().saturating_sub(start);
            if round > 0 {
                line.push_str(&format!(" {:.1}", ns as f64 / calls as f64));
            }
        }
    }
    let mut stdout = io::stdout().lock();
    for line in lines {
        writeln!(stdout, "{line}")?;
    }
    Ok(())
}

/// This thread's CPU time, ns.
fn thread_cpu_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// What a loop calls on, opened once.
enum Fixture {
    Getppid,
    /// Send on the first, receive on the second.
    Pair(OwnedFd, OwnedFd),
    Pwrite(File),
    Write(File),
}

const TMPFS_MAGIC: i64 = 0x0102_1994;

impl Fixture {
    fn open(l: Loop) -> Result<Fixture> {
        Ok(match l {
            Loop::Getppid => Fixture::Getppid,
            Loop::Unix => {
                let (a, b) = UnixStream::pair().context("socketpair(AF_UNIX)")?;
                Fixture::Pair(a.into(), b.into())
            }
            Loop::Tcp => {
                let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
                    .context("binding 127.0.0.1:0")?;
                let client = TcpStream::connect(listener.local_addr()?)
                    .context("connecting over loopback")?;
                let (server, _) = listener.accept().context("accepting over loopback")?;
                client.set_nodelay(true)?;
                server.set_nodelay(true)?;
                Fixture::Pair(client.into(), server.into())
            }
            Loop::Pwrite => {
                let dir = "/dev/shm";
                // SAFETY: zeroed statfs is a valid value; statfs fills it.
                let mut st: libc::statfs = unsafe { std::mem::zeroed() };
                // SAFETY: a NUL-terminated path and a valid out pointer.
                let rc = unsafe { libc::statfs(c"/dev/shm".as_ptr(), &mut st) };
                if rc != 0 || st.f_type as i64 != TMPFS_MAGIC {
                    bail!("{dir} is not a tmpfs here (the pwrite loop writes there)");
                }
                let path = format!("{dir}/xtask-bench-loops-{}", std::process::id());
                let file = File::options()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(&path)
                    .with_context(|| format!("creating {path}"))?;
                // Unlinked at once: the open file is all the loop needs.
                fs::remove_file(&path).with_context(|| format!("removing {path}"))?;
                Fixture::Pwrite(file)
            }
            Loop::Write => Fixture::Write(
                File::options()
                    .write(true)
                    .open("/dev/null")
                    .context("opening /dev/null")?,
            ),
        })
    }

    fn batch(&mut self, calls: u64) -> io::Result<()> {
        let check = |rc: isize, want: isize| {
            if rc == want {
                Ok(())
            } else if rc < 0 {
                Err(io::Error::last_os_error())
            } else {
                Err(io::Error::other(format!("{rc} bytes instead of {want}")))
            }
        };
        match self {
            Fixture::Getppid => {
                for _ in 0..calls {
                    // SAFETY: getppid has no preconditions.
                    black_box(unsafe { libc::getppid() });
                }
            }
            Fixture::Pair(tx, rx) => {
                let (tx, rx) = (tx.as_raw_fd(), rx.as_raw_fd());
                let mut byte = [b'x'];
                for _ in 0..calls {
                    // SAFETY: our open socket and a 1-byte buffer.
                    let n = unsafe { libc::send(tx, byte.as_ptr().cast(), 1, 0) };
                    check(n, 1)?;
                    // SAFETY: our open socket and a 1-byte buffer to fill.
                    let n = unsafe { libc::recv(rx, byte.as_mut_ptr().cast(), 1, 0) };
                    check(n, 1)?;
                }
            }
            Fixture::Pwrite(file) => {
                let fd = file.as_raw_fd();
                let buf = [b'x'; 64];
                for _ in 0..calls {
                    // SAFETY: our open file and a 64-byte buffer.
                    let n = unsafe { libc::pwrite(fd, buf.as_ptr().cast(), buf.len(), 0) };
                    check(n, 64)?;
                }
            }
            Fixture::Write(file) => {
                let fd = file.as_raw_fd();
                let buf = [b'x'; 64];
                for _ in 0..calls {
                    // SAFETY: our open file and a 64-byte buffer.
                    let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
                    check(n, 64)?;
                }
            }
        }
        Ok(())
    }
}

/// The child's output: per loop, ns per call of each batch.
pub fn parse_output(out: &str) -> Result<Vec<(Loop, Vec<f64>)>> {
    let mut loops = Vec::new();
    for line in out.lines().filter(|l| !l.trim().is_empty()) {
        let mut fields = line.split_whitespace();
        let name = fields.next().unwrap_or_default();
        let l = Loop::parse(name).with_context(|| format!("unknown loop in {line:?}"))?;
        let batches = fields
            .map(|f| f.parse::<f64>())
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("unexpected line {line:?}"))?;
        if batches.is_empty() {
            bail!("no batch in {line:?}");
        }
        loops.push((l, batches));
    }
    Ok(loops)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every loop opens and runs here (no root needed), and its output
    /// parses back.
    #[test]
    fn loops_run_and_parse() {
        let mut line = String::new();
        for l in Loop::ALL {
            let mut f = Fixture::open(l).unwrap();
            f.batch(10).unwrap();
            line.push_str(&format!("{} 1.5 2\n", l.name()));
        }
        let parsed = parse_output(&line).unwrap();
        assert_eq!(parsed.len(), Loop::ALL.len());
        assert_eq!(parsed[0], (Loop::Getppid, vec![1.5, 2.0]));
        assert!(parse_output("getppid").is_err());
        assert!(parse_output("nope 1").is_err());
        assert!(thread_cpu_ns() > 0);
    }
}
