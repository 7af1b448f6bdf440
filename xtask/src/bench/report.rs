//! Results of the bench, their aggregation (paired ratios to plain gunicorn of
//! the same version, median and min-max over repetitions) and the markdown
//! report.

use std::{collections::BTreeMap, fmt::Write as _};

use super::{
    hosttax::host_tax_name,
    loops::Loop,
    measure::WrkResult,
    scenario::{App, Cell, Variant},
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
    pub notes: Vec<String>,
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

/// "socket hooks", "syscall hooks": how a real exporter configuration is
/// named in the report.
fn hooks_name(v: Variant) -> &'static str {
    match v.hooks() {
        Some("sockets") => "socket hooks",
        Some(_) => "syscall hooks",
        None => "no hooks",
    }
}

/// The real exporter configurations that have runs.
fn exporter_variants(res: &Results) -> Vec<Variant> {
    Variant::EXPORTER
        .into_iter()
        .filter(|&v| res.runs.iter().any(|r| r.variant == v))
        .collect()
}

/// The pass/fail lines for the targets: (target, figures, verdict).
/// The per-request targets get one line per hook set.
pub fn targets(res: &Results) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let verdict = |ok: Option<bool>| match ok {
        Some(true) => "met".to_string(),
        Some(false) => "**not met**".to_string(),
        None => "not measured".to_string(),
    };
    let exporters = exporter_variants(res);
    for &v in &exporters {
        for (app, limit) in [(App::Trivial, 1.02), (App::Realistic, 1.005)] {
            let cells: Vec<(Cell, Stat)> = res
                .cells
                .iter()
                .filter(|c| c.app == app)
                .filter_map(|&c| {
                    res.ratio(c, v, |r| r.worker_cpu_per_req_us())
                        .map(|s| (c, s))
                })
                .collect();
            let figures: Vec<String> = cells
                .iter()
                .map(|(c, s)| {
                    let floor = v
                        .floor()
                        .and_then(|f| res.ratio(*c, f, |r| r.worker_cpu_per_req_us()))
                        .map(|f| format!(", empty programs {:.3}×", f.median))
                        .unwrap_or_default();
                    format!(
                        "{} {}: {:.3}× ({:.3}–{:.3}){floor}",
                        c.workers.name(),
                        c.keepalive_name(),
                        s.median,
                        s.min,
                        s.max
                    )
                })
                .collect();
            let ok = (!cells.is_empty()).then(|| cells.iter().all(|(_, s)| s.median <= limit));
            out.push((
                format!(
                    "worker CPU/request with the exporter ({}) ≤ {limit}× plain, {} app (medians)",
                    hooks_name(v),
                    app.name()
                ),
                figures.join("; "),
                verdict(ok),
            ));
        }
    }

    // The alternatives.
    let mut figures = Vec::new();
    let mut all_above = true;
    let mut any = false;
    for v in [Variant::Statsd, Variant::PluginFile, Variant::PluginRedis] {
        for &c in res.cells.iter().filter(|c| c.app == App::Trivial) {
            if let Some(s) = res.ratio(c, v, |r| r.worker_cpu_per_req_us()) {
                any = true;
                all_above &= s.median >= 1.5;
                figures.push(format!(
                    "{} {} {}: {:.2}×",
                    v.short(),
                    c.workers.name(),
                    c.keepalive_name(),
                    s.median
                ));
            }
        }
    }
    out.push((
        "the alternatives cost ≥ 1.5× worker CPU/request, trivial app (claim)".into(),
        figures.join("; "),
        if any {
            if all_above {
                "holds".into()
            } else {
                "**does not hold everywhere**".into()
            }
        } else {
            "not measured".into()
        },
    ));

    // BPF time per request.
    for &v in &exporters {
        let mut worst: Option<(Cell, Stat)> = None;
        for &c in &res.cells {
            if let Some(s) = bpf_ns_per_req(res, c, v)
                && worst.is_none_or(|(_, w)| s.median > w.median)
            {
                worst = Some((c, s));
            }
        }
        out.push((
            format!(
                "BPF program time ≤ 1.5 µs per request, {} (median, worst cell)",
                hooks_name(v)
            ),
            worst
                .map(|(c, s)| {
                    let floor = v
                        .floor()
                        .and_then(|f| bpf_ns_per_req(res, c, f))
                        .map(|f| {
                            format!(
                                "; empty programs on the same hooks: {:.2} µs",
                                f.median / 1000.0
                            )
                        })
                        .unwrap_or_default();
                    format!(
                        "{:.2} µs ({:.2}–{:.2}), {c}{floor}",
                        s.median / 1000.0,
                        s.min / 1000.0,
                        s.max / 1000.0
                    )
                })
                .unwrap_or_default(),
            verdict(worst.map(|(_, s)| s.median <= 1500.0)),
        ));
    }

    // Exporter CPU at the highest rate, RSS anywhere.
    let mut figures = Vec::new();
    let mut ok = None;
    for &v in &exporters {
        let top = res
            .cells
            .iter()
            .filter_map(|&c| res.absolute(c, v, |r| r.wrk.rps()).map(|s| (c, s.median)))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        if let Some((c, rps)) = top
            && let Some(s) = exporter_cpu_pct(res, c, v)
        {
            figures.push(format!(
                "{}: {:.2}% ({:.2}–{:.2}) at {} req/s, {c}",
                hooks_name(v),
                s.median,
                s.min,
                s.max,
                fmt_rate(rps)
            ));
            ok = Some(ok.unwrap_or(true) && s.median <= 1.0);
        }
    }
    out.push((
        "exporter CPU ≤ 1% of one core at the highest rate reached".into(),
        figures.join("; "),
        verdict(ok),
    ));
    let rss = res
        .runs
        .iter()
        .filter_map(|r| r.exporter.as_ref().map(|e| e.rss_peak_bytes))
        .max();
    out.push((
        "exporter RSS ≤ 30 MB".into(),
        rss.map(|b| format!("peak {:.1} MB over all runs", b as f64 / 1e6))
            .unwrap_or_default(),
        verdict(rss.map(|b| b <= 30_000_000)),
    ));

    // Lost requests, both hook sets together.
    let ebpf_runs: Vec<&Run> = res
        .runs
        .iter()
        .filter(|r| Variant::EXPORTER.contains(&r.variant))
        .collect();
    let kernel_errors: f64 = ebpf_runs
        .iter()
        .filter_map(|r| {
            r.exporter
                .as_ref()
                .map(|e| e.kernel_errors + e.collect_errors)
        })
        .sum::<f64>()
        + res.accuracy.iter().map(|a| a.kernel_errors).sum::<f64>();
    let misses: u64 = ebpf_runs
        .iter()
        .filter_map(|r| r.exporter.as_ref().map(|e| e.misses()))
        .sum();
    let short: Vec<i64> = ebpf_runs
        .iter()
        .filter_map(|r| r.counted.map(|c| c as i64 - r.wrk.requests as i64))
        .filter(|d| *d < 0)
        .collect();
    let measured = !ebpf_runs.is_empty();
    out.push((
        "zero lost requests".into(),
        format!(
            "{} runs (both hook sets): kernel/collect errors {kernel_errors}, missed program \
             runs {misses}, runs counting fewer than wrk completed: {}",
            ebpf_runs.len() + res.accuracy.len(),
            short.len()
        ),
        verdict(measured.then_some(kernel_errors == 0.0 && misses == 0 && short.is_empty())),
    ));
    let exact = res
        .accuracy
        .iter()
        .filter(|a| a.exporter == a.access_log)
        .count();
    out.push((
        "counts exactly equal to the access log at full load".into(),
        format!(
            "{exact} of {} accuracy runs exact (both hook sets)",
            res.accuracy.len()
        ),
        verdict((!res.accuracy.is_empty()).then_some(exact == res.accuracy.len())),
    ));
    out
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

pub fn markdown(res: &Results) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# gunicorn-ebpf-exporter: cost and accuracy benchmark\n"
    );
    let _ = writeln!(
        md,
        "Produced by `cargo xtask bench`. Each configuration ran next to plain gunicorn \
         of the same version, interleaved, in every repetition; a ratio is this \
         configuration's value over plain gunicorn's in the same repetition, shown as \
         median (min–max) over the repetitions. Worker CPU is the on-CPU time of \
         every thread of the gunicorn master and its workers (/proc/<pid>/task/*/schedstat, \
         exact; utime+stime in whole ticks is in runs.csv as a cross-check), wrk's CPU is \
         its rusage, both per request wrk completed. Lower is better for CPU and \
         latency, higher for requests/s.\n"
    );
    for (k, v) in &res.env {
        let _ = writeln!(md, "- {k}: {v}");
    }
    for n in &res.notes {
        let _ = writeln!(md, "- **note:** {n}");
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
            "- **note: not a quiet machine.** Tracing BPF programs of other processes were \
             loaded during the bench ({}; {}). Any program on a syscall tracepoint sends \
             every syscall on the host through the tracing slow path, so every row, the \
             plain ones included, paid for them, and other processes competed for the CPU: \
             rerun on an otherwise idle machine for publishable figures.",
            counts.join(", "),
            names.join(", ")
        );
    }
    md.push('\n');

    if !res.runs.is_empty() {
        let _ = writeln!(md, "## Targets\n");
        let _ = writeln!(md, "| target | measured | verdict |\n|---|---|---|");
        for (t, f, v) in targets(res) {
            let _ = writeln!(md, "| {t} | {f} | {v} |");
        }
        md.push('\n');
    }

    host_tax_markdown(res, &mut md);

    if res.runs.is_empty() {
        return md;
    }
    let _ = writeln!(md, "## Cost, by workload\n");
    let _ = writeln!(
        md,
        "Plain rows are absolute; the others are ratios to the plain row of the same \
         gunicorn version. *side CPU/request* is the CPU of the process the configuration \
         adds (the exporter; redis-server; the statsd sink), absolute. *counted − wrk*: \
         requests the instrumentation counted minus those wrk completed, per run (wrk \
         abandons up to one in-flight request per connection when it stops; the plugin \
         counts successes only).\n"
    );
    for &cell in &res.cells {
        if !res.runs.iter().any(|r| r.cell == cell) {
            continue;
        }
        let _ = writeln!(md, "### {cell}\n");
        let _ = writeln!(
            md,
            "| configuration | worker CPU/request | wrk CPU/request | requests/s | p50 | p99 | side CPU/request | counted − wrk |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|---|---|---|");
        for &v in &res.variants {
            if res.runs_of(cell, v).next().is_none() {
                continue;
            }
            let metrics = Results::metrics();
            let mut cols = Vec::new();
            for (i, (_, m)) in metrics.iter().enumerate() {
                cols.push(if v.is_baseline() {
                    let s = res.absolute(cell, v, m);
                    if i == 2 {
                        fmt_abs(s, fmt_rate)
                    } else {
                        fmt_abs(s, fmt_us)
                    }
                } else {
                    fmt_ratio(res.ratio(cell, v, m))
                });
            }
            let side = res
                .absolute(cell, v, |r| r.side_cpu_per_req_us().unwrap_or(f64::NAN))
                .map(|s| fmt_abs(Some(s), fmt_us))
                .unwrap_or_else(|| "-".into());
            let diffs: Vec<i64> = res
                .runs_of(cell, v)
                .filter_map(|r| r.counted.map(|c| c as i64 - r.wrk.requests as i64))
                .collect();
            let name = if v.is_baseline() {
                format!("**{}**", v.label())
            } else {
                v.label().to_string()
            };
            let _ = writeln!(
                md,
                "| {name} | {} | {side} | {} |",
                cols.join(" | "),
                signed_range(&diffs)
            );
        }
        md.push('\n');
    }

    if res.runs.iter().any(|r| r.exporter.is_some()) {
        let _ = writeln!(md, "## The exporter itself\n");
        let _ = writeln!(
            md,
            "Its process's CPU (as % of one core over the run, and per request) and \
             memory; BPF program time from `kernel.bpf_stats_enabled` (run_time_ns of its \
             programs, read from /proc/<exporter>/fdinfo, per request wrk completed; \
             the stats were on only during these runs, and their own cost (two clock \
             reads per program run) is in the worker CPU above; `--no-bpf-stats` leaves \
             them off). *Hook hits/request* is the sum of its programs' \
             run_cnt over requests: a program runs for every process on the host that \
             hits its hook (wrk, and anything else running), not only gunicorn's; in \
             brackets, the same for the empty programs on that hook set. \
             *Missed* counts program runs the kernel skipped (recursion_misses); \
             *kernel errors* is gunicorn_exporter_kernel_errors_total (+ collect errors).\n"
        );
        let _ = writeln!(
            md,
            "| workload | hooks | exporter CPU (% core) | exporter CPU/request | RSS (peak) | BPF time/request | empty programs' BPF time/request (floor) | hook hits/request (floor's) | kernel errors | missed | failed requests (by type) |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|");
        let exporters = exporter_variants(res);
        for &cell in &res.cells {
            for &v in &exporters {
                let runs: Vec<&Run> = res.runs_of(cell, v).collect();
                if runs.is_empty() {
                    continue;
                }
                let ex = |f: &dyn Fn(&Run, &ExporterRun) -> f64| {
                    stat(
                        runs.iter()
                            .filter_map(|r| r.exporter.as_ref().map(|e| f(r, e))),
                    )
                };
                let cpu_pct = exporter_cpu_pct(res, cell, v);
                let cpu_req = ex(&|r, e| e.cpu_s * 1e6 / r.wrk.requests.max(1) as f64);
                let rss = runs
                    .iter()
                    .filter_map(|r| r.exporter.as_ref().map(|e| e.rss_peak_bytes))
                    .max()
                    .unwrap_or(0);
                let floor = v.floor().unwrap_or(v);
                let bpf = bpf_ns_per_req(res, cell, v);
                let floor_bpf = bpf_ns_per_req(res, cell, floor);
                let hits = hits_per_req(res, cell, v);
                let floor_hits = hits_per_req(res, cell, floor)
                    .map(|s| format!(" ({:.1})", s.median))
                    .unwrap_or_default();
                let errors: f64 = runs
                    .iter()
                    .filter_map(|r| {
                        r.exporter
                            .as_ref()
                            .map(|e| e.kernel_errors + e.collect_errors)
                    })
                    .sum();
                let misses: u64 = runs
                    .iter()
                    .filter_map(|r| r.exporter.as_ref().map(|e| e.misses()))
                    .sum();
                let mut failed: BTreeMap<String, f64> = BTreeMap::new();
                for r in &runs {
                    if let Some(e) = &r.exporter {
                        for (k, v) in &e.failed {
                            *failed.entry(k.clone()).or_default() += v;
                        }
                    }
                }
                let _ = writeln!(
                    md,
                    "| {cell} | {} | {} | {} | {:.1} MB | {} | {} | {}{floor_hits} | {errors} | {misses} | {} |",
                    v.hooks().unwrap_or_default(),
                    fmt_abs(cpu_pct, |v| format!("{v:.2}%")),
                    fmt_abs(cpu_req, fmt_us),
                    rss as f64 / 1e6,
                    fmt_abs(bpf, |ns| format!("{:.2} µs", ns / 1000.0)),
                    fmt_abs(floor_bpf, |ns| format!("{:.2} µs", ns / 1000.0)),
                    fmt_abs(hits, |v| format!("{v:.1}")),
                    fmt_failed(&failed),
                );
            }
        }
        md.push('\n');

        // Per program, one table per hook set.
        for &v in &exporters {
            let mut names: Vec<String> = res
                .runs
                .iter()
                .filter(|r| r.variant == v)
                .filter_map(|r| r.exporter.as_ref())
                .flat_map(|e| e.progs.keys().cloned())
                .collect();
            names.sort();
            names.dedup();
            if names.is_empty() {
                continue;
            }
            let cells: Vec<Cell> = res
                .cells
                .iter()
                .copied()
                .filter(|&c| res.runs_of(c, v).next().is_some())
                .collect();
            let _ = writeln!(
                md,
                "### BPF programs, {}: runs per request · ns per run (medians)\n",
                hooks_name(v)
            );
            let header: Vec<String> = cells.iter().map(|c| c.slug()).collect();
            let _ = writeln!(md, "| program | {} |", header.join(" | "));
            let _ = writeln!(md, "|---|{}", "---|".repeat(cells.len()));
            for name in &names {
                let mut cols = Vec::new();
                let mut any = false;
                for &c in &cells {
                    let per_req = stat(res.runs_of(c, v).filter_map(|r| {
                        let p = r.exporter.as_ref()?.progs.get(name)?;
                        Some(p.runs as f64 / r.wrk.requests.max(1) as f64)
                    }));
                    let per_run = stat(res.runs_of(c, v).filter_map(|r| {
                        let p = r.exporter.as_ref()?.progs.get(name)?;
                        (p.runs > 0).then(|| p.ns as f64 / p.runs as f64)
                    }));
                    match (per_req, per_run) {
                        (Some(q), Some(n)) if q.median > 0.0 => {
                            any = true;
                            cols.push(format!("{:.2} · {:.0}", q.median, n.median));
                        }
                        _ => cols.push("·".into()),
                    }
                }
                if any {
                    let _ = writeln!(md, "| {name} | {} |", cols.join(" | "));
                }
            }
            md.push('\n');
        }
    }

    if !res.accuracy.is_empty() {
        let _ = writeln!(md, "## Accuracy at full load\n");
        let _ = writeln!(
            md,
            "A separate run per workload (so the access log's cost stays out of the \
             CPU figures above) and hook set: gunicorn 27 with `--access-logfile`, \
             the exporter attached, wrk at full load; then the exporter's \
             sum of gunicorn_worker_requests_total against the access log's lines and \
             wrk's completed requests.\n"
        );
        let _ = writeln!(
            md,
            "| workload | hooks | requests/s | wrk completed | access log lines | exporter counted | exporter − access log | kernel errors | failed (by type) |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|");
        for a in &res.accuracy {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {:+} | {} | {} |",
                a.cell,
                a.variant.hooks().unwrap_or_default(),
                fmt_rate(a.rps),
                a.wrk_requests,
                a.access_log,
                a.exporter,
                a.exporter as i64 - a.access_log as i64,
                a.kernel_errors,
                fmt_failed(&a.failed),
            );
        }
        md.push('\n');
    }
    md
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

/// The host-tax table: a row per loop, a column per configuration; nothing
/// attached in ns per call, the others as a ratio to it and their ns.
fn host_tax_markdown(res: &Results, md: &mut String) {
    let variants: Vec<Variant> = Variant::ALL
        .into_iter()
        .filter(|&v| res.host_tax.iter().any(|r| r.variant == v))
        .collect();
    if res.host_tax.is_empty() {
        return;
    }
    let _ = writeln!(md, "## Host tax: what an unrelated process pays\n");
    let _ = writeln!(
        md,
        "CPU time per call of a process the exporter does not watch (a child of the \
         bench), while each configuration is attached to an idle gunicorn 27 (2 sync \
         workers, no request during the loops), with a run with nothing attached just \
         before and just after each one; the configurations take turns in an order that \
         rotates each repetition. Each run times batches of a fixed number of calls with \
         the thread's CPU clock (`CLOCK_THREAD_CPUTIME_ID`), the loops taking turns batch \
         by batch; a run's figure is its median batch. *nothing*: ns per call, median \
         (min–max) over the nothing-attached runs; the others: each run over the mean of \
         the two nothing-attached runs around it, median (min–max) over the repetitions, \
         then the configuration's median ns per call. The syscall hooks send every \
         syscall of every process through the tracing slow path (`getppid` shows that \
         alone); the socket hooks run a program on every socket send and receive on the \
         host (`unix`, `tcp`); the socket hooks' uprobe on the C library's `write()` is \
         placed in gunicorn's workers only (`write`). `kernel.bpf_stats_enabled` is left \
         as it was during these runs.\n"
    );
    let header: Vec<&str> = variants.iter().map(|&v| host_tax_name(v)).collect();
    let _ = writeln!(md, "| call | {} |", header.join(" | "));
    let _ = writeln!(md, "|---|{}", "---|".repeat(variants.len()));
    for lp in Loop::ALL {
        if !res.host_tax.iter().any(|r| r.lp == lp) {
            continue;
        }
        let cols: Vec<String> = variants
            .iter()
            .map(|&v| {
                let abs = res.host_tax(v, lp);
                if v.is_exporter() {
                    match res.host_tax_ratio(v, lp) {
                        Some(r) => format!(
                            "{}, {}",
                            fmt_ratio(Some(r)),
                            fmt_ns(abs.map_or(f64::NAN, |s| s.median))
                        ),
                        None => "-".into(),
                    }
                } else {
                    fmt_abs(abs, fmt_ns)
                }
            })
            .collect();
        let _ = writeln!(
            md,
            "| {} ({}) | {} |",
            lp.name(),
            lp.describe(),
            cols.join(" | ")
        );
    }
    md.push('\n');
}

/// One line per loop and run of the host tax: "getppid: ebpf-sockets 1.00×,
/// ebpf-syscalls 1.34×".
pub fn host_tax_summary(res: &Results) -> Vec<String> {
    Loop::ALL
        .into_iter()
        .filter(|&lp| res.host_tax.iter().any(|r| r.lp == lp))
        .map(|lp| {
            let ratios: Vec<String> = Variant::ALL
                .into_iter()
                .filter_map(|v| {
                    res.host_tax_ratio(v, lp)
                        .filter(|_| v.is_exporter())
                        .map(|s| format!("{} {:.2}×", v.short(), s.median))
                })
                .collect();
            format!("{}: {}", lp.name(), ratios.join(", "))
        })
        .collect()
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
    use crate::bench::scenario::Workers;

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
        let t = targets(&res);
        assert!(t[0].0.contains("(socket hooks)"), "{t:?}");
        assert!(t[0].1.contains("1.010×"), "{t:?}");
        assert_eq!(t[0].2, "met");
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
        assert!(!md.contains("## Targets"), "{md}");
        assert_eq!(host_tax_summary(&res), ["getppid: ebpf-syscalls 1.30×"]);
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
