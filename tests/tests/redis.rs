//! Redis and the fleet view (issue 15), against a real redis-server: exporters
//! publish their exposition on an interval, `aggregate` serves the union of
//! every live instance with `instance`/`host` labels, exact after load stops,
//! after Redis is killed and restarted and after it is wiped; wrong
//! credentials and an unreachable Redis leave the local endpoint serving
//! with a clear error line and counted failures.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use integration_tests::{
    Exporter, Gunicorn, LoadConfig, LoadGen, RedisServer, Version,
    check::{self, REQUESTS},
    http::{self, Request},
    ports,
    prom::{Metrics, describe_labels},
    wait,
};

/// Short, so the tests run fast (the default is 5 s).
const INTERVAL: &str = "200ms";
const ERRORS: &str = "gunicorn_exporter_redis_errors_total";
const SETTLE: Duration = Duration::from_secs(30);
/// The `instance` label of the aggregate's own series.
const AGGREGATE: &str = "aggregate";

/// Families whose values move without requests (from /proc, or time): only
/// their series are compared, not their values.
fn volatile(name: &str) -> bool {
    [
        "memory_bytes",
        "cpu_",
        "uptime",
        "context_switches",
        "heartbeat_age",
        "open_fds",
        "threads",
    ]
    .iter()
    .any(|part| name.contains(part))
}

/// Every sample as `name{labels}` -> value.
fn keyed<'a>(
    samples: impl Iterator<Item = (&'a str, BTreeMap<String, String>, f64)>,
) -> BTreeMap<String, f64> {
    samples
        .map(|(name, labels, value)| (format!("{name}{}", describe_labels(&labels)), value))
        .collect()
}

/// The instance (the `instance` label) whose master is `pid`, if published.
fn instance_of(aggregate: &Metrics, pid: u32) -> Option<String> {
    aggregate
        .samples
        .iter()
        .filter_map(|s| s.labels.get("instance"))
        .find(|i| i.split(':').nth(2) == Some(&pid.to_string()))
        .cloned()
}

/// `Ok` when the aggregate's instance series are exactly the locals' (plus
/// `instance`/`host`), every value equal apart from [`volatile`] ones;
/// `Err` says what differs.
fn compare(aggregate: &Metrics, locals: &[(u32, Metrics)]) -> Result<(), String> {
    let mut expected = BTreeMap::new();
    for (pid, local) in locals {
        let instance =
            instance_of(aggregate, *pid).ok_or(format!("no instance of master {pid} yet"))?;
        let host = instance.split(':').next().unwrap_or_default().to_string();
        expected.extend(keyed(local.samples.iter().map(|s| {
            let mut labels = s.labels.clone();
            labels.insert("instance".into(), instance.clone());
            labels.insert("host".into(), host.clone());
            (s.name.as_str(), labels, s.value)
        })));
    }
    let got = keyed(
        aggregate
            .samples
            .iter()
            .filter(|s| s.labels.get("instance").is_some_and(|i| i != AGGREGATE))
            .map(|s| (s.name.as_str(), s.labels.clone(), s.value)),
    );
    let missing: Vec<_> = expected.keys().filter(|k| !got.contains_key(*k)).collect();
    let extra: Vec<_> = got.keys().filter(|k| !expected.contains_key(*k)).collect();
    let differ: Vec<_> = expected
        .iter()
        .filter(|(k, v)| {
            !volatile(k)
                && got
                    .get(*k)
                    .is_some_and(|g| g != *v && !(g.is_nan() && v.is_nan()))
        })
        .map(|(k, v)| format!("{k}: local {v}, aggregate {}", got[k]))
        .collect();
    if missing.is_empty() && extra.is_empty() && differ.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "missing from the aggregate: {missing:?}\nonly in the aggregate: {extra:?}\ndifferent values: {differ:?}"
        ))
    }
}

/// Waits until the aggregate equals the locals' union; panics with the difference.
fn assert_aggregate_exact(
    aggregate: &Exporter,
    locals: &[(&Gunicorn, &Exporter)],
    story: &dyn Fn() -> String,
) {
    let r = wait::until(
        "the aggregate to equal the local expositions",
        SETTLE,
        || {
            let scrapes: Vec<(u32, Metrics)> = locals
                .iter()
                .map(|(g, e)| Ok((g.master_pid(), e.try_scrape()?)))
                .collect::<Result<_, String>>()?;
            let agg = aggregate.try_scrape()?;
            compare(&agg, &scrapes)
        },
    );
    if let Err(e) = r {
        panic!("{e}\n{}", story());
    }
}

fn redis_errors(e: &Exporter, kind: &str) -> f64 {
    e.scrape().value(ERRORS, &[("kind", kind)]).unwrap_or(0.0)
}

fn load_config(g: &Gunicorn) -> LoadConfig {
    LoadConfig::new(g.addr(), 2, true, Arc::new(|_, _| Request::get("/ok")))
}

/// Sends `n` requests to `g`; the responses received.
fn run_load(g: &Gunicorn, n: u64) -> u64 {
    LoadGen::run(load_config(g).limit(n))
        .unwrap_or_else(|e| panic!("{e}\n{}", g.story()))
        .traffic
        .total_responses()
}

fn full_story(g: &Gunicorn, e: &Exporter, agg: &Exporter, redis: &RedisServer) -> String {
    format!(
        "{}\n{}\n--- aggregate:\n{}\n{}",
        check::story(g, e, None),
        agg.story(),
        agg.try_scrape().map(|m| m.text).unwrap_or_else(|e| e),
        redis.story()
    )
}

/// The acceptance: two masters, an exporter each (one set up with
/// --redis-url, the other with the plugin's REDIS_* variables), one
/// aggregate. After load, its series are exactly the union of the local
/// expositions; a stopped exporter leaves it when its TTL lapses.
#[test]
fn aggregate_is_the_union_of_the_local_expositions() {
    let redis = RedisServer::start(&[]);
    let g1 = Gunicorn::builder(Version::V27, "sync").workers(2).start();
    let g2 = Gunicorn::builder(Version::V27, "gthread")
        .workers(2)
        .start();
    let e1 = Exporter::builder()
        .pid(g1.master_pid())
        .arg("--redis-url")
        .arg(redis.url())
        .arg("--redis-key-prefix")
        .arg("fleet")
        .arg("--redis-ttl-seconds")
        .arg("1")
        .arg("--redis-interval")
        .arg(INTERVAL)
        .start();
    let e2 = Exporter::builder()
        .pid(g2.master_pid())
        .env("REDIS_ENABLED", "true")
        .env("REDIS_HOST", "127.0.0.1")
        .env("REDIS_PORT", redis.port().to_string())
        .env("REDIS_DB", "0")
        .env("REDIS_KEY_PREFIX", "fleet")
        .env("REDIS_TTL_SECONDS", "1")
        .arg("--redis-interval")
        .arg(INTERVAL)
        .start();
    let agg = Exporter::builder()
        .aggregate(&redis.url())
        .env("REDIS_KEY_PREFIX", "fleet")
        .start();
    let story = || {
        format!(
            "{}\n{}",
            check::story(&g2, &e2, None),
            full_story(&g1, &e1, &agg, &redis)
        )
    };
    let (t1, t2) = (run_load(&g1, 300), run_load(&g2, 200));
    check::wait_counted(&g1, &e1, t1);
    check::wait_counted(&g2, &e2, t2);
    assert_aggregate_exact(&agg, &[(&g1, &e1), (&g2, &e2)], &story);

    let m = agg.scrape();
    assert_eq!(m.sum_all(REQUESTS), (t1 + t2) as f64, "{}", story());
    let keys = redis.keys("fleet:*");
    assert_eq!(keys.len(), 3, "two snapshots and the index: {keys:?}");
    for key in &keys {
        let ttl = redis.command(&["PTTL", key]).expect("PTTL");
        assert!(
            matches!(ttl, integration_tests::fixtures::redis::Reply::Int(ms) if ms > 0),
            "{key} has no TTL: {ttl:?}"
        );
    }

    // A stopped exporter's instance leaves once its TTL (1 s) lapses.
    let gone = instance_of(&m, g2.master_pid()).expect("g2's instance");
    drop(e2);
    let story = || full_story(&g1, &e1, &agg, &redis);
    let r = wait::until("the stopped exporter's instance to expire", SETTLE, || {
        let m = agg.try_scrape()?;
        if m.samples
            .iter()
            .any(|s| s.labels.get("instance") == Some(&gone))
        {
            Err(format!("{gone} still served"))
        } else {
            Ok(m)
        }
    });
    let m = r.unwrap_or_else(|e| panic!("{e}\n{}", story()));
    assert_eq!(m.sum_all(REQUESTS), t1 as f64, "{}", story());
}

/// Redis killed and restarted mid-load, then wiped (FLUSHALL) mid-load: the
/// exporter keeps serving, counts the failures, and once Redis is back the
/// aggregate is exact again (the next snapshot is the full state).
#[test]
fn aggregate_recovers_from_a_restart_and_a_wipe() {
    let mut redis = RedisServer::start(&[]);
    let g = Gunicorn::builder(Version::V27, "sync").workers(2).start();
    let e = Exporter::builder()
        .pid(g.master_pid())
        .arg("--redis-url")
        .arg(redis.url())
        .arg("--redis-interval")
        .arg(INTERVAL)
        .start();
    let agg = Exporter::builder().aggregate(&redis.url()).start();
    let l = LoadGen::start(load_config(&g));
    let more = |l: &LoadGen, redis: &RedisServer| {
        let before = l.completed(0);
        l.wait_completed(0, before + 100, SETTLE)
            .unwrap_or_else(|err| panic!("{err}\n{}", full_story(&g, &e, &agg, redis)));
    };
    more(&l, &redis);

    redis.kill();
    let r = wait::until("the exporter to count a Redis failure", SETTLE, || {
        let m = e.try_scrape()?;
        let failed: f64 = m.sum_all(ERRORS);
        if failed > 0.0 {
            Ok(())
        } else {
            Err(m.lines(&[ERRORS]))
        }
    });
    r.unwrap_or_else(|err| panic!("{err}\n{}", full_story(&g, &e, &agg, &redis)));
    // The aggregate has nothing to serve meanwhile: 503, try later, and why.
    let (status, body) = http::get(agg.addr(), "/metrics", SETTLE)
        .unwrap_or_else(|err| panic!("{err}\n{}", full_story(&g, &e, &agg, &redis)));
    assert!(
        status == 503 && body.contains("reading Redis failed"),
        "the aggregate with Redis down answered {status}: {body}\n{}",
        full_story(&g, &e, &agg, &redis)
    );
    // Requests go on, and are counted locally, while Redis is down.
    more(&l, &redis);
    redis.restart();
    let r = wait::until("the snapshot to be back in Redis", SETTLE, || {
        let keys = redis.keys("gunicorn:exporter:*");
        if keys.len() == 2 {
            Ok(())
        } else {
            Err(format!("{keys:?}"))
        }
    });
    r.unwrap_or_else(|err| panic!("{err}\n{}", full_story(&g, &e, &agg, &redis)));

    more(&l, &redis);
    redis.command(&["FLUSHALL"]).expect("FLUSHALL");
    more(&l, &redis);
    let traffic = l
        .stop()
        .unwrap_or_else(|err| panic!("{err}\n{}", full_story(&g, &e, &agg, &redis)))
        .traffic;
    check::wait_counted(&g, &e, traffic.total_responses());
    let story = || full_story(&g, &e, &agg, &redis);
    assert_aggregate_exact(&agg, &[(&g, &e)], &story);
    let instances: std::collections::BTreeSet<_> = agg
        .scrape()
        .samples
        .iter()
        .filter_map(|s| s.labels.get("instance").cloned())
        .filter(|i| i != AGGREGATE)
        .collect();
    assert_eq!(
        instances.len(),
        1,
        "one exporter, one instance: {instances:?}"
    );
    // One warning for the outage, one line for the recovery: not one per retry.
    let stderr = e.stderr();
    let warnings = stderr.matches("redis: publishing to").count();
    assert!(
        (1..=3).contains(&warnings),
        "{warnings} failure lines (one per change of state expected)\n{}",
        story()
    );
}

/// Wrong password, an ACL user without rights on the keys, and no Redis at
/// all: a clear error line, the failure counted by kind, /metrics serving.
#[test]
fn bad_credentials_and_no_redis_keep_the_local_endpoint() {
    let redis = RedisServer::start(&["--requirepass", "right"]);
    redis
        .command(&["ACL", "SETUSER", "reader", "on", ">pw", "~other:*", "+@all"])
        .expect("ACL SETUSER");
    let g = Gunicorn::builder(Version::V27, "sync").workers(1).start();
    let port = redis.port();
    let unreachable = ports::free_port();
    for (url, kind, says) in [
        (
            format!("redis://:wrong@127.0.0.1:{port}/0"),
            "auth",
            "check the password",
        ),
        (
            format!("redis://reader:pw@127.0.0.1:{port}/0"),
            "acl",
            "ACL",
        ),
        (
            format!("redis://127.0.0.1:{unreachable}/0"),
            "connect",
            "is Redis running",
        ),
    ] {
        let e = Exporter::builder()
            .pid(g.master_pid())
            .arg("--redis-url")
            .arg(&url)
            .arg("--redis-interval")
            .arg(INTERVAL)
            .start();
        let r = wait::until(
            &format!("{ERRORS}{{kind=\"{kind}\"}} to count"),
            SETTLE,
            || {
                let n = redis_errors(&e, kind);
                if n >= 2.0 {
                    Ok(())
                } else {
                    Err(format!("{n}"))
                }
            },
        );
        r.unwrap_or_else(|err| panic!("{url}: {err}\n{}", e.story()));
        let stderr = e.stderr();
        let lines: Vec<&str> = stderr.lines().filter(|l| l.contains("redis:")).collect();
        assert_eq!(lines.len(), 1, "{url}: one line per state, got {lines:?}");
        assert!(
            lines[0].contains(says) && lines[0].contains(&format!("({kind})")),
            "{url}: unclear error line {:?}",
            lines[0]
        );
        assert!(
            !lines[0].contains("wrong"),
            "the password is logged: {:?}",
            lines[0]
        );
        assert!(
            e.scrape().text.contains("gunicorn_up"),
            "{url}: /metrics\n{}",
            e.story()
        );
    }
}

/// `rediss://`: the exporter publishes over TLS, verifying the server
/// against the roots it is given (SSL_CERT_FILE: a private CA), and the
/// aggregate reads the same way.
#[test]
fn rediss_publishes_over_tls() {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

    let dir = integration_tests::TestDir::new("redis-tls");
    let mut ca_params = CertificateParams::new(Vec::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "redis test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let ca = Issuer::new(ca_params, ca_key);
    let mut params =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    let (ca_pem, cert_pem, key_pem) = (
        dir.join("ca.pem"),
        dir.join("redis.pem"),
        dir.join("redis.key"),
    );
    std::fs::write(&ca_pem, ca_cert.pem()).unwrap();
    std::fs::write(&cert_pem, cert.pem()).unwrap();
    std::fs::write(&key_pem, key.serialize_pem()).unwrap();

    let tls_port = ports::free_port().to_string();
    let path = |p: &std::path::Path| p.display().to_string();
    let (ca_arg, cert_arg, key_arg) = (path(&ca_pem), path(&cert_pem), path(&key_pem));
    let redis = RedisServer::start(&[
        "--tls-port",
        &tls_port,
        "--tls-cert-file",
        &cert_arg,
        "--tls-key-file",
        &key_arg,
        "--tls-ca-cert-file",
        &ca_arg,
        "--tls-auth-clients",
        "no",
    ]);
    let url = format!("rediss://127.0.0.1:{tls_port}/0");
    let g = Gunicorn::builder(Version::V27, "sync").workers(1).start();
    let e = Exporter::builder()
        .pid(g.master_pid())
        .arg("--redis-url")
        .arg(&url)
        .arg("--redis-interval")
        .arg(INTERVAL)
        .env("SSL_CERT_FILE", &ca_arg)
        .start();
    let agg = Exporter::builder()
        .aggregate(&url)
        .env("SSL_CERT_FILE", &ca_arg)
        .start();
    let n = run_load(&g, 20);
    check::wait_counted(&g, &e, n);
    let r = wait::until(
        "the aggregate to serve the requests over TLS",
        SETTLE,
        || {
            let m = agg.try_scrape()?;
            let total = m.sum_all(REQUESTS);
            if total == n as f64 {
                Ok(())
            } else {
                Err(format!("{REQUESTS} sums to {total}"))
            }
        },
    );
    r.unwrap_or_else(|err| panic!("{err}\n{}", full_story(&g, &e, &agg, &redis)));
    assert_eq!(redis_errors(&e, "connect"), 0.0, "{}", e.story());
}

/// A Redis that stops answering (DEBUG SLEEP, longer than the exporter's 5 s
/// response timeout): a `timeout` is counted, /metrics serves meanwhile,
/// and publishing resumes on its own.
#[test]
fn a_stalled_redis_is_a_timeout_and_publishing_resumes() {
    let redis = RedisServer::start(&["--enable-debug-command", "yes"]);
    let g = Gunicorn::builder(Version::V27, "sync").workers(1).start();
    let e = Exporter::builder()
        .pid(g.master_pid())
        .arg("--redis-url")
        .arg(redis.url())
        .arg("--redis-interval")
        .arg(INTERVAL)
        .start();
    let published = |e: &Exporter| e.stderr().matches("redis: publishing every").count();
    let r = wait::until("a first publish", SETTLE, || {
        if published(&e) == 1 {
            Ok(())
        } else {
            Err(e.stderr())
        }
    });
    r.unwrap_or_else(|err| panic!("{err}\n{}", e.story()));
    std::thread::scope(|s| {
        let stall = s.spawn(|| redis.command(&["DEBUG", "SLEEP", "7"]));
        let r = wait::until("a Redis timeout to be counted", SETTLE, || {
            // The local endpoint answers all along.
            let n = redis_errors(&e, "timeout");
            if n >= 1.0 {
                Ok(())
            } else {
                Err(format!("{n}"))
            }
        });
        r.unwrap_or_else(|err| panic!("{err}\n{}\n{}", e.story(), redis.story()));
        stall
            .join()
            .expect("DEBUG SLEEP thread")
            .expect("DEBUG SLEEP");
    });
    let r = wait::until("publishing to resume", SETTLE, || {
        if published(&e) == 2 {
            Ok(())
        } else {
            Err(e.stderr())
        }
    });
    r.unwrap_or_else(|err| panic!("{err}\n{}", e.story()));
    assert_eq!(
        redis.keys("gunicorn:exporter:*").len(),
        2,
        "{}",
        redis.story()
    );
}
