//! Scrapes only read (issue 12): 50 scrapers hammering /metrics while the
//! master is told TTIN, HUP and TTOU in quick succession. The lifecycle flow
//! must not be held up by them: every hook is counted exactly (against the
//! markers Gunicorn's real hooks write), no kernel event is lost, and every
//! scrape is answered.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::Duration,
};

use integration_tests::{
    Gunicorn, Version,
    hooks::{Rig, send_signal, with_respawn},
    http,
};

const SCRAPERS: usize = 50;
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(30);
const KERNEL_ERRORS: &str = "gunicorn_exporter_kernel_errors_total";

/// Scrapers in a loop until dropped; what they got.
struct Scrapers {
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicU64>,
    threads: Vec<thread::JoinHandle<Vec<String>>>,
}

impl Scrapers {
    fn start(addr: std::net::SocketAddr) -> Scrapers {
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicU64::new(0));
        let threads = (0..SCRAPERS)
            .map(|_| {
                let (stop, answered) = (stop.clone(), answered.clone());
                thread::spawn(move || {
                    let mut failures = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        match http::get(addr, "/metrics", SCRAPE_TIMEOUT) {
                            Ok((200, body)) if !body.is_empty() => {
                                answered.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok((status, _)) => failures.push(format!("status {status}")),
                            Err(e) => failures.push(e.to_string()),
                        }
                    }
                    failures
                })
            })
            .collect();
        Scrapers {
            stop,
            answered,
            threads,
        }
    }

    /// Stops them: (scrapes answered, failures).
    fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let failures = self
            .threads
            .into_iter()
            .flat_map(|t| t.join().expect("a scraper panicked"))
            .collect();
        (self.answered.load(Ordering::Relaxed), failures)
    }
}

#[test]
fn hooks_exact_under_fifty_concurrent_scrapers() {
    let mut rig = Rig::start(Gunicorn::builder(Version::V27, "sync").workers(2).start());
    let master = rig.g.master_pid();
    let scrapers = Scrapers::start(rig.e.addr());
    for round in 0..2 {
        // Up to five workers, one TTIN at a time (repeats of one signal
        // pending together would merge into one).
        for workers in 3..=5 {
            let m = rig.begin(&format!("round {round}: TTIN to {workers}"));
            send_signal(master, libc::SIGTTIN);
            rig.settle(&m, &with_respawn(&[("nworkers_changed", 1)]), workers);
        }
        // A reload replaces all five with the configured two.
        let m = rig.begin(&format!("round {round}: HUP"));
        send_signal(master, libc::SIGHUP);
        rig.settle(
            &m,
            &[("on_reload", 1), ("post_worker_init", 2), ("child_exit", 5)],
            2,
        );
        let m = rig.begin(&format!("round {round}: TTOU"));
        send_signal(master, libc::SIGTTOU);
        rig.settle(&m, &[("child_exit", 1)], 1);
        let m = rig.begin(&format!("round {round}: TTIN back to 2"));
        send_signal(master, libc::SIGTTIN);
        rig.settle(&m, &with_respawn(&[("nworkers_changed", 1)]), 2);
        rig.expect_signals("ttin", 4);
        rig.expect_signals("hup", 1);
        rig.expect_signals("ttou", 1);
        rig.expect_restarts("reload", 5);
        rig.expect_restarts("scale_down", 1);
    }
    // Hooks, restarts, signals and worker states while still scraped.
    let m = rig.check();
    let (answered, failures) = scrapers.finish();
    assert!(
        failures.is_empty(),
        "{} of {} scrapes failed, e.g. {:?}\n{}",
        failures.len(),
        answered + failures.len() as u64,
        &failures[..failures.len().min(5)],
        rig.story(Some(&m))
    );
    assert!(
        answered >= SCRAPERS as u64,
        "only {answered} scrapes answered"
    );
    let m = rig.e.scrape();
    for s in m.get(KERNEL_ERRORS) {
        assert_eq!(
            s.value,
            0.0,
            "{KERNEL_ERRORS}{:?} is {}: the kernel side lost something\n{}",
            s.labels,
            s.value,
            rig.story(Some(&m))
        );
    }
    assert!(
        m.get(KERNEL_ERRORS).next().is_some(),
        "{KERNEL_ERRORS} is missing from the exposition"
    );
    eprintln!("{answered} scrapes answered during the storm");
}
