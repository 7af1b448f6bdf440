//! Where and how to publish: `--redis-url`, or gunicorn-prometheus-exporter's
//! REDIS_* variables (so a deployment of the plugin switches over unchanged).

use std::time::Duration;

use clap::{Args, builder::BoolishValueParser};
use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo as _, RedisConnectionInfo};
use thiserror::Error;

/// The Redis options, shared by the exporter and `aggregate`.
#[derive(Clone, Debug, Default, Args)]
pub struct RedisArgs {
    /// Publish this exporter's series to Redis (`aggregate` reads them):
    /// `redis://[user:pass@]host:port/db`, `rediss://` for TLS. Without it,
    /// REDIS_ENABLED=true builds one from REDIS_HOST, REDIS_PORT, REDIS_DB
    /// and REDIS_PASSWORD (gunicorn-prometheus-exporter's settings).
    #[arg(long, value_name = "URL", help_heading = "Redis")]
    pub redis_url: Option<String>,

    /// Publish to Redis without --redis-url (true/false, 1/0, yes/no, on/off).
    #[arg(long, env = "REDIS_ENABLED", value_name = "BOOL", value_parser = BoolishValueParser::new(), help_heading = "Redis")]
    pub redis_enabled: Option<bool>,

    /// Redis host, without --redis-url.
    #[arg(
        long,
        value_name = "HOST",
        env = "REDIS_HOST",
        default_value = "127.0.0.1",
        help_heading = "Redis"
    )]
    pub redis_host: String,

    /// Redis port, without --redis-url.
    #[arg(
        long,
        value_name = "PORT",
        env = "REDIS_PORT",
        default_value_t = 6379,
        help_heading = "Redis"
    )]
    pub redis_port: u16,

    /// Redis database number, without --redis-url.
    #[arg(
        long,
        value_name = "N",
        env = "REDIS_DB",
        default_value_t = 0,
        help_heading = "Redis"
    )]
    pub redis_db: i64,

    /// Password of the default user (prefer the variable: a flag shows in `ps`).
    #[arg(
        long,
        value_name = "PASSWORD",
        env = "REDIS_PASSWORD",
        hide_env_values = true,
        help_heading = "Redis"
    )]
    pub redis_password: Option<String>,

    /// Keys are `<prefix>:exporter:<instance>`, listed in the sorted set
    /// `<prefix>:exporter:instances`.
    #[arg(
        long,
        value_name = "PREFIX",
        env = "REDIS_KEY_PREFIX",
        default_value = "gunicorn",
        help_heading = "Redis"
    )]
    pub redis_key_prefix: String,

    /// Seconds an instance's snapshot outlives its last write: an exporter
    /// gone this long leaves the aggregate.
    #[arg(
        long,
        value_name = "SECONDS",
        env = "REDIS_TTL_SECONDS",
        default_value_t = 300,
        help_heading = "Redis"
    )]
    pub redis_ttl_seconds: u64,

    /// Snapshots never expire (a stopped exporter's series stay in the
    /// aggregate until its key is deleted by hand).
    #[arg(long, env = "REDIS_TTL_DISABLED", value_name = "BOOL", value_parser = BoolishValueParser::new(), num_args = 0..=1, default_missing_value = "true", help_heading = "Redis")]
    pub redis_ttl_disabled: Option<bool>,

    /// How often the snapshot is published (one round trip each time).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "5s", help_heading = "Redis")]
    pub redis_interval: Duration,
}

/// Resolved Redis settings.
#[derive(Clone, Debug)]
pub struct RedisConfig {
    pub connection: ConnectionInfo,
    pub prefix: String,
    /// `None`: snapshots never expire.
    pub ttl: Option<Duration>,
    pub interval: Duration,
}

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("--redis-url: {0}")]
    Url(String),
    #[error("--redis-interval must be at least 10ms")]
    Interval,
    #[error(
        "REDIS_TTL_SECONDS ({ttl} s) must be at least twice --redis-interval ({interval:?}), or a live exporter would blink out of the aggregate"
    )]
    TtlTooShort { ttl: u64, interval: Duration },
    #[error("REDIS_KEY_PREFIX must not be empty")]
    Prefix,
}

impl RedisArgs {
    /// The settings, or `None` when Redis is off (no --redis-url and
    /// REDIS_ENABLED unset or false). An explicit --redis-url turns it on.
    pub fn resolve(&self) -> Result<Option<RedisConfig>, ConfigError> {
        let password = self.redis_password.clone().filter(|p| !p.is_empty());
        let connection = match &self.redis_url {
            Some(url) => {
                let mut connection = url
                    .as_str()
                    .into_connection_info()
                    // The parser's messages never include the URL (nor its password).
                    .map_err(|e| ConfigError::Url(e.to_string()))?;
                // A URL without a password takes REDIS_PASSWORD's, so the
                // secret need not be on the command line.
                if connection.redis.password.is_none() {
                    connection.redis.password = password;
                }
                connection
            }
            None if self.redis_enabled == Some(true) => ConnectionInfo {
                addr: ConnectionAddr::Tcp(self.redis_host.clone(), self.redis_port),
                redis: RedisConnectionInfo {
                    db: self.redis_db,
                    password,
                    ..Default::default()
                },
            },
            None => return Ok(None),
        };
        if self.redis_interval < Duration::from_millis(10) {
            return Err(ConfigError::Interval);
        }
        let ttl = match self.redis_ttl_disabled {
            Some(true) => None,
            _ => {
                if Duration::from_secs(self.redis_ttl_seconds) < 2 * self.redis_interval {
                    return Err(ConfigError::TtlTooShort {
                        ttl: self.redis_ttl_seconds,
                        interval: self.redis_interval,
                    });
                }
                Some(Duration::from_secs(self.redis_ttl_seconds))
            }
        };
        if self.redis_key_prefix.is_empty() {
            return Err(ConfigError::Prefix);
        }
        Ok(Some(RedisConfig {
            connection,
            prefix: self.redis_key_prefix.clone(),
            ttl,
            interval: self.redis_interval,
        }))
    }
}

impl RedisConfig {
    /// Where, for log lines: scheme, user, address and db, never the password.
    pub fn describe(&self) -> String {
        let (scheme, addr) = match &self.connection.addr {
            ConnectionAddr::Tcp(host, port) => ("redis", format!("{host}:{port}")),
            ConnectionAddr::TcpTls { host, port, .. } => ("rediss", format!("{host}:{port}")),
            ConnectionAddr::Unix(path) => ("redis+unix", path.display().to_string()),
        };
        let user = match &self.connection.redis.username {
            Some(user) => format!("{user}@"),
            None => String::new(),
        };
        format!("{scheme}://{user}{addr}/{}", self.connection.redis.db)
    }

    /// The sorted set of live instances (score: when the snapshot expires).
    pub fn index_key(&self) -> String {
        format!("{}:exporter:instances", self.prefix)
    }

    /// The key of an instance's snapshot.
    pub fn snapshot_key(&self, instance: &str) -> String {
        format!("{}:exporter:{instance}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        redis: RedisArgs,
    }

    fn resolve(args: &[&str]) -> Result<Option<RedisConfig>, ConfigError> {
        let mut argv = vec!["x"];
        argv.extend(args);
        Cli::try_parse_from(argv).unwrap().redis.resolve()
    }

    #[test]
    fn off_unless_a_url_or_enabled() {
        assert!(resolve(&[]).unwrap().is_none());
        assert!(
            resolve(&["--redis-enabled", "false", "--redis-host", "h"])
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn url_with_credentials_and_db() {
        let c = resolve(&["--redis-url", "redis://bob:s3cret@cache:6380/2"])
            .unwrap()
            .unwrap();
        assert_eq!(c.describe(), "redis://bob@cache:6380/2");
        assert_eq!(c.connection.redis.password.as_deref(), Some("s3cret"));
        assert_eq!(
            (c.prefix.as_str(), c.ttl),
            ("gunicorn", Some(Duration::from_secs(300)))
        );
        assert_eq!(c.interval, Duration::from_secs(5));
        let c = resolve(&["--redis-url", "rediss://cache:6390"])
            .unwrap()
            .unwrap();
        assert_eq!(c.describe(), "rediss://cache:6390/0");
        // REDIS_PASSWORD fills in a URL without one, and only then.
        let c = resolve(&["--redis-url", "redis://u@cache", "--redis-password", "env"])
            .unwrap()
            .unwrap();
        assert_eq!(c.connection.redis.password.as_deref(), Some("env"));
        let c = resolve(&[
            "--redis-url",
            "redis://:url@cache",
            "--redis-password",
            "env",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(c.connection.redis.password.as_deref(), Some("url"));
        assert!(matches!(
            resolve(&["--redis-url", "http://cache"]),
            Err(ConfigError::Url(_))
        ));
    }

    #[test]
    fn the_plugin_settings_build_the_connection() {
        let c = resolve(&[
            "--redis-enabled",
            "yes",
            "--redis-host",
            "10.0.0.5",
            "--redis-port",
            "6400",
            "--redis-db",
            "3",
            "--redis-password",
            "pw",
            "--redis-key-prefix",
            "app1",
            "--redis-ttl-seconds",
            "60",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(c.describe(), "redis://10.0.0.5:6400/3");
        assert_eq!(c.connection.redis.password.as_deref(), Some("pw"));
        assert_eq!(c.index_key(), "app1:exporter:instances");
        assert_eq!(c.snapshot_key("h:a:1:2:3"), "app1:exporter:h:a:1:2:3");
        assert_eq!(c.ttl, Some(Duration::from_secs(60)));
    }

    #[test]
    fn ttl_disabled_or_too_short() {
        let c = resolve(&["--redis-url", "redis://h", "--redis-ttl-disabled"])
            .unwrap()
            .unwrap();
        assert_eq!(c.ttl, None);
        assert!(matches!(
            resolve(&["--redis-url", "redis://h", "--redis-ttl-seconds", "5"]),
            Err(ConfigError::TtlTooShort { .. })
        ));
        let c = resolve(&[
            "--redis-url",
            "redis://h",
            "--redis-ttl-seconds",
            "1",
            "--redis-interval",
            "200ms",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(c.interval, Duration::from_millis(200));
    }
}
