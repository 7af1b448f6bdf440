//! Why each failed request failed: the kernel reports every failed request
//! (no response, a 5xx, or a response cut short) and every log record with a
//! Python traceback a worker thread wrote; this pairs them.
//!
//! A record belongs to the request the writing thread was serving when it
//! wrote it: same worker, written after the request started, by the thread
//! that read the request, or (where one thread serves many requests at once:
//! gevent, eventlet, uvicorn) naming the request's path. Such a request
//! failed with the record's exception class - whether it was answered with
//! a 500 (by Gunicorn, Flask or Django) or its response had started and was
//! cut short. Other failures are `http_5xx` (a 5xx without a record),
//! `aborted` (no response, or cut short, without one), or the worker's death
//! or timeout when the kernel or the lifecycle says so.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use exporter_ebpf::{
    abi::{RECORD_MAX, RECORD_PIECE, RecordEvent, cause},
    http::{line_hash, method},
};

use super::traceback;

/// Distinct classes exported; further ones count as [`OTHER`].
pub const MAX_CLASSES: usize = 50;
pub const OTHER: &str = "OtherException";
/// A record whose class could not be read (cut, or not a class name).
pub const UNKNOWN: &str = "UnknownException";
/// Records waiting for their failed request at most this long.
const RECORD_TTL_NS: u64 = 60_000_000_000;
/// Records kept waiting at most (a worker logging tracebacks for requests
/// that did not fail must not grow memory).
const MAX_PENDING: usize = 1024;

/// A failed request as the kernel (or a dead worker's leftovers) reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Failure {
    pub tgid: u32,
    /// The thread that read the request.
    pub tid: u32,
    pub method: u8,
    /// Status, 0 for none.
    pub status: u16,
    pub cut: bool,
    /// `abi::cause` known from the kernel or the worker's death.
    pub cause: u8,
    pub start_ns: u64,
    pub end_ns: u64,
    pub target: u32,
    pub target_len: u8,
    /// `exporter_ebpf::route` key of its path (the `endpoint` label).
    pub route: u64,
}

/// A failed-requests series: (worker, or master for the exited ones,
/// method, error_type, route key).
pub type FailureKey = (u32, u8, String, u64);

/// A record with a traceback, waiting for its request.
#[derive(Clone, Debug)]
struct Pending {
    tgid: u32,
    tid: u32,
    ts_ns: u64,
    path: Option<String>,
    /// The method the record names (Flask's, gunicorn 27's), if it does.
    method: Option<String>,
    class: String,
}

/// A record arriving in pieces.
#[derive(Debug, Default)]
struct Assembly {
    bytes: Vec<u8>,
    total: usize,
}

#[derive(Debug, Default)]
pub struct Exceptions {
    assembling: HashMap<(u32, u64), Assembly>,
    pending: VecDeque<Pending>,
    classes: BTreeSet<String>,
    /// (tgid, method, error_type) -> failed requests.
    counts: BTreeMap<FailureKey, u64>,
}

impl Exceptions {
    /// A piece of a record; the whole record is read once its last piece is in.
    pub fn piece(&mut self, ev: &RecordEvent) {
        let h = ev.header;
        let total = (h.value.max(0) as usize).min(RECORD_MAX);
        let len = (ev.len as usize).min(RECORD_PIECE);
        let key = (h.other, h.ts_ns);
        let assembly = self.assembling.entry(key).or_insert_with(|| Assembly {
            bytes: Vec::with_capacity(total),
            total,
        });
        // Pieces come in order; one lost to a full ring buffer ends the record there.
        if h.code.max(0) as usize == assembly.bytes.len() {
            assembly.bytes.extend_from_slice(&ev.bytes[..len]);
        }
        if assembly.bytes.len() >= assembly.total || len == 0 {
            let done = self.assembling.remove(&key).unwrap_or_default();
            self.logged(h.pid, h.other, h.ts_ns, &done.bytes);
        }
    }

    /// A whole record with a traceback that worker `tgid`'s thread `tid` wrote.
    pub fn logged(&mut self, tgid: u32, tid: u32, ts_ns: u64, record: &[u8]) {
        let Some(parsed) = traceback::parse(record) else {
            return;
        };
        let class = parsed.class.unwrap_or(UNKNOWN);
        let class = if self.classes.contains(class) || self.classes.len() < MAX_CLASSES {
            self.classes.insert(class.to_string());
            class
        } else {
            OTHER
        };
        if self.pending.len() >= MAX_PENDING {
            self.pending.pop_front();
        }
        self.pending.push_back(Pending {
            tgid,
            tid,
            ts_ns,
            path: parsed.path.map(str::to_string),
            method: parsed.method.map(str::to_string),
            class: class.to_string(),
        });
    }

    /// A failed request: counted once, by why it failed.
    pub fn failed(&mut self, f: &Failure) {
        let kind = match f.cause {
            cause::WORKER_TIMEOUT => "worker_timeout".to_string(),
            cause::WORKER_CRASH => "worker_crash".to_string(),
            cause::WORKER_KILLED => "worker_killed".to_string(),
            _ => match self.take_record(f) {
                Some(class) => class,
                None if f.status >= 500 => "http_5xx".to_string(),
                None => "aborted".to_string(),
            },
        };
        *self
            .counts
            .entry((f.tgid, f.method, kind, f.route))
            .or_default() += 1;
    }

    /// The class of the record that belongs to failed request `f`, if one
    /// does: the earliest one naming its path from the thread that read it,
    /// else naming its path (another thread of the worker logged it), else
    /// from that thread (a record that names no path, or a path longer than
    /// the kernel hashed the same way).
    fn take_record(&mut self, f: &Failure) -> Option<String> {
        let candidates = self.pending.iter().enumerate().filter(|(_, p)| {
            p.tgid == f.tgid
                && p.ts_ns >= f.start_ns
                && (p.ts_ns <= f.end_ns || f.cut || f.status == 0)
        });
        let mut best: Option<(u8, usize)> = None;
        for (at, p) in candidates {
            // The kernel hashed the request line's start, `METHOD /path`.
            let name = p.method.as_deref().or(match f.method {
                method::OTHER => None,
                m => Some(method::name(m)),
            });
            let path = match (p.path.as_deref(), name) {
                (Some(path), Some(name)) if f.target_len > 0 => {
                    line_hash(format!("{name} {path}").as_bytes(), f.target_len) == f.target
                }
                _ => false,
            };
            let thread = f.tid != 0 && p.tid == f.tid;
            let rank = match (path, thread) {
                (true, true) => 0,
                (true, false) => 1,
                (false, true) => 2,
                (false, false) => continue,
            };
            if best.is_none_or(|(r, _)| rank < r) {
                best = Some((rank, at));
            }
        }
        let (_, at) = best?;
        self.pending.remove(at).map(|p| p.class)
    }

    /// Drops records older than their time to wait, as of `now_ns`.
    pub fn prune(&mut self, now_ns: u64) {
        self.pending
            .retain(|p| now_ns.saturating_sub(p.ts_ns) < RECORD_TTL_NS);
        // A record whose pieces stopped coming (one was lost) is dropped too.
        self.assembling
            .retain(|&(_, ts), _| now_ns.saturating_sub(ts) < RECORD_TTL_NS);
    }

    /// Stops following worker `tgid`; returns its counts, by (method,
    /// error_type, route key).
    pub fn retire(&mut self, tgid: u32) -> Vec<((u8, String, u64), u64)> {
        self.pending.retain(|p| p.tgid != tgid);
        let mut taken = Vec::new();
        self.counts.retain(|(pid, method, kind, route), n| {
            if *pid == tgid {
                taken.push(((*method, kind.clone(), *route), *n));
            }
            *pid != tgid
        });
        taken
    }

    pub fn counts(&self) -> impl Iterator<Item = (&FailureKey, &u64)> {
        self.counts.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use exporter_ebpf::abi::RECORD_PIECE_DATA;

    const GET: u8 = 1;

    fn record(path: &str, class: &str) -> Vec<u8> {
        format!(
            "[2026-11-29 20:27:40 +0000] [7] [ERROR] Error handling request GET {path}\nTraceback (most recent call last):\n  File \"app.py\", line 3, in boom\n    raise {class}(\"x\")\n{class}: x\n"
        )
        .into_bytes()
    }

    fn failure(tid: u32, path: &[u8], status: u16, start: u64, end: u64) -> Failure {
        let line = [&b"GET "[..], path].concat();
        let n = line.len().min(24) as u8;
        Failure {
            tgid: 10,
            tid,
            method: GET,
            status,
            start_ns: start,
            end_ns: end,
            target: line_hash(&line, n),
            target_len: n,
            ..Failure::default()
        }
    }

    fn kinds(e: &Exceptions) -> Vec<(String, u64)> {
        e.counts()
            .map(|((_, _, k, _), n)| (k.clone(), *n))
            .collect()
    }

    #[test]
    fn records_pair_with_the_thread_failure_that_follows() {
        let mut e = Exceptions::default();
        e.logged(10, 11, 150, &record("/boom", "RuntimeError"));
        e.logged(10, 12, 160, &record("/other", "KeyError"));
        e.failed(&failure(12, b"/other", 500, 100, 200));
        e.failed(&failure(11, b"/boom", 500, 100, 200));
        e.failed(&failure(13, b"/x", 503, 100, 200));
        assert_eq!(
            kinds(&e),
            [
                ("KeyError".into(), 1),
                ("RuntimeError".into(), 1),
                ("http_5xx".into(), 1)
            ]
        );
    }

    #[test]
    fn a_record_is_never_tied_to_a_later_unrelated_failure() {
        // The exception in a streamed response: its request is cut short;
        // the same thread's next request, a plain 503, is http_5xx.
        let mut e = Exceptions::default();
        e.logged(10, 11, 150, &record("/stream", "ValueError"));
        let mut cut = failure(11, b"/stream", 200, 100, 120);
        cut.cut = true;
        e.failed(&cut);
        e.failed(&failure(11, b"/plain", 503, 300, 310));
        assert_eq!(
            kinds(&e),
            [("ValueError".into(), 1), ("http_5xx".into(), 1)]
        );
        // A record written before a request started is not that request's.
        let mut e = Exceptions::default();
        e.logged(10, 11, 50, &record("/a", "ValueError"));
        e.failed(&failure(11, b"/b", 500, 100, 200));
        assert_eq!(kinds(&e), [("http_5xx".into(), 1)]);
    }

    #[test]
    fn one_thread_many_requests_pairs_by_path() {
        let mut e = Exceptions::default();
        e.logged(10, 11, 150, &record("/users/1", "KeyError"));
        e.logged(10, 11, 151, &record("/orders/9", "ValueError"));
        // gevent: both requests on thread 11; each takes its own record.
        e.failed(&failure(11, b"/orders/9", 500, 100, 200));
        e.failed(&failure(11, b"/users/1", 500, 100, 200));
        assert_eq!(
            kinds(&e),
            [("KeyError".into(), 1), ("ValueError".into(), 1)]
        );
    }

    #[test]
    fn kernel_and_death_causes_win() {
        let mut e = Exceptions::default();
        e.logged(10, 11, 150, &record("/slow", "SystemExit"));
        let mut f = failure(11, b"/slow", 500, 100, 200);
        f.cause = cause::WORKER_TIMEOUT;
        e.failed(&f);
        let mut unanswered = failure(12, b"/x", 0, 100, 200);
        e.failed(&unanswered);
        unanswered.cause = cause::WORKER_KILLED;
        e.failed(&unanswered);
        assert_eq!(
            kinds(&e),
            [
                ("aborted".into(), 1),
                ("worker_killed".into(), 1),
                ("worker_timeout".into(), 1)
            ]
        );
    }

    #[test]
    fn classes_are_capped_and_old_records_dropped() {
        let mut e = Exceptions::default();
        for i in 0..MAX_CLASSES + 5 {
            e.logged(10, 11, 150, &record("/x", &format!("E{i}")));
            e.failed(&failure(11, b"/x", 500, 100, 200));
        }
        assert_eq!(e.counts().count(), MAX_CLASSES + 1);
        assert_eq!(
            e.counts()
                .find(|((_, _, c, _), _)| c == OTHER)
                .map(|(_, n)| *n),
            Some(5)
        );
        e.logged(10, 11, 1_000, &record("/x", "Late"));
        e.prune(1_000 + RECORD_TTL_NS);
        e.failed(&failure(11, b"/x", 500, 900, 2_000));
        assert!(e.counts().any(|((_, _, c, _), _)| c == "http_5xx"));
    }

    #[test]
    fn records_are_assembled_from_pieces() {
        let mut e = Exceptions::default();
        let text = record(&format!("/{}", "p".repeat(5000)), "ValueError");
        let mut ev = RecordEvent {
            header: exporter_ebpf::abi::Event {
                kind: exporter_ebpf::abi::event::RECORD,
                pid: 10,
                other: 11,
                value: text.len() as i32,
                code: 0,
                _pad: 0,
                ts_ns: 150,
            },
            len: 0,
            _pad: 0,
            bytes: [0; RECORD_PIECE],
        };
        for (i, chunk) in text.chunks(RECORD_PIECE_DATA).enumerate() {
            ev.header.code = (i * RECORD_PIECE_DATA) as i32;
            ev.len = chunk.len() as u32;
            ev.bytes[..chunk.len()].copy_from_slice(chunk);
            e.piece(&ev);
        }
        e.failed(&failure(11, b"/pppp", 500, 100, 200));
        assert_eq!(kinds(&e), [("ValueError".into(), 1)]);
    }
}
