//! The Debian package: a tree laid out here and packed by `dpkg-deb`, which
//! every Debian host has (cargo-deb would be one more tool to build, and its
//! asset list, fixed in Cargo.toml, cannot follow what deploy/'s folders hold).
//!
//! | installed at | from |
//! |---|---|
//! | `/usr/bin/gunicorn-ebpf-exporter` | the static binary |
//! | `/usr/lib/systemd/system/gunicorn-ebpf-exporter.service` | `deploy/systemd/`; disabled: the maintainer scripts enable nothing |
//! | `/etc/default/gunicorn-ebpf-exporter` | `deploy/systemd/*.default`; a conffile |
//! | `/usr/share/man/man1/gunicorn-ebpf-exporter.1.gz` | the binary's `--generate man` |
//! | bash, zsh and fish completions, where each shell looks | the binary's `--generate <shell>` |
//! | `/usr/share/gunicorn-ebpf-exporter/{grafana,prometheus}/` | whatever `deploy/grafana/` and `deploy/prometheus/` hold |
//! | `/usr/share/doc/gunicorn-ebpf-exporter/copyright` | the workspace's license |
//! | `/usr/share/doc/gunicorn-ebpf-exporter/README.md.gz` | the README (`--help` and the man page point to it) |

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};

use super::{Metadata, PACKAGE};
use crate::{commands, target_dir, workspace_root};

/// Folders of `deploy/` shipped whole under `/usr/share/gunicorn-ebpf-exporter/`.
const SHARED: &[&str] = &["grafana", "prometheus"];

/// Where each shell's completion script goes (Debian's vendor directories).
const COMPLETIONS: &[(&str, &str)] = &[
    (
        "bash",
        "usr/share/bash-completion/completions/gunicorn-ebpf-exporter",
    ),
    (
        "zsh",
        "usr/share/zsh/vendor-completions/_gunicorn-ebpf-exporter",
    ),
    (
        "fish",
        "usr/share/fish/vendor_completions.d/gunicorn-ebpf-exporter.fish",
    ),
];

/// The unit's file name in `deploy/systemd/` and on the host.
const UNIT: &str = "gunicorn-ebpf-exporter.service";

/// One line for package lists (the Cargo description is too long for one).
const SYNOPSIS: &str = "Gunicorn per-worker metrics from the kernel (eBPF) for Prometheus";

/// Builds the package of `binary` in `out`; returns its path.
pub fn build(binary: &Path, meta: &Metadata, out: &Path) -> Result<PathBuf> {
    let root = target_dir().join("dist-deb");
    if root.exists() {
        fs::remove_dir_all(&root).with_context(|| format!("emptying {}", root.display()))?;
    }
    let deploy = workspace_root().join("deploy");
    let systemd = deploy.join("systemd");
    let share = format!("usr/share/{PACKAGE}");

    copy(binary, &root.join("usr/bin").join(PACKAGE), 0o755)?;
    copy(
        &systemd.join(UNIT),
        &root.join("usr/lib/systemd/system").join(UNIT),
        0o644,
    )?;
    copy(
        &systemd.join(format!("{PACKAGE}.default")),
        &root.join("etc/default").join(PACKAGE),
        0o644,
    )?;
    let man = root.join(format!("usr/share/man/man1/{PACKAGE}.1"));
    write(&man, &generated(binary, "man")?, 0o644)?;
    // Debian compresses man pages; -n keeps the name and time out (reproducible).
    commands::run(commands::command("gzip").args(["-9n"]).arg(&man))?;
    for (shell, path) in COMPLETIONS {
        write(&root.join(path), &generated(binary, shell)?, 0o644)?;
    }
    for folder in SHARED {
        let from = deploy.join(folder);
        for file in files(&from)? {
            copy(
                &from.join(&file),
                &root.join(&share).join(folder).join(&file),
                0o644,
            )?;
        }
    }
    write(
        &root.join(format!("usr/share/doc/{PACKAGE}/copyright")),
        copyright(meta).as_bytes(),
        0o644,
    )?;
    let readme = root.join(format!("usr/share/doc/{PACKAGE}/README.md"));
    copy(&workspace_root().join("README.md"), &readme, 0o644)?;
    // Debian compresses documentation as it does man pages.
    commands::run(commands::command("gzip").args(["-9n"]).arg(&readme))?;
    // Before the control files: the sums and the size are of the data alone.
    let md5sums = md5sums(&root)?;
    let installed_kib: u64 = files(&root)?
        .iter()
        .map(|f| fs::metadata(root.join(f)).map_or(0, |m| m.len().div_ceil(1024)))
        .sum();

    let debian = root.join("DEBIAN");
    write(
        &debian.join("control"),
        control(meta, installed_kib)?.as_bytes(),
        0o644,
    )?;
    write(
        &debian.join("conffiles"),
        format!("/etc/default/{PACKAGE}\n").as_bytes(),
        0o644,
    )?;
    write(&debian.join("md5sums"), md5sums.as_bytes(), 0o644)?;
    for (script, text) in [
        ("postinst", include_str!("debian/postinst")),
        ("prerm", include_str!("debian/prerm")),
        ("postrm", include_str!("debian/postrm")),
    ] {
        write(&debian.join(script), text.as_bytes(), 0o755)?;
    }
    // Directories as dpkg wants them, whatever the umask made.
    for dir in dirs(&root)? {
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))
            .with_context(|| format!("chmod {}", dir.display()))?;
    }

    let deb = out.join(format!(
        "{PACKAGE}_{}_amd64.deb",
        debian_version(&meta.version)
    ));
    commands::run(
        commands::command("dpkg-deb")
            .args(["--root-owner-group", "-Zxz", "--build"])
            .arg(&root)
            .arg(&deb),
    )
    .context("dpkg-deb could not build the package")?;
    Ok(deb)
}

/// The package's version of a Cargo version: a pre-release sorts before its
/// release with `~` (`0.2.0~rc.1` < `0.2.0`), and `-1` is the first package of it.
fn debian_version(cargo: &str) -> String {
    format!("{}-1", cargo.replacen('-', "~", 1))
}

fn control(meta: &Metadata, installed_kib: u64) -> Result<String> {
    let Some(maintainer) = meta.authors.first() else {
        bail!("the exporter's Cargo.toml names no authors: the package needs a maintainer");
    };
    let mut text = format!(
        "Package: {PACKAGE}\n\
         Version: {}\n\
         Architecture: amd64\n\
         Maintainer: {maintainer}\n\
         Installed-Size: {installed_kib}\n\
         Section: net\n\
         Priority: optional\n\
         Description: {SYNOPSIS}\n",
        debian_version(&meta.version),
    );
    for line in wrap(&meta.description, 72) {
        text.push(' ');
        text.push_str(&line);
        text.push('\n');
    }
    Ok(text)
}

/// `text`'s words in lines of at most `width` characters (longer words alone).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for word in text.split_whitespace() {
        match lines.last_mut() {
            Some(line) if line.len() + 1 + word.len() <= width => {
                line.push(' ');
                line.push_str(word);
            }
            _ => lines.push(word.to_string()),
        }
    }
    lines
}

/// Debian's machine-readable copyright file.
fn copyright(meta: &Metadata) -> String {
    format!(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
         Upstream-Name: {PACKAGE}\n\
         \n\
         Files: *\n\
         Copyright: {}\n\
         License: {}\n \
         On Debian systems the Apache License 2.0 is in\n \
         /usr/share/common-licenses/Apache-2.0.\n",
        meta.authors.join(", "),
        meta.license,
    )
}

/// What `binary --generate <what>` prints (the man page or a completion
/// script, from the exporter's own command-line definition).
fn generated(binary: &Path, what: &str) -> Result<Vec<u8>> {
    let out = commands::output(commands::command(binary).args(["--generate", what]))?;
    Ok(out.stdout)
}

/// `md5sum`'s lines for every file under `root`, by path from it.
fn md5sums(root: &Path) -> Result<String> {
    let mut cmd = commands::command("md5sum");
    cmd.current_dir(root).args(files(root)?);
    commands::stdout(&mut cmd)
}

fn copy(from: &Path, to: &Path, mode: u32) -> Result<()> {
    let bytes = fs::read(from).with_context(|| format!("reading {}", from.display()))?;
    write(to, &bytes, mode)
}

fn write(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))
}

/// The files under `dir` (none if it does not exist), by path from it, sorted.
fn files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    walk(dir, Path::new(""), &mut |rel, is_dir| {
        if !is_dir {
            found.push(rel.to_path_buf());
        }
    })?;
    found.sort();
    Ok(found)
}

/// The directories under `dir`, itself included.
fn dirs(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut found = vec![dir.to_path_buf()];
    walk(dir, Path::new(""), &mut |rel, is_dir| {
        if is_dir {
            found.push(dir.join(rel));
        }
    })?;
    Ok(found)
}

fn walk(dir: &Path, rel: &Path, visit: &mut dyn FnMut(&Path, bool)) -> Result<()> {
    let entries = match fs::read_dir(dir.join(rel)) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && rel.as_os_str().is_empty() => {
            return Ok(());
        }
        Err(e) => return Err(e).with_context(|| format!("listing {}", dir.join(rel).display())),
    };
    for entry in entries {
        let entry = entry?;
        let path = rel.join(entry.file_name());
        let is_dir = entry.file_type()?.is_dir();
        visit(&path, is_dir);
        if is_dir {
            walk(dir, &path, visit)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_versions_sort_pre_releases_first() {
        assert_eq!(debian_version("0.1.0"), "0.1.0-1");
        assert_eq!(debian_version("0.2.0-rc.1"), "0.2.0~rc.1-1");
    }

    #[test]
    fn wraps_at_word_boundaries() {
        assert_eq!(wrap("aa bb cc  dd", 5), ["aa bb", "cc dd"]);
        assert_eq!(wrap("toolongword x", 4), ["toolongword", "x"]);
        assert!(wrap("", 10).is_empty());
    }
}
