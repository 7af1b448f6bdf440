//! A simple concurrent load generator on top of [`crate::http`]: N threads, each
//! looping requests (keep-alive or one connection per request) until stopped or
//! until a shared request budget is spent. The request each thread sends next
//! comes from a script of (phase, sequence number), and the test can switch the
//! phase while the load runs. It returns its own counts: responses per
//! (method, status) and bytes sent/received.

use std::{
    io,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use crate::{
    http::{Conn, Request, Traffic},
    wait,
};

/// The next request for (phase, sequence number).
pub type Script = Arc<dyn Fn(usize, u64) -> Request + Send + Sync>;

/// Phases a generator can count separately.
const PHASES: usize = 8;

#[derive(Clone)]
pub struct LoadConfig {
    pub addr: SocketAddr,
    pub threads: usize,
    /// Reuse connections (reconnecting when the server closes them); otherwise
    /// every request carries `Connection: close` and gets its own connection.
    pub keep_alive: bool,
    /// Total requests over all threads (None: until stopped).
    pub limit: Option<u64>,
    pub script: Script,
}

impl LoadConfig {
    pub fn new(addr: SocketAddr, threads: usize, keep_alive: bool, script: Script) -> LoadConfig {
        LoadConfig {
            addr,
            threads,
            keep_alive,
            limit: None,
            script,
        }
    }

    pub fn limit(mut self, n: u64) -> LoadConfig {
        self.limit = Some(n);
        self
    }
}

#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    phase: AtomicUsize,
    issued: AtomicU64,
    completed: [AtomicU64; PHASES],
    /// Requests re-sent because the server had closed an idle keep-alive
    /// connection just before.
    retries: AtomicU64,
}

/// A running load generator.
pub struct LoadGen {
    shared: Arc<Shared>,
    handles: Vec<JoinHandle<Result<Traffic, String>>>,
}

/// What a generator did.
#[derive(Clone, Debug, Default)]
pub struct LoadResult {
    pub traffic: Traffic,
    /// Responses per phase.
    pub per_phase: Vec<u64>,
    pub retries: u64,
}

impl LoadGen {
    pub fn start(cfg: LoadConfig) -> LoadGen {
        let shared = Arc::new(Shared::default());
        let handles = (0..cfg.threads)
            .map(|i| {
                let cfg = cfg.clone();
                let shared = shared.clone();
                thread::Builder::new()
                    .name(format!("load-{i}"))
                    .spawn(move || worker(&cfg, &shared))
                    .expect("spawning a load thread")
            })
            .collect();
        LoadGen { shared, handles }
    }

    /// Runs a generator with a request budget to the end.
    pub fn run(cfg: LoadConfig) -> Result<LoadResult, String> {
        assert!(cfg.limit.is_some(), "LoadGen::run needs a limit");
        let g = LoadGen::start(cfg);
        g.join()
    }

    /// Switches the script's phase for the requests sent from now on.
    pub fn set_phase(&self, phase: usize) {
        assert!(phase < PHASES);
        self.shared.phase.store(phase, Ordering::SeqCst);
    }

    /// Responses received in `phase` so far.
    pub fn completed(&self, phase: usize) -> u64 {
        self.shared.completed[phase].load(Ordering::SeqCst)
    }

    /// Waits until `n` responses of `phase` have arrived; errors if every thread
    /// has ended (they only end early on an error).
    pub fn wait_completed(&self, phase: usize, n: u64, timeout: Duration) -> Result<(), String> {
        wait::until(
            &format!("{n} responses in load phase {phase}"),
            timeout,
            || {
                let done = self.completed(phase);
                if done >= n {
                    Ok(Ok(()))
                } else if self.handles.iter().all(|h| h.is_finished()) {
                    Ok(Err(format!(
                        "all load threads ended after {done} responses"
                    )))
                } else {
                    Err(format!("{done} responses"))
                }
            },
        )?
    }

    /// Stops the threads (each finishes its current request and closes its
    /// connection cleanly) and returns the counts.
    pub fn stop(self) -> Result<LoadResult, String> {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.join()
    }

    fn join(mut self) -> Result<LoadResult, String> {
        let mut out = LoadResult::default();
        let mut errors = Vec::new();
        for h in std::mem::take(&mut self.handles) {
            match h.join() {
                Ok(Ok(t)) => out.traffic.merge(&t),
                Ok(Err(e)) => errors.push(e),
                Err(_) => errors.push("a load thread panicked".into()),
            }
        }
        out.per_phase = self
            .shared
            .completed
            .iter()
            .map(|c| c.load(Ordering::SeqCst))
            .collect();
        out.retries = self.shared.retries.load(Ordering::SeqCst);
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(format!("load generator errors: {}", errors.join("; ")))
        }
    }
}

impl Drop for LoadGen {
    /// A generator dropped without `stop` (a failing test) stops its threads.
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
    }
}

fn worker(cfg: &LoadConfig, shared: &Shared) -> Result<Traffic, String> {
    let mut traffic = Traffic::default();
    let mut conn: Option<Conn> = None;
    let result = (|| -> Result<(), String> {
        loop {
            if shared.stop.load(Ordering::SeqCst) {
                return Ok(());
            }
            let n = shared.issued.fetch_add(1, Ordering::SeqCst);
            if cfg.limit.is_some_and(|l| n >= l) {
                return Ok(());
            }
            let phase = shared.phase.load(Ordering::SeqCst);
            let mut req = (cfg.script)(phase, n);
            if !cfg.keep_alive {
                req = req.close();
            }
            let mut attempt = 0;
            loop {
                attempt += 1;
                let reused = conn.is_some();
                let c = match &mut conn {
                    Some(c) => c,
                    None => conn
                        .insert(Conn::connect(cfg.addr).map_err(|e| format!("connecting: {e}"))?),
                };
                let started = Instant::now();
                let outcome = c
                    .send(&req)
                    .and_then(|()| c.try_read_response(req.is_head()));
                match outcome {
                    Ok(Some(r)) => {
                        traffic.observe(started.elapsed());
                        traffic.record(&req.method, r.status);
                        shared.completed[phase].fetch_add(1, Ordering::SeqCst);
                        if r.server_closes() {
                            close(&mut conn, &mut traffic)?;
                        }
                        break;
                    }
                    // The server closed an idle keep-alive connection as we sent:
                    // it never read the request; send it again on a new one.
                    Ok(None) if reused && attempt < 3 => {
                        shared.retries.fetch_add(1, Ordering::SeqCst);
                        let _ = close(&mut conn, &mut traffic);
                    }
                    Err(e) if reused && attempt < 3 && is_reset(&e) => {
                        shared.retries.fetch_add(1, Ordering::SeqCst);
                        if let Some(c) = conn.take() {
                            traffic.add_conn(&c);
                        }
                    }
                    Ok(None) => {
                        return Err(format!(
                            "{} {}: connection closed without a response",
                            req.method, req.target
                        ));
                    }
                    Err(e) => return Err(format!("{} {}: {e}", req.method, req.target)),
                }
            }
        }
    })();
    let closed = close(&mut conn, &mut traffic);
    result?;
    closed?;
    Ok(traffic)
}

fn close(conn: &mut Option<Conn>, traffic: &mut Traffic) -> Result<(), String> {
    if let Some(mut c) = conn.take() {
        let r = c.finish();
        traffic.add_conn(&c);
        r.map_err(|e| format!("closing a connection: {e}"))?;
    }
    Ok(())
}

fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted
    )
}
