//! The scrape's own handles on the kernel maps it reads: duplicated
//! descriptors of the same maps, so a scrape reads them without the state
//! (and its lock) the lifecycle flow writes.

use std::{collections::BTreeMap, os::fd::AsFd as _};

use aya::maps::{HashMap, IterableMap as _, Map, MapData, MapError, PerCpuArray, PerCpuHashMap};
use exporter_ebpf::{
    abi::{Aggregate, ConnKey, MasterStats, MetricKey, RouteKey, error, map},
    request::Conn,
    route::RoutePath,
};

use super::KernelError;

pub struct MapReader {
    conns: HashMap<MapData, ConnKey, Conn>,
    metrics: PerCpuHashMap<MapData, MetricKey, Aggregate>,
    routes: HashMap<MapData, u64, RoutePath>,
    route_metrics: PerCpuHashMap<MapData, RouteKey, Aggregate>,
    errors: PerCpuArray<MapData, u64>,
    master_stats: PerCpuHashMap<MapData, u32, MasterStats>,
}

/// A second handle on `map`.
fn dup(name: &'static str, map: &MapData) -> Result<MapData, KernelError> {
    let fd = map
        .fd()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| KernelError::Map {
            name,
            source: MapError::SyscallError(aya::sys::SyscallError {
                call: "dup",
                io_error: e,
            }),
        })?;
    MapData::from_fd(fd).map_err(|source| KernelError::Map { name, source })
}

impl MapReader {
    pub(super) fn new(
        conns: &HashMap<MapData, ConnKey, Conn>,
        metrics: &PerCpuHashMap<MapData, MetricKey, Aggregate>,
        routes: HashMap<MapData, u64, RoutePath>,
        route_metrics: PerCpuHashMap<MapData, RouteKey, Aggregate>,
        errors: PerCpuArray<MapData, u64>,
        master_stats: &PerCpuHashMap<MapData, u32, MasterStats>,
    ) -> Result<MapReader, KernelError> {
        let typed = |name, source| KernelError::Map { name, source };
        Ok(MapReader {
            conns: HashMap::try_from(Map::HashMap(dup(map::CONNS, conns.map())?))
                .map_err(|e| typed(map::CONNS, e))?,
            metrics: PerCpuHashMap::try_from(Map::PerCpuHashMap(dup(map::METRICS, metrics.map())?))
                .map_err(|e| typed(map::METRICS, e))?,
            routes,
            route_metrics,
            errors,
            master_stats: PerCpuHashMap::try_from(Map::PerCpuHashMap(dup(
                map::MASTER_STATS,
                master_stats.map(),
            )?))
            .map_err(|e| typed(map::MASTER_STATS, e))?,
        })
    }

    /// Every open client connection: (tgid, its state).
    pub fn connections(&self) -> Vec<(u32, Conn)> {
        self.conns
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, c)| c.is_open())
            .map(|(k, c)| (k.tgid, c))
            .collect()
    }

    /// Every series, its per-CPU values summed.
    pub fn metrics(&self) -> Result<Vec<(MetricKey, Aggregate)>, MapError> {
        summed(&self.metrics)
    }

    /// Every route series, its per-CPU values summed.
    pub fn route_metrics(&self) -> Result<Vec<(RouteKey, Aggregate)>, MapError> {
        summed(&self.route_metrics)
    }

    /// The first path the kernel saw with route key `key`, if it kept one.
    pub fn route_path(&self, key: u64) -> Result<Option<RoutePath>, MapError> {
        match self.routes.get(&key, 0) {
            Ok(path) => Ok(Some(path)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Each master's statistics (connections, queue wait, unframed
    /// responses), summed over CPUs.
    pub fn master_stats(&self) -> Result<BTreeMap<u32, MasterStats>, MapError> {
        self.master_stats
            .iter()
            .map(|entry| {
                let (master, per_cpu) = entry?;
                Ok((master, sum_stats(per_cpu.iter())))
            })
            .collect()
    }

    /// The kernel's failure counters, summed over CPUs, indexed by `abi::error`.
    pub fn errors(&self) -> Result<[u64; error::COUNT as usize], MapError> {
        let mut out = [0u64; error::COUNT as usize];
        for (index, slot) in out.iter_mut().enumerate() {
            *slot = self.errors.get(&(index as u32), 0)?.iter().sum();
        }
        Ok(out)
    }
}

/// Every entry of a per-CPU map of aggregates, its CPUs' values merged.
fn summed<K: aya::Pod>(
    map: &PerCpuHashMap<MapData, K, Aggregate>,
) -> Result<Vec<(K, Aggregate)>, MapError> {
    map.iter()
        .map(|entry| {
            let (key, per_cpu) = entry?;
            let mut total = Aggregate::default();
            per_cpu.iter().for_each(|v| total.merge(v));
            Ok((key, total))
        })
        .collect()
}

/// Per-CPU values of a master's statistics, summed.
pub fn sum_stats<'a>(per_cpu: impl Iterator<Item = &'a MasterStats>) -> MasterStats {
    let mut total = MasterStats::default();
    per_cpu.for_each(|s| total.merge(s));
    total
}
