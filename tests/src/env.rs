//! The environment `cargo xtask test` sets. A missing or wrong variable fails the
//! test with a message saying how to run the suite (never a silent skip).

use std::path::PathBuf;

const HOW: &str = "run the integration tests with `cargo xtask test` (it builds the \
                   exporter and the venvs and sets EXPORTER_BIN, GUNICORN27_VENV, \
                   GUNICORN23_VENV and TEST_APPS_DIR)";

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
