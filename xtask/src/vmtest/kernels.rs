//! Debian kernel packages for `cargo xtask vmtest`: the newest generic
//! (`-amd64`) image of each pinned series, downloaded once and unpacked in
//! the user's cache directory, so fresh clones and CI runs on the machine
//! reuse them.
//!
//! apt runs with a sources list, state and cache of its own under that
//! directory: the machine's apt settings (proxies) apply, its sources and
//! package lists are neither read nor changed.

use std::{
    fs::{self, File},
    io::ErrorKind,
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, SystemTime},
};

use anyhow::{Context as _, Result, bail};
use clap::ValueEnum;

use crate::commands::{self, command};

/// A kernel series the project is tested on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Series {
    /// Debian 12's kernel, the oldest the exporter fully supports.
    #[value(name = "6.1")]
    V6_1,
    /// Debian 13's kernel (and bookworm's backport of it).
    #[value(name = "6.12")]
    V6_12,
    /// A recent one, from trixie-backports.
    #[value(name = "6.18")]
    V6_18,
    /// Debian 11's kernel, which the exporter must refuse clearly.
    #[value(name = "5.10")]
    V5_10,
}

impl Series {
    /// Every series, in the order the matrix boots them.
    pub const ALL: [Series; 4] = [Series::V6_1, Series::V6_12, Series::V6_18, Series::V5_10];

    pub fn name(self) -> &'static str {
        match self {
            Series::V6_1 => "6.1",
            Series::V6_12 => "6.12",
            Series::V6_18 => "6.18",
            Series::V5_10 => "5.10",
        }
    }

    /// The suites its package may come from.
    fn suites(self) -> &'static [&'static str] {
        match self {
            Series::V6_1 => &["bookworm", "bookworm-security"],
            Series::V6_12 => &["bookworm-security", "trixie", "trixie-security"],
            Series::V6_18 => &["trixie-backports"],
            Series::V5_10 => &["bullseye-security"],
        }
    }
}

/// Every suite of every series, with the archive that serves it.
const SUITES: &[(&str, &str)] = &[
    ("bullseye-security", "http://deb.debian.org/debian-security"),
    ("bookworm", "http://deb.debian.org/debian"),
    ("bookworm-security", "http://deb.debian.org/debian-security"),
    ("trixie", "http://deb.debian.org/debian"),
    ("trixie-security", "http://deb.debian.org/debian-security"),
    ("trixie-backports", "http://deb.debian.org/debian"),
];

/// Package lists younger than this are not fetched again: kernels of a
/// series are published every few weeks, and a run should not depend on the
/// mirrors when it has what it needs.
const LISTS_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// A kernel ready to boot.
#[derive(Clone, Debug)]
pub struct Kernel {
    pub package: String,
    pub version: String,
    pub suite: String,
    /// `boot/vmlinuz-<release>` in the unpacked package (its modules are in
    /// the same tree, where virtme-ng looks for them).
    pub vmlinuz: PathBuf,
    /// What `uname -r` says on it.
    pub release: String,
}

/// The kernels' part of the user's cache directory.
pub fn cache_dir() -> Result<PathBuf> {
    Ok(crate::cache_dir()?.join("kernels"))
}

/// The private apt archive and the kernels unpacked from it, locked while
/// this value lives (another vmtest run waits rather than unpacking the same
/// tree or pruning one in use).
pub struct Archive {
    dir: PathBuf,
    /// What `apt-get update` reported failing, shown when a series finds nothing.
    update_problems: Vec<String>,
    _lock: File,
}

impl Archive {
    /// Creates the cache layout and refreshes the package lists when they
    /// are missing or older than [`LISTS_MAX_AGE`].
    pub fn open() -> Result<Archive> {
        let dir = cache_dir()?;
        for sub in [
            "apt/state/lists/partial",
            "apt/cache/archives/partial",
            "apt/sources.list.d",
            "debs",
            "trees",
        ] {
            let path = dir.join(sub);
            fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        }
        let lock = lock(&dir.join("lock"))?;
        let mut archive = Archive {
            dir,
            update_problems: Vec::new(),
            _lock: lock,
        };
        archive.refresh()?;
        Ok(archive)
    }

    fn apt_dir(&self) -> PathBuf {
        self.dir.join("apt")
    }

    /// `program` (apt-get, apt-cache) pointed at the private sources, state
    /// and cache.
    fn apt(&self, program: &str) -> Command {
        let apt = self.apt_dir();
        let mut cmd = command(program);
        let dir = |name: &str| apt.join(name).display().to_string();
        cmd.args([
            "-q",
            "-o",
            &format!("Dir::Etc::SourceList={}", dir("sources.list")),
            "-o",
            &format!("Dir::Etc::SourceParts={}", dir("sources.list.d")),
            "-o",
            &format!("Dir::State={}", dir("state")),
            "-o",
            &format!("Dir::Cache={}", dir("cache")),
            "-o",
            "Acquire::Languages=none",
            "-o",
            "APT::Architectures=amd64",
            // The cache is under root's home, which apt's _apt user cannot
            // enter: download as root instead of warning about it.
            "-o",
            "APT::Sandbox::User=root",
        ])
        .env("DEBIAN_FRONTEND", "noninteractive");
        cmd
    }

    fn refresh(&mut self) -> Result<()> {
        let apt = self.apt_dir();
        let sources = sources_list();
        let sources_path = apt.join("sources.list");
        let stamp = apt.join("updated");
        let same_sources = fs::read_to_string(&sources_path).is_ok_and(|s| s == sources);
        let age = fs::metadata(&stamp)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok());
        if same_sources && age.is_some_and(|a| a < LISTS_MAX_AGE) {
            println!(
                "vmtest: Debian package lists from {:.1} h ago (private, in {})",
                age.unwrap_or_default().as_secs_f64() / 3600.0,
                apt.display()
            );
            return Ok(());
        }
        fs::write(&sources_path, &sources)
            .with_context(|| format!("writing {}", sources_path.display()))?;
        let _ = fs::remove_file(&stamp);
        let suites: Vec<&str> = SUITES.iter().map(|(s, _)| *s).collect();
        println!(
            "vmtest: apt-get update of {} (private lists in {})...",
            suites.join(" "),
            apt.display()
        );
        let mut cmd = self.apt("apt-get");
        cmd.arg("update");
        let out = cmd
            .output()
            .with_context(|| format!("could not start `{}`", commands::describe(&cmd)))?;
        let text = String::from_utf8_lossy(&[out.stdout, out.stderr].concat()).into_owned();
        self.update_problems = update_problems(&text);
        if !out.status.success() && self.update_problems.is_empty() {
            self.update_problems
                .push(format!("apt-get update failed ({})", out.status));
        }
        if self.update_problems.is_empty() {
            File::create(&stamp).with_context(|| format!("creating {}", stamp.display()))?;
        } else {
            // Series whose suites answered still resolve; the others fail
            // naming these lines.
            eprintln!(
                "vmtest: warning: apt-get update could not fetch everything:\n  {}",
                self.update_problems.join("\n  ")
            );
        }
        Ok(())
    }

    /// The newest generic image of `series`, downloaded and unpacked unless
    /// it already is; older ones of the series are removed.
    pub fn kernel(&self, series: Series) -> Result<Kernel> {
        let (package, version, suite) = self.newest(series)?;
        let stem = format!("{package}_{version}");
        let tree = self.dir.join("trees").join(&stem);
        if tree.is_dir() {
            println!(
                "vmtest: {} kernel {package} {version} ({suite}): cached",
                series.name()
            );
        } else {
            let deb = self.download(&package, &version)?;
            println!("vmtest: unpacking {}...", deb.display());
            let partial = self.dir.join("trees").join(format!(".partial-{stem}"));
            remove_if_present(&partial)?;
            commands::run(command("dpkg-deb").arg("-x").arg(&deb).arg(&partial))
                .with_context(|| format!("unpacking {}", deb.display()))?;
            // Renamed whole, so an interrupted unpack is never taken for a tree.
            fs::rename(&partial, &tree)
                .with_context(|| format!("renaming {} to {}", partial.display(), tree.display()))?;
        }
        self.prune(series, &stem)?;
        let (vmlinuz, release) = vmlinuz(&tree)?;
        Ok(Kernel {
            package,
            version,
            suite,
            vmlinuz,
            release,
        })
    }

    /// (package, version, suite) of the newest generic image of `series` in
    /// its suites.
    fn newest(&self, series: Series) -> Result<(String, String, String)> {
        let prefix = format!("linux-image-{}.", series.name());
        let names = commands::stdout(self.apt("apt-cache").args(["pkgnames", &prefix]))?;
        let mut names: Vec<&str> = names
            .lines()
            .map(str::trim)
            .filter(|n| is_generic_image(n, series))
            .collect();
        // Signed images first: at an equal version they win (both boot the same).
        names.sort_by_key(|n| (n.ends_with("-unsigned"), n.to_string()));
        let mut candidates = Vec::new();
        if !names.is_empty() {
            let madison = commands::stdout(self.apt("apt-cache").arg("madison").args(&names))?;
            for name in &names {
                candidates.extend(madison.lines().filter_map(parse_madison).filter(
                    |(n, _, suite)| n == name && series.suites().contains(&suite.as_str()),
                ));
            }
        }
        let mut best: Option<(String, String, String)> = None;
        for c in candidates {
            if best.as_ref().is_none_or(|b| version_greater(&c.1, &b.1)) {
                best = Some(c);
            }
        }
        let problems = problems_of(&self.update_problems, series.suites());
        match best {
            Some(b) => Ok(b),
            None if problems.is_empty() => bail!(
                "no generic linux-image-{}.*-amd64 package in {}",
                series.name(),
                series.suites().join(", ")
            ),
            None => bail!(
                "no generic linux-image-{}.*-amd64 package in {}; apt-get update reported:\n  {}",
                series.name(),
                series.suites().join(", "),
                problems.join("\n  ")
            ),
        }
    }

    /// The .deb of `package` `version`, downloaded unless it already is.
    fn download(&self, package: &str, version: &str) -> Result<PathBuf> {
        let debs = self.dir.join("debs");
        let deb = debs.join(format!("{package}_{version}_amd64.deb"));
        if deb.is_file() {
            return Ok(deb);
        }
        println!("vmtest: downloading {package} {version}...");
        commands::run(
            self.apt("apt-get")
                .current_dir(&debs)
                .arg("download")
                .arg(format!("{package}={version}")),
        )
        .with_context(|| format!("downloading {package} {version} from Debian"))?;
        if !deb.is_file() {
            bail!(
                "apt-get download of {package} {version} succeeded but {} is missing",
                deb.display()
            );
        }
        Ok(deb)
    }

    /// Removes the debs and trees of `series` other than `keep` (a stem
    /// `<package>_<version>`): an old kernel of a series is never booted again.
    fn prune(&self, series: Series, keep: &str) -> Result<()> {
        for sub in ["debs", "trees"] {
            let dir = self.dir.join(sub);
            let entries =
                fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?;
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let stem = name.strip_suffix("_amd64.deb").unwrap_or(&name);
                let package = stem.split('_').next().unwrap_or_default();
                if stem != keep && is_generic_image(package, series) {
                    println!("vmtest: removing the older {}", entry.path().display());
                    remove_if_present(&entry.path())?;
                }
            }
        }
        Ok(())
    }
}

/// An exclusive lock on `path` for as long as the returned file is open.
fn lock(path: &Path) -> Result<File> {
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    // SAFETY: flock on a descriptor we own; it is released when the file closes.
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
    if !locked {
        println!(
            "vmtest: waiting for another run to release {}...",
            path.display()
        );
        // SAFETY: as above, blocking this time.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("locking {}", path.display()));
        }
    }
    Ok(file)
}

fn remove_if_present(path: &Path) -> Result<()> {
    let result = if path.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    };
    match result {
        Err(e) if e.kind() != ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// The one `boot/vmlinuz-<release>` of an unpacked image, and its release.
fn vmlinuz(tree: &Path) -> Result<(PathBuf, String)> {
    let boot = tree.join("boot");
    let found: Vec<(PathBuf, String)> = fs::read_dir(&boot)
        .with_context(|| format!("reading {}", boot.display()))?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let release = name.strip_prefix("vmlinuz-")?.to_string();
            Some((e.path(), release))
        })
        .collect();
    match <[_; 1]>::try_from(found) {
        Ok([one]) => Ok(one),
        Err(found) => bail!(
            "{} holds {} vmlinuz files, expected one",
            boot.display(),
            found.len()
        ),
    }
}

/// The private sources list: every suite any series comes from, main only
/// and package lists only (no translations or AppStream metadata).
fn sources_list() -> String {
    let mut text =
        String::from("# Written by `cargo xtask vmtest`; read only by its own apt calls.\n");
    for (suite, archive) in SUITES {
        text.push_str(&format!(
            "deb [target=Packages signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] \
             {archive} {suite} main\n"
        ));
    }
    text
}

/// The lines of `apt-get update` output that say what could not be fetched:
/// `Err:` lines with their indented reasons, and warnings and errors.
fn update_problems(output: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut in_err = false;
    for line in output.lines() {
        if line.starts_with("Err:") || line.starts_with("W:") || line.starts_with("E:") {
            out.push(line.trim().to_string());
            in_err = line.starts_with("Err:");
        } else if in_err && line.starts_with(' ') {
            if let Some(last) = out.last_mut() {
                last.push_str(": ");
                last.push_str(line.trim());
            }
        } else {
            in_err = false;
        }
    }
    out
}

/// The lines of `problems` about `suites` (`... bookworm-security InRelease`,
/// `.../dists/bookworm-security/...`), or all of them when none names one.
fn problems_of<'a>(problems: &'a [String], suites: &[&str]) -> Vec<&'a str> {
    let about = |p: &str| {
        suites
            .iter()
            .any(|s| p.contains(&format!(" {s} ")) || p.contains(&format!("/{s}/")))
    };
    let mine: Vec<&str> = problems
        .iter()
        .map(String::as_str)
        .filter(|p| about(p))
        .collect();
    if mine.is_empty() {
        problems.iter().map(String::as_str).collect()
    } else {
        mine
    }
}

/// Whether `name` is the generic amd64 image of `series`, signed
/// (`linux-image-6.1.0-57-amd64`, `linux-image-6.12.117+deb13-amd64`,
/// `linux-image-6.12.115+deb13.1-amd64`) or `-unsigned`; not -cloud
/// (no 9p), -rt or -dbg.
fn is_generic_image(name: &str, series: Series) -> bool {
    let Some(rest) = name.strip_prefix("linux-image-") else {
        return false;
    };
    let rest = rest.strip_suffix("-unsigned").unwrap_or(rest);
    let Some(abi) = rest.strip_suffix("-amd64") else {
        return false;
    };
    let Some(abi) = abi
        .strip_prefix(series.name())
        .and_then(|a| a.strip_prefix('.'))
    else {
        return false;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    // <patch>-<abi number>, or <patch>+deb<release>[.<respin>]
    if let Some((patch, number)) = abi.split_once('-') {
        return digits(patch) && digits(number);
    }
    if let Some((patch, debian)) = abi.split_once("+deb") {
        let (release, respin) = debian.split_once('.').unwrap_or((debian, "0"));
        return digits(patch) && digits(release) && digits(respin);
    }
    false
}

/// (package, version, suite) from an `apt-cache madison` line such as
/// `linux-image-6.1.0-57-amd64 | 6.1.192-3 | http://deb.debian.org/debian-security bookworm-security/main amd64 Packages`.
fn parse_madison(line: &str) -> Option<(String, String, String)> {
    let mut fields = line.split('|').map(str::trim);
    let package = fields.next()?.to_string();
    let version = fields.next()?.to_string();
    let suite = fields
        .next()?
        .split_whitespace()
        .nth(1)?
        .split('/')
        .next()?;
    Some((package, version, suite.to_string()))
}

/// Debian version order, as dpkg itself decides it.
fn version_greater(a: &str, b: &str) -> bool {
    commands::succeeds(command("dpkg").args(["--compare-versions", a, "gt", b]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_generic_images_of_a_series() {
        for (name, series) in [
            ("linux-image-6.1.0-57-amd64", Series::V6_1),
            ("linux-image-6.1.0-57-amd64-unsigned", Series::V6_1),
            ("linux-image-6.12.117+deb13-amd64", Series::V6_12),
            ("linux-image-6.12.117+deb12-amd64-unsigned", Series::V6_12),
            ("linux-image-6.12.115+deb13.1-amd64", Series::V6_12),
            ("linux-image-6.18.15+deb13-amd64", Series::V6_18),
            ("linux-image-5.10.0-46-amd64", Series::V5_10),
        ] {
            assert!(is_generic_image(name, series), "{name}");
        }
        for (name, series) in [
            ("linux-image-6.1.0-57-cloud-amd64", Series::V6_1),
            ("linux-image-6.1.0-57-rt-amd64-unsigned", Series::V6_1),
            ("linux-image-6.1.0-57-amd64-dbg", Series::V6_1),
            ("linux-image-6.12.117+deb13-amd64", Series::V6_1),
            ("linux-image-6.18.15+deb13-amd64", Series::V6_1),
            ("linux-image-amd64", Series::V6_1),
            ("linux-image-6.1.0-57-arm64", Series::V6_1),
        ] {
            assert!(!is_generic_image(name, series), "{name}");
        }
    }

    #[test]
    fn parses_madison_lines() {
        assert_eq!(
            parse_madison(
                "linux-image-6.1.0-57-amd64 |  6.1.192-3 | http://deb.debian.org/debian-security bookworm-security/main amd64 Packages"
            ),
            Some((
                "linux-image-6.1.0-57-amd64".into(),
                "6.1.192-3".into(),
                "bookworm-security".into()
            ))
        );
        assert_eq!(parse_madison("garbage"), None);
    }

    #[test]
    fn finds_what_update_could_not_fetch() {
        let out = "Hit:1 http://deb.debian.org/debian bookworm InRelease
Err:2 http://deb.debian.org/debian-security bullseye-security InRelease
  Could not resolve 'deb.debian.org'
Reading package lists...
W: Failed to fetch http://deb.debian.org/debian-security/dists/bullseye-security/InRelease  Could not resolve 'deb.debian.org'
W: Some index files failed to download. They have been ignored, or old ones used instead.
";
        assert_eq!(
            update_problems(out),
            [
                "Err:2 http://deb.debian.org/debian-security bullseye-security InRelease: Could not resolve 'deb.debian.org'",
                "W: Failed to fetch http://deb.debian.org/debian-security/dists/bullseye-security/InRelease  Could not resolve 'deb.debian.org'",
                "W: Some index files failed to download. They have been ignored, or old ones used instead.",
            ]
        );
        assert!(update_problems("Hit:1 x\nReading package lists...\n").is_empty());
        let problems = update_problems(out);
        assert_eq!(
            problems_of(&problems, Series::V5_10.suites()),
            &problems[..2]
        );
        assert_eq!(problems_of(&problems, Series::V6_18.suites()), problems);
    }

    #[test]
    fn debian_version_order() {
        assert!(version_greater("6.1.192-3", "6.1.192-2"));
        assert!(version_greater("6.12.118-1", "6.12.117-1~deb12u1"));
        assert!(!version_greater("6.12.117-1~deb12u1", "6.12.117-1"));
    }
}
