//! The environment `cargo xtask test` sets. A missing or wrong variable fails the
//! test with a message saying how to run the suite (never a silent skip).

use std::path::PathBuf;

const HOW: &str = "run the integration tests with `cargo xtask test` (it builds the \
                   exporter, its dist artifacts and the venvs, installs nginx, \
                   memcached, redis-server and prometheus, makes a Debian root, and sets EXPORTER_BIN, \
                   GUNICORN27_VENV, GUNICORN23_VENV, STACKS_VENV, NGINX_BIN, \
                   MEMCACHED_BIN, REDIS_SERVER_BIN, PROMETHEUS_BIN, PROMTOOL_BIN, TEST_APPS_DIR, DIST_BIN, \
                   DIST_DEB and DEBIAN_ROOT_TAR)";

/// The venv with gunicorn 27 and the frameworks and servers people run on it
/// (uvicorn-worker, uvloop, Flask, Django, pymemcache, gevent).
pub const STACKS_VENV: &str = "STACKS_VENV";

/// The path in environment variable `var`, which must exist.
pub fn required_path(var: &str) -> PathBuf {
    let value = std::env::var_os(var)
        .unwrap_or_else(|| panic!("environment variable {var} is not set: {HOW}"));
    let path = PathBuf::from(value);
    if !path.exists() {
        panic!(
            "environment variable {var} names {}, which does not exist: {HOW}",
            path.display()
        );
    }
    path
}

/// The exporter binary under test (`EXPORTER_BIN`).
pub fn exporter_bin() -> PathBuf {
    required_path("EXPORTER_BIN")
}

/// `tests/apps` (`TEST_APPS_DIR`): app.py and gunicorn_conf.py.
pub fn apps_dir() -> PathBuf {
    let dir = required_path("TEST_APPS_DIR");
    for file in ["app.py", "gunicorn_conf.py"] {
        if !dir.join(file).is_file() {
            panic!("TEST_APPS_DIR={} has no {file}: {HOW}", dir.display());
        }
    }
    dir
}

/// Debian's nginx binary (`NGINX_BIN`).
pub fn nginx_bin() -> PathBuf {
    required_path("NGINX_BIN")
}

/// Debian's memcached binary (`MEMCACHED_BIN`).
pub fn memcached_bin() -> PathBuf {
    required_path("MEMCACHED_BIN")
}

/// Debian's redis-server binary (`REDIS_SERVER_BIN`).
pub fn redis_server_bin() -> PathBuf {
    required_path("REDIS_SERVER_BIN")
}

/// Debian's Prometheus server (`PROMETHEUS_BIN`).
pub fn prometheus_bin() -> PathBuf {
    required_path("PROMETHEUS_BIN")
}

/// Debian's promtool (`PROMTOOL_BIN`).
pub fn promtool_bin() -> PathBuf {
    required_path("PROMTOOL_BIN")
}
