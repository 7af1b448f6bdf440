//! `cargo xtask venv`: Python venvs under `target/venvs/` with pinned Gunicorn
//! versions and worker-class dependencies, and the stacks venv (gunicorn 27 with
//! the frameworks and servers people run it with) (`--bench`: also the
//! benchmark's gunicorn 23 + gunicorn-prometheus-exporter venv; `--vm`: also
//! virtme-ng, which `cargo xtask vmtest` boots kernels with).
//!
//! Every package of each venv is pinned (transitive ones too). A stamp file in
//! the venv holds the interpreter version and the requirement list; a venv whose
//! stamp matches and whose main program answers `--version` with the pinned
//! version is left alone, any other is rebuilt from scratch.

use std::{fs, path::Path};

use anyhow::{Context as _, Result, bail};
use clap::Args;

use crate::{
    commands::{self, command},
    venv_dir,
};

/// The interpreter the venvs are made with (`python3 -m venv`).
const PYTHON: &str = "python3";
const STAMP: &str = ".xtask-requirements";

pub struct Venv {
    pub name: &'static str,
    /// The program in `bin/` whose `--version` proves the venv works...
    pub program: &'static str,
    /// ...by printing this version as a word of its own.
    pub version: &'static str,
    pub requirements: &'static [&'static str],
}

/// Gunicorn 27 with gevent (the gevent worker on 27 also needs `packaging`).
/// 27 has no eventlet worker.
pub const GUNICORN27: Venv = Venv {
    name: "gunicorn27",
    program: "gunicorn",
    version: "27.0.1",
    requirements: &[
        "gunicorn==27.0.1",
        "gevent==26.9.0",
        "greenlet==3.5.6",
        "packaging==26.3",
        "zope.event==6.2",
        "zope.interface==8.7",
    ],
};

/// Gunicorn 23 with eventlet (the last line with an eventlet worker). eventlet
/// 0.41.3 works with gunicorn 23's eventlet worker on Python 3.11 (it only
/// prints a deprecation warning at worker boot).
pub const GUNICORN23: Venv = Venv {
    name: "gunicorn23",
    program: "gunicorn",
    version: "23.0.0",
    requirements: &[
        "gunicorn==23.0.0",
        "eventlet==0.41.3",
        "greenlet==3.5.6",
        "dnspython==2.9.2",
        "packaging==26.3",
    ],
};

/// Gunicorn 27 with what people run on it (the tests' "stacks"): uvicorn's
/// worker for ASGI apps, both with plain asyncio + h11 and with what
/// `uvicorn[standard]` adds (uvloop, httptools, ...), Flask 3.1, Django 5.2
/// (on its sqlite backend), pymemcache, and gevent.
pub const STACKS: Venv = Venv {
    name: "stacks",
    program: "gunicorn",
    version: "27.0.1",
    requirements: &[
        "gunicorn==27.0.1",
        "packaging==26.3",
        // uvicorn[standard] and the worker class (uvicorn_worker.UvicornWorker).
        "uvicorn==0.54.0",
        "uvicorn-worker==0.4.0",
        "click==8.5.1",
        "h11==0.16.0",
        "httptools==0.9.0",
        "python-dotenv==1.2.4",
        "PyYAML==6.0.4",
        "uvloop==0.23.0",
        "watchfiles==1.3.0",
        "anyio==4.16.0",
        "idna==3.20",
        "typing_extensions==4.16.0",
        "websockets==17.4",
        // Flask.
        "Flask==3.1.3",
        "blinker==1.9.0",
        "itsdangerous==2.2.0",
        "Jinja2==3.1.6",
        "MarkupSafe==3.0.4",
        "Werkzeug==3.1.9",
        // Django.
        "Django==5.2.19",
        "asgiref==3.13.0",
        "sqlparse==0.6.1",
        // A memcached client.
        "pymemcache==4.0.0",
        // gevent.
        "gevent==26.9.0",
        "greenlet==3.5.6",
        "zope.event==6.2",
        "zope.interface==8.7",
    ],
};

pub const VENVS: &[Venv] = &[GUNICORN27, GUNICORN23, STACKS];

/// Gunicorn 23 with gunicorn-prometheus-exporter 0.2.4 (the in-process plugin
/// this project replaces; it starts only on gunicorn 23) and the Redis client
/// for its Redis mode, for `cargo xtask bench`. Its plain gunicorn rows run
/// from this same venv, so plugin and baseline share gunicorn and Python.
pub const GUNICORN23_PLUGIN: Venv = Venv {
    name: "gunicorn23-plugin",
    program: "gunicorn",
    version: "23.0.0",
    requirements: &[
        "gunicorn==23.0.0",
        "packaging==26.3",
        "gunicorn-prometheus-exporter==0.2.4",
        "prometheus_client==0.26.0",
        "psutil==7.2.2",
        "PyYAML==6.0.3",
        "redis==8.1.0",
    ],
};

/// The venvs only the benchmark needs (`setup` makes the others); its
/// gunicorn 27 rows use the tests' gunicorn27 venv.
pub const BENCH_VENVS: &[Venv] = &[GUNICORN23_PLUGIN];

/// virtme-ng, which boots a kernel with the host's filesystem for
/// `cargo xtask vmtest` (its `vng` runs `virtme-run` from the same bin
/// directory, so that directory goes on PATH).
pub const VIRTME_NG: Venv = Venv {
    name: "virtme-ng",
    program: "vng",
    version: "1.42",
    requirements: &[
        "virtme-ng==1.42",
        "argcomplete==3.7.2",
        "requests==2.34.2",
        "certifi==2026.10.19.post1",
        "charset-normalizer==3.5.3",
        "idna==3.20",
        "urllib3==2.8.0",
    ],
};

#[derive(Debug, Default, Args)]
pub struct Options {
    /// Rebuild the venvs even when they are up to date.
    #[arg(long)]
    pub force: bool,
    /// Also the benchmark's venv (gunicorn 23 with gunicorn-prometheus-exporter).
    #[arg(long)]
    pub bench: bool,
    /// Also virtme-ng (what `cargo xtask vmtest` boots kernels with).
    #[arg(long)]
    pub vm: bool,
}

pub fn run(opts: Options) -> Result<()> {
    let python = python_version()?;
    for venv in VENVS {
        ensure(venv, &python, opts.force)?;
    }
    if opts.bench {
        ensure_bench(opts.force)?;
    }
    if opts.vm {
        ensure_vm(opts.force)?;
    }
    Ok(())
}

/// The virtme-ng venv (made or checked, as the tests' are).
pub fn ensure_vm(force: bool) -> Result<()> {
    ensure(&VIRTME_NG, &python_version()?, force)
}

/// The benchmark-only venvs (made or checked, as the tests' are).
pub fn ensure_bench(force: bool) -> Result<()> {
    let python = python_version()?;
    for venv in BENCH_VENVS {
        ensure(venv, &python, force)?;
    }
    Ok(())
}

fn python_version() -> Result<String> {
    let out = commands::output(command(PYTHON).arg("--version"))
        .with_context(|| format!("`{PYTHON}` is needed for the test venvs"))?;
    // Python < 3.4 printed the version on stderr.
    let text = [out.stdout, out.stderr].concat();
    Ok(String::from_utf8_lossy(&text).trim().to_string())
}

fn stamp_text(venv: &Venv, python: &str) -> String {
    let mut text = format!("# {python}\n");
    for req in venv.requirements {
        text.push_str(req);
        text.push('\n');
    }
    text
}

fn version_ok(dir: &Path, venv: &Venv) -> bool {
    let out = command(dir.join("bin").join(venv.program))
        .arg("--version")
        .output();
    out.is_ok_and(|o| {
        o.status.success() && prints_version(&[o.stdout, o.stderr].concat(), venv.version)
    })
}

/// Whether `--version` output names `version` as a word: gunicorn prints
/// `gunicorn (version 27.0.1)`, vng `virtme-ng 1.42`.
fn prints_version(output: &[u8], version: &str) -> bool {
    String::from_utf8_lossy(output)
        .split_whitespace()
        .any(|w| w.trim_matches(|c| c == '(' || c == ')') == version)
}

fn ensure(venv: &Venv, python: &str, force: bool) -> Result<()> {
    let dir = venv_dir(venv.name);
    let stamp = stamp_text(venv, python);
    let stamp_path = dir.join(STAMP);
    if !force && fs::read_to_string(&stamp_path).is_ok_and(|s| s == stamp) && version_ok(&dir, venv)
    {
        println!(
            "venv: {} ({} {}): up to date",
            venv.name, venv.program, venv.version
        );
        return Ok(());
    }

    println!(
        "venv: creating {} ({} {}) in {}...",
        venv.name,
        venv.program,
        venv.version,
        dir.display()
    );
    if dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    if let Some(parent) = dir.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    commands::run(command(PYTHON).args(["-m", "venv"]).arg(&dir))
        .context("`python3 -m venv` failed (on Debian's python3, install python3-venv)")?;
    commands::run(
        command(dir.join("bin/pip"))
            .args([
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--no-input",
            ])
            .args(venv.requirements)
            .env("PIP_NO_INPUT", "1"),
    )
    .with_context(|| format!("installing the packages of venv {}", venv.name))?;
    commands::run(command(dir.join("bin/pip")).args(["check", "--disable-pip-version-check"]))
        .with_context(|| format!("venv {}: broken dependencies", venv.name))?;

    let program = dir.join("bin").join(venv.program);
    let version = commands::stdout(command(&program).arg("--version"))?;
    if !version_ok(&dir, venv) {
        bail!(
            "venv {}: `{} --version` printed {:?}, expected version {}",
            venv.name,
            venv.program,
            version.trim(),
            venv.version
        );
    }
    fs::write(&stamp_path, stamp).with_context(|| format!("writing {}", stamp_path.display()))?;
    println!("venv: {}: {}", venv.name, version.trim());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_version_word() {
        assert!(prints_version(b"gunicorn (version 27.0.1)\n", "27.0.1"));
        assert!(prints_version(b"virtme-ng 1.42\n", "1.42"));
        assert!(!prints_version(b"virtme-ng 1.420\n", "1.42"));
        assert!(!prints_version(b"gunicorn (version 23.0.0)\n", "27.0.1"));
    }
}
