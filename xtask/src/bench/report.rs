//! Results of the bench, their aggregation (paired ratios to plain gunicorn of
//! the same version, median and min-max over repetitions) and the markdown
//! report.

use std::{collections::BTreeMap, fmt::Write as _};

use super::{
    hosttax::host_tax_name,
    loops::Loop,
    measure::WrkResult,
    scenario::{Cell, Variant},
};

/// One measured run: one configuration, one repetition.
#[derive(Debug, Clone)]
pub struct Run {
    pub cell: Cell,
    pub variant: Variant,
    pub rep: u32,
    pub wrk: WrkResult,
    /// CPU time of the master's and workers' threads during the run
    /// (schedstat, exact), seconds.
    pub worker_cpu_s: f64,
    /// The same from utime + stime (whole clock ticks), for cross-checking.
    pub worker_cpu_ticks_s: f64,
    /// CPU of the side process the configuration needs: the exporter, the
    /// Redis server, the statsd sink.
    pub side_cpu_s: Option<f64>,
    /// Requests the instrumentation counted during the run (exporter: all
    /// responses; plugin: its gunicorn_worker_requests_total, successes only;
    /// statsd: `gunicorn.requests` counters received).
    pub counted: Option<u64>,
    pub exporter: Option<ExporterRun>,
    /// Commands the bench's redis-server processed during the run
    /// (`total_commands_processed`), for the configurations that use it.
    pub redis_commands: Option<u64>,
}

impl Run {
    pub fn worker_cpu_per_req_us(&self) -> f64 {
        per_request_us(self.worker_cpu_s, self.wrk.requests)
    }
    pub fn wrk_cpu_per_req_us(&self) -> f64 {
        per_request_us(self.wrk.cpu_seconds, self.wrk.requests)
    }
    pub fn side_cpu_per_req_us(&self) -> Option<f64> {
        self.side_cpu_s
            .map(|s| per_request_us(s, self.wrk.requests))
    }
}

fn per_request_us(seconds: f64, requests: u64) -> f64 {
    if requests == 0 {
        f64::NAN
    } else {
        seconds * 1e6 / requests as f64
    }
}

/// What the exporter itself did during one run.
#[derive(Debug, Clone, Default)]
pub struct ExporterRun {
    pub cpu_s: f64,
    pub rss_bytes: u64,
    pub rss_peak_bytes: u64,
    /// gunicorn_exporter_kernel_errors_total, all kinds.
    pub kernel_errors: f64,
    pub collect_errors: f64,
    /// gunicorn_worker_failed_requests_total by error_type.
    pub failed: BTreeMap<String, f64>,
    /// Per program name: (run_cnt, run_time_ns, recursion_misses) deltas.
    pub progs: BTreeMap<String, ProgDelta>,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct ProgDelta {
    pub runs: u64,
    pub ns: u64,
    pub misses: u64,
}

impl ExporterRun {
    pub fn bpf_ns(&self) -> u64 {
        self.progs.values().map(|p| p.ns).sum()
    }
    pub fn bpf_runs(&self) -> u64 {
        self.progs.values().map(|p| p.runs).sum()
    }
    pub fn misses(&self) -> u64 {
        self.progs.values().map(|p| p.misses).sum()
    }
}

/// The separate accuracy run of a cell and hook set: gunicorn 27 with an
/// access log and the exporter attached, at full load.
#[derive(Debug, Clone)]
pub struct Accuracy {
    pub cell: Cell,
    /// The exporter's configuration (one of `Variant::EXPORTER`).
    pub variant: Variant,
    pub wrk_requests: u64,
    pub access_log: u64,
    pub exporter: u64,
    pub kernel_errors: f64,
    pub failed: BTreeMap<String, f64>,
    pub rps: f64,
}

/// One loop of one host-tax run: ns per call of each batch, with `variant`
/// attached to the idle gunicorn (`Plain27`: nothing attached).
#[derive(Debug, Clone)]
pub struct HostTaxRun {
    pub variant: Variant,
    pub rep: u32,
    /// Its place in the phase's sequence of runs: a configuration's run has
    /// nothing-attached runs at `seq - 1` and `seq + 1`.
    pub seq: u32,
    pub lp: Loop,
    pub batches: Vec<f64>,
}

impl HostTaxRun {
    /// The run's figure: its median batch.
    pub fn ns_per_call(&self) -> f64 {
        stat(self.batches.iter().copied()).map_or(f64::NAN, |s| s.median)
    }
}

#[derive(Debug, Clone, Default)]
pub struct Results {
    pub env: Vec<(String, String)>,
    /// Tracing BPF programs of other processes, counted at checkpoints while
    /// no exporter of the bench ran: (when, how many).
    pub foreign_progs: Vec<(String, usize)>,
    pub foreign_names: std::collections::BTreeSet<String>,
    pub cells: Vec<Cell>,
    pub variants: Vec<Variant>,
    pub runs: Vec<Run>,
    pub accuracy: Vec<Accuracy>,
    pub host_tax: Vec<HostTaxRun>,
}

/// A per-run figure.
pub type Metric = fn(&Run) -> f64;

/// Median and range of some values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stat {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

pub fn stat(values: impl IntoIterator<Item = f64>) -> Option<Stat> {
    let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some(Stat {
        median,
        min: v[0],
        max: v[n - 1],
        n,
    })
}

impl Results {
    pub fn runs_of(&self, cell: Cell, variant: Variant) -> impl Iterator<Item = &Run> {
        self.runs
            .iter()
            .filter(move |r| r.cell == cell && r.variant == variant)
    }

    /// Absolute values of a metric over the repetitions.
    pub fn absolute(&self, cell: Cell, variant: Variant, m: impl Fn(&Run) -> f64) -> Option<Stat> {
        stat(self.runs_of(cell, variant).map(m))
    }

    /// Per repetition, the metric of `variant` over that of its baseline in
    /// the same repetition (measured next to it); median and range.
    pub fn ratio(&self, cell: Cell, variant: Variant, m: impl Fn(&Run) -> f64) -> Option<Stat> {
        let base = variant.baseline();
        stat(self.runs_of(cell, variant).filter_map(|r| {
            self.runs_of(cell, base)
                .find(|b| b.rep == r.rep)
                .map(|b| m(r) / m(b))
        }))
    }

    /// A host-tax loop's ns per call with `variant` attached, over the
    /// repetitions.
    pub fn host_tax(&self, variant: Variant, lp: Loop) -> Option<Stat> {
        stat(
            self.host_tax
                .iter()
                .filter(|r| r.variant == variant && r.lp == lp)
                .map(HostTaxRun::ns_per_call),
        )
    }

    /// The same over the mean of the nothing-attached runs just before and
    /// after each run (one of them if the other is missing).
    pub fn host_tax_ratio(&self, variant: Variant, lp: Loop) -> Option<Stat> {
        let of = |v: Variant| {
            self.host_tax
                .iter()
                .filter(move |r| r.variant == v && r.lp == lp)
        };
        stat(of(variant).filter_map(|r| {
            let around: Vec<f64> = of(Variant::Plain27)
                .filter(|b| b.seq + 1 == r.seq || b.seq == r.seq + 1)
                .map(HostTaxRun::ns_per_call)
                .collect();
            (!around.is_empty())
                .then(|| r.ns_per_call() * around.len() as f64 / around.iter().sum::<f64>())
        }))
    }

    /// The metrics the table and the chart show, as (name, function, lower is
    /// better).
    pub fn metrics() -> Vec<(&'static str, Metric)> {
        vec![
            ("worker CPU / request", |r| r.worker_cpu_per_req_us()),
            ("load generator CPU / request", |r| r.wrk_cpu_per_req_us()),
            ("requests/s", |r| r.wrk.rps()),
            ("p50 latency", |r| r.wrk.p50_us),
            ("p99 latency", |r| r.wrk.p99_us),
        ]
    }
}

fn fmt_us(us: f64) -> String {
    if !us.is_finite() {
        "-".into()
    } else if us >= 10_000.0 {
        format!("{:.1} ms", us / 1000.0)
    } else if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else if us >= 100.0 {
        format!("{us:.0} µs")
    } else {
        format!("{us:.1} µs")
    }
}

fn fmt_abs(s: Option<Stat>, f: impl Fn(f64) -> String) -> String {
    match s {
        Some(s) if s.n > 1 => format!("{} ({}–{})", f(s.median), f(s.min), f(s.max)),
        Some(s) => f(s.median),
        None => "-".into(),
    }
}

fn fmt_ratio(s: Option<Stat>) -> String {
    match s {
        Some(s) => {
            let digits = if (s.median - 1.0).abs() < 0.1 { 3 } else { 2 };
            if s.n > 1 {
                format!(
                    "{:.d$}× ({:.d$}–{:.d$})",
                    s.median,
                    s.min,
                    s.max,
                    d = digits
                )
            } else {
                format!("{:.d$}×", s.median, d = digits)
            }
        }
        None => "-".into(),
    }
}

fn fmt_rate(r: f64) -> String {
    if r >= 100.0 {
        format!("{r:.0}")
    } else {
        format!("{r:.1}")
    }
}

/// Failed requests by type, the nonzero ones: "RuntimeError 12, http_5xx 3", or "none".
fn fmt_failed(failed: &BTreeMap<String, f64>) -> String {
    let nonzero: Vec<String> = failed
        .iter()
        .filter(|(_, v)| **v > 0.0)
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    if nonzero.is_empty() {
        "none".to_string()
    } else {
        nonzero.join(", ")
    }
}

fn signed_range(values: &[i64]) -> String {
    match (values.iter().min(), values.iter().max()) {
        (Some(lo), Some(hi)) if lo == hi => format!("{lo:+}"),
        (Some(lo), Some(hi)) => format!("{lo:+} … {hi:+}"),
        _ => "-".into(),
    }
}

/// The real exporter configurations that have runs with the exporter measured.
fn exporter_variants(res: &Results) -> Vec<Variant> {
    Variant::EXPORTER
        .into_iter()
        .filter(|&v| {
            res.runs
                .iter()
                .any(|r| r.variant == v && r.exporter.is_some())
        })
        .collect()
}

/// BPF program time per request.
fn bpf_ns_per_req(res: &Results, cell: Cell, variant: Variant) -> Option<Stat> {
    programs_per_req(res, cell, variant, ExporterRun::bpf_ns)
}

/// Program runs per request (every process hitting the hooks counts).
fn hits_per_req(res: &Results, cell: Cell, variant: Variant) -> Option<Stat> {
    programs_per_req(res, cell, variant, ExporterRun::bpf_runs)
}

/// A figure of the exporter's programs per request wrk completed. Runs
/// without BPF statistics (`--no-bpf-stats`) have no programs listed.
fn programs_per_req(
    res: &Results,
    cell: Cell,
    variant: Variant,
    figure: fn(&ExporterRun) -> u64,
) -> Option<Stat> {
    stat(res.runs_of(cell, variant).filter_map(|r| {
        r.exporter
            .as_ref()
            .filter(|e| !e.progs.is_empty())
            .map(|e| figure(e) as f64 / r.wrk.requests.max(1) as f64)
    }))
}

fn exporter_cpu_pct(res: &Results, cell: Cell, variant: Variant) -> Option<Stat> {
    stat(res.runs_of(cell, variant).filter_map(|r| {
        r.exporter
            .as_ref()
            .map(|e| e.cpu_s * 100.0 / r.wrk.seconds.max(1e-9))
    }))
}

/// A markdown table, then a blank line.
fn table(md: &mut String, header: &[&str], rows: impl IntoIterator<Item = Vec<String>>) {
    let _ = writeln!(md, "| {} |", header.join(" | "));
    let _ = writeln!(md, "|{}", "---|".repeat(header.len()));
    for row in rows {
        let _ = writeln!(md, "| {} |", row.join(" | "));
    }
    md.push('\n');
}

/// The report: the environment, then tables of numbers. How they are
/// measured is in the README ("Measuring it").
pub fn markdown(res: &Results) -> String {
    let mut md = String::from("# gunicorn-ebpf-exporter: cost and accuracy benchmark\n\n");
    md.push_str(
        "Ratios: a configuration over plain gunicorn of the same version in the same \
         repetition. Figures: median (min–max) over the repetitions.\n\n",
    );
    for (k, v) in &res.env {
        let _ = writeln!(md, "- {k}: {v}");
    }
    if res.foreign_progs.iter().any(|(_, n)| *n > 0) {
        let counts: Vec<String> = res
            .foreign_progs
            .iter()
            .map(|(when, n)| format!("{n} {when}"))
            .collect();
        let names: Vec<&str> = res.foreign_names.iter().map(String::as_str).collect();
        let _ = writeln!(
            md,
            "- tracing BPF programs of other processes: {} ({})",
            counts.join(", "),
            names.join(", ")
        );
    }
    md.push('\n');
    host_tax_markdown(res, &mut md);
    if res.runs.is_empty() {
        return md;
    }

    let _ = writeln!(md, "## Cost, by workload\n");
    for &cell in &res.cells {
        if !res.runs.iter().any(|r| r.cell == cell) {
            continue;
        }
        let _ = writeln!(md, "### {cell}\n");
        let rows = res
            .variants
            .iter()
            .filter(|&&v| res.runs_of(cell, v).next().is_some())
            .map(|&v| {
                let mut row = vec![if v.is_baseline() {
                    format!("**{}**", v.label())
                } else {
                    v.label().to_string()
                }];
                for (i, (_, m)) in Results::metrics().iter().enumerate() {
                    row.push(match (v.is_baseline(), i) {
                        (true, 2) => fmt_abs(res.absolute(cell, v, m), fmt_rate),
                        (true, _) => fmt_abs(res.absolute(cell, v, m), fmt_us),
                        (false, _) => fmt_ratio(res.ratio(cell, v, m)),
                    });
                }
                let side = res.absolute(cell, v, |r| r.side_cpu_per_req_us().unwrap_or(f64::NAN));
                row.push(fmt_abs(side, fmt_us));
                let diffs: Vec<i64> = res
                    .runs_of(cell, v)
                    .filter_map(|r| r.counted.map(|c| c as i64 - r.wrk.requests as i64))
                    .collect();
                row.push(signed_range(&diffs));
                row
            });
        table(
            &mut md,
            &[
                "configuration (plain: absolute)",
                "worker CPU/request",
                "wrk CPU/request",
                "requests/s",
                "p50",
                "p99",
                "side CPU/request",
                "counted − wrk",
            ],
            rows,
        );
    }

    let exporters = exporter_variants(res);
    if !exporters.is_empty() {
        let _ = writeln!(md, "## The exporter itself\n");
        let mut rows = Vec::new();
        for &cell in &res.cells {
            for &v in &exporters {
                let runs: Vec<&ExporterRun> = res
                    .runs_of(cell, v)
                    .filter_map(|r| r.exporter.as_ref())
                    .collect();
                if runs.is_empty() {
                    continue;
                }
                let cpu_req = stat(res.runs_of(cell, v).filter_map(|r| {
                    let e = r.exporter.as_ref()?;
                    Some(e.cpu_s * 1e6 / r.wrk.requests.max(1) as f64)
                }));
                let rss = runs.iter().map(|e| e.rss_peak_bytes).max().unwrap_or(0);
                let floor = v.floor().unwrap_or(v);
                let floor_hits = hits_per_req(res, cell, floor)
                    .map(|s| format!(" ({:.1})", s.median))
                    .unwrap_or_default();
                let errors: f64 = runs
                    .iter()
                    .map(|e| e.kernel_errors + e.collect_errors)
                    .sum();
                let misses: u64 = runs.iter().map(|e| e.misses()).sum();
                let mut failed: BTreeMap<String, f64> = BTreeMap::new();
                for (k, n) in runs.iter().flat_map(|e| &e.failed) {
                    *failed.entry(k.clone()).or_default() += n;
                }
                let bpf_us = |s: f64| format!("{:.2} µs", s / 1000.0);
                rows.push(vec![
                    cell.to_string(),
                    v.hooks().unwrap_or_default().to_string(),
                    fmt_abs(exporter_cpu_pct(res, cell, v), |v| format!("{v:.2}%")),
                    fmt_abs(cpu_req, fmt_us),
                    format!("{:.1} MB", rss as f64 / 1e6),
                    fmt_abs(bpf_ns_per_req(res, cell, v), bpf_us),
                    fmt_abs(bpf_ns_per_req(res, cell, floor), bpf_us),
                    fmt_abs(hits_per_req(res, cell, v), |v| format!("{v:.1}")) + &floor_hits,
                    errors.to_string(),
                    misses.to_string(),
                    fmt_failed(&failed),
                ]);
            }
        }
        table(
            &mut md,
            &[
                "workload",
                "hooks",
                "exporter CPU (% core)",
                "exporter CPU/request",
                "RSS (peak)",
                "BPF time/request",
                "empty programs' BPF time/request",
                "hook hits/request (empty programs')",
                "kernel + collect errors",
                "missed program runs",
                "failed requests (by type)",
            ],
            rows,
        );
        for &v in &exporters {
            programs_markdown(res, v, &mut md);
        }
    }

    if !res.accuracy.is_empty() {
        let _ = writeln!(md, "## Accuracy at full load (access log on)\n");
        let rows = res.accuracy.iter().map(|a| {
            vec![
                a.cell.to_string(),
                a.variant.hooks().unwrap_or_default().to_string(),
                fmt_rate(a.rps),
                a.wrk_requests.to_string(),
                a.access_log.to_string(),
                a.exporter.to_string(),
                format!("{:+}", a.exporter as i64 - a.access_log as i64),
                a.kernel_errors.to_string(),
                fmt_failed(&a.failed),
            ]
        });
        table(
            &mut md,
            &[
                "workload",
                "hooks",
                "requests/s",
                "wrk completed",
                "access log lines",
                "exporter counted",
                "exporter − access log",
                "kernel errors",
                "failed (by type)",
            ],
            rows,
        );
    }
    redis_traffic(&mut md, res);
    md
}

/// Redis commands per run against requests: the plugin's grow with the
/// request rate, the exporter's are one round trip per interval.
fn redis_traffic(md: &mut String, res: &Results) {
    let rows: Vec<Vec<String>> = res
        .cells
        .iter()
        .flat_map(|&c| [Variant::PluginRedis, Variant::EbpfRedis].map(move |v| (c, v)))
        .filter_map(|(c, v)| {
            let runs: Vec<&Run> = res
                .runs_of(c, v)
                .filter(|r| r.redis_commands.is_some())
                .collect();
            let per = |f: &dyn Fn(&Run) -> f64| stat(runs.iter().map(|r| f(r))).map(|s| s.median);
            let commands = |r: &Run| r.redis_commands.unwrap_or_default() as f64;
            Some(vec![
                c.slug(),
                v.short().to_string(),
                format!("{:.0}", per(&|r| r.wrk.rps())?),
                format!("{:.1}", per(&|r| commands(r) / r.wrk.seconds.max(1e-9))?),
                format!(
                    "{:.3}",
                    per(&|r| commands(r) / r.wrk.requests.max(1) as f64)?
                ),
            ])
        })
        .collect();
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(md, "\n### Redis traffic\n");
    table(
        md,
        &[
            "workload",
            "configuration",
            "requests/s",
            "redis commands/s",
            "redis commands per request",
        ],
        rows,
    );
}

/// Per program of one hook set: runs per request · ns per run (medians), a
/// column per workload.
fn programs_markdown(res: &Results, v: Variant, md: &mut String) {
    let mut names: Vec<&String> = res
        .runs
        .iter()
        .filter(|r| r.variant == v)
        .filter_map(|r| r.exporter.as_ref())
        .flat_map(|e| e.progs.keys())
        .collect();
    names.sort();
    names.dedup();
    if names.is_empty() {
        return;
    }
    let cells: Vec<Cell> = res
        .cells
        .iter()
        .copied()
        .filter(|&c| res.runs_of(c, v).next().is_some())
        .collect();
    let rows = names.into_iter().filter_map(|name| {
        let cols: Vec<Option<String>> = cells
            .iter()
            .map(|&c| {
                let progs = || {
                    res.runs_of(c, v)
                        .filter_map(|r| Some((r, r.exporter.as_ref()?.progs.get(name)?)))
                };
                let per_req =
                    stat(progs().map(|(r, p)| p.runs as f64 / r.wrk.requests.max(1) as f64))?;
                let per_run = stat(
                    progs()
                        .filter(|(_, p)| p.runs > 0)
                        .map(|(_, p)| p.ns as f64 / p.runs as f64),
                )?;
                (per_req.median > 0.0)
                    .then(|| format!("{:.2} · {:.0}", per_req.median, per_run.median))
            })
            .collect();
        cols.iter().any(Option::is_some).then(|| {
            std::iter::once(name.clone())
                .chain(cols.into_iter().map(|c| c.unwrap_or_else(|| "·".into())))
                .collect()
        })
    });
    let _ = writeln!(
        md,
        "### BPF programs, --hooks {}: runs per request · ns per run\n",
        v.hooks().unwrap_or_default()
    );
    let slugs: Vec<String> = cells.iter().map(|c| c.slug()).collect();
    let header: Vec<&str> = std::iter::once("program")
        .chain(slugs.iter().map(String::as_str))
        .collect();
    table(md, &header, rows);
}

fn fmt_ns(ns: f64) -> String {
    if !ns.is_finite() {
        "-".into()
    } else if ns >= 1000.0 {
        format!("{:.2} µs", ns / 1000.0)
    } else {
        format!("{ns:.0} ns")
    }
}

/// The host-tax table: a row per loop, a column per configuration; with
/// nothing attached, ns per call; the others, their ratio to the
/// nothing-attached runs around them and their ns per call.
fn host_tax_markdown(res: &Results, md: &mut String) {
    if res.host_tax.is_empty() {
        return;
    }
    let variants: Vec<Variant> = Variant::ALL
        .into_iter()
        .filter(|&v| res.host_tax.iter().any(|r| r.variant == v))
        .collect();
    let _ = writeln!(
        md,
        "## Host tax: CPU per call of a process the exporter does not watch\n"
    );
    let rows = Loop::ALL
        .into_iter()
        .filter(|&lp| res.host_tax.iter().any(|r| r.lp == lp))
        .map(|lp| {
            let mut row = vec![format!("{} ({})", lp.name(), lp.describe())];
            row.extend(variants.iter().map(|&v| {
                let abs = res.host_tax(v, lp);
                match (v.is_exporter(), res.host_tax_ratio(v, lp)) {
                    (false, _) => fmt_abs(abs, fmt_ns),
                    (true, Some(r)) => format!(
                        "{}, {}",
                        fmt_ratio(Some(r)),
                        fmt_ns(abs.map_or(f64::NAN, |s| s.median))
                    ),
                    (true, None) => "-".into(),
                }
            }));
            row
        });
    let header: Vec<&str> = std::iter::once("call")
        .chain(variants.iter().map(|&v| host_tax_name(v)))
        .collect();
    table(md, &header, rows);
}

/// One line per run, for reanalysis (the host-tax runs last, in the
/// cell, variant, rep and loop columns).
pub fn csv(res: &Results) -> String {
    let mut out = String::from(
        "cell,variant,rep,requests,seconds,rps,p50_us,p90_us,p99_us,mean_us,max_us,\
         status_errors,socket_errors,worker_cpu_s,worker_cpu_ticks_s,wrk_cpu_s,side_cpu_s,counted,\
         exporter_cpu_s,exporter_rss,exporter_rss_peak,bpf_runs,bpf_ns,bpf_misses,kernel_errors,\
         host_tax_seq,loop,ns_per_call,batches_ns\n",
    );
    for r in &res.runs {
        let e = r.exporter.as_ref();
        let opt = |v: Option<String>| v.unwrap_or_default();
        let _ = writeln!(
            out,
            "{},{},{},{},{:.4},{:.1},{},{},{},{:.1},{},{},{},{:.6},{:.2},{:.6},{},{},{},{},{},{},{},{},{},,,,",
            r.cell.slug(),
            r.variant.short(),
            r.rep,
            r.wrk.requests,
            r.wrk.seconds,
            r.wrk.rps(),
            r.wrk.p50_us,
            r.wrk.p90_us,
            r.wrk.p99_us,
            r.wrk.mean_us,
            r.wrk.max_us,
            r.wrk.status_errors,
            r.wrk.socket_errors,
            r.worker_cpu_s,
            r.worker_cpu_ticks_s,
            r.wrk.cpu_seconds,
            opt(r.side_cpu_s.map(|v| format!("{v:.6}"))),
            opt(r.counted.map(|v| v.to_string())),
            opt(e.map(|e| format!("{:.6}", e.cpu_s))),
            opt(e.map(|e| e.rss_bytes.to_string())),
            opt(e.map(|e| e.rss_peak_bytes.to_string())),
            opt(e.map(|e| e.bpf_runs().to_string())),
            opt(e.map(|e| e.bpf_ns().to_string())),
            opt(e.map(|e| e.misses().to_string())),
            opt(e.map(|e| e.kernel_errors.to_string())),
        );
    }
    // The 22 columns from requests to kernel_errors stay empty.
    let empty = ",".repeat(22);
    for r in &res.host_tax {
        let batches: Vec<String> = r.batches.iter().map(|b| format!("{b:.1}")).collect();
        let _ = writeln!(
            out,
            "host-tax,{},{}{empty},{},{},{:.1},{}",
            host_tax_name(r.variant),
            r.rep,
            r.seq,
            r.lp.name(),
            r.ns_per_call(),
            batches.join(" ")
        );
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::bench::scenario::{App, Workers};

    pub fn cell() -> Cell {
        Cell {
            app: App::Trivial,
            workers: Workers::Sync,
            keepalive: false,
        }
    }

    pub fn run(variant: Variant, rep: u32, cpu_s: f64, requests: u64) -> Run {
        Run {
            cell: cell(),
            variant,
            rep,
            wrk: WrkResult {
                requests,
                seconds: 5.0,
                p50_us: 1000.0,
                p99_us: 5000.0,
                cpu_seconds: 0.5,
                ..Default::default()
            },
            worker_cpu_s: cpu_s,
            worker_cpu_ticks_s: cpu_s,
            side_cpu_s: None,
            counted: None,
            exporter: None,
            redis_commands: None,
        }
    }

    #[test]
    fn stat_median_and_range() {
        let s = stat([3.0, 1.0, 2.0, f64::NAN]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.n), (2.0, 1.0, 3.0, 3));
        assert_eq!(stat([1.0, 2.0]).unwrap().median, 1.5);
        assert!(stat([]).is_none());
    }

    #[test]
    fn ratios_are_paired_by_repetition() {
        let mut res = Results {
            cells: vec![cell()],
            variants: vec![Variant::Plain27, Variant::EbpfSockets],
            ..Default::default()
        };
        // Rep 0: plain 1.0 s / 1000 req; ebpf 1.02 s / 1000. Rep 1: plain 2.0 s / 1000, ebpf 2.0 s / 1000.
        res.runs.push(run(Variant::Plain27, 0, 1.0, 1000));
        res.runs.push(run(Variant::EbpfSockets, 0, 1.02, 1000));
        res.runs.push(run(Variant::Plain27, 1, 2.0, 1000));
        res.runs.push(run(Variant::EbpfSockets, 1, 2.0, 1000));
        let s = res
            .ratio(cell(), Variant::EbpfSockets, |r| r.worker_cpu_per_req_us())
            .unwrap();
        assert!((s.min - 1.0).abs() < 1e-9 && (s.max - 1.02).abs() < 1e-9);
        assert!((s.median - 1.01).abs() < 1e-9);
        let md = markdown(&res);
        assert!(md.contains("1.010× (1.000–1.020)"), "{md}");
        assert!(md.contains("**gunicorn 27.0.1**"), "{md}");
        assert!(!md.contains("## The exporter itself"), "{md}");
        for r in res
            .runs
            .iter_mut()
            .filter(|r| r.variant == Variant::EbpfSockets)
        {
            r.exporter = Some(ExporterRun {
                rss_peak_bytes: 9_000_000,
                ..Default::default()
            });
        }
        let md = markdown(&res);
        assert!(
            md.contains("| trivial app, sync workers, close | sockets |"),
            "{md}"
        );
        assert!(md.contains("| 9.0 MB |"), "{md}");
        let csv = csv(&res);
        assert_eq!(csv.lines().count(), 5);
        let columns = |l: &str| l.split(',').count();
        assert!(csv.lines().all(|l| columns(l) == 29), "{csv}");
    }

    #[test]
    fn host_tax_is_paired_with_the_runs_around() {
        let mut res = Results::default();
        let mut seq = 0;
        let mut push = |variant, rep, batches: &[f64]| {
            res.host_tax.push(HostTaxRun {
                variant,
                rep,
                seq,
                lp: Loop::Getppid,
                batches: batches.to_vec(),
            });
            seq += 1;
        };
        push(Variant::Plain27, 0, &[200.0, 190.0, 900.0]);
        push(Variant::EbpfSyscalls, 0, &[260.0, 250.0, 255.0]);
        push(Variant::Plain27, 0, &[200.0]);
        push(Variant::EbpfSyscalls, 1, &[237.0]);
        push(Variant::Plain27, 1, &[160.0]);
        let s = res
            .host_tax_ratio(Variant::EbpfSyscalls, Loop::Getppid)
            .unwrap();
        // 255 / 200 (median batches, the runs around it); 237 / mean(200, 160).
        assert!((s.min - 1.275).abs() < 1e-9 && (s.max - 237.0 / 180.0).abs() < 1e-9);
        let md = markdown(&res);
        assert!(md.contains("## Host tax"), "{md}");
        assert!(md.contains("| call | nothing | ebpf-syscalls |"), "{md}");
        assert!(
            md.contains("200 ns (160 ns–200 ns) | 1.30× (1.27–1.32), 246 ns |"),
            "{md}"
        );
        assert!(!md.contains("## Cost"), "{md}");
        let csv = csv(&res);
        let columns = |l: &str| l.split(',').count();
        let header = columns(csv.lines().next().unwrap());
        assert!(csv.lines().all(|l| columns(l) == header), "{csv}");
        assert!(csv.contains("host-tax,nothing,0,"), "{csv}");
        assert!(csv.contains(",3,getppid,237.0,237.0\n"), "{csv}");
    }

    #[test]
    fn formats() {
        assert_eq!(fmt_us(231.4), "231 µs");
        assert_eq!(fmt_us(12.34), "12.3 µs");
        assert_eq!(fmt_us(2500.0), "2.50 ms");
        assert_eq!(signed_range(&[0, 3, 1]), "+0 … +3");
        assert_eq!(signed_range(&[-2, -2]), "-2");
    }
}
