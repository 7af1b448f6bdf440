//! Prometheus text exposition (0.0.4), parsed by `openmetrics-parser` (a
//! malformed exposition is an error) and flattened into samples, with the
//! queries the tests need: sums over label predicates, group-by, histograms
//! and the difference of two scrapes.

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use openmetrics_parser::{MetricNumber, PrometheusValue, prometheus::parse_prometheus};

use crate::http;

pub type Labels = BTreeMap<String, String>;

/// One sample line: `name{labels} value`.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Labels,
    pub value: f64,
}

/// A parsed scrape, with its text kept for failure messages.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    /// Every sample, those of histograms and summaries as their `_bucket`,
    /// `_sum`, `_count` and quantile lines, by metric family name.
    pub samples: Vec<Sample>,
    pub text: String,
    /// The histogram series by family name, sorted by labels.
    histograms: BTreeMap<String, Vec<Histogram>>,
}

/// One histogram series (`<base>_bucket`/`_sum`/`_count` with the same labels
/// apart from `le`).
#[derive(Clone, Debug, PartialEq)]
pub struct Histogram {
    /// The series' labels, without `le`.
    pub labels: Labels,
    /// `(le, cumulative count)`, sorted by `le`; the last is `+Inf` when exported.
    pub buckets: Vec<(f64, f64)>,
    pub sum: f64,
    pub count: f64,
}

impl Metrics {
    /// Parses exposition text; a malformed one is an error saying where.
    pub fn parse(text: &str) -> Result<Metrics, String> {
        let exposition = parse_prometheus(text).map_err(|e| e.to_string())?;
        let mut families: Vec<_> = exposition.families.into_values().collect();
        families.sort_by(|a, b| a.family_name.cmp(&b.family_name));
        let mut m = Metrics {
            text: text.to_string(),
            ..Metrics::default()
        };
        for family in &families {
            let name = family.family_name.as_str();
            for sample in family.iter_samples() {
                let labels: Labels = sample
                    .get_labelset()
                    .map_err(|e| format!("{name}: {e}"))?
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                let mut push = |suffix: &str, labels: Labels, value: f64| {
                    m.samples.push(Sample {
                        name: format!("{name}{suffix}"),
                        labels,
                        value,
                    })
                };
                // A bucket's or quantile's labels: the series' and its bound.
                let bounded = |key: &str, bound: f64| {
                    let mut l = labels.clone();
                    l.insert(key.to_string(), format_bound(bound));
                    l
                };
                let number = |n: Option<MetricNumber>| n.map_or(f64::NAN, |n| n.as_f64());
                let count = |c: Option<u64>| c.map_or(f64::NAN, |c| c as f64);
                match &sample.value {
                    PrometheusValue::Unknown(v) | PrometheusValue::Gauge(v) => {
                        push("", labels, v.as_f64())
                    }
                    PrometheusValue::Counter(c) => push("", labels, c.value.as_f64()),
                    PrometheusValue::Summary(s) => {
                        for q in &s.quantiles {
                            push("", bounded("quantile", q.quantile), q.value.as_f64());
                        }
                        push("_sum", labels.clone(), number(s.sum));
                        push("_count", labels, count(s.count));
                    }
                    PrometheusValue::Histogram(h) => {
                        let mut buckets: Vec<(f64, f64)> = h
                            .buckets
                            .iter()
                            .map(|b| (b.upper_bound, b.count.as_f64()))
                            .collect();
                        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
                        for &(le, c) in &buckets {
                            push("_bucket", bounded("le", le), c);
                        }
                        let (sum, count) = (number(h.sum), count(h.count));
                        push("_sum", labels.clone(), sum);
                        push("_count", labels.clone(), count);
                        m.histograms
                            .entry(name.to_string())
                            .or_default()
                            .push(Histogram {
                                labels,
                                buckets,
                                sum,
                                count,
                            });
                    }
                }
            }
        }
        for series in m.histograms.values_mut() {
            series.sort_by(|a, b| a.labels.cmp(&b.labels));
        }
        Ok(m)
    }

    /// Samples named exactly `name`.
    pub fn get<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| s.name == name)
    }

    /// The value of the sample `name` whose labels are exactly `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: Labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.get(name).find(|s| s.labels == want).map(|s| s.value)
    }

    /// Sum of the samples `name` whose labels satisfy `pred`.
    pub fn sum(&self, name: &str, pred: impl Fn(&Labels) -> bool) -> f64 {
        self.get(name)
            .filter(|s| pred(&s.labels))
            .map(|s| s.value)
            .sum()
    }

    /// Sum of all samples `name`.
    pub fn sum_all(&self, name: &str) -> f64 {
        self.sum(name, |_| true)
    }

    /// Sums of the samples `name`, keyed by the values of `by` (missing labels
    /// give "").
    pub fn group_by(&self, name: &str, by: &[&str]) -> BTreeMap<Vec<String>, f64> {
        let mut out = BTreeMap::new();
        for s in self.get(name) {
            let key: Vec<String> = by
                .iter()
                .map(|l| s.labels.get(*l).cloned().unwrap_or_default())
                .collect();
            *out.entry(key).or_insert(0.0) += s.value;
        }
        out
    }

    /// The histogram series of metric `base` (without the `_bucket` suffix).
    pub fn histograms(&self, base: &str) -> Vec<Histogram> {
        self.histograms.get(base).cloned().unwrap_or_default()
    }

    /// The exposition lines whose metric name starts with one of `prefixes`, for
    /// failure messages.
    pub fn lines(&self, prefixes: &[&str]) -> String {
        let mut out = String::new();
        for line in self.text.lines() {
            if !line.starts_with('#') && prefixes.iter().any(|p| line.starts_with(p)) {
                out.push_str(line);
                out.push('\n');
            }
        }
        if out.is_empty() {
            out.push_str(&format!("(no lines starting with {prefixes:?})\n"));
        }
        out
    }
}

impl Histogram {
    /// Cumulative count of the bucket whose upper bound is `le` (None if absent).
    pub fn bucket(&self, le: f64) -> Option<f64> {
        self.buckets.iter().find(|(b, _)| *b == le).map(|(_, c)| *c)
    }

    /// Observations in `(low, high]`, from the cumulative buckets.
    pub fn between(&self, low: f64, high: f64) -> Option<f64> {
        Some(self.bucket(high)? - self.bucket(low)?)
    }

    /// This histogram minus an earlier scrape of the same series (or itself when
    /// the series did not exist then). Buckets are matched by bound.
    pub fn minus(&self, earlier: Option<&Histogram>) -> Histogram {
        let Some(e) = earlier else {
            return self.clone();
        };
        Histogram {
            labels: self.labels.clone(),
            buckets: self
                .buckets
                .iter()
                .map(|(le, c)| (*le, c - e.bucket(*le).unwrap_or(0.0)))
                .collect(),
            sum: self.sum - e.sum,
            count: self.count - e.count,
        }
    }

    /// Label values as `k="v",...` for messages.
    pub fn describe(&self) -> String {
        describe_labels(&self.labels)
    }
}

/// The element-wise sum of histograms with the same buckets (e.g. all series of a
/// metric). Buckets present in only some series are dropped.
pub fn total(histograms: &[Histogram]) -> Option<Histogram> {
    let first = histograms.first()?;
    let mut out = Histogram {
        labels: Labels::new(),
        buckets: first.buckets.iter().map(|(le, _)| (*le, 0.0)).collect(),
        sum: 0.0,
        count: 0.0,
    };
    for h in histograms {
        out.sum += h.sum;
        out.count += h.count;
        out.buckets.retain(|(le, _)| h.bucket(*le).is_some());
        for (le, c) in &mut out.buckets {
            *c += h.bucket(*le).unwrap_or(0.0);
        }
    }
    Some(out)
}

/// `GET http://addr/metrics`, parsed.
pub fn scrape(addr: SocketAddr, timeout: Duration) -> Result<Metrics, String> {
    let url = format!("http://{addr}/metrics");
    let (status, text) =
        http::get(addr, "/metrics", timeout).map_err(|e| format!("GET {url}: {e}"))?;
    if status != 200 {
        return Err(format!("{url} answered {status}"));
    }
    Metrics::parse(&text).map_err(|e| format!("{url} does not parse: {e}"))
}

/// `GET http://addr/metrics`, of which only the lines of `families` (their
/// `# HELP`/`# TYPE` lines and samples; not histograms') are parsed: a
/// scrape of a thousand workers is megabytes, whose whole parse takes
/// seconds.
pub fn scrape_families(
    addr: SocketAddr,
    timeout: Duration,
    families: &[&str],
) -> Result<Metrics, String> {
    let url = format!("http://{addr}/metrics");
    let (status, text) =
        http::get(addr, "/metrics", timeout).map_err(|e| format!("GET {url}: {e}"))?;
    if status != 200 {
        return Err(format!("{url} answered {status}"));
    }
    Metrics::parse(&only_families(&text, families))
        .map_err(|e| format!("{url} does not parse: {e}"))
}

/// The lines of `text` that belong to `families` (by exact name).
pub fn only_families(text: &str, families: &[&str]) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let name = match line.strip_prefix('#') {
            Some(comment) => comment.split_whitespace().nth(1).unwrap_or(""),
            None => line.split(['{', ' ']).next().unwrap_or(""),
        };
        if families.contains(&name) {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// `k="v",...` in key order.
pub fn describe_labels(labels: &Labels) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// A bucket bound or quantile as a label value (`+Inf`, `0.05`).
fn format_bound(v: f64) -> String {
    if v == f64::INFINITY {
        "+Inf".to_string()
    } else {
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP gunicorn_worker_requests_total Requests.
# TYPE gunicorn_worker_requests_total counter
gunicorn_worker_requests_total{worker_id="worker_1_100",pid="10",method="GET",status="200"} 3
gunicorn_worker_requests_total{worker_id="worker_1_100",pid="10",method="POST",status="200"} 2
gunicorn_worker_requests_total{worker_id="worker_2_100",pid="11",method="GET",status="404"} 1
# TYPE gunicorn_workers gauge
gunicorn_workers 2
# TYPE d histogram
d_bucket{pid="10",le="0.05"} 1
d_bucket{pid="10",le="0.1"} 4
d_bucket{pid="10",le="+Inf"} 5
d_sum{pid="10"} 0.75
d_count{pid="10"} 5
d_bucket{pid="11",le="0.1"} 0
d_bucket{pid="11",le="0.05"} 0
d_bucket{pid="11",le="+Inf"} 2
d_sum{pid="11"} 3
d_count{pid="11"} 2
# TYPE weird untyped
weird{a="x\"y\\z\nw",b=""} NaN 1700000000000
"#;

    #[test]
    fn keeps_only_the_families_asked() {
        let text = only_families(TEXT, &["gunicorn_workers", "weird"]);
        assert_eq!(
            text,
            "# TYPE gunicorn_workers gauge\ngunicorn_workers 2\n# TYPE weird untyped\n\
             weird{a=\"x\\\"y\\\\z\\nw\",b=\"\"} NaN 1700000000000\n"
        );
        let m = Metrics::parse(&only_families(TEXT, &["gunicorn_worker_requests_total"])).unwrap();
        assert_eq!(m.samples.len(), 3);
    }

    #[test]
    fn parses_samples_and_labels() {
        let m = Metrics::parse(TEXT).unwrap();
        assert_eq!(m.samples.len(), 15);
        assert_eq!(m.value("gunicorn_workers", &[]), Some(2.0));
        let w = m.get("weird").next().unwrap();
        assert_eq!(w.labels["a"], "x\"y\\z\nw");
        assert_eq!(w.labels["b"], "");
        assert!(w.value.is_nan());
    }

    #[test]
    fn sums_and_groups() {
        let m = Metrics::parse(TEXT).unwrap();
        assert_eq!(m.sum_all("gunicorn_worker_requests_total"), 6.0);
        assert_eq!(
            m.sum("gunicorn_worker_requests_total", |l| l["method"] == "GET"),
            4.0
        );
        let g = m.group_by("gunicorn_worker_requests_total", &["pid", "method"]);
        assert_eq!(g[&vec!["10".to_string(), "GET".to_string()]], 3.0);
        assert_eq!(g[&vec!["10".to_string(), "POST".to_string()]], 2.0);
        assert_eq!(g[&vec!["11".to_string(), "GET".to_string()]], 1.0);
        assert_eq!(g.len(), 3);
    }

    #[test]
    fn histograms_sorted_and_diffed() {
        let m = Metrics::parse(TEXT).unwrap();
        let hs = m.histograms("d");
        assert_eq!(hs.len(), 2);
        let h11 = hs.iter().find(|h| h.labels["pid"] == "11").unwrap();
        assert_eq!(
            h11.buckets,
            vec![(0.05, 0.0), (0.1, 0.0), (f64::INFINITY, 2.0)]
        );
        let h10 = hs.iter().find(|h| h.labels["pid"] == "10").unwrap();
        assert_eq!(h10.between(0.05, 0.1), Some(3.0));
        let earlier = Histogram {
            labels: h10.labels.clone(),
            buckets: vec![(0.05, 1.0), (0.1, 1.0), (f64::INFINITY, 1.0)],
            sum: 0.25,
            count: 1.0,
        };
        let d = h10.minus(Some(&earlier));
        assert_eq!(
            d.buckets,
            vec![(0.05, 0.0), (0.1, 3.0), (f64::INFINITY, 4.0)]
        );
        assert_eq!((d.sum, d.count), (0.5, 4.0));
        let t = total(&hs).unwrap();
        assert_eq!(t.count, 7.0);
        assert_eq!(t.bucket(f64::INFINITY), Some(7.0));
        assert_eq!(t.bucket(0.1), Some(4.0));
    }

    #[test]
    fn rejects_malformed_lines() {
        for bad in [
            "x{a=\"1\" 2",
            "x{a=1} 2",
            "x 1 2 3",
            "x{a=\"1\",a=\"2\"} 1",
            "x abc",
            "x{a=\"\\q\"} 1",
            "x",
        ] {
            assert!(Metrics::parse(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn lines_filters_by_prefix() {
        let m = Metrics::parse(TEXT).unwrap();
        let l = m.lines(&["gunicorn_workers"]);
        assert_eq!(l, "gunicorn_workers 2\n");
    }
}
