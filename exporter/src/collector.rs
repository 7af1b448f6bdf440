//! Reads the kernel's maps when Prometheus scrapes and turns them into
//! metric families. Nothing is cached in the background: a scrape sees the
//! maps as they are. One failing read never fails the scrape.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
};

use exporter_ebpf::{
    abi::{error, Aggregate, MetricKey, SIZE_BOUNDS},
    buckets::used_slots,
    http::method,
    request::ABORTED,
};
use prometheus::{
    core::{Collector, Desc},
    proto::MetricFamily,
};

use crate::{
    exposition::{self as x, HistogramRow, Labels},
    state::State,
};

pub struct Exporter {
    state: Arc<Mutex<State>>,
    descs: Vec<Desc>,
    collect_errors: AtomicU64,
}

/// (name, help, variable labels) of every family, for the registry's descs.
const FAMILIES: [(&str, &str, &[&str]); 10] = [
    (x::REQUESTS, "Completed HTTP responses, by method and status code.", &["worker_id", "pid", "method", "status"]),
    (x::DURATION, "Request duration: from the first read of the request to the last write of its response.", &["worker_id", "pid", "method", "status_class"]),
    (x::REQUEST_SIZE, "Bytes read from the client per request (request line, headers, body).", &["worker_id", "pid", "method"]),
    (x::RESPONSE_SIZE, "Bytes written to the client per request (status line, headers, body).", &["worker_id", "pid", "method"]),
    (x::FAILED, "Failed requests: error_type http_5xx (a 5xx response) or aborted (read, never answered).", &["worker_id", "pid", "method", "error_type"]),
    (x::WORKERS, "Workers alive.", &[]),
    (x::UP, "1 while the gunicorn master is alive.", &[]),
    (x::KERNEL_ERRORS, "Records the kernel side could not keep (map full, ring buffer full, unreadable buffer); lost requests show here, never silently.", &["kind"]),
    (x::COLLECT_ERRORS, "Scrapes in which reading a kernel map failed (the rest was still served).", &[]),
    (x::BUILD_INFO, "Exporter build information.", &["version"]),
];

impl Exporter {
    pub fn new(state: Arc<Mutex<State>>) -> prometheus::Result<Exporter> {
        let descs = FAMILIES
            .iter()
            .map(|(name, help, labels)| {
                Desc::new(name.to_string(), help.to_string(), labels.iter().map(|l| l.to_string()).collect(), Default::default())
            })
            .collect::<prometheus::Result<_>>()?;
        Ok(Exporter { state, descs, collect_errors: AtomicU64::new(0) })
    }

    fn help(name: &str) -> &'static str {
        FAMILIES.iter().find(|f| f.0 == name).map_or("", |f| f.1)
    }
}

fn class(status: u16) -> String {
    format!("{}xx", status / 100)
}

fn merged<K: Ord>(rows: impl Iterator<Item = (K, Aggregate)>) -> BTreeMap<K, Aggregate> {
    let mut out: BTreeMap<K, Aggregate> = BTreeMap::new();
    for (key, aggregate) in rows {
        out.entry(key).or_default().merge(&aggregate);
    }
    out
}

impl Collector for Exporter {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        state.refresh();
        let series: BTreeMap<MetricKey, Aggregate> = state.series().unwrap_or_else(|e| {
            log::warn!("reading the metrics map failed: {e}");
            self.collect_errors.fetch_add(1, Ordering::Relaxed);
            BTreeMap::new()
        });
        let kernel_errors = state.kernel.read_errors().unwrap_or_else(|e| {
            log::warn!("reading the error counters failed: {e}");
            self.collect_errors.fetch_add(1, Ordering::Relaxed);
            [0; error::COUNT as usize]
        });
        for key in series.keys() {
            state.ensure_worker(key.tgid);
        }
        let worker = |pid: u32| -> Labels {
            let id = state.workers.get(pid).map_or_else(|| "worker_unknown".to_string(), |w| w.id());
            vec![("worker_id", id), ("pid", pid.to_string())]
        };
        let with = |mut labels: Labels, more: &[(&'static str, String)]| {
            labels.extend_from_slice(more);
            labels
        };

        let answered = || series.iter().filter(|(k, _)| k.status != ABORTED);
        let requests = answered().map(|(k, a)| {
            let labels = with(worker(k.tgid), &[("method", method::name(k.method).into()), ("status", k.status.to_string())]);
            (labels, a.count as f64)
        });

        let mut failed: BTreeMap<(u32, u8, &str), u64> = BTreeMap::new();
        for (k, a) in &series {
            let kind = match k.status {
                ABORTED => "aborted",
                500.. => "http_5xx",
                _ => continue,
            };
            *failed.entry((k.tgid, k.method, kind)).or_default() += a.count;
        }
        let failed = failed.into_iter().map(|((pid, m, kind), n)| {
            (with(worker(pid), &[("method", method::name(m).into()), ("error_type", kind.into())]), n as f64)
        });

        let duration_bounds = state.duration_bounds_ns();
        let duration_slots = used_slots(duration_bounds);
        let duration_secs: Vec<f64> = duration_bounds[..duration_slots - 1].iter().map(|&ns| ns as f64 / 1e9).collect();
        let by_class = merged(answered().map(|(k, a)| ((k.tgid, k.method, class(k.status)), *a)));
        let durations: Vec<HistogramRow> = by_class
            .iter()
            .map(|((pid, m, c), a)| HistogramRow {
                labels: with(worker(*pid), &[("method", method::name(*m).into()), ("status_class", c.clone())]),
                bounds: &duration_secs,
                counts: &a.duration[..duration_slots],
                sum: a.duration_sum_ns as f64 / 1e9,
            })
            .collect();

        let size_slots = used_slots(&SIZE_BOUNDS);
        let size_bounds: Vec<f64> = SIZE_BOUNDS[..size_slots - 1].iter().map(|&b| b as f64).collect();
        let by_method = merged(series.iter().map(|(k, a)| ((k.tgid, k.method), *a)));
        let sizes = |response: bool| -> Vec<HistogramRow> {
            by_method
                .iter()
                .map(|((pid, m), a)| HistogramRow {
                    labels: with(worker(*pid), &[("method", method::name(*m).into())]),
                    bounds: &size_bounds,
                    counts: if response { &a.resp_size[..size_slots] } else { &a.req_size[..size_slots] },
                    sum: if response { a.resp_bytes_sum } else { a.req_bytes_sum } as f64,
                })
                .collect()
        };

        let families = vec![
            x::counter(x::REQUESTS, Self::help(x::REQUESTS), requests),
            x::histogram(x::DURATION, Self::help(x::DURATION), durations),
            x::histogram(x::REQUEST_SIZE, Self::help(x::REQUEST_SIZE), sizes(false)),
            x::histogram(x::RESPONSE_SIZE, Self::help(x::RESPONSE_SIZE), sizes(true)),
            x::counter(x::FAILED, Self::help(x::FAILED), failed),
            x::gauge(x::WORKERS, Self::help(x::WORKERS), [(vec![], state.workers.alive().count() as f64)]),
            x::gauge(x::UP, Self::help(x::UP), [(vec![], if state.master_alive { 1.0 } else { 0.0 })]),
            x::counter(
                x::KERNEL_ERRORS,
                Self::help(x::KERNEL_ERRORS),
                error::NAMES.iter().zip(kernel_errors).map(|(kind, n)| (vec![("kind", kind.to_string())], n as f64)),
            ),
            x::counter(x::COLLECT_ERRORS, Self::help(x::COLLECT_ERRORS), [(vec![], self.collect_errors.load(Ordering::Relaxed) as f64)]),
            x::gauge(x::BUILD_INFO, Self::help(x::BUILD_INFO), [(vec![("version", env!("CARGO_PKG_VERSION").to_string())], 1.0)]),
        ];
        families.into_iter().filter(|f| !f.get_metric().is_empty()).collect()
    }
}
