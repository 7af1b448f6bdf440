//! Shared harness of the integration tests.
//!
//! The tests start real Gunicorn masters (from the venvs `cargo xtask test` points
//! to) and the real exporter binary, drive traffic with a raw HTTP/1.1 client that
//! counts every byte, and compare the exporter's metrics with truth gathered
//! outside the exporter: Gunicorn's access log, the client's own counts and the
//! marker lines the hooks in `tests/apps/gunicorn_conf.py` write.
//!
//! - [`env`]: the environment variables the runner sets (missing = test failure).
//! - [`fixtures`]: [`Gunicorn`] and [`Exporter`] processes, the servers of
//!   the stacks around Gunicorn ([`Nginx`] in front, [`Memcached`] beside),
//!   a [`RedisServer`] exporters publish to
//!   and a [`Prometheus`] scraping the exporter, all killed on drop;
//!   temporary directories.
//! - [`http`]: the byte-counting client; [`load`]: a concurrent load generator.
//! - [`prom`]: parsed scrapes and their queries; [`access_log`]: the access log.
//! - [`check`]: comparisons and failure stories shared by the test files.
//! - [`wait`]: polling with a deadline (no fixed sleeps).

pub mod access_log;
pub mod check;
pub mod env;
pub mod fixtures;
pub mod hooks;
pub mod http;
pub mod load;
pub mod ports;
pub mod prom;
pub mod wait;

pub use access_log::AccessRecord;
pub use fixtures::{
    exporter::{Exporter, ExporterBuilder, ExporterExit},
    gunicorn::{Gunicorn, GunicornBuilder, Version},
    memcached::Memcached,
    nginx::{Nginx, NginxRecord},
    prometheus::Prometheus,
    redis::RedisServer,
    tempdir::TestDir,
};
pub use http::{Conn, Request, Response, Traffic};
pub use load::{LoadConfig, LoadGen};
pub use prom::{Histogram, Metrics, Sample};

/// The last `n` lines of a file (or a note saying why there are none).
pub fn tail_file(path: &std::path::Path, n: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => tail_text(&String::from_utf8_lossy(&bytes), n),
        Err(e) => format!("(cannot read {}: {e})\n", path.display()),
    }
}

/// The last `n` lines of `text`, each ending with a newline.
pub fn tail_text(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    let mut out = String::new();
    if start > 0 {
        out.push_str(&format!("({start} earlier lines omitted)\n"));
    }
    for line in &lines[start..] {
        out.push_str(line);
        out.push('\n');
    }
    if lines.is_empty() {
        out.push_str("(empty)\n");
    }
    out
}

/// Seconds since the Unix epoch, as a float.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
