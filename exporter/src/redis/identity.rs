//! Who publishes: the instance identity in every key. The exporter's own
//! start time is part of it, so a restarted exporter (whose counters start
//! again) is a new instance and the old one ages out by its TTL: an
//! instance's counters never go backwards.

use std::time::SystemTime;

use crate::procs::{self, ProcInfo};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub host: String,
    pub app: String,
    pub master_pid: u32,
    /// The master's start, Unix seconds: with the pid, one master even
    /// across pid reuse.
    pub master_start: u64,
    /// The exporter's start, Unix milliseconds.
    pub exporter_start: u64,
}

impl Identity {
    /// This host and exporter, attached to `master`.
    pub fn of(master: &ProcInfo, started: SystemTime) -> Identity {
        Identity {
            host: hostname(),
            app: app_name(&master.cmdline),
            master_pid: master.pid,
            master_start: procs::start_unix_secs(master.start_ticks),
            exporter_start: super::publish::unix_ms(started),
        }
    }

    /// This host and exporter in discovery mode, which watches every master:
    /// app `all`, master 0 (each series carries its own master's labels).
    pub fn node(started: SystemTime) -> Identity {
        Identity {
            host: hostname(),
            app: "all".into(),
            master_pid: 0,
            master_start: 0,
            exporter_start: super::publish::unix_ms(started),
        }
    }

    /// `host:app:master_pid:master_start:exporter_start`, the `instance`
    /// label and key suffix. Host and app never hold `:`, so the host is
    /// the part before the first one.
    pub fn instance(&self) -> String {
        format!(
            "{}:{}:{}:{}:{}",
            clean(&self.host),
            clean(&self.app),
            self.master_pid,
            self.master_start,
            self.exporter_start
        )
    }
}

/// The host name, as this UTS namespace (container) sees it.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// The app a master runs, from its command line: the name in
/// `gunicorn: master [name]` (setproctitle), else the last positional
/// argument (gunicorn's APP_MODULE, e.g. `myproject.wsgi:application`),
/// else `gunicorn`.
pub fn app_name(cmdline: &[String]) -> String {
    if let Some(first) = cmdline.first()
        && let Some(rest) = first.strip_prefix("gunicorn: master [")
        && let Some(name) = rest.strip_suffix(']')
    {
        return name.to_string();
    }
    match cmdline.last() {
        Some(last) if cmdline.len() > 1 && !last.starts_with('-') && !last.contains('/') => {
            last.clone()
        }
        // A last argument that is an option's value or a path (the
        // interpreter's script) is no app module.
        _ => "gunicorn".to_string(),
    }
}

/// Characters that would break the key layout or a label become `_`.
fn clean(s: &str) -> String {
    let cleaned: String = s
        .chars()
        .map(|c| {
            if c == ':' || c.is_whitespace() || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    if cleaned.is_empty() {
        "_".into()
    } else {
        cleaned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split(' ').map(String::from).collect()
    }

    #[test]
    fn app_from_the_command_line() {
        // setproctitle's title is one argument.
        assert_eq!(app_name(&["gunicorn: master [shop]".to_string()]), "shop");
        assert_eq!(
            app_name(&args(
                "/venv/bin/python /venv/bin/gunicorn -w 2 -b 127.0.0.1:8000 app:app"
            )),
            "app:app"
        );
        assert_eq!(
            app_name(&args("/venv/bin/python /venv/bin/gunicorn")),
            "gunicorn"
        );
        assert_eq!(app_name(&args("gunicorn --reload")), "gunicorn");
    }

    #[test]
    fn instance_keeps_its_separators() {
        let id = Identity {
            host: "web 1".into(),
            app: "app:app".into(),
            master_pid: 42,
            master_start: 1_700_000_000,
            exporter_start: 1_700_000_001_234,
        };
        assert_eq!(id.instance(), "web_1:app_app:42:1700000000:1700000001234");
        assert_eq!(clean(""), "_");
    }
}
