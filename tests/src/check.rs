//! Comparisons between the exporter's metrics and the truth from outside it
//! (access log, client counts, hook markers), and the failure "story" every
//! assertion carries: exporter stderr, Gunicorn's logs, the relevant metric lines.

use std::{collections::BTreeMap, time::Duration};

use crate::{
    access_log::{self, AccessRecord},
    fixtures::{exporter::Exporter, gunicorn::Gunicorn},
    http::Traffic,
    prom::{Metrics, describe_labels},
    unix_now, wait,
};

pub const REQUESTS: &str = "gunicorn_worker_requests_total";
pub const FAILED: &str = "gunicorn_worker_failed_requests_total";
pub const DURATION: &str = "gunicorn_worker_request_duration_seconds";
pub const REQUEST_SIZE: &str = "gunicorn_worker_request_size_bytes";
pub const RESPONSE_SIZE: &str = "gunicorn_worker_response_size_bytes";
pub const WORKERS: &str = "gunicorn_workers";
pub const KERNEL_ERRORS: &str = "gunicorn_exporter_kernel_errors_total";

/// How long the exporter may take to show requests that have ended (the
/// contract's "deadline ~10 s", with a margin for a busy machine).
pub const COUNT_TIMEOUT: Duration = Duration::from_secs(15);

/// Everything a failure message should show: the exporter's stderr, Gunicorn's
/// logs and markers, and the request metric lines of `m` (when given).
pub fn story(g: &Gunicorn, e: &Exporter, m: Option<&Metrics>) -> String {
    let mut s = format!("{}\n{}", e.story(), g.story());
    if let Some(m) = m {
        s.push_str("--- exporter metric lines:\n");
        s.push_str(&metric_lines(m));
    }
    s
}

/// The request counters, histogram sums/counts, worker gauge and kernel errors.
pub fn metric_lines(m: &Metrics) -> String {
    let mut out = String::new();
    for line in m.text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let wanted = line.starts_with(REQUESTS)
            || line.starts_with(FAILED)
            || line.starts_with(WORKERS)
            || line.starts_with(KERNEL_ERRORS)
            || ((line.starts_with(DURATION)
                || line.starts_with(REQUEST_SIZE)
                || line.starts_with(RESPONSE_SIZE))
                && !line.contains("_bucket{"));
        if wanted {
            out.push_str(line);
            out.push('\n');
        }
    }
    if out.is_empty() {
        out.push_str("(no request metrics)\n");
    }
    out
}

/// Scrapes until `pred` accepts the metrics or [`COUNT_TIMEOUT`] passes; returns
/// the last scrape either way (the caller's exact assertions then explain a
/// mismatch in detail). A failing scrape panics with the story.
pub fn wait_metrics(
    g: &Gunicorn,
    e: &Exporter,
    what: &str,
    pred: impl Fn(&Metrics) -> Result<(), String>,
) -> Metrics {
    let mut last = None;
    let r = wait::until(what, COUNT_TIMEOUT, || {
        let m = e.try_scrape().map_err(|err| err.to_string());
        let m = match m {
            Ok(m) => m,
            Err(err) => return Ok(Err(err)),
        };
        let verdict = pred(&m);
        last = Some(m);
        verdict.map(Ok)
    });
    match r {
        Ok(Err(err)) => panic!("{err}\n{}", story(g, e, None)),
        Ok(Ok(())) => {}
        Err(err) => eprintln!("note: {err} (asserting on the last scrape)"),
    }
    last.expect("at least one scrape")
}

/// Waits until the access log holds `responses` lines (what the client
/// received) and then until the exporter's request total equals them. Returns
/// the last scrape and the access log.
pub fn wait_counted(g: &Gunicorn, e: &Exporter, responses: u64) -> (Metrics, Vec<AccessRecord>) {
    let records = g
        .wait_access_log_lines(responses as usize, COUNT_TIMEOUT)
        .unwrap_or_else(|err| {
            panic!(
                "the client got {responses} responses but the access log disagrees: {err}\n{}",
                story(g, e, None)
            )
        });
    let n = records.len() as f64;
    let m = wait_metrics(g, e, &format!("the exporter to count {n} requests"), |m| {
        let total = m.sum_all(REQUESTS);
        if total == n {
            Ok(())
        } else {
            Err(format!("{REQUESTS} sums to {total}"))
        }
    });
    (m, records)
}

/// Formats a comparison of two keyed counts, marking the differing keys.
pub fn compare_table(
    key_names: &[&str],
    left_name: &str,
    left: &BTreeMap<Vec<String>, f64>,
    right_name: &str,
    right: &BTreeMap<Vec<String>, f64>,
) -> (bool, String) {
    let mut keys: Vec<&Vec<String>> = left.keys().chain(right.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut same = true;
    let mut out = format!(
        "{:<40} {:>12} {:>12}\n",
        key_names.join(","),
        left_name,
        right_name
    );
    for k in keys {
        let l = left.get(k).copied().unwrap_or(0.0);
        let r = right.get(k).copied().unwrap_or(0.0);
        let mark = if l == r { "" } else { "  <-- differs" };
        if l != r {
            same = false;
        }
        out.push_str(&format!("{:<40} {:>12} {:>12}{mark}\n", k.join(","), l, r));
    }
    (same, out)
}

/// Panics unless the exporter's `gunicorn_worker_requests_total` per
/// (pid, status, method) equals the access log's counts exactly.
pub fn assert_requests_match(g: &Gunicorn, e: &Exporter, m: &Metrics, records: &[AccessRecord]) {
    let exporter = m.group_by(REQUESTS, &["pid", "status", "method"]);
    let truth = access_log::counts_by_pid_status_method(records);
    let (same, table) = compare_table(
        &["pid", "status", "method"],
        "exporter",
        &exporter,
        "access log",
        &truth,
    );
    assert!(
        same,
        "{REQUESTS} per (pid, status, method) differs from the access log:\n{table}\n{}",
        story(g, e, Some(m))
    );
}

/// Panics unless `gunicorn_worker_failed_requests_total{error_type="http_5xx"}`
/// per (pid, method) equals the access log's 5xx responses.
pub fn assert_5xx_match(g: &Gunicorn, e: &Exporter, m: &Metrics, records: &[AccessRecord]) {
    let mut exporter = BTreeMap::new();
    for s in m.get(FAILED) {
        if s.labels.get("error_type").map(String::as_str) == Some("http_5xx") {
            let key = vec![
                s.labels.get("pid").cloned().unwrap_or_default(),
                s.labels.get("method").cloned().unwrap_or_default(),
            ];
            *exporter.entry(key).or_insert(0.0) += s.value;
        }
    }
    let fives: Vec<AccessRecord> = records
        .iter()
        .filter(|r| r.status >= 500)
        .cloned()
        .collect();
    let truth = access_log::counts_by_pid_method(&fives);
    let (same, table) = compare_table(
        &["pid", "method"],
        "exporter",
        &exporter,
        "access log 5xx",
        &truth,
    );
    assert!(
        same,
        "{FAILED}{{error_type=\"http_5xx\"}} differs from the access log's 5xx responses:\n{table}\n{}",
        story(g, e, Some(m))
    );
}

/// Error types that are not responses (requests read but never answered).
pub const UNANSWERED: &[&str] = &["aborted", "worker_timeout", "worker_crash", "worker_killed"];

/// Panics unless the failed requests that were answered (every error_type but
/// [`UNANSWERED`]) per (pid, method, error_type) match the access log's 5xx
/// responses, where a 500 Gunicorn made for an app exception carries the
/// exception class from its error log ("Error handling request" record of the
/// same worker, in order) and any other 5xx is `http_5xx`.
pub fn assert_failures_match(g: &Gunicorn, e: &Exporter, m: &Metrics, records: &[AccessRecord]) {
    let mut exporter = BTreeMap::new();
    for s in m.get(FAILED) {
        let l = |k: &str| s.labels.get(k).cloned().unwrap_or_default();
        if !UNANSWERED.contains(&l("error_type").as_str()) {
            *exporter
                .entry(vec![l("pid"), l("method"), l("error_type")])
                .or_insert(0.0) += s.value;
        }
    }
    let mut exceptions = g.app_exceptions();
    let mut truth = BTreeMap::new();
    for r in records.iter().filter(|r| r.status >= 500) {
        let mut kind = "http_5xx".to_string();
        if r.status == 500
            && let Some(i) = exceptions.iter().position(|(pid, _)| *pid == r.pid)
        {
            kind = exceptions.remove(i).1;
        }
        *truth
            .entry(vec![r.pid.to_string(), r.method.clone(), kind])
            .or_insert(0.0) += 1.0;
    }
    let (same, table) = compare_table(
        &["pid", "method", "error_type"],
        "exporter",
        &exporter,
        "logs",
        &truth,
    );
    assert!(
        same,
        "{FAILED} (answered) differs from the access log's 5xx responses and the error \
         log's app exceptions {:?}:\n{table}\n{}",
        g.app_exceptions(),
        story(g, e, Some(m))
    );
}

/// Panics unless the `_count` of the duration and size histograms per
/// (pid, method) equals the access log's requests.
pub fn assert_histogram_counts_match(
    g: &Gunicorn,
    e: &Exporter,
    m: &Metrics,
    records: &[AccessRecord],
) {
    let truth = access_log::counts_by_pid_method(records);
    for base in [DURATION, REQUEST_SIZE, RESPONSE_SIZE] {
        let exporter = m.group_by(&format!("{base}_count"), &["pid", "method"]);
        let (same, table) = compare_table(
            &["pid", "method"],
            "exporter",
            &exporter,
            "access log",
            &truth,
        );
        assert!(
            same,
            "{base}_count per (pid, method) differs from the access log:\n{table}\n{}",
            story(g, e, Some(m))
        );
    }
}

/// Panics unless the request/response size sums equal the bytes the client
/// sent/received.
pub fn assert_bytes_match(g: &Gunicorn, e: &Exporter, m: &Metrics, traffic: &Traffic) {
    let req = m.sum_all(&format!("{REQUEST_SIZE}_sum"));
    let resp = m.sum_all(&format!("{RESPONSE_SIZE}_sum"));
    assert!(
        req == traffic.sent as f64 && resp == traffic.received as f64,
        "byte sums differ from the client's counts: {REQUEST_SIZE}_sum = {req} vs sent {}, \
         {RESPONSE_SIZE}_sum = {resp} vs received {} (client: {:?})\n{}",
        traffic.sent,
        traffic.received,
        traffic,
        story(g, e, Some(m))
    );
}

/// Panics unless `gunicorn_exporter_kernel_errors_total` is exported and 0 for
/// every kind.
pub fn assert_no_kernel_errors(g: &Gunicorn, e: &Exporter, m: &Metrics) {
    let samples: Vec<_> = m.get(KERNEL_ERRORS).collect();
    assert!(
        !samples.is_empty(),
        "{KERNEL_ERRORS} is not exported\n{}",
        story(g, e, Some(m))
    );
    let bad: Vec<String> = samples
        .iter()
        .filter(|s| s.value != 0.0)
        .map(|s| format!("{{{}}} {}", describe_labels(&s.labels), s.value))
        .collect();
    assert!(
        bad.is_empty(),
        "kernel-side errors: {KERNEL_ERRORS} {bad:?}\n{}",
        story(g, e, Some(m))
    );
}

/// Panics unless every series of histogram `base` is well formed: cumulative
/// buckets never decrease, the last is `+Inf` and equals `_count`, and `_sum` is
/// finite and not negative.
pub fn assert_histograms_sane(g: &Gunicorn, e: &Exporter, m: &Metrics, base: &str) {
    for h in m.histograms(base) {
        let what = format!("{base}{{{}}}", h.describe());
        let problem = if h.buckets.is_empty() {
            Some("has no buckets".to_string())
        } else if h.buckets.windows(2).any(|w| w[1].1 < w[0].1) {
            Some(format!("has decreasing cumulative buckets {:?}", h.buckets))
        } else if h.buckets.last().map(|b| b.0) != Some(f64::INFINITY) {
            Some("has no +Inf bucket".to_string())
        } else if h.buckets.last().map(|b| b.1) != Some(h.count) {
            Some(format!(
                "has count {} but its +Inf bucket holds {:?}",
                h.count,
                h.buckets.last()
            ))
        } else if !h.sum.is_finite() || h.sum < 0.0 {
            Some(format!("has sum {}", h.sum))
        } else {
            None
        };
        if let Some(p) = problem {
            panic!("{what} {p}\n{}", story(g, e, Some(m)));
        }
    }
}

/// Panics unless every per-worker series names a worker of `g`'s master: its
/// `pid` is a worker the hooks saw forked, and its `worker_id` is
/// `worker_<age>_<start unix seconds>` with that worker's age from the
/// `post_fork` marker and a start time since the master was launched.
pub fn assert_worker_labels(g: &Gunicorn, e: &Exporter, m: &Metrics) {
    let ages = g.worker_ages();
    let now = unix_now();
    for s in &m.samples {
        let (Some(pid), Some(id)) = (s.labels.get("pid"), s.labels.get("worker_id")) else {
            if s.name.starts_with("gunicorn_worker_") {
                panic!(
                    "{}{{{}}} lacks a pid or worker_id label\n{}",
                    s.name,
                    describe_labels(&s.labels),
                    story(g, e, Some(m))
                );
            }
            continue;
        };
        // Folded series (`exited`, `all`) carry the master's pid.
        if matches!(id.as_str(), "exited" | "all") {
            if *pid != g.master_pid().to_string() {
                panic!(
                    "{}{{{}}}: a folded series whose pid is not the master's\n{}",
                    s.name,
                    describe_labels(&s.labels),
                    story(g, e, Some(m))
                );
            }
            continue;
        }
        let fail = |why: String| -> ! {
            panic!(
                "{}{{{}}}: {why} (workers from post_fork markers, pid -> age: {ages:?})\n{}",
                s.name,
                describe_labels(&s.labels),
                story(g, e, Some(m))
            )
        };
        let Some(age) = pid.parse::<u32>().ok().and_then(|p| ages.get(&p)) else {
            fail(format!(
                "pid {pid} is not a worker of master {}",
                g.master_pid()
            ));
        };
        let parts: Vec<&str> = id.split('_').collect();
        if parts.len() != 3 || parts[0] != "worker" || parts[1] != age.to_string() {
            fail(format!(
                "worker_id {id:?} is not worker_{age}_<start seconds>"
            ));
        }
        match parts[2].parse::<f64>() {
            Ok(t) if t >= g.started_unix().floor() - 1.0 && t <= now + 1.0 => {}
            _ => fail(format!(
                "worker_id {id:?}: the start time is not between the master's launch ({:.0}) and now ({now:.0})",
                g.started_unix()
            )),
        }
    }
}
