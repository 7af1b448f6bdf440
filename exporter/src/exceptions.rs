//! App exceptions behind 500s: the class named by gunicorn's "Error handling
//! request" record, paired with the 5xx the same worker thread sends next.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use exporter_ebpf::errlog::exception_class;

/// Distinct classes exported; further ones count as [`OTHER`].
pub const MAX_CLASSES: usize = 50;
pub const OTHER: &str = "OtherException";
/// A record whose last line names no class (e.g. cut mid-message).
pub const UNKNOWN: &str = "UnknownException";

#[derive(Debug, Default)]
pub struct Exceptions {
    /// tid -> class it logged and has not answered yet.
    pending: HashMap<u32, String>,
    classes: BTreeSet<String>,
    /// (tgid, method, class) -> 5xx answers.
    counts: BTreeMap<(u32, u8, String), u64>,
}

impl Exceptions {
    /// A worker thread logged a request error whose record ends with `tail`.
    pub fn logged(&mut self, tid: u32, tail: &[u8]) {
        let class = exception_class(tail).unwrap_or(UNKNOWN);
        let class = if self.classes.contains(class) || self.classes.len() < MAX_CLASSES {
            self.classes.insert(class.to_string());
            class
        } else {
            OTHER
        };
        self.pending.insert(tid, class.to_string());
    }

    /// That thread answered with a 5xx.
    pub fn answered(&mut self, tgid: u32, tid: u32, method: u8) {
        let class = self
            .pending
            .remove(&tid)
            .unwrap_or_else(|| UNKNOWN.to_string());
        *self.counts.entry((tgid, method, class)).or_default() += 1;
    }

    pub fn forget(&mut self, tgid: u32) {
        self.counts.retain(|(pid, _, _), _| *pid != tgid);
    }

    pub fn counts(&self) -> impl Iterator<Item = (&(u32, u8, String), &u64)> {
        self.counts.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_record_and_answer_per_thread() {
        let mut e = Exceptions::default();
        e.logged(11, b"Traceback\nRuntimeError: boom\n");
        e.logged(12, b"Traceback\nKeyError: 'x'\n");
        e.answered(10, 12, 1);
        e.answered(10, 11, 1);
        e.answered(10, 13, 3);
        let got: Vec<_> = e
            .counts()
            .map(|((p, m, c), n)| (*p, *m, c.as_str(), *n))
            .collect();
        assert_eq!(
            got,
            [
                (10, 1, "KeyError", 1),
                (10, 1, "RuntimeError", 1),
                (10, 3, UNKNOWN, 1)
            ]
        );
        e.forget(10);
        assert_eq!(e.counts().count(), 0);
    }

    #[test]
    fn classes_are_capped() {
        let mut e = Exceptions::default();
        for i in 0..MAX_CLASSES + 5 {
            e.logged(1, format!("x\nE{i}: m\n").as_bytes());
            e.answered(7, 1, 1);
        }
        assert_eq!(e.counts().count(), MAX_CLASSES + 1);
        assert_eq!(
            e.counts()
                .find(|((_, _, c), _)| c == OTHER)
                .map(|(_, n)| *n),
            Some(5)
        );
    }
}
