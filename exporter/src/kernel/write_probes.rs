//! Per-worker uprobes on the C library's write() (socket hooks: they read
//! the workers' error-log records). Adding or removing a uprobe write-locks
//! the kernel's fork path (`dup_mmap_sem`), which waits for an RCU grace
//! period: a hundred milliseconds or more on a busy host. So one thread
//! attaches and unlinks them in the order asked and another drops the
//! unlinked ones, and the event thread never waits for them: a worker that
//! lives less than a second is still seen booting (its heartbeat file is
//! looked up while it holds it). Start-up attaches those of one master's
//! workers before the metrics are served (their first failed requests have
//! their classes); in discovery mode it leaves them to the thread too (a
//! node of 1,024 workers would wait minutes to serve).

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        mpsc::{Receiver, Sender, channel},
    },
    time::Instant,
};

use aya::{
    Ebpf,
    programs::{
        UProbe,
        uprobe::{UProbeLink, UProbeLinkId, UProbeScope},
    },
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Request {
    Follow(u32),
    Forget(u32),
}

pub struct WriteProbes {
    stage: Stage,
}

enum Stage {
    /// Start-up: attaching inline, or (`Deferred`) keeping the workers to
    /// follow once the threads run.
    StartUp(Links),
    Deferred(Links, Vec<u32>),
    Running(Sender<Request>),
    /// The threads could not be started (start-up then stops).
    Stopped,
}

impl WriteProbes {
    /// Probes with `program`; those of the workers running at start
    /// attached by the thread if `defer`, else before start-up ends.
    pub fn new(program: &'static str, defer: bool) -> WriteProbes {
        let links = Links {
            program,
            ids: BTreeMap::new(),
        };
        WriteProbes {
            stage: if defer {
                Stage::Deferred(links, Vec::new())
            } else {
                Stage::StartUp(links)
            },
        }
    }

    pub fn follow(&mut self, ebpf: &Mutex<Ebpf>, pid: u32) {
        match &mut self.stage {
            Stage::StartUp(links) => links.follow(ebpf, pid),
            Stage::Deferred(_, pending) => pending.push(pid),
            Stage::Running(requests) => drop(requests.send(Request::Follow(pid))),
            Stage::Stopped => {}
        }
    }

    pub fn forget(&mut self, ebpf: &Mutex<Ebpf>, pid: u32) {
        match &mut self.stage {
            Stage::StartUp(links) => drop(links.forget(ebpf, pid)),
            Stage::Deferred(_, pending) => pending.retain(|&p| p != pid),
            Stage::Running(requests) => drop(requests.send(Request::Forget(pid))),
            Stage::Stopped => {}
        }
    }

    /// From now on, attaches and detaches on threads of their own. Call it
    /// once start-up has dropped the capabilities it alone needed: a thread
    /// keeps those of the thread that created it.
    pub fn start(&mut self, ebpf: Arc<Mutex<Ebpf>>) -> std::io::Result<()> {
        let (links, pending) = match std::mem::replace(&mut self.stage, Stage::Stopped) {
            Stage::StartUp(links) => (links, Vec::new()),
            Stage::Deferred(links, pending) => (links, pending),
            other => {
                self.stage = other;
                return Ok(());
            }
        };
        let (requests, queue) = channel();
        for pid in pending {
            let _ = requests.send(Request::Follow(pid));
        }
        let (unlinked, dropper) = channel::<UProbeLink>();
        std::thread::Builder::new()
            .name("uprobe-detach".into())
            .spawn(move || dropper.into_iter().for_each(drop))?;
        std::thread::Builder::new()
            .name("uprobe-attach".into())
            .spawn(move || serve(links, &queue, &ebpf, &unlinked))?;
        self.stage = Stage::Running(requests);
        Ok(())
    }
}

/// The uprobes attached, by worker.
struct Links {
    program: &'static str,
    ids: BTreeMap<u32, UProbeLinkId>,
}

impl Links {
    fn follow(&mut self, ebpf: &Mutex<Ebpf>, pid: u32) {
        if self.ids.contains_key(&pid) {
            return;
        }
        let started = Instant::now();
        match attach(ebpf, self.program, pid) {
            Ok(id) => {
                self.ids.insert(pid, id);
            }
            Err(e) => log::warn!("worker {pid}: exception classes not followed: {e}"),
        }
        log::debug!("worker {pid}: write uprobe in {:?}", started.elapsed());
    }

    /// The worker's link, out of the program: dropping it detaches.
    fn forget(&mut self, ebpf: &Mutex<Ebpf>, pid: u32) -> Option<UProbeLink> {
        let id = self.ids.remove(&pid)?;
        with_program(ebpf, self.program, |p| {
            p.take_link(id).map_err(|e| e.to_string())
        })
        .map_err(|e| log::debug!("worker {pid}: its write uprobe: {e}"))
        .ok()
    }
}

/// Attaches and unlinks in the order asked; hands each unlinked probe to
/// the other thread, whose drop waits for the kernel.
fn serve(
    mut links: Links,
    queue: &Receiver<Request>,
    ebpf: &Mutex<Ebpf>,
    unlinked: &Sender<UProbeLink>,
) {
    while let Ok(first) = queue.recv() {
        let batch: Vec<Request> = std::iter::once(first).chain(queue.try_iter()).collect();
        for request in worth_doing(&batch) {
            match request {
                Request::Follow(pid) => links.follow(ebpf, pid),
                Request::Forget(pid) => {
                    if let Some(link) = links.forget(ebpf, pid) {
                        let _ = unlinked.send(link);
                    }
                }
            }
        }
    }
}

/// The requests of a batch worth doing: a worker that died before its
/// uprobe was attached needs neither the attach nor the detach.
fn worth_doing(batch: &[Request]) -> Vec<Request> {
    // Per worker: (followed, forgotten) in this batch.
    let mut asked: BTreeMap<u32, (bool, bool)> = BTreeMap::new();
    for request in batch {
        let (pid, followed) = match *request {
            Request::Follow(pid) => (pid, true),
            Request::Forget(pid) => (pid, false),
        };
        let seen = asked.entry(pid).or_default();
        seen.0 |= followed;
        seen.1 |= !followed;
    }
    batch
        .iter()
        .copied()
        .filter(|(Request::Follow(pid) | Request::Forget(pid))| asked[pid] != (true, true))
        .collect()
}

fn with_program<T>(
    ebpf: &Mutex<Ebpf>,
    name: &'static str,
    f: impl FnOnce(&mut UProbe) -> Result<T, String>,
) -> Result<T, String> {
    let mut ebpf = super::lock(ebpf);
    let program: &mut UProbe = ebpf
        .program_mut(name)
        .ok_or_else(|| format!("program {name} is missing"))?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| e.to_string())?;
    f(program)
}

fn attach(ebpf: &Mutex<Ebpf>, name: &'static str, pid: u32) -> Result<UProbeLinkId, String> {
    let library =
        super::libc_of(pid).ok_or_else(|| format!("no C library mapped in process {pid}"))?;
    let scope =
        UProbeScope::OneProcess(std::num::NonZeroU32::new(pid).ok_or("pid 0 has no uprobes")?);
    with_program(ebpf, name, |program| {
        if program.fd().is_err() {
            program.load().map_err(|e| e.to_string())?;
        }
        program
            .attach("write", &library, scope)
            .map_err(|e| format!("uprobe on write() in {}: {e}", library.display()))
    })
}

#[cfg(test)]
mod tests {
    use super::{Request::*, *};

    #[test]
    fn a_worker_gone_before_its_attach_needs_neither() {
        assert_eq!(
            worth_doing(&[Follow(1), Follow(2), Forget(1), Forget(3)]),
            vec![Follow(2), Forget(3)]
        );
    }

    #[test]
    fn the_order_asked_is_kept() {
        let batch = [Forget(4), Follow(5), Follow(6)];
        assert_eq!(worth_doing(&batch), batch.to_vec());
    }
}
