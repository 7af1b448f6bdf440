//! The dashboard and alerts of `deploy/` (issue #14) against the real thing.
//!
//! - promtool checks `deploy/prometheus/alerts.yml` and runs its unit tests.
//! - An exporter attached to a Gunicorn that scaled up and down twice and
//!   answered 404s and 500s: promtool checks its exposition, which holds every
//!   family README's metrics table lists, and no other.
//! - A Prometheus of the test's own scrapes it every second: the requests it
//!   sums are exactly those the client got and Gunicorn's access log wrote;
//!   every query of the Grafana dashboard (panels, annotations, variables)
//!   evaluates to data, and to the label values the traffic and the
//!   lifecycle steps must show; every alert rule evaluates without error,
//!   the 5xx one pending.
//!
//! Counters the exporter creates at their first increment (a status, an error
//! class, a signal) show in `rate()`/`increase()` only from their second one,
//! as in production: so traffic comes in two rounds and each signal twice,
//! each time after Prometheus scraped the state before it.

use std::{
    collections::BTreeMap,
    io::Write as _,
    path::PathBuf,
    process::{Command, Stdio},
};

use integration_tests::{
    Exporter, Gunicorn, Prometheus, Sample, Traffic, Version,
    check::{COUNT_TIMEOUT, REQUESTS, story},
    env,
    fixtures::prometheus::JOB,
    hooks::{SETTLE_TIMEOUT, json, json::Json, send_signal},
    http::{self, Request},
    wait,
};

fn deploy(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(path)
}

/// Runs promtool with `args` (and `stdin`); its output, or an error with it.
fn promtool(args: &[&str], stdin: &str) -> Result<String, String> {
    let mut child = Command::new(env::promtool_bin())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("promtool {args:?}: {e}"))?;
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(stdin.as_bytes())
        .map_err(|e| format!("promtool {args:?}: writing stdin: {e}"))?;
    let out = child
        .wait_with_output()
        .map_err(|e| format!("promtool {args:?}: {e}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!("promtool {args:?}: {}:\n{text}", out.status))
    }
}

#[test]
fn alert_rules_pass_promtool() {
    for (command, file) in [("check", "alerts.yml"), ("test", "alerts_test.yml")] {
        let path = deploy(&format!("prometheus/{file}"));
        promtool(&[command, "rules", &path.display().to_string()], "")
            .unwrap_or_else(|e| panic!("{e}"));
    }
}

/// What the test sends in each round, with the status it must get: 404s and
/// app exceptions (500, class RuntimeError) beside successes.
const ROUND: &[(&str, u16)] = &[
    ("/ok", 200),
    ("/ok", 200),
    ("/ok", 200),
    ("/missing", 404),
    ("/ok", 200),
    ("/boom", 500),
    ("/ok", 200),
    ("/sleep?ms=20", 200),
    ("/missing", 404),
    ("/boom", 500),
];

/// The dashboard's variables as the test selects them: its job, its exporter,
/// all workers; and 1m for Grafana's intervals, which a run of seconds fills.
fn variables(e: &Exporter) -> Vec<(&'static str, String)> {
    vec![
        ("$__rate_interval", "1m".into()),
        ("$__interval", "1m".into()),
        ("$job", JOB.into()),
        ("$instance", e.addr().to_string()),
        ("$worker", ".*".into()),
    ]
}

/// Label values some series of a panel (or annotation) must show with a value
/// above 0, by what this test did.
const EXPECTED: &[(&str, &str, &str)] = &[
    ("Request rate by status", "status", "500"),
    ("Error ratio by class", "error_type", "RuntimeError"),
    ("Worker restarts by reason", "reason", "scale_down"),
    ("Signals to the master", "signal", "ttin"),
    ("Signals to the master", "signal", "ttou"),
    ("Master events", "hook", "nworkers_changed"),
    ("Worker exits", "hook", "worker_exit"),
];

const TTIN: &str = r#"gunicorn_master_signals_total{signal="ttin"}"#;
const TTOU: &str = r#"gunicorn_master_signals_total{signal="ttou"}"#;
const SCALE_DOWN: &str = r#"gunicorn_master_worker_restart_total{reason="scale_down"}"#;
const WORKER_EXIT: &str = r#"gunicorn_hook_events_total{hook="worker_exit"}"#;

/// Alert rules and the state this run must leave them in (the others depend on
/// when a scrape caught the only worker busy).
const ALERT_STATES: &[(&str, &[&str])] = &[
    ("GunicornHigh5xxRatio", &["pending", "firing"]),
    ("GunicornWorkerRestartStorm", &["inactive"]),
    ("GunicornExporterKernelErrors", &["inactive"]),
    ("GunicornExporterCollectErrors", &["inactive"]),
    ("GunicornExporterDown", &["inactive"]),
    ("GunicornDown", &["inactive"]),
];

#[test]
fn prometheus_counts_exactly_and_answers_every_dashboard_query() {
    // One worker, so that every request of both rounds lands in the same
    // series (sync workers race for connections).
    let g = Gunicorn::builder(Version::V27, "sync").workers(1).start();
    // An `--on` command, so that gunicorn_exporter_hook_actions_total appears.
    let e = Exporter::builder()
        .pid(g.master_pid())
        .arg("--on")
        .arg("worker_exit=true")
        .start();
    let p = Prometheus::start(&[e.addr()], &[deploy("prometheus/alerts.yml")]);
    let fail = |msg: String| -> ! { panic!("{msg}\n{}\n{}", story(&g, &e, None), p.story()) };
    // The signals Gunicorn handles have series before their first delivery,
    // so that delivery shows in increase().
    wait_scraped(
        &p,
        &[
            ("gunicorn_up", 1.0),
            ("gunicorn_workers", 1.0),
            (TTIN, 0.0),
            (TTOU, 0.0),
        ],
    );

    // TTIN adds a worker, TTOU stops the oldest: the worker serving the
    // traffic below is the last one TTIN started.
    for n in 1..=2 {
        let n = n as f64;
        send_signal(g.master_pid(), libc::SIGTTIN);
        wait_workers(&g, 2);
        wait_scraped(&p, &[(TTIN, n), ("gunicorn_workers", 2.0)]);
        send_signal(g.master_pid(), libc::SIGTTOU);
        wait_workers(&g, 1);
        let stopped = [
            (TTOU, n),
            (SCALE_DOWN, n),
            (WORKER_EXIT, n),
            ("gunicorn_workers", 1.0),
        ];
        wait_scraped(&p, &stopped);
    }

    let mut traffic = Traffic::default();
    for round in 1..=2 {
        for (target, status) in ROUND {
            match http::exchange(g.addr(), &Request::get(target), &mut traffic) {
                Ok(r) if r.status == *status => {}
                Ok(r) => fail(format!("GET {target}: status {}, not {status}", r.status)),
                Err(err) => fail(format!("GET {target}: {err}")),
            }
        }
        let n = traffic.total_responses();
        let log = g
            .wait_access_log_lines(n as usize, COUNT_TIMEOUT)
            .unwrap_or_else(|err| fail(format!("round {round}: {err}")));
        // The exact count, as Prometheus sums it.
        let sum = format!("sum({REQUESTS}{{job=\"{JOB}\"}})");
        p.wait_query(&format!("{n} requests"), &sum, COUNT_TIMEOUT, |v| {
            one(v) == Some(n as f64)
        });
        let by_status = p
            .query(&format!("sum by (status) ({REQUESTS})"))
            .unwrap_or_else(|err| fail(err));
        let got: BTreeMap<String, f64> = by_status
            .iter()
            .map(|s| (s.labels["status"].clone(), s.value))
            .collect();
        let mut want = BTreeMap::new();
        for r in &log {
            *want.entry(r.status.to_string()).or_insert(0.0) += 1.0;
        }
        if got != want {
            fail(format!(
                "round {round}: by status Prometheus has {got:?}, the access log {want:?}"
            ));
        }
    }

    exposition_passes_promtool(&g, &e);

    let dashboard = std::fs::read_to_string(deploy("grafana/gunicorn-ebpf-exporter.json"))
        .expect("reading the dashboard");
    let dashboard = json::parse(&dashboard).expect("the dashboard is JSON");
    // Retried: a scrape slower than the interval on a loaded machine marks
    // every series stale until the next one.
    let vars = variables(&e);
    let answered = wait::until("every dashboard query to answer", COUNT_TIMEOUT, || {
        dashboard_answers(&dashboard, &p, &vars).map_err(|errors| errors.join("\n"))
    });
    match answered {
        Ok(n) => eprintln!("dashboard: {n} queries answered"),
        Err(err) => fail(err),
    }
    if let Err(err) = rules_evaluate(&p) {
        fail(err);
    }
}

/// The single value of a vector, if it has exactly one sample.
fn one(v: &[Sample]) -> Option<f64> {
    match v {
        [s] => Some(s.value),
        _ => None,
    }
}

/// Waits until Prometheus has scraped each `(selector, value)` (one series
/// each, summed over its labels).
fn wait_scraped(p: &Prometheus, want: &[(&str, f64)]) {
    for (selector, value) in want {
        let expr = format!("sum({selector})");
        p.wait_query(&format!("{expr} == {value}"), &expr, SETTLE_TIMEOUT, |v| {
            one(v) == Some(*value)
        });
    }
}

/// Waits until Gunicorn has exactly `n` workers, all booted.
fn wait_workers(g: &Gunicorn, n: usize) {
    wait::until(&format!("{n} booted workers"), SETTLE_TIMEOUT, || {
        let (all, booted) = (g.worker_pids(), g.booted_workers());
        if all.len() == n && booted == all {
            Ok(())
        } else {
            Err(format!("workers {all:?}, booted {booted:?}"))
        }
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", g.story()));
}

/// `promtool check metrics` on a scrape, and its families against README's
/// metrics table.
fn exposition_passes_promtool(g: &Gunicorn, e: &Exporter) {
    let m = e.scrape();
    if let Err(err) = promtool(&["check", "metrics"], &m.text) {
        panic!("{err}\n{}", story(g, e, Some(&m)));
    }
    let exported: Vec<&str> = m
        .text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next())
        .collect();
    let readme = std::fs::read_to_string(deploy("../README.md")).expect("reading README.md");
    let documented = readme_metrics(&readme);
    // Exported only with --redis-url (tests/redis.rs reads it there).
    const WITH_REDIS: &str = "gunicorn_exporter_redis_errors_total";
    let missing: Vec<&&str> = documented
        .iter()
        .filter(|d| !exported.contains(d) && **d != WITH_REDIS)
        .collect();
    let undocumented: Vec<&&str> = exported
        .iter()
        .filter(|x| !documented.contains(x))
        .collect();
    assert!(
        missing.is_empty() && undocumented.is_empty(),
        "README lists {missing:?}, not exported here; exported but not in README: \
         {undocumented:?}\n{}",
        story(g, e, Some(&m))
    );
}

/// The metric names of README's "## Metrics" table.
fn readme_metrics(readme: &str) -> Vec<&str> {
    readme
        .split("\n## ")
        .find(|s| s.starts_with("Metrics\n"))
        .expect("README has a Metrics section")
        .lines()
        .filter_map(|l| l.strip_prefix("| `")?.split('`').next())
        .filter(|name| name.starts_with("gunicorn_"))
        .collect()
}

/// One query of the dashboard: where it is, and its PromQL.
struct Query {
    place: String,
    expr: String,
}

/// Every panel target and annotation query, and whether every panel and
/// annotation uses the datasource variable.
fn queries(d: &Json) -> Result<Vec<Query>, String> {
    let mut out = Vec::new();
    let uses_variable = |item: &Json| {
        item.get("datasource")
            .and_then(|d| d.get("uid"))
            .and_then(Json::as_str)
            == Some("${datasource}")
    };
    let mut panels: Vec<&Json> = array(d.get("panels"));
    // Panels of collapsed rows nest in the row.
    panels.extend(panels.clone().iter().flat_map(|p| array(p.get("panels"))));
    for panel in panels {
        let title = panel.get("title").and_then(Json::as_str).unwrap_or("?");
        if panel.get("type").and_then(Json::as_str) == Some("row") {
            continue;
        }
        let targets = array(panel.get("targets"));
        if !uses_variable(panel) || targets.is_empty() {
            return Err(format!(
                "panel {title:?}: no targets or not on ${{datasource}}"
            ));
        }
        for t in targets {
            let expr = t.get("expr").and_then(Json::as_str).unwrap_or_default();
            let ref_id = t.get("refId").and_then(Json::as_str).unwrap_or("?");
            out.push(Query {
                place: format!("{title} {ref_id}"),
                expr: expr.to_string(),
            });
        }
    }
    for a in array(d.get("annotations").and_then(|a| a.get("list"))) {
        let name = a.get("name").and_then(Json::as_str).unwrap_or("?");
        if let Some(expr) = a.get("expr").and_then(Json::as_str) {
            if !uses_variable(a) {
                return Err(format!("annotation {name:?}: not on ${{datasource}}"));
            }
            out.push(Query {
                place: format!("{name} annotation"),
                expr: expr.to_string(),
            });
        }
    }
    Ok(out)
}

fn array(v: Option<&Json>) -> Vec<&Json> {
    match v {
        Some(Json::Array(a)) => a.iter().collect(),
        _ => Vec::new(),
    }
}

/// `expr` with Grafana's variables replaced as `vars` say; an error if one
/// is left.
fn substitute(expr: &str, vars: &[(&str, String)]) -> Result<String, String> {
    let mut out = expr.to_string();
    for (name, value) in vars {
        out = out.replace(name, value);
    }
    match out.find('$') {
        Some(i) => Err(format!("unknown variable at {:?}", &out[i..])),
        None => Ok(out),
    }
}

/// Runs every query of the dashboard, its variables' first: each must give a
/// non-empty vector of finite values, and [`EXPECTED`] must show. Returns how
/// many panel and annotation queries ran.
fn dashboard_answers(
    d: &Json,
    p: &Prometheus,
    vars: &[(&str, String)],
) -> Result<usize, Vec<String>> {
    let mut errors = Vec::new();
    let mut answers: Vec<(String, Vec<Sample>)> = Vec::new();

    // A query variable `label_values(selector, label)` must list the value
    // the test selects.
    for v in array(d.get("templating").and_then(|t| t.get("list"))) {
        let name = v.get("name").and_then(Json::as_str).unwrap_or("?");
        let Some(q) = v.get("query").and_then(Json::as_str) else {
            continue;
        };
        if v.get("type").and_then(Json::as_str) != Some("query") {
            continue;
        }
        let Some((selector, label)) = q
            .strip_prefix("label_values(")
            .and_then(|r| r.strip_suffix(')'))
            .and_then(|r| r.rsplit_once(", "))
        else {
            errors.push(format!(
                "variable {name}: not label_values(selector, label): {q}"
            ));
            continue;
        };
        let expr = substitute(&format!("count by ({label}) ({selector})"), vars);
        let values: Vec<String> = match expr.and_then(|expr| p.query(&expr)) {
            Ok(v) => v.iter().map(|s| s.labels[label].clone()).collect(),
            Err(err) => {
                errors.push(format!("variable {name}: {err}"));
                continue;
            }
        };
        let selected = vars
            .iter()
            .find(|(var, _)| var.strip_prefix('$') == Some(name))
            .map(|(_, value)| value.as_str());
        let ok = match selected {
            Some(".*") => !values.is_empty(),
            Some(value) => values.iter().any(|v| v == value),
            None => false,
        };
        if !ok {
            errors.push(format!(
                "variable {name}: {q} lists {values:?}, not {selected:?}"
            ));
        }
    }

    let all = queries(d).map_err(|e| vec![e])?;
    for q in &all {
        match substitute(&q.expr, vars).and_then(|expr| p.query(&expr)) {
            Ok(v) if v.is_empty() => errors.push(format!("{}: no data: {}", q.place, q.expr)),
            Ok(v) if v.iter().any(|s| !s.value.is_finite()) => {
                errors.push(format!("{}: not finite: {v:?}: {}", q.place, q.expr))
            }
            Ok(v) => answers.push((q.place.clone(), v)),
            Err(err) => errors.push(format!("{}: {err}", q.place)),
        }
    }
    for (place, label, value) in EXPECTED {
        let shown = answers.iter().any(|(at, v)| {
            at.starts_with(place)
                && v.iter().any(|s| {
                    s.labels.get(*label).map(String::as_str) == Some(value) && s.value > 0.0
                })
        });
        if !shown {
            errors.push(format!("{place}: no {label}={value:?} above 0"));
        }
    }
    if errors.is_empty() {
        Ok(all.len())
    } else {
        Err(errors)
    }
}

/// Every rule of alerts.yml has been evaluated without error, and the alerts
/// of [`ALERT_STATES`] are in their state.
fn rules_evaluate(p: &Prometheus) -> Result<(), String> {
    let mut last = String::new();
    let done = wait::until("the alert rules' states", COUNT_TIMEOUT, || {
        let data = p.api("/api/v1/rules")?;
        let mut seen = BTreeMap::new();
        let mut problems = Vec::new();
        for group in array(data.get("groups")) {
            for rule in array(group.get("rules")) {
                let field = |k| rule.get(k).and_then(Json::as_str).unwrap_or_default();
                if field("health") != "ok" {
                    problems.push(format!(
                        "{}: health {:?} {}",
                        field("name"),
                        field("health"),
                        field("lastError")
                    ));
                }
                seen.insert(field("name").to_string(), field("state").to_string());
            }
        }
        for (alert, states) in ALERT_STATES {
            match seen.get(*alert) {
                Some(s) if states.contains(&s.as_str()) => {}
                s => problems.push(format!("{alert}: state {s:?}, not one of {states:?}")),
            }
        }
        last = format!("{seen:?}");
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    });
    done.map_err(|e| format!("{e}\nrules: {last}"))
}
