//! The harness itself, against real Gunicorn and the real exporter: fixtures
//! leave no process behind even when a test panics, and the load generator's own
//! counts agree with Gunicorn's access log (so the other tests' truth is sound).

use std::{
    panic,
    path::Path,
    sync::{Arc, Mutex},
};

use integration_tests::{
    Exporter, Gunicorn, Version,
    check::COUNT_TIMEOUT,
    http::Request,
    load::{LoadConfig, LoadGen, Script},
    wait,
};

/// Whether `pid` is gone (a zombie still counts as there: fixtures reap).
fn gone(pid: u32) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists()
}

/// A test that panics with a Gunicorn and an exporter running leaves neither
/// the master, nor its workers, nor the exporter behind.
#[test]
fn fixtures_clean_up_on_panic() {
    let pids = Arc::new(Mutex::new(Vec::new()));
    let dirs = Arc::new(Mutex::new(Vec::new()));
    let seen = pids.clone();
    let kept = dirs.clone();
    let result = panic::catch_unwind(move || {
        let g = Gunicorn::builder(Version::V27, "gthread")
            .workers(2)
            .threads(2)
            .start();
        let e = Exporter::attach(&g);
        let mut p = seen.lock().unwrap();
        p.push(g.master_pid());
        p.extend(g.worker_pids());
        p.push(e.pid());
        drop(p);
        let mut d = kept.lock().unwrap();
        d.push(g.dir().path().to_path_buf());
        d.push(e.dir().path().to_path_buf());
        drop(d);
        panic!("deliberate panic with fixtures alive");
    });
    assert!(result.is_err());
    let pids = pids.lock().unwrap().clone();
    assert_eq!(pids.len(), 4, "harness: pids seen {pids:?}");
    // The workers are reaped by the master, which the fixture reaps; allow a
    // moment for the kernel to release them.
    wait::until("every fixture process to be gone", COUNT_TIMEOUT, || {
        let left: Vec<u32> = pids.iter().copied().filter(|p| !gone(*p)).collect();
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("still there: {left:?}"))
        }
    })
    .unwrap();
    // The panic kept the fixtures' directories for inspection; nothing to see.
    for d in dirs.lock().unwrap().iter() {
        assert!(d.is_dir(), "a failing test should keep {}", d.display());
        let _ = std::fs::remove_dir_all(d);
    }
}

/// The load generator's responses per method equal the access log's lines per
/// method, with keep-alive connections (reconnecting after sync's forced close)
/// and a request budget shared by its threads.
#[test]
fn load_generator_agrees_with_the_access_log() {
    let g = Gunicorn::builder(Version::V27, "sync").workers(2).start();
    let script: Script = Arc::new(|_, n| match n % 3 {
        0 => Request::get("/ok"),
        1 => Request::post("/echo", vec![b'p'; 100]),
        _ => Request::get("/missing"),
    });
    let r = LoadGen::run(LoadConfig::new(g.addr(), 3, true, script).limit(300))
        .unwrap_or_else(|e| panic!("{e}\n{}", g.story()));
    assert_eq!(r.traffic.total_responses(), 300);
    let records = g
        .wait_access_log_lines(300, COUNT_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}\n{}", g.story()));
    for (method, status, n) in [("GET", 200, 100), ("POST", 200, 100), ("GET", 404, 100)] {
        let logged = records
            .iter()
            .filter(|r| r.method == method && r.status == status)
            .count() as u64;
        let client = r
            .traffic
            .responses
            .get(&(method.to_string(), status))
            .copied();
        assert_eq!(
            (client, logged),
            (Some(n), n),
            "{method} {status}: client vs access log\n{}",
            g.story()
        );
    }
    // Sync workers close every connection: one connection per request.
    assert_eq!(r.traffic.connections, 300);
}
