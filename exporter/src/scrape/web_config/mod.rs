//! TLS, client certificates and basic auth on the metrics endpoint, from
//! `--web.config.file` (the Prometheus exporter-toolkit's format, a subset)
//! or gunicorn-prometheus-exporter's PROMETHEUS_SSL_* variables.
//!
//! Checked in full at start (a mistake is one error naming the setting). Like
//! the toolkit, which re-reads the file at each connection, every connection
//! and request looks whether a file read for the configuration changed (a
//! stat each, no read) and, if one did, loads it again on a blocking thread:
//! certificates are rotated and users added without a restart; a broken new
//! version is logged and the last good one stays in force.

mod basic_auth;
mod spec;
mod tls;

use std::{
    fmt, io,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use hyper::header::HeaderValue;
use rustls::ServerConfig;

use self::{
    basic_auth::{Gate, Users},
    spec::{ClientAuth, Spec},
};

/// A configuration that cannot work: where it came from, and why.
#[derive(Debug, thiserror::Error)]
#[error("{origin}: {problem}")]
pub struct WebConfigError {
    origin: String,
    problem: Problem,
}

#[derive(Debug, thiserror::Error)]
pub enum Problem {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{0}")]
    Yaml(serde_norway::Error),
    /// A setting (YAML field or variable) that cannot work, named.
    #[error("{setting}: {problem}")]
    Setting { setting: String, problem: String },
}

impl Problem {
    fn setting(setting: impl Into<String>, problem: impl Into<String>) -> Problem {
        Problem::Setting {
            setting: setting.into(),
            problem: problem.into(),
        }
    }
}

const ENV: &str = "the PROMETHEUS_SSL_* variables";

/// Where the configuration comes from.
#[derive(Clone, Debug)]
pub enum Source {
    File(PathBuf),
    /// Parsed once: the environment does not change under a process.
    Env(Arc<Spec>),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::File(path) => write!(f, "--web.config.file {}", path.display()),
            Source::Env(_) => f.write_str(ENV),
        }
    }
}

impl Source {
    /// `--web.config.file`, else the variables read through `var`, else
    /// nothing (plain HTTP, no auth). Both at once is refused: neither
    /// quietly overriding the other.
    pub fn new(
        file: Option<PathBuf>,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Source>, WebConfigError> {
        let env_error = |problem| WebConfigError {
            origin: ENV.into(),
            problem,
        };
        match file {
            Some(path) => match spec::configured_by(&var).map_err(env_error)? {
                Some(name) => Err(WebConfigError {
                    origin: Source::File(path).to_string(),
                    problem: Problem::setting(
                        name,
                        "also set: configure TLS in one place (drop the PROMETHEUS_SSL_* variables, or --web.config.file)",
                    ),
                }),
                None => Ok(Some(Source::File(path))),
            },
            None => Ok(Spec::from_env(var)
                .map_err(env_error)?
                .map(|spec| Source::Env(Arc::new(spec)))),
        }
    }

    /// Reads everything the configuration names and builds it.
    fn load(&self) -> Attempt {
        let mut files = Files::default();
        let settings = match self {
            Source::File(path) => files
                .read(path)
                .map_err(|source| Problem::Read {
                    path: path.clone(),
                    source,
                })
                .and_then(|bytes| {
                    let dir = path.parent().unwrap_or(Path::new("."));
                    Spec::from_yaml(&String::from_utf8_lossy(&bytes), dir)
                })
                .and_then(|spec| Settings::build(&spec, &mut files)),
            Source::Env(spec) => Settings::build(spec, &mut files),
        };
        Attempt {
            settings: settings.map(Arc::new).map_err(|problem| WebConfigError {
                origin: self.to_string(),
                problem,
            }),
            files,
        }
    }
}

/// One version of the configuration, ready to serve with.
#[derive(Debug)]
pub struct Settings {
    pub tls: Option<Arc<ServerConfig>>,
    client_auth: ClientAuth,
    users: Option<Users>,
}

impl Settings {
    fn build(spec: &Spec, files: &mut Files) -> Result<Settings, Problem> {
        Ok(Settings {
            tls: spec
                .tls
                .as_ref()
                .map(|tls| tls::server_config(tls, files))
                .transpose()?,
            client_auth: spec.tls.as_ref().map(|t| t.client_auth).unwrap_or_default(),
            users: Users::new(spec.users.clone())?,
        })
    }
}

impl fmt::Display for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.tls {
            Some(_) => write!(f, "TLS, client certificates: {}", self.client_auth)?,
            None => f.write_str("plain HTTP")?,
        }
        match &self.users {
            Some(users) if users.len() == 1 => f.write_str(", basic auth (1 user)"),
            Some(users) => write!(f, ", basic auth ({} users)", users.len()),
            None => f.write_str(", no basic auth"),
        }
    }
}

/// The live configuration of the endpoint.
pub struct WebConfig {
    source: Source,
    current: Mutex<Arc<Current>>,
    /// One reload at a time; the others wait for its outcome.
    reloading: tokio::sync::Mutex<()>,
    gate: Gate,
}

/// The settings in force, and the files the last load read (their state
/// then), which tell when to load again.
struct Current {
    settings: Arc<Settings>,
    files: Files,
}

/// Loaded settings, or why not, and what was read to try.
struct Attempt {
    settings: Result<Arc<Settings>, WebConfigError>,
    files: Files,
}

impl WebConfig {
    /// The first load: any problem is an error.
    pub fn new(source: Source) -> Result<WebConfig, WebConfigError> {
        let Attempt { settings, files } = source.load();
        Ok(WebConfig {
            source,
            current: Mutex::new(Arc::new(Current {
                settings: settings?,
                files,
            })),
            reloading: tokio::sync::Mutex::new(()),
            gate: Gate::new(),
        })
    }

    /// The settings in force, loaded again first if a file changed.
    pub async fn settings(&self) -> Arc<Settings> {
        let current = self.current();
        if !current.files.changed() {
            return current.settings.clone();
        }
        let _turn = self.reloading.lock().await;
        let current = self.current();
        if !current.files.changed() {
            return current.settings.clone();
        }
        let source = self.source.clone();
        let Ok(Attempt { settings, files }) =
            tokio::task::spawn_blocking(move || source.load()).await
        else {
            return current.settings.clone();
        };
        let settings = match settings {
            Ok(settings) => {
                log::info!("{} loaded again: {settings}", self.source);
                settings
            }
            Err(e) => {
                log::error!("{e}; the last good configuration stays in force");
                current.settings.clone()
            }
        };
        // After a failed load, its files (the web configuration file at least)
        // are what to watch: the next change to them is the next try.
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(Current {
            settings: settings.clone(),
            files,
        });
        settings
    }

    /// Whether a request may be served: always without basic auth, else with
    /// the credentials of a user in the settings in force.
    pub async fn admits(&self, authorization: Option<&HeaderValue>) -> bool {
        match &self.settings().await.users {
            None => true,
            Some(users) => self.gate.admits(users, authorization).await,
        }
    }

    pub fn describe(&self) -> String {
        format!("{} (from {})", self.current().settings, self.source)
    }

    pub fn tls(&self) -> bool {
        self.current().settings.tls.is_some()
    }

    fn current(&self) -> Arc<Current> {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// The files a load read, each with its state when opened (None: missing).
#[derive(Debug, Default)]
struct Files(Vec<(PathBuf, Option<Stamp>)>);

/// What tells one version of a file from the next: a rename over it (new
/// inode), a write (size, mtime) or a touch (ctime).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(path: &Path) -> Option<Stamp> {
        std::fs::metadata(path).ok().map(|m| Stamp::from(&m))
    }
}

impl From<&std::fs::Metadata> for Stamp {
    fn from(m: &std::fs::Metadata) -> Stamp {
        Stamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

impl Files {
    /// Reads `path`, noting its state as opened (so a change while reading
    /// shows as a change next time).
    fn read(&mut self, path: &Path) -> io::Result<Vec<u8>> {
        use std::io::Read as _;
        let opened = std::fs::File::open(path).and_then(|file| {
            let stamp = Stamp::from(&file.metadata()?);
            Ok((file, stamp))
        });
        let (mut file, stamp) = match opened {
            Ok(opened) => opened,
            Err(e) => {
                self.0.push((path.to_path_buf(), None));
                return Err(e);
            }
        };
        self.0.push((path.to_path_buf(), Some(stamp)));
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(bytes)
    }

    fn changed(&self) -> bool {
        self.0.iter().any(|(path, stamp)| Stamp::of(path) != *stamp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "$2y$04$F03F2nDNzbrhc.FKiars0OxnsesxNEfrRj5VAMRkHpQT42NwY9kya";

    /// A web configuration file in a directory of its own, removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let dir =
                std::env::temp_dir().join(format!("web-config-{name}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            Scratch(dir.join("web.yml"))
        }

        fn write(&self, yaml: &str) {
            std::fs::write(&self.0, yaml).unwrap();
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(self.0.parent().unwrap());
        }
    }

    fn users(settings: &Settings) -> usize {
        settings.users.as_ref().map_or(0, Users::len)
    }

    #[tokio::test]
    async fn a_changed_file_is_loaded_again_and_a_broken_one_kept_out() {
        let file = Scratch::new("reload");
        file.write("");
        let web = WebConfig::new(Source::File(file.0.clone())).unwrap();
        assert_eq!(users(&*web.settings().await), 0);

        file.write(&format!("basic_auth_users:\n  alice: {HASH}\n"));
        assert_eq!(users(&*web.settings().await), 1);

        file.write("basic_auth_users:\n  alice: not-a-hash\n");
        assert_eq!(
            users(&*web.settings().await),
            1,
            "the last good version stays"
        );

        file.write(&format!(
            "basic_auth_users:\n  alice: {HASH}\n  bob: {HASH}\n"
        ));
        assert_eq!(users(&*web.settings().await), 2);
    }

    #[test]
    fn a_file_and_the_variables_at_once_are_refused() {
        let env = |name: &str| (name == spec::KEYFILE).then(|| "/k".to_string());
        let e = Source::new(Some("/w.yml".into()), env)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("--web.config.file /w.yml: PROMETHEUS_SSL_KEYFILE: also set"),
            "{e}"
        );
        // A false PROMETHEUS_SSL_CLIENT_AUTH_REQUIRED asks for nothing.
        let env = |name: &str| (name == spec::AUTH_REQUIRED).then(|| "false".to_string());
        assert!(matches!(
            Source::new(Some("/w.yml".into()), env),
            Ok(Some(Source::File(_)))
        ));
        assert!(matches!(Source::new(None, |_| None), Ok(None)));
    }

    #[test]
    fn a_missing_file_is_an_error_naming_it() {
        let e = WebConfig::new(Source::File("/nonexistent/web.yml".into()))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("cannot read /nonexistent/web.yml"), "{e}");
    }
}
