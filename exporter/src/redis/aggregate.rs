//! `gunicorn-ebpf-exporter aggregate`: serves the merged exposition of every
//! live instance in Redis (gunicorn-prometheus-exporter's sidecar role), each
//! sample labelled with its `instance` and `host`. Read at each scrape (two
//! round trips: the index, then every snapshot); it only reads, so a
//! read-only ACL user will do.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::{Arc, Mutex},
};

use anyhow::Context as _;
use clap::Args;
use prometheus::Registry;

use super::{
    config::{RedisArgs, RedisConfig},
    identity,
    merge::{self, Part},
    publish::{Errors, Failure, Link},
    snapshot,
};
use crate::{
    cli::LogFormat,
    scrape::{
        server::{self, NoExposition, Rendered, Source},
        web_config::{self, WebConfig},
    },
};

/// The `instance` label of the aggregate's own series.
pub const AGGREGATE: &str = "aggregate";

/// Serve the merged series of every exporter publishing to Redis.
#[derive(Debug, Args)]
pub struct AggregateOptions {
    #[command(flatten)]
    pub redis: RedisArgs,

    /// Address to serve /metrics on.
    #[arg(long, env = "PROMETHEUS_BIND_ADDRESS", default_value = "0.0.0.0")]
    pub bind: IpAddr,

    /// Port to serve /metrics on.
    #[arg(long, env = "PROMETHEUS_METRICS_PORT", default_value_t = 9091)]
    pub port: u16,

    /// TLS and basic auth for /metrics, as the exporter's.
    #[arg(long = "web.config.file", value_name = "PATH")]
    pub web_config_file: Option<PathBuf>,

    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

pub fn run(options: AggregateOptions) -> anyhow::Result<()> {
    let config = options.redis.resolve()?.context(
        "aggregate reads Redis: give --redis-url, or REDIS_ENABLED=true and REDIS_HOST...",
    )?;
    let web = web_config::Source::new(options.web_config_file.clone(), |name| {
        std::env::var(name).ok()
    })?
    .map(WebConfig::new)
    .transpose()?
    .map(Arc::new);
    let addr = SocketAddr::new(options.bind, options.port);
    let listener = std::net::TcpListener::bind(addr)
        .with_context(|| format!("cannot listen on {addr} (choose another --port)"))?;
    listener.set_nonblocking(true)?;
    let own = Registry::new();
    let errors = Errors::register(&own)?;
    let fleet = Fleet {
        link: tokio::sync::Mutex::new(Link::new(&config).context("Redis client")?),
        failing: Mutex::new(None),
        served: Mutex::new(HashMap::new()),
        own,
        host: identity::hostname(),
        errors,
        config,
    };
    log::info!(
        "aggregating the instances under {} in {}; serving http://{addr}/metrics",
        fleet.config.index_key(),
        fleet.config.describe()
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            result = server::serve(listener, Arc::new(fleet), web) => result.context("serving /metrics"),
            _ = tokio::signal::ctrl_c() => Ok(()),
            _ = terminate.recv() => Ok(()),
        }
    })
}

/// The instances in Redis, as a source of /metrics.
struct Fleet {
    config: RedisConfig,
    link: tokio::sync::Mutex<Link>,
    /// The failure the log last reported (one line per change).
    failing: Mutex<Option<Failure>>,
    /// Each live instance's last served snapshot, by instance: a snapshot
    /// older than it (lower sequence) is not served.
    served: Mutex<HashMap<String, (u64, Arc<str>)>>,
    /// The aggregate's own series (its Redis errors).
    own: Registry,
    host: String,
    errors: Errors,
}

impl Source for Fleet {
    fn render(self: Arc<Self>) -> Rendered {
        Box::pin(async move {
            let snapshots = self.read().await.map_err(NoExposition::Unavailable)?;
            let own = String::from_utf8_lossy(&server::encode(&self.own)?).into_owned();
            Ok(self.merge(snapshots, &own).into_bytes())
        })
    }
}

impl Fleet {
    /// The live instances and their snapshots (`None`: expired since the
    /// index was read).
    async fn read(&self) -> Result<Vec<(String, Option<String>)>, String> {
        let mut link = self.link.lock().await;
        let mut index = redis::pipe();
        index
            .cmd("ZRANGE")
            .arg(self.config.index_key())
            .arg(0)
            .arg(-1);
        let result = async {
            let (instances,): (Vec<String>,) = link.query(&index).await?;
            if instances.is_empty() {
                return Ok((instances, Vec::new()));
            }
            let mut get = redis::pipe();
            let keys: Vec<String> = instances
                .iter()
                .map(|i| self.config.snapshot_key(i))
                .collect();
            get.cmd("MGET").arg(keys);
            let (values,): (Vec<Option<String>>,) = link.query(&get).await?;
            Ok((instances, values))
        }
        .await;
        let mut failing = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok((instances, values)) => {
                if failing.take().is_some() {
                    log::info!("redis: reading {} again", self.config.describe());
                }
                Ok(instances
                    .into_iter()
                    .zip(values.into_iter().chain(std::iter::repeat(None)))
                    .collect())
            }
            Err((failure, e)) => {
                self.errors.count(failure);
                if *failing != Some(failure) {
                    log::warn!(
                        "redis: reading {} failed ({}): {e}",
                        self.config.describe(),
                        failure.as_str()
                    );
                }
                *failing = Some(failure);
                Err(format!("reading Redis failed ({}): {e}", failure.as_str()))
            }
        }
    }

    /// The merged exposition; updates the served snapshots.
    fn merge(&self, snapshots: Vec<(String, Option<String>)>, own: &str) -> String {
        let mut served = self.served.lock().unwrap_or_else(|p| p.into_inner());
        let mut live: Vec<(String, Arc<str>)> = Vec::with_capacity(snapshots.len());
        for (instance, value) in snapshots {
            let Some((seq, exposition)) = value.as_deref().and_then(snapshot::parse) else {
                continue;
            };
            let entry = served
                .entry(instance.clone())
                .or_insert_with(|| (seq, Arc::from(exposition)));
            if seq > entry.0 {
                *entry = (seq, Arc::from(exposition));
            }
            live.push((instance, entry.1.clone()));
        }
        served.retain(|instance, _| live.iter().any(|(i, _)| i == instance));
        let labels: Vec<[(&str, &str); 2]> = live
            .iter()
            .map(|(instance, _)| {
                let host = instance.split(':').next().unwrap_or_default();
                [("instance", instance.as_str()), ("host", host)]
            })
            .collect();
        let mut parts: Vec<Part<'_>> = live
            .iter()
            .zip(&labels)
            .map(|((_, text), labels)| Part { labels, text })
            .collect();
        // Its own series carry the labels every instance's do (a family's
        // series share one label set): `instance="aggregate"`.
        let own_labels = [("instance", AGGREGATE), ("host", self.host.as_str())];
        parts.push(Part {
            labels: &own_labels,
            text: own,
        });
        let (text, skipped) = merge::merge(&parts);
        if skipped != merge::Skipped::default() {
            log::debug!("merge skipped {skipped:?}");
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn fleet() -> Fleet {
        let config = RedisConfig {
            connection: "redis://127.0.0.1:1".parse().unwrap(),
            prefix: "p".into(),
            ttl: Some(Duration::from_secs(10)),
            interval: Duration::from_secs(1),
        };
        let own = Registry::new();
        let errors = Errors::register(&own).unwrap();
        Fleet {
            link: tokio::sync::Mutex::new(Link::new(&config).unwrap()),
            failing: Mutex::new(None),
            served: Mutex::new(HashMap::new()),
            own,
            host: "agg".into(),
            errors,
            config,
        }
    }

    fn snapshot(seq: u64, value: u64) -> Option<String> {
        Some(
            snapshot::Snapshot {
                seq,
                exposition: &format!("# TYPE r counter\nr {value}\n"),
            }
            .render(),
        )
    }

    #[test]
    fn an_older_snapshot_is_not_served_and_gone_instances_leave() {
        let f = fleet();
        let a = "h1:app:1:2:3".to_string();
        let b = "h2:app:1:2:4".to_string();
        let text = f.merge(
            vec![(a.clone(), snapshot(5, 50)), (b.clone(), snapshot(1, 7))],
            "",
        );
        assert!(
            text.contains("r{instance=\"h1:app:1:2:3\",host=\"h1\"} 50\n"),
            "{text}"
        );
        assert!(
            text.contains("r{instance=\"h2:app:1:2:4\",host=\"h2\"} 7\n"),
            "{text}"
        );
        // A Redis restored from an old dump: `a` goes back to seq 3; `b` expired.
        let text = f.merge(vec![(a.clone(), snapshot(3, 30)), (b.clone(), None)], "");
        assert!(
            text.contains("} 50\n") && !text.contains("} 30\n"),
            "{text}"
        );
        assert!(!text.contains("h2"), "{text}");
        let text = f.merge(vec![(a, snapshot(6, 60))], "");
        assert!(text.contains("} 60\n"), "{text}");
        assert_eq!(f.served.lock().unwrap().len(), 1);
    }
}
