//! `cargo xtask dist`: what ships, in `target/dist/` (emptied first):
//!
//! - `gunicorn-ebpf-exporter-<version>-x86_64-unknown-linux-musl`: the
//!   exporter, eBPF object embedded, linked statically against musl, so it
//!   runs on any x86-64 Linux whatever its C library;
//! - `gunicorn-ebpf-exporter_<version>-1_amd64.deb` ([`deb`]);
//! - `SHA256SUMS` of both (`sha256sum -c SHA256SUMS`).
//!
//! The version is the workspace's. [`debootstrap`] makes the Debian root the
//! package tests install the .deb in.

pub mod deb;
pub mod debootstrap;

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};
use clap::Args;

use crate::{commands, setup, target_dir, workspace_root};

/// The static build's target.
pub const MUSL_TARGET: &str = "x86_64-unknown-linux-musl";
/// The C compiler cc uses for the musl target's build scripts (unless set).
const MUSL_CC: &str = "CC_x86_64_unknown_linux_musl";
const PACKAGE: &str = "gunicorn-ebpf-exporter";

#[derive(Debug, Default, Args)]
pub struct Options {}

pub fn run(_opts: Options) -> Result<()> {
    setup::toolchain_only()?;
    let artifacts = build()?;
    for path in [&artifacts.binary, &artifacts.deb, &artifacts.checksums] {
        let size = fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        println!("dist: {} ({:.1} MB)", path.display(), size as f64 / 1e6);
    }
    Ok(())
}

/// What `build` leaves in `target/dist/`.
pub struct Artifacts {
    pub binary: PathBuf,
    pub deb: PathBuf,
    pub checksums: PathBuf,
}

/// The exporter package's metadata, from its Cargo.toml (versions and license
/// come from the workspace).
pub struct Metadata {
    pub version: String,
    pub description: String,
    pub license: String,
    pub authors: Vec<String>,
}

/// Builds every artifact (setup already done).
pub fn build() -> Result<Artifacts> {
    let meta = metadata()?;
    println!("dist: cargo build --release --target {MUSL_TARGET} -p {PACKAGE}...");
    let mut build = commands::cargo();
    build.current_dir(workspace_root()).args([
        "build",
        "--release",
        "--target",
        MUSL_TARGET,
        "-p",
        PACKAGE,
    ]);
    // ring (rustls' crypto, for the metrics endpoint's TLS) compiles C and
    // assembly; cc looks for x86_64-linux-musl-gcc, which Debian lacks. The
    // host gcc builds that freestanding code for musl as well (the link
    // against musl's static libc is rustc's).
    if std::env::var_os(MUSL_CC).is_none() {
        build.env(MUSL_CC, "gcc");
    }
    commands::run(&mut build).context("the static build failed")?;
    let built = target_dir().join(MUSL_TARGET).join("release").join(PACKAGE);

    let dir = target_dir().join("dist");
    if dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("emptying {}", dir.display()))?;
    }
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let binary = dir.join(format!("{PACKAGE}-{}-{MUSL_TARGET}", meta.version));
    // Debug info out (std's, mostly: half the size), symbols kept: a panic's
    // backtrace still names its functions. The eBPF object is data: untouched.
    commands::run(
        commands::command("strip")
            .arg("--strip-debug")
            .arg("-o")
            .arg(&binary)
            .arg(&built),
    )?;
    let deb = deb::build(&binary, &meta, &dir)?;
    let checksums = checksums(&dir, &[&binary, &deb])?;
    Ok(Artifacts {
        binary,
        deb,
        checksums,
    })
}

fn metadata() -> Result<Metadata> {
    let metadata = cargo_metadata::MetadataCommand::new()
        .manifest_path(workspace_root().join("Cargo.toml"))
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let package = metadata
        .packages
        .into_iter()
        .find(|p| p.name.as_str() == PACKAGE)
        .with_context(|| format!("no package {PACKAGE} in the workspace"))?;
    Ok(Metadata {
        version: package.version.to_string(),
        description: package.description.unwrap_or_default(),
        license: package.license.unwrap_or_default(),
        authors: package.authors,
    })
}

/// `SHA256SUMS` beside `files`, in `sha256sum`'s own format.
fn checksums(dir: &Path, files: &[&Path]) -> Result<PathBuf> {
    let mut cmd = commands::command("sha256sum");
    cmd.current_dir(dir);
    for file in files {
        let Some(name) = file.file_name() else {
            bail!("{} has no file name", file.display());
        };
        cmd.arg(name);
    }
    let sums = commands::stdout(&mut cmd)?;
    let path = dir.join("SHA256SUMS");
    fs::write(&path, sums).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}
