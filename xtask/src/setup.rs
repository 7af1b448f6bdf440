//! `cargo xtask setup`: install what is missing, detect what is there.
//!
//! 1. nightly toolchain with rust-src (the eBPF crate is built with
//!    `-Z build-std=core`),
//! 2. LLVM 22 dev packages (bpf-linker links against them),
//! 3. bpf-linker,
//! 4. the static build's Rust target (musl),
//! 5. tracefs mounted on /sys/kernel/tracing (aya resolves tracepoint ids there),
//! 6. wrk (tests and benchmarks),
//! 7. nginx, memcached and redis-server (the tests' stacks: a reverse proxy
//!    in front of Gunicorn, a cache its apps talk to, the Redis exporters
//!    publish to; the tests start their own processes on free ports and never
//!    use the system services), and iproute2's `ss`
//!    (the tests read a server socket's send buffer size with it),
//! 8. Prometheus and promtool (the tests check the alert rules and the
//!    exposition with promtool and run the dashboard's queries in a
//!    Prometheus of their own),
//! 9. debootstrap and systemd-analyze, and the minimal Debian root made with
//!    the first (cached outside the clone): the package tests install the .deb
//!    in a copy of it and verify its unit with the second,
//! 10. bpftool (the clean-exit tests list the kernel's BPF objects with it; the
//!     benchmark names programs with it),
//! 11. the Python venvs with the pinned Gunicorn versions;
//!
//! and with `--bench` (what `cargo xtask bench` runs first) also what only the
//! benchmark needs: the gunicorn 23 + gunicorn-prometheus-exporter venv;
//! with `--vm` (what `cargo xtask vmtest` runs first) what booting other
//! kernels needs: QEMU, kmod (depmod) and a static busybox (virtme-ng builds
//! its initramfs with them) and the virtme-ng venv.

use std::path::Path;

use anyhow::{Context as _, Result, bail};
use clap::Args;

use crate::{
    commands::{self, cargo, cargo_bin_dir, command},
    dist::{self, MUSL_TARGET},
    venv, workspace_root,
};

pub const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
const LLVM_PACKAGES: &[&str] = &["llvm-22-dev", "libpolly-22-dev", "libclang-22-dev"];
const BPF_LINKER_VERSION: &str = "0.13.0";
const TRACEFS: &str = "/sys/kernel/tracing";
/// Where Debian's nginx and memcached packages install their daemons (the
/// tests get these paths from `cargo xtask test`).
pub const NGINX: &str = "/usr/sbin/nginx";
pub const MEMCACHED: &str = "/usr/bin/memcached";
pub const REDIS_SERVER: &str = "/usr/bin/redis-server";
/// Where Debian's prometheus package installs the server and promtool.
pub const PROMETHEUS: &str = "/usr/bin/prometheus";
pub const PROMTOOL: &str = "/usr/bin/promtool";
/// Where Debian's bpftool package installs it (the tests look there).
pub const BPFTOOL: &str = "/usr/sbin/bpftool";

#[derive(Debug, Default, Args)]
pub struct Options {
    /// Also what `cargo xtask bench` needs: the plugin venv.
    #[arg(long)]
    pub bench: bool,
    /// Also what `cargo xtask vmtest` needs: QEMU, kmod, busybox-static, virtme-ng.
    #[arg(long)]
    pub vm: bool,
}

pub fn run(opts: Options) -> Result<()> {
    let mut apt = Apt::default();
    toolchain(&mut apt)?;
    tracefs()?;
    wrk(&mut apt)?;
    stack_servers(&mut apt)?;
    prometheus(&mut apt)?;
    package_tests(&mut apt)?;
    bpftool(&mut apt)?;
    venv::run(venv::Options::default())?;
    if opts.bench {
        bench()?;
    }
    if opts.vm {
        vm(&mut apt)?;
    }
    println!("setup: done");
    Ok(())
}

/// Only what building the exporter needs, the static build included (what
/// `cargo xtask dist` runs first).
pub fn toolchain_only() -> Result<()> {
    toolchain(&mut Apt::default())
}

fn toolchain(apt: &mut Apt) -> Result<()> {
    nightly()?;
    llvm(apt)?;
    bpf_linker()?;
    musl_target()
}

/// Only what the benchmark adds to the rest of setup (`cargo xtask bench` runs
/// the rest through `cargo xtask build` first).
pub fn bench_only() -> Result<()> {
    bench()
}

/// The benchmark's own needs (after the rest of setup).
fn bench() -> Result<()> {
    // (redis-server and bpftool, which the bench also runs, are installed
    // for the tests.)
    venv::ensure_bench(false)
}

/// Only what booting kernels in VMs adds to the rest of setup (`cargo xtask
/// vmtest` runs the rest through `cargo xtask build` first).
pub fn vm_only() -> Result<()> {
    vm(&mut Apt::default())
}

/// Debian packages virtme-ng needs on the host (`qemu-system-x86_64`,
/// `depmod`, a static `busybox` for its initramfs).
const VM_PACKAGES: &[&str] = &["qemu-system-x86", "kmod", "busybox-static"];

fn vm(apt: &mut Apt) -> Result<()> {
    let missing: Vec<&str> = VM_PACKAGES
        .iter()
        .copied()
        .filter(|p| !installed(p))
        .collect();
    if missing.is_empty() {
        println!("setup: {}: present", VM_PACKAGES.join(" "));
    } else {
        println!("setup: installing {}...", missing.join(" "));
        // Recommends would pull in a desktop's worth of QEMU UI and firmware.
        apt.install_without_recommends(&missing)?;
    }
    venv::ensure_vm(false)
}

/// Whether dpkg has `package` installed.
fn installed(package: &str) -> bool {
    commands::stdout(command("dpkg-query").args(["-W", "-f=${Status}", package]))
        .is_ok_and(|status| status.trim() == "install ok installed")
}

/// apt-get, updating the package lists at most once per run.
#[derive(Default)]
struct Apt {
    updated: bool,
}

impl Apt {
    fn install(&mut self, packages: &[&str]) -> Result<()> {
        self.install_with(&[], packages)
    }

    fn install_without_recommends(&mut self, packages: &[&str]) -> Result<()> {
        self.install_with(&["--no-install-recommends"], packages)
    }

    fn install_with(&mut self, options: &[&str], packages: &[&str]) -> Result<()> {
        if !self.updated {
            println!("setup: apt-get update...");
            commands::run(
                command("apt-get")
                    .args(["update", "-q"])
                    .env("DEBIAN_FRONTEND", "noninteractive"),
            )
            .context("apt-get update failed (setup needs root and Debian's package registry)")?;
            self.updated = true;
        }
        commands::run(
            command("apt-get")
                .args(["install", "-y", "-q"])
                .args(options)
                .args(packages)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
        .with_context(|| format!("could not install {}", packages.join(" ")))
    }
}

fn nightly() -> Result<()> {
    if !commands::succeeds(command("rustup").args(["run", "nightly", "rustc", "--version"])) {
        println!("setup: installing the nightly toolchain with rust-src...");
        return commands::run(command("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
            "--component",
            "rust-src",
        ]));
    }
    let installed = commands::stdout(command("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))?;
    if installed
        .lines()
        .any(|l| l.trim() == "rust-src" || l.starts_with("rust-src-"))
    {
        println!("setup: nightly toolchain with rust-src: present");
        return Ok(());
    }
    println!("setup: adding rust-src to the nightly toolchain...");
    commands::run(command("rustup").args([
        "component",
        "add",
        "rust-src",
        "--toolchain",
        "nightly",
    ]))
}

/// One file of each LLVM package bpf-linker builds against.
const LLVM_FILES: &[&str] = &[
    "bin/llvm-config",
    "lib/libLLVM.so",
    "lib/libPolly.a",
    "include/clang",
];

fn llvm(apt: &mut Apt) -> Result<()> {
    if LLVM_FILES
        .iter()
        .all(|f| Path::new(LLVM_PREFIX).join(f).exists())
    {
        println!("setup: LLVM 22 ({LLVM_PREFIX}): present");
        return Ok(());
    }
    println!(
        "setup: installing LLVM 22 dev packages ({})...",
        LLVM_PACKAGES.join(" ")
    );
    apt.install(LLVM_PACKAGES)
}

fn bpf_linker_present() -> bool {
    if commands::succeeds(command("bpf-linker").arg("--version")) {
        return true;
    }
    cargo_bin_dir()
        .map(|bin| bin.join("bpf-linker"))
        .is_some_and(|path| commands::succeeds(command(path).arg("--version")))
}

fn bpf_linker() -> Result<()> {
    if bpf_linker_present() {
        println!("setup: bpf-linker: present");
        return Ok(());
    }
    println!("setup: installing bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (takes ~1 min)...");
    let install = |locked: bool| {
        let mut cmd = cargo();
        cmd.args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION]);
        if locked {
            cmd.arg("--locked");
        }
        // Its default feature wants LLVM 23; LLVM_PREFIX is needed for the link
        // (-lLLVM), LLVM_SYS_221_PREFIX for llvm-sys.
        cmd.args(["--no-default-features", "--features", "llvm-22"])
            .env("LLVM_PREFIX", LLVM_PREFIX)
            .env("LLVM_SYS_221_PREFIX", LLVM_PREFIX);
        commands::run(&mut cmd)
    };
    if let Err(e) = install(true) {
        println!("setup: `cargo install --locked` failed ({e:#}); retrying without --locked...");
        install(false)?;
    }
    if !bpf_linker_present() {
        bail!("bpf-linker was installed but `bpf-linker --version` still fails");
    }
    Ok(())
}

/// The static build's target for the toolchain cargo picks in the workspace
/// (no rust-toolchain file: rustup's default). No musl-gcc is needed: rustc
/// links musl's own static libc, and the one crate with C in it (ring) is
/// built with the host gcc (see `dist::build`).
fn musl_target() -> Result<()> {
    let rustup = || {
        let mut cmd = command("rustup");
        cmd.current_dir(workspace_root());
        cmd
    };
    let installed = commands::stdout(rustup().args(["target", "list", "--installed"]))?;
    if installed.lines().any(|l| l.trim() == MUSL_TARGET) {
        println!("setup: Rust target {MUSL_TARGET}: present");
        return Ok(());
    }
    println!("setup: adding the Rust target {MUSL_TARGET}...");
    commands::run(rustup().args(["target", "add", MUSL_TARGET]))
}

fn tracefs() -> Result<()> {
    if Path::new(TRACEFS).join("events").is_dir() {
        println!("setup: tracefs on {TRACEFS}: mounted");
        return Ok(());
    }
    println!("setup: mounting tracefs on {TRACEFS}...");
    commands::run(command("mount").args(["-t", "tracefs", "tracefs", TRACEFS])).with_context(
        || {
            format!(
                "could not mount tracefs on {TRACEFS} (needs root; the exporter needs it to \
             resolve tracepoints)"
            )
        },
    )?;
    if !Path::new(TRACEFS).join("events").is_dir() {
        bail!("mounted tracefs on {TRACEFS} but {TRACEFS}/events is still missing");
    }
    Ok(())
}

fn bpftool(apt: &mut Apt) -> Result<()> {
    if Path::new(BPFTOOL).is_file() {
        println!("setup: bpftool ({BPFTOOL}): present");
        return Ok(());
    }
    println!("setup: installing bpftool...");
    apt.install(&["bpftool"])?;
    if !Path::new(BPFTOOL).is_file() {
        bail!("installed bpftool but {BPFTOOL} is still missing");
    }
    Ok(())
}

fn wrk(apt: &mut Apt) -> Result<()> {
    if commands::succeeds(command("which").arg("wrk")) {
        println!("setup: wrk: present");
        return Ok(());
    }
    println!("setup: installing wrk...");
    apt.install(&["wrk"])
}

/// nginx, memcached and redis-server, from Debian's packages. Their postinst
/// may start the system services (not under a policy-rc.d that forbids it, as
/// in containers; redis's on 6379); the tests and the bench never use those:
/// they run their own on free ports.
fn stack_servers(apt: &mut Apt) -> Result<()> {
    for (binary, package) in [
        (NGINX, "nginx"),
        (MEMCACHED, "memcached"),
        (REDIS_SERVER, "redis-server"),
    ] {
        if Path::new(binary).is_file() {
            println!("setup: {package} ({binary}): present");
            continue;
        }
        println!("setup: installing {package}...");
        apt.install(&[package])?;
        if !Path::new(binary).is_file() {
            bail!("installed {package} but {binary} is still missing");
        }
    }
    if commands::succeeds(command("ss").arg("-V")) {
        println!("setup: ss: present");
    } else {
        println!("setup: installing iproute2 (ss)...");
        apt.install(&["iproute2"])?;
    }
    Ok(())
}

/// Debian's prometheus package (server and promtool). Without its
/// recommends: they would add a node exporter service the tests do not use;
/// like nginx's, the package's own service is never used either.
fn prometheus(apt: &mut Apt) -> Result<()> {
    if [PROMETHEUS, PROMTOOL]
        .iter()
        .all(|b| Path::new(b).is_file())
    {
        println!("setup: prometheus ({PROMETHEUS}, {PROMTOOL}): present");
        return Ok(());
    }
    println!("setup: installing prometheus...");
    apt.install_without_recommends(&["prometheus"])?;
    for binary in [PROMETHEUS, PROMTOOL] {
        if !Path::new(binary).is_file() {
            bail!("installed prometheus but {binary} is still missing");
        }
    }
    Ok(())
}

/// What the package tests run on the host: debootstrap (the throwaway Debian
/// root they install the .deb in) and systemd-analyze (which verifies the
/// installed unit; systemd is only a tool here: nothing starts it); then that
/// root.
fn package_tests(apt: &mut Apt) -> Result<()> {
    for (tool, package) in [
        ("debootstrap", "debootstrap"),
        ("systemd-analyze", "systemd"),
    ] {
        if commands::succeeds(command("which").arg(tool)) {
            println!("setup: {tool}: present");
        } else {
            println!("setup: installing {package} ({tool})...");
            apt.install(&[package])?;
        }
    }
    dist::debootstrap::ensure()
}
