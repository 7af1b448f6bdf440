//! The masters running now: one read of /proc, classified by
//! [`identity::classify`] with each process's parent and children taken
//! from the same snapshot.

use std::collections::BTreeMap;

use procfs::process::all_processes;

use super::identity::{self, Facts, Matcher, Session, Verdict};

/// One process of a /proc snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub pid: u32,
    pub ppid: u32,
    /// Its session id (the leader's pid).
    pub sid: u32,
    pub cmdline: Vec<String>,
}

/// The session of a process whose session id is `sid`, its leader's
/// command line read by `cmdline_of` (a zombie's is empty: gone too).
fn session(pid: u32, sid: u32, cmdline_of: impl FnOnce(u32) -> Option<Vec<String>>) -> Session {
    if sid == pid {
        return Session::Leads;
    }
    cmdline_of(sid)
        .filter(|c| !c.is_empty())
        .map_or(Session::LeaderGone, Session::LedBy)
}

/// The masters among `rows` (a whole process table), lowest pid first, and
/// the candidates: gunicorn processes with no worker yet, to look at again
/// when they fork. `exclude` (the exporter itself) is neither.
pub fn masters(rows: &[Row], matcher: &Matcher, exclude: u32) -> (Vec<u32>, Vec<u32>) {
    let by_pid: BTreeMap<u32, &Row> = rows.iter().map(|r| (r.pid, r)).collect();
    let mut children: BTreeMap<u32, Vec<&Row>> = BTreeMap::new();
    for row in rows {
        children.entry(row.ppid).or_default().push(row);
    }
    let (mut found, mut candidates) = (Vec::new(), Vec::new());
    for row in by_pid.values() {
        if row.pid == exclude {
            continue;
        }
        let facts = Facts {
            cmdline: row.cmdline.clone(),
            parent: by_pid
                .get(&row.ppid)
                .map(|p| p.cmdline.clone())
                .unwrap_or_default(),
            children: children
                .get(&row.pid)
                .map(|c| c.iter().map(|c| c.cmdline.clone()).collect())
                .unwrap_or_default(),
            session: session(row.pid, row.sid, |sid| {
                by_pid.get(&sid).map(|l| l.cmdline.clone())
            }),
        };
        match identity::classify(&facts, matcher) {
            Verdict::Master => found.push(row.pid),
            Verdict::Candidate => candidates.push(row.pid),
            Verdict::Worker | Verdict::OneShot | Verdict::Other => {}
        }
    }
    (found, candidates)
}

/// What process `pid` is now that it forked `child`, from its own, its
/// parent's and that child's command lines (None if it is gone). Reads
/// three processes, not the whole of /proc: it runs at each candidate's fork.
pub fn classify_forked(pid: u32, child: u32, matcher: &Matcher) -> Option<Verdict> {
    let me = crate::procs::info(pid)?;
    let sid = procfs::process::Process::new(pid as i32)
        .and_then(|p| p.stat())
        .ok()?
        .session as u32;
    let facts = Facts {
        session: session(pid, sid, |sid| crate::procs::info(sid).map(|l| l.cmdline)),
        parent: crate::procs::info(me.ppid)
            .map(|p| p.cmdline)
            .unwrap_or_default(),
        children: crate::procs::info(child)
            .map(|c| c.cmdline)
            .into_iter()
            .collect(),
        cmdline: me.cmdline,
    };
    Some(identity::classify(&facts, matcher))
}

/// A snapshot of the host's processes (threads and vanished ones left out).
pub fn snapshot() -> Vec<Row> {
    let Ok(all) = all_processes() else {
        return Vec::new();
    };
    all.filter_map(Result::ok)
        .filter_map(|p| {
            let stat = p.stat().ok()?;
            Some(Row {
                pid: stat.pid as u32,
                ppid: stat.ppid as u32,
                sid: stat.session as u32,
                cmdline: p.cmdline().ok()?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(pid: u32, ppid: u32, line: &str) -> Row {
        Row {
            pid,
            ppid,
            sid: 1,
            cmdline: if line.starts_with("gunicorn: ") {
                vec![line.to_string()]
            } else {
                line.split(' ').map(String::from).collect()
            },
        }
    }

    /// A host with two gunicorns (one with setproctitle), a USR2 re-exec in
    /// progress, one starting, a --check-config, a python app with its own
    /// forks and the exporter: the masters are exactly the arbiters.
    #[test]
    fn finds_exactly_the_arbiters() {
        let shop = "/srv/shop/bin/python3 /srv/shop/bin/gunicorn -w 2 shop.wsgi:application";
        let api = "python3 -m gunicorn -k gthread api:app";
        let rows = vec![
            row(1, 0, "/sbin/init"),
            row(100, 1, shop),
            row(101, 100, shop),
            row(102, 100, shop),
            // USR2: the new master (same line, exec'd) has its own worker.
            row(103, 100, shop),
            row(104, 103, shop),
            row(200, 1, "gunicorn: master [blog]"),
            row(201, 200, "gunicorn: worker [blog]"),
            row(300, 1, api),
            row(301, 300, api),
            // Starting: no worker yet.
            row(400, 1, "/usr/bin/gunicorn app:app"),
            row(500, 1, "gunicorn --check-config app:app"),
            row(600, 1, "python3 jobs.py"),
            row(601, 600, "python3 jobs.py"),
            row(700, 1, "/usr/bin/gunicorn-ebpf-exporter --all"),
        ];
        assert_eq!(
            masters(&rows, &Matcher::ANY, 700),
            (vec![100, 103, 200, 300], vec![400])
        );
        let jobs = Matcher::new(Some("jobs")).unwrap();
        assert_eq!(masters(&rows, &jobs, 700), (vec![600], vec![]));
    }

    #[test]
    fn snapshot_sees_this_process() {
        let me = std::process::id();
        assert!(snapshot().iter().any(|r| r.pid == me));
    }
}
