//! What `cargo xtask dist` ships, tested as a user gets it:
//!
//! - the static binary (`DIST_BIN`) needs no library and no environment,
//!   says the workspace's version, and, run as the packaged unit runs it (no
//!   environment; root with only the unit's capability bounding set), counts
//!   a real Gunicorn's requests exactly;
//! - the .deb (`DIST_DEB`) installs with dpkg in a throwaway Debian root (a
//!   copy of `DEBIAN_ROOT_TAR`, which `cargo xtask setup` makes once) with
//!   exactly the expected files, its unit disabled and clean for
//!   `systemd-analyze verify`, and `dpkg --purge` leaves nothing of it behind,
//!   not even the links of a unit the admin enabled.

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use integration_tests::{
    Exporter, Gunicorn, TestDir, Version, check,
    env::required_path,
    http::{self, Request, Traffic},
};

const PACKAGE: &str = "gunicorn-ebpf-exporter";
const UNIT: &str = "gunicorn-ebpf-exporter.service";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the workspace")
        .to_path_buf()
}

fn deploy() -> PathBuf {
    repo().join("deploy")
}

/// What `<package> --version` prints: the workspace's version.
fn version_line() -> String {
    format!("{PACKAGE} {}\n", env!("CARGO_PKG_VERSION"))
}

/// Runs `cmd` to its end; panics if it cannot start.
fn output(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("could not run {cmd:?}: {e}"))
}

/// Its stdout; panics with both outputs unless it exits 0.
fn stdout(cmd: &mut Command) -> String {
    let out = output(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({})\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn static_binary_needs_no_library_and_no_environment() {
    let bin = required_path("DIST_BIN");
    let ldd = output(Command::new("ldd").arg(&bin));
    let said = String::from_utf8_lossy(&[ldd.stdout, ldd.stderr].concat()).into_owned();
    assert!(
        said.contains("statically linked") || said.contains("not a dynamic executable"),
        "ldd {} says it is dynamic:\n{said}",
        bin.display()
    );
    let version = stdout(Command::new("env").arg("-i").arg(&bin).arg("--version"));
    assert_eq!(version, version_line());
}

/// The capabilities the unit bounds the exporter to, as setpriv names them
/// (`CAP_SYS_PTRACE` -> `sys_ptrace`).
fn unit_capabilities() -> Vec<String> {
    let unit = fs::read_to_string(deploy().join("systemd").join(UNIT)).expect("reading the unit");
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("the unit sets CapabilityBoundingSet=");
    line.split_whitespace()
        .map(|cap| cap.trim_start_matches("CAP_").to_lowercase())
        .collect()
}

/// Run as the unit runs it: no environment (so no Rust toolchain either),
/// root but only the unit's capabilities. The socket hooks attach a uprobe
/// to each worker's C library, which the exception class below needs.
#[test]
fn static_binary_counts_exactly_as_the_unit_runs_it() {
    let caps = unit_capabilities();
    let bounding: Vec<String> = caps.iter().map(|c| format!("+{c}")).collect();
    let bounding = format!("--bounding-set=-all,{}", bounding.join(","));
    let g = Gunicorn::builder(Version::V27, "sync").workers(2).start();
    let e = Exporter::builder()
        .binary(required_path("DIST_BIN"))
        .wrapper(&["env", "-i", "/usr/bin/setpriv", &bounding])
        .pid(g.master_pid())
        .start();

    // It really runs bounded by those capabilities; once attached it keeps
    // only its share of them (tests/privileges.rs checks which).
    let status = fs::read_to_string(format!("/proc/{}/status", e.pid())).expect("its status");
    let mask = |field: &str| {
        let hex = status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .unwrap_or_else(|| panic!("no {field} in its status"));
        u64::from_str_radix(hex.trim(), 16).expect("a capability mask")
    };
    let (effective, bounding) = (mask("CapEff:"), mask("CapBnd:"));
    assert!(
        bounding.count_ones() as usize == caps.len() && effective & !bounding == 0,
        "the exporter's capabilities are not within the unit's {caps:?}:\n{status}"
    );

    let addr = g.addr();
    let mut t = Traffic::default();
    for req in [
        Request::get("/ok"),
        Request::get("/ok").close(),
        Request::get("/missing"),
        Request::get("/boom"),
        Request::post("/echo", vec![b'b'; 20_000]),
        Request::get("/file"),
        Request::get("/chunked"),
    ] {
        http::exchange(addr, &req, &mut t)
            .unwrap_or_else(|err| panic!("{} {}: {err}\n{}", req.method, req.target, g.story()));
    }
    let (m, records) = check::wait_counted(&g, &e, t.total_responses());
    check::assert_requests_match(&g, &e, &m, &records);
    check::assert_bytes_match(&g, &e, &m, &t);
    check::assert_failures_match(&g, &e, &m, &records);
    check::assert_no_kernel_errors(&g, &e, &m);
}

/// Runs `args` in the Debian root with a plain environment.
fn chroot(root: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("chroot");
    cmd.arg(root)
        .args(args)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("LC_ALL", "C")
        .env("DEBIAN_FRONTEND", "noninteractive");
    cmd
}

/// Every path under `root` (not following links), relative to it.
fn tree(root: &Path) -> BTreeSet<PathBuf> {
    fn walk(root: &Path, dir: &Path, found: &mut BTreeSet<PathBuf>) {
        let entries =
            fs::read_dir(dir).unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()));
        for entry in entries {
            let entry = entry.expect("a directory entry");
            let path = entry.path();
            found.insert(path.strip_prefix(root).expect("under root").to_path_buf());
            if entry.file_type().expect("a file type").is_dir() {
                walk(root, &path, found);
            }
        }
    }
    let mut found = BTreeSet::new();
    walk(root, root, &mut found);
    found
}

/// What the package must install, and nothing else: the binary, the unit
/// and its environment file, the man page, the completions, the copyright and
/// README, and whatever `deploy/grafana/` and `deploy/prometheus/` hold.
fn expected_files() -> BTreeSet<PathBuf> {
    let mut files: BTreeSet<PathBuf> = [
        "usr/bin/gunicorn-ebpf-exporter",
        "usr/lib/systemd/system/gunicorn-ebpf-exporter.service",
        "etc/default/gunicorn-ebpf-exporter",
        "usr/share/man/man1/gunicorn-ebpf-exporter.1.gz",
        "usr/share/bash-completion/completions/gunicorn-ebpf-exporter",
        "usr/share/zsh/vendor-completions/_gunicorn-ebpf-exporter",
        "usr/share/fish/vendor_completions.d/gunicorn-ebpf-exporter.fish",
        "usr/share/doc/gunicorn-ebpf-exporter/copyright",
        "usr/share/doc/gunicorn-ebpf-exporter/README.md.gz",
    ]
    .into_iter()
    .map(PathBuf::from)
    .collect();
    for folder in ["grafana", "prometheus"] {
        let dir = deploy().join(folder);
        if dir.is_dir() {
            let shared = Path::new("usr/share").join(PACKAGE).join(folder);
            files.extend(
                tree(&dir)
                    .into_iter()
                    .filter(|f| dir.join(f).is_file())
                    .map(|f| shared.join(f)),
            );
        }
    }
    files
}

#[test]
fn deb_installs_verifies_and_purges_cleanly_in_debian() {
    let deb = required_path("DIST_DEB");
    let dir = TestDir::new("debian-root");
    let root = dir.path();
    stdout(
        Command::new("tar")
            .args(["--numeric-owner", "-xpf"])
            .arg(required_path("DEBIAN_ROOT_TAR"))
            .arg("-C")
            .arg(root),
    );
    let before = tree(root);

    fs::copy(&deb, root.join("tmp/package.deb")).expect("copying the .deb in");
    stdout(&mut chroot(root, &["dpkg", "-i", "/tmp/package.deb"]));
    fs::remove_file(root.join("tmp/package.deb")).expect("removing the .deb");

    let listed: BTreeSet<PathBuf> = stdout(&mut chroot(root, &["dpkg", "-L", PACKAGE]))
        .lines()
        .map(|l| PathBuf::from(l.trim_start_matches('/')))
        .filter(|p| root.join(p).is_file())
        .collect();
    assert_eq!(listed, expected_files(), "the files the package installed");
    for (installed, source) in [
        (format!("usr/bin/{PACKAGE}"), required_path("DIST_BIN")),
        (
            format!("usr/lib/systemd/system/{UNIT}"),
            deploy().join("systemd").join(UNIT),
        ),
        (
            format!("etc/default/{PACKAGE}"),
            deploy().join("systemd").join(format!("{PACKAGE}.default")),
        ),
    ] {
        assert!(
            fs::read(root.join(&installed)).ok() == fs::read(&source).ok(),
            "/{installed} is not {}",
            source.display()
        );
    }
    // The static binary runs in a bare Debian.
    assert_eq!(
        stdout(&mut chroot(
            root,
            &[&format!("/usr/bin/{PACKAGE}"), "--version"]
        )),
        version_line()
    );
    let conffiles = stdout(&mut chroot(
        root,
        &["dpkg-query", "-W", "-f=${Conffiles}", PACKAGE],
    ));
    assert!(
        conffiles.contains(&format!("/etc/default/{PACKAGE} ")),
        "the environment file is no conffile: {conffiles:?}"
    );
    assert_eq!(
        stdout(&mut chroot(root, &["man", "-w", PACKAGE])).trim(),
        format!("/usr/share/man/man1/{PACKAGE}.1.gz"),
        "man does not find the page the unit's Documentation= names"
    );

    // Clean for systemd: its warnings (an unknown key) do not fail verify,
    // so it must say nothing at all. (`man -w` above checked the man page:
    // verify's own check would leave a formatted copy in man's cache.)
    let unit_path = format!("/usr/lib/systemd/system/{UNIT}");
    let verify = output(&mut chroot(
        root,
        &["systemd-analyze", "verify", "--man=no", &unit_path],
    ));
    let said = String::from_utf8_lossy(&[verify.stdout, verify.stderr].concat()).into_owned();
    assert!(
        verify.status.success() && said.trim().is_empty(),
        "systemd-analyze verify {unit_path} ({}):\n{said}",
        verify.status
    );
    let is_enabled = |root: &Path| {
        let out = output(&mut chroot(root, &["systemctl", "is-enabled", UNIT]));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(is_enabled(root), "disabled", "installing enabled the unit");
    // An admin enables it; the purge must take its links away too.
    stdout(&mut chroot(root, &["systemctl", "enable", UNIT]));
    assert_eq!(is_enabled(root), "enabled");

    stdout(&mut chroot(root, &["dpkg", "--purge", PACKAGE]));
    let after = tree(root);
    // /run is volatile (verify wrote there); /var/cache/man is man-db's, whose
    // trigger indexed the page.
    let outside_caches = |p: &&PathBuf| !p.starts_with("run") && !p.starts_with("var/cache/man");
    let added: Vec<&PathBuf> = after.difference(&before).filter(outside_caches).collect();
    let removed: Vec<&PathBuf> = before.difference(&after).collect();
    let named: Vec<&PathBuf> = after
        .iter()
        .filter(|p| p.to_string_lossy().contains(PACKAGE))
        .collect();
    assert!(
        added.is_empty() && removed.is_empty() && named.is_empty(),
        "the purge left the root changed:\nadded: {added:?}\nremoved: {removed:?}\nnamed after the package: {named:?}"
    );
}
