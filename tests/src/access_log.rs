//! Gunicorn's access log in the tests' format `'%(p)s %(s)s %(m)s %(D)s %(U)s'`:
//! `<pid> status METHOD microseconds path`, e.g. `<1234> 200 GET 812 /ok`.
//!
//! `%(D)s` is measured by the worker from just after it parsed the request line
//! and headers (before the body is read) to just after the last write of the
//! response; for errors Gunicorn answers itself (500 on an app exception) the
//! line is logged before the error response is written.

use std::collections::BTreeMap;

/// One access log line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessRecord {
    pub pid: u32,
    pub status: u16,
    pub method: String,
    /// `%(D)s`: request time in microseconds.
    pub micros: u64,
    pub path: String,
}

/// Parses the whole log; a line that does not match is an error naming it.
pub fn parse(text: &str) -> Result<Vec<AccessRecord>, String> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| parse_line(l).map_err(|e| format!("access log line {}: {e}: {l:?}", i + 1)))
        .collect()
}

fn parse_line(line: &str) -> Result<AccessRecord, String> {
    let f: Vec<&str> = line.split(' ').collect();
    if f.len() != 5 {
        return Err(format!("expected 5 fields, found {}", f.len()));
    }
    let pid = f[0]
        .strip_prefix('<')
        .and_then(|p| p.strip_suffix('>'))
        .ok_or("pid is not <N>")?
        .parse::<u32>()
        .map_err(|_| "bad pid")?;
    let status = f[1].parse::<u16>().map_err(|_| "bad status")?;
    let micros = f[3].parse::<u64>().map_err(|_| "bad %(D)s")?;
    if f[2].is_empty() || !f[2].chars().all(|c| c.is_ascii_uppercase()) {
        return Err("bad method".into());
    }
    Ok(AccessRecord {
        pid,
        status,
        method: f[2].to_string(),
        micros,
        path: f[4].to_string(),
    })
}

/// Request counts keyed by `(pid, status, method)`, the exporter's
/// `gunicorn_worker_requests_total` key, as label strings.
pub fn counts_by_pid_status_method(records: &[AccessRecord]) -> BTreeMap<Vec<String>, f64> {
    let mut out = BTreeMap::new();
    for r in records {
        *out.entry(vec![
            r.pid.to_string(),
            r.status.to_string(),
            r.method.clone(),
        ])
        .or_insert(0.0) += 1.0;
    }
    out
}

/// Request counts keyed by `(pid, method)`.
pub fn counts_by_pid_method(records: &[AccessRecord]) -> BTreeMap<Vec<String>, f64> {
    let mut out = BTreeMap::new();
    for r in records {
        *out.entry(vec![r.pid.to_string(), r.method.clone()])
            .or_insert(0.0) += 1.0;
    }
    out
}

/// The records as log lines again (for failure messages), at most the last `n`.
pub fn describe(records: &[AccessRecord], n: usize) -> String {
    let start = records.len().saturating_sub(n);
    let mut out = String::new();
    if start > 0 {
        out.push_str(&format!("({start} earlier lines omitted)\n"));
    }
    for r in &records[start..] {
        out.push_str(&format!(
            "<{}> {} {} {} {}\n",
            r.pid, r.status, r.method, r.micros, r.path
        ));
    }
    if records.is_empty() {
        out.push_str("(no access log lines)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lines() {
        let recs = parse("<19176> 200 GET 1362 /ok\n<19175> 404 POST 274 /missing\n\n").unwrap();
        assert_eq!(
            recs[0],
            AccessRecord {
                pid: 19176,
                status: 200,
                method: "GET".into(),
                micros: 1362,
                path: "/ok".into()
            }
        );
        assert_eq!(recs.len(), 2);
        let c = counts_by_pid_status_method(&recs);
        assert_eq!(c[&vec!["19175".into(), "404".into(), "POST".into()]], 1.0);
        let c = counts_by_pid_method(&recs);
        assert_eq!(c[&vec!["19176".into(), "GET".into()]], 1.0);
    }

    #[test]
    fn rejects_other_formats() {
        for bad in [
            "19176 200 GET 1 /ok",
            "<19176> 200 GET /ok",
            "<x> 200 GET 1 /ok",
            "<1> 2000000 GET 1 /ok",
            "<1> 200 get 1 /ok",
            "127.0.0.1 - - [22/Nov/2026:03:43:49 +0000] \"GET /ok HTTP/1.1\" 200 2",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should not parse");
        }
    }
}
