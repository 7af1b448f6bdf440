//! What an instance stores, and the one pipeline that stores it.
//!
//! Keys, under the prefix (REDIS_KEY_PREFIX):
//! - `<prefix>:exporter:<instance>`: the snapshot, a string with a TTL;
//! - `<prefix>:exporter:instances`: a sorted set of instances, scored by
//!   when their snapshot expires (Unix ms), pruned by every publisher.

use redis::Pipeline;

use super::config::RedisConfig;

/// The first line of a snapshot; its sequence number lets the aggregate
/// refuse an older snapshot than one it served (a Redis restored from an
/// old dump), so an instance's counters never go backwards.
const HEADER: &str = "# gunicorn-ebpf-exporter snapshot seq=";

pub struct Snapshot<'a> {
    pub seq: u64,
    pub exposition: &'a str,
}

impl Snapshot<'_> {
    pub fn render(&self) -> String {
        format!("{HEADER}{}\n{}", self.seq, self.exposition)
    }
}

/// A stored snapshot's sequence number and exposition; `None` if it is none.
pub fn parse(value: &str) -> Option<(u64, &str)> {
    let rest = value.strip_prefix(HEADER)?;
    let (seq, exposition) = rest.split_once('\n')?;
    Some((seq.parse().ok()?, exposition))
}

/// The round trip of one publish: the snapshot with its TTL, its entry in
/// the index, the index's own TTL and the pruning of expired entries.
pub fn write(
    config: &RedisConfig,
    instance: &str,
    key: &str,
    snapshot: &str,
    now_ms: u64,
) -> Pipeline {
    let index = config.index_key();
    let mut pipe = redis::pipe();
    match config.ttl {
        Some(ttl) => {
            let ttl_ms = ttl.as_millis() as u64;
            pipe.cmd("SET")
                .arg(key)
                .arg(snapshot)
                .arg("PX")
                .arg(ttl_ms)
                .ignore();
            pipe.cmd("ZADD")
                .arg(&index)
                .arg(now_ms + ttl_ms)
                .arg(instance)
                .ignore();
            // Exclusive bound: entries whose snapshot has expired by now.
            pipe.cmd("ZREMRANGEBYSCORE")
                .arg(&index)
                .arg("-inf")
                .arg(format!("({now_ms}"))
                .ignore();
            pipe.cmd("PEXPIRE").arg(&index).arg(ttl_ms).ignore();
        }
        None => {
            pipe.cmd("SET").arg(key).arg(snapshot).ignore();
            pipe.cmd("ZADD")
                .arg(&index)
                .arg("+inf")
                .arg(instance)
                .ignore();
        }
    }
    pipe
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn snapshot_round_trips() {
        let text = Snapshot {
            seq: 7,
            exposition: "# TYPE a counter\na 1\n",
        }
        .render();
        assert_eq!(parse(&text), Some((7, "# TYPE a counter\na 1\n")));
        assert_eq!(parse("a 1\n"), None);
        assert_eq!(parse("# gunicorn-ebpf-exporter snapshot seq=x\n"), None);
    }

    #[test]
    fn one_pipeline_of_four_commands() {
        let config = RedisConfig {
            connection: "redis://h".parse().unwrap(),
            prefix: "p".into(),
            ttl: Some(Duration::from_secs(300)),
            interval: Duration::from_secs(5),
        };
        let pipe = write(&config, "i", "p:exporter:i", "s", 1000);
        let packed = String::from_utf8_lossy(&pipe.get_packed_pipeline()).into_owned();
        for expected in [
            "SET",
            "p:exporter:i",
            "PX",
            "300000",
            "ZADD",
            "p:exporter:instances",
            "301000",
            "ZREMRANGEBYSCORE",
            "(1000",
            "PEXPIRE",
        ] {
            assert!(packed.contains(expected), "{expected} in {packed:?}");
        }
        assert_eq!(pipe.cmd_iter().count(), 4);
    }
}
