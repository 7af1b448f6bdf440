//! The throwaway Debian root the package tests install the .deb in: a
//! minimal one (`debootstrap --variant=minbase`: dpkg, a shell, coreutils)
//! plus systemd and man-db, so that the unit is verified, enabled and found
//! documented there, kept as a tarball in the user's cache so every clone and
//! run reuses it (two minutes to make; delete it to make it again). An empty
//! `dpkg --root` would not do: it has no package database, nor the shell and
//! tools the maintainer scripts run.

use std::{fs, path::PathBuf};

use anyhow::{Context as _, Result};

use crate::{cache_dir, commands};

/// Debian 12, whose 6.1 kernel is the oldest the exporter supports: the
/// oldest dpkg and systemd helpers the package must work with.
const SUITE: &str = "bookworm";
const MIRROR: &str = "http://deb.debian.org/debian";
/// Packages beyond minbase.
const INCLUDE: &[&str] = &["systemd", "man-db"];

/// Where the root's tarball is cached (`cargo xtask setup` makes it).
pub fn tarball() -> Result<PathBuf> {
    // Named by its content: another list of packages is another root.
    let name = format!("{SUITE}+{}.tar", INCLUDE.join("+"));
    Ok(cache_dir()?.join("debootstrap").join(name))
}

/// Makes the root's tarball unless it is cached.
pub fn ensure() -> Result<()> {
    let tarball = tarball()?;
    if tarball.is_file() {
        println!("setup: Debian {SUITE} root: cached ({})", tarball.display());
        return Ok(());
    }
    let dir = tarball.parent().context("the tarball has a directory")?;
    // Per process, so that two runs at once never share a half-made one.
    let tree = tarball.with_extension(std::process::id().to_string());
    let partial = tarball.with_extension(format!("tar.{}", std::process::id()));
    if tree.exists() {
        fs::remove_dir_all(&tree).with_context(|| format!("removing {}", tree.display()))?;
    }
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    println!("setup: debootstrap of a minimal Debian {SUITE} root (once)...");
    commands::run(
        commands::command("debootstrap")
            .arg("--variant=minbase")
            .arg(format!("--include={}", INCLUDE.join(",")))
            .arg(SUITE)
            .arg(&tree)
            .arg(MIRROR),
    )
    .context("debootstrap failed (it needs root and Debian's mirror)")?;
    commands::run(
        commands::command("tar")
            .args(["--numeric-owner", "-C"])
            .arg(&tree)
            // The downloaded packages and lists: half the size, never used.
            .args([
                "--exclude=./var/cache/apt/archives/*.deb",
                "--exclude=./var/lib/apt/lists/deb.*",
            ])
            .arg("-cf")
            .arg(&partial)
            .arg("."),
    )?;
    // Renamed whole: an interrupted run never leaves a tarball taken for done.
    fs::rename(&partial, &tarball)
        .with_context(|| format!("renaming {} to {}", partial.display(), tarball.display()))?;
    fs::remove_dir_all(&tree).with_context(|| format!("removing {}", tree.display()))
}
