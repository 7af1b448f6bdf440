//! Redis: a fleet view shared across processes and hosts.
//!
//! - `config`: `--redis-url` or the plugin's REDIS_* variables;
//! - `identity`: the instance in every key (host, app, master, starts);
//! - `snapshot`: what is stored, and the one pipeline that stores it;
//! - `publish`: the exporter's interval task, its errors and backoff;
//! - `merge`: the pure merge of snapshots into one exposition;
//! - `aggregate`: the `aggregate` subcommand, which serves that merge.

pub mod aggregate;
pub mod config;
pub mod identity;
pub mod merge;
pub mod publish;
pub mod snapshot;
