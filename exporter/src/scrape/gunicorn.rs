//! Gunicorn's request, worker, lifecycle and exporter families: at each
//! scrape, the kernel maps as they are (through the scrape's own handles)
//! and the latest published view. A scrape only reads: it never takes the
//! state's lock nor changes it. One failing read never fails the scrape.

use std::{
    collections::BTreeMap,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use exporter_ebpf::{
    abi::{Aggregate, MasterStats, MetricKey, RouteKey, SIZE_BOUNDS, error},
    buckets::used_slots,
    http::method,
    request::{ABORTED, Conn, phase::RESPONDING},
};
use prometheus::{
    core::{Collector, Desc},
    proto::MetricFamily,
};

use crate::{
    kernel::MapReader,
    lifecycle::{Hook, Reason, WorkerState, actions, heartbeats, sig},
    scrape::{
        exposition::{self, HistogramRow, Labels, counter, gauge, histogram, name},
        routes,
        view::{Fixed, Published, View},
    },
};

pub struct GunicornMetrics {
    view: Published,
    maps: MapReader,
    fixed: Fixed,
    actions: actions::Counts,
    descs: Vec<Desc>,
    collect_errors: AtomicU64,
    /// Busy ns last reported per worker. The metrics map and the connection
    /// map are read one after the other, so a request finishing in between is
    /// in neither: the sum can only undercount for a moment, and reporting
    /// the running maximum keeps the counter monotonic without overstating.
    busy_reported: Mutex<BTreeMap<u32, u64>>,
    /// The route each kernel route key was given (None: `--no-routes`).
    /// Held only while a scrape names the route series.
    routes: Option<Mutex<routes::Names>>,
}

/// (name, help, variable labels) of every family, for the registry's descs.
const FAMILIES: [exposition::Family; 30] = [
    (
        name::HTTP_REQUESTS,
        "Completed HTTP responses of every worker, by route, method and status code.",
        &["route", "method", "status"],
    ),
    (
        name::HTTP_DURATION,
        "Request duration of every worker's answered requests, by route, method and status class.",
        &["route", "method", "status_class"],
    ),
    (
        name::HTTP_REQUEST_SIZE,
        "Bytes read from the client per request, every worker's, by route and method.",
        &["route", "method"],
    ),
    (
        name::HTTP_RESPONSE_SIZE,
        "Bytes written to the client per request, every worker's, by route and method.",
        &["route", "method"],
    ),
    (
        name::ROUTE_OVERFLOW,
        "Completed responses counted under route=\"other\": beyond --max-routes distinct routes, the kernel's table of paths full, or a request target that is not a path.",
        &[],
    ),
    (
        name::REQUESTS,
        "Completed HTTP responses, by method and status code.",
        &["worker_id", "pid", "method", "status"],
    ),
    (
        name::DURATION,
        "Request duration: from the first read of the request to the last write of its response.",
        &["worker_id", "pid", "method", "status_class"],
    ),
    (
        name::REQUEST_SIZE,
        "Bytes read from the client per request (request line, headers, body).",
        &["worker_id", "pid", "method"],
    ),
    (
        name::RESPONSE_SIZE,
        "Bytes written to the client per request (status line, headers, body).",
        &["worker_id", "pid", "method"],
    ),
    (
        name::FAILED,
        "Failed requests, by error_type: the Python exception class of an app exception gunicorn answered with a 500, http_5xx (any other 5xx response), aborted (read, never answered: the client went away), worker_timeout (in flight when the master aborted the worker), worker_crash, worker_killed (in flight when the worker died); endpoint: the request's route (as gunicorn_http_requests_total's route label, bounded by --max-routes).",
        &["worker_id", "pid", "method", "error_type", "endpoint"],
    ),
    (
        name::WORKER_STATE,
        "1 for the worker's current state: running, quitting (SIGQUIT/SIGINT/SIGTERM received) or aborting (SIGABRT from the master received).",
        &["worker_id", "pid", "state"],
    ),
    (
        name::BUSY,
        "Requests in flight in the worker now: read, response not yet complete (at most 1 for sync workers, up to --threads for gthread).",
        &["worker_id", "pid"],
    ),
    (
        name::QUEUE,
        "Time from a client's TCP handshake completing to a worker accepting the connection: the wait in the listen queue (TCP listeners only).",
        &[],
    ),
    (
        name::CONNECTIONS,
        "Client connections the workers accepted since the exporter attached.",
        &[],
    ),
    (
        name::CONNECTIONS_OPEN,
        "Client connections the workers hold open now (accepted, or seen carrying a request, and not closed).",
        &[],
    ),
    (
        name::WORKERS_BUSY,
        "Workers with at least one request in flight now.",
        &[],
    ),
    (
        name::BUSY_SECONDS,
        "Request-seconds spent in flight in the worker (the sum of its requests' durations, in-flight ones included): rate() is its utilisation (divide by --threads for gthread).",
        &["worker_id", "pid"],
    ),
    (
        name::HEARTBEAT_AGE,
        "Seconds since the worker last touched its heartbeat file; gunicorn aborts it when this passes --timeout.",
        &["worker_id", "pid"],
    ),
    (
        name::HOOKS,
        "Gunicorn server hooks as seen from the kernel (see the README for how exact each is).",
        &["hook"],
    ),
    (
        name::RESTARTS,
        "Workers that went away, by reason.",
        &["reason"],
    ),
    (
        name::MASTER_SIGNALS,
        "Signals delivered to the gunicorn master, by name.",
        &["signal"],
    ),
    (
        name::HOOK_ACTIONS,
        "Hook commands run (--on), by result: ok, failed, timeout, dropped.",
        &["hook", "result"],
    ),
    (name::WORKERS, "Workers alive.", &[]),
    (
        name::UP,
        "1 while a gunicorn master is attached and alive.",
        &[],
    ),
    (
        name::KERNEL_ERRORS,
        "Records the kernel side could not keep (map full, ring buffer full, unreadable buffer); lost requests show here, never silently.",
        &["kind"],
    ),
    (
        name::COLLECT_ERRORS,
        "Scrapes in which reading a kernel map failed (the rest was still served).",
        &[],
    ),
    (
        name::BUILD_INFO,
        "Exporter build information.",
        &["version"],
    ),
    (
        name::KERNEL_INFO,
        "The running kernel and the hooks the exporter chose on it: sockets (socket-layer tracepoints, no syscall tracepoint) or syscalls.",
        &["release", "hooks"],
    ),
    (
        name::KERNEL_CAPABILITY,
        "1 for each kernel capability the exporter probed and found, 0 for one it did not.",
        &["capability"],
    ),
    (
        name::UNFRAMED,
        "Responses whose end their framing did not tell (headers beyond the scanned bound, or framing not as announced): ended by the worker's signals instead.",
        &[],
    ),
];

/// The families the kernel (or the exporter) keeps for the whole node: in
/// discovery mode they carry no master's identity labels.
const NODE_WIDE: [&str; 6] = [
    name::HOOK_ACTIONS,
    name::KERNEL_ERRORS,
    name::COLLECT_ERRORS,
    name::BUILD_INFO,
    name::KERNEL_INFO,
    name::KERNEL_CAPABILITY,
];

impl GunicornMetrics {
    pub fn new(
        view: Published,
        maps: MapReader,
        fixed: Fixed,
        actions: actions::Counts,
        routes: Option<routes::Rules>,
    ) -> prometheus::Result<GunicornMetrics> {
        let descs = exposition::descs_with(&FAMILIES, &fixed.identity_labels, &NODE_WIDE)?;
        Ok(GunicornMetrics {
            view,
            maps,
            fixed,
            actions,
            descs,
            collect_errors: AtomicU64::new(0),
            busy_reported: Mutex::default(),
            routes: routes.map(|r| Mutex::new(routes::Names::new(r))),
        })
    }

    fn help(name: &str) -> &'static str {
        exposition::help(&FAMILIES, name)
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

/// Whose requests a series counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Owner {
    Worker(u32),
    /// The workers of this master whose own series ended.
    Exited(u32),
    /// Every worker of this master (`--worker-series none`).
    All(u32),
}

/// A request series: whose, method, status.
type SeriesKey = (Owner, u8, u16);

/// `worker_id` and `pid` of a series: the worker's, or for the folded
/// series `exited`/`all` and the master's pid.
fn owner(view: &View, owner: Owner) -> Labels {
    match owner {
        Owner::Worker(pid) => worker(view, pid),
        Owner::Exited(master) => vec![("worker_id", "exited".into()), ("pid", master.to_string())],
        Owner::All(master) => vec![("worker_id", "all".into()), ("pid", master.to_string())],
    }
}

/// `worker_id` and `pid` of a worker's series.
fn worker(view: &View, pid: u32) -> Labels {
    let id = view
        .workers
        .get(pid)
        .map_or_else(|| "worker_unknown".to_string(), |w| w.id());
    vec![("worker_id", id), ("pid", pid.to_string())]
}

fn with(mut labels: Labels, more: &[(&'static str, String)]) -> Labels {
    labels.extend_from_slice(more);
    labels
}

/// The duration histogram's finite bounds in seconds and its used slots.
struct DurationBuckets {
    seconds: Vec<f64>,
    slots: usize,
}

impl DurationBuckets {
    fn of(bounds: &[u64; exporter_ebpf::abi::DURATION_SLOTS]) -> DurationBuckets {
        let slots = used_slots(bounds);
        DurationBuckets {
            seconds: bounds[..slots - 1]
                .iter()
                .map(|&ns| ns as f64 / 1e9)
                .collect(),
            slots,
        }
    }
}

impl GunicornMetrics {
    /// Whose series worker `pid`'s requests go to.
    fn owner_of(&self, view: &View, pid: u32) -> Owner {
        if self.fixed.per_master {
            Owner::All(view.workers.master_of(pid).unwrap_or(0))
        } else {
            Owner::Worker(pid)
        }
    }

    /// Whose series the retired workers of `master` go to.
    fn folded(&self, master: u32) -> Owner {
        if self.fixed.per_master {
            Owner::All(master)
        } else {
            Owner::Exited(master)
        }
    }

    /// Logs and counts a failed map read; the scrape goes on with `fallback`.
    fn or_count<T>(&self, what: &str, read: Result<T, aya::maps::MapError>, fallback: T) -> T {
        read.unwrap_or_else(|e| {
            log::warn!("reading {what} failed: {e}");
            self.collect_errors.fetch_add(1, Ordering::Relaxed);
            fallback
        })
    }

    /// Requests, failures, durations and sizes, per worker.
    fn request_families(
        &self,
        view: &View,
        series: &BTreeMap<SeriesKey, Aggregate>,
        buckets: &DurationBuckets,
    ) -> Vec<MetricFamily> {
        let answered = || {
            series
                .iter()
                .filter(|((_, _, status), _)| *status != ABORTED)
        };
        let requests = answered().map(|((who, m, status), a)| {
            let labels = with(
                owner(view, *who),
                &[
                    ("method", method::name(*m).into()),
                    ("status", status.to_string()),
                ],
            );
            (labels, a.count as f64)
        });

        let mut failed: BTreeMap<(Owner, u8, &str, Option<String>), u64> = BTreeMap::new();
        let live = view
            .failures
            .iter()
            .map(|((pid, m, kind, route), n)| (self.owner_of(view, *pid), *m, kind, *route, n));
        let exited = view
            .exited_failures
            .iter()
            .map(|((master, m, kind, route), n)| (self.folded(*master), *m, kind, *route, n));
        for (who, m, kind, route, n) in live.chain(exited) {
            *failed
                .entry((who, m, kind.as_str(), self.endpoint(route)))
                .or_default() += n;
        }
        let failed = failed.into_iter().map(|((who, m, kind, endpoint), n)| {
            let mut labels = with(
                owner(view, who),
                &[
                    ("method", method::name(m).into()),
                    ("error_type", kind.into()),
                ],
            );
            if let Some(endpoint) = endpoint {
                labels.push(("endpoint", endpoint));
            }
            (labels, n as f64)
        });

        let by_class =
            merged(answered().map(|((who, m, status), a)| ((*who, *m, class(*status)), *a)));
        let durations = by_class.iter().map(|((who, m, c), a)| HistogramRow {
            labels: with(
                owner(view, *who),
                &[
                    ("method", method::name(*m).into()),
                    ("status_class", c.clone()),
                ],
            ),
            bounds: &buckets.seconds,
            counts: &a.duration[..buckets.slots],
            sum: a.duration_sum_ns as f64 / 1e9,
        });

        let size_slots = used_slots(&SIZE_BOUNDS);
        let size_bounds: Vec<f64> = SIZE_BOUNDS[..size_slots - 1]
            .iter()
            .map(|&b| b as f64)
            .collect();
        let by_method = merged(series.iter().map(|((who, m, _), a)| ((*who, *m), *a)));
        let size_bounds = &size_bounds;
        let sizes = |response: bool| {
            by_method.iter().map(move |((who, m), a)| {
                let labels = with(owner(view, *who), &[("method", method::name(*m).into())]);
                size_row(labels, a, response, size_bounds)
            })
        };

        vec![
            counter(name::REQUESTS, Self::help(name::REQUESTS), requests),
            histogram(name::DURATION, Self::help(name::DURATION), durations),
            histogram(
                name::REQUEST_SIZE,
                Self::help(name::REQUEST_SIZE),
                sizes(false),
            ),
            histogram(
                name::RESPONSE_SIZE,
                Self::help(name::RESPONSE_SIZE),
                sizes(true),
            ),
            counter(name::FAILED, Self::help(name::FAILED), failed),
        ]
    }

    /// The `endpoint` label of a failed request with route key `route`: its
    /// route (None with `--no-routes`: no label).
    fn endpoint(&self, route: u64) -> Option<String> {
        let names = self.routes.as_ref()?;
        let mut names = names.lock().unwrap_or_else(|p| p.into_inner());
        Some(routes::label(names.name(route, || self.route_path(route))))
    }

    /// The first path the kernel kept for route key `key`, and whether it
    /// may be cut.
    fn route_path(&self, key: u64) -> Option<(String, bool)> {
        let path = self.or_count("the routes map", self.maps.route_path(key), None)?;
        Some((
            String::from_utf8_lossy(path.path()).into_owned(),
            path.cut != 0,
        ))
    }

    /// The kernel's series by route (none with `--no-routes`).
    fn route_series(&self) -> Vec<(RouteKey, Aggregate)> {
        if self.routes.is_none() {
            return Vec::new();
        }
        self.or_count(
            "the route metrics map",
            self.maps.route_metrics(),
            Vec::new(),
        )
    }

    /// Requests, durations and sizes by route of the `kernel` series, every
    /// worker's summed.
    fn route_families(
        &self,
        kernel: Vec<(RouteKey, Aggregate)>,
        buckets: &DurationBuckets,
    ) -> Vec<MetricFamily> {
        let Some(names) = &self.routes else {
            return Vec::new();
        };
        let series = {
            let mut names = names.lock().unwrap_or_else(|p| p.into_inner());
            routes::series_by_route(&mut names, kernel, |key| self.route_path(key))
        };
        let answered = || {
            series
                .iter()
                .filter(|((_, _, status), _)| *status != ABORTED)
        };
        let requests = answered().map(|((route, m, status), a)| {
            (
                vec![
                    ("route", route.clone()),
                    ("method", method::name(*m).into()),
                    ("status", status.to_string()),
                ],
                a.count as f64,
            )
        });
        let overflow: u64 = answered()
            .filter(|((route, _, _), _)| route == routes::OTHER)
            .map(|(_, a)| a.count)
            .sum();
        let by_class = merged(
            answered().map(|((route, m, status), a)| ((route.clone(), *m, class(*status)), *a)),
        );
        let durations = by_class.iter().map(|((route, m, c), a)| HistogramRow {
            labels: vec![
                ("route", route.clone()),
                ("method", method::name(*m).into()),
                ("status_class", c.clone()),
            ],
            bounds: &buckets.seconds,
            counts: &a.duration[..buckets.slots],
            sum: a.duration_sum_ns as f64 / 1e9,
        });
        let size_slots = used_slots(&SIZE_BOUNDS);
        let size_bounds: Vec<f64> = SIZE_BOUNDS[..size_slots - 1]
            .iter()
            .map(|&b| b as f64)
            .collect();
        let by_method = merged(
            series
                .iter()
                .map(|((route, m, _), a)| ((route.clone(), *m), *a)),
        );
        let size_bounds = &size_bounds;
        let sizes = |response: bool| {
            by_method.iter().map(move |((route, m), a)| {
                let labels = vec![
                    ("route", route.clone()),
                    ("method", method::name(*m).into()),
                ];
                size_row(labels, a, response, size_bounds)
            })
        };
        vec![
            counter(
                name::HTTP_REQUESTS,
                Self::help(name::HTTP_REQUESTS),
                requests,
            ),
            histogram(
                name::HTTP_DURATION,
                Self::help(name::HTTP_DURATION),
                durations,
            ),
            histogram(
                name::HTTP_REQUEST_SIZE,
                Self::help(name::HTTP_REQUEST_SIZE),
                sizes(false),
            ),
            histogram(
                name::HTTP_RESPONSE_SIZE,
                Self::help(name::HTTP_RESPONSE_SIZE),
                sizes(true),
            ),
            counter(
                name::ROUTE_OVERFLOW,
                Self::help(name::ROUTE_OVERFLOW),
                [(vec![], overflow as f64)],
            ),
        ]
    }

    /// State, saturation and heartbeat of the live workers.
    fn worker_families(
        &self,
        view: &View,
        series: &BTreeMap<SeriesKey, Aggregate>,
        conns: &[(u32, Conn)],
    ) -> Vec<MetricFamily> {
        let alive: Vec<(u32, WorkerState)> =
            view.workers.alive().map(|w| (w.pid, w.state)).collect();
        let states = alive.iter().flat_map(|&(pid, current)| {
            WorkerState::ALL.map(|s| {
                (
                    with(worker(view, pid), &[("state", s.name().into())]),
                    (s == current) as u8 as f64,
                )
            })
        });
        let now_ns = crate::procs::monotonic_ns();
        // Busy: in-flight requests now, and request-seconds including their elapsed part.
        let mut busy: BTreeMap<u32, (u64, u64)> =
            alive.iter().map(|(pid, _)| (*pid, (0, 0))).collect();
        for ((who, _, _), a) in series {
            if let Owner::Worker(pid) = who
                && let Some(b) = busy.get_mut(pid)
            {
                b.1 += a.duration_sum_ns;
            }
        }
        let in_flight = conns.iter().filter(|(_, c)| c.busy());
        for (pid, conn) in in_flight {
            if let Some(b) = busy.get_mut(pid) {
                b.0 += 1;
                let end = if conn.phase == RESPONDING {
                    conn.last_write_ns
                } else {
                    now_ns
                };
                b.1 += end.saturating_sub(conn.start_ns);
            }
        }
        {
            let mut reported = self.busy_reported.lock().unwrap_or_else(|p| p.into_inner());
            reported.retain(|pid, _| busy.contains_key(pid));
            for (pid, b) in busy.iter_mut() {
                let last = reported.entry(*pid).or_default();
                *last = (*last).max(b.1);
                b.1 = *last;
            }
        }
        let workers_busy = busy.values().filter(|b| b.0 > 0).count();
        let busy_now = busy.iter().map(|(pid, b)| (worker(view, *pid), b.0 as f64));
        let busy_seconds = busy
            .iter()
            .map(|(pid, b)| (worker(view, *pid), b.1 as f64 / 1e9));
        let heartbeat_age = heartbeats::ages(&view.heartbeat_fds)
            .into_iter()
            .filter(|(pid, _)| alive.iter().any(|(p, _)| p == pid))
            .map(|(pid, age)| (worker(view, pid), age));

        vec![
            gauge(name::WORKER_STATE, Self::help(name::WORKER_STATE), states),
            gauge(
                name::HEARTBEAT_AGE,
                Self::help(name::HEARTBEAT_AGE),
                heartbeat_age,
            ),
            gauge(name::BUSY, Self::help(name::BUSY), busy_now),
            gauge(
                name::WORKERS_BUSY,
                Self::help(name::WORKERS_BUSY),
                [(vec![], workers_busy as f64)],
            ),
            counter(
                name::BUSY_SECONDS,
                Self::help(name::BUSY_SECONDS),
                busy_seconds,
            ),
            gauge(
                name::WORKERS,
                Self::help(name::WORKERS),
                [(vec![], alive.len() as f64)],
            ),
            gauge(
                name::UP,
                Self::help(name::UP),
                [(vec![], if view.up() { 1.0 } else { 0.0 })],
            ),
        ]
    }

    /// Connections taken, their wait in the accept queue, and responses
    /// left unframed: the kernel counts them per master.
    fn connection_families(
        &self,
        stats: &MasterStats,
        buckets: &DurationBuckets,
    ) -> Vec<MetricFamily> {
        let queue = &stats.queue;
        let queue_row = HistogramRow {
            labels: vec![],
            bounds: &buckets.seconds,
            counts: &queue.buckets[..buckets.slots],
            sum: queue.sum_ns as f64 / 1e9,
        };
        vec![
            histogram(name::QUEUE, Self::help(name::QUEUE), [queue_row]),
            counter(
                name::CONNECTIONS,
                Self::help(name::CONNECTIONS),
                [(vec![], stats.connections as f64)],
            ),
            counter(
                name::UNFRAMED,
                Self::help(name::UNFRAMED),
                [(vec![], stats.unframed as f64)],
            ),
        ]
    }

    /// Hooks, restarts and the master's signals.
    fn lifecycle_families(&self, view: &View) -> Vec<MetricFamily> {
        let counts = &view.counts();
        let hooks = Hook::ALL.map(|h| {
            (
                vec![("hook", h.name().to_string())],
                *counts.hooks.get(&h).unwrap_or(&0) as f64,
            )
        });
        let restarts = Reason::ALL.map(|r| {
            (
                vec![("reason", r.name().to_string())],
                *counts.restarts.get(&r).unwrap_or(&0) as f64,
            )
        });
        let mut signals: BTreeMap<String, u64> =
            sig::GUNICORN.iter().map(|&s| (sig::name(s), 0)).collect();
        signals.extend(counts.master_signals.iter().map(|(s, n)| (s.clone(), *n)));
        let signals = signals
            .into_iter()
            .map(|(s, n)| (vec![("signal", s)], n as f64));
        vec![
            counter(name::HOOKS, Self::help(name::HOOKS), hooks),
            counter(name::RESTARTS, Self::help(name::RESTARTS), restarts),
            counter(
                name::MASTER_SIGNALS,
                Self::help(name::MASTER_SIGNALS),
                signals,
            ),
        ]
    }

    /// The exporter's own health, and its hook commands.
    fn exporter_families(&self) -> Vec<MetricFamily> {
        let actions = self.actions.read().into_iter().map(|((hook, result), n)| {
            (
                vec![
                    ("hook", hook.name().to_string()),
                    ("result", result.to_string()),
                ],
                n as f64,
            )
        });
        let kernel_errors = self.or_count(
            "the error counters",
            self.maps.errors(),
            [0; error::COUNT as usize],
        );
        let info = &self.fixed.kernel;
        vec![
            counter(name::HOOK_ACTIONS, Self::help(name::HOOK_ACTIONS), actions),
            counter(
                name::KERNEL_ERRORS,
                Self::help(name::KERNEL_ERRORS),
                error::NAMES
                    .iter()
                    .zip(kernel_errors)
                    .map(|(kind, n)| (vec![("kind", kind.to_string())], n as f64)),
            ),
            counter(
                name::COLLECT_ERRORS,
                Self::help(name::COLLECT_ERRORS),
                [(vec![], self.collect_errors.load(Ordering::Relaxed) as f64)],
            ),
            gauge(
                name::BUILD_INFO,
                Self::help(name::BUILD_INFO),
                [(
                    vec![("version", env!("CARGO_PKG_VERSION").to_string())],
                    1.0,
                )],
            ),
            gauge(
                name::KERNEL_INFO,
                Self::help(name::KERNEL_INFO),
                [(
                    vec![
                        ("release", info.release.clone()),
                        ("hooks", info.hooks.name().to_string()),
                    ],
                    1.0,
                )],
            ),
            gauge(
                name::KERNEL_CAPABILITY,
                Self::help(name::KERNEL_CAPABILITY),
                info.capabilities.iter().map(|c| {
                    (
                        vec![("capability", c.name.to_string())],
                        c.present as u8 as f64,
                    )
                }),
            ),
        ]
    }
}

impl Collector for GunicornMetrics {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let view = self.view.latest();
        let kernel = self.or_count("the metrics map", self.maps.metrics(), Vec::new());
        let conns = self.maps.connections();
        let buckets = DurationBuckets::of(&self.fixed.bounds);
        let routes = self.route_series();
        let stats = self.or_count(
            "the master statistics",
            self.maps.master_stats(),
            BTreeMap::new(),
        );
        let mut families = self.exporter_families();
        if self.fixed.identity_labels.is_empty() {
            // Every master's, and those of the masters gone (a USR2's old
            // one), which the view counts for the kernel entries it names.
            let gone = &view.gone_masters;
            let mut total = gone.stats;
            stats
                .iter()
                .filter(|(pid, _)| !gone.pids.contains(pid))
                .for_each(|(_, s)| total.merge(s));
            families.extend(self.connection_families(&total, &buckets));
            families.extend(self.route_families(routes, &buckets));
            families.extend(self.master_families(&view, &kernel, &conns, &buckets));
        } else {
            // Discovery: each master's families from its part of the view,
            // with its identity labels (the registry merges same names).
            for (pid, discovered) in &view.discovered {
                let mine = view.of_master(*pid);
                let conns: Vec<(u32, Conn)> = conns
                    .iter()
                    .filter(|(worker, _)| mine.workers.get(*worker).is_some())
                    .copied()
                    .collect();
                let mut more = self.master_families(&mine, &kernel, &conns, &buckets);
                let mine = stats.get(pid).copied().unwrap_or_default();
                more.extend(self.connection_families(&mine, &buckets));
                let theirs = routes.iter().filter(|(k, _)| k.master == *pid).copied();
                more.extend(self.route_families(theirs.collect(), &buckets));
                exposition::add_labels(&mut more, &discovered.labels);
                families.extend(more);
            }
        }
        families
            .into_iter()
            .filter(|f| !f.get_metric().is_empty())
            .collect()
    }
}

impl GunicornMetrics {
    /// The families of the masters `view` holds (one, in discovery mode).
    fn master_families(
        &self,
        view: &View,
        kernel: &[(MetricKey, Aggregate)],
        conns: &[(u32, Conn)],
        buckets: &DurationBuckets,
    ) -> Vec<MetricFamily> {
        // The kernel's series plus those finished in userspace, of the
        // workers the view knows (one retired meanwhile is in `exited`; one
        // announced late is registered by the next refresh), plus the
        // retired workers' per master.
        let kernel = kernel
            .iter()
            .filter(|(k, _)| view.workers.get(k.tgid).is_some())
            .copied();
        let workers = view.swept.iter().map(|(k, a)| (*k, *a)).chain(kernel);
        let exited = view.exited.iter().map(|(k, a)| (*k, *a));
        let series = merged(
            workers
                .map(|(k, a)| ((self.owner_of(view, k.tgid), k.method, k.status), a))
                .chain(exited.map(|(k, a)| ((self.folded(k.tgid), k.method, k.status), a))),
        );
        let mut families = self.request_families(view, &series, buckets);
        families.extend(self.worker_families(view, &series, conns));
        families.push(gauge(
            name::CONNECTIONS_OPEN,
            Self::help(name::CONNECTIONS_OPEN),
            [(vec![], conns.len() as f64)],
        ));
        families.extend(self.lifecycle_families(view));
        families
    }
}

/// The request (or response) size histogram of `a` under `labels`, over the
/// slots `bounds` use (and +Inf).
fn size_row<'a>(
    labels: Labels,
    a: &'a Aggregate,
    response: bool,
    bounds: &'a [f64],
) -> HistogramRow<'a> {
    let slots = bounds.len() + 1;
    let (counts, sum) = if response {
        (&a.resp_size[..slots], a.resp_bytes_sum)
    } else {
        (&a.req_size[..slots], a.req_bytes_sum)
    };
    HistogramRow {
        labels,
        bounds,
        counts,
        sum: sum as f64,
    }
}
