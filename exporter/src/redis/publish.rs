//! The publish task: every interval, the exporter's whole exposition (what
//! /metrics serves) goes to Redis in one pipelined round trip, off every
//! request path. One snapshot at a time, never a queue: when Redis is down,
//! slow, restarted or wiped the next snapshot simply replaces what was lost.

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use prometheus::{IntCounterVec, Opts, Registry};
use redis::{AsyncConnectionConfig, RedisError, aio::MultiplexedConnection};

use super::{
    config::RedisConfig,
    identity::Identity,
    snapshot::{self, Snapshot},
};
use crate::scrape::{exposition::name, server};

/// How long connecting, and one round trip, may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest wait between attempts while Redis fails.
const BACKOFF_CAP: Duration = Duration::from_secs(30);

/// Why a publish failed: the `kind` label of `gunicorn_exporter_redis_errors_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Connection refused, host unknown or unreachable.
    Connect,
    /// Wrong password or user, or a password missing.
    Auth,
    /// The user's ACL denies a command or key.
    Acl,
    /// No answer in time.
    Timeout,
    /// The connection broke.
    Io,
    /// Redis answered with another error (OOM, READONLY replica, LOADING...).
    Response,
}

impl Failure {
    pub const ALL: [Failure; 6] = [
        Failure::Connect,
        Failure::Auth,
        Failure::Acl,
        Failure::Timeout,
        Failure::Io,
        Failure::Response,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Failure::Connect => "connect",
            Failure::Auth => "auth",
            Failure::Acl => "acl",
            Failure::Timeout => "timeout",
            Failure::Io => "io",
            Failure::Response => "response",
        }
    }

    /// `connecting`: the error came while opening the connection.
    pub fn of(e: &RedisError, connecting: bool) -> Failure {
        match (e.kind(), e.code()) {
            (redis::ErrorKind::AuthenticationFailed, _) => Failure::Auth,
            (_, Some("NOAUTH" | "WRONGPASS")) => Failure::Auth,
            (_, Some("NOPERM")) => Failure::Acl,
            _ if e.is_timeout() => Failure::Timeout,
            _ if e.is_io_error() && connecting => Failure::Connect,
            _ if e.is_io_error() => Failure::Io,
            _ => Failure::Response,
        }
    }

    /// What an operator should check, after the error itself.
    fn hint(self) -> &'static str {
        match self {
            Failure::Connect => "is Redis running and reachable at that address?",
            Failure::Auth => "check the password (REDIS_PASSWORD or the URL's user:pass)",
            Failure::Acl => {
                "the user's ACL must allow SET, ZADD, ZREMRANGEBYSCORE and PEXPIRE on the prefix's keys"
            }
            Failure::Timeout => "Redis did not answer in time",
            Failure::Io => "the connection to Redis broke",
            Failure::Response => "Redis refused the write",
        }
    }
}

/// `gunicorn_exporter_redis_errors_total{kind}`, every kind present from the start.
#[derive(Clone)]
pub struct Errors(IntCounterVec);

impl Errors {
    pub fn register(registry: &Registry) -> prometheus::Result<Errors> {
        let counter = IntCounterVec::new(
            Opts::new(
                name::REDIS_ERRORS,
                "Failed Redis publishes (exporter) or reads (aggregate), by kind: connect, auth, acl, timeout, io, response.",
            ),
            &["kind"],
        )?;
        for kind in Failure::ALL {
            counter.with_label_values(&[kind.as_str()]);
        }
        registry.register(Box::new(counter.clone()))?;
        Ok(Errors(counter))
    }

    pub fn count(&self, failure: Failure) {
        self.0.with_label_values(&[failure.as_str()]).inc();
    }
}

/// Exponential backoff from the interval up to [`BACKOFF_CAP`] (or the
/// interval, if longer).
#[derive(Debug)]
pub struct Backoff {
    first: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(first: Duration) -> Backoff {
        Backoff { first, next: first }
    }

    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(BACKOFF_CAP.max(self.first));
        delay
    }

    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

/// What the log last said: one line per change of state, not per attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Health {
    Starting,
    Publishing,
    Failing(Failure),
}

/// A connection to Redis, opened on demand and dropped on any error.
pub struct Link {
    client: redis::Client,
    connection: Option<MultiplexedConnection>,
}

impl Link {
    pub fn new(config: &RedisConfig) -> Result<Link, RedisError> {
        Ok(Link {
            client: redis::Client::open(config.connection.clone())?,
            connection: None,
        })
    }

    /// Runs `pipe` (opening the connection first if needed); on error the
    /// connection is dropped, so the next call starts afresh.
    pub async fn query<T: redis::FromRedisValue>(
        &mut self,
        pipe: &redis::Pipeline,
    ) -> Result<T, (Failure, RedisError)> {
        let connection = match &mut self.connection {
            Some(c) => c,
            None => {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(CONNECT_TIMEOUT)
                    .set_response_timeout(RESPONSE_TIMEOUT);
                let c = self
                    .client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .map_err(|e| (Failure::of(&e, true), e))?;
                self.connection.insert(c)
            }
        };
        let result = pipe.query_async(connection).await;
        result.map_err(|e| {
            self.connection = None;
            (Failure::of(&e, false), e)
        })
    }
}

/// Publishes `registry`'s exposition as `identity` every interval, for good.
pub async fn run(config: RedisConfig, identity: Identity, registry: Arc<Registry>, errors: Errors) {
    let instance = identity.instance();
    let key = config.snapshot_key(&instance);
    let mut link = match Link::new(&config) {
        Ok(link) => link,
        Err(e) => {
            log::error!("redis: {}: {e}; not publishing", config.describe());
            return;
        }
    };
    let mut health = Health::Starting;
    let mut backoff = Backoff::new(config.interval);
    let mut tick = tokio::time::interval(config.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seq = 0u64;
    loop {
        tick.tick().await;
        let registry = registry.clone();
        let body = tokio::task::spawn_blocking(move || server::encode(&registry))
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
        let body = match body {
            Ok(body) => body,
            Err(e) => {
                log::warn!("redis: rendering the snapshot: {e}");
                continue;
            }
        };
        seq += 1;
        let snapshot = Snapshot {
            seq,
            exposition: &String::from_utf8_lossy(&body),
        }
        .render();
        let pipe = snapshot::write(
            &config,
            &instance,
            &key,
            &snapshot,
            unix_ms(SystemTime::now()),
        );
        match link.query::<()>(&pipe).await {
            Ok(()) => {
                if health != Health::Publishing {
                    log::info!(
                        "redis: publishing every {:?} to {} as {key}",
                        config.interval,
                        config.describe()
                    );
                }
                health = Health::Publishing;
                backoff.reset();
            }
            Err((failure, e)) => {
                errors.count(failure);
                if health != Health::Failing(failure) {
                    log::warn!(
                        "redis: publishing to {} failed ({}): {e}; {}; serving locally, retrying with backoff",
                        config.describe(),
                        failure.as_str(),
                        failure.hint()
                    );
                }
                health = Health::Failing(failure);
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}

pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(5));
        let delays: Vec<u64> = (0..5).map(|_| b.next_delay().as_secs()).collect();
        assert_eq!(delays, [5, 10, 20, 30, 30]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_secs(5));
        // An interval longer than the cap is the wait.
        let mut b = Backoff::new(Duration::from_secs(60));
        assert_eq!(
            (b.next_delay(), b.next_delay()),
            (Duration::from_secs(60), Duration::from_secs(60))
        );
    }

    #[test]
    fn failures_are_classified() {
        let io = |kind| RedisError::from(std::io::Error::from(kind));
        assert_eq!(
            Failure::of(&io(std::io::ErrorKind::ConnectionRefused), true),
            Failure::Connect
        );
        assert_eq!(
            Failure::of(&io(std::io::ErrorKind::ConnectionReset), false),
            Failure::Io
        );
        assert_eq!(
            Failure::of(&io(std::io::ErrorKind::TimedOut), false),
            Failure::Timeout
        );
        let auth = RedisError::from((
            redis::ErrorKind::AuthenticationFailed,
            "Password authentication failed",
        ));
        assert_eq!(Failure::of(&auth, true), Failure::Auth);
        let server =
            |code: &str| redis::make_extension_error(code.to_string(), Some("denied".to_string()));
        assert_eq!(Failure::of(&server("NOPERM"), false), Failure::Acl);
        assert_eq!(Failure::of(&server("NOAUTH"), false), Failure::Auth);
        assert_eq!(Failure::of(&server("WRONGPASS"), true), Failure::Auth);
        let oom = RedisError::from((redis::ErrorKind::ResponseError, "OOM"));
        assert_eq!(Failure::of(&oom, false), Failure::Response);
    }
}
