//! Log lines on stderr: human text, or one JSON object per line.

use std::{io::Write as _, sync::OnceLock};

use crate::{cli::LogFormat, lifecycle::Occurrence};

static FORMAT: OnceLock<LogFormat> = OnceLock::new();

pub fn init(format: LogFormat) {
    let _ = FORMAT.set(format);
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    if format == LogFormat::Json {
        builder.format(|out, record| {
            let line = serde_json::json!({
                "ts": out.timestamp_millis().to_string(),
                "level": record.level().as_str(),
                "target": record.target(),
                "msg": record.args().to_string(),
            });
            writeln!(out, "{line}")
        });
    }
    builder.init();
}

/// One line per hook Gunicorn ran, with its structured fields.
pub fn hook(o: &Occurrence) {
    if !log::log_enabled!(target: "hook", log::Level::Info) {
        return;
    }
    let signal = o.signal.map(crate::lifecycle::sig::name);
    let reason = o.reason.map(|r| r.name());
    if FORMAT.get() == Some(&LogFormat::Json) {
        let line = serde_json::json!({
            "ts": humantime_now(),
            "level": "INFO",
            "event": "hook",
            "hook": o.hook.name(),
            "master_pid": o.master,
            "worker_pid": o.worker,
            "signal": signal,
            "exit_status": o.status,
            "reason": reason,
        });
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    } else {
        let dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
        log::info!(
            target: "hook",
            "{} master={} worker={} signal={} status={} reason={}",
            o.hook.name(),
            o.master,
            dash(o.worker.map(|p| p.to_string())),
            dash(signal),
            dash(o.status.map(|s| s.to_string())),
            dash(reason.map(str::to_string)),
        );
    }
}

fn humantime_now() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}
