//! `cargo xtask build`: setup, then the release exporter. The exporter's build.rs
//! builds the eBPF object with nightly + bpf-linker (found on PATH, which
//! includes cargo's bin directory for child processes).

use anyhow::{Context as _, Result, bail};
use clap::Args;

use crate::{commands, exporter_bin, setup, workspace_root};

#[derive(Debug, Default, Args)]
pub struct Options {}

pub fn run(_opts: Options) -> Result<()> {
    setup::run(setup::Options::default())?;
    println!("build: cargo build --release -p gunicorn-ebpf-exporter...");
    commands::run(commands::cargo().current_dir(workspace_root()).args([
        "build",
        "--release",
        "-p",
        "gunicorn-ebpf-exporter",
    ]))
    .context("building the exporter failed")?;
    let bin = exporter_bin();
    if !bin.is_file() {
        bail!("the build succeeded but {} is missing", bin.display());
    }
    println!("build: {}", bin.display());
    Ok(())
}
