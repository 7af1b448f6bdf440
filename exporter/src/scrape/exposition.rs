//! Metric names, and builders for the families the collectors export.
//! Names follow gunicorn-prometheus-exporter where it has one, so existing
//! dashboards keep working.

use prometheus::{
    core::Desc,
    proto::{Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType},
};

/// The metric names.
pub mod name {
    pub const REQUESTS: &str = "gunicorn_worker_requests_total";
    pub const DURATION: &str = "gunicorn_worker_request_duration_seconds";
    pub const REQUEST_SIZE: &str = "gunicorn_worker_request_size_bytes";
    pub const RESPONSE_SIZE: &str = "gunicorn_worker_response_size_bytes";
    pub const FAILED: &str = "gunicorn_worker_failed_requests_total";
    // Per route, every worker's requests summed (routes.rs).
    pub const HTTP_REQUESTS: &str = "gunicorn_http_requests_total";
    pub const HTTP_DURATION: &str = "gunicorn_http_request_duration_seconds";
    pub const HTTP_REQUEST_SIZE: &str = "gunicorn_http_request_size_bytes";
    pub const HTTP_RESPONSE_SIZE: &str = "gunicorn_http_response_size_bytes";
    pub const ROUTE_OVERFLOW: &str = "gunicorn_http_route_overflow_requests_total";
    pub const WORKERS: &str = "gunicorn_workers";
    pub const WORKER_STATE: &str = "gunicorn_worker_state";
    pub const BUSY: &str = "gunicorn_worker_busy";
    pub const QUEUE: &str = "gunicorn_request_queue_seconds";
    pub const CONNECTIONS: &str = "gunicorn_connections_total";
    pub const CONNECTIONS_OPEN: &str = "gunicorn_connections_open";
    pub const WORKERS_BUSY: &str = "gunicorn_workers_busy";
    pub const BUSY_SECONDS: &str = "gunicorn_worker_busy_seconds_total";
    pub const HEARTBEAT_AGE: &str = "gunicorn_worker_heartbeat_age_seconds";
    pub const HOOKS: &str = "gunicorn_hook_events_total";
    pub const RESTARTS: &str = "gunicorn_master_worker_restart_total";
    pub const MASTER_SIGNALS: &str = "gunicorn_master_signals_total";
    pub const HOOK_ACTIONS: &str = "gunicorn_exporter_hook_actions_total";
    pub const UP: &str = "gunicorn_up";
    pub const KERNEL_ERRORS: &str = "gunicorn_exporter_kernel_errors_total";
    pub const COLLECT_ERRORS: &str = "gunicorn_exporter_collect_errors_total";
    pub const BUILD_INFO: &str = "gunicorn_exporter_build_info";
    pub const KERNEL_INFO: &str = "gunicorn_exporter_kernel_info";
    pub const KERNEL_CAPABILITY: &str = "gunicorn_exporter_kernel_capability";
    pub const UNFRAMED: &str = "gunicorn_exporter_unframed_responses_total";
    pub const REDIS_ERRORS: &str = "gunicorn_exporter_redis_errors_total";
    // Resources, from /proc (resources.rs).
    pub const WORKER_MEMORY: &str = "gunicorn_worker_memory_bytes";
    pub const MASTER_MEMORY: &str = "gunicorn_master_memory_bytes";
    pub const WORKER_CPU: &str = "gunicorn_worker_cpu_seconds_total";
    pub const MASTER_CPU: &str = "gunicorn_master_cpu_seconds_total";
    pub const WORKER_CPU_PERCENT: &str = "gunicorn_worker_cpu_percent";
    pub const MASTER_CPU_PERCENT: &str = "gunicorn_master_cpu_percent";
    pub const WORKER_UPTIME: &str = "gunicorn_worker_uptime_seconds";
    pub const MASTER_UPTIME: &str = "gunicorn_master_uptime_seconds";
    pub const WORKER_THREADS: &str = "gunicorn_worker_threads";
    pub const MASTER_THREADS: &str = "gunicorn_master_threads";
    pub const WORKER_OPEN_FDS: &str = "gunicorn_worker_open_fds";
    pub const MASTER_OPEN_FDS: &str = "gunicorn_master_open_fds";
    pub const WORKER_CONTEXT_SWITCHES: &str = "gunicorn_worker_context_switches_total";
    pub const MASTER_CONTEXT_SWITCHES: &str = "gunicorn_master_context_switches_total";
    // Listen backlogs (backlog.rs).
    pub const LISTEN_BACKLOG: &str = "gunicorn_listen_backlog";
    pub const LISTEN_BACKLOG_LIMIT: &str = "gunicorn_listen_backlog_limit";
}

/// A family a collector declares: name, help text, label names.
pub type Family = (&'static str, &'static str, &'static [&'static str]);

/// The descriptors of `families`, the label names `extra` added to each
/// but those named in `without` (discovery's identity labels, which the
/// node-wide families do not carry).
pub fn descs_with(
    families: &[Family],
    extra: &[String],
    without: &[&str],
) -> prometheus::Result<Vec<Desc>> {
    families
        .iter()
        .map(|(name, help, labels)| {
            let mut labels: Vec<String> = labels.iter().map(|l| l.to_string()).collect();
            if !without.contains(name) {
                labels.extend(extra.iter().cloned());
            }
            Desc::new(
                name.to_string(),
                help.to_string(),
                labels,
                Default::default(),
            )
        })
        .collect()
}

/// Appends `pairs` to every series of `families`: a discovered master's
/// identity labels.
pub fn add_labels(families: &mut [MetricFamily], pairs: &[(String, String)]) {
    for family in families {
        for metric in family.mut_metric() {
            let mut labels = metric.take_label();
            labels.extend(pairs.iter().map(|(name, value)| {
                let mut pair = LabelPair::default();
                pair.set_name(name.clone());
                pair.set_value(value.clone());
                pair
            }));
            metric.set_label(labels);
        }
    }
}

/// The help text `families` declares for `name`.
pub fn help(families: &[Family], name: &str) -> &'static str {
    families.iter().find(|f| f.0 == name).map_or("", |f| f.1)
}

/// Label name/value pairs of one series.
pub type Labels = Vec<(&'static str, String)>;

/// One histogram series: finite upper bounds with their per-bucket (not
/// cumulative) counts, then the `+Inf` count, and the sum.
pub struct HistogramRow<'a> {
    pub labels: Labels,
    pub bounds: &'a [f64],
    pub counts: &'a [u64],
    pub sum: f64,
}

fn labels(pairs: Labels) -> Vec<LabelPair> {
    pairs
        .into_iter()
        .map(|(name, value)| {
            let mut pair = LabelPair::default();
            pair.set_name(name.to_string());
            pair.set_value(value);
            pair
        })
        .collect()
}

fn family(name: &str, help: &str, kind: MetricType, metrics: Vec<Metric>) -> MetricFamily {
    let mut family = MetricFamily::default();
    family.set_name(name.to_string());
    family.set_help(help.to_string());
    family.set_field_type(kind);
    family.set_metric(metrics);
    family
}

/// A family of single-value series; `set` stores the value in a metric.
fn scalar(
    name: &str,
    help: &str,
    kind: MetricType,
    rows: impl IntoIterator<Item = (Labels, f64)>,
    set: fn(&mut Metric, f64),
) -> MetricFamily {
    let metrics = rows
        .into_iter()
        .map(|(pairs, value)| {
            let mut metric = Metric::from_label(labels(pairs));
            set(&mut metric, value);
            metric
        })
        .collect();
    family(name, help, kind, metrics)
}

pub fn counter(
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (Labels, f64)>,
) -> MetricFamily {
    scalar(name, help, MetricType::COUNTER, rows, |metric, value| {
        let mut counter = Counter::default();
        counter.set_value(value);
        metric.set_counter(counter);
    })
}

pub fn gauge(
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (Labels, f64)>,
) -> MetricFamily {
    scalar(name, help, MetricType::GAUGE, rows, |metric, value| {
        let mut gauge = Gauge::default();
        gauge.set_value(value);
        metric.set_gauge(gauge);
    })
}

pub fn histogram<'a>(
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = HistogramRow<'a>>,
) -> MetricFamily {
    let metrics = rows
        .into_iter()
        .map(|row| {
            let mut cumulative = 0u64;
            let buckets = row
                .bounds
                .iter()
                .zip(row.counts)
                .map(|(&bound, &count)| {
                    cumulative += count;
                    let mut bucket = Bucket::default();
                    bucket.set_upper_bound(bound);
                    bucket.set_cumulative_count(cumulative);
                    bucket
                })
                .collect();
            let total: u64 = row.counts.iter().sum();
            let mut histogram = Histogram::default();
            histogram.set_bucket(buckets);
            histogram.set_sample_count(total);
            histogram.set_sample_sum(row.sum);
            let mut metric = Metric::from_label(labels(row.labels));
            metric.set_histogram(histogram);
            metric
        })
        .collect();
    family(name, help, MetricType::HISTOGRAM, metrics)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{Encoder, TextEncoder};

    fn text(families: &[MetricFamily]) -> String {
        let mut out = Vec::new();
        TextEncoder::new().encode(families, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn histogram_is_cumulative_with_inf() {
        let row = HistogramRow {
            labels: vec![("pid", "7".into())],
            bounds: &[0.1, 1.0],
            counts: &[2, 3, 1],
            sum: 4.5,
        };
        let out = text(&[histogram("h_seconds", "help", [row])]);
        assert!(
            out.contains("h_seconds_bucket{pid=\"7\",le=\"0.1\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("h_seconds_bucket{pid=\"7\",le=\"1\"} 5\n"),
            "{out}"
        );
        assert!(
            out.contains("h_seconds_bucket{pid=\"7\",le=\"+Inf\"} 6\n"),
            "{out}"
        );
        assert!(out.contains("h_seconds_sum{pid=\"7\"} 4.5\n"), "{out}");
        assert!(out.contains("h_seconds_count{pid=\"7\"} 6\n"), "{out}");
    }

    #[test]
    fn counters_and_gauges() {
        let out = text(&[
            counter("c_total", "a counter", [(vec![("kind", "x".into())], 3.0)]),
            gauge("g", "a gauge", [(vec![], 2.0)]),
        ]);
        assert!(
            out.contains("# TYPE c_total counter\nc_total{kind=\"x\"} 3\n"),
            "{out}"
        );
        assert!(out.contains("# TYPE g gauge\ng 2\n"), "{out}");
    }

    /// A discovered master's labels go after each series' own, and only the
    /// families not node-wide declare them.
    #[test]
    fn identity_labels_appended() {
        let mut families = vec![counter(
            "a_total",
            "A.",
            [(vec![("hook", "x".into())], 1.0)],
        )];
        add_labels(
            &mut families,
            &[("app".into(), "shop".into()), ("ns_pid".into(), "".into())],
        );
        let names: Vec<(&str, &str)> = families[0].get_metric()[0]
            .get_label()
            .iter()
            .map(|l| (l.name(), l.value()))
            .collect();
        assert_eq!(names, [("hook", "x"), ("app", "shop"), ("ns_pid", "")]);
        let families: [Family; 2] = [("a_total", "A.", &["hook"]), ("b_total", "B.", &[])];
        let descs = descs_with(&families, &["app".into()], &["b_total"]).unwrap();
        assert_eq!(descs[0].variable_labels, ["hook", "app"]);
        assert!(descs[1].variable_labels.is_empty());
    }
}
