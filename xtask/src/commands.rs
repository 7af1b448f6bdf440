//! Running commands: every child gets a PATH that includes cargo's bin directory
//! (bpf-linker lives there), and a failure names the command that failed.

use std::{
    env,
    ffi::OsString,
    path::PathBuf,
    process::{Command, Output, Stdio},
};

use anyhow::{Context as _, Result, bail};

/// `$CARGO_HOME/bin`, or `~/.cargo/bin`.
pub fn cargo_bin_dir() -> Option<PathBuf> {
    if let Some(home) = env::var_os("CARGO_HOME").filter(|h| !h.is_empty()) {
        return Some(PathBuf::from(home).join("bin"));
    }
    env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".cargo").join("bin"))
}

/// This process's PATH with cargo's bin directory appended when it is missing.
pub fn child_path() -> OsString {
    let current = env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = env::split_paths(&current).collect();
    if let Some(bin) = cargo_bin_dir()
        && !dirs.contains(&bin)
    {
        dirs.push(bin);
    }
    env::join_paths(dirs).unwrap_or(current)
}

/// A command whose PATH (used for the program lookup too) includes cargo's bin.
pub fn command(program: impl Into<OsString>) -> Command {
    let mut cmd = Command::new(program.into());
    cmd.env("PATH", child_path());
    cmd
}

/// `cargo` (the rustup proxy on PATH, as a user would run it).
pub fn cargo() -> Command {
    command("cargo")
}

/// The command line, with the environment variables it sets (except PATH), for
/// messages.
pub fn describe(cmd: &Command) -> String {
    let mut parts = Vec::new();
    for (key, value) in cmd.get_envs() {
        if key == "PATH" {
            continue;
        }
        if let Some(value) = value {
            parts.push(format!(
                "{}={}",
                key.to_string_lossy(),
                quote(&value.to_string_lossy())
            ));
        }
    }
    parts.push(quote(&cmd.get_program().to_string_lossy()));
    parts.extend(cmd.get_args().map(|a| quote(&a.to_string_lossy())));
    parts.join(" ")
}

/// `s` quoted for a POSIX shell (as it is when nothing in it needs quoting).
pub fn quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Run with inherited stdio; fail unless it exits 0.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("could not start `{}`", describe(cmd)))?;
    if !status.success() {
        bail!("command failed ({status}): `{}`", describe(cmd));
    }
    Ok(())
}

/// Whether the command can be started and exits 0 (its output is discarded).
pub fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Run capturing stdout and stderr; fail (showing stderr) unless it exits 0.
pub fn output(cmd: &mut Command) -> Result<Output> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("could not start `{}`", describe(cmd)))?;
    if !out.status.success() {
        bail!(
            "command failed ({}): `{}`\n{}{}",
            out.status,
            describe(cmd),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}

/// Stdout of a successful run, as text.
pub fn stdout(cmd: &mut Command) -> Result<String> {
    Ok(String::from_utf8_lossy(&output(cmd)?.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_quotes_and_shows_env() {
        let mut cmd = Command::new("cargo");
        cmd.args(["install", "a b", "it's"])
            .env("LLVM_PREFIX", "/usr/lib/llvm-22");
        assert_eq!(
            describe(&cmd),
            r"LLVM_PREFIX=/usr/lib/llvm-22 cargo install 'a b' 'it'\''s'"
        );
    }

    #[test]
    fn child_path_has_cargo_bin() {
        let path = child_path();
        let bin = cargo_bin_dir().unwrap();
        assert!(env::split_paths(&path).any(|p| p == bin));
    }
}
